/* elementwise.c — residual addition with a fused activation, and row softmax.
 *
 * add_forward works in cache-sized chunks so the activation reads what the
 * addition has just written, instead of a second trip through memory for a whole
 * residual tensor.  The addition uses 8-wide GNU vectors (the build is -O2 for
 * baseline x86-64, where GCC vectorises no plain loop).  softmax_rows subtracts each
 * row's max before exp, so large logits cannot overflow, and sums in double.
 * Pure: no allocation, no state, any thread.
 */
#include "engine/ops/ops.h"

#include <math.h>
#include <string.h>

#include "engine/ops/simd.h"


enum { ADD_CHUNK = 4096 }; /* floats: 16 KiB, well inside L1 + L2 */

/* y may alias a or b: each element is read before it is written, and the vector
 * loads go through memcpy, so no restrict promise is made. */
OPS_SIMD_CLONES
static void add_chunk(size_t n, const float *a, const float *b, float *y)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f va, vb;
        memcpy(&va, a + i, sizeof va);
        memcpy(&vb, b + i, sizeof vb);
        va += vb;
        memcpy(y + i, &va, sizeof va);
    }
    for (; i < n; i++)
        y[i] = a[i] + b[i];
}

void add_forward(size_t n, const float *a, const float *b, act_kind act, float act_alpha,
                 float *y)
{
    for (size_t i = 0; i < n; i += ADD_CHUNK) {
        size_t len = n - i < ADD_CHUNK ? n - i : ADD_CHUNK;
        add_chunk(len, a + i, b + i, y + i);
        act_apply(act, act_alpha, y + i, len);
    }
}

void softmax_rows(int rows, int cols, float *x)
{
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * cols;
        if (cols <= 0)
            continue;
        float max = row[0];
        for (int j = 1; j < cols; j++)
            if (row[j] > max)
                max = row[j];
        double sum = 0.0;
        for (int j = 0; j < cols; j++) {
            row[j] = expf(row[j] - max);
            sum += row[j];
        }
        const float inv = (float)(1.0 / sum);
        for (int j = 0; j < cols; j++)
            row[j] *= inv;
    }
}
