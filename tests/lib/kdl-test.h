/* SPDX-License-Identifier: MIT */
#ifndef KDL_TESTS_LIB_KDL_TEST_H
#define KDL_TESTS_LIB_KDL_TEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * assert_close() - fail unless |actual - expected| <= atol + rtol*|expected|
 * (GSL's gsl_test_rel idea); reports both values with %.17g.  NaN never passes.
 */
#define assert_close(actual, expected, rtol, atol)                                                 \
        kdl_test_assert_close((actual), (expected), (rtol), (atol), #actual, __FILE__, __LINE__)

void kdl_test_assert_close(double actual, double expected, double rtol, double atol,
                           const char *expr, const char *file, int line);

/* A seeded generator (splitmix64 + Box-Muller) so tests never depend on unseeded randomness. */
typedef struct kdl_test_rng {
        uint64_t s;
} kdl_test_rng;

double kdl_test_uniform(kdl_test_rng *r); /* (0, 1) */
double kdl_test_normal(kdl_test_rng *r);  /* N(0, 1) */

/* kdl_test_tmpdir() - a fresh temporary directory (static path, removed by the caller's rm -rf). */
const char *kdl_test_tmpdir(void);

#endif
