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

/* Σ exp(a_k - @mx) over k in [@k0, @k1), in class order. */
static double exp_sum(const double *a, size_t k0, size_t k1, double mx)
{
        double s = 0.0;

        for (size_t k = k0; k < k1; k++)
                s += exp(a[k] - mx);
        return s;
}

double kdl__split_log_odds(const double *z, ptrdiff_t st, size_t c, size_t y, double tau, double *a)
{
        double m0 = -INFINITY, m1 = -INFINITY, mx, rest;
        size_t am = y ? 0 : 1, lo, hi;

        /* LSE_{k≠y} as max + log1p(Σ_{k ∉ {y, argmax}} e^{a_k - max}), the
         * sum in class order, with each a_k = z_k/τ formed once and the
         * maximum over k != y in two loops, then its first index. */
        for (size_t k = 0; k < c; k++)
                a[k] = z[(ptrdiff_t) k * st] / tau;
        for (size_t k = 0; k < y; k++)
                m0 = a[k] > m0 ? a[k] : m0;
        for (size_t k = y + 1; k < c; k++)
                m1 = a[k] > m1 ? a[k] : m1;
        mx = m1 > m0 ? m1 : m0;
        while (am + 1 < c && (am == y || a[am] < mx))
                am++;
        mx = a[am];
        lo = am < y ? am : y;
        hi = am < y ? y : am;
        rest = exp_sum(a, 0, lo, mx);
        rest += exp_sum(a, lo + 1, hi, mx);
        rest += exp_sum(a, hi + 1, c, mx);
        return a[y] - (mx + log1p(rest));
}

/* A gap between the two largest teacher logits (tempered) up to which the non-target
 * softmax, when the label is the argmax, reuses the full softmax's exponentials scaled by
 * e^gap: past it, classes far below the second would underflow in them, and they are taken
 * again. */
#define NT_GAP_MAX 36.0

/* The teacher's non-target softmax: log p̂ into @lp, p̂ into @p and w = (z^s - z^t)/τ into @v
 * (the C - 1 classes k != y, packed), from the full softmax's a = z^t/τ and e = exp(a - a_am)
 * (kdl__kl_softmax()), @rest its sum without the argmax @am, @w the C values of w.
 * Return: the normaliser LSE_{k≠y}(a_k); *@ret_ent is H(p̂), *@ret_mw is E_p̂[w]. */
static double non_target_softmax(const double *a, const double *e, const double *w, size_t c,
                                 size_t y, size_t am, double *lp, double *p, double *v,
                                 double *ret_ent, double *ret_mw)
{
        size_t am2 = am;
        double rest = 0.0, scale = 1.0, f, lse, ent = 0.0, mw = 0.0;

        if (y == am) {
                /* The maximum over k != y: scale the exponentials from a_am to it. */
                am2 = y ? 0 : 1;
                for (size_t k = am2 + 1; k < c; k++)
                        if (k != y && a[k] > a[am2])
                                am2 = k;
                scale = a[am] - a[am2] <= NT_GAP_MAX ? exp(a[am] - a[am2]) : 0.0;
        }
        /* Σ_{k ∉ {y, am2}} e^{a_k - a_am2} in class order (when y is not the
         * argmax, the full softmax's own exponentials, unscaled). */
        if (scale > 0.0) {
                for (size_t k = 0; k < c; k++)
                        if (k != y && k != am2)
                                rest += e[k];
                rest *= scale;
        } else {
                for (size_t k = 0, i = 0; k < c; k++)
                        if (k != y) {
                                p[i] = k == am2 ? 1.0 : exp(a[k] - a[am2]);
                                rest += k == am2 ? 0.0 : p[i];
                                i++;
                        }
        }
        lse = a[am2] + log1p(rest);
        f = 1.0 / (1.0 + rest);
        for (size_t k = 0, i = 0; k < c; k++) {
                if (k == y)
                        continue;
                lp[i] = a[k] - lse;
                /* e^{a_k - a_am2}: exactly 1 at am2 (for C = 2 the one class is certain). */
                if (scale > 0.0)
                        p[i] = k == am2 ? 1.0 : e[k] * scale;
                p[i] *= f;
                v[i] = w[k];
                ent -= p[i] * lp[i];
                mw += p[i] * v[i];
                i++;
        }
        *ret_ent = ent;
        *ret_mw = mw;
        return lse;
}

void kdl__split_eval_one(const double *zt, ptrdiff_t st, const double *zs, ptrdiff_t ss, size_t c,
                         size_t y, double tau, double lambda, double omega_max, double *work,
                         kdl_split_sample *r, double *add_pt)
{
        double *a = work, *e = work + c, *w = work + 2 * c;
        double *lpn = work + 3 * c, *pn = work + 4 * c, *vn = work + 5 * c;
        double dt, dd, ds, ent, nckd, tckd, kl, lratio, tau2 = tau * tau;
        double rest, lse_nt, lse, ip, mw = 0.0, mwn;
        double lb[2], b[2], v[2];
        size_t am;

        /* One exponential per class: the teacher's full softmax, whose exponentials the
         * non-target softmax reuses; the student enters through w = (z^s - z^t)/τ only. */
        am = kdl__kl_softmax(zt, st, c, tau, a, e, &rest);
        for (size_t k = 0; k < c; k++)
                w[k] = (zs[(ptrdiff_t) k * ss] - zt[(ptrdiff_t) k * st]) / tau;

        /* The non-target part: NCKD/τ² = KL(p̂^t || p̂^s) over the classes k != y, the
         * log-odds d^t, and d^s - d^t from the differences of the logits rather than from
         * two log-sum-exps:
         *   d^s - d^t = (w_y - E_p̂t[w]) - KL(p̂^t || p̂^s),
         * as log(Σ_{k≠y} e^{b_k} / Σ_{k≠y} e^{a_k}) = log E_p̂t[e^w]
         *                                          = E_p̂t[w] + KL(p̂^t || p̂^s). */
        lse_nt = non_target_softmax(a, e, w, c, y, am, lpn, pn, vn, &ent, &mwn);
        nckd = kdl__kl_tilt_centre(lpn, pn, vn, c - 1, mwn, NULL);
        dt = a[y] - lse_nt;
        dd = (w[y] - mwn) - nckd;

        /* KL(p^t || p^s) over all classes, as kdlens kl computes it; p^t is added into
         * @add_pt when not NULL.  a and e become log p and p. */
        lse = a[am] + log1p(rest);
        ip = 1.0 / (1.0 + rest);
        for (size_t k = 0; k < c; k++) {
                a[k] -= lse;
                e[k] *= ip;
                mw += e[k] * w[k];
        }
        if (add_pt)
                for (size_t k = 0; k < c; k++)
                        add_pt[k] += e[k];
        kl = kdl__kl_tilt_centre(a, e, w, c, mw, NULL);

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
