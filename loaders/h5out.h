/* SPDX-License-Identifier: MIT */
#ifndef KDL_LOADERS_H5OUT_H
#define KDL_LOADERS_H5OUT_H

#include <stddef.h>
#include <stdint.h>

#include "metrics/base/error.h"

/*
 * A small HDF5 result writer for per-sample outputs (kdlens split
 * --per-sample): float64 and int64 datasets of one or two dimensions,
 * written in row blocks, and string attributes.  The file is written under a
 * temporary name in the target's directory and renamed into place by
 * kdl_h5out_commit(), so an interrupted run never leaves a half-written
 * file at @path (DESIGN.md "Bad input and failure").
 * It is a thin layer over loaders/h5write.h.
 */

typedef struct kdl_h5out kdl_h5out;

/**
 * kdl_h5out_open() - start writing the file @path (borrowed).
 * @ret: set on success only; finish with kdl_h5out_commit() or
 *       kdl_h5out_abort().
 * Return: 0; -errno when the temporary file cannot be created (the message
 * names @path); -KDL_EHDF5; -ENOMEM.
 */
KDL_API int kdl_h5out_open(const char *path, kdl_h5out **ret);

/**
 * kdl_h5out_dataset() - create dataset @name (absolute; missing groups are
 * created) of @rows x @cols values, or of @rows values when @cols is 0.
 * @integer: int64 instead of float64.
 * Return: the dataset's index (>= 0) for kdl_h5out_write*(); -KDL_EHDF5
 * (e.g. it exists); -KDL_EOVERFLOW; -ENOMEM.
 */
KDL_API int kdl_h5out_dataset(kdl_h5out *o, const char *name, size_t rows, size_t cols,
                              bool integer);

/**
 * kdl_h5out_write() - rows [@r0, @r1) of float64 dataset @index, row-major.
 * Return: 0; -KDL_ERANGE when the rows or the index are out of range, or the
 * dataset is int64; -KDL_EHDF5.
 */
KDL_API int kdl_h5out_write(kdl_h5out *o, int index, size_t r0, size_t r1, const double *rows);

/** kdl_h5out_write_i64() - as kdl_h5out_write() for an int64 dataset. */
KDL_API int kdl_h5out_write_i64(kdl_h5out *o, int index, size_t r0, size_t r1, const int64_t *rows);

/**
 * kdl_h5out_attr() - set the string attribute @name of the group or dataset
 * @path ("/" for the root); the group is created when missing.
 * Return: 0; -KDL_EHDF5.
 */
KDL_API int kdl_h5out_attr(kdl_h5out *o, const char *path, const char *name, const char *value);

/**
 * kdl_h5out_commit() - close the file and rename it to its final name.
 * @o is freed in every case; on failure the temporary file is removed.
 * Return: 0; -KDL_EHDF5; -errno from rename().
 */
KDL_API int kdl_h5out_commit(kdl_h5out *o);

/** kdl_h5out_abort() - close and remove the temporary file, free @o.  NULL is a no-op. */
KDL_API void kdl_h5out_abort(kdl_h5out *o);

#endif
