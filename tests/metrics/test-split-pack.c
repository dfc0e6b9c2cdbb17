/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/error.h"
#include "metrics/base/tensor.h"
#include "metrics/split.h"
#include "metrics/split-internal.h" /* the blocks' class boundaries */

/*
 * The split states as bytes (metrics/split-pack.c): merging a packed state
 * is merging the state itself, to the bit; a packed second pass made anew is
 * the same state; a bad buffer is refused and changes nothing.
 */

#define C_  9
#define N_  300
#define CUT 117 /* rows [0, CUT) on one process, [CUT, N_) on another */
/* Every packed state starts with its classes and options. */
#define HEADER (sizeof(size_t) + sizeof(kdl_split_opts))

static double zt[N_ * C_], zs[N_ * C_];
static int64_t y[N_];

static void make_data(void)
{
        kdl_test_rng rng = {5};

        for (size_t i = 0; i < N_; i++) {
                for (size_t j = 0; j < C_; j++) {
                        zt[i * C_ + j] = 3.0 * kdl_test_normal(&rng);
                        zs[i * C_ + j] = 0.6 * zt[i * C_ + j] + kdl_test_normal(&rng);
                }
                /* Class 4 has no sample. */
                y[i] = (int64_t) (kdl_test_uniform(&rng) * (C_ - 1));
                y[i] += y[i] >= 4;
        }
}

static kdl_split_opts two_taus(enum kdl_split_domain domain)
{
        kdl_split_opts o;

        kdl_split_opts_init(&o);
        o.ntaus = 2;
        o.taus[0] = 1.0;
        o.taus[1] = 3.5;
        o.nbins = 40;
        o.top_pairs = 11;
        o.domain = domain;
        return o;
}

static kdl_tensor rows(double *z, size_t r0, size_t r1)
{
        return kdl_tensor_wrap(z + r0 * C_, 2, (size_t[]){r1 - r0, C_});
}

static void first(kdl_split_state *s, size_t r0, size_t r1)
{
        kdl_tensor t = rows(zt, r0, r1), u = rows(zs, r0, r1);

        assert_int_equal(kdl_split_accumulate(s, &t, &u, y + r0), 0);
}

static void second(kdl_split_instance_state *s, size_t r0, size_t r1)
{
        kdl_tensor t = rows(zt, r0, r1), u = rows(zs, r0, r1);

        assert_int_equal(kdl_split_instance_accumulate(s, &t, &u, y + r0, NULL), 0);
}

static void assert_dist_same(const kdl_split_dist *a, const kdl_split_dist *b)
{
        assert_int_equal(a->n, b->n);
        assert_memory_equal(&a->mean, &b->mean, sizeof(double));
        assert_memory_equal(&a->std, &b->std, sizeof(double));
        assert_memory_equal(&a->min, &b->min, sizeof(double));
        assert_memory_equal(&a->max, &b->max, sizeof(double));
        assert_memory_equal(a->quantile, b->quantile, sizeof(a->quantile));
        assert_memory_equal(a->hist.count, b->hist.count, a->hist.nbins * sizeof(size_t));
}

/* Two results that must be the same to the bit. */
static void assert_same(const kdl_split_result *a, const kdl_split_result *b)
{
        assert_int_equal(a->n, b->n);
        assert_memory_equal(a->class_count, b->class_count, C_ * sizeof(size_t));
        assert_int_equal(a->teacher_correct, b->teacher_correct);
        assert_int_equal(a->student_correct, b->student_correct);
        for (size_t k = 0; k < a->ntaus; k++) {
                const kdl_split_tau_result *p = &a->tau[k], *q = &b->tau[k];

                assert_memory_equal(&p->kl, &q->kl, sizeof(double));
                assert_memory_equal(&p->tckd, &q->tckd, sizeof(double));
                assert_memory_equal(&p->nckd, &q->nckd, sizeof(double));
                assert_memory_equal(&p->nckd_coupled, &q->nckd_coupled, sizeof(double));
                assert_memory_equal(&p->residual_max, &q->residual_max, sizeof(double));
                assert_int_equal(p->omega_clipped, q->omega_clipped);
                assert_dist_same(&p->pt_y, &q->pt_y);
                assert_dist_same(&p->ps_y, &q->ps_y);
                assert_dist_same(&p->gap, &q->gap);
                assert_dist_same(&p->omega, &q->omega);
                assert_dist_same(&p->eps, &q->eps);
                assert_dist_same(&p->nt_entropy, &q->nt_entropy);
                assert_true((p->confusion == NULL) == (q->confusion == NULL));
                if (p->confusion)
                        assert_memory_equal(p->confusion, q->confusion, C_ * C_ * sizeof(double));
                assert_int_equal(p->ntop, q->ntop);
                if (p->ntop)
                        assert_memory_equal(p->top, q->top, p->ntop * sizeof(*p->top));
                assert_memory_equal(&p->pt_mean, &q->pt_mean, sizeof(double));
                assert_int_equal(p->has_instance, q->has_instance);
                if (!p->has_instance)
                        continue;
                assert_dist_same(&p->w, &q->w);
                assert_dist_same(&p->w_unguarded_dist, &q->w_unguarded_dist);
                assert_memory_equal(&p->pearson_w_pt, &q->pearson_w_pt, sizeof(double));
                assert_int_equal(p->w_guarded, q->w_guarded);
                assert_int_equal(p->w_nonpositive, q->w_nonpositive);
                assert_int_equal(p->w_above_one, q->w_above_one);
        }
}

/* Two "processes": *@a and its twin *@a2 with the rows [0, CUT), *@b with
 * [CUT, N_), all first passes of the options @o. */
static void two_processes(const kdl_split_opts *o, kdl_split_state **a, kdl_split_state **a2,
                          kdl_split_state **b)
{
        assert_int_equal(kdl_split_state_new(C_, o, a), 0);
        assert_int_equal(kdl_split_state_new(C_, o, a2), 0);
        assert_int_equal(kdl_split_state_new(C_, o, b), 0);
        first(*a, 0, CUT);
        first(*a2, 0, CUT);
        first(*b, CUT, N_);
}

/* Both passes on two "processes": merged as states, and as packed states. */
static void check_passes(enum kdl_split_domain domain)
{
        kdl_split_opts o = two_taus(domain);
        kdl_split_state *a = NULL, *b = NULL, *a2 = NULL, *one = NULL;
        kdl_split_instance_state *ia = NULL, *ib = NULL, *ia2 = NULL, *copy = NULL;
        kdl_split_result *r1 = NULL, *r2 = NULL;
        bool full = domain == KDL_SPLIT_DOMAIN_FULL;
        void *buf = NULL;
        size_t len = 0;

        two_processes(&o, &a, &a2, &b);
        assert_int_equal(kdl_split_merge(a, b), 0);
        assert_int_equal(kdl_split_state_pack(b, &buf, &len), 0);
        /* The sizes metrics/split.h gives. */
        assert_int_equal(len, HEADER + 8 * (C_ + 3 + 2 * (6 * 40 + 38 + (full ? C_ * C_ : 0))));
        assert_int_equal(kdl_split_state_merge_packed(a2, buf, len), 0);
        free(buf);

        /* The second pass: the empty state made on "process 0", sent, made anew. */
        assert_int_equal(kdl_split_instance_state_new(a, &ia), 0);
        assert_int_equal(kdl_split_instance_state_pack(ia, &buf, &len), 0);
        assert_int_equal(kdl_split_instance_state_new_packed(buf, len, &ib), 0);
        assert_int_equal(kdl_split_instance_state_new_packed(buf, len, &ia2), 0);
        free(buf);
        second(ia, 0, CUT);
        second(ia2, 0, CUT);
        second(ib, CUT, N_);
        assert_int_equal(kdl_split_instance_state_pack(ib, &buf, &len), 0);
        assert_int_equal(len, HEADER + 8 * (1 + 2 * (2 * KDL_SPLIT_W_SLOTS + 26)));
        assert_int_equal(kdl_split_instance_state_merge_packed(ia2, buf, len), 0);
        assert_int_equal(kdl_split_instance_state_new_packed(buf, len, &copy), 0);
        free(buf);
        assert_int_equal(kdl_split_instance_merge(ia, ib), 0);

        assert_int_equal(kdl_split_finalize(a, ia, NULL, NULL, NULL, &r1), 0);
        assert_int_equal(kdl_split_finalize(a2, ia2, NULL, NULL, NULL, &r2), 0);
        assert_same(r1, r2);
        assert_int_equal(r1->n, N_);
        assert_true(r1->tau[1].has_instance);

        /* p̄^t_y of the merged first pass is that of one pass over every row,
         * to the bit: an exact sum. */
        kdl_split_result_free(r2);
        assert_int_equal(kdl_split_state_new(C_, &o, &one), 0);
        first(one, 0, N_);
        assert_int_equal(kdl_split_finalize(one, NULL, NULL, NULL, NULL, &r2), 0);
        for (size_t k = 0; k < o.ntaus; k++)
                assert_memory_equal(&r1->tau[k].pt_mean, &r2->tau[k].pt_mean, sizeof(double));
        kdl_split_state_free(one);

        kdl_split_result_free(r1);
        kdl_split_result_free(r2);
        kdl_split_instance_state_free(copy);
        kdl_split_instance_state_free(ia);
        kdl_split_instance_state_free(ia2);
        kdl_split_instance_state_free(ib);
        kdl_split_state_free(a);
        kdl_split_state_free(a2);
        kdl_split_state_free(b);
}

static void test_passes_full(void **state)
{
        (void) state;
        check_passes(KDL_SPLIT_DOMAIN_FULL);
}

static void test_passes_off(void **state)
{
        (void) state;
        check_passes(KDL_SPLIT_DOMAIN_OFF);
}

/* The soft counts of the open block of @d, from its class boundaries:
 * b (2 (C - s) - b) for b classes from class s. */
static size_t open_doubles(const kdl_split_blocks *d)
{
        size_t s = d->start[d->q], b = d->start[d->q + 1] - s;

        return b * (2 * (C_ - s) - b);
}

/* The blocked domain level: every block accumulated on two "processes" and
 * merged packed gives the pairs of one process; the soft counts are sums of
 * the same terms in another order, so equal to rounding. */
static void test_blocks(void **state)
{
        kdl_split_opts o = two_taus(KDL_SPLIT_DOMAIN_BLOCKED);
        kdl_split_state *s = NULL, *sb = NULL;
        kdl_split_blocks *one = NULL, *a = NULL, *b = NULL;
        kdl_split_result *r1 = NULL, *r2 = NULL;
        kdl_tensor all = rows(zt, 0, N_), lo = rows(zt, 0, CUT), hi = rows(zt, CUT, N_);
        kdl_split_plan p;
        size_t passes = 0;
        int more;

        (void) state;
        assert_int_equal(kdl_split_plan_init(&p, C_, 0, 0, &o), 0);
        o.memory = p.least_bytes; /* the smallest budget: several blocks */
        assert_int_equal(kdl_split_plan_init(&p, C_, 0, 0, &o), 0);
        assert_true(p.fits && p.nblocks >= 2);
        assert_int_equal(kdl_split_state_new(C_, &o, &s), 0);
        assert_int_equal(kdl_split_state_new(C_, &o, &sb), 0);
        first(s, 0, N_);
        first(sb, CUT, N_);
        assert_int_equal(kdl_split_blocks_new(C_, 0, 0, &o, &one), 0);
        assert_int_equal(kdl_split_blocks_new(C_, 0, 0, &o, &a), 0);
        assert_int_equal(kdl_split_blocks_new(C_, 0, 0, &o, &b), 0);
        do {
                void *buf = NULL;
                size_t len = 0;

                assert_int_equal(kdl_split_blocks_accumulate(one, &all, y), 0);
                assert_int_equal(kdl_split_blocks_accumulate(a, &lo, y), 0);
                assert_int_equal(kdl_split_blocks_accumulate(b, &hi, y + CUT), 0);
                assert_int_equal(kdl_split_blocks_pack(b, &buf, &len), 0);
                assert_int_equal(len, HEADER + 8 * (2 + 2 * open_doubles(b)));
                assert_int_equal(kdl_split_blocks_merge_packed(a, buf, len), 0);
                free(buf);
                more = kdl_split_blocks_next(one, s, NULL, NULL);
                assert_int_equal(kdl_split_blocks_next(a, s, NULL, NULL), more);
                /* "Process 1" closes its block with its own first pass, as under MPI. */
                assert_int_equal(kdl_split_blocks_next(b, sb, NULL, NULL), more);
                passes++;
        } while (more == 1);
        assert_int_equal(more, 0);
        assert_int_equal(passes, p.nblocks);
        assert_int_equal(kdl_split_finalize(s, NULL, one, NULL, NULL, &r1), 0);
        assert_int_equal(kdl_split_finalize(s, NULL, a, NULL, NULL, &r2), 0);
        for (size_t k = 0; k < o.ntaus; k++) {
                const kdl_split_tau_result *p1 = &r1->tau[k], *p2 = &r2->tau[k];

                assert_int_equal(p1->ntop, o.top_pairs);
                assert_int_equal(p2->ntop, p1->ntop);
                for (size_t q = 0; q < p1->ntop; q++) {
                        assert_int_equal(p2->top[q].i, p1->top[q].i);
                        assert_int_equal(p2->top[q].j, p1->top[q].j);
                        assert_close(p2->top[q].mass, p1->top[q].mass, 1e-14, 0.0);
                }
        }
        kdl_split_result_free(r1);
        kdl_split_result_free(r2);
        kdl_split_blocks_free(one);
        kdl_split_blocks_free(a);
        kdl_split_blocks_free(b);
        kdl_split_state_free(s);
        kdl_split_state_free(sb);
}

/* A short buffer, a long one and one of other options are refused; the
 * state is unchanged. */
static void test_errors(void **state)
{
        kdl_split_opts o = two_taus(KDL_SPLIT_DOMAIN_FULL), other = o;
        kdl_split_state *a = NULL, *b = NULL, *c = NULL, *x = NULL, *empty = NULL;
        kdl_split_instance_state *i = NULL, *j = NULL;
        kdl_split_blocks *d = NULL, *d2 = NULL;
        kdl_split_plan plan;
        kdl_split_result *r1 = NULL, *r2 = NULL;
        unsigned char *buf = NULL, *longer;
        void *p = NULL;
        size_t len = 0;

        (void) state;
        other.lambda = 0.5;
        two_processes(&o, &a, &x, &b);
        assert_int_equal(kdl_split_state_new(C_, &other, &c), 0);
        first(c, CUT, N_);
        assert_int_equal(kdl_split_state_pack(b, &p, &len), 0);
        buf = p;
        assert_int_equal(kdl_split_state_merge_packed(a, buf, len - 8), -KDL_ESCHEMA);
        assert_int_equal(kdl_split_state_merge_packed(a, buf, 5), -KDL_ESCHEMA);
        longer = malloc(len + 8);
        memcpy(longer, buf, len);
        memset(longer + len, 0, 8);
        assert_int_equal(kdl_split_state_merge_packed(a, longer, len + 8), -KDL_ESCHEMA);
        free(longer);
        free(buf);
        assert_int_equal(kdl_split_state_pack(c, &p, &len), 0);
        assert_int_equal(kdl_split_state_merge_packed(a, p, len), -KDL_EMISMATCH);
        free(p);
        assert_int_equal(kdl_split_finalize(a, NULL, NULL, NULL, NULL, &r1), 0);
        assert_int_equal(kdl_split_finalize(x, NULL, NULL, NULL, NULL, &r2), 0);
        assert_same(r1, r2);

        /* Second passes of different first passes (another p̄^t_y). */
        assert_int_equal(kdl_split_instance_state_new(a, &i), 0);
        assert_int_equal(kdl_split_instance_state_new(b, &j), 0);
        assert_int_equal(kdl_split_instance_state_pack(j, &p, &len), 0);
        assert_int_equal(kdl_split_instance_state_merge_packed(i, p, len), -KDL_EMISMATCH);
        assert_int_equal(kdl_split_instance_state_merge_packed(i, p, len - 1), -KDL_ESCHEMA);
        free(p);

        /* Blocks: a short buffer; another open block (d2 closed its first, empty). */
        o.domain = KDL_SPLIT_DOMAIN_BLOCKED;
        o.memory = 0;
        assert_int_equal(kdl_split_plan_init(&plan, C_, 0, 0, &o), 0);
        o.memory = plan.least_bytes;
        assert_int_equal(kdl_split_state_new(C_, &o, &empty), 0);
        assert_int_equal(kdl_split_blocks_new(C_, 0, 0, &o, &d), 0);
        assert_int_equal(kdl_split_blocks_new(C_, 0, 0, &o, &d2), 0);
        assert_int_equal(kdl_split_blocks_next(d2, empty, NULL, NULL), 1);
        assert_int_equal(kdl_split_blocks_pack(d, &p, &len), 0);
        assert_int_equal(kdl_split_blocks_merge_packed(d, p, len - 8), -KDL_ESCHEMA);
        assert_int_equal(kdl_split_blocks_merge_packed(d2, p, len), -KDL_EMISMATCH);
        free(p);

        kdl_split_state_free(empty);
        kdl_split_blocks_free(d);
        kdl_split_blocks_free(d2);
        kdl_split_result_free(r1);
        kdl_split_result_free(r2);
        kdl_split_instance_state_free(i);
        kdl_split_instance_state_free(j);
        kdl_split_state_free(a);
        kdl_split_state_free(b);
        kdl_split_state_free(c);
        kdl_split_state_free(x);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_passes_full),
                cmocka_unit_test(test_passes_off),
                cmocka_unit_test(test_blocks),
                cmocka_unit_test(test_errors),
        };

        make_data();
        return cmocka_run_group_tests(tests, NULL, NULL);
}
