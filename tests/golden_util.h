/* golden_util.h — what the golden checkers (golden_cnn, golden_gan, golden_bert) share: opening a
 * case, reading its raw little-endian arrays and its tolerance, and comparing an answer
 * with PyTorch's.  Ownership: golden_read() hands over a malloc'd buffer the caller frees. */
#ifndef MODELD_TESTS_GOLDEN_UTIL_H
#define MODELD_TESTS_GOLDEN_UTIL_H

#include <stddef.h>

#include "proto/model_dir.h"

/* A checker's command line, "PROG CASE_DIR", and the case's model directory read into
 * *md: 0, or the exit status (2 usage, 1 unreadable) after a message on stderr. */
int golden_open(int argc, char **argv, const char *prog, model_dir *md);
/* dir/name whole, as elem-byte items (*count of them); NULL with a message on stderr
 * when missing, unreadable or not a whole number of items. */
void *golden_read(const char *dir, const char *name, size_t elem, size_t *count);
/* dir/tolerance.txt "rtol atol", or the given defaults when absent. */
void golden_tolerance(const char *dir, double *rtol, double *atol);
/* Prints one line (max |diff|, its share of the tolerance, and the worst value out of
 * tolerance); returns 1 when any value has |got - exp| > atol + rtol*|exp| (or is NaN),
 * else 0.  worst (or NULL) is raised to the largest |got - exp| / (atol + rtol*|exp|). */
int golden_compare(const char *what, const float *got, const float *exp, size_t n, double rtol,
                   double atol, double *worst);

#endif
