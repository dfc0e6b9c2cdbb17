/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/base/tensor.h"
#include "metrics/calibration.h"
#include "metrics/kl.h"

/*
 * The references here are independent of metrics/calibration.c: softmax in
 * long double from the maximum, bins found by comparing with the edges
 * b/B < v <= (b+1)/B, ECE as Σ_b |B_b|/N |acc - conf| with a division per
 * bin, the KL as the textbook Σ p^t (log p^t - log p^s).  Counts are by hand
 * where the data are small enough.
 */

#define C_MAX 16

static kdl_calibration_opts opts(size_t c, bool teacher)
{
        kdl_calibration_opts o;

        kdl_calibration_opts_init(&o);
        o.c = c;
        o.teacher = teacher;
        return o;
}

/* Accumulate rows [r0, r1) of z, zt (row-major [n, c]) and y in blocks of @rows. */
static void feed(kdl_calibration_state *s, double *z, double *zt, int64_t *y, size_t c, size_t r0,
                 size_t r1, size_t rows)
{
        for (size_t a = r0; a < r1; a += rows) {
                size_t m = r1 - a < rows ? r1 - a : rows;
                kdl_tensor tz = kdl_tensor_wrap(z + a * c, 2, (size_t[]){m, c});
                kdl_tensor tt = zt ? kdl_tensor_wrap(zt + a * c, 2, (size_t[]){m, c}) : tz;
                kdl_calibration_block b = {.row0 = a, .z = &tz, .labels = y + a};

                b.zt = zt ? &tt : NULL;
                assert_int_equal(kdl_calibration_accumulate(s, &b), 0);
        }
}

static kdl_calibration_result *run(const kdl_calibration_opts *o, double *z, double *zt, int64_t *y,
                                   size_t n, size_t rows)
{
        kdl_calibration_state *s = NULL;
        kdl_calibration_result *r = NULL;

        assert_int_equal(kdl_calibration_state_new(o, &s), 0);
        feed(s, z, zt, y, o->c, 0, n, rows);
        assert_int_equal(kdl_calibration_count(s), n);
        assert_int_equal(kdl_calibration_finalize(s, &r), 0);
        kdl_calibration_state_free(s);
        return r;
}

/* Softmax of @c logits at temperature @tau in long double. */
static void softmax_ld(const double *z, size_t c, double tau, long double *p)
{
        long double mx = z[0], sum = 0.0L;

        for (size_t k = 1; k < c; k++)
                mx = z[k] > mx ? z[k] : mx;
        for (size_t k = 0; k < c; k++)
                sum += p[k] = expl(((long double) z[k] - mx) / tau);
        for (size_t k = 0; k < c; k++)
                p[k] /= sum;
}

static size_t first_max(const double *z, size_t c)
{
        size_t am = 0;

        for (size_t k = 1; k < c; k++)
                if (z[k] > z[am])
                        am = k;
        return am;
}

/* The bin of @v by its edges: b/B < v <= (b+1)/B; 0 in bin 0. */
static size_t edge_bin(long double v, size_t nb)
{
        for (size_t b = 0; b < nb; b++)
                if (v <= (long double) (b + 1) / (long double) nb)
                        return b;
        return nb - 1;
}

struct ref {
        double accuracy, fidelity, ece, cw, nll, kl, conf;
};

/* Every statistic by its textbook definition. */
static struct ref reference(const double *z, const double *zt, const int64_t *y, size_t n, size_t c,
                            size_t nb, double tau)
{
        long double p[C_MAX], pt[C_MAX], ps[C_MAX], bn[32] = {0}, bacc[32] = {0}, bconf[32] = {0};
        long double cn[C_MAX][32] = {{0}}, cy[C_MAX][32] = {{0}}, cp[C_MAX][32] = {{0}};
        long double acc = 0, agree = 0, nll = 0, kl = 0, conf = 0, ece = 0, cw = 0;

        assert_true(c <= C_MAX && nb <= 32);
        for (size_t i = 0; i < n; i++) {
                const double *zi = z + i * c;
                size_t am = first_max(zi, c), b;

                softmax_ld(zi, c, 1.0, p);
                b = edge_bin(p[am], nb);
                bn[b] += 1;
                bacc[b] += am == (size_t) y[i];
                bconf[b] += p[am];
                acc += am == (size_t) y[i];
                conf += p[am];
                nll -= logl(p[y[i]]);
                for (size_t j = 0; j < c; j++) {
                        b = edge_bin(p[j], nb);
                        cn[j][b] += 1;
                        cy[j][b] += (size_t) y[i] == j;
                        cp[j][b] += p[j];
                }
                if (!zt)
                        continue;
                agree += first_max(zt + i * c, c) == am;
                softmax_ld(zt + i * c, c, tau, pt);
                softmax_ld(zi, c, tau, ps);
                for (size_t j = 0; j < c; j++)
                        kl += (long double) tau * tau * pt[j] * (logl(pt[j]) - logl(ps[j]));
        }
        for (size_t b = 0; b < nb; b++) {
                if (bn[b] > 0)
                        ece += bn[b] / n * fabsl(bacc[b] / bn[b] - bconf[b] / bn[b]);
                for (size_t j = 0; j < c; j++)
                        if (cn[j][b] > 0)
                                cw += cn[j][b] / n *
                                      fabsl(cy[j][b] / cn[j][b] - cp[j][b] / cn[j][b]);
        }
        return (struct ref){(double) (acc / n), zt ? (double) (agree / n) : (double) NAN,
                            (double) ece,       (double) (cw / c),
                            (double) (nll / n), zt ? (double) (kl / n) : (double) NAN,
                            (double) (conf / n)};
}

/* Teacher logits of scale 3, model = teacher + noise, labels mostly the teacher's argmax. */
static void make_data(uint64_t seed, size_t n, size_t c, double *z, double *zt, int64_t *y)
{
        kdl_test_rng r = {seed};

        for (size_t i = 0; i < n * c; i++) {
                zt[i] = 3.0 * kdl_test_normal(&r);
                z[i] = zt[i] + 1.5 * kdl_test_normal(&r);
        }
        for (size_t i = 0; i < n; i++)
                y[i] = kdl_test_uniform(&r) < 0.7 ? (int64_t) first_max(zt + i * c, c)
                                                  : (int64_t) (kdl_test_uniform(&r) * (double) c);
}

static void test_defaults(void **state)
{
        kdl_calibration_opts o;

        (void) state;
        memset(&o, 0xff, sizeof(o));
        kdl_calibration_opts_init(&o);
        assert_int_equal(o.c, 0);
        assert_int_equal(o.bins, 15);
        assert_false(o.teacher);
        assert_close(o.tau, 4.0, 0.0, 0.0);
}

/* Six samples of three classes, counted by hand. */
static void test_hand_counted(void **state)
{
        /* model argmax: 0, 1, 2, 2, 1, 0 (row 5 ties 0 and 1: the first) */
        double z[] = {2.0,  1.0, 0.0, 0.5, 1.5, -1.0,       0.0, 0.1, 0.3,
                      -2.0, 1.0, 4.0, 1.0, 3.0, 3.0 - 1e-9, 0.7, 0.7, 0.2};
        /* teacher argmax: 0, 0, 2, 1, 1, 1 */
        double zt[] = {1.0, 0.0, 0.0, 2.0,  1.0, 1.0,  0.0, 0.0, 5.0,
                       0.0, 2.0, 1.0, -1.0, 0.0, -3.0, 0.0, 0.5, 0.1};
        int64_t y[] = {0, 1, 0, 2, 2, 1};
        kdl_calibration_opts o = opts(3, true);
        kdl_calibration_result *r = run(&o, z, zt, y, 6, 4);
        struct ref ref = reference(z, zt, y, 6, 3, 15, 4.0);

        (void) state;
        /* correct: rows 0, 1, 3 -> 3/6; agreeing with the teacher: 0, 2, 4 -> 3/6 */
        assert_close(r->accuracy, 0.5, 0.0, 0.0);
        assert_close(r->fidelity, 0.5, 0.0, 0.0);
        assert_int_equal(r->n, 6);
        assert_close(r->ece, ref.ece, 1e-13, 1e-16);
        assert_close(r->classwise_ece, ref.cw, 1e-13, 1e-16);
        assert_close(r->nll, ref.nll, 1e-13, 0.0);
        assert_close(r->kl, ref.kl, 1e-12, 0.0);
        assert_close(r->confidence, ref.conf, 1e-14, 0.0);
        kdl_calibration_result_free(r);
}

/* Bins where the accuracy is the mean confidence: ECE and classwise ECE 0; a teacher equal
 * to the model: fidelity 1 and KL exactly 0. */
static void test_perfectly_calibrated(void **state)
{
        double l3 = log(3.0);
        /* p = [3/4, 1/4] four times (three right), [1/2, 1/2] twice (one right) */
        double z[] = {l3, 0.0, l3, 0.0, l3, 0.0, l3, 0.0, 0.0, 0.0, 0.0, 0.0};
        int64_t y[] = {0, 0, 1, 0, 0, 1};
        kdl_calibration_opts o = opts(2, true);
        kdl_calibration_result *r = run(&o, z, z, y, 6, 6);

        (void) state;
        assert_close(r->ece, 0.0, 0.0, 1e-16);
        assert_close(r->classwise_ece, 0.0, 0.0, 1e-16);
        assert_close(r->fidelity, 1.0, 0.0, 0.0);
        assert_close(r->kl, 0.0, 0.0, 0.0);
        assert_close(r->accuracy, 4.0 / 6.0, 0.0, 0.0);
        /* bins of 1/15: 3/4 in (11/15, 12/15], 1/2 in (7/15, 8/15] */
        for (size_t b = 0; b < 15; b++) {
                assert_int_equal(r->bin_count[b], b == 11 ? 4 : b == 7 ? 2 : 0);
                if (r->bin_count[b] == 0) {
                        assert_true(isnan(r->bin_accuracy[b]) && isnan(r->bin_confidence[b]));
                        continue;
                }
                assert_close(r->bin_accuracy[b], b == 11 ? 0.75 : 0.5, 0.0, 0.0);
                assert_close(r->bin_confidence[b], b == 11 ? 0.75 : 0.5, 1e-15, 0.0);
        }
        kdl_calibration_result_free(r);
}

/* A certain model (p = 1 in double) lands in the last bin, and p = 0 in the first. */
static void test_bin_edges(void **state)
{
        double z[] = {800.0, 0.0, 0.0, 800.0};
        int64_t y[] = {0, 0};
        kdl_calibration_opts o = opts(2, false);
        kdl_calibration_result *r;

        (void) state;
        o.bins = 4;
        r = run(&o, z, NULL, y, 2, 2);
        assert_int_equal(r->bin_count[3], 2);
        assert_close(r->accuracy, 0.5, 0.0, 0.0);
        assert_close(r->ece, 0.5, 0.0, 0.0);
        /* class 0: p = 1 (y = 0) and p = 0 (y = 0): |1 - 1| + |1 - 0|; class 1: |0 - 0| + |0 - 1|
         */
        assert_close(r->classwise_ece, 2.0 / (2.0 * 2.0), 1e-15, 0.0);
        assert_true(isnan(r->fidelity) && isnan(r->kl));
        assert_close(r->nll, 400.0, 1e-15, 0.0);
        kdl_calibration_result_free(r);
}

/* Random data of 7 classes against the references; strided views in other blocks. */
static void test_against_reference(void **state)
{
        enum { N = 301, C = 7 };
        double *z = malloc(N * C * sizeof(double)), *zt = malloc(N * C * sizeof(double));
        double *wide = calloc(N * 2 * C, sizeof(double));
        int64_t y[N];
        kdl_calibration_opts o = opts(C, true);
        kdl_calibration_state *s = NULL;
        kdl_calibration_result *r = NULL, *r2;
        struct ref ref;

        (void) state;
        make_data(11, N, C, z, zt, y);
        o.tau = 2.5;
        r = run(&o, z, zt, y, N, 64);
        ref = reference(z, zt, y, N, C, 15, 2.5);
        assert_close(r->accuracy, ref.accuracy, 0.0, 0.0);
        assert_close(r->fidelity, ref.fidelity, 0.0, 0.0);
        assert_close(r->ece, ref.ece, 1e-12, 1e-16);
        assert_close(r->classwise_ece, ref.cw, 1e-12, 1e-16);
        assert_close(r->nll, ref.nll, 1e-12, 0.0);
        assert_close(r->kl, ref.kl, 1e-12, 0.0);
        assert_close(r->confidence, ref.conf, 1e-13, 0.0);
        assert_true(r->accuracy > 0.3 && r->accuracy < 0.95 && r->ece > 0.01);

        /* The model's logits in every other column of a wider array: the same numbers. */
        for (size_t i = 0; i < N * C; i++)
                wide[2 * i] = z[i];
        assert_int_equal(kdl_calibration_state_new(&o, &s), 0);
        for (size_t a = 0; a < N; a += 50) {
                size_t m = N - a < 50 ? N - a : 50;
                kdl_tensor tz = {
                        .ndim = 2, .shape = {m, C}, .stride = {2 * C, 2}, .data = wide + 2 * a * C};
                kdl_tensor tt = kdl_tensor_wrap(zt + a * C, 2, (size_t[]){m, C});
                kdl_calibration_block b = {.row0 = a, .z = &tz, .labels = y + a, .zt = &tt};

                assert_int_equal(kdl_calibration_accumulate(s, &b), 0);
        }
        assert_int_equal(kdl_calibration_finalize(s, &r2), 0);
        /* Other blocks, the same sums in the same order: the same bits. */
        assert_close(r2->ece, r->ece, 0.0, 0.0);
        assert_close(r2->classwise_ece, r->classwise_ece, 0.0, 0.0);
        assert_close(r2->nll, r->nll, 0.0, 0.0);
        assert_close(r2->kl, r->kl, 0.0, 0.0);
        assert_close(r2->confidence, r->confidence, 0.0, 0.0);
        kdl_calibration_result_free(r2);
        kdl_calibration_state_free(s);
        kdl_calibration_result_free(r);
        free(wide);
        free(zt);
        free(z);
}

/* The KL is the kl metric's own: the mean of a kdl_kl_state fed the same blocks, up to the
 * order of the sums. */
static void test_kl_is_the_kl_metrics(void **state)
{
        enum { N = 120, C = 5 };
        double z[N * C], zt[N * C], tau = 4.0;
        int64_t y[N];
        kdl_calibration_opts o = opts(C, true);
        kdl_calibration_result *r;
        kdl_kl_opts ko;
        kdl_kl_state *ks = NULL;
        kdl_kl_result *kr = NULL;

        (void) state;
        make_data(5, N, C, z, zt, y);
        r = run(&o, z, zt, y, N, 40);
        kdl_kl_opts_init(&ko);
        ko.c = C;
        ko.ntau = 1;
        ko.tau = &tau;
        assert_int_equal(kdl_kl_state_new(&ko, &ks), 0);
        for (size_t a = 0; a < N; a += 40) {
                kdl_tensor tt = kdl_tensor_wrap(zt + a * C, 2, (size_t[]){40, C});
                kdl_tensor ts = kdl_tensor_wrap(z + a * C, 2, (size_t[]){40, C});
                kdl_kl_block b = {.row0 = a, .zt = &tt, .zs = &ts};

                assert_int_equal(kdl_kl_accumulate(ks, &b), 0);
        }
        assert_int_equal(kdl_kl_finalize(ks, &kr), 0);
        assert_close(r->kl, kr->tau[0].v[KDL_KL_EXACT].mean, 1e-14, 0.0);
        kdl_kl_result_free(kr);
        kdl_kl_state_free(ks);
        kdl_calibration_result_free(r);
}

static void assert_same_result(const kdl_calibration_result *a, const kdl_calibration_result *b)
{
        assert_int_equal(a->n, b->n);
        assert_close(a->accuracy, b->accuracy, 0.0, 0.0);
        assert_close(a->fidelity, b->fidelity, 0.0, 0.0);
        assert_close(a->ece, b->ece, 1e-14, 1e-17);
        assert_close(a->classwise_ece, b->classwise_ece, 1e-14, 1e-17);
        assert_close(a->nll, b->nll, 1e-14, 0.0);
        assert_close(a->kl, b->kl, 1e-13, 0.0);
        assert_close(a->confidence, b->confidence, 1e-14, 0.0);
        for (size_t k = 0; k < a->bins; k++)
                assert_int_equal(a->bin_count[k], b->bin_count[k]);
}

/* Two halves merged equal one pass; merging an empty state changes nothing. */
static void test_merge_halves(void **state)
{
        enum { N = 250, C = 9 };
        double *z = malloc(N * C * sizeof(double)), *zt = malloc(N * C * sizeof(double));
        int64_t y[N];
        kdl_calibration_opts o = opts(C, true);
        kdl_calibration_state *a = NULL, *b = NULL, *e = NULL;
        kdl_calibration_result *one, *two;

        (void) state;
        make_data(23, N, C, z, zt, y);
        one = run(&o, z, zt, y, N, 33);
        assert_int_equal(kdl_calibration_state_new(&o, &a), 0);
        assert_int_equal(kdl_calibration_state_new(&o, &b), 0);
        assert_int_equal(kdl_calibration_state_new(&o, &e), 0);
        feed(a, z, zt, y, C, 0, 117, 33);
        feed(b, z, zt, y, C, 117, N, 33);
        assert_int_equal(kdl_calibration_merge(a, b), 0);
        assert_int_equal(kdl_calibration_merge(a, e), 0);
        assert_int_equal(kdl_calibration_count(b), N - 117);
        assert_int_equal(kdl_calibration_finalize(a, &two), 0);
        assert_same_result(one, two);
        kdl_calibration_result_free(two);
        /* into an empty state */
        assert_int_equal(kdl_calibration_merge(e, a), 0);
        assert_int_equal(kdl_calibration_finalize(e, &two), 0);
        assert_same_result(one, two);
        kdl_calibration_result_free(two);
        kdl_calibration_result_free(one);
        kdl_calibration_state_free(e);
        kdl_calibration_state_free(b);
        kdl_calibration_state_free(a);
        free(zt);
        free(z);
}

static void test_bad_options(void **state)
{
        kdl_calibration_opts o = opts(1, false);
        kdl_calibration_state *s = (kdl_calibration_state *) &o;

        (void) state;
        assert_int_equal(kdl_calibration_state_new(&o, &s), -KDL_ESHAPE);
        o = opts(3, false);
        o.bins = 0;
        assert_int_equal(kdl_calibration_state_new(&o, &s), -KDL_ERANGE);
        o = opts(3, true);
        o.tau = 0.0;
        assert_int_equal(kdl_calibration_state_new(&o, &s), -KDL_ERANGE);
        o.tau = NAN;
        assert_int_equal(kdl_calibration_state_new(&o, &s), -KDL_ERANGE);
        o.tau = INFINITY;
        assert_int_equal(kdl_calibration_state_new(&o, &s), -KDL_ERANGE);
        o = opts(SIZE_MAX / 2, false);
        assert_int_equal(kdl_calibration_state_new(&o, &s), -KDL_EOVERFLOW);
        assert_true(kdl_calibration_state_bytes(&o) == SIZE_MAX);
        assert_true(s == (kdl_calibration_state *) &o); /* not clobbered */
        /* 3 B + 2 C B + 2 C doubles: 8.2 MB at C = 32,000 */
        o = opts(32000, true);
        assert_true(kdl_calibration_state_bytes(&o) >= (45 + 960000 + 64000) * sizeof(double));
        assert_true(kdl_calibration_state_bytes(&o) < (45 + 960000 + 64000 + 64) * sizeof(double));
}

/* Every bad block is refused and leaves the state as it was. */
static void test_bad_blocks(void **state)
{
        double z[] = {1.0, 2.0, 3.0, 0.0, 1.0, 0.5}, bad[6];
        int64_t y[] = {2, 0}, yok[] = {2, 1}, yneg[] = {2, -1}, ybig[] = {3, 0};
        kdl_tensor tz = kdl_tensor_wrap(z, 2, (size_t[]){2, 3});
        kdl_tensor t2 = kdl_tensor_wrap(z, 2, (size_t[]){3, 2});
        kdl_tensor tb = kdl_tensor_wrap(bad, 2, (size_t[]){2, 3});
        kdl_tensor t1 = kdl_tensor_wrap(z, 1, (size_t[]){6});
        kdl_calibration_opts o = opts(3, false), ot = opts(3, true);
        kdl_calibration_state *s = NULL, *st = NULL;
        kdl_calibration_result *r = NULL;
        kdl_calibration_block b = {.z = &tz, .labels = y};

        (void) state;
        assert_int_equal(kdl_calibration_state_new(&o, &s), 0);
        assert_int_equal(kdl_calibration_state_new(&ot, &st), 0);
        assert_int_equal(kdl_calibration_finalize(s, &r), -KDL_EMISSING);
        assert_null(r);
        assert_int_equal(
                kdl_calibration_accumulate(s, &(kdl_calibration_block){.z = &t2, .labels = y}),
                -KDL_ESHAPE);
        assert_int_equal(
                kdl_calibration_accumulate(s, &(kdl_calibration_block){.z = &t1, .labels = y}),
                -KDL_ESHAPE);
        assert_int_equal(kdl_calibration_accumulate(s, &(kdl_calibration_block){.labels = y}),
                         -KDL_ESHAPE);
        b.zt = &tz; /* not announced */
        assert_int_equal(kdl_calibration_accumulate(s, &b), -KDL_ESHAPE);
        b.zt = NULL; /* announced, missing */
        assert_int_equal(kdl_calibration_accumulate(st, &b), -KDL_ESHAPE);
        b.zt = &t2;
        assert_int_equal(kdl_calibration_accumulate(st, &b), -KDL_ESHAPE);
        b = (kdl_calibration_block){.z = &tz, .labels = yneg, .row0 = 40};
        assert_int_equal(kdl_calibration_accumulate(s, &b), -KDL_ERANGE);
        assert_non_null(strstr(kdl_errmsg(), "label -1 at sample 41"));
        b.labels = ybig;
        assert_int_equal(kdl_calibration_accumulate(s, &b), -KDL_ERANGE);
        memcpy(bad, z, sizeof(bad));
        bad[4] = NAN;
        b = (kdl_calibration_block){.z = &tb, .labels = y, .samples = (size_t[]){7, 9}};
        assert_int_equal(kdl_calibration_accumulate(s, &b), -KDL_ENONFINITE);
        assert_non_null(strstr(kdl_errmsg(), "logits: non-finite value at sample 9"));
        b = (kdl_calibration_block){.z = &tz, .labels = y, .zt = &tb};
        assert_int_equal(kdl_calibration_accumulate(st, &b), -KDL_ENONFINITE);
        assert_non_null(strstr(kdl_errmsg(), "teacher logits"));
        bad[4] = INFINITY;
        b = (kdl_calibration_block){.z = &tb, .labels = y};
        assert_int_equal(kdl_calibration_accumulate(s, &b), -KDL_ENONFINITE);
        assert_int_equal(kdl_calibration_count(s), 0);
        assert_int_equal(kdl_calibration_count(st), 0);
        /* an empty block is no sample */
        t2 = kdl_tensor_wrap(z, 2, (size_t[]){0, 3});
        assert_int_equal(kdl_calibration_accumulate(s, &(kdl_calibration_block){.z = &t2}), 0);
        assert_int_equal(kdl_calibration_finalize(s, &r), -KDL_EMISSING);
        /* still usable after every refusal */
        assert_int_equal(
                kdl_calibration_accumulate(s, &(kdl_calibration_block){.z = &tz, .labels = yok}),
                0);
        assert_int_equal(kdl_calibration_finalize(s, &r), 0);
        assert_int_equal(r->n, 2);
        assert_close(r->accuracy, 1.0, 0.0, 0.0);
        kdl_calibration_result_free(r);
        kdl_calibration_state_free(st);
        kdl_calibration_state_free(s);
}

/* States of other options do not merge, and the target is left as it was. */
static void test_merge_mismatch(void **state)
{
        double z[] = {1.0, 2.0, 3.0, 0.0, 1.0, 0.5};
        int64_t y[] = {2, 1};
        kdl_calibration_opts o = opts(3, true), other[4];
        kdl_calibration_state *s = NULL;
        kdl_calibration_result *r;

        (void) state;
        for (int k = 0; k < 4; k++)
                other[k] = o;
        other[0].c = 4;
        other[1].bins = 10;
        other[2].teacher = false;
        other[3].tau = 2.0;
        assert_int_equal(kdl_calibration_state_new(&o, &s), 0);
        feed(s, z, z, y, 3, 0, 2, 2);
        for (int k = 0; k < 4; k++) {
                kdl_calibration_state *x = NULL;

                assert_int_equal(kdl_calibration_state_new(&other[k], &x), 0);
                feed(x, (double[]){1, 2, 3, 4, 0, 0, 0, 0}, other[k].teacher ? z : NULL,
                     (int64_t[]){0, 0}, other[k].c, 0, 1, 1);
                assert_int_equal(kdl_calibration_merge(s, x), -KDL_EMISMATCH);
                assert_int_equal(kdl_calibration_merge(x, s), -KDL_EMISMATCH);
                kdl_calibration_state_free(x);
        }
        assert_int_equal(kdl_calibration_count(s), 2);
        assert_int_equal(kdl_calibration_finalize(s, &r), 0);
        assert_close(r->accuracy, 1.0, 0.0, 0.0);
        assert_close(r->fidelity, 1.0, 0.0, 0.0);
        assert_close(r->kl, 0.0, 0.0, 0.0);
        kdl_calibration_result_free(r);
        kdl_calibration_state_free(s);
}

/* Every allocation failure reaches the caller as -ENOMEM. */
static void test_allocation_failures(void **state)
{
        enum { N = 40, C = 4 };
        double z[N * C], zt[N * C];
        int64_t y[N];
        kdl_calibration_opts o = opts(C, true);
        bool fired = true;
        long k;

        (void) state;
        make_data(3, N, C, z, zt, y);
        for (k = 0; fired; k++) {
                kdl_calibration_state *s = NULL, *t = NULL;
                kdl_calibration_result *r = NULL;
                kdl_tensor tz = kdl_tensor_wrap(z, 2, (size_t[]){N, C});
                kdl_tensor tt = kdl_tensor_wrap(zt, 2, (size_t[]){N, C});
                kdl_calibration_block b = {.z = &tz, .zt = &tt, .labels = y};
                int err;

                kdl__alloc_fail_after(k);
                err = kdl_calibration_state_new(&o, &s);
                err = err ?: kdl_calibration_state_new(&o, &t);
                err = err ?: kdl_calibration_accumulate(t, &b);
                err = err ?: kdl_calibration_merge(s, t);
                err = err ?: kdl_calibration_finalize(s, &r);
                fired = kdl__alloc_fail_after(-1) < 0;
                assert_int_equal(err, fired ? -ENOMEM : 0);
                assert_true(fired || (r && r->n == N));
                kdl_calibration_result_free(r);
                kdl_calibration_state_free(t);
                kdl_calibration_state_free(s);
        }
        assert_true(k > 6);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_hand_counted),
                cmocka_unit_test(test_perfectly_calibrated),
                cmocka_unit_test(test_bin_edges),
                cmocka_unit_test(test_against_reference),
                cmocka_unit_test(test_kl_is_the_kl_metrics),
                cmocka_unit_test(test_merge_halves),
                cmocka_unit_test(test_bad_options),
                cmocka_unit_test(test_bad_blocks),
                cmocka_unit_test(test_merge_mismatch),
                cmocka_unit_test(test_allocation_failures),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
