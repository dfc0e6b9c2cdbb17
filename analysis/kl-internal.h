/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_KL_INTERNAL_H
#define KDL_ANALYSIS_KL_INTERNAL_H

#include "analysis/kl.h"
#include "analysis/pass.h"
#include "metrics/kl.h"

/*
 * kdlens kl as jobs (analysis/pass.h), so that the report runs it on the
 * stream it shares with the other analyses:
 *
 *      kdl__kl_begin(in, &o, doc, &r);
 *      for each student k and checkpoint pair cp:
 *              kdl__kl_job(r, k, &cp, &job);   then kdl__jobs_run() on a stream over in->pairs[k]
 *      kdl__kl_end(r);
 */

struct kdl__kl_run; /* one kl document being filled: its tables, options, per-sample file */

/* kdl__kl_begin() - check the inputs, create the tables, describe the inputs in @doc and
 * open the per-sample file.  @o is copied; @in and @doc must outlive the run.  Return: 0;
 * -KDL_EUSAGE without a teacher and a student; errors of the file. */
int kdl__kl_begin(const kdl_inputs *in, const struct kdl_run_kl_opts *o, kdl_doc *doc,
                  struct kdl__kl_run **ret);

/* kdl__kl_job() - the job of student @k at checkpoint pair @cp (cp->main the student's,
 * cp->partner the teacher's; both must outlive the job): one pass, or two when the
 * head-input widths differ (the projector is fitted first).  Its rows and notes are
 * written at the end of its last pass.  The job belongs to @r: one at a time.
 * Return: 0; errors of reading the head; -ENOMEM. */
int kdl__kl_job(struct kdl__kl_run *r, size_t k, const struct kdl_ckpair *cp, kdl__job *ret);

/* kdl__kl_run_checkpoint() - kdl__kl_job() run alone, as the kl command runs it: when the
 * projector is fitted (and samples are not skipped for NaN/Inf), the fit is a pass of its
 * own over the two head-input features only, then one pass measures.
 * @ret_values: NULL, or the values read from the files (kdl_stream_values_read()).
 * Return: as kdl__kl_job() and kdl__jobs_run(). */
int kdl__kl_run_checkpoint(struct kdl__kl_run *r, size_t k, const struct kdl_ckpair *cp,
                           uint64_t *ret_values);

/* kdl__kl_end() - every job has run: notes and tables into the doc, the per-sample file
 * committed; frees @r whatever happens. */
int kdl__kl_end(struct kdl__kl_run *r);

/* kdl__kl_abort() - free @r after a failure (NULL: no-op); nothing is committed. */
void kdl__kl_abort(struct kdl__kl_run *r);

/* What the rows of one comparison say about it (analysis/kl-tables.c). */
struct kdl__kl_rows {
        const kdl_checkpoint *cs, *ct; /* the student's and the teacher's */
        const kdl_layer *lt, *ls;      /* head-input layers; NULL when missing */
        size_t c, d_t;                 /* classes; width of the teacher's head input */
        char *const *need; /* [KDL_KL_VALUE_COUNT_] missing datasets per value; NULL: there */
};

/* kdl__kl_fill_tables() - the @kt rows ("kl": one per temperature of @tau[@ntau]
 * and value) and the @ft row ("kl_features") of @student's comparison @x with
 * results @r.  Return: 0; -ENOMEM. */
int kdl__kl_fill_tables(kdl_table *kt, kdl_table *ft, const struct kdl__kl_rows *x,
                        const char *student, size_t ntau, const double *tau,
                        const kdl_kl_result *r);

#endif
