/* bench_cnn — engine-only latency of one model directory at one batch size.
 *
 *   bench_cnn [--threads N] [--iters K] [--warmup W] MODEL_DIR BATCH
 *
 * Loads the directory exactly as the daemon does (model_dir_read, then
 * engine_cnn_load with max_batch = BATCH), opens one session, and times
 * engine_cnn_forward on one fixed input: no HTTP, no JSON, no image decoding, so
 * the number is the engine's alone and comparable with bench_torch.py and
 * bench_ort.mjs, which time the same directory the same way.
 *
 * Prints one line that bench/run.sh parses (fields are key=value, extra fields may
 * follow but the first six never move):
 *   modeld <name> batch=B median_ms=.. p10_ms=.. images_per_s=.. gflops=.. peak_pct=..
 *
 * Measurement choices, and why:
 *   - The BLAS thread count is set once, before the model loads, through
 *     engine_set_blas_threads: the same single decision the daemon makes.  Default 2,
 *     the core count of the benchmark machines (docs/PERFORMANCE.md).
 *   - The input is N(0,1) noise from a fixed seed: the model's input is already
 *     normalised, and dense random data keeps every multiply honest (no zero
 *     skipping anywhere in the stack, but no denormals either).
 *   - Median, not mean: the shared 2-core machines have long-tailed noise; p10 shows
 *     what the code can do when the machine is quiet.
 *   - Without --iters the loop runs for about 2 s (at least 5, at most 2000
 *     iterations), so one command line suits a 0.1 ms model and a 300 ms one.
 *   - GFLOP/s counts convolutions and linears only (engine_model_flops), 2 per
 *     multiply-add.  peak_pct is against the FP32 peak of the cores the run may
 *     use: 116.5 GFLOP/s per Zen 4 core (3.64 GHz x 32 FLOP/cycle), times
 *     min(threads, 2) on the 2-core benchmark machines, i.e. 233 by default.
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

#include "engine/engine.h"
#include "proto/model_dir.h"

#define BENCH_CORE_PEAK_GFLOPS 116.5 /* 3.64 GHz x 32 FP32 FLOP/cycle (2 FMA pipes x 8) */
#define BENCH_CORES 2                /* the benchmark machines' core count */
#define BENCH_AUTO_SECONDS 2.0
#define BENCH_MIN_ITERS 5
#define BENCH_MAX_ITERS 2000

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

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
        fprintf(stderr, "bench_cnn: %s must be an integer in %d..%d, got '%s'\n", what, lo, hi, s);
        exit(2);
    }
    return (int)v;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_cnn [--threads N] [--iters K] [--warmup W] MODEL_DIR BATCH\n");
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

int main(int argc, char **argv)
{
    int threads = 2, iters = 0, warmup = 3;
    const char *pos[2];
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
        else if (n_pos < 2)
            pos[n_pos++] = argv[i];
        else
            usage();
    }
    if (n_pos != 2)
        usage();
    const char *dir = pos[0];
    const int batch = parse_int(pos[1], "BATCH", 1, 65536);

    /* Once, before anything can start a BLAS call. */
    engine_set_blas_threads(threads);

    engine_err err = { { 0 } };
    model_dir md;
    if (model_dir_read(dir, &md, &err) != ENGINE_OK) {
        fprintf(stderr, "bench_cnn: %s\n", err.msg);
        return 1;
    }
    engine_model *m;
    if (engine_cnn_load(&md.cnn, md.weights_path, batch, &m, &err) != ENGINE_OK) {
        fprintf(stderr, "bench_cnn: %s\n", err.msg);
        model_dir_free(&md);
        return 1;
    }
    model_dir_free(&md);
    engine_session *s;
    if (engine_session_open(m, &s, &err) != ENGINE_OK) {
        fprintf(stderr, "bench_cnn: %s\n", err.msg);
        engine_model_free(m);
        return 1;
    }

    int c, h, w;
    engine_model_input_shape(m, &c, &h, &w);
    const size_t in_floats = (size_t)batch * c * h * w;  /* x (N,C,H,W) */
    const size_t out_floats = (size_t)batch * engine_model_num_outputs(m); /* (N,K) */
    float *x = malloc(in_floats * sizeof *x);
    float *logits = malloc(out_floats * sizeof *logits);
    if (!x || !logits) {
        fprintf(stderr, "bench_cnn: out of memory for a batch of %d\n", batch);
        return 1;
    }
    for (size_t i = 0; i < in_floats; i++)
        x[i] = rng_normal();

    /* The last warm-up run also sizes the automatic iteration count, so choosing
     * it costs nothing extra. */
    double last = 0;
    for (int i = 0; i < warmup || (iters == 0 && i < 1); i++) {
        double t0 = now_ms();
        if (engine_cnn_forward(s, x, batch, logits, &err) != ENGINE_OK) {
            fprintf(stderr, "bench_cnn: %s\n", err.msg);
            return 1;
        }
        last = now_ms() - t0;
    }
    if (iters == 0) {
        double est = BENCH_AUTO_SECONDS * 1e3 / (last > 1e-3 ? last : 1e-3);
        iters = est < BENCH_MIN_ITERS ? BENCH_MIN_ITERS
              : est > BENCH_MAX_ITERS ? BENCH_MAX_ITERS : (int)est;
    }

    double *ms = malloc((size_t)iters * sizeof *ms);
    if (!ms) {
        fprintf(stderr, "bench_cnn: out of memory\n");
        return 1;
    }
    volatile float sink = 0; /* keeps the result observable */
    for (int i = 0; i < iters; i++) {
        double t0 = now_ms();
        engine_cnn_forward(s, x, batch, logits, &err);
        ms[i] = now_ms() - t0;
        sink += logits[0];
    }
    (void)sink;
    qsort(ms, (size_t)iters, sizeof *ms, cmp_double);

    const double median = percentile(ms, iters, 0.5);
    const double p10 = percentile(ms, iters, 0.1);
    const double gflops = engine_model_flops(m) * batch / (median * 1e6);
    const double peak = BENCH_CORE_PEAK_GFLOPS * (threads < BENCH_CORES ? threads : BENCH_CORES);
    char name[256];
    printf("modeld %s batch=%d median_ms=%.4f p10_ms=%.4f images_per_s=%.1f gflops=%.2f "
           "peak_pct=%.1f iters=%d threads=%d\n",
           dir_name(dir, name, sizeof name), batch, median, p10, batch * 1e3 / median, gflops,
           100.0 * gflops / peak, iters, threads);

    free(ms);
    free(x);
    free(logits);
    engine_session_close(s);
    engine_model_free(m);
    return 0;
}
