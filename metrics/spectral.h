/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_SPECTRAL_H
#define KDL_METRICS_SPECTRAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/base/tensor.h"

/*
 * Feature-dimension sufficiency (docs/dims.md): covariance spectra,
 * their summaries (numerical rank, effective rank, participation ratio,
 * dimensions for a share of the variance), the Eckart–Young residual curve of
 * the teacher's centred logits, the ridge R² of those logits from a student's
 * features, the rank of W^T F W, and the verdict per student.
 *
 * One streaming state serves all of them: the joint second moments of a
 * feature block X [n, dx] and an optional target block Y [n, dy],
 *
 *     n,  mean(X),  mean(Y),  Sxx = Xc^T Xc,  Sxy = Xc^T Yc,  tss = ||Yc||_F^2,
 *
 * where Xc, Yc are centred across samples.  Memory is O(dx^2 + dx*dy),
 * independent of n.  A block is centred on its own mean and added with
 * dsyrk/dgemm; states (and blocks) are combined with the exact pairwise
 * update of Chan, Golub & LeVeque (1979):
 *
 *     S = S_a + S_b + (n_a n_b / n) delta_x delta_y^T,  delta = mean_b - mean_a,
 *
 * so merge(state(A), state(B)) equals the state of A then B to rounding.
 *
 * Everything reported is in eigenvalue (variance) units: a tolerance `rtol`
 * compares eigenvalues of a covariance, i.e. squared singular values of the
 * centred data.
 */

/*
 * Default relative tolerance of the numerical rank: eigenvalues above
 * KDL_SPECTRAL_RANK_RTOL * lambda_1 count.  1e-6 in variance units is 1e-3 in
 * singular-value (standard-deviation) units: a direction whose spread is under
 * 0.1 % of the widest one does not count.  It sits above the quantisation
 * noise of float16-stored dumps (about 1e-7 of a coordinate's variance) and of
 * float32/64 rounding, so a dump's storage precision does not inflate the rank
 * to D, and it is far below any direction that matters for a linear read-out.
 * kdl_spectral_opts_init() sets it; callers pass their own tolerance to
 * kdl_spectral_finalize() to change it.
 */
#define KDL_SPECTRAL_RANK_RTOL 1e-6

/* Flags of kdl_spectral_state_new(). */
enum kdl_spectral_flag {
        /* Replace each row x of X by c(x) = x - mean_k(x_k) 1 before it is
         * accumulated (the per-example centred logit of
         * docs/conventions.md#the-kd-criterion-and-the-temperature). */
        KDL_SPECTRAL_CENTER_ROWS_X = 1u << 0,
        /* The same for the rows of Y. */
        KDL_SPECTRAL_CENTER_ROWS_Y = 1u << 1,
};

typedef struct kdl_spectral_state kdl_spectral_state;

/**
 * kdl_spectral_state_new() - an empty joint-moment state.
 * @dx:    columns of the feature block X, >= 1.
 * @dy:    columns of the target block Y; 0 when there is no target (then
 *         only the spectrum of X is available).
 * @flags: bitwise or of enum kdl_spectral_flag.
 * @ret:   set on success only; caller frees with kdl_spectral_state_free().
 *
 * Memory: dx^2 + dx*dy + dx + dy doubles, plus a scratch copy of the largest
 * block accumulated ((dx + dy) doubles per row), kept for reuse.
 *
 * Return: 0; -KDL_ESHAPE if @dx is 0 or a row-centring flag is given for a
 * block of one column (c(x) would be 0); -KDL_EOVERFLOW if a size does not
 * fit BLAS; -ENOMEM.
 */
KDL_API int kdl_spectral_state_new(size_t dx, size_t dy, unsigned flags, kdl_spectral_state **ret);

/*
 * How the spectrum of a state is computed.  The covariance is the default and
 * the only method with a target block; the other two exist for a wide X with
 * no target (a model's C-wide logits), where a dx x dx matrix does not fit.
 */
enum kdl_spectral_method {
        /* Exact, from the dx x dx scatter: memory O(dx^2), time O(n dx^2 + dx^3). */
        KDL_SPECTRAL_EXACT_FEATURES,
        /* Exact, from the n x n Gram matrix of the rows, which the state keeps:
         * memory O(n dx + n^2), time O(n^2 dx + n^3).  The nonzero eigenvalues of
         * Xc^T Xc and Xc Xc^T are the same. */
        KDL_SPECTRAL_EXACT_GRAM,
        /* The top eigenvalues, with bounds, from a single-pass Nystrom sketch
         * S Omega of the scatter S by a seeded Gaussian test matrix Omega of
         * rank + oversample columns; tr(S) exact (see kdl_spectral_finalize()):
         * memory O(dx (rank + oversample)), time O(n dx (rank + oversample)). */
        KDL_SPECTRAL_SKETCH,
        KDL_SPECTRAL_METHOD_COUNT_
};

/* Defaults of kdl_spectral_plan_init(). */
#define KDL_SPECTRAL_SKETCH_RANK       256
#define KDL_SPECTRAL_SKETCH_OVERSAMPLE 16

/* A method and its parameters; kdl_spectral_plan_init() gives the defaults. */
typedef struct kdl_spectral_plan {
        enum kdl_spectral_method method; /* default KDL_SPECTRAL_EXACT_FEATURES */
        size_t rows;                     /* exact-gram: rows reserved at the first block (the
                                          * samples expected); 0: grown as blocks come */
        size_t rank;                     /* sketch: r, the eigenvalues reported, >= 1 */
        size_t oversample;               /* sketch: p; Omega has k = min(r + p, dx) columns */
        uint64_t seed; /* sketch: seed of Omega (a pure function of seed, row, column) */
} kdl_spectral_plan;

/**
 * kdl_spectral_plan_init() - exact features; for the sketch rank
 * KDL_SPECTRAL_SKETCH_RANK, oversample KDL_SPECTRAL_SKETCH_OVERSAMPLE, seed 0.
 */
KDL_API void kdl_spectral_plan_init(kdl_spectral_plan *p);

/** kdl_spectral_method_name() - "exact-features", "exact-gram" or "sketch".  Static. */
KDL_API const char *kdl_spectral_method_name(enum kdl_spectral_method m);

/**
 * kdl_spectral_bytes() - the peak memory of a state with plan @p (NULL: exact
 * features) over @n samples of [@dx | @dy] columns fed in blocks of at most
 * @block_rows rows, finalize included, so that a caller can choose a method or
 * refuse before allocating.
 * Return: the bytes, or SIZE_MAX if the sizes overflow.
 */
KDL_API size_t kdl_spectral_bytes(const kdl_spectral_plan *p, size_t n, size_t dx, size_t dy,
                                  size_t block_rows);

/**
 * kdl_spectral_plan_choose() - the method for a state over @n samples of @dx
 * columns with no target that fits @budget bytes.
 * @exact_max:  the largest side an exact method may solve: dx for the
 *              features, n for the Gram.
 * @block_rows: as for kdl_spectral_bytes().
 * @p:          in: the sketch's parameters (kept); out: method (and rows)
 *              set, on success only.
 *
 * The exact method with the smaller side (the features on a tie) when that
 * side is at most @exact_max and its kdl_spectral_bytes() at most @budget;
 * else the other exact one on the same terms; else the sketch.
 *
 * Return: 0; -KDL_ERANGE when even the sketch needs more than @budget (the
 * message gives both sizes).
 */
KDL_API int kdl_spectral_plan_choose(size_t n, size_t dx, size_t budget, size_t exact_max,
                                     size_t block_rows, kdl_spectral_plan *p);

/**
 * kdl_spectral_state_new_plan() - kdl_spectral_state_new() with a method.
 * @p: borrowed (copied); NULL: exact features.
 *
 * Memory: kdl_spectral_bytes().  The sketch draws Omega here ([dx, k],
 * orthonormalised).
 *
 * Return: as kdl_spectral_state_new(); -KDL_ERANGE if @p->method is not a
 * method, or the sketch's rank is 0; -KDL_ESHAPE if a method other than the
 * features is given a target block (@dy > 0).
 */
KDL_API int kdl_spectral_state_new_plan(size_t dx, size_t dy, unsigned flags,
                                        const kdl_spectral_plan *p, kdl_spectral_state **ret);

/** kdl_spectral_state_free() - free @s.  NULL is a no-op. */
KDL_API void kdl_spectral_state_free(kdl_spectral_state *s);

/**
 * kdl_spectral_accumulate() - add the samples of a row block.
 * @s: the state.
 * @x: [m, dx] block of X; any strides; borrowed, not modified.
 * @y: [m, dy] block of Y with the same samples in the same order; NULL if and
 *     only if the state has dy == 0.
 *
 * A block of 0 rows is a no-op.  Cost: O(m (dx^2 + dx dy)) through dsyrk and
 * dgemm.
 *
 * Return: 0; -KDL_ESHAPE if a block is not 2-D, has the wrong number of
 * columns, or @x and @y differ in rows; -KDL_ENONFINITE naming the first
 * block row with NaN/Inf; -KDL_EOVERFLOW; -ENOMEM.  On failure @s is
 * unchanged (the scratch it keeps for reuse aside).
 */
KDL_API int kdl_spectral_accumulate(kdl_spectral_state *s, const kdl_tensor *x,
                                    const kdl_tensor *y);

/**
 * kdl_spectral_merge() - add the samples of @from to @into (exact; for the
 * sketch, the sketch of the union).
 * @from: borrowed, not modified; may be empty.
 *
 * Return: 0; -KDL_EMISMATCH if dx, dy, the flags or the plans differ (for the
 * sketch: rank, oversample and seed; the Gram's reserved rows may differ);
 * -ENOMEM.  On failure @into is unchanged.
 */
KDL_API int kdl_spectral_merge(kdl_spectral_state *into, const kdl_spectral_state *from);

/*
 * The state as bytes, for the processes of one MPI run (analysis/dist.h), in
 * host layout, readable by the same build only: n, the means and, by method,
 * the upper triangle of Sxx, Sxy and tss (exact features: 2 + dx + dy +
 * dx (dx + 1) / 2 + dx dy doubles), the shift and every row kept (exact
 * Gram: 1 + dy + 2 dx + n dx), or Y and the trace (sketch: 2 + dx + dy +
 * dx k, k = rank + oversample).  The sketch's Omega is not sent: it is a
 * function of the seed.
 *
 * kdl_spectral_state_pack() - @s as bytes; *@buf malloc'd, the caller frees.
 * Return: 0; -ENOMEM.
 * kdl_spectral_state_merge_packed() - add the samples of a packed state (of
 * the same shape, flags and plan as @s) to @s, as kdl_spectral_merge().
 * kdl_spectral_state_load_packed() - @s becomes the packed state (exactly).
 * Return: 0; -KDL_ESCHEMA when @len is not the size of a state shaped as @s;
 * -ENOMEM; the codes of kdl_spectral_merge().  On failure @s is unchanged,
 * except after -ENOMEM from kdl_spectral_state_load_packed() (free it then).
 */
KDL_API int kdl_spectral_state_pack(const kdl_spectral_state *s, void **buf, size_t *len);
KDL_API int kdl_spectral_state_merge_packed(kdl_spectral_state *s, const void *buf, size_t len);
KDL_API int kdl_spectral_state_load_packed(kdl_spectral_state *s, const void *buf, size_t len);

/** kdl_spectral_count() - samples accumulated so far. */
KDL_API size_t kdl_spectral_count(const kdl_spectral_state *s);

/* Summary statistics of a spectrum lambda_1 >= ... >= lambda_d >= 0. */
typedef struct kdl_spectral_summary {
        double total;                  /* sum of lambda_k (the trace) */
        double rank_rtol;              /* the tolerance used for @rank */
        size_t rank;                   /* #{k : lambda_k > rank_rtol * lambda_1} */
        double effective_rank;         /* exp(H(lambda / total)), Roy & Vetterli 2007 */
        double participation_ratio;    /* total^2 / sum lambda_k^2 */
        size_t dims90, dims95, dims99; /* least k whose top-k share of total is
                                        * >= 90 / 95 / 99 % */
} kdl_spectral_summary;

/**
 * kdl_spectral_summarize() - summary statistics of a descending spectrum.
 * @lambda:    @d eigenvalues, descending; negative values (rounding) count
 *             as 0.  Borrowed.
 * @rank_rtol: relative tolerance of the numerical rank, >= 0.
 * @ret:       set on success only.
 *
 * Roy & Vetterli's effective rank is taken of the covariance matrix, whose
 * singular values are the lambda_k: exp(-sum p_k ln p_k) with
 * p_k = lambda_k / total and 0 ln 0 = 0; this is exp(H(sigma^2 / sum
 * sigma^2)) of the centred data's singular values (docs/dims.md).  A uniform
 * spectrum over k directions gives effective rank = participation ratio = k.
 * A zero spectrum (no variance) gives 0 for every field.
 *
 * Return: 0; -KDL_ENONFINITE if an eigenvalue is NaN/Inf; -KDL_ERANGE if
 * @rank_rtol is negative or NaN.
 */
KDL_API int kdl_spectral_summarize(const double *lambda, size_t d, double rank_rtol,
                                   kdl_spectral_summary *ret);

/* Ridge regression of Y on X with an unpenalised intercept. */
typedef struct kdl_spectral_ridge {
        double lambda; /* penalty on ||B||_F^2 in sum-of-squares units: minimises
                        * ||Yc - Xc B||_F^2 + lambda ||B||_F^2 (scikit-learn
                        * Ridge(alpha=lambda, fit_intercept=True)) */
        bool by_gcv;   /* lambda was chosen by generalised cross-validation */
        double df;     /* effective parameters per target: sum s_i / (s_i + lambda) */
        double rss;    /* ||Yc - Xc B||_F^2 at lambda */
        double tss;    /* ||Yc||_F^2 */
        double r2;     /* 1 - rss / tss (pooled over the dy targets, in sample);
                        * NaN when tss == 0 */
        double gcv;    /* (rss / n) / (1 - (1 + df) / n)^2: the GCV estimate of the
                        * squared prediction error per sample, summed over the
                        * targets; +Inf when 1 + df >= n */
        double r2_gcv; /* 1 - n gcv / tss: the GCV estimate of the out-of-sample
                        * R^2 (<= r2); NaN when tss == 0 */
} kdl_spectral_ridge;

/* Options of kdl_spectral_finalize(); kdl_spectral_opts_init() gives the defaults. */
typedef struct kdl_spectral_opts {
        double rank_rtol;    /* numerical-rank tolerance, KDL_SPECTRAL_RANK_RTOL by default */
        double ridge_lambda; /* finite and >= 0: the ridge penalty to use; otherwise
                              * (e.g. -1, the default) chosen by GCV */
} kdl_spectral_opts;

/**
 * kdl_spectral_opts_init() - set every field of @o to its default: the rank
 * tolerance KDL_SPECTRAL_RANK_RTOL, the ridge penalty chosen by GCV.
 */
KDL_API void kdl_spectral_opts_init(kdl_spectral_opts *o);

typedef struct kdl_spectral_result {
        size_t n;                 /* samples */
        size_t d;                 /* dx */
        double *eig;              /* d eigenvalues of the sample covariance Sxx / (n - 1),
                                   * descending, rounding negatives set to 0.  Sketch: the
                                   * first neig are lower bounds, the rest 0 (unknown). */
        double *tail;             /* d + 1 entries: tail[k] = sum_{j > k} lambda_j / total,
                                   * the share of the variance outside the best k-dimensional
                                   * affine fit (Eckart–Young); tail[0] = 1, tail[d] = 0.
                                   * All 0 when total == 0.  Sketch: an upper bound. */
        kdl_spectral_summary sum; /* sketch: total exact, dims90/95/99 the least k
                                   * whose upper bound tail[k] is <= 0.10 / 0.05 /
                                   * 0.01; rank 0, effective rank and participation
                                   * ratio NaN (they need the whole spectrum) */
        bool has_ridge;           /* dy > 0 */
        kdl_spectral_ridge ridge; /* valid when has_ridge */

        enum kdl_spectral_method method;
        size_t neig;     /* eigenvalues worth listing: d (features), min(n, d) (Gram:
                          * the rest are 0), the sketch's rank r */
        size_t sketch_k; /* sketch: columns of Omega; 0 otherwise */
        double *eig_hi;  /* sketch: neig upper bounds, eig[i] <= lambda_i <= eig_hi[i]
                          * (up to rounding); NULL when exact */
        double *tail_lo; /* sketch: d + 1 lower bounds of tail; NULL when exact */
        double bound;    /* sketch: t / (n - 1), the trace of the residual: eig_hi[i] -
                          * eig[i] <= bound for every i (= for i = 0); 0 when exact */
} kdl_spectral_result;

/**
 * kdl_spectral_finalize() - spectrum of cov(X) and, when the state has a
 * target block, the ridge fit of Y from X.
 * @s:   borrowed, not modified.
 * @opt: see kdl_spectral_opts; start from kdl_spectral_opts_init().
 * @ret: set on success only; caller frees with kdl_spectral_result_free().
 *
 * One symmetric eigendecomposition of Sxx (LAPACK dsyevd; eigenvectors only
 * when there is a target).  The ridge fit then needs no further pass over the
 * data: with Sxx = V diag(s) V^T and Q = V^T Sxy, q_i = ||Q_i||^2,
 *
 *     rss(lambda) = tss - sum_i q_i (s_i + 2 lambda) / (s_i + lambda)^2,
 *     df(lambda)  = sum_i s_i / (s_i + lambda),
 *     GCV(lambda) = (rss / n) / (1 - (1 + df) / n)^2
 *                   (Golub, Heath & Wahba 1979; the 1 is the intercept),
 *
 * so GCV is evaluated in O(dx) per lambda.  It is minimised over 301
 * log-spaced values of lambda / s_1 in [1e-10, 1e5], then refined by a golden
 * section search between the neighbours of the best grid value.  A given
 * lambda of 0 is ordinary least squares with the pseudo-inverse (directions
 * with s_i <= rank_rtol * s_1 dropped).  Memory: about 3 dx^2 + dx dy doubles
 * at the peak (the copy of Sxx and the LAPACK workspace).
 *
 * Exact Gram: the rows kept are centred on their mean, G = Xc Xc^T [n, n] and
 * its eigenvalues (dsyevd) are those of Sxx, padded with zeros.
 *
 * Sketch (k = columns of Omega, orthonormal; Y = S Omega accumulated in the
 * pass with the same exact pairwise centring as Sxx): the stabilised Nystrom
 * approximation of Tropp, Yurtsever, Udell & Cevher (2017, Alg. 3), with
 * shift nu = sqrt(dx) eps ||Y||_F: B = Omega^T (Y + nu Omega) = U^T U
 * (Cholesky), E = (Y + nu Omega) U^-1, sigma = svd(E), lo_i = max(sigma_i^2 -
 * nu, 0).  Since the Nystrom approximation A of S + nu I satisfies A <= S +
 * nu I, the residual R = S - (A - nu I) is positive semi-definite with the
 * exact trace t = tr(S) - sum sigma_i^2 + dx nu, so by Weyl's and Ky Fan's
 * inequalities (lambda_b(R) <= t / b), with L_d = sum_{j<=d} lo_j and H_d =
 * sum_{j<=d} hi_j, for every i, d <= k,
 *
 *     lo_i <= lambda_i(S) <= hi_i = min_{a<=i} lo_a + t / (i - a + 1)  (<= lo_i + t),
 *     max(0, tr(S) - t - L_d, tr(S) - H_d) <= residual(d) <= tr(S) - L_d
 *
 * (residual(d) = sum_{j>d} lambda_j(S)).  Beyond k the eigenvalues are
 * unknown but descending, so residual(d) <=
 * residual(k) (R - d) / (R - k) for k <= d <= R = the largest possible rank
 * (min(n - 1, dx), dx - 1 with row centring).  The bound t is a posteriori
 * and deterministic (given the sketch); its expectation over Omega is at most
 * (1 + q / (k - q - 1)) sum_{j>q} lambda_j for any 2 <= q <= k - 2 (Halko,
 * Martinsson & Tropp 2011, Thm 10.5, applied to S^(1/2)): small when the
 * spectrum beyond about k/2 holds little variance.  Memory at the peak:
 * about 3 dx k doubles.
 *
 * Return: 0; -KDL_EMISSING if no sample was accumulated; -KDL_ESHAPE if
 * only one was; -KDL_ERANGE if @opt->rank_rtol is negative or NaN;
 * -KDL_ENOCONV if the eigensolver fails; -ENOMEM.
 */
KDL_API int kdl_spectral_finalize(const kdl_spectral_state *s, const kdl_spectral_opts *opt,
                                  kdl_spectral_result **ret);

/** kdl_spectral_result_free() - free @r.  NULL is a no-op. */
KDL_API void kdl_spectral_result_free(kdl_spectral_result *r);

/* The tests a student width fails (bit flags; 0 means sufficient). */
enum kdl_dims_fail {
        KDL_DIMS_ARCHITECTURAL = 1u << 0, /* d_s < d_needed */
        KDL_DIMS_REALISED = 1u << 1,      /* ridge R^2 < 1 - tolerance */
};

/* The two answers of kdl_spectral_verdict() for one student.  From an exact
 * spectrum the _lo fields equal their partners; from a sketch's bounds the
 * true values lie between them. */
typedef struct kdl_spectral_verdict_result {
        size_t d_needed;    /* least d with residual(d) <= tolerance, in [0, C];
                             * sketch: with its upper bound <= tolerance (a width
                             * that surely suffices) */
        size_t d_needed_lo; /* sketch: least d with its lower bound <= tolerance */
        double residual;    /* residual fraction at min(d_s, C); sketch: upper bound */
        double residual_lo; /* sketch: its lower bound */
        bool realised;      /* the realised test ran (an R^2 was given) */
        bool unresolved;    /* sketch: d_needed_lo <= d_s < d_needed, the bounds
                             * cannot tell the architectural answer (not a failure) */
        unsigned fails;     /* or of enum kdl_dims_fail */
} kdl_spectral_verdict_result;

/**
 * kdl_spectral_verdict() - is a student width enough for the teacher's
 * logits, and do the student's features carry them?
 * @logits:    the result of a state over the teacher's logits (dx = C, flag
 *             KDL_SPECTRAL_CENTER_ROWS_X): its tail is the Eckart-Young
 *             residual curve residual(d).  Borrowed.
 * @d_s:       the student's feature width (the input of its head).
 * @r2:        the ridge R^2 of the teacher's centred logits from the
 *             student's head-input features; NaN when there is none (the
 *             realised test is then not run).
 * @tolerance: in [0, 1]: the share of the teacher's centred-logit variance a
 *             student may leave out (0.01 in kdlens dims).
 * @ret:       set on success only.
 *
 * Two answers, both driven by @tolerance:
 *  - architectural: d_needed is the least d whose best d-dimensional affine
 *    fit leaves at most @tolerance of the teacher's centred-logit variance.
 *    From a sketch (@logits->tail_lo set), it fails only when d_s <
 *    d_needed_lo, and is unresolved when d_needed_lo <= d_s < d_needed.
 *    A student's centred logits lie in an affine subspace of dimension at
 *    most d_s, so when d_s < d_needed no training can bring its
 *    centred-logit error below @tolerance (KDL_DIMS_ARCHITECTURAL), whatever
 *    the number of classes.
 *  - realised: the student's features explain R^2 of that variance by a
 *    linear read-out; it fails when R^2 < 1 - @tolerance
 *    (KDL_DIMS_REALISED).  A linear read-out of d_s features has rank at
 *    most d_s, so R^2 <= 1 - residual(d_s): a width that fails the first
 *    test fails the second whenever R^2 is measured on the d_s features.
 *
 * Return: 0; -KDL_ERANGE if @tolerance is outside [0, 1] or NaN, or @r2 is
 * infinite.
 */
KDL_API int kdl_spectral_verdict(const kdl_spectral_result *logits, size_t d_s, double r2,
                                 double tolerance, kdl_spectral_verdict_result *ret);

/**
 * kdl_spectral_head_rank() - rank of W^T F(z) W for a head W [C, d], the same
 * for every sample.
 * @w:         [C, d], any strides; borrowed.
 * @rank_rtol: as for the covariance: squared singular values above
 *             rank_rtol * sigma_1^2 count.
 * @ret_rank:  set on success only.
 *
 * F(z) = diag(p) - p p^T = G^T G with G = diag(sqrt p)(I - 1 p^T), so
 * rank(W^T F W) = rank(G W).  When every p_k > 0 (always true of a softmax)
 * the kernel of G is span(1), the same as that of the centring matrix H_C, so
 * rank(G W) = rank(W) - dim(col(W) ∩ span(1)) = rank(H_C W): the affine rank
 * of the head's class rows.  It is therefore computed once, from the singular
 * values of H_C W (LAPACK dgesdd), never from a d x d matrix; generically it
 * is min(d, C - 1) (docs/dims.md#directions-the-kl-cannot-see).  d minus it is the number of
 * feature directions the KL cannot see at second order.
 *
 * Return: 0; -KDL_ESHAPE if @w is not 2-D or is empty; -KDL_ENONFINITE;
 * -KDL_ERANGE for a bad @rank_rtol; -KDL_ENOCONV; -KDL_EOVERFLOW; -ENOMEM.
 */
KDL_API int kdl_spectral_head_rank(const kdl_tensor *w, double rank_rtol, size_t *ret_rank);

/**
 * kdl_spectral_support_rank() - sum over a block of logits of the rank of
 * W^T F_tau(z) W once classes of negligible probability are dropped.
 * @logits:    [m, C], any strides; borrowed.
 * @tau:       temperature, > 0 (p = softmax(z / tau)).
 * @rank_rtol: a class counts when p_k >= rank_rtol * max_j p_j.
 * @head_rank: kdl_spectral_head_rank() of the model's head.
 * @ret_sum:   set on success to sum_n min(head_rank, s_n - 1), where s_n is
 *             the number of classes that count for sample n.
 *
 * With p supported on S, rank(W^T F W) is the affine rank of the head rows
 * {w_k : k in S}, which is min(|S| - 1, head_rank) when the rows are in
 * general position (generic heads; an upper bound otherwise).  Dividing the
 * sum by the number of samples gives the mean number of feature directions
 * the tempered KL weighs per sample: a confident model at a low temperature
 * sees far fewer than head_rank.  O(C) per sample.  Sums of blocks add, so
 * this merges by addition.
 *
 * Return: 0; -KDL_ESHAPE if @logits is not 2-D with at least one column;
 * -KDL_ENONFINITE naming the first row with NaN/Inf; -KDL_ERANGE if @tau
 * is not positive and finite or @rank_rtol is not in [0, 1].
 */
KDL_API int kdl_spectral_support_rank(const kdl_tensor *logits, double tau, double rank_rtol,
                                      size_t head_rank, double *ret_sum);

#endif
