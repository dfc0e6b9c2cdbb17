/* SPDX-License-Identifier: MIT */
/*
 * Opening and closing a dump: the file object, its list of problems, and
 * the HDF5 plumbing the other files of loaders/ share.
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "metrics/base/alloc.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

/* Walk callback: keep the innermost (most specific) description of the stack. */
static herr_t last_error(unsigned n, const H5E_error2_t *e, void *data)
{
        char *buf = data;

        (void) n;
        if (e->desc && e->desc[0])
                snprintf(buf, 256, "%s", e->desc);
        return 0;
}

void kdl__h5_init(void)
{
        /* HDF5 must not print its error stack: errors become codes + messages. */
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

const char *kdl__h5_last_error(char buf[static 256])
{
        buf[0] = '\0';
        H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, last_error, buf);
        return buf[0] ? buf : "HDF5 gave no reason (its error stack is empty)";
}

int kdl__h5_nomem(const char *file, const char *obj)
{
        if (obj)
                return kdl_error(-ENOMEM, "'%s': %s: out of memory", file, obj);
        return kdl_error(-ENOMEM, "'%s': out of memory", file);
}

int kdl__h5_problem(kdl_h5file *f, const char *fmt, ...)
{
        kdl_dump *d = &f->dump;
        char **grown = NULL, *msg, *line = NULL;
        va_list ap;

        va_start(ap, fmt);
        msg = kdl__vasprintf(fmt, ap);
        va_end(ap);
        if (msg)
                line = kdl__asprintf("'%s': %s", d->path, msg);
        free(msg);
        if (line)
                grown = kdl__realloc(d->problems, d->nproblems + 1, sizeof(*grown));
        if (!grown) {
                free(line);
                return kdl__h5_nomem(d->path, NULL);
        }
        d->problems = grown;
        d->problems[d->nproblems++] = line;
        return 0;
}

/* What a file that is not a regular file is, for messages. */
static const char *file_kind(mode_t m)
{
        if (S_ISDIR(m))
                return "a directory";
        if (S_ISFIFO(m))
                return "a FIFO (named pipe)";
        if (S_ISCHR(m))
                return "a character device";
        if (S_ISBLK(m))
                return "a block device";
        if (S_ISSOCK(m))
                return "a socket";
        return "not a regular file";
}

/*
 * Only a non-empty regular file (after symbolic links) is opened: a FIFO
 * would block HDF5 forever, a device could be endless.  stat() names the
 * kind without opening it; the open that follows cannot block (O_NONBLOCK)
 * and fstat() checks what it opened, so that a FIFO put in its place in
 * between is caught too.  *@ret_size: its size in bytes.
 */
static int check_input(const char *path, uint64_t *ret_size)
{
        struct stat st, st2;
        int fd, e;

        if (stat(path, &st) < 0)
                return kdl_error(-errno, "cannot open '%s': %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return kdl_error(-KDL_EHDF5, "'%s': expected a regular file, found %s", path,
                                 file_kind(st.st_mode));
        fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
                return kdl_error(-errno, "cannot open '%s': %s", path, strerror(errno));
        e = fstat(fd, &st2) < 0 ? errno : 0;
        close(fd);
        if (e)
                return kdl_error(-e, "cannot open '%s': %s", path, strerror(e));
        if (!S_ISREG(st2.st_mode))
                return kdl_error(-KDL_EHDF5, "'%s': expected a regular file, found %s", path,
                                 file_kind(st2.st_mode));
        if (st2.st_size == 0)
                return kdl_error(-KDL_EHDF5, "'%s': expected an HDF5 file, found an empty file",
                                 path);
        *ret_size = (uint64_t) st2.st_size;
        return 0;
}

/* HDF5's external link callback: never open another file (a FIFO, a device...). */
static herr_t refuse_external(const char *parent_file, const char *parent_group,
                              const char *child_file, const char *child_object, unsigned *flags,
                              hid_t fapl, void *data)
{
        (void) parent_file;
        (void) parent_group;
        (void) child_file;
        (void) child_object;
        (void) flags;
        (void) fapl;
        (void) data;
        return -1;
}

/* An access property list of @cls that refuses to follow external links. */
static hid_t no_external(hid_t cls)
{
        hid_t pl = H5Pcreate(cls);

        if (pl >= 0 && H5Pset_elink_cb(pl, refuse_external, NULL) < 0) {
                H5Pclose(pl);
                return H5I_INVALID_HID;
        }
        return pl;
}

int kdl_h5_open(const char *path, kdl_h5file **ret)
{
        kdl_h5file *f;
        uint64_t size = 0;
        char buf[256];
        htri_t is;
        hid_t fapl;
        int err;

        assert(path && ret);
        kdl__h5_init();
        err = check_input(path, &size);
        if (err < 0)
                return err;
        is = H5Fis_hdf5(path);
        if (is <= 0)
                return kdl_error(-KDL_EHDF5, "'%s': expected an HDF5 file, found %s", path,
                                 is == 0 ? "another kind of file" : "a file HDF5 cannot read");
        f = kdl_new(kdl_h5file, 1);
        if (f) {
                f->fid = f->lapl = f->gapl = f->dapl = H5I_INVALID_HID;
                f->size = size;
                f->dump.path = kdl__strdup(path);
        }
        if (!f || !f->dump.path) {
                free(f);
                return kdl__h5_nomem(path, NULL);
        }
        f->lapl = no_external(H5P_LINK_ACCESS);
        f->gapl = no_external(H5P_GROUP_ACCESS);
        f->dapl = no_external(H5P_DATASET_ACCESS);
        fapl = H5Pcreate(H5P_FILE_ACCESS);
        /* Close every object with the file, so a failed read never leaks handles. */
        if (fapl >= 0 && H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0 && f->lapl >= 0 &&
            f->gapl >= 0 && f->dapl >= 0)
                f->fid = H5Fopen(path, H5F_ACC_RDONLY, fapl);
        if (f->fid < 0) {
                /* Read the stack before any other HDF5 call clears it. */
                err = kdl_error(-KDL_EHDF5,
                                "'%s': cannot open as HDF5 (truncated or damaged file?): %s", path,
                                kdl__h5_last_error(buf));
                if (fapl >= 0)
                        H5Pclose(fapl);
                kdl_h5_close(f);
                return err;
        }
        H5Pclose(fapl);
        err = kdl__h5_catalog(f);
        if (err < 0) {
                kdl_h5_close(f);
                return err;
        }
        *ret = f;
        return 0;
}

void kdl_h5_close(kdl_h5file *f)
{
        if (!f)
                return;
        kdl__h5_dump_release(&f->dump);
        if (f->fid >= 0)
                H5Fclose(f->fid);
        if (f->dapl >= 0)
                H5Pclose(f->dapl);
        if (f->gapl >= 0)
                H5Pclose(f->gapl);
        if (f->lapl >= 0)
                H5Pclose(f->lapl);
        free(f);
}

const kdl_dump *kdl_h5_dump(const kdl_h5file *f)
{
        return &f->dump;
}

int kdl_h5_check(const kdl_h5file *f)
{
        if (f->dump.nproblems == 0)
                return 0;
        return kdl_error(-KDL_ESCHEMA, "%s", f->dump.problems[0]);
}

hid_t kdl__h5_fid(const kdl_h5file *f)
{
        return f->fid;
}
