/* image.c — PNG/JPEG bytes or raw pixels to a normalised (C,H,W) model input.
 *
 * Runs on HTTP threads, many at once, before a request is queued (never in forward):
 * every buffer is malloc'd and freed inside the call and nothing is shared.
 *
 * The bytes are hostile.  Only PNG and JPEG signatures reach stb (its PSD, PIC, TGA,
 * GIF and HDR decoders are attack surface nobody asked for).  The size is read from
 * the header with stbi_info_from_memory and refused above IMAGE_MAX_PIXELS before
 * anything is decoded.  The header does not bound a PNG's zlib stream: stb grows
 * its inflate buffer until the stream ends (up to 4 GiB), so a few megabytes of
 * deflated zeros behind a 1x1 header would allocate gigabytes.  PNG data is
 * therefore first inflated into a fixed buffer of about the size the header implies
 * (stbi_zlib_decode_buffer cannot grow it) and a stream that overflows is refused.
 * stb_image_resize asserts on internal invariants and Debian's libstb keeps
 * assert() on, so resize sizes are validated here first.
 *
 * stb's globals.  Debian's libstb.so is built with STBI_THREAD_LOCAL: it has a TLS
 * segment, stbi_failure_reason() reads through __tls_get_addr, and the *_thread
 * setters exist (they are only compiled with thread locals).  So the failure reason
 * is per thread and quoted in messages.  The vertical-flip, unpremultiply and iPhone
 * flags still have process-wide defaults anyone may set; every decode sets this
 * thread's overrides to "off" so no other stb user in the process can flip our images.
 *
 * Matching torchvision (PIL backend): RGB->gray is PIL's convert("L") bit for bit
 * (L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16, checked against Pillow 9.4 over
 * all 2^24 colours); gray->RGB copies; alpha is dropped, not composited (as PIL's
 * convert("RGB")).  Normalisation is float32 (p / 255 - mean) / std in ToTensor +
 * Normalize's order, so it is bit-identical.  Resize(int) + CenterCrop geometry is
 * torchvision's (long side truncated, crop offset rounded half to even).  Resampling
 * is not PIL's: stb's triangle filter is the same widened-tent idea as PIL's
 * BILINEAR, but stb clamps at the edges where PIL renormalises the kernel and the
 * two round differently, so resized pixels may differ by a few levels.  16-bit PNGs
 * keep their high byte (stb); EXIF orientation is ignored (as PIL's Image.open).
 */
#include "engine/image.h"

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>

/* ---- input checks ---------------------------------------------------------- */

static engine_status check_preproc(const image_preproc *pp, engine_err *err)
{
    if (!pp)
        return engine_fail(err, ENGINE_ERR_INVALID, "image: no preprocessing given");
    if (pp->channels != 1 && pp->channels != 3)
        return engine_fail(err, ENGINE_ERR_INVALID, "image: model input has %d channels, "
                           "expected 1 or 3", pp->channels);
    if (pp->height < 1 || pp->width < 1 ||
        (long long)pp->height * pp->width > IMAGE_MAX_PIXELS)
        return engine_fail(err, ENGINE_ERR_INVALID, "image: model input size %dx%d out of "
                           "range", pp->width, pp->height);
    for (int c = 0; c < pp->channels; c++)
        if (!isfinite(pp->mean[c]) || !isfinite(pp->std[c]) || pp->std[c] == 0.0f)
            return engine_fail(err, ENGINE_ERR_INVALID, "image: mean/std of channel %d "
                               "invalid (std must be finite and non-zero)", c);
    switch (pp->resize) {
    case IMAGE_RESIZE_STRETCH:
    case IMAGE_RESIZE_NONE:
        return ENGINE_OK;
    case IMAGE_RESIZE_CENTER_CROP:
        /* the upper bound follows from the resized image's pixel limit */
        if (pp->resize_shorter < 1)
            return engine_fail(err, ENGINE_ERR_INVALID, "image: resize_shorter %d out of "
                               "range", pp->resize_shorter);
        return ENGINE_OK;
    }
    return engine_fail(err, ENGINE_ERR_INVALID, "image: unknown resize mode %d",
                       (int)pp->resize);
}

static engine_status check_size(int w, int h, engine_err *err)
{
    if (w < 1 || h < 1 || (long long)w * h > IMAGE_MAX_PIXELS)
        return engine_fail(err, ENGINE_ERR_INVALID, "image: %dx%d pixels is outside the "
                           "accepted range (1 to %d pixels)", w, h, IMAGE_MAX_PIXELS);
    return ENGINE_OK;
}

/* ---- channel conversion --------------------------------------------------------
 * (H,W,src_c) interleaved -> (H,W,dst_c) interleaved, src_c 1..4, dst_c 1 or 3. */

static uint8_t pil_luma(const uint8_t *rgb)
{
    /* Pillow's L24 macro: 16-bit fixed point ITU-R 601 weights, rounded. */
    return (uint8_t)((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
}

static uint8_t *convert_channels(const uint8_t *src, size_t n, int src_c, int dst_c)
{
    uint8_t *dst = malloc(n * (size_t)dst_c);
    if (!dst)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = src + i * (size_t)src_c;
        uint8_t *d = dst + i * (size_t)dst_c;
        if (dst_c == 1) {
            d[0] = src_c >= 3 ? pil_luma(s) : s[0];
        } else if (src_c >= 3) {
            d[0] = s[0], d[1] = s[1], d[2] = s[2];
        } else {
            d[0] = d[1] = d[2] = s[0];
        }
    }
    return dst;
}

/* ---- geometry ------------------------------------------------------------------- */

static engine_status resize(const uint8_t *src, int w, int h, int c, int nw, int nh,
                            uint8_t **out, engine_err *err)
{
    uint8_t *dst = malloc((size_t)nw * (size_t)nh * (size_t)c);
    if (!dst)
        return engine_fail(err, ENGINE_ERR_NOMEM, "image: no memory to resize to %dx%d",
                           nw, nh);
    if (!stbir_resize_uint8_generic(src, w, h, 0, dst, nw, nh, 0, c,
                                    STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP,
                                    STBIR_FILTER_TRIANGLE, STBIR_COLORSPACE_LINEAR, NULL)) {
        free(dst);
        return engine_fail(err, ENGINE_ERR_NOMEM, "image: resizing %dx%d to %dx%d failed",
                           w, h, nw, nh);
    }
    *out = dst;
    return ENGINE_OK;
}

/* Python's int(round(d / 2.0)) for d >= 0: halves go to the even neighbour. */
static int half_round_even(int d)
{
    int q = d / 2;
    return (d % 2 != 0 && q % 2 != 0) ? q + 1 : q;
}

/* (src_h, src_w, c) window at (y0, x0) -> out (c, H, W) normalised, float32 in the
 * order torchvision's ToTensor + Normalize compute it. */
static void normalise(const uint8_t *src, int src_w, int c, int y0, int x0,
                      const image_preproc *pp, float *out)
{
    const int H = pp->height, W = pp->width;
    for (int ch = 0; ch < c; ch++) {
        const float mean = pp->mean[ch], std = pp->std[ch];
        float *o = out + (size_t)ch * H * W;
        for (int y = 0; y < H; y++) {
            const uint8_t *row = src + ((size_t)(y0 + y) * src_w + x0) * c + ch;
            for (int x = 0; x < W; x++)
                o[(size_t)y * W + x] = ((float)row[(size_t)x * c] / 255.0f - mean) / std;
        }
    }
}

/* The shared path: pixels already validated (1 <= c <= 4, size within limits). */
static engine_status pixels_to_tensor(const uint8_t *px, int h, int w, int c,
                                      const image_preproc *pp, float *out, engine_err *err)
{
    const int C = pp->channels, H = pp->height, W = pp->width;

    if (pp->resize == IMAGE_RESIZE_NONE && (h != H || w != W))
        return engine_fail(err, ENGINE_ERR_INVALID, "image: image is %dx%d, the model takes "
                           "exactly %dx%d (resize \"none\")", w, h, W, H);

    uint8_t *conv = convert_channels(px, (size_t)w * h, c, C);
    if (!conv)
        return engine_fail(err, ENGINE_ERR_NOMEM, "image: no memory for a %dx%d image", w, h);

    engine_status st = ENGINE_OK;
    uint8_t *img = conv;             /* (ih, iw, C) after resizing */
    int iw = w, ih = h, x0 = 0, y0 = 0;

    if (pp->resize == IMAGE_RESIZE_STRETCH) {
        iw = W, ih = H;
    } else if (pp->resize == IMAGE_RESIZE_CENTER_CROP) {
        /* torchvision Resize(int): the shorter side becomes resize_shorter, the longer
         * int(size * long / short) — a double division as Python's true division. */
        const int s = pp->resize_shorter;
        const bool w_short = w <= h;
        const int sh = w_short ? w : h, lg = w_short ? h : w;
        const double nl = (double)s * (double)lg / (double)sh;
        if (nl > (double)IMAGE_MAX_PIXELS || (long long)nl * s > IMAGE_MAX_PIXELS) {
            st = engine_fail(err, ENGINE_ERR_INVALID, "image: %dx%d resized to shorter side "
                             "%d would exceed %d pixels", w, h, s, IMAGE_MAX_PIXELS);
            goto done;
        }
        iw = w_short ? s : (int)nl;
        ih = w_short ? (int)nl : s;
        if (iw < W || ih < H) {
            /* torchvision would zero-pad; configs with resize_shorter >= height, width
             * never get here (proto/model_dir checks it). */
            st = engine_fail(err, ENGINE_ERR_INVALID, "image: %dx%d resized to %dx%d is "
                             "smaller than the %dx%d crop", w, h, iw, ih, W, H);
            goto done;
        }
        x0 = half_round_even(iw - W);
        y0 = half_round_even(ih - H);
    }

    if (iw != w || ih != h) {
        /* PIL's resize returns a copy when the size is unchanged; stb need not run. */
        uint8_t *r = NULL;
        st = resize(conv, w, h, C, iw, ih, &r, err);
        if (st != ENGINE_OK)
            goto done;
        img = r;
    }
    normalise(img, iw, C, y0, x0, pp, out);

done:
    if (img != conv)
        free(img);
    free(conv);
    return st;
}

engine_status image_pixels_to_tensor(const uint8_t *pixels, int h, int w, int c,
                                     const image_preproc *pp, float *out, engine_err *err)
{
    engine_status st = check_preproc(pp, err);
    if (st != ENGINE_OK)
        return st;
    if (!pixels || !out)
        return engine_fail(err, ENGINE_ERR_INVALID, "image: NULL pixels or output");
    if (c != 1 && c != 3 && c != 4)
        return engine_fail(err, ENGINE_ERR_INVALID, "image: %d channels per pixel, "
                           "expected 1, 3 or 4", c);
    if ((st = check_size(w, h, err)) != ENGINE_OK)
        return st;
    return pixels_to_tensor(pixels, h, w, c, pp, out, err);
}

/* ---- decoding --------------------------------------------------------------------- */

static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static const char *stb_reason(void)
{
    const char *r = stbi_failure_reason();
    return r ? r : "unknown error";
}

/* Bytes of filtered scanlines a PNG of this header inflates to, Adam7 included. */
static uint64_t png_raw_bytes(uint32_t w, uint32_t h, unsigned bpp, bool interlaced)
{
    static const unsigned adam7[7][4] = {   /* x0, y0, dx, dy */
        {0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
        {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2},
    };
    if (!interlaced)
        return (uint64_t)h * (1 + ((uint64_t)w * bpp + 7) / 8);
    uint64_t total = 0;
    for (int p = 0; p < 7; p++) {
        const unsigned x0 = adam7[p][0], y0 = adam7[p][1], dx = adam7[p][2], dy = adam7[p][3];
        if (w <= x0 || h <= y0)
            continue;
        const uint64_t pw = (w - x0 + dx - 1) / dx, ph = (h - y0 + dy - 1) / dy;
        total += ph * (1 + (pw * bpp + 7) / 8);
    }
    return total;
}

/* Walks the chunks of a PNG whose header stb has accepted and inflates its IDAT
 * stream into a buffer bounded by the header's size; refuses what would not fit. */
static engine_status png_check_stream(const uint8_t *b, size_t len, engine_err *err)
{
    size_t pos = 8, idat_bytes = 0;
    const uint8_t *ihdr = NULL;
    bool iend = false;

    while (!iend) {
        if (len - pos < 12)
            return engine_fail(err, ENGINE_ERR_IMAGE, "image: truncated PNG (no IEND chunk)");
        const uint32_t clen = be32(b + pos);
        const uint8_t *type = b + pos + 4;
        if (clen > len - pos - 12)
            return engine_fail(err, ENGINE_ERR_IMAGE, "image: truncated PNG (chunk at byte "
                               "%zu runs past the end)", pos);
        if (!memcmp(type, "IHDR", 4) && clen == 13 && !ihdr)
            ihdr = b + pos + 8;
        else if (!memcmp(type, "CgBI", 4))
            return engine_fail(err, ENGINE_ERR_IMAGE, "image: Apple CgBI PNGs are not "
                               "supported");
        else if (!memcmp(type, "IDAT", 4))
            idat_bytes += clen;
        else if (!memcmp(type, "IEND", 4))
            iend = true;
        pos += 12 + (size_t)clen;
    }
    if (!ihdr)
        return engine_fail(err, ENGINE_ERR_IMAGE, "image: corrupt PNG (no IHDR chunk)");

    static const int chans[7] = {1, 0, 3, 1, 2, 0, 4};   /* by colour type */
    const uint32_t w = be32(ihdr), h = be32(ihdr + 4);
    if ((uint64_t)w * h > IMAGE_MAX_PIXELS)   /* stb read the same chunk; keep it so */
        return engine_fail(err, ENGINE_ERR_INVALID, "image: PNG of %ux%u too large", w, h);
    const unsigned depth = ihdr[8], ctype = ihdr[9];
    if (ctype > 6 || chans[ctype] == 0 || depth == 0 || depth > 16 || (depth & (depth - 1)))
        return engine_fail(err, ENGINE_ERR_IMAGE, "image: corrupt PNG (colour type %u, "
                           "depth %u)", ctype, depth);
    const uint64_t raw = png_raw_bytes(w, h, (unsigned)chans[ctype] * depth, ihdr[12] != 0);
    /* Real files sometimes carry a little junk after the pixels and stb accepts it;
     * a quarter more bounds memory just as well. */
    const uint64_t limit = raw + raw / 4 + 65536;
    if (limit > INT_MAX || idat_bytes > INT_MAX)
        return engine_fail(err, ENGINE_ERR_INVALID, "image: PNG of %ux%u too large", w, h);

    uint8_t *idat = malloc(idat_bytes ? idat_bytes : 1);
    char *scratch = malloc((size_t)limit);
    engine_status st = ENGINE_OK;
    if (!idat || !scratch) {
        st = engine_fail(err, ENGINE_ERR_NOMEM, "image: no memory to inflate a %ux%u PNG",
                         w, h);
        goto out;
    }
    size_t off = 0;
    for (pos = 8;;) {
        const uint32_t clen = be32(b + pos);
        if (!memcmp(b + pos + 4, "IDAT", 4)) {
            memcpy(idat + off, b + pos + 8, clen);
            off += clen;
        } else if (!memcmp(b + pos + 4, "IEND", 4)) {
            break;
        }
        pos += 12 + (size_t)clen;
    }
    if (stbi_zlib_decode_buffer(scratch, (int)limit, (const char *)idat, (int)idat_bytes) < 0)
        st = engine_fail(err, ENGINE_ERR_IMAGE, "image: corrupt PNG (pixel data is not a "
                         "valid zlib stream of at most %llu bytes: %s)",
                         (unsigned long long)limit, stb_reason());
out:
    free(scratch);
    free(idat);
    return st;
}

engine_status image_to_tensor(const uint8_t *bytes, size_t len, const image_preproc *pp,
                              float *out, engine_err *err)
{
    engine_status st = check_preproc(pp, err);
    if (st != ENGINE_OK)
        return st;
    if (!out)
        return engine_fail(err, ENGINE_ERR_INVALID, "image: NULL output");
    if (!bytes || len == 0)
        return engine_fail(err, ENGINE_ERR_IMAGE, "image: empty");
    if (len > INT_MAX)
        return engine_fail(err, ENGINE_ERR_INVALID, "image: %zu bytes is too large", len);

    const bool png = len >= sizeof png_sig && !memcmp(bytes, png_sig, sizeof png_sig);
    const bool jpeg = len >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff;
    if (!png && !jpeg)
        return engine_fail(err, ENGINE_ERR_IMAGE, "image: not a PNG or JPEG (unknown "
                           "signature)");
    const char *kind = png ? "PNG" : "JPEG";

    int w, h, c;
    if (!stbi_info_from_memory(bytes, (int)len, &w, &h, &c))
        return engine_fail(err, ENGINE_ERR_IMAGE, "image: not a PNG or JPEG (%s header: %s)",
                           kind, stb_reason());
    if ((st = check_size(w, h, err)) != ENGINE_OK)
        return st;
    if (png && (st = png_check_stream(bytes, len, err)) != ENGINE_OK)
        return st;

    stbi_set_flip_vertically_on_load_thread(0);
    stbi_set_unpremultiply_on_load_thread(0);
    stbi_convert_iphone_png_to_rgb_thread(0);
    int dw, dh, dc;
    uint8_t *px = stbi_load_from_memory(bytes, (int)len, &dw, &dh, &dc, 0);
    if (!px)
        return engine_fail(err, ENGINE_ERR_IMAGE, "image: corrupt %s (%s)", kind,
                           stb_reason());
    /* The header was read twice; a decoder that disagreed with itself is not trusted. */
    if (dw != w || dh != h || dc < 1 || dc > 4)
        st = engine_fail(err, ENGINE_ERR_IMAGE, "image: corrupt %s (decoded %dx%dx%d, "
                         "header said %dx%d)", kind, dw, dh, dc, w, h);
    else
        st = pixels_to_tensor(px, h, w, dc, pp, out, err);
    stbi_image_free(px);
    return st;
}
