/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_DIMS_INTERNAL_H
#define KDL_ANALYSIS_DIMS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "analysis/dims.h"
#include "analysis/inputs.h"
#include "analysis/need.h"
#include "analysis/pass.h"
#include "loaders/h5.h"
#include "metrics/spectral.h"
#include "reports/table.h"

/*
 * The dims analysis as jobs (analysis/pass.h), so that the report runs it on
 * the same stream as the other analyses of a student checkpoint.  A job
 * analyses one model at one checkpoint in one pass: the spectral state of its
 * centred logits (with the per-sample support rank of W^T F W when it has a
 * head) and of every selected layer (each fitting the teacher's centred
 * logits when there is a teacher checkpoint) take the same blocks.  Memory:
 * the sum of those states, independent of N.
 *
 *      kdl__dims_begin(in, &o, doc, &r);
 *      kdl__dims_teacher_job(r, tck, &job);   (a stream over the teacher)
 *      ... kdl__jobs_run(s, &job, 1, NULL) ...
 *      kdl__dims_job(r, k, &cp, &job);        (a stream over in->pairs[k])
 *      ... kdl__jobs_run(s, &job, 1, NULL) ...
 *      kdl__dims_end(r);
 *
 * With --nonfinite skip a sample the stream drops (NaN/Inf in any dataset it
 * reads) is missing from every state of the job, and the job adds one note.
 */

struct kdl__dims_run; /* one dims document being filled: its tables and options */

/**
 * kdl__dims_begin() - check the options, create the tables, describe the
 * inputs in @doc (as kdl_run_dims() does).
 * @in, @o, @doc: borrowed, must outlive @ret.
 * @ret:          free with kdl__dims_end() or kdl__dims_abort().
 * Return: 0; -KDL_EUSAGE for bad options, no inputs or a --layer no input
 * has; -ENOMEM.
 */
int kdl__dims_begin(const kdl_inputs *in, const struct kdl_run_dims_opts *o, kdl_doc *doc,
                    struct kdl__dims_run **ret);

/**
 * kdl__dims_teacher_job() - the job of the teacher's checkpoint @tck alone
 * (stream over the teacher: pair NULL, n = the teacher's N).  Its
 * centred-logit result is kept in @r for the students' verdicts and curves;
 * a student job whose partner teacher checkpoint has not been analysed is an
 * error (-KDL_EUSAGE, "internal: teacher checkpoint X first"), so the caller
 * runs teacher jobs first.  The job's state belongs to @r (one job at a time:
 * a new call finishes with the previous one).
 * Return: 0; -KDL_EUSAGE when @tck was analysed already; -KDL_ESCHEMA for
 * logits or a head weight of the wrong shape; HDF5 errors; -ENOMEM.
 */
int kdl__dims_teacher_job(struct kdl__dims_run *r, const kdl_checkpoint *tck, kdl__job *ret);

/**
 * kdl__dims_job() - the job of student @k at checkpoint pair @cp (cp->main:
 * the student's checkpoint; cp->partner: the teacher's, NULL without a
 * teacher), for kdl__jobs_run() on a stream over in->pairs[k] (n =
 * in->pairs[k]->n), or, without a teacher, over the student alone (pair
 * NULL, n = the student's N).  Its rows (dims, spectrum, heads, verdict) and
 * notes are written at the end of its pass.  The job's state belongs to @r.
 * Return: as kdl__dims_teacher_job(); -KDL_EUSAGE when cp->partner has not
 * been analysed by a teacher job of @r.
 */
int kdl__dims_job(struct kdl__dims_run *r, size_t k, const struct kdl_ckpair *cp, kdl__job *ret);

/**
 * kdl__dims_end() - every job has run: the residual curves, the notes and
 * the tables go into the doc.  Frees @r whatever happens.
 * Return: 0; -KDL_EUSAGE when --layer names a layer that no analysed
 * checkpoint has; -ENOMEM.
 */
int kdl__dims_end(struct kdl__dims_run *r);

/** kdl__dims_abort() - free @r after a failure (NULL: no-op); nothing more goes into the doc. */
void kdl__dims_abort(struct kdl__dims_run *r);

/* kdl__dims_teacher_checkpoints() - the teacher's checkpoints @o selects, into *@ret (caller
 * frees; none when only the students have the checkpoint asked for).
 * Return: 0; the errors of kdl_select_checkpoints(). */
int kdl__dims_teacher_checkpoints(const kdl_inputs *in, const struct kdl_run_dims_opts *o,
                                  struct kdl_ckpair **ret, size_t *ret_n);

/* The options of the dims command that lower its need. */
#define KDL_DIMS_LEVERS (KDL_LEVER_BLOCK_ROWS | KDL_LEVER_LAYER | KDL_LEVER_SKETCH_RANK)

/*
 * kdl__dims_job_need() - keep in @ret the larger of @ret and the need of the job of
 * checkpoint @ck of @f over @n samples (@tck: the teacher's it fits, or NULL), read through
 * @pair (NULL: @f alone), from the shapes alone: the stream's blocks, every selected layer's state,
 * the centred logits' state by the method it would use, or the head weight and its SVD before the
 * pass when that is more. Return: 0; -KDL_ESCHEMA for logits that are not [N, C >= 2]; -ENOMEM.
 */
int kdl__dims_job_need(struct kdl__dims_run *r, kdl_h5file *f, const kdl_checkpoint *ck,
                       const kdl_checkpoint *tck, size_t n, const kdl_pair *pair, kdl__need *ret);

/*
 * kdl__dims_need() - the need of the whole run @r into @ret (an empty need): the largest
 * of its jobs' (kdl__dims_job_need()), which run one at a time.  --plan shows it; the run
 * checks it before its first job reads anything (a head weight or a block).
 * Return: as kdl__dims_job_need(); an error of kdl_select_checkpoints().
 */
int kdl__dims_need(struct kdl__dims_run *r, const kdl_inputs *in, const struct kdl_run_dims_opts *o,
                   kdl__need *ret);

/*
 * The tables of a dims document (analysis/dims-tables.c): rows from the
 * spectral results, column labels and notes, for dims.c's jobs and run.
 */
struct kdl__dims_tables {
        kdl_table *dims, *heads, *verdict, *curve, *spec;
        kdl_table *bneck; /* softmax_bottleneck (analysis/dims-bottleneck.c) */
};

/* kdl__dims_tables_new() - the empty tables, columns labelled (release them
 * whatever it returns).  Return: 0; -ENOMEM. */
int kdl__dims_tables_new(struct kdl__dims_tables *t);

/* kdl__dims_tables_commit() - the tables with rows into @doc, in order; every
 * table leaves @t.  Return: 0; -ENOMEM. */
int kdl__dims_tables_commit(struct kdl__dims_tables *t, kdl_doc *doc);

/* kdl__dims_tables_release() - free the tables still in @t. */
void kdl__dims_tables_release(struct kdl__dims_tables *t);

/* kdl__dims_model_name() - the model's name, else its path. */
const char *kdl__dims_model_name(const kdl_dump *d);

/* kdl__dims_put_model() - a new row of @t starting with model, role, checkpoint, step. */
int kdl__dims_put_model(kdl_table *t, const kdl_dump *d, const kdl_checkpoint *ck);

/* kdl__dims_row() - a "dims" row of @layer (NULL: the centred logits) of @d at
 * @ck; @tres, the teacher's centred-logit result or NULL, gives its residual. */
int kdl__dims_row(kdl_table *t, const kdl_dump *d, const kdl_checkpoint *ck, const kdl_layer *layer,
                  const kdl_spectral_result *r, const kdl_spectral_result *tres);

/* kdl__dims_put_method() - the method of @r (not exact features) into the last row of @t:
 * spectrum_method and, for a sketch, its rank, columns, bound and top upper bound. */
int kdl__dims_put_method(kdl_table *t, const kdl_spectral_result *r);

/* kdl__dims_spectrum_rows() - a "spectrum" row per eigenvalue of @r (r->neig of them;
 * from a sketch with the upper ends eigenvalue_hi, explained_hi). */
int kdl__dims_spectrum_rows(kdl_table *t, const kdl_dump *d, const kdl_checkpoint *ck,
                            const char *layer, const kdl_spectral_result *r);

/* A student checkpoint judged against its teacher checkpoint. */
struct kdl__dims_verdict {
        const kdl_checkpoint *tck;       /* the teacher's checkpoint */
        const kdl_spectral_result *tres; /* its centred logits */
        size_t d_s;                      /* the student's width */
        const char *d_s_from;            /* where the width was found */
        const char *r2_layer;            /* the layer of @r2; NULL: none */
        double r2;                       /* ridge R^2 of the teacher's centred logits; NaN: none */
        double tolerance;                /* share of the variance a student may leave out */
        kdl_spectral_verdict_result v;   /* the two answers */
};

/* kdl__dims_verdict_row() - the "verdict" row of @v for @d at @ck. */
int kdl__dims_verdict_row(kdl_table *t, const kdl_dump *d, const kdl_checkpoint *ck,
                          const struct kdl__dims_verdict *v);

/*
 * The "softmax_bottleneck" table (analysis/dims-bottleneck.c, docs/dims.md#softmax-bottleneck):
 * kdl__dims_bottleneck_new() creates it, kdl__dims_bottleneck_row() adds the row of @v (the
 * student @d at @ck against v->tres), kdl__dims_bottleneck_commit() hands *@t with its note
 * to @doc when it has rows, else frees it (*@t NULL either way).  Return: 0; -ENOMEM.
 */
int kdl__dims_bottleneck_new(kdl_table **ret);
int kdl__dims_bottleneck_row(kdl_table *t, const kdl_dump *d, const kdl_checkpoint *ck,
                             const struct kdl__dims_verdict *v);
int kdl__dims_bottleneck_commit(kdl_doc *doc, kdl_table **t);

/* A student width to mark on its teacher checkpoint's residual curve. */
struct kdl__dims_mark {
        size_t tck; /* index of the teacher checkpoint */
        size_t d_s;
        char *label; /* "model@checkpoint" */
};

/* kdl__dims_curve_rows() - the "logit_residual" rows of every teacher
 * checkpoint k of @td with a result @tlog[k], the @nmark @mark at their widths. */
int kdl__dims_curve_rows(kdl_table *curve, const kdl_dump *td, kdl_spectral_result *const *tlog,
                         const struct kdl__dims_mark *mark, size_t nmark);

/* kdl__dims_notes() - the notes of the document (@heads: the heads table has rows; @methods:
 * bit 1u << m for each enum kdl_spectral_method m of a centred-logit spectrum). */
int kdl__dims_notes(kdl_doc *doc, const struct kdl_run_dims_opts *o, const kdl_inputs *in,
                    bool heads, unsigned methods);

/* kdl__dims_check_opts() - @o for the inputs @in: 0, or -KDL_EUSAGE with the message made. */
int kdl__dims_check_opts(const kdl_inputs *in, const struct kdl_run_dims_opts *o);

/* kdl__dims_layer_exists() - whether a checkpoint of any input of @in has a layer @name. */
bool kdl__dims_layer_exists(const kdl_inputs *in, const char *name);

#endif
