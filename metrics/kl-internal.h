/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_KL_INTERNAL_H
#define KDL_METRICS_KL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/base/tensor.h"
#include "metrics/kl.h"
#include "metrics/moments.h"

/*
 * The parts of the KL metric (metrics/kl.h) shared by its files:
 *   kl.c            the state's lifecycle, its statistics, merge, finalize;
 *   kl-values.c     the per-sample values of a block (the KL and its
 *                   approximations), and the exact KL the split metric
 *                   shares;
 *   kl-reservoir.c  the Spearman reservoir and the rank correlations;
 *   kl-proj.c       pass 1, the least-squares projector.
 */

#define KDL__KL_NV KDL_KL_VALUE_COUNT_

/* What the blocks carry; fixed by kdl_kl_state_new(). */
struct kdl__kl_config {
        size_t c, ntau, d_s, d_t;
        double *tau; /* [ntau] */
        bool feat, head, gradf, gradz, fitted;
        bool avail[KDL__KL_NV];
        double *w;        /* [c, d_t] W_t when head */
        double *pt, *b;   /* projector [d_s, d_t], [d_t] when fitted */
        size_t proj_rank; /* rank of the fitted projector; d_s for the identity */
        double *q;        /* [d_t, rank] orthonormal basis of the row space of W_t */
        size_t rank;
};

/* The sufficient statistics of a set of samples (a state's, or one block's). */
struct kdl__kl_stats {
        size_t n;
        kdl_comoments *v; /* [ntau * NV] of (A_v, K) at each temperature */
        double *sabs;     /* [ntau * NV] Σ|A_v - K| */
        double esq, vsq;  /* Σ‖e‖², Σ‖Qᵀe‖² */
        double *mu_t;     /* [d_t] teacher feature mean */
        double sst_t;     /* Σ‖h^t - μ_t‖² */
};

/* The Spearman reservoir: the @cap samples of smallest key
 * hash(seed, sample index), each with @width values; a max-heap of slots
 * finds the largest key kept. */
struct kdl__kl_reservoir {
        size_t cap;
        uint64_t seed;
        size_t width;
        size_t n, alloc; /* items held, room */
        uint64_t *key;   /* [alloc] */
        size_t *idx;     /* [alloc] sample indices */
        double *val;     /* [alloc, width] */
        size_t *heap;    /* [alloc] slots, largest (key, idx) first */
};

/* Scratch of a state; its sizes follow the largest block seen. */
struct kdl__kl_scratch {
        size_t rows;             /* blocks of this many rows fit */
        size_t vm;               /* rows of the last block's values in @vals; 0: none */
        double *vals;            /* [ntau * NV, vm] values of the last block */
        double *e, *u, *y, *hsp; /* [rows, d_t], [rows, c], [rows, rank] (rank < d_t only),
                                    [rows, d_s] */
        double *lpt, *lps, *pr;  /* [c]: log p^t_τ (first z^t/τ), z^s/τ, p^t_τ (first e^t) */
        double *qs, *v, *d;      /* [c]: p^s_τ (first e^s), (z^s - z^t)/τ, z^s - z^t */
        double *delta;           /* [d_t] mean differences of a merge */
        struct kdl__kl_stats block;
};

/* A state (kl.c; packed by kl-pack.c). */
struct kdl_kl_state {
        struct kdl__kl_config cfg;
        struct kdl__kl_stats st;
        struct kdl__kl_reservoir res;
        struct kdl__kl_scratch w;
};

/* Pass 1's state (kl-proj.c; packed by kl-pack.c). */
struct kdl_kl_proj_state {
        size_t d_s, d_t;
        size_t n;
        double *mu_s, *mu_t; /* [d_s], [d_t] running means */
        double *mss;         /* [d_s, d_s] upper triangle (row-major) of Σ s_c s_cᵀ */
        double *mst;         /* [d_s, d_t] Σ s_c t_cᵀ */
        double sst;          /* Σ ‖t_c‖² */
        double *work;        /* centred block [rows, d_s + d_t] + block means */
        size_t work_rows;
};

/* ---- kl.c ---- */

/* The index of row @r of block @b. */
size_t kdl__kl_sample_index(const kdl_kl_block *b, size_t r);

/* -KDL_ESHAPE (message names @what) unless @t is 2-D [@m, @cols]. */
int kdl__kl_check_tensor(const kdl_tensor *t, const char *what, size_t m, size_t cols);

/* kdl_tensor_check_finite() (no message) in one pass of four independent sums per row when
 * the rows are contiguous. */
int kdl__kl_rows_finite(const kdl_tensor *t, size_t *ret_row);

/* -KDL_ENONFINITE naming @what and the sample (of @b when not NULL, else
 * the row) of the first NaN/Inf in @t. */
int kdl__kl_check_finite(const kdl_tensor *t, const char *what, const kdl_kl_block *b);

/* -KDL_ENONFINITE, as kdl__kl_check_finite(), for the first NaN/Inf in the block's tensors
 * in their order (teacher logits, student logits, features, feature gradient, logit
 * gradients); @b's tensors were checked for presence and shape. */
int kdl__kl_check_block_finite(const struct kdl__kl_config *cfg, const kdl_kl_block *b);

/* Grow *@p to hold @n doubles (contents not kept).  Return: 0; -ENOMEM. */
int kdl__kl_grow(double **p, size_t n);

/* ---- kl-values.c ---- */

/*
 * The exact KL, shared with the split metric (metrics/split-eval.c), so that
 * both compute the same numbers the same way.
 *
 * kdl__kl_softmax() - the softmax of x/τ as scaled exponentials: a_k = x_k/τ into @a and
 * e_k = exp(a_k - a_max) into @e for the @c classes, and *@ret_rest = Σ_{k != argmax} e_k in
 * class order.  The normaliser is then a_max + log1p(rest), so that log p of a class far below
 * the maximum keeps its digits, and p_k = e_k / (1 + rest): one exponential per class for
 * both.
 * @x: @c values, stride @sx (borrowed); finite.  @a, @e: @c doubles each.
 * Return: the (first) argmax.
 */
size_t kdl__kl_softmax(const double *x, ptrdiff_t sx, size_t c, double tau, double *a, double *e,
                       double *ret_rest);

/*
 * kdl__kl_tilt() - KL(p ‖ q) for the q of log q_k = log p_k + w_k - log E_p[e^w]
 * (q = softmax(b) and p = softmax(a) give w = b - a), in the form that keeps
 * its digits when p and q nearly agree or p is near-certain:
 * KL = log E_p[e^v] with v = w - E_p[w], as log1p(Σ_k p_k φ(v_k)),
 * φ(v) = e^v - 1 - v >= 0 (or a log-sum-exp once some p_k e^{v_k} > e).
 * @lp, @p: log p and p = exp(lp), @c values each (borrowed).
 * @v:        in: w; out: v = w - E_p[w].
 * @ret_mean: if not NULL, E_p[w].
 * Return: the KL, >= 0.
 */
double kdl__kl_tilt(const double *lp, const double *p, double *v, size_t c, double *ret_mean);

/* kdl__kl_tilt() with E_p[w] = @mw known: @v becomes w - @mw; *@ret_var (if not NULL) is
 * Σ_k p_k v_k², the variance of w under p. */
double kdl__kl_tilt_centre(const double *lp, const double *p, double *v, size_t c, double mw,
                           double *ret_var);

/*
 * kdl__kl_block_values() - the per-sample values of the @m rows of @b, at
 * every temperature, into @w->vals[(itau * NV + v) * m + r] (NaN for the
 * values that are unavailable), and Σ‖e‖², Σ‖Qᵀe‖² into @w->block.
 * @b was checked; @w has room for @m rows.
 * Return: 0; -KDL_ENONFINITE naming the value, τ and sample when a value
 * overflowed; -KDL_EOVERFLOW.
 */
int kdl__kl_block_values(const struct kdl__kl_config *cfg, struct kdl__kl_scratch *w,
                         const kdl_kl_block *b, size_t m);

/* ---- kl-reservoir.c ---- */

/* An empty reservoir of at most @cap items of @width doubles (no memory yet). */
void kdl__kl_reservoir_init(struct kdl__kl_reservoir *r, size_t cap, uint64_t seed, size_t width);

/* Free @r's memory. */
void kdl__kl_reservoir_release(struct kdl__kl_reservoir *r);

/* Room for min(@n, cap) items, so that adding that many cannot fail.
 * Return: 0; -KDL_EOVERFLOW; -ENOMEM (@r unchanged). */
int kdl__kl_reservoir_reserve(struct kdl__kl_reservoir *r, size_t n);

struct kdl__packer;   /* metrics/pack.h */
struct kdl__unpacker; /* metrics/pack.h */

/* The reservoir @r's items as packed bytes (kl-pack.c): their count, keys, sample indices
 * and values. */
void kdl__kl_reservoir_pack(struct kdl__packer *p, const struct kdl__kl_reservoir *r);

/* The packed items of kdl__kl_reservoir_pack() into @r, an empty reservoir (from
 * kdl__kl_reservoir_init()) of the packing state's cap and width; @what names the state in
 * a message.  @r is unchanged on failure; release it either way.  For merging only: it has
 * no heap.  Return: 0; -KDL_ESCHEMA (more items than cap, a short buffer); -ENOMEM. */
int kdl__kl_reservoir_unpack(struct kdl__unpacker *u, struct kdl__kl_reservoir *r,
                             const char *what);

/* The slots kdl__kl_reservoir_reserve() grows @alloc slots to for @n items under @cap
 * (from 256, doubling, at most @cap; @alloc when they fit). */
size_t kdl__kl_reservoir_room(size_t alloc, size_t n, size_t cap);

/* Offer the @m samples of @b, whose values are @vals[i * m + row]
 * (i < width).  Room was reserved. */
void kdl__kl_reservoir_add_block(struct kdl__kl_reservoir *r, const double *vals, size_t m,
                                 const kdl_kl_block *b);

/* Offer every item of @from to @into (same cap, seed and width); room was
 * reserved for @into->n + @from->n. */
void kdl__kl_reservoir_merge(struct kdl__kl_reservoir *into, const struct kdl__kl_reservoir *from);

/* kdl__kl_reservoir_order() - the slots of @r's items in sample order into *@ret (n of them;
 * caller frees with free()), so that rank statistics on them do not depend on the order of
 * accumulation and merging.  Return: 0; -ENOMEM. */
int kdl__kl_reservoir_order(const struct kdl__kl_reservoir *r, size_t **ret);

/*
 * kdl__kl_spearman() - the Spearman correlation of every available value
 * with K at every temperature, on the reservoir's items in sample order,
 * into @ret->tau[it].v[v].spearman.
 * Return: 0; -ENOMEM.
 */
int kdl__kl_spearman(const struct kdl__kl_reservoir *r, const struct kdl__kl_config *cfg,
                     kdl_kl_result *ret);

#endif
