/* layers.c — the declarative layer-list architecture: a flattened nn.Sequential
 * (docs/MODELS.md), applied layer after layer (a CNN's whole network, a GAN
 * generator's too), plus the layer_spec constructors the fixed architectures share. */
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

layer_spec layer_conv_transpose(const char *prefix, int in, int out, int k, int stride, int pad,
                                bool bias)
{
    layer_spec l = layer_conv(prefix, in, out, k, stride, pad, 1, bias);
    l.type = LAYER_CONV_TRANSPOSE2D;
    return l;
}

layer_spec layer_bn(const char *prefix, int features)
{
    layer_spec l = { .type = LAYER_BATCHNORM2D, .num_features = features, .eps = 1e-5f };
    snprintf(l.prefix, sizeof l.prefix, "%s", prefix);
    return l;
}

int layers_apply(graph_builder *b, int v, const layer_spec *layers, int n_layers)
{
    for (int i = 0; i < n_layers && v >= 0; i++)
        v = graph_add_layer(b, v, &layers[i]);
    return v;
}

int layers_build(graph_builder *b, const cnn_spec *spec)
{
    return layers_apply(b, 0, spec->layers, spec->n_layers);
}
