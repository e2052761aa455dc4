/* registry.c — models by name, and their life cycle.
 *
 * Owns, per model: the parsed model directory, the engine model (weights shared
 * by all of its workers), its batcher and its worker pool, and for BERT the
 * WordPiece table the HTTP threads tokenize with (read-only once loaded).  Loading
 * is per kind (load_cnn, load_bert); the batcher and workers are shared code, told
 * only what bounds a batch: images for a CNN, sequences and tokens for BERT.  The set of models is
 * fixed at start-up; nothing is added or removed while serving, so lookups by the
 * HTTP threads need no lock.  What a model gets at load time is published with a
 * release store of `ready`, which HTTP threads read with acquire before they touch
 * the engine model or the batcher.
 *
 * Runs on the main thread: create and load at start-up, shutdown at exit.  It logs
 * each model's load time; it never exits the process.
 */
#include <config.h>

#include "daemon/registry.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/log.h"

struct registry {
    registry_model *models;
    int n;
    atomic_int refs;
    uint64_t timeout_us, max_delay_us;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int registry_create(const config *cfg, registry *previous, registry **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    registry *r = calloc(1, sizeof *r);
    if (r == NULL)
        return log_errbuf(err, errlen, "out of memory");
    r->models = calloc((size_t)cfg->n_models, sizeof *r->models);
    if (r->models == NULL && cfg->n_models > 0) {
        free(r);
        return log_errbuf(err, errlen, "out of memory");
    }
    r->timeout_us = (uint64_t)cfg->request_timeout_ms * 1000u;
    r->max_delay_us = (uint64_t)cfg->max_queue_delay_us;

    for (int i = 0; i < cfg->n_models; i++) {
        const config_model *cm = &cfg->models[i];
        registry_model *m = &r->models[i];
        snprintf(m->name, sizeof m->name, "%s", cm->name);
        snprintf(m->path, sizeof m->path, "%s", cm->path);
        m->workers = cm->workers;
        m->max_batch = cm->max_batch_size;
        m->queue_capacity = cm->queue_capacity;
        m->max_batch_tokens = cm->max_batch_tokens;
        m->max_generate = cfg->max_generate_images;
        m->max_queue_delay_us = cfg->max_queue_delay_us;
        atomic_init(&m->ready, false);
        registry_model *before = previous ? registry_find(previous, m->name) : NULL;
        m->metrics = before ? model_metrics_retain(before->metrics) : model_metrics_new();
        r->n = i + 1; /* so registry_free() releases what has been made */
        if (m->metrics == NULL) {
            registry_free(r);
            return log_errbuf(err, errlen, "out of memory");
        }
        engine_err e;
        if (model_dir_read(cm->path, &m->md, &e) != ENGINE_OK) {
            log_errbuf(err, errlen, "model %s (%s): %s", cm->name, cm->path, e.msg);
            registry_free(r);
            return -1;
        }
    }
    *out = r;
    return 0;
}

/* The queue and the workers, once the engine model is loaded. */
static int start_serving(registry *r, registry_model *m, const batcher_config *limits,
                         const worker_pool_spec *spec, char *err, size_t errlen)
{
    batcher_config bc = *limits;
    bc.capacity = m->queue_capacity;
    bc.max_delay_us = r->max_delay_us;
    bc.timeout_us = r->timeout_us;
    batcher_status bs = batcher_create(&bc, &m->batcher);
    if (bs != BATCHER_OK)
        return log_errbuf(err, errlen, "model %s: queue: %s", m->name, batcher_status_str(bs));
    worker_pool_spec ws = *spec;
    ws.name = m->name;
    ws.kind = m->md.kind;
    ws.model = m->model;
    ws.batcher = m->batcher;
    ws.workers = m->workers;
    ws.max_batch = m->max_batch;
    ws.metrics = m->metrics;
    return worker_pool_start(&m->pool, &ws, err, errlen);
}

static int load_cnn(registry *r, registry_model *m, double t0, char *err, size_t errlen)
{
    engine_err e;
    if (engine_cnn_load(&m->md.cnn, m->md.weights_path, m->max_batch, &m->model, &e) !=
        ENGINE_OK)
        return log_errbuf(err, errlen, "model %s (%s): %s", m->name, m->path, e.msg);
    int k = engine_model_num_outputs(m->model);
    if (k != m->md.n_labels)
        return log_errbuf(err, errlen, "model %s: the network has %d outputs but labels.txt has %d lines",
                    m->name, k, m->md.n_labels);
    /* Units are images; a job never has more jobs than images, so max_jobs adds nothing. */
    batcher_config limits = {.max_units = m->max_batch};
    worker_pool_spec spec = {0};
    if (start_serving(r, m, &limits, &spec, err, errlen) != 0)
        return -1;

    int c, h, w;
    engine_model_input_shape(m->model, &c, &h, &w);
    log_info("model %s loaded from %s in %.1f ms: %s %s, input %dx%dx%d, %d classes, "
             "%d worker(s), batch <= %d, %.1f MiB scratch per worker",
             m->name, m->path, now_ms() - t0, model_kind_name(m->md.kind),
             cnn_arch_name(m->md.cnn.arch), c, h, w, k, m->workers, m->max_batch,
             (double)engine_model_arena_bytes(m->model) / (1024.0 * 1024.0));
    return 0;
}

/* Tokens per forward pass: the configured value, else room for max_batch of the
 * longest sequences.  From values fixed at create, so any thread may ask. */
static long long bert_batch_tokens(const registry_model *m)
{
    return m->max_batch_tokens > 0 ? m->max_batch_tokens
                                   : (long long)m->max_batch * m->md.bert.max_position_embeddings;
}

static int load_bert(registry *r, registry_model *m, double t0, char *err, size_t errlen)
{
    const bert_config *bc = &m->md.bert;
    engine_err e;
    if (wordpiece_load(m->md.vocab_path, m->md.do_lower_case, &m->tokenizer, &e) != ENGINE_OK)
        return log_errbuf(err, errlen, "model %s (%s): %s", m->name, m->path, e.msg);
    wordpiece_specials sp = wordpiece_special_ids(m->tokenizer);
    if (sp.cls < 0 || sp.sep < 0 || sp.mask < 0)
        return log_errbuf(err, errlen, "model %s: %s lacks [CLS], [SEP] or [MASK]", m->name,
                          m->md.vocab_path);
    int n_vocab = wordpiece_vocab_size(m->tokenizer);
    if (n_vocab > bc->vocab_size)
        return log_errbuf(err, errlen,
                          "model %s: vocab.txt has %d tokens but config.json's vocab_size is %d",
                          m->name, n_vocab, bc->vocab_size);
    int max_pos = bc->max_position_embeddings;
    long long tokens = bert_batch_tokens(m);
    if (tokens < max_pos || tokens > 16777216)
        return log_errbuf(err, errlen,
                          "model %s: max_batch_tokens = %lld must be from max_position_embeddings "
                          "(%d), so that the longest text fits, to 16777216",
                          m->name, tokens, max_pos);
    if (engine_bert_load(bc, m->md.weights_path, m->max_batch, (int)tokens, &m->model, &e) !=
        ENGINE_OK)
        return log_errbuf(err, errlen, "model %s (%s): %s", m->name, m->path, e.msg);
    m->has_nsp = engine_bert_has_nsp(m->model);

    /* Units are tokens and jobs are sequences: both bound a forward pass. */
    batcher_config limits = {.max_units = (int)tokens, .max_jobs = m->max_batch};
    worker_pool_spec spec = {
        .vocab_size = bc->vocab_size,
        .candidates = n_vocab,
        /* every mask of the longest sequence in one forward call */
        .mlm_rows = max_pos,
        .max_tokens = (int)tokens,
    };
    if (start_serving(r, m, &limits, &spec, err, errlen) != 0)
        return -1;
    log_info("model %s loaded from %s in %.1f ms: bert, %d layers, hidden %d, vocabulary %d, "
             "%d tokens, next-sentence head: %s, %d worker(s), batch <= %d sequences and %d "
             "tokens, %.1f MiB scratch per worker",
             m->name, m->path, now_ms() - t0, bc->num_hidden_layers, bc->hidden_size,
             bc->vocab_size, max_pos, m->has_nsp ? "yes" : "no", m->workers, m->max_batch,
             (int)tokens, (double)engine_model_arena_bytes(m->model) / (1024.0 * 1024.0));
    return 0;
}

static int load_gan(registry *r, registry_model *m, double t0, char *err, size_t errlen)
{
    const gan_spec *gs = &m->md.gan;
    engine_err e;
    if (engine_gan_load(gs, m->md.weights_path, m->max_batch, &m->model, &e) != ENGINE_OK)
        return log_errbuf(err, errlen, "model %s (%s): %s", m->name, m->path, e.msg);
    /* Units are images (a count of 8 is 8 latent rows), as a CNN's. */
    batcher_config limits = {.max_units = m->max_batch};
    worker_pool_spec spec = {0};
    if (start_serving(r, m, &limits, &spec, err, errlen) != 0)
        return -1;
    log_info("model %s loaded from %s in %.1f ms: gan %s, latent %d, %s%d classes, output "
             "%dx%dx%d, %d worker(s), batch <= %d, %.1f MiB scratch per worker",
             m->name, m->path, now_ms() - t0, gan_arch_name(gs->arch), gs->latent_dim,
             gs->num_classes ? "" : "unconditional, ", gs->num_classes, gs->out_channels,
             gs->out_height, gs->out_width, m->workers, m->max_batch,
             (double)engine_model_arena_bytes(m->model) / (1024.0 * 1024.0));
    return 0;
}

static int load_one(registry *r, registry_model *m, char *err, size_t errlen)
{
    double t0 = now_ms();
    int rc;
    switch (m->md.kind) {
    case MODEL_KIND_CNN: rc = load_cnn(r, m, t0, err, errlen); break;
    case MODEL_KIND_BERT: rc = load_bert(r, m, t0, err, errlen); break;
    case MODEL_KIND_GAN: rc = load_gan(r, m, t0, err, errlen); break;
    default:
        rc = log_errbuf(err, errlen, "model %s: kind %s cannot be served", m->name,
                        model_kind_name(m->md.kind));
    }
    if (rc == 0) {
        atomic_store(&m->metrics->load_us, (uint64_t)((now_ms() - t0) * 1e3));
        atomic_store_explicit(&m->ready, true, memory_order_release);
    }
    return rc;
}

int registry_load(registry *r, char *err, size_t errlen)
{
    for (int i = 0; i < r->n; i++)
        if (load_one(r, &r->models[i], err, errlen) != 0)
            return -1;
    return 0;
}

void registry_shutdown(registry *r)
{
    if (r == NULL)
        return;
    /* Not ready any more: new classify requests get 503 from here on. */
    for (int i = 0; i < r->n; i++)
        atomic_store_explicit(&r->models[i].ready, false, memory_order_release);
    for (int i = 0; i < r->n; i++)
        if (r->models[i].batcher)
            batcher_close(r->models[i].batcher);
    for (int i = 0; i < r->n; i++)
        worker_pool_join(r->models[i].pool);
}

int registry_drain(registry *r, int timeout_ms)
{
    for (int i = 0; i < r->n; i++)
        atomic_store_explicit(&r->models[i].ready, false, memory_order_release);
    for (int i = 0; i < r->n; i++)
        if (r->models[i].batcher)
            batcher_close(r->models[i].batcher);
    double deadline = now_ms() + timeout_ms;
    for (;;) {
        int queued = 0;
        for (int i = 0; i < r->n; i++)
            if (r->models[i].batcher)
                queued += batcher_queued_jobs(r->models[i].batcher);
        if (queued == 0 || now_ms() >= deadline)
            break;
        struct timespec pause = {0, 5 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    int failed = 0;
    for (int i = 0; i < r->n; i++)
        if (r->models[i].batcher)
            failed += batcher_fail_queued(r->models[i].batcher,
                                          "the server is shutting down (shutdown_timeout_ms)");
    return failed;
}

void registry_free(registry *r)
{
    if (r == NULL)
        return;
    registry_shutdown(r);
    for (int i = 0; i < r->n; i++) {
        registry_model *m = &r->models[i];
        worker_pool_free(m->pool);
        batcher_free(m->batcher);
        engine_model_free(m->model);
        wordpiece_free(m->tokenizer);
        model_dir_free(&m->md);
        model_metrics_release(m->metrics);
    }
    free(r->models);
    free(r);
}

void registry_ref(registry *r) { atomic_fetch_add(&r->refs, 1); }
void registry_unref(registry *r) { atomic_fetch_sub(&r->refs, 1); }
int registry_refs(registry *r) { return atomic_load(&r->refs); }

int registry_count(const registry *r) { return r->n; }

registry_model *registry_at(registry *r, int i)
{
    return (i >= 0 && i < r->n) ? &r->models[i] : NULL;
}

registry_model *registry_find(registry *r, const char *name)
{
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->models[i].name, name) == 0)
            return &r->models[i];
    return NULL;
}

bool registry_model_ready(registry_model *m)
{
    return atomic_load_explicit(&m->ready, memory_order_acquire);
}

bool registry_ready(registry *r)
{
    for (int i = 0; i < r->n; i++)
        if (!registry_model_ready(&r->models[i]))
            return false;
    return r->n > 0;
}

void registry_model_info(registry_model *m, proto_model_info *out)
{
    memset(out, 0, sizeof *out);
    out->name = m->name;
    out->kind = model_kind_name(m->md.kind);
    out->ready = registry_model_ready(m);
    out->max_batch_size = m->max_batch;
    if (m->md.kind == MODEL_KIND_BERT) {
        out->max_tokens = m->md.bert.max_position_embeddings;
        out->vocab_size = m->md.bert.vocab_size;
        /* Known once loaded; `ready` (acquire, above) publishes it. */
        out->next_sentence = out->ready && m->has_nsp;
        long long tokens = bert_batch_tokens(m);
        out->max_batch_tokens = tokens <= INT_MAX ? (int)tokens : INT_MAX;
        return;
    }
    if (m->md.kind == MODEL_KIND_GAN) {
        const gan_spec *gs = &m->md.gan;
        out->architecture = gan_arch_name(gs->arch);
        out->channels = gs->out_channels;
        out->height = gs->out_height;
        out->width = gs->out_width;
        out->classes = gs->num_classes;
        out->latent_dim = gs->latent_dim;
        out->max_count = m->max_generate;
        return;
    }
    out->architecture = cnn_arch_name(m->md.cnn.arch);
    out->channels = m->md.preproc.channels;
    out->height = m->md.preproc.height;
    out->width = m->md.preproc.width;
    out->classes = m->md.n_labels;
}

void registry_metrics_view(registry_model *m, metrics_model_view *out)
{
    bool ready = registry_model_ready(m);
    *out = (metrics_model_view){
        .name = m->name,
        .kind = model_kind_name(m->md.kind),
        .m = m->metrics,
        .ready = ready,
        /* the batcher exists once ready has published it, and until registry_free */
        .queue_depth = ready ? batcher_queued_jobs(m->batcher) : 0,
        .queue_capacity = m->queue_capacity,
        .max_batch = m->max_batch,
    };
}

void registry_bert_model(registry_model *m, proto_bert_model *out)
{
    out->name = m->name;
    out->wp = m->tokenizer;
    out->max_tokens = m->md.bert.max_position_embeddings;
    out->candidates = m->tokenizer ? wordpiece_vocab_size(m->tokenizer) : 0;
}

void registry_gan_model(registry_model *m, proto_gan_model *out)
{
    const gan_spec *gs = &m->md.gan;
    *out = (proto_gan_model){
        .name = m->name,
        .latent_dim = gs->latent_dim,
        .num_classes = gs->num_classes,
        .labels = m->md.labels,
        .channels = gs->out_channels,
        .height = gs->out_height,
        .width = gs->out_width,
        .range = gs->range,
        .max_count = m->max_generate,
    };
}
