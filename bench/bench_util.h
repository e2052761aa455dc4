/* bench_util.h — what the C benchmarks share: the clock, sorting times, and the
 * machine's FP32 peak that every GFLOP/s figure is set against. */
#ifndef MODELD_BENCH_UTIL_H
#define MODELD_BENCH_UTIL_H

#include <time.h>

#define BENCH_CORE_PEAK_GFLOPS 116.5 /* 3.64 GHz x 32 FP32 FLOP/cycle (2 FMA pipes x 8) */
#define BENCH_CORES 2                /* the benchmark machines' core count */

static inline double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* qsort comparator for doubles, ascending */
static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The FP32 peak, GFLOP/s, of the cores a run with this many threads may use. */
static inline double bench_peak_gflops(int threads)
{
    return BENCH_CORE_PEAK_GFLOPS * (threads < BENCH_CORES ? threads : BENCH_CORES);
}

#endif
