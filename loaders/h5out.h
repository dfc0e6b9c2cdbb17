/* SPDX-License-Identifier: MIT */
#ifndef KDL_LOADERS_H5OUT_H
#define KDL_LOADERS_H5OUT_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics/base/error.h"

/*
 * Writing per-sample results (--per-sample OUT.h5): float64 vectors indexed
 * by sample, filled in blocks, plus string and real attributes.  The file is
 * written under a temporary name beside @path and renamed onto it only by
 * kdl_h5out_commit(), so an interrupted or failed run never leaves a half
 * file and never destroys what was there (DESIGN.md "Bad input and failure").
 * Samples never written read back as NaN (e.g. skipped for NaN/Inf input).
 */

typedef struct kdl_h5out kdl_h5out;

/**
 * kdl_h5out_open() - start writing @path (borrowed).
 * @ret: set on success only; finish with kdl_h5out_commit() or kdl_h5out_abort().
 * Return: 0; -errno when the temporary file cannot be created (e.g. -ENOENT
 * for a missing directory); -KDL_EHDF5; -ENOMEM.
 */
KDL_API int kdl_h5out_open(const char *path, kdl_h5out **ret);

/**
 * kdl_h5out_attr_str() - set attribute @name of group @group (absolute;
 * created with its parents when missing) to the string @v.
 * Return: 0; -KDL_EHDF5; -ENOMEM.
 */
KDL_API int kdl_h5out_attr_str(kdl_h5out *f, const char *group, const char *name, const char *v);

/** kdl_h5out_attr_real() - as kdl_h5out_attr_str() for a float64 attribute. */
KDL_API int kdl_h5out_attr_real(kdl_h5out *f, const char *group, const char *name, double v);

/**
 * kdl_h5out_vector() - create the float64 dataset @path [@n], every value
 * NaN until written, and its parent groups.
 * Return: the vector's handle (>= 0) for kdl_h5out_scatter(); -KDL_EHDF5
 * (e.g. @path exists); -ENOMEM.
 */
KDL_API int kdl_h5out_vector(kdl_h5out *f, const char *path, size_t n);

/**
 * kdl_h5out_scatter() - write @v[i] at position @idx[i] of vector @id,
 * i < @m; @idx strictly increasing, each < the vector's length.
 * Return: 0; -KDL_ERANGE for a bad index; -KDL_EHDF5.
 */
KDL_API int kdl_h5out_scatter(kdl_h5out *f, int id, const size_t *idx, size_t m, const double *v);

/**
 * kdl_h5out_commit() - close the file and rename it onto its path.  Frees
 * @f in every case (on failure the temporary file is removed).
 * Return: 0; -KDL_EHDF5 when closing fails; -errno when renaming fails.
 */
KDL_API int kdl_h5out_commit(kdl_h5out *f);

/** kdl_h5out_abort() - close and remove the temporary file; frees @f.  NULL is a no-op. */
KDL_API void kdl_h5out_abort(kdl_h5out *f);

#endif
