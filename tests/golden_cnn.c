/* golden_cnn — runs a model directory on a PyTorch-made input and compares the
 * logits with PyTorch's, within the tolerance the generator wrote beside them.
 *
 *   golden_cnn CASE_DIR      (CASE_DIR from tests/golden/gen_cnn_golden.py)
 *
 * Checks the whole batch at once and every sample alone (a batch must answer as
 * its members would alone).  Prints the worst errors; exit 0 on pass, 1 on fail. */
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"
#include "proto/model_dir.h"
#include "tests/golden_util.h"

int main(int argc, char **argv)
{
    model_dir md;
    int rc = golden_open(argc, argv, "golden_cnn", &md);
    if (rc)
        return rc;
    const char *dir = argv[1];
    engine_err err;
    size_t n_in = 0, n_exp = 0;
    float *x = golden_read(dir, "input.f32", sizeof(float), &n_in);
    float *expected = golden_read(dir, "expected.f32", sizeof(float), &n_exp);
    double rtol = 1e-4, atol = 1e-5;
    golden_tolerance(dir, &rtol, &atol);
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
    int fails = golden_compare("batch", y, expected, (size_t)n * k, rtol, atol, NULL);
    for (int i = 0; i < n; i++) {
        if (engine_cnn_forward(s, x + (size_t)i * per_in, 1, y, &err) != ENGINE_OK) {
            fprintf(stderr, "forward: %s\n", err.msg);
            goto out;
        }
        char what[32];
        snprintf(what, sizeof what, "sample %d", i);
        fails += golden_compare(what, y, expected + (size_t)i * k, k, rtol, atol, NULL);
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
