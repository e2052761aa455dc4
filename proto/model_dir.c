/* model_dir.c — a model directory (docs/MODELS.md) into a cnn_spec, an image_preproc
 * and a label list; for a GAN generator into a gan_spec (and, when conditional, the
 * label list); for a Hugging Face BERT directory into a bert_config and the
 * tokenizer's settings.
 *
 * Runs at start-up and on reload, on whichever thread loads models; it keeps no state
 * between calls.  Everything it reads is treated as hostile: files are size-limited
 * before they are read, JSON is walked with explicit type and range checks, the
 * layer tree has depth and count limits, and unknown keys or layer types are errors
 * (a typo in "stride" must not silently mean stride 1).  Every message starts with
 * the file and, inside config.json, the JSON path ("layers[3].layers[1]") of what
 * was wrong.  The layer rules mirror tools/export_model.py, which writes these
 * files; PyTorch's constructor defaults fill omitted arguments.
 *
 * A BERT directory is what save_pretrained writes, recognised by "model_type" in
 * config.json.  That file is not ours: Hugging Face writes dozens of keys we have no
 * use for, so unknown keys are ignored there (the opposite of the CNN rule), while
 * every key that changes the computation is read and range-checked, and values the
 * engine does not implement (another activation, relative positions, a decoder) are
 * refused by name.  Absent keys take BertConfig's defaults, as Hugging Face does.
 */
#define _POSIX_C_SOURCE 200809L /* O_CLOEXEC, fstat, strerror_r under -std=c11 */

#include "proto/model_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "engine/wordpiece.h"

#define CONFIG_MAX_BYTES ((size_t)4 << 20)
/* every label at full length plus CRLF */
#define LABELS_MAX_BYTES ((size_t)MODEL_DIR_MAX_LABELS * (MODEL_DIR_MAX_LABEL_LEN + 2))
#define LAYERS_MAX_DEPTH 16   /* nested Sequentials */
#define LAYERS_MAX 4096       /* layers after flattening */
#define INPUT_MAX_SIDE 4096
/* Generous bounds that keep the engine's shape arithmetic far from int overflow. */
#define MAX_COUNT (1 << 24)   /* channels, features, Unflatten's C*H*W */
#define MAX_SPATIAL 4096      /* kernel, stride, padding, dilation, output_size */

/* ---- files ------------------------------------------------------------------------ */

static const char *errno_text(int e, char *buf, size_t n)
{
    if (strerror_r(e, buf, n) != 0)
        snprintf(buf, n, "errno %d", e);
    return buf;
}

/* Opens path as a regular file; O_NONBLOCK so a FIFO planted there cannot hang us. */
static engine_status open_regular(const char *path, int *fd_out, off_t *size,
                                  engine_err *err)
{
    char eb[128];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return engine_fail(err, ENGINE_ERR_IO, "%s: %s", path,
                           errno_text(errno, eb, sizeof eb));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return engine_fail(err, ENGINE_ERR_IO, "%s: %s", path, errno_text(e, eb, sizeof eb));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return engine_fail(err, ENGINE_ERR_IO, "%s: not a regular file", path);
    }
    *fd_out = fd;
    *size = st.st_size;
    return ENGINE_OK;
}

/* The whole file, NUL-terminated (*len excludes the NUL), refused above max bytes. */
static engine_status read_file(const char *path, size_t max, char **out, size_t *len,
                               engine_err *err)
{
    int fd;
    off_t size;
    engine_status st = open_regular(path, &fd, &size, err);
    if (st != ENGINE_OK)
        return st;
    if (size < 0 || (uintmax_t)size > max) {
        close(fd);
        return engine_fail(err, ENGINE_ERR_FORMAT, "%s: %jd bytes, more than the limit of "
                           "%zu", path, (intmax_t)size, max);
    }
    char *buf = malloc((size_t)size + 1);
    if (!buf) {
        close(fd);
        return engine_fail(err, ENGINE_ERR_NOMEM, "%s: no memory for %jd bytes", path,
                           (intmax_t)size);
    }
    size_t got = 0;
    while (got < (size_t)size) {   /* a file that shrinks underneath is read as it is */
        ssize_t r = read(fd, buf + got, (size_t)size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            char eb[128];
            int e = errno;
            free(buf);
            close(fd);
            return engine_fail(err, ENGINE_ERR_IO, "%s: %s", path,
                               errno_text(e, eb, sizeof eb));
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    *out = buf;
    *len = got;
    return ENGINE_OK;
}

static engine_status join_path(char *dst, size_t n, const char *dir, const char *file,
                               engine_err *err)
{
    int r = snprintf(dst, n, "%s/%s", dir, file);
    if (r < 0 || (size_t)r >= n)
        return engine_fail(err, ENGINE_ERR_IO, "%s/%s: path too long", dir, file);
    return ENGINE_OK;
}

/* ---- config.json: typed access with the JSON path in every message --------------- */

typedef struct parse_ctx {
    const char *file;        /* "<dir>/config.json" */
    engine_err *err;
    layer_spec *layers;      /* flattened so far; grown up to LAYERS_MAX */
    int n_layers, cap;
} parse_ctx;

static engine_status fail_at(parse_ctx *ctx, engine_status s, const char *where,
                             const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static engine_status fail_at(parse_ctx *ctx, engine_status s, const char *where,
                             const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (where && *where)
        return engine_fail(ctx->err, s, "%s: %s: %s", ctx->file, where, msg);
    return engine_fail(ctx->err, s, "%s: %s", ctx->file, msg);
}

/* "<where>.<key>", or "<key>" at the top level, for messages. */
static const char *key_path(char *buf, size_t n, const char *where, const char *key)
{
    snprintf(buf, n, "%s%s%s", where, *where ? "." : "", key);
    return buf;
}

/* Every key of obj must be in keys (NULL-terminated); names the first that is not. */
static engine_status check_keys(parse_ctx *ctx, json_t *obj, const char *where,
                                const char *what, const char *const *keys)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        bool known = false;
        for (const char *const *p = keys; *p && !known; p++)
            known = !strcmp(k, *p);
        if (!known)
            return fail_at(ctx, ENGINE_ERR_FORMAT, where, "unknown key \"%s\" for %s", k,
                           what);
    }
    return ENGINE_OK;
}

/* An int key in [lo, hi]; def when absent and not required. */
static engine_status get_int(parse_ctx *ctx, json_t *obj, const char *where, const char *key,
                             bool required, int def, int lo, int hi, int *out)
{
    char p[320];
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return fail_at(ctx, ENGINE_ERR_FORMAT, where, "missing \"%s\"", key);
        *out = def;
        return ENGINE_OK;
    }
    if (!json_is_integer(v))
        return fail_at(ctx, ENGINE_ERR_FORMAT, key_path(p, sizeof p, where, key),
                       "must be an integer");
    json_int_t i = json_integer_value(v);
    if (lo == hi && i != lo)
        return fail_at(ctx, ENGINE_ERR_FORMAT, key_path(p, sizeof p, where, key),
                       "must be %d (the only value supported)", lo);
    if (i < lo || i > hi)
        return fail_at(ctx, ENGINE_ERR_FORMAT, key_path(p, sizeof p, where, key),
                       "%lld is out of range (%d to %d)", (long long)i, lo, hi);
    *out = (int)i;
    return ENGINE_OK;
}

/* A size argument: an int or an [h, w] pair, each in [lo, hi]. */
static engine_status get_pair(parse_ctx *ctx, json_t *obj, const char *where, const char *key,
                              bool required, int def, int lo, int hi, int out[2])
{
    char p[320];
    json_t *v = json_object_get(obj, key);
    key_path(p, sizeof p, where, key);
    if (!v) {
        if (required)
            return fail_at(ctx, ENGINE_ERR_FORMAT, where, "missing \"%s\"", key);
        out[0] = out[1] = def;
        return ENGINE_OK;
    }
    json_int_t hw[2];
    if (json_is_integer(v)) {
        hw[0] = hw[1] = json_integer_value(v);
    } else if (json_is_array(v) && json_array_size(v) == 2 &&
               json_is_integer(json_array_get(v, 0)) && json_is_integer(json_array_get(v, 1))) {
        hw[0] = json_integer_value(json_array_get(v, 0));
        hw[1] = json_integer_value(json_array_get(v, 1));
    } else {
        return fail_at(ctx, ENGINE_ERR_FORMAT, p, "must be an integer or an [h, w] pair "
                       "of integers");
    }
    for (int i = 0; i < 2; i++)
        if (hw[i] < lo || hw[i] > hi)
            return fail_at(ctx, ENGINE_ERR_FORMAT, p, "%lld is out of range (%d to %d)",
                           (long long)hw[i], lo, hi);
    out[0] = (int)hw[0];
    out[1] = (int)hw[1];
    return ENGINE_OK;
}

static engine_status get_bool(parse_ctx *ctx, json_t *obj, const char *where, const char *key,
                              bool def, bool *out)
{
    char p[320];
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return ENGINE_OK;
    }
    if (!json_is_boolean(v))
        return fail_at(ctx, ENGINE_ERR_FORMAT, key_path(p, sizeof p, where, key),
                       "must be true or false");
    *out = json_is_true(v);
    return ENGINE_OK;
}

/* A finite number that stays finite as a float. */
static engine_status get_float(parse_ctx *ctx, json_t *obj, const char *where, const char *key,
                               float def, float *out)
{
    char p[320];
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return ENGINE_OK;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)) ||
        fabs(json_number_value(v)) > FLT_MAX)
        return fail_at(ctx, ENGINE_ERR_FORMAT, key_path(p, sizeof p, where, key),
                       "must be a finite number");
    *out = (float)json_number_value(v);
    return ENGINE_OK;
}

/* ---- layers ------------------------------------------------------------------------ */

typedef engine_status (*layer_parse_fn)(parse_ctx *ctx, json_t *o, const char *where,
                                        layer_spec *l);

#define TRY(expr) do { engine_status st_ = (expr); if (st_ != ENGINE_OK) return st_; } while (0)

static engine_status parse_conv(parse_ctx *ctx, json_t *o, const char *where, layer_spec *l)
{
    TRY(get_int(ctx, o, where, "in_channels", true, 0, 1, MAX_COUNT, &l->in_channels));
    TRY(get_int(ctx, o, where, "out_channels", true, 0, 1, MAX_COUNT, &l->out_channels));
    TRY(get_pair(ctx, o, where, "kernel_size", true, 0, 1, MAX_SPATIAL, l->kernel));
    TRY(get_pair(ctx, o, where, "stride", false, 1, 1, MAX_SPATIAL, l->stride));
    TRY(get_pair(ctx, o, where, "padding", false, 0, 0, MAX_SPATIAL, l->padding));
    TRY(get_pair(ctx, o, where, "dilation", false, 1, 1, MAX_SPATIAL, l->dilation));
    TRY(get_int(ctx, o, where, "groups", false, 1, 1, MAX_COUNT, &l->groups));
    TRY(get_bool(ctx, o, where, "bias", true, &l->bias));
    if (l->in_channels % l->groups || l->out_channels % l->groups)
        return fail_at(ctx, ENGINE_ERR_FORMAT, where, "groups (%d) must divide in_channels "
                       "(%d) and out_channels (%d)", l->groups, l->in_channels,
                       l->out_channels);
    if (l->type == LAYER_CONV_TRANSPOSE2D) {
        TRY(get_pair(ctx, o, where, "output_padding", false, 0, 0, MAX_SPATIAL,
                     l->output_padding));
        for (int i = 0; i < 2; i++)
            if (l->output_padding[i] >= l->stride[i] && l->output_padding[i] >= l->dilation[i])
                return fail_at(ctx, ENGINE_ERR_FORMAT, where, "output_padding (%d) must be "
                               "smaller than stride (%d) or dilation (%d)",
                               l->output_padding[i], l->stride[i], l->dilation[i]);
    }
    return ENGINE_OK;
}

static engine_status parse_batchnorm(parse_ctx *ctx, json_t *o, const char *where,
                                     layer_spec *l)
{
    char p[320];
    TRY(get_int(ctx, o, where, "num_features", true, 0, 1, MAX_COUNT, &l->num_features));
    TRY(get_float(ctx, o, where, "eps", 1e-5f, &l->eps));
    if (!(l->eps > 0.0f))
        return fail_at(ctx, ENGINE_ERR_FORMAT, key_path(p, sizeof p, where, "eps"),
                       "must be positive");
    return ENGINE_OK;
}

static engine_status parse_linear(parse_ctx *ctx, json_t *o, const char *where, layer_spec *l)
{
    TRY(get_int(ctx, o, where, "in_features", true, 0, 1, MAX_COUNT, &l->in_features));
    TRY(get_int(ctx, o, where, "out_features", true, 0, 1, MAX_COUNT, &l->out_features));
    return get_bool(ctx, o, where, "bias", true, &l->bias);
}

static engine_status parse_none(parse_ctx *ctx, json_t *o, const char *where, layer_spec *l)
{
    return ENGINE_OK;
}

static engine_status parse_leaky_relu(parse_ctx *ctx, json_t *o, const char *where,
                                      layer_spec *l)
{
    return get_float(ctx, o, where, "negative_slope", 0.01f, &l->alpha);
}

static engine_status parse_elu(parse_ctx *ctx, json_t *o, const char *where, layer_spec *l)
{
    return get_float(ctx, o, where, "alpha", 1.0f, &l->alpha);
}

static engine_status parse_pool(parse_ctx *ctx, json_t *o, const char *where, layer_spec *l)
{
    TRY(get_pair(ctx, o, where, "kernel_size", true, 0, 1, MAX_SPATIAL, l->kernel));
    json_t *stride = json_object_get(o, "stride");
    if (!stride || json_is_null(stride)) {   /* PyTorch's stride=None: kernel_size */
        l->stride[0] = l->kernel[0];
        l->stride[1] = l->kernel[1];
    } else {
        TRY(get_pair(ctx, o, where, "stride", true, 0, 1, MAX_SPATIAL, l->stride));
    }
    TRY(get_pair(ctx, o, where, "padding", false, 0, 0, MAX_SPATIAL, l->padding));
    for (int i = 0; i < 2; i++)
        if (l->padding[i] > l->kernel[i] / 2)   /* PyTorch refuses this too */
            return fail_at(ctx, ENGINE_ERR_FORMAT, where, "padding (%d) must be at most "
                           "half of kernel_size (%d)", l->padding[i], l->kernel[i]);
    TRY(get_bool(ctx, o, where, "ceil_mode", false, &l->ceil_mode));
    if (l->type == LAYER_AVGPOOL2D)
        TRY(get_bool(ctx, o, where, "count_include_pad", true, &l->count_include_pad));
    return ENGINE_OK;
}

static engine_status parse_adaptive_pool(parse_ctx *ctx, json_t *o, const char *where,
                                         layer_spec *l)
{
    return get_pair(ctx, o, where, "output_size", true, 0, 1, MAX_SPATIAL, l->output_size);
}

static engine_status parse_flatten(parse_ctx *ctx, json_t *o, const char *where,
                                   layer_spec *l)
{
    int start, end;
    TRY(get_int(ctx, o, where, "start_dim", false, 1, 1, 1, &start));
    return get_int(ctx, o, where, "end_dim", false, -1, -1, -1, &end);
}

static engine_status parse_unflatten(parse_ctx *ctx, json_t *o, const char *where,
                                     layer_spec *l)
{
    char p[320];
    int dim;
    TRY(get_int(ctx, o, where, "dim", false, 1, 1, 1, &dim));
    json_t *v = json_object_get(o, "unflattened_size");
    if (!v)
        return fail_at(ctx, ENGINE_ERR_FORMAT, where, "missing \"unflattened_size\"");
    key_path(p, sizeof p, where, "unflattened_size");
    if (!json_is_array(v) || json_array_size(v) != 3)
        return fail_at(ctx, ENGINE_ERR_FORMAT, p, "must be [C, H, W]");
    long long prod = 1;
    for (int i = 0; i < 3; i++) {
        json_t *e = json_array_get(v, (size_t)i);
        if (!json_is_integer(e) || json_integer_value(e) < 1 ||
            json_integer_value(e) > MAX_COUNT)
            return fail_at(ctx, ENGINE_ERR_FORMAT, p, "must be [C, H, W] of integers 1 to %d",
                           MAX_COUNT);
        l->unflatten[i] = (int)json_integer_value(e);
        prod *= l->unflatten[i];
        if (prod > MAX_COUNT)
            return fail_at(ctx, ENGINE_ERR_FORMAT, p, "C*H*W is more than %d", MAX_COUNT);
    }
    return ENGINE_OK;
}

static engine_status parse_softmax(parse_ctx *ctx, json_t *o, const char *where,
                                   layer_spec *l)
{
    char p[320];
    json_t *v = json_object_get(o, "dim");
    if (v && !(json_is_integer(v) && (json_integer_value(v) == 1 ||
                                       json_integer_value(v) == -1)))
        return fail_at(ctx, ENGINE_ERR_FORMAT, key_path(p, sizeof p, where, "dim"),
                       "must be 1 or -1 (softmax over the class dimension only)");
    return ENGINE_OK;
}

#define KEYS(...) (const char *const[]){"type", "name", __VA_ARGS__, NULL}
#define CONV_KEYS "in_channels", "out_channels", "kernel_size", "stride", "padding", \
    "dilation", "groups", "bias"
#define POOL_KEYS "kernel_size", "stride", "padding", "ceil_mode"

/* One row per layer type of docs/MODELS.md: its PyTorch class name, the keys it takes
 * (the constructor arguments under their PyTorch names), and its parser. */
static const struct layer_kind {
    const char *name;
    layer_type type;
    const char *const *keys;
    layer_parse_fn parse;
} layer_kinds[] = {
    {"Conv2d", LAYER_CONV2D, KEYS(CONV_KEYS), parse_conv},
    {"ConvTranspose2d", LAYER_CONV_TRANSPOSE2D, KEYS(CONV_KEYS, "output_padding"), parse_conv},
    {"BatchNorm2d", LAYER_BATCHNORM2D, KEYS("num_features", "eps"), parse_batchnorm},
    {"BatchNorm1d", LAYER_BATCHNORM1D, KEYS("num_features", "eps"), parse_batchnorm},
    {"Linear", LAYER_LINEAR, KEYS("in_features", "out_features", "bias"), parse_linear},
    {"ReLU", LAYER_RELU, KEYS(NULL), parse_none},
    {"ReLU6", LAYER_RELU6, KEYS(NULL), parse_none},
    {"LeakyReLU", LAYER_LEAKY_RELU, KEYS("negative_slope"), parse_leaky_relu},
    {"ELU", LAYER_ELU, KEYS("alpha"), parse_elu},
    {"Sigmoid", LAYER_SIGMOID, KEYS(NULL), parse_none},
    {"Tanh", LAYER_TANH, KEYS(NULL), parse_none},
    {"GELU", LAYER_GELU, KEYS(NULL), parse_none},
    {"SiLU", LAYER_SILU, KEYS(NULL), parse_none},
    {"MaxPool2d", LAYER_MAXPOOL2D, KEYS(POOL_KEYS), parse_pool},
    {"AvgPool2d", LAYER_AVGPOOL2D, KEYS(POOL_KEYS, "count_include_pad"), parse_pool},
    {"AdaptiveAvgPool2d", LAYER_ADAPTIVE_AVGPOOL2D, KEYS("output_size"), parse_adaptive_pool},
    {"Flatten", LAYER_FLATTEN, KEYS("start_dim", "end_dim"), parse_flatten},
    {"Unflatten", LAYER_UNFLATTEN, KEYS("dim", "unflattened_size"), parse_unflatten},
    {"Dropout", LAYER_DROPOUT, KEYS(NULL), parse_none},
    {"Dropout2d", LAYER_DROPOUT, KEYS(NULL), parse_none},
    {"Identity", LAYER_IDENTITY, KEYS(NULL), parse_none},
    {"Softmax", LAYER_SOFTMAX, KEYS("dim"), parse_softmax},
};

/* An entry's own key: "name" if given (a PyTorch child name: no dots), else its index. */
static engine_status entry_key(parse_ctx *ctx, json_t *entry, const char *where, size_t index,
                               char *key, size_t n)
{
    char p[320];
    json_t *name = json_object_get(entry, "name");
    if (!name) {
        snprintf(key, n, "%zu", index);
        return ENGINE_OK;
    }
    key_path(p, sizeof p, where, "name");
    if (!json_is_string(name))
        return fail_at(ctx, ENGINE_ERR_FORMAT, p, "must be a string");
    const char *s = json_string_value(name);
    size_t len = json_string_length(name);
    if (len == 0 || len >= n || strlen(s) != len)
        return fail_at(ctx, ENGINE_ERR_FORMAT, p, "must be 1 to %zu bytes", n - 1);
    for (size_t i = 0; i < len; i++)
        if (s[i] == '.' || (unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return fail_at(ctx, ENGINE_ERR_FORMAT, p, "\"%s\" is not a module name (no dots "
                           "or control characters)", s);
    memcpy(key, s, len + 1);
    return ENGINE_OK;
}

static engine_status parse_layer_list(parse_ctx *ctx, json_t *list, const char *where,
                                      const char *prefix, int depth);

static engine_status parse_entry(parse_ctx *ctx, json_t *e, const char *where,
                                 const char *prefix, int depth)
{
    char p[320];
    if (!json_is_object(e))
        return fail_at(ctx, ENGINE_ERR_FORMAT, where, "must be an object");
    json_t *type = json_object_get(e, "type");
    if (!json_is_string(type))
        return fail_at(ctx, ENGINE_ERR_FORMAT, where, "missing \"type\" (a string)");
    const char *tname = json_string_value(type);

    if (!strcmp(tname, "Sequential")) {
        TRY(check_keys(ctx, e, where, "Sequential", KEYS("layers")));
        json_t *sub = json_object_get(e, "layers");
        if (!json_is_array(sub))
            return fail_at(ctx, ENGINE_ERR_FORMAT, where, "Sequential needs \"layers\" (an "
                           "array)");
        if (depth >= LAYERS_MAX_DEPTH)
            return fail_at(ctx, ENGINE_ERR_FORMAT, where, "Sequentials nested more than %d "
                           "deep", LAYERS_MAX_DEPTH);
        return parse_layer_list(ctx, sub, key_path(p, sizeof p, where, "layers"), prefix,
                                depth + 1);
    }

    const struct layer_kind *kind = NULL;
    for (size_t i = 0; i < sizeof layer_kinds / sizeof layer_kinds[0] && !kind; i++)
        if (!strcmp(tname, layer_kinds[i].name))
            kind = &layer_kinds[i];
    if (!kind)
        return fail_at(ctx, ENGINE_ERR_FORMAT, where, "unknown layer type \"%s\"", tname);
    TRY(check_keys(ctx, e, where, kind->name, kind->keys));

    if (ctx->n_layers >= LAYERS_MAX)
        return fail_at(ctx, ENGINE_ERR_FORMAT, where, "more than %d layers", LAYERS_MAX);
    if (ctx->n_layers == ctx->cap) {
        int cap = ctx->cap ? 2 * ctx->cap : 16;
        layer_spec *grown = realloc(ctx->layers, (size_t)cap * sizeof *grown);
        if (!grown)
            return fail_at(ctx, ENGINE_ERR_NOMEM, where, "no memory for %d layers", cap);
        ctx->layers = grown;
        ctx->cap = cap;
    }
    layer_spec *l = &ctx->layers[ctx->n_layers];
    /* neutral values for fields this type does not set */
    *l = (layer_spec){.type = kind->type, .stride = {1, 1}, .dilation = {1, 1}, .groups = 1};
    memcpy(l->prefix, prefix, strlen(prefix) + 1);
    TRY(kind->parse(ctx, e, where, l));
    ctx->n_layers++;
    return ENGINE_OK;
}

static engine_status parse_layer_list(parse_ctx *ctx, json_t *list, const char *where,
                                      const char *prefix, int depth)
{
    const size_t n = json_array_size(list);
    if (n > LAYERS_MAX)   /* also bounds the duplicate-name scan below */
        return fail_at(ctx, ENGINE_ERR_FORMAT, where, "more than %d layers", LAYERS_MAX);
    char (*keys)[CNN_PREFIX_MAX] = n ? malloc(n * sizeof *keys) : NULL;
    if (n && !keys)
        return fail_at(ctx, ENGINE_ERR_NOMEM, where, "no memory");

    engine_status st = ENGINE_OK;
    for (size_t i = 0; i < n && st == ENGINE_OK; i++) {
        char at[320], child[CNN_PREFIX_MAX];
        json_t *e = json_array_get(list, i);
        snprintf(at, sizeof at, "%s[%zu]", where, i);
        if (!json_is_object(e)) {
            st = fail_at(ctx, ENGINE_ERR_FORMAT, at, "must be an object");
            break;
        }
        if ((st = entry_key(ctx, e, at, i, keys[i], CNN_PREFIX_MAX)) != ENGINE_OK)
            break;
        /* two children with one key would read the same weights */
        for (size_t j = 0; j < i && st == ENGINE_OK; j++)
            if (!strcmp(keys[i], keys[j]))
                st = fail_at(ctx, ENGINE_ERR_FORMAT, at, "key \"%s\" is already used by "
                             "%s[%zu]", keys[i], where, j);
        if (st != ENGINE_OK)
            break;
        int r = snprintf(child, sizeof child, "%s%s%s", prefix, *prefix ? "." : "", keys[i]);
        if (r < 0 || (size_t)r >= sizeof child) {
            st = fail_at(ctx, ENGINE_ERR_FORMAT, at, "key prefix \"%s%s%s\" is longer than "
                         "%d bytes", prefix, *prefix ? "." : "", keys[i], CNN_PREFIX_MAX - 1);
            break;
        }
        st = parse_entry(ctx, e, at, child, depth);
    }
    free(keys);
    return st;
}

/* ---- config.json: a Hugging Face BERT -------------------------------------------------- */

/* Bounds well inside the engine's own (engine/models/bert.c); the vocabulary is the
 * tokenizer's limit, since ids come from it. */
#define BERT_MAX_HIDDEN 65536
#define BERT_MAX_LAYERS 1024
#define BERT_MAX_INTER (1 << 20)
#define BERT_MAX_POSITIONS 65536

static engine_status parse_bert(parse_ctx *ctx, json_t *root, model_dir *md)
{
    char p[64];
    json_t *v = json_object_get(root, "model_type");
    if (!json_is_string(v))
        return fail_at(ctx, ENGINE_ERR_FORMAT, "model_type", "must be a string");
    if (strcmp(json_string_value(v), "bert") != 0)
        return fail_at(ctx, ENGINE_ERR_FORMAT, "model_type", "unknown model_type \"%s\" "
                       "(this build serves \"bert\")", json_string_value(v));

    /* The heads the checkpoint holds: the engine needs the masked-LM one. */
    v = json_object_get(root, "architectures");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v))
            return fail_at(ctx, ENGINE_ERR_FORMAT, "architectures", "must be an array of "
                           "strings");
        bool mlm = false;
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *e = json_array_get(v, i);
            snprintf(p, sizeof p, "architectures[%zu]", i);
            if (!json_is_string(e))
                return fail_at(ctx, ENGINE_ERR_FORMAT, p, "must be a string");
            mlm |= !strcmp(json_string_value(e), "BertForMaskedLM") ||
                   !strcmp(json_string_value(e), "BertForPreTraining");
        }
        if (!mlm)
            return fail_at(ctx, ENGINE_ERR_FORMAT, "architectures", "names neither "
                           "BertForMaskedLM nor BertForPreTraining: this build serves BERT "
                           "with its masked-LM head");
    }

    bert_config *c = &md->bert;
    TRY(get_int(ctx, root, "", "vocab_size", false, 30522, 1, WORDPIECE_MAX_VOCAB,
                &c->vocab_size));
    TRY(get_int(ctx, root, "", "hidden_size", false, 768, 1, BERT_MAX_HIDDEN,
                &c->hidden_size));
    TRY(get_int(ctx, root, "", "num_hidden_layers", false, 12, 1, BERT_MAX_LAYERS,
                &c->num_hidden_layers));
    TRY(get_int(ctx, root, "", "num_attention_heads", false, 12, 1, BERT_MAX_HIDDEN,
                &c->num_attention_heads));
    TRY(get_int(ctx, root, "", "intermediate_size", false, 3072, 1, BERT_MAX_INTER,
                &c->intermediate_size));
    TRY(get_int(ctx, root, "", "max_position_embeddings", false, 512, 1, BERT_MAX_POSITIONS,
                &c->max_position_embeddings));
    TRY(get_int(ctx, root, "", "type_vocab_size", false, 2, 1, BERT_MAX_POSITIONS,
                &c->type_vocab_size));
    TRY(get_float(ctx, root, "", "layer_norm_eps", 1e-12f, &c->layer_norm_eps));
    if (!(c->layer_norm_eps > 0.0f))
        return fail_at(ctx, ENGINE_ERR_FORMAT, "layer_norm_eps", "must be positive");
    if (c->hidden_size % c->num_attention_heads)
        return fail_at(ctx, ENGINE_ERR_FORMAT, "num_attention_heads", "hidden_size (%d) "
                       "must be a multiple of num_attention_heads (%d)", c->hidden_size,
                       c->num_attention_heads);

    v = json_object_get(root, "hidden_act");
    const char *act = "gelu";
    if (v && !json_is_string(v))
        return fail_at(ctx, ENGINE_ERR_FORMAT, "hidden_act", "must be a string");
    if (v)
        act = json_string_value(v);
    if (!strcmp(act, "gelu"))
        c->hidden_act_relu = false;
    else if (!strcmp(act, "relu"))
        c->hidden_act_relu = true;
    else
        return fail_at(ctx, ENGINE_ERR_FORMAT, "hidden_act", "\"%s\" is not supported "
                       "(\"gelu\", the exact erf form, or \"relu\")", act);

    v = json_object_get(root, "position_embedding_type");
    if (v && !json_is_null(v) &&
        (!json_is_string(v) || strcmp(json_string_value(v), "absolute") != 0))
        return fail_at(ctx, ENGINE_ERR_FORMAT, "position_embedding_type", "%s%s%s is not "
                       "supported (only \"absolute\")", json_is_string(v) ? "\"" : "",
                       json_is_string(v) ? json_string_value(v) : "a non-string",
                       json_is_string(v) ? "\"" : "");
    bool decoder = false;
    TRY(get_bool(ctx, root, "", "is_decoder", false, &decoder));
    if (decoder)
        return fail_at(ctx, ENGINE_ERR_FORMAT, "is_decoder", "a causal (decoder) BERT is "
                       "not supported");
    md->kind = MODEL_KIND_BERT;
    return ENGINE_OK;
}

/* ---- config.json: top level ---------------------------------------------------------- */

static engine_status parse_channel_array(parse_ctx *ctx, json_t *in, const char *key,
                                         int channels, float def, float out[3])
{
    char p[64];
    for (int c = 0; c < 3; c++)
        out[c] = def;
    json_t *v = json_object_get(in, key);
    if (!v)
        return ENGINE_OK;
    snprintf(p, sizeof p, "input.%s", key);
    if (!json_is_array(v) || json_array_size(v) != (size_t)channels)
        return fail_at(ctx, ENGINE_ERR_FORMAT, p, "must be an array of %d number%s "
                       "(one per input channel)", channels, channels == 1 ? "" : "s");
    for (int c = 0; c < channels; c++) {
        json_t *e = json_array_get(v, (size_t)c);
        snprintf(p, sizeof p, "input.%s[%d]", key, c);
        if (!json_is_number(e) || !isfinite(json_number_value(e)) ||
            fabs(json_number_value(e)) > FLT_MAX)
            return fail_at(ctx, ENGINE_ERR_FORMAT, p, "must be a finite number");
        out[c] = (float)json_number_value(e);
    }
    return ENGINE_OK;
}

static engine_status parse_input(parse_ctx *ctx, json_t *in, image_preproc *pp)
{
    if (!in)
        return fail_at(ctx, ENGINE_ERR_FORMAT, NULL, "missing \"input\"");
    if (!json_is_object(in))
        return fail_at(ctx, ENGINE_ERR_FORMAT, "input", "must be an object");
    TRY(check_keys(ctx, in, "input", "input",
                   (const char *const[]){"channels", "height", "width", "resize",
                                         "resize_shorter", "mean", "std", NULL}));
    TRY(get_int(ctx, in, "input", "channels", true, 0, 1, 3, &pp->channels));
    if (pp->channels == 2)
        return fail_at(ctx, ENGINE_ERR_FORMAT, "input.channels", "must be 1 or 3");
    TRY(get_int(ctx, in, "input", "height", true, 0, 1, INPUT_MAX_SIDE, &pp->height));
    TRY(get_int(ctx, in, "input", "width", true, 0, 1, INPUT_MAX_SIDE, &pp->width));

    json_t *rs = json_object_get(in, "resize");
    const char *mode = "stretch";
    if (rs && !json_is_string(rs))
        return fail_at(ctx, ENGINE_ERR_FORMAT, "input.resize", "must be a string");
    if (rs)
        mode = json_string_value(rs);
    if (!strcmp(mode, "stretch"))
        pp->resize = IMAGE_RESIZE_STRETCH;
    else if (!strcmp(mode, "center_crop"))
        pp->resize = IMAGE_RESIZE_CENTER_CROP;
    else if (!strcmp(mode, "none"))
        pp->resize = IMAGE_RESIZE_NONE;
    else
        return fail_at(ctx, ENGINE_ERR_FORMAT, "input.resize", "unknown mode \"%s\" "
                       "(stretch, center_crop or none)", mode);

    pp->resize_shorter = 0;
    if (pp->resize == IMAGE_RESIZE_CENTER_CROP) {
        /* At least the crop, so the crop always fits; at most 4096 so the resized
         * image stays within IMAGE_MAX_PIXELS for square inputs. */
        const int lo = pp->height > pp->width ? pp->height : pp->width;
        TRY(get_int(ctx, in, "input", "resize_shorter", true, 0, 1, INPUT_MAX_SIDE,
                    &pp->resize_shorter));
        if (pp->resize_shorter < lo)
            return fail_at(ctx, ENGINE_ERR_FORMAT, "input.resize_shorter", "%d is smaller "
                           "than the %dx%d crop", pp->resize_shorter, pp->width, pp->height);
    } else if (json_object_get(in, "resize_shorter")) {
        return fail_at(ctx, ENGINE_ERR_FORMAT, "input.resize_shorter", "only applies to "
                       "resize \"center_crop\"");
    }

    TRY(parse_channel_array(ctx, in, "mean", pp->channels, 0.0f, pp->mean));
    TRY(parse_channel_array(ctx, in, "std", pp->channels, 1.0f, pp->std));
    for (int c = 0; c < pp->channels; c++)
        if (pp->std[c] == 0.0f) {
            char p[32];
            snprintf(p, sizeof p, "input.std[%d]", c);
            return fail_at(ctx, ENGINE_ERR_FORMAT, p, "must not be 0");
        }
    return ENGINE_OK;
}

/* The top-level "layers" array into *layers (owned by the caller from then on). */
static engine_status parse_layers(parse_ctx *ctx, json_t *v, layer_spec **layers, int *n)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return fail_at(ctx, ENGINE_ERR_FORMAT, NULL, "architecture \"layers\" needs a "
                       "non-empty \"layers\" array");
    TRY(parse_layer_list(ctx, v, "layers", "", 0));
    if (ctx->n_layers == 0)
        return fail_at(ctx, ENGINE_ERR_FORMAT, "layers", "only empty Sequentials");
    *layers = ctx->layers;
    *n = ctx->n_layers;
    ctx->layers = NULL;
    return ENGINE_OK;
}

/* A string key's value among names (NULL-terminated); its index in *out.  def >= 0:
 * the index when absent. */
static engine_status get_choice(parse_ctx *ctx, json_t *obj, const char *where, const char *key,
                                int def, const char *const *names, int *out)
{
    char p[320];
    json_t *v = json_object_get(obj, key);
    key_path(p, sizeof p, where, key);
    if (!v) {
        if (def < 0)
            return fail_at(ctx, ENGINE_ERR_FORMAT, where, "missing \"%s\"", key);
        *out = def;
        return ENGINE_OK;
    }
    if (!json_is_string(v))
        return fail_at(ctx, ENGINE_ERR_FORMAT, p, "must be a string");
    char list[160] = "";
    for (int i = 0; names[i]; i++) {
        if (!strcmp(json_string_value(v), names[i])) {
            *out = i;
            return ENGINE_OK;
        }
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"",
                 i == 0 ? "" : names[i + 1] ? ", " : " or ", names[i]);
    }
    return fail_at(ctx, ENGINE_ERR_FORMAT, p, "unknown value \"%s\" (%s)", json_string_value(v),
                   list);
}

/* "condition": how a class becomes part of the generator's input; present exactly when
 * num_classes is. */
static engine_status parse_condition(parse_ctx *ctx, json_t *root, gan_spec *g)
{
    json_t *c = json_object_get(root, "condition");
    if (g->num_classes == 0) {
        if (c)
            return fail_at(ctx, ENGINE_ERR_FORMAT, "condition", "only applies to a "
                           "conditional generator (one with \"num_classes\")");
        g->condition = GAN_COND_NONE;
        return ENGINE_OK;
    }
    if (!c)
        return fail_at(ctx, ENGINE_ERR_FORMAT, NULL, "missing \"condition\" (\"num_classes\" "
                       "makes the generator conditional)");
    if (!json_is_object(c))
        return fail_at(ctx, ENGINE_ERR_FORMAT, "condition", "must be an object");
    TRY(check_keys(ctx, c, "condition", "condition",
                   (const char *const[]){"type", "key", "order", NULL}));
    int type, order;
    TRY(get_choice(ctx, c, "condition", "type", -1,
                   (const char *const[]){"embedding", "one_hot", NULL}, &type));
    TRY(get_choice(ctx, c, "condition", "order", 0,
                   (const char *const[]){"latent_first", "label_first", NULL}, &order));
    g->condition = type == 0 ? GAN_COND_EMBEDDING : GAN_COND_ONE_HOT;
    g->label_first = order == 1;

    json_t *key = json_object_get(c, "key");
    if (g->condition == GAN_COND_ONE_HOT) {
        if (key)
            return fail_at(ctx, ENGINE_ERR_FORMAT, "condition.key", "only applies to type "
                           "\"embedding\"");
        return ENGINE_OK;
    }
    if (!key)
        return fail_at(ctx, ENGINE_ERR_FORMAT, "condition", "missing \"key\" (the embedding's "
                       "tensor name)");
    const size_t len = json_is_string(key) ? json_string_length(key) : 0;
    const char *name = json_is_string(key) ? json_string_value(key) : "";
    bool ok = len > 0 && len < sizeof g->cond_key && strlen(name) == len;
    for (size_t i = 0; ok && i < len; i++)
        ok = (unsigned char)name[i] >= 0x20 && name[i] != 0x7f;
    if (!ok)
        return fail_at(ctx, ENGINE_ERR_FORMAT, "condition.key", "must be a tensor name of 1 "
                       "to %zu bytes without control characters", sizeof g->cond_key - 1);
    memcpy(g->cond_key, name, len + 1);
    return ENGINE_OK;
}

/* "output": the image the generator makes and the range of its values. */
static engine_status parse_output(parse_ctx *ctx, json_t *root, gan_spec *g)
{
    json_t *o = json_object_get(root, "output");
    if (!o)
        return fail_at(ctx, ENGINE_ERR_FORMAT, NULL, "missing \"output\"");
    if (!json_is_object(o))
        return fail_at(ctx, ENGINE_ERR_FORMAT, "output", "must be an object");
    TRY(check_keys(ctx, o, "output", "output",
                   (const char *const[]){"channels", "height", "width", "range", NULL}));
    TRY(get_int(ctx, o, "output", "channels", true, 0, 1, 3, &g->out_channels));
    if (g->out_channels == 2)
        return fail_at(ctx, ENGINE_ERR_FORMAT, "output.channels", "must be 1 (gray) or 3 (RGB)");
    TRY(get_int(ctx, o, "output", "height", true, 0, 1, INPUT_MAX_SIDE, &g->out_height));
    TRY(get_int(ctx, o, "output", "width", true, 0, 1, INPUT_MAX_SIDE, &g->out_width));
    int range;
    TRY(get_choice(ctx, o, "output", "range", -1,
                   (const char *const[]){"tanh", "sigmoid", NULL}, &range));
    g->range = range == 0 ? IMAGE_RANGE_TANH : IMAGE_RANGE_SIGMOID;
    return ENGINE_OK;
}

/* A "kind": "gan" config (docs/MODELS.md, "GAN directories"). */
static engine_status parse_gan(parse_ctx *ctx, json_t *root, model_dir *md)
{
    gan_spec *g = &md->gan;
    TRY(check_keys(ctx, root, NULL, "a GAN config",
                   (const char *const[]){"kind", "architecture", "latent_dim", "num_classes",
                                         "condition", "output", "layers", "ngf", NULL}));
    json_t *v = json_object_get(root, "architecture");
    if (!json_is_string(v))
        return fail_at(ctx, ENGINE_ERR_FORMAT, NULL, "missing \"architecture\" (a string)");
    if (!gan_arch_from_name(json_string_value(v), &g->arch))
        return fail_at(ctx, ENGINE_ERR_FORMAT, "architecture", "unknown architecture \"%s\" "
                       "(layers or dcgan)", json_string_value(v));
    TRY(get_int(ctx, root, "", "latent_dim", true, 0, 1, GAN_MAX_LATENT, &g->latent_dim));
    TRY(get_int(ctx, root, "", "num_classes", false, 0, 1, MODEL_DIR_MAX_LABELS,
                &g->num_classes));
    TRY(parse_condition(ctx, root, g));
    TRY(parse_output(ctx, root, g));

    if (g->arch == GAN_ARCH_DCGAN) {
        if (json_object_get(root, "layers"))
            return fail_at(ctx, ENGINE_ERR_FORMAT, "layers", "only applies to architecture "
                           "\"layers\"");
        TRY(get_int(ctx, root, "", "ngf", true, 0, 1, GAN_MAX_NGF, &g->ngf));
        if (g->out_height != 64 || g->out_width != 64)
            return fail_at(ctx, ENGINE_ERR_FORMAT, "output", "architecture \"dcgan\" makes "
                           "64x64 images, not %dx%d", g->out_width, g->out_height);
        if (g->range != IMAGE_RANGE_TANH)
            return fail_at(ctx, ENGINE_ERR_FORMAT, "output.range", "must be \"tanh\": "
                           "architecture \"dcgan\" ends in Tanh");
    } else {
        if (json_object_get(root, "ngf"))
            return fail_at(ctx, ENGINE_ERR_FORMAT, "ngf", "only applies to architecture "
                           "\"dcgan\"");
        TRY(parse_layers(ctx, json_object_get(root, "layers"), &g->layers, &g->n_layers));
    }
    md->kind = MODEL_KIND_GAN;
    return ENGINE_OK;
}

static engine_status parse_config(parse_ctx *ctx, const char *text, size_t len, model_dir *md)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return engine_fail(ctx->err, ENGINE_ERR_FORMAT, "%s: line %d column %d: %s",
                           ctx->file, je.line, je.column, je.text);
    engine_status st;
    json_t *v;
    if (!json_is_object(root)) {
        st = fail_at(ctx, ENGINE_ERR_FORMAT, NULL, "must be a JSON object");
        goto out;
    }
    if (json_object_get(root, "model_type")) {   /* Hugging Face's, not ours */
        st = parse_bert(ctx, root, md);
        goto out;
    }
    v = json_object_get(root, "kind");
    if (!json_is_string(v)) {
        st = fail_at(ctx, ENGINE_ERR_FORMAT, NULL, "missing \"kind\" (a string), or "
                     "\"model_type\" for a Hugging Face BERT");
        goto out;
    }
    if (!strcmp(json_string_value(v), "gan")) {
        st = parse_gan(ctx, root, md);
        goto out;
    }
    if (strcmp(json_string_value(v), "cnn") != 0) {
        st = fail_at(ctx, ENGINE_ERR_FORMAT, "kind", "unknown kind \"%s\" (this build "
                     "serves \"cnn\" and \"gan\")", json_string_value(v));
        goto out;
    }
    st = check_keys(ctx, root, NULL, "a model config",
                    (const char *const[]){"kind", "architecture", "num_classes", "input",
                                          "layers", NULL});
    if (st != ENGINE_OK)
        goto out;
    md->kind = MODEL_KIND_CNN;

    v = json_object_get(root, "architecture");
    if (!json_is_string(v)) {
        st = fail_at(ctx, ENGINE_ERR_FORMAT, NULL, "missing \"architecture\" (a string)");
        goto out;
    }
    if (!cnn_arch_from_name(json_string_value(v), &md->cnn.arch)) {
        st = fail_at(ctx, ENGINE_ERR_FORMAT, "architecture", "unknown architecture \"%s\" "
                     "(layers, resnet18, resnet34, resnet50 or mobilenet_v2)",
                     json_string_value(v));
        goto out;
    }
    st = get_int(ctx, root, "", "num_classes", true, 0, 1, MODEL_DIR_MAX_LABELS,
                 &md->cnn.num_classes);
    if (st != ENGINE_OK)
        goto out;
    if ((st = parse_input(ctx, json_object_get(root, "input"), &md->preproc)) != ENGINE_OK)
        goto out;
    md->cnn.in_channels = md->preproc.channels;
    md->cnn.in_height = md->preproc.height;
    md->cnn.in_width = md->preproc.width;

    v = json_object_get(root, "layers");
    if (md->cnn.arch != CNN_ARCH_LAYERS) {
        if (v)
            st = fail_at(ctx, ENGINE_ERR_FORMAT, "layers", "only applies to architecture "
                         "\"layers\"");
        else if (md->preproc.channels != 3)
            st = fail_at(ctx, ENGINE_ERR_FORMAT, "input.channels", "must be 3 for %s",
                         cnn_arch_name(md->cnn.arch));
        goto out;
    }
    st = parse_layers(ctx, v, &md->cnn.layers, &md->cnn.n_layers);
out:
    json_decref(root);
    return st;
}

/* ---- labels.txt ---------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid: no overlong
 * forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    const unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;   /* range of the second byte */
    if (c < 0x80)
        return 1;
    else if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* The line starting at text[pos]: its length without "\n" or "\r\n"; *next is
 * where the following line starts. */
static size_t next_line(const char *text, size_t len, size_t pos, size_t *next)
{
    const char *nl = memchr(text + pos, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
    *next = pos + n + (nl != NULL);
    if (n > 0 && text[pos + n - 1] == '\r')
        n--;
    return n;
}

static engine_status parse_labels(const char *path, const char *text, size_t len,
                                  int expected, model_dir *md, engine_err *err)
{
    /* A UTF-8 byte-order mark is an editor's artefact, not part of the first label. */
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
        text += 3, len -= 3;

    /* First pass: every line valid, then the count (so a stray blank line is named
     * as such rather than as a count mismatch). */
    size_t n_lines = 0;
    for (size_t pos = 0; pos < len; n_lines++) {
        const char *s = text + pos;
        const size_t n = next_line(text, len, pos, &pos), line = n_lines + 1;
        if (n_lines >= MODEL_DIR_MAX_LABELS)
            return engine_fail(err, ENGINE_ERR_FORMAT, "%s: more than %d labels", path,
                               MODEL_DIR_MAX_LABELS);
        if (n == 0)
            return engine_fail(err, ENGINE_ERR_FORMAT, "%s: line %zu is empty", path, line);
        if (n > MODEL_DIR_MAX_LABEL_LEN)
            return engine_fail(err, ENGINE_ERR_FORMAT, "%s: line %zu is %zu bytes, more "
                               "than %d", path, line, n, MODEL_DIR_MAX_LABEL_LEN);
        for (size_t i = 0; i < n;) {
            const unsigned char c = (unsigned char)s[i];
            if (c < 0x20 || c == 0x7f)
                return engine_fail(err, ENGINE_ERR_FORMAT, "%s: line %zu has a control "
                                   "character (0x%02x) at byte %zu", path, line, c, i + 1);
            const size_t k = utf8_seq((const unsigned char *)s + i, n - i);
            if (k == 0)
                return engine_fail(err, ENGINE_ERR_FORMAT, "%s: line %zu is not valid "
                                   "UTF-8 (byte %zu)", path, line, i + 1);
            i += k;
        }
    }
    if (n_lines != (size_t)expected)
        return engine_fail(err, ENGINE_ERR_FORMAT, "%s: %zu label%s, but config.json "
                           "num_classes is %d", path, n_lines, n_lines == 1 ? "" : "s",
                           expected);

    md->labels = calloc((size_t)expected, sizeof *md->labels);
    if (!md->labels)
        return engine_fail(err, ENGINE_ERR_NOMEM, "%s: no memory for %d labels", path,
                           expected);
    for (size_t pos = 0, i = 0; i < (size_t)expected; i++) {
        const char *s = text + pos;
        const size_t n = next_line(text, len, pos, &pos);
        if (!(md->labels[i] = malloc(n + 1)))
            return engine_fail(err, ENGINE_ERR_NOMEM, "%s: no memory", path);
        memcpy(md->labels[i], s, n);
        md->labels[i][n] = '\0';
        md->n_labels = (int)i + 1;
    }
    return ENGINE_OK;
}

/* ---- tokenizer files (BERT) ----------------------------------------------------------- */

/* vocab.txt must be there (the tokenizer reads it); tokenizer_config.json may be, and
 * gives do_lower_case (default true, as BertTokenizer).  Settings the engine's
 * tokenizer does not implement are refused rather than silently tokenized otherwise. */
static engine_status read_tokenizer(const char *dir, model_dir *md, engine_err *err)
{
    char path[PATH_MAX];
    int fd;
    off_t size;
    TRY(join_path(md->vocab_path, sizeof md->vocab_path, dir, "vocab.txt", err));
    TRY(open_regular(md->vocab_path, &fd, &size, err));
    close(fd);

    md->do_lower_case = true;
    TRY(join_path(path, sizeof path, dir, "tokenizer_config.json", err));
    struct stat sb;
    if (stat(path, &sb) != 0 && errno == ENOENT)
        return ENGINE_OK;
    char *text;
    size_t len;
    TRY(read_file(path, CONFIG_MAX_BYTES, &text, &len, err));
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    free(text);
    if (!root)
        return engine_fail(err, ENGINE_ERR_FORMAT, "%s: line %d column %d: %s", path,
                           je.line, je.column, je.text);
    parse_ctx ctx = {.file = path, .err = err};
    engine_status st = ENGINE_OK;
    json_t *v;
    if (!json_is_object(root))
        st = fail_at(&ctx, ENGINE_ERR_FORMAT, NULL, "must be a JSON object");
    if (st == ENGINE_OK)
        st = get_bool(&ctx, root, "", "do_lower_case", true, &md->do_lower_case);
    /* BertTokenizer strips accents exactly when it lower-cases unless told otherwise,
     * and always splits CJK ideographs: the only behaviour engine/wordpiece has. */
    if (st == ENGINE_OK && (v = json_object_get(root, "strip_accents")) && !json_is_null(v) &&
        (!json_is_boolean(v) || json_is_true(v) != md->do_lower_case))
        st = fail_at(&ctx, ENGINE_ERR_FORMAT, "strip_accents", "must be null or equal to "
                     "do_lower_case (%s): the tokenizer strips accents exactly when it "
                     "lower-cases", md->do_lower_case ? "true" : "false");
    if (st == ENGINE_OK && (v = json_object_get(root, "tokenize_chinese_chars")) &&
        !json_is_true(v))
        st = fail_at(&ctx, ENGINE_ERR_FORMAT, "tokenize_chinese_chars", "must be true "
                     "(the tokenizer always splits CJK ideographs)");
    json_decref(root);
    return st;
}

/* ---- the directory ------------------------------------------------------------------- */

engine_status model_dir_read(const char *dir, model_dir *out, engine_err *err)
{
    if (!dir || !out)
        return engine_fail(err, ENGINE_ERR_INVALID, "model_dir_read: NULL argument");
    memset(out, 0, sizeof *out);

    model_dir md = {0};
    char path[PATH_MAX], *text = NULL;
    size_t len;
    parse_ctx ctx = {.file = path, .err = err};

    engine_status st = join_path(path, sizeof path, dir, "config.json", err);
    if (st == ENGINE_OK)
        st = read_file(path, CONFIG_MAX_BYTES, &text, &len, err);
    if (st == ENGINE_OK)
        st = parse_config(&ctx, text, len, &md);
    free(ctx.layers);   /* left here only on failure */
    free(text);
    text = NULL;

    /* class names: a CNN's outputs, a conditional GAN's inputs */
    const int classes = md.kind == MODEL_KIND_CNN ? md.cnn.num_classes
                        : md.kind == MODEL_KIND_GAN ? md.gan.num_classes : 0;
    if (st == ENGINE_OK && classes > 0)
        st = join_path(path, sizeof path, dir, "labels.txt", err);
    if (st == ENGINE_OK && classes > 0)
        st = read_file(path, LABELS_MAX_BYTES, &text, &len, err);
    if (st == ENGINE_OK && classes > 0)
        st = parse_labels(path, text, len, classes, &md, err);
    free(text);
    if (st == ENGINE_OK && md.kind == MODEL_KIND_BERT)
        st = read_tokenizer(dir, &md, err);

    /* The engine maps and validates the weights; here only that they are there. */
    if (st == ENGINE_OK)
        st = join_path(md.weights_path, sizeof md.weights_path, dir, "model.safetensors",
                       err);
    if (st == ENGINE_OK) {
        int fd;
        off_t size;
        st = open_regular(md.weights_path, &fd, &size, err);
        if (st == ENGINE_OK)
            close(fd);
    }

    if (st != ENGINE_OK) {
        model_dir_free(&md);
        return st;
    }
    *out = md;
    return ENGINE_OK;
}

void model_dir_free(model_dir *md)
{
    if (!md)
        return;
    cnn_spec_free(&md->cnn);
    gan_spec_free(&md->gan);
    for (int i = 0; i < md->n_labels; i++)
        free(md->labels[i]);
    free(md->labels);
    md->labels = NULL;
    md->n_labels = 0;
}

const char *model_kind_name(model_kind kind)
{
    switch (kind) {
    case MODEL_KIND_CNN: return "cnn";
    case MODEL_KIND_BERT: return "bert";
    case MODEL_KIND_GAN: return "gan";
    }
    return "unknown";
}
