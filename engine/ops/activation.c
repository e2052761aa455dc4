/* activation.c — pointwise activations with PyTorch's definitions, and the API's
 * softmax.
 *
 * Every conv and linear ends with a pass over its output through here, so the cheap
 * kinds (ReLU family) are written with 8-wide GNU vector types: the build targets
 * baseline x86-64 at -O2, where GCC vectorises no plain loop, and on x86-64 an
 * AVX2 clone of the function is chosen at load time.  The transcendental kinds on hot
 * paths are vectorised too (simd.h): GELU (BERT's FFN) with the erf formula PyTorch's
 * CPU kernel uses, tanh and sigmoid (a generator's output layer) from the vector exp;
 * ELU and SiLU call libm per element (within an ulp or two of PyTorch's own).  Pure functions, no state, any thread.
 */
#include "engine/engine.h"
#include "engine/ops/ops.h"

#include <math.h>
#include <string.h>

#include "engine/ops/simd.h"


static float sigmoid1(float x)
{
    /* exp of a non-positive argument only: neither branch overflows for large |x|. */
    if (x >= 0.0f)
        return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

/* x[i] = act(x[i] + bias).  A NaN input stays NaN in every kind, as in PyTorch:
 * the vector selects test "x < 0" (false for NaN) rather than "x > 0". */
OPS_SIMD_CLONES
void act_apply_bias(act_kind kind, float alpha, float bias, float *x, size_t n)
{
    const v8f vb = {bias, bias, bias, bias, bias, bias, bias, bias};
    const v8f zero = {0};
    const v8f six = {6, 6, 6, 6, 6, 6, 6, 6};
    const v8f va = {alpha, alpha, alpha, alpha, alpha, alpha, alpha, alpha};
    size_t i = 0;

    switch (kind) {
    case ACT_NONE:
        if (bias == 0.0f)
            return;
        for (; i + 8 <= n; i += 8) {
            v8f v;
            memcpy(&v, x + i, sizeof v);
            v += vb;
            memcpy(x + i, &v, sizeof v);
        }
        for (; i < n; i++)
            x[i] += bias;
        return;
    case ACT_RELU:
        for (; i + 8 <= n; i += 8) {
            v8f v;
            memcpy(&v, x + i, sizeof v);
            v += vb;
            v = (v8f)((v8i)v & ~(v < zero));
            memcpy(x + i, &v, sizeof v);
        }
        for (; i < n; i++) {
            float v = x[i] + bias;
            x[i] = v < 0.0f ? 0.0f : v;
        }
        return;
    case ACT_RELU6:
        for (; i + 8 <= n; i += 8) {
            v8f v;
            memcpy(&v, x + i, sizeof v);
            v += vb;
            v = (v8f)((v8i)v & ~(v < zero));
            v8i big = v > six;
            v = (v8f)(((v8i)v & ~big) | ((v8i)six & big));
            memcpy(x + i, &v, sizeof v);
        }
        for (; i < n; i++) {
            float v = x[i] + bias;
            x[i] = v < 0.0f ? 0.0f : v > 6.0f ? 6.0f : v;
        }
        return;
    case ACT_LEAKY_RELU:
        for (; i + 8 <= n; i += 8) {
            v8f v;
            memcpy(&v, x + i, sizeof v);
            v += vb;
            v8i neg = v < zero;
            v = (v8f)(((v8i)v & ~neg) | ((v8i)(v * va) & neg));
            memcpy(x + i, &v, sizeof v);
        }
        for (; i < n; i++) {
            float v = x[i] + bias;
            x[i] = v < 0.0f ? alpha * v : v;
        }
        return;
    case ACT_ELU:
        for (; i < n; i++) {
            float v = x[i] + bias;
            x[i] = v > 0.0f ? v : alpha * expm1f(v);
        }
        return;
    case ACT_SIGMOID:
    case ACT_TANH:
        /* a generator's last layer: one per output pixel and channel */
        for (; i + 8 <= n; i += 8) {
            v8f v;
            memcpy(&v, x + i, sizeof v);
            v = kind == ACT_TANH ? v8f_tanh(v + vb) : v8f_sigmoid(v + vb);
            memcpy(x + i, &v, sizeof v);
        }
        if (i < n) { /* the tail through the same formula, as GELU's */
            v8f v;
            memcpy(&v, x + i, (n - i) * sizeof(float));
            for (size_t j = n - i; j < 8; j++)
                v[j] = 0.0f;
            v = kind == ACT_TANH ? v8f_tanh(v + vb) : v8f_sigmoid(v + vb);
            memcpy(x + i, &v, (n - i) * sizeof(float));
        }
        return;
    case ACT_GELU:
        /* BERT's FFN: one GELU per hidden unit and token, ~5M a forward at seq 128,
         * where libm's erff per element cost a tenth of the whole forward */
        for (; i + 8 <= n; i += 8) {
            v8f v;
            memcpy(&v, x + i, sizeof v);
            v += vb;
            v = V8F(0.5f) * v * (V8F(1.0f) + v8f_erf(v * V8F(0.70710678118654752f)));
            memcpy(x + i, &v, sizeof v);
        }
        if (i < n) { /* the tail through the same formula: one rounding everywhere */
            v8f v;
            memcpy(&v, x + i, (n - i) * sizeof(float));
            for (size_t j = n - i; j < 8; j++)
                v[j] = 0.0f;
            v += vb;
            v = V8F(0.5f) * v * (V8F(1.0f) + v8f_erf(v * V8F(0.70710678118654752f)));
            memcpy(x + i, &v, (n - i) * sizeof(float));
        }
        return;
    case ACT_SILU:
        for (; i < n; i++) {
            float v = x[i] + bias;
            x[i] = v * sigmoid1(v);
        }
        return;
    }
    /* An act_kind outside the enum is a programming error upstream (the model
     * loader maps names to kinds); leaving x untouched is the least harmful answer. */
}

void act_apply(act_kind kind, float alpha, float *x, size_t n)
{
    /* Adding a zero bias changes nothing but the sign of a zero. */
    act_apply_bias(kind, alpha, 0.0f, x, n);
}

void engine_softmax(float *x, int rows, int cols)
{
    softmax_rows(rows, cols, x);
}
