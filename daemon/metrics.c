/* metrics.c — lock-free counters and histograms, and their Prometheus text.
 *
 * Histograms keep one non-cumulative counter per bucket, so an observation is a
 * single atomic add; the cumulative `le` series Prometheus wants is summed at
 * scrape time, and _count is the sum of the buckets so it always agrees with them.
 * Label values need no escaping: model names are [A-Za-z0-9_.-] (config.c refuses
 * anything else) and kinds are fixed words.
 */
#include <config.h>

#include "daemon/metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

/* Microseconds: 100 us .. 30 s, roughly 1-2.5-5 per decade, so both the Fashion
 * CNN's sub-millisecond answers and a queue near request_timeout_ms resolve. */
static const uint64_t LATENCY_BOUNDS_US[] = {
    100,    250,    500,     1000,    2500,    5000,    10000,    25000,    50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000,
};
/* Rows per forward pass: powers of two up to max_batch_size's limit. */
static const uint64_t BATCH_BOUNDS[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};

#define COUNT_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

_Static_assert(COUNT_OF(LATENCY_BOUNDS_US) <= METRICS_MAX_BOUNDS, "too many latency buckets");
_Static_assert(COUNT_OF(BATCH_BOUNDS) <= METRICS_MAX_BOUNDS, "too many batch buckets");

const char *metrics_outcome_name(metrics_outcome o)
{
    static const char *const names[METRICS_N_OUTCOMES] = {
        "ok", "client_error", "rejected", "expired", "cancelled", "server_error",
    };
    return (unsigned)o < METRICS_N_OUTCOMES ? names[o] : "unknown";
}

static void histogram_init(metrics_histogram *h, const uint64_t *bounds, int n)
{
    h->bounds = bounds;
    h->n_bounds = n;
    for (int i = 0; i <= METRICS_MAX_BOUNDS; i++)
        atomic_init(&h->buckets[i], 0);
    atomic_init(&h->sum, 0);
}

static void model_metrics_init(model_metrics *m)
{
    for (int i = 0; i < METRICS_N_OUTCOMES; i++)
        atomic_init(&m->requests[i], 0);
    histogram_init(&m->queue_us, LATENCY_BOUNDS_US, COUNT_OF(LATENCY_BOUNDS_US));
    histogram_init(&m->compute_us, LATENCY_BOUNDS_US, COUNT_OF(LATENCY_BOUNDS_US));
    histogram_init(&m->total_us, LATENCY_BOUNDS_US, COUNT_OF(LATENCY_BOUNDS_US));
    histogram_init(&m->batch_rows, BATCH_BOUNDS, COUNT_OF(BATCH_BOUNDS));
    atomic_init(&m->in_flight, 0);
    atomic_init(&m->load_us, 0);
    atomic_init(&m->refs, 1);
}

model_metrics *model_metrics_new(void)
{
    model_metrics *m = malloc(sizeof *m);
    if (m != NULL)
        model_metrics_init(m);
    return m;
}

model_metrics *model_metrics_retain(model_metrics *m)
{
    atomic_fetch_add(&m->refs, 1);
    return m;
}

void model_metrics_release(model_metrics *m)
{
    if (m != NULL && atomic_fetch_sub(&m->refs, 1) == 1)
        free(m);
}

void metrics_count(model_metrics *m, metrics_outcome o)
{
    if ((unsigned)o < METRICS_N_OUTCOMES)
        atomic_fetch_add_explicit(&m->requests[o], 1, memory_order_relaxed);
}

void metrics_observe(metrics_histogram *h, uint64_t value)
{
    int i = 0;
    while (i < h->n_bounds && value > h->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, value, memory_order_relaxed);
}

void metrics_in_flight_add(model_metrics *m, int delta)
{
    atomic_fetch_add_explicit(&m->in_flight, delta, memory_order_relaxed);
}

/* ---- exposition ------------------------------------------------------------- */

static uint64_t load(const _Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void header(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* scale converts the observed unit to the exported one (1e-6: us -> seconds). */
static void histogram_write(FILE *f, const char *name, const char *model,
                            const metrics_histogram *h, double scale)
{
    uint64_t cumulative = 0;
    for (int i = 0; i <= h->n_bounds; i++) {
        cumulative += load(&h->buckets[i]);
        if (i < h->n_bounds)
            fprintf(f, "%s_bucket{model=\"%s\",le=\"%.9g\"} %llu\n", name, model,
                    (double)h->bounds[i] * scale, (unsigned long long)cumulative);
        else
            fprintf(f, "%s_bucket{model=\"%s\",le=\"+Inf\"} %llu\n", name, model,
                    (unsigned long long)cumulative);
    }
    fprintf(f, "%s_sum{model=\"%s\"} %.9g\n", name, model, (double)load(&h->sum) * scale);
    fprintf(f, "%s_count{model=\"%s\"} %llu\n", name, model, (unsigned long long)cumulative);
}

typedef struct histogram_family {
    const char *name, *help;
    size_t offset; /* of the metrics_histogram in model_metrics */
    double scale;
} histogram_family;

static const histogram_family HISTOGRAMS[] = {
    {"modeld_request_queue_seconds",
     "Time successful requests waited in the model's queue before a worker took them.",
     offsetof(model_metrics, queue_us), 1e-6},
    {"modeld_request_compute_seconds",
     "Forward-pass time of the batch each successful request ran in.",
     offsetof(model_metrics, compute_us), 1e-6},
    {"modeld_request_duration_seconds",
     "Time from a successful request's arrival to its answer being queued for sending.",
     offsetof(model_metrics, total_us), 1e-6},
    {"modeld_batch_size",
     "Rows per forward pass: images (CNN), sequences (BERT) or latents (GAN).",
     offsetof(model_metrics, batch_rows), 1.0},
};

char *metrics_format(const metrics_model_view *v, int n)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return NULL;

    header(f, "modeld_requests_total", "counter",
           "Inference requests by how they ended: ok, client_error (4xx), rejected (503 at "
           "once), expired (deadline passed in the queue), cancelled (client gone), "
           "server_error (5xx).");
    for (int i = 0; i < n; i++)
        for (int o = 0; o < METRICS_N_OUTCOMES; o++)
            fprintf(f, "modeld_requests_total{model=\"%s\",outcome=\"%s\"} %llu\n", v[i].name,
                    metrics_outcome_name((metrics_outcome)o),
                    (unsigned long long)load(&v[i].m->requests[o]));

    for (size_t h = 0; h < sizeof HISTOGRAMS / sizeof HISTOGRAMS[0]; h++) {
        header(f, HISTOGRAMS[h].name, "histogram", HISTOGRAMS[h].help);
        for (int i = 0; i < n; i++) {
            const metrics_histogram *hist =
                (const metrics_histogram *)((const char *)v[i].m + HISTOGRAMS[h].offset);
            histogram_write(f, HISTOGRAMS[h].name, v[i].name, hist, HISTOGRAMS[h].scale);
        }
    }

    header(f, "modeld_queue_depth", "gauge", "Requests waiting in the model's queue now.");
    for (int i = 0; i < n; i++)
        fprintf(f, "modeld_queue_depth{model=\"%s\"} %d\n", v[i].name, v[i].queue_depth);
    header(f, "modeld_queue_capacity", "gauge",
           "Requests the model's queue holds before answering 503 (queue_capacity).");
    for (int i = 0; i < n; i++)
        fprintf(f, "modeld_queue_capacity{model=\"%s\"} %d\n", v[i].name, v[i].queue_capacity);
    header(f, "modeld_requests_in_flight", "gauge",
           "Requests queued or running on the model's workers, not answered yet.");
    for (int i = 0; i < n; i++)
        fprintf(f, "modeld_requests_in_flight{model=\"%s\"} %lld\n", v[i].name,
                (long long)atomic_load_explicit(&v[i].m->in_flight, memory_order_relaxed));
    header(f, "modeld_max_batch_size", "gauge", "Rows one forward pass takes (max_batch_size).");
    for (int i = 0; i < n; i++)
        fprintf(f, "modeld_max_batch_size{model=\"%s\"} %d\n", v[i].name, v[i].max_batch);
    header(f, "modeld_model_ready", "gauge", "1 once the model is loaded and serving, else 0.");
    for (int i = 0; i < n; i++)
        fprintf(f, "modeld_model_ready{model=\"%s\",kind=\"%s\"} %d\n", v[i].name, v[i].kind,
                v[i].ready ? 1 : 0);
    header(f, "modeld_model_load_seconds", "gauge",
           "Time loading the model's weights and starting its workers took.");
    for (int i = 0; i < n; i++)
        fprintf(f, "modeld_model_load_seconds{model=\"%s\"} %.6f\n", v[i].name,
                (double)load(&v[i].m->load_us) * 1e-6);

    if (ferror(f)) {
        fclose(f);
        free(text);
        return NULL;
    }
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
