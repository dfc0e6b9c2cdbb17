/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_SPECTRAL_INTERNAL_H
#define KDL_METRICS_SPECTRAL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics/spectral.h"

/*
 * The spectral state shared by its three methods (metrics/spectral.h):
 * spectral.c holds the covariance (exact features) and what all methods
 * share, spectral-gram.c the exact Gram, spectral-sketch.c the Nystrom
 * sketch.
 */
struct kdl_spectral_state {
        size_t dx, dy;
        unsigned flags;
        kdl_spectral_plan plan;
        size_t n;
        double *mx, *my;   /* sample means (features, sketch) */
        double *sxx;       /* features: dx x dx scatter, upper triangle (row-major) */
        double *sxy;       /* features: dx x dy cross scatter (row-major) */
        double tss;        /* trace of the Y scatter */
        double *bmx, *bmy; /* block means (scratch) */
        double *work;      /* centred copy of a block, work_rows x (dx + dy + k) */
        size_t work_rows;

        /* Exact Gram: the rows accumulated (row-centred when asked) minus the
         * first block's mean, row-major [cap, dx]. */
        double *rows;
        size_t cap;
        double *shift; /* [dx] */

        /* Sketch: Omega and Y = S Omega, column-major [dx, k] (row-major
         * [k, dx]); trace = tr(S). */
        size_t k;
        double *omega;
        double *ys;
        double *kv; /* [k] scratch of the cross term */
        double trace;
};

/* kdl__spectral_copy_rows() - copy the [m, d] block @t into @dst (row-major),
 * centring each row when @center_rows; the mean of its rows into @mean.
 * Return: 0; -KDL_ENONFINITE naming the row (@what: "feature" or "target"). */
int kdl__spectral_copy_rows(const kdl_tensor *t, bool center_rows, const char *what, double *dst,
                            double *mean);

/* kdl__spectral_copy_centred() - kdl__spectral_copy_rows(), then the columns
 * of @dst centred on @mean. */
int kdl__spectral_copy_centred(const kdl_tensor *t, bool center_rows, const char *what, double *dst,
                               double *mean);

/* kdl__spectral_tail_curve() - r->tail from r->eig and r->sum.total (exact methods). */
void kdl__spectral_tail_curve(kdl_spectral_result *r);

/* kdl__spectral_gram_accumulate() - keep the rows of @x (shapes checked).
 * Return: 0; -KDL_ENONFINITE; -ENOMEM; -KDL_EOVERFLOW.  @s unchanged on failure. */
int kdl__spectral_gram_accumulate(kdl_spectral_state *s, const kdl_tensor *x);

/* kdl__spectral_gram_merge() - append the rows of @from (same dx and flags).
 * Return: 0; -ENOMEM; -KDL_EOVERFLOW.  @into unchanged on failure. */
int kdl__spectral_gram_merge(kdl_spectral_state *into, const kdl_spectral_state *from);

/* kdl__spectral_gram_eigen() - the dx eigenvalues of Sxx / (n - 1) into @eig,
 * descending (zeros past min(n, dx)), from the Gram of the rows kept.
 * Return: 0; -KDL_ENOCONV; -KDL_EOVERFLOW; -ENOMEM. */
int kdl__spectral_gram_eigen(const kdl_spectral_state *s, double *eig);

/* kdl__spectral_sketch_init() - draw Omega into s->omega (allocated, [dx, k]).
 * Return: 0; -KDL_ENOCONV if the QR fails. */
int kdl__spectral_sketch_init(kdl_spectral_state *s);

/* kdl__spectral_sketch_block() - add a centred block @xc [m, dx] (mean in
 * s->bmx) to Y and the trace, then the pairwise cross term; @w is scratch of m
 * x k.  Cannot fail. */
void kdl__spectral_sketch_block(kdl_spectral_state *s, const double *xc, size_t m, double *w);

/* kdl__spectral_sketch_cross() - Y += f delta (Omega^T delta)^T and the trace
 * += f ||delta||^2: the cross term of two groups of samples. */
void kdl__spectral_sketch_cross(kdl_spectral_state *s, double f, const double *delta);

/* kdl__spectral_sketch_finalize() - the sketch's fields of @r (allocated by the
 * caller: eig, tail with d (+1) entries; n, d set).
 * Return: 0; -KDL_ENOCONV; -ENOMEM. */
int kdl__spectral_sketch_finalize(const kdl_spectral_state *s, kdl_spectral_result *r);

/* kdl__spectral_check_rtol() - 0 for a finite rank tolerance >= 0; -KDL_ERANGE otherwise. */
int kdl__spectral_check_rtol(double rtol);

#endif
