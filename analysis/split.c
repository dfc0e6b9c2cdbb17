/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "loaders/stream.h"
#include "analysis/dist.h"
#include "analysis/split.h"
#include "analysis/split-internal.h"
#include "analysis/per-sample.h"
#include "metrics/base/budget.h"
#include "metrics/base/banned.h"

_Static_assert(KDL_RUN_MAX_TAUS <= KDL_SPLIT_MAX_TAUS, "every temperature fits the metric");

void kdl_run_split_opts_init(struct kdl_run_split_opts *o)
{
        assert(o);
        memset(o, 0, sizeof(*o));
        kdl_run_common_init(&o->common);
        kdl_split_opts_init(&o->metric);
        o->hist_bins = 20;
}

/* The per-sample fields written by --per-sample, in file order. */
enum { F_KL, F_TCKD, F_NCKD, F_RES, F_PT, F_PS, F_GAP, F_OMEGA, F_EPS, F_ENT, F_W, F_COUNT_ };
static const char *const field_names[F_COUNT_] = {
        "kl",  "tckd",  "nckd", "identity_residual", "pt_y", "ps_y",
        "gap", "omega", "eps",  "nt_entropy",        "w",
};

struct sources {
        int zt, zs;
        int lt, ls; /* the teacher's labels, else the student's; -1 when not read */
        int zp;     /* the positions, when j->pos */
};

/* One student checkpoint against its teacher checkpoint: the state of a
 * kdl__split_job(), owned by its run. */
struct job {
        const kdl_inputs *in;
        size_t k; /* the student */
        const struct kdl_run_split_opts *o;
        const kdl_checkpoint *cks, *ckt;
        const char *student, *teacher; /* paths */
        size_t c;
        kdl_table **t;
        kdl_doc *doc;
        kdl__per_sample *ps;        /* NULL without --per-sample */
        struct kdl__split_pos *pos; /* NULL without /positions (split-positions.c) */

        /* The passes. */
        struct sources src;
        kdl_split_state *st;
        kdl_split_instance_state *inst;
        kdl_split_blocks *blocks; /* the blocked domain level, NULL otherwise */
        bool block_open;          /* a block of classes takes this pass's samples */
        kdl_tensor *wt, *ws;      /* the heads, read before pass 0 when blocked */
        size_t skipped;           /* samples dropped in pass 0 */

        /* Block buffers. */
        size_t cap;
        double *work; /* KDL_SPLIT_EVAL_WORK(c) */
        int64_t *labels;
        double *fields[F_COUNT_]; /* rows x ntaus each */
};

struct kdl__split_run {
        const kdl_inputs *in;
        struct kdl_run_split_opts o; /* metric: taus from common.tau, the domain mode and
                                        budget from plan */
        kdl_split_plan plan;
        enum kdl_split_domain asked; /* the domain mode asked for */
        kdl_doc *doc;
        kdl_table *t[KDL__SPLIT_NTABLES];
        kdl__per_sample *ps; /* NULL without --per-sample */
        struct job job;      /* the current job */
};

/* ---- Reading ---------------------------------------------------------------- */

static int read_head(kdl_h5file *f, const kdl_checkpoint *ck, size_t c, kdl_tensor **ret)
{
        *ret = NULL;
        if (!ck->head_weight)
                return 0;
        return kdl_h5_read_matrix(f, ck->head_weight, c, 0, ret);
}

static int grow(struct job *j, size_t rows)
{
        size_t nt = j->o->metric.ntaus;

        if (rows <= j->cap)
                return 0;
        free(j->labels);
        j->labels = kdl_new(int64_t, rows);
        if (!j->labels)
                return -ENOMEM;
        for (int f = 0; f < F_COUNT_; f++) {
                free(j->fields[f]);
                j->fields[f] = kdl__malloc(rows, nt * sizeof(double));
                if (!j->fields[f])
                        return -ENOMEM;
        }
        j->cap = rows;
        return 0;
}

/* The labels of the current block as int64: the teacher's, else the student's
 * (when both dumps have labels, the stream has checked they agree). */
static int block_labels(struct job *j, kdl_stream *s, const struct sources *src)
{
        size_t rows = kdl_stream_rows(s);
        kdl_tensor a;
        int err = grow(j, rows);

        if (err < 0)
                return err;
        a = kdl_stream_block(s, src->lt >= 0 ? src->lt : src->ls);
        for (size_t i = 0; i < rows; i++)
                j->labels[i] = (int64_t) a.data[i];
        return 0;
}

/* The datasets of the job @job (its state @j), added on its behalf. */
static int add_sources(struct job *j, kdl__job *job, kdl_stream *s, struct sources *src)
{
        kdl_h5file *ft = j->in->teacher, *fs = j->in->students[j->k];
        const kdl_dump *dt = kdl_h5_dump(ft), *ds = kdl_h5_dump(fs);

        if (!dt->labels && !ds->labels)
                return kdl_error(-KDL_EMISSING,
                                 "'%s': /labels: expected integer class labels [N] in the teacher "
                                 "or the student ('%s'), found none",
                                 dt->path, ds->path);
        if (!j->ckt->logits || !j->cks->logits)
                return kdl_error(-KDL_EMISSING, "'%s': %s: expected logits [N, C], found none",
                                 j->ckt->logits ? ds->path : dt->path,
                                 j->ckt->logits ? j->cks->group : j->ckt->group);
        src->zt = kdl__job_add(job, s, ft, j->ckt->logits, KDL_SPATIAL_AVG, false);
        if (src->zt < 0)
                return src->zt;
        src->zs = kdl__job_add(job, s, fs, j->cks->logits, KDL_SPATIAL_AVG, true);
        if (src->zs < 0)
                return src->zs;
        src->lt = src->ls = -1;
        if (dt->labels) {
                src->lt = kdl__job_add(job, s, ft, dt->labels, KDL_SPATIAL_FLATTEN, false);
                if (src->lt < 0)
                        return src->lt;
        }
        if (!dt->labels) {
                src->ls = kdl__job_add(job, s, fs, ds->labels, KDL_SPATIAL_FLATTEN, true);
                if (src->ls < 0)
                        return src->ls;
        }
        if (kdl_stream_cols(s, src->zt) != j->c || kdl_stream_cols(s, src->zs) != j->c)
                return kdl_error(-KDL_EMISMATCH,
                                 "'%s': %s: expected %zu classes as the teacher, found %zu",
                                 ds->path, j->cks->logits->path, j->c, kdl_stream_cols(s, src->zs));
        return 0;
}

/* Field @f of the per-sample file at temperature column @t, of the current block. */
static struct kdl__per_sample_col field_col(void *ctx, size_t f, size_t t)
{
        const struct job *j = ctx;

        return (struct kdl__per_sample_col){j->fields[f] + t, (ptrdiff_t) j->o->metric.ntaus};
}

/* Per-sample values of the current block (second pass) into the file and the sums per
 * position, as the job has them. */
static int write_block(struct job *j, kdl_stream *s, const struct sources *src)
{
        size_t rows = kdl_stream_rows(s), nt = j->o->metric.ntaus;
        kdl_tensor zt = kdl_stream_block(s, src->zt), zs = kdl_stream_block(s, src->zs);
        kdl_tensor zp = j->pos ? kdl_stream_block(s, src->zp) : zt;
        int err = 0;

        for (size_t i = 0; i < rows && !err; i++) {
                for (size_t k = 0; k < nt && !err; k++) {
                        kdl_split_sample v;
                        size_t e = i * nt + k;

                        err = kdl_split_eval(zt.data + i * j->c, zs.data + i * j->c, j->c,
                                             (size_t) j->labels[i], j->o->metric.taus[k],
                                             &j->o->metric, j->work, &v);
                        if (err < 0)
                                break;
                        j->fields[F_KL][e] = v.kl;
                        j->fields[F_TCKD][e] = v.tckd;
                        j->fields[F_NCKD][e] = v.nckd;
                        j->fields[F_RES][e] = v.residual;
                        j->fields[F_PT][e] = v.pt_y;
                        j->fields[F_PS][e] = v.ps_y;
                        j->fields[F_GAP][e] = v.gap;
                        j->fields[F_OMEGA][e] = v.omega;
                        j->fields[F_EPS][e] = v.eps;
                        j->fields[F_ENT][e] = v.nt_entropy;
                        err = j->pos ? kdl__split_pos_add(j->pos, zp.data[i], k, &v) : 0;
                }
        }
        if (err < 0 || !j->ps)
                return err;
        return kdl__per_sample_write(j->ps, kdl_stream_samples(s), rows, field_col, j);
}

static void job_release(struct job *j)
{
        kdl_split_blocks_free(j->blocks);
        kdl_tensor_free(j->wt);
        kdl_tensor_free(j->ws);
        kdl_split_instance_state_free(j->inst);
        kdl_split_state_free(j->st);
        kdl__split_pos_free(j->pos);
        free(j->work);
        free(j->labels);
        for (int f = 0; f < F_COUNT_; f++)
                free(j->fields[f]);
        memset(j, 0, sizeof(*j));
}

/* The blocked domain level of the job: its heads now (every block's end
 * needs them), and its blocks of classes. */
static int blocks_new(struct job *j)
{
        int err;

        err = read_head(j->in->teacher, j->ckt, j->c, &j->wt);
        err = err ?: read_head(j->in->students[j->k], j->cks, j->c, &j->ws);
        err = err
                      ?: kdl_split_blocks_new(j->c, j->wt ? j->wt->shape[1] : 0,
                                              j->ws ? j->ws->shape[1] : 0, &j->o->metric,
                                              &j->blocks);
        j->block_open = !err;
        return err;
}

static int job_attach(kdl__job *job, kdl_stream *s)
{
        struct job *j = job->ctx;
        int err = add_sources(j, job, s, &j->src);

        err = err
                      ?: kdl__split_pos_attach(job, s, j->in, j->k, j->o->metric.ntaus, &j->pos,
                                               &j->src.zp);
        if (!err && (j->ps || j->pos)) {
                j->work = kdl__malloc(KDL_SPLIT_EVAL_WORK(j->c), sizeof(double));
                if (!j->work)
                        return -ENOMEM;
        }
        if (!err && j->o->metric.domain == KDL_SPLIT_DOMAIN_BLOCKED)
                err = blocks_new(j);
        return err ?: kdl_split_state_new(j->c, &j->o->metric, &j->st);
}

/* The end of a pass that fed the open block of classes: close it. */
static int block_end(struct job *j)
{
        int more;

        if (!j->block_open)
                return 0;
        more = kdl_split_blocks_next(j->blocks, j->st, j->wt, j->ws);
        if (more < 0)
                return more;
        j->block_open = more > 0;
        return 0;
}

static int job_block(kdl__job *job, kdl_stream *s, unsigned pass)
{
        struct job *j = job->ctx;
        kdl_tensor zt = kdl_stream_block(s, j->src.zt), zs = kdl_stream_block(s, j->src.zs);
        int err = block_labels(j, s, &j->src);

        /* Pass 0: everything but w_n.  Pass 1: w_n, which needs the mean
         * teacher confidence of pass 0.  Every pass: the open block of
         * classes (later passes only that). */
        if (!err && pass == 0)
                err = kdl_split_accumulate(j->st, &zt, &zs, j->labels);
        if (!err && pass == 1) {
                err = kdl_split_instance_accumulate(j->inst, &zt, &zs, j->labels,
                                                    j->ps ? j->fields[F_W] : NULL);
                if (!err && (j->ps || j->pos))
                        err = write_block(j, s, &j->src);
        }
        if (!err && j->block_open)
                err = kdl_split_blocks_accumulate(j->blocks, &zt, j->labels);
        return err;
}

/* The last pass done: the results, their rows and notes. */
static int job_finish(struct job *j)
{
        const struct kdl__split_rows w = {.t = j->t,
                                          .o = j->o,
                                          .cks = j->cks,
                                          .ckt = j->ckt,
                                          .student = j->student,
                                          .teacher = j->teacher,
                                          .c = j->c};
        kdl_split_result *r = NULL;
        int err = 0;

        /* The full mode reads the heads now; blocked has them; off needs none. */
        if (j->o->metric.domain == KDL_SPLIT_DOMAIN_FULL) {
                err = read_head(j->in->teacher, j->ckt, j->c, &j->wt);
                err = err ?: read_head(j->in->students[j->k], j->cks, j->c, &j->ws);
        }
        err = err ?: kdl_split_finalize(j->st, j->inst, j->blocks, j->wt, j->ws, &r);
        err = err ?: kdl__split_emit(&w, r, j->skipped);
        err = err ?: (j->pos ? kdl__split_pos_emit(j->pos, &w, j->doc) : 0);
        if (!err && j->o->metric.domain != KDL_SPLIT_DOMAIN_OFF)
                err = kdl__split_note_heads(&w, r, j->doc);
        kdl_split_result_free(r);
        return err;
}

/* A rank other than 0 under MPI: its states hold its own rows (rank 0 merged
 * them all and writes every result), so it only closes the open block of
 * classes (its values are rank 0's) and takes the passes rank 0 takes. */
static int follow_end(struct job *j, unsigned pass)
{
        int more = j->block_open ? kdl_split_blocks_next(j->blocks, j->st, NULL, NULL) : 0;

        if (more < 0)
                return more;
        j->block_open = more > 0;
        if (pass == 0 && j->ps) /* its rows of pass 1 are held for rank 0 */
                more = kdl__per_sample_begin(j->ps, j->k, j->cks->name, j->ckt->name, field_names,
                                             F_COUNT_);
        else if (pass == 1 && j->ps)
                more = kdl__per_sample_end(j->ps);
        if (more < 0 || pass == 0 || j->block_open)
                return more < 0 ? more : 1;
        job_release(j);
        return 0;
}

static int job_end(kdl__job *job, kdl_stream *s, unsigned pass)
{
        struct job *j = job->ctx;
        int err;

        if (kdl__dist_rank() != 0)
                return follow_end(j, pass);
        if (pass > 0) {
                /* Pass 1 wrote the per-sample values; the later ones feed blocks of classes. */
                err = pass == 1 && j->ps ? kdl__per_sample_end(j->ps) : 0;
                err = err ?: block_end(j);
                if (!err && j->block_open) /* another block of classes: another pass */
                        return 1;
                err = err ?: job_finish(j);
                job_release(j);
                return err;
        }
        if (kdl__dist_size() == 1) /* else summed over the ranks by job_combine() */
                j->skipped = kdl_stream_skipped(s);
        if (kdl_split_state_count(j->st) == 0)
                return kdl_error(-KDL_EMISSING,
                                 "'%s': %s: expected samples with finite values, found none",
                                 j->student, j->cks->logits->path);
        err = block_end(j);
        if (!err && !j->inst) /* under MPI job_combine() made it */
                err = kdl_split_instance_state_new(j->st, &j->inst);
        if (!err && j->ps)
                err = kdl__per_sample_begin(j->ps, j->k, j->cks->name, j->ckt->name, field_names,
                                            F_COUNT_);
        return err < 0 ? err : 1;
}

/* ---- Under MPI (analysis/dist.h) ------------------------------------------- */

static int state_pack(const void *s, void **buf, size_t *len)
{
        return kdl_split_state_pack(s, buf, len);
}

static int state_merge(void *s, const void *buf, size_t len)
{
        return kdl_split_state_merge_packed(s, buf, len);
}

static int inst_pack(const void *s, void **buf, size_t *len)
{
        return kdl_split_instance_state_pack(s, buf, len);
}

static int inst_merge(void *s, const void *buf, size_t len)
{
        return kdl_split_instance_state_merge_packed(s, buf, len);
}

/* The second pass's state by reference: every rank gets rank 0's. */
static int inst_ref_pack(const void *s, void **buf, size_t *len)
{
        return kdl_split_instance_state_pack(*(kdl_split_instance_state *const *) s, buf, len);
}

static int inst_ref_load(void *s, const void *buf, size_t len)
{
        kdl_split_instance_state **into = s, *t = NULL;
        int err = kdl_split_instance_state_new_packed(buf, len, &t);

        if (err < 0)
                return err;
        kdl_split_instance_state_free(*into);
        *into = t;
        return 0;
}

static int blocks_pack(const void *s, void **buf, size_t *len)
{
        return kdl_split_blocks_pack(s, buf, len);
}

static int blocks_merge(void *s, const void *buf, size_t len)
{
        return kdl_split_blocks_merge_packed(s, buf, len);
}

/*
 * The states of every rank into rank 0's after pass @pass: the first pass
 * (and the count of samples skipped, summed) after pass 0, and then the
 * second pass's empty state made by rank 0 to every rank, so that all
 * compute w_n with the same mean teacher confidence; the second pass and
 * the per-sample rows after pass 1; the open block of classes after every
 * pass that fed it.  job_end() runs next, rank 0's on the merged states.
 */
static int job_combine(kdl__job *job, kdl_stream *s, unsigned pass)
{
        static const struct kdl__dist_ops first = {state_pack, state_merge, NULL};
        static const struct kdl__dist_ops second = {inst_pack, inst_merge, NULL};
        static const struct kdl__dist_ops fresh = {inst_ref_pack, NULL, inst_ref_load};
        static const struct kdl__dist_ops block = {blocks_pack, blocks_merge, NULL};
        struct job *j = job->ctx;
        double v[2] = {(double) kdl_stream_skipped(s), (double) kdl_split_state_count(j->st)};
        int err = 0;

        if (pass == 0) {
                err = kdl__dist_sum(v, 2);
                j->skipped = (size_t) v[0];
                err = err ?: kdl__dist_combine(j->st, &first);
        } else if (pass == 1) {
                err = j->ps ? kdl__per_sample_combine(j->ps) : 0;
                err = err ?: kdl__dist_combine(j->inst, &second);
                err = err ?: (j->pos ? kdl__dist_combine(j->pos, &kdl__split_pos_ops) : 0);
        }
        if (!err && j->block_open)
                err = kdl__dist_combine(j->blocks, &block);
        /* No sample at all: rank 0's job_end() says so. */
        if (!err && pass == 0 && v[1] > 0) {
                if (kdl__dist_rank() == 0)
                        err = kdl_split_instance_state_new(j->st, &j->inst);
                err = kdl__dist_status(err) ?: kdl__dist_broadcast(&j->inst, &fresh);
        }
        return err;
}

/* ---- The run ---------------------------------------------------------------- */

void kdl__split_abort(struct kdl__split_run *r)
{
        if (!r)
                return;
        job_release(&r->job);
        kdl__per_sample_abort(r->ps);
        kdl__split_tables_release(r->t);
        free(r);
}

/* The widest head weight of @f's checkpoints; 0 without any. */
static size_t widest_head(const kdl_h5file *f)
{
        const kdl_dump *d = kdl_h5_dump(f);
        size_t w = 0;

        for (size_t q = 0; q < d->ncheckpoints; q++) {
                const kdl_dsinfo *h = d->checkpoints[q].head_weight;

                if (h && h->ndim == 2 && h->shape[1] > w)
                        w = h->shape[1];
        }
        return w;
}

/* The plan of the run (its metric options resolved into @r->o), from the
 * widest heads there are. */
static int run_plan(struct kdl__split_run *r)
{
        const kdl_inputs *in = r->in;
        size_t c = kdl_h5_dump(in->teacher)->c, dt = widest_head(in->teacher), ds = 0;
        int err;

        for (size_t k = 0; k < in->nstudents; k++) {
                size_t w = widest_head(in->students[k]);

                ds = w > ds ? w : ds;
        }
        err = kdl_run_split_plan(c, dt, ds, &r->o, &r->plan);
        if (err < 0)
                return err;
        r->o.metric = kdl__split_metric_opts(kdl__split_own_bytes(c, dt, ds, &r->o), &r->o);
        r->o.metric.domain = r->plan.domain;
        return 0;
}

/* ---- --plan --------------------------------------------------------------------- */

/* The stream and the block buffers of the job of student @k at @cp, the larger into @ret. */
static int job_need(const kdl_inputs *in, const struct kdl_run_split_opts *o, size_t k,
                    const struct kdl_ckpair *cp, kdl__need *ret)
{
        struct kdl_stream_opts so = {.block_rows = o->common.block_rows,
                                     .skip_nonfinite = o->common.skip_nonfinite};
        const kdl_dump *dt = kdl_h5_dump(in->teacher), *ds = kdl_h5_dump(in->students[k]);
        kdl__need nd = {.analysis = ret->analysis};
        struct kdl_stream_cost c;
        size_t n = in->pairs[k]->n, rows, row;
        int err;

        if (!cp->main->logits || !cp->partner || !cp->partner->logits)
                return 0; /* refused by the run, with its message */
        kdl_stream_cost_init(&c, in->pairs[k]);
        kdl_stream_cost_add(&c, cp->partner->logits, KDL_SPATIAL_AVG, false);
        kdl_stream_cost_add(&c, cp->main->logits, KDL_SPATIAL_AVG, true);
        if (dt->labels || ds->labels)
                kdl_stream_cost_add(&c, dt->labels ? dt->labels : ds->labels, KDL_SPATIAL_FLATTEN,
                                    !dt->labels);
        rows = kdl_stream_cost_rows(&c, n, &so);
        /* A block's labels and sample ids, and its per-sample values (grow()). */
        row = 2 * sizeof(int64_t) + F_COUNT_ * o->common.ntau * sizeof(double);
        err = kdl__need_add(&nd, kdl_stream_cost_bytes(&c, n, &so), KDL_LEVER_BLOCK_ROWS,
                            "blocks of %zu rows", rows);
        err = err
                      ?: kdl__need_add(&nd, kdl_sat_mul(rows, row), KDL_LEVER_BLOCK_ROWS,
                                       "the labels and per-sample values of a block");
        if (!err)
                kdl__need_max(ret, &nd);
        kdl__need_release(&nd);
        return err;
}

int kdl__split_need(const kdl_inputs *in, const struct kdl_run_split_opts *o, kdl__need *ret)
{
        size_t c = kdl_h5_dump(in->teacher)->c, dt = widest_head(in->teacher), ds = 0, own;
        kdl__need jobs = {.analysis = ret->analysis};
        struct kdl_ckpair *cks = NULL;
        kdl_split_plan p;
        size_t ncks = 0;
        int err;

        for (size_t k = 0; k < in->nstudents; k++)
                ds = widest_head(in->students[k]) > ds ? widest_head(in->students[k]) : ds;
        own = kdl__split_own_bytes(c, dt, ds, o);
        /* A plan that does not fit is what --plan is for: its size, not its refusal. */
        err = kdl_run_split_plan(c, dt, ds, o, &p);
        if (err == -KDL_EBUDGET) {
                kdl_error_clear();
                err = 0;
        }
        for (size_t k = 0; k < in->nstudents && !err; k++) {
                err = kdl_select_checkpoints(in->students[k], in->teacher, o->common.checkpoint,
                                             o->common.teacher_checkpoint, &cks, &ncks);
                for (size_t q = 0; q < ncks && !err; q++)
                        err = job_need(in, o, k, &cks[q], &jobs);
                free(cks);
                cks = NULL;
        }
        err = err ?: kdl__need_append(ret, &jobs);
        err = err
                      ?: kdl__need_add(ret, p.bytes > own ? p.bytes - own : 0,
                                       p.domain == KDL_SPLIT_DOMAIN_OFF ? 0 : KDL_LEVER_DOMAIN,
                                       "the split states, domain level %s (C = %zu%s)",
                                       kdl_split_domain_name(p.domain), c,
                                       p.domain == KDL_SPLIT_DOMAIN_BLOCKED
                                               ? ", blocks of classes over more passes"
                                       : p.domain == KDL_SPLIT_DOMAIN_FULL && o->long_tables
                                               ? ", and its 3 C^2 table rows"
                                               : "");
        err = err
                      ?: kdl__need_add(ret, own,
                                       o->metric.domain == KDL_SPLIT_DOMAIN_OFF ? 0
                                                                                : KDL_LEVER_DOMAIN,
                                       "the head weights and a sample's scratch");
        kdl__need_release(&jobs);
        return err;
}

int kdl_run_split_memory_plan(kdl_inputs *in, const struct kdl_run_split_opts *o, kdl_doc *doc)
{
        kdl__need nd = {.analysis = "split"};
        int err;

        assert(in && o && doc);
        if (!in->teacher || in->nstudents == 0)
                return kdl_error(-KDL_EUSAGE, "split needs a teacher (-t) and a student (-s)");
        err = kdl_inputs_describe(in, doc);
        err = err ?: kdl__split_need(in, o, &nd);
        err = err ?: kdl__need_doc(&nd, 1, o->common.memory, KDL_SPLIT_LEVERS, doc);
        kdl__need_release(&nd);
        return err;
}

int kdl__split_begin(const kdl_inputs *in, const struct kdl_run_split_opts *o, kdl_doc *doc,
                     struct kdl__split_run **ret)
{
        struct kdl__split_run *r;
        int err = 0;

        assert(in && o && doc && ret && o->common.ntau <= KDL_RUN_MAX_TAUS);
        if (!in->teacher)
                return kdl_error(-KDL_EUSAGE, "a teacher dump is required (-t FILE)");
        if (in->nstudents == 0)
                return kdl_error(-KDL_EUSAGE, "a student dump is required (-s FILE)");
        if (o->hist_bins < 1 || o->metric.nbins % o->hist_bins != 0)
                return kdl_error(-KDL_EUSAGE, "%zu output bins do not divide %zu histogram bins",
                                 o->hist_bins, o->metric.nbins);
        if (kdl_h5_dump(in->teacher)->c < 2)
                return kdl_error(-KDL_ESCHEMA, "'%s': expected logits of at least 2 classes",
                                 kdl_h5_dump(in->teacher)->path);

        r = kdl_new(struct kdl__split_run, 1);
        if (!r)
                return kdl_error(-ENOMEM, "out of memory");
        r->in = in;
        r->o = *o;
        r->asked = o->metric.domain;
        r->doc = doc;
        err = run_plan(r);
        err = err ?: kdl__split_tables_new(r->t);
        err = err ?: kdl_inputs_describe(in, doc);
        if (!err && o->common.per_sample)
                err = kdl__per_sample_open(o->common.per_sample, "split", in, r->o.metric.taus,
                                           r->o.metric.ntaus, &r->ps);
        /* Under MPI rank 0 alone writes it, and its errors stop every rank. */
        err = kdl__dist_status(err);
        if (err < 0) {
                kdl__split_abort(r);
                return err;
        }
        *ret = r;
        return 0;
}

int kdl__split_job(struct kdl__split_run *r, size_t k, const struct kdl_ckpair *cp, kdl__job *ret)
{
        const kdl_inputs *in;

        assert(r && cp && cp->main && ret && k < r->in->nstudents);
        in = r->in;
        job_release(&r->job);
        if (!cp->partner)
                return kdl_error(-KDL_EMISSING, "'%s': no checkpoint",
                                 kdl_h5_dump(in->teacher)->path);
        r->job = (struct job){
                .in = in,
                .k = k,
                .o = &r->o,
                .cks = cp->main,
                .ckt = cp->partner,
                .student = kdl_h5_dump(in->students[k])->path,
                .teacher = kdl_h5_dump(in->teacher)->path,
                .c = kdl_h5_dump(in->teacher)->c,
                .t = r->t,
                .doc = r->doc,
                .ps = r->ps,
        };
        *ret = (kdl__job){.ctx = &r->job,
                          .attach = job_attach,
                          .block = job_block,
                          .end = job_end,
                          .combine = job_combine};
        return 0;
}

int kdl__split_end(struct kdl__split_run *r)
{
        int err;

        assert(r);
        job_release(&r->job);
        err = kdl__split_notes(&r->o, &r->plan, r->asked, kdl_h5_dump(r->in->teacher)->c, r->doc);
        if (err < 0)
                goto out;
        if (r->ps) {
                err = kdl__per_sample_commit(r->ps);
                r->ps = NULL;
                if (err < 0)
                        goto out;
        }
        err = kdl__split_tables_commit(r->t, r->doc);
out:
        kdl__split_abort(r);
        return err;
}

int kdl_run_split(kdl_inputs *in, const struct kdl_run_split_opts *o, kdl_doc *doc)
{
        struct kdl_stream_opts so;
        struct kdl__split_run *r = NULL;
        struct kdl_ckpair *cks = NULL;
        size_t ncks = 0;
        int err;

        assert(in && o && doc);
        so = (struct kdl_stream_opts){.block_rows = o->common.block_rows,
                                      .skip_nonfinite = o->common.skip_nonfinite};
        err = kdl__split_begin(in, o, doc, &r);
        if (err < 0)
                return err;
        for (size_t k = 0; k < in->nstudents; k++) {
                err = kdl_select_checkpoints(in->students[k], in->teacher, o->common.checkpoint,
                                             o->common.teacher_checkpoint, &cks, &ncks);
                if (err < 0)
                        goto out;
                for (size_t q = 0; q < ncks; q++) {
                        kdl_stream *s = NULL;
                        kdl__job job;

                        err = kdl__split_job(r, k, &cks[q], &job);
                        err = err ?: kdl_stream_new(in->pairs[k]->n, in->pairs[k], &so, &s);
                        err = err ?: kdl__jobs_run(s, &job, 1, NULL);
                        kdl_stream_free(s);
                        if (err < 0)
                                goto out;
                }
                free(cks);
                cks = NULL;
        }
        err = kdl__split_end(r);
        r = NULL;
out:
        kdl__split_abort(r);
        free(cks);
        return err;
}
