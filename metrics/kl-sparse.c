/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/kl-internal.h"
#include "metrics/kl-sparse.h"
#include "metrics/base/banned.h"

/* A sparse-only teacher against a dense student (metrics/kl-sparse.h). */

#define NFIX 3 /* hard, tail, mass */

struct kdl_kl_sparse_state {
        kdl_kl_sparse_opts o;
        double *tau;
        size_t n;
        kdl_moments *m; /* [NFIX + ntau] */
        double *vals;   /* [m, NFIX + ntau] of the block being added */
        size_t vrows;
        double *as, *es, *a; /* [c] student scaled logits and exponentials; [k] */
        double ips;          /* 1 / Σ es: es_i * ips = q_i */
        unsigned char *in;   /* [c] */
        size_t *cls;         /* [k] */
};

void kdl_kl_sparse_state_free(kdl_kl_sparse_state *s)
{
        if (!s)
                return;
        free(s->cls);
        free(s->in);
        free(s->a);
        free(s->es);
        free(s->as);
        free(s->vals);
        free(s->m);
        free(s->tau);
        free(s);
}

int kdl_kl_sparse_state_new(const kdl_kl_sparse_opts *o, kdl_kl_sparse_state **ret)
{
        kdl_kl_sparse_state *s;

        if (o->c < 2 || o->k == 0 || o->k > o->c || o->ntau == 0)
                return kdl_error(-KDL_ESHAPE,
                                 "sparse teacher: expected C >= 2, k in [1, C] and a "
                                 "temperature, found C = %zu, k = %zu",
                                 o->c, o->k);
        for (size_t t = 0; t < o->ntau; t++)
                if (!isfinite(o->tau[t]) || o->tau[t] <= 0.0)
                        return kdl_error(-KDL_ERANGE,
                                         "sparse teacher: temperature %g: expected finite and > 0",
                                         o->tau[t]);
        s = kdl_new(kdl_kl_sparse_state, 1);
        if (!s)
                return -ENOMEM;
        s->o = *o;
        s->tau = kdl_new(double, o->ntau);
        s->m = kdl_new(kdl_moments, NFIX + o->ntau);
        s->as = kdl_new(double, o->c);
        s->es = kdl_new(double, o->c);
        s->a = kdl_new(double, o->k);
        s->in = kdl_new(unsigned char, o->c);
        s->cls = kdl_new(size_t, o->k);
        if (!s->tau || !s->m || !s->as || !s->es || !s->a || !s->in || !s->cls) {
                kdl_kl_sparse_state_free(s);
                return kdl_error(-ENOMEM, "sparse teacher: out of memory for %zu classes", o->c);
        }
        memcpy(s->tau, o->tau, o->ntau * sizeof(double));
        s->o.tau = s->tau;
        *ret = s;
        return 0;
}

/* log Σ_j exp(@a[j]), @k values. */
static double logsumexp(const double *a, size_t k)
{
        double mx = a[0], sum = 0.0;

        for (size_t j = 1; j < k; j++)
                mx = a[j] > mx ? a[j] : mx;
        for (size_t j = 0; j < k; j++)
                sum += exp(a[j] - mx);
        return mx + log(sum);
}

/* The student's log-softmax normaliser of z/τ into s->as (scaled logits) and s->es. */
static double student(kdl_kl_sparse_state *s, const double *zs, ptrdiff_t sz, double tau)
{
        double rest;
        size_t am = kdl__kl_softmax(zs, sz, s->o.c, tau, s->as, s->es, &rest);

        s->ips = 1.0 / (1.0 + rest);
        return s->as[am] + log1p(rest);
}

/* The values of one token into @out[NFIX + ntau]; s->cls holds its classes, @v its stored
 * values (stride @sv), @lse its normaliser (NaN without). */
static void token(kdl_kl_sparse_state *s, const double *v, ptrdiff_t sv, double lse,
                  const double *zs, ptrdiff_t sz, double *out)
{
        size_t k = s->o.k, best = 0;
        bool norm = s->o.logprobs || s->o.lse;
        double lse_s, *a = s->a;

        for (size_t j = 1; j < k; j++) {
                double x = v[(ptrdiff_t) j * sv], y = v[(ptrdiff_t) best * sv];

                if (x > y || (!(x < y) && s->cls[j] < s->cls[best]))
                        best = j;
        }
        /* τ = 1: hard, and with the normaliser the teacher's mass on S and topk_tail. */
        lse_s = student(s, zs, sz, 1.0);
        out[KDL_KL_SPARSE_HARD] = -(s->as[s->cls[best]] - lse_s);
        out[KDL_KL_SPARSE_TAIL] = out[KDL_KL_SPARSE_MASS] = (double) NAN;
        if (norm) {
                double head = 0.0, tq = 0.0, lps, tp;

                for (size_t j = 0; j < k; j++) {
                        a[j] = v[(ptrdiff_t) j * sv] - (s->o.logprobs ? 0.0 : lse);
                        s->in[s->cls[j]] = 1;
                }
                for (size_t i = 0; i < s->o.c; i++)
                        tq += s->in[i] ? 0.0 : s->es[i];
                tq *= s->ips;
                for (size_t j = 0; j < k; j++) {
                        s->in[s->cls[j]] = 0;
                        head += exp(a[j]) * (a[j] - (s->as[s->cls[j]] - lse_s));
                }
                lps = logsumexp(a, k);
                tp = lps < 0.0 ? -expm1(lps) : 0.0;
                out[KDL_KL_SPARSE_MASS] = exp(lps);
                out[KDL_KL_SPARSE_TAIL] = head + (tp > 0.0 ? tp * log(tp / tq) : 0.0);
        }
        for (size_t t = 0; t < s->o.ntau; t++) {
                double tau = s->tau[t], l, ren = 0.0;

                lse_s = student(s, zs, sz, tau);
                for (size_t j = 0; j < k; j++)
                        a[j] = v[(ptrdiff_t) j * sv] / tau;
                l = logsumexp(a, k);
                for (size_t j = 0; j < k; j++)
                        ren += exp(a[j] - l) * (a[j] - l - (s->as[s->cls[j]] - lse_s));
                out[NFIX + t] = tau * tau * ren;
        }
}

/* Check @t is 2-D [@m, @cols] and finite. */
static int check(const kdl_tensor *t, const char *what, size_t m, size_t cols)
{
        return kdl__kl_check_tensor(t, what, m, cols) ?: kdl__kl_check_finite(t, what, NULL);
}

int kdl_kl_sparse_accumulate(kdl_kl_sparse_state *s, const kdl_kl_sparse_block *b)
{
        size_t k = s->o.k, c = s->o.c, nv = NFIX + s->o.ntau, m;
        int err;

        assert(b->idx && b->val && b->zs && !b->lse == !s->o.lse);
        m = b->idx->ndim == 2 ? b->idx->shape[0] : 0;
        err = check(b->idx, "teacher logits_topk/indices", m, k);
        err = err ?: check(b->val, "teacher logits_topk values", m, k);
        err = err ?: (b->lse ? check(b->lse, "teacher logits_topk/logsumexp", m, 1) : 0);
        err = err ?: check(b->zs, "student logits", m, c);
        if (err < 0 || m == 0)
                return err;
        if (m > s->vrows) {
                if (kdl__kl_grow(&s->vals, m * nv) < 0)
                        return kdl_error(-ENOMEM, "sparse teacher: out of memory");
                s->vrows = m;
        }
        for (size_t r = 0; r < m; r++) {
                const double *ix = b->idx->data + (ptrdiff_t) r * b->idx->stride[0];

                for (size_t j = 0; j < k; j++) {
                        double x = ix[(ptrdiff_t) j * b->idx->stride[1]];

                        if (!(x >= 0.0 && x < (double) c) || x > floor(x))
                                return kdl_error(-KDL_ERANGE,
                                                 "teacher logits_topk/indices: expected classes "
                                                 "in [0, %zu), found %g at row %zu",
                                                 c, x, r);
                        s->cls[j] = (size_t) x;
                }
                token(s, b->val->data + (ptrdiff_t) r * b->val->stride[0], b->val->stride[1],
                      b->lse ? b->lse->data[(ptrdiff_t) r * b->lse->stride[0]] : (double) NAN,
                      b->zs->data + (ptrdiff_t) r * b->zs->stride[0], b->zs->stride[1],
                      s->vals + r * nv);
        }
        for (size_t i = 0; i < m * nv; i++)
                if (isinf(s->vals[i]))
                        return kdl_error(-KDL_ENONFINITE,
                                         "sparse teacher: a value overflowed at row %zu", i / nv);
        for (size_t r = 0; r < m; r++)
                for (size_t v = 0; v < nv; v++)
                        if (!isnan(s->vals[r * nv + v]))
                                kdl_moments_add(&s->m[v], s->vals[r * nv + v]);
        s->n += m;
        return 0;
}

int kdl_kl_sparse_finalize(const kdl_kl_sparse_state *s, kdl_kl_sparse_result **ret)
{
        size_t nv = NFIX + s->o.ntau;
        kdl_kl_sparse_result *r;

        if (s->n == 0)
                return kdl_error(-KDL_EMISSING, "sparse teacher: no token accumulated");
        r = kdl__calloc(1, sizeof(*r) + nv * sizeof(kdl_moments));
        if (!r)
                return -ENOMEM;
        r->n = s->n;
        r->ntau = s->o.ntau;
        r->normaliser = s->o.logprobs || s->o.lse;
        memcpy(r->v, s->m, nv * sizeof(kdl_moments));
        *ret = r;
        return 0;
}
