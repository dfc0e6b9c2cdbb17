/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_SUMMARY_H
#define KDL_ANALYSIS_SUMMARY_H

#include <stdbool.h>
#include <stddef.h>

#include "analysis/inputs.h"
#include "reports/table.h"

/*
 * `kdlens summary`: the numbers a KD paper reports beside its analyses
 * (docs/summary.md, metrics/calibration.h).
 *
 * Table "summary": one row for the teacher at each of its checkpoints that a
 * selected student checkpoint is compared with (accuracy, ECE, classwise
 * ECE, NLL), then one row per student and selected checkpoint (also the
 * top-1 agreement with the teacher and the mean exact τ² KL at the one
 * temperature).  Labels are the teacher's /labels, else the student's (a
 * stream over a pair whose dumps both have labels checks that they agree);
 * the teacher's rows use its own labels, else those of the first student
 * that has them, over that pair's samples.
 *
 * Table "summary_groups" (with groups): repeats of one configuration, each
 * group a list of students, as the mean and the sample standard deviation
 * (n - 1) over its runs, per checkpoint: checkpoints are matched by name,
 * or, with the default checkpoint (each student's last), the last ones
 * whatever their names.
 *
 * Passes: one over the logits and labels per checkpoint.  Memory: the
 * blocks and O(C x bins) sums (metrics/calibration.h), independent of N.
 */

/* The most groups a run takes (--group, repeatable). */
#define KDL_SUMMARY_MAX_GROUPS 16

struct kdl_run_summary_opts {
        struct kdl_run_common common; /* reads checkpoint, teacher_checkpoint, tau[0] (ntau must
                                         be 1), skip_nonfinite, block_rows and memory */
        size_t bins;                  /* confidence bins, >= 1 (15) */
        size_t ngroups;               /* 0..KDL_SUMMARY_MAX_GROUPS */
        const char *groups[KDL_SUMMARY_MAX_GROUPS]; /* "NAME=FILE,FILE,...", borrowed: each FILE
                                                       a student's path as given (or the same
                                                       file) */
        bool pm_text; /* summary_groups: each quantity one text cell "mean ± sd" (the terminal,
                         Markdown and LaTeX); false: two reals <q>_mean and <q>_sd (default) */
};

/** kdl_run_summary_opts_init() - common's defaults (the single τ = 4), 15 bins, no group. */
KDL_API void kdl_run_summary_opts_init(struct kdl_run_summary_opts *o);

/**
 * kdl_summary_groups_check() - check the @n group specifications @groups
 * against the @nstudents student paths @students, without opening them.
 * Return: 0; -KDL_EUSAGE (message recorded) for a specification that is not
 * NAME=FILE,FILE,..., a FILE that is no student, a FILE twice in one group,
 * two groups of one name, or more than KDL_SUMMARY_MAX_GROUPS groups;
 * -ENOMEM.
 */
KDL_API int kdl_summary_groups_check(const char *const *groups, size_t n,
                                     const char *const *students, size_t nstudents);

/**
 * kdl_run_summary() - compute the table "summary" and, with groups,
 * "summary_groups" into @doc.
 * @in: a teacher and at least one student, opened and paired.
 * Return: 0; -KDL_EUSAGE without a teacher or a student, with other than
 * one temperature or 0 bins, for a bad group (kdl_summary_groups_check()),
 * or a checkpoint name no dump has; -KDL_EMISSING naming the file without
 * logits or labels (/labels in neither dump of a pair), or when every
 * sample of a checkpoint was skipped; -KDL_EMISMATCH when the class counts
 * differ; -KDL_EBUDGET when it needs more than o->common.memory (nothing is
 * read); -KDL_ENONFINITE naming the dataset and sample; I/O codes; -ENOMEM.
 */
KDL_API int kdl_run_summary(const kdl_inputs *in, const struct kdl_run_summary_opts *o,
                            kdl_doc *doc);

/**
 * kdl_run_summary_plan() - what kdl_run_summary() would need with @in and
 * @o, from the shapes alone: the tables "plan" and "plan_parts" into @doc.
 * Return: 0; the errors of finding the logits and labels, as kdl_run_summary();
 * -ENOMEM.
 */
KDL_API int kdl_run_summary_plan(const kdl_inputs *in, const struct kdl_run_summary_opts *o,
                                 kdl_doc *doc);

#endif
