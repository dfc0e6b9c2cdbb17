/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_SAMPLE_H
#define KDL_METRICS_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "metrics/base/error.h"

/*
 * Seeded, counter-based randomness for metrics that subsample or resample.
 * Every draw is a pure function of (seed, sample id, stream), so results do
 * not depend on block sizes, on the order in which blocks arrive, or on how
 * the samples are split between merged states.  There is no state and no
 * options: every function here is pure, or sets its outputs on success
 * only.
 */

/**
 * kdl_sample_hash() - a 64-bit hash of (@seed, @id, @stream) (splitmix64
 * finaliser applied in a chain).  Pure; equal inputs give equal outputs.
 */
KDL_API uint64_t kdl_sample_hash(uint64_t seed, uint64_t id, uint64_t stream);

/** kdl_sample_uniform() - kdl_sample_hash() mapped to a double in (0, 1). */
KDL_API double kdl_sample_uniform(uint64_t seed, uint64_t id, uint64_t stream);

/**
 * kdl_sample_poisson1() - a Poisson(1) count for sample @id in bootstrap
 * replicate @replicate (inversion of the CDF of kdl_sample_uniform()).  The
 * weights of different replicates use different streams.  Capped at 30
 * (probability below 1e-32).
 */
KDL_API unsigned kdl_sample_poisson1(uint64_t seed, uint64_t id, uint64_t replicate);

/**
 * kdl_sample_group() - the group, in 0..@ngroups-1, of sample @id in a
 * seeded split of the samples into @ngroups groups (@ngroups >= 1):
 * kdl_sample_hash(@seed, @id, 2^62) modulo @ngroups.  The delete-a-group
 * jackknife of the CKA bootstrap's BCa interval deletes one group at a time.
 */
KDL_API size_t kdl_sample_group(uint64_t seed, uint64_t id, size_t ngroups);

/**
 * kdl_sample_select() - a seeded subsample of the rows 0..@n-1.
 * @n:         rows to choose from.
 * @labels:    NULL for a plain subsample; otherwise @n class labels in
 *             0..@nclasses-1 (borrowed) and the subsample is class-balanced:
 *             @per_class rows of each class, or all of a class's rows when it
 *             has fewer.
 * @nclasses:  classes (ignored when @labels is NULL).
 * @count:     rows wanted in total without labels (all @n when @count >= @n);
 *             with labels, rows per class.
 * @seed, @stream: the rows with the smallest kdl_sample_hash(@seed, row,
 *             @stream) are chosen, so a larger subsample contains a smaller
 *             one drawn with the same seed and stream.
 * @ret_rows:  set on success only: the chosen rows in increasing order;
 *             caller frees with free().
 * @ret_count: set on success only: the number of rows chosen.
 *
 * Memory: O(@n) (a hash per row).
 * Return: 0; -KDL_ERANGE naming the first row whose label is out of range;
 * -KDL_EOVERFLOW; -ENOMEM.
 */
KDL_API int kdl_sample_select(size_t n, const int64_t *labels, size_t nclasses, size_t count,
                              uint64_t seed, uint64_t stream, size_t **ret_rows, size_t *ret_count);

/**
 * kdl_sample_select_sequences() - a seeded subsample of the rows 0..@n-1 of a token dump
 * that keeps sequences together.
 * @seq:       @n sequence ids (borrowed); a sequence's rows need not be adjacent.
 * @count:     rows wanted: the sequences are taken in increasing kdl_sample_hash(@seed, id,
 *             @stream) (ties: the smaller id) until at least @count rows are taken, the last
 *             sequence as the others (all rows when @count >= @n).
 * @per_seq:   0: every row of a sequence taken; k > 0: its k rows of smallest
 *             kdl_sample_hash(@seed, row, @stream + 1) (all of a shorter one).
 * @ret_rows:  set on success only: the chosen rows in increasing order; caller frees with
 *             free().
 * @ret_count: set on success only: the number of rows chosen.
 *
 * Memory: O(@n).  Return: 0; -KDL_EOVERFLOW; -ENOMEM.
 */
KDL_API int kdl_sample_select_sequences(size_t n, const int64_t *seq, size_t count, size_t per_seq,
                                        uint64_t seed, uint64_t stream, size_t **ret_rows,
                                        size_t *ret_count);

/**
 * kdl_sample_select_counts() - kdl_sample_select() with its own count for
 * each class: @counts [@nclasses] (borrowed) rows of class c, or all of its
 * rows when it has fewer; 0 leaves the class out.  A class's rows are the
 * same as kdl_sample_select() with @labels and the count @counts[c] chooses
 * (the choice within a class does not depend on the other classes).
 * Memory: O(@n).
 * Return: as kdl_sample_select().
 */
KDL_API int kdl_sample_select_counts(size_t n, const int64_t *labels, size_t nclasses,
                                     const size_t *counts, uint64_t seed, uint64_t stream,
                                     size_t **ret_rows, size_t *ret_count);

/**
 * kdl_sample_class_counts() - the samples of each class among the @n
 * @labels (borrowed) in 0..@nclasses-1.
 * @ret_counts: set on success only: [@nclasses]; caller frees with free().
 * Return: 0; -KDL_ERANGE naming the first row whose label is out of range;
 * -ENOMEM.
 */
KDL_API int kdl_sample_class_counts(size_t n, const int64_t *labels, size_t nclasses,
                                    size_t **ret_counts);

/* Which classes kdl_sample_classes() keeps when more are eligible than wanted. */
enum kdl_sample_class_rule {
        KDL_SAMPLE_FREQUENT, /* the classes with the most samples; ties to the lower class */
        KDL_SAMPLE_SEEDED,   /* the classes with the smallest kdl_sample_hash(seed, class,
                                stream): a seeded subset, the same whatever the row order */
        KDL_SAMPLE_CLASS_RULE_COUNT_
};

/** kdl_sample_class_rule_name() - "frequent" or "seeded". */
KDL_API const char *kdl_sample_class_rule_name(enum kdl_sample_class_rule rule);

/** kdl_sample_class_rule_parse() - the rule named @s; -KDL_EUSAGE otherwise. */
KDL_API int kdl_sample_class_rule_parse(const char *s, enum kdl_sample_class_rule *ret);

/**
 * kdl_sample_classes() - at most @kmax of the classes that have at least
 * @min_count samples.
 * @counts:      [@nclasses] samples of each class; borrowed.
 * @rule:        which of them when more than @kmax are eligible.
 * @seed, @stream: of KDL_SAMPLE_SEEDED (ignored by KDL_SAMPLE_FREQUENT).
 * @ret_classes: set on success only: the chosen classes in increasing order
 *               (caller frees with free()); not NULL even when none is chosen.
 * @ret_count:   set on success only: how many.
 *
 * Memory: O(@nclasses).
 * Return: 0; -ENOMEM.
 */
KDL_API int kdl_sample_classes(const size_t *counts, size_t nclasses, size_t min_count, size_t kmax,
                               enum kdl_sample_class_rule rule, uint64_t seed, uint64_t stream,
                               size_t **ret_classes, size_t *ret_count);

#endif
