/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_DIST_H
#define KDL_ANALYSIS_DIST_H

#include <stddef.h>

#include "metrics/base/error.h" /* KDL_API */

/*
 * Several processes under mpirun (docs/mpi.md).  The only code that includes
 * mpi.h is analysis/dist.c; without MPI (a build with -Dmpi=disabled, or a
 * process not started by mpirun) every function here is the one-process
 * case: rank 0 of 1, no communication.
 *
 * The rows of a stream are cut into kdl__dist_size() contiguous ranges, one
 * per rank (kdl_stream_part()); every job accumulates its own rows, and at
 * the end of a pass kdl__dist_combine() gathers the packed states to rank 0,
 * which merges them in rank order (so a result depends on P, never on the
 * timing), and, when the next pass needs it, sends the merged state back.
 * Rank 0 writes every output; the others are silent.
 *
 * Errors: an error on one rank must not leave the others waiting in a
 * collective.  Every rank calls kdl__dist_status() at the same points; it
 * returns the error of the lowest rank that had one, with its message
 * recorded by kdl_error() on every rank, or 0 when none had.
 */

/**
 * kdl__dist_init() - join the MPI job when started by mpirun (its
 * environment: OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_RANK); otherwise do
 * nothing.  Return: 0; -KDL_EUSAGE when MPI could not start.
 */
KDL_API int kdl__dist_init(int *argc, char ***argv);

/**
 * kdl__dist_finish() - leave the MPI job (no-op without one).
 * @rc: this rank's exit status.
 * Return: the largest exit status of every rank, so that all exit alike.
 */
KDL_API int kdl__dist_finish(int rc);

/** kdl__dist_rank() - this process's rank (0 without MPI). */
KDL_API int kdl__dist_rank(void);

/** kdl__dist_size() - the processes of the job (1 without MPI). */
KDL_API int kdl__dist_size(void);

/**
 * kdl__dist_status() - collective: the error of the lowest rank whose @err
 * is negative (its message recorded on every rank), or 0.  One process:
 * @err.
 */
int kdl__dist_status(int err);

/** kdl__dist_sum() - collective: @x[0..@n) summed over the ranks, in place. */
int kdl__dist_sum(double *x, size_t n);

/*
 * A state that travels: @pack writes it as bytes (*@buf malloc'd, the
 * caller frees), @merge adds packed samples to it, @load replaces it by a
 * packed one (NULL when only rank 0 needs the merged state).  The format is
 * private to a metric and one build (docs in the metric's header).
 */
struct kdl__dist_ops {
        int (*pack)(const void *state, void **buf, size_t *len);
        int (*merge)(void *state, const void *buf, size_t len);
        int (*load)(void *state, const void *buf, size_t len);
};

/**
 * kdl__dist_combine() - collective: merge the states of every rank into
 * rank 0's, in rank order; with @ops->load, every rank then holds the
 * merged state.  One process: nothing to do.
 * Return: 0; the first error of any rank (as kdl__dist_status()).
 */
int kdl__dist_combine(void *state, const struct kdl__dist_ops *ops);

/**
 * kdl__dist_broadcast() - collective: rank 0's state to every rank: @ops->pack
 * on rank 0, @ops->load on the others (@ops->merge is not used).  For what
 * the next pass needs of a state merged on rank 0 only.  One process:
 * nothing to do.
 * Return: 0; the first error of any rank (as kdl__dist_status()).
 */
int kdl__dist_broadcast(void *state, const struct kdl__dist_ops *ops);

/**
 * kdl__dist_funnel() - collective: the @len bytes at @buf of every rank but
 * 0 handed to @take on rank 0, one rank at a time in rank order (rank 0 holds
 * one of them at a time, not all).  @buf and @len are not used on rank 0.
 * For data too large to gather at once (per-sample rows); an error of @take
 * stops the takes, not the sends.  One process: nothing to do.
 * Return: 0; the first error of any rank (as kdl__dist_status()).
 */
int kdl__dist_funnel(const void *buf, size_t len,
                     int (*take)(void *ctx, const void *buf, size_t len), void *ctx);

struct kdl__gather;
struct kdl__srcs;

/**
 * kdl__dist_gather() - collective: the rows every rank gathered into @g (its
 * own rows of the sorted samples @g->want, analysis/sources.h) appended to
 * rank 0's in rank order, then sent to every rank.  The ranks read contiguous
 * runs of rows in rank order, so every rank then holds the rows one process
 * gathers, in the same order, bit for bit: what is computed from them (a
 * subsample's CKA, its quantiles) is the one-process value exactly.
 * @l: the sources of @g (their widths); borrowed.
 * One process: nothing to do.
 * Return: 0; -KDL_ESCHEMA when the rows exceed @g->nwant; the first error of
 * any rank (as kdl__dist_combine()).
 */
int kdl__dist_gather(struct kdl__gather *g, const struct kdl__srcs *l);

/** kdl__dist_bytes() - bytes this rank has sent and received so far in the collectives that
 * carry data (not in the status exchanges); printed to stderr at exit when KDL_MPI_BYTES is set in
 * the environment. */
size_t kdl__dist_bytes(void);

#endif
