/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_KL_TOPK_H
#define KDL_METRICS_KL_TOPK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/base/tensor.h"
#include "metrics/kl.h"

/*
 * Sparse teacher targets as knowledge sources (docs/lm.md): how well the KD
 * criterion computed from only the teacher's top-k logits, or from k tokens
 * sampled from the teacher, tracks the exact K_n = τ² KL(p^t_τ,n || p^s_τ,n)
 * of a dense teacher.  Not installed: kdlens's own API.
 *
 * Per sample n, temperature τ and k, with p = p^t_τ, q = p^s_τ, S the k
 * classes of largest teacher logit (ties: the smaller class index first; the
 * same set at every τ), P_S = Σ_{i∈S} p_i, Q_S = Σ_{i∈S} q_i and
 * p̂_i = p_i / P_S on S:
 *
 *   topk_renorm   τ² Σ_{i∈S} p̂_i (log p̂_i - log q_i)        = τ² KL(p̂ || q)
 *   topk_tail     τ² [Σ_{i∈S} p_i (log p_i - log q_i)
 *                     + (1 - P_S) log((1 - P_S) / (1 - Q_S))]  the KL of the k+1 buckets
 *   sampled       τ² (1/k) Σ_{j=1..k} (log p_{x_j} - log q_{x_j}),  x_j ~ p i.i.d.
 *   hard          -log p^s_1(argmax_i z^t_i)                   (τ = 1 whatever τ; no k)
 *
 * The tail masses 1 - P_S and 1 - Q_S are summed over the tail itself, not
 * taken as 1 - P_S, so a tail of 1e-20 keeps its digits.  The draws of
 * `sampled` are a pure function of (seed, sample index, τ's index, k): the k
 * sorted uniforms come from k + 1 exponential spacings of
 * kdl_sample_uniform(seed, sample, 2^61 + itau·2^40 + k·2^20 + j), j = 0..k,
 * and x_j is the first class whose cumulative teacher probability (in class
 * order) exceeds the j-th uniform times Σ p (the last class if none does).
 * So merging states over disjoint sample ranges gives the values of one pass.
 *
 * Cost per sample: the top-k by a min-heap of k_max entries over the C teacher
 * logits (no sort of C; the k_max survivors are sorted), then per τ the two
 * softmaxes and the exact KL (as metrics/kl.h computes it), one sweep of C
 * for the tail masses and one per k for the draws.  Memory: O(C + k_max)
 * scratch reused row by row, the statistics O(ntau·nk), and the Spearman
 * reservoir (reservoir × ntau × (2 + 3 nk) doubles at most).
 */

enum kdl_kl_topk_value {
        KDL_KL_TOPK_HARD,    /* "hard" (one per τ; k = 1) */
        KDL_KL_TOPK_RENORM,  /* "topk_renorm" */
        KDL_KL_TOPK_TAIL,    /* "topk_tail" */
        KDL_KL_TOPK_SAMPLED, /* "sampled" */
        KDL_KL_TOPK_VALUE_COUNT_
};

/* The largest k kdl_kl_topk_state_new() accepts (the draws' stream layout). */
#define KDL_KL_TOPK_MAX_K ((size_t) 1 << 20)

/** kdl_kl_topk_name() - the docs' name of @v. */
KDL_API const char *kdl_kl_topk_name(enum kdl_kl_topk_value v);

/**
 * kdl_kl_topk_dim() - numbers per sample the teacher hands over for @v at @k:
 * 2k (k indices and the teacher's logits or log-probabilities there; for
 * sampled, the k draws and their log-probabilities), 1 for hard.
 */
KDL_API size_t kdl_kl_topk_dim(enum kdl_kl_topk_value v, size_t k);

/**
 * kdl_kl_topk_select() - the @k largest of the @c values @z[i * @sz], best first (of equal
 * values, the smaller index first), into @ret_idx[@k]: a min-heap of k entries over the c
 * values, then a heap sort of those k; no sort of c, no scratch beyond @ret_idx.
 * @k: 1..@c.  @z: finite (borrowed).
 */
KDL_API void kdl_kl_topk_select(const double *z, ptrdiff_t sz, size_t c, size_t k, size_t *ret_idx);

typedef struct kdl_kl_topk_state kdl_kl_topk_state;

/* Copied by kdl_kl_topk_state_new(); start from kdl_kl_topk_opts_init(). */
typedef struct kdl_kl_topk_opts {
        size_t c;          /* classes, >= 2 */
        size_t ntau;       /* >= 1 */
        const double *tau; /* [ntau], finite and > 0 */
        size_t nk;         /* >= 1 */
        const size_t *k;   /* [nk] distinct, each in [1, min(c, KDL_KL_TOPK_MAX_K)] */
        size_t reservoir;  /* Spearman reservoir cap (KDL_KL_RESERVOIR_DEFAULT) */
        uint64_t seed;     /* reservoir keys and the draws (0) */
} kdl_kl_topk_opts;

/** kdl_kl_topk_opts_init() - the defaults above; shapes 0 and NULL. */
KDL_API void kdl_kl_topk_opts_init(kdl_kl_topk_opts *o);

/* Heap object; free with kdl_kl_topk_result_free(). */
typedef struct kdl_kl_topk_result {
        size_t n, c, ntau, nk;
        double *tau;          /* [ntau] */
        size_t *k;            /* [nk] */
        kdl_kl_fidelity *fid; /* [ntau * (2 + 3 nk)]; use kdl_kl_topk_fidelity() */
        size_t spearman_n;
        bool spearman_exact;
} kdl_kl_topk_result;

/**
 * kdl_kl_topk_fidelity() - the fidelity of @v at temperature @itau and the k
 * of index @ik (ignored for hard) in @r; borrowed from @r.
 */
KDL_API const kdl_kl_fidelity *kdl_kl_topk_fidelity(const kdl_kl_topk_result *r, size_t itau,
                                                    enum kdl_kl_topk_value v, size_t ik);

/**
 * kdl_kl_topk_state_new() - an empty state.
 * @ret: set on success only; caller frees with kdl_kl_topk_state_free().
 * Return: 0; -KDL_ESHAPE (C < 2, ntau or nk 0, a k of 0, above C or above
 * KDL_KL_TOPK_MAX_K, a k given twice); -KDL_ERANGE (a temperature not finite
 * and > 0, a reservoir of 0); -ENOMEM.
 */
KDL_API int kdl_kl_topk_state_new(const kdl_kl_topk_opts *o, kdl_kl_topk_state **ret);

/**
 * kdl_kl_topk_bytes() - what a state of @o holds at its peak over @n samples read in blocks
 * of at most @rows rows, in bytes (saturating), kdl_kl_topk_finalize() included: the
 * Spearman reservoir of min(@n, o->reservoir) samples x ntau (2 + 3 nk) values and its
 * ranking into *@ret_reservoir; the rest returned (the statistics, the scratch of C classes
 * and k_max, a block's values, the result).
 */
KDL_API size_t kdl_kl_topk_bytes(const kdl_kl_topk_opts *o, size_t n, size_t rows,
                                 size_t *ret_reservoir);

/**
 * kdl_kl_topk_accumulate() - the values of the block's samples, added.
 * @b: only zt and zs (both [m, c]) are read; the other tensors must be NULL.
 * On failure @s is unchanged.
 * Return: 0; -KDL_ESHAPE; -KDL_ENONFINITE naming the input and sample (NaN/Inf in a logit,
 * or a value that overflowed); -ENOMEM.
 */
KDL_API int kdl_kl_topk_accumulate(kdl_kl_topk_state *s, const kdl_kl_block *b);

/**
 * kdl_kl_topk_merge() - add the samples of @from to @into (disjoint sample
 * indices).  @from unchanged; on failure @into unchanged.
 * Return: 0; -KDL_EMISMATCH for states of different options; -ENOMEM.
 */
KDL_API int kdl_kl_topk_merge(kdl_kl_topk_state *into, const kdl_kl_topk_state *from);

/**
 * kdl_kl_topk_state_pack() - @s's samples as bytes, for the processes of an MPI run
 * (O(ntau (2 + 3 nk) (1 + reservoir)) doubles); *@buf malloc'd, the caller frees.
 * kdl_kl_topk_state_merge_packed() - add the samples of a packed state made with the same
 * options to @s, as kdl_kl_topk_merge().  The format is private to one build.
 * Return: 0; -KDL_ESCHEMA when @len is not a packed state's; -ENOMEM; the errors of
 * kdl_kl_topk_merge().
 */
KDL_API int kdl_kl_topk_state_pack(const kdl_kl_topk_state *s, void **buf, size_t *len);
KDL_API int kdl_kl_topk_state_merge_packed(kdl_kl_topk_state *s, const void *buf, size_t len);

/**
 * kdl_kl_topk_finalize() - the fidelity statistics (as kdl_kl_finalize()'s).
 * @ret: set on success only; caller frees with kdl_kl_topk_result_free().
 * Return: 0; -KDL_EMISSING if no sample was accumulated; -ENOMEM.
 */
KDL_API int kdl_kl_topk_finalize(const kdl_kl_topk_state *s, kdl_kl_topk_result **ret);

/** kdl_kl_topk_result_free() - free @r.  NULL is a no-op. */
KDL_API void kdl_kl_topk_result_free(kdl_kl_topk_result *r);

/** kdl_kl_topk_state_free() - free @s.  NULL is a no-op. */
KDL_API void kdl_kl_topk_state_free(kdl_kl_topk_state *s);

#endif
