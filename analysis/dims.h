/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_DIMS_H
#define KDL_ANALYSIS_DIMS_H

#include <stdbool.h>
#include <stddef.h>

#include "analysis/inputs.h"
#include "loaders/h5.h"
#include "metrics/spectral.h"
#include "reports/table.h"

/*
 * `kdlens dims`: does the student have enough feature dimensions to take up
 * the teacher's knowledge (MATH.md §2.3, §11.2)?  Metrics: metrics/spectral.h.
 */

struct kdl_run_dims_opts {
        struct kdl_run_common common; /* reads checkpoint, teacher_checkpoint, one
                                         temperature (of the per-sample support of
                                         W^T F W), spatial, skip_nonfinite (counted in
                                         a note), block_rows; not per_sample */
        const char *layer;            /* NULL or "all": every feature layer; else one name */
        double tolerance;             /* share of the teacher's centred-logit variance a student
                                         may leave out: d_needed and 1 - R^2 of the verdict */
        double rank_rtol;             /* numerical-rank tolerance (variance units) */
        double ridge_lambda;          /* finite >= 0: the ridge penalty; otherwise chosen by GCV */
        bool spectrum;                /* add the "spectrum" table (every eigenvalue) */
};

/** kdl_run_dims_opts_init() - common defaults, every layer, tolerance 1 %, GCV, the spectrum
 * table. */
KDL_API void kdl_run_dims_opts_init(struct kdl_run_dims_opts *o);

/**
 * kdl_run_dims() - the dims analysis of @in into @doc.
 * @in:  a teacher and/or students (kdl_inputs_open()); borrowed.
 * @o:   options; borrowed.
 * @doc: receives the tables (keys as in MATH.md §11.2):
 *   "dims"   one row per (model, checkpoint, layer): width, numerical rank,
 *            effective rank, participation ratio, dimensions for 90/95/99 %
 *            of the variance; with a teacher, the teacher's centred-logit
 *            residual at the layer's width and the ridge R^2 of the teacher's
 *            centred logits from the layer.  Each model's row-centred logits
 *            are a row too (kind "logits").
 *   "heads"  one row per (model, checkpoint) with a head: rank of W^T F W
 *            and the feature directions the KL cannot see.
 *   "verdict" one row per (student, checkpoint), two answers at
 *            o->tolerance: architectural (d_s against d_needed, the least
 *            width whose best fit leaves at most the tolerance of the
 *            teacher's centred-logit variance) and realised (the ridge R^2
 *            of those logits from the student's head-input layer against
 *            1 - tolerance); the verdict names the failed ones, the reason
 *            gives the numbers.
 *   "logit_residual" the teacher's residual curve over d = 1..C, with the
 *            students' widths marked.
 *   "spectrum" every eigenvalue of every layer (when @o->spectrum).
 *
 * Every dataset is read in row blocks, one pass per model checkpoint for
 * all its layers and logits, so the peak memory is the sum of the layers'
 * states, O(sum of D^2), whatever N.  With skip_nonfinite a sample with
 * NaN/Inf in any dataset of the checkpoint is dropped for all of them.
 *
 * Return: 0; -KDL_EUSAGE for bad options (more than one temperature), no
 * inputs, a checkpoint or layer that no input has; errors of reading (NaN/Inf, HDF5) and of the
 * metrics.
 */
KDL_API int kdl_run_dims(const kdl_inputs *in, const struct kdl_run_dims_opts *o, kdl_doc *doc);

#endif
