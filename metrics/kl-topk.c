/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/base/budget.h"
#include "metrics/kl-internal.h"
#include "metrics/kl-topk.h"
#include "metrics/moments.h"
#include "metrics/pack.h"
#include "metrics/sample.h"
#include "metrics/base/banned.h"

/*
 * Sparse teacher targets against the exact KL (metrics/kl-topk.h).  The
 * values of one temperature sit in `width` = 2 + 3 nk slots: the exact K, hard,
 * then (topk_renorm, topk_tail, sampled) for each k.
 */

#define DNAN ((double) NAN)
#define NSRC 3 /* sources per k */

struct kdl_kl_topk_state {
        size_t c, ntau, nk, kmax, width;
        double *tau;
        size_t *k;
        ptrdiff_t tau1; /* index of a τ of 1, or -1 */
        uint64_t seed;
        size_t n;
        kdl_comoments *cm; /* [ntau * width] of (A, K) */
        double *sabs;      /* [ntau * width] Σ|A - K| */
        struct kdl__kl_reservoir res;
        /* Scratch, reused row by row and block by block. */
        double *at, *et, *as, *es, *v; /* [c] */
        unsigned char *in;             /* [c] 1 for the top k_max classes of the row */
        size_t *top;                   /* [kmax] the row's best classes, best first */
        double *sp, *sq, *spc;         /* [kmax + 1] tail masses; [kmax + 1] spacings */
        double *vals;                  /* [ntau * width, vrows] */
        size_t vrows;
};

static const char *const names[KDL_KL_TOPK_VALUE_COUNT_] = {"hard", "topk_renorm", "topk_tail",
                                                            "sampled"};

const char *kdl_kl_topk_name(enum kdl_kl_topk_value v)
{
        assert((unsigned) v < KDL_KL_TOPK_VALUE_COUNT_);
        return names[v];
}

size_t kdl_kl_topk_dim(enum kdl_kl_topk_value v, size_t k)
{
        return v == KDL_KL_TOPK_HARD ? 1 : 2 * k;
}

/* The slot of @v at the k of index @ik within a temperature's values. */
static size_t slot(enum kdl_kl_topk_value v, size_t ik)
{
        return v == KDL_KL_TOPK_HARD ? 1 : 2 + ik * NSRC + (size_t) (v - KDL_KL_TOPK_RENORM);
}

const kdl_kl_fidelity *kdl_kl_topk_fidelity(const kdl_kl_topk_result *r, size_t itau,
                                            enum kdl_kl_topk_value v, size_t ik)
{
        assert(itau < r->ntau && (v == KDL_KL_TOPK_HARD || ik < r->nk));
        return &r->fid[itau * (2 + NSRC * r->nk) + slot(v, ik)];
}

void kdl_kl_topk_opts_init(kdl_kl_topk_opts *o)
{
        *o = (kdl_kl_topk_opts){.reservoir = KDL_KL_RESERVOIR_DEFAULT};
}

static int check_opts(const kdl_kl_topk_opts *o)
{
        if (o->c < 2)
                return kdl_error(-KDL_ESHAPE, "top-k: expected at least 2 classes, found %zu",
                                 o->c);
        if (o->ntau == 0 || o->nk == 0)
                return kdl_error(-KDL_ESHAPE, "top-k: expected a temperature and a k");
        for (size_t t = 0; t < o->ntau; t++)
                if (!isfinite(o->tau[t]) || o->tau[t] <= 0.0)
                        return kdl_error(-KDL_ERANGE,
                                         "top-k: temperature %g: expected finite and > 0",
                                         o->tau[t]);
        if (o->reservoir == 0)
                return kdl_error(-KDL_ERANGE, "top-k: expected a Spearman reservoir of 1 or more");
        for (size_t i = 0; i < o->nk; i++) {
                if (o->k[i] == 0 || o->k[i] > o->c || o->k[i] > KDL_KL_TOPK_MAX_K)
                        return kdl_error(-KDL_ESHAPE, "top-k: k = %zu: expected 1 to %zu (classes)",
                                         o->k[i],
                                         o->c < KDL_KL_TOPK_MAX_K ? o->c : KDL_KL_TOPK_MAX_K);
                for (size_t j = 0; j < i; j++)
                        if (o->k[j] == o->k[i])
                                return kdl_error(-KDL_ESHAPE, "top-k: k = %zu given twice",
                                                 o->k[i]);
        }
        return 0;
}

void kdl_kl_topk_state_free(kdl_kl_topk_state *s)
{
        if (!s)
                return;
        kdl__kl_reservoir_release(&s->res);
        free(s->vals);
        free(s->spc);
        free(s->sq);
        free(s->sp);
        free(s->top);
        free(s->in);
        free(s->v);
        free(s->es);
        free(s->as);
        free(s->et);
        free(s->at);
        free(s->sabs);
        free(s->cm);
        free(s->k);
        free(s->tau);
        free(s);
}

int kdl_kl_topk_state_new(const kdl_kl_topk_opts *o, kdl_kl_topk_state **ret)
{
        kdl_kl_topk_state *s;
        size_t ns;
        int err;

        assert(o && ret);
        err = check_opts(o);
        if (err < 0)
                return err;
        s = kdl_new(kdl_kl_topk_state, 1);
        if (!s)
                return -ENOMEM;
        s->c = o->c;
        s->ntau = o->ntau;
        s->nk = o->nk;
        s->width = 2 + NSRC * o->nk;
        s->seed = o->seed;
        s->tau1 = -1;
        for (size_t i = 0; i < o->nk; i++)
                s->kmax = o->k[i] > s->kmax ? o->k[i] : s->kmax;
        ns = s->ntau * s->width;
        kdl__kl_reservoir_init(&s->res, o->reservoir, o->seed, ns);
        s->tau = kdl_new(double, s->ntau);
        s->k = kdl_new(size_t, s->nk);
        s->cm = kdl_new(kdl_comoments, ns);
        s->sabs = kdl_new(double, ns);
        s->at = kdl_new(double, s->c);
        s->et = kdl_new(double, s->c);
        s->as = kdl_new(double, s->c);
        s->es = kdl_new(double, s->c);
        s->v = kdl_new(double, s->c);
        s->in = kdl_new(unsigned char, s->c);
        s->top = kdl_new(size_t, s->kmax);
        s->sp = kdl_new(double, s->kmax + 1);
        s->sq = kdl_new(double, s->kmax + 1);
        s->spc = kdl_new(double, s->kmax + 1);
        if (!s->tau || !s->k || !s->cm || !s->sabs || !s->at || !s->et || !s->as || !s->es ||
            !s->v || !s->in || !s->top || !s->sp || !s->sq || !s->spc) {
                kdl_kl_topk_state_free(s);
                return kdl_error(-ENOMEM, "top-k: out of memory for %zu classes", o->c);
        }
        memcpy(s->tau, o->tau, s->ntau * sizeof(double));
        memcpy(s->k, o->k, s->nk * sizeof(size_t));
        for (size_t t = 0; t < s->ntau; t++)
                if (!(s->tau[t] < 1.0) && !(s->tau[t] > 1.0) && s->tau1 < 0)
                        s->tau1 = (ptrdiff_t) t;
        *ret = s;
        return 0;
}

size_t kdl_kl_topk_bytes(const kdl_kl_topk_opts *o, size_t n, size_t rows, size_t *ret_reservoir)
{
        size_t kmax = 0, ns, slots, fixed, res;

        assert(o && ret_reservoir);
        for (size_t i = 0; i < o->nk; i++)
                kmax = o->k[i] > kmax ? o->k[i] : kmax;
        ns = kdl_sat_mul(o->ntau, 2 + NSRC * o->nk);
        slots = kdl__kl_reservoir_room(0, n, o->reservoir);
        /* kdl_kl_topk_state_new(): the state, the statistics per slot, the scratch. */
        fixed = sizeof(kdl_kl_topk_state) + o->ntau * sizeof(double) + o->nk * sizeof(size_t);
        fixed = kdl_sat_add(fixed, kdl_sat_mul(ns, sizeof(kdl_comoments) + sizeof(double)));
        fixed = kdl_sat_add(fixed, kdl_sat_mul(o->c, 5 * sizeof(double) + 1));
        fixed = kdl_sat_add(fixed,
                            kdl_sat_mul(kmax, sizeof(size_t)) + 3 * (kmax + 1) * sizeof(double));
        /* A block's values, and the result of kdl_kl_topk_finalize(). */
        fixed = kdl_sat_add(fixed, kdl_sat_mul(kdl_sat_mul(ns, rows ? rows : 1), sizeof(double)));
        fixed = kdl_sat_add(fixed, kdl_sat_mul(ns, sizeof(kdl_kl_fidelity)));
        /* The reservoir (keys, sample indices, heap, values), then spearman(): three columns,
         * kdl_ranks()'s workspace and the slot order with kdl__kl_reservoir_order()'s pairs. */
        res = kdl_sat_mul(slots, 3 * sizeof(uint64_t));
        res = kdl_sat_add(res, kdl_sat_mul(kdl_sat_mul(slots, ns), sizeof(double)));
        res = kdl_sat_add(res, kdl_sat_mul(slots, 3 * sizeof(double) + sizeof(kdl_ranked) +
                                                          3 * sizeof(size_t)));
        *ret_reservoir = res;
        return fixed;
}

/* Class a ranks below class b: a smaller value, or the same value at a larger class. */
static bool worse(const double *z, ptrdiff_t sz, size_t a, size_t b)
{
        double za = z[(ptrdiff_t) a * sz], zb = z[(ptrdiff_t) b * sz];

        return za < zb || (!(za > zb) && a > b);
}

/* Restore the min-heap (the worst class on top) of @n classes @h below slot @i. */
static void sift_down(const double *z, ptrdiff_t sz, size_t *h, size_t n, size_t i)
{
        for (;;) {
                size_t l = 2 * i + 1, w = i, t;

                if (l < n && worse(z, sz, h[l], h[w]))
                        w = l;
                if (l + 1 < n && worse(z, sz, h[l + 1], h[w]))
                        w = l + 1;
                if (w == i)
                        return;
                t = h[i];
                h[i] = h[w];
                h[w] = t;
                i = w;
        }
}

void kdl_kl_topk_select(const double *z, ptrdiff_t sz, size_t c, size_t k, size_t *ret_idx)
{
        size_t *h = ret_idx;

        assert(k >= 1 && k <= c);
        /* A min-heap of the k best so far: a class enters only if it beats the worst of them
         * (a later class loses a tie). */
        for (size_t i = 0; i < k; i++)
                h[i] = i;
        for (size_t i = k / 2; i-- > 0;)
                sift_down(z, sz, h, k, i);
        for (size_t i = k; i < c; i++)
                if (z[(ptrdiff_t) i * sz] > z[(ptrdiff_t) h[0] * sz]) {
                        h[0] = i;
                        sift_down(z, sz, h, k, 0);
                }
        /* Heap sort: the worst goes last, so the array ends best first. */
        for (size_t n = k; n > 1; n--) {
                size_t t = h[0];

                h[0] = h[n - 1];
                h[n - 1] = t;
                sift_down(z, sz, h, n - 1, 0);
        }
}

/* The mean of log p - log q over k draws from p (metrics/kl-topk.h), from the teacher's
 * probabilities and log-probabilities in s->et and s->at (@ptot = Σ p), the student's scaled
 * logits in s->as and their normaliser @lse_s. */
static double sampled(const kdl_kl_topk_state *s, size_t idx, size_t it, size_t k, double ptot,
                      double lse_s)
{
        const double *p = s->et, *lp = s->at, *as = s->as;
        double *sp = s->spc, cum = 0.0, sum = 0.0;
        uint64_t stream = ((uint64_t) 1 << 61) + ((uint64_t) it << 40) + ((uint64_t) k << 20);
        size_t i = 0;

        /* k sorted uniforms from k + 1 exponential spacings: S_j / S_k, j < k. */
        for (size_t j = 0; j <= k; j++) {
                double e = -log(kdl_sample_uniform(s->seed, idx, stream + j));

                sp[j] = j ? sp[j - 1] + e : e;
        }
        for (size_t j = 0; j < k; j++) {
                double t = sp[j] / sp[k] * ptot;
                size_t x;

                while (i < s->c && cum + p[i] <= t) {
                        cum += p[i];
                        i++;
                }
                x = i < s->c ? i : s->c - 1;
                sum += lp[x] - (as[x] - lse_s);
        }
        return sum / (double) k;
}

/* The values of one sample (teacher row @zt, student row @zs, sample index @idx) into
 * @out[slot * @os] for every temperature's slots. */
static void row_values(kdl_kl_topk_state *s, const double *zt, ptrdiff_t szt, const double *zs,
                       ptrdiff_t szs, size_t idx, double *out, size_t os)
{
        size_t c = s->c, kmax = s->kmax, am;
        double *lp = s->at, *p = s->et, *as = s->as, *es = s->es, *v = s->v, hard = DNAN, rs;

        kdl_kl_topk_select(zt, szt, c, kmax, s->top);
        am = s->top[0];
        for (size_t j = 0; j < kmax; j++)
                s->in[s->top[j]] = 1;
        if (s->tau1 < 0) {
                size_t ams = kdl__kl_softmax(zs, szs, c, 1.0, as, es, &rs);

                hard = -(as[am] - (as[ams] + log1p(rs)));
        }
        for (size_t it = 0; it < s->ntau; it++) {
                double tau = s->tau[it], t2 = tau * tau, rt, lse, lse_s, ipt, ips;
                double mw = 0.0, ptot = 0.0, tp = 0.0, tq = 0.0, *o = out + it * s->width * os;
                size_t amt = kdl__kl_softmax(zt, szt, c, tau, lp, p, &rt);
                size_t ams = kdl__kl_softmax(zs, szs, c, tau, as, es, &rs);

                lse = lp[amt] + log1p(rt);
                lse_s = as[ams] + log1p(rs);
                ipt = 1.0 / (1.0 + rt);
                ips = 1.0 / (1.0 + rs);
                /* As the exact KL of metrics/kl.h, plus the tail masses and Σ p. */
                for (size_t i = 0; i < c; i++) {
                        lp[i] -= lse;
                        p[i] *= ipt;
                        v[i] = (zs[(ptrdiff_t) i * szs] - zt[(ptrdiff_t) i * szt]) / tau;
                        mw += p[i] * v[i];
                        ptot += p[i];
                        if (!s->in[i]) {
                                tp += p[i];
                                tq += es[i];
                        }
                }
                o[0] = t2 * kdl__kl_tilt_centre(lp, p, v, c, mw, NULL);
                if ((ptrdiff_t) it == s->tau1)
                        hard = -(as[am] - lse_s);
                /* Tail masses beyond the j best, summed from the far tail up. */
                s->sp[kmax] = tp;
                s->sq[kmax] = tq * ips;
                for (size_t j = kmax; j-- > 0;) {
                        size_t i = s->top[j];

                        s->sp[j] = s->sp[j + 1] + p[i];
                        s->sq[j] = s->sq[j + 1] + es[i] * ips;
                }
                for (size_t ik = 0; ik < s->nk; ik++) {
                        size_t k = s->k[ik];
                        double ps = 0.0, head = 0.0, ren = 0.0, lps, tail;

                        for (size_t j = 0; j < k; j++) {
                                size_t i = s->top[j];

                                ps += p[i];
                                head += p[i] * (lp[i] - (as[i] - lse_s));
                        }
                        lps = log(ps);
                        for (size_t j = 0; j < k; j++) {
                                size_t i = s->top[j];

                                ren += p[i] / ps * (lp[i] - lps - (as[i] - lse_s));
                        }
                        tail = s->sp[k] > 0.0 ? s->sp[k] * log(s->sp[k] / s->sq[k]) : 0.0;
                        o[slot(KDL_KL_TOPK_RENORM, ik) * os] = t2 * ren;
                        o[slot(KDL_KL_TOPK_TAIL, ik) * os] = t2 * (head + tail);
                        o[slot(KDL_KL_TOPK_SAMPLED, ik) * os] =
                                t2 * sampled(s, idx, it, k, ptot, lse_s);
                }
        }
        for (size_t it = 0; it < s->ntau; it++)
                out[(it * s->width + 1) * os] = hard;
        for (size_t j = 0; j < kmax; j++)
                s->in[s->top[j]] = 0;
}

static int check_block(const kdl_kl_topk_state *s, const kdl_kl_block *b, size_t *ret_m)
{
        size_t m;
        int err;

        if (!b->zt || !b->zs)
                return kdl_error(-KDL_ESHAPE, "top-k: a block needs both logits");
        if (b->ht || b->hs || b->gt || b->gzt || b->gzs)
                return kdl_error(-KDL_ESHAPE, "top-k: a block carries logits only");
        m = b->zt->ndim == 2 ? b->zt->shape[0] : 0;
        err = kdl__kl_check_tensor(b->zt, "teacher logits", m, s->c);
        err = err ?: kdl__kl_check_tensor(b->zs, "student logits", m, s->c);
        err = err ?: kdl__kl_check_finite(b->zt, "teacher logits", b);
        err = err ?: kdl__kl_check_finite(b->zs, "student logits", b);
        *ret_m = m;
        return err;
}

int kdl_kl_topk_accumulate(kdl_kl_topk_state *s, const kdl_kl_block *b)
{
        size_t m = 0, ns = s->ntau * s->width;
        int err;

        assert(s && b);
        err = check_block(s, b, &m);
        if (err < 0 || m == 0)
                return err;
        if (m > s->vrows) {
                if (ns > SIZE_MAX / m || kdl__kl_grow(&s->vals, ns * m) < 0)
                        return kdl_error(-ENOMEM, "top-k: out of memory for a block of %zu rows",
                                         m);
                s->vrows = m;
        }
        err = kdl__kl_reservoir_reserve(&s->res, s->res.n + m);
        if (err < 0)
                return err;
        for (size_t r = 0; r < m; r++)
                row_values(s, b->zt->data + (ptrdiff_t) r * b->zt->stride[0], b->zt->stride[1],
                           b->zs->data + (ptrdiff_t) r * b->zs->stride[0], b->zs->stride[1],
                           kdl__kl_sample_index(b, r), s->vals + r, m);
        for (size_t j = 0; j < ns; j++)
                for (size_t r = 0; r < m; r++)
                        if (!isfinite(s->vals[j * m + r]))
                                return kdl_error(-KDL_ENONFINITE,
                                                 "top-k: %s at tau %g overflowed at sample %zu",
                                                 j % s->width == 0 ? "kl"
                                                 : j % s->width == 1
                                                         ? "hard"
                                                         : names[1 + (j % s->width - 2) % NSRC],
                                                 s->tau[j / s->width], kdl__kl_sample_index(b, r));
        for (size_t j = 0; j < ns; j++) {
                const double *a = s->vals + j * m, *kv = s->vals + (j - j % s->width) * m;

                for (size_t r = 0; r < m; r++) {
                        kdl_comoments_add(&s->cm[j], a[r], kv[r]);
                        s->sabs[j] += fabs(a[r] - kv[r]);
                }
        }
        kdl__kl_reservoir_add_block(&s->res, s->vals, m, b);
        s->n += m;
        return 0;
}

int kdl_kl_topk_merge(kdl_kl_topk_state *into, const kdl_kl_topk_state *from)
{
        size_t ns = into->ntau * into->width;
        int err;

        if (into->c != from->c || into->ntau != from->ntau || into->nk != from->nk ||
            into->seed != from->seed || into->res.cap != from->res.cap ||
            memcmp(into->tau, from->tau, into->ntau * sizeof(double)) ||
            memcmp(into->k, from->k, into->nk * sizeof(size_t)))
                return kdl_error(-KDL_EMISMATCH, "top-k: merging states of different options");
        err = kdl__kl_reservoir_reserve(&into->res, into->res.n + from->res.n);
        if (err < 0)
                return err;
        for (size_t j = 0; j < ns; j++) {
                kdl_comoments_merge(&into->cm[j], &from->cm[j]);
                into->sabs[j] += from->sabs[j];
        }
        kdl__kl_reservoir_merge(&into->res, &from->res);
        into->n += from->n;
        return 0;
}

int kdl_kl_topk_state_pack(const kdl_kl_topk_state *s, void **buf, size_t *len)
{
        const struct kdl__kl_reservoir *r = &s->res;
        size_t ns = s->ntau * s->width;
        struct kdl__packer p = {0};

        assert(s && buf && len);
        kdl__pack(&p, &s->n, sizeof(s->n));
        kdl__pack(&p, s->cm, ns * sizeof(*s->cm));
        kdl__pack(&p, s->sabs, ns * sizeof(*s->sabs));
        kdl__kl_reservoir_pack(&p, r);
        return kdl__pack_done(&p, buf, len);
}

int kdl_kl_topk_state_merge_packed(kdl_kl_topk_state *s, const void *buf, size_t len)
{
        struct kdl__unpacker u = {buf, len, 0};
        size_t ns = s->ntau * s->width;
        kdl_kl_topk_state from = *s; /* the same options; its own sums and reservoir */
        void *cm = NULL, *sabs = NULL;
        int err;

        assert(s && buf);
        kdl__kl_reservoir_init(&from.res, s->res.cap, s->res.seed, s->res.width);
        err = kdl__unpack_get(&u, &from.n, sizeof(from.n), "top-k");
        err = err ?: kdl__unpack_dup(&u, ns * sizeof(*from.cm), &cm, "top-k");
        err = err ?: kdl__unpack_dup(&u, ns * sizeof(*from.sabs), &sabs, "top-k");
        err = err ?: kdl__kl_reservoir_unpack(&u, &from.res, "top-k");
        err = err ?: kdl__unpack_end(&u, "top-k");
        if (!err) {
                from.cm = cm;
                from.sabs = sabs;
                err = kdl_kl_topk_merge(s, &from);
        }
        free(sabs);
        free(cm);
        kdl__kl_reservoir_release(&from.res);
        return err;
}

void kdl_kl_topk_result_free(kdl_kl_topk_result *r)
{
        if (!r)
                return;
        free(r->fid);
        free(r->k);
        free(r->tau);
        free(r);
}

/* Spearman of every slot with the exact K at its temperature, on the reservoir's items in
 * sample order (so the result does not depend on the order of accumulation). */
static int spearman(const kdl_kl_topk_state *s, kdl_kl_topk_result *r)
{
        const struct kdl__kl_reservoir *res = &s->res;
        size_t n = res->n, w = res->width, *order = NULL;
        double *x = kdl_new(double, n), *rk = kdl_new(double, n), *ra = kdl_new(double, n);
        kdl_ranked *tmp = kdl_new(kdl_ranked, n);
        int err = -ENOMEM;

        if (x && rk && ra && tmp && kdl__kl_reservoir_order(res, &order) == 0) {
                /* Per temperature: the ranks of K once, then each slot's against them. */
                for (size_t j = 0; j < s->ntau * s->width; j++) {
                        for (size_t i = 0; i < n; i++)
                                x[i] = res->val[order[i] * w + j];
                        kdl_ranks(x, n, tmp, j % s->width ? ra : rk);
                        r->fid[j].spearman = kdl_pearson(j % s->width ? ra : rk, rk, n);
                }
                err = 0;
        }
        free(order);
        free(tmp);
        free(ra);
        free(rk);
        free(x);
        return err ? kdl_error(err, "top-k: out of memory ranking %zu samples", n) : 0;
}

int kdl_kl_topk_finalize(const kdl_kl_topk_state *s, kdl_kl_topk_result **ret)
{
        size_t ns = s->ntau * s->width;
        kdl_kl_topk_result *r;
        int err;

        if (s->n == 0)
                return kdl_error(-KDL_EMISSING, "top-k: no sample accumulated");
        r = kdl_new(kdl_kl_topk_result, 1);
        if (!r)
                return -ENOMEM;
        r->tau = kdl_new(double, s->ntau);
        r->k = kdl_new(size_t, s->nk);
        r->fid = kdl_new(kdl_kl_fidelity, ns);
        if (!r->tau || !r->k || !r->fid) {
                kdl_kl_topk_result_free(r);
                return -ENOMEM;
        }
        r->n = s->n;
        r->c = s->c;
        r->ntau = s->ntau;
        r->nk = s->nk;
        memcpy(r->tau, s->tau, s->ntau * sizeof(double));
        memcpy(r->k, s->k, s->nk * sizeof(size_t));
        for (size_t j = 0; j < ns; j++) {
                const kdl_comoments *m = &s->cm[j];
                double kmean = s->cm[j - j % s->width].mx;
                size_t js = j % s->width;
                kdl_kl_fidelity *f = &r->fid[j];

                f->available = true;
                f->dim = js == 0   ? s->c
                         : js == 1 ? 1
                                   : kdl_kl_topk_dim(KDL_KL_TOPK_RENORM + (js - 2) % NSRC,
                                                     s->k[(js - 2) / NSRC]);
                f->mean = m->mx;
                f->ratio = kmean > 0.0 ? m->mx / kmean : DNAN;
                f->pearson = kdl_comoments_pearson(m);
                f->relerr = kmean > 0.0 ? s->sabs[j] / ((double) s->n * kmean) : DNAN;
                f->spearman = DNAN;
        }
        r->spearman_n = s->res.n;
        r->spearman_exact = s->res.n == s->n;
        err = spearman(s, r);
        if (err < 0) {
                kdl_kl_topk_result_free(r);
                return err;
        }
        *ret = r;
        return 0;
}
