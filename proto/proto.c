/* proto.c — the JSON side of the HTTP API.
 *
 * Owns the translation between request/response bodies and native structs: a
 * classify body becomes a normalised (N,C,H,W) tensor plus top_k, and softmax rows
 * become the predictions JSON; a fill-mask or next-sentence body becomes token ids
 * (tokenized here with the model's WordPiece table, because the token count is a
 * limit to check and refuse, never to truncate), and the worker's top-k ids and
 * scores become answers with decoded text.  Every check a request can fail is made
 * here, with a message that says what was wrong and how to fix it, so the daemon
 * behind it only ever sees valid jobs.
 *
 * Runs on HTTP threads, many at once; it keeps no state, so it needs no locks.
 * It must never trust a size or count from the body before checking it against a
 * limit, never abort on bad input, and never print.
 *
 * Base64: Debian has no C library that decodes strictly (libb64 skips characters
 * it does not know, which would let garbage through as an image; libmodpbase64
 * and others are not dependencies of this project and a new dependency means a
 * configure.ac change), so RFC 4648 decoding is the 40 lines below, tested in
 * tests/check_proto.c.
 */
#include <config.h>

#include "proto/proto.h"
#include "proto/proto_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int proto_perr(proto_error *err, int status, const char *fmt, ...)
{
    err->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return status;
}

const char *proto_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "an unknown value";
}

/* ---- base64 ------------------------------------------------------------------- */

static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

__attribute__((format(printf, 3, 4))) static bool b64_fail(char *why, size_t why_len,
                                                           const char *fmt, ...)
{
    if (why != NULL && why_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return false;
}

static bool b64_bad_char(unsigned char ch, size_t at, char *why, size_t why_len)
{
    if (ch == '-' || ch == '_')
        return b64_fail(why, why_len,
                        "'%c' at offset %zu is base64url; use the standard alphabet (+ and /)", ch,
                        at);
    if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t')
        return b64_fail(why, why_len,
                        "whitespace (0x%02x) at offset %zu; send one line without spaces", ch, at);
    if (ch > 0x20 && ch < 0x7f)
        return b64_fail(why, why_len, "invalid character '%c' at offset %zu", ch, at);
    return b64_fail(why, why_len, "invalid byte 0x%02x at offset %zu", ch, at);
}

size_t proto_base64_max(size_t len) { return len / 4 * 3; }

char *proto_base64_encode(const uint8_t *in, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (len > (SIZE_MAX - 1) / 4 * 3 - 2)
        return NULL;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (out == NULL)
        return NULL;
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        const uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = alphabet[(v >> 6) & 63];
        *o++ = alphabet[v & 63];
    }
    if (i < len) {
        const uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

bool proto_base64_decode(const char *in, size_t len, uint8_t *out, size_t *out_len, char *why,
                         size_t why_len)
{
    *out_len = 0;
    if (len % 4 != 0)
        return b64_fail(why, why_len, "length %zu is not a multiple of 4 (is '=' padding missing?)",
                        len);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char ch = (unsigned char)in[i + k];
            if (ch == '=') {
                /* Only the last group may pad, and only its last one or two places. */
                if (i + 4 != len || k < 2)
                    return b64_fail(why, why_len, "padding '=' at offset %zu before the end",
                                    i + (size_t)k);
                pad++;
                v[k] = 0;
                continue;
            }
            if (pad > 0)
                return b64_fail(why, why_len, "data after padding at offset %zu", i + (size_t)k);
            v[k] = b64_value(ch);
            if (v[k] < 0)
                return b64_bad_char(ch, i + (size_t)k, why, why_len);
        }
        /* Non-zero pad bits mean a non-canonical encoding: RFC 4648 3.5 lets a
         * decoder refuse it, and a strict one should (it hides truncation). */
        if ((pad == 1 && (v[2] & 0x3) != 0) || (pad == 2 && (v[1] & 0xf) != 0))
            return b64_fail(why, why_len,
                            "non-zero bits before the padding (not canonical base64)");
        uint32_t triple = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                          (uint32_t)v[3];
        out[o++] = (uint8_t)(triple >> 16);
        if (pad < 2)
            out[o++] = (uint8_t)(triple >> 8);
        if (pad < 1)
            out[o++] = (uint8_t)triple;
    }
    *out_len = o;
    return true;
}

/* ---- classify requests ------------------------------------------------------ */

/* The engine prefixes its image messages with "image: "; ours name the field. */
static const char *engine_msg(const engine_err *e)
{
    return strncmp(e->msg, "image: ", 7) == 0 ? e->msg + 7 : e->msg;
}

/* A base64 (or data URL) image string -> one (C,H,W) slot of the input tensor. */
static int decode_image(const char *s, size_t len, const char *what, const image_preproc *pp,
                        float *dst, proto_error *err)
{
    if (len >= 5 && memcmp(s, "data:", 5) == 0) {
        const char *comma = memchr(s, ',', len);
        if (comma == NULL)
            return proto_perr(err, 415,
                              "%s: data URL without ','; expected data:image/png;base64,...", what);
        size_t meta = (size_t)(comma - s);
        if (meta < 12 || memcmp(comma - 7, ";base64", 7) != 0)
            return proto_perr(
                err, 415, "%s: data URL is not base64; expected data:image/png;base64,...", what);
        len -= meta + 1;
        s = comma + 1;
    }
    if (len == 0)
        return proto_perr(err, 415, "%s is empty: expected a base64-encoded PNG or JPEG", what);

    uint8_t *bytes = malloc(proto_base64_max(len) + 1);
    if (bytes == NULL)
        return proto_perr(err, 500, "out of memory decoding %s", what);
    size_t n;
    char why[160];
    if (!proto_base64_decode(s, len, bytes, &n, why, sizeof why)) {
        free(bytes);
        return proto_perr(err, 415, "%s is not valid base64: %s", what, why);
    }
    engine_err e;
    engine_status st = image_to_tensor(bytes, n, pp, dst, &e);
    free(bytes);
    switch (st) {
    case ENGINE_OK:
        return 0;
    case ENGINE_ERR_IMAGE:
        return proto_perr(err, 415, "%s could not be decoded as PNG or JPEG: %s", what,
                          engine_msg(&e));
    case ENGINE_ERR_INVALID:
        return proto_perr(err, 422, "%s: %s", what, engine_msg(&e));
    case ENGINE_ERR_NOMEM:
        return proto_perr(err, 500, "out of memory decoding %s", what);
    default:
        return proto_perr(err, 415, "%s: %s", what, engine_msg(&e));
    }
}

static int pixel_value(const json_t *v, const char *where, uint8_t *out, proto_error *err)
{
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < 0 || x > 255)
            return proto_perr(err, 422,
                              "%s = %" JSON_INTEGER_FORMAT
                              " is out of range: pixel values are integers 0..255",
                              where, x);
        *out = (uint8_t)x;
        return 0;
    }
    if (json_is_real(v))
        return proto_perr(err, 422, "%s = %g is not an integer: pixel values are integers 0..255",
                          where, json_real_value(v));
    return proto_perr(err, 400, "%s must be an integer 0..255, got %s", where, proto_type_name(v));
}

/* {"pixels": [H][W] or [H][W][C]} -> one (C,H,W) input.  The shape is taken from
 * pixels[0] and pixels[0][0]; every other row and pixel must match it. */
static int parse_pixels(const json_t *p, const image_preproc *pp, float *dst, proto_error *err)
{
    if (!json_is_array(p))
        return proto_perr(err, 400, "pixels must be an array of rows, [H][W] or [H][W][C]; got %s",
                          proto_type_name(p));
    size_t h = json_array_size(p);
    if (h == 0)
        return proto_perr(err, 422, "pixels is empty: expected [H][W] or [H][W][C] with H, W >= 1");
    if (h > PROTO_MAX_PIXELS_SIDE)
        return proto_perr(err, 422, "pixels has %zu rows; at most %d", h, PROTO_MAX_PIXELS_SIDE);
    const json_t *row0 = json_array_get(p, 0);
    if (!json_is_array(row0))
        return proto_perr(
            err, 422, "pixels must be 2-D [H][W] or 3-D [H][W][C], but pixels[0] is %s, not a row",
            proto_type_name(row0));
    size_t w = json_array_size(row0);
    if (w == 0)
        return proto_perr(err, 422, "pixels[0] is empty: rows need at least one pixel");
    if (w > PROTO_MAX_PIXELS_SIDE)
        return proto_perr(err, 422, "pixels rows have %zu columns; at most %d", w,
                          PROTO_MAX_PIXELS_SIDE);
    if (h * w > (size_t)IMAGE_MAX_PIXELS)
        return proto_perr(err, 422, "pixels is %zu x %zu; at most %d pixels", h, w,
                          IMAGE_MAX_PIXELS);
    const json_t *p00 = json_array_get(row0, 0);
    bool three_d = json_is_array(p00);
    size_t c = three_d ? json_array_size(p00) : 1;
    if (c != 1 && c != 3 && c != 4)
        return proto_perr(err, 422,
                          "pixels[0][0] has %zu channels; use 1 (gray), 3 (RGB) or 4 (RGBA)", c);

    uint8_t *px = malloc(h * w * c);
    if (px == NULL)
        return proto_perr(err, 500, "out of memory reading pixels");
    int status = 0;
    char where[96];
    for (size_t y = 0; y < h && status == 0; y++) {
        const json_t *row = json_array_get(p, y);
        if (!json_is_array(row)) {
            status =
                proto_perr(err, 422, "pixels[%zu] is %s; every row must be an array of %zu pixels",
                           y, proto_type_name(row), w);
            break;
        }
        if (json_array_size(row) != w) {
            status = proto_perr(
                err, 422, "pixels[%zu] has %zu columns but pixels[0] has %zu: rows must be equal",
                y, json_array_size(row), w);
            break;
        }
        for (size_t x = 0; x < w && status == 0; x++) {
            const json_t *e = json_array_get(row, x);
            uint8_t *dstpx = px + (y * w + x) * c;
            if (!three_d) {
                if (json_is_array(e)) {
                    status =
                        proto_perr(err, 422,
                                   "pixels[%zu][%zu] is an array but pixels[0][0] is a number: "
                                   "use [H][W] or [H][W][C] throughout",
                                   y, x);
                    break;
                }
                snprintf(where, sizeof where, "pixels[%zu][%zu]", y, x);
                status = pixel_value(e, where, dstpx, err);
                continue;
            }
            if (!json_is_array(e) || json_array_size(e) != c) {
                status = proto_perr(err, 422,
                                    "pixels[%zu][%zu] must be an array of %zu channel values, "
                                    "like pixels[0][0]",
                                    y, x, c);
                break;
            }
            for (size_t k = 0; k < c && status == 0; k++) {
                snprintf(where, sizeof where, "pixels[%zu][%zu][%zu]", y, x, k);
                status = pixel_value(json_array_get(e, k), where, dstpx + k, err);
            }
        }
    }
    if (status == 0) {
        engine_err e;
        engine_status st = image_pixels_to_tensor(px, (int)h, (int)w, (int)c, pp, dst, &e);
        if (st == ENGINE_ERR_NOMEM)
            status = proto_perr(err, 500, "out of memory converting pixels");
        else if (st != ENGINE_OK)
            status = proto_perr(err, 422, "pixels: %s", engine_msg(&e));
    }
    free(px);
    return status;
}

/* Parses a request body: NULL with err (400) when it is empty or not JSON.  example
 * is a valid body, quoted in the message so the client sees what to send. */
json_t *proto_load_body(const char *body, size_t len, const char *example, proto_error *err)
{
    if (len == 0) {
        proto_perr(err, 400, "empty body: send a JSON object such as %s", example);
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (root == NULL)
        proto_perr(err, 400, "body is not valid JSON (or not UTF-8): %s (line %d, column %d)",
                   jerr.text, jerr.line, jerr.column);
    return root;
}

static const char *const classify_fields[] = {"image", "images", "pixels", "top_k"};

int proto_parse_classify(const char *body, size_t len, const image_preproc *pp, int n_labels,
                         int max_images, proto_classify_req *out, proto_error *err)
{
    memset(out, 0, sizeof *out);
    json_t *root = proto_load_body(body, len, "{\"image\": \"<base64 PNG>\", \"top_k\": 5}", err);
    if (root == NULL)
        return err->status;

    int status = 0;
    if (!json_is_object(root)) {
        status =
            proto_perr(err, 400, "body must be a JSON object with image, images or pixels; got %s",
                       proto_type_name(root));
        goto done;
    }

    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        bool known = false;
        for (size_t i = 0; i < sizeof classify_fields / sizeof classify_fields[0]; i++)
            known = known || strcmp(key, classify_fields[i]) == 0;
        if (!known) {
            status = proto_perr(
                err, 400, "unknown field \"%.64s\"; allowed: image, images, pixels, top_k", key);
            goto done;
        }
    }

    const json_t *image = json_object_get(root, "image");
    const json_t *images = json_object_get(root, "images");
    const json_t *pixels = json_object_get(root, "pixels");
    if ((image != NULL) + (images != NULL) + (pixels != NULL) != 1) {
        status = proto_perr(err, 400,
                            "give exactly one of \"image\" (base64), \"images\" (array of "
                            "base64) or \"pixels\" (array [H][W] or [H][W][C])");
        goto done;
    }

    out->top_k = PROTO_DEFAULT_TOP_K;
    const json_t *top_k = json_object_get(root, "top_k");
    if (top_k != NULL) {
        if (!json_is_integer(top_k)) {
            status = proto_perr(err, 400, "top_k must be a positive integer, got %s",
                                proto_type_name(top_k));
            goto done;
        }
        if (json_integer_value(top_k) < 1) {
            status =
                proto_perr(err, 400, "top_k must be a positive integer, got %" JSON_INTEGER_FORMAT,
                           json_integer_value(top_k));
            goto done;
        }
        out->top_k = json_integer_value(top_k) > n_labels ? n_labels
                                                          : (int)json_integer_value(top_k);
    }
    if (out->top_k > n_labels)
        out->top_k = n_labels;

    /* Types and counts first: cheap, and they bound the tensor allocated next. */
    if (image != NULL) {
        out->form = PROTO_FORM_IMAGE;
        out->n = 1;
        if (!json_is_string(image)) {
            status = proto_perr(err, 400, "image must be a base64 string, got %s",
                                proto_type_name(image));
            goto done;
        }
    } else if (images != NULL) {
        out->form = PROTO_FORM_IMAGES;
        if (!json_is_array(images)) {
            status = proto_perr(err, 400, "images must be an array of base64 strings, got %s",
                                proto_type_name(images));
            goto done;
        }
        size_t n = json_array_size(images);
        if (n == 0) {
            status = proto_perr(err, 400, "images is empty: send at least one base64 image");
            goto done;
        }
        if (n > (size_t)max_images) {
            status = proto_perr(err, 413,
                                "too many images: %zu; this server takes at most %d per "
                                "request (max_images_per_request), split the request",
                                n, max_images);
            goto done;
        }
        for (size_t i = 0; i < n; i++) {
            if (!json_is_string(json_array_get(images, i))) {
                status = proto_perr(err, 400, "images[%zu] must be a base64 string, got %s", i,
                                    proto_type_name(json_array_get(images, i)));
                goto done;
            }
        }
        out->n = (int)n;
    } else {
        out->form = PROTO_FORM_PIXELS;
        out->n = 1;
    }

    size_t chw = (size_t)pp->channels * (size_t)pp->height * (size_t)pp->width;
    out->inputs = malloc((size_t)out->n * chw * sizeof *out->inputs);
    if (out->inputs == NULL) {
        status = proto_perr(err, 500, "out of memory for %d input images", out->n);
        goto done;
    }

    if (image != NULL) {
        status = decode_image(json_string_value(image), json_string_length(image), "image", pp,
                              out->inputs, err);
    } else if (images != NULL) {
        char what[32];
        for (int i = 0; i < out->n && status == 0; i++) {
            const json_t *s = json_array_get(images, (size_t)i);
            snprintf(what, sizeof what, "images[%d]", i);
            status = decode_image(json_string_value(s), json_string_length(s), what, pp,
                                  out->inputs + (size_t)i * chw, err);
        }
    } else {
        status = parse_pixels(pixels, pp, out->inputs, err);
    }

done:
    json_decref(root);
    if (status != 0)
        proto_classify_req_free(out);
    return status;
}

void proto_classify_req_free(proto_classify_req *req)
{
    free(req->inputs);
    req->inputs = NULL;
}

/* ---- BERT requests ------------------------------------------------------------ */

/* Rejects keys of obj not in allowed; "where" names obj in the message. */
int proto_check_fields(const json_t *obj, const char *const *allowed, size_t n_allowed,
                       const char *where, proto_error *err)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value) {
        bool known = false;
        for (size_t i = 0; i < n_allowed; i++)
            known = known || strcmp(key, allowed[i]) == 0;
        if (!known) {
            char list[160];
            size_t n = 0;
            list[0] = '\0';
            for (size_t i = 0; i < n_allowed && n < sizeof list; i++) {
                int w = snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", allowed[i]);
                if (w < 0)
                    break;
                n += (size_t)w;
            }
            return proto_perr(err, 400, "unknown field \"%.64s\"%s; allowed: %s", key, where, list);
        }
    }
    return 0;
}

/* The special ids a BERT request needs; the registry refuses vocabularies without
 * them, so a failure here is the server's fault. */
static int bert_specials(const proto_bert_model *bm, wordpiece_specials *sp, proto_error *err)
{
    *sp = wordpiece_special_ids(bm->wp);
    if (sp->cls < 0 || sp->sep < 0 || sp->mask < 0)
        return proto_perr(err, 500, "model %s's vocabulary lacks [CLS], [SEP] or [MASK]", bm->name);
    if (bm->max_tokens < 3)
        return proto_perr(err, 500, "model %s takes %d tokens, too few for any text", bm->name,
                          bm->max_tokens);
    return 0;
}

/* A JSON string field to be tokenized: a string, within WORDPIECE_MAX_TEXT_BYTES. */
static int text_field(const json_t *v, const char *what, const char *hint, proto_error *err)
{
    if (!json_is_string(v))
        return proto_perr(err, 400, "%s must be a string%s, got %s", what, hint,
                          proto_type_name(v));
    if (json_string_length(v) > WORDPIECE_MAX_TEXT_BYTES)
        return proto_perr(err, 413, "%s is %zu bytes; at most %d bytes are taken", what,
                          json_string_length(v), WORDPIECE_MAX_TEXT_BYTES);
    return 0;
}

/* Tokenizes s into ids (at most cap written); *n is the count the whole text needs. */
static int tokenize(const proto_bert_model *bm, const json_t *s, const char *what, int32_t *ids,
                    int cap, int *n, proto_error *err)
{
    engine_err e;
    engine_status st = wordpiece_encode(bm->wp, json_string_value(s), json_string_length(s), ids,
                                        cap < 0 ? 0 : cap, n, &e);
    switch (st) {
    case ENGINE_OK:
        return 0;
    case ENGINE_ERR_NOMEM:
        return proto_perr(err, 500, "out of memory tokenizing %s", what);
    default: /* jansson only hands out valid UTF-8, but the tokenizer checks again */
        return proto_perr(err, 400, "%s: %s", what, e.msg);
    }
}

/* top_k: a positive integer up to PROTO_FILL_MASK_MAX_TOP_K. */
static int parse_fill_mask_top_k(const json_t *v, int *out, proto_error *err)
{
    if (!json_is_integer(v))
        return proto_perr(err, 400, "top_k must be a positive integer, got %s", proto_type_name(v));
    json_int_t k = json_integer_value(v);
    if (k < 1 || k > PROTO_FILL_MASK_MAX_TOP_K)
        return proto_perr(err, 400, "top_k must be from 1 to %d, got %" JSON_INTEGER_FORMAT,
                          PROTO_FILL_MASK_MAX_TOP_K, k);
    *out = (int)k;
    return 0;
}

/* One target word -> the id Hugging Face's fill-mask pipeline scores for it: the
 * word itself if it is a token, else the first piece of its tokenization that is
 * not [UNK].  *id is -1 when there is none. */
static int target_id(const proto_bert_model *bm, const json_t *v, const char *what,
                     int32_t *id, proto_error *err)
{
    *id = -1;
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    *id = wordpiece_id(bm->wp, s, len);
    if (*id >= 0)
        return 0;
    /* Every piece comes from at least one byte of the word, so len + 1 ids suffice. */
    int32_t pieces[PROTO_FILL_MASK_MAX_TARGET_BYTES + 1];
    int n;
    int st = tokenize(bm, v, what, pieces, (int)(sizeof pieces / sizeof pieces[0]), &n, err);
    if (st != 0)
        return st;
    int32_t unk = wordpiece_special_ids(bm->wp).unk;
    for (int i = 0; i < n && i < (int)(sizeof pieces / sizeof pieces[0]); i++) {
        if (pieces[i] != unk) {
            *id = pieces[i];
            return 0;
        }
    }
    return 0;
}

/* targets: a string or a non-empty array of strings -> distinct ids, first seen first. */
static int parse_targets(const proto_bert_model *bm, const json_t *v, proto_fill_mask_req *out,
                         proto_error *err)
{
    bool one = json_is_string(v);
    if (!one && !json_is_array(v))
        return proto_perr(err, 400, "targets must be an array of words (or one word), got %s",
                          proto_type_name(v));
    size_t n = one ? 1 : json_array_size(v);
    if (n == 0)
        return proto_perr(err, 400,
                          "targets is empty: give at least one word, or leave it out to "
                          "rank the whole vocabulary");
    if (n > PROTO_FILL_MASK_MAX_TARGETS)
        return proto_perr(err, 413, "too many targets: %zu; at most %d", n,
                          PROTO_FILL_MASK_MAX_TARGETS);
    out->targets = malloc(n * sizeof *out->targets);
    if (out->targets == NULL)
        return proto_perr(err, 500, "out of memory for %zu targets", n);
    for (size_t i = 0; i < n; i++) {
        const json_t *t = one ? v : json_array_get(v, i);
        char what[40];
        if (one)
            snprintf(what, sizeof what, "targets");
        else
            snprintf(what, sizeof what, "targets[%zu]", i);
        if (!json_is_string(t))
            return proto_perr(err, 400, "%s must be a string (a word), got %s", what,
                              proto_type_name(t));
        size_t tl = json_string_length(t);
        if (tl == 0)
            return proto_perr(err, 400, "%s is empty: give a word", what);
        if (tl > PROTO_FILL_MASK_MAX_TARGET_BYTES)
            return proto_perr(err, 422, "%s is %zu bytes; a target is one word of at most %d bytes",
                              what, tl, PROTO_FILL_MASK_MAX_TARGET_BYTES);
        int32_t id;
        int st = target_id(bm, t, what, &id, err);
        if (st != 0)
            return st;
        if (id < 0 || id >= bm->candidates)
            return proto_perr(err, 422, "%s \"%.64s\" has no token in model %s's vocabulary", what,
                              json_string_value(t), bm->name);
        bool seen = false;
        for (int k = 0; k < out->n_targets && !seen; k++)
            seen = out->targets[k] == id;
        if (!seen)
            out->targets[out->n_targets++] = id;
    }
    return 0;
}

static const char *const fill_mask_fields[] = {"text", "inputs", "top_k", "targets",
                                               "parameters", "options"};
static const char *const fill_mask_parameters[] = {"top_k", "targets"};

int proto_parse_fill_mask(const char *body, size_t len, const proto_bert_model *bm,
                          proto_fill_mask_req *out, proto_error *err)
{
    memset(out, 0, sizeof *out);
    json_t *root =
        proto_load_body(body, len, "{\"text\": \"The [MASK] sat on the mat.\", \"top_k\": 5}", err);
    if (root == NULL)
        return err->status;

    int status = 0;
    wordpiece_specials sp;
    if ((status = bert_specials(bm, &sp, err)) != 0)
        goto done;
    if (!json_is_object(root)) {
        status =
            proto_perr(err, 400, "body must be a JSON object with \"text\" (or \"inputs\"); got %s",
                       proto_type_name(root));
        goto done;
    }
    if ((status = proto_check_fields(root, fill_mask_fields,
                                     sizeof fill_mask_fields / sizeof fill_mask_fields[0], "",
                                     err)) != 0)
        goto done;

    const json_t *text = json_object_get(root, "text");
    const json_t *inputs = json_object_get(root, "inputs");
    if ((text != NULL) == (inputs != NULL)) {
        status = proto_perr(err, 400,
                            "give exactly one of \"text\" or \"inputs\": a string with one or "
                            "more [MASK] tokens");
        goto done;
    }
    out->form = text ? PROTO_BERT_TEXT : PROTO_BERT_INPUTS;
    const char *what = text ? "text" : "inputs";
    if (inputs != NULL && json_is_array(inputs)) {
        status = proto_perr(err, 400, "inputs must be one string; send one text per request");
        goto done;
    }
    if ((status = text_field(text ? text : inputs, what, " containing [MASK]", err)) != 0)
        goto done;

    /* top_k and targets: at the top level, or in "parameters" as Hugging Face's
     * Inference API sends them, not both. */
    const json_t *params = json_object_get(root, "parameters");
    const json_t *options = json_object_get(root, "options");
    if (options != NULL && !json_is_object(options)) {
        status =
            proto_perr(err, 400, "options must be an object, got %s", proto_type_name(options));
        goto done;
    }
    const json_t *top_k = json_object_get(root, "top_k");
    const json_t *targets = json_object_get(root, "targets");
    if (params != NULL) {
        if (!json_is_object(params)) {
            status = proto_perr(err, 400,
                                "parameters must be an object with top_k and/or targets, "
                                "got %s",
                                proto_type_name(params));
            goto done;
        }
        if ((status =
                 proto_check_fields(params, fill_mask_parameters,
                                    sizeof fill_mask_parameters / sizeof fill_mask_parameters[0],
                                    " in parameters", err)) != 0)
            goto done;
        for (size_t i = 0; i < 2; i++) {
            const char *k = fill_mask_parameters[i];
            if (json_object_get(params, k) != NULL && json_object_get(root, k) != NULL) {
                status = proto_perr(err, 400,
                                    "%s is given twice, at the top level and in parameters: "
                                    "give it once",
                                    k);
                goto done;
            }
        }
        if (top_k == NULL)
            top_k = json_object_get(params, "top_k");
        if (targets == NULL)
            targets = json_object_get(params, "targets");
    }
    out->top_k = PROTO_DEFAULT_TOP_K;
    if (top_k != NULL && (status = parse_fill_mask_top_k(top_k, &out->top_k, err)) != 0)
        goto done;

    /* [CLS] text [SEP], refused (never truncated) past the model's positions. */
    out->ids = malloc((size_t)bm->max_tokens * sizeof *out->ids);
    if (out->ids == NULL) {
        status = proto_perr(err, 500, "out of memory for %d tokens", bm->max_tokens);
        goto done;
    }
    int n;
    if ((status = tokenize(bm, text ? text : inputs, what, out->ids + 1, bm->max_tokens - 2, &n,
                           err)) != 0)
        goto done;
    if (n > bm->max_tokens - 2) {
        status = proto_perr(err, 413,
                            "%s is %d tokens with [CLS] and [SEP]; model %s takes at most %d "
                            "(max_position_embeddings): shorten the text",
                            what, n + 2, bm->name, bm->max_tokens);
        goto done;
    }
    out->ids[0] = sp.cls;
    out->ids[n + 1] = sp.sep;
    out->len = n + 2;

    for (int i = 1; i <= n; i++)
        out->n_mask += out->ids[i] == sp.mask;
    if (out->n_mask == 0) {
        status = proto_perr(err, 422,
                            "%s has no [MASK] token: write [MASK] (upper case, in brackets) "
                            "where a word is to be predicted",
                            what);
        goto done;
    }
    out->mask_pos = malloc((size_t)out->n_mask * sizeof *out->mask_pos);
    if (out->mask_pos == NULL) {
        status = proto_perr(err, 500, "out of memory for %d masks", out->n_mask);
        goto done;
    }
    for (int i = 1, m = 0; i <= n; i++)
        if (out->ids[i] == sp.mask)
            out->mask_pos[m++] = i;

    if (targets != NULL && (status = parse_targets(bm, targets, out, err)) != 0)
        goto done;
    int ranked = out->targets ? out->n_targets : bm->candidates;
    if (out->top_k > ranked)
        out->top_k = ranked;
    if ((long long)out->n_mask * out->top_k > PROTO_FILL_MASK_MAX_ANSWERS) {
        status = proto_perr(err, 422,
                            "%d masks x top_k %d is %lld answers; at most %d in one response: "
                            "lower top_k or send fewer masks per request",
                            out->n_mask, out->top_k, (long long)out->n_mask * out->top_k,
                            PROTO_FILL_MASK_MAX_ANSWERS);
        goto done;
    }

done:
    json_decref(root);
    if (status != 0)
        proto_fill_mask_req_free(out);
    return status;
}

void proto_fill_mask_req_free(proto_fill_mask_req *req)
{
    free(req->ids);
    free(req->mask_pos);
    free(req->targets);
    req->ids = req->mask_pos = req->targets = NULL;
}

static const char *const next_sentence_fields[] = {"text_a", "text_b"};

int proto_parse_next_sentence(const char *body, size_t len, const proto_bert_model *bm,
                              proto_next_sentence_req *out, proto_error *err)
{
    memset(out, 0, sizeof *out);
    json_t *root = proto_load_body(
        body, len, "{\"text_a\": \"I went out.\", \"text_b\": \"It was raining.\"}", err);
    if (root == NULL)
        return err->status;

    int status = 0;
    wordpiece_specials sp;
    if ((status = bert_specials(bm, &sp, err)) != 0)
        goto done;
    if (!json_is_object(root)) {
        status = proto_perr(err, 400,
                            "body must be a JSON object with \"text_a\" and \"text_b\"; "
                            "got %s",
                            proto_type_name(root));
        goto done;
    }
    if ((status = proto_check_fields(root, next_sentence_fields,
                                     sizeof next_sentence_fields / sizeof next_sentence_fields[0],
                                     "", err)) != 0)
        goto done;
    const json_t *a = json_object_get(root, "text_a"), *b = json_object_get(root, "text_b");
    if (a == NULL || b == NULL) {
        status = proto_perr(err, 400,
                            "give both \"text_a\" (the first sentence) and \"text_b\" (the "
                            "sentence that may follow it)");
        goto done;
    }
    if ((status = text_field(a, "text_a", "", err)) != 0 ||
        (status = text_field(b, "text_b", "", err)) != 0)
        goto done;

    /* [CLS] a [SEP] b [SEP]: a is written after [CLS], b after a's [SEP] while both fit;
     * past the limit only the counts matter, for the message. */
    int max = bm->max_tokens;
    out->ids = malloc((size_t)max * sizeof *out->ids);
    out->type_ids = malloc((size_t)max * sizeof *out->type_ids);
    if (out->ids == NULL || out->type_ids == NULL) {
        status = proto_perr(err, 500, "out of memory for %d tokens", max);
        goto done;
    }
    int na, nb;
    if ((status = tokenize(bm, a, "text_a", out->ids + 1, max - 3, &na, err)) != 0)
        goto done;
    bool a_fits = na <= max - 3;
    if ((status = tokenize(bm, b, "text_b", a_fits ? out->ids + 2 + na : out->ids,
                           a_fits ? max - 3 - na : 0, &nb, err)) != 0)
        goto done;
    if ((long long)na + nb + 3 > max) {
        status = proto_perr(err, 413,
                            "text_a and text_b are %lld tokens with [CLS] and two [SEP]; "
                            "model %s takes at most %d (max_position_embeddings): shorten them",
                            (long long)na + nb + 3, bm->name, max);
        goto done;
    }
    out->len = na + nb + 3;
    out->ids[0] = sp.cls;
    out->ids[na + 1] = sp.sep;
    out->ids[out->len - 1] = sp.sep;
    for (int i = 0; i < out->len; i++)
        out->type_ids[i] = i <= na + 1 ? 0 : 1;

done:
    json_decref(root);
    if (status != 0)
        proto_next_sentence_req_free(out);
    return status;
}

void proto_next_sentence_req_free(proto_next_sentence_req *req)
{
    free(req->ids);
    free(req->type_ids);
    req->ids = req->type_ids = NULL;
}

/* ---- responses -------------------------------------------------------------- */

/* A JSON string of s; text that is not valid UTF-8 has its bytes >= 0x80 and
 * control bytes replaced by '?' rather than failing the whole response. */
json_t *proto_jstr(const char *s)
{
    json_t *j = json_string(s);
    if (j != NULL || s == NULL)
        return j;
    size_t n = strlen(s);
    char *copy = malloc(n + 1);
    if (copy == NULL)
        return NULL;
    for (size_t i = 0; i <= n; i++) {
        unsigned char ch = (unsigned char)s[i];
        copy[i] = (ch == 0 || (ch >= 0x20 && ch < 0x7f)) ? (char)ch : '?';
    }
    j = json_string(copy);
    free(copy);
    return j;
}

/* Steals v; true if it was set (json_object_set_new frees v either way). */
bool proto_set(json_t *obj, const char *key, json_t *v)
{
    return v != NULL && json_object_set_new(obj, key, v) == 0;
}

char *proto_dump(json_t *root)
{
    char *s = root ? json_dumps(root, PROTO_JSON_FLAGS) : NULL;
    json_decref(root);
    return s;
}

typedef struct scored {
    float score;
    int index;
} scored;

/* Descending score, ascending index on ties; NaN sorts last. */
static int by_score_desc(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    bool xn = isnan(x->score), yn = isnan(y->score);
    if (xn != yn)
        return xn ? 1 : -1;
    if (!xn && x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

static json_t *predictions(const float *row, int k, int top_k, char *const *labels, scored *tmp)
{
    for (int j = 0; j < k; j++)
        tmp[j] = (scored){row[j], j};
    qsort(tmp, (size_t)k, sizeof *tmp, by_score_desc);
    json_t *arr = json_array();
    for (int t = 0; t < top_k && arr != NULL; t++) {
        json_t *p = json_object();
        double score = isfinite(tmp[t].score) ? (double)tmp[t].score : 0.0;
        if (p == NULL || !proto_set(p, "label", proto_jstr(labels[tmp[t].index])) ||
            !proto_set(p, "index", json_integer(tmp[t].index)) ||
            !proto_set(p, "score", json_real(score))) {
            json_decref(p);
            p = NULL;
        }
        /* append_new steals p even when it fails. */
        if (p == NULL || json_array_append_new(arr, p) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return arr;
}

char *proto_format_classify(const char *model, proto_form form, const float *probs, int n,
                            int k_classes, int top_k, char *const *labels, proto_error *err)
{
    if (top_k > k_classes)
        top_k = k_classes;
    scored *tmp = malloc((size_t)k_classes * sizeof *tmp);
    json_t *root = json_object();
    bool ok = tmp != NULL && root != NULL && proto_set(root, "model", proto_jstr(model));
    if (ok && form == PROTO_FORM_IMAGES) {
        json_t *results = json_array();
        ok = proto_set(root, "results", results);
        for (int i = 0; i < n && ok; i++) {
            json_t *r = json_object();
            ok = r != NULL && proto_set(r, "predictions",
                                        predictions(probs + (size_t)i * (size_t)k_classes,
                                                    k_classes, top_k, labels, tmp));
            if (!ok)
                json_decref(r);
            else
                ok = json_array_append_new(results, r) == 0; /* steals r either way */
        }
    } else if (ok) {
        ok = proto_set(root, "predictions", predictions(probs, k_classes, top_k, labels, tmp));
    }
    free(tmp);
    char *s = ok ? proto_dump(root) : (json_decref(root), NULL);
    if (s == NULL)
        proto_perr(err, 500, "out of memory formatting the response");
    return s;
}

/* ---- BERT responses ------------------------------------------------------------- */

/* Scores in answers: finite reals (json_real refuses NaN and infinities). */
static json_t *score_json(float s) { return json_real(isfinite(s) ? (double)s : 0.0); }

/* The text of ids with ids[pos] = id, as the fill-mask pipeline shows it (see
 * proto.h); seq is scratch of len ids. */
static char *filled_sequence(const proto_bert_model *bm, const proto_fill_mask_req *req,
                             int pos, int32_t id, int32_t *seq)
{
    if (req->n_mask == 1) {
        memcpy(seq, req->ids, (size_t)req->len * sizeof *seq);
        seq[pos] = id;
        return wordpiece_decode(bm->wp, seq, req->len, true);
    }
    int32_t pad = wordpiece_special_ids(bm->wp).pad;
    int n = 0;
    for (int i = 1; i < req->len - 1; i++) { /* without our [CLS] and [SEP] */
        int32_t t = i == pos ? id : req->ids[i];
        if (t != pad || pad < 0)
            seq[n++] = t;
    }
    return wordpiece_decode(bm->wp, seq, n, false);
}

static json_t *fill_mask_answer(const proto_bert_model *bm, const proto_fill_mask_req *req,
                                int pos, int32_t id, float score, int32_t *seq)
{
    char *token_str = wordpiece_decode(bm->wp, &id, 1, false);
    char *sequence = filled_sequence(bm, req, pos, id, seq);
    json_t *a = json_object();
    bool ok = a != NULL && token_str != NULL && sequence != NULL &&
              proto_set(a, "score", score_json(score)) && proto_set(a, "token", json_integer(id)) &&
              proto_set(a, "token_str", proto_jstr(token_str)) &&
              proto_set(a, "sequence", proto_jstr(sequence));
    free(token_str);
    free(sequence);
    if (!ok) {
        json_decref(a);
        return NULL;
    }
    return a;
}

char *proto_format_fill_mask(const proto_bert_model *bm, const proto_fill_mask_req *req,
                             const int32_t *top_ids, const float *top_scores, proto_error *err)
{
    int32_t *seq = malloc((size_t)req->len * sizeof *seq);
    json_t *root = json_object(), *masks = NULL;
    bool ok = seq != NULL && root != NULL && proto_set(root, "model", proto_jstr(bm->name));
    if (ok) {
        masks = json_array(); /* root owns it once set; appended to below */
        ok = proto_set(root, "masks", masks);
    }
    for (int m = 0; m < req->n_mask && ok; m++) {
        json_t *list = json_array();
        ok = list != NULL && json_array_append_new(masks, list) == 0; /* steals list */
        for (int k = 0; k < req->top_k && ok; k++) {
            size_t at = (size_t)m * (size_t)req->top_k + (size_t)k;
            json_t *a = fill_mask_answer(bm, req, req->mask_pos[m], top_ids[at], top_scores[at],
                                         seq);
            ok = a != NULL && json_array_append_new(list, a) == 0;
        }
    }
    free(seq);
    char *s = ok ? proto_dump(root) : (json_decref(root), NULL);
    if (s == NULL)
        proto_perr(err, 500, "out of memory formatting the response");
    return s;
}

char *proto_format_next_sentence(const char *model, float is_next, proto_error *err)
{
    json_t *root = json_object();
    bool ok = root != NULL && proto_set(root, "model", proto_jstr(model)) &&
              proto_set(root, "is_next", score_json(is_next)) &&
              proto_set(root, "not_next", score_json(1.0f - is_next));
    char *s = ok ? proto_dump(root) : (json_decref(root), NULL);
    if (s == NULL)
        proto_perr(err, 500, "out of memory formatting the response");
    return s;
}

/* The fields every model has first: name, kind, ready. */
static json_t *model_head(const proto_model_info *m)
{
    json_t *o = json_object();
    if (o == NULL || !proto_set(o, "name", proto_jstr(m->name)) ||
        !proto_set(o, "kind", proto_jstr(m->kind)) ||
        !proto_set(o, "ready", json_boolean(m->ready))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *bert_model_json(const proto_model_info *m)
{
    json_t *o = model_head(m);
    if (o == NULL || !proto_set(o, "max_tokens", json_integer(m->max_tokens)) ||
        !proto_set(o, "vocab_size", json_integer(m->vocab_size)) ||
        !proto_set(o, "next_sentence", json_boolean(m->next_sentence)) ||
        !proto_set(o, "max_batch_size", json_integer(m->max_batch_size)) ||
        !proto_set(o, "max_batch_tokens", json_integer(m->max_batch_tokens))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* (channels, height, width): a CNN's input, a GAN's output image */
static json_t *shape_json(const proto_model_info *m)
{
    json_t *o = json_object();
    if (o == NULL || !proto_set(o, "channels", json_integer(m->channels)) ||
        !proto_set(o, "height", json_integer(m->height)) ||
        !proto_set(o, "width", json_integer(m->width))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *gan_model_json(const proto_model_info *m)
{
    json_t *o = model_head(m);
    if (o == NULL || !proto_set(o, "architecture", proto_jstr(m->architecture)) ||
        !proto_set(o, "latent_dim", json_integer(m->latent_dim)) ||
        !proto_set(o, "output", shape_json(m)) ||
        !proto_set(o, "classes", json_integer(m->classes)) ||
        !proto_set(o, "max_count", json_integer(m->max_count)) ||
        !proto_set(o, "max_batch_size", json_integer(m->max_batch_size))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *model_json(const proto_model_info *m)
{
    if (m->kind != NULL && strcmp(m->kind, "bert") == 0)
        return bert_model_json(m);
    if (m->kind != NULL && strcmp(m->kind, "gan") == 0)
        return gan_model_json(m);
    json_t *o = model_head(m);
    if (o == NULL || !proto_set(o, "architecture", proto_jstr(m->architecture)) ||
        !proto_set(o, "inputs", shape_json(m)) ||
        !proto_set(o, "classes", json_integer(m->classes)) ||
        !proto_set(o, "max_batch_size", json_integer(m->max_batch_size))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *proto_format_models(const proto_model_info *models, int n)
{
    json_t *root = json_object(), *arr = json_array();
    if (root == NULL || !proto_set(root, "models", arr)) {
        json_decref(root);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        json_t *m = model_json(&models[i]);
        if (m == NULL || json_array_append_new(arr, m) != 0) {
            json_decref(root);
            return NULL;
        }
    }
    return proto_dump(root);
}

char *proto_format_model(const proto_model_info *model)
{
    return proto_dump(model_json(model));
}

char *proto_format_status(const char *status)
{
    json_t *root = json_object();
    if (root == NULL || !proto_set(root, "status", proto_jstr(status))) {
        json_decref(root);
        return NULL;
    }
    return proto_dump(root);
}

char *proto_format_error(const char *msg)
{
    json_t *root = json_object();
    if (root == NULL || !proto_set(root, "error", proto_jstr(msg))) {
        json_decref(root);
        return NULL;
    }
    return proto_dump(root);
}
