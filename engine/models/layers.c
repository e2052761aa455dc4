/* layers.c — the declarative layer-list architecture: a flattened nn.Sequential
 * (docs/MODELS.md), applied layer after layer, plus the layer_spec constructors the
 * fixed architectures share. */
#include <stdio.h>
#include <string.h>

#include "engine/models/builders.h"

layer_spec layer_conv(const char *prefix, int in, int out, int k, int stride, int pad,
                      int groups, bool bias)
{
    layer_spec l = {
        .type = LAYER_CONV2D, .in_channels = in, .out_channels = out, .kernel = { k, k },
        .stride = { stride, stride }, .padding = { pad, pad }, .dilation = { 1, 1 },
        .groups = groups, .bias = bias,
    };
    snprintf(l.prefix, sizeof l.prefix, "%s", prefix);
    return l;
}

layer_spec layer_bn(const char *prefix, int features)
{
    layer_spec l = { .type = LAYER_BATCHNORM2D, .num_features = features, .eps = 1e-5f };
    snprintf(l.prefix, sizeof l.prefix, "%s", prefix);
    return l;
}

int layers_build(graph_builder *b, const cnn_spec *spec)
{
    int v = 0;
    for (int i = 0; i < spec->n_layers && v >= 0; i++)
        v = graph_add_layer(b, v, &spec->layers[i]);
    return v;
}
