/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "tests/lib/kdl-test-job.h"

/* The sum of every value of @ds, read directly. */
static double direct_sum(kdl_h5file *f, const kdl_dsinfo *ds)
{
        kdl_h5reader *r = NULL;
        size_t n, c;
        double *buf, sum = 0.0;

        assert_int_equal(kdl_h5_reader_open(f, ds, KDL_SPATIAL_AVG, &r), 0);
        n = kdl_h5_reader_rows(r);
        c = kdl_h5_reader_cols(r);
        buf = malloc(n * c * sizeof(double));
        assert_int_equal(kdl_h5_reader_read(r, 0, n, buf), 0);
        for (size_t i = 0; i < n * c; i++)
                sum += buf[i];
        free(buf);
        kdl_h5_reader_close(r);
        return sum;
}

static kdl_h5file *open_teacher(void)
{
        kdl_h5file *f = NULL;
        char *p;

        assert_true(asprintf(&p, "%s/teacher.h5", getenv("KDL_FIXTURES")) > 0);
        assert_int_equal(kdl_h5_open(p, &f), 0);
        free(p);
        return f;
}

/* Three jobs, one of them sharing a dataset, one wanting three passes: every
 * job sees every sample in each of its passes, a shared dataset is read once
 * per pass, and a later pass reads only the datasets of the jobs in it. */
static void test_jobs_share_passes(void **state)
{
        kdl_h5file *f = open_teacher();
        const kdl_checkpoint *ck = kdl_h5_checkpoint(f, "final");
        const kdl_dsinfo *pen = &ck->layers[2].feature, *z = ck->logits;
        struct kdl_test_probe a = {.f = f, .ds = pen, .passes = 1},
                              b = {.f = f, .ds = z, .passes = 3},
                              c = {.f = f, .ds = pen, .passes = 2};
        kdl__job jobs[3] = {kdl_test_probe_job(&a), kdl_test_probe_job(&b), kdl_test_probe_job(&c)};
        double spen = direct_sum(f, pen), sz = direct_sum(f, z);
        size_t dpen = pen->shape[1], dz = z->shape[1];
        kdl_stream *s = NULL;
        unsigned passes = 0;

        (void) state;
        assert_int_equal(kdl_stream_new(60, NULL, &(struct kdl_stream_opts){.block_rows = 16}, &s),
                         0);
        assert_int_equal(kdl__jobs_run(s, jobs, 3, &passes), 0);
        assert_int_equal(passes, 3);
        assert_int_equal(kdl_stream_count(s), 2);
        assert_close(a.sum[0], spen, 1e-12, 1e-12);
        assert_int_equal(a.blocks[1], 0);
        for (int p = 0; p < 3; p++)
                assert_close(b.sum[p], sz, 1e-12, 1e-12);
        assert_close(c.sum[0], spen, 1e-12, 1e-12);
        assert_close(c.sum[1], spen, 1e-12, 1e-12);
        assert_int_equal(c.blocks[0], 4);
        /* pen in passes 0 and 1 (shared by a and c), the logits in all three. */
        assert_int_equal(kdl_stream_values_read(s), 60 * (2 * dpen + 3 * dz));
        for (int k = 0; k < 3; k++)
                assert_null(jobs[k].uses);
        kdl_stream_free(s);
        kdl_h5_close(f);
}

/* A job's error stops the run and comes back unchanged. */
static void test_job_error_stops_run(void **state)
{
        kdl_h5file *f = open_teacher();
        const kdl_checkpoint *ck = kdl_h5_checkpoint(f, "final");
        struct kdl_test_probe a = {.f = f,
                                   .ds = ck->logits,
                                   .passes = 2,
                                   .fail_at_end = -KDL_ERANGE},
                              b = {.f = f, .ds = ck->logits, .passes = 2};
        kdl__job jobs[2] = {kdl_test_probe_job(&a), kdl_test_probe_job(&b)};
        kdl_stream *s = NULL;
        unsigned passes = 99;

        (void) state;
        assert_int_equal(kdl_stream_new(60, NULL, NULL, &s), 0);
        assert_int_equal(kdl__jobs_run(s, jobs, 2, &passes), -KDL_ERANGE);
        assert_int_equal(passes, 99); /* not set on failure */
        assert_int_equal(b.blocks[1], 0);
        kdl_stream_free(s);
        kdl_h5_close(f);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_jobs_share_passes),
                cmocka_unit_test(test_job_error_stops_run),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
