/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "tests/lib/kdl-test-job.h"
#include "analysis/cka-internal.h"

/* Every table of @b as in @a: the same keys, strings and integers, reals
 * within @rtol (the sums of other block sizes differ in the last bits). */
static void assert_docs_close(const kdl_doc *a, const kdl_doc *b, double rtol)
{
        assert_int_equal(kdl_doc_ntables(a), kdl_doc_ntables(b));
        for (size_t k = 0; k < kdl_doc_ntables(a); k++) {
                const kdl_table *x = kdl_doc_table(a, k), *y = kdl_doc_table(b, k);

                assert_string_equal(kdl_table_name(x), kdl_table_name(y));
                assert_int_equal(kdl_table_rows(x), kdl_table_rows(y));
                assert_int_equal(kdl_table_cols(x), kdl_table_cols(y));
                assert_true(kdl_table_rows(x) > 0);
                for (size_t c = 0; c < kdl_table_cols(x); c++)
                        assert_string_equal(kdl_table_key(x, c), kdl_table_key(y, c));
                for (size_t i = 0; i < kdl_table_rows(x); i++)
                        for (size_t c = 0; c < kdl_table_cols(x); c++) {
                                const kdl_cell *u = kdl_table_cell(x, i, c),
                                               *v = kdl_table_cell(y, i, c);

                                assert_int_equal(u->type, v->type);
                                if (u->type == KDL_CELL_STR)
                                        assert_string_equal(u->v.s, v->v.s);
                                else if (u->type == KDL_CELL_INT)
                                        assert_int_equal(u->v.i, v->v.i);
                                else if (u->type == KDL_CELL_BOOL)
                                        assert_int_equal(u->v.b, v->v.b);
                                else if (u->type == KDL_CELL_REAL && isnan(u->v.r))
                                        assert_true(isnan(v->v.r));
                                else if (u->type == KDL_CELL_REAL)
                                        /* arccos at 1 turns rounding e into √(2e). */
                                        assert_close(
                                                v->v.r, u->v.r, rtol,
                                                strcmp(kdl_table_key(x, c), "procrustes_angular")
                                                        ? 1e-14
                                                        : 1e-7);
                        }
        }
}

/*
 * Two cka runs with different options (RBF kernel and bootstrap; minibatch and every
 * --measure)
 * and a third job, all on one stream of small blocks per checkpoint, give
 * the rows kdl_run_cka() gives for each run alone, in one pass that reads
 * each dataset once for all of them.
 */
static void run_shared(bool student)
{
        kdl_inputs *in = kdl_test_fixture_inputs(student);
        kdl_h5file *fb = student ? in->students[0] : NULL;
        struct kdl_run_cka_opts o[2];
        kdl_doc *alone[2] = {NULL, NULL}, *shared[2] = {NULL, NULL};
        struct kdl__cka_run *r[2] = {NULL, NULL};
        struct kdl_ckpair *cks = NULL;
        size_t nck = 0, n = student ? in->pairs[0]->n : kdl_h5_dump(in->teacher)->n;

        kdl_run_cka_opts_init(&o[0]);
        o[0].common.checkpoint = "all";
        o[0].kernel = KDL_CKA_RBF;
        o[0].bootstrap = 5;
        o[0].seed = 3;
        kdl_run_cka_opts_init(&o[1]);
        o[1].common.checkpoint = "all";
        o[1].estimator = KDL_RUN_CKA_MINIBATCH;
        o[1].batch = 8;
        o[1].seed = 7;
        assert_int_equal(kdl_run_cka_measures_parse("all", &o[1].measures), 0);
        for (int k = 0; k < 2; k++) {
                assert_int_equal(kdl_doc_new("cka", &alone[k]), 0);
                assert_int_equal(kdl_run_cka(in, &o[k], alone[k]), 0);
                assert_int_equal(kdl_doc_new("cka", &shared[k]), 0);
                assert_int_equal(kdl__cka_begin(in, &o[k], shared[k], &r[k]), 0);
        }
        assert_int_equal(kdl_select_checkpoints(in->teacher, fb, "all", "same", &cks, &nck), 0);
        assert_int_equal(nck, 2);
        for (size_t c = 0; c < nck; c++) {
                const kdl_checkpoint *other = student ? cks[c].partner : cks[c].main;
                struct kdl_test_probe cnt = {
                        .f = student ? fb : in->teacher, .ds = other->logits, .student = student};
                kdl__job jobs[3] = {kdl_test_probe_job(&cnt)};
                size_t nds = cks[c].main->nlayers + 1 + 1; /* A's layers, logits, labels */
                kdl_stream *s = NULL;
                unsigned passes = 0;

                if (student)
                        nds += cks[c].partner->nlayers + 1;
                assert_int_equal(kdl__cka_job(r[0], 0, &cks[c], &jobs[1]), 0);
                assert_int_equal(kdl__cka_job(r[1], 0, &cks[c], &jobs[2]), 0);
                assert_int_equal(kdl_stream_new(n, student ? in->pairs[0] : NULL,
                                                &(struct kdl_stream_opts){.block_rows = 7}, &s),
                                 0);
                assert_int_equal(kdl__jobs_run(s, jobs, 3, &passes), 0);
                assert_int_equal(passes, 1);
                assert_int_equal(kdl_stream_count(s), nds);
                assert_int_equal(cnt.rows[0], n);
                assert_int_equal(cnt.blocks[0], (n + 6) / 7);
                kdl_stream_free(s);
        }
        for (int k = 0; k < 2; k++) {
                assert_int_equal(kdl__cka_end(r[k]), 0);
                assert_docs_close(alone[k], shared[k], 1e-10);
                kdl_doc_free(shared[k]);
                kdl_doc_free(alone[k]);
        }
        free(cks);
        kdl_inputs_free(in);
}

static void test_jobs_share_stream(void **state)
{
        (void) state;
        run_shared(true);
}

static void test_jobs_share_stream_one_model(void **state)
{
        (void) state;
        run_shared(false);
}

/* A job that cannot start (it needs more than --memory) says so in one line
 * naming the analysis, the size and the option, and the run is freed by
 * abort; impossible options fail in begin. */
static void test_job_errors(void **state)
{
        kdl_inputs *in = kdl_test_fixture_inputs(true);
        struct kdl_run_cka_opts o, bad;
        struct kdl__cka_run *r = NULL, *never = NULL;
        struct kdl_ckpair *cks = NULL;
        size_t nck = 0;
        kdl_doc *doc = NULL;
        kdl__job job;

        (void) state;
        kdl_run_cka_opts_init(&o);
        o.bootstrap = 5;
        o.common.memory = 1;
        kdl_run_cka_opts_init(&bad);
        bad.kernel = KDL_CKA_RBF;
        bad.estimator = KDL_RUN_CKA_MINIBATCH;
        assert_int_equal(kdl_doc_new("cka", &doc), 0);
        assert_int_equal(kdl__cka_begin(in, &bad, doc, &never), -KDL_EUSAGE);
        assert_null(never);
        kdl_run_cka_opts_init(&bad);
        bad.svcca_keep = 0.0;
        assert_int_equal(kdl__cka_begin(in, &bad, doc, &never), -KDL_EUSAGE);
        assert_null(never);
        assert_int_equal(kdl_run_cka_measures_parse("cca,bogus", &bad.measures), -KDL_EUSAGE);
        assert_int_equal(kdl_run_cka_measures_parse("pwcca", &bad.measures), 0);
        assert_int_equal(bad.measures,
                         (1u << KDL_RUN_CKA_MEASURE_CKA) | (1u << KDL_RUN_CKA_MEASURE_PWCCA));
        assert_int_equal(kdl__cka_begin(in, &o, doc, &r), 0);
        assert_int_equal(
                kdl_select_checkpoints(in->teacher, in->students[0], NULL, "same", &cks, &nck), 0);
        assert_int_equal(kdl__cka_job(r, 0, &cks[0], &job), -KDL_EBUDGET);
        assert_non_null(strstr(kdl_errmsg(), "cka needs "));
        assert_non_null(strstr(kdl_errmsg(), "(--memory is 1 B): lower it with "));
        assert_null(strchr(kdl_errmsg(), '\n'));
        kdl__cka_abort(r);
        kdl__cka_abort(NULL);
        assert_int_equal(kdl_doc_ntables(doc), 0);
        free(cks);
        kdl_doc_free(doc);
        kdl_inputs_free(in);
}

/* @n entries of @a and @b within @atol (both NaN counts as agreeing). */
static void assert_arrays_close(const double *a, const double *b, size_t n, double atol)
{
        for (size_t i = 0; i < n; i++)
                if (!(isnan(a[i]) && isnan(b[i])))
                        assert_close(a[i], b[i], 0.0, atol);
}

/*
 * A bootstrap is never lost to Gram space: with every source narrower than
 * the samples, the pass forced into Gram space gives the feature-space
 * pass's bootstrap, replicate by replicate within 1e-10, for every interval
 * type (teacher and student, the student stored in another order and joined
 * on /sample_ids).
 */
static void test_gram_bootstrap_equals_feature(void **state)
{
        kdl_inputs *in = kdl_test_fixture_inputs(true);
        struct kdl_ckpair *cks = NULL;
        struct kdl__srcs l = {0};
        size_t nck = 0, sub[4] = {0, 1, 2, 3}, ll;

        (void) state;
        assert_int_equal(
                kdl_select_checkpoints(in->teacher, in->students[0], NULL, "same", &cks, &nck), 0);
        assert_int_equal(kdl__srcs_add_checkpoint(&l, cks[0].main, 0, KDL_SPATIAL_AVG), 0);
        assert_int_equal(kdl__srcs_add_checkpoint(&l, cks[0].partner, 1, KDL_SPATIAL_AVG), 0);
        ll = l.n * l.n;
        for (int iv = 0; iv < KDL_CKA_INTERVAL_COUNT_; iv++) {
                struct kdl__cka_results res[2] = {{0}, {0}};
                const kdl_cka_matrix *f, *g;

                for (int k = 0; k < 2; k++) {
                        struct kdl__cka_compute_opts o = {.spatial = KDL_SPATIAL_AVG,
                                                          .bootstrap = 25,
                                                          .interval = (enum kdl_cka_interval) iv,
                                                          .seed = 4,
                                                          .robust = 0.01,
                                                          .max_bytes = SIZE_MAX,
                                                          .gram = k == 1};

                        assert_int_equal(kdl__cka_compute(in, in->pairs[0], &l, 0, &o, sub, 4,
                                                          &res[k], NULL),
                                         0);
                }
                f = res[0].lin;
                g = res[1].lin;
                assert_false(res[0].gram);
                assert_true(res[1].gram);
                assert_int_equal(g->bootstrap, 25);
                assert_int_equal(g->ngroups, f->ngroups);
                assert_arrays_close(f->biased, g->biased, ll, 1e-12);
                assert_arrays_close(f->biased_rep, g->biased_rep, 25 * ll, 1e-10);
                assert_arrays_close(f->debiased_rep, g->debiased_rep, 25 * ll, 1e-10);
                if (f->ngroups)
                        assert_arrays_close(f->debiased_jack, g->debiased_jack, f->ngroups * ll,
                                            1e-10);
                assert_arrays_close(f->biased_lo, g->biased_lo, ll, 1e-10);
                assert_arrays_close(f->biased_hi, g->biased_hi, ll, 1e-10);
                assert_arrays_close(f->debiased_lo, g->debiased_lo, ll, 1e-10);
                assert_arrays_close(f->debiased_hi, g->debiased_hi, ll, 1e-10);
                assert_arrays_close(f->debiased_se, g->debiased_se, ll, 1e-10);
                assert_arrays_close(f->biased_bias, g->biased_bias, ll, 1e-10);
                /* Pairs across the models have finite intervals. */
                assert_true(isfinite(g->biased_lo[l.n - 1]) && isfinite(g->debiased_hi[l.n - 1]));
                kdl__cka_results_release(&res[1]);
                kdl__cka_results_release(&res[0]);
        }
        kdl__srcs_release(&l);
        free(cks);
        kdl_inputs_free(in);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_jobs_share_stream),
                cmocka_unit_test(test_jobs_share_stream_one_model),
                cmocka_unit_test(test_job_errors),
                cmocka_unit_test(test_gram_bootstrap_equals_feature),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
