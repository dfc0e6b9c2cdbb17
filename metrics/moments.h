/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_MOMENTS_H
#define KDL_METRICS_MOMENTS_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics/base/error.h"

/*
 * The elementary statistics the metrics share, written once: streaming
 * means, variances and covariances, Pearson and Spearman correlation,
 * quantiles.
 *
 * Streaming moments.  A kdl_moments holds the count n, the mean and the
 * centred sum of squares M2 = Σ (x - mean)² of one variable; a kdl_comoments
 * the same of a pair (x, y) and their centred co-moment Sxy = Σ (x - mx)(y - my).
 * Values are added one at a time by Welford's update, or a whole batch is
 * summarised in two passes (its means first, then the centred sums), and
 * two summaries are merged by Chan, Golub & LeVeque's pairwise update
 * (1979): with δ = mean_b - mean_a and n = n_a + n_b,
 *
 *     M2 = M2_a + M2_b + (n_a n_b / n) δ²,   mean = mean_a + (n_b / n) δ,
 *
 * so a merge equals one pass over the union up to rounding, and the
 * variance never suffers the cancellation of Σx² - n mean².
 * Variances are population ones: M2 / n.
 *
 * Correlations are NaN, not an error, when undefined (fewer than two values,
 * or a variable without variance).  Ranks are average ranks (ties share the
 * mean of their ranks), so Spearman's ρ is Pearson's r of the ranks.
 *
 * Quantiles.  Two definitions are in use, and both are kept:
 *   - kdl_quantile_sorted(): of a sorted sample, numpy's default ("linear",
 *     Hyndman & Fan's type 7): h = q (n - 1), x[⌊h⌋] + (h - ⌊h⌋)(x[⌊h⌋+1] - x[⌊h⌋]);
 *   - kdl_quantile_hist(): of a histogram (data that merge exactly by
 *     counts): the value at rank q·n of the histogram's CDF, interpolated
 *     inside its bin, clamped to the exact [min, max] of the data.
 * On the same data they differ (the rank is q (n - 1) in one, q n in the
 * other, and a histogram only knows its bins): results stay comparable only
 * within one definition.
 */

/* The moments of one variable. */
typedef struct kdl_moments {
        size_t n;
        double mean;
        double m2; /* Σ (x - mean)² */
} kdl_moments;

/* The moments of a pair of variables. */
typedef struct kdl_comoments {
        size_t n;
        double mx, my;
        double sxx, syy; /* Σ (x - mx)², Σ (y - my)² */
        double sxy;      /* Σ (x - mx)(y - my) */
} kdl_comoments;

/** kdl_moments_add() - add the value @x (Welford's update).  Start from {0}. */
KDL_API void kdl_moments_add(kdl_moments *m, double x);

/**
 * kdl_moments_merge() - add the values summarised by @from to @into (Chan
 * et al.'s pairwise update, above).  @from unchanged; an empty @from is a
 * no-op.
 */
KDL_API void kdl_moments_merge(kdl_moments *into, const kdl_moments *from);

/** kdl_comoments_add() - add the pair (@x, @y) (Welford's update). */
KDL_API void kdl_comoments_add(kdl_comoments *m, double x, double y);

/**
 * kdl_comoments_batch() - the moments of the @n pairs (@x[i], @y[i]),
 * computed in two passes (means, then centred sums), into *@ret.
 * @x, @y: borrowed.  @n == 0 gives the empty summary.
 */
KDL_API void kdl_comoments_batch(const double *x, const double *y, size_t n, kdl_comoments *ret);

/** kdl_comoments_merge() - as kdl_moments_merge(), for pairs. */
KDL_API void kdl_comoments_merge(kdl_comoments *into, const kdl_comoments *from);

/** kdl_comoments_pearson() - Pearson's r of the pairs; NaN when undefined. */
KDL_API double kdl_comoments_pearson(const kdl_comoments *m);

/**
 * kdl_moments_shift_mean() - the mean part of Chan et al.'s update for @d
 * variables at once, for callers that keep their own co-moment sums (a
 * matrix, say): @mean (of @na samples) moves to the mean of the union with
 * @nb samples of mean @mean_b.
 * @ret_delta: @d doubles, set to δ = @mean_b - @mean (before the move).
 * Return: the weight w = @na @nb / (@na + @nb): the caller adds w δ δᵀ (or
 * its part that it keeps) to its centred sums.  @nb must be > 0.
 */
KDL_API double kdl_moments_shift_mean(size_t na, size_t nb, double *mean, const double *mean_b,
                                      size_t d, double *ret_delta);

/**
 * kdl_pearson() - Pearson's r of @x[i], @y[i], i < @n, in two passes.
 * @x, @y: borrowed.
 * Return: r; NaN when @n < 2 or a variable has no variance.
 */
KDL_API double kdl_pearson(const double *x, const double *y, size_t n);

/**
 * kdl_pearson_sums() - Pearson's r from centred sums Sxx, Syy, Sxy:
 * Sxy / (√Sxx √Syy); NaN when that denominator is not > 0.
 */
KDL_API double kdl_pearson_sums(double sxx, double syy, double sxy);

/* Workspace of kdl_ranks(): one per value. */
typedef struct kdl_ranked {
        double x;
        size_t i;
} kdl_ranked;

/**
 * kdl_ranks() - the average ranks of @x[0..@n-1]: 1-based, ties share the
 * mean of their ranks (as scipy.stats.rankdata's default).
 * @x:         borrowed; finite.
 * @w:         workspace of @n entries.
 * @ret_ranks: @n doubles.
 */
KDL_API void kdl_ranks(const double *x, size_t n, kdl_ranked *w, double *ret_ranks);

/**
 * kdl_quantile_sorted() - numpy's default ("linear") quantile at level @q
 * in [0, 1] of the sorted @x[0..@n-1], @n >= 1 (borrowed).
 */
KDL_API double kdl_quantile_sorted(const double *x, size_t n, double q);

/* A histogram as kdl_quantile_hist() reads it; everything borrowed. */
typedef struct kdl_hist_view {
        size_t nbins;
        const size_t *count; /* [nbins] */
        const double *lo;    /* [nbins] left edges */
        const double *hi;    /* [nbins] right edges */
        /* Bins log_first <= k < log_end are interpolated linearly in log2
         * (edges > 0); the others linearly.  Both 0: all linear. */
        size_t log_first, log_end;
        size_t n;        /* Σ count */
        double min, max; /* exact range of the data */
} kdl_hist_view;

/**
 * kdl_quantile_hist() - the quantile at level @q in [0, 1] of the data
 * summarised by @h: the first bin k whose cumulative count reaches q·n,
 * at the fraction f = (q·n - count before k) / count[k] of the way from
 * lo[k] to hi[k] (in log2 for log bins), then clamped to [min, max].  Its
 * error is at most one bin width.  @h->n >= 1.
 */
KDL_API double kdl_quantile_hist(const kdl_hist_view *h, double q);

#endif
