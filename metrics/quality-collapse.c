/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/quality.h"
#include "metrics/quality-internal.h"
#include "metrics/base/banned.h"

/* The collapse columns beside Q: nearest-class-mean accuracy and NC1
 * (Papyan et al. 2020), and the effective rank (Roy & Vetterli 2007). */

/* Means of the classes present in the class-sorted rows @xs [n, d]: into
 * @mu [cp, d] (@mu, @musq and @mg zeroed by the caller), their squared norms
 * into @musq, their class numbers into @cls, the global mean into @mg.
 * Return: cp, the classes present. */
static size_t class_means(const double *xs, size_t n, size_t d, const size_t *start,
                          size_t nclasses, double *mu, double *musq, double *mg, size_t *cls)
{
        size_t cp = 0;

        for (size_t c = 0; c < nclasses; c++) {
                size_t nc = start[c + 1] - start[c];
                double *m = mu + cp * d;

                if (nc == 0)
                        continue;
                for (size_t i = start[c]; i < start[c + 1]; i++)
                        for (size_t j = 0; j < d; j++)
                                m[j] += xs[i * d + j];
                for (size_t j = 0; j < d; j++) {
                        m[j] /= (double) nc;
                        musq[cp] += m[j] * m[j];
                        mg[j] += (double) nc * m[j];
                }
                cls[cp++] = c;
        }
        for (size_t j = 0; j < d; j++)
                mg[j] /= (double) n;
        return cp;
}

/* Nearest class mean accuracy on @xs: argmin_c ‖μ_c‖² - 2 xᵀμ_c, ties to
 * the lower class; @mu, @musq and @cls as class_means() gives them. */
static int ncm_accuracy(const double *xs, size_t n, size_t d, const size_t *start, const double *mu,
                        const double *musq, const size_t *cls, size_t cp, double *ret)
{
        size_t correct = 0;
        double *scores = kdl__malloc(n * cp, sizeof(double));

        if (!scores)
                return -ENOMEM;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) n, (int) cp, (int) d, 1.0, xs,
                    (int) d, mu, (int) d, 0.0, scores, (int) cp);
        for (size_t k = 0; k < cp; k++)
                for (size_t i = start[cls[k]]; i < start[cls[k] + 1]; i++) {
                        size_t best = 0;
                        double bv = INFINITY;

                        for (size_t k2 = 0; k2 < cp; k2++) {
                                double v = musq[k2] - 2.0 * scores[i * cp + k2];

                                if (v < bv) {
                                        bv = v;
                                        best = k2;
                                }
                        }
                        correct += best == k;
                }
        free(scores);
        *ret = (double) correct / (double) n;
        return 0;
}

/* The between-class directions: M = [μ_c - μ_G] into @mm [d, cp] and the
 * eigenvectors of MᵀM into @mtm [cp, cp], its eigenvalues s² (ascending)
 * into @s2. */
static int between_class(const double *mu, const double *mg, size_t d, size_t cp, double *mm,
                         double *mtm, double *s2)
{
        lapack_int info;

        for (size_t j = 0; j < d; j++)
                for (size_t k = 0; k < cp; k++)
                        mm[j * cp + k] = mu[k * d + j] - mg[j];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int) cp, (int) d, 1.0, mm, (int) cp,
                    0.0, mtm, (int) cp);
        info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int) cp, mtm, (lapack_int) cp,
                              s2);
        assert(info >= 0);
        if (info > 0)
                return kdl_error(-KDL_ENOCONV, "NC1: eigensolver did not converge");
        return 0;
}

/* NC1 = tr(Σ_W Σ_B⁺)/C with Σ_B = M Mᵀ/C, M = [μ_c - μ_G]:
 * Σ_B⁺ = C Σ_k u_k u_kᵀ/s_k² (u_k = M v_k/s_k from MᵀM = V S² Vᵀ), so
 * NC1 = Σ_k ‖W M v_k‖² / (n s_k⁴), W the within-class residuals.
 * Never forms a D×D matrix.  @xs is overwritten with W; directions with
 * s² <= @rtol s²_max are dropped. */
static int nc1(double *xs, size_t n, size_t d, const size_t *start, const double *mu,
               const double *mg, const size_t *cls, size_t cp, double rtol, double *ret)
{
        double *mm, *mtm, *s2, *p, *pv, smax, sum = 0.0;
        int r = -ENOMEM;

        mm = kdl__malloc(d * cp + 1, sizeof(double));
        mtm = kdl__malloc(cp * cp + 1, sizeof(double));
        s2 = kdl__malloc(cp + 1, sizeof(double));
        p = kdl__malloc(n * cp + 1, sizeof(double));
        pv = kdl__malloc(n * cp + 1, sizeof(double));
        if (!mm || !mtm || !s2 || !p || !pv)
                goto out;
        r = between_class(mu, mg, d, cp, mm, mtm, s2);
        if (r < 0)
                goto out;
        for (size_t k = 0; k < cp; k++)
                for (size_t i = start[cls[k]]; i < start[cls[k] + 1]; i++)
                        for (size_t j = 0; j < d; j++)
                                xs[i * d + j] -= mu[k * d + j];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int) n, (int) cp, (int) d, 1.0, xs,
                    (int) d, mm, (int) cp, 0.0, p, (int) cp);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int) n, (int) cp, (int) cp, 1.0, p,
                    (int) cp, mtm, (int) cp, 0.0, pv, (int) cp);
        smax = cp ? s2[cp - 1] : 0.0;
        for (size_t k = 0; k < cp; k++) {
                double ss = 0.0;

                if (!(s2[k] > rtol * smax) || !(s2[k] > 0.0))
                        continue;
                for (size_t i = 0; i < n; i++)
                        ss += pv[i * cp + k] * pv[i * cp + k];
                sum += ss / ((double) n * s2[k] * s2[k]);
        }
        *ret = smax > 0.0 ? sum : (double) NAN;
out:
        free(pv);
        free(p);
        free(s2);
        free(mtm);
        free(mm);
        return r;
}

/* Σ_W Σ_B⁺ trace over C (NC1) and nearest-class-mean accuracy, from the
 * class-sorted rows @xs [n, d] (overwritten with the within-class residuals). */
int kdl__quality_class_means_stats(double *xs, size_t n, size_t d, const size_t *start,
                                   size_t nclasses, double rtol, kdl_quality *q)
{
        size_t cp = 0, *cls = NULL;
        double *mu = NULL, *mg = NULL, *musq = NULL;
        int r = -ENOMEM;

        /* Means of the classes present only: memory in them, not in @nclasses. */
        for (size_t c = 0; c < nclasses; c++)
                cp += start[c + 1] > start[c];
        cls = kdl_new(size_t, cp + 1);
        mu = kdl_new(double, cp *d + 1);
        mg = kdl_new(double, d);
        musq = kdl_new(double, cp + 1);
        if (!cls || !mu || !mg || !musq)
                goto out;
        cp = class_means(xs, n, d, start, nclasses, mu, musq, mg, cls);
        r = ncm_accuracy(xs, n, d, start, mu, musq, cls, cp, &q->ncm_accuracy);
        if (r < 0)
                goto out;
        r = nc1(xs, n, d, start, mu, mg, cls, cp, rtol, &q->nc1);
out:
        free(musq);
        free(mg);
        free(mu);
        free(cls);
        return r;
}

/* Eigenvalues of the centred covariance of @xs [n, d] (d <= n) into @lam. */
static int covariance_spectrum(const double *xs, size_t n, size_t d, double *lam, size_t *ret_k)
{
        double *cov = kdl__malloc(d * d, sizeof(double));
        double *xc = kdl__malloc(n * d, sizeof(double));
        int r = -ENOMEM;

        if (cov && xc) {
                memcpy(xc, xs, n * d * sizeof(double));
                r = kdl__quality_centred_spectrum(xc, n, d, cov, lam, ret_k);
        }
        free(xc);
        free(cov);
        return r;
}

/* Eigenvalues of the double-centred Gram @g [n, n] (upper triangle,
 * destroyed) into @lam. */
static int centred_gram_spectrum(double *g, size_t n, double *lam)
{
        double *rm = kdl_new(double, n), tot = 0.0;

        if (!rm)
                return -ENOMEM;
        for (size_t a = 0; a < n; a++)
                for (size_t b = a; b < n; b++) {
                        rm[a] += g[a * n + b];
                        if (b != a)
                                rm[b] += g[a * n + b];
                }
        for (size_t a = 0; a < n; a++) {
                tot += rm[a];
                rm[a] /= (double) n;
        }
        tot /= (double) (n * n);
        for (size_t a = 0; a < n; a++)
                for (size_t b = a; b < n; b++)
                        g[a * n + b] += tot - rm[a] - rm[b];
        free(rm);
        return kdl__quality_eigvals_desc(g, n, lam);
}

/* Effective rank of the centred subsample @xs [n, d] (Roy & Vetterli):
 * exp of the entropy of the centred covariance's eigenvalues (D <= n) or
 * of the double-centred Gram @g's (destroyed); NaN without variance. */
int kdl__quality_effective_rank(const double *xs, size_t n, size_t d, double *g, double *ret)
{
        size_t kmin = n < d ? n : d;
        double *lam = kdl__malloc(kmin + 1, sizeof(double)), tot = 0.0, h = 0.0;
        int r;

        if (!lam)
                return -ENOMEM;
        r = d <= n ? covariance_spectrum(xs, n, d, lam, &kmin) : centred_gram_spectrum(g, n, lam);
        if (r < 0)
                goto out;
        for (size_t k = 0; k < kmin; k++)
                tot += lam[k];
        for (size_t k = 0; k < kmin; k++)
                if (lam[k] > 0.0) {
                        double p = lam[k] / tot;

                        h -= p * log(p);
                }
        *ret = tot > 0.0 ? exp(h) : (double) NAN;
out:
        free(lam);
        return r;
}
