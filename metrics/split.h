/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_SPLIT_H
#define KDL_METRICS_SPLIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/base/tensor.h"

/*
 * Knowledge splits (docs/split.md#universe-domain-and-instance-knowledge,
 * docs/split.md#the-aekt-weight, docs/split.md#explicit-and-implicit-knowledge, docs/split.md):
 * what kind of knowledge a teacher's soft labels carry, per sample and per temperature.
 *
 * Explicit vs implicit (DKD, AEKT):
 *   KL   = τ² KL(p^t_τ || p^s_τ)
 *   TCKD = τ² KL(b^t || b^s),  b = [p_y, 1 - p_y]
 *   NCKD = τ² KL(p̂^t || p̂^s),  p̂ the softmax over the C-1 non-target classes
 *   KL = TCKD + (1 - p^t_y) NCKD exactly (docs/split.md#explicit-and-implicit-knowledge); every
 * KL-type quantity carries the factor τ², as mdistiller does
 * (docs/conventions.md#the-kd-criterion-and-the-temperature, docs/split.md#numerics). The
 * non-target softmax is computed by exact exclusion (log-sum-exp over j != y), never by masking.
 *   Precision.  The three KLs are the kl metric's exact KL
 *   log E_p[e^v] = log1p(Σ p_k φ(v_k)), φ(v) = e^v - 1 - v, with v the
 *   centred logit difference (metrics/kl.h), so that KL here equals
 *   kdlens kl's to the last bit.  The target enters through its log-odds
 *   d = z_y/τ - LSE_{k≠y}(z_k/τ): log p_y = -log1p(e^{-d}),
 *   log(1 - p_y) = -log1p(e^{d}), and d^s - d^t from the logit differences;
 *   TCKD is the same exact KL on the two classes [y, rest].  So every value
 *   keeps its relative precision (about 1e-14) when both models are
 *   near-certain (KL ~ 1e-15), and a certain teacher (p^t_y == 1 in double)
 *   gives finite values.
 *   Cost per sample and τ: the first pass takes one exponential per class
 *   (the teacher's softmax, whose exponentials the non-target softmax
 *   reuses), plus the φ of the two KLs (a polynomial where |v| < 0.1); the
 *   second pass two (the log-odds of teacher and student).  That work, not
 *   the reading, bounds both passes.
 *   AEKT weight ω = clip(p^t_y / p^s_y, 0, ω_max), computed as
 *   exp(min(log p^t_y - log p^s_y, log ω_max)) so that p^s_y -> 0 is safe.
 *
 * Tang et al. levels (docs/split.md#universe-domain-and-instance-knowledge):
 *   universe: ε_n = λ (1 - p^t_y) C/(C-1), the label-smoothing equivalent of
 *             the KD target (docs/split.md#universe-label-smoothing), and H(p̂^t)/ln(C-1), the
 * teacher's non-target entropy relative to its maximum (1 = the non-target mass is spread
 * uniformly, pure label smoothing; defined as 1 for C = 2, where the single non-target class is
 * trivially uniform); domain:   the teacher's soft confusion matrix M_ij = mean_{n: y_n = i}
 * p^t_{τ,j}(x_n)   (C x C), the head-weight cosine matrices S_ij = cos(w_i, w_j) of teacher and
 * student, and their agreement: Pearson correlation of the pairs i < j of (M + M^T)/2 with S^s (and
 * with S^t), of S^t with S^s, and linear CKA of W_t and W_s with the classes as examples
 *             (docs/split.md#domain-class-relations, a kdlens proposal);
 *   instance: w_n = (1 - q_y - λ(1 - p^t_y)) / max(1 - q_y - λ(1 - p̄^t_y), eps_w)
 *             (docs/split.md#instance-rescaling-weights), its distribution (median and quartiles,
 * the count of w_n <= 0 and of floored denominators; mean and spread, which a few floored
 * denominators can dominate) and its Pearson correlation with p^t_y.  The numerator is in [-1, 1]
 * and the denominator at least eps_w, so |w_n| <= 1/eps_w.
 *
 * Temperature.  Every quantity is computed from the tempered distributions
 * p^t_τ = softmax(z^t/τ), q = p^s_τ = softmax(z^s/τ), for each τ of the
 * options.  docs/split.md#universe-label-smoothing, docs/split.md#instance-rescaling-weights are
 * derived at τ = 1; at τ != 1 kdlens applies the same formulas to the tempered distributions, which
 * is exact for the objective (1-λ) CE(e_y, q_τ) + λ CE(p^t_τ, q_τ) (both terms on the tempered
 * student).  Include τ = 1 to get docs/split.md#universe-label-smoothing,
 * docs/split.md#instance-rescaling-weights literally.
 *
 * Streaming and the two passes.  kdl_split_state holds sums, per-class sums
 * (the C x C matrix M per τ, in the full domain mode only: see "The domain
 * level at large C" below) and fixed-bin histograms: memory
 * O(ntaus (C² + nbins)), independent of N, and merge is exact (sums; max;
 * Chan et al.'s pairwise update for variances).  The weight w_n needs the
 * mean teacher confidence p̄^t_y of the whole data first, and its mean,
 * spread, quantiles and correlation are not functions of any finite set of
 * sums that could be collected before p̄^t_y is known (w_n is a ratio whose
 * denominator moves with p̄^t_y).  So w_n is a second pass: after the first
 * pass is complete (and merged), kdl_split_instance_state_new() takes p̄^t_y
 * from it, and the same logits are accumulated again into the instance
 * state.  The second pass reads only logits and labels.  p̄^t_y is an
 * exact sum (of p^t_y truncated to units of 2^-63, in 128 bits) over the
 * count, so it is the same to the last bit however the samples were
 * grouped and merged, and so are w_n and its histogram.
 *
 * Distributions.  Quantiles come from fixed-bin histograms, which merge
 * exactly (counts add):
 *   - probabilities and other bounded values: opts.nbins equal bins on their
 *     range ([0,1] for p^t_y, p^s_y, the gap and the relative entropy;
 *     [0, ω_max] for ω; [0, λC/(C-1)] for ε_n);
 *   - w_n (either sign), symmetric log bins: with L = KDL_SPLIT_W_LOG2_MIN,
 *     H = KDL_SPLIT_W_LOG2_MAX and B = KDL_SPLIT_W_BINS, in increasing order
 *     one bin for w < -2^H, B bins equal in log2|w| for -2^H <= w <= -2^L,
 *     one bin for -2^L < w < 2^L, B bins equal in log2 w for 2^L <= w < 2^H,
 *     and one for w >= 2^H: KDL_SPLIT_W_SLOTS in all.  A log bin is
 *     1/64 octave wide, a factor 2^(1/64) = 1.011.
 * A quantile at level q is the value at rank q*n of the histogram's CDF,
 * interpolated linearly within its bin, then clamped to the exact [min, max]
 * (kdl_quantile_hist()).  The exact order statistic of rank ceil(q*n) lies
 * in the same bin, so the error is at most one bin width: 1/nbins of the
 * range for the bounded values; for w_n a relative error below
 * 2^(1/64) - 1 = 1.09 % where |w| >= 2^L, an absolute one below
 * 2^(L+1) = 3.1e-5 nearer 0, and no bound in the two outer bins, which stay
 * empty while eps_w > 2^-H (|w_n| <= 1/eps_w).  Means, standard deviations
 * (population, divided by n), minima, maxima, correlations and counts are
 * exact.
 *
 * The domain level at large C.  The full mode (KDL_SPLIT_DOMAIN_FULL) holds
 * M per τ in the state and forms M and S^t, S^s as C x C matrices at
 * finalize.  The blocked mode (KDL_SPLIT_DOMAIN_BLOCKED) computes the same
 * values without any C x C matrix:
 *   - pearson_confusion_*: the classes are cut into blocks I = [s, e), one
 *     per pass over the teacher's logits (kdl_split_blocks).  In its pass a
 *     block sums p^t over the samples of its classes for the columns j >= s
 *     (rows of A = Σ_{n: y_n = i} p^t(x_n)) and, over the samples of the
 *     classes j >= e, its own columns: so it holds A_ij and A_ji for every
 *     pair with min(i, j) in I, each unordered pair in exactly one block
 *     (memory 2b(C - s) - b² doubles per τ for b classes).  At the end of
 *     the block, (M + M^T)/2 = (A_ij/n_i + A_ji/n_j)/2 is formed for its
 *     pairs i < j and S for the same pairs from the head rows (a BLAS
 *     product of row chunks), and their co-moments merged (Chan et al.).
 *     The values are the full mode's up to the order of summation; A is
 *     summed in the same order and M is bit-identical.
 *   - pearson_heads from traces: over the pairs i < j, with ŵ the rows
 *     scaled to unit norm (norm floored at cos_eps), a_i = |ŵ_i|²,
 *       Σ S^t_ij = (|Σ_i ŵt_i|² - Σ a^t_i) / 2,
 *       Σ S^t_ij² = (|Ŵ_tᵀ Ŵ_t|²_F - Σ (a^t_i)²) / 2,
 *       Σ S^t_ij S^s_ij = (|Ŵ_tᵀ Ŵ_s|²_F - Σ a^t_i a^s_i) / 2,
 *     d x d products accumulated over row chunks;
 *   - cka_heads in feature space (the cka metric's streaming state, whose
 *     linear value equals the Gram form's).
 *   - the confused pairs (both modes): the opts.top_pairs ordered pairs
 *     (i, j), i != j, n_i > 0, of the largest soft count A_ij, ties by the
 *     smaller i then j; exact, since every A_ij is formed once (in one
 *     block) and a heap keeps the best.
 * kdl_split_plan_init() chooses the mode and the blocks from a byte budget
 * (opts.memory) and says how much memory either needs.
 */

/* Quantile levels reported for every distribution. */
#define KDL_SPLIT_NQUANTILES 5
KDL_API extern const double
        kdl_split_quantile_levels[KDL_SPLIT_NQUANTILES]; /* .05 .25 .5 .75 .95 */

/* The signed log2 histogram of w_n: KDL_SPLIT_W_BINS bins per sign on
 * 2^KDL_SPLIT_W_LOG2_MIN <= |w| < 2^KDL_SPLIT_W_LOG2_MAX (64 per octave). */
#define KDL_SPLIT_W_LOG2_MIN (-16)
#define KDL_SPLIT_W_LOG2_MAX 16
#define KDL_SPLIT_W_BINS     2048
#define KDL_SPLIT_W_SLOTS    (2 * KDL_SPLIT_W_BINS + 3)

/* Defaults of kdl_split_opts_init(). */
#define KDL_SPLIT_DEFAULT_TAU          4.0  /* mdistiller's T */
#define KDL_SPLIT_DEFAULT_LAMBDA       0.9  /* mdistiller's KD weight (cfg.py) */
#define KDL_SPLIT_DEFAULT_OMEGA_MAX    10.0 /* kdlens's choice; AEKT's is not known */
#define KDL_SPLIT_DEFAULT_W_EPS        1e-3 /* guard on the w_n denominator (docs/split.md#numerics) */
#define KDL_SPLIT_DEFAULT_COS_EPS      1e-12 /* floor on head-row norms (docs/split.md#numerics) */
#define KDL_SPLIT_DEFAULT_NBINS        1000
#define KDL_SPLIT_DEFAULT_DOMAIN_MAX_C ((size_t) 4096) /* largest C of the full mode (auto) */
#define KDL_SPLIT_DEFAULT_TOP_PAIRS    ((size_t) 100)
#define KDL_SPLIT_DEFAULT_MEMORY       ((size_t) 4 << 30) /* bytes: 4 GiB */

/* The most blocks (passes over the data) of the blocked domain mode. */
#define KDL_SPLIT_MAX_BLOCKS 8

/* How the domain level is computed (see "The domain level at large C"). */
enum kdl_split_domain {
        KDL_SPLIT_DOMAIN_AUTO,    /* "auto": full when C <= domain_max_c and it fits
                                     memory, else blocked */
        KDL_SPLIT_DOMAIN_FULL,    /* "full": the C x C matrices */
        KDL_SPLIT_DOMAIN_BLOCKED, /* "blocked": blocks of classes, no C x C matrix */
        KDL_SPLIT_DOMAIN_OFF,     /* "off": no domain level */
        KDL_SPLIT_DOMAIN_COUNT_
};

/** kdl_split_domain_name() - "auto", "full", "blocked" or "off". */
KDL_API const char *kdl_split_domain_name(enum kdl_split_domain d);

/** kdl_split_domain_parse() - the mode named @s; -KDL_EUSAGE (message recorded) otherwise. */
KDL_API int kdl_split_domain_parse(const char *s, enum kdl_split_domain *ret);

#define KDL_SPLIT_MAX_TAUS      16
#define KDL_SPLIT_MAX_TOP_PAIRS ((size_t) 1 << 20) /* the most top_pairs */

/* Options; copied into the state.  kdl_split_opts_init() sets every
 * default (the KDL_SPLIT_DEFAULT_* values above). */
typedef struct kdl_split_opts {
        size_t ntaus;                    /* 1..KDL_SPLIT_MAX_TAUS */
        double taus[KDL_SPLIT_MAX_TAUS]; /* each finite and > 0 */
        double lambda;                   /* KD weight λ in [0, 1] (ε_n, w_n) */
        double omega_max;                /* AEKT clip, > 0 */
        double w_eps;                    /* > 0 */
        double cos_eps;                  /* > 0 */
        size_t nbins;                    /* bins of the bounded histograms, >= 1 */
        enum kdl_split_domain domain;    /* the domain level's mode */
        size_t domain_max_c;             /* auto: the full mode up to this C */
        size_t top_pairs;                /* confused pairs kept per τ (0: none) */
        size_t memory;                   /* bytes the metric may hold (kdl_split_plan_init()) */
} kdl_split_opts;

/** kdl_split_opts_init() - the defaults above, with the single τ = 4: the
 * only source of defaults (no field means "default" when zero). */
KDL_API void kdl_split_opts_init(kdl_split_opts *o);

/* ---- Per sample ----------------------------------------------------------- */

/* One sample at one τ.  KL-type fields include τ². */
typedef struct kdl_split_sample {
        double kl;          /* τ² KL(p^t || p^s) */
        double tckd;        /* τ² KL(b^t || b^s) */
        double nckd;        /* τ² KL(p̂^t || p̂^s), exact exclusion */
        double residual;    /* kl - tckd - (1 - pt_y) nckd, signed */
        double pt_y, ps_y;  /* target confidences p^t_y, p^s_y */
        double pt_rest;     /* 1 - p^t_y, from the log domain (exact near p^t_y = 1) */
        double gap;         /* |p^t_y - p^s_y| */
        double omega;       /* clip(p^t_y / p^s_y, 0, ω_max) */
        bool omega_clipped; /* p^t_y / p^s_y > ω_max */
        double eps;         /* λ (1 - p^t_y) C/(C-1) */
        double nt_entropy;  /* H(p̂^t) / ln(C-1); 1 for C = 2 */
} kdl_split_sample;

/* Doubles of scratch kdl_split_eval() needs for @c classes. */
#define KDL_SPLIT_EVAL_WORK(c) (6 * (size_t) (c))

/**
 * kdl_split_eval() - the split quantities of one sample.
 * @zt, @zs: teacher and student logits, @c entries each (borrowed), finite.
 * @c:       classes, >= 2.
 * @y:       the label, < @c.
 * @tau:     temperature, > 0.
 * @o:       λ and ω_max are used.
 * @work:    KDL_SPLIT_EVAL_WORK(@c) doubles of scratch (the caller's; any
 *           contents, overwritten).
 * @ret:     set on success only.
 *
 * Return: 0; -KDL_ESHAPE if @c < 2; -KDL_ERANGE if @y >= @c or @tau is not
 * finite and positive; -KDL_ENONFINITE if a logit is NaN/Inf.
 */
KDL_API int kdl_split_eval(const double *zt, const double *zs, size_t c, size_t y, double tau,
                           const kdl_split_opts *o, double *work, kdl_split_sample *ret);

/**
 * kdl_split_nckd_masked() - NCKD as mdistiller computes it (docs/split.md#numerics): subtract
 * 1000 from the target logit after dividing by τ, then τ² KL over all C
 * classes.  For comparison with the exact NCKD only; it assumes
 * |z/τ| << 1000.  Arguments as kdl_split_eval().
 * Return: as kdl_split_eval(); *@ret set on success only.
 */
KDL_API int kdl_split_nckd_masked(const double *zt, const double *zs, size_t c, size_t y,
                                  double tau, double *ret);

/**
 * kdl_split_weight() - Tang et al.'s rescaling weight w_n
 * (docs/split.md#instance-rescaling-weights): (1 - q_y - λ(1 - pt_y)) / max(1 - q_y - λ(1 -
 * pt_mean), eps).
 * @pt_rest:  1 - p^t_y of the sample.
 * @qs_rest:  1 - q_y (student, same τ).
 * @pt_mean:  p̄^t_y, the mean teacher confidence of the data.
 * @ret_guarded: if not NULL, set to whether the denominator was raised to @eps.
 * Return: w_n.
 */
KDL_API double kdl_split_weight(double pt_rest, double qs_rest, double pt_mean, double lambda,
                                double eps, bool *ret_guarded);

/* ---- Streaming state: pass 1 ---------------------------------------------- */

typedef struct kdl_split_state kdl_split_state;

/**
 * kdl_split_state_new() - an empty first-pass state.
 * @c:   classes, >= 2.
 * @o:   copied; start from kdl_split_opts_init().
 * @ret: set on success only; caller frees with kdl_split_state_free().
 *
 * The domain mode auto is resolved here, by kdl_split_plan_init() without
 * heads (callers with heads resolve it first, with their widths); the
 * state's options hold the resolved mode.
 *
 * Memory: O(ntaus (C² + nbins)) doubles in the full domain mode,
 * O(C + ntaus nbins) otherwise.
 * Return: 0; -KDL_ESHAPE if @c < 2; -KDL_ERANGE for an option out of range
 * (message names it) or a full domain mode over @o->memory; -KDL_EOVERFLOW;
 * -ENOMEM.
 */
KDL_API int kdl_split_state_new(size_t c, const kdl_split_opts *o, kdl_split_state **ret);

/** kdl_split_state_free() - free @s.  NULL is a no-op. */
KDL_API void kdl_split_state_free(kdl_split_state *s);

/**
 * kdl_split_accumulate() - add a block of samples.
 * @zt, @zs:  teacher and student logits, [rows, C] each (any strides; borrowed).
 * @labels:   rows labels (borrowed).
 *
 * The whole block is checked before anything is added, so on failure @s is
 * unchanged.  Messages name the row within the block.
 * Return: 0; -KDL_ESHAPE if a block is not 2-D, their row counts differ or
 * their widths are not C; -KDL_ERANGE for a label outside [0, C);
 * -KDL_ENONFINITE for a NaN/Inf logit.
 */
KDL_API int kdl_split_accumulate(kdl_split_state *s, const kdl_tensor *zt, const kdl_tensor *zs,
                                 const int64_t *labels);

/**
 * kdl_split_merge() - add the samples of @from to @into (exact: sums,
 * counts, maxima, pairwise variance updates).  @from unchanged.
 * Return: 0; -KDL_EMISMATCH if C or the options differ (@into unchanged).
 */
KDL_API int kdl_split_merge(kdl_split_state *into, const kdl_split_state *from);

/** kdl_split_state_count() - samples accumulated so far. */
KDL_API size_t kdl_split_state_count(const kdl_split_state *s);

/* ---- Streaming state: pass 2 (instance weights) --------------------------- */

typedef struct kdl_split_instance_state kdl_split_instance_state;

/**
 * kdl_split_instance_state_new() - an empty second-pass state whose p̄^t_y
 * (per τ) is the mean teacher confidence of the complete first pass @pass1.
 * Accumulate the same samples again; the order and blocking may differ.
 * @ret: set on success only; caller frees with kdl_split_instance_state_free().
 * Return: 0; -KDL_EMISSING if @pass1 holds no samples; -ENOMEM.
 */
KDL_API int kdl_split_instance_state_new(const kdl_split_state *pass1,
                                         kdl_split_instance_state **ret);

/** kdl_split_instance_state_free() - free @s.  NULL is a no-op. */
KDL_API void kdl_split_instance_state_free(kdl_split_instance_state *s);

/**
 * kdl_split_instance_accumulate() - add a block to the second pass; as
 * kdl_split_accumulate().
 * @ret_w: if not NULL, rows * ntaus doubles receive w_n, row-major
 *         (sample, τ), for per-sample output; written only on success.
 */
KDL_API int kdl_split_instance_accumulate(kdl_split_instance_state *s, const kdl_tensor *zt,
                                          const kdl_tensor *zs, const int64_t *labels,
                                          double *ret_w);

/**
 * kdl_split_instance_merge() - as kdl_split_merge(); both states must come
 * from the same first pass (same p̄^t_y), else -KDL_EMISMATCH (@into
 * unchanged).
 */
KDL_API int kdl_split_instance_merge(kdl_split_instance_state *into,
                                     const kdl_split_instance_state *from);

/* ---- Memory plan and the blocked domain level ------------------------------ */

/* What the options ask for, and the memory it takes. */
typedef struct kdl_split_plan {
        enum kdl_split_domain domain; /* full, blocked or off: the mode auto resolves to */
        size_t nblocks;               /* blocked: blocks of classes (passes over the data) */
        size_t bytes;                 /* the most the metric holds at once: the states, the
                                         blocks, finalize and its result */
        size_t least_bytes;           /* the smallest opts.memory with which @domain fits
                                         (blocked: in KDL_SPLIT_MAX_BLOCKS blocks at most);
                                         SIZE_MAX when none does */
        bool fits;                    /* bytes <= opts.memory */
} kdl_split_plan;

/**
 * kdl_split_plan_init() - the domain mode, blocks and memory of the split
 * metric for @c classes, head widths @d_teacher and @d_student (0: that
 * head is absent) and the options @o (its memory the budget).  Auto is the
 * full mode when @c <= @o->domain_max_c and it fits, else the blocked mode.
 * The blocked mode takes the largest blocks the budget allows, so its
 * bytes are near the budget.  The head weights themselves and the caller's
 * read buffers are not counted.
 * @ret: always set.
 * Return: 0; -KDL_ESHAPE if @c < 2; -KDL_ERANGE for an option out of range.
 * A plan that does not fit is not an error here (@ret->fits is false).
 */
KDL_API int kdl_split_plan_init(kdl_split_plan *ret, size_t c, size_t d_teacher, size_t d_student,
                                const kdl_split_opts *o);

typedef struct kdl_split_blocks kdl_split_blocks;

/**
 * kdl_split_blocks_new() - the blocked domain level: a pass over the data
 * per block of classes (kdl_split_plan_init() chooses them from @o->memory
 * and the head widths @d_teacher, @d_student, 0 when absent).  Feed every
 * block the samples of the first pass with kdl_split_blocks_accumulate(),
 * in any pass (the first block may share the first pass), then close it
 * with kdl_split_blocks_next(); repeat while it returns 1.
 * @o:   copied; its domain mode must be blocked.
 * @ret: set on success only; caller frees with kdl_split_blocks_free().
 * Return: 0; -KDL_ESHAPE if @c < 2; -KDL_ERANGE for an option out of range,
 * a domain mode other than blocked, or a plan that does not fit @o->memory
 * (the message says how much it needs); -ENOMEM.
 */
KDL_API int kdl_split_blocks_new(size_t c, size_t d_teacher, size_t d_student,
                                 const kdl_split_opts *o, kdl_split_blocks **ret);

/** kdl_split_blocks_free() - free @d.  NULL is a no-op. */
KDL_API void kdl_split_blocks_free(kdl_split_blocks *d);

/** kdl_split_blocks_count() - the blocks (passes over the data) of @d. */
KDL_API size_t kdl_split_blocks_count(const kdl_split_blocks *d);

/**
 * kdl_split_blocks_accumulate() - add a block of samples (teacher logits
 * and labels, as kdl_split_accumulate(); the student's are not needed) to
 * the current block of classes.  Checked as kdl_split_accumulate(); on
 * failure @d is unchanged.
 * Return: 0; the codes of kdl_split_accumulate(); -KDL_ERANGE when every
 * block is closed.
 */
KDL_API int kdl_split_blocks_accumulate(kdl_split_blocks *d, const kdl_tensor *zt,
                                        const int64_t *labels);

/**
 * kdl_split_blocks_next() - close the current block: its pairs' agreement
 * with the heads @wt, @ws (either may be NULL; of the widths given to
 * kdl_split_blocks_new(), whose memory plan counts them) and its confused
 * pairs, with the class counts of the complete first pass @s (the same
 * samples, else -KDL_EMISMATCH).  Everything is borrowed.
 * Return: 1 when another block follows (accumulate the samples again); 0
 * when every block is closed; -KDL_ERANGE when none was open;
 * -KDL_EMISMATCH; -KDL_ESHAPE if a head is not [C, d]; -KDL_ENONFINITE for
 * a NaN/Inf head weight; -KDL_EOVERFLOW; -ENOMEM.
 */
KDL_API int kdl_split_blocks_next(kdl_split_blocks *d, const kdl_split_state *s,
                                  const kdl_tensor *wt, const kdl_tensor *ws);

/* ---- Several processes ---------------------------------------------------- */

/*
 * The states as bytes, for the processes of one MPI run (analysis/dist.h),
 * in host layout, readable by the same build only: the sums, moments,
 * extrema and histogram counts of each pass; of the blocked domain level
 * only the open block's soft counts A (its pairs' agreement and confused
 * pairs are formed when it closes, by the process that merged the sums).
 * After a header of the classes and options (8 + sizeof(kdl_split_opts)
 * bytes, 216 on x86-64), a packed first pass is
 * 8 (C + 3 + ntaus (6 nbins + 38 + C²)) bytes in the full mode (no C²
 * otherwise), a packed second pass 8 (1 + ntaus (2 KDL_SPLIT_W_SLOTS + 26))
 * bytes (65.8 kB per τ), a packed open block of b classes from class s
 * 8 (2 + ntaus b (2 (C - s) - b)) bytes.
 *
 * kdl_split_state_pack() / kdl_split_instance_state_pack() /
 * kdl_split_blocks_pack() - @s as bytes; *@buf malloc'd, the caller frees.
 * Return: 0; -ENOMEM.
 * kdl_split_state_merge_packed() / kdl_split_instance_state_merge_packed()
 * / kdl_split_blocks_merge_packed() - add the samples of a packed state
 * (made with the same classes and options; for a block, the same open
 * block) to @s, as kdl_split_merge() / kdl_split_instance_merge() /
 * kdl_split_blocks_accumulate() would have.
 * kdl_split_instance_state_new_packed() - a new second-pass state equal to
 * the packed one (so that every process uses the same p̄^t_y); @ret set on
 * success only, the caller frees with kdl_split_instance_state_free().
 * Return: 0; -KDL_ESCHEMA when @len is not a packed state's;
 * -KDL_EMISMATCH for other classes, options or another open block; -ENOMEM.
 */
KDL_API int kdl_split_state_pack(const kdl_split_state *s, void **buf, size_t *len);
KDL_API int kdl_split_state_merge_packed(kdl_split_state *s, const void *buf, size_t len);
KDL_API int kdl_split_instance_state_pack(const kdl_split_instance_state *s, void **buf,
                                          size_t *len);
KDL_API int kdl_split_instance_state_merge_packed(kdl_split_instance_state *s, const void *buf,
                                                  size_t len);
KDL_API int kdl_split_instance_state_new_packed(const void *buf, size_t len,
                                                kdl_split_instance_state **ret);
KDL_API int kdl_split_blocks_pack(const kdl_split_blocks *s, void **buf, size_t *len);
KDL_API int kdl_split_blocks_merge_packed(kdl_split_blocks *s, const void *buf, size_t len);

/* ---- Results -------------------------------------------------------------- */

/* A confused pair of classes at one τ. */
typedef struct kdl_split_pair {
        size_t i, j;      /* true class i, class j != i */
        double mass;      /* A_ij = Σ_{n: y_n = i} p^t_τ,j(x_n), the soft count */
        double confusion; /* M_ij = A_ij / n_i */
} kdl_split_pair;

/* A histogram: bin k covers [lo[k], hi[k]) (the last bin is closed). */
typedef struct kdl_split_hist {
        size_t nbins;
        double *lo, *hi;
        size_t *count;
} kdl_split_hist;

/* The distribution of one per-sample scalar. */
typedef struct kdl_split_dist {
        size_t n;
        double mean;
        double std; /* population standard deviation (divides by n) */
        double min, max;
        double quantile[KDL_SPLIT_NQUANTILES]; /* at kdl_split_quantile_levels, from hist */
        kdl_split_hist hist;
} kdl_split_dist;

/* Everything at one τ.  Undefined values (a ratio over a zero, a correlation
 * with a constant or with fewer than two pairs) are NaN. */
typedef struct kdl_split_tau_result {
        double tau;

        /* Explicit vs implicit: means over samples, τ² included. */
        double kl, tckd, nckd;
        double nckd_coupled;   /* mean of (1 - p^t_y) NCKD, NCKD's part of KL */
        double residual_max;   /* max_n |KL - TCKD - (1 - p^t_y) NCKD| */
        double explicit_share; /* mean TCKD / mean KL */
        double implicit_share; /* mean (1 - p^t_y) NCKD / mean KL */
        kdl_split_dist pt_y, ps_y;
        kdl_split_dist gap;   /* |p^t_y - p^s_y| */
        kdl_split_dist omega; /* AEKT weight */
        size_t omega_clipped; /* samples with p^t_y / p^s_y > ω_max */

        /* Universe. */
        kdl_split_dist eps;        /* ε_n */
        kdl_split_dist nt_entropy; /* H(p̂^t) / ln(C-1) */

        /* Domain (opts.domain says how: the blocked mode has no C x C matrix, the
         * off mode no domain value). */
        double *confusion;                /* C x C row-major M, NULL unless full; rows of classes
                                             without samples are NaN */
        size_t confusion_pairs;           /* pairs i < j whose classes both have samples */
        double pearson_confusion_teacher; /* (M + M^T)/2 vs S^t over those pairs */
        double pearson_confusion_student; /* (M + M^T)/2 vs S^s over those pairs */
        size_t ntop;                      /* confused pairs: min(top_pairs, pairs there are) */
        kdl_split_pair *top;              /* ntop, most confused first; NULL when none or off */

        /* Instance (when a second pass was given). */
        bool has_instance;
        double pt_mean;       /* p̄^t_y used by w_n */
        kdl_split_dist w;     /* w_n, signed log2 histogram (see above); its mean
                                 and std are not robust (floored denominators) */
        double pearson_w_pt;  /* Pearson(w_n, p^t_y) */
        size_t w_guarded;     /* samples whose denominator was raised to eps_w */
        size_t w_nonpositive; /* samples with w_n <= 0 */
        size_t w_above_one;   /* samples with w_n > 1 */
        /* The same over the unguarded samples only, where w_n is a ratio of
         * two same-sign gradients and w_n > 1 exactly when p^t_y > p̄^t_y. */
        kdl_split_dist w_unguarded_dist; /* n = samples - w_guarded */
        double w_unguarded;              /* mean */
        double w_std_unguarded;          /* population standard deviation */
        double pearson_w_pt_unguarded;
} kdl_split_tau_result;

typedef struct kdl_split_result {
        size_t c;
        size_t n;
        kdl_split_opts opts;    /* its domain the mode used: full, blocked or off */
        size_t domain_blocks;   /* blocked: the blocks of classes (passes) */
        size_t *class_count;    /* C samples per class */
        size_t teacher_correct; /* argmax z^t == y (first maximum) */
        size_t student_correct;

        /* Head weights (domain); absent when the head was not given. */
        bool has_head_teacher, has_head_student;
        size_t d_teacher, d_student;
        double *cos_teacher;  /* C x C, S^t; NULL when absent or not full */
        double *cos_student;  /* C x C, S^s; NULL when absent or not full */
        double pearson_heads; /* off-diagonal pairs of S^t vs S^s; NaN unless both */
        double cka_heads;     /* linear CKA(W_t, W_s), classes as examples; NaN unless both */

        size_t ntaus;
        kdl_split_tau_result *tau; /* ntaus entries, in the order of opts.taus */
} kdl_split_result;

/**
 * kdl_split_finalize() - the results of a first pass @s, the optional
 * second pass @inst (NULL: has_instance is false), the blocked domain level
 * @dom (blocked mode: required, every block closed; otherwise NULL) and the
 * optional head weights @wt [C, d_t] and @ws [C, d_s] (NULL: that head is
 * absent; blocked: the heads @dom was closed with).  Nothing is modified;
 * everything is borrowed.
 *
 * Linear CKA of the heads centres the columns over the C classes and uses
 * the Gram form <K, L>_F / (|K|_F |L|_F), K = W_t W_t^T, L = W_s W_s^T
 * (docs/cka.md#hsic-and-cka), which works for any d_t, d_s; the blocked mode the feature
 * form, the same value.  Cosines divide by max(|w_i|, cos_eps)
 * max(|w_j|, cos_eps).
 *
 * @ret: set on success only; caller frees with kdl_split_result_free().
 * Return: 0; -KDL_EMISSING if @s holds no samples, or in the blocked mode
 * without @dom or with a block still open; -KDL_EMISMATCH if @inst or @dom
 * did not come from @s's options or hold a different number of samples;
 * -KDL_ESHAPE if a head is not [C, d] with d >= 1; -KDL_ENONFINITE for a
 * NaN/Inf head weight; -KDL_EOVERFLOW; -ENOMEM.
 */
KDL_API int kdl_split_finalize(const kdl_split_state *s, const kdl_split_instance_state *inst,
                               const kdl_split_blocks *dom, const kdl_tensor *wt,
                               const kdl_tensor *ws, kdl_split_result **ret);

/** kdl_split_result_free() - free @r.  NULL is a no-op. */
KDL_API void kdl_split_result_free(kdl_split_result *r);

#endif
