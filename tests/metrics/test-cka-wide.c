/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/base/tensor.h"
#include "metrics/cka.h"
#include "metrics/cka-internal.h"

/* Wide layers of the feature-space state: one-hot layers (class sums, exact), column strips
 * (exact, external pairs) and Gaussian sketches (an estimate with its standard error). */

#define N    600
#define NIDS N
#define MAXL 6
#define NCLS 9
static size_t ids[NIDS];

static int setup_ids(void **state)
{
        (void) state;
        for (size_t i = 0; i < NIDS; i++)
                ids[i] = i;
        return 0;
}

static double *randn(kdl_test_rng *g, size_t n, double scale, double offset)
{
        double *d = malloc(n * sizeof(double));

        assert_non_null(d);
        for (size_t i = 0; i < n; i++)
                d[i] = scale * kdl_test_normal(g) + offset;
        return d;
}

/* Layers of a fixture: X [N, 24] (offset 40, as features far from 0), Z [N, 7] sharing
 * part of X, a class per row (uneven counts, class 8 empty), its one-hot [N, 9] and the
 * classes as a column [N, 1]; X and Z carry some of the class too. */
struct fix {
        double *x, *z, *hot, *cls;
};

static void fix_make(struct fix *f, uint64_t seed)
{
        kdl_test_rng g = {seed};

        f->x = randn(&g, N * 24, 1.0, 40.0);
        f->z = randn(&g, N * 7, 2.0, -1.0);
        f->hot = calloc(N * NCLS, sizeof(double));
        f->cls = malloc(N * sizeof(double));
        assert_non_null(f->hot);
        assert_non_null(f->cls);
        for (size_t i = 0; i < N; i++) {
                double u = kdl_test_uniform(&g);
                size_t c = (size_t) (u * u * 8.0); /* classes 0..7, more of the low ones */

                f->cls[i] = (double) c;
                f->hot[i * NCLS + c] = 1.0;
                f->x[i * 24 + c] += 1.5;
                for (size_t k = 0; k < 7; k++)
                        f->z[i * 7 + k] += 0.8 * f->x[i * 24 + 2 * k] + 0.3 * (double) c;
        }
}

static void fix_free(struct fix *f)
{
        free(f->x);
        free(f->z);
        free(f->hot);
        free(f->cls);
}

/* A state of the layers @t (widths @w, kinds @k or NULL, external pairs @ext or NULL) fed
 * in calls of @call rows, blocks of @block rows, @boot replicates. */
static kdl_cka_state *feed(const kdl_tensor *t, size_t l, const size_t *w,
                           const enum kdl_cka_layer *k, const bool *ext, size_t block, size_t call,
                           size_t boot, enum kdl_cka_interval iv, enum kdl_cka_precision prec)
{
        kdl_cka_opts o;
        kdl_cka_state *s = NULL;
        kdl_tensor v[MAXL];

        kdl_cka_opts_init(&o);
        o.block_rows = block;
        o.bootstrap = boot;
        o.seed = 11;
        o.interval = iv;
        o.precision = prec;
        o.kinds = k;
        o.external = ext;
        assert_int_equal(kdl_cka_state_new(l, w, &o, &s), 0);
        for (size_t r0 = 0; r0 < N; r0 += call) {
                size_t r1 = r0 + call < N ? r0 + call : N;

                for (size_t i = 0; i < l; i++)
                        v[i] = kdl_tensor_view_rows(&t[i], r0, r1);
                assert_int_equal(kdl_cka_accumulate(s, v, ids + r0), 0);
        }
        return s;
}

static void same_arrays(const double *a, const double *b, size_t n, double tol)
{
        assert_true(a && b);
        for (size_t i = 0; i < n; i++) {
                if (isnan(b[i])) {
                        assert_true(isnan(a[i]));
                        continue;
                }
                assert_close(a[i], b[i], 0.0, tol);
        }
}

static void same_matrix(const kdl_cka_matrix *a, const kdl_cka_matrix *b, double tol)
{
        size_t ll = a->nlayers * a->nlayers;

        same_arrays(a->biased, b->biased, ll, tol);
        same_arrays(a->debiased, b->debiased, ll, tol);
        if (!b->bootstrap)
                return;
        same_arrays(a->biased_rep, b->biased_rep, ll * b->bootstrap, tol);
        same_arrays(a->debiased_rep, b->debiased_rep, ll * b->bootstrap, tol);
        same_arrays(a->biased_lo, b->biased_lo, ll, tol);
        same_arrays(a->debiased_hi, b->debiased_hi, ll, tol);
        if (b->ngroups)
                same_arrays(a->debiased_jack, b->debiased_jack, ll * b->ngroups, tol);
}

/* The one-hot layer (classes, no C x C block) gives what the materialised one-hot gives:
 * values, bootstrap replicates, BCa jackknife, whatever the block sizes, and merges. */
static void test_onehot_equals_dense(void **state)
{
        struct fix f;
        size_t w[3] = {24, NCLS, 7};
        enum kdl_cka_layer k[3] = {KDL_CKA_LAYER_DENSE, KDL_CKA_LAYER_ONEHOT, KDL_CKA_LAYER_DENSE};
        kdl_tensor dense[3], hot[3];
        kdl_cka_state *a, *b;
        kdl_cka_matrix *ma, *mb, *mm;

        (void) state;
        fix_make(&f, 3);
        dense[0] = hot[0] = kdl_tensor_wrap(f.x, 2, (size_t[]){N, 24});
        dense[1] = kdl_tensor_wrap(f.hot, 2, (size_t[]){N, NCLS});
        hot[1] = kdl_tensor_wrap(f.cls, 2, (size_t[]){N, 1});
        dense[2] = hot[2] = kdl_tensor_wrap(f.z, 2, (size_t[]){N, 7});
        a = feed(dense, 3, w, NULL, NULL, 0, N, 30, KDL_CKA_INTERVAL_BCA, KDL_CKA_PRECISION_DOUBLE);
        b = feed(hot, 3, w, k, NULL, 64, 100, 30, KDL_CKA_INTERVAL_BCA, KDL_CKA_PRECISION_DOUBLE);
        assert_int_equal(kdl_cka_finalize(a, &ma), 0);
        assert_int_equal(kdl_cka_finalize(b, &mb), 0);
        assert_true(ma->biased[1] > 0.05 && ma->biased[1] < 0.95);
        same_matrix(mb, ma, 1e-11);
        assert_true(kdl_cka_state_bytes(3, w, &(kdl_cka_opts){.level = 0.95, .kinds = k}) <
                    kdl_cka_state_bytes(3, w, NULL));
        kdl_cka_matrix_free(ma);
        kdl_cka_matrix_free(mb);
        /* Mixed precision: the one-hot sums stay exact, the rest within float's rounding. */
        kdl_cka_state_free(b);
        b = feed(hot, 3, w, k, NULL, 64, 100, 0, KDL_CKA_INTERVAL_PERCENTILE,
                 KDL_CKA_PRECISION_MIXED);
        assert_int_equal(kdl_cka_finalize(b, &mm), 0);
        assert_int_equal(kdl_cka_finalize(a, &ma), 0);
        same_arrays(mm->biased, ma->biased, 9, 1e-6);
        same_arrays(mm->debiased, ma->debiased, 9, 1e-6);
        kdl_cka_matrix_free(mm);
        kdl_cka_matrix_free(ma);
        kdl_cka_state_free(b);
        kdl_cka_state_free(a);
        fix_free(&f);
}

/* Merging states of one-hot layers: the same as one state over all rows. */
static void test_onehot_merge(void **state)
{
        struct fix f;
        size_t w[3] = {24, NCLS, 7};
        enum kdl_cka_layer k[3] = {KDL_CKA_LAYER_DENSE, KDL_CKA_LAYER_ONEHOT, KDL_CKA_LAYER_DENSE};
        kdl_tensor t[3], v[3];
        kdl_cka_opts o;
        kdl_cka_state *all, *p1 = NULL, *p2 = NULL;
        kdl_cka_matrix *ma, *mb;

        (void) state;
        fix_make(&f, 5);
        t[0] = kdl_tensor_wrap(f.x, 2, (size_t[]){N, 24});
        t[1] = kdl_tensor_wrap(f.cls, 2, (size_t[]){N, 1});
        t[2] = kdl_tensor_wrap(f.z, 2, (size_t[]){N, 7});
        all = feed(t, 3, w, k, NULL, 0, N, 10, KDL_CKA_INTERVAL_PERCENTILE,
                   KDL_CKA_PRECISION_DOUBLE);
        kdl_cka_opts_init(&o);
        o.bootstrap = 10;
        o.seed = 11;
        o.kinds = k;
        assert_int_equal(kdl_cka_state_new(3, w, &o, &p1), 0);
        assert_int_equal(kdl_cka_state_new(3, w, &o, &p2), 0);
        for (size_t i = 0; i < 3; i++)
                v[i] = kdl_tensor_view_rows(&t[i], 0, 210);
        assert_int_equal(kdl_cka_accumulate(p1, v, ids), 0);
        for (size_t i = 0; i < 3; i++)
                v[i] = kdl_tensor_view_rows(&t[i], 210, N);
        assert_int_equal(kdl_cka_accumulate(p2, v, ids + 210), 0);
        assert_int_equal(kdl_cka_merge(p1, p2), 0);
        assert_int_equal(kdl_cka_finalize(all, &ma), 0);
        assert_int_equal(kdl_cka_finalize(p1, &mb), 0);
        same_matrix(mb, ma, 1e-11);
        /* A dense state does not merge into a one-hot one. */
        kdl_cka_state_free(p2);
        o.kinds = NULL;
        assert_int_equal(kdl_cka_state_new(3, w, &o, &p2), 0);
        assert_int_equal(kdl_cka_merge(p1, p2), -KDL_EMISMATCH);
        kdl_cka_matrix_free(ma);
        kdl_cka_matrix_free(mb);
        kdl_cka_state_free(p2);
        kdl_cka_state_free(p1);
        kdl_cka_state_free(all);
        fix_free(&f);
}

/* A class that is not a whole number in range is refused, and the state is unchanged. */
static void test_onehot_bad_class(void **state)
{
        struct fix f;
        size_t w[3] = {24, NCLS, 7};
        enum kdl_cka_layer k[3] = {KDL_CKA_LAYER_DENSE, KDL_CKA_LAYER_ONEHOT, KDL_CKA_LAYER_DENSE};
        kdl_tensor t[3];
        kdl_cka_opts o;
        kdl_cka_state *s = NULL;
        kdl_cka_matrix *m = NULL;
        double bad[3] = {9.0, 2.5, -1.0};

        (void) state;
        fix_make(&f, 7);
        kdl_cka_opts_init(&o);
        o.kinds = k;
        assert_int_equal(kdl_cka_state_new(3, w, &o, &s), 0);
        t[0] = kdl_tensor_wrap(f.x, 2, (size_t[]){N, 24});
        t[1] = kdl_tensor_wrap(f.cls, 2, (size_t[]){N, 1});
        t[2] = kdl_tensor_wrap(f.z, 2, (size_t[]){N, 7});
        for (int b = 0; b < 3; b++) {
                f.cls[N - 1] = bad[b];
                assert_int_equal(kdl_cka_accumulate(s, t, ids), -KDL_ERANGE);
        }
        assert_int_equal(kdl_cka_finalize(s, &m), -KDL_EMISSING);
        /* The dense one-hot's width is refused for the classes' column. */
        f.cls[N - 1] = 0.0;
        t[1] = kdl_tensor_wrap(f.hot, 2, (size_t[]){N, NCLS});
        assert_int_equal(kdl_cka_accumulate(s, t, ids), -KDL_ESHAPE);
        kdl_cka_state_free(s);
        fix_free(&f);
}

/* Column strips: the external pairs' terms, given to the finalize, give the values of a
 * state that keeps every block, with strips of a few columns over many passes. */
static void test_strips_equal_blocks(void **state)
{
        struct fix f;
        size_t w[4] = {24, 7, NCLS, 24}, l = 4, passes, bytes, np = 0;
        enum kdl_cka_layer k[4] = {KDL_CKA_LAYER_DENSE, KDL_CKA_LAYER_DENSE, KDL_CKA_LAYER_ONEHOT,
                                   KDL_CKA_LAYER_DENSE};
        bool ext[16] = {0};
        double *x2 = malloc(N * 24 * sizeof(double)), *mean[4], fe[16], te[16], se[4];
        kdl_tensor t[4];
        kdl_cka_state *full, *main;
        kdl_cka_strips *st = NULL;
        kdl_cka_matrix *mf, *mm;

        (void) state;
        fix_make(&f, 9);
        assert_non_null(x2);
        /* A second wide layer: X squared, reversed. */
        for (size_t i = 0; i < N; i++)
                for (size_t c = 0; c < 24; c++)
                        x2[i * 24 + c] = pow(f.x[i * 24 + 23 - c] - 40.0, 2.0) + 0.1 * (double) c;
        t[0] = kdl_tensor_wrap(f.x, 2, (size_t[]){N, 24});
        t[1] = kdl_tensor_wrap(f.z, 2, (size_t[]){N, 7});
        t[2] = kdl_tensor_wrap(f.cls, 2, (size_t[]){N, 1});
        t[3] = kdl_tensor_wrap(x2, 2, (size_t[]){N, 24});
        /* The wide layers 0 and 3: with themselves, each other and the labels. */
        ext[0 * 4 + 0] = ext[3 * 4 + 3] = ext[0 * 4 + 3] = true;
        ext[0 * 4 + 2] = ext[2 * 4 + 3] = true;
        full = feed(t, l, w, k, NULL, 0, N, 0, KDL_CKA_INTERVAL_PERCENTILE,
                    KDL_CKA_PRECISION_DOUBLE);
        main = feed(t, l, w, k, ext, 0, 128, 0, KDL_CKA_INTERVAL_PERCENTILE,
                    KDL_CKA_PRECISION_DOUBLE);
        for (size_t j = 0; j < l; j++) {
                mean[j] = malloc(w[j] * sizeof(double));
                assert_int_equal(kdl_cka_state_mean(main, j, mean[j]), 0);
        }
        /* A budget of a few columns a strip. */
        kdl_cka_strips_plan(l, w, k, ext, 100000, &passes, &bytes);
        assert_true(passes >= 4 && bytes <= 100000);
        assert_int_equal(
                kdl_cka_strips_new(l, w, k, ext, (const double *const *) mean, 100000, &st), 0);
        assert_int_equal(kdl_cka_strips_passes(st), passes);
        for (size_t p = 0; p < passes; p++) {
                for (size_t r0 = 0; r0 < N; r0 += 97) {
                        kdl_tensor v[4];
                        size_t r1 = r0 + 97 < N ? r0 + 97 : N;

                        for (size_t i = 0; i < l; i++)
                                v[i] = kdl_tensor_view_rows(&t[i], r0, r1);
                        assert_int_equal(kdl_cka_strips_accumulate(st, p, v), 0);
                }
                kdl_cka_strips_pass_end(st, p);
                np++;
        }
        kdl_cka_strips_terms(st, fe, te, se);
        assert_true(isnan(fe[1 * 4 + 1]) && !isnan(fe[3 * 4 + 0]) && isnan(se[2]));
        assert_int_equal(kdl_cka_finalize_external(main, fe, te, se, &mm), 0);
        assert_int_equal(kdl_cka_finalize(full, &mf), 0);
        same_matrix(mm, mf, 1e-10);
        /* Without the terms, the external pairs are NaN. */
        kdl_cka_matrix_free(mm);
        assert_int_equal(kdl_cka_finalize(main, &mm), 0);
        assert_true(isnan(mm->biased[0 * 4 + 3]) && isnan(mm->biased[0]) &&
                    !isnan(mm->biased[1 * 4 + 2]));
        /* Too small a budget for one column. */
        kdl_cka_strips_free(st);
        st = NULL;
        assert_int_equal(kdl_cka_strips_new(l, w, k, ext, (const double *const *) mean, 1000, &st),
                         -KDL_EBUDGET);
        kdl_cka_strips_plan(l, w, k, ext, 1000, &passes, &bytes);
        assert_true(passes == SIZE_MAX && bytes > 1000);
        for (size_t j = 0; j < l; j++)
                free(mean[j]);
        kdl_cka_matrix_free(mm);
        kdl_cka_matrix_free(mf);
        kdl_cka_state_free(main);
        kdl_cka_state_free(full);
        free(x2);
        fix_free(&f);
        (void) np;
}

/* The terms of a sketch of X (raw, from the sketched rows): ‖X̂ᵀX̂‖², tr, Σ ŝ² and ‖X̂ᵀY‖². */
static void sketch_terms(const double *xh, size_t n, size_t r, const double *y, size_t dy,
                         double *f, double *sd, double *t, double *fxy)
{
        double *a = calloc(r * r, sizeof(double)), *b = calloc(r * dy, sizeof(double));
        double *mx = calloc(r, sizeof(double)), *my = calloc(dy, sizeof(double));

        assert_true(a && b && mx && my);
        for (size_t i = 0; i < n; i++) {
                for (size_t c = 0; c < r; c++)
                        mx[c] += xh[i * r + c] / (double) n;
                for (size_t c = 0; c < dy; c++)
                        my[c] += y[i * dy + c] / (double) n;
        }
        *t = 0.0;
        for (size_t i = 0; i < n; i++) {
                double s = 0.0;

                for (size_t c = 0; c < r; c++) {
                        double xc = xh[i * r + c] - mx[c];

                        s += xc * xc;
                        for (size_t e = 0; e < r; e++)
                                a[c * r + e] += xc * (xh[i * r + e] - mx[e]);
                        for (size_t e = 0; e < dy; e++)
                                b[c * dy + e] += xc * (y[i * dy + e] - my[e]);
                }
                *t += s * s;
        }
        *f = *sd = *fxy = 0.0;
        for (size_t c = 0; c < r; c++) {
                *sd += a[c * r + c];
                for (size_t e = 0; e < r; e++)
                        *f += a[c * r + e] * a[c * r + e];
                for (size_t e = 0; e < dy; e++)
                        *fxy += b[c * dy + e] * b[c * dy + e];
        }
        free(my);
        free(mx);
        free(b);
        free(a);
}

/* The corrected self terms are unbiased, the cross term too: their mean over many sketches
 * is the exact value within the Monte Carlo error. */
static void test_sketch_terms_unbiased(void **state)
{
        enum { n = 120, d = 60, r = 8, reps = 400 };
        kdl_test_rng g = {17};
        double *x = randn(&g, n * d, 1.0, 5.0), *y = randn(&g, n * 3, 1.0, 0.0), xh[n * r];
        double ex[4], sum[4] = {0}, sq[4] = {0}, ss;
        kdl_tensor tx = kdl_tensor_wrap(x, 2, (size_t[]){n, d});
        kdl_tensor th = kdl_tensor_wrap(xh, 2, (size_t[]){n, r});

        (void) state;
        /* A few strong directions, so that the sketch's bias would show. */
        for (size_t i = 0; i < n; i++)
                for (size_t c = 0; c < d; c++)
                        x[i * d + c] += 3.0 * y[i * 3 + c % 3] * (c < 9);
        sketch_terms(x, n, d, y, 3, &ex[0], &ex[1], &ex[2], &ex[3]);
        ex[1] *= ex[1];
        for (int k = 0; k < reps; k++) {
                kdl_cka_sketch *sk = NULL;
                double v[4];

                assert_int_equal(kdl_cka_sketch_new(d, r, 5, 100 + 2 * (uint64_t) k, &sk), 0);
                assert_int_equal(kdl_cka_sketch_apply(sk, &tx, &th), 0);
                kdl_cka_sketch_free(sk);
                sketch_terms(xh, n, r, y, 3, &v[0], &v[1], &v[2], &v[3]);
                kdl__cka_sketch_correct(r, &v[0], v[1], &v[2], &ss);
                v[1] = ss;
                for (int i = 0; i < 4; i++) {
                        sum[i] += v[i];
                        sq[i] += v[i] * v[i];
                }
        }
        for (int i = 0; i < 4; i++) {
                double mean = sum[i] / reps, sd = sqrt(sq[i] / reps - mean * mean);

                /* Within 4 standard errors of the mean. */
                assert_close(mean, ex[i], 0.0, 4.0 * sd / sqrt((double) reps));
        }
        /* Uncorrected, ‖X̂ᵀX̂‖² would be biased by far more than that. */
        assert_true(sum[0] / reps < ex[0] * 1.2);
        free(y);
        free(x);
}

/* A sketched layer in the state: the values near the exact ones, a standard error that
 * matches the spread over independent sketches, the exact pairs untouched. */
static void test_sketch_state_and_se(void **state)
{
        enum { d = 200, r = 64, reps = 40 };
        struct fix f;
        kdl_test_rng g = {23};
        double *w = randn(&g, 24 * d, 1.0, 0.0), *xw = malloc(N * d * sizeof(double));
        double *xh = malloc(N * r * sizeof(double)), sum = 0.0, sq = 0.0, se = 0.0, exact;
        size_t wd[3] = {d, 7, NCLS}, wr[3] = {r, 7, NCLS};
        enum kdl_cka_layer kd[3] = {KDL_CKA_LAYER_DENSE, KDL_CKA_LAYER_DENSE, KDL_CKA_LAYER_ONEHOT};
        enum kdl_cka_layer ks[3] = {KDL_CKA_LAYER_SKETCH, KDL_CKA_LAYER_DENSE,
                                    KDL_CKA_LAYER_ONEHOT};
        kdl_tensor t[3], tw;
        kdl_cka_state *s;
        kdl_cka_matrix *me, *m;

        (void) state;
        fix_make(&f, 21);
        assert_true(xw && xh);
        /* A wide layer: X through a random map, plus a little noise. */
        for (size_t i = 0; i < N; i++)
                for (size_t c = 0; c < d; c++) {
                        double v = 0.05 * kdl_test_normal(&g);

                        for (size_t e = 0; e < 24; e++)
                                v += (f.x[i * 24 + e] - 40.0) * w[e * d + c];
                        xw[i * d + c] = v;
                }
        tw = kdl_tensor_wrap(xw, 2, (size_t[]){N, d});
        t[0] = tw;
        t[1] = kdl_tensor_wrap(f.z, 2, (size_t[]){N, 7});
        t[2] = kdl_tensor_wrap(f.cls, 2, (size_t[]){N, 1});
        s = feed(t, 3, wd, kd, NULL, 0, N, 0, 0, KDL_CKA_PRECISION_DOUBLE);
        assert_int_equal(kdl_cka_finalize(s, &me), 0);
        assert_null(me->biased_sketch_se);
        kdl_cka_state_free(s);
        exact = me->biased[1];
        for (int k = 0; k < reps; k++) {
                kdl_cka_sketch *sk = NULL;
                kdl_tensor th = kdl_tensor_wrap(xh, 2, (size_t[]){N, r});

                assert_int_equal(kdl_cka_sketch_new(d, r, (uint64_t) k, 1000, &sk), 0);
                assert_int_equal(kdl_cka_sketch_apply(sk, &tw, &th), 0);
                kdl_cka_sketch_free(sk);
                t[0] = th;
                s = feed(t, 3, wr, ks, NULL, 0, 200, 0, 0, KDL_CKA_PRECISION_DOUBLE);
                assert_int_equal(kdl_cka_finalize(s, &m), 0);
                /* The exact pair (1, 2) is exact; the self pair's error is 0. */
                assert_close(m->biased[1 * 3 + 2], me->biased[1 * 3 + 2], 0.0, 1e-12);
                assert_close(m->debiased[1 * 3 + 2], me->debiased[1 * 3 + 2], 0.0, 1e-12);
                assert_true(isnan(m->biased_sketch_se[1 * 3 + 2]));
                assert_close(m->biased_sketch_se[0], 0.0, 0.0, 0.0);
                assert_true(m->debiased_sketch_se[1] > 0.0 && m->biased_sketch_se[2] > 0.0);
                sum += m->biased[1];
                sq += m->biased[1] * m->biased[1];
                se += m->biased_sketch_se[1];
                kdl_cka_matrix_free(m);
                kdl_cka_state_free(s);
        }
        {
                double mean = sum / reps, sd = sqrt(sq / reps - mean * mean);

                /* Near the exact value, and the jackknife's error is the spread's size. */
                assert_close(mean, exact, 0.0, 4.0 * sd / sqrt((double) reps) + 0.01 * exact);
                assert_true(se / reps > 0.6 * sd && se / reps < 1.6 * sd);
                print_message("sketch r = %d of d = %d: CKA %.5f exact, %.5f mean, sd %.5f, "
                              "jackknife se %.5f\n",
                              r, d, exact, mean, sd, se / reps);
        }
        kdl_cka_matrix_free(me);
        free(xh);
        free(xw);
        free(w);
        fix_free(&f);
}

/* The sketch is one Ω for a seed and a stream: the same twice, another for another stream;
 * its shapes are checked. */
static void test_sketch_contract(void **state)
{
        double x[6] = {1, 2, 3, 4, 5, 6}, o1[4], o2[4], o3[4];
        kdl_tensor tx = kdl_tensor_wrap(x, 2, (size_t[]){2, 3});
        kdl_tensor t1 = kdl_tensor_wrap(o1, 2, (size_t[]){2, 2});
        kdl_tensor t2 = kdl_tensor_wrap(o2, 2, (size_t[]){2, 2});
        kdl_tensor t3 = kdl_tensor_wrap(o3, 2, (size_t[]){2, 2});
        kdl_tensor bad = kdl_tensor_wrap(o3, 2, (size_t[]){2, 1});
        kdl_cka_sketch *a = NULL, *b = NULL, *c = NULL, *z = NULL;

        (void) state;
        assert_int_equal(kdl_cka_sketch_new(3, 2, 1, 10, &a), 0);
        assert_int_equal(kdl_cka_sketch_new(3, 2, 1, 10, &b), 0);
        assert_int_equal(kdl_cka_sketch_new(3, 2, 1, 12, &c), 0);
        assert_int_equal(kdl_cka_sketch_apply(a, &tx, &t1), 0);
        assert_int_equal(kdl_cka_sketch_apply(b, &tx, &t2), 0);
        assert_int_equal(kdl_cka_sketch_apply(c, &tx, &t3), 0);
        assert_memory_equal(o1, o2, sizeof(o1));
        assert_true(fabs(o1[0] - o3[0]) > 1e-6);
        assert_int_equal(kdl_cka_sketch_apply(a, &tx, &bad), -KDL_ESHAPE);
        assert_int_equal(kdl_cka_sketch_apply(a, &t1, &t2), -KDL_ESHAPE);
        assert_int_equal(kdl_cka_sketch_new(0, 2, 1, 10, &z), -KDL_ESHAPE);
        assert_null(z);
        assert_true(kdl_cka_sketch_bytes(1000, 100) == 800000);
        assert_true(kdl_cka_sketch_bytes(SIZE_MAX, 2) == SIZE_MAX);
        kdl_cka_sketch_free(NULL);
        kdl_cka_sketch_free(c);
        kdl_cka_sketch_free(b);
        kdl_cka_sketch_free(a);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_onehot_equals_dense),
                cmocka_unit_test(test_onehot_merge),
                cmocka_unit_test(test_onehot_bad_class),
                cmocka_unit_test(test_strips_equal_blocks),
                cmocka_unit_test(test_sketch_terms_unbiased),
                cmocka_unit_test(test_sketch_state_and_se),
                cmocka_unit_test(test_sketch_contract),
        };
        return cmocka_run_group_tests(tests, setup_ids, NULL);
}
