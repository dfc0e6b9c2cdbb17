/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_LAYERS_INTERNAL_H
#define KDL_ANALYSIS_LAYERS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "analysis/layers.h"
#include "analysis/need.h"
#include "metrics/sample.h"
#include "reports/table.h"

/*
 * Internal to the layers command (analysis/layers-classes.c): which classes
 * Q is computed on, and how many rows of each its two subsamples take.
 */

struct kdl__layers_classes {
        size_t nclasses; /* C */
        size_t n;        /* samples in the dump (paired with the student) */
        size_t *count;   /* [C] samples of each class */
        bool subset;     /* false: every class, as the authors' code */
        size_t why;      /* subset: the option that asked for it (KDL_LAYERS_CLASSES_*, K) */
        size_t min_per_class, eligible; /* subset: M, and the classes with >= M samples */
        bool min_auto;                  /* M chosen from the counts */
        enum kdl_sample_class_rule rule;
        size_t *kept;            /* subset: [nkept] kept classes, increasing */
        size_t nkept;            /* K; C without a subset */
        size_t n_kept;           /* samples of the kept classes; n without a subset */
        size_t per_x;            /* rows per class of the subsample X */
        size_t per_c;            /* rows per class of the class-spectra subsample X_c */
        size_t *want_x, *want_c; /* [C] per_x and per_c for the kept classes, 0 otherwise */
};

/*
 * kdl__layers_classes_init() - the classes of @o's rule from the @n labels
 * @labels (borrowed) in 0..@nclasses-1.  Release @ret whatever it returns.
 * Return: 0; -KDL_EUSAGE (an option leaves fewer than two classes);
 * -KDL_ESHAPE (fewer than two classes have two samples); -ENOMEM.
 */
int kdl__layers_classes_init(const int64_t *labels, size_t n, size_t nclasses,
                             const struct kdl_run_layers_opts *o, struct kdl__layers_classes *ret);

void kdl__layers_classes_release(struct kdl__layers_classes *c);

/*
 * kdl__layers_sequence_rows() - with @o->sequences, the subsample X of the @n samples of
 * @pair (NULL: the teacher's) drawn by the teacher's /sequence_ids (@o->subsample rows,
 * @o->per_sequence of each, seed @o->seed, stream @stream), then only the rows whose label
 * in @labels (borrowed) is a class @c keeps.  *@ret (caller frees): the rows in increasing
 * order.  Return: 0; -KDL_EUSAGE (no /sequence_ids); HDF5 errors; -ENOMEM.
 */
int kdl__layers_sequence_rows(kdl_h5file *ft, const kdl_pair *pair, const int64_t *labels, size_t n,
                              const struct kdl__layers_classes *c,
                              const struct kdl_run_layers_opts *o, uint64_t stream, size_t **ret,
                              size_t *ret_n);

/* kdl__layers_classes_note() - with a subset, the note saying which classes and why. */
int kdl__layers_classes_note(const struct kdl__layers_classes *c,
                             const struct kdl_run_layers_opts *o, kdl_doc *doc);

/* kdl__layers_sequences_note() - with @o->sequences, the note saying how X was drawn. */
int kdl__layers_sequences_note(const struct kdl_run_layers_opts *o, kdl_doc *doc);

/* kdl__layers_classes_table() - with a subset, the one-row table
 * "layers_class_subset" into @doc. */
int kdl__layers_classes_table(const struct kdl__layers_classes *c, kdl_doc *doc);

/*
 * kdl__layers_need() - what kdl_run_layers() on @in with @o holds at its peak, into the
 * empty need @ret.  It reads the labels: the class rule depends on the counts.
 * Return: 0; the errors of kdl_run_layers() before its first pass; -ENOMEM.
 */
int kdl__layers_need(kdl_inputs *in, const struct kdl_run_layers_opts *o, kdl__need *ret);

/* What a plan of layers reads besides the shapes (kdl__need.reads). */
#define KDL_LAYERS_READS "the labels (the class rule depends on the counts)"
#define KDL_LAYERS_READS_SEQ                                                                       \
        "the labels (the class rule depends on the counts) and /sequence_ids (--sequences)"

/* The options of the layers command that lower its need. */
#define KDL_LAYERS_LEVERS (KDL_LEVER_SPATIAL | KDL_LEVER_SUBSAMPLE | KDL_LEVER_PER_CLASS)

#endif
