/* kserve.c — Open Inference Protocol bodies (kserve.h).
 *
 * An infer request is read in two passes: the JSON part (inputs, their shapes,
 * datatypes and "data", flat or nested), then, with the binary tensor extension,
 * the bytes after Inference-Header-Content-Length, handed to the inputs that
 * declare a binary_data_size, in order.  Every count is checked before anything is
 * allocated for it: a shape may claim at most as many elements as the body has
 * bytes (a JSON number takes at least one, a binary element at least one), so a
 * 100-byte body cannot make the server allocate gigabytes.  Values are range
 * checked as they are converted (UINT8 0..255, INT32, finite FP32).
 *
 * Model kinds then pick their tensors by name; any input they do not know is an
 * error rather than silently ignored, so a client with a typo hears about it.
 * Binary data is little-endian, as the protocol defines, whatever the host.
 */
#include <config.h>

#include "proto/kserve.h"

#include <float.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto_internal.h"

/* Floats in answers: 9 significant digits read back as the same float32. */
#define KSERVE_JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(9))

static const char *const DTYPE_NAMES[] = {"BOOL", "UINT8", "INT32", "INT64", "FP32", "BYTES"};
/* Bytes per element in binary data (BYTES: a 4-byte length before each). */
static const size_t DTYPE_SIZE[] = {1, 1, 4, 8, 4, 0};
/* Protocol datatypes this server parses no model input from. */
static const char *const OTHER_DTYPES[] = {"UINT16", "UINT32", "UINT64", "INT8",
                                           "INT16",  "FP16",   "FP64",   "BF16"};

#define N_DTYPES ((int)(sizeof DTYPE_NAMES / sizeof DTYPE_NAMES[0]))

const char *kserve_dtype_name(kserve_dtype t)
{
    return (unsigned)t < (unsigned)N_DTYPES ? DTYPE_NAMES[t] : "?";
}

/* ---- parsing ---------------------------------------------------------------------- */

static void tensor_free(kserve_tensor *t)
{
    free(t->f32);
    free(t->i64);
    if (t->str)
        for (size_t i = 0; i < t->count; i++)
            free(t->str[i]);
    free(t->str);
    free(t->str_len);
}

void kserve_request_free(kserve_request *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < r->n_inputs; i++)
        tensor_free(&r->inputs[i]);
    free(r->inputs);
    free(r->outputs);
    free(r->id);
    memset(r, 0, sizeof *r);
}

static int parse_dtype(const json_t *v, const char *input, kserve_dtype *out, proto_error *err)
{
    if (!json_is_string(v))
        return proto_perr(err, 400, "input '%s': \"datatype\" must be a string such as \"FP32\"",
                          input);
    const char *s = json_string_value(v);
    for (int i = 0; i < N_DTYPES; i++) {
        if (strcmp(s, DTYPE_NAMES[i]) == 0) {
            *out = (kserve_dtype)i;
            return 0;
        }
    }
    for (size_t i = 0; i < sizeof OTHER_DTYPES / sizeof OTHER_DTYPES[0]; i++)
        if (strcmp(s, OTHER_DTYPES[i]) == 0)
            return proto_perr(err, 400,
                              "input '%s': datatype %s is not taken here; use FP32, INT64, "
                              "INT32, UINT8, BOOL or BYTES (GET /v2/models/{name} lists each "
                              "input's)",
                              input, s);
    return proto_perr(err, 400, "input '%s': unknown datatype \"%.32s\"", input, s);
}

/* shape: a JSON array of non-negative integers; *count their product, refused when
 * it is more than limit (the body's size: see the top of the file). */
static int parse_shape(const json_t *v, const char *input, size_t limit, kserve_tensor *t,
                       proto_error *err)
{
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > KSERVE_MAX_DIMS)
        return proto_perr(err, 400,
                          "input '%s': \"shape\" must be an array of 1 to %d non-negative "
                          "integers",
                          input, KSERVE_MAX_DIMS);
    t->ndim = (int)json_array_size(v);
    size_t count = 1;
    for (int d = 0; d < t->ndim; d++) {
        const json_t *dim = json_array_get(v, (size_t)d);
        if (!json_is_integer(dim) || json_integer_value(dim) < 0)
            return proto_perr(err, 400,
                              "input '%s': shape dimension %d must be a non-negative integer",
                              input, d);
        t->shape[d] = json_integer_value(dim);
        if (t->shape[d] != 0 && count > limit / (size_t)t->shape[d])
            count = limit + 1; /* too many either way; keep counting zero dims */
        else
            count *= (size_t)t->shape[d];
    }
    if (count > limit)
        return proto_perr(err, 400,
                          "input '%s': its shape has more elements than a body of %zu bytes "
                          "can carry",
                          input, limit);
    t->count = count;
    return 0;
}

static int alloc_values(kserve_tensor *t, proto_error *err)
{
    size_t n = t->count ? t->count : 1;
    if (t->dtype == KSERVE_FP32)
        t->f32 = malloc(n * sizeof *t->f32);
    else if (t->dtype == KSERVE_BYTES) {
        t->str = calloc(n, sizeof *t->str);
        t->str_len = calloc(n, sizeof *t->str_len);
    } else
        t->i64 = malloc(n * sizeof *t->i64);
    if (t->f32 == NULL && t->i64 == NULL && (t->str == NULL || t->str_len == NULL))
        return proto_perr(err, 500, "out of memory for input '%s'", t->name);
    return 0;
}

/* The integer range of each integer datatype. */
static bool int_in_range(kserve_dtype t, long long v)
{
    switch (t) {
    case KSERVE_BOOL: return v == 0 || v == 1;
    case KSERVE_UINT8: return v >= 0 && v <= 255;
    case KSERVE_INT32: return v >= INT32_MIN && v <= INT32_MAX;
    default: return true;
    }
}

static int store_string(kserve_tensor *t, size_t at, const char *s, size_t len, proto_error *err)
{
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return proto_perr(err, 500, "out of memory for input '%s'", t->name);
    memcpy(copy, s, len);
    copy[len] = '\0';
    t->str[at] = copy;
    t->str_len[at] = len;
    return 0;
}

/* One JSON leaf into element `at`. */
static int store_json(kserve_tensor *t, size_t at, const json_t *v, proto_error *err)
{
    switch (t->dtype) {
    case KSERVE_FP32: {
        if (!json_is_number(v))
            return proto_perr(err, 400, "input '%s' (FP32): element %zu is %s, not a number",
                              t->name, at, proto_type_name(v));
        double d = json_number_value(v);
        if (!(fabs(d) <= FLT_MAX))
            return proto_perr(err, 400, "input '%s' (FP32): element %zu is out of float range",
                              t->name, at);
        t->f32[at] = (float)d;
        return 0;
    }
    case KSERVE_BYTES:
        if (!json_is_string(v))
            return proto_perr(err, 400, "input '%s' (BYTES): element %zu is %s, not a string",
                              t->name, at, proto_type_name(v));
        return store_string(t, at, json_string_value(v), json_string_length(v), err);
    default:
        if (t->dtype == KSERVE_BOOL && json_is_boolean(v)) { /* or 0 and 1, below */
            t->i64[at] = json_is_true(v);
            return 0;
        }
        if (!json_is_integer(v) || !int_in_range(t->dtype, json_integer_value(v)))
            return proto_perr(err, 400, "input '%s' (%s): element %zu is not a %s value",
                              t->name, kserve_dtype_name(t->dtype), at,
                              kserve_dtype_name(t->dtype));
        t->i64[at] = json_integer_value(v);
        return 0;
    }
}

/* "data", flat or nested row-major: every leaf in order.  *seen counts them, and
 * stops storing past count (the mismatch is reported once all are counted). */
static int walk_data(kserve_tensor *t, const json_t *v, size_t *seen, int depth, proto_error *err)
{
    if (json_is_array(v)) {
        if (depth > KSERVE_MAX_DIMS)
            return proto_perr(err, 400, "input '%s': \"data\" is nested deeper than %d levels",
                              t->name, KSERVE_MAX_DIMS);
        for (size_t i = 0; i < json_array_size(v); i++) {
            int st = walk_data(t, json_array_get(v, i), seen, depth + 1, err);
            if (st != 0)
                return st;
        }
        return 0;
    }
    if (*seen < t->count) {
        int st = store_json(t, *seen, v, err);
        if (st != 0)
            return st;
    }
    (*seen)++;
    return 0;
}

static uint64_t read_le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* size bytes of binary data for t. */
static int take_binary(kserve_tensor *t, const uint8_t *p, size_t size, proto_error *err)
{
    if (t->dtype == KSERVE_BYTES) {
        size_t off = 0;
        for (size_t i = 0; i < t->count; i++) {
            if (size - off < 4)
                return proto_perr(err, 400, "input '%s' (BYTES): binary data ends inside "
                                            "element %zu's length", t->name, i);
            size_t n = (size_t)read_le(p + off, 4);
            off += 4;
            if (n > size - off)
                return proto_perr(err, 400, "input '%s' (BYTES): element %zu of %zu bytes "
                                            "runs past its binary_data_size", t->name, i, n);
            int st = store_string(t, i, (const char *)p + off, n, err);
            if (st != 0)
                return st;
            off += n;
        }
        if (off != size)
            return proto_perr(err, 400, "input '%s' (BYTES): binary_data_size is %zu but its "
                                        "%zu elements take %zu bytes", t->name, size, t->count,
                              off);
        return 0;
    }
    size_t elem = DTYPE_SIZE[t->dtype];
    if (size != t->count * elem)
        return proto_perr(err, 400,
                          "input '%s': binary_data_size is %zu but shape and datatype %s need "
                          "%zu bytes",
                          t->name, size, kserve_dtype_name(t->dtype), t->count * elem);
    for (size_t i = 0; i < t->count; i++) {
        uint64_t raw = read_le(p + i * elem, elem);
        if (t->dtype == KSERVE_FP32) {
            uint32_t bits = (uint32_t)raw;
            float f;
            memcpy(&f, &bits, sizeof f);
            if (!isfinite(f))
                return proto_perr(err, 400, "input '%s' (FP32): element %zu is not finite",
                                  t->name, i);
            t->f32[i] = f;
        } else if (t->dtype == KSERVE_INT32) {
            t->i64[i] = (int32_t)(uint32_t)raw;
        } else if (t->dtype == KSERVE_INT64) {
            t->i64[i] = (int64_t)raw;
        } else {
            t->i64[i] = (int64_t)raw;
            if (!int_in_range(t->dtype, t->i64[i]))
                return proto_perr(err, 400, "input '%s' (BOOL): element %zu is not 0 or 1",
                                  t->name, i);
        }
    }
    return 0;
}

static const char *const REQUEST_FIELDS[] = {"id", "parameters", "inputs", "outputs"};
static const char *const INPUT_FIELDS[] = {"name", "shape", "datatype", "data", "parameters"};
static const char *const OUTPUT_FIELDS[] = {"name", "parameters"};

static int parse_name(const json_t *v, const char *what, char *out, proto_error *err)
{
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        json_string_length(v) >= KSERVE_NAME_MAX)
        return proto_perr(err, 400, "%s needs a \"name\": a string of 1 to %d bytes", what,
                          KSERVE_NAME_MAX - 1);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

/* One element of "inputs"; binary data is attached later.  *binary_size is its
 * binary_data_size, or -1 when the values are in "data". */
static int parse_input(const json_t *in, size_t limit, kserve_tensor *t, long long *binary_size,
                       proto_error *err)
{
    if (!json_is_object(in))
        return proto_perr(err, 400, "each element of \"inputs\" must be an object, got %s",
                          proto_type_name(in));
    int st = parse_name(json_object_get(in, "name"), "each input", t->name, err);
    if (st == 0)
        st = proto_check_fields(in, INPUT_FIELDS, sizeof INPUT_FIELDS / sizeof INPUT_FIELDS[0],
                                t->name, err);
    if (st == 0)
        st = parse_dtype(json_object_get(in, "datatype"), t->name, &t->dtype, err);
    if (st == 0)
        st = parse_shape(json_object_get(in, "shape"), t->name, limit, t, err);
    if (st != 0)
        return st;
    const json_t *params = json_object_get(in, "parameters");
    const json_t *bsize = json_is_object(params) ? json_object_get(params, "binary_data_size")
                                                 : NULL;
    const json_t *data = json_object_get(in, "data");
    if (params != NULL && !json_is_object(params))
        return proto_perr(err, 400, "input '%s': \"parameters\" must be an object", t->name);
    if ((data != NULL) == (bsize != NULL))
        return proto_perr(err, 400,
                          "input '%s': give its values either in \"data\" or as binary data "
                          "(parameters.binary_data_size), exactly one of them",
                          t->name);
    if ((st = alloc_values(t, err)) != 0)
        return st;
    if (bsize != NULL) {
        if (!json_is_integer(bsize) || json_integer_value(bsize) < 0)
            return proto_perr(err, 400,
                              "input '%s': binary_data_size must be a non-negative integer",
                              t->name);
        *binary_size = json_integer_value(bsize);
        return 0;
    }
    *binary_size = -1;
    size_t seen = 0;
    if ((st = walk_data(t, data, &seen, 0, err)) != 0)
        return st;
    if (seen != t->count)
        return proto_perr(err, 400, "input '%s': shape has %zu elements but \"data\" has %zu",
                          t->name, t->count, seen);
    return 0;
}

static int parse_outputs(const json_t *v, kserve_request *r, proto_error *err)
{
    if (!json_is_array(v))
        return proto_perr(err, 400, "\"outputs\" must be an array of {\"name\": ...} objects");
    size_t n = json_array_size(v);
    r->outputs = calloc(n ? n : 1, sizeof *r->outputs);
    if (r->outputs == NULL)
        return proto_perr(err, 500, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const json_t *o = json_array_get(v, i);
        if (!json_is_object(o))
            return proto_perr(err, 400, "each element of \"outputs\" must be an object");
        kserve_output_req *out = &r->outputs[i];
        int st = parse_name(json_object_get(o, "name"), "each requested output", out->name, err);
        if (st == 0)
            st = proto_check_fields(o, OUTPUT_FIELDS,
                                    sizeof OUTPUT_FIELDS / sizeof OUTPUT_FIELDS[0], out->name,
                                    err);
        if (st != 0)
            return st;
        const json_t *params = json_object_get(o, "parameters");
        const json_t *bin = json_is_object(params) ? json_object_get(params, "binary_data")
                                                   : NULL;
        if (bin != NULL && !json_is_boolean(bin))
            return proto_perr(err, 400, "output '%s': binary_data must be true or false",
                              out->name);
        out->binary = bin != NULL ? json_is_true(bin) : r->binary_default;
        r->n_outputs = (int)i + 1;
    }
    return 0;
}

int kserve_parse_infer(const char *body, size_t len, size_t header_len, kserve_request *out,
                       proto_error *err)
{
    memset(out, 0, sizeof *out);
    if (header_len > len)
        return proto_perr(err, 400,
                          "Inference-Header-Content-Length is %zu but the body has only %zu "
                          "bytes",
                          header_len, len);
    json_t *root = proto_load_body(
        body, header_len,
        "{\"inputs\": [{\"name\": \"input\", \"shape\": [1, 4], \"datatype\": \"FP32\", "
        "\"data\": [1, 2, 3, 4]}]}",
        err);
    if (root == NULL)
        return err->status;
    int st = 0;
    long long *bsizes = NULL;
    if (!json_is_object(root)) {
        st = proto_perr(err, 400, "body must be a JSON object with \"inputs\"; got %s",
                        proto_type_name(root));
        goto done;
    }
    if ((st = proto_check_fields(root, REQUEST_FIELDS,
                                 sizeof REQUEST_FIELDS / sizeof REQUEST_FIELDS[0], "", err)) != 0)
        goto done;
    const json_t *id = json_object_get(root, "id");
    if (id != NULL) {
        if (!json_is_string(id) || json_string_length(id) > 256) {
            st = proto_perr(err, 400, "\"id\" must be a string of at most 256 bytes");
            goto done;
        }
        if ((out->id = strdup(json_string_value(id))) == NULL) {
            st = proto_perr(err, 500, "out of memory");
            goto done;
        }
    }
    const json_t *params = json_object_get(root, "parameters");
    if (params != NULL) {
        const json_t *b = json_is_object(params) ? json_object_get(params, "binary_data_output")
                                                 : NULL;
        if (!json_is_object(params) || (b != NULL && !json_is_boolean(b))) {
            st = proto_perr(err, 400, "\"parameters\" must be an object; its binary_data_output "
                                      "true or false");
            goto done;
        }
        out->binary_default = b != NULL && json_is_true(b);
    }
    const json_t *inputs = json_object_get(root, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) == 0 ||
        json_array_size(inputs) > 16) {
        st = proto_perr(err, 400, "\"inputs\" must be an array of 1 to 16 tensors");
        goto done;
    }
    size_t n_in = json_array_size(inputs);
    out->inputs = calloc(n_in, sizeof *out->inputs);
    bsizes = calloc(n_in, sizeof *bsizes);
    if (out->inputs == NULL || bsizes == NULL) {
        st = proto_perr(err, 500, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n_in && st == 0; i++) {
        st = parse_input(json_array_get(inputs, i), len, &out->inputs[i], &bsizes[i], err);
        out->n_inputs = (int)i + 1;
        for (size_t j = 0; j < i && st == 0; j++)
            if (strcmp(out->inputs[j].name, out->inputs[i].name) == 0)
                st = proto_perr(err, 400, "input '%s' is given twice", out->inputs[i].name);
    }
    if (st != 0)
        goto done;
    const json_t *outputs = json_object_get(root, "outputs");
    if (outputs != NULL && (st = parse_outputs(outputs, out, err)) != 0)
        goto done;

    /* The binary section, input by input in order. */
    const uint8_t *bin = (const uint8_t *)body + header_len;
    size_t left = len - header_len, off = 0;
    for (int i = 0; i < out->n_inputs; i++) {
        if (bsizes[i] < 0)
            continue;
        if ((unsigned long long)bsizes[i] > left - off) {
            st = proto_perr(err, 400,
                            "input '%s': binary_data_size %lld runs past the end of the body "
                            "(%zu binary bytes left): truncated body?",
                            out->inputs[i].name, bsizes[i], left - off);
            goto done;
        }
        if ((st = take_binary(&out->inputs[i], bin + off, (size_t)bsizes[i], err)) != 0)
            goto done;
        off += (size_t)bsizes[i];
    }
    if (off != left)
        st = proto_perr(err, 400,
                        "%zu bytes of binary data follow the JSON but the inputs' "
                        "binary_data_size take %zu",
                        left, off);
done:
    free(bsizes);
    json_decref(root);
    if (st != 0)
        kserve_request_free(out);
    return st;
}

/* ---- per model kind --------------------------------------------------------------- */

static const kserve_tensor *find_input(const kserve_request *r, const char *name)
{
    for (int i = 0; i < r->n_inputs; i++)
        if (strcmp(r->inputs[i].name, name) == 0)
            return &r->inputs[i];
    return NULL;
}

/* Every input must be one of names[]: a typo is an error, not ignored. */
static int only_inputs(const kserve_request *r, const char *model, const char *const *names,
                       int n, const char *expected, proto_error *err)
{
    for (int i = 0; i < r->n_inputs; i++) {
        bool known = false;
        for (int j = 0; j < n; j++)
            known = known || strcmp(r->inputs[i].name, names[j]) == 0;
        if (!known)
            return proto_perr(err, 400, "model %s has no input '%s'; it takes %s", model,
                              r->inputs[i].name, expected);
    }
    return 0;
}

static bool is_int_dtype(kserve_dtype t) { return t == KSERVE_INT64 || t == KSERVE_INT32; }

int kserve_cnn_input(const kserve_request *r, const char *model, const image_preproc *pp,
                     int max_images, float **x, int *n, proto_error *err)
{
    static const char *const names[] = {"input"};
    *x = NULL;
    int st = only_inputs(r, model, names, 1, "'input' (FP32 [N,C,H,W] or UINT8 [N,H,W,C])", err);
    if (st != 0)
        return st;
    const kserve_tensor *t = find_input(r, "input");
    if (t == NULL)
        return proto_perr(err, 400, "missing input 'input': FP32 [N,%d,%d,%d] or UINT8 "
                                    "[N,H,W,C]", pp->channels, pp->height, pp->width);
    const size_t plane = (size_t)pp->channels * (size_t)pp->height * (size_t)pp->width;
    if (t->dtype == KSERVE_FP32) {
        if (t->ndim != 4 || t->shape[1] != pp->channels || t->shape[2] != pp->height ||
            t->shape[3] != pp->width)
            return proto_perr(err, 400, "input 'input' (FP32) must have shape [N,%d,%d,%d]",
                              pp->channels, pp->height, pp->width);
    } else if (t->dtype == KSERVE_UINT8) {
        if (t->ndim != 4 || (t->shape[3] != 1 && t->shape[3] != 3 && t->shape[3] != 4) ||
            t->shape[1] < 1 || t->shape[2] < 1 || t->shape[1] > PROTO_MAX_PIXELS_SIDE ||
            t->shape[2] > PROTO_MAX_PIXELS_SIDE)
            return proto_perr(err, 400, "input 'input' (UINT8) must have shape [N,H,W,C] "
                                        "with C 1, 3 or 4 and sides up to %d",
                              PROTO_MAX_PIXELS_SIDE);
    } else {
        return proto_perr(err, 400, "input 'input' must be FP32 or UINT8, got %s",
                          kserve_dtype_name(t->dtype));
    }
    if (t->shape[0] < 1)
        return proto_perr(err, 400, "input 'input' has no images (N = 0)");
    if (t->shape[0] > max_images)
        return proto_perr(err, 413, "%" PRId64 " images in one request; at most %d "
                                    "(max_images_per_request)", t->shape[0], max_images);
    *n = (int)t->shape[0];
    *x = malloc((size_t)*n * plane * sizeof **x);
    if (*x == NULL)
        return proto_perr(err, 500, "out of memory");
    if (t->dtype == KSERVE_FP32) {
        memcpy(*x, t->f32, (size_t)*n * plane * sizeof **x);
        return 0;
    }
    int h = (int)t->shape[1], w = (int)t->shape[2], c = (int)t->shape[3];
    size_t per = (size_t)h * (size_t)w * (size_t)c;
    uint8_t *px = malloc(per);
    if (px == NULL) {
        free(*x);
        *x = NULL;
        return proto_perr(err, 500, "out of memory");
    }
    for (int i = 0; i < *n && st == 0; i++) {
        for (size_t k = 0; k < per; k++)
            px[k] = (uint8_t)t->i64[(size_t)i * per + k];
        engine_err e;
        if (image_pixels_to_tensor(px, h, w, c, pp, *x + (size_t)i * plane, &e) != ENGINE_OK)
            st = proto_perr(err, 400, "input 'input' image %d: %s", i, e.msg);
    }
    free(px);
    if (st != 0) {
        free(*x);
        *x = NULL;
    }
    return st;
}

void kserve_bert_batch_free(kserve_bert_batch *b)
{
    if (b == NULL)
        return;
    free(b->seqs);
    free(b->ids);
    free(b->type_ids);
    free(b->mask_pos);
    free(b->positions);
    memset(b, 0, sizeof *b);
}

static int bert_alloc(kserve_bert_batch *b, int n, size_t tokens, proto_error *err)
{
    b->n = n;
    b->seqs = calloc((size_t)n, sizeof *b->seqs);
    b->ids = malloc((tokens ? tokens : 1) * sizeof *b->ids);
    b->type_ids = calloc(tokens ? tokens : 1, sizeof *b->type_ids);
    b->mask_pos = malloc((tokens ? tokens : 1) * sizeof *b->mask_pos);
    b->positions = malloc((tokens ? tokens : 1) * 2 * sizeof *b->positions);
    if (!b->seqs || !b->ids || !b->type_ids || !b->mask_pos || !b->positions)
        return proto_perr(err, 500, "out of memory");
    return 0;
}

/* Points the sequences into the flat arrays and finds the [MASK]s. */
static void bert_index(kserve_bert_batch *b, const int *lens, int32_t mask_id)
{
    size_t off = 0;
    b->n_mask = 0;
    for (int i = 0; i < b->n; i++) {
        engine_bert_seq *s = &b->seqs[i];
        s->ids = b->ids + off;
        s->type_ids = b->type_ids + off;
        s->len = lens[i];
        s->mask_pos = b->mask_pos + b->n_mask;
        s->n_mask = 0;
        for (int p = 0; p < lens[i]; p++) {
            if (s->ids[p] != mask_id)
                continue;
            b->mask_pos[b->n_mask] = p;
            b->positions[2 * b->n_mask] = i;
            b->positions[2 * b->n_mask + 1] = p;
            b->n_mask++;
            s->n_mask++;
        }
        off += (size_t)lens[i];
    }
    b->tokens = (int)off;
}

static int bert_from_text(const kserve_tensor *t, const proto_bert_model *bm,
                          kserve_bert_batch *b, proto_error *err)
{
    wordpiece_specials sp = wordpiece_special_ids(bm->wp);
    if (t->ndim != 1 || t->count < 1)
        return proto_perr(err, 400, "input 'text' must be BYTES of shape [N], N >= 1");
    int n = (int)t->count;
    int *lens = malloc((size_t)n * sizeof *lens);
    if (lens == NULL || bert_alloc(b, n, (size_t)n * (size_t)bm->max_tokens, err) != 0) {
        free(lens);
        return proto_perr(err, 500, "out of memory");
    }
    int st = 0;
    size_t off = 0;
    for (int i = 0; i < n && st == 0; i++) {
        if (t->str_len[i] > WORDPIECE_MAX_TEXT_BYTES) {
            st = proto_perr(err, 413, "text %d is %zu bytes; at most %d are taken", i,
                            t->str_len[i], WORDPIECE_MAX_TEXT_BYTES);
            break;
        }
        int32_t *ids = b->ids + off;
        int need = 0;
        engine_err e;
        engine_status es = wordpiece_encode(bm->wp, t->str[i], t->str_len[i], ids + 1,
                                            bm->max_tokens - 2, &need, &e);
        if (es != ENGINE_OK) {
            st = proto_perr(err, es == ENGINE_ERR_NOMEM ? 500 : 400, "text %d: %s", i, e.msg);
            break;
        }
        if (need + 2 > bm->max_tokens) {
            st = proto_perr(err, 413, "text %d is %d tokens with [CLS] and [SEP]; model %s takes "
                                      "at most %d", i, need + 2, bm->name, bm->max_tokens);
            break;
        }
        ids[0] = sp.cls;
        ids[need + 1] = sp.sep;
        lens[i] = need + 2;
        off += (size_t)lens[i];
    }
    if (st == 0)
        bert_index(b, lens, sp.mask);
    free(lens);
    return st;
}

static int bert_from_ids(const kserve_request *r, const proto_bert_model *bm, int vocab_size,
                         int type_vocab_size, kserve_bert_batch *b, proto_error *err)
{
    const kserve_tensor *ids = find_input(r, "input_ids");
    const kserve_tensor *mask = find_input(r, "attention_mask");
    const kserve_tensor *types = find_input(r, "token_type_ids");
    const kserve_tensor *all[] = {ids, mask, types};
    for (int k = 0; k < 3; k++) {
        const kserve_tensor *t = all[k];
        if (t == NULL)
            continue;
        if (!is_int_dtype(t->dtype) || t->ndim != 2)
            return proto_perr(err, 400, "input '%s' must be INT64 (or INT32) of shape [N,T]",
                              t->name);
        if (t != ids && (t->shape[0] != ids->shape[0] || t->shape[1] != ids->shape[1]))
            return proto_perr(err, 400, "input '%s' has shape [%" PRId64 ",%" PRId64 "] but "
                                        "input_ids [%" PRId64 ",%" PRId64 "]", t->name,
                              t->shape[0], t->shape[1], ids->shape[0], ids->shape[1]);
    }
    int n = (int)ids->shape[0], width = (int)ids->shape[1];
    if (n < 1 || width < 1)
        return proto_perr(err, 400, "input_ids has no tokens");
    if (width > bm->max_tokens)
        return proto_perr(err, 413, "sequences of %d tokens; model %s takes at most %d", width,
                          bm->name, bm->max_tokens);
    int *lens = malloc((size_t)n * sizeof *lens);
    if (lens == NULL || bert_alloc(b, n, ids->count, err) != 0) {
        free(lens);
        return proto_perr(err, 500, "out of memory");
    }
    int st = 0;
    size_t off = 0;
    for (int i = 0; i < n && st == 0; i++) {
        const int64_t *row = ids->i64 + (size_t)i * (size_t)width;
        int len = width;
        if (mask != NULL) {
            const int64_t *m = mask->i64 + (size_t)i * (size_t)width;
            len = 0;
            while (len < width && m[len] == 1)
                len++;
            for (int p = len; p < width && st == 0; p++)
                if (m[p] != 0)
                    st = proto_perr(err, 400, "attention_mask row %d must be 1s then 0s "
                                              "(padding at the end)", i);
            if (len == 0 && st == 0)
                st = proto_perr(err, 400, "attention_mask row %d has no token", i);
        }
        for (int p = 0; p < len && st == 0; p++) {
            if (row[p] < 0 || row[p] >= vocab_size)
                st = proto_perr(err, 400, "input_ids[%d][%d] = %" PRId64 " is outside the "
                                          "vocabulary 0..%d", i, p, row[p], vocab_size - 1);
            b->ids[off + (size_t)p] = (int32_t)row[p];
            if (types != NULL && st == 0) {
                int64_t ty = types->i64[(size_t)i * (size_t)width + (size_t)p];
                if (ty < 0 || ty >= type_vocab_size)
                    st = proto_perr(err, 400, "token_type_ids[%d][%d] = %" PRId64 " is "
                                              "outside 0..%d", i, p, ty, type_vocab_size - 1);
                b->type_ids[off + (size_t)p] = (int32_t)ty;
            }
        }
        lens[i] = len;
        off += (size_t)len;
    }
    if (st == 0)
        bert_index(b, lens, wordpiece_special_ids(bm->wp).mask);
    free(lens);
    return st;
}

int kserve_bert_input(const kserve_request *r, const proto_bert_model *bm, int vocab_size,
                      int type_vocab_size, int max_sequences, kserve_bert_batch *out,
                      proto_error *err)
{
    static const char *const names[] = {"input_ids", "attention_mask", "token_type_ids", "text"};
    memset(out, 0, sizeof *out);
    int st = only_inputs(r, bm->name, names, 4,
                         "'input_ids' (+ 'attention_mask', 'token_type_ids'), or 'text'",
                         err);
    if (st != 0)
        return st;
    const kserve_tensor *text = find_input(r, "text");
    const kserve_tensor *ids = find_input(r, "input_ids");
    if ((text != NULL) == (ids != NULL))
        return proto_perr(err, 400, "give either 'input_ids' (INT64 [N,T]) or 'text' "
                                    "(BYTES [N]), exactly one");
    if (text != NULL && r->n_inputs != 1)
        return proto_perr(err, 400, "'text' comes alone: the server makes the ids, mask and "
                                    "token types");
    if (text != NULL && text->dtype != KSERVE_BYTES)
        return proto_perr(err, 400, "input 'text' must be BYTES, got %s",
                          kserve_dtype_name(text->dtype));
    int64_t n = text ? (int64_t)text->count : ids->ndim == 2 ? ids->shape[0] : 0;
    if (n > max_sequences)
        return proto_perr(err, 413, "%" PRId64 " sequences in one request; at most %d", n,
                          max_sequences);
    st = text ? bert_from_text(text, bm, out, err)
              : bert_from_ids(r, bm, vocab_size, type_vocab_size, out, err);
    if (st != 0)
        kserve_bert_batch_free(out);
    return st;
}

int kserve_gan_input(const kserve_request *r, const proto_gan_model *gm, float **latents,
                     int32_t **classes, int *n, proto_error *err)
{
    static const char *const names[] = {"latent", "class"};
    *latents = NULL;
    *classes = NULL;
    int st = only_inputs(r, gm->name, names, gm->num_classes ? 2 : 1,
                         gm->num_classes ? "'latent' (FP32 [N,nz]) and 'class' (INT64 [N])"
                                         : "'latent' (FP32 [N,nz])",
                         err);
    if (st != 0)
        return st;
    const kserve_tensor *z = find_input(r, "latent");
    const kserve_tensor *c = find_input(r, "class");
    if (z == NULL || z->dtype != KSERVE_FP32 || z->ndim != 2 || z->shape[1] != gm->latent_dim)
        return proto_perr(err, 400, "input 'latent' must be FP32 of shape [N,%d]",
                          gm->latent_dim);
    if (z->shape[0] < 1)
        return proto_perr(err, 400, "input 'latent' has no rows (N = 0)");
    if (z->shape[0] > gm->max_count)
        return proto_perr(err, 413, "%" PRId64 " latents in one request; at most %d "
                                    "(max_generate_images)", z->shape[0], gm->max_count);
    *n = (int)z->shape[0];
    if (gm->num_classes > 0) {
        if (c == NULL || !is_int_dtype(c->dtype) || c->ndim != 1 || c->shape[0] != *n)
            return proto_perr(err, 400, "model %s is conditional: input 'class' must be "
                                        "INT64 of shape [%d]", gm->name, *n);
        *classes = malloc((size_t)*n * sizeof **classes);
        if (*classes == NULL)
            return proto_perr(err, 500, "out of memory");
        for (int i = 0; i < *n; i++) {
            if (c->i64[i] < 0 || c->i64[i] >= gm->num_classes) {
                free(*classes);
                *classes = NULL;
                return proto_perr(err, 400, "class[%d] = %" PRId64 " is outside 0..%d", i,
                                  c->i64[i], gm->num_classes - 1);
            }
            (*classes)[i] = (int32_t)c->i64[i];
        }
    }
    *latents = malloc(z->count * sizeof **latents);
    if (*latents == NULL) {
        free(*classes);
        *classes = NULL;
        return proto_perr(err, 500, "out of memory");
    }
    memcpy(*latents, z->f32, z->count * sizeof **latents);
    return 0;
}

/* ---- answers ---------------------------------------------------------------------- */

static json_t *shape_json(int ndim, const int64_t *shape)
{
    json_t *a = json_array();
    for (int d = 0; d < ndim && a; d++)
        json_array_append_new(a, json_integer(shape[d]));
    return a;
}

static size_t output_count(const kserve_output *o)
{
    size_t n = 1;
    for (int d = 0; d < o->ndim; d++)
        n *= (size_t)o->shape[d];
    return n;
}

/* Is output o asked for, and how?  0 no, 1 as JSON data, 2 as binary. */
static int wanted(const kserve_request *r, const kserve_output *o)
{
    if (r->n_outputs == 0)
        return r->binary_default ? 2 : 1;
    for (int i = 0; i < r->n_outputs; i++)
        if (strcmp(r->outputs[i].name, o->name) == 0)
            return r->outputs[i].binary ? 2 : 1;
    return 0;
}

int kserve_check_outputs(const kserve_request *r, const char *model, const char *const *names,
                         int n, proto_error *err)
{
    for (int i = 0; i < r->n_outputs; i++) {
        bool known = false;
        for (int j = 0; j < n; j++)
            known = known || strcmp(r->outputs[i].name, names[j]) == 0;
        if (!known)
            return proto_perr(err, 400, "model %s has no output '%s'; GET /v2/models/%s lists "
                                        "its outputs", model, r->outputs[i].name, model);
    }
    return 0;
}

bool kserve_output_in_json(const kserve_request *r, const char *name)
{
    kserve_output o = {.name = name};
    return wanted(r, &o) == 1;
}

int kserve_format_infer(const char *model, const kserve_request *r, const kserve_output *outs,
                        int n_outs, char **body, size_t *body_len, size_t *json_len,
                        proto_error *err)
{
    *body = NULL;
    const char *names[KSERVE_MAX_OUTPUTS];
    for (int j = 0; j < n_outs && j < KSERVE_MAX_OUTPUTS; j++)
        names[j] = outs[j].name;
    int st = kserve_check_outputs(r, model, names,
                                  n_outs < KSERVE_MAX_OUTPUTS ? n_outs : KSERVE_MAX_OUTPUTS, err);
    if (st != 0)
        return st;
    json_t *root = json_object(), *list = json_array();
    if (root == NULL || list == NULL) {
        json_decref(root);
        json_decref(list);
        return proto_perr(err, 500, "out of memory");
    }
    proto_set(root, "model_name", proto_jstr(model));
    proto_set(root, "model_version", json_string("1"));
    if (r->id != NULL)
        proto_set(root, "id", proto_jstr(r->id));
    size_t binary = 0;
    for (int j = 0; j < n_outs; j++) {
        const kserve_output *o = &outs[j];
        int how = wanted(r, o);
        if (how == 0)
            continue;
        size_t count = output_count(o);
        json_t *t = json_object();
        proto_set(t, "name", json_string(o->name));
        proto_set(t, "datatype", json_string(kserve_dtype_name(o->dtype)));
        proto_set(t, "shape", shape_json(o->ndim, o->shape));
        if (how == 2) {
            json_t *p = json_object();
            proto_set(p, "binary_data_size", json_integer((json_int_t)(count * DTYPE_SIZE[o->dtype])));
            proto_set(t, "parameters", p);
            binary += count * DTYPE_SIZE[o->dtype];
        } else {
            json_t *data = json_array();
            for (size_t k = 0; k < count && data; k++) {
                if (o->dtype == KSERVE_FP32 && !isfinite(o->f32[k])) {
                    json_decref(data);
                    json_decref(t);
                    json_decref(list);
                    json_decref(root);
                    return proto_perr(err, 500,
                                      "output '%s' holds a value JSON cannot carry (NaN or "
                                      "infinity, element %zu); ask for it as binary data",
                                      o->name, k);
                }
                if (json_array_append_new(data, o->dtype == KSERVE_FP32
                                                    ? json_real((double)o->f32[k])
                                                    : json_integer((json_int_t)o->i64[k])) != 0) {
                    json_decref(data);
                    data = NULL;
                }
            }
            if (data == NULL) {
                json_decref(t);
                json_decref(list);
                json_decref(root);
                return proto_perr(err, 500, "out of memory formatting the answer");
            }
            proto_set(t, "data", data);
        }
        json_array_append_new(list, t);
    }
    proto_set(root, "outputs", list);
    char *json = json_dumps(root, KSERVE_JSON_FLAGS);
    json_decref(root);
    if (json == NULL)
        return proto_perr(err, 500, "out of memory formatting the answer");
    *json_len = strlen(json);
    *body_len = *json_len + binary;
    char *all = binary ? realloc(json, *body_len + 1) : json;
    if (all == NULL) {
        free(json);
        return proto_perr(err, 500, "out of memory formatting the answer");
    }
    uint8_t *p = (uint8_t *)all + *json_len;
    for (int j = 0; j < n_outs && binary; j++) {
        const kserve_output *o = &outs[j];
        if (wanted(r, o) != 2)
            continue;
        size_t count = output_count(o), elem = DTYPE_SIZE[o->dtype];
        for (size_t k = 0; k < count; k++) {
            uint64_t raw;
            if (o->dtype == KSERVE_FP32) {
                uint32_t bits;
                memcpy(&bits, &o->f32[k], sizeof bits);
                raw = bits;
            } else {
                raw = (uint64_t)o->i64[k];
            }
            for (size_t b = 0; b < elem; b++)
                *p++ = (uint8_t)(raw >> (8 * b));
        }
    }
    *body = all;
    return 0;
}

/* ---- metadata ------------------------------------------------------------------------ */

static kserve_io io(const char *name, kserve_dtype t, int ndim, int64_t a, int64_t b, int64_t c,
                    int64_t d)
{
    return (kserve_io){name, t, ndim, {a, b, c, d}};
}

void kserve_describe(const proto_model_info *m, kserve_model_io *out)
{
    memset(out, 0, sizeof *out);
    if (strcmp(m->kind, "bert") == 0) {
        out->platform = "modeld_bert";
        out->in[0] = io("input_ids", KSERVE_INT64, 2, -1, -1, 0, 0);
        out->in[1] = io("attention_mask", KSERVE_INT64, 2, -1, -1, 0, 0);
        out->in[2] = io("token_type_ids", KSERVE_INT64, 2, -1, -1, 0, 0);
        out->n_in = 3;
        out->out[0] = io("logits", KSERVE_FP32, 2, -1, m->vocab_size, 0, 0);
        out->out[1] = io("mask_positions", KSERVE_INT64, 2, -1, 2, 0, 0);
        out->n_out = 2;
    } else if (strcmp(m->kind, "gan") == 0) {
        out->platform = "modeld_gan";
        out->in[0] = io("latent", KSERVE_FP32, 2, -1, m->latent_dim, 0, 0);
        out->n_in = 1;
        if (m->classes > 0)
            out->in[out->n_in++] = io("class", KSERVE_INT64, 1, -1, 0, 0, 0);
        out->out[0] = io("images", KSERVE_FP32, 4, -1, m->channels, m->height, m->width);
        out->n_out = 1;
    } else {
        out->platform = "modeld_cnn";
        out->in[0] = io("input", KSERVE_FP32, 4, -1, m->channels, m->height, m->width);
        out->n_in = 1;
        out->out[0] = io("logits", KSERVE_FP32, 2, -1, m->classes, 0, 0);
        out->out[1] = io("probabilities", KSERVE_FP32, 2, -1, m->classes, 0, 0);
        out->n_out = 2;
    }
}

static json_t *io_list(const kserve_io *l, int n, bool triton)
{
    json_t *a = json_array();
    for (int i = 0; i < n && a; i++) {
        json_t *t = json_object();
        proto_set(t, "name", json_string(l[i].name));
        if (triton) {
            /* Triton's model config names the type TYPE_<dtype> and leaves the batch
             * dimension out of dims (max_batch_size implies it). */
            char type[32];
            snprintf(type, sizeof type, "TYPE_%s", kserve_dtype_name(l[i].dtype));
            proto_set(t, "data_type", json_string(type));
            if (l[i].ndim > 1) {
                proto_set(t, "dims", shape_json(l[i].ndim - 1, l[i].shape + 1));
            } else { /* one value per row: Triton writes dims [1], reshaped to a scalar */
                static const int64_t one[] = {1};
                proto_set(t, "dims", shape_json(1, one));
                json_t *reshape = json_object();
                proto_set(reshape, "shape", json_array());
                proto_set(t, "reshape", reshape);
            }
        } else {
            proto_set(t, "datatype", json_string(kserve_dtype_name(l[i].dtype)));
            proto_set(t, "shape", shape_json(l[i].ndim, l[i].shape));
        }
        json_array_append_new(a, t);
    }
    return a;
}

char *kserve_format_server(const char *version)
{
    json_t *root = json_object();
    proto_set(root, "name", json_string("modeld"));
    proto_set(root, "version", proto_jstr(version));
    json_t *ext = json_array();
    json_array_append_new(ext, json_string("binary_tensor_data"));
    proto_set(root, "extensions", ext);
    return proto_dump(root);
}

char *kserve_format_metadata(const char *name, const kserve_model_io *m)
{
    json_t *root = json_object();
    proto_set(root, "name", proto_jstr(name));
    json_t *versions = json_array();
    json_array_append_new(versions, json_string("1"));
    proto_set(root, "versions", versions);
    proto_set(root, "platform", json_string(m->platform));
    proto_set(root, "inputs", io_list(m->in, m->n_in, false));
    proto_set(root, "outputs", io_list(m->out, m->n_out, false));
    return proto_dump(root);
}

char *kserve_format_config(const char *name, const kserve_model_io *m, int max_batch,
                           long long max_queue_delay_us)
{
    json_t *root = json_object();
    proto_set(root, "name", proto_jstr(name));
    proto_set(root, "platform", json_string(m->platform));
    proto_set(root, "max_batch_size", json_integer(max_batch));
    json_t *dyn = json_object(), *pref = json_array();
    json_array_append_new(pref, json_integer(max_batch));
    proto_set(dyn, "preferred_batch_size", pref);
    proto_set(dyn, "max_queue_delay_microseconds", json_integer(max_queue_delay_us));
    proto_set(root, "dynamic_batching", dyn);
    proto_set(root, "input", io_list(m->in, m->n_in, true));
    proto_set(root, "output", io_list(m->out, m->n_out, true));
    return proto_dump(root);
}

char *kserve_format_ready(const char *name, bool ready)
{
    json_t *root = json_object();
    proto_set(root, "name", proto_jstr(name));
    proto_set(root, "ready", json_boolean(ready));
    return proto_dump(root);
}
