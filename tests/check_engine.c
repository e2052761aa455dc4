/* check_engine — the public engine API: loading a model directory, sessions,
 * batch bounds, errors, and reentrancy (several threads, one shared model, one
 * session each, identical answers).  Uses the committed default model. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "proto/model_dir.h"
#include "tests/testutil.h"

static char fashion_dir[4096];

static void locate_model(void)
{
    const char *src = getenv("top_srcdir");
    snprintf(fashion_dir, sizeof fashion_dir, "%s/models/fashion", src ? src : ".");
}

static engine_model *load(model_dir *md, int max_batch)
{
    engine_err err;
    ck_assert_msg(model_dir_read(fashion_dir, md, &err) == ENGINE_OK, "%s", err.msg);
    engine_model *m = NULL;
    ck_assert_msg(engine_cnn_load(&md->cnn, md->weights_path, max_batch, &m, &err) == ENGINE_OK,
                  "%s", err.msg);
    return m;
}

START_TEST(test_shape_and_bounds)
{
    model_dir md;
    engine_model *m = load(&md, 4);
    int c, h, w;
    engine_model_input_shape(m, &c, &h, &w);
    ck_assert_int_eq(c, 1);
    ck_assert_int_eq(h, 28);
    ck_assert_int_eq(w, 28);
    ck_assert_int_eq(engine_model_num_outputs(m), 10);
    ck_assert_int_eq(engine_model_max_batch(m), 4);
    ck_assert(engine_model_flops(m) > 8e6 && engine_model_flops(m) < 9e6);

    engine_session *s;
    engine_err err;
    ck_assert_int_eq(engine_session_open(m, &s, &err), ENGINE_OK);
    float x[5 * 784], y[5 * 10];
    test_fill_random(x, 5 * 784, 3);
    ck_assert_int_eq(engine_cnn_forward(s, x, 0, y, &err), ENGINE_ERR_INVALID);
    ck_assert_int_eq(engine_cnn_forward(s, x, 5, y, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "outside 1..4"));
    ck_assert_int_eq(engine_cnn_forward(s, x, 4, y, &err), ENGINE_OK);
    engine_softmax(y, 4, 10);
    for (int i = 0; i < 4; i++) {
        float sum = 0;
        for (int k = 0; k < 10; k++)
            sum += y[i * 10 + k];
        ck_assert_float_eq_tol(sum, 1.0f, 1e-5f);
    }
    engine_session_close(s);
    engine_model_free(m);
    model_dir_free(&md);
}
END_TEST

START_TEST(test_load_errors)
{
    model_dir md;
    engine_err err;
    ck_assert_int_eq(model_dir_read(fashion_dir, &md, &err), ENGINE_OK);
    engine_model *m = NULL;
    ck_assert_int_eq(engine_cnn_load(&md.cnn, "/nonexistent/model.safetensors", 1, &m, &err),
                     ENGINE_ERR_IO);
    ck_assert_ptr_null(m);
    ck_assert_int_eq(engine_cnn_load(&md.cnn, md.weights_path, 0, &m, &err), ENGINE_ERR_INVALID);
    /* the checkpoint's last Linear has 10 outputs: claiming 11 classes must fail */
    md.cnn.num_classes = 11;
    md.cnn.layers[md.cnn.n_layers - 1].out_features = 11;
    ck_assert_int_eq(engine_cnn_load(&md.cnn, md.weights_path, 1, &m, &err), ENGINE_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(err.msg, "expected [11, 128]"));
    /* a resnet spec on the layer-list checkpoint names the first missing key */
    md.cnn.arch = CNN_ARCH_RESNET18;
    md.cnn.num_classes = 10;
    md.cnn.in_channels = 3;
    ck_assert_int_eq(engine_cnn_load(&md.cnn, md.weights_path, 1, &m, &err), ENGINE_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(err.msg, "missing tensor 'conv1.weight'"));
    model_dir_free(&md);
}
END_TEST

typedef struct worker_arg {
    const engine_model *m;
    const float *x;
    float y[8 * 10];
    engine_status status;
} worker_arg;

static void *run_worker(void *p)
{
    worker_arg *a = p;
    engine_session *s;
    engine_err err;
    a->status = engine_session_open(a->m, &s, &err);
    for (int iter = 0; iter < 20 && a->status == ENGINE_OK; iter++)
        a->status = engine_cnn_forward(s, a->x, 8, a->y, &err);
    engine_session_close(s);
    return NULL;
}

START_TEST(test_reentrant_sessions)
{
    model_dir md;
    engine_model *m = load(&md, 8);
    float *x = malloc(8 * 784 * sizeof *x);
    test_fill_random(x, 8 * 784, 11);
    worker_arg args[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg){ .m = m, .x = x };
        ck_assert_int_eq(pthread_create(&th[i], NULL, run_worker, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(args[i].status, ENGINE_OK);
        ck_assert_mem_eq(args[i].y, args[0].y, sizeof args[0].y);
    }
    free(x);
    engine_model_free(m);
    model_dir_free(&md);
}
END_TEST

int main(void)
{
    locate_model();
    Suite *s = suite_create("engine");
    TCase *tc = tcase_create("api");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_shape_and_bounds);
    tcase_add_test(tc, test_load_errors);
    tcase_add_test(tc, test_reentrant_sessions);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
