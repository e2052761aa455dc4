/* embedding.c — table lookups: BERT's summed input embeddings, and gathering rows
 * of a matrix by index (the mask and [CLS] rows the heads read).
 *
 * Both are copies bound by memory, a few rows of D floats each; they index with
 * values the caller has already checked against the table sizes (the model's
 * forward validates every id before anything runs), so nothing here can read
 * out of bounds on request data.  Pure: no allocation, no state, any thread.
 */
#include "engine/ops/ops.h"

#include <string.h>

#include "engine/ops/simd.h"

OPS_SIMD_CLONES
static void sum3(int d, const float *a, const float *b, const float *c, float *y)
{
    int i = 0;
    for (; i + 8 <= d; i += 8) {
        v8f va, vb, vc;
        memcpy(&va, a + i, sizeof va);
        memcpy(&vb, b + i, sizeof vb);
        memcpy(&vc, c + i, sizeof vc);
        va = (va + vc) + vb;
        memcpy(y + i, &va, sizeof va);
    }
    for (; i < d; i++)
        y[i] = (a[i] + c[i]) + b[i];
}

void embedding_sum(int t, int d, const int32_t *ids, const int32_t *types, const float *word,
                   const float *pos, const float *type, float *y)
{
    /* PyTorch adds word + token_type first, then position: the same order here keeps
     * the rounding identical. */
    for (int i = 0; i < t; i++)
        sum3(d, word + (size_t)ids[i] * d, pos + (size_t)i * d,
             type + (size_t)(types ? types[i] : 0) * d, y + (size_t)i * d);
}

void gather_rows(int n, int d, const int *idx, const float *x, int ld_x, float *y)
{
    for (int i = 0; i < n; i++)
        memcpy(y + (size_t)i * d, x + (size_t)idx[i] * ld_x, sizeof(float) * (size_t)d);
}
