/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_REPORT_H
#define KDL_ANALYSIS_REPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "analysis/inputs.h"
#include "analysis/kl-topk.h"
#include "analysis/summary.h"
#include "loaders/h5.h"
#include "reports/table.h"
#include "metrics/base/error.h"

/*
 * kdlens report: every analysis on the selected checkpoints of a teacher and
 * one or more students, side by side, as a directory of figures, tables and
 * the data behind them (reports/site.h), put in place atomically.
 */

struct kdl_run_report_opts {
        /* Passed to every analysis: checkpoint (the students' checkpoints analysed:
         * "all", the default, or a name), teacher_checkpoint (the one each is compared
         * with, and the one whose layers are ranked), one temperature, spatial,
         * skip_nonfinite, block_rows (of the stream each student checkpoint is read
         * on; the teacher's layers section sizes its blocks itself), memory (the
         * budget of the whole report: the analyses of a checkpoint run together, so
         * their needs add up); not per_sample. */
        struct kdl_run_common common;
        const char *teacher;
        const char *const *students; /* @nstudents paths */
        size_t nstudents;
        const char *out_dir;
        bool force;          /* replace an @out_dir that is not a kdlens report */
        size_t k;            /* teacher layers to recommend; 0: kdl_layers_default_k() */
        const char *command; /* the exact command line, shown in the report */
        const char *gnuplot; /* program to run; NULL = "gnuplot" from PATH */
        /* Progress, for the CLI's bar: stage @done of @total is @what. NULL = none. */
        void (*progress)(void *ctx, size_t done, size_t total, const char *what);
        void *ctx;
        /* How the dumps are paired (--join, --ignore-roles); all zero: the defaults. */
        struct kdl_inputs_opts inputs;
        /* Repeats of one configuration (seeds), "NAME=FILE,FILE,..." as kdlens summary's
         * --group (borrowed): the summary's table summary_groups (mean ± sd and the runs),
         * and error bars (mean ± sd over each group's runs) in the figures of per-student
         * values that have them. */
        size_t ngroups;
        const char *groups[KDL_SUMMARY_MAX_GROUPS];
        /* kdlens cka's --measure and --svcca-keep (kdl_run_cka_opts), for the teacher's best
         * layers at each student's last checkpoint; CKA alone: no such section. */
        unsigned measures;
        double svcca_keep;
        /* The k of the section "Sparse teacher targets" (kdlens kl --topk, @ntopk values);
         * 0: 1, 8, 32, 128 capped at the classes when the teacher dump has /sequence_ids or
         * logits_topk, else no such section. */
        size_t ntopk;
        size_t topk[KDL_RUN_MAX_TOPK];
};

/**
 * kdl_run_report_opts_init() - the defaults: kdl_run_common_init()'s but every
 * student checkpoint ("all"); no inputs, no directory, no force; k from the
 * teacher (kdl_layers_default_k()); gnuplot from PATH; no progress; kdlens cka's
 * measures (CKA alone).
 */
KDL_API void kdl_run_report_opts_init(struct kdl_run_report_opts *o);

/**
 * kdl_run_report() - write the report.
 * Return: 0; the first error of any analysis (nothing is put in place then);
 * -KDL_EBUDGET when the report needs more than o->common.memory (before
 * anything is computed);
 * -KDL_EUSAGE for a directory that is an input, holds one, or exists and is
 * not a kdlens report (without force), for an option that cannot apply, or
 * a checkpoint no student has; -KDL_EPLOT when gnuplot fails; -errno for the
 * directory.
 */
KDL_API int kdl_run_report(const struct kdl_run_report_opts *o);

/**
 * kdl_run_report_plan() - what kdl_run_report() would need with @o, from the
 * dumps' shapes alone (@o->out_dir may be NULL; nothing is read or written):
 * the tables "plan" and "plan_parts" (analysis/need.h) into @doc.  The
 * analyses of a student checkpoint run together on one stream, so the need
 * is the sum of theirs and of that stream, for the largest checkpoint.
 * kdl_run_report() refuses (-KDL_EBUDGET) a need over @o->common.memory
 * before it computes or writes anything.
 * Return: 0; the errors of opening the inputs and choosing the checkpoints;
 * -ENOMEM.
 */
KDL_API int kdl_run_report_plan(const struct kdl_run_report_opts *o, kdl_doc *doc);

/**
 * kdl_layers_default_k() - how many teacher layers `kdlens layers` and the
 * report recommend unless told: min(4, ceil(n / 2)) of the n feature layers
 * of @teacher's checkpoint @checkpoint (its last for NULL, "all" or a name it
 * does not have), at least 1.  Recommending every layer of a small teacher
 * would say nothing.
 */
KDL_API size_t kdl_layers_default_k(const kdl_h5file *teacher, const char *checkpoint);

/** kdl_report_example_dir() - the bundled example's directory (KDL_EXAMPLE_DIR overrides). */
KDL_API const char *kdl_report_example_dir(void);

#endif
