/* registry.c — models by name, and their life cycle.
 *
 * Owns, per model: the parsed model directory, the engine model (weights shared
 * by all of its workers), its batcher and its worker pool.  The set of models is
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

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/log.h"

struct registry {
    registry_model *models;
    int n;
    uint64_t timeout_us, max_delay_us;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int registry_create(const config *cfg, registry **out, char *err, size_t errlen)
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
        atomic_init(&m->ready, false);
        engine_err e;
        if (model_dir_read(cm->path, &m->md, &e) != ENGINE_OK) {
            log_errbuf(err, errlen, "model %s (%s): %s", cm->name, cm->path, e.msg);
            registry_free(r);
            return -1;
        }
        r->n = i + 1; /* so registry_free() releases what has been read */
    }
    *out = r;
    return 0;
}

static int load_one(registry *r, registry_model *m, char *err, size_t errlen)
{
    double t0 = now_ms();
    engine_err e;
    if (engine_cnn_load(&m->md.cnn, m->md.weights_path, m->max_batch, &m->model, &e) !=
        ENGINE_OK)
        return log_errbuf(err, errlen, "model %s (%s): %s", m->name, m->path, e.msg);
    int k = engine_model_num_outputs(m->model);
    if (k != m->md.n_labels)
        return log_errbuf(err, errlen, "model %s: the network has %d outputs but labels.txt has %d lines",
                    m->name, k, m->md.n_labels);

    batcher_config bc = {
        .capacity = m->queue_capacity,
        .max_batch = m->max_batch,
        .max_delay_us = r->max_delay_us,
        .timeout_us = r->timeout_us,
    };
    batcher_status bs = batcher_create(&bc, &m->batcher);
    if (bs != BATCHER_OK)
        return log_errbuf(err, errlen, "model %s: queue: %s", m->name, batcher_status_str(bs));
    if (worker_pool_start(&m->pool, m->name, m->model, m->batcher, m->workers, m->max_batch, err,
                          errlen) != 0)
        return -1;

    int c, h, w;
    engine_model_input_shape(m->model, &c, &h, &w);
    log_info("model %s loaded from %s in %.1f ms: %s %s, input %dx%dx%d, %d classes, "
             "%d worker(s), batch <= %d, %.1f MiB scratch per worker",
             m->name, m->path, now_ms() - t0, model_kind_name(m->md.kind),
             cnn_arch_name(m->md.cnn.arch), c, h, w, k, m->workers, m->max_batch,
             (double)engine_model_arena_bytes(m->model) / (1024.0 * 1024.0));
    atomic_store_explicit(&m->ready, true, memory_order_release);
    return 0;
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
        model_dir_free(&m->md);
    }
    free(r->models);
    free(r);
}

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
    out->name = m->name;
    out->kind = model_kind_name(m->md.kind);
    out->ready = registry_model_ready(m);
    out->architecture = cnn_arch_name(m->md.cnn.arch);
    out->channels = m->md.preproc.channels;
    out->height = m->md.preproc.height;
    out->width = m->md.preproc.width;
    out->classes = m->md.n_labels;
    out->max_batch_size = m->max_batch;
}
