/* linear.c — fully connected layer, y = x W^T + b, W stored (out, in) as PyTorch
 * stores it.
 *
 * Weights used as they lie (out, in) take one of two paths, by the number of rows n:
 *   - n > LINEAR_SMALL_ROWS: one GEMM with W transposed in place (BLAS reads it as it
 *     lies, no copy).  The bias is written into y first and the GEMM accumulates onto
 *     it (beta = 1), so the only extra pass is the activation, none for ACT_NONE.
 *   - few rows (the MLM decoder at the masks, a CNN's classifier at batch 1):
 *     OpenBLAS packs all of W into its own layout on every call, and with so few rows
 *     that copy costs more than the arithmetic (it was 46% of a BERT-base forward at
 *     seq 16, against 38% in its kernel).  Here W is read once, as it
 *     lies, by a register-blocked kernel: dot products along `in` of a block of
 *     LINEAR_BLOCK_OUT rows of W with LINEAR_BLOCK_ROWS rows of x, the W block staying
 *     in L1 while every row of x (in L2) passes over it; the session's pool splits
 *     W's rows between its threads (BLAS's threads are idle meanwhile).
 * Weights used on many rows, call after call (BERT's encoder), are better packed
 * once at load for the engine's own kernel: linear_forward_packed, below.
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

/* ---- packed weights ------------------------------------------------------------------
 *
 * OpenBLAS copies W into its own panel layout on every call.  For a layer whose
 * weights never change that copy is pure overhead: at BERT-base's 128 rows it was a
 * tenth of the forward, and its threads' hand-offs (they yield-spin between calls)
 * another tenth.  So weights used many times are rearranged once, at load, into the
 * layout a register-blocked kernel reads straight through, and the session's pool
 * splits the work:
 *   panels:  W's rows (outputs) in groups of PACK_COLS; within a group, for each
 *            input k, the PACK_COLS weights of that k side by side (zero past `out`).
 *   kernel:  PACK_ROWS rows of x times one panel over a slice of k: 2 x PACK_ROWS
 *            vector accumulators, two panel vectors loaded and one x value broadcast
 *            per pair of FMAs (15 of the 16 AVX2 registers).
 *   blocking (the GotoBLAS scheme with the weight side pre-packed): a depth slice of
 *            PACK_DEPTH keeps the panel's 16 KB in L1 while every row block passes over
 *            it; PACK_ROW_BLOCK rows of x (192 KB at that depth) stay in L2 across
 *            panels; a group of PACK_GROUP panels keeps its output block in L2 across
 *            the depth slices.
 *   threads: each takes an equal share of whole panels, so each reads only its own
 *            part of W and writes only its own columns of y.
 * Each output sums its products in k order within a slice and slice after slice, the
 * same on any thread count: results are identical for every pool size. */
enum { PACK_COLS = 16, PACK_ROWS = 6, PACK_DEPTH = 256, PACK_ROW_BLOCK = 192, PACK_GROUP = 8 };

size_t linear_packed_floats(int out, int in)
{
    if (out <= 0 || in <= 0)
        return 0;
    return (size_t)((out + PACK_COLS - 1) / PACK_COLS) * PACK_COLS * (size_t)in;
}

void linear_pack(int out, int in, const float *w, float *panels)
{
    const int n_panels = (out + PACK_COLS - 1) / PACK_COLS;
    for (int p = 0; p < n_panels; p++) {
        float *dst = panels + (size_t)p * PACK_COLS * in;
        for (int k = 0; k < in; k++)
            for (int c = 0; c < PACK_COLS; c++) {
                const int o = p * PACK_COLS + c;
                dst[(size_t)k * PACK_COLS + c] = o < out ? w[(size_t)o * in + k] : 0.0f;
            }
    }
}

/* One tile: rows [0, R) of x (stride ldx) times the panel slice bp (depth kc) into
 * the tile of y (stride ldy), `cols` of its PACK_COLS columns real.  first: the slice
 * starts the sum, from the bias (a PACK_COLS-wide copy) or zero; else it adds to y. */
OPS_VINLINE void packed_tile(int R, int kc, const float *x, int ldx, const float *bp,
                             float *y, int ldy, int cols, bool first, const float *bias16)
{
    v8f lo[PACK_ROWS], hi[PACK_ROWS];
    float edge[PACK_ROWS][PACK_COLS];
    float *out[PACK_ROWS];
    if (cols == PACK_COLS) {
        for (int r = 0; r < R; r++)
            out[r] = y + (size_t)r * ldy;
    } else { /* the last panel of a width that is not a multiple: go through a copy */
        for (int r = 0; r < R; r++) {
            out[r] = edge[r];
            memset(edge[r], 0, sizeof edge[r]);
            if (!first)
                memcpy(edge[r], y + (size_t)r * ldy, sizeof(float) * (size_t)cols);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        if (!first) {
            memcpy(&lo[r], out[r], sizeof(v8f));
            memcpy(&hi[r], out[r] + 8, sizeof(v8f));
        } else if (bias16) {
            memcpy(&lo[r], bias16, sizeof(v8f));
            memcpy(&hi[r], bias16 + 8, sizeof(v8f));
        } else {
            lo[r] = V8F(0.0f);
            hi[r] = V8F(0.0f);
        }
    }
    for (int k = 0; k < kc; k++, bp += PACK_COLS) {
        v8f b0, b1;
        memcpy(&b0, bp, sizeof b0);
        memcpy(&b1, bp + 8, sizeof b1);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            const v8f a = V8F(x[(size_t)r * ldx + k]);
            lo[r] += a * b0;
            hi[r] += a * b1;
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        memcpy(out[r], &lo[r], sizeof(v8f));
        memcpy(out[r] + 8, &hi[r], sizeof(v8f));
    }
    if (cols != PACK_COLS)
        for (int r = 0; r < R; r++)
            memcpy(y + (size_t)r * ldy, edge[r], sizeof(float) * (size_t)cols);
}

/* Rows [0, m) of x against one panel slice, PACK_ROWS at a time (the remainder
 * through a tile specialised for its row count). */
OPS_VINLINE void packed_rows(int m, int kc, const float *x, int ldx, const float *bp, float *y,
                             int ldy, int cols, bool first, const float *bias16)
{
    int r = 0;
    for (; r + PACK_ROWS <= m; r += PACK_ROWS)
        packed_tile(PACK_ROWS, kc, x + (size_t)r * ldx, ldx, bp, y + (size_t)r * ldy, ldy, cols,
                    first, bias16);
    const float *xr = x + (size_t)r * ldx;
    float *yr = y + (size_t)r * ldy;
    switch (m - r) {
    case 5: packed_tile(5, kc, xr, ldx, bp, yr, ldy, cols, first, bias16); break;
    case 4: packed_tile(4, kc, xr, ldx, bp, yr, ldy, cols, first, bias16); break;
    case 3: packed_tile(3, kc, xr, ldx, bp, yr, ldy, cols, first, bias16); break;
    case 2: packed_tile(2, kc, xr, ldx, bp, yr, ldy, cols, first, bias16); break;
    case 1: packed_tile(1, kc, xr, ldx, bp, yr, ldy, cols, first, bias16); break;
    default: break;
    }
}

typedef struct packed_job {
    int n, in, out;
    const float *x, *panels, *bias;
    act_kind act;
    float act_alpha;
    float *y;
} packed_job;

/* Panels [p0, p1) of every row: the blocking described above, then the activation on
 * these columns while they are still in cache. */
OPS_SIMD_CLONES
static void packed_panels(const packed_job *j, int p0, int p1)
{
    const int in = j->in, out = j->out;
    for (int r0 = 0; r0 < j->n; r0 += PACK_ROW_BLOCK) {
        const int m = j->n - r0 < PACK_ROW_BLOCK ? j->n - r0 : PACK_ROW_BLOCK;
        const float *xb = j->x + (size_t)r0 * in;
        float *yb = j->y + (size_t)r0 * out;
        for (int g0 = p0; g0 < p1; g0 += PACK_GROUP) {
            const int g1 = g0 + PACK_GROUP < p1 ? g0 + PACK_GROUP : p1;
            for (int k0 = 0; k0 < in; k0 += PACK_DEPTH) {
                const int kc = in - k0 < PACK_DEPTH ? in - k0 : PACK_DEPTH;
                for (int p = g0; p < g1; p++) {
                    const int c0 = p * PACK_COLS;
                    const int cols = out - c0 < PACK_COLS ? out - c0 : PACK_COLS;
                    float bias16[PACK_COLS] = {0};
                    if (j->bias)
                        memcpy(bias16, j->bias + c0, sizeof(float) * (size_t)cols);
                    packed_rows(m, kc, xb + k0, in,
                                j->panels + (size_t)p * PACK_COLS * in + (size_t)k0 * PACK_COLS,
                                yb + c0, out, cols, k0 == 0, j->bias ? bias16 : NULL);
                }
            }
            if (j->act != ACT_NONE) {
                const int c0 = g0 * PACK_COLS;
                const int c1 = g1 * PACK_COLS < out ? g1 * PACK_COLS : out;
                for (int r = 0; r < m; r++)
                    act_apply(j->act, j->act_alpha, yb + (size_t)r * out + c0, (size_t)(c1 - c0));
            }
        }
    }
}

/* An even split of whole panels, fixed up front.  (Handing out chunks from a shared
 * counter, so a thread on a slower core does less, measured no better here.) */
static void packed_part(void *ctx, int part, int parts)
{
    const packed_job *j = ctx;
    const int n_panels = (j->out + PACK_COLS - 1) / PACK_COLS;
    const int p0 = (int)((long)n_panels * part / parts);
    const int p1 = (int)((long)n_panels * (part + 1) / parts);
    if (p0 < p1)
        packed_panels(j, p0, p1);
}

void linear_forward_packed(par_pool *pool, int n, int in, int out, const float *x,
                           const float *panels, const float *bias, act_kind act,
                           float act_alpha, float *y)
{
    if (n <= 0 || out <= 0 || in <= 0)
        return;
    packed_job j = { n, in, out, x, panels, bias, act, act_alpha, y };
    par_run(pool, packed_part, &j);
}
