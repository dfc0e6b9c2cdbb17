/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_CKA_H
#define KDL_METRICS_CKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/base/error.h"
#include "metrics/base/tensor.h"

/*
 * Centred kernel alignment (docs/cka.md): linear and debiased linear CKA as
 * streaming sufficient statistics in feature space for every pair of a list
 * of layers; the Gram-space forms (linear or RBF kernel) on in-memory data;
 * minibatch CKA (Nguyen et al. 2021); an outlier-robust linear CKA (docs/cka.md#robust-cka).
 *
 * A "layer" is any [n, D] block of per-sample features: a network layer, the
 * logits, the one-hot labels.  Samples are rows; the same row index of every
 * layer is the same sample.
 */

/*
 * Bootstrap confidence intervals (Efron & Tibshirani 1993).  With θ̂ the
 * point value, θ*_b the B replicates (Poisson(1) weights), q(p) numpy's
 * linear quantile of the finite replicates and α = 1 - level:
 *
 * KDL_CKA_INTERVAL_PERCENTILE: [q(α/2), q(1 - α/2)] (their ch. 13).
 * KDL_CKA_INTERVAL_BASIC: [2θ̂ - q(1 - α/2), 2θ̂ - q(α/2)] (the "basic" or
 *   reverse-percentile interval, Davison & Hinkley 1997 ch. 5).
 * KDL_CKA_INTERVAL_BCA: [q(α₁), q(α₂)], αᵢ = Φ(z₀ + (z₀ + zᵢ)/(1 - a(z₀ + zᵢ)))
 *   with z₁ = Φ⁻¹(α/2), z₂ = Φ⁻¹(1 - α/2) (their ch. 14): the bias
 *   correction z₀ = Φ⁻¹(p₀), p₀ the share of replicates below θ̂ (ties count
 *   half, as scipy.stats.bootstrap); the acceleration
 *   a = Σ d_g³ / (6 (Σ d_g²)^(3/2)), d_g = mean(θ₍.₎) - θ₍g₎, from a
 *   delete-a-group jackknife: the samples are split into
 *   KDL_CKA_JACKKNIFE_GROUPS seeded groups (kdl_sample_group()) and θ₍g₎ is
 *   the value without group g, computed exactly from the streamed sums (the
 *   whole minus the group's).  NaN where undefined: p₀ = 0 or 1, fewer than
 *   two jackknife values, or a denominator 1 - a(z₀ + zᵢ) <= 0.
 */
enum kdl_cka_interval {
        KDL_CKA_INTERVAL_PERCENTILE, /* "percentile" (the default) */
        KDL_CKA_INTERVAL_BASIC,      /* "basic" */
        KDL_CKA_INTERVAL_BCA,        /* "bca" */
        KDL_CKA_INTERVAL_COUNT_
};

#define KDL_CKA_JACKKNIFE_GROUPS 50 /* groups of the BCa acceleration's jackknife */

/** kdl_cka_interval_name() - "percentile", "basic" or "bca". */
KDL_API const char *kdl_cka_interval_name(enum kdl_cka_interval i);

/** kdl_cka_interval_parse() - the interval named @s; -KDL_EUSAGE otherwise. */
KDL_API int kdl_cka_interval_parse(const char *s, enum kdl_cka_interval *ret);

/* A matrix of CKA values between layers, as filled by one of the estimators
 * below.  Entries are row-major [nlayers * nlayers], symmetric, NaN where the
 * value is undefined (a layer with no variance, or n < 4 for the debiased
 * form).  Arrays an estimator does not fill are NULL. */
typedef struct kdl_cka_matrix {
        size_t nlayers;
        double n;          /* samples (sum of weights for a bootstrap replicate) */
        double *biased;    /* CKA with biased HSIC (Kornblith et al. 2019) */
        double *debiased;  /* CKA with unbiased HSIC (Song et al. 2012) */
        double *minibatch; /* minibatch CKA (Nguyen et al. 2021) */
        size_t nbatches;   /* minibatch: batches averaged */
        /* Bootstrap (linear CKA: the feature-space state and
         * kdl_cka_gram_linear()), NULL without: the interval of the requested
         * type and level, the standard deviation of the replicates (ddof 1)
         * and their bias (mean of the replicates minus the point value), for
         * biased and debiased; each replicate's values [bootstrap * L*L]
         * and, for BCa, each jackknife value [ngroups * L*L] (NaN for an
         * empty group). */
        size_t bootstrap; /* replicates B */
        double level;     /* e.g. 0.95 */
        enum kdl_cka_interval interval;
        size_t ngroups; /* jackknife groups (BCa), else 0 */
        double *biased_lo, *biased_hi, *biased_se, *biased_bias;
        double *debiased_lo, *debiased_hi, *debiased_se, *debiased_bias;
        double *biased_rep, *debiased_rep;
        double *biased_jack, *debiased_jack;
        /* Pairs with a sketched layer (KDL_CKA_LAYER_SKETCH), NULL without one: the
         * standard error of the value that comes from the sketch (delete-one jackknife
         * over its r columns), for biased and debiased; NaN for the exact pairs. */
        double *biased_sketch_se, *debiased_sketch_se;
} kdl_cka_matrix;

/** kdl_cka_matrix_free() - free @m and its arrays.  NULL is a no-op. */
KDL_API void kdl_cka_matrix_free(kdl_cka_matrix *m);

/* ---- Feature-space linear CKA, streaming ------------------------------------ */

/*
 * Arithmetic of the streaming state's big products.
 *
 * KDL_CKA_PRECISION_DOUBLE: everything in double (the default).
 *
 * KDL_CKA_PRECISION_MIXED: only the G-block products, the dsyrk/dgemm of each
 * needed layer pair (XᵢᵀXᵢ, XᵢᵀXⱼ), which are nearly all the flops, are
 * ssyrk/sgemm.  The shifted block z̃ = z - K is computed in double, each
 * layer's part is scaled by a power of two (exact) to a largest magnitude in
 * [0.5, 1), so there is no float overflow or underflow whatever the units,
 * and rounded to float; one product of one block is formed in float and its
 * result, scaled back, added into the double accumulators.  A float product
 * covers at most KDL_CKA_MIXED_ROWS rows (a longer block is split), so each
 * float sum has at most 1024 terms: float rounding stays that of one product
 * (the input's relative rounding 2⁻²⁴ and a 1024-term float sum) and does not
 * grow with N.  Why 1024: shorter products round less but cost more per flop,
 * since each adds its D_i x D_j float result into double (a trade-off chosen
 * by a one-off timing that no program here repeats).  Everything else is
 * double: the shift, the row norms a, U = Σ z̃ aᵀ, P, m, n, the bootstrap
 * weights (applied in double before the cast) and finalize.
 *
 * Measured max |mixed - double| of biased and debiased CKA:
 *   tests/metrics/test-cka.c, n = 3000, three correlated layers of widths
 *   40, 64, 96 whose features have mean ~50 and spread ~1 (so the shift
 *   matters), 40 bootstrap replicates: 3e-9 with 700-row products; 7.7e-9
 *   for the values and 1.2e-8 for the bootstrap bounds with 1024-row
 *   products.  The test asserts < 1e-7 (absolute) on the values and the
 *   bootstrap bounds and standard errors, and > 1e-12 (float rounding shows).
 *   tests/bench/bench-cka (8 ReLU layers of width 2048): 1.8e-9 at N = 10,000
 *   and 1.6e-9 at N = 50,000.  tests/ref/test_cka.py (a few hundred samples,
 *   narrow layers, outliers of +30 in one): 1.2e-7, the largest seen.
 * These are measurements, not a bound; use 1e-6 absolute as the tolerance of
 * mixed against double.
 */
#define KDL_CKA_MIXED_ROWS 1024 /* rows per float product at most, mixed precision */

enum kdl_cka_precision {
        KDL_CKA_PRECISION_DOUBLE, /* "double" */
        KDL_CKA_PRECISION_MIXED,  /* "mixed": float G-block products, double accumulators */
        KDL_CKA_PRECISION_COUNT_
};

/*
 * What the block of a layer holds (kdl_cka_opts.kinds), docs/cka.md#wide-layers.
 *
 * KDL_CKA_LAYER_DENSE: the features [rows, D] (the default).
 * KDL_CKA_LAYER_ONEHOT: [rows, 1], the class 0..D-1 of each row (a whole number held in a
 *   double) of a one-hot layer of width D, the labels: its product with another layer is
 *   that layer's class sums (a D x D_k block), with itself the class counts (D numbers, no
 *   D x D block), so every value is exact at any D for O(D_k) work per row.  Its sums are
 *   not shifted (0/1 values do not cancel).
 * KDL_CKA_LAYER_SKETCH: [rows, r], the Gaussian sketch X Ω / √r of features X [rows, D]
 *   too wide to keep D x D blocks of (kdl_cka_sketch_apply(); Ω [D, r] standard normal,
 *   independent of every other layer's).  A product with another layer is then an unbiased
 *   estimate of the one with X; finalize corrects the layer's own terms so that they are
 *   unbiased too (‖XᵀX‖²_F, S², Σ s²), and gives the standard error that the sketch adds
 *   (biased_sketch_se, debiased_sketch_se).
 */
enum kdl_cka_layer {
        KDL_CKA_LAYER_DENSE,
        KDL_CKA_LAYER_ONEHOT,
        KDL_CKA_LAYER_SKETCH,
        KDL_CKA_LAYER_COUNT_
};

/** kdl_cka_precision_name() - "double" or "mixed". */
KDL_API const char *kdl_cka_precision_name(enum kdl_cka_precision p);

/** kdl_cka_precision_parse() - the precision named @s; -KDL_EUSAGE otherwise. */
KDL_API int kdl_cka_precision_parse(const char *s, enum kdl_cka_precision *ret);

/* Options of the feature-space state; kdl_cka_opts_init() gives the defaults. */
typedef struct kdl_cka_opts {
        size_t block_rows; /* rows per product (mixed: per block, products of at most
                              KDL_CKA_MIXED_ROWS); 0 (default): chosen from the widths, 2048,
                              fewer when ΣD is large (≤ 256 MiB) */
        const bool *pairs; /* [L*L] the pairs to compute (either order counts; the diagonal
                              always is); NULL (default): all.  Borrowed by
                              kdl_cka_state_new() only */
        size_t bootstrap;  /* Poisson(1) bootstrap replicates B; default 0: none */
        uint64_t seed;     /* bootstrap weights: kdl_sample_poisson1(seed, row id, b);
                              default 0 */
        double level;      /* confidence level of the intervals, in (0, 1); default 0.95 */
        enum kdl_cka_precision precision; /* default KDL_CKA_PRECISION_DOUBLE */
        enum kdl_cka_interval interval;   /* default KDL_CKA_INTERVAL_PERCENTILE; BCa adds
                                             KDL_CKA_JACKKNIFE_GROUPS sets of sums */
        const enum kdl_cka_layer *kinds;  /* [L] what each layer's block holds; NULL
                                             (default): all dense.  Borrowed by
                                             kdl_cka_state_new() only */
        const bool *external;             /* [L*L] pairs (either order, the diagonal
                                             included) whose terms kdl_cka_finalize_external()
                                             is given: no block is kept for them; NULL
                                             (default): none.  Borrowed by
                                             kdl_cka_state_new() only */
} kdl_cka_opts;

/**
 * kdl_cka_opts_init() - set every field of @o to its default: automatic
 * block rows, all pairs, no bootstrap, seed 0, level 0.95, double precision,
 * percentile intervals.  A NULL options pointer means these.
 */
KDL_API void kdl_cka_opts_init(kdl_cka_opts *o);

typedef struct kdl_cka_state kdl_cka_state;

/**
 * kdl_cka_state_bytes() - memory a state with these layers and options
 * (@o: NULL for the defaults) holds, so callers can report it or refuse
 * before allocating.
 * Return: the bytes, or SIZE_MAX if the sizes overflow.
 */
KDL_API size_t kdl_cka_state_bytes(size_t nlayers, const size_t *widths, const kdl_cka_opts *o);

/**
 * kdl_cka_state_new() - a state for linear and debiased linear CKA between
 * every pair of @nlayers layers of widths @widths (D_1..D_L, each >= 1).
 * @o: NULL for the defaults (kdl_cka_opts_init()).
 * @ret: set on success only; caller frees with kdl_cka_state_free().
 *
 * The layers of each row block are stacked side by side into one matrix Z
 * [rows, ΣD]; each needed pair of layers (@o->pairs) is a BLAS-3 product
 * per block on column slices of Z (dsyrk for XᵢᵀXᵢ, dgemm for XᵢᵀXⱼ; a
 * layer's needed partners side by side in Z are one dgemm), so pairs nobody
 * asked for cost neither flops nor memory.  The state holds,
 * relative to a shift K (the mean of the first block, for accuracy): the
 * count n, the column sums m = Σ z, the needed blocks of G = Σ z zᵀ, the
 * squared row norms a_ℓ = ‖z_ℓ‖² of each layer through U = Σ z aᵀ [ΣD, L],
 * P = Σ a aᵀ [L, L] and Σ a — what the debiased form needs (docs/cka.md#debiased-linear-cka:
 * Σᵢ sˣᵢ sʸᵢ is a per-sample cross term, kept per layer pair).  Centring
 * happens at finalize.
 *
 * With @o->bootstrap = B, B replicate states are accumulated in the same
 * pass with Poisson(1) weights of each sample (seeded, counter-based on the
 * sample id and the replicate, so independent of block sizes and merges);
 * with BCa intervals also G = KDL_CKA_JACKKNIFE_GROUPS sets of the sums of
 * each jackknife group's samples.
 *
 * Memory: (1 + B + G) * Σ over needed pairs of D_i D_j doubles (the upper
 * triangle of (ΣD)² with every pair) plus a block of @o->block_rows rows;
 * mixed precision adds a float copy of min(block_rows, KDL_CKA_MIXED_ROWS)
 * rows of the block and one float D_i x D_j product (the largest needed
 * pair); independent of the number of samples.
 * kdl_cka_state_bytes() says how much.
 * Return: 0; -KDL_ESHAPE if @nlayers or a width is 0; -KDL_EOVERFLOW if ΣD
 * does not fit BLAS or the memory overflows; -KDL_ERANGE for a level outside
 * (0, 1); -ENOMEM.
 */
KDL_API int kdl_cka_state_new(size_t nlayers, const size_t *widths, const kdl_cka_opts *o,
                              kdl_cka_state **ret);

/**
 * kdl_cka_accumulate() - add one row block of samples.
 * @blocks: @nlayers 2-D tensors [rows, D_ℓ] in the order given to
 *          kdl_cka_state_new(), any strides; borrowed, not modified.
 * @ids:    the samples' global ids, one per row (borrowed); bootstrap weights
 *          are a function of them, so ids must be unique across merged
 *          states.  May be NULL when the state has no bootstrap replicates.
 *
 * A block of 0 rows is a no-op.
 * Return: 0; -KDL_ESHAPE if a block has the wrong width or a different row
 * count; -KDL_ENONFINITE naming the layer and sample of the first NaN/Inf.
 * On failure @s is unchanged.
 */
KDL_API int kdl_cka_accumulate(kdl_cka_state *s, const kdl_tensor *blocks, const size_t *ids);

/**
 * kdl_cka_merge() - add the samples of @from to @into (exact: the two
 * shifts are reconciled analytically, Chan et al.'s idea).  @from unchanged;
 * it may be empty.  Of the options, only @block_rows may differ.
 * Return: 0; -KDL_EMISMATCH if the layers, pairs, replicates, precisions or
 * (with replicates) seeds, levels or intervals differ; -ENOMEM.  On failure
 * @into is unchanged.
 */
KDL_API int kdl_cka_merge(kdl_cka_state *into, const kdl_cka_state *from);

/**
 * kdl_cka_finalize() - biased and debiased linear CKA for all pairs, with
 * the bootstrap replicates, their intervals (of @o->interval), standard
 * deviations and biases when the state has replicates.
 *
 * Feature-space forms (docs/cka.md#linear-cka, docs/cka.md#debiased-linear-cka): with centred
 * layers, CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) and the debiased form through φ(a) = a - n/(n-2) sˣ·sʸ
 * + SₓSᵧ/((n-1)(n-2)). Memory: O(L ΣD) besides the result.  Pairs that were not computed are NaN.
 * @s: not modified.
 * @ret: set on success only; caller frees with kdl_cka_matrix_free().
 * Return: 0; -KDL_EMISSING if no sample was accumulated; -ENOMEM.  Undefined
 * entries are NaN, not errors.
 */
KDL_API int kdl_cka_finalize(const kdl_cka_state *s, kdl_cka_matrix **ret);

/*
 * The state as bytes, for the processes of one MPI run (analysis/dist.h):
 * the shift and every statistics set (the sums, the replicates, the
 * jackknife groups), in host layout, readable by the same build only.  A
 * packed state is 1 + D + (1 + B + G) (1 + D + Σ D_i D_j + D L + L² + L)
 * doubles (D = ΣD_ℓ, the sum over the needed pairs i <= j).
 *
 * kdl_cka_state_pack() - @s as bytes; *@buf malloc'd, the caller frees.
 * Return: 0; -ENOMEM.
 * kdl_cka_state_merge_packed() - add the samples of a packed state (made
 * with the same layers and options as @s) to @s, as kdl_cka_merge().
 * kdl_cka_state_load_packed() - @s becomes the packed state (exactly).
 * Return: 0; -KDL_ESCHEMA when @len is not the size of a state shaped as @s;
 * -ENOMEM; the codes of kdl_cka_merge().  On failure @s is unchanged, except
 * after -ENOMEM from kdl_cka_state_load_packed() (free it then).
 */
KDL_API int kdl_cka_state_pack(const kdl_cka_state *s, void **buf, size_t *len);
KDL_API int kdl_cka_state_merge_packed(kdl_cka_state *s, const void *buf, size_t len);
KDL_API int kdl_cka_state_load_packed(kdl_cka_state *s, const void *buf, size_t len);

/**
 * kdl_cka_finalize_external() - kdl_cka_finalize() where the terms of the state's external
 * pairs (kdl_cka_opts.external) are given: for each external pair (j, k), @f[j*L+k] is
 * ‖X_jᵀX_k‖²_F and @t[j*L+k] is Σᵢ s^j_i s^k_i of the centred layers
 * (docs/cka.md#debiased-linear-cka), and for each external diagonal @s[j] is S_j = Σᵢ s^j_i
 * (kdl_cka_strips_terms() gives them).  The bootstrap replicates of external pairs are NaN (only
 * the point values are given).  @f, @t, @s: borrowed; entries of other pairs are not read. Return:
 * as kdl_cka_finalize().
 */
KDL_API int kdl_cka_finalize_external(const kdl_cka_state *s, const double *f, const double *t,
                                      const double *sdiag, kdl_cka_matrix **ret);

/**
 * kdl_cka_state_mean() - the mean of layer @j over the samples accumulated so far, D_j
 * values into @ret (for a one-hot layer, the share of each class).
 * Return: 0; -KDL_EMISSING when no sample was accumulated.
 */
KDL_API int kdl_cka_state_mean(const kdl_cka_state *s, size_t j, double *ret);

/** kdl_cka_state_free() - free @s.  NULL is a no-op. */
KDL_API void kdl_cka_state_free(kdl_cka_state *s);

/* ---- Gram space, in memory ---------------------------------------------------- */

enum kdl_cka_kernel {
        KDL_CKA_LINEAR, /* k(x, y) = xᵀy */
        KDL_CKA_RBF, /* exp(-‖x-y‖²/(2σ²)), σ² = θ² median of all n² squared distances */
        KDL_CKA_KERNEL_COUNT_
};

/** kdl_cka_kernel_name() - "linear" or "rbf". */
KDL_API const char *kdl_cka_kernel_name(enum kdl_cka_kernel k);

/**
 * kdl_cka_gram() - biased and debiased CKA of every pair of in-memory
 * layers through their n×n Gram matrices (docs/cka.md#hsic-and-cka,
 * docs/cka.md#debiased-linear-cka: HKH centring and U-centring).  The linear kernel gives the same
 * values as the feature-space state (use it when D > n); the RBF kernel has bandwidth σ² = @theta²
 * times the median of the full n×n matrix of squared distances, zero diagonal included (Kornblith
 * et al.'s demo).
 * @layers: @nlayers tensors [n, D_ℓ] with the same n >= 2; borrowed.
 * @theta:  RBF only, > 0 (0.5 in the demo).
 * @ret:    set on success only; caller frees with kdl_cka_matrix_free().
 *
 * Memory: 2 L n² doubles.  debiased is NaN when n < 4.
 * Return: 0; -KDL_ESHAPE (row counts differ, n < 2, no layers);
 * -KDL_ERANGE (@theta); -KDL_ENONFINITE; -KDL_EOVERFLOW; -ENOMEM.
 */
KDL_API int kdl_cka_gram(const kdl_tensor *layers, size_t nlayers, enum kdl_cka_kernel kernel,
                         double theta, kdl_cka_matrix **ret);

/**
 * kdl_cka_gram_weighted() - biased and debiased linear CKA of every pair of
 * in-memory layers with sample weights @w (n of them, finite, >= 0), through
 * the n×n Gram matrices K, L.  With W = diag(w), N = Σ w and the weighted
 * centring H_w = I - 1 wᵀ/N:
 *
 *   biased:   HSIC_w(K, L) = tr(W K_w W L_w), K_w = H_w K H_wᵀ;
 *   debiased: Σᵢⱼ ωᵢⱼ Mᴷᵢⱼ Mᴸᵢⱼ with ωᵢⱼ = wᵢ wⱼ (i ≠ j), wᵢ(wᵢ - 1)
 *             (i = j), Mᵢⱼ = Kᵢⱼ - (rᵢ + rⱼ)/(N - 2) + Σₖ wₖ rₖ/((N-1)(N-2)),
 *             rᵢ = Σⱼ wⱼ Kᵢⱼ - Kᵢᵢ;
 *
 * normalised as CKA.  For integer weights both equal the unweighted values
 * of the data with sample i repeated wᵢ times (that is how they are
 * derived: the debiased one is the U-centred inner product of the repeated
 * data, whose copies of one sample are distinct samples), which is what
 * makes a Gram-space bootstrap replicate equal the feature-space one.  All
 * weights 1 give kdl_cka_gram()'s linear values.
 * @layers: @nlayers tensors [n, D_ℓ] with the same n >= 2; borrowed.
 * @ret:    set on success only (@n = N); caller frees with
 *          kdl_cka_matrix_free().
 *
 * Memory: 2 L m² doubles, m the samples of positive weight.  A value is NaN
 * when N <= 0 (debiased: N < 4) or a layer has no weighted variance.
 * Return: as kdl_cka_gram(); -KDL_ERANGE for a negative or non-finite weight.
 */
KDL_API int kdl_cka_gram_weighted(const kdl_tensor *layers, size_t nlayers, const double *w,
                                  kdl_cka_matrix **ret);

/**
 * kdl_cka_gram_linear() - linear CKA in Gram space with the feature-space
 * state's bootstrap: the point values of kdl_cka_gram(), and with
 * @o->bootstrap = B the replicates whose sample weights are
 * kdl_sample_poisson1(@o->seed, @ids[i], b), as kdl_cka_gram_weighted()
 * computes them, so that a replicate equals the feature-space state's
 * replicate b of the same samples; then the same summary as
 * kdl_cka_finalize() (@o->level, @o->interval; for BCa the same seeded
 * jackknife groups).  @o->block_rows, @o->precision and @o->pairs are not
 * used (every pair is computed).
 * @ids: n sample ids, unique (borrowed); may be NULL without bootstrap.
 * @o:   NULL for kdl_cka_opts_init()'s.
 * @ret: set on success only; caller frees with kdl_cka_matrix_free().
 *
 * Time: O((1 + B + G) L² n²); memory 2 L n² doubles and the replicates.
 * Return: as kdl_cka_gram(); -KDL_ERANGE for a level outside (0, 1).
 */
KDL_API int kdl_cka_gram_linear(const kdl_tensor *layers, size_t nlayers, const size_t *ids,
                                const kdl_cka_opts *o, kdl_cka_matrix **ret);

/**
 * kdl_cka_robust() - biased linear CKA of every pair after removing
 * outliers (Davari et al. 2023, docs/cka.md#robust-cka): for each layer, the
 * ceil(@frac * n) samples farthest from the layer mean (largest centred
 * feature norm; ties to the lower row) are outliers, and the pair (ℓ, k) is
 * computed on the samples that are outliers of neither ℓ nor k (the union is
 * removed).  In-memory, through Gram matrices, O(n²) per pair.
 * @frac: in [0, 0.5).
 * @ret: set on success only; its @biased holds the values.
 *
 * Memory: L n² doubles.
 * Return: as kdl_cka_gram(); -KDL_ERANGE for @frac.
 */
KDL_API int kdl_cka_robust(const kdl_tensor *layers, size_t nlayers, double frac,
                           kdl_cka_matrix **ret);

/* ---- Minibatch CKA ------------------------------------------------------------ */

typedef struct kdl_cka_mb_state kdl_cka_mb_state;

/**
 * kdl_cka_mb_state_new() - minibatch CKA (Nguyen, Raghu & Kornblith 2021,
 * docs/cka.md#minibatch-cka) of every pair of @nlayers layers, batch size @m.
 * Each batch adds ⟨K̄ᵢ, K̄ⱼ⟩ of the U-centred batch Grams of every pair (one
 * dsyrk of the stacked flattened Grams); since @m is fixed the factor
 * 1/(m(m-3)) cancels.  With one batch holding all samples the value equals
 * the debiased CKA.  The caller chooses the batches (e.g. a seeded shuffle).
 * It has no options: the batch size @m is a shape, with no default.
 * @ret: set on success only; caller frees with kdl_cka_mb_state_free().
 *
 * Memory: (L + 1) m² + m max D doubles.
 * Return: 0; -KDL_ERANGE if @m < 4; -KDL_ESHAPE if @nlayers or a width is 0;
 * -KDL_EOVERFLOW; -ENOMEM.
 */
KDL_API int kdl_cka_mb_state_new(size_t nlayers, const size_t *widths, size_t m,
                                 kdl_cka_mb_state **ret);

/**
 * kdl_cka_mb_accumulate() - add one batch: @batch holds @nlayers tensors
 * [m, D_ℓ] (borrowed) with exactly m rows each.
 * Return: 0; -KDL_ESHAPE; -KDL_ENONFINITE; -ENOMEM.  On failure @s is
 * unchanged.
 */
KDL_API int kdl_cka_mb_accumulate(kdl_cka_mb_state *s, const kdl_tensor *batch);

/**
 * kdl_cka_mb_merge() - add @from's batches to @into; @from unchanged.
 * Return: 0; -KDL_EMISMATCH if the layers or batch sizes differ (@into is
 * then unchanged).
 */
KDL_API int kdl_cka_mb_merge(kdl_cka_mb_state *into, const kdl_cka_mb_state *from);

/**
 * kdl_cka_mb_finalize() - the minibatch CKA matrix (its @minibatch and
 * @nbatches; @n = batches * m); @s not modified.
 * @ret: set on success only; caller frees with kdl_cka_matrix_free().
 * Return: 0; -KDL_EMISSING if no batch was added; -ENOMEM.
 */
KDL_API int kdl_cka_mb_finalize(const kdl_cka_mb_state *s, kdl_cka_matrix **ret);

/** kdl_cka_mb_state_free() - free @s.  NULL is a no-op. */
KDL_API void kdl_cka_mb_state_free(kdl_cka_mb_state *s);

/* ---- Wide layers: Gaussian sketches and column strips ------------------------------- */

typedef struct kdl_cka_sketch kdl_cka_sketch;

/**
 * kdl_cka_sketch_new() - the Gaussian sketch of a layer of width @d to @r columns
 * (KDL_CKA_LAYER_SKETCH, docs/cka.md#wide-layers): Ω [d, r] with entry (c, a) =
 * √(-2 ln u₁) cos(2π u₂), u₁ = kdl_sample_uniform(@seed, c r + a, @stream) and u₂ the same
 * at @stream + 1 (Box-Muller), so that a seed and a stream give one Ω everywhere.  The
 * layers sketched for one state need independent Ωs: streams at least 2 apart.
 * @ret: set on success only; caller frees with kdl_cka_sketch_free().
 *
 * Memory: kdl_cka_sketch_bytes(@d, @r), d r doubles.
 * Return: 0; -KDL_ESHAPE if @d or @r is 0; -KDL_EOVERFLOW; -ENOMEM.
 */
KDL_API int kdl_cka_sketch_new(size_t d, size_t r, uint64_t seed, uint64_t stream,
                               kdl_cka_sketch **ret);

/** kdl_cka_sketch_bytes() - what kdl_cka_sketch_new() holds (saturating). */
KDL_API size_t kdl_cka_sketch_bytes(size_t d, size_t r);

/**
 * kdl_cka_sketch_apply() - @out = @x Ω / √r, one BLAS-3 product.
 * @x:   [rows, d], its rows in memory order (stride 1 along them); borrowed.
 * @out: a contiguous [rows, r] tensor of the caller's.
 * Return: 0; -KDL_ESHAPE; -KDL_EOVERFLOW.
 */
KDL_API int kdl_cka_sketch_apply(const kdl_cka_sketch *k, const kdl_tensor *x, kdl_tensor *out);

/** kdl_cka_sketch_free() - free @k.  NULL is a no-op. */
KDL_API void kdl_cka_sketch_free(kdl_cka_sketch *k);

typedef struct kdl_cka_strips kdl_cka_strips;

/**
 * kdl_cka_strips_new() - the exact terms of the external pairs @pairs [L*L] (either order)
 * of layers of widths @widths and kinds @kinds (NULL: all dense; a sketched layer is not
 * allowed), in column strips over several passes (docs/cka.md#wide-layers).  The strip S
 * of a layer X holds (X[:, S])ᵀ Y [|S|, D_Y] for every external partner Y it owns (a pair
 * of dense layers is owned by the first, a pair with a one-hot layer by the dense one,
 * whose products with it are its class sums), and ‖XᵀY‖²_F is the sum over the strips of
 * their squared norms.  The layers are centred by @means (D_j values each, the exact means:
 * kdl_cka_state_mean() after an earlier pass; only the layers in an external pair are
 * read).  The first pass also sums Σᵢ s^j_i s^k_i of the external pairs and S_j.
 * @max_bytes: what one pass may hold (its products, the means, a chunk's scratch): the
 *             strips are as wide as fits.
 * @ret: set on success only; caller frees with kdl_cka_strips_free().
 * Return: 0; -KDL_EBUDGET (message recorded) when not even a strip of one column fits;
 * -KDL_ESHAPE for a pair of one-hot or sketched layers; -ENOMEM.
 */
KDL_API int kdl_cka_strips_new(size_t nlayers, const size_t *widths,
                               const enum kdl_cka_layer *kinds, const bool *pairs,
                               const double *const *means, size_t max_bytes, kdl_cka_strips **ret);

/**
 * kdl_cka_strips_plan() - from the shapes alone, what kdl_cka_strips_new() with these
 * arguments makes: the passes (strips; 0 when no pair is external, SIZE_MAX when no strip
 * fits) and the bytes it holds.
 */
KDL_API void kdl_cka_strips_plan(size_t nlayers, const size_t *widths,
                                 const enum kdl_cka_layer *kinds, const bool *pairs,
                                 size_t max_bytes, size_t *ret_passes, size_t *ret_bytes);

/** kdl_cka_strips_passes() - the passes @s needs (0 .. passes - 1). */
KDL_API size_t kdl_cka_strips_passes(const kdl_cka_strips *s);

/**
 * kdl_cka_strips_accumulate() - one block of pass @pass: @blocks as kdl_cka_accumulate()
 * takes them (every layer; a one-hot layer's [rows, 1] classes), any strides, borrowed.
 * Every pass reads every sample once, the passes in order.
 * Return: 0; -KDL_ERANGE for a class outside its layer.
 */
KDL_API int kdl_cka_strips_accumulate(kdl_cka_strips *s, size_t pass, const kdl_tensor *blocks);

/** kdl_cka_strips_pass_end() - after the last block of pass @pass: its strip's products
 * into the terms. */
KDL_API void kdl_cka_strips_pass_end(kdl_cka_strips *s, size_t pass);

/**
 * kdl_cka_strips_terms() - after every pass, the terms kdl_cka_finalize_external() takes:
 * @f, @t [L*L] and @sdiag [L], NaN where a pair (a diagonal) is not external.
 */
KDL_API void kdl_cka_strips_terms(const kdl_cka_strips *s, double *f, double *t, double *sdiag);

/** kdl_cka_strips_free() - free @s.  NULL is a no-op. */
KDL_API void kdl_cka_strips_free(kdl_cka_strips *s);

#endif
