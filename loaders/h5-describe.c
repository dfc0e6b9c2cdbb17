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

static bool link_exists(hid_t loc, const char *path)
{
        return kdl__h5_path_valid(loc, path);
}

/* H5Lexists fails on intermediate missing groups; walk the path component by component. */
bool kdl__h5_path_valid(hid_t loc, const char *path)
{
        char *copy = strdup(path), *p, *slash;
        bool ok = true;

        if (!copy)
                return false;
        p = copy;
        if (*p == '/')
                p++;
        while (ok && *p) {
                slash = strchr(p, '/');
                if (slash)
                        *slash = '\0';
                ok = H5Lexists(loc, copy, H5P_DEFAULT) > 0;
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

static H5O_type_t object_type(hid_t loc, const char *path)
{
        H5O_info_t info;

        if (!link_exists(loc, path) || H5Oget_info_by_name(loc, path, &info, H5P_DEFAULT) < 0)
                return H5O_TYPE_UNKNOWN;
        return info.type;
}

bool kdl__h5_is_group(hid_t loc, const char *path)
{
        return object_type(loc, path) == H5O_TYPE_GROUP;
}

bool kdl__h5_is_dataset(hid_t loc, const char *path)
{
        return object_type(loc, path) == H5O_TYPE_DATASET;
}

char *kdl__h5_join(const char *group, const char *name)
{
        if (strcmp(group, "/") == 0)
                return kdl__asprintf("/%s", name);
        return kdl__asprintf("%s/%s", group, name);
}

/* Attribute readers: 0 on success, -1 when absent or of the wrong kind. */
int kdl__h5_attr_int(hid_t loc, const char *obj, const char *name, int64_t *ret, bool *ret_present)
{
        hid_t a, type, space;
        long long v;
        int r = -1;

        *ret_present = H5Aexists_by_name(loc, obj, name, H5P_DEFAULT) > 0;
        if (!*ret_present)
                return -1;
        a = H5Aopen_by_name(loc, obj, name, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0)
                return -1;
        type = H5Aget_type(a);
        space = H5Aget_space(a);
        if (H5Tget_class(type) == H5T_INTEGER && H5Sget_simple_extent_npoints(space) == 1 &&
            H5Aread(a, H5T_NATIVE_LLONG, &v) >= 0) {
                *ret = v;
                r = 0;
        }
        H5Sclose(space);
        H5Tclose(type);
        H5Aclose(a);
        return r;
}

int kdl__h5_attr_string(hid_t loc, const char *obj, const char *name, char **ret, bool *ret_present)
{
        hid_t a, type, mem = -1, space;
        int r = -1;

        *ret_present = H5Aexists_by_name(loc, obj, name, H5P_DEFAULT) > 0;
        if (!*ret_present)
                return -1;
        a = H5Aopen_by_name(loc, obj, name, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0)
                return -1;
        type = H5Aget_type(a);
        space = H5Aget_space(a);
        if (H5Tget_class(type) != H5T_STRING || H5Sget_simple_extent_npoints(space) != 1)
                goto out;
        if (H5Tis_variable_str(type) > 0) {
                char *v = NULL;

                mem = H5Tcopy(H5T_C_S1);
                H5Tset_size(mem, H5T_VARIABLE);
                H5Tset_cset(mem, H5Tget_cset(type));
                if (H5Aread(a, mem, &v) >= 0 && v) {
                        *ret = kdl__strdup(v);
                        r = *ret ? 0 : -1;
                        H5free_memory(v);
                }
        } else {
                size_t n = H5Tget_size(type);
                char *v = kdl_new(char, n + 1);

                mem = H5Tcopy(H5T_C_S1);
                H5Tset_size(mem, n + 1);
                H5Tset_strpad(mem, H5T_STR_NULLTERM);
                if (v && H5Aread(a, mem, v) >= 0) {
                        *ret = v;
                        r = 0;
                } else {
                        free(v);
                }
        }
out:
        if (mem >= 0)
                H5Tclose(mem);
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

/*
 * Describe dataset @path.  Return 0 when it is a dataset we can describe,
 * -1 (problem recorded) otherwise.  @ret->path is owned by the catalogue.
 */
int kdl__h5_describe(kdl_h5file *f, const char *path, kdl_dsinfo *ret)
{
        hsize_t dims[H5S_MAX_RANK], chunk[H5S_MAX_RANK];
        hid_t did, space, type, plist;
        kdl_dsinfo ds = {0};
        size_t bytes = 8;
        int rank;

        did = H5Dopen2(f->fid, path, H5P_DEFAULT);
        if (did < 0) {
                char buf[256];

                kdl__h5_problem(f, "%s: cannot open dataset: %s", path, kdl__h5_last_error(buf));
                return -1;
        }
        space = H5Dget_space(did);
        rank = H5Sget_simple_extent_ndims(space);
        if (rank < 0)
                rank = 0;
        H5Sget_simple_extent_dims(space, dims, NULL);
        ds.ndim = (size_t) rank;
        for (int k = 0; k < rank && k < KDL_MAX_DIMS; k++)
                ds.shape[k] = (size_t) dims[k];

        type = H5Dget_type(did);
        ds.dtype = type_name(type, &ds.is_float, &ds.is_integer);

        plist = H5Dget_create_plist(did);
        ds.gzip = -1;
        if (H5Pget_layout(plist) == H5D_CHUNKED) {
                int cr = H5Pget_chunk(plist, H5S_MAX_RANK, chunk);

                ds.chunked = true;
                for (int k = 0; k < cr && k < KDL_MAX_DIMS; k++)
                        ds.chunk[k] = (size_t) chunk[k];
        }
        for (int k = 0, nf = H5Pget_nfilters(plist); k < nf; k++) {
                unsigned flags, cd[8];
                size_t ncd = 8;
                H5Z_filter_t id =
                        H5Pget_filter2(plist, (unsigned) k, &flags, &ncd, cd, 0, NULL, NULL);

                if (id == H5Z_FILTER_DEFLATE)
                        ds.gzip = ncd > 0 ? (int) cd[0] : 6;
                else if (id != H5Z_FILTER_SHUFFLE && id != H5Z_FILTER_FLETCHER32)
                        ds.other_filter = true;
        }
        H5Pclose(plist);
        H5Tclose(type);
        H5Sclose(space);
        H5Dclose(did);

        /* Checks that hold for every dataset: size arithmetic and emptiness. */
        for (size_t k = 0; k < ds.ndim && k < KDL_MAX_DIMS; k++) {
                if (__builtin_mul_overflow(bytes, ds.shape[k], &bytes)) {
                        char s[160];

                        kdl__h5_shape_text(&ds, s, sizeof(s));
                        kdl__h5_problem(
                                f,
                                "%s: expected a size that fits in memory arithmetic, found %s "
                                "whose element count overflows",
                                path, s);
                        return -1;
                }
        }
        for (size_t k = 0; k < ds.ndim && k < KDL_MAX_DIMS; k++)
                if (ds.shape[k] == 0) {
                        char s[160];

                        kdl__h5_shape_text(&ds, s, sizeof(s));
                        kdl__h5_problem(f, "%s: expected a non-empty dataset, found %s", path, s);
                        return -1;
                }
        if (ds.ndim > KDL_MAX_DIMS) {
                char s[160];

                kdl__h5_shape_text(&ds, s, sizeof(s));
                kdl__h5_problem(f, "%s: expected at most %d dimensions, found %s", path,
                                KDL_MAX_DIMS, s);
                return -1;
        }
        ds.path = kdl__strdup(path);
        if (!ds.path)
                return -1;
        *ret = ds;
        return 0;
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

/* Describe an optional dataset into a new heap dsinfo; NULL if absent or unusable. */
kdl_dsinfo *kdl__h5_describe_new(kdl_h5file *f, const char *path)
{
        kdl_dsinfo *ds;

        if (!kdl__h5_is_dataset(f->fid, path))
                return NULL;
        ds = kdl_new(kdl_dsinfo, 1);
        if (!ds)
                return NULL;
        if (kdl__h5_describe(f, path, ds) < 0) {
                kdl__h5_dsinfo_free(ds);
                return NULL;
        }
        return ds;
}
static herr_t collect_name(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
        struct kdl__h5_names *ns = data;
        char **grown;

        (void) g;
        (void) info;
        grown = realloc(ns->v, (ns->n + 1) * sizeof(*grown));
        if (!grown)
                return -1;
        ns->v = grown;
        ns->v[ns->n] = strdup(name);
        if (!ns->v[ns->n])
                return -1;
        ns->n++;
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

int kdl__h5_list_group(hid_t fid, const char *path, struct kdl__h5_names *ret)
{
        hid_t g = H5Gopen2(fid, path, H5P_DEFAULT);
        herr_t r;

        if (g < 0)
                return -1;
        r = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_name, ret);
        H5Gclose(g);
        return r < 0 ? -1 : 0;
}
