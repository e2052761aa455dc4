/* metrics.h — what an operator scrapes: per-model counters, gauges and histograms,
 * written out in the Prometheus text format (docs/METRICS.md lists every metric).
 *
 * Use:
 *   model_metrics *m = model_metrics_new();            // one per served model name
 *   metrics_count(m, METRICS_OK);                       // any thread, lock-free
 *   metrics_observe(&m->total_us, elapsed_us);
 *   metrics_model_view views[] = {{.name = "fashion", .m = m, .queue_depth = 3, ...}};
 *   char *text = metrics_format(views, 1);  ...  free(text);
 *   model_metrics_release(m);
 * Every update is a relaxed atomic add: a scrape may see one request's histogram
 * observation before its outcome counter, never a torn value.
 * Ownership: a model_metrics is reference-counted, so the entries of an old and a
 * reloaded registry that serve the same model name share one set of counters
 * (requests finishing on the old model still count); the last release frees it.
 * metrics_format() returns malloc'd text the caller frees.
 */
#ifndef MODELD_DAEMON_METRICS_H
#define MODELD_DAEMON_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* How an inference request for a model ended. */
typedef enum metrics_outcome {
    METRICS_OK = 0,
    METRICS_CLIENT_ERROR, /* 4xx: the request was wrong */
    METRICS_REJECTED,     /* 503 at once: queue full, loading or shutting down */
    METRICS_EXPIRED,      /* waited past its deadline in the queue */
    METRICS_CANCELLED,    /* the client went away before the answer */
    METRICS_FAILED,       /* 5xx: the server's fault */
    METRICS_N_OUTCOMES
} metrics_outcome;

const char *metrics_outcome_name(metrics_outcome o);

#define METRICS_MAX_BOUNDS 24

/* A cumulative histogram over integer observations (microseconds, rows); bounds
 * are upper bounds in the same unit, increasing, plus an implicit +Inf. */
typedef struct metrics_histogram {
    const uint64_t *bounds;
    int n_bounds;
    _Atomic uint64_t buckets[METRICS_MAX_BOUNDS + 1]; /* not cumulative; last is +Inf */
    _Atomic uint64_t sum;
} metrics_histogram;

typedef struct model_metrics {
    _Atomic uint64_t requests[METRICS_N_OUTCOMES];
    metrics_histogram queue_us;   /* successful requests: time queued */
    metrics_histogram compute_us; /* successful requests: the batch's forward time */
    metrics_histogram total_us;   /* successful requests: first byte in to answer out */
    metrics_histogram batch_rows; /* per forward pass: images, sequences or latents */
    _Atomic int64_t in_flight;    /* submitted to the queue and not answered yet */
    _Atomic uint64_t load_us;     /* how long loading the weights and workers took */
    atomic_int refs;
} model_metrics;

/* Zeroed metrics with one reference; NULL if out of memory. */
model_metrics *model_metrics_new(void);
model_metrics *model_metrics_retain(model_metrics *m);
void model_metrics_release(model_metrics *m);
void metrics_count(model_metrics *m, metrics_outcome o);
void metrics_observe(metrics_histogram *h, uint64_t value);
void metrics_in_flight_add(model_metrics *m, int delta);

/* One model as the scrape shows it; gauges read by the caller at scrape time. */
typedef struct metrics_model_view {
    const char *name;
    const char *kind;          /* "cnn", "bert", "gan" */
    const model_metrics *m;
    bool ready;
    int queue_depth;           /* jobs waiting now */
    int queue_capacity;
    int max_batch;
} metrics_model_view;

/* The Prometheus text exposition (version 0.0.4) of every model, malloc'd; NULL if
 * out of memory. */
char *metrics_format(const metrics_model_view *models, int n);

#endif
