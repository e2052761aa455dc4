/* ops.h — the engine's compute kernels.  Pure functions over caller-owned memory:
 * no allocation, no globals, safe to call from any number of threads at once.
 *
 * Layout legend used throughout the engine: images (N,C,H,W), sequences (B,T,D),
 * matrices row-major.  Every kernel that needs temporary memory takes a `scratch`
 * pointer whose size in floats the matching *_scratch_floats() function tells.
 */
#ifndef MODELD_ENGINE_OPS_H
#define MODELD_ENGINE_OPS_H

#include <stddef.h>
#include <stdint.h>

/* ---- activations --------------------------------------------------------- */

typedef enum act_kind {
    ACT_NONE = 0,
    ACT_RELU,
    ACT_RELU6,
    ACT_LEAKY_RELU, /* alpha = negative slope */
    ACT_ELU,        /* alpha */
    ACT_SIGMOID,
    ACT_TANH,
    ACT_GELU,       /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
    ACT_SILU,
} act_kind;

/* In place over n floats. */
void act_apply(act_kind kind, float alpha, float *x, size_t n);
/* x[i] = act(x[i] + bias) in one pass: the per-channel epilogue of conv/linear. */
void act_apply_bias(act_kind kind, float alpha, float bias, float *x, size_t n);

/* ---- convolution ----------------------------------------------------------- */

typedef struct conv2d_params {
    int in_c, in_h, in_w;     /* per-sample input  (C,H,W) */
    int out_c, out_h, out_w;  /* per-sample output (C,H,W); see conv2d_out_size */
    int k_h, k_w;
    int stride_h, stride_w;
    int pad_h, pad_w;
    int dil_h, dil_w;
    int groups;               /* in_c % groups == 0 and out_c % groups == 0 */
} conv2d_params;

/* Output extent along one axis, PyTorch's formula; <= 0 means the input is too small. */
int conv2d_out_size(int in, int k, int stride, int pad, int dil);

/* Scratch for conv2d_forward at any batch size.  Small output planes are batched
 * (several images' im2col side by side in one GEMM), so this bound covers a block
 * of images: at most a few MiB, independent of N. */
size_t conv2d_scratch_floats(const conv2d_params *p);
/* The same bound for batches of at most max_batch images (>= 1); never more than
 * conv2d_scratch_floats, and far less at max_batch 1 on small planes. */
size_t conv2d_scratch_floats_batch(const conv2d_params *p, int max_batch);
/* x (N,in_c,in_h,in_w), w (out_c, in_c/groups, k_h, k_w), bias (out_c) or NULL,
 * y (N,out_c,out_h,out_w).  The activation is applied to y before returning.
 * scratch: conv2d_scratch_floats(p) floats, or conv2d_scratch_floats_batch(p, M)
 * when N <= M. */
void conv2d_forward(const conv2d_params *p, int n, const float *x, const float *w,
                    const float *bias, act_kind act, float act_alpha, float *y,
                    float *scratch);

/* ---- transposed convolution (deconv.c) ------------------------------------------ */

typedef struct conv_transpose2d_params {
    int in_c, in_h, in_w;     /* per-sample input  (C,H,W) */
    int out_c, out_h, out_w;  /* per-sample output (C,H,W); see conv_transpose2d_out_size */
    int k_h, k_w;
    int stride_h, stride_w;
    int pad_h, pad_w;         /* taken off both sides of the full output */
    int dil_h, dil_w;
    int out_pad_h, out_pad_w; /* only lengthens the output; in out_h/out_w already */
    int groups;               /* in_c % groups == 0 and out_c % groups == 0 */
} conv_transpose2d_params;

/* PyTorch's (in-1)*stride - 2*pad + dil*(k-1) + out_pad + 1; <= 0 means the padding
 * takes the whole output (or an argument is out of range); clamped to INT_MAX. */
int conv_transpose2d_out_size(int in, int k, int stride, int pad, int dil, int out_pad);

/* Scratch for conv_transpose2d_forward on batches of at most max_batch images
 * (>= 1): one GEMM block, at most a few MiB unless a single input row is larger. */
size_t conv_transpose2d_scratch_floats(const conv_transpose2d_params *p, int max_batch);
/* x (N,in_c,in_h,in_w), w (in_c, out_c/groups, k_h, k_w) as PyTorch stores it, bias
 * (out_c) or NULL, y (N,out_c,out_h,out_w), the activation applied before returning.
 * scratch: conv_transpose2d_scratch_floats(p, M) floats for any N <= M. */
void conv_transpose2d_forward(const conv_transpose2d_params *p, int n, const float *x,
                              const float *w, const float *bias, act_kind act, float act_alpha,
                              float *y, float *scratch);

/* ---- linear ------------------------------------------------------------------ */

/* x (N,in), w (out,in) as PyTorch stores it, bias (out) or NULL, y (N,out).  pool
 * (engine/parallel.h; NULL: the calling thread alone) runs the few-rows kernel. */
struct par_pool;
void linear_forward(struct par_pool *pool, int n, int in, int out, const float *x, const float *w,
                    const float *bias, act_kind act, float act_alpha, float *y);

/* The same layer with W rearranged once (at load) for the engine's own GEMM kernel,
 * which then never copies it again: for weights used on many rows, call after call
 * (BERT's encoder).  panels: linear_packed_floats(out, in) floats, caller-owned,
 * filled by linear_pack from w (out,in); w is not read afterwards.  Results do not
 * depend on the pool's size. */
size_t linear_packed_floats(int out, int in);
void linear_pack(int out, int in, const float *w, float *panels);
void linear_forward_packed(struct par_pool *pool, int n, int in, int out, const float *x,
                           const float *panels, const float *bias, act_kind act,
                           float act_alpha, float *y);

/* ---- pooling ----------------------------------------------------------------- */

typedef struct pool2d_params {
    int c, in_h, in_w, out_h, out_w;
    int k_h, k_w, stride_h, stride_w, pad_h, pad_w;
    int count_include_pad; /* avg pool only */
} pool2d_params;

/* Output extent with PyTorch's ceil_mode rule (a window may not start in the
 * right padding). */
int pool2d_out_size(int in, int k, int stride, int pad, int ceil_mode);

void maxpool2d_forward(const pool2d_params *p, int n, const float *x, float *y);
void avgpool2d_forward(const pool2d_params *p, int n, const float *x, float *y);
/* PyTorch's adaptive bins: start = floor(i*in/out), end = ceil((i+1)*in/out). */
void adaptive_avgpool2d_forward(int n, int c, int in_h, int in_w, int out_h, int out_w,
                                const float *x, float *y);

/* ---- normalisation -------------------------------------------------------- */

/* Folds y = (x - mean) / sqrt(var + eps) * gamma + beta into the preceding conv or
 * linear: w (out_c, per_out) scaled in place per output channel, bias (out_c) written
 * (it may start as zeros when the layer had none). */
void batchnorm_fold(int out_c, int per_out, float *w, float *bias, const float *gamma,
                    const float *beta, const float *mean, const float *var, float eps);
/* The same for a ConvTranspose2d, whose weight is (in_c, out_c/groups, taps): output
 * channel g*out_c/groups + o is scaled wherever it appears, in every input row. */
void batchnorm_fold_transposed(int in_c, int out_c, int groups, int taps, float *w,
                               float *bias, const float *gamma, const float *beta,
                               const float *mean, const float *var, float eps);
/* Per-channel y = x * scale[c] + shift[c] over (N,C,spatial), in place; BN that
 * follows no conv (scale/shift precomputed at load). */
void channel_affine(int n, int c, int spatial, const float *scale, const float *shift,
                    float *x);

/* ---- elementwise / softmax ---------------------------------------------------- */

/* y = a + b over n floats, then act; y may alias a or b. */
void add_forward(size_t n, const float *a, const float *b, act_kind act, float act_alpha,
                 float *y);
/* Row-wise softmax over (rows, cols), numerically stable, in place. */
void softmax_rows(int rows, int cols, float *x);

/* ---- sequences: embeddings, layer norm, attention (BERT) ------------------------ */

/* y (T,D) row t = word[ids[t]] + pos[t] + type[types[t]] (types NULL: type row 0),
 * for one sequence whose positions start at 0.  word (V,D), pos (>= T, D), type
 * (>= 1, D).  The caller has checked every id against its table. */
void embedding_sum(int t, int d, const int32_t *ids, const int32_t *types, const float *word,
                   const float *pos, const float *type, float *y);
/* y (N,D) row i = x row idx[i]; x's rows are ld_x floats apart (a column block of a
 * wider matrix).  y must not overlap x. */
void gather_rows(int n, int d, const int *idx, const float *x, int ld_x, float *y);
/* Layer normalisation of each row of x (rows, D) over D, as torch.nn.LayerNorm:
 * y = (x - mean) / sqrt(var + eps) * gamma + beta, biased variance.  y may alias x. */
void layernorm_rows(int rows, int d, const float *x, const float *gamma, const float *beta,
                    float eps, float *y);
/* y = LayerNorm(x + r): a post-LN residual block in one pass.  y may alias x or r. */
void add_layernorm_rows(int rows, int d, const float *x, const float *r, const float *gamma,
                        const float *beta, float eps, float *y);

/* Multi-head scaled dot-product attention of one sequence, no mask:
 *   ctx_h = softmax(q_h k_h^T / sqrt(dh)) v_h  for each head h,
 * with heads side by side in columns (head h is columns h*dh .. h*dh+dh-1).
 * q (tq, heads*dh) rows ldq apart; k, v (tk, heads*dh) rows ldkv apart (the K and V
 * blocks of a packed (T, 3D) QKV matrix); ctx (tq, heads*dh) rows ldc apart.  tq may be
 * less than tk: the queries of some rows only.  Heads are shared among pool's threads
 * (NULL: the caller alone); scratch: attention_scratch_floats(tq, tk, dh, threads) with
 * threads at least par_pool_threads(pool). */
size_t attention_scratch_floats(int tq, int tk, int dh, int threads);
void attention_forward(struct par_pool *pool, int tq, int tk, int heads, int dh,
                       const float *q, int ldq, const float *k, const float *v, int ldkv,
                       float *ctx, int ldc, float *scratch);

#endif
