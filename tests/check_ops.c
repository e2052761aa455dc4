/* check_ops.c — the compute kernels against naive references written here.
 *
 * Every kernel is compared with a direct double-precision loop over random data on
 * many shapes (the references share no code with the kernels); pooling rules that
 * are easy to get subtly wrong (ceil_mode, count_include_pad, adaptive bins) are
 * also pinned by values taken from PyTorch 1.13 by hand.  Buffers are allocated at
 * their exact sizes so ASan catches any kernel writing or reading past them.
 *
 * Tolerance: a float result may differ from the double reference by 1e-5 of the sum
 * of the absolute values of its terms (a bound on rounding that does not fail on
 * cancellation and still catches any missing or extra tap).
 */
#include "engine/blas.h"
#include "engine/engine.h"
#include "engine/ops/ops.h"

#include <check.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

/* ---- helpers ------------------------------------------------------------- */

typedef struct rng {
    uint64_t s;
} rng;

static uint32_t rng_next(rng *r)
{
    r->s = r->s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(r->s >> 33);
}

/* Uniform in [-1, 1). */
static float rng_float(rng *r)
{
    return (float)rng_next(r) / 1073741824.0f - 1.0f;
}

static int rng_int(rng *r, int lo, int hi) /* [lo, hi] */
{
    return lo + (int)(rng_next(r) % (uint32_t)(hi - lo + 1));
}

static float *rand_buf(rng *r, size_t n)
{
    float *p = malloc(n ? n * sizeof *p : 1);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++)
        p[i] = rng_float(r);
    return p;
}

static double ref_act(act_kind k, double a, double v)
{
    switch (k) {
    case ACT_NONE: return v;
    case ACT_RELU: return v > 0 ? v : 0;
    case ACT_RELU6: return v < 0 ? 0 : v > 6 ? 6 : v;
    case ACT_LEAKY_RELU: return v < 0 ? a * v : v;
    case ACT_ELU: return v > 0 ? v : a * (exp(v) - 1);
    case ACT_SIGMOID: return 1 / (1 + exp(-v));
    case ACT_TANH: return tanh(v);
    case ACT_GELU: return 0.5 * v * (1 + erf(v / sqrt(2.0)));
    case ACT_SILU: return v / (1 + exp(-v));
    }
    return NAN;
}

static const act_kind all_acts[] = {ACT_NONE, ACT_RELU, ACT_RELU6, ACT_LEAKY_RELU, ACT_ELU,
                                    ACT_SIGMOID, ACT_TANH, ACT_GELU, ACT_SILU};
#define N_ACTS (sizeof all_acts / sizeof all_acts[0])

static float act_alpha_for(act_kind k)
{
    return k == ACT_LEAKY_RELU ? 0.1f : k == ACT_ELU ? 0.7f : 0.0f;
}

/* First index where got differs from want by more than TOL * scale[i] (+ a floor
 * for values near zero), or -1. */
static long first_mismatch(const float *got, const double *want, const double *scale,
                           size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double tol = TOL * (scale ? scale[i] : fabs(want[i])) + 1e-6;
        if (!(fabs((double)got[i] - want[i]) <= tol))
            return (long)i;
    }
    return -1;
}

/* ---- blas ------------------------------------------------------------------ */

static void check_gemm(rng *r, bool ta, bool tb, int m, int n, int k, float alpha, float beta)
{
    const int pad = 3;
    const int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
    const int arows = ta ? k : m, brows = tb ? n : k;
    float *a = rand_buf(r, (size_t)arows * lda);
    float *b = rand_buf(r, (size_t)brows * ldb);
    float *c = rand_buf(r, (size_t)m * ldc);
    double *want = malloc(sizeof(double) * m * ldc);
    double *scale = malloc(sizeof(double) * m * ldc);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++) {
            size_t o = (size_t)i * ldc + j;
            if (j >= n) { /* the padding between rows must not be touched */
                want[o] = c[o];
                scale[o] = 0;
                continue;
            }
            double s = 0, as = 0;
            for (int q = 0; q < k; q++) {
                double av = ta ? a[(size_t)q * lda + i] : a[(size_t)i * lda + q];
                double bv = tb ? b[(size_t)j * ldb + q] : b[(size_t)q * ldb + j];
                s += av * bv;
                as += fabs(av * bv);
            }
            want[o] = alpha * s + (beta == 0 ? 0 : beta * c[o]);
            scale[o] = fabs(alpha) * as + fabs(beta * c[o]);
        }
    blas_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    long bad = first_mismatch(c, want, scale, (size_t)m * ldc);
    ck_assert_msg(bad < 0, "gemm ta=%d tb=%d m=%d n=%d k=%d: c[%ld]=%g want %g", ta, tb, m,
                  n, k, bad, bad < 0 ? 0 : c[bad], bad < 0 ? 0 : want[bad]);
    free(a), free(b), free(c), free(want), free(scale);
}

START_TEST(test_blas_sgemm)
{
    rng r = {1};
    static const int dims[][3] = {{1, 7, 5}, {6, 1, 5}, {1, 1, 9}, {5, 7, 3},
                                  {33, 17, 40}, {2, 64, 1}, {4, 3, 0}};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (int t = 0; t < 4; t++) {
            check_gemm(&r, t & 1, t & 2, dims[d][0], dims[d][1], dims[d][2], 1.0f, 0.0f);
            check_gemm(&r, t & 1, t & 2, dims[d][0], dims[d][1], dims[d][2], 0.5f, 2.0f);
        }
}
END_TEST

START_TEST(test_blas_threads)
{
    int before = engine_blas_threads();
    engine_set_blas_threads(1);
    ck_assert_int_eq(engine_blas_threads(), 1);
    engine_set_blas_threads(0); /* clamped, never zero threads */
    ck_assert_int_eq(engine_blas_threads(), 1);
    engine_set_blas_threads(before);
}
END_TEST

/* ---- activations ------------------------------------------------------------- */

START_TEST(test_activations)
{
    rng r = {2};
    enum { N = 203 }; /* not a multiple of 8: the vector body and the tail both run */
    float x[N], y[N];
    for (int i = 0; i < N; i++)
        x[i] = rng_float(&r) * 8.0f;
    /* extremes: sigmoid, SiLU, ELU and GELU must not overflow or lose the sign */
    x[0] = 100.0f, x[1] = -100.0f, x[2] = 0.0f, x[3] = -0.0f, x[4] = 6.0f, x[5] = 7.5f;
    x[6] = -89.0f, x[7] = 89.0f;
    for (size_t k = 0; k < N_ACTS; k++) {
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const float alpha = act_alpha_for(all_acts[k]), bias = with_bias ? 0.25f : 0.0f;
            memcpy(y, x, sizeof x);
            if (with_bias)
                act_apply_bias(all_acts[k], alpha, bias, y, N);
            else
                act_apply(all_acts[k], alpha, y, N);
            for (int i = 0; i < N; i++) {
                double want = ref_act(all_acts[k], alpha, (double)(x[i] + bias));
                ck_assert_msg(isfinite(y[i]), "act %d: x=%g -> %g", all_acts[k], x[i], y[i]);
                ck_assert_msg(fabs(y[i] - want) <= 1e-6 + 2e-6 * fabs(want),
                              "act %d bias %g: x=%g got %.9g want %.9g", all_acts[k], bias,
                              x[i], y[i], want);
            }
        }
    }
}
END_TEST

/* GELU runs a vector erf (A&S 7.1.26, PyTorch's formula) and a vector exp: sweep a
 * fine grid over the range where erf is not yet saturated, every lane position. */
START_TEST(test_gelu_grid)
{
    enum { N = 20001 };
    float *y = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++)
        y[i] = -10.0f + 1e-3f * (float)i;
    act_apply(ACT_GELU, 0.0f, y, N);
    for (int i = 0; i < N; i++) {
        const double v = -10.0f + 1e-3f * (float)i;
        const double want = ref_act(ACT_GELU, 0.0f, v);
        ck_assert_msg(fabs(y[i] - want) <= 1e-7 * (1.0 + fabs(v)) + 1e-6 * fabs(want),
                      "gelu(%.9g) = %.9g, want %.9g", v, y[i], want);
    }
    free(y);
}
END_TEST

START_TEST(test_activation_nan)
{
    /* PyTorch keeps NaN through the ReLU family; a max-based select would not. */
    static const act_kind k[] = {ACT_RELU, ACT_RELU6, ACT_LEAKY_RELU, ACT_GELU, ACT_SILU};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        float x[9];
        for (int j = 0; j < 9; j++)
            x[j] = NAN;
        act_apply(k[i], 0.1f, x, 9);
        for (int j = 0; j < 9; j++)
            ck_assert_msg(isnan(x[j]), "act %d lost a NaN at %d", k[i], j);
    }
}
END_TEST

/* ---- convolution -------------------------------------------------------------- */

/* Direct 7-loop convolution in double: out[n][oc][oy][ox] and the sum of |terms|. */
static void ref_conv(const conv2d_params *p, int n, const float *x, const float *w,
                     const float *bias, double *out, double *abssum)
{
    const int cg = p->in_c / p->groups, ocg = p->out_c / p->groups;
    for (int b = 0; b < n; b++)
        for (int oc = 0; oc < p->out_c; oc++)
            for (int oy = 0; oy < p->out_h; oy++)
                for (int ox = 0; ox < p->out_w; ox++) {
                    double s = bias ? bias[oc] : 0, as = bias ? fabs(bias[oc]) : 0;
                    int g = oc / ocg;
                    for (int c = 0; c < cg; c++)
                        for (int ky = 0; ky < p->k_h; ky++)
                            for (int kx = 0; kx < p->k_w; kx++) {
                                int iy = oy * p->stride_h - p->pad_h + ky * p->dil_h;
                                int ix = ox * p->stride_w - p->pad_w + kx * p->dil_w;
                                if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w)
                                    continue;
                                double xv = x[(((size_t)b * p->in_c + g * cg + c) * p->in_h + iy) *
                                                  p->in_w + ix];
                                double wv = w[(((size_t)oc * cg + c) * p->k_h + ky) * p->k_w + kx];
                                s += xv * wv;
                                as += fabs(xv * wv);
                            }
                    size_t o = (((size_t)b * p->out_c + oc) * p->out_h + oy) * p->out_w + ox;
                    out[o] = s;
                    abssum[o] = as;
                }
}

typedef struct conv_case {
    int n, in_c, in_h, in_w, out_c, k_h, k_w, stride_h, stride_w, pad_h, pad_w, dil_h,
        dil_w, groups;
} conv_case;

static conv2d_params conv_params(const conv_case *c)
{
    conv2d_params p = {
        .in_c = c->in_c, .in_h = c->in_h, .in_w = c->in_w, .out_c = c->out_c,
        .k_h = c->k_h, .k_w = c->k_w, .stride_h = c->stride_h, .stride_w = c->stride_w,
        .pad_h = c->pad_h, .pad_w = c->pad_w, .dil_h = c->dil_h, .dil_w = c->dil_w,
        .groups = c->groups,
    };
    p.out_h = conv2d_out_size(c->in_h, c->k_h, c->stride_h, c->pad_h, c->dil_h);
    p.out_w = conv2d_out_size(c->in_w, c->k_w, c->stride_w, c->pad_w, c->dil_w);
    return p;
}

static void run_conv_case(rng *r, const conv_case *c, act_kind act, bool with_bias)
{
    conv2d_params p = conv_params(c);
    ck_assert_msg(p.out_h > 0 && p.out_w > 0, "bad test case");
    const size_t nx = (size_t)c->n * p.in_c * p.in_h * p.in_w;
    const size_t nw = (size_t)p.out_c * (p.in_c / p.groups) * p.k_h * p.k_w;
    const size_t ny = (size_t)c->n * p.out_c * p.out_h * p.out_w;
    float *x = rand_buf(r, nx), *w = rand_buf(r, nw);
    float *bias = with_bias ? rand_buf(r, (size_t)p.out_c) : NULL;
    float *y = rand_buf(r, ny); /* garbage in y: the kernel must overwrite all of it */
    /* the tight bound for this batch, allocated exactly: ASan sees any overrun */
    size_t ns = conv2d_scratch_floats_batch(&p, c->n);
    ck_assert_uint_le(ns, conv2d_scratch_floats(&p));
    float *scratch = ns ? rand_buf(r, ns) : NULL;
    double *want = malloc(sizeof(double) * ny), *scale = malloc(sizeof(double) * ny);
    ref_conv(&p, c->n, x, w, bias, want, scale);
    const float alpha = act_alpha_for(act);
    for (size_t i = 0; i < ny; i++)
        want[i] = ref_act(act, alpha, want[i]);

    conv2d_forward(&p, c->n, x, w, bias, act, alpha, y, scratch);
    long bad = first_mismatch(y, want, scale, ny);
    ck_assert_msg(bad < 0,
                  "conv n=%d %dx%dx%d -> %d k%dx%d s%d,%d p%d,%d d%d,%d g%d act %d bias %d: "
                  "y[%ld]=%.8g want %.8g",
                  c->n, c->in_c, c->in_h, c->in_w, c->out_c, c->k_h, c->k_w, c->stride_h,
                  c->stride_w, c->pad_h, c->pad_w, c->dil_h, c->dil_w, c->groups, act,
                  with_bias, bad, bad < 0 ? 0 : y[bad], bad < 0 ? 0 : want[bad]);
    free(x), free(w), free(bias), free(y), free(scratch), free(want), free(scale);
}

START_TEST(test_conv_out_size)
{
    ck_assert_int_eq(conv2d_out_size(224, 7, 2, 3, 1), 112);
    ck_assert_int_eq(conv2d_out_size(56, 3, 1, 1, 1), 56);
    ck_assert_int_eq(conv2d_out_size(56, 1, 2, 0, 1), 28);
    ck_assert_int_eq(conv2d_out_size(5, 3, 1, 0, 2), 1);
    ck_assert_int_eq(conv2d_out_size(10, 3, 3, 2, 2), 4);
    ck_assert_int_le(conv2d_out_size(4, 3, 1, 0, 2), 0);
    ck_assert_int_le(conv2d_out_size(2, 5, 2, 0, 1), 0);
}
END_TEST

/* Hand-picked shapes: each names the path or edge it exercises. */
static const conv_case conv_cases[] = {
    /* n  ic  h   w  oc kh kw sh sw ph pw dh dw g */
    {1, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1},       /* plain 3x3 same */
    {3, 3, 9, 7, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1},       /* stride 2, odd sizes, batch 3 */
    {1, 4, 11, 13, 6, 3, 3, 3, 3, 2, 2, 1, 1, 1},     /* stride 3, pad 2 */
    {1, 4, 10, 10, 4, 3, 3, 1, 1, 2, 2, 2, 2, 1},     /* dilation 2 */
    {1, 2, 9, 12, 3, 2, 5, 1, 2, 0, 2, 1, 1, 1},      /* non-square kernel, mixed stride */
    {1, 3, 16, 16, 8, 7, 7, 2, 2, 3, 3, 1, 1, 1},     /* ResNet stem shape */
    {1, 3, 20, 45, 8, 7, 7, 2, 2, 3, 3, 1, 1, 1},     /* stem, rows wide enough for vectors */
    {1, 4, 9, 37, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1},      /* same width: one-block im2col copy */
    {2, 8, 6, 6, 16, 1, 1, 1, 1, 0, 0, 1, 1, 1},      /* 1x1 fast path */
    {2, 8, 6, 6, 16, 1, 1, 1, 1, 0, 0, 1, 1, 2},      /* 1x1 fast path, groups 2 */
    {1, 8, 7, 7, 4, 1, 1, 2, 2, 0, 0, 1, 1, 1},       /* 1x1 stride 2: needs im2col */
    {1, 6, 7, 7, 6, 1, 1, 1, 1, 1, 1, 1, 1, 1},       /* 1x1 with padding: needs im2col */
    {3, 4, 8, 9, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2},       /* groups 2 */
    {1, 6, 9, 9, 9, 3, 1, 2, 1, 1, 0, 1, 1, 3},       /* groups 3, 3x1 */
    {1, 5, 19, 21, 5, 3, 3, 1, 1, 1, 1, 1, 1, 5},     /* depthwise, wide rows (vector body) */
    {3, 4, 17, 17, 4, 3, 3, 2, 2, 1, 1, 1, 1, 4},     /* depthwise stride 2 */
    {1, 4, 15, 40, 4, 3, 3, 2, 2, 1, 1, 1, 1, 4},     /* depthwise stride 2, vector body */
    {1, 4, 15, 41, 4, 3, 3, 2, 2, 2, 2, 2, 2, 4},     /* depthwise stride 2, dilated */
    {1, 3, 20, 35, 3, 5, 5, 1, 1, 2, 2, 1, 1, 3},     /* depthwise 5x5 */
    {1, 3, 20, 35, 3, 3, 3, 1, 1, 2, 2, 2, 2, 3},     /* depthwise dilated */
    {1, 3, 20, 35, 3, 3, 5, 3, 2, 0, 1, 1, 2, 3},     /* depthwise anisotropic everything */
    {1, 3, 12, 12, 6, 3, 3, 1, 1, 1, 1, 1, 1, 3},     /* depth multiplier 2 */
    {1, 2, 3, 3, 2, 3, 3, 1, 1, 2, 2, 1, 1, 2},       /* depthwise, padding > interior */
    {1, 2, 2, 40, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1},      /* 1-row image */
    {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1},       /* 1x1x1 */
    {1, 2, 5, 5, 3, 5, 5, 1, 1, 0, 0, 1, 1, 1},       /* kernel = image: 1x1 output */
    {1, 16, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1},   /* K = 144, GEMM blocking */
    {1, 32, 40, 40, 32, 3, 3, 1, 1, 1, 1, 1, 1, 32},  /* MobileNet-like depthwise */
    {2, 64, 40, 40, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1},    /* col > 1 MiB: im2col in row blocks */
    {1, 32, 70, 70, 4, 5, 5, 2, 2, 2, 2, 1, 1, 1},    /* row blocks, strided, last one short */
};

START_TEST(test_conv_cases)
{
    rng r = {3};
    const size_t nc = sizeof conv_cases / sizeof conv_cases[0];
    for (size_t i = 0; i < nc; i++)
        for (size_t k = 0; k < N_ACTS; k++)
            run_conv_case(&r, &conv_cases[i], all_acts[k], (i + k) % 3 != 0);
}
END_TEST

START_TEST(test_conv_random)
{
    /* Random shapes over every knob at once, to reach combinations no list names. */
    rng r = {4};
    int run = 0;
    while (run < 300) {
        conv_case c = {
            .n = rng_int(&r, 1, 3), .k_h = rng_int(&r, 1, 4), .k_w = rng_int(&r, 1, 4),
            .stride_h = rng_int(&r, 1, 3), .stride_w = rng_int(&r, 1, 3),
            .pad_h = rng_int(&r, 0, 2), .pad_w = rng_int(&r, 0, 2),
            .dil_h = rng_int(&r, 1, 2), .dil_w = rng_int(&r, 1, 2),
            .in_h = rng_int(&r, 1, 14), .in_w = rng_int(&r, 1, 30),
        };
        int mode = rng_int(&r, 0, 3);
        int g = mode == 0 ? 1 : mode == 1 ? 2 : mode == 2 ? 3 : rng_int(&r, 1, 6);
        c.groups = g;
        if (mode == 3) { /* depthwise, sometimes with a multiplier */
            c.in_c = g;
            c.out_c = g * rng_int(&r, 1, 2);
        } else {
            c.in_c = g * rng_int(&r, 1, 4);
            c.out_c = g * rng_int(&r, 1, 4);
        }
        if (rng_int(&r, 0, 4) == 0) { /* steer some into the 1x1 direct path */
            c.k_h = c.k_w = 1;
            c.stride_h = c.stride_w = 1;
            c.pad_h = c.pad_w = 0;
        }
        conv2d_params p = conv_params(&c);
        if (p.out_h <= 0 || p.out_w <= 0)
            continue;
        run_conv_case(&r, &c, all_acts[run % N_ACTS], run % 4 != 0);
        run++;
    }
}
END_TEST

/* Small planes with n > 1 go through the batched path: several images' col
 * matrices side by side in one GEMM, then stored back per image.  Batches of 1, 2, 5
 * and 64 images (64 spans more than one GEMM block for every shape here, and 5 ends
 * on a short block for the last), odd sizes, strides, groups, 1x1 (plane copy) and
 * 1x1 strided (im2col). */
START_TEST(test_conv_batched)
{
    static const conv_case shapes[] = {
        /* n  ic  h   w  oc kh kw sh sw ph pw dh dw g */
        {0, 8, 9, 7, 12, 3, 3, 1, 1, 1, 1, 1, 1, 1},    /* 3x3 same, odd plane */
        {0, 8, 7, 9, 6, 3, 3, 2, 2, 1, 1, 1, 1, 2},     /* stride 2, groups 2 */
        {0, 10, 11, 5, 9, 3, 2, 1, 2, 1, 0, 2, 1, 1},   /* dilated, anisotropic */
        {0, 16, 5, 7, 8, 1, 1, 1, 1, 0, 0, 1, 1, 1},    /* 1x1: input planes copied */
        {0, 16, 5, 7, 8, 1, 1, 1, 1, 0, 0, 1, 1, 2},    /* 1x1, groups 2 */
        {0, 12, 9, 9, 10, 1, 1, 2, 2, 0, 0, 1, 1, 1},   /* 1x1 stride 2: im2col */
        {0, 64, 7, 7, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},   /* K = 576, ResNet layer4-like */
        {0, 64, 20, 20, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* block capped by bytes: 4 images */
    };
    static const int batches[] = {1, 2, 5, 64};
    rng r = {9};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
            conv_case c = shapes[s];
            c.n = batches[b];
            if (c.n == 64 && c.in_c * c.in_h * c.in_w > 4000)
                c.n = 9; /* keep the double reference quick */
            run_conv_case(&r, &c, all_acts[(s + b) % N_ACTS], (s + b) % 3 != 0);
            run_conv_case(&r, &c, (s + b) % 2 ? ACT_RELU : ACT_NONE, true);
        }
}
END_TEST

/* Tiny K (in_c/g * kh * kw <= 32, a first layer on 1-3 channels) runs the direct
 * register-blocked loop: output channels in tiles of 8 (so 5, 13 and 32 channels
 * cover a short tile, two tiles and an exact fit), rows narrower than 8, exactly 8
 * and wide, strides 1 and 2, padding, dilation, groups. */
START_TEST(test_conv_direct)
{
    static const conv_case shapes[] = {
        /* n  ic  h   w  oc kh kw sh sw ph pw dh dw g */
        {3, 1, 28, 28, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1},  /* the Fashion CNN's conv1 */
        {2, 1, 9, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* rows narrower than 8 */
        {2, 1, 8, 8, 13, 3, 3, 1, 1, 1, 1, 1, 1, 1},    /* rows of exactly 8 */
        {1, 3, 17, 23, 13, 3, 3, 2, 2, 1, 1, 1, 1, 1},  /* stride 2, K = 27 */
        {1, 3, 15, 40, 8, 3, 3, 2, 2, 0, 0, 1, 1, 1},   /* stride 2 unpadded, wide */
        {2, 1, 20, 19, 7, 5, 5, 1, 1, 2, 2, 1, 1, 1},   /* 5x5, K = 25 */
        {1, 2, 16, 18, 9, 3, 3, 1, 1, 2, 2, 2, 2, 1},   /* dilation 2 */
        {1, 1, 12, 30, 6, 3, 3, 2, 1, 0, 1, 1, 1, 1},   /* mixed stride */
        {2, 4, 11, 13, 10, 3, 3, 1, 1, 1, 1, 1, 1, 2},  /* groups 2, K = 18 */
        {1, 2, 6, 6, 4, 1, 5, 1, 2, 0, 2, 1, 1, 1},     /* 1x5 */
        {1, 1, 3, 3, 3, 3, 3, 1, 1, 0, 0, 1, 1, 1},     /* 1x1 output */
    };
    rng r = {10};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t k = 0; k < N_ACTS; k++)
            run_conv_case(&r, &shapes[s], all_acts[k], (s + k) % 3 != 0);
}
END_TEST

START_TEST(test_conv_scratch)
{
    conv_case pw = {1, 8, 6, 6, 16, 1, 1, 1, 1, 0, 0, 1, 1, 1};
    conv_case dw = {1, 8, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8};
    conv_case gen = {1, 8, 6, 6, 16, 3, 3, 2, 2, 1, 1, 1, 1, 2};
    conv2d_params p = conv_params(&pw);
    /* 1x1 at batch 1 reads the input in place; batched, it needs a block */
    ck_assert_uint_eq(conv2d_scratch_floats_batch(&p, 1), 0);
    ck_assert_uint_gt(conv2d_scratch_floats_batch(&p, 2), 0);
    p = conv_params(&dw);
    ck_assert_uint_eq(conv2d_scratch_floats(&p), 0);
    /* one image-group: 4 channels x 9 taps x 3x3 outputs, and the zero-padded copy
     * it is made from: 4 channels x (6+2) rows x a pitch of 18 (what eight outputs
     * at stride 2 read) */
    p = conv_params(&gen);
    ck_assert_uint_eq(conv2d_scratch_floats_batch(&p, 1), 4 * 9 * 3 * 3 + 4 * 8 * 18);
    /* batched: (K + out_c/g) x imgs*HW, growing with the batch up to a cap, and the
     * padded copy */
    ck_assert_uint_eq(conv2d_scratch_floats_batch(&p, 3), 3 * 9 * (4 * 9 + 8) + 4 * 8 * 18);
    ck_assert_uint_eq(conv2d_scratch_floats_batch(&p, 100000), conv2d_scratch_floats(&p));
    ck_assert(conv2d_scratch_floats(&p) <= (8u << 20) / sizeof(float));
    /* a large layer gets a block of whole output rows, not the whole col matrix */
    conv_case big = {1, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    p = conv_params(&big);
    size_t whole = (size_t)64 * 9 * 56 * 56, got = conv2d_scratch_floats(&p);
    ck_assert(got < whole && got >= (size_t)64 * 9 * 56 && got % ((size_t)64 * 9 * 56) == 0);
}
END_TEST

/* ---- transposed convolution ------------------------------------------------------ */

/* Direct scatter in double, straight from PyTorch's definition: input (ic, iy, ix)
 * times w[ic][o][ky][kx] lands on output (g*ocg + o, iy*s - p + ky*d, ix*s - p + kx*d)
 * when that is inside the output (output_padding only makes the output longer). */
static void ref_deconv(const conv_transpose2d_params *p, int n, const float *x, const float *w,
                       const float *bias, double *out, double *abssum)
{
    const int cg = p->in_c / p->groups, ocg = p->out_c / p->groups;
    const size_t plane = (size_t)p->out_h * p->out_w;
    for (int b = 0; b < n; b++)
        for (int oc = 0; oc < p->out_c; oc++)
            for (size_t i = 0; i < plane; i++) {
                size_t o = ((size_t)b * p->out_c + oc) * plane + i;
                out[o] = bias ? bias[oc] : 0;
                abssum[o] = bias ? fabs(bias[oc]) : 0;
            }
    for (int b = 0; b < n; b++)
        for (int ic = 0; ic < p->in_c; ic++)
            for (int iy = 0; iy < p->in_h; iy++)
                for (int ix = 0; ix < p->in_w; ix++) {
                    double xv = x[(((size_t)b * p->in_c + ic) * p->in_h + iy) * p->in_w + ix];
                    for (int o = 0; o < ocg; o++)
                        for (int ky = 0; ky < p->k_h; ky++)
                            for (int kx = 0; kx < p->k_w; kx++) {
                                int oy = iy * p->stride_h - p->pad_h + ky * p->dil_h;
                                int ox = ix * p->stride_w - p->pad_w + kx * p->dil_w;
                                if (oy < 0 || oy >= p->out_h || ox < 0 || ox >= p->out_w)
                                    continue;
                                double wv = w[(((size_t)ic * ocg + o) * p->k_h + ky) * p->k_w + kx];
                                int oc = ic / cg * ocg + o;
                                size_t at = ((size_t)b * p->out_c + oc) * plane +
                                            (size_t)oy * p->out_w + ox;
                                out[at] += xv * wv;
                                abssum[at] += fabs(xv * wv);
                            }
                }
}

typedef struct deconv_case {
    int n, in_c, in_h, in_w, out_c, k_h, k_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        op_h, op_w, groups;
} deconv_case;

static conv_transpose2d_params deconv_params(const deconv_case *c)
{
    conv_transpose2d_params p = {
        .in_c = c->in_c, .in_h = c->in_h, .in_w = c->in_w, .out_c = c->out_c,
        .k_h = c->k_h, .k_w = c->k_w, .stride_h = c->stride_h, .stride_w = c->stride_w,
        .pad_h = c->pad_h, .pad_w = c->pad_w, .dil_h = c->dil_h, .dil_w = c->dil_w,
        .out_pad_h = c->op_h, .out_pad_w = c->op_w, .groups = c->groups,
    };
    p.out_h = conv_transpose2d_out_size(c->in_h, c->k_h, c->stride_h, c->pad_h, c->dil_h, c->op_h);
    p.out_w = conv_transpose2d_out_size(c->in_w, c->k_w, c->stride_w, c->pad_w, c->dil_w, c->op_w);
    return p;
}

static void run_deconv_case(rng *r, const deconv_case *c, act_kind act, bool with_bias)
{
    conv_transpose2d_params p = deconv_params(c);
    ck_assert_msg(p.out_h > 0 && p.out_w > 0, "bad test case");
    const size_t nx = (size_t)c->n * p.in_c * p.in_h * p.in_w;
    const size_t nw = (size_t)p.in_c * (p.out_c / p.groups) * p.k_h * p.k_w;
    const size_t ny = (size_t)c->n * p.out_c * p.out_h * p.out_w;
    float *x = rand_buf(r, nx), *w = rand_buf(r, nw);
    float *bias = with_bias ? rand_buf(r, (size_t)p.out_c) : NULL;
    float *y = rand_buf(r, ny); /* garbage in y: the kernel must overwrite all of it */
    /* the bound for exactly this batch, allocated exactly: ASan sees any overrun */
    size_t ns = conv_transpose2d_scratch_floats(&p, c->n);
    float *scratch = ns ? rand_buf(r, ns) : NULL;
    double *want = malloc(sizeof(double) * ny), *scale = malloc(sizeof(double) * ny);
    ref_deconv(&p, c->n, x, w, bias, want, scale);
    const float alpha = act_alpha_for(act);
    for (size_t i = 0; i < ny; i++)
        want[i] = ref_act(act, alpha, want[i]);

    conv_transpose2d_forward(&p, c->n, x, w, bias, act, alpha, y, scratch);
    long bad = first_mismatch(y, want, scale, ny);
    ck_assert_msg(bad < 0,
                  "deconv n=%d %dx%dx%d -> %dx%dx%d k%dx%d s%d,%d p%d,%d d%d,%d op%d,%d g%d "
                  "act %d bias %d: y[%ld]=%.8g want %.8g",
                  c->n, c->in_c, c->in_h, c->in_w, p.out_c, p.out_h, p.out_w, c->k_h, c->k_w,
                  c->stride_h, c->stride_w, c->pad_h, c->pad_w, c->dil_h, c->dil_w, c->op_h,
                  c->op_w, c->groups, act, with_bias, bad, bad < 0 ? 0 : y[bad],
                  bad < 0 ? 0 : want[bad]);
    free(x), free(w), free(bias), free(y), free(scratch), free(want), free(scale);
}

START_TEST(test_deconv_out_size)
{
    ck_assert_int_eq(conv_transpose2d_out_size(1, 4, 1, 0, 1, 0), 4);     /* DCGAN's first */
    ck_assert_int_eq(conv_transpose2d_out_size(4, 4, 2, 1, 1, 0), 8);
    ck_assert_int_eq(conv_transpose2d_out_size(14, 3, 2, 1, 1, 1), 28);   /* output_padding */
    ck_assert_int_eq(conv_transpose2d_out_size(5, 3, 2, 2, 2, 1), 10);    /* dilation */
    ck_assert_int_eq(conv_transpose2d_out_size(7, 1, 3, 0, 1, 2), 21);
    ck_assert_int_le(conv_transpose2d_out_size(1, 3, 1, 2, 1, 0), 0);     /* padding eats it */
    ck_assert_int_eq(conv_transpose2d_out_size(0, 3, 1, 0, 1, 0), 0);
    ck_assert_int_eq(conv_transpose2d_out_size(65536, 4096, 65536, 0, 4096, 0), INT_MAX);
}
END_TEST

/* Hand-picked shapes: the DCGAN layers, each knob alone, and the two GEMM
 * orientations (cols^T when out_c/g*kh*kw exceeds the block's pixels, else cols). */
static const deconv_case deconv_cases[] = {
    /* n  ic  h   w  oc kh kw sh sw ph pw dh dw oph opw g */
    {1, 16, 1, 1, 32, 4, 4, 1, 1, 0, 0, 1, 1, 0, 0, 1},    /* DCGAN first: 1x1 -> 4x4 */
    {3, 16, 1, 1, 32, 4, 4, 1, 1, 0, 0, 1, 1, 0, 0, 1},    /* the same batched: (N, in_c) rows */
    {1, 32, 4, 4, 16, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0, 1},    /* DCGAN middle: 4x4 -> 8x8 */
    {2, 8, 16, 16, 3, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0, 1},    /* DCGAN last: cols (R, pixels) */
    {1, 6, 7, 7, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1},      /* output_padding */
    {2, 6, 5, 6, 4, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 2},      /* dilation, groups, output_padding */
    {1, 6, 5, 4, 6, 3, 5, 1, 2, 1, 0, 1, 1, 0, 1, 3},      /* anisotropic, groups 3 */
    {1, 4, 3, 5, 4, 3, 3, 3, 3, 0, 1, 1, 1, 2, 0, 4},      /* stride 3, depthwise-like */
    {1, 3, 6, 9, 2, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1},      /* 1x1 kernel */
    {1, 3, 6, 9, 2, 2, 2, 2, 2, 0, 0, 1, 1, 0, 0, 1},      /* kernel = stride: no overlap */
    {1, 2, 8, 8, 3, 5, 5, 1, 1, 4, 4, 1, 1, 0, 0, 1},      /* padding k-1: a plain conv */
    {1, 5, 9, 3, 2, 7, 3, 1, 1, 5, 1, 1, 1, 0, 0, 1},      /* padding trims most taps */
    {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1},      /* 1x1x1 */
    {1, 2, 9, 1, 3, 3, 3, 2, 1, 1, 1, 1, 1, 0, 0, 1},      /* one-column input */
};

START_TEST(test_deconv_cases)
{
    rng r = {21};
    const size_t nc = sizeof deconv_cases / sizeof deconv_cases[0];
    for (size_t i = 0; i < nc; i++)
        for (size_t k = 0; k < N_ACTS; k++)
            run_deconv_case(&r, &deconv_cases[i], all_acts[k], (i + k) % 3 != 0);
}
END_TEST

START_TEST(test_deconv_random)
{
    /* Random shapes over every knob at once; output_padding < stride or dilation, as
     * PyTorch requires. */
    rng r = {22};
    int run = 0;
    while (run < 300) {
        deconv_case c = {
            .n = rng_int(&r, 1, 4), .k_h = rng_int(&r, 1, 5), .k_w = rng_int(&r, 1, 5),
            .stride_h = rng_int(&r, 1, 3), .stride_w = rng_int(&r, 1, 3),
            .pad_h = rng_int(&r, 0, 2), .pad_w = rng_int(&r, 0, 2),
            .dil_h = rng_int(&r, 1, 2), .dil_w = rng_int(&r, 1, 2),
            .in_h = rng_int(&r, 1, 9), .in_w = rng_int(&r, 1, 12),
        };
        int sh = c.stride_h > c.dil_h ? c.stride_h : c.dil_h;
        int sw = c.stride_w > c.dil_w ? c.stride_w : c.dil_w;
        c.op_h = rng_int(&r, 0, sh - 1);
        c.op_w = rng_int(&r, 0, sw - 1);
        c.groups = rng_int(&r, 1, 3);
        c.in_c = c.groups * rng_int(&r, 1, 4);
        c.out_c = c.groups * rng_int(&r, 1, 4);
        conv_transpose2d_params p = deconv_params(&c);
        if (p.out_h <= 0 || p.out_w <= 0)
            continue;
        run_deconv_case(&r, &c, all_acts[run % N_ACTS], run % 4 != 0);
        run++;
    }
}
END_TEST

/* Batches that span several GEMM blocks (the last one short), with the input
 * gathered (planes > 1x1) or read in place (1x1), and a plane too large for one
 * block, cut into blocks of input rows. */
START_TEST(test_deconv_batched)
{
    static const deconv_case shapes[] = {
        /* n  ic  h   w  oc kh kw sh sw ph pw dh dw oph opw g */
        {0, 24, 1, 1, 512, 4, 4, 1, 1, 0, 0, 1, 1, 0, 0, 1},  /* R = 8192: 128 images a block */
        {0, 16, 4, 4, 256, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0, 1},  /* gathered, 15 images a block */
        {0, 8, 6, 5, 64, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0, 2},    /* gathered, groups 2 */
        {0, 4, 16, 16, 3, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0, 1},   /* cols (R, pixels) */
    };
    static const int batches[] = {2, 5, 64, 200};
    rng r = {23};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
            deconv_case c = shapes[s];
            c.n = batches[b];
            run_deconv_case(&r, &c, all_acts[(s + b) % N_ACTS], (s + b) % 2 == 0);
        }
    /* R * HW = 1024 * 1280 floats > the 4 MiB block: 25 input rows a block, then 7 */
    deconv_case big = {2, 2, 32, 40, 64, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0, 1};
    run_deconv_case(&r, &big, ACT_RELU, true);
    /* and with the GEMM over cols (R, pixels): R = 3*16 */
    deconv_case wide = {1, 3, 200, 300, 3, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0, 1};
    run_deconv_case(&r, &wide, ACT_TANH, true);
}
END_TEST

START_TEST(test_deconv_scratch)
{
    /* a 1x1 plane reads the input in place: scratch is cols alone, images x R */
    deconv_case one = {1, 8, 1, 1, 16, 4, 4, 1, 1, 0, 0, 1, 1, 0, 0, 1};
    conv_transpose2d_params p = deconv_params(&one);
    ck_assert_uint_eq(conv_transpose2d_scratch_floats(&p, 1), 16 * 16);
    ck_assert_uint_eq(conv_transpose2d_scratch_floats(&p, 5), 5 * 16 * 16);
    /* larger planes: one image needs cols only; several also the gathered input */
    deconv_case mid = {1, 6, 4, 3, 8, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0, 2};
    p = deconv_params(&mid);
    ck_assert_uint_eq(conv_transpose2d_scratch_floats(&p, 1), 12 * (4 * 9));
    ck_assert_uint_eq(conv_transpose2d_scratch_floats(&p, 3), 3 * 12 * (4 * 9 + 3));
    /* never more than a block of 4 MiB, however large the batch; monotone in it */
    const size_t cap = (4u << 20) / sizeof(float);
    size_t prev = 0;
    for (int n = 1; n <= 1 << 16; n *= 2) {
        size_t s = conv_transpose2d_scratch_floats(&p, n);
        ck_assert(s >= prev && s <= cap);
        prev = s;
    }
    /* one image larger than a block: whole input rows, each R * in_w */
    deconv_case big = {1, 2, 32, 40, 64, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0, 1};
    p = deconv_params(&big);
    ck_assert_uint_eq(conv_transpose2d_scratch_floats(&p, 8), (size_t)25 * 40 * 1024);
}
END_TEST

START_TEST(test_batchnorm_fold_transposed)
{
    /* conv-transpose then BN (reference, unfolded) against the conv-transpose with BN
     * folded into it: the scale follows the output channel through (in, out/g, kh, kw) */
    rng r = {24};
    deconv_case c = {2, 6, 3, 4, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0, 2};
    conv_transpose2d_params p = deconv_params(&c);
    const int oc = p.out_c;
    const size_t plane = (size_t)p.out_h * p.out_w, ny = 2 * oc * plane;
    const size_t nw = (size_t)p.in_c * (oc / 2) * 9;
    float *x = rand_buf(&r, 2 * 6 * 3 * 4), *w = rand_buf(&r, nw), *bias = rand_buf(&r, oc);
    float gamma[4], beta[4], mean[4], var[4];
    for (int i = 0; i < oc; i++) {
        gamma[i] = 0.5f + (float)i * 0.3f;
        beta[i] = rng_float(&r);
        mean[i] = rng_float(&r);
        var[i] = 0.4f + (float)i;
    }
    double *want = malloc(sizeof(double) * ny), *scale = malloc(sizeof(double) * ny);
    ref_deconv(&p, 2, x, w, bias, want, scale);
    for (size_t i = 0; i < ny; i++) {
        int ch = (int)(i / plane % (size_t)oc);
        double s = gamma[ch] / sqrt((double)var[ch] + 1e-5);
        want[i] = (want[i] - mean[ch]) * s + beta[ch];
        scale[i] = scale[i] * fabs(s) + fabs(mean[ch] * s) + fabs(beta[ch]);
    }
    batchnorm_fold_transposed(p.in_c, oc, p.groups, 9, w, bias, gamma, beta, mean, var, 1e-5f);
    float *y = malloc(sizeof(float) * ny);
    float *scratch = malloc(sizeof(float) * conv_transpose2d_scratch_floats(&p, 2));
    conv_transpose2d_forward(&p, 2, x, w, bias, ACT_NONE, 0.0f, y, scratch);
    ck_assert_int_lt(first_mismatch(y, want, scale, ny), 0);
    free(x), free(w), free(bias), free(want), free(scale), free(y), free(scratch);
}
END_TEST

/* ---- batch norm ------------------------------------------------------------------ */

START_TEST(test_batchnorm_fold)
{
    /* conv then BN (reference, unfolded) against the conv with BN folded into it,
     * with and without an original conv bias. */
    rng r = {5};
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        conv_case c = {2, 4, 7, 9, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1};
        conv2d_params p = conv_params(&c);
        const int oc = p.out_c, per_out = p.in_c * 9;
        const size_t spatial = (size_t)p.out_h * p.out_w, ny = 2 * oc * spatial;
        float *x = rand_buf(&r, 2 * 4 * 7 * 9), *w = rand_buf(&r, (size_t)oc * per_out);
        float *bias = rand_buf(&r, oc), gamma[6], beta[6], mean[6], var[6];
        if (!with_bias)
            memset(bias, 0, sizeof(float) * oc);
        for (int i = 0; i < oc; i++) {
            gamma[i] = 1.5f * rng_float(&r), beta[i] = rng_float(&r);
            mean[i] = 0.3f * rng_float(&r), var[i] = 0.5f + rng_float(&r) * 0.4f;
        }
        const float eps = 1e-5f;
        double *want = malloc(sizeof(double) * ny), *scale = malloc(sizeof(double) * ny);
        ref_conv(&p, 2, x, w, bias, want, scale);
        for (size_t i = 0; i < ny; i++) {
            int ch = (int)(i / spatial % oc);
            double s = gamma[ch] / sqrt((double)var[ch] + eps);
            want[i] = (want[i] - mean[ch]) * s + beta[ch];
            scale[i] = scale[i] * fabs(s) + fabs(mean[ch] * s) + fabs(beta[ch]);
        }
        batchnorm_fold(oc, per_out, w, bias, gamma, beta, mean, var, eps);
        float *y = malloc(sizeof(float) * ny), *scratch = malloc(sizeof(float) * conv2d_scratch_floats(&p));
        conv2d_forward(&p, 2, x, w, bias, ACT_NONE, 0, y, scratch);
        long bad = first_mismatch(y, want, scale, ny);
        ck_assert_msg(bad < 0, "bn fold bias=%d: y[%ld]=%g want %g", with_bias, bad,
                      bad < 0 ? 0 : y[bad], bad < 0 ? 0 : want[bad]);
        free(x), free(w), free(bias), free(want), free(scale), free(y), free(scratch);
    }
}
END_TEST

START_TEST(test_channel_affine)
{
    rng r = {6};
    enum { N = 2, C = 3, S = 11 };
    float *x = rand_buf(&r, N * C * S), x0[N * C * S];
    float scale[C] = {2.0f, -0.5f, 0.0f}, shift[C] = {1.0f, 0.25f, -3.0f};
    memcpy(x0, x, sizeof x0);
    channel_affine(N, C, S, scale, shift, x);
    for (int i = 0; i < N * C * S; i++) {
        int ch = i / S % C;
        ck_assert_float_eq_tol(x[i], x0[i] * scale[ch] + shift[ch], 1e-6f);
    }
    free(x);
}
END_TEST

/* ---- linear ---------------------------------------------------------------------- */

/* want = act(x w^T + b) in double, and scale = the sum of the terms' magnitudes (the
 * tolerance's yardstick), for x (n,in), w (out,in). */
static void linear_reference(int n, int in, int out, const float *x, const float *w,
                             const float *b, act_kind act, float alpha, double *want,
                             double *scale)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double sum = b ? b[o] : 0, as = b ? fabs(b[o]) : 0;
            for (int q = 0; q < in; q++) {
                sum += (double)x[i * in + q] * w[o * in + q];
                as += fabs((double)x[i * in + q] * w[o * in + q]);
            }
            want[i * out + o] = ref_act(act, alpha, sum);
            scale[i * out + o] = as;
        }
}

/* Every activation, with and without bias, on each (n, in, out) of shapes, through
 * linear_forward or (packed) linear_pack + linear_forward_packed. */
static void check_linear_shapes(rng *r, const int (*shapes)[3], size_t count, bool packed)
{
    for (size_t s = 0; s < count; s++)
        for (size_t k = 0; k < N_ACTS; k++) {
            const int n = shapes[s][0], in = shapes[s][1], out = shapes[s][2];
            const bool with_bias = (s + k) % 2;
            float *x = rand_buf(r, (size_t)n * in), *w = rand_buf(r, (size_t)out * in);
            float *b = with_bias ? rand_buf(r, out) : NULL, *y = rand_buf(r, (size_t)n * out);
            double *want = malloc((size_t)n * out * sizeof *want);
            double *scale = malloc((size_t)n * out * sizeof *scale);
            ck_assert(want && scale);
            const float alpha = act_alpha_for(all_acts[k]);
            linear_reference(n, in, out, x, w, b, all_acts[k], alpha, want, scale);
            if (packed) {
                const size_t np = linear_packed_floats(out, in);
                ck_assert_uint_eq(np, (size_t)((out + 15) / 16) * 16 * (size_t)in);
                float *panels = rand_buf(r, np); /* garbage first: packing must fill it all */
                linear_pack(out, in, w, panels);
                memset(w, 0xff, (size_t)out * in * sizeof *w); /* never read after packing */
                linear_forward_packed(NULL, n, in, out, x, panels, b, all_acts[k], alpha, y);
                free(panels);
            } else {
                linear_forward(NULL, n, in, out, x, w, b, all_acts[k], alpha, y);
            }
            long bad = first_mismatch(y, want, scale, (size_t)n * out);
            ck_assert_msg(bad < 0, "%slinear %dx%d->%d act %d: y[%ld]=%g want %g",
                          packed ? "packed " : "", n, in, out, all_acts[k], bad,
                          bad < 0 ? 0 : y[bad], bad < 0 ? 0 : want[bad]);
            free(x), free(w), free(b), free(y), free(want), free(scale);
        }
}

START_TEST(test_linear)
{
    rng r = {7};
    /* rows on both sides of the few-rows kernel's limit (16), every remainder of its
     * 4-row and 3-output blocks, `in` with and without a tail past 8 */
    static const int shapes[][3] = {{1, 64, 10}, {3, 17, 5}, {1, 9, 1}, {4, 1, 3}, {2, 128, 33},
                                    {16, 40, 7}, {17, 24, 8}, {7, 19, 4}, {33, 72, 3},
                                    {5, 8, 2}};
    check_linear_shapes(&r, shapes, sizeof shapes / sizeof shapes[0], false);
}
END_TEST

/* The packed-weight path: rows on both sides of the 6-row tile and the 192-row block,
 * depths on both sides of the 256 slice, widths with a partial last panel of 16 and
 * past a group of 8 panels. */
START_TEST(test_linear_packed)
{
    rng r = {11};
    static const int shapes[][3] = {{1, 64, 10},  {6, 256, 16}, {7, 257, 17}, {13, 9, 1},
                                    {5, 1, 40},   {12, 300, 130}, {200, 33, 33},
                                    {193, 512, 48}, {2, 600, 3}};
    check_linear_shapes(&r, shapes, sizeof shapes / sizeof shapes[0], true);
    ck_assert_uint_eq(linear_packed_floats(0, 5), 0);
    ck_assert_uint_eq(linear_packed_floats(5, 0), 0);
}
END_TEST

/* ---- pooling ----------------------------------------------------------------------- */

START_TEST(test_pool_out_size)
{
    /* (in, k, stride, pad, ceil_mode) -> out, from torch.nn.functional.max_pool2d */
    static const int t[][6] = {
        {5, 2, 2, 0, 1, 3},  {5, 2, 2, 0, 0, 2},   {6, 3, 2, 1, 1, 4},     {6, 3, 2, 1, 0, 3},
        {7, 3, 2, 1, 1, 4},  {8, 3, 3, 1, 1, 3},   {4, 2, 3, 1, 1, 2},     {10, 3, 2, 0, 1, 5},
        {112, 3, 2, 1, 0, 56}, {112, 3, 2, 1, 1, 57}, {5, 3, 3, 1, 1, 2}, {6, 2, 4, 1, 1, 2},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        ck_assert_msg(pool2d_out_size(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4]) == t[i][5],
                      "pool out size case %zu: got %d want %d", i,
                      pool2d_out_size(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4]), t[i][5]);
}
END_TEST

static pool2d_params pool_params(int c, int h, int w, int k, int s, int pad, int ceil_mode,
                                 int include_pad)
{
    pool2d_params p = {.c = c, .in_h = h, .in_w = w, .k_h = k, .k_w = k, .stride_h = s,
                       .stride_w = s, .pad_h = pad, .pad_w = pad,
                       .count_include_pad = include_pad};
    p.out_h = pool2d_out_size(h, k, s, pad, ceil_mode);
    p.out_w = pool2d_out_size(w, k, s, pad, ceil_mode);
    return p;
}

static void expect_plane(const float *got, const float *want, int n, const char *what)
{
    for (int i = 0; i < n; i++)
        ck_assert_msg(fabsf(got[i] - want[i]) <= 1e-5f * (1 + fabsf(want[i])),
                      "%s: [%d] = %.8g, PyTorch gives %.8g", what, i, got[i], want[i]);
}

START_TEST(test_pool_pytorch_values)
{
    /* x = 1..25 as a 5x5 plane (6x6: 1..36); expected values printed by PyTorch 1.13. */
    float x5[25], x6[36], y[16];
    for (int i = 0; i < 25; i++)
        x5[i] = -(float)(i + 1);
    pool2d_params p = pool_params(1, 5, 5, 2, 2, 0, 1, 1);
    maxpool2d_forward(&p, 1, x5, y);
    static const float max_ceil[] = {-1, -3, -5, -11, -13, -15, -21, -23, -25};
    expect_plane(y, max_ceil, 9, "max_pool2d(-x, 2, 2, ceil_mode=True)");

    for (int i = 0; i < 25; i++)
        x5[i] = (float)(i + 1);
    for (int i = 0; i < 36; i++)
        x6[i] = (float)(i + 1);
    p = pool_params(1, 5, 5, 3, 2, 1, 1, 1);
    ck_assert_int_eq(p.out_h, 3);
    avgpool2d_forward(&p, 1, x5, y);
    static const float avg_incl[] = {1.7777778f, 3.6666667f, 3.1111112f, 7.6666665f, 13.0f,
                                     9.666667f,  8.444445f,  13.666667f, 9.777778f};
    expect_plane(y, avg_incl, 9, "avg_pool2d(x, 3, 2, 1, ceil, count_include_pad=True)");

    p.count_include_pad = 0;
    avgpool2d_forward(&p, 1, x5, y);
    static const float avg_excl[] = {4.0f, 5.5f, 7.0f, 11.5f, 13.0f, 14.5f, 19.0f, 20.5f, 22.0f};
    expect_plane(y, avg_excl, 9, "avg_pool2d(x, 3, 2, 1, ceil, count_include_pad=False)");

    /* ceil_mode window hanging past the input with no padding: PyTorch divides by
     * the clipped window (1 column), not by k*k */
    p = pool_params(1, 5, 5, 2, 2, 0, 1, 1);
    avgpool2d_forward(&p, 1, x5, y);
    static const float avg_k2[] = {4.0f, 6.0f, 7.5f, 14.0f, 16.0f, 17.5f, 21.5f, 23.5f, 25.0f};
    expect_plane(y, avg_k2, 9, "avg_pool2d(x, 2, 2, 0, ceil, count_include_pad=True)");

    /* the last window reaches into the right padding: pool_size counts the padding
     * column but not the part beyond it */
    p = pool_params(1, 6, 6, 3, 2, 1, 1, 1);
    ck_assert_int_eq(p.out_h, 4);
    avgpool2d_forward(&p, 1, x6, y);
    static const float avg6[] = {2.0f,  4.0f,  5.3333335f, 3.0f, 9.0f,  15.0f, 17.0f, 9.0f,
                                 17.0f, 27.0f, 29.0f,      15.0f, 10.5f, 16.5f, 17.5f, 9.0f};
    expect_plane(y, avg6, 16, "avg_pool2d(6x6, 3, 2, 1, ceil, count_include_pad=True)");
}
END_TEST

/* Naive pooling: walks the whole padded window and tests each position. */
static void ref_pool(const pool2d_params *p, int n, const float *x, bool is_max, double *out)
{
    for (int pl = 0; pl < n * p->c; pl++)
        for (int oy = 0; oy < p->out_h; oy++)
            for (int ox = 0; ox < p->out_w; ox++) {
                double m = -INFINITY, s = 0;
                int real = 0, padded = 0;
                for (int ky = 0; ky < p->k_h; ky++)
                    for (int kx = 0; kx < p->k_w; kx++) {
                        int iy = oy * p->stride_h - p->pad_h + ky;
                        int ix = ox * p->stride_w - p->pad_w + kx;
                        if (iy < p->in_h + p->pad_h && ix < p->in_w + p->pad_w)
                            padded++;
                        if (iy < 0 || ix < 0 || iy >= p->in_h || ix >= p->in_w)
                            continue;
                        double v = x[((size_t)pl * p->in_h + iy) * p->in_w + ix];
                        m = v > m ? v : m;
                        s += v;
                        real++;
                    }
                double avg = real == 0 ? 0 : s / (p->count_include_pad ? padded : real);
                out[((size_t)pl * p->out_h + oy) * p->out_w + ox] = is_max ? m : avg;
            }
}

START_TEST(test_pool_random)
{
    rng r = {8};
    for (int t = 0; t < 400; t++) {
        const int k = rng_int(&r, 1, 4), s = rng_int(&r, 1, 3), pad = rng_int(&r, 0, k / 2);
        const int n = rng_int(&r, 1, 2), c = rng_int(&r, 1, 3);
        const int h = rng_int(&r, k, 13), w = rng_int(&r, k, 13);
        pool2d_params p = pool_params(c, h, w, k, s, pad, t % 2, (t / 2) % 2);
        const size_t nx = (size_t)n * c * h * w, ny = (size_t)n * c * p.out_h * p.out_w;
        float *x = rand_buf(&r, nx), *y = malloc(sizeof(float) * ny);
        double *want = malloc(sizeof(double) * ny);
        for (int is_max = 0; is_max < 2; is_max++) {
            ref_pool(&p, n, x, is_max, want);
            if (is_max)
                maxpool2d_forward(&p, n, x, y);
            else
                avgpool2d_forward(&p, n, x, y);
            long bad = first_mismatch(y, want, NULL, ny);
            ck_assert_msg(bad < 0,
                          "%s pool %dx%d k%d s%d p%d ceil %d incl %d: y[%ld]=%g want %g",
                          is_max ? "max" : "avg", h, w, k, s, pad, t % 2, (t / 2) % 2, bad,
                          bad < 0 ? 0 : y[bad], bad < 0 ? 0 : want[bad]);
        }
        free(x), free(y), free(want);
    }
}
END_TEST

/* Max pooling on planes wide enough for its vector paths: interior groups of 8 at
 * stride 1 and 2, rows narrower than 8 (one group reading on into the next row),
 * the last rows of the buffer (where that read would leave it: scalar), padding and
 * ceil_mode borders; with NaNs sprinkled in, which must win every window they are
 * in, as in PyTorch. */
START_TEST(test_maxpool_wide)
{
    rng r = {11};
    for (int t = 0; t < 300; t++) {
        const int k = rng_int(&r, 1, 4), s = rng_int(&r, 1, 3), pad = rng_int(&r, 0, k / 2);
        const int n = rng_int(&r, 1, 3), c = rng_int(&r, 1, 3);
        const int h = rng_int(&r, k, 20), w = rng_int(&r, k, t % 3 ? 45 : 16);
        pool2d_params p = pool_params(c, h, w, k, s, pad, t % 2, 0);
        const size_t nx = (size_t)n * c * h * w, ny = (size_t)n * c * p.out_h * p.out_w;
        float *x = rand_buf(&r, nx), *y = malloc(sizeof(float) * ny);
        const bool with_nan = t % 4 == 3;
        if (with_nan)
            for (size_t i = 0; i < nx; i++)
                if (rng_int(&r, 0, 60) == 0)
                    x[i] = NAN;
        double *want = malloc(sizeof(double) * ny);
        ref_pool(&p, n, x, true, want);
        maxpool2d_forward(&p, n, x, y);
        for (int pl = 0; pl < n * c; pl++)
            for (int oy = 0; oy < p.out_h; oy++)
                for (int ox = 0; ox < p.out_w; ox++) {
                    bool nan = false;
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = oy * s - pad + ky, ix = ox * s - pad + kx;
                            if (iy >= 0 && ix >= 0 && iy < h && ix < w &&
                                isnan(x[((size_t)pl * h + iy) * w + ix]))
                                nan = true;
                        }
                    const size_t o = ((size_t)pl * p.out_h + oy) * p.out_w + ox;
                    ck_assert_msg(nan ? isnan(y[o]) : y[o] == (float)want[o],
                                  "max pool n%d c%d %dx%d k%d s%d p%d ceil %d: y[%zu]=%g want %s%g",
                                  n, c, h, w, k, s, pad, t % 2, o, y[o], nan ? "NaN, not " : "",
                                  want[o]);
                }
        free(x), free(y), free(want);
    }
}
END_TEST

START_TEST(test_maxpool_nan)
{
    float x[4] = {1.0f, NAN, 3.0f, 2.0f}, y[1];
    pool2d_params p = pool_params(1, 2, 2, 2, 2, 0, 0, 1);
    maxpool2d_forward(&p, 1, x, y);
    ck_assert(isnan(y[0]));
}
END_TEST

START_TEST(test_adaptive_avgpool)
{
    /* 5x7 plane of 1..35 to 3x4, from torch adaptive_avg_pool2d: overlapping,
     * uneven bins */
    float x[35], y[12];
    for (int i = 0; i < 35; i++)
        x[i] = (float)(i + 1);
    adaptive_avgpool2d_forward(1, 1, 5, 7, 3, 4, x, y);
    static const float want[] = {5.0f,  6.5f,  8.5f,  10.0f, 15.5f, 17.0f,
                                 19.0f, 20.5f, 26.0f, 27.5f, 29.5f, 31.0f};
    expect_plane(y, want, 12, "adaptive_avg_pool2d(5x7 -> 3x4)");

    /* random planes against the start/end rule, incl. global and upsampling bins */
    rng r = {9};
    static const int s[][4] = {{7, 7, 1, 1}, {13, 11, 5, 3}, {3, 4, 5, 7}, {10, 10, 4, 4}};
    for (size_t t = 0; t < sizeof s / sizeof s[0]; t++) {
        const int ih = s[t][0], iw = s[t][1], oh = s[t][2], ow = s[t][3], n = 2, c = 3;
        float *xi = rand_buf(&r, (size_t)n * c * ih * iw), *yo = malloc(sizeof(float) * n * c * oh * ow);
        double want2[2 * 3 * 5 * 7];
        for (int pl = 0; pl < n * c; pl++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    int hs = (int)floor((double)oy * ih / oh), he = (int)ceil((double)(oy + 1) * ih / oh);
                    int ws = (int)floor((double)ox * iw / ow), we = (int)ceil((double)(ox + 1) * iw / ow);
                    double sum = 0;
                    for (int iy = hs; iy < he; iy++)
                        for (int ix = ws; ix < we; ix++)
                            sum += xi[((size_t)pl * ih + iy) * iw + ix];
                    want2[(pl * oh + oy) * ow + ox] = sum / ((he - hs) * (we - ws));
                }
        adaptive_avgpool2d_forward(n, c, ih, iw, oh, ow, xi, yo);
        long bad = first_mismatch(yo, want2, NULL, (size_t)n * c * oh * ow);
        ck_assert_msg(bad < 0, "adaptive %dx%d->%dx%d: [%ld]", ih, iw, oh, ow, bad);
        free(xi), free(yo);
    }
}
END_TEST

/* ---- elementwise ----------------------------------------------------------------- */

START_TEST(test_add_forward)
{
    rng r = {10};
    const size_t n = 10000 + 5; /* crosses the internal chunk size, odd tail */
    float *a = rand_buf(&r, n), *b = rand_buf(&r, n), *y = malloc(sizeof(float) * n);
    add_forward(n, a, b, ACT_RELU, 0, y);
    for (size_t i = 0; i < n; i++)
        ck_assert_float_eq(y[i], fmaxf(a[i] + b[i], 0.0f));
    /* in place into a (the residual add in a block writes over its input) */
    float *a0 = malloc(sizeof(float) * n);
    memcpy(a0, a, sizeof(float) * n);
    add_forward(n, a, b, ACT_NONE, 0, a);
    for (size_t i = 0; i < n; i++)
        ck_assert_float_eq(a[i], a0[i] + b[i]);
    free(a), free(b), free(y), free(a0);
}
END_TEST

START_TEST(test_softmax)
{
    /* large logits: exp(1002) overflows float; max subtraction must make this exact */
    float x[2][3] = {{1000.0f, 1001.0f, 1002.0f}, {-1000.0f, -1001.0f, -1002.0f}};
    softmax_rows(2, 3, &x[0][0]);
    const float want[2][3] = {{0.09003057f, 0.24472847f, 0.66524094f},
                              {0.66524094f, 0.24472847f, 0.09003057f}};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            ck_assert_float_eq_tol(x[i][j], want[i][j], 1e-6f);

    rng r = {11};
    enum { R = 3, C = 1003 }; /* a tail past the vector width */
    float *z = rand_buf(&r, R * C), *z0 = malloc(sizeof(float) * R * C);
    for (int i = 0; i < R * C; i++)
        z[i] *= 30.0f;
    memcpy(z0, z, sizeof(float) * R * C);
    engine_softmax(z, R, C);
    for (int i = 0; i < R; i++) {
        double mx = -INFINITY, sum = 0, total = 0;
        for (int j = 0; j < C; j++)
            mx = fmax(mx, z0[i * C + j]);
        for (int j = 0; j < C; j++)
            sum += exp(z0[i * C + j] - mx);
        for (int j = 0; j < C; j++) {
            double want1 = exp(z0[i * C + j] - mx) / sum;
            ck_assert_msg(fabs(z[i * C + j] - want1) <= 1e-5 * want1 + 1e-12,
                          "softmax row %d col %d: %g want %g", i, j, z[i * C + j], want1);
            total += z[i * C + j];
        }
        ck_assert_msg(fabs(total - 1.0) < 1e-5, "softmax row %d sums to %g", i, total);
    }
    free(z), free(z0);
}
END_TEST

static Suite *ops_suite(void)
{
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("blas");
    tcase_add_test(tc, test_blas_sgemm);
    tcase_add_test(tc, test_blas_threads);
    suite_add_tcase(s, tc);

    tc = tcase_create("activation");
    tcase_add_test(tc, test_activations);
    tcase_add_test(tc, test_activation_nan);
    suite_add_tcase(s, tc);

    tc = tcase_create("conv");
    tcase_set_timeout(tc, 120); /* the random sweep under ASan */
    tcase_add_test(tc, test_conv_out_size);
    tcase_add_test(tc, test_conv_cases);
    tcase_add_test(tc, test_conv_random);
    tcase_add_test(tc, test_conv_batched);
    tcase_add_test(tc, test_conv_direct);
    tcase_add_test(tc, test_conv_scratch);
    suite_add_tcase(s, tc);

    tc = tcase_create("deconv");
    tcase_set_timeout(tc, 120); /* the random sweep and large batches under ASan */
    tcase_add_test(tc, test_deconv_out_size);
    tcase_add_test(tc, test_deconv_cases);
    tcase_add_test(tc, test_deconv_random);
    tcase_add_test(tc, test_deconv_batched);
    tcase_add_test(tc, test_deconv_scratch);
    tcase_add_test(tc, test_batchnorm_fold_transposed);
    suite_add_tcase(s, tc);

    tc = tcase_create("norm");
    tcase_add_test(tc, test_batchnorm_fold);
    tcase_add_test(tc, test_channel_affine);
    suite_add_tcase(s, tc);

    tc = tcase_create("linear");
    tcase_add_test(tc, test_linear);
    tcase_add_test(tc, test_linear_packed);
    suite_add_tcase(s, tc);

    tc = tcase_create("pool");
    tcase_add_test(tc, test_pool_out_size);
    tcase_add_test(tc, test_pool_pytorch_values);
    tcase_add_test(tc, test_pool_random);
    tcase_add_test(tc, test_maxpool_nan);
    tcase_add_test(tc, test_maxpool_wide);
    tcase_add_test(tc, test_adaptive_avgpool);
    suite_add_tcase(s, tc);

    tc = tcase_create("elementwise");
    tcase_add_test(tc, test_add_forward);
    tcase_add_test(tc, test_softmax);
    tcase_add_test(tc, test_gelu_grid);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ops_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
