/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/error.h"
#include "metrics/split.h"
#include "metrics/split-internal.h"
#include "metrics/base/banned.h"

/*
 * The split quantities of one sample (metrics/split.h): KL, TCKD, NCKD by
 * exact exclusion, the AEKT weight, ε_n and the non-target entropy, all
 * from log-sum-exps; mdistiller's masked NCKD; Tang et al.'s w_n.
 */

static double logaddexp(double a, double b)
{
        double m = a > b ? a : b;

        if (isinf(m) && m < 0.0)
                return m;
        return m + log1p(exp(-fabs(a - b)));
}

/* Log-sum-exp of z/τ over the non-target classes (*ret_rest) and over all
 * classes (*ret_all), both with the maximum subtracted (§1.2). */
void kdl__split_lse(const double *z, ptrdiff_t st, size_t c, size_t y, double tau, double *ret_rest,
                    double *ret_all)
{
        double m = -INFINITY, sum = 0.0;

        for (size_t j = 0; j < c; j++) {
                double a = z[(ptrdiff_t) j * st] / tau;

                if (j != y && a > m)
                        m = a;
        }
        for (size_t j = 0; j < c; j++)
                if (j != y)
                        sum += exp(z[(ptrdiff_t) j * st] / tau - m);
        *ret_rest = m + log(sum);
        *ret_all = logaddexp(z[(ptrdiff_t) y * st] / tau, *ret_rest);
}

/* Everything of kdl_split_sample at one τ; if @add_pt is not NULL, p^t is
 * added into it (a row of the confusion sums).  Inputs are valid. */
void kdl__split_eval_one(const double *zt, ptrdiff_t st, const double *zs, ptrdiff_t ss, size_t c,
                         size_t y, double tau, double lambda, double omega_max, kdl_split_sample *r,
                         double *add_pt)
{
        double rest_t, all_t, rest_s, all_s;
        double lpt_y, lpt_r, lps_y, lps_r, pt_y, pt_r, ps_y, lratio;
        double kl = 0.0, nckd = 0.0, ent = 0.0, tckd, tau2 = tau * tau;

        kdl__split_lse(zt, st, c, y, tau, &rest_t, &all_t);
        kdl__split_lse(zs, ss, c, y, tau, &rest_s, &all_s);
        lpt_y = zt[(ptrdiff_t) y * st] / tau - all_t;
        lpt_r = rest_t - all_t; /* log(1 - p^t_y), exact even when p^t_y rounds to 1 */
        lps_y = zs[(ptrdiff_t) y * ss] / tau - all_s;
        lps_r = rest_s - all_s;
        pt_y = exp(lpt_y);
        pt_r = exp(lpt_r);
        ps_y = exp(lps_y);

        /* Binary KL in the log domain (§6.4), not log of probabilities. */
        tckd = pt_y * (lpt_y - lps_y) + pt_r * (lpt_r - lps_r);

        for (size_t j = 0; j < c; j++) {
                double a, b, lpt, lps, pt, lht, lhs, ht;

                if (j == y)
                        continue;
                a = zt[(ptrdiff_t) j * st] / tau;
                b = zs[(ptrdiff_t) j * ss] / tau;
                lpt = a - all_t;
                lps = b - all_s;
                pt = exp(lpt);
                kl += pt * (lpt - lps);
                lht = a - rest_t; /* exact exclusion of the target */
                lhs = b - rest_s;
                ht = exp(lht);
                nckd += ht * (lht - lhs);
                ent -= ht * lht;
                if (add_pt)
                        add_pt[j] += pt;
        }
        kl += pt_y * (lpt_y - lps_y);
        if (add_pt)
                add_pt[y] += pt_y;

        r->kl = tau2 * kl;
        r->tckd = tau2 * tckd;
        r->nckd = tau2 * nckd;
        r->residual = r->kl - r->tckd - pt_r * r->nckd;
        r->pt_y = pt_y;
        r->ps_y = ps_y;
        r->pt_rest = pt_r;
        r->gap = fabs(pt_y - ps_y);
        lratio = lpt_y - lps_y;
        r->omega_clipped = lratio > log(omega_max);
        r->omega = r->omega_clipped ? omega_max : exp(lratio);
        r->eps = lambda * pt_r * (double) c / (double) (c - 1);
        r->nt_entropy = c > 2 ? ent / log((double) (c - 1)) : 1.0;
}

static int check_vec(const double *z, size_t c, const char *who)
{
        for (size_t j = 0; j < c; j++)
                if (!isfinite(z[j]))
                        return kdl_error(-KDL_ENONFINITE, "split: %s logit %zu is %g", who, j,
                                         z[j]);
        return 0;
}

static int check_sample_args(const double *zt, const double *zs, size_t c, size_t y, double tau)
{
        int err;

        if (c < 2)
                return kdl_error(-KDL_ESHAPE, "split: %zu classes, expected at least 2", c);
        if (y >= c)
                return kdl_error(-KDL_ERANGE, "split: label %zu outside [0, %zu)", y, c);
        if (!(isfinite(tau) && tau > 0.0))
                return kdl_error(-KDL_ERANGE, "split: temperature %g is not a positive number",
                                 tau);
        err = check_vec(zt, c, "teacher");
        if (err < 0)
                return err;
        return check_vec(zs, c, "student");
}

int kdl_split_eval(const double *zt, const double *zs, size_t c, size_t y, double tau,
                   const kdl_split_opts *o, kdl_split_sample *ret)
{
        kdl_split_sample r;
        int err;

        assert(zt && zs && o && ret);
        err = check_sample_args(zt, zs, c, y, tau);
        if (err < 0)
                return err;
        kdl__split_eval_one(zt, 1, zs, 1, c, y, tau, o->lambda, o->omega_max, &r, NULL);
        *ret = r;
        return 0;
}

int kdl_split_nckd_masked(const double *zt, const double *zs, size_t c, size_t y, double tau,
                          double *ret)
{
        double mt = -INFINITY, ms = -INFINITY, sumt = 0.0, sums = 0.0, lset, lses, kl = 0.0;
        int err;

        assert(zt && zs && ret);
        err = check_sample_args(zt, zs, c, y, tau);
        if (err < 0)
                return err;
                /* softmax(z/τ - 1000 e_y) over all C classes, as mdistiller's DKD.py. */
#define MASKED(z, j) ((z)[j] / tau - ((j) == y ? 1000.0 : 0.0))
        for (size_t j = 0; j < c; j++) {
                mt = fmax(mt, MASKED(zt, j));
                ms = fmax(ms, MASKED(zs, j));
        }
        for (size_t j = 0; j < c; j++) {
                sumt += exp(MASKED(zt, j) - mt);
                sums += exp(MASKED(zs, j) - ms);
        }
        lset = mt + log(sumt);
        lses = ms + log(sums);
        for (size_t j = 0; j < c; j++) {
                double lpt = MASKED(zt, j) - lset, lps = MASKED(zs, j) - lses;

                kl += exp(lpt) * (lpt - lps);
        }
#undef MASKED
        *ret = tau * tau * kl;
        return 0;
}

double kdl_split_weight(double pt_rest, double qs_rest, double pt_mean, double lambda, double eps,
                        bool *ret_guarded)
{
        double num = qs_rest - lambda * pt_rest;
        double den = qs_rest - lambda * (1.0 - pt_mean);
        bool guarded = !(den >= eps);

        if (guarded)
                den = eps;
        if (ret_guarded)
                *ret_guarded = guarded;
        return num / den;
}
