#!/usr/bin/python3
"""The latent sampler of engine/latent.h, in Python: what a client computes to
reproduce a seed's latent, and what the tests check the daemon against.

    latent_reference.py SEED DIM     prints the latent, one float per line (repr)
"""

import math
import struct
import sys

MASK = (1 << 64) - 1


def latent_from_seed(seed, dim):
    """SplitMix64 from state = seed, uniforms in (0, 1], Box-Muller in double,
    rounded to float32 (returned as Python floats holding float32 values)."""
    state = seed & MASK

    def draw():
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def f32(x):
        return struct.unpack("f", struct.pack("f", x))[0]

    out = []
    while len(out) < dim:
        u1 = ((draw() >> 11) + 1) * (1.0 / 9007199254740992.0)
        u2 = ((draw() >> 11) + 1) * (1.0 / 9007199254740992.0)
        r = math.sqrt(-2.0 * math.log(u1))
        out.append(f32(r * math.cos(2 * math.pi * u2)))
        if len(out) < dim:
            out.append(f32(r * math.sin(2 * math.pi * u2)))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    for v in latent_from_seed(int(sys.argv[1]), int(sys.argv[2])):
        print(repr(v))
