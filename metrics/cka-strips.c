/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "metrics/base/alloc.h"
#include "metrics/base/budget.h"
#include "metrics/base/error.h"
#include "metrics/cka.h"
#include "metrics/base/banned.h"

/*
 * Exact products of wide layers in column strips (docs/cka.md#wide-layers): ‖XᵀY‖²_F is
 * the sum over strips S of X's columns of ‖X[:, S]ᵀ Y‖²_F, so one pass per strip computes
 * it within any memory, the layers centred by their exact means (known from an earlier
 * pass, so no shift is needed).  A one-hot partner's product is the strip's class sums.
 */

#define CHUNK_ROWS 256 /* rows centred and multiplied at a time */

struct strip {
        size_t owner, c0, c1;
};

struct kdl_cka_strips {
        size_t l;
        size_t *width;
        enum kdl_cka_layer *kind;
        bool *ext;     /* [l*l] symmetric */
        double **mean; /* [l] copies, for the layers in an external pair (else NULL) */
        size_t nstrip; /* passes */
        struct strip *strip;
        size_t maxw;         /* widest strip */
        double **h;          /* [l] the current strip's product with each partner */
        double *colsum;      /* [maxw] the strip's column sums (one-hot partners' centring) */
        double *xs, *yc, *a; /* scratch: [CHUNK*maxw], [CHUNK*max partner D], [CHUNK*l] */
        size_t cur;          /* the strip whose products h holds; nstrip: none */
        double *f, *t, *sd;  /* [l*l], [l*l], [l] results */
};

static bool hot(const enum kdl_cka_layer *kinds, size_t j)
{
        return kinds && kinds[j] == KDL_CKA_LAYER_ONEHOT;
}

/* Whether external pair (@j, @k) is owned by @j: the dense one of a pair with a one-hot
 * layer, else the first. */
static bool owns(const enum kdl_cka_layer *kinds, const bool *pairs, size_t l, size_t j, size_t k)
{
        if (!(pairs[j * l + k] || pairs[k * l + j]) || hot(kinds, j))
                return false;
        return hot(kinds, k) || j <= k;
}

static bool owner(const enum kdl_cka_layer *kinds, const bool *pairs, size_t l, size_t j)
{
        for (size_t k = 0; k < l; k++)
                if (owns(kinds, pairs, l, j, k))
                        return true;
        return false;
}

/* The total and the largest dense width of the layers in an external pair: a strip holds
 * its product with every one of them (the buffers serve every owner). */
static void ext_widths(size_t l, const size_t *widths, const enum kdl_cka_layer *kinds,
                       const bool *pairs, size_t *ret_sum, size_t *ret_max)
{
        size_t sum = 0, mx = 0;

        for (size_t k = 0; k < l; k++) {
                bool used = false;

                for (size_t j = 0; j < l; j++)
                        used |= pairs[j * l + k] || pairs[k * l + j];
                if (!used)
                        continue;
                sum = kdl_sat_add(sum, widths[k]);
                if (!hot(kinds, k))
                        mx = widths[k] > mx ? widths[k] : mx;
        }
        *ret_sum = sum;
        *ret_max = mx;
}

/* The strip width within @max_bytes (0 when not even one column fits; at most the widest
 * owner @dmax) and its bytes: the products (w ΣD), the column sums, the scratch of a
 * chunk and the results. */
static size_t strip_width(size_t l, size_t dmax, size_t sum, size_t mx, size_t max_bytes,
                          size_t *ret_bytes)
{
        size_t fixed = kdl_sat_mul(CHUNK_ROWS, kdl_sat_add(mx, l)), per, w;

        fixed = kdl_sat_add(fixed, 2 * l * l + l + sum);
        per = kdl_sat_add(sum, CHUNK_ROWS + 1);
        w = max_bytes / sizeof(double) > fixed ? (max_bytes / sizeof(double) - fixed) / per : 0;
        w = w > dmax ? dmax : w;
        *ret_bytes = kdl_sat_mul(kdl_sat_add(fixed, kdl_sat_mul(w ? w : 1, per)), sizeof(double));
        return w;
}

/* The strip width of @max_bytes for these layers, its bytes, and the passes. */
static size_t plan(size_t l, const size_t *widths, const enum kdl_cka_layer *kinds,
                   const bool *pairs, size_t max_bytes, size_t *ret_passes, size_t *ret_bytes)
{
        size_t sum, mx, dmax = 0, w, passes = 0;

        ext_widths(l, widths, kinds, pairs, &sum, &mx);
        for (size_t j = 0; j < l; j++)
                if (owner(kinds, pairs, l, j))
                        dmax = widths[j] > dmax ? widths[j] : dmax;
        w = strip_width(l, dmax, sum, mx, max_bytes, ret_bytes);
        for (size_t j = 0; j < l; j++)
                if (owner(kinds, pairs, l, j))
                        passes = kdl_sat_add(passes, w ? (widths[j] + w - 1) / w : SIZE_MAX);
        if (!dmax)
                *ret_bytes = 0;
        *ret_passes = passes;
        return w;
}

void kdl_cka_strips_plan(size_t nlayers, const size_t *widths, const enum kdl_cka_layer *kinds,
                         const bool *pairs, size_t max_bytes, size_t *ret_passes, size_t *ret_bytes)
{
        plan(nlayers, widths, kinds, pairs, max_bytes, ret_passes, ret_bytes);
}

void kdl_cka_strips_free(kdl_cka_strips *s)
{
        if (!s)
                return;
        for (size_t j = 0; j < s->l; j++) {
                if (s->mean)
                        free(s->mean[j]);
                if (s->h)
                        free(s->h[j]);
        }
        free(s->mean);
        free(s->h);
        free(s->colsum);
        free(s->xs);
        free(s->yc);
        free(s->a);
        free(s->f);
        free(s->t);
        free(s->sd);
        free(s->strip);
        free(s->ext);
        free(s->kind);
        free(s->width);
        free(s);
}

/* The strips of every owner at the width within @max_bytes, into s->strip. */
static int strips_layout(kdl_cka_strips *s, size_t max_bytes)
{
        size_t l = s->l, b, w, n = 0, passes;

        w = plan(l, s->width, s->kind, s->ext, max_bytes, &passes, &b);
        if (passes && !w)
                return kdl_budget_check(b, max_bytes, "cka", NULL,
                                        "a strip of one column of a wide layer with its "
                                        "partners");
        s->maxw = w;
        s->strip = kdl_new(struct strip, passes ? passes : 1);
        if (!s->strip)
                return -ENOMEM;
        for (size_t j = 0; j < l; j++)
                for (size_t c0 = 0; owner(s->kind, s->ext, l, j) && c0 < s->width[j]; c0 += w)
                        s->strip[n++] =
                                (struct strip){j, c0, c0 + w < s->width[j] ? c0 + w : s->width[j]};
        s->nstrip = n;
        s->cur = n;
        return 0;
}

/* The copies and buffers of a new @s whose layout is set. */
static int strips_alloc(kdl_cka_strips *s, const double *const *means)
{
        size_t l = s->l, mx = 1;

        s->mean = kdl_new(double *, l);
        s->h = kdl_new(double *, l);
        s->f = kdl_new(double, l *l);
        s->t = kdl_new(double, l *l);
        s->sd = kdl_new(double, l);
        s->colsum = kdl_new(double, s->maxw ? s->maxw : 1);
        s->a = kdl_new(double, CHUNK_ROWS *l);
        if (!s->mean || !s->h || !s->f || !s->t || !s->sd || !s->colsum || !s->a)
                return -ENOMEM;
        for (size_t j = 0; j < l; j++) {
                bool used = false;

                for (size_t k = 0; k < l; k++)
                        used |= s->ext[j * l + k];
                if (!used)
                        continue;
                s->mean[j] = kdl_new(double, s->width[j]);
                s->h[j] = kdl__malloc(s->width[j], (s->maxw ? s->maxw : 1) * sizeof(double));
                if (!s->mean[j] || !s->h[j])
                        return -ENOMEM;
                memcpy(s->mean[j], means[j], s->width[j] * sizeof(double));
                if (!hot(s->kind, j))
                        mx = s->width[j] > mx ? s->width[j] : mx;
        }
        s->xs = kdl__malloc(CHUNK_ROWS, (s->maxw ? s->maxw : 1) * sizeof(double));
        s->yc = kdl__malloc(CHUNK_ROWS, mx * sizeof(double));
        return s->xs && s->yc ? 0 : -ENOMEM;
}

int kdl_cka_strips_new(size_t nlayers, const size_t *widths, const enum kdl_cka_layer *kinds,
                       const bool *pairs, const double *const *means, size_t max_bytes,
                       kdl_cka_strips **ret)
{
        size_t l = nlayers;
        kdl_cka_strips *s;
        int err;

        assert(widths && pairs && means && ret);
        for (size_t j = 0; j < l; j++)
                for (size_t k = 0; k < l; k++)
                        if ((pairs[j * l + k] && hot(kinds, j) && hot(kinds, k)) ||
                            (kinds && kinds[j] == KDL_CKA_LAYER_SKETCH && pairs[j * l + k]))
                                return kdl_error(-KDL_ESHAPE,
                                                 "column strips of layers %zu and "
                                                 "%zu: neither dense",
                                                 j, k);
        s = kdl_new(kdl_cka_strips, 1);
        if (!s)
                return -ENOMEM;
        s->l = l;
        s->width = kdl_new(size_t, l);
        s->kind = kdl_new(enum kdl_cka_layer, l);
        s->ext = kdl_new(bool, l *l);
        err = s->width && s->kind && s->ext ? 0 : -ENOMEM;
        for (size_t j = 0; j < l && !err; j++) {
                s->width[j] = widths[j];
                s->kind[j] = kinds ? kinds[j] : KDL_CKA_LAYER_DENSE;
                for (size_t k = 0; k < l; k++)
                        s->ext[j * l + k] = pairs[j * l + k] || pairs[k * l + j];
        }
        err = err ?: strips_layout(s, max_bytes);
        err = err ?: strips_alloc(s, means);
        if (err < 0) {
                kdl_cka_strips_free(s);
                return err;
        }
        for (size_t i = 0; i < l * l; i++)
                s->f[i] = s->t[i] = 0.0;
        *ret = s;
        return 0;
}

size_t kdl_cka_strips_passes(const kdl_cka_strips *s)
{
        return s->nstrip;
}

/* The class of row @i of one-hot block @b, checked. */
static int class_of(const kdl_cka_strips *s, size_t k, const kdl_tensor *b, size_t i, size_t *ret)
{
        double x = KDL_AT2(b, i, 0);

        if (!(x >= 0.0 && x < (double) s->width[k]) || islessgreater(x, floor(x)))
                return kdl_error(-KDL_ERANGE, "layer %zu: class %g of row %zu is outside 0..%zu", k,
                                 x, i, s->width[k] - 1);
        *ret = (size_t) x;
        return 0;
}

/* First pass: the centred squared norms of rows @r0 .. @r0 + @nb of every layer in an
 * external pair, their sums S and the sums of their products T of the external pairs. */
static int chunk_norms(kdl_cka_strips *s, const kdl_tensor *blocks, size_t r0, size_t nb)
{
        size_t l = s->l, c;
        int err;

        for (size_t j = 0; j < l; j++) {
                const double *mu = s->mean[j];
                double pp = 0.0;

                if (!mu)
                        continue;
                for (size_t q = 0; q < s->width[j] && hot(s->kind, j); q++)
                        pp += mu[q] * mu[q];
                for (size_t i = 0; i < nb; i++) {
                        double sq = 0.0;

                        if (hot(s->kind, j)) {
                                err = class_of(s, j, &blocks[j], r0 + i, &c);
                                if (err < 0)
                                        return err;
                                sq = 1.0 - 2.0 * mu[c] + pp;
                        } else {
                                for (size_t q = 0; q < s->width[j]; q++) {
                                        double x = KDL_AT2(&blocks[j], r0 + i, q) - mu[q];

                                        sq += x * x;
                                }
                        }
                        s->a[i * l + j] = sq;
                        s->sd[j] += sq;
                }
        }
        for (size_t j = 0; j < l; j++)
                for (size_t k = j; k < l; k++)
                        for (size_t i = 0; i < nb && s->ext[j * l + k]; i++)
                                s->t[j * l + k] += s->a[i * l + j] * s->a[i * l + k];
        return 0;
}

/* Rows @r0 .. @r0 + @nb into the products of the current strip. */
static int chunk_strip(kdl_cka_strips *s, const kdl_tensor *blocks, size_t r0, size_t nb)
{
        const struct strip *st = &s->strip[s->cur];
        size_t l = s->l, j = st->owner, w = st->c1 - st->c0, c;
        const double *mj = s->mean[j];
        int err;

        for (size_t i = 0; i < nb; i++)
                for (size_t q = 0; q < w; q++) {
                        double x = KDL_AT2(&blocks[j], r0 + i, st->c0 + q) - mj[st->c0 + q];

                        s->xs[i * w + q] = x;
                        s->colsum[q] += x;
                }
        for (size_t k = 0; k < l; k++) {
                size_t dk = s->width[k];
                double *h = s->h[k];

                if (!owns(s->kind, s->ext, l, j, k))
                        continue;
                if (hot(s->kind, k)) {
                        for (size_t i = 0; i < nb; i++) {
                                err = class_of(s, k, &blocks[k], r0 + i, &c);
                                if (err < 0)
                                        return err;
                                for (size_t q = 0; q < w; q++)
                                        h[c * w + q] += s->xs[i * w + q];
                        }
                        continue;
                }
                for (size_t i = 0; i < nb; i++)
                        for (size_t q = 0; q < dk; q++)
                                s->yc[i * dk + q] = KDL_AT2(&blocks[k], r0 + i, q) - s->mean[k][q];
                cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int) w, (int) dk, (int) nb,
                            1.0, s->xs, (int) w, s->yc, (int) dk, 1.0, h, (int) dk);
        }
        return 0;
}

int kdl_cka_strips_accumulate(kdl_cka_strips *s, size_t pass, const kdl_tensor *blocks)
{
        size_t rows = blocks[0].ndim == 2 ? blocks[0].shape[0] : 0;
        int err = 0;

        assert(s && blocks && pass < s->nstrip);
        if (s->cur != pass) {
                s->cur = pass;
                for (size_t k = 0; k < s->l; k++)
                        if (s->h[k])
                                memset(s->h[k], 0, s->width[k] * s->maxw * sizeof(double));
                memset(s->colsum, 0, s->maxw * sizeof(double));
        }
        for (size_t r0 = 0; r0 < rows && !err; r0 += CHUNK_ROWS) {
                size_t nb = rows - r0 < CHUNK_ROWS ? rows - r0 : CHUNK_ROWS;

                err = pass == 0 ? chunk_norms(s, blocks, r0, nb) : 0;
                err = err ?: chunk_strip(s, blocks, r0, nb);
        }
        return err;
}

void kdl_cka_strips_pass_end(kdl_cka_strips *s, size_t pass)
{
        const struct strip *st;
        size_t l, j, w;

        assert(s && pass < s->nstrip);
        if (s->cur != pass)
                return; /* no block: nothing to add */
        st = &s->strip[pass];
        l = s->l;
        j = st->owner;
        w = st->c1 - st->c0;
        for (size_t k = 0; k < l; k++) {
                const double *h = s->h[k];
                double sum = 0.0;

                if (!owns(s->kind, s->ext, l, j, k))
                        continue;
                for (size_t r = 0; r < s->width[k] && hot(s->kind, k); r++)
                        for (size_t q = 0; q < w; q++) {
                                double x = h[r * w + q] - s->mean[k][r] * s->colsum[q];

                                sum += x * x;
                        }
                for (size_t e = 0; e < w * s->width[k] && !hot(s->kind, k); e++)
                        sum += h[e] * h[e];
                s->f[j * l + k] += sum;
        }
        s->cur = s->nstrip;
}

void kdl_cka_strips_terms(const kdl_cka_strips *s, double *f, double *t, double *sdiag)
{
        size_t l = s->l;

        for (size_t j = 0; j < l; j++) {
                sdiag[j] = s->ext[j * l + j] ? s->sd[j] : (double) NAN;
                for (size_t k = 0; k < l; k++) {
                        bool e = s->ext[j * l + k];

                        f[j * l + k] = e ? s->f[j * l + k] + (j == k ? 0.0 : s->f[k * l + j])
                                         : (double) NAN;
                        t[j * l + k] = e ? s->t[j <= k ? j * l + k : k * l + j] : (double) NAN;
                }
        }
}
