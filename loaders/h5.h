/* SPDX-License-Identifier: MIT */
#ifndef KDL_LOADERS_H5_H
#define KDL_LOADERS_H5_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/base/tensor.h"

/*
 * Reading kdlens dumps (schema v1, DESIGN.md).  This layer is the only code
 * that includes hdf5.h.  Opening a dump scans its whole structure into a
 * transparent, read-only catalogue (kdl_dump) and records every schema
 * problem it finds; the data are read later, in row blocks, by kdl_h5reader.
 *
 * A dump may be damaged or hostile.  Every numeric dataset the catalogue
 * holds can be read safely: its values are IEEE binary16/32/64 floats or
 * whole-byte integers, the data it declares are stored in the file
 * (contiguous data within the file, every chunk written), and it was reached
 * through no link to another file.  Datasets of other types (strings,
 * compounds) are catalogued for their problems and never read.  Anything
 * else is a problem naming the object, left out of the catalogue.
 */

/* How [N, Ch, H, W] and [N, T, D] features become [N, width] rows. */
enum kdl_spatial {
        KDL_SPATIAL_AVG,     /* mean over H*W (or T): width Ch (or D); default */
        KDL_SPATIAL_MAX,     /* max over H*W (or T) */
        KDL_SPATIAL_FLATTEN, /* width Ch*H*W (or T*D) */
        KDL_SPATIAL_COUNT_
};

/** kdl_spatial_name() - "avg", "max" or "flatten". */
KDL_API const char *kdl_spatial_name(enum kdl_spatial rule);

/** kdl_spatial_parse() - the rule named @s; -KDL_EUSAGE (message recorded) otherwise. */
KDL_API int kdl_spatial_parse(const char *s, enum kdl_spatial *ret);

/* One dataset as stored. */
typedef struct kdl_dsinfo {
        char *path;  /* absolute, e.g. "/checkpoints/final/logits" */
        size_t ndim; /* 1..KDL_MAX_DIMS (larger ranks are a problem) */
        size_t shape[KDL_MAX_DIMS];
        const char *dtype; /* "float16", "float32", "float64", "int8".."uint64"; not numbers:
                              "string", "compound", "enum", ..., "other" */
        bool is_float;
        bool is_integer;
        bool chunked;
        size_t chunk[KDL_MAX_DIMS]; /* zeros when contiguous */
        int gzip;                   /* deflate level, -1 when not compressed with gzip */
        bool other_filter;          /* a filter other than gzip/shuffle is applied */
} kdl_dsinfo;

typedef struct kdl_layer {
        char *name; /* may contain dots: "layer3.1.conv2" */
        int64_t depth;
        kdl_dsinfo feature;
        kdl_dsinfo *gradient; /* gradients/features/<name>, NULL when absent */
} kdl_layer;

typedef struct kdl_checkpoint {
        char *name;  /* the group's name; "root" when the root is the checkpoint */
        char *group; /* "/checkpoints/<name>" or "/" */
        int64_t step;
        bool has_epoch;
        int64_t epoch;
        kdl_dsinfo *logits;      /* NULL when absent (a problem) */
        kdl_dsinfo *grad_logits; /* gradients/logits, NULL when absent */
        size_t nlayers;
        kdl_layer *layers;       /* sorted by depth, then name */
        kdl_dsinfo *head_weight; /* head/weight [C, D], NULL when absent */
        kdl_dsinfo *head_bias;   /* head/bias [C], NULL when absent */
        char *head_input;        /* head attr "input", NULL when absent */
        /* Sparse teacher logits (logits_topk/), all NULL when absent: indices [N, k] (integer
         * classes, distinct within a row), then values (logits at those indices) or logprobs
         * [N, k] (exactly one of them), logsumexp [N] (optional, the normaliser at tau 1). */
        kdl_dsinfo *topk_indices, *topk_values, *topk_logprobs, *topk_lse;
        int64_t topk_classes; /* logits_topk attr classes (C of a dump without logits); 0: none */
} kdl_checkpoint;

typedef struct kdl_dump {
        char *path;                   /* as given to kdl_h5_open() */
        int64_t format;               /* kdlens_format, -1 when absent */
        char *role;                   /* "teacher", "student" or NULL */
        char *model;                  /* NULL when absent */
        size_t n;                     /* samples, 0 when no dataset says */
        size_t c;                     /* classes, 0 when no logits say */
        kdl_dsinfo *labels;           /* NULL when absent */
        kdl_dsinfo *sample_ids;       /* NULL when absent */
        kdl_dsinfo *sequence_ids;     /* int64 [N] sequence of each token; NULL when absent */
        kdl_dsinfo *positions;        /* int32 [N] position in its sequence; NULL when absent */
        int64_t label_min, label_max; /* over /labels when present */
        size_t ncheckpoints;
        kdl_checkpoint *checkpoints; /* sorted by step, then name */
        size_t nproblems;
        char **problems; /* one line each: "'file': /dataset: expected X, found Y" */
} kdl_dump;

typedef struct kdl_h5file kdl_h5file;

/**
 * kdl_h5_open() - open a dump read-only and catalogue it.
 * @path: borrowed; a regular file (after symbolic links).
 * @ret:  set on success only; caller closes with kdl_h5_close().
 *
 * Schema problems do not make the open fail: they are listed in the
 * catalogue (kdl_h5_dump()->problems) and kdl_h5_check() turns the first
 * into an error.  Labels are read once to check their range.
 *
 * The structure is read in a short-lived child process (fork()), with a
 * time and a memory limit, which sends the catalogue back: libhdf5 does not
 * check all it reads, and a damaged file can crash it, hang it or make it
 * allocate gigabytes.  Call it when no other thread is inside HDF5.
 *
 * Return: 0; -ENOENT (or another -errno) if the file cannot be read;
 * -KDL_EHDF5 if it is not a regular file (a FIFO, a directory, a device:
 * named in the message), not an HDF5 file, or HDF5 cannot open or read its
 * structure (truncated, damaged: crashed or out of time in the child);
 * -ENOMEM.
 */
KDL_API int kdl_h5_open(const char *path, kdl_h5file **ret);

/** kdl_h5_close() - close @f.  NULL is a no-op. */
KDL_API void kdl_h5_close(kdl_h5file *f);

/** kdl_h5_dump() - the catalogue of @f; borrowed, valid until kdl_h5_close(). */
KDL_API const kdl_dump *kdl_h5_dump(const kdl_h5file *f);

/**
 * kdl_h5_check() - fail on the first schema problem of @f.
 * Return: 0; -KDL_ESCHEMA with that problem as the message.
 */
KDL_API int kdl_h5_check(const kdl_h5file *f);

/**
 * kdl_h5_scan_values() - read every floating-point dataset of @f in blocks
 * and add a problem for each one that holds NaN or Inf, naming the first
 * sample.  Memory: one block.
 * Return: the number of problems added (>= 0); a negative code on I/O errors.
 */
KDL_API int kdl_h5_scan_values(kdl_h5file *f);

/**
 * kdl_h5_checkpoint() - the checkpoint called @name, or NULL.  Borrowed.
 */
KDL_API const kdl_checkpoint *kdl_h5_checkpoint(const kdl_h5file *f, const char *name);

/** kdl_h5_layer() - the layer @name of @ck, or NULL.  Borrowed. */
KDL_API const kdl_layer *kdl_h5_layer(const kdl_checkpoint *ck, const char *name);

/**
 * kdl_dsinfo_width() - columns of a row of @ds after @rule: shape[1] for
 * 2-D, the channel (4-D) or feature (3-D) count for avg/max, the product of
 * the trailing sizes for flatten.  0 for 1-D.
 */
KDL_API size_t kdl_dsinfo_width(const kdl_dsinfo *ds, enum kdl_spatial rule);

/**
 * kdl_h5_read_labels() - the whole /labels dataset as int64.
 * @ret: set on success only, N entries; caller frees with free().
 * Return: 0; -KDL_EMISSING if there are no labels; -KDL_EHDF5.
 */
KDL_API int kdl_h5_read_labels(kdl_h5file *f, int64_t **ret);

/**
 * kdl_h5_read_sample_ids() - the whole /sample_ids dataset as int64.
 * @ret: set on success only, N entries; caller frees with free().
 * Return: 0; -KDL_EMISSING if there are no ids; -KDL_ESCHEMA if they are not
 * 1-D integers; -KDL_EHDF5; -ENOMEM.
 */
KDL_API int kdl_h5_read_sample_ids(kdl_h5file *f, int64_t **ret);

/**
 * kdl_h5_read_matrix() - a whole small 2-D dataset of @f, such as a
 * checkpoint's head/weight [C, D], as doubles.  Features and logits are
 * read in row blocks with a kdl_h5reader instead.
 * @ds:   a dataset of @f's catalogue; borrowed.
 * @rows: the rows expected, 0 for any.
 * @cols: the columns expected, 0 for any.
 * @ret:  set on success only: a new contiguous [rows, cols] tensor; caller
 *        frees with kdl_tensor_free().
 *
 * Memory: the whole dataset.
 * Return: 0; -KDL_ESCHEMA if @ds is not 2-D of the expected rows and
 * columns, at least 1 each ("'file': /path: expected [10, D] with D >= 1,
 * found 2-D [11, 4] float32"); -KDL_ESHAPE if it is not numeric;
 * -KDL_ENONFINITE naming the first row (as "sample") with NaN/Inf;
 * -KDL_EHDF5; -ENOMEM.
 */
KDL_API int kdl_h5_read_matrix(kdl_h5file *f, const kdl_dsinfo *ds, size_t rows, size_t cols,
                               kdl_tensor **ret);

/* ---- Row-block reading ---------------------------------------------------- */

typedef struct kdl_h5reader kdl_h5reader;

/**
 * kdl_h5_reader_open() - a block reader of dataset @ds (from @f's catalogue).
 * @rule: how rows of rank 3 and 4 are reduced; ignored for rank 1 and 2.
 * @ret:  set on success only; caller closes with kdl_h5_reader_close(),
 *        before closing @f.
 * Return: 0; -KDL_ESHAPE if @ds is not a numeric dataset of rank 1..4;
 * -KDL_EHDF5; -ENOMEM.
 */
KDL_API int kdl_h5_reader_open(kdl_h5file *f, const kdl_dsinfo *ds, enum kdl_spatial rule,
                               kdl_h5reader **ret);

/** kdl_h5_reader_close() - close @r.  NULL is a no-op. */
KDL_API void kdl_h5_reader_close(kdl_h5reader *r);

/** kdl_h5_reader_rows() - rows (logical, after any row map). */
KDL_API size_t kdl_h5_reader_rows(const kdl_h5reader *r);

/** kdl_h5_reader_cols() - columns of each row after the spatial rule (1 for 1-D). */
KDL_API size_t kdl_h5_reader_cols(const kdl_h5reader *r);

/**
 * kdl_h5_reader_set_rows() - read logical row i from stored row @rows[i].
 * @rows: borrowed, must outlive @r; @n entries, each < the stored rows.
 * Used to align a student to a teacher joined on /sample_ids.
 */
KDL_API void kdl_h5_reader_set_rows(kdl_h5reader *r, const size_t *rows, size_t n);

/**
 * kdl_h5_reader_allow_nonfinite() - do not fail on NaN/Inf; the caller
 * checks the block itself (for --nonfinite skip).
 */
KDL_API void kdl_h5_reader_allow_nonfinite(kdl_h5reader *r, bool allow);

/**
 * kdl_h5_reader_read() - logical rows [@r0, @r1) into @out.
 * @out: (r1 - r0) * cols doubles, row-major; on failure its contents are
 *       unspecified (the common path reads straight into it, then checks).
 *
 * Memory: besides @out, one raw block when a spatial rule reduces rows.
 * Return: 0; -KDL_ENONFINITE naming the dataset and the first sample
 * (stored row index) with NaN/Inf; -KDL_EHDF5; -ENOMEM.
 */
KDL_API int kdl_h5_reader_read(kdl_h5reader *r, size_t r0, size_t r1, double *out);

/* ---- Teacher/student alignment -------------------------------------------- */

typedef struct kdl_pair {
        size_t n;             /* aligned samples (logical rows) */
        bool joined;          /* aligned through /sample_ids */
        size_t *student_rows; /* student stored row of logical row i; NULL = identity */
        size_t *teacher_rows; /* teacher stored row of logical row i; NULL = identity (every
                                 teacher row; only an inner join leaves some out) */
        kdl_h5file *teacher;  /* the files paired; borrowed, must outlive the pair */
        kdl_h5file *student;
} kdl_pair;

/**
 * kdl_h5_pair() - align the samples of a teacher and a student dump.
 *
 * When both have /sample_ids, samples are joined on them (the ids must be
 * the same set, each once); otherwise both must hold the same N samples in
 * the same order.
 *
 * @ret: set on success only; caller frees with kdl_pair_free().
 * Return: 0; -KDL_EMISMATCH saying how many samples differ; -KDL_ESCHEMA
 * for duplicate ids; -KDL_EHDF5; -ENOMEM.
 */
KDL_API int kdl_h5_pair(kdl_h5file *teacher, kdl_h5file *student, kdl_pair **ret);

/**
 * kdl_h5_pair_join() - kdl_h5_pair(), or with @inner and /sample_ids in both
 * dumps, the inner join: only the ids both hold, in the teacher's row order
 * (teacher_rows says which).  Without ids in both, @inner changes nothing.
 * Return: as kdl_h5_pair(); with @inner, -KDL_EMISMATCH when no id is shared.
 */
KDL_API int kdl_h5_pair_join(kdl_h5file *teacher, kdl_h5file *student, bool inner, kdl_pair **ret);

/** kdl_pair_free() - free @p.  NULL is a no-op. */
KDL_API void kdl_pair_free(kdl_pair *p);

#endif
