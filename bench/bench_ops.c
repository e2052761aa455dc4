/* bench_ops — where a model's time goes: every graph node timed alone, and every
 * convolution beside the bare GEMM it amounts to.
 *
 *   bench_ops [--threads N] [--seconds S] MODEL_DIR BATCH
 *
 * For each node of the loaded graph it prints the node's time, its share of
 * the sum, its GFLOP/s, and for a GEMM-backed convolution or linear:
 *   gemm_ms   the same arithmetic as a bare blas_sgemm: one (out_c/g, HW, in_c/g*kh*kw)
 *             product per image and group, on data already laid out.  conv_ms - gemm_ms
 *             is what the convolution adds around BLAS (im2col, epilogue, calls);
 *   gemm1_ms  one GEMM over the whole batch (N = batch*HW): what batching the images
 *             into a single product would give (batch > 1 only).
 * Then totals per node kind and per convolution shape class (1x1, 3x3, 7x7 x
 * stride), and the full forward's time beside the sum of the nodes.
 *
 * Every time is the 20th percentile of its repetitions, not the median: this is
 * for attributing time between nodes on shared, noisy machines, where noise only
 * ever adds, so a low percentile is the steadier estimate of what the code costs.
 * (bench_engine reports medians; compare the two with that in mind.)
 *
 * How a node runs alone: a full forward first fills every activation slice with
 * real values; then a one-node view of the graph (same node, same planned offsets)
 * goes through graph_forward, so the very kernels, fusions and dispatch the engine
 * uses are what is timed.  The view shrinks the output value to one float per
 * sample so graph_forward's final copy-out costs nothing.  This reads engine
 * internals (engine/model.h, engine/graph.h) on purpose: it is a diagnostic that
 * must see the graph, not a user of the API.
 *
 * A program, not a library: errors go to stderr and end the process.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/blas.h"
#include "bench/bench_util.h"
#include "engine/engine.h"
#include "engine/graph.h"
#include "engine/model.h"
#include "proto/model_dir.h"

#define MIN_REPS 3
#define MAX_REPS 500

static void *xalloc(size_t floats)
{
    /* 64-byte aligned, as the session arena is: kernels see the same alignment */
    size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p) {
        fprintf(stderr, "bench_ops: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    memset(p, 0, bytes ? bytes : 64);
    return p;
}

static void fill_noise(float *x, size_t n)
{
    uint64_t s = 0x243F6A8885A308D3ull;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 40) / (double)(1u << 24) * 2.0 - 1.0);
    }
}

/* What the timed closures need. */
typedef struct timing_ctx {
    const graph *g;        /* a one-node view, or the whole graph */
    int n;
    const float *x;
    float *y, *region, *scratch;
    /* bare GEMM: calls x (m, nn, k) */
    int calls, m, nn, k;
    const float *a, *b;
    float *c;
} timing_ctx;

static void run_graph(timing_ctx *t)
{
    graph_forward(t->g, t->n, t->x, t->y, t->region, t->scratch);
}

static void run_gemm(timing_ctx *t)
{
    for (int i = 0; i < t->calls; i++)
        blas_sgemm(false, false, t->m, t->nn, t->k, 1.0f, t->a, t->k, t->b, t->nn, 0.0f, t->c,
                   t->nn);
}

/* 20th percentile of repeated calls, repeated for about `seconds` (MIN_REPS..MAX_REPS). */
static double time_low(void (*fn)(timing_ctx *), timing_ctx *t, double seconds)
{
    fn(t); /* warm: caches, BLAS pool, page faults */
    double t0 = bench_now_ms();
    fn(t);
    double one = bench_now_ms() - t0;
    int reps = (int)(seconds * 1e3 / (one > 1e-4 ? one : 1e-4));
    reps = reps < MIN_REPS ? MIN_REPS : reps > MAX_REPS ? MAX_REPS : reps;
    double ms[MAX_REPS];
    for (int i = 0; i < reps; i++) {
        t0 = bench_now_ms();
        fn(t);
        ms[i] = bench_now_ms() - t0;
    }
    qsort(ms, (size_t)reps, sizeof ms[0], bench_cmp_double);
    return ms[reps / 5];
}

static int parse_int(const char *s, const char *what, int lo, int hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "bench_ops: %s must be an integer in %d..%d, got '%s'\n", what, lo, hi, s);
        exit(2);
    }
    return (int)v;
}

/* Shape class of a conv for the summary, e.g. "3x3/s2", "1x1/s1", "dw3x3/s1". */
static void conv_class(const conv2d_params *p, char *buf, size_t size)
{
    snprintf(buf, size, "%s%dx%d/s%d", p->groups == p->in_c && p->groups > 1 ? "dw" : "",
             p->k_h, p->k_w, p->stride_h);
}

#define MAX_CLASSES 32

typedef struct class_sum {
    char name[32];
    double ms, gemm_ms, gemm1_ms, flops;
    int count;
} class_sum;

static class_sum *class_find(class_sum *cs, int *n, const char *name)
{
    for (int i = 0; i < *n; i++)
        if (strcmp(cs[i].name, name) == 0)
            return &cs[i];
    if (*n == MAX_CLASSES)
        return &cs[MAX_CLASSES - 1];
    memset(&cs[*n], 0, sizeof cs[*n]);
    snprintf(cs[*n].name, sizeof cs[*n].name, "%s", name);
    return &cs[(*n)++];
}

int main(int argc, char **argv)
{
    int threads = 2;
    double seconds = 0.15;
    const char *pos[2];
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = parse_int(argv[++i], "--threads", 1, 256);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (argv[i][0] == '-' || n_pos == 2) {
            fprintf(stderr, "usage: bench_ops [--threads N] [--seconds S] MODEL_DIR BATCH\n");
            return 2;
        } else
            pos[n_pos++] = argv[i];
    }
    if (n_pos != 2 || !(seconds > 0)) {
        fprintf(stderr, "usage: bench_ops [--threads N] [--seconds S] MODEL_DIR BATCH\n");
        return 2;
    }
    const int batch = parse_int(pos[1], "BATCH", 1, 65536);
    engine_set_blas_threads(threads);
    const double peak = bench_peak_gflops(threads);

    engine_err err = { { 0 } };
    model_dir md;
    engine_model *m;
    if (model_dir_read(pos[0], &md, &err) != ENGINE_OK ||
        engine_cnn_load(&md.cnn, md.weights_path, batch, &m, &err) != ENGINE_OK) {
        fprintf(stderr, "bench_ops: %s\n", err.msg);
        return 1;
    }
    model_dir_free(&md);
    const graph *g = &m->g;

    const size_t in_floats = (size_t)batch * m->in_c * m->in_h * m->in_w; /* (N,C,H,W) */
    float *x = xalloc(in_floats);
    fill_noise(x, in_floats);
    float *y = xalloc((size_t)batch * (size_t)m->num_outputs);
    float *region = xalloc(g->region_floats);
    float *scratch = xalloc(g->scratch_floats);

    /* Largest bare GEMM operands over all nodes, allocated once. */
    size_t max_a = 1, max_b = 1, max_c = 1;
    for (int i = 0; i < g->n_nodes; i++) {
        const graph_node *nd = &g->nodes[i];
        if (nd->kind != OP_CONV2D)
            continue;
        const conv2d_params *p = &nd->p.conv;
        size_t k = (size_t)(p->in_c / p->groups) * p->k_h * p->k_w;
        size_t hw = (size_t)p->out_h * p->out_w * batch;
        if ((size_t)p->out_c * k > max_a) max_a = (size_t)p->out_c * k;
        if (k * hw > max_b) max_b = k * hw;
        if ((size_t)p->out_c * hw > max_c) max_c = (size_t)p->out_c * hw;
    }
    float *ga = xalloc(max_a), *gb = xalloc(max_b), *gc = xalloc(max_c);
    fill_noise(ga, max_a);
    fill_noise(gb, max_b);

    timing_ctx t = { .g = g, .n = batch, .x = x, .y = y, .region = region, .scratch = scratch,
                     .a = ga, .b = gb, .c = gc };
    const double full_ms = time_low(run_graph, &t, 1.0); /* also fills every slice */

    /* One-node view: shares the graph's offsets, with its own values array so the
     * viewed node's output can be shrunk for the copy-out. */
    graph_shape *values = malloc((size_t)g->n_values * sizeof *values);
    if (!values) {
        fprintf(stderr, "bench_ops: out of memory\n");
        return 1;
    }

    printf("# %s batch=%d threads=%d: full forward %.3f ms, %.2f GFLOP/s\n", pos[0], batch,
           threads, full_ms, graph_flops(g) * batch / (full_ms * 1e6));
    {
        /* What this BLAS gives on a shape it likes, right now: the machine's state
         * (a busy neighbour halves it) and the ceiling for everything below. */
        enum { CAL = 512 };
        float *ca = xalloc((size_t)CAL * CAL), *cb = xalloc((size_t)CAL * CAL);
        float *cc = xalloc((size_t)CAL * CAL);
        timing_ctx cal = { .calls = 1, .m = CAL, .nn = CAL, .k = CAL, .a = ca, .b = cb, .c = cc };
        double cal_ms = time_low(run_gemm, &cal, 0.3);
        printf("# calibration: blas_sgemm %dx%dx%d %.1f GFLOP/s (peak %.0f)\n", CAL, CAL, CAL,
               2.0 * CAL * CAL * CAL / (cal_ms * 1e6), peak);
        free(ca);
        free(cb);
        free(cc);
    }
    printf("%-4s %-10s %-22s %-30s %9s %6s %8s %9s %8s %9s\n", "node", "op", "layer", "shape",
           "ms", "%sum", "GFLOP/s", "gemm_ms", "gemm_GF", "gemm1_ms");

    double kind_ms[OP_COUNT] = { 0 }, sum_ms = 0;
    class_sum classes[MAX_CLASSES];
    int n_classes = 0;
    double *node_ms = calloc((size_t)g->n_nodes, sizeof *node_ms);
    double *node_gemm = calloc((size_t)g->n_nodes, sizeof *node_gemm);
    double *node_gemm1 = calloc((size_t)g->n_nodes, sizeof *node_gemm1);
    if (!node_ms || !node_gemm || !node_gemm1)
        return 1;

    for (int i = 0; i < g->n_nodes; i++) {
        const graph_node *nd = &g->nodes[i];
        graph view = *g;
        memcpy(values, g->values, (size_t)g->n_values * sizeof *values);
        values[nd->out] = (graph_shape){ 1, 1, 1 };
        view.values = values;
        view.nodes = (graph_node *)nd;
        view.n_nodes = 1;
        view.output = nd->out;
        t.g = &view;
        node_ms[i] = time_low(run_graph, &t, seconds);
        node_gemm[i] = node_gemm1[i] = -1;
        if (nd->kind == OP_CONV2D && !(nd->p.conv.groups == nd->p.conv.in_c && nd->p.conv.groups > 1)) {
            const conv2d_params *p = &nd->p.conv;
            t.m = p->out_c / p->groups;
            t.k = (p->in_c / p->groups) * p->k_h * p->k_w;
            t.nn = p->out_h * p->out_w;
            t.calls = batch * p->groups;
            node_gemm[i] = time_low(run_gemm, &t, seconds);
            if (batch > 1 && p->groups == 1) {
                t.nn = p->out_h * p->out_w * batch;
                t.calls = 1;
                node_gemm1[i] = time_low(run_gemm, &t, seconds);
            }
        }
        sum_ms += node_ms[i];
    }
    t.g = g;

    for (int i = 0; i < g->n_nodes; i++) {
        const graph_node *nd = &g->nodes[i];
        double flops = 0;
        char shape[64] = "", cls[32] = "";
        if (nd->kind == OP_CONV2D) {
            const conv2d_params *p = &nd->p.conv;
            flops = 2.0 * batch * p->out_c * p->out_h * p->out_w * (p->in_c / p->groups) *
                    p->k_h * p->k_w;
            conv_class(p, cls, sizeof cls);
            snprintf(shape, sizeof shape, "%dx%dx%d>%dx%dx%d %s", p->in_c, p->in_h, p->in_w,
                     p->out_c, p->out_h, p->out_w, cls);
            class_sum *c = class_find(classes, &n_classes, cls);
            c->ms += node_ms[i];
            c->gemm_ms += node_gemm[i] > 0 ? node_gemm[i] : 0;
            c->gemm1_ms += node_gemm1[i] > 0 ? node_gemm1[i] : 0;
            c->flops += flops;
            c->count++;
        } else if (nd->kind == OP_LINEAR) {
            flops = 2.0 * batch * nd->p.linear.in * nd->p.linear.out;
            snprintf(shape, sizeof shape, "%d>%d", nd->p.linear.in, nd->p.linear.out);
        } else {
            snprintf(shape, sizeof shape, "%dx%dx%d>%dx%dx%d", nd->in_shape.c, nd->in_shape.h,
                     nd->in_shape.w, nd->out_shape.c, nd->out_shape.h, nd->out_shape.w);
        }
        kind_ms[nd->kind] += node_ms[i];
        char gemm[16] = "", gemm_gf[16] = "", gemm1[16] = "", gf[16] = "";
        if (flops > 0)
            snprintf(gf, sizeof gf, "%.1f", flops / (node_ms[i] * 1e6));
        if (node_gemm[i] >= 0) {
            snprintf(gemm, sizeof gemm, "%.3f", node_gemm[i]);
            snprintf(gemm_gf, sizeof gemm_gf, "%.1f", flops / (node_gemm[i] * 1e6));
        }
        if (node_gemm1[i] >= 0)
            snprintf(gemm1, sizeof gemm1, "%.3f", node_gemm1[i]);
        printf("%-4d %-10.10s %-22.22s %-30.30s %9.3f %6.1f %8s %9s %8s %9s\n", i,
               op_kind_name(nd->kind), nd->layer, shape, node_ms[i], 100 * node_ms[i] / sum_ms,
               gf, gemm, gemm_gf, gemm1);
    }

    printf("\n# by op kind (sum of nodes %.3f ms vs full forward %.3f ms)\n", sum_ms, full_ms);
    for (int k = 0; k < OP_COUNT; k++)
        if (kind_ms[k] > 0)
            printf("%-20s %9.3f ms %6.1f%%\n", op_kind_name((op_kind)k), kind_ms[k],
                   100 * kind_ms[k] / sum_ms);
    printf("\n# convolutions by shape class: time, share, GFLOP/s as run, GFLOP/s of the bare\n"
           "# per-image GEMMs (%% of peak), and of one GEMM over the whole batch\n");
    for (int c = 0; c < n_classes; c++) {
        const class_sum *cs = &classes[c];
        printf("%-10s x%-3d %9.3f ms %6.1f%%  %7.1f GFLOP/s  gemm %7.1f GFLOP/s (%4.1f%% peak)",
               cs->name, cs->count, cs->ms, 100 * cs->ms / sum_ms, cs->flops / (cs->ms * 1e6),
               cs->gemm_ms > 0 ? cs->flops / (cs->gemm_ms * 1e6) : 0,
               cs->gemm_ms > 0 ? 100 * cs->flops / (cs->gemm_ms * 1e6) / peak : 0);
        if (cs->gemm1_ms > 0)
            printf("  batched gemm %7.1f GFLOP/s", cs->flops / (cs->gemm1_ms * 1e6));
        printf("\n");
    }

    free(node_ms);
    free(node_gemm);
    free(node_gemm1);
    free(values);
    free(ga);
    free(gb);
    free(gc);
    free(x);
    free(y);
    free(region);
    free(scratch);
    engine_model_free(m);
    return 0;
}
