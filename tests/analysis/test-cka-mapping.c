/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/alloc.h"
#include "analysis/cka-internal.h"

#define NONE SIZE_MAX

/* kdl__cka_mapping_solve() on @v ([na, nb], row j a layer of A) against the rows worked
 * by hand: @best and @map. */
static void check(const double *v, size_t na, size_t nb, const size_t *best, const size_t *map)
{
        size_t b[4], m[4];

        assert_true(nb <= 4);
        assert_int_equal(kdl__cka_mapping_solve(v, na, nb, b, m), 0);
        for (size_t i = 0; i < nb; i++) {
                assert_int_equal(b[i], best[i]);
                assert_int_equal(m[i], map[i]);
        }
}

/* Column 0 is best at row 2, column 1 at row 0: the monotone maps (0,0) 0.9, (0,1) 0.4,
 * (0,2) 0.6, (1,1) 0.5, (1,2) 0.7, (2,2) 1.4. */
static void test_hand_worked(void **state)
{
        const double v[] = {0.1, 0.8, 0.2, 0.3, 0.9, 0.5};

        (void) state;
        check(v, 3, 2, (size_t[]){2, 0}, (size_t[]){2, 2});
}

/* Exact ties (sums of powers of two): the earliest row wins, for the last column first. */
static void test_ties(void **state)
{
        const double same[] = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
        /* (0,0) 0.75, (0,1) 0.5, (1,1) 0.75: (0,0). */
        const double cross[] = {0.25, 0.5, 0.5, 0.25};
        /* (0,0) 0.75, (0,1) 0.75, (1,1) 0.75: m(1) = 0 first. */
        const double flat[] = {0.5, 0.25, 0.5, 0.25};

        (void) state;
        check(same, 3, 2, (size_t[]){0, 0}, (size_t[]){0, 0});
        check(cross, 2, 2, (size_t[]){1, 0}, (size_t[]){0, 0});
        check(flat, 2, 2, (size_t[]){0, 0}, (size_t[]){0, 0});
}

/* NaN is never chosen: a column of NaN has no best row, and when every monotone map
 * crosses a NaN there is no map at all; otherwise the map goes round the NaN ((2,2)
 * would be best). */
static void test_nan(void **state)
{
        const double blocked[] = {NAN, 0.9, 0.2, NAN, 0.3, NAN};
        const double empty[] = {NAN, 0.4, NAN, 0.1};
        const double around[] = {0.1, 0.8, 0.2, 0.3, 0.9, NAN};
        size_t b[1], m[1];

        (void) state;
        check(blocked, 3, 2, (size_t[]){2, 0}, (size_t[]){NONE, NONE});
        check(empty, 2, 2, (size_t[]){NONE, 0}, (size_t[]){NONE, NONE});
        check(around, 3, 2, (size_t[]){2, 0}, (size_t[]){0, 0});
        /* No layer of B: nothing to do. */
        assert_int_equal(kdl__cka_mapping_solve(around, 3, 0, b, m), 0);
}

static void test_alloc_failure(void **state)
{
        const double v[] = {0.1, 0.8, 0.2, 0.3, 0.9, 0.5};
        bool fired = true;
        size_t k;

        (void) state;
        for (k = 0; fired; k++) {
                size_t b[2] = {7, 7}, m[2] = {7, 7};
                int err;

                kdl__alloc_fail_after((long) k);
                err = kdl__cka_mapping_solve(v, 3, 2, b, m);
                fired = kdl__alloc_fail_after(-1) < 0;
                assert_int_equal(err, fired ? -ENOMEM : 0);
                /* Outputs untouched on failure. */
                assert_true(fired ? b[0] == 7 && m[1] == 7 : b[0] == 2 && m[1] == 2);
        }
        assert_int_equal(k, 5);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hand_worked),
                cmocka_unit_test(test_ties),
                cmocka_unit_test(test_nan),
                cmocka_unit_test(test_alloc_failure),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
