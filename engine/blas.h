/* blas.h — the engine's only door to BLAS, and the owner of its thread count.
 *
 * Only blas.c includes <cblas.h>, so swapping the BLAS (or adding a packed/bf16
 * path) touches one file.  Matrices are row-major.
 */
#ifndef MODELD_ENGINE_BLAS_H
#define MODELD_ENGINE_BLAS_H

#include <stdbool.h>

/* C (M,N) = alpha * op(A) op(B) + beta * C, row-major.
 * op(A) is (M,K): A is (M,K) with lda, or (K,M) when trans_a.
 * op(B) is (K,N): B is (K,N) with ldb, or (N,K) when trans_b. */
void blas_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                const float *a, int lda, const float *b, int ldb, float beta, float *c,
                int ldc);

#endif
