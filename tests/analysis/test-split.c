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

static kdl_doc *run_doc(kdl_inputs *in, const struct kdl_run_split_opts *o)
{
        kdl_doc *d = NULL;

        assert_int_equal(kdl_doc_new("split", &d), 0);
        assert_int_equal(kdl_run_split(in, o, d), 0);
        return d;
}

/* Table @name of @a and @b: the same cells, reals within @tol (0: the same bits). */
static void assert_tables_close(const kdl_doc *a, const kdl_doc *b, const char *name, double tol)
{
        const kdl_table *x = kdl_doc_find_table(a, name), *y = kdl_doc_find_table(b, name);

        assert_non_null(x);
        assert_non_null(y);
        assert_int_equal(kdl_table_rows(x), kdl_table_rows(y));
        assert_int_equal(kdl_table_cols(x), kdl_table_cols(y));
        for (size_t c = 0; c < kdl_table_cols(x); c++) {
                assert_string_equal(kdl_table_key(x, c), kdl_table_key(y, c));
                for (size_t r = 0; r < kdl_table_rows(x); r++) {
                        const kdl_cell *u = kdl_table_cell(x, r, c), *v = kdl_table_cell(y, r, c);

                        assert_int_equal(u->type, v->type);
                        if (u->type == KDL_CELL_STR)
                                assert_string_equal(u->v.s, v->v.s);
                        else if (u->type == KDL_CELL_INT)
                                assert_int_equal(u->v.i, v->v.i);
                        else if (u->type == KDL_CELL_REAL && tol > 0.0)
                                assert_close(v->v.r, u->v.r, 0.0, tol);
                        else if (u->type == KDL_CELL_REAL)
                                assert_memory_equal(&u->v.r, &v->v.r, sizeof(double));
                }
        }
}

/* The widest head weight of @f's checkpoints. */
static size_t widest(const kdl_h5file *f)
{
        const kdl_dump *d = kdl_h5_dump(f);
        size_t w = 0;

        for (size_t q = 0; q < d->ncheckpoints; q++)
                if (d->checkpoints[q].head_weight && d->checkpoints[q].head_weight->shape[1] > w)
                        w = d->checkpoints[q].head_weight->shape[1];
        return w;
}

/* The domain level in blocks of classes: in one block (the two passes split
 * takes anyway) and in as many as the least memory allows (a third pass and
 * more), the domain values of the full mode to 1e-10, the same confused
 * pairs, every other table unchanged; a byte less is refused, naming split,
 * the size and the option. */
static void test_blocked_domain_passes(void **state)
{
        kdl_inputs *in = kdl_test_fixture_inputs(true);
        size_t c = kdl_h5_dump(in->teacher)->c;
        static const char *const same[] = {"split", "universe", "instance", "distributions",
                                           "histograms"};
        struct kdl_run_split_opts o;
        kdl_split_plan p;
        kdl_doc *full, *one, *many, *d = NULL;
        char *json;

        (void) state;
        opts_init(&o);
        full = run_doc(in, &o);
        assert_non_null(kdl_doc_find_table(full, "confusion_teacher"));
        assert_null(kdl_doc_find_table(full, "confused_pairs"));
        o.metric.domain = KDL_SPLIT_DOMAIN_BLOCKED;
        o.metric.top_pairs = 7;
        one = run_doc(in, &o);
        assert_int_equal(
                kdl_run_split_plan(c, widest(in->teacher), widest(in->students[0]), &o, &p), 0);
        assert_true(p.fits && p.nblocks == 1 && p.domain == KDL_SPLIT_DOMAIN_BLOCKED);
        o.common.memory = p.least_bytes;
        assert_int_equal(
                kdl_run_split_plan(c, widest(in->teacher), widest(in->students[0]), &o, &p), 0);
        assert_true(p.fits && p.nblocks >= 3);
        many = run_doc(in, &o);

        for (size_t k = 0; k < sizeof(same) / sizeof(same[0]); k++) {
                assert_tables_close(full, one, same[k], 0.0);
                assert_tables_close(full, many, same[k], 0.0);
        }
        assert_tables_close(full, one, "domain", 1e-10);
        assert_tables_close(full, many, "domain", 1e-10);
        assert_tables_close(one, many, "confused_pairs", 0.0);
        assert_int_equal(kdl_table_rows(kdl_doc_find_table(many, "confused_pairs")),
                         kdl_table_rows(kdl_doc_find_table(many, "domain")) * 7);
        assert_null(kdl_doc_find_table(many, "confusion_teacher"));
        assert_null(kdl_doc_find_table(many, "head_cosine_teacher"));
        json = kdl_test_doc_json(many);
        assert_non_null(strstr(json, "--domain blocked"));
        assert_non_null(strstr(json, "blocks of classes, the logits read 3 times"));
        free(json);

        o.common.memory--;
        assert_int_equal(kdl_doc_new("split", &d), 0);
        assert_int_equal(kdl_run_split(in, &o, d), -KDL_EBUDGET);
        assert_non_null(strstr(kdl_errmsg(), "split needs at least"));
        assert_non_null(strstr(kdl_errmsg(), "--domain off"));
        kdl_doc_free(d);

        /* Off: no domain table. */
        o.metric.domain = KDL_SPLIT_DOMAIN_OFF;
        d = run_doc(in, &o);
        assert_null(kdl_doc_find_table(d, "domain"));
        assert_tables_close(full, d, "split", 0.0);
        kdl_doc_free(d);

        kdl_doc_free(full);
        kdl_doc_free(one);
        kdl_doc_free(many);
        kdl_inputs_free(in);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_jobs_with_others_match_run),
                cmocka_unit_test(test_job_lifecycle),
                cmocka_unit_test(test_blocked_domain_passes),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
