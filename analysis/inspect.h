/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_INSPECT_H
#define KDL_ANALYSIS_INSPECT_H

#include <stdbool.h>
#include <stddef.h>

#include "analysis/inputs.h"
#include "reports/table.h"

/* No struct kdl_run_common: inspect reads files, not a teacher and its students. */
struct kdl_run_inspect_opts {
        bool scan_values;   /* read every float dataset and report NaN/Inf */
        enum kdl_join join; /* how students are joined with the teacher on /sample_ids */
        size_t memory;      /* bytes the scan may take (--memory); see kdl_run_common */
};

/** kdl_run_inspect_opts_init() - the defaults: scan every value; the strict join;
 * kdl_memory_default() as the budget. */
KDL_API void kdl_run_inspect_opts_init(struct kdl_run_inspect_opts *o);

/**
 * kdl_run_inspect() - describe dumps: files, checkpoints, datasets (shape,
 * stored type, chunking, compression), the knowledge sources present, the
 * teacher/student alignment, and every schema problem found.
 *
 * Alignment: each file with role "student" is paired with the first with
 * role "teacher" as the analyses pair them, and their /labels are read in
 * blocks and compared row by row (with or without scan_values): a pairing
 * that fails, or the first row whose labels differ, is a problem.  A pair
 * by row order that no labels can check gets a note.
 * @paths: @n files, borrowed.
 * @doc:   the tables "files", "checkpoints", "datasets", "alignment" and
 *         "problems" are added to it.
 * @ret_problems: the number of problems found (each is a row of "problems").
 *
 * Return: 0 (problems are results, not errors); a negative code when a file
 * cannot be opened at all (missing, not HDF5, truncated), with no table added;
 * -KDL_EBUDGET when the scan of a dataset would need more than @o->memory;
 * -KDL_EUSAGE for the inner join of a pair without /sample_ids in both.
 */
KDL_API int kdl_run_inspect(const char *const *paths, size_t n,
                            const struct kdl_run_inspect_opts *o, kdl_doc *doc,
                            size_t *ret_problems);

#endif
