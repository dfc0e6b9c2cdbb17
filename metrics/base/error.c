/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "metrics/base/error.h"

/* Thread-local rather than libvips's global buffer: metrics may run in
 * threads.  Messages are one line; a long path is cut, never overflowed. */
static _Thread_local char message[1024];

int kdl_error(int err, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(message, sizeof(message), fmt, ap);
        va_end(ap);
        return err;
}

const char *kdl_errmsg(void)
{
        return message;
}

void kdl_error_clear(void)
{
        message[0] = '\0';
}

const char *kdl_strerror(int err)
{
        static const char *const text[] = {
                [KDL_ESHAPE - KDL_EFIRST] = "unexpected shape",
                [KDL_ENOTSQUARE - KDL_EFIRST] = "matrix is not square",
                [KDL_ESINGULAR - KDL_EFIRST] = "matrix is singular",
                [KDL_ENOCONV - KDL_EFIRST] = "no convergence",
                [KDL_ENONFINITE - KDL_EFIRST] = "non-finite value",
                [KDL_EOVERFLOW - KDL_EFIRST] = "size overflow",
                [KDL_EHDF5 - KDL_EFIRST] = "HDF5 error",
                [KDL_ESCHEMA - KDL_EFIRST] = "not a kdlens dump",
                [KDL_ERANGE - KDL_EFIRST] = "value out of range",
                [KDL_EMISMATCH - KDL_EFIRST] = "inputs do not match",
                [KDL_EMISSING - KDL_EFIRST] = "missing dataset",
                [KDL_EPLOT - KDL_EFIRST] = "gnuplot failed",
                [KDL_EUSAGE - KDL_EFIRST] = "usage error",
                [KDL_EBUDGET - KDL_EFIRST] = "over the memory budget",
        };
        int e = -err;

        if (e >= KDL_EFIRST && e < KDL_ELAST_)
                return text[e - KDL_EFIRST];
        if (e > 0)
                return strerror(e);
        return "success";
}
