/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "tests/lib/kdl-test-job.h"
#include "analysis/summary-internal.h"

static void opts_init(struct kdl_run_summary_opts *o)
{
        kdl_run_summary_opts_init(o);
        o->common.checkpoint = "all";
        o->common.tau[0] = 2.5;
}

static char *run_alone(kdl_inputs *in, const struct kdl_run_summary_opts *o)
{
        kdl_doc *d = NULL;
        char *json;

        assert_int_equal(kdl_doc_new("summary", &d), 0);
        assert_int_equal(kdl_run_summary(in, o, d), 0);
        json = kdl_test_doc_json(d);
        kdl_doc_free(d);
        return json;
}

/* The teacher's job and each student checkpoint's, each beside a probe that wants two passes,
 * on streams of other blocks: the document is the one kdl_run_summary() makes alone, to the
 * last bit, and the probes see every sample in both passes. */
static void test_jobs_with_others_match_run(void **state)
{
        kdl_inputs *in = kdl_test_fixture_inputs(true);
        struct kdl_run_summary_opts o;
        struct kdl__summary_run *r = NULL;
        struct kdl_ckpair *cks = NULL;
        size_t ncks = 0;
        kdl_doc *d = NULL;
        char *alone, *json;

        (void) state;
        opts_init(&o);
        alone = run_alone(in, &o);
        assert_int_equal(kdl_doc_new("summary", &d), 0);
        assert_int_equal(kdl__summary_begin(in, &o, d, &r), 0);
        assert_int_equal(
                kdl_select_checkpoints(in->students[0], in->teacher, "all", NULL, &cks, &ncks), 0);
        assert_true(ncks >= 2);
        for (size_t q = 0; q <= ncks; q++) {
                const kdl_pair *pair = in->pairs[0];
                size_t n = pair->n;
                const kdl_checkpoint *tck = cks[0].partner;
                struct kdl_test_probe a = {.f = in->teacher, .ds = tck->logits, .passes = 2};
                kdl__job jobs[2];
                kdl_stream *s = NULL;
                unsigned passes = 0;

                jobs[0] = kdl_test_probe_job(&a);
                if (q == 0) /* the teacher's row first, as the run */
                        assert_int_equal(kdl__summary_teacher_job(r, tck, &jobs[1], &n, &pair), 0);
                else
                        assert_int_equal(kdl__summary_job(r, 0, &cks[q - 1], &jobs[1]), 0);
                assert_int_equal(
                        kdl_stream_new(n, pair, &(struct kdl_stream_opts){.block_rows = 7}, &s), 0);
                assert_int_equal(kdl__jobs_run(s, jobs, 2, &passes), 0);
                assert_int_equal(passes, 2);
                assert_true(fabs(a.sum[0]) > 0.0);
                assert_close(a.sum[1], a.sum[0], 1e-12, 0.0);
                kdl_stream_free(s);
        }
        free(cks);
        assert_int_equal(kdl__summary_end(r), 0);
        json = kdl_test_doc_json(d);
        kdl_doc_free(d);
        assert_string_equal(json, alone);
        free(json);
        free(alone);
        kdl_inputs_free(in);
}

/* A job made and never run leaves no row; abort after a job frees everything; a pair
 * without a teacher checkpoint has no logits to compare with. */
static void test_job_lifecycle(void **state)
{
        kdl_inputs *in = kdl_test_fixture_inputs(true);
        struct kdl_run_summary_opts o;
        struct kdl__summary_run *r = NULL;
        struct kdl_ckpair *cks = NULL;
        char name[] = "x", group[] = "/checkpoints/x";
        const kdl_checkpoint empty = {.name = name, .group = group};
        size_t ncks = 0;
        kdl_doc *d = NULL;
        kdl__job job;

        (void) state;
        opts_init(&o);
        assert_int_equal(
                kdl_select_checkpoints(in->students[0], in->teacher, "all", NULL, &cks, &ncks), 0);
        assert_int_equal(kdl_doc_new("summary", &d), 0);
        assert_int_equal(kdl__summary_begin(in, &o, d, &r), 0);
        assert_int_equal(kdl__summary_job(r, 0, &cks[0], &job), 0);
        assert_int_equal(kdl__summary_job(r, 0,
                                          &(struct kdl_ckpair){.main = &empty, .partner = &empty},
                                          &job),
                         -KDL_EMISSING);
        kdl__summary_abort(r);
        kdl_doc_free(d);

        r = NULL;
        assert_int_equal(kdl_doc_new("summary", &d), 0);
        assert_int_equal(kdl__summary_begin(in, &o, d, &r), 0);
        assert_int_equal(kdl__summary_job(r, 0, &cks[0], &job), 0);
        assert_int_equal(kdl__summary_end(r), 0);
        assert_int_equal(kdl_table_rows(kdl_doc_find_table(d, "summary")), 0);
        assert_null(kdl_doc_find_table(d, "summary_groups"));
        kdl_doc_free(d);
        free(cks);
        kdl_inputs_free(in);
}

/* The checks of begin: one temperature, bins, groups. */
static void test_begin_refuses(void **state)
{
        kdl_inputs *in = kdl_test_fixture_inputs(true);
        const char *path = kdl_h5_dump(in->students[0])->path;
        struct kdl_run_summary_opts o;
        struct kdl__summary_run *r = NULL;
        kdl_doc *d = NULL;
        char *spec = NULL;

        (void) state;
        assert_int_equal(kdl_doc_new("summary", &d), 0);
        opts_init(&o);
        o.common.ntau = 2;
        assert_int_equal(kdl__summary_begin(in, &o, d, &r), -KDL_EUSAGE);
        opts_init(&o);
        o.bins = 0;
        assert_int_equal(kdl__summary_begin(in, &o, d, &r), -KDL_EUSAGE);
        opts_init(&o);
        o.ngroups = 1;
        o.groups[0] = "g=nope.h5";
        assert_int_equal(kdl__summary_begin(in, &o, d, &r), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "'nope.h5' is not a student"));
        assert_null(r);
        assert_true(asprintf(&spec, "g=%s", path) > 0);
        o.groups[0] = spec;
        assert_int_equal(kdl_run_summary(in, &o, d), 0);
        assert_int_equal(kdl_table_rows(kdl_doc_find_table(d, "summary_groups")),
                         kdl_h5_dump(in->students[0])->ncheckpoints);
        free(spec);
        kdl_doc_free(d);
        kdl_inputs_free(in);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_jobs_with_others_match_run),
                cmocka_unit_test(test_job_lifecycle),
                cmocka_unit_test(test_begin_refuses),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
