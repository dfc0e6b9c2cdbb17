/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_SUMMARY_INTERNAL_H
#define KDL_ANALYSIS_SUMMARY_INTERNAL_H

#include "metrics/calibration.h"
#include "analysis/need.h"
#include "analysis/pass.h"
#include "analysis/summary.h"

/*
 * kdlens summary as jobs (analysis/pass.h), so that the report can run it on
 * the streams it shares with the other analyses:
 *
 *      kdl__summary_begin(in, &o, doc, &r);
 *      for each teacher checkpoint ck a student checkpoint is compared with:
 *              kdl__summary_teacher_job(r, ck, &job, &n, &pair);
 *              then kdl__jobs_run() on a stream of n samples over pair (NULL: the teacher alone)
 *      for each student k and checkpoint pair cp:
 *              kdl__summary_job(r, k, &cp, &job);   then kdl__jobs_run() on a stream over
 *                                                    in->pairs[k]
 *      kdl__summary_end(r);
 *
 * Every job takes one pass and writes its row at the end of it.  A job
 * belongs to @r: one at a time.
 */

struct kdl__summary_run;

/* kdl__summary_begin() - check the options and inputs (groups included), the need against
 * o->common.memory, create the tables and describe the inputs in @doc.  @o is copied (the
 * group strings are borrowed); @in and @doc must outlive the run.  Return: the codes of
 * kdl_run_summary() before anything is read. */
int kdl__summary_begin(const kdl_inputs *in, const struct kdl_run_summary_opts *o, kdl_doc *doc,
                       struct kdl__summary_run **ret);

/* kdl__summary_teacher_job() - the job of the teacher at its checkpoint @ck (must outlive the
 * job), and the stream it needs: *@ret_n samples over *@ret_pair (NULL: the teacher's own rows;
 * a pair when the teacher has no labels and a student's are used).  Return: 0; -KDL_EMISSING
 * without logits or any labels; -ENOMEM. */
int kdl__summary_teacher_job(struct kdl__summary_run *r, const kdl_checkpoint *ck, kdl__job *ret,
                             size_t *ret_n, const kdl_pair **ret_pair);

/* kdl__summary_job() - the job of student @k at checkpoint pair @cp (cp->main the student's,
 * cp->partner the teacher's; both must outlive the job), on a stream over in->pairs[k].
 * Return: 0; -KDL_EMISSING without logits or labels; -KDL_EMISMATCH when the class counts
 * differ; -ENOMEM. */
int kdl__summary_job(struct kdl__summary_run *r, size_t k, const struct kdl_ckpair *cp,
                     kdl__job *ret);

/* kdl__summary_end() - every job has run: the group rows, the notes and the tables into the
 * doc; frees @r whatever happens. */
int kdl__summary_end(struct kdl__summary_run *r);

/* kdl__summary_abort() - free @r after a failure (NULL: no-op). */
void kdl__summary_abort(struct kdl__summary_run *r);

/* ---- what a job needs, for the report's need (the report shares its streams) ---- */

/* kdl__summary_job_cost() - the datasets kdl__summary_job() of student @k at @cp reads, into
 * the cost @c of a stream over in->pairs[k].  Return: 0; the errors of kdl__summary_job(). */
int kdl__summary_job_cost(const kdl_inputs *in, const struct kdl_run_summary_opts *o, size_t k,
                          const struct kdl_ckpair *cp, struct kdl_stream_cost *c);

/* kdl__summary_job_need() - keep in @ret the larger of @ret and what that job holds besides
 * its stream, read in blocks of @rows rows.  Return: as kdl__summary_job_cost(); -ENOMEM. */
int kdl__summary_job_need(const kdl_inputs *in, const struct kdl_run_summary_opts *o, size_t k,
                          const struct kdl_ckpair *cp, size_t rows, kdl__need *ret);

/* kdl__summary_teacher_need() - keep in @ret the larger of @ret and the need of the teacher's
 * job at @ck, its stream included.  Return: the errors of kdl__summary_teacher_job(). */
int kdl__summary_teacher_need(const kdl_inputs *in, const struct kdl_run_summary_opts *o,
                              const kdl_checkpoint *ck, kdl__need *ret);

/* ---- the tables (analysis/summary-tables.c) ---- */

/* A group of repeats: the students that are runs of one configuration. */
struct kdl__summary_group {
        char *name;
        size_t n;
        size_t *runs; /* [n] indices of students */
};

/* A student row's values, kept for the groups. */
struct kdl__summary_value;

struct kdl__summary_tables {
        kdl_table *t; /* "summary" */
        size_t ngroups;
        struct kdl__summary_group *groups;
        size_t nvals, cap;
        struct kdl__summary_value *vals;
};

/* What a row is of: student @k (SIZE_MAX: the teacher) at @ck, compared with the teacher at
 * @ckt (students only). */
struct kdl__summary_row {
        size_t k;
        const kdl_checkpoint *ck, *ckt;
};

/* kdl__summary_tables_init() - the table "summary" and @o's groups resolved against @in's
 * students.  Return: 0; -KDL_EUSAGE for a bad group; -ENOMEM. */
int kdl__summary_tables_init(struct kdl__summary_tables *tb, const kdl_inputs *in,
                             const struct kdl_run_summary_opts *o);

/* kdl__summary_put_row() - the row of @w with the results @res (of the calibration metric).
 * Return: 0; -ENOMEM. */
int kdl__summary_put_row(struct kdl__summary_tables *tb, const kdl_inputs *in,
                         const struct kdl_run_summary_opts *o, const struct kdl__summary_row *w,
                         const kdl_calibration_result *res);

/* kdl__summary_tables_commit() - the notes, and the tables "summary" and (with groups)
 * "summary_groups" into @doc.  Return: 0; -ENOMEM. */
int kdl__summary_tables_commit(struct kdl__summary_tables *tb, const kdl_inputs *in,
                               const struct kdl_run_summary_opts *o, kdl_doc *doc);

/* kdl__summary_tables_release() - free what @tb holds (after a commit: what is left). */
void kdl__summary_tables_release(struct kdl__summary_tables *tb);

#endif
