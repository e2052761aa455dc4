/* pool.c — max, average and adaptive-average pooling, NCHW, PyTorch's semantics.
 *
 * Each output's window is clipped to the input once, so the inner loops carry no
 * bounds checks; padding is never materialised.  Max pooling treats padding as -inf
 * and propagates NaN as PyTorch does.  Average pooling divides, with
 * count_include_pad, by the window clipped to the *padded* input (PyTorch's
 * pool_size), without it by the real pixels only.  These run once or twice per
 * network on planes already in cache; they are scalar on purpose.
 * Pure: no allocation, no state, any thread.
 */
#include "engine/ops/ops.h"

#include <math.h>

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

void maxpool2d_forward(const pool2d_params *p, int n, const float *x, float *y)
{
    const size_t planes = (size_t)n * p->c;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * p->in_h * p->in_w;
        float *yp = y + pl * p->out_h * p->out_w;
        for (int oy = 0; oy < p->out_h; oy++) {
            const int y0 = oy * p->stride_h - p->pad_h;
            const int hs = clamp_int(y0, 0, p->in_h), he = clamp_int(y0 + p->k_h, 0, p->in_h);
            for (int ox = 0; ox < p->out_w; ox++) {
                const int x0 = ox * p->stride_w - p->pad_w;
                const int ws = clamp_int(x0, 0, p->in_w), we = clamp_int(x0 + p->k_w, 0, p->in_w);
                float m = -INFINITY;
                for (int iy = hs; iy < he; iy++)
                    for (int ix = ws; ix < we; ix++) {
                        const float v = xp[(size_t)iy * p->in_w + ix];
                        if (v > m || isnan(v))
                            m = v;
                    }
                yp[(size_t)oy * p->out_w + ox] = m;
            }
        }
    }
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
