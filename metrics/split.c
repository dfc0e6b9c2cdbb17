/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/moments.h"
#include "metrics/split.h"
#include "metrics/kl-internal.h"
#include "metrics/split-internal.h"
#include "metrics/base/banned.h"

const double kdl_split_quantile_levels[KDL_SPLIT_NQUANTILES] = {0.05, 0.25, 0.5, 0.75, 0.95};

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
        o->domain = KDL_SPLIT_DOMAIN_AUTO;
        o->domain_max_c = KDL_SPLIT_DEFAULT_DOMAIN_MAX_C;
        o->top_pairs = KDL_SPLIT_DEFAULT_TOP_PAIRS;
        o->memory = KDL_SPLIT_DEFAULT_MEMORY;
}

int kdl__split_check_opts(const kdl_split_opts *o)
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
        if ((unsigned) o->domain >= KDL_SPLIT_DOMAIN_COUNT_)
                return kdl_error(-KDL_ERANGE, "split: domain mode %d unknown", (int) o->domain);
        if (o->top_pairs > KDL_SPLIT_MAX_TOP_PAIRS)
                return kdl_error(-KDL_ERANGE, "split: %zu top pairs, expected 0..%zu", o->top_pairs,
                                 (size_t) KDL_SPLIT_MAX_TOP_PAIRS);
        return 0;
}

bool kdl__split_opts_equal(const kdl_split_opts *a, const kdl_split_opts *b)
{
        if (a->ntaus != b->ntaus || a->nbins != b->nbins || a->domain != b->domain ||
            a->top_pairs != b->top_pairs)
                return false;
        for (size_t k = 0; k < a->ntaus; k++)
                if (memcmp(&a->taus[k], &b->taus[k], sizeof(double)) != 0)
                        return false;
        return memcmp(&a->lambda, &b->lambda, sizeof(double)) == 0 &&
               memcmp(&a->omega_max, &b->omega_max, sizeof(double)) == 0 &&
               memcmp(&a->w_eps, &b->w_eps, sizeof(double)) == 0 &&
               memcmp(&a->cos_eps, &b->cos_eps, sizeof(double)) == 0;
}

/* ---- Pass 1 ---------------------------------------------------------------- */

enum { D_PT, D_PS, D_GAP, D_OMEGA, D_EPS, D_ENT, D_COUNT_ };
_Static_assert(D_COUNT_ == KDL__SPLIT_NDIST, "the first pass's distributions");

static struct kdl__split_geom dist_geom(const kdl_split_state *s, int which)
{
        struct kdl__split_geom g = {.log = false, .nbins = s->o.nbins, .lo = 0.0, .hi = 1.0};

        if (which == D_OMEGA)
                g.hi = s->o.omega_max;
        if (which == D_EPS) {
                g.hi = s->o.lambda * (double) s->c / (double) (s->c - 1);
                if (!(g.hi > 0.0))
                        g.hi = 1.0; /* λ = 0: ε_n == 0, any range holds it */
        }
        return g;
}

static const struct kdl__split_geom w_geom = {.log = true};

/* p^t_y summed in units of 2^-63, truncated (p in [0, 1] fits 64 bits, the
 * sum 128): an exact sum, so p̄^t_y is the same however the samples are
 * grouped and merged (one process or several), and so is every w_n. */
static void pt_add(struct kdl__split_tau_acc *t, double p)
{
        uint64_t x = (uint64_t) ldexp(p, 63);

        t->pt_lo += x;
        t->pt_hi += t->pt_lo < x;
}

static void pt_merge(struct kdl__split_tau_acc *into, const struct kdl__split_tau_acc *from)
{
        into->pt_lo += from->pt_lo;
        into->pt_hi += from->pt_hi + (into->pt_lo < from->pt_lo);
}

/* p̄^t_y of @n samples: (2^64 hi + lo) 2^-63 / n. */
static double pt_mean(const struct kdl__split_tau_acc *t, size_t n)
{
        return (ldexp((double) t->pt_hi, 1) + ldexp((double) t->pt_lo, -63)) / (double) n;
}

void kdl_split_state_free(kdl_split_state *s)
{
        if (!s)
                return;
        for (size_t k = 0; k < KDL_SPLIT_MAX_TAUS; k++) {
                for (int d = 0; d < D_COUNT_; d++)
                        kdl__split_dist_release(&s->t[k].d[d]);
                free(s->t[k].msum);
        }
        free(s->work);
        free(s->class_count);
        free(s);
}

int kdl_split_state_new(size_t c, const kdl_split_opts *o, kdl_split_state **ret)
{
        kdl_split_state *s = NULL;
        kdl_split_plan plan;
        size_t cc = 0;
        int err;

        assert(o && ret);
        err = kdl_split_plan_init(&plan, c, 0, 0, o);
        if (err < 0)
                return err;
        if (plan.domain == KDL_SPLIT_DOMAIN_FULL && !plan.fits)
                return kdl_error(-KDL_ERANGE,
                                 "split: the full domain level of %zu classes needs %.2f GiB, "
                                 "more than its budget of %.2f GiB",
                                 c, (double) plan.bytes / 1073741824.0,
                                 (double) o->memory / 1073741824.0);
        if (plan.domain == KDL_SPLIT_DOMAIN_FULL) {
                err = kdl_mul_size(c, c, &cc);
                if (err < 0)
                        return err;
        }

        s = kdl_new(kdl_split_state, 1);
        if (!s)
                return -ENOMEM;
        s->c = c;
        s->o = *o;
        s->o.domain = plan.domain;
        err = -ENOMEM;
        s->class_count = kdl_new(size_t, c);
        s->work = kdl__malloc(KDL_SPLIT_EVAL_WORK(c), sizeof(double));
        if (!s->class_count || !s->work)
                goto out;
        for (size_t k = 0; k < o->ntaus; k++) {
                s->t[k].msum = cc ? kdl_new(double, cc) : NULL;
                if (cc && !s->t[k].msum)
                        goto out;
                for (int d = 0; d < D_COUNT_; d++) {
                        struct kdl__split_geom g = dist_geom(s, d);

                        if (kdl__split_dist_init(&s->t[k].d[d], &g) < 0)
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

const size_t *kdl__split_state_counts(const kdl_split_state *s, size_t *ret_c)
{
        if (ret_c)
                *ret_c = s->c;
        return s->class_count;
}

const kdl_split_opts *kdl__split_state_opts(const kdl_split_state *s)
{
        return &s->o;
}

int kdl__split_check_block(size_t c, const kdl_tensor *zt, const kdl_tensor *zs,
                           const int64_t *labels)
{
        size_t rows, row;

        if (zt->ndim != 2 || (zs && zs->ndim != 2))
                return kdl_error(-KDL_ESHAPE,
                                 "split: logits must be 2-D blocks, got %zu-D and %zu-D", zt->ndim,
                                 zs ? zs->ndim : 2);
        rows = zt->shape[0];
        if (zs && zs->shape[0] != rows)
                return kdl_error(-KDL_ESHAPE,
                                 "split: teacher block has %zu rows, student block %zu", rows,
                                 zs->shape[0]);
        if (zt->shape[1] != c || (zs && zs->shape[1] != c))
                return kdl_error(-KDL_ESHAPE,
                                 "split: expected %zu classes, teacher has %zu, student %zu", c,
                                 zt->shape[1], zs ? zs->shape[1] : c);
        for (size_t i = 0; i < rows; i++)
                if (labels[i] < 0 || (uint64_t) labels[i] >= c)
                        return kdl_error(-KDL_ERANGE,
                                         "split: label %lld of block row %zu outside [0, %zu)",
                                         (long long) labels[i], i, c);
        if (kdl__kl_rows_finite(zt, &row) < 0)
                return kdl_error(-KDL_ENONFINITE,
                                 "split: non-finite teacher logit in block row %zu", row);
        if (zs && kdl__kl_rows_finite(zs, &row) < 0)
                return kdl_error(-KDL_ENONFINITE,
                                 "split: non-finite student logit in block row %zu", row);
        return 0;
}

/* The first index of the largest of @c finite values: the maximum in two
 * chains, then where it first occurs (a loop that kept the best index
 * reloaded its value, one dependent load and compare per class). */
static size_t argmax(const double *z, ptrdiff_t st, size_t c)
{
        double m0 = z[0], m1 = z[0], mx;
        size_t j = 1;

        for (; j + 1 < c; j += 2) {
                double a = z[(ptrdiff_t) j * st], b = z[(ptrdiff_t) (j + 1) * st];

                m0 = a > m0 ? a : m0;
                m1 = b > m1 ? b : m1;
        }
        if (j < c && z[(ptrdiff_t) j * st] > m0)
                m0 = z[(ptrdiff_t) j * st];
        mx = m1 > m0 ? m1 : m0;
        for (j = 0; j + 1 < c && z[(ptrdiff_t) j * st] < mx; j++)
                ;
        return j;
}

/* Add the sample @r (of label @y) at temperature @k. */
static void tau_add(kdl_split_state *s, size_t k, const kdl_split_sample *r)
{
        struct kdl__split_tau_acc *t = &s->t[k];
        const double v[D_COUNT_] = {
                [D_PT] = r->pt_y,     [D_PS] = r->ps_y, [D_GAP] = r->gap,
                [D_OMEGA] = r->omega, [D_EPS] = r->eps, [D_ENT] = r->nt_entropy,
        };
        double ar = fabs(r->residual);

        t->sum_kl += r->kl;
        t->sum_tckd += r->tckd;
        t->sum_nckd += r->nckd;
        t->sum_coupled += r->pt_rest * r->nckd;
        if (ar > t->residual_max)
                t->residual_max = ar;
        t->omega_clipped += r->omega_clipped;
        pt_add(t, r->pt_y);
        for (int d = 0; d < D_COUNT_; d++) {
                struct kdl__split_geom g = dist_geom(s, d);

                kdl__split_dist_add(&t->d[d], &g, v[d]);
        }
}

int kdl_split_accumulate(kdl_split_state *s, const kdl_tensor *zt, const kdl_tensor *zs,
                         const int64_t *labels)
{
        size_t c;
        int err;

        assert(s && zt && zs && (labels || zt->shape[0] == 0));
        c = s->c;
        err = kdl__split_check_block(c, zt, zs, labels);
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
                        kdl_split_sample r;

                        kdl__split_eval_one(rt, zt->stride[1], rs, zs->stride[1], c, y,
                                            s->o.taus[k], s->o.lambda, s->o.omega_max, s->work, &r,
                                            s->t[k].msum ? s->t[k].msum + y * c : NULL);
                        tau_add(s, k, &r);
                }
        }
        s->n += zt->shape[0];
        return 0;
}

int kdl_split_merge(kdl_split_state *into, const kdl_split_state *from)
{
        size_t c;

        assert(into && from);
        if (into->c != from->c || !kdl__split_opts_equal(&into->o, &from->o))
                return kdl_error(-KDL_EMISMATCH,
                                 "split: cannot merge states of different classes or options");
        c = into->c;
        for (size_t y = 0; y < c; y++)
                into->class_count[y] += from->class_count[y];
        into->teacher_correct += from->teacher_correct;
        into->student_correct += from->student_correct;
        for (size_t k = 0; k < into->o.ntaus; k++) {
                struct kdl__split_tau_acc *a = &into->t[k];
                const struct kdl__split_tau_acc *b = &from->t[k];

                a->sum_kl += b->sum_kl;
                a->sum_tckd += b->sum_tckd;
                a->sum_nckd += b->sum_nckd;
                a->sum_coupled += b->sum_coupled;
                if (b->residual_max > a->residual_max)
                        a->residual_max = b->residual_max;
                a->omega_clipped += b->omega_clipped;
                pt_merge(a, b);
                for (int d = 0; d < D_COUNT_; d++) {
                        struct kdl__split_geom g = dist_geom(into, d);

                        kdl__split_dist_merge(&a->d[d], &b->d[d], &g);
                }
                for (size_t e = 0; a->msum && e < c * c; e++)
                        a->msum[e] += b->msum[e];
        }
        into->n += from->n;
        return 0;
}

/* ---- Pass 2 ---------------------------------------------------------------- */

void kdl_split_instance_state_free(kdl_split_instance_state *s)
{
        if (!s)
                return;
        for (size_t k = 0; k < KDL_SPLIT_MAX_TAUS; k++) {
                kdl__split_dist_release(&s->t[k].w);
                kdl__split_dist_release(&s->t[k].w_ok);
        }
        free(s->work);
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
        s->work = kdl_new(double, s->c);
        if (!s->work) {
                kdl_split_instance_state_free(s);
                return -ENOMEM;
        }
        for (size_t k = 0; k < s->o.ntaus; k++) {
                s->t[k].pt_mean = pt_mean(&pass1->t[k], pass1->n);
                if (kdl__split_dist_init(&s->t[k].w, &w_geom) < 0 ||
                    kdl__split_dist_init(&s->t[k].w_ok, &w_geom) < 0) {
                        kdl_split_instance_state_free(s);
                        return -ENOMEM;
                }
        }
        *ret = s;
        return 0;
}

/* w_n of the sample (@rt, @rs) of label @y at temperature @k, added to the
 * second pass. */
static double inst_add(kdl_split_instance_state *s, size_t k, const double *rt, ptrdiff_t st,
                       const double *rs, ptrdiff_t ss, size_t y)
{
        struct kdl__split_inst_acc *t = &s->t[k];
        double tau = s->o.taus[k], dt, ds, pt_r, qs_r, pt_y, w;
        bool guarded;

        /* As kdl__split_eval_one(): from the log-odds, so that 1 - p_y keeps
         * its digits near p_y = 1. */
        dt = kdl__split_log_odds(rt, st, s->c, y, tau, s->work);
        ds = kdl__split_log_odds(rs, ss, s->c, y, tau, s->work);
        pt_r = exp(-kdl__split_softplus(dt));
        qs_r = exp(-kdl__split_softplus(ds));
        w = kdl_split_weight(pt_r, qs_r, t->pt_mean, s->o.lambda, s->o.w_eps, &guarded);
        kdl__split_dist_add(&t->w, &w_geom, w);
        pt_y = exp(-kdl__split_softplus(-dt));
        kdl_comoments_add(&t->wp, w, pt_y);
        if (!guarded) {
                kdl__split_dist_add(&t->w_ok, &w_geom, w);
                kdl_comoments_add(&t->wp_ok, w, pt_y);
        }
        t->guarded += guarded;
        t->nonpositive += w <= 0.0;
        t->above_one += w > 1.0;
        return w;
}

int kdl_split_instance_accumulate(kdl_split_instance_state *s, const kdl_tensor *zt,
                                  const kdl_tensor *zs, const int64_t *labels, double *ret_w)
{
        int err;

        assert(s && zt && zs && (labels || zt->shape[0] == 0));
        err = kdl__split_check_block(s->c, zt, zs, labels);
        if (err < 0)
                return err;

        for (size_t i = 0; i < zt->shape[0]; i++) {
                const double *rt = zt->data + (ptrdiff_t) i * zt->stride[0];
                const double *rs = zs->data + (ptrdiff_t) i * zs->stride[0];
                size_t y = (size_t) labels[i];

                for (size_t k = 0; k < s->o.ntaus; k++) {
                        double w = inst_add(s, k, rt, zt->stride[1], rs, zs->stride[1], y);

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
        if (into->c != from->c || !kdl__split_opts_equal(&into->o, &from->o))
                return kdl_error(-KDL_EMISMATCH,
                                 "split: cannot merge states of different classes or options");
        for (size_t k = 0; k < into->o.ntaus; k++)
                if (memcmp(&into->t[k].pt_mean, &from->t[k].pt_mean, sizeof(double)) != 0)
                        return kdl_error(-KDL_EMISMATCH,
                                         "split: second passes of different first passes");
        for (size_t k = 0; k < into->o.ntaus; k++) {
                struct kdl__split_inst_acc *a = &into->t[k];
                const struct kdl__split_inst_acc *b = &from->t[k];

                kdl__split_dist_merge(&a->w, &b->w, &w_geom);
                kdl__split_dist_merge(&a->w_ok, &b->w_ok, &w_geom);
                kdl_comoments_merge(&a->wp, &b->wp);
                kdl_comoments_merge(&a->wp_ok, &b->wp_ok);
                a->guarded += b->guarded;
                a->nonpositive += b->nonpositive;
                a->above_one += b->above_one;
        }
        into->n += from->n;
        return 0;
}

/* ---- Finalize -------------------------------------------------------------- */

void kdl_split_result_free(kdl_split_result *r)
{
        if (!r)
                return;
        for (size_t k = 0; r->tau && k < r->ntaus; k++) {
                kdl_split_tau_result *t = &r->tau[k];

                kdl__split_dist_result_free(&t->pt_y);
                kdl__split_dist_result_free(&t->ps_y);
                kdl__split_dist_result_free(&t->gap);
                kdl__split_dist_result_free(&t->omega);
                kdl__split_dist_result_free(&t->eps);
                kdl__split_dist_result_free(&t->nt_entropy);
                kdl__split_dist_result_free(&t->w);
                kdl__split_dist_result_free(&t->w_unguarded_dist);
                free(t->confusion);
                free(t->top);
        }
        free(r->tau);
        free(r->cos_teacher);
        free(r->cos_student);
        free(r->class_count);
        free(r);
}

/* Whether @inst is the second pass of @s. */
static int check_instance(const kdl_split_state *s, const kdl_split_instance_state *inst)
{
        bool same = inst->c == s->c && kdl__split_opts_equal(&inst->o, &s->o) && inst->n == s->n;

        for (size_t k = 0; same && k < s->o.ntaus; k++)
                same = memcmp(&inst->t[k].pt_mean, &(double){pt_mean(&s->t[k], s->n)},
                              sizeof(double)) == 0;
        if (!same)
                return kdl_error(-KDL_EMISMATCH,
                                 "split: the second pass does not match the first (%zu "
                                 "vs %zu samples, or other options)",
                                 inst->n, s->n);
        return 0;
}

/* Everything kdl_split_finalize() refuses, before it allocates. */
static int check_finalize(const kdl_split_state *s, const kdl_split_instance_state *inst,
                          const kdl_split_blocks *dom, const kdl_tensor *wt, const kdl_tensor *ws)
{
        int err;

        if (s->n == 0)
                return kdl_error(-KDL_EMISSING, "split: no samples were accumulated");
        if (inst) {
                err = check_instance(s, inst);
                if (err < 0)
                        return err;
        }
        if (s->o.domain == KDL_SPLIT_DOMAIN_BLOCKED && !dom)
                return kdl_error(-KDL_EMISSING,
                                 "split: the blocked domain level needs its blocks (a "
                                 "kdl_split_blocks)");
        if (dom) {
                err = kdl__split_blocks_check(dom, s);
                if (err < 0)
                        return err;
        }
        if (wt) {
                err = kdl__split_check_head(wt, s->c, "teacher");
                if (err < 0)
                        return err;
        }
        if (ws) {
                err = kdl__split_check_head(ws, s->c, "student");
                if (err < 0)
                        return err;
        }
        return 0;
}

/* Explicit vs implicit and the distributions at temperature @k. */
static int tau_explicit(const kdl_split_state *s, size_t k, kdl_split_tau_result *t)
{
        const struct kdl__split_tau_acc *a = &s->t[k];
        kdl_split_dist *dst[D_COUNT_] = {
                [D_PT] = &t->pt_y,     [D_PS] = &t->ps_y, [D_GAP] = &t->gap,
                [D_OMEGA] = &t->omega, [D_EPS] = &t->eps, [D_ENT] = &t->nt_entropy,
        };
        double n = (double) s->n, mkl;
        int err;

        t->tau = s->o.taus[k];
        t->kl = a->sum_kl / n;
        t->tckd = a->sum_tckd / n;
        t->nckd = a->sum_nckd / n;
        t->nckd_coupled = a->sum_coupled / n;
        t->residual_max = a->residual_max;
        mkl = t->kl;
        t->explicit_share = fabs(mkl) > 0.0 ? t->tckd / mkl : (double) NAN;
        t->implicit_share = fabs(mkl) > 0.0 ? t->nckd_coupled / mkl : (double) NAN;
        t->omega_clipped = a->omega_clipped;
        for (int d = 0; d < D_COUNT_; d++) {
                struct kdl__split_geom g = dist_geom(s, d);

                err = kdl__split_dist_result(&g, &a->d[d], dst[d]);
                if (err < 0)
                        return err;
        }
        return 0;
}

/* The soft confusion matrix at temperature @k (full mode), its agreement with
 * the heads' cosines and its most confused pairs; @pairs: scratch for
 * kdl__split_pairs_pearson(). */
static int tau_domain_full(const kdl_split_state *s, size_t k, const kdl_split_result *r,
                           double *pairs, kdl_split_tau_result *t)
{
        const struct kdl__split_tau_acc *a = &s->t[k];
        size_t c = s->c;
        struct kdl__split_top top;
        int err;

        t->confusion = kdl_new(double, c *c);
        if (!t->confusion)
                return -ENOMEM;
        for (size_t i = 0; i < c; i++)
                for (size_t j = 0; j < c; j++)
                        t->confusion[i * c + j] =
                                s->class_count[i] ? a->msum[i * c + j] / (double) s->class_count[i]
                                                  : (double) NAN;
        if (r->cos_teacher)
                t->pearson_confusion_teacher = kdl__split_pairs_pearson(
                        t->confusion, r->cos_teacher, c, s->class_count, pairs);
        if (r->cos_student)
                t->pearson_confusion_student = kdl__split_pairs_pearson(
                        t->confusion, r->cos_student, c, s->class_count, pairs);
        err = kdl__split_top_init(&top, s->o.top_pairs);
        for (size_t i = 0; i < c && !err; i++)
                for (size_t j = 0; j < c && s->class_count[i]; j++)
                        if (j != i && kdl__split_top_wants(&top, a->msum[i * c + j]))
                                kdl__split_top_add(&top, i, j, a->msum[i * c + j]);
        err = err ?: kdl__split_top_result(&top, s->class_count, t);
        kdl__split_top_release(&top);
        return err;
}

/* The domain level at temperature @k in the mode of @s. */
static int tau_domain(const kdl_split_state *s, const kdl_split_blocks *dom, size_t k,
                      const kdl_split_result *r, double *pairs, kdl_split_tau_result *t)
{
        size_t npresent = 0;

        for (size_t y = 0; y < s->c; y++)
                npresent += s->class_count[y] > 0;
        t->pearson_confusion_teacher = (double) NAN;
        t->pearson_confusion_student = (double) NAN;
        switch (s->o.domain) {
        case KDL_SPLIT_DOMAIN_FULL:
                t->confusion_pairs = npresent * (npresent - 1) / 2;
                return tau_domain_full(s, k, r, pairs, t);
        case KDL_SPLIT_DOMAIN_BLOCKED:
                t->confusion_pairs = npresent * (npresent - 1) / 2;
                return kdl__split_blocks_tau(dom, k, s->class_count, t);
        default:
                return 0;
        }
}

/* The instance weights at temperature @k (@inst may be NULL). */
static int tau_instance(const kdl_split_state *s, const kdl_split_instance_state *inst, size_t k,
                        kdl_split_tau_result *t)
{
        const struct kdl__split_inst_acc *b;
        int err;

        t->pt_mean = pt_mean(&s->t[k], s->n);
        t->pearson_w_pt = (double) NAN;
        t->w_unguarded = (double) NAN;
        t->w_std_unguarded = (double) NAN;
        t->pearson_w_pt_unguarded = (double) NAN;
        if (!inst)
                return 0;
        b = &inst->t[k];
        err = kdl__split_dist_result(&w_geom, &b->w, &t->w);
        err = err ?: kdl__split_dist_result(&w_geom, &b->w_ok, &t->w_unguarded_dist);
        if (err < 0)
                return err;
        t->has_instance = true;
        t->pearson_w_pt = kdl_comoments_pearson(&b->wp);
        t->w_unguarded = b->wp_ok.n ? b->wp_ok.mx : (double) NAN;
        t->w_std_unguarded = b->wp_ok.n ? sqrt(b->wp_ok.sxx / (double) b->wp_ok.n) : (double) NAN;
        t->pearson_w_pt_unguarded = kdl_comoments_pearson(&b->wp_ok);
        t->w_guarded = b->guarded;
        t->w_nonpositive = b->nonpositive;
        t->w_above_one = b->above_one;
        return 0;
}

/* A result with the counts of @s and room for its temperatures. */
static int result_new(const kdl_split_state *s, kdl_split_result **ret)
{
        kdl_split_result *r = kdl_new(kdl_split_result, 1);

        if (!r)
                return -ENOMEM;
        r->c = s->c;
        r->n = s->n;
        r->opts = s->o;
        r->teacher_correct = s->teacher_correct;
        r->student_correct = s->student_correct;
        r->class_count = kdl_new(size_t, s->c);
        r->tau = kdl_new(kdl_split_tau_result, s->o.ntaus);
        if (!r->class_count || !r->tau) {
                kdl_split_result_free(r);
                return -ENOMEM;
        }
        r->ntaus = s->o.ntaus;
        memcpy(r->class_count, s->class_count, s->c * sizeof(*r->class_count));
        *ret = r;
        return 0;
}

/* The head fields of @r in the mode of @s; @pairs: scratch of the full mode. */
static int heads(const kdl_split_state *s, const kdl_tensor *wt, const kdl_tensor *ws,
                 double *pairs, kdl_split_result *r)
{
        switch (s->o.domain) {
        case KDL_SPLIT_DOMAIN_FULL:
                return kdl__split_heads(s->c, s->o.cos_eps, wt, ws, pairs, r);
        case KDL_SPLIT_DOMAIN_BLOCKED:
                return kdl__split_heads_traces(s->o.cos_eps, wt, ws, r);
        default: /* off: which heads there are, no value */
                kdl__split_heads_given(wt, ws, r);
                return 0;
        }
}

int kdl_split_finalize(const kdl_split_state *s, const kdl_split_instance_state *inst,
                       const kdl_split_blocks *dom, const kdl_tensor *wt, const kdl_tensor *ws,
                       kdl_split_result **ret)
{
        kdl_split_result *r = NULL;
        double *pairs = NULL;
        int err;

        assert(s && ret);
        err = check_finalize(s, inst, dom, wt, ws);
        if (err < 0)
                return err;
        err = result_new(s, &r);
        if (err < 0)
                return err;
        r->domain_blocks = dom ? kdl_split_blocks_count(dom) : 0;
        if (s->o.domain == KDL_SPLIT_DOMAIN_FULL) {
                pairs = kdl_new(double, s->c *(s->c - 1));
                if (!pairs) {
                        err = -ENOMEM;
                        goto out;
                }
        }
        err = heads(s, wt, ws, pairs, r);
        for (size_t k = 0; err >= 0 && k < s->o.ntaus; k++) {
                err = tau_explicit(s, k, &r->tau[k]);
                if (err >= 0)
                        err = tau_domain(s, dom, k, r, pairs, &r->tau[k]);
                if (err >= 0)
                        err = tau_instance(s, inst, k, &r->tau[k]);
        }
        if (err < 0)
                goto out;
        *ret = r;
        r = NULL;
out:
        free(pairs);
        kdl_split_result_free(r);
        return err;
}
