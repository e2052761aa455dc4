/* golden_bert — runs a BERT model directory on a batch of token sequences and compares
 * the MLM logits at the mask positions (and the NSP logits, when the checkpoint has
 * that head) with PyTorch's, within the tolerance the generator wrote beside them.
 *
 *   golden_bert CASE_DIR      (CASE_DIR from tests/golden/gen_bert_golden.py)
 *
 * Checks the whole batch at once, the batch asking for one head at a time (the last
 * layer then computes other rows), and every sequence alone; at every mask position
 * the top-5 token order must equal PyTorch's.  Prints the worst errors; exit 0 on
 * pass, 1 on fail. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "proto/model_dir.h"
#include "tests/golden_util.h"

#define CASE_MAX_SEQS 1024
#define CASE_MAX_LEN 65536

typedef struct golden_case {
    int n;
    engine_bert_seq seqs[CASE_MAX_SEQS];
    int32_t *ints;          /* every sequence's ids, types and masks, back to back */
    int tokens, masks;
} golden_case;

/* seqs.txt: n, then per sequence "len n_mask", len ids, len types, n_mask positions. */
static bool read_case(const char *dir, golden_case *c)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/seqs.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return false;
    }
    bool ok = fscanf(f, "%d", &c->n) == 1 && c->n >= 1 && c->n <= CASE_MAX_SEQS;
    long pos = ftell(f);
    /* first pass: sizes */
    size_t total = 0;
    for (int s = 0; ok && s < c->n; s++) {
        int len, nm, v;
        ok = fscanf(f, "%d %d", &len, &nm) == 2 && len >= 1 && len <= CASE_MAX_LEN && nm >= 0 &&
             nm <= len;
        for (int i = 0; ok && i < 2 * len + nm; i++)
            ok = fscanf(f, "%d", &v) == 1;
        total += 2 * (size_t)len + (size_t)nm;
    }
    c->ints = ok ? malloc((total ? total : 1) * sizeof *c->ints) : NULL;
    ok = ok && c->ints && fseek(f, pos, SEEK_SET) == 0;
    int32_t *p = c->ints;
    c->tokens = c->masks = 0;
    for (int s = 0; ok && s < c->n; s++) {
        engine_bert_seq *q = &c->seqs[s];
        int nm = 0;
        ok = fscanf(f, "%d %d", &q->len, &nm) == 2;
        q->n_mask = nm;
        q->ids = p;
        for (int i = 0; ok && i < q->len; i++)
            ok = fscanf(f, "%d", p++) == 1;
        q->type_ids = p;
        for (int i = 0; ok && i < q->len; i++)
            ok = fscanf(f, "%d", p++) == 1;
        q->mask_pos = p;
        for (int i = 0; ok && i < nm; i++)
            ok = fscanf(f, "%d", p++) == 1;
        c->tokens += q->len;
        c->masks += nm;
    }
    fclose(f);
    if (!ok)
        fprintf(stderr, "%s: malformed\n", path);
    return ok;
}

static double max_abs(const float *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(x[i]) > m)
            m = fabs(x[i]);
    return m;
}

/* The 5 largest of row (v), best first; ties to the lower id. */
static void top5(const float *row, int v, int out[5])
{
    for (int k = 0; k < 5; k++)
        out[k] = -1;
    for (int i = 0; i < v; i++) {
        int k = 5;
        while (k > 0 && (out[k - 1] < 0 || row[i] > row[out[k - 1]]))
            k--;
        if (k == 5)
            continue;
        memmove(out + k + 1, out + k, sizeof(int) * (size_t)(4 - k));
        out[k] = i;
    }
}

static int check_top5(const char *dir, const float *mlm, int masks, int v)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/expected_top5.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    int fails = 0;
    for (int m = 0; m < masks; m++) {
        int want[5], got[5];
        for (int k = 0; k < 5; k++)
            if (fscanf(f, "%d", &want[k]) != 1) {
                fprintf(stderr, "%s: malformed\n", path);
                fclose(f);
                return 1;
            }
        top5(mlm + (size_t)m * v, v, got);
        if (memcmp(want, got, sizeof want) != 0) {
            printf("    mask %d: top-5 %d %d %d %d %d, PyTorch's %d %d %d %d %d  FAIL\n", m,
                   got[0], got[1], got[2], got[3], got[4], want[0], want[1], want[2], want[3],
                   want[4]);
            fails++;
        }
    }
    fclose(f);
    printf("  top-5 order            %d mask positions%s\n", masks, fails ? "  FAIL" : ", same");
    return fails ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: golden_bert CASE_DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    engine_err err;
    model_dir md;
    golden_case *c = calloc(1, sizeof *c);
    if (!c || model_dir_read(dir, &md, &err) != ENGINE_OK) {
        fprintf(stderr, "%s\n", c ? err.msg : "out of memory");
        free(c);
        return 1;
    }
    int status = 1;
    engine_model *m = NULL;
    engine_session *s = NULL;
    float *exp_mlm = NULL, *exp_nsp = NULL, *mlm = NULL, *nsp = NULL;
    size_t n_mlm = 0, n_nsp = 0;
    if (md.kind != MODEL_KIND_BERT) {
        fprintf(stderr, "%s: not a BERT directory (%s)\n", dir, model_kind_name(md.kind));
        goto out;
    }
    const int v = md.bert.vocab_size;
    double rtol = 1e-4, atol_fraction = 1e-4;
    golden_tolerance(dir, &rtol, &atol_fraction); /* "rtol atol_fraction" here */
    if (!read_case(dir, c))
        goto out;
    exp_mlm = golden_read(dir, "expected_mlm.f32", sizeof(float), &n_mlm);
    /* a checkpoint without the next-sentence head has no NSP expectations */
    char nsp_path[4096];
    snprintf(nsp_path, sizeof nsp_path, "%s/expected_nsp.f32", dir);
    if (access(nsp_path, F_OK) == 0)
        exp_nsp = golden_read(dir, "expected_nsp.f32", sizeof(float), &n_nsp);
    if (!exp_mlm || n_mlm != (size_t)c->masks * v || (exp_nsp && n_nsp != (size_t)c->n * 2)) {
        fprintf(stderr, "%s: expected outputs do not match seqs.txt and the config\n", dir);
        goto out;
    }
    if (engine_bert_load(&md.bert, md.weights_path, c->n, c->tokens, &m, &err) != ENGINE_OK ||
        engine_session_open(m, &s, &err) != ENGINE_OK) {
        fprintf(stderr, "%s\n", err.msg);
        goto out;
    }
    if (engine_bert_has_nsp(m) != (exp_nsp != NULL)) {
        fprintf(stderr, "%s: the engine %s an NSP head, the generator %s\n", dir,
                engine_bert_has_nsp(m) ? "has" : "has no",
                exp_nsp ? "wrote NSP logits" : "did not");
        goto out;
    }
    mlm = malloc(((size_t)c->masks * v + 1) * sizeof *mlm);
    nsp = malloc(((size_t)c->n * 2) * sizeof *nsp);
    if (!mlm || !nsp)
        goto out;
    const double atol_mlm = atol_fraction * max_abs(exp_mlm, n_mlm);
    const double atol_nsp = exp_nsp ? atol_fraction * max_abs(exp_nsp, n_nsp) : 0;
    printf("%s: %d sequences, %d tokens, %d masks, vocab %d, layers %d, hidden %d%s\n", dir,
           c->n, c->tokens, c->masks, v, md.bert.num_hidden_layers, md.bert.hidden_size,
           exp_nsp ? ", NSP" : "");
    printf("  tolerance: |diff| <= %g |expected| + %g max|expected| (MLM %.3g, NSP %.3g)\n",
           rtol, atol_fraction, atol_mlm, atol_nsp);

    int fails = 0;
    double worst = 0;
    float *want_nsp = exp_nsp ? nsp : NULL;
    if (engine_bert_forward(s, c->seqs, c->n, mlm, want_nsp, &err) != ENGINE_OK) {
        fprintf(stderr, "forward: %s\n", err.msg);
        goto out;
    }
    fails += golden_compare("batch MLM", mlm, exp_mlm, n_mlm, rtol, atol_mlm, &worst);
    if (exp_nsp)
        fails += golden_compare("batch NSP", nsp, exp_nsp, n_nsp, rtol, atol_nsp, &worst);
    fails += check_top5(dir, mlm, c->masks, v);

    /* One head at a time: the last layer then works on other row sets. */
    if (exp_nsp) {
        if (engine_bert_forward(s, c->seqs, c->n, mlm, NULL, &err) != ENGINE_OK ||
            engine_bert_forward(s, c->seqs, c->n, NULL, nsp, &err) != ENGINE_OK) {
            fprintf(stderr, "forward: %s\n", err.msg);
            goto out;
        }
        fails += golden_compare("batch, MLM alone", mlm, exp_mlm, n_mlm, rtol, atol_mlm, &worst);
        fails += golden_compare("batch, NSP alone", nsp, exp_nsp, n_nsp, rtol, atol_nsp, &worst);
    }

    size_t m_off = 0;
    for (int i = 0; i < c->n; i++) {
        const engine_bert_seq *q = &c->seqs[i];
        if (engine_bert_forward(s, q, 1, mlm, want_nsp, &err) != ENGINE_OK) {
            fprintf(stderr, "forward: %s\n", err.msg);
            goto out;
        }
        char what[64];
        snprintf(what, sizeof what, "seq %d alone MLM", i);
        fails += golden_compare(what, mlm, exp_mlm + m_off * v, (size_t)q->n_mask * v, rtol,
                         atol_mlm, &worst);
        if (exp_nsp) {
            snprintf(what, sizeof what, "seq %d alone NSP", i);
            fails += golden_compare(what, nsp, exp_nsp + (size_t)i * 2, 2, rtol, atol_nsp, &worst);
        }
        m_off += (size_t)q->n_mask;
    }
    printf("  worst: %.3f of the tolerance%s\n", worst, fails ? "; FAILED" : "");
    status = fails ? 1 : 0;
out:
    free(mlm);
    free(nsp);
    free(exp_mlm);
    free(exp_nsp);
    engine_session_close(s);
    engine_model_free(m);
    free(c->ints);
    free(c);
    model_dir_free(&md);
    return status;
}
