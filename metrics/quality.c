/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "metrics/base/alloc.h"
#include "metrics/base/budget.h"
#include "metrics/base/error.h"
#include "metrics/quality.h"
#include "metrics/quality-internal.h"
#include "metrics/base/banned.h"

#define DEFAULT_THRESHOLD 0.95
#define DEFAULT_EPS       1e-12
#define DEFAULT_RANK_RTOL 1e-12
/* The authors replace exact zeros of a class spectrum by this before taking
 * logs (TPlotClassificationEfficiency). */
#define SPECTRUM_FLOOR 1e-127
/* Columns centred together (kdl__quality_centred_spectrum()): a band of a row is a few
 * cache lines. */
#define CENTRE_COLS 64

static const char *const variant_names[KDL_QUALITY_VARIANT_COUNT_] = {"code", "pairs", "per-class"};

const char *kdl_quality_variant_name(enum kdl_quality_variant v)
{
        assert(v < KDL_QUALITY_VARIANT_COUNT_);
        return variant_names[v];
}

int kdl_quality_variant_parse(const char *s, enum kdl_quality_variant *ret)
{
        for (int v = 0; v < KDL_QUALITY_VARIANT_COUNT_; v++)
                if (strcmp(s, variant_names[v]) == 0) {
                        *ret = (enum kdl_quality_variant) v;
                        return 0;
                }
        return kdl_error(-KDL_EUSAGE,
                         "unknown quality variant '%s' (expected code, pairs or per-class)", s);
}

static int check_input(const kdl_tensor *x, const int64_t *labels, size_t nclasses,
                       const char *what)
{
        size_t bad;

        if (x->ndim != 2 || x->shape[1] == 0)
                return kdl_error(-KDL_ESHAPE, "%s: expected [n, D] features with D >= 1", what);
        for (size_t i = 0; i < x->shape[0]; i++)
                if (labels[i] < 0 || (uint64_t) labels[i] >= nclasses)
                        return kdl_error(-KDL_ERANGE, "%s: label %lld of row %zu is outside 0..%zu",
                                         what, (long long) labels[i], i,
                                         nclasses ? nclasses - 1 : 0);
        if (kdl_tensor_check_finite(x, &bad) < 0)
                return kdl_error(-KDL_ENONFINITE, "%s: non-finite value in row %zu", what, bad);
        return 0;
}

/* The rows of the @n @labels grouped by class, in row order within a class, into @order
 * [n]; @start [C+1] gets each class's first position. */
static void class_order(const int64_t *labels, size_t n, size_t nclasses, size_t *start,
                        size_t *order)
{
        memset(start, 0, (nclasses + 1) * sizeof(size_t));
        for (size_t i = 0; i < n; i++)
                start[labels[i] + 1]++;
        for (size_t c = 0; c < nclasses; c++)
                start[c + 1] += start[c];
        for (size_t i = 0; i < n; i++)
                order[start[labels[i]]++] = i;
        for (size_t c = nclasses; c > 0; c--)
                start[c] = start[c - 1];
        start[0] = 0;
}

/* The rows @order[0..@m-1] of @x into @out [m, D]. */
static void copy_rows(const kdl_tensor *x, const size_t *order, size_t m, double *out)
{
        size_t d = x->shape[1];

        for (size_t r = 0; r < m; r++)
                for (size_t j = 0; j < d; j++)
                        out[r * d + j] = KDL_AT2(x, order[r], j);
}

/* Rows of @x grouped by class into a contiguous copy [n, D]; @start [C+1]
 * gets each class's first row. */
static double *sorted_copy(const kdl_tensor *x, const int64_t *labels, size_t nclasses,
                           size_t *start)
{
        size_t n = x->shape[0], d = x->shape[1];
        size_t *order = kdl_new(size_t, n + 1);
        double *out = kdl__malloc(n * d + 1, sizeof(double));

        if (!order || !out) {
                free(order);
                free(out);
                return NULL;
        }
        class_order(labels, n, nclasses, start, order);
        copy_rows(x, order, n, out);
        free(order);
        return out;
}

/* Eigenvalues of the symmetric @a [n, n] (upper triangle used, destroyed),
 * in decreasing order and clamped at 0, into @w. */
int kdl__quality_eigvals_desc(double *a, size_t n, double *w)
{
        lapack_int info;

        if (n == 0)
                return 0;
        info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'N', 'U', (lapack_int) n, a, (lapack_int) n, w);
        assert(info >= 0);
        if (info > 0)
                return kdl_error(-KDL_ENOCONV, "symmetric eigensolver did not converge (info %d)",
                                 (int) info);
        for (size_t i = 0; i < n / 2; i++) {
                double t = w[i];

                w[i] = w[n - 1 - i];
                w[n - 1 - i] = t;
        }
        for (size_t i = 0; i < n; i++)
                if (w[i] < 0.0)
                        w[i] = 0.0;
        return 0;
}

/* Eigenvalues (decreasing) of YᵀY for the rows @y [m, d] centred in place:
 * min(m, d) of them, through the smaller of the m×m and d×d products.
 * @work holds min(m, d)² doubles. */
int kdl__quality_centred_spectrum(double *y, size_t m, size_t d, double *work, double *w,
                                  size_t *ret_k)
{
        size_t k = m < d ? m : d;
        int r;

        /* Column means a band of CENTRE_COLS columns at a time, the rows in order (the
         * sums of a column by column loop, with the rows read along their length). */
        for (size_t j0 = 0; j0 < d; j0 += CENTRE_COLS) {
                size_t nj = d - j0 < CENTRE_COLS ? d - j0 : CENTRE_COLS;
                double mean[CENTRE_COLS] = {0};

                for (size_t i = 0; i < m; i++)
                        for (size_t j = 0; j < nj; j++)
                                mean[j] += y[i * d + j0 + j];
                for (size_t j = 0; j < nj; j++)
                        mean[j] /= (double) m;
                for (size_t i = 0; i < m; i++)
                        for (size_t j = 0; j < nj; j++)
                                y[i * d + j0 + j] -= mean[j];
        }
        if (m <= d)
                cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int) m, (int) d, 1.0, y,
                            (int) d, 0.0, work, (int) m);
        else
                cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int) d, (int) m, 1.0, y,
                            (int) d, 0.0, work, (int) d);
        r = kdl__quality_eigvals_desc(work, k, w);
        if (r < 0)
                return r;
        *ret_k = k;
        return 0;
}

/* -Σ v ln v over @v[0..k-1] after the authors' floor and renormalisation. */
static double floored_entropy(const double *lam, size_t len, size_t k)
{
        double sum = 0.0, h = 0.0;

        for (size_t j = 0; j < k; j++) {
                double v = j < len ? lam[j] : 0.0;

                sum += v > 0.0 ? v : SPECTRUM_FLOOR;
        }
        for (size_t j = 0; j < k; j++) {
                double v = j < len ? lam[j] : 0.0;

                v = (v > 0.0 ? v : SPECTRUM_FLOOR) / sum;
                h -= v * log(v);
        }
        return h;
}

/* One class's spectrum: the normalised eigenvalues of the class-centred
 * scatter of its @nc rows @y (centred in place) into @lc, *@ret_len of them,
 * and k_c, the smallest count whose partial sum reaches @threshold (at most
 * @ncols - 1), into *@ret_kc.  A class with no variance is *@ret_degenerate
 * with k_c = 0.  @work: min(nc, d)² doubles. */
static int class_spectrum(double *y, size_t nc, size_t d, size_t ncols, double threshold,
                          double *work, double *lc, size_t *ret_len, size_t *ret_kc,
                          bool *ret_degenerate)
{
        size_t k, cnt = 0;
        double total = 0.0, cum = 0.0;
        int r;

        r = kdl__quality_centred_spectrum(y, nc, d, work, lc, &k);
        if (r < 0)
                return r;
        for (size_t j = 0; j < k; j++)
                total += lc[j];
        *ret_len = k;
        if (!(total > 0.0)) {
                *ret_degenerate = true;
                *ret_kc = 0;
                return 0;
        }
        for (size_t j = 0; j < k; j++)
                lc[j] /= total;
        while (cum < threshold && cnt < ncols - 1) {
                cum += cnt < k ? lc[cnt] : 0.0;
                cnt++;
        }
        /* The loop above tests the sum of the first cnt entries
         * before counting one more, as the authors' while loop. */
        *ret_kc = cnt;
        return 0;
}

/* @a * @b + @c, saturating. */
static size_t mul_add(size_t a, size_t b, size_t c)
{
        return kdl_sat_add(kdl_sat_mul(a, b), c);
}

/* The larger of @a and @b. */
static size_t larger(size_t a, size_t b)
{
        return a > b ? a : b;
}

/* What LAPACKE_dsyevd() allocates for a row-major [k, k] (the transposed copy, the work and
 * iwork arrays), in doubles; @vectors: jobz 'V'. */
static size_t syevd_doubles(size_t k, bool vectors)
{
        size_t work = vectors ? mul_add(2 * k, k, 6 * k + 1) : 2 * k + 1;

        return kdl_sat_add(mul_add(k, k, work), vectors ? 5 * k + 3 : 1);
}

size_t kdl_quality_bytes(size_t n, size_t d, size_t nclasses, size_t present, size_t ncr,
                         size_t ncols)
{
        size_t kmax = ncols < d ? ncols : d, kmin = n < d ? n : d, step, peak;
        /* The class-sorted copy and the Gram, alive throughout; the class offsets. */
        size_t base = kdl_sat_add(mul_add(n, d, 1), mul_add(n, n, 1) + nclasses + 1);
        /* The class means (of the classes present), the global mean and the norms. */
        size_t means = mul_add(present, d, d + 2 * present + 2);

        /* Class spectra: one class's rows, its k x k product and eigenvalues, the spectra
         * of the classes present, the row order and counters. */
        step = mul_add(ncols, d, kdl_sat_add(mul_add(kmax, kmax, 0), syevd_doubles(kmax, false)));
        step = kdl_sat_add(step, mul_add(present, kmax + 1, ncr + 5 * nclasses + 3));
        peak = step;
        /* Effective rank: the centred copy and the covariance (D <= n), else the Gram's. */
        step = d <= n ? mul_add(n, d, mul_add(d, d, syevd_doubles(d, false)))
                      : kdl_sat_add(n, syevd_doubles(n, false));
        peak = larger(peak, kdl_sat_add(step, kmin + 1));
        /* NCM: the n x classes scores. */
        peak = larger(peak, mul_add(n, present, means));
        /* NC1: M [d, classes], its eigenvectors, the two n x classes products. */
        step = mul_add(2 * n + d, present, mul_add(present, present, present + 1));
        peak = larger(peak, kdl_sat_add(kdl_sat_add(step, syevd_doubles(present, true)), means));
        /* The geometry's per-row and per-class sums. */
        peak = larger(peak, 2 * n + 6 * nclasses);
        return kdl_sat_mul(kdl_sat_add(base, peak), sizeof(double));
}

/* Rows of the largest class. */
static size_t largest_class(const size_t *start, size_t nclasses)
{
        size_t ncols = 0;

        for (size_t c = 0; c < nclasses; c++) {
                size_t nc = start[c + 1] - start[c];

                ncols = nc > ncols ? nc : ncols;
        }
        return ncols;
}

/*
 * I's entropy part from the class spectra of @xc (ComputeClassPCAID and
 * TPlotClassificationEfficiency): per class, the normalised eigenvalues of
 * the class-centred scatter, zero-padded to the largest class size; k_c the
 * smallest count whose partial sum reaches the threshold (at most
 * columns - 1).  Classes with fewer than 2 rows are skipped; a class with no
 * variance has k_c = 0 and entropy 0 (the code's NaN -> 0).
 */
static int class_entropy(const kdl_tensor *xc, const int64_t *labels_c, size_t nclasses,
                         const kdl_quality_opts *o, kdl_quality *q)
{
        size_t d = xc->shape[1], ncols, kmax, used = 0, ksum = 0, nwith = 0;
        size_t *start = kdl_new(size_t, nclasses + 1), *kc = NULL, *len = NULL, *slot = NULL;
        size_t *order = kdl_new(size_t, xc->shape[0] + 1);
        double *y = NULL, *work = NULL, *lam = NULL, hsum = 0.0;
        bool *degenerate = NULL;
        int r = 0;

        if (!start || !order) {
                r = -ENOMEM;
                goto out;
        }
        /* One class at a time: its rows copied into @y, as large as the largest class. */
        class_order(labels_c, xc->shape[0], nclasses, start, order);
        kc = kdl_new(size_t, nclasses);
        len = kdl_new(size_t, nclasses);
        degenerate = kdl_new(bool, nclasses);
        slot = kdl_new(size_t, nclasses);
        ncols = largest_class(start, nclasses);
        kmax = ncols < d ? ncols : d;
        /* A spectrum per class with two rows or more: memory in the classes
         * present, not in @nclasses. */
        for (size_t c = 0; slot && c < nclasses; c++)
                if (start[c + 1] - start[c] >= 2)
                        slot[c] = nwith++;
        y = kdl__malloc(ncols * d + 1, sizeof(double));
        work = kdl__malloc(kmax * kmax + 1, sizeof(double));
        lam = kdl__malloc(nwith * (kmax + 1) + 1, sizeof(double));
        if (!y || !kc || !len || !degenerate || !slot || !work || !lam) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t c = 0; c < nclasses; c++) {
                if (start[c + 1] - start[c] < 2)
                        continue;
                if (used == 0 || start[c + 1] - start[c] < q->spectra_rows_min)
                        q->spectra_rows_min = start[c + 1] - start[c];
                copy_rows(xc, order + start[c], start[c + 1] - start[c], y);
                r = class_spectrum(y, start[c + 1] - start[c], d, ncols, o->var_threshold, work,
                                   lam + slot[c] * (kmax + 1), &len[c], &kc[c], &degenerate[c]);
                if (r < 0)
                        goto out;
                used++;
                ksum += kc[c];
        }
        if (used == 0) {
                r = kdl_error(-KDL_ESHAPE, "class spectra: no class has two samples");
                goto out;
        }
        for (size_t c = 0; c < nclasses; c++) {
                const double *lc;

                if (start[c + 1] - start[c] < 2 || degenerate[c])
                        continue;
                lc = lam + slot[c] * (kmax + 1);
                if (o->variant != KDL_QUALITY_PER_CLASS)
                        hsum += floored_entropy(lc, len[c], ksum < ncols ? ksum : ncols);
                else if (kc[c] > 1)
                        hsum += floored_entropy(lc, len[c], kc[c]) / log((double) kc[c]);
        }
        q->entropy = hsum / (double) used;
        q->entropy_norm = o->variant != KDL_QUALITY_PER_CLASS ? log(5.0) : 1.0;
        q->k_sum = ksum;
        q->k_mean = (double) ksum / (double) used;
        q->nspectra = used;
out:
        free(lam);
        free(work);
        free(slot);
        free(degenerate);
        free(len);
        free(kc);
        free(y);
        free(order);
        free(start);
        return r;
}

/* Sums over the pairs of rows of the subsample's Gram matrix, per class. */
struct geometry {
        double *nrm, *inv; /* [n] ‖f‖, and 1/‖f‖ (0 for a feature that counts as zero) */
        double *sum_intra; /* [C] Σ |cos| over the pairs a < b within a class */
        double *sum_diag;  /* [C] Σ |cos(f_a, f_a)| (1, or 0 for a zero feature), when wanted */
        double *min_intra; /* [C] the smallest of them (the diagonal's too, when wanted) */
        double inter;      /* Σ over the pairs of classes c < c2 of their mean |cos| */
        size_t npairs;     /* and the number of such pairs */
        double *mind2;     /* [C] the smallest squared distance to another class */
        size_t *ea, *eb;   /* [C] the two rows at that distance: own, other */
};

static void geometry_release(struct geometry *gm)
{
        free(gm->eb);
        free(gm->ea);
        free(gm->mind2);
        free(gm->min_intra);
        free(gm->sum_diag);
        free(gm->sum_intra);
        free(gm->inv);
        free(gm->nrm);
}

static int geometry_init(struct geometry *gm, size_t n, size_t nclasses)
{
        gm->nrm = kdl_new(double, n);
        gm->inv = kdl_new(double, n);
        gm->sum_intra = kdl_new(double, nclasses);
        gm->sum_diag = kdl_new(double, nclasses);
        gm->min_intra = kdl_new(double, nclasses);
        gm->mind2 = kdl_new(double, nclasses);
        gm->ea = kdl_new(size_t, nclasses);
        gm->eb = kdl_new(size_t, nclasses);
        if (!gm->nrm || !gm->inv || !gm->sum_intra || !gm->sum_diag || !gm->min_intra ||
            !gm->mind2 || !gm->ea || !gm->eb)
                return -ENOMEM;
        for (size_t c = 0; c < nclasses; c++) {
                gm->min_intra[c] = INFINITY;
                gm->mind2[c] = INFINITY;
        }
        return 0;
}

/* Feature norms from the diagonal of the Gram @g [n, n]; a row with
 * ‖f‖ <= @eps keeps inverse 0.  Return: the number of such rows. */
static size_t gram_norms(const double *g, size_t n, double eps, struct geometry *gm)
{
        size_t nzero = 0;

        for (size_t a = 0; a < n; a++) {
                double v = g[a * n + a] > 0.0 ? sqrt(g[a * n + a]) : 0.0;

                gm->nrm[a] = v;
                if (v > eps)
                        gm->inv[a] = 1.0 / v;
                else
                        nzero++;
        }
        return nzero;
}

/* Every cosine and distance from the upper triangle of the Gram @g [n, n]
 * of class-sorted rows (@start), so that a class pair is a block; classes
 * with fewer than 2 rows are left out.  With @diagonal the within-class
 * blocks include their diagonal (sum_diag, and the minimum).  A pair of
 * classes is one block, so its mean |cos| is added to gm->inter when the
 * block is done: no C x C table, whatever the number of classes. */
static void gram_pairs(const double *g, size_t n, const size_t *start, size_t nclasses,
                       bool diagonal, struct geometry *gm)
{
        for (size_t c = 0; c < nclasses; c++) {
                if (start[c + 1] - start[c] < 2)
                        continue;
                for (size_t c2 = c; c2 < nclasses; c2++) {
                        double blk = 0.0;

                        if (start[c2 + 1] - start[c2] < 2)
                                continue;
                        for (size_t a = start[c]; a < start[c + 1]; a++) {
                                const double *ga = g + a * n;
                                size_t b0 = c2 == c ? a + !diagonal : start[c2];

                                for (size_t b = b0; b < start[c2 + 1]; b++) {
                                        double cosv = fabs(ga[b]) * gm->inv[a] * gm->inv[b];

                                        if (b == a) {
                                                gm->sum_diag[c] += cosv;
                                                if (cosv < gm->min_intra[c])
                                                        gm->min_intra[c] = cosv;
                                        } else if (c2 == c) {
                                                gm->sum_intra[c] += cosv;
                                                if (cosv < gm->min_intra[c])
                                                        gm->min_intra[c] = cosv;
                                        } else {
                                                double d2 = ga[a] + g[b * n + b] - 2.0 * ga[b];

                                                d2 = d2 > 0.0 ? d2 : 0.0;
                                                blk += cosv;
                                                if (d2 < gm->mind2[c]) {
                                                        gm->mind2[c] = d2;
                                                        gm->ea[c] = a;
                                                        gm->eb[c] = b;
                                                }
                                                if (d2 < gm->mind2[c2]) {
                                                        gm->mind2[c2] = d2;
                                                        gm->ea[c2] = b;
                                                        gm->eb[c2] = a;
                                                }
                                        }
                                }
                        }
                        if (c2 != c) {
                                gm->inter += blk / ((double) (start[c + 1] - start[c]) *
                                                    (double) (start[c2 + 1] - start[c2]));
                                gm->npairs++;
                        }
                }
        }
}

/* The class averages of S, the within-class minima and E from the pair
 * sums @gm, over the @used classes with 2 rows or more: q's intra, inter,
 * min_intra, dmin and norm.  With @block the within-class mean is over the
 * whole n_c x n_c block (2 Σ_{a<b} + Σ_a diagonal) / n_c², as the authors'
 * code averages it; otherwise over the n_c (n_c - 1) / 2 pairs a < b. */
static void class_averages(const struct geometry *gm, const double *xs, size_t d,
                           const size_t *start, size_t nclasses, size_t used, bool block,
                           kdl_quality *q)
{
        double intra = 0.0, mi = 0.0, dmin = 0.0, norm = 0.0;

        for (size_t c = 0; c < nclasses; c++) {
                size_t nc = start[c + 1] - start[c];
                double ns = 0.0, dd = 0.0;

                if (nc < 2)
                        continue;
                if (q->class_rows_min == 0 || nc < q->class_rows_min)
                        q->class_rows_min = nc;
                if (block)
                        intra += (2.0 * gm->sum_intra[c] + gm->sum_diag[c]) /
                                 ((double) nc * (double) nc);
                else
                        intra += gm->sum_intra[c] / ((double) nc * (double) (nc - 1) / 2.0);
                mi += gm->min_intra[c];
                /* The nearest enemy again, from the features: the
                 * Gram form loses digits for close pairs. */
                for (size_t j = 0; j < d; j++) {
                        double t = xs[gm->ea[c] * d + j] - xs[gm->eb[c] * d + j];

                        dd += t * t;
                }
                dmin += sqrt(dd);
                for (size_t a = start[c]; a < start[c + 1]; a++)
                        ns += gm->nrm[a];
                norm += ns / (double) nc;
        }
        q->intra = intra / (double) used;
        q->inter = gm->inter / (double) gm->npairs;
        q->min_intra = mi / (double) used;
        q->dmin = dmin / (double) used;
        q->norm = norm / (double) used;
}

/* S, the within-class minima and E of the class-sorted rows @xs [n, d] from
 * their Gram matrix, computed into @g [n, n] (upper triangle). */
static int geometry(const double *xs, size_t n, size_t d, const size_t *start, size_t nclasses,
                    size_t used, const kdl_quality_opts *o, double *g, kdl_quality *q)
{
        struct geometry gm = {0};
        int r;

        r = geometry_init(&gm, n, nclasses);
        if (r < 0)
                goto out;
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int) n, (int) d, 1.0, xs, (int) d,
                    0.0, g, (int) n);
        q->nzero = gram_norms(g, n, o->eps, &gm);
        gram_pairs(g, n, start, nclasses, o->variant == KDL_QUALITY_CODE, &gm);
        class_averages(&gm, xs, d, start, nclasses, used, o->variant == KDL_QUALITY_CODE, q);
        q->s = q->intra - q->inter;
        q->r = n < d ? n : d;
        q->packing =
                pow((o->population > 0.0 ? o->population : (double) n) / M_PI, 1.0 / (double) q->r);
        q->e = q->norm > 0.0 ? 2.0 * q->dmin / q->norm * q->packing : (double) NAN;
out:
        geometry_release(&gm);
        return r;
}

/* @v in [0, 1] (so not NaN). */
static bool unit(double v)
{
        return v >= 0.0 && v <= 1.0;
}

unsigned kdl_quality_range(const kdl_quality *q, size_t min_per_class)
{
        unsigned out = 0;

        assert(q);
        if (!unit(q->i))
                out |= KDL_QUALITY_I_OUT;
        if (!unit(q->e))
                out |= KDL_QUALITY_E_OUT;
        if (q->class_rows_min < min_per_class || q->spectra_rows_min < min_per_class)
                out |= KDL_QUALITY_FEW;
        return out;
}

void kdl_quality_opts_init(kdl_quality_opts *o)
{
        assert(o);
        *o = (kdl_quality_opts){
                .variant = KDL_QUALITY_CODE,
                .var_threshold = DEFAULT_THRESHOLD,
                .population = 0.0, /* the rows of @x */
                .eps = DEFAULT_EPS,
                .rank_rtol = DEFAULT_RANK_RTOL,
        };
}

/* @in, or kdl_quality_opts_init()'s when NULL, checked. */
static int resolve_opts(const kdl_quality_opts *in, kdl_quality_opts *o)
{
        if (in)
                *o = *in;
        else
                kdl_quality_opts_init(o);
        if (o->variant >= KDL_QUALITY_VARIANT_COUNT_ || !(o->var_threshold > 0.0) ||
            !(o->var_threshold <= 1.0) || !(o->eps > 0.0) || !(o->population >= 0.0))
                return kdl_error(-KDL_ERANGE, "quality: an option is out of range");
        return 0;
}

/* Both subsamples: their labels, values and widths, and sizes that fit. */
static int check_subsamples(const kdl_tensor *x, const int64_t *labels, const kdl_tensor *xc,
                            const int64_t *labels_c, size_t nclasses)
{
        size_t n, d, nn;
        int bi, r;

        r = check_input(x, labels, nclasses, "quality subsample");
        if (r < 0)
                return r;
        r = check_input(xc, labels_c, nclasses, "class-spectra subsample");
        if (r < 0)
                return r;
        n = x->shape[0];
        d = x->shape[1];
        if (xc->shape[1] != d)
                return kdl_error(-KDL_ESHAPE, "quality: subsamples have widths %zu and %zu", d,
                                 xc->shape[1]);
        if (kdl__blas_int(d, &bi) < 0 || kdl__blas_int(n, &bi) < 0 ||
            __builtin_mul_overflow(n, n, &nn))
                return kdl_error(-KDL_EOVERFLOW, "quality: %zu x %zu subsample overflows", n, d);
        return 0;
}

int kdl_quality_compute(const kdl_tensor *x, const int64_t *labels, const kdl_tensor *xc,
                        const int64_t *labels_c, size_t nclasses, const kdl_quality_opts *opts,
                        kdl_quality *ret)
{
        kdl_quality_opts o;
        kdl_quality q = {0};
        size_t n, d, used = 0, *start = NULL;
        double *xs = NULL, *g = NULL;
        int r;

        assert(x && labels && xc && labels_c && ret);
        r = resolve_opts(opts, &o);
        if (r < 0)
                return r;
        r = check_subsamples(x, labels, xc, labels_c, nclasses);
        if (r < 0)
                return r;
        n = x->shape[0];
        d = x->shape[1];
        start = kdl_new(size_t, nclasses + 1);
        if (!start)
                return -ENOMEM;
        xs = sorted_copy(x, labels, nclasses, start);
        g = kdl__malloc(n * n + 1, sizeof(double));
        if (!xs || !g) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t c = 0; c < nclasses; c++)
                used += start[c + 1] - start[c] >= 2;
        if (used < 2) {
                r = kdl_error(-KDL_ESHAPE,
                              "quality needs two classes with two samples each, got %zu", used);
                goto out;
        }
        r = geometry(xs, n, d, start, nclasses, used, &o, g, &q);
        if (r < 0)
                goto out;
        q.n = n;
        q.nclasses = used;
        r = class_entropy(xc, labels_c, nclasses, &o, &q);
        if (r < 0)
                goto out;
        q.i = (1.0 - q.min_intra) * q.entropy / q.entropy_norm;
        q.q = q.s + sqrt(q.i * q.e);
        r = kdl__quality_effective_rank(xs, n, d, g, &q.effective_rank);
        if (r < 0)
                goto out;
        r = kdl__quality_class_means_stats(xs, n, d, start, nclasses, o.rank_rtol, &q);
        if (r < 0)
                goto out;
        *ret = q;
out:
        free(g);
        free(xs);
        free(start);
        return r;
}
