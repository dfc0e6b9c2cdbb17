/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_QUALITY_INTERNAL_H
#define KDL_METRICS_QUALITY_INTERNAL_H

#include <stddef.h>

#include "metrics/quality.h"

/*
 * Shared by quality.c (Q = S + sqrt(I·E) and kdl_quality_compute()) and
 * quality-collapse.c (NCM accuracy, NC1, effective rank).  Not part of the
 * API; the definitions say more.
 */

/* Eigenvalues of the symmetric @a [n, n], decreasing, clamped at 0, into @w.
 * Return: 0; -KDL_ENOCONV. */
int kdl__quality_eigvals_desc(double *a, size_t n, double *w);

/* The min(m, d) eigenvalues of YᵀY for @y [m, d] centred in place.
 * Return: 0; -KDL_ENOCONV. */
int kdl__quality_centred_spectrum(double *y, size_t m, size_t d, double *work, double *w,
                                  size_t *ret_k);

/* @q's ncm_accuracy and nc1 from the class-sorted rows @xs (overwritten).
 * Return: 0; -KDL_ENOCONV; -ENOMEM. */
int kdl__quality_class_means_stats(double *xs, size_t n, size_t d, const size_t *start,
                                   size_t nclasses, double rtol, kdl_quality *q);

/* The effective rank of @xs [n, d] into @ret; @g, its Gram, may be destroyed.
 * Return: 0; -KDL_ENOCONV; -ENOMEM. */
int kdl__quality_effective_rank(const double *xs, size_t n, size_t d, double *g, double *ret);

#endif
