/* SPDX-License-Identifier: MIT */
#ifndef KDL_LOADERS_H5WRITE_H
#define KDL_LOADERS_H5WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "metrics/base/error.h"

/*
 * Writing kdlens dumps (schema v1, DESIGN.md): the synthetic generator, the
 * test fixtures and the benchmarks write through this module so that only
 * loaders/ includes hdf5.h.  Data go in as row blocks of doubles (or int64 for
 * integer stores) and HDF5 converts them to the stored type; a dataset never
 * has to be held whole in memory.
 *
 * Objects: a kdl_h5w (one file open for writing) and kdl_h5wds (one dataset
 * of it).  Close every dataset before its file.  Nothing here prints: HDF5's
 * error stack printing is switched off and failures come back as negative
 * codes with a message naming the file and the object (STYLE.md 3.2).
 */

/* How a dataset is stored on disk. */
enum kdl_store {
        KDL_STORE_F16, /* IEEE binary16, little-endian (as h5py/numpy float16) */
        KDL_STORE_F32, /* IEEE binary32, little-endian */
        KDL_STORE_F64, /* IEEE binary64, little-endian */
        KDL_STORE_I64, /* signed 64-bit, little-endian */
        KDL_STORE_I32, /* signed 32-bit, little-endian */
        KDL_STORE_U8,  /* unsigned 8-bit */
        KDL_STORE_COUNT_
};

/** kdl_store_name() - "float16", "float32", "float64", "int64", "int32" or "uint8". */
KDL_API const char *kdl_store_name(enum kdl_store store);

/**
 * kdl_store_parse() - the store called @s (one of the names above, or the
 * short forms "f16", "f32", "f64").
 * Return: 0 with *@ret set; -KDL_EUSAGE (message recorded) otherwise.
 */
KDL_API int kdl_store_parse(const char *s, enum kdl_store *ret);

typedef struct kdl_h5w kdl_h5w;
typedef struct kdl_h5wds kdl_h5wds;

/**
 * kdl_h5w_open() - create (or truncate) the dump @path and write the root
 * attributes kdlens_format=1, role=@role and model=@model.
 * @path:  borrowed.
 * @role:  "teacher" or "student" (not checked: fixtures may write bad dumps);
 *         NULL writes no role attribute.
 * @model: NULL writes no model attribute.
 * @ret:   set on success only; caller closes with kdl_h5w_close().
 *
 * String attributes are scalar variable-length UTF-8 strings, as h5py
 * writes them, so Python reads them back as str.
 *
 * Return: 0; -errno (e.g. -ENOENT, -EACCES, -EISDIR) when the file cannot be
 * created and the system said why; -KDL_EHDF5 otherwise; -ENOMEM.
 */
KDL_API int kdl_h5w_open(const char *path, const char *role, const char *model, kdl_h5w **ret);

/**
 * kdl_h5w_open_plain() - create (or truncate) @path as a plain HDF5 file
 * with no dump attributes, for results that are not dumps (per-sample
 * outputs).  Otherwise as kdl_h5w_open().
 */
KDL_API int kdl_h5w_open_plain(const char *path, kdl_h5w **ret);

/**
 * kdl_h5w_close() - flush and close @w.  NULL is a no-op.  All datasets of
 * @w must have been closed.  @w is freed even when closing fails.
 * Return: 0; -KDL_EHDF5 if HDF5 could not flush or close the file.
 */
KDL_API int kdl_h5w_close(kdl_h5w *w);

/**
 * kdl_h5w_group_new() - make sure group @path exists, creating it and any
 * missing intermediate groups.  An existing group is not an error.
 * @path: absolute ("/checkpoints/final"); borrowed.
 * Return: 0; -KDL_EHDF5 (e.g. a dataset is in the way).
 */
KDL_API int kdl_h5w_group_new(kdl_h5w *w, const char *path);

/**
 * kdl_h5w_dataset_open() - create dataset @path of @w, with any missing
 * intermediate groups, ready for row-block writes.
 * @path:       absolute ("/checkpoints/final/features/layer1"); borrowed.
 * @ndim:       1..4; rows are along the first dimension.
 * @shape:      @ndim sizes (borrowed); a zero size is allowed.
 * @store:      the stored type.
 * @chunk_rows: 0 for contiguous storage; otherwise chunks of @chunk_rows
 *              rows (clamped to the row count) by the full trailing shape.
 * @gzip:       -1 for no compression, 0..9 for deflate at that level (needs
 *              @chunk_rows > 0).
 * @ret:        set on success only; caller closes with kdl_h5w_dataset_close()
 *              before closing @w.
 *
 * Unwritten rows read back as zeros.  A dataset with no elements is stored
 * contiguous whatever @chunk_rows and @gzip say (HDF5 has no empty chunks).
 *
 * Return: 0; -KDL_EUSAGE for a bad @ndim, @store, @gzip, or gzip without
 * chunks; -KDL_EOVERFLOW when a chunk exceeds HDF5's 4 GiB limit or the
 * sizes overflow; -KDL_EHDF5 (e.g. the dataset exists, deflate is not
 * available); -ENOMEM.
 */
KDL_API int kdl_h5w_dataset_open(kdl_h5w *w, const char *path, size_t ndim, const size_t *shape,
                                 enum kdl_store store, size_t chunk_rows, int gzip,
                                 kdl_h5wds **ret);

/**
 * kdl_h5w_write_rows() - write rows [@r0, @r1) of a floating-point dataset.
 * @rows: (r1 - r0) * (product of the trailing shape) doubles, row-major;
 *        borrowed.
 *
 * HDF5 converts to the stored type: a C cast (round to nearest) for
 * float32; for float16 HDF5's software conversion, which rounds to nearest
 * but breaks ties away from zero (numpy breaks them to even) and turns
 * magnitudes above the float16 range into infinities.  Callers that need
 * numpy-identical float16 values round first with kdl_h5w_round_f16().
 *
 * Return: 0; -KDL_ERANGE if [@r0, @r1) is not within the rows;
 * -KDL_EUSAGE if the dataset has an integer store; -KDL_EHDF5.
 */
KDL_API int kdl_h5w_write_rows(kdl_h5wds *d, size_t r0, size_t r1, const double *rows);

/**
 * kdl_h5w_write_rows_i64() - write rows [@r0, @r1) of an integer dataset.
 * @rows: as for kdl_h5w_write_rows(), int64 values.
 * Return: 0; -KDL_ERANGE if [@r0, @r1) is not within the rows or a value
 * does not fit the stored type (nothing is written); -KDL_EUSAGE if the
 * dataset has a floating-point store; -KDL_EHDF5.
 */
KDL_API int kdl_h5w_write_rows_i64(kdl_h5wds *d, size_t r0, size_t r1, const int64_t *rows);

/**
 * kdl_h5w_dataset_close() - close @d.  NULL is a no-op; @d is freed even
 * when closing fails.
 * Return: 0; -KDL_EHDF5.
 */
KDL_API int kdl_h5w_dataset_close(kdl_h5wds *d);

/**
 * kdl_h5w_attr_int() - set the scalar int64 attribute @name of the group or
 * dataset @path ("/" for the root), replacing any attribute of that name.
 * Return: 0; -KDL_EMISSING if @path does not exist; -KDL_EHDF5.
 */
KDL_API int kdl_h5w_attr_int(kdl_h5w *w, const char *path, const char *name, int64_t value);

/**
 * kdl_h5w_attr_string() - as kdl_h5w_attr_int() for a string attribute
 * (scalar, variable-length, UTF-8).
 */
KDL_API int kdl_h5w_attr_string(kdl_h5w *w, const char *path, const char *name, const char *value);

/**
 * kdl_h5w_round_f16() - @x rounded to the nearest IEEE binary16 value, ties
 * to even (as numpy's float16 cast); ±Inf beyond the float16 range; NaN and
 * zeros unchanged.  The result is exactly representable in float16, so
 * writing it to a KDL_STORE_F16 dataset stores it unchanged.
 */
KDL_API double kdl_h5w_round_f16(double x);

/**
 * kdl_h5w_round() - @x as it will be stored in @store: rounded to float16
 * (kdl_h5w_round_f16()) or float32, unchanged for float64.  Integer stores
 * return @x unchanged.
 */
KDL_API double kdl_h5w_round(double x, enum kdl_store store);

#endif
