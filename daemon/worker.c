/* worker.c — threads that turn queued jobs into answers: probabilities, masked-token
 * scores, images.
 *
 * Each worker thread owns one engine session and buffers sized once at start for
 * the model's largest batch; nothing is allocated per batch.  Its loop: take a
 * batch from the batcher, run it with the function of the model's kind, write each
 * job's answer into the job's task, finish the job (which resumes the HTTP
 * connection waiting for it).
 *
 * CNN and GAN ("rows" kinds): x (max_batch, in_row) for stacked inputs (images;
 * latents, with their classes beside them) and y (max_batch, out_row) for outputs
 * (logits, made probabilities here; images).  A batch of several jobs is copied into
 * x so one forward pass serves them all.  A single job needs no copy: its inputs are
 * already contiguous, so they are run in place, in chunks of max_batch when the job
 * is larger than that.  A cancelled job is skipped between chunks; its partial
 * result is simply dropped.
 *
 * BERT: a job holds one sequence (fill-mask, next-sentence) or several (a v2 infer
 * request).  The batcher bounds a batch by jobs and tokens; the worker walks every
 * sequence of the batch in order and packs them into forward calls of at most
 * max_batch sequences, max_tokens tokens and mlm_rows masks (the MLM logits of
 * every mask need a (vocab) row of mlm; mlm_rows is at least
 * max_position_embeddings, so every single sequence fits one call).  Each mask row
 * becomes a softmax over the whole vocabulary, of which the top_k (or the requested
 * targets, ranked) are kept, or is copied out raw for the v2 protocol; the NSP
 * logits become P(is next).
 *
 * A worker never touches HTTP or JSON, and never exits on an error: a failed
 * forward pass fails the jobs of that batch with the engine's message.
 */
#include <config.h>

#include "daemon/worker.h"

#include <math.h>
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
    batcher_job **jobs;     /* (max_batch) taken jobs */
    /* MODEL_KIND_CNN, MODEL_KIND_GAN */
    float *x;               /* (max_batch, in_row) stacked inputs */
    int32_t *classes;       /* (max_batch) GAN classes */
    float *y;               /* (max_batch, out_row) */
    float *ylogits;         /* CNN: (max_batch, out_row) y before the softmax */
    /* MODEL_KIND_BERT */
    engine_bert_seq *seqs;  /* (max_batch) one forward call's sequences */
    struct bert_item {      /* and where each came from */
        batcher_job *job;
        int mask0;          /* its first mask's row among the job's answers */
    } *items;
    float *mlm;             /* (mlm_rows, V) logits, then probabilities in place */
    float *nsp;             /* (max_batch, 2) */
} worker;

struct worker_pool {
    worker_pool_spec spec;
    char name[64];
    size_t in_row;       /* CNN, GAN: floats per input row (image; latent) */
    size_t out_row;      /* CNN, GAN: floats per output row (classes; image) */
    worker *w;
};

static worker_task *task_of(batcher_job *job) { return batcher_job_payload(job); }

/* ---- CNN and GAN: rows in, rows out ------------------------------------------- */

/* One forward pass over n stacked rows: the kind's engine call, and for a CNN the
 * softmax that turns logits into the probabilities the API returns. */
/* Rows of one forward pass, for the batch-size histogram. */
static void observe_batch(worker *w, int rows)
{
    if (w->pool->spec.metrics != NULL)
        metrics_observe(&w->pool->spec.metrics->batch_rows, (uint64_t)rows);
}

static bool forward_rows(worker *w, const float *in, const int32_t *classes, int n, float *out,
                         float *logits, engine_err *err)
{
    observe_batch(w, n);
    if (w->pool->spec.kind == MODEL_KIND_GAN)
        return engine_gan_forward(w->session, in, classes, n, out, err) == ENGINE_OK;
    if (engine_cnn_forward(w->session, in, n, out, err) != ENGINE_OK)
        return false;
    if (logits != NULL)
        memcpy(logits, out, (size_t)n * w->pool->out_row * sizeof *out);
    engine_softmax(out, n, (int)w->pool->out_row);
    return true;
}

/* One job on its own: forward straight from its inputs into its outputs, chunk by
 * chunk.  Returns false with the engine's message in err. */
static bool run_single(worker *w, batcher_job *job, engine_err *err)
{
    worker_pool *p = w->pool;
    int max_batch = p->spec.max_batch;
    worker_rows_task *t = &task_of(job)->rows;
    for (int off = 0; off < t->n; off += max_batch) {
        if (off > 0 && batcher_job_cancelled(job))
            return true; /* nobody will read the rest */
        int cnt = t->n - off < max_batch ? t->n - off : max_batch;
        if (!forward_rows(w, t->inputs + (size_t)off * p->in_row,
                          t->classes ? t->classes + off : NULL, cnt,
                          t->outputs + (size_t)off * p->out_row,
                          t->logits ? t->logits + (size_t)off * p->out_row : NULL, err))
            return false;
    }
    return true;
}

/* Several jobs, at most max_batch rows together: stack, one pass, scatter. */
static bool run_stacked(worker *w, batcher_job **jobs, int n_jobs, engine_err *err)
{
    worker_pool *p = w->pool;
    int total = 0;
    for (int i = 0; i < n_jobs; i++) {
        worker_rows_task *t = &task_of(jobs[i])->rows;
        memcpy(w->x + (size_t)total * p->in_row, t->inputs,
               (size_t)t->n * p->in_row * sizeof(float));
        if (t->classes)
            memcpy(w->classes + total, t->classes, (size_t)t->n * sizeof(int32_t));
        total += t->n;
    }
    if (!forward_rows(w, w->x, p->spec.kind == MODEL_KIND_GAN && task_of(jobs[0])->rows.classes
                                   ? w->classes : NULL,
                      total, w->y, p->spec.kind == MODEL_KIND_CNN ? w->ylogits : NULL, err))
        return false;
    int row = 0;
    for (int i = 0; i < n_jobs; i++) {
        worker_rows_task *t = &task_of(jobs[i])->rows;
        size_t at = (size_t)row * p->out_row, size = (size_t)t->n * p->out_row * sizeof(float);
        memcpy(t->outputs, w->y + at, size);
        if (t->logits != NULL)
            memcpy(t->logits, w->ylogits + at, size);
        row += t->n;
    }
    return true;
}

static bool run_rows(worker *w, batcher_job **jobs, int n_jobs, engine_err *err)
{
    return n_jobs == 1 ? run_single(w, jobs[0], err) : run_stacked(w, jobs, n_jobs, err);
}

/* ---- BERT --------------------------------------------------------------------- */

/* Is (s, id) ranked before (s2, id2)?  Higher score first, lower id on ties, NaN
 * (never from a finite softmax, but never trusted) last. */
static bool ranks_before(float s, int32_t id, float s2, int32_t id2)
{
    if (isnan(s) || isnan(s2))
        return !isnan(s) || (isnan(s2) && id < id2);
    return s > s2 || (s == s2 && id < id2);
}

/* The k best of probs[] over ids (NULL: 0..n-1) into out_ids/out_scores, best
 * first, by insertion into the sorted k kept so far: O(n k) at worst, about O(n)
 * for the small k asked in practice. */
static void select_top_k(const float *probs, const int32_t *ids, int n, int k, int32_t *out_ids,
                         float *out_scores)
{
    int have = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids ? ids[i] : i;
        float s = probs[id];
        if (have == k && !ranks_before(s, id, out_scores[k - 1], out_ids[k - 1]))
            continue;
        int pos = have < k ? have++ : k - 1;
        while (pos > 0 && ranks_before(s, id, out_scores[pos - 1], out_ids[pos - 1])) {
            out_scores[pos] = out_scores[pos - 1];
            out_ids[pos] = out_ids[pos - 1];
            pos--;
        }
        out_scores[pos] = s;
        out_ids[pos] = id;
    }
}

/* One forward call over the n sequences gathered in w->seqs / w->items: each mask's
 * logits, or its softmax's top_k, and P(is next), written into its job's task. */
static bool run_bert_call(worker *w, int n, bool want_nsp, engine_err *err)
{
    worker_pool *p = w->pool;
    int v = p->spec.vocab_size;
    observe_batch(w, n);
    if (engine_bert_forward(w->session, w->seqs, n, w->mlm, want_nsp ? w->nsp : NULL, err) !=
        ENGINE_OK)
        return false;
    int row = 0;
    for (int i = 0; i < n; i++) {
        worker_bert_task *t = &task_of(w->items[i].job)->bert;
        for (int m = 0; m < w->seqs[i].n_mask; m++, row++) {
            float *scores = w->mlm + (size_t)row * (size_t)v;
            size_t at = (size_t)(w->items[i].mask0 + m);
            if (t->logits != NULL) {
                memcpy(t->logits + at * (size_t)v, scores, (size_t)v * sizeof *scores);
                continue;
            }
            engine_softmax(scores, 1, v);
            select_top_k(scores, t->targets, t->targets ? t->n_targets : p->spec.candidates,
                         t->top_k, t->top_ids + at * (size_t)t->top_k,
                         t->top_scores + at * (size_t)t->top_k);
        }
        if (t->want_nsp) {
            float two[2] = {w->nsp[2 * i], w->nsp[2 * i + 1]};
            engine_softmax(two, 1, 2);
            t->is_next = two[0];
        }
    }
    return true;
}

/* Every sequence of every job, in order, packed into forward calls of at most
 * max_batch sequences, max_tokens tokens and mlm_rows masks. */
static bool run_bert(worker *w, batcher_job **jobs, int n_jobs, engine_err *err)
{
    const worker_pool_spec *sp = &w->pool->spec;
    int count = 0, tokens = 0, rows = 0;
    bool want_nsp = false;
    for (int j = 0; j < n_jobs; j++) {
        const worker_bert_task *t = &task_of(jobs[j])->bert;
        int mask0 = 0;
        for (int s = 0; s < t->n_seqs; s++) {
            const engine_bert_seq *q = &t->seqs[s];
            if (q->n_mask > sp->mlm_rows || q->len > sp->max_tokens) { /* proto prevents it */
                engine_fail(err, ENGINE_ERR_INVALID,
                            "a sequence of %d tokens and %d masks is over the worker's %d "
                            "tokens and %d mask rows",
                            q->len, q->n_mask, sp->max_tokens, sp->mlm_rows);
                return false;
            }
            if (count > 0 && (count == sp->max_batch || tokens + q->len > sp->max_tokens ||
                              rows + q->n_mask > sp->mlm_rows)) {
                if (!run_bert_call(w, count, want_nsp, err))
                    return false;
                count = tokens = rows = 0;
                want_nsp = false;
            }
            w->seqs[count] = *q;
            w->items[count] = (struct bert_item){.job = jobs[j], .mask0 = mask0};
            count++;
            tokens += q->len;
            rows += q->n_mask;
            mask0 += q->n_mask;
            want_nsp = want_nsp || t->want_nsp;
        }
    }
    return count == 0 || run_bert_call(w, count, want_nsp, err);
}

/* ---- the loop ------------------------------------------------------------------- */

static void *worker_main(void *arg)
{
    worker *w = arg;
    worker_pool *p = w->pool;
    int n_jobs;
    while ((n_jobs = batcher_take(p->spec.batcher, w->jobs, p->spec.max_batch)) > 0) {
        engine_err err = {{0}};
        bool ok = true;
        for (int i = 0; i < n_jobs && ok; i++) {
            if (task_of(w->jobs[i])->kind != p->spec.kind) {
                engine_fail(&err, ENGINE_ERR_INVALID, "a %s task reached a %s model",
                            model_kind_name(task_of(w->jobs[i])->kind),
                            model_kind_name(p->spec.kind));
                ok = false;
            }
        }
        /* For logs: sequences of a BERT batch, rows (at most a pass) of a stacked one. */
        int rows = 0;
        for (int i = 0; i < n_jobs; i++)
            rows += p->spec.kind == MODEL_KIND_BERT ? 1 : batcher_job_units(w->jobs[i]);
        if (rows > p->spec.max_batch)
            rows = p->spec.max_batch;
        for (int i = 0; i < n_jobs; i++)
            task_of(w->jobs[i])->batch_rows = rows;
        if (ok)
            ok = p->spec.kind == MODEL_KIND_BERT ? run_bert(w, w->jobs, n_jobs, &err)
                                                 : run_rows(w, w->jobs, n_jobs, &err);
        if (!ok)
            log_error("model %s worker %d: forward failed: %s", p->name, w->index, err.msg);
        else if (n_jobs > 1 || batcher_job_units(w->jobs[0]) > 1)
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
    free(w->jobs);
    free(w->x);
    free(w->classes);
    free(w->y);
    free(w->ylogits);
    free(w->seqs);
    free(w->items);
    free(w->mlm);
    free(w->nsp);
}

/* The per-kind buffers of one worker; false if out of memory. */
static bool worker_alloc(worker_pool *p, worker *w)
{
    size_t mb = (size_t)p->spec.max_batch;
    w->jobs = malloc(mb * sizeof *w->jobs);
    if (p->spec.kind == MODEL_KIND_BERT) {
        w->seqs = malloc(mb * sizeof *w->seqs);
        w->items = malloc(mb * sizeof *w->items);
        w->mlm = malloc((size_t)p->spec.mlm_rows * (size_t)p->spec.vocab_size * sizeof *w->mlm);
        w->nsp = malloc(mb * 2 * sizeof *w->nsp);
        return w->jobs && w->seqs && w->items && w->mlm && w->nsp;
    }
    w->x = malloc(mb * p->in_row * sizeof *w->x);
    w->classes = malloc(mb * sizeof *w->classes);
    w->y = malloc(mb * p->out_row * sizeof *w->y);
    w->ylogits = malloc(mb * p->out_row * sizeof *w->ylogits);
    return w->jobs && w->x && w->classes && w->y && w->ylogits;
}

int worker_pool_start(worker_pool **out, const worker_pool_spec *spec, char *err, size_t errlen)
{
    *out = NULL;
    const char *name = spec->name;
    if (spec->workers < 1 || spec->max_batch < 1 ||
        spec->max_batch > engine_model_max_batch(spec->model))
        return log_errbuf(err, errlen,
                          "model %s: bad worker settings (%d workers, batch %d, model max %d)",
                          name, spec->workers, spec->max_batch,
                          engine_model_max_batch(spec->model));
    if (spec->kind == MODEL_KIND_BERT &&
        (spec->vocab_size < 1 || spec->candidates < 1 || spec->candidates > spec->vocab_size ||
         spec->mlm_rows < 1 || spec->max_tokens < 1))
        return log_errbuf(err, errlen,
                          "model %s: bad BERT worker settings (vocabulary %d, candidates %d, "
                          "mask rows %d)",
                          name, spec->vocab_size, spec->candidates, spec->mlm_rows);
    worker_pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return log_errbuf(err, errlen, "out of memory");
    p->spec = *spec;
    snprintf(p->name, sizeof p->name, "%s", name);
    p->spec.name = p->name;
    if (spec->kind == MODEL_KIND_CNN) {
        int c, h, wd;
        engine_model_input_shape(spec->model, &c, &h, &wd);
        p->in_row = (size_t)c * (size_t)h * (size_t)wd;
        p->out_row = (size_t)engine_model_num_outputs(spec->model);
    } else if (spec->kind == MODEL_KIND_GAN) {
        int c, h, wd;
        engine_gan_output_shape(spec->model, &c, &h, &wd);
        p->in_row = (size_t)engine_gan_latent_dim(spec->model);
        p->out_row = (size_t)c * (size_t)h * (size_t)wd;
    }
    p->w = calloc((size_t)spec->workers, sizeof *p->w);
    if (p->w == NULL) {
        free(p);
        return log_errbuf(err, errlen, "out of memory");
    }

    for (int i = 0; i < spec->workers; i++) {
        worker *w = &p->w[i];
        w->pool = p;
        w->index = i;
        engine_err e;
        if (engine_session_open(spec->model, &w->session, &e) != ENGINE_OK) {
            log_errbuf(err, errlen, "model %s: worker %d: %s", name, i, e.msg);
            goto undo;
        }
        if (!worker_alloc(p, w)) {
            log_errbuf(err, errlen, "model %s: out of memory for worker buffers", name);
            goto undo;
        }
    }
    for (int i = 0; i < spec->workers; i++) {
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
    for (int i = 0; i < spec->workers; i++)
        worker_release(&p->w[i]);
    free(p->w);
    free(p);
    return -1;
}

void worker_pool_join(worker_pool *p)
{
    if (p == NULL)
        return;
    for (int i = 0; i < p->spec.workers; i++) {
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
    for (int i = 0; i < p->spec.workers; i++)
        worker_release(&p->w[i]);
    free(p->w);
    free(p);
}
