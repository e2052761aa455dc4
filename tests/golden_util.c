/* golden_util.c — see golden_util.h.  Test-only code: stdio, messages on stderr. */
#include "tests/golden_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int golden_open(int argc, char **argv, const char *prog, model_dir *md)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CASE_DIR\n", prog);
        return 2;
    }
    engine_err err;
    if (model_dir_read(argv[1], md, &err) != ENGINE_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    return 0;
}

void *golden_read(const char *dir, const char *name, size_t elem, size_t *count)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        len = ftell(f);
    void *buf = len >= 0 && (size_t)len % elem == 0 ? malloc(len > 0 ? (size_t)len : 1) : NULL;
    if (!buf || fseek(f, 0, SEEK_SET) != 0 || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fprintf(stderr, "cannot read %s (or its size is not a multiple of %zu)\n", path, elem);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *count = (size_t)len / elem;
    return buf;
}

void golden_tolerance(const char *dir, double *rtol, double *atol)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tolerance.txt", dir);
    FILE *tf = fopen(path, "r");
    if (!tf)
        return;
    if (fscanf(tf, "%lf %lf", rtol, atol) != 2)
        fprintf(stderr, "%s: expected 'rtol atol'\n", path);
    fclose(tf);
}

int golden_compare(const char *what, const float *got, const float *exp, size_t n, double rtol,
                   double atol, double *worst)
{
    double worst_abs = 0, worst_ratio = 0, worst_excess = 0;
    size_t bad = 0, worst_at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - exp[i]);
        double allowed = atol + rtol * fabs(exp[i]);
        if (d > worst_abs)
            worst_abs = d;
        if (d / allowed > worst_ratio)
            worst_ratio = d / allowed;
        if (!(d <= allowed)) {
            bad++;
            if (bad == 1 || d - allowed > worst_excess)
                worst_excess = d - allowed, worst_at = i;
        }
    }
    if (worst && worst_ratio > *worst)
        *worst = worst_ratio;
    printf("  %-22s %6zu values, max |diff| %.3g = %.3f of the tolerance (rtol %.1g, "
           "atol %.3g)%s\n", what, n, worst_abs, worst_ratio, rtol, atol, bad ? "  FAIL" : "");
    if (bad)
        printf("    %zu out of tolerance; worst at %zu: got %.8g expected %.8g\n", bad, worst_at,
               got[worst_at], exp[worst_at]);
    return bad ? 1 : 0;
}
