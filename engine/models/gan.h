/* gan.h — the native description of a GAN generator, filled by proto/model_dir from a
 * model directory's config.json (docs/MODELS.md, "GAN directories") and consumed by
 * engine_gan_load().
 *
 * Ownership: gan_spec_free() frees the layers array a spec owns; the spec itself is
 * the caller's (usually inside a model_dir).  The engine copies what it needs at load.
 *
 * The generator's input is one vector per sample: the latent z (latent_dim) and, for
 * a conditional generator, the class condition (an embedding row or a one-hot vector)
 * before or after it.  The network sees it as a (F, 1, 1) value, F = latent_dim +
 * cond_dim, so a Linear and a ConvTranspose2d (DCGAN's (N, nz, 1, 1)) first layer
 * both take it as it is.
 */
#ifndef MODELD_ENGINE_GAN_H
#define MODELD_ENGINE_GAN_H

#include <stdbool.h>

#include "engine/image.h"
#include "engine/models/cnn.h"

typedef enum gan_arch {
    GAN_ARCH_LAYERS = 0, /* declarative layer list, as a CNN's */
    GAN_ARCH_DCGAN,      /* the PyTorch examples DCGAN Generator, 64x64 ("main.0" ...) */
} gan_arch;

typedef enum gan_condition {
    GAN_COND_NONE = 0,   /* unconditional: num_classes 0 */
    GAN_COND_EMBEDDING,  /* row `class` of the (num_classes, E) tensor cond_key */
    GAN_COND_ONE_HOT,    /* num_classes floats, 1 at `class` */
} gan_condition;

#define GAN_MAX_LATENT 65536     /* also the widest embedding */
#define GAN_MAX_CLASSES (1 << 20)
/* dcgan: ngf * 8 channels at most 65536 */
#define GAN_MAX_NGF 8192

typedef struct gan_spec {
    gan_arch arch;
    int latent_dim;                  /* nz, 1..GAN_MAX_LATENT */
    int num_classes;                 /* 0: unconditional */
    gan_condition condition;         /* GAN_COND_NONE iff num_classes == 0 */
    char cond_key[CNN_PREFIX_MAX];   /* GAN_COND_EMBEDDING: the embedding's tensor name */
    bool label_first;                /* input [cond, z] rather than [z, cond] */
    int out_channels, out_height, out_width; /* the image the generator must produce */
    image_range range;               /* engine/image.h: for the caller's pixel mapping; the
                                      * engine ignores it */
    int ngf;                         /* GAN_ARCH_DCGAN: feature maps of the last ConvT */
    layer_spec *layers;              /* GAN_ARCH_LAYERS only; owned */
    int n_layers;
} gan_spec;

void gan_spec_free(gan_spec *spec);

/* "layers", "dcgan"; false if unknown (*out untouched). */
bool gan_arch_from_name(const char *name, gan_arch *out);
const char *gan_arch_name(gan_arch arch);

#endif
