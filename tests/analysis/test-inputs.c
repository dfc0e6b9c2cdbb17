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

/* The notes of @in's document, one per line. */
static char *notes(const kdl_inputs *in)
{
        kdl_doc *d = NULL;
        char *buf = NULL, *n;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        assert_non_null(f);
        assert_int_equal(kdl_doc_new("t", &d), 0);
        assert_int_equal(kdl_inputs_describe(in, d), 0);
        assert_int_equal(kdl_doc_write(d, f, KDL_FORMAT_JSON), 0);
        fclose(f);
        kdl_doc_free(d);
        n = strstr(buf, "\"notes\"");
        assert_non_null(n);
        n = strdup(n);
        free(buf);
        return n;
}

static void test_roles(void **state)
{
        char *t = fixture("teacher.h5"), *s = fixture("student.h5"), *n;
        struct kdl_inputs_opts o = {.roles = KDL_ROLES_CHECK};
        kdl_inputs *in = (kdl_inputs *) 0x1;

        (void) state;
        /* Swapped: a usage error naming both files and their roles. */
        assert_int_equal(kdl_inputs_open_with(s, (const char *const[]){t}, 1, &o, &in),
                         -KDL_EUSAGE);
        assert_true(in == (kdl_inputs *) 0x1);
        assert_non_null(strstr(kdl_errmsg(), "student.h5' has role \"student\" and -s '"));
        assert_non_null(strstr(kdl_errmsg(), "teacher.h5' has role \"teacher\""));
        assert_int_equal(kdl_inputs_open(s, NULL, 0, &in), -KDL_EUSAGE); /* the defaults check */
        assert_int_equal(kdl_inputs_open(NULL, (const char *const[]){t}, 1, &in), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "-s '"));
        /* Ignored: accepted, and a note names the roles as given. */
        o.roles = KDL_ROLES_IGNORE;
        assert_int_equal(kdl_inputs_open_with(s, (const char *const[]){t}, 1, &o, &in), 0);
        n = notes(in);
        assert_non_null(strstr(n, "--ignore-roles: the dumps' roles were not checked"));
        assert_non_null(strstr(n, "student.h5' (role student), -s '"));
        free(n);
        kdl_inputs_free(in);
        /* No roles implied (kdlens cka A B): accepted, nothing said. */
        o.roles = KDL_ROLES_NONE;
        assert_int_equal(kdl_inputs_open_with(s, (const char *const[]){t}, 1, &o, &in), 0);
        n = notes(in);
        assert_null(strstr(n, "role"));
        free(n);
        kdl_inputs_free(in);
        free(t);
        free(s);
}

static void test_join(void **state)
{
        char *t = fixture("teacher.h5"), *s = fixture("bad/student-ids-differ.h5"), *n;
        struct kdl_inputs_opts o = {.join = KDL_JOIN_INNER};
        enum kdl_join j = KDL_JOIN_INNER;
        kdl_inputs *in = NULL;

        (void) state;
        assert_int_equal(kdl_join_parse("strict", &j), 0);
        assert_int_equal(j, KDL_JOIN_STRICT);
        assert_int_equal(kdl_join_parse("left", &j), -KDL_EUSAGE);
        assert_int_equal(j, KDL_JOIN_STRICT);
        /* 3 of the student's 60 ids are not the teacher's: 57 shared. */
        assert_int_equal(kdl_inputs_open_with(t, (const char *const[]){s}, 1, &o, &in), 0);
        assert_int_equal(in->pairs[0]->n, 57);
        n = notes(in);
        assert_non_null(strstr(n, "has 60 samples, '"));
        assert_non_null(strstr(n, "' 60; the 57 sample ids they share are those compared"));
        free(n);
        kdl_inputs_free(in);
        assert_int_equal(kdl_inputs_open_with(t, NULL, 0, &o, &in), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "--join inner: expected a teacher and a student"));
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
                cmocka_unit_test(test_roles),
                cmocka_unit_test(test_join),
                cmocka_unit_test(test_select_checkpoints),
                cmocka_unit_test(test_parse_reals),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
