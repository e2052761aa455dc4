/* safetensors.c — opens a .safetensors checkpoint, validates all of it once, and
 * then hands out tensor records that point straight into the file.
 *
 * Owns: the read-only mapping (MAP_PRIVATE, PROT_READ; never written, so every
 * thread of the process may read it at once without locks), one array of tensor
 * records sorted by name, and one allocation holding every tensor name.
 * Threads: open/close run on whichever thread loads a model; afterwards the handle
 * is immutable and find/read are safe from any number of threads.
 * Never: trust a byte of the file before it is bounds-checked, print, or exit.
 * jansson is used privately as the parser of the JSON header and nothing more:
 * no json_t outlives safetensors_open() or leaves this file (STYLE.md habit 7).
 *
 * File layout: u64 little-endian N, then N bytes of JSON, then the data section.
 * The header maps each tensor name to {dtype, shape, data_offsets: [begin, end]},
 * offsets relative to the start of the data section.
 */
#define _DEFAULT_SOURCE /* madvise (and O_CLOEXEC) under -std=c11 */

#include "engine/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Zero-copy floats and memcpy of F32 assume the file's byte order is the host's. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ST_HOST_LE 1
#else
#define ST_HOST_LE 0
#endif

/* Tensor names are echoed in messages; a hostile header may hold megabyte names. */
#define NAME_FMT "'%.200s'"

struct safetensors {
    const uint8_t *bytes;        /* the whole file (or the caller's buffer), len bytes */
    size_t len;
    void *map;                   /* our mapping, NULL for safetensors_open_buffer() */
    size_t map_len;
    char *names;                 /* every tensor name, NUL-terminated, back to back */
    safetensors_tensor *tensors; /* (count) sorted by name for bsearch */
    size_t count;
};

/* Every dtype of the format whose elements are whole bytes.  Sub-byte types (F4,
 * F6_*) are rejected as unknown: their size rule differs and no model here needs them. */
static const struct {
    const char *name;
    safetensors_dtype dtype;
    size_t size;
} dtype_table[] = {
    {"F32", SAFETENSORS_F32, 4},       {"F16", SAFETENSORS_F16, 2},
    {"BF16", SAFETENSORS_BF16, 2},     {"I64", SAFETENSORS_I64, 8},
    {"I32", SAFETENSORS_I32, 4},       {"F64", SAFETENSORS_OTHER, 8},
    {"U64", SAFETENSORS_OTHER, 8},     {"U32", SAFETENSORS_OTHER, 4},
    {"I16", SAFETENSORS_OTHER, 2},     {"U16", SAFETENSORS_OTHER, 2},
    {"I8", SAFETENSORS_OTHER, 1},      {"U8", SAFETENSORS_OTHER, 1},
    {"BOOL", SAFETENSORS_OTHER, 1},    {"F8_E4M3", SAFETENSORS_OTHER, 1},
    {"F8_E5M2", SAFETENSORS_OTHER, 1}, {"F8_E8M0", SAFETENSORS_OTHER, 1},
    {"C64", SAFETENSORS_OTHER, 8},
};

const char *safetensors_dtype_name(safetensors_dtype d)
{
    switch (d) {
    case SAFETENSORS_F32: return "F32";
    case SAFETENSORS_F16: return "F16";
    case SAFETENSORS_BF16: return "BF16";
    case SAFETENSORS_I64: return "I64";
    case SAFETENSORS_I32: return "I32";
    case SAFETENSORS_OTHER: return "other";
    }
    return "unknown";
}

/* Messages quote names and JSON from the file and end up in logs: replace control
 * bytes so a crafted name cannot forge log lines or terminal escapes.  The format
 * allows any string as a name, so such files are reported, not rejected for it. */
static void scrub_message(engine_err *err)
{
    if (!err)
        return;
    for (char *c = err->msg; *c; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    }
}

/* "[4, 4]" for messages.  Each dim takes at most 20 digits and a ", ". */
#define SHAPE_TEXT_MAX (2 + SAFETENSORS_MAX_DIMS * 22 + 1)

static const char *format_shape(char buf[static SHAPE_TEXT_MAX], const int64_t *shape, int ndim)
{
    size_t used = 0;
    buf[used++] = '[';
    for (int i = 0; i < ndim; i++)
        used += (size_t)snprintf(buf + used, SHAPE_TEXT_MAX - used, "%s%lld", i ? ", " : "",
                                 (long long)shape[i]);
    snprintf(buf + used, SHAPE_TEXT_MAX - used, "]");
    return buf;
}

/* Reads one non-negative JSON integer; false for anything else (reals, strings,
 * negatives).  jansson itself rejects integers beyond long long. */
static int get_nonneg_int(const json_t *v, int64_t *out)
{
    if (!json_is_integer(v))
        return 0;
    json_int_t x = json_integer_value(v);
    if (x < 0)
        return 0;
    *out = (int64_t)x;
    return 1;
}

/* Validates one header entry and fills t, whose name is already set.  data_len is
 * the size of the data section; data points at its start. */
static engine_status parse_entry(const char *label, const json_t *entry, const uint8_t *data,
                                 size_t data_len, safetensors_tensor *t, engine_err *err)
{
    const char *name = t->name;
    if (!json_is_object(entry))
        return engine_fail(err, ENGINE_ERR_FORMAT, "%s: tensor " NAME_FMT " is not an object",
                           label, name);

    const json_t *jdtype = json_object_get(entry, "dtype");
    const json_t *jshape = json_object_get(entry, "shape");
    const json_t *joffs = json_object_get(entry, "data_offsets");
    if (!jdtype || !jshape || !joffs)
        return engine_fail(err, ENGINE_ERR_FORMAT, "%s: tensor " NAME_FMT " has no '%s'", label,
                           name, !jdtype ? "dtype" : !jshape ? "shape" : "data_offsets");
    if (json_object_size(entry) != 3) {
        const char *key;
        const json_t *v;
        json_object_foreach((json_t *)entry, key, v) {
            if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
                return engine_fail(err, ENGINE_ERR_FORMAT,
                                   "%s: tensor " NAME_FMT " has unexpected member '%.100s'",
                                   label, name, key);
        }
        /* Not reached: with all three present and duplicates rejected by the
         * parser, a fourth member is always an unknown one. */
        return engine_fail(err, ENGINE_ERR_FORMAT, "%s: tensor " NAME_FMT " has %zu members",
                           label, name, json_object_size(entry));
    }

    if (!json_is_string(jdtype))
        return engine_fail(err, ENGINE_ERR_FORMAT, "%s: tensor " NAME_FMT ": dtype is not a string",
                           label, name);
    const char *dname = json_string_value(jdtype);
    size_t esize = 0;
    for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++) {
        if (strcmp(dname, dtype_table[i].name) == 0) {
            t->dtype = dtype_table[i].dtype;
            esize = dtype_table[i].size;
            break;
        }
    }
    if (!esize)
        return engine_fail(err, ENGINE_ERR_FORMAT, "%s: tensor " NAME_FMT ": unknown dtype '%.40s'",
                           label, name, dname);

    if (!json_is_array(jshape))
        return engine_fail(err, ENGINE_ERR_FORMAT, "%s: tensor " NAME_FMT ": shape is not an array",
                           label, name);
    size_t ndim = json_array_size(jshape);
    if (ndim > SAFETENSORS_MAX_DIMS)
        return engine_fail(err, ENGINE_ERR_FORMAT,
                           "%s: tensor " NAME_FMT ": shape has %zu dims, at most %d supported",
                           label, name, ndim, SAFETENSORS_MAX_DIMS);
    t->ndim = (int)ndim;
    int has_zero = 0;
    for (size_t i = 0; i < ndim; i++) {
        if (!get_nonneg_int(json_array_get(jshape, i), &t->shape[i]))
            return engine_fail(err, ENGINE_ERR_FORMAT,
                               "%s: tensor " NAME_FMT ": shape[%zu] is not a non-negative integer",
                               label, name, i);
        has_zero |= t->shape[i] == 0;
    }
    char sbuf[SHAPE_TEXT_MAX];
    /* A zero dim makes the tensor empty however large the others are, so the
     * overflow check runs only when every dim is positive. */
    int64_t numel = 1;
    if (has_zero) {
        numel = 0;
    } else {
        for (size_t i = 0; i < ndim; i++) {
            if (numel > INT64_MAX / t->shape[i])
                return engine_fail(err, ENGINE_ERR_FORMAT,
                                   "%s: tensor " NAME_FMT ": shape %s overflows the element count",
                                   label, name, format_shape(sbuf, t->shape, t->ndim));
            numel *= t->shape[i];
        }
    }
    if ((uint64_t)numel > SIZE_MAX / esize)
        return engine_fail(err, ENGINE_ERR_FORMAT,
                           "%s: tensor " NAME_FMT ": shape %s of %s overflows the byte count",
                           label, name, format_shape(sbuf, t->shape, t->ndim), dname);
    size_t need = (size_t)numel * esize;
    t->numel = numel;

    int64_t begin, end;
    if (!json_is_array(joffs) || json_array_size(joffs) != 2 ||
        !get_nonneg_int(json_array_get(joffs, 0), &begin) ||
        !get_nonneg_int(json_array_get(joffs, 1), &end))
        return engine_fail(err, ENGINE_ERR_FORMAT,
                           "%s: tensor " NAME_FMT
                           ": data_offsets is not a pair of non-negative integers",
                           label, name);
    if (begin > end)
        return engine_fail(err, ENGINE_ERR_FORMAT,
                           "%s: tensor " NAME_FMT ": data_offsets [%lld, %lld] are reversed", label,
                           name, (long long)begin, (long long)end);
    if ((uint64_t)end > data_len)
        return engine_fail(err, ENGINE_ERR_FORMAT,
                           "%s: tensor " NAME_FMT
                           ": data_offsets [%lld, %lld] run past the %zu-byte data section",
                           label, name, (long long)begin, (long long)end, data_len);
    size_t have = (size_t)(end - begin);
    if (have != need)
        return engine_fail(err, ENGINE_ERR_FORMAT,
                           "%s: tensor " NAME_FMT
                           ": data_offsets [%lld, %lld] give %zu bytes, shape %s of %s needs %zu",
                           label, name, (long long)begin, (long long)end, have,
                           format_shape(sbuf, t->shape, t->ndim), dname, need);
    t->data = data + begin;
    t->nbytes = have;
    return ENGINE_OK;
}

static int cmp_by_data(const void *a, const void *b)
{
    const safetensors_tensor *x = *(const safetensors_tensor *const *)a;
    const safetensors_tensor *y = *(const safetensors_tensor *const *)b;
    if (x->data != y->data)
        return x->data < y->data ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

/* Sorting by start leaves only neighbours to compare, given the furthest end seen
 * so far.  Empty tensors hold no bytes and so overlap nothing. */
static engine_status check_overlaps(const char *label, safetensors *st, engine_err *err)
{
    if (st->count < 2)
        return ENGINE_OK;
    const safetensors_tensor **order = malloc(st->count * sizeof *order);
    if (!order)
        return engine_fail(err, ENGINE_ERR_NOMEM, "%s: no memory for %zu tensor records", label,
                           st->count);
    for (size_t i = 0; i < st->count; i++)
        order[i] = &st->tensors[i];
    qsort(order, st->count, sizeof *order, cmp_by_data);

    engine_status s = ENGINE_OK;
    const safetensors_tensor *furthest = NULL; /* the non-empty tensor ending last so far */
    for (size_t i = 0; i < st->count; i++) {
        const safetensors_tensor *t = order[i];
        if (t->nbytes == 0)
            continue;
        if (furthest && t->data < furthest->data + furthest->nbytes) {
            s = engine_fail(err, ENGINE_ERR_FORMAT,
                            "%s: tensors " NAME_FMT " and " NAME_FMT " overlap in the data section",
                            label, furthest->name, t->name);
            break;
        }
        if (!furthest || t->data + t->nbytes > furthest->data + furthest->nbytes)
            furthest = t;
    }
    free(order);
    return s;
}

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(((const safetensors_tensor *)a)->name, ((const safetensors_tensor *)b)->name);
}

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Parses the JSON header into st->tensors/names.  The whole file is bytes[0, len). */
static engine_status parse_header(const char *label, safetensors *st, engine_err *err)
{
    const uint8_t *bytes = st->bytes;
    size_t len = st->len;
    if (len < 8)
        return engine_fail(err, ENGINE_ERR_FORMAT,
                           "%s: %zu bytes, shorter than the 8-byte header length", label, len);
    uint64_t n = load_le64(bytes);
    if (n > SAFETENSORS_MAX_HEADER)
        return engine_fail(err, ENGINE_ERR_FORMAT,
                           "%s: header length %llu exceeds the %u-byte limit", label,
                           (unsigned long long)n, SAFETENSORS_MAX_HEADER);
    if (n > len - 8)
        return engine_fail(err, ENGINE_ERR_FORMAT,
                           "%s: header length %llu runs past the end of the %zu-byte file", label,
                           (unsigned long long)n, len);
    const uint8_t *data = bytes + 8 + n;
    size_t data_len = len - 8 - (size_t)n;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)bytes + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return engine_fail(err, ENGINE_ERR_FORMAT, "%s: header is not valid JSON: %s (byte %d)",
                           label, jerr.text, jerr.position);

    engine_status s = ENGINE_OK;
    if (!json_is_object(root)) {
        s = engine_fail(err, ENGINE_ERR_FORMAT, "%s: header is not a JSON object", label);
        goto out;
    }

    /* First pass: validate names and __metadata__, size the two allocations. */
    const char *key;
    size_t key_len;
    json_t *value;
    size_t count = 0, name_bytes = 0;
    json_object_keylen_foreach(root, key, key_len, value) {
        /* jansson 2.14 already refuses NUL in keys; names are used as C strings,
         * so this holds whatever the parser version. */
        if (strlen(key) != key_len) {
            s = engine_fail(err, ENGINE_ERR_FORMAT, "%s: tensor name " NAME_FMT
                            " contains a NUL byte", label, key);
            goto out;
        }
        if (strcmp(key, "__metadata__") == 0) {
            const char *mkey;
            json_t *mval;
            if (!json_is_object(value)) {
                s = engine_fail(err, ENGINE_ERR_FORMAT, "%s: __metadata__ is not an object", label);
                goto out;
            }
            json_object_foreach(value, mkey, mval) {
                if (!json_is_string(mval)) {
                    s = engine_fail(err, ENGINE_ERR_FORMAT,
                                    "%s: __metadata__ value '%.100s' is not a string", label, mkey);
                    goto out;
                }
            }
            continue;
        }
        count++;
        name_bytes += key_len + 1; /* bounded by the header length: cannot overflow */
    }

    st->tensors = calloc(count ? count : 1, sizeof *st->tensors);
    st->names = malloc(name_bytes ? name_bytes : 1);
    if (!st->tensors || !st->names) {
        s = engine_fail(err, ENGINE_ERR_NOMEM, "%s: no memory for %zu tensor records", label,
                        count);
        goto out;
    }

    size_t at = 0;
    char *name_at = st->names;
    json_object_keylen_foreach(root, key, key_len, value) {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        safetensors_tensor *t = &st->tensors[at++];
        memcpy(name_at, key, key_len + 1);
        t->name = name_at;
        name_at += key_len + 1;
        s = parse_entry(label, value, data, data_len, t, err);
        if (s != ENGINE_OK)
            goto out;
    }
    st->count = count;

    s = check_overlaps(label, st, err);
    if (s == ENGINE_OK)
        qsort(st->tensors, st->count, sizeof *st->tensors, cmp_by_name);
out:
    json_decref(root);
    return s;
}

/* Takes ownership of map (may be NULL) and frees it on failure. */
static engine_status open_bytes(const char *label, const uint8_t *bytes, size_t len, void *map,
                                size_t map_len, safetensors **out, engine_err *err)
{
    *out = NULL;
    safetensors *st = calloc(1, sizeof *st);
    if (!st) {
        if (map)
            munmap(map, map_len);
        return engine_fail(err, ENGINE_ERR_NOMEM, "%s: no memory for the handle", label);
    }
    st->bytes = bytes;
    st->len = len;
    st->map = map;
    st->map_len = map_len;
    engine_status s = parse_header(label, st, err);
    if (s != ENGINE_OK) {
        scrub_message(err);
        safetensors_close(st);
        return s;
    }
    *out = st;
    return ENGINE_OK;
}

engine_status safetensors_open_buffer(const uint8_t *buf, size_t len, safetensors **out,
                                      engine_err *err)
{
    if (!buf && len)
        return engine_fail(err, ENGINE_ERR_INVALID, "buffer: NULL with length %zu", len);
    return open_bytes("buffer", buf, len, NULL, 0, out, err);
}

engine_status safetensors_open(const char *path, safetensors **out, engine_err *err)
{
    /* strerror() rather than strerror_r(), whose signature changes with feature
     * macros: glibc and musl return shared constant strings for the codes that
     * open/fstat/mmap set, so concurrent loads are safe. */
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return engine_fail(err, ENGINE_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return engine_fail(err, ENGINE_ERR_IO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return engine_fail(err, ENGINE_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return engine_fail(err, ENGINE_ERR_IO, "%s: too large to map", path);
    }
    size_t len = (size_t)sb.st_size;
    if (len == 0) { /* mmap refuses zero length; the format check reports it */
        close(fd);
        static const uint8_t empty[1];
        return open_bytes(path, empty, 0, NULL, 0, out, err);
    }
    /* The file must not shrink while mapped (a reader would take SIGBUS); model
     * files are replaced by rename, never truncated in place. */
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return engine_fail(err, ENGINE_ERR_IO, "%s: mmap: %s", path, strerror(e));
    return open_bytes(path, map, len, map, len, out, err);
}

void safetensors_close(safetensors *st)
{
    if (!st)
        return;
    if (st->map)
        munmap(st->map, st->map_len);
    free(st->tensors);
    free(st->names);
    free(st);
}

size_t safetensors_count(const safetensors *st)
{
    return st->count;
}

const safetensors_tensor *safetensors_at(const safetensors *st, size_t i)
{
    return i < st->count ? &st->tensors[i] : NULL;
}

const safetensors_tensor *safetensors_find(const safetensors *st, const char *name)
{
    safetensors_tensor key = {.name = name};
    if (st->count == 0)
        return NULL;
    return bsearch(&key, st->tensors, st->count, sizeof *st->tensors, cmp_by_name);
}

static void format_dims(char *buf, size_t len, const int64_t *dims, int ndim)
{
    size_t off = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%lld", i ? ", " : "",
                                (long long)dims[i]);
    if (off < len)
        snprintf(buf + off, len - off, "]");
}

engine_status safetensors_find_shaped(const safetensors *st, const char *name,
                                      const int64_t *dims, int ndim, bool optional,
                                      const safetensors_tensor **out, engine_err *err)
{
    *out = NULL;
    const safetensors_tensor *t = safetensors_find(st, name);
    bool same = t != NULL && t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == dims[i];
    if (same) {
        *out = t;
        return ENGINE_OK;
    }
    if (t == NULL && optional)
        return ENGINE_OK;
    char want[128], got[128];
    format_dims(want, sizeof want, dims, ndim);
    if (t == NULL)
        return engine_fail(err, ENGINE_ERR_SHAPE, "missing tensor '%s', expected shape %s",
                           name, want);
    format_dims(got, sizeof got, t->shape, t->ndim);
    return engine_fail(err, ENGINE_ERR_SHAPE, "tensor '%s' has shape %s, expected %s", name,
                       got, want);
}

/* IEEE 754 binary16 -> binary32.  Every half is exactly representable as a float. */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        /* Zero or subnormal: man * 2^-24, exact in float's wider exponent range. */
        float f = (float)man * 0x1p-24f;
        return sign ? -f : f;
    }
    if (exp == 31)
        bits = sign | 0x7f800000u | (man << 13); /* inf, or nan with its payload kept */
    else
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

engine_status safetensors_read_f32(const safetensors_tensor *t, float *out, engine_err *err)
{
    const uint8_t *p = t->data;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case SAFETENSORS_F32:
        if (ST_HOST_LE) {
            if (n) /* memcpy: the data may be unaligned in a hostile or unpadded file */
                memcpy(out, p, n * sizeof *out);
        } else {
            for (size_t i = 0; i < n; i++) {
                uint32_t b = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                             (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
                memcpy(&out[i], &b, sizeof b);
            }
        }
        return ENGINE_OK;
    case SAFETENSORS_F16:
        for (size_t i = 0; i < n; i++)
            out[i] = half_to_float((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return ENGINE_OK;
    case SAFETENSORS_BF16:
        /* bfloat16 is the top half of a float32. */
        for (size_t i = 0; i < n; i++) {
            uint32_t b = ((uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8) << 16;
            memcpy(&out[i], &b, sizeof b);
        }
        return ENGINE_OK;
    case SAFETENSORS_I64:
    case SAFETENSORS_I32:
    case SAFETENSORS_OTHER:
        break;
    }
    engine_fail(err, ENGINE_ERR_FORMAT,
                "tensor " NAME_FMT " is %s; only F32, F16 and BF16 convert to float", t->name,
                safetensors_dtype_name(t->dtype));
    scrub_message(err);
    return ENGINE_ERR_FORMAT;
}

const float *safetensors_f32_data(const safetensors_tensor *t)
{
    if (!ST_HOST_LE || t->dtype != SAFETENSORS_F32 || (uintptr_t)t->data % _Alignof(float))
        return NULL;
    return (const float *)(const void *)t->data;
}

void safetensors_drop(const safetensors *st, const safetensors_tensor *t)
{
    if (!st->map || t->nbytes == 0)
        return;
    const long page_l = sysconf(_SC_PAGESIZE);
    if (page_l <= 0)
        return;
    const uintptr_t page = (uintptr_t)page_l;
    /* only the pages wholly inside the tensor: a neighbour may share the edge pages */
    const uintptr_t first = ((uintptr_t)t->data + page - 1) / page * page;
    const uintptr_t end = ((uintptr_t)t->data + t->nbytes) / page * page;
    if (end > first)
        (void)madvise((void *)first, end - first, MADV_DONTNEED);
}
