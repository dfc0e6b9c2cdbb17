/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_SPLIT_INTERNAL_H
#define KDL_METRICS_SPLIT_INTERNAL_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/base/tensor.h"
#include "metrics/moments.h"
#include "metrics/split.h"

/*
 * The parts of the split metric (metrics/split.h) shared by its files:
 *   split.c        options, the two streaming passes, finalize;
 *   split-eval.c   the split quantities of one sample;
 *   split-dist.c   the running distributions (moments, range, histogram);
 *   split-heads.c  the head cosines and the domain-level agreement;
 *   split-domain.c the memory plan, the blocked domain level and the top
 *                  confused pairs;
 *   split-pack.c   the states as bytes, for the processes of an MPI run.
 */

/* ---- split.c ---- */

/* -KDL_ERANGE (message naming the option) unless every option of @o is in range. */
int kdl__split_check_opts(const kdl_split_opts *o);

/* Whether states of the options @a and @b may be merged or combined: the
 * same temperatures, λ, guards, bins, domain mode and top pairs. */
bool kdl__split_opts_equal(const kdl_split_opts *a, const kdl_split_opts *b);

/* Check a block completely before anything is added: 2-D logits of @c
 * classes (@zs may be NULL), the same rows, labels in [0, @c), finite. */
int kdl__split_check_block(size_t c, const kdl_tensor *zt, const kdl_tensor *zs,
                           const int64_t *labels);

/* The samples per class of the first pass @s (borrowed), C of them into
 * *@ret_c when not NULL; and its options. */
const size_t *kdl__split_state_counts(const kdl_split_state *s, size_t *ret_c);
const kdl_split_opts *kdl__split_state_opts(const kdl_split_state *s);

/* ---- split-eval.c ---- */

/* The log-odds of class @y against the others, z_y/τ - LSE_{k≠y}(z_k/τ)
 * (log p_y - log(1 - p_y), with all its digits even when p_y rounds to 1);
 * @a: @c doubles of scratch. */
double kdl__split_log_odds(const double *z, ptrdiff_t st, size_t c, size_t y, double tau,
                           double *a);

/* log(1 + e^x) without overflow: for the log-odds d of p_y,
 * log p_y = -softplus(-d) and log(1 - p_y) = -softplus(d). */
static inline double kdl__split_softplus(double x)
{
        return x > 0.0 ? x + log1p(exp(-x)) : log1p(exp(x));
}

/* Everything of kdl_split_sample at one τ into *@r; if @add_pt is not NULL,
 * p^t is added into it (a row of the confusion sums).  Inputs are valid;
 * @work: KDL_SPLIT_EVAL_WORK(@c) doubles. */
void kdl__split_eval_one(const double *zt, ptrdiff_t st, const double *zs, ptrdiff_t ss, size_t c,
                         size_t y, double tau, double lambda, double omega_max, double *work,
                         kdl_split_sample *r, double *add_pt);

/* ---- split-dist.c ---- */

/* Where a histogram's bins are. */
struct kdl__split_geom {
        bool log;      /* the signed log layout of w_n; lo/hi unused */
        size_t nbins;  /* linear bins */
        double lo, hi; /* linear range */
};

/* A scalar's moments, range and histogram counts. */
struct kdl__split_dist {
        kdl_moments m;
        double min, max;
        size_t *count; /* nbins (linear) or KDL_SPLIT_W_SLOTS (log) */
};

/* The number of histogram slots of @g. */
size_t kdl__split_geom_slots(const struct kdl__split_geom *g);

/* An empty distribution on @g.  Return: 0; -ENOMEM. */
int kdl__split_dist_init(struct kdl__split_dist *d, const struct kdl__split_geom *g);

/* Free @d's counts. */
void kdl__split_dist_release(struct kdl__split_dist *d);

void kdl__split_dist_add(struct kdl__split_dist *d, const struct kdl__split_geom *g, double x);

/* Add @from to @into (same geometry).  Exact but for the moments' rounding. */
void kdl__split_dist_merge(struct kdl__split_dist *into, const struct kdl__split_dist *from,
                           const struct kdl__split_geom *g);

/* The public summary of @d: moments, quantiles, and the histogram (whose
 * arrays the caller frees with kdl__split_dist_result_free(), also after a
 * failure).  Return: 0; -ENOMEM. */
int kdl__split_dist_result(const struct kdl__split_geom *g, const struct kdl__split_dist *d,
                           kdl_split_dist *ret);

void kdl__split_dist_result_free(kdl_split_dist *d);

/* The states of the two passes (split.c; split-pack.c packs them). */

/* The distributions of the first pass, per τ: p^t_y, p^s_y, the gap, ω, ε_n
 * and the relative entropy, in that order. */
#define KDL__SPLIT_NDIST 6

struct kdl__split_tau_acc {
        double sum_kl, sum_tckd, sum_nckd, sum_coupled, residual_max;
        struct kdl__split_dist d[KDL__SPLIT_NDIST];
        size_t omega_clipped;
        uint64_t pt_hi, pt_lo; /* Σ p^t_y exactly, in units of 2^-63 (split.c: pt_add()) */
        double *msum;          /* C x C: row i sums p^t over the samples of class i (full mode) */
};

struct kdl_split_state {
        size_t c;
        kdl_split_opts o;
        size_t n;
        size_t *class_count;
        size_t teacher_correct, student_correct;
        struct kdl__split_tau_acc t[KDL_SPLIT_MAX_TAUS];
        double *work; /* KDL_SPLIT_EVAL_WORK(c) */
};

struct kdl__split_inst_acc {
        double pt_mean;
        struct kdl__split_dist w;
        struct kdl__split_dist w_ok; /* w_n of the unguarded samples */
        kdl_comoments wp;            /* (w_n, p^t_y) */
        kdl_comoments wp_ok;         /* the same over unguarded samples */
        size_t guarded, nonpositive, above_one;
};

struct kdl_split_instance_state {
        size_t c;
        kdl_split_opts o;
        size_t n;
        struct kdl__split_inst_acc t[KDL_SPLIT_MAX_TAUS];
        double *work; /* [C] the log-odds' z/τ */
};

/* ---- split-heads.c ---- */

/* -KDL_ESHAPE unless @w is [@c, d] with d >= 1; -KDL_ENONFINITE for NaN/Inf. */
int kdl__split_check_head(const kdl_tensor *w, size_t c, const char *who);

/* Pearson correlation over the pairs i < j of two C x C matrices; @x is
 * symmetrised ((x_ij + x_ji)/2); pairs are kept where @keep is NULL or
 * keep[i] && keep[j].  @buf: room for C (C - 1) doubles. */
double kdl__split_pairs_pearson(const double *x, const double *y, size_t c, const size_t *keep,
                                double *buf);

/*
 * kdl__split_heads() - the head fields of @r: the cosine matrices of the
 * checked heads @wt, @ws (either may be NULL), their pair correlation and
 * linear CKA (NaN unless both are given).  @pairs: as
 * kdl__split_pairs_pearson()'s @buf.
 * Return: 0; -KDL_EOVERFLOW; -ENOMEM (@r's arrays are freed with it).
 */
int kdl__split_heads(size_t c, double cos_eps, const kdl_tensor *wt, const kdl_tensor *ws,
                     double *pairs, kdl_split_result *r);

/*
 * kdl__split_heads_traces() - the head fields of @r without C x C matrices
 * (the blocked mode): pearson_heads from traces of d x d products and
 * cka_heads in feature space (metrics/split.h); no cosine matrix.
 * Return: 0; -KDL_EOVERFLOW; -ENOMEM.
 */
int kdl__split_heads_traces(double cos_eps, const kdl_tensor *wt, const kdl_tensor *ws,
                            kdl_split_result *r);

/* Which heads @r has and their widths, with pearson_heads and cka_heads NaN. */
void kdl__split_heads_given(const kdl_tensor *wt, const kdl_tensor *ws, kdl_split_result *r);

/* Bytes kdl__split_heads_traces() allocates for @c classes, head widths @dt, @ds. */
size_t kdl__split_heads_traces_bytes(size_t c, size_t dt, size_t ds);

/*
 * The rows [@i0, @i1) of the cosine matrix of head @w against its rows
 * [@i0, C): @ret[(i - i0) (C - i0) + (j - i0)] = cos(w_i, w_j), from the
 * inverse floored norms @inv (C of them).  @rows: @w's rows, contiguous
 * with row stride @ld.  Return: 0; -KDL_EOVERFLOW.
 */
int kdl__split_cos_rows(const double *rows, size_t ld, size_t c, size_t d, const double *inv,
                        size_t i0, size_t i1, double *ret);

/* 1 / max(|w_i|, @cos_eps) for each row of @w into @ret (C doubles). */
void kdl__split_inv_norms(const kdl_tensor *w, double cos_eps, double *ret);

/* ---- split-domain.c ---- */

/* The K best confused pairs seen so far: a heap whose root is the worst. */
struct kdl__split_top {
        size_t k, n;
        kdl_split_pair *heap; /* k entries */
};

/* An empty heap of @k pairs.  Return: 0; -ENOMEM. */
int kdl__split_top_init(struct kdl__split_top *t, size_t k);

void kdl__split_top_release(struct kdl__split_top *t);

/* Offer the pair (@i, @j) of soft count @mass. */
void kdl__split_top_add(struct kdl__split_top *t, size_t i, size_t j, double mass);

/* Whether a pair of soft count @mass may enter the heap (a quick test
 * before kdl__split_top_add()). */
static inline bool kdl__split_top_wants(const struct kdl__split_top *t, double mass)
{
        return t->n < t->k || mass >= t->heap[0].mass;
}

/* The pairs of @t, most confused first, with M_ij from @count, into
 * @r->top and @r->ntop.  Return: 0; -ENOMEM. */
int kdl__split_top_result(const struct kdl__split_top *t, const size_t *count,
                          kdl_split_tau_result *r);

struct kdl_split_blocks {
        size_t c;
        kdl_split_opts o;
        size_t nblocks, q; /* the blocks; the open one (nblocks: every block closed) */
        size_t start[KDL_SPLIT_MAX_BLOCKS + 1];
        size_t n, nfirst; /* samples of the open block; of the first */
        /* The open block [s, e), l = C - s, b = e - s, per τ: A_ij for its
         * classes i and j >= s (b x l, row-major), then A_ji for j >= e and
         * its classes i ((C - e) x b): b (2l - b) doubles. */
        double *acc[KDL_SPLIT_MAX_TAUS];
        size_t acc_size;                               /* doubles of each acc */
        kdl_comoments agree[KDL_SPLIT_MAX_TAUS][2];    /* ((M + Mᵀ)/2, S^t), (.., S^s) */
        struct kdl__split_top top[KDL_SPLIT_MAX_TAUS]; /* confused pairs */
        double *work;                                  /* [2C] one sample's softmax */
};

/* Check that the complete blocked domain @d goes with the first pass @s.
 * Return: 0; -KDL_EMISSING with a block still open; -KDL_EMISMATCH. */
int kdl__split_blocks_check(const kdl_split_blocks *d, const kdl_split_state *s);

/* The domain values of @d at temperature @k into @t (pearson_confusion_*,
 * the confused pairs).  Return: 0; -ENOMEM. */
int kdl__split_blocks_tau(const kdl_split_blocks *d, size_t k, const size_t *count,
                          kdl_split_tau_result *t);

#endif
