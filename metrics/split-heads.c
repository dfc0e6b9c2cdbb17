/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/moments.h"
#include "metrics/split.h"
#include "metrics/split-internal.h"
#include "metrics/base/banned.h"

/*
 * The domain level of the split metric from the head weights (metrics/split.h):
 * the cosine matrices S^t, S^s of the class rows, their agreement (Pearson
 * over the pairs i < j, also with the soft confusion matrix) and the linear
 * CKA of W_t and W_s with the classes as examples.
 */

int kdl__split_check_head(const kdl_tensor *w, size_t c, const char *who)
{
        size_t row;

        if (w->ndim != 2 || w->shape[0] != c || w->shape[1] < 1)
                return kdl_error(-KDL_ESHAPE,
                                 "split: %s head weight must be [%zu, d] with d >= 1, got %zu-D "
                                 "[%zu, %zu]",
                                 who, c, w->ndim, w->shape[0], w->ndim > 1 ? w->shape[1] : 0);
        if (kdl_tensor_check_finite(w, &row) < 0)
                return kdl_error(-KDL_ENONFINITE, "split: non-finite %s head weight in row %zu",
                                 who, row);
        return 0;
}

/* K = A A^T (C x C, full) for a contiguous [C, d] matrix A. */
static int gram(const double *a, size_t c, size_t d, double *k)
{
        int ic, id, err;

        err = kdl__blas_int(c, &ic);
        if (err < 0)
                return err;
        err = kdl__blas_int(d, &id);
        if (err < 0)
                return err;
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, ic, id, 1.0, a, id, 0.0, k, ic);
        for (size_t i = 0; i < c; i++)
                for (size_t j = 0; j < i; j++)
                        k[i * c + j] = k[j * c + i];
        return 0;
}

/* The cosine matrix of @w's rows, and the Gram matrix of its class-centred
 * rows (for CKA), both C x C. */
static int head_mats(const kdl_tensor *w, double cos_eps, double *ret_cos, double *ret_gram)
{
        size_t c = w->shape[0], d = w->shape[1];
        double *a = kdl_new(double, c *d), *mean = kdl_new(double, d);
        int err = -ENOMEM;

        if (!a || !mean)
                goto out;
        for (size_t i = 0; i < c; i++) {
                double nrm = 0.0;

                for (size_t j = 0; j < d; j++) {
                        double v = KDL_AT2(w, i, j);

                        nrm += v * v;
                }
                nrm = fmax(sqrt(nrm), cos_eps);
                for (size_t j = 0; j < d; j++)
                        a[i * d + j] = KDL_AT2(w, i, j) / nrm;
        }
        err = gram(a, c, d, ret_cos);
        if (err < 0)
                goto out;

        for (size_t i = 0; i < c; i++)
                for (size_t j = 0; j < d; j++)
                        mean[j] += KDL_AT2(w, i, j);
        for (size_t j = 0; j < d; j++)
                mean[j] /= (double) c;
        for (size_t i = 0; i < c; i++)
                for (size_t j = 0; j < d; j++)
                        a[i * d + j] = KDL_AT2(w, i, j) - mean[j];
        err = gram(a, c, d, ret_gram);
out:
        free(mean);
        free(a);
        return err;
}

/* Pearson correlation over the pairs i < j of two C x C matrices; @x is
 * symmetrised ((x_ij + x_ji)/2); pairs are kept where @keep is NULL or
 * keep[i] && keep[j].  @buf: room for C (C - 1) doubles. */
double kdl__split_pairs_pearson(const double *x, const double *y, size_t c, const size_t *keep,
                                double *buf)
{
        double *px = buf, *py = buf + c * (c - 1) / 2;
        size_t n = 0;

        for (size_t i = 0; i < c; i++)
                for (size_t j = i + 1; j < c; j++)
                        if (!keep || (keep[i] && keep[j])) {
                                px[n] = 0.5 * (x[i * c + j] + x[j * c + i]);
                                py[n] = y[i * c + j];
                                n++;
                        }
        return kdl_pearson(px, py, n);
}

/* The cosine matrix of head @w into a new *@ret_cos and the Gram matrix of
 * its class-centred rows into a new *@ret_gram (caller frees both, also
 * after a failure). */
static int one_head(const kdl_tensor *w, size_t c, double cos_eps, double **ret_cos,
                    double **ret_gram)
{
        *ret_cos = kdl_new(double, c *c);
        *ret_gram = kdl_new(double, c *c);
        if (!*ret_cos || !*ret_gram)
                return -ENOMEM;
        return head_mats(w, cos_eps, *ret_cos, *ret_gram);
}

int kdl__split_heads(size_t c, double cos_eps, const kdl_tensor *wt, const kdl_tensor *ws,
                     double *pairs, kdl_split_result *r)
{
        double *gt = NULL, *gs = NULL;
        int err = 0;

        r->pearson_heads = (double) NAN;
        r->cka_heads = (double) NAN;
        if (wt) {
                err = one_head(wt, c, cos_eps, &r->cos_teacher, &gt);
                if (err < 0)
                        goto out;
                r->has_head_teacher = true;
                r->d_teacher = wt->shape[1];
        }
        if (ws) {
                err = one_head(ws, c, cos_eps, &r->cos_student, &gs);
                if (err < 0)
                        goto out;
                r->has_head_student = true;
                r->d_student = ws->shape[1];
        }
        /* Linear CKA with the classes as examples: <K, L>_F / (|K|_F |L|_F) of
         * the Gram matrices of the class-centred heads.  NEEDSWORK:
         * kdl_cka_gram() computes the same value (HKH centring, one dsyrk, one
         * square root), but its rounding differs in the last bits (up to
         * 3.3e-16 on the bundled example), so this stays until an output
         * change is acceptable. */
        if (wt && ws) {
                double kl = 0.0, kk = 0.0, ll = 0.0, den;

                r->pearson_heads =
                        kdl__split_pairs_pearson(r->cos_teacher, r->cos_student, c, NULL, pairs);
                for (size_t e = 0; e < c * c; e++) {
                        kl += gt[e] * gs[e];
                        kk += gt[e] * gt[e];
                        ll += gs[e] * gs[e];
                }
                den = sqrt(kk) * sqrt(ll);
                r->cka_heads = den > 0.0 ? kl / den : (double) NAN;
        }
out:
        free(gs);
        free(gt);
        return err;
}
