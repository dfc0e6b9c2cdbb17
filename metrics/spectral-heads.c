/* SPDX-License-Identifier: MIT */
/*
 * What the head weight and the logits alone say about dimensions
 * (metrics/spectral.h): the numerical rank of the class-centred head, and the
 * rank of the logits' support at a temperature.
 */
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

/* @a [C, d] = H_C W: every column of @w centred across the classes.
 * Return: 0; -KDL_ENONFINITE. */
static int centre_head(const kdl_tensor *w, double *a)
{
        size_t c = w->shape[0], d = w->shape[1];

        for (size_t j = 0; j < d; j++) {
                double mean = 0.0;

                for (size_t k = 0; k < c; k++) {
                        double v = KDL_AT2(w, k, j);

                        if (!isfinite(v))
                                return kdl_error(-KDL_ENONFINITE,
                                                 "head weight: row %zu holds NaN or Inf", k);
                        a[k * d + j] = v;
                        mean += v;
                }
                mean /= (double) c;
                for (size_t k = 0; k < c; k++)
                        a[k * d + j] -= mean;
        }
        return 0;
}

int kdl_spectral_head_rank(const kdl_tensor *w, double rank_rtol, size_t *ret_rank)
{
        double *a = NULL, *sv = NULL;
        size_t c, d, nel, mn, rank = 0;
        int ci, di, info, err;

        assert(w && ret_rank);
        if (w->ndim != 2 || w->shape[0] == 0 || w->shape[1] == 0)
                return kdl_error(-KDL_ESHAPE, "head weight: expected a non-empty [C, d] matrix");
        err = kdl__spectral_check_rtol(rank_rtol);
        if (err < 0)
                return err;
        c = w->shape[0];
        d = w->shape[1];
        err = kdl__blas_int(c, &ci);
        if (err < 0)
                return err;
        err = kdl__blas_int(d, &di);
        if (err < 0)
                return err;
        err = kdl_mul_size(c, d, &nel);
        if (err < 0)
                return err;
        mn = c < d ? c : d;

        err = -ENOMEM;
        a = kdl__malloc(nel, sizeof(double));
        sv = kdl_new(double, mn);
        if (!a || !sv)
                goto out;
        err = centre_head(w, a);
        if (err < 0)
                goto out;
        /* Row-major [C, d] is column-major [d, C]: same singular values, and
         * LAPACKE needs no transposed copy. */
        info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'N', di, ci, a, di, sv, NULL, 1, NULL, 1);
        assert(info >= 0);
        if (info > 0) {
                err = kdl_error(-KDL_ENOCONV, "head rank: dgesdd did not converge (info %d)", info);
                goto out;
        }
        for (size_t k = 0; k < mn; k++)
                if (sv[0] > 0.0 && sv[k] * sv[k] > rank_rtol * sv[0] * sv[0])
                        rank++;
        *ret_rank = rank;
        err = 0;
out:
        free(sv);
        free(a);
        return err;
}

int kdl_spectral_support_rank(const kdl_tensor *logits, double tau, double rank_rtol,
                              size_t head_rank, double *ret_sum)
{
        double cut, sum = 0.0;
        size_t m, c;

        assert(logits && ret_sum);
        if (logits->ndim != 2 || logits->shape[1] == 0)
                return kdl_error(-KDL_ESHAPE, "logits: expected [rows, C] with C >= 1");
        if (!(tau > 0.0) || !isfinite(tau))
                return kdl_error(-KDL_ERANGE, "temperature %g is not positive and finite", tau);
        if (!(rank_rtol >= 0.0 && rank_rtol <= 1.0))
                return kdl_error(-KDL_ERANGE, "probability tolerance %g is not in [0, 1]",
                                 rank_rtol);
        m = logits->shape[0];
        c = logits->shape[1];
        /* p_k >= rtol p_max  <=>  z_k - z_max >= tau ln(rtol); no softmax needed. */
        cut = rank_rtol > 0.0 ? tau * log(rank_rtol) : -HUGE_VAL;
        for (size_t i = 0; i < m; i++) {
                double zmax = -INFINITY;
                size_t support = 0, r;

                for (size_t k = 0; k < c; k++) {
                        double z = KDL_AT2(logits, i, k);

                        if (!isfinite(z))
                                return kdl_error(-KDL_ENONFINITE,
                                                 "logits: row %zu holds NaN or Inf", i);
                        zmax = fmax(zmax, z);
                }
                for (size_t k = 0; k < c; k++)
                        if (KDL_AT2(logits, i, k) - zmax >= cut)
                                support++;
                r = support - 1;
                sum += (double) (r < head_rank ? r : head_rank);
        }
        *ret_sum = sum;
        return 0;
}
