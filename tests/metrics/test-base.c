/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kdl-config.h"

#include <cblas.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/alloc.h"
#include "metrics/base/blas.h"
#include "metrics/base/error.h"
#include "metrics/base/rng.h"
#include "metrics/base/tensor.h"

static void test_error_records_message_once(void **state)
{
        (void) state;
        kdl_error_clear();
        assert_string_equal(kdl_errmsg(), "");
        assert_int_equal(kdl_error(-KDL_ESHAPE, "'%s': expected %d-D, got %d-D", "x", 2, 3),
                         -KDL_ESHAPE);
        assert_string_equal(kdl_errmsg(), "'x': expected 2-D, got 3-D");
        assert_string_equal(kdl_strerror(-KDL_ENONFINITE), "non-finite value");
        assert_string_equal(kdl_strerror(-ENOENT), strerror(ENOENT));
}

static void test_mul_size_overflow_keeps_output(void **state)
{
        size_t r = 7;

        (void) state;
        assert_int_equal(kdl_mul_size(SIZE_MAX / 2 + 1, 2, &r), -KDL_EOVERFLOW);
        assert_int_equal(r, 7);
        assert_int_equal(kdl_mul_size(3000000007ULL, 3, &r), 0);
        assert_true(r == 9000000021ULL);
        assert_null(kdl__calloc(SIZE_MAX / 4, 8));
        assert_non_null(strstr(kdl_errmsg(), "overflows"));
}

/* Whether the mapping holding @p has MADV_HUGEPAGE set ("hg" in its VmFlags
 * in /proc/self/smaps). */
static bool advised_huge(const void *p)
{
        FILE *f = fopen("/proc/self/smaps", "r");
        char line[512];
        bool inside = false, hg = false;

        assert_non_null(f);
        while (fgets(line, sizeof(line), f)) {
                unsigned long lo, hi;

                if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
                    strchr(line, '-') < strchr(line, ' '))
                        inside = (uintptr_t) p >= lo && (uintptr_t) p < hi;
                else if (inside && strncmp(line, "VmFlags:", 8) == 0)
                        hg = strstr(line, " hg") != NULL;
        }
        fclose(f);
        return hg;
}

static void test_large_allocations_advise_huge_pages(void **state)
{
        size_t big = 4 * KDL_HUGE_MIN / sizeof(double);
        double *z = kdl_new(double, big);
        char *m = kdl__malloc(KDL_HUGE_MIN, 3);
        char *small = kdl_new(char, KDL_HUGE_MIN / 4);

        (void) state;
        assert_non_null(z);
        assert_non_null(m);
        assert_non_null(small);
        /* The middle of each large block lies in its advised interior. */
        assert_true(advised_huge(z + big / 2));
        assert_true(advised_huge(m + 3 * KDL_HUGE_MIN / 2));
        assert_false(advised_huge(small + KDL_HUGE_MIN / 8));
        /* Still zeroed, and writable to the end. */
        assert_close(z[0], 0.0, 0.0, 0.0);
        assert_close(z[big / 2], 0.0, 0.0, 0.0);
        assert_close(z[big - 1], 0.0, 0.0, 0.0);
        z[big - 1] = 1.0;
        m[3 * KDL_HUGE_MIN - 1] = 1;
        free(small);
        free(m);
        free(z);
}

static void test_blas_int_limit(void **state)
{
        int n = -1;

        (void) state;
        assert_int_equal(kdl__blas_int((size_t) 1 << 31, &n), -KDL_EOVERFLOW);
        assert_int_equal(n, -1);
        assert_int_equal(kdl__blas_int(2147483647u, &n), 0);
        assert_int_equal(n, 2147483647);
}

static void test_tensor_views_share_data(void **state)
{
        kdl_tensor *t = NULL;
        kdl_tensor v, tr;

        (void) state;
        assert_int_equal(kdl_tensor_new2(4, 3, &t), 0);
        for (size_t i = 0; i < 4; i++)
                for (size_t j = 0; j < 3; j++)
                        KDL_AT2(t, i, j) = 10.0 * (double) i + (double) j;
        v = kdl_tensor_view_rows(t, 1, 3);
        assert_int_equal(v.shape[0], 2);
        assert_close(KDL_AT2(&v, 1, 2), 22.0, 0.0, 0.0);
        assert_true(kdl_tensor_is_contiguous(&v));
        tr = kdl_tensor_view_transpose(t);
        assert_int_equal(tr.shape[0], 3);
        assert_close(KDL_AT2(&tr, 2, 3), 32.0, 0.0, 0.0);
        assert_false(kdl_tensor_is_contiguous(&tr));
        assert_int_equal(kdl_tensor_size(t), 12);
        kdl_tensor_free(t);
        kdl_tensor_free(NULL);
}

static void test_tensor_new_rejects_overflow(void **state)
{
        kdl_tensor *t = (kdl_tensor *) 0x1;

        (void) state;
        assert_int_equal(kdl_tensor_new(3, (size_t[]){SIZE_MAX / 2, 2, 2}, &t), -KDL_EOVERFLOW);
        assert_true(t == (kdl_tensor *) 0x1);
}

static void test_check_finite_names_row(void **state)
{
        double d[6] = {0.25, -1.5, 3.0, 2.0, INFINITY, 1.0};
        kdl_tensor t = kdl_tensor_wrap(d, 2, (size_t[]){3, 2});
        size_t row = 99;

        (void) state;
        assert_int_equal(kdl_tensor_check_finite(&t, &row), -KDL_ENONFINITE);
        assert_int_equal(row, 2);
        d[4] = 0.5;
        assert_int_equal(kdl_tensor_check_finite(&t, &row), 0);
}

/* splitmix64 built on kdl__rng_mix64() reproduces the published outputs of
 * Vigna's reference splitmix64.c (seed 0, and the seed 1234567 test vector). */
static void test_rng_mix64_is_splitmix64(void **state)
{
        static const uint64_t seed0[3] = {0xe220a8397b1dcdafULL, 0x6e789e6aa1b965f4ULL,
                                          0x06c45d188009454fULL};
        static const uint64_t seed1234567[5] = {6457827717110365317ULL, 3203168211198807973ULL,
                                                9817491932198370423ULL, 4593380528125082431ULL,
                                                16408922859458223821ULL};
        uint64_t x = 0;

        (void) state;
        for (size_t i = 0; i < 3; i++)
                assert_true(kdl__rng_mix64(x += KDL_RNG_GAMMA) == seed0[i]);
        x = 1234567;
        for (size_t i = 0; i < 5; i++)
                assert_true(kdl__rng_mix64(x += KDL_RNG_GAMMA) == seed1234567[i]);
        /* A bijection fixes 0 (no constant is added before mixing). */
        assert_true(kdl__rng_mix64(0) == 0);
}

/* A serial region runs on one BLAS thread and gives back the threads it found. */
static void test_blas_serial_restores_threads(void **state)
{
        int saved;

        (void) state;
#if KDL_HAVE_OPENBLAS_THREADS
        openblas_set_num_threads(3);
        saved = kdl__blas_serial_begin();
        assert_int_equal(saved, 3);
        assert_int_equal(openblas_get_num_threads(), 1);
        kdl__blas_serial_end(saved);
        assert_int_equal(openblas_get_num_threads(), 3);
        openblas_set_num_threads(1);
        saved = kdl__blas_serial_begin();
        kdl__blas_serial_end(saved);
        assert_int_equal(openblas_get_num_threads(), 1);
#else
        saved = kdl__blas_serial_begin();
        kdl__blas_serial_end(saved);
        assert_int_equal(saved, 1);
#endif
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_error_records_message_once),
                cmocka_unit_test(test_mul_size_overflow_keeps_output),
                cmocka_unit_test(test_blas_int_limit),
                cmocka_unit_test(test_large_allocations_advise_huge_pages),
                cmocka_unit_test(test_tensor_views_share_data),
                cmocka_unit_test(test_tensor_new_rejects_overflow),
                cmocka_unit_test(test_check_finite_names_row),
                cmocka_unit_test(test_rng_mix64_is_splitmix64),
                cmocka_unit_test(test_blas_serial_restores_threads),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
