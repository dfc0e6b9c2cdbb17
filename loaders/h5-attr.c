/* SPDX-License-Identifier: MIT */
/*
 * Attributes: reading one integer or one string from an object's
 * attributes, each of which may be damaged or hostile (larger than the
 * file, of another type or shape, an unreadable string).
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

static int attr_problem(kdl_h5file *f, const char *obj, const char *name, const char *expected,
                        const char *found)
{
        return kdl__h5_problem(f, "%s: attribute '%s': expected %s, found %s", obj, name, expected,
                               found);
}

/* kdl__h5_check_attrs()'s walk: the first attribute larger than the file. */
struct attr_walk {
        uint64_t limit;
        char name[128];
        hsize_t size;
};

static herr_t attr_size(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
        struct attr_walk *a = data;

        (void) loc;
        if (info->data_size <= a->limit)
                return 0;
        snprintf(a->name, sizeof(a->name), "%s", name);
        a->size = info->data_size;
        return 1; /* stops the walk */
}

int kdl__h5_check_attrs(kdl_h5file *f, const char *obj)
{
        struct attr_walk a = {.limit = f->size};
        char reason[256];
        herr_t r = H5Aiterate_by_name(f->fid, obj, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, attr_size,
                                      &a, f->lapl);

        if (r < 0)
                return kdl__h5_problem(f,
                                       "%s: expected readable attributes, found damaged ones: %s",
                                       obj, kdl__h5_last_error(reason));
        if (r > 0)
                return kdl__h5_problem(f,
                                       "%s: attribute '%s': expected at most the file's %llu bytes "
                                       "of data, found %llu (a damaged attribute)",
                                       obj, a.name, (unsigned long long) f->size,
                                       (unsigned long long) a.size);
        return 1;
}

/*
 * Attribute @name of @obj, open in *@ret, holding one value (scalar, or a
 * simple dataspace of one element) whose type is in *@ret_type.  Return: 1;
 * 0 when absent (*@ret_present false) or unusable (a problem recorded with
 * @expected); -ENOMEM.
 */
static int open_attr(kdl_h5file *f, const char *obj, const char *name, const char *expected,
                     hid_t *ret, hid_t *ret_type, bool *ret_present)
{
        htri_t e = H5Aexists_by_name(f->fid, obj, name, f->lapl);
        hid_t a = H5I_INVALID_HID, space = H5I_INVALID_HID, type = H5I_INVALID_HID;
        char reason[256], found[64];
        hssize_t n;
        int r;

        *ret_present = e != 0;
        if (e == 0)
                return 0;
        if (e > 0)
                a = H5Aopen_by_name(f->fid, obj, name, H5P_DEFAULT, f->lapl);
        if (a >= 0)
                space = H5Aget_space(a);
        if (space >= 0)
                type = H5Aget_type(a);
        if (type < 0) {
                r = kdl__h5_problem(f,
                                    "%s: attribute '%s': expected %s, found a damaged "
                                    "attribute: %s",
                                    obj, name, expected, kdl__h5_last_error(reason));
                goto out;
        }
        n = H5Sget_simple_extent_npoints(space);
        if (n != 1) {
                snprintf(found, sizeof(found), "%lld values", (long long) n);
                r = attr_problem(f, obj, name, expected, found);
                goto out;
        }
        *ret = a;
        *ret_type = type;
        a = type = H5I_INVALID_HID;
        r = 1;
out:
        if (type >= 0)
                H5Tclose(type);
        if (space >= 0)
                H5Sclose(space);
        if (a >= 0)
                H5Aclose(a);
        return r;
}

int kdl__h5_attr_int(kdl_h5file *f, const char *obj, const char *name, int64_t *ret,
                     bool *ret_present)
{
        static const char expected[] = "one integer";
        hid_t a, type;
        struct kdl__h5_why w;
        long long v;
        char reason[256];
        int r = open_attr(f, obj, name, expected, &a, &type, ret_present);

        if (r <= 0)
                return r;
        if (H5Tget_class(type) != H5T_INTEGER) {
                snprintf(w.text, sizeof(w.text), "a %s value",
                         kdl__h5_class_name(H5Tget_class(type)));
                r = attr_problem(f, obj, name, expected, w.text);
        } else if (!kdl__h5_std_integer(type, &w)) {
                r = attr_problem(f, obj, name, expected, w.text);
        } else if (H5Aread(a, H5T_NATIVE_LLONG, &v) < 0) {
                r = kdl__h5_problem(f, "%s: attribute '%s': cannot read: %s", obj, name,
                                    kdl__h5_last_error(reason));
        } else {
                *ret = v;
        }
        H5Tclose(type);
        H5Aclose(a);
        return r;
}

/* A variable-length string attribute @a of file type @type: 1, 0 (problem), -ENOMEM. */
static int read_vlen_string(kdl_h5file *f, const char *obj, const char *name, hid_t a, hid_t type,
                            char **ret)
{
        hid_t mem = H5Tcopy(H5T_C_S1);
        char *v = NULL, reason[256];
        hsize_t stored = H5Aget_storage_size(a);
        int r;

        /* One variable-length string is a 16-byte reference into the global heap. */
        if (stored == 0 || stored > 64) {
                r = kdl__h5_problem(f,
                                    "%s: attribute '%s': expected one variable-length string, "
                                    "found %llu bytes of references",
                                    obj, name, (unsigned long long) stored);
                goto out;
        }
        if (mem < 0 || H5Tset_size(mem, H5T_VARIABLE) < 0 ||
            H5Tset_cset(mem, H5Tget_cset(type)) < 0 || H5Aread(a, mem, &v) < 0) {
                r = kdl__h5_problem(f, "%s: attribute '%s': cannot read the string: %s", obj, name,
                                    kdl__h5_last_error(reason));
                goto out;
        }
        if (!v) {
                r = attr_problem(f, obj, name, "a string", "a null string");
        } else if (strnlen(v, KDL__H5_ATTR_MAX + 1) > KDL__H5_ATTR_MAX) {
                r = kdl__h5_problem(f,
                                    "%s: attribute '%s': expected a string of at most %d bytes, "
                                    "found a longer one",
                                    obj, name, KDL__H5_ATTR_MAX);
        } else {
                *ret = kdl__strdup(v);
                r = *ret ? 1 : kdl__h5_nomem(f->dump.path, obj);
        }
out:
        if (v)
                H5free_memory(v);
        if (mem >= 0)
                H5Tclose(mem);
        return r;
}

/* A fixed-length string attribute @a of file type @type: 1, 0 (problem), -ENOMEM. */
static int read_fixed_string(kdl_h5file *f, const char *obj, const char *name, hid_t a, hid_t type,
                             char **ret)
{
        size_t n = H5Tget_size(type);
        char *v, reason[256];
        hid_t mem;
        int r = 1;

        if (n == 0 || n > KDL__H5_ATTR_MAX)
                return kdl__h5_problem(f,
                                       "%s: attribute '%s': expected a string of at most %d "
                                       "bytes, found one of %zu",
                                       obj, name, KDL__H5_ATTR_MAX, n);
        v = kdl_new(char, n + 1);
        if (!v)
                return kdl__h5_nomem(f->dump.path, obj);
        mem = H5Tcopy(H5T_C_S1);
        if (mem < 0 || H5Tset_size(mem, n + 1) < 0 || H5Tset_strpad(mem, H5T_STR_NULLTERM) < 0 ||
            H5Aread(a, mem, v) < 0)
                r = kdl__h5_problem(f, "%s: attribute '%s': cannot read the string: %s", obj, name,
                                    kdl__h5_last_error(reason));
        if (r > 0) {
                v[n] = '\0';
                *ret = v;
                v = NULL;
        }
        free(v);
        if (mem >= 0)
                H5Tclose(mem);
        return r;
}

int kdl__h5_attr_string(kdl_h5file *f, const char *obj, const char *name, char **ret,
                        bool *ret_present)
{
        hid_t a, type;
        char found[64];
        htri_t vlen;
        int r = open_attr(f, obj, name, "one string", &a, &type, ret_present);

        if (r <= 0)
                return r;
        if (H5Tget_class(type) != H5T_STRING) {
                snprintf(found, sizeof(found), "a %s value",
                         kdl__h5_class_name(H5Tget_class(type)));
                r = attr_problem(f, obj, name, "a string", found);
        } else if ((vlen = H5Tis_variable_str(type)) > 0) {
                r = read_vlen_string(f, obj, name, a, type, ret);
        } else {
                r = read_fixed_string(f, obj, name, a, type, ret);
        }
        H5Tclose(type);
        H5Aclose(a);
        return r;
}
