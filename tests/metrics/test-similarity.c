/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/error.h"
#include "metrics/base/tensor.h"
#include "metrics/cka.h"
#include "metrics/similarity.h"

/* ---- helpers ------------------------------------------------------------------- */

/* The centred cross-product Xᵀ Y of @x [n, dx] and @y [n, dy] (each centred by its column
 * means), into @ret [dx*dy]. */
static void cross(const double *x, size_t dx, const double *y, size_t dy, size_t n, double *ret)
{
        for (size_t a = 0; a < dx; a++)
                for (size_t b = 0; b < dy; b++) {
                        double mx = 0.0, my = 0.0, s = 0.0;

                        for (size_t i = 0; i < n; i++) {
                                mx += x[i * dx + a];
                                my += y[i * dy + b];
                        }
                        mx /= (double) n;
                        my /= (double) n;
                        for (size_t i = 0; i < n; i++)
                                s += (x[i * dx + a] - mx) * (y[i * dy + b] - my);
                        ret[a * dy + b] = s;
                }
}

/* The measures of @x and @y through the layers' decompositions with @o (NULL: defaults). */
static struct kdl_similarity measure(const double *x, size_t dx, const double *y, size_t dy,
                                     size_t n, const struct kdl_similarity_opts *o)
{
        double *saa = calloc(dx * dx, sizeof(double)), *sbb = calloc(dy * dy, sizeof(double));
        double *sab = calloc(dx * dy, sizeof(double));
        kdl_similarity_layer *a = NULL, *b = NULL;
        struct kdl_similarity r;

        assert_non_null(saa);
        assert_non_null(sbb);
        assert_non_null(sab);
        cross(x, dx, x, dx, n, saa);
        cross(y, dy, y, dy, n, sbb);
        cross(x, dx, y, dy, n, sab);
        assert_int_equal(kdl_similarity_layer_new(dx, saa, o, &a), 0);
        assert_int_equal(kdl_similarity_layer_new(dy, sbb, o, &b), 0);
        assert_int_equal(kdl_similarity_pair(a, b, sab, &r), 0);
        kdl_similarity_layer_free(b);
        kdl_similarity_layer_free(a);
        free(sab);
        free(sbb);
        free(saa);
        return r;
}

#define N  200
#define DX 6
#define DZ 4

static double xs[N * DX], zs[N * DZ];

/* X ~ N(0, 1) with unequal column scales; Z = part of X mixed, plus noise. */
static int setup_data(void **state)
{
        kdl_test_rng rng = {.s = 20};

        (void) state;
        for (size_t i = 0; i < N; i++) {
                for (size_t c = 0; c < DX; c++)
                        xs[i * DX + c] = (1.0 + 0.7 * (double) c) * kdl_test_normal(&rng) + 3.0;
                for (size_t c = 0; c < DZ; c++)
                        zs[i * DZ + c] = 0.8 * xs[i * DX + c] - 0.3 * xs[i * DX + c + 2] +
                                         kdl_test_normal(&rng);
        }
        return 0;
}

/* ---- reference values ------------------------------------------------------------- */

/* 8 samples, widths 3 and 2; numpy float64 (the same definitions as
 * tests/ref/test_similarity.py), printed %.17g. */
static void test_reference_values(void **state)
{
        static const double x[8 * 3] = {0.31,  -1.20, 2.05,  1.77, 0.42,  -0.63, -0.58, 1.91,
                                        0.24,  2.36,  -0.15, 1.12, -1.44, 0.87,  -2.01, 0.09,
                                        -0.72, 0.55,  1.05,  1.33, -1.27, -0.93, -0.48, 0.81};
        static const double y[8 * 2] = {1.12,  0.37,  -0.25, 2.14, 0.88,  -1.06, 1.71, 0.52,
                                        -2.03, -0.44, 0.46,  0.95, -0.37, 1.68,  0.19, -1.31};
        struct kdl_similarity r;

        (void) state;
        r = measure(x, 3, y, 2, 8, NULL);
        assert_int_equal(r.rank_a, 3);
        assert_int_equal(r.rank_b, 2);
        assert_close(r.cca_mean_rho, 0.93218996599648674, 1e-12, 0.0);
        assert_close(r.cca_mean_rho2, 0.87182592922628244, 1e-12, 0.0);
        assert_close(r.svcca, 0.93218996599648674, 1e-12, 0.0);
        assert_close(r.pwcca, 0.92941926848602585, 1e-12, 0.0);
        assert_close(r.procrustes, 0.44424183254137417, 1e-12, 0.0);
        assert_close(r.procrustes_angular, 0.67951262604936324, 1e-12, 0.0);
}

/* ---- identities ---------------------------------------------------------------- */

static void test_self_is_one(void **state)
{
        struct kdl_similarity r;

        (void) state;
        r = measure(xs, DX, xs, DX, N, NULL);
        assert_close(r.cca_mean_rho, 1.0, 0.0, 1e-12);
        assert_close(r.cca_mean_rho2, 1.0, 0.0, 1e-12);
        assert_close(r.svcca, 1.0, 0.0, 1e-12);
        assert_close(r.pwcca, 1.0, 0.0, 1e-12);
        assert_close(r.procrustes, 0.0, 0.0, 1e-12);
        assert_close(r.procrustes_angular, 0.0, 0.0, 1e-6);
}

/* Procrustes of X and c X Q (Q orthogonal, c > 0) is 0, and CCA 1. */
static void test_rotation_and_scale(void **state)
{
        double q[DX * DX], y[N * DX], v[DX], vv = 0.0;
        kdl_test_rng rng = {.s = 7};
        struct kdl_similarity r;

        (void) state;
        /* Q = I - 2 v vᵀ / vᵀv, a Householder reflection of a random v: orthogonal. */
        for (size_t i = 0; i < DX; i++) {
                v[i] = kdl_test_normal(&rng);
                vv += v[i] * v[i];
        }
        for (size_t i = 0; i < DX; i++)
                for (size_t c = 0; c < DX; c++)
                        q[i * DX + c] = (i == c ? 1.0 : 0.0) - 2.0 * v[i] * v[c] / vv;
        for (size_t i = 0; i < N; i++)
                for (size_t c = 0; c < DX; c++) {
                        double s = 0.0;

                        for (size_t k = 0; k < DX; k++)
                                s += xs[i * DX + k] * q[k * DX + c];
                        y[i * DX + c] = 3.7 * s - 11.0;
                }
        r = measure(xs, DX, y, DX, N, NULL);
        assert_close(r.procrustes, 0.0, 0.0, 1e-12);
        assert_close(r.cca_mean_rho, 1.0, 0.0, 1e-12);
        assert_close(r.pwcca, 1.0, 0.0, 1e-12);
}

/* Every measure is unchanged by isotropic scaling and translation of either layer. */
static void test_isotropic_scaling(void **state)
{
        double x2[N * DX];
        struct kdl_similarity r, s;

        (void) state;
        for (size_t i = 0; i < N * DX; i++)
                x2[i] = 0.013 * xs[i] + 5.0;
        r = measure(xs, DX, zs, DZ, N, NULL);
        s = measure(x2, DX, zs, DZ, N, NULL);
        assert_true(r.cca_mean_rho > 0.3 && r.cca_mean_rho < 0.999);
        assert_close(s.cca_mean_rho, r.cca_mean_rho, 1e-10, 0.0);
        assert_close(s.cca_mean_rho2, r.cca_mean_rho2, 1e-10, 0.0);
        assert_close(s.svcca, r.svcca, 1e-10, 0.0);
        assert_close(s.pwcca, r.pwcca, 1e-10, 0.0);
        assert_close(s.procrustes, r.procrustes, 1e-10, 0.0);
        assert_close(s.procrustes_angular, r.procrustes_angular, 1e-10, 0.0);
}

/* A redundant neuron (the sum of two others) is cut from the rank; CCA, which sees only
 * the span, is then that of the layer without it. */
static void test_rank_deficient(void **state)
{
        double x7[N * (DX + 1)];
        struct kdl_similarity r, s;

        (void) state;
        for (size_t i = 0; i < N; i++) {
                memcpy(x7 + i * (DX + 1), xs + i * DX, DX * sizeof(double));
                x7[i * (DX + 1) + DX] = xs[i * DX] + 2.0 * xs[i * DX + 1];
        }
        r = measure(xs, DX, zs, DZ, N, NULL);
        s = measure(x7, DX + 1, zs, DZ, N, NULL);
        assert_int_equal(s.rank_a, DX);
        assert_close(s.cca_mean_rho, r.cca_mean_rho, 1e-9, 0.0);
        assert_close(s.cca_mean_rho2, r.cca_mean_rho2, 1e-9, 0.0);
}

/* SVCCA keeps the fewest top directions holding the share asked: fewer than the rank at
 * 0.5, and then differs from CCA. */
static void test_svcca_keep(void **state)
{
        struct kdl_similarity_opts o;
        struct kdl_similarity r;

        (void) state;
        kdl_similarity_opts_init(&o);
        assert_close(o.svcca_keep, 0.99, 0.0, 0.0);
        o.svcca_keep = 0.5;
        r = measure(xs, DX, zs, DZ, N, &o);
        assert_true(r.svcca_a >= 1 && r.svcca_a < DX);
        assert_true(r.svcca_b >= 1 && r.svcca_b < DZ);
        assert_true(fabs(r.svcca - r.cca_mean_rho) > 1e-3);
}

/* Each measure alone (opts.what) equals its value among all; the others are NaN.  SVCCA
 * keeping every direction (svcca_keep 1) is CCA. */
static void test_what(void **state)
{
        static const unsigned bits[4] = {KDL_SIMILARITY_CCA, KDL_SIMILARITY_SVCCA,
                                         KDL_SIMILARITY_PWCCA, KDL_SIMILARITY_PROCRUSTES};
        struct kdl_similarity_opts o;
        struct kdl_similarity all, r;

        (void) state;
        kdl_similarity_opts_init(&o);
        assert_int_equal(o.what, KDL_SIMILARITY_ALL);
        o.svcca_keep = 0.9;
        all = measure(xs, DX, zs, DZ, N, &o);
        for (int i = 0; i < 4; i++) {
                double got[4], want[4] = {all.cca_mean_rho, all.svcca, all.pwcca, all.procrustes};

                o.what = bits[i];
                r = measure(xs, DX, zs, DZ, N, &o);
                got[0] = r.cca_mean_rho;
                got[1] = r.svcca;
                got[2] = r.pwcca;
                got[3] = r.procrustes;
                for (int k = 0; k < 4; k++)
                        if (k == i)
                                assert_close(got[k], want[k], 1e-14, 0.0);
                        else
                                assert_true(isnan(got[k]));
        }
        o.what = KDL_SIMILARITY_SVCCA;
        o.svcca_keep = 1.0;
        r = measure(xs, DX, zs, DZ, N, &o);
        assert_int_equal(r.svcca_a, DX);
        assert_close(r.svcca, all.cca_mean_rho, 1e-12, 0.0);
}

/* K^(1/2) squared is K, and from n x n Gram matrices (K_a^(1/2) K_b^(1/2) as the cross
 * product) CCA, SVCCA and Procrustes equal the covariances' values. */
static void test_gram_form(void **state)
{
        enum { M = 9 }; /* samples: fewer than DX + DZ, more than either width */
        double ka[M * M], kb[M * M], ha[M * M], hb[M * M], hab[M * M], back[M * M];
        struct kdl_similarity_opts o;
        kdl_similarity_layer *a = NULL, *b = NULL;
        struct kdl_similarity g, f;

        (void) state;
        kdl_similarity_opts_init(&o);
        o.what = KDL_SIMILARITY_CCA | KDL_SIMILARITY_SVCCA | KDL_SIMILARITY_PROCRUSTES;
        o.svcca_keep = 0.9;
        /* K = Xc Xcᵀ of the first M rows: the cross-product of the transposed data. */
        for (size_t i = 0; i < M; i++)
                for (size_t j = 0; j < M; j++) {
                        double sa = 0.0, sb = 0.0;

                        for (size_t c = 0; c < DX; c++) {
                                double mc = 0.0;

                                for (size_t r = 0; r < M; r++)
                                        mc += xs[r * DX + c] / M;
                                sa += (xs[i * DX + c] - mc) * (xs[j * DX + c] - mc);
                        }
                        for (size_t c = 0; c < DZ; c++) {
                                double mc = 0.0;

                                for (size_t r = 0; r < M; r++)
                                        mc += zs[r * DZ + c] / M;
                                sb += (zs[i * DZ + c] - mc) * (zs[j * DZ + c] - mc);
                        }
                        ka[i * M + j] = sa;
                        kb[i * M + j] = sb;
                }
        assert_int_equal(kdl_similarity_layer_new(M, ka, &o, &a), 0);
        assert_int_equal(kdl_similarity_layer_new(M, kb, &o, &b), 0);
        assert_int_equal(kdl_similarity_layer_sqrt(a, ha), 0);
        assert_int_equal(kdl_similarity_layer_sqrt(b, hb), 0);
        for (size_t i = 0; i < M; i++)
                for (size_t j = 0; j < M; j++) {
                        double sq = 0.0, cr = 0.0;

                        for (size_t k = 0; k < M; k++) {
                                sq += ha[i * M + k] * ha[k * M + j];
                                cr += ha[i * M + k] * hb[k * M + j];
                        }
                        back[i * M + j] = sq;
                        hab[i * M + j] = cr;
                }
        for (size_t i = 0; i < M * M; i++)
                assert_close(back[i], ka[i], 1e-9, 1e-9);
        assert_int_equal(kdl_similarity_pair(a, b, hab, &g), 0);
        f = measure(xs, DX, zs, DZ, M, &o);
        assert_int_equal(g.rank_a, f.rank_a);
        assert_int_equal(g.svcca_b, f.svcca_b);
        assert_close(g.cca_mean_rho, f.cca_mean_rho, 1e-9, 0.0);
        assert_close(g.svcca, f.svcca, 1e-9, 0.0);
        assert_close(g.procrustes, f.procrustes, 1e-9, 0.0);
        kdl_similarity_layer_free(b);
        kdl_similarity_layer_free(a);
        /* Procrustes alone keeps no eigenvectors, so no square root. */
        o.what = KDL_SIMILARITY_PROCRUSTES;
        assert_int_equal(kdl_similarity_layer_new(M, ka, &o, &a), 0);
        assert_int_equal(kdl_similarity_layer_sqrt(a, ha), -KDL_ESHAPE);
        kdl_similarity_layer_free(a);
}

/* ---- edge cases and errors ---------------------------------------------------------- */

static void test_constant_layer_is_nan(void **state)
{
        double c[N * 2];
        struct kdl_similarity r;

        (void) state;
        for (size_t i = 0; i < N * 2; i++)
                c[i] = 4.25;
        r = measure(xs, DX, c, 2, N, NULL);
        assert_int_equal(r.rank_b, 0);
        assert_true(isnan(r.cca_mean_rho) && isnan(r.svcca) && isnan(r.pwcca));
        assert_true(isnan(r.procrustes) && isnan(r.procrustes_angular));
}

static void test_errors(void **state)
{
        double s[4] = {1.0, 0.0, 0.0, 1.0}, bad[4] = {1.0, NAN, NAN, 1.0};
        struct kdl_similarity_opts o;
        kdl_similarity_layer *a = NULL, *b;
        struct kdl_similarity r = {.pwcca = -7.0};

        (void) state;
        assert_int_equal(kdl_similarity_layer_new(0, s, NULL, &a), -KDL_ESHAPE);
        kdl_similarity_opts_init(&o);
        o.rtol = 1.0;
        assert_int_equal(kdl_similarity_layer_new(2, s, &o, &a), -KDL_ERANGE);
        kdl_similarity_opts_init(&o);
        o.svcca_keep = 0.0;
        assert_int_equal(kdl_similarity_layer_new(2, s, &o, &a), -KDL_ERANGE);
        assert_int_equal(kdl_similarity_layer_new(2, bad, NULL, &a), -KDL_ENONFINITE);
        assert_null(a);
        assert_int_equal(kdl_similarity_layer_new(2, s, NULL, &a), 0);
        assert_int_equal(kdl_similarity_layer_new(2, s, NULL, &b), 0);
        assert_int_equal(kdl_similarity_layer_rank(a), 2);
        assert_int_equal(kdl_similarity_pair(a, b, bad, &r), -KDL_ENONFINITE);
        assert_close(r.pwcca, -7.0, 0.0, 0.0); /* not clobbered */
        kdl_similarity_layer_free(b);
        kdl_similarity_layer_free(a);
        kdl_similarity_layer_free(NULL);
}

/* ---- from a CKA state ------------------------------------------------------------ */

/* The state's centred cross-products equal the direct ones, in either order and on the
 * diagonal; an empty state and a pair without a block are refused. */
static void test_cka_cov(void **state)
{
        size_t widths[2] = {DX, DZ};
        kdl_tensor blk[2];
        kdl_cka_state *s = NULL;
        double got[DX * DX], want[DX * DX];
        bool pairs[4] = {true, false, false, false};
        kdl_cka_opts o;

        (void) state;
        assert_int_equal(kdl_cka_state_new(2, widths, NULL, &s), 0);
        assert_int_equal(kdl_similarity_cka_cov(s, 0, 1, got), -KDL_EMISSING);
        /* Two blocks, so the state's shift (the first block's mean) is not the mean. */
        for (size_t r0 = 0; r0 < N; r0 += N / 2) {
                blk[0] = kdl_tensor_wrap(xs + r0 * DX, 2, (size_t[]){N / 2, DX});
                blk[1] = kdl_tensor_wrap(zs + r0 * DZ, 2, (size_t[]){N / 2, DZ});
                assert_int_equal(kdl_cka_accumulate(s, blk, NULL), 0);
        }
        assert_int_equal(kdl_similarity_cka_cov(s, 0, 1, got), 0);
        cross(xs, DX, zs, DZ, N, want);
        for (size_t i = 0; i < DX * DZ; i++)
                assert_close(got[i], want[i], 1e-10, 1e-10);
        assert_int_equal(kdl_similarity_cka_cov(s, 1, 0, got), 0);
        cross(zs, DZ, xs, DX, N, want);
        for (size_t i = 0; i < DX * DZ; i++)
                assert_close(got[i], want[i], 1e-10, 1e-10);
        assert_int_equal(kdl_similarity_cka_cov(s, 0, 0, got), 0);
        cross(xs, DX, xs, DX, N, want);
        for (size_t i = 0; i < DX * DX; i++)
                assert_close(got[i], want[i], 1e-10, 1e-10);
        kdl_cka_state_free(s);
        s = NULL;

        kdl_cka_opts_init(&o);
        o.pairs = pairs;
        assert_int_equal(kdl_cka_state_new(2, widths, &o, &s), 0);
        blk[0] = kdl_tensor_wrap(xs, 2, (size_t[]){N, DX});
        blk[1] = kdl_tensor_wrap(zs, 2, (size_t[]){N, DZ});
        assert_int_equal(kdl_cka_accumulate(s, blk, NULL), 0);
        assert_int_equal(kdl_similarity_cka_cov(s, 0, 1, got), -KDL_ESHAPE);
        kdl_cka_state_free(s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_reference_values),
                cmocka_unit_test(test_self_is_one),
                cmocka_unit_test(test_rotation_and_scale),
                cmocka_unit_test(test_isotropic_scaling),
                cmocka_unit_test(test_rank_deficient),
                cmocka_unit_test(test_svcca_keep),
                cmocka_unit_test(test_what),
                cmocka_unit_test(test_gram_form),
                cmocka_unit_test(test_constant_layer_is_nan),
                cmocka_unit_test(test_errors),
                cmocka_unit_test(test_cka_cov),
        };
        return cmocka_run_group_tests(tests, setup_data, NULL);
}
