/* norm.c — batch normalisation at inference: folded into the preceding conv or
 * linear at load time, or, where nothing precedes it, a per-channel affine map; and
 * layer normalisation over rows, BERT's normaliser.
 *
 * batchnorm_fold (and its ConvTranspose2d form) runs once per layer at model load and
 * never in forward; it computes each channel's scale in double so the folded weights
 * differ from PyTorch's unfolded conv+BN by float rounding only.  channel_affine is the
 * forward-time remainder.
 *
 * layernorm_rows runs twice per transformer layer over the whole packed batch, so it
 * is a memory-bound pass: three sweeps over a row that stays in L1 (sum, squared
 * deviations, scale), 8-wide GNU vectors since the build vectorises no plain loop.
 * The variance is the two-pass form, not E[x^2] - mean^2, which cancels badly when
 * |mean| >> std (BERT's residual stream has large per-row offsets).  The residual
 * add is fused in (add_layernorm_rows) so the sum is never written and re-read.
 * Pure: no allocation, no state, any thread.
 */
#include "engine/ops/ops.h"

#include <math.h>
#include <string.h>

#include "engine/ops/simd.h"

static double bn_scale(const float *gamma, const float *var, float eps, int o)
{
    return (double)gamma[o] / sqrt((double)var[o] + (double)eps);
}

static void scale_floats(float *w, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++)
        w[i] = (float)(w[i] * scale);
}

void batchnorm_fold(int out_c, int per_out, float *w, float *bias, const float *gamma,
                    const float *beta, const float *mean, const float *var, float eps)
{
    for (int o = 0; o < out_c; o++) {
        const double scale = bn_scale(gamma, var, eps, o);
        scale_floats(w + (size_t)o * per_out, (size_t)per_out, scale);
        bias[o] = (float)(((double)bias[o] - mean[o]) * scale + beta[o]);
    }
}

void batchnorm_fold_transposed(int in_c, int out_c, int groups, int taps, float *w,
                               float *bias, const float *gamma, const float *beta,
                               const float *mean, const float *var, float eps)
{
    const int cg = in_c / groups, ocg = out_c / groups;
    for (int c = 0; c < in_c; c++) {
        const int first = c / cg * ocg;   /* the output channels of c's group */
        for (int o = 0; o < ocg; o++)
            scale_floats(w + ((size_t)c * ocg + o) * taps, (size_t)taps,
                         bn_scale(gamma, var, eps, first + o));
    }
    for (int o = 0; o < out_c; o++)
        bias[o] = (float)(((double)bias[o] - mean[o]) * bn_scale(gamma, var, eps, o) + beta[o]);
}

void channel_affine(int n, int c, int spatial, const float *scale, const float *shift,
                    float *x)
{
    for (int img = 0; img < n; img++)
        for (int ch = 0; ch < c; ch++) {
            float *xc = x + ((size_t)img * c + ch) * spatial;
            const float s = scale[ch], t = shift[ch];
            for (int i = 0; i < spatial; i++)
                xc[i] = xc[i] * s + t;
        }
}

OPS_VINLINE float hsum(v8f v)
{
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

/* One row: y = x (+ r when non-NULL), then y normalised in place.  Each element is
 * read before it is written, so y may alias x or r. */
OPS_SIMD_CLONES
static void ln_row(int d, const float *x, const float *r, const float *gamma,
                   const float *beta, float eps, float *y)
{
    v8f acc = {0};
    float tail = 0.0f;
    int i = 0;
    for (; i + 8 <= d; i += 8) {
        v8f v;
        memcpy(&v, x + i, sizeof v);
        if (r) {
            v8f w;
            memcpy(&w, r + i, sizeof w);
            v += w;
        }
        memcpy(y + i, &v, sizeof v);
        acc += v;
    }
    for (; i < d; i++) {
        float v = r ? x[i] + r[i] : x[i];
        y[i] = v;
        tail += v;
    }
    const float mean = (hsum(acc) + tail) / (float)d;

    const v8f vm = {mean, mean, mean, mean, mean, mean, mean, mean};
    v8f acc2 = {0};
    float tail2 = 0.0f;
    for (i = 0; i + 8 <= d; i += 8) {
        v8f v;
        memcpy(&v, y + i, sizeof v);
        v -= vm;
        acc2 += v * v;
    }
    for (; i < d; i++)
        tail2 += (y[i] - mean) * (y[i] - mean);
    const float var = (hsum(acc2) + tail2) / (float)d;
    const float rstd = (float)(1.0 / sqrt((double)var + (double)eps));

    const v8f vr = {rstd, rstd, rstd, rstd, rstd, rstd, rstd, rstd};
    for (i = 0; i + 8 <= d; i += 8) {
        v8f v, g, b;
        memcpy(&v, y + i, sizeof v);
        memcpy(&g, gamma + i, sizeof g);
        memcpy(&b, beta + i, sizeof b);
        v = (v - vm) * vr * g + b;
        memcpy(y + i, &v, sizeof v);
    }
    for (; i < d; i++)
        y[i] = (y[i] - mean) * rstd * gamma[i] + beta[i];
}

void layernorm_rows(int rows, int d, const float *x, const float *gamma, const float *beta,
                    float eps, float *y)
{
    for (int r = 0; r < rows; r++)
        ln_row(d, x + (size_t)r * d, NULL, gamma, beta, eps, y + (size_t)r * d);
}

void add_layernorm_rows(int rows, int d, const float *x, const float *r, const float *gamma,
                        const float *beta, float eps, float *y)
{
    for (int i = 0; i < rows; i++)
        ln_row(d, x + (size_t)i * d, r + (size_t)i * d, gamma, beta, eps, y + (size_t)i * d);
}
