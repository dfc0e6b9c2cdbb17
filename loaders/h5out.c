/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "metrics/base/alloc.h"
#include "metrics/base/outfile.h"
#include "loaders/h5-internal.h"
#include "loaders/h5out.h"
#include "loaders/h5write.h"
#include "metrics/base/banned.h"

/* Per-sample results: float64/int64 datasets written through loaders/h5write
 * into a temporary file that only kdl_h5out_commit() renames into place. */

struct kdl_h5out {
        kdl_h5w *w;
        char *path; /* final name */
        char *tmp;  /* written name */
        size_t nds;
        kdl_h5wds **ds;
        bool *integer;
};

static int close_datasets(kdl_h5out *o)
{
        int err = 0, e;

        for (size_t k = 0; k < o->nds; k++) {
                e = kdl_h5w_dataset_close(o->ds[k]);
                err = err ? err : e;
        }
        free(o->ds);
        free(o->integer);
        o->ds = NULL;
        o->integer = NULL;
        o->nds = 0;
        return err;
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
        close_datasets(o);
        kdl_h5w_close(o->w);
        if (o->tmp)
                unlink(o->tmp);
        free_out(o);
}

/* kdl_out_sweep() callback: a killed run's temporary, if it is a regular HDF5 file. */
static int remove_stale(const char *path, void *arg)
{
        static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
        unsigned char head[8];
        struct stat st;
        bool hdf5 = false;
        int fd;

        (void) arg;
        if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
                return 0;
        if (st.st_size == 0) /* killed between mkstemp() and the HDF5 header */
                return unlink(path) == 0;
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return 0;
        hdf5 = read(fd, head, sizeof(head)) == (ssize_t) sizeof(head) &&
               memcmp(head, sig, sizeof(sig)) == 0;
        close(fd);
        return hdf5 && unlink(path) == 0;
}

int kdl_h5out_open(const char *path, kdl_h5out **ret)
{
        kdl_h5out *o;
        int fd, err;

        assert(path && ret);
        o = kdl_new(kdl_h5out, 1);
        if (!o)
                return kdl__h5_nomem(path, NULL);
        /* Never rename over a link, a FIFO or a directory; clear a killed run's leftovers. */
        err = kdl_out_check(path, KDL_OUT_FILE, NULL, 0);
        if (!err)
                err = kdl_out_sweep(path, remove_stale, NULL);
        if (err < 0) {
                free(o);
                return err == -ENOMEM ? kdl__h5_nomem(path, NULL) : err;
        }
        o->path = kdl__strdup(path);
        o->tmp = kdl_out_tmpname(path);
        if (!o->path || !o->tmp) {
                kdl_h5out_abort(o);
                return kdl__h5_nomem(path, NULL);
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
        err = kdl_h5w_open_plain(o->tmp, &o->w);
        if (err < 0) {
                kdl_h5out_abort(o);
                return err;
        }
        *ret = o;
        return 0;
}

int kdl_h5out_dataset(kdl_h5out *o, const char *name, size_t rows, size_t cols, bool integer)
{
        size_t shape[2] = {rows, cols};
        kdl_h5wds **grown;
        bool *ints;
        int err;

        assert(o && name);
        grown = kdl__realloc(o->ds, o->nds + 1, sizeof(*grown));
        if (!grown)
                return kdl__h5_nomem(o->path, name);
        o->ds = grown;
        ints = kdl__realloc(o->integer, o->nds + 1, sizeof(*ints));
        if (!ints)
                return kdl__h5_nomem(o->path, name);
        o->integer = ints;
        err = kdl_h5w_dataset_open(o->w, name, cols ? 2 : 1, shape,
                                   integer ? KDL_STORE_I64 : KDL_STORE_F64, 0, -1, &o->ds[o->nds]);
        if (err < 0)
                return err;
        o->integer[o->nds] = integer;
        return (int) o->nds++;
}

static int check_index(const kdl_h5out *o, int index, bool integer)
{
        if (index < 0 || (size_t) index >= o->nds)
                return kdl_error(-KDL_ERANGE, "'%s': no output dataset %d", o->path, index);
        if (o->integer[index] != integer)
                return kdl_error(-KDL_ERANGE, "'%s': output dataset %d holds %s", o->path, index,
                                 o->integer[index] ? "int64" : "float64");
        return 0;
}

int kdl_h5out_write(kdl_h5out *o, int index, size_t r0, size_t r1, const double *rows)
{
        int err = check_index(o, index, false);

        return err ? err : kdl_h5w_write_rows(o->ds[index], r0, r1, rows);
}

int kdl_h5out_write_i64(kdl_h5out *o, int index, size_t r0, size_t r1, const int64_t *rows)
{
        int err = check_index(o, index, true);

        return err ? err : kdl_h5w_write_rows_i64(o->ds[index], r0, r1, rows);
}

int kdl_h5out_attr(kdl_h5out *o, const char *path, const char *name, const char *value)
{
        int err = kdl_h5w_attr_string(o->w, path, name, value);

        if (err != -KDL_EMISSING)
                return err;
        /* The group does not exist yet: make it, then set the attribute. */
        err = kdl_h5w_group_new(o->w, path);
        return err ? err : kdl_h5w_attr_string(o->w, path, name, value);
}

int kdl_h5out_commit(kdl_h5out *o)
{
        int err;

        assert(o);
        err = close_datasets(o);
        if (kdl_h5w_close(o->w) < 0 && !err)
                err = -KDL_EHDF5;
        o->w = NULL;
        if (err == 0 && rename(o->tmp, o->path) < 0)
                err = kdl_error(-errno, "cannot write '%s': %s", o->path, strerror(errno));
        if (err == 0) {
                free_out(o);
                return 0;
        }
        kdl_h5out_abort(o);
        return err;
}
