/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_BASE_ALLOC_H
#define KDL_METRICS_BASE_ALLOC_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/base/error.h"

/**
 * kdl_mul_size() - *@ret = @a * @b unless the product overflows size_t.
 * Return: 0; -KDL_EOVERFLOW (message recorded) on overflow, *@ret untouched.
 */
KDL_API int kdl_mul_size(size_t a, size_t b, size_t *ret);

#define KDL_HUGE_PAGE ((size_t) 2 << 20) /* the transparent huge page size advised */
#define KDL_HUGE_MIN  ((size_t) 8 << 20) /* from this size on, allocations advise huge pages */

/**
 * kdl__calloc() - zeroed array of @n elements of @size bytes (systemd new()).
 * From KDL_HUGE_MIN bytes on, the block's 2 MiB-aligned interior is advised
 * MADV_HUGEPAGE (where the system has it), as is kdl__malloc()'s.
 * Return: the memory (caller frees with free()), or NULL when the product
 * overflows or memory is exhausted; the message is recorded either way.
 */
void *kdl__calloc(size_t n, size_t size);

/** kdl_new() - zeroed array of @n objects of @type; NULL on overflow/ENOMEM. */
#define kdl_new(type, n) ((type *) kdl__calloc((n), sizeof(type)))

/**
 * kdl__malloc() - uninitialised array of @n elements of @size bytes; as
 * kdl__calloc() for large scratch buffers that are overwritten anyway.
 */
void *kdl__malloc(size_t n, size_t size);

/**
 * kdl__realloc() - resize @p (NULL: allocate) to @n elements of @size bytes.
 * Return: the memory (caller frees with free()), or NULL when the product
 * overflows or memory is exhausted, @p then untouched and still the caller's;
 * the message is recorded either way.
 */
void *kdl__realloc(void *p, size_t n, size_t size);

/** kdl__strdup() - strdup() that records ENOMEM. */
char *kdl__strdup(const char *s);

/** kdl__asprintf() - allocated formatted string, NULL (message recorded) on ENOMEM. */
char *kdl__asprintf(const char *fmt, ...) KDL_PRINTF(1, 2);

/** kdl__vasprintf() - kdl__asprintf() with a va_list. */
char *kdl__vasprintf(const char *fmt, va_list ap) KDL_PRINTF(1, 0);

/**
 * kdl__alloc_fail_after() - test hook: let @n more calls of the helpers
 * above (kdl__calloc, kdl__malloc, kdl__realloc, kdl__strdup, kdl__asprintf,
 * kdl__vasprintf) on this thread succeed, then fail the next one as if
 * memory were exhausted (once: the hook disarms itself when it fires).  A
 * negative @n disarms it.  Lets tests prove that every allocation failure
 * reaches the caller; never used outside tests.
 *
 * Return: the calls that were still to succeed before this call, negative
 * when the hook was disarmed or had fired.
 */
long kdl__alloc_fail_after(long n);

/**
 * kdl__blas_int() - check that @n fits the BLAS/LAPACK integer type.
 * Return: 0 with *@ret set; -KDL_EOVERFLOW otherwise.
 */
int kdl__blas_int(size_t n, int *ret);

#endif
