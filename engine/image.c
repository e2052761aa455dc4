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
 *
 * stb's globals.  Debian's libstb.so is built with STBI_THREAD_LOCAL: it has a TLS
 * segment, stbi_failure_reason() reads through __tls_get_addr, and the *_thread
 * setters exist (they are only compiled with thread locals).  So the failure reason
 * is per thread and quoted in messages.  The vertical-flip flag still has a
 * process-wide default anyone may set; every decode sets this thread's override to
 * "off" so no other stb user in the process can flip our images.  (The unpremultiply
 * and iPhone flags only act on Apple CgBI PNGs, which are refused before stb runs.)
 *
 * Matching torchvision (PIL backend): RGB->gray is PIL's convert("L") bit for bit
 * (L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16, checked against Pillow 9.4 over
 * all 2^24 colours); gray->RGB copies; alpha is dropped, not composited (as PIL's
 * convert("RGB")).  Normalisation is float32 (p / 255 - mean) / std in ToTensor +
 * Normalize's order, so it is bit-identical.  Resize(int) + CenterCrop geometry is
 * torchvision's (long side truncated, crop offset rounded half to even) and the
 * resampling is Pillow's bilinear reimplemented (see "geometry" below), so the whole
 * pipeline reproduces torchvision's tensor exactly for PNGs (checked on 300 random
 * sizes, channel counts and modes).  JPEG decoders differ: stb against PIL's
 * libjpeg-turbo measured at most 3 levels for 4:4:4 and 4:2:0 chroma, up to 9 at
 * sharp edges for 4:2:2, mean under 0.3.  16-bit PNGs keep their high byte (stb);
 * EXIF orientation is ignored (as PIL's Image.open).
 */
#include "engine/image.h"

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <stb/stb_image.h>

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
        /* no upper bound: the resized long side is range-checked per image */
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

/* ---- geometry -------------------------------------------------------------------
 *
 * Resampling is Pillow's ImagingResample with its BILINEAR filter, which is what
 * torchvision's Resize does to a PIL image: a tent filter widened by the scale factor
 * when shrinking, weights in double, normalised per output pixel, rounded to 22-bit
 * fixed point, a horizontal pass then a vertical pass with 8-bit rounding between.
 * The same arithmetic in the same order gives the same bytes.  (stb_image_resize
 * neither matches PIL nor survives every ratio: v0.97 asserts on 500x375 -> 341x256.)
 * Only the output window that will be used is computed, so a centre crop never
 * materialises the full resized image. */

#define PIL_PRECISION_BITS 22    /* Pillow's 32 - 8 - 2 */
#define RESAMPLE_MAX_ROW_OUTPUTS (2LL * IMAGE_MAX_PIXELS)

/* Per-output-pixel filter taps along one axis: output i reads input
 * [first[i], first[i] + count[i]) with weights k[off[i]...]. */
typedef struct taps {
    int *first, *count;
    size_t *off;
    int32_t *k;
} taps;

static void taps_free(taps *t)
{
    free(t->first), free(t->count), free(t->off), free(t->k);
}

static double pil_bilinear(double x)
{
    if (x < 0.0)
        x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc for in_size -> out_size, for
 * outputs [o0, o0 + n) only, stored compactly (only the taps inside the image). */
static bool taps_make(taps *t, int in_size, int out_size, int o0, int n)
{
    const double scale = (double)(float)in_size / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = 1.0 * filterscale, ss = 1.0 / filterscale;
    const int ksize = (int)ceil(support) * 2 + 1;

    *t = (taps){0};
    t->first = malloc((size_t)n * sizeof *t->first);
    t->count = malloc((size_t)n * sizeof *t->count);
    t->off = malloc((size_t)n * sizeof *t->off);
    if (!t->first || !t->count || !t->off)
        goto fail;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const double center = (o0 + i + 0.5) * scale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0)
            xmin = 0;
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        if (xmax > ksize)      /* cannot happen; keeps the tap count bounded anyway */
            xmax = ksize;
        if (xmax < 0)
            xmax = 0;
        t->first[i] = xmin;
        t->count[i] = xmax;
        t->off[i] = total;
        total += (size_t)xmax;
    }
    t->k = malloc((total ? total : 1) * sizeof *t->k);
    if (!t->k)
        goto fail;
    for (int i = 0; i < n; i++) {
        const double center = (o0 + i + 0.5) * scale;
        const int xmin = t->first[i];
        double ww = 0.0;
        /* the weights are recomputed rather than stored as doubles: same values */
        for (int x = 0; x < t->count[i]; x++)
            ww += pil_bilinear((x + xmin - center + 0.5) * ss);
        for (int x = 0; x < t->count[i]; x++) {
            double w = pil_bilinear((x + xmin - center + 0.5) * ss);
            if (ww != 0.0)
                w /= ww;
            t->k[t->off[i] + (size_t)x] = w < 0 ? (int32_t)(-0.5 + w * (1 << PIL_PRECISION_BITS))
                                                : (int32_t)(0.5 + w * (1 << PIL_PRECISION_BITS));
        }
    }
    return true;
fail:
    taps_free(t);
    return false;
}

/* int64 sums: Pillow's int32 ones stay in range only just (255 * 2 * 2^22) */
static uint8_t pil_clip8(int64_t acc)
{
    if (acc < 0)
        return 0;
    acc >>= PIL_PRECISION_BITS;
    return acc > 255 ? 255 : (uint8_t)acc;
}

/* src (h, w, c) resized to (nh, nw); rows [y0, y0 + oh) and columns [x0, x0 + ow) of
 * the result go to dst (oh, ow, c).  An axis whose size is unchanged is copied, as
 * Pillow skips that pass. */
static engine_status resample_window(const uint8_t *src, int w, int h, int c, int nw, int nh,
                                     int x0, int y0, int ow, int oh, uint8_t *dst,
                                     engine_err *err)
{
    const bool horiz = nw != w, vert = nh != h;
    taps th = {0}, tv = {0};
    uint8_t *tmp = NULL;
    engine_status st = ENGINE_OK;

    if ((horiz && !taps_make(&th, w, nw, x0, ow)) || (vert && !taps_make(&tv, h, nh, y0, oh))) {
        st = engine_fail(err, ENGINE_ERR_NOMEM, "image: no memory to resize %dx%d to %dx%d",
                         w, h, nw, nh);
        goto out;
    }
    /* source rows the vertical pass reads (the window's rows when not resizing) */
    int r0 = y0, r1 = y0 + oh;
    if (vert) {
        r0 = tv.first[0];
        r1 = tv.first[oh - 1] + tv.count[oh - 1];
        for (int i = 0; i < oh; i++) {   /* monotonic in PIL, but do not rely on it */
            if (tv.first[i] < r0)
                r0 = tv.first[i];
            if (tv.first[i] + tv.count[i] > r1)
                r1 = tv.first[i] + tv.count[i];
        }
    }
    /* Rows through the horizontal pass times their width is the work and the size of
     * tmp.  For ordinary images it is about the source height times the model width;
     * a 1x16M strip resized to 4096x4096 would make it 2^36. */
    if ((long long)(r1 - r0) * ow > RESAMPLE_MAX_ROW_OUTPUTS) {
        st = engine_fail(err, ENGINE_ERR_INVALID, "image: %dx%d is too elongated to resize "
                         "to %dx%d", w, h, nw, nh);
        goto out;
    }
    /* horizontal pass: rows [r0, r1) -> tmp (r1 - r0, ow, c) */
    tmp = malloc((size_t)(r1 - r0 > 0 ? r1 - r0 : 1) * (size_t)ow * (size_t)c);
    if (!tmp) {
        st = engine_fail(err, ENGINE_ERR_NOMEM, "image: no memory to resize %dx%d to %dx%d",
                         w, h, nw, nh);
        goto out;
    }
    for (int y = r0; y < r1; y++) {
        const uint8_t *row = src + (size_t)y * w * c;
        uint8_t *trow = tmp + (size_t)(y - r0) * ow * c;
        if (!horiz) {
            memcpy(trow, row + (size_t)x0 * c, (size_t)ow * c);
            continue;
        }
        for (int i = 0; i < ow; i++) {
            const int32_t *k = th.k + th.off[i];
            const uint8_t *p = row + (size_t)th.first[i] * c;
            for (int ch = 0; ch < c; ch++) {
                int64_t acc = 1 << (PIL_PRECISION_BITS - 1);
                for (int x = 0; x < th.count[i]; x++)
                    acc += p[(size_t)x * c + ch] * k[x];
                trow[(size_t)i * c + ch] = pil_clip8(acc);
            }
        }
    }
    /* vertical pass: tmp -> dst (oh, ow, c) */
    for (int j = 0; j < oh; j++) {
        uint8_t *drow = dst + (size_t)j * ow * c;
        if (!vert) {
            memcpy(drow, tmp + (size_t)j * ow * c, (size_t)ow * c);
            continue;
        }
        const int32_t *k = tv.k + tv.off[j];
        const uint8_t *base = tmp + (size_t)(tv.first[j] - r0) * ow * c;
        for (size_t e = 0; e < (size_t)ow * c; e++) {
            int64_t acc = 1 << (PIL_PRECISION_BITS - 1);
            for (int y = 0; y < tv.count[j]; y++)
                acc += base[(size_t)y * ow * c + e] * k[y];
            drow[e] = pil_clip8(acc);
        }
    }
out:
    free(tmp);
    taps_free(&th);
    taps_free(&tv);
    return st;
}

/* Python's int(round(d / 2.0)) for d >= 0: halves go to the even neighbour. */
static int half_round_even(int d)
{
    int q = d / 2;
    return (d % 2 != 0 && q % 2 != 0) ? q + 1 : q;
}

/* (H, W, c) pixels -> out (c, H, W) normalised, float32 in the order torchvision's
 * ToTensor + Normalize compute it. */
static void normalise(const uint8_t *src, int c, const image_preproc *pp, float *out)
{
    const int H = pp->height, W = pp->width;
    const size_t n = (size_t)H * W;
    for (int ch = 0; ch < c; ch++) {
        const float mean = pp->mean[ch], std = pp->std[ch];
        float *o = out + (size_t)ch * n;
        for (size_t i = 0; i < n; i++)
            o[i] = ((float)src[i * c + ch] / 255.0f - mean) / std;
    }
}

/* The shared path: pixels already validated (1 <= c <= 4, size within limits). */
static engine_status pixels_to_tensor(const uint8_t *px, int h, int w, int c,
                                      const image_preproc *pp, float *out, engine_err *err)
{
    const int C = pp->channels, H = pp->height, W = pp->width;
    int nw = W, nh = H, x0 = 0, y0 = 0;   /* resized size, crop offset */

    if (pp->resize == IMAGE_RESIZE_NONE && (h != H || w != W))
        return engine_fail(err, ENGINE_ERR_INVALID, "image: image is %dx%d, the model takes "
                           "exactly %dx%d (resize \"none\")", w, h, W, H);
    if (pp->resize == IMAGE_RESIZE_CENTER_CROP) {
        /* torchvision Resize(int): the shorter side becomes resize_shorter, the longer
         * int(size * long / short), a double division like Python's true division. */
        const int s = pp->resize_shorter;
        const bool w_short = w <= h;
        const int sh = w_short ? w : h, lg = w_short ? h : w;
        const double nl = (double)s * (double)lg / (double)sh;
        if (nl > INT_MAX / 2)
            return engine_fail(err, ENGINE_ERR_INVALID, "image: %dx%d resized to shorter side "
                               "%d is too large", w, h, s);
        nw = w_short ? s : (int)nl;
        nh = w_short ? (int)nl : s;
        if (nw < W || nh < H)
            /* torchvision would zero-pad; configs with resize_shorter >= height, width
             * never get here (proto/model_dir checks it). */
            return engine_fail(err, ENGINE_ERR_INVALID, "image: %dx%d resized to %dx%d is "
                               "smaller than the %dx%d crop", w, h, nw, nh, W, H);
        x0 = half_round_even(nw - W);
        y0 = half_round_even(nh - H);
    }

    uint8_t *conv = convert_channels(px, (size_t)w * h, c, C);
    uint8_t *win = malloc((size_t)H * W * C);   /* (H, W, C) */
    engine_status st = ENGINE_OK;
    if (!conv || !win)
        st = engine_fail(err, ENGINE_ERR_NOMEM, "image: no memory for a %dx%d image", w, h);
    else
        st = resample_window(conv, w, h, C, nw, nh, x0, y0, W, H, win, err);
    if (st == ENGINE_OK)
        normalise(win, C, pp, out);
    free(win);
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

    /* stb refuses some huge PNG headers itself ("too large"); read the size first so
     * every size problem is reported as one, with the sizes. */
    if (png && len >= 24 && !memcmp(bytes + 12, "IHDR", 4)) {
        const uint32_t pw = be32(bytes + 16), ph = be32(bytes + 20);
        if (pw == 0 || ph == 0 || (uint64_t)pw * ph > IMAGE_MAX_PIXELS)
            return engine_fail(err, ENGINE_ERR_INVALID, "image: %ux%u pixels is outside the "
                               "accepted range (1 to %d pixels)", pw, ph, IMAGE_MAX_PIXELS);
    }
    int w, h, c;
    if (!stbi_info_from_memory(bytes, (int)len, &w, &h, &c))
        return engine_fail(err, ENGINE_ERR_IMAGE, "image: not a PNG or JPEG (%s header: %s)",
                           kind, stb_reason());
    if ((st = check_size(w, h, err)) != ENGINE_OK)
        return st;
    if (png && (st = png_check_stream(bytes, len, err)) != ENGINE_OK)
        return st;

    stbi_set_flip_vertically_on_load_thread(0);
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
