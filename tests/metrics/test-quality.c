/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/error.h"
#include "metrics/base/tensor.h"
#include "metrics/quality.h"

/* Three classes of 6, 7 and 5 samples in the plane, interleaved. */
#define NS 18
#define NC 3

struct data {
        double x[NS * 2];
        int64_t y[NS];
};

static void make_data(struct data *d, double spread, uint64_t seed)
{
        static const double centre[NC][2] = {{3.0, 0.4}, {-1.0, 2.0}, {0.5, -2.5}};
        static const int64_t lab[NS] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 0, 1, 1, 2};
        kdl_test_rng g = {seed};

        for (size_t i = 0; i < NS; i++) {
                d->y[i] = lab[i];
                for (size_t j = 0; j < 2; j++)
                        d->x[i * 2 + j] = centre[lab[i]][j] + spread * kdl_test_normal(&g);
        }
}

/* Eigenvalues (decreasing) of the symmetric 2×2 [[a, b], [b, c]]. */
static void eig2(double a, double b, double c, double *l1, double *l2)
{
        double m = 0.5 * (a + c), r = sqrt(0.25 * (a - c) * (a - c) + b * b);

        *l1 = m + r;
        *l2 = m - r > 0.0 ? m - r : 0.0;
}

/*
 * Independent reference of docs/layers.md#knowledge-quality, docs/layers.md for D = 2: cosines and
 * distances straight from the coordinates, class spectra, effective rank and
 * NC1 in closed form (Σ_B is invertible for three generic class means).  The
 * within-class mean of variant code is over the whole block, diagonal
 * included; of the others over the pairs a < b.
 */
static void naive(const struct data *d, double population, enum kdl_quality_variant variant,
                  kdl_quality *q)
{
        const int per_class = variant == KDL_QUALITY_PER_CLASS;
        size_t cnt[NC] = {0}, ncols = 0, k[NC], ksum = 0;
        double mu[NC][2] = {{0}}, mg[2] = {0}, intra = 0, inter = 0, mi = 0, dmin = 0, nrm = 0;
        double lam[NC][2], hsum = 0, sw[3] = {0}, sb[3] = {0}, cov[3] = {0};
        size_t correct = 0;

        for (size_t i = 0; i < NS; i++) {
                cnt[d->y[i]]++;
                for (size_t j = 0; j < 2; j++) {
                        mu[d->y[i]][j] += d->x[i * 2 + j];
                        mg[j] += d->x[i * 2 + j] / NS;
                }
        }
        for (size_t c = 0; c < NC; c++) {
                for (size_t j = 0; j < 2; j++)
                        mu[c][j] /= (double) cnt[c];
                ncols = cnt[c] > ncols ? cnt[c] : ncols;
        }
        for (size_t c = 0; c < NC; c++) {
                double sum = 0, block = 0, mn = INFINITY, dm = INFINITY, ns = 0, s[3] = {0};
                size_t pairs = 0;

                for (size_t a = 0; a < NS; a++) {
                        const double *xa = d->x + a * 2;

                        if ((size_t) d->y[a] != c)
                                continue;
                        ns += hypot(xa[0], xa[1]);
                        s[0] += (xa[0] - mu[c][0]) * (xa[0] - mu[c][0]);
                        s[1] += (xa[0] - mu[c][0]) * (xa[1] - mu[c][1]);
                        s[2] += (xa[1] - mu[c][1]) * (xa[1] - mu[c][1]);
                        for (size_t b = 0; b < NS; b++) {
                                const double *xb = d->x + b * 2;
                                double cs = fabs(xa[0] * xb[0] + xa[1] * xb[1]) /
                                            (hypot(xa[0], xa[1]) * hypot(xb[0], xb[1]));

                                if ((size_t) d->y[b] == c)
                                        block += cs;
                                if ((size_t) d->y[b] == c && b > a) {
                                        sum += cs;
                                        pairs++;
                                        mn = fmin(mn, cs);
                                } else if ((size_t) d->y[b] != c) {
                                        dm = fmin(dm, hypot(xa[0] - xb[0], xa[1] - xb[1]));
                                        inter += cs / ((double) cnt[c] * (double) cnt[d->y[b]]) /
                                                 (NC * (NC - 1));
                                }
                        }
                }
                intra += (variant == KDL_QUALITY_CODE ? block / ((double) cnt[c] * (double) cnt[c])
                                                      : sum / (double) pairs) /
                         NC;
                mi += mn / NC;
                dmin += dm / NC;
                nrm += ns / (double) cnt[c] / NC;
                eig2(s[0], s[1], s[2], &lam[c][0], &lam[c][1]);
                {
                        double t = lam[c][0] + lam[c][1], cum = 0;
                        size_t n = 0;

                        lam[c][0] /= t;
                        lam[c][1] /= t;
                        while (cum < 0.95 && n < ncols - 1) {
                                cum += n < 2 ? lam[c][n] : 0.0;
                                n++;
                        }
                        k[c] = n;
                        ksum += n;
                }
        }
        for (size_t c = 0; c < NC; c++) {
                size_t kt = per_class ? k[c] : (ksum < ncols ? ksum : ncols);
                double v[64], t = 0, h = 0;

                for (size_t j = 0; j < kt; j++) {
                        v[j] = j < 2 && lam[c][j] > 0 ? lam[c][j] : 1e-127;
                        t += v[j];
                }
                for (size_t j = 0; j < kt; j++)
                        h -= v[j] / t * log(v[j] / t);
                if (per_class)
                        h = k[c] > 1 ? h / log((double) k[c]) : 0.0;
                hsum += h / NC;
        }
        q->s = intra - inter;
        q->i = (1 - mi) * hsum / (per_class ? 1.0 : log(5.0));
        q->e = 2 * dmin / nrm * pow(population / M_PI, 1.0 / 2.0);
        q->q = q->s + sqrt(q->i * q->e);
        q->k_sum = ksum;

        /* NCM, NC1 and effective rank. */
        for (size_t a = 0; a < NS; a++) {
                const double *xa = d->x + a * 2;
                size_t best = 0;
                double bd = INFINITY;

                for (size_t c = 0; c < NC; c++) {
                        double dd = hypot(xa[0] - mu[c][0], xa[1] - mu[c][1]);

                        if (dd < bd) {
                                bd = dd;
                                best = c;
                        }
                }
                correct += best == (size_t) d->y[a];
                sw[0] += (xa[0] - mu[d->y[a]][0]) * (xa[0] - mu[d->y[a]][0]) / NS;
                sw[1] += (xa[0] - mu[d->y[a]][0]) * (xa[1] - mu[d->y[a]][1]) / NS;
                sw[2] += (xa[1] - mu[d->y[a]][1]) * (xa[1] - mu[d->y[a]][1]) / NS;
                cov[0] += (xa[0] - mg[0]) * (xa[0] - mg[0]);
                cov[1] += (xa[0] - mg[0]) * (xa[1] - mg[1]);
                cov[2] += (xa[1] - mg[1]) * (xa[1] - mg[1]);
        }
        for (size_t c = 0; c < NC; c++) {
                sb[0] += (mu[c][0] - mg[0]) * (mu[c][0] - mg[0]) / NC;
                sb[1] += (mu[c][0] - mg[0]) * (mu[c][1] - mg[1]) / NC;
                sb[2] += (mu[c][1] - mg[1]) * (mu[c][1] - mg[1]) / NC;
        }
        {
                double det = sb[0] * sb[2] - sb[1] * sb[1];
                double i0 = sb[2] / det, i1 = -sb[1] / det, i2 = sb[0] / det;
                double l1, l2, p1, p2;

                q->nc1 = (sw[0] * i0 + 2 * sw[1] * i1 + sw[2] * i2) / NC;
                eig2(cov[0], cov[1], cov[2], &l1, &l2);
                p1 = l1 / (l1 + l2);
                p2 = l2 / (l1 + l2);
                q->effective_rank = exp(-p1 * log(p1) - p2 * log(p2));
        }
        q->ncm_accuracy = (double) correct / NS;
}

static void compute(const struct data *d, const kdl_quality_opts *o, kdl_quality *q)
{
        kdl_tensor t = kdl_tensor_wrap((double *) d->x, 2, (size_t[]){NS, 2});

        assert_int_equal(kdl_quality_compute(&t, d->y, &t, d->y, NC, o, q), 0);
}

static void test_matches_naive_reference(void **state)
{
        struct data d;
        kdl_quality q, ref;
        kdl_quality_opts o;

        (void) state;
        kdl_quality_opts_init(&o);
        o.population = 50000;
        make_data(&d, 0.9, 5);
        compute(&d, &o, &q);
        naive(&d, 50000, KDL_QUALITY_CODE, &ref);
        assert_close(q.s, ref.s, 1e-12, 1e-14);
        assert_close(q.i, ref.i, 1e-12, 1e-14);
        assert_close(q.e, ref.e, 1e-12, 0.0);
        assert_close(q.q, ref.q, 1e-12, 0.0);
        assert_int_equal(q.k_sum, ref.k_sum);
        assert_close(q.ncm_accuracy, ref.ncm_accuracy, 0.0, 0.0);
        assert_close(q.nc1, ref.nc1, 1e-11, 0.0);
        assert_close(q.effective_rank, ref.effective_rank, 1e-12, 0.0);
        assert_close(q.packing, sqrt(50000 / M_PI), 1e-14, 0.0);
        assert_int_equal(q.r, 2);
        assert_int_equal(q.nclasses, NC);
        assert_int_equal(q.nspectra, NC);
        assert_int_equal(q.n, NS);
        assert_close(q.entropy_norm, log(5.0), 1e-15, 0.0);
        assert_true(q.i > 0.01 && q.s > -1.0 && q.s < 1.0);

        /* The other variants: strict pairs, and per-class normalised entropies. */
        for (int v = KDL_QUALITY_PAIRS; v < KDL_QUALITY_VARIANT_COUNT_; v++) {
                o.variant = (enum kdl_quality_variant) v;
                compute(&d, &o, &q);
                naive(&d, 50000, o.variant, &ref);
                assert_close(q.s, ref.s, 1e-12, 1e-14);
                assert_close(q.i, ref.i, 1e-12, 1e-14);
                assert_close(q.q, ref.q, 1e-12, 0.0);
                assert_close(q.entropy_norm, v == KDL_QUALITY_PER_CLASS ? 1.0 : log(5.0), 1e-15,
                             0.0);
        }
}

/* The authors' within-class mean covers the whole block, diagonal of ones
 * included: per class intra_pairs + (1 - intra_pairs) / n_c, so S and Q of
 * code exceed those of pairs by the mean of that over the classes, and
 * nothing else moves. */
static void test_code_variant_averages_the_whole_block(void **state)
{
        struct data d;
        kdl_quality code, pairs;
        kdl_quality_opts o;
        double want = 0.0;

        (void) state;
        kdl_quality_opts_init(&o);
        make_data(&d, 1.1, 13);
        compute(&d, &o, &code);
        o.variant = KDL_QUALITY_PAIRS;
        compute(&d, &o, &pairs);
        for (size_t c = 0; c < NC; c++) {
                double sum = 0.0, nc = 0.0;
                size_t np = 0;

                for (size_t a = 0; a < NS; a++)
                        nc += (size_t) d.y[a] == c;
                for (size_t a = 0; a < NS; a++)
                        for (size_t b = a + 1; b < NS; b++) {
                                const double *xa = d.x + a * 2, *xb = d.x + b * 2;

                                if ((size_t) d.y[a] != c || (size_t) d.y[b] != c)
                                        continue;
                                sum += fabs(xa[0] * xb[0] + xa[1] * xb[1]) /
                                       (hypot(xa[0], xa[1]) * hypot(xb[0], xb[1]));
                                np++;
                        }
                want += (1.0 - sum / (double) np) / nc / NC;
        }
        assert_true(want > 1e-3);
        assert_close(code.intra - pairs.intra, want, 1e-12, 0.0);
        assert_close(code.s - pairs.s, want, 1e-12, 0.0);
        assert_close(code.q - pairs.q, want, 1e-12, 0.0);
        assert_close(code.i, pairs.i, 0.0, 0.0);
        assert_close(code.e, pairs.e, 0.0, 0.0);
        assert_close(code.inter, pairs.inter, 0.0, 0.0);
        assert_close(code.min_intra, pairs.min_intra, 0.0, 0.0);
}

static void test_scale_invariance(void **state)
{
        struct data d, s;
        kdl_quality a, b;
        kdl_quality_opts o;

        (void) state;
        kdl_quality_opts_init(&o);
        o.population = 1000;
        make_data(&d, 1.3, 6);
        s = d;
        for (size_t i = 0; i < NS * 2; i++)
                s.x[i] *= 7.3;
        for (int v = 0; v < KDL_QUALITY_VARIANT_COUNT_; v++) {
                o.variant = (enum kdl_quality_variant) v;
                compute(&d, &o, &a);
                compute(&s, &o, &b);
                assert_close(b.q, a.q, 1e-12, 0.0);
                assert_close(b.s, a.s, 1e-12, 1e-15);
                assert_close(b.i, a.i, 1e-12, 1e-15);
                assert_close(b.e, a.e, 1e-12, 0.0);
                assert_close(b.nc1, a.nc1, 1e-10, 0.0);
                assert_close(b.effective_rank, a.effective_rank, 1e-12, 0.0);
                assert_close(b.norm, 7.3 * a.norm, 1e-12, 0.0);
        }
}

static void test_collapse_sends_information_to_zero(void **state)
{
        struct data d;
        kdl_quality q;

        (void) state;
        make_data(&d, 1e-7, 7);
        compute(&d, NULL, &q);
        /* Within-class spread -> 0: min |cos| -> 1, so I -> 0 and Q -> S. */
        assert_true(q.min_intra > 1.0 - 1e-12);
        assert_true(q.i < 1e-10);
        assert_close(q.q, q.s, 0.0, 1e-4);
        assert_close(q.ncm_accuracy, 1.0, 0.0, 0.0);
        assert_true(q.nc1 < 1e-12);
        assert_true(q.s > 0.3);
}

static void test_zero_padding_keeps_geometry(void **state)
{
        struct data d;
        double wide[NS * 25] = {0};
        kdl_tensor t = kdl_tensor_wrap(wide, 2, (size_t[]){NS, 25});
        kdl_quality a, b;

        (void) state;
        make_data(&d, 0.7, 8);
        for (size_t i = 0; i < NS; i++) {
                wide[i * 25 + 3] = d.x[i * 2];
                wide[i * 25 + 17] = d.x[i * 2 + 1];
        }
        compute(&d, NULL, &a);
        /* D = 25 > n = 18: the effective rank goes through the Gram path. */
        assert_int_equal(kdl_quality_compute(&t, d.y, &t, d.y, NC, NULL, &b), 0);
        assert_int_equal(b.r, NS);
        assert_close(b.s, a.s, 1e-12, 1e-15);
        assert_close(b.i, a.i, 1e-12, 1e-15);
        assert_close(b.dmin, a.dmin, 1e-12, 0.0);
        assert_close(b.packing, pow(NS / M_PI, 1.0 / NS), 1e-14, 0.0);
        assert_close(b.nc1, a.nc1, 1e-9, 0.0);
        assert_close(b.ncm_accuracy, a.ncm_accuracy, 0.0, 0.0);
        assert_close(b.effective_rank, a.effective_rank, 1e-9, 0.0);
}

static void test_zero_vector_is_guarded(void **state)
{
        struct data d;
        kdl_quality q;

        (void) state;
        make_data(&d, 0.5, 9);
        d.x[4] = d.x[5] = 0.0; /* row 2, class 2 */
        compute(&d, NULL, &q);
        assert_int_equal(q.nzero, 1);
        assert_true(isfinite(q.q) && isfinite(q.s) && isfinite(q.i) && isfinite(q.e));
        /* Its cosines count as 0, so its class's smallest |cos| is 0. */
        assert_true(q.min_intra < 2.0 / 3.0 + 1e-12);
}

static void test_missing_class_is_left_out(void **state)
{
        struct data d;
        kdl_quality q;
        kdl_tensor t;

        (void) state;
        make_data(&d, 0.5, 10);
        t = kdl_tensor_wrap(d.x, 2, (size_t[]){NS, 2});
        /* Declare 5 classes: 3 and 4 have no samples. */
        assert_int_equal(kdl_quality_compute(&t, d.y, &t, d.y, 5, NULL, &q), 0);
        assert_int_equal(q.nclasses, 3);
        assert_int_equal(q.nspectra, 3);
        assert_true(isfinite(q.q));
}

/* Labels of a few classes out of a vocabulary: the same result as with the
 * classes numbered 0..2, in memory that does not grow as C² (200,000² doubles
 * would be 320 GB) nor as C·D. */
static void test_few_classes_of_a_vocabulary(void **state)
{
        enum { VOCAB = 200000 };
        static const int64_t id[NC] = {7, 100000, VOCAB - 1};
        struct data d;
        int64_t y[NS];
        kdl_quality a, b;
        kdl_tensor t;

        (void) state;
        make_data(&d, 0.8, 12);
        for (size_t i = 0; i < NS; i++)
                y[i] = id[d.y[i]];
        t = kdl_tensor_wrap(d.x, 2, (size_t[]){NS, 2});
        for (int v = 0; v < KDL_QUALITY_VARIANT_COUNT_; v++) {
                kdl_quality_opts o;

                kdl_quality_opts_init(&o);
                o.variant = (enum kdl_quality_variant) v;
                assert_int_equal(kdl_quality_compute(&t, d.y, &t, d.y, NC, &o, &a), 0);
                assert_int_equal(kdl_quality_compute(&t, y, &t, y, VOCAB, &o, &b), 0);
                /* The order of the classes is kept, so every sum is the same. */
                assert_true(memcmp(&a, &b, sizeof(a)) == 0);
                assert_int_equal(b.nclasses, NC);
        }
}

/* Q's design range: I and E in [0, 1], enough samples per class in both subsamples. */
static void test_range(void **state)
{
        struct data d;
        kdl_quality q, t;

        (void) state;
        make_data(&d, 0.8, 14);
        compute(&d, NULL, &q);
        /* Classes of 6, 7 and 5 rows. */
        assert_int_equal(q.class_rows_min, 5);
        assert_int_equal(q.spectra_rows_min, 5);
        assert_int_equal(kdl_quality_range(&q, KDL_QUALITY_MIN_PER_CLASS) & KDL_QUALITY_FEW,
                         KDL_QUALITY_FEW);
        t = q;
        t.i = 0.5;
        t.e = 0.25;
        assert_int_equal(kdl_quality_range(&t, 5), 0);
        assert_int_equal(kdl_quality_range(&t, 6), KDL_QUALITY_FEW);
        t.spectra_rows_min = 4;
        assert_int_equal(kdl_quality_range(&t, 5), KDL_QUALITY_FEW);
        t.spectra_rows_min = 5;
        t.i = 1.36;
        assert_int_equal(kdl_quality_range(&t, 5), KDL_QUALITY_I_OUT);
        t.i = 1.0;
        t.e = NAN;
        assert_int_equal(kdl_quality_range(&t, 5), KDL_QUALITY_E_OUT);
        t.e = -1e-3;
        t.i = INFINITY;
        assert_int_equal(kdl_quality_range(&t, 5), KDL_QUALITY_I_OUT | KDL_QUALITY_E_OUT);
        t.e = 0.0;
        t.i = 0.0;
        assert_int_equal(kdl_quality_range(&t, 5), 0);
}

static void test_error_paths(void **state)
{
        struct data d;
        kdl_quality q = {.q = -7.0};
        kdl_quality_opts bad;
        kdl_tensor t, t3;
        double w3[NS * 3] = {0};
        int64_t one[NS] = {0};
        enum kdl_quality_variant v = KDL_QUALITY_CODE;

        (void) state;
        kdl_quality_opts_init(&bad);
        bad.var_threshold = 1.5;
        make_data(&d, 0.5, 11);
        t = kdl_tensor_wrap(d.x, 2, (size_t[]){NS, 2});
        t3 = kdl_tensor_wrap(w3, 2, (size_t[]){NS, 3});
        assert_int_equal(kdl_quality_compute(&t, d.y, &t, d.y, 2, NULL, &q), -KDL_ERANGE);
        assert_int_equal(kdl_quality_compute(&t, d.y, &t3, d.y, NC, NULL, &q), -KDL_ESHAPE);
        assert_int_equal(kdl_quality_compute(&t, one, &t, one, NC, NULL, &q), -KDL_ESHAPE);
        assert_non_null(strstr(kdl_errmsg(), "two classes"));
        assert_int_equal(kdl_quality_compute(&t, d.y, &t, d.y, NC, &bad, &q), -KDL_ERANGE);
        d.x[7] = NAN;
        assert_int_equal(kdl_quality_compute(&t, d.y, &t, d.y, NC, NULL, &q), -KDL_ENONFINITE);
        assert_close(q.q, -7.0, 0.0, 0.0);
        assert_int_equal(kdl_quality_variant_parse("per-class", &v), 0);
        assert_int_equal(v, KDL_QUALITY_PER_CLASS);
        assert_int_equal(kdl_quality_variant_parse("pairs", &v), 0);
        assert_int_equal(v, KDL_QUALITY_PAIRS);
        assert_string_equal(kdl_quality_variant_name(KDL_QUALITY_PAIRS), "pairs");
        assert_int_equal(kdl_quality_variant_parse("paper", &v), -KDL_EUSAGE);
        assert_string_equal(kdl_quality_variant_name(KDL_QUALITY_CODE), "code");
}

/* The metric contract, as far as a one-shot metric has it (no state, so no
 * finalize or merge): kdl_quality_opts_init() is the defaults and a NULL
 * pointer means them; a zero field is a value, not the default; no rows is
 * an error that leaves @ret as it was. */
static void test_contract(void **state)
{
        struct data d;
        kdl_quality a, b = {.q = -7.0};
        kdl_quality_opts o;
        kdl_tensor t, empty;

        (void) state;
        kdl_quality_opts_init(&o);
        assert_int_equal(o.variant, KDL_QUALITY_CODE);
        assert_close(o.var_threshold, 0.95, 0.0, 0.0);
        assert_close(o.population, 0.0, 0.0, 0.0);
        assert_close(o.eps, 1e-12, 0.0, 0.0);
        assert_close(o.rank_rtol, 1e-12, 0.0, 0.0);
        make_data(&d, 0.6, 12);
        t = kdl_tensor_wrap(d.x, 2, (size_t[]){NS, 2});
        compute(&d, NULL, &a);
        compute(&d, &o, &b);
        assert_close(b.q, a.q, 0.0, 0.0);
        assert_close(b.nc1, a.nc1, 0.0, 0.0);
        assert_close(b.packing, a.packing, 0.0, 0.0);
        assert_int_equal(b.k_sum, a.k_sum);

        o.var_threshold = 0.0;
        b.q = -7.0;
        assert_int_equal(kdl_quality_compute(&t, d.y, &t, d.y, NC, &o, &b), -KDL_ERANGE);
        o.var_threshold = 0.95;
        o.eps = 0.0;
        assert_int_equal(kdl_quality_compute(&t, d.y, &t, d.y, NC, &o, &b), -KDL_ERANGE);
        empty = kdl_tensor_wrap(d.x, 2, (size_t[]){0, 2});
        assert_int_equal(kdl_quality_compute(&empty, d.y, &empty, d.y, NC, NULL, &b), -KDL_ESHAPE);
        assert_close(b.q, -7.0, 0.0, 0.0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_matches_naive_reference),
                cmocka_unit_test(test_code_variant_averages_the_whole_block),
                cmocka_unit_test(test_scale_invariance),
                cmocka_unit_test(test_collapse_sends_information_to_zero),
                cmocka_unit_test(test_zero_padding_keeps_geometry),
                cmocka_unit_test(test_zero_vector_is_guarded),
                cmocka_unit_test(test_missing_class_is_left_out),
                cmocka_unit_test(test_few_classes_of_a_vocabulary),
                cmocka_unit_test(test_range),
                cmocka_unit_test(test_error_paths),
                cmocka_unit_test(test_contract),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
