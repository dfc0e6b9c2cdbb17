/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

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
        size_t done = 0;
        int fd, err = 0;

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

void fuzz_file_close(struct fuzz_file *f)
{
        unlink(f->path);
}
