/* parallel.h — a session's own worker threads, for the kernels BLAS does not run.
 *
 * OpenBLAS parallelises its GEMMs, but the engine's own kernels (the few-rows
 * linear that replaces GEMM where packing would dominate) would otherwise run on
 * one core while the others idle.  A par_pool belongs to one engine_session, is used
 * by the one thread that owns that session, and has as many threads in all as BLAS
 * may use (engine_blas_threads()): the two never run at once, so the thread budget
 * the daemon set is kept.
 *
 * Ownership: par_pool_open's caller frees the pool with par_pool_close, which joins
 * the helpers.  NULL is a valid pool everywhere and means "run on the caller alone".
 */
#ifndef MODELD_ENGINE_PARALLEL_H
#define MODELD_ENGINE_PARALLEL_H

#include "engine/engine.h"

typedef struct par_pool par_pool;

/* A pool of `threads` in all: the caller plus threads - 1 helpers (none for 1). */
engine_status par_pool_open(int threads, par_pool **out, engine_err *err);
void par_pool_close(par_pool *p);
/* Threads in all, the caller included; 1 for NULL. */
int par_pool_threads(const par_pool *p);

/* Calls fn(ctx, part, parts) once for every part in 0..parts-1, parts =
 * par_pool_threads(p), part 0 on the calling thread, and returns when all are done
 * (their writes visible to the caller).  fn must not call par_run on the same pool. */
void par_run(par_pool *p, void (*fn)(void *ctx, int part, int parts), void *ctx);

#endif
