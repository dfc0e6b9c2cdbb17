/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_SPLIT_INTERNAL_H
#define KDL_ANALYSIS_SPLIT_INTERNAL_H

#include <stddef.h>

#include "analysis/inputs.h"
#include "analysis/dist.h"
#include "analysis/pass.h"
#include "analysis/split.h"
#include "analysis/need.h"
#include "reports/table.h"

/*
 * The split analysis of one student checkpoint as a kdl__job, so that the
 * report can run it with other analyses on one stream.  kdl_run_split() is
 *
 *      kdl__split_begin(in, o, doc, &r);
 *      for each student k, each selected checkpoint pair cp:
 *              kdl__split_job(r, k, &cp, &job);
 *              kdl_stream_new(in->pairs[k]->n, in->pairs[k], &so, &s);
 *              kdl__jobs_run(s, &job, 1, NULL);
 *              kdl_stream_free(s);
 *      kdl__split_end(r);              (kdl__split_abort(r) on error)
 *
 * The job takes two passes: pass 0 accumulates everything but w_n, pass 1
 * w_n (it needs the mean teacher confidence of pass 0) and the per-sample
 * values.  A domain level in blocks of classes feeds one block per pass, so
 * with more than two blocks the job asks for one more pass per block.
 */

/* One split document being filled: its tables, options, per-sample file. */
struct kdl__split_run;

/**
 * kdl__split_begin() - check the options, create the tables, describe the
 * inputs in @doc and open the per-sample file (as kdl_run_split() does).
 * @o:           copied.
 * @in, @doc:     borrowed, must outlive @ret.
 * @ret:          set on success only; kdl__split_end() or kdl__split_abort()
 *                frees it.
 * Return: 0; -KDL_EUSAGE without a teacher or a student or for bad
 * options; -KDL_ESCHEMA for fewer than 2 classes; errors of opening the
 * per-sample file; -ENOMEM.
 */
int kdl__split_begin(const kdl_inputs *in, const struct kdl_run_split_opts *o, kdl_doc *doc,
                     struct kdl__split_run **ret);

/**
 * kdl__split_job() - the job of student @k at checkpoint pair @cp
 * (cp->main: the student's checkpoint; cp->partner: the teacher's), for
 * kdl__jobs_run() on a stream over in->pairs[k] (n = in->pairs[k]->n).
 * The job's state belongs to @r: one job at a time per run (a new call
 * finishes with the previous one).  Its table rows and notes are written at
 * the end of its last pass (pass 1).
 * @cp:  borrowed, its checkpoints must outlive the job.
 * @ret: set on success only.
 * Return: 0; -KDL_EMISSING when @cp has no teacher checkpoint.  The job
 * itself fails with the errors of kdl_run_split().
 */
int kdl__split_job(struct kdl__split_run *r, size_t k, const struct kdl_ckpair *cp, kdl__job *ret);

/**
 * kdl__split_end() - every job has run: the notes and tables go into the
 * doc and the per-sample file is committed.  Frees @r whatever happens.
 * Return: 0; -ENOMEM; errors of committing the per-sample file.
 */
int kdl__split_end(struct kdl__split_run *r);

/** kdl__split_abort() - free @r after a failure (NULL: no-op); nothing is committed. */
void kdl__split_abort(struct kdl__split_run *r);

/*
 * The tables of a split document (analysis/split-tables.c): rows from the
 * results of each job, and the notes.
 */
#define KDL__SPLIT_NTABLES     12
#define KDL__SPLIT_T_POSITIONS 11 /* split_positions, the last */

/* kdl__split_tables_new() - the empty tables into @t[KDL__SPLIT_NTABLES]
 * (release them whatever it returns).  Return: 0; -ENOMEM. */
int kdl__split_tables_new(kdl_table **t);

/* kdl__split_tables_commit() - the tables with rows into @doc, in order; every
 * table leaves @t.  Return: 0; -ENOMEM. */
int kdl__split_tables_commit(kdl_table **t, kdl_doc *doc);

/* kdl__split_tables_release() - free the tables still in @t. */
void kdl__split_tables_release(kdl_table **t);

/* Who one job's rows are about, and the tables they go to. */
struct kdl__split_rows {
        kdl_table *const *t; /* [KDL__SPLIT_NTABLES] */
        const struct kdl_run_split_opts *o;
        const kdl_checkpoint *cks, *ckt; /* the student's and the teacher's */
        const char *student, *teacher;   /* paths */
        size_t c;                        /* classes */
};

/* kdl__split_emit() - every row of the results @r of one job (@skipped: the
 * samples dropped for NaN/Inf).  Return: 0; -ENOMEM. */
int kdl__split_emit(const struct kdl__split_rows *w, const kdl_split_result *r, size_t skipped);

/* kdl__split_put_keys() - a new row of @t with the keys of @w's job (student, checkpoint,
 * step, teacher checkpoint) and, @with_tau, @tau.  Return: 0; -ENOMEM. */
int kdl__split_put_keys(const struct kdl__split_rows *w, kdl_table *t, bool with_tau, double tau);

/* kdl__split_note_heads() - a note for each missing head weight. */
int kdl__split_note_heads(const struct kdl__split_rows *w, const kdl_split_result *r, kdl_doc *doc);

/* kdl__split_notes() - the notes of the document, whose domain level took
 * the plan @plan for @c classes when asked for the mode @asked. */
int kdl__split_notes(const struct kdl_run_split_opts *o, const kdl_split_plan *plan,
                     enum kdl_split_domain asked, size_t c, kdl_doc *doc);

/* The options of the split command that lower its need. */
#define KDL_SPLIT_LEVERS (KDL_LEVER_BLOCK_ROWS | KDL_LEVER_DOMAIN)

/* kdl__split_own_bytes() - what split holds besides the metric: the head weights (unless the
 * domain level is off) and one sample's scratch (analysis/split-need.c). */
size_t kdl__split_own_bytes(size_t c, size_t dt, size_t ds, const struct kdl_run_split_opts *o);

/* kdl__split_metric_opts() - the metric's options of a run: common's temperatures, the budget
 * left after @own bytes. */
kdl_split_opts kdl__split_metric_opts(size_t own, const struct kdl_run_split_opts *o);

/*
 * kdl__split_need() - what kdl_run_split() holds at its peak, from the shapes alone, into
 * @ret: the stream and block buffers of its largest job (the checkpoints run one at a time),
 * the split states of the domain level it would choose, the head weights.
 * Return: 0; the errors of finding the checkpoints; -ENOMEM.
 */
int kdl__split_need(const kdl_inputs *in, const struct kdl_run_split_opts *o, kdl__need *ret);

/*
 * Per position (analysis/split-positions.c, docs/split.md#per-position): with /positions
 * in the teacher (else the student), the sums of KL, TCKD, NCKD and (1 - p^t_y) NCKD of
 * the tokens at each position 0 .. KDL__SPLIT_MAX_POSITIONS - 1, per temperature; state
 * O(largest position seen x temperatures).  Tokens at other positions are counted only.
 */
#define KDL__SPLIT_MAX_POSITIONS 8192

struct kdl__split_pos;

/* kdl__split_pos_new() - empty sums of @ntaus temperatures into *@ret (free with
 * kdl__split_pos_free()).  Return: 0; -ENOMEM. */
int kdl__split_pos_new(size_t ntaus, struct kdl__split_pos **ret);
void kdl__split_pos_free(struct kdl__split_pos *p);

/* kdl__split_pos_attach() - the positions of student @k's pair added to @s for @job, their
 * index into *@ret_idx and new sums into *@ret; *@ret NULL when neither dump has
 * /positions.  Return: 0; the codes of kdl__job_add(); -ENOMEM. */
int kdl__split_pos_attach(kdl__job *job, kdl_stream *s, const kdl_inputs *in, size_t k,
                          size_t ntaus, struct kdl__split_pos **ret, int *ret_idx);

/* kdl__split_pos_add() - the values @v of one token at temperature @k (its count with
 * k = 0) to its @position.  Return: 0; -ENOMEM. */
int kdl__split_pos_add(struct kdl__split_pos *p, double position, size_t k,
                       const kdl_split_sample *v);

/* kdl__split_pos_emit() - a "split_positions" row per temperature and position with
 * tokens, and a note on the tokens left out.  Return: 0; -ENOMEM. */
int kdl__split_pos_emit(const struct kdl__split_pos *p, const struct kdl__split_rows *w,
                        kdl_doc *doc);

/* Under MPI (analysis/dist.h): the sums of every rank into rank 0's. */
extern const struct kdl__dist_ops kdl__split_pos_ops;

#endif
