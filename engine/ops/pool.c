/* pool.c — max, average and adaptive-average pooling, NCHW, PyTorch's semantics.
 *
 * Each output's window is clipped to the input once, so the inner loops carry no
 * bounds checks; padding is never materialised.  Max pooling treats padding as -inf
 * and propagates NaN as PyTorch does.  Average pooling divides, with
 * count_include_pad, by the window clipped to the *padded* input (PyTorch's
 * pool_size), without it by the real pixels only.
 *
 * Max pooling sits after the first convolutions of most CNNs, on their largest
 * planes (ResNet's 64x112x112, the Fashion CNN's 32x28x28 x batch), so it is
 * vectorised: the interior columns of a row, where the whole window is in bounds,
 * run eight outputs at a time (stride 1 and 2; 2x2/2 folds rows before pairs); the
 * border columns and other strides run a branch-free scalar loop.  Rows narrower
 * than eight (7x7 outputs from 14x14) still take one vector group, reading past the
 * row into the next one and keeping only the valid lanes.  A branchy scalar max
 * over random data mispredicts every other compare: the loop this replaced ran
 * ~4 ns per input (7.3 ms for ResNet's stem pool, now ~0.4 ms).  The average pools
 * run once per network on small planes and stay scalar.
 * Pure: no allocation, no state, any thread.
 */
#include "engine/ops/ops.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "engine/ops/simd.h"

static long floor_div(long a, long b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

int pool2d_out_size(int in, int k, int stride, int pad, int ceil_mode)
{
    if (stride <= 0 || k <= 0)
        return 0;
    long out = floor_div((long)in + 2L * pad - k + (ceil_mode ? stride - 1 : 0), stride) + 1;
    /* ceil_mode may add a window; PyTorch drops it when it would start in the
     * right padding, since it would see no input at all. */
    if (ceil_mode && (out - 1) * stride >= (long)in + pad)
        out--;
    return (int)out;
}

static int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* PyTorch's max step: take v when it is larger or NaN, so a NaN sticks.  Selects,
 * not branches.  (Vectors go by pointer: by value they change the baseline ABI.) */
static inline __attribute__((always_inline)) void vmax_nan(v8f *m, const v8f *v)
{
    v8i take = (*v > *m) | (*v != *v);
    *m = (v8f)(((v8i)*v & take) | ((v8i)*m & ~take));
}

/* Output positions [*lo, *hi) along one axis whose window [o*stride - pad,
 * o*stride - pad + span) lies inside [0, in). */
static void pool_interior(int out, int in, int stride, int pad, int span, int *lo, int *hi)
{
    long l = pad <= 0 ? 0 : ((long)pad + stride - 1) / stride;
    long h = (long)in - span + pad < 0 ? 0 : ((long)in - span + pad) / stride + 1;
    if (l > out)
        l = out;
    if (h > out)
        h = out;
    if (h < l)
        h = l;
    *lo = (int)l;
    *hi = (int)h;
}

/* Eight outputs from ox of one row: the max over input rows [hs, he) and taps
 * kx < kw of x[iy][ox*stride - pad_w + kx ...].  Inlined with a constant stride. */
static inline __attribute__((always_inline)) void
maxpool_vec8(v8f *m, const float *xp, int in_w, int hs, int he, int kw, int stride, int pad_w,
             int ox)
{
    *m = (v8f){-INFINITY, -INFINITY, -INFINITY, -INFINITY,
               -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    if (stride == 2 && kw == 2) {
        /* the common 2x2/2: fold the rows over 16 contiguous floats first, then
         * take the max of each even/odd pair (half the shuffles and compares) */
        v8f lo = *m, hi = *m, v;
        for (int iy = hs; iy < he; iy++) {
            const float *xr = xp + (size_t)iy * in_w + (ox * 2 - pad_w);
            memcpy(&v, xr, sizeof v);
            vmax_nan(&lo, &v);
            memcpy(&v, xr + 8, sizeof v);
            vmax_nan(&hi, &v);
        }
#ifdef __clang__
        *m = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14);
        v = __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15);
#else
        *m = __builtin_shuffle(lo, hi, (v8i){0, 2, 4, 6, 8, 10, 12, 14});
        v = __builtin_shuffle(lo, hi, (v8i){1, 3, 5, 7, 9, 11, 13, 15});
#endif
        vmax_nan(m, &v);
        return;
    }
    for (int iy = hs; iy < he; iy++) {
        const float *xr = xp + (size_t)iy * in_w + (ox * stride - pad_w);
        for (int kx = 0; kx < kw; kx++) {
            v8f v;
            v8f_load_strided(&v, xr + kx, stride);
            vmax_nan(m, &v);
        }
    }
}

/* The interior outputs [ox_lo, ox_hi) of one row, where every tap is in bounds.
 * Eight at a time, the last group shifted left to end at ox_hi.  A row with fewer
 * than eight still takes one group: its extra lanes read on into the next row and
 * are garbage.  They are stored all the same when y has room (y_end): every lane
 * past ox_hi belongs to this row's right border or to a later row, which are
 * written after this one and overwrite it; only at the end of y are the valid
 * lanes copied out one by one. */
static inline __attribute__((always_inline)) void
maxpool_row_vec(const float *xp, int in_w, int hs, int he, int kw, int stride, int pad_w,
                int ox_lo, int ox_hi, float *yr, const float *y_end)
{
    v8f m;
    if (ox_hi - ox_lo >= 8) {
        for (int ox = ox_lo; ox < ox_hi; ox += 8) {
            if (ox + 8 > ox_hi)
                ox = ox_hi - 8;
            maxpool_vec8(&m, xp, in_w, hs, he, kw, stride, pad_w, ox);
            memcpy(yr + ox, &m, sizeof m);
        }
        return;
    }
    maxpool_vec8(&m, xp, in_w, hs, he, kw, stride, pad_w, ox_lo);
    if (yr + ox_lo + 8 <= y_end) {
        memcpy(yr + ox_lo, &m, sizeof m);
        return;
    }
    float t[8];
    memcpy(t, &m, sizeof m);
    for (int i = 0; i < ox_hi - ox_lo; i++)
        yr[ox_lo + i] = t[i];
}

/* One plane, one output row at a time: the interior columns (the whole window in
 * bounds) through the vector loop, then the border columns through a branch-free
 * scalar loop that clips each window.  The vector loop's reads run past its last
 * tap (stride 2's odd float, a narrow row's spare lanes): a row whose reads would
 * leave the input buffer (x_end), the very last rows only, goes scalar whole. */
OPS_SIMD_CLONES
static void maxpool_plane(const pool2d_params *p, const float *xp, const float *x_end, float *yp,
                          const float *y_end)
{
    const int in_w = p->in_w, pw = p->pad_w, sw = p->stride_w, kw = p->k_w;
    int ox_lo, ox_hi;
    pool_interior(p->out_w, in_w, sw, pw, kw, &ox_lo, &ox_hi);
    const int group_end = ox_hi - ox_lo >= 8 ? ox_hi : ox_lo + 8; /* one past the last lane */
    const bool vec = sw <= 2 && ox_hi > ox_lo;
    for (int oy = 0; oy < p->out_h; oy++) {
        const int y0 = oy * p->stride_h - p->pad_h;
        const int hs = clamp_int(y0, 0, p->in_h), he = clamp_int(y0 + p->k_h, 0, p->in_h);
        float *yr = yp + (size_t)oy * p->out_w;
        int skip_lo = 0, skip_hi = 0; /* columns the vector loop wrote */
        if (vec && he > hs &&
            xp + (size_t)(he - 1) * in_w + ((long)(group_end - 1) * sw - pw + kw - 1 + (sw == 2)) <
                x_end) {
            if (sw == 1)
                maxpool_row_vec(xp, in_w, hs, he, kw, 1, pw, ox_lo, ox_hi, yr, y_end);
            else
                maxpool_row_vec(xp, in_w, hs, he, kw, 2, pw, ox_lo, ox_hi, yr, y_end);
            skip_lo = ox_lo, skip_hi = ox_hi;
        }
        for (int ox = 0; ox < p->out_w; ox++) {
            if (ox == skip_lo && skip_hi > skip_lo)
                ox = skip_hi;
            if (ox >= p->out_w)
                break;
            const int x0 = ox * sw - pw;
            const int ws = clamp_int(x0, 0, in_w), we = clamp_int(x0 + kw, 0, in_w);
            float m = -INFINITY;
            bool nan = false;
            for (int iy = hs; iy < he; iy++)
                for (int ix = ws; ix < we; ix++) {
                    const float v = xp[(size_t)iy * in_w + ix];
                    nan |= v != v;
                    m = v > m ? v : m; /* maxss: no branch */
                }
            yr[ox] = nan ? NAN : m;
        }
    }
}

void maxpool2d_forward(const pool2d_params *p, int n, const float *x, float *y)
{
    const size_t planes = (size_t)n * p->c;
    const size_t in_plane = (size_t)p->in_h * p->in_w, out_plane = (size_t)p->out_h * p->out_w;
    /* planes in order: maxpool_row_vec's spare lanes rely on later rows being
     * written later */
    const float *x_end = x + planes * in_plane, *y_end = y + planes * out_plane;
    for (size_t pl = 0; pl < planes; pl++)
        maxpool_plane(p, x + pl * in_plane, x_end, y + pl * out_plane, y_end);
}

void avgpool2d_forward(const pool2d_params *p, int n, const float *x, float *y)
{
    const size_t planes = (size_t)n * p->c;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * p->in_h * p->in_w;
        float *yp = y + pl * p->out_h * p->out_w;
        for (int oy = 0; oy < p->out_h; oy++) {
            const int y0 = oy * p->stride_h - p->pad_h;
            /* The padded input spans [-pad, in + pad). */
            const int ye = y0 + p->k_h < p->in_h + p->pad_h ? y0 + p->k_h : p->in_h + p->pad_h;
            const int hs = clamp_int(y0, 0, p->in_h), he = clamp_int(ye, 0, p->in_h);
            for (int ox = 0; ox < p->out_w; ox++) {
                const int x0 = ox * p->stride_w - p->pad_w;
                const int xe = x0 + p->k_w < p->in_w + p->pad_w ? x0 + p->k_w : p->in_w + p->pad_w;
                const int ws = clamp_int(x0, 0, p->in_w), we = clamp_int(xe, 0, p->in_w);
                float *out = &yp[(size_t)oy * p->out_w + ox];
                if (hs >= he || ws >= we) {
                    *out = 0.0f;
                    continue;
                }
                float sum = 0.0f;
                for (int iy = hs; iy < he; iy++)
                    for (int ix = ws; ix < we; ix++)
                        sum += xp[(size_t)iy * p->in_w + ix];
                const int div = p->count_include_pad ? (ye - y0) * (xe - x0)
                                                     : (he - hs) * (we - ws);
                *out = sum / (float)div;
            }
        }
    }
}

void adaptive_avgpool2d_forward(int n, int c, int in_h, int in_w, int out_h, int out_w,
                                const float *x, float *y)
{
    const size_t planes = (size_t)n * c;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * in_h * in_w;
        float *yp = y + pl * out_h * out_w;
        for (int oy = 0; oy < out_h; oy++) {
            const int hs = (int)((long)oy * in_h / out_h);
            const int he = (int)(((long)(oy + 1) * in_h + out_h - 1) / out_h);
            for (int ox = 0; ox < out_w; ox++) {
                const int ws = (int)((long)ox * in_w / out_w);
                const int we = (int)(((long)(ox + 1) * in_w + out_w - 1) / out_w);
                float sum = 0.0f;
                for (int iy = hs; iy < he; iy++)
                    for (int ix = ws; ix < we; ix++)
                        sum += xp[(size_t)iy * in_w + ix];
                yp[(size_t)oy * out_w + ox] = sum / (float)((he - hs) * (we - ws));
            }
        }
    }
}
