/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/moments.h"
#include "metrics/split.h"
#include "metrics/base/banned.h"

const double kdl_split_quantile_levels[KDL_SPLIT_NQUANTILES] = {0.05, 0.25, 0.5, 0.75, 0.95};

#define W_NB    KDL_SPLIT_W_BINS
#define W_SLOTS (KDL_SPLIT_W_BINS + 3) /* w <= 0, underflow, log bins, overflow */

void kdl_split_opts_init(kdl_split_opts *o)
{
        assert(o);
        memset(o, 0, sizeof(*o));
        o->ntaus = 1;
        o->taus[0] = KDL_SPLIT_DEFAULT_TAU;
        o->lambda = KDL_SPLIT_DEFAULT_LAMBDA;
        o->omega_max = KDL_SPLIT_DEFAULT_OMEGA_MAX;
        o->w_eps = KDL_SPLIT_DEFAULT_W_EPS;
        o->cos_eps = KDL_SPLIT_DEFAULT_COS_EPS;
        o->nbins = KDL_SPLIT_DEFAULT_NBINS;
}

static int check_opts(const kdl_split_opts *o)
{
        if (o->ntaus < 1 || o->ntaus > KDL_SPLIT_MAX_TAUS)
                return kdl_error(-KDL_ERANGE, "split: %zu temperatures, expected 1..%d", o->ntaus,
                                 KDL_SPLIT_MAX_TAUS);
        for (size_t k = 0; k < o->ntaus; k++)
                if (!(isfinite(o->taus[k]) && o->taus[k] > 0.0))
                        return kdl_error(-KDL_ERANGE,
                                         "split: temperature %g is not a positive number",
                                         o->taus[k]);
        if (!(o->lambda >= 0.0 && o->lambda <= 1.0))
                return kdl_error(-KDL_ERANGE, "split: lambda %g outside [0, 1]", o->lambda);
        if (!(isfinite(o->omega_max) && o->omega_max > 0.0))
                return kdl_error(-KDL_ERANGE, "split: omega_max %g is not a positive number",
                                 o->omega_max);
        if (!(isfinite(o->w_eps) && o->w_eps > 0.0))
                return kdl_error(-KDL_ERANGE, "split: w_eps %g is not a positive number", o->w_eps);
        if (!(isfinite(o->cos_eps) && o->cos_eps > 0.0))
                return kdl_error(-KDL_ERANGE, "split: cos_eps %g is not a positive number",
                                 o->cos_eps);
        if (o->nbins < 1 || o->nbins > ((size_t) 1 << 24))
                return kdl_error(-KDL_ERANGE, "split: %zu histogram bins, expected 1..%zu",
                                 o->nbins, (size_t) 1 << 24);
        return 0;
}

static bool opts_equal(const kdl_split_opts *a, const kdl_split_opts *b)
{
        if (a->ntaus != b->ntaus || a->nbins != b->nbins)
                return false;
        for (size_t k = 0; k < a->ntaus; k++)
                if (memcmp(&a->taus[k], &b->taus[k], sizeof(double)) != 0)
                        return false;
        return memcmp(&a->lambda, &b->lambda, sizeof(double)) == 0 &&
               memcmp(&a->omega_max, &b->omega_max, sizeof(double)) == 0 &&
               memcmp(&a->w_eps, &b->w_eps, sizeof(double)) == 0 &&
               memcmp(&a->cos_eps, &b->cos_eps, sizeof(double)) == 0;
}

/* ---- Per-sample numerics ---------------------------------------------------- */

static double logaddexp(double a, double b)
{
        double m = a > b ? a : b;

        if (isinf(m) && m < 0.0)
                return m;
        return m + log1p(exp(-fabs(a - b)));
}

/* Log-sum-exp of z/τ over the non-target classes (*ret_rest) and over all
 * classes (*ret_all), both with the maximum subtracted (§1.2). */
static void lse_split(const double *z, ptrdiff_t st, size_t c, size_t y, double tau,
                      double *ret_rest, double *ret_all)
{
        double m = -INFINITY, sum = 0.0;

        for (size_t j = 0; j < c; j++) {
                double a = z[(ptrdiff_t) j * st] / tau;

                if (j != y && a > m)
                        m = a;
        }
        for (size_t j = 0; j < c; j++)
                if (j != y)
                        sum += exp(z[(ptrdiff_t) j * st] / tau - m);
        *ret_rest = m + log(sum);
        *ret_all = logaddexp(z[(ptrdiff_t) y * st] / tau, *ret_rest);
}

/* Everything of kdl_split_sample at one τ; if @add_pt is not NULL, p^t is
 * added into it (a row of the confusion sums).  Inputs are valid. */
static void eval_one(const double *zt, ptrdiff_t st, const double *zs, ptrdiff_t ss, size_t c,
                     size_t y, double tau, double lambda, double omega_max, kdl_split_sample *r,
                     double *add_pt)
{
        double rest_t, all_t, rest_s, all_s;
        double lpt_y, lpt_r, lps_y, lps_r, pt_y, pt_r, ps_y, lratio;
        double kl = 0.0, nckd = 0.0, ent = 0.0, tckd, tau2 = tau * tau;

        lse_split(zt, st, c, y, tau, &rest_t, &all_t);
        lse_split(zs, ss, c, y, tau, &rest_s, &all_s);
        lpt_y = zt[(ptrdiff_t) y * st] / tau - all_t;
        lpt_r = rest_t - all_t; /* log(1 - p^t_y), exact even when p^t_y rounds to 1 */
        lps_y = zs[(ptrdiff_t) y * ss] / tau - all_s;
        lps_r = rest_s - all_s;
        pt_y = exp(lpt_y);
        pt_r = exp(lpt_r);
        ps_y = exp(lps_y);

        /* Binary KL in the log domain (§6.4), not log of probabilities. */
        tckd = pt_y * (lpt_y - lps_y) + pt_r * (lpt_r - lps_r);

        for (size_t j = 0; j < c; j++) {
                double a, b, lpt, lps, pt, lht, lhs, ht;

                if (j == y)
                        continue;
                a = zt[(ptrdiff_t) j * st] / tau;
                b = zs[(ptrdiff_t) j * ss] / tau;
                lpt = a - all_t;
                lps = b - all_s;
                pt = exp(lpt);
                kl += pt * (lpt - lps);
                lht = a - rest_t; /* exact exclusion of the target */
                lhs = b - rest_s;
                ht = exp(lht);
                nckd += ht * (lht - lhs);
                ent -= ht * lht;
                if (add_pt)
                        add_pt[j] += pt;
        }
        kl += pt_y * (lpt_y - lps_y);
        if (add_pt)
                add_pt[y] += pt_y;

        r->kl = tau2 * kl;
        r->tckd = tau2 * tckd;
        r->nckd = tau2 * nckd;
        r->residual = r->kl - r->tckd - pt_r * r->nckd;
        r->pt_y = pt_y;
        r->ps_y = ps_y;
        r->pt_rest = pt_r;
        r->gap = fabs(pt_y - ps_y);
        lratio = lpt_y - lps_y;
        r->omega_clipped = lratio > log(omega_max);
        r->omega = r->omega_clipped ? omega_max : exp(lratio);
        r->eps = lambda * pt_r * (double) c / (double) (c - 1);
        r->nt_entropy = c > 2 ? ent / log((double) (c - 1)) : 1.0;
}

static int check_vec(const double *z, size_t c, const char *who)
{
        for (size_t j = 0; j < c; j++)
                if (!isfinite(z[j]))
                        return kdl_error(-KDL_ENONFINITE, "split: %s logit %zu is %g", who, j,
                                         z[j]);
        return 0;
}

static int check_sample_args(const double *zt, const double *zs, size_t c, size_t y, double tau)
{
        int err;

        if (c < 2)
                return kdl_error(-KDL_ESHAPE, "split: %zu classes, expected at least 2", c);
        if (y >= c)
                return kdl_error(-KDL_ERANGE, "split: label %zu outside [0, %zu)", y, c);
        if (!(isfinite(tau) && tau > 0.0))
                return kdl_error(-KDL_ERANGE, "split: temperature %g is not a positive number",
                                 tau);
        err = check_vec(zt, c, "teacher");
        if (err < 0)
                return err;
        return check_vec(zs, c, "student");
}

int kdl_split_eval(const double *zt, const double *zs, size_t c, size_t y, double tau,
                   const kdl_split_opts *o, kdl_split_sample *ret)
{
        kdl_split_sample r;
        int err;

        assert(zt && zs && o && ret);
        err = check_sample_args(zt, zs, c, y, tau);
        if (err < 0)
                return err;
        eval_one(zt, 1, zs, 1, c, y, tau, o->lambda, o->omega_max, &r, NULL);
        *ret = r;
        return 0;
}

int kdl_split_nckd_masked(const double *zt, const double *zs, size_t c, size_t y, double tau,
                          double *ret)
{
        double mt = -INFINITY, ms = -INFINITY, sumt = 0.0, sums = 0.0, lset, lses, kl = 0.0;
        int err;

        assert(zt && zs && ret);
        err = check_sample_args(zt, zs, c, y, tau);
        if (err < 0)
                return err;
                /* softmax(z/τ - 1000 e_y) over all C classes, as mdistiller's DKD.py. */
#define MASKED(z, j) ((z)[j] / tau - ((j) == y ? 1000.0 : 0.0))
        for (size_t j = 0; j < c; j++) {
                mt = fmax(mt, MASKED(zt, j));
                ms = fmax(ms, MASKED(zs, j));
        }
        for (size_t j = 0; j < c; j++) {
                sumt += exp(MASKED(zt, j) - mt);
                sums += exp(MASKED(zs, j) - ms);
        }
        lset = mt + log(sumt);
        lses = ms + log(sums);
        for (size_t j = 0; j < c; j++) {
                double lpt = MASKED(zt, j) - lset, lps = MASKED(zs, j) - lses;

                kl += exp(lpt) * (lpt - lps);
        }
#undef MASKED
        *ret = tau * tau * kl;
        return 0;
}

double kdl_split_weight(double pt_rest, double qs_rest, double pt_mean, double lambda, double eps,
                        bool *ret_guarded)
{
        double num = qs_rest - lambda * pt_rest;
        double den = qs_rest - lambda * (1.0 - pt_mean);
        bool guarded = !(den >= eps);

        if (guarded)
                den = eps;
        if (ret_guarded)
                *ret_guarded = guarded;
        return num / den;
}

/* ---- Running distributions ------------------------------------------------- */

/* A scalar's moments, range and histogram counts. */
struct dist_acc {
        kdl_moments m;
        double min, max;
        size_t *count; /* nbins (linear) or W_SLOTS (log) */
};

/* Where a histogram's bins are. */
struct geom {
        bool log;      /* the w_n layout; lo/hi unused */
        size_t nbins;  /* linear bins */
        double lo, hi; /* linear range */
};

static size_t geom_slots(const struct geom *g)
{
        return g->log ? (size_t) W_SLOTS : g->nbins;
}

static size_t geom_bin(const struct geom *g, double x)
{
        double t;

        if (g->log) {
                if (!(x > 0.0))
                        return 0;
                t = log2(x);
                if (t < KDL_SPLIT_W_LOG2_MIN)
                        return 1;
                if (t >= KDL_SPLIT_W_LOG2_MAX)
                        return W_SLOTS - 1;
                t = (t - KDL_SPLIT_W_LOG2_MIN) / (KDL_SPLIT_W_LOG2_MAX - KDL_SPLIT_W_LOG2_MIN) *
                    (double) W_NB;
                return 2 + (t >= (double) W_NB ? W_NB - 1 : (size_t) t);
        }
        t = (x - g->lo) / (g->hi - g->lo) * (double) g->nbins;
        if (!(t > 0.0))
                return 0;
        if (t >= (double) g->nbins)
                return g->nbins - 1;
        return (size_t) t;
}

/* Bin @k's edges; *@ret_log: interpolate linearly in log2 inside it. */
static void geom_edges(const struct geom *g, const struct dist_acc *d, size_t k, double *ret_lo,
                       double *ret_hi, bool *ret_log)
{
        const double span = KDL_SPLIT_W_LOG2_MAX - KDL_SPLIT_W_LOG2_MIN;

        *ret_log = false;
        if (!g->log) {
                *ret_lo = g->lo + (g->hi - g->lo) * (double) k / (double) g->nbins;
                *ret_hi = g->lo + (g->hi - g->lo) * (double) (k + 1) / (double) g->nbins;
                return;
        }
        if (k == 0) {
                *ret_lo = d->m.n && d->min < 0.0 ? d->min : 0.0;
                *ret_hi = 0.0;
        } else if (k == 1) {
                *ret_lo = 0.0;
                *ret_hi = exp2(KDL_SPLIT_W_LOG2_MIN);
        } else if (k == W_SLOTS - 1) {
                *ret_lo = exp2(KDL_SPLIT_W_LOG2_MAX);
                *ret_hi = d->m.n && d->max > *ret_lo ? d->max : *ret_lo;
        } else {
                *ret_lo = exp2(KDL_SPLIT_W_LOG2_MIN + span * (double) (k - 2) / W_NB);
                *ret_hi = exp2(KDL_SPLIT_W_LOG2_MIN + span * (double) (k - 1) / W_NB);
                *ret_log = true;
        }
}

static int dist_init(struct dist_acc *d, const struct geom *g)
{
        d->m = (kdl_moments){0};
        d->min = INFINITY;
        d->max = -INFINITY;
        d->count = kdl_new(size_t, geom_slots(g));
        return d->count ? 0 : -ENOMEM;
}

static void dist_add(struct dist_acc *d, const struct geom *g, double x)
{
        kdl_moments_add(&d->m, x);
        if (x < d->min)
                d->min = x;
        if (x > d->max)
                d->max = x;
        d->count[geom_bin(g, x)]++;
}

static void dist_merge(struct dist_acc *into, const struct dist_acc *from, const struct geom *g)
{
        size_t slots = geom_slots(g);

        if (from->m.n == 0)
                return;
        kdl_moments_merge(&into->m, &from->m);
        if (from->min < into->min)
                into->min = from->min;
        if (from->max > into->max)
                into->max = from->max;
        for (size_t k = 0; k < slots; k++)
                into->count[k] += from->count[k];
}

/* ---- Pass 1 ---------------------------------------------------------------- */

enum { D_PT, D_PS, D_GAP, D_OMEGA, D_EPS, D_ENT, D_COUNT_ };

struct tau_acc {
        double sum_kl, sum_tckd, sum_nckd, sum_coupled, residual_max;
        struct dist_acc d[D_COUNT_];
        size_t omega_clipped;
        double *msum; /* C x C: row i sums p^t over the samples of class i */
};

struct kdl_split_state {
        size_t c;
        kdl_split_opts o;
        size_t n;
        size_t *class_count;
        size_t teacher_correct, student_correct;
        struct tau_acc t[KDL_SPLIT_MAX_TAUS];
};

static struct geom dist_geom(const kdl_split_state *s, int which)
{
        struct geom g = {.log = false, .nbins = s->o.nbins, .lo = 0.0, .hi = 1.0};

        if (which == D_OMEGA)
                g.hi = s->o.omega_max;
        if (which == D_EPS) {
                g.hi = s->o.lambda * (double) s->c / (double) (s->c - 1);
                if (!(g.hi > 0.0))
                        g.hi = 1.0; /* λ = 0: ε_n == 0, any range holds it */
        }
        return g;
}

static const struct geom w_geom = {.log = true};

void kdl_split_state_free(kdl_split_state *s)
{
        if (!s)
                return;
        for (size_t k = 0; k < KDL_SPLIT_MAX_TAUS; k++) {
                for (int d = 0; d < D_COUNT_; d++)
                        free(s->t[k].d[d].count);
                free(s->t[k].msum);
        }
        free(s->class_count);
        free(s);
}

int kdl_split_state_new(size_t c, const kdl_split_opts *o, kdl_split_state **ret)
{
        kdl_split_state *s = NULL;
        size_t cc;
        int err;

        assert(o && ret);
        if (c < 2)
                return kdl_error(-KDL_ESHAPE, "split: %zu classes, expected at least 2", c);
        err = check_opts(o);
        if (err < 0)
                return err;
        err = kdl_mul_size(c, c, &cc);
        if (err < 0)
                return err;

        s = kdl_new(kdl_split_state, 1);
        if (!s)
                return -ENOMEM;
        s->c = c;
        s->o = *o;
        err = -ENOMEM;
        s->class_count = kdl_new(size_t, c);
        if (!s->class_count)
                goto out;
        for (size_t k = 0; k < o->ntaus; k++) {
                s->t[k].msum = kdl_new(double, cc);
                if (!s->t[k].msum)
                        goto out;
                for (int d = 0; d < D_COUNT_; d++) {
                        struct geom g = dist_geom(s, d);

                        if (dist_init(&s->t[k].d[d], &g) < 0)
                                goto out;
                }
        }
        *ret = s;
        s = NULL;
        err = 0;
out:
        kdl_split_state_free(s);
        return err;
}

size_t kdl_split_state_count(const kdl_split_state *s)
{
        assert(s);
        return s->n;
}

/* Check a block completely before anything is added. */
static int check_block(size_t c, const kdl_tensor *zt, const kdl_tensor *zs, const int64_t *labels)
{
        size_t rows, row;

        if (zt->ndim != 2 || zs->ndim != 2)
                return kdl_error(-KDL_ESHAPE,
                                 "split: logits must be 2-D blocks, got %zu-D and %zu-D", zt->ndim,
                                 zs->ndim);
        rows = zt->shape[0];
        if (zs->shape[0] != rows)
                return kdl_error(-KDL_ESHAPE,
                                 "split: teacher block has %zu rows, student block %zu", rows,
                                 zs->shape[0]);
        if (zt->shape[1] != c || zs->shape[1] != c)
                return kdl_error(-KDL_ESHAPE,
                                 "split: expected %zu classes, teacher has %zu, student %zu", c,
                                 zt->shape[1], zs->shape[1]);
        for (size_t i = 0; i < rows; i++)
                if (labels[i] < 0 || (uint64_t) labels[i] >= c)
                        return kdl_error(-KDL_ERANGE,
                                         "split: label %lld of block row %zu outside [0, %zu)",
                                         (long long) labels[i], i, c);
        if (kdl_tensor_check_finite(zt, &row) < 0)
                return kdl_error(-KDL_ENONFINITE,
                                 "split: non-finite teacher logit in block row %zu", row);
        if (kdl_tensor_check_finite(zs, &row) < 0)
                return kdl_error(-KDL_ENONFINITE,
                                 "split: non-finite student logit in block row %zu", row);
        return 0;
}

static size_t argmax(const double *z, ptrdiff_t st, size_t c)
{
        size_t best = 0;

        for (size_t j = 1; j < c; j++)
                if (z[(ptrdiff_t) j * st] > z[(ptrdiff_t) best * st])
                        best = j;
        return best;
}

int kdl_split_accumulate(kdl_split_state *s, const kdl_tensor *zt, const kdl_tensor *zs,
                         const int64_t *labels)
{
        size_t c;
        int err;

        assert(s && zt && zs && (labels || zt->shape[0] == 0));
        c = s->c;
        err = check_block(c, zt, zs, labels);
        if (err < 0)
                return err;

        for (size_t i = 0; i < zt->shape[0]; i++) {
                const double *rt = zt->data + (ptrdiff_t) i * zt->stride[0];
                const double *rs = zs->data + (ptrdiff_t) i * zs->stride[0];
                size_t y = (size_t) labels[i];

                s->class_count[y]++;
                s->teacher_correct += argmax(rt, zt->stride[1], c) == y;
                s->student_correct += argmax(rs, zs->stride[1], c) == y;
                for (size_t k = 0; k < s->o.ntaus; k++) {
                        struct tau_acc *t = &s->t[k];
                        kdl_split_sample r;
                        double ar;

                        eval_one(rt, zt->stride[1], rs, zs->stride[1], c, y, s->o.taus[k],
                                 s->o.lambda, s->o.omega_max, &r, t->msum + y * c);
                        t->sum_kl += r.kl;
                        t->sum_tckd += r.tckd;
                        t->sum_nckd += r.nckd;
                        t->sum_coupled += r.pt_rest * r.nckd;
                        ar = fabs(r.residual);
                        if (ar > t->residual_max)
                                t->residual_max = ar;
                        t->omega_clipped += r.omega_clipped;
                        {
                                const double v[D_COUNT_] = {
                                        [D_PT] = r.pt_y, [D_PS] = r.ps_y,
                                        [D_GAP] = r.gap, [D_OMEGA] = r.omega,
                                        [D_EPS] = r.eps, [D_ENT] = r.nt_entropy,
                                };

                                for (int d = 0; d < D_COUNT_; d++) {
                                        struct geom g = dist_geom(s, d);

                                        dist_add(&t->d[d], &g, v[d]);
                                }
                        }
                }
        }
        s->n += zt->shape[0];
        return 0;
}

int kdl_split_merge(kdl_split_state *into, const kdl_split_state *from)
{
        size_t c;

        assert(into && from);
        if (into->c != from->c || !opts_equal(&into->o, &from->o))
                return kdl_error(-KDL_EMISMATCH,
                                 "split: cannot merge states of different classes or options");
        c = into->c;
        for (size_t y = 0; y < c; y++)
                into->class_count[y] += from->class_count[y];
        into->teacher_correct += from->teacher_correct;
        into->student_correct += from->student_correct;
        for (size_t k = 0; k < into->o.ntaus; k++) {
                struct tau_acc *a = &into->t[k];
                const struct tau_acc *b = &from->t[k];

                a->sum_kl += b->sum_kl;
                a->sum_tckd += b->sum_tckd;
                a->sum_nckd += b->sum_nckd;
                a->sum_coupled += b->sum_coupled;
                if (b->residual_max > a->residual_max)
                        a->residual_max = b->residual_max;
                a->omega_clipped += b->omega_clipped;
                for (int d = 0; d < D_COUNT_; d++) {
                        struct geom g = dist_geom(into, d);

                        dist_merge(&a->d[d], &b->d[d], &g);
                }
                for (size_t e = 0; e < c * c; e++)
                        a->msum[e] += b->msum[e];
        }
        into->n += from->n;
        return 0;
}

/* ---- Pass 2 ---------------------------------------------------------------- */

struct inst_acc {
        double pt_mean;
        struct dist_acc w;
        kdl_comoments wp;    /* (w_n, p^t_y) */
        kdl_comoments wp_ok; /* the same over unguarded samples */
        size_t guarded, above_one;
};

struct kdl_split_instance_state {
        size_t c;
        kdl_split_opts o;
        size_t n;
        struct inst_acc t[KDL_SPLIT_MAX_TAUS];
};

void kdl_split_instance_state_free(kdl_split_instance_state *s)
{
        if (!s)
                return;
        for (size_t k = 0; k < KDL_SPLIT_MAX_TAUS; k++)
                free(s->t[k].w.count);
        free(s);
}

int kdl_split_instance_state_new(const kdl_split_state *pass1, kdl_split_instance_state **ret)
{
        kdl_split_instance_state *s;

        assert(pass1 && ret);
        if (pass1->n == 0)
                return kdl_error(-KDL_EMISSING,
                                 "split: the first pass holds no samples (p̄^t_y undefined)");
        s = kdl_new(kdl_split_instance_state, 1);
        if (!s)
                return -ENOMEM;
        s->c = pass1->c;
        s->o = pass1->o;
        for (size_t k = 0; k < s->o.ntaus; k++) {
                s->t[k].pt_mean = pass1->t[k].d[D_PT].m.mean;
                if (dist_init(&s->t[k].w, &w_geom) < 0) {
                        kdl_split_instance_state_free(s);
                        return -ENOMEM;
                }
        }
        *ret = s;
        return 0;
}

int kdl_split_instance_accumulate(kdl_split_instance_state *s, const kdl_tensor *zt,
                                  const kdl_tensor *zs, const int64_t *labels, double *ret_w)
{
        size_t c;
        int err;

        assert(s && zt && zs && (labels || zt->shape[0] == 0));
        c = s->c;
        err = check_block(c, zt, zs, labels);
        if (err < 0)
                return err;

        for (size_t i = 0; i < zt->shape[0]; i++) {
                const double *rt = zt->data + (ptrdiff_t) i * zt->stride[0];
                const double *rs = zs->data + (ptrdiff_t) i * zs->stride[0];
                size_t y = (size_t) labels[i];

                for (size_t k = 0; k < s->o.ntaus; k++) {
                        struct inst_acc *t = &s->t[k];
                        double tau = s->o.taus[k], rest_t, all_t, rest_s, all_s, pt_r, qs_r, pt_y,
                               w;
                        bool guarded;

                        lse_split(rt, zt->stride[1], c, y, tau, &rest_t, &all_t);
                        lse_split(rs, zs->stride[1], c, y, tau, &rest_s, &all_s);
                        pt_r = exp(rest_t - all_t);
                        qs_r = exp(rest_s - all_s);
                        w = kdl_split_weight(pt_r, qs_r, t->pt_mean, s->o.lambda, s->o.w_eps,
                                             &guarded);
                        dist_add(&t->w, &w_geom, w);
                        pt_y = exp(rt[(ptrdiff_t) y * zt->stride[1]] / tau - all_t);
                        kdl_comoments_add(&t->wp, w, pt_y);
                        if (!guarded)
                                kdl_comoments_add(&t->wp_ok, w, pt_y);
                        t->guarded += guarded;
                        t->above_one += w > 1.0;
                        if (ret_w)
                                ret_w[i * s->o.ntaus + k] = w;
                }
        }
        s->n += zt->shape[0];
        return 0;
}

int kdl_split_instance_merge(kdl_split_instance_state *into, const kdl_split_instance_state *from)
{
        assert(into && from);
        if (into->c != from->c || !opts_equal(&into->o, &from->o))
                return kdl_error(-KDL_EMISMATCH,
                                 "split: cannot merge states of different classes or options");
        for (size_t k = 0; k < into->o.ntaus; k++)
                if (memcmp(&into->t[k].pt_mean, &from->t[k].pt_mean, sizeof(double)) != 0)
                        return kdl_error(-KDL_EMISMATCH,
                                         "split: second passes of different first passes");
        for (size_t k = 0; k < into->o.ntaus; k++) {
                struct inst_acc *a = &into->t[k];
                const struct inst_acc *b = &from->t[k];

                dist_merge(&a->w, &b->w, &w_geom);
                kdl_comoments_merge(&a->wp, &b->wp);
                kdl_comoments_merge(&a->wp_ok, &b->wp_ok);
                a->guarded += b->guarded;
                a->above_one += b->above_one;
        }
        into->n += from->n;
        return 0;
}

/* ---- Finalize -------------------------------------------------------------- */

static int dist_result(const struct geom *g, const struct dist_acc *d, kdl_split_dist *ret)
{
        size_t slots = geom_slots(g), n = d->m.n;
        kdl_split_hist *h = &ret->hist;
        kdl_hist_view v = {.nbins = slots, .count = d->count, .n = n, .min = d->min, .max = d->max};

        ret->n = n;
        ret->mean = n ? d->m.mean : (double) NAN;
        ret->std = n ? sqrt(d->m.m2 / (double) n) : (double) NAN;
        ret->min = n ? d->min : (double) NAN;
        ret->max = n ? d->max : (double) NAN;
        h->nbins = slots;
        h->lo = kdl_new(double, slots);
        h->hi = kdl_new(double, slots);
        h->count = kdl_new(size_t, slots);
        if (!h->lo || !h->hi || !h->count)
                return -ENOMEM;
        for (size_t k = 0; k < slots; k++) {
                bool lg;

                geom_edges(g, d, k, &h->lo[k], &h->hi[k], &lg);
                h->count[k] = d->count[k];
                if (lg && v.log_end == 0)
                        v.log_first = k;
                if (lg)
                        v.log_end = k + 1;
        }
        v.lo = h->lo;
        v.hi = h->hi;
        for (int q = 0; q < KDL_SPLIT_NQUANTILES; q++)
                ret->quantile[q] =
                        n ? kdl_quantile_hist(&v, kdl_split_quantile_levels[q]) : (double) NAN;
        return 0;
}

static void dist_free(kdl_split_dist *d)
{
        free(d->hist.lo);
        free(d->hist.hi);
        free(d->hist.count);
}

void kdl_split_result_free(kdl_split_result *r)
{
        if (!r)
                return;
        for (size_t k = 0; r->tau && k < r->ntaus; k++) {
                kdl_split_tau_result *t = &r->tau[k];

                dist_free(&t->pt_y);
                dist_free(&t->ps_y);
                dist_free(&t->gap);
                dist_free(&t->omega);
                dist_free(&t->eps);
                dist_free(&t->nt_entropy);
                dist_free(&t->w);
                free(t->confusion);
        }
        free(r->tau);
        free(r->cos_teacher);
        free(r->cos_student);
        free(r->class_count);
        free(r);
}

static int check_head(const kdl_tensor *w, size_t c, const char *who)
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

/* The cosine matrix of @w's rows, and the Gram matrix of its class-centred
 * rows (for CKA), both C x C. */
static int head_mats(const kdl_tensor *w, double cos_eps, double *ret_cos, double *ret_gram)
{
        size_t c = w->shape[0], d = w->shape[1];
        double *a = kdl_new(double, c *d), *mean = kdl_new(double, d);
        int err = -ENOMEM;

        if (!a || !mean)
                goto out;
        for (size_t i = 0; i < c; i++) {
                double nrm = 0.0;

                for (size_t j = 0; j < d; j++) {
                        double v = KDL_AT2(w, i, j);

                        nrm += v * v;
                }
                nrm = fmax(sqrt(nrm), cos_eps);
                for (size_t j = 0; j < d; j++)
                        a[i * d + j] = KDL_AT2(w, i, j) / nrm;
        }
        err = gram(a, c, d, ret_cos);
        if (err < 0)
                goto out;

        for (size_t i = 0; i < c; i++)
                for (size_t j = 0; j < d; j++)
                        mean[j] += KDL_AT2(w, i, j);
        for (size_t j = 0; j < d; j++)
                mean[j] /= (double) c;
        for (size_t i = 0; i < c; i++)
                for (size_t j = 0; j < d; j++)
                        a[i * d + j] = KDL_AT2(w, i, j) - mean[j];
        err = gram(a, c, d, ret_gram);
out:
        free(mean);
        free(a);
        return err;
}

/* Pearson correlation over the pairs i < j of two C x C matrices; @x is
 * symmetrised ((x_ij + x_ji)/2); pairs are kept where @keep is NULL or
 * keep[i] && keep[j].  @buf: room for C (C - 1) doubles. */
static double pairs_pearson(const double *x, const double *y, size_t c, const size_t *keep,
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

static int finalize_heads(const kdl_split_state *s, const kdl_tensor *wt, const kdl_tensor *ws,
                          double *pairs, kdl_split_result *r)
{
        size_t c = s->c;
        double *gt = NULL, *gs = NULL;
        int err = 0;

        r->pearson_heads = (double) NAN;
        r->cka_heads = (double) NAN;
        if (wt) {
                r->cos_teacher = kdl_new(double, c *c);
                gt = kdl_new(double, c *c);
                if (!r->cos_teacher || !gt) {
                        err = -ENOMEM;
                        goto out;
                }
                err = head_mats(wt, s->o.cos_eps, r->cos_teacher, gt);
                if (err < 0)
                        goto out;
                r->has_head_teacher = true;
                r->d_teacher = wt->shape[1];
        }
        if (ws) {
                r->cos_student = kdl_new(double, c *c);
                gs = kdl_new(double, c *c);
                if (!r->cos_student || !gs) {
                        err = -ENOMEM;
                        goto out;
                }
                err = head_mats(ws, s->o.cos_eps, r->cos_student, gs);
                if (err < 0)
                        goto out;
                r->has_head_student = true;
                r->d_student = ws->shape[1];
        }
        if (wt && ws) {
                double kl = 0.0, kk = 0.0, ll = 0.0, den;

                r->pearson_heads = pairs_pearson(r->cos_teacher, r->cos_student, c, NULL, pairs);
                for (size_t e = 0; e < c * c; e++) {
                        kl += gt[e] * gs[e];
                        kk += gt[e] * gt[e];
                        ll += gs[e] * gs[e];
                }
                den = sqrt(kk) * sqrt(ll);
                r->cka_heads = den > 0.0 ? kl / den : (double) NAN;
        }
out:
        free(gs);
        free(gt);
        return err;
}

int kdl_split_finalize(const kdl_split_state *s, const kdl_split_instance_state *inst,
                       const kdl_tensor *wt, const kdl_tensor *ws, kdl_split_result **ret)
{
        kdl_split_result *r = NULL;
        double *pairs = NULL;
        size_t c, n, npresent = 0;
        int err;

        assert(s && ret);
        c = s->c;
        n = s->n;
        for (size_t y = 0; y < c; y++)
                npresent += s->class_count[y] > 0;
        if (n == 0)
                return kdl_error(-KDL_EMISSING, "split: no samples were accumulated");
        if (inst) {
                bool same = inst->c == c && opts_equal(&inst->o, &s->o) && inst->n == n;

                for (size_t k = 0; same && k < s->o.ntaus; k++)
                        same = memcmp(&inst->t[k].pt_mean, &s->t[k].d[D_PT].m.mean,
                                      sizeof(double)) == 0;
                if (!same)
                        return kdl_error(-KDL_EMISMATCH,
                                         "split: the second pass does not match the first (%zu "
                                         "vs %zu samples, or other options)",
                                         inst->n, n);
        }
        if (wt) {
                err = check_head(wt, c, "teacher");
                if (err < 0)
                        return err;
        }
        if (ws) {
                err = check_head(ws, c, "student");
                if (err < 0)
                        return err;
        }

        err = -ENOMEM;
        r = kdl_new(kdl_split_result, 1);
        if (!r)
                goto out;
        r->c = c;
        r->n = n;
        r->opts = s->o;
        r->teacher_correct = s->teacher_correct;
        r->student_correct = s->student_correct;
        r->class_count = kdl_new(size_t, c);
        r->tau = kdl_new(kdl_split_tau_result, s->o.ntaus);
        pairs = kdl_new(double, c *(c - 1));
        if (!r->class_count || !r->tau || !pairs)
                goto out;
        r->ntaus = s->o.ntaus;
        memcpy(r->class_count, s->class_count, c * sizeof(*r->class_count));

        err = finalize_heads(s, wt, ws, pairs, r);
        if (err < 0)
                goto out;

        for (size_t k = 0; k < s->o.ntaus; k++) {
                const struct tau_acc *a = &s->t[k];
                kdl_split_tau_result *t = &r->tau[k];
                kdl_split_dist *dst[D_COUNT_] = {
                        [D_PT] = &t->pt_y,     [D_PS] = &t->ps_y, [D_GAP] = &t->gap,
                        [D_OMEGA] = &t->omega, [D_EPS] = &t->eps, [D_ENT] = &t->nt_entropy,
                };
                double mkl;

                t->tau = s->o.taus[k];
                t->kl = a->sum_kl / (double) n;
                t->tckd = a->sum_tckd / (double) n;
                t->nckd = a->sum_nckd / (double) n;
                t->nckd_coupled = a->sum_coupled / (double) n;
                t->residual_max = a->residual_max;
                mkl = t->kl;
                t->explicit_share = fabs(mkl) > 0.0 ? t->tckd / mkl : (double) NAN;
                t->implicit_share = fabs(mkl) > 0.0 ? t->nckd_coupled / mkl : (double) NAN;
                t->omega_clipped = a->omega_clipped;
                for (int d = 0; d < D_COUNT_; d++) {
                        struct geom g = dist_geom(s, d);

                        err = dist_result(&g, &a->d[d], dst[d]);
                        if (err < 0)
                                goto out;
                }

                err = -ENOMEM;
                t->confusion = kdl_new(double, c *c);
                if (!t->confusion)
                        goto out;
                for (size_t i = 0; i < c; i++)
                        for (size_t j = 0; j < c; j++)
                                t->confusion[i * c + j] =
                                        s->class_count[i]
                                                ? a->msum[i * c + j] / (double) s->class_count[i]
                                                : (double) NAN;
                t->pearson_confusion_teacher = (double) NAN;
                t->pearson_confusion_student = (double) NAN;
                t->confusion_pairs = npresent * (npresent - 1) / 2;
                if (r->cos_teacher)
                        t->pearson_confusion_teacher = pairs_pearson(t->confusion, r->cos_teacher,
                                                                     c, s->class_count, pairs);
                if (r->cos_student)
                        t->pearson_confusion_student = pairs_pearson(t->confusion, r->cos_student,
                                                                     c, s->class_count, pairs);

                t->pt_mean = a->d[D_PT].m.mean;
                t->pearson_w_pt = (double) NAN;
                t->w_unguarded = (double) NAN;
                t->w_std_unguarded = (double) NAN;
                t->pearson_w_pt_unguarded = (double) NAN;
                if (inst) {
                        const struct inst_acc *b = &inst->t[k];

                        err = dist_result(&w_geom, &b->w, &t->w);
                        if (err < 0)
                                goto out;
                        t->has_instance = true;
                        t->pearson_w_pt = kdl_comoments_pearson(&b->wp);
                        t->w_unguarded = b->wp_ok.n ? b->wp_ok.mx : (double) NAN;
                        t->w_std_unguarded = b->wp_ok.n ? sqrt(b->wp_ok.sxx / (double) b->wp_ok.n)
                                                        : (double) NAN;
                        t->pearson_w_pt_unguarded = kdl_comoments_pearson(&b->wp_ok);
                        t->w_guarded = b->guarded;
                        t->w_above_one = b->above_one;
                }
        }
        *ret = r;
        r = NULL;
        err = 0;
out:
        free(pairs);
        kdl_split_result_free(r);
        return err;
}
