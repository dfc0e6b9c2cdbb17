/* SPDX-License-Identifier: MIT */
/*
 * metrics/base/outfile: an output path never names an input, a directory
 * holding one, or (for a file) anything but a regular file; temporaries of
 * a killed run are recognised by name and pid, and only those.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/outfile.h"

static char base[] = "/tmp/kdl-outfile-XXXXXX";

static char *path(const char *rel)
{
        char *p;

        assert_true(asprintf(&p, "%s/%s", base, rel) > 0);
        return p;
}

static void touch(const char *rel)
{
        char *p = path(rel);
        FILE *fp = fopen(p, "w");

        assert_non_null(fp);
        fputs("data", fp);
        fclose(fp);
        free(p);
}

static long gone_pid(void)
{
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0)
                _exit(0);
        waitpid(pid, NULL, 0);
        return (long) pid;
}

static void refused(const char *out, enum kdl_out_kind kind, const char *input, const char *why)
{
        const char *inputs[] = {"/nonexistent-other.h5", input};

        assert_int_equal(kdl_out_check(out, kind, inputs, 2), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), out));
        assert_non_null(strstr(kdl_errmsg(), why));
}

static void test_input_in_any_spelling(void **state)
{
        char *in, *hard, *sym, *dotted, *sub, *other;
        const char *inputs[1];

        (void) state;
        assert_int_equal(mkdir((sub = path("d")), 0755), 0);
        touch("d/student.h5");
        in = path("d/student.h5");
        inputs[0] = in;
        hard = path("hard.h5");
        sym = path("sym.h5");
        dotted = path("d/../d/./student.h5");
        other = path("other.h5");
        assert_int_equal(link(in, hard), 0);
        assert_int_equal(symlink(in, sym), 0);

        refused(in, KDL_OUT_FILE, in, "is the input");
        refused(hard, KDL_OUT_FILE, in, "is the input");
        refused(sym, KDL_OUT_FILE, in, "is the input");
        refused(dotted, KDL_OUT_FILE, in, "is the input");
        refused(in, KDL_OUT_DIR, in, "is the input");
        /* The directory holding an input, and the one above it. */
        refused(sub, KDL_OUT_DIR, in, "holding the input");
        refused(base, KDL_OUT_DIR, in, "holding the input");
        /* A relative spelling of the input is resolved too. */
        assert_int_equal(chdir(sub), 0);
        inputs[0] = "student.h5";
        assert_int_equal(kdl_out_check(sub, KDL_OUT_DIR, inputs, 1), -KDL_EUSAGE);
        assert_int_equal(kdl_out_check(".", KDL_OUT_DIR, inputs, 1), -KDL_EUSAGE);
        inputs[0] = in;

        /* What is not an input is fine: a new name, an unrelated file. */
        assert_int_equal(kdl_out_check(other, KDL_OUT_FILE, inputs, 1), 0);
        touch("other.h5");
        assert_int_equal(kdl_out_check(other, KDL_OUT_FILE, inputs, 1), 0);
        free(in);
        free(hard);
        free(sym);
        free(dotted);
        free(sub);
        free(other);
}

static void test_file_target_must_be_regular(void **state)
{
        char *fifo = path("fifo"), *link_ = path("link.h5"), *dir = path("adir");
        char *target = path("target.h5");

        (void) state;
        touch("target.h5");
        assert_int_equal(mkfifo(fifo, 0600), 0);
        assert_int_equal(symlink(target, link_), 0);
        assert_int_equal(mkdir(dir, 0755), 0);
        assert_int_equal(kdl_out_check(fifo, KDL_OUT_FILE, NULL, 0), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "a FIFO"));
        assert_int_equal(kdl_out_check(link_, KDL_OUT_FILE, NULL, 0), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "a symbolic link"));
        assert_int_equal(kdl_out_check(dir, KDL_OUT_FILE, NULL, 0), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "a directory"));
        assert_int_equal(kdl_out_check(target, KDL_OUT_FILE, NULL, 0), 0);
        free(fifo);
        free(link_);
        free(dir);
        free(target);
}

static void test_stale_names(void **state)
{
        char name[256];
        long dead = gone_pid();

        (void) state;
        snprintf(name, sizeof(name), "out.h5.tmp-%ld-aB3xY9", dead);
        assert_true(kdl_out_is_stale("/some/dir/out.h5", name));
        assert_true(kdl_out_is_stale("out.h5", name));
        assert_false(kdl_out_is_stale("/some/dir/other.h5", name));
        snprintf(name, sizeof(name), "out.h5.tmp-%ld-aB3xY", dead); /* 5, not 6 */
        assert_false(kdl_out_is_stale("out.h5", name));
        snprintf(name, sizeof(name), "out.h5.tmp-%ld-aB3xY9.bak", dead);
        assert_false(kdl_out_is_stale("out.h5", name));
        snprintf(name, sizeof(name), "out.h5.tmp-%ld-aB3xY9", (long) getpid()); /* ours, running */
        assert_false(kdl_out_is_stale("out.h5", name));
        assert_false(kdl_out_is_stale("out.h5", "out.h5.tmp-1-aB3xY9")); /* init is alive */
        assert_false(kdl_out_is_stale("out.h5", "out.h5.tmp-aB3xY9"));   /* old form, no pid */
        assert_false(kdl_out_is_stale("out.h5", "out.h5.tmp-0-aB3xY9"));

        char *t = kdl_out_tmpname("/x/out.h5");
        snprintf(name, sizeof(name), "/x/out.h5.tmp-%ld-XXXXXX", (long) getpid());
        assert_string_equal(t, name);
        free(t);
}

static int count(const char *p, void *arg)
{
        (void) p;
        ++*(int *) arg;
        return 1;
}

static void test_sweep(void **state)
{
        char *target = path("t.h5"), rel[64];
        long dead = gone_pid();
        int seen = 0;

        (void) state;
        snprintf(rel, sizeof(rel), "t.h5.tmp-%ld-AAAAAA", dead);
        touch(rel);
        snprintf(rel, sizeof(rel), "t.h5.tmp-%ld-BBBBBB", dead);
        touch(rel);
        snprintf(rel, sizeof(rel), "t.h5.tmp-%ld-CCCCCC", (long) getpid());
        touch(rel);
        touch("t.h5.tmp-XXXXXX");
        assert_int_equal(kdl_out_sweep(target, count, &seen), 2);
        assert_int_equal(seen, 2);
        assert_int_equal(kdl_out_sweep("/nonexistent/dir/t.h5", count, &seen), 0);
        free(target);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_input_in_any_spelling),
                cmocka_unit_test(test_file_target_must_be_regular),
                cmocka_unit_test(test_stale_names),
                cmocka_unit_test(test_sweep),
        };
        char cwd[4096];
        int r;

        if (!mkdtemp(base) || !getcwd(cwd, sizeof(cwd)))
                return 1;
        r = cmocka_run_group_tests(tests, NULL, NULL);
        if (chdir(cwd) == 0) {
                char *cmd;

                if (asprintf(&cmd, "rm -rf '%s'", base) > 0 && system(cmd) != 0)
                        r = 1;
                free(cmd);
        }
        return r;
}
