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

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_jobs_with_others_match_the_command),
                cmocka_unit_test(test_job_order),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
