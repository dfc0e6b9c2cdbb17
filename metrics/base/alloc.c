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

/* kdl__alloc_fail_after()'s countdown: thread-local, as the error message. */
static _Thread_local long fail_countdown = -1;

long kdl__alloc_fail_after(long n)
{
        long prev = fail_countdown;

        fail_countdown = n < 0 ? -1 : n;
        return prev;
}

/* True when the test hook makes this allocation fail. */
static bool injected_failure(void)
{
        if (fail_countdown < 0)
                return false;
        return fail_countdown-- == 0;
}

static void *nomem(size_t total)
{
        kdl_error(-ENOMEM, "out of memory allocating %zu bytes", total);
        return NULL;
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
        if (injected_failure())
                return nomem(total);
        /* A large block is usually a fresh mmap that calloc leaves
         * untouched, so the advice comes before its first fault. */
        p = calloc(total ? n : 1, total ? size : 1);
        if (!p)
                return nomem(total);
        advise_huge(p, total);
        return p;
}

void *kdl__realloc(void *p, size_t n, size_t size)
{
        size_t total;
        void *r;

        if (kdl_mul_size(n, size, &total) < 0)
                return NULL;
        if (injected_failure())
                return nomem(total);
        /* realloc(p, 0) may free p: keep at least one byte. */
        r = realloc(p, total ? total : 1);
        if (!r)
                return nomem(total);
        return r;
}

void *kdl__malloc(size_t n, size_t size)
{
        void *p = kdl__realloc(NULL, n, size);

        if (p)
                advise_huge(p, n * size); /* kdl__realloc() checked the product */
        return p;
}

char *kdl__strdup(const char *s)
{
        char *r = injected_failure() ? NULL : strdup(s);

        if (!r)
                kdl_error(-ENOMEM, "out of memory");
        return r;
}

char *kdl__vasprintf(const char *fmt, va_list ap)
{
        char *r;

        if (injected_failure() || vasprintf(&r, fmt, ap) < 0) {
                kdl_error(-ENOMEM, "out of memory");
                return NULL;
        }
        return r;
}

char *kdl__asprintf(const char *fmt, ...)
{
        va_list ap;
        char *r;

        va_start(ap, fmt);
        r = kdl__vasprintf(fmt, ap);
        va_end(ap);
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
