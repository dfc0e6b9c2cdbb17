/* SPDX-License-Identifier: MIT */
/*
 * Describing HDF5 objects: links and their kinds, group listings, and a
 * dataset's shape, type and storage as a kdl_dsinfo (numbers: h5-types.c;
 * attributes: h5-attr.c).
 *
 * Everything here reads a file that may be damaged or hostile: an object is
 * reported absent only when its link is missing; a link that leads nowhere
 * or elsewhere, an object of another kind, a type that is not a standard
 * number and a size the file cannot hold are problems naming the object.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "metrics/base/alloc.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

static const char *kind_name(H5O_type_t t)
{
        switch (t) {
        case H5O_TYPE_GROUP:
                return "a group";
        case H5O_TYPE_DATASET:
                return "a dataset";
        case H5O_TYPE_NAMED_DATATYPE:
                return "a named datatype";
        default:
                return "an object of unknown type";
        }
}

/* "an external link to 'file:/obj' (links to other files are not followed)" into @w. */
static void external_link(kdl_h5file *f, const char *p, size_t size, struct kdl__h5_why *w)
{
        char val[256];
        const char *file = NULL, *obj = NULL;

        if (size <= sizeof(val) && H5Lget_val(f->fid, p, val, size, f->lapl) >= 0 &&
            H5Lunpack_elink_val(val, size, NULL, &file, &obj) >= 0 && file && obj)
                snprintf(w->text, sizeof(w->text),
                         "an external link to '%s:%s' (links to other files are not followed)",
                         file, obj);
        else
                snprintf(w->text, sizeof(w->text),
                         "an external link (links to other files are not followed)");
}

/* "a soft link to '/x' that leads to no object (@reason)" into @w. */
static void dangling_link(kdl_h5file *f, const char *p, size_t size, const char *reason,
                          struct kdl__h5_why *w)
{
        char val[256]; /* a longer target is cut short */

        if (size > sizeof(val))
                size = sizeof(val);
        if (size && H5Lget_val(f->fid, p, val, size, f->lapl) >= 0) {
                val[size - 1] = '\0';
                snprintf(w->text, sizeof(w->text),
                         "a soft link to '%s' that leads to no object (%s)", val, reason);
        } else {
                snprintf(w->text, sizeof(w->text), "a soft link that leads to no object (%s)",
                         reason);
        }
}

enum link_state { LINK_ABSENT, LINK_OK, LINK_BAD };

/*
 * The link @p, known to exist, whose parent group is reachable: leading to
 * an object whose kind is *@ret_type, or unusable (@w says why: a link or
 * object header HDF5 cannot read, a dangling or looping soft link, an
 * external or user-defined link).  The reason is read from HDF5's error
 * stack at each failing call, before any other call clears it.
 */
static enum link_state follow_link(kdl_h5file *f, const char *p, H5O_type_t *ret_type,
                                   struct kdl__h5_why *w)
{
        char reason[256];
        H5L_info_t li;
        H5O_info_t oi;

        if (H5Lget_info(f->fid, p, &li, f->lapl) < 0) {
                snprintf(w->text, sizeof(w->text), "a link HDF5 cannot read (%s)",
                         kdl__h5_last_error(reason));
                return LINK_BAD;
        }
        if (li.type == H5L_TYPE_EXTERNAL) {
                external_link(f, p, li.u.val_size, w);
                return LINK_BAD;
        }
        if (li.type != H5L_TYPE_HARD && li.type != H5L_TYPE_SOFT) {
                snprintf(w->text, sizeof(w->text), "a user-defined link of type %d", li.type);
                return LINK_BAD;
        }
        if (H5Oget_info_by_name2(f->fid, p, &oi, H5O_INFO_BASIC, f->lapl) < 0) {
                kdl__h5_last_error(reason);
                if (li.type == H5L_TYPE_SOFT)
                        dangling_link(f, p, li.u.val_size, reason, w);
                else
                        snprintf(w->text, sizeof(w->text),
                                 "an object HDF5 cannot read (damaged object header: %s)", reason);
                return LINK_BAD;
        }
        *ret_type = oi.type;
        return LINK_OK;
}

/* follow_link() for a link @p that may be absent. */
static enum link_state follow(kdl_h5file *f, const char *p, H5O_type_t *ret_type,
                              struct kdl__h5_why *w)
{
        char reason[256];
        htri_t e = H5Lexists(f->fid, p, f->lapl);

        if (e == 0)
                return LINK_ABSENT;
        if (e < 0) {
                snprintf(w->text, sizeof(w->text), "a link HDF5 cannot read (%s)",
                         kdl__h5_last_error(reason));
                return LINK_BAD;
        }
        return follow_link(f, p, ret_type, w);
}

int kdl__h5_find(kdl_h5file *f, const char *path, H5O_type_t want, const char *what,
                 bool *ret_present)
{
        char *copy = NULL, *slash = NULL;
        H5O_type_t type = H5O_TYPE_UNKNOWN;
        enum link_state st;
        struct kdl__h5_why w;
        htri_t e;
        int r;

        *ret_present = false;
        /* Usually every group on the way is sound: HDF5 reaches the last
         * link, and only that one needs looking at. */
        e = H5Lexists(f->fid, path, f->lapl);
        if (e >= 0) {
                st = e == 0 ? LINK_ABSENT : follow_link(f, path, &type, &w);
                goto last;
        }
        /* Else walk the components: a missing one means absent; every one
         * on the way must be a group. */
        copy = kdl__strdup(path);
        if (!copy)
                return kdl__h5_nomem(f->dump.path, path);
        while ((slash = strchr(slash ? slash + 1 : copy + 1, '/'))) {
                *slash = '\0';
                st = follow(f, copy, &type, &w);
                if (st == LINK_OK && type != H5O_TYPE_GROUP) {
                        snprintf(w.text, sizeof(w.text), "%s", kind_name(type));
                        st = LINK_BAD;
                }
                if (st != LINK_OK)
                        break;
                *slash = '/';
        }
        if (!slash)
                st = follow(f, copy, &type, &w);
last:
        if (st == LINK_OK && !slash && type != want) {
                snprintf(w.text, sizeof(w.text), "%s", kind_name(type));
                st = LINK_BAD;
        }
        *ret_present = st != LINK_ABSENT;
        r = st == LINK_OK;
        if (st == LINK_BAD && slash)
                r = kdl__h5_problem(f, "%s: expected a group (on the way to %s), found %s", copy,
                                    path, w.text);
        else if (st == LINK_BAD)
                r = kdl__h5_problem(f, "%s: expected %s, found %s", path, what, w.text);
        free(copy);
        return r;
}

char *kdl__h5_join(const char *group, const char *name)
{
        if (strcmp(group, "/") == 0)
                return kdl__asprintf("/%s", name);
        return kdl__asprintf("%s/%s", group, name);
}

/* ---- Datasets ------------------------------------------------------------- */

void kdl__h5_shape_text(const kdl_dsinfo *ds, char *buf, size_t len)
{
        size_t used = 0;

        used += (size_t) snprintf(buf + used, len - used, "%zu-D [", ds->ndim);
        for (size_t k = 0; k < ds->ndim && k < KDL_MAX_DIMS && used < len; k++)
                used += (size_t) snprintf(buf + used, len - used, "%s%zu", k ? ", " : "",
                                          ds->shape[k]);
        if (ds->ndim > KDL_MAX_DIMS && used < len)
                used += (size_t) snprintf(buf + used, len - used, ", ...");
        if (used < len)
                snprintf(buf + used, len - used, "]");
}

/* An open dataset being described: its handles, and the element size. */
struct dset {
        const char *path;
        hid_t did, type, space, dcpl;
        size_t elem;
};

/* The type of @d into @ds: numbers must be standard; other classes are named. */
static int read_type(kdl_h5file *f, struct dset *d, kdl_dsinfo *ds)
{
        H5T_class_t c = H5Tget_class(d->type);
        struct kdl__h5_why w;
        const char *name = NULL;

        d->elem = H5Tget_size(d->type);
        if (c == H5T_FLOAT) {
                name = kdl__h5_ieee_float(d->type, &w);
                ds->is_float = name != NULL;
        } else if (c == H5T_INTEGER) {
                name = kdl__h5_std_integer(d->type, &w);
                ds->is_integer = name != NULL;
        } else {
                ds->dtype = kdl__h5_class_name(c);
                return 1; /* not numbers: refused where numbers are expected */
        }
        if (!name)
                return kdl__h5_problem(f, "%s: expected %s, found %s", d->path,
                                       c == H5T_FLOAT ? "IEEE binary16, binary32 or binary64 values"
                                                      : "integers of 1, 2, 4 or 8 bytes",
                                       w.text);
        ds->dtype = name;
        return 1;
}

/* The shape of @d into @ds. */
static int read_shape(kdl_h5file *f, struct dset *d, kdl_dsinfo *ds)
{
        hsize_t dims[H5S_MAX_RANK];
        int rank = H5Sget_simple_extent_ndims(d->space);
        char reason[256];

        if (rank < 0 || H5Sget_simple_extent_dims(d->space, dims, NULL) < 0)
                return kdl__h5_problem(f, "%s: expected a dataspace, found a damaged one: %s",
                                       d->path, kdl__h5_last_error(reason));
        ds->ndim = (size_t) rank;
        for (int k = 0; k < rank && k < KDL_MAX_DIMS; k++)
                ds->shape[k] = (size_t) dims[k];
        return 1;
}

/* The storage of @d (chunks, filters) into @ds. */
static void read_layout(struct dset *d, kdl_dsinfo *ds)
{
        hsize_t chunk[H5S_MAX_RANK];

        ds->gzip = -1;
        if (H5Pget_layout(d->dcpl) == H5D_CHUNKED) {
                int cr = H5Pget_chunk(d->dcpl, H5S_MAX_RANK, chunk);

                ds->chunked = true;
                for (int k = 0; k < cr && k < KDL_MAX_DIMS; k++)
                        ds->chunk[k] = (size_t) chunk[k];
        }
        for (int k = 0, nf = H5Pget_nfilters(d->dcpl); k < nf; k++) {
                unsigned flags, cd[8];
                size_t ncd = 8;
                H5Z_filter_t id =
                        H5Pget_filter2(d->dcpl, (unsigned) k, &flags, &ncd, cd, 0, NULL, NULL);

                if (id == H5Z_FILTER_DEFLATE)
                        ds->gzip = ncd > 0 ? (int) cd[0] : 6;
                else if (id != H5Z_FILTER_SHUFFLE && id != H5Z_FILTER_FLETCHER32)
                        ds->other_filter = true;
        }
}

/*
 * Checks that hold for every dataset: size arithmetic (as doubles, the
 * reader's unit), emptiness and rank.  1 when they hold, else
 * kdl__h5_problem()'s result.
 */
static int check_size(kdl_h5file *f, const char *path, const kdl_dsinfo *ds)
{
        size_t bytes = sizeof(double);
        char s[160];

        kdl__h5_shape_text(ds, s, sizeof(s));
        for (size_t k = 0; k < ds->ndim && k < KDL_MAX_DIMS; k++)
                if (kdl_mul_size(bytes, ds->shape[k], &bytes) < 0)
                        return kdl__h5_problem(
                                f,
                                "%s: expected a size that fits in memory arithmetic, found %s "
                                "whose element count overflows",
                                path, s);
        for (size_t k = 0; k < ds->ndim && k < KDL_MAX_DIMS; k++)
                if (ds->shape[k] == 0)
                        return kdl__h5_problem(f, "%s: expected a non-empty dataset, found %s",
                                               path, s);
        if (ds->ndim > KDL_MAX_DIMS)
                return kdl__h5_problem(f, "%s: expected at most %d dimensions, found %s", path,
                                       KDL_MAX_DIMS, s);
        return 1;
}

/* Chunked @d: every chunk its extent needs is written. */
static int check_chunks(kdl_h5file *f, struct dset *d, const kdl_dsinfo *ds, const char *s)
{
        size_t need = 1;
        hsize_t have = 0;
        char reason[256];

        for (size_t k = 0; k < ds->ndim; k++) {
                if (ds->chunk[k] == 0)
                        return kdl__h5_problem(f,
                                               "%s: expected chunks of at least 1 element, "
                                               "found a chunk dimension of 0",
                                               d->path);
                if (kdl_mul_size(need,
                                 ds->shape[k] / ds->chunk[k] + !!(ds->shape[k] % ds->chunk[k]),
                                 &need) < 0)
                        return kdl__h5_problem(f,
                                               "%s: expected a number of chunks that fits in "
                                               "memory arithmetic, found %s in chunks of %zu",
                                               d->path, s, ds->chunk[0]);
        }
        if (H5Dget_num_chunks(d->did, d->space, &have) < 0)
                return kdl__h5_problem(f, "%s: expected a chunk index, found a damaged one: %s",
                                       d->path, kdl__h5_last_error(reason));
        if (have < need)
                return kdl__h5_problem(f,
                                       "%s: expected the %zu chunks %s needs, found %llu written "
                                       "(declared but not written)",
                                       d->path, need, s, (unsigned long long) have);
        return 1;
}

/*
 * The data @ds declares are in the file: contiguous data within its size,
 * every chunk written, compact data in the header at its full size.  Data in other files
 * (external storage, virtual datasets) are refused.
 */
static int check_storage(kdl_h5file *f, struct dset *d, const kdl_dsinfo *ds)
{
        H5D_layout_t layout = H5Pget_layout(d->dcpl);
        size_t n = d->elem;
        haddr_t addr;
        hsize_t stored;
        char s[160];

        kdl__h5_shape_text(ds, s, sizeof(s));
        for (size_t k = 0; k < ds->ndim; k++)
                if (kdl_mul_size(n, ds->shape[k], &n) < 0)
                        return kdl__h5_problem(f,
                                               "%s: expected a size that fits in memory "
                                               "arithmetic, found %s of %zu-byte values",
                                               d->path, s, d->elem);
        if (H5Pget_external_count(d->dcpl) > 0)
                return kdl__h5_problem(f,
                                       "%s: expected data stored in the file, found data in "
                                       "external files (not read)",
                                       d->path);
        switch (layout) {
        case H5D_COMPACT:
                /* libhdf5 1.10 copies the declared size out of the header's buffer,
                 * whatever that buffer's size: a short one crashes H5Dread(). */
                stored = H5Dget_storage_size(d->did);
                if (stored < n)
                        return kdl__h5_problem(f,
                                               "%s: expected the %zu bytes %s declares, found "
                                               "%llu stored in its object header",
                                               d->path, n, s, (unsigned long long) stored);
                return 1;
        case H5D_CHUNKED:
                return check_chunks(f, d, ds, s);
        case H5D_CONTIGUOUS:
                addr = H5Dget_offset(d->did);
                stored = H5Dget_storage_size(d->did);
                if (addr == HADDR_UNDEF)
                        return kdl__h5_problem(f,
                                               "%s: expected the %zu bytes %s declares, found "
                                               "none written (declared but not written)",
                                               d->path, n, s);
                if (stored < n || addr > f->size || n > f->size - addr)
                        return kdl__h5_problem(f,
                                               "%s: expected the %zu bytes %s declares, found "
                                               "%llu stored at byte %llu of a %llu-byte file",
                                               d->path, n, s, (unsigned long long) stored,
                                               (unsigned long long) addr,
                                               (unsigned long long) f->size);
                return 1;
        default:
                return kdl__h5_problem(f,
                                       "%s: expected contiguous, chunked or compact storage, "
                                       "found layout %d (data in other datasets or files are "
                                       "not read)",
                                       d->path, (int) layout);
        }
}

/* The open dataset @d into @ds: 1, 0 (problem recorded) or -ENOMEM. */
static int describe_open(kdl_h5file *f, struct dset *d, kdl_dsinfo *ds)
{
        char reason[256];
        int r;

        d->type = H5Dget_type(d->did);
        if (d->type >= 0)
                d->space = H5Dget_space(d->did);
        if (d->space >= 0)
                d->dcpl = H5Dget_create_plist(d->did);
        if (d->dcpl < 0)
                return kdl__h5_problem(f, "%s: expected a dataset, found a damaged one: %s",
                                       d->path, kdl__h5_last_error(reason));
        r = read_type(f, d, ds);
        if (r > 0)
                r = read_shape(f, d, ds);
        if (r <= 0)
                return r;
        read_layout(d, ds);
        r = check_size(f, d->path, ds);
        /* Non-numbers are never read: their storage does not matter. */
        if (r > 0 && (ds->is_float || ds->is_integer))
                r = check_storage(f, d, ds);
        return r;
}

/* kdl__h5_describe(), and whether anything is at @path (*@ret_present). */
static int describe(kdl_h5file *f, const char *path, const char *what, kdl_dsinfo *ret,
                    bool *ret_present)
{
        struct dset d = {.path = path,
                         .did = H5I_INVALID_HID,
                         .type = H5I_INVALID_HID,
                         .space = H5I_INVALID_HID,
                         .dcpl = H5I_INVALID_HID};
        kdl_dsinfo ds = {0};
        char reason[256];
        int r = kdl__h5_find(f, path, H5O_TYPE_DATASET, what, ret_present);

        if (r <= 0)
                return r;
        d.did = H5Dopen2(f->fid, path, f->dapl);
        if (d.did < 0)
                r = kdl__h5_problem(f, "%s: expected %s, found a damaged dataset: %s", path, what,
                                    kdl__h5_last_error(reason));
        else
                r = describe_open(f, &d, &ds);
        if (d.dcpl >= 0)
                H5Pclose(d.dcpl);
        if (d.space >= 0)
                H5Sclose(d.space);
        if (d.type >= 0)
                H5Tclose(d.type);
        if (d.did >= 0)
                H5Dclose(d.did);
        if (r <= 0)
                return r;
        ds.path = kdl__strdup(path);
        if (!ds.path)
                return kdl__h5_nomem(f->dump.path, NULL);
        *ret = ds;
        return 1;
}

int kdl__h5_describe(kdl_h5file *f, const char *path, const char *what, kdl_dsinfo *ret)
{
        bool present;

        return describe(f, path, what, ret, &present);
}

void kdl__h5_dsinfo_release(kdl_dsinfo *ds)
{
        if (ds)
                free(ds->path);
}

void kdl__h5_dsinfo_free(kdl_dsinfo *ds)
{
        kdl__h5_dsinfo_release(ds);
        free(ds);
}

int kdl__h5_describe_new(kdl_h5file *f, const char *path, const char *what, bool required,
                         kdl_dsinfo **ret)
{
        kdl_dsinfo *ds = kdl_new(kdl_dsinfo, 1);
        bool present = true;
        int r;

        if (!ds)
                return kdl__h5_nomem(f->dump.path, NULL);
        r = describe(f, path, what, ds, &present);
        if (r <= 0) {
                free(ds); /* kdl__h5_describe() left it empty */
                if (r == 0 && !present && required)
                        r = kdl__h5_problem(f, "%s: expected %s, found none", path, what);
                return r;
        }
        *ret = ds;
        return 1;
}

/* ---- Groups --------------------------------------------------------------- */

/* kdl__h5_list_group()'s walk: the names so far, and whether memory ran out. */
struct collect {
        struct kdl__h5_names *ns;
        bool nomem;
};

static herr_t collect_name(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
        struct collect *c = data;
        char **grown, *copy = NULL;

        (void) g;
        (void) info;
        grown = kdl__realloc(c->ns->v, c->ns->n + 1, sizeof(*grown));
        if (grown) {
                c->ns->v = grown;
                copy = kdl__strdup(name);
        }
        if (!copy) {
                c->nomem = true;
                return -1; /* stops the walk */
        }
        c->ns->v[c->ns->n++] = copy;
        return 0;
}

void kdl__h5_names_release(struct kdl__h5_names *ns)
{
        for (size_t k = 0; k < ns->n; k++)
                free(ns->v[k]);
        free(ns->v);
        ns->n = 0;
        ns->v = NULL;
}

/* Drop the names HDF5 paths cannot hold ("", ".", with a '/'): one problem each. */
static int drop_bad_names(kdl_h5file *f, const char *path, struct kdl__h5_names *ns)
{
        size_t kept = 0;
        int r = 0;

        for (size_t k = 0; k < ns->n; k++) {
                const char *s = ns->v[k];

                if (r >= 0 && s[0] && strcmp(s, ".") != 0 && !strchr(s, '/')) {
                        ns->v[kept++] = ns->v[k];
                        continue;
                }
                if (r >= 0)
                        r = kdl__h5_problem(
                                f, "%s: expected link names, found '%s' (damaged group)", path, s);
                free(ns->v[k]);
        }
        ns->n = kept;
        return r;
}

int kdl__h5_list_group(kdl_h5file *f, const char *path, struct kdl__h5_names *ret)
{
        struct collect c = {.ns = ret};
        hid_t g = H5Gopen2(f->fid, path, f->gapl);
        char reason[256];
        herr_t r;
        int err = 0;

        if (g < 0)
                return kdl__h5_problem(f, "%s: expected a group, found a damaged group: %s", path,
                                       kdl__h5_last_error(reason));
        r = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_name, &c);
        if (r < 0 && !c.nomem)
                err = kdl__h5_problem(f, "%s: expected a group, found a damaged group: %s", path,
                                      kdl__h5_last_error(reason));
        H5Gclose(g);
        if (c.nomem)
                return kdl__h5_nomem(f->dump.path, path);
        if (r < 0)
                return err;
        err = drop_bad_names(f, path, ret);
        return err < 0 ? err : 1;
}
