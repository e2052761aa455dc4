/* graph.h — a network as a flat list of nodes over planned activation buffers.
 *
 * Model builders (engine/models/) describe a network layer by layer with
 * graph_add_layer(); the graph folds BatchNorm into the preceding conv/linear, fuses
 * activations into their producer, and at graph_plan() assigns every intermediate
 * value a slice of one activation region, reusing slices whose values are dead.
 * graph_forward() then runs the nodes in order on a session's arena: no allocation.
 *
 * Ownership: a graph owns its nodes, values and converted weights; weights it can use
 * as stored (F32, aligned, not folded) point into the safetensors mapping, which the
 * caller keeps open for the graph's lifetime.  graph_free() frees what the graph owns.
 * One graph may run on many threads at once: forward reads it and writes only the
 * caller's buffers.
 */
#ifndef MODELD_ENGINE_GRAPH_H
#define MODELD_ENGINE_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/models/cnn.h"
#include "engine/ops/ops.h"
#include "engine/safetensors.h"

/* Per-sample shape of a value: (C,H,W); a feature vector is (F,1,1). */
typedef struct graph_shape {
    int c, h, w;
} graph_shape;

typedef enum op_kind {
    OP_CONV2D = 0,
    OP_LINEAR,
    OP_MAXPOOL2D,
    OP_AVGPOOL2D,
    OP_ADAPTIVE_AVGPOOL2D,
    OP_AFFINE,   /* per-channel scale/shift: a BatchNorm with nothing to fold into */
    OP_ACT,      /* an activation with no producer to fuse into */
    OP_ADD,      /* residual add */
    OP_SOFTMAX,
    OP_CONV_TRANSPOSE2D,
    OP_COUNT
} op_kind;

typedef struct graph_node {
    op_kind kind;
    int in0, in1, out;        /* value ids; in1 = -1 unless OP_ADD */
    act_kind act;             /* fused activation applied to out */
    float act_alpha;
    union {
        conv2d_params conv;
        conv_transpose2d_params deconv;
        pool2d_params pool;
        struct { int in, out; } linear;
    } p;
    const float *weight;      /* conv (out_c, in_c/g, kh, kw); conv-transpose (in_c, out_c/g,
                                 kh, kw); linear (out, in) */
    const float *bias;        /* (out_c) or NULL */
    const float *scale, *shift; /* OP_AFFINE (c) */
    graph_shape in_shape, out_shape;
    char layer[CNN_PREFIX_MAX]; /* key prefix of the layer that made it, for errors */
} graph_node;

typedef struct graph {
    graph_node *nodes;
    int n_nodes, cap_nodes;
    graph_shape *values;      /* values[0] is the input */
    int *value_producer;      /* node index, -1 for the input */
    int *value_uses;          /* consumers so far; fusion needs exactly one */
    int n_values, cap_values;
    int output;               /* value id of the network's output */
    float **owned;            /* weights the graph converted or folded */
    int n_owned, cap_owned;
    /* filled by graph_plan */
    int max_batch;
    size_t *value_offset;     /* floats from the region start, per value (batch-scaled) */
    size_t region_floats;     /* all activation slices, for max_batch */
    size_t scratch_floats;    /* largest per-op scratch at max_batch */
} graph;

/* Adds layers to a graph reading weights from a checkpoint; the first error sticks
 * (later calls do nothing and return -1), so builders check once at the end. */
typedef struct graph_builder {
    graph *g;
    const safetensors *st;
    engine_status status;
    engine_err *err;
} graph_builder;

void graph_init(graph *g, graph_shape input);
void graph_free(graph *g);

/* Applies one layer to value v; returns the value holding the result (v itself for
 * layers that only fold, fuse or reshape), or -1 after an error. */
int graph_add_layer(graph_builder *b, int v, const layer_spec *layer);
/* Residual add of two values of equal shape, then act. */
int graph_add_residual(graph_builder *b, int a, int v, act_kind act);

/* Tensor "<prefix>.<suffix>" (just suffix when prefix is "") of exactly the shape
 * dims, as F32: a pointer into the checkpoint when usable as stored, else a converted
 * copy the graph owns.  Missing: an error naming the key and the expected shape, or
 * NULL without one when optional.  For builders that read weights outside a layer. */
const float *graph_load_tensor(graph_builder *b, const char *prefix, const char *suffix,
                               const int64_t *dims, int ndim, bool optional);

/* Sizes the activation region and scratch for batches of up to max_batch. */
engine_status graph_plan(graph *g, int output, int max_batch, engine_err *err);
/* Bytes a session needs: region + scratch, each arena-aligned. */
size_t graph_arena_bytes(const graph *g);

/* x (N, input shape), y (N, output shape); region/scratch from the session arena. */
void graph_forward(const graph *g, int n, const float *x, float *y, float *region,
                   float *scratch);

const char *op_kind_name(op_kind kind);
/* FLOPs of one sample through the conv, conv-transpose and linear nodes (2 per
 * multiply-add). */
double graph_flops(const graph *g);

#endif
