/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_KL_INTERNAL_H
#define KDL_ANALYSIS_KL_INTERNAL_H

#include "analysis/kl.h"
#include "analysis/need.h"
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

/* What kl --topk asks for beside kl's own job: the @nk values @k (borrowed). */
struct kdl__kl_topk_ask {
        const size_t *k;
        size_t nk;
};

/* kdl__kl_begin() - check the inputs, create the tables, describe the inputs in @doc and
 * open the per-sample file.  @o is copied; @in and @doc must outlive the run.  Return: 0;
 * -KDL_EUSAGE without a teacher and a student; errors of the file. */
int kdl__kl_begin(const kdl_inputs *in, const struct kdl_run_kl_opts *o, kdl_doc *doc,
                  struct kdl__kl_run **ret);

/* kdl__kl_begin_topk() - kdl__kl_begin() for kl --topk: its budget check counts @topk's job
 * too. */
int kdl__kl_begin_topk(const kdl_inputs *in, const struct kdl_run_kl_opts *o,
                       const struct kdl__kl_topk_ask *topk, kdl_doc *doc, struct kdl__kl_run **ret);

/* kdl__kl_job() - the job of student @k at checkpoint pair @cp (cp->main the student's,
 * cp->partner the teacher's; both must outlive the job): one pass, or two when the
 * head-input widths differ (the projector is fitted first).  Its rows and notes are
 * written at the end of its last pass.  The job belongs to @r: one at a time.
 * Return: 0; errors of reading the head; -ENOMEM. */
int kdl__kl_job(struct kdl__kl_run *r, size_t k, const struct kdl_ckpair *cp, kdl__job *ret);

/* The most jobs kdl__kl_run_checkpoint() runs beside kl's own. */
#define KDL__KL_MORE_JOBS 3

/* kdl__kl_run_checkpoint() - student @k at @cp as the kl command runs it: when the projector
 * is fitted (and samples are not skipped for NaN/Inf), the fit is a pass of its own over the
 * two head-input features only; then one stream runs kl's measuring job and the @nmore jobs
 * @more (copied; for kl --topk), so the logits are read once.  Return: 0; the jobs' errors. */
int kdl__kl_run_checkpoint(struct kdl__kl_run *r, size_t k, const struct kdl_ckpair *cp,
                           const kdl__job *more, size_t nmore);

/* kdl__kl_end() - every job has run: notes and tables into the doc, the per-sample file
 * committed; frees @r whatever happens. */
int kdl__kl_end(struct kdl__kl_run *r);

/* kdl__kl_abort() - free @r after a failure (NULL: no-op); nothing is committed. */
void kdl__kl_abort(struct kdl__kl_run *r);

/* What one comparison (a student checkpoint against a teacher checkpoint) reads. */
struct kdl__kl_sources {
        kdl_h5file *tf, *sf;
        const kdl_checkpoint *ct, *cs;
        const kdl_layer *lt, *ls;    /* head-input layers; NULL when missing */
        bool feat;                   /* both head-input layers are there */
        const kdl_dsinfo *wt;        /* teacher head weight; NULL when missing or unused */
        const kdl_dsinfo *gt;        /* teacher feature gradient at the head input */
        const kdl_dsinfo *gzt, *gzs; /* logit gradients; both or neither */
        size_t c, d_s, d_t;
        char *need[KDL_KL_VALUE_COUNT_]; /* missing datasets per value; NULL when available */
};

/* kdl__kl_find_sources() - the sources of the comparison @x->cs against @x->ct (the files and
 * checkpoints of @x set, the rest zero): the logits, the head-input layers, W_t and the
 * gradients, their shapes checked, and per value what is missing (x->need).  Release @x with
 * kdl__kl_sources_release() whatever it returns.  Return: 0; -KDL_EMISSING without logits;
 * -KDL_EMISMATCH, -KDL_ESCHEMA for shapes that disagree; -ENOMEM. */
int kdl__kl_find_sources(struct kdl__kl_sources *x, enum kdl_spatial rule);

/* kdl__kl_sources_release() - free what kdl__kl_find_sources() allocated in @x. */
void kdl__kl_sources_release(struct kdl__kl_sources *x);

/* The options of the kl command that lower its need. */
#define KDL_KL_LEVERS (KDL_LEVER_BLOCK_ROWS | KDL_LEVER_SPEARMAN | KDL_LEVER_TOPK)

/* kdl__kl_need() - into @ret, the largest need of kl's jobs on @in with @o (one per student
 * and checkpoint pair, one at a time): the job at its peak and its stream, and with @topk
 * (NULL: none) the top-k job's state on the same stream (kdl_kl_topk_bytes()).  Reads nothing
 * but the shapes.  Return: 0; the errors of finding the sources (as the run); -ENOMEM. */
int kdl__kl_need(const kdl_inputs *in, const struct kdl_run_kl_opts *o,
                 const struct kdl__kl_topk_ask *topk, kdl__need *ret);

/* kdl__kl_plan() - the plan document of kl (with --topk's job when @topk is not NULL) into
 * @doc.  Return: 0; -KDL_EUSAGE without a teacher and a student; as kdl__kl_need(). */
int kdl__kl_plan(const kdl_inputs *in, const struct kdl_run_kl_opts *o,
                 const struct kdl__kl_topk_ask *topk, kdl_doc *doc);

/* kdl__kl_job_cost() - the datasets kdl__kl_job() of student @k at @cp reads, into the cost
 * @c of a stream over in->pairs[k] (the report's, shared).  Return: as kdl__kl_need(). */
int kdl__kl_job_cost(const kdl_inputs *in, const struct kdl_run_kl_opts *o, size_t k,
                     const struct kdl_ckpair *cp, struct kdl_stream_cost *c);

/* kdl__kl_job_need() - keep in @ret the larger of @ret and what that job holds besides its
 * stream, read in blocks of @rows rows.  Return: as kdl__kl_need(). */
int kdl__kl_job_need(const kdl_inputs *in, const struct kdl_run_kl_opts *o, size_t k,
                     const struct kdl_ckpair *cp, size_t rows, kdl__need *ret);

/* The shapes of one kl job, for its need (analysis/kl-need.c). */
struct kdl__kl_shape {
        size_t n;                     /* samples */
        size_t c, d_s, d_t;           /* classes, head-input widths */
        size_t ntau, reservoir, rows; /* temperatures, Spearman cap, block rows */
        bool feat, head, fitted;      /* features, W_t, a fitted projector */
        size_t stream_bytes;          /* kdl_stream_cost_bytes() of its datasets; 0: a shared
                                         stream the caller counts */
        size_t ndatasets;
};

/* kdl__kl_shape_need() - keep in @ret the larger of @ret and the need of the job @sh: its
 * stream, and the larger of the projector fit and the measuring pass.  Return: 0; -ENOMEM. */
int kdl__kl_shape_need(const struct kdl__kl_shape *sh, kdl__need *ret);

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
