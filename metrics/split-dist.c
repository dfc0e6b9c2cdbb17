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
 * on the signed log2 layout of w_n (metrics/split.h says which).
 */

#define W_NB    ((size_t) KDL_SPLIT_W_BINS)
#define W_SLOTS ((size_t) KDL_SPLIT_W_SLOTS)
#define W_L     ((double) KDL_SPLIT_W_LOG2_MIN)
#define W_H     ((double) KDL_SPLIT_W_LOG2_MAX)

/* Slots of the w_n layout, in increasing order of w. */
#define W_NEG_OUT ((size_t) 0)   /* w < -2^H */
#define W_NEG     ((size_t) 1)   /* + i: [-e(NB - i), -e(NB - i - 1)) */
#define W_MID     (W_NB + 1)     /* (-2^L, 2^L), and -2^L */
#define W_POS     (W_NB + 2)     /* + i: [e(i), e(i + 1)) */
#define W_POS_OUT (2 * W_NB + 2) /* w >= 2^H */

size_t kdl__split_geom_slots(const struct kdl__split_geom *g)
{
        return g->log ? W_SLOTS : g->nbins;
}

/* The log edge e(j) = 2^(L + (H - L) j / NB), j = 0..NB. */
static double w_edge(size_t j)
{
        return exp2(W_L + (W_H - W_L) * (double) j / (double) W_NB);
}

/* The index of a log bin from its position @u in bins (u >= 0). */
static size_t w_index(double u)
{
        return u >= (double) W_NB ? W_NB - 1 : (size_t) u;
}

static size_t w_bin(double x)
{
        double t;

        if (x > 0.0) {
                t = log2(x);
                if (t < W_L)
                        return W_MID;
                if (t >= W_H)
                        return W_POS_OUT;
                return W_POS + w_index((t - W_L) / (W_H - W_L) * (double) W_NB);
        }
        if (!(x < 0.0))
                return W_MID;
        t = log2(-x);
        if (t <= W_L)
                return W_MID;
        if (t > W_H)
                return W_NEG_OUT;
        return W_NEG + w_index((W_H - t) / (W_H - W_L) * (double) W_NB);
}

static size_t geom_bin(const struct kdl__split_geom *g, double x)
{
        double t;

        if (g->log)
                return w_bin(x);
        t = (x - g->lo) / (g->hi - g->lo) * (double) g->nbins;
        if (!(t > 0.0))
                return 0;
        if (t >= (double) g->nbins)
                return g->nbins - 1;
        return (size_t) t;
}

/* Bin @k's edges; the outer bins of w_n reach to the data's min and max. */
static void geom_edges(const struct kdl__split_geom *g, const struct kdl__split_dist *d, size_t k,
                       double *ret_lo, double *ret_hi)
{
        if (!g->log) {
                *ret_lo = g->lo + (g->hi - g->lo) * (double) k / (double) g->nbins;
                *ret_hi = g->lo + (g->hi - g->lo) * (double) (k + 1) / (double) g->nbins;
        } else if (k == W_NEG_OUT) {
                *ret_hi = -w_edge(W_NB);
                *ret_lo = d->m.n && d->min < *ret_hi ? d->min : *ret_hi;
        } else if (k < W_MID) {
                *ret_lo = -w_edge(W_NB - (k - W_NEG));
                *ret_hi = -w_edge(W_NB - (k - W_NEG) - 1);
        } else if (k == W_MID) {
                *ret_lo = -w_edge(0);
                *ret_hi = w_edge(0);
        } else if (k < W_POS_OUT) {
                *ret_lo = w_edge(k - W_POS);
                *ret_hi = w_edge(k - W_POS + 1);
        } else {
                *ret_lo = w_edge(W_NB);
                *ret_hi = d->m.n && d->max > *ret_lo ? d->max : *ret_lo;
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
                geom_edges(g, d, k, &h->lo[k], &h->hi[k]);
                h->count[k] = d->count[k];
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
