/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_BASE_ERROR_H
#define KDL_METRICS_BASE_ERROR_H

#include <errno.h>

#if defined(__GNUC__)
#define KDL_API          __attribute__((visibility("default")))
#define KDL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define KDL_API
#define KDL_PRINTF(a, b)
#endif

/*
 * Error model (STYLE.md 3.2): every fallible function returns an int, 0 or a
 * non-negative count on success and a negative code on failure: -errno for
 * system failures, -KDL_E* (>= 1024) for kdlens's own.  The message is
 * recorded once, where the error is detected, in a thread-local buffer.
 */
enum {
        KDL_EFIRST = 1024,
        KDL_ESHAPE = KDL_EFIRST, /* a dimension or rank is not what is expected */
        KDL_ENOTSQUARE,
        KDL_ESINGULAR,  /* LAPACK info > 0 on a factorisation */
        KDL_ENOCONV,    /* an iteration or eigensolver did not converge */
        KDL_ENONFINITE, /* NaN or Inf in input */
        KDL_EOVERFLOW,  /* a size product or BLAS dimension overflows */
        KDL_EHDF5,      /* the HDF5 library refused an operation */
        KDL_ESCHEMA,    /* a dump does not follow the kdlens schema */
        KDL_ERANGE,     /* a value (label, index, option) is out of range */
        KDL_EMISMATCH,  /* two inputs disagree (sample counts, ids, classes) */
        KDL_EMISSING,   /* a dataset or group the request needs is absent */
        KDL_EPLOT,      /* gnuplot failed */
        KDL_EUSAGE,     /* a bad argument from the user (CLI maps it to exit 2) */
        KDL_EBUDGET,    /* an analysis would need more memory than the budget (--memory) */
        KDL_ELAST_
};

#define KDL_CONTINUE 1 /* positive: iterate again; not an error */

/**
 * kdl_error() - record @fmt as the message of the current error.
 * @err: the code to return, negative.
 *
 * Return: @err, so that detection reads `return kdl_error(-KDL_ESHAPE, ...)`.
 */
KDL_API int kdl_error(int err, const char *fmt, ...) KDL_PRINTF(2, 3);

/**
 * kdl_errmsg() - the message recorded by the last kdl_error() on this thread,
 * or "" when none was recorded.  Borrowed; valid until the next kdl_error()
 * on the same thread.
 */
KDL_API const char *kdl_errmsg(void);

/** kdl_error_clear() - forget the recorded message (for callers that recover). */
KDL_API void kdl_error_clear(void);

/**
 * kdl_strerror() - a static description of @err, for both -errno and
 * -KDL_E* codes.
 */
KDL_API const char *kdl_strerror(int err);

#endif
