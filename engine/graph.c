/* graph.c — builds, plans and runs a network graph (see graph.h).
 *
 * Every op is one row of op_table: its name, its output-shape rule, the scratch it
 * needs and its forward.  Adding an op means one enum value, one row and the builder
 * case that fills its parameters — nothing else switches on op kinds.
 *
 * Build time (model load, one thread) may allocate; graph_forward never does: it
 * reads the graph, which is immutable after graph_plan, and writes the caller's
 * region/scratch, so any number of sessions run one graph concurrently.
 *
 * Folding BatchNorm into its producer assumes the pre-BN value has no other reader,
 * which holds for every builder here: sequential layer lists (CNNs, GAN generators),
 * and torchvision blocks where each conv feeds exactly its BN.  The producer may be a
 * conv, a conv-transpose (its weight is (in, out/g, kh, kw): the scale follows the
 * output channel) or a Linear, also one whose output an Unflatten has since made
 * (C, H, W) (each channel is then H*W of its rows).
 */
#include "engine/graph.h"

#include "engine/arena.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- op table ------------------------------------------------------------ */

static size_t shape_numel(graph_shape s)
{
    return (size_t)s.c * (size_t)s.h * (size_t)s.w;
}

static graph_shape conv_shape(const graph_node *nd)
{
    return (graph_shape){ nd->p.conv.out_c, nd->p.conv.out_h, nd->p.conv.out_w };
}
static graph_shape deconv_shape(const graph_node *nd)
{
    return (graph_shape){ nd->p.deconv.out_c, nd->p.deconv.out_h, nd->p.deconv.out_w };
}
static graph_shape linear_shape(const graph_node *nd)
{
    return (graph_shape){ nd->p.linear.out, 1, 1 };
}
static graph_shape pool_shape(const graph_node *nd)
{
    return (graph_shape){ nd->p.pool.c, nd->p.pool.out_h, nd->p.pool.out_w };
}
static graph_shape same_shape(const graph_node *nd)
{
    return nd->in_shape;
}

static size_t no_scratch(const graph_node *nd, int max_batch)
{
    (void)nd, (void)max_batch;
    return 0;
}
static size_t conv_scratch(const graph_node *nd, int max_batch)
{
    return conv2d_scratch_floats_batch(&nd->p.conv, max_batch);
}
static size_t deconv_scratch(const graph_node *nd, int max_batch)
{
    return conv_transpose2d_scratch_floats(&nd->p.deconv, max_batch);
}

static void conv_run(const graph_node *nd, int n, const float *x, const float *x1, float *y,
                     float *scratch)
{
    (void)x1;
    conv2d_forward(&nd->p.conv, n, x, nd->weight, nd->bias, nd->act, nd->act_alpha, y, scratch);
}
static void deconv_run(const graph_node *nd, int n, const float *x, const float *x1, float *y,
                       float *scratch)
{
    (void)x1;
    conv_transpose2d_forward(&nd->p.deconv, n, x, nd->weight, nd->bias, nd->act, nd->act_alpha, y,
                             scratch);
}
static void linear_run(const graph_node *nd, int n, const float *x, const float *x1, float *y,
                       float *scratch)
{
    (void)x1, (void)scratch;
    linear_forward(NULL, n, nd->p.linear.in, nd->p.linear.out, x, nd->weight, nd->bias, nd->act,
                   nd->act_alpha, y);
}
static void maxpool_run(const graph_node *nd, int n, const float *x, const float *x1, float *y,
                        float *scratch)
{
    (void)x1, (void)scratch;
    maxpool2d_forward(&nd->p.pool, n, x, y);
}
static void avgpool_run(const graph_node *nd, int n, const float *x, const float *x1, float *y,
                        float *scratch)
{
    (void)x1, (void)scratch;
    avgpool2d_forward(&nd->p.pool, n, x, y);
}
static void adaptive_run(const graph_node *nd, int n, const float *x, const float *x1, float *y,
                         float *scratch)
{
    (void)x1, (void)scratch;
    const pool2d_params *p = &nd->p.pool;
    adaptive_avgpool2d_forward(n, p->c, p->in_h, p->in_w, p->out_h, p->out_w, x, y);
}
static void affine_run(const graph_node *nd, int n, const float *x, const float *x1, float *y,
                       float *scratch)
{
    (void)x1, (void)scratch;
    size_t total = (size_t)n * shape_numel(nd->in_shape);
    memcpy(y, x, total * sizeof *y);
    channel_affine(n, nd->in_shape.c, nd->in_shape.h * nd->in_shape.w, nd->scale, nd->shift, y);
    act_apply(nd->act, nd->act_alpha, y, total);
}
static void act_run(const graph_node *nd, int n, const float *x, const float *x1, float *y,
                    float *scratch)
{
    (void)x1, (void)scratch;
    size_t total = (size_t)n * shape_numel(nd->in_shape);
    memcpy(y, x, total * sizeof *y);
    act_apply(nd->act, nd->act_alpha, y, total);
}
static void add_run(const graph_node *nd, int n, const float *x, const float *x1, float *y,
                    float *scratch)
{
    (void)scratch;
    add_forward((size_t)n * shape_numel(nd->in_shape), x, x1, nd->act, nd->act_alpha, y);
}
static void softmax_run(const graph_node *nd, int n, const float *x, const float *x1, float *y,
                        float *scratch)
{
    (void)x1, (void)scratch;
    memcpy(y, x, (size_t)n * nd->in_shape.c * sizeof *y);
    softmax_rows(n, nd->in_shape.c, y);
}

typedef struct op_desc {
    const char *name;
    graph_shape (*out_shape)(const graph_node *nd);
    size_t (*scratch_floats)(const graph_node *nd, int max_batch); /* per call */
    void (*forward)(const graph_node *nd, int n, const float *x, const float *x1, float *y,
                    float *scratch);
    bool fuses_act; /* an activation after this op can be applied in its output pass */
} op_desc;

static const op_desc op_table[OP_COUNT] = {
    [OP_CONV2D] = { "conv2d", conv_shape, conv_scratch, conv_run, true },
    [OP_LINEAR] = { "linear", linear_shape, no_scratch, linear_run, true },
    [OP_MAXPOOL2D] = { "maxpool2d", pool_shape, no_scratch, maxpool_run, false },
    [OP_AVGPOOL2D] = { "avgpool2d", pool_shape, no_scratch, avgpool_run, false },
    [OP_ADAPTIVE_AVGPOOL2D] = { "adaptive_avgpool2d", pool_shape, no_scratch, adaptive_run, false },
    [OP_AFFINE] = { "affine", same_shape, no_scratch, affine_run, true },
    [OP_ACT] = { "activation", same_shape, no_scratch, act_run, false },
    [OP_ADD] = { "add", same_shape, no_scratch, add_run, true },
    [OP_SOFTMAX] = { "softmax", same_shape, no_scratch, softmax_run, false },
    [OP_CONV_TRANSPOSE2D] = { "conv_transpose2d", deconv_shape, deconv_scratch, deconv_run, true },
};

const char *op_kind_name(op_kind kind)
{
    return (unsigned)kind < OP_COUNT ? op_table[kind].name : "unknown";
}

/* ---- graph storage ------------------------------------------------------- */

static bool grow(void **buf, int *cap, int need, size_t elem)
{
    if (need <= *cap)
        return true;
    int ncap = *cap ? *cap * 2 : 16;
    while (ncap < need)
        ncap *= 2;
    void *p = realloc(*buf, (size_t)ncap * elem);
    if (!p)
        return false;
    *buf = p;
    *cap = ncap;
    return true;
}

static int new_value(graph *g, graph_shape s, int producer)
{
    int cap = g->cap_values;
    if (!grow((void **)&g->values, &cap, g->n_values + 1, sizeof *g->values))
        return -1;
    int cap2 = g->cap_values;
    if (!grow((void **)&g->value_producer, &cap2, g->n_values + 1, sizeof *g->value_producer))
        return -1;
    int cap3 = g->cap_values;
    if (!grow((void **)&g->value_uses, &cap3, g->n_values + 1, sizeof *g->value_uses))
        return -1;
    g->cap_values = cap;
    g->values[g->n_values] = s;
    g->value_producer[g->n_values] = producer;
    g->value_uses[g->n_values] = 0;
    return g->n_values++;
}

void graph_init(graph *g, graph_shape input)
{
    memset(g, 0, sizeof *g);
    g->output = -1;
    new_value(g, input, -1); /* a failure leaves n_values 0, caught by graph_add_layer */
}

void graph_free(graph *g)
{
    for (int i = 0; i < g->n_owned; i++)
        free(g->owned[i]);
    free(g->owned);
    free(g->nodes);
    free(g->values);
    free(g->value_producer);
    free(g->value_uses);
    free(g->value_offset);
    memset(g, 0, sizeof *g);
}

/* ---- builder helpers ------------------------------------------------------- */

static bool failed(graph_builder *b)
{
    return b->status != ENGINE_OK;
}

static int fail(graph_builder *b, engine_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(graph_builder *b, engine_status s, const char *fmt, ...)
{
    if (!failed(b)) {
        b->status = s;
        if (b->err) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(b->err->msg, sizeof b->err->msg, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

static float *own_floats(graph_builder *b, size_t n)
{
    graph *g = b->g;
    if (!grow((void **)&g->owned, &g->cap_owned, g->n_owned + 1, sizeof *g->owned)) {
        fail(b, ENGINE_ERR_NOMEM, "out of memory for weights");
        return NULL;
    }
    float *p = aligned_alloc(64, ((n ? n : 1) * sizeof(float) + 63) & ~(size_t)63);
    if (!p) {
        fail(b, ENGINE_ERR_NOMEM, "out of memory for weights");
        return NULL;
    }
    g->owned[g->n_owned++] = p;
    return p;
}

static bool is_owned(const graph *g, const float *p)
{
    for (int i = 0; i < g->n_owned; i++)
        if (g->owned[i] == p)
            return true;
    return false;
}

const float *graph_load_tensor(graph_builder *b, const char *prefix, const char *suffix,
                               const int64_t *dims, int ndim, bool optional)
{
    if (failed(b))
        return NULL;
    char name[CNN_PREFIX_MAX + 32];
    if (prefix[0])
        snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    else
        snprintf(name, sizeof name, "%s", suffix);
    const safetensors_tensor *t;
    engine_err e;
    if (safetensors_find_shaped(b->st, name, dims, ndim, optional, &t, &e) != ENGINE_OK) {
        fail(b, ENGINE_ERR_SHAPE, "%s", e.msg);
        return NULL;
    }
    if (t == NULL)
        return NULL;
    const float *direct = safetensors_f32_data(t);
    if (direct)
        return direct;
    float *copy = own_floats(b, (size_t)t->numel);
    if (!copy)
        return NULL;
    if (safetensors_read_f32(t, copy, &e) != ENGINE_OK) {
        fail(b, ENGINE_ERR_FORMAT, "%s", e.msg);
        return NULL;
    }
    return copy;
}

/* A writable copy of a weight the graph may still be pointing into the mapping for. */
static float *make_writable(graph_builder *b, const float *src, size_t n)
{
    if (src && is_owned(b->g, src))
        return (float *)src;
    float *p = own_floats(b, n);
    if (!p)
        return NULL;
    if (src)
        memcpy(p, src, n * sizeof *p);
    else
        memset(p, 0, n * sizeof *p);
    return p;
}

static int add_node(graph_builder *b, graph_node *nd, int in0, int in1)
{
    if (failed(b))
        return -1;
    graph *g = b->g;
    nd->in0 = in0;
    nd->in1 = in1;
    nd->in_shape = g->values[in0];
    nd->out_shape = op_table[nd->kind].out_shape(nd);
    if (nd->out_shape.c <= 0 || nd->out_shape.h <= 0 || nd->out_shape.w <= 0)
        return fail(b, ENGINE_ERR_SHAPE, "%s '%s': input (%d, %d, %d) is too small",
                    op_table[nd->kind].name, nd->layer, nd->in_shape.c, nd->in_shape.h,
                    nd->in_shape.w);
    if (shape_numel(nd->out_shape) > (size_t)INT32_MAX)
        return fail(b, ENGINE_ERR_UNSUPPORTED, "%s '%s': output too large",
                    op_table[nd->kind].name, nd->layer);
    if (!grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof *g->nodes))
        return fail(b, ENGINE_ERR_NOMEM, "out of memory building the graph");
    int v = new_value(g, nd->out_shape, g->n_nodes);
    if (v < 0)
        return fail(b, ENGINE_ERR_NOMEM, "out of memory building the graph");
    nd->out = v;
    g->value_uses[in0]++;
    if (in1 >= 0)
        g->value_uses[in1]++;
    g->nodes[g->n_nodes++] = *nd;
    return v;
}

/* The node that produced v, if a post-op (BN fold, activation) may still change it:
 * nothing has read v yet and the node has no activation of its own. */
static graph_node *open_producer(graph *g, int v)
{
    int p = g->value_producer[v];
    if (p < 0 || g->value_uses[v] != 0)
        return NULL;
    graph_node *nd = &g->nodes[p];
    return nd->act == ACT_NONE ? nd : NULL;
}

/* ---- layers ---------------------------------------------------------------- */

/* in_channels and groups of a Conv2d or ConvTranspose2d against its input. */
static bool conv_channels_ok(graph_builder *b, graph_shape in, const layer_spec *l,
                             const char *what)
{
    if (l->in_channels != in.c)
        fail(b, ENGINE_ERR_SHAPE, "%s '%s': in_channels %d but the input has %d channels", what,
             l->prefix, l->in_channels, in.c);
    else if (l->groups < 1 || l->in_channels % l->groups || l->out_channels % l->groups)
        fail(b, ENGINE_ERR_FORMAT, "%s '%s': groups %d must divide %d and %d", what, l->prefix,
             l->groups, l->in_channels, l->out_channels);
    return !failed(b);
}

static int add_conv(graph_builder *b, int v, const layer_spec *l)
{
    graph_shape in = b->g->values[v];
    if (!conv_channels_ok(b, in, l, "Conv2d"))
        return -1;
    graph_node nd = { .kind = OP_CONV2D };
    snprintf(nd.layer, sizeof nd.layer, "%s", l->prefix);
    conv2d_params *p = &nd.p.conv;
    *p = (conv2d_params){
        .in_c = in.c, .in_h = in.h, .in_w = in.w, .out_c = l->out_channels,
        .k_h = l->kernel[0], .k_w = l->kernel[1], .stride_h = l->stride[0], .stride_w = l->stride[1],
        .pad_h = l->padding[0], .pad_w = l->padding[1], .dil_h = l->dilation[0],
        .dil_w = l->dilation[1], .groups = l->groups,
    };
    p->out_h = conv2d_out_size(in.h, p->k_h, p->stride_h, p->pad_h, p->dil_h);
    p->out_w = conv2d_out_size(in.w, p->k_w, p->stride_w, p->pad_w, p->dil_w);
    int64_t wdims[4] = { l->out_channels, l->in_channels / l->groups, l->kernel[0], l->kernel[1] };
    nd.weight = graph_load_tensor(b, l->prefix, "weight", wdims, 4, false);
    if (l->bias) {
        int64_t bdims[1] = { l->out_channels };
        nd.bias = graph_load_tensor(b, l->prefix, "bias", bdims, 1, false);
    }
    return add_node(b, &nd, v, -1);
}

/* Generators grow planes layer by layer; a side this long is a config error, and the
 * bound keeps C*H*W and the batch-scaled sizes far from overflow. */
enum { DECONV_MAX_SIDE = 1 << 16 };

static int add_conv_transpose(graph_builder *b, int v, const layer_spec *l)
{
    graph_shape in = b->g->values[v];
    if (!conv_channels_ok(b, in, l, "ConvTranspose2d"))
        return -1;
    for (int i = 0; i < 2; i++)
        if (l->output_padding[i] < 0 ||
            (l->output_padding[i] >= l->stride[i] && l->output_padding[i] >= l->dilation[i]))
            return fail(b, ENGINE_ERR_FORMAT, "ConvTranspose2d '%s': output_padding %d must be "
                        "smaller than stride %d or dilation %d", l->prefix, l->output_padding[i],
                        l->stride[i], l->dilation[i]);
    graph_node nd = { .kind = OP_CONV_TRANSPOSE2D };
    snprintf(nd.layer, sizeof nd.layer, "%s", l->prefix);
    conv_transpose2d_params *p = &nd.p.deconv;
    *p = (conv_transpose2d_params){
        .in_c = in.c, .in_h = in.h, .in_w = in.w, .out_c = l->out_channels,
        .k_h = l->kernel[0], .k_w = l->kernel[1], .stride_h = l->stride[0],
        .stride_w = l->stride[1], .pad_h = l->padding[0], .pad_w = l->padding[1],
        .dil_h = l->dilation[0], .dil_w = l->dilation[1], .out_pad_h = l->output_padding[0],
        .out_pad_w = l->output_padding[1], .groups = l->groups,
    };
    p->out_h = conv_transpose2d_out_size(in.h, p->k_h, p->stride_h, p->pad_h, p->dil_h,
                                         p->out_pad_h);
    p->out_w = conv_transpose2d_out_size(in.w, p->k_w, p->stride_w, p->pad_w, p->dil_w,
                                         p->out_pad_w);
    if (p->out_h > DECONV_MAX_SIDE || p->out_w > DECONV_MAX_SIDE)
        return fail(b, ENGINE_ERR_UNSUPPORTED, "ConvTranspose2d '%s': output %d x %d is larger "
                    "than %d on a side", l->prefix, p->out_h, p->out_w, DECONV_MAX_SIDE);
    /* a GEMM dimension (BLAS takes ints) */
    if ((size_t)(p->out_c / p->groups) * p->k_h * p->k_w > (size_t)INT32_MAX / 2)
        return fail(b, ENGINE_ERR_UNSUPPORTED, "ConvTranspose2d '%s': out_channels/groups x "
                    "kernel is too large", l->prefix);
    int64_t wdims[4] = { l->in_channels, l->out_channels / l->groups, l->kernel[0], l->kernel[1] };
    nd.weight = graph_load_tensor(b, l->prefix, "weight", wdims, 4, false);
    if (l->bias) {
        int64_t bdims[1] = { l->out_channels };
        nd.bias = graph_load_tensor(b, l->prefix, "bias", bdims, 1, false);
    }
    return add_node(b, &nd, v, -1);
}

static int add_linear(graph_builder *b, int v, const layer_spec *l)
{
    graph_shape in = b->g->values[v];
    if ((size_t)l->in_features != shape_numel(in))
        return fail(b, ENGINE_ERR_SHAPE,
                    "Linear '%s': in_features %d but the input has %zu features (%d x %d x %d)",
                    l->prefix, l->in_features, shape_numel(in), in.c, in.h, in.w);
    graph_node nd = { .kind = OP_LINEAR };
    snprintf(nd.layer, sizeof nd.layer, "%s", l->prefix);
    nd.p.linear.in = l->in_features;
    nd.p.linear.out = l->out_features;
    int64_t wdims[2] = { l->out_features, l->in_features };
    nd.weight = graph_load_tensor(b, l->prefix, "weight", wdims, 2, false);
    if (l->bias) {
        int64_t bdims[1] = { l->out_features };
        nd.bias = graph_load_tensor(b, l->prefix, "bias", bdims, 1, false);
    }
    return add_node(b, &nd, v, -1);
}

/* A conv, conv-transpose or linear node's weight count over its output channels: the
 * same in every layout (a conv-transpose's weight is (in_c, out_c/g, kh, kw)). */
static size_t weights_per_output(const graph_node *nd)
{
    switch (nd->kind) {
    case OP_CONV2D:
        return (size_t)(nd->p.conv.in_c / nd->p.conv.groups) * nd->p.conv.k_h * nd->p.conv.k_w;
    case OP_CONV_TRANSPOSE2D:
        return (size_t)(nd->p.deconv.in_c / nd->p.deconv.groups) * nd->p.deconv.k_h *
               nd->p.deconv.k_w;
    default:
        return (size_t)nd->p.linear.in;
    }
}

static int add_batchnorm(graph_builder *b, int v, const layer_spec *l)
{
    graph *g = b->g;
    graph_shape in = g->values[v];
    int c = in.c;
    if (l->type == LAYER_BATCHNORM1D && (in.h != 1 || in.w != 1))
        return fail(b, ENGINE_ERR_UNSUPPORTED, "BatchNorm1d '%s': input must be (N, features)",
                    l->prefix);
    if (l->num_features != c)
        return fail(b, ENGINE_ERR_SHAPE, "BatchNorm '%s': num_features %d but the input has %d",
                    l->prefix, l->num_features, c);
    int64_t dims[1] = { c };
    const float *gamma = graph_load_tensor(b, l->prefix, "weight", dims, 1, true);
    const float *beta = graph_load_tensor(b, l->prefix, "bias", dims, 1, true);
    const float *mean = graph_load_tensor(b, l->prefix, "running_mean", dims, 1, false);
    const float *var = graph_load_tensor(b, l->prefix, "running_var", dims, 1, false);
    if (failed(b))
        return -1;
    for (int i = 0; i < c; i++)
        if (!(var[i] + l->eps > 0.0f))
            return fail(b, ENGINE_ERR_FORMAT, "BatchNorm '%s': running_var[%d] + eps is not positive",
                        l->prefix, i);

    /* affine=False BatchNorm stores no weight/bias: identity scale and shift */
    float *ones = NULL, *zeros = NULL;
    if (!gamma || !beta) {
        ones = own_floats(b, (size_t)c);
        zeros = own_floats(b, (size_t)c);
        if (failed(b))
            return -1;
        for (int i = 0; i < c; i++)
            ones[i] = 1.0f, zeros[i] = 0.0f;
        if (!gamma)
            gamma = ones;
        if (!beta)
            beta = zeros;
    }

    graph_node *prod = open_producer(g, v);
    if (prod && (prod->kind == OP_CONV2D || prod->kind == OP_LINEAR ||
                 prod->kind == OP_CONV_TRANSPOSE2D)) {
        /* a Linear's output may have been unflattened since (a generator's
         * Linear -> Unflatten -> BatchNorm2d): channel ch is then its outputs
         * ch*rows .. ch*rows + rows - 1 */
        const size_t rows = prod->kind == OP_LINEAR ? (size_t)in.h * in.w : 1;
        const size_t per_out = weights_per_output(prod);
        float *w = make_writable(b, prod->weight, (size_t)c * rows * per_out);
        float *bias = make_writable(b, prod->bias, (size_t)c * rows);
        if (failed(b))
            return -1;
        if (prod->kind == OP_CONV_TRANSPOSE2D) {
            const conv_transpose2d_params *p = &prod->p.deconv;
            batchnorm_fold_transposed(p->in_c, c, p->groups, p->k_h * p->k_w, w, bias, gamma,
                                      beta, mean, var, l->eps);
        } else {
            for (size_t r = 0; r < (size_t)c * rows; r++) {   /* output row r, channel r/rows */
                const size_t ch = r / rows;
                batchnorm_fold(1, (int)per_out, w + r * per_out, bias + r, gamma + ch, beta + ch,
                               mean + ch, var + ch, l->eps);
            }
        }
        prod->weight = w;
        prod->bias = bias;
        return v;
    }

    graph_node nd = { .kind = OP_AFFINE };
    snprintf(nd.layer, sizeof nd.layer, "%s", l->prefix);
    float *scale = own_floats(b, (size_t)c);
    float *shift = own_floats(b, (size_t)c);
    if (failed(b))
        return -1;
    for (int i = 0; i < c; i++) {
        scale[i] = gamma[i] / sqrtf(var[i] + l->eps);
        shift[i] = beta[i] - mean[i] * scale[i];
    }
    nd.scale = scale;
    nd.shift = shift;
    return add_node(b, &nd, v, -1);
}

static act_kind act_of(layer_type t)
{
    switch (t) {
    case LAYER_RELU: return ACT_RELU;
    case LAYER_RELU6: return ACT_RELU6;
    case LAYER_LEAKY_RELU: return ACT_LEAKY_RELU;
    case LAYER_ELU: return ACT_ELU;
    case LAYER_SIGMOID: return ACT_SIGMOID;
    case LAYER_TANH: return ACT_TANH;
    case LAYER_GELU: return ACT_GELU;
    case LAYER_SILU: return ACT_SILU;
    default: return ACT_NONE;
    }
}

static int add_activation(graph_builder *b, int v, act_kind act, float alpha, const char *prefix)
{
    graph_node *prod = open_producer(b->g, v);
    if (prod && op_table[prod->kind].fuses_act) {
        prod->act = act;
        prod->act_alpha = alpha;
        return v;
    }
    graph_node nd = { .kind = OP_ACT, .act = act, .act_alpha = alpha };
    snprintf(nd.layer, sizeof nd.layer, "%s", prefix);
    return add_node(b, &nd, v, -1);
}

static int add_pool(graph_builder *b, int v, const layer_spec *l)
{
    graph_shape in = b->g->values[v];
    graph_node nd = { .kind = l->type == LAYER_MAXPOOL2D ? OP_MAXPOOL2D : OP_AVGPOOL2D };
    snprintf(nd.layer, sizeof nd.layer, "%s", l->prefix);
    pool2d_params *p = &nd.p.pool;
    *p = (pool2d_params){
        .c = in.c, .in_h = in.h, .in_w = in.w, .k_h = l->kernel[0], .k_w = l->kernel[1],
        .stride_h = l->stride[0], .stride_w = l->stride[1], .pad_h = l->padding[0],
        .pad_w = l->padding[1], .count_include_pad = l->count_include_pad,
    };
    /* PyTorch: padding at most half the kernel, else the window can be all padding */
    if (p->pad_h * 2 > p->k_h || p->pad_w * 2 > p->k_w)
        return fail(b, ENGINE_ERR_FORMAT, "pool '%s': padding must be at most half the kernel",
                    l->prefix);
    if (l->type == LAYER_MAXPOOL2D && (l->dilation[0] != 1 || l->dilation[1] != 1))
        return fail(b, ENGINE_ERR_UNSUPPORTED, "MaxPool2d '%s': dilation is not supported",
                    l->prefix);
    p->out_h = pool2d_out_size(in.h, p->k_h, p->stride_h, p->pad_h, l->ceil_mode);
    p->out_w = pool2d_out_size(in.w, p->k_w, p->stride_w, p->pad_w, l->ceil_mode);
    return add_node(b, &nd, v, -1);
}

static int add_adaptive_pool(graph_builder *b, int v, const layer_spec *l)
{
    graph_shape in = b->g->values[v];
    graph_node nd = { .kind = OP_ADAPTIVE_AVGPOOL2D };
    snprintf(nd.layer, sizeof nd.layer, "%s", l->prefix);
    nd.p.pool = (pool2d_params){ .c = in.c, .in_h = in.h, .in_w = in.w,
                                 .out_h = l->output_size[0], .out_w = l->output_size[1] };
    return add_node(b, &nd, v, -1);
}

int graph_add_layer(graph_builder *b, int v, const layer_spec *l)
{
    graph *g = b->g;
    if (failed(b))
        return -1;
    if (v < 0 || v >= g->n_values)
        return fail(b, ENGINE_ERR_NOMEM, "out of memory building the graph");
    graph_shape in = g->values[v];

    switch (l->type) {
    case LAYER_CONV2D:
        return add_conv(b, v, l);
    case LAYER_CONV_TRANSPOSE2D:
        return add_conv_transpose(b, v, l);
    case LAYER_LINEAR:
        return add_linear(b, v, l);
    case LAYER_BATCHNORM2D:
    case LAYER_BATCHNORM1D:
        return add_batchnorm(b, v, l);
    case LAYER_RELU:
    case LAYER_RELU6:
    case LAYER_LEAKY_RELU:
    case LAYER_ELU:
    case LAYER_SIGMOID:
    case LAYER_TANH:
    case LAYER_GELU:
    case LAYER_SILU:
        return add_activation(b, v, act_of(l->type), l->alpha, l->prefix);
    case LAYER_MAXPOOL2D:
    case LAYER_AVGPOOL2D:
        return add_pool(b, v, l);
    case LAYER_ADAPTIVE_AVGPOOL2D:
        return add_adaptive_pool(b, v, l);
    case LAYER_FLATTEN:
        /* NCHW per sample is already contiguous: flattening only renames the shape */
        g->values[v] = (graph_shape){ (int)shape_numel(in), 1, 1 };
        return v;
    case LAYER_UNFLATTEN: {
        graph_shape to = { l->unflatten[0], l->unflatten[1], l->unflatten[2] };
        if (in.h != 1 || in.w != 1 || shape_numel(to) != (size_t)in.c)
            return fail(b, ENGINE_ERR_SHAPE, "Unflatten '%s': (%d, %d, %d) does not hold %d features",
                        l->prefix, to.c, to.h, to.w, in.c);
        g->values[v] = to;
        return v;
    }
    case LAYER_DROPOUT:
    case LAYER_IDENTITY:
        return v;
    case LAYER_SOFTMAX: {
        if (in.h != 1 || in.w != 1)
            return fail(b, ENGINE_ERR_UNSUPPORTED, "Softmax '%s': only (N, features) inputs",
                        l->prefix);
        graph_node nd = { .kind = OP_SOFTMAX };
        snprintf(nd.layer, sizeof nd.layer, "%s", l->prefix);
        return add_node(b, &nd, v, -1);
    }
    }
    return fail(b, ENGINE_ERR_UNSUPPORTED, "layer '%s': unknown layer type %d", l->prefix,
                (int)l->type);
}

int graph_add_residual(graph_builder *b, int a, int v, act_kind act)
{
    if (failed(b))
        return -1;
    graph_shape sa = b->g->values[a], sv = b->g->values[v];
    if (sa.c != sv.c || sa.h != sv.h || sa.w != sv.w)
        return fail(b, ENGINE_ERR_SHAPE, "residual add: shapes (%d, %d, %d) and (%d, %d, %d) differ",
                    sa.c, sa.h, sa.w, sv.c, sv.h, sv.w);
    graph_node nd = { .kind = OP_ADD, .act = act };
    snprintf(nd.layer, sizeof nd.layer, "residual");
    return add_node(b, &nd, a, v);
}

/* ---- planning ------------------------------------------------------------------ */

/* Slices start on arena alignment so kernels see cache-line-aligned rows. */
static size_t arena_round_floats(size_t n)
{
    return arena_round(n * sizeof(float)) / sizeof(float);
}

typedef struct block {
    size_t offset, size;
} block;

engine_status graph_plan(graph *g, int output, int max_batch, engine_err *err)
{
    if (output < 0 || output >= g->n_values || max_batch < 1)
        return engine_fail(err, ENGINE_ERR_INVALID, "graph_plan: bad output or batch");
    g->output = output;
    g->max_batch = max_batch;
    free(g->value_offset);
    g->value_offset = calloc((size_t)g->n_values, sizeof *g->value_offset);
    int *last_use = malloc((size_t)g->n_values * sizeof *last_use);
    size_t *held = calloc((size_t)g->n_values, sizeof *held);
    block *free_blocks = malloc(((size_t)g->n_values + 1) * sizeof *free_blocks);
    if (!g->value_offset || !last_use || !held || !free_blocks) {
        free(last_use), free(held), free(free_blocks);
        return engine_fail(err, ENGINE_ERR_NOMEM, "out of memory planning the graph");
    }
    for (int v = 0; v < g->n_values; v++)
        last_use[v] = -1;
    for (int i = 0; i < g->n_nodes; i++) {
        last_use[g->nodes[i].in0] = i;
        if (g->nodes[i].in1 >= 0)
            last_use[g->nodes[i].in1] = i;
    }
    last_use[output] = g->n_nodes; /* read by the final copy */

    int n_free = 0;
    size_t end = 0, scratch = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const graph_node *nd = &g->nodes[i];
        size_t need = arena_round_floats(shape_numel(g->values[nd->out]) * (size_t)max_batch);
        int best = -1;
        for (int k = 0; k < n_free; k++)
            if (free_blocks[k].size >= need && (best < 0 || free_blocks[k].size < free_blocks[best].size))
                best = k;
        if (best >= 0) {
            g->value_offset[nd->out] = free_blocks[best].offset;
            held[nd->out] = free_blocks[best].size;
            free_blocks[best] = free_blocks[--n_free];
        } else {
            g->value_offset[nd->out] = end;
            held[nd->out] = need;
            end += need;
        }
        size_t s = op_table[nd->kind].scratch_floats(nd, max_batch);
        if (s > scratch)
            scratch = s;
        int ins[2] = { nd->in0, nd->in1 };
        for (int k = 0; k < 2; k++) {
            int u = ins[k];
            /* the input value 0 lives in the caller's buffer; a dead value's slice is reusable */
            if (u > 0 && last_use[u] == i && held[u]) {
                free_blocks[n_free++] = (block){ g->value_offset[u], held[u] };
                held[u] = 0;
            }
        }
    }
    g->region_floats = end;
    g->scratch_floats = scratch;
    free(last_use), free(held), free(free_blocks);
    return ENGINE_OK;
}

size_t graph_arena_bytes(const graph *g)
{
    return arena_round(g->region_floats * sizeof(float)) +
           arena_round(g->scratch_floats * sizeof(float));
}

void graph_forward(const graph *g, int n, const float *x, float *y, float *region, float *scratch)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const graph_node *nd = &g->nodes[i];
        const float *in0 = nd->in0 == 0 ? x : region + g->value_offset[nd->in0];
        const float *in1 = nd->in1 < 0 ? NULL : nd->in1 == 0 ? x : region + g->value_offset[nd->in1];
        op_table[nd->kind].forward(nd, n, in0, in1, region + g->value_offset[nd->out], scratch);
    }
    const float *out = g->output == 0 ? x : region + g->value_offset[g->output];
    memcpy(y, out, (size_t)n * shape_numel(g->values[g->output]) * sizeof *y);
}

double graph_flops(const graph *g)
{
    double flops = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const graph_node *nd = &g->nodes[i];
        if (nd->kind == OP_CONV2D) {
            const conv2d_params *p = &nd->p.conv;
            flops += 2.0 * p->out_c * p->out_h * p->out_w * (p->in_c / p->groups) * p->k_h * p->k_w;
        } else if (nd->kind == OP_CONV_TRANSPOSE2D) {
            /* every input value meets R = out_c/g * kh * kw weights */
            const conv_transpose2d_params *p = &nd->p.deconv;
            flops += 2.0 * p->in_c * p->in_h * p->in_w * (p->out_c / p->groups) * p->k_h * p->k_w;
        } else if (nd->kind == OP_LINEAR) {
            flops += 2.0 * nd->p.linear.in * nd->p.linear.out;
        }
    }
    return flops;
}
