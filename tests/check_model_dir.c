/* check_model_dir.c — model directories (docs/MODELS.md) into native specs.
 *
 * Every test writes a directory under a fresh mkdtemp() directory: config.json (written
 * here with ' for " for legibility), labels.txt and an empty model.safetensors (only its
 * presence is checked here; the engine parses it).  Error cases check the status and
 * that the message names the file and the JSON path of what was wrong.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp under -std=c11 */

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/model_dir.h"

/* ---- directories ---------------------------------------------------------------- */

typedef struct tdir {
    char path[256];
} tdir;

static void put_file(const tdir *d, const char *name, const void *data, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", d->path, name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

/* config with ' standing for " */
static void put_config(const tdir *d, const char *config)
{
    size_t n = strlen(config);
    char *text = malloc(n + 1);
    ck_assert_ptr_nonnull(text);
    for (size_t i = 0; i <= n; i++)
        text[i] = config[i] == '\'' ? '"' : config[i];
    put_file(d, "config.json", text, n);
    free(text);
}

static void put_labels(const tdir *d, const char *labels)
{
    put_file(d, "labels.txt", labels, strlen(labels));
}

static tdir dir_new(void)
{
    tdir d;
    const char *tmp = getenv("TMPDIR");
    snprintf(d.path, sizeof d.path, "%s/check_model_dir.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(d.path));
    put_file(&d, "model.safetensors", "", 0);
    return d;
}

static void dir_remove(const tdir *d)
{
    static const char *names[] = {"config.json", "labels.txt", "model.safetensors",
                                  "vocab.txt", "tokenizer_config.json"};
    char p[512];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", d->path, names[i]);
        if (unlink(p) != 0)
            rmdir(p);   /* a test may have made one of them a directory */
    }
    rmdir(d->path);
}

/* A directory with config (' for ") and labels; reads it, returns the status. */
static engine_status read_dir(const char *config, const char *labels, model_dir *md,
                              engine_err *err)
{
    tdir d = dir_new();
    put_config(&d, config);
    put_labels(&d, labels);
    engine_status st = model_dir_read(d.path, md, err);
    dir_remove(&d);
    return st;
}

/* Expects status want and a message containing each of the NULL-terminated needles;
 * EXPECT() supplies the NULL. */
static void expect_error(const char *config, const char *labels, engine_status want, ...)
{
    model_dir md;
    engine_err err = {{0}};
    engine_status st = read_dir(config, labels, &md, &err);
    ck_assert_msg(st == want, "status %d, wanted %d: %s", st, want, err.msg);
    va_list ap;
    va_start(ap, want);
    for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *))
        ck_assert_msg(strstr(err.msg, s), "message \"%s\" lacks \"%s\"", err.msg, s);
    va_end(ap);
    /* a failed read leaves nothing to free */
    ck_assert_ptr_null(md.labels);
    ck_assert_ptr_null(md.cnn.layers);
    ck_assert_ptr_null(md.gan.layers);
    ck_assert_int_eq(md.n_labels, 0);
    model_dir_free(&md);
}

#define EXPECT(config, labels, want, ...) \
    expect_error(config, labels, want, __VA_ARGS__, (const char *)NULL)

#define HEAD "{'kind': 'cnn', 'architecture': 'layers', 'num_classes': 2, " \
    "'input': {'channels': 1, 'height': 8, 'width': 8}, "
/* a layer list config around one entry */
#define ONE(entry) HEAD "'layers': [" entry "]}"

/* ---- valid directories --------------------------------------------------------------- */

static const char *nested_config =
    "{'kind': 'cnn', 'architecture': 'layers', 'num_classes': 3,"
    " 'input': {'channels': 1, 'height': 28, 'width': 28, 'mean': [0.5], 'std': [0.25]},"
    " 'layers': ["
    "  {'type': 'Sequential', 'name': 'features', 'layers': ["
    "    {'type': 'Conv2d', 'in_channels': 1, 'out_channels': 4, 'kernel_size': 3,"
    "     'padding': [1, 2]},"
    "    {'type': 'BatchNorm2d', 'num_features': 4},"
    "    {'type': 'ReLU'},"
    "    {'type': 'MaxPool2d', 'kernel_size': 2},"
    "    {'type': 'Sequential', 'layers': ["
    "      {'type': 'Conv2d', 'in_channels': 4, 'out_channels': 4, 'kernel_size': [3, 1],"
    "       'groups': 2, 'bias': false, 'stride': 2, 'dilation': [1, 2]},"
    "      {'type': 'LeakyReLU'}]}]},"
    "  {'type': 'AvgPool2d', 'kernel_size': 3, 'stride': 1, 'padding': 1, 'ceil_mode': true,"
    "   'count_include_pad': false},"
    "  {'type': 'AdaptiveAvgPool2d', 'output_size': [2, 3]},"
    "  {'type': 'Flatten'},"
    "  {'type': 'Dropout'},"
    "  {'type': 'Sequential', 'name': 'classifier', 'layers': ["
    "    {'type': 'Linear', 'in_features': 24, 'out_features': 3},"
    "    {'type': 'ELU'},"
    "    {'type': 'Identity', 'name': 'head'}]},"
    "  {'type': 'Softmax', 'dim': 1}]}";

START_TEST(nested_layers_flatten)
{
    model_dir md;
    engine_err err = {{0}};
    ck_assert_msg(read_dir(nested_config, "cat\ndog\nbird\n", &md, &err) == ENGINE_OK, "%s",
                  err.msg);
    ck_assert_int_eq(md.kind, MODEL_KIND_CNN);
    ck_assert_int_eq(md.cnn.arch, CNN_ARCH_LAYERS);
    ck_assert_int_eq(md.cnn.num_classes, 3);
    ck_assert_int_eq(md.cnn.in_channels, 1);
    ck_assert_int_eq(md.cnn.in_height, 28);
    ck_assert_int_eq(md.cnn.in_width, 28);
    ck_assert_int_eq(md.preproc.channels, 1);
    ck_assert_int_eq(md.preproc.height, 28);
    ck_assert_int_eq(md.preproc.resize, IMAGE_RESIZE_STRETCH);
    ck_assert_float_eq(md.preproc.mean[0], 0.5f);
    ck_assert_float_eq(md.preproc.std[0], 0.25f);
    ck_assert_int_eq(md.n_labels, 3);
    ck_assert_str_eq(md.labels[0], "cat");
    ck_assert_str_eq(md.labels[2], "bird");
    const char *tail = "/model.safetensors";
    ck_assert_str_eq(md.weights_path + strlen(md.weights_path) - strlen(tail), tail);

    static const struct { layer_type type; const char *prefix; } want[] = {
        {LAYER_CONV2D, "features.0"},      {LAYER_BATCHNORM2D, "features.1"},
        {LAYER_RELU, "features.2"},        {LAYER_MAXPOOL2D, "features.3"},
        {LAYER_CONV2D, "features.4.0"},    {LAYER_LEAKY_RELU, "features.4.1"},
        {LAYER_AVGPOOL2D, "1"},            {LAYER_ADAPTIVE_AVGPOOL2D, "2"},
        {LAYER_FLATTEN, "3"},              {LAYER_DROPOUT, "4"},
        {LAYER_LINEAR, "classifier.0"},    {LAYER_ELU, "classifier.1"},
        {LAYER_IDENTITY, "classifier.head"}, {LAYER_SOFTMAX, "6"},
    };
    ck_assert_int_eq(md.cnn.n_layers, (int)(sizeof want / sizeof want[0]));
    for (int i = 0; i < md.cnn.n_layers; i++) {
        ck_assert_msg(md.cnn.layers[i].type == want[i].type, "layer %d type %d", i,
                      md.cnn.layers[i].type);
        ck_assert_str_eq(md.cnn.layers[i].prefix, want[i].prefix);
    }
    const layer_spec *l = md.cnn.layers;
    /* Conv2d defaults */
    ck_assert_int_eq(l[0].in_channels, 1);
    ck_assert_int_eq(l[0].out_channels, 4);
    ck_assert_int_eq(l[0].kernel[0], 3);
    ck_assert_int_eq(l[0].kernel[1], 3);
    ck_assert_int_eq(l[0].stride[0], 1);
    ck_assert_int_eq(l[0].padding[0], 1);
    ck_assert_int_eq(l[0].padding[1], 2);
    ck_assert_int_eq(l[0].dilation[1], 1);
    ck_assert_int_eq(l[0].groups, 1);
    ck_assert(l[0].bias);
    /* BatchNorm eps default */
    ck_assert_int_eq(l[1].num_features, 4);
    ck_assert_float_eq(l[1].eps, 1e-5f);
    /* MaxPool stride defaults to kernel_size */
    ck_assert_int_eq(l[3].kernel[0], 2);
    ck_assert_int_eq(l[3].stride[0], 2);
    ck_assert_int_eq(l[3].stride[1], 2);
    ck_assert_int_eq(l[3].padding[0], 0);
    ck_assert(!l[3].ceil_mode);
    /* explicit Conv2d arguments */
    ck_assert_int_eq(l[4].kernel[0], 3);
    ck_assert_int_eq(l[4].kernel[1], 1);
    ck_assert_int_eq(l[4].groups, 2);
    ck_assert(!l[4].bias);
    ck_assert_int_eq(l[4].stride[1], 2);
    ck_assert_int_eq(l[4].dilation[0], 1);
    ck_assert_int_eq(l[4].dilation[1], 2);
    ck_assert_float_eq(l[5].alpha, 0.01f);
    /* AvgPool2d */
    ck_assert_int_eq(l[6].stride[0], 1);
    ck_assert_int_eq(l[6].padding[1], 1);
    ck_assert(l[6].ceil_mode);
    ck_assert(!l[6].count_include_pad);
    ck_assert_int_eq(l[7].output_size[0], 2);
    ck_assert_int_eq(l[7].output_size[1], 3);
    ck_assert_int_eq(l[10].in_features, 24);
    ck_assert_int_eq(l[10].out_features, 3);
    ck_assert(l[10].bias);
    ck_assert_float_eq(l[11].alpha, 1.0f);
    model_dir_free(&md);
    ck_assert_ptr_null(md.labels);
    ck_assert_ptr_null(md.cnn.layers);
    model_dir_free(&md);   /* twice is harmless */
}
END_TEST

START_TEST(every_layer_type)
{
    const char *config =
        "{'kind': 'cnn', 'architecture': 'layers', 'num_classes': 2,"
        " 'input': {'channels': 3, 'height': 4, 'width': 4},"
        " 'layers': ["
        "  {'type': 'Linear', 'in_features': 48, 'out_features': 64, 'bias': false},"
        "  {'type': 'BatchNorm1d', 'num_features': 64, 'eps': 0.001},"
        "  {'type': 'Unflatten', 'dim': 1, 'unflattened_size': [4, 4, 4]},"
        "  {'type': 'ConvTranspose2d', 'in_channels': 4, 'out_channels': 2, 'kernel_size': 4,"
        "   'stride': 2, 'padding': 1, 'output_padding': [1, 0]},"
        "  {'type': 'ReLU6'}, {'type': 'Sigmoid'}, {'type': 'Tanh'}, {'type': 'GELU'},"
        "  {'type': 'SiLU'}, {'type': 'Dropout2d'},"
        "  {'type': 'LeakyReLU', 'negative_slope': 0.2}, {'type': 'ELU', 'alpha': 0.5},"
        "  {'type': 'AvgPool2d', 'kernel_size': [2, 4]},"
        "  {'type': 'MaxPool2d', 'kernel_size': 3, 'stride': null, 'padding': 1},"
        "  {'type': 'Flatten', 'start_dim': 1, 'end_dim': -1},"
        "  {'type': 'Softmax', 'dim': -1}, {'type': 'Softmax'}]}";
    model_dir md;
    engine_err err = {{0}};
    ck_assert_msg(read_dir(config, "a\nb", &md, &err) == ENGINE_OK, "%s", err.msg);
    static const layer_type want[] = {
        LAYER_LINEAR, LAYER_BATCHNORM1D, LAYER_UNFLATTEN, LAYER_CONV_TRANSPOSE2D,
        LAYER_RELU6, LAYER_SIGMOID, LAYER_TANH, LAYER_GELU, LAYER_SILU, LAYER_DROPOUT,
        LAYER_LEAKY_RELU, LAYER_ELU, LAYER_AVGPOOL2D, LAYER_MAXPOOL2D, LAYER_FLATTEN,
        LAYER_SOFTMAX, LAYER_SOFTMAX,
    };
    ck_assert_int_eq(md.cnn.n_layers, (int)(sizeof want / sizeof want[0]));
    const layer_spec *l = md.cnn.layers;
    for (int i = 0; i < md.cnn.n_layers; i++) {
        ck_assert_int_eq(l[i].type, want[i]);
        char idx[8];
        snprintf(idx, sizeof idx, "%d", i);
        ck_assert_str_eq(l[i].prefix, idx);
    }
    ck_assert(!l[0].bias);
    ck_assert_float_eq(l[1].eps, 0.001f);
    ck_assert_int_eq(l[2].unflatten[0], 4);
    ck_assert_int_eq(l[2].unflatten[2], 4);
    ck_assert_int_eq(l[3].kernel[1], 4);
    ck_assert_int_eq(l[3].stride[0], 2);
    ck_assert_int_eq(l[3].output_padding[0], 1);
    ck_assert_int_eq(l[3].output_padding[1], 0);
    ck_assert(l[3].bias);
    ck_assert_float_eq(l[10].alpha, 0.2f);
    ck_assert_float_eq(l[11].alpha, 0.5f);
    ck_assert_int_eq(l[12].kernel[0], 2);
    ck_assert_int_eq(l[12].kernel[1], 4);
    ck_assert_int_eq(l[12].stride[1], 4);
    ck_assert(l[12].count_include_pad);   /* PyTorch's default */
    ck_assert_int_eq(l[13].stride[0], 3);  /* stride null -> kernel_size */
    ck_assert_int_eq(l[13].padding[0], 1);
    /* mean/std defaults */
    for (int c = 0; c < 3; c++) {
        ck_assert_float_eq(md.preproc.mean[c], 0.0f);
        ck_assert_float_eq(md.preproc.std[c], 1.0f);
    }
    model_dir_free(&md);
}
END_TEST

START_TEST(torchvision_arch)
{
    const char *config =
        "{'kind': 'cnn', 'architecture': 'resnet18', 'num_classes': 3,"
        " 'input': {'channels': 3, 'height': 224, 'width': 224, 'resize': 'center_crop',"
        "  'resize_shorter': 256, 'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, 0.225]}}";
    model_dir md;
    engine_err err = {{0}};
    ck_assert_msg(read_dir(config, "x\ny\nz\n", &md, &err) == ENGINE_OK, "%s", err.msg);
    ck_assert_int_eq(md.cnn.arch, CNN_ARCH_RESNET18);
    ck_assert_int_eq(md.cnn.n_layers, 0);
    ck_assert_ptr_null(md.cnn.layers);
    ck_assert_int_eq(md.cnn.in_channels, 3);
    ck_assert_int_eq(md.preproc.resize, IMAGE_RESIZE_CENTER_CROP);
    ck_assert_int_eq(md.preproc.resize_shorter, 256);
    ck_assert_float_eq(md.preproc.mean[2], 0.406f);
    ck_assert_float_eq(md.preproc.std[1], 0.224f);
    model_dir_free(&md);

    const char *mobilenet =
        "{'kind': 'cnn', 'architecture': 'mobilenet_v2', 'num_classes': 1,"
        " 'input': {'channels': 3, 'height': 96, 'width': 128, 'resize': 'none'}}";
    ck_assert_msg(read_dir(mobilenet, "only\n", &md, &err) == ENGINE_OK, "%s", err.msg);
    ck_assert_int_eq(md.cnn.arch, CNN_ARCH_MOBILENET_V2);
    ck_assert_int_eq(md.preproc.resize, IMAGE_RESIZE_NONE);
    ck_assert_int_eq(md.preproc.width, 128);
    model_dir_free(&md);
}
END_TEST

START_TEST(arch_names)
{
    static const char *names[] = {"layers", "resnet18", "resnet34", "resnet50", "mobilenet_v2"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        cnn_arch a;
        ck_assert(cnn_arch_from_name(names[i], &a));
        ck_assert_str_eq(cnn_arch_name(a), names[i]);
    }
    cnn_arch a = CNN_ARCH_RESNET50;
    ck_assert(!cnn_arch_from_name("vgg16", &a));
    ck_assert(!cnn_arch_from_name("ResNet18", &a));
    ck_assert(!cnn_arch_from_name(NULL, &a));
    ck_assert_int_eq(a, CNN_ARCH_RESNET50);   /* untouched on failure */
    ck_assert_str_eq(cnn_arch_name((cnn_arch)99), "unknown");
    ck_assert_str_eq(model_kind_name(MODEL_KIND_CNN), "cnn");
    cnn_spec_free(NULL);
    cnn_spec spec = {0};
    cnn_spec_free(&spec);
}
END_TEST

/* ---- config.json errors ------------------------------------------------------------ */

START_TEST(layer_errors)
{
    const engine_status F = ENGINE_ERR_FORMAT;
    /* the brief's example: a nested unknown type, named by its path */
    EXPECT(HEAD "'layers': [{'type': 'ReLU'}, {'type': 'ReLU'}, {'type': 'ReLU'},"
                 " {'type': 'Sequential', 'layers': [{'type': 'ReLU'}, {'type': 'Conv3d'}]}]}",
                 "", F, "config.json: layers[3].layers[1]: unknown layer type \"Conv3d\"");
    EXPECT(ONE("{'type': 'Conv2d', 'in_channels': 1, 'out_channels': 2, 'kernel_size': 3,"
                     " 'strides': 2}"), "", F,
                 "layers[0]: unknown key \"strides\" for Conv2d");
    EXPECT(ONE("{'type': 'Conv2d', 'in_channels': 1, 'out_channels': 2}"), "", F,
                 "layers[0]: missing \"kernel_size\"");
    EXPECT(ONE("{'type': 'Conv2d', 'in_channels': 1, 'out_channels': 2, 'kernel_size': 0}"),
                 "", F, "layers[0].kernel_size: 0 is out of range");
    EXPECT(ONE("{'type': 'Conv2d', 'in_channels': 1, 'out_channels': 2, 'kernel_size': [3]}"),
                 "", F, "layers[0].kernel_size: must be an integer or an [h, w] pair");
    EXPECT(ONE("{'type': 'Conv2d', 'in_channels': 1, 'out_channels': 2, 'kernel_size': 3.0}"),
                 "", F, "layers[0].kernel_size");
    EXPECT(ONE("{'type': 'Conv2d', 'in_channels': 1, 'out_channels': 2, 'kernel_size': 3,"
                     " 'padding': [1, -1]}"), "", F, "layers[0].padding: -1 is out of range");
    EXPECT(ONE("{'type': 'Conv2d', 'in_channels': 1, 'out_channels': 2, 'kernel_size': 3,"
                     " 'padding': 'same'}"), "", F, "layers[0].padding: must be an integer");
    EXPECT(ONE("{'type': 'Conv2d', 'in_channels': 0, 'out_channels': 2, 'kernel_size': 3}"),
                 "", F, "layers[0].in_channels: 0 is out of range");
    EXPECT(ONE("{'type': 'Conv2d', 'in_channels': 4, 'out_channels': 6, 'kernel_size': 3,"
                     " 'groups': 3}"), "", F, "layers[0]: groups (3) must divide");
    EXPECT(ONE("{'type': 'Conv2d', 'in_channels': 1, 'out_channels': 2, 'kernel_size': 3,"
                     " 'bias': 1}"), "", F, "layers[0].bias: must be true or false");
    EXPECT(ONE("{'type': 'ConvTranspose2d', 'in_channels': 1, 'out_channels': 2,"
                     " 'kernel_size': 3, 'stride': 2, 'output_padding': 2}"), "", F,
                 "layers[0]: output_padding (2) must be smaller than stride (2)");
    EXPECT(ONE("{'type': 'Conv2d', 'in_channels': 1, 'out_channels': 2, 'kernel_size': 3,"
                     " 'output_padding': 0}"), "", F, "unknown key \"output_padding\"");
    EXPECT(ONE("{'type': 'MaxPool2d', 'kernel_size': 3, 'padding': 2}"), "", F,
                 "layers[0]: padding (2) must be at most half of kernel_size (3)");
    EXPECT(ONE("{'type': 'MaxPool2d', 'stride': 2}"), "", F,
                 "layers[0]: missing \"kernel_size\"");
    EXPECT(ONE("{'type': 'MaxPool2d', 'kernel_size': 2, 'count_include_pad': true}"), "",
                 F, "unknown key \"count_include_pad\" for MaxPool2d");
    EXPECT(ONE("{'type': 'AdaptiveAvgPool2d'}"), "", F, "missing \"output_size\"");
    EXPECT(ONE("{'type': 'AdaptiveAvgPool2d', 'output_size': [1, null]}"), "", F,
                 "layers[0].output_size");
    EXPECT(ONE("{'type': 'BatchNorm2d', 'num_features': 4, 'eps': 0}"), "", F,
                 "layers[0].eps: must be positive");
    EXPECT(ONE("{'type': 'BatchNorm2d', 'num_features': 4, 'eps': 'small'}"), "", F,
                 "layers[0].eps: must be a finite number");
    EXPECT(ONE("{'type': 'BatchNorm2d', 'num_features': 4, 'momentum': 0.1}"), "", F,
                 "unknown key \"momentum\" for BatchNorm2d");
    EXPECT(ONE("{'type': 'Linear', 'in_features': 4}"), "", F,
                 "missing \"out_features\"");
    EXPECT(ONE("{'type': 'LeakyReLU', 'negative_slope': 1e300}"), "", F,
                 "layers[0].negative_slope: must be a finite number");
    EXPECT(ONE("{'type': 'ReLU', 'inplace': true}"), "", F,
                 "unknown key \"inplace\" for ReLU");
    EXPECT(ONE("{'type': 'Flatten', 'start_dim': 2}"), "", F,
                 "layers[0].start_dim: must be 1");
    EXPECT(ONE("{'type': 'Flatten', 'end_dim': 2}"), "", F,
                 "layers[0].end_dim: must be -1");
    EXPECT(ONE("{'type': 'Softmax', 'dim': 0}"), "", F,
                 "layers[0].dim: must be 1 or -1");
    EXPECT(ONE("{'type': 'Unflatten', 'unflattened_size': [4, 7]}"), "", F,
                 "layers[0].unflattened_size: must be [C, H, W]");
    EXPECT(ONE("{'type': 'Unflatten', 'dim': 2, 'unflattened_size': [4, 7, 7]}"), "", F,
                 "layers[0].dim: must be 1");
    EXPECT(ONE("{'type': 'Unflatten', 'unflattened_size': [4096, 4096, 4096]}"), "", F,
                 "layers[0].unflattened_size");
    EXPECT(ONE("{'type': 'Unflatten'}"), "", F, "missing \"unflattened_size\"");
    EXPECT(ONE("5"), "", F, "layers[0]: must be an object");
    EXPECT(ONE("{'kernel_size': 3}"), "", F, "layers[0]: missing \"type\"");
    EXPECT(ONE("{'type': 7}"), "", F, "layers[0]: missing \"type\"");
    EXPECT(ONE("{'type': 'Sequential'}"), "", F,
                 "layers[0]: Sequential needs \"layers\"");
    EXPECT(ONE("{'type': 'Sequential', 'layers': [], 'bias': true}"), "", F,
                 "layers[0]: unknown key \"bias\" for Sequential");
    EXPECT(ONE("{'type': 'Sequential', 'layers': [{'type': 'ReLU', 'name': 'a.b'}]}"), "",
                 F, "layers[0].layers[0].name: \"a.b\" is not a module name");
    EXPECT(ONE("{'type': 'ReLU', 'name': ''}"), "", F, "layers[0].name");
    EXPECT(ONE("{'type': 'ReLU', 'name': 3}"), "", F, "layers[0].name: must be a string");
    /* two children with one key; a name that equals another's index */
    EXPECT(ONE("{'type': 'ReLU', 'name': 'x'}, {'type': 'ReLU', 'name': 'x'}"), "", F,
                 "layers[1]: key \"x\" is already used by layers[0]");
    EXPECT(ONE("{'type': 'ReLU', 'name': '1'}, {'type': 'ReLU'}"), "", F,
                 "layers[1]: key \"1\" is already used");
    EXPECT(HEAD "'layers': [{'type': 'Sequential', 'layers': []}]}", "", F,
                 "only empty Sequentials");
}
END_TEST

/* Nesting depth, layer count and key prefix length are bounded. */
START_TEST(layer_limits)
{
    enum { DEEP = 17 };
    char config[4096] = HEAD "'layers': [";
    for (int i = 0; i < DEEP; i++)
        strcat(config, "{'type': 'Sequential', 'layers': [");
    strcat(config, "{'type': 'ReLU'}");
    for (int i = 0; i < DEEP; i++)
        strcat(config, "]}");
    strcat(config, "]}");
    EXPECT(config, "", ENGINE_ERR_FORMAT, "Sequentials nested more than 16 deep");

    /* 16 deep is fine */
    strcpy(config, HEAD "'layers': [");
    for (int i = 0; i < 16; i++)
        strcat(config, "{'type': 'Sequential', 'layers': [");
    strcat(config, "{'type': 'ReLU'}");
    for (int i = 0; i < 16; i++)
        strcat(config, "]}");
    strcat(config, "]}");
    model_dir md;
    engine_err err = {{0}};
    ck_assert_msg(read_dir(config, "a\nb\n", &md, &err) == ENGINE_OK, "%s", err.msg);
    ck_assert_str_eq(md.cnn.layers[0].prefix, "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0");
    model_dir_free(&md);

    /* 4097 layers in one list, then 2048 + 2049 in two */
    size_t cap = 4097 * 20 + 512;
    char *big = malloc(cap), *end;
    ck_assert_ptr_nonnull(big);
    end = big + sprintf(big, HEAD "'layers': [");
    for (int i = 0; i < 4097; i++)
        end += sprintf(end, "%s{'type': 'ReLU'}", i ? ", " : "");
    strcpy(end, "]}");
    EXPECT(big, "", ENGINE_ERR_FORMAT, "more than 4096 layers");
    end = big + sprintf(big, HEAD "'layers': [{'type': 'Sequential', 'layers': [");
    for (int i = 0; i < 2048; i++)
        end += sprintf(end, "%s{'type': 'ReLU'}", i ? ", " : "");
    end += sprintf(end, "]}, {'type': 'Sequential', 'layers': [");
    for (int i = 0; i < 2049; i++)
        end += sprintf(end, "%s{'type': 'ReLU'}", i ? ", " : "");
    strcpy(end, "]}]}");
    EXPECT(big, "", ENGINE_ERR_FORMAT, "layers[1].layers[2048]: more than 4096 layers");
    free(big);

    /* prefix: 127 bytes fit, 128 do not */
    char name[128];
    memset(name, 'n', sizeof name);
    name[60] = '\0';   /* "<60>.<60>.0" = 123 bytes; then "<60>.<64>.0" = 127 */
    char cfg[1024];
    snprintf(cfg, sizeof cfg, HEAD "'layers': [{'type': 'Sequential', 'name': '%s', 'layers':"
             " [{'type': 'Sequential', 'name': '%.64s', 'layers': [{'type': 'ReLU'}]}]}]}",
             name, "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn");
    ck_assert_msg(read_dir(cfg, "a\nb\n", &md, &err) == ENGINE_OK, "%s", err.msg);
    ck_assert_uint_eq(strlen(md.cnn.layers[0].prefix), 127);
    model_dir_free(&md);
    snprintf(cfg, sizeof cfg, HEAD "'layers': [{'type': 'Sequential', 'name': '%s', 'layers':"
             " [{'type': 'Sequential', 'name': '%.65s', 'layers': [{'type': 'ReLU'}]}]}]}",
             name, "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn");
    EXPECT(cfg, "", ENGINE_ERR_FORMAT, "layers[0].layers[0].layers[0]: key prefix",
                 "longer than 127 bytes");
}
END_TEST

START_TEST(top_level_errors)
{
    const engine_status F = ENGINE_ERR_FORMAT;
    const char *relu = "'layers': [{'type': 'ReLU'}]}";
    char c[1024];
#define CFG(...) (snprintf(c, sizeof c, __VA_ARGS__), c)
    EXPECT(CFG("{'kind': 'rnn', 'architecture': 'layers', 'num_classes': 2, "
                     "'input': {'channels': 1, 'height': 8, 'width': 8}, %s", relu), "", F,
                 "config.json: kind: unknown kind \"rnn\" (this build serves \"cnn\" and "
                 "\"gan\")");
    EXPECT(CFG("{'architecture': 'layers', 'num_classes': 2, "
                     "'input': {'channels': 1, 'height': 8, 'width': 8}, %s", relu), "", F,
                 "missing \"kind\"");
    EXPECT(CFG("{'kind': 'cnn', 'architecture': 'vgg16', 'num_classes': 2, "
                     "'input': {'channels': 3, 'height': 8, 'width': 8}}"), "", F,
                 "architecture: unknown architecture \"vgg16\"");
    EXPECT(CFG("{'kind': 'cnn', 'num_classes': 2, "
                     "'input': {'channels': 3, 'height': 8, 'width': 8}}"), "", F,
                 "missing \"architecture\"");
    EXPECT(CFG("{'kind': 'cnn', 'architecture': 'layers', 'num_classes': 0, "
                     "'input': {'channels': 1, 'height': 8, 'width': 8}, %s", relu), "", F,
                 "num_classes: 0 is out of range");
    EXPECT(CFG("{'kind': 'cnn', 'architecture': 'layers', 'num_classes': 100001, "
                     "'input': {'channels': 1, 'height': 8, 'width': 8}, %s", relu), "", F,
                 "num_classes: 100001 is out of range");
    EXPECT(CFG("{'kind': 'cnn', 'architecture': 'layers', "
                     "'input': {'channels': 1, 'height': 8, 'width': 8}, %s", relu), "", F,
                 "missing \"num_classes\"");
    EXPECT(CFG("{'kind': 'cnn', 'architecture': 'layers', 'num_classes': 2, %s", relu),
                 "", F, "missing \"input\"");
    EXPECT(CFG("{'kind': 'cnn', 'architecture': 'layers', 'num_classes': 2, 'version': 1,"
                     "'input': {'channels': 1, 'height': 8, 'width': 8}, %s", relu), "", F,
                 "unknown key \"version\"");
    EXPECT(CFG("{'kind': 'cnn', 'architecture': 'resnet18', 'num_classes': 2, "
                     "'input': {'channels': 3, 'height': 8, 'width': 8}, %s", relu), "", F,
                 "config.json: layers: only applies to architecture \"layers\"");
    EXPECT(CFG("{'kind': 'cnn', 'architecture': 'resnet50', 'num_classes': 2, "
                     "'input': {'channels': 1, 'height': 8, 'width': 8}}"), "", F,
                 "input.channels: must be 3 for resnet50");
    EXPECT(CFG(HEAD "'layers': []}"), "", F, "non-empty \"layers\"");
    EXPECT(CFG(HEAD "'layers': {}}"), "", F, "non-empty \"layers\"");
    EXPECT(CFG("{'kind': 'cnn', 'architecture': 'layers', 'num_classes': 2, "
                     "'input': {'channels': 1, 'height': 8, 'width': 8}}"), "", F,
                 "non-empty \"layers\"");
    /* JSON itself */
    EXPECT("{'kind': 'cnn',", "", F, "config.json: line 1 column");
    EXPECT("[1, 2]", "", F, "config.json: must be a JSON object");
    EXPECT(CFG("{'kind': 'cnn', 'kind': 'cnn', 'architecture': 'layers', 'num_classes': 2,"
                     "'input': {'channels': 1, 'height': 8, 'width': 8}, %s", relu), "", F,
                 "duplicate");
#undef CFG
}
END_TEST

START_TEST(input_errors)
{
    const engine_status F = ENGINE_ERR_FORMAT;
    char c[1024];
#define IN(...) (snprintf(c, sizeof c, "{'kind': 'cnn', 'architecture': 'layers', " \
    "'num_classes': 2, 'input': {" __VA_ARGS__ "}, 'layers': [{'type': 'ReLU'}]}"), c)
    EXPECT(IN("'channels': 2, 'height': 8, 'width': 8"), "", F,
                 "config.json: input.channels: must be 1 or 3");
    EXPECT(IN("'channels': 4, 'height': 8, 'width': 8"), "", F,
                 "input.channels: 4 is out of range");
    EXPECT(IN("'height': 8, 'width': 8"), "", F, "input: missing \"channels\"");
    EXPECT(IN("'channels': 1, 'height': 0, 'width': 8"), "", F,
                 "input.height: 0 is out of range");
    EXPECT(IN("'channels': 1, 'height': 8, 'width': 4097"), "", F,
                 "input.width: 4097 is out of range");
    EXPECT(IN("'channels': 1, 'height': 8, 'width': 8, 'resize': 'crop'"), "", F,
                 "input.resize: unknown mode \"crop\"");
    EXPECT(IN("'channels': 1, 'height': 8, 'width': 8, 'resize': 1"), "", F,
                 "input.resize: must be a string");
    EXPECT(IN("'channels': 1, 'height': 8, 'width': 8, 'resize': 'center_crop'"), "", F,
                 "input: missing \"resize_shorter\"");
    EXPECT(IN("'channels': 1, 'height': 8, 'width': 10, 'resize': 'center_crop', "
                    "'resize_shorter': 9"), "", F,
                 "input.resize_shorter: 9 is smaller than the 10x8 crop");
    EXPECT(IN("'channels': 1, 'height': 8, 'width': 8, 'resize_shorter': 9"), "", F,
                 "input.resize_shorter: only applies to resize \"center_crop\"");
    EXPECT(IN("'channels': 1, 'height': 8, 'width': 8, 'mean': [0.5, 0.5]"), "", F,
                 "input.mean: must be an array of 1 number");
    EXPECT(IN("'channels': 3, 'height': 8, 'width': 8, 'std': 0.5"), "", F,
                 "input.std: must be an array of 3 numbers");
    EXPECT(IN("'channels': 3, 'height': 8, 'width': 8, 'std': [1, 0, 1]"), "", F,
                 "config.json: input.std[1]: must not be 0");
    EXPECT(IN("'channels': 3, 'height': 8, 'width': 8, 'mean': [0, '1', 0]"), "", F,
                 "input.mean[1]: must be a finite number");
    EXPECT(IN("'channels': 1, 'height': 8, 'width': 8, 'scale': 1"), "", F,
                 "input: unknown key \"scale\" for input");
#undef IN
    EXPECT("{'kind': 'cnn', 'architecture': 'layers', 'num_classes': 2, 'input': [1],"
                 " 'layers': [{'type': 'ReLU'}]}", "", F, "input: must be an object");
}
END_TEST

/* ---- labels.txt ------------------------------------------------------------------------ */

static const char *cfg3 = ONE("{'type': 'ReLU'}");   /* num_classes 2 */

START_TEST(labels)
{
    model_dir md;
    engine_err err = {{0}};
    /* CRLF, last line without a newline */
    ck_assert_msg(read_dir(cfg3, "T-shirt\r\nTrouser\r", &md, &err) == ENGINE_OK, "%s", err.msg);
    ck_assert_int_eq(md.n_labels, 2);
    ck_assert_str_eq(md.labels[0], "T-shirt");
    ck_assert_str_eq(md.labels[1], "Trouser");
    model_dir_free(&md);
    /* UTF-8 and a byte-order mark */
    ck_assert_msg(read_dir(cfg3, "\xef\xbb\xbf" "chat \xc3\xa9t\xc3\xa9\n\xe7\x8c\xab \xf0\x9f\x90\x88\n",
                           &md, &err) == ENGINE_OK, "%s", err.msg);
    ck_assert_str_eq(md.labels[0], "chat \xc3\xa9t\xc3\xa9");
    ck_assert_str_eq(md.labels[1], "\xe7\x8c\xab \xf0\x9f\x90\x88");
    model_dir_free(&md);
    /* exactly MODEL_DIR_MAX_LABEL_LEN bytes */
    char longest[MODEL_DIR_MAX_LABEL_LEN + 8];
    memset(longest, 'x', MODEL_DIR_MAX_LABEL_LEN);
    strcpy(longest + MODEL_DIR_MAX_LABEL_LEN, "\ny\n");
    ck_assert_msg(read_dir(cfg3, longest, &md, &err) == ENGINE_OK, "%s", err.msg);
    ck_assert_uint_eq(strlen(md.labels[0]), MODEL_DIR_MAX_LABEL_LEN);
    model_dir_free(&md);

    const engine_status F = ENGINE_ERR_FORMAT;
    EXPECT(cfg3, "one\n", F, "labels.txt: 1 label, but config.json num_classes is 2");
    EXPECT(cfg3, "a\nb\nc", F, "labels.txt: 3 labels, but config.json num_classes is 2");
    EXPECT(cfg3, "", F, "labels.txt: 0 labels");
    EXPECT(cfg3, "a\n\nb\n", F, "labels.txt: line 2 is empty");
    EXPECT(cfg3, "a\nb\n\n", F, "labels.txt: line 3 is empty");
    EXPECT(cfg3, "a\r\n\r\n", F, "labels.txt: line 2 is empty");
    longest[MODEL_DIR_MAX_LABEL_LEN] = 'x';   /* 257 bytes */
    strcpy(longest + MODEL_DIR_MAX_LABEL_LEN + 1, "\ny\n");
    EXPECT(cfg3, longest, F, "labels.txt: line 1 is 257 bytes");
    EXPECT(cfg3, "a\tb\nc\n", F, "labels.txt: line 1 has a control character (0x09)");
    EXPECT(cfg3, "a\rb\n", F, "line 1 has a control character (0x0d)");
    static const char *bad_utf8[] = {
        "ok\n\xc3\x28\n",              /* bad continuation */
        "ok\n\xc0\xaf\n",              /* overlong '/' */
        "ok\n\xe0\x80\xaf\n",          /* overlong, 3 bytes */
        "ok\n\xed\xa0\x80\n",          /* surrogate */
        "ok\n\xf4\x90\x80\x80\n",      /* above U+10FFFF */
        "ok\n\xf5\x80\x80\x80\n",
        "ok\nab\xe2\x82\n",            /* truncated at end of line */
        "ok\n\x80\n",                  /* lone continuation */
    };
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++)
        EXPECT(cfg3, bad_utf8[i], F, "labels.txt: line 2 is not valid UTF-8");
    /* a NUL inside a label */
    tdir d = dir_new();
    put_config(&d, cfg3);
    put_file(&d, "labels.txt", "a\0b\nc\n", 6);
    ck_assert_int_eq(model_dir_read(d.path, &md, &err), F);
    ck_assert_msg(strstr(err.msg, "line 1 has a control character (0x00)"), "%s", err.msg);
    dir_remove(&d);
}
END_TEST

/* ---- files ----------------------------------------------------------------------------- */

START_TEST(missing_files)
{
    model_dir md;
    engine_err err = {{0}};
    tdir d = dir_new();
    ck_assert_int_eq(model_dir_read(d.path, &md, &err), ENGINE_ERR_IO);
    ck_assert_msg(strstr(err.msg, d.path) && strstr(err.msg, "/config.json: "), "%s", err.msg);

    put_config(&d, cfg3);
    ck_assert_int_eq(model_dir_read(d.path, &md, &err), ENGINE_ERR_IO);
    ck_assert_msg(strstr(err.msg, "/labels.txt: "), "%s", err.msg);

    put_labels(&d, "a\nb\n");
    ck_assert_int_eq(model_dir_read(d.path, &md, &err), ENGINE_OK);
    model_dir_free(&md);

    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors", d.path);
    ck_assert_int_eq(unlink(p), 0);
    ck_assert_int_eq(model_dir_read(d.path, &md, &err), ENGINE_ERR_IO);
    ck_assert_msg(strstr(err.msg, "/model.safetensors: "), "%s", err.msg);
    ck_assert_ptr_null(md.labels);   /* labels read before are freed again */

    /* a directory where a file should be */
    ck_assert_int_eq(mkdir(p, 0700), 0);
    ck_assert_int_eq(model_dir_read(d.path, &md, &err), ENGINE_ERR_IO);
    ck_assert_msg(strstr(err.msg, "model.safetensors: not a regular file"), "%s", err.msg);
    dir_remove(&d);

    ck_assert_int_eq(model_dir_read("/nonexistent/modeld/dir", &md, &err), ENGINE_ERR_IO);
    ck_assert_msg(strstr(err.msg, "/nonexistent/modeld/dir/config.json"), "%s", err.msg);
    ck_assert_int_eq(model_dir_read(NULL, &md, &err), ENGINE_ERR_INVALID);
}
END_TEST

START_TEST(config_too_large)
{
    tdir d = dir_new();
    size_t n = ((size_t)4 << 20) + 1;
    char *text = malloc(n);
    ck_assert_ptr_nonnull(text);
    memset(text, ' ', n);
    text[0] = '{';
    text[n - 1] = '}';
    put_file(&d, "config.json", text, n);
    put_labels(&d, "a\nb\n");
    free(text);
    model_dir md;
    engine_err err = {{0}};
    ck_assert_int_eq(model_dir_read(d.path, &md, &err), ENGINE_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "config.json: 4194305 bytes"), "%s", err.msg);
    dir_remove(&d);
}
END_TEST

/* ---- BERT directories (Hugging Face layout) ------------------------------------------ */

/* config.json as save_pretrained writes it for a small BertForPreTraining, with the
 * keys modeld has no use for (they must be ignored, not refused). */
#define BERT_CFG(extra) "{'architectures': ['BertForPreTraining'], " \
    "'attention_probs_dropout_prob': 0.1, 'classifier_dropout': null, 'hidden_act': 'gelu', " \
    "'hidden_dropout_prob': 0.1, 'hidden_size': 64, 'initializer_range': 0.02, " \
    "'intermediate_size': 128, 'layer_norm_eps': 1e-12, 'max_position_embeddings': 64, " \
    "'model_type': 'bert', 'num_attention_heads': 4, 'num_hidden_layers': 2, " \
    "'pad_token_id': 0, 'position_embedding_type': 'absolute', 'torch_dtype': 'float32', " \
    "'transformers_version': '4.30.2', 'type_vocab_size': 2, 'use_cache': true, " \
    "'vocab_size': 300" extra "}"

/* A BERT directory: config (' for "), vocab.txt unless !vocab, tokenizer_config.json
 * when tok is non-NULL (' for "); reads it and returns the status. */
static engine_status read_bert_dir(const char *config, const char *tok, bool vocab,
                                   model_dir *md, engine_err *err)
{
    tdir d = dir_new();
    put_config(&d, config);
    if (vocab)
        put_file(&d, "vocab.txt", "[PAD]\n[UNK]\n", 12);
    if (tok) {
        char *t = strdup(tok);
        ck_assert_ptr_nonnull(t);
        for (char *c = t; *c; c++)
            if (*c == '\'')
                *c = '"';
        put_file(&d, "tokenizer_config.json", t, strlen(t));
        free(t);
    }
    engine_status st = model_dir_read(d.path, md, err);
    dir_remove(&d);
    return st;
}

static void expect_bert_error(const char *config, const char *tok, bool vocab,
                              engine_status want, const char *needle)
{
    model_dir md;
    engine_err err = {{0}};
    engine_status st = read_bert_dir(config, tok, vocab, &md, &err);
    ck_assert_msg(st == want, "status %d, wanted %d: %s", st, want, err.msg);
    ck_assert_msg(strstr(err.msg, needle), "message \"%s\" lacks \"%s\"", err.msg, needle);
    model_dir_free(&md);
}

START_TEST(bert_dir)
{
    model_dir md;
    engine_err err = {{0}};
    ck_assert_msg(read_bert_dir(BERT_CFG(", 'tie_word_embeddings': false"),
                                "{'do_lower_case': false, 'model_max_length': 512, "
                                "'tokenizer_class': 'BertTokenizer', 'strip_accents': null}",
                                true, &md, &err) == ENGINE_OK, "%s", err.msg);
    ck_assert_int_eq(md.kind, MODEL_KIND_BERT);
    ck_assert_str_eq(model_kind_name(md.kind), "bert");
    ck_assert_int_eq(md.bert.vocab_size, 300);
    ck_assert_int_eq(md.bert.hidden_size, 64);
    ck_assert_int_eq(md.bert.num_hidden_layers, 2);
    ck_assert_int_eq(md.bert.num_attention_heads, 4);
    ck_assert_int_eq(md.bert.intermediate_size, 128);
    ck_assert_int_eq(md.bert.max_position_embeddings, 64);
    ck_assert_int_eq(md.bert.type_vocab_size, 2);
    ck_assert_float_eq(md.bert.layer_norm_eps, 1e-12f);
    ck_assert(!md.bert.hidden_act_relu);
    ck_assert(!md.do_lower_case);
    ck_assert_int_eq(md.n_labels, 0);
    ck_assert_ptr_null(md.labels);
    const char *tail = "/vocab.txt", *wtail = "/model.safetensors";
    ck_assert_str_eq(md.vocab_path + strlen(md.vocab_path) - strlen(tail), tail);
    ck_assert_str_eq(md.weights_path + strlen(md.weights_path) - strlen(wtail), wtail);
    model_dir_free(&md);

    /* nothing but model_type: BertConfig's defaults; no tokenizer_config.json: lower case */
    ck_assert_msg(read_bert_dir("{'model_type': 'bert'}", NULL, true, &md, &err) == ENGINE_OK,
                  "%s", err.msg);
    ck_assert_int_eq(md.bert.vocab_size, 30522);
    ck_assert_int_eq(md.bert.hidden_size, 768);
    ck_assert_int_eq(md.bert.num_hidden_layers, 12);
    ck_assert_int_eq(md.bert.num_attention_heads, 12);
    ck_assert_int_eq(md.bert.intermediate_size, 3072);
    ck_assert_int_eq(md.bert.max_position_embeddings, 512);
    ck_assert_int_eq(md.bert.type_vocab_size, 2);
    ck_assert_float_eq(md.bert.layer_norm_eps, 1e-12f);
    ck_assert(!md.bert.hidden_act_relu);
    ck_assert(md.do_lower_case);
    model_dir_free(&md);

    /* relu, BertForMaskedLM, a tokenizer config without do_lower_case */
    ck_assert_msg(read_bert_dir("{'model_type': 'bert', 'hidden_act': 'relu', "
                                "'architectures': ['BertForMaskedLM'], 'layer_norm_eps': 1e-5}",
                                "{'model_max_length': 128, 'tokenize_chinese_chars': true, "
                                "'strip_accents': true}", true, &md, &err) == ENGINE_OK,
                  "%s", err.msg);
    ck_assert(md.bert.hidden_act_relu);
    ck_assert_float_eq(md.bert.layer_norm_eps, 1e-5f);
    ck_assert(md.do_lower_case);
    model_dir_free(&md);
}
END_TEST

START_TEST(bert_config_errors)
{
    const engine_status F = ENGINE_ERR_FORMAT;
    const char *tok = "{'do_lower_case': true}";
    expect_bert_error("{'model_type': 'roberta'}", tok, true, F,
                      "config.json: model_type: unknown model_type \"roberta\"");
    expect_bert_error("{'model_type': 7}", tok, true, F, "model_type: must be a string");
    expect_bert_error(BERT_CFG(", 'architectures': ['BertModel']"), tok, true, F, "duplicate");
    expect_bert_error("{'model_type': 'bert', 'architectures': ['BertModel']}", tok, true, F,
                      "architectures: names neither BertForMaskedLM nor BertForPreTraining");
    expect_bert_error("{'model_type': 'bert', 'architectures': 'BertForMaskedLM'}", tok, true,
                      F, "architectures: must be an array");
    expect_bert_error("{'model_type': 'bert', 'architectures': [3]}", tok, true, F,
                      "architectures[0]: must be a string");
    expect_bert_error("{'model_type': 'bert', 'hidden_act': 'gelu_new'}", tok, true, F,
                      "hidden_act: \"gelu_new\" is not supported");
    expect_bert_error("{'model_type': 'bert', 'hidden_act': 'silu'}", tok, true, F,
                      "hidden_act: \"silu\" is not supported");
    expect_bert_error("{'model_type': 'bert', 'hidden_act': 1}", tok, true, F,
                      "hidden_act: must be a string");
    expect_bert_error("{'model_type': 'bert', 'hidden_size': 100}", tok, true, F,
                      "num_attention_heads: hidden_size (100) must be a multiple of "
                      "num_attention_heads (12)");
    expect_bert_error("{'model_type': 'bert', 'vocab_size': 0}", tok, true, F,
                      "vocab_size: 0 is out of range");
    expect_bert_error("{'model_type': 'bert', 'num_hidden_layers': 0}", tok, true, F,
                      "num_hidden_layers: 0 is out of range");
    expect_bert_error("{'model_type': 'bert', 'num_hidden_layers': 100000}", tok, true, F,
                      "num_hidden_layers: 100000 is out of range");
    expect_bert_error("{'model_type': 'bert', 'intermediate_size': 2.5}", tok, true, F,
                      "intermediate_size: must be an integer");
    expect_bert_error("{'model_type': 'bert', 'max_position_embeddings': -1}", tok, true, F,
                      "max_position_embeddings: -1 is out of range");
    expect_bert_error("{'model_type': 'bert', 'type_vocab_size': 0}", tok, true, F,
                      "type_vocab_size: 0 is out of range");
    expect_bert_error("{'model_type': 'bert', 'layer_norm_eps': 0}", tok, true, F,
                      "layer_norm_eps: must be positive");
    expect_bert_error("{'model_type': 'bert', 'layer_norm_eps': 'small'}", tok, true, F,
                      "layer_norm_eps: must be a finite number");
    expect_bert_error("{'model_type': 'bert', 'position_embedding_type': 'relative_key'}", tok,
                      true, F, "position_embedding_type: \"relative_key\" is not supported");
    expect_bert_error("{'model_type': 'bert', 'is_decoder': true}", tok, true, F,
                      "is_decoder: a causal (decoder) BERT is not supported");
    /* neither kind nor model_type: the CNN message, pointing at both */
    expect_bert_error("{'num_classes': 2}", tok, true, F,
                      "missing \"kind\" (a string), or \"model_type\"");
}
END_TEST

START_TEST(bert_tokenizer_files)
{
    const engine_status F = ENGINE_ERR_FORMAT;
    const char *cfg = "{'model_type': 'bert'}";
    expect_bert_error(cfg, NULL, false, ENGINE_ERR_IO, "/vocab.txt: ");
    expect_bert_error(cfg, "{'do_lower_case': true", true, F,
                      "tokenizer_config.json: line 1");
    expect_bert_error(cfg, "[true]", true, F, "tokenizer_config.json: must be a JSON object");
    expect_bert_error(cfg, "{'do_lower_case': 'yes'}", true, F,
                      "tokenizer_config.json: do_lower_case: must be true or false");
    expect_bert_error(cfg, "{'do_lower_case': true, 'strip_accents': false}", true, F,
                      "strip_accents: must be null or equal to do_lower_case (true)");
    expect_bert_error(cfg, "{'do_lower_case': false, 'strip_accents': true}", true, F,
                      "strip_accents: must be null or equal to do_lower_case (false)");
    expect_bert_error(cfg, "{'tokenize_chinese_chars': false}", true, F,
                      "tokenize_chinese_chars: must be true");

    /* vocab.txt a directory; model.safetensors missing */
    tdir d = dir_new();
    put_config(&d, cfg);
    char p[512];
    snprintf(p, sizeof p, "%s/vocab.txt", d.path);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    model_dir md;
    engine_err err = {{0}};
    ck_assert_int_eq(model_dir_read(d.path, &md, &err), ENGINE_ERR_IO);
    ck_assert_msg(strstr(err.msg, "vocab.txt: not a regular file"), "%s", err.msg);
    ck_assert_int_eq(rmdir(p), 0);
    put_file(&d, "vocab.txt", "[UNK]\n", 6);
    snprintf(p, sizeof p, "%s/model.safetensors", d.path);
    ck_assert_int_eq(unlink(p), 0);
    ck_assert_int_eq(model_dir_read(d.path, &md, &err), ENGINE_ERR_IO);
    ck_assert_msg(strstr(err.msg, "/model.safetensors: "), "%s", err.msg);
    dir_remove(&d);
}
END_TEST

/* ---- GAN directories ------------------------------------------------------------------- */

/* A conditional layer-list generator's config around its "condition" and "output". */
#define GAN_LAYERS(cond, out) "{'kind': 'gan', 'architecture': 'layers', 'latent_dim': 8, " \
    "'num_classes': 3, " cond "'output': " out ", 'layers': [" \
    "{'type': 'Linear', 'in_features': 12, 'out_features': 64}," \
    "{'type': 'Unflatten', 'dim': 1, 'unflattened_size': [4, 4, 4]}," \
    "{'type': 'BatchNorm2d', 'num_features': 4}, {'type': 'ReLU'}," \
    "{'type': 'ConvTranspose2d', 'in_channels': 4, 'out_channels': 1, 'kernel_size': 4," \
    " 'stride': 2, 'padding': 1, 'output_padding': 0}, {'type': 'Tanh'}]}"
#define COND_EMB "'condition': {'type': 'embedding', 'key': 'label_emb.weight', " \
    "'order': 'label_first'}, "
#define OUT_1x8 "{'channels': 1, 'height': 8, 'width': 8, 'range': 'tanh'}"
#define DCGAN(extra) "{'kind': 'gan', 'architecture': 'dcgan', 'latent_dim': 100, 'ngf': 64, " \
    "'output': {'channels': 3, 'height': 64, 'width': 64, 'range': 'tanh'}" extra "}"

START_TEST(gan_layers_dir)
{
    model_dir md;
    engine_err err = {{0}};
    ck_assert_msg(read_dir(GAN_LAYERS(COND_EMB, OUT_1x8), "cat\ndog\nbird\n", &md, &err) ==
                  ENGINE_OK, "%s", err.msg);
    ck_assert_int_eq(md.kind, MODEL_KIND_GAN);
    ck_assert_str_eq(model_kind_name(md.kind), "gan");
    const gan_spec *g = &md.gan;
    ck_assert_int_eq(g->arch, GAN_ARCH_LAYERS);
    ck_assert_int_eq(g->latent_dim, 8);
    ck_assert_int_eq(g->num_classes, 3);
    ck_assert_int_eq(g->condition, GAN_COND_EMBEDDING);
    ck_assert_str_eq(g->cond_key, "label_emb.weight");
    ck_assert(g->label_first);
    ck_assert_int_eq(g->out_channels, 1);
    ck_assert_int_eq(g->out_height, 8);
    ck_assert_int_eq(g->out_width, 8);
    ck_assert_int_eq(g->range, IMAGE_RANGE_TANH);
    ck_assert_int_eq(g->n_layers, 6);
    ck_assert_int_eq(g->layers[4].type, LAYER_CONV_TRANSPOSE2D);
    ck_assert_str_eq(g->layers[4].prefix, "4");
    ck_assert_int_eq(g->layers[4].stride[1], 2);
    ck_assert_ptr_null(md.cnn.layers);
    ck_assert_int_eq(md.n_labels, 3);
    ck_assert_str_eq(md.labels[2], "bird");
    model_dir_free(&md);
    ck_assert_ptr_null(md.gan.layers);

    /* one-hot, order defaulting to latent_first; sigmoid range */
    ck_assert_msg(read_dir(GAN_LAYERS("'condition': {'type': 'one_hot'}, ",
                                      "{'channels': 3, 'height': 8, 'width': 5, "
                                      "'range': 'sigmoid'}"), "a\nb\nc", &md, &err) ==
                  ENGINE_OK, "%s", err.msg);
    ck_assert_int_eq(md.gan.condition, GAN_COND_ONE_HOT);
    ck_assert(!md.gan.label_first);
    ck_assert_int_eq(md.gan.range, IMAGE_RANGE_SIGMOID);
    ck_assert_int_eq(md.gan.out_channels, 3);
    ck_assert_int_eq(md.gan.out_width, 5);
    model_dir_free(&md);
}
END_TEST

START_TEST(gan_dcgan_dir)
{
    /* unconditional: no labels.txt needed (one there is ignored) */
    tdir d = dir_new();
    put_config(&d, DCGAN(""));
    model_dir md;
    engine_err err = {{0}};
    ck_assert_msg(model_dir_read(d.path, &md, &err) == ENGINE_OK, "%s", err.msg);
    ck_assert_int_eq(md.gan.arch, GAN_ARCH_DCGAN);
    ck_assert_int_eq(md.gan.latent_dim, 100);
    ck_assert_int_eq(md.gan.ngf, 64);
    ck_assert_int_eq(md.gan.num_classes, 0);
    ck_assert_int_eq(md.gan.condition, GAN_COND_NONE);
    ck_assert_ptr_null(md.gan.layers);
    ck_assert_ptr_null(md.labels);
    ck_assert_int_eq(md.n_labels, 0);
    model_dir_free(&md);
    put_labels(&d, "not\nread\n");
    ck_assert_msg(model_dir_read(d.path, &md, &err) == ENGINE_OK, "%s", err.msg);
    ck_assert_int_eq(md.n_labels, 0);
    model_dir_free(&md);

    /* conditional: labels.txt is required and counted as a CNN's */
    put_config(&d, DCGAN(", 'num_classes': 2, 'condition': {'type': 'one_hot'}"));
    put_labels(&d, "only\n");
    ck_assert_int_eq(model_dir_read(d.path, &md, &err), ENGINE_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "labels.txt: 1 label, but config.json num_classes is 2"), "%s",
                  err.msg);
    put_labels(&d, "zero\none\n");
    ck_assert_msg(model_dir_read(d.path, &md, &err) == ENGINE_OK, "%s", err.msg);
    ck_assert_int_eq(md.n_labels, 2);
    ck_assert_str_eq(md.labels[1], "one");
    model_dir_free(&md);
    char p[512];
    snprintf(p, sizeof p, "%s/labels.txt", d.path);
    ck_assert_int_eq(unlink(p), 0);
    ck_assert_int_eq(model_dir_read(d.path, &md, &err), ENGINE_ERR_IO);
    ck_assert_msg(strstr(err.msg, "/labels.txt: "), "%s", err.msg);
    dir_remove(&d);

    gan_arch a = GAN_ARCH_LAYERS;
    ck_assert(gan_arch_from_name("dcgan", &a));
    ck_assert_int_eq(a, GAN_ARCH_DCGAN);
    ck_assert_str_eq(gan_arch_name(GAN_ARCH_LAYERS), "layers");
    ck_assert(!gan_arch_from_name("stylegan", &a));
    ck_assert_int_eq(a, GAN_ARCH_DCGAN);
    ck_assert_str_eq(gan_arch_name((gan_arch)9), "unknown");
    gan_spec_free(NULL);
}
END_TEST

START_TEST(gan_config_errors)
{
    const engine_status F = ENGINE_ERR_FORMAT;
    const char *L = "a\nb\nc\n";
    char c[2048];
#define GCFG(...) (snprintf(c, sizeof c, __VA_ARGS__), c)
    /* top level */
    EXPECT(GCFG(DCGAN(", 'version': 1")), "", F, "config.json: unknown key \"version\" for a "
           "GAN config");
    EXPECT(GCFG(DCGAN(", 'input': {}")), "", F, "unknown key \"input\"");
    EXPECT("{'kind': 'gan', 'latent_dim': 8}", "", F, "missing \"architecture\"");
    EXPECT("{'kind': 'gan', 'architecture': 'stylegan', 'latent_dim': 8}", "", F,
           "architecture: unknown architecture \"stylegan\" (layers or dcgan)");
    EXPECT("{'kind': 'gan', 'architecture': 'dcgan', 'ngf': 8, 'output': {'channels': 3,"
           " 'height': 64, 'width': 64, 'range': 'tanh'}}", "", F, "missing \"latent_dim\"");
    EXPECT(GCFG("{'kind': 'gan', 'architecture': 'dcgan', 'latent_dim': 0, 'ngf': 8}"), "", F,
           "latent_dim: 0 is out of range (1 to 65536)");
    EXPECT(GCFG("{'kind': 'gan', 'architecture': 'dcgan', 'latent_dim': 65537, 'ngf': 8}"), "",
           F, "latent_dim: 65537 is out of range");
    EXPECT(GCFG("{'kind': 'gan', 'architecture': 'dcgan', 'latent_dim': '100', 'ngf': 8}"), "",
           F, "latent_dim: must be an integer");
    /* num_classes and condition go together */
    EXPECT(GCFG(DCGAN(", 'num_classes': 0, 'condition': {'type': 'one_hot'}")), L, F,
           "num_classes: 0 is out of range");
    EXPECT(GCFG(DCGAN(", 'num_classes': 3")), L, F, "missing \"condition\"");
    EXPECT(GCFG(DCGAN(", 'condition': {'type': 'one_hot'}")), L, F,
           "condition: only applies to a conditional generator");
    EXPECT(GCFG(DCGAN(", 'num_classes': 3, 'condition': 'one_hot'")), L, F,
           "condition: must be an object");
    EXPECT(GCFG(DCGAN(", 'num_classes': 3, 'condition': {'key': 'e'}")), L, F,
           "condition: missing \"type\"");
    EXPECT(GCFG(DCGAN(", 'num_classes': 3, 'condition': {'type': 'concat'}")), L, F,
           "condition.type: unknown value \"concat\" (\"embedding\" or \"one_hot\")");
    EXPECT(GCFG(DCGAN(", 'num_classes': 3, 'condition': {'type': 'one_hot', 'dim': 3}")), L, F,
           "condition: unknown key \"dim\" for condition");
    EXPECT(GCFG(DCGAN(", 'num_classes': 3, 'condition': {'type': 'one_hot', 'key': 'e'}")), L,
           F, "condition.key: only applies to type \"embedding\"");
    EXPECT(GCFG(DCGAN(", 'num_classes': 3, 'condition': {'type': 'embedding'}")), L, F,
           "condition: missing \"key\"");
    EXPECT(GCFG(DCGAN(", 'num_classes': 3, 'condition': {'type': 'embedding', 'key': ''}")), L,
           F, "condition.key: must be a tensor name of 1 to 127 bytes");
    EXPECT(GCFG(DCGAN(", 'num_classes': 3, 'condition': {'type': 'embedding', 'key': 7}")), L,
           F, "condition.key: must be a tensor name");
    EXPECT(GCFG(DCGAN(", 'num_classes': 3, 'condition': {'type': 'embedding', "
                      "'key': 'a\\u0001b'}")), L, F, "condition.key: must be a tensor name");
    EXPECT(GCFG(DCGAN(", 'num_classes': 3, 'condition': {'type': 'embedding', "
                      "'key': 'a\\u0000b'}")), L, F, "is not allowed");   /* jansson's refusal */
    EXPECT(GCFG(DCGAN(", 'num_classes': 3, 'condition': {'type': 'one_hot', "
                      "'order': 'random'}")), L, F,
           "condition.order: unknown value \"random\" (\"latent_first\" or \"label_first\")");
    EXPECT(GCFG(DCGAN(", 'num_classes': 4, 'condition': {'type': 'one_hot'}")), L, F,
           "labels.txt: 3 labels, but config.json num_classes is 4");
    /* output */
    EXPECT("{'kind': 'gan', 'architecture': 'dcgan', 'latent_dim': 8, 'ngf': 8}", "", F,
           "missing \"output\"");
    EXPECT("{'kind': 'gan', 'architecture': 'dcgan', 'latent_dim': 8, 'ngf': 8, "
           "'output': [3, 64, 64]}", "", F, "output: must be an object");
    EXPECT(GCFG(GAN_LAYERS(COND_EMB, "{'channels': 2, 'height': 8, 'width': 8, "
                           "'range': 'tanh'}")), L, F, "output.channels: must be 1 (gray) or 3");
    EXPECT(GCFG(GAN_LAYERS(COND_EMB, "{'channels': 4, 'height': 8, 'width': 8, "
                           "'range': 'tanh'}")), L, F, "output.channels: 4 is out of range");
    EXPECT(GCFG(GAN_LAYERS(COND_EMB, "{'channels': 1, 'width': 8, 'range': 'tanh'}")), L, F,
           "output: missing \"height\"");
    EXPECT(GCFG(GAN_LAYERS(COND_EMB, "{'channels': 1, 'height': 4097, 'width': 8, "
                           "'range': 'tanh'}")), L, F, "output.height: 4097 is out of range");
    EXPECT(GCFG(GAN_LAYERS(COND_EMB, "{'channels': 1, 'height': 8, 'width': 0, "
                           "'range': 'tanh'}")), L, F, "output.width: 0 is out of range");
    EXPECT(GCFG(GAN_LAYERS(COND_EMB, "{'channels': 1, 'height': 8, 'width': 8}")), L, F,
           "output: missing \"range\"");
    EXPECT(GCFG(GAN_LAYERS(COND_EMB, "{'channels': 1, 'height': 8, 'width': 8, "
                           "'range': 'relu'}")), L, F,
           "output.range: unknown value \"relu\" (\"tanh\" or \"sigmoid\")");
    EXPECT(GCFG(GAN_LAYERS(COND_EMB, "{'channels': 1, 'height': 8, 'width': 8, "
                           "'range': 'tanh', 'mean': [0]}")), L, F,
           "output: unknown key \"mean\" for output");
    /* architecture-specific keys */
    EXPECT(GCFG(DCGAN(", 'layers': [{'type': 'ReLU'}]")), "", F,
           "layers: only applies to architecture \"layers\"");
    EXPECT("{'kind': 'gan', 'architecture': 'dcgan', 'latent_dim': 8, 'output': {'channels': 3,"
           " 'height': 64, 'width': 64, 'range': 'tanh'}}", "", F, "missing \"ngf\"");
    EXPECT(GCFG("{'kind': 'gan', 'architecture': 'dcgan', 'latent_dim': 8, 'ngf': 0, "
                "'output': {'channels': 3, 'height': 64, 'width': 64, 'range': 'tanh'}}"), "",
           F, "ngf: 0 is out of range (1 to 8192)");
    EXPECT("{'kind': 'gan', 'architecture': 'dcgan', 'latent_dim': 8, 'ngf': 8, 'output': "
           "{'channels': 3, 'height': 32, 'width': 32, 'range': 'tanh'}}", "", F,
           "output: architecture \"dcgan\" makes 64x64 images, not 32x32");
    EXPECT("{'kind': 'gan', 'architecture': 'dcgan', 'latent_dim': 8, 'ngf': 8, 'output': "
           "{'channels': 3, 'height': 64, 'width': 64, 'range': 'sigmoid'}}", "", F,
           "output.range: must be \"tanh\"");
    EXPECT("{'kind': 'gan', 'architecture': 'layers', 'latent_dim': 8, 'ngf': 8, 'output': "
           "{'channels': 1, 'height': 8, 'width': 8, 'range': 'tanh'}, "
           "'layers': [{'type': 'ReLU'}]}", "", F, "ngf: only applies to architecture \"dcgan\"");
    EXPECT("{'kind': 'gan', 'architecture': 'layers', 'latent_dim': 8, 'output': "
           "{'channels': 1, 'height': 8, 'width': 8, 'range': 'tanh'}}", "", F,
           "architecture \"layers\" needs a non-empty \"layers\" array");
    EXPECT("{'kind': 'gan', 'architecture': 'layers', 'latent_dim': 8, 'output': "
           "{'channels': 1, 'height': 8, 'width': 8, 'range': 'tanh'}, "
           "'layers': [{'type': 'Conv3d'}]}", "", F,
           "layers[0]: unknown layer type \"Conv3d\"");
    EXPECT("{'kind': 'gan', 'architecture': 'layers', 'latent_dim': 8, 'output': "
           "{'channels': 1, 'height': 8, 'width': 8, 'range': 'tanh'}, "
           "'layers': [{'type': 'ConvTranspose2d', 'in_channels': 8, 'out_channels': 1, "
           "'kernel_size': 4, 'stride': 2, 'output_padding': 2}]}", "", F,
           "layers[0]: output_padding (2) must be smaller than stride (2)");
#undef GCFG
}
END_TEST

static Suite *model_dir_suite(void)
{
    Suite *s = suite_create("model_dir");
    TCase *tc = tcase_create("valid");
    tcase_add_test(tc, nested_layers_flatten);
    tcase_add_test(tc, every_layer_type);
    tcase_add_test(tc, torchvision_arch);
    tcase_add_test(tc, arch_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("config");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, layer_errors);
    tcase_add_test(tc, layer_limits);
    tcase_add_test(tc, top_level_errors);
    tcase_add_test(tc, input_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("files");
    tcase_add_test(tc, labels);
    tcase_add_test(tc, missing_files);
    tcase_add_test(tc, config_too_large);
    suite_add_tcase(s, tc);

    tc = tcase_create("gan");
    tcase_add_test(tc, gan_layers_dir);
    tcase_add_test(tc, gan_dcgan_dir);
    tcase_add_test(tc, gan_config_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("bert");
    tcase_add_test(tc, bert_dir);
    tcase_add_test(tc, bert_config_errors);
    tcase_add_test(tc, bert_tokenizer_files);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(model_dir_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
