/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "metrics/base/alloc.h"
#include "loaders/h5out.h"
#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

struct outds {
        hid_t id;
        size_t rows, cols; /* cols 0: 1-D */
        bool integer;
        char *name;
};

struct kdl_h5out {
        hid_t fid;
        char *path; /* final name */
        char *tmp;  /* written name */
        size_t nds;
        struct outds *ds;
};

static void close_all(kdl_h5out *o)
{
        for (size_t k = 0; k < o->nds; k++) {
                if (o->ds[k].id >= 0)
                        H5Dclose(o->ds[k].id);
                free(o->ds[k].name);
        }
        free(o->ds);
        o->ds = NULL;
        o->nds = 0;
}

static void free_out(kdl_h5out *o)
{
        free(o->path);
        free(o->tmp);
        free(o);
}

void kdl_h5out_abort(kdl_h5out *o)
{
        if (!o)
                return;
        close_all(o);
        if (o->fid >= 0)
                H5Fclose(o->fid);
        if (o->tmp)
                unlink(o->tmp);
        free_out(o);
}

int kdl_h5out_open(const char *path, kdl_h5out **ret)
{
        kdl_h5out *o;
        char buf[256];
        int fd, err;

        assert(path && ret);
        kdl__h5_init();
        o = kdl_new(kdl_h5out, 1);
        if (!o)
                return -ENOMEM;
        o->fid = H5I_INVALID_HID;
        o->path = kdl__strdup(path);
        o->tmp = kdl__asprintf("%s.tmp-XXXXXX", path);
        if (!o->path || !o->tmp) {
                free(o->tmp);
                o->tmp = NULL;
                kdl_h5out_abort(o);
                return -ENOMEM;
        }
        /* A unique name next to the target, so that the rename is atomic. */
        fd = mkstemp(o->tmp);
        if (fd < 0) {
                err = kdl_error(-errno, "cannot write '%s': %s", path, strerror(errno));
                free(o->tmp);
                o->tmp = NULL;
                kdl_h5out_abort(o);
                return err;
        }
        /* mkstemp() creates 0600; give the result the usual umask-based mode. */
        {
                mode_t mask = umask(0);

                umask(mask);
                fchmod(fd, 0666 & ~mask);
        }
        close(fd);
        o->fid = H5Fcreate(o->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        if (o->fid < 0) {
                err = kdl_error(-KDL_EHDF5, "cannot write '%s': %s", path, kdl__h5_last_error(buf));
                kdl_h5out_abort(o);
                return err;
        }
        *ret = o;
        return 0;
}

static hid_t lcpl_intermediate(void)
{
        hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);

        if (lcpl >= 0)
                H5Pset_create_intermediate_group(lcpl, 1);
        return lcpl;
}

int kdl_h5out_dataset(kdl_h5out *o, const char *name, size_t rows, size_t cols, bool integer)
{
        hsize_t dims[2] = {rows, cols};
        struct outds *grown;
        hid_t space = H5I_INVALID_HID, lcpl = H5I_INVALID_HID, id;
        char buf[256];
        size_t total;
        int err;

        assert(o && name);
        err = kdl_mul_size(rows, cols ? cols : 1, &total);
        if (err < 0)
                return err;
        grown = realloc(o->ds, (o->nds + 1) * sizeof(*grown));
        if (!grown)
                return kdl_error(-ENOMEM, "out of memory");
        o->ds = grown;
        space = H5Screate_simple(cols ? 2 : 1, dims, NULL);
        lcpl = lcpl_intermediate();
        id = H5Dcreate2(o->fid, name, integer ? H5T_STD_I64LE : H5T_IEEE_F64LE, space, lcpl,
                        H5P_DEFAULT, H5P_DEFAULT);
        if (id < 0)
                err = kdl_error(-KDL_EHDF5, "'%s': %s: cannot create dataset: %s", o->path, name,
                                kdl__h5_last_error(buf));
        H5Pclose(lcpl);
        H5Sclose(space);
        if (err < 0)
                return err;
        o->ds[o->nds] = (struct outds){.id = id,
                                       .rows = rows,
                                       .cols = cols,
                                       .integer = integer,
                                       .name = kdl__strdup(name)};
        if (!o->ds[o->nds].name) {
                H5Dclose(id);
                return -ENOMEM;
        }
        return (int) o->nds++;
}

static int write_rows(kdl_h5out *o, int index, size_t r0, size_t r1, const void *rows, bool integer)
{
        struct outds *d;
        hsize_t start[2] = {r0, 0}, count[2];
        hid_t mem = H5I_INVALID_HID, file = H5I_INVALID_HID;
        char buf[256];
        herr_t st;

        assert(o);
        if (index < 0 || (size_t) index >= o->nds)
                return kdl_error(-KDL_ERANGE, "'%s': no output dataset %d", o->path, index);
        d = &o->ds[index];
        if (d->integer != integer || r0 > r1 || r1 > d->rows)
                return kdl_error(-KDL_ERANGE, "'%s': %s: cannot write rows [%zu, %zu) of %zu %s",
                                 o->path, d->name, r0, r1, d->rows,
                                 d->integer ? "int64 rows" : "float64 rows");
        if (r0 == r1)
                return 0;
        count[0] = r1 - r0;
        count[1] = d->cols;
        mem = H5Screate_simple(d->cols ? 2 : 1, count, NULL);
        file = H5Dget_space(d->id);
        H5Sselect_hyperslab(file, H5S_SELECT_SET, start, NULL, count, NULL);
        st = H5Dwrite(d->id, integer ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE, mem, file, H5P_DEFAULT,
                      rows);
        H5Sclose(file);
        H5Sclose(mem);
        if (st < 0)
                return kdl_error(-KDL_EHDF5, "'%s': %s: cannot write: %s", o->path, d->name,
                                 kdl__h5_last_error(buf));
        return 0;
}

int kdl_h5out_write(kdl_h5out *o, int index, size_t r0, size_t r1, const double *rows)
{
        return write_rows(o, index, r0, r1, rows, false);
}

int kdl_h5out_write_i64(kdl_h5out *o, int index, size_t r0, size_t r1, const int64_t *rows)
{
        return write_rows(o, index, r0, r1, rows, true);
}

int kdl_h5out_attr(kdl_h5out *o, const char *path, const char *name, const char *value)
{
        hid_t obj, type = H5I_INVALID_HID, space = H5I_INVALID_HID, attr = H5I_INVALID_HID;
        char buf[256];
        int err = 0;

        assert(o && path && name && value);
        if (strcmp(path, "/") != 0 && H5Lexists(o->fid, path, H5P_DEFAULT) <= 0) {
                hid_t lcpl = lcpl_intermediate(), g;

                g = H5Gcreate2(o->fid, path, lcpl, H5P_DEFAULT, H5P_DEFAULT);
                H5Pclose(lcpl);
                if (g < 0)
                        return kdl_error(-KDL_EHDF5, "'%s': %s: cannot create group: %s", o->path,
                                         path, kdl__h5_last_error(buf));
                H5Gclose(g);
        }
        obj = H5Oopen(o->fid, path, H5P_DEFAULT);
        if (obj < 0)
                return kdl_error(-KDL_EHDF5, "'%s': %s: cannot open: %s", o->path, path,
                                 kdl__h5_last_error(buf));
        /* Scalar variable-length UTF-8, as h5py writes str attributes. */
        type = H5Tcopy(H5T_C_S1);
        H5Tset_size(type, H5T_VARIABLE);
        H5Tset_cset(type, H5T_CSET_UTF8);
        space = H5Screate(H5S_SCALAR);
        if (H5Aexists(obj, name) > 0)
                H5Adelete(obj, name);
        attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
        if (attr < 0 || H5Awrite(attr, type, &value) < 0)
                err = kdl_error(-KDL_EHDF5, "'%s': %s: cannot write attribute %s: %s", o->path,
                                path, name, kdl__h5_last_error(buf));
        if (attr >= 0)
                H5Aclose(attr);
        H5Sclose(space);
        H5Tclose(type);
        H5Oclose(obj);
        return err;
}

int kdl_h5out_commit(kdl_h5out *o)
{
        char buf[256];
        int err = 0;

        assert(o);
        close_all(o);
        if (H5Fclose(o->fid) < 0)
                err = kdl_error(-KDL_EHDF5, "'%s': cannot close: %s", o->path,
                                kdl__h5_last_error(buf));
        o->fid = H5I_INVALID_HID;
        if (err == 0 && rename(o->tmp, o->path) < 0)
                err = kdl_error(-errno, "cannot write '%s': %s", o->path, strerror(errno));
        if (err == 0) {
                free_out(o);
                return 0;
        }
        kdl_h5out_abort(o);
        return err;
}
