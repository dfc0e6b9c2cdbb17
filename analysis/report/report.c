/* SPDX-License-Identifier: MIT */
/* kdlens report: compute every analysis (one stream per student checkpoint
 * shared by all), then write the sections (section-*.c) into a site put in
 * place atomically. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "kdl-config.h"
#include "metrics/base/alloc.h"
#include "metrics/base/outfile.h"
#include "analysis/cka-internal.h"
#include "analysis/dims-internal.h"
#include "analysis/dist.h"
#include "analysis/inspect.h"
#include "analysis/kl-internal.h"
#include "analysis/layers.h"
#include "analysis/pass.h"
#include "analysis/split-internal.h"
#include "analysis/summary-internal.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

const char *kdl_report_example_dir(void)
{
        const char *env = getenv("KDL_EXAMPLE_DIR");

        return env && *env ? env : KDL_EXAMPLE_DIR;
}

void kdl__report_progress(struct kdl__report *r, const char *what)
{
        if (r->o->progress)
                r->o->progress(r->o->ctx, r->done, r->total, what);
        r->done++;
}

/* A student's display name: its model attribute, else the file name without .h5. */
static char *display_name(const kdl_dump *d)
{
        const char *base;
        char *s;
        size_t n;

        if (d->model && *d->model)
                return kdl__strdup(d->model);
        base = strrchr(d->path, '/');
        base = base ? base + 1 : d->path;
        s = kdl__strdup(base);
        if (s && (n = strlen(s)) > 3 && strcmp(s + n - 3, ".h5") == 0)
                s[n - 3] = '\0';
        return s;
}

/* The longest prefix ending in '_', '-' or '.' that every name has (none for one student). */
static size_t common_prefix(char *const *names, size_t n)
{
        size_t best = 0;

        if (n < 2)
                return 0;
        for (size_t i = 0; names[0][i]; i++) {
                for (size_t k = 1; k < n; k++)
                        if (names[k][i] != names[0][i] || !names[k][i + 1])
                                return best;
                if (strchr("_-.", names[0][i]))
                        best = i + 1;
        }
        return best;
}

/* ---- computing: one stream per checkpoint for every analysis ---------------------- */

/* The begun analyses of the report. */
struct runs {
        struct kdl__kl_run *kl;
        struct kdl__split_run *split;
        struct kdl__dims_run *dims;
        struct kdl__summary_run *summary;
        struct kdl_run_cka_opts cka; /* each student checkpoint begins a CKA run with these */
        size_t shared;               /* CKA passes shared by several checkpoints */
        kdl_table *passes;
};

/* A job that reads nothing and counts the blocks of the first pass. */
static int count_block(kdl__job *j, kdl_stream *s, unsigned pass)
{
        (void) s;
        *(size_t *) j->ctx += pass == 0;
        return 0;
}

/* Under MPI: the blocks of every rank summed (each reads whole blocks of one process's,
 * kdl_stream_part(), so the sum is one process's count). */
static int count_combine(kdl__job *j, kdl_stream *s, unsigned pass)
{
        double blocks = (double) *(size_t *) j->ctx;
        int err;

        (void) s;
        (void) pass;
        err = kdl__dist_sum(&blocks, 1);
        *(size_t *) j->ctx = (size_t) blocks;
        return err;
}

static int attach_nothing(kdl__job *j, kdl_stream *s)
{
        (void) j;
        (void) s;
        return 0;
}

/* The most jobs run_jobs() runs on one stream (kl, split, dims, cka, summary). */
#define MAX_JOBS 5

/* Run @jobs on one stream over student @k's pair (or the teacher alone when @k is
 * SIZE_MAX), read in the report's blocks and NaN/Inf policy, and add a row to the passes
 * table. */
static int run_jobs(struct kdl__report *r, struct runs *rs, size_t k, const char *checkpoint,
                    const kdl__job *jobs, size_t n)
{
        const kdl_pair *pair = k == SIZE_MAX ? NULL : r->in->pairs[k];
        size_t rows = pair ? pair->n : kdl_h5_dump(r->in->teacher)->n, blocks = 0;
        struct kdl_stream_opts so = kdl_run_stream_opts(&r->o->common);
        kdl__job all[MAX_JOBS + 1];
        kdl_stream *s = NULL;
        unsigned passes = 0;
        double read[2] = {0}; /* samples skipped, values read: summed over the ranks */
        int err;

        assert(n <= MAX_JOBS);
        memcpy(all, jobs, n * sizeof(*jobs));
        all[n] = (kdl__job){.ctx = &blocks,
                            .attach = attach_nothing,
                            .block = count_block,
                            .combine = count_combine};
        err = kdl_stream_new(rows, pair, &so, &s);
        err = err ?: kdl__jobs_run(s, all, n + 1, &passes);
        if (!err) {
                read[0] = (double) kdl_stream_skipped(s);
                read[1] = (double) kdl_stream_values_read(s);
        }
        err = kdl__dist_status(err) ?: kdl__dist_sum(read, 2);
        if (!err && (err = kdl_table_add_row(rs->passes)) > 0)
                err = 0; /* the row's index */
        err = err
                      ?: kdl_table_put_str(rs->passes, "model",
                                           k == SIZE_MAX ? r->o->teacher : r->o->students[k]);
        err = err ?: kdl_table_put_str(rs->passes, "checkpoint", checkpoint);
        err = err ?: kdl_table_put_int(rs->passes, "analyses", (long long) n);
        err = err ?: kdl_table_put_int(rs->passes, "datasets", (long long) kdl_stream_count(s));
        err = err ?: kdl_table_put_int(rs->passes, "passes", (long long) passes);
        err = err ?: kdl_table_put_int(rs->passes, "blocks", (long long) blocks);
        err = err ?: kdl_table_put_int(rs->passes, "skipped", (long long) read[0]);
        err = err ?: kdl_table_put_int(rs->passes, "values_read", (long long) read[1]);
        kdl_stream_free(s);
        return err;
}

kdl_inputs kdl__report_one(const struct kdl__report *r, size_t k)
{
        return (kdl_inputs){.teacher = r->in->teacher,
                            .nstudents = 1,
                            .students = &r->in->students[k],
                            .pairs = &r->in->pairs[k],
                            .opts = r->in->opts};
}

/* Student @k: kl, split, dims and summary of each selected checkpoint on the checkpoint's
 * stream, with the CKA of it (and of the later checkpoints sharing its pass); then the CKA
 * documents in order. */
static int student_checkpoints(struct kdl__report *r, struct runs *rs, size_t k)
{
        struct kdl__report_cka sc;
        int err = kdl__report_cka_begin(r, &rs->cka, k, r->share[k], &sc);

        for (size_t c = 0; c < sc.n && !err; c++) {
                const struct kdl_ckpair *cp = &r->sel[k][c];
                char *what =
                        kdl__asprintf("%s at %s", kdl__report_short_name(r, k), cp->main->name);
                struct kdl__cka_shared *sh = NULL;
                kdl__job jobs[MAX_JOBS];
                size_t n = 3;

                if (!what) {
                        err = -ENOMEM;
                        break;
                }
                kdl__report_progress(r, what);
                free(what);
                err = kdl__kl_job(rs->kl, k, cp, &jobs[0]);
                err = err ?: kdl__split_job(rs->split, k, cp, &jobs[1]);
                err = err ?: kdl__dims_job(rs->dims, k, cp, &jobs[2]);
                /* cka's job, unless an earlier checkpoint's shared pass did it */
                err = err ?: kdl__report_cka_job(&sc, c, &sh, &jobs[3]);
                rs->shared += sh != NULL;
                n += err > 0;
                err = err < 0 ? err : kdl__summary_job(rs->summary, k, cp, &jobs[n++]);
                err = err ?: run_jobs(r, rs, k, cp->main->name, jobs, n);
                kdl__cka_shared_free(sh);
        }
        for (size_t c = 0; c < sc.n && !err; c++) {
                err = kdl__cka_end(sc.runs[c]);
                sc.runs[c] = NULL;
                if (!err) {
                        r->cka[r->ncka++] = sc.docs[c];
                        sc.docs[c] = NULL;
                }
        }
        kdl__report_cka_release(&sc);
        return err;
}

/* End the begun analyses (their documents complete) and note how the dumps were read. */
static int end_runs(struct kdl__report *r, struct runs *rs)
{
        int err;

        err = kdl__kl_end(rs->kl);
        rs->kl = NULL;
        if (!err) {
                err = kdl__split_end(rs->split);
                rs->split = NULL;
        }
        if (!err) {
                err = kdl__dims_end(rs->dims);
                rs->dims = NULL;
        }
        if (!err) {
                err = kdl__summary_end(rs->summary);
                rs->summary = NULL;
        }
        err = err
                      ?: kdl_doc_add_note(
                                 r->passes,
                                 "each student checkpoint is read on one stream shared "
                                 "by kl, split, dims, cka and summary: a dataset two analyses "
                                 "need is read once per pass, and a later pass reads "
                                 "only what the analyses still running need");
        if (!err && rs->shared)
                err = kdl_doc_add_note(r->passes,
                                       "the cka of a student's checkpoints compared with one "
                                       "teacher checkpoint is one pass on the stream of the first "
                                       "of them (analyses counts it there): the teacher's layers "
                                       "are read, and their products formed, once for all, and "
                                       "the later checkpoints' layers are read there too");
        if (!err && r->o->common.skip_nonfinite)
                err = kdl_doc_add_note(r->passes,
                                       "--nonfinite skip: a sample with NaN/Inf in any dataset "
                                       "read on a checkpoint's stream is dropped from every "
                                       "analysis of that checkpoint (column skipped), so that "
                                       "all sections describe the same samples; a command run "
                                       "alone drops only those of the datasets it reads");
        if (!err) {
                err = kdl_doc_add_table(r->passes, rs->passes);
                rs->passes = NULL;
        }
        return err;
}

/* The begun analyses' jobs: the teacher's own dimensions, one pass per checkpoint; then
 * each student checkpoint against the trained teacher, all analyses on one stream. */
static int stream_checkpoints(struct kdl__report *r, struct runs *rs)
{
        const kdl_dump *td = kdl_h5_dump(r->in->teacher);
        int err = 0;

        kdl__report_progress(r, "teacher: dimensions");
        for (size_t c = 0; c < td->ncheckpoints && !err; c++) {
                const kdl_checkpoint *ck = &td->checkpoints[c];
                size_t k = SIZE_MAX; /* the summary's stream: the teacher's own */
                kdl__job jobs[2];
                int n;

                err = kdl__dims_teacher_job(rs->dims, ck, &jobs[0]);
                n = err ?: kdl__report_summary_teacher_job(r, rs->summary, ck, &jobs[1], &k);
                err = n < 0 ? n
                            : run_jobs(r, rs, SIZE_MAX, ck->name, jobs, k == SIZE_MAX ? 1 + n : 1);
                if (!err && n && k != SIZE_MAX)
                        err = run_jobs(r, rs, k, ck->name, &jobs[1], 1);
        }
        for (size_t k = 0; k < r->in->nstudents && !err; k++)
                err = student_checkpoints(r, rs, k);
        return err ?: end_runs(r, rs);
}

/* The empty documents of every analysis, the CKA ones to come, and the passes table. */
static int docs_new(struct kdl__report *r, struct runs *rs)
{
        size_t ncka = 0;
        int err;

        for (size_t k = 0; k < r->in->nstudents; k++)
                ncka += r->nsel[k];
        r->cka = kdl_new(kdl_doc *, ncka ? ncka : 1);
        if (!r->cka)
                return -ENOMEM;
        err = kdl_doc_new("inspect", &r->inspect);
        err = err ?: kdl_doc_new("kl", &r->kl);
        err = err ?: kdl_doc_new("split", &r->split);
        err = err ?: kdl_doc_new("dims", &r->dims);
        err = err ?: kdl_doc_new("layers", &r->layers);
        err = err ?: kdl_doc_new("summary", &r->summary);
        err = err ?: kdl_doc_new("passes", &r->passes);
        err = err ?: kdl_table_new("passes", "How the dumps were read", &rs->passes);
        return err;
}

size_t kdl_layers_default_k(const kdl_h5file *teacher, const char *checkpoint)
{
        const kdl_dump *td = kdl_h5_dump(teacher);
        const kdl_checkpoint *ck = checkpoint ? kdl_h5_checkpoint(teacher, checkpoint) : NULL;
        size_t half;

        if (!ck && td->ncheckpoints == 0)
                return 1;
        ck = ck ? ck : &td->checkpoints[td->ncheckpoints - 1];
        half = (ck->nlayers + 1) / 2;
        return half < 1 ? 1 : half > 4 ? 4 : half;
}

/* The teacher checkpoint whose layers the report ranks: the one the first student's last
 * checkpoint analysed is compared with. */
static const char *layers_checkpoint(const struct kdl__report *r)
{
        const kdl_checkpoint *ck = kdl__report_last_pair(r, 0)->partner;

        return ck ? ck->name : NULL;
}

/*
 * Every analysis of the report, each with its options filled here and nowhere else, all
 * from the report's common options: inspect and layers run whole; kl, split and dims begin
 * here and take one job per selected checkpoint on the shared streams; CKA begins once per
 * student checkpoint with rs.cka.
 */
void kdl__report_opts(const struct kdl__report *r, struct kdl__report_opts *a)
{
        kdl_run_kl_opts_init(&a->kl);
        a->kl.common = r->o->common;
        a->kl.seed = 0; /* the report has always drawn its Spearman subsample with seed 0 */
        kdl_run_split_opts_init(&a->split);
        a->split.common = r->o->common;
        if (r->split_memory)
                a->split.common.memory = r->split_memory;
        a->split.long_tables = true;
        kdl_run_dims_opts_init(&a->dims);
        a->dims.common = r->o->common;
        kdl_run_cka_opts_init(&a->cka);
        a->cka.common = r->o->common;
        a->cka.measures = r->o->measures; /* the last checkpoint's (kdl__report_cka_begin()) */
        a->cka.svcca_keep = r->o->svcca_keep;
        kdl_run_layers_opts_init(&a->layers);
        a->layers.common = r->o->common;
        a->layers.common.checkpoint = layers_checkpoint(r);
        a->layers.common.teacher_checkpoint = NULL;
        a->layers.k = r->o->k ? r->o->k
                              : kdl_layers_default_k(r->in->teacher, a->layers.common.checkpoint);
        kdl_run_summary_opts_init(&a->summary);
        a->summary.common = r->o->common;
        a->summary.ngroups = r->o->ngroups;
        memcpy(a->summary.groups, r->o->groups, sizeof(a->summary.groups));
}

static int compute(struct kdl__report *r)
{
        struct kdl_run_inspect_opts io = {
                .scan_values = false, .join = r->o->inputs.join, .memory = r->o->common.memory};
        struct kdl__report_opts a;
        kdl_inputs teacher_only = *r->in;
        struct runs rs = {0};
        size_t nprob = 0;
        int err;

        kdl__report_opts(r, &a);
        rs.cka = a.cka;
        r->k = a.layers.k;
        teacher_only.nstudents = 0;
        err = docs_new(r, &rs);
        if (!err)
                kdl__report_progress(r, "inputs");
        err = err ?: kdl_run_inspect(r->inputs, r->in->nstudents + 1, &io, r->inspect, &nprob);
        err = err ?: kdl__kl_begin(r->in, &a.kl, r->kl, &rs.kl);
        /* Under MPI: every rank's errors before each collective step (kdl__dist_status()). */
        err = kdl__dist_status(err) ?: kdl__split_begin(r->in, &a.split, r->split, &rs.split);
        err = err ?: kdl__dims_begin(r->in, &a.dims, r->dims, &rs.dims);
        err = err ?: kdl__summary_begin(r->in, &a.summary, r->summary, &rs.summary);
        err = kdl__dist_status(err) ?: stream_checkpoints(r, &rs);
        err = kdl__dist_status(err);
        if (!err)
                kdl__report_progress(r, "layers: teacher layer quality");
        err = err ?: kdl_run_layers(&teacher_only, &a.layers, r->layers);
        err = err ?: kdl__report_topk_compute(r);
        kdl__kl_abort(rs.kl);
        kdl__split_abort(rs.split);
        kdl__dims_abort(rs.dims);
        kdl__summary_abort(rs.summary);
        kdl_table_free(rs.passes);
        return err;
}

/* ---- the run ----------------------------------------------------------------------- */

void kdl_run_report_opts_init(struct kdl_run_report_opts *o)
{
        struct kdl_run_cka_opts cka;

        kdl_run_cka_opts_init(&cka);
        *o = (struct kdl_run_report_opts){.measures = cka.measures, .svcca_keep = cka.svcca_keep};
        kdl_run_common_init(&o->common);
        o->common.checkpoint = "all";
}

/* What the options ask that the report cannot do, before any work; a plan needs no
 * directory. */
static int check_opts(const struct kdl_run_report_opts *o, bool plan)
{
        if (o->common.ntau != 1)
                return kdl_error(-KDL_EUSAGE,
                                 "-T: expected one temperature for the report, found %zu",
                                 o->common.ntau);
        if (o->common.per_sample)
                return kdl_error(-KDL_EUSAGE, "--per-sample: report has no per-sample values");
        if (!o->teacher || o->nstudents == 0 || (!o->out_dir && !plan))
                return kdl_error(-KDL_EUSAGE, "expected a teacher, at least one student and a "
                                              "directory");
        return kdl_summary_groups_check(o->groups, o->ngroups, o->students, o->nstudents);
}

/* Open the inputs, select each student's checkpoints and name the students; @r->total
 * counts the stages to come.  A directory that is an input or holds one is refused first. */
static int run_open(struct kdl__report *r, const struct kdl_run_report_opts *o)
{
        const char *tc = o->common.teacher_checkpoint;
        int err;

        /* inputs, the teacher, layers, the kl, split, dims and cka figures, the index; + the
         * student checkpoints */
        r->total = 8;
        r->inputs = kdl_new(const char *, o->nstudents + 1);
        if (!r->inputs)
                return -ENOMEM;
        r->inputs[0] = o->teacher;
        for (size_t k = 0; k < o->nstudents; k++)
                r->inputs[k + 1] = o->students[k];
        err = o->out_dir ? kdl_out_check(o->out_dir, KDL_OUT_DIR, r->inputs, o->nstudents + 1) : 0;
        err = err
                      ?: kdl_inputs_open_with(o->teacher, o->students, o->nstudents, &o->inputs,
                                              &r->in);
        if (err < 0)
                return err;
        r->names = kdl_new(char *, o->nstudents);
        r->sel = kdl_new(struct kdl_ckpair *, o->nstudents);
        r->nsel = kdl_new(size_t, o->nstudents);
        r->share = kdl_new(bool, o->nstudents);
        if (tc && strcmp(tc, "same") != 0)
                r->partner_text = kdl__asprintf("the teacher's checkpoint %s", tc);
        if (!r->names || !r->sel || !r->nsel || !r->share ||
            (tc && strcmp(tc, "same") != 0 && !r->partner_text))
                return -ENOMEM;
        for (size_t k = 0; k < o->nstudents; k++) {
                err = kdl_select_checkpoints(r->in->students[k], r->in->teacher,
                                             o->common.checkpoint, tc, &r->sel[k], &r->nsel[k]);
                if (err < 0)
                        return err;
                r->names[k] = display_name(kdl_h5_dump(r->in->students[k]));
                if (!r->names[k])
                        return -ENOMEM;
                r->total += r->nsel[k];
        }
        r->prefix = common_prefix(r->names, o->nstudents);
        return kdl__report_topk_init(r);
}

/* Free what run_open() and compute() made; the site is committed or aborted already. */
static void run_release(struct kdl__report *r)
{
        kdl_doc_free(r->topk);
        kdl_doc_free(r->passes);
        kdl_doc_free(r->summary);
        kdl_doc_free(r->layers);
        kdl_doc_free(r->dims);
        kdl_doc_free(r->split);
        kdl_doc_free(r->kl);
        kdl_doc_free(r->inspect);
        for (size_t i = 0; i < r->ncka; i++)
                kdl_doc_free(r->cka[i]);
        free(r->cka);
        for (size_t k = 0; k < r->o->nstudents; k++) {
                if (r->names)
                        free(r->names[k]);
                if (r->sel)
                        free(r->sel[k]);
        }
        free(r->names);
        free(r->sel);
        free(r->nsel);
        free(r->share);
        free(r->partner_text);
        free(r->inputs);
        kdl_inputs_free(r->in);
}

int kdl_run_report_plan(const struct kdl_run_report_opts *o, kdl_doc *doc)
{
        struct kdl__report r = {.o = o, .tau = o->common.tau[0]};
        kdl__need nd = {.analysis = "report"};
        int err;

        err = check_opts(o, true);
        err = err ?: run_open(&r, o);
        err = err ?: kdl_inputs_describe(r.in, doc);
        err = err ?: kdl__report_need(&r, &nd);
        err = err ?: kdl__need_doc(&nd, 1, o->common.memory, KDL__REPORT_LEVERS, doc);
        err = err ?: kdl_doc_add_note(doc, "%s", kdl__report_need_note);
        kdl__need_release(&nd);
        run_release(&r);
        return err;
}

/* Before anything is computed or written: what the report needs at its peak. */
static int check_need(struct kdl__report *r)
{
        kdl__need nd = {.analysis = "report"};
        int err;

        err = kdl__report_need(r, &nd);
        err = err ?: kdl__need_check(&nd, r->o->common.memory, KDL__REPORT_LEVERS);
        kdl__need_release(&nd);
        return err;
}

int kdl_run_report(const struct kdl_run_report_opts *o)
{
        struct kdl__report r = {.o = o, .tau = o->common.tau[0]};
        int err;

        err = check_opts(o, false);
        err = err ?: run_open(&r, o);
        err = err ?: check_need(&r);
        /* Under MPI rank 0 alone makes, writes and renames the directory (docs/mpi.md). */
        if (!err && kdl__dist_rank() == 0)
                err = kdl_site_open(o->out_dir, o->force ? KDL_SITE_FORCE : 0, &r.site);
        err = kdl__dist_status(err) ?: compute(&r);
        if (!err && kdl__dist_rank() > 0)
                goto out;
        err = err ?: kdl__report_section_summary(&r);
        err = err ?: kdl__report_section_inspect(&r);
        err = err ?: kdl__report_section_kl(&r);
        err = err ?: kdl__report_section_topk(&r);
        err = err ?: kdl__report_section_split(&r);
        err = err ?: kdl__report_section_positions(&r);
        err = err ?: kdl__report_section_dims(&r);
        err = err ?: kdl__report_section_layers(&r);
        err = err ?: kdl__report_section_cka(&r);
        err = err ?: kdl__report_section_measures(&r);
        err = err ?: kdl__report_section_passes(&r);
        if (!err) {
                kdl__report_progress(&r, "index");
                err = kdl_site_commit(r.site, o->command, r.inputs, o->nstudents + 1);
                r.site = NULL;
        }
out:
        kdl_site_abort(r.site);
        run_release(&r);
        return err;
}
