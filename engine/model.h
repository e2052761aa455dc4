/* model.h — engine-internal: what stands behind engine_model and engine_session. */
#ifndef MODELD_ENGINE_MODEL_H
#define MODELD_ENGINE_MODEL_H

#include "engine/arena.h"
#include "engine/graph.h"
#include "engine/models/builders.h"
#include "engine/safetensors.h"

typedef enum engine_model_kind {
    ENGINE_MODEL_CNN = 0,   /* a graph: engine_cnn_forward */
    ENGINE_MODEL_BERT,      /* engine_bert_forward */
    ENGINE_MODEL_GAN,       /* a graph behind its input rows: engine_gan_forward */
} engine_model_kind;

struct bert_model;

struct engine_model {
    engine_model_kind kind;
    safetensors *st;        /* kept mapped: the graph or the bert points into it */
    /* CNN and GAN */
    graph g;
    int in_c, in_h, in_w;   /* GAN: (latent_dim, 1, 1) */
    int num_outputs;        /* GAN: C*H*W of one image */
    /* GAN */
    gan_input gan;
    /* BERT */
    struct bert_model *bert;
};

struct engine_session {
    const engine_model *m;
    arena a;                /* sized at open from the model's plan */
    struct par_pool *pool;  /* engine/parallel.h: the session's own threads, owned */
};

#endif
