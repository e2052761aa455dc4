/* golden_cnn — runs a model directory on a PyTorch-made input and compares the
 * logits with PyTorch's, within the tolerance the generator wrote beside them.
 *
 *   golden_cnn CASE_DIR      (CASE_DIR from tests/golden/gen_cnn_golden.py)
 *
 * Checks the whole batch at once and every sample alone (a batch must answer as
 * its members would alone).  Prints the worst errors; exit 0 on pass, 1 on fail. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"
#include "proto/model_dir.h"

static float *read_floats(const char *dir, const char *name, size_t *count)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *buf = malloc(len > 0 ? (size_t)len : 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fprintf(stderr, "cannot read %s\n", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *count = (size_t)len / sizeof(float);
    return buf;
}

static int compare(const char *what, const float *got, const float *exp, size_t n, double rtol,
                   double atol)
{
    double worst_abs = 0, worst_excess = 0;
    size_t bad = 0, worst_at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - exp[i]);
        double allowed = atol + rtol * fabs(exp[i]);
        if (d > worst_abs)
            worst_abs = d;
        if (!(d <= allowed)) {
            bad++;
            if (d - allowed > worst_excess)
                worst_excess = d - allowed, worst_at = i;
        }
    }
    printf("  %-14s %zu values, max |diff| %.3g (rtol %.1g, atol %.3g)%s\n", what, n, worst_abs, rtol,
           atol, bad ? "  FAIL" : "");
    if (bad)
        printf("    %zu out of tolerance; worst at %zu: got %.8g expected %.8g\n", bad, worst_at,
               got[worst_at], exp[worst_at]);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: golden_cnn CASE_DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    engine_err err;
    model_dir md;
    if (model_dir_read(dir, &md, &err) != ENGINE_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    size_t n_in = 0, n_exp = 0;
    float *x = read_floats(dir, "input.f32", &n_in);
    float *expected = read_floats(dir, "expected.f32", &n_exp);
    double rtol = 1e-4, atol = 1e-5;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tolerance.txt", dir);
    FILE *tf = fopen(path, "r");
    if (tf) {
        if (fscanf(tf, "%lf %lf", &rtol, &atol) != 2)
            fprintf(stderr, "%s: expected 'rtol atol'\n", path);
        fclose(tf);
    }
    size_t per_in = (size_t)md.cnn.in_channels * md.cnn.in_height * md.cnn.in_width;
    size_t k = (size_t)md.cnn.num_classes;
    int status = 1;
    engine_model *m = NULL;
    engine_session *s = NULL;
    float *y = NULL;
    if (!x || !expected)
        goto out;
    int n = (int)(n_in / per_in);
    if (n < 1 || n_in != (size_t)n * per_in || n_exp != (size_t)n * k) {
        fprintf(stderr, "%s: input/expected sizes do not match the config\n", dir);
        goto out;
    }
    if (engine_cnn_load(&md.cnn, md.weights_path, n, &m, &err) != ENGINE_OK ||
        engine_session_open(m, &s, &err) != ENGINE_OK) {
        fprintf(stderr, "%s\n", err.msg);
        goto out;
    }
    y = malloc((size_t)n * k * sizeof *y);
    if (!y || engine_cnn_forward(s, x, n, y, &err) != ENGINE_OK) {
        fprintf(stderr, "forward: %s\n", y ? err.msg : "out of memory");
        goto out;
    }
    printf("%s: batch %d, %zu classes\n", dir, n, k);
    int fails = compare("batch", y, expected, (size_t)n * k, rtol, atol);
    for (int i = 0; i < n; i++) {
        if (engine_cnn_forward(s, x + (size_t)i * per_in, 1, y, &err) != ENGINE_OK) {
            fprintf(stderr, "forward: %s\n", err.msg);
            goto out;
        }
        char what[32];
        snprintf(what, sizeof what, "sample %d", i);
        fails += compare(what, y, expected + (size_t)i * k, k, rtol, atol);
    }
    status = fails ? 1 : 0;
out:
    free(y);
    engine_session_close(s);
    engine_model_free(m);
    free(x);
    free(expected);
    model_dir_free(&md);
    return status;
}
