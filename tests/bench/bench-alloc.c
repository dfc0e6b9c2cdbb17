/* SPDX-License-Identifier: MIT */
/*
 * bench-alloc: what does first touch of a large block cost, with and without
 * the huge-page advice of kdl__calloc()?  Not a test: a program to run by hand,
 *
 *      build/tests/bench/bench-alloc [MIB [REPEAT]]
 *
 * Each run is a fresh process (a process reuses pages it freed, which would
 * hide the cost): it allocates MIB MiB (default 1024) with plain calloc() or
 * with kdl__calloc(), writes one byte per 4 KiB page, and reports the time
 * from the allocation to the last write.  The two kinds alternate, REPEAT
 * (default 5) runs each; it prints every time and the medians.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "metrics/base/alloc.h"

static double now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

/* One run in a child: seconds to allocate and touch @bytes, or -1. */
static double run(size_t bytes, int advised)
{
        int fds[2];
        double t = -1.0;
        pid_t pid;

        if (pipe(fds) < 0 || (pid = fork()) < 0)
                return -1.0;
        if (pid == 0) {
                double t0 = now();
                char *p = advised ? kdl__calloc(bytes, 1) : calloc(bytes, 1);

                if (p) {
                        for (size_t i = 0; i < bytes; i += 4096)
                                p[i] = 1;
                        t = now() - t0;
                }
                _exit(write(fds[1], &t, sizeof(t)) == sizeof(t) ? 0 : 1);
        }
        close(fds[1]);
        if (read(fds[0], &t, sizeof(t)) != sizeof(t))
                t = -1.0;
        close(fds[0]);
        waitpid(pid, NULL, 0);
        return t;
}

static int cmp(const void *a, const void *b)
{
        double x = *(const double *) a, y = *(const double *) b;

        return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
        size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
        int repeat = argc > 2 ? atoi(argv[2]) : 5;
        double *t[2];

        if (argc > 3 || mib == 0 || repeat < 1 || repeat > 99) {
                fprintf(stderr, "usage: bench-alloc [MIB [REPEAT (1..99)]]\n");
                return 2;
        }
        t[0] = malloc((size_t) repeat * sizeof(double));
        t[1] = malloc((size_t) repeat * sizeof(double));
        if (!t[0] || !t[1])
                return 1;
        printf("first touch of %zu MiB, one fresh process per run, one write per 4 KiB page\n",
               mib);
        for (int r = 0; r < repeat; r++)
                for (int k = 0; k < 2; k++) {
                        t[k][r] = run(mib << 20, k);
                        if (t[k][r] < 0.0) {
                                fprintf(stderr, "bench-alloc: run %d failed\n", r + 1);
                                return 1;
                        }
                        printf("  run %d %-34s %7.3f s\n", r + 1,
                               k ? "kdl__calloc (huge pages advised)" : "calloc", t[k][r]);
                }
        for (int k = 0; k < 2; k++) {
                qsort(t[k], (size_t) repeat, sizeof(double), cmp);
                printf("median %-34s %7.3f s = %.2f s per GiB\n",
                       k ? "kdl__calloc (huge pages advised)" : "calloc", t[k][repeat / 2],
                       t[k][repeat / 2] * 1024.0 / (double) mib);
        }
        free(t[0]);
        free(t[1]);
        return 0;
}
