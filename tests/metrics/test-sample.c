/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/sample.h"

static void test_hash_is_pure_and_spreads(void **state)
{
        (void) state;
        assert_true(kdl_sample_hash(1, 2, 3) == kdl_sample_hash(1, 2, 3));
        assert_true(kdl_sample_hash(1, 2, 3) != kdl_sample_hash(1, 2, 4));
        assert_true(kdl_sample_hash(1, 2, 3) != kdl_sample_hash(1, 3, 3));
        assert_true(kdl_sample_hash(1, 2, 3) != kdl_sample_hash(2, 2, 3));
        for (uint64_t i = 0; i < 1000; i++) {
                double u = kdl_sample_uniform(5, i, 0);

                assert_true(u > 0.0 && u < 1.0);
        }
}

static void test_poisson1_moments(void **state)
{
        size_t n = 200000;
        double sum = 0.0, sq = 0.0, zeros = 0.0;

        (void) state;
        for (uint64_t i = 0; i < n; i++) {
                unsigned k = kdl_sample_poisson1(42, i, i % 7);

                sum += k;
                sq += (double) k * k;
                zeros += k == 0;
        }
        /* Mean 1, variance 1, P(0) = e^-1; tolerances are ~5 standard errors. */
        assert_close(sum / (double) n, 1.0, 0.0, 5.0 / sqrt((double) n));
        assert_close(sq / (double) n - (sum / (double) n) * (sum / (double) n), 1.0, 0.0, 0.02);
        assert_close(zeros / (double) n, exp(-1.0), 0.0, 0.005);
}

static void test_select_plain_and_nested(void **state)
{
        size_t *a = NULL, *b = NULL, na, nb;

        (void) state;
        assert_int_equal(kdl_sample_select(1000, NULL, 0, 100, 9, 1, &a, &na), 0);
        assert_int_equal(na, 100);
        for (size_t i = 1; i < na; i++)
                assert_true(a[i - 1] < a[i]);
        assert_int_equal(kdl_sample_select(1000, NULL, 0, 300, 9, 1, &b, &nb), 0);
        /* The smaller subsample is contained in the larger one. */
        for (size_t i = 0, j = 0; i < na; i++) {
                while (j < nb && b[j] < a[i])
                        j++;
                assert_true(j < nb && b[j] == a[i]);
        }
        free(b);
        assert_int_equal(kdl_sample_select(50, NULL, 0, 100, 9, 1, &b, &nb), 0);
        assert_int_equal(nb, 50);
        for (size_t i = 0; i < nb; i++)
                assert_int_equal(b[i], i);
        free(b);
        free(a);
}

static void test_select_class_balanced(void **state)
{
        int64_t labels[300];
        size_t *rows = NULL, n, count[3] = {0};

        (void) state;
        /* Class 2 has only 10 rows. */
        for (size_t i = 0; i < 300; i++)
                labels[i] = i < 10 ? 2 : (int64_t) (i % 2);
        assert_int_equal(kdl_sample_select(300, labels, 3, 40, 3, 2, &rows, &n), 0);
        assert_int_equal(n, 90);
        for (size_t i = 0; i < n; i++)
                count[labels[rows[i]]]++;
        assert_int_equal(count[0], 40);
        assert_int_equal(count[1], 40);
        assert_int_equal(count[2], 10);
        free(rows);
}

static void test_select_rejects_bad_label(void **state)
{
        int64_t labels[4] = {0, 1, 3, 1};
        size_t *rows = (size_t *) 0x1, n = 7;

        (void) state;
        assert_int_equal(kdl_sample_select(4, labels, 3, 1, 0, 0, &rows, &n), -KDL_ERANGE);
        assert_true(rows == (size_t *) 0x1 && n == 7);
        labels[2] = -1;
        assert_int_equal(kdl_sample_select(4, labels, 3, 1, 0, 0, &rows, &n), -KDL_ERANGE);
}

static void test_select_counts_per_class(void **state)
{
        int64_t labels[300];
        size_t *rows = NULL, *ref = NULL, n, nref, counts[3] = {25, 0, 100};

        (void) state;
        for (size_t i = 0; i < 300; i++)
                labels[i] = (int64_t) ((i * 7) % 3);
        assert_int_equal(kdl_sample_select_counts(300, labels, 3, counts, 5, 2, &rows, &n), 0);
        /* Class 1 left out, class 2 has 100 rows: all of them. */
        assert_int_equal(n, 125);
        for (size_t c = 0; c < 3; c++) {
                size_t got = 0, j = 0;

                /* A class's rows are kdl_sample_select()'s with its count. */
                assert_int_equal(kdl_sample_select(300, labels, 3, counts[c], 5, 2, &ref, &nref),
                                 0);
                for (size_t i = 0; i < nref; i++) {
                        if ((size_t) labels[ref[i]] != c)
                                continue;
                        while (j < n && rows[j] < ref[i])
                                j++;
                        assert_true(j < n && rows[j] == ref[i]);
                        got++;
                }
                assert_int_equal(got, counts[c] < 100 ? counts[c] : 100);
                free(ref);
        }
        free(rows);
}

static void test_classes_frequent_and_seeded(void **state)
{
        size_t counts[8] = {5, 9, 1, 9, 3, 7, 0, 4}, *cls = NULL, n;
        uint64_t h[8];

        (void) state;
        /* The 3 most frequent of those with >= 3: 9, 9 (classes 1, 3), then 7 (5). */
        assert_int_equal(kdl_sample_classes(counts, 8, 3, 3, KDL_SAMPLE_FREQUENT, 0, 0, &cls, &n),
                         0);
        assert_int_equal(n, 3);
        assert_int_equal(cls[0], 1);
        assert_int_equal(cls[1], 3);
        assert_int_equal(cls[2], 5);
        free(cls);
        /* Ties to the lower class: 9 and 9, one wanted. */
        assert_int_equal(kdl_sample_classes(counts, 8, 3, 1, KDL_SAMPLE_FREQUENT, 0, 0, &cls, &n),
                         0);
        assert_int_equal(n, 1);
        assert_int_equal(cls[0], 1);
        free(cls);
        /* Fewer eligible than wanted: all of them (5 classes with >= 4). */
        assert_int_equal(kdl_sample_classes(counts, 8, 4, 100, KDL_SAMPLE_SEEDED, 7, 4, &cls, &n),
                         0);
        assert_int_equal(n, 5);
        assert_int_equal(cls[0], 0);
        assert_int_equal(cls[4], 7);
        free(cls);
        /* Seeded: the two eligible classes of smallest hash, in class order. */
        for (size_t c = 0; c < 8; c++)
                h[c] = counts[c] >= 4 ? kdl_sample_hash(7, c, 4) : UINT64_MAX;
        assert_int_equal(kdl_sample_classes(counts, 8, 4, 2, KDL_SAMPLE_SEEDED, 7, 4, &cls, &n), 0);
        assert_int_equal(n, 2);
        assert_true(cls[0] < cls[1]);
        for (size_t c = 0; c < 8; c++)
                if (c != cls[0] && c != cls[1])
                        assert_true(h[c] > h[cls[0]] && h[c] > h[cls[1]]);
        free(cls);
        /* None eligible. */
        assert_int_equal(kdl_sample_classes(counts, 8, 10, 2, KDL_SAMPLE_FREQUENT, 0, 0, &cls, &n),
                         0);
        assert_int_equal(n, 0);
        free(cls);
}

static void test_class_counts(void **state)
{
        int64_t labels[6] = {2, 0, 2, 2, 4, 0};
        size_t *counts = NULL, *keep = (size_t *) 0x1;

        (void) state;
        assert_int_equal(kdl_sample_class_counts(6, labels, 5, &counts), 0);
        assert_int_equal(counts[0], 2);
        assert_int_equal(counts[1], 0);
        assert_int_equal(counts[2], 3);
        assert_int_equal(counts[3], 0);
        assert_int_equal(counts[4], 1);
        free(counts);
        assert_int_equal(kdl_sample_class_counts(6, labels, 4, &keep), -KDL_ERANGE);
        assert_true(keep == (size_t *) 0x1);
        labels[1] = -1;
        assert_int_equal(kdl_sample_class_counts(6, labels, 5, &keep), -KDL_ERANGE);
        assert_true(keep == (size_t *) 0x1);
}

static void test_class_rule_names(void **state)
{
        enum kdl_sample_class_rule r = KDL_SAMPLE_FREQUENT;

        (void) state;
        assert_int_equal(kdl_sample_class_rule_parse("seeded", &r), 0);
        assert_int_equal(r, KDL_SAMPLE_SEEDED);
        assert_string_equal(kdl_sample_class_rule_name(r), "seeded");
        assert_int_equal(kdl_sample_class_rule_parse("random", &r), -KDL_EUSAGE);
        assert_int_equal(r, KDL_SAMPLE_SEEDED);
}

/* Sequences: 4 of 5 rows each, interleaved (row i in sequence 10 + i % 4). */
static void test_select_sequences(void **state)
{
        int64_t seq[20];
        size_t *rows = NULL, n = 0, *more = NULL, m = 0, per[4] = {0};

        (void) state;
        for (size_t i = 0; i < 20; i++)
                seq[i] = 10 + (int64_t) (i % 4);
        /* 6 rows wanted: two whole sequences (10 rows), in increasing order. */
        assert_int_equal(kdl_sample_select_sequences(20, seq, 6, 0, 7, 1, &rows, &n), 0);
        assert_int_equal(n, 10);
        for (size_t i = 0; i < n; i++) {
                assert_true(i == 0 || rows[i] > rows[i - 1]);
                per[rows[i] % 4]++;
        }
        for (size_t s = 0; s < 4; s++)
                assert_true(per[s] == 0 || per[s] == 5);
        /* More rows: the same sequences first (nested), then others. */
        assert_int_equal(kdl_sample_select_sequences(20, seq, 11, 0, 7, 1, &more, &m), 0);
        assert_int_equal(m, 15);
        for (size_t i = 0, j = 0; i < n; i++) {
                while (j < m && more[j] < rows[i])
                        j++;
                assert_true(j < m && more[j] == rows[i]);
        }
        free(more);
        free(rows);
        /* Two tokens of every sequence: all 4 sequences for 8 rows or more. */
        assert_int_equal(kdl_sample_select_sequences(20, seq, 100, 2, 7, 1, &rows, &n), 0);
        assert_int_equal(n, 8);
        free(rows);
        /* Every allocation failure reaches the caller, outputs untouched. */
        for (long k = 0; k < 2; k++) {
                rows = NULL;
                kdl__alloc_fail_after(k);
                assert_int_equal(kdl_sample_select_sequences(20, seq, 6, 0, 7, 1, &rows, &n),
                                 -ENOMEM);
                assert_null(rows);
        }
        kdl__alloc_fail_after(-1);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hash_is_pure_and_spreads),
                cmocka_unit_test(test_poisson1_moments),
                cmocka_unit_test(test_select_plain_and_nested),
                cmocka_unit_test(test_select_class_balanced),
                cmocka_unit_test(test_select_rejects_bad_label),
                cmocka_unit_test(test_select_counts_per_class),
                cmocka_unit_test(test_classes_frequent_and_seeded),
                cmocka_unit_test(test_class_counts),
                cmocka_unit_test(test_class_rule_names),
                cmocka_unit_test(test_select_sequences),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
