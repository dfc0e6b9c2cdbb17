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
#include "metrics/split.h"

/*
 * References here are written independently of metrics/split.c: plain
 * softmax (max subtracted) and KL as sum p (log p - log q), the textbook
 * forms of docs/split.md#explicit-and-implicit-knowledge, valid for the moderate logits they are
 * used on.
 */

#define C_ 7
#define N_ 240

static const double taus[] = {0.5, 1.0, 2.0, 4.0, 8.0};
#define NTAUS (sizeof(taus) / sizeof(taus[0]))

/* Scratch of kdl_split_eval() for up to C_ classes. */
static double work[KDL_SPLIT_EVAL_WORK(C_)];

static void softmax(const double *z, size_t c, double tau, double *p)
{
        double m = -INFINITY, s = 0.0;

        for (size_t j = 0; j < c; j++)
                m = fmax(m, z[j] / tau);
        for (size_t j = 0; j < c; j++)
                s += (p[j] = exp(z[j] / tau - m));
        for (size_t j = 0; j < c; j++)
                p[j] /= s;
}

static double kl(const double *p, const double *q, size_t c)
{
        double r = 0.0;

        for (size_t j = 0; j < c; j++)
                if (p[j] > 0.0)
                        r += p[j] * (log(p[j]) - log(q[j]));
        return r;
}

/* Reference KL, TCKD, NCKD (τ² included) and p^t_y. */
static void reference(const double *zt, const double *zs, size_t c, size_t y, double tau,
                      double *ret_kl, double *ret_tckd, double *ret_nckd, double *ret_pty)
{
        double pt[64], ps[64], bt[2], bs[2], gt[64], gs[64];
        size_t m = 0;

        softmax(zt, c, tau, pt);
        softmax(zs, c, tau, ps);
        bt[0] = pt[y];
        bt[1] = 1.0 - pt[y];
        bs[0] = ps[y];
        bs[1] = 1.0 - ps[y];
        for (size_t j = 0; j < c; j++)
                if (j != y) {
                        gt[m] = zt[j];
                        gs[m] = zs[j];
                        m++;
                }
        softmax(gt, m, tau, pt + 32);
        softmax(gs, m, tau, ps + 32);
        *ret_nckd = tau * tau * kl(pt + 32, ps + 32, m);
        softmax(zt, c, tau, pt);
        *ret_kl = tau * tau * kl(pt, ps, c);
        *ret_tckd = tau * tau * kl(bt, bs, 2);
        *ret_pty = pt[y];
}

static double pearson(const double *x, const double *y, size_t n);

static void fill_logits(kdl_test_rng *rng, double *z, size_t n, double scale)
{
        for (size_t i = 0; i < n; i++)
                z[i] = scale * kdl_test_normal(rng);
}

/* Teacher and student logits that are correlated (a student near its teacher),
 * labels biased towards the teacher's argmax, so the statistics are not
 * degenerate. */
static void make_data(uint64_t seed, size_t n, size_t c, double *zt, double *zs, int64_t *y)
{
        kdl_test_rng rng = {seed};

        for (size_t i = 0; i < n; i++) {
                size_t best = 0;

                for (size_t j = 0; j < c; j++) {
                        zt[i * c + j] = 2.5 * kdl_test_normal(&rng);
                        zs[i * c + j] = 0.7 * zt[i * c + j] + 1.3 * kdl_test_normal(&rng);
                        if (zt[i * c + j] > zt[i * c + best])
                                best = j;
                }
                y[i] = kdl_test_uniform(&rng) < 0.6
                               ? (int64_t) best
                               : (int64_t) (kdl_test_uniform(&rng) * (double) c);
        }
}

static kdl_split_opts opts_all_taus(void)
{
        kdl_split_opts o;

        kdl_split_opts_init(&o);
        o.ntaus = NTAUS;
        memcpy(o.taus, taus, sizeof(taus));
        return o;
}

/* ---- Identities of docs/split.md#explicit-and-implicit-knowledge
 * -------------------------------------------------------- */

static void test_identity_and_reference(void **state)
{
        kdl_test_rng rng = {11};
        kdl_split_opts o;
        double zt[C_], zs[C_];

        (void) state;
        kdl_split_opts_init(&o);
        for (int rep = 0; rep < 200; rep++) {
                size_t y = (size_t) rep % C_;

                fill_logits(&rng, zt, C_, 4.0);
                fill_logits(&rng, zs, C_, 4.0);
                for (size_t k = 0; k < NTAUS; k++) {
                        kdl_split_sample r;
                        double rkl, rtckd, rnckd, rpty;

                        assert_int_equal(kdl_split_eval(zt, zs, C_, y, taus[k], &o, work, &r), 0);
                        reference(zt, zs, C_, y, taus[k], &rkl, &rtckd, &rnckd, &rpty);
                        /* KL = TCKD + (1 - p^t_y) NCKD, per sample, to 1e-12. */
                        assert_close(r.kl, r.tckd + r.pt_rest * r.nckd, 1e-12, 1e-12);
                        assert_close(r.residual, 0.0, 0.0, 1e-12);
                        assert_close(r.kl, rkl, 1e-11, 1e-13);
                        assert_close(r.tckd, rtckd, 1e-9, 1e-13);
                        assert_close(r.nckd, rnckd, 1e-11, 1e-13);
                        assert_close(r.pt_y, rpty, 1e-13, 0.0);
                        assert_close(r.pt_rest, 1.0 - rpty, 1e-12, 1e-15);
                }
        }
}

static void test_dkd_alpha1_beta_pt_equals_kd(void **state)
{
        kdl_test_rng rng = {12};
        kdl_split_opts o;
        double zt[C_], zs[C_];

        (void) state;
        kdl_split_opts_init(&o);
        for (int rep = 0; rep < 100; rep++) {
                size_t y = (size_t) (kdl_test_uniform(&rng) * C_);

                fill_logits(&rng, zt, C_, 3.0);
                fill_logits(&rng, zs, C_, 3.0);
                for (size_t k = 0; k < NTAUS; k++) {
                        kdl_split_sample r;
                        double rkl, rtckd, rnckd, rpty, beta, dkd;

                        assert_int_equal(kdl_split_eval(zt, zs, C_, y, taus[k], &o, work, &r), 0);
                        reference(zt, zs, C_, y, taus[k], &rkl, &rtckd, &rnckd, &rpty);
                        /* L_DKD = α TCKD + β NCKD with α = 1, β_n = 1 - p^t_y (from the
                         * reference softmax) is Hinton's KD. */
                        beta = 1.0 - rpty;
                        dkd = 1.0 * r.tckd + beta * r.nckd;
                        assert_close(dkd, rkl, 1e-11, 1e-13);
                }
        }
}

static void test_nckd_ignores_target_logit(void **state)
{
        kdl_test_rng rng = {13};
        kdl_split_opts o;
        double zt[C_], zs[C_];

        (void) state;
        kdl_split_opts_init(&o);
        fill_logits(&rng, zt, C_, 3.0);
        fill_logits(&rng, zs, C_, 3.0);
        for (size_t k = 0; k < NTAUS; k++) {
                kdl_split_sample a, b, c;

                assert_int_equal(kdl_split_eval(zt, zs, C_, 2, taus[k], &o, work, &a), 0);
                zt[2] += 7.25;
                assert_int_equal(kdl_split_eval(zt, zs, C_, 2, taus[k], &o, work, &b), 0);
                zs[2] -= 3.5;
                assert_int_equal(kdl_split_eval(zt, zs, C_, 2, taus[k], &o, work, &c), 0);
                zt[2] -= 7.25;
                zs[2] += 3.5;
                assert_close(b.nckd, a.nckd, 1e-14, 0.0);
                assert_close(c.nckd, a.nckd, 1e-14, 0.0);
                assert_close(b.nt_entropy, a.nt_entropy, 1e-14, 0.0);
                /* ...while TCKD and KL do change. */
                assert_true(fabs(b.tckd - a.tckd) > 1e-3 * fabs(a.tckd));
        }
}

static void test_tckd_zero_when_confidences_equal(void **state)
{
        kdl_test_rng rng = {14};
        kdl_split_opts o;
        double zt[C_], zs[C_];

        (void) state;
        kdl_split_opts_init(&o);
        fill_logits(&rng, zt, C_, 3.0);
        /* The student permutes the teacher's non-target logits (target 4 kept):
         * same p_y, different non-target distribution. */
        for (size_t j = 0; j < C_; j++)
                zs[j] = zt[j];
        zs[0] = zt[5];
        zs[5] = zt[1];
        zs[1] = zt[0];
        for (size_t k = 0; k < NTAUS; k++) {
                kdl_split_sample r;

                assert_int_equal(kdl_split_eval(zt, zs, C_, 4, taus[k], &o, work, &r), 0);
                assert_close(r.ps_y, r.pt_y, 1e-14, 0.0);
                assert_close(r.tckd, 0.0, 0.0, 1e-14);
                assert_close(r.gap, 0.0, 0.0, 1e-15);
                assert_close(r.omega, 1.0, 1e-14, 0.0);
                assert_true(r.nckd > 1e-3);
                assert_close(r.kl, r.pt_rest * r.nckd, 1e-12, 1e-14);
        }
}

static void test_masked_nckd_agrees_with_exact(void **state)
{
        kdl_test_rng rng = {15};
        kdl_split_opts o;
        double zt[C_], zs[C_];

        (void) state;
        kdl_split_opts_init(&o);
        for (int rep = 0; rep < 100; rep++) {
                size_t y = (size_t) rep % C_;

                fill_logits(&rng, zt, C_, 5.0);
                fill_logits(&rng, zs, C_, 5.0);
                for (size_t k = 0; k < NTAUS; k++) {
                        kdl_split_sample r;
                        double masked = -1.0;

                        assert_int_equal(kdl_split_eval(zt, zs, C_, y, taus[k], &o, work, &r), 0);
                        assert_int_equal(kdl_split_nckd_masked(zt, zs, C_, y, taus[k], &masked), 0);
                        assert_close(masked, r.nckd, 1e-10, 1e-14);
                }
        }
}

static void test_certain_teacher_is_finite(void **state)
{
        kdl_split_opts o;
        double zt[C_], zs[C_], wrong[C_];
        kdl_test_rng rng = {16};

        (void) state;
        kdl_split_opts_init(&o);
        /* Logits of magnitude 100 (and 1000): p^t_y == 1 in double at τ = 1. */
        for (double mag = 100.0; mag <= 1000.0; mag *= 10.0) {
                for (size_t j = 0; j < C_; j++) {
                        zt[j] = j == 3 ? mag : -mag;
                        wrong[j] = j == 3 ? -mag : mag;
                        zs[j] = 2.0 * kdl_test_normal(&rng);
                }
                for (size_t k = 0; k < NTAUS; k++) {
                        const double *students[2] = {zs, wrong};

                        for (int st = 0; st < 2; st++) {
                                kdl_split_sample r;
                                double masked, vals[10];

                                assert_int_equal(kdl_split_eval(zt, students[st], C_, 3, taus[k],
                                                                &o, work, &r),
                                                 0);
                                vals[0] = r.kl;
                                vals[1] = r.tckd;
                                vals[2] = r.nckd;
                                vals[3] = r.residual;
                                vals[4] = r.pt_y;
                                vals[5] = r.ps_y;
                                vals[6] = r.omega;
                                vals[7] = r.eps;
                                vals[8] = r.nt_entropy;
                                vals[9] = r.pt_rest;
                                for (int v = 0; v < 10; v++)
                                        assert_true(isfinite(vals[v]));
                                assert_close(r.kl, r.tckd + r.pt_rest * r.nckd, 1e-12, 1e-12);
                                /* The non-target teacher is uniform. */
                                assert_close(r.nt_entropy, 1.0, 1e-12, 0.0);
                                if (fabs(taus[k] - 1.0) < 1e-300 && mag < 101.0) {
                                        assert_true(r.pt_y >= 1.0); /* rounds to 1 */
                                        /* 1 - p^t_y = 6 e^-200 > 0 from the log domain. */
                                        assert_close(r.pt_rest, 6.0 * exp(-200.0), 1e-12, 0.0);
                                }
                                if (st == 1) {
                                        assert_true(r.omega_clipped);
                                        assert_close(r.omega, o.omega_max, 0.0, 0.0);
                                }
                                if (mag * 2.0 / taus[k] < 700.0) {
                                        assert_int_equal(kdl_split_nckd_masked(zt, students[st], C_,
                                                                               3, taus[k], &masked),
                                                         0);
                                        assert_true(isfinite(masked));
                                }
                        }
                }
        }
}

/* ---- Near certainty ------------------------------------------------------------ */

/* log-softmax of z/τ over the classes j != @skip (@skip >= @c: all) in long
 * double, into out[c] (out[skip] unused): the normaliser is max +
 * log1pl(Σ_{j != argmax} e^(z_j/τ - max)), so that log p of the argmax is
 * -log1pl(...) itself, not a difference of two numbers near z/τ. */
static void log_softmax_ld(const double *z, size_t c, size_t skip, double tau, long double *out)
{
        long double m = -INFINITY, rest = 0.0L;
        size_t am = SIZE_MAX;

        for (size_t j = 0; j < c; j++)
                if (j != skip && (am == SIZE_MAX || (long double) z[j] / tau > m)) {
                        m = (long double) z[j] / tau;
                        am = j;
                }
        for (size_t j = 0; j < c; j++)
                if (j != skip && j != am)
                        rest += expl((long double) z[j] / tau - m);
        for (size_t j = 0; j < c; j++)
                out[j] = j == am ? -log1pl(rest) : ((long double) z[j] / tau - m) - log1pl(rest);
}

/* Σ p (log p - log q) over j != @skip, the textbook form, in long double. */
static long double kl_ld(const long double *lp, const long double *lq, size_t c, size_t skip)
{
        long double r = 0.0L;

        for (size_t j = 0; j < c; j++)
                if (j != skip)
                        r += expl(lp[j]) * (lp[j] - lq[j]);
        return r;
}

/* Both models near-certain: a target margin of 20..40 in z/τ, the student
 * within about 0.5 of the teacher in every logit, so KL is 1e-8..1e-18.
 * Against a long double reference (64-bit significand: 3 more digits than
 * double) every KL-type value keeps 12 digits, and the identity
 * KL = TCKD + (1 - p^t_y) NCKD holds to 1e-12 of KL.  Forming log p_y as
 * z_y/τ - LSE(z/τ) in double fails here (KL twice its value on the first
 * sample). */
static void test_near_certain_identity(void **state)
{
        kdl_test_rng rng = {17};
        kdl_split_opts o;
        double zt[C_], zs[C_];

        (void) state;
        if (LDBL_MANT_DIG < 64)
                skip(); /* no reference more precise than double */
        kdl_split_opts_init(&o);
        for (int rep = 0; rep < 200; rep++) {
                size_t y = (size_t) rep % C_;
                double tau = rep % 2 ? 4.0 : 1.0, top = -INFINITY;

                for (size_t j = 0; j < C_; j++) {
                        zt[j] = kdl_test_normal(&rng);
                        top = fmax(top, zt[j]);
                }
                zt[y] = top + 20.0 + 20.0 * kdl_test_uniform(&rng);
                for (size_t j = 0; j < C_; j++) {
                        zt[j] *= tau;
                        zs[j] = zt[j] + 0.5 * tau * kdl_test_normal(&rng);
                }
                {
                        long double lpt[C_], lps[C_], lht[C_], lhs[C_], rt = 0.0L, rs = 0.0L;
                        long double rkl, rtckd, rnckd;
                        kdl_split_sample r;

                        log_softmax_ld(zt, C_, SIZE_MAX, tau, lpt);
                        log_softmax_ld(zs, C_, SIZE_MAX, tau, lps);
                        log_softmax_ld(zt, C_, y, tau, lht);
                        log_softmax_ld(zs, C_, y, tau, lhs);
                        for (size_t j = 0; j < C_; j++)
                                if (j != y) {
                                        rt += expl(lpt[j]);
                                        rs += expl(lps[j]);
                                }
                        rkl = kl_ld(lpt, lps, C_, SIZE_MAX);
                        rtckd = expl(lpt[y]) * (lpt[y] - lps[y]) + rt * (logl(rt) - logl(rs));
                        rnckd = kl_ld(lht, lhs, C_, y);

                        assert_int_equal(kdl_split_eval(zt, zs, C_, y, tau, &o, work, &r), 0);
                        assert_true(r.kl > 0.0 && r.kl < 1e-7 * tau * tau);
                        assert_close(r.kl, (double) (tau * tau * rkl), 1e-12, 0.0);
                        assert_close(r.tckd, (double) (tau * tau * rtckd), 1e-12, 0.0);
                        assert_close(r.nckd, (double) (tau * tau * rnckd), 1e-12, 0.0);
                        assert_close(r.pt_rest, (double) rt, 1e-12, 0.0);
                        assert_close(r.gap, (double) fabsl(rs - rt), 1e-12, 0.0);
                        assert_true(fabs(r.residual) <= 1e-12 * r.kl);
                        assert_close(r.kl, r.tckd + r.pt_rest * r.nckd, 1e-12, 0.0);
                }
        }
}

/* ---- Streaming -------------------------------------------------------------- */

static void accumulate_blocks(kdl_split_state *s, kdl_split_instance_state *inst, const double *zt,
                              const double *zs, const int64_t *y, size_t r0, size_t r1,
                              size_t block, size_t c)
{
        for (size_t a = r0; a < r1; a += block) {
                size_t b = a + block < r1 ? a + block : r1;
                kdl_tensor tt = kdl_tensor_wrap((double *) zt + a * c, 2, (size_t[]){b - a, c});
                kdl_tensor ts = kdl_tensor_wrap((double *) zs + a * c, 2, (size_t[]){b - a, c});

                if (s)
                        assert_int_equal(kdl_split_accumulate(s, &tt, &ts, y + a), 0);
                if (inst)
                        assert_int_equal(kdl_split_instance_accumulate(inst, &tt, &ts, y + a, NULL),
                                         0);
        }
}

static void assert_dist_equal(const kdl_split_dist *a, const kdl_split_dist *b)
{
        assert_int_equal(a->n, b->n);
        assert_close(a->mean, b->mean, 1e-12, 1e-15);
        assert_close(a->std, b->std, 1e-10, 1e-15);
        assert_close(a->min, b->min, 0.0, 0.0);
        assert_close(a->max, b->max, 0.0, 0.0);
        for (int q = 0; q < KDL_SPLIT_NQUANTILES; q++)
                assert_close(a->quantile[q], b->quantile[q], 1e-12, 1e-15);
        assert_int_equal(a->hist.nbins, b->hist.nbins);
        assert_memory_equal(a->hist.count, b->hist.count, a->hist.nbins * sizeof(size_t));
}

static void test_merge_equals_sequential(void **state)
{
        static double zt[N_ * C_], zs[N_ * C_], wt[C_ * 5], ws[C_ * 3];
        static int64_t y[N_];
        kdl_split_opts o = opts_all_taus();
        kdl_split_state *all = NULL, *a = NULL, *b = NULL;
        kdl_split_instance_state *iall = NULL, *ia = NULL, *ib = NULL;
        kdl_split_result *r1 = NULL, *r2 = NULL;
        kdl_test_rng rng = {17};
        kdl_tensor tw, sw;

        (void) state;
        make_data(21, N_, C_, zt, zs, y);
        fill_logits(&rng, wt, C_ * 5, 1.0);
        fill_logits(&rng, ws, C_ * 3, 1.0);
        tw = kdl_tensor_wrap(wt, 2, (size_t[]){C_, 5});
        sw = kdl_tensor_wrap(ws, 2, (size_t[]){C_, 3});

        assert_int_equal(kdl_split_state_new(C_, &o, &all), 0);
        assert_int_equal(kdl_split_state_new(C_, &o, &a), 0);
        assert_int_equal(kdl_split_state_new(C_, &o, &b), 0);
        accumulate_blocks(all, NULL, zt, zs, y, 0, N_, 37, C_);
        accumulate_blocks(a, NULL, zt, zs, y, 0, 101, 50, C_);
        accumulate_blocks(b, NULL, zt, zs, y, 101, N_, 13, C_);
        assert_int_equal(kdl_split_merge(a, b), 0);
        assert_int_equal(kdl_split_state_count(a), N_);

        /* Second pass, from each first pass, with yet another split. */
        assert_int_equal(kdl_split_instance_state_new(all, &iall), 0);
        assert_int_equal(kdl_split_instance_state_new(a, &ia), 0);
        assert_int_equal(kdl_split_instance_state_new(a, &ib), 0);
        accumulate_blocks(NULL, iall, zt, zs, y, 0, N_, N_, C_);
        accumulate_blocks(NULL, ia, zt, zs, y, 150, N_, 7, C_);
        accumulate_blocks(NULL, ib, zt, zs, y, 0, 150, 64, C_);
        assert_int_equal(kdl_split_instance_merge(ia, ib), 0);

        assert_int_equal(kdl_split_finalize(all, iall, NULL, &tw, &sw, &r1), 0);
        /* p̄^t_y of the merged first pass may differ from the sequential one
         * in the last bit; each second pass must pair with its own first. */
        assert_int_equal(kdl_split_finalize(a, ia, NULL, &tw, &sw, &r2), 0);

        assert_int_equal(r1->n, N_);
        assert_memory_equal(r1->class_count, r2->class_count, C_ * sizeof(size_t));
        assert_int_equal(r1->teacher_correct, r2->teacher_correct);
        assert_int_equal(r1->student_correct, r2->student_correct);
        for (size_t k = 0; k < NTAUS; k++) {
                const kdl_split_tau_result *p = &r1->tau[k], *q = &r2->tau[k];

                assert_close(q->kl, p->kl, 1e-12, 0.0);
                assert_close(q->tckd, p->tckd, 1e-12, 0.0);
                assert_close(q->nckd, p->nckd, 1e-12, 0.0);
                assert_close(q->nckd_coupled, p->nckd_coupled, 1e-12, 0.0);
                assert_close(q->residual_max, p->residual_max, 0.0, 0.0);
                assert_close(q->explicit_share, p->explicit_share, 1e-12, 0.0);
                assert_int_equal(q->omega_clipped, p->omega_clipped);
                assert_dist_equal(&q->pt_y, &p->pt_y);
                assert_dist_equal(&q->ps_y, &p->ps_y);
                assert_dist_equal(&q->gap, &p->gap);
                assert_dist_equal(&q->omega, &p->omega);
                assert_dist_equal(&q->eps, &p->eps);
                assert_dist_equal(&q->nt_entropy, &p->nt_entropy);
                for (size_t e = 0; e < C_ * C_; e++)
                        assert_close(q->confusion[e], p->confusion[e], 1e-12, 1e-15);
                for (size_t e = 0; e < C_; e++) {
                        assert_close(q->class_kl[e], p->class_kl[e], 1e-12, 0.0);
                        assert_close(q->class_tckd[e], p->class_tckd[e], 1e-12, 0.0);
                        assert_close(q->class_nckd[e], p->class_nckd[e], 1e-12, 0.0);
                }
                assert_close(q->pearson_confusion_student, p->pearson_confusion_student, 1e-10,
                             1e-14);
                assert_true(q->has_instance && p->has_instance);
                assert_close(q->pt_mean, p->pt_mean, 1e-13, 0.0);
                assert_int_equal(q->w.n, N_);
                assert_close(q->w.mean, p->w.mean, 1e-10, 1e-14);
                assert_close(q->w.std, p->w.std, 1e-9, 1e-14);
                assert_close(q->pearson_w_pt, p->pearson_w_pt, 1e-9, 1e-14);
                assert_int_equal(q->w_guarded, p->w_guarded);
                assert_int_equal(q->w_above_one, p->w_above_one);
                assert_int_equal(q->w_nonpositive, p->w_nonpositive);
                assert_int_equal(q->w_unguarded_dist.n, N_ - q->w_guarded);
                assert_int_equal(p->w_unguarded_dist.n, N_ - p->w_guarded);
                for (int i = 0; i < KDL_SPLIT_NQUANTILES; i++) {
                        assert_close(q->w.quantile[i], p->w.quantile[i], 1e-9, 1e-12);
                        assert_close(q->w_unguarded_dist.quantile[i],
                                     p->w_unguarded_dist.quantile[i], 1e-9, 1e-12);
                }
        }

        kdl_split_result_free(r1);
        kdl_split_result_free(r2);
        kdl_split_instance_state_free(iall);
        kdl_split_instance_state_free(ia);
        kdl_split_instance_state_free(ib);
        kdl_split_state_free(all);
        kdl_split_state_free(a);
        kdl_split_state_free(b);
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *) a, y = *(const double *) b;

        return (x > y) - (x < y);
}

/* The histogram quantile lies in the bin of the ceil(q n)-th smallest value:
 * within @lin_width of it (linear bins), or for w_n (@lin_width 0) within
 * the bound metrics/split.h states: 2^(1/64) - 1 relative, 2^(L+1) absolute. */
static void assert_quantiles(const kdl_split_dist *d, double *v, size_t n, double lin_width)
{
        qsort(v, n, sizeof(*v), cmp_double);
        for (int q = 0; q < KDL_SPLIT_NQUANTILES; q++) {
                double r = kdl_split_quantile_levels[q] * (double) n;
                double exact = v[(size_t) ceil(r) - 1];

                if (lin_width > 0.0)
                        assert_close(d->quantile[q], exact, 0.0, lin_width);
                else
                        assert_close(d->quantile[q], exact, exp2(1.0 / 64.0) - 1.0,
                                     exp2(KDL_SPLIT_W_LOG2_MIN + 1));
        }
}

static void test_accumulate_matches_per_sample(void **state)
{
        enum { N = 2000, C = 5 };
        static double zt[N * C], zs[N * C], pt[N], ps[N], om[N], w[N], wout[N * 2];
        static int64_t y[N];
        kdl_split_opts o;
        kdl_split_state *s = NULL;
        kdl_split_instance_state *inst = NULL;
        kdl_split_result *r = NULL;
        double conf[C][C] = {{0}}, cnt[C] = {0}, ckl[C][3];
        double skl = 0.0, stckd = 0.0, scoup = 0.0, spt = 0.0;

        (void) state;
        kdl_split_opts_init(&o);
        o.ntaus = 2;
        o.taus[0] = 1.0;
        o.taus[1] = 3.0;
        make_data(22, N, C, zt, zs, y);
        assert_int_equal(kdl_split_state_new(C, &o, &s), 0);
        accumulate_blocks(s, NULL, zt, zs, y, 0, N, 256, C);
        assert_int_equal(kdl_split_instance_state_new(s, &inst), 0);
        {
                kdl_tensor tt = kdl_tensor_wrap(zt, 2, (size_t[]){N, C});
                kdl_tensor ts = kdl_tensor_wrap(zs, 2, (size_t[]){N, C});

                assert_int_equal(kdl_split_instance_accumulate(inst, &tt, &ts, y, wout), 0);
        }
        assert_int_equal(kdl_split_finalize(s, inst, NULL, NULL, NULL, &r), 0);
        assert_false(r->has_head_teacher);
        assert_true(isnan(r->cka_heads));

        for (size_t k = 0; k < 2; k++) {
                const kdl_split_tau_result *t = &r->tau[k];
                double tau = o.taus[k], mw = 0.0, mp = 0.0, sww = 0.0, spp = 0.0, swp = 0.0;
                size_t above = 0, guarded = 0, nonpositive = 0;

                skl = stckd = scoup = spt = 0.0;
                memset(conf, 0, sizeof(conf));
                memset(cnt, 0, sizeof(cnt));
                memset(ckl, 0, sizeof(ckl));
                for (size_t i = 0; i < N; i++) {
                        double rkl, rtckd, rnckd, rpty, p[C], q[C];

                        reference(zt + i * C, zs + i * C, C, (size_t) y[i], tau, &rkl, &rtckd,
                                  &rnckd, &rpty);
                        ckl[y[i]][0] += rkl;
                        ckl[y[i]][1] += rtckd;
                        ckl[y[i]][2] += rnckd;
                        skl += rkl;
                        stckd += rtckd;
                        scoup += (1.0 - rpty) * rnckd;
                        softmax(zt + i * C, C, tau, p);
                        softmax(zs + i * C, C, tau, q);
                        for (size_t j = 0; j < C; j++)
                                conf[y[i]][j] += p[j];
                        cnt[y[i]] += 1.0;
                        pt[i] = p[y[i]];
                        ps[i] = q[y[i]];
                        om[i] = fmin(p[y[i]] / q[y[i]], o.omega_max);
                        spt += pt[i];
                }
                for (size_t i = 0; i < N; i++) {
                        double p[C], q[C], num, den;

                        softmax(zt + i * C, C, tau, p);
                        softmax(zs + i * C, C, tau, q);
                        num = 1.0 - q[y[i]] - o.lambda * (1.0 - p[y[i]]);
                        den = 1.0 - q[y[i]] - o.lambda * (1.0 - spt / N);
                        if (den < o.w_eps) {
                                den = o.w_eps;
                                guarded++;
                        }
                        w[i] = num / den;
                        assert_close(wout[i * 2 + k], w[i], 1e-9, 1e-12);
                        above += w[i] > 1.0;
                        nonpositive += w[i] <= 0.0;
                        /* w_n > 1 exactly when p^t_y > p̄^t_y
                         * (docs/split.md#instance-rescaling-weights), unguarded. */
                        if (den > o.w_eps)
                                assert_true((w[i] > 1.0) == (p[y[i]] > spt / N));
                        mw += w[i];
                        mp += pt[i];
                }
                mw /= N;
                mp /= N;
                for (size_t i = 0; i < N; i++) {
                        sww += (w[i] - mw) * (w[i] - mw);
                        spp += (pt[i] - mp) * (pt[i] - mp);
                        swp += (w[i] - mw) * (pt[i] - mp);
                }

                assert_close(t->tau, tau, 0.0, 0.0);
                assert_close(t->kl, skl / N, 1e-11, 0.0);
                assert_close(t->tckd, stckd / N, 1e-9, 0.0);
                assert_close(t->nckd_coupled, scoup / N, 1e-11, 0.0);
                assert_close(t->explicit_share + t->implicit_share, 1.0, 1e-12, 0.0);
                assert_true(t->residual_max < 1e-12);
                assert_close(t->pt_y.mean, spt / N, 1e-12, 0.0);
                assert_close(t->pt_mean, spt / N, 1e-12, 0.0);
                assert_close(t->eps.mean, o.lambda * (1.0 - spt / N) * C / (C - 1.0), 1e-11, 0.0);
                for (size_t i = 0; i < C; i++)
                        for (size_t j = 0; j < C; j++)
                                assert_close(t->confusion[i * C + j], conf[i][j] / cnt[i], 1e-12,
                                             1e-15);
                assert_int_equal(t->confusion_pairs, C * (C - 1) / 2);
                assert_true(isnan(t->pearson_confusion_student));
                /* Per class: the means over the samples of each label. */
                for (size_t i = 0; i < C; i++) {
                        assert_true(cnt[i] > 0.0);
                        assert_close(t->class_kl[i], ckl[i][0] / cnt[i], 1e-11, 0.0);
                        assert_close(t->class_tckd[i], ckl[i][1] / cnt[i], 1e-9, 0.0);
                        assert_close(t->class_nckd[i], ckl[i][2] / cnt[i], 1e-11, 0.0);
                }

                assert_true(t->has_instance);
                assert_int_equal(t->w_guarded, guarded);
                assert_int_equal(t->w_above_one, above);
                assert_int_equal(t->w_nonpositive, nonpositive);
                assert_true(nonpositive > N / 20); /* negative w_n occur */
                assert_close(t->w.mean, mw, 1e-9, 1e-12);
                assert_close(t->w.std, sqrt(sww / N), 1e-9, 1e-12);
                assert_close(t->pearson_w_pt, swp / sqrt(sww * spp), 1e-9, 0.0);
                {
                        double ok_w[N], ok_p[N], m = 0.0, v = 0.0;
                        size_t nok = 0;

                        for (size_t i = 0; i < N; i++) {
                                double p[C], q[C];

                                softmax(zt + i * C, C, tau, p);
                                softmax(zs + i * C, C, tau, q);
                                if (1.0 - q[y[i]] - o.lambda * (1.0 - spt / N) >= o.w_eps) {
                                        ok_w[nok] = w[i];
                                        ok_p[nok++] = pt[i];
                                        m += w[i];
                                }
                        }
                        assert_int_equal(nok + guarded, N);
                        assert_true(guarded > 0 && nok > N / 4); /* both kinds occur */
                        m /= (double) nok;
                        for (size_t i = 0; i < nok; i++)
                                v += (ok_w[i] - m) * (ok_w[i] - m);
                        assert_close(t->w_unguarded, m, 1e-9, 1e-12);
                        assert_close(t->w_std_unguarded, sqrt(v / (double) nok), 1e-9, 1e-12);
                        assert_close(t->pearson_w_pt_unguarded, pearson(ok_w, ok_p, nok), 1e-9,
                                     0.0);
                }

                assert_quantiles(&t->pt_y, pt, N, 1.0 / (double) o.nbins);
                assert_quantiles(&t->ps_y, ps, N, 1.0 / (double) o.nbins);
                assert_quantiles(&t->omega, om, N, o.omega_max / (double) o.nbins);
                assert_quantiles(&t->w, w, N, 0.0);
                {
                        size_t total = 0;

                        for (size_t b = 0; b < t->w.hist.nbins; b++)
                                total += t->w.hist.count[b];
                        assert_int_equal(total, N);
                        assert_int_equal(t->w.hist.nbins, KDL_SPLIT_W_SLOTS);
                        for (size_t b = 0; b < t->w.hist.nbins; b++)
                                assert_true(t->w.hist.lo[b] <= t->w.hist.hi[b] &&
                                            (b == 0 || !(t->w.hist.lo[b] < t->w.hist.hi[b - 1] ||
                                                         t->w.hist.lo[b] > t->w.hist.hi[b - 1])));
                }
        }
        assert_true(r->teacher_correct > N / 2);
        kdl_split_result_free(r);
        kdl_split_instance_state_free(inst);
        kdl_split_state_free(s);
}

static void test_weight_guard(void **state)
{
        bool g = false;
        double w;

        (void) state;
        /* Denominator 1 - q_y - λ(1 - p̄) = 0.05 - 0.9*0.2 < 0: raised to eps. */
        w = kdl_split_weight(0.1, 0.05, 0.8, 0.9, 1e-3, &g);
        assert_true(g);
        assert_close(w, (0.05 - 0.09) / 1e-3, 1e-14, 0.0);
        w = kdl_split_weight(0.1, 0.5, 0.8, 0.9, 1e-3, &g);
        assert_false(g);
        assert_close(w, (0.5 - 0.09) / (0.5 - 0.18), 1e-14, 0.0);
        assert_close(kdl_split_weight(0.2, 0.5, 0.8, 0.9, 1e-3, NULL), 1.0, 1e-15, 0.0);
}

/* ---- Domain: heads ------------------------------------------------------------ */

/* Linear CKA in feature space (docs/cka.md#linear-cka), independent of the Gram form used
 * by split.c: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) after centring. */
static double cka_feature(const double *x, size_t n, size_t p, const double *y, size_t q)
{
        double xc[64 * 8], yc[64 * 8], yx = 0.0, xx = 0.0, yy = 0.0;

        for (size_t j = 0; j < p; j++) {
                double m = 0.0;

                for (size_t i = 0; i < n; i++)
                        m += x[i * p + j];
                for (size_t i = 0; i < n; i++)
                        xc[i * p + j] = x[i * p + j] - m / (double) n;
        }
        for (size_t j = 0; j < q; j++) {
                double m = 0.0;

                for (size_t i = 0; i < n; i++)
                        m += y[i * q + j];
                for (size_t i = 0; i < n; i++)
                        yc[i * q + j] = y[i * q + j] - m / (double) n;
        }
#define INNER(A, a, B, b, s)                                                                       \
        for (size_t u = 0; u < (a); u++)                                                           \
                for (size_t v = 0; v < (b); v++) {                                                 \
                        double t = 0.0;                                                            \
                        for (size_t i = 0; i < n; i++)                                             \
                                t += A[i * (a) + u] * B[i * (b) + v];                              \
                        s += t * t;                                                                \
                }
        INNER(yc, q, xc, p, yx);
        INNER(xc, p, xc, p, xx);
        INNER(yc, q, yc, q, yy);
#undef INNER
        return yx / (sqrt(xx) * sqrt(yy));
}

static double pearson(const double *x, const double *y, size_t n)
{
        double mx = 0.0, my = 0.0, sxx = 0.0, syy = 0.0, sxy = 0.0;

        for (size_t i = 0; i < n; i++) {
                mx += x[i];
                my += y[i];
        }
        mx /= (double) n;
        my /= (double) n;
        for (size_t i = 0; i < n; i++) {
                sxx += (x[i] - mx) * (x[i] - mx);
                syy += (y[i] - my) * (y[i] - my);
                sxy += (x[i] - mx) * (y[i] - my);
        }
        return sxy / sqrt(sxx * syy);
}

static void cosines(const double *w, size_t c, size_t d, double *s)
{
        for (size_t i = 0; i < c; i++)
                for (size_t j = 0; j < c; j++) {
                        double ij = 0.0, ii = 0.0, jj = 0.0;

                        for (size_t k = 0; k < d; k++) {
                                ij += w[i * d + k] * w[j * d + k];
                                ii += w[i * d + k] * w[i * d + k];
                                jj += w[j * d + k] * w[j * d + k];
                        }
                        s[i * c + j] = ij / (sqrt(ii) * sqrt(jj));
                }
}

static void test_heads_and_agreement(void **state)
{
        enum { C = 6, DT = 8, DS = 3 };
        static double zt[N_ * C], zs[N_ * C], wt[C * DT], ws[C * DS], rot[C * DT];
        static int64_t y[N_];
        double st[C * C], ss[C * C], xs[C * C], xt[C * C], xss[C * C], m[C * C];
        kdl_test_rng rng = {18};
        kdl_split_opts o;
        kdl_split_state *s = NULL;
        kdl_split_result *r = NULL;
        kdl_tensor tw = kdl_tensor_wrap(wt, 2, (size_t[]){C, DT});
        kdl_tensor sw = kdl_tensor_wrap(ws, 2, (size_t[]){C, DS});
        size_t np = 0;

        (void) state;
        kdl_split_opts_init(&o);
        make_data(23, N_, C, zt, zs, y);
        /* Class 5 gets no samples: its pairs drop out of the confusion agreement. */
        for (size_t i = 0; i < N_; i++)
                if (y[i] == 5)
                        y[i] = 0;
        fill_logits(&rng, wt, C * DT, 1.0);
        fill_logits(&rng, ws, C * DS, 1.0);

        assert_int_equal(kdl_split_state_new(C, &o, &s), 0);
        accumulate_blocks(s, NULL, zt, zs, y, 0, N_, 100, C);
        assert_int_equal(kdl_split_finalize(s, NULL, NULL, &tw, &sw, &r), 0);
        assert_true(r->has_head_teacher && r->has_head_student);
        assert_int_equal(r->d_teacher, DT);
        assert_int_equal(r->d_student, DS);
        assert_false(r->tau[0].has_instance);
        assert_int_equal(r->class_count[5], 0);
        assert_true(isnan(r->tau[0].confusion[5 * C + 1]));

        cosines(wt, C, DT, st);
        cosines(ws, C, DS, ss);
        for (size_t e = 0; e < C * C; e++) {
                assert_close(r->cos_teacher[e], st[e], 1e-13, 1e-15);
                assert_close(r->cos_student[e], ss[e], 1e-13, 1e-15);
        }
        for (size_t i = 0; i < C; i++)
                for (size_t j = 0; j < C; j++)
                        m[i * C + j] = r->tau[0].confusion[i * C + j];
        for (size_t i = 0; i < C; i++)
                for (size_t j = i + 1; j < C; j++) {
                        xt[np] = st[i * C + j];
                        xss[np] = ss[i * C + j];
                        np++;
                }
        assert_close(r->pearson_heads, pearson(xt, xss, np), 1e-12, 1e-14);
        assert_close(r->cka_heads, cka_feature(wt, C, DT, ws, DS), 1e-12, 0.0);
        np = 0;
        for (size_t i = 0; i < 5; i++)
                for (size_t j = i + 1; j < 5; j++) {
                        xs[np] = 0.5 * (m[i * C + j] + m[j * C + i]);
                        xt[np] = st[i * C + j];
                        xss[np] = ss[i * C + j];
                        np++;
                }
        assert_int_equal(r->tau[0].confusion_pairs, np);
        assert_close(r->tau[0].pearson_confusion_student, pearson(xs, xss, np), 1e-12, 1e-14);
        assert_close(r->tau[0].pearson_confusion_teacher, pearson(xs, xt, np), 1e-12, 1e-14);
        kdl_split_result_free(r);
        r = NULL;

        /* CKA is invariant to an orthogonal map and a scaling of the student:
         * W_s = 3 W_t Q with Q a rotation in the (0, 1) plane. */
        for (size_t i = 0; i < C; i++)
                for (size_t k = 0; k < DT; k++)
                        rot[i * DT + k] = 3.0 * wt[i * DT + k];
        for (size_t i = 0; i < C; i++) {
                double a = wt[i * DT], b = wt[i * DT + 1];

                rot[i * DT] = 3.0 * (0.6 * a - 0.8 * b);
                rot[i * DT + 1] = 3.0 * (0.8 * a + 0.6 * b);
        }
        {
                kdl_tensor rw = kdl_tensor_wrap(rot, 2, (size_t[]){C, DT});

                assert_int_equal(kdl_split_finalize(s, NULL, NULL, &tw, &rw, &r), 0);
                assert_close(r->cka_heads, 1.0, 1e-13, 0.0);
                assert_close(r->pearson_heads, 1.0, 1e-13, 0.0);
                kdl_split_result_free(r);
        }
        kdl_split_state_free(s);
}

/* ---- Domain: without C x C matrices -------------------------------------------- */

/* The blocks of a blocked state over the samples @zt, @y (@n of them): the
 * first block fed with pass 0, the others one pass each, in row blocks of 53. */
static kdl_split_blocks *run_blocks(const kdl_split_opts *o, const kdl_split_state *s,
                                    const double *zt, const int64_t *y, size_t n, size_t c,
                                    const kdl_tensor *wt, const kdl_tensor *ws)
{
        kdl_split_blocks *b = NULL;
        int more;

        assert_int_equal(
                kdl_split_blocks_new(c, wt ? wt->shape[1] : 0, ws ? ws->shape[1] : 0, o, &b), 0);
        do {
                for (size_t a = 0; a < n; a += 53) {
                        size_t e = a + 53 < n ? a + 53 : n;
                        kdl_tensor tt =
                                kdl_tensor_wrap((double *) zt + a * c, 2, (size_t[]){e - a, c});

                        assert_int_equal(kdl_split_blocks_accumulate(b, &tt, y + a), 0);
                }
                more = kdl_split_blocks_next(b, s, wt, ws);
                assert_true(more == 0 || more == 1);
        } while (more);
        return b;
}

/* The options of a blocked run whose budget leaves @nblocks blocks or more. */
static kdl_split_opts blocked_opts(size_t c, size_t dt, size_t ds, size_t nblocks)
{
        kdl_split_opts o = opts_all_taus();
        kdl_split_plan p;

        o.ntaus = 2;
        o.taus[0] = 1.0;
        o.taus[1] = 4.0;
        o.top_pairs = 37;
        o.domain = KDL_SPLIT_DOMAIN_BLOCKED;
        assert_int_equal(kdl_split_plan_init(&p, c, dt, ds, &o), 0);
        assert_true(p.fits && p.nblocks == 1);
        o.memory = p.least_bytes; /* the fewest bytes: KDL_SPLIT_MAX_BLOCKS blocks or near */
        assert_int_equal(kdl_split_plan_init(&p, c, dt, ds, &o), 0);
        assert_true(p.fits && p.nblocks >= nblocks && p.nblocks <= KDL_SPLIT_MAX_BLOCKS);
        assert_true(p.bytes <= o.memory);
        o.memory--;
        assert_int_equal(kdl_split_plan_init(&p, c, dt, ds, &o), 0);
        assert_false(p.fits);
        o.memory++;
        return o;
}

/* The blocked mode against the full one on the same samples (C = 40..200,
 * a class without samples, heads of other widths): every domain value to
 * 1e-10, the confused pairs bit for bit (both sum p^t in the same order),
 * and the pairs against a sort of every cell of the full sums. */
static void test_blocked_equals_full(void **state)
{
        static const size_t cs[] = {40, 97, 200};
        enum { N = 700, DT = 9, DS = 5 };

        (void) state;
        for (size_t q = 0; q < sizeof(cs) / sizeof(cs[0]); q++) {
                size_t c = cs[q];
                double *zt = malloc(N * c * sizeof(double)), *zs = malloc(N * c * sizeof(double));
                double *wt = malloc(c * DT * sizeof(double)), *ws = malloc(c * DS * sizeof(double));
                int64_t *y = malloc(N * sizeof(int64_t));
                kdl_tensor tw = kdl_tensor_wrap(wt, 2, (size_t[]){c, DT});
                kdl_tensor sw = kdl_tensor_wrap(ws, 2, (size_t[]){c, DS});
                kdl_split_opts ob = blocked_opts(c, DT, DS, 3), of = ob;
                kdl_split_state *sf = NULL, *sb = NULL;
                kdl_split_blocks *b;
                kdl_split_result *rf = NULL, *rb = NULL;
                kdl_test_rng rng = {40 + q};

                make_data(31 + q, N, c, zt, zs, y);
                for (size_t i = 0; i < N; i++) /* class 3 has no sample */
                        if (y[i] == 3)
                                y[i] = 4;
                fill_logits(&rng, wt, c * DT, 1.0);
                fill_logits(&rng, ws, c * DS, 1.0);
                for (size_t i = 0; i < c; i++) /* a shared direction: cosines of mean 0.3 */
                        wt[i * DT] += 1.5;
                of.domain = KDL_SPLIT_DOMAIN_FULL;
                of.memory = KDL_SPLIT_DEFAULT_MEMORY;

                assert_int_equal(kdl_split_state_new(c, &of, &sf), 0);
                assert_int_equal(kdl_split_state_new(c, &ob, &sb), 0);
                accumulate_blocks(sf, NULL, zt, zs, y, 0, N, 61, c);
                accumulate_blocks(sb, NULL, zt, zs, y, 0, N, 61, c);
                b = run_blocks(&ob, sb, zt, y, N, c, &tw, &sw);
                assert_true(kdl_split_blocks_count(b) >= 3);
                assert_int_equal(kdl_split_finalize(sf, NULL, NULL, &tw, &sw, &rf), 0);
                assert_int_equal(kdl_split_finalize(sb, NULL, b, &tw, &sw, &rb), 0);

                assert_int_equal(rf->opts.domain, KDL_SPLIT_DOMAIN_FULL);
                assert_int_equal(rb->opts.domain, KDL_SPLIT_DOMAIN_BLOCKED);
                assert_int_equal(rb->domain_blocks, kdl_split_blocks_count(b));
                assert_null(rb->cos_teacher);
                assert_null(rb->cos_student);
                assert_close(rb->pearson_heads, rf->pearson_heads, 0.0, 1e-10);
                assert_close(rb->cka_heads, rf->cka_heads, 0.0, 1e-10);
                for (size_t k = 0; k < 2; k++) {
                        const kdl_split_tau_result *f = &rf->tau[k], *x = &rb->tau[k];
                        double *cells = malloc(c * c * sizeof(double));
                        size_t ncells = 0;

                        assert_null(x->confusion);
                        assert_int_equal(x->confusion_pairs, f->confusion_pairs);
                        assert_close(x->pearson_confusion_teacher, f->pearson_confusion_teacher,
                                     0.0, 1e-10);
                        assert_close(x->pearson_confusion_student, f->pearson_confusion_student,
                                     0.0, 1e-10);
                        assert_int_equal(x->ntop, 37);
                        assert_int_equal(f->ntop, 37);
                        assert_memory_equal(x->top, f->top, 37 * sizeof(kdl_split_pair));
                        /* Against every off-diagonal soft count n_i M_ij, sorted. */
                        for (size_t i = 0; i < c; i++)
                                for (size_t j = 0; j < c; j++)
                                        if (j != i && rf->class_count[i])
                                                cells[ncells++] = f->confusion[i * c + j] *
                                                                  (double) rf->class_count[i];
                        qsort(cells, ncells, sizeof(double), cmp_double);
                        for (size_t t = 0; t < 37; t++) {
                                assert_true(x->top[t].i != x->top[t].j);
                                assert_close(x->top[t].mass, cells[ncells - 1 - t], 1e-14, 0.0);
                                assert_close(x->top[t].confusion,
                                             f->confusion[x->top[t].i * c + x->top[t].j], 1e-15,
                                             0.0);
                        }
                        free(cells);
                }
                kdl_split_result_free(rf);
                kdl_split_result_free(rb);
                kdl_split_blocks_free(b);
                kdl_split_state_free(sf);
                kdl_split_state_free(sb);
                free(zt);
                free(zs);
                free(wt);
                free(ws);
                free(y);
        }
}

/* Ties in the soft counts: a uniform teacher gives every cell of a row the
 * same mass; the pairs then come by the smaller i, then j, in both modes. */
static void test_confused_pairs_ties(void **state)
{
        enum { C = 12, N = 90 };
        static double zt[N * C], zs[N * C];
        static int64_t y[N];
        kdl_split_opts o = opts_all_taus();
        kdl_split_state *s = NULL;
        kdl_split_blocks *b;
        kdl_split_result *r = NULL;

        (void) state;
        for (size_t i = 0; i < N; i++) /* class 7: 30 samples, 2: 25, 8 to 11: 8 or 9 */
                y[i] = i < 30 ? 7 : i < 55 ? 2 : (int64_t) (8 + i % 4);
        for (size_t i = 0; i < N * C; i++)
                zs[i] = (double) (i % 7);
        o.ntaus = 1;
        o.top_pairs = 15;
        for (int mode = 0; mode < 2; mode++) {
                o.domain = mode ? KDL_SPLIT_DOMAIN_BLOCKED : KDL_SPLIT_DOMAIN_FULL;
                o.memory = mode ? blocked_opts(C, 0, 0, 2).memory : KDL_SPLIT_DEFAULT_MEMORY;
                assert_int_equal(kdl_split_state_new(C, &o, &s), 0);
                accumulate_blocks(s, NULL, zt, zs, y, 0, N, 17, C);
                b = mode ? run_blocks(&o, s, zt, y, N, C, NULL, NULL) : NULL;
                assert_int_equal(kdl_split_finalize(s, NULL, b, NULL, NULL, &r), 0);
                assert_int_equal(r->tau[0].ntop, 15);
                for (size_t t = 0; t < 15; t++) {
                        /* row 7 (30 samples), then row 2 (25), j ascending without i */
                        size_t i = t < 11 ? 7 : 2,
                               j = t < 11 ? (t < 7 ? t : t + 1) : (t < 13 ? t - 11 : t - 10);

                        assert_int_equal(r->tau[0].top[t].i, i);
                        assert_int_equal(r->tau[0].top[t].j, j);
                        assert_close(r->tau[0].top[t].confusion, 1.0 / C, 1e-15, 0.0);
                }
                assert_true(isnan(r->tau[0].pearson_confusion_teacher));
                kdl_split_result_free(r);
                kdl_split_blocks_free(b);
                kdl_split_state_free(s);
        }
}

/* Fail the k-th allocation of the blocked mode (its blocks, every block's
 * end, finalize with both heads) for k = 0, 1, ... until none fails: each
 * run ends in -ENOMEM, cleanly, or succeeds. */
static void test_blocked_out_of_memory(void **state)
{
        enum { C = 30, N = 200, DT = 4, DS = 3 };
        static double zt[N * C], zs[N * C], wt[C * DT], ws[C * DS];
        static int64_t y[N];
        kdl_tensor tw = kdl_tensor_wrap(wt, 2, (size_t[]){C, DT});
        kdl_tensor sw = kdl_tensor_wrap(ws, 2, (size_t[]){C, DS});
        kdl_tensor tt = kdl_tensor_wrap(zt, 2, (size_t[]){N, C});
        kdl_split_opts o = blocked_opts(C, DT, DS, 2);
        kdl_split_state *s = NULL;
        kdl_test_rng rng = {77};
        bool fired = true;
        long k;

        (void) state;
        make_data(78, N, C, zt, zs, y);
        fill_logits(&rng, wt, C * DT, 1.0);
        fill_logits(&rng, ws, C * DS, 1.0);
        assert_int_equal(kdl_split_state_new(C, &o, &s), 0);
        accumulate_blocks(s, NULL, zt, zs, y, 0, N, 64, C);
        for (k = 0; fired; k++) {
                kdl_split_blocks *b = NULL;
                kdl_split_result *r = NULL;
                int err, more = 1;

                kdl__alloc_fail_after(k);
                err = kdl_split_blocks_new(C, DT, DS, &o, &b);
                while (!err && more > 0) {
                        err = kdl_split_blocks_accumulate(b, &tt, y);
                        more = err ?: kdl_split_blocks_next(b, s, &tw, &sw);
                        err = more < 0 ? more : 0;
                }
                err = err ?: kdl_split_finalize(s, NULL, b, &tw, &sw, &r);
                fired = kdl__alloc_fail_after(-1) < 0;
                assert_int_equal(err, fired ? -ENOMEM : 0);
                assert_true(fired || (r && isfinite(r->cka_heads) && r->tau[0].ntop == 37));
                kdl_split_result_free(r);
                kdl_split_blocks_free(b);
        }
        assert_true(k > 10);
        kdl_split_state_free(s);
}

/* The plan: auto is full up to domain_max_c and within the budget, else
 * blocked; bytes grow with C; too small a budget does not fit; and the
 * errors of the blocks. */
static void test_plan_and_blocks_errors(void **state)
{
        double zt[N_ * C_], zs[N_ * C_];
        int64_t y[N_];
        kdl_split_opts o;
        kdl_split_plan p, p2;
        kdl_split_state *s = NULL, *other = NULL;
        kdl_split_blocks *b = NULL;
        kdl_split_result *r = NULL;
        kdl_tensor tt = kdl_tensor_wrap(zt, 2, (size_t[]){N_, C_});

        (void) state;
        kdl_split_opts_init(&o);
        assert_int_equal(o.domain, KDL_SPLIT_DOMAIN_AUTO);
        assert_int_equal(o.domain_max_c, 4096);
        assert_int_equal(o.top_pairs, 100);
        assert_int_equal(o.memory, (size_t) 4 << 30);
        assert_int_equal(kdl_split_plan_init(&p, 4096, 512, 256, &o), 0);
        assert_int_equal(p.domain, KDL_SPLIT_DOMAIN_FULL);
        assert_true(p.fits && p.bytes > (size_t) 8 * 4096 * 4096 * 8);
        assert_int_equal(kdl_split_plan_init(&p, 4097, 512, 256, &o), 0);
        assert_int_equal(p.domain, KDL_SPLIT_DOMAIN_BLOCKED);
        assert_true(p.fits && p.nblocks == 1);
        /* C = 32,000 within 4 GiB: two blocks (the two passes split reads anyway). */
        assert_int_equal(kdl_split_plan_init(&p, 32000, 256, 128, &o), 0);
        assert_true(p.fits && p.nblocks == 2 && p.bytes <= o.memory);
        assert_true(p.least_bytes < p.bytes);
        /* C = 152,000 does not fit 4 GiB in 8 passes. */
        assert_int_equal(kdl_split_plan_init(&p, 152000, 0, 0, &o), 0);
        assert_int_equal(p.domain, KDL_SPLIT_DOMAIN_BLOCKED);
        assert_false(p.fits);
        assert_true(p.least_bytes > o.memory && p.nblocks == KDL_SPLIT_MAX_BLOCKS);
        o.memory = p.least_bytes;
        assert_int_equal(kdl_split_plan_init(&p2, 152000, 0, 0, &o), 0);
        assert_true(p2.fits && p2.bytes == p.least_bytes);
        /* Over budget, full at C = 4096 falls to blocked; forced full does not fit. */
        o.memory = (size_t) 100 << 20;
        assert_int_equal(kdl_split_plan_init(&p, 4096, 0, 0, &o), 0);
        assert_int_equal(p.domain, KDL_SPLIT_DOMAIN_BLOCKED);
        assert_true(p.fits && p.nblocks > 1);
        o.domain = KDL_SPLIT_DOMAIN_FULL;
        assert_int_equal(kdl_split_plan_init(&p, 4096, 0, 0, &o), 0);
        assert_int_equal(p.domain, KDL_SPLIT_DOMAIN_FULL);
        assert_false(p.fits);
        assert_int_equal(kdl_split_state_new(4096, &o, &s), -KDL_ERANGE);
        assert_non_null(strstr(kdl_errmsg(), "GiB"));
        o.domain = KDL_SPLIT_DOMAIN_OFF;
        o.memory = (size_t) 200 << 20;
        assert_int_equal(kdl_split_plan_init(&p, 1000000, 4096, 4096, &o), 0);
        /* Linear in C: about 120 bytes per class (counts, scratch, the per-class sums). */
        assert_true(p.fits && p.bytes < ((size_t) 200 << 20));
        assert_int_equal(kdl_split_plan_init(&p, 1, 0, 0, &o), -KDL_ESHAPE);
        o.domain = (enum kdl_split_domain) 9;
        assert_int_equal(kdl_split_plan_init(&p, 10, 0, 0, &o), -KDL_ERANGE);

        /* Names. */
        for (int d = 0; d < KDL_SPLIT_DOMAIN_COUNT_; d++) {
                enum kdl_split_domain back;

                assert_int_equal(kdl_split_domain_parse(kdl_split_domain_name(d), &back), 0);
                assert_int_equal(back, d);
        }
        assert_int_equal(kdl_split_domain_parse("blocks", &o.domain), -KDL_EUSAGE);

        /* Blocks refused in other modes and over budget. */
        kdl_split_opts_init(&o);
        o.domain = KDL_SPLIT_DOMAIN_FULL;
        assert_int_equal(kdl_split_blocks_new(C_, 0, 0, &o, &b), -KDL_ERANGE);
        o.domain = KDL_SPLIT_DOMAIN_BLOCKED;
        o.memory = 1000;
        assert_int_equal(kdl_split_blocks_new(C_, 0, 0, &o, &b), -KDL_ERANGE);
        assert_non_null(strstr(kdl_errmsg(), "passes"));
        assert_null(b);

        /* A blocked state needs its blocks, all closed, of the same samples. */
        o = blocked_opts(C_, 0, 0, 2);
        make_data(5, N_, C_, zt, zs, y);
        assert_int_equal(kdl_split_state_new(C_, &o, &s), 0);
        accumulate_blocks(s, NULL, zt, zs, y, 0, N_, 50, C_);
        assert_int_equal(kdl_split_finalize(s, NULL, NULL, NULL, NULL, &r), -KDL_EMISSING);
        assert_int_equal(kdl_split_blocks_new(C_, 0, 0, &o, &b), 0);
        assert_int_equal(kdl_split_blocks_accumulate(b, &tt, y), 0);
        assert_int_equal(kdl_split_finalize(s, NULL, b, NULL, NULL, &r), -KDL_EMISSING);
        assert_int_equal(kdl_split_state_new(C_, &o, &other), 0); /* no sample */
        assert_int_equal(kdl_split_blocks_next(b, other, NULL, NULL), -KDL_EMISMATCH);
        y[3] = C_;
        assert_int_equal(kdl_split_blocks_accumulate(b, &tt, y), -KDL_ERANGE);
        y[3] = 0;
        zt[5] = NAN;
        assert_int_equal(kdl_split_blocks_accumulate(b, &tt, y), -KDL_ENONFINITE);
        zt[5] = 0.0;
        kdl_split_blocks_free(b);
        b = run_blocks(&o, s, zt, y, N_, C_, NULL, NULL);
        assert_int_equal(kdl_split_blocks_accumulate(b, &tt, y), -KDL_ERANGE);
        assert_int_equal(kdl_split_blocks_next(b, s, NULL, NULL), -KDL_ERANGE);
        assert_int_equal(kdl_split_finalize(other, NULL, b, NULL, NULL, &r), -KDL_EMISSING);
        assert_int_equal(kdl_split_finalize(s, NULL, b, NULL, NULL, &r), 0);
        assert_true(isnan(r->pearson_heads) && !r->has_head_teacher);
        kdl_split_result_free(r);
        kdl_split_blocks_free(b);
        kdl_split_blocks_free(NULL);
        kdl_split_state_free(other);
        kdl_split_state_free(s);

        /* Off: no domain value, no matrix, the heads only counted. */
        kdl_split_opts_init(&o);
        o.domain = KDL_SPLIT_DOMAIN_OFF;
        assert_int_equal(kdl_split_state_new(C_, &o, &s), 0);
        accumulate_blocks(s, NULL, zt, zs, y, 0, N_, 50, C_);
        {
                double w[C_ * 2] = {0};
                kdl_tensor tw = kdl_tensor_wrap(w, 2, (size_t[]){C_, 2});

                w[0] = 1.0;
                assert_int_equal(kdl_split_finalize(s, NULL, NULL, &tw, NULL, &r), 0);
        }
        assert_true(r->has_head_teacher && r->d_teacher == 2 && !r->has_head_student);
        assert_null(r->cos_teacher);
        assert_null(r->tau[0].confusion);
        assert_null(r->tau[0].top);
        assert_true(isnan(r->tau[0].pearson_confusion_teacher) && isnan(r->pearson_heads));
        kdl_split_result_free(r);
        kdl_split_state_free(s);
}

static void test_universe_entropy(void **state)
{
        kdl_split_opts o;
        kdl_split_sample r;
        double zt[4] = {5.0, 1.0, 1.0, 1.0}, zs[4] = {0.0, 0.3, -0.2, 0.1};
        double two_t[2] = {1.5, -0.25}, two_s[2] = {0.0, 0.5};

        (void) state;
        kdl_split_opts_init(&o);
        assert_int_equal(kdl_split_eval(zt, zs, 4, 0, 2.0, &o, work, &r), 0);
        assert_close(r.nt_entropy, 1.0, 1e-14, 0.0);
        assert_close(r.eps, 0.9 * r.pt_rest * 4.0 / 3.0, 1e-15, 0.0);
        zt[1] = 40.0; /* the non-target mass concentrates on class 1 */
        assert_int_equal(kdl_split_eval(zt, zs, 4, 0, 1.0, &o, work, &r), 0);
        assert_true(r.nt_entropy < 1e-12);
        /* C = 2: NCKD is 0 and the relative entropy is defined as 1. */
        assert_int_equal(kdl_split_eval(two_t, two_s, 2, 1, 1.5, &o, work, &r), 0);
        assert_close(r.nckd, 0.0, 0.0, 0.0);
        assert_close(r.nt_entropy, 1.0, 0.0, 0.0);
        assert_close(r.kl, r.tckd, 1e-15, 0.0);
}

/* ---- Errors ----------------------------------------------------------------- */

static void test_errors(void **state)
{
        static double zt[10 * C_], zs[10 * C_], w[C_ * 2];
        static int64_t y[10];
        kdl_split_opts o, bad;
        kdl_split_state *s = NULL, *other = NULL, *empty = NULL;
        kdl_split_instance_state *inst = NULL;
        kdl_split_result *r = (kdl_split_result *) 0x1;
        kdl_split_sample smp = {.kl = -7.0};
        kdl_tensor tt = kdl_tensor_wrap(zt, 2, (size_t[]){10, C_});
        kdl_tensor ts = kdl_tensor_wrap(zs, 2, (size_t[]){10, C_});
        kdl_tensor short_s = kdl_tensor_wrap(zs, 2, (size_t[]){9, C_});
        kdl_tensor wide = kdl_tensor_wrap(zs, 2, (size_t[]){5, 2 * C_});
        kdl_tensor flat = kdl_tensor_wrap(zs, 1, (size_t[]){10 * C_});
        kdl_tensor head_bad = kdl_tensor_wrap(w, 2, (size_t[]){2, C_});
        kdl_tensor head = kdl_tensor_wrap(w, 2, (size_t[]){C_, 2});
        double masked = -7.0;

        (void) state;
        kdl_split_opts_init(&o);
        make_data(24, 10, C_, zt, zs, y);
        for (size_t k = 0; k < C_ * 2; k++)
                w[k] = 0.1 * (double) k - 0.3;

        /* Options and shapes at creation. */
        assert_int_equal(kdl_split_state_new(1, &o, &s), -KDL_ESHAPE);
        bad = o;
        bad.taus[0] = 0.0;
        assert_int_equal(kdl_split_state_new(C_, &bad, &s), -KDL_ERANGE);
        bad.taus[0] = NAN;
        assert_int_equal(kdl_split_state_new(C_, &bad, &s), -KDL_ERANGE);
        bad = o;
        bad.ntaus = 0;
        assert_int_equal(kdl_split_state_new(C_, &bad, &s), -KDL_ERANGE);
        bad = o;
        bad.lambda = 1.5;
        assert_int_equal(kdl_split_state_new(C_, &bad, &s), -KDL_ERANGE);
        bad = o;
        bad.omega_max = -1.0;
        assert_int_equal(kdl_split_state_new(C_, &bad, &s), -KDL_ERANGE);
        bad = o;
        bad.nbins = 0;
        assert_int_equal(kdl_split_state_new(C_, &bad, &s), -KDL_ERANGE);
        assert_null(s);

        assert_int_equal(kdl_split_state_new(C_, &o, &s), 0);
        assert_int_equal(kdl_split_state_new(C_, &o, &empty), 0);

        /* Labels outside [0, C): the state is left unchanged. */
        y[4] = C_;
        assert_int_equal(kdl_split_accumulate(s, &tt, &ts, y), -KDL_ERANGE);
        assert_non_null(strstr(kdl_errmsg(), "block row 4"));
        y[4] = -1;
        assert_int_equal(kdl_split_accumulate(s, &tt, &ts, y), -KDL_ERANGE);
        y[4] = 0;
        assert_int_equal(kdl_split_state_count(s), 0);

        /* Shape mismatches. */
        assert_int_equal(kdl_split_accumulate(s, &tt, &short_s, y), -KDL_ESHAPE);
        assert_int_equal(kdl_split_accumulate(s, &wide, &wide, y), -KDL_ESHAPE);
        assert_int_equal(kdl_split_accumulate(s, &tt, &flat, y), -KDL_ESHAPE);

        /* NaN and Inf. */
        zs[3 * C_ + 2] = NAN;
        assert_int_equal(kdl_split_accumulate(s, &tt, &ts, y), -KDL_ENONFINITE);
        assert_non_null(strstr(kdl_errmsg(), "student logit in block row 3"));
        assert_int_equal(kdl_split_eval(zt + 3 * C_, zs + 3 * C_, C_, 0, 1.0, &o, work, &smp),
                         -KDL_ENONFINITE);
        assert_int_equal(kdl_split_nckd_masked(zt + 3 * C_, zs + 3 * C_, C_, 0, 1.0, &masked),
                         -KDL_ENONFINITE);
        zs[3 * C_ + 2] = 0.5;
        zt[0] = INFINITY;
        assert_int_equal(kdl_split_accumulate(s, &tt, &ts, y), -KDL_ENONFINITE);
        zt[0] = 0.5;
        assert_int_equal(kdl_split_state_count(s), 0);
        assert_close(smp.kl, -7.0, 0.0, 0.0);
        assert_close(masked, -7.0, 0.0, 0.0);

        /* Per-sample arguments. */
        assert_int_equal(kdl_split_eval(zt, zs, C_, C_, 1.0, &o, work, &smp), -KDL_ERANGE);
        assert_int_equal(kdl_split_eval(zt, zs, C_, 0, -1.0, &o, work, &smp), -KDL_ERANGE);
        assert_int_equal(kdl_split_eval(zt, zs, 1, 0, 1.0, &o, work, &smp), -KDL_ESHAPE);
        assert_close(smp.kl, -7.0, 0.0, 0.0);

        /* Empty states. */
        assert_int_equal(kdl_split_finalize(s, NULL, NULL, NULL, NULL, &r), -KDL_EMISSING);
        assert_int_equal(kdl_split_instance_state_new(s, &inst), -KDL_EMISSING);
        assert_null(inst);

        assert_int_equal(kdl_split_accumulate(s, &tt, &ts, y), 0);
        assert_int_equal(kdl_split_state_count(s), 10);

        /* Merge with different classes or options. */
        assert_int_equal(kdl_split_state_new(C_ + 1, &o, &other), 0);
        assert_int_equal(kdl_split_merge(s, other), -KDL_EMISMATCH);
        kdl_split_state_free(other);
        bad = o;
        bad.taus[0] = 2.0;
        assert_int_equal(kdl_split_state_new(C_, &bad, &other), 0);
        assert_int_equal(kdl_split_merge(s, other), -KDL_EMISMATCH);
        kdl_split_state_free(other);
        assert_int_equal(kdl_split_state_count(s), 10);

        /* A second pass that does not match the first. */
        assert_int_equal(kdl_split_instance_state_new(s, &inst), 0);
        assert_int_equal(kdl_split_finalize(s, inst, NULL, NULL, NULL, &r), -KDL_EMISMATCH);
        {
                kdl_tensor t5 = kdl_tensor_wrap(zt, 2, (size_t[]){5, C_});
                kdl_tensor s5 = kdl_tensor_wrap(zs, 2, (size_t[]){5, C_});
                double wbuf[5] = {-7, -7, -7, -7, -7};

                y[2] = 99;
                assert_int_equal(kdl_split_instance_accumulate(inst, &t5, &s5, y, wbuf),
                                 -KDL_ERANGE);
                assert_close(wbuf[0], -7.0, 0.0, 0.0);
                y[2] = 1;
                assert_int_equal(kdl_split_instance_accumulate(inst, &t5, &s5, y, wbuf), 0);
        }
        assert_int_equal(kdl_split_finalize(s, inst, NULL, NULL, NULL, &r), -KDL_EMISMATCH);

        /* Heads of the wrong shape, or with NaN. */
        assert_int_equal(kdl_split_finalize(s, NULL, NULL, &head_bad, NULL, &r), -KDL_ESHAPE);
        assert_int_equal(kdl_split_finalize(s, NULL, NULL, NULL, &flat, &r), -KDL_ESHAPE);
        w[3] = NAN;
        assert_int_equal(kdl_split_finalize(s, NULL, NULL, &head, NULL, &r), -KDL_ENONFINITE);
        w[3] = 0.0;
        assert_true(r == (kdl_split_result *) 0x1);
        assert_int_equal(kdl_split_finalize(s, NULL, NULL, &head, NULL, &r), 0);
        assert_true(r->has_head_teacher && !r->has_head_student);
        assert_true(isnan(r->pearson_heads));
        kdl_split_result_free(r);

        kdl_split_instance_state_free(inst);
        kdl_split_state_free(empty);
        kdl_split_state_free(s);
        kdl_split_state_free(NULL);
        kdl_split_instance_state_free(NULL);
        kdl_split_result_free(NULL);
}

/* The state's results as bytes that must not move. */
static void assert_results_identical(const kdl_split_result *a, const kdl_split_result *b)
{
        assert_int_equal(a->n, b->n);
        for (size_t k = 0; k < a->ntaus; k++) {
                const kdl_split_tau_result *x = &a->tau[k], *y = &b->tau[k];

                assert_memory_equal(&x->kl, &y->kl, sizeof(double));
                assert_memory_equal(&x->nckd, &y->nckd, sizeof(double));
                assert_memory_equal(&x->pt_y.mean, &y->pt_y.mean, sizeof(double));
                assert_memory_equal(&x->pt_y.std, &y->pt_y.std, sizeof(double));
                assert_memory_equal(x->pt_y.quantile, y->pt_y.quantile, sizeof(x->pt_y.quantile));
                assert_memory_equal(&x->w.mean, &y->w.mean, sizeof(double));
                assert_memory_equal(x->w.quantile, y->w.quantile, sizeof(x->w.quantile));
                assert_memory_equal(x->w_unguarded_dist.quantile, y->w_unguarded_dist.quantile,
                                    sizeof(x->w.quantile));
                assert_int_equal(x->w_nonpositive, y->w_nonpositive);
                assert_memory_equal(&x->pearson_w_pt, &y->pearson_w_pt, sizeof(double));
        }
}

/* The metric contract: kdl_split_opts_init() sets every default; finalize
 * of an empty state is -KDL_EMISSING; a merge of states of other classes,
 * options or first passes is -KDL_EMISMATCH and leaves @into as it was. */
static void test_contract(void **state)
{
        double zt[N_ * C_], zs[N_ * C_];
        int64_t y[N_];
        kdl_split_opts o, o2;
        kdl_split_state *s, *other, *half;
        kdl_split_instance_state *inst, *inst_other;
        kdl_split_result *r = NULL, *r1, *r2;

        (void) state;
        kdl_split_opts_init(&o);
        assert_int_equal(o.ntaus, 1);
        assert_close(o.taus[0], 4.0, 0.0, 0.0);
        assert_close(o.lambda, 0.9, 0.0, 0.0);
        assert_close(o.omega_max, 10.0, 0.0, 0.0);
        assert_close(o.w_eps, 1e-3, 0.0, 0.0);
        assert_close(o.cos_eps, 1e-12, 0.0, 0.0);
        assert_int_equal(o.nbins, 1000);

        o = opts_all_taus();
        make_data(41, N_, C_, zt, zs, y);
        assert_int_equal(kdl_split_state_new(C_, &o, &s), 0);
        assert_int_equal(kdl_split_finalize(s, NULL, NULL, NULL, NULL, &r), -KDL_EMISSING);
        assert_null(r);
        accumulate_blocks(s, NULL, zt, zs, y, 0, N_, 50, C_);
        assert_int_equal(kdl_split_instance_state_new(s, &inst), 0);
        accumulate_blocks(NULL, inst, zt, zs, y, 0, N_, 64, C_);
        assert_int_equal(kdl_split_finalize(s, inst, NULL, NULL, NULL, &r1), 0);

        /* Other options, other classes: refused, nothing moves. */
        o2 = o;
        o2.nbins = 999;
        assert_int_equal(kdl_split_state_new(C_, &o2, &other), 0);
        accumulate_blocks(other, NULL, zt, zs, y, 0, 20, 20, C_);
        assert_int_equal(kdl_split_merge(s, other), -KDL_EMISMATCH);
        kdl_split_state_free(other);
        assert_int_equal(kdl_split_state_new(C_ + 1, &o, &other), 0);
        assert_int_equal(kdl_split_merge(s, other), -KDL_EMISMATCH);
        kdl_split_state_free(other);

        /* A second pass of another first pass (another p̄^t_y). */
        assert_int_equal(kdl_split_state_new(C_, &o, &half), 0);
        accumulate_blocks(half, NULL, zt, zs, y, 0, N_ / 2, 50, C_);
        assert_int_equal(kdl_split_instance_state_new(half, &inst_other), 0);
        accumulate_blocks(NULL, inst_other, zt, zs, y, 0, N_ / 2, 50, C_);
        assert_int_equal(kdl_split_instance_merge(inst, inst_other), -KDL_EMISMATCH);
        kdl_split_instance_state_free(inst_other);
        kdl_split_state_free(half);

        assert_int_equal(kdl_split_finalize(s, inst, NULL, NULL, NULL, &r2), 0);
        assert_results_identical(r1, r2);
        kdl_split_result_free(r2);
        kdl_split_result_free(r1);
        kdl_split_instance_state_free(inst);
        kdl_split_state_free(s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_identity_and_reference),
                cmocka_unit_test(test_dkd_alpha1_beta_pt_equals_kd),
                cmocka_unit_test(test_nckd_ignores_target_logit),
                cmocka_unit_test(test_tckd_zero_when_confidences_equal),
                cmocka_unit_test(test_masked_nckd_agrees_with_exact),
                cmocka_unit_test(test_certain_teacher_is_finite),
                cmocka_unit_test(test_near_certain_identity),
                cmocka_unit_test(test_merge_equals_sequential),
                cmocka_unit_test(test_accumulate_matches_per_sample),
                cmocka_unit_test(test_weight_guard),
                cmocka_unit_test(test_heads_and_agreement),
                cmocka_unit_test(test_blocked_equals_full),
                cmocka_unit_test(test_confused_pairs_ties),
                cmocka_unit_test(test_blocked_out_of_memory),
                cmocka_unit_test(test_plan_and_blocks_errors),
                cmocka_unit_test(test_universe_entropy),
                cmocka_unit_test(test_errors),
                cmocka_unit_test(test_contract),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
