/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/error.h"
#include "metrics/base/tensor.h"
#include "metrics/kl-topk.h"

/*
 * The sparse teacher targets (metrics/kl-topk.h): the selection against a
 * counting reference, the identities of docs/lm.md (k = C gives the exact KL;
 * 0 <= topk_tail <= K), merging equals one pass, and every error path with
 * the state left as it was.  The numbers themselves are checked against numpy
 * in tests/ref/test_kl_topk.py.
 */

#define N 64
#define C 40

static void fill(uint64_t seed, double *zt, double *zs)
{
        kdl_test_rng r = {seed};

        for (size_t i = 0; i < N * C; i++) {
                zt[i] = 2.0 * kdl_test_normal(&r);
                zs[i] = 0.7 * zt[i] + kdl_test_normal(&r);
        }
}

static kdl_kl_topk_state *state(const size_t *k, size_t nk, const double *tau, size_t ntau)
{
        kdl_kl_topk_opts o;
        kdl_kl_topk_state *s = NULL;

        kdl_kl_topk_opts_init(&o);
        o.c = C;
        o.ntau = ntau;
        o.tau = tau;
        o.nk = nk;
        o.k = k;
        o.seed = 5;
        assert_int_equal(kdl_kl_topk_state_new(&o, &s), 0);
        return s;
}

static int add_rows(kdl_kl_topk_state *s, double *zt, double *zs, size_t r0, size_t m)
{
        kdl_tensor t = kdl_tensor_wrap(zt + r0 * C, 2, (size_t[]){m, C});
        kdl_tensor u = kdl_tensor_wrap(zs + r0 * C, 2, (size_t[]){m, C});
        kdl_kl_block b = {.row0 = r0, .zt = &t, .zs = &u};

        return kdl_kl_topk_accumulate(s, &b);
}

static void test_select_matches_counting(void **state_)
{
        double z[C];
        size_t idx[C];
        kdl_test_rng r = {3};

        (void) state_;
        for (size_t i = 0; i < C; i++)
                z[i] = round(3.0 * kdl_test_normal(&r)); /* many ties */
        for (size_t k = 1; k <= C; k++) {
                kdl_kl_topk_select(z, 1, C, k, idx);
                for (size_t j = 0; j < k; j++) {
                        /* Classes ranked above idx[j]: larger value, or equal at a smaller index.
                         */
                        size_t above = 0;

                        for (size_t i = 0; i < C; i++)
                                above += z[i] > z[idx[j]] || (!(z[i] < z[idx[j]]) && i < idx[j]);
                        assert_int_equal(above, j);
                }
        }
}

static void test_whole_vocabulary_and_bounds(void **state_)
{
        static double zt[N * C], zs[N * C];
        const size_t k[] = {C, 1, 7};
        const double tau[] = {1.0, 3.0};
        kdl_kl_topk_state *s = state(k, 3, tau, 2);
        kdl_kl_topk_result *r = NULL;

        (void) state_;
        fill(1, zt, zs);
        assert_int_equal(add_rows(s, zt, zs, 0, N), 0);
        assert_int_equal(kdl_kl_topk_finalize(s, &r), 0);
        for (size_t it = 0; it < 2; it++) {
                assert_close(kdl_kl_topk_fidelity(r, it, KDL_KL_TOPK_RENORM, 0)->ratio, 1.0, 1e-12,
                             0);
                assert_close(kdl_kl_topk_fidelity(r, it, KDL_KL_TOPK_TAIL, 0)->ratio, 1.0, 1e-12,
                             0);
                for (size_t ik = 1; ik < 3; ik++) {
                        double ratio = kdl_kl_topk_fidelity(r, it, KDL_KL_TOPK_TAIL, ik)->ratio;

                        assert_true(ratio >= 0.0 && ratio <= 1.0 + 1e-12);
                }
        }
        assert_int_equal(r->n, N);
        assert_true(r->spearman_exact);
        kdl_kl_topk_result_free(r);
        kdl_kl_topk_state_free(s);
}

static void test_merge_equals_one_pass(void **state_)
{
        static double zt[N * C], zs[N * C];
        const size_t k[] = {3, 9};
        const double tau[] = {2.0};
        kdl_kl_topk_state *a = state(k, 2, tau, 1), *b = state(k, 2, tau, 1);
        kdl_kl_topk_state *one = state(k, 2, tau, 1), *c = state(k, 2, tau, 1);
        kdl_kl_topk_result *ra = NULL, *ro = NULL, *rc = NULL;
        void *buf = NULL;
        size_t len = 0;

        (void) state_;
        fill(2, zt, zs);
        assert_int_equal(add_rows(one, zt, zs, 0, N), 0);
        assert_int_equal(add_rows(a, zt, zs, 0, 20), 0);
        assert_int_equal(add_rows(c, zt, zs, 0, 20), 0);
        assert_int_equal(add_rows(b, zt, zs, 20, N - 20), 0);
        /* Packed (as under MPI): the same merge; a short buffer is refused, @c unchanged. */
        assert_int_equal(kdl_kl_topk_state_pack(b, &buf, &len), 0);
        assert_int_equal(kdl_kl_topk_state_merge_packed(c, buf, len - 1), -KDL_ESCHEMA);
        assert_int_equal(kdl_kl_topk_state_merge_packed(c, buf, len), 0);
        free(buf);
        assert_int_equal(kdl_kl_topk_merge(a, b), 0);
        assert_int_equal(kdl_kl_topk_finalize(a, &ra), 0);
        assert_int_equal(kdl_kl_topk_finalize(c, &rc), 0);
        assert_int_equal(kdl_kl_topk_finalize(one, &ro), 0);
        for (size_t v = 0; v < KDL_KL_TOPK_VALUE_COUNT_; v++)
                for (size_t ik = 0; ik < 2; ik++) {
                        const kdl_kl_fidelity *x = kdl_kl_topk_fidelity(ra, 0, v, ik);
                        const kdl_kl_fidelity *y = kdl_kl_topk_fidelity(ro, 0, v, ik);
                        const kdl_kl_fidelity *z = kdl_kl_topk_fidelity(rc, 0, v, ik);

                        /* The same merge: mean, ratio, pearson, spearman, relerr bit for bit. */
                        assert_memory_equal(&z->mean, &x->mean, 5 * sizeof(double));

                        /* The draws depend on the sample index, not on the block. */
                        assert_close(x->mean, y->mean, 1e-13, 0);
                        assert_close(x->pearson, y->pearson, 1e-12, 0);
                        assert_close(x->spearman, y->spearman, 1e-15, 0);
                        assert_close(x->relerr, y->relerr, 1e-12, 0);
                }
        kdl_kl_topk_result_free(ra);
        kdl_kl_topk_result_free(rc);
        kdl_kl_topk_result_free(ro);
        kdl_kl_topk_state_free(a);
        kdl_kl_topk_state_free(b);
        kdl_kl_topk_state_free(c);
        kdl_kl_topk_state_free(one);
}

static void test_errors_leave_state(void **state_)
{
        static double zt[N * C], zs[N * C];
        const size_t k[] = {4}, bad_k[] = {C + 1}, twice[] = {4, 4}, zero[] = {0};
        const double tau[] = {1.0}, bad_tau[] = {0.0};
        kdl_kl_topk_opts o;
        kdl_kl_topk_state *s = state(k, 1, tau, 1), *other = NULL, *ret = NULL;
        kdl_kl_topk_result *r = NULL;
        kdl_tensor t, u;
        kdl_kl_block b;

        (void) state_;
        fill(4, zt, zs);
        kdl_kl_topk_opts_init(&o);
        o.c = C;
        o.ntau = 1;
        o.tau = tau;
        o.nk = 1;
        o.k = bad_k;
        assert_int_equal(kdl_kl_topk_state_new(&o, &ret), -KDL_ESHAPE);
        o.k = zero;
        assert_int_equal(kdl_kl_topk_state_new(&o, &ret), -KDL_ESHAPE);
        o.k = twice;
        o.nk = 2;
        assert_int_equal(kdl_kl_topk_state_new(&o, &ret), -KDL_ESHAPE);
        o.k = k;
        o.nk = 1;
        o.tau = bad_tau;
        assert_int_equal(kdl_kl_topk_state_new(&o, &ret), -KDL_ERANGE);
        assert_null(ret);

        assert_int_equal(kdl_kl_topk_finalize(s, &r), -KDL_EMISSING);
        assert_int_equal(add_rows(s, zt, zs, 0, 10), 0);
        zs[12 * C + 5] = NAN;
        assert_int_equal(add_rows(s, zt, zs, 10, 10), -KDL_ENONFINITE);
        assert_non_null(strstr(kdl_errmsg(), "sample 12"));
        t = kdl_tensor_wrap(zt, 2, (size_t[]){4, C - 1});
        u = kdl_tensor_wrap(zs, 2, (size_t[]){4, C - 1});
        b = (kdl_kl_block){.zt = &t, .zs = &u};
        assert_int_equal(kdl_kl_topk_accumulate(s, &b), -KDL_ESHAPE);
        other = state(k, 1, (const double[]){2.0}, 1);
        assert_int_equal(kdl_kl_topk_merge(s, other), -KDL_EMISMATCH);
        assert_int_equal(kdl_kl_topk_finalize(s, &r), 0);
        assert_int_equal(r->n, 10); /* only the first block */
        kdl_kl_topk_result_free(r);
        kdl_kl_topk_state_free(other);
        kdl_kl_topk_state_free(s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_select_matches_counting),
                cmocka_unit_test(test_whole_vocabulary_and_bounds),
                cmocka_unit_test(test_merge_equals_one_pass),
                cmocka_unit_test(test_errors_leave_state),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
