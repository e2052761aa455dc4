/* engine.c — the public face of libengine: status strings, model load/free and
 * sessions.  Architectures live in engine/models/, the graph and its planner in
 * engine/graph.c, kernels in engine/ops/.
 *
 * A model is built once (one thread, may allocate) and then only read.  A session
 * owns one arena sized from the model's plan at open; forward bumps and resets it
 * and never allocates, so a worker that opened its session can run forever
 * without touching malloc.
 *
 * A model is of one kind, CNN (a graph) or BERT (models/bert.c); every entry point
 * here dispatches on it, and a forward of the other kind is ENGINE_ERR_INVALID. */
#include "engine/engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/model.h"
#include "engine/models/builders.h"
#include "engine/parallel.h"

const char *engine_status_str(engine_status s)
{
    switch (s) {
    case ENGINE_OK: return "ok";
    case ENGINE_ERR_NOMEM: return "out of memory";
    case ENGINE_ERR_IO: return "file not readable";
    case ENGINE_ERR_FORMAT: return "malformed file";
    case ENGINE_ERR_SHAPE: return "tensor shape mismatch";
    case ENGINE_ERR_UNSUPPORTED: return "unsupported";
    case ENGINE_ERR_INVALID: return "invalid argument";
    case ENGINE_ERR_IMAGE: return "undecodable image";
    }
    return "unknown status";
}

engine_status engine_fail(engine_err *err, engine_status s, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return s;
}

/* ---- models ---------------------------------------------------------------- */

typedef int (*cnn_builder)(graph_builder *b, const cnn_spec *spec);

static cnn_builder builder_for(cnn_arch arch)
{
    switch (arch) {
    case CNN_ARCH_LAYERS: return layers_build;
    case CNN_ARCH_RESNET18:
    case CNN_ARCH_RESNET34:
    case CNN_ARCH_RESNET50: return resnet_build;
    case CNN_ARCH_MOBILENET_V2: return mobilenet_v2_build;
    }
    return NULL;
}

engine_status engine_cnn_load(const cnn_spec *spec, const char *weights_path, int max_batch,
                              engine_model **out, engine_err *err)
{
    *out = NULL;
    if (max_batch < 1 || max_batch > 65536)
        return engine_fail(err, ENGINE_ERR_INVALID, "max_batch %d is outside 1..65536", max_batch);
    if (spec->in_channels < 1 || spec->in_height < 1 || spec->in_width < 1 || spec->num_classes < 1)
        return engine_fail(err, ENGINE_ERR_INVALID, "input shape and class count must be positive");
    cnn_builder build = builder_for(spec->arch);
    if (!build)
        return engine_fail(err, ENGINE_ERR_UNSUPPORTED, "unknown CNN architecture %d", (int)spec->arch);

    engine_model *m = calloc(1, sizeof *m);
    if (!m)
        return engine_fail(err, ENGINE_ERR_NOMEM, "out of memory");
    engine_status s = safetensors_open(weights_path, &m->st, err);
    if (s != ENGINE_OK) {
        free(m);
        return s;
    }
    m->kind = ENGINE_MODEL_CNN;
    m->in_c = spec->in_channels;
    m->in_h = spec->in_height;
    m->in_w = spec->in_width;
    graph_init(&m->g, (graph_shape){ m->in_c, m->in_h, m->in_w });

    graph_builder b = { .g = &m->g, .st = m->st, .status = ENGINE_OK, .err = err };
    if (m->g.n_values != 1)
        b.status = engine_fail(err, ENGINE_ERR_NOMEM, "out of memory");
    int v = b.status == ENGINE_OK ? build(&b, spec) : -1;
    if (b.status == ENGINE_OK && v < 0)
        b.status = engine_fail(err, ENGINE_ERR_FORMAT, "%s: the network is empty", weights_path);
    if (b.status == ENGINE_OK) {
        graph_shape o = m->g.values[v];
        m->num_outputs = o.c * o.h * o.w;
        if (o.h != 1 || o.w != 1 || o.c != spec->num_classes)
            b.status = engine_fail(err, ENGINE_ERR_SHAPE,
                                   "the network's output is (%d, %d, %d), expected (%d) classes",
                                   o.c, o.h, o.w, spec->num_classes);
    }
    if (b.status == ENGINE_OK)
        b.status = graph_plan(&m->g, v, max_batch, err);
    if (b.status != ENGINE_OK) {
        engine_model_free(m);
        return b.status;
    }
    *out = m;
    return ENGINE_OK;
}

engine_status engine_bert_load(const bert_config *cfg, const char *weights_path,
                               int max_batch, int max_tokens, engine_model **out,
                               engine_err *err)
{
    *out = NULL;
    engine_model *m = calloc(1, sizeof *m);
    if (!m)
        return engine_fail(err, ENGINE_ERR_NOMEM, "out of memory");
    m->kind = ENGINE_MODEL_BERT;
    engine_status s = safetensors_open(weights_path, &m->st, err);
    if (s == ENGINE_OK)
        s = bert_load(cfg, m->st, max_batch, max_tokens, &m->bert, err);
    if (s != ENGINE_OK) {
        engine_model_free(m);
        return s;
    }
    m->num_outputs = bert_vocab_size(m->bert);
    *out = m;
    return ENGINE_OK;
}

bool engine_bert_has_nsp(const engine_model *m)
{
    return m->kind == ENGINE_MODEL_BERT && bert_has_nsp(m->bert);
}

void engine_model_free(engine_model *m)
{
    if (!m)
        return;
    graph_free(&m->g);
    bert_free(m->bert);
    safetensors_close(m->st);
    free(m);
}

/* BERT takes token ids, not images: (0, 0, 0). */
void engine_model_input_shape(const engine_model *m, int *channels, int *height, int *width)
{
    *channels = m->in_c;
    *height = m->in_h;
    *width = m->in_w;
}

/* CNN: classes; BERT: vocabulary size, the width of one mask position's logits. */
int engine_model_num_outputs(const engine_model *m)
{
    return m->num_outputs;
}

/* BERT: sequences per batch. */
int engine_model_max_batch(const engine_model *m)
{
    return m->kind == ENGINE_MODEL_BERT ? bert_max_batch(m->bert) : m->g.max_batch;
}

/* BERT: per token of the encoder's GEMMs (see bert_flops_per_token). */
double engine_model_flops(const engine_model *m)
{
    return m->kind == ENGINE_MODEL_BERT ? bert_flops_per_token(m->bert) : graph_flops(&m->g);
}

size_t engine_model_arena_bytes(const engine_model *m)
{
    return m->kind == ENGINE_MODEL_BERT ? bert_arena_bytes(m->bert)
                                        : graph_arena_bytes(&m->g);
}

/* ---- sessions ---------------------------------------------------------------- */

engine_status engine_session_open(const engine_model *m, engine_session **out, engine_err *err)
{
    *out = NULL;
    engine_session *s = calloc(1, sizeof *s);
    if (!s)
        return engine_fail(err, ENGINE_ERR_NOMEM, "out of memory");
    s->m = m;
    const size_t bytes = engine_model_arena_bytes(m);
    if (arena_init(&s->a, bytes) != 0) {
        free(s);
        return engine_fail(err, ENGINE_ERR_NOMEM, "out of memory for a %zu-byte session arena",
                           bytes);
    }
    /* as many threads as BLAS may use: the two take turns, never run together */
    engine_status st = par_pool_open(engine_blas_threads(), &s->pool, err);
    if (st != ENGINE_OK) {
        arena_free(&s->a);
        free(s);
        return st;
    }
    *out = s;
    return ENGINE_OK;
}

void engine_session_close(engine_session *s)
{
    if (!s)
        return;
    par_pool_close(s->pool);
    arena_free(&s->a);
    free(s);
}

engine_status engine_cnn_forward(engine_session *s, const float *x, int n, float *logits,
                                 engine_err *err)
{
    if (s->m->kind != ENGINE_MODEL_CNN)
        return engine_fail(err, ENGINE_ERR_INVALID, "engine_cnn_forward on a model that is "
                           "not a CNN");
    const graph *g = &s->m->g;
    if (n < 1 || n > g->max_batch)
        return engine_fail(err, ENGINE_ERR_INVALID, "batch of %d is outside 1..%d", n, g->max_batch);
    arena_reset(&s->a);
    float *region = arena_alloc(&s->a, g->region_floats * sizeof(float));
    float *scratch = arena_alloc(&s->a, g->scratch_floats * sizeof(float));
    graph_forward(g, n, x, logits, region, scratch);
    return ENGINE_OK;
}

engine_status engine_bert_forward(engine_session *s, const engine_bert_seq *seqs, int n,
                                  float *mlm, float *nsp, engine_err *err)
{
    if (s->m->kind != ENGINE_MODEL_BERT)
        return engine_fail(err, ENGINE_ERR_INVALID, "engine_bert_forward on a model that is "
                           "not a BERT");
    return bert_forward(s->m->bert, &s->a, s->pool, seqs, n, mlm, nsp, err);
}
