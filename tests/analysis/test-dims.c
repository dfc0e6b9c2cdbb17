/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "tests/lib/kdl-test-job.h"
#include "analysis/dims-internal.h"
#include "analysis/pass.h"

/* Columns of every block row: one pass reads each dataset once. */
static size_t widths(const kdl_checkpoint *ck)
{
        size_t w = kdl_dsinfo_width(ck->logits, KDL_SPATIAL_AVG);

        for (size_t l = 0; l < ck->nlayers; l++)
                w += kdl_dsinfo_width(&ck->layers[l].feature, KDL_SPATIAL_AVG);
        return w;
}

/* Run @jobs on a fresh stream; check the passes made. */
static void run_on_stream(size_t n, const kdl_pair *pair, size_t block_rows, kdl__job *jobs,
                          size_t njobs, unsigned want_passes, uint64_t want_values)
{
        struct kdl_stream_opts so = {.block_rows = block_rows};
        kdl_stream *s = NULL;
        unsigned passes = 0;

        assert_int_equal(kdl_stream_new(n, pair, &so, &s), 0);
        assert_int_equal(kdl__jobs_run(s, jobs, njobs, &passes), 0);
        assert_int_equal(passes, want_passes);
        if (want_values)
                assert_int_equal(kdl_stream_values_read(s), want_values);
        kdl_stream_free(s);
}

/*
 * The dims jobs of the teacher and the student at "final", each run with
 * another job on its stream (one that wants two passes, reads a dataset dims
 * does not, in smaller blocks), give the same document as kdl_run_dims() with
 * the same blocks; the dims job alone makes one pass reading each dataset
 * once.
 */
static void test_jobs_with_others_match_the_command(void **state)
{
        kdl_inputs *in = kdl_test_fixture_inputs(true);
        kdl_h5file *tf = in->teacher, *sf = in->students[0];
        const kdl_checkpoint *tck = kdl_h5_checkpoint(tf, "final"),
                             *sck = kdl_h5_checkpoint(sf, "final");
        struct kdl_run_dims_opts o;
        struct kdl_ckpair cp = {.main = sck, .partner = tck};
        struct kdl_test_probe ot = {.f = tf, .ds = tck->grad_logits, .passes = 2},
                              os = {.f = sf, .ds = sck->grad_logits, .student = true, .passes = 2};
        size_t n = in->pairs[0]->n;
        struct kdl__dims_run *r = NULL;
        kdl_doc *alone = NULL, *together = NULL;
        kdl__job jobs[2];
        char *a, *b;

        (void) state;
        kdl_run_dims_opts_init(&o);
        o.common.checkpoint = "final";
        o.common.block_rows = 7;
        assert_int_equal(kdl_doc_new("dims", &alone), 0);
        assert_int_equal(kdl_run_dims(in, &o, alone), 0);

        assert_int_equal(kdl_doc_new("dims", &together), 0);
        assert_int_equal(kdl__dims_begin(in, &o, together, &r), 0);
        jobs[0] = kdl_test_probe_job(&ot);
        assert_int_equal(kdl__dims_teacher_job(r, tck, &jobs[1]), 0);
        run_on_stream(kdl_h5_dump(tf)->n, NULL, 7, jobs, 2, 2, 0);
        assert_int_equal(ot.blocks[1], 9); /* 60 rows in blocks of 7 */
        assert_int_equal(kdl__dims_job(r, 0, &cp, &jobs[0]), 0);
        jobs[1] = kdl_test_probe_job(&os);
        run_on_stream(n, in->pairs[0], 7, jobs, 2, 2, 0);
        assert_int_equal(kdl__dims_end(r), 0);

        a = kdl_test_doc_json(alone);
        b = kdl_test_doc_json(together);
        assert_string_equal(a, b);
        assert_non_null(strstr(a, "\"verdict\""));
        free(a);
        free(b);
        kdl_doc_free(together);

        /* Alone, in the default blocks: one pass, every dataset read once
         * (the teacher's logits are X of the logits and Y of its layers); over
         * the pair, the pairing check reads both dumps' labels besides. */
        assert_int_equal(kdl_doc_new("dims", &together), 0);
        o.common.block_rows = 0;
        assert_int_equal(kdl__dims_begin(in, &o, together, &r), 0);
        assert_int_equal(kdl__dims_teacher_job(r, tck, &jobs[0]), 0);
        run_on_stream(kdl_h5_dump(tf)->n, NULL, 0, jobs, 1, 1,
                      (uint64_t) kdl_h5_dump(tf)->n * widths(tck));
        assert_int_equal(kdl__dims_job(r, 0, &cp, &jobs[0]), 0);
        run_on_stream(n, in->pairs[0], 0, jobs, 1, 1,
                      (uint64_t) n *
                              (widths(sck) + kdl_dsinfo_width(tck->logits, KDL_SPATIAL_AVG) + 2));
        assert_int_equal(kdl__dims_end(r), 0);

        kdl_doc_free(together);
        kdl_doc_free(alone);
        kdl_inputs_free(in);
}

/* A student job needs its teacher checkpoint analysed first; a teacher
 * checkpoint is analysed once; nothing leaks when the run is aborted. */
static void test_job_order(void **state)
{
        kdl_inputs *in = kdl_test_fixture_inputs(true);
        const kdl_checkpoint *tck = kdl_h5_checkpoint(in->teacher, "final");
        struct kdl_ckpair cp = {.main = kdl_h5_checkpoint(in->students[0], "final"),
                                .partner = tck};
        struct kdl_run_dims_opts o;
        struct kdl__dims_run *r = NULL;
        kdl_doc *doc = NULL;
        kdl__job job;

        (void) state;
        kdl_run_dims_opts_init(&o);
        assert_int_equal(kdl_doc_new("dims", &doc), 0);
        assert_int_equal(kdl__dims_begin(in, &o, doc, &r), 0);
        assert_int_equal(kdl__dims_job(r, 0, &cp, &job), -KDL_EUSAGE);
        assert_string_equal(kdl_errmsg(), "internal: teacher checkpoint final first");
        assert_int_equal(kdl__dims_teacher_job(r, tck, &job), 0);
        run_on_stream(kdl_h5_dump(in->teacher)->n, NULL, 0, &job, 1, 1, 0);
        assert_int_equal(kdl__dims_teacher_job(r, tck, &job), -KDL_EUSAGE);
        /* A job set up but never run, then the run given up. */
        assert_int_equal(kdl__dims_job(r, 0, &cp, &job), 0);
        kdl__dims_abort(r);
        kdl__dims_abort(NULL);
        assert_int_equal(kdl_doc_ntables(doc), 0);
        kdl_doc_free(doc);
        kdl_inputs_free(in);
}

/* The document of kdl_run_dims() on the fixture with @o (every checkpoint). */
static kdl_doc *run_dims(kdl_inputs *in, const struct kdl_run_dims_opts *o)
{
        kdl_doc *doc = NULL;

        assert_int_equal(kdl_doc_new("dims", &doc), 0);
        assert_int_equal(kdl_run_dims(in, o, doc), 0);
        return doc;
}

/* Cell @key of row @i of @t as a number (an integer too). */
static double num(const kdl_table *t, int i, const char *key)
{
        int c = kdl_table_find(t, key);
        const kdl_cell *x;

        assert_true(c >= 0 && i >= 0);
        x = kdl_table_cell(t, (size_t) i, (size_t) c);
        assert_true(x->type == KDL_CELL_REAL || x->type == KDL_CELL_INT);
        return x->type == KDL_CELL_REAL ? x->v.r : (double) x->v.i;
}

static const char *str(const kdl_table *t, int i, const char *key)
{
        int c = kdl_table_find(t, key);
        const kdl_cell *x;

        assert_true(c >= 0 && i >= 0);
        x = kdl_table_cell(t, (size_t) i, (size_t) c);
        assert_int_equal(x->type, KDL_CELL_STR);
        return x->v.s;
}

/* The rows of @t with layer "logits", in order, into @rows (at most 8). */
static size_t logit_rows(const kdl_table *t, int *rows)
{
        const char *const keys[] = {"layer"}, *const vals[] = {"logits"};
        size_t n = 0;

        for (int i = kdl_table_find_row(t, 0, 1, keys, vals); i >= 0 && n < 8;
             i = kdl_table_find_row(t, (size_t) i + 1, 1, keys, vals))
                rows[n++] = i;
        return n;
}

/*
 * The centred-logit spectrum by every method: the exact Gram equals the
 * covariance, a sketch as wide as C is exact and says so; auto with
 * --exact-max 0 sketches; the default (exact features) adds no column; a
 * budget too small is refused before a pass.
 */
static void test_logit_methods_and_budget(void **state)
{
        kdl_inputs *in = kdl_test_fixture_inputs(true);
        struct kdl_run_dims_opts o;
        kdl_doc *ref, *doc;
        const kdl_table *rt, *t, *rv, *v;
        int rr[8], rm[8];
        size_t nr, nm;

        (void) state;
        kdl_run_dims_opts_init(&o);
        o.common.checkpoint = "all";
        ref = run_dims(in, &o);
        rt = kdl_doc_find_table(ref, "dims");
        rv = kdl_doc_find_table(ref, "verdict");
        assert_true(kdl_table_find(rt, "spectrum_method") < 0);
        assert_true(kdl_table_find(rv, "spectrum_method") < 0);
        nr = logit_rows(rt, rr);
        assert_true(nr >= 3);

        for (int m = KDL_SPECTRAL_EXACT_GRAM; m <= KDL_SPECTRAL_SKETCH + 1; m++) {
                const char *want =
                        m <= KDL_SPECTRAL_SKETCH ? kdl_spectral_method_name(m) : "sketch";

                kdl_run_dims_opts_init(&o);
                o.common.checkpoint = "all";
                if (m <= KDL_SPECTRAL_SKETCH)
                        o.logit_method = m;
                else
                        o.exact_max = 0; /* auto, nothing exact */
                o.sketch_rank = 5;       /* = C: the sketch is exact */
                o.sketch_oversample = 3;
                doc = run_dims(in, &o);
                t = kdl_doc_find_table(doc, "dims");
                v = kdl_doc_find_table(doc, "verdict");
                nm = logit_rows(t, rm);
                assert_int_equal(nm, nr);
                for (size_t k = 0; k < nr; k++) {
                        double tot = num(rt, rr[k], "total_variance");

                        assert_string_equal(str(t, rm[k], "spectrum_method"), want);
                        assert_close(num(t, rm[k], "total_variance"), tot, 1e-12, 0);
                        assert_close(num(t, rm[k], "top_eigenvalue"),
                                     num(rt, rr[k], "top_eigenvalue"), 1e-9, 0);
                        assert_close(num(t, rm[k], "dims_99"), num(rt, rr[k], "dims_99"), 0, 0);
                        if (m == KDL_SPECTRAL_EXACT_GRAM)
                                assert_close(num(t, rm[k], "effective_rank"),
                                             num(rt, rr[k], "effective_rank"), 1e-10, 0);
                        else
                                assert_true(num(t, rm[k], "eigenvalue_bound") < 1e-9 * tot);
                }
                for (size_t i = 0; i < kdl_table_rows(rv); i++) {
                        assert_close(num(v, (int) i, "d_needed"), num(rv, (int) i, "d_needed"), 0,
                                     0);
                        assert_close(num(v, (int) i, "residual_at_d_s"),
                                     num(rv, (int) i, "residual_at_d_s"), 0, 1e-10);
                        assert_string_equal(str(v, (int) i, "verdict"),
                                            str(rv, (int) i, "verdict"));
                        if (m != KDL_SPECTRAL_EXACT_GRAM)
                                assert_close(num(v, (int) i, "d_needed_lo"),
                                             num(rv, (int) i, "d_needed"), 0, 0);
                }
                kdl_doc_free(doc);
        }

        /* Too small a budget: refused before any job, with the largest part and the way out. */
        kdl_run_dims_opts_init(&o);
        o.common.memory = 4096;
        assert_int_equal(kdl_doc_new("dims", &doc), 0);
        assert_int_equal(kdl_run_dims(in, &o, doc), -KDL_EBUDGET);
        assert_non_null(strstr(kdl_errmsg(), "dims needs "));
        assert_non_null(strstr(kdl_errmsg(), "(--memory is 4 KiB): lower it with --block-rows"));
        assert_int_equal(kdl_doc_ntables(doc), 0);
        kdl_doc_free(doc);
        kdl_doc_free(ref);
        kdl_inputs_free(in);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_jobs_with_others_match_the_command),
                cmocka_unit_test(test_job_order),
                cmocka_unit_test(test_logit_methods_and_budget),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
