/* check_arena.c — the bump allocator: alignment, exhaustion, reset, and sizes that
 * would wrap around when rounded up.  Huge sizes are tested only on paths that must
 * refuse before calling the allocator (ASan aborts on impossible malloc sizes). */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/arena.h"

START_TEST(test_round)
{
    ck_assert_uint_eq(arena_round(0), 0);
    ck_assert_uint_eq(arena_round(1), ARENA_ALIGN);
    ck_assert_uint_eq(arena_round(ARENA_ALIGN), ARENA_ALIGN);
    ck_assert_uint_eq(arena_round(ARENA_ALIGN + 1), 2 * ARENA_ALIGN);
    /* Wraps to 0 past the last multiple; arena_alloc and arena_init detect it. */
    ck_assert_uint_eq(arena_round(SIZE_MAX), 0);
}
END_TEST

START_TEST(test_alignment)
{
    arena a;
    ck_assert_int_eq(arena_init(&a, 1000), 0);
    ck_assert_uint_eq(a.size, arena_round(1000));
    size_t sizes[] = {1, 3, 64, 65, 7, 100};
    unsigned char *prev = NULL;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = arena_alloc(&a, sizes[i]);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq((uintptr_t)p % ARENA_ALIGN, 0);
        ck_assert(p >= a.base && p + sizes[i] <= a.base + a.size);
        ck_assert(!prev || p >= prev + sizes[i - 1]); /* slices never overlap */
        memset(p, 0xab, sizes[i]);                    /* ASan checks the slice is real */
        prev = p;
    }
    arena_free(&a);
}
END_TEST

START_TEST(test_exhaustion)
{
    arena a;
    ck_assert_int_eq(arena_init(&a, 4 * ARENA_ALIGN), 0);
    ck_assert_ptr_nonnull(arena_alloc(&a, 3 * ARENA_ALIGN));
    ck_assert_ptr_null(arena_alloc(&a, ARENA_ALIGN + 1)); /* rounds to two slots, one left */
    ck_assert_uint_eq(a.used, 3 * ARENA_ALIGN);          /* a refusal changes nothing */
    ck_assert_ptr_nonnull(arena_alloc(&a, ARENA_ALIGN));  /* exactly full */
    ck_assert_uint_eq(a.used, a.size);
    ck_assert_ptr_null(arena_alloc(&a, 1));
    arena_free(&a);
}
END_TEST

START_TEST(test_reset)
{
    arena a;
    ck_assert_int_eq(arena_init(&a, 2 * ARENA_ALIGN), 0);
    void *first = arena_alloc(&a, 2 * ARENA_ALIGN);
    ck_assert_ptr_nonnull(first);
    ck_assert_ptr_null(arena_alloc(&a, 1));
    arena_reset(&a);
    ck_assert_uint_eq(a.used, 0);
    ck_assert_ptr_eq(arena_alloc(&a, 1), first); /* the same memory, handed out again */
    arena_free(&a);
    ck_assert_ptr_null(a.base);
    ck_assert_ptr_null(arena_alloc(&a, 1));
    ck_assert_ptr_null(arena_alloc(&a, 0)); /* no offset from NULL after free */
}
END_TEST

START_TEST(test_huge_sizes)
{
    arena a;
    ck_assert_int_eq(arena_init(&a, 4 * ARENA_ALIGN), 0);
    ck_assert_ptr_null(arena_alloc(&a, SIZE_MAX));                  /* rounds to 0 */
    ck_assert_ptr_null(arena_alloc(&a, SIZE_MAX - ARENA_ALIGN + 2)); /* rounds to 0 */
    ck_assert_ptr_null(arena_alloc(&a, SIZE_MAX / 2));
    ck_assert_uint_eq(a.used, 0);
    ck_assert_ptr_nonnull(arena_alloc(&a, 1)); /* still usable */
    arena_free(&a);

    /* A size that wraps when rounded must fail, not become a zero-byte arena. */
    ck_assert_int_eq(arena_init(&a, SIZE_MAX), -1);
    ck_assert_ptr_null(a.base);
    ck_assert_uint_eq(a.size, 0);
    ck_assert_ptr_null(arena_alloc(&a, 1));
    arena_free(&a); /* harmless on a failed arena */
}
END_TEST

START_TEST(test_zero_size)
{
    arena a;
    ck_assert_int_eq(arena_init(&a, 0), 0); /* one slot, so base is a real block */
    ck_assert_uint_eq(a.size, ARENA_ALIGN);
    ck_assert_ptr_nonnull(arena_alloc(&a, 0));
    ck_assert_uint_eq(a.used, 0);
    ck_assert_ptr_nonnull(arena_alloc(&a, ARENA_ALIGN));
    arena_free(&a);
}
END_TEST

static Suite *arena_suite(void)
{
    Suite *s = suite_create("arena");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_round);
    tcase_add_test(tc, test_alignment);
    tcase_add_test(tc, test_exhaustion);
    tcase_add_test(tc, test_reset);
    tcase_add_test(tc, test_huge_sizes);
    tcase_add_test(tc, test_zero_size);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(arena_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
