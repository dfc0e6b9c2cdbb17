/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "metrics/base/alloc.h"
#include "metrics/base/outfile.h"
#include "metrics/base/banned.h"

static const char *kind_name(mode_t m)
{
        if (S_ISDIR(m))
                return "a directory";
        if (S_ISLNK(m))
                return "a symbolic link";
        if (S_ISFIFO(m))
                return "a FIFO";
        if (S_ISCHR(m) || S_ISBLK(m))
                return "a device";
        if (S_ISSOCK(m))
                return "a socket";
        return "not a regular file";
}

static bool same(const struct stat *a, const struct stat *b)
{
        return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* Whether the directory @dir is @input's directory or one above it. */
static int holds(const struct stat *dir, const char *input, bool *ret)
{
        char *real = realpath(input, NULL);
        struct stat st;
        char *slash;

        if (!real)
                return kdl_error(-errno, "cannot resolve the input '%s': %s", input,
                                 strerror(errno));
        *ret = false;
        while ((slash = strrchr(real, '/'))) {
                slash[slash == real] = '\0'; /* "/a/b" -> "/a" -> "/" */
                if (stat(real, &st) == 0 && same(&st, dir)) {
                        *ret = true;
                        break;
                }
                if (slash == real)
                        break;
        }
        free(real);
        return 0;
}

int kdl_out_check(const char *out, enum kdl_out_kind kind, const char *const *inputs, size_t n)
{
        struct stat lo, so, si;

        if (lstat(out, &lo) < 0) {
                if (errno == ENOENT)
                        return 0; /* nothing there to lose */
                return kdl_error(-errno, "cannot examine the output '%s': %s", out,
                                 strerror(errno));
        }
        if (stat(out, &so) < 0)
                so = lo; /* a dangling link: compare the link itself */
        for (size_t k = 0; k < n; k++) {
                bool inside = false;
                int err;

                if (stat(inputs[k], &si) < 0)
                        continue; /* the input's own open reports it */
                if (same(&so, &si) || same(&lo, &si))
                        return kdl_error(-KDL_EUSAGE,
                                         "the output '%s' is the input '%s': refusing to "
                                         "overwrite an input",
                                         out, inputs[k]);
                if (S_ISDIR(so.st_mode) && (err = holds(&so, inputs[k], &inside)) < 0)
                        return err;
                if (inside)
                        return kdl_error(-KDL_EUSAGE,
                                         "the output '%s' is a directory holding the input '%s': "
                                         "refusing to replace it",
                                         out, inputs[k]);
        }
        if (kind == KDL_OUT_FILE && !S_ISREG(lo.st_mode))
                return kdl_error(-KDL_EUSAGE,
                                 "the output '%s' exists and is %s, not a regular file: refusing "
                                 "to replace it",
                                 out, kind_name(lo.st_mode));
        return 0;
}

char *kdl_out_tmpname(const char *target)
{
        return kdl__asprintf("%s.tmp-%ld-XXXXXX", target, (long) getpid());
}

static const char *base_name(const char *path)
{
        const char *s = strrchr(path, '/');

        return s ? s + 1 : path;
}

bool kdl_out_is_stale(const char *target, const char *name)
{
        const char *base = base_name(target), *p;
        size_t nb = strlen(base);
        char *end;
        long pid;

        if (strncmp(name, base, nb) != 0 || strncmp(name + nb, ".tmp-", 5) != 0)
                return false;
        p = name + nb + 5;
        if (*p < '1' || *p > '9')
                return false;
        errno = 0;
        pid = strtol(p, &end, 10);
        if (errno || *end != '-' || pid <= 0 || pid > INT_MAX || strlen(end + 1) != 6)
                return false;
        for (const char *c = end + 1; *c; c++)
                if (!(*c >= 'a' && *c <= 'z') && !(*c >= 'A' && *c <= 'Z') &&
                    !(*c >= '0' && *c <= '9'))
                        return false;
        if (pid == (long) getpid())
                return false;
        /* EPERM: alive, another user's; 0: alive.  Only a gone process's is stale. */
        return kill((pid_t) pid, 0) < 0 && errno == ESRCH;
}

int kdl_out_sweep(const char *target, int (*rm)(const char *path, void *arg), void *arg)
{
        const char *base = base_name(target);
        char *dir = base == target ? kdl__strdup(".")
                                   : kdl__asprintf("%.*s", (int) (base - target), target);
        struct dirent *e;
        DIR *d;
        int n = 0;

        if (!dir)
                return -ENOMEM;
        d = opendir(dir);
        if (!d) {
                int err = errno == ENOENT
                                  ? 0
                                  : kdl_error(-errno, "cannot list '%s': %s", dir, strerror(errno));
                free(dir);
                return err;
        }
        while ((e = readdir(d))) {
                char *path;
                int r;

                if (!kdl_out_is_stale(target, e->d_name))
                        continue;
                path = kdl__asprintf("%s%s", base == target ? "" : dir, e->d_name);
                if (!path) {
                        n = -ENOMEM;
                        break;
                }
                r = rm(path, arg);
                free(path);
                if (r > 0)
                        n++;
        }
        closedir(d);
        free(dir);
        return n;
}
