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
 *   ctx_h = softmax(scores) v_h  the same kernel: rows of a times a row-major b in
 *                                6 x 16 register tiles (each b load feeds six FMAs,
 *                                no horizontal sums; it was 1 x 64, one FMA per load,
 *                                and ran at a third of the GEMMs' speed).
 * Scratch is per thread: (tq x tk) scores and (dh x tk) transposed keys.  Pure: no
 * allocation, no state.
 */
#include "engine/ops/ops.h"
#include "engine/parallel.h"

#include <math.h>
#include <string.h>

#include "engine/ops/simd.h"

size_t attention_scratch_floats(int tq, int tk, int dh, int threads)
{
    if (tq <= 0 || tk <= 0 || dh <= 0 || threads <= 0)
        return 0;
    return (size_t)threads * ((size_t)tq * (size_t)tk + (size_t)dh * (size_t)tk);
}

/* The products' register tile: TILE_ROWS rows of a times TILE_COLS columns of b, 12
 * vector accumulators, one FMA per pair of b loads and a broadcast. */
enum { TILE_ROWS = 6, TILE_COLS = 16 };

OPS_VINLINE void tile(int R, int k, float alpha, const float *a, int lda, const float *b,
                      int ldb, float *y, int ldy)
{
    v8f lo[TILE_ROWS], hi[TILE_ROWS];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
        lo[r] = hi[r] = V8F(0.0f);
    for (int p = 0; p < k; p++) {
        v8f b0, b1;
        memcpy(&b0, b + (size_t)p * ldb, sizeof b0);
        memcpy(&b1, b + (size_t)p * ldb + 8, sizeof b1);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            const v8f s = V8F(a[(size_t)r * lda + p]);
            lo[r] += s * b0;
            hi[r] += s * b1;
        }
    }
    const v8f va = V8F(alpha);
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        const v8f l = lo[r] * va, h = hi[r] * va;
        memcpy(y + (size_t)r * ldy, &l, sizeof l);
        memcpy(y + (size_t)r * ldy + 8, &h, sizeof h);
    }
}

/* y (m, n) = alpha * a (m, k) x b (k, n), all row-major with leading dimensions:
 * whole tiles where n allows, the last n % 16 columns one dot product at a time. */
OPS_SIMD_CLONES
static void rows_times(int m, int n, int k, float alpha, const float *a, int lda,
                       const float *b, int ldb, float *y, int ldy)
{
    const int n_tiled = n / TILE_COLS * TILE_COLS;
    for (int c = 0; c < n_tiled; c += TILE_COLS) {
        int i = 0;
        for (; i + TILE_ROWS <= m; i += TILE_ROWS)
            tile(TILE_ROWS, k, alpha, a + (size_t)i * lda, lda, b + c, ldb,
                 y + (size_t)i * ldy + c, ldy);
        const float *ai = a + (size_t)i * lda;
        float *yi = y + (size_t)i * ldy + c;
        switch (m - i) {
        case 5: tile(5, k, alpha, ai, lda, b + c, ldb, yi, ldy); break;
        case 4: tile(4, k, alpha, ai, lda, b + c, ldb, yi, ldy); break;
        case 3: tile(3, k, alpha, ai, lda, b + c, ldb, yi, ldy); break;
        case 2: tile(2, k, alpha, ai, lda, b + c, ldb, yi, ldy); break;
        case 1: tile(1, k, alpha, ai, lda, b + c, ldb, yi, ldy); break;
        default: break;
        }
    }
    for (int i = 0; i < m; i++)
        for (int c = n_tiled; c < n; c++) {
            float s = 0.0f;
            for (int p = 0; p < k; p++)
                s += a[(size_t)i * lda + p] * b[(size_t)p * ldb + c];
            y[(size_t)i * ldy + c] = alpha * s;
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
