/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/cka.h"
#include "metrics/cka-internal.h"
#include "metrics/base/banned.h"

void kdl_cka_matrix_free(kdl_cka_matrix *m)
{
        if (!m)
                return;
        free(m->biased);
        free(m->debiased);
        free(m->minibatch);
        free(m->biased_lo);
        free(m->biased_hi);
        free(m->biased_se);
        free(m->biased_bias);
        free(m->debiased_lo);
        free(m->debiased_hi);
        free(m->debiased_se);
        free(m->debiased_bias);
        free(m->biased_rep);
        free(m->debiased_rep);
        free(m->biased_jack);
        free(m->debiased_jack);
        free(m->biased_sketch_se);
        free(m->debiased_sketch_se);
        free(m);
}

int kdl__cka_matrix_new(size_t nlayers, kdl_cka_matrix **ret)
{
        kdl_cka_matrix *m = kdl_new(kdl_cka_matrix, 1);

        if (!m)
                return -ENOMEM;
        m->nlayers = nlayers;
        *ret = m;
        return 0;
}

/* The feature-space statistics re-expressed around another shift (Chan et al.'s
 * idea), and its two users: kdl_cka_merge() moves @from onto @into's shift,
 * kdl_cka_finalize() onto the mean for the centred and debiased forms, then
 * summarises the bootstrap replicates. */

/* Scratch for moving statistics to another shift. */
struct shiftw {
        double *gv;  /* [dt*l]: rows of block k, column ℓ: (G_kℓ δ_ℓ), for needed (k, ℓ) */
        double *vgv; /* [l*l]: δ_jᵀ G_jk δ_k */
        double *c;   /* [l]: ‖δ_ℓ‖² */
        double *md;  /* [l]: m_ℓ·δ_ℓ */
        double *pp;  /* [l*l]: the shifted P */
};

static int shiftw_init(struct shiftw *w, size_t l, size_t dt)
{
        w->gv = kdl_new(double, dt *l);
        w->vgv = kdl_new(double, l *l);
        w->c = kdl_new(double, l);
        w->md = kdl_new(double, l);
        w->pp = kdl_new(double, l *l);
        return w->gv && w->vgv && w->c && w->md && w->pp ? 0 : -ENOMEM;
}

static void shiftw_release(struct shiftw *w)
{
        free(w->pp);
        free(w->md);
        free(w->c);
        free(w->vgv);
        free(w->gv);
}

/*
 * The statistics of @t re-expressed around a shift moved by @delta
 * (z̃' = z̃ - δ, so a'_ℓ = a_ℓ - 2 z̃_ℓᵀδ_ℓ + ‖δ_ℓ‖²): the products with G
 * the shifted U needs, and the shifted P (needed pairs only) into w->pp.
 */
static void shift_products(const kdl_cka_state *s, const struct kdl__cka_stats *t,
                           const double *delta, struct shiftw *w)
{
        size_t l = s->l, dt = s->dt;
        const size_t *off = s->off;

        memset(w->gv, 0, dt * l * sizeof(double));
        memset(w->vgv, 0, l * l * sizeof(double));
        for (size_t j = 0; j < l; j++) {
                w->c[j] = 0.0;
                w->md[j] = 0.0;
                for (size_t a = off[j]; a < off[j] + s->width[j]; a++) {
                        w->c[j] += delta[a] * delta[a];
                        w->md[j] += t->m[a] * delta[a];
                }
        }
        /* A one-hot layer's block with itself is diag(m). */
        for (size_t q = 0; q < s->nhot; q++) {
                size_t y = s->hot[q];
                double v = 0.0;

                for (size_t a = off[y]; a < off[y] + s->width[y]; a++) {
                        w->gv[a * l + y] = t->m[a] * delta[a];
                        v += t->m[a] * delta[a] * delta[a];
                }
                w->vgv[y * l + y] = v;
        }
        for (size_t b = 0; b < s->nblk; b++) {
                size_t j = s->bj[b], k = s->bk[b];
                int dj = (int) s->width[j], dk = (int) s->width[k], li = (int) l;

                if (j == k) {
                        cblas_dsymv(CblasRowMajor, CblasUpper, dj, 1.0, t->g[b], dj, delta + off[j],
                                    1, 0.0, w->gv + off[j] * l + j, li);
                } else {
                        cblas_dgemv(CblasRowMajor, CblasNoTrans, dj, dk, 1.0, t->g[b], dk,
                                    delta + off[k], 1, 0.0, w->gv + off[j] * l + k, li);
                        cblas_dgemv(CblasRowMajor, CblasTrans, dj, dk, 1.0, t->g[b], dk,
                                    delta + off[j], 1, 0.0, w->gv + off[k] * l + j, li);
                }
                w->vgv[j * l + k] = w->vgv[k * l + j] =
                        cblas_ddot(dj, delta + off[j], 1, w->gv + off[j] * l + k, (int) l);
        }
        for (size_t j = 0; j < l; j++)
                for (size_t k = 0; k < l; k++) {
                        /* du(k, j) = δ_kᵀ U[block k, j] = Σ w a_j t_k. */
                        double du_kj = 0.0, du_jk = 0.0;

                        if (!kdl__cka_has(s, j, k)) {
                                w->pp[j * l + k] = t->p[j * l + k];
                                continue;
                        }
                        for (size_t a = off[k]; a < off[k] + s->width[k]; a++)
                                du_kj += delta[a] * t->u[a * l + j];
                        for (size_t a = off[j]; a < off[j] + s->width[j]; a++)
                                du_jk += delta[a] * t->u[a * l + k];
                        w->pp[j * l + k] = t->p[j * l + k] - 2.0 * du_kj - 2.0 * du_jk +
                                           4.0 * w->vgv[j * l + k] + w->c[k] * t->sa[j] +
                                           w->c[j] * t->sa[k] - 2.0 * w->c[k] * w->md[j] -
                                           2.0 * w->c[j] * w->md[k] + t->n * w->c[j] * w->c[k];
                }
}

/* into += from, with from's statistics moved by @delta = K_into - K_from. */
static void stats_add_shifted(const kdl_cka_state *s, struct kdl__cka_stats *into,
                              const struct kdl__cka_stats *from, const double *delta,
                              struct shiftw *w)
{
        size_t l = s->l, dt = s->dt;
        double nf = from->n;

        shift_products(s, from, delta, w);
        for (size_t i = 0; i < l * l; i++)
                into->p[i] += w->pp[i];
        for (size_t a = 0; a < dt; a++)
                for (size_t j = 0; j < l; j++)
                        into->u[a * l + j] += from->u[a * l + j] - 2.0 * w->gv[a * l + j] +
                                              w->c[j] * from->m[a] - delta[a] * from->sa[j] +
                                              2.0 * delta[a] * w->md[j] - w->c[j] * nf * delta[a];
        for (size_t j = 0; j < l; j++)
                into->sa[j] += from->sa[j] - 2.0 * w->md[j] + nf * w->c[j];
        /* G' = G - m δᵀ - δ mᵀ + n δ δᵀ, block by block. */
        for (size_t b = 0; b < s->nblk; b++) {
                size_t j = s->bj[b], k = s->bk[b], dj = s->width[j], dk = s->width[k];
                const double *mj = from->m + s->off[j], *mk = from->m + s->off[k];
                const double *ej = delta + s->off[j], *ek = delta + s->off[k];
                double *g = into->g[b];

                for (size_t i = 0; i < dj * dk; i++)
                        g[i] += from->g[b][i];
                if (j == k) {
                        cblas_dsyr2(CblasRowMajor, CblasUpper, (int) dj, -1.0, mj, 1, ej, 1, g,
                                    (int) dj);
                        cblas_dsyr(CblasRowMajor, CblasUpper, (int) dj, nf, ej, 1, g, (int) dj);
                } else {
                        cblas_dger(CblasRowMajor, (int) dj, (int) dk, -1.0, mj, 1, ek, 1, g,
                                   (int) dk);
                        cblas_dger(CblasRowMajor, (int) dj, (int) dk, -1.0, ej, 1, mk, 1, g,
                                   (int) dk);
                        cblas_dger(CblasRowMajor, (int) dj, (int) dk, nf, ej, 1, ek, 1, g,
                                   (int) dk);
                }
        }
        for (size_t a = 0; a < dt; a++)
                into->m[a] += from->m[a] - nf * delta[a];
        into->n += nf;
}

int kdl_cka_merge(kdl_cka_state *into, const kdl_cka_state *from)
{
        size_t l = into->l, dt = into->dt;
        double *delta = NULL;
        struct shiftw w = {0};
        int r = 0;

        assert(into && from);
        if (from->l != l || from->dt != dt ||
            memcmp(from->width, into->width, l * sizeof(size_t)) != 0 ||
            memcmp(from->kind, into->kind, l * sizeof(*from->kind)) != 0 ||
            memcmp(from->blk, into->blk, l * l * sizeof(long)) != 0 || !from->ext != !into->ext ||
            (from->ext && memcmp(from->ext, into->ext, l * l * sizeof(bool)) != 0))
                return kdl_error(-KDL_EMISMATCH,
                                 "cannot merge CKA states of different layers or pairs");
        /* The level and interval only matter to the replicates' intervals. */
        if (from->nrep != into->nrep || from->ngroups != into->ngroups ||
            (into->nrep &&
             (from->o.seed != into->o.seed || islessgreater(from->o.level, into->o.level) ||
              from->o.interval != into->o.interval)))
                return kdl_error(-KDL_EMISMATCH,
                                 "cannot merge CKA states with different bootstrap options");
        if (from->o.precision != into->o.precision)
                return kdl_error(-KDL_EMISMATCH,
                                 "cannot merge a %s-precision CKA state into a %s-precision one",
                                 kdl_cka_precision_name(from->o.precision),
                                 kdl_cka_precision_name(into->o.precision));
        if (!from->shifted)
                return 0;
        delta = kdl_new(double, dt);
        if (!delta || shiftw_init(&w, l, dt) < 0) {
                r = -ENOMEM;
                goto out;
        }
        if (!into->shifted) {
                memcpy(into->shift, from->shift, dt * sizeof(double));
                into->shifted = true;
        }
        for (size_t a = 0; a < dt; a++)
                delta[a] = into->shift[a] - from->shift[a];
        for (size_t t = 0; t < into->nstats; t++)
                stats_add_shifted(into, &into->st[t], &from->st[t], delta, &w);
out:
        shiftw_release(&w);
        free(delta);
        return r;
}

/*
 * The centred terms of one statistics set into @e: with μ = m/n the centred blocks are
 * G - m mᵀ/n (a one-hot layer's own block diag(m) - m mᵀ/n in closed form); the
 * debiased terms come from the statistics shifted by μ (S_ℓ = trace of the centred
 * diagonal block, T = Σᵢ sˣᵢ sʸᵢ = shifted P).  A sketched layer's own terms are then
 * made unbiased.  @mu, @w: scratch.
 */
static void stats_terms(const kdl_cka_state *s, const struct kdl__cka_stats *t, double *mu,
                        struct shiftw *w, const struct kdl__cka_terms *e)
{
        size_t l = s->l;
        double n = t->n;

        for (size_t i = 0; i < l * l; i++)
                e->f[i] = e->t[i] = NAN;
        for (size_t i = 0; i < l; i++)
                e->sd[i] = e->ss[i] = NAN;
        if (!(n > 0.0))
                return;
        for (size_t b = 0; b < s->nblk; b++) {
                size_t j = s->bj[b], k = s->bk[b], dj = s->width[j], dk = s->width[k];
                const double *mj = t->m + s->off[j], *mk = t->m + s->off[k];
                double sum = 0.0, diag = 0.0, tr = 0.0;

                for (size_t a = 0; a < dj; a++) {
                        const double *ga = t->g[b] + a * dk;
                        double ma = mj[a] / n, row = 0.0;

                        if (j == k) {
                                double x = ga[a] - ma * mk[a];

                                diag += x * x;
                                tr += x;
                        }
                        for (size_t c = j == k ? a + 1 : 0; c < dk; c++) {
                                double x = ga[c] - ma * mk[c];

                                row += x * x;
                        }
                        sum += row;
                }
                e->f[j * l + k] = e->f[k * l + j] = j == k ? diag + 2.0 * sum : sum;
                if (j == k)
                        e->sd[j] = tr;
        }
        for (size_t q = 0; q < s->nhot; q++) {
                size_t y = s->hot[q];
                const double *my = t->m + s->off[y];
                double s1 = 0.0, s2 = 0.0, s3 = 0.0;

                /* ‖diag(m) - m mᵀ/n‖²_F = Σ m² - 2 Σ m³/n + (Σ m²)²/n². */
                for (size_t c = 0; c < s->width[y]; c++) {
                        s1 += my[c];
                        s2 += my[c] * my[c];
                        s3 += my[c] * my[c] * my[c];
                }
                e->f[y * l + y] = s2 - 2.0 * s3 / n + (s2 / n) * (s2 / n);
                e->sd[y] = s1 - s2 / n;
        }
        for (size_t a = 0; a < s->dt; a++)
                mu[a] = t->m[a] / n;
        shift_products(s, t, mu, w);
        for (size_t j = 0; j < l; j++)
                for (size_t k = 0; k < l; k++)
                        if (kdl__cka_has(s, j, k))
                                e->t[j * l + k] = w->pp[j * l + k];
        for (size_t j = 0; j < l; j++) {
                e->ss[j] = e->sd[j] * e->sd[j];
                if (s->kind[j] == KDL_CKA_LAYER_SKETCH && kdl__cka_has(s, j, j))
                        kdl__cka_sketch_correct(s->width[j], &e->f[j * l + j], e->sd[j],
                                                &e->t[j * l + j], &e->ss[j]);
        }
}

void kdl__cka_terms_cka(size_t l, double n, const struct kdl__cka_terms *e, double *lin,
                        double *deb)
{
        double c = (n - 1.0) * (n - 2.0), r = n / (n - 2.0);

        for (size_t j = 0; j < l; j++)
                for (size_t k = j; k < l; k++) {
                        double fjk = e->f[j * l + k], fjj = e->f[j * l + j], fkk = e->f[k * l + k];
                        double sjk = j == k ? e->ss[j] : e->sd[j] * e->sd[k];
                        double v = NAN, phi_jk, phi_jj, phi_kk;

                        if (fjj > 0.0 && fkk > 0.0 && !isnan(fjk))
                                v = fjk / sqrt(fjj * fkk);
                        lin[j * l + k] = lin[k * l + j] = v;
                        deb[j * l + k] = deb[k * l + j] = NAN;
                        if (isnan(v) || n < 4.0)
                                continue;
                        phi_jk = fjk - r * e->t[j * l + k] + sjk / c;
                        phi_jj = fjj - r * e->t[j * l + j] + e->ss[j] / c;
                        phi_kk = fkk - r * e->t[k * l + k] + e->ss[k] / c;
                        v = phi_jj > 0.0 && phi_kk > 0.0 ? phi_jk / sqrt(phi_jj * phi_kk)
                                                         : (double) NAN;
                        deb[j * l + k] = deb[k * l + j] = v;
                }
}

/* Biased and debiased CKA of one statistics set into @lin and @deb (L×L, NaN for pairs
 * that were not computed); @e, @mu, @w: scratch. */
static void stats_cka(const kdl_cka_state *s, const struct kdl__cka_stats *t,
                      const struct kdl__cka_terms *e, double *mu, struct shiftw *w, double *lin,
                      double *deb)
{
        stats_terms(s, t, mu, w, e);
        kdl__cka_terms_cka(s->l, t->n, e, lin, deb);
}

/* @d = @a - @b, sets of the same state and shift: the sums of the samples of
 * @a that are not in @b (a jackknife group's complement). */
static void stats_sub(const kdl_cka_state *s, const struct kdl__cka_stats *a,
                      const struct kdl__cka_stats *b, struct kdl__cka_stats *d)
{
        size_t l = s->l, dt = s->dt;

        d->n = a->n - b->n;
        for (size_t i = 0; i < dt; i++)
                d->m[i] = a->m[i] - b->m[i];
        for (size_t k = 0; k < s->nblk; k++)
                for (size_t i = 0; i < s->width[s->bj[k]] * s->width[s->bk[k]]; i++)
                        d->g[k][i] = a->g[k][i] - b->g[k][i];
        for (size_t i = 0; i < dt * l; i++)
                d->u[i] = a->u[i] - b->u[i];
        for (size_t i = 0; i < l * l; i++)
                d->p[i] = a->p[i] - b->p[i];
        for (size_t i = 0; i < l; i++)
                d->sa[i] = a->sa[i] - b->sa[i];
}

/* Each jackknife group's delete-a-group values into m->*_jack (NaN for an
 * empty group); @e, @mu and @w: stats_cka()'s scratch. */
static int finalize_jackknife(const kdl_cka_state *s, const struct kdl__cka_terms *e, double *mu,
                              struct shiftw *w, kdl_cka_matrix *m)
{
        size_t ll = s->l * s->l;
        struct kdl__cka_stats d = {0};
        int r;

        m->ngroups = s->ngroups;
        m->biased_jack = kdl_new(double, s->ngroups *ll);
        m->debiased_jack = kdl_new(double, s->ngroups *ll);
        r = kdl__cka_stats_init(&d, s);
        if (r < 0 || !m->biased_jack || !m->debiased_jack) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t g = 0; g < s->ngroups; g++) {
                const struct kdl__cka_stats *grp = &s->st[1 + s->nrep + g];
                double *lin = m->biased_jack + g * ll, *deb = m->debiased_jack + g * ll;

                if (!(grp->n > 0.0)) {
                        for (size_t i = 0; i < ll; i++)
                                lin[i] = deb[i] = NAN;
                        continue;
                }
                stats_sub(s, &s->st[0], grp, &d);
                stats_cka(s, &d, e, mu, w, lin, deb);
        }
out:
        kdl__cka_stats_release(&d, s->nblk);
        return r;
}

/* The replicates' CKA values, the jackknife's (BCa) and the summary into
 * @m; @e, @mu and @w: stats_cka()'s scratch. */
static int finalize_bootstrap(const kdl_cka_state *s, const struct kdl__cka_terms *e, double *mu,
                              struct shiftw *w, kdl_cka_matrix *m)
{
        size_t ll = s->l * s->l, nrep = s->nrep;
        int r;

        m->bootstrap = nrep;
        m->level = s->o.level;
        m->interval = s->o.interval;
        m->biased_rep = kdl_new(double, nrep *ll);
        m->debiased_rep = kdl_new(double, nrep *ll);
        if (!m->biased_rep || !m->debiased_rep)
                return -ENOMEM;
        for (size_t b = 0; b < nrep; b++)
                stats_cka(s, &s->st[b + 1], e, mu, w, m->biased_rep + b * ll,
                          m->debiased_rep + b * ll);
        if (s->ngroups) {
                r = finalize_jackknife(s, e, mu, w, m);
                if (r < 0)
                        return r;
        }
        return kdl__cka_intervals(m);
}

/* The external pairs' terms @f, @t, @sdiag into @e (the main statistics'). */
static void terms_external(const kdl_cka_state *s, const double *f, const double *t,
                           const double *sdiag, const struct kdl__cka_terms *e)
{
        size_t l = s->l;

        for (size_t j = 0; j < l; j++)
                for (size_t k = 0; k < l; k++) {
                        if (!s->ext[j * l + k])
                                continue;
                        e->f[j * l + k] = f[j * l + k];
                        e->t[j * l + k] = t[j * l + k];
                        if (j == k) {
                                e->sd[j] = sdiag[j];
                                e->ss[j] = sdiag[j] * sdiag[j];
                        }
                }
}

static bool any_sketch(const kdl_cka_state *s)
{
        for (size_t j = 0; j < s->l; j++)
                if (s->kind[j] == KDL_CKA_LAYER_SKETCH)
                        return true;
        return false;
}

int kdl_cka_finalize_external(const kdl_cka_state *s, const double *f, const double *t,
                              const double *sdiag, kdl_cka_matrix **ret)
{
        size_t l = s->l, ll = l * l;
        struct kdl__cka_terms e = {0};
        double *mu;
        struct shiftw w = {0};
        kdl_cka_matrix *m = NULL;
        int r;

        assert(s && ret);
        if (!(s->st[0].n > 0.0))
                return kdl_error(-KDL_EMISSING, "CKA: no samples");
        e.f = kdl_new(double, ll);
        e.t = kdl_new(double, ll);
        e.sd = kdl_new(double, l);
        e.ss = kdl_new(double, l);
        mu = kdl_new(double, s->dt);
        r = kdl__cka_matrix_new(l, &m);
        if (r < 0 || !e.f || !e.t || !e.sd || !e.ss || !mu || shiftw_init(&w, l, s->dt) < 0)
                goto nomem;
        m->n = s->st[0].n;
        m->biased = kdl_new(double, ll);
        m->debiased = kdl_new(double, ll);
        if (!m->biased || !m->debiased)
                goto nomem;
        stats_terms(s, &s->st[0], mu, &w, &e);
        if (s->ext && f && t && sdiag)
                terms_external(s, f, t, sdiag, &e);
        kdl__cka_terms_cka(l, m->n, &e, m->biased, m->debiased);
        r = any_sketch(s) ? kdl__cka_sketch_se(s, &s->st[0], &e, m) : 0;
        if (r >= 0 && s->nrep)
                r = finalize_bootstrap(s, &e, mu, &w, m);
        if (r < 0)
                goto out;
        *ret = m;
        m = NULL;
        r = 0;
        goto out;
nomem:
        r = -ENOMEM;
out:
        kdl_cka_matrix_free(m);
        shiftw_release(&w);
        free(mu);
        free(e.ss);
        free(e.sd);
        free(e.t);
        free(e.f);
        return r;
}

int kdl_cka_finalize(const kdl_cka_state *s, kdl_cka_matrix **ret)
{
        return kdl_cka_finalize_external(s, NULL, NULL, NULL, ret);
}
