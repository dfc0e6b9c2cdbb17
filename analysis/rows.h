/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_ROWS_H
#define KDL_ANALYSIS_ROWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loaders/h5out.h"

/*
 * The per-sample rows of one job, into the --per-sample file (docs/mpi.md,
 * "Per-sample files").  One process writes the rows of each block as they
 * come.  Under MPI only rank 0 has the file: it writes its own rows the
 * same way, every other rank keeps its rows in memory until the end of the
 * pass that makes them, and kdl__rows_combine() sends them to rank 0, which
 * writes them after its own, rank after rank (rank order is sample order).
 *
 * A column is a dataset of the file, a row @width 8-byte values of each
 * (float64, or int64 where @integer says so).  Rows are placed
 *   appended:  the rows of a block after those before (split: the samples
 *              kept, their sample index in a column of their own);
 *   by sample: row i is sample i, and the samples skipped for NaN/Inf are
 *              NaN (kl; float64 columns of width 1).
 *
 *      struct kdl__rows r = {.out = out, .ncols = n, .ids = ids, ...};
 *      each block:      kdl__rows_add(&r, m, samples, cols);
 *      end of the pass: kdl__rows_combine(&r);       (collective)
 *      by sample:       kdl__rows_fill(&r, n);       (NaN up to sample n)
 *      kdl__rows_release(&r);
 *
 * Set the public fields, zero the others (a designated initializer does).
 */
struct kdl__rows {
        kdl_h5out *out;      /* rank 0: the file (borrowed); NULL on the other ranks */
        size_t ncols;        /* columns */
        const int *ids;      /* [ncols] their datasets in @out, -1: not written (on other
                                ranks any other value); borrowed */
        const size_t *width; /* [ncols] values per row; NULL: 1 each */
        const bool *integer; /* [ncols] int64 columns; NULL: float64 only */
        bool by_sample;      /* placed by sample index, else appended */

        /* private */
        size_t next; /* appended: rows written; by sample: first sample not written */
        double *nan; /* by sample: a range of rows of one column */
        size_t nnan;
        unsigned char *held; /* ranks other than 0: per block, its rows m, each column's
                                m rows, the samples when by sample (8-byte values) */
        size_t len, cap;     /* bytes of held */
};

/**
 * kdl__rows_add() - the @m rows of a block: @cols[k] the @m rows of column k
 * (double or int64_t, @width[k] per row; not read when ids[k] is -1),
 * @samples their sample indices, increasing (needed by sample; NULL else).
 * Rank 0 (and one process) writes them, the other ranks keep them.
 * Return: 0; the codes of kdl_h5out_write(); -ENOMEM.
 */
int kdl__rows_add(struct kdl__rows *r, size_t m, const size_t *samples, const void *const *cols);

/**
 * kdl__rows_combine() - collective, at the end of the pass that added the
 * rows: the rows kept by every rank but 0 are written by rank 0, in rank
 * order after its own, and forgotten.  One process: nothing to do.
 * Return: 0; the first error of any rank.
 */
int kdl__rows_combine(struct kdl__rows *r);

/**
 * kdl__rows_fill() - by sample: NaN for the samples from the first not
 * written up to @end (those skipped at the end).  Only where the file is.
 * Return: 0; the codes of kdl_h5out_write(); -ENOMEM.
 */
int kdl__rows_fill(struct kdl__rows *r, size_t end);

/** kdl__rows_release() - free what @r holds (not the file). */
void kdl__rows_release(struct kdl__rows *r);

#endif
