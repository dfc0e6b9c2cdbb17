/* SPDX-License-Identifier: MIT */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/base/tensor.h"
#include "metrics/kl.h"

/*
 * References here are computed independently in the test: the exact KL
 * naively in long double (Σ p^t (log p^t - log p^s) with long-double
 * log-softmax), the Fisher form with an explicit C×C matrix, ranks by
 * counting.  The identities of docs/kl.md#properties and of the KD criterion
 * (docs/conventions.md#the-kd-criterion-and-the-temperature) are checked as identities.
 */

#define NV KDL_KL_VALUE_COUNT_

/* A generated data set, row-major. */
struct data {
        size_t n, c, d_s, d_t;
        double *zt, *zs, *ht, *hs, *gt, *gzt, *gzs, *w;
};

static void data_free(struct data *d)
{
        free(d->zt);
        free(d->zs);
        free(d->ht);
        free(d->hs);
        free(d->gt);
        free(d->gzt);
        free(d->gzs);
        free(d->w);
}

static double *randn(kdl_test_rng *r, size_t n, double scale)
{
        double *x = malloc((n ? n : 1) * sizeof(double));

        assert_non_null(x);
        for (size_t i = 0; i < n; i++)
                x[i] = scale * kdl_test_normal(r);
        return x;
}

/* Random data: teacher logits of scale @zscale, student = teacher + noise of
 * scale @noise; features of widths d_s, d_t; a head W [c, d_t]. */
static struct data data_random(uint64_t seed, size_t n, size_t c, size_t d_s, size_t d_t,
                               double zscale, double noise)
{
        kdl_test_rng r = {seed};
        struct data d = {.n = n, .c = c, .d_s = d_s, .d_t = d_t};

        d.zt = randn(&r, n * c, zscale);
        d.zs = randn(&r, n * c, noise);
        for (size_t i = 0; i < n * c; i++)
                d.zs[i] += d.zt[i];
        d.gzt = randn(&r, n * c, 0.3);
        d.gzs = randn(&r, n * c, 0.3);
        if (d_t) {
                d.ht = randn(&r, n * d_t, 1.0);
                d.hs = randn(&r, n * d_s, 1.0);
                d.gt = randn(&r, n * d_t, 0.2);
                d.w = randn(&r, c * d_t, 0.5);
                /* Make the student features related to the teacher's. */
                for (size_t i = 0; i < n; i++)
                        for (size_t j = 0; j < d_s && j < d_t; j++)
                                d.hs[i * d_s + j] += 2.0 * d.ht[i * d_t + j];
        }
        return d;
}

static kdl_tensor view(double *base, size_t row0, size_t m, size_t cols)
{
        return kdl_tensor_wrap(base + row0 * cols, 2, (size_t[]){m, cols});
}

/* Accumulate rows [r0, r1) of @d in blocks of @bs into @s.  @vals, when
 * given, receives the per-sample values [ntau][NV][n]. */
static void feed(kdl_kl_state *s, const kdl_kl_opts *o, const struct data *d, size_t r0, size_t r1,
                 size_t bs, double *vals)
{
        for (size_t a = r0; a < r1; a += bs) {
                size_t m = a + bs <= r1 ? bs : r1 - a;
                kdl_tensor zt = view(d->zt, a, m, d->c), zs = view(d->zs, a, m, d->c);
                kdl_tensor ht, hs, gt, gzt, gzs;
                kdl_kl_block b = {.row0 = a, .zt = &zt, .zs = &zs};

                if (o->d_t) {
                        ht = view(d->ht, a, m, d->d_t);
                        hs = view(d->hs, a, m, d->d_s);
                        b.ht = &ht;
                        b.hs = &hs;
                }
                if (o->grad_feature) {
                        gt = view(d->gt, a, m, d->d_t);
                        b.gt = &gt;
                }
                if (o->grad_logits) {
                        gzt = view(d->gzt, a, m, d->c);
                        gzs = view(d->gzs, a, m, d->c);
                        b.gzt = &gzt;
                        b.gzs = &gzs;
                }
                assert_int_equal(kdl_kl_accumulate(s, &b), 0);
                if (!vals)
                        continue;
                for (size_t it = 0; it < o->ntau; it++)
                        for (int v = 0; v < NV; v++) {
                                size_t mm = 0;
                                const double *x = kdl_kl_values(s, it, v, &mm);

                                if (!x)
                                        continue;
                                assert_int_equal(mm, m);
                                memcpy(vals + (it * NV + v) * d->n + a, x, m * sizeof(double));
                        }
        }
}

/* kdl_kl_opts_init()'s options with the shape fields of @shape (given as a
 * designated initialiser) copied over. */
static kdl_kl_opts with_defaults(kdl_kl_opts shape)
{
        kdl_kl_opts o;

        kdl_kl_opts_init(&o);
        o.c = shape.c;
        o.ntau = shape.ntau;
        o.tau = shape.tau;
        o.d_s = shape.d_s;
        o.d_t = shape.d_t;
        o.w_t = shape.w_t;
        o.proj = shape.proj;
        o.grad_feature = shape.grad_feature;
        o.grad_logits = shape.grad_logits;
        return o;
}

static kdl_kl_state *state(const kdl_kl_opts *o)
{
        kdl_kl_state *s = NULL;

        assert_int_equal(kdl_kl_state_new(o, &s), 0);
        return s;
}

static kdl_kl_result *result(const kdl_kl_state *s)
{
        kdl_kl_result *r = NULL;

        assert_int_equal(kdl_kl_finalize(s, &r), 0);
        return r;
}

/* Naive long-double reference of τ² KL(p^t || p^s) for one sample:
 * Σ p^t (log p^t - log p^s), with the log-normaliser max + log1p(rest) so
 * that a saturated class keeps its log-probability (-1e-33, not 0). */
static long double log_norm(const double *z, size_t c, double tau)
{
        long double mx = -INFINITY, rest = 0;
        size_t am = 0;

        for (size_t k = 0; k < c; k++)
                if (z[k] / tau > mx) {
                        mx = z[k] / tau;
                        am = k;
                }
        for (size_t k = 0; k < c; k++)
                if (k != am)
                        rest += expl(z[k] / tau - mx);
        return mx + log1pl(rest);
}

/* Also returns, in *ret_err, a bound on the reference's own rounding error
 * (the sum has terms of size p |a - b| that cancel).  The bound uses
 * DBL_EPSILON, not LDBL_EPSILON: valgrind runs long double at double
 * precision. */
static double kl_ref(const double *zt, const double *zs, size_t c, double tau, double *ret_err)
{
        long double lt = log_norm(zt, c, tau), ls = log_norm(zs, c, tau), kl = 0, mag = 0;

        for (size_t k = 0; k < c; k++) {
                long double a = zt[k] / tau - lt, b = zs[k] / tau - ls;

                kl += expl(a) * (a - b);
                mag += expl(a) * (fabsl(a) + fabsl(b) + fabsl(lt) + fabsl(ls));
        }
        if (ret_err)
                *ret_err = (double) (4.0L * (long double) c * DBL_EPSILON * mag * tau * tau);
        return (double) (tau * tau * kl);
}

/* p = softmax(z / tau) in double. */
static void softmax(const double *z, size_t c, double tau, double *p)
{
        double mx = -INFINITY, s = 0.0;

        for (size_t k = 0; k < c; k++)
                if (z[k] / tau > mx)
                        mx = z[k] / tau;
        for (size_t k = 0; k < c; k++) {
                p[k] = exp(z[k] / tau - mx);
                s += p[k];
        }
        for (size_t k = 0; k < c; k++)
                p[k] /= s;
}

/* ½ uᵀ F u with the explicit C×C F = diag(p) - p pᵀ (test only). */
static double fisher_explicit(const double *p, const double *u, size_t c)
{
        double *f = malloc(c * c * sizeof(double)), q = 0.0;

        assert_non_null(f);
        for (size_t i = 0; i < c; i++)
                for (size_t j = 0; j < c; j++)
                        f[i * c + j] = (i == j ? p[i] : 0.0) - p[i] * p[j];
        for (size_t i = 0; i < c; i++)
                for (size_t j = 0; j < c; j++)
                        q += u[i] * f[i * c + j] * u[j];
        free(f);
        return 0.5 * q;
}

#define VAL(vals, n, it, v, i) ((vals)[((it) *NV + (v)) * (n) + (i)])

/* ---- Tests -------------------------------------------------------------------- */

static void test_kl_matches_naive_reference_and_is_nonnegative(void **unused)
{
        const double taus[] = {1.0, 4.0, 0.7};
        struct data d = data_random(11, 257, 13, 6, 6, 2.0, 1.0);
        kdl_kl_opts o = with_defaults((kdl_kl_opts){.c = 13, .ntau = 3, .tau = taus});
        double *vals = calloc(3 * NV * d.n, sizeof(double));
        kdl_kl_state *s = state(&o);

        (void) unused;
        feed(s, &o, &d, 0, d.n, 37, vals);
        for (size_t it = 0; it < 3; it++)
                for (size_t i = 0; i < d.n; i++) {
                        double k = VAL(vals, d.n, it, KDL_KL_EXACT, i);

                        double ref, tol;

                        assert_true(k >= 0.0);
                        ref = kl_ref(d.zt + i * d.c, d.zs + i * d.c, d.c, taus[it], &tol);
                        assert_close(k, ref, 1e-12, tol);
                }
        free(vals);
        kdl_kl_state_free(s);
        data_free(&d);
}

static void test_student_equal_teacher_gives_exact_zero(void **unused)
{
        const double taus[] = {0.5, 1.0, 4.0, 20.0};
        struct data d = data_random(12, 64, 9, 5, 5, 30.0, 0.0);
        kdl_kl_opts o = with_defaults((kdl_kl_opts){.c = 9,
                                                    .ntau = 4,
                                                    .tau = taus,
                                                    .d_s = 5,
                                                    .d_t = 5,
                                                    .grad_feature = true,
                                                    .grad_logits = true});
        kdl_tensor w;
        double *vals = calloc(4 * NV * d.n, sizeof(double));
        kdl_kl_state *s;
        kdl_kl_result *r;

        (void) unused;
        memcpy(d.zs, d.zt, d.n * d.c * sizeof(double));
        memcpy(d.hs, d.ht, d.n * d.d_t * sizeof(double));
        memcpy(d.gzs, d.gzt, d.n * d.c * sizeof(double));
        w = kdl_tensor_wrap(d.w, 2, (size_t[]){d.c, d.d_t});
        o.w_t = &w;
        s = state(&o);
        feed(s, &o, &d, 0, d.n, 10, vals);
        for (size_t i = 0; i < 4 * NV * d.n; i++)
                assert_true(!(vals[i] > 0.0 || vals[i] < 0.0) && !signbit(vals[i]));
        r = result(s);
        for (size_t it = 0; it < 4; it++) {
                assert_true(!(fabs(r->tau[it].v[KDL_KL_EXACT].mean) > 0.0));
                assert_true(isnan(r->tau[it].v[KDL_KL_LOGIT_FISHER].ratio)); /* 0/0 */
        }
        assert_close(r->r2, 1.0, 0.0, 0.0);
        kdl_kl_result_free(r);
        kdl_kl_state_free(s);
        free(vals);
        data_free(&d);
}

/* docs/conventions.md#the-kd-criterion-and-the-temperature, docs/kl.md#properties: KL(p(z^t) ||
 * p(z^t + δ)) = ½ δᵀFδ + O(‖δ‖³): relative error O(‖δ‖). */
static void test_logit_fisher_second_order(void **unused)
{
        const double taus[] = {1.0, 3.0};
        const double eps[] = {1e-2, 1e-3};
        double err[2][2];

        (void) unused;
        for (int e = 0; e < 2; e++) {
                struct data d = data_random(13, 40, 17, 0, 0, 1.5, 1.0);
                kdl_kl_opts o = with_defaults((kdl_kl_opts){.c = 17, .ntau = 2, .tau = taus});
                double *vals = calloc(2 * NV * d.n, sizeof(double));
                kdl_kl_state *s;

                /* δ = eps · unit-norm direction, per sample. */
                for (size_t i = 0; i < d.n; i++) {
                        double nrm = 0.0;

                        for (size_t k = 0; k < d.c; k++) {
                                double dl = d.zs[i * d.c + k] - d.zt[i * d.c + k];

                                nrm += dl * dl;
                        }
                        nrm = sqrt(nrm);
                        for (size_t k = 0; k < d.c; k++)
                                d.zs[i * d.c + k] =
                                        d.zt[i * d.c + k] +
                                        eps[e] * (d.zs[i * d.c + k] - d.zt[i * d.c + k]) / nrm;
                }
                s = state(&o);
                feed(s, &o, &d, 0, d.n, 16, vals);
                for (int it = 0; it < 2; it++) {
                        err[e][it] = 0.0;
                        for (size_t i = 0; i < d.n; i++) {
                                double k = VAL(vals, d.n, it, KDL_KL_EXACT, i);
                                double f = VAL(vals, d.n, it, KDL_KL_LOGIT_FISHER, i);
                                double rel = fabs(f - k) / k;

                                if (rel > err[e][it])
                                        err[e][it] = rel;
                        }
                }
                kdl_kl_state_free(s);
                free(vals);
                data_free(&d);
        }
        for (int it = 0; it < 2; it++) {
                /* About 1e-4 at ‖δ‖ = 1e-2 (docs/kl.md#properties), first order in ‖δ‖. */
                assert_true(err[0][it] < 1e-2 / taus[it]);
                assert_true(err[0][it] > 1e-6);
                assert_true(err[0][it] / err[1][it] > 5.0 && err[0][it] / err[1][it] < 20.0);
        }
}

/* docs/conventions.md#the-kd-criterion-and-the-temperature: u^T F u = Var_p(u), against the
 * explicit C×C F. */
static void test_fisher_quadratic_form_equals_variance(void **unused)
{
        const double taus[] = {0.5, 2.0, 9.0};
        struct data d = data_random(14, 50, 23, 0, 0, 3.0, 2.0);
        kdl_kl_opts o = with_defaults((kdl_kl_opts){.c = 23, .ntau = 3, .tau = taus});
        double *vals = calloc(3 * NV * d.n, sizeof(double)), p[23], u[23];
        kdl_kl_state *s = state(&o);

        (void) unused;
        feed(s, &o, &d, 0, d.n, 50, vals);
        for (size_t it = 0; it < 3; it++)
                for (size_t i = 0; i < d.n; i++) {
                        softmax(d.zt + i * d.c, d.c, taus[it], p);
                        for (size_t k = 0; k < d.c; k++)
                                u[k] = d.zs[i * d.c + k] - d.zt[i * d.c + k];
                        assert_close(VAL(vals, d.n, it, KDL_KL_LOGIT_FISHER, i),
                                     fisher_explicit(p, u, d.c), 1e-11, 1e-300);
                }
        kdl_kl_state_free(s);
        free(vals);
        data_free(&d);
}

/* docs/conventions.md#the-kd-criterion-and-the-temperature, docs/kl.md#properties: 2C τ² KL ->
 * ‖c(z^s) - c(z^t)‖² as τ -> ∞, i.e. K -> logit_centered_l2. */
static void test_high_tau_limit(void **unused)
{
        const double taus[] = {1e2, 1e3, 1e4, 1e5, 1e6};
        struct data d = data_random(15, 30, 11, 0, 0, 1.0, 0.5);
        kdl_kl_opts o = with_defaults((kdl_kl_opts){.c = 11, .ntau = 5, .tau = taus});
        double *vals = calloc(5 * NV * d.n, sizeof(double)), err[5] = {0};
        kdl_kl_state *s = state(&o);

        (void) unused;
        feed(s, &o, &d, 0, d.n, 7, vals);
        for (size_t it = 0; it < 5; it++)
                for (size_t i = 0; i < d.n; i++) {
                        double k = VAL(vals, d.n, it, KDL_KL_EXACT, i);
                        double cl = VAL(vals, d.n, it, KDL_KL_LOGIT_CENTERED_L2, i);

                        if (fabs(k - cl) / cl > err[it])
                                err[it] = fabs(k - cl) / cl;
                }
        /* The gap is O(1/τ): a factor ~10 per decade, and at τ = 1e6 the
         * series form of the KL still holds ~1e-6 relative accuracy. */
        assert_true(err[0] < 0.05);
        for (int it = 0; it < 4; it++)
                assert_true(err[it] / err[it + 1] > 5.0 && err[it] / err[it + 1] < 20.0);
        assert_true(err[4] < 1e-5);
        kdl_kl_state_free(s);
        free(vals);
        data_free(&d);
}

/* docs/kl.md#properties: F 1 = 0, so adding a constant to every logit (a different constant
 * per sample) leaves K, logit_fisher, logit_centered_l2 and gradient_fisher
 * unchanged; logit_l2 is not shift invariant. */
static void test_shift_invariance(void **unused)
{
        const double taus[] = {1.0, 4.0};
        struct data d = data_random(16, 48, 10, 7, 7, 2.0, 1.0);
        struct data d2 = data_random(16, 48, 10, 7, 7, 2.0, 1.0);
        kdl_test_rng rng = {99};
        double *v1 = calloc(2 * NV * d.n, sizeof(double)),
               *v2 = calloc(2 * NV * d.n, sizeof(double));
        double a[7];
        kdl_tensor w1 = kdl_tensor_wrap(d.w, 2, (size_t[]){10, 7});
        kdl_tensor w2 = kdl_tensor_wrap(d2.w, 2, (size_t[]){10, 7});
        kdl_kl_opts o1 = with_defaults(
                (kdl_kl_opts){.c = 10, .ntau = 2, .tau = taus, .d_s = 7, .d_t = 7, .w_t = &w1});
        kdl_kl_opts o2 = o1;
        kdl_kl_state *s1, *s2;
        const int inv[] = {KDL_KL_EXACT, KDL_KL_LOGIT_FISHER, KDL_KL_LOGIT_CENTERED_L2,
                           KDL_KL_GRADIENT_FISHER, KDL_KL_PROB_L2};

        (void) unused;
        for (size_t i = 0; i < d.n; i++) {
                double cs = 10.0 * kdl_test_normal(&rng), ct = 10.0 * kdl_test_normal(&rng);

                for (size_t k = 0; k < d.c; k++) {
                        d2.zs[i * d.c + k] += cs;
                        d2.zt[i * d.c + k] += ct;
                }
        }
        /* W + 1 aᵀ shifts every u_k = [W e]_k by aᵀe. */
        for (size_t j = 0; j < 7; j++)
                a[j] = kdl_test_normal(&rng);
        for (size_t k = 0; k < 10; k++)
                for (size_t j = 0; j < 7; j++)
                        d2.w[k * 7 + j] += a[j];
        o2.w_t = &w2;
        s1 = state(&o1);
        s2 = state(&o2);
        feed(s1, &o1, &d, 0, d.n, 48, v1);
        feed(s2, &o2, &d2, 0, d.n, 48, v2);
        for (size_t it = 0; it < 2; it++)
                for (size_t i = 0; i < d.n; i++) {
                        for (size_t q = 0; q < sizeof(inv) / sizeof(inv[0]); q++)
                                assert_close(VAL(v2, d.n, it, inv[q], i),
                                             VAL(v1, d.n, it, inv[q], i), 1e-9, 1e-12);
                        assert_true(fabs(VAL(v2, d.n, it, KDL_KL_LOGIT_L2, i) -
                                         VAL(v1, d.n, it, KDL_KL_LOGIT_L2, i)) > 1e-3);
                }
        kdl_kl_state_free(s1);
        kdl_kl_state_free(s2);
        free(v1);
        free(v2);
        data_free(&d);
        data_free(&d2);
}

/* docs/kl.md#properties: through a linear head z = W h + b, gradient_fisher equals
 * logit_fisher, hence ≈ K for a small feature perturbation. */
static void test_gradient_fisher_through_linear_head(void **unused)
{
        const double taus[] = {1.0, 4.0};
        const size_t n = 60, c = 12, dd = 20;
        struct data d = data_random(17, n, c, dd, dd, 1.0, 0.0);
        kdl_test_rng rng = {5};
        double bias[12], *vals = calloc(2 * NV * n, sizeof(double));
        kdl_tensor w = kdl_tensor_wrap(d.w, 2, (size_t[]){c, dd});
        kdl_kl_opts o = with_defaults(
                (kdl_kl_opts){.c = c, .ntau = 2, .tau = taus, .d_s = dd, .d_t = dd, .w_t = &w});
        kdl_kl_state *s;

        (void) unused;
        for (size_t k = 0; k < c; k++)
                bias[k] = kdl_test_normal(&rng);
        for (size_t i = 0; i < n; i++) {
                for (size_t j = 0; j < dd; j++)
                        d.hs[i * dd + j] = d.ht[i * dd + j] + 1e-3 * kdl_test_normal(&rng);
                for (size_t k = 0; k < c; k++) {
                        double zt = bias[k], zs = bias[k];

                        for (size_t j = 0; j < dd; j++) {
                                zt += d.w[k * dd + j] * d.ht[i * dd + j];
                                zs += d.w[k * dd + j] * d.hs[i * dd + j];
                        }
                        d.zt[i * c + k] = zt;
                        d.zs[i * c + k] = zs;
                }
        }
        s = state(&o);
        feed(s, &o, &d, 0, n, 25, vals);
        for (size_t it = 0; it < 2; it++)
                for (size_t i = 0; i < n; i++) {
                        double gf = VAL(vals, n, it, KDL_KL_GRADIENT_FISHER, i);

                        assert_close(gf, VAL(vals, n, it, KDL_KL_LOGIT_FISHER, i), 1e-9, 0.0);
                        assert_close(gf, VAL(vals, n, it, KDL_KL_EXACT, i), 1e-2, 0.0);
                        /* feature_head is logit_l2 of the same logit difference. */
                        assert_close(VAL(vals, n, it, KDL_KL_FEATURE_HEAD, i),
                                     VAL(vals, n, it, KDL_KL_LOGIT_L2, i), 1e-9, 0.0);
                }
        kdl_kl_state_free(s);
        free(vals);
        data_free(&d);
}

/* Logits of magnitude 100 over τ in [0.5, 20]: finite, non-negative, and
 * equal to the long-double reference. */
static void test_stable_with_large_logits(void **unused)
{
        const double taus[] = {0.5, 1.0, 2.0, 4.0, 8.0, 20.0};
        struct data d = data_random(18, 120, 50, 0, 0, 100.0, 100.0);
        kdl_kl_opts o = with_defaults((kdl_kl_opts){.c = 50, .ntau = 6, .tau = taus});
        double *vals = calloc(6 * NV * d.n, sizeof(double));
        kdl_kl_state *s = state(&o);
        kdl_kl_result *r;

        (void) unused;
        /* Half the samples: a student within 1e-6 of the teacher (tiny KL
         * next to huge logits). */
        for (size_t i = 0; i < d.n; i += 2)
                for (size_t k = 0; k < d.c; k++)
                        d.zs[i * d.c + k] = d.zt[i * d.c + k] * (1.0 + 1e-8 * (double) (k % 3));
        for (size_t i = 0; i < d.n * d.c; i++)
                assert_true(fabs(d.zt[i]) < 1000.0);
        feed(s, &o, &d, 0, d.n, 33, vals);
        for (size_t i = 0; i < 6 * NV * d.n; i++)
                assert_true(isfinite(vals[i]) || (i / d.n) % NV >= KDL_KL_FEATURE_L2);
        for (size_t it = 0; it < 6; it++)
                for (size_t i = 0; i < d.n; i++) {
                        double k = VAL(vals, d.n, it, KDL_KL_EXACT, i);

                        double ref, tol;

                        /* The naive reference is only as good as its own
                         * rounding bound; the saturated cases are checked
                         * against mpmath in test_saturated_reference_values. */
                        assert_true(k >= 0.0);
                        ref = kl_ref(d.zt + i * d.c, d.zs + i * d.c, d.c, taus[it], &tol);
                        assert_close(k, ref, 1e-12, tol);
                }
        r = result(s);
        for (size_t it = 0; it < 6; it++)
                for (int v = 0; v <= KDL_KL_PROB_L2; v++) {
                        assert_true(isfinite(r->tau[it].v[v].mean));
                        assert_true(isfinite(r->tau[it].v[v].pearson));
                        assert_true(isfinite(r->tau[it].v[v].spearman));
                        assert_true(isfinite(r->tau[it].v[v].relerr));
                }
        kdl_kl_result_free(r);
        kdl_kl_state_free(s);
        free(vals);
        data_free(&d);
}

/* Saturated softmaxes (logits of magnitude 100, tiny KL) against values
 * computed independently with mpmath at 400 digits (Σ p^t (log p^t - log
 * p^s) in exact arithmetic on the same doubles), printed %.17g. */
static void test_saturated_reference_values(void **unused)
{
        const double taus[] = {0.5, 1.0, 2.0, 4.0, 8.0, 20.0};
        static const double zt[3][4] = {
                {100, -37.5, 12.25, -88}, {100, 99.75, -100, 3}, {-100, 100, 0, 50}};
        static const double zs[3][4] = {
                {99.5, -20, 30, -100}, {100, 99.7500001, -100, 3}, {-99, 100, 1, 40}};
        static const double ref[3][6] = {
                {1.0740067827934721e-61, 6.5544070436462191e-31, 3.2348011130552874e-15,
                 4.2882773325942817e-7, 7.1897477349009705e-3, 2.9918245706148007},
                {1.175018440676152e-15, 1.2306702726639309e-15, 1.245129728521236e-15,
                 1.2487799432123913e-15, 1.2496946197016056e-15, 1.2498705370195099e-15},
                {1.7670360888015883e-43, 1.7358836196782887e-21, 2.2258140675482091e-10,
                 9.433367565646499e-5, 6.609816013382693e-2, 3.0398776504531505},
        };
        kdl_kl_opts o = with_defaults((kdl_kl_opts){.c = 4, .ntau = 6, .tau = taus});
        kdl_kl_state *s = state(&o);
        kdl_tensor a = kdl_tensor_wrap((double *) zt, 2, (size_t[]){3, 4});
        kdl_tensor b = kdl_tensor_wrap((double *) zs, 2, (size_t[]){3, 4});
        kdl_kl_block bl = {.zt = &a, .zs = &b};

        (void) unused;
        assert_int_equal(kdl_kl_accumulate(s, &bl), 0);
        for (size_t it = 0; it < 6; it++) {
                const double *k = kdl_kl_values(s, it, KDL_KL_EXACT, NULL);

                for (size_t i = 0; i < 3; i++)
                        assert_close(k[i], ref[i][it], 1e-12, 0.0);
        }
        kdl_kl_state_free(s);
}

/* The other approximations against direct formulas, and the fidelity
 * statistics against two-pass formulas on the collected per-sample values. */
static void test_values_and_statistics(void **unused)
{
        const double taus[] = {2.0, 1.0};
        const size_t n = 301, c = 8, dd = 5;
        struct data d = data_random(19, n, c, dd, dd, 2.0, 1.5);
        kdl_tensor w = kdl_tensor_wrap(d.w, 2, (size_t[]){c, dd});
        kdl_kl_opts o = with_defaults((kdl_kl_opts){.c = c,
                                                    .ntau = 2,
                                                    .tau = taus,
                                                    .d_s = dd,
                                                    .d_t = dd,
                                                    .w_t = &w,
                                                    .grad_feature = true,
                                                    .grad_logits = true});
        double *vals = calloc(2 * NV * n, sizeof(double)), pt[8], ps[8];
        kdl_kl_state *s = state(&o);
        kdl_kl_result *r;

        (void) unused;
        feed(s, &o, &d, 0, n, 64, vals);
        for (size_t it = 0; it < 2; it++)
                for (size_t i = 0; i < n; i++) {
                        const double *zt = d.zt + i * c, *zs = d.zs + i * c;
                        const double *e_t = d.ht + i * dd, *e_s = d.hs + i * dd;
                        double pl2 = 0, l2 = 0, mean = 0, cl2 = 0, f2 = 0, fh = 0, ge = 0, gl = 0;

                        softmax(zt, c, taus[it], pt);
                        softmax(zs, c, taus[it], ps);
                        for (size_t k = 0; k < c; k++) {
                                pl2 += (ps[k] - pt[k]) * (ps[k] - pt[k]);
                                l2 += (zs[k] - zt[k]) * (zs[k] - zt[k]);
                                mean += (zs[k] - zt[k]) / (double) c;
                                gl += (d.gzs[i * c + k] - d.gzt[i * c + k]) *
                                      (d.gzs[i * c + k] - d.gzt[i * c + k]);
                        }
                        for (size_t k = 0; k < c; k++)
                                cl2 += (zs[k] - zt[k] - mean) * (zs[k] - zt[k] - mean);
                        for (size_t j = 0; j < dd; j++) {
                                f2 += (e_s[j] - e_t[j]) * (e_s[j] - e_t[j]);
                                ge += d.gt[i * dd + j] * (e_s[j] - e_t[j]);
                        }
                        for (size_t k = 0; k < c; k++) {
                                double u = 0;

                                for (size_t j = 0; j < dd; j++)
                                        u += d.w[k * dd + j] * (e_s[j] - e_t[j]);
                                fh += u * u;
                        }
                        assert_close(VAL(vals, n, it, KDL_KL_PROB_L2, i),
                                     taus[it] * taus[it] * pl2 / 2, 1e-11, 0);
                        assert_close(VAL(vals, n, it, KDL_KL_LOGIT_L2, i), l2 / (2.0 * c), 1e-12,
                                     0);
                        assert_close(VAL(vals, n, it, KDL_KL_LOGIT_CENTERED_L2, i), cl2 / (2.0 * c),
                                     1e-12, 0);
                        assert_close(VAL(vals, n, it, KDL_KL_FEATURE_L2, i), f2 / (2.0 * dd), 1e-12,
                                     0);
                        assert_close(VAL(vals, n, it, KDL_KL_FEATURE_HEAD, i), fh / (2.0 * c),
                                     1e-11, 0);
                        assert_close(VAL(vals, n, it, KDL_KL_GRADIENT_EMPIRICAL, i), ge * ge / 2,
                                     1e-10, 1e-15);
                        assert_close(VAL(vals, n, it, KDL_KL_GRADIENT_LOGIT_L2, i), gl / 2, 1e-12,
                                     0);
                }
        r = result(s);
        assert_int_equal(r->n, n);
        assert_true(r->spearman_exact);
        assert_int_equal(r->spearman_n, n);
        for (size_t it = 0; it < 2; it++) {
                const double *k = vals + (it * NV) * n;
                double km = 0;

                for (size_t i = 0; i < n; i++)
                        km += k[i] / (double) n;
                for (int v = 0; v < NV; v++) {
                        const double *a = vals + (it * NV + v) * n;
                        const kdl_kl_fidelity *f = &r->tau[it].v[v];
                        double am = 0, saa = 0, skk = 0, sak = 0, sabs = 0, sp_num = 0;
                        double *ra = malloc(n * sizeof(double)), *rk = malloc(n * sizeof(double));

                        assert_true(f->available);
                        for (size_t i = 0; i < n; i++)
                                am += a[i] / (double) n;
                        for (size_t i = 0; i < n; i++) {
                                saa += (a[i] - am) * (a[i] - am);
                                skk += (k[i] - km) * (k[i] - km);
                                sak += (a[i] - am) * (k[i] - km);
                                sabs += fabs(a[i] - k[i]);
                        }
                        /* Ranks by counting (no ties in continuous data). */
                        for (size_t i = 0; i < n; i++) {
                                ra[i] = rk[i] = 1;
                                for (size_t j = 0; j < n; j++) {
                                        ra[i] += a[j] < a[i];
                                        rk[i] += k[j] < k[i];
                                }
                        }
                        for (size_t i = 0; i < n; i++)
                                sp_num += (ra[i] - (n + 1) / 2.0) * (rk[i] - (n + 1) / 2.0);
                        assert_close(f->mean, am, 1e-12, 0);
                        assert_close(f->ratio, am / km, 1e-12, 0);
                        assert_close(f->pearson, sak / sqrt(saa * skk), 1e-11, 0);
                        assert_close(f->relerr, sabs / (n * km), 1e-12, 0);
                        assert_close(f->spearman, sp_num / ((double) n * ((double) n * n - 1) / 12),
                                     1e-12, 0);
                        assert_int_equal(f->dim, v == KDL_KL_FEATURE_L2 || v == KDL_KL_FEATURE_HEAD
                                                         ? dd
                                                 : v == KDL_KL_GRADIENT_FISHER    ? dd + c
                                                 : v == KDL_KL_GRADIENT_EMPIRICAL ? 2 * dd
                                                                                  : c);
                        free(ra);
                        free(rk);
                }
        }
        kdl_kl_result_free(r);
        kdl_kl_state_free(s);
        free(vals);
        data_free(&d);
}

static void assert_results_equal(const kdl_kl_result *a, const kdl_kl_result *b, double rtol)
{
        assert_int_equal(a->n, b->n);
        assert_int_equal(a->spearman_n, b->spearman_n);
        for (size_t it = 0; it < a->ntau; it++)
                for (int v = 0; v < NV; v++) {
                        const kdl_kl_fidelity *x = &a->tau[it].v[v], *y = &b->tau[it].v[v];

                        assert_int_equal(x->available, y->available);
                        if (!x->available)
                                continue;
                        assert_close(x->mean, y->mean, rtol, 0);
                        assert_close(x->ratio, y->ratio, rtol, 0);
                        assert_close(x->pearson, y->pearson, rtol, 0);
                        assert_close(x->relerr, y->relerr, rtol, 0);
                        /* Same reservoir, ranks in sample order: bitwise equal. */
                        assert_true(memcmp(&x->spearman, &y->spearman, sizeof(double)) == 0);
                }
        if (a->features) {
                assert_close(a->r2, b->r2, rtol, 0);
                assert_close(a->feature_sq, b->feature_sq, rtol, 0);
        }
        if (a->head)
                assert_close(a->visible_share, b->visible_share, rtol, 0);
}

/* merge(state(A), state(B)) equals accumulating A then B, with a reservoir
 * smaller than N (so the subsample itself must merge exactly). */
static void test_merge_equals_sequential(void **unused)
{
        const double taus[] = {1.0, 4.0, 8.0};
        const size_t n = 500, c = 7, d_s = 4, d_t = 9;
        struct data d = data_random(20, n, c, d_s, d_t, 2.0, 1.0);
        kdl_tensor w = kdl_tensor_wrap(d.w, 2, (size_t[]){c, d_t});
        kdl_kl_proj_state *p = NULL;
        kdl_kl_projector *proj = NULL;
        kdl_kl_opts o = with_defaults((kdl_kl_opts){.c = c,
                                                    .ntau = 3,
                                                    .tau = taus,
                                                    .d_s = d_s,
                                                    .d_t = d_t,
                                                    .w_t = &w,
                                                    .grad_feature = true,
                                                    .grad_logits = true});
        kdl_kl_state *seq, *a, *b, *cc;
        kdl_kl_result *r1, *r2, *r3;
        kdl_tensor hs = view(d.hs, 0, n, d_s), ht = view(d.ht, 0, n, d_t);

        (void) unused;
        assert_int_equal(kdl_kl_proj_state_new(d_s, d_t, &p), 0);
        assert_int_equal(kdl_kl_proj_accumulate(p, &hs, &ht), 0);
        assert_int_equal(kdl_kl_proj_finalize(p, &proj), 0);
        o.proj = proj;
        o.reservoir = 64;
        o.seed = 42;

        seq = state(&o);
        feed(seq, &o, &d, 0, n, 50, NULL);
        a = state(&o);
        b = state(&o);
        cc = state(&o);
        feed(a, &o, &d, 0, 123, 17, NULL);
        feed(b, &o, &d, 123, 400, 100, NULL);
        feed(cc, &o, &d, 400, n, 1, NULL);
        /* Merge in a different order than the data. */
        assert_int_equal(kdl_kl_merge(b, cc), 0);
        assert_int_equal(kdl_kl_merge(b, a), 0);
        r1 = result(seq);
        r2 = result(b);
        assert_int_equal(r1->spearman_n, 64);
        assert_false(r1->spearman_exact);
        assert_results_equal(r1, r2, 1e-12);

        /* A different seed draws a different subsample. */
        o.seed = 43;
        kdl_kl_state_free(a);
        a = state(&o);
        feed(a, &o, &d, 0, n, 50, NULL);
        r3 = result(a);
        assert_true(memcmp(&r3->tau[0].v[KDL_KL_LOGIT_L2].spearman,
                           &r1->tau[0].v[KDL_KL_LOGIT_L2].spearman, sizeof(double)) != 0);
        assert_close(r3->tau[0].v[KDL_KL_LOGIT_L2].pearson, r1->tau[0].v[KDL_KL_LOGIT_L2].pearson,
                     1e-12, 0);
        /* Merging states made with different options is refused. */
        assert_int_equal(kdl_kl_merge(a, seq), -KDL_EMISMATCH);

        kdl_kl_result_free(r1);
        kdl_kl_result_free(r2);
        kdl_kl_result_free(r3);
        kdl_kl_state_free(seq);
        kdl_kl_state_free(a);
        kdl_kl_state_free(b);
        kdl_kl_state_free(cc);
        kdl_kl_projector_free(proj);
        kdl_kl_proj_state_free(p);
        data_free(&d);
}

/* The projector recovers a planted affine map, merges exactly, and its
 * closed-form R² matches the one measured in pass 2. */
static void test_projector(void **unused)
{
        const size_t n = 400, d_s = 6, d_t = 4;
        kdl_test_rng rng = {21};
        double *hs = randn(&rng, n * d_s, 1.0), *ht = malloc(n * d_t * sizeof(double));
        double a[4][6], b[4];
        kdl_kl_proj_state *p1 = NULL, *p2 = NULL, *p3 = NULL;
        kdl_kl_projector *q1 = NULL, *q2 = NULL;
        kdl_tensor vs, vt;

        (void) unused;
        for (size_t j = 0; j < d_t; j++) {
                b[j] = 5.0 * kdl_test_normal(&rng);
                for (size_t i = 0; i < d_s; i++)
                        a[j][i] = kdl_test_normal(&rng);
        }
        for (size_t r = 0; r < n; r++) {
                hs[r * d_s] += 100.0; /* a large mean: centring must be exact */
                for (size_t j = 0; j < d_t; j++) {
                        ht[r * d_t + j] = b[j];
                        for (size_t i = 0; i < d_s; i++)
                                ht[r * d_t + j] += a[j][i] * hs[r * d_s + i];
                }
        }
        assert_int_equal(kdl_kl_proj_state_new(d_s, d_t, &p1), 0);
        vs = view(hs, 0, n, d_s);
        vt = view(ht, 0, n, d_t);
        assert_int_equal(kdl_kl_proj_accumulate(p1, &vs, &vt), 0);
        assert_int_equal(kdl_kl_proj_finalize(p1, &q1), 0);
        assert_true(q1->fitted);
        assert_int_equal(q1->rank, d_s);
        assert_int_equal(q1->n, n);
        for (size_t j = 0; j < d_t; j++) {
                assert_close(q1->b[j], b[j], 1e-9, 1e-9);
                for (size_t i = 0; i < d_s; i++)
                        assert_close(q1->pt[i * d_t + j], a[j][i], 1e-10, 1e-10);
        }
        assert_close(q1->r2, 1.0, 0.0, 1e-12);

        /* Noisy targets; two block streams merged = one stream. */
        for (size_t k = 0; k < n * d_t; k++)
                ht[k] += 0.5 * kdl_test_normal(&rng);
        kdl_kl_proj_state_free(p1);
        kdl_kl_projector_free(q1);
        assert_int_equal(kdl_kl_proj_state_new(d_s, d_t, &p1), 0);
        assert_int_equal(kdl_kl_proj_state_new(d_s, d_t, &p2), 0);
        assert_int_equal(kdl_kl_proj_state_new(d_s, d_t, &p3), 0);
        for (size_t r0 = 0; r0 < n; r0 += 30) {
                size_t m = r0 + 30 <= n ? 30 : n - r0;

                vs = view(hs, r0, m, d_s);
                vt = view(ht, r0, m, d_t);
                assert_int_equal(kdl_kl_proj_accumulate(p1, &vs, &vt), 0);
                assert_int_equal(kdl_kl_proj_accumulate(r0 < 200 ? p2 : p3, &vs, &vt), 0);
        }
        assert_int_equal(kdl_kl_proj_merge(p3, p2), 0);
        assert_int_equal(kdl_kl_proj_finalize(p1, &q1), 0);
        assert_int_equal(kdl_kl_proj_finalize(p3, &q2), 0);
        for (size_t k = 0; k < d_s * d_t; k++)
                assert_close(q2->pt[k], q1->pt[k], 1e-10, 1e-12);
        assert_close(q2->r2, q1->r2, 1e-12, 0);
        assert_true(q1->r2 > 0.5 && q1->r2 < 1.0);

        /* Pass 2 with this P: measured R² equals the closed form. */
        {
                const double tau = 1.0;
                double *zt = calloc(n * 3, sizeof(double)), *zs = calloc(n * 3, sizeof(double));
                kdl_kl_opts o = with_defaults((kdl_kl_opts){
                        .c = 3, .ntau = 1, .tau = &tau, .d_s = d_s, .d_t = d_t, .proj = q1});
                kdl_kl_state *s = state(&o);
                kdl_kl_result *r;
                kdl_tensor z1 = view(zt, 0, n, 3), z2 = view(zs, 0, n, 3);
                kdl_kl_block bl = {.zt = &z1, .zs = &z2, .ht = &vt, .hs = &vs};

                vs = view(hs, 0, n, d_s);
                vt = view(ht, 0, n, d_t);
                assert_int_equal(kdl_kl_accumulate(s, &bl), 0);
                r = result(s);
                assert_true(r->projector_fitted);
                assert_close(r->r2, q1->r2, 1e-10, 0);
                kdl_kl_result_free(r);
                kdl_kl_state_free(s);
                free(zt);
                free(zs);
        }
        kdl_kl_projector_free(q1);
        kdl_kl_projector_free(q2);
        kdl_kl_proj_state_free(p1);
        kdl_kl_proj_state_free(p2);
        kdl_kl_proj_state_free(p3);
        free(hs);
        free(ht);
}

/* A student feature column that copies another: singular Gram, the
 * minimum-norm solution with rank d_s - 1 (no failure). */
static void test_projector_rank_deficient(void **unused)
{
        const size_t n = 100, d_s = 3, d_t = 2;
        kdl_test_rng rng = {22};
        double *hs = randn(&rng, n * d_s, 1.0), *ht = randn(&rng, n * d_t, 1.0);
        kdl_kl_proj_state *p = NULL;
        kdl_kl_projector *q = NULL;
        kdl_tensor vs = view(hs, 0, n, d_s), vt = view(ht, 0, n, d_t);

        (void) unused;
        for (size_t r = 0; r < n; r++)
                hs[r * d_s + 2] = hs[r * d_s + 1];
        assert_int_equal(kdl_kl_proj_state_new(d_s, d_t, &p), 0);
        assert_int_equal(kdl_kl_proj_accumulate(p, &vs, &vt), 0);
        assert_int_equal(kdl_kl_proj_finalize(p, &q), 0);
        assert_int_equal(q->rank, 2);
        /* Minimum norm: the duplicated columns share the weight equally. */
        for (size_t j = 0; j < d_t; j++)
                assert_close(q->pt[1 * d_t + j], q->pt[2 * d_t + j], 1e-9, 1e-12);
        kdl_kl_projector_free(q);
        kdl_kl_proj_state_free(p);
        free(hs);
        free(ht);
}

/* KL-visible share: 1 inside the row space of W_t, 0 in its null space. */
static void test_visible_share(void **unused)
{
        const double tau = 2.0;
        const size_t n = 40, c = 3, dd = 8;
        struct data d = data_random(23, n, c, dd, dd, 1.0, 0.5);
        kdl_tensor w = kdl_tensor_wrap(d.w, 2, (size_t[]){c, dd});
        kdl_kl_opts o = with_defaults(
                (kdl_kl_opts){.c = c, .ntau = 1, .tau = &tau, .d_s = dd, .d_t = dd, .w_t = &w});
        kdl_test_rng rng = {7};

        (void) unused;
        for (int mode = 0; mode < 3; mode++) {
                kdl_kl_state *s;
                kdl_kl_result *r;

                for (size_t i = 0; i < n; i++) {
                        double e[8] = {0}, g[3];

                        for (size_t k = 0; k < c; k++)
                                g[k] = kdl_test_normal(&rng);
                        /* mode 0: e = Wᵀg (row space); 1: e ⟂ rows of W;
                         * 2: e = Wᵀg + ⟂ part of equal norm. */
                        for (size_t j = 0; j < dd; j++)
                                for (size_t k = 0; k < c; k++)
                                        e[j] += d.w[k * dd + j] * g[k];
                        if (mode >= 1) {
                                double x[8], nx = 0, ne = 0;

                                for (size_t j = 0; j < dd; j++)
                                        x[j] = kdl_test_normal(&rng);
                                /* Project x onto the null space with the
                                 * normal equations solved by hand (3×3). */
                                {
                                        double gm[3][3] = {{0}}, rhs[3] = {0}, sol[3];

                                        for (size_t k = 0; k < c; k++) {
                                                for (size_t l = 0; l < c; l++)
                                                        for (size_t j = 0; j < dd; j++)
                                                                gm[k][l] += d.w[k * dd + j] *
                                                                            d.w[l * dd + j];
                                                for (size_t j = 0; j < dd; j++)
                                                        rhs[k] += d.w[k * dd + j] * x[j];
                                        }
                                        /* Cramer's rule. */
                                        {
                                                double det = gm[0][0] * (gm[1][1] * gm[2][2] -
                                                                         gm[1][2] * gm[2][1]) -
                                                             gm[0][1] * (gm[1][0] * gm[2][2] -
                                                                         gm[1][2] * gm[2][0]) +
                                                             gm[0][2] * (gm[1][0] * gm[2][1] -
                                                                         gm[1][1] * gm[2][0]);

                                                for (int col = 0; col < 3; col++) {
                                                        double mm[3][3];

                                                        memcpy(mm, gm, sizeof(mm));
                                                        for (int row = 0; row < 3; row++)
                                                                mm[row][col] = rhs[row];
                                                        sol[col] =
                                                                (mm[0][0] * (mm[1][1] * mm[2][2] -
                                                                             mm[1][2] * mm[2][1]) -
                                                                 mm[0][1] * (mm[1][0] * mm[2][2] -
                                                                             mm[1][2] * mm[2][0]) +
                                                                 mm[0][2] * (mm[1][0] * mm[2][1] -
                                                                             mm[1][1] * mm[2][0])) /
                                                                det;
                                                }
                                        }
                                        for (size_t j = 0; j < dd; j++)
                                                for (size_t k = 0; k < c; k++)
                                                        x[j] -= d.w[k * dd + j] * sol[k];
                                }
                                for (size_t j = 0; j < dd; j++) {
                                        nx += x[j] * x[j];
                                        ne += e[j] * e[j];
                                }
                                for (size_t j = 0; j < dd; j++)
                                        e[j] = (mode == 1 ? 0.0 : e[j]) + x[j] * sqrt(ne / nx);
                        }
                        for (size_t j = 0; j < dd; j++)
                                d.hs[i * dd + j] = d.ht[i * dd + j] + e[j];
                }
                s = state(&o);
                feed(s, &o, &d, 0, n, 13, NULL);
                r = result(s);
                assert_true(r->head);
                assert_int_equal(r->head_rank, c);
                assert_close(r->visible_share,
                             mode == 0   ? 1.0
                             : mode == 1 ? 0.0
                                         : 0.5,
                             1e-10, 1e-12);
                kdl_kl_result_free(r);
                kdl_kl_state_free(s);
        }
        data_free(&d);

        /* W_t of full column rank (d_t <= C): every e is visible, exactly. */
        {
                struct data t = data_random(29, n, 6, 4, 4, 1.0, 0.5);
                kdl_tensor wt = kdl_tensor_wrap(t.w, 2, (size_t[]){6, 4});
                kdl_kl_opts ot = with_defaults((kdl_kl_opts){
                        .c = 6, .ntau = 1, .tau = &tau, .d_s = 4, .d_t = 4, .w_t = &wt});
                kdl_kl_state *s = state(&ot);
                kdl_kl_result *r;

                feed(s, &ot, &t, 0, n, 7, NULL);
                r = result(s);
                assert_int_equal(r->head_rank, 4);
                assert_close(r->visible_share, 1.0, 0.0, 0.0);
                kdl_kl_result_free(r);
                kdl_kl_state_free(s);
                data_free(&t);
        }
}

/* Ties get average ranks: a constant-in-blocks approximation. */
static void test_spearman_ties(void **unused)
{
        const double tau = 1.0;
        const size_t n = 6, c = 2;
        /* Student logit gaps chosen so that K is increasing in |gap| and
         * logit_l2 too; two equal gaps make a tie in both. */
        double zt[12] = {0}, zs[12] = {0};
        const double gap[6] = {0.1, 0.5, 0.5, 1.0, 2.0, 3.0};
        kdl_kl_opts o = with_defaults((kdl_kl_opts){.c = c, .ntau = 1, .tau = &tau});
        kdl_kl_state *s = state(&o);
        kdl_kl_result *r;
        kdl_tensor a = view(zt, 0, n, c), b = view(zs, 0, n, c);
        kdl_kl_block bl = {.zt = &a, .zs = &b};

        (void) unused;
        for (size_t i = 0; i < n; i++)
                zs[i * c] = gap[i];
        assert_int_equal(kdl_kl_accumulate(s, &bl), 0);
        r = result(s);
        assert_close(r->tau[0].v[KDL_KL_LOGIT_L2].spearman, 1.0, 1e-15, 0);
        assert_close(r->tau[0].v[KDL_KL_EXACT].spearman, 1.0, 1e-15, 0);
        kdl_kl_result_free(r);
        kdl_kl_state_free(s);
}

/* NaN/Inf in the C-wide inputs is found through the values they give, after the narrow
 * inputs are checked: the message still names the first bad tensor in order (logits before
 * features) and its sample, for Inf of either sign as for NaN, and nothing is added. */
static void test_nonfinite_order(void **unused)
{
        const double tau = 2.0;
        double zt[8], zs[8], ht[8], hs[8], gzt[8], gzs[8];
        kdl_tensor a = view(zt, 0, 4, 2), b = view(zs, 0, 4, 2), e = view(ht, 0, 4, 2),
                   f = view(hs, 0, 4, 2), g = view(gzt, 0, 4, 2), h = view(gzs, 0, 4, 2);
        kdl_kl_opts o =
                with_defaults((kdl_kl_opts){.c = 2, .ntau = 1, .tau = &tau, .d_s = 2, .d_t = 2});
        kdl_kl_block bl = {
                .row0 = 10, .zt = &a, .zs = &b, .ht = &e, .hs = &f, .gzt = &g, .gzs = &h};
        kdl_kl_result *r = NULL;
        kdl_kl_state *s;
        size_t m;

        (void) unused;
        o.grad_logits = true;
        s = state(&o);
        for (int i = 0; i < 8; i++) {
                zt[i] = 0.3 * i;
                zs[i] = 0.1 * (8 - i);
                ht[i] = hs[i] = 0.5 * i;
                gzt[i] = gzs[i] = 0.01 * i;
        }
        ht[1] = NAN;      /* sample 10 */
        zt[5] = INFINITY; /* sample 12: reported first, logits come first */
        assert_int_equal(kdl_kl_accumulate(s, &bl), -KDL_ENONFINITE);
        assert_non_null(strstr(kdl_errmsg(), "teacher logits: non-finite value at sample 12"));
        zt[5] = 0.0;
        assert_int_equal(kdl_kl_accumulate(s, &bl), -KDL_ENONFINITE);
        assert_non_null(strstr(kdl_errmsg(), "teacher features: non-finite value at sample 10"));
        ht[1] = 0.0;
        zs[6] = -INFINITY;
        assert_int_equal(kdl_kl_accumulate(s, &bl), -KDL_ENONFINITE);
        assert_non_null(strstr(kdl_errmsg(), "student logits: non-finite value at sample 13"));
        zs[6] = 0.0;
        gzs[2] = -INFINITY;
        assert_int_equal(kdl_kl_accumulate(s, &bl), -KDL_ENONFINITE);
        assert_non_null(
                strstr(kdl_errmsg(), "student logit gradient: non-finite value at sample 11"));
        assert_null(kdl_kl_values(s, 0, KDL_KL_EXACT, &m));
        assert_int_equal(kdl_kl_finalize(s, &r), -KDL_EMISSING);
        gzs[2] = 0.0;
        assert_int_equal(kdl_kl_accumulate(s, &bl), 0);
        kdl_kl_state_free(s);
}

static void test_error_paths(void **unused)
{
        const double tau = 1.0, bad_tau[] = {1.0, 0.0}, nan_tau = NAN;
        double zt[12], zs[12], big[12];
        kdl_tensor a, b3, bx, bb;
        kdl_kl_opts o = with_defaults((kdl_kl_opts){.c = 3, .ntau = 1, .tau = &tau});
        kdl_kl_state *s = NULL, *keep = (kdl_kl_state *) &o;
        kdl_kl_result *r = NULL;
        kdl_kl_proj_state *p = NULL;
        kdl_kl_projector *q = NULL;
        kdl_tensor w;
        double wd[6] = {1, 2, 3, 4, 5, 6};
        size_t m;

        (void) unused;
        for (int i = 0; i < 12; i++) {
                zt[i] = 0.1 * i;
                zs[i] = 0.2 * (12 - i);
                big[i] = i % 2 ? 1e308 : -1e308;
        }
        /* C < 2, no temperature, bad temperatures. */
        o.c = 1;
        assert_int_equal(kdl_kl_state_new(&o, &keep), -KDL_ESHAPE);
        assert_true(keep == (kdl_kl_state *) &o); /* not clobbered */
        o.c = 3;
        o.ntau = 0;
        assert_int_equal(kdl_kl_state_new(&o, &s), -KDL_ESHAPE);
        o.ntau = 2;
        o.tau = bad_tau;
        assert_int_equal(kdl_kl_state_new(&o, &s), -KDL_ERANGE);
        o.ntau = 1;
        o.tau = &nan_tau;
        assert_int_equal(kdl_kl_state_new(&o, &s), -KDL_ERANGE);
        o.tau = &tau;
        /* Widths differ without a projector; head of the wrong shape. */
        o.d_s = 2;
        o.d_t = 3;
        assert_int_equal(kdl_kl_state_new(&o, &s), -KDL_ESHAPE);
        assert_non_null(strstr(kdl_errmsg(), "projector"));
        o.d_s = o.d_t = 2;
        w = kdl_tensor_wrap(wd, 2, (size_t[]){2, 3});
        o.w_t = &w;
        assert_int_equal(kdl_kl_state_new(&o, &s), -KDL_ESHAPE);
        o.d_s = o.d_t = 0;
        o.w_t = NULL;
        assert_null(s);

        s = state(&o);
        /* Shape mismatch: student logits with C + 1 columns. */
        a = view(zt, 0, 3, 3);
        b3 = view(zs, 0, 3, 4);
        {
                kdl_kl_block bl = {.zt = &a, .zs = &b3};

                assert_int_equal(kdl_kl_accumulate(s, &bl), -KDL_ESHAPE);
                assert_non_null(strstr(kdl_errmsg(), "student logits"));
        }
        /* An unannounced tensor. */
        bx = view(zs, 0, 3, 3);
        {
                kdl_kl_block bl = {.zt = &a, .zs = &bx, .ht = &bx};

                assert_int_equal(kdl_kl_accumulate(s, &bl), -KDL_ESHAPE);
        }
        /* NaN in the second row of a block starting at sample 100. */
        zs[4] = NAN;
        {
                kdl_kl_block bl = {.row0 = 100, .zt = &a, .zs = &bx};

                assert_int_equal(kdl_kl_accumulate(s, &bl), -KDL_ENONFINITE);
                assert_non_null(strstr(kdl_errmsg(), "sample 101"));
        }
        /* The same with explicit sample indices (rows compacted by a skip). */
        {
                const size_t idx[3] = {7, 9, 30};
                kdl_kl_block bl = {.samples = idx, .zt = &a, .zs = &bx};

                assert_int_equal(kdl_kl_accumulate(s, &bl), -KDL_ENONFINITE);
                assert_non_null(
                        strstr(kdl_errmsg(), "student logits: non-finite value at sample 9"));
        }
        zs[4] = 0.5;
        /* Logits so large that the values overflow. */
        bb = view(big, 0, 3, 3);
        {
                kdl_kl_block bl = {.zt = &a, .zs = &bb};

                assert_int_equal(kdl_kl_accumulate(s, &bl), -KDL_ENONFINITE);
        }
        /* Nothing was added by the failures. */
        assert_null(kdl_kl_values(s, 0, KDL_KL_EXACT, &m));
        assert_int_equal(kdl_kl_finalize(s, &r), -KDL_EMISSING);
        assert_null(r);
        kdl_kl_state_free(s);

        /* Projector: < 2 samples; no variance; width mismatch in merge. */
        assert_int_equal(kdl_kl_proj_state_new(0, 3, &p), -KDL_ESHAPE);
        assert_int_equal(kdl_kl_proj_state_new(2, 3, &p), 0);
        assert_int_equal(kdl_kl_proj_finalize(p, &q), -KDL_EMISSING);
        {
                double hs[8] = {1, 2, 1, 2, 1, 2, 1, 2}, ht[12] = {0};
                kdl_tensor vs = view(hs, 0, 4, 2), vt = view(ht, 0, 4, 3), vt2 = view(ht, 0, 4, 2);
                kdl_kl_proj_state *p2 = NULL;

                ht[5] = 1;
                assert_int_equal(kdl_kl_proj_accumulate(p, &vs, &vt2), -KDL_ESHAPE);
                assert_int_equal(kdl_kl_proj_accumulate(p, &vs, &vt), 0);
                assert_int_equal(kdl_kl_proj_finalize(p, &q), -KDL_ESINGULAR);
                assert_null(q);
                hs[3] = NAN;
                assert_int_equal(kdl_kl_proj_accumulate(p, &vs, &vt), -KDL_ENONFINITE);
                assert_int_equal(kdl_kl_proj_state_new(3, 3, &p2), 0);
                assert_int_equal(kdl_kl_proj_merge(p, p2), -KDL_EMISMATCH);
                kdl_kl_proj_state_free(p2);
        }
        kdl_kl_proj_state_free(p);
}

/* The metric contract: kdl_kl_opts_init() is the one source of defaults;
 * finalize of an empty state is -KDL_EMISSING; merging states of other
 * shapes or options is -KDL_EMISMATCH and leaves @into as it was. */
static void test_contract(void **unused)
{
        const double tau[2] = {1.0, 3.0};
        struct data d = data_random(31, 40, 5, 3, 4, 1.5, 0.7);
        kdl_kl_opts o;
        kdl_kl_state *s, *other, *keep = (kdl_kl_state *) &o;
        kdl_kl_result *r = NULL, *r1, *r2;
        kdl_kl_proj_state *p, *p2;
        kdl_kl_projector *q = NULL, *q1, *q2;
        kdl_tensor hs = view(d.hs, 0, d.n, 3);
        kdl_tensor hs1 = view(d.hs, 0, 1, 3), ht1 = view(d.ht, 0, 1, 4);

        (void) unused;
        kdl_kl_opts_init(&o);
        assert_int_equal(o.reservoir, KDL_KL_RESERVOIR_DEFAULT);
        assert_true(o.seed == 0 && o.c == 0 && o.ntau == 0 && !o.tau && !o.w_t && !o.proj);
        assert_true(o.d_s == 0 && o.d_t == 0 && !o.grad_feature && !o.grad_logits);
        o.c = 5;
        o.ntau = 2;
        o.tau = tau;
        /* Zero is not "the default": a reservoir of 0 is refused. */
        o.reservoir = 0;
        assert_int_equal(kdl_kl_state_new(&o, &keep), -KDL_ERANGE);
        assert_true(keep == (kdl_kl_state *) &o);
        o.reservoir = 16;

        s = state(&o);
        assert_int_equal(kdl_kl_finalize(s, &r), -KDL_EMISSING);
        assert_null(r);
        feed(s, &o, &d, 0, d.n, 9, NULL);
        r1 = result(s);
        /* Other classes, temperatures, reservoir or seed: refused, s unchanged. */
        for (int k = 0; k < 4; k++) {
                kdl_kl_opts o4 = o;

                o4.c = k == 0 ? 4 : o.c;
                o4.ntau = k == 1 ? 1 : o.ntau;
                o4.reservoir = k == 2 ? 17 : o.reservoir;
                o4.seed = k == 3 ? 5 : o.seed;
                other = state(&o4);
                assert_int_equal(kdl_kl_merge(s, other), -KDL_EMISMATCH);
                kdl_kl_state_free(other);
        }
        r2 = result(s);
        assert_int_equal(r2->n, r1->n);
        assert_int_equal(r2->spearman_n, r1->spearman_n);
        for (size_t it = 0; it < 2; it++)
                for (int v = 0; v < NV; v++)
                        assert_memory_equal(&r2->tau[it].v[v], &r1->tau[it].v[v],
                                            sizeof(kdl_kl_fidelity));
        kdl_kl_result_free(r2);
        kdl_kl_result_free(r1);
        kdl_kl_state_free(s);

        /* The projector: empty, one sample, other widths. */
        assert_int_equal(kdl_kl_proj_state_new(3, 4, &p), 0);
        assert_int_equal(kdl_kl_proj_finalize(p, &q), -KDL_EMISSING);
        assert_int_equal(kdl_kl_proj_accumulate(p, &hs1, &ht1), 0);
        assert_int_equal(kdl_kl_proj_finalize(p, &q), -KDL_ESHAPE);
        assert_null(q);
        hs1 = view(d.hs, 1, d.n - 1, 3);
        ht1 = view(d.ht, 1, d.n - 1, 4);
        assert_int_equal(kdl_kl_proj_accumulate(p, &hs1, &ht1), 0);
        assert_int_equal(kdl_kl_proj_finalize(p, &q1), 0);
        assert_int_equal(kdl_kl_proj_state_new(3, 3, &p2), 0);
        assert_int_equal(kdl_kl_proj_accumulate(p2, &hs, &hs), 0);
        assert_int_equal(kdl_kl_proj_merge(p, p2), -KDL_EMISMATCH);
        assert_int_equal(kdl_kl_proj_finalize(p, &q2), 0);
        assert_int_equal(q2->n, q1->n);
        assert_memory_equal(q2->pt, q1->pt, 3 * 4 * sizeof(double));
        assert_memory_equal(q2->b, q1->b, 4 * sizeof(double));
        kdl_kl_projector_free(q2);
        kdl_kl_projector_free(q1);
        kdl_kl_proj_state_free(p2);
        kdl_kl_proj_state_free(p);
        data_free(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_kl_matches_naive_reference_and_is_nonnegative),
                cmocka_unit_test(test_student_equal_teacher_gives_exact_zero),
                cmocka_unit_test(test_logit_fisher_second_order),
                cmocka_unit_test(test_fisher_quadratic_form_equals_variance),
                cmocka_unit_test(test_high_tau_limit),
                cmocka_unit_test(test_shift_invariance),
                cmocka_unit_test(test_gradient_fisher_through_linear_head),
                cmocka_unit_test(test_stable_with_large_logits),
                cmocka_unit_test(test_saturated_reference_values),
                cmocka_unit_test(test_values_and_statistics),
                cmocka_unit_test(test_merge_equals_sequential),
                cmocka_unit_test(test_projector),
                cmocka_unit_test(test_projector_rank_deficient),
                cmocka_unit_test(test_visible_share),
                cmocka_unit_test(test_spearman_ties),
                cmocka_unit_test(test_error_paths),
                cmocka_unit_test(test_nonfinite_order),
                cmocka_unit_test(test_contract),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
