/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/moments.h"
#include "metrics/split.h"
#include "metrics/split-internal.h"
#include "metrics/base/banned.h"

/*
 * The running distributions of the split metric: exact moments and range,
 * and fixed-bin histogram counts that merge exactly, on a linear range or
 * on the log2 layout of w_n (metrics/split.h says which).
 */

#define W_NB    KDL_SPLIT_W_BINS
#define W_SLOTS KDL__SPLIT_W_SLOTS

size_t kdl__split_geom_slots(const struct kdl__split_geom *g)
{
        return g->log ? (size_t) W_SLOTS : g->nbins;
}

static size_t geom_bin(const struct kdl__split_geom *g, double x)
{
        double t;

        if (g->log) {
                if (!(x > 0.0))
                        return 0;
                t = log2(x);
                if (t < KDL_SPLIT_W_LOG2_MIN)
                        return 1;
                if (t >= KDL_SPLIT_W_LOG2_MAX)
                        return W_SLOTS - 1;
                t = (t - KDL_SPLIT_W_LOG2_MIN) / (KDL_SPLIT_W_LOG2_MAX - KDL_SPLIT_W_LOG2_MIN) *
                    (double) W_NB;
                return 2 + (t >= (double) W_NB ? W_NB - 1 : (size_t) t);
        }
        t = (x - g->lo) / (g->hi - g->lo) * (double) g->nbins;
        if (!(t > 0.0))
                return 0;
        if (t >= (double) g->nbins)
                return g->nbins - 1;
        return (size_t) t;
}

/* Bin @k's edges; *@ret_log: interpolate linearly in log2 inside it. */
static void geom_edges(const struct kdl__split_geom *g, const struct kdl__split_dist *d, size_t k,
                       double *ret_lo, double *ret_hi, bool *ret_log)
{
        const double span = KDL_SPLIT_W_LOG2_MAX - KDL_SPLIT_W_LOG2_MIN;

        *ret_log = false;
        if (!g->log) {
                *ret_lo = g->lo + (g->hi - g->lo) * (double) k / (double) g->nbins;
                *ret_hi = g->lo + (g->hi - g->lo) * (double) (k + 1) / (double) g->nbins;
                return;
        }
        if (k == 0) {
                *ret_lo = d->m.n && d->min < 0.0 ? d->min : 0.0;
                *ret_hi = 0.0;
        } else if (k == 1) {
                *ret_lo = 0.0;
                *ret_hi = exp2(KDL_SPLIT_W_LOG2_MIN);
        } else if (k == W_SLOTS - 1) {
                *ret_lo = exp2(KDL_SPLIT_W_LOG2_MAX);
                *ret_hi = d->m.n && d->max > *ret_lo ? d->max : *ret_lo;
        } else {
                *ret_lo = exp2(KDL_SPLIT_W_LOG2_MIN + span * (double) (k - 2) / W_NB);
                *ret_hi = exp2(KDL_SPLIT_W_LOG2_MIN + span * (double) (k - 1) / W_NB);
                *ret_log = true;
        }
}

int kdl__split_dist_init(struct kdl__split_dist *d, const struct kdl__split_geom *g)
{
        d->m = (kdl_moments){0};
        d->min = INFINITY;
        d->max = -INFINITY;
        d->count = kdl_new(size_t, kdl__split_geom_slots(g));
        return d->count ? 0 : -ENOMEM;
}

void kdl__split_dist_add(struct kdl__split_dist *d, const struct kdl__split_geom *g, double x)
{
        kdl_moments_add(&d->m, x);
        if (x < d->min)
                d->min = x;
        if (x > d->max)
                d->max = x;
        d->count[geom_bin(g, x)]++;
}

void kdl__split_dist_merge(struct kdl__split_dist *into, const struct kdl__split_dist *from,
                           const struct kdl__split_geom *g)
{
        size_t slots = kdl__split_geom_slots(g);

        if (from->m.n == 0)
                return;
        kdl_moments_merge(&into->m, &from->m);
        if (from->min < into->min)
                into->min = from->min;
        if (from->max > into->max)
                into->max = from->max;
        for (size_t k = 0; k < slots; k++)
                into->count[k] += from->count[k];
}

void kdl__split_dist_release(struct kdl__split_dist *d)
{
        free(d->count);
        d->count = NULL;
}

int kdl__split_dist_result(const struct kdl__split_geom *g, const struct kdl__split_dist *d,
                           kdl_split_dist *ret)
{
        size_t slots = kdl__split_geom_slots(g), n = d->m.n;
        kdl_split_hist *h = &ret->hist;
        kdl_hist_view v = {.nbins = slots, .count = d->count, .n = n, .min = d->min, .max = d->max};

        ret->n = n;
        ret->mean = n ? d->m.mean : (double) NAN;
        ret->std = n ? sqrt(d->m.m2 / (double) n) : (double) NAN;
        ret->min = n ? d->min : (double) NAN;
        ret->max = n ? d->max : (double) NAN;
        h->nbins = slots;
        h->lo = kdl_new(double, slots);
        h->hi = kdl_new(double, slots);
        h->count = kdl_new(size_t, slots);
        if (!h->lo || !h->hi || !h->count)
                return -ENOMEM;
        for (size_t k = 0; k < slots; k++) {
                bool lg;

                geom_edges(g, d, k, &h->lo[k], &h->hi[k], &lg);
                h->count[k] = d->count[k];
                if (lg && v.log_end == 0)
                        v.log_first = k;
                if (lg)
                        v.log_end = k + 1;
        }
        v.lo = h->lo;
        v.hi = h->hi;
        for (int q = 0; q < KDL_SPLIT_NQUANTILES; q++)
                ret->quantile[q] =
                        n ? kdl_quantile_hist(&v, kdl_split_quantile_levels[q]) : (double) NAN;
        return 0;
}

void kdl__split_dist_result_free(kdl_split_dist *d)
{
        free(d->hist.lo);
        free(d->hist.hi);
        free(d->hist.count);
}
