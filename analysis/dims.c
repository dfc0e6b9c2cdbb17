/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/spectral.h"
#include "loaders/stream.h"
#include "analysis/dims.h"
#include "metrics/base/budget.h"
#include "analysis/need.h"
#include "analysis/dims-internal.h"
#include "analysis/pass.h"
#include "analysis/dist.h"
#include "metrics/base/banned.h"

/* One spectral state the blocks feed: a selected layer's features, or the logits. */
struct acc {
        const kdl_layer *layer; /* NULL: the model's row-centred logits */
        const kdl_dsinfo *x;
        kdl_spectral_plan plan; /* the logits' method; exact features for a layer */
        int ix;                 /* the stream's index of x */
        kdl_spectral_state *st;
        kdl_spectral_result *res;
};

/*
 * The job of one model at one checkpoint: every state takes every block of
 * the one pass, X from f (student rows when student), Y = the teacher's
 * logits at tck for the layers when tck is given.  acc[0] holds the logits,
 * with the per-sample support rank of W^T F W summed when there is a head.
 */
struct job {
        struct kdl__dims_run *r;
        kdl_h5file *f;
        bool student;              /* f's rows follow the stream's pair */
        const kdl_checkpoint *ck;  /* f's */
        const kdl_checkpoint *tck; /* the teacher's, fitted by the layers; NULL: none */
        bool teacher;              /* the teacher's own job: its logits go to tlog */
        bool support;              /* a head: sum the support rank of the logits */
        size_t head_rank, hwidth;  /* of the head weight */
        int iy;                    /* the stream's index of the teacher's logits */
        double support_sum;
        struct acc *acc; /* [nacc] the logits, then the selected layers in order */
        size_t nacc;
        bool combined;  /* under MPI: the states are every rank's (job_combine()) */
        size_t skipped; /* then the samples every rank skipped */
};

struct kdl__dims_run {
        const kdl_inputs *in;
        const struct kdl_run_dims_opts *o;
        kdl_doc *doc;
        struct kdl__dims_tables tb;
        kdl_spectral_result **tlog; /* per teacher checkpoint: centred-logit spectrum, or NULL */
        struct kdl__dims_mark *marks;
        size_t nmarks;
        size_t layer_rows; /* feature-layer rows written */
        unsigned methods;  /* 1u << the method of each centred-logit spectrum */
        struct job job;    /* the current job */
};

static size_t ck_index(const kdl_h5file *f, const kdl_checkpoint *ck)
{
        return (size_t) (ck - kdl_h5_dump(f)->checkpoints);
}

/* Rank of W^T F W from the head weight of ck. */
static int head_rank(const struct kdl__dims_run *c, kdl_h5file *f, const kdl_checkpoint *ck,
                     size_t *ret_rank, size_t *ret_width)
{
        kdl_tensor *w = NULL;
        int err;

        err = kdl_h5_read_matrix(f, ck->head_weight, 0, 0, &w);
        if (err == 0)
                err = kdl_spectral_head_rank(w, c->o->rank_rtol, ret_rank);
        if (err == 0)
                *ret_width = w->shape[1];
        kdl_tensor_free(w);
        return err;
}

static bool layer_selected(const struct kdl__dims_run *c, const kdl_layer *l)
{
        const char *want = c->o->layer;

        return !want || strcmp(want, "all") == 0 || strcmp(want, l->name) == 0;
}

/*
 * The layer a student's logits are computed from: its head input, else (no
 * head weight) its deepest layer; NULL when the dump does not say.
 */
static const kdl_layer *width_layer(const kdl_checkpoint *ck)
{
        const kdl_layer *l = ck->head_input ? kdl_h5_layer(ck, ck->head_input) : NULL;

        if (!l && !ck->head_weight && ck->nlayers)
                l = &ck->layers[ck->nlayers - 1];
        return l;
}

/* The width a student's logits are computed from, and where it was found. */
static size_t student_width(const struct kdl__dims_run *c, const kdl_checkpoint *ck,
                            const char **ret_from)
{
        const kdl_layer *l = width_layer(ck);

        if (ck->head_weight && ck->head_weight->ndim == 2) {
                *ret_from = "head/weight";
                return ck->head_weight->shape[1];
        }
        if (l) {
                *ret_from = ck->head_input && strcmp(l->name, ck->head_input) == 0
                                    ? "head input layer"
                                    : "deepest layer";
                return kdl_dsinfo_width(&l->feature, c->o->common.spatial);
        }
        return 0;
}

/* @r2: the ridge R^2 of the width layer (@r2_layer), NaN when it was not analysed. */
static int verdict_row(struct kdl__dims_run *c, const kdl_dump *d, const kdl_checkpoint *ck,
                       const kdl_checkpoint *tck, const char *r2_layer, double r2)
{
        struct kdl__dims_verdict v = {.tck = tck,
                                      .tres = c->tlog[ck_index(c->in->teacher, tck)],
                                      .r2_layer = r2_layer,
                                      .r2 = r2,
                                      .tolerance = c->o->tolerance};
        struct kdl__dims_mark *grown;
        int err;

        v.d_s = student_width(c, ck, &v.d_s_from);
        if (v.d_s == 0)
                return kdl_doc_add_note(c->doc,
                                        "'%s': checkpoint %s: no head and no feature layer, "
                                        "no width to judge",
                                        d->path, ck->name);
        err = kdl_spectral_verdict(v.tres, v.d_s, v.r2, v.tolerance, &v.v);
        err = err ?: kdl__dims_verdict_row(c->tb.verdict, d, ck, &v);
        err = err ?: kdl__dims_bottleneck_row(c->tb.bneck, d, ck, &v);
        if (err < 0)
                return err;

        grown = realloc(c->marks, (c->nmarks + 1) * sizeof(*grown));
        if (!grown)
                return kdl_error(-ENOMEM, "out of memory");
        c->marks = grown;
        c->marks[c->nmarks].label = kdl__asprintf("%s@%s", kdl__dims_model_name(d), ck->name);
        if (!c->marks[c->nmarks].label)
                return -ENOMEM;
        c->marks[c->nmarks].tck = ck_index(c->in->teacher, tck);
        c->marks[c->nmarks].d_s = v.d_s;
        c->nmarks++;
        return 0;
}

/* Free the state of the current job (rows already written stay). */
static void job_release(struct job *j)
{
        for (size_t a = 0; a < j->nacc; a++) {
                kdl_spectral_state_free(j->acc[a].st);
                kdl_spectral_result_free(j->acc[a].res);
        }
        free(j->acc);
        *j = (struct job){0};
}

static int job_attach(kdl__job *kj, kdl_stream *s)
{
        struct job *j = kj->ctx;
        const struct kdl_run_dims_opts *o = j->r->o;
        size_t dy = 0;
        int err;

        /* The logits with the same rule for X and Y, so that the teacher's
         * job (and other jobs on the stream) read them once. */
        for (size_t a = 0; a < j->nacc; a++) {
                struct acc *x = &j->acc[a];

                x->ix = err = kdl__job_add(kj, s, j->f, x->x, o->common.spatial, j->student);
                if (err < 0)
                        return err;
                if (a == 0 && j->tck) {
                        j->iy = err = kdl__job_add(kj, s, j->r->in->teacher, j->tck->logits,
                                                   o->common.spatial, false);
                        if (err < 0)
                                return err;
                        dy = kdl_stream_cols(s, j->iy);
                }
                /* The logits are row-centred X; a layer fits the row-centred Y. */
                err = kdl_spectral_state_new_plan(kdl_stream_cols(s, x->ix), x->layer ? dy : 0,
                                                  !x->layer ? KDL_SPECTRAL_CENTER_ROWS_X
                                                  : dy      ? KDL_SPECTRAL_CENTER_ROWS_Y
                                                            : 0,
                                                  &x->plan, &x->st);
                if (err < 0)
                        return err;
        }
        return 0;
}

static int job_block(kdl__job *kj, kdl_stream *s, unsigned pass)
{
        struct job *j = kj->ctx;
        const struct kdl_run_dims_opts *o = j->r->o;
        kdl_tensor yb = {0};
        int err = 0;

        (void) pass;
        if (j->tck)
                yb = kdl_stream_block(s, j->iy);
        for (size_t a = 0; a < j->nacc && !err; a++) {
                kdl_tensor xb = kdl_stream_block(s, j->acc[a].ix);

                err = kdl_spectral_accumulate(j->acc[a].st, &xb,
                                              j->acc[a].layer && j->tck ? &yb : NULL);
                if (!err && a == 0 && j->support) {
                        double sum;

                        err = kdl_spectral_support_rank(&xb, o->common.tau[0], o->rank_rtol,
                                                        j->head_rank, &sum);
                        j->support_sum += sum;
                }
        }
        return err;
}

static int finalize(struct job *j, struct acc *x)
{
        const struct kdl_run_dims_opts *o = j->r->o;
        kdl_spectral_opts sopt;

        kdl_spectral_opts_init(&sopt);
        sopt.rank_rtol = o->rank_rtol;
        sopt.ridge_lambda = o->ridge_lambda;
        if (kdl_spectral_count(x->st) < 2)
                return kdl_error(-KDL_ESHAPE,
                                 "'%s': %s: expected at least 2 usable samples, found %zu",
                                 kdl_h5_dump(j->f)->path, x->x->path, kdl_spectral_count(x->st));
        return kdl_spectral_finalize(x->st, &sopt, &x->res);
}

static int heads_row(struct job *j, const kdl_spectral_result *lres)
{
        kdl_table *t = j->r->tb.heads;
        int err = kdl__dims_put_model(t, kdl_h5_dump(j->f), j->ck);

        err = err
                      ?: kdl_table_put_str(t, "head_input",
                                           j->ck->head_input ? j->ck->head_input : "-");
        err = err ?: kdl_table_put_int(t, "width", (long long) j->hwidth);
        err = err ?: kdl_table_put_int(t, "classes", (long long) lres->d);
        err = err ?: kdl_table_put_int(t, "wfw_rank", (long long) j->head_rank);
        err = err ?: kdl_table_put_int(t, "kl_blind_dims", (long long) (j->hwidth - j->head_rank));
        err = err ?: kdl_table_put_real(t, "tau", j->r->o->common.tau[0]);
        err = err
                      ?: kdl_table_put_real(t, "wfw_support_rank_mean",
                                            j->support_sum / (double) lres->n);
        return err;
}

/*
 * The end of the one pass: every row of the model at the checkpoint, its
 * selected layers first (with the ridge fit of the teacher's logits when
 * given), then its centred logits, its head and, for a student with a
 * teacher, its verdict.
 */
static int job_end(kdl__job *kj, kdl_stream *s, unsigned pass)
{
        struct job *j = kj->ctx;
        struct kdl__dims_run *c = j->r;
        const kdl_dump *d = kdl_h5_dump(j->f);
        const kdl_checkpoint *ck = j->ck;
        const kdl_spectral_result *tres = NULL;
        const kdl_layer *wl = width_layer(ck);
        size_t skipped = j->combined ? j->skipped : kdl_stream_skipped(s);
        double r2 = NAN;
        int err = 0;

        (void) pass;
        if (skipped) {
                err = kdl_doc_add_note(c->doc,
                                       "'%s': checkpoint %s: %zu samples with NaN/Inf skipped, "
                                       "for every layer and the logits (one pass reads them all: "
                                       "NaN/Inf in any dataset read with them%s drops the "
                                       "sample)",
                                       d->path, ck->name, skipped,
                                       j->tck && !j->teacher ? ", the teacher's logits included"
                                                             : "");
                if (err < 0)
                        return err;
        }
        for (size_t a = 0; a < j->nacc && !err; a++)
                err = finalize(j, &j->acc[a]);
        if (err < 0)
                return err;
        if (j->teacher)
                tres = j->acc[0].res;
        else if (j->tck)
                tres = c->tlog[ck_index(c->in->teacher, j->tck)];
        for (size_t a = 1; a < j->nacc && !err; a++) {
                const kdl_layer *l = j->acc[a].layer;
                const kdl_spectral_result *res = j->acc[a].res;

                err = kdl__dims_row(c->tb.dims, d, ck, l, res, tres);
                if (!err && c->o->spectrum)
                        err = kdl__dims_spectrum_rows(c->tb.spec, d, ck, l->name, res);
                if (!err && res->has_ridge && l == wl)
                        r2 = res->ridge.r2;
                c->layer_rows++;
        }

        /* The logits last, as the network's last layer. */
        if (!err)
                c->methods |= 1u << j->acc[0].res->method;
        err = err ?: kdl__dims_row(c->tb.dims, d, ck, NULL, j->acc[0].res, NULL);
        if (!err && c->o->spectrum)
                err = kdl__dims_spectrum_rows(c->tb.spec, d, ck, "logits", j->acc[0].res);
        if (!err && ck->head_weight)
                err = heads_row(j, j->acc[0].res);
        if (!err && j->teacher) {
                c->tlog[ck_index(j->f, ck)] = j->acc[0].res;
                j->acc[0].res = NULL;
        } else if (!err && j->tck) {
                err = verdict_row(c, d, ck, j->tck, wl ? wl->name : NULL, r2);
        }
        return err;
}

/* ---- under MPI ------------------------------------------------------------------------ */

static int state_pack(const void *st, void **buf, size_t *len)
{
        return kdl_spectral_state_pack(st, buf, len);
}

static int state_merge_packed(void *st, const void *buf, size_t len)
{
        return kdl_spectral_state_merge_packed(st, buf, len);
}

static int state_load_packed(void *st, const void *buf, size_t len)
{
        return kdl_spectral_state_load_packed(st, buf, len);
}

/* Under MPI: every state merged in rank order and sent back to every rank,
 * so that every rank's end computes the one-process spectra (the sketch's
 * test matrix is a function of the seed, the same on every rank); the
 * support ranks and the samples skipped are counts, summed exactly in any
 * order. */
static int job_combine(kdl__job *kj, kdl_stream *s, unsigned pass)
{
        static const struct kdl__dist_ops ops = {state_pack, state_merge_packed, state_load_packed};
        struct job *j = kj->ctx;
        double sum[2] = {j->support_sum, (double) kdl_stream_skipped(s)};
        int err = 0;

        (void) pass;
        for (size_t a = 0; a < j->nacc && !err; a++)
                err = kdl__dist_combine(j->acc[a].st, &ops);
        err = err ?: kdl__dist_sum(sum, 2);
        j->support_sum = sum[0];
        j->skipped = (size_t) sum[1];
        j->combined = true;
        return err;
}

/* The stream's default budget for all its blocks together (loaders/stream.h). */
#define STREAM_BLOCK_BYTES ((size_t) 64 << 20)

/*
 * The logits' method (j->acc[0].plan) and the job's memory need, checked
 * against the budget before anything is allocated: every layer's state, the
 * stream's blocks, then the logits' state by the method asked for, or the
 * one kdl_spectral_plan_choose() finds in what is left.
 */
/* The rows of the job's blocks, their bytes (@ret_blocks) and the selected layers' states
 * (@ret_layers), over @n samples. */
static size_t layers_bytes(const struct job *j, size_t n, size_t rows_read, size_t *ret_blocks,
                           size_t *ret_layers)
{
        const struct kdl_run_dims_opts *o = j->r->o;
        enum kdl_spatial sp = o->common.spatial;
        size_t dy = j->tck ? kdl_dsinfo_width(j->tck->logits, sp) : 0;
        size_t cols = kdl_dsinfo_width(j->ck->logits, sp) + dy, rows, layers = 0;

        for (size_t a = 1; a < j->nacc; a++)
                cols += kdl_dsinfo_width(j->acc[a].x, sp);
        rows = o->common.block_rows ? o->common.block_rows
                                    : STREAM_BLOCK_BYTES / (sizeof(double) * cols);
        /* The rows the stream reads, when known (--plan): the states copy their blocks. */
        rows = rows_read ? rows_read : rows ? rows : 1;
        *ret_blocks = rows < n ? rows * cols * sizeof(double) : n * cols * sizeof(double);
        for (size_t a = 1; a < j->nacc; a++)
                layers = kdl_sat_add(layers, kdl_spectral_bytes(&j->acc[a].plan, n,
                                                                kdl_dsinfo_width(j->acc[a].x, sp),
                                                                dy, rows));
        *ret_layers = layers;
        return rows;
}

/* The logits' plan @p as asked: the method (auto: the sketch, which bounds its choice) and
 * the sketch's parameters. */
static void logits_plan(const struct kdl_run_dims_opts *o, size_t n, kdl_spectral_plan *p)
{
        kdl_spectral_plan_init(p);
        p->rank = o->sketch_rank;
        p->oversample = o->sketch_oversample;
        p->seed = o->seed;
        p->method = o->logit_method == KDL_DIMS_LOGITS_AUTO
                            ? KDL_SPECTRAL_SKETCH
                            : (enum kdl_spectral_method) o->logit_method;
        p->rows = p->method == KDL_SPECTRAL_EXACT_GRAM ? n : 0;
}

/* The accumulators of job @j: its logits, then its selected layers. */
static int job_layers(struct job *j)
{
        const kdl_checkpoint *ck = j->ck;
        size_t nacc = 1;

        for (size_t l = 0; l < ck->nlayers; l++)
                nacc += layer_selected(j->r, &ck->layers[l]);
        j->acc = kdl_new(struct acc, nacc);
        if (!j->acc)
                return -ENOMEM;
        j->acc[0] = (struct acc){.x = ck->logits, .ix = -1};
        j->nacc = 1;
        for (size_t l = 0; l < ck->nlayers; l++) {
                if (!layer_selected(j->r, &ck->layers[l]))
                        continue;
                j->acc[j->nacc] = (struct acc){
                        .layer = &ck->layers[l], .x = &ck->layers[l].feature, .ix = -1};
                kdl_spectral_plan_init(&j->acc[j->nacc++].plan);
        }
        return 0;
}

/* The stream job @j reads over @n samples through @pair (NULL: one file): its bytes, and
 * its rows into @ret_rows. */
static size_t stream_bytes(const struct job *j, const kdl_pair *pair, size_t n, size_t *ret_rows)
{
        const struct kdl_run_dims_opts *o = j->r->o;
        struct kdl_stream_opts so = {.block_rows = o->common.block_rows,
                                     .skip_nonfinite = o->common.skip_nonfinite};
        struct kdl_stream_cost sc;

        kdl_stream_cost_init(&sc, pair);
        for (size_t a = 0; a < j->nacc; a++)
                kdl_stream_cost_add(&sc, j->acc[a].x, o->common.spatial, pair != NULL);
        /* The teacher's own job reads its logits once, as X and as Y. */
        if (j->tck && j->tck != j->ck)
                kdl_stream_cost_add(&sc, j->tck->logits, o->common.spatial, false);
        *ret_rows = kdl_stream_cost_rows(&sc, n, &so);
        return kdl_stream_cost_bytes(&sc, n, &so);
}

/*
 * The logits' method of job @j over @n samples through @pair into @p (auto: the one
 * kdl_spectral_plan_choose() finds in what the blocks and layers leave, else the sketch,
 * which the need then counts and the run's check refuses), with the stream's blocks
 * (@ret_sbytes of @ret_srows rows) and the layers' states (@ret_layers): the same for
 * --plan and the run.  Return: the rows the states copy.
 */
static size_t job_plan(const struct job *j, size_t n, const kdl_pair *pair, kdl_spectral_plan *p,
                       size_t *ret_srows, size_t *ret_sbytes, size_t *ret_layers)
{
        const struct kdl_run_dims_opts *o = j->r->o;
        size_t c = kdl_dsinfo_width(j->ck->logits, o->common.spatial), rows, blocks, rest;

        *ret_sbytes = stream_bytes(j, pair, n, ret_srows);
        rows = layers_bytes(j, n, *ret_srows, &blocks, ret_layers);
        /* What the need counts besides the logits: the stream's blocks and the layers. */
        rest = kdl_sat_add(*ret_sbytes, *ret_layers);
        logits_plan(o, n, p);
        if (o->logit_method == KDL_DIMS_LOGITS_AUTO && rest < o->common.memory &&
            kdl_spectral_plan_choose(n, c, o->common.memory - rest, o->exact_max, rows, p) < 0)
                kdl_error_clear(); /* the sketch, refused by the run's check */
        return rows;
}

int kdl__dims_job_need(struct kdl__dims_run *r, kdl_h5file *f, const kdl_checkpoint *ck,
                       const kdl_checkpoint *tck, size_t n, const kdl_pair *pair, kdl__need *ret)
{
        const struct kdl_run_dims_opts *o = r->o;
        struct job j = {.r = r, .f = f, .ck = ck, .tck = tck};
        kdl__need nd = {.analysis = ret->analysis}, head = {.analysis = ret->analysis};
        kdl_spectral_plan p;
        size_t c, rows, layers = 0, lbytes, srows = 0, sbytes = 0;
        int err;

        if (!ck->logits || ck->logits->ndim != 2 || ck->logits->shape[1] < 2)
                return kdl_error(-KDL_ESCHEMA, "'%s': %s/logits: expected [N, C] with C >= 2",
                                 kdl_h5_dump(f)->path, ck->group);
        c = kdl_dsinfo_width(ck->logits, o->common.spatial);
        err = job_layers(&j);
        rows = err ? 0 : job_plan(&j, n, pair, &p, &srows, &sbytes, &layers);
        lbytes = err ? 0 : kdl_spectral_bytes(&p, n, c, 0, rows);
        err = err
                      ?: kdl__need_add(&nd, sbytes, KDL_LEVER_BLOCK_ROWS,
                                       "blocks of %zu rows at checkpoint %s", srows, ck->name);
        err = err
                      ?: kdl__need_add(&nd, layers, KDL_LEVER_LAYER | KDL_LEVER_BLOCK_ROWS,
                                       "the spectra of %zu feature layers", j.nacc - 1);
        err = err
                      ?: kdl__need_add(&nd, lbytes, KDL_LEVER_SKETCH_RANK,
                                       "the centred logits (C = %zu, N = %zu) by %s", c, n,
                                       kdl_spectral_method_name(p.method));
        /* The head weight and its centred copy, read and factored before the pass. */
        if (!err && ck->head_weight && ck->head_weight->ndim == 2)
                err = kdl__need_add(
                        &head,
                        kdl_sat_mul(kdl_sat_mul(4 * sizeof(double), c), ck->head_weight->shape[1]),
                        0, "the head weight [%zu, %zu] and its SVD", c, ck->head_weight->shape[1]);
        if (!err) {
                kdl__need_max(&nd, &head);
                kdl__need_max(ret, &nd);
        }
        kdl__need_release(&head);
        kdl__need_release(&nd);
        job_release(&j);
        return err;
}

/* Set up the job of checkpoint @ck of @f over @n samples read through @pair (NULL: @f alone;
 * @tck: the teacher's checkpoint it fits, or NULL).  The budget is the run's to check
 * (kdl__dims_need()) before any job reads. */
static int job_new(struct kdl__dims_run *c, kdl_h5file *f, bool student, const kdl_checkpoint *ck,
                   const kdl_checkpoint *tck, bool teacher, size_t n, const kdl_pair *pair,
                   kdl__job *ret)
{
        struct job *j = &c->job;
        const kdl_dump *d = kdl_h5_dump(f);
        size_t srows, sbytes, layers;
        int err;

        job_release(j);
        if (!ck->logits || ck->logits->ndim != 2 || ck->logits->shape[1] < 2)
                return kdl_error(-KDL_ESCHEMA, "'%s': %s/logits: expected [N, C] with C >= 2",
                                 d->path, ck->group);
        *j = (struct job){.r = c,
                          .f = f,
                          .student = student,
                          .ck = ck,
                          .tck = tck,
                          .teacher = teacher,
                          .iy = -1};
        /* The logits' method as the need counted it; then the head weight, read and factored. */
        err = job_layers(j);
        if (!err)
                job_plan(j, n, pair, &j->acc[0].plan, &srows, &sbytes, &layers);
        if (!err && ck->head_weight) {
                err = head_rank(c, f, ck, &j->head_rank, &j->hwidth);
                j->support = err == 0;
        }
        if (err < 0)
                return err;
        *ret = (kdl__job){.ctx = j,
                          .attach = job_attach,
                          .block = job_block,
                          .end = job_end,
                          .combine = job_combine};
        return 0;
}

int kdl__dims_teacher_job(struct kdl__dims_run *r, const kdl_checkpoint *tck, kdl__job *ret)
{
        kdl_h5file *tf = r->in->teacher;

        assert(tf && tck && ret);
        if (r->tlog[ck_index(tf, tck)])
                return kdl_error(-KDL_EUSAGE, "internal: teacher checkpoint %s analysed twice",
                                 tck->name);
        return job_new(r, tf, false, tck, tck, true, kdl_h5_dump(tf)->n, NULL, ret);
}

int kdl__dims_job(struct kdl__dims_run *r, size_t k, const struct kdl_ckpair *cp, kdl__job *ret)
{
        assert(k < r->in->nstudents && cp && cp->main && ret);
        assert(!cp->partner || r->in->teacher);
        if (cp->partner && !r->tlog[ck_index(r->in->teacher, cp->partner)])
                return kdl_error(-KDL_EUSAGE, "internal: teacher checkpoint %s first",
                                 cp->partner->name);
        return job_new(r, r->in->students[k], true, cp->main, cp->partner, false,
                       r->in->pairs[k] ? r->in->pairs[k]->n : kdl_h5_dump(r->in->students[k])->n,
                       r->in->pairs[k], ret);
}

static void run_free(struct kdl__dims_run *c)
{
        job_release(&c->job);
        if (c->tlog)
                for (size_t k = 0; k < kdl_h5_dump(c->in->teacher)->ncheckpoints; k++)
                        kdl_spectral_result_free(c->tlog[k]);
        free(c->tlog);
        for (size_t m = 0; m < c->nmarks; m++)
                free(c->marks[m].label);
        free(c->marks);
        kdl__dims_tables_release(&c->tb);
        free(c);
}

void kdl__dims_abort(struct kdl__dims_run *r)
{
        if (r)
                run_free(r);
}

int kdl__dims_begin(const kdl_inputs *in, const struct kdl_run_dims_opts *o, kdl_doc *doc,
                    struct kdl__dims_run **ret)
{
        struct kdl__dims_run *c;
        int err;

        assert(in && o && doc && ret);
        err = kdl__dims_check_opts(in, o);
        if (err < 0)
                return err;
        if (o->layer && strcmp(o->layer, "all") != 0 && !kdl__dims_layer_exists(in, o->layer))
                return kdl_error(-KDL_EUSAGE, "--layer: no input has a layer '%s'", o->layer);
        c = kdl_new(struct kdl__dims_run, 1);
        if (!c)
                return kdl_error(-ENOMEM, "out of memory");
        *c = (struct kdl__dims_run){.in = in, .o = o, .doc = doc};
        err = kdl_inputs_describe(in, doc);
        err = err ?: kdl__dims_tables_new(&c->tb);
        if (!err && in->teacher) {
                const kdl_dump *td = kdl_h5_dump(in->teacher);

                c->tlog = kdl_new(kdl_spectral_result *, td->ncheckpoints ? td->ncheckpoints : 1);
                if (!c->tlog)
                        err = kdl_error(-ENOMEM, "out of memory");
        }
        if (err < 0) {
                run_free(c);
                return err;
        }
        *ret = c;
        return 0;
}

int kdl__dims_end(struct kdl__dims_run *r)
{
        const struct kdl_run_dims_opts *o = r->o;
        int err = 0;

        job_release(&r->job);
        if (o->layer && strcmp(o->layer, "all") != 0 && r->layer_rows == 0)
                err = kdl_error(-KDL_EUSAGE, "--layer: no selected checkpoint has a layer '%s'",
                                o->layer);
        if (!err && r->in->teacher)
                err = kdl__dims_curve_rows(r->tb.curve, kdl_h5_dump(r->in->teacher), r->tlog,
                                           r->marks, r->nmarks);
        err = err ?: kdl__dims_notes(r->doc, o, r->in, kdl_table_rows(r->tb.heads) > 0, r->methods);
        err = err ?: kdl__dims_tables_commit(&r->tb, r->doc);
        run_free(r);
        return err;
}

/* Run @job alone on a stream over @n samples through @pair (NULL: one file). */
static int run_job(const struct kdl_run_dims_opts *o, size_t n, const kdl_pair *pair, kdl__job *job)
{
        struct kdl_stream_opts so = {.block_rows = o->common.block_rows,
                                     .skip_nonfinite = o->common.skip_nonfinite};
        kdl_stream *s = NULL;
        int err;

        err = kdl_stream_new(n, pair, &so, &s);
        err = err ?: kdl__jobs_run(s, job, 1, NULL);
        kdl_stream_free(s);
        return err;
}

/* The teacher's rows at @tck, once. */
static int ensure_teacher(struct kdl__dims_run *r, const kdl_checkpoint *tck)
{
        kdl_h5file *tf = r->in->teacher;
        kdl__job job;
        int err;

        if (r->tlog[ck_index(tf, tck)])
                return 0;
        err = kdl__dims_teacher_job(r, tck, &job);
        return err ?: run_job(r->o, kdl_h5_dump(tf)->n, NULL, &job);
}

int kdl__dims_teacher_checkpoints(const kdl_inputs *in, const struct kdl_run_dims_opts *o,
                                  struct kdl_ckpair **ret, size_t *ret_n)
{
        int err;

        /* A checkpoint that only the students have is fine: the teacher then
         * contributes the partners of theirs. */
        *ret = NULL;
        *ret_n = 0;
        err = kdl_select_checkpoints(in->teacher, NULL, o->common.checkpoint, NULL, ret, ret_n);
        if (err == -KDL_EUSAGE && in->nstudents) {
                kdl_error_clear();
                err = 0;
        }
        return err;
}

int kdl_run_dims(const kdl_inputs *in, const struct kdl_run_dims_opts *o, kdl_doc *doc)
{
        struct kdl__dims_run *r = NULL;
        struct kdl_ckpair *sel = NULL;
        size_t nsel = 0;
        kdl__need nd = {.analysis = "dims"};
        int err;

        err = kdl__dims_begin(in, o, doc, &r);
        if (err < 0)
                return err;
        /* Every job's need before the first reads anything: the plan's check. */
        err = kdl__dims_need(r, in, o, &nd);
        err = err ?: kdl__need_check(&nd, o->common.memory, KDL_DIMS_LEVERS);
        kdl__need_release(&nd);
        if (err < 0)
                goto out;
        if (in->teacher) {
                err = kdl__dims_teacher_checkpoints(in, o, &sel, &nsel);
                for (size_t k = 0; k < nsel && !err; k++)
                        err = ensure_teacher(r, sel[k].main);
                free(sel);
                sel = NULL;
                if (err < 0)
                        goto out;
        }
        for (size_t s = 0; s < in->nstudents; s++) {
                const kdl_pair *pair = in->pairs[s];
                size_t n = pair ? pair->n : kdl_h5_dump(in->students[s])->n;

                err = kdl_select_checkpoints(in->students[s], in->teacher, o->common.checkpoint,
                                             o->common.teacher_checkpoint, &sel, &nsel);
                for (size_t k = 0; k < nsel && !err; k++) {
                        kdl__job job;

                        if (sel[k].partner)
                                err = ensure_teacher(r, sel[k].partner);
                        err = err ?: kdl__dims_job(r, s, &sel[k], &job);
                        err = err ?: run_job(o, n, pair, &job);
                }
                free(sel);
                sel = NULL;
                if (err < 0)
                        goto out;
        }
        err = kdl__dims_end(r);
        r = NULL;
out:
        kdl__dims_abort(r);
        return err;
}
