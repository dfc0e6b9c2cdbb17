/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_SOURCES_H
#define KDL_ANALYSIS_SOURCES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "analysis/pass.h"
#include "loaders/h5.h"
#include "loaders/stream.h"
#include "metrics/cka.h"

/*
 * Internal to the analysis layer (nothing here is exported): the layers of
 * one or two dumps stacked as the sources of one CKA state, and one stream
 * pass that feeds that state and gathers seeded subsamples of every source.
 * The cka and layers commands build on it (analysis/cka-internal.h).
 */

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

/* kdl__gather_bytes() - what kdl__gather_init() allocates for @nwant rows of @l (saturating). */
size_t kdl__gather_bytes(const struct kdl__srcs *l, size_t nwant);

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
        const enum kdl_cka_layer *kinds; /* [l->n] how @state takes each source (borrowed):
                                            KDL_CKA_LAYER_ONEHOT the labels as classes,
                                            KDL_CKA_LAYER_SKETCH the block times its sketch;
                                            NULL: every block as it is, the labels one-hot */
        kdl_cka_sketch *const *sketch;   /* [l->n] the sketched sources' (borrowed), or NULL */
        size_t rank;                     /* the columns of every sketch */
        /* private: the blocks of a pass, the one-hot block, the classes, the sketched blocks */
        kdl_tensor *blocks;
        double *onehot, *cls, **proj;
        size_t cap, pcap;
};

/* kdl__feed_attach() - the attach of a job @j that feeds @f: add every source
 * with a dataset to @s on @j's behalf, and the labels when @f asks for them.
 * Return: 0; the codes of kdl__job_add(); -ENOMEM. */
int kdl__feed_attach(struct kdl__feed *f, kdl__job *j, kdl_stream *s);

/* kdl__feed_block() - the block of such a job: every source's block to the
 * state, the wanted rows to the gather.  Return: 0; -KDL_ERANGE for a label
 * outside the classes; -ENOMEM; the metric's errors. */
int kdl__feed_block(struct kdl__feed *f, kdl_stream *s);

/* kdl__feed_blocks() - the current block of @s as @f's state takes it, into @ret (borrowed
 * until the next call): each source's block, the labels' classes [rows, 1] or one-hot rows
 * by f->kinds, a sketched source's sketch.  The gather is not fed.  Return: 0 (nothing
 * when the block has no row); -KDL_ERANGE for a label outside the classes; -ENOMEM; the
 * sketch's errors. */
int kdl__feed_blocks(struct kdl__feed *f, kdl_stream *s, const kdl_tensor **ret);

/* kdl__feed_job() - @f as a one-pass job (ctx = @f, no end) made of the two
 * above. */
kdl__job kdl__feed_job(struct kdl__feed *f);

/* kdl__feed_cost() - the datasets kdl__feed_attach() adds for the sources @l (A's from
 * @fa, B's through the pair as student rows) and, with @labels, @fa's labels, into the
 * stream cost @c. */
void kdl__feed_cost(const struct kdl__srcs *l, kdl_h5file *fa, enum kdl_spatial rule, bool labels,
                    struct kdl_stream_cost *c);

/* kdl__feed_bytes() - what kdl__feed_block() keeps for blocks of @rows rows of @l taken as
 * @kinds (NULL: dense): the one-hot labels when a dense source is the labels (@nclasses
 * wide), their classes otherwise, and each sketched source's block of @sw[k] columns
 * (saturating). */
size_t kdl__feed_bytes(const struct kdl__srcs *l, const enum kdl_cka_layer *kinds, const size_t *sw,
                       size_t nclasses, size_t rows);

/* kdl__feed_release() - free the private part of @f. */
void kdl__feed_release(struct kdl__feed *f);

/* kdl__pairs_needed() - a mask [l*l] (caller frees) of the pairs the tables
 * show: every pair across the two models, and every source against A's
 * logits @logits and the labels @labels (indices, -1 when absent); with one
 * model, NULL: all pairs. */
int kdl__pairs_needed(const struct kdl__srcs *l, bool two, long long logits, long long labels,
                      bool **ret);

/* kdl__classes() - the number of classes of a dump: max(C of the logits,
 * largest label + 1); 0 without labels. */
size_t kdl__classes(const kdl_dump *d);

#endif
