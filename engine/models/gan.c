/* gan.c — GAN generators: the spec helpers proto/model_dir uses, the generator's
 * input (latent plus class condition) and the two architectures, a layer list and
 * the PyTorch examples DCGAN.
 *
 * Load time (one thread) reads the condition from the checkpoint and describes the
 * network to a graph builder; forward time only writes each sample's input row
 * (gan_input_rows: a copy, no arithmetic), then the graph runs as a CNN's does.
 * No state outside the structs passed in.
 */
#include "engine/models/gan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/models/builders.h"

/* ---- spec helpers ---------------------------------------------------------------- */

/* One row per architecture; the names are the config.json spellings. */
static const struct {
    gan_arch arch;
    const char *name;
} gan_arch_names[] = {
    {GAN_ARCH_LAYERS, "layers"},
    {GAN_ARCH_DCGAN, "dcgan"},
};

void gan_spec_free(gan_spec *spec)
{
    if (!spec)
        return;
    free(spec->layers);
    spec->layers = NULL;
    spec->n_layers = 0;
}

bool gan_arch_from_name(const char *name, gan_arch *out)
{
    if (!name)
        return false;
    for (size_t i = 0; i < sizeof gan_arch_names / sizeof gan_arch_names[0]; i++)
        if (!strcmp(name, gan_arch_names[i].name)) {
            if (out)
                *out = gan_arch_names[i].arch;
            return true;
        }
    return false;
}

const char *gan_arch_name(gan_arch arch)
{
    for (size_t i = 0; i < sizeof gan_arch_names / sizeof gan_arch_names[0]; i++)
        if (gan_arch_names[i].arch == arch)
            return gan_arch_names[i].name;
    return "unknown";
}

/* ---- the input -------------------------------------------------------------------- */

/* The checkpoint decides an embedding's width, so it is read before the graph's input
 * shape exists; the tensor itself is loaded through the builder (gan_build). */
engine_status gan_input_init(const gan_spec *spec, const safetensors *st, gan_input *in,
                             engine_err *err)
{
    *in = (gan_input){ .latent_dim = spec->latent_dim, .num_classes = spec->num_classes,
                       .condition = spec->condition, .label_first = spec->label_first };
    switch (spec->condition) {
    case GAN_COND_NONE:
        return ENGINE_OK;
    case GAN_COND_ONE_HOT:
        in->cond_dim = spec->num_classes;
        return ENGINE_OK;
    case GAN_COND_EMBEDDING:
        break;
    }
    const safetensors_tensor *t = safetensors_find(st, spec->cond_key);
    if (!t)
        return engine_fail(err, ENGINE_ERR_SHAPE, "missing tensor '%s' (the class embedding), "
                           "expected shape [%d, embedding_dim]", spec->cond_key,
                           spec->num_classes);
    if (t->ndim != 2 || t->shape[0] != spec->num_classes || t->shape[1] < 1 ||
        t->shape[1] > GAN_MAX_LATENT)
        return engine_fail(err, ENGINE_ERR_SHAPE, "tensor '%s' (the class embedding) must be "
                           "[%d, embedding_dim] with embedding_dim 1..%d", spec->cond_key,
                           spec->num_classes, GAN_MAX_LATENT);
    in->cond_dim = (int)t->shape[1];
    return ENGINE_OK;
}

int gan_input_features(const gan_input *in)
{
    return in->latent_dim + in->cond_dim;
}

void gan_input_rows(const gan_input *in, int n, const float *z, const int32_t *classes,
                    float *x)
{
    const int f = gan_input_features(in), nz = in->latent_dim, nc = in->cond_dim;
    for (int i = 0; i < n; i++) {
        float *row = x + (size_t)i * f;
        float *zd = in->label_first ? row + nc : row, *cd = in->label_first ? row : row + nz;
        memcpy(zd, z + (size_t)i * nz, sizeof(float) * nz);
        if (in->condition == GAN_COND_EMBEDDING) {
            memcpy(cd, in->embedding + (size_t)classes[i] * nc, sizeof(float) * nc);
        } else if (in->condition == GAN_COND_ONE_HOT) {
            memset(cd, 0, sizeof(float) * nc);
            cd[classes[i]] = 1.0f;
        }
    }
}

/* ---- architectures ------------------------------------------------------------------ */

static layer_spec layer_act(const char *prefix, layer_type type)
{
    layer_spec l = { .type = type };
    snprintf(l.prefix, sizeof l.prefix, "%s", prefix);
    return l;
}

/* github.com/pytorch/examples dcgan/main.py, Generator.main:
 *   ConvT(nz, ngf*8, 4, 1, 0) BN ReLU                 (ngf*8, 4, 4)
 *   ConvT(ngf*8, ngf*4, 4, 2, 1) BN ReLU              (ngf*4, 8, 8)
 *   ConvT(ngf*4, ngf*2, 4, 2, 1) BN ReLU              (ngf*2, 16, 16)
 *   ConvT(ngf*2, ngf, 4, 2, 1) BN ReLU                (ngf, 32, 32)
 *   ConvT(ngf, nc, 4, 2, 1) Tanh                      (nc, 64, 64)
 * every ConvT without bias; children main.0 .. main.13. */
static int dcgan_build(graph_builder *b, int v, const gan_spec *spec, int nz)
{
    const int ngf = spec->ngf;
    const int chans[6] = { nz, ngf * 8, ngf * 4, ngf * 2, ngf, spec->out_channels };
    char prefix[32];
    for (int i = 0; i < 5 && v >= 0; i++) {
        snprintf(prefix, sizeof prefix, "main.%d", 3 * i);
        layer_spec ct = layer_conv_transpose(prefix, chans[i], chans[i + 1], 4, i ? 2 : 1,
                                             i ? 1 : 0, false);
        v = graph_add_layer(b, v, &ct);
        if (i == 4) {
            snprintf(prefix, sizeof prefix, "main.%d", 3 * i + 1);
            layer_spec tanh_l = layer_act(prefix, LAYER_TANH);
            v = graph_add_layer(b, v, &tanh_l);
            break;
        }
        snprintf(prefix, sizeof prefix, "main.%d", 3 * i + 1);
        layer_spec bn = layer_bn(prefix, chans[i + 1]);
        v = graph_add_layer(b, v, &bn);
        snprintf(prefix, sizeof prefix, "main.%d", 3 * i + 2);
        layer_spec relu = layer_act(prefix, LAYER_RELU);
        v = graph_add_layer(b, v, &relu);
    }
    return v;
}

int gan_build(graph_builder *b, const gan_spec *spec, gan_input *in)
{
    if (in->condition == GAN_COND_EMBEDDING) {
        const int64_t dims[2] = { in->num_classes, in->cond_dim };
        in->embedding = graph_load_tensor(b, "", spec->cond_key, dims, 2, false);
        if (!in->embedding)
            return -1;
    }
    if (spec->arch == GAN_ARCH_DCGAN)
        return dcgan_build(b, 0, spec, gan_input_features(in));
    return layers_apply(b, 0, spec->layers, spec->n_layers);
}
