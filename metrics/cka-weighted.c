/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include <cblas.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/cka.h"
#include "metrics/cka-internal.h"
#include "metrics/sample.h"
#include "metrics/base/banned.h"

/*
 * Linear CKA in Gram space with sample weights, and the Gram-space bootstrap
 * built on it.  Sample i of weight wᵢ counts as wᵢ copies of itself: the
 * biased form centres with the weighted mean, H_w = I - 1 wᵀ/N, and sums
 * wᵢ wⱼ over the entries; the debiased form is the U-centred inner product
 * of the repeated data, whose U-centred entry between copies of samples i
 * and j is Mᵢⱼ (the same for every pair of distinct copies, i = j included)
 * and whose pairs of distinct copies number wᵢ wⱼ, or wᵢ(wᵢ - 1) when i = j.
 * A replicate thus equals the feature-space state's replicate built from
 * Σ w z zᵀ, Σ w z and the rest (cka.c), whatever the widths.
 *
 * The kernels are centred by H once (HKH): H_w and the U-centring remove
 * every term aᵢ + aⱼ + c, so the result is the same and the data's mean no
 * longer cancels in each replicate.
 */

/* Scratch of weighted_values() for n samples and l layers. */
struct wwork {
        double *stack; /* [l * m * m] the centred, weighted kernels */
        double *dg;    /* [l * n] the debiased diagonal Mᵢᵢ */
        double *r;     /* [n] weighted row sums */
        double *sw;    /* [n] sqrt of the kept weights */
        double *wk;    /* [n] the kept weights */
        double *h;     /* [l * l] */
        size_t *idx;   /* [n] the kept rows */
};

static int wwork_init(struct wwork *ww, size_t n, size_t l)
{
        ww->stack = kdl__malloc(l, n * n * sizeof(double));
        ww->dg = kdl_new(double, l *n);
        ww->r = kdl_new(double, n);
        ww->sw = kdl_new(double, n);
        ww->wk = kdl_new(double, n);
        ww->h = kdl_new(double, l *l);
        ww->idx = kdl_new(size_t, n);
        return ww->stack && ww->dg && ww->r && ww->sw && ww->wk && ww->h && ww->idx ? 0 : -ENOMEM;
}

static void wwork_release(struct wwork *ww)
{
        free(ww->idx);
        free(ww->h);
        free(ww->wk);
        free(ww->sw);
        free(ww->r);
        free(ww->dg);
        free(ww->stack);
}

/* Σ_b w_b K_ab over the @m kept rows: row a of the n×n @k times the weights. */
static double weighted_row(const double *k, size_t n, const struct wwork *ww, size_t m, size_t a)
{
        const double *row = k + ww->idx[a] * n;
        double s = 0.0;

        for (size_t b = 0; b < m; b++)
                s += ww->wk[b] * row[ww->idx[b]];
        return s;
}

/* Biased: sqrt(wₐ w_b) (K_w)ₐ_b of the @m kept rows of the n×n @k into @out
 * [m*m], K_w = H_w K H_wᵀ. */
static void centre_weighted(const double *k, size_t n, const struct wwork *ww, size_t m, double nw,
                            double *out)
{
        const size_t *idx = ww->idx;
        double t = 0.0;

        for (size_t a = 0; a < m; a++) {
                ww->r[a] = weighted_row(k, n, ww, m, a) / nw;
                t += ww->wk[a] * ww->r[a];
        }
        t /= nw;
        for (size_t a = 0; a < m; a++)
                for (size_t b = 0; b < m; b++)
                        out[a * m + b] = ww->sw[a] * ww->sw[b] *
                                         (k[idx[a] * n + idx[b]] - ww->r[a] - ww->r[b] + t);
}

/* Debiased: sqrt(wₐ w_b) Mₐ_b off the diagonal into @out [m*m] (0 on it),
 * and Mₐₐ into @dg [m]. */
static void ucentre_weighted(const double *k, size_t n, const struct wwork *ww, size_t m, double nw,
                             double *out, double *dg)
{
        const size_t *idx = ww->idx;
        double c = 0.0;

        for (size_t a = 0; a < m; a++) {
                ww->r[a] = weighted_row(k, n, ww, m, a) - k[idx[a] * n + idx[a]];
                c += ww->wk[a] * ww->r[a];
        }
        c /= (nw - 1.0) * (nw - 2.0);
        for (size_t a = 0; a < m; a++)
                for (size_t b = 0; b < m; b++) {
                        double v = k[idx[a] * n + idx[b]] - (ww->r[a] + ww->r[b]) / (nw - 2.0) + c;

                        if (a == b)
                                dg[a] = v;
                        out[a * m + b] = a == b ? 0.0 : ww->sw[a] * ww->sw[b] * v;
                }
}

/* The weighted biased and debiased CKA of the @l n×n kernels @k [l*n*n]
 * with weights @w [n] into @lin and @deb [l*l] (NaN where undefined); the
 * sum of the weights is returned. */
static double weighted_values(const double *k, size_t n, size_t l, const double *w,
                              struct wwork *ww, double *lin, double *deb)
{
        size_t m = 0, mm, nn = n * n;
        double nw = 0.0;

        for (size_t i = 0; i < l * l; i++)
                lin[i] = deb[i] = NAN;
        for (size_t i = 0; i < n; i++)
                if (w[i] > 0.0) {
                        ww->idx[m] = i;
                        ww->wk[m] = w[i];
                        ww->sw[m++] = sqrt(w[i]);
                        nw += w[i];
                }
        if (m == 0)
                return nw;
        mm = m * m;
        for (size_t i = 0; i < l; i++)
                centre_weighted(k + i * nn, n, ww, m, nw, ww->stack + i * mm);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int) l, (int) mm, 1.0, ww->stack,
                    (int) mm, 0.0, ww->h, (int) l);
        kdl__cka_normalise_upper(ww->h, l, lin);
        if (nw < 4.0)
                return nw;
        for (size_t i = 0; i < l; i++)
                ucentre_weighted(k + i * nn, n, ww, m, nw, ww->stack + i * mm, ww->dg + i * m);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int) l, (int) mm, 1.0, ww->stack,
                    (int) mm, 0.0, ww->h, (int) l);
        /* The pairs of distinct copies of one sample: wₐ(wₐ - 1) of them. */
        for (size_t i = 0; i < l; i++)
                for (size_t j = i; j < l; j++) {
                        double s = 0.0;

                        for (size_t a = 0; a < m; a++)
                                s += ww->wk[a] * (ww->wk[a] - 1.0) * ww->dg[i * m + a] *
                                     ww->dg[j * m + a];
                        ww->h[i * l + j] += s;
                }
        kdl__cka_normalise_upper(ww->h, l, deb);
        return nw;
}

int kdl_cka_gram_weighted(const kdl_tensor *layers, size_t nlayers, const double *w,
                          kdl_cka_matrix **ret)
{
        size_t n, l = nlayers, ll = l * l;
        double *k = NULL;
        struct wwork ww = {0};
        kdl_cka_matrix *m = NULL;
        int r;

        assert(layers && w && ret);
        r = kdl__cka_check_layers(layers, nlayers, 2);
        if (r < 0)
                return r;
        n = layers[0].shape[0];
        for (size_t i = 0; i < n; i++)
                if (!(w[i] >= 0.0 && isfinite(w[i])))
                        return kdl_error(-KDL_ERANGE, "weight %g of sample %zu is not >= 0", w[i],
                                         i);
        k = kdl__malloc(l, n * n * sizeof(double));
        r = k ? wwork_init(&ww, n, l) : -ENOMEM;
        r = r ?: kdl__cka_matrix_new(l, &m);
        if (r < 0)
                goto out;
        m->biased = kdl_new(double, ll);
        m->debiased = kdl_new(double, ll);
        if (!m->biased || !m->debiased) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < l && r >= 0; i++) {
                r = kdl__cka_kernel_matrix(&layers[i], KDL_CKA_LINEAR, 0.0, k + i * n * n, NULL);
                if (r >= 0)
                        kdl__cka_centre_biased(k + i * n * n, n, ww.r, k + i * n * n);
        }
        if (r < 0)
                goto out;
        m->n = weighted_values(k, n, l, w, &ww, m->biased, m->debiased);
        *ret = m;
        m = NULL;
out:
        kdl_cka_matrix_free(m);
        wwork_release(&ww);
        free(k);
        return r;
}

/* The replicates and (BCa) jackknife values of the centred kernels @kc of
 * the samples @ids into @m, then its summary. */
static int gram_bootstrap(const double *kc, size_t n, const size_t *ids, const kdl_cka_opts *o,
                          kdl_cka_matrix *m)
{
        size_t l = m->nlayers, ll = l * l, ng = 0;
        double *w = kdl_new(double, n);
        size_t *grp = kdl_new(size_t, n);
        struct wwork ww = {0};
        int r;

        m->bootstrap = o->bootstrap;
        m->level = o->level;
        m->interval = o->interval;
        if (o->interval == KDL_CKA_INTERVAL_BCA)
                ng = KDL_CKA_JACKKNIFE_GROUPS;
        m->ngroups = ng;
        m->biased_rep = kdl_new(double, o->bootstrap *ll);
        m->debiased_rep = kdl_new(double, o->bootstrap *ll);
        if (ng) {
                m->biased_jack = kdl_new(double, ng *ll);
                m->debiased_jack = kdl_new(double, ng *ll);
        }
        r = w && grp && m->biased_rep && m->debiased_rep &&
                            (!ng || (m->biased_jack && m->debiased_jack))
                    ? wwork_init(&ww, n, l)
                    : -ENOMEM;
        if (r < 0)
                goto out;
        for (size_t b = 0; b < o->bootstrap; b++) {
                for (size_t i = 0; i < n; i++)
                        w[i] = (double) kdl_sample_poisson1(o->seed, ids[i], b);
                weighted_values(kc, n, l, w, &ww, m->biased_rep + b * ll, m->debiased_rep + b * ll);
        }
        for (size_t i = 0; i < n && ng; i++)
                grp[i] = kdl_sample_group(o->seed, ids[i], ng);
        for (size_t g = 0; g < ng; g++) {
                bool member = false;

                for (size_t i = 0; i < n; i++) {
                        w[i] = grp[i] == g ? 0.0 : 1.0;
                        member |= grp[i] == g;
                }
                if (member)
                        weighted_values(kc, n, l, w, &ww, m->biased_jack + g * ll,
                                        m->debiased_jack + g * ll);
                else
                        for (size_t i = 0; i < ll; i++)
                                m->biased_jack[g * ll + i] = m->debiased_jack[g * ll + i] = NAN;
        }
        r = kdl__cka_intervals(m);
out:
        wwork_release(&ww);
        free(grp);
        free(w);
        return r;
}

int kdl_cka_gram_linear(const kdl_tensor *layers, size_t nlayers, const size_t *ids,
                        const kdl_cka_opts *opts, kdl_cka_matrix **ret)
{
        kdl_cka_opts o;
        kdl_cka_matrix *m = NULL;
        double *kc = NULL;
        int r;

        assert(layers && ret);
        if (opts)
                o = *opts;
        else
                kdl_cka_opts_init(&o);
        assert(ids || !o.bootstrap);
        assert(o.interval < KDL_CKA_INTERVAL_COUNT_);
        if (!(o.level > 0.0 && o.level < 1.0))
                return kdl_error(-KDL_ERANGE, "confidence level %g is not in (0, 1)", o.level);
        r = kdl__cka_gram_centred(layers, nlayers, KDL_CKA_LINEAR, 0.0, &m,
                                  o.bootstrap ? &kc : NULL);
        if (r < 0)
                return r;
        if (o.bootstrap) {
                r = gram_bootstrap(kc, layers[0].shape[0], ids, &o, m);
                if (r < 0)
                        goto out;
        }
        *ret = m;
        m = NULL;
out:
        kdl_cka_matrix_free(m);
        free(kc);
        return r;
}
