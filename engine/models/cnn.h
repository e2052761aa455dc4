/* cnn.h — the native description of a CNN, filled by proto/model_config from a
 * model directory's config.json and consumed by engine_cnn_load().
 *
 * Ownership: cnn_spec_free() frees the layers array a spec owns; the spec itself is
 * the caller's (usually on the stack).  The engine copies what it needs at load.
 *
 * A "layers" architecture is a PyTorch nn.Sequential flattened in order: nested
 * Sequentials disappear and leave their key prefix behind ("features.3"), so a layer
 * with weights finds them at "<prefix>.weight" / "<prefix>.bias" etc.
 */
#ifndef MODELD_ENGINE_CNN_H
#define MODELD_ENGINE_CNN_H

#include <stdbool.h>

typedef enum cnn_arch {
    CNN_ARCH_LAYERS = 0,  /* declarative layer list */
    CNN_ARCH_RESNET18,
    CNN_ARCH_RESNET34,
    CNN_ARCH_RESNET50,
    CNN_ARCH_MOBILENET_V2,
} cnn_arch;

typedef enum layer_type {
    LAYER_CONV2D = 0,
    LAYER_CONV_TRANSPOSE2D,
    LAYER_BATCHNORM2D,
    LAYER_BATCHNORM1D,
    LAYER_LINEAR,
    LAYER_RELU,
    LAYER_RELU6,
    LAYER_LEAKY_RELU,   /* alpha = negative_slope */
    LAYER_ELU,          /* alpha */
    LAYER_SIGMOID,
    LAYER_TANH,
    LAYER_GELU,         /* exact erf form */
    LAYER_SILU,
    LAYER_MAXPOOL2D,
    LAYER_AVGPOOL2D,
    LAYER_ADAPTIVE_AVGPOOL2D,
    LAYER_FLATTEN,      /* start_dim 1, end_dim -1 only */
    LAYER_UNFLATTEN,    /* (N,F) -> (N, unflatten_c, unflatten_h, unflatten_w) */
    LAYER_DROPOUT,      /* identity at inference */
    LAYER_IDENTITY,
    LAYER_SOFTMAX,      /* over dim 1 */
} layer_type;

#define CNN_PREFIX_MAX 128

typedef struct layer_spec {
    layer_type type;
    char prefix[CNN_PREFIX_MAX]; /* PyTorch key prefix, e.g. "features.0" */
    /* Conv2d / ConvTranspose2d / pools: (h, w) pairs */
    int in_channels, out_channels;
    int kernel[2], stride[2], padding[2], dilation[2], output_padding[2];
    int groups;
    bool bias;
    bool ceil_mode;          /* pools */
    bool count_include_pad;  /* AvgPool2d, default true as in PyTorch */
    int output_size[2];      /* AdaptiveAvgPool2d */
    /* Linear */
    int in_features, out_features;
    /* BatchNorm */
    int num_features;
    float eps;
    /* LeakyReLU slope / ELU alpha */
    float alpha;
    /* Unflatten target per sample: (C, H, W) */
    int unflatten[3];
} layer_spec;

typedef struct cnn_spec {
    cnn_arch arch;
    int num_classes;
    int in_channels, in_height, in_width; /* the tensor the network sees */
    layer_spec *layers;                   /* CNN_ARCH_LAYERS only; owned */
    int n_layers;
} cnn_spec;

void cnn_spec_free(cnn_spec *spec);

/* Parses "resnet18", "mobilenet_v2", "layers", ...; returns false if unknown. */
bool cnn_arch_from_name(const char *name, cnn_arch *out);
const char *cnn_arch_name(cnn_arch arch);

#endif
