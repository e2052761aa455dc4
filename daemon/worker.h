/* worker.h — the inference threads of one model.
 *
 * Use:  worker_pool *p;
 *       if (worker_pool_start(&p, "fashion", model, b, 2, 16, err, sizeof err) != 0) ...
 *       ... batcher_close(b);  worker_pool_join(p);  // queue drained, threads gone
 *       worker_pool_free(p);
 * Ownership: the pool owns its threads, their engine sessions and buffers; it
 * borrows the model and the batcher, which must outlive it.
 */
#ifndef MODELD_DAEMON_WORKER_H
#define MODELD_DAEMON_WORKER_H

#include <stddef.h>

#include "daemon/batcher.h"
#include "engine/engine.h"

typedef struct worker_pool worker_pool;

/* Opens one session per worker (so a model too big for the arena fails here, at
 * start-up) and starts the threads.  max_batch must not exceed the model's. */
int worker_pool_start(worker_pool **out, const char *name, const engine_model *model,
                      batcher *b, int n_workers, int max_batch, char *err, size_t errlen);
/* Waits for every thread to return; they do once the batcher is closed and empty. */
void worker_pool_join(worker_pool *p);
void worker_pool_free(worker_pool *p);

#endif
