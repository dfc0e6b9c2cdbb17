/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lapacke.h>

#include "metrics/base/alloc.h"
#include "metrics/base/blas.h"
#include "metrics/base/error.h"
#include "metrics/kl.h"
#include "metrics/kl-internal.h"
#include "metrics/moments.h"
#include "metrics/base/banned.h"

/*
 * Pass 2 of the KL metric: the state's lifecycle, its sufficient
 * statistics (the moments of every value with K, at every temperature),
 * merge and finalize.  The per-sample values are kl-values.c's, the
 * Spearman reservoir kl-reservoir.c's, pass 1 kl-proj.c's.
 */

#define NV   KDL__KL_NV
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

/* ---- Helpers shared by the KL files ------------------------------------------ */

int kdl__kl_check_tensor(const kdl_tensor *t, const char *what, size_t m, size_t cols)
{
        if (t->ndim != 2)
                return kdl_error(-KDL_ESHAPE, "%s: expected 2-D, got %zu-D", what, t->ndim);
        if (t->shape[0] != m || t->shape[1] != cols)
                return kdl_error(-KDL_ESHAPE, "%s: expected [%zu, %zu], got [%zu, %zu]", what, m,
                                 cols, t->shape[0], t->shape[1]);
        return 0;
}

size_t kdl__kl_sample_index(const kdl_kl_block *b, size_t r)
{
        return b->samples ? b->samples[r] : b->row0 + r;
}

int kdl__kl_rows_finite(const kdl_tensor *t, size_t *ret_row)
{
        size_t n = t->shape[1];

        assert(t->ndim == 2);
        if (t->stride[1] != 1)
                return kdl_tensor_check_finite(t, ret_row);
        for (size_t i = 0; i < t->shape[0]; i++) {
                const double *x = t->data + (ptrdiff_t) i * t->stride[0];
                double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
                size_t j = 0;

                /* x * 0 is 0 for a finite x and NaN otherwise, and a NaN stays
                 * in a sum: four sums, so that no add waits for the last. */
                for (; j + 4 <= n; j += 4) {
                        s0 += x[j] * 0.0;
                        s1 += x[j + 1] * 0.0;
                        s2 += x[j + 2] * 0.0;
                        s3 += x[j + 3] * 0.0;
                }
                for (; j < n; j++)
                        s0 += x[j] * 0.0;
                if (isnan(s0 + s1 + s2 + s3)) {
                        *ret_row = i;
                        return -KDL_ENONFINITE;
                }
        }
        return 0;
}

int kdl__kl_check_finite(const kdl_tensor *t, const char *what, const kdl_kl_block *b)
{
        size_t row;

        if (kdl__kl_rows_finite(t, &row) < 0)
                return kdl_error(-KDL_ENONFINITE, "%s: non-finite value at sample %zu", what,
                                 b ? kdl__kl_sample_index(b, row) : row);
        return 0;
}

int kdl__kl_grow(double **p, size_t n)
{
        double *q = kdl__malloc(n ? n : 1, sizeof(double));

        if (!q)
                return -ENOMEM;
        free(*p);
        *p = q;
        return 0;
}

/* ---- The state --------------------------------------------------------------- */

void kdl_kl_opts_init(kdl_kl_opts *o)
{
        assert(o);
        memset(o, 0, sizeof(*o));
        o->reservoir = KDL_KL_RESERVOIR_DEFAULT;
        o->seed = 0;
}

/* Everything kdl_kl_state_new() refuses, before it allocates. */
static int check_opts(const kdl_kl_opts *o)
{
        size_t n;
        int err;

        if (o->c < 2)
                return kdl_error(-KDL_ESHAPE, "KL needs at least 2 classes, got %zu", o->c);
        if (o->ntau == 0)
                return kdl_error(-KDL_ESHAPE, "KL needs at least one temperature");
        if (o->reservoir == 0)
                return kdl_error(-KDL_ERANGE, "KL: a Spearman reservoir of 0 samples");
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
                err = kdl__kl_check_finite(o->w_t, "head weight", NULL);
                if (err < 0)
                        return err;
        }
        if ((err = kdl_mul_size(o->ntau, NV, &n)) < 0 ||
            (err = kdl_mul_size(o->c, o->d_t ? o->d_t : 1, &n)) < 0 ||
            (err = kdl_mul_size(o->d_s ? o->d_s : 1, o->d_t ? o->d_t : 1, &n)) < 0)
                return err;
        return 0;
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

static void config_release(struct kdl__kl_config *cfg)
{
        free(cfg->tau);
        free(cfg->w);
        free(cfg->pt);
        free(cfg->b);
        free(cfg->q);
}

/* Copy what @o announces (and the projector and head it points to) into
 * @cfg, and take the SVD of W_t.  @cfg was zeroed; on failure
 * config_release() frees what was made. */
static int config_init(struct kdl__kl_config *cfg, const kdl_kl_opts *o)
{
        size_t c = o->c, d_s = o->d_s, d_t = o->d_t;

        cfg->c = c;
        cfg->ntau = o->ntau;
        cfg->d_s = d_s;
        cfg->d_t = d_t;
        cfg->feat = d_t > 0;
        cfg->head = o->w_t != NULL;
        cfg->gradf = o->grad_feature;
        cfg->gradz = o->grad_logits;
        cfg->fitted = o->proj && o->proj->fitted;
        cfg->proj_rank = cfg->fitted ? o->proj->rank : d_s;
        for (int v = 0; v < NV; v++)
                cfg->avail[v] = true;
        cfg->avail[KDL_KL_FEATURE_L2] = cfg->feat;
        cfg->avail[KDL_KL_FEATURE_HEAD] = cfg->feat && cfg->head;
        cfg->avail[KDL_KL_GRADIENT_FISHER] = cfg->feat && cfg->head;
        cfg->avail[KDL_KL_GRADIENT_EMPIRICAL] = cfg->feat && cfg->gradf;
        cfg->avail[KDL_KL_GRADIENT_LOGIT_L2] = cfg->gradz;

        cfg->tau = kdl_new(double, o->ntau);
        if (!cfg->tau)
                return -ENOMEM;
        memcpy(cfg->tau, o->tau, o->ntau * sizeof(double));
        if (cfg->fitted) {
                cfg->pt = kdl_new(double, d_s *d_t);
                cfg->b = kdl_new(double, d_t);
                if (!cfg->pt || !cfg->b)
                        return -ENOMEM;
                memcpy(cfg->pt, o->proj->pt, d_s * d_t * sizeof(double));
                memcpy(cfg->b, o->proj->b, d_t * sizeof(double));
        }
        if (cfg->head) {
                cfg->w = kdl_new(double, c *d_t);
                if (!cfg->w)
                        return -ENOMEM;
                for (size_t k = 0; k < c; k++)
                        for (size_t j = 0; j < d_t; j++)
                                cfg->w[k * d_t + j] = KDL_AT2(o->w_t, k, j);
                return row_space(cfg->w, c, d_t, &cfg->q, &cfg->rank);
        }
        return 0;
}

static void stats_release(struct kdl__kl_stats *st)
{
        free(st->v);
        free(st->sabs);
        free(st->mu_t);
}

/* Empty statistics; on failure stats_release() frees what was made. */
static int stats_init(struct kdl__kl_stats *st, const struct kdl__kl_config *cfg)
{
        size_t ntv = cfg->ntau * NV;

        st->v = kdl_new(kdl_comoments, ntv);
        st->sabs = kdl_new(double, ntv);
        if (!st->v || !st->sabs)
                return -ENOMEM;
        if (cfg->feat) {
                st->mu_t = kdl_new(double, cfg->d_t);
                if (!st->mu_t)
                        return -ENOMEM;
        }
        return 0;
}

static void scratch_release(struct kdl__kl_scratch *w)
{
        free(w->vals);
        free(w->e);
        free(w->u);
        free(w->y);
        free(w->hsp);
        free(w->lpt);
        free(w->lps);
        free(w->pr);
        free(w->qs);
        free(w->v);
        free(w->d);
        free(w->delta);
        stats_release(&w->block);
}

/* The scratch whose size does not depend on the blocks. */
static int scratch_init(struct kdl__kl_scratch *w, const struct kdl__kl_config *cfg)
{
        w->lpt = kdl_new(double, cfg->c);
        w->lps = kdl_new(double, cfg->c);
        w->pr = kdl_new(double, cfg->c);
        w->qs = kdl_new(double, cfg->c);
        w->v = kdl_new(double, cfg->c);
        w->d = kdl_new(double, cfg->c);
        if (!w->lpt || !w->lps || !w->pr || !w->qs || !w->v || !w->d)
                return -ENOMEM;
        if (cfg->feat) {
                w->delta = kdl_new(double, cfg->d_t);
                if (!w->delta)
                        return -ENOMEM;
        }
        return stats_init(&w->block, cfg);
}

void kdl_kl_state_free(kdl_kl_state *s)
{
        if (!s)
                return;
        config_release(&s->cfg);
        stats_release(&s->st);
        kdl__kl_reservoir_release(&s->res);
        scratch_release(&s->w);
        free(s);
}

int kdl_kl_state_new(const kdl_kl_opts *o, kdl_kl_state **ret)
{
        kdl_kl_state *s = NULL;
        int err;

        assert(o && ret && (o->ntau == 0 || o->tau));
        err = check_opts(o);
        if (err < 0)
                return err;
        s = kdl_new(kdl_kl_state, 1);
        if (!s)
                return -ENOMEM;
        if ((err = config_init(&s->cfg, o)) < 0 || (err = stats_init(&s->st, &s->cfg)) < 0 ||
            (err = scratch_init(&s->w, &s->cfg)) < 0)
                goto out;
        kdl__kl_reservoir_init(&s->res, o->reservoir, o->seed, o->ntau * NV);
        *ret = s;
        s = NULL;
out:
        kdl_kl_state_free(s);
        return err;
}

/* ---- Accumulate -------------------------------------------------------------- */

/* Scratch for blocks of m rows. */
static int ensure_scratch(kdl_kl_state *s, size_t m)
{
        const struct kdl__kl_config *cfg = &s->cfg;
        struct kdl__kl_scratch *w = &s->w;
        size_t n;
        int err;

        if (m <= w->rows)
                return 0;
        if ((err = kdl_mul_size(m, cfg->ntau * NV, &n)) < 0 ||
            (err = kdl__kl_grow(&w->vals, n)) < 0)
                return err;
        if (cfg->feat) {
                if ((err = kdl_mul_size(m, cfg->d_t, &n)) < 0 || (err = kdl__kl_grow(&w->e, n)) < 0)
                        return err;
                /* Packed student rows, for the projector's dgemm only. */
                if (cfg->fitted && ((err = kdl_mul_size(m, cfg->d_s, &n)) < 0 ||
                                    (err = kdl__kl_grow(&w->hsp, n)) < 0))
                        return err;
        }
        if (cfg->head) {
                if ((err = kdl_mul_size(m, cfg->c, &n)) < 0 || (err = kdl__kl_grow(&w->u, n)) < 0)
                        return err;
                if (cfg->rank < cfg->d_t && ((err = kdl_mul_size(m, cfg->rank, &n)) < 0 ||
                                             (err = kdl__kl_grow(&w->y, n)) < 0))
                        return err;
        }
        w->rows = m;
        w->vm = 0; /* the last block's values were overwritten */
        return 0;
}

/* The block's tensors in the order their NaN/Inf are reported, and whether the options
 * announce each; @wide: the C-wide ones (logits and their gradients). */
struct block_input {
        const kdl_tensor *t;
        const char *what;
        bool want, wide;
        size_t cols;
};

#define NIN 7

static void block_inputs(const struct kdl__kl_config *cfg, const kdl_kl_block *b,
                         struct block_input in[static NIN])
{
        in[0] = (struct block_input){b->zt, "teacher logits", true, true, cfg->c};
        in[1] = (struct block_input){b->zs, "student logits", true, true, cfg->c};
        in[2] = (struct block_input){b->ht, "teacher features", cfg->feat, false, cfg->d_t};
        in[3] = (struct block_input){b->hs, "student features", cfg->feat, false, cfg->d_s};
        in[4] = (struct block_input){b->gt, "teacher feature gradient", cfg->gradf, false,
                                     cfg->d_t};
        in[5] = (struct block_input){b->gzt, "teacher logit gradient", cfg->gradz, true, cfg->c};
        in[6] = (struct block_input){b->gzs, "student logit gradient", cfg->gradz, true, cfg->c};
}

int kdl__kl_check_block_finite(const struct kdl__kl_config *cfg, const kdl_kl_block *b)
{
        struct block_input in[NIN];
        int err;

        block_inputs(cfg, b, in);
        for (size_t i = 0; i < NIN; i++) {
                if (!in[i].want)
                        continue;
                err = kdl__kl_check_finite(in[i].t, in[i].what, b);
                if (err < 0)
                        return err;
        }
        return 0;
}

/* Check presence and shapes of the block's tensors, and the values of the narrow ones: a NaN
 * or Inf in a C-wide one makes logit_l2 or gradient_logit_l2 non-finite, which
 * kdl__kl_block_values() checks (the messages are the same: on any finding every tensor
 * is checked in order). */
static int check_block(const struct kdl__kl_config *cfg, const kdl_kl_block *b, size_t *ret_m)
{
        struct block_input in[NIN];
        size_t m;
        int err;

        if (!b->zt || b->zt->ndim != 2)
                return kdl_error(-KDL_ESHAPE, "teacher logits: expected a 2-D block");
        m = b->zt->shape[0];
        block_inputs(cfg, b, in);
        for (size_t i = 0; i < NIN; i++) {
                if (!in[i].want) {
                        if (in[i].t)
                                return kdl_error(-KDL_ESHAPE, "%s: given but not announced",
                                                 in[i].what);
                        continue;
                }
                if (!in[i].t)
                        return kdl_error(-KDL_ESHAPE, "%s: announced but missing", in[i].what);
                err = kdl__kl_check_tensor(in[i].t, in[i].what, m, in[i].cols);
                if (err < 0)
                        return err;
        }
        for (size_t i = 0; i < NIN && m > 0; i++) {
                if (!in[i].want || in[i].wide)
                        continue;
                if (kdl__kl_check_finite(in[i].t, in[i].what, b) < 0)
                        return kdl__kl_check_block_finite(cfg, b);
        }
        *ret_m = m;
        return 0;
}

/* The statistics of the block's values (two-pass) and of its teacher
 * features into @w->block, whose Σ‖e‖², Σ‖Qᵀe‖² kdl__kl_block_values() set. */
static void block_stats(const struct kdl__kl_config *cfg, struct kdl__kl_scratch *w,
                        const kdl_kl_block *b, size_t m)
{
        struct kdl__kl_stats *bs = &w->block;
        double *tmu = bs->mu_t, tm2 = 0.0;

        bs->n = m;
        for (size_t i = 0; i < cfg->ntau * NV; i++) {
                const double *av = w->vals + i * m, *kv = w->vals + (i - i % NV) * m;
                double sa = 0.0;

                if (!cfg->avail[i % NV])
                        continue;
                kdl_comoments_batch(av, kv, m, &bs->v[i]);
                for (size_t r = 0; r < m; r++)
                        sa += fabs(av[r] - kv[r]);
                bs->sabs[i] = sa;
        }
        if (!cfg->feat)
                return;
        memset(tmu, 0, cfg->d_t * sizeof(double));
        for (size_t r = 0; r < m; r++)
                for (size_t j = 0; j < cfg->d_t; j++)
                        tmu[j] += KDL_AT2(b->ht, r, j);
        for (size_t j = 0; j < cfg->d_t; j++)
                tmu[j] /= (double) m;
        for (size_t r = 0; r < m; r++)
                for (size_t j = 0; j < cfg->d_t; j++) {
                        double d = KDL_AT2(b->ht, r, j) - tmu[j];

                        tm2 += d * d;
                }
        bs->sst_t = tm2;
}

/* Add the samples summarised by @from to @into (Chan et al.'s update);
 * @delta is d_t doubles of scratch.  Cannot fail. */
static void stats_merge(const struct kdl__kl_config *cfg, struct kdl__kl_stats *into,
                        const struct kdl__kl_stats *from, double *delta)
{
        if (from->n == 0)
                return;
        for (size_t i = 0; i < cfg->ntau * NV; i++) {
                if (!cfg->avail[i % NV])
                        continue;
                kdl_comoments_merge(&into->v[i], &from->v[i]);
                into->sabs[i] += from->sabs[i];
        }
        if (cfg->feat) {
                double dd = 0.0, w;

                w = kdl_moments_shift_mean(into->n, from->n, into->mu_t, from->mu_t, cfg->d_t,
                                           delta);
                for (size_t j = 0; j < cfg->d_t; j++)
                        dd += delta[j] * delta[j];
                into->sst_t += from->sst_t + w * dd;
                into->esq += from->esq;
                into->vsq += from->vsq;
        }
        into->n += from->n;
}

int kdl_kl_accumulate(kdl_kl_state *s, const kdl_kl_block *b)
{
        size_t m = 0;
        int err, saved;

        assert(s && b);
        err = check_block(&s->cfg, b, &m);
        if (err < 0 || m == 0)
                return err;
        if ((err = ensure_scratch(s, m)) < 0 ||
            (err = kdl__kl_reservoir_reserve(&s->res, s->res.n + m)) < 0)
                return err;
        s->w.vm = 0;
        /* The head products, then the per-sample values: one BLAS thread, so that no
         * helper spins through the values (metrics/base/blas.h). */
        saved = kdl__blas_serial_begin();
        err = kdl__kl_block_values(&s->cfg, &s->w, b, m);
        kdl__blas_serial_end(saved);
        if (err < 0)
                return err;
        block_stats(&s->cfg, &s->w, b, m);

        /* Commit: nothing below fails. */
        stats_merge(&s->cfg, &s->st, &s->w.block, s->w.delta);
        kdl__kl_reservoir_add_block(&s->res, s->w.vals, m, b);
        s->w.vm = m;
        return 0;
}

const double *kdl_kl_values(const kdl_kl_state *s, size_t itau, enum kdl_kl_value v, size_t *ret_m)
{
        assert(s && itau < s->cfg.ntau && v < NV);
        if (!s->cfg.avail[v] || s->w.vm == 0)
                return NULL;
        if (ret_m)
                *ret_m = s->w.vm;
        return s->w.vals + (itau * NV + v) * s->w.vm;
}

/* ---- Merge ------------------------------------------------------------------- */

static bool same_options(const kdl_kl_state *sa, const kdl_kl_state *sb)
{
        const struct kdl__kl_config *a = &sa->cfg, *b = &sb->cfg;

        if (a->c != b->c || a->ntau != b->ntau || a->d_s != b->d_s || a->d_t != b->d_t ||
            a->head != b->head || a->gradf != b->gradf || a->gradz != b->gradz ||
            a->fitted != b->fitted || sa->res.cap != sb->res.cap || sa->res.seed != sb->res.seed)
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
        int err;

        assert(into && from);
        if (!same_options(into, from))
                return kdl_error(-KDL_EMISMATCH, "KL merge: the states have different options");
        if (from->st.n == 0)
                return 0;
        err = kdl__kl_reservoir_reserve(&into->res, into->res.n + from->res.n);
        if (err < 0)
                return err;
        stats_merge(&into->cfg, &into->st, &from->st, into->w.delta);
        kdl__kl_reservoir_merge(&into->res, &from->res);
        return 0;
}

/* ---- Finalize ---------------------------------------------------------------- */

void kdl_kl_result_free(kdl_kl_result *r)
{
        if (!r)
                return;
        free(r->tau);
        free(r);
}

/* The moment-based fidelity statistics of every value at every temperature
 * (Spearman is set to NaN here, kdl__kl_spearman()'s). */
static void fidelity(const struct kdl__kl_config *cfg, const struct kdl__kl_stats *st,
                     kdl_kl_result *r)
{
        for (size_t it = 0; it < cfg->ntau; it++) {
                size_t ik = it * NV;
                double kmean = st->v[ik].mx;

                r->tau[it].tau = cfg->tau[it];
                for (int v = 0; v < NV; v++) {
                        kdl_kl_fidelity *fd = &r->tau[it].v[v];
                        const kdl_comoments *m = &st->v[ik + v];

                        fd->available = cfg->avail[v];
                        fd->dim = kdl_kl_dim(v, cfg->c, cfg->d_t);
                        if (!fd->available) {
                                fd->mean = fd->ratio = fd->pearson = fd->spearman = fd->relerr =
                                        DNAN;
                                continue;
                        }
                        fd->mean = m->mx;
                        fd->ratio = kmean > 0.0 ? m->mx / kmean : DNAN;
                        fd->pearson = kdl_comoments_pearson(m);
                        fd->relerr =
                                kmean > 0.0 ? st->sabs[ik + v] / ((double) st->n * kmean) : DNAN;
                        fd->spearman = DNAN;
                }
        }
}

/* The projector, R², feature and head fields. */
static void feature_results(const kdl_kl_state *s, kdl_kl_result *r)
{
        const struct kdl__kl_config *cfg = &s->cfg;
        const struct kdl__kl_stats *st = &s->st;

        r->features = cfg->feat;
        r->projector_fitted = cfg->fitted;
        r->projector_rank = cfg->feat ? cfg->proj_rank : 0;
        r->r2 = r->feature_sq = r->visible_share = DNAN;
        if (cfg->feat) {
                r->r2 = st->sst_t > 0.0 ? 1.0 - st->esq / st->sst_t : DNAN;
                r->feature_sq = st->esq / (double) st->n;
        }
        r->head = cfg->head;
        if (cfg->head) {
                r->head_rank = cfg->rank;
                r->visible_share = st->esq > 0.0 ? st->vsq / st->esq : DNAN;
        }
}

int kdl_kl_finalize(const kdl_kl_state *s, kdl_kl_result **ret)
{
        kdl_kl_result *r = NULL;
        int err = -ENOMEM;

        assert(s && ret);
        if (s->st.n == 0)
                return kdl_error(-KDL_EMISSING, "KL: no samples were accumulated");
        r = kdl_new(kdl_kl_result, 1);
        if (!r)
                goto out;
        r->tau = kdl_new(kdl_kl_tau, s->cfg.ntau);
        if (!r->tau)
                goto out;
        r->n = s->st.n;
        r->c = s->cfg.c;
        r->d_s = s->cfg.d_s;
        r->d_t = s->cfg.d_t;
        r->ntau = s->cfg.ntau;
        fidelity(&s->cfg, &s->st, r);
        err = kdl__kl_spearman(&s->res, &s->cfg, r);
        if (err < 0)
                goto out;
        r->spearman_n = s->res.n;
        r->spearman_exact = s->res.n == s->st.n;
        feature_results(s, r);
        *ret = r;
        r = NULL;
        err = 0;
out:
        kdl_kl_result_free(r);
        return err;
}
