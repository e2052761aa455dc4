/* golden_gan — runs a GAN generator directory on PyTorch's latents (and classes) and
 * compares the raw images with PyTorch's, within the tolerance the generator wrote
 * beside them.
 *
 *   golden_gan CASE_DIR      (CASE_DIR from tests/golden/gen_gan_golden.py)
 *
 * Checks the whole batch at once and every sample alone (a batch must answer as its
 * members would alone), and that a conditional model refuses missing or out-of-range
 * classes.  Prints the worst errors; exit 0 on pass, 1 on fail. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"
#include "proto/model_dir.h"
#include "tests/golden_util.h"

/* A conditional model must refuse NULL classes and ids outside 0..K-1; y has room
 * for two images. */
static int check_refusals(engine_session *s, const float *z, int k, float *y)
{
    engine_err err;
    int32_t bad[2] = { 0, k };
    int fails = 0;
    if (engine_gan_forward(s, z, NULL, 1, y, &err) != ENGINE_ERR_INVALID)
        fails++, printf("  NULL classes on a conditional model: not refused\n");
    if (engine_gan_forward(s, z, bad, 2, y, &err) != ENGINE_ERR_INVALID)
        fails++, printf("  class %d of %d: not refused\n", k, k);
    bad[1] = -1;
    if (engine_gan_forward(s, z, bad, 2, y, &err) != ENGINE_ERR_INVALID)
        fails++, printf("  class -1: not refused\n");
    return fails;
}

int main(int argc, char **argv)
{
    model_dir md;
    int rc = golden_open(argc, argv, "golden_gan", &md);
    if (rc)
        return rc;
    const char *dir = argv[1];
    engine_err err;
    if (md.kind != MODEL_KIND_GAN) {
        fprintf(stderr, "%s: not a GAN directory\n", dir);
        model_dir_free(&md);
        return 1;
    }
    const gan_spec *g = &md.gan;
    size_t n_z = 0, n_exp = 0, n_cls = 0;
    float *z = golden_read(dir, "z.f32", sizeof(float), &n_z);
    float *expected = golden_read(dir, "expected.f32", sizeof(float), &n_exp);
    int32_t *classes = g->num_classes ? golden_read(dir, "classes.i32", sizeof(int32_t), &n_cls)
                                      : NULL;
    double rtol = 1e-4, atol = 1e-5;
    golden_tolerance(dir, &rtol, &atol);
    const size_t per_img = (size_t)g->out_channels * g->out_height * g->out_width;
    const size_t nz = (size_t)g->latent_dim;
    int status = 1;
    engine_model *m = NULL;
    engine_session *s = NULL;
    float *y = NULL;
    if (!z || !expected || (g->num_classes && !classes))
        goto out;
    int n = (int)(n_z / nz);
    if (n < 1 || n_z != (size_t)n * nz || n_exp != (size_t)n * per_img ||
        (classes && n_cls != (size_t)n)) {
        fprintf(stderr, "%s: z/classes/expected sizes do not match the config\n", dir);
        goto out;
    }
    if (engine_gan_load(g, md.weights_path, n, &m, &err) != ENGINE_OK ||
        engine_session_open(m, &s, &err) != ENGINE_OK) {
        fprintf(stderr, "%s\n", err.msg);
        goto out;
    }
    y = malloc((size_t)n * per_img * sizeof *y);
    if (!y || engine_gan_forward(s, z, classes, n, y, &err) != ENGINE_OK) {
        fprintf(stderr, "forward: %s\n", y ? err.msg : "out of memory");
        goto out;
    }
    printf("%s: batch %d, images %dx%dx%d, %d classes, %.3g MFLOP per image\n", dir, n,
           g->out_channels, g->out_height, g->out_width, g->num_classes,
           engine_model_flops(m) / 1e6);
    int fails = golden_compare("batch", y, expected, (size_t)n * per_img, rtol, atol, NULL);
    for (int i = 0; i < n; i++) {
        if (engine_gan_forward(s, z + (size_t)i * nz, classes ? classes + i : NULL, 1, y, &err) !=
            ENGINE_OK) {
            fprintf(stderr, "forward: %s\n", err.msg);
            goto out;
        }
        char what[32];
        snprintf(what, sizeof what, "sample %d", i);
        fails += golden_compare(what, y, expected + (size_t)i * per_img, per_img, rtol, atol, NULL);
    }
    if (g->num_classes && n >= 2)
        fails += check_refusals(s, z, g->num_classes, y);
    status = fails ? 1 : 0;
out:
    free(y);
    engine_session_close(s);
    engine_model_free(m);
    free(z);
    free(expected);
    free(classes);
    model_dir_free(&md);
    return status;
}
