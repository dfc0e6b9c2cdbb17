/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loaders/h5-internal.h"
#include "tests/fuzz/fuzz-file.h"

static const char *directory(void)
{
        const char *d = getenv("KDL_FUZZ_DIR");
        struct stat st;

        if (d && *d)
                return d;
        if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
                return "/dev/shm";
        d = getenv("TMPDIR");
        return d && *d ? d : "/tmp";
}

int fuzz_file_open(struct fuzz_file *f, const uint8_t *data, size_t size)
{
        /* A new name (so a new inode) per input: HDF5 keys open files by inode. */
        static unsigned long serial;
        const char *isolate = getenv("KDL_FUZZ_ISOLATE");
        size_t done = 0;
        int fd, err = 0;

        if (serial == 0)
                kdl__h5_isolate(isolate && strcmp(isolate, "1") == 0);

        snprintf(f->path, sizeof(f->path), "%s/kdl-fuzz-%ld-%lu.h5", directory(), (long) getpid(),
                 serial++);
        fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        while (done < size && !err) {
                ssize_t n = write(fd, data + done, size - done);

                if (n < 0)
                        err = -errno;
                else
                        done += (size_t) n;
        }
        if (close(fd) < 0 && !err)
                err = -errno;
        if (err)
                unlink(f->path);
        return err;
}

/* HDF5 identifiers of the kinds kdlens opens; the library's own default
 * property lists are counted too, hence a baseline. */
static const H5I_type_t id_types[] = {H5I_FILE,    H5I_GROUP, H5I_DATATYPE,   H5I_DATASPACE,
                                      H5I_DATASET, H5I_ATTR,  H5I_GENPROP_LST};
#define NTYPES (sizeof(id_types) / sizeof(id_types[0]))

/* Abort when an input left more HDF5 identifiers open than the first did:
 * LeakSanitizer cannot see them (HDF5's identifier table still points at
 * them), but a long run would exhaust memory or file descriptors. */
static void check_identifiers(void)
{
        static hsize_t baseline[NTYPES];
        static bool have_baseline;

        for (size_t k = 0; k < NTYPES; k++) {
                hsize_t n = 0;

                if (H5Inmembers(id_types[k], &n) < 0)
                        continue;
                if (!have_baseline)
                        baseline[k] = n;
                else if (n > baseline[k]) {
                        fprintf(stderr,
                                "fuzz: HDF5 identifiers of type %d left open: %llu, %llu "
                                "after the first input\n",
                                (int) id_types[k], (unsigned long long) n,
                                (unsigned long long) baseline[k]);
                        abort();
                }
        }
        have_baseline = true;
}

void fuzz_file_close(struct fuzz_file *f)
{
        unlink(f->path);
        check_identifiers();
}
