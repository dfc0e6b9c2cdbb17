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
#include "metrics/sample.h"

/* ---- helpers ------------------------------------------------------------------- */

/* Sample ids 0..NIDS-1: ids + r0 are the ids of rows r0... */
#define NIDS 4096
static size_t ids[NIDS];

static int setup_ids(void **state)
{
        (void) state;
        for (size_t i = 0; i < NIDS; i++)
                ids[i] = i;
        return 0;
}

/* kdl_cka_opts_init()'s options with these block rows, replicates and seed. */
static kdl_cka_opts opts(size_t block, size_t bootstrap, uint64_t seed)
{
        kdl_cka_opts o;

        kdl_cka_opts_init(&o);
        o.block_rows = block;
        o.bootstrap = bootstrap;
        o.seed = seed;
        return o;
}

static double *randn(kdl_test_rng *g, size_t n, double scale, double offset)
{
        double *d = malloc(n * sizeof(double));

        assert_non_null(d);
        for (size_t i = 0; i < n; i++)
                d[i] = scale * kdl_test_normal(g) + offset;
        return d;
}

static kdl_tensor wrap(double *d, size_t rows, size_t cols)
{
        return kdl_tensor_wrap(d, 2, (size_t[]){rows, cols});
}

/* Rows [r0, r1) of each layer, as views. */
static void view_rows(const kdl_tensor *layers, size_t l, size_t r0, size_t r1, kdl_tensor *out)
{
        for (size_t i = 0; i < l; i++)
                out[i] = kdl_tensor_view_rows(&layers[i], r0, r1);
}

static kdl_cka_matrix *stream_prec(const kdl_tensor *layers, size_t l, size_t block,
                                   size_t call_rows, size_t bootstrap, uint64_t seed,
                                   enum kdl_cka_precision precision)
{
        size_t widths[8], n = layers[0].shape[0];
        kdl_cka_opts o = opts(block, bootstrap, seed);
        kdl_cka_state *s = NULL;
        kdl_cka_matrix *m = NULL;
        kdl_tensor v[8];

        assert_true(n <= NIDS);
        o.precision = precision;
        for (size_t i = 0; i < l; i++)
                widths[i] = layers[i].shape[1];
        assert_int_equal(kdl_cka_state_new(l, widths, &o, &s), 0);
        for (size_t r0 = 0; r0 < n; r0 += call_rows) {
                size_t r1 = r0 + call_rows < n ? r0 + call_rows : n;

                view_rows(layers, l, r0, r1, v);
                assert_int_equal(kdl_cka_accumulate(s, v, ids + r0), 0);
        }
        assert_int_equal(kdl_cka_finalize(s, &m), 0);
        kdl_cka_state_free(s);
        return m;
}

static kdl_cka_matrix *stream(const kdl_tensor *layers, size_t l, size_t block, size_t call_rows,
                              size_t bootstrap, uint64_t seed)
{
        return stream_prec(layers, l, block, call_rows, bootstrap, seed, KDL_CKA_PRECISION_DOUBLE);
}

/* Naive reference, independent of the library's algebra: explicit Gram
 * matrices, biased HSIC as tr(K H L H) with an explicit H, unbiased HSIC by
 * Song et al.'s trace formula (docs/cka.md#debiased-linear-cka), RBF bandwidth from a full sort. */
static int cmp_d(const void *a, const void *b)
{
        double x = *(const double *) a, y = *(const double *) b;

        return x < y ? -1 : x > y;
}

static double *naive_kernel(const kdl_tensor *x, int rbf, double theta)
{
        size_t n = x->shape[0], d = x->shape[1];
        double *k = calloc(n * n, sizeof(double));

        assert_non_null(k);
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < n; j++)
                        for (size_t c = 0; c < d; c++) {
                                double a = KDL_AT2(x, i, c), b = KDL_AT2(x, j, c);

                                k[i * n + j] += rbf ? (a - b) * (a - b) : a * b;
                        }
        if (rbf) {
                double *s = malloc(n * n * sizeof(double)), med, s2;

                assert_non_null(s);
                memcpy(s, k, n * n * sizeof(double));
                qsort(s, n * n, sizeof(double), cmp_d);
                med = (n * n) % 2 ? s[n * n / 2] : 0.5 * (s[n * n / 2 - 1] + s[n * n / 2]);
                s2 = theta * theta * med;
                for (size_t i = 0; i < n * n; i++)
                        k[i] = exp(-k[i] / (2.0 * s2));
                free(s);
        }
        return k;
}

static double hsic_biased(const double *k, const double *l, size_t n)
{
        double *hk = calloc(n * n, sizeof(double)), *hl = calloc(n * n, sizeof(double));
        double *khh = calloc(n * n, sizeof(double)), tr = 0.0;

        /* H K, then (H K) H, written out with H_ij = [i=j] - 1/n. */
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < n; j++)
                        for (size_t t = 0; t < n; t++) {
                                double h = (i == t) - 1.0 / (double) n;

                                hk[i * n + j] += h * k[t * n + j];
                                hl[i * n + j] += h * l[t * n + j];
                        }
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < n; j++)
                        for (size_t t = 0; t < n; t++)
                                khh[i * n + j] += hk[i * n + t] * ((t == j) - 1.0 / (double) n);
        /* tr(HKH · HL) = tr(K H L H). */
        for (size_t i = 0; i < n; i++)
                for (size_t t = 0; t < n; t++)
                        tr += khh[i * n + t] * hl[t * n + i];
        free(khh);
        free(hl);
        free(hk);
        return tr / ((double) (n - 1) * (double) (n - 1));
}

static double hsic_unbiased(const double *k, const double *l, size_t n)
{
        double trkl = 0.0, sk = 0.0, sl = 0.0, kl1 = 0.0, dn = (double) n;

        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < n; j++) {
                        double kij = i == j ? 0.0 : k[i * n + j];
                        double lij = i == j ? 0.0 : l[i * n + j];

                        trkl += kij * lij;
                        sk += kij;
                        sl += lij;
                }
        /* 1ᵀ K̃ L̃ 1 = Σ_j (Σ_i K̃_ij)(Σ_t L̃_jt). */
        for (size_t j = 0; j < n; j++) {
                double ck = 0.0, rl = 0.0;

                for (size_t i = 0; i < n; i++)
                        ck += i == j ? 0.0 : k[i * n + j];
                for (size_t t = 0; t < n; t++)
                        rl += t == j ? 0.0 : l[j * n + t];
                kl1 += ck * rl;
        }
        return (trkl + sk * sl / ((dn - 1.0) * (dn - 2.0)) - 2.0 / (dn - 2.0) * kl1) /
               (dn * (dn - 3.0));
}

static void naive_cka(const kdl_tensor *x, const kdl_tensor *y, int rbf, double theta,
                      double *ret_biased, double *ret_debiased)
{
        size_t n = x->shape[0];
        double *k = naive_kernel(x, rbf, theta), *l = naive_kernel(y, rbf, theta);

        *ret_biased = hsic_biased(k, l, n) / sqrt(hsic_biased(k, k, n) * hsic_biased(l, l, n));
        *ret_debiased =
                hsic_unbiased(k, l, n) / sqrt(hsic_unbiased(k, k, n) * hsic_unbiased(l, l, n));
        free(l);
        free(k);
}

/* Three correlated layers of widths 5, 12 and 60 on n = 40 samples (the last
 * one wider than n), with offsets. */
struct fixture {
        double *d[3];
        kdl_tensor t[3];
        size_t n;
};

static void fixture_make(struct fixture *f, uint64_t seed)
{
        kdl_test_rng g = {seed};
        size_t w[3] = {5, 12, 60};

        f->n = 40;
        for (size_t i = 0; i < 3; i++) {
                f->d[i] = randn(&g, f->n * w[i], 1.0 + (double) i, 3.0 - (double) i);
                f->t[i] = wrap(f->d[i], f->n, w[i]);
        }
        /* Share structure so the CKAs are far from 0 and from 1. */
        for (size_t r = 0; r < f->n; r++) {
                for (size_t c = 0; c < 5; c++) {
                        f->d[1][r * 12 + c] += 2.0 * f->d[0][r * 5 + c];
                        f->d[2][r * 60 + 7 * c] += 0.7 * f->d[0][r * 5 + c] * f->d[0][r * 5 + c];
                }
        }
}

static void fixture_free(struct fixture *f)
{
        for (size_t i = 0; i < 3; i++)
                free(f->d[i]);
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_feature_form_equals_gram_form(void **state)
{
        struct fixture f;
        kdl_cka_matrix *fs, *gm;

        (void) state;
        fixture_make(&f, 11);
        fs = stream(f.t, 3, 7, 40, 0, 0);
        assert_int_equal(kdl_cka_gram(f.t, 3, KDL_CKA_LINEAR, 0.0, &gm), 0);
        assert_close(fs->n, 40.0, 0.0, 0.0);
        for (size_t i = 0; i < 3; i++)
                for (size_t j = 0; j < 3; j++) {
                        double b, d;

                        naive_cka(&f.t[i], &f.t[j], 0, 0.0, &b, &d);
                        assert_close(fs->biased[i * 3 + j], b, 1e-10, 0.0);
                        assert_close(gm->biased[i * 3 + j], b, 1e-10, 0.0);
                        assert_close(fs->debiased[i * 3 + j], d, 1e-10, 0.0);
                        assert_close(gm->debiased[i * 3 + j], d, 1e-10, 0.0);
                }
        /* Not trivially 0 or 1 off the diagonal. */
        assert_true(fs->biased[1] > 0.2 && fs->biased[1] < 0.95);
        assert_true(fs->debiased[2] < fs->biased[2]);
        kdl_cka_matrix_free(gm);
        kdl_cka_matrix_free(fs);
        fixture_free(&f);
}

static void test_self_is_one_and_symmetric(void **state)
{
        struct fixture f;
        kdl_cka_matrix *m;

        (void) state;
        fixture_make(&f, 12);
        m = stream(f.t, 3, 512, 40, 0, 0);
        for (size_t i = 0; i < 3; i++) {
                assert_close(m->biased[i * 4], 1.0, 1e-13, 0.0);
                assert_close(m->debiased[i * 4], 1.0, 1e-13, 0.0);
                for (size_t j = 0; j < 3; j++) {
                        assert_close(m->biased[i * 3 + j], m->biased[j * 3 + i], 0.0, 0.0);
                        assert_close(m->debiased[i * 3 + j], m->debiased[j * 3 + i], 0.0, 0.0);
                }
        }
        assert_null(m->biased_lo);
        assert_null(m->minibatch);
        kdl_cka_matrix_free(m);
        fixture_free(&f);
}

/* Y = X A + noise; the second layer of each case is transformed. */
static void invariance_case(int kernel_rbf)
{
        kdl_test_rng g = {21};
        size_t n = 50, d = 6;
        double *x = randn(&g, n * d, 1.0, 0.0), *y = randn(&g, n * d, 0.5, 0.0);
        double *q = calloc(d * d, sizeof(double)), *b = randn(&g, d * d, 1.0, 0.0);
        double *xt = calloc(n * d, sizeof(double));
        double base[2], v[2];
        kdl_tensor t[2];
        kdl_cka_matrix *m;

        for (size_t i = 0; i < n * d; i++)
                y[i] += x[i] + 0.3 * x[(i + 1) % (n * d)];
        /* A random orthogonal Q by Gram-Schmidt on a Gaussian matrix. */
        for (size_t c = 0; c < d; c++) {
                for (size_t r = 0; r < d; r++)
                        q[r * d + c] = kdl_test_normal(&g);
                for (size_t p = 0; p < c; p++) {
                        double dot = 0.0;

                        for (size_t r = 0; r < d; r++)
                                dot += q[r * d + c] * q[r * d + p];
                        for (size_t r = 0; r < d; r++)
                                q[r * d + c] -= dot * q[r * d + p];
                }
                {
                        double nr = 0.0;

                        for (size_t r = 0; r < d; r++)
                                nr += q[r * d + c] * q[r * d + c];
                        for (size_t r = 0; r < d; r++)
                                q[r * d + c] /= sqrt(nr);
                }
        }
        t[0] = wrap(x, n, d);
        t[1] = wrap(y, n, d);
        if (kernel_rbf) {
                assert_int_equal(kdl_cka_gram(t, 2, KDL_CKA_RBF, 0.5, &m), 0);
        } else {
                m = stream(t, 2, 9, 50, 0, 0);
        }
        base[0] = m->biased[1];
        base[1] = m->debiased[1];
        kdl_cka_matrix_free(m);

        for (int kind = 0; kind < 4; kind++) {
                /* 0: X Q, 1: 3.7 X, 2: X + t (linear only), 3: X B (changes). */
                if (kind == 2 && kernel_rbf)
                        continue;
                for (size_t r = 0; r < n; r++)
                        for (size_t c = 0; c < d; c++) {
                                double s = 0.0;

                                if (kind == 0 || kind == 3)
                                        for (size_t k = 0; k < d; k++)
                                                s += x[r * d + k] *
                                                     (kind == 0 ? q[k * d + c] : b[k * d + c]);
                                else if (kind == 1)
                                        s = 3.7 * x[r * d + c];
                                else
                                        s = x[r * d + c] + 100.0 * (double) (c + 1);
                                xt[r * d + c] = s;
                        }
                t[0] = wrap(xt, n, d);
                if (kernel_rbf)
                        assert_int_equal(kdl_cka_gram(t, 2, KDL_CKA_RBF, 0.5, &m), 0);
                else
                        m = stream(t, 2, 9, 50, 0, 0);
                v[0] = m->biased[1];
                v[1] = m->debiased[1];
                kdl_cka_matrix_free(m);
                if (kind == 3) {
                        assert_true(fabs(v[0] - base[0]) > 1e-3);
                } else {
                        assert_close(v[0], base[0], 1e-10, 0.0);
                        assert_close(v[1], base[1], 1e-10, 0.0);
                }
        }
        free(xt);
        free(b);
        free(q);
        free(y);
        free(x);
}

static void test_linear_invariances(void **state)
{
        (void) state;
        invariance_case(0);
}

static void test_rbf_invariances(void **state)
{
        (void) state;
        invariance_case(1);
}

static void test_rbf_matches_naive(void **state)
{
        struct fixture f;
        kdl_cka_matrix *m;

        (void) state;
        fixture_make(&f, 13);
        assert_int_equal(kdl_cka_gram(f.t, 3, KDL_CKA_RBF, 0.8, &m), 0);
        for (size_t i = 0; i < 3; i++)
                for (size_t j = 0; j < 3; j++) {
                        double b, d;

                        naive_cka(&f.t[i], &f.t[j], 1, 0.8, &b, &d);
                        assert_close(m->biased[i * 3 + j], b, 1e-10, 0.0);
                        assert_close(m->debiased[i * 3 + j], d, 1e-10, 0.0);
                }
        kdl_cka_matrix_free(m);
        fixture_free(&f);
}

static void assert_matrices_close(const kdl_cka_matrix *a, const kdl_cka_matrix *b, double rtol)
{
        size_t ll = a->nlayers * a->nlayers;

        assert_int_equal(a->nlayers, b->nlayers);
        assert_close(a->n, b->n, 0.0, 0.0);
        for (size_t i = 0; i < ll; i++) {
                assert_close(a->biased[i], b->biased[i], rtol, 1e-14);
                assert_close(a->debiased[i], b->debiased[i], rtol, 1e-14);
                if (a->biased_lo) {
                        assert_close(a->biased_lo[i], b->biased_lo[i], rtol, 1e-14);
                        assert_close(a->biased_hi[i], b->biased_hi[i], rtol, 1e-14);
                        assert_close(a->debiased_se[i], b->debiased_se[i], rtol, 1e-14);
                }
        }
}

static void test_blocks_and_merge_equal_sequential(void **state)
{
        struct fixture f;
        kdl_cka_matrix *one, *many, *merged;
        size_t w[3] = {5, 12, 60};
        kdl_cka_opts o = opts(4, 6, 99);
        kdl_cka_state *a, *b;
        kdl_tensor v[3];

        (void) state;
        fixture_make(&f, 14);
        /* The second half far from the first, so the two states' shifts
         * differ and the merge must reconcile them. */
        for (size_t r = 20; r < 40; r++)
                for (size_t i = 0; i < 3; i++)
                        for (size_t c = 0; c < w[i]; c++)
                                f.d[i][r * w[i] + c] += 50.0 + (double) c;
        one = stream(f.t, 3, 512, 40, 6, 99);
        many = stream(f.t, 3, 3, 11, 6, 99);
        assert_matrices_close(one, many, 1e-9);

        assert_int_equal(kdl_cka_state_new(3, w, &o, &a), 0);
        assert_int_equal(kdl_cka_state_new(3, w, &o, &b), 0);
        view_rows(f.t, 3, 0, 20, v);
        assert_int_equal(kdl_cka_accumulate(a, v, ids), 0);
        view_rows(f.t, 3, 20, 40, v);
        assert_int_equal(kdl_cka_accumulate(b, v, ids + 20), 0);
        assert_int_equal(kdl_cka_merge(a, b), 0);
        assert_int_equal(kdl_cka_finalize(a, &merged), 0);
        assert_matrices_close(one, merged, 1e-9);
        assert_int_equal(merged->bootstrap, 6);

        kdl_cka_matrix_free(merged);
        kdl_cka_state_free(b);
        kdl_cka_state_free(a);
        kdl_cka_matrix_free(many);
        kdl_cka_matrix_free(one);
        fixture_free(&f);
}

static void test_merge_into_empty_state(void **state)
{
        struct fixture f;
        size_t w[3] = {5, 12, 60};
        kdl_cka_state *a, *e;
        kdl_cka_matrix *ref, *m;

        (void) state;
        fixture_make(&f, 15);
        ref = stream(f.t, 3, 16, 40, 0, 0);
        assert_int_equal(kdl_cka_state_new(3, w, NULL, &a), 0);
        assert_int_equal(kdl_cka_state_new(3, w, NULL, &e), 0);
        assert_int_equal(kdl_cka_accumulate(a, f.t, NULL), 0);
        assert_int_equal(kdl_cka_merge(e, a), 0); /* empty <- data */
        assert_int_equal(kdl_cka_merge(a, e), 0); /* data <- same data again */
        assert_int_equal(kdl_cka_finalize(e, &m), 0);
        assert_matrices_close(ref, m, 1e-11);
        kdl_cka_matrix_free(m);
        /* Every sample twice: biased CKA unchanged, n doubled. */
        assert_int_equal(kdl_cka_finalize(a, &m), 0);
        assert_close(m->n, 80.0, 0.0, 0.0);
        for (size_t i = 0; i < 9; i++)
                assert_close(m->biased[i], ref->biased[i], 1e-10, 0.0);
        kdl_cka_matrix_free(m);
        kdl_cka_state_free(e);
        kdl_cka_state_free(a);
        kdl_cka_matrix_free(ref);
        fixture_free(&f);
}

static void test_large_offset_keeps_accuracy(void **state)
{
        struct fixture f;
        kdl_cka_matrix *ref, *m;
        size_t w[3] = {5, 12, 60};

        (void) state;
        fixture_make(&f, 16);
        ref = stream(f.t, 3, 8, 40, 0, 0);
        for (size_t i = 0; i < 3; i++)
                for (size_t k = 0; k < 40 * w[i]; k++)
                        f.d[i][k] += 1e6;
        m = stream(f.t, 3, 8, 40, 0, 0);
        for (size_t i = 0; i < 9; i++) {
                assert_close(m->biased[i], ref->biased[i], 1e-8, 0.0);
                assert_close(m->debiased[i], ref->debiased[i], 1e-8, 0.0);
        }
        kdl_cka_matrix_free(m);
        kdl_cka_matrix_free(ref);
        fixture_free(&f);
}

/* docs/cka.md#robust-cka: translating a fraction ρ of the samples by c v, c → ∞, gives
 * CKA → n ρ ‖μ_S - μ‖² / ((1-ρ) ‖X_cᵀX_c‖_F). */
static void test_davari_subset_translation_limit(void **state)
{
        kdl_test_rng g = {31};
        size_t n = 200, d = 5, ns = 20;
        double rho = (double) ns / (double) n, c = 1e8;
        double *x = randn(&g, n * d, 1.0, 0.0), *y = malloc(n * d * sizeof(double));
        double v[5] = {0.1, -0.7, 0.3, 0.5, 0.2}, vn = 0.0, mu[5] = {0}, ms[5] = {0};
        double diff2 = 0.0, fro2 = 0.0, limit;
        kdl_tensor t[2];
        kdl_cka_matrix *m, *rob;

        (void) state;
        for (size_t k = 0; k < d; k++)
                vn += v[k] * v[k];
        for (size_t r = 0; r < n; r++)
                for (size_t k = 0; k < d; k++) {
                        y[r * d + k] = x[r * d + k] + (r % 10 == 3 ? c * v[k] / sqrt(vn) : 0.0);
                        mu[k] += x[r * d + k] / (double) n;
                        if (r % 10 == 3)
                                ms[k] += x[r * d + k] / (double) ns;
                }
        for (size_t k = 0; k < d; k++)
                diff2 += (ms[k] - mu[k]) * (ms[k] - mu[k]);
        for (size_t a = 0; a < d; a++)
                for (size_t b = 0; b < d; b++) {
                        double s = 0.0;

                        for (size_t r = 0; r < n; r++)
                                s += (x[r * d + a] - mu[a]) * (x[r * d + b] - mu[b]);
                        fro2 += s * s;
                }
        limit = (double) n * rho * diff2 / ((1.0 - rho) * sqrt(fro2));
        t[0] = wrap(x, n, d);
        t[1] = wrap(y, n, d);
        m = stream(t, 2, 64, 200, 0, 0);
        assert_close(m->biased[1], limit, 1e-6, 0.0);
        assert_true(limit < 0.2);

        /* Removing each layer's 10 % largest centred norms removes the
         * translated subset from the pair: Y = X there, CKA = 1. */
        assert_int_equal(kdl_cka_robust(t, 2, 0.1, &rob), 0);
        assert_close(rob->biased[1], 1.0, 1e-12, 0.0);
        kdl_cka_matrix_free(rob);
        kdl_cka_matrix_free(m);
        free(y);
        free(x);
}

static void test_robust_without_removal_is_biased(void **state)
{
        struct fixture f;
        kdl_cka_matrix *rob, *gm;

        (void) state;
        fixture_make(&f, 17);
        assert_int_equal(kdl_cka_robust(f.t, 3, 0.0, &rob), 0);
        assert_int_equal(kdl_cka_gram(f.t, 3, KDL_CKA_LINEAR, 0.0, &gm), 0);
        for (size_t i = 0; i < 9; i++)
                assert_close(rob->biased[i], gm->biased[i], 1e-11, 0.0);
        assert_null(rob->debiased);
        kdl_cka_matrix_free(gm);
        kdl_cka_matrix_free(rob);
        fixture_free(&f);
}

static void test_minibatch_one_batch_is_debiased(void **state)
{
        struct fixture f;
        size_t w[3] = {5, 12, 60};
        kdl_cka_mb_state *s;
        kdl_cka_matrix *mb, *gm;

        (void) state;
        fixture_make(&f, 18);
        assert_int_equal(kdl_cka_mb_state_new(3, w, 40, &s), 0);
        assert_int_equal(kdl_cka_mb_accumulate(s, f.t), 0);
        assert_int_equal(kdl_cka_mb_finalize(s, &mb), 0);
        assert_int_equal(kdl_cka_gram(f.t, 3, KDL_CKA_LINEAR, 0.0, &gm), 0);
        assert_int_equal(mb->nbatches, 1);
        for (size_t i = 0; i < 9; i++)
                assert_close(mb->minibatch[i], gm->debiased[i], 1e-11, 0.0);
        kdl_cka_matrix_free(gm);
        kdl_cka_matrix_free(mb);
        kdl_cka_mb_state_free(s);
        fixture_free(&f);
}

static void test_minibatch_merge_equals_sequential(void **state)
{
        struct fixture f;
        size_t w[3] = {5, 12, 60};
        kdl_cka_mb_state *a, *b, *all;
        kdl_cka_matrix *m1, *m2;
        kdl_tensor v[3];

        (void) state;
        fixture_make(&f, 19);
        assert_int_equal(kdl_cka_mb_state_new(3, w, 8, &a), 0);
        assert_int_equal(kdl_cka_mb_state_new(3, w, 8, &b), 0);
        assert_int_equal(kdl_cka_mb_state_new(3, w, 8, &all), 0);
        for (size_t r = 0; r < 40; r += 8) {
                view_rows(f.t, 3, r, r + 8, v);
                assert_int_equal(kdl_cka_mb_accumulate(all, v), 0);
                assert_int_equal(kdl_cka_mb_accumulate(r < 16 ? a : b, v), 0);
        }
        assert_int_equal(kdl_cka_mb_merge(a, b), 0);
        assert_int_equal(kdl_cka_mb_finalize(a, &m1), 0);
        assert_int_equal(kdl_cka_mb_finalize(all, &m2), 0);
        assert_int_equal(m1->nbatches, 5);
        assert_close(m1->n, 40.0, 0.0, 0.0);
        for (size_t i = 0; i < 9; i++)
                assert_close(m1->minibatch[i], m2->minibatch[i], 1e-12, 0.0);
        kdl_cka_matrix_free(m2);
        kdl_cka_matrix_free(m1);
        kdl_cka_mb_state_free(all);
        kdl_cka_mb_state_free(b);
        kdl_cka_mb_state_free(a);
        fixture_free(&f);
}

static void test_bootstrap_interval(void **state)
{
        struct fixture f;
        kdl_cka_matrix *m, *same, *other;

        (void) state;
        fixture_make(&f, 20);
        m = stream(f.t, 3, 13, 40, 200, 5);
        same = stream(f.t, 3, 64, 17, 200, 5);
        other = stream(f.t, 3, 13, 40, 200, 6);
        assert_int_equal(m->bootstrap, 200);
        assert_close(m->level, 0.95, 0.0, 0.0);
        for (size_t i = 0; i < 9; i++) {
                if (i % 4 == 0)
                        continue;
                /* The percentile interval of biased CKA need not contain
                 * the estimate (the bootstrap distribution is biased); only
                 * its shape and reproducibility are checked here. */
                assert_true(m->biased_lo[i] < m->biased_hi[i]);
                assert_true(m->debiased_lo[i] < m->debiased_hi[i]);
                assert_true(m->biased_se[i] > 0.0 && m->biased_se[i] < 0.5);
                assert_close(same->biased_lo[i], m->biased_lo[i], 1e-9, 0.0);
                assert_close(same->debiased_hi[i], m->debiased_hi[i], 1e-9, 0.0);
                assert_true(fabs(other->biased_lo[i] - m->biased_lo[i]) > 0.0);
        }
        kdl_cka_matrix_free(other);
        kdl_cka_matrix_free(same);
        kdl_cka_matrix_free(m);
        fixture_free(&f);
}

/* Each replicate is the CKA of the data resampled with Poisson(1) counts:
 * rebuild both replicates of B = 2 explicitly (rows repeated w times) and
 * compare with the two values behind the reported interval. */
static void test_bootstrap_replicates_are_resampled_data(void **state)
{
        struct fixture f;
        kdl_cka_matrix *m;
        double rep[2][2], lo, hi, delta, x0;
        size_t w[2] = {5, 12};

        (void) state;
        fixture_make(&f, 22);
        m = stream(f.t, 2, 6, 23, 2, 7);
        for (uint64_t b = 0; b < 2; b++) {
                double *d[2];
                size_t rows = 0;
                kdl_tensor t[2];

                for (size_t i = 0; i < 2; i++)
                        d[i] = malloc(40 * 8 * w[i] * sizeof(double));
                for (size_t r = 0; r < 40; r++)
                        for (unsigned k = kdl_sample_poisson1(7, r, b); k > 0; k--, rows++)
                                for (size_t i = 0; i < 2; i++)
                                        memcpy(d[i] + rows * w[i], f.d[i] + r * w[i],
                                               w[i] * sizeof(double));
                t[0] = wrap(d[0], rows, w[0]);
                t[1] = wrap(d[1], rows, w[1]);
                naive_cka(&t[0], &t[1], 0, 0.0, &rep[0][b], &rep[1][b]);
                free(d[1]);
                free(d[0]);
        }
        for (int e = 0; e < 2; e++) {
                double a = fmin(rep[e][0], rep[e][1]), z = fmax(rep[e][0], rep[e][1]);

                lo = e ? m->debiased_lo[1] : m->biased_lo[1];
                hi = e ? m->debiased_hi[1] : m->biased_hi[1];
                /* numpy-linear quantiles of two values at 0.025 and 0.975. */
                delta = (hi - lo) / 0.95;
                x0 = lo - 0.025 * delta;
                assert_close(x0, a, 1e-9, 0.0);
                assert_close(x0 + delta, z, 1e-9, 0.0);
        }
        kdl_cka_matrix_free(m);
        fixture_free(&f);
}

static void test_pair_mask_computes_only_what_is_asked(void **state)
{
        struct fixture f;
        size_t w[3] = {5, 12, 60};
        bool pairs[9] = {false, true, false, false, false, false, false, false, false};
        kdl_cka_opts all = opts(7, 3, 4);
        kdl_cka_opts some = all;
        kdl_cka_state *a, *b, *full;
        kdl_cka_matrix *mm, *ref;
        kdl_tensor v[3];

        (void) state;
        fixture_make(&f, 23);
        some.pairs = pairs; /* (0, 1) only, besides the diagonal */
        assert_true(kdl_cka_state_bytes(3, w, &some) < kdl_cka_state_bytes(3, w, &all));
        assert_int_equal(kdl_cka_state_new(3, w, &some, &a), 0);
        assert_int_equal(kdl_cka_state_new(3, w, &some, &b), 0);
        assert_int_equal(kdl_cka_state_new(3, w, &all, &full), 0);
        for (size_t i = 0; i < 3; i++)
                for (size_t r = 25; r < 40; r++)
                        for (size_t c = 0; c < w[i]; c++)
                                f.d[i][r * w[i] + c] -= 20.0;
        view_rows(f.t, 3, 0, 25, v);
        assert_int_equal(kdl_cka_accumulate(a, v, ids), 0);
        view_rows(f.t, 3, 25, 40, v);
        assert_int_equal(kdl_cka_accumulate(b, v, ids + 25), 0);
        assert_int_equal(kdl_cka_merge(a, b), 0);
        assert_int_equal(kdl_cka_accumulate(full, f.t, ids), 0);
        assert_int_equal(kdl_cka_finalize(a, &mm), 0);
        assert_int_equal(kdl_cka_finalize(full, &ref), 0);
        for (size_t i = 0; i < 9; i++) {
                bool want = i == 1 || i == 3 || i % 4 == 0;

                if (!want) {
                        assert_true(isnan(mm->biased[i]) && isnan(mm->debiased[i]));
                        assert_true(isnan(mm->biased_lo[i]));
                        continue;
                }
                assert_close(mm->biased[i], ref->biased[i], 1e-10, 1e-14);
                assert_close(mm->debiased[i], ref->debiased[i], 1e-10, 1e-14);
                assert_close(mm->biased_hi[i], ref->biased_hi[i], 1e-10, 1e-14);
                assert_close(mm->debiased_se[i], ref->debiased_se[i], 1e-9, 1e-14);
        }
        assert_int_equal(kdl_cka_merge(full, a), -KDL_EMISMATCH);
        kdl_cka_matrix_free(ref);
        kdl_cka_matrix_free(mm);
        kdl_cka_state_free(full);
        kdl_cka_state_free(b);
        kdl_cka_state_free(a);
        fixture_free(&f);
}

static void test_constant_layer_gives_nan(void **state)
{
        kdl_test_rng g = {41};
        double *x = randn(&g, 30 * 3, 1.0, 0.0), c[30 * 2];
        kdl_tensor t[2];
        kdl_cka_matrix *m;

        (void) state;
        for (size_t i = 0; i < 60; i++)
                c[i] = 2.5;
        t[0] = wrap(x, 30, 3);
        t[1] = wrap(c, 30, 2);
        m = stream(t, 2, 8, 30, 0, 0);
        assert_true(isnan(m->biased[1]) && isnan(m->debiased[3]));
        assert_close(m->biased[0], 1.0, 1e-13, 0.0);
        kdl_cka_matrix_free(m);
        free(x);
}

static void test_error_paths(void **state)
{
        size_t w[2] = {3, 2}, w0[2] = {3, 0};
        double d[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, e[8] = {0};
        kdl_cka_opts bad_level = opts(0, 0, 0), boot = opts(0, 2, 0);
        kdl_cka_state *s = (kdl_cka_state *) 0x1, *s2, *s3;
        kdl_cka_mb_state *mb = (kdl_cka_mb_state *) 0x1, *mb2, *mb3;
        kdl_cka_matrix *m = (kdl_cka_matrix *) 0x1, *before, *after;
        kdl_tensor t[2];

        (void) state;
        bad_level.level = 1.5;
        assert_int_equal(kdl_cka_state_new(0, w, NULL, &s), -KDL_ESHAPE);
        assert_int_equal(kdl_cka_state_new(2, w0, NULL, &s), -KDL_ESHAPE);
        assert_int_equal(kdl_cka_state_new(2, w, &bad_level, &s), -KDL_ERANGE);
        assert_int_equal(kdl_cka_state_new(2, (size_t[]){SIZE_MAX / 2, SIZE_MAX / 2}, NULL, &s),
                         -KDL_EOVERFLOW);
        assert_true(s == (kdl_cka_state *) 0x1);
        assert_true(kdl_cka_state_bytes(1, (size_t[]){SIZE_MAX / 4}, NULL) == SIZE_MAX);
        assert_true(kdl_cka_state_bytes(2, w, &boot) > kdl_cka_state_bytes(2, w, NULL));

        assert_int_equal(kdl_cka_state_new(2, w, NULL, &s2), 0);
        t[0] = wrap(d, 4, 3);
        t[1] = wrap(e, 4, 2);
        assert_int_equal(kdl_cka_accumulate(s2, t, ids), 0);
        assert_int_equal(kdl_cka_finalize(s2, &before), 0);
        t[1] = wrap(e, 3, 2); /* rows differ */
        assert_int_equal(kdl_cka_accumulate(s2, t, ids + 4), -KDL_ESHAPE);
        t[1] = wrap(e, 2, 4); /* width differs */
        assert_int_equal(kdl_cka_accumulate(s2, t, ids + 4), -KDL_ESHAPE);
        e[5] = NAN;
        t[1] = wrap(e, 4, 2);
        assert_int_equal(kdl_cka_accumulate(s2, t, ids + 4), -KDL_ENONFINITE);
        assert_non_null(strstr(kdl_errmsg(), "sample 6"));
        assert_int_equal(kdl_cka_finalize(s2, &after), 0); /* state unchanged */
        assert_close(after->n, before->n, 0.0, 0.0);
        kdl_cka_matrix_free(after);
        kdl_cka_matrix_free(before);
        /* A NaN in a state's first block leaves no shift behind: the next block gives
         * what it gives a fresh state, bit for bit. */
        assert_int_equal(kdl_cka_state_new(2, w, NULL, &s3), 0);
        assert_int_equal(kdl_cka_accumulate(s3, t, ids + 4), -KDL_ENONFINITE);
        e[5] = 100.0;
        assert_int_equal(kdl_cka_accumulate(s3, t, ids + 4), 0);
        assert_int_equal(kdl_cka_finalize(s3, &after), 0);
        kdl_cka_state_free(s3);
        assert_int_equal(kdl_cka_state_new(2, w, NULL, &s3), 0);
        assert_int_equal(kdl_cka_accumulate(s3, t, ids + 4), 0);
        assert_int_equal(kdl_cka_finalize(s3, &before), 0);
        kdl_cka_state_free(s3);
        assert_memory_equal(after->biased, before->biased, 4 * sizeof(double));
        kdl_cka_matrix_free(after);
        kdl_cka_matrix_free(before);

        assert_int_equal(kdl_cka_state_new(1, w, NULL, &s3), 0);
        assert_int_equal(kdl_cka_merge(s2, s3), -KDL_EMISMATCH);
        kdl_cka_state_free(s3);
        assert_int_equal(kdl_cka_state_new(2, w, &boot, &s3), 0);
        assert_int_equal(kdl_cka_merge(s2, s3), -KDL_EMISMATCH);
        kdl_cka_state_free(s3);
        kdl_cka_state_free(s2);

        /* Too few samples for the debiased form: NaN, not an error. */
        assert_int_equal(kdl_cka_state_new(1, w, NULL, &s2), 0);
        t[0] = wrap(d, 3, 3);
        assert_int_equal(kdl_cka_accumulate(s2, t, ids), 0);
        assert_int_equal(kdl_cka_finalize(s2, &after), 0);
        assert_true(isnan(after->debiased[0]));
        assert_close(after->biased[0], 1.0, 1e-14, 0.0);
        kdl_cka_matrix_free(after);
        kdl_cka_state_free(s2);

        /* Gram space and robust. */
        e[5] = 0.0;
        t[0] = wrap(d, 1, 3);
        assert_int_equal(kdl_cka_gram(t, 1, KDL_CKA_LINEAR, 0.0, &m), -KDL_ESHAPE);
        t[0] = wrap(d, 4, 3);
        t[1] = wrap(e, 4, 2);
        assert_int_equal(kdl_cka_gram(t, 2, KDL_CKA_RBF, 0.0, &m), -KDL_ERANGE);
        assert_int_equal(kdl_cka_gram(t, 0, KDL_CKA_LINEAR, 0.0, &m), -KDL_ESHAPE);
        assert_int_equal(kdl_cka_robust(t, 2, 0.6, &m), -KDL_ERANGE);
        t[1] = wrap(e, 2, 4);
        assert_int_equal(kdl_cka_gram(t, 2, KDL_CKA_LINEAR, 0.0, &m), -KDL_ESHAPE);
        e[2] = INFINITY;
        t[1] = wrap(e, 4, 2);
        assert_int_equal(kdl_cka_gram(t, 2, KDL_CKA_LINEAR, 0.0, &m), -KDL_ENONFINITE);
        assert_true(m == (kdl_cka_matrix *) 0x1);
        e[2] = 0.0;
        /* A zero RBF bandwidth (most distances 0): NaN for that layer. */
        assert_int_equal(kdl_cka_gram(t, 2, KDL_CKA_RBF, 0.5, &m), 0);
        assert_true(isnan(m->biased[3]) && isnan(m->biased[1]));
        assert_close(m->biased[0], 1.0, 1e-14, 0.0);
        kdl_cka_matrix_free(m);
        assert_string_equal(kdl_cka_kernel_name(KDL_CKA_RBF), "rbf");

        /* Minibatch. */
        assert_int_equal(kdl_cka_mb_state_new(2, w, 3, &mb), -KDL_ERANGE);
        assert_int_equal(kdl_cka_mb_state_new(0, w, 4, &mb), -KDL_ESHAPE);
        assert_int_equal(kdl_cka_mb_state_new(2, w0, 4, &mb), -KDL_ESHAPE);
        assert_true(mb == (kdl_cka_mb_state *) 0x1);
        assert_int_equal(kdl_cka_mb_state_new(2, w, 4, &mb2), 0);
        assert_int_equal(kdl_cka_mb_finalize(mb2, &m), -KDL_EMISSING);
        t[0] = wrap(d, 3, 3);
        t[1] = wrap(e, 3, 2);
        assert_int_equal(kdl_cka_mb_accumulate(mb2, t), -KDL_ESHAPE);
        assert_int_equal(kdl_cka_mb_state_new(2, w, 5, &mb3), 0);
        assert_int_equal(kdl_cka_mb_merge(mb2, mb3), -KDL_EMISMATCH);
        kdl_cka_mb_state_free(mb3);
        kdl_cka_mb_state_free(mb2);
        kdl_cka_mb_state_free(NULL);
        kdl_cka_state_free(NULL);
        kdl_cka_matrix_free(NULL);
}

/* The metric contract: kdl_cka_opts_init() is the defaults (a NULL pointer
 * means them); finalize on an empty state is -KDL_EMISSING; a mismatched
 * merge is -KDL_EMISMATCH and leaves @into as it was. */
static void test_contract(void **state)
{
        size_t w[2] = {3, 2}, w3[2] = {3, 3};
        double d[12] = {0.31, -1.24, 2.57, 0.72, -0.43, 1.96, 1.18, 0.05, -2.21, 0.83, 1.69, -0.97};
        double e[8] = {-0.62, 1.41, 0.27, -1.83, 2.09, 0.44, -0.35, 0.91};
        kdl_cka_opts o, o90;
        kdl_cka_state *s, *t;
        kdl_cka_mb_state *mb, *mb5;
        kdl_cka_matrix *m = (kdl_cka_matrix *) 0x1, *before, *after;
        kdl_tensor x[2];

        (void) state;
        kdl_cka_opts_init(&o);
        assert_int_equal(o.block_rows, 0);
        assert_null(o.pairs);
        assert_int_equal(o.bootstrap, 0);
        assert_int_equal(o.seed, 0);
        assert_close(o.level, 0.95, 0.0, 0.0);
        assert_int_equal(o.precision, KDL_CKA_PRECISION_DOUBLE);
        assert_int_equal(kdl_cka_state_bytes(2, w, &o), kdl_cka_state_bytes(2, w, NULL));

        /* Empty (a block of no rows adds nothing; nor does an empty state). */
        assert_int_equal(kdl_cka_state_new(2, w, &o, &s), 0);
        assert_int_equal(kdl_cka_state_new(2, w, NULL, &t), 0);
        x[0] = wrap(d, 0, 3);
        x[1] = wrap(e, 0, 2);
        assert_int_equal(kdl_cka_accumulate(s, x, ids), 0);
        assert_int_equal(kdl_cka_merge(s, t), 0);
        assert_int_equal(kdl_cka_finalize(s, &m), -KDL_EMISSING);
        assert_true(m == (kdl_cka_matrix *) 0x1);
        kdl_cka_state_free(t);

        /* Mismatched merges: other widths, another level of the intervals. */
        x[0] = wrap(d, 4, 3);
        x[1] = wrap(e, 4, 2);
        assert_int_equal(kdl_cka_accumulate(s, x, ids), 0);
        assert_int_equal(kdl_cka_finalize(s, &before), 0);
        assert_int_equal(kdl_cka_state_new(2, w3, NULL, &t), 0);
        assert_int_equal(kdl_cka_merge(s, t), -KDL_EMISMATCH);
        assert_int_equal(kdl_cka_merge(t, s), -KDL_EMISMATCH);
        kdl_cka_state_free(t);
        assert_int_equal(kdl_cka_finalize(s, &after), 0);
        assert_matrices_close(after, before, 0.0);
        kdl_cka_matrix_free(after);
        kdl_cka_matrix_free(before);
        kdl_cka_state_free(s);
        o = opts(0, 3, 7);
        o90 = o;
        o90.level = 0.9;
        assert_int_equal(kdl_cka_state_new(2, w, &o, &s), 0);
        assert_int_equal(kdl_cka_state_new(2, w, &o90, &t), 0);
        assert_int_equal(kdl_cka_accumulate(t, x, ids), 0);
        assert_int_equal(kdl_cka_merge(s, t), -KDL_EMISMATCH);
        assert_int_equal(kdl_cka_finalize(s, &m), -KDL_EMISSING); /* still empty */
        kdl_cka_state_free(t);
        kdl_cka_state_free(s);

        /* Minibatch: the same two codes; @into keeps its one batch. */
        assert_int_equal(kdl_cka_mb_state_new(2, w, 4, &mb), 0);
        assert_int_equal(kdl_cka_mb_finalize(mb, &m), -KDL_EMISSING);
        assert_true(m == (kdl_cka_matrix *) 0x1);
        assert_int_equal(kdl_cka_mb_accumulate(mb, x), 0);
        assert_int_equal(kdl_cka_mb_state_new(2, w, 5, &mb5), 0);
        assert_int_equal(kdl_cka_mb_merge(mb, mb5), -KDL_EMISMATCH);
        kdl_cka_mb_state_free(mb5);
        assert_int_equal(kdl_cka_mb_state_new(2, w3, 4, &mb5), 0);
        assert_int_equal(kdl_cka_mb_merge(mb, mb5), -KDL_EMISMATCH);
        kdl_cka_mb_state_free(mb5);
        assert_int_equal(kdl_cka_mb_finalize(mb, &m), 0);
        assert_int_equal(m->nbatches, 1);
        kdl_cka_matrix_free(m);
        kdl_cka_mb_state_free(mb);
}

/* ---- mixed precision ------------------------------------------------------------ */

/* Agreement of mixed with double precision, the tolerance cka.h states. */
#define MIXED_ATOL 1e-7

/* Three correlated layers of widths 40, 64 and 96 on n = 3000 samples, each
 * feature with mean ~50 and spread ~1 (so the shift matters and the float
 * copy must be of shifted data), values with full double mantissas. */
struct mixfix {
        double *d[3];
        kdl_tensor t[3];
        size_t n, w[3];
};

static void mixfix_make(struct mixfix *f, uint64_t seed, double scale)
{
        kdl_test_rng g = {seed};
        size_t q = 6;
        double *h, *a;

        f->n = 3000;
        f->w[0] = 40;
        f->w[1] = 64;
        f->w[2] = 96;
        h = randn(&g, f->n * q, 1.0, 0.0);
        for (size_t i = 0; i < 3; i++) {
                size_t w = f->w[i];

                a = randn(&g, q * w, 0.8 / sqrt((double) q), 0.0);
                f->d[i] = randn(&g, f->n * w, 0.4 + 0.2 * (double) i, 0.0);
                for (size_t r = 0; r < f->n; r++)
                        for (size_t c = 0; c < w; c++) {
                                double x = 50.0 + 0.01 * (double) c + f->d[i][r * w + c];

                                for (size_t k = 0; k < q; k++) {
                                        double hk = h[r * q + k];

                                        /* Layer 2 sees the latent partly squared. */
                                        x += a[k * w + c] *
                                             (i == 2 ? hk + 0.7 * (hk * hk - 1.0) : hk);
                                }
                                f->d[i][r * w + c] = scale * x;
                        }
                f->t[i] = wrap(f->d[i], f->n, w);
                free(a);
        }
        free(h);
}

static void mixfix_free(struct mixfix *f)
{
        for (size_t i = 0; i < 3; i++)
                free(f->d[i]);
}

/* max |a - b| over the finite off-diagonal entries of every array both fill;
 * fails on NaN in one but not the other. */
static double matrix_maxdiff(const kdl_cka_matrix *a, const kdl_cka_matrix *b)
{
        const double *pa[8] = {a->biased,    a->debiased,    a->biased_lo,   a->biased_hi,
                               a->biased_se, a->debiased_lo, a->debiased_hi, a->debiased_se};
        const double *pb[8] = {b->biased,    b->debiased,    b->biased_lo,   b->biased_hi,
                               b->biased_se, b->debiased_lo, b->debiased_hi, b->debiased_se};
        size_t l = a->nlayers;
        double mx = 0.0;

        assert_int_equal(a->nlayers, b->nlayers);
        for (size_t k = 0; k < 8; k++) {
                assert_true((pa[k] == NULL) == (pb[k] == NULL));
                if (!pa[k])
                        continue;
                for (size_t i = 0; i < l * l; i++) {
                        assert_true(isnan(pa[k][i]) == isnan(pb[k][i]));
                        if (i % (l + 1) != 0 && !isnan(pa[k][i]))
                                mx = fmax(mx, fabs(pa[k][i] - pb[k][i]));
                }
        }
        return mx;
}

static void test_mixed_agrees_with_double(void **state)
{
        struct mixfix f;
        kdl_cka_matrix *dbl, *mix, *mix_long;
        double d1, d2;

        (void) state;
        mixfix_make(&f, 51, 1.0);
        /* Blocks of 700 rows (5 of them, fed in calls of 1100 rows), 40
         * bootstrap replicates; then blocks of 2500 rows, which mixed
         * precision splits into float products of 1024, 1024 and 452. */
        dbl = stream_prec(f.t, 3, 700, 1100, 40, 8, KDL_CKA_PRECISION_DOUBLE);
        mix = stream_prec(f.t, 3, 700, 1100, 40, 8, KDL_CKA_PRECISION_MIXED);
        mix_long = stream_prec(f.t, 3, 2500, 3000, 40, 8, KDL_CKA_PRECISION_MIXED);
        assert_close(mix->n, 3000.0, 0.0, 0.0);
        assert_int_equal(mix->bootstrap, 40);
        /* A non-trivial grid. */
        for (size_t i = 0; i < 9; i++) {
                if (i % 4 == 0)
                        continue;
                assert_true(dbl->biased[i] > 0.1 && dbl->biased[i] < 0.95);
                assert_true(dbl->debiased[i] > 0.02 && dbl->debiased[i] < 0.95);
        }
        for (size_t i = 0; i < 3; i++) {
                assert_close(mix->biased[i * 4], 1.0, 1e-13, 0.0);
                assert_close(mix->debiased[i * 4], 1.0, 1e-13, 0.0);
        }
        d1 = matrix_maxdiff(mix, dbl);
        d2 = matrix_maxdiff(mix_long, dbl);
        print_message("max |mixed - double| (CKA, bootstrap lo/hi/se): %.3g (700-row blocks), "
                      "%.3g (2500-row blocks)\n",
                      d1, d2);
        assert_true(d1 < MIXED_ATOL && d2 < MIXED_ATOL);
        /* Float rounding must show: double against double with other blocks
         * differs by ~1e-15; float inputs round at 2^-24 ~ 6e-8 relative. */
        assert_true(d1 > 1e-12 && d2 > 1e-12);
        kdl_cka_matrix_free(mix_long);
        kdl_cka_matrix_free(mix);
        kdl_cka_matrix_free(dbl);
        mixfix_free(&f);
}

/* The float copy is scaled by powers of two per layer: units whose squares
 * overflow (1e25) or underflow (1e-25) a float change nothing. */
static void test_mixed_any_units(void **state)
{
        struct mixfix ref, big, small;
        kdl_cka_matrix *dbl, *mb, *ms;

        (void) state;
        mixfix_make(&ref, 52, 1.0);
        mixfix_make(&big, 52, 1e25);
        mixfix_make(&small, 52, 1e-25);
        dbl = stream_prec(ref.t, 3, 900, 3000, 0, 0, KDL_CKA_PRECISION_DOUBLE);
        mb = stream_prec(big.t, 3, 900, 3000, 0, 0, KDL_CKA_PRECISION_MIXED);
        ms = stream_prec(small.t, 3, 900, 3000, 0, 0, KDL_CKA_PRECISION_MIXED);
        assert_true(matrix_maxdiff(mb, dbl) < MIXED_ATOL);
        assert_true(matrix_maxdiff(ms, dbl) < MIXED_ATOL);
        kdl_cka_matrix_free(ms);
        kdl_cka_matrix_free(mb);
        kdl_cka_matrix_free(dbl);
        mixfix_free(&small);
        mixfix_free(&big);
        mixfix_free(&ref);
}

/*
 * Mixed precision rounds the inputs of the G products to float.  Data
 * d = 50 + k/8 (k an integer in ±1..8) are exact in float after the shift
 * (exactly 50: rows come in pairs ±k) and so are their products; adding
 * p = j 2^-30 (|j| <= 3, pairs ±j) moves every value by less than half a
 * float ulp.  So the biased CKA (G and m only) of d + p in mixed precision is
 * that of d, while double precision sees p.
 */
static void test_mixed_rounds_products_to_float(void **state)
{
        kdl_test_rng g = {53};
        size_t n = 40, w[2] = {3, 4};
        double *d[2], *dp[2];
        kdl_tensor t[2], tp[2];
        kdl_cka_matrix *ref, *dbl, *mix;

        (void) state;
        for (size_t i = 0; i < 2; i++) {
                d[i] = malloc(n * w[i] * sizeof(double));
                dp[i] = malloc(n * w[i] * sizeof(double));
                assert_true(d[i] && dp[i]);
                for (size_t r = 0; r < n; r += 2)
                        for (size_t c = 0; c < w[i]; c++) {
                                double k = 1.0 + floor(8.0 * kdl_test_uniform(&g));
                                double j = floor(7.0 * kdl_test_uniform(&g)) - 3.0;

                                k = kdl_test_uniform(&g) < 0.5 ? -k : k;
                                d[i][r * w[i] + c] = 50.0 + k / 8.0;
                                d[i][(r + 1) * w[i] + c] = 50.0 - k / 8.0;
                                dp[i][r * w[i] + c] = 50.0 + k / 8.0 + ldexp(j, -30);
                                dp[i][(r + 1) * w[i] + c] = 50.0 - k / 8.0 - ldexp(j, -30);
                        }
                t[i] = wrap(d[i], n, w[i]);
                tp[i] = wrap(dp[i], n, w[i]);
        }
        ref = stream_prec(t, 2, 16, 40, 0, 0, KDL_CKA_PRECISION_DOUBLE);
        dbl = stream_prec(tp, 2, 16, 40, 0, 0, KDL_CKA_PRECISION_DOUBLE);
        mix = stream_prec(tp, 2, 16, 40, 0, 0, KDL_CKA_PRECISION_MIXED);
        assert_true(ref->biased[1] > 0.05 && ref->biased[1] < 0.95);
        assert_true(fabs(dbl->biased[1] - ref->biased[1]) > 1e-12);
        assert_close(mix->biased[1], ref->biased[1], 0.0, 1e-15);
        kdl_cka_matrix_free(mix);
        kdl_cka_matrix_free(dbl);
        kdl_cka_matrix_free(ref);
        for (size_t i = 0; i < 2; i++) {
                free(dp[i]);
                free(d[i]);
        }
}

static void test_mixed_merge(void **state)
{
        struct mixfix f;
        kdl_cka_opts mixed = opts(500, 5, 3);
        kdl_cka_opts dbl = mixed;
        kdl_cka_state *a, *b, *c;
        kdl_cka_matrix *merged, *seq;
        kdl_tensor v[3];

        (void) state;
        mixed.precision = KDL_CKA_PRECISION_MIXED;
        mixfix_make(&f, 54, 1.0);
        /* The second half moved, so the merge reconciles two shifts. */
        for (size_t i = 0; i < 3; i++)
                for (size_t k = 1500 * f.w[i]; k < 3000 * f.w[i]; k++)
                        f.d[i][k] += 7.0;
        assert_int_equal(kdl_cka_state_new(3, f.w, &mixed, &a), 0);
        assert_int_equal(kdl_cka_state_new(3, f.w, &mixed, &b), 0);
        assert_int_equal(kdl_cka_state_new(3, f.w, &dbl, &c), 0);
        view_rows(f.t, 3, 0, 1500, v);
        assert_int_equal(kdl_cka_accumulate(a, v, ids), 0);
        view_rows(f.t, 3, 1500, 3000, v);
        assert_int_equal(kdl_cka_accumulate(b, v, ids + 1500), 0);
        assert_int_equal(kdl_cka_accumulate(c, v, ids + 1500), 0);
        assert_int_equal(kdl_cka_merge(a, c), -KDL_EMISMATCH);
        assert_non_null(strstr(kdl_errmsg(), "double-precision"));
        assert_int_equal(kdl_cka_merge(c, a), -KDL_EMISMATCH);
        assert_int_equal(kdl_cka_merge(a, b), 0);
        assert_int_equal(kdl_cka_finalize(a, &merged), 0);
        seq = stream_prec(f.t, 3, 500, 3000, 5, 3, KDL_CKA_PRECISION_DOUBLE);
        assert_true(matrix_maxdiff(merged, seq) < MIXED_ATOL);
        kdl_cka_matrix_free(seq);
        kdl_cka_matrix_free(merged);
        kdl_cka_state_free(c);
        kdl_cka_state_free(b);
        kdl_cka_state_free(a);
        mixfix_free(&f);
}

static void test_mixed_names_and_bytes(void **state)
{
        size_t w[3] = {5, 12, 60};
        kdl_cka_opts o = opts(7, 2, 0);
        kdl_cka_opts om = o, big = opts(3000, 0, 0);
        kdl_cka_opts bigd = big;
        enum kdl_cka_precision p = KDL_CKA_PRECISION_MIXED;

        (void) state;
        assert_string_equal(kdl_cka_precision_name(KDL_CKA_PRECISION_DOUBLE), "double");
        assert_string_equal(kdl_cka_precision_name(KDL_CKA_PRECISION_MIXED), "mixed");
        assert_int_equal(kdl_cka_precision_parse("double", &p), 0);
        assert_int_equal(p, KDL_CKA_PRECISION_DOUBLE);
        assert_int_equal(kdl_cka_precision_parse("mixed", &p), 0);
        assert_int_equal(p, KDL_CKA_PRECISION_MIXED);
        assert_int_equal(kdl_cka_precision_parse("single", &p), -KDL_EUSAGE);
        assert_int_equal(p, KDL_CKA_PRECISION_MIXED);
        assert_non_null(strstr(kdl_errmsg(), "single"));

        /* The float scratch: a copy of the block's rows (at most 1024 of
         * them) and one product of the widest pair, plus L exponents. */
        om.precision = KDL_CKA_PRECISION_MIXED;
        assert_int_equal(kdl_cka_state_bytes(3, w, &om) - kdl_cka_state_bytes(3, w, &o),
                         (7 * 77 + 60 * 60) * sizeof(float) + 3 * sizeof(int));
        big.precision = KDL_CKA_PRECISION_MIXED;
        assert_int_equal(kdl_cka_state_bytes(3, w, &big) - kdl_cka_state_bytes(3, w, &bigd),
                         (KDL_CKA_MIXED_ROWS * 77 + 60 * 60) * sizeof(float) + 3 * sizeof(int));
}

/* ---- bootstrap in Gram space; the intervals ---------------------------------------- */

/* The data of @f with row i repeated @w[i] times; returns the rows. */
static size_t repeat_rows(const struct fixture *f, const double *w, double **d, kdl_tensor *t)
{
        size_t wd[3] = {5, 12, 60}, rows = 0;

        for (size_t i = 0; i < 3; i++) {
                d[i] = malloc(f->n * 4 * wd[i] * sizeof(double));
                assert_non_null(d[i]);
        }
        for (size_t r = 0; r < f->n; r++)
                for (unsigned k = (unsigned) w[r]; k > 0; k--, rows++)
                        for (size_t i = 0; i < 3; i++)
                                memcpy(d[i] + rows * wd[i], f->d[i] + r * wd[i],
                                       wd[i] * sizeof(double));
        for (size_t i = 0; i < 3; i++)
                t[i] = wrap(d[i], rows, wd[i]);
        return rows;
}

/* Integer weights are repeated samples: weighted Gram-space CKA with w equals
 * CKA of the data with row i repeated wᵢ times (the library's Gram form and
 * the naive trace formulas), biased and debiased; weights 1 are
 * kdl_cka_gram(); a negative or NaN weight is refused. */
static void test_gram_weights_are_repeated_samples(void **state)
{
        struct fixture f;
        double w[40], ones[40], *d[3], b, db;
        kdl_tensor t[3];
        kdl_cka_matrix *wm, *rm, *um, *gm, *keep = (kdl_cka_matrix *) 0x1;
        size_t rows, nw = 0;

        (void) state;
        fixture_make(&f, 31);
        for (size_t i = 0; i < 40; i++) {
                w[i] = (double) ((i * 7 + 3) % 4); /* 0..3: dropped, once, repeated */
                ones[i] = 1.0;
                nw += (size_t) w[i];
        }
        rows = repeat_rows(&f, w, d, t);
        assert_int_equal(rows, nw);
        assert_int_equal(kdl_cka_gram_weighted(f.t, 3, w, &wm), 0);
        assert_int_equal(kdl_cka_gram(t, 3, KDL_CKA_LINEAR, 0.0, &rm), 0);
        assert_close(wm->n, (double) nw, 0.0, 0.0);
        for (size_t i = 0; i < 9; i++) {
                assert_close(wm->biased[i], rm->biased[i], 1e-11, 1e-14);
                assert_close(wm->debiased[i], rm->debiased[i], 1e-11, 1e-14);
        }
        naive_cka(&t[0], &t[2], 0, 0.0, &b, &db);
        assert_close(wm->biased[2], b, 1e-10, 0.0);
        assert_close(wm->debiased[2], db, 1e-10, 0.0);
        /* Repeats change the debiased value (copies are distinct samples). */
        assert_int_equal(kdl_cka_gram(f.t, 3, KDL_CKA_LINEAR, 0.0, &gm), 0);
        assert_true(fabs(wm->debiased[1] - gm->debiased[1]) > 1e-6);
        assert_int_equal(kdl_cka_gram_weighted(f.t, 3, ones, &um), 0);
        for (size_t i = 0; i < 9; i++) {
                assert_close(um->biased[i], gm->biased[i], 1e-12, 1e-14);
                assert_close(um->debiased[i], gm->debiased[i], 1e-12, 1e-14);
        }
        w[5] = -1.0;
        assert_int_equal(kdl_cka_gram_weighted(f.t, 3, w, &keep), -KDL_ERANGE);
        w[5] = NAN;
        assert_int_equal(kdl_cka_gram_weighted(f.t, 3, w, &keep), -KDL_ERANGE);
        assert_true(keep == (kdl_cka_matrix *) 0x1);
        kdl_cka_matrix_free(um);
        kdl_cka_matrix_free(gm);
        kdl_cka_matrix_free(rm);
        kdl_cka_matrix_free(wm);
        for (size_t i = 0; i < 3; i++)
                free(d[i]);
        fixture_free(&f);
}

/* @n entries of @a and @b agree within @atol (both NaN counts as agreeing). */
static void assert_arrays_close(const double *a, const double *b, size_t n, double atol)
{
        for (size_t i = 0; i < n; i++) {
                if (isnan(a[i]) && isnan(b[i]))
                        continue;
                assert_close(a[i], b[i], 0.0, atol);
        }
}

/* The feature-space state of @f's rows fed in a scrambled order, with the
 * ids 1000 + row, in blocks of 13. */
static kdl_cka_matrix *stream_scrambled(const struct fixture *f, const kdl_cka_opts *o)
{
        size_t wd[3] = {5, 12, 60}, pid[40];
        double *pd[3];
        kdl_tensor pt[3], v[3];
        kdl_cka_state *s;
        kdl_cka_matrix *m;

        for (size_t i = 0; i < 3; i++) {
                pd[i] = malloc(40 * wd[i] * sizeof(double));
                assert_non_null(pd[i]);
        }
        for (size_t p = 0; p < 40; p++) {
                size_t r = (p * 17 + 5) % 40;

                pid[p] = 1000 + r;
                for (size_t i = 0; i < 3; i++)
                        memcpy(pd[i] + p * wd[i], f->d[i] + r * wd[i], wd[i] * sizeof(double));
        }
        for (size_t i = 0; i < 3; i++)
                pt[i] = wrap(pd[i], 40, wd[i]);
        assert_int_equal(kdl_cka_state_new(3, wd, o, &s), 0);
        for (size_t r0 = 0; r0 < 40; r0 += 13) {
                view_rows(pt, 3, r0, r0 + 13 < 40 ? r0 + 13 : 40, v);
                assert_int_equal(kdl_cka_accumulate(s, v, pid + r0), 0);
        }
        assert_int_equal(kdl_cka_finalize(s, &m), 0);
        kdl_cka_state_free(s);
        for (size_t i = 0; i < 3; i++)
                free(pd[i]);
        return m;
}

/* The Gram-space bootstrap is the feature-space one: the same Poisson
 * weights of the same sample ids (not rows: the state reads the rows in
 * another order), weighted HSIC, so every replicate, jackknife value and
 * summary agrees to 1e-10, for every interval type. */
static void test_gram_bootstrap_equals_feature(void **state)
{
        struct fixture f;
        size_t gid[40];

        (void) state;
        fixture_make(&f, 32);
        for (size_t i = 0; i < 40; i++)
                gid[i] = 1000 + i;
        for (int iv = 0; iv < KDL_CKA_INTERVAL_COUNT_; iv++) {
                kdl_cka_opts o = opts(7, 30, 9);
                kdl_cka_matrix *fm, *gm;

                o.interval = (enum kdl_cka_interval) iv;
                fm = stream_scrambled(&f, &o);
                assert_int_equal(kdl_cka_gram_linear(f.t, 3, gid, &o, &gm), 0);
                assert_int_equal(gm->bootstrap, 30);
                assert_int_equal(gm->interval, iv);
                assert_int_equal(fm->interval, iv);
                assert_int_equal(gm->ngroups, iv == KDL_CKA_INTERVAL_BCA ? 50 : 0);
                assert_int_equal(fm->ngroups, gm->ngroups);
                assert_arrays_close(fm->biased, gm->biased, 9, 1e-12);
                assert_arrays_close(fm->biased_rep, gm->biased_rep, 30 * 9, 1e-10);
                assert_arrays_close(fm->debiased_rep, gm->debiased_rep, 30 * 9, 1e-10);
                if (gm->ngroups) {
                        assert_arrays_close(fm->biased_jack, gm->biased_jack, 50 * 9, 1e-10);
                        assert_arrays_close(fm->debiased_jack, gm->debiased_jack, 50 * 9, 1e-10);
                } else {
                        assert_null(gm->biased_jack);
                        assert_null(fm->debiased_jack);
                }
                assert_arrays_close(fm->biased_lo, gm->biased_lo, 9, 1e-10);
                assert_arrays_close(fm->biased_hi, gm->biased_hi, 9, 1e-10);
                assert_arrays_close(fm->debiased_lo, gm->debiased_lo, 9, 1e-10);
                assert_arrays_close(fm->debiased_hi, gm->debiased_hi, 9, 1e-10);
                assert_arrays_close(fm->biased_se, gm->biased_se, 9, 1e-10);
                assert_arrays_close(fm->debiased_bias, gm->debiased_bias, 9, 1e-10);
                /* Replicates differ from each other and from the point value. */
                assert_true(fabs(gm->biased_rep[1] - gm->biased_rep[10]) > 1e-6);
                assert_true(isfinite(gm->biased_lo[1]) && gm->biased_lo[1] < gm->biased_hi[1]);
                kdl_cka_matrix_free(gm);
                kdl_cka_matrix_free(fm);
        }
        fixture_free(&f);
}

/* A replicate is the weighted CKA with its Poisson weights, and a jackknife
 * value the CKA of the samples outside its group. */
static void test_gram_replicates_and_jackknife_values(void **state)
{
        struct fixture f;
        size_t gid[40];
        double w[40], *d[3];
        kdl_cka_opts o = opts(0, 4, 11);
        kdl_cka_matrix *gm, *wm, *sub;
        kdl_tensor t[3];
        size_t g, rows;

        (void) state;
        fixture_make(&f, 33);
        o.interval = KDL_CKA_INTERVAL_BCA;
        for (size_t i = 0; i < 40; i++)
                gid[i] = 77 * i + 5;
        assert_int_equal(kdl_cka_gram_linear(f.t, 3, gid, &o, &gm), 0);
        for (size_t i = 0; i < 40; i++)
                w[i] = (double) kdl_sample_poisson1(11, gid[i], 3);
        assert_int_equal(kdl_cka_gram_weighted(f.t, 3, w, &wm), 0);
        assert_arrays_close(gm->biased_rep + 3 * 9, wm->biased, 9, 1e-13);
        assert_arrays_close(gm->debiased_rep + 3 * 9, wm->debiased, 9, 1e-13);
        g = kdl_sample_group(11, gid[0], KDL_CKA_JACKKNIFE_GROUPS);
        for (size_t i = 0; i < 40; i++)
                w[i] = kdl_sample_group(11, gid[i], KDL_CKA_JACKKNIFE_GROUPS) == g ? 0.0 : 1.0;
        rows = repeat_rows(&f, w, d, t);
        assert_true(rows < 40);
        assert_int_equal(kdl_cka_gram(t, 3, KDL_CKA_LINEAR, 0.0, &sub), 0);
        assert_arrays_close(gm->biased_jack + g * 9, sub->biased, 9, 1e-11);
        assert_arrays_close(gm->debiased_jack + g * 9, sub->debiased, 9, 1e-11);
        kdl_cka_matrix_free(sub);
        kdl_cka_matrix_free(wm);
        kdl_cka_matrix_free(gm);
        for (size_t i = 0; i < 3; i++)
                free(d[i]);
        fixture_free(&f);
}

static double *dup_array(const double *x, size_t n)
{
        double *d = malloc((n ? n : 1) * sizeof(double));

        assert_non_null(d);
        memcpy(d, x, n * sizeof(double));
        return d;
}

/* kdl__cka_intervals() of one pair of value @est (biased and debiased alike)
 * with the replicates @rep [nrep] and, when @ng, the jackknife values @jack;
 * caller frees with kdl_cka_matrix_free(). */
static kdl_cka_matrix *summary_of(double est, const double *rep, size_t nrep, const double *jack,
                                  size_t ng, double level, enum kdl_cka_interval iv)
{
        kdl_cka_matrix *m;

        assert_int_equal(kdl__cka_matrix_new(1, &m), 0);
        m->biased = dup_array(&est, 1);
        m->debiased = dup_array(&est, 1);
        m->biased_rep = dup_array(rep, nrep);
        m->debiased_rep = dup_array(rep, nrep);
        if (ng) {
                m->biased_jack = dup_array(jack, ng);
                m->debiased_jack = dup_array(jack, ng);
        }
        m->bootstrap = nrep;
        m->level = level;
        m->interval = iv;
        m->ngroups = ng;
        assert_int_equal(kdl__cka_intervals(m), 0);
        return m;
}

static void test_probit(void **state)
{
        /* Python's statistics.NormalDist().inv_cdf, printed with repr(). */
        static const double p[7] = {0.025, 0.975, 0.3, 0.02425, 0.9999, 1e-10, 1e-300};
        static const double z[7] = {-1.9599639845400538, 1.9599639845400536, -0.5244005127080407,
                                    -1.9729610513118845, 3.7190164854557084, -6.361340902404056,
                                    -37.0470962993612};

        (void) state;
        for (int i = 0; i < 7; i++)
                assert_close(kdl__cka_probit(p[i]), z[i], 1e-14, 0.0);
        assert_close(kdl__cka_probit(0.5), 0.0, 0.0, 1e-16);
}

/* The three intervals, the standard deviation and the bias of twelve
 * replicates (one tied with the point value 0.48) and six jackknife
 * values, against numpy and statistics.NormalDist (the reference values
 * printed with repr()). */
static void test_interval_formulas(void **state)
{
        static const double rep[12] = {0.41, 0.47, 0.52, 0.38, 0.55, 0.49,
                                       0.44, 0.60, 0.51, 0.46, 0.48, 0.53};
        static const double jack[6] = {0.47, 0.49, 0.485, 0.46, 0.50, 0.478};
        static const double want[2][3][2] = {
                {{0.38825, 0.5862499999999999},
                 {0.37375, 0.57175},
                 {0.3853526233166187, 0.5791668958484648}},
                {{0.39649999999999996, 0.5725},
                 {0.38749999999999996, 0.5635},
                 {0.39103899767444283, 0.5597796980818551}},
        };

        (void) state;
        for (int lv = 0; lv < 2; lv++)
                for (int iv = 0; iv < KDL_CKA_INTERVAL_COUNT_; iv++) {
                        kdl_cka_matrix *m = summary_of(0.48, rep, 12, jack, 6, lv ? 0.9 : 0.95,
                                                       (enum kdl_cka_interval) iv);

                        assert_close(m->biased_lo[0], want[lv][iv][0], 1e-14, 0.0);
                        assert_close(m->biased_hi[0], want[lv][iv][1], 1e-14, 0.0);
                        assert_close(m->debiased_hi[0], want[lv][iv][1], 1e-14, 0.0);
                        assert_close(m->biased_se[0], 0.060952042747979454, 1e-14, 0.0);
                        assert_close(m->biased_bias[0], 0.006666666666666765, 1e-12, 0.0);
                        kdl_cka_matrix_free(m);
                }
}

/* BCa is undefined (NaN) when the point value is beyond every replicate or
 * the jackknife has fewer than two values; percentile and basic are not. */
static void test_bca_undefined(void **state)
{
        static const double rep[4] = {0.61, 0.65, 0.70, 0.63};
        static const double jack[3] = {0.5, NAN, NAN};

        (void) state;
        /* 0.6: beyond every replicate; 0.64: inside, but one jackknife value. */
        for (int c = 0; c < 2; c++)
                for (int iv = 0; iv < KDL_CKA_INTERVAL_COUNT_; iv++) {
                        kdl_cka_matrix *m = summary_of(c ? 0.64 : 0.6, rep, 4, jack, 3, 0.95,
                                                       (enum kdl_cka_interval) iv);
                        bool bca = iv == KDL_CKA_INTERVAL_BCA;

                        assert_true(bca == isnan(m->biased_lo[0]));
                        assert_true(bca == isnan(m->debiased_hi[0]));
                        assert_true(isfinite(m->biased_se[0]) && isfinite(m->biased_bias[0]));
                        kdl_cka_matrix_free(m);
                }
}

/* The interval option: default, names, parse; BCa's jackknife sums cost
 * memory; states of other intervals do not merge. */
static void test_interval_option(void **state)
{
        size_t w[2] = {3, 2};
        kdl_cka_opts o = opts(0, 5, 1), basic, bca;
        kdl_cka_state *s, *t, *u;
        enum kdl_cka_interval iv = KDL_CKA_INTERVAL_BASIC;

        (void) state;
        assert_int_equal(o.interval, KDL_CKA_INTERVAL_PERCENTILE);
        assert_string_equal(kdl_cka_interval_name(KDL_CKA_INTERVAL_PERCENTILE), "percentile");
        assert_string_equal(kdl_cka_interval_name(KDL_CKA_INTERVAL_BASIC), "basic");
        assert_string_equal(kdl_cka_interval_name(KDL_CKA_INTERVAL_BCA), "bca");
        assert_int_equal(kdl_cka_interval_parse("bca", &iv), 0);
        assert_int_equal(iv, KDL_CKA_INTERVAL_BCA);
        assert_int_equal(kdl_cka_interval_parse("studentized", &iv), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "percentile, basic or bca"));
        assert_int_equal(iv, KDL_CKA_INTERVAL_BCA);
        basic = bca = o;
        basic.interval = KDL_CKA_INTERVAL_BASIC;
        bca.interval = KDL_CKA_INTERVAL_BCA;
        assert_int_equal(kdl_cka_state_bytes(2, w, &basic), kdl_cka_state_bytes(2, w, &o));
        assert_true(kdl_cka_state_bytes(2, w, &bca) > kdl_cka_state_bytes(2, w, &o));
        assert_int_equal(kdl_cka_state_new(2, w, &o, &s), 0);
        assert_int_equal(kdl_cka_state_new(2, w, &basic, &t), 0);
        assert_int_equal(kdl_cka_state_new(2, w, &bca, &u), 0);
        assert_int_equal(kdl_cka_merge(s, t), -KDL_EMISMATCH);
        assert_int_equal(kdl_cka_merge(s, u), -KDL_EMISMATCH);
        assert_int_equal(kdl_cka_merge(u, s), -KDL_EMISMATCH);
        kdl_cka_state_free(u);
        kdl_cka_state_free(t);
        kdl_cka_state_free(s);
}

/* ---- wide layers: one-hot layers (class sums, exact), column strips (exact, external
 * pairs) and Gaussian sketches (an estimate with its standard error) ------------------- */

#define NW   600
#define MAXL 6
#define NCLS 9

/* Layers of a fixture: X [NW, 24] (offset 40, as features far from 0), Z [NW, 7] sharing
 * part of X, a class per row (uneven counts, class 8 empty), its one-hot [NW, 9] and the
 * classes as a column [NW, 1]; X and Z carry some of the class too. */
struct fix {
        double *x, *z, *hot, *cls;
};

static void fix_make(struct fix *f, uint64_t seed)
{
        kdl_test_rng g = {seed};

        f->x = randn(&g, NW * 24, 1.0, 40.0);
        f->z = randn(&g, NW * 7, 2.0, -1.0);
        f->hot = calloc(NW * NCLS, sizeof(double));
        f->cls = malloc(NW * sizeof(double));
        assert_non_null(f->hot);
        assert_non_null(f->cls);
        for (size_t i = 0; i < NW; i++) {
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
        for (size_t r0 = 0; r0 < NW; r0 += call) {
                size_t r1 = r0 + call < NW ? r0 + call : NW;

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
        dense[0] = hot[0] = kdl_tensor_wrap(f.x, 2, (size_t[]){NW, 24});
        dense[1] = kdl_tensor_wrap(f.hot, 2, (size_t[]){NW, NCLS});
        hot[1] = kdl_tensor_wrap(f.cls, 2, (size_t[]){NW, 1});
        dense[2] = hot[2] = kdl_tensor_wrap(f.z, 2, (size_t[]){NW, 7});
        a = feed(dense, 3, w, NULL, NULL, 0, NW, 30, KDL_CKA_INTERVAL_BCA,
                 KDL_CKA_PRECISION_DOUBLE);
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
        t[0] = kdl_tensor_wrap(f.x, 2, (size_t[]){NW, 24});
        t[1] = kdl_tensor_wrap(f.cls, 2, (size_t[]){NW, 1});
        t[2] = kdl_tensor_wrap(f.z, 2, (size_t[]){NW, 7});
        all = feed(t, 3, w, k, NULL, 0, NW, 10, KDL_CKA_INTERVAL_PERCENTILE,
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
                v[i] = kdl_tensor_view_rows(&t[i], 210, NW);
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
        t[0] = kdl_tensor_wrap(f.x, 2, (size_t[]){NW, 24});
        t[1] = kdl_tensor_wrap(f.cls, 2, (size_t[]){NW, 1});
        t[2] = kdl_tensor_wrap(f.z, 2, (size_t[]){NW, 7});
        for (int b = 0; b < 3; b++) {
                f.cls[NW - 1] = bad[b];
                assert_int_equal(kdl_cka_accumulate(s, t, ids), -KDL_ERANGE);
        }
        assert_int_equal(kdl_cka_finalize(s, &m), -KDL_EMISSING);
        /* The dense one-hot's width is refused for the classes' column. */
        f.cls[NW - 1] = 0.0;
        t[1] = kdl_tensor_wrap(f.hot, 2, (size_t[]){NW, NCLS});
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
        double *x2 = malloc(NW * 24 * sizeof(double)), *mean[4], fe[16], te[16], se[4];
        kdl_tensor t[4];
        kdl_cka_state *full, *main;
        kdl_cka_strips *st = NULL;
        kdl_cka_matrix *mf, *mm;

        (void) state;
        fix_make(&f, 9);
        assert_non_null(x2);
        /* A second wide layer: X squared, reversed. */
        for (size_t i = 0; i < NW; i++)
                for (size_t c = 0; c < 24; c++)
                        x2[i * 24 + c] = pow(f.x[i * 24 + 23 - c] - 40.0, 2.0) + 0.1 * (double) c;
        t[0] = kdl_tensor_wrap(f.x, 2, (size_t[]){NW, 24});
        t[1] = kdl_tensor_wrap(f.z, 2, (size_t[]){NW, 7});
        t[2] = kdl_tensor_wrap(f.cls, 2, (size_t[]){NW, 1});
        t[3] = kdl_tensor_wrap(x2, 2, (size_t[]){NW, 24});
        /* The wide layers 0 and 3: with themselves, each other and the labels. */
        ext[0 * 4 + 0] = ext[3 * 4 + 3] = ext[0 * 4 + 3] = true;
        ext[0 * 4 + 2] = ext[2 * 4 + 3] = true;
        full = feed(t, l, w, k, NULL, 0, NW, 0, KDL_CKA_INTERVAL_PERCENTILE,
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
                for (size_t r0 = 0; r0 < NW; r0 += 97) {
                        kdl_tensor v[4];
                        size_t r1 = r0 + 97 < NW ? r0 + 97 : NW;

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
        double *w = randn(&g, 24 * d, 1.0, 0.0), *xw = malloc(NW * d * sizeof(double));
        double *xh = malloc(NW * r * sizeof(double)), sum = 0.0, sq = 0.0, se = 0.0, exact;
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
        for (size_t i = 0; i < NW; i++)
                for (size_t c = 0; c < d; c++) {
                        double v = 0.05 * kdl_test_normal(&g);

                        for (size_t e = 0; e < 24; e++)
                                v += (f.x[i * 24 + e] - 40.0) * w[e * d + c];
                        xw[i * d + c] = v;
                }
        tw = kdl_tensor_wrap(xw, 2, (size_t[]){NW, d});
        t[0] = tw;
        t[1] = kdl_tensor_wrap(f.z, 2, (size_t[]){NW, 7});
        t[2] = kdl_tensor_wrap(f.cls, 2, (size_t[]){NW, 1});
        s = feed(t, 3, wd, kd, NULL, 0, NW, 0, 0, KDL_CKA_PRECISION_DOUBLE);
        assert_int_equal(kdl_cka_finalize(s, &me), 0);
        assert_null(me->biased_sketch_se);
        kdl_cka_state_free(s);
        exact = me->biased[1];
        for (int k = 0; k < reps; k++) {
                kdl_cka_sketch *sk = NULL;
                kdl_tensor th = kdl_tensor_wrap(xh, 2, (size_t[]){NW, r});

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
                cmocka_unit_test(test_feature_form_equals_gram_form),
                cmocka_unit_test(test_self_is_one_and_symmetric),
                cmocka_unit_test(test_linear_invariances),
                cmocka_unit_test(test_rbf_invariances),
                cmocka_unit_test(test_rbf_matches_naive),
                cmocka_unit_test(test_blocks_and_merge_equal_sequential),
                cmocka_unit_test(test_merge_into_empty_state),
                cmocka_unit_test(test_large_offset_keeps_accuracy),
                cmocka_unit_test(test_davari_subset_translation_limit),
                cmocka_unit_test(test_robust_without_removal_is_biased),
                cmocka_unit_test(test_minibatch_one_batch_is_debiased),
                cmocka_unit_test(test_minibatch_merge_equals_sequential),
                cmocka_unit_test(test_bootstrap_interval),
                cmocka_unit_test(test_bootstrap_replicates_are_resampled_data),
                cmocka_unit_test(test_pair_mask_computes_only_what_is_asked),
                cmocka_unit_test(test_constant_layer_gives_nan),
                cmocka_unit_test(test_error_paths),
                cmocka_unit_test(test_contract),
                cmocka_unit_test(test_mixed_agrees_with_double),
                cmocka_unit_test(test_mixed_any_units),
                cmocka_unit_test(test_mixed_rounds_products_to_float),
                cmocka_unit_test(test_mixed_merge),
                cmocka_unit_test(test_mixed_names_and_bytes),
                cmocka_unit_test(test_gram_weights_are_repeated_samples),
                cmocka_unit_test(test_gram_bootstrap_equals_feature),
                cmocka_unit_test(test_gram_replicates_and_jackknife_values),
                cmocka_unit_test(test_probit),
                cmocka_unit_test(test_interval_formulas),
                cmocka_unit_test(test_bca_undefined),
                cmocka_unit_test(test_interval_option),
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
