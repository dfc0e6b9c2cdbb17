/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>

#include <cblas.h>

#include "metrics/base/alloc.h"
#include "metrics/base/budget.h"
#include "metrics/base/error.h"
#include "metrics/cka.h"
#include "metrics/cka-internal.h"
#include "metrics/sample.h"
#include "metrics/base/banned.h"

/*
 * Gaussian sketches of wide layers (docs/cka.md#wide-layers).  With X̂ = X Ω / √r, Ω [D, r]
 * standard normal and A = XᵀX of the centred layer (centring commutes with Ω):
 *
 *   E ‖X̂ᵀY‖²_F = ‖XᵀY‖²_F for Y exact or sketched with an independent Ω: unbiased;
 *   E ‖X̂ᵀX̂‖²_F = (1 + 1/r) ‖A‖²_F + tr(A)²/r,   E (tr X̂ᵀX̂)² = tr(A)² + 2 ‖A‖²_F / r,
 *   E ŝᵢ² = (1 + 2/r) sᵢ²  (ŝᵢ = ‖x̂ᵢ‖², a scaled χ²_r),
 *
 * since for a standard normal ω, E (ωᵀAω)² = 2 tr A² + (tr A)² and, for independent ω, ω',
 * E (ωᵀAω')² = tr A².  Solving the first two for ‖A‖²_F and tr(A)² gives the unbiased
 * self terms of kdl__cka_sketch_correct().
 */

struct kdl_cka_sketch {
        size_t d, r;
        double *omega; /* [d*r] */
};

size_t kdl_cka_sketch_bytes(size_t d, size_t r)
{
        return kdl_sat_mul(kdl_sat_mul(d, r), sizeof(double));
}

int kdl_cka_sketch_new(size_t d, size_t r, uint64_t seed, uint64_t stream, kdl_cka_sketch **ret)
{
        kdl_cka_sketch *k;
        size_t dr;
        int bi, err;

        if (d == 0 || r == 0)
                return kdl_error(-KDL_ESHAPE, "a sketch of width %zu to %zu columns", d, r);
        if (__builtin_mul_overflow(d, r, &dr))
                return kdl_error(-KDL_EOVERFLOW, "a sketch of width %zu to %zu columns", d, r);
        err = kdl__blas_int(d, &bi);
        err = err ?: kdl__blas_int(r, &bi);
        if (err < 0)
                return err;
        k = kdl_new(kdl_cka_sketch, 1);
        if (!k)
                return -ENOMEM;
        k->d = d;
        k->r = r;
        k->omega = kdl__malloc(dr, sizeof(double));
        if (!k->omega) {
                free(k);
                return -ENOMEM;
        }
        /* Box-Muller, one normal per pair of uniforms in (0, 1). */
        for (size_t q = 0; q < dr; q++) {
                double u1 = kdl_sample_uniform(seed, q, stream);
                double u2 = kdl_sample_uniform(seed, q, stream + 1);

                k->omega[q] = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
        }
        *ret = k;
        return 0;
}

int kdl_cka_sketch_apply(const kdl_cka_sketch *k, const kdl_tensor *x, kdl_tensor *out)
{
        size_t rows;
        int bi, err;

        assert(k && x && out);
        rows = x->ndim == 2 ? x->shape[0] : 0;
        if (x->ndim != 2 || x->shape[1] != k->d || x->stride[1] != 1 || out->ndim != 2 ||
            out->shape[0] != rows || out->shape[1] != k->r || !kdl_tensor_is_contiguous(out))
                return kdl_error(-KDL_ESHAPE,
                                 "sketch: expected [rows, %zu] rows in memory order into a "
                                 "contiguous [rows, %zu]",
                                 k->d, k->r);
        if (rows == 0)
                return 0;
        err = kdl__blas_int(rows, &bi);
        err = err ?: kdl__blas_int((size_t) x->stride[0], &bi);
        if (err < 0)
                return err;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int) rows, (int) k->r, (int) k->d,
                    1.0 / sqrt((double) k->r), x->data, (int) x->stride[0], k->omega, (int) k->r,
                    0.0, out->data, (int) k->r);
        return 0;
}

void kdl_cka_sketch_free(kdl_cka_sketch *k)
{
        if (!k)
                return;
        free(k->omega);
        free(k);
}

void kdl__cka_sketch_correct(size_t r, double *f, double sd, double *t, double *ss)
{
        double rr = (double) r, a2;

        if (r < 2) {
                *f = *t = *ss = NAN;
                return;
        }
        a2 = rr * (rr * *f - sd * sd) / ((rr - 1.0) * (rr + 2.0));
        *f = a2;
        *ss = sd * sd - 2.0 * a2 / rr;
        *t /= 1.0 + 2.0 / rr;
}

/* ---- The standard error the sketch adds ------------------------------------------------ */

/*
 * A delete-one jackknife over the r columns of the sketch: the columns are independent
 * and identically distributed (for a pair of sketched layers, column a of each together),
 * and without column a the sketch is that of r - 1 columns once rescaled by r/(r - 1).  So
 * each term without column a follows from the full one and that column's share of it:
 * ‖X̂ᵀY‖² loses the squared norm of the row of X̂ᵀY for column a (and of the column for a
 * sketched Y, plus the entry they share), tr X̂ᵀX̂ its diagonal entry.  The per-sample
 * terms Σ ŝ² are held at their full values: their share of the debiased value is O(1/n).
 */

/* Layer @j's centred block with the layer of block @b's other side, entry (a, c) with a
 * along @j: G - m mᵀ/n, either orientation, the diagonal block mirrored. */
static double centred(const kdl_cka_state *s, const struct kdl__cka_stats *t, size_t b, size_t j,
                      size_t a, size_t c)
{
        size_t bj = s->bj[b], bk = s->bk[b], dk = s->width[bk];
        size_t i0 = bj == j ? a : c, i1 = bj == j ? c : a;

        if (bj == bk && i0 > i1) {
                size_t x = i0;

                i0 = i1;
                i1 = x;
        }
        return t->g[b][i0 * dk + i1] - t->m[s->off[bj] + i0] * t->m[s->off[bk] + i1] / t->n;
}

/* The share of each column a of sketched layer @j in ‖X̂_jᵀY_k‖² (block @b): @q[a], and for a
 * sketched @k of the same width its share along k and their common entry, @qk[a] and
 * @x[a]; NULL when not wanted. */
static void shares(const kdl_cka_state *s, const struct kdl__cka_stats *t, size_t b, size_t j,
                   size_t k, double *q, double *qk, double *x)
{
        size_t r = s->width[j], dk = s->width[k];

        for (size_t a = 0; a < r; a++) {
                double v = 0.0;

                for (size_t c = 0; c < dk; c++) {
                        double e = centred(s, t, b, j, a, c);

                        v += e * e;
                }
                q[a] = v;
                if (qk) {
                        double w = 0.0;

                        for (size_t c = 0; c < dk; c++) {
                                double e = centred(s, t, b, k, a, c);

                                w += e * e;
                        }
                        qk[a] = w;
                        x[a] = centred(s, t, b, j, a, a);
                }
        }
}

/* One side of a pair without column a: its own f and S (corrected when sketched). */
struct side {
        bool sk;
        double f, sd, ss, t; /* f and sd raw when sk */
        const double *q, *d; /* sketched: each column's share of f, its diagonal entry */
};

static void side_without(const struct side *p, size_t r, size_t a, double *f, double *sd,
                         double *ss)
{
        double sc = (double) r / (double) (r - 1), t = p->t;

        if (!p->sk) {
                *f = p->f;
                *sd = p->sd;
                *ss = p->ss;
                return;
        }
        *f = (p->f - 2.0 * p->q[a] + p->d[a] * p->d[a]) * sc * sc;
        *sd = (p->sd - p->d[a]) * sc;
        kdl__cka_sketch_correct(r - 1, f, *sd, &t, ss);
}

/* The jackknife standard error of a statistic's @r leave-one-out values @v. */
static double jack_se(const double *v, size_t r)
{
        double mean = 0.0, ss = 0.0;

        for (size_t a = 0; a < r; a++)
                mean += v[a];
        mean /= (double) r;
        for (size_t a = 0; a < r; a++)
                ss += (v[a] - mean) * (v[a] - mean);
        return sqrt(ss * (double) (r - 1) / (double) r);
}

/* The standard errors of pair (@j, @k) whose self sides are @pj, @pk and cross shares @q
 * (along the sketched one of @j, or both: @qk and the common entries @x), into @m. */
static void pair_se(const kdl_cka_state *s, const struct kdl__cka_terms *e, size_t j, size_t k,
                    const struct side *pj, const struct side *pk, const double *q, const double *qk,
                    const double *x, double *vb, double *vd, kdl_cka_matrix *m)
{
        size_t l = s->l, r = pj->sk ? s->width[j] : s->width[k];
        double sc = (double) r / (double) (r - 1), n = m->n;
        struct kdl__cka_terms one;
        double f[4], t[4], sd[2], ss[2], lin[4], deb[4];

        one = (struct kdl__cka_terms){.f = f, .t = t, .sd = sd, .ss = ss};
        t[0] = e->t[j * l + j];
        t[1] = t[2] = e->t[j * l + k];
        t[3] = e->t[k * l + k];
        for (size_t a = 0; a < r; a++) {
                double fjk = e->f[j * l + k];

                side_without(pj, r, a, &f[0], &sd[0], &ss[0]);
                side_without(pk, r, a, &f[3], &sd[1], &ss[1]);
                if (qk)
                        fjk = (fjk - q[a] - qk[a] + x[a] * x[a]) * sc * sc;
                else
                        fjk = (fjk - q[a]) * sc;
                f[1] = f[2] = fjk;
                kdl__cka_terms_cka(2, n, &one, lin, deb);
                vb[a] = lin[1];
                vd[a] = deb[1];
        }
        m->biased_sketch_se[j * l + k] = m->biased_sketch_se[k * l + j] = jack_se(vb, r);
        m->debiased_sketch_se[j * l + k] = m->debiased_sketch_se[k * l + j] = jack_se(vd, r);
}

/* Sketched layer @j's own shares: each column's squared row norm @q of its centred block
 * and its diagonal entry @d; the sum of @q, its raw ‖X̂ᵀX̂‖²_F. */
static double self_shares(const kdl_cka_state *s, const struct kdl__cka_stats *t, size_t j,
                          double *q, double *d)
{
        size_t b = (size_t) s->blk[j * s->l + j];
        double f = 0.0;

        shares(s, t, b, j, j, q, NULL, NULL);
        for (size_t a = 0; a < s->width[j]; a++) {
                d[a] = centred(s, t, b, j, a, a);
                f += q[a];
        }
        return f;
}

static struct side side_of(const kdl_cka_state *s, const struct kdl__cka_terms *e, size_t j,
                           double *const *q, double *const *d, const double *fraw)
{
        size_t l = s->l;
        bool sk = q[j] != NULL;

        return (struct side){.sk = sk,
                             .f = sk ? fraw[j] : e->f[j * l + j],
                             .sd = e->sd[j],
                             .ss = e->ss[j],
                             .t = e->t[j * l + j],
                             .q = q[j],
                             .d = d[j]};
}

/* Whether pair (@j, @k) has a jackknife: a sketched side, its terms, equal sketch widths. */
static bool jackknifed(const kdl_cka_state *s, size_t j, size_t k, double *const *q,
                       const kdl_cka_matrix *m)
{
        size_t l = s->l;

        if (j == k || s->blk[j * l + k] < 0 || (!q[j] && !q[k]) || isnan(m->biased[j * l + k]))
                return false;
        if ((q[j] && !q[k] && s->kind[k] == KDL_CKA_LAYER_SKETCH) ||
            (q[k] && !q[j] && s->kind[j] == KDL_CKA_LAYER_SKETCH))
                return false; /* a sketched side without its own block */
        return !(q[j] && q[k] && s->width[j] != s->width[k]);
}

int kdl__cka_sketch_se(const kdl_cka_state *s, const struct kdl__cka_stats *t,
                       const struct kdl__cka_terms *e, kdl_cka_matrix *m)
{
        size_t l = s->l, rmax = 1;
        double **q = kdl_new(double *, l), **d = kdl_new(double *, l), *fraw = kdl_new(double, l);
        double *sc[5] = {0};
        int err = 0;

        m->biased_sketch_se = kdl_new(double, l *l);
        m->debiased_sketch_se = kdl_new(double, l *l);
        if (!q || !d || !fraw || !m->biased_sketch_se || !m->debiased_sketch_se) {
                err = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < l * l; i++)
                m->biased_sketch_se[i] = m->debiased_sketch_se[i] = NAN;
        for (size_t j = 0; j < l && !err; j++) {
                if (s->kind[j] != KDL_CKA_LAYER_SKETCH || s->blk[j * l + j] < 0 || s->width[j] < 3)
                        continue;
                rmax = s->width[j] > rmax ? s->width[j] : rmax;
                q[j] = kdl_new(double, s->width[j]);
                d[j] = kdl_new(double, s->width[j]);
                if (!q[j] || !d[j])
                        err = -ENOMEM;
                else
                        fraw[j] = self_shares(s, t, j, q[j], d[j]);
                m->biased_sketch_se[j * l + j] = m->debiased_sketch_se[j * l + j] = 0.0;
        }
        for (int i = 0; i < 5 && !err; i++)
                if (!(sc[i] = kdl_new(double, rmax)))
                        err = -ENOMEM;
        for (size_t j = 0; j < l && !err; j++)
                for (size_t k = j + 1; k < l; k++) {
                        size_t b = (size_t) s->blk[j * l + k];
                        struct side pj = side_of(s, e, j, q, d, fraw),
                                    pk = side_of(s, e, k, q, d, fraw);

                        if (!jackknifed(s, j, k, q, m))
                                continue;
                        if (q[j])
                                shares(s, t, b, j, k, sc[0], q[k] ? sc[1] : NULL, sc[2]);
                        else
                                shares(s, t, b, k, j, sc[0], NULL, NULL);
                        pair_se(s, e, j, k, &pj, &pk, sc[0], q[j] && q[k] ? sc[1] : NULL, sc[2],
                                sc[3], sc[4], m);
                }
out:
        for (int i = 0; i < 5; i++)
                free(sc[i]);
        for (size_t j = 0; q && d && j < l; j++) {
                free(q[j]);
                free(d[j]);
        }
        free(fraw);
        free(d);
        free(q);
        return err;
}
