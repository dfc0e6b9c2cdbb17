/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/cka.h"
#include "metrics/moments.h"
#include "metrics/split.h"
#include "metrics/split-internal.h"
#include "metrics/base/banned.h"

/*
 * The domain level of the split metric from the head weights (metrics/split.h):
 * the cosine matrices S^t, S^s of the class rows, their agreement (Pearson
 * over the pairs i < j, also with the soft confusion matrix) and the linear
 * CKA of W_t and W_s with the classes as examples.
 */

int kdl__split_check_head(const kdl_tensor *w, size_t c, const char *who)
{
        size_t row;

        if (w->ndim != 2 || w->shape[0] != c || w->shape[1] < 1)
                return kdl_error(-KDL_ESHAPE,
                                 "split: %s head weight must be [%zu, d] with d >= 1, got %zu-D "
                                 "[%zu, %zu]",
                                 who, c, w->ndim, w->shape[0], w->ndim > 1 ? w->shape[1] : 0);
        if (kdl_tensor_check_finite(w, &row) < 0)
                return kdl_error(-KDL_ENONFINITE, "split: non-finite %s head weight in row %zu",
                                 who, row);
        return 0;
}

/* K = A A^T (C x C, full) for a contiguous [C, d] matrix A. */
static int gram(const double *a, size_t c, size_t d, double *k)
{
        int ic, id, err;

        err = kdl__blas_int(c, &ic);
        if (err < 0)
                return err;
        err = kdl__blas_int(d, &id);
        if (err < 0)
                return err;
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, ic, id, 1.0, a, id, 0.0, k, ic);
        for (size_t i = 0; i < c; i++)
                for (size_t j = 0; j < i; j++)
                        k[i * c + j] = k[j * c + i];
        return 0;
}

/* max(|w_i|, cos_eps) of row @i of @w. */
static double row_norm(const kdl_tensor *w, size_t i, double cos_eps)
{
        double nrm = 0.0;

        for (size_t j = 0; j < w->shape[1]; j++) {
                double v = KDL_AT2(w, i, j);

                nrm += v * v;
        }
        return fmax(sqrt(nrm), cos_eps);
}

/* The cosine matrix of @w's rows, C x C. */
static int head_cos(const kdl_tensor *w, double cos_eps, double *ret_cos)
{
        size_t c = w->shape[0], d = w->shape[1];
        double *a = kdl_new(double, c *d);
        int err;

        if (!a)
                return -ENOMEM;
        for (size_t i = 0; i < c; i++) {
                double nrm = row_norm(w, i, cos_eps);

                for (size_t j = 0; j < d; j++)
                        a[i * d + j] = KDL_AT2(w, i, j) / nrm;
        }
        err = gram(a, c, d, ret_cos);
        free(a);
        return err;
}

/* Pearson correlation over the pairs i < j of two C x C matrices; @x is
 * symmetrised ((x_ij + x_ji)/2); pairs are kept where @keep is NULL or
 * keep[i] && keep[j].  @buf: room for C (C - 1) doubles. */
double kdl__split_pairs_pearson(const double *x, const double *y, size_t c, const size_t *keep,
                                double *buf)
{
        double *px = buf, *py = buf + c * (c - 1) / 2;
        size_t n = 0;

        for (size_t i = 0; i < c; i++)
                for (size_t j = i + 1; j < c; j++)
                        if (!keep || (keep[i] && keep[j])) {
                                px[n] = 0.5 * (x[i * c + j] + x[j * c + i]);
                                py[n] = y[i * c + j];
                                n++;
                        }
        return kdl_pearson(px, py, n);
}

/* The cosine matrix of head @w into a new *@ret_cos (caller frees it, also
 * after a failure). */
static int one_head(const kdl_tensor *w, size_t c, double cos_eps, double **ret_cos)
{
        *ret_cos = kdl_new(double, c *c);
        if (!*ret_cos)
                return -ENOMEM;
        return head_cos(w, cos_eps, *ret_cos);
}

/* Linear CKA of the two heads with the classes as examples (kdl_cka_gram()'s
 * biased estimate: the Gram matrices of the class-centred rows). */
static int heads_cka(const kdl_tensor *wt, const kdl_tensor *ws, double *ret)
{
        kdl_tensor heads[2] = {*wt, *ws};
        kdl_cka_matrix *m = NULL;
        int err;

        heads[0].owner = heads[1].owner = false; /* borrowed views */
        err = kdl_cka_gram(heads, 2, KDL_CKA_LINEAR, 0.0, &m);
        if (err < 0)
                return err;
        *ret = m->biased[1];
        kdl_cka_matrix_free(m);
        return 0;
}

int kdl__split_heads(size_t c, double cos_eps, const kdl_tensor *wt, const kdl_tensor *ws,
                     double *pairs, kdl_split_result *r)
{
        int err = 0;

        r->pearson_heads = (double) NAN;
        r->cka_heads = (double) NAN;
        if (wt) {
                err = one_head(wt, c, cos_eps, &r->cos_teacher);
                if (err < 0)
                        return err;
                r->has_head_teacher = true;
                r->d_teacher = wt->shape[1];
        }
        if (ws) {
                err = one_head(ws, c, cos_eps, &r->cos_student);
                if (err < 0)
                        return err;
                r->has_head_student = true;
                r->d_student = ws->shape[1];
        }
        if (wt && ws) {
                r->pearson_heads =
                        kdl__split_pairs_pearson(r->cos_teacher, r->cos_student, c, NULL, pairs);
                err = heads_cka(wt, ws, &r->cka_heads);
        }
        return err;
}

/* ---- Without C x C matrices (the blocked mode) ------------------------------ */

/* Head rows normalised at once for the traces (fewer when C is smaller). */
#define TRACE_ROWS ((size_t) 256)

static size_t trace_rows(size_t c)
{
        return c < TRACE_ROWS ? c : TRACE_ROWS;
}

void kdl__split_inv_norms(const kdl_tensor *w, double cos_eps, double *ret)
{
        for (size_t i = 0; i < w->shape[0]; i++)
                ret[i] = 1.0 / row_norm(w, i, cos_eps);
}

int kdl__split_cos_rows(const double *rows, size_t ld, size_t c, size_t d, const double *inv,
                        size_t i0, size_t i1, double *ret)
{
        size_t m = c - i0;
        int im, in, id, ild, err;

        err = kdl__blas_int(m, &im);
        err = err ?: kdl__blas_int(i1 - i0, &in);
        err = err ?: kdl__blas_int(d, &id);
        err = err ?: kdl__blas_int(ld, &ild);
        if (err < 0)
                return err;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, in, im, id, 1.0, rows + i0 * ld, ild,
                    rows + i0 * ld, ild, 0.0, ret, im);
        for (size_t i = i0; i < i1; i++)
                for (size_t j = i0; j < c; j++)
                        ret[(i - i0) * m + (j - i0)] *= inv[i] * inv[j];
        return 0;
}

/* The sums of one head's cosines over the pairs i < j, from row chunks. */
struct head_sums {
        size_t d;
        double *u;      /* Σ_i ŵ_i, d */
        double *chunk;  /* trace_rows(C) x d normalised rows */
        double *g;      /* Ŵᵀ Ŵ, d x d, upper triangle */
        double *a;      /* a_i = |ŵ_i|² of the chunk's rows */
        double sa, saa; /* Σ a_i, Σ a_i² */
};

static void head_sums_release(struct head_sums *h)
{
        free(h->u);
        free(h->chunk);
        free(h->g);
        free(h->a);
}

static int head_sums_init(struct head_sums *h, size_t c, size_t d)
{
        *h = (struct head_sums){.d = d};
        h->u = kdl_new(double, d);
        h->chunk = kdl__malloc(trace_rows(c) * d, sizeof(double));
        h->g = kdl_new(double, d *d);
        h->a = kdl_new(double, trace_rows(c));
        return h->u && h->chunk && h->g && h->a ? 0 : -ENOMEM;
}

/* Rows [@i0, @i1) of @w, normalised, into @h (chunk, a, u, sa, saa; g by the caller). */
static void head_chunk(const kdl_tensor *w, double cos_eps, size_t i0, size_t i1,
                       struct head_sums *h)
{
        for (size_t i = i0; i < i1; i++) {
                double *row = h->chunk + (i - i0) * h->d, nrm = row_norm(w, i, cos_eps), a = 0.0;

                for (size_t j = 0; j < h->d; j++) {
                        row[j] = KDL_AT2(w, i, j) / nrm;
                        a += row[j] * row[j];
                        h->u[j] += row[j];
                }
                h->a[i - i0] = a;
                h->sa += a;
                h->saa += a * a;
        }
}

/* |G|²_F of a symmetric d x d matrix from its upper triangle. */
static double sym_fro2(const double *g, size_t d)
{
        double s = 0.0;

        for (size_t i = 0; i < d; i++) {
                s += g[i * d + i] * g[i * d + i];
                for (size_t j = i + 1; j < d; j++)
                        s += 2.0 * g[i * d + j] * g[i * d + j];
        }
        return s;
}

static double dot(const double *x, const double *y, size_t n)
{
        double s = 0.0;

        for (size_t k = 0; k < n; k++)
                s += x[k] * y[k];
        return s;
}

/* Centred sums of a head's cosines over @n pairs from @h: Σx into *@ret_s, Σ(x - x̄)² returned. */
static double centred_sq(const struct head_sums *h, double n, double *ret_s)
{
        double s = 0.5 * (dot(h->u, h->u, h->d) - h->sa);
        double ss = 0.5 * (sym_fro2(h->g, h->d) - h->saa);

        *ret_s = s;
        return ss - s * s / n;
}

/* Pearson of S^t and S^s over the pairs i < j from traces of d x d products. */
static int heads_pearson_traces(const kdl_tensor *wt, const kdl_tensor *ws, double cos_eps,
                                double *ret)
{
        size_t c = wt->shape[0], dt = wt->shape[1], ds = ws->shape[1];
        struct head_sums t = {0}, s = {0}; /* released even when not made */
        double *gts = NULL, sab = 0.0, n, st, ss, ctt, css, cts;
        int idt, ids, err;

        err = kdl__blas_int(dt, &idt);
        err = err ?: kdl__blas_int(ds, &ids);
        if (err < 0)
                return err;
        err = head_sums_init(&t, c, dt);
        err = err ?: head_sums_init(&s, c, ds);
        gts = kdl_new(double, dt *ds);
        if (err < 0 || !gts) {
                err = -ENOMEM;
                goto out;
        }
        for (size_t i0 = 0; i0 < c; i0 += TRACE_ROWS) {
                size_t i1 = c - i0 < TRACE_ROWS ? c : i0 + TRACE_ROWS;
                int rows = (int) (i1 - i0);

                head_chunk(wt, cos_eps, i0, i1, &t);
                head_chunk(ws, cos_eps, i0, i1, &s);
                sab += dot(t.a, s.a, i1 - i0);
                cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, idt, rows, 1.0, t.chunk, idt,
                            1.0, t.g, idt);
                cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, ids, rows, 1.0, s.chunk, ids,
                            1.0, s.g, ids);
                cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, idt, ids, rows, 1.0, t.chunk,
                            idt, s.chunk, ids, 1.0, gts, ids);
        }
        n = 0.5 * (double) c * (double) (c - 1);
        ctt = centred_sq(&t, n, &st);
        css = centred_sq(&s, n, &ss);
        cts = 0.5 * (dot(gts, gts, dt * ds) - sab) - st * ss / n;
        *ret = kdl_pearson_sums(ctt, css, cts);
out:
        free(gts);
        head_sums_release(&t);
        head_sums_release(&s);
        return err;
}

/* The CKA state of the heads of @c classes: products of trace_rows(@c) rows. */
static kdl_cka_opts cka_opts(size_t c)
{
        kdl_cka_opts o;

        kdl_cka_opts_init(&o);
        o.block_rows = trace_rows(c);
        return o;
}

/* Linear CKA of the two heads in feature space (the cka metric's streaming
 * state, the Gram form's value without the C x C Grams). */
static int heads_cka_feature(const kdl_tensor *wt, const kdl_tensor *ws, double *ret)
{
        size_t widths[2] = {wt->shape[1], ws->shape[1]};
        kdl_tensor heads[2] = {*wt, *ws};
        kdl_cka_opts o = cka_opts(wt->shape[0]);
        kdl_cka_state *st = NULL;
        kdl_cka_matrix *m = NULL;
        int err;

        heads[0].owner = heads[1].owner = false; /* borrowed views */
        err = kdl_cka_state_new(2, widths, &o, &st);
        err = err ?: kdl_cka_accumulate(st, heads, NULL);
        err = err ?: kdl_cka_finalize(st, &m);
        if (!err)
                *ret = m->biased[1];
        kdl_cka_matrix_free(m);
        kdl_cka_state_free(st);
        return err;
}

size_t kdl__split_heads_traces_bytes(size_t c, size_t dt, size_t ds)
{
        kdl_cka_opts o = cka_opts(c);
        size_t widths[2] = {dt, ds}, cka = kdl_cka_state_bytes(2, widths, &o);
        double r = (double) trace_rows(c);
        double b = 8.0 * ((double) dt * (double) dt + (double) ds * (double) ds +
                          (double) dt * (double) ds + (r + 1.0) * (double) (dt + ds) + 2.0 * r);

        /* The traces are freed before the CKA state is made. */
        if (cka == SIZE_MAX || b >= (double) SIZE_MAX)
                return SIZE_MAX;
        return (size_t) b > cka ? (size_t) b : cka;
}

void kdl__split_heads_given(const kdl_tensor *wt, const kdl_tensor *ws, kdl_split_result *r)
{
        r->pearson_heads = (double) NAN;
        r->cka_heads = (double) NAN;
        r->has_head_teacher = wt != NULL;
        r->has_head_student = ws != NULL;
        r->d_teacher = wt ? wt->shape[1] : 0;
        r->d_student = ws ? ws->shape[1] : 0;
}

int kdl__split_heads_traces(double cos_eps, const kdl_tensor *wt, const kdl_tensor *ws,
                            kdl_split_result *r)
{
        int err = 0;

        kdl__split_heads_given(wt, ws, r);
        if (wt && ws) {
                err = heads_pearson_traces(wt, ws, cos_eps, &r->pearson_heads);
                err = err ?: heads_cka_feature(wt, ws, &r->cka_heads);
        }
        return err;
}
