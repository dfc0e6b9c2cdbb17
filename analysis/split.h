/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_SPLIT_H
#define KDL_ANALYSIS_SPLIT_H

#include <stdbool.h>
#include <stddef.h>

#include "analysis/inputs.h"
#include "metrics/split.h"
#include "reports/table.h"

/*
 * kdlens split (docs/split.md): explicit vs implicit knowledge and Tang et
 * al.'s universe / domain / instance levels, per student, per checkpoint,
 * per temperature.  metrics/split.h defines every quantity.
 *
 * Data: teacher and student logits (aligned by the pair), the labels (the
 * teacher's /labels, else the student's; when both exist they must agree),
 * and the head weights of both checkpoints when present.  Logits are read
 * twice: w_n needs the mean teacher confidence of the whole data first.
 *
 * Checkpoints are selected on the student (--checkpoint NAME|all); each is
 * compared with the teacher's last checkpoint, or the one teacher_checkpoint
 * names ("same": the one of the same name), as kdl_select_checkpoints().
 *
 * Tables (keys are the JSON names):
 *   split          KL, TCKD, NCKD (means, τ² included), nckd_coupled =
 *                  mean (1-p^t_y) NCKD, identity_residual (max), shares,
 *                  mean confidences, gap and ω, top-1 accuracies;
 *   universe       ε_n and the relative non-target entropy;
 *   domain         agreement of the soft confusion and the heads (not with
 *                  the domain mode off);
 *   confused_pairs the most confused class pairs, when the domain level
 *                  is computed in blocks (no C x C matrix to list);
 *   instance       w_n: p̄^t_y, mean, spread, quantiles, correlation;
 *   distributions  every per-sample scalar: n, mean, std, min, p05..p95, max;
 *   split_classes  one row per class (the label): its samples and mean KL,
 *                  TCKD, NCKD over them (NaN for a class without samples);
 *   split_positions with /positions in a dump: one row per position with tokens (0 to
 *                  8191): its tokens and mean KL, TCKD, NCKD, the shares;
 * and, when long_tables is set (JSON and CSV), one record per cell:
 *   histograms, and in the full domain mode confusion_teacher (i = true
 *   class, j = class), head_cosine_teacher, head_cosine_student (i, j =
 *   classes).
 *
 * Memory.  The domain level is the only part that grows faster than C
 * (metrics/split.h): kdl_run_split_plan() chooses its mode (auto: the C x C
 * matrices up to metric.domain_max_c classes when they fit, with long_tables
 * their 3 C^2 table rows too (about 300 bytes each), else blocks of
 * classes, each one more pass over the logits when there are more than two)
 * within the memory budget, before anything is read.
 */

struct kdl_run_split_opts {
        struct kdl_run_common common; /* reads checkpoint, teacher_checkpoint, the
                                         temperatures, skip_nonfinite, per_sample,
                                         block_rows and memory: what split may hold
                                         besides the stream's read buffers (the metric,
                                         the head weights, the per-sample buffers; the
                                         logits are 2-D: no spatial) */
        kdl_split_opts metric;        /* λ, ω_max, guards, bins; its temperatures are
                                         common's (the run sets them) */
        bool long_tables;             /* add histograms and C x C matrices */
        size_t hist_bins; /* output bins of the bounded histograms; divides metric.nbins */
};

/** kdl_run_split_opts_init() - defaults: common's (its memory budget too), the metric's, 20 output
 * bins. */
KDL_API void kdl_run_split_opts_init(struct kdl_run_split_opts *o);

/**
 * kdl_run_split_plan() - what split does and holds for @c classes and head
 * widths @d_teacher, @d_student (0: absent; the widest of the checkpoints
 * analysed) under @o (its temperatures are common's): the domain mode auto
 * resolves to, its blocks (passes over the logits when more than two), and
 * the bytes, the metric's (kdl_split_plan_init()) plus the head weights and
 * the per-sample buffers; the stream's read buffers are not counted.
 * @ret: always set; ret->fits says whether the bytes fit @o->common.memory.
 * Return: 0; -KDL_EUSAGE for an option out of range; -KDL_EBUDGET when the
 * plan does not fit @o->common.memory, with a message naming split, the size
 * asked, the budget and the options that lower it.
 */
KDL_API int kdl_run_split_plan(size_t c, size_t d_teacher, size_t d_student,
                               const struct kdl_run_split_opts *o, kdl_split_plan *ret);

/**
 * kdl_run_split() - run the split analysis on @in (teacher and at least one
 * student) and add its tables to @doc.
 *
 * Per-sample file layout (@o->common.per_sample): group /student<k>/<checkpoint>
 * with string attributes student, teacher, checkpoint, teacher_checkpoint
 * and taus; datasets sample (int64 [n], the teacher's row), label (int64
 * [n]) and, as float64 [n, ntaus], kl, tckd, nckd, residual, pt_y, ps_y,
 * gap, omega, eps, nt_entropy, w.  Written under a temporary name and
 * renamed when complete.
 *
 * Return: 0; -KDL_EUSAGE without a teacher or a student, for an unknown
 * checkpoint or bad options; -KDL_EMISSING without labels in either dump;
 * -KDL_EMISMATCH when the dumps' labels disagree; -KDL_ESCHEMA for a head
 * that is not [C, D]; errors of reading (-KDL_ENONFINITE naming the
 * dataset and sample, -KDL_EHDF5) and of writing the per-sample file.
 */
KDL_API int kdl_run_split(kdl_inputs *in, const struct kdl_run_split_opts *o, kdl_doc *doc);

/**
 * kdl_run_split_memory_plan() - what kdl_run_split() would need with @in and @o, from the
 * shapes alone (--plan): the tables "plan" and "plan_parts" into @doc, as kdl_run_kl_plan().
 * Return: 0; -KDL_EUSAGE without a teacher and a student; the errors of finding the
 * checkpoints; -ENOMEM.
 */
KDL_API int kdl_run_split_memory_plan(kdl_inputs *in, const struct kdl_run_split_opts *o,
                                      kdl_doc *doc);

#endif
