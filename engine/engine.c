/* engine.c — the public face of libengine: status strings, model load/free and
 * sessions.  Architectures live in engine/models/, the graph and its planner in
 * engine/graph.c, kernels in engine/ops/.
 *
 * A model is built once (one thread, may allocate) and then only read.  A session
 * owns one arena sized from the model's plan at open; forward bumps and resets it
 * and never allocates, so a worker that opened its session can run forever
 * without touching malloc.
 *
 * A model is of one kind, CNN (a graph), GAN (a graph behind the rows gan_input_rows
 * makes of latents and classes) or BERT (models/bert.c); every entry point here
 * dispatches on it, and a forward of another kind is ENGINE_ERR_INVALID. */
#include "engine/engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* A model's first half: max_batch checked, the checkpoint mapped.  NULL (and the
 * status) on failure. */
static engine_status model_open(engine_model_kind kind, const char *weights_path, int max_batch,
                                engine_model **out, engine_err *err)
{
    *out = NULL;
    if (max_batch < 1 || max_batch > 65536)
        return engine_fail(err, ENGINE_ERR_INVALID, "max_batch %d is outside 1..65536", max_batch);
    engine_model *m = calloc(1, sizeof *m);
    if (!m)
        return engine_fail(err, ENGINE_ERR_NOMEM, "out of memory");
    engine_status s = safetensors_open(weights_path, &m->st, err);
    if (s != ENGINE_OK) {
        free(m);
        return s;
    }
    m->kind = kind;
    *out = m;
    return ENGINE_OK;
}

/* A builder on m's graph, started from the input shape. */
static graph_builder graph_start(engine_model *m, graph_shape input, engine_err *err)
{
    graph_init(&m->g, input);
    graph_builder b = { .g = &m->g, .st = m->st, .status = ENGINE_OK, .err = err };
    if (m->g.n_values != 1)
        b.status = engine_fail(err, ENGINE_ERR_NOMEM, "out of memory");
    return b;
}

/* The second half: plans the graph for output value v, or, after any error, frees m. */
static engine_status graph_model_finish(engine_model *m, engine_status s, int v, int max_batch,
                                        engine_model **out, engine_err *err)
{
    if (s == ENGINE_OK)
        s = graph_plan(&m->g, v, max_batch, err);
    if (s != ENGINE_OK) {
        engine_model_free(m);
        return s;
    }
    *out = m;
    return ENGINE_OK;
}

engine_status engine_cnn_load(const cnn_spec *spec, const char *weights_path, int max_batch,
                              engine_model **out, engine_err *err)
{
    *out = NULL;
    if (spec->in_channels < 1 || spec->in_height < 1 || spec->in_width < 1 || spec->num_classes < 1)
        return engine_fail(err, ENGINE_ERR_INVALID, "input shape and class count must be positive");
    cnn_builder build = builder_for(spec->arch);
    if (!build)
        return engine_fail(err, ENGINE_ERR_UNSUPPORTED, "unknown CNN architecture %d", (int)spec->arch);

    engine_model *m;
    engine_status s = model_open(ENGINE_MODEL_CNN, weights_path, max_batch, &m, err);
    if (s != ENGINE_OK)
        return s;
    m->in_c = spec->in_channels;
    m->in_h = spec->in_height;
    m->in_w = spec->in_width;
    graph_builder b = graph_start(m, (graph_shape){ m->in_c, m->in_h, m->in_w }, err);
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
    return graph_model_finish(m, b.status, v, max_batch, out, err);
}

/* What model_dir guarantees, checked again for specs made elsewhere: every size the
 * builder and forward compute with stays far from int overflow. */
static engine_status gan_spec_check(const gan_spec *spec, engine_err *err)
{
    if (spec->arch != GAN_ARCH_LAYERS && spec->arch != GAN_ARCH_DCGAN)
        return engine_fail(err, ENGINE_ERR_UNSUPPORTED, "unknown GAN architecture %d",
                           (int)spec->arch);
    if (spec->latent_dim < 1 || spec->latent_dim > GAN_MAX_LATENT)
        return engine_fail(err, ENGINE_ERR_INVALID, "latent_dim %d is outside 1..%d",
                           spec->latent_dim, GAN_MAX_LATENT);
    if (spec->num_classes < 0 || spec->num_classes > GAN_MAX_CLASSES)
        return engine_fail(err, ENGINE_ERR_INVALID, "num_classes %d is outside 0..%d",
                           spec->num_classes, GAN_MAX_CLASSES);
    if ((spec->num_classes > 0) != (spec->condition != GAN_COND_NONE) ||
        (unsigned)spec->condition > GAN_COND_ONE_HOT)
        return engine_fail(err, ENGINE_ERR_INVALID, "a conditional generator needs both "
                           "num_classes and a condition, an unconditional one neither");
    if (spec->condition == GAN_COND_EMBEDDING &&
        (!spec->cond_key[0] || !memchr(spec->cond_key, '\0', sizeof spec->cond_key)))
        return engine_fail(err, ENGINE_ERR_INVALID, "the embedding condition needs a tensor name");
    if (spec->out_channels < 1 || spec->out_height < 1 || spec->out_width < 1)
        return engine_fail(err, ENGINE_ERR_INVALID, "the output shape must be positive");
    if (spec->arch == GAN_ARCH_DCGAN && (spec->ngf < 1 || spec->ngf > GAN_MAX_NGF))
        return engine_fail(err, ENGINE_ERR_INVALID, "ngf %d is outside 1..%d", spec->ngf,
                           GAN_MAX_NGF);
    return ENGINE_OK;
}

engine_status engine_gan_load(const gan_spec *spec, const char *weights_path, int max_batch,
                              engine_model **out, engine_err *err)
{
    *out = NULL;
    engine_status s = gan_spec_check(spec, err);
    if (s != ENGINE_OK)
        return s;
    engine_model *m;
    if ((s = model_open(ENGINE_MODEL_GAN, weights_path, max_batch, &m, err)) != ENGINE_OK)
        return s;
    /* the embedding's width, hence the input shape, is the checkpoint's */
    if ((s = gan_input_init(spec, m->st, &m->gan, err)) != ENGINE_OK) {
        engine_model_free(m);
        return s;
    }
    m->in_c = spec->latent_dim;
    m->in_h = m->in_w = 1;
    graph_builder b = graph_start(m, (graph_shape){ gan_input_features(&m->gan), 1, 1 }, err);
    int v = b.status == ENGINE_OK ? gan_build(&b, spec, &m->gan) : -1;
    if (b.status == ENGINE_OK) {
        graph_shape o = m->g.values[v];
        m->num_outputs = o.c * o.h * o.w;
        if (o.c != spec->out_channels || o.h != spec->out_height || o.w != spec->out_width)
            b.status = engine_fail(err, ENGINE_ERR_SHAPE,
                                   "the generator's output is (%d, %d, %d), expected (%d, %d, %d) "
                                   "(output channels, height, width)", o.c, o.h, o.w,
                                   spec->out_channels, spec->out_height, spec->out_width);
    }
    return graph_model_finish(m, b.status, v, max_batch, out, err);
}

int engine_gan_latent_dim(const engine_model *m)
{
    return m->kind == ENGINE_MODEL_GAN ? m->gan.latent_dim : 0;
}

int engine_gan_num_classes(const engine_model *m)
{
    return m->kind == ENGINE_MODEL_GAN ? m->gan.num_classes : 0;
}

void engine_gan_output_shape(const engine_model *m, int *channels, int *height, int *width)
{
    graph_shape o = { 0, 0, 0 };
    if (m->kind == ENGINE_MODEL_GAN)
        o = m->g.values[m->g.output];
    *channels = o.c;
    *height = o.h;
    *width = o.w;
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

/* BERT takes token ids, not images: (0, 0, 0); a GAN takes latents: (latent_dim, 1, 1). */
void engine_model_input_shape(const engine_model *m, int *channels, int *height, int *width)
{
    *channels = m->in_c;
    *height = m->in_h;
    *width = m->in_w;
}

/* CNN: classes; BERT: vocabulary size, the width of one mask position's logits; GAN:
 * C*H*W of one image. */
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

/* The rows of a GAN's input, max_batch x F floats. */
static size_t gan_input_floats(const engine_model *m)
{
    return (size_t)m->g.max_batch * gan_input_features(&m->gan);
}

size_t engine_model_arena_bytes(const engine_model *m)
{
    switch (m->kind) {
    case ENGINE_MODEL_BERT:
        return bert_arena_bytes(m->bert);
    case ENGINE_MODEL_GAN:
        return graph_arena_bytes(&m->g) + arena_round(gan_input_floats(m) * sizeof(float));
    case ENGINE_MODEL_CNN:
        break;
    }
    return graph_arena_bytes(&m->g);
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
    /* BERT's kernels are the pool's only users so far: a CNN or GAN session keeps no
     * idle threads.  As many threads as BLAS may use: the two take turns, never run
     * together. */
    engine_status st = m->kind == ENGINE_MODEL_BERT
                           ? par_pool_open(engine_blas_threads(), &s->pool, err)
                           : ENGINE_OK;
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

engine_status engine_gan_forward(engine_session *s, const float *z, const int32_t *classes,
                                 int n, float *images, engine_err *err)
{
    const engine_model *m = s->m;
    if (m->kind != ENGINE_MODEL_GAN)
        return engine_fail(err, ENGINE_ERR_INVALID, "engine_gan_forward on a model that is "
                           "not a GAN");
    const graph *g = &m->g;
    if (n < 1 || n > g->max_batch)
        return engine_fail(err, ENGINE_ERR_INVALID, "batch of %d is outside 1..%d", n,
                           g->max_batch);
    const int k = m->gan.num_classes;
    if (k > 0 && !classes)
        return engine_fail(err, ENGINE_ERR_INVALID, "a conditional generator needs a class "
                           "for every sample (0..%d)", k - 1);
    if (k == 0 && classes)
        return engine_fail(err, ENGINE_ERR_INVALID, "an unconditional generator takes no "
                           "classes");
    for (int i = 0; k > 0 && i < n; i++)
        if (classes[i] < 0 || classes[i] >= k)
            return engine_fail(err, ENGINE_ERR_INVALID, "class %ld (sample %d) is outside "
                               "0..%d", (long)classes[i], i, k - 1);
    arena_reset(&s->a);
    float *x = arena_alloc(&s->a, gan_input_floats(m) * sizeof(float));
    float *region = arena_alloc(&s->a, g->region_floats * sizeof(float));
    float *scratch = arena_alloc(&s->a, g->scratch_floats * sizeof(float));
    gan_input_rows(&m->gan, n, z, classes, x);
    graph_forward(g, n, x, images, region, scratch);
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
