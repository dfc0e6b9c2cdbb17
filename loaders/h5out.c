/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics/base/alloc.h"
#include "loaders/h5-internal.h"
#include "loaders/h5out.h"
#include "metrics/base/banned.h"

struct kdl_h5out {
        char *path; /* final name */
        char *tmp;  /* written here, renamed by commit */
        hid_t fid;
        size_t nvec;
        hid_t *vec;   /* open datasets, closed at commit/abort */
        size_t *vlen; /* their lengths */
};

static void close_all(kdl_h5out *f)
{
        for (size_t k = 0; k < f->nvec; k++)
                H5Dclose(f->vec[k]);
        f->nvec = 0;
}

static void release(kdl_h5out *f)
{
        free(f->vec);
        free(f->vlen);
        free(f->tmp);
        free(f->path);
        free(f);
}

void kdl_h5out_abort(kdl_h5out *f)
{
        if (!f)
                return;
        close_all(f);
        if (f->fid >= 0)
                H5Fclose(f->fid);
        unlink(f->tmp);
        release(f);
}

int kdl_h5out_open(const char *path, kdl_h5out **ret)
{
        kdl_h5out *f;
        char buf[256];
        int fd, err;

        assert(path && ret);
        kdl__h5_init();
        f = kdl_new(kdl_h5out, 1);
        if (!f)
                return -ENOMEM;
        f->fid = H5I_INVALID_HID;
        f->path = kdl__strdup(path);
        f->tmp = kdl__asprintf("%s.tmp-%ld", path, (long) getpid());
        if (!f->path || !f->tmp) {
                release(f);
                return -ENOMEM;
        }
        /* Create it ourselves first, for an errno that says why it failed. */
        fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
                err = kdl_error(-errno, "cannot create '%s': %s", f->tmp, strerror(errno));
                release(f);
                return err;
        }
        close(fd);
        f->fid = H5Fcreate(f->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        if (f->fid < 0) {
                err = kdl_error(-KDL_EHDF5, "'%s': cannot create an HDF5 file: %s", path,
                                kdl__h5_last_error(buf));
                kdl_h5out_abort(f);
                return err;
        }
        *ret = f;
        return 0;
}

/* A link creation property list that also creates missing parent groups. */
static hid_t parents_lcpl(void)
{
        hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);

        if (lcpl >= 0)
                H5Pset_create_intermediate_group(lcpl, 1);
        return lcpl;
}

/* Open group @path, creating it (and its parents) when missing. */
static hid_t group_open(kdl_h5out *f, const char *path)
{
        hid_t g, lcpl;

        if (strcmp(path, "/") == 0 || kdl__h5_path_valid(f->fid, path))
                return H5Gopen2(f->fid, path, H5P_DEFAULT);
        lcpl = parents_lcpl();
        g = H5Gcreate2(f->fid, path, lcpl, H5P_DEFAULT, H5P_DEFAULT);
        H5Pclose(lcpl);
        return g;
}

static int attr_write(kdl_h5out *f, const char *group, const char *name, hid_t type, const void *v)
{
        hid_t g, space = H5I_INVALID_HID, a = H5I_INVALID_HID;
        char buf[256];
        int err = 0;

        g = group_open(f, group);
        if (g >= 0) {
                space = H5Screate(H5S_SCALAR);
                if (H5Aexists(g, name) > 0)
                        H5Adelete(g, name);
                a = H5Acreate2(g, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
        }
        if (g < 0 || a < 0 || H5Awrite(a, type, v) < 0)
                err = kdl_error(-KDL_EHDF5, "'%s': %s: cannot write attribute '%s': %s", f->path,
                                group, name, kdl__h5_last_error(buf));
        if (a >= 0)
                H5Aclose(a);
        if (space >= 0)
                H5Sclose(space);
        if (g >= 0)
                H5Gclose(g);
        return err;
}

int kdl_h5out_attr_str(kdl_h5out *f, const char *group, const char *name, const char *v)
{
        /* Variable-length UTF-8, as h5py writes strings (Python reads str). */
        hid_t t = H5Tcopy(H5T_C_S1);
        int err;

        H5Tset_size(t, H5T_VARIABLE);
        H5Tset_cset(t, H5T_CSET_UTF8);
        err = attr_write(f, group, name, t, &v);
        H5Tclose(t);
        return err;
}

int kdl_h5out_attr_real(kdl_h5out *f, const char *group, const char *name, double v)
{
        return attr_write(f, group, name, H5T_IEEE_F64LE, &v);
}

int kdl_h5out_vector(kdl_h5out *f, const char *path, size_t n)
{
        hsize_t dim = n, chunk = n < 65536 ? (n ? n : 1) : 65536;
        hid_t space, dcpl, lcpl, d;
        double fill = NAN;
        hid_t *gv;
        size_t *gl;
        char buf[256];

        gv = realloc(f->vec, (f->nvec + 1) * sizeof(*gv));
        if (!gv)
                return kdl_error(-ENOMEM, "out of memory");
        f->vec = gv;
        gl = realloc(f->vlen, (f->nvec + 1) * sizeof(*gl));
        if (!gl)
                return kdl_error(-ENOMEM, "out of memory");
        f->vlen = gl;
        space = H5Screate_simple(1, &dim, NULL);
        dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_chunk(dcpl, 1, &chunk);
        H5Pset_fill_value(dcpl, H5T_NATIVE_DOUBLE, &fill);
        H5Pset_fill_time(dcpl, H5D_FILL_TIME_ALLOC);
        lcpl = parents_lcpl();
        d = H5Dcreate2(f->fid, path, H5T_IEEE_F64LE, space, lcpl, dcpl, H5P_DEFAULT);
        H5Pclose(lcpl);
        H5Pclose(dcpl);
        H5Sclose(space);
        if (d < 0)
                return kdl_error(-KDL_EHDF5, "'%s': %s: cannot create dataset: %s", f->path, path,
                                 kdl__h5_last_error(buf));
        f->vec[f->nvec] = d;
        f->vlen[f->nvec] = n;
        return (int) f->nvec++;
}

int kdl_h5out_scatter(kdl_h5out *f, int id, const size_t *idx, size_t m, const double *v)
{
        hid_t d, fs;
        char buf[256];
        int err = 0;

        assert(id >= 0 && (size_t) id < f->nvec);
        d = f->vec[id];
        for (size_t i = 0; i < m; i++)
                if (idx[i] >= f->vlen[id] || (i > 0 && idx[i] <= idx[i - 1]))
                        return kdl_error(-KDL_ERANGE,
                                         "'%s': sample index %zu out of order or range", f->path,
                                         idx[i]);
        fs = H5Dget_space(d);
        /* One write per run of consecutive indices (one run unless samples
         * were skipped). */
        for (size_t i = 0; i < m && !err;) {
                size_t j = i + 1;
                hsize_t start, count;
                hid_t ms;

                while (j < m && idx[j] == idx[j - 1] + 1)
                        j++;
                start = idx[i];
                count = j - i;
                ms = H5Screate_simple(1, &count, NULL);
                if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) < 0 ||
                    H5Dwrite(d, H5T_NATIVE_DOUBLE, ms, fs, H5P_DEFAULT, v + i) < 0)
                        err = kdl_error(-KDL_EHDF5, "'%s': cannot write: %s", f->path,
                                        kdl__h5_last_error(buf));
                H5Sclose(ms);
                i = j;
        }
        H5Sclose(fs);
        return err;
}

int kdl_h5out_commit(kdl_h5out *f)
{
        char buf[256];
        herr_t r;
        int err = 0;

        assert(f);
        close_all(f);
        r = H5Fclose(f->fid);
        f->fid = H5I_INVALID_HID;
        if (r < 0)
                err = kdl_error(-KDL_EHDF5, "'%s': cannot close: %s", f->path,
                                kdl__h5_last_error(buf));
        else if (rename(f->tmp, f->path) < 0)
                err = kdl_error(-errno, "cannot rename '%s' to '%s': %s", f->tmp, f->path,
                                strerror(errno));
        if (err < 0)
                unlink(f->tmp);
        release(f);
        return err;
}
