/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/base/rng.h"
#include "metrics/spectral.h"
#include "metrics/spectral-internal.h"
#include "metrics/base/banned.h"

/*
 * The single-pass sketch of the scatter S = Xc^T Xc of a wide X: Y = S Omega
 * for a seeded Gaussian Omega [dx, k] with orthonormal columns, accumulated
 * block by block with the same exact pairwise centring as the covariance
 * (Chan, Golub & LeVeque 1979), then the stabilised Nystrom approximation of
 * Tropp, Yurtsever, Udell & Cevher (2017, "Fixed-rank approximation of a
 * positive-semidefinite matrix from streaming data", Alg. 3), with the
 * a-posteriori bounds of metrics/spectral.h from the exact trace.
 */

/* Tries of the Cholesky factorisation of Omega^T (Y + nu Omega), nu growing
 * 100-fold after a failure (rounding can leave B indefinite when S is nearly
 * singular on range(Omega)). */
#define CHOL_TRIES 8

/* A uniform in (0, 1) from 53 bits of z. */
static double unit(uint64_t z)
{
        return ((double) (z >> 11) + 0.5) * 0x1p-53;
}

/* Entry @c (column-major index) of the Gaussian matrix of @base: Box-Muller
 * on two counter-based uniforms, so an entry does not depend on k and the
 * first columns of a larger sketch are those of a smaller one. */
static double gauss(uint64_t base, uint64_t c)
{
        double u1 = unit(kdl__rng_mix64(base + (2 * c + 1) * KDL_RNG_GAMMA));
        double u2 = unit(kdl__rng_mix64(base + (2 * c + 2) * KDL_RNG_GAMMA));

        return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

int kdl__spectral_sketch_init(kdl_spectral_state *s)
{
        size_t dx = s->dx, k = s->k;
        uint64_t base = kdl__rng_mix64(s->plan.seed ^ 0x736b65746368ULL); /* "sketch" */
        double *tau;
        int info, err = 0;

        for (size_t j = 0; j < k; j++)
                for (size_t i = 0; i < dx; i++)
                        s->omega[j * dx + i] = gauss(base, (uint64_t) j * dx + i);
        /* Orthonormal columns (Q of the QR): the Nystrom approximation is the
         * same for Omega and Omega R, and Q keeps B well scaled. */
        tau = kdl_new(double, k);
        if (!tau)
                return -ENOMEM;
        info = LAPACKE_dgeqrf(LAPACK_COL_MAJOR, (int) dx, (int) k, s->omega, (int) dx, tau);
        if (info == 0)
                info = LAPACKE_dorgqr(LAPACK_COL_MAJOR, (int) dx, (int) k, (int) k, s->omega,
                                      (int) dx, tau);
        assert(info >= 0);
        if (info == LAPACK_WORK_MEMORY_ERROR)
                err = -ENOMEM;
        else if (info != 0)
                err = kdl_error(-KDL_ENOCONV, "sketch: QR of the test matrix failed (info %d)",
                                info);
        free(tau);
        return err;
}

void kdl__spectral_sketch_block(kdl_spectral_state *s, const double *xc, size_t m, double *w)
{
        int dx = (int) s->dx, k = (int) s->k, mi = (int) m;
        size_t nel = m * s->dx;

        /* W = Xc_b Omega [m, k]; Y^T [k, dx] += W^T Xc_b. */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mi, k, dx, 1.0, xc, dx, s->omega, dx,
                    0.0, w, k);
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, dx, mi, 1.0, w, k, xc, dx, 1.0,
                    s->ys, dx);
        for (size_t i = 0; i < nel; i++)
                s->trace += xc[i] * xc[i];
}

void kdl__spectral_sketch_cross(kdl_spectral_state *s, double f, const double *delta)
{
        int dx = (int) s->dx, k = (int) s->k;
        double *v = s->kv;

        /* (f delta delta^T) Omega = f delta (Omega^T delta)^T; Y^T += f v delta^T. */
        cblas_dgemv(CblasRowMajor, CblasNoTrans, k, dx, 1.0, s->omega, dx, delta, 1, 0.0, v, 1);
        cblas_dger(CblasRowMajor, k, dx, f, v, 1, delta, 1, s->ys, dx);
        s->trace += f * cblas_ddot(dx, delta, 1, delta, 1);
}

/* sigma^2 of E = (Y + nu Omega) U^-1 with Omega^T (Y + nu Omega) = U^T U into
 * @sig2 (descending), and the shift used into @ret_nu. */
static int nystrom(const kdl_spectral_state *s, double *sig2, double *ret_nu)
{
        size_t dx = s->dx, k = s->k, nel = dx * k;
        double *yv = NULL, *b = NULL, *sv = NULL, fro, nu;
        int dxi = (int) dx, ki = (int) k, info = 1, err = -ENOMEM;

        yv = kdl__malloc(nel, sizeof(double));
        b = kdl__malloc(k * k, sizeof(double));
        sv = kdl_new(double, k);
        if (!yv || !b || !sv)
                goto out;
        fro = cblas_dnrm2((int) nel, s->ys, 1);
        nu = sqrt((double) dx) * DBL_EPSILON * fro;
        if (!(fro > 0.0)) {
                /* No variance: every eigenvalue is 0. */
                memset(sig2, 0, k * sizeof(double));
                *ret_nu = 0.0;
                err = 0;
                goto out;
        }
        for (int t = 0; t < CHOL_TRIES && info != 0; t++, nu *= 100.0) {
                memcpy(yv, s->ys, nel * sizeof(double));
                cblas_daxpy((int) nel, nu, s->omega, 1, yv, 1);
                cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, ki, ki, dxi, 1.0, s->omega,
                            dxi, yv, dxi, 0.0, b, ki);
                for (size_t i = 0; i < k; i++)
                        for (size_t j = i + 1; j < k; j++)
                                b[j * k + i] = b[i * k + j] = 0.5 * (b[j * k + i] + b[i * k + j]);
                info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', ki, b, ki);
                assert(info >= 0);
                if (info == 0)
                        break;
        }
        if (info != 0) {
                err = kdl_error(-KDL_ENOCONV,
                                "sketch: Omega^T S Omega is not positive definite even shifted by "
                                "%g",
                                nu);
                goto out;
        }
        cblas_dtrsm(CblasColMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, dxi, ki, 1.0,
                    b, ki, yv, dxi);
        info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'N', dxi, ki, yv, dxi, sv, NULL, 1, NULL, 1);
        assert(info >= 0);
        if (info == LAPACK_WORK_MEMORY_ERROR)
                goto out;
        if (info > 0) {
                err = kdl_error(-KDL_ENOCONV, "sketch: dgesdd did not converge (info %d)", info);
                goto out;
        }
        for (size_t i = 0; i < k; i++)
                sig2[i] = sv[i] * sv[i];
        *ret_nu = nu;
        err = 0;
out:
        free(sv);
        free(b);
        free(yv);
        return err;
}

/* Upper bounds @hi [k] of the eigenvalues from the lower bounds @lo and the
 * slack @t: Weyl's lambda_{a+b-1}(A + R) <= lambda_a(A) + lambda_b(R) with
 * lambda_b(R) <= t / b for the residual R >= 0 of trace t, so lambda_i <=
 * min_{a <= i} lo_a + t / (i - a + 1) (a = i is lo_i + t). */
static void upper_bounds(const double *lo, size_t k, double t, double *hi)
{
        for (size_t i = 0; i < k; i++) {
                hi[i] = lo[i] + t;
                for (size_t a = 0; a < i; a++)
                        hi[i] = fmin(hi[i], lo[a] + t / (double) (i - a + 1));
        }
}

/* The bounds of the residual curve (scatter units, fractions of @tr) from the
 * eigenvalue bounds @lo, @hi [k] and the slack @t (metrics/spectral.h), into
 * r->tail (upper) and r->tail_lo. */
static void residual_bounds(kdl_spectral_result *r, const double *lo, const double *hi, size_t k,
                            double t, double tr, size_t rmax)
{
        size_t d = r->d;
        double cum = 0.0, cumhi = 0.0, hik = 0.0;

        r->tail[0] = r->tail_lo[0] = 1.0;
        for (size_t j = 1; j <= d; j++) {
                double up, lw;

                if (j >= rmax) {
                        up = lw = 0.0;
                } else if (j <= k) {
                        /* residual(j) = tr - sum_{i<=j} lambda_i, each lambda_i in
                         * [lo_i, hi_i], and their sum at most L_j + t (Ky Fan). */
                        cum += lo[j - 1];
                        cumhi += hi[j - 1];
                        up = fmax(tr - cum, 0.0) / tr;
                        lw = fmax(fmax(tr - t - cum, tr - cumhi), 0.0) / tr;
                        if (j == k)
                                hik = up;
                } else {
                        /* Unknown but descending eigenvalues: the tail's mean
                         * does not grow, residual(j) / (R - j) <= residual(k) / (R - k). */
                        up = hik * (double) (rmax - j) / (double) (rmax - k);
                        lw = 0.0;
                }
                r->tail[j] = up;
                r->tail_lo[j] = lw;
        }
}

int kdl__spectral_sketch_finalize(const kdl_spectral_state *s, kdl_spectral_result *r)
{
        size_t k = s->k, d = s->dx, rmax, neig = s->plan.rank < k ? s->plan.rank : k;
        double *sig2 = NULL, *lo = NULL, *hi = NULL, nu = 0.0, sum = 0.0, t, tr = s->trace;
        double nm1 = (double) (s->n - 1);
        const double q[3] = {0.10, 0.05, 0.01};
        size_t *dims[3] = {&r->sum.dims90, &r->sum.dims95, &r->sum.dims99};
        int err = -ENOMEM;

        sig2 = kdl_new(double, k);
        lo = kdl_new(double, k);
        hi = kdl_new(double, k);
        r->eig_hi = kdl_new(double, neig);
        r->tail_lo = kdl_new(double, d + 1);
        if (!sig2 || !lo || !hi || !r->eig_hi || !r->tail_lo)
                goto out;
        err = nystrom(s, sig2, &nu);
        if (err < 0)
                goto out;
        for (size_t i = 0; i < k; i++) {
                lo[i] = fmax(sig2[i] - nu, 0.0);
                sum += sig2[i];
        }
        /* t = tr(S - (A - nu I)) with A the Nystrom approximation of S + nu I,
         * whose eigenvalues are sig2 and 0 (dx - k times). */
        t = fmax(tr - sum + (double) d * nu, 0.0);
        upper_bounds(lo, k, t, hi);
        rmax = s->n - 1;
        if (d - ((s->flags & KDL_SPECTRAL_CENTER_ROWS_X) ? 1 : 0) < rmax)
                rmax = d - ((s->flags & KDL_SPECTRAL_CENTER_ROWS_X) ? 1 : 0);

        r->method = KDL_SPECTRAL_SKETCH;
        r->neig = neig;
        r->sketch_k = k;
        r->bound = t / nm1;
        for (size_t i = 0; i < neig; i++) {
                r->eig[i] = lo[i] / nm1;
                r->eig_hi[i] = hi[i] / nm1;
        }
        r->sum = (kdl_spectral_summary){.total = tr / nm1,
                                        .rank_rtol = NAN,
                                        .effective_rank = NAN,
                                        .participation_ratio = NAN};
        if (tr > 0.0) {
                residual_bounds(r, lo, hi, k, t, tr, rmax);
                for (size_t m = 0; m < 3; m++) {
                        size_t j = 0;

                        while (j < d && r->tail[j] > q[m])
                                j++;
                        *dims[m] = j;
                }
        }
        err = 0;
out:
        free(hi);
        free(lo);
        free(sig2);
        return err;
}
