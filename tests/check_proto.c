/* check_proto.c — every way a classify, fill-mask or next-sentence body can be
 * wrong, base64 edge cases, and the shape of every response body.  The BERT cases
 * use a 26-token vocabulary written at setup, so token ids are known by name.
 *
 * The PNGs below were made with Python's zlib and struct (no image library):
 * G28 is 28x28 gray with pixel (x, y) = (9x + y) mod 256, G5 is 5x5 gray, RGB is
 * 3x2 RGB.  Decoding itself is engine/image.c's and tested in check_image.c;
 * here it only has to be reached, and its errors mapped to the right status.
 */
#include <config.h>

#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/latent.h"
#include "proto/proto.h"

#include <stb/stb_image.h>

static const char G28[] =
    "iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAABcUlEQVR42mNg4BSSVtE1s/cIjErOKa1rnzBz0eot"
    "e4+dv/Hw1WcGRi5hGVU9cwfPoOiU3LL6jomzFq/Zuu/4hZuPXn9hYOIWkVXTt3D0Co5JzStv6Jw0e8nabftPXLz1+M"
    "1XBmYeUTl1A0sn75DYtPyKxq7Jc5au237g5KXbT95+Y2DhFZPXMLRy9gmNSy+obOqeMnfZ+h0HT12+8/TddwZWPnEF"
    "TSNrF9+w+IzCquaeqfOWb9h56PSVu8/e/2Bg45dQ1DK2cfULT8gsqm7pnTZ/xcZdh89cvff8w08GdgFJJW0TWzf/iM"
    "Ss4prWvukLVm7afeTstfsvPv5i4BCUUtYxtXMPiEzKLqlt65+xcNXmPUfPXX/w8tNvfGHwhwFPGPxlwBMG/xjwhMF/"
    "BnxhwIAnDBgZ8IQBEwOeMGBmwBMGLAx4woCVAU8YsDHgCQN2BjxhwMGAJww4GfCEARcDnjDgZsATBjwMeMKAlwFPGP"
    "ABAHowiIClGOGTAAAAAElFTkSuQmCC";
static const char G5[] = "iVBORw0KGgoAAAANSUhEUgAAAAUAAAAFCAAAAACoBHk5AAAAEUlEQVR42mNgMEqZdoIBBwkA"
                         "iNYJxTU99bAAAAAASUVORK5CYII=";
static const char RGB[] = "iVBORw0KGgoAAAANSUhEUgAAAAMAAAACCAIAAAASFvFNAAAAHElEQVR42mPgEpHTMLJxC4hi"
                          "SMmraOqZtmDVFgAuXgavSbgKQQAAAABJRU5ErkJggg==";

static const image_preproc STRETCH = {
    .channels = 1, .height = 28, .width = 28, .resize = IMAGE_RESIZE_STRETCH,
    .mean = {0.0f}, .std = {1.0f, 1.0f, 1.0f}};
static const image_preproc EXACT = {
    .channels = 1, .height = 28, .width = 28, .resize = IMAGE_RESIZE_NONE,
    .mean = {0.0f}, .std = {1.0f, 1.0f, 1.0f}};

#define N_LABELS 10
#define MAX_IMAGES 4

#define ck_assert_contains(hay, needle)                                                    \
    ck_assert_msg(strstr((hay), (needle)) != NULL, "'%s' does not contain '%s'", (hay),    \
                  (needle))

/* Parses body against pp; returns the status and leaves the message in err. */
static int parse_pp(const char *body, const image_preproc *pp, proto_classify_req *req,
                    proto_error *err)
{
    memset(err, 0, sizeof *err);
    int st = proto_parse_classify(body, strlen(body), pp, N_LABELS, MAX_IMAGES, req, err);
    if (st != 0) {
        ck_assert_int_eq(st, err->status);
        ck_assert_ptr_null(req->inputs);
        ck_assert_msg(err->msg[0] != '\0', "no message for status %d", st);
    }
    return st;
}

/* Expects body to fail with status and a message containing expect. */
static void refuse(const char *body, const image_preproc *pp, int status, const char *expect)
{
    proto_classify_req req;
    proto_error err;
    int st = parse_pp(body, pp, &req, &err);
    ck_assert_msg(st == status, "%.200s: status %d, expected %d (%s)", body, st, status, err.msg);
    ck_assert_contains(err.msg, expect);
}

static proto_classify_req accept(const char *body, const image_preproc *pp)
{
    proto_classify_req req;
    proto_error err;
    int st = parse_pp(body, pp, &req, &err);
    ck_assert_msg(st == 0, "%.200s: refused with %d: %s", body, st, err.msg);
    ck_assert_ptr_nonnull(req.inputs);
    return req;
}

__attribute__((format(printf, 1, 2))) static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    ck_assert_int_ge(vasprintf(&s, f, ap), 0);
    va_end(ap);
    return s;
}

/* ---- base64 ------------------------------------------------------------------- */

static bool b64(const char *in, char *out, size_t *n, char *why)
{
    return proto_base64_decode(in, strlen(in), (uint8_t *)out, n, why, 160);
}

START_TEST(base64_rfc4648_vectors)
{
    static const char *const vec[][2] = {
        {"", ""},           {"Zg==", "f"},          {"Zm8=", "fo"},
        {"Zm9v", "foo"},    {"Zm9vYg==", "foob"},   {"Zm9vYmE=", "fooba"},
        {"Zm9vYmFy", "foobar"}, {"+/+/", "\xfb\xff\xbf"}};
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        char out[16], why[160];
        size_t n;
        ck_assert_msg(b64(vec[i][0], out, &n, why), "%s: %s", vec[i][0], why);
        ck_assert_uint_eq(n, strlen(vec[i][1]));
        ck_assert_mem_eq(out, vec[i][1], n);
        ck_assert_uint_ge(proto_base64_max(strlen(vec[i][0])), n);
        char *enc = proto_base64_encode((const uint8_t *)vec[i][1], strlen(vec[i][1]));
        ck_assert_str_eq(enc, vec[i][0]);
        free(enc);
    }
}
END_TEST

START_TEST(base64_refusals)
{
    static const char *const bad[][2] = {
        {"Zg=", "not a multiple of 4"},
        {"Zm9vY", "not a multiple of 4"},
        {"Zg==Zg==", "padding '=' at offset 2 before the end"},
        {"Z===", "padding '=' at offset 1"},
        {"====", "padding '=' at offset 0"},
        {"Zm=v", "data after padding at offset 3"},
        {"Zh==", "not canonical"},
        {"Zm9=", "not canonical"},
        {"Zm9\nZm9v", "whitespace (0x0a) at offset 3"},
        {"Zm9v Zm9", "whitespace (0x20) at offset 4"},
        {"Zm-v", "'-' at offset 2 is base64url"},
        {"Zm_v", "'_' at offset 2 is base64url"},
        {"Zm!v", "invalid character '!' at offset 2"},
        {"Zm\x80v", "invalid byte 0x80 at offset 2"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char out[16], why[160] = "";
        size_t n = 99;
        ck_assert_msg(!b64(bad[i][0], out, &n, why), "accepted %s", bad[i][0]);
        ck_assert_contains(why, bad[i][1]);
    }
    /* A NUL inside the counted length is a bad byte, not an early end. */
    char out[8];
    size_t n;
    ck_assert(!proto_base64_decode("Zm\0v", 4, (uint8_t *)out, &n, NULL, 0));
}
END_TEST

/* Every byte value and every tail length round-trips through a reference encoder. */
START_TEST(base64_round_trip)
{
    uint8_t data[300], back[300];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    for (size_t len = 0; len <= sizeof data; len++) {
        char *enc = proto_base64_encode(data, len);
        ck_assert_ptr_nonnull(enc);
        ck_assert_uint_eq(strlen(enc), (len + 2) / 3 * 4);
        size_t n;
        char why[160];
        ck_assert_msg(proto_base64_decode(enc, strlen(enc), back, &n, why, sizeof why),
                      "len %zu: %s", len, why);
        ck_assert_uint_eq(n, len);
        ck_assert_mem_eq(back, data, len);
        free(enc);
    }
}
END_TEST

/* ---- request shape -------------------------------------------------------------- */

START_TEST(bad_json)
{
    refuse("", &STRETCH, 400, "empty body");
    refuse("not json", &STRETCH, 400, "body is not valid JSON");
    refuse("{\"image\": ", &STRETCH, 400, "not valid JSON");
    refuse("{} trailing", &STRETCH, 400, "not valid JSON");
    refuse("{\"image\": \"a\", \"image\": \"b\"}", &STRETCH, 400, "duplicate");
    refuse("[1, 2]", &STRETCH, 400, "must be a JSON object");
    refuse("\"image\"", &STRETCH, 400, "must be a JSON object");
    refuse("null", &STRETCH, 400, "must be a JSON object");
    refuse("{\"image\": \"\xff\xfe\"}", &STRETCH, 400, "not valid JSON"); /* bad UTF-8 */
}
END_TEST

START_TEST(deep_nesting_is_refused_not_a_crash)
{
    size_t depth = 100000;
    char *body = malloc(2 * depth + 32);
    size_t o = (size_t)sprintf(body, "{\"pixels\": ");
    for (size_t i = 0; i < depth; i++)
        body[o++] = '[';
    for (size_t i = 0; i < depth; i++)
        body[o++] = ']';
    strcpy(body + o, "}");
    refuse(body, &STRETCH, 400, "not valid JSON");
    free(body);
}
END_TEST

START_TEST(fields)
{
    refuse("{}", &STRETCH, 400, "give exactly one of");
    refuse("{\"top_k\": 3}", &STRETCH, 400, "give exactly one of");
    char *b = fmt("{\"image\": \"%s\", \"pixels\": [[1]]}", G28);
    refuse(b, &STRETCH, 400, "give exactly one of");
    free(b);
    b = fmt("{\"image\": \"%s\", \"images\": [\"%s\"]}", G28, G28);
    refuse(b, &STRETCH, 400, "give exactly one of");
    free(b);
    b = fmt("{\"image\": \"%s\", \"colour\": true}", G28);
    refuse(b, &STRETCH, 400, "unknown field \"colour\"");
    free(b);
    b = fmt("{\"Image\": \"%s\"}", G28);
    refuse(b, &STRETCH, 400, "unknown field \"Image\"; allowed: image, images, pixels, top_k");
    free(b);
}
END_TEST

START_TEST(wrong_types)
{
    refuse("{\"image\": 5}", &STRETCH, 400, "image must be a base64 string, got an integer");
    refuse("{\"image\": null}", &STRETCH, 400, "got null");
    refuse("{\"image\": [\"abc\"]}", &STRETCH, 400, "got an array");
    refuse("{\"images\": \"abc\"}", &STRETCH, 400, "images must be an array of base64 strings");
    refuse("{\"images\": {}}", &STRETCH, 400, "got an object");
    refuse("{\"images\": []}", &STRETCH, 400, "images is empty");
    char *b = fmt("{\"images\": [\"%s\", 7]}", G28);
    refuse(b, &STRETCH, 400, "images[1] must be a base64 string, got an integer");
    free(b);
    refuse("{\"pixels\": \"abc\"}", &STRETCH, 400, "pixels must be an array");
    refuse("{\"pixels\": {\"a\": 1}}", &STRETCH, 400, "pixels must be an array");
}
END_TEST

START_TEST(top_k_bounds)
{
    static const struct {
        const char *value, *expect;
    } bad[] = {
        {"0", "top_k must be a positive integer, got 0"},
        {"-2", "got -2"},
        {"1.5", "got a number with a fraction"},
        {"3.0", "got a number with a fraction"},
        {"\"3\"", "got a string"},
        {"true", "got a boolean"},
        {"null", "got null"},
        {"[3]", "got an array"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *b = fmt("{\"image\": \"%s\", \"top_k\": %s}", G28, bad[i].value);
        refuse(b, &STRETCH, 400, bad[i].expect);
        free(b);
    }
    static const struct {
        const char *value;
        int top_k;
    } ok[] = {{"1", 1}, {"3", 3}, {"10", 10}, {"11", 10}, {"1000000000000000000", 10}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char *b = fmt("{\"top_k\": %s, \"image\": \"%s\"}", ok[i].value, G28);
        proto_classify_req req = accept(b, &STRETCH);
        ck_assert_int_eq(req.top_k, ok[i].top_k);
        proto_classify_req_free(&req);
        free(b);
    }
    char *b = fmt("{\"image\": \"%s\"}", G28);
    proto_classify_req req = accept(b, &STRETCH);
    ck_assert_int_eq(req.top_k, PROTO_DEFAULT_TOP_K);
    proto_classify_req_free(&req);
    free(b);
    /* With fewer labels than the default, the default is capped too. */
    b = fmt("{\"image\": \"%s\"}", G28);
    proto_error err;
    ck_assert_int_eq(proto_parse_classify(b, strlen(b), &STRETCH, 3, 4, &req, &err), 0);
    ck_assert_int_eq(req.top_k, 3);
    proto_classify_req_free(&req);
    free(b);
}
END_TEST

/* ---- images --------------------------------------------------------------------- */

START_TEST(one_image)
{
    char *b = fmt("{\"image\": \"%s\"}", G28);
    proto_classify_req req = accept(b, &EXACT);
    ck_assert_int_eq(req.form, PROTO_FORM_IMAGE);
    ck_assert_int_eq(req.n, 1);
    for (int y = 0; y < 28; y += 9)
        for (int x = 0; x < 28; x += 5)
            ck_assert_float_eq_tol(req.inputs[y * 28 + x], (float)((9 * x + y) % 256) / 255.0f,
                                   1e-6f);
    proto_classify_req_free(&req);
    free(b);
}
END_TEST

START_TEST(data_url)
{
    char *b = fmt("{\"image\": \"data:image/png;base64,%s\"}", G28);
    proto_classify_req req = accept(b, &EXACT);
    ck_assert_float_eq_tol(req.inputs[1], 9.0f / 255.0f, 1e-6f);
    proto_classify_req_free(&req);
    free(b);
    refuse("{\"image\": \"data:image/png,abcd\"}", &STRETCH, 415, "data URL is not base64");
    refuse("{\"image\": \"data:image/png;base64\"}", &STRETCH, 415, "data URL without ','");
    refuse("{\"image\": \"data:image/png;base64,\"}", &STRETCH, 415, "image is empty");
}
END_TEST

START_TEST(several_images)
{
    char *b = fmt("{\"images\": [\"%s\", \"%s\", \"data:image/png;base64,%s\"], \"top_k\": 2}",
                  G28, RGB, G5);
    proto_classify_req req = accept(b, &STRETCH);
    ck_assert_int_eq(req.form, PROTO_FORM_IMAGES);
    ck_assert_int_eq(req.n, 3);
    ck_assert_int_eq(req.top_k, 2);
    /* The first image's slot holds the first image. */
    ck_assert_float_eq_tol(req.inputs[28 + 1], 10.0f / 255.0f, 1e-6f);
    proto_classify_req_free(&req);
    free(b);
}
END_TEST

START_TEST(too_many_images)
{
    char *b = fmt("{\"images\": [\"%s\", \"%s\", \"%s\", \"%s\", \"%s\"]}", G5, G5, G5, G5, G5);
    refuse(b, &STRETCH, 413, "too many images: 5; this server takes at most 4");
    free(b);
    /* Counted before anything is decoded: junk past the limit still gets 413. */
    refuse("{\"images\": [\"x\", \"x\", \"x\", \"x\", \"x\"]}", &STRETCH, 413, "too many images");
}
END_TEST

START_TEST(undecodable_images)
{
    refuse("{\"image\": \"\"}", &STRETCH, 415, "image is empty");
    refuse("{\"image\": \"!!!!\"}", &STRETCH, 415, "image is not valid base64: invalid character");
    refuse("{\"image\": \"aGVsbG8gd29ybGQ=\"}", &STRETCH, 415,
           "image could not be decoded as PNG or JPEG");
    /* A PNG cut short. */
    char *b = fmt("{\"image\": \"%.100s\"}", G28);
    refuse(b, &STRETCH, 415, "could not be decoded");
    free(b);
    b = fmt("{\"images\": [\"%s\", \"Zm9v\"]}", G28);
    refuse(b, &STRETCH, 415, "images[1] could not be decoded");
    free(b);
    b = fmt("{\"images\": [\"%s\", \"Zm9v\\n\"]}", G28);
    refuse(b, &STRETCH, 415, "images[1] is not valid base64");
    free(b);
}
END_TEST

START_TEST(wrong_size_image)
{
    char *b = fmt("{\"image\": \"%s\"}", G5);
    refuse(b, &EXACT, 422, "5x5");
    proto_classify_req req = accept(b, &STRETCH); /* stretched instead */
    proto_classify_req_free(&req);
    free(b);
}
END_TEST

/* ---- pixels ------------------------------------------------------------------- */

/* A [h][w] (c == 0) or [h][w][c] pixels body, every value v. */
static char *pixels_body(int h, int w, int c, const char *v)
{
    size_t cap = (size_t)h * (size_t)w * ((size_t)(c ? c : 1) * (strlen(v) + 2) + 4) + 64;
    char *s = malloc(cap), *p = s;
    p += sprintf(p, "{\"pixels\": [");
    for (int y = 0; y < h; y++) {
        p += sprintf(p, "%s[", y ? "," : "");
        for (int x = 0; x < w; x++) {
            if (c == 0) {
                p += sprintf(p, "%s%s", x ? "," : "", v);
                continue;
            }
            p += sprintf(p, "%s[", x ? "," : "");
            for (int k = 0; k < c; k++)
                p += sprintf(p, "%s%s", k ? "," : "", v);
            p += sprintf(p, "]");
        }
        p += sprintf(p, "]");
    }
    sprintf(p, "]}");
    return s;
}

START_TEST(pixels_ok)
{
    char *b = pixels_body(28, 28, 0, "255");
    proto_classify_req req = accept(b, &EXACT);
    ck_assert_int_eq(req.form, PROTO_FORM_PIXELS);
    ck_assert_int_eq(req.n, 1);
    for (int i = 0; i < 28 * 28; i++)
        ck_assert_float_eq(req.inputs[i], 1.0f);
    proto_classify_req_free(&req);
    free(b);
    for (int c = 1; c <= 4; c++) {
        if (c == 2)
            continue;
        b = pixels_body(28, 28, c, "0");
        req = accept(b, &EXACT);
        ck_assert_float_eq(req.inputs[0], 0.0f);
        proto_classify_req_free(&req);
        free(b);
    }
    req = accept("{\"pixels\": [[0, 255], [17, 3]]}", &STRETCH);
    proto_classify_req_free(&req);
}
END_TEST

START_TEST(pixels_wrong_shape)
{
    static const struct {
        const char *body, *expect;
    } cases[] = {
        {"{\"pixels\": []}", "pixels is empty"},
        {"{\"pixels\": [[]]}", "pixels[0] is empty"},
        {"{\"pixels\": [1, 2, 3]}", "pixels[0] is an integer, not a row"},
        {"{\"pixels\": [[1, 2], [3]]}", "pixels[1] has 1 columns but pixels[0] has 2"},
        {"{\"pixels\": [[1, 2], 5]}", "pixels[1] is an integer"},
        {"{\"pixels\": [[1, [2]]]}", "pixels[0][1] is an array but pixels[0][0] is a number"},
        {"{\"pixels\": [[[1], 2]]}", "pixels[0][1] must be an array of 1 channel values"},
        {"{\"pixels\": [[[1, 2]]]}", "pixels[0][0] has 2 channels; use 1 (gray), 3 (RGB) or 4"},
        {"{\"pixels\": [[[1, 2, 3, 4, 5]]]}", "has 5 channels"},
        {"{\"pixels\": [[[]]]}", "has 0 channels"},
        {"{\"pixels\": [[[1, 2, 3], [4, 5]]]}", "pixels[0][1] must be an array of 3"},
        {"{\"pixels\": [[[[1]]]]}", "pixels[0][0][0] must be an integer 0..255, got an array"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int want = strstr(cases[i].expect, "must be an integer") ? 400 : 422;
        refuse(cases[i].body, &STRETCH, want, cases[i].expect);
    }
    /* Right form, wrong size for a model that does not resize. */
    char *b = pixels_body(27, 28, 0, "1");
    refuse(b, &EXACT, 422, "pixels: ");
    free(b);
}
END_TEST

START_TEST(pixels_wrong_values)
{
    refuse("{\"pixels\": [[0, 256]]}", &STRETCH, 422,
           "pixels[0][1] = 256 is out of range: pixel values are integers 0..255");
    refuse("{\"pixels\": [[-1]]}", &STRETCH, 422, "pixels[0][0] = -1 is out of range");
    refuse("{\"pixels\": [[0], [99999999999999]]}", &STRETCH, 422, "pixels[1][0] = 99999999999999");
    refuse("{\"pixels\": [[0.5]]}", &STRETCH, 422, "pixels[0][0] = 0.5 is not an integer");
    refuse("{\"pixels\": [[1.0]]}", &STRETCH, 422, "is not an integer");
    refuse("{\"pixels\": [[[1, 2, 300]]]}", &STRETCH, 422, "pixels[0][0][2] = 300");
    refuse("{\"pixels\": [[\"7\"]]}", &STRETCH, 400,
           "pixels[0][0] must be an integer 0..255, got a string");
    refuse("{\"pixels\": [[null]]}", &STRETCH, 400, "got null");
    refuse("{\"pixels\": [[true]]}", &STRETCH, 400, "got a boolean");
    refuse("{\"pixels\": [[{}]]}", &STRETCH, 400, "got an object");
}
END_TEST

START_TEST(pixels_huge)
{
    /* 4097 rows: refused on the count, before any value is looked at. */
    char *b = pixels_body(4097, 1, 0, "0");
    refuse(b, &STRETCH, 422, "pixels has 4097 rows; at most 4096");
    free(b);
    b = pixels_body(1, 4097, 0, "0");
    refuse(b, &STRETCH, 422, "4097 columns; at most 4096");
    free(b);
    /* Big but allowed: a 1000 x 1000 gray image is accepted and resized. */
    b = pixels_body(1000, 1000, 0, "128");
    proto_classify_req req = accept(b, &STRETCH);
    ck_assert_float_eq_tol(req.inputs[0], 128.0f / 255.0f, 1e-6f);
    proto_classify_req_free(&req);
    free(b);
}
END_TEST

/* ---- responses -------------------------------------------------------------------- */

static json_t *load(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    ck_assert_msg(j != NULL, "invalid JSON produced: %s (%s)", s, e.text);
    return j;
}

static char *labels10[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                           "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

START_TEST(format_single)
{
    float probs[10] = {0.01f, 0.02f, 0.0f, 0.05f, 0.0f, 0.1f, 0.0f, 0.8f, 0.02f, 0.0f};
    proto_error err;
    char *s = proto_format_classify("fashion", PROTO_FORM_IMAGE, probs, 1, 10, 3, labels10, &err);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "{\"model\":\"fashion\",\"predictions\":["
                        "{\"label\":\"Sneaker\",\"index\":7,\"score\":0.8},"
                        "{\"label\":\"Sandal\",\"index\":5,\"score\":0.1},"
                        "{\"label\":\"Dress\",\"index\":3,\"score\":0.05}]}");
    free(s);
    /* Ties keep index order; top_k beyond the classes is capped. */
    s = proto_format_classify("m", PROTO_FORM_PIXELS, probs, 1, 10, 99, labels10, &err);
    json_t *j = load(s);
    json_t *preds = json_object_get(j, "predictions");
    ck_assert_uint_eq(json_array_size(preds), 10);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(preds, 3), "index")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(preds, 4), "index")), 8);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(preds, 6), "index")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(preds, 9), "index")), 9);
    double prev = 2.0;
    for (size_t i = 0; i < 10; i++) {
        double sc = json_real_value(json_object_get(json_array_get(preds, i), "score"));
        ck_assert(sc <= prev);
        prev = sc;
    }
    json_decref(j);
    free(s);
}
END_TEST

START_TEST(format_batch)
{
    float probs[2][3] = {{0.2f, 0.7f, 0.1f}, {NAN, 0.25f, 0.75f}};
    char *labels[] = {"a", "b\"quoted\"", "c"};
    proto_error err;
    char *s = proto_format_classify("m", PROTO_FORM_IMAGES, &probs[0][0], 2, 3, 2, labels, &err);
    json_t *j = load(s);
    ck_assert_str_eq(json_string_value(json_object_get(j, "model")), "m");
    json_t *results = json_object_get(j, "results");
    ck_assert_uint_eq(json_array_size(results), 2);
    json_t *p0 = json_object_get(json_array_get(results, 0), "predictions");
    ck_assert_uint_eq(json_array_size(p0), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(p0, 0), "label")),
                     "b\"quoted\"");
    /* NaN sorts last and is never printed as a (non-JSON) NaN. */
    json_t *p1 = json_object_get(json_array_get(results, 1), "predictions");
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(p1, 0), "index")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(p1, 1), "index")), 1);
    ck_assert_ptr_null(json_object_get(j, "predictions"));
    json_decref(j);
    free(s);
    /* A batch of one is still a results list. */
    s = proto_format_classify("m", PROTO_FORM_IMAGES, &probs[0][0], 1, 3, 1, labels, &err);
    ck_assert_str_eq(s, "{\"model\":\"m\",\"results\":[{\"predictions\":"
                        "[{\"label\":\"b\\\"quoted\\\"\",\"index\":1,\"score\":0.7}]}]}");
    free(s);
}
END_TEST

START_TEST(format_models)
{
    proto_model_info m[2] = {
        {.name = "fashion", .kind = "cnn", .ready = true, .architecture = "layers",
         .channels = 1, .height = 28, .width = 28, .classes = 10, .max_batch_size = 16},
        {.name = "r18", .kind = "cnn", .ready = false, .architecture = "resnet18",
         .channels = 3, .height = 224, .width = 224, .classes = 1000, .max_batch_size = 8},
    };
    char *s = proto_format_models(m, 1);
    ck_assert_str_eq(s, "{\"models\":[{\"name\":\"fashion\",\"kind\":\"cnn\",\"ready\":true,"
                        "\"architecture\":\"layers\",\"inputs\":{\"channels\":1,\"height\":28,"
                        "\"width\":28},\"classes\":10,\"max_batch_size\":16}]}");
    free(s);
    s = proto_format_models(m, 2);
    json_t *j = load(s);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "models")), 2);
    json_decref(j);
    free(s);
    s = proto_format_models(m, 0);
    ck_assert_str_eq(s, "{\"models\":[]}");
    free(s);
    s = proto_format_model(&m[1]);
    ck_assert_str_eq(s, "{\"name\":\"r18\",\"kind\":\"cnn\",\"ready\":false,"
                        "\"architecture\":\"resnet18\",\"inputs\":{\"channels\":3,\"height\":224,"
                        "\"width\":224},\"classes\":1000,\"max_batch_size\":8}");
    free(s);
}
END_TEST

START_TEST(format_errors_and_status)
{
    char *s = proto_format_error("unknown field \"x\"; allowed: image");
    ck_assert_str_eq(s, "{\"error\":\"unknown field \\\"x\\\"; allowed: image\"}");
    free(s);
    s = proto_format_error("bad \xff byte and \x01 control");
    json_t *j = load(s);
    ck_assert_str_eq(json_string_value(json_object_get(j, "error")), "bad ? byte and ? control");
    json_decref(j);
    free(s);
    s = proto_format_error("caf\xc3\xa9"); /* valid UTF-8 is kept */
    j = load(s);
    ck_assert_str_eq(json_string_value(json_object_get(j, "error")), "caf\xc3\xa9");
    json_decref(j);
    free(s);
    s = proto_format_status("ready");
    ck_assert_str_eq(s, "{\"status\":\"ready\"}");
    free(s);
}
END_TEST

/* ---- BERT: fill-mask and next-sentence ------------------------------------------ */

/* A small vocabulary with BERT's special tokens at their usual ids 0..4 (then in the
 * order listed), enough for the texts below. */
static const char *const VOCAB[] = {
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "man", "went", "to", "store",
    "buy", "some", "milk", ".", ",", "##s", "a", "dog", "it", "rained", "un", "##aff",
    "##able", "caf\xc3\xa9", "is", "#",
};
enum { V_PAD, V_UNK, V_CLS, V_SEP, V_MASK, V_THE, V_MAN, V_WENT, V_TO, V_STORE, V_BUY,
       V_SOME, V_MILK, V_DOT, V_COMMA, V_S, V_A, V_DOG, V_IT, V_RAINED, V_UN, V_AFF,
       V_ABLE, V_CAFE, V_IS, V_HASH, V_COUNT };

static wordpiece *wp;
static proto_bert_model BM;
static char vocab_path[64];

static void bert_setup(void)
{
    snprintf(vocab_path, sizeof vocab_path, "/tmp/check_proto_vocab_XXXXXX");
    int fd = mkstemp(vocab_path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    for (size_t i = 0; i < sizeof VOCAB / sizeof VOCAB[0]; i++)
        fprintf(f, "%s\n", VOCAB[i]);
    fclose(f);
    engine_err e;
    ck_assert_msg(wordpiece_load(vocab_path, true, &wp, &e) == ENGINE_OK, "%s", e.msg);
    ck_assert_int_eq(wordpiece_vocab_size(wp), V_COUNT);
    BM = (proto_bert_model){.name = "bert", .wp = wp, .max_tokens = 16, .candidates = V_COUNT};
}

static void bert_teardown(void)
{
    wordpiece_free(wp);
    unlink(vocab_path);
}

static int parse_fm(const char *body, const proto_bert_model *bm, proto_fill_mask_req *req,
                    proto_error *err)
{
    memset(err, 0, sizeof *err);
    int st = proto_parse_fill_mask(body, strlen(body), bm, req, err);
    if (st != 0) {
        ck_assert_int_eq(st, err->status);
        ck_assert_ptr_null(req->ids);
        ck_assert_ptr_null(req->mask_pos);
        ck_assert_ptr_null(req->targets);
        ck_assert_msg(err->msg[0] != '\0', "no message for status %d", st);
    }
    return st;
}

static void refuse_fm_bm(const char *body, const proto_bert_model *bm, int status,
                         const char *expect)
{
    proto_fill_mask_req req;
    proto_error err;
    int st = parse_fm(body, bm, &req, &err);
    ck_assert_msg(st == status, "%.200s: status %d, expected %d (%s)", body, st, status, err.msg);
    ck_assert_contains(err.msg, expect);
}

static void refuse_fm(const char *body, int status, const char *expect)
{
    refuse_fm_bm(body, &BM, status, expect);
}

static proto_fill_mask_req accept_fm(const char *body)
{
    proto_fill_mask_req req;
    proto_error err;
    int st = parse_fm(body, &BM, &req, &err);
    ck_assert_msg(st == 0, "%.200s: refused with %d: %s", body, st, err.msg);
    return req;
}

static void assert_ids(const int32_t *got, int n, const int32_t *want, int n_want)
{
    ck_assert_int_eq(n, n_want);
    for (int i = 0; i < n; i++)
        ck_assert_msg(got[i] == want[i], "id %d: %d, expected %d", i, (int)got[i], (int)want[i]);
}

START_TEST(fill_mask_text)
{
    proto_fill_mask_req r = accept_fm("{\"text\":\"The man went to the [MASK].\",\"top_k\":3}");
    const int32_t want[] = {V_CLS, V_THE, V_MAN, V_WENT, V_TO, V_THE, V_MASK, V_DOT, V_SEP};
    assert_ids(r.ids, r.len, want, 9);
    ck_assert_int_eq(r.form, PROTO_BERT_TEXT);
    ck_assert_int_eq(r.n_mask, 1);
    ck_assert_int_eq(r.mask_pos[0], 6);
    ck_assert_int_eq(r.top_k, 3);
    ck_assert_ptr_null(r.targets);
    proto_fill_mask_req_free(&r);
    /* Default top_k, several masks in order, [MASK] next to punctuation. */
    r = accept_fm("{\"text\":\"[MASK] went to the [MASK],[MASK]\"}");
    ck_assert_int_eq(r.top_k, PROTO_DEFAULT_TOP_K);
    ck_assert_int_eq(r.n_mask, 3);
    ck_assert_int_eq(r.mask_pos[0], 1);
    ck_assert_int_eq(r.mask_pos[1], 5);
    ck_assert_int_eq(r.mask_pos[2], 7);
    proto_fill_mask_req_free(&r);
    /* top_k is capped at the tokens there are to rank. */
    r = accept_fm("{\"text\":\"a [MASK]\",\"top_k\":100}");
    ck_assert_int_eq(r.top_k, V_COUNT);
    proto_fill_mask_req_free(&r);
}
END_TEST

/* Hugging Face's Inference API shape: inputs + parameters (+ options, ignored). */
START_TEST(fill_mask_inputs_form)
{
    proto_fill_mask_req r = accept_fm(
        "{\"inputs\":\"a [MASK] went to the store\",\"parameters\":{\"top_k\":4,"
        "\"targets\":[\"dog\",\"man\",\"dog\"]},\"options\":{\"wait_for_model\":true}}");
    ck_assert_int_eq(r.form, PROTO_BERT_INPUTS);
    ck_assert_int_eq(r.n_mask, 1);
    ck_assert_int_eq(r.mask_pos[0], 2);
    /* Duplicates collapse; top_k is capped at the targets. */
    const int32_t want[] = {V_DOG, V_MAN};
    assert_ids(r.targets, r.n_targets, want, 2);
    ck_assert_int_eq(r.top_k, 2);
    proto_fill_mask_req_free(&r);
    /* top_k and targets may also sit at the top level with inputs. */
    r = accept_fm("{\"inputs\":\"[MASK]\",\"top_k\":1,\"targets\":\"milk\"}");
    ck_assert_int_eq(r.top_k, 1);
    ck_assert_int_eq(r.n_targets, 1);
    ck_assert_int_eq(r.targets[0], V_MILK);
    proto_fill_mask_req_free(&r);
}
END_TEST

START_TEST(fill_mask_targets)
{
    /* Not a token itself: its tokenization's first piece ("Stores" -> store ##s);
     * exact tokens win even when they would not come out of the tokenizer ("##s",
     * and "caf\xc3\xa9", which lower-casing would strip to "cafe"); [UNK] pieces are
     * passed over ("xyz" is [UNK], then "dog"). */
    proto_fill_mask_req r =
        accept_fm("{\"text\":\"[MASK]\",\"targets\":[\"Stores\",\"##s\",\"xyz dog\",\"caf\xc3\xa9\"]}");
    const int32_t want[] = {V_STORE, V_S, V_DOG, V_CAFE};
    assert_ids(r.targets, r.n_targets, want, 4);
    proto_fill_mask_req_free(&r);
    refuse_fm("{\"text\":\"[MASK]\",\"targets\":[\"xyz\"]}", 422, "targets[0] \"xyz\" has no token");
    refuse_fm("{\"text\":\"[MASK]\",\"targets\":[\"dog\",\"Caf\xc3\xa9\"]}", 422,
              "targets[1] \"Caf\xc3\xa9\" has no token in model bert's vocabulary");
    refuse_fm("{\"text\":\"[MASK]\",\"targets\":[]}", 400, "targets is empty");
    refuse_fm("{\"text\":\"[MASK]\",\"targets\":[\"\"]}", 400, "targets[0] is empty");
    refuse_fm("{\"text\":\"[MASK]\",\"targets\":[\"dog\",3]}", 400,
              "targets[1] must be a string");
    refuse_fm("{\"text\":\"[MASK]\",\"targets\":{\"a\":1}}", 400, "targets must be an array");
    char *long_word = calloc(PROTO_FILL_MASK_MAX_TARGET_BYTES + 2, 1);
    memset(long_word, 'a', PROTO_FILL_MASK_MAX_TARGET_BYTES + 1);
    char *body = fmt("{\"text\":\"[MASK]\",\"targets\":[\"%s\"]}", long_word);
    refuse_fm(body, 422, "at most 256 bytes");
    free(body);
    free(long_word);
    /* Too many targets. */
    size_t cap = 32 + 6 * (PROTO_FILL_MASK_MAX_TARGETS + 1);
    body = malloc(cap);
    size_t n = (size_t)snprintf(body, cap, "{\"text\":\"[MASK]\",\"targets\":[");
    for (int i = 0; i <= PROTO_FILL_MASK_MAX_TARGETS; i++)
        n += (size_t)snprintf(body + n, cap - n, "%s\"dog\"", i ? "," : "");
    snprintf(body + n, cap - n, "]}");
    refuse_fm(body, 413, "too many targets");
    free(body);
}
END_TEST

START_TEST(fill_mask_top_k)
{
    refuse_fm("{\"text\":\"[MASK]\",\"top_k\":0}", 400, "top_k must be from 1 to 100, got 0");
    refuse_fm("{\"text\":\"[MASK]\",\"top_k\":-3}", 400, "top_k must be from 1 to 100");
    refuse_fm("{\"text\":\"[MASK]\",\"top_k\":101}", 400, "got 101");
    refuse_fm("{\"text\":\"[MASK]\",\"top_k\":\"3\"}", 400, "top_k must be a positive integer");
    refuse_fm("{\"text\":\"[MASK]\",\"top_k\":2.5}", 400, "top_k must be a positive integer");
    refuse_fm("{\"inputs\":\"[MASK]\",\"top_k\":2,\"parameters\":{\"top_k\":3}}", 400,
              "top_k is given twice");
    /* masks x top_k is bounded: 25 masks x 100 answers. */
    proto_bert_model big = BM;
    big.max_tokens = 64;
    big.candidates = 1000;
    char text[25 * 7 + 1] = "";
    for (int i = 0; i < 25; i++)
        strcat(text, "[MASK] ");
    char *body = fmt("{\"text\":\"%s\",\"top_k\":100}", text);
    refuse_fm_bm(body, &big, 422, "25 masks x top_k 100 is 2500 answers; at most 2048");
    free(body);
}
END_TEST

START_TEST(fill_mask_wrong_shapes)
{
    refuse_fm("", 400, "empty body");
    refuse_fm("{\"text\":", 400, "not valid JSON");
    refuse_fm("[\"[MASK]\"]", 400, "must be a JSON object");
    refuse_fm("{}", 400, "give exactly one of \"text\" or \"inputs\"");
    refuse_fm("{\"text\":\"[MASK]\",\"inputs\":\"[MASK]\"}", 400, "exactly one");
    refuse_fm("{\"text\":5}", 400, "text must be a string containing [MASK], got an integer");
    refuse_fm("{\"inputs\":[\"a [MASK]\",\"b [MASK]\"]}", 400, "send one text per request");
    refuse_fm("{\"text\":\"[MASK]\",\"image\":\"x\"}", 400, "unknown field \"image\"");
    refuse_fm("{\"inputs\":\"[MASK]\",\"parameters\":[1]}", 400, "parameters must be an object");
    refuse_fm("{\"inputs\":\"[MASK]\",\"parameters\":{\"top_p\":1}}", 400,
              "unknown field \"top_p\" in parameters; allowed: top_k, targets");
    refuse_fm("{\"inputs\":\"[MASK]\",\"options\":true}", 400, "options must be an object");
    refuse_fm("{\"text\":\"[MASK]\",\"text\":\"[MASK]\"}", 400, "not valid JSON");
}
END_TEST

START_TEST(fill_mask_text_checks)
{
    refuse_fm("{\"text\":\"the man went to the store.\"}", 422, "text has no [MASK] token");
    /* [MASK] is matched exactly, as BERT's tokenizer does. */
    refuse_fm("{\"inputs\":\"the [mask] went\"}", 422, "inputs has no [MASK] token");
    /* Not UTF-8: jansson refuses the body before the tokenizer sees it. */
    refuse_fm("{\"text\":\"caf\xe9 [MASK]\"}", 400, "UTF-8");
    refuse_fm("{\"text\":\"\\ud800 [MASK]\"}", 400, "not valid JSON");
    /* 16 tokens at most, [CLS] and [SEP] included: 14 of text fit, 15 do not. */
    proto_fill_mask_req r = accept_fm(
        "{\"text\":\"the man went to the store to buy some milk , a dog [MASK]\"}");
    ck_assert_int_eq(r.len, 16);
    ck_assert_int_eq(r.ids[15], V_SEP);
    proto_fill_mask_req_free(&r);
    refuse_fm("{\"text\":\"the man went to the store to buy some milk , a dog is [MASK]\"}", 413,
              "text is 17 tokens with [CLS] and [SEP]; model bert takes at most 16");
    /* Bytes are bounded before tokenizing. */
    size_t n = WORDPIECE_MAX_TEXT_BYTES + 1;
    char *body = malloc(n + 32);
    memcpy(body, "{\"text\":\"", 9);
    memset(body + 9, 'a', n);
    strcpy(body + 9 + n, "\"}");
    refuse_fm(body, 413, "at most 262144 bytes");
    free(body);
}
END_TEST

static int parse_ns(const char *body, proto_next_sentence_req *req, proto_error *err)
{
    memset(err, 0, sizeof *err);
    int st = proto_parse_next_sentence(body, strlen(body), &BM, req, err);
    if (st != 0) {
        ck_assert_int_eq(st, err->status);
        ck_assert_ptr_null(req->ids);
        ck_assert_ptr_null(req->type_ids);
    }
    return st;
}

static void refuse_ns(const char *body, int status, const char *expect)
{
    proto_next_sentence_req req;
    proto_error err;
    int st = parse_ns(body, &req, &err);
    ck_assert_msg(st == status, "%.200s: status %d, expected %d (%s)", body, st, status, err.msg);
    ck_assert_contains(err.msg, expect);
}

START_TEST(next_sentence_parse)
{
    proto_next_sentence_req r;
    proto_error err;
    ck_assert_int_eq(parse_ns("{\"text_a\":\"The man went.\",\"text_b\":\"It rained\"}", &r, &err),
                     0);
    const int32_t want[] = {V_CLS, V_THE, V_MAN, V_WENT, V_DOT, V_SEP, V_IT, V_RAINED, V_SEP};
    const int32_t types[] = {0, 0, 0, 0, 0, 0, 1, 1, 1};
    assert_ids(r.ids, r.len, want, 9);
    assert_ids(r.type_ids, r.len, types, 9);
    proto_next_sentence_req_free(&r);
    /* Empty sentences are texts too: [CLS] [SEP] [SEP]. */
    ck_assert_int_eq(parse_ns("{\"text_a\":\"\",\"text_b\":\"\"}", &r, &err), 0);
    ck_assert_int_eq(r.len, 3);
    proto_next_sentence_req_free(&r);

    refuse_ns("{\"text_a\":\"a\"}", 400, "give both \"text_a\"");
    refuse_ns("{\"text_a\":\"a\",\"text_b\":[\"b\"]}", 400, "text_b must be a string, got an array");
    refuse_ns("{\"text_a\":\"a\",\"text_b\":\"b\",\"text\":\"c\"}", 400,
              "unknown field \"text\"; allowed: text_a, text_b");
    refuse_ns("\"a\"", 400, "must be a JSON object");
    refuse_ns("{\"text_a\":\"a\xff\",\"text_b\":\"b\"}", 400, "UTF-8");
    /* 16 tokens at most: 7 + 7 + 3 = 17; the count is right whichever side is long. */
    refuse_ns("{\"text_a\":\"the man went to the store .\",\"text_b\":\"a dog went to buy some milk\"}",
              413, "text_a and text_b are 17 tokens with [CLS] and two [SEP]; model bert takes at "
                   "most 16");
    refuse_ns("{\"text_a\":\"the man went to the store to buy some milk , a dog is here\","
              "\"text_b\":\"it\"}",
              413, "are 19 tokens");
}
END_TEST

/* A fill-mask request with the answers ids/scores, formatted and parsed back. */
static json_t *format_fm(const char *body, const int32_t *ids, const float *scores)
{
    proto_fill_mask_req r = accept_fm(body);
    proto_error err;
    char *s = proto_format_fill_mask(&BM, &r, ids, scores, &err);
    ck_assert_ptr_nonnull(s);
    json_t *j = load(s);
    free(s);
    proto_fill_mask_req_free(&r);
    return j;
}

static void assert_answer(json_t *a, double score, int token, const char *token_str,
                          const char *sequence)
{
    ck_assert_double_eq_tol(json_real_value(json_object_get(a, "score")), score, 1e-6);
    ck_assert_int_eq(json_integer_value(json_object_get(a, "token")), token);
    ck_assert_str_eq(json_string_value(json_object_get(a, "token_str")), token_str);
    ck_assert_str_eq(json_string_value(json_object_get(a, "sequence")), sequence);
}

START_TEST(format_fill_mask)
{
    /* One mask: the sequence is decoded without special tokens; "##s" glues on. */
    int32_t ids[] = {V_STORE, V_S};
    float scores[] = {0.75f, 0.125f};
    proto_fill_mask_req r = accept_fm("{\"text\":\"The man went to the [MASK].\",\"top_k\":2}");
    proto_error err;
    char *s = proto_format_fill_mask(&BM, &r, ids, scores, &err);
    ck_assert_str_eq(s, "{\"model\":\"bert\",\"masks\":[[{\"score\":0.75,\"token\":9,"
                        "\"token_str\":\"store\",\"sequence\":\"the man went to the store.\"},"
                        "{\"score\":0.125,\"token\":15,\"token_str\":\"##s\","
                        "\"sequence\":\"the man went to thes.\"}]]}");
    free(s);
    proto_fill_mask_req_free(&r);

    /* Several masks: one list each, in order; the other masks stay [MASK], the
     * [CLS] and [SEP] around the text do not show. */
    int32_t ids2[] = {V_MAN, V_DOG, V_STORE, V_A};
    float scores2[] = {0.5f, 0.25f, 0.625f, 0.0625f};
    json_t *j = format_fm("{\"text\":\"the [MASK] went to the [MASK].\",\"top_k\":2}", ids2,
                          scores2);
    ck_assert_str_eq(json_string_value(json_object_get(j, "model")), "bert");
    json_t *masks = json_object_get(j, "masks");
    ck_assert_uint_eq(json_array_size(masks), 2);
    ck_assert_uint_eq(json_array_size(json_array_get(masks, 0)), 2);
    assert_answer(json_array_get(json_array_get(masks, 0), 0), 0.5, V_MAN, "man",
                  "the man went to the [MASK].");
    assert_answer(json_array_get(json_array_get(masks, 0), 1), 0.25, V_DOG, "dog",
                  "the dog went to the [MASK].");
    assert_answer(json_array_get(json_array_get(masks, 1), 0), 0.625, V_STORE, "store",
                  "the [MASK] went to the store.");
    assert_answer(json_array_get(json_array_get(masks, 1), 1), 0.0625, V_A, "a",
                  "the [MASK] went to the a.");
    json_decref(j);

    /* A predicted special token shows as itself, and is left out of the sequence
     * when there is one mask (as the pipeline's skip_special_tokens does). */
    int32_t ids3[] = {V_SEP};
    float scores3[] = {NAN};
    j = format_fm("{\"text\":\"a [MASK] dog\",\"top_k\":1}", ids3, scores3);
    assert_answer(json_array_get(json_array_get(json_object_get(j, "masks"), 0), 0), 0.0, V_SEP,
                  "[SEP]", "a dog");
    json_decref(j);
}
END_TEST

START_TEST(format_next_sentence_and_bert_model)
{
    proto_error err;
    char *s = proto_format_next_sentence("bert", 0.75f, &err);
    ck_assert_str_eq(s, "{\"model\":\"bert\",\"is_next\":0.75,\"not_next\":0.25}");
    free(s);
    proto_model_info m = {.name = "bert", .kind = "bert", .ready = true, .max_batch_size = 8,
                          .max_tokens = 128, .vocab_size = 12000, .next_sentence = true,
                          .max_batch_tokens = 1024};
    s = proto_format_model(&m);
    ck_assert_str_eq(s, "{\"name\":\"bert\",\"kind\":\"bert\",\"ready\":true,\"max_tokens\":128,"
                        "\"vocab_size\":12000,\"next_sentence\":true,\"max_batch_size\":8,"
                        "\"max_batch_tokens\":1024}");
    free(s);
}
END_TEST

/* ---- generate (GAN) ------------------------------------------------------------- */

static char *gen_labels[] = {"T-shirt", "Trouser", "Bag"};
static const proto_gan_model GAN_COND = {"gan", 5, 3, gen_labels, 1, 4, 3, IMAGE_RANGE_TANH, 8};
static const proto_gan_model GAN_PLAIN = {"plain", 4, 0, NULL, 3, 2, 2, IMAGE_RANGE_SIGMOID, 8};

static void gen_ok(const char *body, const proto_gan_model *gm, proto_generate_req *req)
{
    proto_error err;
    int st = proto_parse_generate(body, strlen(body), gm, 777, req, &err);
    ck_assert_msg(st == 0, "%s: %d %s", body, st, err.msg);
}

static void gen_refuse(const char *body, const proto_gan_model *gm, int status, const char *part)
{
    proto_generate_req req;
    proto_error err;
    int st = proto_parse_generate(body, strlen(body), gm, 777, &req, &err);
    ck_assert_msg(st == status, "%s: status %d (%s), want %d", body, st, err.msg, status);
    ck_assert_msg(strstr(err.msg, part), "%s: message '%s' lacks '%s'", body, err.msg, part);
    ck_assert_ptr_null(req.latents);
}

START_TEST(generate_seeds)
{
    proto_generate_req req;
    float z[5];
    gen_ok("{}", &GAN_PLAIN, &req); /* random seed from the caller, reported */
    ck_assert_int_eq(req.n, 1);
    ck_assert_uint_eq(req.seeds[0], 777);
    latent_from_seed(777, z, 4);
    ck_assert_mem_eq(req.latents, z, 4 * sizeof(float));
    ck_assert_ptr_null(req.classes);
    proto_generate_req_free(&req);

    gen_ok("{\"count\": 3, \"seed\": 42}", &GAN_COND, &req);
    ck_assert_int_eq(req.n, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(req.seeds[i], 42 + (uint64_t)i);
        latent_from_seed(42 + (uint64_t)i, z, 5);
        ck_assert_mem_eq(req.latents + i * 5, z, sizeof z);
        ck_assert_int_eq(req.classes[i], i % 3); /* no class: a tour of the classes */
    }
    proto_generate_req_free(&req);

    gen_ok("{\"count\": 2, \"seed\": \"18446744073709551615\", \"class\": \"Bag\"}", &GAN_COND,
           &req);
    ck_assert_uint_eq(req.seeds[0], UINT64_MAX);
    ck_assert_uint_eq(req.seeds[1], 0); /* wraps */
    ck_assert_int_eq(req.classes[0], 2);
    ck_assert_int_eq(req.classes[1], 2);
    proto_generate_req_free(&req);

    gen_ok("{\"class\": 1, \"grid\": true}", &GAN_COND, &req);
    ck_assert_int_eq(req.classes[0], 1);
    ck_assert(req.grid);
    proto_generate_req_free(&req);
}
END_TEST

START_TEST(generate_latent_and_interpolate)
{
    proto_generate_req req;
    gen_ok("{\"latent\": [1, 2, 3, 4.5]}", &GAN_PLAIN, &req);
    ck_assert_int_eq(req.n, 1);
    ck_assert_float_eq(req.latents[3], 4.5f);
    ck_assert_ptr_null(req.seeds);
    proto_generate_req_free(&req);
    gen_ok("{\"latent\": [[1, 2, 3, 4], [0, 0, 0, -1]]}", &GAN_PLAIN, &req);
    ck_assert_int_eq(req.n, 2);
    ck_assert_float_eq(req.latents[7], -1.0f);
    proto_generate_req_free(&req);

    gen_ok("{\"interpolate\": {\"from_seed\": 1, \"to_seed\": 2, \"steps\": 3}}", &GAN_PLAIN, &req);
    ck_assert_int_eq(req.n, 3);
    float a[4], b[4];
    latent_from_seed(1, a, 4);
    latent_from_seed(2, b, 4);
    ck_assert_mem_eq(req.latents, a, sizeof a);
    ck_assert_mem_eq(req.latents + 8, b, sizeof b);
    ck_assert_float_eq_tol(req.latents[4], 0.5f * (a[0] + b[0]), 1e-6f);
    ck_assert_float_eq(req.t[1], 0.5f);
    proto_generate_req_free(&req);
}
END_TEST

START_TEST(generate_refusals)
{
    gen_refuse("[]", &GAN_PLAIN, 400, "JSON object");
    gen_refuse("{\"n\": 1}", &GAN_PLAIN, 400, "unknown field \"n\"");
    gen_refuse("{\"seed\": -1}", &GAN_PLAIN, 400, "unsigned 64-bit");
    gen_refuse("{\"seed\": 1.5}", &GAN_PLAIN, 400, "unsigned 64-bit");
    gen_refuse("{\"seed\": \"abc\"}", &GAN_PLAIN, 400, "unsigned 64-bit");
    gen_refuse("{\"seed\": \"18446744073709551616\"}", &GAN_PLAIN, 400, "unsigned 64-bit");
    gen_refuse("{\"count\": 0}", &GAN_PLAIN, 422, "at least 1");
    gen_refuse("{\"count\": 9}", &GAN_PLAIN, 413, "limit of 8");
    gen_refuse("{\"count\": \"2\"}", &GAN_PLAIN, 400, "integer");
    gen_refuse("{\"latent\": [1, 2, 3]}", &GAN_PLAIN, 422, "takes 4");
    gen_refuse("{\"latent\": [[1, 2, 3, 4], [1]]}", &GAN_PLAIN, 422, "vector 1 has 1 values");
    gen_refuse("{\"latent\": []}", &GAN_PLAIN, 422, "empty");
    gen_refuse("{\"latent\": [[1, 2, 3, \"x\"]]}", &GAN_PLAIN, 400, "must be a number");
    gen_refuse("{\"latent\": [1, 2, 3, 4], \"seed\": 1}", &GAN_PLAIN, 400, "give one of");
    gen_refuse("{\"class\": 0}", &GAN_PLAIN, 422, "unconditional");
    gen_refuse("{\"class\": \"Sneaker\"}", &GAN_COND, 422, "unknown class \"Sneaker\"");
    gen_refuse("{\"class\": 3}", &GAN_COND, 422, "outside 0..2");
    gen_refuse("{\"class\": [1]}", &GAN_COND, 400, "label (string) or an index");
    gen_refuse("{\"grid\": \"yes\"}", &GAN_PLAIN, 400, "true or false");
    gen_refuse("{\"interpolate\": {\"from_seed\": 1, \"to_seed\": 2, \"steps\": 1}}", &GAN_PLAIN,
               422, "at least 2");
    gen_refuse("{\"interpolate\": {\"from_seed\": 1, \"steps\": 3}}", &GAN_PLAIN, 400,
               "needs from_seed, to_seed and steps");
    gen_refuse("{\"interpolate\": {\"from_seed\": 1, \"to_seed\": 2, \"steps\": 3, \"x\": 1}}",
               &GAN_PLAIN, 400, "unknown field \"x\" in \"interpolate\"");
}
END_TEST

/* The response's PNGs decode to exactly the quantised pixels. */
START_TEST(generate_answer_png)
{
    proto_generate_req req;
    gen_ok("{\"count\": 2, \"seed\": 5}", &GAN_COND, &req);
    float images[2 * 12];
    for (int i = 0; i < 24; i++)
        images[i] = -1.0f + (float)i / 12.0f;
    proto_error err;
    char *json = proto_format_generate(&GAN_COND, &req, images, &err);
    ck_assert_ptr_nonnull(json);
    json_t *root = json_loads(json, 0, NULL);
    json_t *imgs = json_object_get(root, "images");
    ck_assert_int_eq(json_array_size(imgs), 2);
    for (int i = 0; i < 2; i++) {
        json_t *img = json_array_get(imgs, i);
        ck_assert_int_eq(json_integer_value(json_object_get(img, "seed")), 5 + i);
        ck_assert_str_eq(json_string_value(json_object_get(img, "class")), gen_labels[i]);
        const char *b = json_string_value(json_object_get(img, "png"));
        uint8_t png[4096];
        size_t n;
        ck_assert(proto_base64_decode(b, strlen(b), png, &n, NULL, 0));
        int w, h, c;
        uint8_t *px = stbi_load_from_memory(png, (int)n, &w, &h, &c, 1);
        ck_assert_int_eq(w, 3);
        ck_assert_int_eq(h, 4);
        uint8_t want[12];
        image_from_tensor(images + i * 12, 1, 4, 3, IMAGE_RANGE_TANH, want);
        ck_assert_mem_eq(px, want, 12);
        stbi_image_free(px);
    }
    json_decref(root);
    free(json);

    uint8_t *png;
    size_t len;
    ck_assert_int_eq(proto_generate_png(&GAN_COND, &req, images, &png, &len, &err), 422);
    req.grid = true;
    ck_assert_int_eq(proto_generate_png(&GAN_COND, &req, images, &png, &len, &err), 0);
    int w, h, c;
    uint8_t *px = stbi_load_from_memory(png, (int)len, &w, &h, &c, 1);
    ck_assert_int_eq(w, 2 * (3 + 2) + 2); /* two side by side, 2-pixel padding */
    ck_assert_int_eq(h, 4 + 4);
    stbi_image_free(px);
    free(png);
    proto_generate_req_free(&req);
}
END_TEST

static Suite *proto_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *b = tcase_create("base64");
    tcase_add_test(b, base64_rfc4648_vectors);
    tcase_add_test(b, base64_refusals);
    tcase_add_test(b, base64_round_trip);
    suite_add_tcase(s, b);

    TCase *req = tcase_create("request");
    tcase_set_timeout(req, 60);
    tcase_add_test(req, bad_json);
    tcase_add_test(req, deep_nesting_is_refused_not_a_crash);
    tcase_add_test(req, fields);
    tcase_add_test(req, wrong_types);
    tcase_add_test(req, top_k_bounds);
    tcase_add_test(req, one_image);
    tcase_add_test(req, data_url);
    tcase_add_test(req, several_images);
    tcase_add_test(req, too_many_images);
    tcase_add_test(req, undecodable_images);
    tcase_add_test(req, wrong_size_image);
    tcase_add_test(req, pixels_ok);
    tcase_add_test(req, pixels_wrong_shape);
    tcase_add_test(req, pixels_wrong_values);
    tcase_add_test(req, pixels_huge);
    suite_add_tcase(s, req);

    TCase *resp = tcase_create("response");
    tcase_add_test(resp, format_single);
    tcase_add_test(resp, format_batch);
    tcase_add_test(resp, format_models);
    tcase_add_test(resp, format_errors_and_status);
    suite_add_tcase(s, resp);

    TCase *gen = tcase_create("generate");
    tcase_add_test(gen, generate_seeds);
    tcase_add_test(gen, generate_latent_and_interpolate);
    tcase_add_test(gen, generate_refusals);
    tcase_add_test(gen, generate_answer_png);
    suite_add_tcase(s, gen);

    TCase *bert = tcase_create("bert");
    tcase_add_checked_fixture(bert, bert_setup, bert_teardown);
    tcase_set_timeout(bert, 60);
    tcase_add_test(bert, fill_mask_text);
    tcase_add_test(bert, fill_mask_inputs_form);
    tcase_add_test(bert, fill_mask_targets);
    tcase_add_test(bert, fill_mask_top_k);
    tcase_add_test(bert, fill_mask_wrong_shapes);
    tcase_add_test(bert, fill_mask_text_checks);
    tcase_add_test(bert, next_sentence_parse);
    tcase_add_test(bert, format_fill_mask);
    tcase_add_test(bert, format_next_sentence_and_bert_model);
    suite_add_tcase(s, bert);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
