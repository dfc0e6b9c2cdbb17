/* SPDX-License-Identifier: MIT */
#ifndef KDL_LOADERS_H5_INTERNAL_H
#define KDL_LOADERS_H5_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>

#include "metrics/base/error.h"
#include "loaders/h5.h"

/*
 * Internals shared by the files of loaders/: h5.c (the file object),
 * h5-describe.c (HDF5 objects), h5-catalog.c (the schema walk), h5-read.c
 * (reading data), h5-scan.c (the value scan), h5-pair.c (alignment), and
 * the writer.
 */

struct kdl_h5file {
        hid_t fid;
        kdl_dump dump;
};

/* ---- h5.c ----------------------------------------------------------------- */

/** kdl__h5_init() - silence HDF5's own error printing (idempotent). */
void kdl__h5_init(void);

/** kdl__h5_last_error() - the innermost description on HDF5's error stack, in @buf. */
const char *kdl__h5_last_error(char buf[static 256]);

/** kdl__h5_fid() - the HDF5 file id of @f (borrowed). */
hid_t kdl__h5_fid(const kdl_h5file *f);

/**
 * kdl__h5_problem() - add a schema problem to @f's catalogue, prefixed with
 * the file's name.  Problems are one line each; the first one also becomes
 * kdl_h5_check()'s error.
 */
void kdl__h5_problem(kdl_h5file *f, const char *fmt, ...) KDL_PRINTF(2, 3);

/* ---- h5-describe.c -------------------------------------------------------- */

/** kdl__h5_path_valid() - true if every link of @path exists under @loc. */
bool kdl__h5_path_valid(hid_t loc, const char *path);

/** kdl__h5_is_group() - true if @path under @loc is a group. */
bool kdl__h5_is_group(hid_t loc, const char *path);

/** kdl__h5_is_dataset() - true if @path under @loc is a dataset. */
bool kdl__h5_is_dataset(hid_t loc, const char *path);

/** kdl__h5_join() - "@group/@name" ("/@name" under the root); caller frees; NULL on ENOMEM. */
char *kdl__h5_join(const char *group, const char *name);

/**
 * kdl__h5_attr_int(), kdl__h5_attr_string() - attribute @name of object
 * @obj: a scalar integer, or a string (caller frees *@ret).
 * @ret_present: whether the attribute exists at all.
 * Return: 0 on success, -1 when absent or of the wrong kind.
 */
int kdl__h5_attr_int(hid_t loc, const char *obj, const char *name, int64_t *ret, bool *ret_present);
int kdl__h5_attr_string(hid_t loc, const char *obj, const char *name, char **ret,
                        bool *ret_present);

/** kdl__h5_shape_text() - "2-D [60, 5]" for @ds, in @buf of @len bytes. */
void kdl__h5_shape_text(const kdl_dsinfo *ds, char *buf, size_t len);

/**
 * kdl__h5_describe() - describe dataset @path of @f into @ret.
 * Return: 0 when it is a dataset we can describe, -1 (problem recorded)
 * otherwise.  @ret->path is owned by the catalogue.
 */
int kdl__h5_describe(kdl_h5file *f, const char *path, kdl_dsinfo *ret);

/**
 * kdl__h5_describe_new() - describe an optional dataset into a new heap
 * dsinfo (free with kdl__h5_dsinfo_free()); NULL if absent or unusable.
 */
kdl_dsinfo *kdl__h5_describe_new(kdl_h5file *f, const char *path);

/** kdl__h5_dsinfo_release() - free what @ds owns, not @ds.  NULL is a no-op. */
void kdl__h5_dsinfo_release(kdl_dsinfo *ds);

/** kdl__h5_dsinfo_free() - free a heap @ds.  NULL is a no-op. */
void kdl__h5_dsinfo_free(kdl_dsinfo *ds);

/* The names of a group's links, in name order. */
struct kdl__h5_names {
        size_t n;
        char **v;
};

/** kdl__h5_list_group() - the links of group @path into @ret; 0, or -1. */
int kdl__h5_list_group(hid_t fid, const char *path, struct kdl__h5_names *ret);

/** kdl__h5_names_release() - free the names and empty @ns. */
void kdl__h5_names_release(struct kdl__h5_names *ns);

/* ---- h5-catalog.c --------------------------------------------------------- */

/** kdl__h5_catalog() - fill @f's catalogue from its file (kdl_h5_open()). */
void kdl__h5_catalog(kdl_h5file *f);

/** kdl__h5_dump_release() - free everything @d owns (a half-built @d too). */
void kdl__h5_dump_release(kdl_dump *d);

/* ---- h5-read.c ------------------------------------------------------------ */

/**
 * kdl__h5_read_int64() - the whole 1-D integer dataset @ds of @f.
 * @ret: set on success only, caller frees with free().
 * Return: 0; -KDL_ESCHEMA if @ds is not 1-D integers; -KDL_EHDF5; -ENOMEM.
 */
int kdl__h5_read_int64(kdl_h5file *f, const kdl_dsinfo *ds, int64_t **ret);

/** kdl__h5_row_finite() - true if none of the @n values of @row is NaN or Inf. */
bool kdl__h5_row_finite(const double *row, size_t n);

#endif
