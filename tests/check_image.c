/* check_image.c — image decoding, conversion, resizing and normalisation.
 *
 * Images are encoded here: stb_image_write for ordinary PNGs and JPEGs, and a small
 * PNG writer (png_build) for what stb cannot write — interlaced, 1-bit, 16-bit,
 * palette images, and hostile files with lying headers or zlib bombs.  Expected
 * values come from the definitions (p / 255, PIL's luma formula, torchvision's crop
 * offsets), so PNG cases compare exactly.  Hostile inputs live in buffers of exactly
 * their length, so under ASan any read past the end aborts the test.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include "engine/image.h"

/* In libstb.so but declared only inside stb_image_write.h's implementation part. */
unsigned char *stbi_zlib_compress(unsigned char *data, int data_len, int *out_len,
                                  int quality);

/* ---- helpers ------------------------------------------------------------------ */

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

static void buf_put(buf *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void buf_put32(buf *b, uint32_t v)
{
    uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    buf_put(b, be, 4);
}

static void write_cb(void *ctx, void *data, int size)
{
    buf_put(ctx, data, (size_t)size);
}

static buf png_encode(const uint8_t *px, int w, int h, int c)
{
    buf b = {0};
    ck_assert(stbi_write_png_to_func(write_cb, &b, w, h, c, px, w * c));
    return b;
}

static buf jpeg_encode(const uint8_t *px, int w, int h, int c)
{
    buf b = {0};
    ck_assert(stbi_write_jpg_to_func(write_cb, &b, w, h, c, px, 100));
    return b;
}

static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return c ^ 0xffffffffu;
}

static void png_chunk(buf *b, const char *type, const uint8_t *data, size_t n)
{
    buf_put32(b, (uint32_t)n);
    size_t start = b->len;
    buf_put(b, type, 4);
    if (n)
        buf_put(b, data, n);
    buf_put32(b, crc32_png(b->p + start, n + 4));
}

static void png_ihdr(buf *b, uint32_t w, uint32_t h, int depth, int ctype, int interlace)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    buf_put(b, sig, 8);
    uint8_t ihdr[13] = {(uint8_t)(w >> 24), (uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w,
                        (uint8_t)(h >> 24), (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h,
                        (uint8_t)depth, (uint8_t)ctype, 0, 0, (uint8_t)interlace};
    png_chunk(b, "IHDR", ihdr, 13);
}

/* A PNG from raw (already filtered) scanline bytes; the stream is zlib-compressed. */
static buf png_from_raw(uint32_t w, uint32_t h, int depth, int ctype, int interlace,
                        const uint8_t *plte, size_t plte_len, const uint8_t *raw, size_t n)
{
    buf b = {0};
    png_ihdr(&b, w, h, depth, ctype, interlace);
    if (plte)
        png_chunk(&b, "PLTE", plte, plte_len);
    int zlen;
    uint8_t *z = stbi_zlib_compress((uint8_t *)raw, (int)n, &zlen, 8);
    ck_assert_ptr_nonnull(z);
    png_chunk(&b, "IDAT", z, (size_t)zlen);
    free(z);
    png_chunk(&b, "IEND", (const uint8_t *)"", 0);
    return b;
}

static int channels_of(int ctype)
{
    static const int n[7] = {1, 0, 3, 1, 2, 0, 4};
    return n[ctype];
}

/* Packs sample(x, y, ch) into PNG scanlines (filter 0), Adam7 if interlace, as any
 * PNG writer would; then png_from_raw.  Samples are depth bits, 16-bit big-endian. */
static buf png_build(int w, int h, int depth, int ctype, int interlace,
                     unsigned (*sample)(int x, int y, int ch), const uint8_t *plte,
                     size_t plte_len)
{
    static const int adam7[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                    {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
    static const int single[1][4] = {{0, 0, 1, 1}};
    const int (*passes)[4] = interlace ? adam7 : single;
    const int n_passes = interlace ? 7 : 1, c = channels_of(ctype);
    buf raw = {0};
    for (int p = 0; p < n_passes; p++) {
        const int x0 = passes[p][0], y0 = passes[p][1], dx = passes[p][2], dy = passes[p][3];
        if (w <= x0 || h <= y0)
            continue;
        for (int y = y0; y < h; y += dy) {
            uint8_t zero = 0, acc = 0;
            int bits = 0;
            buf_put(&raw, &zero, 1);
            for (int x = x0; x < w; x += dx)
                for (int ch = 0; ch < c; ch++) {
                    unsigned v = sample(x, y, ch);
                    if (depth == 16) {
                        uint8_t be[2] = {(uint8_t)(v >> 8), (uint8_t)v};
                        buf_put(&raw, be, 2);
                    } else if (depth == 8) {
                        uint8_t u = (uint8_t)v;
                        buf_put(&raw, &u, 1);
                    } else {
                        acc = (uint8_t)(acc | v << (8 - depth - bits));
                        bits += depth;
                        if (bits == 8) {
                            buf_put(&raw, &acc, 1);
                            acc = 0, bits = 0;
                        }
                    }
                }
            if (bits)
                buf_put(&raw, &acc, 1);
        }
    }
    buf b = png_from_raw((uint32_t)w, (uint32_t)h, depth, ctype, interlace, plte, plte_len,
                         raw.p, raw.len);
    free(raw.p);
    return b;
}

static image_preproc pp_make(int c, int h, int w, image_resize_mode mode)
{
    image_preproc pp = {.channels = c, .height = h, .width = w, .resize = mode,
                        .mean = {0, 0, 0}, .std = {1, 1, 1}};
    return pp;
}

/* out holds C*H*W floats plus guards that must stay untouched. */
#define GUARD 16
static float *out_alloc(const image_preproc *pp)
{
    size_t n = (size_t)pp->channels * pp->height * pp->width;
    float *o = malloc((n + GUARD) * sizeof *o);
    ck_assert_ptr_nonnull(o);
    for (size_t i = 0; i < n + GUARD; i++)
        o[i] = -999.0f;
    return o;
}

static void out_check_guard(const float *o, const image_preproc *pp)
{
    size_t n = (size_t)pp->channels * pp->height * pp->width;
    for (size_t i = n; i < n + GUARD; i++)
        ck_assert_float_eq(o[i], -999.0f);
}

/* The pixel level (0..255) a normalised mean-0 std-1 output stands for. */
static int level(float v)
{
    return (int)lrintf(v * 255.0f);
}

/* Decodes b with pp, expecting ENGINE_OK. */
static float *decode_ok(const buf *b, const image_preproc *pp)
{
    float *o = out_alloc(pp);
    engine_err err = {{0}};
    engine_status st = image_to_tensor(b->p, b->len, pp, o, &err);
    ck_assert_msg(st == ENGINE_OK, "status %d: %s", st, err.msg);
    out_check_guard(o, pp);
    return o;
}

/* Copies bytes into an exactly sized buffer and decodes; returns the status. */
static engine_status decode_exact(const uint8_t *bytes, size_t n, const image_preproc *pp,
                                  engine_err *err)
{
    uint8_t *copy = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(copy);
    if (n)
        memcpy(copy, bytes, n);
    float *o = out_alloc(pp);
    engine_status st = image_to_tensor(copy, n, pp, o, err);
    out_check_guard(o, pp);
    free(o);
    free(copy);
    return st;
}

/* ---- exact decoding and channel conversion -------------------------------------- */

START_TEST(png_gray_exact)
{
    const uint8_t px[6] = {0, 1, 128, 254, 255, 77};
    buf b = png_encode(px, 3, 2, 1);
    image_preproc pp = pp_make(1, 2, 3, IMAGE_RESIZE_NONE);
    float *o = decode_ok(&b, &pp);
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq(o[i], (float)px[i] / 255.0f);
    free(o);
    free(b.p);
}
END_TEST

/* RGB->gray is Pillow's convert("L"): (19595 R + 38470 G + 7471 B + 0x8000) >> 16.
 * Values from Pillow 9.4; the first two round differently from R*299/1000+... */
START_TEST(png_rgb_to_gray_pil)
{
    static const uint8_t rgb[][4] = {
        {0, 207, 35, 126}, {0, 217, 80, 137}, {255, 255, 255, 255}, {1, 2, 3, 2},
        {255, 0, 0, 76},   {0, 255, 0, 150},  {0, 0, 255, 29},      {128, 128, 128, 128},
        {10, 200, 30, 124}, {123, 45, 67, 71}, {250, 5, 128, 92},   {0, 0, 0, 0},
    };
    enum { N = sizeof rgb / sizeof rgb[0] };
    uint8_t px[N * 3];
    for (int i = 0; i < N; i++)
        memcpy(px + 3 * i, rgb[i], 3);
    buf b = png_encode(px, N, 1, 3);
    image_preproc pp = pp_make(1, 1, N, IMAGE_RESIZE_NONE);
    float *o = decode_ok(&b, &pp);
    for (int i = 0; i < N; i++)
        ck_assert_msg(o[i] == (float)rgb[i][3] / 255.0f, "(%d,%d,%d): got %d, PIL %d",
                      rgb[i][0], rgb[i][1], rgb[i][2], level(o[i]), rgb[i][3]);
    free(o);
    free(b.p);
}
END_TEST

/* Every one of the 2^24 colours, against checksums of Pillow 9.4's convert("L") of
 * the same 4096x4096 image (pixel i = (i >> 16, i >> 8 & 255, i & 255)). */
START_TEST(rgb_to_gray_all_colours)
{
    const int side = 4096;
    const size_t n = (size_t)side * side;
    uint8_t *px = malloc(n * 3);
    ck_assert_ptr_nonnull(px);
    for (size_t i = 0; i < n; i++) {
        px[3 * i] = (uint8_t)(i >> 16);
        px[3 * i + 1] = (uint8_t)(i >> 8);
        px[3 * i + 2] = (uint8_t)i;
    }
    image_preproc pp = pp_make(1, side, side, IMAGE_RESIZE_NONE);
    float *o = malloc(n * sizeof *o);
    ck_assert_ptr_nonnull(o);
    engine_err err = {{0}};
    ck_assert_int_eq(image_pixels_to_tensor(px, side, side, 3, &pp, o, &err), ENGINE_OK);
    uint64_t sum = 0, weighted = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t l = (uint64_t)level(o[i]);
        sum += l;
        weighted += l * (i + 1);
    }
    ck_assert_uint_eq(sum, 2139095177u);
    ck_assert_uint_eq(weighted, 19753196661823510u);
    free(o);
    free(px);
}
END_TEST

START_TEST(png_gray_to_rgb)
{
    const uint8_t px[4] = {0, 100, 200, 255};
    buf b = png_encode(px, 2, 2, 1);
    image_preproc pp = pp_make(3, 2, 2, IMAGE_RESIZE_NONE);
    float *o = decode_ok(&b, &pp);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 4; i++)
            ck_assert_float_eq(o[c * 4 + i], (float)px[i] / 255.0f);
    free(o);
    free(b.p);
}
END_TEST

/* Alpha is dropped, never composited: the colour under alpha 0 comes through. */
START_TEST(png_rgba_alpha_dropped)
{
    const uint8_t px[3 * 4] = {10, 20, 30, 0, 200, 100, 50, 128, 255, 0, 0, 255};
    buf b = png_encode(px, 3, 1, 4);
    image_preproc pp = pp_make(3, 1, 3, IMAGE_RESIZE_NONE);
    float *o = decode_ok(&b, &pp);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 3; i++)
            ck_assert_float_eq(o[c * 3 + i], (float)px[4 * i + c] / 255.0f);
    free(o);

    image_preproc g = pp_make(1, 1, 3, IMAGE_RESIZE_NONE);
    o = decode_ok(&b, &g);
    ck_assert_int_eq(level(o[0]), 18);   /* PIL: (10,20,30) -> 18 */
    ck_assert_int_eq(level(o[2]), 76);
    free(o);
    free(b.p);

    /* gray + alpha, both targets */
    const uint8_t ga[4] = {90, 0, 180, 255};
    b = png_encode(ga, 2, 1, 2);
    o = decode_ok(&b, &(image_preproc){.channels = 1, .height = 1, .width = 2,
                                       .resize = IMAGE_RESIZE_NONE, .std = {1, 1, 1}});
    ck_assert_int_eq(level(o[0]), 90);
    ck_assert_int_eq(level(o[1]), 180);
    free(o);
    image_preproc rgb = pp_make(3, 1, 2, IMAGE_RESIZE_NONE);
    o = decode_ok(&b, &rgb);
    for (int c = 0; c < 3; c++) {
        ck_assert_int_eq(level(o[c * 2]), 90);
        ck_assert_int_eq(level(o[c * 2 + 1]), 180);
    }
    free(o);
    free(b.p);
}
END_TEST

/* (p / 255 - mean) / std in float32, the order ToTensor + Normalize use. */
START_TEST(normalisation)
{
    uint8_t px[4 * 3];
    for (int i = 0; i < 12; i++)
        px[i] = (uint8_t)(i * 23);
    buf b = png_encode(px, 4, 1, 3);
    image_preproc pp = {.channels = 3, .height = 1, .width = 4, .resize = IMAGE_RESIZE_NONE,
                        .mean = {0.485f, 0.456f, 0.406f}, .std = {0.229f, 0.224f, 0.225f}};
    float *o = decode_ok(&b, &pp);
    for (int c = 0; c < 3; c++)
        for (int x = 0; x < 4; x++) {
            float want = ((float)px[3 * x + c] / 255.0f - pp.mean[c]) / pp.std[c];
            ck_assert_float_eq(o[c * 4 + x], want);
        }
    free(o);
    free(b.p);
}
END_TEST

static unsigned s_ramp(int x, int y, int ch)
{
    return (unsigned)((x * 37 + y * 11 + ch * 5) & 255);
}

static unsigned s_bits1(int x, int y, int ch)
{
    return (unsigned)((x * 3 + y) % 5 == 0);
}

static unsigned s_wide16(int x, int y, int ch)
{
    return (unsigned)((x * 4099 + y * 257 + ch * 1000) & 0xffff);
}

/* The PNG pre-check computes the inflated size from the header: interlaced, sub-byte
 * and 16-bit images must still decode, and to the same pixels as plain ones. */
START_TEST(png_interlaced_depths)
{
    static const int sizes[][2] = {{1, 1}, {3, 2}, {9, 13}, {17, 5}, {8, 8}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const int w = sizes[s][0], h = sizes[s][1];
        image_preproc pp3 = pp_make(3, h, w, IMAGE_RESIZE_NONE);
        image_preproc pp1 = pp_make(1, h, w, IMAGE_RESIZE_NONE);

        buf plain = png_build(w, h, 8, 2, 0, s_ramp, NULL, 0);
        buf inter = png_build(w, h, 8, 2, 1, s_ramp, NULL, 0);
        float *a = decode_ok(&plain, &pp3), *b = decode_ok(&inter, &pp3);
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < w * h; i++) {
                ck_assert_float_eq(a[c * w * h + i], b[c * w * h + i]);
                ck_assert_int_eq(level(a[c * w * h + i]), (int)s_ramp(i % w, i / w, c));
            }
        free(a), free(b), free(plain.p), free(inter.p);

        buf bits = png_build(w, h, 1, 0, 1, s_bits1, NULL, 0);
        a = decode_ok(&bits, &pp1);
        for (int i = 0; i < w * h; i++)
            ck_assert_int_eq(level(a[i]), s_bits1(i % w, i / w, 0) ? 255 : 0);
        free(a), free(bits.p);

        /* 16-bit keeps the high byte (stb's conversion) */
        buf wide = png_build(w, h, 16, 2, 1, s_wide16, NULL, 0);
        a = decode_ok(&wide, &pp3);
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < w * h; i++)
                ck_assert_int_eq(level(a[c * w * h + i]), (int)(s_wide16(i % w, i / w, c) >> 8));
        free(a), free(wide.p);

        /* 2-colour palette, 1 bit per pixel */
        const uint8_t plte[6] = {10, 20, 30, 200, 150, 100};
        buf pal = png_build(w, h, 1, 3, 0, s_bits1, plte, sizeof plte);
        a = decode_ok(&pal, &pp3);
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < w * h; i++)
                ck_assert_int_eq(level(a[c * w * h + i]), plte[3 * s_bits1(i % w, i / w, 0) + c]);
        free(a), free(pal.p);
    }
}
END_TEST

START_TEST(jpeg_decodes)
{
    uint8_t px[16 * 16 * 3];
    for (int i = 0; i < 16 * 16; i++)
        px[3 * i] = 200, px[3 * i + 1] = 100, px[3 * i + 2] = 50;
    buf b = jpeg_encode(px, 16, 16, 3);
    image_preproc pp = pp_make(3, 16, 16, IMAGE_RESIZE_NONE);
    float *o = decode_ok(&b, &pp);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 256; i++)
            ck_assert_int_le(abs(level(o[c * 256 + i]) - px[c]), 2);   /* lossy */
    free(o);
    free(b.p);

    uint8_t g[8 * 8];
    memset(g, 77, sizeof g);
    b = jpeg_encode(g, 8, 8, 1);
    image_preproc pp1 = pp_make(1, 8, 8, IMAGE_RESIZE_NONE);
    o = decode_ok(&b, &pp1);
    for (int i = 0; i < 64; i++)
        ck_assert_int_le(abs(level(o[i]) - 77), 1);
    free(o);
    free(b.p);
}
END_TEST

/* ---- geometry -------------------------------------------------------------------- */

START_TEST(stretch_resize)
{
    static const int dims[][4] = {   /* w, h -> W, H */
        {7, 5, 3, 4}, {5, 7, 20, 30}, {1, 1, 9, 2}, {100, 3, 10, 10}, {13, 13, 13, 13},
    };
    for (size_t k = 0; k < sizeof dims / sizeof dims[0]; k++) {
        const int w = dims[k][0], h = dims[k][1];
        uint8_t *px = malloc((size_t)w * h * 3);
        ck_assert_ptr_nonnull(px);
        for (int i = 0; i < w * h; i++)
            px[3 * i] = 17, px[3 * i + 1] = 128, px[3 * i + 2] = 250;
        buf b = png_encode(px, w, h, 3);
        image_preproc pp = pp_make(3, dims[k][3], dims[k][2], IMAGE_RESIZE_STRETCH);
        float *o = decode_ok(&b, &pp);
        const int n = pp.height * pp.width;
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < n; i++)
                ck_assert_int_eq(level(o[c * n + i]), px[c]);   /* constant stays constant */
        free(o);
        free(b.p);
        free(px);
    }
}
END_TEST

static unsigned char pos_px(int x, int y)
{
    return (unsigned char)(10 * y + x);
}

/* With resize_shorter equal to the shorter side nothing is resampled, so the crop
 * offset is visible exactly: torchvision's int(round(d / 2.0)), halves to even. */
START_TEST(center_crop_offsets)
{
    static const int cases[][6] = {   /* w, h, crop H, crop W, want y0, want x0 */
        {7, 4, 3, 2, 0, 2},           /* (4-3)/2 = 0.5 -> 0, (7-2)/2 = 2.5 -> 2 */
        {8, 4, 1, 5, 2, 2},           /* 1.5 -> 2, 1.5 -> 2 */
        {4, 9, 4, 4, 2, 0},           /* portrait: (9-4)/2 = 2.5 -> 2 */
        {4, 11, 4, 4, 4, 0},          /* 3.5 -> 4 */
        {6, 6, 2, 3, 2, 2},           /* 2, 1.5 -> 2 */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const int w = cases[k][0], h = cases[k][1], H = cases[k][2], W = cases[k][3];
        uint8_t px[16 * 16];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                px[y * w + x] = pos_px(x, y);
        image_preproc pp = pp_make(1, H, W, IMAGE_RESIZE_CENTER_CROP);
        pp.resize_shorter = w < h ? w : h;
        float *o = out_alloc(&pp);
        engine_err err = {{0}};
        ck_assert_int_eq(image_pixels_to_tensor(px, h, w, 1, &pp, o, &err), ENGINE_OK);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                ck_assert_msg(level(o[y * W + x]) == pos_px(x + cases[k][5], y + cases[k][4]),
                              "case %zu: (%d,%d) got %d", k, y, x, level(o[y * W + x]));
        out_check_guard(o, &pp);
        free(o);
    }
}
END_TEST

/* Resize then crop: a 60x30 image, black left half, white right half, shorter side
 * to 10 gives 20x10 with the edge at column 10; the 10x10 crop starts at column 5. */
START_TEST(center_crop_resized)
{
    uint8_t px[30 * 60];
    for (int y = 0; y < 30; y++)
        for (int x = 0; x < 60; x++)
            px[y * 60 + x] = x < 30 ? 0 : 255;
    image_preproc pp = pp_make(1, 10, 10, IMAGE_RESIZE_CENTER_CROP);
    pp.resize_shorter = 10;
    float *o = out_alloc(&pp);
    engine_err err = {{0}};
    ck_assert_int_eq(image_pixels_to_tensor(px, 30, 60, 1, &pp, o, &err), ENGINE_OK);
    for (int y = 0; y < 10; y++) {
        for (int x = 0; x < 4; x++)
            ck_assert_int_eq(level(o[y * 10 + x]), 0);
        for (int x = 6; x < 10; x++)
            ck_assert_int_eq(level(o[y * 10 + x]), 255);
        ck_assert_int_lt(level(o[y * 10 + 4]), level(o[y * 10 + 5]));
    }
    out_check_guard(o, &pp);
    free(o);
}
END_TEST

/* The longer side is truncated as torchvision's int(size * long / short): a 50x30
 * image at shorter side 10 becomes 16x10 (16.67 truncated), which the message names
 * when an oversized crop does not fit. */
START_TEST(center_crop_long_side_truncates)
{
    uint8_t px[30 * 50] = {0};
    image_preproc pp = pp_make(1, 10, 17, IMAGE_RESIZE_CENTER_CROP);
    pp.resize_shorter = 10;
    float *o = out_alloc(&pp);
    engine_err err = {{0}};
    ck_assert_int_eq(image_pixels_to_tensor(px, 30, 50, 1, &pp, o, &err), ENGINE_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "resized to 16x10"), "%s", err.msg);
    pp.width = 16;
    ck_assert_int_eq(image_pixels_to_tensor(px, 30, 50, 1, &pp, o, &err), ENGINE_OK);
    free(o);

    /* An extreme aspect ratio: 4096x1 at shorter side 4096 is 16777216x4096 after
     * Resize, which is never materialised (only the crop window is computed). */
    uint8_t *strip = malloc(4096);
    ck_assert_ptr_nonnull(strip);
    memset(strip, 201, 4096);
    image_preproc big = pp_make(1, 64, 64, IMAGE_RESIZE_CENTER_CROP);
    big.resize_shorter = 4096;
    o = out_alloc(&big);
    ck_assert_int_eq(image_pixels_to_tensor(strip, 1, 4096, 1, &big, o, &err), ENGINE_OK);
    for (int i = 0; i < 64 * 64; i++)
        ck_assert_int_eq(level(o[i]), 201);
    out_check_guard(o, &big);
    /* a 1-wide, 16M-tall strip stretched to 64x64: 16M rows through a 64-wide
     * horizontal pass is too much work and memory; refused, not attempted */
    uint8_t *tall = calloc((size_t)IMAGE_MAX_PIXELS, 1);
    ck_assert_ptr_nonnull(tall);
    image_preproc sq = pp_make(1, 64, 64, IMAGE_RESIZE_STRETCH);
    ck_assert_int_eq(image_pixels_to_tensor(tall, IMAGE_MAX_PIXELS, 1, 1, &sq, o, &err),
                     ENGINE_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "too elongated"), "%s", err.msg);
    sq.width = 1;   /* 16M rows of one pixel each are fine */
    ck_assert_int_eq(image_pixels_to_tensor(tall, IMAGE_MAX_PIXELS, 1, 1, &sq, o, &err),
                     ENGINE_OK);
    free(tall);
    /* one whose long side would not fit an int is refused */
    big.resize_shorter = 1 << 30;
    ck_assert_int_eq(image_pixels_to_tensor(strip, 1, 4096, 1, &big, o, &err),
                     ENGINE_ERR_INVALID);
    free(o);
    free(strip);
}
END_TEST

/* Resampling is Pillow's BILINEAR bit for bit; expected bytes from Pillow 9.4 and
 * torchvision 0.14 on the same 7x5 image. */
static const uint8_t pil_src[35] = {
    0, 37, 74, 111, 148, 185, 222, 91, 141, 191, 241, 35, 85, 135, 182, 245, 52, 115,
    178, 241, 48, 17, 93, 169, 245, 65, 141, 217, 108, 197, 30, 119, 208, 41, 130,
};

static void check_pil(const image_preproc *pp, const uint8_t *want)
{
    float *o = out_alloc(pp);
    engine_err err = {{0}};
    ck_assert_int_eq(image_pixels_to_tensor(pil_src, 5, 7, 1, pp, o, &err), ENGINE_OK);
    for (int i = 0; i < pp->height * pp->width; i++)
        ck_assert_msg(o[i] == (float)want[i] / 255.0f, "%dx%d pixel %d: got %d, PIL %d",
                      pp->width, pp->height, i, level(o[i]), want[i]);
    out_check_guard(o, pp);
    free(o);
}

START_TEST(resize_matches_pil)
{
    static const uint8_t down[6] = {110, 141, 141, 122, 145, 137};   /* 7x5 -> 3x2 */
    static const uint8_t up[88] = {                                   /* 7x5 -> 11x8 */
        0, 17, 40, 64, 87, 111, 135, 158, 182, 205, 222, 40, 59, 86, 113, 140, 168, 124,
        110, 137, 164, 184, 97, 120, 151, 173, 201, 233, 113, 58, 90, 114, 130, 154, 181,
        202, 128, 117, 154, 141, 149, 187, 129, 75, 130, 161, 187, 118, 113, 156, 147, 161,
        203, 150, 101, 27, 62, 108, 145, 189, 237, 132, 93, 140, 179, 206, 68, 106, 146,
        108, 121, 174, 156, 129, 90, 130, 168, 108, 148, 182, 76, 62, 119, 176, 162, 56,
        90, 130,
    };
    /* Resize(4) -> 5x4, CenterCrop((3, 4)) */
    static const uint8_t crop[12] = {36, 86, 132, 137, 148, 156, 161, 119, 109, 136, 163, 144};

    image_preproc pp = pp_make(1, 2, 3, IMAGE_RESIZE_STRETCH);
    check_pil(&pp, down);
    pp = pp_make(1, 8, 11, IMAGE_RESIZE_STRETCH);
    check_pil(&pp, up);
    pp = pp_make(1, 3, 4, IMAGE_RESIZE_CENTER_CROP);
    pp.resize_shorter = 4;
    check_pil(&pp, crop);
}
END_TEST

START_TEST(none_requires_exact_size)
{
    uint8_t px[6 * 4] = {0};
    buf b = png_encode(px, 6, 4, 1);
    image_preproc pp = pp_make(1, 6, 4, IMAGE_RESIZE_NONE);   /* transposed */
    engine_err err = {{0}};
    ck_assert_int_eq(decode_exact(b.p, b.len, &pp, &err), ENGINE_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "6x4") && strstr(err.msg, "4x6"), "%s", err.msg);
    pp.height = 4, pp.width = 6;
    ck_assert_int_eq(decode_exact(b.p, b.len, &pp, &err), ENGINE_OK);
    free(b.p);
}
END_TEST

/* Extreme ratios both ways, 1 to 4096 pixels per side: no crash, no overflow. */
START_TEST(resize_extreme_ratios)
{
    static const int sides[] = {1, 2, 3, 7, 255, 1000, 4095, 4096};
    enum { N = sizeof sides / sizeof sides[0] };
    uint8_t *px = malloc(4096 * 3);
    float *o = malloc(sizeof *o * 4096 * 3);
    ck_assert_ptr_nonnull(px);
    ck_assert_ptr_nonnull(o);
    for (int i = 0; i < 4096 * 3; i++)
        px[i] = (uint8_t)(i * 7);
    engine_err err = {{0}};
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            image_preproc pp = pp_make(3, 1, sides[j], IMAGE_RESIZE_STRETCH);
            ck_assert_int_eq(image_pixels_to_tensor(px, 1, sides[i], 3, &pp, o, &err),
                             ENGINE_OK);
            pp = pp_make(3, sides[j], 1, IMAGE_RESIZE_STRETCH);
            ck_assert_int_eq(image_pixels_to_tensor(px, sides[i], 1, 3, &pp, o, &err),
                             ENGINE_OK);
            pp = pp_make(1, sides[j], 1, IMAGE_RESIZE_STRETCH);
            ck_assert_int_eq(image_pixels_to_tensor(px, 1, sides[i], 1, &pp, o, &err),
                             ENGINE_OK);
        }
    free(o);
    free(px);
}
END_TEST

/* ---- argument checks --------------------------------------------------------------- */

START_TEST(pixels_bad_arguments)
{
    uint8_t px[16] = {0};
    float o[64];
    engine_err err = {{0}};
    image_preproc pp = pp_make(1, 2, 2, IMAGE_RESIZE_STRETCH);
    ck_assert_int_eq(image_pixels_to_tensor(px, 2, 2, 2, &pp, o, &err), ENGINE_ERR_INVALID);
    ck_assert_int_eq(image_pixels_to_tensor(px, 2, 2, 5, &pp, o, &err), ENGINE_ERR_INVALID);
    ck_assert_int_eq(image_pixels_to_tensor(px, 0, 2, 1, &pp, o, &err), ENGINE_ERR_INVALID);
    ck_assert_int_eq(image_pixels_to_tensor(px, 2, -1, 1, &pp, o, &err), ENGINE_ERR_INVALID);
    ck_assert_int_eq(image_pixels_to_tensor(px, 5000, 5000, 1, &pp, o, &err),
                     ENGINE_ERR_INVALID);
    ck_assert_int_eq(image_pixels_to_tensor(NULL, 2, 2, 1, &pp, o, &err), ENGINE_ERR_INVALID);
    ck_assert_int_eq(image_pixels_to_tensor(px, 2, 2, 1, NULL, o, &err), ENGINE_ERR_INVALID);

    image_preproc bad = pp;
    bad.std[0] = 0;
    ck_assert_int_eq(image_pixels_to_tensor(px, 2, 2, 1, &bad, o, &err), ENGINE_ERR_INVALID);
    bad = pp, bad.channels = 2;
    ck_assert_int_eq(image_pixels_to_tensor(px, 2, 2, 1, &bad, o, &err), ENGINE_ERR_INVALID);
    bad = pp, bad.height = 0;
    ck_assert_int_eq(image_pixels_to_tensor(px, 2, 2, 1, &bad, o, &err), ENGINE_ERR_INVALID);
    bad = pp, bad.resize = (image_resize_mode)9;
    ck_assert_int_eq(image_pixels_to_tensor(px, 2, 2, 1, &bad, o, &err), ENGINE_ERR_INVALID);
    bad = pp, bad.resize = IMAGE_RESIZE_CENTER_CROP, bad.resize_shorter = 0;
    ck_assert_int_eq(image_pixels_to_tensor(px, 2, 2, 1, &bad, o, &err), ENGINE_ERR_INVALID);
    bad = pp, bad.mean[0] = NAN;
    ck_assert_int_eq(image_pixels_to_tensor(px, 2, 2, 1, &bad, o, &err), ENGINE_ERR_INVALID);
    /* a NULL err is allowed */
    ck_assert_int_eq(image_pixels_to_tensor(px, 2, 2, 7, &pp, o, NULL), ENGINE_ERR_INVALID);
}
END_TEST

/* ---- hostile bytes ------------------------------------------------------------------ */

START_TEST(garbage_and_empty)
{
    image_preproc pp = pp_make(3, 4, 4, IMAGE_RESIZE_STRETCH);
    engine_err err = {{0}};
    const uint8_t junk[] = "this is not an image at all";
    ck_assert_int_eq(decode_exact(junk, sizeof junk, &pp, &err), ENGINE_ERR_IMAGE);
    ck_assert_msg(strstr(err.msg, "not a PNG or JPEG"), "%s", err.msg);
    ck_assert_int_eq(decode_exact(junk, 0, &pp, &err), ENGINE_ERR_IMAGE);
    float o[48];
    ck_assert_int_eq(image_to_tensor(NULL, 10, &pp, o, &err), ENGINE_ERR_IMAGE);

    /* formats stb knows but we do not hand it: BMP, GIF */
    const uint8_t bmp[] = {'B', 'M', 0x3e, 0, 0, 0, 0, 0, 0, 0, 0x3e, 0, 0, 0, 40, 0};
    ck_assert_int_eq(decode_exact(bmp, sizeof bmp, &pp, &err), ENGINE_ERR_IMAGE);
    const uint8_t gif[] = "GIF89a\x01\x00\x01\x00\x00\x00\x00;";
    ck_assert_int_eq(decode_exact(gif, sizeof gif, &pp, &err), ENGINE_ERR_IMAGE);

    /* right signatures, garbage after */
    uint8_t png_junk[64], jpg_junk[64];
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    for (int i = 0; i < 64; i++)
        png_junk[i] = jpg_junk[i] = (uint8_t)(i * 131 + 7);
    memcpy(png_junk, sig, 8);
    jpg_junk[0] = 0xff, jpg_junk[1] = 0xd8, jpg_junk[2] = 0xff;
    ck_assert_int_eq(decode_exact(png_junk, sizeof png_junk, &pp, &err), ENGINE_ERR_IMAGE);
    ck_assert_int_eq(decode_exact(jpg_junk, sizeof jpg_junk, &pp, &err), ENGINE_ERR_IMAGE);
}
END_TEST

/* Every prefix of a valid PNG is refused (stb needs IEND) and nothing crashes. */
START_TEST(png_all_prefixes)
{
    uint8_t px[8 * 8 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(i * 13);
    buf b = png_encode(px, 8, 8, 3);
    image_preproc pp = pp_make(3, 8, 8, IMAGE_RESIZE_NONE);
    engine_err err = {{0}};
    for (size_t n = 0; n < b.len; n++)
        ck_assert_msg(decode_exact(b.p, n, &pp, &err) != ENGINE_OK, "prefix %zu decoded", n);
    ck_assert_int_eq(decode_exact(b.p, b.len, &pp, &err), ENGINE_OK);

    /* and single corrupted bytes anywhere: any answer but a crash */
    for (size_t i = 0; i < b.len; i++) {
        uint8_t saved = b.p[i];
        b.p[i] ^= 0x5a;
        engine_status st = decode_exact(b.p, b.len, &pp, &err);
        ck_assert(st == ENGINE_OK || st == ENGINE_ERR_IMAGE || st == ENGINE_ERR_INVALID);
        b.p[i] = saved;
    }
    free(b.p);
}
END_TEST

/* Truncated JPEGs may decode (baseline data ends early) but must not crash. */
START_TEST(jpeg_all_prefixes)
{
    uint8_t px[16 * 16 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(i * 29);
    buf b = jpeg_encode(px, 16, 16, 3);
    image_preproc pp = pp_make(3, 16, 16, IMAGE_RESIZE_STRETCH);
    engine_err err = {{0}};
    for (size_t n = 0; n < b.len; n++) {
        engine_status st = decode_exact(b.p, n, &pp, &err);
        ck_assert(st == ENGINE_OK || st == ENGINE_ERR_IMAGE);
    }
    ck_assert_int_eq(decode_exact(b.p, b.len, &pp, &err), ENGINE_OK);
    free(b.p);
}
END_TEST

/* A header claiming 100000x100000 is refused from the header alone: the tiny IDAT
 * could not fill it anyway, so an attempt to decode would show as IMAGE, not INVALID. */
START_TEST(huge_declared_dimensions)
{
    image_preproc pp = pp_make(3, 4, 4, IMAGE_RESIZE_STRETCH);
    engine_err err = {{0}};
    const uint8_t raw[4] = {0, 1, 2, 3};
    buf b = png_from_raw(100000, 100000, 8, 2, 0, NULL, 0, raw, sizeof raw);
    ck_assert_int_eq(decode_exact(b.p, b.len, &pp, &err), ENGINE_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "100000x100000"), "%s", err.msg);
    free(b.p);

    /* just over the limit in one dimension product */
    b = png_from_raw(4097, 4096, 8, 0, 0, NULL, 0, raw, sizeof raw);
    ck_assert_int_eq(decode_exact(b.p, b.len, &pp, &err), ENGINE_ERR_INVALID);
    free(b.p);

    /* zero width: stb's header check refuses it */
    b = png_from_raw(0, 5, 8, 0, 0, NULL, 0, raw, sizeof raw);
    ck_assert_int_ne(decode_exact(b.p, b.len, &pp, &err), ENGINE_OK);
    free(b.p);

    /* a JPEG whose SOF0 claims 60000x60000: SOI, DQT (all ones), SOF0, EOI */
    uint8_t jpg[2 + 69 + 13 + 2] = {0xff, 0xd8, 0xff, 0xdb, 0x00, 0x43, 0x00};
    memset(jpg + 7, 1, 64);
    const uint8_t sof[] = {0xff, 0xc0, 0x00, 0x0b, 0x08, 0xea, 0x60, 0xea, 0x60, 0x01,
                           0x01, 0x11, 0x00, 0xff, 0xd9};
    memcpy(jpg + 71, sof, sizeof sof);
    ck_assert_int_eq(decode_exact(jpg, sizeof jpg, &pp, &err), ENGINE_ERR_INVALID);
    ck_assert_msg(strstr(err.msg, "60000x60000"), "%s", err.msg);
}
END_TEST

/* A 1x1 PNG whose zlib stream inflates to 4 MiB: stb alone would grow its buffer to
 * hold it all; the pre-check refuses it.  A little trailing data is still accepted. */
START_TEST(png_zlib_bomb)
{
    image_preproc pp = pp_make(1, 1, 1, IMAGE_RESIZE_NONE);
    engine_err err = {{0}};
    const size_t n = (size_t)4 << 20;
    uint8_t *zeros = calloc(n, 1);
    ck_assert_ptr_nonnull(zeros);
    buf b = png_from_raw(1, 1, 8, 0, 0, NULL, 0, zeros, n);
    ck_assert_uint_lt(b.len, 64 * 1024);
    ck_assert_int_eq(decode_exact(b.p, b.len, &pp, &err), ENGINE_ERR_IMAGE);
    ck_assert_msg(strstr(err.msg, "zlib"), "%s", err.msg);
    free(b.p);

    zeros[1] = 99;   /* filter 0, pixel 99, then 1000 bytes of junk */
    b = png_from_raw(1, 1, 8, 0, 0, NULL, 0, zeros, 1002);
    float *o = decode_ok(&b, &pp);
    ck_assert_int_eq(level(o[0]), 99);
    free(o);
    free(b.p);
    free(zeros);
}
END_TEST

/* ---- output: quantisation, grids, PNG ------------------------------------------ */

START_TEST(quantise_like_save_image)
{
    /* tanh range: (v + 1) / 2, then floor(x * 255 + 0.5) clamped; NaN -> 0 */
    const float x[8] = {-1.0f, 1.0f, 0.0f, -2.0f, 3.0f, NAN, -1.0f + 2.0f / 255.0f, 0.999f};
    uint8_t px[8];
    image_from_tensor(x, 1, 1, 8, IMAGE_RANGE_TANH, px);
    const uint8_t want[8] = {0, 255, 128, 0, 255, 0, 1, 255};
    for (int i = 0; i < 8; i++)
        ck_assert_msg(px[i] == want[i], "tanh %g -> %d, want %d", x[i], px[i], want[i]);
    const float y[4] = {0.0f, 1.0f, 0.5f, 0.2f};
    image_from_tensor(y, 1, 2, 2, IMAGE_RANGE_SIGMOID, px);
    ck_assert_int_eq(px[0], 0);
    ck_assert_int_eq(px[1], 255);
    ck_assert_int_eq(px[2], 128);
    ck_assert_int_eq(px[3], 51);
    /* planar in, interleaved out */
    const float rgb[6] = {-1, -1, 1, 1, 0, 0}; /* C=3, H=1, W=2 */
    image_from_tensor(rgb, 3, 1, 2, IMAGE_RANGE_TANH, px);
    const uint8_t want_rgb[6] = {0, 255, 128, 0, 255, 128};
    ck_assert_int_eq(memcmp(px, want_rgb, 6), 0);
}
END_TEST

START_TEST(grid_layout)
{
    int gh, gw;
    image_grid_size(5, 2, 3, 2, 1, &gh, &gw); /* 3 rows of 2, 1-pixel padding */
    ck_assert_int_eq(gh, 3 * 3 + 1);
    ck_assert_int_eq(gw, 2 * 4 + 1);
    uint8_t imgs[5 * 6];
    for (int k = 0; k < 5; k++)
        memset(imgs + k * 6, 10 + k, 6);
    uint8_t *g = malloc((size_t)gh * gw);
    image_grid(imgs, 5, 2, 3, 1, 2, 1, g);
    ck_assert_int_eq(g[0], 0);                  /* padding */
    ck_assert_int_eq(g[1 * gw + 1], 10);        /* image 0 at (1, 1) */
    ck_assert_int_eq(g[1 * gw + 5], 11);        /* image 1 at (1, 5) */
    ck_assert_int_eq(g[7 * gw + 1], 14);        /* image 4: third row */
    ck_assert_int_eq(g[7 * gw + 5], 0);         /* no sixth image: black */
    free(g);
}
END_TEST

START_TEST(png_round_trip)
{
    for (int c = 1; c <= 4; c++) {
        if (c == 2)
            continue;
        enum { H = 13, W = 17 };
        uint8_t px[H * W * 4];
        for (int i = 0; i < H * W * c; i++)
            px[i] = (uint8_t)(i * 37 + c);
        uint8_t *png;
        size_t len;
        engine_err err;
        ck_assert_int_eq(image_encode_png(px, H, W, c, &png, &len, &err), ENGINE_OK);
        ck_assert_int_eq(memcmp(png, "\x89PNG", 4), 0);
        int w, h, n;
        uint8_t *back = stbi_load_from_memory(png, (int)len, &w, &h, &n, c);
        ck_assert_ptr_nonnull(back);
        ck_assert_int_eq(w, W);
        ck_assert_int_eq(h, H);
        ck_assert_int_eq(n, c);
        ck_assert_int_eq(memcmp(back, px, (size_t)H * W * c), 0);
        stbi_image_free(back);
        free(png);
    }
    uint8_t *png;
    size_t len;
    engine_err err;
    uint8_t one = 0;
    ck_assert_int_eq(image_encode_png(&one, 1, 1, 2, &png, &len, &err), ENGINE_ERR_INVALID);
    ck_assert_int_eq(image_encode_png(&one, 0, 1, 1, &png, &len, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_null(png);
}
END_TEST

static Suite *image_suite(void)
{
    Suite *s = suite_create("image");
    TCase *tc = tcase_create("decode");
    tcase_add_test(tc, png_gray_exact);
    tcase_add_test(tc, png_rgb_to_gray_pil);
    tcase_add_test(tc, png_gray_to_rgb);
    tcase_add_test(tc, png_rgba_alpha_dropped);
    tcase_add_test(tc, normalisation);
    tcase_add_test(tc, png_interlaced_depths);
    tcase_add_test(tc, jpeg_decodes);
    suite_add_tcase(s, tc);

    tc = tcase_create("convert");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, rgb_to_gray_all_colours);
    suite_add_tcase(s, tc);

    tc = tcase_create("geometry");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, stretch_resize);
    tcase_add_test(tc, center_crop_offsets);
    tcase_add_test(tc, center_crop_resized);
    tcase_add_test(tc, center_crop_long_side_truncates);
    tcase_add_test(tc, resize_matches_pil);
    tcase_add_test(tc, none_requires_exact_size);
    tcase_add_test(tc, resize_extreme_ratios);
    tcase_add_test(tc, pixels_bad_arguments);
    suite_add_tcase(s, tc);

    tc = tcase_create("hostile");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, garbage_and_empty);
    tcase_add_test(tc, png_all_prefixes);
    tcase_add_test(tc, jpeg_all_prefixes);
    tcase_add_test(tc, huge_declared_dimensions);
    tcase_add_test(tc, png_zlib_bomb);
    suite_add_tcase(s, tc);

    tc = tcase_create("output");
    tcase_add_test(tc, quantise_like_save_image);
    tcase_add_test(tc, grid_layout);
    tcase_add_test(tc, png_round_trip);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(image_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
