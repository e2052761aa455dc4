/* check_graph — the graph builder (BN folding, activation fusion, reshape), its
 * memory planner and the model/session API, on small checkpoints built in memory.
 * Numerical agreement with PyTorch on real architectures is tests/golden.sh's job. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/graph.h"
#include "tests/testutil.h"

static layer_spec conv(const char *prefix, int in, int out, int k, int pad, bool bias)
{
    layer_spec l = { .type = LAYER_CONV2D, .in_channels = in, .out_channels = out,
                     .kernel = { k, k }, .stride = { 1, 1 }, .padding = { pad, pad },
                     .dilation = { 1, 1 }, .groups = 1, .bias = bias };
    strcpy(l.prefix, prefix);
    return l;
}

static layer_spec simple(layer_type t, const char *prefix)
{
    layer_spec l = { .type = t, .eps = 1e-5f };
    strcpy(l.prefix, prefix);
    return l;
}

/* The checkpoint w describes, in memory: *buf holds it until safetensors_close. */
static safetensors *open_writer(st_writer *w, uint8_t **buf)
{
    size_t len;
    *buf = st_writer_finish(w, &len);
    safetensors *st;
    engine_err err;
    ck_assert_int_eq(safetensors_open_buffer(*buf, len, &st, &err), ENGINE_OK);
    return st;
}

/* A BatchNorm's four tensors "<prefix>.weight" ... "<prefix>.running_var", (c) each. */
static void st_add_bn(st_writer *w, const char *prefix, const float *gamma, const float *beta,
                      const float *mean, const float *var, int c)
{
    static const char *const names[4] = { "weight", "bias", "running_mean", "running_var" };
    const float *data[4] = { gamma, beta, mean, var };
    for (int i = 0; i < 4; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s.%s", prefix, names[i]);
        st_writer_add(w, key, data[i], 1, c);
    }
}

/* A conv->BN->ReLU->maxpool->flatten->linear net on (2,4,4), weights in memory. */
typedef struct fixture {
    float cw[3 * 2 * 3 * 3], cb[3], g[3], be[3], mu[3], var[3], lw[5 * 12], lb[5];
    uint8_t *buf;
    safetensors *st;
} fixture;

static void fixture_open(fixture *f, bool with_linear_weight)
{
    test_fill_random(f->cw, 54, 1);
    test_fill_random(f->cb, 3, 2);
    test_fill_random(f->g, 3, 3);
    test_fill_random(f->be, 3, 4);
    test_fill_random(f->mu, 3, 5);
    for (int i = 0; i < 3; i++)
        f->var[i] = 0.5f + (float)i;
    test_fill_random(f->lw, 60, 6);
    test_fill_random(f->lb, 5, 7);
    st_writer w = { 0 };
    st_writer_add(&w, "0.weight", f->cw, 4, 3, 2, 3, 3);
    st_writer_add(&w, "0.bias", f->cb, 1, 3);
    st_add_bn(&w, "1", f->g, f->be, f->mu, f->var, 3);
    if (with_linear_weight)
        st_writer_add(&w, "5.weight", f->lw, 2, 5, 12);
    st_writer_add(&w, "5.bias", f->lb, 1, 5);
    f->st = open_writer(&w, &f->buf);
}

static void fixture_close(fixture *f)
{
    safetensors_close(f->st);
    free(f->buf);
}

static int build_net(graph *g, fixture *f, engine_err *err)
{
    graph_builder b = { .g = g, .st = f->st, .status = ENGINE_OK, .err = err };
    layer_spec layers[6] = {
        conv("0", 2, 3, 3, 1, true), simple(LAYER_BATCHNORM2D, "1"), simple(LAYER_RELU, "2"),
        simple(LAYER_MAXPOOL2D, "3"), simple(LAYER_FLATTEN, "4"), simple(LAYER_LINEAR, "5"),
    };
    layers[1].num_features = 3;
    layers[3].kernel[0] = layers[3].kernel[1] = 2;
    layers[3].stride[0] = layers[3].stride[1] = 2;
    layers[3].dilation[0] = layers[3].dilation[1] = 1;
    layers[5].in_features = 12;
    layers[5].out_features = 5;
    layers[5].bias = true;
    int v = 0;
    for (int i = 0; i < 6; i++)
        v = graph_add_layer(&b, v, &layers[i]);
    return v;
}

START_TEST(test_fold_and_fuse)
{
    fixture f;
    fixture_open(&f, true);
    graph g;
    graph_init(&g, (graph_shape){ 2, 4, 4 });
    engine_err err;
    int out = build_net(&g, &f, &err);
    ck_assert_int_ge(out, 0);
    /* BN folded into the conv, ReLU fused: conv, maxpool, linear */
    ck_assert_int_eq(g.n_nodes, 3);
    ck_assert_int_eq(g.nodes[0].kind, OP_CONV2D);
    ck_assert_int_eq(g.nodes[0].act, ACT_RELU);
    ck_assert_int_eq(g.nodes[1].kind, OP_MAXPOOL2D);
    ck_assert_int_eq(g.nodes[2].kind, OP_LINEAR);
    ck_assert_int_eq(g.values[out].c, 5);
    ck_assert_int_eq(graph_plan(&g, out, 3, &err), ENGINE_OK);

    /* forward against the unfused arithmetic done here */
    float x[2 * 2 * 16], y[2 * 5], region_scratch[4096];
    test_fill_random(x, 64, 9);
    ck_assert_uint_le(g.region_floats + g.scratch_floats, 4096);
    graph_forward(&g, 2, x, y, region_scratch, region_scratch + g.region_floats);
    for (int n = 0; n < 2; n++) {
        float act[3][4][4], pooled[12];
        for (int oc = 0; oc < 3; oc++)
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) {
                    float s = f.cb[oc];
                    for (int ic = 0; ic < 2; ic++)
                        for (int ki = 0; ki < 3; ki++)
                            for (int kj = 0; kj < 3; kj++) {
                                int yi = i + ki - 1, xj = j + kj - 1;
                                if (yi < 0 || yi >= 4 || xj < 0 || xj >= 4)
                                    continue;
                                s += f.cw[((oc * 2 + ic) * 3 + ki) * 3 + kj] *
                                     x[((n * 2 + ic) * 4 + yi) * 4 + xj];
                            }
                    s = (s - f.mu[oc]) / sqrtf(f.var[oc] + 1e-5f) * f.g[oc] + f.be[oc];
                    act[oc][i][j] = s > 0 ? s : 0;
                }
        for (int oc = 0; oc < 3; oc++)
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++) {
                    float m = act[oc][2 * i][2 * j];
                    m = fmaxf(m, act[oc][2 * i][2 * j + 1]);
                    m = fmaxf(m, act[oc][2 * i + 1][2 * j]);
                    pooled[oc * 4 + i * 2 + j] = fmaxf(m, act[oc][2 * i + 1][2 * j + 1]);
                }
        for (int o = 0; o < 5; o++) {
            float s = f.lb[o];
            for (int k = 0; k < 12; k++)
                s += f.lw[o * 12 + k] * pooled[k];
            ck_assert_float_eq_tol(y[n * 5 + o], s, 1e-5f * (1 + fabsf(s)));
        }
    }
    graph_free(&g);
    fixture_close(&f);
}
END_TEST

START_TEST(test_missing_tensor_names_key)
{
    fixture f;
    fixture_open(&f, false);
    graph g;
    graph_init(&g, (graph_shape){ 2, 4, 4 });
    engine_err err;
    ck_assert_int_lt(build_net(&g, &f, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "missing tensor '5.weight'"));
    ck_assert_ptr_nonnull(strstr(err.msg, "[5, 12]"));
    graph_free(&g);
    fixture_close(&f);
}
END_TEST

START_TEST(test_wrong_shape_and_channels)
{
    fixture f;
    fixture_open(&f, true);
    engine_err err;
    graph g;
    /* 3 input channels where the conv was trained on 2 */
    graph_init(&g, (graph_shape){ 3, 4, 4 });
    graph_builder b = { .g = &g, .st = f.st, .status = ENGINE_OK, .err = &err };
    layer_spec c = conv("0", 3, 3, 3, 1, true);
    ck_assert_int_lt(graph_add_layer(&b, 0, &c), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "tensor '0.weight' has shape [3, 2, 3, 3], expected [3, 3, 3, 3]"));
    /* errors stick: later layers do nothing */
    layer_spec r = simple(LAYER_RELU, "1");
    ck_assert_int_lt(graph_add_layer(&b, 0, &r), 0);
    graph_free(&g);

    graph_init(&g, (graph_shape){ 2, 4, 4 });
    b = (graph_builder){ .g = &g, .st = f.st, .status = ENGINE_OK, .err = &err };
    layer_spec l = simple(LAYER_LINEAR, "5");
    l.in_features = 12, l.out_features = 5, l.bias = true;
    ck_assert_int_lt(graph_add_layer(&b, 0, &l), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "in_features 12 but the input has 32 features"));
    graph_free(&g);
    fixture_close(&f);
}
END_TEST

START_TEST(test_planner_reuses_dead_values)
{
    /* six standalone activations on (8,16,16): ping-pong between two slices */
    graph g;
    graph_init(&g, (graph_shape){ 8, 16, 16 });
    graph_builder b = { .g = &g, .status = ENGINE_OK };
    int v = 0;
    for (int i = 0; i < 6; i++) {
        layer_spec s = simple(LAYER_SIGMOID, "s");
        v = graph_add_layer(&b, v, &s);
    }
    ck_assert_int_eq(g.n_nodes, 6);
    engine_err err;
    ck_assert_int_eq(graph_plan(&g, v, 4, &err), ENGINE_OK);
    ck_assert_uint_eq(g.region_floats, 2u * 8 * 16 * 16 * 4);
    graph_free(&g);
}
END_TEST

START_TEST(test_residual_shapes)
{
    graph g;
    graph_init(&g, (graph_shape){ 4, 8, 8 });
    engine_err err;
    graph_builder b = { .g = &g, .status = ENGINE_OK, .err = &err };
    layer_spec p = simple(LAYER_MAXPOOL2D, "pool");
    p.kernel[0] = p.kernel[1] = p.stride[0] = p.stride[1] = 2;
    p.dilation[0] = p.dilation[1] = 1;
    int pooled = graph_add_layer(&b, 0, &p);
    ck_assert_int_lt(graph_add_residual(&b, 0, pooled, ACT_RELU), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "residual add"));
    graph_free(&g);
}
END_TEST

START_TEST(test_input_too_small)
{
    fixture f;
    fixture_open(&f, true);
    graph g;
    graph_init(&g, (graph_shape){ 2, 1, 1 });
    engine_err err;
    graph_builder b = { .g = &g, .st = f.st, .status = ENGINE_OK, .err = &err };
    layer_spec c = conv("0", 2, 3, 3, 0, true);
    ck_assert_int_lt(graph_add_layer(&b, 0, &c), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "too small"));
    graph_free(&g);
    fixture_close(&f);
}
END_TEST

/* A generator's head: Linear -> Unflatten -> BatchNorm2d -> ReLU.  The BN is per
 * channel of the unflattened value, so it folds into the Linear's rows channel by
 * channel (rows ch*4 .. ch*4+3 here), and the ReLU fuses: one node. */
START_TEST(test_unflatten_bn_fold)
{
    float lw[8 * 3], lb[8], g[2] = { 1.5f, 0.5f }, be[2] = { 0.1f, -0.2f };
    float mu[2] = { 0.3f, -0.4f }, var[2] = { 0.5f, 2.0f };
    test_fill_random(lw, 24, 31);
    test_fill_random(lb, 8, 32);
    st_writer w = { 0 };
    st_writer_add(&w, "0.weight", lw, 2, 8, 3);
    st_writer_add(&w, "0.bias", lb, 1, 8);
    st_add_bn(&w, "2", g, be, mu, var, 2);
    uint8_t *buf;
    safetensors *st = open_writer(&w, &buf);
    engine_err err;

    graph gr;
    graph_init(&gr, (graph_shape){ 3, 1, 1 });
    graph_builder b = { .g = &gr, .st = st, .status = ENGINE_OK, .err = &err };
    layer_spec lin = simple(LAYER_LINEAR, "0"), un = simple(LAYER_UNFLATTEN, "1");
    layer_spec bn = simple(LAYER_BATCHNORM2D, "2"), relu = simple(LAYER_RELU, "3");
    lin.in_features = 3;
    lin.out_features = 8;
    lin.bias = true;
    un.unflatten[0] = un.unflatten[1] = un.unflatten[2] = 2;
    bn.num_features = 2;
    int v = 0;
    v = graph_add_layer(&b, v, &lin);
    v = graph_add_layer(&b, v, &un);
    v = graph_add_layer(&b, v, &bn);
    v = graph_add_layer(&b, v, &relu);
    ck_assert_msg(v > 0, "%s", err.msg);
    ck_assert_int_eq(gr.n_nodes, 1);
    ck_assert_int_eq(gr.nodes[0].act, ACT_RELU);
    ck_assert_int_eq(graph_plan(&gr, v, 2, &err), ENGINE_OK);
    float x[2 * 3], y[2 * 8], region[256];
    test_fill_random(x, 6, 33);
    ck_assert_uint_le(gr.region_floats + gr.scratch_floats, 256);
    graph_forward(&gr, 2, x, y, region, region + gr.region_floats);
    for (int n = 0; n < 2; n++)
        for (int o = 0; o < 8; o++) {
            const int ch = o / 4;
            float s = lb[o];
            for (int k = 0; k < 3; k++)
                s += lw[o * 3 + k] * x[n * 3 + k];
            s = (s - mu[ch]) / sqrtf(var[ch] + 1e-5f) * g[ch] + be[ch];
            s = s > 0 ? s : 0;
            ck_assert_float_eq_tol(y[n * 8 + o], s, 1e-5f * (1 + fabsf(s)));
        }
    graph_free(&gr);
    safetensors_close(st);
    free(buf);
}
END_TEST

/* ConvTranspose2d -> BatchNorm2d -> Tanh folds and fuses into one node, and its
 * shape, scratch and FLOPs follow PyTorch's rules. */
START_TEST(test_deconv_node)
{
    float cw[4 * 3 * 2 * 2], g[3] = { 1, 2, 3 }, be[3] = { 0 }, mu[3] = { 0 }, var[3] = { 1, 1, 1 };
    test_fill_random(cw, 48, 34);
    st_writer w = { 0 };
    st_writer_add(&w, "0.weight", cw, 4, 4, 3, 2, 2);
    st_add_bn(&w, "1", g, be, mu, var, 3);
    uint8_t *buf;
    safetensors *st = open_writer(&w, &buf);
    engine_err err;
    graph gr;
    graph_init(&gr, (graph_shape){ 4, 3, 5 });
    graph_builder b = { .g = &gr, .st = st, .status = ENGINE_OK, .err = &err };
    layer_spec ct = simple(LAYER_CONV_TRANSPOSE2D, "0");
    ct.in_channels = 4;
    ct.out_channels = 3;
    ct.kernel[0] = ct.kernel[1] = 2;
    ct.stride[0] = 2, ct.stride[1] = 3;
    ct.dilation[0] = ct.dilation[1] = 1;
    ct.output_padding[1] = 2;
    ct.groups = 1;
    layer_spec bn = simple(LAYER_BATCHNORM2D, "1"), th = simple(LAYER_TANH, "2");
    bn.num_features = 3;
    int v = graph_add_layer(&b, 0, &ct);
    v = graph_add_layer(&b, v, &bn);
    v = graph_add_layer(&b, v, &th);
    ck_assert_msg(v > 0, "%s", err.msg);
    ck_assert_int_eq(gr.n_nodes, 1);
    ck_assert_int_eq(gr.nodes[0].kind, OP_CONV_TRANSPOSE2D);
    ck_assert_str_eq(op_kind_name(OP_CONV_TRANSPOSE2D), "conv_transpose2d");
    ck_assert_int_eq(gr.nodes[0].act, ACT_TANH);
    ck_assert_ptr_nonnull(gr.nodes[0].bias);   /* made by the fold */
    /* (3-1)*2 + 1 + 1 = 6 rows, (5-1)*3 + 1 + 2 + 1 = 16 columns */
    ck_assert(gr.values[v].c == 3 && gr.values[v].h == 6 && gr.values[v].w == 16);
    ck_assert_double_eq(graph_flops(&gr), 2.0 * 4 * 15 * 3 * 4);
    ck_assert_int_eq(graph_plan(&gr, v, 2, &err), ENGINE_OK);
    ck_assert_uint_eq(gr.scratch_floats, conv_transpose2d_scratch_floats(&gr.nodes[0].p.deconv, 2));
    graph_free(&gr);

    /* wrong weight layout: the (out, in) conv order is named as a shape error */
    graph_init(&gr, (graph_shape){ 3, 3, 5 });
    b = (graph_builder){ .g = &gr, .st = st, .status = ENGINE_OK, .err = &err };
    ct.in_channels = 3;
    ct.out_channels = 4;
    ck_assert_int_lt(graph_add_layer(&b, 0, &ct), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "tensor '0.weight' has shape [4, 3, 2, 2], expected "
                                          "[3, 4, 2, 2]"));
    graph_free(&gr);
    /* output_padding must be below stride or dilation */
    graph_init(&gr, (graph_shape){ 4, 3, 5 });
    b = (graph_builder){ .g = &gr, .st = st, .status = ENGINE_OK, .err = &err };
    ct.in_channels = 4;
    ct.out_channels = 3;
    ct.output_padding[1] = 3;
    ck_assert_int_lt(graph_add_layer(&b, 0, &ct), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "output_padding 3 must be smaller than stride 3"));
    graph_free(&gr);
    safetensors_close(st);
    free(buf);
}
END_TEST

static Suite *graph_suite(void)
{
    Suite *s = suite_create("graph");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_fold_and_fuse);
    tcase_add_test(tc, test_missing_tensor_names_key);
    tcase_add_test(tc, test_wrong_shape_and_channels);
    tcase_add_test(tc, test_planner_reuses_dead_values);
    tcase_add_test(tc, test_residual_shapes);
    tcase_add_test(tc, test_input_too_small);
    tcase_add_test(tc, test_unflatten_bn_fold);
    tcase_add_test(tc, test_deconv_node);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(graph_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
