/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "loaders/h5-internal.h"
#include "loaders/h5write.h"
#include "loaders/h5write-internal.h"
#include "metrics/base/banned.h"

struct kdl_h5w {
        hid_t file;
        char *path;
        size_t open_datasets;
};

struct kdl_h5wds {
        kdl_h5w *w; /* borrowed: the file, for messages and the dataset count */
        hid_t dset;
        hid_t memtype16; /* native-order float16 for KDL_STORE_F16, else invalid */
        char *path;
        enum kdl_store store;
        size_t ndim;
        hsize_t shape[4];
        size_t rowelems; /* elements per row: product of the trailing shape */
};

/* HDF5 keeps chunks below 4 GiB. */
#define MAX_CHUNK_BYTES ((size_t) UINT32_MAX)
/* The chunk cache holds two chunks (at least HDF5's default 1 MiB) so that
 * row blocks that straddle chunk boundaries do not re-read and re-compress
 * partial chunks; the cap keeps memory bounded for huge rows. */
#define MIN_CACHE_BYTES ((size_t) 1 << 20)
#define MAX_CACHE_BYTES ((size_t) 256 << 20)

/* Record a failure of HDF5 on @obj of @file (the message names both and
 * what was being done) and return -KDL_EHDF5. */
static int h5fail(const char *file, const char *obj, const char *fmt, ...) KDL_PRINTF(3, 4);

static int h5fail(const char *file, const char *obj, const char *fmt, ...)
{
        char buf[256], *what;
        va_list ap;
        int err;

        /* Out of memory for the message only: HDF5's failure is the error. */
        va_start(ap, fmt);
        what = kdl__vasprintf(fmt, ap);
        va_end(ap);
        err = kdl_error(-KDL_EHDF5, "'%s': %s: %s (HDF5: %s)", file, obj, what ? what : fmt,
                        kdl__h5_last_error(buf));
        free(what);
        return err;
}

/* Paths are absolute, without empty components or a trailing slash
 * ("/" itself is the root). */
static int check_path(const kdl_h5w *w, const char *path)
{
        size_t len = strlen(path);

        if (path[0] != '/' || strstr(path, "//") || (len > 1 && path[len - 1] == '/'))
                return kdl_error(-KDL_EUSAGE, "'%s': '%s' is not an absolute HDF5 path", w->path,
                                 path);
        return 0;
}

/* An object creation property list of @cls that does not record
 * modification times, so that the same data make the same bytes. */
static hid_t untimed_plist(hid_t cls)
{
        hid_t p = H5Pcreate(cls);

        if (p >= 0 && H5Pset_obj_track_times(p, 0) < 0) {
                H5Pclose(p);
                return H5I_INVALID_HID;
        }
        return p;
}

/*
 * One component @p of a walk_groups() walk: 1 if it exists (or was created),
 * 0 if it is missing and @create is false, negative on errors.  With
 * @must_be_group an existing object that is not a group is an error when
 * creating, and makes the rest of the path missing when looking up.
 */
static int visit_group(kdl_h5w *w, const char *p, bool create, bool must_be_group, hid_t *gcpl)
{
        htri_t e;
        hid_t o;
        int r = 1;

        e = H5Lexists(w->file, p, H5P_DEFAULT);
        if (e < 0)
                return h5fail(w->path, p, "cannot look up");
        if (e > 0) {
                if (!must_be_group)
                        return 1;
                o = H5Oopen(w->file, p, H5P_DEFAULT);
                if (o < 0)
                        return h5fail(w->path, p, "cannot open");
                /* Looking up, "/dataset/x" is simply missing. */
                if (H5Iget_type(o) != H5I_GROUP)
                        r = create ? kdl_error(-KDL_EHDF5, "'%s': %s: exists and is not a group",
                                               w->path, p)
                                   : 0;
                H5Oclose(o);
                return r;
        }
        if (!create)
                return 0;
        if (*gcpl < 0) {
                *gcpl = untimed_plist(H5P_GROUP_CREATE);
                if (*gcpl < 0)
                        return h5fail(w->path, p, "cannot make group properties");
        }
        o = H5Gcreate2(w->file, p, H5P_DEFAULT, *gcpl, H5P_DEFAULT);
        if (o < 0)
                return h5fail(w->path, p, "cannot create the group");
        H5Gclose(o);
        return 1;
}

/*
 * Visit the components of @path ("/a", "/a/b", ...) in turn; with
 * @parents_only the last one is left out (it is the dataset being made).
 * With @create, missing groups are made and everything visited must be a
 * group; without it, the walk stops at the first missing component (or
 * the first intermediate one that is not a group).
 * Return: 1 if every visited component exists, 0 if one is missing (only
 * without @create), negative on errors.  H5Lexists() on "/a/b" fails,
 * rather than saying no, when "/a" is missing: hence the walk.
 */
static int walk_groups(kdl_h5w *w, const char *path, bool parents_only, bool create)
{
        hid_t gcpl = H5I_INVALID_HID;
        size_t len = strlen(path);
        char *p;
        int r = 1;

        p = kdl__strdup(path);
        if (!p)
                return kdl__h5_nomem(w->path, path);
        for (size_t i = 1; i <= len && r > 0 && len > 1; i++) {
                bool last = i == len;

                if (!last && p[i] != '/')
                        continue;
                if (last && parents_only)
                        break;
                p[i] = '\0';
                r = visit_group(w, p, create, !last || create, &gcpl);
                p[i] = path[i];
        }
        if (gcpl >= 0)
                H5Pclose(gcpl);
        free(p);
        return r;
}

static int write_string_attr(kdl_h5w *w, hid_t obj, const char *opath, const char *name,
                             const char *value)
{
        hid_t type = H5I_INVALID_HID, space = H5I_INVALID_HID, attr = H5I_INVALID_HID;
        int err = 0;

        type = H5Tcopy(H5T_C_S1);
        if (type < 0 || H5Tset_size(type, H5T_VARIABLE) < 0 ||
            H5Tset_cset(type, H5T_CSET_UTF8) < 0) {
                err = h5fail(w->path, opath, "cannot make a string type");
                goto out;
        }
        space = H5Screate(H5S_SCALAR);
        if (space < 0) {
                err = h5fail(w->path, opath, "cannot make a scalar dataspace");
                goto out;
        }
        if (H5Aexists(obj, name) > 0 && H5Adelete(obj, name) < 0) {
                err = h5fail(w->path, opath, "cannot replace an attribute");
                goto out;
        }
        attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
        if (attr < 0 || H5Awrite(attr, type, &value) < 0) {
                err = h5fail(w->path, opath, "cannot write a string attribute");
                goto out;
        }
out:
        if (attr >= 0)
                H5Aclose(attr);
        if (space >= 0)
                H5Sclose(space);
        if (type >= 0)
                H5Tclose(type);
        return err;
}

static int write_int_attr(kdl_h5w *w, hid_t obj, const char *opath, const char *name, int64_t value)
{
        hid_t space = H5I_INVALID_HID, attr = H5I_INVALID_HID;
        int err = 0;

        space = H5Screate(H5S_SCALAR);
        if (space < 0) {
                err = h5fail(w->path, opath, "cannot make a scalar dataspace");
                goto out;
        }
        if (H5Aexists(obj, name) > 0 && H5Adelete(obj, name) < 0) {
                err = h5fail(w->path, opath, "cannot replace an attribute");
                goto out;
        }
        attr = H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
        if (attr < 0 || H5Awrite(attr, H5T_NATIVE_INT64, &value) < 0) {
                err = h5fail(w->path, opath, "cannot write an integer attribute");
                goto out;
        }
out:
        if (attr >= 0)
                H5Aclose(attr);
        if (space >= 0)
                H5Sclose(space);
        return err;
}

/* Create @path (truncating it) with untimed objects; no attributes yet. */
static int create(const char *path, kdl_h5w **ret)
{
        kdl_h5w *w = NULL;
        hid_t fcpl = H5I_INVALID_HID;
        int err;

        assert(path && ret);

        kdl__h5_init(); /* HDF5 must not print: errors become codes */

        w = kdl_new(kdl_h5w, 1);
        if (!w)
                return kdl__h5_nomem(path, NULL);
        w->file = H5I_INVALID_HID;
        w->path = kdl__strdup(path);
        if (!w->path) {
                err = kdl__h5_nomem(path, NULL);
                goto out;
        }

        /* The file creation list is a group creation list too: it keeps
         * modification times out of the root group. */
        fcpl = untimed_plist(H5P_FILE_CREATE);
        if (fcpl < 0) {
                err = h5fail(path, "/", "cannot make file properties");
                goto out;
        }
        /* HDF5's sec2 driver leaves the open(2) errno in place: report the
         * system's reason (ENOENT, EACCES, EISDIR) when there is one. */
        errno = 0;
        w->file = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
        if (w->file < 0) {
                int e = errno;

                if (e > 0)
                        err = kdl_error(-e, "cannot create '%s': %s", path, strerror(e));
                else
                        err = h5fail(path, "/", "cannot create the file");
                goto out;
        }
        H5Pclose(fcpl);
        *ret = w;
        return 0;
out:
        if (fcpl >= 0)
                H5Pclose(fcpl);
        kdl_h5w_close(w);
        return err;
}

int kdl_h5w_open_plain(const char *path, kdl_h5w **ret)
{
        return create(path, ret);
}

int kdl_h5w_open(const char *path, const char *role, const char *model, kdl_h5w **ret)
{
        kdl_h5w *w = NULL;
        int err = create(path, &w);

        if (err < 0)
                return err;
        err = kdl_h5w_attr_int(w, "/", "kdlens_format", 1);
        if (!err && role)
                err = kdl_h5w_attr_string(w, "/", "role", role);
        if (!err && model)
                err = kdl_h5w_attr_string(w, "/", "model", model);
        if (err < 0) {
                kdl_h5w_close(w);
                return err;
        }
        *ret = w;
        return 0;
}

int kdl_h5w_close(kdl_h5w *w)
{
        int err = 0;

        if (!w)
                return 0;
        assert(w->open_datasets == 0);
        if (w->file >= 0 && H5Fclose(w->file) < 0)
                err = h5fail(w->path, "/", "cannot close the file");
        free(w->path);
        free(w);
        return err;
}

int kdl_h5w_group_new(kdl_h5w *w, const char *path)
{
        int err;

        assert(w && path);

        err = check_path(w, path);
        if (err < 0)
                return err;
        err = walk_groups(w, path, false, true);
        return err < 0 ? err : 0;
}

/* The arguments of kdl_h5w_dataset_open() that the caller chose. */
static int check_dataset_args(const kdl_h5w *w, const char *path, size_t ndim, enum kdl_store store,
                              size_t chunk_rows, int gzip)
{
        int err = check_path(w, path);

        if (err < 0)
                return err;
        if (strcmp(path, "/") == 0)
                return kdl_error(-KDL_EUSAGE, "'%s': the root cannot be a dataset", w->path);
        if (ndim < 1 || ndim > 4)
                return kdl_error(-KDL_EUSAGE, "'%s': %s: rank %zu is not 1..4", w->path, path,
                                 ndim);
        if (store >= KDL_STORE_COUNT_)
                return kdl_error(-KDL_EUSAGE, "'%s': %s: unknown storage type %d", w->path, path,
                                 (int) store);
        if (gzip < -1 || gzip > 9)
                return kdl_error(-KDL_EUSAGE, "'%s': %s: gzip level %d is not -1..9", w->path, path,
                                 gzip);
        if (gzip >= 0 && chunk_rows == 0)
                return kdl_error(-KDL_EUSAGE, "'%s': %s: gzip needs chunked storage", w->path,
                                 path);
        return 0;
}

/*
 * The elements of a row, and the rows and bytes of a chunk: *@chunk_rows
 * is clamped to the rows, and 0 (contiguous) when the dataset is empty.
 */
static int dataset_sizes(const kdl_h5w *w, const char *path, size_t ndim, const size_t *shape,
                         enum kdl_store store, size_t *chunk_rows, size_t *ret_rowelems,
                         size_t *ret_chunk_bytes)
{
        size_t rowelems = 1, rowbytes, chunk_bytes = 0, total;

        for (size_t k = 1; k < ndim; k++)
                if (kdl_mul_size(rowelems, shape[k], &rowelems) < 0)
                        return -KDL_EOVERFLOW;
        if (kdl_mul_size(rowelems, kdl__h5w_store_bytes(store), &rowbytes) < 0 ||
            kdl_mul_size(rowbytes, shape[0], &total) < 0)
                return -KDL_EOVERFLOW;

        /* Chunks may not be empty nor larger than a fixed-size dataset: an
         * empty dataset is stored contiguous (there is nothing to compress). */
        if (total == 0)
                *chunk_rows = 0;
        if (*chunk_rows > 0) {
                if (*chunk_rows > shape[0])
                        *chunk_rows = shape[0];
                if (kdl_mul_size(*chunk_rows, rowbytes, &chunk_bytes) < 0 ||
                    chunk_bytes > MAX_CHUNK_BYTES)
                        return kdl_error(-KDL_EOVERFLOW,
                                         "'%s': %s: a chunk of %zu rows of %zu bytes exceeds "
                                         "HDF5's 4 GiB limit",
                                         w->path, path, *chunk_rows, rowbytes);
        }
        *ret_rowelems = rowelems;
        *ret_chunk_bytes = chunk_bytes;
        return 0;
}

/* A dataset handle, not yet created in the file. */
static int wds_new(kdl_h5w *w, const char *path, size_t ndim, const size_t *shape,
                   enum kdl_store store, size_t rowelems, kdl_h5wds **ret)
{
        kdl_h5wds *d = kdl_new(kdl_h5wds, 1);

        if (!d)
                return kdl__h5_nomem(w->path, path);
        d->dset = H5I_INVALID_HID;
        d->memtype16 = H5I_INVALID_HID;
        d->path = kdl__strdup(path);
        if (!d->path) {
                free(d);
                return kdl__h5_nomem(w->path, path);
        }
        d->w = w;
        d->store = store;
        d->ndim = ndim;
        d->rowelems = rowelems;
        for (size_t k = 0; k < ndim; k++)
                d->shape[k] = shape[k];
        *ret = d;
        return 0;
}

/* Chunks of @chunk_rows rows (@chunk_bytes bytes), a cache for two, deflate at @gzip. */
static int set_chunking(const kdl_h5wds *d, hid_t dcpl, hid_t dapl, size_t chunk_rows,
                        size_t chunk_bytes, int gzip)
{
        size_t cache = 2 * chunk_bytes;
        hsize_t chunk[4];

        chunk[0] = chunk_rows;
        for (size_t k = 1; k < d->ndim; k++)
                chunk[k] = d->shape[k];
        if (cache < MIN_CACHE_BYTES)
                cache = MIN_CACHE_BYTES;
        if (cache > MAX_CACHE_BYTES)
                cache = MAX_CACHE_BYTES;
        if (H5Pset_chunk(dcpl, (int) d->ndim, chunk) < 0 ||
            H5Pset_chunk_cache(dapl, H5D_CHUNK_CACHE_NSLOTS_DEFAULT, cache,
                               H5D_CHUNK_CACHE_W0_DEFAULT) < 0)
                return h5fail(d->w->path, d->path, "cannot set chunking");
        if (gzip < 0)
                return 0;
        if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) <= 0)
                return kdl_error(-KDL_EHDF5, "'%s': %s: this HDF5 has no deflate filter",
                                 d->w->path, d->path);
        if (H5Pset_deflate(dcpl, (unsigned) gzip) < 0)
                return h5fail(d->w->path, d->path, "cannot set gzip compression");
        return 0;
}

/* Create @d's dataset in the file (its groups exist). */
static int create_dataset(kdl_h5wds *d, size_t chunk_rows, size_t chunk_bytes, int gzip)
{
        const char *file = d->w->path;
        hid_t type = kdl__h5w_file_type(d->store),
              space = H5Screate_simple((int) d->ndim, d->shape, NULL);
        hid_t dcpl = untimed_plist(H5P_DATASET_CREATE), dapl = H5Pcreate(H5P_DATASET_ACCESS);
        int err = 0;

        if (type < 0 || space < 0 || dcpl < 0 || dapl < 0) {
                err = h5fail(file, d->path, "cannot make the dataset's type or properties");
                goto out;
        }
        if (d->store == KDL_STORE_F16) {
                d->memtype16 = kdl__h5w_float16_type(H5T_NATIVE_FLOAT);
                if (d->memtype16 < 0) {
                        err = h5fail(file, d->path, "cannot make the float16 type");
                        goto out;
                }
        }
        if (chunk_rows > 0) {
                err = set_chunking(d, dcpl, dapl, chunk_rows, chunk_bytes, gzip);
                if (err < 0)
                        goto out;
        }
        d->dset = H5Dcreate2(d->w->file, d->path, type, space, H5P_DEFAULT, dcpl, dapl);
        if (d->dset < 0) {
                err = h5fail(file, d->path, "cannot create the dataset");
                goto out;
        }
        d->w->open_datasets++;
out:
        if (dapl >= 0)
                H5Pclose(dapl);
        if (dcpl >= 0)
                H5Pclose(dcpl);
        if (space >= 0)
                H5Sclose(space);
        if (type >= 0)
                H5Tclose(type);
        return err;
}

int kdl_h5w_dataset_open(kdl_h5w *w, const char *path, size_t ndim, const size_t *shape,
                         enum kdl_store store, size_t chunk_rows, int gzip, kdl_h5wds **ret)
{
        kdl_h5wds *d = NULL;
        size_t rowelems = 0, chunk_bytes = 0;
        int err;

        assert(w && path && shape && ret);

        err = check_dataset_args(w, path, ndim, store, chunk_rows, gzip);
        if (err < 0)
                return err;
        err = dataset_sizes(w, path, ndim, shape, store, &chunk_rows, &rowelems, &chunk_bytes);
        if (err < 0)
                return err;
        err = wds_new(w, path, ndim, shape, store, rowelems, &d);
        if (err < 0)
                return err;
        err = walk_groups(w, path, true, true);
        if (err >= 0)
                err = create_dataset(d, chunk_rows, chunk_bytes, gzip);
        if (err < 0) {
                kdl_h5w_dataset_close(d);
                return err;
        }
        *ret = d;
        return 0;
}

static int check_rows(const kdl_h5wds *d, size_t r0, size_t r1)
{
        if (r0 > r1 || r1 > d->shape[0])
                return kdl_error(-KDL_ERANGE, "'%s': %s: rows [%zu, %zu) outside [0, %zu)",
                                 d->w->path, d->path, r0, r1, (size_t) d->shape[0]);
        return 0;
}

static int write_block(kdl_h5wds *d, size_t r0, size_t r1, hid_t memtype, const void *rows)
{
        hid_t fspace = H5I_INVALID_HID, mspace = H5I_INVALID_HID;
        hsize_t start[4] = {0}, count[4];
        int err = 0;

        if (r0 == r1 || d->rowelems == 0)
                return 0;
        start[0] = r0;
        count[0] = r1 - r0;
        for (size_t k = 1; k < d->ndim; k++)
                count[k] = d->shape[k];

        /* The memory space has the selection's own shape: with a 1-D memory
         * space HDF5 1.10 maps chunks element by element (H5S_select_iterate),
         * which made writing 1 GiB of float32 about five times slower. */
        fspace = H5Dget_space(d->dset);
        mspace = H5Screate_simple((int) d->ndim, count, NULL);
        if (fspace < 0 || mspace < 0 ||
            H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
            H5Dwrite(d->dset, memtype, mspace, fspace, H5P_DEFAULT, rows) < 0)
                err = h5fail(d->w->path, d->path, "cannot write rows [%zu, %zu)", r0, r1);
        if (mspace >= 0)
                H5Sclose(mspace);
        if (fspace >= 0)
                H5Sclose(fspace);
        return err;
}

int kdl_h5w_write_rows(kdl_h5wds *d, size_t r0, size_t r1, const double *rows)
{
        int err;

        assert(d && (rows || r0 == r1));

        err = check_rows(d, r0, r1);
        if (err < 0)
                return err;
        if (!kdl__h5w_store_is_float(d->store))
                return kdl_error(-KDL_EUSAGE,
                                 "'%s': %s: doubles written to an integer (%s) dataset", d->w->path,
                                 d->path, kdl_store_name(d->store));
        if (d->store == KDL_STORE_F16 && r1 > r0) {
                /* HDF5 1.10's software conversion into a user-defined half
                 * type rounds subnormals and overflow wrongly (1e-6 becomes
                 * 4.8e-7, 65520 becomes 32768): convert here, so that HDF5
                 * only copies bits. */
                size_t n = (r1 - r0) * d->rowelems;
                uint16_t *h = kdl__malloc(n, sizeof(*h));

                if (!h)
                        return kdl__h5_nomem(d->w->path, d->path);
                for (size_t i = 0; i < n; i++)
                        h[i] = kdl__h5w_f16_bits(rows[i]);
                err = write_block(d, r0, r1, d->memtype16, h);
                free(h);
                return err;
        }
        return write_block(d, r0, r1, H5T_NATIVE_DOUBLE, rows);
}

int kdl_h5w_write_rows_i64(kdl_h5wds *d, size_t r0, size_t r1, const int64_t *rows)
{
        int64_t lo = INT64_MIN, hi = INT64_MAX;
        size_t n;
        int err;

        assert(d && (rows || r0 == r1));

        err = check_rows(d, r0, r1);
        if (err < 0)
                return err;
        if (kdl__h5w_store_is_float(d->store))
                return kdl_error(-KDL_EUSAGE,
                                 "'%s': %s: integers written to a floating-point (%s) dataset",
                                 d->w->path, d->path, kdl_store_name(d->store));
        if (d->store == KDL_STORE_I32) {
                lo = INT32_MIN;
                hi = INT32_MAX;
        } else if (d->store == KDL_STORE_U8) {
                lo = 0;
                hi = UINT8_MAX;
        }
        /* HDF5 would clip silently; a value that does not fit is a bug in
         * the caller's data, so refuse the whole block. */
        n = (r1 - r0) * d->rowelems;
        for (size_t i = 0; i < n; i++)
                if (rows[i] < lo || rows[i] > hi)
                        return kdl_error(-KDL_ERANGE,
                                         "'%s': %s: value %lld at element %zu does not fit %s",
                                         d->w->path, d->path, (long long) rows[i], i,
                                         kdl_store_name(d->store));
        return write_block(d, r0, r1, H5T_NATIVE_INT64, rows);
}

int kdl_h5w_dataset_close(kdl_h5wds *d)
{
        int err = 0;

        if (!d)
                return 0;
        if (d->dset >= 0) {
                if (H5Dclose(d->dset) < 0)
                        err = h5fail(d->w->path, d->path, "cannot close the dataset");
                d->w->open_datasets--;
        }
        if (d->memtype16 >= 0)
                H5Tclose(d->memtype16);
        free(d->path);
        free(d);
        return err;
}

static int set_attr(kdl_h5w *w, const char *path, const char *name, const char *s, int64_t v)
{
        hid_t obj;
        int err, exists;

        assert(w && path && name);

        err = check_path(w, path);
        if (err < 0)
                return err;
        exists = walk_groups(w, path, false, false);
        if (exists < 0)
                return exists;
        if (!exists)
                return kdl_error(-KDL_EMISSING, "'%s': %s: no such group or dataset", w->path,
                                 path);
        obj = H5Oopen(w->file, path, H5P_DEFAULT);
        if (obj < 0)
                return h5fail(w->path, path, "cannot open");
        if (s)
                err = write_string_attr(w, obj, path, name, s);
        else
                err = write_int_attr(w, obj, path, name, v);
        H5Oclose(obj);
        return err;
}

int kdl_h5w_attr_int(kdl_h5w *w, const char *path, const char *name, int64_t value)
{
        return set_attr(w, path, name, NULL, value);
}

int kdl_h5w_attr_string(kdl_h5w *w, const char *path, const char *name, const char *value)
{
        assert(value);
        return set_attr(w, path, name, value, 0);
}
