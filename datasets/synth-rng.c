/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "metrics/base/rng.h"
#include "datasets/synth-internal.h"
#include "metrics/base/banned.h"

/*
 * xoshiro256** (Blackman & Vigna), seeded through splitmix64, and
 * Box-Muller normals: small, self-contained and the same on every platform
 * up to libm's log/cos.  Every stream is keyed by (seed, purpose, a, b) so
 * that a sample's values do not depend on which block or file asks.
 */

static uint64_t splitmix64(uint64_t *x)
{
        return kdl__rng_mix64(*x += KDL_RNG_GAMMA);
}

void kdl__synth_rng_init(struct kdl__synth_rng *r, uint64_t seed, enum kdl__synth_stream kind,
                         uint64_t a, uint64_t b)
{
        uint64_t x = kdl__rng_mix64(seed + KDL_RNG_GAMMA * (uint64_t) kind);

        x = kdl__rng_mix64(x ^ (a + 0x632be59bd9b4e019ULL));
        x = kdl__rng_mix64(x ^ (b + 0x85157af5b2c3a8d1ULL));
        for (int i = 0; i < 4; i++)
                r->s[i] = splitmix64(&x);
        r->has_spare = false;
}

static uint64_t rotl(uint64_t x, int k)
{
        return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct kdl__synth_rng *r)
{
        uint64_t *s = r->s, result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl(s[3], 45);
        return result;
}

/* Uniform in (0, 1): never 0, so log() below is finite. */
static double rng_uniform(struct kdl__synth_rng *r)
{
        return ((double) (rng_next(r) >> 11) + 0.5) * 0x1.0p-53;
}

/* Uniform integer in [0, n), without modulo bias. */
uint64_t kdl__synth_rng_below(struct kdl__synth_rng *r, uint64_t n)
{
        uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;

        do
                x = rng_next(r);
        while (x >= limit);
        return x % n;
}

double kdl__synth_rng_normal(struct kdl__synth_rng *r)
{
        double u, v, rad;

        if (r->has_spare) {
                r->has_spare = false;
                return r->spare;
        }
        u = rng_uniform(r);
        v = rng_uniform(r);
        rad = sqrt(-2.0 * log(u));
        r->spare = rad * sin(2.0 * M_PI * v);
        r->has_spare = true;
        return rad * cos(2.0 * M_PI * v);
}

void kdl__synth_rng_fill_normal(struct kdl__synth_rng *r, double *x, size_t n, double scale)
{
        for (size_t i = 0; i < n; i++)
                x[i] = scale * kdl__synth_rng_normal(r);
}
