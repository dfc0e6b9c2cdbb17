/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_BASE_RNG_H
#define KDL_METRICS_BASE_RNG_H

#include <stdint.h>

/*
 * The one 64-bit mixing function behind kdlens's seeded, counter-based
 * randomness: the sample subsets and bootstrap weights (metrics/sample.h),
 * the KL Spearman reservoir keys and the synthetic generator's streams all
 * chain it over their inputs, so a draw is a pure function of its key.
 */

/* 2^64 / φ rounded to odd: splitmix64's increment (Steele, Lea & Flood 2014). */
#define KDL_RNG_GAMMA 0x9e3779b97f4a7c15ULL

/**
 * kdl__rng_mix64() - the splitmix64 finaliser (Stafford's "Mix13"): a
 * bijection on 64-bit words with full avalanche.  Pure.
 * From state s, splitmix64's n-th output (n = 1, 2, ...) is
 * kdl__rng_mix64(s + n·KDL_RNG_GAMMA).
 */
uint64_t kdl__rng_mix64(uint64_t z);

#endif
