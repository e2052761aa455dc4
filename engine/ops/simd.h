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

#endif
