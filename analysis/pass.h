/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_PASS_H
#define KDL_ANALYSIS_PASS_H

#include <stdbool.h>
#include <stddef.h>

#include "loaders/stream.h"

/*
 * Several analyses over one stream.  Each analysis of one student checkpoint
 * (kl, split, dims, cka) is a job: it adds the datasets it reads, takes every
 * block of a pass, and says at the end of a pass whether it needs another.
 * kdl__jobs_run() reads each dataset once per pass for every job (the stream
 * shares a dataset two jobs add), and a later pass reads only the datasets
 * of the jobs still running.  A command runs its own job alone; the report
 * runs all of them together, so a student checkpoint is read in as many
 * passes as its most demanding job needs (two), not once per analysis.
 *
 *      struct kdl__job j[2] = {a_job, b_job};
 *      err = kdl__jobs_run(stream, j, 2, &passes);
 */

typedef struct kdl__job kdl__job;

struct kdl__job {
        void *ctx; /* the job's own state */
        /* Add the datasets the job reads, with kdl__job_add() and
         * kdl__job_add_labels(); called once, before the first block. */
        int (*attach)(kdl__job *j, kdl_stream *s);
        /* One block of pass @pass (0, 1, ...); the block may have 0 rows
         * when every sample of it was skipped. */
        int (*block)(kdl__job *j, kdl_stream *s, unsigned pass);
        /* The end of pass @pass: 1 to take part in another pass, 0 when
         * done, a negative code on error.  May be NULL: done after pass 0. */
        int (*end)(kdl__job *j, kdl_stream *s, unsigned pass);
        /* Under MPI with more than one process (analysis/dist.h): combine
         * the states of every rank after pass @pass's blocks, before end()
         * (kdl__dist_combine()); end() then runs on every rank, but only
         * rank 0's results are complete and written.  NULL: the job cannot
         * run on more than one process (refused, on every rank alike). */
        int (*combine)(kdl__job *j, kdl_stream *s, unsigned pass);

        /* The runner's; zero-initialise. */
        bool *uses;   /* [kdl_stream_count()] datasets this job reads */
        size_t nuses; /* allocated entries of uses */
        bool done;
};

/**
 * kdl__job_add() - kdl_stream_add() on behalf of @j: the dataset is read in
 * every pass @j takes part in.
 * Return: the dataset's index; the codes of kdl_stream_add(); -ENOMEM.
 */
int kdl__job_add(kdl__job *j, kdl_stream *s, kdl_h5file *f, const kdl_dsinfo *ds,
                 enum kdl_spatial rule, bool student);

/** kdl__job_add_labels() - kdl_stream_add_labels() on behalf of @j.  Return: as kdl__job_add(). */
int kdl__job_add_labels(kdl__job *j, kdl_stream *s, kdl_h5file *f);

/**
 * kdl__jobs_run() - attach @n jobs to @s, then run passes until every job is
 * done: pass 0 feeds all of them; each later pass (after a rewind) feeds,
 * and reads the datasets of, only the jobs whose end() asked for it.
 * @s:          a fresh stream (no dataset added, no block read); borrowed.
 * @ret_passes: NULL, or set to the passes made.
 * Under MPI (analysis/dist.h) each rank reads its own contiguous part of the
 * rows (kdl_stream_part()) and the jobs' combine() merges the states after
 * every pass; the status of every rank is checked before each collective, so
 * an error on one rank is the error of all.
 * Return: 0; the first error of a job or of the stream (the jobs' results
 * are then incomplete).  The jobs' uses arrays are freed either way.
 */
int kdl__jobs_run(kdl_stream *s, kdl__job *jobs, size_t n, unsigned *ret_passes);

#endif
