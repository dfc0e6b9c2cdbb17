/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include "tests/lib/kdl-test.h"

void kdl_test_assert_close(double actual, double expected, double rtol, double atol,
                           const char *expr, const char *file, int line)
{
        double tol = atol + rtol * fabs(expected);

        if (!(fabs(actual - expected) <= tol)) {
                print_error("%s = %.17g, expected %.17g (|diff| %.3g > tol %.3g)\n", expr, actual,
                            expected, fabs(actual - expected), tol);
                _fail(file, line);
        }
}

static uint64_t splitmix64(uint64_t *s)
{
        uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

double kdl_test_uniform(kdl_test_rng *r)
{
        return ((double) (splitmix64(&r->s) >> 11) + 0.5) * 0x1.0p-53;
}

double kdl_test_normal(kdl_test_rng *r)
{
        double u = kdl_test_uniform(r), v = kdl_test_uniform(r);

        return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

const char *kdl_test_tmpdir(void)
{
        static char path[] = "/tmp/kdl-test-XXXXXX";

        if (!mkdtemp(path))
                fail_msg("mkdtemp failed");
        return path;
}
