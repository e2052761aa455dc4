/* norm.c — batch normalisation at inference: folded into the preceding conv or
 * linear at load time, or, where nothing precedes it, a per-channel affine map.
 *
 * batchnorm_fold runs once per layer at model load and never in forward; it computes
 * each channel's scale in double so the folded weights differ from PyTorch's
 * unfolded conv+BN by float rounding only.  channel_affine is the forward-time
 * remainder.  Pure: no allocation, no state, any thread.
 */
#include "engine/ops/ops.h"

#include <math.h>

void batchnorm_fold(int out_c, int per_out, float *w, float *bias, const float *gamma,
                    const float *beta, const float *mean, const float *var, float eps)
{
    for (int o = 0; o < out_c; o++) {
        double scale = (double)gamma[o] / sqrt((double)var[o] + (double)eps);
        float *wo = w + (size_t)o * per_out;
        for (int i = 0; i < per_out; i++)
            wo[i] = (float)(wo[i] * scale);
        bias[o] = (float)(((double)bias[o] - mean[o]) * scale + beta[o]);
    }
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
