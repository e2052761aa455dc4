/* linear.c — fully connected layer, y = x W^T + b, W stored (out, in) as PyTorch
 * stores it.
 *
 * One GEMM with W transposed in place (BLAS reads it as it lies, no copy).  The bias
 * is written into y first and the GEMM accumulates onto it (beta = 1), so the only
 * extra pass is the activation, and none at all for ACT_NONE.  At batch 1 this is a
 * matrix-vector product bound by reading W once; blas_sgemm routes it to sgemv.
 * Pure: no allocation, no state, any thread.
 */
#include "engine/blas.h"
#include "engine/ops/ops.h"

#include <string.h>

void linear_forward(int n, int in, int out, const float *x, const float *w,
                    const float *bias, act_kind act, float act_alpha, float *y)
{
    if (n <= 0 || out <= 0)
        return;
    if (bias)
        for (int r = 0; r < n; r++)
            memcpy(y + (size_t)r * out, bias, sizeof(float) * (size_t)out);
    blas_sgemm(false, true, n, out, in, 1.0f, x, in, w, in, bias ? 1.0f : 0.0f, y, out);
    act_apply(act, act_alpha, y, (size_t)n * out);
}
