/* blas.c — the engine's one door to BLAS (OpenBLAS), and the one place its thread
 * budget is applied.
 *
 * Nothing else includes <cblas.h>, so a different BLAS, a packed-weight path or a
 * bf16 GEMM changes this file only.  The thread count is process-wide by nature
 * (OpenBLAS keeps one pool); this file applies it but never chooses it: the daemon's
 * worker setup or a benchmark's main decides, once, how many threads BLAS may use
 * beside the engine's own workers.  Any thread may call blas_sgemm at any time.
 */
#include "engine/blas.h"
#include "engine/engine.h"

#include <cblas.h>

void blas_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                const float *a, int lda, const float *b, int ldb, float beta, float *c,
                int ldc)
{
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0) {
        /* BLAS rejects lda < max(1,k) for some layouts and prints through xerbla;
         * the answer is simply beta*C, so give it without asking BLAS. */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[(size_t)i * ldc + j];
        return;
    }
    /* A single row or column is a matrix-vector product.  OpenBLAS 0.3.21 still
     * runs its GEMM machinery (packing both operands) for it, which costs more than
     * the arithmetic on the batch-1 linear layers; sgemv streams the matrix once. */
    if (m == 1) {
        /* c(1,N) = op(a)(1,K) op(B)(K,N): a row of C is op(B)^T times a's row. */
        int inc_a = trans_a ? lda : 1;
        if (trans_b)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, alpha, b, ldb, a, inc_a, beta,
                        c, 1);
        else
            cblas_sgemv(CblasRowMajor, CblasTrans, k, n, alpha, b, ldb, a, inc_a, beta, c,
                        1);
        return;
    }
    if (n == 1) {
        /* c(M,1) = op(A)(M,K) b(K,1): a column of C. */
        int inc_b = trans_b ? 1 : ldb;
        cblas_sgemv(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_a ? k : m,
                    trans_a ? m : k, alpha, a, lda, b, inc_b, beta, c, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta,
                c, ldc);
}

void engine_set_blas_threads(int n)
{
    openblas_set_num_threads(n < 1 ? 1 : n);
}

int engine_blas_threads(void)
{
    return openblas_get_num_threads();
}
