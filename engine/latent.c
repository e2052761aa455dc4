/* latent.c — the seed-to-latent sampler that latent.h specifies. */
#include "engine/latent.h"

#include <math.h>

static uint64_t splitmix64_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* (0, 1]: never 0, so the logarithm below is finite. */
static double uniform_open0(uint64_t *state)
{
    return (double)((splitmix64_next(state) >> 11) + 1) * (1.0 / 9007199254740992.0);
}

void latent_from_seed(uint64_t seed, float *z, int dim)
{
    const double two_pi = 6.283185307179586476925286766559;
    uint64_t state = seed;
    for (int i = 0; i < dim; i += 2) {
        const double u1 = uniform_open0(&state), u2 = uniform_open0(&state);
        const double r = sqrt(-2.0 * log(u1));
        z[i] = (float)(r * cos(two_pi * u2));
        if (i + 1 < dim)
            z[i + 1] = (float)(r * sin(two_pi * u2));
    }
}

void latent_lerp(const float *a, const float *b, float t, float *z, int dim)
{
    for (int i = 0; i < dim; i++)
        z[i] = (1.0f - t) * a[i] + t * b[i];
}
