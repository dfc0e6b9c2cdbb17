/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_CKA_INTERNAL_H
#define KDL_METRICS_CKA_INTERNAL_H

#include <stddef.h>

#include "metrics/cka.h"

/*
 * Shared by cka.c (feature-space state), cka-gram.c (Gram space, robust)
 * and cka-minibatch.c.  Not part of the API.
 */

/* An empty kdl_cka_matrix for @nlayers layers (every array NULL); caller
 * frees with kdl_cka_matrix_free().  Return: 0; -ENOMEM. */
int kdl__cka_matrix_new(size_t nlayers, kdl_cka_matrix **ret);

/* Check @nlayers blocks [@rows, widths[ℓ]]: 2-D, the widths, the same row
 * count, finite.  @ids (may be NULL) names the sample of a NaN/Inf in the
 * message.  Return: 0; -KDL_ESHAPE; -KDL_ENONFINITE. */
int kdl__cka_check_blocks(const kdl_tensor *blocks, size_t nlayers, const size_t *widths,
                          size_t rows, const size_t *ids);

/* h[i][j] / sqrt(h[i][i] h[j][j]) for the upper triangle of @h [l*l] into
 * @out, mirrored; NaN when a diagonal entry is not positive. */
void kdl__cka_normalise_upper(const double *h, size_t l, double *out);

/* Full symmetric kernel matrix of @x [n, D] into @k [n*n]; @off is scratch
 * for n(n-1)/2 doubles (RBF only, else may be NULL).  Return: 1 if the RBF
 * bandwidth is zero (the kernel is undefined); 0; -ENOMEM. */
int kdl__cka_kernel_matrix(const kdl_tensor *x, enum kdl_cka_kernel kernel, double theta, double *k,
                           double *off);

/* U-centring of the n×n @k into @out (n >= 3); @rm: n doubles of scratch. */
void kdl__cka_centre_unbiased(const double *k, size_t n, double *rm, double *out);

#endif
