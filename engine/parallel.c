/* parallel.c — par_pool: a fork-join of a few threads, owned by one session.
 *
 * One job at a time, announced by bumping a generation number under the mutex; each
 * helper runs its part and the last one to finish wakes the caller.  Helpers sleep
 * on a condition variable between jobs: a forward makes ~50 calls at most, so the
 * wake-up (microseconds) is noise next to the work of each, and sleeping threads
 * leave the cores to BLAS and to the other sessions' workers.
 */
#include "engine/parallel.h"

#include <pthread.h>
#include <stdlib.h>

struct par_pool {
    pthread_mutex_t mu;
    pthread_cond_t start; /* a new generation, or stop */
    pthread_cond_t done;  /* pending reached 0 */
    unsigned long generation;
    int pending;          /* helpers still running the current job */
    bool stop;
    void (*fn)(void *ctx, int part, int parts);
    void *ctx;
    int threads;          /* in all, the caller included */
    int started;          /* helpers actually created (for close after a failed open) */
    pthread_t *helpers;   /* threads - 1 */
};

typedef struct helper_arg {
    par_pool *p;
    int part;
} helper_arg;

static void *helper_main(void *arg_)
{
    helper_arg *arg = arg_;
    par_pool *p = arg->p;
    const int part = arg->part;
    free(arg);
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen)
            pthread_cond_wait(&p->start, &p->mu);
        if (p->stop)
            break;
        seen = p->generation;
        void (*fn)(void *, int, int) = p->fn;
        void *ctx = p->ctx;
        pthread_mutex_unlock(&p->mu);
        fn(ctx, part, p->threads);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

engine_status par_pool_open(int threads, par_pool **out, engine_err *err)
{
    *out = NULL;
    if (threads < 1)
        return engine_fail(err, ENGINE_ERR_INVALID, "a pool needs at least 1 thread, not %d",
                           threads);
    par_pool *p = calloc(1, sizeof *p);
    if (!p)
        return engine_fail(err, ENGINE_ERR_NOMEM, "out of memory");
    p->threads = threads;
    if (threads > 1 && !(p->helpers = calloc((size_t)threads - 1, sizeof *p->helpers))) {
        free(p);
        return engine_fail(err, ENGINE_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 1; i < threads; i++) {
        helper_arg *arg = malloc(sizeof *arg);
        if (arg)
            *arg = (helper_arg){ p, i };
        if (!arg || pthread_create(&p->helpers[i - 1], NULL, helper_main, arg) != 0) {
            free(arg);
            par_pool_close(p);
            return engine_fail(err, ENGINE_ERR_NOMEM, "cannot start worker thread %d of %d",
                               i, threads - 1);
        }
        p->started++;
    }
    *out = p;
    return ENGINE_OK;
}

void par_pool_close(par_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++)
        pthread_join(p->helpers[i], NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->start);
    pthread_mutex_destroy(&p->mu);
    free(p->helpers);
    free(p);
}

int par_pool_threads(const par_pool *p)
{
    return p ? p->threads : 1;
}

void par_run(par_pool *p, void (*fn)(void *ctx, int part, int parts), void *ctx)
{
    if (!p || p->threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->pending = p->threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->threads);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
