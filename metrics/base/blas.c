/* SPDX-License-Identifier: MIT */
#include "kdl-config.h"

#include <cblas.h>

#include "metrics/base/blas.h"
#include "metrics/base/banned.h"

#if KDL_HAVE_OPENBLAS_THREADS
int kdl__blas_serial_begin(void)
{
        int n = openblas_get_num_threads();

        if (n > 1)
                openblas_set_num_threads(1);
        return n;
}

void kdl__blas_serial_end(int saved)
{
        if (saved > 1)
                openblas_set_num_threads(saved);
}
#else
int kdl__blas_serial_begin(void)
{
        return 1;
}

void kdl__blas_serial_end(int saved)
{
        (void) saved;
}
#endif
