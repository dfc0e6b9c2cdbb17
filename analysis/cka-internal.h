/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_CKA_INTERNAL_H
#define KDL_ANALYSIS_CKA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loaders/h5.h"
#include "analysis/inputs.h"
#include "loaders/stream.h"
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
 * kdl__pass() - one pass over @s: every block of every source goes to
 * @state (may be NULL) and the wanted rows to @g (may be NULL).
 * @nclasses: width of the one-hot labels (a label outside is an error).
 * @has_labels: the stream reads /labels (needed by one-hot sources; the
 *            gathered labels are 0 otherwise).
 * Return: 0; the stream's errors; -KDL_ERANGE for a label; -ENOMEM.
 */
int kdl__pass(kdl_stream *s, const struct kdl__srcs *l, size_t nclasses, bool has_labels,
              kdl_cka_state *state, struct kdl__gather *g);

/* kdl__open_stream() - a stream over every source with a dataset (their
 * idx set), plus the labels of @fa when @labels. */
int kdl__open_stream(const struct kdl__srcs *l, kdl_h5file *fa, kdl_h5file *fb,
                     const kdl_pair *pair, size_t n, bool labels, enum kdl_spatial rule,
                     bool skip_nonfinite, kdl_stream **ret);

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

#endif
