/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/kl.h"
#include "metrics/kl-internal.h"
#include "metrics/moments.h"
#include "metrics/base/banned.h"

/*
 * Pass 1 of the KL metric: the affine least-squares projector P from the
 * student's head-input width to the teacher's (the header comment of
 * metrics/kl.h says what it solves).
 */

int kdl_kl_proj_state_new(size_t d_s, size_t d_t, kdl_kl_proj_state **ret)
{
        kdl_kl_proj_state *s;
        size_t nss, nst;
        int err;

        assert(ret);
        if (d_s == 0 || d_t == 0)
                return kdl_error(-KDL_ESHAPE, "projector widths must be positive, got %zu -> %zu",
                                 d_s, d_t);
        err = kdl_mul_size(d_s, d_s, &nss);
        if (err < 0)
                return err;
        err = kdl_mul_size(d_s, d_t, &nst);
        if (err < 0)
                return err;
        s = kdl_new(kdl_kl_proj_state, 1);
        if (!s)
                return -ENOMEM;
        s->d_s = d_s;
        s->d_t = d_t;
        s->mu_s = kdl_new(double, d_s);
        s->mu_t = kdl_new(double, d_t);
        s->mss = kdl_new(double, nss);
        s->mst = kdl_new(double, nst);
        if (!s->mu_s || !s->mu_t || !s->mss || !s->mst) {
                kdl_kl_proj_state_free(s);
                return -ENOMEM;
        }
        *ret = s;
        return 0;
}

void kdl_kl_proj_state_free(kdl_kl_proj_state *s)
{
        if (!s)
                return;
        free(s->mu_s);
        free(s->mu_t);
        free(s->mss);
        free(s->mst);
        free(s->work);
        free(s);
}

/* Chan et al.'s update of centred moments: into (n_a samples) += a batch of
 * n_b samples with means mb_s, mb_t; the batch's own centred moments were
 * already added.  Adds (n_a n_b / n) δ δᵀ and moves the means. */
static void proj_shift(kdl_kl_proj_state *s, size_t nb, const double *mb_s, const double *mb_t,
                       double *ds, double *dt)
{
        size_t na = s->n;
        double w, dtt = 0.0;

        w = kdl_moments_shift_mean(na, nb, s->mu_s, mb_s, s->d_s, ds);
        (void) kdl_moments_shift_mean(na, nb, s->mu_t, mb_t, s->d_t, dt);
        for (size_t j = 0; j < s->d_t; j++)
                dtt += dt[j] * dt[j];
        if (na > 0) {
                for (size_t i = 0; i < s->d_s; i++) {
                        double *row = s->mss + i * s->d_s;

                        for (size_t k = i; k < s->d_s; k++)
                                row[k] += w * ds[i] * ds[k];
                        row = s->mst + i * s->d_t;
                        for (size_t j = 0; j < s->d_t; j++)
                                row[j] += w * ds[i] * dt[j];
                }
                s->sst += w * dtt;
        }
        s->n = na + nb;
}

/* Shapes and values of a block; *@ret_m its rows. */
static int proj_check(const kdl_kl_proj_state *s, const kdl_tensor *hs, const kdl_tensor *ht,
                      size_t *ret_m)
{
        size_t m;
        int err;

        if (hs->ndim != 2 || ht->ndim != 2)
                return kdl_error(-KDL_ESHAPE, "projector: features must be 2-D");
        m = hs->shape[0];
        err = kdl__kl_check_tensor(hs, "student features", m, s->d_s);
        if (err < 0)
                return err;
        err = kdl__kl_check_tensor(ht, "teacher features", m, s->d_t);
        if (err < 0)
                return err;
        *ret_m = m;
        if (m == 0)
                return 0;
        err = kdl__kl_check_finite(hs, "student features", NULL);
        if (err < 0)
                return err;
        return kdl__kl_check_finite(ht, "teacher features", NULL);
}

/* Room in the work area for a block of @m rows. */
static int proj_reserve(kdl_kl_proj_state *s, size_t m)
{
        size_t need;
        int err;

        if (m <= s->work_rows)
                return 0;
        err = kdl_mul_size(m + 2, s->d_s + s->d_t, &need);
        if (err < 0)
                return err;
        err = kdl__kl_grow(&s->work, need);
        if (err < 0)
                return err;
        s->work_rows = m;
        return 0;
}

/* The block's means into @mb_s, @mb_t (contiguous), then the block centred on
 * them into @sc [m, d_s] and @tc [m, d_t] (two-pass).  Return: Σ‖t_c‖². */
static double proj_centre(const kdl_kl_proj_state *s, const kdl_tensor *hs, const kdl_tensor *ht,
                          size_t m, double *sc, double *tc, double *mb_s, double *mb_t)
{
        double tss = 0.0;

        memset(mb_s, 0, (s->d_s + s->d_t) * sizeof(double));
        for (size_t r = 0; r < m; r++) {
                for (size_t i = 0; i < s->d_s; i++)
                        mb_s[i] += KDL_AT2(hs, r, i);
                for (size_t j = 0; j < s->d_t; j++)
                        mb_t[j] += KDL_AT2(ht, r, j);
        }
        for (size_t i = 0; i < s->d_s + s->d_t; i++)
                mb_s[i] /= (double) m;
        for (size_t r = 0; r < m; r++) {
                for (size_t i = 0; i < s->d_s; i++)
                        sc[r * s->d_s + i] = KDL_AT2(hs, r, i) - mb_s[i];
                for (size_t j = 0; j < s->d_t; j++) {
                        double t = KDL_AT2(ht, r, j) - mb_t[j];

                        tc[r * s->d_t + j] = t;
                        tss += t * t;
                }
        }
        return tss;
}

int kdl_kl_proj_accumulate(kdl_kl_proj_state *s, const kdl_tensor *hs, const kdl_tensor *ht)
{
        size_t m = 0;
        double *sc, *tc, *mb_s, *mb_t, *ds, *dt, tss;
        int err, bm, bs, bt;

        assert(s && hs && ht);
        err = proj_check(s, hs, ht, &m);
        if (err < 0 || m == 0)
                return err;
        if ((err = kdl__blas_int(m, &bm)) < 0 || (err = kdl__blas_int(s->d_s, &bs)) < 0 ||
            (err = kdl__blas_int(s->d_t, &bt)) < 0 || (err = proj_reserve(s, m)) < 0)
                return err;

        /* Layout: sc [m, d_s] | tc [m, d_t] | mb_s | mb_t | ds | dt. */
        sc = s->work;
        tc = sc + m * s->d_s;
        mb_s = tc + m * s->d_t;
        mb_t = mb_s + s->d_s;
        ds = mb_t + s->d_t;
        dt = ds + s->d_s;
        tss = proj_centre(s, hs, ht, m, sc, tc, mb_s, mb_t);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, bs, bm, 1.0, sc, bs, 1.0, s->mss, bs);
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, bs, bt, bm, 1.0, sc, bs, tc, bt, 1.0,
                    s->mst, bt);
        s->sst += tss;
        proj_shift(s, m, mb_s, mb_t, ds, dt);
        return 0;
}

int kdl_kl_proj_merge(kdl_kl_proj_state *into, const kdl_kl_proj_state *from)
{
        double *ds, *dt;

        assert(into && from);
        if (into->d_s != from->d_s || into->d_t != from->d_t)
                return kdl_error(-KDL_EMISMATCH, "projector merge: widths %zu->%zu and %zu->%zu",
                                 into->d_s, into->d_t, from->d_s, from->d_t);
        if (from->n == 0)
                return 0;
        ds = kdl_new(double, into->d_s + into->d_t);
        if (!ds)
                return -ENOMEM;
        dt = ds + into->d_s;
        for (size_t i = 0; i < into->d_s; i++) {
                for (size_t k = i; k < into->d_s; k++)
                        into->mss[i * into->d_s + k] += from->mss[i * into->d_s + k];
                for (size_t j = 0; j < into->d_t; j++)
                        into->mst[i * into->d_t + j] += from->mst[i * into->d_t + j];
        }
        into->sst += from->sst;
        proj_shift(into, from->n, from->mu_s, from->mu_t, ds, dt);
        free(ds);
        return 0;
}

void kdl_kl_projector_free(kdl_kl_projector *p)
{
        if (!p)
                return;
        free(p->pt);
        free(p->b);
        free(p);
}

/* M_ss = V Λ Vᵀ into @v [d_s, d_s] and @lam [d_s] (ascending). */
static int proj_eigen(const kdl_kl_proj_state *s, int bs, double *v, double *lam)
{
        size_t d_s = s->d_s;
        lapack_int info;

        /* dsyevd reads the upper triangle (row-major). */
        memcpy(v, s->mss, d_s * d_s * sizeof(double));
        info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', bs, v, bs, lam);
        if (info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR)
                return kdl_error(-ENOMEM, "out of memory in LAPACK");
        assert(info >= 0);
        if (info > 0)
                return kdl_error(-KDL_ENOCONV, "projector: eigensolver did not converge");
        if (!(lam[d_s - 1] > 0.0))
                return kdl_error(-KDL_ESINGULAR,
                                 "projector: the student features have no variance");
        return 0;
}

/* Aᵀ = M_ss⁺ M_st = V Λ⁺ Vᵀ M_st into @pt, from the eigenpairs; @x is
 * [d_s, d_t] scratch.  Return: the rank kept. */
static size_t proj_solve(const kdl_kl_proj_state *s, int bs, int bt, const double *v,
                         const double *lam, double *x, double *pt)
{
        size_t d_s = s->d_s, d_t = s->d_t, rank = 0;
        /* Eigenvalues of a Gram matrix are known to about eps·λ_max, so any
         * below d_s·eps·λ_max are noise: drop them (minimum-norm solution). */
        double tol = (double) d_s * DBL_EPSILON * lam[d_s - 1];

        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, bs, bt, bs, 1.0, v, bs, s->mst, bt,
                    0.0, x, bt);
        for (size_t i = 0; i < d_s; i++) {
                double f = 0.0;

                if (lam[i] > tol) {
                        f = 1.0 / lam[i];
                        rank++;
                }
                for (size_t j = 0; j < d_t; j++)
                        x[i * d_t + j] *= f;
        }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bs, bt, bs, 1.0, v, bs, x, bt, 0.0,
                    pt, bt);
        return rank;
}

/* 1 - SSE/SST of the map @pt on the fitted samples, with SSE = Σ‖t_c‖² -
 * 2 tr(A M_st) + tr(A M_ss Aᵀ), valid for any A; @y is [d_s, d_t] scratch. */
static double proj_r2(const kdl_kl_proj_state *s, int bs, int bt, const double *pt, double *y)
{
        double sse, cross = 0.0, quad = 0.0;

        cblas_dsymm(CblasRowMajor, CblasLeft, CblasUpper, bs, bt, 1.0, s->mss, bs, pt, bt, 0.0, y,
                    bt);
        for (size_t k = 0; k < s->d_s * s->d_t; k++) {
                cross += pt[k] * s->mst[k];
                quad += pt[k] * y[k];
        }
        sse = s->sst - 2.0 * cross + quad;
        if (sse < 0.0)
                sse = 0.0;
        return s->sst > 0.0 ? 1.0 - sse / s->sst : (double) NAN;
}

int kdl_kl_proj_finalize(const kdl_kl_proj_state *s, kdl_kl_projector **ret)
{
        size_t d_s = s->d_s, d_t = s->d_t;
        double *v = NULL, *lam = NULL, *x = NULL;
        kdl_kl_projector *p = NULL;
        int err, bs, bt;

        assert(s && ret);
        if (s->n == 0)
                return kdl_error(-KDL_EMISSING, "projector: no samples were accumulated");
        if (s->n < 2)
                return kdl_error(-KDL_ESHAPE, "projector: needs at least 2 samples, got %zu", s->n);
        if ((err = kdl__blas_int(d_s, &bs)) < 0 || (err = kdl__blas_int(d_t, &bt)) < 0)
                return err;
        err = -ENOMEM;
        p = kdl_new(kdl_kl_projector, 1);
        v = kdl_new(double, d_s *d_s);
        lam = kdl_new(double, d_s);
        x = kdl_new(double, d_s *d_t);
        if (!p || !v || !lam || !x)
                goto out;
        p->pt = kdl_new(double, d_s *d_t);
        p->b = kdl_new(double, d_t);
        if (!p->pt || !p->b)
                goto out;
        err = proj_eigen(s, bs, v, lam);
        if (err < 0)
                goto out;
        p->rank = proj_solve(s, bs, bt, v, lam, x, p->pt);
        /* b = μ_t - A μ_s. */
        memcpy(p->b, s->mu_t, d_t * sizeof(double));
        cblas_dgemv(CblasRowMajor, CblasTrans, bs, bt, -1.0, p->pt, bt, s->mu_s, 1, 1.0, p->b, 1);
        p->r2 = proj_r2(s, bs, bt, p->pt, x);
        p->d_s = d_s;
        p->d_t = d_t;
        p->fitted = true;
        p->n = s->n;
        *ret = p;
        p = NULL;
        err = 0;
out:
        kdl_kl_projector_free(p);
        free(x);
        free(lam);
        free(v);
        return err;
}
