/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/cka.h"
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

/* The cosine matrix of @w's rows, C x C. */
static int head_cos(const kdl_tensor *w, double cos_eps, double *ret_cos)
{
        size_t c = w->shape[0], d = w->shape[1];
        double *a = kdl_new(double, c *d);
        int err;

        if (!a)
                return -ENOMEM;
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

/* The cosine matrix of head @w into a new *@ret_cos (caller frees it, also
 * after a failure). */
static int one_head(const kdl_tensor *w, size_t c, double cos_eps, double **ret_cos)
{
        *ret_cos = kdl_new(double, c *c);
        if (!*ret_cos)
                return -ENOMEM;
        return head_cos(w, cos_eps, *ret_cos);
}

/* Linear CKA of the two heads with the classes as examples (kdl_cka_gram()'s
 * biased estimate: the Gram matrices of the class-centred rows). */
static int heads_cka(const kdl_tensor *wt, const kdl_tensor *ws, double *ret)
{
        kdl_tensor heads[2] = {*wt, *ws};
        kdl_cka_matrix *m = NULL;
        int err;

        heads[0].owner = heads[1].owner = false; /* borrowed views */
        err = kdl_cka_gram(heads, 2, KDL_CKA_LINEAR, 0.0, &m);
        if (err < 0)
                return err;
        *ret = m->biased[1];
        kdl_cka_matrix_free(m);
        return 0;
}

int kdl__split_heads(size_t c, double cos_eps, const kdl_tensor *wt, const kdl_tensor *ws,
                     double *pairs, kdl_split_result *r)
{
        int err = 0;

        r->pearson_heads = (double) NAN;
        r->cka_heads = (double) NAN;
        if (wt) {
                err = one_head(wt, c, cos_eps, &r->cos_teacher);
                if (err < 0)
                        return err;
                r->has_head_teacher = true;
                r->d_teacher = wt->shape[1];
        }
        if (ws) {
                err = one_head(ws, c, cos_eps, &r->cos_student);
                if (err < 0)
                        return err;
                r->has_head_student = true;
                r->d_student = ws->shape[1];
        }
        if (wt && ws) {
                r->pearson_heads =
                        kdl__split_pairs_pearson(r->cos_teacher, r->cos_student, c, NULL, pairs);
                err = heads_cka(wt, ws, &r->cka_heads);
        }
        return err;
}
