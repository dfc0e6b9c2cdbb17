/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_SPLIT_INTERNAL_H
#define KDL_METRICS_SPLIT_INTERNAL_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>

#include "metrics/base/tensor.h"
#include "metrics/moments.h"
#include "metrics/split.h"

/*
 * The parts of the split metric (metrics/split.h) shared by its files:
 *   split.c        options, the two streaming passes, finalize;
 *   split-eval.c   the split quantities of one sample;
 *   split-dist.c   the running distributions (moments, range, histogram);
 *   split-heads.c  the head cosines and the domain-level agreement.
 */

/* ---- split-eval.c ---- */

/* The log-odds of class @y against the others, z_y/τ - LSE_{k≠y}(z_k/τ)
 * (log p_y - log(1 - p_y), with all its digits even when p_y rounds to 1). */
double kdl__split_log_odds(const double *z, ptrdiff_t st, size_t c, size_t y, double tau);

/* log(1 + e^x) without overflow: for the log-odds d of p_y,
 * log p_y = -softplus(-d) and log(1 - p_y) = -softplus(d). */
static inline double kdl__split_softplus(double x)
{
        return x > 0.0 ? x + log1p(exp(-x)) : log1p(exp(x));
}

/* Everything of kdl_split_sample at one τ into *@r; if @add_pt is not NULL,
 * p^t is added into it (a row of the confusion sums).  Inputs are valid;
 * @work: KDL_SPLIT_EVAL_WORK(@c) doubles. */
void kdl__split_eval_one(const double *zt, ptrdiff_t st, const double *zs, ptrdiff_t ss, size_t c,
                         size_t y, double tau, double lambda, double omega_max, double *work,
                         kdl_split_sample *r, double *add_pt);

/* ---- split-dist.c ---- */

/* Where a histogram's bins are. */
struct kdl__split_geom {
        bool log;      /* the signed log layout of w_n; lo/hi unused */
        size_t nbins;  /* linear bins */
        double lo, hi; /* linear range */
};

/* A scalar's moments, range and histogram counts. */
struct kdl__split_dist {
        kdl_moments m;
        double min, max;
        size_t *count; /* nbins (linear) or KDL_SPLIT_W_SLOTS (log) */
};

/* The number of histogram slots of @g. */
size_t kdl__split_geom_slots(const struct kdl__split_geom *g);

/* An empty distribution on @g.  Return: 0; -ENOMEM. */
int kdl__split_dist_init(struct kdl__split_dist *d, const struct kdl__split_geom *g);

/* Free @d's counts. */
void kdl__split_dist_release(struct kdl__split_dist *d);

void kdl__split_dist_add(struct kdl__split_dist *d, const struct kdl__split_geom *g, double x);

/* Add @from to @into (same geometry).  Exact but for the moments' rounding. */
void kdl__split_dist_merge(struct kdl__split_dist *into, const struct kdl__split_dist *from,
                           const struct kdl__split_geom *g);

/* The public summary of @d: moments, quantiles, and the histogram (whose
 * arrays the caller frees with kdl__split_dist_result_free(), also after a
 * failure).  Return: 0; -ENOMEM. */
int kdl__split_dist_result(const struct kdl__split_geom *g, const struct kdl__split_dist *d,
                           kdl_split_dist *ret);

void kdl__split_dist_result_free(kdl_split_dist *d);

/* ---- split-heads.c ---- */

/* -KDL_ESHAPE unless @w is [@c, d] with d >= 1; -KDL_ENONFINITE for NaN/Inf. */
int kdl__split_check_head(const kdl_tensor *w, size_t c, const char *who);

/* Pearson correlation over the pairs i < j of two C x C matrices; @x is
 * symmetrised ((x_ij + x_ji)/2); pairs are kept where @keep is NULL or
 * keep[i] && keep[j].  @buf: room for C (C - 1) doubles. */
double kdl__split_pairs_pearson(const double *x, const double *y, size_t c, const size_t *keep,
                                double *buf);

/*
 * kdl__split_heads() - the head fields of @r: the cosine matrices of the
 * checked heads @wt, @ws (either may be NULL), their pair correlation and
 * linear CKA (NaN unless both are given).  @pairs: as
 * kdl__split_pairs_pearson()'s @buf.
 * Return: 0; -KDL_EOVERFLOW; -ENOMEM (@r's arrays are freed with it).
 */
int kdl__split_heads(size_t c, double cos_eps, const kdl_tensor *wt, const kdl_tensor *ws,
                     double *pairs, kdl_split_result *r);

#endif
