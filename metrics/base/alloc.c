/* SPDX-License-Identifier: MIT */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"

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
        p = calloc(total ? n : 1, total ? size : 1);
        if (!p)
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
        if (!p)
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
