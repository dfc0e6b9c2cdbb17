/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/error.h"
#include "metrics/base/tensor.h"
#include "metrics/calibration.h"
#include "metrics/cka.h"
#include "metrics/spectral.h"

/*
 * The CKA, spectral and calibration states as bytes (metrics/cka-pack.c,
 * metrics/spectral-pack.c, metrics/calibration-pack.c), as the processes of an MPI run send them: a
 * packed state merged is the state merged, bit for bit; a packed state loaded
 * is the state; bytes of the wrong size are refused and leave the state.
 */

#define N  90 /* samples: A holds rows [0, 40), B [40, 90) */
#define NA 40

static double *randn(kdl_test_rng *g, size_t n, double offset)
{
        double *d = malloc(n * sizeof(double));

        assert_non_null(d);
        for (size_t i = 0; i < n; i++)
                d[i] = kdl_test_normal(g) + offset;
        return d;
}

/* Equal, NaN equal to NaN. */
static bool same(double a, double b)
{
        return isnan(a) == isnan(b) && !islessgreater(a, b);
}

/* Equal arrays of @n doubles (both NULL counts as equal). */
static void assert_same(const double *a, const double *b, size_t n)
{
        assert_true((a == NULL) == (b == NULL));
        for (size_t i = 0; a && i < n; i++)
                assert_true(same(a[i], b[i]));
}

static void assert_same_cka(const kdl_cka_matrix *a, const kdl_cka_matrix *b)
{
        size_t ll = a->nlayers * a->nlayers;

        assert_true(same(a->n, b->n));
        assert_same(a->biased, b->biased, ll);
        assert_same(a->debiased, b->debiased, ll);
        assert_same(a->biased_rep, b->biased_rep, a->bootstrap * ll);
        assert_same(a->debiased_rep, b->debiased_rep, a->bootstrap * ll);
        assert_same(a->biased_jack, b->biased_jack, a->ngroups * ll);
        assert_same(a->biased_lo, b->biased_lo, ll);
}

/* Three layers of widths 3, 5, 2; rows [r0, r1) of @x (N rows each) into @s. */
static const size_t cka_w[3] = {3, 5, 2};

static void cka_feed(kdl_cka_state *s, double *const *x, size_t r0, size_t r1, const size_t *ids)
{
        kdl_tensor t[3];

        for (size_t k = 0; k < 3; k++)
                t[k] = kdl_tensor_wrap(x[k] + r0 * cka_w[k], 2, (size_t[]){r1 - r0, cka_w[k]});
        assert_int_equal(kdl_cka_accumulate(s, t, ids + r0), 0);
}

static void test_cka_packed(void **state)
{
        kdl_test_rng g = {11};
        double *x[3];
        size_t ids[N];
        kdl_cka_opts o;
        kdl_cka_state *a, *a2, *b, *c;
        kdl_cka_matrix *ma, *ma2, *mc;
        void *buf;
        size_t len;

        (void) state;
        for (size_t k = 0; k < 3; k++)
                x[k] = randn(&g, N * cka_w[k], 5.0 - (double) k);
        for (size_t i = 0; i < N; i++)
                ids[i] = 1000 + 7 * i;
        kdl_cka_opts_init(&o);
        o.bootstrap = 4;
        o.seed = 3;
        o.interval = KDL_CKA_INTERVAL_BCA;
        assert_int_equal(kdl_cka_state_new(3, cka_w, &o, &a), 0);
        assert_int_equal(kdl_cka_state_new(3, cka_w, &o, &a2), 0);
        assert_int_equal(kdl_cka_state_new(3, cka_w, &o, &b), 0);
        assert_int_equal(kdl_cka_state_new(3, cka_w, &o, &c), 0);
        cka_feed(a, x, 0, NA, ids);
        cka_feed(a2, x, 0, NA, ids);
        cka_feed(b, x, NA, N, ids);

        /* Merged from bytes = merged. */
        assert_int_equal(kdl_cka_state_pack(b, &buf, &len), 0);
        assert_int_equal(kdl_cka_merge(a, b), 0);
        assert_int_equal(kdl_cka_state_merge_packed(a2, buf, len), 0);
        free(buf);
        assert_int_equal(kdl_cka_finalize(a, &ma), 0);
        assert_int_equal(kdl_cka_finalize(a2, &ma2), 0);
        assert_same_cka(ma, ma2);

        /* Loaded = the state, over samples of its own. */
        cka_feed(c, x, NA, N, ids);
        assert_int_equal(kdl_cka_state_pack(a, &buf, &len), 0);
        assert_int_equal(kdl_cka_state_load_packed(c, buf, len), 0);
        assert_int_equal(kdl_cka_finalize(c, &mc), 0);
        assert_same_cka(ma, mc);
        kdl_cka_matrix_free(mc);

        /* One byte short, or the bytes of a state of other layers: refused, unchanged. */
        assert_int_equal(kdl_cka_state_merge_packed(c, buf, len - 1), -KDL_ESCHEMA);
        assert_int_equal(kdl_cka_state_load_packed(c, buf, len - 8), -KDL_ESCHEMA);
        assert_int_equal(kdl_cka_finalize(c, &mc), 0);
        assert_same_cka(ma, mc);
        free(buf);

        kdl_cka_matrix_free(mc);
        kdl_cka_matrix_free(ma2);
        kdl_cka_matrix_free(ma);
        kdl_cka_state_free(c);
        kdl_cka_state_free(b);
        kdl_cka_state_free(a2);
        kdl_cka_state_free(a);
        for (size_t k = 0; k < 3; k++)
                free(x[k]);
}

static void assert_same_spectral(const kdl_spectral_result *a, const kdl_spectral_result *b)
{
        assert_int_equal(a->n, b->n);
        assert_same(a->eig, b->eig, a->d);
        assert_same(a->tail, b->tail, a->d + 1);
        assert_same(a->eig_hi, b->eig_hi, a->eig_hi ? a->neig : 0);
        assert_true(a->has_ridge == b->has_ridge);
        if (a->has_ridge)
                assert_true(same(a->ridge.r2, b->ridge.r2));
}

/* X [N, 6] and Y [N, 2] (Y only with exact features). */
static void spectral_case(enum kdl_spectral_method method)
{
        kdl_test_rng g = {29 + (uint64_t) method};
        size_t dx = 6, dy = method == KDL_SPECTRAL_EXACT_FEATURES ? 2 : 0;
        double *x = randn(&g, N * dx, 2.0), *y = randn(&g, N * dy + 1, -1.0);
        kdl_spectral_plan p;
        kdl_spectral_opts so;
        kdl_spectral_state *s[4];
        kdl_spectral_result *r[3];
        void *buf;
        size_t len;

        kdl_spectral_plan_init(&p);
        p.method = method;
        p.rank = 3;
        p.oversample = 1;
        p.seed = 5;
        kdl_spectral_opts_init(&so);
        for (int i = 0; i < 4; i++) {
                size_t r0 = i == 3 ? NA : 0, r1 = i == 0 || i == 1 ? NA : N;
                kdl_tensor xt = kdl_tensor_wrap(x + r0 * dx, 2, (size_t[]){r1 - r0, dx});
                kdl_tensor yt = kdl_tensor_wrap(y + r0 * dy, 2, (size_t[]){r1 - r0, dy});

                /* s[0], s[1]: rows [0, NA); s[2]: all rows; s[3]: rows [NA, N). */
                assert_int_equal(kdl_spectral_state_new_plan(dx, dy, 0, &p, &s[i]), 0);
                assert_int_equal(kdl_spectral_accumulate(s[i], &xt, dy ? &yt : NULL), 0);
        }
        assert_int_equal(kdl_spectral_state_pack(s[3], &buf, &len), 0);
        assert_int_equal(kdl_spectral_merge(s[0], s[3]), 0);
        assert_int_equal(kdl_spectral_state_merge_packed(s[1], buf, len), 0);
        free(buf);
        assert_int_equal(kdl_spectral_finalize(s[0], &so, &r[0]), 0);
        assert_int_equal(kdl_spectral_finalize(s[1], &so, &r[1]), 0);
        assert_same_spectral(r[0], r[1]);

        assert_int_equal(kdl_spectral_state_pack(s[0], &buf, &len), 0);
        assert_int_equal(kdl_spectral_state_load_packed(s[2], buf, len), 0);
        assert_int_equal(kdl_spectral_finalize(s[2], &so, &r[2]), 0);
        assert_same_spectral(r[0], r[2]);
        kdl_spectral_result_free(r[2]);
        assert_int_equal(kdl_spectral_state_merge_packed(s[2], buf, len - 1), -KDL_ESCHEMA);
        assert_int_equal(kdl_spectral_state_load_packed(s[2], buf, 8), -KDL_ESCHEMA);
        assert_int_equal(kdl_spectral_finalize(s[2], &so, &r[2]), 0);
        assert_same_spectral(r[0], r[2]);
        free(buf);

        for (int i = 0; i < 3; i++)
                kdl_spectral_result_free(r[i]);
        for (int i = 0; i < 4; i++)
                kdl_spectral_state_free(s[i]);
        free(y);
        free(x);
}

static void test_spectral_packed(void **state)
{
        (void) state;
        spectral_case(KDL_SPECTRAL_EXACT_FEATURES);
        spectral_case(KDL_SPECTRAL_EXACT_GRAM);
        spectral_case(KDL_SPECTRAL_SKETCH);
}

/* Rows [r0, r1) of logits @z, teacher logits @zt [N, 4] and labels @y into @s. */
static void calibration_feed(kdl_calibration_state *s, double *z, double *zt, const int64_t *y,
                             size_t r0, size_t r1)
{
        kdl_tensor a = kdl_tensor_wrap(z + r0 * 4, 2, (size_t[]){r1 - r0, 4});
        kdl_tensor b = kdl_tensor_wrap(zt + r0 * 4, 2, (size_t[]){r1 - r0, 4});
        kdl_calibration_block blk = {.row0 = r0, .z = &a, .labels = y + r0, .zt = &b};

        assert_int_equal(kdl_calibration_accumulate(s, &blk), 0);
}

static void assert_same_calibration(const kdl_calibration_state *a, const kdl_calibration_state *b)
{
        kdl_calibration_result *ra, *rb;

        assert_int_equal(kdl_calibration_finalize(a, &ra), 0);
        assert_int_equal(kdl_calibration_finalize(b, &rb), 0);
        assert_int_equal(ra->n, rb->n);
        assert_true(same(ra->accuracy, rb->accuracy) && same(ra->fidelity, rb->fidelity));
        assert_true(same(ra->ece, rb->ece) && same(ra->classwise_ece, rb->classwise_ece));
        assert_true(same(ra->nll, rb->nll) && same(ra->kl, rb->kl));
        assert_true(same(ra->confidence, rb->confidence));
        for (size_t k = 0; k < ra->bins; k++)
                assert_int_equal(ra->bin_count[k], rb->bin_count[k]);
        assert_same(ra->bin_accuracy, rb->bin_accuracy, ra->bins);
        assert_same(ra->bin_confidence, rb->bin_confidence, ra->bins);
        kdl_calibration_result_free(ra);
        kdl_calibration_result_free(rb);
}

static void test_calibration_packed(void **state)
{
        kdl_test_rng g = {7};
        double *z = randn(&g, N * 4, 0.0), *zt = randn(&g, N * 4, 0.0);
        int64_t y[N];
        kdl_calibration_opts o;
        kdl_calibration_state *s[3];
        void *buf;
        size_t len;

        (void) state;
        for (size_t i = 0; i < N; i++)
                y[i] = (int64_t) (i % 4);
        kdl_calibration_opts_init(&o);
        o.c = 4;
        o.teacher = true;
        for (int i = 0; i < 3; i++)
                assert_int_equal(kdl_calibration_state_new(&o, &s[i]), 0);
        calibration_feed(s[0], z, zt, y, 0, NA); /* A, then B merged */
        calibration_feed(s[2], z, zt, y, 0, NA); /* A, then B packed and merged */
        calibration_feed(s[1], z, zt, y, NA, N);
        assert_int_equal(kdl_calibration_merge(s[0], s[1]), 0);
        assert_int_equal(kdl_calibration_state_pack(s[1], &buf, &len), 0);
        assert_int_equal(kdl_calibration_state_merge_packed(s[2], buf, len), 0);
        assert_same_calibration(s[0], s[2]);
        /* One byte or one number short: refused, the state unchanged. */
        assert_int_equal(kdl_calibration_state_merge_packed(s[2], buf, len - 1), -KDL_ESCHEMA);
        assert_int_equal(kdl_calibration_state_merge_packed(s[2], buf, len - 8), -KDL_ESCHEMA);
        assert_same_calibration(s[0], s[2]);
        free(buf);
        for (int i = 0; i < 3; i++)
                kdl_calibration_state_free(s[i]);
        free(zt);
        free(z);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cka_packed),
                cmocka_unit_test(test_spectral_packed),
                cmocka_unit_test(test_calibration_packed),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
