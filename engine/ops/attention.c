/* attention.c — multi-head scaled dot-product attention for one unpadded sequence.
 *
 * Heads are column blocks of the packed QKV matrix, read in place through the
 * leading dimensions: no transpose to (heads, T, dh) and back, as PyTorch does.
 * Sequences are never padded, so there is no mask and no work on pad keys.
 *
 * Per head the products are small (T x T x dh, dh = 64 for BERT-base): through
 * OpenBLAS, 288 such GEMMs per forward at T = 128 ran far below its peak and spent
 * their time handing work between its two threads.  So they run here instead, whole
 * heads to a thread of the session's pool (heads are independent), each on one core:
 *   scores = scale * q_h k_h^T   as q_h x kt_h, kt_h the head's keys transposed
 *                                into scratch (dh x tk), so both products below are
 *   ctx_h = softmax(scores) v_h  the same kernel: rows of a times a row-major b,
 *                                eight 8-wide accumulators across 64 output columns,
 *                                one FMA per b load, no horizontal sums.
 * Scratch is per thread: (tq x tk) scores and (dh x tk) transposed keys.  Pure: no
 * allocation, no state.
 */
#include "engine/ops/ops.h"
#include "engine/parallel.h"

#include <math.h>
#include <string.h>

#include "engine/ops/simd.h"

/* Output columns one pass of the row kernel covers: 8 vectors of 8. */
enum { ROW_CHUNK = 64 };

size_t attention_scratch_floats(int tq, int tk, int dh, int threads)
{
    if (tq <= 0 || tk <= 0 || dh <= 0 || threads <= 0)
        return 0;
    return (size_t)threads * ((size_t)tq * (size_t)tk + (size_t)dh * (size_t)tk);
}

/* y (m, n) = alpha * a (m, k) x b (k, n), all row-major with leading dimensions. */
OPS_SIMD_CLONES
static void rows_times(int m, int n, int k, float alpha, const float *a, int lda,
                       const float *b, int ldb, float *y, int ldy)
{
    const v8f va = V8F(alpha);
    for (int i = 0; i < m; i++) {
        const float *ai = a + (size_t)i * lda;
        float *yi = y + (size_t)i * ldy;
        int c = 0;
        for (; c + ROW_CHUNK <= n; c += ROW_CHUNK) {
            v8f acc[8] = { V8F(0.0f) };
            for (int p = 0; p < k; p++) {
                const v8f s = V8F(ai[p]);
                const float *bp = b + (size_t)p * ldb + c;
#pragma GCC unroll 8
                for (int v = 0; v < 8; v++) {
                    v8f bv;
                    memcpy(&bv, bp + 8 * v, sizeof bv);
                    acc[v] += s * bv;
                }
            }
#pragma GCC unroll 8
            for (int v = 0; v < 8; v++) {
                const v8f out = acc[v] * va;
                memcpy(yi + c + 8 * v, &out, sizeof out);
            }
        }
        for (; c + 8 <= n; c += 8) {
            v8f acc = V8F(0.0f);
            for (int p = 0; p < k; p++) {
                v8f bv;
                memcpy(&bv, b + (size_t)p * ldb + c, sizeof bv);
                acc += V8F(ai[p]) * bv;
            }
            acc *= va;
            memcpy(yi + c, &acc, sizeof acc);
        }
        for (; c < n; c++) {
            float s = 0.0f;
            for (int p = 0; p < k; p++)
                s += ai[p] * b[(size_t)p * ldb + c];
            yi[c] = alpha * s;
        }
    }
}

typedef struct attention_job {
    int tq, tk, heads, dh, ldq, ldkv, ldc;
    const float *q, *k, *v;
    float *ctx, *scratch;
    float scale;
} attention_job;

static void attention_part(void *ctx_, int part, int parts)
{
    const attention_job *j = ctx_;
    const int h0 = j->heads * part / parts, h1 = j->heads * (part + 1) / parts;
    float *scores = j->scratch + (size_t)part * ((size_t)j->tq * j->tk + (size_t)j->dh * j->tk);
    float *kt = scores + (size_t)j->tq * j->tk;
    for (int h = h0; h < h1; h++) {
        const size_t col = (size_t)h * j->dh;
        for (int t = 0; t < j->tk; t++)
            for (int d = 0; d < j->dh; d++)
                kt[(size_t)d * j->tk + t] = j->k[(size_t)t * j->ldkv + col + d];
        rows_times(j->tq, j->tk, j->dh, j->scale, j->q + col, j->ldq, kt, j->tk, scores, j->tk);
        softmax_rows(j->tq, j->tk, scores);
        rows_times(j->tq, j->dh, j->tk, 1.0f, scores, j->tk, j->v + col, j->ldkv, j->ctx + col,
                   j->ldc);
    }
}

void attention_forward(par_pool *pool, int tq, int tk, int heads, int dh, const float *q,
                       int ldq, const float *k, const float *v, int ldkv, float *ctx, int ldc,
                       float *scratch)
{
    if (tq <= 0 || tk <= 0)
        return;
    /* PyTorch divides the scores by sqrt(dh); for the usual head sizes (16, 64) the
     * root is a power of two and multiplying by its inverse is exact. */
    attention_job j = { tq, tk, heads, dh, ldq, ldkv, ldc, q, k, v, ctx, scratch,
                        (float)(1.0 / sqrt((double)dh)) };
    par_run(pool, attention_part, &j);
}
