/* conv.c — 2-D convolution, NCHW, PyTorch's semantics (cross-correlation, zero
 * padding, dilation, groups).
 *
 * Five paths, chosen per call from the shape (and whether the batch has more than
 * one image):
 *   - general: per image and group, im2col into scratch, then GEMM
 *       y_g (out_c/g, oh*ow) = W_g (out_c/g, in_c/g*kh*kw) x col (in_c/g*kh*kw, oh*ow),
 *     done in blocks of output rows so each col block is still in L2 when BLAS packs it;
 *   - 1x1, stride 1, no padding: the input plane already is the col matrix, GEMM on it;
 *   - batched (n > 1, plane of at most 512 outputs): the col matrices of a
 *     block of images side by side, (K, imgs*oh*ow), one GEMM for the block, then
 *     each image's planes stored to y with bias and activation.  A 14x14 plane gives
 *     a per-image GEMM of N = 196 columns, where OpenBLAS runs at ~60% of what it
 *     reaches at N >= 1500 and a second thread barely helps; 7x7 (N = 49) is worse;
 *   - direct (in_c/g*kh*kw <= 32, a first layer on 1-3 channels): a register-blocked
 *     loop over a zero-padded copy of the input; with K that small a GEMM does
 *     nothing but stream its output, three times (BLAS zeroes C first);
 *   - depthwise (one input channel per group): a direct loop, no GEMM — a GEMM with
 *     M = 1 or 2 and K = 9 would spend everything on packing.
 * Bias and activation are fused into one pass over each group's output right after
 * its GEMM, while that output is still in cache (batched: into the store to y).
 *
 * Where the time goes (ResNet-like 3x3 layers, batch 1): the GEMM, by far; im2col
 * (kh*kw copies of the input) and the epilogue added ~10-15% on top of it before
 * the row blocking, less since.  The GEMM's own efficiency is OpenBLAS's to give.
 * The direct and depthwise loops are single-threaded: BLAS threads do not help
 * them, the caller's workers must.  Their inner loops (and im2col's copies) are
 * written with 8-wide GNU vectors because the build is -O2 for baseline x86-64,
 * where GCC vectorises no plain loop; on x86-64 an AVX2 clone is chosen at load
 * time.  Stride 1 and 2 are vectorised; other strides run scalar.
 *
 * Pure: no allocation, no state; scratch is the caller's (conv2d_scratch_floats).
 */
#include "engine/blas.h"
#include "engine/ops/ops.h"

#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include "engine/ops/simd.h"


/* Floor division for a possibly negative numerator and a positive divisor. */
static long floor_div(long a, long b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

int conv2d_out_size(int in, int k, int stride, int pad, int dil)
{
    if (stride <= 0 || k <= 0 || dil <= 0)
        return 0;
    long span = (long)dil * (k - 1) + 1;
    return (int)(floor_div((long)in + 2L * pad - span, stride) + 1);
}

/* One input channel per group.  A single-channel input with groups == 1 is left
 * to the GEMM, which beats the direct loop once out_c and the kernel grow. */
static bool conv_is_depthwise(const conv2d_params *p)
{
    return p->groups > 1 && p->groups == p->in_c;
}

static bool conv_is_pointwise(const conv2d_params *p)
{
    return p->k_h == 1 && p->k_w == 1 && p->stride_h == 1 && p->stride_w == 1 &&
           p->pad_h == 0 && p->pad_w == 0;
}

/* Output rows per im2col block.  A whole image's col matrix (7 MB for a 64-channel
 * 3x3 layer at 56x56) goes out to L3 and comes back for BLAS to pack; a block of
 * about one L2 (1 MiB per core on Zen 4) is packed while still there, which measured
 * ~10% faster on the 56x56 layers and the 7x7 stem.  The block keeps at least
 * CONV_MIN_COLS columns: narrower GEMMs lose more to BLAS overhead than they gain. */
enum { CONV_BLOCK_BYTES = 1 << 20, CONV_MIN_COLS = 256 };

/* Batched path: a GEMM over one image's plane has N = out_h*out_w columns, too few
 * on small planes (196 at 14x14, 49 at 7x7) for OpenBLAS to run well or to use a
 * second thread.  On planes of at most CONV_BATCH_MAX_PLANE outputs, the col
 * matrices of several images go side by side into one GEMM of about
 * CONV_BATCH_COLS columns, as long as the block (col and GEMM output) stays under
 * CONV_BATCH_BYTES.  Measured on 2 threads, batch 16: ResNet-50's 7x7 layers
 * 1.35-1.56x, its 14x14 ones 1.0-1.12x, the Fashion CNN's 14x14 conv ~1.15x; but a
 * 28x28 plane (784) already runs near OpenBLAS's best alone, and batching its 1x1
 * convs only added the copy (0.67x), hence the plane limit.  The 4 MiB block
 * measured a little better than 1 or 2 MiB on the Fashion CNN. */
enum { CONV_BATCH_MAX_PLANE = 512, CONV_BATCH_COLS = 2048, CONV_BATCH_BYTES = 4 << 20 };

/* Direct path: with K = in_c/g*kh*kw this small (a first layer on 1 or 3 channels)
 * a GEMM only streams its output; a register-blocked loop does the same arithmetic
 * with no col matrix, eight output channels by eight pixels at a time. */
enum { CONV_DIRECT_MAX_K = 32, CONV_DIRECT_OC = 8 };

static int conv_block_rows(const conv2d_params *p)
{
    const size_t row_bytes =
        sizeof(float) * (size_t)(p->in_c / p->groups) * p->k_h * p->k_w * p->out_w;
    size_t rows = CONV_BLOCK_BYTES / (row_bytes ? row_bytes : 1);
    size_t min_rows = (CONV_MIN_COLS + (size_t)p->out_w - 1) / (p->out_w > 0 ? p->out_w : 1);
    if (rows < min_rows)
        rows = min_rows;
    return rows < (size_t)p->out_h ? (int)rows : p->out_h;
}

/* Images per batched GEMM at most; 1 means the per-image path.  Depends on the
 * shape only.  The block (col and GEMM output, (K + out_c/g) x imgs*HW floats) is
 * kept under CONV_BATCH_BYTES. */
static int conv_batch_images(const conv2d_params *p)
{
    const size_t spatial = (size_t)p->out_h * p->out_w;
    const size_t k = (size_t)(p->in_c / p->groups) * p->k_h * p->k_w;
    const size_t ocg = (size_t)(p->out_c / p->groups);
    if (spatial == 0 || spatial > CONV_BATCH_MAX_PLANE)
        return 1;
    size_t imgs = (CONV_BATCH_COLS + spatial - 1) / spatial;
    const size_t fit = CONV_BATCH_BYTES / (sizeof(float) * (k + ocg) * spatial);
    if (imgs > fit)
        imgs = fit;
    return imgs > 1 ? (int)imgs : 1;
}

static bool conv_is_direct(const conv2d_params *p)
{
    const long k = (long)(p->in_c / p->groups) * p->k_h * p->k_w;
    return !conv_is_depthwise(p) && k <= CONV_DIRECT_MAX_K && p->k_h * p->k_w > 1 &&
           p->stride_w <= 2;
}

/* A zero-padded copy of one image-group's input, (cg, rows, pitch), which the direct
 * path and the batched im2col read instead of the input: no tap then needs a bounds
 * check.  The pitch also covers what the last group of eight outputs of a row reads
 * (one float more at stride 2). */
static void conv_pad_dims(const conv2d_params *p, int *rows, int *pitch)
{
    const long ow8 = p->out_w > 8 ? p->out_w : 8;
    long w = (long)p->in_w + 2L * p->pad_w;
    const long reach = (ow8 - 1) * p->stride_w + (long)(p->k_w - 1) * p->dil_w + 1 +
                       (p->stride_w == 2);
    *pitch = (int)(reach > w ? reach : w);
    *rows = p->in_h + 2 * p->pad_h;
}

/* Floats of the padded copy the GEMM paths' im2col reads, or 0 where it reads the
 * input itself: a 1x1 conv needs no im2col, and without padding the generic im2col
 * has no borders to fill (a padded copy of a strided 1x1's input would be 4x its
 * output). */
static size_t conv_pad_floats(const conv2d_params *p)
{
    if (conv_is_pointwise(p) || (p->pad_h == 0 && p->pad_w == 0))
        return 0;
    int rows, pitch;
    conv_pad_dims(p, &rows, &pitch);
    return (size_t)(p->in_c / p->groups) * rows * pitch;
}

/* Packed weights: per group, tiles of CONV_DIRECT_OC output channels, (K, 8) each,
 * zero-filled past out_c/g. */
static size_t conv_direct_wfloats(const conv2d_params *p)
{
    const size_t ocg = (size_t)(p->out_c / p->groups);
    const size_t tiles = (ocg + CONV_DIRECT_OC - 1) / CONV_DIRECT_OC;
    return (size_t)p->groups * tiles * CONV_DIRECT_OC * (size_t)(p->in_c / p->groups) *
           p->k_h * p->k_w;
}

size_t conv2d_scratch_floats_batch(const conv2d_params *p, int max_batch)
{
    if (conv_is_depthwise(p))
        return 0;
    if (conv_is_direct(p)) {
        int rows, pitch;
        conv_pad_dims(p, &rows, &pitch);
        return conv_direct_wfloats(p) + (size_t)(p->in_c / p->groups) * rows * pitch;
    }
    const size_t k = (size_t)(p->in_c / p->groups) * p->k_h * p->k_w;
    size_t s = 0;
    if (!conv_is_pointwise(p)) {
        /* one im2col block; when it is the whole image, also the padded copy it is
         * made from */
        const int block = conv_block_rows(p);
        s = k * block * p->out_w + (block == p->out_h ? conv_pad_floats(p) : 0);
    }
    int imgs = conv_batch_images(p);
    if (imgs > max_batch)
        imgs = max_batch;
    if (imgs > 1) {
        /* col (K, imgs*HW), the GEMM's output (out_c/g, imgs*HW), the padded copy */
        const size_t b = (size_t)imgs * p->out_h * p->out_w * (k + (size_t)(p->out_c / p->groups)) +
                         conv_pad_floats(p);
        if (b > s)
            s = b;
    }
    return s;
}

size_t conv2d_scratch_floats(const conv2d_params *p)
{
    return conv2d_scratch_floats_batch(p, INT_MAX);
}

/* Output positions [*lo, *hi) along one axis whose tap at input offset `off`
 * (= k*dil - pad) lands inside [0, in): o*stride + off in [0, in). */
static void conv_valid_range(int out, int in, int stride, int off, int *lo, int *hi)
{
    long l = off >= 0 ? 0 : ((long)-off + stride - 1) / stride;
    long h = (long)in - 1 - off < 0 ? 0 : ((long)in - 1 - off) / stride + 1;
    if (l > out)
        l = out;
    if (h > out)
        h = out;
    if (h < l)
        h = l;
    *lo = (int)l;
    *hi = (int)h;
}

/* col (cg*kh*kw, rows*ow), row stride ld, for output rows [oy0, oy0 + rows) of one
 * image-group x (cg, in_h, in_w); padding reads as 0.  Rows of col are in the
 * weight's (c, ky, kx) order, so W_g multiplies col as stored.  ld > rows*ow lays
 * several images' blocks side by side. */
OPS_SIMD_CLONES
static void conv_im2col(const conv2d_params *p, int cg, const float *x, int oy0, int rows,
                        float *col, size_t ld)
{
    const int ow = p->out_w, oy1 = oy0 + rows;
    const size_t plane = (size_t)p->in_h * p->in_w;
    const bool same_width = p->stride_h == 1 && p->stride_w == 1 && ow == p->in_w;
    for (int c = 0; c < cg; c++) {
        const float *xc = x + c * plane;
        for (int ky = 0; ky < p->k_h; ky++) {
            int oy_lo, oy_hi;
            conv_valid_range(p->out_h, p->in_h, p->stride_h, ky * p->dil_h - p->pad_h, &oy_lo,
                             &oy_hi);
            oy_lo = oy_lo < oy0 ? oy0 : oy_lo > oy1 ? oy1 : oy_lo;
            oy_hi = oy_hi > oy1 ? oy1 : oy_hi < oy_lo ? oy_lo : oy_hi;
            for (int kx = 0; kx < p->k_w; kx++) {
                const int off_x = kx * p->dil_w - p->pad_w;
                int ox_lo, ox_hi;
                conv_valid_range(ow, p->in_w, p->stride_w, off_x, &ox_lo, &ox_hi);
                float *dst = col; /* row oy of the block at dst + (oy - oy0) * ow */
                col += ld;
                memset(dst, 0, sizeof(float) * (size_t)(oy_lo - oy0) * ow);
                if (same_width && oy_lo < oy_hi && ox_lo < ox_hi) {
                    /* Source rows lie as far apart as destination rows, so every
                     * valid row is one shifted block: a single copy, then re-zero
                     * the padding columns it wrapped into.  Saves oh small copies. */
                    const long shift = (long)(ky * p->dil_h - p->pad_h) * p->in_w + off_x;
                    const size_t first = (size_t)oy_lo * ow + ox_lo;
                    const size_t end = (size_t)(oy_hi - 1) * ow + ox_hi;
                    memcpy(dst + (first - (size_t)oy0 * ow), xc + ((long)first + shift),
                           sizeof(float) * (end - first));
                    for (int oy = oy_lo; oy < oy_hi; oy++) {
                        float *d = dst + (size_t)(oy - oy0) * ow;
                        for (int ox = 0; ox < ox_lo; ox++)
                            d[ox] = 0.0f;
                        for (int ox = ox_hi; ox < ow; ox++)
                            d[ox] = 0.0f;
                    }
                } else {
                    for (int oy = oy_lo; oy < oy_hi; oy++) {
                        const int iy = oy * p->stride_h + ky * p->dil_h - p->pad_h;
                        const float *src = xc + (size_t)iy * p->in_w; /* input row iy */
                        float *d = dst + (size_t)(oy - oy0) * ow;
                        for (int ox = 0; ox < ox_lo; ox++)
                            d[ox] = 0.0f;
                        if (p->stride_w == 1) {
                            memcpy(d + ox_lo, src + (ox_lo + off_x),
                                   sizeof(float) * (size_t)(ox_hi - ox_lo));
                        } else {
                            int ox = ox_lo;
                            /* the vector loads stop one float short of the row's last
                             * pixel read, so v8f_load_strided never reads past the plane */
                            if (p->stride_w == 2)
                                for (; ox + 8 < ox_hi; ox += 8) {
                                    v8f v;
                                    v8f_load_strided(&v, src + (ox * 2 + off_x), 2);
                                    memcpy(d + ox, &v, sizeof v);
                                }
                            for (; ox < ox_hi; ox++)
                                d[ox] = src[ox * p->stride_w + off_x];
                        }
                        for (int ox = ox_hi; ox < ow; ox++)
                            d[ox] = 0.0f;
                    }
                }
                memset(dst + (size_t)(oy_hi - oy0) * ow, 0, sizeof(float) * (size_t)(oy1 - oy_hi) * ow);
            }
        }
    }
}

/* Interior outputs [ox_lo, ox_hi) of one row, eight at a time with the sum in a
 * register; needs ox_hi - ox_lo >= 8.  The last group is shifted left to end at
 * ox_hi and recomputes a few outputs rather than leave a scalar tail.  Inlined with
 * a constant stride, so v8f_load_strided's branch folds away. */
static inline __attribute__((always_inline)) void
dw_row_vec(const float *x, int in_w, const float *wk, int kw, int stride, int dil_w, int pad_w,
           int iy0, int dil_h, int ky_lo, int ky_hi, float b, int ox_lo, int ox_hi, float *yr)
{
    const v8f vb = {b, b, b, b, b, b, b, b};
    for (int ox = ox_lo; ox < ox_hi; ox += 8) {
        if (ox + 8 > ox_hi)
            ox = ox_hi - 8;
        v8f acc = vb;
        for (int ky = ky_lo; ky < ky_hi; ky++) {
            const float *xr = x + (size_t)(iy0 + ky * dil_h) * in_w + (ox * stride - pad_w);
            const float *wr = wk + ky * kw;
            for (int kx = 0; kx < kw; kx++) {
                v8f v;
                v8f_load_strided(&v, xr + kx * dil_w, stride);
                acc += wr[kx] * v;
            }
        }
        memcpy(yr + ox, &acc, sizeof acc);
    }
}

/* The same for a 3x3 filter whose three input rows all exist (every row but the
 * padded top and bottom ones): the nine weights stay in registers across the row
 * and the taps are unrolled by hand, since -O2 unrolls no loop, not even one of a
 * constant three trips.  Half the loads of the generic loop. */
static inline __attribute__((always_inline)) void
dw_row_vec3x3(const float *x, int in_w, const float *wk, int stride, int dil_w, int pad_w,
              int iy0, int dil_h, float b, int ox_lo, int ox_hi, float *yr)
{
    v8f w[9];
    for (int t = 0; t < 9; t++)
        w[t] = (v8f){wk[t], wk[t], wk[t], wk[t], wk[t], wk[t], wk[t], wk[t]};
    const v8f vb = {b, b, b, b, b, b, b, b};
    const float *r0 = x + (size_t)iy0 * in_w;
    const float *r1 = r0 + (size_t)dil_h * in_w, *r2 = r1 + (size_t)dil_h * in_w;
    for (int ox = ox_lo; ox < ox_hi; ox += 8) {
        if (ox + 8 > ox_hi)
            ox = ox_hi - 8;
        const size_t o = (size_t)(ox * stride - pad_w); /* >= 0 in the interior */
        v8f v0, v1, v2, acc = vb;
        v8f_load_strided(&v0, r0 + o, stride);
        v8f_load_strided(&v1, r0 + o + dil_w, stride);
        v8f_load_strided(&v2, r0 + o + 2 * dil_w, stride);
        acc += w[0] * v0 + w[1] * v1 + w[2] * v2;
        v8f_load_strided(&v0, r1 + o, stride);
        v8f_load_strided(&v1, r1 + o + dil_w, stride);
        v8f_load_strided(&v2, r1 + o + 2 * dil_w, stride);
        acc += w[3] * v0 + w[4] * v1 + w[5] * v2;
        v8f_load_strided(&v0, r2 + o, stride);
        v8f_load_strided(&v1, r2 + o + dil_w, stride);
        v8f_load_strided(&v2, r2 + o + 2 * dil_w, stride);
        acc += w[6] * v0 + w[7] * v1 + w[8] * v2;
        memcpy(yr + ox, &acc, sizeof acc);
    }
}

/* One output plane of a depthwise conv: y (oh, ow) from x (in_h, in_w) and one
 * filter wk (kh, kw) with bias b.  Rows: only the taps whose input row exists are
 * visited (a ky range per output row), so vertical padding costs nothing.
 * Columns: the interior, where every horizontal tap is in bounds, runs the vector
 * body without checks (stride 1 and 2; 3x3 specialised); the few border columns,
 * and everything at other strides, run a scalar loop that checks each tap. */
OPS_SIMD_CLONES
static void conv_depthwise_plane(const conv2d_params *p, const float *x, const float *wk,
                                 float b, float *y)
{
    const int kh = p->k_h, kw = p->k_w, sh = p->stride_h, sw = p->stride_w;
    const int dh = p->dil_h, dw = p->dil_w, ph = p->pad_h, pw = p->pad_w;
    const int in_h = p->in_h, in_w = p->in_w, oh = p->out_h, ow = p->out_w;

    /* Interior columns: ox*sw - pw >= 0 and ox*sw - pw + (kw-1)*dw <= in_w - 1.
     * Stride 2 reads one float past its last tap (v8f_load_strided), hence in_w - 1. */
    int ox_lo, ox_hi, unused_lo, unused_hi;
    conv_valid_range(ow, in_w, sw, -pw, &ox_lo, &unused_hi);
    conv_valid_range(ow, sw == 2 ? in_w - 1 : in_w, sw, (kw - 1) * dw - pw, &unused_lo, &ox_hi);
    if (ox_hi - ox_lo < 8 || sw > 2)
        ox_hi = ox_lo; /* too narrow for a vector, or a stride with no vector load */

    for (int oy = 0; oy < oh; oy++) {
        const int iy0 = oy * sh - ph;
        /* Taps ky with iy0 + ky*dh in [0, in_h). */
        int ky_lo = iy0 >= 0 ? 0 : (-iy0 + dh - 1) / dh;
        int ky_hi = in_h - 1 - iy0 < 0 ? 0 : (in_h - 1 - iy0) / dh + 1;
        if (ky_hi > kh)
            ky_hi = kh;
        float *yr = y + (size_t)oy * ow;

        for (int ox = 0; ox < ow; ox++) {
            if (ox == ox_lo)
                ox = ox_hi;
            if (ox >= ow)
                break;
            const int ix0 = ox * sw - pw;
            float acc = b;
            for (int ky = ky_lo; ky < ky_hi; ky++) {
                const float *xr = x + (size_t)(iy0 + ky * dh) * in_w;
                for (int kx = 0; kx < kw; kx++) {
                    const int ix = ix0 + kx * dw;
                    if (ix >= 0 && ix < in_w)
                        acc += wk[ky * kw + kx] * xr[ix];
                }
            }
            yr[ox] = acc;
        }

        if (ox_hi == ox_lo)
            continue;
        const bool full3x3 = kh == 3 && kw == 3 && ky_lo == 0 && ky_hi == 3;
        if (full3x3 && sw == 1)
            dw_row_vec3x3(x, in_w, wk, 1, dw, pw, iy0, dh, b, ox_lo, ox_hi, yr);
        else if (full3x3)
            dw_row_vec3x3(x, in_w, wk, 2, dw, pw, iy0, dh, b, ox_lo, ox_hi, yr);
        else if (sw == 1)
            dw_row_vec(x, in_w, wk, kw, 1, dw, pw, iy0, dh, ky_lo, ky_hi, b, ox_lo, ox_hi, yr);
        else
            dw_row_vec(x, in_w, wk, kw, 2, dw, pw, iy0, dh, ky_lo, ky_hi, b, ox_lo, ox_hi, yr);
    }
}

/* groups == in_c: output channel oc reads input channel oc / (out_c / in_c) (a
 * depth multiplier above 1 is allowed). */
static void conv_depthwise(const conv2d_params *p, int n, const float *x, const float *w,
                           const float *bias, act_kind act, float act_alpha, float *y)
{
    const int mult = p->out_c / p->in_c;
    const size_t in_plane = (size_t)p->in_h * p->in_w;
    const size_t out_plane = (size_t)p->out_h * p->out_w;
    const size_t taps = (size_t)p->k_h * p->k_w;
    for (int img = 0; img < n; img++) {
        for (int oc = 0; oc < p->out_c; oc++) {
            const float *xc = x + ((size_t)img * p->in_c + oc / mult) * in_plane;
            float *yc = y + ((size_t)img * p->out_c + oc) * out_plane;
            conv_depthwise_plane(p, xc, w + oc * taps, bias ? bias[oc] : 0.0f, yc);
            act_apply(act, act_alpha, yc, out_plane);
        }
    }
}

/* Copy one image-group x (cg, in_h, in_w) into the interior of its padded buffer
 * (cg, rows, pitch); the border, zeroed once by the caller, is never written. */
static void conv_pad_copy(const conv2d_params *p, int cg, const float *x, int pitch, int rows,
                          float *xpad)
{
    const size_t in_plane = (size_t)p->in_h * p->in_w, pad_plane = (size_t)rows * pitch;
    for (int c = 0; c < cg; c++)
        for (int iy = 0; iy < p->in_h; iy++)
            memcpy(xpad + c * pad_plane + (size_t)(iy + p->pad_h) * pitch + p->pad_w,
                   x + c * in_plane + (size_t)iy * p->in_w, sizeof(float) * p->in_w);
}

/* One output row of one col row: d[ox] = s[ox*stride] for ox < ow, eight at a time,
 * the last group shifted left to end at ow (two groups, no loop, for the common
 * 8..16); rows narrower than eight go through a copy so nothing lands past
 * d[ow - 1].  Inlined with a constant stride. */
static inline __attribute__((always_inline)) void conv_copy_row(const float *s, int stride,
                                                                int ow, float *d)
{
    v8f v, u;
    if (ow < 8) {
        float t[8];
        v8f_load_strided(&v, s, stride);
        memcpy(t, &v, sizeof v);
        for (int i = 0; i < ow; i++)
            d[i] = t[i];
    } else if (ow <= 16) {
        v8f_load_strided(&v, s, stride);
        v8f_load_strided(&u, s + (size_t)(ow - 8) * stride, stride);
        memcpy(d, &v, sizeof v);
        memcpy(d + ow - 8, &u, sizeof u);
    } else {
        for (int ox = 0; ox < ow; ox += 8) {
            if (ox + 8 > ow)
                ox = ow - 8;
            v8f_load_strided(&v, s + (size_t)ox * stride, stride);
            memcpy(d + ox, &v, sizeof v);
        }
    }
}

/* conv_im2col_padded's loops for one stride (1, 2, or any when 0: scalar). */
static inline __attribute__((always_inline)) void
conv_im2col_padded_body(const conv2d_params *p, int cg, const float *xpad, int pitch, int rows,
                        float *col, size_t ld, int stride)
{
    const int oh = p->out_h, ow = p->out_w, sw = p->stride_w;
    const size_t pad_plane = (size_t)rows * pitch, row_step = (size_t)p->stride_h * pitch;
    for (int c = 0; c < cg; c++)
        for (int ky = 0; ky < p->k_h; ky++)
            for (int kx = 0; kx < p->k_w; kx++, col += ld) {
                const float *s = xpad + c * pad_plane + (size_t)ky * p->dil_h * pitch +
                                 (size_t)kx * p->dil_w;
                float *d = col;
                for (int oy = 0; oy < oh; oy++, s += row_step, d += ow) {
                    if (stride)
                        conv_copy_row(s, stride, ow, d);
                    else
                        for (int ox = 0; ox < ow; ox++)
                            d[ox] = s[(size_t)ox * sw];
                }
            }
}

/* im2col of a whole image-group from its padded copy: col (cg*kh*kw, oh*ow), row
 * stride ld.  With padding already in place every col row is oh plain (or stride 2)
 * row copies: no memset, no border fix-ups, no calls, which is where the generic
 * conv_im2col spends its time on the small planes the batched path takes (a 14x14
 * plane: 196 floats per col row, 3 calls and 14-28 fix-ups). */
OPS_SIMD_CLONES
static void conv_im2col_padded(const conv2d_params *p, int cg, const float *xpad, int pitch,
                               int rows, float *col, size_t ld)
{
    if (p->stride_w == 1)
        conv_im2col_padded_body(p, cg, xpad, pitch, rows, col, ld, 1);
    else if (p->stride_w == 2)
        conv_im2col_padded_body(p, cg, xpad, pitch, rows, col, ld, 2);
    else
        conv_im2col_padded_body(p, cg, xpad, pitch, rows, col, ld, 0);
}

/* y[i] = act(src[i] + bias) over n floats: the batched path's copy back to NCHW,
 * with the epilogue fused into it for the kinds that are one vector op. */
OPS_SIMD_CLONES
static void conv_store_plane(const float *src, float *dst, size_t n, float bias, act_kind act,
                             float act_alpha)
{
    if (act != ACT_NONE && act != ACT_RELU) {
        memcpy(dst, src, sizeof(float) * n);
        act_apply_bias(act, act_alpha, bias, dst, n);
        return;
    }
    const v8f vb = {bias, bias, bias, bias, bias, bias, bias, bias}, zero = {0};
    const bool relu = act == ACT_RELU;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f v;
        memcpy(&v, src + i, sizeof v);
        v += vb;
        if (relu)
            v = (v8f)((v8i)v & ~(v < zero)); /* NaN stays NaN, as in act_apply */
        memcpy(dst + i, &v, sizeof v);
    }
    for (; i < n; i++) {
        const float v = src[i] + bias;
        dst[i] = relu && v < 0.0f ? 0.0f : v;
    }
}

/* nb images side by side: for each group, col (K, nb*HW) from im2col (or, for a 1x1
 * conv, the input planes copied as they are), one GEMM into out (out_c/g, nb*HW),
 * then each image's planes stored to y through the epilogue.  Scratch: col, out,
 * then the padded copy of one image-group (conv_pad_floats). */
static void conv_batched(const conv2d_params *p, int nb, int blk, const float *x,
                         const float *w, const float *bias, act_kind act, float act_alpha,
                         float *y, float *scratch, bool *pad_zeroed)
{
    const int cg = p->in_c / p->groups, ocg = p->out_c / p->groups;
    const int k = cg * p->k_h * p->k_w;
    const size_t spatial = (size_t)p->out_h * p->out_w, cols = (size_t)nb * spatial;
    const size_t in_plane = (size_t)p->in_h * p->in_w;
    const bool pointwise = conv_is_pointwise(p);
    /* offsets sized for the call's largest block (blk images), so the padded buffer
     * never moves and its zero border is written once per call */
    const size_t max_cols = (size_t)blk * spatial;
    float *col = scratch, *out = scratch + (size_t)k * max_cols;
    float *xpad = out + (size_t)ocg * max_cols;
    const size_t pad_floats = conv_pad_floats(p);
    int rows, pitch;
    conv_pad_dims(p, &rows, &pitch);
    if (pad_floats && !*pad_zeroed) {
        memset(xpad, 0, sizeof(float) * pad_floats);
        *pad_zeroed = true;
    }
    for (int g = 0; g < p->groups; g++) {
        for (int i = 0; i < nb; i++) {
            const float *xg = x + ((size_t)i * p->in_c + (size_t)g * cg) * in_plane;
            if (pointwise) {
                for (int c = 0; c < cg; c++)
                    memcpy(col + (size_t)c * cols + i * spatial, xg + c * in_plane,
                           sizeof(float) * spatial);
            } else if (pad_floats) {
                conv_pad_copy(p, cg, xg, pitch, rows, xpad);
                conv_im2col_padded(p, cg, xpad, pitch, rows, col + i * spatial, cols);
            } else {
                conv_im2col(p, cg, xg, 0, p->out_h, col + i * spatial, cols);
            }
        }
        blas_sgemm(false, false, ocg, (int)cols, k, 1.0f, w + (size_t)g * ocg * k, k, col,
                   (int)cols, 0.0f, out, (int)cols);
        for (int i = 0; i < nb; i++)
            for (int oc = 0; oc < ocg; oc++) {
                const int c = g * ocg + oc;
                conv_store_plane(out + (size_t)oc * cols + i * spatial,
                                 y + ((size_t)i * p->out_c + c) * spatial, spatial,
                                 bias ? bias[c] : 0.0f, act, act_alpha);
            }
    }
}

/* One tile of the direct path: CONV_DIRECT_OC output channels by eight adjacent
 * outputs of one row.  xr is the padded input at this row's first tap for the
 * tile's first output; tap[t] the offset of tap t = (c, ky, kx); wt the tile's
 * packed weights (K, 8).  Eight accumulators in registers, each input vector loaded
 * once for all eight channels; unrolled by hand (-O2 unrolls no loop).  Stores
 * `lanes` outputs (8, or the row's width when it is narrower) of the first `valid`
 * channels, planes `plane` apart; ReLU is applied in registers. */
static inline __attribute__((always_inline)) void
conv_direct_tile(const float *xr, const int *tap, int k, const float *wt, const float *b8,
                 int stride, int valid, int lanes, bool relu, float *yo, size_t plane)
{
    v8f a[CONV_DIRECT_OC];
    v8f a0 = {b8[0], b8[0], b8[0], b8[0], b8[0], b8[0], b8[0], b8[0]};
    v8f a1 = {b8[1], b8[1], b8[1], b8[1], b8[1], b8[1], b8[1], b8[1]};
    v8f a2 = {b8[2], b8[2], b8[2], b8[2], b8[2], b8[2], b8[2], b8[2]};
    v8f a3 = {b8[3], b8[3], b8[3], b8[3], b8[3], b8[3], b8[3], b8[3]};
    v8f a4 = {b8[4], b8[4], b8[4], b8[4], b8[4], b8[4], b8[4], b8[4]};
    v8f a5 = {b8[5], b8[5], b8[5], b8[5], b8[5], b8[5], b8[5], b8[5]};
    v8f a6 = {b8[6], b8[6], b8[6], b8[6], b8[6], b8[6], b8[6], b8[6]};
    v8f a7 = {b8[7], b8[7], b8[7], b8[7], b8[7], b8[7], b8[7], b8[7]};
    for (int t = 0; t < k; t++) {
        v8f v;
        v8f_load_strided(&v, xr + tap[t], stride);
        const float *wk = wt + (size_t)t * CONV_DIRECT_OC;
        a0 += wk[0] * v;
        a1 += wk[1] * v;
        a2 += wk[2] * v;
        a3 += wk[3] * v;
        a4 += wk[4] * v;
        a5 += wk[5] * v;
        a6 += wk[6] * v;
        a7 += wk[7] * v;
    }
    const v8f zero = {0};
    if (relu) {
        a0 = (v8f)((v8i)a0 & ~(a0 < zero));
        a1 = (v8f)((v8i)a1 & ~(a1 < zero));
        a2 = (v8f)((v8i)a2 & ~(a2 < zero));
        a3 = (v8f)((v8i)a3 & ~(a3 < zero));
        a4 = (v8f)((v8i)a4 & ~(a4 < zero));
        a5 = (v8f)((v8i)a5 & ~(a5 < zero));
        a6 = (v8f)((v8i)a6 & ~(a6 < zero));
        a7 = (v8f)((v8i)a7 & ~(a7 < zero));
    }
    if (valid == CONV_DIRECT_OC && lanes == 8) { /* the common case: eight full rows */
        memcpy(yo, &a0, sizeof a0);
        memcpy(yo + plane, &a1, sizeof a1);
        memcpy(yo + 2 * plane, &a2, sizeof a2);
        memcpy(yo + 3 * plane, &a3, sizeof a3);
        memcpy(yo + 4 * plane, &a4, sizeof a4);
        memcpy(yo + 5 * plane, &a5, sizeof a5);
        memcpy(yo + 6 * plane, &a6, sizeof a6);
        memcpy(yo + 7 * plane, &a7, sizeof a7);
        return;
    }
    a[0] = a0, a[1] = a1, a[2] = a2, a[3] = a3, a[4] = a4, a[5] = a5, a[6] = a6, a[7] = a7;
    for (int j = 0; j < valid; j++) {
        v8f v = a[j];
        if (lanes == 8) {
            memcpy(yo + j * plane, &v, sizeof v);
        } else {
            float t[8];
            memcpy(t, &v, sizeof v);
            for (int i = 0; i < lanes; i++)
                yo[j * plane + i] = t[i];
        }
    }
}

/* One output row of one tile for every group of eight outputs; the last group is
 * shifted left to end at out_w (or, on a row narrower than eight, cut).  Inlined
 * with a constant stride so v8f_load_strided's branch folds away. */
static inline __attribute__((always_inline)) void
conv_direct_row(const conv2d_params *p, const float *xrow, const int *tap, int k,
                const float *wt, const float *b8, int stride, int valid, bool relu, float *yo,
                size_t plane)
{
    const int ow = p->out_w;
    for (int ox = 0; ox < ow; ox += 8) {
        if (ox + 8 > ow && ow >= 8)
            ox = ow - 8;
        conv_direct_tile(xrow + (size_t)ox * stride, tap, k, wt, b8, stride, valid,
                         ow < 8 ? ow : 8, relu, yo + ox, plane);
    }
}

/* The build is ISO C (-std=c11), which turns floating-point contraction off; the
 * direct loop is nothing but multiply-adds, so it asks GCC for FMA itself (about
 * 1.6x on Zen 4).  Clang has no per-function switch and keeps mul + add. */
#if defined(__GNUC__) && !defined(__clang__)
#define CONV_FMA __attribute__((optimize("fp-contract=fast")))
#else
#define CONV_FMA
#endif

/* Every output channel of one image-group from its padded copy xpad. */
OPS_SIMD_CLONES CONV_FMA
static void conv_direct_image(const conv2d_params *p, int ocg, const float *xpad, int pitch,
                              const int *tap, int k, const float *wpk, const float *bias_g,
                              bool relu, float *yg)
{
    const size_t plane = (size_t)p->out_h * p->out_w;
    for (int oc0 = 0; oc0 < ocg; oc0 += CONV_DIRECT_OC) {
        const int valid = ocg - oc0 < CONV_DIRECT_OC ? ocg - oc0 : CONV_DIRECT_OC;
        float b8[CONV_DIRECT_OC] = {0};
        for (int j = 0; j < valid; j++)
            b8[j] = bias_g ? bias_g[oc0 + j] : 0.0f;
        const float *wt = wpk + (size_t)(oc0 / CONV_DIRECT_OC) * k * CONV_DIRECT_OC;
        for (int oy = 0; oy < p->out_h; oy++) {
            const float *xrow = xpad + (size_t)oy * p->stride_h * pitch;
            float *yo = yg + (size_t)oc0 * plane + (size_t)oy * p->out_w;
            if (p->stride_w == 1)
                conv_direct_row(p, xrow, tap, k, wt, b8, 1, valid, relu, yo, plane);
            else
                conv_direct_row(p, xrow, tap, k, wt, b8, 2, valid, relu, yo, plane);
        }
    }
}

/* Direct path: per image and group, copy the input into a zero-padded buffer (so
 * no tap needs a bounds check), then run the tiles. */
static void conv_direct(const conv2d_params *p, int n, const float *x, const float *w,
                        const float *bias, act_kind act, float act_alpha, float *y,
                        float *scratch)
{
    const int cg = p->in_c / p->groups, ocg = p->out_c / p->groups;
    const int k = cg * p->k_h * p->k_w;
    const int tiles = (ocg + CONV_DIRECT_OC - 1) / CONV_DIRECT_OC;
    const size_t spatial = (size_t)p->out_h * p->out_w;
    const size_t in_plane = (size_t)p->in_h * p->in_w;
    int rows, pitch;
    conv_pad_dims(p, &rows, &pitch);
    const size_t pad_plane = (size_t)rows * pitch;

    /* Weights packed per tile as (K, 8), so a tap's eight weights are adjacent. */
    float *wpk = scratch, *xpad = scratch + conv_direct_wfloats(p);
    for (int g = 0; g < p->groups; g++)
        for (int t = 0; t < tiles; t++)
            for (int tp = 0; tp < k; tp++)
                for (int j = 0; j < CONV_DIRECT_OC; j++) {
                    const int oc = t * CONV_DIRECT_OC + j;
                    wpk[(((size_t)g * tiles + t) * k + tp) * CONV_DIRECT_OC + j] =
                        oc < ocg ? w[((size_t)g * ocg + oc) * k + tp] : 0.0f;
                }
    int tap[CONV_DIRECT_MAX_K];
    for (int c = 0, t = 0; c < cg; c++)
        for (int ky = 0; ky < p->k_h; ky++)
            for (int kx = 0; kx < p->k_w; kx++)
                tap[t++] = (int)(c * pad_plane + (size_t)ky * p->dil_h * pitch + kx * p->dil_w);

    const bool relu = act == ACT_RELU, fused = act == ACT_RELU || act == ACT_NONE;
    memset(xpad, 0, sizeof(float) * (size_t)cg * pad_plane);
    for (int img = 0; img < n; img++)
        for (int g = 0; g < p->groups; g++) {
            const float *xg = x + ((size_t)img * p->in_c + (size_t)g * cg) * in_plane;
            for (int c = 0; c < cg; c++)
                for (int iy = 0; iy < p->in_h; iy++)
                    memcpy(xpad + c * pad_plane + (size_t)(iy + p->pad_h) * pitch + p->pad_w,
                           xg + c * in_plane + (size_t)iy * p->in_w, sizeof(float) * p->in_w);
            float *yg = y + ((size_t)img * p->out_c + (size_t)g * ocg) * spatial;
            conv_direct_image(p, ocg, xpad, pitch, tap, k,
                              wpk + (size_t)g * tiles * k * CONV_DIRECT_OC,
                              bias ? bias + (size_t)g * ocg : NULL, relu, yg);
            if (!fused)
                act_apply(act, act_alpha, yg, (size_t)ocg * spatial);
        }
}

void conv2d_forward(const conv2d_params *p, int n, const float *x, const float *w,
                    const float *bias, act_kind act, float act_alpha, float *y,
                    float *scratch)
{
    if (conv_is_depthwise(p)) {
        conv_depthwise(p, n, x, w, bias, act, act_alpha, y);
        return;
    }
    if (conv_is_direct(p)) {
        conv_direct(p, n, x, w, bias, act, act_alpha, y, scratch);
        return;
    }
    const int g_count = p->groups;
    const int cg = p->in_c / g_count, ocg = p->out_c / g_count;
    const int k = cg * p->k_h * p->k_w;
    const int spatial = p->out_h * p->out_w;
    const size_t in_plane = (size_t)p->in_h * p->in_w;
    const bool pointwise = conv_is_pointwise(p);

    int img = 0;
    /* images per GEMM: no more than n, so the scratch of conv2d_scratch_floats_batch
     * for any max_batch >= n holds the block */
    const int per_gemm = conv_batch_images(p) < n ? conv_batch_images(p) : n;
    bool pad_zeroed = false;
    if (per_gemm > 1)
        for (; img < n; img += per_gemm) {
            const int nb = n - img < per_gemm ? n - img : per_gemm;
            conv_batched(p, nb, per_gemm, x + (size_t)img * p->in_c * in_plane, w, bias, act,
                         act_alpha, y + (size_t)img * p->out_c * spatial, scratch, &pad_zeroed);
        }

    /* Per image.  A padded plane small enough for one im2col block is made from a
     * padded copy (conv_im2col_padded, as the batched path does); the others in
     * blocks of rows straight from the input. */
    const int rows = conv_block_rows(p);
    const bool whole = rows == p->out_h && conv_pad_floats(p) > 0;
    int pad_rows = 0, pitch = 0;
    float *xpad = scratch + (size_t)k * spatial;
    if (whole && img < n) {
        conv_pad_dims(p, &pad_rows, &pitch);
        memset(xpad, 0, sizeof(float) * conv_pad_floats(p));
    }
    for (; img < n; img++) {
        for (int g = 0; g < g_count; g++) {
            const float *xg = x + ((size_t)img * p->in_c + (size_t)g * cg) * in_plane;
            const float *wg = w + (size_t)g * ocg * k;
            float *yg = y + ((size_t)img * p->out_c + (size_t)g * ocg) * spatial;
            if (pointwise) {
                blas_sgemm(false, false, ocg, spatial, k, 1.0f, wg, k, xg, spatial, 0.0f, yg,
                           spatial);
            } else if (whole) {
                conv_pad_copy(p, cg, xg, pitch, pad_rows, xpad);
                conv_im2col_padded(p, cg, xpad, pitch, pad_rows, scratch, (size_t)spatial);
                blas_sgemm(false, false, ocg, spatial, k, 1.0f, wg, k, scratch, spatial, 0.0f,
                           yg, spatial);
            } else {
                for (int oy0 = 0; oy0 < p->out_h; oy0 += rows) {
                    const int r = p->out_h - oy0 < rows ? p->out_h - oy0 : rows;
                    conv_im2col(p, cg, xg, oy0, r, scratch, (size_t)r * p->out_w);
                    blas_sgemm(false, false, ocg, r * p->out_w, k, 1.0f, wg, k, scratch,
                               r * p->out_w, 0.0f, yg + (size_t)oy0 * p->out_w, spatial);
                }
            }
            for (int oc = 0; oc < ocg; oc++)
                act_apply_bias(act, act_alpha, bias ? bias[g * ocg + oc] : 0.0f,
                               yg + (size_t)oc * spatial, (size_t)spatial);
        }
    }
}
