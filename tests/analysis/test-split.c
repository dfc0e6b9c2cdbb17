/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/lib/kdl-test.h"
#include "tests/lib/kdl-test-job.h"
#include "analysis/split-internal.h"

static void opts_init(struct kdl_run_split_opts *o)
{
        kdl_run_split_opts_init(o);
        o->common.checkpoint = "all";
        o->common.ntau = 2;
        o->common.tau[0] = 1.5;
        o->common.tau[1] = 4.0;
        o->long_tables = true;
}

static char *run_alone(kdl_inputs *in, const struct kdl_run_split_opts *o)
{
        kdl_doc *d = NULL;
        char *json;

        assert_int_equal(kdl_doc_new("split", &d), 0);
        assert_int_equal(kdl_run_split(in, o, d), 0);
        json = kdl_test_doc_json(d);
        kdl_doc_free(d);
        return json;
}

/* Two split runs and two other jobs (one that stops after pass 0, one that
 * wants three passes, one sharing the teacher's logits) on one stream with
 * other block sizes: each split document is the one kdl_run_split() makes
 * alone, and the other jobs see every sample in each of their passes. */
static void test_jobs_with_others_match_run(void **state)
{
        kdl_inputs *in = kdl_test_fixture_inputs(true);
        struct kdl_run_split_opts o;
        struct kdl__split_run *r1 = NULL, *r2 = NULL;
        kdl_doc *d1 = NULL, *d2 = NULL;
        struct kdl_ckpair *cks = NULL;
        size_t ncks = 0;
        char *alone, *j1, *j2;

        (void) state;
        opts_init(&o);
        alone = run_alone(in, &o);

        o.common.block_rows = 7;
        assert_int_equal(kdl_doc_new("split", &d1), 0);
        assert_int_equal(kdl_doc_new("split", &d2), 0);
        assert_int_equal(kdl__split_begin(in, &o, d1, &r1), 0);
        assert_int_equal(kdl__split_begin(in, &o, d2, &r2), 0);
        assert_int_equal(
                kdl_select_checkpoints(in->students[0], in->teacher, "all", NULL, &cks, &ncks), 0);
        assert_true(ncks >= 2);
        for (size_t q = 0; q < ncks; q++) {
                const kdl_pair *pair = in->pairs[0];
                struct kdl_test_probe a = {.f = in->teacher,
                                           .ds = cks[q].partner->logits,
                                           .passes = 3},
                                      b = {.f = in->students[0],
                                           .ds = &cks[q].main->layers[0].feature,
                                           .student = true,
                                           .passes = 1};
                kdl__job jobs[4];
                kdl_stream *s = NULL;
                unsigned passes = 0;

                jobs[0] = kdl_test_probe_job(&a);
                assert_int_equal(kdl__split_job(r1, 0, &cks[q], &jobs[1]), 0);
                jobs[2] = kdl_test_probe_job(&b);
                assert_int_equal(kdl__split_job(r2, 0, &cks[q], &jobs[3]), 0);
                assert_int_equal(kdl_stream_new(pair->n, pair,
                                                &(struct kdl_stream_opts){.block_rows = 7}, &s),
                                 0);
                assert_int_equal(kdl__jobs_run(s, jobs, 4, &passes), 0);
                assert_int_equal(passes, 3);
                assert_true(fabs(a.sum[0]) > 0.0 && fabs(b.sum[0]) > 0.0);
                assert_close(a.sum[1], a.sum[0], 1e-12, 0.0);
                assert_close(a.sum[2], a.sum[0], 1e-12, 0.0);
                assert_true(!(fabs(b.sum[1]) > 0.0)); /* pass 1 never reached it */
                kdl_stream_free(s);
        }
        free(cks);
        assert_int_equal(kdl__split_end(r1), 0);
        assert_int_equal(kdl__split_end(r2), 0);
        j1 = kdl_test_doc_json(d1);
        j2 = kdl_test_doc_json(d2);
        kdl_doc_free(d1);
        kdl_doc_free(d2);
        assert_string_equal(j1, alone);
        assert_string_equal(j2, alone);
        free(j1);
        free(j2);
        free(alone);
        kdl_inputs_free(in);
}

/* A new job finishes with the previous one, even one that never ran; a pair
 * without a teacher checkpoint is an error; abort commits no per-sample file
 * and end commits it. */
static void test_job_lifecycle(void **state)
{
        kdl_inputs *in = kdl_test_fixture_inputs(true);
        struct kdl_run_split_opts o;
        struct kdl__split_run *r = NULL;
        struct kdl_ckpair *cks = NULL;
        size_t ncks = 0;
        kdl_doc *d = NULL;
        kdl__job job;
        const char *dir = kdl_test_tmpdir();
        char *path = NULL;

        (void) state;
        opts_init(&o);
        assert_true(asprintf(&path, "%s/ps.h5", dir) > 0);
        o.common.per_sample = path;
        assert_int_equal(
                kdl_select_checkpoints(in->students[0], in->teacher, "all", NULL, &cks, &ncks), 0);

        assert_int_equal(kdl_doc_new("split", &d), 0);
        assert_int_equal(kdl__split_begin(in, &o, d, &r), 0);
        assert_int_equal(kdl__split_job(r, 0, &cks[0], &job), 0);
        assert_int_equal(kdl__split_job(r, 0, &(struct kdl_ckpair){.main = cks[0].main}, &job),
                         -KDL_EMISSING);
        kdl__split_abort(r);
        assert_int_not_equal(access(path, F_OK), 0);
        kdl_doc_free(d);

        assert_int_equal(kdl_doc_new("split", &d), 0);
        r = NULL;
        assert_int_equal(kdl__split_begin(in, &o, d, &r), 0);
        for (size_t q = 0; q < ncks; q++) {
                kdl_stream *s = NULL;

                assert_int_equal(kdl__split_job(r, 0, &cks[q], &job), 0);
                assert_int_equal(kdl_stream_new(in->pairs[0]->n, in->pairs[0], NULL, &s), 0);
                assert_int_equal(kdl__jobs_run(s, &job, 1, NULL), 0);
                kdl_stream_free(s);
        }
        /* A job made and never run leaves no rows. */
        assert_int_equal(kdl__split_job(r, 0, &cks[0], &job), 0);
        assert_int_equal(kdl__split_end(r), 0);
        assert_int_equal(access(path, F_OK), 0);
        assert_int_equal(kdl_table_rows(kdl_doc_find_table(d, "split")), ncks * o.common.ntau);
        kdl_doc_free(d);

        unlink(path);
        rmdir(dir);
        free(path);
        free(cks);
        kdl_inputs_free(in);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_jobs_with_others_match_run),
                cmocka_unit_test(test_job_lifecycle),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
