/* check_bert — BERT's kernels (embeddings, layer norm, attention) against naive
 * loops, and the whole model against a naive double-precision BERT written out here.
 *
 * The model tests build a tiny random BERT (L=2, D=8, A=2) in memory, write it as a
 * safetensors file under TMPDIR, and load it through engine_bert_load, so they cover
 * the key names, the Q/K/V fusion, the tied decoder, the optional NSP head and the
 * "bert."-less layout.  Then: the packed batch equals each sequence alone (a length-1
 * sequence, a sequence without masks and a repeated mask position included), GELU and
 * ReLU models equal the naive reference, and every malformed checkpoint or request is
 * an error naming what was wrong.  Tolerances: kernels 1e-5 relative to the row's
 * scale; the model 1e-4 (float against double through two layers). */
#define _POSIX_C_SOURCE 200809L /* mkstemp under -std=c11 */

#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/models/bert.h"
#include "engine/ops/ops.h"
#include "engine/parallel.h"
#include "proto/model_dir.h"
#include "tests/testutil.h"

/* ---- naive kernels ---------------------------------------------------------------- */

static void naive_layernorm(int d, const double *x, const float *g, const float *b, double eps,
                            double *y)
{
    double mean = 0, var = 0;
    for (int i = 0; i < d; i++)
        mean += x[i];
    mean /= d;
    for (int i = 0; i < d; i++)
        var += (x[i] - mean) * (x[i] - mean);
    var /= d;
    for (int i = 0; i < d; i++)
        y[i] = (x[i] - mean) / sqrt(var + eps) * g[i] + b[i];
}

static void assert_close(const float *got, const double *want, size_t n, double rtol,
                         double atol, const char *what)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i]),
                      "%s[%zu]: got %.9g, want %.9g", what, i, got[i], want[i]);
}

START_TEST(layernorm_matches_naive)
{
    static const int dims[] = {1, 7, 8, 64, 67};
    for (size_t k = 0; k < sizeof dims / sizeof dims[0]; k++) {
        const int d = dims[k], rows = 3;
        float x[3 * 67], r[3 * 67], y[3 * 67], g[67], b[67];
        double xd[67], want[67];
        test_fill_random(x, (size_t)rows * d, 1 + k);
        test_fill_random(r, (size_t)rows * d, 11 + k);
        test_fill_random(g, (size_t)d, 21 + k);
        test_fill_random(b, (size_t)d, 31 + k);
        for (int i = 0; i < rows * d; i++)
            x[i] += 100.0f * (float)(i / d + 1); /* a large row mean: the two-pass case */

        layernorm_rows(rows, d, x, g, b, 1e-5f, y);
        for (int row = 0; row < rows; row++) {
            for (int i = 0; i < d; i++)
                xd[i] = x[row * d + i];
            naive_layernorm(d, xd, g, b, 1e-5, want);
            assert_close(y + row * d, want, (size_t)d, 1e-4, 1e-4, "layernorm");
        }

        /* y = LN(x + r), written over x, then over r */
        float xa[3 * 67], ra[3 * 67];
        for (int alias = 0; alias < 2; alias++) {
            memcpy(xa, x, sizeof xa);
            memcpy(ra, r, sizeof ra);
            float *out = alias ? ra : xa;
            add_layernorm_rows(rows, d, xa, ra, g, b, 1e-5f, out);
            for (int row = 0; row < rows; row++) {
                for (int i = 0; i < d; i++)
                    xd[i] = (double)x[row * d + i] + r[row * d + i];
                naive_layernorm(d, xd, g, b, 1e-5, want);
                assert_close(out + row * d, want, (size_t)d, 1e-4, 1e-4, "add_layernorm");
            }
        }
    }
}
END_TEST

START_TEST(layernorm_constant_row)
{
    /* zero variance: (x - mean) is 0, the answer is beta, never NaN */
    float x[16], g[16], b[16];
    for (int i = 0; i < 16; i++)
        x[i] = 3.5f, g[i] = 2.0f, b[i] = (float)i;
    layernorm_rows(1, 16, x, g, b, 1e-12f, x);
    for (int i = 0; i < 16; i++)
        ck_assert_float_eq(x[i], (float)i);
}
END_TEST

/* Naive attention of one head block layout: q (tq, A*dh) etc., double accumulators. */
static void naive_attention(int tq, int tk, int heads, int dh, const float *q, int ldq,
                            const float *k, const float *v, int ldkv, double *ctx)
{
    const int d = heads * dh;
    double *p = malloc((size_t)tk * sizeof *p);
    ck_assert_ptr_nonnull(p);
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < tq; i++) {
            double max = -INFINITY, sum = 0;
            for (int j = 0; j < tk; j++) {
                double s = 0;
                for (int c = 0; c < dh; c++)
                    s += (double)q[i * ldq + h * dh + c] * k[j * ldkv + h * dh + c];
                p[j] = s / sqrt((double)dh);
                if (p[j] > max)
                    max = p[j];
            }
            for (int j = 0; j < tk; j++)
                sum += p[j] = exp(p[j] - max);
            for (int c = 0; c < dh; c++) {
                double acc = 0;
                for (int j = 0; j < tk; j++)
                    acc += p[j] / sum * v[j * ldkv + h * dh + c];
                ctx[i * d + h * dh + c] = acc;
            }
        }
    free(p);
}

START_TEST(attention_matches_naive)
{
    /* dh 4 runs the kernel's scalar columns only; dh 64 (BERT-base's) its 6 x 16 tiles,
     * with every row remainder and 17..130 keys for the column remainders */
    static const int shapes[][2] = {{3, 4}, {2, 64}};
    static const int lens[] = {1, 2, 5, 17, 40, 70, 130};
    par_pool *pool;
    engine_err err;
    ck_assert_int_eq(par_pool_open(2, &pool, &err), ENGINE_OK);
    for (size_t sh = 0; sh < 2; sh++)
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
            const int heads = shapes[sh][0], dh = shapes[sh][1], d = heads * dh, d3 = 3 * d;
            const int t = lens[k];
            float *qkv = malloc((size_t)t * d3 * sizeof *qkv);
            float *ctx = malloc((size_t)t * d * sizeof *ctx);
            float *ctx2 = malloc((size_t)t * d * sizeof *ctx2);
            /* the subset run below asks for 2 query rows, more than t when t is 1 */
            float *scratch =
                malloc(attention_scratch_floats(t < 2 ? 2 : t, t, dh, 2) * sizeof *scratch);
            double *want = malloc((size_t)t * d * sizeof *want);
            float *q = malloc(2 * (size_t)d * sizeof *q), *c2 = malloc(2 * (size_t)d * sizeof *c2);
            ck_assert(qkv && ctx && ctx2 && scratch && want && q && c2);
            test_fill_random(qkv, (size_t)t * d3, 100 + k);
            for (int i = 0; i < t * d3; i++)
                qkv[i] *= 3.0f; /* scores of a few units: far from uniform */

            attention_forward(NULL, t, t, heads, dh, qkv, d3, qkv + d, qkv + 2 * d, d3, ctx, d,
                              scratch);
            naive_attention(t, t, heads, dh, qkv, d3, qkv + d, qkv + 2 * d, d3, want);
            assert_close(ctx, want, (size_t)t * d, 1e-5, 1e-5, "attention");
            /* heads shared between two threads: the same bits */
            attention_forward(pool, t, t, heads, dh, qkv, d3, qkv + d, qkv + 2 * d, d3, ctx2, d,
                              scratch);
            ck_assert_int_eq(memcmp(ctx, ctx2, (size_t)t * d * sizeof *ctx), 0);

            /* the queries of some rows only (last row, first row), gathered as the last
             * layer does: the same rows of the full answer */
            int rows[2] = {t - 1, 0};
            gather_rows(2, d, rows, qkv, d3, q);
            attention_forward(pool, 2, t, heads, dh, q, d, qkv + d, qkv + 2 * d, d3, c2, d,
                              scratch);
            for (int r = 0; r < 2; r++)
                assert_close(c2 + r * d, want + (size_t)rows[r] * d, (size_t)d, 1e-5, 1e-5,
                             "attention subset");
            free(qkv);
            free(ctx);
            free(ctx2);
            free(scratch);
            free(want);
            free(q);
            free(c2);
        }
    par_pool_close(pool);
    ck_assert_uint_eq(attention_scratch_floats(0, 5, 4, 1), 0);
}
END_TEST

START_TEST(embedding_and_gather)
{
    const int v = 5, d = 11, t = 4;
    float word[5 * 11], pos[6 * 11], type[2 * 11], y[4 * 11];
    test_fill_random(word, sizeof word / sizeof word[0], 7);
    test_fill_random(pos, sizeof pos / sizeof pos[0], 8);
    test_fill_random(type, sizeof type / sizeof type[0], 9);
    const int32_t ids[4] = {4, 0, 2, 4}, types[4] = {0, 1, 1, 0};
    for (int with_types = 0; with_types < 2; with_types++) {
        embedding_sum(t, d, ids, with_types ? types : NULL, word, pos, type, y);
        for (int i = 0; i < t; i++)
            for (int c = 0; c < d; c++) {
                const int tt = with_types ? types[i] : 0;
                float want = (word[ids[i] * d + c] + type[tt * d + c]) + pos[i * d + c];
                ck_assert_float_eq(y[i * d + c], want);
            }
    }
    (void)v;
    int idx[3] = {2, 2, 0};
    float g[3 * 11];
    gather_rows(3, 5, idx, y, d, g); /* a 5-column block of rows 11 apart */
    for (int i = 0; i < 3; i++)
        for (int c = 0; c < 5; c++)
            ck_assert_float_eq(g[i * 5 + c], y[idx[i] * d + c]);
}
END_TEST

/* ---- a tiny BERT, its checkpoint, and a naive forward ----------------------------- */

enum { TV = 23, TD = 8, TA = 2, TI = 12, TL = 2, TP = 16, TT = 2 };

typedef struct tiny_layer {
    float qkv_w[3][TD * TD], qkv_b[3][TD];
    float ow[TD * TD], ob[TD], l1g[TD], l1b[TD];
    float iw[TI * TD], ib[TI], o2w[TD * TI], o2b[TD], l2g[TD], l2b[TD];
} tiny_layer;

typedef struct tiny {
    bert_config cfg;
    float word[TV * TD], pos[TP * TD], type[TT * TD], eg[TD], eb[TD];
    tiny_layer layer[TL];
    float hw[TD * TD], hb[TD], hg[TD], hbeta[TD], pbias[TV], dec[TV * TD];
    float pw[TD * TD], pb[TD], sw[2 * TD], sb[2];
} tiny;

static void scale(float *a, size_t n, float f)
{
    for (size_t i = 0; i < n; i++)
        a[i] *= f;
}

static void tiny_init(tiny *m, bool relu)
{
    m->cfg = (bert_config){.vocab_size = TV, .hidden_size = TD, .num_hidden_layers = TL,
                           .num_attention_heads = TA, .intermediate_size = TI,
                           .max_position_embeddings = TP, .type_vocab_size = TT,
                           .layer_norm_eps = 1e-5f, .hidden_act_relu = relu};
    /* everything random in [-1, 1): attention far from uniform, every term visible */
    test_fill_random(m->word, (sizeof *m - offsetof(tiny, word)) / sizeof(float), 42);
    /* weights of scale 1/sqrt(fan_in), as trained ones: activations of a few units,
     * attention that is peaked but not one-hot (a test model of [-1, 1) weights
     * amplifies float rounding a hundredfold and tests nothing more) */
    const float sd = 1.0f / sqrtf((float)TD), si = 1.0f / sqrtf((float)TI);
#define SCALE(a, f) scale((float *)(a), sizeof(a) / sizeof(float), f)
    for (int l = 0; l < TL; l++) {
        SCALE(m->layer[l].qkv_w, sd);
        SCALE(m->layer[l].ow, sd);
        SCALE(m->layer[l].iw, sd);
        SCALE(m->layer[l].o2w, si);
    }
    SCALE(m->hw, sd);
    SCALE(m->pw, sd);
    SCALE(m->sw, sd);
#undef SCALE
    /* LayerNorm gains around 1 */
    for (int i = 0; i < TD; i++) {
        m->eg[i] += 1.5f;
        m->hg[i] += 1.5f;
        for (int l = 0; l < TL; l++)
            m->layer[l].l1g[i] += 1.5f, m->layer[l].l2g[i] += 1.5f;
    }
}

typedef enum { DEC_TIED, DEC_STORED, NO_NSP, BARE_PREFIX, DROP_KEY, BAD_SHAPE } tiny_variant;

/* Adds "<fmt...>" as a (d0) or (d0, d1) tensor unless it is the one to drop. */
static void put(st_writer *w, const char *drop, const float *data, int d0, int d1,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void put(st_writer *w, const char *drop, const float *data, int d0, int d1,
                const char *fmt, ...)
{
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (drop && !strcmp(name, drop))
        return;
    if (d1 > 0)
        st_writer_add(w, name, data, 2, d0, d1);
    else
        st_writer_add(w, name, data, 1, d0);
}

/* Writes m as a HF checkpoint to a temp file, without the tensor called drop (when
 * non-NULL); returns its path (a static buffer). */
static const char *tiny_write(const tiny *m, tiny_variant variant, const char *drop)
{
    static char path[512];
    static float dummy[TD * (TD + 1)];
    static const char *qkv[3] = {"query", "key", "value"};
    st_writer w = {0};
    const char *pre = variant == BARE_PREFIX ? "" : "bert.";
    const char *x = drop;
    put(&w, x, m->word, TV, TD, "%sembeddings.word_embeddings.weight", pre);
    put(&w, x, m->pos, TP, TD, "%sembeddings.position_embeddings.weight", pre);
    put(&w, x, m->type, TT, TD, "%sembeddings.token_type_embeddings.weight", pre);
    put(&w, x, m->eg, TD, 0, "%sembeddings.LayerNorm.weight", pre);
    put(&w, x, m->eb, TD, 0, "%sembeddings.LayerNorm.bias", pre);
    for (int l = 0; l < TL; l++) {
        const tiny_layer *y = &m->layer[l];
        char at[64];
        snprintf(at, sizeof at, "%sencoder.layer.%d", pre, l);
        for (int i = 0; i < 3; i++) {
            if (variant == BAD_SHAPE && l == 1 && i == 1)
                put(&w, x, dummy, TD, TD + 1, "%s.attention.self.%s.weight", at, qkv[i]);
            else
                put(&w, x, y->qkv_w[i], TD, TD, "%s.attention.self.%s.weight", at, qkv[i]);
            put(&w, x, y->qkv_b[i], TD, 0, "%s.attention.self.%s.bias", at, qkv[i]);
        }
        put(&w, x, y->ow, TD, TD, "%s.attention.output.dense.weight", at);
        put(&w, x, y->ob, TD, 0, "%s.attention.output.dense.bias", at);
        put(&w, x, y->l1g, TD, 0, "%s.attention.output.LayerNorm.weight", at);
        put(&w, x, y->l1b, TD, 0, "%s.attention.output.LayerNorm.bias", at);
        put(&w, x, y->iw, TI, TD, "%s.intermediate.dense.weight", at);
        put(&w, x, y->ib, TI, 0, "%s.intermediate.dense.bias", at);
        put(&w, x, y->o2w, TD, TI, "%s.output.dense.weight", at);
        put(&w, x, y->o2b, TD, 0, "%s.output.dense.bias", at);
        put(&w, x, y->l2g, TD, 0, "%s.output.LayerNorm.weight", at);
        put(&w, x, y->l2b, TD, 0, "%s.output.LayerNorm.bias", at);
    }
    put(&w, x, m->hw, TD, TD, "cls.predictions.transform.dense.weight");
    put(&w, x, m->hb, TD, 0, "cls.predictions.transform.dense.bias");
    put(&w, x, m->hg, TD, 0, "cls.predictions.transform.LayerNorm.weight");
    put(&w, x, m->hbeta, TD, 0, "cls.predictions.transform.LayerNorm.bias");
    put(&w, x, m->pbias, TV, 0, "cls.predictions.bias");
    if (variant == DEC_STORED)
        put(&w, x, m->dec, TV, TD, "cls.predictions.decoder.weight");
    if (variant != NO_NSP) {
        put(&w, x, m->pw, TD, TD, "%spooler.dense.weight", pre);
        put(&w, x, m->pb, TD, 0, "%spooler.dense.bias", pre);
        put(&w, x, m->sw, 2, TD, "cls.seq_relationship.weight");
        put(&w, x, m->sb, 2, 0, "cls.seq_relationship.bias");
    }
    size_t len;
    uint8_t *buf = st_writer_finish(&w, &len);
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/check_bert.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
    close(fd);
    free(buf);
    return path;
}

static engine_model *tiny_load(const tiny *m, tiny_variant variant, int max_batch,
                               int max_tokens)
{
    const char *path = tiny_write(m, variant, NULL);
    engine_model *model = NULL;
    engine_err err;
    engine_status s = engine_bert_load(&m->cfg, path, max_batch, max_tokens, &model, &err);
    unlink(path);
    ck_assert_msg(s == ENGINE_OK, "%s", err.msg);
    return model;
}

static double act(const tiny *m, double x)
{
    return m->cfg.hidden_act_relu ? (x > 0 ? x : 0) : 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
}

/* y (rows, out) = x (rows, in) W^T + b, in double */
static void dense(int rows, int in, int out, const double *x, const float *w, const float *b,
                  double *y)
{
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double acc = b[o];
            for (int i = 0; i < in; i++)
                acc += x[r * in + i] * w[o * in + i];
            y[r * out + o] = acc;
        }
}

/* The naive BERT of one sequence: MLM logits at masks (n_mask, V), NSP logits (2). */
static void naive_bert(const tiny *m, const float *decoder, const engine_bert_seq *q,
                       double *mlm, double *nsp)
{
    const int t = q->len, dh = TD / TA;
    const double eps = m->cfg.layer_norm_eps;
    double h[TP * TD], qkv[3][TP * TD], ctx[TP * TD], a[TP * TD], f[TP * TI], tmp[TD];
    for (int i = 0; i < t; i++) {
        const int tt = q->type_ids ? q->type_ids[i] : 0;
        for (int c = 0; c < TD; c++)
            tmp[c] = (double)m->word[q->ids[i] * TD + c] + m->type[tt * TD + c] +
                     m->pos[i * TD + c];
        naive_layernorm(TD, tmp, m->eg, m->eb, eps, h + i * TD);
    }
    for (int l = 0; l < TL; l++) {
        const tiny_layer *y = &m->layer[l];
        for (int j = 0; j < 3; j++)
            dense(t, TD, TD, h, y->qkv_w[j], y->qkv_b[j], qkv[j]);
        float qf[3][TP * TD];
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < t * TD; i++)
                qf[j][i] = (float)qkv[j][i];
        /* the attention in double over float-rounded q, k, v is close enough (1e-6) */
        naive_attention(t, t, TA, dh, qf[0], TD, qf[1], qf[2], TD, ctx);
        dense(t, TD, TD, ctx, y->ow, y->ob, a);
        for (int i = 0; i < t; i++) {
            for (int c = 0; c < TD; c++)
                tmp[c] = h[i * TD + c] + a[i * TD + c];
            naive_layernorm(TD, tmp, y->l1g, y->l1b, eps, h + i * TD);
        }
        dense(t, TD, TI, h, y->iw, y->ib, f);
        for (int i = 0; i < t * TI; i++)
            f[i] = act(m, f[i]);
        dense(t, TI, TD, f, y->o2w, y->o2b, a);
        for (int i = 0; i < t; i++) {
            for (int c = 0; c < TD; c++)
                tmp[c] = h[i * TD + c] + a[i * TD + c];
            naive_layernorm(TD, tmp, y->l2g, y->l2b, eps, h + i * TD);
        }
    }
    for (int j = 0; j < q->n_mask; j++) {
        double u[TD], v[TD];
        dense(1, TD, TD, h + q->mask_pos[j] * TD, m->hw, m->hb, u);
        for (int c = 0; c < TD; c++)
            u[c] = act(m, u[c]);
        naive_layernorm(TD, u, m->hg, m->hbeta, eps, v);
        dense(1, TD, TV, v, decoder, m->pbias, mlm + j * TV);
    }
    double p[TD];
    dense(1, TD, TD, h, m->pw, m->pb, p);
    for (int c = 0; c < TD; c++)
        p[c] = tanh(p[c]);
    dense(1, TD, 2, p, m->sw, m->sb, nsp);
}

/* A batch with every shape of interest: pair with segments, a single token, no
 * masks, a repeated mask position, the longest allowed sequence. */
static const int32_t s0_ids[] = {2, 5, 9, 4, 7, 3, 11, 4, 3}, s0_types[] = {0, 0, 0, 0, 0, 0, 1, 1, 1};
static const int32_t s0_mask[] = {3, 7};
static const int32_t s1_ids[] = {2};
static const int32_t s1_mask[] = {0};
static const int32_t s2_ids[] = {2, 6, 3};
static const int32_t s3_ids[] = {2, 22, 21, 4, 4, 13, 14, 15, 16, 17, 18, 19, 20, 1, 0, 3};
static const int32_t s3_mask[] = {4, 3, 4};

static int tiny_batch(engine_bert_seq seqs[4])
{
    seqs[0] = (engine_bert_seq){s0_ids, s0_types, 9, s0_mask, 2};
    seqs[1] = (engine_bert_seq){s1_ids, NULL, 1, s1_mask, 1};
    seqs[2] = (engine_bert_seq){s2_ids, NULL, 3, NULL, 0};
    seqs[3] = (engine_bert_seq){s3_ids, NULL, TP, s3_mask, 3};
    return 4;
}

/* engine vs naive over the batch, then each sequence alone vs the batch */
static void check_against_naive(const tiny *m, tiny_variant variant, const float *decoder)
{
    engine_model *model = tiny_load(m, variant, 4, 64);
    engine_session *s;
    engine_err err;
    ck_assert_int_eq(engine_session_open(model, &s, &err), ENGINE_OK);
    engine_bert_seq seqs[4];
    const int n = tiny_batch(seqs);
    float mlm[6 * TV], nsp[4 * 2], one_mlm[3 * TV], one_nsp[2];
    ck_assert_msg(engine_bert_forward(s, seqs, n, mlm, nsp, &err) == ENGINE_OK, "%s", err.msg);
    int row = 0;
    for (int i = 0; i < n; i++) {
        double want_mlm[3 * TV], want_nsp[2];
        naive_bert(m, decoder, &seqs[i], want_mlm, want_nsp);
        assert_close(mlm + row * TV, want_mlm, (size_t)seqs[i].n_mask * TV, 1e-4, 1e-4,
                     "mlm vs naive");
        assert_close(nsp + i * 2, want_nsp, 2, 1e-4, 1e-4, "nsp vs naive");
        ck_assert_int_eq(engine_bert_forward(s, &seqs[i], 1, one_mlm, one_nsp, &err), ENGINE_OK);
        /* alone, GEMMs of other shapes sum in other orders: rounding only */
        for (int j = 0; j < seqs[i].n_mask * TV; j++)
            ck_assert_float_eq_tol(one_mlm[j], mlm[row * TV + j],
                                   1e-5f * (1.0f + fabsf(mlm[row * TV + j])));
        for (int j = 0; j < 2; j++)
            ck_assert_float_eq_tol(one_nsp[j], nsp[i * 2 + j],
                                   1e-5f * (1.0f + fabsf(nsp[i * 2 + j])));
        row += seqs[i].n_mask;
    }
    /* a repeated mask position answers twice the same (up to the GEMM's edge tiles) */
    for (int j = 0; j < TV; j++)
        ck_assert_float_eq_tol(mlm[(3 + 0) * TV + j], mlm[(3 + 2) * TV + j],
                               1e-6f * (1.0f + fabsf(mlm[3 * TV + j])));
    engine_session_close(s);
    engine_model_free(model);
}

START_TEST(model_gelu_matches_naive)
{
    static tiny m;
    tiny_init(&m, false);
    check_against_naive(&m, DEC_TIED, m.word);
}
END_TEST

START_TEST(model_relu_matches_naive)
{
    static tiny m;
    tiny_init(&m, true);
    check_against_naive(&m, DEC_TIED, m.word);
}
END_TEST

START_TEST(model_layouts)
{
    static tiny m;
    tiny_init(&m, false);
    /* its own decoder matrix, and the encoder keys without "bert." */
    check_against_naive(&m, DEC_STORED, m.dec);
    check_against_naive(&m, BARE_PREFIX, m.word);
}
END_TEST

START_TEST(model_repeated_masks)
{
    /* more mask rows than the longest sequence has tokens: the last layer's queries
     * must be blocked to fit the scores buffer (ASan sees an overflow otherwise) */
    static tiny m;
    tiny_init(&m, false);
    engine_model *model = tiny_load(&m, DEC_TIED, 2, 64);
    engine_session *s;
    engine_err err;
    ck_assert_int_eq(engine_session_open(model, &s, &err), ENGINE_OK);
    int32_t pos[40];
    for (int i = 0; i < 40; i++)
        pos[i] = (i * 7) % TP;
    engine_bert_seq q[2] = {{s3_ids, NULL, TP, pos, 40}, {s0_ids, s0_types, 9, s0_mask, 2}};
    static float mlm[42 * TV], one[TV];
    float nsp[4];
    ck_assert_msg(engine_bert_forward(s, q, 2, mlm, nsp, &err) == ENGINE_OK, "%s", err.msg);
    for (int i = 0; i < 40; i++) {
        engine_bert_seq single = {s3_ids, NULL, TP, &pos[i], 1};
        ck_assert_int_eq(engine_bert_forward(s, &single, 1, one, NULL, &err), ENGINE_OK);
        for (int j = 0; j < TV; j++)
            ck_assert_float_eq_tol(one[j], mlm[i * TV + j], 1e-5f * (1.0f + fabsf(one[j])));
    }
    engine_session_close(s);
    engine_model_free(model);
}
END_TEST

START_TEST(model_queries)
{
    static tiny m;
    tiny_init(&m, false);
    engine_model *model = tiny_load(&m, DEC_TIED, 3, 40);
    ck_assert(engine_bert_has_nsp(model));
    ck_assert_int_eq(engine_model_num_outputs(model), TV);
    ck_assert_int_eq(engine_model_max_batch(model), 3);
    const double per_token = 2.0 * TL * (4.0 * TD * TD + 2.0 * TD * TI);
    ck_assert(fabs(engine_model_flops(model) - per_token) < 1e-9);
    ck_assert_uint_gt(engine_model_arena_bytes(model), 40 * TD * sizeof(float));
    int c = -1, h = -1, w = -1;
    engine_model_input_shape(model, &c, &h, &w);
    ck_assert(c == 0 && h == 0 && w == 0);
    engine_model_free(model);

    model = tiny_load(&m, NO_NSP, 3, 40);
    ck_assert(!engine_bert_has_nsp(model));
    engine_model_free(model);
}
END_TEST

START_TEST(forward_errors)
{
    static tiny m;
    tiny_init(&m, false);
    engine_model *model = tiny_load(&m, NO_NSP, 2, 20);
    engine_session *s;
    engine_err err;
    ck_assert_int_eq(engine_session_open(model, &s, &err), ENGINE_OK);
    float mlm[40 * TV], nsp[4];
    const int32_t ids[] = {2, 5, 4, 3}, bad_ids[] = {2, TV, 3}, neg_ids[] = {2, -1, 3};
    const int32_t types[] = {0, 0, 2, 0}, pos_ok[] = {2}, pos_bad[] = {4}, pos_neg[] = {-1};
    int32_t long_ids[TP + 1];
    for (int i = 0; i < TP + 1; i++)
        long_ids[i] = 5;
    engine_bert_seq good = {ids, NULL, 4, pos_ok, 1};
    engine_bert_seq batch[3] = {good, good, good};
    struct { engine_bert_seq q; const char *needle; } bad[] = {
        {{bad_ids, NULL, 3, pos_ok, 1}, "token 1 has id 23, outside 0..22"},
        {{neg_ids, NULL, 3, pos_ok, 1}, "token 1 has id -1"},
        {{ids, types, 4, pos_ok, 1}, "token 2 has segment id 2, outside 0..1"},
        {{ids, NULL, 4, pos_bad, 1}, "mask position 4 is outside 0..3"},
        {{ids, NULL, 4, pos_neg, 1}, "mask position -1"},
        {{ids, NULL, 4, NULL, 1}, "1 mask positions without a list"},
        {{ids, NULL, 4, pos_ok, -1}, "mask positions without a list"},
        {{ids, NULL, 0, pos_ok, 0}, "length 0 is outside 1..16"},
        {{long_ids, NULL, TP + 1, pos_ok, 0}, "length 17 is outside 1..16"},
        {{NULL, NULL, 4, pos_ok, 1}, "sequence 0: length 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(engine_bert_forward(s, &bad[i].q, 1, mlm, NULL, &err),
                         ENGINE_ERR_INVALID);
        ck_assert_msg(strstr(err.msg, bad[i].needle), "case %zu: \"%s\" lacks \"%s\"", i,
                      err.msg, bad[i].needle);
    }
    ck_assert_int_eq(engine_bert_forward(s, batch, 0, mlm, NULL, &err), ENGINE_ERR_INVALID);
    ck_assert_int_eq(engine_bert_forward(s, batch, 3, mlm, NULL, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "outside 1..2"));
    /* 16 + 16 tokens > 20 */
    engine_bert_seq two_long[2] = {{long_ids, NULL, TP, NULL, 0}, {long_ids, NULL, TP, NULL, 0}};
    ck_assert_int_eq(engine_bert_forward(s, two_long, 2, mlm, NULL, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "more than 20 tokens"));
    /* 2 x 16 mask positions in 2 x 4 tokens: more than max_tokens rows */
    int32_t many[16] = {0};
    engine_bert_seq masky[2] = {{ids, NULL, 4, many, 16}, {ids, NULL, 4, many, 16}};
    ck_assert_int_eq(engine_bert_forward(s, masky, 2, mlm, NULL, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "more than 20 mask positions"));
    /* NSP asked of a model without the head */
    ck_assert_int_eq(engine_bert_forward(s, &good, 1, mlm, nsp, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "no next-sentence head"));
    /* masks are not checked when no MLM is asked for; nothing asked is fine */
    engine_bert_seq unchecked = {ids, NULL, 4, pos_bad, 1};
    ck_assert_int_eq(engine_bert_forward(s, &unchecked, 1, NULL, NULL, &err), ENGINE_OK);
    /* a CNN forward on a BERT */
    float x[4];
    ck_assert_int_eq(engine_cnn_forward(s, x, 1, mlm, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a CNN"));
    /* still fine after all that */
    ck_assert_int_eq(engine_bert_forward(s, &good, 1, mlm, NULL, &err), ENGINE_OK);
    engine_session_close(s);
    engine_model_free(model);
}
END_TEST

START_TEST(bert_forward_on_cnn)
{
    const char *src = getenv("top_srcdir");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/models/fashion", src ? src : ".");
    model_dir md;
    engine_err err;
    ck_assert_msg(model_dir_read(dir, &md, &err) == ENGINE_OK, "%s", err.msg);
    engine_model *model;
    ck_assert_int_eq(engine_cnn_load(&md.cnn, md.weights_path, 1, &model, &err), ENGINE_OK);
    ck_assert(!engine_bert_has_nsp(model));
    engine_session *s;
    ck_assert_int_eq(engine_session_open(model, &s, &err), ENGINE_OK);
    const int32_t ids[] = {1, 2};
    engine_bert_seq q = {ids, NULL, 2, NULL, 0};
    float out[4];
    ck_assert_int_eq(engine_bert_forward(s, &q, 1, out, NULL, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a BERT"));
    engine_session_close(s);
    engine_model_free(model);
    model_dir_free(&md);
}
END_TEST

static void expect_load_error(const tiny *m, tiny_variant variant, const char *drop,
                              const bert_config *cfg, engine_status want, const char *needle)
{
    const char *path = tiny_write(m, variant, drop);
    engine_model *model = (engine_model *)1;
    engine_err err = {{0}};
    engine_status s = engine_bert_load(cfg ? cfg : &m->cfg, path, 2, 32, &model, &err);
    unlink(path);
    ck_assert_msg(s == want, "status %d, wanted %d: %s", s, want, err.msg);
    ck_assert_ptr_null(model);
    ck_assert_msg(strstr(err.msg, needle), "\"%s\" lacks \"%s\"", err.msg, needle);
}

START_TEST(load_errors)
{
    static tiny m;
    tiny_init(&m, false);
    const engine_status S = ENGINE_ERR_SHAPE, I = ENGINE_ERR_INVALID;
    expect_load_error(&m, DEC_TIED, "bert.encoder.layer.1.attention.self.value.weight", NULL, S,
                      "missing tensor 'bert.encoder.layer.1.attention.self.value.weight', "
                      "expected shape [8, 8]");
    expect_load_error(&m, DEC_TIED, "bert.encoder.layer.0.intermediate.dense.bias", NULL, S,
                      "missing tensor 'bert.encoder.layer.0.intermediate.dense.bias', "
                      "expected shape [12]");
    expect_load_error(&m, DEC_TIED, "cls.predictions.bias", NULL, S,
                      "missing tensor 'cls.predictions.bias', expected shape [23]");
    expect_load_error(&m, DEC_TIED, "cls.predictions.transform.LayerNorm.weight", NULL, S,
                      "'cls.predictions.transform.LayerNorm.weight'");
    expect_load_error(&m, DEC_TIED, "bert.pooler.dense.weight", NULL, S,
                      "missing tensor 'bert.pooler.dense.weight', expected shape [8, 8]");
    expect_load_error(&m, BAD_SHAPE, NULL, NULL, S,
                      "tensor 'bert.encoder.layer.1.attention.self.key.weight' has shape "
                      "[8, 9], expected [8, 8]");
    /* a config that disagrees with the checkpoint */
    bert_config c = m.cfg;
    c.intermediate_size = 16;
    expect_load_error(&m, DEC_TIED, NULL, &c, S, "intermediate.dense.weight' has shape [12, 8], "
                      "expected [16, 8]");
    c = m.cfg;
    c.max_position_embeddings = 32;
    expect_load_error(&m, DEC_TIED, NULL, &c, S, "position_embeddings.weight' has shape");
    /* configs the engine refuses whatever the checkpoint */
    c = m.cfg;
    c.num_attention_heads = 3;
    expect_load_error(&m, DEC_TIED, NULL, &c, I, "not a multiple of num_attention_heads 3");
    c = m.cfg;
    c.num_hidden_layers = 0;
    expect_load_error(&m, DEC_TIED, NULL, &c, I, "num_hidden_layers 0 is outside");
    c = m.cfg;
    c.layer_norm_eps = 0.0f;
    expect_load_error(&m, DEC_TIED, NULL, &c, I, "layer_norm_eps");
    c = m.cfg;
    c.vocab_size = -5;
    expect_load_error(&m, DEC_TIED, NULL, &c, I, "vocab_size -5");

    engine_model *model = (engine_model *)1;
    engine_err err;
    ck_assert_int_eq(engine_bert_load(&m.cfg, "/nonexistent/model.safetensors", 1, 8, &model,
                                      &err), ENGINE_ERR_IO);
    ck_assert_ptr_null(model);
    const char *path = tiny_write(&m, DEC_TIED, NULL);
    ck_assert_int_eq(engine_bert_load(&m.cfg, path, 0, 8, &model, &err), I);
    ck_assert_int_eq(engine_bert_load(&m.cfg, path, 1, 0, &model, &err), I);
    unlink(path);
}
END_TEST

static Suite *bert_suite(void)
{
    Suite *s = suite_create("bert");
    TCase *tc = tcase_create("kernels");
    tcase_add_test(tc, layernorm_matches_naive);
    tcase_add_test(tc, layernorm_constant_row);
    tcase_add_test(tc, attention_matches_naive);
    tcase_add_test(tc, embedding_and_gather);
    suite_add_tcase(s, tc);

    tc = tcase_create("model");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, model_gelu_matches_naive);
    tcase_add_test(tc, model_relu_matches_naive);
    tcase_add_test(tc, model_layouts);
    tcase_add_test(tc, model_repeated_masks);
    tcase_add_test(tc, model_queries);
    tcase_add_test(tc, forward_errors);
    tcase_add_test(tc, bert_forward_on_cnn);
    tcase_add_test(tc, load_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(bert_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
