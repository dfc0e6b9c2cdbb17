/* SPDX-License-Identifier: MIT */
/*
 * Describing HDF5 objects: links and their kinds, attributes, group
 * listings, and a dataset's shape, type and storage as a kdl_dsinfo.
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

/*
 * 1 if every link of @path exists, 0 if one does not, -ENOMEM.  H5Lexists
 * fails on intermediate missing groups; walk the path component by component.
 */
static int link_exists(kdl_h5file *f, const char *path)
{
        char *copy = kdl__strdup(path), *p, *slash;
        int ok = 1;

        if (!copy)
                return kdl__h5_nomem(f->dump.path, NULL);
        p = copy;
        if (*p == '/')
                p++;
        while (ok && *p) {
                slash = strchr(p, '/');
                if (slash)
                        *slash = '\0';
                ok = H5Lexists(f->fid, copy, H5P_DEFAULT) > 0;
                if (ok && !slash)
                        break;
                if (slash) {
                        *slash = '/';
                        p = slash + 1;
                } else {
                        break;
                }
        }
        free(copy);
        return ok;
}

/* 1 if @path names an object of @kind, 0 if not (or nothing), -ENOMEM. */
static int object_is(kdl_h5file *f, const char *path, H5O_type_t kind)
{
        H5O_info_t info;
        int r = link_exists(f, path);

        if (r <= 0)
                return r;
        return H5Oget_info_by_name(f->fid, path, &info, H5P_DEFAULT) >= 0 && info.type == kind;
}

int kdl__h5_is_group(kdl_h5file *f, const char *path)
{
        return object_is(f, path, H5O_TYPE_GROUP);
}

int kdl__h5_is_dataset(kdl_h5file *f, const char *path)
{
        return object_is(f, path, H5O_TYPE_DATASET);
}

char *kdl__h5_join(const char *group, const char *name)
{
        if (strcmp(group, "/") == 0)
                return kdl__asprintf("/%s", name);
        return kdl__asprintf("%s/%s", group, name);
}

/* Attribute @name of @obj, or a negative id when it is absent or cannot be opened. */
static hid_t open_attr(kdl_h5file *f, const char *obj, const char *name, bool *ret_present)
{
        *ret_present = H5Aexists_by_name(f->fid, obj, name, H5P_DEFAULT) > 0;
        if (!*ret_present)
                return H5I_INVALID_HID;
        return H5Aopen_by_name(f->fid, obj, name, H5P_DEFAULT, H5P_DEFAULT);
}

int kdl__h5_attr_int(kdl_h5file *f, const char *obj, const char *name, int64_t *ret,
                     bool *ret_present)
{
        hid_t a = open_attr(f, obj, name, ret_present), type, space;
        long long v;
        int r = 0;

        if (a < 0)
                return 0;
        type = H5Aget_type(a);
        space = H5Aget_space(a);
        if (H5Tget_class(type) == H5T_INTEGER && H5Sget_simple_extent_npoints(space) == 1 &&
            H5Aread(a, H5T_NATIVE_LLONG, &v) >= 0) {
                *ret = v;
                r = 1;
        }
        H5Sclose(space);
        H5Tclose(type);
        H5Aclose(a);
        return r;
}

/* A variable-length string attribute @a of file type @type: 1, 0, -ENOMEM. */
static int read_vlen_string(kdl_h5file *f, hid_t a, hid_t type, char **ret)
{
        hid_t mem = H5Tcopy(H5T_C_S1);
        char *v = NULL;
        int r = 0;

        H5Tset_size(mem, H5T_VARIABLE);
        H5Tset_cset(mem, H5Tget_cset(type));
        if (H5Aread(a, mem, &v) >= 0 && v) {
                *ret = kdl__strdup(v);
                r = *ret ? 1 : kdl__h5_nomem(f->dump.path, NULL);
                H5free_memory(v);
        }
        if (mem >= 0)
                H5Tclose(mem);
        return r;
}

/* A fixed-length string attribute @a of file type @type: 1, 0, -ENOMEM. */
static int read_fixed_string(kdl_h5file *f, hid_t a, hid_t type, char **ret)
{
        size_t n = H5Tget_size(type);
        char *v = kdl_new(char, n + 1);
        hid_t mem;
        int r = 0;

        if (!v)
                return kdl__h5_nomem(f->dump.path, NULL);
        mem = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem, n + 1);
        H5Tset_strpad(mem, H5T_STR_NULLTERM);
        if (H5Aread(a, mem, v) >= 0) {
                *ret = v;
                v = NULL;
                r = 1;
        }
        free(v);
        if (mem >= 0)
                H5Tclose(mem);
        return r;
}

int kdl__h5_attr_string(kdl_h5file *f, const char *obj, const char *name, char **ret,
                        bool *ret_present)
{
        hid_t a = open_attr(f, obj, name, ret_present), type, space;
        int r = 0;

        if (a < 0)
                return 0;
        type = H5Aget_type(a);
        space = H5Aget_space(a);
        if (H5Tget_class(type) == H5T_STRING && H5Sget_simple_extent_npoints(space) == 1)
                r = H5Tis_variable_str(type) > 0 ? read_vlen_string(f, a, type, ret)
                                                 : read_fixed_string(f, a, type, ret);
        H5Sclose(space);
        H5Tclose(type);
        H5Aclose(a);
        return r;
}

static const char *type_name(hid_t type, bool *ret_float, bool *ret_int)
{
        size_t size = H5Tget_size(type);

        *ret_float = false;
        *ret_int = false;
        switch (H5Tget_class(type)) {
        case H5T_FLOAT:
                *ret_float = true;
                return size == 2   ? "float16"
                       : size == 4 ? "float32"
                       : size == 8 ? "float64"
                                   : "float";
        case H5T_INTEGER: {
                bool sgn = H5Tget_sign(type) == H5T_SGN_2;

                *ret_int = true;
                switch (size) {
                case 1:
                        return sgn ? "int8" : "uint8";
                case 2:
                        return sgn ? "int16" : "uint16";
                case 4:
                        return sgn ? "int32" : "uint32";
                case 8:
                        return sgn ? "int64" : "uint64";
                default:
                        return "integer";
                }
        }
        case H5T_STRING:
                return "string";
        default:
                return "other";
        }
}

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

/* The shape and type of dataset @did into @ds. */
static void read_shape_type(hid_t did, kdl_dsinfo *ds)
{
        hsize_t dims[H5S_MAX_RANK];
        hid_t space = H5Dget_space(did), type = H5Dget_type(did);
        int rank = H5Sget_simple_extent_ndims(space);

        if (rank < 0)
                rank = 0;
        H5Sget_simple_extent_dims(space, dims, NULL);
        ds->ndim = (size_t) rank;
        for (int k = 0; k < rank && k < KDL_MAX_DIMS; k++)
                ds->shape[k] = (size_t) dims[k];
        ds->dtype = type_name(type, &ds->is_float, &ds->is_integer);
        H5Tclose(type);
        H5Sclose(space);
}

/* The storage of dataset @did (chunks, filters) into @ds. */
static void read_layout(hid_t did, kdl_dsinfo *ds)
{
        hsize_t chunk[H5S_MAX_RANK];
        hid_t plist = H5Dget_create_plist(did);

        ds->gzip = -1;
        if (H5Pget_layout(plist) == H5D_CHUNKED) {
                int cr = H5Pget_chunk(plist, H5S_MAX_RANK, chunk);

                ds->chunked = true;
                for (int k = 0; k < cr && k < KDL_MAX_DIMS; k++)
                        ds->chunk[k] = (size_t) chunk[k];
        }
        for (int k = 0, nf = H5Pget_nfilters(plist); k < nf; k++) {
                unsigned flags, cd[8];
                size_t ncd = 8;
                H5Z_filter_t id =
                        H5Pget_filter2(plist, (unsigned) k, &flags, &ncd, cd, 0, NULL, NULL);

                if (id == H5Z_FILTER_DEFLATE)
                        ds->gzip = ncd > 0 ? (int) cd[0] : 6;
                else if (id != H5Z_FILTER_SHUFFLE && id != H5Z_FILTER_FLETCHER32)
                        ds->other_filter = true;
        }
        H5Pclose(plist);
}

/*
 * Checks that hold for every dataset: size arithmetic, emptiness and rank.
 * 1 when they hold, else kdl__h5_problem()'s result.
 */
static int check_size(kdl_h5file *f, const char *path, const kdl_dsinfo *ds)
{
        size_t bytes = 8;
        char s[160];

        kdl__h5_shape_text(ds, s, sizeof(s));
        for (size_t k = 0; k < ds->ndim && k < KDL_MAX_DIMS; k++)
                if (__builtin_mul_overflow(bytes, ds->shape[k], &bytes))
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

int kdl__h5_describe(kdl_h5file *f, const char *path, kdl_dsinfo *ret)
{
        hid_t did = H5Dopen2(f->fid, path, H5P_DEFAULT);
        kdl_dsinfo ds = {0};
        int r;

        if (did < 0) {
                char buf[256];

                return kdl__h5_problem(f, "%s: cannot open dataset: %s", path,
                                       kdl__h5_last_error(buf));
        }
        read_shape_type(did, &ds);
        read_layout(did, &ds);
        H5Dclose(did);
        r = check_size(f, path, &ds);
        if (r <= 0)
                return r;
        ds.path = kdl__strdup(path);
        if (!ds.path)
                return kdl__h5_nomem(f->dump.path, NULL);
        *ret = ds;
        return 1;
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

int kdl__h5_describe_new(kdl_h5file *f, const char *path, kdl_dsinfo **ret)
{
        kdl_dsinfo *ds;
        int r = kdl__h5_is_dataset(f, path);

        if (r <= 0)
                return r;
        ds = kdl_new(kdl_dsinfo, 1);
        if (!ds)
                return kdl__h5_nomem(f->dump.path, NULL);
        r = kdl__h5_describe(f, path, ds);
        if (r <= 0) {
                free(ds); /* kdl__h5_describe() left it empty */
                return r;
        }
        *ret = ds;
        return 1;
}

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

int kdl__h5_list_group(kdl_h5file *f, const char *path, struct kdl__h5_names *ret)
{
        struct collect c = {.ns = ret};
        hid_t g = H5Gopen2(f->fid, path, H5P_DEFAULT);
        herr_t r;

        if (g < 0)
                return 0;
        r = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_name, &c);
        H5Gclose(g);
        if (c.nomem)
                return kdl__h5_nomem(f->dump.path, path);
        return r >= 0;
}
