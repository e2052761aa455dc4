/* check_kserve.c — the Open Inference Protocol parser and formatter on their own:
 * nested and flat data, every datatype in JSON and in binary (BYTES' length
 * prefixes included), the size checks that come before any allocation, requested
 * outputs, and a binary answer's layout.  The HTTP tests (tests/http_v2.py) cover
 * the same through the daemon with real models; these reach the corners, and under
 * the sanitizer build show that no malformed body reads or leaks a byte.
 */
#include <config.h>

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/kserve.h"

/* JSON header + binary part, as a client sends them. */
typedef struct body {
    char buf[4096];
    size_t len, header_len;
} body;

static void make(body *b, const char *json, const void *bin, size_t bin_len)
{
    b->header_len = strlen(json);
    ck_assert_uint_lt(b->header_len + bin_len, sizeof b->buf);
    memcpy(b->buf, json, b->header_len);
    if (bin_len)
        memcpy(b->buf + b->header_len, bin, bin_len);
    b->len = b->header_len + bin_len;
}

static int parse(const body *b, kserve_request *r, proto_error *e)
{
    return kserve_parse_infer(b->buf, b->len, b->header_len, r, e);
}

/* Parses json (no binary part) expecting status; the message must contain want. */
static void refuse(const char *json, int status, const char *want)
{
    body b;
    make(&b, json, NULL, 0);
    kserve_request r;
    proto_error e;
    ck_assert_int_eq(parse(&b, &r, &e), status);
    ck_assert_msg(strstr(e.msg, want) != NULL, "'%s' lacks '%s'", e.msg, want);
    ck_assert_ptr_null(r.inputs); /* freed on failure */
}

START_TEST(nested_and_flat_data)
{
    body b;
    make(&b,
         "{\"id\":\"a\",\"inputs\":[{\"name\":\"x\",\"shape\":[2,3],\"datatype\":\"FP32\","
         "\"data\":[[1,2.5,3],[4,5,-6]]},{\"name\":\"y\",\"shape\":[3],\"datatype\":\"INT64\","
         "\"data\":[7,-8,9000000000]},{\"name\":\"z\",\"shape\":[2],\"datatype\":\"BOOL\","
         "\"data\":[true,0]},{\"name\":\"s\",\"shape\":[2],\"datatype\":\"BYTES\","
         "\"data\":[\"hi\",\"\"]}]}",
         NULL, 0);
    kserve_request r;
    proto_error e;
    ck_assert_int_eq(parse(&b, &r, &e), 0);
    ck_assert_str_eq(r.id, "a");
    ck_assert_int_eq(r.n_inputs, 4);
    ck_assert_uint_eq(r.inputs[0].count, 6);
    ck_assert_float_eq(r.inputs[0].f32[1], 2.5f);
    ck_assert_float_eq(r.inputs[0].f32[5], -6.0f);
    ck_assert_int_eq(r.inputs[1].i64[2], 9000000000LL);
    ck_assert_int_eq(r.inputs[2].i64[0], 1);
    ck_assert_int_eq(r.inputs[2].i64[1], 0);
    ck_assert_str_eq(r.inputs[3].str[0], "hi");
    ck_assert_uint_eq(r.inputs[3].str_len[1], 0);
    kserve_request_free(&r);
}
END_TEST

START_TEST(binary_every_datatype)
{
    uint8_t bin[64], *p = bin;
    const float f[2] = {1.5f, -2.0f};
    memcpy(p, f, sizeof f); /* x86 is little-endian, as the protocol is */
    p += sizeof f;
    const int32_t i32[2] = {-3, 2147483647};
    memcpy(p, i32, sizeof i32);
    p += sizeof i32;
    *p++ = 255;             /* UINT8 */
    const uint8_t bytes[] = {2, 0, 0, 0, 'o', 'k', 0, 0, 0, 0}; /* "ok", "" */
    memcpy(p, bytes, sizeof bytes);
    p += sizeof bytes;
    body b;
    make(&b,
         "{\"inputs\":["
         "{\"name\":\"f\",\"shape\":[2],\"datatype\":\"FP32\",\"parameters\":{\"binary_data_size\":8}},"
         "{\"name\":\"i\",\"shape\":[2],\"datatype\":\"INT32\",\"parameters\":{\"binary_data_size\":8}},"
         "{\"name\":\"u\",\"shape\":[1],\"datatype\":\"UINT8\",\"parameters\":{\"binary_data_size\":1}},"
         "{\"name\":\"s\",\"shape\":[2],\"datatype\":\"BYTES\",\"parameters\":{\"binary_data_size\":10}}"
         "]}",
         bin, (size_t)(p - bin));
    kserve_request r;
    proto_error e;
    ck_assert_int_eq(parse(&b, &r, &e), 0);
    ck_assert_float_eq(r.inputs[0].f32[0], 1.5f);
    ck_assert_int_eq(r.inputs[1].i64[0], -3);
    ck_assert_int_eq(r.inputs[1].i64[1], 2147483647);
    ck_assert_int_eq(r.inputs[2].i64[0], 255);
    ck_assert_str_eq(r.inputs[3].str[0], "ok");
    ck_assert_uint_eq(r.inputs[3].str_len[1], 0);
    kserve_request_free(&r);

    /* A BYTES length that runs past its own binary_data_size. */
    const uint8_t runaway[] = {9, 0, 0, 0, 'x'};
    make(&b, "{\"inputs\":[{\"name\":\"s\",\"shape\":[1],\"datatype\":\"BYTES\","
             "\"parameters\":{\"binary_data_size\":5}}]}",
         runaway, sizeof runaway);
    ck_assert_int_eq(parse(&b, &r, &e), 400);
    ck_assert_ptr_nonnull(strstr(e.msg, "runs past"));
    /* FP32 binary that is not finite. */
    const uint32_t nan_bits = 0x7fc00000u;
    make(&b, "{\"inputs\":[{\"name\":\"f\",\"shape\":[1],\"datatype\":\"FP32\","
             "\"parameters\":{\"binary_data_size\":4}}]}",
         &nan_bits, sizeof nan_bits);
    ck_assert_int_eq(parse(&b, &r, &e), 400);
    ck_assert_ptr_nonnull(strstr(e.msg, "not finite"));
}
END_TEST

START_TEST(malformed_bodies)
{
    refuse("", 400, "");
    refuse("[1]", 400, "JSON object");
    refuse("{\"inputs\":[]}", 400, "1 to 16 tensors");
    refuse("{\"inputs\":[{\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}]}", 400, "\"name\"");
    refuse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP64\",\"data\":[1]}]}",
           400, "FP64 is not taken");
    refuse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"F32\",\"data\":[1]}]}",
           400, "unknown datatype");
    refuse("{\"inputs\":[{\"name\":\"x\",\"shape\":[-1],\"datatype\":\"FP32\",\"data\":[1]}]}",
           400, "non-negative");
    refuse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2,3,4,5,6,7,8,9],\"datatype\":\"FP32\","
           "\"data\":[1]}]}",
           400, "1 to 8");
    /* a tiny body claiming a huge tensor is refused before anything is allocated */
    refuse("{\"inputs\":[{\"name\":\"x\",\"shape\":[100000,100000,100000],\"datatype\":\"FP32\","
           "\"data\":[1]}]}",
           400, "more elements than a body");
    refuse("{\"inputs\":[{\"name\":\"x\",\"shape\":[3],\"datatype\":\"FP32\",\"data\":[1,2]}]}",
           400, "3 elements but \"data\" has 2");
    refuse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1e39]}]}",
           400, "out of float range");
    refuse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"INT32\","
           "\"data\":[2147483648]}]}",
           400, "not a INT32 value");
    refuse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"BOOL\",\"data\":[2]}]}", 400,
           "not a BOOL value");
    refuse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]},"
           "{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}]}",
           400, "given twice");
    refuse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\"}]}", 400,
           "exactly one");
    refuse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}],"
           "\"outputs\":[{\"name\":\"y\",\"parameters\":{\"binary_data\":1}}]}",
           400, "true or false");
    refuse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}],"
           "\"id\":5}",
           400, "\"id\"");
    /* binary sizes that do not add up */
    body b;
    kserve_request r;
    proto_error e;
    make(&b, "{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"FP32\","
             "\"parameters\":{\"binary_data_size\":8}}]}",
         "abcd", 4);
    ck_assert_int_eq(parse(&b, &r, &e), 400);
    ck_assert_ptr_nonnull(strstr(e.msg, "truncated"));
    make(&b, "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
             "\"parameters\":{\"binary_data_size\":4}}]}",
         "\0\0\0\0zz", 6);
    ck_assert_int_eq(parse(&b, &r, &e), 400);
    ck_assert_ptr_nonnull(strstr(e.msg, "follow the JSON"));
    ck_assert_int_eq(kserve_parse_infer(b.buf, b.len, b.len + 1, &r, &e), 400);
}
END_TEST

START_TEST(answers_json_and_binary)
{
    body b;
    make(&b, "{\"id\":\"q\",\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
             "\"data\":[1]}],\"outputs\":[{\"name\":\"b\",\"parameters\":{\"binary_data\":true}},"
             "{\"name\":\"a\"}]}",
         NULL, 0);
    kserve_request r;
    proto_error e;
    ck_assert_int_eq(parse(&b, &r, &e), 0);
    const float a[2] = {0.25f, 1e-7f};
    const int64_t bb[2] = {-1, 3};
    kserve_output outs[3] = {
        {"a", KSERVE_FP32, 2, {1, 2}, .f32 = a},
        {"b", KSERVE_INT64, 1, {2}, .i64 = bb},
        {"c", KSERVE_FP32, 1, {2}, .f32 = a},
    };
    char *resp;
    size_t len, json_len;
    ck_assert_int_eq(kserve_format_infer("m", &r, outs, 3, &resp, &len, &json_len, &e), 0);
    ck_assert_uint_eq(len, json_len + 16);
    ck_assert_int_eq(resp[json_len - 1], '}'); /* the JSON part ends where it says */
    ck_assert_ptr_nonnull(strstr(resp, "\"id\":\"q\""));
    ck_assert_msg(strstr(resp, "\"data\":[0.25,1.00000001e-") != NULL, "%.*s", (int)json_len, resp);
    ck_assert_ptr_null(strstr(resp, "\"name\":\"c\"")); /* not asked for */
    int64_t got[2];
    memcpy(got, resp + json_len, sizeof got);
    ck_assert_int_eq(got[0], -1);
    ck_assert_int_eq(got[1], 3);
    free(resp);
    /* an output the model does not have */
    const kserve_output only_a[1] = {outs[0]};
    ck_assert_int_eq(kserve_format_infer("m", &r, only_a, 1, &resp, &len, &json_len, &e), 400);
    ck_assert_ptr_nonnull(strstr(e.msg, "no output 'b'"));
    kserve_request_free(&r);
}
END_TEST

static Suite *kserve_suite(void)
{
    Suite *s = suite_create("kserve");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, nested_and_flat_data);
    tcase_add_test(tc, binary_every_datatype);
    tcase_add_test(tc, malformed_bodies);
    tcase_add_test(tc, answers_json_and_binary);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(kserve_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
