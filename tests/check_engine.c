/* check_engine — the public engine API: loading a model directory, sessions,
 * batch bounds, errors, and reentrancy (several threads, one shared model, one
 * session each, identical answers).  Uses the committed default model, and for GAN
 * generators a tiny checkpoint written to a temporary file. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/models/gan.h"
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

/* ---- GAN generators ------------------------------------------------------------- */

/* A tiny conditional generator written to a temporary checkpoint: z (3) and a class
 * embedding (3 classes x 2) -> Linear(5, 8) -> Unflatten(2, 2, 2) ->
 * ConvTranspose2d(2, 1, 3, stride 2, padding 1, output_padding 1) -> Tanh: (1, 4, 4). */
typedef struct tiny_gan {
    float emb[3 * 2], lw[8 * 5], lb[8], cw[2 * 1 * 3 * 3], cb[1];
    char path[256];
    gan_spec spec;
    layer_spec layers[4];
} tiny_gan;

static layer_spec tiny_layer(layer_type t, const char *prefix)
{
    layer_spec l = { .type = t, .stride = { 1, 1 }, .dilation = { 1, 1 }, .groups = 1 };
    snprintf(l.prefix, sizeof l.prefix, "%s", prefix);
    return l;
}

static void tiny_gan_write(tiny_gan *t, bool with_embedding, int emb_cols)
{
    test_fill_random(t->emb, 6, 21);
    test_fill_random(t->lw, 40, 22);
    test_fill_random(t->lb, 8, 23);
    test_fill_random(t->cw, 18, 24);
    test_fill_random(t->cb, 1, 25);
    st_writer w = { 0 };
    if (with_embedding)
        st_writer_add(&w, "label_emb.weight", t->emb, 2, 3, emb_cols);
    st_writer_add(&w, "0.weight", t->lw, 2, 8, 5);
    st_writer_add(&w, "0.bias", t->lb, 1, 8);
    st_writer_add(&w, "2.weight", t->cw, 4, 2, 1, 3, 3);
    st_writer_add(&w, "2.bias", t->cb, 1, 1);
    size_t len;
    uint8_t *buf = st_writer_finish(&w, &len);
    const char *tmp = getenv("TMPDIR");
    snprintf(t->path, sizeof t->path, "%s/check_engine_gan.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(t->path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "wb");
    ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
    free(buf);

    t->layers[0] = tiny_layer(LAYER_LINEAR, "0");
    t->layers[0].in_features = 5;
    t->layers[0].out_features = 8;
    t->layers[0].bias = true;
    t->layers[1] = tiny_layer(LAYER_UNFLATTEN, "1");
    t->layers[1].unflatten[0] = t->layers[1].unflatten[1] = t->layers[1].unflatten[2] = 2;
    t->layers[2] = tiny_layer(LAYER_CONV_TRANSPOSE2D, "2");
    layer_spec *ct = &t->layers[2];
    ct->in_channels = 2;
    ct->out_channels = 1;
    ct->kernel[0] = ct->kernel[1] = 3;
    ct->stride[0] = ct->stride[1] = 2;
    ct->padding[0] = ct->padding[1] = 1;
    ct->output_padding[0] = ct->output_padding[1] = 1;
    ct->bias = true;
    t->layers[3] = tiny_layer(LAYER_TANH, "3");
    t->spec = (gan_spec){
        .arch = GAN_ARCH_LAYERS, .latent_dim = 3, .num_classes = 3,
        .condition = GAN_COND_EMBEDDING, .cond_key = "label_emb.weight",
        .out_channels = 1, .out_height = 4, .out_width = 4, .range = IMAGE_RANGE_TANH,
        .layers = t->layers, .n_layers = 4,
    };
}

static engine_model *tiny_gan_load(tiny_gan *t, int max_batch)
{
    engine_model *m = NULL;
    engine_err err;
    ck_assert_msg(engine_gan_load(&t->spec, t->path, max_batch, &m, &err) == ENGINE_OK, "%s",
                  err.msg);
    return m;
}

START_TEST(test_gan_api)
{
    tiny_gan t;
    tiny_gan_write(&t, true, 2);
    engine_model *m = tiny_gan_load(&t, 4);
    ck_assert_int_eq(engine_gan_latent_dim(m), 3);
    ck_assert_int_eq(engine_gan_num_classes(m), 3);
    int c, h, w;
    engine_gan_output_shape(m, &c, &h, &w);
    ck_assert(c == 1 && h == 4 && w == 4);
    engine_model_input_shape(m, &c, &h, &w);
    ck_assert(c == 3 && h == 1 && w == 1);
    ck_assert_int_eq(engine_model_num_outputs(m), 16);
    ck_assert_int_eq(engine_model_max_batch(m), 4);
    /* Linear 5 x 8, and every one of the 2 x 2 x 2 inputs meets 1 x 3 x 3 weights */
    ck_assert_double_eq(engine_model_flops(m), 2.0 * (5 * 8 + 8 * 9));

    engine_session *s;
    engine_err err;
    ck_assert_int_eq(engine_session_open(m, &s, &err), ENGINE_OK);
    float z[4 * 3], y[4 * 16], one[16];
    test_fill_random(z, 12, 26);
    const int32_t classes[4] = { 0, 2, 1, 2 };
    ck_assert_int_eq(engine_gan_forward(s, z, classes, 4, y, &err), ENGINE_OK);
    for (int i = 0; i < 64; i++)
        ck_assert(y[i] > -1.0f && y[i] < 1.0f); /* Tanh */
    /* a batch answers as its members alone */
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(engine_gan_forward(s, z + 3 * i, classes + i, 1, one, &err), ENGINE_OK);
        for (int k = 0; k < 16; k++)
            ck_assert_float_eq_tol(one[k], y[16 * i + k], 1e-6f);
    }
    /* the class matters: the same z with another class */
    const int32_t other = 1;
    ck_assert_int_eq(engine_gan_forward(s, z, &other, 1, one, &err), ENGINE_OK);
    ck_assert(memcmp(one, y, sizeof one) != 0);

    /* refusals, checked before any work */
    ck_assert_int_eq(engine_gan_forward(s, z, NULL, 1, y, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "needs a class for every sample (0..2)"));
    const int32_t bad[2] = { 1, 3 };
    ck_assert_int_eq(engine_gan_forward(s, z, bad, 2, y, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "class 3 (sample 1) is outside 0..2"));
    const int32_t neg = -1;
    ck_assert_int_eq(engine_gan_forward(s, z, &neg, 1, y, &err), ENGINE_ERR_INVALID);
    ck_assert_int_eq(engine_gan_forward(s, z, classes, 0, y, &err), ENGINE_ERR_INVALID);
    ck_assert_int_eq(engine_gan_forward(s, z, classes, 5, y, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "outside 1..4"));
    ck_assert_int_eq(engine_cnn_forward(s, z, 1, y, &err), ENGINE_ERR_INVALID);
    engine_session_close(s);
    engine_model_free(m);

    /* label_first puts the embedding row first: another input, another image */
    t.spec.label_first = true;
    m = tiny_gan_load(&t, 1);
    ck_assert_int_eq(engine_session_open(m, &s, &err), ENGINE_OK);
    ck_assert_int_eq(engine_gan_forward(s, z, classes, 1, one, &err), ENGINE_OK);
    ck_assert(memcmp(one, y, sizeof one) != 0);
    engine_session_close(s);
    engine_model_free(m);

    /* one-hot: F = 3 + 3 would not fit the Linear's 5 inputs */
    t.spec.condition = GAN_COND_ONE_HOT;
    ck_assert_int_eq(engine_gan_load(&t.spec, t.path, 1, &m, &err), ENGINE_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(err.msg, "in_features 5 but the input has 6 features"));
    /* one-hot over 2 classes fits, and an unconditional model refuses classes */
    t.spec.num_classes = 2;
    m = tiny_gan_load(&t, 1);
    engine_gan_output_shape(m, &c, &h, &w);
    ck_assert(c == 1 && h == 4 && w == 4);
    engine_model_free(m);
    unlink(t.path);

    tiny_gan_write(&t, false, 2);
    t.layers[0].in_features = 3;
    t.spec.num_classes = 0;
    t.spec.condition = GAN_COND_NONE;
    ck_assert_int_eq(engine_gan_load(&t.spec, t.path, 1, &m, &err), ENGINE_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(err.msg, "tensor '0.weight' has shape [8, 5], expected [8, 3]"));
    unlink(t.path);
}
END_TEST

START_TEST(test_gan_load_errors)
{
    tiny_gan t;
    engine_model *m = NULL;
    engine_err err;
    /* the embedding: missing, then of the wrong shape */
    tiny_gan_write(&t, false, 2);
    ck_assert_int_eq(engine_gan_load(&t.spec, t.path, 1, &m, &err), ENGINE_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(err.msg, "missing tensor 'label_emb.weight' (the class "
                                          "embedding), expected shape [3, embedding_dim]"));
    ck_assert_ptr_null(m);
    unlink(t.path);
    tiny_gan_write(&t, true, 1);   /* (3, 1): then F = 4, not the Linear's 5 */
    ck_assert_int_eq(engine_gan_load(&t.spec, t.path, 1, &m, &err), ENGINE_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(err.msg, "in_features 5 but the input has 4 features"));
    t.spec.num_classes = 2;
    ck_assert_int_eq(engine_gan_load(&t.spec, t.path, 1, &m, &err), ENGINE_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(err.msg, "'label_emb.weight' (the class embedding) must be "
                                          "[2, embedding_dim]"));
    unlink(t.path);

    /* the output shape must be the spec's, both named */
    tiny_gan_write(&t, true, 2);
    t.spec.out_height = 5;
    ck_assert_int_eq(engine_gan_load(&t.spec, t.path, 1, &m, &err), ENGINE_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(err.msg, "the generator's output is (1, 4, 4), expected "
                                          "(1, 5, 4)"));
    t.spec.out_height = 4;
    /* spec checks */
    t.spec.latent_dim = 0;
    ck_assert_int_eq(engine_gan_load(&t.spec, t.path, 1, &m, &err), ENGINE_ERR_INVALID);
    t.spec.latent_dim = 3;
    t.spec.condition = GAN_COND_NONE;
    ck_assert_int_eq(engine_gan_load(&t.spec, t.path, 1, &m, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "needs both num_classes and a condition"));
    t.spec.condition = GAN_COND_EMBEDDING;
    ck_assert_int_eq(engine_gan_load(&t.spec, t.path, 0, &m, &err), ENGINE_ERR_INVALID);
    ck_assert_int_eq(engine_gan_load(&t.spec, "/nonexistent.safetensors", 1, &m, &err),
                     ENGINE_ERR_IO);

    /* the DCGAN preset names the first key it misses, with its shape */
    t.spec.arch = GAN_ARCH_DCGAN;
    t.spec.ngf = 4;
    t.spec.out_channels = 3;
    t.spec.out_height = t.spec.out_width = 64;
    ck_assert_int_eq(engine_gan_load(&t.spec, t.path, 1, &m, &err), ENGINE_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(err.msg, "missing tensor 'main.0.weight', expected shape "
                                          "[5, 32, 4, 4]"));
    t.spec.ngf = 0;
    ck_assert_int_eq(engine_gan_load(&t.spec, t.path, 1, &m, &err), ENGINE_ERR_INVALID);
    unlink(t.path);
}
END_TEST

START_TEST(test_gan_forward_kind)
{
    /* a CNN answers no GAN forward */
    model_dir md;
    engine_model *m = load(&md, 1);
    engine_session *s;
    engine_err err;
    ck_assert_int_eq(engine_session_open(m, &s, &err), ENGINE_OK);
    float z[784], y[10];
    test_fill_random(z, 784, 1);
    ck_assert_int_eq(engine_gan_forward(s, z, NULL, 1, y, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a GAN"));
    ck_assert_int_eq(engine_gan_latent_dim(m), 0);
    ck_assert_int_eq(engine_gan_num_classes(m), 0);
    int c, h, w;
    engine_gan_output_shape(m, &c, &h, &w);
    ck_assert(c == 0 && h == 0 && w == 0);
    engine_session_close(s);
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
    tc = tcase_create("gan");
    tcase_add_test(tc, test_gan_api);
    tcase_add_test(tc, test_gan_load_errors);
    tcase_add_test(tc, test_gan_forward_kind);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
