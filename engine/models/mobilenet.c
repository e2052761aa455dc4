/* mobilenet.c — torchvision's MobileNetV2 (width 1.0) from its state_dict key names:
 * features.0 (stem conv), features.1..17 (inverted residuals), features.18 (1x1 to
 * 1280), classifier.1 (the Linear after Dropout).
 *
 * An inverted residual is: 1x1 expand + BN + ReLU6 (absent when t = 1), 3x3
 * depthwise + BN + ReLU6, 1x1 project + BN (linear), and a residual add when the
 * stride is 1 and the width is unchanged.  Key layout follows torchvision 0.13+:
 * features.i.conv.{0.0,0.1,1.0,1.1,2,3} with expansion, {0.0,0.1,1,2} without. */
#include <stdio.h>

#include "engine/models/builders.h"

static int conv_bn(graph_builder *b, int v, const char *prefix_conv, const char *prefix_bn,
                   int in, int out, int k, int stride, int groups, bool relu6)
{
    layer_spec c = layer_conv(prefix_conv, in, out, k, stride, (k - 1) / 2, groups, false);
    layer_spec n = layer_bn(prefix_bn, out);
    v = graph_add_layer(b, v, &c);
    v = graph_add_layer(b, v, &n);
    if (relu6) {
        layer_spec r = { .type = LAYER_RELU6 };
        snprintf(r.prefix, sizeof r.prefix, "%s", prefix_conv);
        v = graph_add_layer(b, v, &r);
    }
    return v;
}

/* One Conv2dNormActivation "features.i.conv.j" -> ".j.0" conv, ".j.1" BN. */
static int cna(graph_builder *b, int v, const char *base, int j, int in, int out, int k,
               int stride, int groups)
{
    char conv[CNN_PREFIX_MAX], bn[CNN_PREFIX_MAX];
    snprintf(conv, sizeof conv, "%s.%d.0", base, j);
    snprintf(bn, sizeof bn, "%s.%d.1", base, j);
    return conv_bn(b, v, conv, bn, in, out, k, stride, groups, true);
}

int mobilenet_v2_build(graph_builder *b, const cnn_spec *spec)
{
    /* t (expansion), c (width), n (repeats), s (first stride) as in the paper */
    static const int settings[7][4] = {
        { 1, 16, 1, 1 }, { 6, 24, 2, 2 }, { 6, 32, 3, 2 }, { 6, 64, 4, 2 },
        { 6, 96, 3, 1 }, { 6, 160, 3, 2 }, { 6, 320, 1, 1 },
    };
    int v = cna(b, 0, "features", 0, spec->in_channels, 32, 3, 2, 1);
    int in = 32, index = 1;
    for (int s = 0; s < 7; s++) {
        int t = settings[s][0], out = settings[s][1];
        for (int r = 0; r < settings[s][2]; r++, index++) {
            int stride = r == 0 ? settings[s][3] : 1;
            int hidden = in * t;
            char base[CNN_PREFIX_MAX], conv[CNN_PREFIX_MAX], bn[CNN_PREFIX_MAX];
            snprintf(base, sizeof base, "features.%d.conv", index);
            int x = v, j = 0;
            if (t != 1)
                v = cna(b, v, base, j++, in, hidden, 1, 1, 1);
            v = cna(b, v, base, j++, hidden, hidden, 3, stride, hidden);
            snprintf(conv, sizeof conv, "%s.%d", base, j);
            snprintf(bn, sizeof bn, "%s.%d", base, j + 1);
            v = conv_bn(b, v, conv, bn, hidden, out, 1, 1, 1, false);
            if (stride == 1 && in == out)
                v = graph_add_residual(b, v, x, ACT_NONE);
            in = out;
        }
    }
    v = cna(b, v, "features", index, in, 1280, 1, 1, 1);
    layer_spec avg = { .type = LAYER_ADAPTIVE_AVGPOOL2D, .output_size = { 1, 1 }, .prefix = "avgpool" };
    layer_spec flat = { .type = LAYER_FLATTEN, .prefix = "flatten" };
    layer_spec fc = { .type = LAYER_LINEAR, .in_features = 1280, .out_features = spec->num_classes,
                      .bias = true, .prefix = "classifier.1" };
    v = graph_add_layer(b, v, &avg);
    v = graph_add_layer(b, v, &flat);
    return graph_add_layer(b, v, &fc);
}
