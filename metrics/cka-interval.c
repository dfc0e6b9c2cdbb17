/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/cka.h"
#include "metrics/cka-internal.h"
#include "metrics/moments.h"
#include "metrics/base/banned.h"

/* The bootstrap summary shared by the feature-space state and the Gram
 * form: percentile, basic and BCa intervals (Efron & Tibshirani 1993), the
 * standard deviation and the bias of the replicates. */

static const char *const interval_names[KDL_CKA_INTERVAL_COUNT_] = {"percentile", "basic", "bca"};

const char *kdl_cka_interval_name(enum kdl_cka_interval i)
{
        assert(i < KDL_CKA_INTERVAL_COUNT_);
        return interval_names[i];
}

int kdl_cka_interval_parse(const char *s, enum kdl_cka_interval *ret)
{
        for (int i = 0; i < KDL_CKA_INTERVAL_COUNT_; i++)
                if (strcmp(s, interval_names[i]) == 0) {
                        *ret = (enum kdl_cka_interval) i;
                        return 0;
                }
        return kdl_error(-KDL_EUSAGE,
                         "unknown bootstrap interval '%s' (expected percentile, basic or bca)", s);
}

static double norm_cdf(double x)
{
        return 0.5 * erfc(-x / 1.4142135623730951);
}

/* Acklam's rational approximation (relative error 1.2e-9), then two Halley
 * steps on Φ(x) - p through erfc, which bring it to full precision. */
double kdl__cka_probit(double p)
{
        static const double a[6] = {-3.969683028665376e+01, 2.209460984245205e+02,
                                    -2.759285104469687e+02, 1.383577518672690e+02,
                                    -3.066479806614716e+01, 2.506628277459239e+00};
        static const double b[5] = {-5.447609879822406e+01, 1.615858368580409e+02,
                                    -1.556989798598866e+02, 6.680131188771972e+01,
                                    -1.328068155288572e+01};
        static const double c[6] = {-7.784894002430293e-03, -3.223964580411365e-01,
                                    -2.400758277161838e+00, -2.549732539343734e+00,
                                    4.374664141464968e+00,  2.938163982698783e+00};
        static const double d[4] = {7.784695709041462e-03, 3.224671290700398e-01,
                                    2.445134137142996e+00, 3.754408661907416e+00};
        double x, q, r;

        assert(p > 0.0 && p < 1.0);
        if (p < 0.02425 || p > 1.0 - 0.02425) {
                q = sqrt(-2.0 * log(p < 0.5 ? p : 1.0 - p));
                x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
                    ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
                x = p < 0.5 ? x : -x;
        } else {
                q = p - 0.5;
                r = q * q;
                x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
                    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
        }
        for (int k = 0; k < 2; k++) {
                double e = norm_cdf(x) - p, u = e * 2.5066282746310002 * exp(0.5 * x * x);

                x -= u / (1.0 + 0.5 * x * u);
        }
        return x;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *) a, y = *(const double *) b;

        return x < y ? -1 : x > y;
}

/* The BCa acceleration from the finite jackknife values @jack[g * ll]
 * (g < @ng); NaN with fewer than two, 0 when they are all equal. */
static double acceleration(const double *jack, size_t ng, size_t ll)
{
        double mean = 0.0, s2 = 0.0, s3 = 0.0;
        size_t k = 0;

        for (size_t g = 0; g < ng; g++)
                if (isfinite(jack[g * ll])) {
                        mean += jack[g * ll];
                        k++;
                }
        if (k < 2)
                return NAN;
        mean /= (double) k;
        for (size_t g = 0; g < ng; g++)
                if (isfinite(jack[g * ll])) {
                        double dd = mean - jack[g * ll];

                        s2 += dd * dd;
                        s3 += dd * dd * dd;
                }
        return s2 > 0.0 ? s3 / (6.0 * pow(s2, 1.5)) : 0.0;
}

/* The BCa level of the quantile for the normal quantile @z; NaN when the
 * denominator is not positive. */
static double bca_level(double z0, double a, double z)
{
        double den = 1.0 - a * (z0 + z);

        return den > 0.0 ? norm_cdf(z0 + (z0 + z) / den) : (double) NAN;
}

/* BCa bounds of the sorted finite replicates @x[0..k-1] around @est. */
static void bca(const double *x, size_t k, double est, double a, double level, double *lo,
                double *hi)
{
        size_t below = 0, ties = 0;
        double p0, z0, l1, l2;

        for (size_t b = 0; b < k; b++) {
                below += x[b] < est;
                ties += !(x[b] < est) && !(x[b] > est);
        }
        p0 = ((double) below + 0.5 * (double) ties) / (double) k;
        *lo = *hi = NAN;
        if (!(p0 > 0.0 && p0 < 1.0) || !isfinite(a))
                return;
        z0 = kdl__cka_probit(p0);
        l1 = bca_level(z0, a, kdl__cka_probit((1.0 - level) / 2.0));
        l2 = bca_level(z0, a, kdl__cka_probit(1.0 - (1.0 - level) / 2.0));
        if (isnan(l1) || isnan(l2))
                return;
        *lo = kdl_quantile_sorted(x, k, l1);
        *hi = kdl_quantile_sorted(x, k, l2);
}

/* The summary of one estimator: @est [ll] point values, @rep [nrep*ll],
 * @jack [ng*ll] (BCa only), into @lo, @hi, @se, @bias [ll]; @buf: nrep. */
static void summarise(const kdl_cka_matrix *m, const double *est, const double *rep,
                      const double *jack, double *buf, double *lo, double *hi, double *se,
                      double *bias)
{
        size_t ll = m->nlayers * m->nlayers, nrep = m->bootstrap;
        double alpha = 1.0 - m->level;

        for (size_t i = 0; i < ll; i++) {
                size_t k = 0;
                double mean = 0.0, ss = 0.0, e = est[i];

                for (size_t b = 0; b < nrep; b++)
                        if (isfinite(rep[b * ll + i]))
                                buf[k++] = rep[b * ll + i];
                if (k < 2) {
                        lo[i] = hi[i] = se[i] = bias[i] = NAN;
                        continue;
                }
                qsort(buf, k, sizeof(double), cmp_double);
                for (size_t b = 0; b < k; b++)
                        mean += buf[b];
                mean /= (double) k;
                for (size_t b = 0; b < k; b++)
                        ss += (buf[b] - mean) * (buf[b] - mean);
                se[i] = sqrt(ss / (double) (k - 1));
                bias[i] = mean - e;
                switch (m->interval) {
                case KDL_CKA_INTERVAL_PERCENTILE:
                        lo[i] = kdl_quantile_sorted(buf, k, alpha / 2.0);
                        hi[i] = kdl_quantile_sorted(buf, k, 1.0 - alpha / 2.0);
                        break;
                case KDL_CKA_INTERVAL_BASIC:
                        lo[i] = 2.0 * e - kdl_quantile_sorted(buf, k, 1.0 - alpha / 2.0);
                        hi[i] = 2.0 * e - kdl_quantile_sorted(buf, k, alpha / 2.0);
                        break;
                default:
                        bca(buf, k, e, acceleration(jack + i, m->ngroups, ll), m->level, &lo[i],
                            &hi[i]);
                        break;
                }
        }
}

int kdl__cka_intervals(kdl_cka_matrix *m)
{
        size_t ll = m->nlayers * m->nlayers;
        double *buf;
        double **out[8] = {&m->biased_lo,   &m->biased_hi,   &m->biased_se,   &m->biased_bias,
                           &m->debiased_lo, &m->debiased_hi, &m->debiased_se, &m->debiased_bias};

        assert(m->interval < KDL_CKA_INTERVAL_COUNT_);
        assert(m->interval != KDL_CKA_INTERVAL_BCA || (m->biased_jack && m->debiased_jack));
        for (int i = 0; i < 8; i++)
                if (!(*out[i] = kdl_new(double, ll)))
                        return -ENOMEM;
        buf = kdl_new(double, m->bootstrap ? m->bootstrap : 1);
        if (!buf)
                return -ENOMEM;
        summarise(m, m->biased, m->biased_rep, m->biased_jack, buf, m->biased_lo, m->biased_hi,
                  m->biased_se, m->biased_bias);
        summarise(m, m->debiased, m->debiased_rep, m->debiased_jack, buf, m->debiased_lo,
                  m->debiased_hi, m->debiased_se, m->debiased_bias);
        free(buf);
        return 0;
}
