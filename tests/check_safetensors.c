/* check_safetensors.c — the safetensors reader against valid and hostile files.
 *
 * Every file is assembled in memory by file_make(): an 8-byte length, the header,
 * the data.  Headers are written with single quotes for legibility; file_make()
 * turns them into double quotes.  Hostile inputs are copied into buffers of exactly
 * their length, so under ASan any read past the end aborts the test.
 */
#define _POSIX_C_SOURCE 200809L /* O_CLOEXEC, mkdtemp under -std=c11 */

#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/safetensors.h"

/* ---- building files ---------------------------------------------------------- */

typedef struct st_file {
    uint8_t *bytes;
    size_t len;
} st_file;

/* header (with ' for "), then pad spaces, then data_len bytes of data (zeros when
 * data is NULL). */
static st_file file_make_raw(const char *header, size_t pad, const void *data, size_t data_len)
{
    size_t n = strlen(header) + pad;
    st_file f = {.len = 8 + n + data_len};
    f.bytes = calloc(1, f.len);
    ck_assert_ptr_nonnull(f.bytes);
    for (int i = 0; i < 8; i++)
        f.bytes[i] = (uint8_t)((uint64_t)n >> (8 * i));
    for (size_t i = 0; header[i]; i++)
        f.bytes[8 + i] = header[i] == '\'' ? '"' : (uint8_t)header[i];
    memset(f.bytes + 8 + strlen(header), ' ', pad);
    if (data)
        memcpy(f.bytes + 8 + n, data, data_len);
    return f;
}

/* As the format's writers do: pad the header so the data section starts 8-aligned. */
static st_file file_make(const char *header, const void *data, size_t data_len)
{
    size_t pad = (8 - (8 + strlen(header)) % 8) % 8;
    return file_make_raw(header, pad, data, data_len);
}

static void file_free(st_file *f)
{
    free(f->bytes);
    f->bytes = NULL;
}

/* A copy of exactly len bytes, so ASan sees any overread. */
static uint8_t *exact_copy(const uint8_t *src, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(p);
    if (len)
        memcpy(p, src, len);
    return p;
}

static void assert_rejected(const uint8_t *bytes, size_t len, const char *expect)
{
    uint8_t *copy = exact_copy(bytes, len);
    safetensors *st = (safetensors *)0x1;
    engine_err err = {{0}};
    engine_status s = safetensors_open_buffer(copy, len, &st, &err);
    ck_assert_msg(s == ENGINE_ERR_FORMAT, "expected ENGINE_ERR_FORMAT, got %s (%s)",
                  engine_status_str(s), err.msg);
    ck_assert_ptr_null(st);
    ck_assert_msg(strstr(err.msg, expect), "message \"%s\" lacks \"%s\"", err.msg, expect);
    for (const char *c = err.msg; *c; c++)
        ck_assert_msg((unsigned char)*c >= 0x20 && *c != 0x7f, "control byte in \"%s\"", err.msg);
    free(copy);
}

static float bits_f32(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* ---- valid files ----------------------------------------------------------------- */

START_TEST(test_f32_round_trip)
{
    const float w[6] = {1.0f, -2.5f, 3e-38f, 1e30f, INFINITY, 0.1f};
    st_file f = file_make("{'w': {'dtype': 'F32', 'shape': [2, 3], 'data_offsets': [0, 24]}}",
                          w, sizeof w);
    safetensors *st;
    engine_err err;
    ck_assert_int_eq(safetensors_open_buffer(f.bytes, f.len, &st, &err), ENGINE_OK);
    ck_assert_uint_eq(safetensors_count(st), 1);
    const safetensors_tensor *t = safetensors_find(st, "w");
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(t->name, "w");
    ck_assert_int_eq(t->dtype, SAFETENSORS_F32);
    ck_assert_int_eq(t->ndim, 2);
    ck_assert_int_eq(t->shape[0], 2);
    ck_assert_int_eq(t->shape[1], 3);
    ck_assert_int_eq(t->numel, 6);
    ck_assert_uint_eq(t->nbytes, 24);
    ck_assert_ptr_eq(t->data, f.bytes + f.len - 24); /* points into the buffer, not a copy */

    float out[6];
    ck_assert_int_eq(safetensors_read_f32(t, out, &err), ENGINE_OK);
    ck_assert_mem_eq(out, w, sizeof w);
    /* The data section is 8-aligned in the buffer (malloc'd), so the view is direct. */
    const float *p = safetensors_f32_data(t);
    ck_assert_ptr_eq(p, (const float *)(const void *)t->data);
    ck_assert_mem_eq(p, w, sizeof w);
    safetensors_close(st);
    file_free(&f);
}
END_TEST

START_TEST(test_f32_unaligned)
{
    const float w[3] = {1.5f, -0.25f, 1e-3f};
    const char *h = "{'w': {'dtype': 'F32', 'shape': [3], 'data_offsets': [0, 12]}}";
    size_t pad = (5 - (8 + strlen(h)) % 4) % 4; /* data starts at 1 mod 4 */
    st_file f = file_make_raw(h, pad, w, sizeof w);
    ck_assert_uint_eq((uintptr_t)(f.bytes + f.len - 12) % 4, 1);
    safetensors *st;
    engine_err err;
    ck_assert_int_eq(safetensors_open_buffer(f.bytes, f.len, &st, &err), ENGINE_OK);
    const safetensors_tensor *t = safetensors_find(st, "w");
    ck_assert_ptr_null(safetensors_f32_data(t));
    float out[3];
    ck_assert_int_eq(safetensors_read_f32(t, out, &err), ENGINE_OK);
    ck_assert_mem_eq(out, w, sizeof w);
    safetensors_close(st);
    file_free(&f);
}
END_TEST

START_TEST(test_f16_values)
{
    static const struct {
        uint16_t half;
        float want;
    } cases[] = {
        {0x0000, 0.0f},
        {0x3c00, 1.0f},
        {0xc000, -2.0f},
        {0x3555, 0.333251953125f},
        {0x0001, 0x1p-24f},            /* smallest subnormal */
        {0x03ff, 1023 * 0x1p-24f},     /* largest subnormal */
        {0x8001, -0x1p-24f},
        {0x0400, 0x1p-14f},            /* smallest normal */
        {0x7bff, 65504.0f},            /* largest finite */
        {0xfbff, -65504.0f},
        {0x7c00, INFINITY},
        {0xfc00, -INFINITY},
    };
    enum { NC = sizeof cases / sizeof cases[0] };
    uint8_t data[2 * (NC + 2)];
    for (int i = 0; i < NC; i++) {
        data[2 * i] = (uint8_t)cases[i].half;
        data[2 * i + 1] = (uint8_t)(cases[i].half >> 8);
    }
    /* -0 and a NaN, which compare specially */
    data[2 * NC] = 0x00, data[2 * NC + 1] = 0x80;
    data[2 * NC + 2] = 0x00, data[2 * NC + 3] = 0x7e;

    char h[160];
    snprintf(h, sizeof h, "{'h': {'dtype': 'F16', 'shape': [%d], 'data_offsets': [0, %zu]}}",
             NC + 2, sizeof data);
    st_file f = file_make(h, data, sizeof data);
    safetensors *st;
    engine_err err;
    ck_assert_int_eq(safetensors_open_buffer(f.bytes, f.len, &st, &err), ENGINE_OK);
    const safetensors_tensor *t = safetensors_find(st, "h");
    ck_assert_int_eq(t->dtype, SAFETENSORS_F16);
    ck_assert_ptr_null(safetensors_f32_data(t));
    float out[NC + 2];
    ck_assert_int_eq(safetensors_read_f32(t, out, &err), ENGINE_OK);
    for (int i = 0; i < NC; i++)
        ck_assert_msg(out[i] == cases[i].want, "half 0x%04x -> %a, want %a", cases[i].half,
                      (double)out[i], (double)cases[i].want);
    ck_assert(out[NC] == 0.0f && signbit(out[NC]));
    ck_assert(isnan(out[NC + 1]));
    safetensors_close(st);
    file_free(&f);
}
END_TEST

START_TEST(test_bf16_values)
{
    static const uint16_t in[] = {0x3f80, 0xc040, 0x7f80, 0x0001, 0x8000, 0x4049};
    uint8_t data[sizeof in];
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        data[2 * i] = (uint8_t)in[i];
        data[2 * i + 1] = (uint8_t)(in[i] >> 8);
    }
    st_file f = file_make("{'b': {'dtype': 'BF16', 'shape': [6], 'data_offsets': [0, 12]}}",
                          data, sizeof data);
    safetensors *st;
    engine_err err;
    ck_assert_int_eq(safetensors_open_buffer(f.bytes, f.len, &st, &err), ENGINE_OK);
    float out[6];
    ck_assert_int_eq(safetensors_read_f32(safetensors_find(st, "b"), out, &err), ENGINE_OK);
    ck_assert(out[0] == 1.0f);
    ck_assert(out[1] == -3.0f);
    ck_assert(out[2] == INFINITY);
    ck_assert(out[3] == bits_f32(0x00010000)); /* a float subnormal */
    ck_assert(out[4] == 0.0f && signbit(out[4]));
    ck_assert(out[5] == bits_f32(0x40490000)); /* 3.140625 */
    safetensors_close(st);
    file_free(&f);
}
END_TEST

START_TEST(test_int_tensor_and_metadata)
{
    const int64_t ids[4] = {0, 1, 2, 3};
    st_file f = file_make("{'__metadata__': {'format': 'pt', 'note': 'x'},"
                          " 'position_ids': {'dtype': 'I64', 'shape': [1, 4],"
                          " 'data_offsets': [0, 32]}}",
                          ids, sizeof ids);
    safetensors *st;
    engine_err err;
    ck_assert_int_eq(safetensors_open_buffer(f.bytes, f.len, &st, &err), ENGINE_OK);
    ck_assert_uint_eq(safetensors_count(st), 1);
    ck_assert_ptr_null(safetensors_find(st, "__metadata__"));
    const safetensors_tensor *t = safetensors_find(st, "position_ids");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->dtype, SAFETENSORS_I64);
    ck_assert_int_eq(t->numel, 4);
    ck_assert_mem_eq(t->data, ids, sizeof ids);
    ck_assert_ptr_null(safetensors_f32_data(t));
    float out[4];
    ck_assert_int_eq(safetensors_read_f32(t, out, &err), ENGINE_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "'position_ids'"));
    ck_assert_ptr_nonnull(strstr(err.msg, "I64"));
    safetensors_close(st);
    file_free(&f);
}
END_TEST

START_TEST(test_other_dtypes_sizes)
{
    /* One tensor of 3 elements per dtype; the byte range must match the spec's size. */
    static const struct {
        const char *dtype;
        size_t size;
        safetensors_dtype want;
    } cases[] = {
        {"F64", 8, SAFETENSORS_OTHER},  {"I32", 4, SAFETENSORS_I32},
        {"U32", 4, SAFETENSORS_OTHER},  {"I16", 2, SAFETENSORS_OTHER},
        {"U16", 2, SAFETENSORS_OTHER},  {"I8", 1, SAFETENSORS_OTHER},
        {"U8", 1, SAFETENSORS_OTHER},   {"BOOL", 1, SAFETENSORS_OTHER},
        {"U64", 8, SAFETENSORS_OTHER},  {"F8_E4M3", 1, SAFETENSORS_OTHER},
        {"F8_E5M2", 1, SAFETENSORS_OTHER},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char h[160];
        size_t nb = 3 * cases[i].size;
        snprintf(h, sizeof h, "{'t': {'dtype': '%s', 'shape': [3], 'data_offsets': [0, %zu]}}",
                 cases[i].dtype, nb);
        st_file f = file_make(h, NULL, nb);
        safetensors *st;
        engine_err err;
        ck_assert_msg(safetensors_open_buffer(f.bytes, f.len, &st, &err) == ENGINE_OK, "%s: %s",
                      cases[i].dtype, err.msg);
        ck_assert_int_eq(safetensors_find(st, "t")->dtype, cases[i].want);
        safetensors_close(st);
        file_free(&f);

        /* one byte short must fail */
        snprintf(h, sizeof h, "{'t': {'dtype': '%s', 'shape': [3], 'data_offsets': [0, %zu]}}",
                 cases[i].dtype, nb - 1);
        f = file_make(h, NULL, nb);
        assert_rejected(f.bytes, f.len, "'t'");
        file_free(&f);
    }
}
END_TEST

START_TEST(test_empty_and_scalar)
{
    /* No tensors at all. */
    st_file f = file_make("{}", NULL, 0);
    safetensors *st;
    engine_err err;
    ck_assert_int_eq(safetensors_open_buffer(f.bytes, f.len, &st, &err), ENGINE_OK);
    ck_assert_uint_eq(safetensors_count(st), 0);
    ck_assert_ptr_null(safetensors_find(st, "w"));
    ck_assert_ptr_null(safetensors_at(st, 0));
    safetensors_close(st);
    file_free(&f);

    /* A scalar, an empty tensor inside another's range, and a zero dim next to a
     * dim whose product with the others would overflow. */
    const float v[2] = {4.0f, 5.0f};
    f = file_make("{'s': {'dtype': 'F32', 'shape': [], 'data_offsets': [0, 4]},"
                  " 'e': {'dtype': 'F32', 'shape': [0, 3], 'data_offsets': [2, 2]},"
                  " 'z': {'dtype': 'F32', 'shape': [4611686018427387904, 0, 4611686018427387904],"
                  " 'data_offsets': [8, 8]},"
                  " 'r': {'dtype': 'F32', 'shape': [1], 'data_offsets': [4, 8]}}",
                  v, sizeof v);
    ck_assert_int_eq(safetensors_open_buffer(f.bytes, f.len, &st, &err), ENGINE_OK);
    ck_assert_uint_eq(safetensors_count(st), 4);
    const safetensors_tensor *s = safetensors_find(st, "s");
    ck_assert_int_eq(s->ndim, 0);
    ck_assert_int_eq(s->numel, 1);
    float out;
    ck_assert_int_eq(safetensors_read_f32(s, &out, &err), ENGINE_OK);
    ck_assert(out == 4.0f);
    ck_assert_int_eq(safetensors_find(st, "e")->numel, 0);
    ck_assert_int_eq(safetensors_read_f32(safetensors_find(st, "e"), NULL, &err), ENGINE_OK);
    ck_assert_int_eq(safetensors_find(st, "z")->numel, 0);
    safetensors_close(st);
    file_free(&f);
}
END_TEST

START_TEST(test_many_names)
{
    enum { N = 1000 };
    size_t cap = (size_t)N * 96 + 16, used = 0;
    char *h = malloc(cap);
    ck_assert_ptr_nonnull(h);
    used += (size_t)snprintf(h, cap, "{");
    /* Written in a scrambled order so the reader's sort does the work. */
    for (int k = 0; k < N; k++) {
        int i = (k * 7919) % N;
        used += (size_t)snprintf(h + used, cap - used,
                                 "%s'layer.%d.weight': {'dtype': 'F32', 'shape': [1],"
                                 " 'data_offsets': [%d, %d]}",
                                 k ? ", " : "", i, 4 * i, 4 * i + 4);
        ck_assert_uint_lt(used, cap);
    }
    snprintf(h + used, cap - used, "}");
    float vals[N];
    for (int i = 0; i < N; i++)
        vals[i] = (float)i;
    st_file f = file_make(h, vals, sizeof vals);
    free(h);

    safetensors *st;
    engine_err err;
    ck_assert_int_eq(safetensors_open_buffer(f.bytes, f.len, &st, &err), ENGINE_OK);
    ck_assert_uint_eq(safetensors_count(st), N);
    for (int i = 0; i < N; i++) {
        char name[64];
        snprintf(name, sizeof name, "layer.%d.weight", i);
        const safetensors_tensor *t = safetensors_find(st, name);
        ck_assert_msg(t != NULL, "%s not found", name);
        ck_assert_str_eq(t->name, name);
        float x;
        ck_assert_int_eq(safetensors_read_f32(t, &x, &err), ENGINE_OK);
        ck_assert(x == (float)i);
    }
    ck_assert_ptr_null(safetensors_find(st, "layer.1000.weight"));
    ck_assert_ptr_null(safetensors_find(st, "layer.1.weigh"));
    ck_assert_ptr_null(safetensors_find(st, ""));
    for (size_t i = 1; i < N; i++)
        ck_assert_int_lt(strcmp(safetensors_at(st, i - 1)->name, safetensors_at(st, i)->name), 0);
    ck_assert_ptr_null(safetensors_at(st, N));
    safetensors_close(st);
    file_free(&f);
}
END_TEST

/* ---- hostile headers ----------------------------------------------------------------
 * Each row: a header over a data section of data_len zero bytes, and a substring the
 * error message must contain (the tensor's name wherever there is one). */

static const struct {
    const char *header;
    size_t data_len;
    const char *expect;
} bad_headers[] = {
    {"{'w': {'dtype': 'F32', 'shape': [1]", 4, "not valid JSON"},
    {"", 0, "not valid JSON"},
    {"not json", 0, "not valid JSON"},
    {"3", 0, "not valid JSON"}, /* jansson wants an array or object at top level */
    {"[1, 2]", 0, "not a JSON object"},
    {"{'w': 3}", 0, "'w' is not an object"},
    {"{'w': ['F32']}", 0, "'w' is not an object"},
    {"{'w': {'shape': [1], 'data_offsets': [0, 4]}}", 4, "'w' has no 'dtype'"},
    {"{'w': {'dtype': 'F32', 'data_offsets': [0, 4]}}", 4, "'w' has no 'shape'"},
    {"{'w': {'dtype': 'F32', 'shape': [1]}}", 4, "'w' has no 'data_offsets'"},
    {"{'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0, 4], 'x': 1}}", 4,
     "'w' has unexpected member 'x'"},
    {"{'w': {'dtype': 'F128', 'shape': [1], 'data_offsets': [0, 16]}}", 16,
     "'w': unknown dtype 'F128'"},
    {"{'w': {'dtype': 'f32', 'shape': [1], 'data_offsets': [0, 4]}}", 4, "'w': unknown dtype"},
    {"{'w': {'dtype': 4, 'shape': [1], 'data_offsets': [0, 4]}}", 4, "'w': dtype is not a string"},
    {"{'w': {'dtype': 'F32', 'shape': 1, 'data_offsets': [0, 4]}}", 4,
     "'w': shape is not an array"},
    {"{'w': {'dtype': 'F32', 'shape': [-1], 'data_offsets': [0, 4]}}", 4, "'w': shape[0]"},
    {"{'w': {'dtype': 'F32', 'shape': [2, '2'], 'data_offsets': [0, 16]}}", 16, "'w': shape[1]"},
    {"{'w': {'dtype': 'F32', 'shape': [2.0], 'data_offsets': [0, 8]}}", 8, "'w': shape[0]"},
    {"{'w': {'dtype': 'F32', 'shape': [1099511627776, 1099511627776], 'data_offsets': [0, 4]}}",
     4, "'w': shape [1099511627776, 1099511627776] overflows"},
    {"{'w': {'dtype': 'F32', 'shape': [4611686018427387904], 'data_offsets': [0, 4]}}", 4,
     "'w': shape [4611686018427387904] of F32 overflows"},
    {"{'w': {'dtype': 'F32', 'shape': [99999999999999999999], 'data_offsets': [0, 4]}}", 4,
     "not valid JSON"},
    {"{'w': {'dtype': 'F32', 'shape': [1,1,1,1,1,1,1,1,1], 'data_offsets': [0, 4]}}", 4,
     "'w': shape has 9 dims"},
    {"{'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [8, 4]}}", 8,
     "'w': data_offsets [8, 4] are reversed"},
    {"{'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [4, 8]}}", 4,
     "'w': data_offsets [4, 8] run past the 4-byte data section"},
    {"{'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [-4, 0]}}", 4,
     "'w': data_offsets is not"},
    {"{'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0.0, 4.0]}}", 4,
     "'w': data_offsets is not a pair of non-negative integers"},
    {"{'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0, 4, 4]}}", 4,
     "'w': data_offsets is not"},
    {"{'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0]}}", 4, "'w': data_offsets is not"},
    {"{'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': {'begin': 0}}}", 4,
     "'w': data_offsets is not"},
    {"{'conv1.weight': {'dtype': 'F32', 'shape': [4, 4], 'data_offsets': [0, 100]}}", 100,
     "tensor 'conv1.weight': data_offsets [0, 100] give 100 bytes, shape [4, 4] of F32 needs 64"},
    {"{'a': {'dtype': 'F32', 'shape': [4], 'data_offsets': [0, 16]},"
     " 'b': {'dtype': 'F32', 'shape': [4], 'data_offsets': [8, 24]}}", 24,
     "tensors 'a' and 'b' overlap"},
    {"{'a': {'dtype': 'F32', 'shape': [8], 'data_offsets': [0, 32]},"
     " 'b': {'dtype': 'F32', 'shape': [1], 'data_offsets': [4, 8]},"
     " 'c': {'dtype': 'F32', 'shape': [1], 'data_offsets': [12, 16]}}", 32, "overlap"},
    {"{'a': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0, 4]},"
     " 'b': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0, 4]}}", 4,
     "tensors 'a' and 'b' overlap"},
    {"{'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0, 4]},"
     " 'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [4, 8]}}", 8, "duplicate"},
    {"{'w': {'dtype': 'F32', 'dtype': 'F16', 'shape': [1], 'data_offsets': [0, 4]}}", 4,
     "duplicate"},
    {"{'__metadata__': ['x']}", 0, "__metadata__ is not an object"},
    {"{'__metadata__': {'n': 1}}", 0, "__metadata__ value 'n' is not a string"},
    {"{'a\\u0000b': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0, 4]}}", 4, "NUL"},
    {"{'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0, 4]}} x", 4, "not valid JSON"},
    /* control bytes in a name reach the message only as '?' */
    {"{'w\\n\\u001b[2J': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0, 5]}}", 5,
     "tensor 'w??[2J': data_offsets [0, 5] give 5 bytes"},
};

START_TEST(test_bad_header)
{
    st_file f = file_make(bad_headers[_i].header, NULL, bad_headers[_i].data_len);
    assert_rejected(f.bytes, f.len, bad_headers[_i].expect);
    file_free(&f);
}
END_TEST

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

START_TEST(test_bad_length_prefix)
{
    uint8_t b[64] = {0};
    for (size_t len = 0; len < 8; len++)
        assert_rejected(b, len, "shorter than the 8-byte header length");

    memcpy(b + 8, "{}", 2);
    put_le64(b, 3); /* one past the end of a 10-byte file */
    assert_rejected(b, 10, "header length 3 runs past the end of the 10-byte file");
    put_le64(b, UINT64_C(1) << 63);
    assert_rejected(b, 10, "exceeds");
    put_le64(b, UINT64_MAX);
    assert_rejected(b, 10, "exceeds");
    put_le64(b, SAFETENSORS_MAX_HEADER + 1u);
    assert_rejected(b, 10, "exceeds");
    put_le64(b, 0);
    assert_rejected(b, 10, "not valid JSON");

    /* NULL with a length is a caller bug, not a format error. */
    safetensors *st;
    engine_err err;
    ck_assert_int_eq(safetensors_open_buffer(NULL, 10, &st, &err), ENGINE_ERR_INVALID);
    ck_assert_int_eq(safetensors_open_buffer(NULL, 0, &st, &err), ENGINE_ERR_FORMAT);
}
END_TEST

/* ---- truncation and mutation --------------------------------------------------------- */

static st_file fuzz_seed(void)
{
    uint8_t data[64];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 37 + 11);
    return file_make("{'__metadata__': {'format': 'pt'},"
                     " 'a': {'dtype': 'F32', 'shape': [2, 2], 'data_offsets': [0, 16]},"
                     " 'b': {'dtype': 'F16', 'shape': [4], 'data_offsets': [16, 24]},"
                     " 'c': {'dtype': 'BF16', 'shape': [2, 1, 2], 'data_offsets': [24, 32]},"
                     " 'd': {'dtype': 'I64', 'shape': [3], 'data_offsets': [32, 56]},"
                     " 'e': {'dtype': 'U8', 'shape': [8], 'data_offsets': [56, 64]}}",
                     data, sizeof data);
}

/* After a successful open: every record lies inside buf and reads cleanly.  The
 * reads run under ASan, so an out-of-range record would abort here. */
static void assert_all_in_bounds(const safetensors *st, const uint8_t *buf, size_t len)
{
    float *scratch = malloc(len * sizeof *scratch + 1);
    ck_assert_ptr_nonnull(scratch);
    for (size_t i = 0; i < safetensors_count(st); i++) {
        const safetensors_tensor *t = safetensors_at(st, i);
        ck_assert(t->data >= buf && t->nbytes <= len);
        ck_assert_uint_le((size_t)(t->data - buf), len - t->nbytes);
        ck_assert_ptr_eq(safetensors_find(st, t->name), t);
        ck_assert_int_ge(t->numel, 0);
        ck_assert_uint_le((uint64_t)t->numel, t->nbytes); /* every dtype is >= 1 byte */
        engine_err err;
        if (t->dtype == SAFETENSORS_F32 || t->dtype == SAFETENSORS_F16 ||
            t->dtype == SAFETENSORS_BF16)
            ck_assert_int_eq(safetensors_read_f32(t, scratch, &err), ENGINE_OK);
        else
            ck_assert_int_eq(safetensors_read_f32(t, scratch, &err), ENGINE_ERR_FORMAT);
        const float *p = safetensors_f32_data(t);
        if (p)
            ck_assert(memcmp(p, scratch, t->nbytes) == 0);
    }
    free(scratch);
}

START_TEST(test_every_prefix)
{
    st_file f = fuzz_seed();
    size_t accepted = 0;
    for (size_t len = 0; len <= f.len; len++) {
        uint8_t *copy = exact_copy(f.bytes, len);
        safetensors *st;
        engine_err err;
        engine_status s = safetensors_open_buffer(copy, len, &st, &err);
        if (s == ENGINE_OK) {
            assert_all_in_bounds(st, copy, len);
            safetensors_close(st);
            accepted++;
        } else {
            ck_assert_int_eq(s, ENGINE_ERR_FORMAT);
            ck_assert_str_ne(err.msg, "");
        }
        free(copy);
    }
    ck_assert_uint_eq(accepted, 1); /* only the whole file */
    file_free(&f);
}
END_TEST

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

START_TEST(test_mutations)
{
    /* Three kinds of damage, each a third of the time: any byte anywhere; JSON
     * punctuation anywhere, which gets past the lexer more often; one digit of the
     * header changed to another, which keeps the JSON valid and so exercises the
     * shape, offset, size and overlap checks. */
    static const char json_bytes[] = "0123456789[]{},:\"-.eE ";
    st_file f = fuzz_seed();
    size_t digits[512], ndigits = 0;
    for (size_t i = 8; i < f.len - 64 && ndigits < 512; i++) {
        if (f.bytes[i] >= '0' && f.bytes[i] <= '9')
            digits[ndigits++] = i;
    }
    ck_assert_uint_gt(ndigits, 0);

    uint64_t seed = 0x9e3779b97f4a7c15u;
    size_t accepted = 0;
    for (int iter = 0; iter < 4000; iter++) {
        uint8_t *copy = exact_copy(f.bytes, f.len);
        int flips = 1 + (int)(xorshift(&seed) % 4);
        for (int k = 0; k < flips; k++) {
            uint64_t r = xorshift(&seed);
            switch (iter % 3) {
            case 0:
                copy[r % f.len] = (uint8_t)(r >> 32);
                break;
            case 1:
                copy[r % f.len] = (uint8_t)json_bytes[(r >> 32) % (sizeof json_bytes - 1)];
                break;
            default:
                copy[digits[r % ndigits]] = (uint8_t)('0' + (r >> 32) % 10);
                break;
            }
        }
        safetensors *st;
        engine_err err;
        engine_status s = safetensors_open_buffer(copy, f.len, &st, &err);
        if (s == ENGINE_OK) {
            assert_all_in_bounds(st, copy, f.len);
            safetensors_close(st);
            accepted++;
        } else {
            ck_assert_msg(s == ENGINE_ERR_FORMAT, "iteration %d: %s", iter, engine_status_str(s));
            ck_assert_str_ne(err.msg, "");
        }
        free(copy);
    }
    /* Mutations of the data section leave the file valid; make sure some do. */
    ck_assert_uint_gt(accepted, 0);
    file_free(&f);
}
END_TEST

/* ---- real files ------------------------------------------------------------------------ */

/* A fresh directory under TMPDIR (or /tmp) per test; fork mode gives each its own. */
static char tmpdir[256];

static void tmpdir_setup(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/check_safetensors.XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void tmpdir_teardown(void)
{
    rmdir(tmpdir); /* the tests remove their own files first */
}

static void write_file(const char *path, const uint8_t *bytes, size_t len)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(bytes, 1, len, fp), len);
    ck_assert_int_eq(fclose(fp), 0);
}

START_TEST(test_open_file)
{
    const float w[4] = {1, 2, 3, 4};
    st_file f = file_make("{'w': {'dtype': 'F32', 'shape': [4], 'data_offsets': [0, 16]}}", w,
                          sizeof w);
    char path[300];
    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    write_file(path, f.bytes, f.len);
    file_free(&f);

    safetensors *st;
    engine_err err;
    ck_assert_int_eq(safetensors_open(path, &st, &err), ENGINE_OK);
    const safetensors_tensor *t = safetensors_find(st, "w");
    const float *p = safetensors_f32_data(t); /* the mapping is page-aligned, the data 8-aligned */
    ck_assert_ptr_nonnull(p);
    ck_assert_mem_eq(p, w, sizeof w);
    safetensors_close(st);
    unlink(path);
}
END_TEST

/* Dropping a tensor's pages loses nothing: a later read faults them back in from the
 * file, and its neighbours (which may share its edge pages) are untouched. */
START_TEST(test_drop_keeps_data)
{
    enum { N = 5000 }; /* several pages */
    float *w = malloc((N + 3) * sizeof *w);
    ck_assert_ptr_nonnull(w);
    for (int i = 0; i < N + 3; i++)
        w[i] = (float)i * 0.5f;
    st_file f = file_make("{'a': {'dtype': 'F32', 'shape': [5000], 'data_offsets': [0, 20000]},"
                          " 'b': {'dtype': 'F32', 'shape': [3], 'data_offsets': [20000, 20012]}}",
                          w, (N + 3) * sizeof *w);
    char path[300];
    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    write_file(path, f.bytes, f.len);

    safetensors *st;
    engine_err err;
    ck_assert_int_eq(safetensors_open(path, &st, &err), ENGINE_OK);
    const safetensors_tensor *a = safetensors_find(st, "a"), *b = safetensors_find(st, "b");
    ck_assert_mem_eq(safetensors_f32_data(a), w, N * sizeof *w);
    safetensors_drop(st, a);
    safetensors_drop(st, a); /* twice is fine */
    ck_assert_mem_eq(safetensors_f32_data(a), w, N * sizeof *w);
    ck_assert_mem_eq(safetensors_f32_data(b), w + N, 3 * sizeof *w);
    safetensors_close(st);
    unlink(path);

    /* a caller's buffer is never touched */
    ck_assert_int_eq(safetensors_open_buffer(f.bytes, f.len, &st, &err), ENGINE_OK);
    a = safetensors_find(st, "a");
    safetensors_drop(st, a);
    ck_assert_mem_eq(safetensors_f32_data(a), w, N * sizeof *w);
    safetensors_close(st);
    file_free(&f);
    free(w);
}
END_TEST

START_TEST(test_open_bad_files)
{
    safetensors *st;
    engine_err err;
    char path[300];

    snprintf(path, sizeof path, "%s/missing.safetensors", tmpdir);
    ck_assert_int_eq(safetensors_open(path, &st, &err), ENGINE_ERR_IO);
    ck_assert_ptr_null(st);
    ck_assert_ptr_nonnull(strstr(err.msg, "missing.safetensors"));

    ck_assert_int_eq(safetensors_open(tmpdir, &st, &err), ENGINE_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a regular file"));

    snprintf(path, sizeof path, "%s/empty.safetensors", tmpdir);
    write_file(path, (const uint8_t *)"", 0);
    ck_assert_int_eq(safetensors_open(path, &st, &err), ENGINE_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "empty.safetensors"));
    unlink(path);

    snprintf(path, sizeof path, "%s/short.safetensors", tmpdir);
    write_file(path, (const uint8_t *)"\x02\0\0", 3);
    ck_assert_int_eq(safetensors_open(path, &st, &err), ENGINE_ERR_FORMAT);
    unlink(path);

    st_file f = file_make("{'w': {'dtype': 'F32', 'shape': [4], 'data_offsets': [0, 16]}}", NULL,
                          12);
    snprintf(path, sizeof path, "%s/cut.safetensors", tmpdir);
    write_file(path, f.bytes, f.len);
    file_free(&f);
    ck_assert_int_eq(safetensors_open(path, &st, &err), ENGINE_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "cut.safetensors: tensor 'w'"));
    unlink(path);
}
END_TEST

static Suite *safetensors_suite(void)
{
    Suite *s = suite_create("safetensors");

    TCase *valid = tcase_create("valid");
    tcase_add_test(valid, test_f32_round_trip);
    tcase_add_test(valid, test_f32_unaligned);
    tcase_add_test(valid, test_f16_values);
    tcase_add_test(valid, test_bf16_values);
    tcase_add_test(valid, test_int_tensor_and_metadata);
    tcase_add_test(valid, test_other_dtypes_sizes);
    tcase_add_test(valid, test_empty_and_scalar);
    tcase_add_test(valid, test_many_names);
    suite_add_tcase(s, valid);

    TCase *hostile = tcase_create("hostile");
    tcase_add_loop_test(hostile, test_bad_header, 0,
                        (int)(sizeof bad_headers / sizeof bad_headers[0]));
    tcase_add_test(hostile, test_bad_length_prefix);
    tcase_add_test(hostile, test_every_prefix);
    tcase_add_test(hostile, test_mutations);
    tcase_set_timeout(hostile, 60); /* the mutation loop under sanitizers */
    suite_add_tcase(s, hostile);

    TCase *files = tcase_create("files");
    tcase_add_checked_fixture(files, tmpdir_setup, tmpdir_teardown);
    tcase_add_test(files, test_open_file);
    tcase_add_test(files, test_drop_keeps_data);
    tcase_add_test(files, test_open_bad_files);
    suite_add_tcase(s, files);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(safetensors_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
