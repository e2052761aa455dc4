/* worker.c — threads that turn queued jobs into probabilities.
 *
 * Each worker thread owns one engine session and two buffers sized once at start
 * for the model's largest batch: x (max_batch, C, H, W) for stacked inputs and
 * y (max_batch, K) for logits.  Its loop: take a batch from the batcher, run it,
 * write each job's softmax rows into the job, finish the job (which resumes the
 * HTTP connection waiting for it).  Nothing is allocated per batch.
 *
 * A batch of several jobs is copied into x so one forward pass serves them all.  A
 * single job needs no copy: its inputs are already contiguous, so they are run in
 * place, in chunks of max_batch when the job is larger than that.  A cancelled job
 * is skipped between chunks; its partial result is simply dropped.
 *
 * A worker never touches HTTP or JSON, and never exits on an error: a failed
 * forward pass fails the jobs of that batch with the engine's message.
 */
#include <config.h>

#include "daemon/worker.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/log.h"

typedef struct worker {
    worker_pool *pool;
    int index;
    pthread_t thread;
    bool started;
    engine_session *session;
    float *x;            /* (max_batch, C, H, W) */
    float *y;            /* (max_batch, K) */
    batcher_job **jobs;  /* (max_batch) taken jobs */
} worker;

struct worker_pool {
    char name[64];
    const engine_model *model;
    batcher *b;
    int n_workers;
    int max_batch;
    size_t chw;          /* floats per input image */
    int k;               /* outputs per image */
    worker *w;
};

/* One job on its own: forward straight from its inputs into its outputs, chunk by
 * chunk, softmax in place.  Returns false with the engine's message in err. */
static bool run_single(worker *w, batcher_job *job, engine_err *err)
{
    worker_pool *p = w->pool;
    int n = batcher_job_n(job);
    const float *in = batcher_job_inputs(job);
    float *out = batcher_job_outputs(job);
    for (int off = 0; off < n; off += p->max_batch) {
        if (off > 0 && batcher_job_cancelled(job))
            return true; /* nobody will read the rest */
        int cnt = n - off < p->max_batch ? n - off : p->max_batch;
        float *o = out + (size_t)off * (size_t)p->k;
        if (engine_cnn_forward(w->session, in + (size_t)off * p->chw, cnt, o, err) != ENGINE_OK)
            return false;
        engine_softmax(o, cnt, p->k);
    }
    return true;
}

/* Several jobs, at most max_batch images together: stack, one pass, scatter. */
static bool run_stacked(worker *w, batcher_job **jobs, int n_jobs, engine_err *err)
{
    worker_pool *p = w->pool;
    int total = 0;
    for (int i = 0; i < n_jobs; i++) {
        int n = batcher_job_n(jobs[i]);
        memcpy(w->x + (size_t)total * p->chw, batcher_job_inputs(jobs[i]),
               (size_t)n * p->chw * sizeof(float));
        total += n;
    }
    if (engine_cnn_forward(w->session, w->x, total, w->y, err) != ENGINE_OK)
        return false;
    engine_softmax(w->y, total, p->k);
    int row = 0;
    for (int i = 0; i < n_jobs; i++) {
        int n = batcher_job_n(jobs[i]);
        memcpy(batcher_job_outputs(jobs[i]), w->y + (size_t)row * (size_t)p->k,
               (size_t)n * (size_t)p->k * sizeof(float));
        row += n;
    }
    return true;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    worker_pool *p = w->pool;
    int n_jobs;
    while ((n_jobs = batcher_take(p->b, w->jobs, p->max_batch)) > 0) {
        engine_err err = {{0}};
        bool ok = n_jobs == 1 ? run_single(w, w->jobs[0], &err)
                              : run_stacked(w, w->jobs, n_jobs, &err);
        if (!ok)
            log_error("model %s worker %d: forward failed: %s", p->name, w->index, err.msg);
        else if (n_jobs > 1 || batcher_job_n(w->jobs[0]) > 1)
            log_debug("model %s worker %d: batch of %d jobs", p->name, w->index, n_jobs);
        for (int i = 0; i < n_jobs; i++)
            batcher_finish(w->jobs[i], ok, ok ? NULL : err.msg);
    }
    return NULL;
}

static void worker_release(worker *w)
{
    if (w->session)
        engine_session_close(w->session);
    free(w->x);
    free(w->y);
    free(w->jobs);
}

int worker_pool_start(worker_pool **out, const char *name, const engine_model *model,
                      batcher *b, int n_workers, int max_batch, char *err, size_t errlen)
{
    *out = NULL;
    if (n_workers < 1 || max_batch < 1 || max_batch > engine_model_max_batch(model))
        return log_errbuf(err, errlen,
                    "model %s: bad worker settings (%d workers, batch %d, model max %d)", name,
                    n_workers, max_batch, engine_model_max_batch(model));
    worker_pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return log_errbuf(err, errlen, "out of memory");
    snprintf(p->name, sizeof p->name, "%s", name);
    p->model = model;
    p->b = b;
    p->max_batch = max_batch;
    int c, h, wd;
    engine_model_input_shape(model, &c, &h, &wd);
    p->chw = (size_t)c * (size_t)h * (size_t)wd;
    p->k = engine_model_num_outputs(model);
    p->w = calloc((size_t)n_workers, sizeof *p->w);
    if (p->w == NULL) {
        free(p);
        return log_errbuf(err, errlen, "out of memory");
    }

    for (int i = 0; i < n_workers; i++) {
        worker *w = &p->w[i];
        w->pool = p;
        w->index = i;
        engine_err e;
        if (engine_session_open(model, &w->session, &e) != ENGINE_OK) {
            log_errbuf(err, errlen, "model %s: worker %d: %s", name, i, e.msg);
            goto undo;
        }
        w->x = malloc((size_t)max_batch * p->chw * sizeof *w->x);
        w->y = malloc((size_t)max_batch * (size_t)p->k * sizeof *w->y);
        w->jobs = malloc((size_t)max_batch * sizeof *w->jobs);
        if (w->x == NULL || w->y == NULL || w->jobs == NULL) {
            log_errbuf(err, errlen, "model %s: out of memory for worker buffers", name);
            goto undo;
        }
    }
    p->n_workers = n_workers;
    for (int i = 0; i < n_workers; i++) {
        int rc = pthread_create(&p->w[i].thread, NULL, worker_main, &p->w[i]);
        if (rc != 0) {
            log_errbuf(err, errlen, "model %s: cannot start worker thread: %s", name, strerror(rc));
            /* Threads already running stop once the owner closes the batcher, so
             * hand the pool back for worker_pool_free() to join and release. */
            *out = p;
            return -1;
        }
        p->w[i].started = true;
    }
    *out = p;
    return 0;

undo:
    for (int i = 0; i < n_workers; i++)
        worker_release(&p->w[i]);
    free(p->w);
    free(p);
    return -1;
}

void worker_pool_join(worker_pool *p)
{
    if (p == NULL)
        return;
    for (int i = 0; i < p->n_workers; i++) {
        if (p->w[i].started) {
            pthread_join(p->w[i].thread, NULL);
            p->w[i].started = false;
        }
    }
}

void worker_pool_free(worker_pool *p)
{
    if (p == NULL)
        return;
    worker_pool_join(p);
    for (int i = 0; i < p->n_workers; i++)
        worker_release(&p->w[i]);
    free(p->w);
    free(p);
}
