/* worker.h — the inference threads of one model, and the tasks they run.
 *
 * Use:  worker_pool *p;
 *       worker_pool_spec spec = {.name = "fashion", .kind = MODEL_KIND_CNN, .model = model,
 *                                .batcher = b, .workers = 2, .max_batch = 16};
 *       if (worker_pool_start(&p, &spec, err, sizeof err) != 0) ...
 *       ... each job submitted to b carries a worker_task of the model's kind ...
 *       batcher_close(b);  worker_pool_join(p);  // queue drained, threads gone
 *       worker_pool_free(p);
 * Ownership: the pool owns its threads, their engine sessions and buffers; it
 * borrows the model and the batcher, which must outlive it.  A task's buffers
 * belong to whoever submitted the job; the worker only reads the inputs and writes
 * the outputs, and is done with both once it finishes the job.
 */
#ifndef MODELD_DAEMON_WORKER_H
#define MODELD_DAEMON_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/batcher.h"
#include "daemon/metrics.h"
#include "engine/engine.h"
#include "proto/model_dir.h"

/* CNN and GAN: n rows in, n rows out, stacked with other jobs' rows into one pass.
 * Batch units: n. */
typedef struct worker_rows_task {
    const float *inputs;     /* CNN (N,C,H,W) normalised; GAN (N, latent_dim) */
    const int32_t *classes;  /* GAN, conditional: (N) class ids; otherwise NULL */
    float *outputs;          /* written by the worker: CNN (N,K) probabilities; GAN (N,C,H,W) */
    float *logits;           /* CNN: (N,K) the logits too, or NULL */
    int n;                   /* N */
} worker_rows_task;

/* BERT sequences: fill-mask (masks, answers per mask), next-sentence, or the raw
 * MLM logits at every mask (the v2 protocol).  Batch units: their tokens.  The
 * worker splits a job's sequences over forward passes as the limits require. */
typedef struct worker_bert_task {
    const engine_bert_seq *seqs; /* (n_seqs): ids, segment ids, mask positions */
    int n_seqs;
    int top_k;               /* answers per mask, <= candidates (or n_targets) */
    const int32_t *targets;  /* (n_targets) ids to rank, or NULL: ids 0..candidates-1 */
    int n_targets;
    bool want_nsp;           /* compute is_next (one sequence) */
    int32_t *top_ids;        /* (masks, top_k) written by the worker, best first */
    float *top_scores;       /* (masks, top_k) softmax over the whole vocabulary */
    float *logits;           /* (masks, vocab_size) raw logits instead of top_k, or NULL */
    float is_next;           /* P(B follows A), written when want_nsp */
} worker_bert_task;

/* The payload of every batcher job of the daemon; kind is the model's. */
typedef struct worker_task {
    model_kind kind;
    int batch_rows;          /* written by the worker: rows of the forward pass it ran in */
    union {
        worker_rows_task rows; /* MODEL_KIND_CNN, MODEL_KIND_GAN */
        worker_bert_task bert;
    };
} worker_task;

typedef struct worker_pool worker_pool;

typedef struct worker_pool_spec {
    const char *name;            /* for logs */
    model_kind kind;
    const engine_model *model;
    batcher *batcher;
    int workers;
    int max_batch;               /* images (CNN) or sequences (BERT) per forward pass */
    model_metrics *metrics;      /* batch sizes go here; NULL: not recorded */
    /* MODEL_KIND_BERT */
    int vocab_size;              /* MLM logits per mask: the checkpoint's vocabulary */
    int candidates;              /* ids that may be answered (tokens of vocab.txt) */
    int mlm_rows;                /* masks one forward pass may return; >= masks of a sequence */
    int max_tokens;              /* tokens one forward pass takes; >= any one sequence */
} worker_pool_spec;

/* Opens one session per worker (so a model too big for the arena fails here, at
 * start-up) and starts the threads.  max_batch must not exceed the model's. */
int worker_pool_start(worker_pool **out, const worker_pool_spec *spec, char *err,
                      size_t errlen);
/* Waits for every thread to return; they do once the batcher is closed and empty. */
void worker_pool_join(worker_pool *p);
void worker_pool_free(worker_pool *p);

#endif
