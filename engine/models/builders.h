/* builders.h — one function per architecture that describes a network to a graph
 * builder.  Each reads the weights it needs by their PyTorch key names, returns the
 * output value id, or -1 with the builder's status and message set.  Engine-internal. */
#ifndef MODELD_ENGINE_BUILDERS_H
#define MODELD_ENGINE_BUILDERS_H

#include "engine/graph.h"
#include "engine/models/cnn.h"

int layers_build(graph_builder *b, const cnn_spec *spec);      /* models/layers.c */
int resnet_build(graph_builder *b, const cnn_spec *spec);      /* models/resnet.c */
int mobilenet_v2_build(graph_builder *b, const cnn_spec *spec); /* models/mobilenet.c */

/* A Conv2d layer_spec with PyTorch's defaults for what is not given (square kernel,
 * dilation 1, groups 1), for builders that spell out fixed architectures. */
layer_spec layer_conv(const char *prefix, int in, int out, int k, int stride, int pad,
                      int groups, bool bias);
layer_spec layer_bn(const char *prefix, int features);

#endif
