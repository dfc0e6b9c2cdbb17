/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_KL_SPARSE_H
#define KDL_METRICS_KL_SPARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics/base/tensor.h"
#include "metrics/moments.h"

/*
 * What a sparse-only teacher (its top-k logits, no dense logits; docs/lm.md)
 * gives exactly, per token, against a dense student: with S the k stored
 * classes, v_i the stored values (logits, or log-probabilities at τ = 1) and
 * q = p^s_τ,
 *
 *   topk_renorm(τ)  τ² Σ_{i∈S} p̂_i (log p̂_i - log q_i),  p̂ = softmax(v/τ) on S
 *   hard            -log p^s_1(argmax_{i∈S} v_i)   (ties: the smaller class)
 * and, when the teacher's normaliser is known (logsumexp, or logprobs), at τ = 1:
 *   teacher_mass    P_S = Σ_{i∈S} p^t_1,i
 *   topk_tail       Σ_{i∈S} p_i (log p_i - log q_i) + (1 - P_S) log((1 - P_S) / (1 - Q_S))
 *                   (a lower bound of the exact KL at τ = 1)
 * as means and standard deviations over the tokens.  The exact KL needs the
 * teacher's whole distribution and is not computed.  These equal the dense
 * top-k values of metrics/kl-topk.h when S is the teacher's top k.  Not
 * installed: kdlens's own API.
 */

enum kdl_kl_sparse_value {
        KDL_KL_SPARSE_HARD,
        KDL_KL_SPARSE_TAIL,   /* needs the normaliser */
        KDL_KL_SPARSE_MASS,   /* needs the normaliser */
        KDL_KL_SPARSE_RENORM, /* one per temperature, from here on */
};

typedef struct kdl_kl_sparse_opts {
        size_t c, k;       /* classes >= 2; stored columns 1..c */
        size_t ntau;       /* >= 1 */
        const double *tau; /* [ntau] finite and > 0 */
        bool logprobs;     /* values are log p^t_1 (else logits) */
        bool lse;          /* blocks carry the teacher's logsumexp at τ = 1 */
} kdl_kl_sparse_opts;

/* One block of m tokens; tensors borrowed, 2-D ([m, 1] for lse). */
typedef struct kdl_kl_sparse_block {
        const kdl_tensor *idx; /* [m, k] class indices (whole numbers in [0, c), distinct) */
        const kdl_tensor *val; /* [m, k] teacher logits or log-probabilities there */
        const kdl_tensor *lse; /* [m, 1] iff opts.lse */
        const kdl_tensor *zs;  /* [m, c] student logits */
} kdl_kl_sparse_block;

typedef struct kdl_kl_sparse_state kdl_kl_sparse_state;

/* Heap object; free with free().  v[KDL_KL_SPARSE_RENORM + t] for temperature t. */
typedef struct kdl_kl_sparse_result {
        size_t n, ntau;
        bool normaliser; /* tail and mass were computed */
        kdl_moments v[]; /* [3 + ntau] */
} kdl_kl_sparse_result;

/**
 * kdl_kl_sparse_state_new() - an empty state.  @o borrowed.
 * @ret: set on success only; free with kdl_kl_sparse_state_free().
 * Return: 0; -KDL_ESHAPE (C < 2, k of 0 or above C, no temperature); -KDL_ERANGE (a
 * temperature not finite and > 0); -ENOMEM.
 */
KDL_API int kdl_kl_sparse_state_new(const kdl_kl_sparse_opts *o, kdl_kl_sparse_state **ret);

/**
 * kdl_kl_sparse_accumulate() - add the tokens of @b.  On failure @s is unchanged.
 * Return: 0; -KDL_ESHAPE; -KDL_ERANGE for an index that is not a class; -KDL_ENONFINITE
 * naming the input and row.
 */
KDL_API int kdl_kl_sparse_accumulate(kdl_kl_sparse_state *s, const kdl_kl_sparse_block *b);

/**
 * kdl_kl_sparse_finalize() - the means.  @ret: caller frees with free().
 * Return: 0; -KDL_EMISSING without a token; -ENOMEM.
 */
KDL_API int kdl_kl_sparse_finalize(const kdl_kl_sparse_state *s, kdl_kl_sparse_result **ret);

/** kdl_kl_sparse_state_free() - NULL is a no-op. */
KDL_API void kdl_kl_sparse_state_free(kdl_kl_sparse_state *s);

#endif
