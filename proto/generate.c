/* generate.c — the GAN route's JSON: a generate request into latent vectors (and
 * classes) the engine can run, the generator's output back into PNGs.
 *
 * The latents are made here, on the HTTP thread, from the request's seeds with the
 * sampler engine/latent.h specifies, so what is queued is plain numbers and a batch
 * of requests stacks into one forward pass.  Validation follows proto.h's rule: a
 * request that parses is safe to queue.
 */
#include <config.h>

#include "proto/proto.h"
#include "proto/proto_internal.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/latent.h"

/* Grid padding in pixels, as torchvision's make_grid. */
#define GENERATE_GRID_PAD 2

static const char *const generate_fields[] = {"count", "seed", "class", "latent", "interpolate",
                                              "grid"};
static const char *const interpolate_fields[] = {"from_seed", "to_seed", "steps"};

/* A JSON integer >= 0 or a string of decimal digits: the whole uint64 range, which
 * a JSON integer (int64 in jansson) cannot carry past 2^63 - 1. */
static int parse_seed(const json_t *v, const char *what, uint64_t *out, proto_error *err)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        bool digits = n > 0 && n <= 20;
        for (size_t i = 0; digits && i < n; i++)
            digits = s[i] >= '0' && s[i] <= '9';
        if (digits) {
            errno = 0;
            char *end;
            unsigned long long x = strtoull(s, &end, 10);
            if (errno == 0 && *end == '\0') {
                *out = (uint64_t)x;
                return 0;
            }
        }
    }
    return proto_perr(err, 400, "%s must be an unsigned 64-bit integer (a JSON integer from 0, "
                      "or a string of decimal digits up to 18446744073709551615); got %s", what,
                      proto_type_name(v));
}

static int parse_count(const json_t *v, const char *what, int min, int max, proto_error *err)
{
    if (!json_is_integer(v))
        return -proto_perr(err, 400, "%s must be an integer; got %s", what, proto_type_name(v));
    json_int_t n = json_integer_value(v);
    if (n < min)
        return -proto_perr(err, 422, "%s must be at least %d; got %lld", what, min, (long long)n);
    if (n > max)
        return -proto_perr(err, 413, "%s of %lld is over this server's limit of %d images per "
                           "request", what, (long long)n, max);
    return (int)n;
}

/* "class": a label of the model's (exact) or an index. */
static int parse_class(const json_t *v, const proto_gan_model *gm, int32_t *out, proto_error *err)
{
    if (gm->num_classes == 0)
        return proto_perr(err, 422, "model '%s' is unconditional: it takes no \"class\"", gm->name);
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || i >= gm->num_classes)
            return proto_perr(err, 422, "class %lld is outside 0..%d", (long long)i,
                              gm->num_classes - 1);
        *out = (int32_t)i;
        return 0;
    }
    if (!json_is_string(v))
        return proto_perr(err, 400, "\"class\" must be a label (string) or an index (integer); "
                          "got %s", proto_type_name(v));
    const char *s = json_string_value(v);
    for (int i = 0; i < gm->num_classes; i++)
        if (gm->labels && strcmp(gm->labels[i], s) == 0) {
            *out = i;
            return 0;
        }
    char list[256] = "";
    size_t n = 0;
    for (int i = 0; gm->labels && i < gm->num_classes && n < sizeof list; i++) {
        int w = snprintf(list + n, sizeof list - n, "%s\"%s\"", i ? ", " : "", gm->labels[i]);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    return proto_perr(err, 422, "unknown class \"%.64s\"; model '%s' has %s%s", s, gm->name,
                      list, n >= sizeof list ? "..." : "");
}

/* "latent": one vector of latent_dim numbers, or an array of them. */
static int parse_latents(const json_t *v, const proto_gan_model *gm, proto_generate_req *out,
                         proto_error *err)
{
    if (!json_is_array(v))
        return proto_perr(err, 400, "\"latent\" must be an array of %d numbers, or an array of "
                          "such arrays; got %s", gm->latent_dim, proto_type_name(v));
    const bool one = json_array_size(v) > 0 && json_is_number(json_array_get(v, 0));
    const size_t n = one ? 1 : json_array_size(v);
    if (n == 0)
        return proto_perr(err, 422, "\"latent\" is empty: give at least one vector");
    if (n > (size_t)gm->max_count)
        return proto_perr(err, 413, "%zu latent vectors are over this server's limit of %d "
                          "images per request", n, gm->max_count);
    out->n = (int)n;
    out->latents = malloc(n * (size_t)gm->latent_dim * sizeof(float));
    if (out->latents == NULL)
        return proto_perr(err, 500, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const json_t *vec = one ? v : json_array_get(v, i);
        if (!json_is_array(vec))
            return proto_perr(err, 400, "latent[%zu] must be an array of %d numbers; got %s", i,
                              gm->latent_dim, proto_type_name(vec));
        if (json_array_size(vec) != (size_t)gm->latent_dim)
            return proto_perr(err, 422, "latent vector %zu has %zu values; model '%s' takes %d",
                              i, json_array_size(vec), gm->name, gm->latent_dim);
        for (int j = 0; j < gm->latent_dim; j++) {
            const json_t *x = json_array_get(vec, (size_t)j);
            if (!json_is_number(x))
                return proto_perr(err, 400, "latent value %d of vector %zu must be a number; "
                                  "got %s", j, i, proto_type_name(x));
            const double d = json_number_value(x);
            if (!(fabs(d) <= 1e6))
                return proto_perr(err, 422, "latent value %d of vector %zu is %g: outside "
                                  "-1e6..1e6", j, i, d);
            out->latents[i * (size_t)gm->latent_dim + (size_t)j] = (float)d;
        }
    }
    return 0;
}

static int parse_interpolate(const json_t *v, const proto_gan_model *gm,
                             proto_generate_req *out, proto_error *err)
{
    if (!json_is_object(v))
        return proto_perr(err, 400, "\"interpolate\" must be an object {\"from_seed\", "
                          "\"to_seed\", \"steps\"}; got %s", proto_type_name(v));
    int st = proto_check_fields(v, interpolate_fields, 3, " in \"interpolate\"", err);
    if (st)
        return st;
    const json_t *from = json_object_get(v, "from_seed"), *to = json_object_get(v, "to_seed");
    const json_t *steps = json_object_get(v, "steps");
    if (!from || !to || !steps)
        return proto_perr(err, 400, "\"interpolate\" needs from_seed, to_seed and steps");
    uint64_t a, b;
    if ((st = parse_seed(from, "interpolate.from_seed", &a, err)) ||
        (st = parse_seed(to, "interpolate.to_seed", &b, err)))
        return st;
    const int n = parse_count(steps, "interpolate.steps", 2, gm->max_count, err);
    if (n < 0)
        return -n;
    const size_t d = (size_t)gm->latent_dim;
    out->n = n;
    out->latents = malloc((size_t)n * d * sizeof(float));
    out->t = malloc((size_t)n * sizeof(float));
    float *za = malloc(2 * d * sizeof(float));
    if (!out->latents || !out->t || !za) {
        free(za);
        return proto_perr(err, 500, "out of memory");
    }
    latent_from_seed(a, za, gm->latent_dim);
    latent_from_seed(b, za + d, gm->latent_dim);
    for (int i = 0; i < n; i++) {
        out->t[i] = (float)i / (float)(n - 1);
        latent_lerp(za, za + d, out->t[i], out->latents + (size_t)i * d, gm->latent_dim);
    }
    free(za);
    return 0;
}

static int parse_seeded(const json_t *root, const proto_gan_model *gm, uint64_t random_seed,
                        proto_generate_req *out, proto_error *err)
{
    const json_t *count = json_object_get(root, "count"), *seed = json_object_get(root, "seed");
    int n = 1;
    if (count && (n = parse_count(count, "count", 1, gm->max_count, err)) < 0)
        return -n;
    uint64_t s = random_seed;
    int st;
    if (seed && (st = parse_seed(seed, "seed", &s, err)))
        return st;
    const size_t d = (size_t)gm->latent_dim;
    out->n = n;
    out->latents = malloc((size_t)n * d * sizeof(float));
    out->seeds = malloc((size_t)n * sizeof(uint64_t));
    if (!out->latents || !out->seeds)
        return proto_perr(err, 500, "out of memory");
    for (int i = 0; i < n; i++) {
        out->seeds[i] = s + (uint64_t)i; /* wraps past 2^64 - 1, as documented */
        latent_from_seed(out->seeds[i], out->latents + (size_t)i * d, gm->latent_dim);
    }
    return 0;
}

int proto_parse_generate(const char *body, size_t len, const proto_gan_model *gm,
                         uint64_t random_seed, proto_generate_req *out, proto_error *err)
{
    memset(out, 0, sizeof *out);
    json_t *root = proto_load_body(body, len, "{\"count\": 4, \"seed\": 42}", err);
    if (root == NULL)
        return err->status;
    int st = 0;
    if (!json_is_object(root)) {
        st = proto_perr(err, 400, "body must be a JSON object such as {\"count\": 4, \"seed\": "
                        "42}; got %s", proto_type_name(root));
        goto done;
    }
    if ((st = proto_check_fields(root, generate_fields,
                                 sizeof generate_fields / sizeof generate_fields[0], "", err)))
        goto done;

    const json_t *latent = json_object_get(root, "latent");
    const json_t *interp = json_object_get(root, "interpolate");
    const bool seeded = json_object_get(root, "seed") || json_object_get(root, "count");
    if ((latent != NULL) + (interp != NULL) + seeded > 1) {
        st = proto_perr(err, 400, "give one of \"seed\"/\"count\", \"latent\" or "
                        "\"interpolate\": each says on its own which images to make");
        goto done;
    }
    const json_t *grid = json_object_get(root, "grid");
    if (grid && !json_is_boolean(grid)) {
        st = proto_perr(err, 400, "\"grid\" must be true or false; got %s",
                        proto_type_name(grid));
        goto done;
    }
    out->grid = grid && json_is_true(grid);

    const json_t *cls = json_object_get(root, "class");
    int32_t the_class = -1;
    if (cls && (st = parse_class(cls, gm, &the_class, err)))
        goto done;

    st = latent ? parse_latents(latent, gm, out, err)
       : interp ? parse_interpolate(interp, gm, out, err)
                : parse_seeded(root, gm, random_seed, out, err);
    if (st)
        goto done;

    if (gm->num_classes > 0) {
        /* no class asked: a tour of the classes, image i drawing class i mod K */
        out->classes = malloc((size_t)out->n * sizeof(int32_t));
        if (out->classes == NULL) {
            st = proto_perr(err, 500, "out of memory");
            goto done;
        }
        for (int i = 0; i < out->n; i++)
            out->classes[i] = the_class >= 0 ? the_class : i % gm->num_classes;
    }
done:
    json_decref(root);
    if (st)
        proto_generate_req_free(out);
    return st;
}

void proto_generate_req_free(proto_generate_req *req)
{
    free(req->latents);
    free(req->classes);
    free(req->seeds);
    free(req->t);
    memset(req, 0, sizeof *req);
}

/* ---- answers ------------------------------------------------------------------- */

/* Seeds past 2^63 - 1 do not fit a JSON integer here: they go out as strings, the
 * form the request accepts for them too. */
static json_t *seed_json(uint64_t s)
{
    if (s <= (uint64_t)INT64_MAX)
        return json_integer((json_int_t)s);
    char buf[24];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)s);
    return json_string(buf);
}

static int grid_per_row(int n)
{
    int r = 1;
    while (r * r < n)
        r++;
    return r;
}

/* All images as 8-bit pixels (n, H, W, C), then either each one's PNG or the grid's. */
static uint8_t *to_pixels(const proto_gan_model *gm, const proto_generate_req *req,
                          const float *images)
{
    const size_t px = (size_t)gm->channels * gm->height * gm->width;
    uint8_t *out = malloc((size_t)req->n * px);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < req->n; i++)
        image_from_tensor(images + (size_t)i * px, gm->channels, gm->height, gm->width,
                          gm->range, out + (size_t)i * px);
    return out;
}

static int encode(const uint8_t *pixels, int h, int w, int c, uint8_t **png, size_t *len,
                  proto_error *err)
{
    engine_err e;
    if (image_encode_png(pixels, h, w, c, png, len, &e) != ENGINE_OK)
        return proto_perr(err, 500, "PNG: %s", e.msg);
    return 0;
}

static int grid_png(const proto_gan_model *gm, const proto_generate_req *req,
                    const uint8_t *pixels, uint8_t **png, size_t *len, proto_error *err)
{
    const int per_row = grid_per_row(req->n);
    int gh, gw;
    image_grid_size(req->n, gm->height, gm->width, per_row, GENERATE_GRID_PAD, &gh, &gw);
    uint8_t *grid = malloc((size_t)gh * gw * gm->channels);
    if (grid == NULL)
        return proto_perr(err, 500, "out of memory");
    image_grid(pixels, req->n, gm->height, gm->width, gm->channels, per_row, GENERATE_GRID_PAD,
               grid);
    int st = encode(grid, gh, gw, gm->channels, png, len, err);
    free(grid);
    return st;
}

static json_t *b64_json(const uint8_t *png, size_t len)
{
    char *b = proto_base64_encode(png, len);
    json_t *j = b ? json_string(b) : NULL;
    free(b);
    return j;
}

char *proto_format_generate(const proto_gan_model *gm, const proto_generate_req *req,
                            const float *images, proto_error *err)
{
    uint8_t *pixels = to_pixels(gm, req, images);
    json_t *root = json_object(), *list = json_array();
    bool ok = pixels && root && list && proto_set(root, "model", proto_jstr(gm->name));
    const size_t px = (size_t)gm->channels * gm->height * gm->width;
    for (int i = 0; ok && i < req->n; i++) {
        json_t *img = json_object();
        ok = img != NULL;
        if (ok && req->seeds)
            ok = proto_set(img, "seed", seed_json(req->seeds[i]));
        else if (ok && req->t)
            ok = proto_set(img, "t", json_real(req->t[i]));
        else if (ok)
            ok = proto_set(img, "index", json_integer(i));
        if (ok && req->classes)
            ok = proto_set(img, "class", proto_jstr(gm->labels ? gm->labels[req->classes[i]]
                                                             : "")) &&
                 proto_set(img, "class_index", json_integer(req->classes[i]));
        if (ok && !req->grid) {
            uint8_t *png;
            size_t len;
            ok = encode(pixels + (size_t)i * px, gm->height, gm->width, gm->channels, &png, &len,
                        err) == 0;
            if (ok) {
                ok = proto_set(img, "png", b64_json(png, len));
                free(png);
            }
        }
        ok = json_array_append_new(list, img) == 0 && ok;
    }
    if (ok && req->grid) {
        uint8_t *png;
        size_t len;
        ok = grid_png(gm, req, pixels, &png, &len, err) == 0;
        if (ok) {
            ok = proto_set(root, "grid", b64_json(png, len));
            free(png);
        }
    }
    ok = ok && json_object_set(root, "images", list) == 0;
    json_decref(list);
    free(pixels);
    char *s = ok ? proto_dump(root) : (json_decref(root), NULL);
    if (s == NULL)
        proto_perr(err, 500, "out of memory formatting the response");
    return s;
}

int proto_generate_png(const proto_gan_model *gm, const proto_generate_req *req,
                       const float *images, uint8_t **png, size_t *png_len, proto_error *err)
{
    *png = NULL;
    *png_len = 0;
    if (req->n > 1 && !req->grid)
        return proto_perr(err, 422, "Accept: image/png answers with one PNG: ask for one image, "
                          "or for \"grid\": true");
    uint8_t *pixels = to_pixels(gm, req, images);
    if (pixels == NULL)
        return proto_perr(err, 500, "out of memory");
    int st = req->grid ? grid_png(gm, req, pixels, png, png_len, err)
                       : encode(pixels, gm->height, gm->width, gm->channels, png, png_len, err);
    free(pixels);
    return st;
}
