/* linear.c — fully connected layer, y = x W^T + b, W stored (out, in) as PyTorch
 * stores it.
 *
 * Two paths, by the number of rows n:
 *   - n > LINEAR_SMALL_ROWS: one GEMM with W transposed in place (BLAS reads it as it
 *     lies, no copy).  The bias is written into y first and the GEMM accumulates onto
 *     it (beta = 1), so the only extra pass is the activation, none for ACT_NONE.
 *   - few rows (BERT at seq 16, the MLM head at the masks, a CNN's classifier at
 *     batch 1): OpenBLAS packs all of W into its own layout on every call, and with
 *     so few rows that copy costs more than the arithmetic (46% of a BERT-base
 *     forward at seq 16, against 38% in its kernel).  Here W is read once, as it
 *     lies, by a register-blocked kernel: dot products along `in` of a block of
 *     LINEAR_BLOCK_OUT rows of W with LINEAR_BLOCK_ROWS rows of x, the W block staying
 *     in L1 while every row of x (in L2) passes over it; the session's pool splits
 *     W's rows between its threads (BLAS's threads are idle meanwhile).
 * Pure: no allocation, no state, any thread.
 */
#include "engine/blas.h"
#include "engine/ops/ops.h"
#include "engine/parallel.h"

#include <string.h>

#include "engine/ops/simd.h"

/* Up to this many rows the blocked kernel beats OpenBLAS's pack-then-multiply on the
 * benchmark machines (docs/PERFORMANCE.md, BERT-base seq 16). */
enum { LINEAR_SMALL_ROWS = 16 };
/* 4 x 3 accumulators + 3 W vectors + 1 x vector: the 16 AVX2 registers. */
enum { LINEAR_BLOCK_ROWS = 4, LINEAR_BLOCK_OUT = 3 };

OPS_VINLINE float hsum8(v8f v)
{
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

/* y[r][o] = x[r] . w[o] + bias[o] for r < R, o < O (R, O at most the block sizes; the
 * compiler specialises the always-inlined body for each constant pair). */
OPS_VINLINE void dot_block(int R, int O, int in, const float *x, const float *w,
                           const float *bias, float *y, int ldy)
{
    v8f acc[LINEAR_BLOCK_ROWS][LINEAR_BLOCK_OUT];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 3
        for (int o = 0; o < O; o++)
            acc[r][o] = V8F(0.0f);
    int i = 0;
    for (; i + 8 <= in; i += 8) {
        v8f wv[LINEAR_BLOCK_OUT];
#pragma GCC unroll 3
        for (int o = 0; o < O; o++)
            memcpy(&wv[o], w + (size_t)o * in + i, sizeof(v8f));
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            v8f xv;
            memcpy(&xv, x + (size_t)r * in + i, sizeof xv);
#pragma GCC unroll 3
            for (int o = 0; o < O; o++)
                acc[r][o] += xv * wv[o];
        }
    }
    for (int r = 0; r < R; r++)
        for (int o = 0; o < O; o++) {
            float s = hsum8(acc[r][o]);
            for (int j = i; j < in; j++)
                s += x[(size_t)r * in + j] * w[(size_t)o * in + j];
            y[(size_t)r * ldy + o] = bias ? s + bias[o] : s;
        }
}

/* One block of W rows (O of them) against every row of x. */
OPS_VINLINE void dot_rows(int n, int O, int in, const float *x, const float *w,
                          const float *bias, float *y, int ldy)
{
    int r = 0;
    for (; r + LINEAR_BLOCK_ROWS <= n; r += LINEAR_BLOCK_ROWS)
        dot_block(LINEAR_BLOCK_ROWS, O, in, x + (size_t)r * in, w, bias, y + (size_t)r * ldy,
                  ldy);
    switch (n - r) {
    case 3: dot_block(3, O, in, x + (size_t)r * in, w, bias, y + (size_t)r * ldy, ldy); break;
    case 2: dot_block(2, O, in, x + (size_t)r * in, w, bias, y + (size_t)r * ldy, ldy); break;
    case 1: dot_block(1, O, in, x + (size_t)r * in, w, bias, y + (size_t)r * ldy, ldy); break;
    default: break;
    }
}

/* Outputs [o0, o1) of every row; o0 a multiple of LINEAR_BLOCK_OUT. */
OPS_SIMD_CLONES
static void linear_small(int n, int in, int out, int o0, int o1, const float *x,
                         const float *w, const float *bias, float *y)
{
    int o = o0;
    for (; o + LINEAR_BLOCK_OUT <= o1; o += LINEAR_BLOCK_OUT)
        dot_rows(n, LINEAR_BLOCK_OUT, in, x, w + (size_t)o * in, bias ? bias + o : NULL,
                 y + o, out);
    switch (o1 - o) {
    case 2: dot_rows(n, 2, in, x, w + (size_t)o * in, bias ? bias + o : NULL, y + o, out); break;
    case 1: dot_rows(n, 1, in, x, w + (size_t)o * in, bias ? bias + o : NULL, y + o, out); break;
    default: break;
    }
}

typedef struct small_job {
    int n, in, out;
    const float *x, *w, *bias;
    float *y;
} small_job;

/* Each thread takes an equal share of W's rows (whole blocks), so each reads its
 * own part of W once: the split that keeps a memory-bound kernel scaling. */
static void linear_small_part(void *ctx, int part, int parts)
{
    const small_job *j = ctx;
    const int blocks = (j->out + LINEAR_BLOCK_OUT - 1) / LINEAR_BLOCK_OUT;
    const int b0 = (int)((long)blocks * part / parts), b1 = (int)((long)blocks * (part + 1) / parts);
    const int o0 = b0 * LINEAR_BLOCK_OUT;
    const int o1 = b1 * LINEAR_BLOCK_OUT < j->out ? b1 * LINEAR_BLOCK_OUT : j->out;
    if (o0 < o1)
        linear_small(j->n, j->in, j->out, o0, o1, j->x, j->w, j->bias, j->y);
}

void linear_forward(par_pool *pool, int n, int in, int out, const float *x, const float *w,
                    const float *bias, act_kind act, float act_alpha, float *y)
{
    if (n <= 0 || out <= 0)
        return;
    if (n <= LINEAR_SMALL_ROWS) {
        small_job j = { n, in, out, x, w, bias, y };
        par_run(pool, linear_small_part, &j);
    } else {
        if (bias)
            for (int r = 0; r < n; r++)
                memcpy(y + (size_t)r * out, bias, sizeof(float) * (size_t)out);
        blas_sgemm(false, true, n, out, in, 1.0f, x, in, w, in, bias ? 1.0f : 0.0f, y, out);
    }
    act_apply(act, act_alpha, y, (size_t)n * out);
}
