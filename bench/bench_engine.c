/* bench_engine — engine-only latency of one model directory at one batch size.
 *
 *   bench_engine [--threads N] [--iters K] [--warmup W] MODEL_DIR BATCH [SEQ]
 *
 * Loads the directory exactly as the daemon does (model_dir_read, then the kind's
 * engine_*_load sized for this batch), opens one session, and times the forward on
 * one fixed input: no HTTP, no JSON, no image decoding or tokenising, so the number
 * is the engine's alone and comparable with bench_torch.py and bench_ort.mjs,
 * which time the same directory the same way.
 *
 * Prints one line that bench/run.sh parses (fields are key=value, extra fields may
 * follow but the first six never move):
 *   modeld <name> batch=B median_ms=.. p10_ms=.. images_per_s=.. gflops=.. peak_pct=..
 * (images_per_s counts sequences for BERT, whose line also ends in seq=T, and
 * generated images for a GAN).
 *
 * Workloads:
 *   - CNN: a batch of N(0,1) noise images from a fixed seed: the model's input is
 *     already normalised, and dense random data keeps every multiply honest (no
 *     zero skipping anywhere in the stack, but no denormals either).
 *   - BERT (SEQ required): BATCH sequences of exactly SEQ tokens, [CLS] ids [SEP]
 *     with ids[i] = 1000 + (i*7919 + b*31) % 20000 and one [MASK] at SEQ/2; MLM
 *     logits at the mask only, no NSP head.  The peers run this very workload
 *     (bench/prepare.py documents it beside the FLOP count all three use:
 *     L*(T*(8D^2 + 4DI) + 4T^2 D) + (2D^2 + 2DV) per sequence).
 *   - GAN (no SEQ): BATCH latents z of N(0,1) from the same fixed-seed stream and,
 *     for a conditional generator, class i % num_classes for sample i (NULL for an
 *     unconditional one); engine_gan_forward into (N, C, H, W), the raw output.
 *     bench/prepare.py and bench_ort.mjs feed their peers the same shapes (their
 *     own fixed N(0,1) draws: the values do not change the work).
 *
 * Measurement choices, and why:
 *   - The BLAS thread count is set once, before the model loads, through
 *     engine_set_blas_threads: the same single decision the daemon makes.  Default 2,
 *     the core count of the benchmark machines (docs/PERFORMANCE.md).
 *   - Median, not mean: the shared 2-core machines have long-tailed noise; p10 shows
 *     what the code can do when the machine is quiet.
 *   - Without --iters the loop runs for about 2 s (at least 5, at most 2000
 *     iterations), so one command line suits a 0.1 ms model and a 300 ms one.
 *   - CNN and GAN GFLOP/s count convolutions, transposed convolutions and linears
 *     only (engine_model_flops), 2 per multiply-add.  peak_pct is against the FP32 peak of the cores the run may
 *     use: 116.5 GFLOP/s per Zen 4 core (3.64 GHz x 32 FLOP/cycle), times
 *     min(threads, 2) on the 2-core benchmark machines, i.e. 233 by default.
 *
 * A program, not a library: errors go to stderr and end the process.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_util.h"
#include "engine/engine.h"
#include "proto/model_dir.h"

#define BENCH_AUTO_SECONDS 2.0
#define BENCH_MIN_ITERS 5
#define BENCH_MAX_ITERS 2000

/* Nearest-rank percentile of sorted v[0..n). */
static double percentile(const double *v, int n, double q)
{
    int i = (int)ceil(q * n) - 1;
    if (i < 0)
        i = 0;
    if (i >= n)
        i = n - 1;
    return v[i];
}

/* xorshift64* and Box-Muller: a fixed, portable N(0,1) stream, so every run (and
 * every build) feeds the engine the same numbers. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static double rng_uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return ((rng_state * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}

static float rng_normal(void)
{
    double u1 = rng_uniform(), u2 = rng_uniform();
    if (u1 < 1e-300)
        u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static int parse_int(const char *s, const char *what, int lo, int hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "bench_engine: %s must be an integer in %d..%d, got '%s'\n", what, lo, hi, s);
        exit(2);
    }
    return (int)v;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_engine [--threads N] [--iters K] [--warmup W] MODEL_DIR BATCH [SEQ]\n");
    exit(2);
}

/* The model's name in the output line: the directory's last component. */
static const char *dir_name(const char *dir, char *buf, size_t size)
{
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        len--;
    size_t start = len;
    while (start > 0 && dir[start - 1] != '/')
        start--;
    snprintf(buf, size, "%.*s", (int)(len - start), dir + start);
    return buf;
}

static void die(const char *what, const engine_err *err)
{
    fprintf(stderr, "bench_engine: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory", NULL);
    return p;
}

/* Special token ids of the benchmark vocabulary (bert-base-uncased's numbering,
 * which bench/prepare.py's vocab.txt keeps). */
enum { BENCH_CLS = 101, BENCH_SEP = 102, BENCH_MASK = 103 };

/* One timed call's inputs and outputs, whatever the model's kind. */
typedef struct workload {
    engine_session *s;
    int batch;
    /* CNN */
    float *x, *logits;
    /* GAN */
    float *z, *images;
    int32_t *classes; /* NULL: unconditional */
    /* BERT */
    engine_bert_seq *seqs;
    int32_t *ids, *mask_pos;
    float *mlm;
} workload;

static engine_status run_once(workload *w, engine_err *err)
{
    if (w->seqs)
        return engine_bert_forward(w->s, w->seqs, w->batch, w->mlm, NULL, err);
    if (w->z)
        return engine_gan_forward(w->s, w->z, w->classes, w->batch, w->images, err);
    return engine_cnn_forward(w->s, w->x, w->batch, w->logits, err);
}

static void cnn_workload(workload *w, const engine_model *m)
{
    int c, h, w_;
    engine_model_input_shape(m, &c, &h, &w_);
    const size_t in_floats = (size_t)w->batch * c * h * w_; /* x (N,C,H,W) */
    w->x = xmalloc(in_floats * sizeof *w->x);
    w->logits = xmalloc((size_t)w->batch * engine_model_num_outputs(m) * sizeof *w->logits);
    for (size_t i = 0; i < in_floats; i++)
        w->x[i] = rng_normal();
}

static void gan_workload(workload *w, const engine_model *m)
{
    const int nz = engine_gan_latent_dim(m), n_classes = engine_gan_num_classes(m);
    int c, h, w_;
    engine_gan_output_shape(m, &c, &h, &w_);
    const size_t z_floats = (size_t)w->batch * nz; /* z (N, latent_dim) */
    w->z = xmalloc(z_floats * sizeof *w->z);
    w->images = xmalloc((size_t)w->batch * c * h * w_ * sizeof *w->images);
    for (size_t i = 0; i < z_floats; i++)
        w->z[i] = rng_normal();
    if (n_classes > 0) {
        w->classes = xmalloc((size_t)w->batch * sizeof *w->classes);
        for (int i = 0; i < w->batch; i++)
            w->classes[i] = i % n_classes;
    }
}

static void bert_workload(workload *w, const engine_model *m, int seq)
{
    const int vocab = engine_model_num_outputs(m);
    w->seqs = xmalloc((size_t)w->batch * sizeof *w->seqs);
    w->ids = xmalloc((size_t)w->batch * seq * sizeof *w->ids);
    w->mask_pos = xmalloc((size_t)w->batch * sizeof *w->mask_pos);
    w->mlm = xmalloc((size_t)w->batch * vocab * sizeof *w->mlm);
    for (int b = 0; b < w->batch; b++) {
        int32_t *ids = w->ids + (size_t)b * seq;
        for (int i = 0; i < seq; i++)
            ids[i] = (1000 + (i * 7919 + b * 31) % 20000) % vocab;
        ids[0] = BENCH_CLS;
        ids[seq - 1] = BENCH_SEP;
        ids[seq / 2] = BENCH_MASK;
        w->mask_pos[b] = seq / 2;
        w->seqs[b] = (engine_bert_seq){ .ids = ids, .len = seq, .mask_pos = &w->mask_pos[b],
                                        .n_mask = 1 };
    }
}

/* FLOPs of one sample as every peer counts them: the model's GEMMs per image (CNN,
 * GAN: convolutions, transposed convolutions, linears), or for BERT the encoder's
 * GEMMs per token times T, its attention products and the MLM head at the one mask
 * (bench/prepare.py has the same formulas). */
static double sample_flops(const engine_model *m, const model_dir *md, int seq)
{
    if (md->kind != MODEL_KIND_BERT)
        return engine_model_flops(m);
    const double L = md->bert.num_hidden_layers, D = md->bert.hidden_size, T = seq;
    const double V = md->bert.vocab_size;
    return engine_model_flops(m) * T + L * 4.0 * T * T * D + 2.0 * D * D + 2.0 * D * V;
}

int main(int argc, char **argv)
{
    int threads = 2, iters = 0, warmup = 3;
    const char *pos[3];
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = parse_int(argv[++i], "--threads", 1, 256);
        else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
            iters = parse_int(argv[++i], "--iters", 1, 1000000);
        else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc)
            warmup = parse_int(argv[++i], "--warmup", 0, 1000000);
        else if (argv[i][0] == '-' && argv[i][1] != '\0')
            usage();
        else if (n_pos < 3)
            pos[n_pos++] = argv[i];
        else
            usage();
    }
    if (n_pos < 2)
        usage();
    const char *dir = pos[0];
    workload w = { .batch = parse_int(pos[1], "BATCH", 1, 65536) };

    /* Once, before anything can start a BLAS call. */
    engine_set_blas_threads(threads);

    engine_err err = { { 0 } };
    model_dir md;
    if (model_dir_read(dir, &md, &err) != ENGINE_OK)
        die(dir, &err);
    const bool bert = md.kind == MODEL_KIND_BERT, gan = md.kind == MODEL_KIND_GAN;
    if (bert != (n_pos == 3)) {
        fprintf(stderr, "bench_engine: %s is a %s model: %s\n", dir, model_kind_name(md.kind),
                bert ? "give SEQ, its sequence length" : "it takes no SEQ");
        return 2;
    }
    const int seq = bert ? parse_int(pos[2], "SEQ", 3, md.bert.max_position_embeddings) : 0;
    engine_model *m;
    engine_status st = bert  ? engine_bert_load(&md.bert, md.weights_path, w.batch,
                                                w.batch * seq, &m, &err)
                     : gan   ? engine_gan_load(&md.gan, md.weights_path, w.batch, &m, &err)
                             : engine_cnn_load(&md.cnn, md.weights_path, w.batch, &m, &err);
    if (st != ENGINE_OK)
        die(dir, &err);
    if (engine_session_open(m, &w.s, &err) != ENGINE_OK)
        die("session", &err);
    if (bert)
        bert_workload(&w, m, seq);
    else if (gan)
        gan_workload(&w, m);
    else
        cnn_workload(&w, m);
    const double flops = sample_flops(m, &md, seq);
    model_dir_free(&md);

    /* The last warm-up run also sizes the automatic iteration count, so choosing
     * it costs nothing extra. */
    double last = 0;
    for (int i = 0; i < warmup || (iters == 0 && i < 1); i++) {
        double t0 = bench_now_ms();
        if (run_once(&w, &err) != ENGINE_OK)
            die("forward", &err);
        last = bench_now_ms() - t0;
    }
    if (iters == 0) {
        double est = BENCH_AUTO_SECONDS * 1e3 / (last > 1e-3 ? last : 1e-3);
        iters = est < BENCH_MIN_ITERS ? BENCH_MIN_ITERS
              : est > BENCH_MAX_ITERS ? BENCH_MAX_ITERS : (int)est;
    }

    double *ms = xmalloc((size_t)iters * sizeof *ms);
    volatile float sink = 0; /* keeps the result observable */
    for (int i = 0; i < iters; i++) {
        double t0 = bench_now_ms();
        run_once(&w, &err);
        ms[i] = bench_now_ms() - t0;
        sink += bert ? w.mlm[0] : gan ? w.images[0] : w.logits[0];
    }
    (void)sink;
    qsort(ms, (size_t)iters, sizeof *ms, bench_cmp_double);

    const double median = percentile(ms, iters, 0.5);
    const double p10 = percentile(ms, iters, 0.1);
    const double gflops = flops * w.batch / (median * 1e6);
    const double peak = bench_peak_gflops(threads);
    char name[256], seq_field[32] = "";
    if (bert)
        snprintf(seq_field, sizeof seq_field, " seq=%d", seq);
    printf("modeld %s batch=%d median_ms=%.4f p10_ms=%.4f images_per_s=%.1f gflops=%.2f "
           "peak_pct=%.1f iters=%d threads=%d%s\n",
           dir_name(dir, name, sizeof name), w.batch, median, p10, w.batch * 1e3 / median, gflops,
           100.0 * gflops / peak, iters, threads, seq_field);

    free(ms);
    free(w.x);
    free(w.logits);
    free(w.seqs);
    free(w.ids);
    free(w.mask_pos);
    free(w.mlm);
    free(w.z);
    free(w.images);
    free(w.classes);
    engine_session_close(w.s);
    engine_model_free(m);
    return 0;
}
