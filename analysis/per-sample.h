/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_PER_SAMPLE_H
#define KDL_ANALYSIS_PER_SAMPLE_H

#include <stddef.h>

#include "analysis/inputs.h"

/*
 * The --per-sample file, one layout for every command that writes one (kl,
 * split; docs/conventions.md#per-sample-files):
 *
 *   /                   attrs command ("kl", "split"), kdlens (version),
 *                       teacher (the teacher dump's path)
 *   /sample_ids         int64 [N]: the id of each row, the teacher's
 *                       /sample_ids, or its row numbers 0..N-1 without them
 *   /labels             int64 [N]: the teacher's /labels, when it has them
 *   /tau                float64 [T]: the temperature of each column
 *   /students/<k>       attr student (the k-th -s dump's path, k from 0)
 *   /students/<k>/checkpoints/<checkpoint>
 *                       attrs student, checkpoint, teacher_checkpoint
 *     <value>           float64 [N, T]: row i is sample /sample_ids[i], column j
 *                       temperature /tau[j]; NaN where the sample was not
 *                       analysed (skipped for NaN/Inf, or outside an inner join)
 *
 * N is the teacher's sample count, so the rows of every student, checkpoint
 * and command line up, and the names are the keys of the commands' tables:
 * the attributes are columns of every table, a value is named as the
 * command's tables name it.  The file is written under a temporary name and
 * renamed into place by kdl__per_sample_commit().
 *
 * Under MPI (analysis/dist.h) only rank 0 has the file: it writes its own
 * rows as one process does, every other rank keeps the rows of the group
 * in memory, and kdl__per_sample_combine(), at the end of the pass that
 * wrote them, sends them to rank 0 one rank at a time in rank order (which
 * is sample order), where they are written after its own (docs/mpi.md,
 * "Per-sample files").
 */

typedef struct kdl__per_sample kdl__per_sample;

/**
 * kdl__per_sample_open() - start the file @path for @command on @in's
 * teacher, with the @ntau temperatures @tau: refused when it would replace
 * an input; the root, /sample_ids, /labels, /tau and each student's group.
 * Under MPI only rank 0 opens the file, and its errors are its own: follow
 * with kdl__dist_status().
 * @in, @tau: borrowed, must outlive the writer.
 * @ret: set on success only; finish with kdl__per_sample_commit() or
 *       kdl__per_sample_abort().
 * Return: 0; -KDL_EUSAGE when @path is (or would replace) an input; the
 * errors of kdl_h5out_open() and of reading the teacher's ids and labels.
 */
int kdl__per_sample_open(const char *path, const char *command, const kdl_inputs *in,
                         const double *tau, size_t ntau, kdl__per_sample **ret);

/**
 * kdl__per_sample_begin() - the group of student @k at its checkpoint
 * @checkpoint (compared with the teacher's @teacher_checkpoint), with the
 * @nvalues datasets @names (borrowed, must outlive the group); rows are then
 * written by kdl__per_sample_write() in the order the pair's stream reads
 * them, and the group is closed by kdl__per_sample_end().
 * Return: 0; -KDL_EHDF5; -ENOMEM.
 */
int kdl__per_sample_begin(kdl__per_sample *ps, size_t k, const char *checkpoint,
                          const char *teacher_checkpoint, const char *const *names, size_t nvalues);

/* Value @v of a block at temperature column @t: its first row, and the step between rows. */
struct kdl__per_sample_col {
        const double *p;
        ptrdiff_t stride;
};
typedef struct kdl__per_sample_col kdl__per_sample_col_fn(void *ctx, size_t v, size_t t);

/**
 * kdl__per_sample_write() - the @m rows of a block of the current group, the
 * pair's logical samples @samples (ascending, after those of the blocks
 * before; kdl_stream_samples()): value v at temperature t of row i is
 * @col(@ctx, v, t).p[i * stride].  The teacher rows between them and the
 * rows before get NaN.  Under MPI a rank other than 0 keeps them.
 * Return: 0; -KDL_EHDF5; -ENOMEM.
 */
int kdl__per_sample_write(kdl__per_sample *ps, const size_t *samples, size_t m,
                          kdl__per_sample_col_fn *col, void *ctx);

/**
 * kdl__per_sample_combine() - collective, under MPI, at the end of the pass
 * that wrote the current group's rows (before kdl__per_sample_end()): the
 * rows every rank but 0 kept are written by rank 0, in rank order after its
 * own, and forgotten.  One process: nothing to do.
 * Return: 0; the first error of any rank (as kdl__dist_status()).
 */
int kdl__per_sample_combine(kdl__per_sample *ps);

/** kdl__per_sample_end() - NaN in the rows of the group not written; the group is done. */
int kdl__per_sample_end(kdl__per_sample *ps);

/**
 * kdl__per_sample_commit() - close the file and rename it into place (under
 * MPI on rank 0; the others have nothing to do); @ps is freed in every case.
 * Return: 0; the errors of kdl_h5out_commit().
 */
int kdl__per_sample_commit(kdl__per_sample *ps);

/** kdl__per_sample_abort() - remove the temporary file, free @ps; NULL is a no-op. */
void kdl__per_sample_abort(kdl__per_sample *ps);

#endif
