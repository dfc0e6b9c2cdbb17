/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdlib.h>

#include <cblas.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/kl.h"
#include "metrics/kl-internal.h"
#include "metrics/base/banned.h"

/*
 * The per-sample values of the KL metric: the exact KD criterion K_n and
 * each approximation A_n of the table in metrics/kl.h, for one row block.
 */

#define NV   KDL__KL_NV
#define DNAN ((double) NAN)

/* φ(v) = e^v - 1 - v ≥ 0.  For |v| < 0.1 its Taylor series (to v^12, relative
 * error < 1e-20); otherwise expm1(v) - v, whose cancellation costs at most a
 * factor 2/|v| <= 20 ulps there. */
static inline double phi(double v)
{
        double r;

        if (fabs(v) >= 0.1)
                return expm1(v) - v;
        /* Horner from 1/12! down to 1/2!, written out: a loop over a table
         * kept each step waiting for the loop's branch and load. */
        r = 1.0 / 479001600;
        r = r * v + 1.0 / 39916800;
        r = r * v + 1.0 / 3628800;
        r = r * v + 1.0 / 362880;
        r = r * v + 1.0 / 40320;
        r = r * v + 1.0 / 5040;
        r = r * v + 1.0 / 720;
        r = r * v + 1.0 / 120;
        r = r * v + 1.0 / 24;
        r = r * v + 1.0 / 6;
        r = r * v + 1.0 / 2;
        return v * v * r;
}

size_t kdl__kl_softmax(const double *x, ptrdiff_t sx, size_t c, double tau, double *a, double *e,
                       double *ret_rest)
{
        double m0, m1, mx, rest = 0.0;
        size_t am = 0, k;

        /* One division per value: the loops below reuse a_k. */
        for (k = 0; k < c; k++)
                a[k] = x[(ptrdiff_t) k * sx] / tau;
        /* The maximum in two chains, then its first index: the argmax of a
         * scan for the first strict maximum. */
        m0 = m1 = a[0];
        for (k = 1; k + 1 < c; k += 2) {
                m0 = a[k] > m0 ? a[k] : m0;
                m1 = a[k + 1] > m1 ? a[k + 1] : m1;
        }
        if (k < c)
                m0 = a[k] > m0 ? a[k] : m0;
        mx = m1 > m0 ? m1 : m0;
        while (am + 1 < c && a[am] < mx)
                am++;
        mx = a[am];
        /* The exponentials, summed in class order without the argmax. */
        for (k = 0; k < am; k++) {
                e[k] = exp(a[k] - mx);
                rest += e[k];
        }
        e[am] = 1.0;
        for (k = am + 1; k < c; k++) {
                e[k] = exp(a[k] - mx);
                rest += e[k];
        }
        *ret_rest = rest;
        return am;
}

double kdl__kl_tilt_centre(const double *lp, const double *p, double *v, size_t c, double mw,
                           double *ret_var)
{
        double mx = -INFINITY, sum = 0.0, var = 0.0;

        /* KL = log E_p[e^v] (E_p[v] = 0): with all p_k e^{v_k} <= e, log1p of
         * the non-negative Σ p φ(v), summed here with the maximum; otherwise
         * KL >= mx > 1 and log-sum-exp has no cancellation to fear (the sum
         * is thrown away). */
        for (size_t k = 0; k < c; k++) {
                v[k] -= mw;
                if (lp[k] + v[k] > mx)
                        mx = lp[k] + v[k];
                if (v[k] > 1.0)
                        sum += exp(lp[k] + v[k]) - p[k] * (1.0 + v[k]);
                else
                        sum += p[k] * phi(v[k]);
                var += p[k] * v[k] * v[k];
        }
        if (ret_var)
                *ret_var = var;
        if (mx <= 1.0 || isnan(mx))
                return log1p(sum);
        sum = 0.0;
        for (size_t k = 0; k < c; k++)
                sum += exp(lp[k] + v[k] - mx);
        return mx + log(sum);
}

double kdl__kl_tilt(const double *lp, const double *p, double *v, size_t c, double *ret_mean)
{
        double mw = 0.0;

        for (size_t k = 0; k < c; k++)
                mw += p[k] * v[k];
        if (ret_mean)
                *ret_mean = mw;
        return kdl__kl_tilt_centre(lp, p, v, c, mw, NULL);
}

/* Var_{k~p}(u_k), E_p[u] = @mu. */
static double var_p(const double *p, const double *u, size_t c, double mu)
{
        double var = 0.0;

        for (size_t k = 0; k < c; k++)
                var += p[k] * (u[k] - mu) * (u[k] - mu);
        return var;
}

/* Values of one sample at every temperature: logit part, from its logits and their difference
 * @d = z^s - z^t.  Writes K, logit_fisher, prob_l2 (and gradient_fisher from @u when given) into
 * out[itau * NV + v] with stride @os.  Two exponentials per class and temperature (the
 * softmaxes'; p = e/Σe, not exp(log p)), the φ of the KL, and three passes over the classes
 * after the softmaxes: the sums of one pass run side by side. */
static void sample_logits(const struct kdl__kl_config *cfg, struct kdl__kl_scratch *w,
                          const double *zt, ptrdiff_t szt, const double *zs, ptrdiff_t szs,
                          const double *d, const double *u, double *out, size_t os)
{
        size_t c = cfg->c;
        double *lpt = w->lpt, *p = w->pr, *b = w->lps, *q = w->qs, *v = w->v;

        for (size_t it = 0; it < cfg->ntau; it++) {
                double tau = cfg->tau[it], rt, rs, lse, ipt, ips, mw = 0.0, mu = 0.0;
                double pl2 = 0.0, dsum = 0.0, fis, kl, *o = out + it * NV * os;
                size_t am = kdl__kl_softmax(zt, szt, c, tau, lpt, p, &rt);

                (void) kdl__kl_softmax(zs, szs, c, tau, b, q, &rs);
                lse = lpt[am] + log1p(rt);
                ipt = 1.0 / (1.0 + rt);
                ips = 1.0 / (1.0 + rs);
                for (size_t k = 0; k < c; k++) {
                        lpt[k] -= lse;
                        p[k] *= ipt;
                        q[k] *= ips;
                        v[k] = d[k] / tau;
                        mw += p[k] * v[k];
                        if (u)
                                mu += p[k] * u[k];
                        /* ‖q - p‖², at the teacher's argmax from -Σ_{k != am}(q_k - p_k)
                         * (both sum to 1), which keeps a saturated class's difference that
                         * 1 - 1 would round away. */
                        if (k != am) {
                                double dp = q[k] - p[k];

                                pl2 += dp * dp;
                                dsum += dp;
                        }
                }
                kl = kdl__kl_tilt_centre(lpt, p, v, c, mw, &fis);
                o[KDL_KL_EXACT * os] = tau * tau * kl;
                o[KDL_KL_LOGIT_FISHER * os] = 0.5 * tau * tau * fis;
                o[KDL_KL_PROB_L2 * os] = 0.5 * tau * tau * (pl2 + dsum * dsum);
                if (u)
                        o[KDL_KL_GRADIENT_FISHER * os] = 0.5 * var_p(p, u, c, mu);
        }
}

/* e = P h^s - h^t, u = W_t e, y = Qᵀ e for the block (BLAS level 3). */
static int block_features(const struct kdl__kl_config *cfg, struct kdl__kl_scratch *w,
                          const kdl_kl_block *b, size_t m)
{
        size_t d_s = cfg->d_s, d_t = cfg->d_t;
        int err, bm, bs, bt, bc, br;

        if ((err = kdl__blas_int(m, &bm)) < 0 || (err = kdl__blas_int(d_s, &bs)) < 0 ||
            (err = kdl__blas_int(d_t, &bt)) < 0 || (err = kdl__blas_int(cfg->c, &bc)) < 0 ||
            (err = kdl__blas_int(cfg->rank, &br)) < 0)
                return err;
        if (cfg->fitted) {
                for (size_t r = 0; r < m; r++)
                        for (size_t i = 0; i < d_s; i++)
                                w->hsp[r * d_s + i] = KDL_AT2(b->hs, r, i);
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bm, bt, bs, 1.0, w->hsp, bs,
                            cfg->pt, bt, 0.0, w->e, bt);
                for (size_t r = 0; r < m; r++)
                        for (size_t j = 0; j < d_t; j++)
                                w->e[r * d_t + j] += cfg->b[j] - KDL_AT2(b->ht, r, j);
        } else {
                for (size_t r = 0; r < m; r++)
                        for (size_t j = 0; j < d_t; j++)
                                w->e[r * d_t + j] = KDL_AT2(b->hs, r, j) - KDL_AT2(b->ht, r, j);
        }
        if (cfg->head) {
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bm, bc, bt, 1.0, w->e, bt,
                            cfg->w, bt, 0.0, w->u, bc);
                /* Q square (W_t of full column rank): ‖Qᵀe‖ = ‖e‖, no product. */
                if (cfg->rank > 0 && cfg->rank < d_t)
                        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bm, br, bt, 1.0,
                                    w->e, bt, cfg->q, br, 0.0, w->y, br);
        }
        return 0;
}

/* The τ-independent values of one sample. */
struct row_values {
        double logit_l2, centered_l2, feature_l2, feature_head, grad_empirical, grad_logit_l2;
};

/* d = z^s - z^t into @d, and ‖d‖²/(2C), ‖d - mean(d)‖²/(2C).  A NaN or Inf among the logits
 * makes ‖d‖² NaN or Inf: the check of the values finds it (kdl__kl_block_values()). */
static void logit_l2(const double *zt, ptrdiff_t szt, const double *zs, ptrdiff_t szs, size_t c,
                     double *d, struct row_values *rv)
{
        double dsum = 0.0, dsq = 0.0, csq = 0.0;

        for (size_t k = 0; k < c; k++) {
                d[k] = zs[(ptrdiff_t) k * szs] - zt[(ptrdiff_t) k * szt];
                dsum += d[k];
                dsq += d[k] * d[k];
        }
        for (size_t k = 0; k < c; k++) {
                double dc = d[k] - dsum / (double) c;

                csq += dc * dc;
        }
        rv->centered_l2 = csq / (2.0 * (double) c);
        rv->logit_l2 = dsq / (2.0 * (double) c);
}

/* The feature and gradient values of row @r (e, u, y of the block are
 * known); Σ‖e‖² and Σ‖Qᵀe‖² grow into @w->block. */
static void row_features(const struct kdl__kl_config *cfg, struct kdl__kl_scratch *w,
                         const kdl_kl_block *b, size_t r, struct row_values *rv)
{
        size_t c = cfg->c, d_t = cfg->d_t;
        double ee = 0.0;

        if (cfg->feat) {
                const double *e = w->e + r * d_t;
                double ge_dot = 0.0;

                for (size_t j = 0; j < d_t; j++)
                        ee += e[j] * e[j];
                w->block.esq += ee;
                rv->feature_l2 = ee / (2.0 * (double) d_t);
                if (cfg->gradf) {
                        for (size_t j = 0; j < d_t; j++)
                                ge_dot += KDL_AT2(b->gt, r, j) * e[j];
                        rv->grad_empirical = 0.5 * ge_dot * ge_dot;
                }
        }
        if (cfg->head) {
                double uu = 0.0, yy = 0.0;

                for (size_t k = 0; k < c; k++)
                        uu += w->u[r * c + k] * w->u[r * c + k];
                rv->feature_head = uu / (2.0 * (double) c);
                if (cfg->rank == d_t)
                        yy = ee;
                else
                        for (size_t k = 0; k < cfg->rank; k++)
                                yy += w->y[r * cfg->rank + k] * w->y[r * cfg->rank + k];
                w->block.vsq += yy;
        }
}

/* ½ ‖g^s_z - g^t_z‖² of row @r. */
static double grad_logit_l2(const kdl_kl_block *b, size_t r, size_t c)
{
        double gg = 0.0;

        for (size_t k = 0; k < c; k++) {
                double d = KDL_AT2(b->gzs, r, k) - KDL_AT2(b->gzt, r, k);

                gg += d * d;
        }
        return 0.5 * gg;
}

/* All values of row @r into vals[(itau * NV + v) * m + r]. */
static void row_values(const struct kdl__kl_config *cfg, struct kdl__kl_scratch *w,
                       const kdl_kl_block *b, size_t r, size_t m)
{
        const double *zt = b->zt->data + (ptrdiff_t) r * b->zt->stride[0];
        const double *zs = b->zs->data + (ptrdiff_t) r * b->zs->stride[0];
        ptrdiff_t szt = b->zt->stride[1], szs = b->zs->stride[1];
        struct row_values rv = {.feature_l2 = DNAN,
                                .feature_head = DNAN,
                                .grad_empirical = DNAN,
                                .grad_logit_l2 = DNAN};
        size_t c = cfg->c;

        logit_l2(zt, szt, zs, szs, c, w->d, &rv);
        sample_logits(cfg, w, zt, szt, zs, szs, w->d, cfg->head ? w->u + r * c : NULL, w->vals + r,
                      m);
        row_features(cfg, w, b, r, &rv);
        if (cfg->gradz)
                rv.grad_logit_l2 = grad_logit_l2(b, r, c);
        for (size_t it = 0; it < cfg->ntau; it++) {
                double *o = w->vals + it * NV * m + r;

                o[KDL_KL_LOGIT_CENTERED_L2 * m] = rv.centered_l2;
                o[KDL_KL_LOGIT_L2 * m] = rv.logit_l2;
                o[KDL_KL_FEATURE_L2 * m] = rv.feature_l2;
                o[KDL_KL_FEATURE_HEAD * m] = rv.feature_head;
                o[KDL_KL_GRADIENT_EMPIRICAL * m] = rv.grad_empirical;
                o[KDL_KL_GRADIENT_LOGIT_L2 * m] = rv.grad_logit_l2;
                if (!cfg->head)
                        o[KDL_KL_GRADIENT_FISHER * m] = DNAN;
        }
}

int kdl__kl_block_values(const struct kdl__kl_config *cfg, struct kdl__kl_scratch *w,
                         const kdl_kl_block *b, size_t m)
{
        size_t ntv = cfg->ntau * NV;
        int err;

        w->block.esq = w->block.vsq = 0.0;
        if (cfg->feat) {
                err = block_features(cfg, w, b, m);
                if (err < 0)
                        return err;
        }
        for (size_t r = 0; r < m; r++)
                row_values(cfg, w, b, r, m);
        /* A NaN/Inf among the C-wide inputs (unchecked so far) shows here
         * first; otherwise values that overflowed (inputs near DBL_MAX) are
         * an error, not a NaN in a table. */
        for (size_t i = 0; i < ntv; i++) {
                if (!cfg->avail[i % NV])
                        continue;
                for (size_t r = 0; r < m; r++) {
                        if (isfinite(w->vals[i * m + r]))
                                continue;
                        err = kdl__kl_check_block_finite(cfg, b);
                        if (err < 0)
                                return err;
                        return kdl_error(-KDL_ENONFINITE,
                                         "%s at tau %g: non-finite value at sample %zu "
                                         "(inputs too large)",
                                         kdl_kl_name(i % NV), cfg->tau[i / NV],
                                         kdl__kl_sample_index(b, r));
                }
        }
        return 0;
}
