/* check_latent.c — the seed-to-latent sampler, part of the API contract: the same
 * seed gives the same bits, a shorter latent is a prefix of a longer one, and the
 * values are standard normal.  (tests/http_gan.py checks the bits against
 * tests/latent_reference.py, the specification's Python twin.) */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/latent.h"

START_TEST(test_deterministic_prefix)
{
    float a[101], b[101], c[100];
    latent_from_seed(42, a, 101);
    latent_from_seed(42, b, 101);
    latent_from_seed(42, c, 100);
    ck_assert_int_eq(memcmp(a, b, sizeof a), 0);
    ck_assert_int_eq(memcmp(a, c, sizeof c), 0);
    latent_from_seed(43, b, 101);
    int same = 0;
    for (int i = 0; i < 101; i++)
        same += a[i] == b[i];
    ck_assert_int_lt(same, 3);
    latent_from_seed(UINT64_MAX, b, 101); /* the state wraps, as specified */
    for (int i = 0; i < 101; i++)
        ck_assert(isfinite(b[i]));
}
END_TEST

START_TEST(test_standard_normal)
{
    enum { DIM = 100, SEEDS = 2000 };
    float z[DIM];
    double sum = 0, sq = 0, tail = 0;
    for (uint64_t s = 0; s < SEEDS; s++) {
        latent_from_seed(s, z, DIM);
        for (int i = 0; i < DIM; i++) {
            sum += z[i];
            sq += (double)z[i] * z[i];
            tail += fabs(z[i]) > 1.959964;
        }
    }
    const double n = (double)DIM * SEEDS;
    const double mean = sum / n, var = sq / n - mean * mean;
    /* 200k draws: standard errors 0.0022 (mean), 0.0032 (variance), 0.0005 (tail) */
    ck_assert_msg(fabs(mean) < 0.01, "mean %g", mean);
    ck_assert_msg(fabs(var - 1.0) < 0.015, "variance %g", var);
    ck_assert_msg(fabs(tail / n - 0.05) < 0.003, "P(|z| > 1.96) = %g", tail / n);
}
END_TEST

START_TEST(test_lerp)
{
    const float a[3] = {0, 1, -2}, b[3] = {2, 1, 2};
    float z[3];
    latent_lerp(a, b, 0.25f, z, 3);
    ck_assert_float_eq(z[0], 0.5f);
    ck_assert_float_eq(z[1], 1.0f);
    ck_assert_float_eq(z[2], -1.0f);
    latent_lerp(a, b, 0.0f, z, 3);
    ck_assert_int_eq(memcmp(z, a, sizeof a), 0);
    latent_lerp(a, b, 1.0f, z, 3);
    ck_assert_int_eq(memcmp(z, b, sizeof b), 0);
}
END_TEST

static Suite *latent_suite(void)
{
    Suite *s = suite_create("latent");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_deterministic_prefix);
    tcase_add_test(tc, test_standard_normal);
    tcase_add_test(tc, test_lerp);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(latent_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
