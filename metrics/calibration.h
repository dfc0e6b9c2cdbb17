/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_CALIBRATION_H
#define KDL_METRICS_CALIBRATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/base/tensor.h"

/*
 * The numbers every KD paper reports beside its analyses, for one model's
 * logits z [N, C] and labels y, and, when a teacher's logits z^t are given
 * too, the model's agreement with the teacher (docs/summary.md).  With
 * p = softmax(z) (temperature 1), the prediction ŷ_n = argmax_k z_nk (the
 * first of equal maxima) and the confidence c_n = max_k p_nk:
 *
 *   accuracy       (1/N) Σ_n 1[ŷ_n = y_n]
 *   fidelity       (1/N) Σ_n 1[ŷ_n = argmax_k z^t_nk]          (with a teacher)
 *   ECE            Σ_b |B_b|/N |acc(B_b) - conf(B_b)|  =  (1/N) Σ_b |Σ_{n∈B_b} (1[ŷ_n = y_n] -
 * c_n)| over bins b of equal width on [0, 1] by c_n (Guo et al. 2017) classwise ECE  (1/C) Σ_j Σ_b
 * |B_jb|/N |freq(B_jb) - mean p_j(B_jb)| =  (1/(N C)) Σ_j Σ_b |Σ_{n∈B_jb} (1[y_n = j] - p_nj)|,
 * B_jb the samples whose p_nj falls in bin b (Kull et al. 2019) NLL            (1/N) Σ_n -log
 * p_{n,y_n} KL             (1/N) Σ_n τ² KL(p^t_τ,n || p_τ,n)                (with a teacher)
 *
 * Bin b = 0..B-1 holds the values in (b/B, (b+1)/B] (bin 0 also holds 0):
 * b = clamp(ceil(v B) - 1, 0, B - 1).
 *
 * The KL is the kl metric's own per-sample exact KL (metrics/kl.h: a
 * kdl_kl_state at the one temperature τ, its Spearman reservoir one sample),
 * so its mean is `kdlens kl`'s mean `kl` up to rounding.  log p comes from
 * the kl metric's log-softmax, whose normaliser keeps the digits of a
 * near-certain class.
 *
 * Every sum adds the samples one at a time in the order they are given, so
 * the results are the same to the last bit however the rows are cut into
 * blocks; a merge adds the sums of two states (equal up to rounding).
 *
 * Memory of a state: (3 B + 2 C B + 2 C) doubles (B = 15 and C = 32,000: 8.2 MB),
 * plus, with a teacher, the KL state's (O(C) and a scratch of the largest
 * block's rows, metrics/kl.h); independent of N.
 */

/* The confidence bins kdl_calibration_opts_init() sets (Guo et al. 2017). */
#define KDL_CALIBRATION_BINS_DEFAULT 15

/* The temperature of the KL kdl_calibration_opts_init() sets (as kdlens kl's default). */
#define KDL_CALIBRATION_TAU_DEFAULT 4.0

/*
 * Options; copied by kdl_calibration_state_new().  kdl_calibration_opts_init()
 * sets every default; the caller then sets at least c.
 */
typedef struct kdl_calibration_opts {
        size_t c;     /* classes, >= 2 (0 after init: no default) */
        size_t bins;  /* equal-width bins on [0, 1], >= 1 (KDL_CALIBRATION_BINS_DEFAULT) */
        bool teacher; /* blocks carry a teacher's logits: fidelity and KL (false) */
        double tau;   /* temperature of the KL, finite and > 0 (KDL_CALIBRATION_TAU_DEFAULT) */
} kdl_calibration_opts;

/** kdl_calibration_opts_init() - the defaults above; c = 0. */
KDL_API void kdl_calibration_opts_init(kdl_calibration_opts *o);

/*
 * One row block of m samples.  Tensors are borrowed, 2-D, any strides.
 */
typedef struct kdl_calibration_block {
        size_t row0;           /* index of the block's first sample, when @samples is NULL */
        const size_t *samples; /* [m] index of each sample (for messages and the KL state),
                                  or NULL for row0 + i */
        const kdl_tensor *z;   /* the model's logits [m, c]: required */
        const int64_t *labels; /* [m] classes in [0, c): required (may be NULL when m = 0) */
        const kdl_tensor *zt;  /* the teacher's logits [m, c]: iff opts.teacher */
} kdl_calibration_block;

/* Heap object; free with kdl_calibration_result_free(). */
typedef struct kdl_calibration_result {
        size_t n, c, bins;
        bool teacher;           /* fidelity and kl are set (else NaN) */
        double tau;             /* of the KL */
        double accuracy;        /* [0, 1] */
        double fidelity;        /* [0, 1] */
        double ece;             /* [0, 1] */
        double classwise_ece;   /* [0, 1] */
        double nll;             /* >= 0, nats */
        double kl;              /* >= 0, nats (τ² KL) */
        double confidence;      /* mean c_n */
        size_t *bin_count;      /* [bins] samples per confidence bin */
        double *bin_accuracy;   /* [bins] accuracy of the bin; NaN when empty */
        double *bin_confidence; /* [bins] mean confidence of the bin; NaN when empty */
} kdl_calibration_result;

typedef struct kdl_calibration_state kdl_calibration_state;

/**
 * kdl_calibration_state_bytes() - what kdl_calibration_state_new() allocates
 * with @o, besides the KL state (saturating at SIZE_MAX): for a memory plan.
 */
KDL_API size_t kdl_calibration_state_bytes(const kdl_calibration_opts *o);

/**
 * kdl_calibration_state_new() - an empty state for blocks described by @o.
 * @o:   borrowed; start from kdl_calibration_opts_init().
 * @ret: set on success only; caller frees with kdl_calibration_state_free().
 * Return: 0; -KDL_ESHAPE for fewer than 2 classes; -KDL_ERANGE for 0 bins or
 * a temperature that is not finite and > 0; -KDL_EOVERFLOW; -ENOMEM.
 */
KDL_API int kdl_calibration_state_new(const kdl_calibration_opts *o, kdl_calibration_state **ret);

/**
 * kdl_calibration_accumulate() - add the samples of @b.
 *
 * Everything is checked before anything is added: on failure @s is unchanged.
 * Return: 0; -KDL_ESHAPE when a tensor is not [m, c], or the teacher's
 * logits are given without opts.teacher or missing with it; -KDL_ERANGE
 * naming the sample of a label outside [0, c); -KDL_ENONFINITE naming the
 * logits and the sample of a NaN/Inf; the KL state's codes
 * (kdl_kl_accumulate()); -ENOMEM.
 */
KDL_API int kdl_calibration_accumulate(kdl_calibration_state *s, const kdl_calibration_block *b);

/**
 * kdl_calibration_merge() - add the samples of @from to @into.  @from
 * unchanged; on failure @into is unchanged.
 * Return: 0; -KDL_EMISMATCH if the states were made with different options.
 */
KDL_API int kdl_calibration_merge(kdl_calibration_state *into, const kdl_calibration_state *from);

/** kdl_calibration_count() - samples accumulated so far. */
KDL_API size_t kdl_calibration_count(const kdl_calibration_state *s);

/**
 * kdl_calibration_finalize() - the statistics of everything accumulated.
 * @s:   not modified.
 * @ret: set on success only; caller frees with kdl_calibration_result_free().
 * Return: 0; -KDL_EMISSING if no sample was accumulated; -ENOMEM.
 */
KDL_API int kdl_calibration_finalize(const kdl_calibration_state *s, kdl_calibration_result **ret);

/** kdl_calibration_result_free() - free @r.  NULL is a no-op. */
KDL_API void kdl_calibration_result_free(kdl_calibration_result *r);

/*
 * The state as bytes, for the processes of one MPI run (analysis/dist.h): its
 * sums, (6 + 3 B + 2 C B) numbers in host layout, readable by the same build
 * only (the KL state is a per-block scratch and does not travel).
 *
 * kdl_calibration_state_pack() - @s as bytes; *@buf malloc'd, the caller
 * frees.  Return: 0; -ENOMEM.
 * kdl_calibration_state_merge_packed() - add the samples of a packed state
 * (made with the same options) to @s, as kdl_calibration_merge().
 * Return: 0; -KDL_ESCHEMA when @len is not a packed state's; -ENOMEM.
 */
KDL_API int kdl_calibration_state_pack(const kdl_calibration_state *s, void **buf, size_t *len);
KDL_API int kdl_calibration_state_merge_packed(kdl_calibration_state *s, const void *buf,
                                               size_t len);

/** kdl_calibration_state_free() - free @s.  NULL is a no-op. */
KDL_API void kdl_calibration_state_free(kdl_calibration_state *s);

#endif
