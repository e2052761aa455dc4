/* image_write.c — a generator's output tensor to 8-bit pixels, grids, and PNG.
 *
 * PNG encoding is stb_image_write's (Debian libstb), through its callback API so the
 * bytes land in a buffer this file allocates (stb's own allocator need not match
 * ours).  stb keeps one global, the compression level: never written here, so its
 * default (8) is used by every thread alike.
 */
#include "engine/image.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <stb/stb_image_write.h>

static uint8_t quantise(float v)
{
    /* written so that NaN fails both comparisons and lands on 0 */
    const float q = v * 255.0f + 0.5f;
    if (!(q >= 0.0f))
        return 0;
    if (q >= 255.0f)
        return 255;
    return (uint8_t)q; /* truncation of a non-negative value: the floor */
}

void image_from_tensor(const float *x, int c, int h, int w, image_range range, uint8_t *out)
{
    const size_t plane = (size_t)h * w;
    for (int ch = 0; ch < c; ch++)
        for (size_t i = 0; i < plane; i++) {
            float v = x[(size_t)ch * plane + i];
            if (range == IMAGE_RANGE_TANH)
                v = (v + 1.0f) * 0.5f;
            out[i * c + ch] = quantise(v);
        }
}

void image_grid_size(int n, int h, int w, int per_row, int pad, int *grid_h, int *grid_w)
{
    const int cols = n < per_row ? n : per_row;
    const int rows = (n + per_row - 1) / per_row;
    *grid_h = rows * (h + pad) + pad;
    *grid_w = cols * (w + pad) + pad;
}

void image_grid(const uint8_t *images, int n, int h, int w, int c, int per_row, int pad,
                uint8_t *out)
{
    int gh, gw;
    image_grid_size(n, h, w, per_row, pad, &gh, &gw);
    memset(out, 0, (size_t)gh * gw * c);
    const int cols = n < per_row ? n : per_row;
    for (int k = 0; k < n; k++) {
        const int x0 = (k % cols) * (w + pad) + pad, y0 = (k / cols) * (h + pad) + pad;
        const uint8_t *img = images + (size_t)k * h * w * c;
        for (int y = 0; y < h; y++)
            memcpy(out + ((size_t)(y0 + y) * gw + x0) * c, img + (size_t)y * w * c,
                   (size_t)w * c);
    }
}

typedef struct png_buf {
    uint8_t *data;
    size_t len, cap;
    bool failed;
} png_buf;

static void png_append(void *ctx, void *data, int size)
{
    png_buf *b = ctx;
    if (b->failed || size <= 0)
        return;
    if (b->len + (size_t)size > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + (size_t)size)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d) {
            b->failed = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, (size_t)size);
    b->len += (size_t)size;
}

engine_status image_encode_png(const uint8_t *pixels, int h, int w, int c, uint8_t **out,
                               size_t *out_len, engine_err *err)
{
    *out = NULL;
    *out_len = 0;
    if (h < 1 || w < 1 || (c != 1 && c != 3 && c != 4) || (size_t)h * w > IMAGE_MAX_PIXELS)
        return engine_fail(err, ENGINE_ERR_INVALID, "cannot encode a %dx%d image of %d "
                           "channels as PNG", w, h, c);
    png_buf b = { 0 };
    /* stb takes a non-const pointer but only reads the pixels */
    if (!stbi_write_png_to_func(png_append, &b, w, h, c, (void *)pixels, w * c) || b.failed) {
        free(b.data);
        return engine_fail(err, ENGINE_ERR_NOMEM, "out of memory encoding a %dx%d PNG", w, h);
    }
    *out = b.data;
    *out_len = b.len;
    return ENGINE_OK;
}
