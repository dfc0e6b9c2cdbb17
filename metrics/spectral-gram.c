/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/spectral.h"
#include "metrics/spectral-internal.h"
#include "metrics/base/banned.h"

/*
 * The exact Gram method: the rows are kept, and at the end the eigenvalues of
 * G = Xc Xc^T [n, n] are those of Xc^T Xc (padded with zeros), for a wide X
 * with few samples.  The rows are stored minus the first block's mean, so that
 * a large common offset does not cost digits in G; the exact centring on the
 * mean of all rows is applied to G at the end.
 */

/* Room for @need rows: the reserved count when it is enough, else double. */
static int reserve(kdl_spectral_state *s, size_t need)
{
        size_t cap, nel;
        double *r;
        int err;

        if (need <= s->cap)
                return 0;
        cap = s->plan.rows >= need ? s->plan.rows : s->cap * 2;
        if (cap < need)
                cap = need;
        err = kdl_mul_size(cap, s->dx, &nel);
        if (err < 0)
                return err;
        r = kdl__realloc(s->rows, nel, sizeof(double));
        if (!r)
                return -ENOMEM;
        s->rows = r;
        s->cap = cap;
        return 0;
}

int kdl__spectral_gram_accumulate(kdl_spectral_state *s, const kdl_tensor *x)
{
        size_t m = x->shape[0], d = s->dx;
        double *dst;
        int err;

        err = reserve(s, s->n + m);
        if (err < 0)
                return err;
        /* Rows past s->n are not part of the state yet: a failure leaves it. */
        dst = s->rows + s->n * d;
        err = kdl__spectral_copy_rows(x, s->flags & KDL_SPECTRAL_CENTER_ROWS_X, "feature", dst,
                                      s->bmx);
        if (err < 0)
                return err;
        if (s->n == 0)
                memcpy(s->shift, s->bmx, d * sizeof(double));
        for (size_t i = 0; i < m; i++)
                for (size_t j = 0; j < d; j++)
                        dst[i * d + j] -= s->shift[j];
        s->n += m;
        return 0;
}

int kdl__spectral_gram_merge(kdl_spectral_state *into, const kdl_spectral_state *from)
{
        size_t d = into->dx;
        double *dst;
        int err;

        err = reserve(into, into->n + from->n);
        if (err < 0)
                return err;
        dst = into->rows + into->n * d;
        memcpy(dst, from->rows, from->n * d * sizeof(double));
        if (into->n == 0) {
                memcpy(into->shift, from->shift, d * sizeof(double));
        } else {
                /* Re-express @from's rows against @into's shift. */
                for (size_t i = 0; i < from->n; i++)
                        for (size_t j = 0; j < d; j++)
                                dst[i * d + j] += from->shift[j] - into->shift[j];
        }
        into->n += from->n;
        return 0;
}

int kdl__spectral_gram_eigen(const kdl_spectral_state *s, double *eig)
{
        size_t n = s->n, d = s->dx, nn, ne = n < d ? n : d;
        double *g = NULL, *mu = NULL, *v = NULL, *w = NULL, c = 0.0;
        int ni, di, info, err;

        err = kdl__blas_int(n, &ni);
        err = err ?: kdl__blas_int(d, &di);
        err = err ?: kdl_mul_size(n, n, &nn);
        if (err < 0)
                return err;
        err = -ENOMEM;
        g = kdl__malloc(nn, sizeof(double));
        mu = kdl_new(double, d);
        v = kdl_new(double, n);
        w = kdl_new(double, n);
        if (!g || !mu || !v || !w)
                goto out;

        /* Xc = Z - 1 mu^T with Z the rows kept and mu their mean, so
         * Xc Xc^T = Z Z^T - v 1^T - 1 v^T + (mu.mu) 1 1^T with v = Z mu. */
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < d; j++)
                        mu[j] += s->rows[i * d + j];
        for (size_t j = 0; j < d; j++) {
                mu[j] /= (double) n;
                c += mu[j] * mu[j];
        }
        cblas_dgemv(CblasRowMajor, CblasNoTrans, ni, di, 1.0, s->rows, di, mu, 1, 0.0, v, 1);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, ni, di, 1.0, s->rows, di, 0.0, g, ni);
        for (size_t i = 0; i < n; i++)
                for (size_t j = i; j < n; j++)
                        g[i * n + j] += c - v[i] - v[j];
        /* Row-major upper is column-major lower. */
        info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'N', 'L', ni, g, ni, w);
        assert(info >= 0);
        if (info > 0) {
                err = kdl_error(-KDL_ENOCONV, "spectrum (Gram): dsyevd did not converge (info %d)",
                                info);
                goto out;
        }
        for (size_t i = 0; i < d; i++)
                eig[i] = i < ne ? fmax(w[n - 1 - i], 0.0) / (double) (n - 1) : 0.0;
        err = 0;
out:
        free(w);
        free(v);
        free(mu);
        free(g);
        return err;
}
