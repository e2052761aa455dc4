/* resnet.c — torchvision's ResNet-18/34/50 from their state_dict key names
 * (conv1, bn1, layerL.B.{conv,bn}{1,2,3}, layerL.B.downsample.{0,1}, fc).
 *
 * Mirrors torchvision.models.resnet: BasicBlock for 18/34, Bottleneck (stride on
 * the 3x3, "ResNet v1.5") for 50; a block downsamples its identity with a 1x1 conv
 * + BN when it changes stride or width.  Every conv is bias-free and its BN folds
 * into it, so a block is two or three GEMM-backed convs and one fused add+ReLU. */
#include <stdio.h>

#include "engine/models/builders.h"

typedef struct resnet_shape {
    int blocks[4];
    bool bottleneck;
} resnet_shape;

static int conv_bn(graph_builder *b, int v, const char *conv, const char *bn, int in, int out,
                   int k, int stride, bool relu)
{
    layer_spec c = layer_conv(conv, in, out, k, stride, k / 2, 1, false);
    layer_spec n = layer_bn(bn, out);
    v = graph_add_layer(b, v, &c);
    v = graph_add_layer(b, v, &n);
    if (relu) {
        layer_spec r = { .type = LAYER_RELU };
        snprintf(r.prefix, sizeof r.prefix, "%s", conv);
        v = graph_add_layer(b, v, &r);
    }
    return v;
}

static int block(graph_builder *b, int x, const char *name, int in, int planes, int stride,
                 bool bottleneck)
{
    char conv[CNN_PREFIX_MAX], bn[CNN_PREFIX_MAX];
    int expansion = bottleneck ? 4 : 1;
    int out = planes * expansion;
    int v = x;
    if (bottleneck) {
        snprintf(conv, sizeof conv, "%s.conv1", name), snprintf(bn, sizeof bn, "%s.bn1", name);
        v = conv_bn(b, v, conv, bn, in, planes, 1, 1, true);
        snprintf(conv, sizeof conv, "%s.conv2", name), snprintf(bn, sizeof bn, "%s.bn2", name);
        v = conv_bn(b, v, conv, bn, planes, planes, 3, stride, true);
        snprintf(conv, sizeof conv, "%s.conv3", name), snprintf(bn, sizeof bn, "%s.bn3", name);
        v = conv_bn(b, v, conv, bn, planes, out, 1, 1, false);
    } else {
        snprintf(conv, sizeof conv, "%s.conv1", name), snprintf(bn, sizeof bn, "%s.bn1", name);
        v = conv_bn(b, v, conv, bn, in, planes, 3, stride, true);
        snprintf(conv, sizeof conv, "%s.conv2", name), snprintf(bn, sizeof bn, "%s.bn2", name);
        v = conv_bn(b, v, conv, bn, planes, planes, 3, 1, false);
    }
    int identity = x;
    if (stride != 1 || in != out) {
        snprintf(conv, sizeof conv, "%s.downsample.0", name);
        snprintf(bn, sizeof bn, "%s.downsample.1", name);
        identity = conv_bn(b, x, conv, bn, in, out, 1, stride, false);
    }
    if (v < 0 || identity < 0)
        return -1;
    return graph_add_residual(b, v, identity, ACT_RELU);
}

int resnet_build(graph_builder *b, const cnn_spec *spec)
{
    resnet_shape shape;
    switch (spec->arch) {
    case CNN_ARCH_RESNET18: shape = (resnet_shape){ { 2, 2, 2, 2 }, false }; break;
    case CNN_ARCH_RESNET34: shape = (resnet_shape){ { 3, 4, 6, 3 }, false }; break;
    case CNN_ARCH_RESNET50: shape = (resnet_shape){ { 3, 4, 6, 3 }, true }; break;
    default: return -1;
    }
    int v = conv_bn(b, 0, "conv1", "bn1", spec->in_channels, 64, 7, 2, true);
    layer_spec pool = { .type = LAYER_MAXPOOL2D, .kernel = { 3, 3 }, .stride = { 2, 2 },
                        .padding = { 1, 1 }, .dilation = { 1, 1 }, .prefix = "maxpool" };
    v = graph_add_layer(b, v, &pool);

    int in = 64;
    for (int stage = 0; stage < 4; stage++) {
        int planes = 64 << stage;
        for (int i = 0; i < shape.blocks[stage]; i++) {
            char name[CNN_PREFIX_MAX];
            snprintf(name, sizeof name, "layer%d.%d", stage + 1, i);
            int stride = (i == 0 && stage > 0) ? 2 : 1;
            v = block(b, v, name, in, planes, stride, shape.bottleneck);
            in = planes * (shape.bottleneck ? 4 : 1);
        }
    }
    layer_spec avg = { .type = LAYER_ADAPTIVE_AVGPOOL2D, .output_size = { 1, 1 }, .prefix = "avgpool" };
    layer_spec flat = { .type = LAYER_FLATTEN, .prefix = "flatten" };
    layer_spec fc = { .type = LAYER_LINEAR, .in_features = in, .out_features = spec->num_classes,
                      .bias = true, .prefix = "fc" };
    v = graph_add_layer(b, v, &avg);
    v = graph_add_layer(b, v, &flat);
    return graph_add_layer(b, v, &fc);
}
