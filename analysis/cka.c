/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/sample.h"
#include "analysis/cka.h"
#include "analysis/cka-internal.h"
#include "metrics/base/banned.h"

/* The stream of kdl_sample_select() that draws the subsample (the
 * minibatch order is stream 3, in cka-compute.c). */
#define STREAM_SUBSAMPLE 1

/* The tables one run fills, across checkpoints. */
struct tables {
        kdl_table *matrix, *pairs, *targets, *mapping; /* mapping: with B (cka-mapping.c) */
        kdl_table *sim[KDL_RUN_CKA_MEASURE_COUNT_];    /* --measure's matrices, NULL: not asked */
        /* Bootstrap intervals of "cka_pairs" across the checkpoints: how
         * many, how many miss their own point value or are undefined, and
         * the first of each (notes; caller frees). */
        size_t nint, nmiss, nundef;
        char *first_miss, *first_undef;
};

static double at(const kdl_cka_matrix *m, const double *v, size_t i, size_t j)
{
        return v ? v[i * m->nlayers + j] : (double) NAN;
}

static int put_depth(kdl_table *t, const char *key, const struct kdl__src *s)
{
        return s->has_depth ? kdl_table_put_int(t, key, s->depth) : 0;
}

/* The bootstrap columns of estimator @e (0 biased, 1 debiased) and their
 * values in the matrix @m. */
static const char *const boot_keys[2][4] = {
        {"cka_linear_lo", "cka_linear_hi", "cka_linear_se", "cka_linear_bias"},
        {"cka_linear_debiased_lo", "cka_linear_debiased_hi", "cka_linear_debiased_se",
         "cka_linear_debiased_bias"},
};

static void boot_values(const kdl_cka_matrix *m, int e, size_t a, size_t b, double v[4])
{
        v[0] = at(m, e ? m->debiased_lo : m->biased_lo, a, b);
        v[1] = at(m, e ? m->debiased_hi : m->biased_hi, a, b);
        v[2] = at(m, e ? m->debiased_se : m->biased_se, a, b);
        v[3] = at(m, e ? m->debiased_bias : m->biased_bias, a, b);
}

static int boot_columns(kdl_table *t, const kdl_cka_matrix *m, int e, size_t a, size_t b)
{
        double v[4];
        int err = 0;

        boot_values(m, e, a, b, v);
        for (int k = 0; k < 4 && !err; k++)
                err = kdl_table_put_real(t, boot_keys[e][k], v[k]);
        return err;
}

/* With a sketched source: the standard error the sketch adds to the pair's values (NaN for
 * the exact pairs), under @key and @dkey. */
static int sketch_se(kdl_table *t, const kdl_cka_matrix *lin, size_t a, size_t b, const char *key,
                     const char *dkey)
{
        int err;

        if (!lin->biased_sketch_se)
                return 0;
        err = kdl_table_put_real(t, key, at(lin, lin->biased_sketch_se, a, b));
        return err ?: kdl_table_put_real(t, dkey, at(lin, lin->debiased_sketch_se, a, b));
}

static int emit_pair(kdl_table *t, const struct kdl__cka_results *res,
                     const struct kdl_run_cka_opts *o, const struct kdl__srcs *l, size_t a,
                     size_t b)
{
        const kdl_cka_matrix *lin = res->lin;
        int err;

        err = kdl_table_put_str(t, "layer_a", l->v[a].name);
        err = err ?: put_depth(t, "depth_a", &l->v[a]);
        err = err ?: kdl_table_put_str(t, "layer_b", l->v[b].name);
        err = err ?: put_depth(t, "depth_b", &l->v[b]);
        err = err ?: kdl_table_put_str(t, "method", kdl__cka_method(res, l->n, a, b));
        err = err ?: kdl_table_put_int(t, "n", (long long) lin->n);
        err = err ?: kdl_table_put_real(t, "cka_linear", at(lin, lin->biased, a, b));
        err = err ?: kdl_table_put_real(t, "cka_linear_debiased", at(lin, lin->debiased, a, b));
        err = err
                      ?: sketch_se(t, lin, a, b, "cka_linear_sketch_se",
                                   "cka_linear_debiased_sketch_se");
        for (int e = 0; e < 2 && !err && lin->bootstrap; e++)
                err = boot_columns(t, lin, e, a, b);
        err = err ?: kdl_table_put_int(t, "subsample", (long long) res->nsub);
        if (!err && res->robust)
                err = kdl_table_put_real(t, "cka_linear_robust",
                                         at(res->robust, res->robust->biased, a, b));
        if (!err && res->rbf) {
                err = kdl_table_put_real(t, "cka_rbf", at(res->rbf, res->rbf->biased, a, b));
                err = err
                              ?: kdl_table_put_real(t, "cka_rbf_debiased",
                                                    at(res->rbf, res->rbf->debiased, a, b));
        }
        if (!err && res->mb) {
                err = kdl_table_put_real(t, "cka_minibatch", at(res->mb, res->mb->minibatch, a, b));
                err = err ?: kdl_table_put_int(t, "batches", (long long) res->mb->nbatches);
        }
        return err ?: kdl__cka_sim_columns(t, res, o->measures, a, b);
}

double kdl__cka_shown(const struct kdl__cka_results *res, const struct kdl_run_cka_opts *o,
                      size_t a, size_t b)
{
        if (o->estimator == KDL_RUN_CKA_MINIBATCH)
                return at(res->mb, res->mb->minibatch, a, b);
        if (o->kernel == KDL_CKA_RBF)
                return o->estimator == KDL_RUN_CKA_DEBIASED ? at(res->rbf, res->rbf->debiased, a, b)
                                                            : at(res->rbf, res->rbf->biased, a, b);
        return o->estimator == KDL_RUN_CKA_DEBIASED ? at(res->lin, res->lin->debiased, a, b)
                                                    : at(res->lin, res->lin->biased, a, b);
}

/* An interval misses its point value when the value lies outside it by more
 * than rounding (CKA is within [-1, 1]). */
#define MISS_TOL 1e-12

/* Count the bootstrap intervals of the pair (@a, @b), both estimators, that
 * miss their point value or are undefined (NaN for a finite value), and
 * describe the first of each for the notes. */
static int check_intervals(struct tables *tb, const kdl_cka_matrix *m, const struct kdl__srcs *l,
                           const struct kdl_ckpair *ck, size_t a, size_t b)
{
        for (int e = 0; e < 2; e++) {
                double est = at(m, e ? m->debiased : m->biased, a, b), v[4];
                bool undef, miss;
                char **first;

                boot_values(m, e, a, b, v);
                if (!isfinite(est))
                        continue;
                tb->nint++;
                undef = isnan(v[0]) || isnan(v[1]);
                miss = !undef && (est < v[0] - MISS_TOL || est > v[1] + MISS_TOL);
                tb->nundef += undef;
                tb->nmiss += miss;
                first = undef ? &tb->first_undef : &tb->first_miss;
                if ((!undef && !miss) || *first)
                        continue;
                *first = kdl__asprintf("checkpoint %s, %s x %s, %s %.4g, interval [%.4g, %.4g]",
                                       ck->main->name, l->v[a].name, l->v[b].name,
                                       e ? "debiased" : "biased", est, v[0], v[1]);
                if (!*first)
                        return -ENOMEM;
        }
        return 0;
}

/* The "cka" row of A's source @a (a column per source of B) and a "cka_pairs"
 * row per pair. */
static int matrix_row(struct tables *tb, const struct kdl__cka_results *res,
                      const struct kdl_run_cka_opts *o, const struct kdl__srcs *l,
                      const struct kdl_ckpair *ck, bool two, size_t a)
{
        int err;

        if (kdl_table_add_row(tb->matrix) < 0)
                return -ENOMEM;
        err = kdl_table_put_str(tb->matrix, "checkpoint", ck->main->name);
        if (!err && two)
                err = kdl_table_put_str(tb->matrix, "checkpoint_b", ck->partner->name);
        err = err ?: kdl_table_put_str(tb->matrix, "layer", l->v[a].name);
        err = err ?: kdl__cka_sim_row(tb->sim, ck, two, l->v[a].name);
        for (size_t b = 0; b < l->n && !err; b++) {
                if (l->v[b].model != (two ? 1 : 0) || !l->v[b].ds)
                        continue;
                err = kdl_table_put_real(tb->matrix, l->v[b].name, kdl__cka_shown(res, o, a, b));
                err = err ?: kdl__cka_sim_cell(tb->sim, res, l->v[b].name, a, b);
                if (err)
                        break;
                if (kdl_table_add_row(tb->pairs) < 0)
                        return -ENOMEM;
                err = kdl_table_put_str(tb->pairs, "checkpoint", ck->main->name);
                if (!err && two)
                        err = kdl_table_put_str(tb->pairs, "checkpoint_b", ck->partner->name);
                err = err ?: emit_pair(tb->pairs, res, o, l, a, b);
                /* With one dump each pair is listed in both orders: count it once. */
                if (!err && res->lin->bootstrap && (two || a < b))
                        err = check_intervals(tb, res->lin, l, ck, a, b);
        }
        return err;
}

static const char *const logits_keys[6] = {"cka_logits",           "cka_logits_debiased",
                                           "cka_logits_robust",    "logits_method",
                                           "cka_logits_sketch_se", "cka_logits_debiased_sketch_se"};
static const char *const labels_keys[6] = {"cka_labels",           "cka_labels_debiased",
                                           "cka_labels_robust",    "labels_method",
                                           "cka_labels_sketch_se", "cka_labels_debiased_sketch_se"};

/* Source @a against the target source @z: biased, debiased and robust linear CKA; with a
 * wide source in the run, how the pair was computed and the sketch's standard errors. */
static int target_columns(kdl_table *t, const struct kdl__cka_results *res,
                          const struct kdl__srcs *l, size_t a, size_t z, const char *const key[6])
{
        const kdl_cka_matrix *lin = res->lin, *rob = res->robust;
        int err;

        err = kdl_table_put_real(t, key[0], at(lin, lin->biased, a, z));
        err = err ?: kdl_table_put_real(t, key[1], at(lin, lin->debiased, a, z));
        err = err ?: kdl_table_put_real(t, key[2], rob ? at(rob, rob->biased, a, z) : (double) NAN);
        if (!err && (res->nwide || res->hot))
                err = kdl_table_put_str(t, key[3], kdl__cka_method(res, l->n, a, z));
        return err ?: sketch_se(t, lin, a, z, key[4], key[5]);
}

/* The "cka_targets" row of source @a: against A's logits and the labels. */
static int target_row(kdl_table *t, const struct kdl__cka_results *res, const struct kdl__srcs *l,
                      const struct kdl_ckpair *ck, size_t a, long long logits, long long labels)
{
        int err;

        if (kdl_table_add_row(t) < 0)
                return -ENOMEM;
        err = kdl_table_put_str(t, "model", l->v[a].model ? "b" : "a");
        err = err
                      ?: kdl_table_put_str(t, "checkpoint",
                                           l->v[a].model ? ck->partner->name : ck->main->name);
        err = err ?: kdl_table_put_str(t, "layer", l->v[a].name);
        err = err ?: put_depth(t, "depth", &l->v[a]);
        if (!err && logits >= 0)
                err = target_columns(t, res, l, a, (size_t) logits, logits_keys);
        if (!err && labels >= 0)
                err = target_columns(t, res, l, a, (size_t) labels, labels_keys);
        return err;
}

static int emit(struct tables *tb, const struct kdl__cka_results *res,
                const struct kdl_run_cka_opts *o, const struct kdl__srcs *l,
                const struct kdl_ckpair *ck, bool two, long long logits, long long labels)
{
        int err = 0;

        for (size_t a = 0; a < l->n && !err; a++)
                if (l->v[a].model == 0 && l->v[a].ds)
                        err = matrix_row(tb, res, o, l, ck, two, a);
        for (size_t a = 0; a < l->n && !err && (logits >= 0 || labels >= 0); a++)
                if (l->v[a].ds)
                        err = target_row(tb->targets, res, l, ck, a, logits, labels);
        return err ?: (two ? kdl__cka_mapping_rows(tb->mapping, res, o, l, ck) : 0);
}

struct kdl__cka_run {
        kdl_inputs *in; /* borrowed */
        kdl_doc *doc;   /* borrowed */
        struct kdl_run_cka_opts o;
        size_t nclasses;
        struct tables tb;
        struct kdl__cka_results last; /* the last job's */

        /* The current job. */
        struct kdl_ckpair cp;
        bool two; /* A and B; else A alone */
        struct kdl__srcs l;
        long long logits, labels; /* source indices, -1 when absent */
        bool *mask;
        size_t *sub, nsub;
        struct kdl__cka_pass c;
};

/* Drop the current job's state (the last results stay). */
static void job_release(struct kdl__cka_run *r)
{
        kdl__cka_pass_release(&r->c);
        free(r->sub);
        free(r->mask);
        kdl__srcs_release(&r->l);
        r->sub = NULL;
        r->nsub = 0;
        r->mask = NULL;
}

void kdl__cka_abort(struct kdl__cka_run *r)
{
        if (!r)
                return;
        job_release(r);
        kdl__cka_results_release(&r->last);
        kdl__cka_sim_tables_free(r->tb.sim);
        kdl_table_free(r->tb.mapping);
        kdl_table_free(r->tb.targets);
        kdl_table_free(r->tb.pairs);
        kdl_table_free(r->tb.matrix);
        free(r->tb.first_undef);
        free(r->tb.first_miss);
        free(r);
}

int kdl__cka_begin(kdl_inputs *in, const struct kdl_run_cka_opts *opts, kdl_doc *doc,
                   struct kdl__cka_run **ret)
{
        struct kdl__cka_run *r;
        struct kdl_run_cka_opts o;
        char *title;
        int err;

        assert(in && in->teacher && opts && doc && ret);
        o = *opts;
        if (o.estimator == KDL_RUN_CKA_MINIBATCH && o.kernel != KDL_CKA_LINEAR)
                return kdl_error(-KDL_EUSAGE, "minibatch CKA uses the linear kernel: "
                                              "--estimator minibatch needs --kernel linear");
        if (o.batch < 4)
                return kdl_error(-KDL_EUSAGE, "--batch: minibatch CKA needs at least 4, found %zu",
                                 o.batch);
        if (!(o.theta > 0.0) || !(o.robust >= 0.0 && o.robust < 0.5))
                return kdl_error(-KDL_EUSAGE, "--theta must be positive and --robust in [0, 0.5)");
        if (o.wide == KDL_RUN_CKA_WIDE_SKETCH && o.wide_max &&
            (o.wide_rank < 3 || o.wide_rank > o.wide_max))
                return kdl_error(-KDL_EUSAGE,
                                 "--wide-rank: a sketch needs 3 to --wide-max (%zu) columns, "
                                 "found %zu",
                                 o.wide_max, o.wide_rank);
        r = kdl_new(struct kdl__cka_run, 1);
        if (!r)
                return -ENOMEM;
        r->in = in;
        r->doc = doc;
        r->o = o;
        r->nclasses = kdl__classes(kdl_h5_dump(in->teacher));
        title = kdl__asprintf("CKA (%s kernel, %s)", kdl_cka_kernel_name(o.kernel),
                              kdl_run_cka_estimator_name(o.estimator));
        err = title ? kdl_table_new("cka", title, &r->tb.matrix) : -ENOMEM;
        free(title);
        err = err ?: kdl_table_new("cka_pairs", "CKA of every layer pair", &r->tb.pairs);
        err = err
                      ?: kdl_table_new("cka_targets",
                                       "CKA against A's logits and the one-hot labels",
                                       &r->tb.targets);
        err = err ?: kdl__cka_mapping_new(&r->tb.mapping);
        err = err ?: kdl__cka_sim_tables_new(&o, r->tb.sim);
        err = err ?: kdl_inputs_describe(in, doc);
        if (err < 0) {
                kdl__cka_abort(r);
                return err;
        }
        *ret = r;
        return 0;
}

static int cka_attach(kdl__job *j, kdl_stream *s)
{
        struct kdl__cka_run *r = j->ctx;

        return kdl__feed_attach(&r->c.feed, j, s);
}

static int cka_block(kdl__job *j, kdl_stream *s, unsigned pass)
{
        struct kdl__cka_run *r = j->ctx;

        return kdl__cka_pass_block(&r->c, s, pass);
}

/* The end of a pass: another for the column strips of wide sources, or the job's results,
 * its rows; its state goes. */
static int cka_end(kdl__job *j, kdl_stream *s, unsigned pass)
{
        struct kdl__cka_run *r = j->ctx;
        int err;

        (void) s;
        err = kdl__cka_pass_end(&r->c, pass);
        if (err > 0)
                return 1;
        err = err ?: emit(&r->tb, &r->last, &r->o, &r->l, &r->cp, r->two, r->logits, r->labels);
        if (err >= 0)
                job_release(r);
        return err;
}

/* Under MPI: the feature-space sums merged in rank order, and the gathered
 * rows (the subsample, or in Gram space every sample) in sample order, each
 * sent back to every rank, so that every rank's end finishes the one-process
 * computation (the bootstrap weights are a function of the sample id and the
 * seed, the subsample of the seed: neither depends on the rank). */
static int cka_combine(kdl__job *j, kdl_stream *s, unsigned pass)
{
        struct kdl__cka_run *r = j->ctx;

        (void) s;
        (void) pass;
        return kdl__cka_pass_combine(&r->c);
}

/* The sources of the job at @cp (A's layers and logits, B's, the labels), the
 * indices of A's logits and of the labels, and the pairs the tables need. */
static int job_sources(struct kdl__cka_run *r, const struct kdl_ckpair *cp)
{
        enum kdl_spatial rule = r->o.common.spatial;
        int err;

        r->logits = -1;
        r->labels = -1;
        err = kdl__srcs_add_checkpoint(&r->l, cp->main, 0, rule);
        if (!err && r->two)
                err = kdl__srcs_add_checkpoint(&r->l, cp->partner, 1, rule);
        for (size_t i = 0; i < r->l.n; i++)
                if (r->l.v[i].model == 0 && strcmp(r->l.v[i].name, "logits") == 0 &&
                    !r->l.v[i].has_depth)
                        r->logits = (long long) i;
        if (!err && r->nclasses) {
                r->labels = (long long) r->l.n;
                err = kdl__srcs_add(&r->l, "labels", false, 0, 0, NULL, r->nclasses);
        }
        return err ?: kdl__pairs_needed(&r->l, r->two, r->logits, r->labels, &r->mask);
}

/* What the pass of a job computes, as the command's options ask. */
static struct kdl__cka_compute_opts compute_opts(const struct kdl__cka_run *r)
{
        const struct kdl_run_cka_opts *o = &r->o;

        return (struct kdl__cka_compute_opts){
                .spatial = o->common.spatial,
                .skip_nonfinite = o->common.skip_nonfinite,
                .labels = r->nclasses > 0,
                .bootstrap = o->bootstrap,
                .interval = o->interval,
                .seed = o->seed,
                .rbf = o->kernel == KDL_CKA_RBF,
                .theta = o->theta,
                .batch = o->estimator == KDL_RUN_CKA_MINIBATCH ? o->batch : 0,
                .robust = o->robust,
                .max_bytes = o->common.memory,
                .pairs = r->mask,
                .precision = o->precision,
                .analysis = "cka",
                .wide_max = o->wide_max,
                .wide = o->wide,
                .wide_rank = o->wide_rank,
                .measures = o->measures,
                .svcca_keep = o->svcca_keep};
}

/* What the job of student @k (r->two: with one) needs, its sources r->l found by
 * job_sources(), into @ret: its pass in blocks of @rows rows, or with @rows 0 on a stream of
 * its own, counted too. */
static int job_need(struct kdl__cka_run *r, size_t k, size_t rows, kdl__need *ret)
{
        const kdl_pair *pair = r->two ? r->in->pairs[k] : NULL;
        size_t n = pair ? pair->n : kdl_h5_dump(r->in->teacher)->n;
        size_t nsub = r->o.subsample < n ? r->o.subsample : n;
        struct kdl_stream_opts so = kdl_run_stream_opts(&r->o.common);
        struct kdl__cka_compute_opts co = compute_opts(r);
        struct kdl_stream_cost c;
        int err = 0;

        if (rows == 0) {
                kdl_stream_cost_init(&c, pair);
                kdl__feed_cost(&r->l, r->in->teacher, co.spatial, co.labels, &c);
                rows = kdl_stream_cost_rows(&c, n, &so);
                err = kdl__need_add(ret, kdl_stream_cost_bytes(&c, n, &so), 0,
                                    "blocks of %zu rows of %zu sources", rows, r->l.n);
        }
        return err ?: kdl__cka_pass_need(&r->l, n, nsub, rows, r->nclasses, &co, ret);
}

/* The state of a job at @cp of student @k dropped; r->two, r->cp and the sources set. */
static int job_start(struct kdl__cka_run *r, size_t k, const struct kdl_ckpair *cp)
{
        job_release(r);
        r->two = r->in->nstudents > 0;
        assert(!r->two || (k < r->in->nstudents && cp->partner));
        r->cp = *cp;
        return job_sources(r, cp);
}

int kdl__cka_job_cost(struct kdl__cka_run *r, size_t k, const struct kdl_ckpair *cp,
                      struct kdl_stream_cost *c)
{
        int err = job_start(r, k, cp);

        if (!err)
                kdl__feed_cost(&r->l, r->in->teacher, r->o.common.spatial, r->nclasses > 0, c);
        job_release(r);
        return err;
}

int kdl__cka_job_need(struct kdl__cka_run *r, size_t k, const struct kdl_ckpair *cp, size_t rows,
                      kdl__need *ret)
{
        kdl__need nd = {.analysis = ret->analysis};
        int err;

        err = job_start(r, k, cp);
        err = err ?: job_need(r, k, rows, &nd);
        if (!err)
                kdl__need_max(ret, &nd);
        kdl__need_release(&nd);
        job_release(r);
        return err;
}

int kdl__cka_job_open(struct kdl__cka_run *r, size_t k, const struct kdl_ckpair *cp,
                      struct kdl__cka_job_view *ret)
{
        const kdl_pair *pair;
        int err;

        assert(cp && cp->main && ret);
        kdl__cka_results_release(&r->last);
        err = job_start(r, k, cp);
        pair = r->two ? r->in->pairs[k] : NULL;
        *ret = (struct kdl__cka_job_view){.fa = r->in->teacher,
                                          .fb = r->two ? r->in->students[k] : NULL,
                                          .pair = pair,
                                          .so = kdl_run_stream_opts(&r->o.common),
                                          .l = &r->l,
                                          .mask = r->mask,
                                          .n = pair ? pair->n : kdl_h5_dump(r->in->teacher)->n,
                                          .nclasses = r->nclasses,
                                          .co = compute_opts(r)};
        err = err
                      ?: kdl__cka_subsample(r->in->teacher, pair, ret->n, &r->o, STREAM_SUBSAMPLE,
                                            &r->sub, &r->nsub);
        if (err < 0) {
                job_release(r);
                return err;
        }
        ret->sub = r->sub;
        ret->nsub = r->nsub;
        return 0;
}

int kdl__cka_job_take(struct kdl__cka_run *r, struct kdl__cka_results *res)
{
        int err;

        kdl__cka_results_release(&r->last);
        r->last = *res;
        *res = (struct kdl__cka_results){0};
        r->last.maxw = 0;
        for (size_t i = 0; i < r->l.n; i++)
                r->last.maxw = r->l.v[i].width > r->last.maxw ? r->l.v[i].width : r->last.maxw;
        err = emit(&r->tb, &r->last, &r->o, &r->l, &r->cp, r->two, r->logits, r->labels);
        job_release(r);
        return err;
}

void kdl__cka_job_drop(struct kdl__cka_run *r)
{
        job_release(r);
}

int kdl__cka_job(struct kdl__cka_run *r, size_t k, const struct kdl_ckpair *cp, kdl__job *ret)
{
        kdl_inputs *in = r->in;
        kdl_h5file *fb;
        const kdl_pair *pair;
        size_t n;
        int err;

        assert(cp && cp->main && ret);
        kdl__cka_results_release(&r->last);
        err = job_start(r, k, cp);
        fb = r->two ? in->students[k] : NULL;
        pair = r->two ? in->pairs[k] : NULL;
        n = pair ? pair->n : kdl_h5_dump(in->teacher)->n;
        /* Before the subsample and the state are allocated: what the job needs. */
        if (!err) {
                kdl__need nd = {.analysis = "cka"};

                err = job_need(r, k, 0, &nd);
                err = err ?: kdl__need_check(&nd, r->o.common.memory, KDL_CKA_LEVERS);
                kdl__need_release(&nd);
        }
        err = err
                      ?: kdl__cka_subsample(in->teacher, pair, n, &r->o, STREAM_SUBSAMPLE, &r->sub,
                                            &r->nsub);
        if (!err) {
                struct kdl__cka_compute_opts co = compute_opts(r);

                err = kdl__cka_pass_init(&r->c, in->teacher, fb, n, &r->l, r->nclasses, &co, r->sub,
                                         r->nsub, &r->last, NULL);
        }
        if (err < 0) {
                job_release(r);
                return err;
        }
        *ret = (kdl__job){.ctx = r,
                          .attach = cka_attach,
                          .block = cka_block,
                          .end = cka_end,
                          .combine = cka_combine};
        return 0;
}

/* Fewer replicates than this: a note says the intervals are unreliable
 * (about 200 give a standard error; percentile-type intervals need of the
 * order of 1000, Efron & Tibshirani 1993). */
#define BOOTSTRAP_FEW 200

/* What the bootstrap did, and every warning about its intervals. */
static int bootstrap_notes(kdl_doc *doc, const struct kdl__cka_results *last,
                           const struct kdl_run_cka_opts *o, const struct tables *tb)
{
        int err;

        err = kdl_doc_add_note(
                doc,
                "bootstrap: %zu Poisson(1) replicates (seed %llu), %s 95 %% intervals; "
                "columns *_lo, *_hi, *_se (sd of the replicates) and *_bias (their mean minus "
                "the point value)%s",
                o->bootstrap, (unsigned long long) o->seed, kdl_cka_interval_name(o->interval),
                last->gram ? "; in Gram space by weighted HSIC with the same weights" : "");
        if (!err && o->interval == KDL_CKA_INTERVAL_BCA)
                err = kdl_doc_add_note(doc,
                                       "BCa: bias correction from the replicates, acceleration "
                                       "from a delete-a-group jackknife over %d seeded groups of "
                                       "the samples",
                                       KDL_CKA_JACKKNIFE_GROUPS);
        if (!err && o->bootstrap < BOOTSTRAP_FEW)
                err = kdl_doc_add_note(doc,
                                       "warning: only %zu bootstrap replicates (fewer than %d): "
                                       "the intervals, standard errors and biases are "
                                       "unreliable; use --bootstrap 1000 or more for intervals",
                                       o->bootstrap, BOOTSTRAP_FEW);
        if (!err && tb->nmiss)
                err = kdl_doc_add_note(
                        doc,
                        "warning: %zu of %zu bootstrap intervals do not contain their own point "
                        "value (first: %s): the replicates are shifted from it (*_bias; repeated "
                        "samples in a resample inflate CKA, the more so for layers wide compared "
                        "with the samples), so these are not reliable confidence intervals; "
                        "--interval bca corrects a moderate shift, not one larger than the "
                        "spread of the replicates",
                        tb->nmiss, tb->nint, tb->first_miss);
        if (!err && tb->nundef)
                err = kdl_doc_add_note(doc,
                                       "warning: %zu of %zu bootstrap intervals are undefined "
                                       "(NaN; first: %s): too few finite replicates, or for BCa "
                                       "the point value is beyond every replicate",
                                       tb->nundef, tb->nint, tb->first_undef);
        return err;
}

static int add_notes(kdl_doc *doc, const struct kdl__cka_results *last,
                     const struct kdl_run_cka_opts *o, const struct tables *tb)
{
        int err;

        if (last->strips)
                err = kdl_doc_add_note(doc,
                                       "linear CKA in feature space over all %zu samples, %zu "
                                       "passes (widest layer %zu)",
                                       last->n, last->strips + 1, last->maxw);
        else
                err = kdl_doc_add_note(doc,
                                       last->gram ? "linear CKA in Gram space over all %zu "
                                                    "samples (a layer of width %zu is wider "
                                                    "than the sample count)"
                                                  : "linear CKA in feature space over all %zu "
                                                    "samples, one pass (widest layer %zu)",
                                       last->n, last->maxw);
        err = err ?: kdl__cka_wide_notes(doc, last, o);
        if (!err && !last->gram && o->precision == KDL_CKA_PRECISION_MIXED)
                err = kdl_doc_add_note(doc,
                                       "mixed precision: the feature-space products in float "
                                       "(at most %d rows each, scaled by powers of two), "
                                       "accumulated in double; linear and debiased CKA within "
                                       "1e-6 of double precision",
                                       KDL_CKA_MIXED_ROWS);
        err = err
                      ?: kdl_doc_add_note(doc,
                                          "robust column: linear CKA on a seeded subsample of %zu "
                                          "samples (seed %llu) after removing each layer's %g %% "
                                          "largest centred norms (union over the pair)",
                                          last->nsub, (unsigned long long) o->seed,
                                          100.0 * o->robust);
        err = err
                      ?: kdl_doc_add_note(doc, "features of rank 3 and 4 reduced by '%s'",
                                          kdl_spatial_name(o->common.spatial));
        if (!err && o->kernel == KDL_CKA_RBF)
                err = kdl_doc_add_note(doc,
                                       "RBF kernel on the same subsample, sigma^2 = %g^2 x median "
                                       "squared distance",
                                       o->theta);
        if (!err && last->mb)
                err = kdl_doc_add_note(doc,
                                       "minibatch CKA: %zu batches of %zu from the subsample in a "
                                       "seeded order (remainder left out)",
                                       last->mb->nbatches, o->batch);
        err = err ?: kdl__cka_sim_notes(doc, last, o->measures);
        return err ?: (o->bootstrap ? bootstrap_notes(doc, last, o, tb) : 0);
}

int kdl__cka_end(struct kdl__cka_run *r)
{
        int err;

        assert(r);
        err = add_notes(r->doc, &r->last, &r->o, &r->tb);
        if (!err) {
                err = kdl_doc_add_table(r->doc, r->tb.matrix);
                r->tb.matrix = NULL;
                err = err ?: kdl__cka_sim_tables_add(r->doc, r->tb.sim);
                err = err ?: kdl_doc_add_table(r->doc, r->tb.pairs);
                r->tb.pairs = NULL;
                if (!err && kdl_table_rows(r->tb.targets)) {
                        err = kdl_doc_add_table(r->doc, r->tb.targets);
                        r->tb.targets = NULL;
                }
                err = err ?: kdl__cka_mapping_add(r->doc, &r->tb.mapping);
        }
        kdl__cka_abort(r);
        return err;
}

/* The checkpoints of A the command compares: B at the checkpoint of the same name unless a
 * partner checkpoint is named. */
static int select_checkpoints(kdl_inputs *in, const struct kdl_run_cka_opts *o,
                              struct kdl_ckpair **ret, size_t *ret_n)
{
        return kdl_select_checkpoints(
                in->teacher, in->nstudents ? in->students[0] : NULL, o->common.checkpoint,
                o->partner_checkpoint ? o->partner_checkpoint : "same", ret, ret_n);
}

/* The largest need of the jobs at the @n checkpoints @cks, into @ret. */
static int run_need(struct kdl__cka_run *r, const struct kdl_ckpair *cks, size_t n, kdl__need *ret)
{
        int err = 0;

        for (size_t c = 0; c < n && !err; c++)
                err = kdl__cka_job_need(r, 0, &cks[c], 0, ret);
        return err;
}

int kdl_run_cka_plan(kdl_inputs *in, const struct kdl_run_cka_opts *opts, kdl_doc *doc)
{
        kdl__need nd = {.analysis = "cka"};
        struct kdl_ckpair *cks = NULL;
        struct kdl__cka_run *r = NULL;
        size_t nck = 0;
        int err;

        assert(in && in->teacher && opts && doc);
        err = kdl__cka_begin(in, opts, doc, &r);
        err = err ?: select_checkpoints(in, opts, &cks, &nck);
        err = err ?: run_need(r, cks, nck, &nd);
        err = err ?: kdl__need_doc(&nd, 1, opts->common.memory, KDL_CKA_LEVERS, doc);
        kdl__need_release(&nd);
        kdl__cka_abort(r);
        free(cks);
        return err;
}

int kdl_run_cka(kdl_inputs *in, const struct kdl_run_cka_opts *opts, kdl_doc *doc)
{
        kdl_h5file *fb = in->nstudents ? in->students[0] : NULL;
        const kdl_pair *pair = fb ? in->pairs[0] : NULL;
        size_t n = pair ? pair->n : kdl_h5_dump(in->teacher)->n, nck = 0;
        struct kdl_stream_opts so = kdl_run_stream_opts(&opts->common);
        kdl__need nd = {.analysis = "cka"};
        struct kdl_ckpair *cks = NULL;
        struct kdl__cka_run *r = NULL;
        int err;

        assert(in && in->teacher && opts && doc);
        err = kdl__cka_begin(in, opts, doc, &r);
        err = err ?: select_checkpoints(in, opts, &cks, &nck);
        /* Before the first checkpoint is computed: what the largest one needs. */
        err = err ?: run_need(r, cks, nck, &nd);
        err = err ?: kdl__need_check(&nd, opts->common.memory, KDL_CKA_LEVERS);
        kdl__need_release(&nd);
        for (size_t c = 0; c < nck && !err; c++) {
                kdl_stream *s = NULL;
                kdl__job job;

                err = kdl__cka_job(r, 0, &cks[c], &job);
                err = err ?: kdl_stream_new(n, pair, &so, &s);
                err = err ?: kdl__jobs_run(s, &job, 1, NULL);
                kdl_stream_free(s);
        }
        free(cks);
        if (err < 0) {
                kdl__cka_abort(r);
                return err;
        }
        return kdl__cka_end(r);
}
