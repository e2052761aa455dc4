/* model.h — engine-internal: what stands behind engine_model and engine_session. */
#ifndef MODELD_ENGINE_MODEL_H
#define MODELD_ENGINE_MODEL_H

#include "engine/arena.h"
#include "engine/graph.h"
#include "engine/safetensors.h"

struct engine_model {
    graph g;
    safetensors *st;        /* kept mapped: the graph points into it */
    int in_c, in_h, in_w;
    int num_outputs;
};

struct engine_session {
    const engine_model *m;
    arena a;                /* sized at open from the model's plan */
};

#endif
