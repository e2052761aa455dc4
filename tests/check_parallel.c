/* check_parallel.c — the session thread pool: every part runs exactly once per job,
 * its writes are visible when par_run returns, jobs follow each other without a
 * lost wake-up, and the few-rows linear gives the same bits on any thread count. */
#include <check.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops/ops.h"
#include "engine/parallel.h"

typedef struct count_job {
    int hits[8];
    atomic_int calls;
    int parts_seen;
} count_job;

static void count_part(void *ctx, int part, int parts)
{
    count_job *j = ctx;
    j->hits[part]++; /* each part owns its slot: no race */
    j->parts_seen = parts;
    atomic_fetch_add(&j->calls, 1);
}

START_TEST(test_every_part_once)
{
    for (int threads = 1; threads <= 4; threads++) {
        par_pool *p;
        engine_err err;
        ck_assert_int_eq(par_pool_open(threads, &p, &err), ENGINE_OK);
        ck_assert_int_eq(par_pool_threads(p), threads);
        count_job j;
        memset(&j, 0, sizeof j);
        enum { JOBS = 2000 }; /* back to back: a missed generation would hang here */
        for (int k = 0; k < JOBS; k++)
            par_run(p, count_part, &j);
        ck_assert_int_eq(atomic_load(&j.calls), JOBS * threads);
        ck_assert_int_eq(j.parts_seen, threads);
        for (int t = 0; t < threads; t++)
            ck_assert_int_eq(j.hits[t], JOBS);
        par_pool_close(p);
    }
}
END_TEST

START_TEST(test_null_and_bad_sizes)
{
    count_job j;
    memset(&j, 0, sizeof j);
    par_run(NULL, count_part, &j);
    ck_assert_int_eq(j.hits[0], 1);
    ck_assert_int_eq(par_pool_threads(NULL), 1);
    par_pool *p = (par_pool *)&j;
    engine_err err;
    ck_assert_int_eq(par_pool_open(0, &p, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_null(p);
    par_pool_close(NULL);
}
END_TEST

/* x, w uniform in [-0.5, 0.5) from the seed s; b[i] = i / out. */
static void fill_layer(unsigned s, float *x, size_t nx, float *w, size_t nw, float *b, int out)
{
    for (size_t i = 0; i < nx; i++)
        x[i] = (float)((s = s * 1103515245u + 12345u) >> 8) / (1u << 24) - 0.5f;
    for (size_t i = 0; i < nw; i++)
        w[i] = (float)((s = s * 1103515245u + 12345u) >> 8) / (1u << 24) - 0.5f;
    for (int i = 0; i < out; i++)
        b[i] = (float)i / out;
}

/* Threads split W's rows, each output computed whole by one thread: bit-identical. */
START_TEST(test_linear_any_threads)
{
    enum { N = 5, IN = 37, OUT = 29 };
    float x[N * IN], w[OUT * IN], b[OUT], y1[N * OUT], y3[N * OUT];
    fill_layer(12345, x, N * IN, w, OUT * IN, b, OUT);
    par_pool *p;
    engine_err err;
    ck_assert_int_eq(par_pool_open(3, &p, &err), ENGINE_OK);
    linear_forward(NULL, N, IN, OUT, x, w, b, ACT_GELU, 0.0f, y1);
    linear_forward(p, N, IN, OUT, x, w, b, ACT_GELU, 0.0f, y3);
    ck_assert_int_eq(memcmp(y1, y3, sizeof y1), 0);
    par_pool_close(p);
}
END_TEST

/* The packed path splits whole panels of 16 outputs between threads: bit-identical
 * for any pool size, including pools with more threads than panels. */
START_TEST(test_linear_packed_any_threads)
{
    enum { N = 14, IN = 300, OUT = 70 };
    static float x[N * IN], w[OUT * IN], b[OUT], y1[N * OUT], y2[N * OUT], y7[N * OUT];
    static float panels[((OUT + 15) / 16) * 16 * IN];
    fill_layer(777, x, N * IN, w, OUT * IN, b, OUT);
    ck_assert_uint_eq(linear_packed_floats(OUT, IN), sizeof panels / sizeof panels[0]);
    linear_pack(OUT, IN, w, panels);
    par_pool *p2, *p7;
    engine_err err;
    ck_assert_int_eq(par_pool_open(2, &p2, &err), ENGINE_OK);
    ck_assert_int_eq(par_pool_open(7, &p7, &err), ENGINE_OK);
    linear_forward_packed(NULL, N, IN, OUT, x, panels, b, ACT_GELU, 0.0f, y1);
    linear_forward_packed(p2, N, IN, OUT, x, panels, b, ACT_GELU, 0.0f, y2);
    linear_forward_packed(p7, N, IN, OUT, x, panels, b, ACT_GELU, 0.0f, y7);
    ck_assert_int_eq(memcmp(y1, y2, sizeof y1), 0);
    ck_assert_int_eq(memcmp(y1, y7, sizeof y1), 0);
    par_pool_close(p2);
    par_pool_close(p7);
}
END_TEST

static Suite *parallel_suite(void)
{
    Suite *s = suite_create("parallel");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_every_part_once);
    tcase_add_test(tc, test_null_and_bad_sizes);
    tcase_add_test(tc, test_linear_any_threads);
    tcase_add_test(tc, test_linear_packed_any_threads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(parallel_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
