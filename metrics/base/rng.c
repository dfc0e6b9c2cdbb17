/* SPDX-License-Identifier: MIT */
#include "metrics/base/rng.h"

uint64_t kdl__rng_mix64(uint64_t z)
{
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}
