/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_SIMILARITY_H
#define KDL_METRICS_SIMILARITY_H

#include <stddef.h>

#include "metrics/base/error.h"
#include "metrics/cka.h"

/*
 * The CCA family and the orthogonal Procrustes distance between two layers X [N, D_a] and
 * Y [N, D_b] (docs/cka.md#cca-svcca-pwcca-and-procrustes), from their centred
 * cross-product matrices alone: S_aa = XᵀX [D_a, D_a], S_bb = YᵀY and S_ab = XᵀY of the
 * centred layers.  Every measure is invariant to a common scale of the three, so sums and
 * covariances (sums / N or / (N - 1)) give the same values and N is not needed.
 *
 * Rank cut: each layer keeps the eigenvectors of its S whose eigenvalue exceeds
 * @rtol times the largest (its rank r); the others (a rank-deficient layer's null space,
 * rounding) are dropped, as a pseudo-inverse with that relative cut would.  With
 * W = V_r Λ_r^(-1/2) of each layer:
 *
 *   CCA:    ρ_1 >= .. >= ρ_m, the m = min(r_a, r_b) singular values of W_aᵀ S_ab W_b
 *           (those of S_aa^(-1/2) S_ab S_bb^(-1/2)); mean ρ and mean ρ².
 *   SVCCA:  the same with each layer's top k eigenvectors only, k the fewest whose
 *           eigenvalues hold @svcca_keep of the kept ones' sum (Raghu et al. 2017); mean ρ.
 *   PWCCA:  Σ α_i ρ_i over the m canonical directions of the layer of lower rank (a on a
 *           tie), α_i ∝ Σ_j |⟨h_i, x_j⟩|, h_i its i-th canonical variate (unit norm) and x_j
 *           its j-th centred neuron (Morcos et al. 2018); Σ α_i = 1.
 *   Procrustes: with X, Y centred and scaled to unit Frobenius norm, ν = ‖XᵀY‖_* =
 *           ‖S_ab‖_* / √(tr S_aa tr S_bb); the distance 2 - 2ν (Ding et al. 2021) and the
 *           angular distance arccos ν (Williams et al. 2021), in [0, π/2].
 *
 * Every value is NaN when a layer has rank 0 (no variance).
 */

/* The measures to compute (kdl_similarity_opts.what): the others are NaN and cost nothing. */
enum {
        KDL_SIMILARITY_CCA = 1u << 0,
        KDL_SIMILARITY_SVCCA = 1u << 1,
        KDL_SIMILARITY_PWCCA = 1u << 2,
        KDL_SIMILARITY_PROCRUSTES = 1u << 3,
        KDL_SIMILARITY_ALL = (1u << 4) - 1,
};

/* Options; kdl_similarity_opts_init() gives the defaults. */
struct kdl_similarity_opts {
        double rtol;       /* rank cut, relative to the largest eigenvalue; default 1e-10 */
        double svcca_keep; /* share of a layer's variance SVCCA keeps, in (0, 1]; 0.99 */
        unsigned what;     /* KDL_SIMILARITY_* bits; default KDL_SIMILARITY_ALL.  A pair
                              computes what both its layers were made with */
};

/** kdl_similarity_opts_init() - rtol 1e-10, svcca_keep 0.99, every measure. */
void kdl_similarity_opts_init(struct kdl_similarity_opts *o);

/* The measures of one pair of layers. */
struct kdl_similarity {
        double cca_mean_rho, cca_mean_rho2; /* over min(rank_a, rank_b) correlations */
        double svcca;                       /* mean ρ of SVCCA */
        double pwcca;                       /* projection-weighted mean ρ */
        double procrustes;                  /* 2 - 2ν */
        double procrustes_angular;          /* arccos ν, radians */
        size_t rank_a, rank_b;              /* ranks after the cut */
        size_t svcca_a, svcca_b;            /* directions SVCCA keeps */
};

/* One layer's eigendecomposition, shared by all its pairs. */
typedef struct kdl_similarity_layer kdl_similarity_layer;

/**
 * kdl_similarity_layer_new() - the eigendecomposition of the layer's @saa [@d, @d]
 * (row-major, symmetric: both triangles are read and averaged), its rank and SVCCA's
 * directions under @o (NULL: the defaults).
 * @saa: borrowed, not modified.
 * @ret: set on success only; caller frees with kdl_similarity_layer_free().
 *
 * Memory: 3 d² doubles (the eigenvalues alone, d², for Procrustes alone).
 * Return: 0; -KDL_ESHAPE if @d is 0; -KDL_ERANGE for @o's rtol outside [0, 1) or
 * svcca_keep outside (0, 1]; -KDL_ENONFINITE; -KDL_ENOCONV if the eigensolver fails;
 * -KDL_EOVERFLOW; -ENOMEM.
 */
int kdl_similarity_layer_new(size_t d, const double *saa, const struct kdl_similarity_opts *o,
                             kdl_similarity_layer **ret);

/** kdl_similarity_layer_rank() - the rank of @x after the cut. */
size_t kdl_similarity_layer_rank(const kdl_similarity_layer *x);

/** kdl_similarity_layer_free() - free @x.  NULL is a no-op. */
void kdl_similarity_layer_free(kdl_similarity_layer *x);

/**
 * kdl_similarity_pair() - the measures both layers' options ask between layers @a and @b
 * from their cross-product @sab [D_a, D_b] (row-major; borrowed); the others are NaN.
 * Scratch is allocated and freed here: about 2 D_a D_b + r_a D_b + 2 r_a r_b doubles.
 * Time: an SVD of the r_a x r_b whitened cross-product (with singular vectors for PWCCA),
 * one of its k_a x k_b corner for SVCCA (unless k = r on both sides) and one of S_ab for
 * Procrustes.
 * @ret: set on success only.
 * Return: 0; -KDL_ENONFINITE; -KDL_ENOCONV if an SVD fails; -KDL_EOVERFLOW; -ENOMEM.
 */
int kdl_similarity_pair(const kdl_similarity_layer *a, const kdl_similarity_layer *b,
                        const double *sab, struct kdl_similarity *ret);

/**
 * kdl_similarity_layer_sqrt() - the square root V_r Λ_r^(1/2) V_rᵀ [d, d] of the layer's S
 * over its kept directions, into @ret (the caller's, d² doubles).  For layers made from
 * their n x n centred Gram matrices K = X Xᵀ (layers wider than n), K_a^(1/2) K_b^(1/2)
 * plays S_ab's part: kdl_similarity_pair() then gives the same CCA, SVCCA and Procrustes
 * as from the covariances (its whitened cross-product is U_aᵀ U_b, the Gram space's
 * canonical correlation matrix), but not PWCCA, whose weights are over the neurons.
 * Return: 0; -KDL_ESHAPE for a layer made for Procrustes alone (no eigenvectors).
 */
int kdl_similarity_layer_sqrt(const kdl_similarity_layer *x, double *ret);

/**
 * kdl_similarity_cka_cov() - the centred cross-product Σ (x_j - x̄_j)(x_k - x̄_k)ᵀ of
 * layers @j and @k of the feature-space CKA state @s over the samples it holds, full
 * [D_j, D_k] row-major into @ret (the caller's).  Both layers must be dense
 * (KDL_CKA_LAYER_DENSE) and the pair one the state keeps a block of (needed, not external).
 * Return: 0; -KDL_EMISSING if no sample was accumulated; -KDL_ESHAPE for a pair without a
 * block or with a layer that is not dense.
 */
int kdl_similarity_cka_cov(const kdl_cka_state *s, size_t j, size_t k, double *ret);

#endif
