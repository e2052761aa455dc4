/* testutil.h — helpers shared by the Check suites: build a safetensors file in
 * memory from named float tensors.  Ownership: st_writer_finish() hands over a
 * malloc'd buffer the caller frees; st_writer holds nothing after that. */
#ifndef MODELD_TESTS_TESTUTIL_H
#define MODELD_TESTS_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#define ST_WRITER_MAX 64

typedef struct st_writer {
    int n;
    struct {
        char name[128];
        int ndim;
        int64_t shape[4];
        const float *data;
    } t[ST_WRITER_MAX];
} st_writer;

/* Records a F32 tensor (data is read at finish time, not copied now). */
void st_writer_add(st_writer *w, const char *name, const float *data, int ndim, ...);
/* The whole file; *len receives its size. */
uint8_t *st_writer_finish(st_writer *w, size_t *len);

/* Deterministic uniform floats in [-1, 1). */
void test_fill_random(float *x, size_t n, uint64_t seed);

#endif
