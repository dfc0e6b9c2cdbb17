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
        hid_t lapl, gapl, dapl; /* link, group, dataset access: external links refused */
        uint64_t size;          /* bytes of the file, from fstat() at open */
        kdl_dump dump;
};

/* The longest string attribute read (role, model, the head's input). */
#define KDL__H5_ATTR_MAX 4096

/* ---- h5.c ----------------------------------------------------------------- */

/** kdl__h5_init() - silence HDF5's own error printing (idempotent). */
void kdl__h5_init(void);

/**
 * kdl__h5_last_error() - why the HDF5 call that just failed failed: the
 * innermost description on HDF5's error stack, in @buf.  Call it at the
 * point of failure, before any other HDF5 call (closing a handle clears the
 * stack).  Never empty: an empty stack says so.
 */
const char *kdl__h5_last_error(char buf[static 256]);

/**
 * kdl__h5_isolate() - whether kdl_h5_open() catalogues a file in a child
 * process first (the default), so that a crash or a hang of libhdf5 on a
 * damaged file becomes an error.  Tests and fuzzers of the catalogue turn it
 * off to see crashes in kdlens's own code.  Not thread-safe: set it before
 * opening files.
 */
void kdl__h5_isolate(bool on);

/** kdl__h5_fid() - the HDF5 file id of @f (borrowed). */
hid_t kdl__h5_fid(const kdl_h5file *f);

/**
 * kdl__h5_nomem() - record that memory ran out working on @file (and object
 * @obj, when not NULL).  Every allocation failure in loaders/ ends here.
 * Return: -ENOMEM.
 */
int kdl__h5_nomem(const char *file, const char *obj);

/**
 * kdl__h5_problem() - add a schema problem to @f's catalogue, prefixed with
 * the file's name.  Problems are one line each; the first one also becomes
 * kdl_h5_check()'s error.
 * Return: 0; -ENOMEM (the problem is then lost, and so is the catalogue).
 */
int kdl__h5_problem(kdl_h5file *f, const char *fmt, ...) KDL_PRINTF(2, 3);

/* ---- h5-describe.c -------------------------------------------------------- */

/*
 * The lookups below return 1 when they find what they look for, and 0 when
 * they do not: either nothing is there (the link is absent; nothing is
 * recorded) or something is there that cannot be used (a damaged object, one
 * of another kind, a dangling, looping or external link, a value of another
 * type: a problem naming the object is recorded).  Only a missing link is
 * absent.  -ENOMEM (message recorded): a catalogue is complete or not made.
 */

/**
 * kdl__h5_find() - object @path of @f, expected to be a @want
 * (H5O_TYPE_GROUP or H5O_TYPE_DATASET) holding @what ("the logits [N, C]",
 * for messages).  Every group on the way must be a group.  Links to other
 * files are never followed.
 * @ret_present: whether anything is at @path (false: absent).
 * Return: 1, 0 or -ENOMEM as above.
 */
int kdl__h5_find(kdl_h5file *f, const char *path, H5O_type_t want, const char *what,
                 bool *ret_present);

/** kdl__h5_join() - "@group/@name" ("/@name" under the root); caller frees; NULL on ENOMEM. */
char *kdl__h5_join(const char *group, const char *name);

/**
 * kdl__h5_check_attrs() - check that no attribute of object @obj holds more
 * data than the file (a damaged attribute message); call it before reading
 * attributes of @obj.
 * Return: 1, 0 (problem recorded) or -ENOMEM.
 */
int kdl__h5_check_attrs(kdl_h5file *f, const char *obj);

/**
 * kdl__h5_attr_int() - the attribute @name of object @obj: one integer of a
 * standard type (1, 2, 4 or 8 bytes).
 * @ret:         set when read.
 * @ret_present: whether the attribute exists at all.
 * Return: 1 when read; 0 when absent, or unusable (another type or shape,
 * damaged: a problem recorded); -ENOMEM.
 */
int kdl__h5_attr_int(kdl_h5file *f, const char *obj, const char *name, int64_t *ret,
                     bool *ret_present);

/**
 * kdl__h5_attr_string() - the attribute @name of object @obj: one string,
 * fixed or variable length, of at most KDL__H5_ATTR_MAX bytes.
 * @ret:         set when read; caller frees.
 * @ret_present: whether the attribute exists at all.
 * Return: 1 when read; 0 when absent or unusable (a problem recorded); -ENOMEM.
 */
int kdl__h5_attr_string(kdl_h5file *f, const char *obj, const char *name, char **ret,
                        bool *ret_present);

/** kdl__h5_dtype() - the catalogue's (static) spelling of dtype @name; "other" if unknown. */
const char *kdl__h5_dtype(const char *name);

/** kdl__h5_shape_text() - "2-D [60, 5]" for @ds, in @buf of @len bytes. */
void kdl__h5_shape_text(const kdl_dsinfo *ds, char *buf, size_t len);

/**
 * kdl__h5_describe() - describe dataset @path of @f, holding @what (for
 * messages), into @ret.  Numbers must be IEEE binary16/32/64 floats or
 * standard integers; the data a numeric dataset declares must be in the
 * file (contiguous data within its size, every chunk written, compact data)
 * before anything reads it; other classes (strings, compounds...) are
 * described, with is_float and is_integer false, and never read.
 * @ret: set when described; ret->path is owned by the catalogue.
 * Return: 1; 0 when absent, or when it cannot be used (problem recorded:
 * damaged, of another kind, a non-standard number, overflowing, empty, of
 * too high a rank, not backed by data); -ENOMEM.
 */
int kdl__h5_describe(kdl_h5file *f, const char *path, const char *what, kdl_dsinfo *ret);

/**
 * kdl__h5_describe_new() - kdl__h5_describe() into a new heap dsinfo.
 * @required: when absent, record "expected @what, found none".
 * @ret: set when described; free with kdl__h5_dsinfo_free().
 * Return: 1; 0 when absent or unusable; -ENOMEM.
 */
int kdl__h5_describe_new(kdl_h5file *f, const char *path, const char *what, bool required,
                         kdl_dsinfo **ret);

/** kdl__h5_dsinfo_release() - free what @ds owns, not @ds.  NULL is a no-op. */
void kdl__h5_dsinfo_release(kdl_dsinfo *ds);

/** kdl__h5_dsinfo_free() - free a heap @ds.  NULL is a no-op. */
void kdl__h5_dsinfo_free(kdl_dsinfo *ds);

/* The names of a group's links, in name order. */
struct kdl__h5_names {
        size_t n;
        char **v;
};

/**
 * kdl__h5_list_group() - the links of group @path of @f (found with
 * kdl__h5_find()), appended to @ret.  Names no HDF5 path can hold ("",
 * ".", with a '/') are problems, left out.
 * Return: 1; 0 when HDF5 cannot list them (a damaged group: problem
 * recorded); -ENOMEM.  @ret may hold names on any return: release it with
 * kdl__h5_names_release().
 */
int kdl__h5_list_group(kdl_h5file *f, const char *path, struct kdl__h5_names *ret);

/** kdl__h5_names_release() - free the names and empty @ns. */
void kdl__h5_names_release(struct kdl__h5_names *ns);

/* ---- h5-catalog.c --------------------------------------------------------- */

/**
 * kdl__h5_catalog() - fill @f's catalogue from the structure of its file
 * (kdl_h5_open()); reads no dataset.
 * Return: 0, the schema problems listed in the catalogue; -ENOMEM, the
 * catalogue then half-built: free it with kdl__h5_dump_release().
 */
int kdl__h5_catalog(kdl_h5file *f);

/**
 * kdl__h5_check_labels() - read @f's /labels (when catalogued as 1-D
 * integers), set the dump's label range and add a problem for a label
 * outside [0, C).
 * Return: 0; -ENOMEM.
 */
int kdl__h5_check_labels(kdl_h5file *f);

/**
 * kdl__h5_dump_pack() - @d as bytes for kdl__h5_dump_unpack() in another
 * process; with @d NULL, the error @err and kdl_errmsg() instead.
 * @ret, @ret_len: set on success; caller frees @ret.
 * Return: 0; -ENOMEM.
 */
int kdl__h5_dump_pack(const kdl_dump *d, int err, char **ret, size_t *ret_len);

/**
 * kdl__h5_dump_unpack() - fill the empty @d (its path set) from @len bytes
 * at @buf made by kdl__h5_dump_pack().
 * Return: 1; 0 when @buf is cut short or malformed (its writer died); the
 * packed error (its message recorded); -ENOMEM.  On any return but 1, @d
 * may be half-built: release it with kdl__h5_dump_release().
 */
int kdl__h5_dump_unpack(kdl_dump *d, const char *buf, size_t len);

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

/** kdl__h5_nonfinite_kind() - "NaN" if one of the @n values of @row is NaN, else "Inf". */
const char *kdl__h5_nonfinite_kind(const double *row, size_t n);

#endif
