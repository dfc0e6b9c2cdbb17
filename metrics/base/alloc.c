/* SPDX-License-Identifier: MIT */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "metrics/base/alloc.h"

/*
 * Ask for transparent huge pages on the 2 MiB-aligned interior of a large
 * allocation, before anything touches it.  On this project's (virtual)
 * machines first touch of a fresh GiB costs 2.7 s in 4 KiB pages and 1.3 s
 * with the advice (tests/bench/bench-alloc); CKA's state is about 1 GiB, and
 * every large block of every streaming state pays it once.  Advice only:
 * where THP is off, or the memory came from the heap and is touched already,
 * nothing changes.
 */
static void advise_huge(void *p, size_t total)
{
#ifdef MADV_HUGEPAGE
        uintptr_t a = ((uintptr_t) p + KDL_HUGE_PAGE - 1) & ~(uintptr_t) (KDL_HUGE_PAGE - 1);
        uintptr_t e = ((uintptr_t) p + total) & ~(uintptr_t) (KDL_HUGE_PAGE - 1);

        if (total >= KDL_HUGE_MIN && e > a)
                (void) madvise((void *) a, e - a, MADV_HUGEPAGE);
#else
        (void) p;
        (void) total;
#endif
}

int kdl_mul_size(size_t a, size_t b, size_t *ret)
{
        size_t r;

        if (__builtin_mul_overflow(a, b, &r))
                return kdl_error(-KDL_EOVERFLOW, "size %zu x %zu overflows", a, b);
        *ret = r;
        return 0;
}

void *kdl__calloc(size_t n, size_t size)
{
        size_t total;
        void *p;

        if (kdl_mul_size(n, size, &total) < 0)
                return NULL;
        /* A large block is usually a fresh mmap that calloc leaves
         * untouched, so the advice comes before its first fault. */
        p = calloc(total ? n : 1, total ? size : 1);
        if (p)
                advise_huge(p, total);
        else
                kdl_error(-ENOMEM, "out of memory allocating %zu bytes", total);
        return p;
}

void *kdl__malloc(size_t n, size_t size)
{
        size_t total;
        void *p;

        if (kdl_mul_size(n, size, &total) < 0)
                return NULL;
        p = malloc(total ? total : 1);
        if (p)
                advise_huge(p, total);
        else
                kdl_error(-ENOMEM, "out of memory allocating %zu bytes", total);
        return p;
}

char *kdl__strdup(const char *s)
{
        char *r = strdup(s);

        if (!r)
                kdl_error(-ENOMEM, "out of memory");
        return r;
}

char *kdl__asprintf(const char *fmt, ...)
{
        va_list ap;
        char *r;
        int n;

        va_start(ap, fmt);
        n = vasprintf(&r, fmt, ap);
        va_end(ap);
        if (n < 0) {
                kdl_error(-ENOMEM, "out of memory");
                return NULL;
        }
        return r;
}

int kdl__blas_int(size_t n, int *ret)
{
        if (n > (size_t) INT_MAX)
                return kdl_error(-KDL_EOVERFLOW, "dimension %zu does not fit the BLAS integer type",
                                 n);
        *ret = (int) n;
        return 0;
}
