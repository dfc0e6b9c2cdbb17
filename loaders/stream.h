/* SPDX-License-Identifier: MIT */
#ifndef KDL_LOADERS_STREAM_H
#define KDL_LOADERS_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loaders/h5.h"

/*
 * A stream hands out aligned row blocks of several datasets at once: the
 * teacher's and the student's (student rows mapped through a kdl_pair), and
 * the labels.  One pass over the stream serves every metric of a pipeline;
 * kdl_stream_rewind() starts a second pass when a metric needs one.
 * Memory: one block per dataset, sized by a byte budget, independent of N
 * (struct kdl_stream_cost says how much).
 *
 * Pairing check: a stream over a pair whose two dumps both have /labels also
 * reads the teacher's and the student's labels, in the pair's row order, in
 * every block of the first pass, and fails on the first row where they
 * differ (-KDL_EMISMATCH naming the student file, its row, the sample id
 * when the pair is joined on ids, and both labels), before any dataset of
 * that block is handed out.  So no metric ever sees misaligned rows, whether
 * the pair is by row order or by /sample_ids.  Those labels count in
 * kdl_stream_values_read(), not in kdl_stream_count().  When a dump has no
 * labels the check cannot run; saying so is the caller's (analysis/inputs.h).
 *
 *      kdl_stream_new(n, pair, &opts, &s);
 *      zt = kdl_stream_add(s, teacher, ck_t->logits, KDL_SPATIAL_AVG, false);
 *      zs = kdl_stream_add(s, student, ck_s->logits, KDL_SPATIAL_AVG, true);
 *      while ((r = kdl_stream_next(s)) > 0) {
 *              kdl_tensor a = kdl_stream_block(s, zt), b = kdl_stream_block(s, zs);
 *              ... accumulate ...
 *      }
 */

struct kdl_stream_opts {
        size_t block_rows;   /* rows per block; 0 = from budget_bytes */
        size_t budget_bytes; /* what the blocks of every dataset and their readers' scratch
                                may take together (struct kdl_stream_cost); 0 = 64 MiB */
        bool skip_nonfinite; /* drop samples with NaN/Inf in any dataset, count them */
};

/* The block budget a zero budget_bytes means. */
#define KDL_STREAM_BUDGET_DEFAULT ((size_t) 64 << 20)

/*
 * What a stream will hold, known from the datasets' shapes before one is
 * made or read: per block row, each dataset's row of doubles after the
 * spatial rule, its reader's scratch row of every stored value when the rule
 * reduces or the rows go through a row map, and the pairing check's labels;
 * besides the block, each chunked dataset's HDF5 chunk cache (two row bands
 * of chunks, 1 to 64 MiB) and the skip bitmap.  A stream picks its block
 * rows from the same numbers (budget_bytes / row_bytes), so that
 * kdl_stream_cost_bytes() is what it allocates, up to the HDF5 library's own
 * small buffers.  A dataset added twice (several jobs reading it) counts
 * twice here, so the sum is an upper bound for a shared stream.
 *
 *      struct kdl_stream_cost c;
 *      kdl_stream_cost_init(&c, pair);
 *      kdl_stream_cost_add(&c, ck_t->logits, KDL_SPATIAL_AVG, false);
 *      bytes = kdl_stream_cost_bytes(&c, n, &opts);
 */
struct kdl_stream_cost {
        const kdl_pair *pair; /* borrowed, as the stream's */
        size_t row_bytes;     /* per block row */
        size_t fixed_bytes;   /* chunk caches */
};

/** kdl_stream_cost_init() - the cost of a stream over @pair (NULL: one file) before any dataset. */
KDL_API void kdl_stream_cost_init(struct kdl_stream_cost *c, const kdl_pair *pair);

/** kdl_stream_cost_add() - the cost of kdl_stream_add() of @ds, @rule, @student too. */
KDL_API void kdl_stream_cost_add(struct kdl_stream_cost *c, const kdl_dsinfo *ds,
                                 enum kdl_spatial rule, bool student);

/** kdl_stream_cost_rows() - the block rows a stream over @n samples with options @o (NULL:
 * the defaults) reads for cost @c: o->block_rows, else the budget over row_bytes; 1 to @n. */
KDL_API size_t kdl_stream_cost_rows(const struct kdl_stream_cost *c, size_t n,
                                    const struct kdl_stream_opts *o);

/** kdl_stream_cost_bytes() - the bytes of such a stream: its blocks, the readers' scratch,
 * the chunk caches, the skip bitmap (saturating at SIZE_MAX). */
KDL_API size_t kdl_stream_cost_bytes(const struct kdl_stream_cost *c, size_t n,
                                     const struct kdl_stream_opts *o);

typedef struct kdl_stream kdl_stream;

/**
 * kdl_stream_new() - a stream over @n logical samples.
 * @pair: borrowed, must outlive the stream; NULL when only one file is read.
 *        Student datasets follow pair->student_rows, the others (the
 *        teacher's) pair->teacher_rows; the pairing check is on.
 * @o:    NULL for the defaults.
 * @ret:  caller frees with kdl_stream_free().
 */
KDL_API int kdl_stream_new(size_t n, const kdl_pair *pair, const struct kdl_stream_opts *o,
                           kdl_stream **ret);

/** kdl_stream_free() - free @s and close its readers.  NULL is a no-op. */
KDL_API void kdl_stream_free(kdl_stream *s);

/**
 * kdl_stream_add() - read dataset @ds of @f in every block.
 * @student: map rows through the pair's student rows.
 *
 * Adding the same dataset again (same @f, @ds, @rule and row map) returns the
 * index it already has, so metrics sharing a stream read it once.
 * Return: the dataset's index (>= 0) for kdl_stream_block(); -KDL_EMISMATCH
 * when its rows differ from the stream's; -KDL_EHDF5; -ENOMEM.
 */
KDL_API int kdl_stream_add(kdl_stream *s, kdl_h5file *f, const kdl_dsinfo *ds,
                           enum kdl_spatial rule, bool student);

/**
 * kdl_stream_add_labels() - read /labels of @f (teacher order) in every block.
 * Return: the labels' dataset index (>= 0); -KDL_EMISSING when @f has no
 * labels; other codes as kdl_stream_add().
 */
KDL_API int kdl_stream_add_labels(kdl_stream *s, kdl_h5file *f);

/**
 * kdl_stream_next() - read the next block of every dataset.
 * Return: 1 when a block is ready; 0 at the end; a negative code on error
 * (NaN/Inf without skip_nonfinite: the message names the dataset and sample;
 * -KDL_EMISMATCH from the pairing check).
 */
KDL_API int kdl_stream_next(kdl_stream *s);

/**
 * kdl_stream_rewind() - start again from the first sample (the skip count
 * restarts).  With skip_nonfinite, the samples dropped before are dropped
 * again, whichever datasets the new pass reads (one bit per sample).
 */
KDL_API void kdl_stream_rewind(kdl_stream *s);

/**
 * kdl_stream_use() - from the next block on, read only the datasets with
 * @use[index] true (@use has kdl_stream_count() entries, borrowed for the
 * call; NULL: all, the default).  The blocks of the others must not be asked
 * for.  A later pass that needs fewer datasets reads only those.
 */
KDL_API void kdl_stream_use(kdl_stream *s, const bool *use);

/**
 * kdl_stream_part() - from now on, read only part @part of @nparts of the
 * rows: the blocks of a one-part stream cut into @nparts contiguous runs
 * (block k in part floor(k * nparts / nblocks)... i.e. part p holds blocks
 * [p * nblocks / nparts, (p + 1) * nblocks / nparts)), so every part reads
 * whole blocks, the very blocks a one-part stream reads; a part may be
 * empty when there are fewer blocks than parts.  Sample indices stay
 * global.  Call before the first kdl_stream_next(); (0, 1) is the default.
 */
KDL_API void kdl_stream_part(kdl_stream *s, unsigned part, unsigned nparts);

/** kdl_stream_count() - datasets added (distinct ones). */
KDL_API size_t kdl_stream_count(const kdl_stream *s);

/** kdl_stream_values_read() - values read from the files so far, over every pass (after the
 * spatial rule: one per column of each block row read), with the pairing check's labels. */
KDL_API uint64_t kdl_stream_values_read(const kdl_stream *s);

/** kdl_stream_rows() - rows of the current block (after any skipped samples). */
KDL_API size_t kdl_stream_rows(const kdl_stream *s);

/** kdl_stream_samples() - logical sample index of each row of the current block. Borrowed. */
KDL_API const size_t *kdl_stream_samples(const kdl_stream *s);

/** kdl_stream_block() - the current block of dataset @index, [rows, cols]; borrowed view. */
KDL_API kdl_tensor kdl_stream_block(const kdl_stream *s, int index);

/** kdl_stream_cols() - columns of dataset @index. */
KDL_API size_t kdl_stream_cols(const kdl_stream *s, int index);

/** kdl_stream_labels() - labels of the current block (needs kdl_stream_add_labels()). */
KDL_API const int64_t *kdl_stream_labels(const kdl_stream *s);

/** kdl_stream_skipped() - samples dropped for NaN/Inf since the last rewind. */
KDL_API size_t kdl_stream_skipped(const kdl_stream *s);

/** kdl_stream_n() - logical samples of the stream. */
KDL_API size_t kdl_stream_n(const kdl_stream *s);

#endif
