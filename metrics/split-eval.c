/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/error.h"
#include "metrics/kl-internal.h"
#include "metrics/split.h"
#include "metrics/split-internal.h"
#include "metrics/base/banned.h"

/*
 * The split quantities of one sample (metrics/split.h): KL, TCKD, NCKD by
 * exact exclusion, the AEKT weight, ε_n and the non-target entropy; the
 * KL-type terms all with the exact KL of the kl metric
 * (kdl__kl_tilt()); mdistiller's masked NCKD; Tang et al.'s w_n.
 *
 * Near certainty.  When p_y is within 1e-13 of 1, log p_y is a tiny number
 * next to z_y/τ, and z_y/τ - LSE(z/τ) keeps none of its digits.  So nothing
 * here is formed that way: the target enters through its log-odds against
 * the other classes, d = z_y/τ - LSE_{k≠y}(z_k/τ), from which
 * log p_y = -log1p(e^{-d}) and log(1 - p_y) = -log1p(e^{d}) keep their
 * relative precision, and TCKD is the exact KL on the two classes [y, rest].
 */

double kdl__split_log_odds(const double *z, ptrdiff_t st, size_t c, size_t y, double tau)
{
        double rest;

        (void) kdl__kl_log_softmax(z, st, c, y, tau, NULL, &rest);
        return z[(ptrdiff_t) y * st] / tau - rest;
}

/* The non-target part: NCKD/τ² = KL(p̂^t || p̂^s) over the classes k != y,
 * the teacher's non-target entropy *@ret_ent, and the log-odds d^t
 * (*@ret_dt) and the difference d^s - d^t (*@ret_dd), the latter from the
 * differences of the logits rather than from two log-sum-exps:
 *   d^s - d^t = (w_y - E_p̂t[w]) - KL(p̂^t || p̂^s),  w = (z^s - z^t)/τ,
 * as log(Σ_{k≠y} e^{b_k} / Σ_{k≠y} e^{a_k}) = log E_p̂t[e^w]
 *                                          = E_p̂t[w] + KL(p̂^t || p̂^s). */
static double non_target(const double *zt, ptrdiff_t st, const double *zs, ptrdiff_t ss, size_t c,
                         size_t y, double tau, double *work, double *ret_ent, double *ret_dt,
                         double *ret_dd)
{
        double *lp = work, *p = work + c, *v = work + 2 * c;
        double rest, mw, ent = 0.0, kl, wy;

        (void) kdl__kl_log_softmax(zt, st, c, y, tau, lp, &rest);
        for (size_t k = 0, i = 0; k < c; k++) {
                if (k == y)
                        continue;
                p[i] = exp(lp[i]);
                ent -= p[i] * lp[i];
                v[i] = (zs[(ptrdiff_t) k * ss] - zt[(ptrdiff_t) k * st]) / tau;
                i++;
        }
        kl = kdl__kl_tilt(lp, p, v, c - 1, &mw);
        wy = (zs[(ptrdiff_t) y * ss] - zt[(ptrdiff_t) y * st]) / tau;
        *ret_ent = ent;
        *ret_dt = zt[(ptrdiff_t) y * st] / tau - rest;
        *ret_dd = (wy - mw) - kl;
        return kl;
}

/* KL(p^t || p^s)/τ² over all classes, as kdlens kl computes it; p^t is added
 * into @add_pt when not NULL. */
static double full_kl(const double *zt, ptrdiff_t st, const double *zs, ptrdiff_t ss, size_t c,
                      double tau, double *work, double *add_pt)
{
        double *lp = work, *p = work + c, *v = work + 2 * c;

        (void) kdl__kl_log_softmax(zt, st, c, SIZE_MAX, tau, lp, NULL);
        for (size_t k = 0; k < c; k++) {
                p[k] = exp(lp[k]);
                v[k] = (zs[(ptrdiff_t) k * ss] - zt[(ptrdiff_t) k * st]) / tau;
                if (add_pt)
                        add_pt[k] += p[k];
        }
        return kdl__kl_tilt(lp, p, v, c, NULL);
}

void kdl__split_eval_one(const double *zt, ptrdiff_t st, const double *zs, ptrdiff_t ss, size_t c,
                         size_t y, double tau, double lambda, double omega_max, double *work,
                         kdl_split_sample *r, double *add_pt)
{
        double dt, dd, ds, ent, nckd, tckd, kl, lratio, tau2 = tau * tau;
        double lb[2], b[2], v[2];

        nckd = non_target(zt, st, zs, ss, c, y, tau, work, &ent, &dt, &dd);
        ds = dt + dd;
        /* The binary distributions [p_y, 1 - p_y] from the log-odds, and
         * TCKD as the same exact KL on two classes whose log-odds differ by
         * dd = d^s - d^t. */
        lb[0] = -kdl__split_softplus(-dt);
        lb[1] = -kdl__split_softplus(dt);
        b[0] = exp(lb[0]);
        b[1] = exp(lb[1]);
        v[0] = dd;
        v[1] = 0.0;
        tckd = kdl__kl_tilt(lb, b, v, 2, NULL);
        kl = full_kl(zt, st, zs, ss, c, tau, work, add_pt);

        r->kl = tau2 * kl;
        r->tckd = tau2 * tckd;
        r->nckd = tau2 * nckd;
        r->pt_y = b[0];
        r->pt_rest = b[1];
        r->ps_y = exp(-kdl__split_softplus(-ds));
        r->residual = r->kl - r->tckd - r->pt_rest * r->nckd;
        /* |p^t_y - p^s_y| = p^t_y (1 - p^s_y) |e^{dd} - 1|
         *                 = p^s_y (1 - p^t_y) |e^{-dd} - 1|: no cancellation
         * near p_y = 1, expm1 of a non-positive number only. */
        r->gap = dd < 0.0 ? r->pt_y * exp(-kdl__split_softplus(ds)) * -expm1(dd)
                          : r->ps_y * r->pt_rest * -expm1(-dd);
        lratio = kdl__split_softplus(-ds) - kdl__split_softplus(-dt); /* log p^t_y - log p^s_y */
        r->omega_clipped = lratio > log(omega_max);
        r->omega = r->omega_clipped ? omega_max : exp(lratio);
        r->eps = lambda * r->pt_rest * (double) c / (double) (c - 1);
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
                   const kdl_split_opts *o, double *work, kdl_split_sample *ret)
{
        kdl_split_sample r;
        int err;

        assert(zt && zs && o && work && ret);
        err = check_sample_args(zt, zs, c, y, tau);
        if (err < 0)
                return err;
        kdl__split_eval_one(zt, 1, zs, 1, c, y, tau, o->lambda, o->omega_max, work, &r, NULL);
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
