/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_REPORT_H
#define KDL_ANALYSIS_REPORT_H

#include <stddef.h>

#include "analysis/inputs.h"
#include "metrics/base/error.h"

/*
 * kdlens report: every analysis on every checkpoint of a teacher and one or
 * more students, side by side, as a directory of figures, tables and the
 * data behind them (reports/site.h), put in place atomically.
 */

struct kdl_run_report_opts {
        const char *teacher;
        const char *const *students; /* @nstudents paths */
        size_t nstudents;
        const char *out_dir;
        const char *command; /* the exact command line, shown in the report */
        const char *gnuplot; /* program to run; NULL = "gnuplot" from PATH */
        double tau;          /* temperature of the KD criterion; 0 = 4 */
        /* Progress, for the CLI's bar: stage @done of @total is @what. NULL = none. */
        void (*progress)(void *ctx, size_t done, size_t total, const char *what);
        void *ctx;
        /* How the dumps are paired (--join, --ignore-roles); all zero: the defaults. */
        struct kdl_inputs_opts inputs;
};

/**
 * kdl_run_report() - write the report.
 * Return: 0; the first error of any analysis (nothing is put in place then);
 * -KDL_EPLOT when gnuplot fails; -errno for the directory.
 */
KDL_API int kdl_run_report(const struct kdl_run_report_opts *o);

/** kdl_report_example_dir() - the bundled example's directory (KDL_EXAMPLE_DIR overrides). */
KDL_API const char *kdl_report_example_dir(void);

#endif
