/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/base/tensor.h"
#include "metrics/spectral.h"

/*
 * References here are independent of the code under test: covariances by the
 * textbook two-pass formula in long double, eigenvalues by cyclic Jacobi
 * rotations (no LAPACK), linear systems by Gaussian elimination.
 */

/* ---- independent reference helpers ---------------------------------------- */

static int cmp_desc(const void *a, const void *b)
{
        double x = *(const double *) a, y = *(const double *) b;

        return (x < y) - (x > y);
}

/* Eigenvalues of the symmetric n x n matrix a (destroyed), descending. */
static void jacobi_eig(double *a, size_t n, double *ev)
{
        for (int sweep = 0; sweep < 100; sweep++) {
                double off = 0.0;

                for (size_t p = 0; p < n; p++)
                        for (size_t q = p + 1; q < n; q++)
                                off += a[p * n + q] * a[p * n + q];
                if (off < 1e-300)
                        break;
                for (size_t p = 0; p < n; p++) {
                        for (size_t q = p + 1; q < n; q++) {
                                double apq = a[p * n + q], theta, t, c, s;

                                if (fabs(apq) < 1e-300)
                                        continue;
                                theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                                t = (theta >= 0 ? 1.0 : -1.0) /
                                    (fabs(theta) + sqrt(theta * theta + 1.0));
                                c = 1.0 / sqrt(t * t + 1.0);
                                s = t * c;
                                for (size_t k = 0; k < n; k++) {
                                        double akp = a[k * n + p], akq = a[k * n + q];

                                        a[k * n + p] = c * akp - s * akq;
                                        a[k * n + q] = s * akp + c * akq;
                                }
                                for (size_t k = 0; k < n; k++) {
                                        double apk = a[p * n + k], aqk = a[q * n + k];

                                        a[p * n + k] = c * apk - s * aqk;
                                        a[q * n + k] = s * apk + c * aqk;
                                }
                        }
                }
        }
        for (size_t i = 0; i < n; i++)
                ev[i] = a[i * n + i];
        qsort(ev, n, sizeof(double), cmp_desc);
}

/* Two-pass sample covariance (1/(n-1)) of x [n, d] (row-major), optionally of
 * the row-centred rows, in long double. */
static void ref_cov(const double *x, size_t n, size_t d, int center_rows, double *cov)
{
        long double *mean = calloc(d, sizeof(long double));
        double *xr = malloc(n * d * sizeof(double));

        assert_non_null(mean);
        assert_non_null(xr);
        for (size_t i = 0; i < n; i++) {
                long double rm = 0;

                for (size_t j = 0; j < d; j++)
                        rm += x[i * d + j];
                rm /= d;
                for (size_t j = 0; j < d; j++)
                        xr[i * d + j] = center_rows ? (double) (x[i * d + j] - rm) : x[i * d + j];
        }
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < d; j++)
                        mean[j] += xr[i * d + j];
        for (size_t j = 0; j < d; j++)
                mean[j] /= n;
        for (size_t j = 0; j < d; j++)
                for (size_t k = 0; k < d; k++) {
                        long double acc = 0;

                        for (size_t i = 0; i < n; i++)
                                acc += (xr[i * d + j] - mean[j]) * (xr[i * d + k] - mean[k]);
                        cov[j * d + k] = (double) (acc / (n - 1));
                }
        free(xr);
        free(mean);
}

/* Solve a x = b for nrhs right-hand sides (b [n, nrhs], row-major) by Gaussian
 * elimination with partial pivoting; a and b are destroyed, x returned in b. */
static void gauss_solve(double *a, double *b, size_t n, size_t nrhs)
{
        for (size_t k = 0; k < n; k++) {
                size_t piv = k;

                for (size_t i = k + 1; i < n; i++)
                        if (fabs(a[i * n + k]) > fabs(a[piv * n + k]))
                                piv = i;
                for (size_t j = 0; j < n; j++) {
                        double t = a[k * n + j];
                        a[k * n + j] = a[piv * n + j];
                        a[piv * n + j] = t;
                }
                for (size_t j = 0; j < nrhs; j++) {
                        double t = b[k * nrhs + j];
                        b[k * nrhs + j] = b[piv * nrhs + j];
                        b[piv * nrhs + j] = t;
                }
                for (size_t i = k + 1; i < n; i++) {
                        double f = a[i * n + k] / a[k * n + k];

                        for (size_t j = k; j < n; j++)
                                a[i * n + j] -= f * a[k * n + j];
                        for (size_t j = 0; j < nrhs; j++)
                                b[i * nrhs + j] -= f * b[k * nrhs + j];
                }
        }
        for (size_t k = n; k-- > 0;)
                for (size_t j = 0; j < nrhs; j++) {
                        double acc = b[k * nrhs + j];

                        for (size_t i = k + 1; i < n; i++)
                                acc -= a[k * n + i] * b[i * nrhs + j];
                        b[k * nrhs + j] = acc / a[k * n + k];
                }
}

static double *gauss_matrix(kdl_test_rng *rng, size_t n, size_t d, double scale)
{
        double *x = malloc(n * d * sizeof(double));

        assert_non_null(x);
        for (size_t i = 0; i < n * d; i++)
                x[i] = scale * kdl_test_normal(rng);
        return x;
}

/* x = a [n, r] b [r, d] + noise * N(0, 1) + offset */
static double *planted(kdl_test_rng *rng, size_t n, size_t d, size_t r, double noise, double offset)
{
        double *a = gauss_matrix(rng, n, r, 1.0), *b = gauss_matrix(rng, r, d, 1.0);
        double *x = malloc(n * d * sizeof(double));

        assert_non_null(x);
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < d; j++) {
                        double v = offset + noise * kdl_test_normal(rng);

                        for (size_t k = 0; k < r; k++)
                                v += a[i * r + k] * b[k * d + j];
                        x[i * d + j] = v;
                }
        free(a);
        free(b);
        return x;
}

/* Accumulate rows of x (and y) in blocks of `block` rows. */
static void feed(kdl_spectral_state *s, double *x, size_t dx, double *y, size_t dy, size_t r0,
                 size_t r1, size_t block)
{
        for (size_t i = r0; i < r1; i += block) {
                size_t m = i + block < r1 ? block : r1 - i;
                kdl_tensor xb = kdl_tensor_wrap(x + i * dx, 2, (size_t[]){m, dx});
                kdl_tensor yb;

                if (y)
                        yb = kdl_tensor_wrap(y + i * dy, 2, (size_t[]){m, dy});
                assert_int_equal(kdl_spectral_accumulate(s, &xb, y ? &yb : NULL), 0);
        }
}

static kdl_spectral_result *finalize(const kdl_spectral_state *s, double lambda)
{
        kdl_spectral_opts o;
        kdl_spectral_result *r = NULL;

        kdl_spectral_opts_init(&o);
        o.ridge_lambda = lambda;
        assert_int_equal(kdl_spectral_finalize(s, &o, &r), 0);
        return r;
}

/* ---- covariance spectrum ------------------------------------------------- */

static void test_planted_rank_is_found(void **state)
{
        kdl_test_rng rng = {11};
        const size_t n = 400, d = 12, r = 4;
        double *x = planted(&rng, n, d, r, 1e-4, 5.0);
        kdl_spectral_state *s = NULL;
        kdl_spectral_result *res;

        (void) state;
        assert_int_equal(kdl_spectral_state_new(d, 0, 0, &s), 0);
        feed(s, x, d, NULL, 0, 0, n, 64);
        assert_int_equal(kdl_spectral_count(s), n);
        res = finalize(s, -1.0);
        assert_int_equal(res->sum.rank, r);
        assert_true(res->sum.dims95 <= r);
        assert_true(res->sum.dims99 <= r);
        assert_true(res->sum.effective_rank <= (double) r + 1e-6);
        assert_true(res->sum.participation_ratio <= res->sum.effective_rank + 1e-12);
        assert_true(res->tail[r] < 1e-6);
        assert_false(res->has_ridge);
        kdl_spectral_result_free(res);
        kdl_spectral_state_free(s);
        free(x);
}

static void test_spectrum_matches_jacobi(void **state)
{
        kdl_test_rng rng = {12};
        const size_t n = 137, d = 9;
        double scales[9] = {3.1, 0.2, 1.7, 0.05, 2.4, 0.9, 1.1, 0.6, 4.0};
        double *x = malloc(n * d * sizeof(double)), *xt = malloc(n * d * sizeof(double));
        double cov[81], ev[9];
        kdl_tensor full;
        kdl_spectral_state *s = NULL;
        kdl_spectral_result *res;

        (void) state;
        assert_non_null(x);
        assert_non_null(xt);
        /* Correlated columns on a large common offset (tests the centring). */
        for (size_t i = 0; i < n; i++) {
                double common = kdl_test_normal(&rng);

                for (size_t j = 0; j < d; j++)
                        x[i * d + j] = 1e3 + scales[j] * kdl_test_normal(&rng) + 0.7 * j * common;
        }
        /* Feed a transposed view of the transpose: strided blocks. */
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < d; j++)
                        xt[j * n + i] = x[i * d + j];
        full = kdl_tensor_wrap(xt, 2, (size_t[]){d, n});
        full = kdl_tensor_view_transpose(&full);
        assert_int_equal(kdl_spectral_state_new(d, 0, 0, &s), 0);
        for (size_t i = 0; i < n; i += 10) {
                kdl_tensor b = kdl_tensor_view_rows(&full, i, i + 10 < n ? i + 10 : n);

                assert_int_equal(kdl_spectral_accumulate(s, &b, NULL), 0);
        }
        res = finalize(s, -1.0);

        ref_cov(x, n, d, 0, cov);
        jacobi_eig(cov, d, ev);
        for (size_t k = 0; k < d; k++)
                assert_close(res->eig[k], ev[k], 1e-10, 1e-12 * ev[0]);
        assert_int_equal(res->sum.rank, d);
        kdl_spectral_result_free(res);
        kdl_spectral_state_free(s);
        free(xt);
        free(x);
}

static void test_summary_on_known_spectra(void **state)
{
        double uniform[8] = {2.5, 2.5, 2.5, 2.5, 2.5, 0, 0, 0};
        double steps[4] = {4, 2, 1, 1};
        double zero[3] = {0, 0, -1e-18};
        double geo[30];
        kdl_spectral_summary s;
        double total = 0, sq = 0, h = 0, cum = 0;
        size_t d95 = 0;

        (void) state;
        /* A uniform spectrum over k directions: both measures equal k. */
        assert_int_equal(kdl_spectral_summarize(uniform, 8, 1e-6, &s), 0);
        assert_close(s.effective_rank, 5.0, 1e-14, 0);
        assert_close(s.participation_ratio, 5.0, 1e-14, 0);
        assert_int_equal(s.rank, 5);
        assert_int_equal(s.dims90, 5);
        assert_close(s.total, 12.5, 1e-15, 0);

        /* p = (1/2, 1/4, 1/8, 1/8): H = 1.75 ln 2, PR = 64/22. */
        assert_int_equal(kdl_spectral_summarize(steps, 4, 1e-6, &s), 0);
        assert_close(s.effective_rank, pow(2.0, 1.75), 1e-14, 0);
        assert_close(s.participation_ratio, 64.0 / 22.0, 1e-14, 0);
        assert_int_equal(s.dims90, 4);
        assert_int_equal(s.rank, 4);
        /* The tolerance is relative to lambda_1 = 4: 1/4 is not above 0.25. */
        assert_int_equal(kdl_spectral_summarize(steps, 4, 0.25, &s), 0);
        assert_int_equal(s.rank, 2);

        /* A geometric spectrum against the definitions evaluated here. */
        for (size_t k = 0; k < 30; k++) {
                geo[k] = 3.0 * pow(0.8, (double) k);
                total += geo[k];
                sq += geo[k] * geo[k];
        }
        for (size_t k = 0; k < 30; k++) {
                h -= geo[k] / total * log(geo[k] / total);
                cum += geo[k];
                if (!d95 && cum >= 0.95 * total)
                        d95 = k + 1;
        }
        assert_int_equal(kdl_spectral_summarize(geo, 30, 1e-6, &s), 0);
        assert_close(s.effective_rank, exp(h), 1e-13, 0);
        assert_close(s.participation_ratio, total * total / sq, 1e-13, 0);
        assert_int_equal(s.dims95, d95);
        assert_int_equal(d95, 14); /* 1 - 0.8^k >= 0.95 (up to the finite tail) */
        assert_true(s.dims90 < s.dims95 && s.dims95 < s.dims99);

        /* No variance: every field is 0, rounding negatives included. */
        assert_int_equal(kdl_spectral_summarize(zero, 3, 1e-6, &s), 0);
        assert_int_equal(s.rank, 0);
        assert_close(s.effective_rank, 0.0, 0, 0);
        assert_close(s.participation_ratio, 0.0, 0, 0);
        assert_int_equal(s.dims99, 0);
}

/* ---- residual curve of centred logits -------------------------------------- */

static void test_residual_curve_identities(void **state)
{
        kdl_test_rng rng = {13};
        const size_t n = 300, c = 7;
        double *z = gauss_matrix(&rng, n, c, 2.0), *zs = malloc(n * c * sizeof(double));
        double cov[49], ev[7], t = 0;
        kdl_spectral_state *s = NULL, *s2 = NULL;
        kdl_spectral_result *res, *res2;

        (void) state;
        assert_non_null(zs);
        /* A per-sample shift of every logit: c(z) removes it exactly. */
        for (size_t i = 0; i < n; i++) {
                double shift = 50.0 * kdl_test_normal(&rng);

                for (size_t k = 0; k < c; k++)
                        zs[i * c + k] = z[i * c + k] + shift;
        }
        assert_int_equal(kdl_spectral_state_new(c, 0, KDL_SPECTRAL_CENTER_ROWS_X, &s), 0);
        assert_int_equal(kdl_spectral_state_new(c, 0, KDL_SPECTRAL_CENTER_ROWS_X, &s2), 0);
        feed(s, z, c, NULL, 0, 0, n, 50);
        feed(s2, zs, c, NULL, 0, 0, n, 33);
        res = finalize(s, -1.0);
        res2 = finalize(s2, -1.0);

        assert_close(res->tail[0], 1.0, 0, 0);
        assert_close(res->tail[c], 0.0, 0, 0);
        assert_true(res->tail[c - 1] < 1e-13); /* row-centred: rank <= C - 1 */
        for (size_t d = 0; d < c; d++)
                assert_true(res->tail[d + 1] <= res->tail[d]);
        assert_int_equal(res->sum.rank, c - 1);

        /* Against the reference spectrum of H_N Z H_C. */
        ref_cov(z, n, c, 1, cov);
        jacobi_eig(cov, c, ev);
        for (size_t d = c; d-- > 0;) {
                assert_close(res->tail[d],
                             (t + fmax(ev[d], 0)) / (ev[0] + ev[1] + ev[2] + ev[3] + ev[4] + ev[5] +
                                                     fmax(ev[6], 0)),
                             1e-10, 1e-13);
                t += fmax(ev[d], 0);
                assert_close(res2->tail[d], res->tail[d], 1e-9, 1e-12);
        }
        kdl_spectral_result_free(res2);
        kdl_spectral_result_free(res);
        kdl_spectral_state_free(s2);
        kdl_spectral_state_free(s);
        free(zs);
        free(z);
}

/* The verdict of width @d_s (R^2 @r2) at tolerance @tol. */
static kdl_spectral_verdict_result verdict(const kdl_spectral_result *res, size_t d_s, double r2,
                                           double tol)
{
        kdl_spectral_verdict_result v;

        assert_int_equal(kdl_spectral_verdict(res, d_s, r2, tol, &v), 0);
        return v;
}

static void test_verdict(void **state)
{
        kdl_test_rng rng = {14};
        const size_t n = 500, c = 10;
        double *z = planted(&rng, n, c, 3, 1e-5, 0.0);
        kdl_spectral_state *s = NULL;
        kdl_spectral_result *res;
        kdl_spectral_verdict_result v;

        (void) state;
        assert_int_equal(kdl_spectral_state_new(c, 0, KDL_SPECTRAL_CENTER_ROWS_X, &s), 0);
        feed(s, z, c, NULL, 0, 0, n, 128);
        res = finalize(s, -1.0);
        /* The planted logits span 3 centred directions: both of the
         * first two leave more than 1 %, the third almost nothing. */
        assert_true(res->tail[2] > 0.01 && res->tail[3] < 1e-6);

        /* Narrower than C - 1 but as wide as the logits' span: sufficient
         * (the old test, d_s < C - 1, called it insufficient). */
        v = verdict(res, 5, 0.995, 0.01);
        assert_int_equal(v.d_needed, 3);
        assert_int_equal(v.fails, 0);
        assert_true(v.realised);
        assert_close(v.residual, res->tail[5], 0, 0);
        v = verdict(res, 3, NAN, 0.01);
        assert_int_equal(v.fails, 0);
        assert_false(v.realised);
        /* Narrower than the span: architectural. */
        v = verdict(res, 2, NAN, 0.01);
        assert_int_equal(v.fails, KDL_DIMS_ARCHITECTURAL);
        assert_close(v.residual, res->tail[2], 0, 0);
        /* The tolerance decides: width 1 leaves tail[1] out. */
        v = verdict(res, 1, NAN, res->tail[1] * (1 - 1e-9));
        assert_int_equal(v.d_needed, 2);
        assert_int_equal(v.fails, KDL_DIMS_ARCHITECTURAL);
        v = verdict(res, 1, NAN, res->tail[1]);
        assert_int_equal(v.d_needed, 1);
        assert_int_equal(v.fails, 0);
        assert_int_equal(verdict(res, 0, NAN, 1.0).d_needed, 0);
        assert_int_equal(verdict(res, 0, NAN, 0.0).fails, KDL_DIMS_ARCHITECTURAL);
        /* d_needed is the least d with tail[d] <= tol, for every tolerance. */
        for (double tol = 0.0; tol <= 1.0; tol += 0.0625) {
                size_t want = 0;

                while (res->tail[want] > tol)
                        want++;
                assert_int_equal(verdict(res, c, NAN, tol).d_needed, want);
        }
        /* Wide enough but the features explain 90 %: realised, at 1 % only. */
        v = verdict(res, 512, 0.9, 0.01);
        assert_int_equal(v.fails, KDL_DIMS_REALISED);
        assert_close(v.residual, 0.0, 0, 0);
        assert_int_equal(verdict(res, 512, 0.9, 0.1).fails, 0);
        assert_int_equal(verdict(res, 2, 0.5, 0.01).fails,
                         KDL_DIMS_ARCHITECTURAL | KDL_DIMS_REALISED);
        kdl_spectral_result_free(res);
        kdl_spectral_state_free(s);
        free(z);
}

/* ---- ridge --------------------------------------------------------------- */

/* Features x [n, dx] and targets y [n, dy] = x b + noise, rows of y shifted. */
static void make_regression(kdl_test_rng *rng, size_t n, size_t dx, size_t dy, double noise,
                            double **rx, double **ry)
{
        double *x = gauss_matrix(rng, n, dx, 1.0), *b = gauss_matrix(rng, dx, dy, 1.0);
        double *y = malloc(n * dy * sizeof(double));

        assert_non_null(y);
        for (size_t i = 0; i < n; i++) {
                double shift = 3.0 * kdl_test_normal(rng);

                for (size_t j = 0; j < dx; j++)
                        x[i * dx + j] += 2.0;
                for (size_t k = 0; k < dy; k++) {
                        double v = shift + noise * kdl_test_normal(rng);

                        for (size_t j = 0; j < dx; j++)
                                v += x[i * dx + j] * b[j * dy + k];
                        y[i * dy + k] = v;
                }
        }
        free(b);
        *rx = x;
        *ry = y;
}

/* Direct ridge on the centred data: rss, tss and df at lambda. */
static void ref_ridge(const double *x, const double *y, size_t n, size_t dx, size_t dy,
                      double lambda, double *rss, double *tss, double *df)
{
        double *xc = malloc(n * dx * sizeof(double)), *yc = malloc(n * dy * sizeof(double));
        double *a = calloc(dx * dx, sizeof(double)), *b = calloc(dx * dy, sizeof(double));
        double *a2 = calloc(dx * dx, sizeof(double)), *m = calloc(dx * dx, sizeof(double));
        double mean;

        assert_true(xc && yc && a && b && a2 && m);
        memcpy(xc, x, n * dx * sizeof(double));
        for (size_t i = 0; i < n; i++) {
                double rm = 0;

                for (size_t k = 0; k < dy; k++)
                        rm += y[i * dy + k];
                for (size_t k = 0; k < dy; k++)
                        yc[i * dy + k] = y[i * dy + k] - rm / dy;
        }
        for (size_t j = 0; j < dx; j++) {
                mean = 0;
                for (size_t i = 0; i < n; i++)
                        mean += xc[i * dx + j];
                for (size_t i = 0; i < n; i++)
                        xc[i * dx + j] -= mean / n;
        }
        for (size_t k = 0; k < dy; k++) {
                mean = 0;
                for (size_t i = 0; i < n; i++)
                        mean += yc[i * dy + k];
                for (size_t i = 0; i < n; i++)
                        yc[i * dy + k] -= mean / n;
        }
        for (size_t j = 0; j < dx; j++)
                for (size_t l = 0; l < dx; l++)
                        for (size_t i = 0; i < n; i++)
                                a[j * dx + l] += xc[i * dx + j] * xc[i * dx + l];
        for (size_t j = 0; j < dx; j++)
                for (size_t k = 0; k < dy; k++)
                        for (size_t i = 0; i < n; i++)
                                b[j * dy + k] += xc[i * dx + j] * yc[i * dy + k];
        memcpy(m, a, dx * dx * sizeof(double));
        for (size_t j = 0; j < dx; j++)
                a[j * dx + j] += lambda;
        memcpy(a2, a, dx * dx * sizeof(double));
        gauss_solve(a, b, dx, dy);  /* b = (S + lambda I)^-1 Sxy */
        gauss_solve(a2, m, dx, dx); /* m = (S + lambda I)^-1 S */
        *df = 0;
        for (size_t j = 0; j < dx; j++)
                *df += m[j * dx + j];
        *rss = *tss = 0;
        for (size_t i = 0; i < n; i++)
                for (size_t k = 0; k < dy; k++) {
                        double f = 0;

                        for (size_t j = 0; j < dx; j++)
                                f += xc[i * dx + j] * b[j * dy + k];
                        *rss += (yc[i * dy + k] - f) * (yc[i * dy + k] - f);
                        *tss += yc[i * dy + k] * yc[i * dy + k];
                }
        free(m);
        free(a2);
        free(b);
        free(a);
        free(yc);
        free(xc);
}

static void test_ridge_given_lambda_matches_direct_solve(void **state)
{
        kdl_test_rng rng = {15};
        const size_t n = 200, dx = 6, dy = 4;
        const double lambdas[3] = {3.7, 250.0, 0.0};
        double *x, *y, rss, tss, df;
        kdl_spectral_state *s = NULL;

        (void) state;
        make_regression(&rng, n, dx, dy, 2.0, &x, &y);
        assert_int_equal(kdl_spectral_state_new(dx, dy, KDL_SPECTRAL_CENTER_ROWS_Y, &s), 0);
        feed(s, x, dx, y, dy, 0, n, 47);
        for (size_t l = 0; l < 3; l++) {
                kdl_spectral_result *res = finalize(s, lambdas[l]);

                ref_ridge(x, y, n, dx, dy, lambdas[l], &rss, &tss, &df);
                assert_true(res->has_ridge);
                assert_false(res->ridge.by_gcv);
                assert_close(res->ridge.lambda, lambdas[l], 0, 0);
                assert_close(res->ridge.tss, tss, 1e-12, 0);
                assert_close(res->ridge.rss, rss, 1e-9, 0);
                assert_close(res->ridge.df, df, 1e-11, 0);
                assert_close(res->ridge.r2, 1.0 - rss / tss, 1e-10, 1e-12);
                assert_close(res->ridge.gcv, rss / n / ((1 - (1 + df) / n) * (1 - (1 + df) / n)),
                             1e-9, 0);
                kdl_spectral_result_free(res);
        }
        kdl_spectral_state_free(s);
        free(y);
        free(x);
}

static void test_gcv_picks_a_sane_lambda(void **state)
{
        kdl_test_rng rng = {16};
        const size_t n = 300, dx = 10, dy = 5;
        double *x, *y, *xn;
        kdl_spectral_state *s = NULL, *sn = NULL;
        kdl_spectral_result *res, *lo, *hi, *rn;
        double rss_ols, tss, df;

        (void) state;
        make_regression(&rng, n, dx, dy, 3.0, &x, &y);
        assert_int_equal(kdl_spectral_state_new(dx, dy, KDL_SPECTRAL_CENTER_ROWS_Y, &s), 0);
        feed(s, x, dx, y, dy, 0, n, 100);
        res = finalize(s, -1.0);
        assert_true(res->ridge.by_gcv);
        assert_true(res->ridge.lambda > 0);
        /* A local minimum of GCV, and the in-sample R^2 between the OLS one
         * and the GCV estimate. */
        lo = finalize(s, res->ridge.lambda / 3);
        hi = finalize(s, res->ridge.lambda * 3);
        assert_true(res->ridge.gcv <= lo->ridge.gcv && res->ridge.gcv <= hi->ridge.gcv);
        ref_ridge(x, y, n, dx, dy, 0.0, &rss_ols, &tss, &df);
        assert_true(res->ridge.r2 <= 1.0 - rss_ols / tss + 1e-12);
        assert_true(res->ridge.r2_gcv < res->ridge.r2);
        assert_true(res->ridge.r2 > 0.3 && res->ridge.r2 < 1.0);
        assert_close(res->ridge.r2_gcv, res->ridge.r2, 0, 0.05);

        /* Features unrelated to the targets: GCV shrinks hard and the
         * estimated out-of-sample R^2 is about 0. */
        xn = gauss_matrix(&rng, n, dx, 1.0);
        assert_int_equal(kdl_spectral_state_new(dx, dy, KDL_SPECTRAL_CENTER_ROWS_Y, &sn), 0);
        feed(sn, xn, dx, y, dy, 0, n, 300);
        rn = finalize(sn, -1.0);
        assert_true(rn->ridge.r2_gcv < 0.02);
        assert_true(rn->ridge.r2 < 0.05);
        assert_true(rn->ridge.df < (double) dx);

        kdl_spectral_result_free(rn);
        kdl_spectral_result_free(hi);
        kdl_spectral_result_free(lo);
        kdl_spectral_result_free(res);
        kdl_spectral_state_free(sn);
        kdl_spectral_state_free(s);
        free(xn);
        free(y);
        free(x);
}

/* ---- merge and errors --------------------------------------------------- */

static void test_merge_equals_sequential(void **state)
{
        kdl_test_rng rng = {17};
        const size_t n = 260, dx = 8, dy = 5;
        double *x, *y;
        kdl_spectral_state *all = NULL, *a = NULL, *b = NULL, *e = NULL;
        kdl_spectral_result *ra, *rm;
        const unsigned fl = KDL_SPECTRAL_CENTER_ROWS_Y;

        (void) state;
        make_regression(&rng, n, dx, dy, 1.0, &x, &y);
        /* B's samples sit far from A's: the cross term matters. */
        for (size_t i = 100; i < n; i++)
                for (size_t j = 0; j < dx; j++)
                        x[i * dx + j] += 4.0 + j;
        assert_int_equal(kdl_spectral_state_new(dx, dy, fl, &all), 0);
        assert_int_equal(kdl_spectral_state_new(dx, dy, fl, &a), 0);
        assert_int_equal(kdl_spectral_state_new(dx, dy, fl, &b), 0);
        assert_int_equal(kdl_spectral_state_new(dx, dy, fl, &e), 0);
        feed(all, x, dx, y, dy, 0, n, 128);
        feed(a, x, dx, y, dy, 0, 100, 7);
        feed(b, x, dx, y, dy, 100, n, 1);
        /* Merging an empty state is a no-op; merging into one copies. */
        assert_int_equal(kdl_spectral_merge(a, e), 0);
        assert_int_equal(kdl_spectral_merge(e, a), 0);
        assert_int_equal(kdl_spectral_merge(e, b), 0);
        assert_int_equal(kdl_spectral_count(e), n);
        ra = finalize(all, 1.5);
        rm = finalize(e, 1.5);
        for (size_t k = 0; k < dx; k++)
                assert_close(rm->eig[k], ra->eig[k], 1e-12, 1e-14 * ra->eig[0]);
        assert_close(rm->ridge.rss, ra->ridge.rss, 1e-11, 0);
        assert_close(rm->ridge.tss, ra->ridge.tss, 1e-12, 0);
        assert_close(rm->ridge.r2, ra->ridge.r2, 1e-12, 0);
        kdl_spectral_result_free(rm);
        kdl_spectral_result_free(ra);
        kdl_spectral_state_free(e);
        kdl_spectral_state_free(b);
        kdl_spectral_state_free(a);
        kdl_spectral_state_free(all);
        free(y);
        free(x);
}

static void test_errors_leave_state_and_outputs(void **state)
{
        double good[6] = {0.3, -1.2, 2.5, 0.7, -0.4, 1.9};
        double bad[6] = {0.3, -1.2, 2.5, NAN, -0.4, 1.9};
        double cube[8] = {0};
        kdl_tensor g = kdl_tensor_wrap(good, 2, (size_t[]){3, 2});
        kdl_tensor g1 = kdl_tensor_wrap(good, 2, (size_t[]){1, 2});
        kdl_tensor wide = kdl_tensor_wrap(good, 2, (size_t[]){2, 3});
        kdl_tensor bd = kdl_tensor_wrap(bad, 2, (size_t[]){3, 2});
        kdl_tensor c3 = kdl_tensor_wrap(cube, 3, (size_t[]){2, 2, 2});
        kdl_tensor y2 = kdl_tensor_wrap(good, 2, (size_t[]){2, 3});
        kdl_tensor y3 = kdl_tensor_wrap(good, 2, (size_t[]){3, 2});
        kdl_spectral_state *s = NULL, *t = NULL, *u = NULL, *keep = (kdl_spectral_state *) 0x1;
        kdl_spectral_result *r = (kdl_spectral_result *) 0x1, *r2;
        kdl_spectral_opts o;
        size_t rank = 77;
        double sum = -1;
        kdl_spectral_verdict_result why = {.d_needed = 77};

        (void) state;
        kdl_spectral_opts_init(&o);
        assert_int_equal(kdl_spectral_state_new(0, 0, 0, &keep), -KDL_ESHAPE);
        assert_int_equal(kdl_spectral_state_new(1, 0, KDL_SPECTRAL_CENTER_ROWS_X, &keep),
                         -KDL_ESHAPE);
        assert_int_equal(kdl_spectral_state_new(3, 1, KDL_SPECTRAL_CENTER_ROWS_Y, &keep),
                         -KDL_ESHAPE);
        assert_int_equal(kdl_spectral_state_new(SIZE_MAX / 2, 0, 0, &keep), -KDL_EOVERFLOW);
        assert_true(keep == (kdl_spectral_state *) 0x1);

        assert_int_equal(kdl_spectral_state_new(2, 0, 0, &s), 0);
        /* Empty: nothing to finalize; the output is untouched. */
        assert_int_equal(kdl_spectral_finalize(s, &o, &r), -KDL_EMISSING);
        assert_int_equal(kdl_spectral_accumulate(s, &g1, NULL), 0);
        assert_int_equal(kdl_spectral_finalize(s, &o, &r), -KDL_ESHAPE);
        assert_non_null(strstr(kdl_errmsg(), "need at least 2"));
        assert_true(r == (kdl_spectral_result *) 0x1);
        /* Shapes and NaN: refused, the state keeps its one sample. */
        assert_int_equal(kdl_spectral_accumulate(s, &wide, NULL), -KDL_ESHAPE);
        assert_int_equal(kdl_spectral_accumulate(s, &c3, NULL), -KDL_ESHAPE);
        assert_int_equal(kdl_spectral_accumulate(s, &bd, NULL), -KDL_ENONFINITE);
        assert_non_null(strstr(kdl_errmsg(), "row 1"));
        assert_int_equal(kdl_spectral_count(s), 1);
        /* ... and equals a state that never saw the bad blocks. */
        assert_int_equal(kdl_spectral_accumulate(s, &g, NULL), 0);
        assert_int_equal(kdl_spectral_state_new(2, 0, 0, &t), 0);
        assert_int_equal(kdl_spectral_accumulate(t, &g1, NULL), 0);
        assert_int_equal(kdl_spectral_accumulate(t, &g, NULL), 0);
        r = finalize(s, -1);
        r2 = finalize(t, -1);
        assert_close(r->eig[0], r2->eig[0], 0, 0);
        assert_close(r->eig[1], r2->eig[1], 0, 0);
        kdl_spectral_result_free(r2);
        /* Bad tolerances. */
        o.rank_rtol = -1e-3;
        r2 = (kdl_spectral_result *) 0x1;
        assert_int_equal(kdl_spectral_finalize(s, &o, &r2), -KDL_ERANGE);
        o.rank_rtol = NAN;
        assert_int_equal(kdl_spectral_finalize(s, &o, &r2), -KDL_ERANGE);
        assert_true(r2 == (kdl_spectral_result *) 0x1);
        assert_int_equal(kdl_spectral_verdict(r, 1, 0.5, 1.5, &why), -KDL_ERANGE);
        assert_int_equal(kdl_spectral_verdict(r, 1, 0.5, NAN, &why), -KDL_ERANGE);
        assert_int_equal(kdl_spectral_verdict(r, 1, INFINITY, 0.01, &why), -KDL_ERANGE);
        assert_int_equal(why.d_needed, 77);
        kdl_spectral_result_free(r);

        /* Merging states of other shapes or flags. */
        assert_int_equal(kdl_spectral_state_new(2, 3, 0, &u), 0);
        assert_int_equal(kdl_spectral_merge(s, u), -KDL_EMISMATCH);
        kdl_spectral_state_free(u);
        assert_int_equal(kdl_spectral_state_new(2, 0, KDL_SPECTRAL_CENTER_ROWS_X, &u), 0);
        assert_int_equal(kdl_spectral_merge(s, u), -KDL_EMISMATCH);
        assert_int_equal(kdl_spectral_count(s), 4);
        kdl_spectral_state_free(u);
        /* A target block with other rows or columns. */
        assert_int_equal(kdl_spectral_state_new(2, 2, 0, &u), 0);
        assert_int_equal(kdl_spectral_accumulate(u, &g, &y2), -KDL_ESHAPE);
        assert_int_equal(kdl_spectral_accumulate(u, &g, &wide), -KDL_ESHAPE);
        assert_int_equal(kdl_spectral_accumulate(u, &g, &y3), 0);
        kdl_spectral_state_free(u);

        /* Head rank and support rank. */
        assert_int_equal(kdl_spectral_head_rank(&bd, 1e-6, &rank), -KDL_ENONFINITE);
        assert_int_equal(kdl_spectral_head_rank(&c3, 1e-6, &rank), -KDL_ESHAPE);
        assert_int_equal(kdl_spectral_head_rank(&g, -1, &rank), -KDL_ERANGE);
        assert_int_equal(rank, 77);
        assert_int_equal(kdl_spectral_support_rank(&bd, 4.0, 1e-6, 1, &sum), -KDL_ENONFINITE);
        assert_int_equal(kdl_spectral_support_rank(&g, 0.0, 1e-6, 1, &sum), -KDL_ERANGE);
        assert_int_equal(kdl_spectral_support_rank(&g, INFINITY, 1e-6, 1, &sum), -KDL_ERANGE);
        assert_int_equal(kdl_spectral_support_rank(&g, 4.0, 2.0, 1, &sum), -KDL_ERANGE);
        assert_int_equal(kdl_spectral_support_rank(&c3, 4.0, 1e-6, 1, &sum), -KDL_ESHAPE);
        assert_close(sum, -1, 0, 0);
        {
                double sv[2] = {1.0, NAN};
                kdl_spectral_summary ss = {.rank = 5};

                assert_int_equal(kdl_spectral_summarize(sv, 2, 1e-6, &ss), -KDL_ENONFINITE);
                assert_int_equal(ss.rank, 5);
        }
        kdl_spectral_state_free(t);
        kdl_spectral_state_free(s);
}

/* The metric contract: kdl_spectral_opts_init() is the defaults; finalize on
 * an empty state is -KDL_EMISSING; a merge of another shape or flags is
 * -KDL_EMISMATCH and leaves @into as it was. */
static void test_contract(void **state)
{
        double good[8] = {0.3, -1.2, 2.5, 0.7, -0.4, 1.9, 1.1, -2.6};
        kdl_tensor g = kdl_tensor_wrap(good, 2, (size_t[]){4, 2});
        kdl_spectral_state *s = NULL, *u = NULL;
        kdl_spectral_result *r = (kdl_spectral_result *) 0x1, *before, *after;
        kdl_spectral_opts o;

        (void) state;
        kdl_spectral_opts_init(&o);
        assert_close(o.rank_rtol, KDL_SPECTRAL_RANK_RTOL, 0, 0);
        assert_close(o.ridge_lambda, -1.0, 0, 0);
        assert_int_equal(kdl_spectral_state_new(2, 0, 0, &s), 0);
        assert_int_equal(kdl_spectral_finalize(s, &o, &r), -KDL_EMISSING);
        assert_true(r == (kdl_spectral_result *) 0x1);
        assert_int_equal(kdl_spectral_accumulate(s, &g, NULL), 0);
        before = finalize(s, -1);
        assert_int_equal(kdl_spectral_state_new(3, 0, 0, &u), 0);
        assert_int_equal(kdl_spectral_merge(s, u), -KDL_EMISMATCH);
        kdl_spectral_state_free(u);
        assert_int_equal(kdl_spectral_state_new(2, 2, 0, &u), 0);
        assert_int_equal(kdl_spectral_accumulate(u, &g, &g), 0);
        assert_int_equal(kdl_spectral_merge(s, u), -KDL_EMISMATCH);
        assert_int_equal(kdl_spectral_merge(u, s), -KDL_EMISMATCH);
        kdl_spectral_state_free(u);
        assert_int_equal(kdl_spectral_state_new(2, 0, KDL_SPECTRAL_CENTER_ROWS_X, &u), 0);
        assert_int_equal(kdl_spectral_accumulate(u, &g, NULL), 0);
        assert_int_equal(kdl_spectral_merge(s, u), -KDL_EMISMATCH);
        kdl_spectral_state_free(u);
        assert_int_equal(kdl_spectral_count(s), 4);
        after = finalize(s, -1);
        assert_close(after->eig[0], before->eig[0], 0, 0);
        assert_close(after->eig[1], before->eig[1], 0, 0);
        kdl_spectral_result_free(after);
        kdl_spectral_result_free(before);
        kdl_spectral_state_free(s);
}

/* ---- wide X: the exact Gram and the sketch -------------------------------- */

static kdl_spectral_state *plan_state(size_t dx, unsigned flags, enum kdl_spectral_method m,
                                      size_t rank, size_t oversample, uint64_t seed, size_t rows)
{
        kdl_spectral_plan p;
        kdl_spectral_state *s = NULL;

        kdl_spectral_plan_init(&p);
        p.method = m;
        p.rank = rank;
        p.oversample = oversample;
        p.seed = seed;
        p.rows = rows;
        assert_int_equal(kdl_spectral_state_new_plan(dx, 0, flags, &p, &s), 0);
        return s;
}

/* Logit-like data: a few strong directions with a decaying tail, per-class
 * offsets and per-row shifts (which row centring removes). */
static double *wide_logits(kdl_test_rng *rng, size_t n, size_t c, size_t r)
{
        double *z = planted(rng, n, c, r, 0.0, 0.0);

        for (size_t i = 0; i < n; i++) {
                double shift = 10.0 * kdl_test_normal(rng);

                for (size_t j = 0; j < c; j++)
                        z[i * c + j] += shift + 0.3 * (double) (j % 7) +
                                        0.05 * exp(-(double) j / 20.0) * kdl_test_normal(rng);
        }
        return z;
}

/* The Gram side equals the covariance side, with the samples fewer and more
 * than the columns, reserved or grown, merged or fed in one go. */
static void test_gram_equals_features(void **state)
{
        const size_t shapes[][2] = {{60, 90}, {150, 40}};

        (void) state;
        for (size_t t = 0; t < 2; t++) {
                kdl_test_rng rng = {31 + t};
                size_t n = shapes[t][0], c = shapes[t][1];
                double *z = wide_logits(&rng, n, c, 6);
                unsigned fl = KDL_SPECTRAL_CENTER_ROWS_X;
                kdl_spectral_state *f, *g0, *g1, *a, *b;
                kdl_spectral_result *rf, *rg[3];

                f = plan_state(c, fl, KDL_SPECTRAL_EXACT_FEATURES, 0, 0, 0, 0);
                g0 = plan_state(c, fl, KDL_SPECTRAL_EXACT_GRAM, 0, 0, 0, 0);
                g1 = plan_state(c, fl, KDL_SPECTRAL_EXACT_GRAM, 0, 0, 0, n);
                a = plan_state(c, fl, KDL_SPECTRAL_EXACT_GRAM, 0, 0, 0, 0);
                b = plan_state(c, fl, KDL_SPECTRAL_EXACT_GRAM, 0, 0, 0, 7);
                feed(f, z, c, NULL, 0, 0, n, 32);
                feed(g0, z, c, NULL, 0, 0, n, 13);
                feed(g1, z, c, NULL, 0, 0, n, n);
                feed(a, z, c, NULL, 0, 0, n / 3, 5);
                feed(b, z, c, NULL, 0, n / 3, n, 64);
                assert_int_equal(kdl_spectral_merge(a, b), 0);
                assert_int_equal(kdl_spectral_count(a), n);
                rf = finalize(f, -1.0);
                rg[0] = finalize(g0, -1.0);
                rg[1] = finalize(g1, -1.0);
                rg[2] = finalize(a, -1.0);
                for (size_t m = 0; m < 3; m++) {
                        assert_int_equal(rg[m]->method, KDL_SPECTRAL_EXACT_GRAM);
                        assert_int_equal(rg[m]->neig, n < c ? n : c);
                        assert_null(rg[m]->eig_hi);
                        assert_null(rg[m]->tail_lo);
                        for (size_t k = 0; k < c; k++)
                                assert_close(rg[m]->eig[k], rf->eig[k], 0, 1e-12 * rf->eig[0]);
                        for (size_t k = 0; k <= c; k++)
                                assert_close(rg[m]->tail[k], rf->tail[k], 0, 1e-12);
                        assert_close(rg[m]->sum.total, rf->sum.total, 1e-12, 0);
                        assert_int_equal(rg[m]->sum.rank, rf->sum.rank);
                        assert_int_equal(rg[m]->sum.dims99, rf->sum.dims99);
                        kdl_spectral_result_free(rg[m]);
                }
                assert_int_equal(rf->method, KDL_SPECTRAL_EXACT_FEATURES);
                assert_int_equal(rf->neig, c);
                kdl_spectral_result_free(rf);
                kdl_spectral_state_free(b);
                kdl_spectral_state_free(a);
                kdl_spectral_state_free(g1);
                kdl_spectral_state_free(g0);
                kdl_spectral_state_free(f);
                free(z);
        }
}

/* Check the sketch @sk against the exact result @ex: eigenvalues and the
 * residual curve within the stated bounds (plus rounding), the total exact. */
static void check_within_bounds(const kdl_spectral_result *sk, const kdl_spectral_result *ex)
{
        double eps = 1e-10 * ex->sum.total;

        assert_int_equal(sk->method, KDL_SPECTRAL_SKETCH);
        assert_close(sk->sum.total, ex->sum.total, 1e-12, 0);
        assert_true(sk->bound >= 0.0);
        for (size_t i = 0; i < sk->neig; i++) {
                assert_true(sk->eig[i] <= ex->eig[i] + eps);
                assert_true(ex->eig[i] <= sk->eig_hi[i] + eps);
                assert_true(sk->eig_hi[i] - sk->eig[i] <= sk->bound + 1e-12 * ex->eig[0]);
                if (i == 0)
                        assert_close(sk->eig_hi[0] - sk->eig[0], sk->bound, 0, 1e-12 * ex->eig[0]);
        }
        for (size_t d = 0; d <= ex->d; d++) {
                assert_true(sk->tail_lo[d] <= ex->tail[d] + 1e-10);
                assert_true(ex->tail[d] <= sk->tail[d] + 1e-10);
                if (d)
                        assert_true(sk->tail[d] <= sk->tail[d - 1]);
        }
        assert_true(isnan(sk->sum.effective_rank));
        assert_true(isnan(sk->sum.participation_ratio));
}

/* The exact (covariance) and the sketched results of the row-centred @z
 * [n, c] fed in blocks of 50; the caller frees both. */
static void sketch_and_exact(double *z, size_t n, size_t c, size_t r, size_t p, uint64_t seed,
                             kdl_spectral_result **ret_exact, kdl_spectral_result **ret_sketch)
{
        unsigned fl = KDL_SPECTRAL_CENTER_ROWS_X;
        kdl_spectral_state *f = plan_state(c, fl, KDL_SPECTRAL_EXACT_FEATURES, 0, 0, 0, 0);
        kdl_spectral_state *sk = plan_state(c, fl, KDL_SPECTRAL_SKETCH, r, p, seed, 0);

        feed(f, z, c, NULL, 0, 0, n, 50);
        feed(sk, z, c, NULL, 0, 0, n, 50);
        *ret_exact = finalize(f, -1.0);
        *ret_sketch = finalize(sk, -1.0);
        check_within_bounds(*ret_sketch, *ret_exact);
        kdl_spectral_state_free(sk);
        kdl_spectral_state_free(f);
}

/* The sketch's top eigenvalues lie within their bound of the exact ones; the
 * total variance is exact; a sketch wider than the rank is exact. */
static void test_sketch_within_bound(void **state)
{
        const size_t n = 500, c = 200;
        const size_t ranks[][2] = {{8, 8}, {20, 10}, {40, 30}};

        (void) state;
        for (size_t t = 0; t < 3; t++) {
                kdl_test_rng rng = {41};
                double *z = wide_logits(&rng, n, c, 12);
                kdl_spectral_result *rf, *rs;
                size_t r = ranks[t][0], p = ranks[t][1];

                sketch_and_exact(z, n, c, r, p, 7 + t, &rf, &rs);
                assert_int_equal(rs->neig, r);
                assert_int_equal(rs->sketch_k, r + p);
                if (r + p >= 40) {
                        /* k beyond the rank-12 signal plus the tail's share:
                         * the bound is a sliver of the top eigenvalue. */
                        assert_true(rs->bound < 1e-2 * rf->eig[0]);
                        for (size_t i = 0; i < 5; i++)
                                assert_close(rs->eig[i], rf->eig[i], 2e-2, 0);
                }
                kdl_spectral_result_free(rs);
                kdl_spectral_result_free(rf);
                free(z);
        }
}

/* Exactly low rank (no tail): the sketch recovers the spectrum and its bound
 * is rounding; d_needed is resolved and equals the exact one. */
static void test_sketch_exact_on_low_rank(void **state)
{
        kdl_test_rng rng = {43};
        const size_t n = 300, c = 120;
        double *z = planted(&rng, n, c, 9, 0.0, 3.0);
        kdl_spectral_result *rf, *rs;
        kdl_spectral_verdict_result ve, vs;

        (void) state;
        sketch_and_exact(z, n, c, 10, 6, 1, &rf, &rs);
        assert_true(rs->bound < 1e-9 * rf->eig[0]);
        for (size_t i = 0; i < 9; i++)
                assert_close(rs->eig[i], rf->eig[i], 1e-9, 0);
        for (double tol = 1e-6; tol < 1.0; tol *= 3.0) {
                ve = verdict(rf, 5, NAN, tol);
                vs = verdict(rs, 5, NAN, tol);
                assert_int_equal(vs.d_needed, ve.d_needed);
                assert_int_equal(vs.d_needed_lo, ve.d_needed);
                assert_int_equal(vs.fails, ve.fails);
                assert_false(vs.unresolved);
        }
        kdl_spectral_result_free(rs);
        kdl_spectral_result_free(rf);
        free(z);
}

/* A sketch merges like the scatter it sketches; the same seed gives the same
 * sketch, whatever the blocks; another seed or rank does not merge. */
static void test_sketch_merge_and_seed(void **state)
{
        kdl_test_rng rng = {47};
        const size_t n = 240, c = 80;
        double *z = wide_logits(&rng, n, c, 5);
        unsigned fl = KDL_SPECTRAL_CENTER_ROWS_X;
        kdl_spectral_state *all = plan_state(c, fl, KDL_SPECTRAL_SKETCH, 6, 4, 3, 0);
        kdl_spectral_state *a = plan_state(c, fl, KDL_SPECTRAL_SKETCH, 6, 4, 3, 0);
        kdl_spectral_state *b = plan_state(c, fl, KDL_SPECTRAL_SKETCH, 6, 4, 3, 0);
        kdl_spectral_state *other = plan_state(c, fl, KDL_SPECTRAL_SKETCH, 6, 4, 4, 0);
        kdl_spectral_state *wider = plan_state(c, fl, KDL_SPECTRAL_SKETCH, 6, 5, 3, 0);
        kdl_spectral_state *feat = plan_state(c, fl, KDL_SPECTRAL_EXACT_FEATURES, 0, 0, 0, 0);
        kdl_spectral_result *ra, *rm, *ro;

        (void) state;
        /* B's samples sit far from A's: the cross term matters. */
        for (size_t i = 100; i < n; i++)
                for (size_t j = 0; j < c; j++)
                        z[i * c + j] += (double) (j % 5);
        feed(all, z, c, NULL, 0, 0, n, 64);
        feed(a, z, c, NULL, 0, 0, 100, 9);
        feed(b, z, c, NULL, 0, 100, n, 1);
        feed(other, z, c, NULL, 0, 0, n, 64);
        assert_int_equal(kdl_spectral_merge(a, other), -KDL_EMISMATCH);
        assert_int_equal(kdl_spectral_merge(a, wider), -KDL_EMISMATCH);
        assert_int_equal(kdl_spectral_merge(a, feat), -KDL_EMISMATCH);
        assert_int_equal(kdl_spectral_merge(feat, a), -KDL_EMISMATCH);
        assert_int_equal(kdl_spectral_merge(a, b), 0);
        ra = finalize(all, -1.0);
        rm = finalize(a, -1.0);
        ro = finalize(other, -1.0);
        assert_close(rm->sum.total, ra->sum.total, 1e-12, 0);
        assert_close(rm->bound, ra->bound, 1e-8, 1e-12 * ra->sum.total);
        for (size_t i = 0; i < ra->neig; i++)
                assert_close(rm->eig[i], ra->eig[i], 1e-9, 0);
        /* Another seed: another (valid) approximation. */
        assert_true(fabs(ro->eig[5] - ra->eig[5]) > 1e-12 * ra->eig[0]);
        kdl_spectral_result_free(ro);
        kdl_spectral_result_free(rm);
        kdl_spectral_result_free(ra);
        kdl_spectral_state_free(feat);
        kdl_spectral_state_free(wider);
        kdl_spectral_state_free(other);
        kdl_spectral_state_free(b);
        kdl_spectral_state_free(a);
        kdl_spectral_state_free(all);
        free(z);
}

/* From bounds the verdict fails only below d_needed_lo and is unresolved in
 * between. */
static void test_verdict_from_bounds(void **state)
{
        double eig[4] = {4, 2, 1, 0}, hi[4] = {5, 3, 2, 1};
        double tail[5] = {1, 0.6, 0.3, 0.1, 0}, lo[5] = {1, 0.4, 0.1, 0.0, 0};
        kdl_spectral_result r = {.n = 10,
                                 .d = 4,
                                 .eig = eig,
                                 .tail = tail,
                                 .method = KDL_SPECTRAL_SKETCH,
                                 .neig = 2,
                                 .eig_hi = hi,
                                 .tail_lo = lo};
        kdl_spectral_verdict_result v;

        (void) state;
        v = verdict(&r, 1, NAN, 0.2);
        assert_int_equal(v.d_needed_lo, 2);
        assert_int_equal(v.d_needed, 3);
        assert_int_equal(v.fails, KDL_DIMS_ARCHITECTURAL);
        assert_false(v.unresolved);
        assert_close(v.residual, 0.6, 0, 0);
        assert_close(v.residual_lo, 0.4, 0, 0);
        v = verdict(&r, 2, 0.5, 0.2);
        assert_true(v.unresolved);
        assert_int_equal(v.fails, KDL_DIMS_REALISED);
        v = verdict(&r, 3, NAN, 0.2);
        assert_false(v.unresolved);
        assert_int_equal(v.fails, 0);
}

/* The plan: the smaller exact side that fits, else the sketch; the bytes
 * grow with what they count; the errors of a bad plan. */
static void test_plan_choose_and_errors(void **state)
{
        kdl_spectral_plan p, q;
        kdl_spectral_state *s = (kdl_spectral_state *) 0x1;
        const size_t big = (size_t) 1 << 40;
        double bad[6] = {0.3, -1.2, 2.5, NAN, -0.4, 1.9}, good[6] = {0.3, -1.2, 2.5, 0.7, 0.4, 1};
        kdl_tensor gb = kdl_tensor_wrap(good, 2, (size_t[]){2, 3});
        kdl_tensor bb = kdl_tensor_wrap(bad, 2, (size_t[]){2, 3});
        kdl_spectral_result *r;

        (void) state;
        kdl_spectral_plan_init(&p);
        assert_int_equal(p.method, KDL_SPECTRAL_EXACT_FEATURES);
        assert_int_equal(p.rank, KDL_SPECTRAL_SKETCH_RANK);
        assert_int_equal(p.oversample, KDL_SPECTRAL_SKETCH_OVERSAMPLE);
        assert_string_equal(kdl_spectral_method_name(KDL_SPECTRAL_EXACT_GRAM), "exact-gram");

        q = p;
        assert_int_equal(kdl_spectral_plan_choose(1000, 200, big, 4096, 64, &q), 0);
        assert_int_equal(q.method, KDL_SPECTRAL_EXACT_FEATURES);
        q = p;
        assert_int_equal(kdl_spectral_plan_choose(500, 32000, big, 4096, 64, &q), 0);
        assert_int_equal(q.method, KDL_SPECTRAL_EXACT_GRAM);
        assert_int_equal(q.rows, 500);
        q = p;
        assert_int_equal(kdl_spectral_plan_choose(200000, 32000, big, 4096, 64, &q), 0);
        assert_int_equal(q.method, KDL_SPECTRAL_SKETCH);
        /* Features at C = 3000 need ~144 MB: a budget of 100 MB sketches. */
        q = p;
        assert_int_equal(kdl_spectral_plan_choose(100000, 3000, 100u << 20, 4096, 64, &q), 0);
        assert_int_equal(q.method, KDL_SPECTRAL_SKETCH);
        q = p;
        assert_int_equal(kdl_spectral_plan_choose(1000, 200, big, 0, 64, &q), 0);
        assert_int_equal(q.method, KDL_SPECTRAL_SKETCH);
        q = p;
        assert_int_equal(kdl_spectral_plan_choose(200000, 32000, 1u << 20, 4096, 64, &q),
                         -KDL_ERANGE);
        assert_int_equal(q.method, KDL_SPECTRAL_EXACT_FEATURES); /* unchanged */

        q = p;
        q.method = KDL_SPECTRAL_SKETCH;
        assert_true(kdl_spectral_bytes(&q, 1000, 32000, 0, 64) <
                    kdl_spectral_bytes(NULL, 1000, 32000, 0, 64) / 50);
        assert_true(kdl_spectral_bytes(NULL, 1000, 4000, 0, 64) > 2 * 4000 * 4000 * 8);
        assert_int_equal(kdl_spectral_bytes(NULL, 10, SIZE_MAX / 4, 0, 64), SIZE_MAX);

        q.method = KDL_SPECTRAL_EXACT_GRAM;
        assert_int_equal(kdl_spectral_state_new_plan(3, 2, 0, &q, &s), -KDL_ESHAPE);
        q.method = KDL_SPECTRAL_SKETCH;
        q.rank = 0;
        assert_int_equal(kdl_spectral_state_new_plan(3, 0, 0, &q, &s), -KDL_ERANGE);
        q.method = KDL_SPECTRAL_METHOD_COUNT_;
        assert_int_equal(kdl_spectral_state_new_plan(3, 0, 0, &q, &s), -KDL_ERANGE);
        assert_true(s == (kdl_spectral_state *) 0x1);

        /* NaN leaves a Gram or a sketch state as it was. */
        for (int m = KDL_SPECTRAL_EXACT_GRAM; m <= KDL_SPECTRAL_SKETCH; m++) {
                s = plan_state(3, 0, (enum kdl_spectral_method) m, 2, 0, 0, 0);
                assert_int_equal(kdl_spectral_accumulate(s, &bb, NULL), -KDL_ENONFINITE);
                assert_int_equal(kdl_spectral_count(s), 0);
                assert_int_equal(kdl_spectral_accumulate(s, &gb, NULL), 0);
                assert_int_equal(kdl_spectral_accumulate(s, &bb, NULL), -KDL_ENONFINITE);
                assert_int_equal(kdl_spectral_count(s), 2);
                r = finalize(s, -1.0);
                assert_close(r->sum.total,
                             ((0.3 - 0.7) * (0.3 - 0.7) + (-1.2 - 0.4) * (-1.2 - 0.4) +
                              (2.5 - 1.0) * (2.5 - 1.0)) /
                                     2.0,
                             1e-12, 0);
                kdl_spectral_result_free(r);
                kdl_spectral_state_free(s);
        }
}

/* ---- W^T F W ------------------------------------------------------------- */

/* Numerical rank of W^T F(p) W formed explicitly (d x d; fine in a test). */
static size_t direct_wfw_rank(const double *w, size_t c, size_t d, const double *p)
{
        double *m = calloc(d * d, sizeof(double)), *ev = malloc(d * sizeof(double));
        double *f = calloc(c * c, sizeof(double));
        size_t rank = 0;

        assert_true(m && ev && f);
        for (size_t i = 0; i < c; i++)
                for (size_t j = 0; j < c; j++)
                        f[i * c + j] = (i == j ? p[i] : 0.0) - p[i] * p[j];
        for (size_t a = 0; a < d; a++)
                for (size_t b = 0; b < d; b++)
                        for (size_t i = 0; i < c; i++)
                                for (size_t j = 0; j < c; j++)
                                        m[a * d + b] += w[i * d + a] * f[i * c + j] * w[j * d + b];
        jacobi_eig(m, d, ev);
        for (size_t k = 0; k < d; k++)
                if (ev[k] > 1e-10 * ev[0])
                        rank++;
        free(f);
        free(ev);
        free(m);
        return rank;
}

static void test_head_rank_is_rank_of_wfw(void **state)
{
        kdl_test_rng rng = {18};
        const size_t c = 10;
        const size_t widths[4] = {4, 20, 4, 6};
        double p[10], z = 0;

        (void) state;
        for (size_t k = 0; k < c; k++)
                z += p[k] = kdl_test_uniform(&rng) + 0.05;
        for (size_t k = 0; k < c; k++)
                p[k] /= z;
        for (size_t t = 0; t < 4; t++) {
                size_t d = widths[t], rank = 0, expect;
                double *w = gauss_matrix(&rng, c, d, 1.0);
                kdl_tensor wt = kdl_tensor_wrap(w, 2, (size_t[]){c, d});

                if (t == 2) /* 1 in col(W): rank(W) = 4 but W^T F W loses one */
                        for (size_t k = 0; k < c; k++)
                                w[k * d] = 1.0;
                if (t == 3) /* only 3 distinct class rows: affine rank 2 */
                        for (size_t k = 3; k < c; k++)
                                memcpy(w + k * d, w + (k % 3) * d, d * sizeof(double));
                expect = t == 0 ? 4 : t == 1 ? c - 1 : t == 2 ? 3 : 2;
                assert_int_equal(kdl_spectral_head_rank(&wt, 1e-10, &rank), 0);
                assert_int_equal(rank, expect);
                assert_int_equal(direct_wfw_rank(w, c, d, p), expect);
                free(w);
        }
}

static void test_support_rank(void **state)
{
        /* At tau = 1 with rtol 1e-6 (ln = -13.8): row 0 keeps 2 classes, row 1
         * all 4, row 2 one.  At tau = 10 every class counts. */
        double z[12] = {0, -1, -100, -100, 0.5, 0.1, -0.3, 0, 40, 0, 0, 0};
        kdl_tensor t = kdl_tensor_wrap(z, 2, (size_t[]){3, 4});
        double sum = -1;

        (void) state;
        assert_int_equal(kdl_spectral_support_rank(&t, 1.0, 1e-6, 3, &sum), 0);
        assert_close(sum, 1 + 3 + 0, 0, 0);
        assert_int_equal(kdl_spectral_support_rank(&t, 1.0, 1e-6, 2, &sum), 0);
        assert_close(sum, 1 + 2 + 0, 0, 0);
        assert_int_equal(kdl_spectral_support_rank(&t, 10.0, 1e-6, 3, &sum), 0);
        assert_close(sum, 9, 0, 0);
        assert_int_equal(kdl_spectral_support_rank(&t, 1.0, 0.0, 3, &sum), 0);
        assert_close(sum, 9, 0, 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_planted_rank_is_found),
                cmocka_unit_test(test_spectrum_matches_jacobi),
                cmocka_unit_test(test_summary_on_known_spectra),
                cmocka_unit_test(test_residual_curve_identities),
                cmocka_unit_test(test_verdict),
                cmocka_unit_test(test_ridge_given_lambda_matches_direct_solve),
                cmocka_unit_test(test_gcv_picks_a_sane_lambda),
                cmocka_unit_test(test_merge_equals_sequential),
                cmocka_unit_test(test_errors_leave_state_and_outputs),
                cmocka_unit_test(test_contract),
                cmocka_unit_test(test_gram_equals_features),
                cmocka_unit_test(test_sketch_within_bound),
                cmocka_unit_test(test_sketch_exact_on_low_rank),
                cmocka_unit_test(test_sketch_merge_and_seed),
                cmocka_unit_test(test_verdict_from_bounds),
                cmocka_unit_test(test_plan_choose_and_errors),
                cmocka_unit_test(test_head_rank_is_rank_of_wfw),
                cmocka_unit_test(test_support_rank),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
