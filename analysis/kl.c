/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/kl.h"
#include "loaders/stream.h"
#include "analysis/dist.h"
#include "analysis/kl-internal.h"
#include "analysis/per-sample.h"
#include "metrics/base/banned.h"

#define NV KDL_KL_VALUE_COUNT_

void kdl__kl_sources_release(struct kdl__kl_sources *x)
{
        for (int v = 0; v < NV; v++)
                free(x->need[v]);
}

/* "'file': group/rel" */
static char *where(kdl_h5file *f, const kdl_checkpoint *ck, const char *rel)
{
        return kdl__asprintf("'%s': %s%s%s", kdl_h5_dump(f)->path,
                             strcmp(ck->group, "/") ? ck->group : "", "/", rel);
}

/* *acc = *acc + "; " + add (add is consumed); NULL add means out of memory. */
static int append(char **acc, char *add)
{
        char *t;

        if (!add)
                return -ENOMEM;
        if (!*acc) {
                *acc = add;
                return 0;
        }
        t = kdl__asprintf("%s; %s", *acc, add);
        free(add);
        if (!t)
                return -ENOMEM;
        free(*acc);
        *acc = t;
        return 0;
}

static int dup_need(char **dst, const char *a, const char *b)
{
        if (!a && !b)
                return 0;
        *dst = a && b ? kdl__asprintf("%s; %s", a, b) : kdl__strdup(a ? a : b);
        return *dst ? 0 : -ENOMEM;
}

/* The head-input layer of @ck, or NULL with *need extended by what is missing. */
static int head_layer(kdl_h5file *f, const kdl_checkpoint *ck, const kdl_layer **ret, char **need)
{
        char *rel;
        int err;

        *ret = NULL;
        if (!ck->head_input)
                return append(need, where(f, ck, "head attr input"));
        *ret = kdl_h5_layer(ck, ck->head_input);
        if (*ret)
                return 0;
        rel = kdl__asprintf("features/%s", ck->head_input);
        if (!rel)
                return -ENOMEM;
        err = append(need, where(f, ck, rel));
        free(rel);
        return err;
}

/* Both logits, with the teacher's class count: x->c. */
static int find_logits(struct kdl__kl_sources *x)
{
        const char *tp = kdl_h5_dump(x->tf)->path, *sp = kdl_h5_dump(x->sf)->path;

        if (!x->ct->logits || !x->cs->logits)
                return kdl_error(-KDL_EMISSING, "'%s': %s/logits: expected [N, C], found none",
                                 x->ct->logits ? sp : tp,
                                 x->ct->logits ? x->cs->group : x->ct->group);
        x->c = x->ct->logits->ndim == 2 ? x->ct->logits->shape[1] : 0;
        if (x->cs->logits->ndim != 2 || x->cs->logits->shape[1] != x->c)
                return kdl_error(-KDL_EMISMATCH,
                                 "'%s': %s: expected %zu classes as the teacher, found %zu", sp,
                                 x->cs->logits->path, x->c,
                                 x->cs->logits->ndim == 2 ? x->cs->logits->shape[1] : 0);
        return 0;
}

/* The teacher's head weight x->wt, [C, d_t] when its head input is there; *@head
 * extended when it is missing. */
static int find_head(struct kdl__kl_sources *x, char **head)
{
        x->wt = x->ct->head_weight;
        if (!x->wt)
                return append(head, where(x->tf, x->ct, "head/weight"));
        if (x->lt && (x->wt->ndim != 2 || x->wt->shape[0] != x->c || x->wt->shape[1] != x->d_t))
                return kdl_error(-KDL_ESCHEMA,
                                 "'%s': %s: expected [%zu, %zu] (classes x width of '%s'), "
                                 "found %zu-D [%zu, %zu]",
                                 kdl_h5_dump(x->tf)->path, x->wt->path, x->c, x->d_t, x->lt->name,
                                 x->wt->ndim, x->wt->shape[0],
                                 x->wt->ndim > 1 ? x->wt->shape[1] : 0);
        return 0;
}

/* The teacher's feature gradient x->gt at its head input, of width d_t; *@grad
 * extended when it is missing. */
static int find_gradient(struct kdl__kl_sources *x, enum kdl_spatial rule, char **grad)
{
        char *rel;
        int err;

        x->gt = x->lt ? x->lt->gradient : NULL;
        if (x->gt && kdl_dsinfo_width(x->gt, rule) != x->d_t)
                return kdl_error(-KDL_ESCHEMA,
                                 "'%s': %s: expected width %zu as its feature, found %zu",
                                 kdl_h5_dump(x->tf)->path, x->gt->path, x->d_t,
                                 kdl_dsinfo_width(x->gt, rule));
        if (x->gt)
                return 0;
        rel = kdl__asprintf("gradients/features/%s",
                            x->ct->head_input ? x->ct->head_input : "<head input>");
        err = rel ? append(grad, where(x->tf, x->ct, rel)) : -ENOMEM;
        free(rel);
        return err;
}

/* Both logit gradients x->gzt and x->gzs, C columns each; *@gz extended for
 * each one missing. */
static int find_logit_gradients(struct kdl__kl_sources *x, enum kdl_spatial rule, char **gz)
{
        int err;

        x->gzt = x->ct->grad_logits;
        x->gzs = x->cs->grad_logits;
        if (!x->gzt && (err = append(gz, where(x->tf, x->ct, "gradients/logits"))))
                return err;
        if (!x->gzs && (err = append(gz, where(x->sf, x->cs, "gradients/logits"))))
                return err;
        for (int k = 0; k < 2; k++) {
                const kdl_dsinfo *g = k ? x->gzs : x->gzt;

                if (g && kdl_dsinfo_width(g, rule) != x->c)
                        return kdl_error(-KDL_ESCHEMA, "'%s': %s: expected %zu columns, found %zu",
                                         kdl_h5_dump(k ? x->sf : x->tf)->path, g->path, x->c,
                                         kdl_dsinfo_width(g, rule));
        }
        return 0;
}

int kdl__kl_find_sources(struct kdl__kl_sources *x, enum kdl_spatial rule)
{
        char *feat = NULL, *head = NULL, *grad = NULL, *gz = NULL;
        int err;

        err = find_logits(x);
        if (err)
                return err;
        err = head_layer(x->tf, x->ct, &x->lt, &feat);
        err = err ?: head_layer(x->sf, x->cs, &x->ls, &feat);
        if (err)
                goto out;
        x->feat = x->lt && x->ls;
        if (x->lt)
                x->d_t = kdl_dsinfo_width(&x->lt->feature, rule);
        if (x->ls)
                x->d_s = kdl_dsinfo_width(&x->ls->feature, rule);
        err = find_head(x, &head);
        err = err ?: find_gradient(x, rule, &grad);
        err = err ?: find_logit_gradients(x, rule, &gz);
        if (err)
                goto out;
        /* Read only what a value can use. */
        if (gz)
                x->gzt = x->gzs = NULL;
        if (!x->feat || head)
                x->wt = NULL;
        if (!x->feat)
                x->gt = NULL;

        err = dup_need(&x->need[KDL_KL_FEATURE_L2], feat, NULL);
        err = err ?: dup_need(&x->need[KDL_KL_FEATURE_HEAD], feat, head);
        err = err ?: dup_need(&x->need[KDL_KL_GRADIENT_FISHER], feat, head);
        err = err ?: dup_need(&x->need[KDL_KL_GRADIENT_EMPIRICAL], feat, grad);
        err = err ?: dup_need(&x->need[KDL_KL_GRADIENT_LOGIT_L2], gz, NULL);
out:
        free(feat);
        free(head);
        free(grad);
        free(gz);
        return err;
}

/* The whole teacher head weight [c, d_t]. */
static int read_head(const struct kdl__kl_sources *x, double **ret)
{
        kdl_h5reader *r = NULL;
        double *w;
        size_t n;
        int err;

        err = kdl_mul_size(x->c, x->d_t, &n);
        if (err < 0)
                return err;
        w = kdl__malloc(n, sizeof(double));
        if (!w)
                return -ENOMEM;
        err = kdl_h5_reader_open(x->tf, x->wt, KDL_SPATIAL_AVG, &r);
        err = err ?: kdl_h5_reader_read(r, 0, x->c, w);
        kdl_h5_reader_close(r);
        if (err < 0) {
                free(w);
                return err;
        }
        *ret = w;
        return 0;
}

/* Stream indices of the datasets; -1 when not read. */
struct streamed {
        int zt, zs, ht, hs, gt, gzt, gzs;
};

/* Add @ds (when there is one) to the job's stream; its index goes to *ix. */
static int add(kdl__job *j, kdl_stream *st, kdl_h5file *f, const kdl_dsinfo *ds,
               enum kdl_spatial rule, bool student, int *ix)
{
        int i;

        if (!ds)
                return 0;
        i = kdl__job_add(j, st, f, ds, rule, student);
        if (i < 0)
                return i;
        *ix = i;
        return 0;
}

void kdl_run_kl_opts_init(struct kdl_run_kl_opts *o)
{
        *o = (struct kdl_run_kl_opts){.reservoir = KDL_KL_RESERVOIR_DEFAULT, .seed = 1};
        kdl_run_common_init(&o->common);
}

/* ---- one student checkpoint as a job --------------------------------------------- */

struct kdl__kl_run {
        const kdl_inputs *in;
        struct kdl_run_kl_opts o;
        kdl_doc *doc;
        kdl_table *kt, *ft;
        kdl__per_sample *ps; /* NULL without --per-sample */
        struct kl_job *job;  /* the current one */
};

/* Student k at one checkpoint pair: pass 0 fits the projector when the head-input widths
 * differ, then a pass measures every value (with the per-sample output). */
struct kl_job {
        struct kdl__kl_run *r;
        size_t k;
        struct kdl__kl_sources x;
        struct streamed ix;
        double *w;                  /* the teacher's head [C, d_t], or NULL */
        kdl_kl_proj_state *ps;      /* while fitting */
        kdl_kl_projector *proj;     /* fitted, or NULL for the identity */
        kdl_kl_state *s;            /* while measuring */
        unsigned measure_pass;      /* the pass that measures: 0, or 1 after a fit */
        enum kdl_kl_value vals[NV]; /* the values in the per-sample file, in its order */
        size_t nvals;
        size_t skipped; /* under MPI: samples skipped by every rank */
};

static void kl_job_free(struct kl_job *j)
{
        if (!j)
                return;
        kdl_kl_state_free(j->s);
        kdl_kl_proj_state_free(j->ps);
        kdl_kl_projector_free(j->proj);
        free(j->w);
        kdl__kl_sources_release(&j->x);
        free(j);
}

static int kl_attach(kdl__job *job, kdl_stream *st)
{
        struct kl_job *j = job->ctx;
        const struct kdl__kl_sources *x = &j->x;
        enum kdl_spatial rule = j->r->o.common.spatial;
        struct streamed *ix = &j->ix;
        int err;

        *ix = (struct streamed){-1, -1, -1, -1, -1, -1, -1};
        err = add(job, st, x->tf, x->ct->logits, rule, false, &ix->zt);
        err = err ?: add(job, st, x->sf, x->cs->logits, rule, true, &ix->zs);
        if (x->feat) {
                err = err ?: add(job, st, x->tf, &x->lt->feature, rule, false, &ix->ht);
                err = err ?: add(job, st, x->sf, &x->ls->feature, rule, true, &ix->hs);
        }
        err = err ?: add(job, st, x->tf, x->gt, rule, false, &ix->gt);
        err = err ?: add(job, st, x->tf, x->gzt, rule, false, &ix->gzt);
        err = err ?: add(job, st, x->sf, x->gzs, rule, true, &ix->gzs);
        return err;
}

/* The state of the measuring pass, and the per-sample datasets when asked for. */
static int measure_begin(struct kl_job *j)
{
        const struct kdl__kl_sources *x = &j->x;
        const struct kdl_run_kl_opts *o = &j->r->o;
        kdl_tensor wt = kdl_tensor_wrap(j->w, 2, (size_t[]){x->c, x->d_t});
        kdl_kl_opts ko;
        const char *names[NV];
        int err;

        kdl_kl_opts_init(&ko);
        ko.c = x->c;
        ko.ntau = o->common.ntau;
        ko.tau = o->common.tau;
        ko.d_s = x->feat ? x->d_s : 0;
        ko.d_t = x->feat ? x->d_t : 0;
        ko.w_t = j->w ? &wt : NULL;
        ko.proj = j->proj;
        ko.grad_feature = j->ix.gt >= 0;
        ko.grad_logits = j->ix.gzt >= 0;
        ko.reservoir = o->reservoir;
        ko.seed = o->seed;
        err = kdl_kl_state_new(&ko, &j->s);
        if (err < 0 || !j->r->ps)
                return err;
        j->nvals = 0;
        for (int v = 0; v < NV; v++)
                if (!x->need[v]) {
                        names[j->nvals] = kdl_kl_name(v);
                        j->vals[j->nvals++] = (enum kdl_kl_value) v;
                }
        return kdl__per_sample_begin(j->r->ps, j->k, x->cs->name, x->ct->name, names, j->nvals);
}

/* Value @v of the per-sample file (j->vals[v]) at temperature @t, of the block just
 * accumulated. */
static struct kdl__per_sample_col value_col(void *ctx, size_t v, size_t t)
{
        const struct kl_job *j = ctx;

        return (struct kdl__per_sample_col){kdl_kl_values(j->s, t, j->vals[v], NULL), 1};
}

static int kl_block(kdl__job *job, kdl_stream *st, unsigned pass)
{
        struct kl_job *j = job->ctx;
        const struct streamed *ix = &j->ix;
        size_t m = kdl_stream_rows(st);
        kdl_tensor zt, zs, ht, hs, gt, gzt, gzs;
        kdl_kl_block b = {.samples = kdl_stream_samples(st)};
        int err;

        if (m == 0)
                return 0;
        if (pass < j->measure_pass) {
                hs = kdl_stream_block(st, ix->hs);
                ht = kdl_stream_block(st, ix->ht);
                return kdl_kl_proj_accumulate(j->ps, &hs, &ht);
        }
        if (!j->s && (err = measure_begin(j)) < 0)
                return err;
        zt = kdl_stream_block(st, ix->zt);
        zs = kdl_stream_block(st, ix->zs);
        b.zt = &zt;
        b.zs = &zs;
        if (ix->ht >= 0) {
                ht = kdl_stream_block(st, ix->ht);
                hs = kdl_stream_block(st, ix->hs);
                b.ht = &ht;
                b.hs = &hs;
        }
        if (ix->gt >= 0) {
                gt = kdl_stream_block(st, ix->gt);
                b.gt = &gt;
        }
        if (ix->gzt >= 0) {
                gzt = kdl_stream_block(st, ix->gzt);
                gzs = kdl_stream_block(st, ix->gzs);
                b.gzt = &gzt;
                b.gzs = &gzs;
        }
        err = kdl_kl_accumulate(j->s, &b);
        if (!err && j->r->ps)
                err = kdl__per_sample_write(j->r->ps, b.samples, m, value_col, j);
        return err;
}

static int kl_end(kdl__job *job, kdl_stream *st, unsigned pass)
{
        struct kl_job *j = job->ctx;
        struct kdl__kl_run *r = j->r;
        const struct kdl__kl_rows rows = {.cs = j->x.cs,
                                          .ct = j->x.ct,
                                          .lt = j->x.lt,
                                          .ls = j->x.ls,
                                          .c = j->x.c,
                                          .d_t = j->x.d_t,
                                          .need = j->x.need};
        const char *student = kdl_h5_dump(j->x.sf)->path;
        kdl_kl_result *res = NULL;
        int err;

        if (pass < j->measure_pass) {
                err = kdl_kl_proj_finalize(j->ps, &j->proj);
                kdl_kl_proj_state_free(j->ps);
                j->ps = NULL;
                return err < 0 ? err : 1;
        }
        /* Every sample skipped, or a block of them at the end. */
        err = j->s ? 0 : measure_begin(j);
        if (!err && r->ps)
                err = kdl__per_sample_end(r->ps);
        /* Under MPI the merged state is rank 0's (kl_combine()); another rank's
         * own rows may be none at all, and it writes nothing. */
        if (err || kdl__dist_rank() > 0)
                return err;
        err = kdl_kl_finalize(j->s, &res);
        err = err
                      ?: kdl__kl_fill_tables(r->kt, r->ft, &rows, student, r->o.common.ntau,
                                             r->o.common.tau, res);
        if (kdl__dist_size() == 1) /* else summed over the ranks by kl_combine() */
                j->skipped = kdl_stream_skipped(st);
        if (!err && j->skipped)
                err = kdl_doc_add_note(r->doc,
                                       "'%s' checkpoint %s: %zu samples with NaN/Inf skipped",
                                       student, j->x.cs->name, j->skipped);
        if (!err && !res->spearman_exact)
                err = kdl_doc_add_note(r->doc,
                                       "'%s' checkpoint %s: spearman on a uniform subsample of "
                                       "%zu of %zu samples (seed %llu)",
                                       student, j->x.cs->name, res->spearman_n, res->n,
                                       (unsigned long long) r->o.seed);
        kdl_kl_result_free(res);
        return err;
}

static int kl_pack(const void *s, void **buf, size_t *len)
{
        return kdl_kl_state_pack(s, buf, len);
}

static int kl_merge_packed(void *s, const void *buf, size_t len)
{
        return kdl_kl_state_merge_packed(s, buf, len);
}

static int proj_pack(const void *s, void **buf, size_t *len)
{
        return kdl_kl_proj_state_pack(s, buf, len);
}

static int proj_merge_packed(void *s, const void *buf, size_t len)
{
        return kdl_kl_proj_state_merge_packed(s, buf, len);
}

static int proj_load_packed(void *s, const void *buf, size_t len)
{
        return kdl_kl_proj_state_load_packed(s, buf, len);
}

/* Under MPI: the projector's sums go to every rank (each fits the same
 * projector for the measuring pass); the measures, the count of samples
 * skipped and the per-sample rows to rank 0 only. */
static int kl_combine(kdl__job *job, kdl_stream *st, unsigned pass)
{
        static const struct kdl__dist_ops proj_ops = {proj_pack, proj_merge_packed,
                                                      proj_load_packed};
        static const struct kdl__dist_ops kl_ops = {kl_pack, kl_merge_packed, NULL};
        struct kl_job *j = job->ctx;
        double skipped = (double) kdl_stream_skipped(st);
        int err = 0;

        if (pass < j->measure_pass)
                return kdl__dist_combine(j->ps, &proj_ops);
        if (!j->s)
                err = measure_begin(j);
        err = kdl__dist_status(err) ?: kdl__dist_sum(&skipped, 1);
        j->skipped = (size_t) skipped;
        err = err ?: (j->r->ps ? kdl__per_sample_combine(j->r->ps) : 0);
        return err ?: kdl__dist_combine(j->s, &kl_ops);
}

int kdl__kl_job(struct kdl__kl_run *r, size_t k, const struct kdl_ckpair *cp, kdl__job *ret)
{
        struct kl_job *j;
        int err;

        assert(cp->partner && k < r->in->nstudents);
        kl_job_free(r->job);
        r->job = j = kdl_new(struct kl_job, 1);
        if (!j)
                return -ENOMEM;
        j->r = r;
        j->k = k;
        j->x = (struct kdl__kl_sources){
                .tf = r->in->teacher, .sf = r->in->students[k], .ct = cp->partner, .cs = cp->main};
        err = kdl__kl_find_sources(&j->x, r->o.common.spatial);
        if (!err && j->x.wt)
                err = read_head(&j->x, &j->w);
        if (!err && j->x.feat && j->x.d_s != j->x.d_t) {
                err = kdl_kl_proj_state_new(j->x.d_s, j->x.d_t, &j->ps);
                j->measure_pass = 1;
        }
        if (err < 0)
                return err;
        *ret = (kdl__job){.ctx = j,
                          .attach = kl_attach,
                          .block = kl_block,
                          .end = kl_end,
                          .combine = kl_combine};
        return 0;
}

/* The fit alone, on a stream of its own: only the two head-input features. */
static int fit_attach(kdl__job *job, kdl_stream *st)
{
        struct kl_job *j = job->ctx;
        enum kdl_spatial rule = j->r->o.common.spatial;
        int err;

        err = add(job, st, j->x.tf, &j->x.lt->feature, rule, false, &j->ix.ht);
        return err ?: add(job, st, j->x.sf, &j->x.ls->feature, rule, true, &j->ix.hs);
}

static int fit_end(kdl__job *job, kdl_stream *st, unsigned pass)
{
        struct kl_job *j = job->ctx;
        int err = kl_end(job, st, pass);

        j->measure_pass = 0; /* the measuring job's first pass measures */
        return err < 0 ? err : 0;
}

int kdl__kl_run_checkpoint(struct kdl__kl_run *r, size_t k, const struct kdl_ckpair *cp,
                           const kdl__job *more, size_t nmore)
{
        struct kdl_stream_opts so = kdl_run_stream_opts(&r->o.common);
        const kdl_pair *pair = r->in->pairs[k];
        kdl_stream *st = NULL;
        kdl__job jobs[1 + KDL__KL_MORE_JOBS], fit;
        int err;

        assert(nmore <= KDL__KL_MORE_JOBS);
        for (size_t i = 0; i < nmore; i++)
                jobs[1 + i] = more[i];
        err = kdl__kl_job(r, k, cp, &jobs[0]);
        /* The logits (and gradients) are C wide, the features d wide: a fit
         * pass that reads them all costs as much as the measuring pass at
         * C = 32,000.  Under --nonfinite skip the fit must drop the samples
         * a NaN in any dataset drops, so it stays the job's first pass. */
        if (!err && r->job->ps && !so.skip_nonfinite) {
                fit = (kdl__job){.ctx = r->job,
                                 .attach = fit_attach,
                                 .block = kl_block,
                                 .end = fit_end,
                                 .combine = kl_combine};
                err = kdl_stream_new(pair->n, pair, &so, &st);
                err = err ?: kdl__jobs_run(st, &fit, 1, NULL);
                kdl_stream_free(st);
                st = NULL;
        }
        err = err ?: kdl_stream_new(pair->n, pair, &so, &st);
        err = err ?: kdl__jobs_run(st, jobs, 1 + nmore, NULL);
        kdl_stream_free(st);
        return err;
}

int kdl__kl_begin(const kdl_inputs *in, const struct kdl_run_kl_opts *o, kdl_doc *doc,
                  struct kdl__kl_run **ret)
{
        return kdl__kl_begin_topk(in, o, NULL, doc, ret);
}

int kdl__kl_begin_topk(const kdl_inputs *in, const struct kdl_run_kl_opts *o,
                       const struct kdl__kl_topk_ask *topk, kdl_doc *doc, struct kdl__kl_run **ret)
{
        kdl__need nd = {.analysis = "kl"};
        struct kdl__kl_run *r;
        int err;

        assert(in && o && doc && o->common.ntau >= 1);
        if (!in->teacher || in->nstudents == 0)
                return kdl_error(-KDL_EUSAGE, "kl needs a teacher (-t) and a student (-s)");
        /* Before anything is allocated: what the largest job needs. */
        err = kdl__kl_need(in, o, topk, &nd);
        err = err ?: kdl__need_check(&nd, o->common.memory, KDL_KL_LEVERS);
        kdl__need_release(&nd);
        if (err < 0)
                return err;
        r = kdl_new(struct kdl__kl_run, 1);
        if (!r)
                return -ENOMEM;
        r->in = in;
        r->o = *o;
        r->doc = doc;
        err = kdl_table_new("kl", "KD criterion approximated by each knowledge source", &r->kt);
        err = err
                      ?: kdl_table_new("kl_features",
                                       "Feature matching: projector and KL-visible share", &r->ft);
        err = err ?: kdl_inputs_describe(in, doc);
        if (!err && o->common.per_sample)
                err = kdl__per_sample_open(o->common.per_sample, "kl", in, r->o.common.tau,
                                           r->o.common.ntau, &r->ps);
        /* Under MPI rank 0 alone writes it, and its errors stop every rank. */
        err = kdl__dist_status(err);
        if (err < 0) {
                kdl__kl_abort(r);
                return err;
        }
        *ret = r;
        return 0;
}

void kdl__kl_abort(struct kdl__kl_run *r)
{
        if (!r)
                return;
        kl_job_free(r->job);
        kdl__per_sample_abort(r->ps);
        kdl_table_free(r->kt);
        kdl_table_free(r->ft);
        free(r);
}

int kdl__kl_end(struct kdl__kl_run *r)
{
        kdl_doc *doc = r->doc;
        int err;

        kl_job_free(r->job);
        r->job = NULL;
        kdl_table_set_label(r->kt, "tau", "τ");
        kdl_table_set_label(r->kt, "relerr", "rel.err");
        err = kdl_doc_add_note(doc,
                               "kl = tau^2 KL(p_t || p_s) per sample; ratio = mean(A)/mean(kl); "
                               "relerr = mean|A - kl|/mean(kl); pearson on all samples");
        err = err
                      ?: kdl_doc_add_note(doc,
                                          "features: P = identity when the head-input widths are "
                                          "equal, else the affine least-squares map fitted on the "
                                          "same samples (see kl_features)");
        if (!err && r->ps) {
                err = kdl__per_sample_commit(r->ps);
                r->ps = NULL;
        }
        if (!err) {
                err = kdl_doc_add_table(doc, r->kt);
                r->kt = NULL;
        }
        if (!err) {
                err = kdl_doc_add_table(doc, r->ft);
                r->ft = NULL;
        }
        kdl__kl_abort(r);
        return err;
}

int kdl_run_kl(const kdl_inputs *in, const struct kdl_run_kl_opts *o, kdl_doc *doc)
{
        struct kdl__kl_run *r = NULL;
        int err;

        err = kdl__kl_begin(in, o, doc, &r);
        for (size_t k = 0; !err && k < in->nstudents; k++) {
                struct kdl_ckpair *cks = NULL;
                size_t nck = 0;

                err = kdl_select_checkpoints(in->students[k], in->teacher, o->common.checkpoint,
                                             o->common.teacher_checkpoint, &cks, &nck);
                for (size_t c = 0; c < nck && !err; c++)
                        err = kdl__kl_run_checkpoint(r, k, &cks[c], NULL, 0);
                free(cks);
        }
        if (err) {
                kdl__kl_abort(r);
                return err;
        }
        return kdl__kl_end(r);
}
