/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/lib/kdl-test.h"
#include "reports/plot.h"
#include "reports/site.h"

static char base[] = "/tmp/kdl-site-XXXXXX";

static char *path(const char *rel)
{
        char *p;

        assert_true(asprintf(&p, "%s/%s", base, rel) > 0);
        return p;
}

static char *slurp(const char *rel)
{
        char *p = path(rel), *buf = calloc(1, 1 << 20);
        FILE *fp = fopen(p, "r");

        assert_non_null(fp);
        buf[fread(buf, 1, (1 << 20) - 1, fp)] = '\0';
        fclose(fp);
        free(p);
        return buf;
}

static bool exists(const char *rel)
{
        char *p = path(rel);
        struct stat st;
        bool ok = stat(p, &st) == 0;

        free(p);
        return ok;
}

/* Only report/ and no leftover temporary directory under base. */
static size_t entries(void)
{
        DIR *d = opendir(base);
        struct dirent *e;
        size_t n = 0;

        while ((e = readdir(d)))
                if (e->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

static void build(const char *marker, bool commit)
{
        char *dir = path("report");
        kdl_site *s = NULL;
        kdl_table *t = NULL;
        double y[3] = {1, 2, 3};
        struct kdl_series ser[] = {{"a", y, NULL}};
        struct kdl_fig f = {.xlabel = "x"};
        const char *inputs[] = {"t.h5", "s.h5"};

        assert_int_equal(kdl_site_open(dir, 0, &s), 0);
        assert_int_equal(kdl_site_section(s, "Knowledge sources", marker), 0);
        assert_int_equal(kdl_fig_lines(kdl_site_path(s), "curve", &f, NULL, NULL, 3, ser, 1), 0);
        if (getenv("KDL_GNUPLOT") && *getenv("KDL_GNUPLOT"))
                assert_int_equal(kdl_fig_render(kdl_site_path(s), "curve", getenv("KDL_GNUPLOT"),
                                                KDL_FIG_ALL),
                                 0);
        assert_int_equal(kdl_site_figure(s, "curve", "A <curve> & more"), 0);
        assert_int_equal(kdl_table_new("kl", "KL", &t), 0);
        kdl_table_add_row(t);
        kdl_table_put_str(t, "source", "logit_fisher");
        kdl_table_put_real(t, "mean", 0.25);
        assert_int_equal(kdl_site_table(s, t, NULL, "KL by source"), 0);
        kdl_table_free(t);
        if (commit)
                assert_int_equal(kdl_site_commit(s, "kdlens report -o report", inputs, 2), 0);
        else
                kdl_site_abort(s);
        free(dir);
}

static void test_report_written_and_replaced(void **state)
{
        char *html, *md, *tex;

        (void) state;
        build("first", true);
        assert_int_equal(entries(), 1);
        html = slurp("report/index.html");
        assert_non_null(strstr(html, "<p>first</p>"));
        assert_non_null(strstr(html, "A &lt;curve&gt; &amp; more"));
        assert_non_null(strstr(html, "<td class=\"t\">logit_fisher</td><td>0.25</td>"));
        assert_non_null(strstr(html, "kdlens report -o report"));
        md = slurp("report/index.md");
        assert_non_null(strstr(md, "![A <curve> & more](figures/curve.png)"));
        assert_non_null(strstr(md, "| logit_fisher | 0.25 |"));
        tex = slurp("report/tables/kl.tex");
        assert_non_null(strstr(tex, "\\toprule"));
        assert_true(exists("report/tables/kl.csv"));
        assert_true(exists("report/data/curve.dat"));
        assert_true(exists("report/scripts/curve.gp"));
        free(html);
        free(md);
        free(tex);

        build("second", true); /* an existing report is exchanged atomically */
        assert_int_equal(entries(), 1);
        html = slurp("report/index.html");
        assert_non_null(strstr(html, "<p>second</p>"));
        free(html);

        build("aborted", false); /* an abandoned run leaves the last report as it was */
        assert_int_equal(entries(), 1);
        html = slurp("report/index.html");
        assert_non_null(strstr(html, "<p>second</p>"));
        free(html);
}

static void test_open_fails_cleanly(void **state)
{
        kdl_site *s = (kdl_site *) 0x1;

        (void) state;
        assert_int_equal(kdl_site_open("/nonexistent/dir/report", 0, &s), -ENOENT);
        assert_non_null(strstr(kdl_errmsg(), "/nonexistent/dir/report"));
        assert_true(s == (kdl_site *) 0x1);
}

static void touch(const char *rel, const char *text)
{
        char *p = path(rel);
        FILE *fp = fopen(p, "w");

        assert_non_null(fp);
        fputs(text, fp);
        fclose(fp);
        free(p);
}

/* A pid that no process has: a child that has been reaped. */
static long gone_pid(void)
{
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0)
                _exit(0);
        waitpid(pid, NULL, 0);
        return (long) pid;
}

/* An existing directory that is not a report is never replaced without --force. */
static void test_unrelated_directory_kept(void **state)
{
        char *dir = path("mine");
        kdl_site *s = (kdl_site *) 0x1;
        char *text;

        (void) state;
        assert_int_equal(mkdir(dir, 0755), 0);
        touch("mine/thesis.tex", "precious");
        assert_int_equal(kdl_site_open(dir, 0, &s), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "is not a kdlens report"));
        assert_non_null(strstr(kdl_errmsg(), "--force"));
        assert_true(s == (kdl_site *) 0x1);
        text = slurp("mine/thesis.tex");
        assert_string_equal(text, "precious");
        free(text);

        /* A regular file in its place is refused too. */
        touch("afile", "also precious");
        free(dir);
        dir = path("afile");
        assert_int_equal(kdl_site_open(dir, 0, &s), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "not a directory"));

        /* --force replaces it, and the result is stamped as a report. */
        assert_int_equal(kdl_site_open(dir, KDL_SITE_FORCE, &s), 0);
        assert_int_equal(kdl_site_commit(s, "kdlens report", NULL, 0), 0);
        assert_true(exists("afile/" KDL_SITE_STAMP));
        assert_int_equal(kdl_site_open(dir, 0, &s), 0); /* now it is a report */
        kdl_site_abort(s);
        free(dir);
}

/* What a killed run left next to the target goes; a live run's and a stranger's stay. */
static void test_stale_temporaries_swept(void **state)
{
        char *dir = path("swept"), *stale, *live, *alien, *cmd;
        struct stat st;
        kdl_site *s;

        (void) state;
        assert_true(asprintf(&stale, "%s.tmp-%ld-abcDEF", dir, gone_pid()) > 0);
        assert_true(asprintf(&live, "%s.tmp-%ld-abcDEF", dir, (long) getppid()) > 0);
        assert_true(asprintf(&alien, "%s.tmp-%ld-xyzXYZ", dir, gone_pid()) > 0);
        assert_int_equal(mkdir(stale, 0755), 0);
        assert_int_equal(mkdir(live, 0755), 0);
        assert_int_equal(mkdir(alien, 0755), 0); /* no stamp: not ours */
        assert_true(asprintf(&cmd, "touch '%s/" KDL_SITE_STAMP "' '%s/" KDL_SITE_STAMP "'", stale,
                             live) > 0);
        assert_int_equal(system(cmd), 0);
        free(cmd);

        assert_int_equal(kdl_site_open(dir, 0, &s), 0);
        kdl_site_abort(s);
        assert_int_equal(stat(stale, &st), -1);
        assert_int_equal(stat(live, &st), 0);
        assert_int_equal(stat(alien, &st), 0);
        free(stale);
        free(live);
        free(alien);
        free(dir);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_report_written_and_replaced),
                cmocka_unit_test(test_open_fails_cleanly),
                cmocka_unit_test(test_unrelated_directory_kept),
                cmocka_unit_test(test_stale_temporaries_swept),
        };
        int r;

        if (!mkdtemp(base))
                return 1;
        r = cmocka_run_group_tests(tests, NULL, NULL);
        {
                char *cmd;

                if (asprintf(&cmd, "rm -rf '%s'", base) > 0 && system(cmd) != 0)
                        r = 1;
                free(cmd);
        }
        return r;
}
