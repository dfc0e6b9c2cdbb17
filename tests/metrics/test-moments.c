/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdlib.h>

#include "tests/lib/kdl-test.h"
#include "metrics/moments.h"

/* 23 pairs near (1000, 400) with spread ~3 and ~1: a mean much larger than
 * the spread, where the naive Σx² - n·mean² loses about 5 digits.  The
 * expected moments were computed exactly (Python fractions.Fraction on
 * these decimal values, rounded once to double). */
#define N 23
static const double xs[N] = {
        999.30307600000003, 998.29147999999998, 1000.493666,        994.09334000000001,
        1000.9386919999999, 998.93840399999999, 997.60403399999996, 1000.3251729999999,
        993.56013600000006, 999.47723699999995, 997.58676000000003, 1001.351995,
        1001.460058,        996.93805299999997, 996.92054599999994, 995.14887699999997,
        997.40062499999999, 1001.054067,        1002.828992,        1000.755039,
        1000.114838,        997.13742500000001, 1000.646042,
};
static const double ys[N] = {
        398.82397200000003, 399.58018399999997, 399.97461399999997, 398.57895600000001,
        400.59819399999998, 401.08106900000001, 398.592578,         400.96160900000001,
        397.67173100000002, 401.657106,         396.87644499999999, 401.50248199999999,
        399.45800600000001, 397.81970999999999, 398.748019,         396.39793600000002,
        397.64621099999999, 399.86553099999998, 400.77686499999999, 398.20796899999999,
        399.08494100000001, 398.69446499999998, 400.11329599999999,
};
static const double mean_x = 998.79863282608699, mean_y = 399.24834299999998;
static const double m2_x = 132.18253871275235, m2_y = 46.715160768535775;
static const double s_xy = 53.684670603413302, r_xy = 0.68317871087646997;

/* Exactly equal (assert_close with no tolerance). */
#define assert_exact(a, b) assert_close((a), (b), 0.0, 0.0)

static void check_pair(const kdl_comoments *m, double rtol)
{
        assert_int_equal(m->n, N);
        assert_close(m->mx, mean_x, 1e-15, 0.0);
        assert_close(m->my, mean_y, 1e-15, 0.0);
        assert_close(m->sxx, m2_x, rtol, 0.0);
        assert_close(m->syy, m2_y, rtol, 0.0);
        assert_close(m->sxy, s_xy, rtol, 0.0);
        assert_close(kdl_comoments_pearson(m), r_xy, rtol, 0.0);
}

static void test_welford_small_exact(void **state)
{
        /* mean 5, Σ(x - 5)² = 9+1+1+1+0+0+4+16 = 32, every step exact. */
        const double x[8] = {2, 4, 4, 4, 5, 5, 7, 9};
        kdl_moments m = {0};

        (void) state;
        for (size_t i = 0; i < 8; i++)
                kdl_moments_add(&m, x[i]);
        assert_int_equal(m.n, 8);
        assert_exact(m.mean, 5.0);
        assert_exact(m.m2, 32.0);
}

static void test_one_pass_matches_exact(void **state)
{
        kdl_moments mx = {0};
        kdl_comoments add = {0}, batch;

        (void) state;
        for (size_t i = 0; i < N; i++) {
                kdl_moments_add(&mx, xs[i]);
                kdl_comoments_add(&add, xs[i], ys[i]);
        }
        assert_int_equal(mx.n, N);
        assert_close(mx.mean, mean_x, 1e-15, 0.0);
        assert_close(mx.m2, m2_x, 1e-12, 0.0);
        check_pair(&add, 1e-12);
        kdl_comoments_batch(xs, ys, N, &batch);
        check_pair(&batch, 1e-12);
}

/* Merging the summaries of two parts equals one pass over the whole, for
 * every split point, whichever way the parts were summarised. */
static void test_merge_of_halves_equals_one_pass(void **state)
{
        (void) state;
        for (size_t k = 0; k <= N; k++) {
                kdl_moments a = {0}, b = {0};
                kdl_comoments pa = {0}, pb, qa, qb;

                for (size_t i = 0; i < N; i++) {
                        kdl_moments_add(i < k ? &a : &b, xs[i]);
                        if (i < k)
                                kdl_comoments_add(&pa, xs[i], ys[i]);
                }
                kdl_comoments_batch(xs + k, ys + k, N - k, &pb);
                kdl_moments_merge(&a, &b);
                assert_int_equal(a.n, N);
                assert_close(a.mean, mean_x, 1e-15, 0.0);
                assert_close(a.m2, m2_x, 1e-12, 0.0);
                kdl_comoments_merge(&pa, &pb);
                check_pair(&pa, 1e-12);

                /* The other order. */
                kdl_comoments_batch(xs, ys, k, &qa);
                kdl_comoments_batch(xs + k, ys + k, N - k, &qb);
                kdl_comoments_merge(&qb, &qa);
                check_pair(&qb, 1e-12);
        }
}

static void test_merge_with_empty(void **state)
{
        kdl_moments a = {0}, e = {0}, keep;
        kdl_comoments p, q = {0};

        (void) state;
        for (size_t i = 0; i < 5; i++)
                kdl_moments_add(&a, xs[i]);
        keep = a;
        kdl_moments_merge(&a, &e); /* no-op */
        assert_int_equal(a.n, keep.n);
        assert_exact(a.mean, keep.mean);
        assert_exact(a.m2, keep.m2);
        kdl_moments_merge(&e, &a); /* into an empty one: a copy */
        assert_int_equal(e.n, keep.n);
        assert_exact(e.mean, keep.mean);
        assert_exact(e.m2, keep.m2);

        kdl_comoments_batch(xs, ys, 0, &p);
        assert_int_equal(p.n, 0);
        kdl_comoments_batch(xs, ys, N, &p);
        kdl_comoments_merge(&q, &p);
        assert_exact(q.mx, p.mx);
        assert_exact(q.sxx, p.sxx);
        assert_exact(q.sxy, p.sxy);
}

/* The vector mean update: groups of 2 and 3 samples with means (1, 10)
 * and (6, 0): the union's mean is (4, 4), δ = (5, -10), w = 2·3/5. */
static void test_shift_mean(void **state)
{
        double mean[2] = {1.0, 10.0}, delta[2];
        const double mb[2] = {6.0, 0.0};
        double w;

        (void) state;
        w = kdl_moments_shift_mean(2, 3, mean, mb, 2, delta);
        assert_close(w, 1.2, 1e-15, 0.0);
        assert_exact(delta[0], 5.0);
        assert_exact(delta[1], -10.0);
        assert_close(mean[0], 4.0, 1e-15, 0.0);
        assert_close(mean[1], 4.0, 1e-15, 0.0);
        /* Into nothing: the mean becomes mb, weight 0. */
        mean[0] = mean[1] = 0.0;
        w = kdl_moments_shift_mean(0, 7, mean, mb, 2, delta);
        assert_exact(w, 0.0);
        assert_exact(mean[0], 6.0);
        assert_exact(mean[1], 0.0);
}

static void test_pearson_of_affine_is_plus_minus_one(void **state)
{
        double up[N], down[N];
        kdl_comoments m = {0};

        (void) state;
        for (size_t i = 0; i < N; i++) {
                up[i] = 3.0 * xs[i] + 7.0;
                down[i] = -2.5 * xs[i] + 1.0;
                kdl_comoments_add(&m, xs[i], down[i]);
        }
        assert_close(kdl_pearson(xs, up, N), 1.0, 1e-14, 0.0);
        assert_close(kdl_pearson(xs, down, N), -1.0, 1e-14, 0.0);
        assert_close(kdl_comoments_pearson(&m), -1.0, 1e-12, 0.0);
        assert_close(kdl_pearson(xs, ys, N), r_xy, 1e-13, 0.0);
}

static void test_pearson_undefined_is_nan(void **state)
{
        const double c[4] = {2.5, 2.5, 2.5, 2.5}, x[4] = {1, 2, 3, 5};

        (void) state;
        assert_true(isnan(kdl_pearson(x, c, 4)));
        assert_true(isnan(kdl_pearson(c, x, 4)));
        assert_true(isnan(kdl_pearson(x, x, 1)));
        assert_true(isnan(kdl_pearson(x, x, 0)));
        assert_true(isnan(kdl_pearson_sums(0.0, 4.0, 0.0)));
        assert_close(kdl_pearson_sums(4.0, 9.0, -3.0), -0.5, 1e-15, 0.0);
}

/* Average ranks as scipy.stats.rankdata: 1 1 2 3 4 5 5 6 9 sorted. */
static void test_ranks_average_ties(void **state)
{
        const double x[9] = {3, 1, 4, 1, 5, 9, 2, 6, 5};
        const double want[9] = {4, 1.5, 5, 1.5, 6.5, 9, 3, 8, 6.5};
        kdl_ranked w[9];
        double rk[9];

        (void) state;
        kdl_ranks(x, 9, w, rk);
        for (size_t i = 0; i < 9; i++)
                assert_exact(rk[i], want[i]);
}

/* Spearman's ρ = Pearson of the ranks; without ties 1 - 6Σd²/(n(n²-1)):
 * d = (1, -1, 1, -1, 0), ρ = 1 - 24/120 = 0.8. */
static void test_spearman_closed_form(void **state)
{
        const double x[5] = {0.3, 1.7, 2.2, 40.0, 41.5}, y[5] = {-1.0, -3.0, 5.5, 2.0, 8.0};
        kdl_ranked w[5];
        double rx[5], ry[5];

        (void) state;
        kdl_ranks(x, 5, w, rx);
        kdl_ranks(y, 5, w, ry);
        assert_close(kdl_pearson(rx, ry, 5), 0.8, 1e-15, 0.0);
}

/* numpy.quantile(x, q) (method "linear"): h = q (n - 1). */
static void test_quantile_sorted_numpy_linear(void **state)
{
        const double x[5] = {1, 2, 4, 8, 16};

        (void) state;
        assert_exact(kdl_quantile_sorted(x, 5, 0.0), 1.0);
        assert_close(kdl_quantile_sorted(x, 5, 0.1), 1.4, 1e-15, 0.0); /* h = 0.4 */
        assert_exact(kdl_quantile_sorted(x, 5, 0.5), 4.0);
        assert_close(kdl_quantile_sorted(x, 5, 0.9), 12.8, 1e-15, 0.0); /* h = 3.6 */
        assert_exact(kdl_quantile_sorted(x, 5, 1.0), 16.0);
        assert_exact(kdl_quantile_sorted(x + 2, 1, 0.3), 4.0);
}

/* Bins [0,1) [1,2) [2,3) [3,4) with counts 1 3 0 4, data in [0.5, 3.9]:
 * q = .25 is rank 2, a third into bin 1; q = .5 rank 4, the end of bin 1;
 * q = .75 rank 6, half of bin 3 (the empty bin 2 is skipped); q = 0 and
 * q = 1 fall on the bin edges 0 and 4 and are clamped to min and max. */
static void test_quantile_hist_linear(void **state)
{
        const size_t count[4] = {1, 3, 0, 4};
        const double lo[4] = {0, 1, 2, 3}, hi[4] = {1, 2, 3, 4};
        kdl_hist_view h = {
                .nbins = 4, .count = count, .lo = lo, .hi = hi, .n = 8, .min = 0.5, .max = 3.9};

        (void) state;
        assert_close(kdl_quantile_hist(&h, 0.25), 4.0 / 3.0, 1e-15, 0.0);
        assert_exact(kdl_quantile_hist(&h, 0.5), 2.0);
        assert_exact(kdl_quantile_hist(&h, 0.75), 3.5);
        assert_exact(kdl_quantile_hist(&h, 0.0), 0.5);
        assert_exact(kdl_quantile_hist(&h, 1.0), 3.9);
}

/* Octave bins [1,2) [2,4) [4,8), counts 2 2 4, interpolated in log2: rank
 * 3 is half-way through [2, 4) in log2, 2^1.5 = √8; rank 4 is its end. */
static void test_quantile_hist_log(void **state)
{
        const size_t count[3] = {2, 2, 4};
        const double lo[3] = {1, 2, 4}, hi[3] = {2, 4, 8};
        kdl_hist_view h = {.nbins = 3,
                           .count = count,
                           .lo = lo,
                           .hi = hi,
                           .log_first = 0,
                           .log_end = 3,
                           .n = 8,
                           .min = 1.0,
                           .max = 8.0};

        (void) state;
        assert_close(kdl_quantile_hist(&h, 0.375), sqrt(8.0), 1e-15, 0.0);
        assert_close(kdl_quantile_hist(&h, 0.5), 4.0, 1e-15, 0.0);
        /* The same bins read linearly: 2 + 0.5·2 = 3. */
        h.log_end = 0;
        assert_close(kdl_quantile_hist(&h, 0.375), 3.0, 1e-15, 0.0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_welford_small_exact),
                cmocka_unit_test(test_one_pass_matches_exact),
                cmocka_unit_test(test_merge_of_halves_equals_one_pass),
                cmocka_unit_test(test_merge_with_empty),
                cmocka_unit_test(test_shift_mean),
                cmocka_unit_test(test_pearson_of_affine_is_plus_minus_one),
                cmocka_unit_test(test_pearson_undefined_is_nan),
                cmocka_unit_test(test_ranks_average_ties),
                cmocka_unit_test(test_spearman_closed_form),
                cmocka_unit_test(test_quantile_sorted_numpy_linear),
                cmocka_unit_test(test_quantile_hist_linear),
                cmocka_unit_test(test_quantile_hist_log),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
