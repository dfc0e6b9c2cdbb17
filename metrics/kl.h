/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_KL_H
#define KDL_METRICS_KL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/base/tensor.h"

/*
 * The KD criterion and the knowledge sources that approximate it
 * (docs/conventions.md#the-kd-criterion-and-the-temperature, docs/kl.md#approximations, docs/kl.md;
 * Hsu et al. 2022).
 *
 * Per sample n and temperature τ the exact reference is
 *
 *     K_n = τ² KL(p^t_τ,n || p^s_τ,n),     p_τ = softmax(z / τ),
 *
 * and every approximation A_n of docs/kl.md is computed beside it:
 *
 *   name                 per-sample value                       dim (numbers per sample)
 *   kl                   K_n (the reference)                    C
 *   logit_fisher         ½ Var_{k~p^t_τ}(z^s_k - z^t_k)          C
 *   logit_centered_l2    ‖c(z^s) - c(z^t)‖² / (2C)              C
 *   logit_l2             ‖z^s - z^t‖² / (2C)                    C
 *   prob_l2              τ² ‖p^s_τ - p^t_τ‖² / 2                C
 *   feature_l2           ‖e‖² / (2 d_t)                         d_t
 *   feature_head         ‖W_t e‖² / (2C)                        d_t
 *   gradient_fisher      ½ Var_{k~p^t_τ}([W_t e]_k)             d_t + C  (h^t and p^t_τ)
 *   gradient_empirical   ½ (g^t · e)²                           2 d_t    (h^t and g^t)
 *   gradient_logit_l2    ½ ‖g^s_z - g^t_z‖²                     C
 *
 * with e = P h^s - h^t on the head's input layer, W_t the teacher's head
 * weight [C, d_t], g^t the teacher's dumped gradient at the head input and
 * g_z the dumped logit gradients.  The "dim" is what the teacher has to
 * hand over per sample (W_t is shared by all samples and not counted).
 *
 * Numerics.  Log-probabilities come from log-sum-exp.  The KL is computed as
 * KL = log E_{p^t}[exp(v)] with v = w - E_{p^t}[w], w = (z^s - z^t)/τ, i.e.
 * KL = log1p(Σ_k p^t_k φ(v_k)) with φ(v) = e^v - 1 - v ≥ 0 (a series for
 * small |v|): every term is non-negative, so K_n ≥ 0 always, K_n = 0 exactly
 * when z^s = z^t, and a tiny KL keeps its relative accuracy (the naive
 * Σ p^t (log p^t - log p^s) loses it to cancellation at large τ).  When
 * max_k(log p^t_k + v_k) > 1 the KL is > 1 and is taken by log-sum-exp
 * instead, so logits of magnitude 100 at τ = 0.5 do not overflow.
 * Variances are two-pass (centred).  Nothing C×C or d×d is formed per
 * sample: the Fisher quadratic forms use u^T F u = Var_p(u)
 * (docs/conventions.md#the-kd-criterion-and-the-temperature).
 * Cost per sample and τ: two exponentials per class (the two softmaxes;
 * p = e/Σe), the φ of the KL, and with the head u = W_t e, C·d_t
 * multiply-adds a sample in a block GEMM, the larger part at C = 1,000,
 * d_t = 512; these, not the reading, bound the pass.
 *
 * Fidelity statistics, per temperature and approximation (docs/kl.md): mean; ratio
 * mean(A)/mean(K); Pearson correlation of A_n with K_n from streaming
 * co-moments (Chan et al.'s pairwise update, so merging is exact up to
 * rounding); relative error Σ|A_n - K_n| / Σ K_n; Spearman correlation with
 * average ranks for ties, computed in finalize on a reservoir subsample.
 *
 * The Spearman reservoir.  Ranks need the samples, so the state keeps the
 * per-sample values of at most `reservoir` samples (default 2^16): the
 * samples whose key hash(seed, sample index) is smallest ("bottom-k"
 * sampling).  That is a uniform sample without replacement, it is the whole
 * data (Spearman exact) when N <= reservoir, and because the key depends only
 * on the sample index, merging states built on disjoint sample ranges gives
 * exactly the reservoir of one sequential pass.  Memory: reservoir × ntau ×
 * 10 doubles at most (21 MB for 2^16 samples and 4 temperatures), grown as
 * samples arrive.  The result says how many samples the Spearman values use.
 *
 * The projector P (student width d_s -> teacher width d_t).  When d_s == d_t,
 * P is the identity.  Otherwise P is the affine least-squares map
 * P h = A h + b fitted on the same samples in a first pass
 * (kdl_kl_proj_*): A minimises Σ_n ‖A (h^s_n - μ_s) - (h^t_n - μ_t)‖² (the
 * intercept b = μ_t - A μ_s is what centring gives), from the streaming
 * centred moments M_ss = Σ s_c s_cᵀ [d_s×d_s] and M_st = Σ s_c t_cᵀ
 * [d_s×d_t].  A = M_stᵀ M_ss⁺ by a symmetric eigendecomposition of M_ss
 * (LAPACK dsyevd); eigenvalues below d_s · DBL_EPSILON · λ_max are dropped,
 * which gives the minimum-norm least-squares solution when M_ss is singular
 * (no ridge, no arbitrary λ) and the plain solution otherwise.  The rank used
 * is reported.  The second pass (kdl_kl_accumulate) then sees P.
 *
 * The KL-visible share (docs/kl.md, docs/dims.md#directions-the-kl-cannot-see): Σ_n ‖Q Qᵀ e_n‖² /
 * Σ_n ‖e_n‖², with Q an orthonormal basis of the row space of W_t from an SVD of W_t taken once in
 * kdl_kl_state_new() (rank: singular values above max(C, d_t) · DBL_EPSILON · σ_max, as numpy's
 * matrix_rank).  It is 1 when W_t has full column rank (d_t <= C).
 *
 * Memory of a state: O(ntau + C·d_t + d_s·d_t) plus the reservoir and a
 * scratch that grows to the largest block passed to kdl_kl_accumulate()
 * (block rows × (ntau·10 + d_t + C + rank W_t, + d_s when P is fitted));
 * independent of N.
 */

/* The exact reference and the approximations, in output order. */
enum kdl_kl_value {
        KDL_KL_EXACT,              /* "kl" */
        KDL_KL_LOGIT_FISHER,       /* "logit_fisher" */
        KDL_KL_LOGIT_CENTERED_L2,  /* "logit_centered_l2" */
        KDL_KL_LOGIT_L2,           /* "logit_l2" */
        KDL_KL_PROB_L2,            /* "prob_l2" */
        KDL_KL_FEATURE_L2,         /* "feature_l2" */
        KDL_KL_FEATURE_HEAD,       /* "feature_head" */
        KDL_KL_GRADIENT_FISHER,    /* "gradient_fisher" */
        KDL_KL_GRADIENT_EMPIRICAL, /* "gradient_empirical" */
        KDL_KL_GRADIENT_LOGIT_L2,  /* "gradient_logit_l2" */
        KDL_KL_VALUE_COUNT_
};

/* The Spearman reservoir kdl_kl_opts_init() sets (samples). */
#define KDL_KL_RESERVOIR_DEFAULT ((size_t) 1 << 16)

/** kdl_kl_name() - the docs/kl.md name of @v ("kl" for the exact value). */
KDL_API const char *kdl_kl_name(enum kdl_kl_value v);

/** kdl_kl_source() - "logits", "probabilities", "features" or "gradients". */
KDL_API const char *kdl_kl_source(enum kdl_kl_value v);

/**
 * kdl_kl_dim() - numbers per sample the source of @v needs (the table
 * above) for @c classes and teacher head-input width @d_t.
 */
KDL_API size_t kdl_kl_dim(enum kdl_kl_value v, size_t c, size_t d_t);

/* ---- Pass 1: the least-squares projector ---------------------------------- */

typedef struct kdl_kl_proj_state kdl_kl_proj_state;

/*
 * The map P h = h·pt + b applied to a student feature row h (a row vector of
 * d_s numbers): pt is Aᵀ, [d_s, d_t] row-major.  Heap object; free with
 * kdl_kl_projector_free().
 */
typedef struct kdl_kl_projector {
        size_t d_s, d_t;
        bool fitted; /* false: the identity (d_s == d_t), pt and b are NULL */
        double *pt;  /* [d_s, d_t] row-major */
        double *b;   /* [d_t] */
        size_t n;    /* samples fitted on */
        size_t rank; /* eigenvalues of M_ss kept (d_s when well-posed) */
        double r2;   /* 1 - SSE/SST pooled over the d_t outputs (closed form, pass 1) */
} kdl_kl_projector;

/**
 * kdl_kl_proj_state_new() - an empty projector fit from width @d_s to @d_t.
 * @ret: set on success only; caller frees with kdl_kl_proj_state_free().
 * Memory: O(d_s² + d_s·d_t) plus a scratch grown to the largest block.
 * Return: 0; -KDL_ESHAPE if a width is 0; -KDL_EOVERFLOW; -ENOMEM.
 */
KDL_API int kdl_kl_proj_state_new(size_t d_s, size_t d_t, kdl_kl_proj_state **ret);

/**
 * kdl_kl_proj_accumulate() - add the samples of one row block.
 * @hs: student head-input features [m, d_s], borrowed, any strides.
 * @ht: teacher head-input features [m, d_t], same m.
 *
 * On failure @s is unchanged.
 * Return: 0; -KDL_ESHAPE on a shape mismatch; -KDL_ENONFINITE (naming the row
 * within the block) on NaN/Inf; -KDL_EOVERFLOW; -ENOMEM.
 */
KDL_API int kdl_kl_proj_accumulate(kdl_kl_proj_state *s, const kdl_tensor *hs,
                                   const kdl_tensor *ht);

/**
 * kdl_kl_proj_merge() - add the samples of @from to @into (Chan's pairwise
 * update of the centred moments; equal to sequential accumulation up to
 * rounding).  @from unchanged; on failure @into is unchanged.
 * Return: 0; -KDL_EMISMATCH if the widths differ; -ENOMEM.
 */
KDL_API int kdl_kl_proj_merge(kdl_kl_proj_state *into, const kdl_kl_proj_state *from);

/**
 * kdl_kl_proj_finalize() - solve for P (see the header comment).
 * @ret: set on success only; caller frees with kdl_kl_projector_free().
 * Return: 0; -KDL_EMISSING if no sample was accumulated; -KDL_ESHAPE with
 * a single sample; -KDL_ESINGULAR when the
 * student features have no variance at all; -KDL_ENOCONV if the
 * eigensolver fails; -ENOMEM.
 */
KDL_API int kdl_kl_proj_finalize(const kdl_kl_proj_state *s, kdl_kl_projector **ret);

/** kdl_kl_proj_state_free() - free @s.  NULL is a no-op. */
KDL_API void kdl_kl_proj_state_free(kdl_kl_proj_state *s);

/** kdl_kl_projector_free() - free @p.  NULL is a no-op. */
KDL_API void kdl_kl_projector_free(kdl_kl_projector *p);

/* ---- Pass 2: the per-sample values and their fidelity --------------------- */

typedef struct kdl_kl_state kdl_kl_state;

/*
 * What the blocks will carry.  kdl_kl_opts_init() sets every default (the
 * reservoir and seed below, no features, no head, no gradients, no
 * projector); the caller then sets at least c, ntau and tau.  Everything is
 * copied by kdl_kl_state_new(); nothing needs to outlive the call.
 */
typedef struct kdl_kl_opts {
        size_t c;                     /* classes, >= 2 */
        size_t ntau;                  /* >= 1 */
        const double *tau;            /* [ntau] temperatures, finite and > 0 */
        size_t d_s, d_t;              /* head-input widths; both 0: no features */
        const kdl_tensor *w_t;        /* teacher head weight [c, d_t], or NULL */
        const kdl_kl_projector *proj; /* fitted P, required iff d_s != d_t; NULL: identity */
        bool grad_feature;            /* blocks carry g^t [m, d_t] (needs features) */
        bool grad_logits;             /* blocks carry g^s_z and g^t_z [m, c] */
        size_t reservoir;             /* Spearman reservoir cap, >= 1 (KDL_KL_RESERVOIR_DEFAULT) */
        uint64_t seed;                /* reservoir keys (0) */
} kdl_kl_opts;

/** kdl_kl_opts_init() - the defaults above; the shape fields 0 and NULL. */
KDL_API void kdl_kl_opts_init(kdl_kl_opts *o);

/*
 * One row block of m aligned samples.  Tensors are borrowed, 2-D, any
 * strides; the ones the options did not announce must be NULL.
 */
typedef struct kdl_kl_block {
        size_t row0;               /* index of the block's first sample, when @samples is NULL */
        const size_t *samples;     /* [m] index of each sample, or NULL for row0 + i; indices
                                      must be distinct over everything merged (reservoir keys) */
        const kdl_tensor *zt, *zs; /* teacher and student logits [m, c]: required */
        const kdl_tensor *ht, *hs; /* head-input features [m, d_t], [m, d_s]: iff d_t > 0 */
        const kdl_tensor *gt;      /* teacher dL/dh at the head input [m, d_t]: iff grad_feature */
        const kdl_tensor *gzt;     /* teacher dL/dz [m, c]: iff grad_logits */
        const kdl_tensor *gzs;     /* student dL/dz [m, c]: iff grad_logits */
} kdl_kl_block;

/* The fidelity of one value at one temperature. */
typedef struct kdl_kl_fidelity {
        bool available;  /* the data it needs were given (always true for logit values) */
        size_t dim;      /* numbers per sample the source needs (table above) */
        double mean;     /* mean over samples */
        double ratio;    /* mean(A) / mean(K); NaN when mean(K) == 0 */
        double pearson;  /* NaN when A or K has no variance */
        double spearman; /* on the reservoir; NaN when ranks have no variance */
        double relerr;   /* Σ|A - K| / Σ K; NaN when Σ K == 0 */
} kdl_kl_fidelity;

typedef struct kdl_kl_tau {
        double tau;
        kdl_kl_fidelity v[KDL_KL_VALUE_COUNT_]; /* v[KDL_KL_EXACT] describes K itself */
} kdl_kl_tau;

/* Heap object; free with kdl_kl_result_free(). */
typedef struct kdl_kl_result {
        size_t n; /* samples */
        size_t c, d_s, d_t;
        size_t ntau;
        kdl_kl_tau *tau;       /* [ntau], in the order of the options */
        size_t spearman_n;     /* samples in the reservoir */
        bool spearman_exact;   /* spearman_n == n */
        bool features;         /* the feature fields below are set */
        bool projector_fitted; /* false: P = I */
        size_t projector_rank; /* as kdl_kl_projector.rank; d_s for the identity */
        double r2;             /* 1 - Σ‖P h^s - h^t‖² / Σ‖h^t - mean h^t‖² (pass 2) */
        double feature_sq;     /* mean ‖P h^s - h^t‖² */
        bool head;             /* W_t was given: head_rank and visible_share are set */
        size_t head_rank;      /* numerical rank of W_t */
        double visible_share;  /* KL-visible share; NaN when Σ‖e‖² == 0 */
} kdl_kl_result;

/**
 * kdl_kl_state_new() - an empty state for blocks described by @o.
 * @o:   borrowed; start from kdl_kl_opts_init().
 * @ret: set on success only; caller frees with kdl_kl_state_free().
 *
 * Takes the SVD of W_t (when given) once, here.
 * Return: 0; -KDL_ESHAPE (C < 2, ntau == 0, W_t not [c, d_t], a projector of
 * the wrong widths, d_s != d_t without a fitted projector, grad_feature
 * without features); -KDL_ERANGE for a temperature that is not finite and
 * > 0, or a reservoir of 0; -KDL_ENONFINITE for NaN/Inf in W_t;
 * -KDL_ENOCONV if the SVD fails; -KDL_EOVERFLOW; -ENOMEM.
 */
KDL_API int kdl_kl_state_new(const kdl_kl_opts *o, kdl_kl_state **ret);

/**
 * kdl_kl_accumulate() - compute the per-sample values of @b and add them.
 *
 * All inputs are checked before anything is added (the C-wide ones through
 * the values they give); on failure the statistics and the reservoir of @s
 * are unchanged, but the per-sample values of the previous block may be lost
 * (kdl_kl_values() then returns NULL).
 * Return: 0; -KDL_ESHAPE if a tensor is missing, unannounced, not 2-D or of
 * the wrong size; -KDL_ENONFINITE naming the input and sample index
 * on NaN/Inf in the input, or a value that overflowed; -KDL_EOVERFLOW;
 * -ENOMEM.
 */
KDL_API int kdl_kl_accumulate(kdl_kl_state *s, const kdl_kl_block *b);

/**
 * kdl_kl_values() - the per-sample values of the last block accumulated (for
 * per-sample output): @m doubles for temperature @itau and value @v, or NULL
 * if @v is unavailable or no block was accumulated.  Borrowed; valid until
 * the next call on @s.  τ-independent values are repeated for every @itau.
 */
KDL_API const double *kdl_kl_values(const kdl_kl_state *s, size_t itau, enum kdl_kl_value v,
                                    size_t *ret_m);

/**
 * kdl_kl_merge() - add the samples of @from to @into.  Exact up to rounding;
 * the reservoir is exactly that of sequential accumulation.  @from
 * unchanged; on failure @into is unchanged.
 * Return: 0; -KDL_EMISMATCH if the states were made with different options
 * (or shapes); -ENOMEM.
 */
KDL_API int kdl_kl_merge(kdl_kl_state *into, const kdl_kl_state *from);

/**
 * kdl_kl_finalize() - the fidelity statistics (ranks of the reservoir here).
 * @s:   not modified.
 * @ret: set on success only; caller frees with kdl_kl_result_free().
 * Return: 0; -KDL_EMISSING if no sample was accumulated; -ENOMEM.
 */
KDL_API int kdl_kl_finalize(const kdl_kl_state *s, kdl_kl_result **ret);

/** kdl_kl_result_free() - free @r.  NULL is a no-op. */
KDL_API void kdl_kl_result_free(kdl_kl_result *r);

/*
 * The states as bytes, for the processes of one MPI run (analysis/dist.h):
 * the sums, the comoments and the reservoir's items (its keys, sample
 * indices and values), in host layout, readable by the same build only.
 * A packed state is O(ntau·NV + d_t + reservoir·(2 + ntau·NV)) doubles; a
 * packed projector state O(d_s² + d_s·d_t).
 *
 * kdl_kl_state_pack() / kdl_kl_proj_state_pack() - @s as bytes; *@buf
 * malloc'd, the caller frees.  Return: 0; -ENOMEM.
 * kdl_kl_state_merge_packed() / kdl_kl_proj_state_merge_packed() - add the
 * samples of a packed state (made with the same options) to @s, as
 * kdl_kl_merge() / kdl_kl_proj_merge().
 * kdl_kl_proj_state_load_packed() - @s becomes the packed state.
 * Return: 0; -KDL_ESCHEMA when @len is not a packed state's; -ENOMEM; the
 * codes of the merges.
 */
KDL_API int kdl_kl_state_pack(const kdl_kl_state *s, void **buf, size_t *len);
KDL_API int kdl_kl_state_merge_packed(kdl_kl_state *s, const void *buf, size_t len);
KDL_API int kdl_kl_proj_state_pack(const kdl_kl_proj_state *s, void **buf, size_t *len);
KDL_API int kdl_kl_proj_state_merge_packed(kdl_kl_proj_state *s, const void *buf, size_t len);
KDL_API int kdl_kl_proj_state_load_packed(kdl_kl_proj_state *s, const void *buf, size_t len);

/** kdl_kl_state_free() - free @s.  NULL is a no-op. */
KDL_API void kdl_kl_state_free(kdl_kl_state *s);

#endif
