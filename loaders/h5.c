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
#include <poll.h>
#include <signal.h>
#include <stdnoreturn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
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

/* Open @path (checked by check_input(), @size bytes) as HDF5, with nothing catalogued. */
static int open_file(const char *path, uint64_t size, kdl_h5file **ret)
{
        kdl_h5file *f;
        char buf[256];
        htri_t is;
        hid_t fapl;
        int err;

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
        *ret = f;
        return 0;
}

/* kdl__h5_isolate(): off only in tests and fuzzers, per thread as the alloc hook. */
static _Thread_local bool in_process;

void kdl__h5_isolate(bool on)
{
        in_process = !on;
}

/* "killed by SIGSEGV" or "exit status 1" for a child's wait @status, in @buf. */
static const char *how_it_ended(int status, char buf[static 64])
{
        static const struct {
                int sig;
                const char *name;
        } names[] = {{SIGSEGV, "SIGSEGV"}, {SIGBUS, "SIGBUS"}, {SIGABRT, "SIGABRT"},
                     {SIGFPE, "SIGFPE"},   {SIGILL, "SIGILL"}, {SIGKILL, "SIGKILL"}};

        if (WIFEXITED(status)) {
                snprintf(buf, 64, "exit status %d", WEXITSTATUS(status));
                return buf;
        }
        snprintf(buf, 64, "killed by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : -1);
        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++)
                if (WIFSIGNALED(status) && WTERMSIG(status) == names[k].sig)
                        snprintf(buf, 64, "killed by %s", names[k].name);
        return buf;
}

/* The memory a child may use beyond what it was born with. */
#define CHILD_MEMORY ((rlim_t) 256 << 20)

/* Cap the data segment of this (child) process at its present size plus
 * CHILD_MEMORY: a damaged file can make libhdf5 allocate gigabytes. */
static void cap_memory(void)
{
        FILE *fp = fopen("/proc/self/status", "re");
        unsigned long long kb = 0;
        struct rlimit rl;
        char line[128];

        if (!fp)
                return;
        while (fgets(line, sizeof(line), fp))
                if (sscanf(line, "VmData: %llu kB", &kb) == 1)
                        break;
        fclose(fp);
        if (kb && getrlimit(RLIMIT_DATA, &rl) == 0) {
                rlim_t want = (rlim_t) kb * 1024 + CHILD_MEMORY;

                if (want < rl.rlim_cur) { /* never raise a limit the caller set */
                        rl.rlim_cur = want;
                        setrlimit(RLIMIT_DATA, &rl);
                }
        }
}

/* Write @n bytes of @p to @fd; false on failure. */
static bool write_all(int fd, const char *p, size_t n)
{
        while (n) {
                ssize_t w = write(fd, p, n);

                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return false;
                p += w;
                n -= (size_t) w;
        }
        return true;
}

/*
 * The child of isolated(): catalogue @path as kdl_h5_open() would and write
 * the catalogue, or the error, to @fd (kdl__h5_dump_pack()).
 */
static noreturn void catalogue_child(const char *path, uint64_t size, int fd)
{
        static const int fatal[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC), err;
        kdl_h5file *f = NULL;
        char *buf = NULL;
        size_t len = 0;

        /* A crash is the answer, not something to report or recover from:
         * no sanitizer report on stderr, no test framework's handler. */
        if (devnull >= 0)
                dup2(devnull, STDERR_FILENO);
        for (size_t k = 0; k < sizeof(fatal) / sizeof(fatal[0]); k++)
                signal(fatal[k], SIG_DFL);
        kdl__alloc_fail_after(-1);
        cap_memory();
        err = open_file(path, size, &f);
        if (err == 0)
                err = kdl__h5_catalog(f);
        if (err == -ENOMEM)
                kdl_error(err,
                          "'%s': reading the file's structure needs more than %d MiB (a damaged "
                          "file?)",
                          path, (int) (CHILD_MEMORY >> 20));
        err = kdl__h5_dump_pack(err < 0 ? NULL : &f->dump, err, &buf, &len);
        err = err == 0 && write_all(fd, buf, len) ? 0 : 1;
        free(buf); /* for leak checkers, which also look at children */
        kdl_h5_close(f);
        _exit(err);
}

/* Read what the child writes on @fd until it closes it, within @ms milliseconds.
 * Return: 0; 1 when out of time; -ENOMEM. */
static int read_child(const char *path, int fd, int ms, char **ret, size_t *ret_len)
{
        struct pollfd p = {.fd = fd, .events = POLLIN};
        size_t len = 0, cap = 0;
        struct timespec t0, t1;
        char *buf = NULL, *grown;
        ssize_t n;
        int r;

        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                r = poll(&p, 1, ms);
                clock_gettime(CLOCK_MONOTONIC, &t1);
                ms -= (int) ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
                t0 = t1;
                if (r == 0 || (r < 0 && errno == EINTR && ms <= 0)) {
                        free(buf);
                        return 1;
                }
                if (r < 0 && errno == EINTR)
                        continue; /* a signal: wait again, for the time left */
                if (len == cap) {
                        cap = cap ? 2 * cap : 1 << 16;
                        grown = kdl__realloc(buf, cap, 1);
                        if (!grown) {
                                free(buf);
                                return kdl__h5_nomem(path, NULL);
                        }
                        buf = grown;
                }
                n = read(fd, buf + len, cap - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                len += (size_t) n;
        }
        *ret = buf;
        *ret_len = len;
        return 0;
}

/*
 * Catalogue @path (@size bytes) in a child process, so that a crash, a hang
 * or a memory blow-up of libhdf5 on a damaged file becomes an error naming
 * it: libhdf5 does not check everything it reads (a looping B-tree recurses
 * until the stack overflows, a corrupt global heap is copied past its end,
 * a string's stored length is allocated as it says), and no check from
 * outside can tell such a file apart.  The child sends the catalogue back;
 * this process then opens the file (its superblock and root group, which
 * the child read first) and never parses the rest of the structure itself.
 * The child relies on glibc's malloc and HDF5 being usable after fork(),
 * which holds when no other thread is inside HDF5 (it is not thread-safe
 * anyway).
 *
 * Limits of the child: CHILD_MEMORY more memory; 10 s, and 1 s more per GiB
 * of file (it reads only metadata).
 *
 * Return: 0 with *@ret set; 1 when no child could be made (the caller
 * catalogues the file itself); a negative code.
 */
static int isolated(const char *path, uint64_t size, kdl_h5file **ret)
{
        uint64_t secs = 10 + (size >> 30);
        int fds[2], status = 0, ms = secs > 2000000 ? 2000000000 : (int) secs * 1000, err;
        kdl_dump d = {0};
        kdl_h5file *f = NULL;
        char *buf = NULL, how[64];
        size_t len = 0;
        pid_t pid;

        if (pipe2(fds, O_CLOEXEC) < 0)
                return 1;
        pid = fork();
        if (pid < 0) {
                close(fds[0]);
                close(fds[1]);
                return 1;
        }
        if (pid == 0) {
                close(fds[0]);
                catalogue_child(path, size, fds[1]);
        }
        close(fds[1]);
        err = read_child(path, fds[0], ms, &buf, &len);
        if (err != 0)
                kill(pid, SIGKILL);
        close(fds[0]);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        if (err > 0)
                return kdl_error(-KDL_EHDF5,
                                 "'%s': cannot read the file's structure: HDF5 did not finish "
                                 "within %llu s (a damaged file?)",
                                 path, (unsigned long long) secs);
        if (err < 0)
                return err;
        d.path = kdl__strdup(path);
        err = d.path ? kdl__h5_dump_unpack(&d, buf, len) : kdl__h5_nomem(path, NULL);
        free(buf);
        if (err == 0)
                err = kdl_error(-KDL_EHDF5,
                                "'%s': cannot read the file's structure: HDF5 crashed on it (%s); "
                                "the file is damaged",
                                path, how_it_ended(status, how));
        if (err > 0)
                err = open_file(path, size, &f);
        if (err < 0) {
                kdl__h5_dump_release(&d);
                return err;
        }
        free(f->dump.path);
        f->dump = d;
        *ret = f;
        return 0;
}

int kdl_h5_open(const char *path, kdl_h5file **ret)
{
        kdl_h5file *f = NULL;
        uint64_t size = 0;
        int err;

        assert(path && ret);
        kdl__h5_init();
        err = check_input(path, &size);
        if (err == 0)
                err = in_process ? 1 : isolated(path, size, &f);
        if (err > 0)
                err = open_file(path, size, &f) ?: kdl__h5_catalog(f);
        /* The labels and ids are data: read here, after the child checked their storage. */
        if (err == 0)
                err = kdl__h5_check_labels(f) ?: kdl__h5_check_ids(f) ?: kdl__h5_check_topk(f);
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
