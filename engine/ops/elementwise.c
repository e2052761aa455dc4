/* elementwise.c — residual addition with a fused activation, and row softmax.
 *
 * add_forward works in cache-sized chunks so the activation reads what the
 * addition has just written, instead of a second trip through memory for a whole
 * residual tensor.  The addition uses 8-wide GNU vectors (the build is -O2 for
 * baseline x86-64, where GCC vectorises no plain loop).  softmax_rows subtracts each
 * row's max before exp, so large logits cannot overflow; its exp is simd.h's vector
 * one (attention runs one per score: 2.4M a BERT-base forward at seq 128), lane
 * sums added in double.
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

/* One row in three sweeps (max, exp and sum, scale), 8 lanes at a time.  The tail
 * goes through the same vector exp on a padded copy, so a row's values do not
 * depend on where it sits relative to the vector width. */
OPS_SIMD_CLONES
static void softmax_row(int cols, float *row)
{
    int j = 0;
    v8f vmax = V8F(row[0]);
    for (; j + 8 <= cols; j += 8) {
        v8f v;
        memcpy(&v, row + j, sizeof v);
        vmax = v8f_select(v > vmax, v, vmax);
    }
    float max = vmax[0];
    for (int l = 1; l < 8; l++)
        max = vmax[l] > max ? vmax[l] : max;
    for (; j < cols; j++)
        max = row[j] > max ? row[j] : max;

    const v8f vm = V8F(max);
    v8f vsum = V8F(0.0f);
    for (j = 0; j + 8 <= cols; j += 8) {
        v8f v;
        memcpy(&v, row + j, sizeof v);
        v = v8f_exp(v - vm);
        memcpy(row + j, &v, sizeof v);
        vsum += v;
    }
    double sum = 0.0;
    for (int l = 0; l < 8; l++)
        sum += vsum[l];
    if (j < cols) {
        v8f v = vm;
        memcpy(&v, row + j, (size_t)(cols - j) * sizeof(float));
        v = v8f_exp(v - vm);
        memcpy(row + j, &v, (size_t)(cols - j) * sizeof(float));
        for (int l = 0; l < cols - j; l++)
            sum += v[l];
    }

    const v8f inv = V8F((float)(1.0 / sum));
    for (j = 0; j + 8 <= cols; j += 8) {
        v8f v;
        memcpy(&v, row + j, sizeof v);
        v *= inv;
        memcpy(row + j, &v, sizeof v);
    }
    for (; j < cols; j++)
        row[j] *= inv[0];
}

void softmax_rows(int rows, int cols, float *x)
{
    if (cols <= 0)
        return;
    for (int r = 0; r < rows; r++)
        softmax_row(cols, x + (size_t)r * cols);
}
