/* simd.h — the kernels' shared vector vocabulary (engine-internal).
 *
 * The build targets baseline x86-64 at -O2, where GCC vectorises no plain loop, so
 * hot loops use 8-wide GNU vector types, and OPS_SIMD_CLONES gives a function an
 * AVX2+FMA clone that the loader picks on CPUs that have it (an ifunc). */
#ifndef MODELD_ENGINE_OPS_SIMD_H
#define MODELD_ENGINE_OPS_SIMD_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define OPS_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define OPS_SIMD_CLONES
#endif

typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));

#define V8F(c) ((v8f){ (c), (c), (c), (c), (c), (c), (c), (c) })

/* The helpers below are always inlined into their (cloned) callers, so the ABI of a
 * 32-byte vector return, which GCC warns about at every definition and call for the
 * baseline target, never applies: the warning is off for the kernels that include
 * this header. */
#define OPS_VINLINE static inline __attribute__((always_inline))
#pragma GCC diagnostic ignored "-Wpsabi"

/* Lane-wise select: m ? a : b, m being a comparison's all-ones/all-zeros lanes. */
OPS_VINLINE v8f v8f_select(v8i m, v8f a, v8f b)
{
    return (v8f)(((v8i)a & m) | ((v8i)b & ~m));
}

/* Eight floats `stride` (1 or 2) apart starting at p: one tap of eight adjacent
 * outputs of a convolution or pooling window.  Stride 2 loads 16 contiguous floats and
 * keeps the even ones, so the caller must leave p[15] inside the buffer. */
static inline __attribute__((always_inline)) void v8f_load_strided(v8f *v, const float *p,
                                                                   int stride)
{
    __builtin_memcpy(v, p, sizeof *v);
    if (stride == 1)
        return;
    v8f b;
    __builtin_memcpy(&b, p + 8, sizeof b);
#ifdef __clang__
    *v = __builtin_shufflevector(*v, b, 0, 2, 4, 6, 8, 10, 12, 14);
#else
    *v = __builtin_shuffle(*v, b, (v8i){0, 2, 4, 6, 8, 10, 12, 14});
#endif
}

/* e^x per lane, within ~2 ulp of expf on [-87.3, 88.3]; arguments outside are
 * clamped there (e^-87.3 ~ 1e-38 stands in for underflow: softmax and GELU, the
 * callers, add it to or multiply it with numbers near 1, so no denormal is ever
 * made), NaN stays NaN.  x = n ln2 + r with |r| <= ln2/2, ln2 split in two so n ln2
 * is exact; e^r by its Taylor series to r^7 (error < 6e-9, below float precision
 * there); 2^n written straight into the exponent bits.  Rounding to n adds
 * 1.5 * 2^23, which leaves the integer in the low mantissa bits. */
OPS_VINLINE v8f v8f_exp(v8f x)
{
    const v8f shifter = V8F(12582912.0f);
    x = v8f_select(x > V8F(88.3f), V8F(88.3f), x);
    x = v8f_select(x < V8F(-87.3f), V8F(-87.3f), x);
    v8f t = x * V8F(1.44269504088896341f) + shifter;
    const v8i n = (v8i)t - (v8i)shifter;
    t -= shifter;
    v8f r = x - t * V8F(0.693359375f);
    r = r - t * V8F(-2.12194440e-4f);
    v8f p = V8F(1.0f / 5040.0f);
    p = p * r + V8F(1.0f / 720.0f);
    p = p * r + V8F(1.0f / 120.0f);
    p = p * r + V8F(1.0f / 24.0f);
    p = p * r + V8F(1.0f / 6.0f);
    p = p * r + V8F(0.5f);
    p = p * r + V8F(1.0f);
    p = p * r + V8F(1.0f);
    return (v8f)((v8i)p + (n << 23));
}

/* 1 / (1 + e^-x) per lane: the clamp inside v8f_exp keeps the denominator finite,
 * so large |x| give 0 and 1 (to float precision), never NaN. */
OPS_VINLINE v8f v8f_sigmoid(v8f x)
{
    return V8F(1.0f) / (V8F(1.0f) + v8f_exp(-x));
}

/* tanh per lane as 2 sigmoid(2x) - 1, rewritten 1 - 2 / (e^2x + 1): absolute error
 * ~1e-7 everywhere (relative error grows as |x| -> 0, where tanh x ~ x; under
 * |x| < 2^-12 x itself is returned, which is tanh x to float precision there). */
OPS_VINLINE v8f v8f_tanh(v8f x)
{
    const v8f t = V8F(1.0f) - V8F(2.0f) / (v8f_exp(x + x) + V8F(1.0f));
    const v8f ax = v8f_select(x < V8F(0.0f), -x, x);
    return v8f_select(ax < V8F(2.44140625e-4f), x, t);
}

/* erf per lane by Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7: the formula
 * PyTorch's own vectorised CPU erf uses, so GELU here rounds as it does there. */
OPS_VINLINE v8f v8f_erf(v8f x)
{
    const v8i neg = x < V8F(0.0f);
    const v8f a = v8f_select(neg, -x, x);
    const v8f t = V8F(1.0f) / (V8F(1.0f) + V8F(0.3275911f) * a);
    v8f p = V8F(1.061405429f);
    p = p * t + V8F(-1.453152027f);
    p = p * t + V8F(1.421413741f);
    p = p * t + V8F(-0.284496736f);
    p = p * t + V8F(0.254829592f);
    const v8f y = V8F(1.0f) - p * t * v8f_exp(-(a * a));
    return v8f_select(neg, -y, y);
}

#endif
