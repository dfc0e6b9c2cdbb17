/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "analysis/inputs.h"

static char *fixture(const char *name)
{
        char *p;

        assert_true(asprintf(&p, "%s/%s", getenv("KDL_FIXTURES"), name) > 0);
        return p;
}

static void test_open_pairs_students(void **state)
{
        char *t = fixture("teacher.h5"), *s = fixture("student.h5");
        const char *students[] = {s, s};
        kdl_inputs *in = NULL;

        (void) state;
        assert_int_equal(kdl_inputs_open(t, students, 2, &in), 0);
        assert_int_equal(in->nstudents, 2);
        assert_non_null(in->pairs[1]);
        assert_true(in->pairs[1]->joined);
        kdl_inputs_free(in);
        free(t);
        free(s);
}

static void test_open_reports_first_problem(void **state)
{
        char *t = fixture("teacher.h5"), *s = fixture("bad/no-logits.h5");
        const char *students[] = {s};
        kdl_inputs *in = (kdl_inputs *) 0x1;

        (void) state;
        assert_int_equal(kdl_inputs_open(t, students, 1, &in), -KDL_ESCHEMA);
        assert_non_null(strstr(kdl_errmsg(), "no-logits.h5"));
        assert_true(in == (kdl_inputs *) 0x1);
        free(s);
        s = fixture("bad/student-ids-differ.h5");
        students[0] = s;
        assert_int_equal(kdl_inputs_open(t, students, 1, &in), -KDL_EMISMATCH);
        free(t);
        free(s);
}

static void test_select_checkpoints(void **state)
{
        char *t = fixture("teacher.h5"), *s = fixture("student.h5");
        kdl_h5file *ft = NULL, *fs = NULL;
        struct kdl_ckpair *v = NULL;
        size_t n = 0;

        (void) state;
        assert_int_equal(kdl_h5_open(t, &ft), 0);
        assert_int_equal(kdl_h5_open(s, &fs), 0);
        assert_int_equal(kdl_select_checkpoints(fs, ft, NULL, NULL, &v, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(v[0].main->name, "final"); /* the last by step */
        assert_string_equal(v[0].partner->name, "final");
        free(v);
        /* Ordinary KD: every student checkpoint against the teacher's last. */
        assert_int_equal(kdl_select_checkpoints(fs, ft, "all", NULL, &v, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(v[0].main->name, "init");
        assert_string_equal(v[0].partner->name, "final");
        free(v);
        /* "same": the partner checkpoint of the same name. */
        assert_int_equal(kdl_select_checkpoints(fs, ft, "all", "same", &v, &n), 0);
        assert_string_equal(v[0].partner->name, "init");
        assert_string_equal(v[1].partner->name, "final");
        free(v);
        /* A name: that one for every checkpoint. */
        assert_int_equal(kdl_select_checkpoints(fs, ft, "all", "init", &v, &n), 0);
        assert_string_equal(v[1].main->name, "final");
        assert_string_equal(v[1].partner->name, "init");
        free(v);
        assert_int_equal(kdl_select_checkpoints(fs, NULL, "init", NULL, &v, &n), 0);
        assert_null(v[0].partner);
        free(v);
        v = NULL;
        assert_int_equal(kdl_select_checkpoints(fs, ft, "epoch9", NULL, &v, &n), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "no checkpoint 'epoch9' (there are: init, final)"));
        assert_null(v);
        assert_int_equal(kdl_select_checkpoints(fs, ft, NULL, "best", &v, &n), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "teacher.h5': no checkpoint 'best'"));
        assert_null(v);
        kdl_h5_close(ft);
        kdl_h5_close(fs);
        free(t);
        free(s);
}

static void test_parse_reals(void **state)
{
        double v[4] = {0};

        (void) state;
        assert_int_equal(kdl_parse_reals("1,2.5,8", "-T", v, 4), 3);
        assert_close(v[1], 2.5, 0.0, 0.0);
        assert_int_equal(kdl_parse_reals("1,,2", "-T", v, 4), -KDL_EUSAGE);
        assert_int_equal(kdl_parse_reals("0", "-T", v, 4), -KDL_EUSAGE);
        assert_int_equal(kdl_parse_reals("-1", "-T", v, 4), -KDL_EUSAGE);
        assert_int_equal(kdl_parse_reals("1,2,3,4,5", "-T", v, 4), -KDL_EUSAGE);
        assert_int_equal(kdl_parse_reals("nan", "-T", v, 4), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "-T"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_open_pairs_students),
                cmocka_unit_test(test_open_reports_first_problem),
                cmocka_unit_test(test_select_checkpoints),
                cmocka_unit_test(test_parse_reals),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
