/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/base/rng.h"
#include "metrics/kl.h"
#include "metrics/moments.h"
#include "metrics/base/banned.h"

#define NV   KDL_KL_VALUE_COUNT_
#define DNAN ((double) NAN)

static const char *const value_names[NV] = {
        [KDL_KL_EXACT] = "kl",
        [KDL_KL_LOGIT_FISHER] = "logit_fisher",
        [KDL_KL_LOGIT_CENTERED_L2] = "logit_centered_l2",
        [KDL_KL_LOGIT_L2] = "logit_l2",
        [KDL_KL_PROB_L2] = "prob_l2",
        [KDL_KL_FEATURE_L2] = "feature_l2",
        [KDL_KL_FEATURE_HEAD] = "feature_head",
        [KDL_KL_GRADIENT_FISHER] = "gradient_fisher",
        [KDL_KL_GRADIENT_EMPIRICAL] = "gradient_empirical",
        [KDL_KL_GRADIENT_LOGIT_L2] = "gradient_logit_l2",
};

const char *kdl_kl_name(enum kdl_kl_value v)
{
        assert(v < NV);
        return value_names[v];
}

const char *kdl_kl_source(enum kdl_kl_value v)
{
        assert(v < NV);
        switch (v) {
        case KDL_KL_PROB_L2:
                return "probabilities";
        case KDL_KL_FEATURE_L2:
        case KDL_KL_FEATURE_HEAD:
                return "features";
        case KDL_KL_GRADIENT_FISHER:
        case KDL_KL_GRADIENT_EMPIRICAL:
        case KDL_KL_GRADIENT_LOGIT_L2:
                return "gradients";
        default:
                return "logits";
        }
}

/* ---- Small helpers ----------------------------------------------------------- */

static int check_block_tensor(const kdl_tensor *t, const char *what, size_t m, size_t cols)
{
        if (t->ndim != 2)
                return kdl_error(-KDL_ESHAPE, "%s: expected 2-D, got %zu-D", what, t->ndim);
        if (t->shape[0] != m || t->shape[1] != cols)
                return kdl_error(-KDL_ESHAPE, "%s: expected [%zu, %zu], got [%zu, %zu]", what, m,
                                 cols, t->shape[0], t->shape[1]);
        return 0;
}

/* The index of row @r of block @b. */
static size_t sample_index(const kdl_kl_block *b, size_t r)
{
        return b->samples ? b->samples[r] : b->row0 + r;
}

static int check_finite(const kdl_tensor *t, const char *what, const kdl_kl_block *b)
{
        size_t row;

        if (kdl_tensor_check_finite(t, &row) < 0)
                return kdl_error(-KDL_ENONFINITE, "%s: non-finite value at sample %zu", what,
                                 b ? sample_index(b, row) : row);
        return 0;
}

/* Grow *p to hold n doubles (contents not kept). */
static int grow(double **p, size_t n)
{
        double *q = kdl__malloc(n ? n : 1, sizeof(double));

        if (!q)
                return -ENOMEM;
        free(*p);
        *p = q;
        return 0;
}

/* φ(v) = e^v - 1 - v ≥ 0.  For |v| < 0.1 its Taylor series (to v^12, relative
 * error < 1e-20); otherwise expm1(v) - v, whose cancellation costs at most a
 * factor 2/|v| <= 20 ulps there. */
static double phi(double v)
{
        static const double inv_fact[] = {
                1.0 / 2,       1.0 / 6,        1.0 / 24,        1.0 / 120,
                1.0 / 720,     1.0 / 5040,     1.0 / 40320,     1.0 / 362880,
                1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600,
        };
        size_t k = sizeof(inv_fact) / sizeof(inv_fact[0]);
        double r;

        if (fabs(v) >= 0.1)
                return expm1(v) - v;
        r = inv_fact[--k];
        while (k-- > 0)
                r = r * v + inv_fact[k];
        return v * v * r;
}

/* log-softmax of x/tau (x strided by sx) into out[c]; returns the argmax.
 * The log-normaliser is max + log1p(Σ_{k != argmax} e^{x_k - max}), so that
 * log p of a saturated class keeps its tiny value instead of rounding to 0. */
static size_t log_softmax(const double *x, ptrdiff_t sx, size_t c, double tau, double *out)
{
        double mx = -INFINITY, rest = 0.0, lse;
        size_t am = 0;

        for (size_t k = 0; k < c; k++) {
                out[k] = x[(ptrdiff_t) k * sx] / tau;
                if (out[k] > mx) {
                        mx = out[k];
                        am = k;
                }
        }
        for (size_t k = 0; k < c; k++)
                if (k != am)
                        rest += exp(out[k] - mx);
        lse = mx + log1p(rest);
        for (size_t k = 0; k < c; k++)
                out[k] -= lse;
        return am;
}

/* ---- Pass 1: projector ------------------------------------------------------- */

struct kdl_kl_proj_state {
        size_t d_s, d_t;
        size_t n;
        double *mu_s, *mu_t; /* [d_s], [d_t] running means */
        double *mss;         /* [d_s, d_s] upper triangle (row-major) of Σ s_c s_cᵀ */
        double *mst;         /* [d_s, d_t] Σ s_c t_cᵀ */
        double sst;          /* Σ ‖t_c‖² */
        double *work;        /* centred block [rows, d_s + d_t] + block means */
        size_t work_rows;
};

int kdl_kl_proj_state_new(size_t d_s, size_t d_t, kdl_kl_proj_state **ret)
{
        kdl_kl_proj_state *s;
        size_t nss, nst;
        int err;

        assert(ret);
        if (d_s == 0 || d_t == 0)
                return kdl_error(-KDL_ESHAPE, "projector widths must be positive, got %zu -> %zu",
                                 d_s, d_t);
        err = kdl_mul_size(d_s, d_s, &nss);
        if (err < 0)
                return err;
        err = kdl_mul_size(d_s, d_t, &nst);
        if (err < 0)
                return err;
        s = kdl_new(kdl_kl_proj_state, 1);
        if (!s)
                return -ENOMEM;
        s->d_s = d_s;
        s->d_t = d_t;
        s->mu_s = kdl_new(double, d_s);
        s->mu_t = kdl_new(double, d_t);
        s->mss = kdl_new(double, nss);
        s->mst = kdl_new(double, nst);
        if (!s->mu_s || !s->mu_t || !s->mss || !s->mst) {
                kdl_kl_proj_state_free(s);
                return -ENOMEM;
        }
        *ret = s;
        return 0;
}

void kdl_kl_proj_state_free(kdl_kl_proj_state *s)
{
        if (!s)
                return;
        free(s->mu_s);
        free(s->mu_t);
        free(s->mss);
        free(s->mst);
        free(s->work);
        free(s);
}

/* Chan et al.'s update of centred moments: into (n_a samples) += a batch of
 * n_b samples with means mb_s, mb_t; the batch's own centred moments were
 * already added.  Adds (n_a n_b / n) δ δᵀ and moves the means. */
static void proj_shift(kdl_kl_proj_state *s, size_t nb, const double *mb_s, const double *mb_t,
                       double *ds, double *dt)
{
        size_t na = s->n, n = na + nb;
        double w = (double) na * (double) nb / (double) n, f = (double) nb / (double) n;
        double dtt = 0.0;

        for (size_t i = 0; i < s->d_s; i++)
                ds[i] = mb_s[i] - s->mu_s[i];
        for (size_t j = 0; j < s->d_t; j++) {
                dt[j] = mb_t[j] - s->mu_t[j];
                dtt += dt[j] * dt[j];
        }
        if (na > 0) {
                for (size_t i = 0; i < s->d_s; i++) {
                        double *row = s->mss + i * s->d_s;

                        for (size_t k = i; k < s->d_s; k++)
                                row[k] += w * ds[i] * ds[k];
                        row = s->mst + i * s->d_t;
                        for (size_t j = 0; j < s->d_t; j++)
                                row[j] += w * ds[i] * dt[j];
                }
                s->sst += w * dtt;
        }
        for (size_t i = 0; i < s->d_s; i++)
                s->mu_s[i] += f * ds[i];
        for (size_t j = 0; j < s->d_t; j++)
                s->mu_t[j] += f * dt[j];
        s->n = n;
}

int kdl_kl_proj_accumulate(kdl_kl_proj_state *s, const kdl_tensor *hs, const kdl_tensor *ht)
{
        size_t m, w, need;
        double *sc, *tc, *mb_s, *mb_t, *ds, *dt, tss = 0.0;
        int err, bm, bs, bt;

        assert(s && hs && ht);
        if (hs->ndim != 2 || ht->ndim != 2)
                return kdl_error(-KDL_ESHAPE, "projector: features must be 2-D");
        m = hs->shape[0];
        err = check_block_tensor(hs, "student features", m, s->d_s);
        if (err < 0)
                return err;
        err = check_block_tensor(ht, "teacher features", m, s->d_t);
        if (err < 0)
                return err;
        if (m == 0)
                return 0;
        err = check_finite(hs, "student features", NULL);
        if (err < 0)
                return err;
        err = check_finite(ht, "teacher features", NULL);
        if (err < 0)
                return err;
        if ((err = kdl__blas_int(m, &bm)) < 0 || (err = kdl__blas_int(s->d_s, &bs)) < 0 ||
            (err = kdl__blas_int(s->d_t, &bt)) < 0)
                return err;

        w = s->d_s + s->d_t;
        if (m > s->work_rows) {
                err = kdl_mul_size(m + 2, w, &need);
                if (err < 0)
                        return err;
                err = grow(&s->work, need);
                if (err < 0)
                        return err;
                s->work_rows = m;
        }
        /* Layout: sc [m, d_s] | tc [m, d_t] | mb_s | mb_t | ds | dt. */
        sc = s->work;
        tc = sc + m * s->d_s;
        mb_s = tc + m * s->d_t;
        mb_t = mb_s + s->d_s;
        ds = mb_t + s->d_t;
        dt = ds + s->d_s;

        /* Block means, then the block centred on its own means (two-pass). */
        memset(mb_s, 0, w * sizeof(double));
        for (size_t r = 0; r < m; r++) {
                for (size_t i = 0; i < s->d_s; i++)
                        mb_s[i] += KDL_AT2(hs, r, i);
                for (size_t j = 0; j < s->d_t; j++)
                        mb_t[j] += KDL_AT2(ht, r, j);
        }
        for (size_t i = 0; i < w; i++)
                mb_s[i] /= (double) m;
        for (size_t r = 0; r < m; r++) {
                for (size_t i = 0; i < s->d_s; i++)
                        sc[r * s->d_s + i] = KDL_AT2(hs, r, i) - mb_s[i];
                for (size_t j = 0; j < s->d_t; j++) {
                        double t = KDL_AT2(ht, r, j) - mb_t[j];

                        tc[r * s->d_t + j] = t;
                        tss += t * t;
                }
        }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, bs, bm, 1.0, sc, bs, 1.0, s->mss, bs);
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, bs, bt, bm, 1.0, sc, bs, tc, bt, 1.0,
                    s->mst, bt);
        s->sst += tss;
        proj_shift(s, m, mb_s, mb_t, ds, dt);
        return 0;
}

int kdl_kl_proj_merge(kdl_kl_proj_state *into, const kdl_kl_proj_state *from)
{
        double *ds, *dt;

        assert(into && from);
        if (into->d_s != from->d_s || into->d_t != from->d_t)
                return kdl_error(-KDL_ESHAPE, "projector merge: widths %zu->%zu and %zu->%zu",
                                 into->d_s, into->d_t, from->d_s, from->d_t);
        if (from->n == 0)
                return 0;
        ds = kdl_new(double, into->d_s + into->d_t);
        if (!ds)
                return -ENOMEM;
        dt = ds + into->d_s;
        for (size_t i = 0; i < into->d_s; i++) {
                for (size_t k = i; k < into->d_s; k++)
                        into->mss[i * into->d_s + k] += from->mss[i * into->d_s + k];
                for (size_t j = 0; j < into->d_t; j++)
                        into->mst[i * into->d_t + j] += from->mst[i * into->d_t + j];
        }
        into->sst += from->sst;
        proj_shift(into, from->n, from->mu_s, from->mu_t, ds, dt);
        free(ds);
        return 0;
}

void kdl_kl_projector_free(kdl_kl_projector *p)
{
        if (!p)
                return;
        free(p->pt);
        free(p->b);
        free(p);
}

int kdl_kl_proj_finalize(const kdl_kl_proj_state *s, kdl_kl_projector **ret)
{
        size_t d_s = s->d_s, d_t = s->d_t, rank = 0;
        double *v = NULL, *lam = NULL, *x = NULL, *y = NULL;
        kdl_kl_projector *p = NULL;
        double tol, sse, cross = 0.0, quad = 0.0;
        lapack_int info;
        int err, bs, bt;

        assert(s && ret);
        if (s->n < 2)
                return kdl_error(-KDL_ESHAPE, "projector: needs at least 2 samples, got %zu", s->n);
        if ((err = kdl__blas_int(d_s, &bs)) < 0 || (err = kdl__blas_int(d_t, &bt)) < 0)
                return err;
        err = -ENOMEM;
        p = kdl_new(kdl_kl_projector, 1);
        v = kdl_new(double, d_s *d_s);
        lam = kdl_new(double, d_s);
        x = kdl_new(double, d_s *d_t);
        y = kdl_new(double, d_s *d_t);
        if (!p || !v || !lam || !x || !y)
                goto out;
        p->pt = kdl_new(double, d_s *d_t);
        p->b = kdl_new(double, d_t);
        if (!p->pt || !p->b)
                goto out;

        /* M_ss = V Λ Vᵀ; dsyevd reads the upper triangle (row-major). */
        memcpy(v, s->mss, d_s * d_s * sizeof(double));
        info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', bs, v, bs, lam);
        if (info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR) {
                err = kdl_error(-ENOMEM, "out of memory in LAPACK");
                goto out;
        }
        assert(info >= 0);
        if (info > 0) {
                err = kdl_error(-KDL_ENOCONV, "projector: eigensolver did not converge");
                goto out;
        }
        if (!(lam[d_s - 1] > 0.0)) {
                err = kdl_error(-KDL_ESINGULAR, "projector: the student features have no variance");
                goto out;
        }
        /* Eigenvalues of a Gram matrix are known to about eps·λ_max, so any
         * below d_s·eps·λ_max are noise: drop them (minimum-norm solution). */
        tol = (double) d_s * DBL_EPSILON * lam[d_s - 1];

        /* Aᵀ = M_ss⁺ M_st = V Λ⁺ Vᵀ M_st. */
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, bs, bt, bs, 1.0, v, bs, s->mst, bt,
                    0.0, x, bt);
        for (size_t i = 0; i < d_s; i++) {
                double f = 0.0;

                if (lam[i] > tol) {
                        f = 1.0 / lam[i];
                        rank++;
                }
                for (size_t j = 0; j < d_t; j++)
                        x[i * d_t + j] *= f;
        }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bs, bt, bs, 1.0, v, bs, x, bt, 0.0,
                    p->pt, bt);

        /* b = μ_t - A μ_s. */
        memcpy(p->b, s->mu_t, d_t * sizeof(double));
        cblas_dgemv(CblasRowMajor, CblasTrans, bs, bt, -1.0, p->pt, bt, s->mu_s, 1, 1.0, p->b, 1);

        /* SSE = Σ‖t_c‖² - 2 tr(A M_st) + tr(A M_ss Aᵀ), valid for any A. */
        cblas_dsymm(CblasRowMajor, CblasLeft, CblasUpper, bs, bt, 1.0, s->mss, bs, p->pt, bt, 0.0,
                    y, bt);
        for (size_t k = 0; k < d_s * d_t; k++) {
                cross += p->pt[k] * s->mst[k];
                quad += p->pt[k] * y[k];
        }
        sse = s->sst - 2.0 * cross + quad;
        if (sse < 0.0)
                sse = 0.0;

        p->d_s = d_s;
        p->d_t = d_t;
        p->fitted = true;
        p->n = s->n;
        p->rank = rank;
        p->r2 = s->sst > 0.0 ? 1.0 - sse / s->sst : DNAN;
        *ret = p;
        p = NULL;
        err = 0;
out:
        kdl_kl_projector_free(p);
        free(y);
        free(x);
        free(lam);
        free(v);
        return err;
}

/* ---- Pass 2: values and fidelity --------------------------------------------- */

struct kdl_kl_state {
        /* What the blocks carry (fixed at _new). */
        size_t c, ntau, d_s, d_t;
        double *tau; /* [ntau] */
        bool feat, head, gradf, gradz, fitted;
        bool avail[NV];
        double *w;      /* [c, d_t] W_t */
        double *pt, *b; /* projector [d_s, d_t], [d_t] when fitted */
        size_t proj_rank;
        double *q; /* [d_t, rank] orthonormal basis of the row space of W_t */
        size_t rank;
        size_t cap;
        uint64_t seed;

        /* Sufficient statistics, index [itau * NV + v]. */
        size_t n;
        double *mean, *m2, *cok, *sabs;
        double esq, vsq;     /* Σ‖e‖², Σ‖Qᵀe‖² */
        double *mu_t, sst_t; /* teacher feature mean [d_t] and Σ‖h^t - μ_t‖² */

        /* Spearman reservoir: bottom-cap keys, max-heap of slots. */
        size_t rn, ralloc;
        uint64_t *rkey;
        size_t *ridx;
        double *rval; /* [ralloc, ntau * NV] */
        size_t *heap;

        /* Scratch. */
        size_t wrows, vm;
        double *vals;            /* [ntau * NV, vm] values of the last block */
        double *e, *u, *y, *hsp; /* [wrows, d_t], [wrows, c], [wrows, rank], [wrows, d_s] */
        double *lpt, *lps, *pr;  /* [c] */
        double *bmean, *bm2, *bcok, *bsabs, *dlt; /* [ntau * NV] */
        double *tmu;                              /* [d_t] */
};

void kdl_kl_state_free(kdl_kl_state *s)
{
        if (!s)
                return;
        free(s->tau);
        free(s->w);
        free(s->pt);
        free(s->b);
        free(s->q);
        free(s->mean);
        free(s->m2);
        free(s->cok);
        free(s->sabs);
        free(s->mu_t);
        free(s->rkey);
        free(s->ridx);
        free(s->rval);
        free(s->heap);
        free(s->vals);
        free(s->e);
        free(s->u);
        free(s->y);
        free(s->hsp);
        free(s->lpt);
        free(s->lps);
        free(s->pr);
        free(s->bmean);
        free(s->bm2);
        free(s->bcok);
        free(s->bsabs);
        free(s->dlt);
        free(s->tmu);
        free(s);
}

/* Orthonormal basis of the row space of W [c, d] (row-major) by SVD. */
static int row_space(const double *w, size_t c, size_t d, double **ret_q, size_t *ret_rank)
{
        size_t k = c < d ? c : d, rank = 0;
        double *a = NULL, *sv = NULL, *vt = NULL, *superb = NULL, *q = NULL;
        lapack_int info;
        int err, bc, bd;

        if ((err = kdl__blas_int(c, &bc)) < 0 || (err = kdl__blas_int(d, &bd)) < 0)
                return err;
        err = -ENOMEM;
        a = kdl_new(double, c *d);
        sv = kdl_new(double, k);
        vt = kdl_new(double, k *d);
        superb = kdl_new(double, k);
        if (!a || !sv || !vt || !superb)
                goto out;
        memcpy(a, w, c * d * sizeof(double));
        info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'S', bc, bd, a, bd, sv, NULL, 1, vt, bd,
                              superb);
        if (info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR) {
                err = kdl_error(-ENOMEM, "out of memory in LAPACK");
                goto out;
        }
        assert(info >= 0);
        if (info > 0) {
                err = kdl_error(-KDL_ENOCONV, "head weight: SVD did not converge");
                goto out;
        }
        /* numpy.linalg.matrix_rank's threshold. */
        for (size_t i = 0; i < k; i++)
                if (sv[i] > (double) (c > d ? c : d) * DBL_EPSILON * sv[0])
                        rank++;
        q = kdl_new(double, d *(rank ? rank : 1));
        if (!q)
                goto out;
        for (size_t i = 0; i < rank; i++)
                for (size_t j = 0; j < d; j++)
                        q[j * rank + i] = vt[i * d + j];
        *ret_q = q;
        *ret_rank = rank;
        err = 0;
out:
        free(superb);
        free(vt);
        free(sv);
        free(a);
        return err;
}

size_t kdl_kl_dim(enum kdl_kl_value v, size_t c, size_t d_t)
{
        assert(v < NV);
        switch (v) {
        case KDL_KL_FEATURE_L2:
        case KDL_KL_FEATURE_HEAD:
                return d_t;
        case KDL_KL_GRADIENT_FISHER:
                return d_t + c;
        case KDL_KL_GRADIENT_EMPIRICAL:
                return 2 * d_t;
        default:
                return c;
        }
}

int kdl_kl_state_new(const kdl_kl_opts *o, kdl_kl_state **ret)
{
        kdl_kl_state *s = NULL;
        size_t ntv, ncd;
        int err;

        assert(o && ret && (o->ntau == 0 || o->tau));
        if (o->c < 2)
                return kdl_error(-KDL_ESHAPE, "KL needs at least 2 classes, got %zu", o->c);
        if (o->ntau == 0)
                return kdl_error(-KDL_ESHAPE, "KL needs at least one temperature");
        for (size_t i = 0; i < o->ntau; i++)
                if (!(isfinite(o->tau[i]) && o->tau[i] > 0.0))
                        return kdl_error(-KDL_ERANGE, "temperature %g is not finite and > 0",
                                         o->tau[i]);
        if ((o->d_s == 0) != (o->d_t == 0))
                return kdl_error(-KDL_ESHAPE, "feature widths %zu and %zu: both or neither", o->d_s,
                                 o->d_t);
        if (o->d_t == 0 && (o->w_t || o->grad_feature))
                return kdl_error(-KDL_ESHAPE, "head weight or feature gradient without features");
        if (o->w_t && (o->w_t->ndim != 2 || o->w_t->shape[0] != o->c || o->w_t->shape[1] != o->d_t))
                return kdl_error(-KDL_ESHAPE,
                                 "head weight: expected [%zu, %zu], got %zu-D [%zu, %zu]", o->c,
                                 o->d_t, o->w_t->ndim, o->w_t->shape[0],
                                 o->w_t->ndim > 1 ? o->w_t->shape[1] : 0);
        if (o->proj && o->proj->fitted && (o->proj->d_s != o->d_s || o->proj->d_t != o->d_t))
                return kdl_error(-KDL_ESHAPE, "projector maps %zu -> %zu, features are %zu -> %zu",
                                 o->proj->d_s, o->proj->d_t, o->d_s, o->d_t);
        if (o->d_s != o->d_t && !(o->proj && o->proj->fitted))
                return kdl_error(-KDL_ESHAPE,
                                 "student width %zu != teacher width %zu needs a fitted projector",
                                 o->d_s, o->d_t);
        if (o->w_t) {
                err = check_finite(o->w_t, "head weight", NULL);
                if (err < 0)
                        return err;
        }
        if ((err = kdl_mul_size(o->ntau, NV, &ntv)) < 0 ||
            (err = kdl_mul_size(o->c, o->d_t ? o->d_t : 1, &ncd)) < 0 ||
            (err = kdl_mul_size(o->d_s ? o->d_s : 1, o->d_t ? o->d_t : 1, &ncd)) < 0)
                return err;

        err = -ENOMEM;
        s = kdl_new(kdl_kl_state, 1);
        if (!s)
                goto out;
        s->c = o->c;
        s->ntau = o->ntau;
        s->d_s = o->d_s;
        s->d_t = o->d_t;
        s->feat = o->d_t > 0;
        s->head = o->w_t != NULL;
        s->gradf = o->grad_feature;
        s->gradz = o->grad_logits;
        s->fitted = o->proj && o->proj->fitted;
        s->proj_rank = s->fitted ? o->proj->rank : o->d_s;
        s->cap = o->reservoir ? o->reservoir : KDL_KL_RESERVOIR_DEFAULT;
        s->seed = o->seed;
        for (int v = 0; v < NV; v++)
                s->avail[v] = true;
        s->avail[KDL_KL_FEATURE_L2] = s->feat;
        s->avail[KDL_KL_FEATURE_HEAD] = s->feat && s->head;
        s->avail[KDL_KL_GRADIENT_FISHER] = s->feat && s->head;
        s->avail[KDL_KL_GRADIENT_EMPIRICAL] = s->feat && s->gradf;
        s->avail[KDL_KL_GRADIENT_LOGIT_L2] = s->gradz;

        s->tau = kdl_new(double, o->ntau);
        s->mean = kdl_new(double, ntv);
        s->m2 = kdl_new(double, ntv);
        s->cok = kdl_new(double, ntv);
        s->sabs = kdl_new(double, ntv);
        s->bmean = kdl_new(double, ntv);
        s->bm2 = kdl_new(double, ntv);
        s->bcok = kdl_new(double, ntv);
        s->bsabs = kdl_new(double, ntv);
        s->dlt = kdl_new(double, ntv);
        s->lpt = kdl_new(double, o->c);
        s->lps = kdl_new(double, o->c);
        s->pr = kdl_new(double, o->c);
        if (!s->tau || !s->mean || !s->m2 || !s->cok || !s->sabs || !s->bmean || !s->bm2 ||
            !s->bcok || !s->bsabs || !s->dlt || !s->lpt || !s->lps || !s->pr)
                goto out;
        memcpy(s->tau, o->tau, o->ntau * sizeof(double));
        if (s->feat) {
                s->mu_t = kdl_new(double, o->d_t);
                s->tmu = kdl_new(double, o->d_t);
                if (!s->mu_t || !s->tmu)
                        goto out;
        }
        if (s->fitted) {
                s->pt = kdl_new(double, o->d_s * o->d_t);
                s->b = kdl_new(double, o->d_t);
                if (!s->pt || !s->b)
                        goto out;
                memcpy(s->pt, o->proj->pt, o->d_s * o->d_t * sizeof(double));
                memcpy(s->b, o->proj->b, o->d_t * sizeof(double));
        }
        if (s->head) {
                s->w = kdl_new(double, o->c * o->d_t);
                if (!s->w)
                        goto out;
                for (size_t k = 0; k < o->c; k++)
                        for (size_t j = 0; j < o->d_t; j++)
                                s->w[k * o->d_t + j] = KDL_AT2(o->w_t, k, j);
                err = row_space(s->w, o->c, o->d_t, &s->q, &s->rank);
                if (err < 0)
                        goto out;
        }
        *ret = s;
        s = NULL;
        err = 0;
out:
        kdl_kl_state_free(s);
        return err;
}

/* Scratch for blocks of m rows. */
static int ensure_scratch(kdl_kl_state *s, size_t m)
{
        size_t n;
        int err;

        if (m <= s->wrows)
                return 0;
        if ((err = kdl_mul_size(m, s->ntau * NV, &n)) < 0 || (err = grow(&s->vals, n)) < 0)
                return err;
        if (s->feat) {
                if ((err = kdl_mul_size(m, s->d_t, &n)) < 0 || (err = grow(&s->e, n)) < 0)
                        return err;
                /* Packed student rows, for the projector's dgemm only. */
                if (s->fitted &&
                    ((err = kdl_mul_size(m, s->d_s, &n)) < 0 || (err = grow(&s->hsp, n)) < 0))
                        return err;
        }
        if (s->head) {
                if ((err = kdl_mul_size(m, s->c, &n)) < 0 || (err = grow(&s->u, n)) < 0)
                        return err;
                if ((err = kdl_mul_size(m, s->rank, &n)) < 0 || (err = grow(&s->y, n)) < 0)
                        return err;
        }
        s->wrows = m;
        s->vm = 0; /* the last block's values were overwritten */
        return 0;
}

/* Room for @n reservoir items (n <= cap). */
static int ensure_reservoir(kdl_kl_state *s, size_t n)
{
        size_t na, nv = s->ntau * NV, bytes;
        void *p;
        int err;

        if (n > s->cap)
                n = s->cap;
        if (n <= s->ralloc)
                return 0;
        na = s->ralloc ? s->ralloc : 256;
        while (na < n)
                na = na > s->cap / 2 ? s->cap : 2 * na;
        if (na > s->cap)
                na = s->cap;
        if ((err = kdl_mul_size(na, nv * sizeof(double), &bytes)) < 0)
                return err;
        if (!(p = realloc(s->rkey, na * sizeof(uint64_t))))
                goto nomem;
        s->rkey = p;
        if (!(p = realloc(s->ridx, na * sizeof(size_t))))
                goto nomem;
        s->ridx = p;
        if (!(p = realloc(s->heap, na * sizeof(size_t))))
                goto nomem;
        s->heap = p;
        if (!(p = realloc(s->rval, bytes)))
                goto nomem;
        s->rval = p;
        s->ralloc = na;
        return 0;
nomem:
        return kdl_error(-ENOMEM, "out of memory growing the Spearman reservoir");
}

static uint64_t sample_key(uint64_t seed, size_t idx)
{
        return kdl__rng_mix64(kdl__rng_mix64((uint64_t) idx + KDL_RNG_GAMMA) ^ seed);
}

/* Order of the heap: (key, idx) lexicographic. */
static bool item_less(const kdl_kl_state *s, size_t a, size_t b)
{
        if (s->rkey[a] != s->rkey[b])
                return s->rkey[a] < s->rkey[b];
        return s->ridx[a] < s->ridx[b];
}

static void heap_down(kdl_kl_state *s, size_t i)
{
        for (;;) {
                size_t l = 2 * i + 1, r = l + 1, big = i, t;

                if (l < s->rn && item_less(s, s->heap[big], s->heap[l]))
                        big = l;
                if (r < s->rn && item_less(s, s->heap[big], s->heap[r]))
                        big = r;
                if (big == i)
                        return;
                t = s->heap[i];
                s->heap[i] = s->heap[big];
                s->heap[big] = t;
                i = big;
        }
}

static void heap_up(kdl_kl_state *s, size_t i)
{
        while (i > 0) {
                size_t p = (i - 1) / 2, t;

                if (!item_less(s, s->heap[p], s->heap[i]))
                        return;
                t = s->heap[i];
                s->heap[i] = s->heap[p];
                s->heap[p] = t;
                i = p;
        }
}

/* The slot where the sample (key, idx) goes, or NULL if it is not among the
 * cap smallest keys.  Room was ensured by ensure_reservoir(). */
static double *reservoir_slot(kdl_kl_state *s, uint64_t key, size_t idx)
{
        size_t slot, nv = s->ntau * NV;

        if (s->rn < s->cap) {
                assert(s->rn < s->ralloc);
                slot = s->rn++;
                s->rkey[slot] = key;
                s->ridx[slot] = idx;
                s->heap[slot] = slot;
                heap_up(s, slot);
                return s->rval + slot * nv;
        }
        slot = s->heap[0];
        if (key > s->rkey[slot] || (key == s->rkey[slot] && idx >= s->ridx[slot]))
                return NULL;
        s->rkey[slot] = key;
        s->ridx[slot] = idx;
        heap_down(s, 0);
        return s->rval + slot * nv;
}

/* Values of one sample at every temperature: logit part.  Writes K, logit_fisher, prob_l2 (and
 * gradient_fisher from @u when given) into out[itau * NV + v] with stride @os. */
static void sample_logits(kdl_kl_state *s, const double *zt, ptrdiff_t szt, const double *zs,
                          ptrdiff_t szs, const double *u, double *out, size_t os)
{
        size_t c = s->c;
        double *lpt = s->lpt, *lps = s->lps, *p = s->pr;

        for (size_t it = 0; it < s->ntau; it++) {
                double tau = s->tau[it], mw = 0.0, mx = -INFINITY, kl, fis = 0.0, pl2 = 0.0;
                double dsum = 0.0, *o = out + it * NV * os;
                size_t am = log_softmax(zt, szt, c, tau, lpt);

                (void) log_softmax(zs, szs, c, tau, lps);
                /* ‖p^s - p^t‖²: at the teacher's argmax use -Σ_{k != am}(p^s_k -
                 * p^t_k) (both sum to 1), which keeps a saturated class's
                 * difference that 1 - 1 would round away. */
                for (size_t k = 0; k < c; k++) {
                        p[k] = exp(lpt[k]);
                        if (k != am) {
                                double dp = exp(lps[k]) - p[k];

                                pl2 += dp * dp;
                                dsum += dp;
                        }
                }
                pl2 += dsum * dsum;
                /* v_k = w_k - E_p[w] with w = (z^s - z^t)/τ; lps is reused for v. */
                for (size_t k = 0; k < c; k++) {
                        lps[k] = (zs[(ptrdiff_t) k * szs] - zt[(ptrdiff_t) k * szt]) / tau;
                        mw += p[k] * lps[k];
                }
                for (size_t k = 0; k < c; k++) {
                        lps[k] -= mw;
                        fis += p[k] * lps[k] * lps[k];
                        if (lpt[k] + lps[k] > mx)
                                mx = lpt[k] + lps[k];
                }
                /* KL = log E_p[e^v] (E_p[v] = 0): with all p_k e^{v_k} <= e use
                 * log1p of the non-negative Σ p φ(v); otherwise KL >= mx > 1
                 * and log-sum-exp has no cancellation to fear. */
                if (mx > 1.0) {
                        double sum = 0.0;

                        for (size_t k = 0; k < c; k++)
                                sum += exp(lpt[k] + lps[k] - mx);
                        kl = mx + log(sum);
                } else {
                        double sum = 0.0;

                        for (size_t k = 0; k < c; k++) {
                                double v = lps[k];

                                if (v > 1.0)
                                        sum += exp(lpt[k] + v) - p[k] * (1.0 + v);
                                else
                                        sum += p[k] * phi(v);
                        }
                        kl = log1p(sum);
                }
                o[KDL_KL_EXACT * os] = tau * tau * kl;
                o[KDL_KL_LOGIT_FISHER * os] = 0.5 * tau * tau * fis;
                o[KDL_KL_PROB_L2 * os] = 0.5 * tau * tau * pl2;
                if (u) {
                        double mu = 0.0, var = 0.0;

                        for (size_t k = 0; k < c; k++)
                                mu += p[k] * u[k];
                        for (size_t k = 0; k < c; k++)
                                var += p[k] * (u[k] - mu) * (u[k] - mu);
                        o[KDL_KL_GRADIENT_FISHER * os] = 0.5 * var;
                }
        }
}

/* Check presence, shapes and values of the block's tensors. */
static int check_block(const kdl_kl_state *s, const kdl_kl_block *b, size_t *ret_m)
{
        struct {
                const kdl_tensor *t;
                const char *what;
                bool want;
                size_t cols;
        } in[] = {
                {b->zt, "teacher logits", true, s->c},
                {b->zs, "student logits", true, s->c},
                {b->ht, "teacher features", s->feat, s->d_t},
                {b->hs, "student features", s->feat, s->d_s},
                {b->gt, "teacher feature gradient", s->gradf, s->d_t},
                {b->gzt, "teacher logit gradient", s->gradz, s->c},
                {b->gzs, "student logit gradient", s->gradz, s->c},
        };
        size_t m;
        int err;

        if (!b->zt || b->zt->ndim != 2)
                return kdl_error(-KDL_ESHAPE, "teacher logits: expected a 2-D block");
        m = b->zt->shape[0];
        for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
                if (!in[i].want) {
                        if (in[i].t)
                                return kdl_error(-KDL_ESHAPE, "%s: given but not announced",
                                                 in[i].what);
                        continue;
                }
                if (!in[i].t)
                        return kdl_error(-KDL_ESHAPE, "%s: announced but missing", in[i].what);
                err = check_block_tensor(in[i].t, in[i].what, m, in[i].cols);
                if (err < 0)
                        return err;
        }
        for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
                if (!in[i].want || m == 0)
                        continue;
                err = check_finite(in[i].t, in[i].what, b);
                if (err < 0)
                        return err;
        }
        *ret_m = m;
        return 0;
}

/* e = P h^s - h^t, u = W_t e, y = Qᵀ e for the block (BLAS level 3). */
static int block_features(kdl_kl_state *s, const kdl_kl_block *b, size_t m)
{
        size_t d_s = s->d_s, d_t = s->d_t;
        int err, bm, bs, bt, bc, br;

        if ((err = kdl__blas_int(m, &bm)) < 0 || (err = kdl__blas_int(d_s, &bs)) < 0 ||
            (err = kdl__blas_int(d_t, &bt)) < 0 || (err = kdl__blas_int(s->c, &bc)) < 0 ||
            (err = kdl__blas_int(s->rank, &br)) < 0)
                return err;
        if (s->fitted) {
                for (size_t r = 0; r < m; r++)
                        for (size_t i = 0; i < d_s; i++)
                                s->hsp[r * d_s + i] = KDL_AT2(b->hs, r, i);
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bm, bt, bs, 1.0, s->hsp, bs,
                            s->pt, bt, 0.0, s->e, bt);
                for (size_t r = 0; r < m; r++)
                        for (size_t j = 0; j < d_t; j++)
                                s->e[r * d_t + j] += s->b[j] - KDL_AT2(b->ht, r, j);
        } else {
                for (size_t r = 0; r < m; r++)
                        for (size_t j = 0; j < d_t; j++)
                                s->e[r * d_t + j] = KDL_AT2(b->hs, r, j) - KDL_AT2(b->ht, r, j);
        }
        if (s->head) {
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bm, bc, bt, 1.0, s->e, bt,
                            s->w, bt, 0.0, s->u, bc);
                if (s->rank > 0)
                        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bm, br, bt, 1.0,
                                    s->e, bt, s->q, br, 0.0, s->y, br);
        }
        return 0;
}

int kdl_kl_accumulate(kdl_kl_state *s, const kdl_kl_block *b)
{
        size_t m = 0, ntv = s->ntau * NV, c = s->c, d_t = s->d_t;
        double *vals, esq = 0.0, vsq = 0.0, tm2 = 0.0;
        int err;

        assert(s && b);
        err = check_block(s, b, &m);
        if (err < 0)
                return err;
        if (m == 0)
                return 0;
        if ((err = ensure_scratch(s, m)) < 0 || (err = ensure_reservoir(s, s->rn + m)) < 0)
                return err;
        s->vm = 0;
        vals = s->vals;
        if (s->feat) {
                err = block_features(s, b, m);
                if (err < 0)
                        return err;
        }

        /* Per-sample values; layout vals[(itau * NV + v) * m + r]. */
        for (size_t r = 0; r < m; r++) {
                const double *zt = b->zt->data + (ptrdiff_t) r * b->zt->stride[0];
                const double *zs = b->zs->data + (ptrdiff_t) r * b->zs->stride[0];
                ptrdiff_t szt = b->zt->stride[1], szs = b->zs->stride[1];
                double dsum = 0.0, dsq = 0.0, csq = 0.0, fl2 = DNAN, fh = DNAN, ge = DNAN,
                       gl = DNAN;

                sample_logits(s, zt, szt, zs, szs, s->head ? s->u + r * c : NULL, vals + r, m);
                for (size_t k = 0; k < c; k++) {
                        double d = zs[(ptrdiff_t) k * szs] - zt[(ptrdiff_t) k * szt];

                        dsum += d;
                        dsq += d * d;
                }
                for (size_t k = 0; k < c; k++) {
                        double d = zs[(ptrdiff_t) k * szs] - zt[(ptrdiff_t) k * szt] -
                                   dsum / (double) c;

                        csq += d * d;
                }
                if (s->feat) {
                        const double *e = s->e + r * d_t;
                        double ee = 0.0, ge_dot = 0.0;

                        for (size_t j = 0; j < d_t; j++)
                                ee += e[j] * e[j];
                        esq += ee;
                        fl2 = ee / (2.0 * (double) d_t);
                        if (s->gradf) {
                                for (size_t j = 0; j < d_t; j++)
                                        ge_dot += KDL_AT2(b->gt, r, j) * e[j];
                                ge = 0.5 * ge_dot * ge_dot;
                        }
                }
                if (s->head) {
                        double uu = 0.0, yy = 0.0;

                        for (size_t k = 0; k < c; k++)
                                uu += s->u[r * c + k] * s->u[r * c + k];
                        fh = uu / (2.0 * (double) c);
                        for (size_t k = 0; k < s->rank; k++)
                                yy += s->y[r * s->rank + k] * s->y[r * s->rank + k];
                        vsq += yy;
                }
                if (s->gradz) {
                        double gg = 0.0;

                        for (size_t k = 0; k < c; k++) {
                                double d = KDL_AT2(b->gzs, r, k) - KDL_AT2(b->gzt, r, k);

                                gg += d * d;
                        }
                        gl = 0.5 * gg;
                }
                for (size_t it = 0; it < s->ntau; it++) {
                        double *o = vals + it * NV * m + r;

                        o[KDL_KL_LOGIT_CENTERED_L2 * m] = csq / (2.0 * (double) c);
                        o[KDL_KL_LOGIT_L2 * m] = dsq / (2.0 * (double) c);
                        o[KDL_KL_FEATURE_L2 * m] = fl2;
                        o[KDL_KL_FEATURE_HEAD * m] = fh;
                        o[KDL_KL_GRADIENT_EMPIRICAL * m] = ge;
                        o[KDL_KL_GRADIENT_LOGIT_L2 * m] = gl;
                        if (!s->head)
                                o[KDL_KL_GRADIENT_FISHER * m] = DNAN;
                }
        }
        /* Values that overflowed (inputs near DBL_MAX) are an error, not a NaN
         * in a table. */
        for (size_t i = 0; i < ntv; i++) {
                if (!s->avail[i % NV])
                        continue;
                for (size_t r = 0; r < m; r++)
                        if (!isfinite(vals[i * m + r]))
                                return kdl_error(-KDL_ENONFINITE,
                                                 "%s at tau %g: non-finite value at sample %zu "
                                                 "(inputs too large)",
                                                 value_names[i % NV], s->tau[i / NV],
                                                 sample_index(b, r));
        }

        /* Block statistics (two-pass), then Chan's update into the state. */
        for (size_t it = 0; it < s->ntau; it++) {
                const double *kv = vals + it * NV * m;
                double kmean = 0.0;

                for (size_t r = 0; r < m; r++)
                        kmean += kv[r];
                kmean /= (double) m;
                for (int v = 0; v < NV; v++) {
                        size_t i = it * NV + v;
                        const double *av = vals + i * m;
                        double mean = 0.0, m2 = 0.0, ck = 0.0, sa = 0.0;

                        if (!s->avail[v])
                                continue;
                        for (size_t r = 0; r < m; r++)
                                mean += av[r];
                        mean /= (double) m;
                        for (size_t r = 0; r < m; r++) {
                                m2 += (av[r] - mean) * (av[r] - mean);
                                ck += (av[r] - mean) * (kv[r] - kmean);
                                sa += fabs(av[r] - kv[r]);
                        }
                        s->bmean[i] = mean;
                        s->bm2[i] = m2;
                        s->bcok[i] = ck;
                        s->bsabs[i] = sa;
                }
        }
        if (s->feat) {
                memset(s->tmu, 0, d_t * sizeof(double));
                for (size_t r = 0; r < m; r++)
                        for (size_t j = 0; j < d_t; j++)
                                s->tmu[j] += KDL_AT2(b->ht, r, j);
                for (size_t j = 0; j < d_t; j++)
                        s->tmu[j] /= (double) m;
                for (size_t r = 0; r < m; r++)
                        for (size_t j = 0; j < d_t; j++) {
                                double d = KDL_AT2(b->ht, r, j) - s->tmu[j];

                                tm2 += d * d;
                        }
        }

        /* Commit: nothing below fails. */
        {
                size_t na = s->n, n = na + m;
                double w = (double) na * (double) m / (double) n, f = (double) m / (double) n;

                for (size_t i = 0; i < ntv; i++)
                        s->dlt[i] = s->avail[i % NV] ? s->bmean[i] - s->mean[i] : 0.0;
                for (size_t i = 0; i < ntv; i++) {
                        size_t ik = i - i % NV;

                        if (!s->avail[i % NV])
                                continue;
                        s->m2[i] += s->bm2[i] + w * s->dlt[i] * s->dlt[i];
                        s->cok[i] += s->bcok[i] + w * s->dlt[i] * s->dlt[ik];
                        s->sabs[i] += s->bsabs[i];
                        s->mean[i] += f * s->dlt[i];
                }
                if (s->feat) {
                        double dd = 0.0;

                        for (size_t j = 0; j < d_t; j++) {
                                double d = s->tmu[j] - s->mu_t[j];

                                dd += d * d;
                                s->mu_t[j] += f * d;
                        }
                        s->sst_t += tm2 + w * dd;
                        s->esq += esq;
                        s->vsq += vsq;
                }
                s->n = n;
        }
        for (size_t r = 0; r < m; r++) {
                size_t idx = sample_index(b, r);
                double *slot = reservoir_slot(s, sample_key(s->seed, idx), idx);

                if (!slot)
                        continue;
                for (size_t i = 0; i < ntv; i++)
                        slot[i] = vals[i * m + r];
        }
        s->vm = m;
        return 0;
}

const double *kdl_kl_values(const kdl_kl_state *s, size_t itau, enum kdl_kl_value v, size_t *ret_m)
{
        assert(s && itau < s->ntau && v < NV);
        if (!s->avail[v] || s->vm == 0)
                return NULL;
        if (ret_m)
                *ret_m = s->vm;
        return s->vals + (itau * NV + v) * s->vm;
}

static bool same_options(const kdl_kl_state *a, const kdl_kl_state *b)
{
        if (a->c != b->c || a->ntau != b->ntau || a->d_s != b->d_s || a->d_t != b->d_t ||
            a->head != b->head || a->gradf != b->gradf || a->gradz != b->gradz ||
            a->fitted != b->fitted || a->cap != b->cap || a->seed != b->seed)
                return false;
        if (memcmp(a->tau, b->tau, a->ntau * sizeof(double)))
                return false;
        if (a->head && memcmp(a->w, b->w, a->c * a->d_t * sizeof(double)))
                return false;
        if (a->fitted && (memcmp(a->pt, b->pt, a->d_s * a->d_t * sizeof(double)) ||
                          memcmp(a->b, b->b, a->d_t * sizeof(double))))
                return false;
        return true;
}

int kdl_kl_merge(kdl_kl_state *into, const kdl_kl_state *from)
{
        size_t ntv = into->ntau * NV, na, n;
        double w, f;
        int err;

        assert(into && from);
        if (!same_options(into, from))
                return kdl_error(-KDL_EMISMATCH, "KL merge: the states have different options");
        if (from->n == 0)
                return 0;
        err = ensure_reservoir(into, into->rn + from->rn);
        if (err < 0)
                return err;
        na = into->n;
        n = na + from->n;
        w = (double) na * (double) from->n / (double) n;
        f = (double) from->n / (double) n;
        for (size_t i = 0; i < ntv; i++)
                into->dlt[i] = into->avail[i % NV] ? from->mean[i] - into->mean[i] : 0.0;
        for (size_t i = 0; i < ntv; i++) {
                size_t ik = i - i % NV;

                if (!into->avail[i % NV])
                        continue;
                into->m2[i] += from->m2[i] + w * into->dlt[i] * into->dlt[i];
                into->cok[i] += from->cok[i] + w * into->dlt[i] * into->dlt[ik];
                into->sabs[i] += from->sabs[i];
                into->mean[i] += f * into->dlt[i];
        }
        if (into->feat) {
                double dd = 0.0;

                for (size_t j = 0; j < into->d_t; j++) {
                        double d = from->mu_t[j] - into->mu_t[j];

                        dd += d * d;
                        into->mu_t[j] += f * d;
                }
                into->sst_t += from->sst_t + w * dd;
                into->esq += from->esq;
                into->vsq += from->vsq;
        }
        into->n = n;
        for (size_t k = 0; k < from->rn; k++) {
                double *slot = reservoir_slot(into, from->rkey[k], from->ridx[k]);

                if (slot)
                        memcpy(slot, from->rval + k * ntv, ntv * sizeof(double));
        }
        return 0;
}

void kdl_kl_result_free(kdl_kl_result *r)
{
        if (!r)
                return;
        free(r->tau);
        free(r);
}

struct slot_order {
        size_t idx, slot;
};

static int cmp_slot_order(const void *pa, const void *pb)
{
        const struct slot_order *a = pa, *b = pb;

        return (a->idx > b->idx) - (a->idx < b->idx);
}

/* Spearman correlations on the reservoir into r (items in sample order, so
 * the result does not depend on the order of accumulation and merging). */
static int spearman(const kdl_kl_state *s, kdl_kl_result *r)
{
        size_t n = s->rn, ntv = s->ntau * NV;
        struct slot_order *order = NULL;
        double *x = NULL, *rk = NULL, *ra = NULL;
        kdl_ranked *tmp = NULL;
        int err = -ENOMEM;

        order = kdl_new(struct slot_order, n);
        x = kdl_new(double, n);
        rk = kdl_new(double, n);
        ra = kdl_new(double, n);
        tmp = kdl_new(kdl_ranked, n);
        if (!order || !x || !rk || !ra || !tmp)
                goto out;
        for (size_t k = 0; k < n; k++) {
                order[k].idx = s->ridx[k];
                order[k].slot = k;
        }
        qsort(order, n, sizeof(*order), cmp_slot_order);
        for (size_t it = 0; it < s->ntau; it++) {
                for (size_t k = 0; k < n; k++)
                        x[k] = s->rval[order[k].slot * ntv + it * NV + KDL_KL_EXACT];
                kdl_ranks(x, n, tmp, rk);
                for (int v = 0; v < NV; v++) {
                        if (!s->avail[v])
                                continue;
                        for (size_t k = 0; k < n; k++)
                                x[k] = s->rval[order[k].slot * ntv + it * NV + v];
                        kdl_ranks(x, n, tmp, ra);
                        r->tau[it].v[v].spearman = kdl_pearson(ra, rk, n);
                }
        }
        err = 0;
out:
        free(tmp);
        free(ra);
        free(rk);
        free(x);
        free(order);
        return err;
}

int kdl_kl_finalize(const kdl_kl_state *s, kdl_kl_result **ret)
{
        kdl_kl_result *r = NULL;
        int err = -ENOMEM;

        assert(s && ret);
        if (s->n == 0)
                return kdl_error(-KDL_ESHAPE, "KL: no samples were accumulated");
        r = kdl_new(kdl_kl_result, 1);
        if (!r)
                goto out;
        r->tau = kdl_new(kdl_kl_tau, s->ntau);
        if (!r->tau)
                goto out;
        r->n = s->n;
        r->c = s->c;
        r->d_s = s->d_s;
        r->d_t = s->d_t;
        r->ntau = s->ntau;
        for (size_t it = 0; it < s->ntau; it++) {
                size_t ik = it * NV;
                double kmean = s->mean[ik];

                r->tau[it].tau = s->tau[it];
                for (int v = 0; v < NV; v++) {
                        kdl_kl_fidelity *fd = &r->tau[it].v[v];
                        size_t i = ik + v;
                        double den = sqrt(s->m2[i]) * sqrt(s->m2[ik]);

                        fd->available = s->avail[v];
                        fd->dim = kdl_kl_dim(v, s->c, s->d_t);
                        if (!fd->available) {
                                fd->mean = fd->ratio = fd->pearson = fd->spearman = fd->relerr =
                                        DNAN;
                                continue;
                        }
                        fd->mean = s->mean[i];
                        fd->ratio = kmean > 0.0 ? s->mean[i] / kmean : DNAN;
                        fd->pearson = den > 0.0 ? s->cok[i] / den : DNAN;
                        fd->relerr = kmean > 0.0 ? s->sabs[i] / ((double) s->n * kmean) : DNAN;
                        fd->spearman = DNAN;
                }
        }
        err = spearman(s, r);
        if (err < 0)
                goto out;
        r->spearman_n = s->rn;
        r->spearman_exact = s->rn == s->n;
        r->features = s->feat;
        r->projector_fitted = s->fitted;
        r->projector_rank = s->feat ? s->proj_rank : 0;
        r->r2 = r->feature_sq = r->visible_share = DNAN;
        if (s->feat) {
                r->r2 = s->sst_t > 0.0 ? 1.0 - s->esq / s->sst_t : DNAN;
                r->feature_sq = s->esq / (double) s->n;
        }
        r->head = s->head;
        if (s->head) {
                r->head_rank = s->rank;
                r->visible_share = s->esq > 0.0 ? s->vsq / s->esq : DNAN;
        }
        *ret = r;
        r = NULL;
        err = 0;
out:
        kdl_kl_result_free(r);
        return err;
}
