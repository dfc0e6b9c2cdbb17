/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_DIMS_H
#define KDL_ANALYSIS_DIMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "analysis/inputs.h"
#include "loaders/h5.h"
#include "metrics/spectral.h"
#include "reports/table.h"

/*
 * `kdlens dims`: does the student have enough feature dimensions to take up
 * the teacher's knowledge (docs/dims.md)?  Metrics: metrics/spectral.h.
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

        /* The spectrum of C-wide centred logits (metrics/spectral.h): */
        int logit_method;         /* an enum kdl_spectral_method, or KDL_DIMS_LOGITS_AUTO: the
                                     exact side (C x C features or N x N Gram) with the smaller
                                     side when it is at most exact_max and fits, else the sketch */
        size_t exact_max;         /* the largest side auto solves exactly */
        size_t sketch_rank;       /* r: the sketch's eigenvalues */
        size_t sketch_oversample; /* p: Omega has r + p columns */
        uint64_t seed;            /* of the sketch's test matrix */
};

#define KDL_DIMS_LOGITS_AUTO (-1)
#define KDL_DIMS_EXACT_MAX   4096

/** kdl_run_dims_opts_init() - common defaults, every layer, tolerance 1 %, GCV, the spectrum
 * table; logit spectra by KDL_DIMS_LOGITS_AUTO up to KDL_DIMS_EXACT_MAX, the sketch at
 * KDL_SPECTRAL_SKETCH_RANK + KDL_SPECTRAL_SKETCH_OVERSAMPLE, seed 0; the budget of
 * common.memory (--memory: half of the physical memory by default). */
KDL_API void kdl_run_dims_opts_init(struct kdl_run_dims_opts *o);

/**
 * kdl_run_dims() - the dims analysis of @in into @doc.
 * @in:  a teacher and/or students (kdl_inputs_open()); borrowed.
 * @o:   options; borrowed.
 * @doc: receives the tables (keys as in docs/dims.md):
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
 *   "softmax_bottleneck" one row per (student, checkpoint) with a teacher: d_s
 *            against the ranks holding 99 % and 99.9 % of the variance of the
 *            teacher's centred log-probabilities and their effective rank.
 *   "logit_residual" the teacher's residual curve over d = 1..C, with the
 *            students' widths marked.
 *   "spectrum" every eigenvalue of every layer (when @o->spectrum).
 *
 * Every dataset is read in row blocks, one pass per model checkpoint for
 * all its layers and logits, so the peak memory is the sum of the layers'
 * states, O(sum of D^2 + D C) whatever N, plus the logits' state: O(C^2)
 * (exact features), O(N C + N^2) (exact Gram) or O(C (r + p)) (sketch).
 * Before a checkpoint is analysed its need (kdl_spectral_bytes() of every
 * state, and the stream's blocks) is checked against @o->common.memory (--memory).  With
 * skip_nonfinite a sample with NaN/Inf in any dataset of the checkpoint is
 * dropped for all of them.
 *
 * Return: 0; -KDL_EUSAGE for bad options (more than one temperature), no
 * inputs, a checkpoint or layer that no input has; -KDL_ERANGE when a
 * checkpoint needs more than @o->common.memory (--memory); errors of reading (NaN/Inf, HDF5)
 * and of the metrics.
 */
KDL_API int kdl_run_dims(const kdl_inputs *in, const struct kdl_run_dims_opts *o, kdl_doc *doc);

/**
 * kdl_run_dims_plan() - what kdl_run_dims() would need with @in and @o, from the shapes
 * alone (its largest job: the jobs run one checkpoint at a time): the tables "plan" and
 * "plan_parts" into @doc, as kdl_run_kl_plan().
 * Return: 0; the errors of checking the options and finding the checkpoints; -ENOMEM.
 */
KDL_API int kdl_run_dims_plan(const kdl_inputs *in, const struct kdl_run_dims_opts *o,
                              kdl_doc *doc);

#endif
