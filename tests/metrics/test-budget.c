/* SPDX-License-Identifier: MIT */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/budget.h"

#define GIB ((size_t) 1 << 30)
#define MIB ((size_t) 1 << 20)

static void test_parse_units_and_percentages(void **state)
{
        static const struct {
                const char *s;
                size_t want;
        } ok[] = {
                {"512M", 512 * MIB},   {"4G", 4 * GIB},          {"1.5G", 3 * GIB / 2},
                {"1.5g", 3 * GIB / 2}, {"4GiB", 4 * GIB},        {"4GB", 4 * GIB},
                {"64k", 65536},        {"2T", (size_t) 2 << 40}, {"123456789", 123456789},
                {".5M", MIB / 2},      {"100%", 24 * GIB},       {"50%", 12 * GIB},
                {"12.5%", 3 * GIB},
        };
        size_t v;

        (void) state;
        for (size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++) {
                v = 7;
                assert_int_equal(kdl_memory_parse(ok[k].s, 24 * GIB, &v), 0);
                if (v != ok[k].want)
                        fail_msg("'%s': %zu, expected %zu", ok[k].s, v, ok[k].want);
        }
}

static void test_parse_refuses_and_keeps_output(void **state)
{
        static const char *const bad[] = {
                "",    "-1G",   "0",     "0M",    "1.5",   "G",     "4X",  "4GX",
                "4 G", " 4G",   "1e300", "nan",   "inf",   "101%",  "0%",  "%",
                "4G%", "1e-9K", "+4G",   "4GiBB", "4Gib!", "0x10M", "5%%", "18446744073709551616",
        };
        size_t v;

        (void) state;
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
                v = 7;
                if (kdl_memory_parse(bad[k], 24 * GIB, &v) != -KDL_EUSAGE)
                        fail_msg("'%s' was accepted as %zu", bad[k], v);
                assert_int_equal(v, 7);
                assert_non_null(strstr(kdl_errmsg(), "--memory"));
        }
        /* A percentage needs to know the physical memory. */
        assert_int_equal(kdl_memory_parse("50%", 0, &v), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "physical memory"));
        assert_int_equal(v, 7);
}

static void test_format(void **state)
{
        static const struct {
                size_t bytes;
                const char *want;
        } f[] = {
                {0, "0 B"},
                {1023, "1023 B"},
                {1024, "1 KiB"},
                {1536, "1.5 KiB"},
                {64 * MIB, "64 MiB"},
                {12 * GIB, "12 GiB"},
                {(size_t) (37.2 * (double) GIB), "37.2 GiB"},
                {GIB + GIB / 4, "1.3 GiB"}, /* 1.25: halves round away from zero */
                {(size_t) 3 << 40, "3 TiB"},
                {SIZE_MAX, "unlimited"},
        };
        char buf[KDL_MEMORY_FMT];

        (void) state;
        for (size_t k = 0; k < sizeof(f) / sizeof(f[0]); k++)
                assert_string_equal(kdl_memory_format(f[k].bytes, buf), f[k].want);
}

static void test_check_message(void **state)
{
        (void) state;
        kdl_error_clear();
        assert_int_equal(kdl_budget_check(12 * GIB, 12 * GIB, "cka", "--subsample", "x"), 0);
        assert_string_equal(kdl_errmsg(), "");
        assert_int_equal(kdl_budget_check((size_t) (37.2 * (double) GIB), 12 * GIB, "cka",
                                          "--subsample or --spatial avg",
                                          "the feature-space state of %d layers", 24),
                         -KDL_EBUDGET);
        assert_string_equal(kdl_errmsg(),
                            "cka needs 37.2 GiB for the feature-space state of 24 layers "
                            "(--memory is 12 GiB): lower it with --subsample or --spatial avg, "
                            "or raise --memory");
        assert_int_equal(kdl_budget_check(2 * MIB, MIB, "kl", NULL, "the head weight"),
                         -KDL_EBUDGET);
        assert_string_equal(kdl_errmsg(), "kl needs 2 MiB for the head weight (--memory is 1 MiB): "
                                          "raise --memory");
        assert_null(strchr(kdl_errmsg(), '\n'));
        assert_string_equal(kdl_strerror(-KDL_EBUDGET), "over the memory budget");
}

static void test_saturating_sizes(void **state)
{
        (void) state;
        assert_true(kdl_sat_add(SIZE_MAX - 1, 2) == SIZE_MAX);
        assert_true(kdl_sat_add(3, 4) == 7);
        assert_true(kdl_sat_mul(SIZE_MAX / 2, 3) == SIZE_MAX);
        assert_true(kdl_sat_mul(0, SIZE_MAX) == 0);
        assert_true(kdl_sat_mul(6, 7) == 42);
}

/* The physical memory is MemTotal (or a smaller cgroup limit), the default half of it. */
static void test_physical_and_default(void **state)
{
        FILE *f = fopen("/proc/meminfo", "r");
        unsigned long long kb = 0;
        char line[256];
        size_t phys = kdl_memory_physical();

        (void) state;
        if (!f)
                skip();
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
                        break;
        fclose(f);
        assert_true(kb > 0);
        assert_true(phys > 0 && phys <= kb * 1024);
        assert_true(kdl_memory_default() == phys / 2);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_units_and_percentages),
                cmocka_unit_test(test_parse_refuses_and_keeps_output),
                cmocka_unit_test(test_format),
                cmocka_unit_test(test_check_message),
                cmocka_unit_test(test_saturating_sizes),
                cmocka_unit_test(test_physical_and_default),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
