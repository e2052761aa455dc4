/* testutil.c — see testutil.h. */
#include "tests/testutil.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void st_writer_add(st_writer *w, const char *name, const float *data, int ndim, ...)
{
    if (w->n >= ST_WRITER_MAX || ndim > 4)
        abort(); /* a test bug, not input */
    va_list ap;
    va_start(ap, ndim);
    snprintf(w->t[w->n].name, sizeof w->t[w->n].name, "%s", name);
    w->t[w->n].ndim = ndim;
    for (int i = 0; i < ndim; i++)
        w->t[w->n].shape[i] = va_arg(ap, int);
    va_end(ap);
    w->t[w->n].data = data;
    w->n++;
}

uint8_t *st_writer_finish(st_writer *w, size_t *len)
{
    char header[16384];
    size_t off = 0, data_off = 0;
    off += (size_t)snprintf(header + off, sizeof header - off, "{");
    for (int i = 0; i < w->n; i++) {
        size_t numel = 1;
        for (int d = 0; d < w->t[i].ndim; d++)
            numel *= (size_t)w->t[i].shape[d];
        off += (size_t)snprintf(header + off, sizeof header - off,
                                "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", i ? "," : "",
                                w->t[i].name);
        for (int d = 0; d < w->t[i].ndim; d++)
            off += (size_t)snprintf(header + off, sizeof header - off, "%s%lld", d ? "," : "",
                                    (long long)w->t[i].shape[d]);
        off += (size_t)snprintf(header + off, sizeof header - off,
                                "],\"data_offsets\":[%zu,%zu]}", data_off,
                                data_off + numel * sizeof(float));
        data_off += numel * sizeof(float);
    }
    off += (size_t)snprintf(header + off, sizeof header - off, "}");
    while (off % 8)
        header[off++] = ' ';
    *len = 8 + off + data_off;
    uint8_t *buf = malloc(*len);
    if (!buf)
        abort();
    for (int b = 0; b < 8; b++)
        buf[b] = (uint8_t)((uint64_t)off >> (8 * b));
    memcpy(buf + 8, header, off);
    size_t pos = 8 + off;
    for (int i = 0; i < w->n; i++) {
        size_t numel = 1;
        for (int d = 0; d < w->t[i].ndim; d++)
            numel *= (size_t)w->t[i].shape[d];
        memcpy(buf + pos, w->t[i].data, numel * sizeof(float));
        pos += numel * sizeof(float);
    }
    return buf;
}

void test_fill_random(float *x, size_t n, uint64_t seed)
{
    uint64_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = (float)((double)(s >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
    }
}
