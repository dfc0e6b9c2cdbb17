/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/budget.h"
#include "metrics/calibration.h"
#include "loaders/stream.h"
#include "analysis/dist.h"
#include "analysis/kl-internal.h"
#include "analysis/need.h"
#include "analysis/summary-internal.h"
#include "metrics/base/banned.h"

void kdl_run_summary_opts_init(struct kdl_run_summary_opts *o)
{
        assert(o);
        memset(o, 0, sizeof(*o));
        kdl_run_common_init(&o->common);
        o->bins = KDL_CALIBRATION_BINS_DEFAULT;
}

/* ---- what one job reads ------------------------------------------------------------ */

/* The datasets of one job, in stream order, and the stream they are read from. */
enum { DS_LOGITS, DS_LABELS, DS_TEACHER, DS_COUNT_ };

struct sources {
        size_t k;                       /* the student; SIZE_MAX for the teacher's own rows */
        const kdl_checkpoint *ck, *ckt; /* the model's checkpoint; the teacher's (students) */
        size_t nds;                     /* DS_TEACHER + 1 for a student, DS_LABELS + 1 else */
        kdl_h5file *f[DS_COUNT_];
        const kdl_dsinfo *ds[DS_COUNT_];
        bool student[DS_COUNT_]; /* read through the pair's student rows */
        const kdl_pair *pair;    /* NULL: the teacher's rows alone */
        size_t n, c;             /* samples, classes */
};

/* The labels @ds of @f, read through the student rows of the stream's pair when @student. */
static void set_labels(struct sources *x, kdl_h5file *f, const kdl_dsinfo *ds, bool student)
{
        x->f[DS_LABELS] = f;
        x->ds[DS_LABELS] = ds;
        x->student[DS_LABELS] = student;
}

/* The teacher at @ck: its logits and the labels (its own, else the first student's). */
static int teacher_sources(const kdl_inputs *in, const kdl_checkpoint *ck, struct sources *x)
{
        const kdl_dump *dt = kdl_h5_dump(in->teacher);

        *x = (struct sources){.k = SIZE_MAX, .ck = ck, .nds = DS_LABELS + 1, .n = dt->n};
        if (!ck->logits || ck->logits->ndim != 2)
                return kdl_error(-KDL_EMISSING, "'%s': %s/logits: expected [N, C], found none",
                                 dt->path, ck->group);
        x->f[DS_LOGITS] = in->teacher;
        x->ds[DS_LOGITS] = ck->logits;
        x->c = ck->logits->shape[1];
        if (dt->labels) {
                set_labels(x, in->teacher, dt->labels, false);
                return 0;
        }
        /* Without its own labels, the first student's, on the samples of that pair. */
        for (size_t k = 0; k < in->nstudents; k++) {
                const kdl_dump *ds = kdl_h5_dump(in->students[k]);

                if (!ds->labels)
                        continue;
                set_labels(x, in->students[k], ds->labels, true);
                x->pair = in->pairs[k];
                x->n = x->pair->n;
                return 0;
        }
        return kdl_error(-KDL_EMISSING,
                         "'%s': /labels: expected integer class labels [N] in the teacher or a "
                         "student, found none",
                         dt->path);
}

/* Student @k at @cp: both logits and the labels (the teacher's, else the student's). */
static int student_sources(const kdl_inputs *in, size_t k, const struct kdl_ckpair *cp,
                           struct sources *x)
{
        const kdl_dump *dt = kdl_h5_dump(in->teacher), *ds = kdl_h5_dump(in->students[k]);
        const kdl_dsinfo *zt = cp->partner->logits, *zs = cp->main->logits;

        *x = (struct sources){.k = k,
                              .ck = cp->main,
                              .ckt = cp->partner,
                              .nds = DS_TEACHER + 1,
                              .pair = in->pairs[k],
                              .n = in->pairs[k]->n};
        if (!zt || !zs)
                return kdl_error(-KDL_EMISSING, "'%s': %s/logits: expected [N, C], found none",
                                 zt ? ds->path : dt->path,
                                 zt ? cp->main->group : cp->partner->group);
        x->c = zt->ndim == 2 ? zt->shape[1] : 0;
        if (zs->ndim != 2 || zs->shape[1] != x->c)
                return kdl_error(-KDL_EMISMATCH,
                                 "'%s': %s: expected %zu classes as the teacher, found %zu",
                                 ds->path, zs->path, x->c, zs->ndim == 2 ? zs->shape[1] : 0);
        x->f[DS_LOGITS] = in->students[k];
        x->ds[DS_LOGITS] = zs;
        x->student[DS_LOGITS] = true;
        x->f[DS_TEACHER] = in->teacher;
        x->ds[DS_TEACHER] = zt;
        if (!dt->labels && !ds->labels)
                return kdl_error(-KDL_EMISSING,
                                 "'%s': /labels: expected integer class labels [N] in the teacher "
                                 "or the student ('%s'), found none",
                                 dt->path, ds->path);
        if (dt->labels)
                set_labels(x, in->teacher, dt->labels, false);
        else
                set_labels(x, in->students[k], ds->labels, true);
        return 0;
}

static kdl_calibration_opts metric_opts(const struct kdl_run_summary_opts *o, size_t c,
                                        bool teacher)
{
        kdl_calibration_opts m;

        kdl_calibration_opts_init(&m);
        m.c = c;
        m.bins = o->bins;
        m.teacher = teacher;
        m.tau = o->common.tau[0];
        return m;
}

/* ---- the job ----------------------------------------------------------------------- */

struct kdl__summary_run {
        const kdl_inputs *in;
        struct kdl_run_summary_opts o;
        kdl_doc *doc;
        struct kdl__summary_tables tb;
        struct summary_job *job; /* the current one */
};

struct summary_job {
        struct kdl__summary_run *r;
        struct sources x;
        int ix[DS_COUNT_]; /* stream indices */
        kdl_calibration_state *s;
        int64_t *y; /* the labels of a block */
        size_t cap;
        size_t skipped; /* samples with NaN/Inf: this rank's, or every rank's (job_combine()) */
};

static void job_free(struct summary_job *j)
{
        if (!j)
                return;
        kdl_calibration_state_free(j->s);
        free(j->y);
        free(j);
}

static int job_attach(kdl__job *job, kdl_stream *st)
{
        struct summary_job *j = job->ctx;
        const struct sources *x = &j->x;
        kdl_calibration_opts mo = metric_opts(&j->r->o, x->c, x->nds > DS_TEACHER);

        for (size_t i = 0; i < x->nds; i++) {
                /* Labels are 1-D: one column whatever the rule; logits are 2-D. */
                j->ix[i] = kdl__job_add(job, st, x->f[i], x->ds[i], KDL_SPATIAL_FLATTEN,
                                        x->student[i]);
                if (j->ix[i] < 0)
                        return j->ix[i];
        }
        return kdl_calibration_state_new(&mo, &j->s);
}

static int job_block(kdl__job *job, kdl_stream *st, unsigned pass)
{
        struct summary_job *j = job->ctx;
        size_t m = kdl_stream_rows(st);
        kdl_tensor z, zt, lab;
        kdl_calibration_block b = {.samples = kdl_stream_samples(st), .z = &z};

        (void) pass;
        if (m == 0)
                return 0;
        if (m > j->cap) {
                int64_t *y = kdl_new(int64_t, m);

                if (!y)
                        return -ENOMEM;
                free(j->y);
                j->y = y;
                j->cap = m;
        }
        lab = kdl_stream_block(st, j->ix[DS_LABELS]);
        for (size_t i = 0; i < m; i++)
                j->y[i] = (int64_t) KDL_AT2(&lab, i, 0);
        b.labels = j->y;
        z = kdl_stream_block(st, j->ix[DS_LOGITS]);
        if (j->x.nds > DS_TEACHER) {
                zt = kdl_stream_block(st, j->ix[DS_TEACHER]);
                b.zt = &zt;
        }
        return kdl_calibration_accumulate(j->s, &b);
}

static int job_end(kdl__job *job, kdl_stream *st, unsigned pass)
{
        struct summary_job *j = job->ctx;
        struct kdl__summary_run *r = j->r;
        const struct sources *x = &j->x;
        kdl_h5file *mf = x->f[DS_LOGITS];
        const char *path = kdl_h5_dump(mf)->path;
        kdl_calibration_result *res = NULL;
        struct kdl__summary_row row = {.k = x->k, .ck = x->ck, .ckt = x->ckt};
        int err;

        (void) pass;
        /* Under MPI the merged state is rank 0's (job_combine()); another rank's
         * own rows may be none at all, and it writes nothing. */
        if (kdl__dist_rank() > 0)
                return 0;
        if (kdl__dist_size() == 1) /* else summed over the ranks by job_combine() */
                j->skipped = kdl_stream_skipped(st);
        if (kdl_calibration_count(j->s) == 0)
                return kdl_error(-KDL_EMISSING,
                                 "'%s': %s: expected samples with finite values, found none", path,
                                 x->ds[DS_LOGITS]->path);
        err = kdl_calibration_finalize(j->s, &res);
        err = err ?: kdl__summary_put_row(&r->tb, r->in, &r->o, &row, res);
        if (!err && j->skipped)
                err = kdl_doc_add_note(r->doc,
                                       "'%s' checkpoint %s: %zu samples with NaN/Inf skipped", path,
                                       x->ck->name, j->skipped);
        if (!err && x->k == SIZE_MAX && x->pair)
                err = kdl_doc_add_note(r->doc,
                                       "'%s' has no /labels: its rows use those of '%s', on the "
                                       "%zu samples it shares with that student",
                                       path, kdl_h5_dump(x->f[DS_LABELS])->path, x->n);
        kdl_calibration_result_free(res);
        return err;
}

static int calibration_pack(const void *s, void **buf, size_t *len)
{
        return kdl_calibration_state_pack(s, buf, len);
}

static int calibration_merge_packed(void *s, const void *buf, size_t len)
{
        return kdl_calibration_state_merge_packed(s, buf, len);
}

/* Under MPI: the sums and the count of samples skipped to rank 0, which
 * merges them in rank order (its partial sums, so the last digits may differ
 * from one process's, docs/mpi.md). */
static int job_combine(kdl__job *job, kdl_stream *st, unsigned pass)
{
        static const struct kdl__dist_ops ops = {calibration_pack, calibration_merge_packed, NULL};
        struct summary_job *j = job->ctx;
        double skipped = (double) kdl_stream_skipped(st);
        int err;

        (void) pass;
        err = kdl__dist_sum(&skipped, 1);
        j->skipped = (size_t) skipped;
        return err ?: kdl__dist_combine(j->s, &ops);
}

/* A job of @r reading @x. */
static int job_new(struct kdl__summary_run *r, const struct sources *x, kdl__job *ret)
{
        struct summary_job *j;

        job_free(r->job);
        r->job = j = kdl_new(struct summary_job, 1);
        if (!j)
                return -ENOMEM;
        j->r = r;
        j->x = *x;
        *ret = (kdl__job){.ctx = j,
                          .attach = job_attach,
                          .block = job_block,
                          .end = job_end,
                          .combine = job_combine};
        return 0;
}

int kdl__summary_teacher_job(struct kdl__summary_run *r, const kdl_checkpoint *ck, kdl__job *ret,
                             size_t *ret_n, const kdl_pair **ret_pair)
{
        struct sources x;
        int err = teacher_sources(r->in, ck, &x);

        err = err ?: job_new(r, &x, ret);
        if (err < 0)
                return err;
        *ret_n = x.n;
        *ret_pair = x.pair;
        return 0;
}

int kdl__summary_job(struct kdl__summary_run *r, size_t k, const struct kdl_ckpair *cp,
                     kdl__job *ret)
{
        struct sources x;
        int err;

        assert(cp->partner && k < r->in->nstudents);
        err = student_sources(r->in, k, cp, &x);
        return err ?: job_new(r, &x, ret);
}

/* ---- the checkpoints --------------------------------------------------------------- */

/* Each student's checkpoint pairs; free with selection_free(). */
struct selection {
        size_t nstudents;
        struct kdl_ckpair **cp;
        size_t *n;
        bool *teacher; /* [teacher checkpoints]: a student checkpoint is compared with it */
};

static void selection_free(struct selection *s)
{
        for (size_t k = 0; s->cp && k < s->nstudents; k++)
                free(s->cp[k]);
        free(s->cp);
        free(s->n);
        free(s->teacher);
}

static int select_all(const kdl_inputs *in, const struct kdl_run_common *c, struct selection *s)
{
        const kdl_dump *dt = kdl_h5_dump(in->teacher);
        int err = 0;

        *s = (struct selection){.nstudents = in->nstudents};
        s->cp = kdl_new(struct kdl_ckpair *, in->nstudents);
        s->n = kdl_new(size_t, in->nstudents);
        s->teacher = kdl_new(bool, dt->ncheckpoints ? dt->ncheckpoints : 1);
        if (!s->cp || !s->n || !s->teacher)
                return -ENOMEM;
        for (size_t k = 0; k < in->nstudents && !err; k++) {
                err = kdl_select_checkpoints(in->students[k], in->teacher, c->checkpoint,
                                             c->teacher_checkpoint, &s->cp[k], &s->n[k]);
                for (size_t i = 0; !err && i < s->n[k]; i++)
                        s->teacher[s->cp[k][i].partner - dt->checkpoints] = true;
        }
        return err;
}

/* ---- what summary needs ------------------------------------------------------------ */

/* The datasets of a job reading @x, into the cost @sc of its stream. */
static void job_cost(const struct sources *x, struct kdl_stream_cost *sc)
{
        for (size_t i = 0; i < x->nds; i++)
                kdl_stream_cost_add(sc, x->ds[i], KDL_SPATIAL_FLATTEN, x->student[i]);
}

/* What a job reading @x with @o holds besides its stream, in blocks of @rows rows: the labels
 * of a block, its sums, the KL state's; added to @nd. */
static int job_state_need(const struct sources *x, const struct kdl_run_summary_opts *o,
                          size_t rows, kdl__need *nd)
{
        bool teacher = x->nds > DS_TEACHER;
        kdl_calibration_opts mo = metric_opts(o, x->c, teacher);
        kdl__need kn = {.analysis = nd->analysis};
        int err;

        err = kdl__need_add(nd, kdl_sat_mul(rows, sizeof(int64_t)), KDL_LEVER_BLOCK_ROWS,
                            "the labels of a block of %zu rows", rows);
        err = err
                      ?: kdl__need_add(nd, kdl_calibration_state_bytes(&mo), 0,
                                       "the sums of %zu classes x %zu bins", x->c, o->bins);
        if (teacher) {
                struct kdl__kl_shape sh = {
                        .n = x->n, .c = x->c, .ntau = 1, .reservoir = 1, .rows = rows};

                /* kl's own account of its state, as one part. */
                err = err ?: kdl__kl_shape_need(&sh, &kn);
                err = err
                              ?: kdl__need_add(nd, kdl__need_total(&kn), KDL_LEVER_BLOCK_ROWS,
                                               "the KL state of blocks of %zu rows", rows);
        }
        kdl__need_release(&kn);
        return err;
}

/* The need of a job reading @x with @o: its stream, its sums, the KL state's. */
static int job_need(const struct sources *x, const struct kdl_run_summary_opts *o, kdl__need *ret)
{
        struct kdl_stream_opts so = kdl_run_stream_opts(&o->common);
        kdl__need nd = {.analysis = ret->analysis};
        struct kdl_stream_cost sc;
        size_t rows;
        int err;

        kdl_stream_cost_init(&sc, x->pair);
        job_cost(x, &sc);
        rows = kdl_stream_cost_rows(&sc, x->n, &so);
        err = kdl__need_add(&nd, kdl_stream_cost_bytes(&sc, x->n, &so), KDL_LEVER_BLOCK_ROWS,
                            "blocks of %zu rows of %zu datasets", rows, x->nds);
        err = err ?: job_state_need(x, o, rows, &nd);
        if (!err)
                kdl__need_max(ret, &nd);
        kdl__need_release(&nd);
        return err;
}

int kdl__summary_job_cost(const kdl_inputs *in, const struct kdl_run_summary_opts *o, size_t k,
                          const struct kdl_ckpair *cp, struct kdl_stream_cost *c)
{
        struct sources x;
        int err = student_sources(in, k, cp, &x);

        (void) o;
        if (!err)
                job_cost(&x, c);
        return err;
}

int kdl__summary_job_need(const kdl_inputs *in, const struct kdl_run_summary_opts *o, size_t k,
                          const struct kdl_ckpair *cp, size_t rows, kdl__need *ret)
{
        kdl__need nd = {.analysis = ret->analysis};
        struct sources x;
        int err = student_sources(in, k, cp, &x);

        err = err ?: job_state_need(&x, o, rows, &nd);
        if (!err)
                kdl__need_max(ret, &nd);
        kdl__need_release(&nd);
        return err;
}

int kdl__summary_teacher_need(const kdl_inputs *in, const struct kdl_run_summary_opts *o,
                              const kdl_checkpoint *ck, kdl__need *ret)
{
        struct sources x;
        int err = teacher_sources(in, ck, &x);

        return err ?: job_need(&x, o, ret);
}

/* The largest need of summary's jobs on @in with @o (one at a time). */
static int summary_need(const kdl_inputs *in, const struct kdl_run_summary_opts *o, kdl__need *ret)
{
        const kdl_dump *dt = kdl_h5_dump(in->teacher);
        struct selection sel;
        struct sources x;
        int err = select_all(in, &o->common, &sel);

        for (size_t q = 0; !err && q < dt->ncheckpoints; q++) {
                if (!sel.teacher[q])
                        continue;
                err = teacher_sources(in, &dt->checkpoints[q], &x);
                err = err ?: job_need(&x, o, ret);
        }
        for (size_t k = 0; !err && k < in->nstudents; k++)
                for (size_t i = 0; !err && i < sel.n[k]; i++) {
                        err = student_sources(in, k, &sel.cp[k][i], &x);
                        err = err ?: job_need(&x, o, ret);
                }
        selection_free(&sel);
        return err;
}

/* ---- the run ----------------------------------------------------------------------- */

static int check_opts(const kdl_inputs *in, const struct kdl_run_summary_opts *o)
{
        const char **students;
        int err;

        if (!in->teacher || in->nstudents == 0)
                return kdl_error(-KDL_EUSAGE, "summary needs a teacher (-t) and a student (-s)");
        if (o->common.ntau != 1)
                return kdl_error(-KDL_EUSAGE, "-T: summary takes one temperature, found %zu",
                                 o->common.ntau);
        if (o->bins == 0)
                return kdl_error(-KDL_EUSAGE, "--bins: expected at least 1 bin");
        students = kdl_new(const char *, in->nstudents);
        if (!students)
                return -ENOMEM;
        for (size_t k = 0; k < in->nstudents; k++)
                students[k] = kdl_h5_dump(in->students[k])->path;
        err = kdl_summary_groups_check(o->groups, o->ngroups, students, in->nstudents);
        free(students);
        return err;
}

int kdl__summary_begin(const kdl_inputs *in, const struct kdl_run_summary_opts *o, kdl_doc *doc,
                       struct kdl__summary_run **ret)
{
        kdl__need nd = {.analysis = "summary"};
        struct kdl__summary_run *r;
        int err;

        assert(in && o && doc && ret);
        err = check_opts(in, o);
        err = err ?: summary_need(in, o, &nd);
        err = err ?: kdl__need_check(&nd, o->common.memory, KDL_LEVER_BLOCK_ROWS);
        kdl__need_release(&nd);
        if (err < 0)
                return err;
        r = kdl_new(struct kdl__summary_run, 1);
        if (!r)
                return -ENOMEM;
        r->in = in;
        r->o = *o;
        r->doc = doc;
        err = kdl__summary_tables_init(&r->tb, in, o);
        err = err ?: kdl_inputs_describe(in, doc);
        if (err < 0) {
                kdl__summary_abort(r);
                return err;
        }
        *ret = r;
        return 0;
}

void kdl__summary_abort(struct kdl__summary_run *r)
{
        if (!r)
                return;
        job_free(r->job);
        kdl__summary_tables_release(&r->tb);
        free(r);
}

int kdl__summary_end(struct kdl__summary_run *r)
{
        int err;

        job_free(r->job);
        r->job = NULL;
        err = kdl__summary_tables_commit(&r->tb, r->in, &r->o, r->doc);
        kdl__summary_abort(r);
        return err;
}

/* Run @job alone on a stream of @n samples over @pair. */
static int run_job(const struct kdl_run_summary_opts *o, size_t n, const kdl_pair *pair,
                   kdl__job *job)
{
        struct kdl_stream_opts so = kdl_run_stream_opts(&o->common);
        kdl_stream *st = NULL;
        int err;

        err = kdl_stream_new(n, pair, &so, &st);
        err = err ?: kdl__jobs_run(st, job, 1, NULL);
        kdl_stream_free(st);
        return err;
}

int kdl_run_summary(const kdl_inputs *in, const struct kdl_run_summary_opts *o, kdl_doc *doc)
{
        struct kdl__summary_run *r = NULL;
        struct selection sel = {0};
        const kdl_dump *dt;
        int err;

        err = kdl__summary_begin(in, o, doc, &r);
        if (err < 0)
                return err;
        dt = kdl_h5_dump(in->teacher);
        err = select_all(in, &o->common, &sel);
        /* The teacher's rows first, in step order. */
        for (size_t q = 0; !err && q < dt->ncheckpoints; q++) {
                const kdl_pair *pair = NULL;
                size_t n = 0;
                kdl__job job;

                if (!sel.teacher[q])
                        continue;
                err = kdl__summary_teacher_job(r, &dt->checkpoints[q], &job, &n, &pair);
                err = err ?: run_job(o, n, pair, &job);
        }
        for (size_t k = 0; !err && k < in->nstudents; k++)
                for (size_t i = 0; !err && i < sel.n[k]; i++) {
                        kdl__job job;

                        err = kdl__summary_job(r, k, &sel.cp[k][i], &job);
                        err = err ?: run_job(o, in->pairs[k]->n, in->pairs[k], &job);
                }
        selection_free(&sel);
        if (err < 0) {
                kdl__summary_abort(r);
                return err;
        }
        return kdl__summary_end(r);
}

int kdl_run_summary_plan(const kdl_inputs *in, const struct kdl_run_summary_opts *o, kdl_doc *doc)
{
        kdl__need nd = {.analysis = "summary"};
        int err;

        assert(in && o && doc);
        err = check_opts(in, o);
        err = err ?: kdl_inputs_describe(in, doc);
        err = err ?: summary_need(in, o, &nd);
        err = err ?: kdl__need_doc(&nd, 1, o->common.memory, KDL_LEVER_BLOCK_ROWS, doc);
        kdl__need_release(&nd);
        return err;
}
