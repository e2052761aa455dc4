/* latent.h — the latent vectors a seed stands for: part of the HTTP API's contract.
 *
 * A generate request names images by seed; the same seed must give the same image
 * on every run, build and machine, and clients may reproduce the latent themselves
 * (tests/latent_reference.py does, in Python).  So the sampler is specified here,
 * not left to a library:
 *   - SplitMix64 (Steele, Lea, Flood 2014) with state = seed: each draw adds
 *     0x9E3779B97F4A7C15 to the state and returns it mixed by
 *     z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
 *     z ^= z >> 31;
 *   - a uniform u in (0, 1] from each draw x: ((x >> 11) + 1) * 2^-53;
 *   - Box-Muller on consecutive pairs (u1, u2), in double precision:
 *     r = sqrt(-2 ln u1), z[2i] = r cos(2 pi u2), z[2i+1] = r sin(2 pi u2),
 *     rounded to float; an odd dimension drops the last pair's sine.
 * It is not PyTorch's torch.randn stream (that one is not specified across versions).
 * Pure and reentrant.
 */
#ifndef MODELD_ENGINE_LATENT_H
#define MODELD_ENGINE_LATENT_H

#include <stdint.h>

/* z[0..dim) ~ N(0, 1), the latent of `seed`. */
void latent_from_seed(uint64_t seed, float *z, int dim);

/* z = (1 - t) a + t b per element: the walk between two latents (t in [0, 1]). */
void latent_lerp(const float *a, const float *b, float t, float *z, int dim);

#endif
