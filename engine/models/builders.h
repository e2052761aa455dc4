/* builders.h — one function per architecture that describes a network to a graph
 * builder (CNNs, GAN generators).  Each reads the weights it needs by their PyTorch
 * key names, returns the output value id, or -1 with the builder's status and message
 * set.  BERT, which needs no graph (its layers repeat; forward is a loop over them),
 * has a loader and a forward of its own at the end.  Engine-internal. */
#ifndef MODELD_ENGINE_BUILDERS_H
#define MODELD_ENGINE_BUILDERS_H

#include "engine/arena.h"
#include "engine/engine.h"
#include "engine/graph.h"
#include "engine/models/bert.h"
#include "engine/models/cnn.h"
#include "engine/models/gan.h"
#include "engine/safetensors.h"

int layers_build(graph_builder *b, const cnn_spec *spec);      /* models/layers.c */
/* The layers applied in order from value v; the last one's value or -1. */
int layers_apply(graph_builder *b, int v, const layer_spec *layers, int n_layers);
int resnet_build(graph_builder *b, const cnn_spec *spec);      /* models/resnet.c */
int mobilenet_v2_build(graph_builder *b, const cnn_spec *spec); /* models/mobilenet.c */

/* A Conv2d layer_spec with PyTorch's defaults for what is not given (square kernel,
 * dilation 1, groups 1), for builders that spell out fixed architectures. */
layer_spec layer_conv(const char *prefix, int in, int out, int k, int stride, int pad,
                      int groups, bool bias);
layer_spec layer_bn(const char *prefix, int features);
/* A ConvTranspose2d likewise: square kernel, dilation 1, groups 1, output_padding 0. */
layer_spec layer_conv_transpose(const char *prefix, int in, int out, int k, int stride, int pad,
                                bool bias);

/* ---- GAN generators (models/gan.c) ----------------------------------------------
 * What engine_gan_forward needs beyond the graph: how each sample's input row
 * (F = latent_dim + cond_dim floats, the graph's (F, 1, 1) input) is made. */
typedef struct gan_input {
    int latent_dim, num_classes;   /* num_classes 0: unconditional */
    gan_condition condition;
    int cond_dim;                  /* E (embedding), num_classes (one-hot) or 0 */
    bool label_first;
    const float *embedding;        /* (num_classes, E): in the mapping or owned by the graph */
} gan_input;

/* Fills in from the spec, reading the embedding's width from st; no allocation. */
engine_status gan_input_init(const gan_spec *spec, const safetensors *st, gan_input *in,
                             engine_err *err);
int gan_input_features(const gan_input *in);
/* Loads the embedding (into in) and describes the generator from the graph's input
 * value 0; returns its output value, or -1 with the builder's status set. */
int gan_build(graph_builder *b, const gan_spec *spec, gan_input *in);
/* x (N, F): each sample's [z, cond] or [cond, z]; classes already checked. */
void gan_input_rows(const gan_input *in, int n, const float *z, const int32_t *classes,
                    float *x);

/* ---- BERT (models/bert.c) ------------------------------------------------------
 * bert_load points into st (kept open by the caller for the model's lifetime) and
 * owns only what it converted or fused; bert_free releases that.  A loaded bert is
 * read-only: any number of sessions may run it at once, each on its own arena of
 * bert_arena_bytes(). */
typedef struct bert_model bert_model;

engine_status bert_load(const bert_config *cfg, const safetensors *st, int max_batch,
                        int max_tokens, bert_model **out, engine_err *err);
void bert_free(bert_model *b);
bool bert_has_nsp(const bert_model *b);
int bert_vocab_size(const bert_model *b);
int bert_max_batch(const bert_model *b);
int bert_max_tokens(const bert_model *b);
/* Multiply-adds x 2 per token of the encoder's GEMMs (QKV, attention output, FFN);
 * attention scores and the heads depend on lengths and masks and are not counted. */
double bert_flops_per_token(const bert_model *b);
size_t bert_arena_bytes(const bert_model *b);
/* engine_bert_forward's contract; a is reset and used for every activation, pool
 * (or NULL) runs the engine's own parallel kernels. */
struct par_pool;
engine_status bert_forward(const bert_model *b, arena *a, struct par_pool *pool,
                           const engine_bert_seq *seqs, int n, float *mlm, float *nsp,
                           engine_err *err);

#endif
