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
 * h5-describe.c (HDF5 objects), h5-types.c (numbers), h5-attr.c
 * (attributes), h5-catalog.c (the schema walk), h5-pack.c (the catalogue
 * between processes), h5-read.c (reading data), h5-scan.c (the value
 * scan), h5-pair.c (alignment), and the writer.
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

/* ---- h5-catalog.c: checks shared with h5-topk.c ----------------------------- */

/* These return 1 when the check holds, 0 with a problem recorded, -ENOMEM. */

/* kdl__h5_check_rows() - @ds has N rows (N set by the first dataset that says); @what says
 * as what ("as /labels"). */
int kdl__h5_check_rows(kdl_h5file *f, const kdl_dsinfo *ds, const char *what);

/* kdl__h5_expect_float() - @ds holds floating-point values. */
int kdl__h5_expect_float(kdl_h5file *f, const kdl_dsinfo *ds);

/* kdl__h5_expect_rank() - @ds has rank @lo..@hi; @expected describes it ("2-D [N, C]"). */
int kdl__h5_expect_rank(kdl_h5file *f, const kdl_dsinfo *ds, size_t lo, size_t hi,
                        const char *expected);

/* kdl__h5_expect_integers() - @ds is 1-D (@expected) of integers (@what). */
int kdl__h5_expect_integers(kdl_h5file *f, const kdl_dsinfo *ds, const char *expected,
                            const char *what);

/* ---- h5-topk.c: sparse teacher logits and token datasets -------------------- */

/* kdl__h5_scan_topk() - logits_topk/ of @ck, when there: the shapes and types of its
 * datasets (after the logits, so that C is known).  Return: 0; -ENOMEM. */
int kdl__h5_scan_topk(kdl_h5file *f, kdl_checkpoint *ck);

/* kdl__h5_scan_tokens() - /sequence_ids and /positions, when there: 1-D integers of N rows.
 * Return: 0; -ENOMEM. */
int kdl__h5_scan_tokens(kdl_h5file *f);

/* kdl__h5_check_topk() - the values of every logits_topk/indices (data, read in the parent as
 * the labels are): whole numbers in [0, C), distinct within a row; a problem for the first
 * that is not.  Return: 0; -ENOMEM. */
int kdl__h5_check_topk(kdl_h5file *f);

void kdl__h5_topk_release(kdl_checkpoint *ck);

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

/* ---- h5-types.c ----------------------------------------------------------- */

/* What a thing found is, when it is not what was expected: the text of a problem. */
struct kdl__h5_why {
        char text[1024];
};

/**
 * kdl__h5_ieee_float() - the name of float type @type ("float32") if it is
 * an IEEE binary16/32/64 float in little or big endian order; else NULL,
 * and what it is in @w.
 */
const char *kdl__h5_ieee_float(hid_t type, struct kdl__h5_why *w);

/**
 * kdl__h5_std_integer() - the name of integer type @type ("int64") if it is
 * a whole-byte integer of 1, 2, 4 or 8 bytes, little or big endian; else
 * NULL, and what it is in @w.
 */
const char *kdl__h5_std_integer(hid_t type, struct kdl__h5_why *w);

/** kdl__h5_class_name() - the (static) name of type class @c ("string", "other"...). */
const char *kdl__h5_class_name(H5T_class_t c);

/** kdl__h5_dtype() - the catalogue's (static) spelling of dtype @name; "other" if unknown. */
const char *kdl__h5_dtype(const char *name);

/* ---- h5-attr.c ------------------------------------------------------------ */

/* The attribute readers return 1, 0 or -ENOMEM as h5-describe.c's lookups. */

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
 * kdl__h5_check_ids() - read @f's /sample_ids (when catalogued as 1-D
 * integers) and add a problem for an id held by two rows: the smallest such
 * id, at the first two rows holding it.  Memory: two copies of the ids.
 * Return: 0; -ENOMEM.
 */
int kdl__h5_check_ids(kdl_h5file *f);

/** kdl__h5_dump_release() - free everything @d owns (a half-built @d too). */
void kdl__h5_dump_release(kdl_dump *d);

/* ---- h5-pack.c ------------------------------------------------------------ */

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

/* ---- h5-convert.c --------------------------------------------------------- */

/* A stored numeric type that kdlens converts itself. */
struct kdl__h5_num {
        size_t size;    /* bytes: 1, 2, 4 or 8 */
        bool is_float;  /* IEEE 754 binary16, 32 or 64; else an integer */
        bool is_signed; /* integers: two's complement, else unsigned */
        bool swap;      /* stored in the other byte order than this machine's */
};

/* What reads convert into: 8-byte elements either way. */
enum kdl__h5_to { KDL__H5_TO_DOUBLE, KDL__H5_TO_INT64 };

/**
 * kdl__h5_num_of() - describe the HDF5 datatype @type into @ret.
 * Return: 1; 0 when it is not IEEE binary16/32/64 nor a plain 8- to 64-bit
 * integer (other bit layouts, padding, VAX order, other classes).
 */
int kdl__h5_num_of(hid_t type, struct kdl__h5_num *ret);

/**
 * kdl__h5_convert() - @n values of type @t at @src into doubles or int64 at
 * @dst (KDL__H5_TO_INT64 only from integers; uint64 above INT64_MAX
 * saturates).  Exact for every float16, NaN payloads included; int64 and
 * uint64 round to the nearest double.  Safe on any thread.
 */
void kdl__h5_convert(const struct kdl__h5_num *t, enum kdl__h5_to to, const void *src, size_t n,
                     void *dst);

/**
 * kdl__h5_convert_tail() - kdl__h5_convert() in place: @buf holds 8 * @n
 * bytes, the @n stored values in its last @n * size bytes.
 */
void kdl__h5_convert_tail(const struct kdl__h5_num *t, enum kdl__h5_to to, void *buf, size_t n);

/**
 * kdl__h5_convert_box() - convert the box of shape @count at @src_start of
 * the row-major array @src (shape @src_shape, type @t) into the box at
 * @dst_start of the row-major array @dst of 8-byte elements (shape
 * @dst_shape).  @ndim is 1..KDL_MAX_DIMS.
 */
void kdl__h5_convert_box(const struct kdl__h5_num *t, enum kdl__h5_to to, size_t ndim,
                         const void *src, const size_t *src_shape, const size_t *src_start,
                         void *dst, const size_t *dst_shape, const size_t *dst_start,
                         const size_t *count);

/* How float16 is converted (a test hook: both ways must agree with numpy). */
enum kdl__h5_half {
        KDL__H5_HALF_AUTO,  /* F16C when the CPU has it, else the table */
        KDL__H5_HALF_TABLE, /* the 65,536-entry table */
        KDL__H5_HALF_F16C,  /* F16C */
};

/** kdl__h5_half_use() - convert float16 @how from now on; false if the CPU cannot. */
bool kdl__h5_half_use(enum kdl__h5_half how);

/* ---- h5-chunk.c ----------------------------------------------------------- */

/* Limits and threads of reading. */
struct kdl__h5_read_opts {
        size_t chunk_max;   /* bytes: a chunk larger, stored or decoded, is refused (256 MiB) */
        size_t cache_max;   /* bytes of decoded chunks kept between reads (64 MiB) */
        unsigned threads;   /* threads decoding chunks, the caller's included (CPUs, at most 4) */
        size_t thread_work; /* decoded bytes worth one more thread (512 KiB); 0: one per chunk */
};

/** kdl__h5_read_opts_init() - the defaults above. */
void kdl__h5_read_opts_init(struct kdl__h5_read_opts *o);

/* A chunked dataset read chunk by chunk, filters undone by kdlens. */
typedef struct kdl__h5_chunks kdl__h5_chunks;

/**
 * kdl__h5_chunks_open() - prepare to read dataset @did (of file @fid) of
 * stored type @t by chunks.
 * @file, @path: for messages; borrowed, must outlive the result, as @did.
 * @ret: set when 1 is returned; close with kdl__h5_chunks_close().
 *
 * Return: 1; 0 when the dataset is not chunked (read it with H5Dread());
 * -KDL_EHDF5 for a filter other than deflate, shuffle and fletcher32, for
 * chunks larger than @o->chunk_max, or a layout HDF5 cannot describe;
 * -ENOMEM.  Messages name the file, the dataset and the filter.
 */
int kdl__h5_chunks_open(const char *file, const char *path, hid_t fid, hid_t did,
                        const struct kdl__h5_num *t, const struct kdl__h5_read_opts *o,
                        kdl__h5_chunks **ret);

/** kdl__h5_chunks_close() - free @c and its cache.  NULL is a no-op. */
void kdl__h5_chunks_close(kdl__h5_chunks *c);

/**
 * kdl__h5_chunks_read() - the box @start/@count (within the dataset, every
 * count >= 1) into @out, row-major of shape @count, converted @to.
 *
 * Each chunk's stored size, filters and decoded size are checked; @out's
 * contents are unspecified on failure.  Memory: the chunks in flight
 * (about 64 MiB, or three chunks per thread when more) and the cache.
 * Return: 0; -KDL_EHDF5 naming the file, dataset and chunk for a chunk
 * declared but not written, stored past the end of the file or larger than
 * the limit, a deflate stream that is corrupt or inflates to another size
 * than the chunk's, a fletcher32 mismatch, or an HDF5 failure; -ENOMEM.
 * The error is the first in chunk order, whatever the threads.
 */
int kdl__h5_chunks_read(kdl__h5_chunks *c, const size_t *start, const size_t *count,
                        enum kdl__h5_to to, void *out);

/* ---- h5-read.c ------------------------------------------------------------ */

/**
 * kdl__h5_read_int64() - the whole 1-D integer dataset @ds of @f.
 * @ret: set on success only, caller frees with free().
 * Return: 0; -KDL_ESCHEMA if @ds is not 1-D integers; -KDL_EHDF5; -ENOMEM.
 */
int kdl__h5_read_int64(kdl_h5file *f, const kdl_dsinfo *ds, int64_t **ret);

/**
 * kdl__h5_reader_open_opts() - kdl_h5_reader_open() with limits and threads
 * @o (NULL: kdl__h5_read_opts_init()'s); @o is copied.
 */
int kdl__h5_reader_open_opts(kdl_h5file *f, const kdl_dsinfo *ds, enum kdl_spatial rule,
                             const struct kdl__h5_read_opts *o, kdl_h5reader **ret);

/**
 * kdl__h5_reader_read_box() - the box @start/@count of @r's dataset as
 * stored (no row map, no spatial rule, no check for NaN/Inf) into @out,
 * row-major of shape @count.  Memory: none beyond @out and the chunk cache.
 * Return: 0; -KDL_EHDF5; -ENOMEM.
 */
int kdl__h5_reader_read_box(kdl_h5reader *r, const size_t *start, const size_t *count, double *out);

/** kdl__h5_row_finite() - true if none of the @n values of @row is NaN or Inf. */
bool kdl__h5_row_finite(const double *row, size_t n);

/** kdl__h5_nonfinite_kind() - "NaN" if one of the @n values of @row is NaN, else "Inf". */
const char *kdl__h5_nonfinite_kind(const double *row, size_t n);

#endif
