/* deconv.c — 2-D transposed convolution (PyTorch's ConvTranspose2d), NCHW: stride,
 * padding, output_padding, dilation, groups, bias.
 *
 * A transposed convolution is the adjoint of a convolution: each input pixel adds
 * its channel vector, times the weights, into a kh x kw patch of the output.  Per
 * group that is one GEMM and a col2im:
 *   cols (R, pixels) = W_g^T x X_g,   R = out_c/g * kh * kw,  W_g (in_c/g, R) as stored,
 * then row (oc, ky, kx) of cols is added into output plane oc, shifted by
 * (ky*dil - pad, kx*dil - pad), input pixels `stride` outputs apart.  The output
 * starts as zeros; bias and activation are applied in one pass (act_apply_bias) once
 * every contribution is in.  output_padding only lengthens the output (out_h/out_w):
 * the extra rows and columns get what reaches them, often just the bias.
 *
 * GEMM shape.  A generator's planes are smallest where its channels are most: DCGAN
 * starts from a 1x1 plane (R = 512*16) and goes on at 4x4 (R = 256*16).  Per image the
 * GEMM would have 1 or 16 pixel columns, where OpenBLAS crawls (and on 2 threads is
 * slower than on one).  So
 *   - images are batched: a block of images' pixels side by side, one GEMM per block
 *     and group.  A 1x1 plane reads the input rows (N, in_c) as they lie; larger
 *     planes are gathered into (in_c/g, imgs*HW) first (the copy is 1/R of the GEMM's
 *     work);
 *   - the GEMM is oriented so that its long side is N where it is short: cols^T
 *     (pixels, R) = X^T W_g when a block has few pixels and R is longer (small planes,
 *     many channels), cols (R, pixels) = W_g^T X otherwise (the last layers: R = 3*16
 *     against thousands of pixels);
 *   - a plane too large for one block is cut into blocks of input rows, so cols stays
 *     within DECONV_BLOCK_FLOATS whatever the image size.
 * The col2im reads cols once, in its contiguous direction, and adds into the output
 * planes: cols rows go eight at a time (stride 1 and 2), a cols^T row's taps four at a
 * time.  On DCGAN at batch 64 it is ~13% of the time, the GEMMs ~70%.
 *
 * Pure: no allocation, no state; scratch is the caller's
 * (conv_transpose2d_scratch_floats).
 */
#include "engine/blas.h"
#include "engine/ops/ops.h"

#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include "engine/ops/simd.h"

/* cols (and the gathered input) of one block at most: 4 MiB, as conv's batched
 * blocks; enough columns for OpenBLAS to run near its best on every DCGAN layer at
 * batch 64 (240 to 9216 pixels per GEMM). */
enum { DECONV_BLOCK_FLOATS = (4 << 20) / sizeof(float) };

/* Blocks of fewer pixels than this take the GEMM as cols^T (pixels, R), when R is
 * the longer side.  Below it OpenBLAS needs the long side as N; above it either
 * orientation runs about as fast, and cols (R, pixels) is cheaper to scatter (whole
 * rows eight at a time rather than a pixel's kh x kw patch).  Measured on DCGAN,
 * 1 thread: scatter 13% of the time with this rule at batch 64, 15% with cols^T
 * whenever R is longer, 21% never (its 4x4 planes make rows of 4). */
enum { DECONV_SHORT_PIXELS = 256 };

int conv_transpose2d_out_size(int in, int k, int stride, int pad, int dil, int out_pad)
{
    if (in <= 0 || k <= 0 || stride <= 0 || dil <= 0 || pad < 0 || out_pad < 0)
        return 0;
    const long long n = (long long)(in - 1) * stride - 2LL * pad + (long long)dil * (k - 1) +
                        out_pad + 1;
    return n > INT_MAX ? INT_MAX : n < 0 ? 0 : (int)n;
}

/* How the images are cut into GEMM blocks.  Depends on the shape and n only, and
 * grows with n, so the scratch sized for max_batch holds the block of any n below. */
typedef struct deconv_plan {
    int imgs;    /* images per block; > 1 only when whole images fit */
    int rows;    /* input rows per block: in_h unless one image does not fit */
    bool gather; /* blocks of several images copy the input into (in_c/g, pixels) */
} deconv_plan;

static size_t deconv_r(const conv_transpose2d_params *p)
{
    return (size_t)(p->out_c / p->groups) * p->k_h * p->k_w;
}

static deconv_plan deconv_plan_for(const conv_transpose2d_params *p, int n)
{
    const size_t r = deconv_r(p), hw = (size_t)p->in_h * p->in_w;
    const size_t cg = (size_t)(p->in_c / p->groups);
    deconv_plan pl = { 1, p->in_h, false };
    if (r * hw > DECONV_BLOCK_FLOATS) {
        const size_t rows = DECONV_BLOCK_FLOATS / (r * (size_t)p->in_w);
        pl.rows = rows < 1 ? 1 : (int)rows;
        return pl;
    }
    /* a 1x1 plane is read in place (rows of (N, in_c)); others need the copy */
    const size_t per_img = hw * (r + (hw > 1 ? cg : 0));
    size_t imgs = DECONV_BLOCK_FLOATS / per_img;
    if (imgs > (size_t)n)
        imgs = (size_t)n;
    pl.imgs = imgs > 1 ? (int)imgs : 1;
    pl.gather = pl.imgs > 1 && hw > 1;
    return pl;
}

size_t conv_transpose2d_scratch_floats(const conv_transpose2d_params *p, int max_batch)
{
    const deconv_plan pl = deconv_plan_for(p, max_batch < 1 ? 1 : max_batch);
    const size_t pixels = (size_t)pl.imgs * pl.rows * p->in_w;
    return pixels * (deconv_r(p) + (pl.gather ? (size_t)(p->in_c / p->groups) : 0));
}

/* Indices t in [0, limit) with base + t*step inside [0, out): [*lo, *hi).  Input
 * pixels that a tap carries into the output (base = tap offset, step = stride), or
 * the taps of one input pixel that land in it (base = its first output, step = dil). */
static void span_inside(long base, int step, int out, int limit, int *lo, int *hi)
{
    long l = base >= 0 ? 0 : (-base + step - 1) / step;
    long h = out - 1 - base < 0 ? 0 : (out - 1 - base) / step + 1;
    if (h > limit)
        h = limit;
    if (l > h)
        l = h;
    *lo = (int)l;
    *hi = (int)h;
}

/* Lanes 0-3 (lo) or 4-7 of v interleaved with zeros: (v0, 0, v1, 0, ...). */
OPS_VINLINE v8f v8f_spread(v8f v, bool lo)
{
    const v8f zero = {0};
#ifdef __clang__
    return lo ? __builtin_shufflevector(v, zero, 0, 8, 1, 9, 2, 10, 3, 11)
              : __builtin_shufflevector(v, zero, 4, 12, 5, 13, 6, 14, 7, 15);
#else
    return lo ? __builtin_shuffle(v, zero, (v8i){0, 8, 1, 9, 2, 10, 3, 11})
              : __builtin_shuffle(v, zero, (v8i){4, 12, 5, 13, 6, 14, 7, 15});
#endif
}

/* d[i*stride] += s[i] for i < n: one cols row into one output row.  Stride 1 adds
 * eight at a time; stride 2 too, adding s spread with zeros over 16 outputs (the odd
 * ones, other taps' places, get + 0), as long as those 16 floats lie within the
 * `room` floats from d to the end of its output plane. */
OPS_VINLINE void add_row(float *d, int stride, const float *s, int n, size_t room)
{
    int i = 0;
    if (stride == 1)
        for (; i + 8 <= n; i += 8) {
            v8f a, b;
            memcpy(&a, d + i, sizeof a);
            memcpy(&b, s + i, sizeof b);
            a += b;
            memcpy(d + i, &a, sizeof a);
        }
    else if (stride == 2)
        for (; i + 8 <= n && 2 * (size_t)i + 16 <= room; i += 8) {
            v8f v, a, b;
            memcpy(&v, s + i, sizeof v);
            memcpy(&a, d + 2 * i, sizeof a);
            memcpy(&b, d + 2 * i + 8, sizeof b);
            a += v8f_spread(v, true);
            b += v8f_spread(v, false);
            memcpy(d + 2 * i, &a, sizeof a);
            memcpy(d + 2 * i + 8, &b, sizeof b);
        }
    for (; i < n; i++)
        d[(size_t)i * stride] += s[i];
}

/* Geometry of one GEMM block: images [img0, img0 + nb), input rows [iy0, iy0 + rows)
 * of each, group g; pixel j = (i*rows + iy - iy0)*in_w + ix is column (or row) j of
 * cols.  y points at image img0's group g planes. */
typedef struct deconv_block {
    int nb, iy0, rows;
    size_t pixels;   /* nb * rows * in_w */
    float *y;
} deconv_block;

/* cols (R, pixels): each row is one tap of one output channel over the block's
 * pixels, added along output rows (contiguous reads). */
OPS_SIMD_CLONES
static void scatter_rows(const conv_transpose2d_params *p, const deconv_block *b,
                         const float *cols)
{
    const int ocg = p->out_c / p->groups, in_w = p->in_w;
    const size_t plane = (size_t)p->out_h * p->out_w;
    for (int i = 0; i < b->nb; i++) {
        float *yi = b->y + (size_t)i * p->out_c * plane;
        const float *ci = cols + (size_t)i * b->rows * in_w;
        for (int oc = 0; oc < ocg; oc++)
            for (int ky = 0; ky < p->k_h; ky++) {
                const int off_y = ky * p->dil_h - p->pad_h;
                int iy_lo, iy_hi;
                span_inside((long)b->iy0 * p->stride_h + off_y, p->stride_h, p->out_h, b->rows,
                            &iy_lo, &iy_hi);
                for (int kx = 0; kx < p->k_w; kx++) {
                    const int off_x = kx * p->dil_w - p->pad_w;
                    int ix_lo, ix_hi;
                    span_inside(off_x, p->stride_w, p->out_w, in_w, &ix_lo, &ix_hi);
                    if (ix_lo >= ix_hi)
                        continue;
                    const size_t r = ((size_t)oc * p->k_h + ky) * p->k_w + kx;
                    for (int t = iy_lo; t < iy_hi; t++) {
                        const int oy = (b->iy0 + t) * p->stride_h + off_y;
                        const size_t at = (size_t)oy * p->out_w + (ix_lo * p->stride_w + off_x);
                        add_row(yi + oc * plane + at, p->stride_w,
                                ci + r * b->pixels + (size_t)t * in_w + ix_lo, ix_hi - ix_lo,
                                plane - at);
                    }
                }
            }
    }
}

typedef float v4f __attribute__((vector_size(16)));

/* cols^T (pixels, R): each row is one input pixel's whole patch, all output channels,
 * added tap by tap (contiguous reads). */
OPS_SIMD_CLONES
static void scatter_pixels(const conv_transpose2d_params *p, const deconv_block *b,
                           const float *cols)
{
    const int ocg = p->out_c / p->groups, kh = p->k_h, kw = p->k_w;
    const size_t plane = (size_t)p->out_h * p->out_w, r = deconv_r(p);
    const float *s = cols;
    for (int i = 0; i < b->nb; i++) {
        float *yi = b->y + (size_t)i * p->out_c * plane;
        for (int iy = b->iy0; iy < b->iy0 + b->rows; iy++) {
            const int oy0 = iy * p->stride_h - p->pad_h;
            int ky_lo, ky_hi;
            span_inside(oy0, p->dil_h, p->out_h, kh, &ky_lo, &ky_hi);
            for (int ix = 0; ix < p->in_w; ix++, s += r) {
                const int ox0 = ix * p->stride_w - p->pad_w;
                int kx_lo, kx_hi;
                span_inside(ox0, p->dil_w, p->out_w, kw, &kx_lo, &kx_hi);
                for (int oc = 0; oc < ocg; oc++)
                    for (int ky = ky_lo; ky < ky_hi; ky++) {
                        float *d = yi + oc * plane +
                                   (size_t)(oy0 + ky * p->dil_h) * p->out_w;
                        const float *sk = s + ((size_t)oc * kh + ky) * kw;
                        int kx = kx_lo;
                        if (p->dil_w == 1) /* a run of taps: four at a time */
                            for (; kx + 4 <= kx_hi; kx += 4) {
                                v4f acc, add;
                                memcpy(&acc, d + ox0 + kx, sizeof acc);
                                memcpy(&add, sk + kx, sizeof add);
                                acc += add;
                                memcpy(d + ox0 + kx, &acc, sizeof acc);
                            }
                        for (; kx < kx_hi; kx++)
                            d[ox0 + kx * p->dil_w] += sk[kx];
                    }
            }
        }
    }
}

/* One block of one group: the input as a GEMM operand (in place or gathered), the
 * GEMM in the orientation DECONV_SHORT_PIXELS picks, then the col2im. */
static void deconv_run_block(const conv_transpose2d_params *p, const deconv_block *b, int img0,
                             int g, const float *x, const float *w, float *scratch)
{
    const int cg = p->in_c / p->groups;
    const size_t hw = (size_t)p->in_h * p->in_w, r = deconv_r(p);
    const int m = (int)r, pixels = (int)b->pixels;
    float *cols = scratch;
    const float *wg = w + (size_t)g * cg * r;

    /* X_g as (cg, pixels) with row stride ld, or, for a 1x1 plane, X_g^T (pixels, cg):
     * image rows of (N, in_c) read in place */
    const float *xm;
    int ld;
    const bool pixel_rows = hw == 1;
    if (pixel_rows) {
        xm = x + (size_t)img0 * p->in_c + (size_t)g * cg;
        ld = p->in_c;
    } else if (b->nb > 1) {
        float *xbuf = scratch + r * b->pixels;
        for (int c = 0; c < cg; c++)
            for (int i = 0; i < b->nb; i++)
                memcpy(xbuf + (size_t)c * b->pixels + (size_t)i * hw,
                       x + ((size_t)(img0 + i) * p->in_c + (size_t)g * cg + c) * hw,
                       sizeof(float) * hw);
        xm = xbuf;
        ld = pixels;
    } else {
        xm = x + ((size_t)img0 * p->in_c + (size_t)g * cg) * hw + (size_t)b->iy0 * p->in_w;
        ld = (int)hw;
    }

    if (r > b->pixels && b->pixels < DECONV_SHORT_PIXELS) {
        /* cols^T (pixels, R) = X_g^T (pixels, cg) x W_g (cg, R) */
        blas_sgemm(!pixel_rows, false, pixels, m, cg, 1.0f, xm, ld, wg, m, 0.0f, cols, m);
        scatter_pixels(p, b, cols);
    } else {
        /* cols (R, pixels) = W_g^T (R, cg) x X_g (cg, pixels) */
        blas_sgemm(true, pixel_rows, m, pixels, cg, 1.0f, wg, m, xm, ld, 0.0f, cols, pixels);
        scatter_rows(p, b, cols);
    }
}

void conv_transpose2d_forward(const conv_transpose2d_params *p, int n, const float *x,
                              const float *w, const float *bias, act_kind act, float act_alpha,
                              float *y, float *scratch)
{
    const size_t plane = (size_t)p->out_h * p->out_w;
    const int ocg = p->out_c / p->groups;
    const deconv_plan pl = deconv_plan_for(p, n);
    memset(y, 0, sizeof(float) * (size_t)n * p->out_c * plane);
    for (int img0 = 0; img0 < n; img0 += pl.imgs) {
        const int nb = n - img0 < pl.imgs ? n - img0 : pl.imgs;
        for (int g = 0; g < p->groups; g++)
            for (int iy0 = 0; iy0 < p->in_h; iy0 += pl.rows) {
                deconv_block b = {
                    .nb = nb, .iy0 = iy0,
                    .rows = p->in_h - iy0 < pl.rows ? p->in_h - iy0 : pl.rows,
                    .y = y + ((size_t)img0 * p->out_c + (size_t)g * ocg) * plane,
                };
                b.pixels = (size_t)nb * b.rows * p->in_w;
                deconv_run_block(p, &b, img0, g, x, w, scratch);
            }
    }
    for (size_t c = 0; c < (size_t)n * p->out_c; c++)
        act_apply_bias(act, act_alpha, bias ? bias[c % p->out_c] : 0.0f, y + c * plane, plane);
}
