/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_CKA_INTERNAL_H
#define KDL_ANALYSIS_CKA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loaders/h5.h"
#include "analysis/inputs.h"
#include "loaders/stream.h"
#include "analysis/cka.h"
#include "analysis/pass.h"
#include "metrics/cka.h"

/* Shared by the cka and layers pipelines: the layers stacked into one CKA
 * state, one stream pass that feeds it and gathers seeded subsamples. */

struct kdl__src {
        const char *name; /* layer name, "logits" or "labels"; borrowed */
        bool has_depth;
        long long depth;
        int model;            /* 0: A (teacher), 1: B (student) */
        const kdl_dsinfo *ds; /* NULL: the one-hot labels */
        size_t width;
        int idx; /* the stream's dataset index */
};

struct kdl__srcs {
        size_t n, cap;
        struct kdl__src *v;
};

/* kdl__srcs_add() - append a source; -ENOMEM. */
int kdl__srcs_add(struct kdl__srcs *l, const char *name, bool has_depth, long long depth, int model,
                  const kdl_dsinfo *ds, size_t width);

/* kdl__srcs_add_checkpoint() - the features of @ck in depth order, then its
 * logits (when present), all of model @model. */
int kdl__srcs_add_checkpoint(struct kdl__srcs *l, const kdl_checkpoint *ck, int model,
                             enum kdl_spatial rule);

void kdl__srcs_release(struct kdl__srcs *l);

/* Rows of a seeded subsample kept in memory, one matrix per source. */
struct kdl__gather {
        const size_t *want; /* sorted logical samples wanted; borrowed */
        size_t nwant;
        size_t n;        /* gathered (a sample skipped for NaN/Inf is missing) */
        size_t *ids;     /* [nwant] the samples gathered */
        double **data;   /* per source [nwant * width] */
        int64_t *labels; /* [nwant] when the stream has labels */
        size_t next;     /* cursor into @want */
};

int kdl__gather_init(struct kdl__gather *g, const struct kdl__srcs *l, const size_t *want,
                     size_t nwant);
void kdl__gather_release(struct kdl__gather *g, size_t nsrc);

/* kdl__gather_tensor() - source @k of @g as an [n, width] tensor (borrowed). */
kdl_tensor kdl__gather_tensor(const struct kdl__gather *g, const struct kdl__srcs *l, size_t k);

/*
 * One pass of the sources as a job (kdl__feed_job()): attach adds every
 * source with a dataset (setting its idx: A's from @fa, B's from @fb as the
 * stream's student rows) and, with @labels, the labels of @fa; every block of
 * every source then goes to @state (may be NULL) and the wanted rows to @g
 * (may be NULL).  The block may be any size (other jobs share the stream).
 */
struct kdl__feed {
        const struct kdl__srcs *l; /* borrowed; their idx is set by attach */
        kdl_h5file *fa, *fb;       /* borrowed; @fb NULL without B */
        enum kdl_spatial rule;
        size_t nclasses;       /* width of the one-hot labels (a label outside is an error) */
        bool labels;           /* the stream reads /labels (needed by one-hot sources; the
                                  gathered labels are 0 otherwise) */
        kdl_cka_state *state;  /* borrowed, or NULL */
        struct kdl__gather *g; /* borrowed, or NULL */
        /* private: the blocks of a pass, the one-hot block */
        kdl_tensor *blocks;
        double *onehot;
        size_t cap;
};

/* kdl__feed_job() - @f as a one-pass job (ctx = @f, no end); its block()
 * fails with -KDL_ERANGE for a label, -ENOMEM or the metric's errors. */
kdl__job kdl__feed_job(struct kdl__feed *f);

/* kdl__feed_release() - free the private part of @f. */
void kdl__feed_release(struct kdl__feed *f);

struct kdl__cka_compute_opts {
        enum kdl_spatial spatial;
        bool skip_nonfinite;
        bool labels;      /* the stream reads /labels (one-hot sources need them) */
        size_t bootstrap; /* replicates; 0: none */
        uint64_t seed;
        bool rbf; /* RBF CKA on the subsample */
        double theta;
        size_t batch;      /* minibatch CKA on the subsample with this batch; 0: none */
        double robust;     /* outlier fraction of the robust column */
        size_t max_bytes;  /* largest feature-space state allowed */
        const bool *pairs; /* [L*L] pairs needed (kdl_cka_opts.pairs); NULL: all */
        enum kdl_cka_precision precision; /* of the feature-space products */
};

/* kdl__pairs_needed() - a mask [l*l] (caller frees) of the pairs the tables
 * show: every pair across the two models, and every source against A's
 * logits @logits and the labels @labels (indices, -1 when absent); with one
 * model, NULL: all pairs. */
int kdl__pairs_needed(const struct kdl__srcs *l, bool two, long long logits, long long labels,
                      bool **ret);

/* What kdl__cka_compute() finds for one set of stacked sources. */
struct kdl__cka_results {
        bool gram; /* Gram space (a source wider than the sample count) */
        size_t n, nsub, maxw;
        kdl_cka_matrix *lin;    /* linear, all samples: biased, debiased, bootstrap */
        kdl_cka_matrix *robust; /* subsample, outliers removed */
        kdl_cka_matrix *rbf;    /* subsample; NULL unless asked */
        kdl_cka_matrix *mb;     /* subsample; NULL unless asked */
};

void kdl__cka_results_release(struct kdl__cka_results *r);

/*
 * kdl__cka_compute() - one pass over every sample of the sources @l (A =
 * @in->teacher, B = @in->students[0] through @pair): linear CKA of all pairs
 * (feature space, or Gram space when a source is wider than the sample
 * count), and on the rows @sub (sorted, gathered in the same pass) the
 * robust column, RBF and minibatch CKA as @o asks.
 * @ret_sub: NULL, or receives the gathered subsample (release it with
 *           kdl__gather_release()).
 */
int kdl__cka_compute(kdl_inputs *in, const kdl_pair *pair, const struct kdl__srcs *l,
                     size_t nclasses, const struct kdl__cka_compute_opts *o, const size_t *sub,
                     size_t nsub, struct kdl__cka_results *res, struct kdl__gather *ret_sub);

/* kdl__classes() - the number of classes of a dump: max(C of the logits,
 * largest label + 1); 0 without labels. */
size_t kdl__classes(const kdl_dump *d);

/*
 * The cka command as jobs (see analysis/pass.h), so that the report runs it on
 * the stream it shares with the other analyses of a student checkpoint.
 */
struct kdl__cka_run; /* one cka document being filled: its tables, options, last results */

/* kdl__cka_begin() - check the options, create the tables, describe the
 * inputs in @doc (borrowed, as @in; both must outlive the run).
 * Return: 0; -KDL_EUSAGE for an impossible combination of options; -ENOMEM. */
int kdl__cka_begin(kdl_inputs *in, const struct kdl_run_cka_opts *o, kdl_doc *doc,
                   struct kdl__cka_run **ret);

/* Job comparing A = in->teacher at cp->main with B = in->students[k] at cp->partner (through
 * in->pairs[k]); with no student, A alone at cp->main (stream over A: pair NULL, n = A's N).
 * One pass; its rows are added to the tables at the end of it.  The job's state belongs to
 * @r: one job at a time (a new call drops the previous one).  @cp is copied.
 * Return: 0; -KDL_ERANGE when the feature-space state would exceed max_bytes; -ENOMEM. */
int kdl__cka_job(struct kdl__cka_run *r, size_t k, const struct kdl_ckpair *cp, kdl__job *ret);

/* kdl__cka_end() - notes from the last job's results, tables into the doc; frees @r
 * whatever happens.  Return: 0; -ENOMEM. */
int kdl__cka_end(struct kdl__cka_run *r);

/* kdl__cka_abort() - free @r after a failure (NULL: no-op); nothing goes into the doc. */
void kdl__cka_abort(struct kdl__cka_run *r);

#endif
