/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include <cblas.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/cka.h"
#include "metrics/cka-internal.h"
#include "metrics/base/banned.h"

/* CKA through n×n Gram matrices of in-memory layers: the linear and RBF
 * kernels, HKH and U-centring, and the outlier-robust form. */

/* A NaN-filled L×L array. */
static double *nan_array(size_t l)
{
        double *a = kdl__malloc(l * l, sizeof(double));

        if (a)
                for (size_t i = 0; i < l * l; i++)
                        a[i] = NAN;
        return a;
}

/* h[i][j] / sqrt(h[i][i] h[j][j]) for the upper triangle of @h, mirrored;
 * NaN when a diagonal entry is not positive. */
void kdl__cka_normalise_upper(const double *h, size_t l, double *out)
{
        for (size_t i = 0; i < l; i++)
                for (size_t j = i; j < l; j++) {
                        double d = h[i * l + i] * h[j * l + j];
                        double v = d > 0.0 ? h[i * l + j] / sqrt(d) : (double) NAN;

                        out[i * l + j] = out[j * l + i] = v;
                }
}

const char *kdl_cka_kernel_name(enum kdl_cka_kernel k)
{
        static const char *const names[KDL_CKA_KERNEL_COUNT_] = {"linear", "rbf"};

        assert(k < KDL_CKA_KERNEL_COUNT_);
        return names[k];
}

/* The k-th smallest of @x[0..n-1] (Hoare's quickselect; reorders @x). */
static double select_kth(double *x, size_t n, size_t k)
{
        size_t lo = 0, hi = n - 1;

        while (lo < hi) {
                double pivot = x[lo + (hi - lo) / 2];
                size_t i = lo, j = hi;

                while (i <= j) {
                        while (x[i] < pivot)
                                i++;
                        while (x[j] > pivot)
                                j--;
                        if (i <= j) {
                                double t = x[i];

                                x[i] = x[j];
                                x[j] = t;
                                i++;
                                if (j == 0)
                                        break;
                                j--;
                        }
                }
                if (k <= j)
                        hi = j;
                else if (k >= i)
                        lo = i;
                else
                        return x[k];
        }
        return x[k];
}

/* numpy.median of the n² entries of a squared-distance matrix whose
 * off-diagonal upper triangle is @off[0..n(n-1)/2-1] (each entry appears
 * twice, the diagonal n zeros).  Reorders @off. */
static double median_full_sqdist(double *off, size_t n)
{
        size_t total = n * n, npairs = n * (n - 1) / 2;
        size_t k1 = (total - 1) / 2, k2 = total / 2;
        double v1, v2;

        /* Entry t of the sorted full multiset: 0 for t < n, then each
         * off-diagonal value twice (all values are >= 0). */
        v1 = k1 < n ? 0.0 : select_kth(off, npairs, (k1 - n) / 2);
        v2 = k2 < n ? 0.0 : select_kth(off, npairs, (k2 - n) / 2);
        return 0.5 * (v1 + v2);
}

/* Contiguous data of a 2-D tensor: @t's own, or a copy in *@copy. */
static const double *contiguous(const kdl_tensor *t, double **copy)
{
        double *c;

        *copy = NULL;
        if (kdl_tensor_is_contiguous(t))
                return t->data;
        c = kdl__malloc(t->shape[0] * t->shape[1], sizeof(double));
        if (!c)
                return NULL;
        for (size_t i = 0; i < t->shape[0]; i++)
                for (size_t j = 0; j < t->shape[1]; j++)
                        c[i * t->shape[1] + j] = KDL_AT2(t, i, j);
        *copy = c;
        return c;
}

/* Full symmetric kernel matrix of @x [n, D] into @k [n*n]; @off is scratch
 * for n(n-1)/2 doubles (RBF only).  Return 1 if the RBF bandwidth is zero
 * (the kernel is undefined), 0, or -ENOMEM. */
int kdl__cka_kernel_matrix(const kdl_tensor *x, enum kdl_cka_kernel kernel, double theta, double *k,
                           double *off)
{
        size_t n = x->shape[0], d = x->shape[1];
        double *copy;
        const double *xd = contiguous(x, &copy);

        if (!xd)
                return -ENOMEM;
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int) n, (int) d, 1.0, xd, (int) d,
                    0.0, k, (int) n);
        free(copy);
        for (size_t i = 0; i < n; i++)
                for (size_t j = i + 1; j < n; j++)
                        k[j * n + i] = k[i * n + j];
        if (kernel == KDL_CKA_RBF) {
                size_t p = 0;
                double med, s2;

                /* Squared distances from the Gram, clamped at 0
                 * (docs/layers.md#differences-from-the-authors-code). */
                for (size_t i = 0; i < n; i++)
                        for (size_t j = i + 1; j < n; j++) {
                                double v = k[i * n + i] + k[j * n + j] - 2.0 * k[i * n + j];

                                off[p++] = v > 0.0 ? v : 0.0;
                        }
                for (size_t i = 0; i < n; i++)
                        for (size_t j = i + 1; j < n; j++) {
                                double v = k[i * n + i] + k[j * n + j] - 2.0 * k[i * n + j];

                                k[i * n + j] = v > 0.0 ? v : 0.0;
                        }
                med = median_full_sqdist(off, n);
                s2 = theta * theta * med;
                if (!(s2 > 0.0))
                        return 1;
                for (size_t i = 0; i < n; i++) {
                        k[i * n + i] = 1.0;
                        for (size_t j = i + 1; j < n; j++)
                                k[i * n + j] = k[j * n + i] = exp(-k[i * n + j] / (2.0 * s2));
                }
        }
        return 0;
}

/* The row means of the n×n @k into @rm; return the mean of all its entries. */
static double row_means(const double *k, size_t n, double *rm)
{
        double total = 0.0;

        for (size_t i = 0; i < n; i++) {
                double r = 0.0;

                for (size_t j = 0; j < n; j++)
                        r += k[i * n + j];
                rm[i] = r / (double) n;
                total += r;
        }
        return total / (double) (n * n);
}

/* HKH into @out (Kornblith's center_gram, biased); @rm: n scratch.  Each
 * entry reads only itself once the means are known, so @out may be @k. */
void kdl__cka_centre_biased(const double *k, size_t n, double *rm, double *out)
{
        double total = row_means(k, n, rm);

        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < n; j++)
                        out[i * n + j] = k[i * n + j] - rm[i] - rm[j] + total;
}

/* U-centring (Székely & Rizzo 2014; Kornblith's center_gram(unbiased=True)):
 * zero diagonal, subtract (r_i + r_j)/(n-2), add Σ/((n-1)(n-2)), zero
 * diagonal again.  n >= 3; @rm: n scratch. */
void kdl__cka_centre_unbiased(const double *k, size_t n, double *rm, double *out)
{
        double sum = 0.0;

        for (size_t i = 0; i < n; i++) {
                double r = 0.0;

                for (size_t j = 0; j < n; j++)
                        if (j != i)
                                r += k[i * n + j];
                rm[i] = r / ((double) n - 2.0);
                sum += rm[i];
        }
        sum /= 2.0 * ((double) n - 1.0);
        for (size_t i = 0; i < n; i++)
                rm[i] -= sum;
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < n; j++)
                        out[i * n + j] = i == j ? 0.0 : k[i * n + j] - rm[i] - rm[j];
}

int kdl__cka_check_layers(const kdl_tensor *layers, size_t nlayers, size_t min_n)
{
        size_t n, bad;
        int bi;

        if (nlayers == 0)
                return kdl_error(-KDL_ESHAPE, "CKA needs at least one layer");
        for (size_t l = 0; l < nlayers; l++)
                if (layers[l].ndim != 2)
                        return kdl_error(-KDL_ESHAPE, "layer %zu: expected 2-D, got %zu-D", l,
                                         layers[l].ndim);
        n = layers[0].shape[0];
        if (n < min_n)
                return kdl_error(-KDL_ESHAPE, "CKA needs at least %zu samples, got %zu", min_n, n);
        for (size_t l = 0; l < nlayers; l++) {
                if (layers[l].shape[0] != n)
                        return kdl_error(-KDL_ESHAPE, "layer %zu: %zu rows, layer 0 has %zu", l,
                                         layers[l].shape[0], n);
                if (layers[l].shape[1] == 0)
                        return kdl_error(-KDL_ESHAPE, "layer %zu has width 0", l);
                if (kdl__blas_int(layers[l].shape[1], &bi) < 0)
                        return -KDL_EOVERFLOW;
                if (kdl_tensor_check_finite(&layers[l], &bad) < 0)
                        return kdl_error(-KDL_ENONFINITE,
                                         "layer %zu: non-finite value at sample %zu", l, bad);
        }
        if (n > 46340)
                return kdl_error(-KDL_EOVERFLOW,
                                 "%zu samples: n² does not fit the BLAS integer type", n);
        return 0;
}

/* All L kernel matrices [l * n * n]; @bad[l] set when a layer's RBF
 * bandwidth is zero. */
static int kernels_all(const kdl_tensor *layers, size_t nlayers, enum kdl_cka_kernel kernel,
                       double theta, double **ret, bool *bad)
{
        size_t n = layers[0].shape[0], nn = n * n;
        double *k, *off = NULL;
        int r = 0;

        k = kdl__malloc(nlayers, nn * sizeof(double));
        if (!k)
                return -ENOMEM;
        if (kernel == KDL_CKA_RBF) {
                off = kdl__malloc(n * (n - 1) / 2 + 1, sizeof(double));
                if (!off) {
                        free(k);
                        return -ENOMEM;
                }
        }
        for (size_t l = 0; l < nlayers && r >= 0; l++) {
                r = kdl__cka_kernel_matrix(&layers[l], kernel, theta, k + l * nn, off);
                if (r >= 0)
                        bad[l] = r == 1;
        }
        free(off);
        if (r < 0) {
                free(k);
                return r;
        }
        *ret = k;
        return 0;
}

/* ⟨K̃_i, K̃_j⟩ of every pair of the @l n×n kernel matrices @k, centred by
 * @centre, normalised into @out; one dsyrk of the stacked, flattened
 * centred matrices (as Nguyen et al.'s G Gᵀ).  @stack [l*n*n], @h [l*l] and
 * @rm [n]: scratch. */
static void centred_alignment(const double *k, size_t n, size_t l,
                              void (*centre)(const double *, size_t, double *, double *),
                              double *stack, double *h, double *rm, double *out)
{
        size_t nn = n * n;

        for (size_t i = 0; i < l; i++)
                centre(k + i * nn, n, rm, stack + i * nn);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int) l, (int) nn, 1.0, stack,
                    (int) nn, 0.0, h, (int) l);
        kdl__cka_normalise_upper(h, l, out);
}

int kdl__cka_gram_centred(const kdl_tensor *layers, size_t nlayers, enum kdl_cka_kernel kernel,
                          double theta, kdl_cka_matrix **ret, double **ret_kc)
{
        size_t n, l = nlayers;
        double *k = NULL, *stack = NULL, *h = NULL, *rm = NULL;
        bool *bad = NULL;
        kdl_cka_matrix *m = NULL;
        int r;

        assert(layers && ret && kernel < KDL_CKA_KERNEL_COUNT_);
        r = kdl__cka_check_layers(layers, nlayers, 2);
        if (r < 0)
                return r;
        if (kernel == KDL_CKA_RBF && !(theta > 0.0 && isfinite(theta)))
                return kdl_error(-KDL_ERANGE, "RBF bandwidth fraction %g is not positive", theta);
        n = layers[0].shape[0];
        bad = kdl_new(bool, l);
        h = kdl_new(double, l *l);
        rm = kdl_new(double, n);
        stack = kdl__malloc(l, n * n * sizeof(double));
        if (!bad || !h || !rm || !stack || kdl__cka_matrix_new(l, &m) < 0) {
                r = -ENOMEM;
                goto out;
        }
        r = kernels_all(layers, l, kernel, theta, &k, bad);
        if (r < 0)
                goto out;
        m->n = (double) n;
        m->biased = nan_array(l);
        m->debiased = nan_array(l);
        if (!m->biased || !m->debiased) {
                r = -ENOMEM;
                goto out;
        }
        centred_alignment(k, n, l, kdl__cka_centre_biased, stack, h, rm, m->biased);
        if (n >= 4)
                centred_alignment(k, n, l, kdl__cka_centre_unbiased, stack, h, rm, m->debiased);
        for (size_t i = 0; i < l; i++)
                if (bad[i])
                        for (size_t j = 0; j < l; j++) {
                                m->biased[i * l + j] = m->biased[j * l + i] = NAN;
                                m->debiased[i * l + j] = m->debiased[j * l + i] = NAN;
                        }
        if (ret_kc) {
                for (size_t i = 0; i < l; i++)
                        kdl__cka_centre_biased(k + i * n * n, n, rm, k + i * n * n);
                *ret_kc = k;
                k = NULL;
        }
        *ret = m;
        m = NULL;
out:
        kdl_cka_matrix_free(m);
        free(stack);
        free(rm);
        free(h);
        free(bad);
        free(k);
        return r;
}

int kdl_cka_gram(const kdl_tensor *layers, size_t nlayers, enum kdl_cka_kernel kernel, double theta,
                 kdl_cka_matrix **ret)
{
        return kdl__cka_gram_centred(layers, nlayers, kernel, theta, ret, NULL);
}

struct ranked {
        double d;
        size_t row;
};

static int cmp_ranked_desc(const void *a, const void *b)
{
        const struct ranked *x = a, *y = b;

        if (x->d > y->d)
                return -1;
        if (x->d < y->d)
                return 1;
        return x->row < y->row ? -1 : x->row > y->row;
}

/* ⟨H_S A H_S, H_S B H_S⟩ over the kept rows @keep (m of them):
 * Σ A∘B - (2/m) Σᵢ rAᵢ rBᵢ + tA tB / m². */
static double centred_inner(const double *a, const double *b, size_t n, const bool *keep, size_t m,
                            double *ra, double *rb)
{
        double ab = 0.0, rr = 0.0, ta = 0.0, tb = 0.0, dm = (double) m;

        for (size_t i = 0; i < n; i++) {
                double sa = 0.0, sb = 0.0;

                if (!keep[i])
                        continue;
                for (size_t j = 0; j < n; j++) {
                        if (!keep[j])
                                continue;
                        sa += a[i * n + j];
                        sb += b[i * n + j];
                        ab += a[i * n + j] * b[i * n + j];
                }
                ra[i] = sa;
                rb[i] = sb;
                rr += sa * sb;
                ta += sa;
                tb += sb;
        }
        return ab - 2.0 / dm * rr + ta * tb / (dm * dm);
}

/* Flag in @out [n] the @q rows of the n×n linear kernel @ki farthest from
 * the layer mean (largest centred squared norm, ties to the lower row);
 * @ra and @rk: n entries of scratch. */
static void flag_outliers(const double *ki, size_t n, size_t q, double *ra, struct ranked *rk,
                          bool *out)
{
        /* Centred squared norms: (HKH)_aa = K_aa - 2 r_a + t. */
        double total = row_means(ki, n, ra);

        for (size_t a = 0; a < n; a++) {
                rk[a].d = ki[a * n + a] - 2.0 * ra[a] + total;
                rk[a].row = a;
        }
        qsort(rk, n, sizeof(*rk), cmp_ranked_desc);
        for (size_t a = 0; a < q; a++)
                out[rk[a].row] = true;
}

/* Biased CKA of every pair (ℓ, k) of the @l kernels @k on the rows that are
 * outliers (@out [l*n]) of neither, into @biased; NaN where fewer than 2
 * rows are left.  @keep, @ra and @rb: n entries of scratch. */
static void robust_pairs(const double *k, size_t n, size_t l, const bool *out, bool *keep,
                         double *ra, double *rb, double *biased)
{
        size_t nn = n * n;

        for (size_t i = 0; i < l; i++)
                for (size_t j = i; j < l; j++) {
                        size_t kept = 0;
                        double hij, hii, hjj;

                        for (size_t a = 0; a < n; a++) {
                                keep[a] = !out[i * n + a] && !out[j * n + a];
                                kept += keep[a];
                        }
                        if (kept < 2)
                                continue;
                        hij = centred_inner(k + i * nn, k + j * nn, n, keep, kept, ra, rb);
                        hii = centred_inner(k + i * nn, k + i * nn, n, keep, kept, ra, rb);
                        hjj = centred_inner(k + j * nn, k + j * nn, n, keep, kept, ra, rb);
                        biased[i * l + j] = biased[j * l + i] =
                                hii > 0.0 && hjj > 0.0 ? hij / sqrt(hii * hjj) : (double) NAN;
                }
}

int kdl_cka_robust(const kdl_tensor *layers, size_t nlayers, double frac, kdl_cka_matrix **ret)
{
        size_t n, l = nlayers, q;
        double *k = NULL, *ra = NULL, *rb = NULL;
        bool *out = NULL, *keep = NULL, *bad = NULL;
        struct ranked *rk = NULL;
        kdl_cka_matrix *m = NULL;
        int r;

        assert(layers && ret);
        r = kdl__cka_check_layers(layers, nlayers, 2);
        if (r < 0)
                return r;
        if (!(frac >= 0.0 && frac < 0.5))
                return kdl_error(-KDL_ERANGE, "outlier fraction %g is not in [0, 0.5)", frac);
        n = layers[0].shape[0];
        q = (size_t) ceil(frac * (double) n);
        out = kdl_new(bool, l *n);
        keep = kdl_new(bool, n);
        bad = kdl_new(bool, l);
        ra = kdl_new(double, n);
        rb = kdl_new(double, n);
        rk = kdl_new(struct ranked, n);
        if (!out || !keep || !bad || !ra || !rb || !rk || kdl__cka_matrix_new(l, &m) < 0) {
                r = -ENOMEM;
                goto out;
        }
        r = kernels_all(layers, l, KDL_CKA_LINEAR, 0.0, &k, bad);
        if (r < 0)
                goto out;
        m->n = (double) n;
        m->biased = nan_array(l);
        if (!m->biased) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < l; i++)
                flag_outliers(k + i * n * n, n, q, ra, rk, out + i * n);
        robust_pairs(k, n, l, out, keep, ra, rb, m->biased);
        *ret = m;
        m = NULL;
out:
        kdl_cka_matrix_free(m);
        free(rk);
        free(rb);
        free(ra);
        free(bad);
        free(keep);
        free(out);
        free(k);
        return r;
}
