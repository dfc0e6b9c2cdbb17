/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_CKA_INTERNAL_H
#define KDL_METRICS_CKA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics/cka.h"

/*
 * Shared by the CKA files, not part of the API: cka.c builds the
 * feature-space state and cka-shift.c merges and finalizes it; cka-gram.c
 * (Gram space, robust), cka-weighted.c (weighted Gram space and its
 * bootstrap) and cka-minibatch.c use the helpers below; cka-interval.c
 * summarises the replicates of both bootstraps.
 */

/*
 * The cross-products are kept per needed block: block b holds Σ w z̃_j z̃_kᵀ
 * [D_j, D_k] for the pair (j, k) = (bj[b], bk[b]): j >= k (the later layer's
 * rows) for two stacked layers, j the one-hot layer (a row per class) for a
 * pair with one; only the upper triangle of the diagonal blocks.  The blocks are
 * one allocation, in the order of b (k, then j), so that a layer's blocks with
 * its partners side by side in Z are one matrix, one product (cka.c).
 */

/* One set of sufficient statistics, relative to the state's shift K:
 * z̃ = z - K, a_ℓ = ‖z̃_ℓ‖², weights w (1, or Poisson for a replicate).
 * Entries of u and p for pairs that are not needed are not maintained. */
struct kdl__cka_stats {
        double n;   /* Σ w */
        double *m;  /* [dt] Σ w z̃ */
        double **g; /* [nblk] blocks of Σ w z̃ z̃ᵀ */
        double *u;  /* [dt*l] Σ w z̃ aᵀ */
        double *p;  /* [l*l] Σ w a aᵀ */
        double *sa; /* [l] Σ w a */
};

struct kdl_cka_state {
        size_t l, dt;
        size_t dz;                /* columns of the stacked rows z: the dense and sketched
                                     layers, which come first in dt; one-hot layers after */
        size_t *width, *off;      /* [l], [l]: a layer's columns are off .. off + width */
        enum kdl_cka_layer *kind; /* [l] */
        size_t nhot, *hot;        /* one-hot layers, [nhot] their indices */
        bool *ext;                /* [l*l] external pairs (kdl_cka_finalize_external()); NULL */
        size_t nblk;
        size_t *bj, *bk; /* [nblk] */
        long *blk;       /* [l*l] block of a pair (either order), -1 when it has none (not
                            needed, external, or a one-hot layer with itself: its block is
                            diag(m), kept as m) */
        kdl_cka_opts o;
        bool shifted;
        double *shift;  /* [dt] K */
        size_t nstats;  /* 1 + nrep + ngroups */
        size_t nrep;    /* bootstrap replicates: st[1 .. nrep] */
        size_t ngroups; /* BCa jackknife groups: st[1 + nrep + g] sums group g */
        struct kdl__cka_stats *st;
        double *z, *a;       /* [block_rows*dz], [block_rows*l] */
        double *cls, *clsw;  /* [block_rows*nhot] each row's class in each one-hot layer, and
                                the kept rows' of a replicate (bootstrap only) */
        double *zw, *aw, *v; /* replicate copies and sqrt weights; NULL without bootstrap */
        double *ones;        /* [block_rows] */
        double *wb;          /* [block_rows] a replicate's weights; NULL without bootstrap */
        size_t *grp;         /* [block_rows] jackknife group of each row; NULL without */
        /* Mixed precision only, else NULL: the scaled float copy of at most
         * KDL_CKA_MIXED_ROWS rows of a block, one float product (the largest
         * needed pair), and each layer's power-of-two exponent. */
        float *zf, *gf; /* [mixed_rows*dt], [max D_j D_k] */
        int *fexp;      /* [l] */
};

/* Whether the pair (@j, @k) of @s has its sums: a block, or a one-hot layer's counts. */
static inline bool kdl__cka_has(const kdl_cka_state *s, size_t j, size_t k)
{
        return s->blk[j * s->l + k] >= 0 || (j == k && s->kind[j] == KDL_CKA_LAYER_ONEHOT);
}

/* The one-hot layers' part of kdl_cka_accumulate() (cka-onehot.c): to @t, the rows' class
 * counts into m, their class sums of a (U's one-hot rows) and of every partner's z̃ (the
 * blocks with a one-hot layer); @z, @a, @v as stats_add_block()'s (scaled by v = √w),
 * @cls [rows*nhot] the classes. */
void kdl__cka_onehot_add(const kdl_cka_state *s, struct kdl__cka_stats *t, const double *z,
                         const double *a, const double *v, const double *cls, size_t rows);

/* Check the one-hot block @b of layer @j (a class 0..width-1 in each row) and copy its
 * rows @r0 .. @r0 + @nb into column @q of s->cls.  Return: 0; -KDL_ERANGE naming the row's
 * sample (@ids, may be NULL) for a value that is not a class. */
int kdl__cka_onehot_rows(kdl_cka_state *s, size_t j, size_t q, const kdl_tensor *b, size_t r0,
                         size_t nb, const size_t *ids);

/* The centred terms of one statistics set (cka-shift.c): f [l*l] ‖X_jᵀX_k‖²_F, t [l*l]
 * Σᵢ s^j_i s^k_i, sd [l] S_j and ss [l] S_j² (unbiased for a sketched layer), NaN where the
 * pair is not known. */
struct kdl__cka_terms {
        double *f, *t, *sd, *ss;
};

/* A sketched layer's own terms made unbiased (cka-sketch.c): @f = ‖X̂ᵀX̂‖²_F, @sd = tr X̂ᵀX̂
 * and @t = Σ ŝ² of a Gaussian sketch with @r columns become estimates of those of the
 * data; *@ss receives the unbiased S².  NaN when @r < 2. */
void kdl__cka_sketch_correct(size_t r, double *f, double sd, double *t, double *ss);

/* The jackknife standard errors over the sketch columns (cka-sketch.c) of the pairs with
 * a sketched layer into m->biased_sketch_se and m->debiased_sketch_se, from the main
 * statistics @t of @s and their terms @e.  Return: 0; -ENOMEM. */
int kdl__cka_sketch_se(const kdl_cka_state *s, const struct kdl__cka_stats *t,
                       const struct kdl__cka_terms *e, kdl_cka_matrix *m);

/* Biased and debiased CKA of every pair whose terms @e are known (NaN otherwise) from
 * them, @n samples (cka-shift.c). */
void kdl__cka_terms_cka(size_t l, double n, const struct kdl__cka_terms *e, double *lin,
                        double *deb);

/* A zeroed statistics set shaped for @s; release it with
 * kdl__cka_stats_release() whatever this returns.  Return: 0; -ENOMEM. */
int kdl__cka_stats_init(struct kdl__cka_stats *t, const kdl_cka_state *s);
void kdl__cka_stats_release(struct kdl__cka_stats *t, size_t nblk);

/* An empty kdl_cka_matrix for @nlayers layers (every array NULL); caller
 * frees with kdl_cka_matrix_free().  Return: 0; -ENOMEM. */
int kdl__cka_matrix_new(size_t nlayers, kdl_cka_matrix **ret);

/* Check @nlayers blocks [@rows, widths[ℓ]] (one column for a one-hot layer of @kinds,
 * NULL: all dense): 2-D, the widths, the same row count, finite.  @ids (may be NULL) names
 * the sample of a NaN/Inf in the message.  Return: 0; -KDL_ESHAPE; -KDL_ENONFINITE. */
int kdl__cka_check_blocks(const kdl_tensor *blocks, size_t nlayers, const size_t *widths,
                          const enum kdl_cka_layer *kinds, size_t rows, const size_t *ids);

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

/* HKH of the n×n @k into @out (may be @k); @rm: n doubles of scratch. */
void kdl__cka_centre_biased(const double *k, size_t n, double *rm, double *out);

/* Check in-memory layers for the Gram forms: 2-D, the same n >= @min_n rows,
 * nonzero widths, finite, n² within BLAS.  Return: 0; -KDL_ESHAPE;
 * -KDL_ENONFINITE; -KDL_EOVERFLOW. */
int kdl__cka_check_layers(const kdl_tensor *layers, size_t nlayers, size_t min_n);

/* kdl_cka_gram()'s work; with @ret_kc not NULL, also hands over the L
 * kernel matrices centred by H (HKH, [l*n*n]; caller frees): every weighted
 * centring of HKH equals that of K, and the data's mean is gone. */
int kdl__cka_gram_centred(const kdl_tensor *layers, size_t nlayers, enum kdl_cka_kernel kernel,
                          double theta, kdl_cka_matrix **ret, double **ret_kc);

/* Φ⁻¹(@p) for p in (0, 1), to full double precision. */
double kdl__cka_probit(double p);

/* The bootstrap summary of @m from its point values (biased, debiased),
 * its replicates (biased_rep, debiased_rep: bootstrap of them) and for BCa
 * its jackknife values (biased_jack, debiased_jack: ngroups of them), at
 * @m->level with @m->interval: allocates and fills the lo, hi, se and bias
 * arrays.  Return: 0; -ENOMEM (@m's summary arrays may then be partly
 * allocated; kdl_cka_matrix_free() frees them). */
int kdl__cka_intervals(kdl_cka_matrix *m);

#endif
