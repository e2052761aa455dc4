/* registry.h — the models this daemon serves, by name.
 *
 * Use (main thread):
 *   registry *r;
 *   registry_create(&cfg, NULL, &r, err, sizeof err); // reads every model directory (fast)
 *   ... start HTTP: /v2/health/ready says 503 meanwhile ...
 *   registry_load(r, err, sizeof err);            // weights, queues, workers; then ready
 *   ... serve ...
 *   registry_shutdown(r);  registry_free(r);      // drain queues, join workers
 * HTTP threads: registry_find(r, name), then registry_model_ready() before touching
 * its engine model or batcher.
 * Reload: build and load a second registry from the new config (passing the
 * current one as `previous`, so models of the same name keep their metrics), swap
 * it in, and free the old one once registry_refs() says no request holds it: each
 * request takes a reference (registry_ref) on the registry it started with and
 * finishes on that registry's models and workers.
 * Ownership: the registry owns every model entry and all it holds; entries live
 * until registry_free(), so a pointer from registry_find() stays valid until then.
 */
#ifndef MODELD_DAEMON_REGISTRY_H
#define MODELD_DAEMON_REGISTRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "daemon/batcher.h"
#include "daemon/config.h"
#include "daemon/metrics.h"
#include "daemon/worker.h"
#include "engine/engine.h"
#include "engine/wordpiece.h"
#include "proto/model_dir.h"
#include "proto/proto.h"

typedef struct registry_model {
    char name[CONFIG_NAME_MAX];
    char path[PATH_MAX];
    int workers, max_batch, queue_capacity;
    int max_batch_tokens;   /* BERT: as configured; 0: max_batch x max_position_embeddings */
    int max_generate;       /* GAN: images per generate request */
    long long max_queue_delay_us;
    model_dir md;           /* kind, spec or BERT config, labels; read at create */
    /* Set by registry_load(), then published by `ready` (release/acquire). */
    engine_model *model;
    batcher *batcher;
    worker_pool *pool;
    wordpiece *tokenizer;   /* BERT: read-only, shared by every HTTP thread */
    bool has_nsp;           /* BERT: the checkpoint has the next-sentence head */
    atomic_bool ready;
    model_metrics *metrics; /* updated by HTTP and worker threads, lock-free; shared
                             * with the entry of the same name across a reload */
} registry_model;

typedef struct registry registry;

int registry_create(const config *cfg, registry *previous, registry **out, char *err,
                    size_t errlen);
int registry_load(registry *r, char *err, size_t errlen);
/* Stop taking requests and wait until every queued one has been answered. */
void registry_shutdown(registry *r);
/* Stop taking requests and give the queues timeout_ms to run dry; what is still
 * queued then fails ("shutting down").  Returns how many failed.  Follow with
 * registry_shutdown() to wait for the batches running. */
int registry_drain(registry *r, int timeout_ms);
void registry_free(registry *r);

/* Requests holding r.  Atomic; any thread. */
void registry_ref(registry *r);
void registry_unref(registry *r);
int registry_refs(registry *r);

int registry_count(const registry *r);
registry_model *registry_at(registry *r, int i);
registry_model *registry_find(registry *r, const char *name);
bool registry_model_ready(registry_model *m);
/* True once every model is loaded, false again after registry_shutdown(). */
bool registry_ready(registry *r);
void registry_model_info(registry_model *m, proto_model_info *out);
/* The model's metrics and gauges (queue depth now) for a scrape. */
void registry_metrics_view(registry_model *m, metrics_model_view *out);
/* What proto needs to parse requests for a ready BERT model. */
void registry_bert_model(registry_model *m, proto_bert_model *out);
/* What proto needs to parse and answer generate requests for a GAN model. */
void registry_gan_model(registry_model *m, proto_gan_model *out);

#endif
