/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/lib/kdl-test.h"
#include "reports/plot.h"

static const char *gnuplot;
static char dir[] = "/tmp/kdl-plot-XXXXXX";

static long file_size(const char *name, const char *ext)
{
        char *p;
        struct stat st;
        long size;

        assert_true(asprintf(&p, "%s/figures/%s.%s", dir, name, ext) > 0);
        size = stat(p, &st) == 0 ? (long) st.st_size : -1;
        free(p);
        return size;
}

static char *slurp(const char *sub, const char *name, const char *ext)
{
        char *p, *buf = NULL;
        size_t len = 0;
        FILE *fp;

        assert_true(asprintf(&p, "%s/%s/%s.%s", dir, sub, name, ext) > 0);
        fp = fopen(p, "rb");
        assert_non_null(fp);
        buf = calloc(1, 1 << 20);
        len = fread(buf, 1, (1 << 20) - 1, fp);
        buf[len] = '\0';
        fclose(fp);
        free(p);
        return buf;
}

/* Rendered in all three formats, and each file is a real, non-trivial image. */
static void check_rendered(const char *name)
{
        char *pdf, *svg;

        assert_int_equal(kdl_fig_render(dir, name, gnuplot, KDL_FIG_ALL), 0);
        assert_true(file_size(name, "png") > 5000);
        assert_true(file_size(name, "pdf") > 3000);
        assert_true(file_size(name, "svg") > 2000);
        pdf = slurp("figures", name, "pdf");
        assert_memory_equal(pdf, "%PDF", 4);
        svg = slurp("figures", name, "svg");
        assert_non_null(strstr(svg, "<svg"));
        free(pdf);
        free(svg);
}

static void test_lines_with_marks_and_log_scale(void **state)
{
        double x[10], a[10], b[10], mark = 4.0;
        const char *label = "student d = 4";
        struct kdl_series s[] = {{"teacher", a}, {"student's", b}};
        struct kdl_fig f = {.xlabel = "dimension d",
                            .ylabel = "residual fraction",
                            .logy = true,
                            .nmarks = 1,
                            .marks = &mark,
                            .mark_labels = &label};
        char *gp, *dat;

        (void) state;
        for (int i = 0; i < 10; i++) {
                x[i] = i + 1;
                a[i] = exp(-0.5 * i);
                b[i] = i == 6 ? (double) NAN : exp(-0.3 * i);
        }
        assert_int_equal(kdl_fig_lines(dir, "lines", &f, x, NULL, 10, s, 2), 0);
        gp = slurp("scripts", "lines", "gp");
        assert_non_null(strstr(gp, "set logscale y"));
        assert_non_null(strstr(gp, "set arrow from 4, graph 0 to 4, graph 1"));
        assert_non_null(strstr(gp, "title 'student''s'")); /* quote escaped for gnuplot */
        assert_non_null(strstr(gp, "lc rgb '#0072B2'"));   /* Okabe-Ito first colour */
        dat = slurp("data", "lines", "dat");
        assert_non_null(strstr(dat, "7 \"\" 0.04978706837 NaN\n")); /* gap, not a zero */
        free(gp);
        free(dat);
        check_rendered("lines");
}

static void test_lines_over_checkpoints(void **state)
{
        const char *ck[] = {"init", "early", "middle", "final"};
        double a[] = {2.5, 1.1, 0.6, 0.4}, b[] = {2.4, 1.3, 0.5, 0.45};
        struct kdl_series s[] = {{"kl", a}, {"logit_fisher", b}};
        struct kdl_fig f = {.xlabel = "checkpoint", .ylabel = "mean per sample (nats)"};

        (void) state;
        assert_int_equal(kdl_fig_lines(dir, "curves", &f, NULL, ck, 4, s, 2), 0);
        check_rendered("curves");
}

static void test_bars_clustered_and_stacked(void **state)
{
        const char *cat[] = {"init", "early", "middle", "final"};
        double a[] = {0.8, 0.5, 0.3, 0.2}, b[] = {0.4, 0.3, 0.25, 0.1};
        struct kdl_series s[] = {{"TCKD", a}, {"(1-p) NCKD", b}};
        struct kdl_fig f = {.ylabel = "KL (nats)"};

        (void) state;
        assert_int_equal(kdl_fig_bars(dir, "bars", &f, cat, 4, s, 2, false), 0);
        check_rendered("bars");
        assert_int_equal(kdl_fig_bars(dir, "stacked", &f, cat, 4, s, 2, true), 0);
        check_rendered("stacked");
}

/* GPVAL_Y_@which (MIN or MAX) of script @name as gnuplot draws it from the
 * figure directory. */
static double drawn_y(const char *name, const char *which)
{
        char *cmd, line[256] = "";
        double y = NAN;
        FILE *p;

        assert_true(asprintf(&cmd,
                             "cd %s && '%s' -e \"fmt='svg'\" -e \"load 'scripts/%s.gp'\" "
                             "-e 'print GPVAL_Y_%s' 2>&1",
                             dir, gnuplot, name, which) > 0);
        p = popen(cmd, "r");
        assert_non_null(p);
        while (fgets(line, sizeof(line), p))
                y = strtod(line, NULL);
        assert_int_equal(pclose(p), 0);
        free(cmd);
        return y;
}

/* A negative side-by-side bar (a negative correlation) is drawn below a zero
 * line; bars that are all positive start at zero; ymax sets the top. */
static void test_bars_below_zero_show(void **state)
{
        const char *cat[] = {"logit_fisher", "logit_l2", "feature_l2"};
        double a[] = {0.9, -0.3, 0.5}, b[] = {0.8, 0.1, -0.05}, c[] = {0.7, 0.99, 0.4};
        struct kdl_series neg[] = {{"student_ce", a}, {"student_narrow", b}};
        struct kdl_series pos[] = {{"student_ce", c}};
        struct kdl_fig f = {.ylabel = "Pearson r with the exact KL"};
        char *gp;

        (void) state;
        assert_int_equal(kdl_fig_bars(dir, "negbars", &f, cat, 3, neg, 2, false), 0);
        check_rendered("negbars");
        gp = slurp("scripts", "negbars", "gp");
        assert_non_null(strstr(gp, "xzeroaxis"));
        free(gp);
        assert_true(drawn_y("negbars", "MIN") <= -0.3);
        assert_int_equal(kdl_fig_bars(dir, "posbars", &f, cat, 3, pos, 1, false), 0);
        check_rendered("posbars");
        assert_true(fabs(drawn_y("posbars", "MIN")) < 1e-12);
        /* Correlations and shares stop at 1, not at the next tick above. */
        assert_true(drawn_y("posbars", "MAX") > 1.0);
        f.ymax = 1.0;
        assert_int_equal(kdl_fig_bars(dir, "negbars1", &f, cat, 3, neg, 2, false), 0);
        check_rendered("negbars1");
        assert_true(fabs(drawn_y("negbars1", "MAX") - 1.0) < 1e-12);
        assert_true(drawn_y("negbars1", "MIN") <= -0.3);
        assert_int_equal(kdl_fig_bars(dir, "shares", &f, cat, 3, pos, 1, true), 0);
        check_rendered("shares");
        assert_true(fabs(drawn_y("shares", "MAX") - 1.0) < 1e-12);
}

static void test_heatmap_annotated(void **state)
{
        const char *rows[] = {"conv1", "block.1", "layer3.0", "pen"};
        const char *cols[] = {"s1", "s2", "s3"};
        double m[12];
        struct kdl_fig f = {.xlabel = "student layer", .ylabel = "teacher layer"};
        char *gp;

        (void) state;
        for (int k = 0; k < 12; k++)
                m[k] = (k * 7 % 12) / 11.0;
        assert_int_equal(kdl_fig_heatmap(dir, "heat", &f, m, 4, 3, rows, cols, true, 0, 1), 0);
        gp = slurp("scripts", "heat", "gp");
        assert_non_null(strstr(gp, "set ytics ('conv1' 0, 'block.1' 1, 'layer3.0' 2, 'pen' 3)"));
        assert_non_null(strstr(gp, "with labels"));
        assert_non_null(strstr(gp, "set cbrange [0:1]"));
        free(gp);
        check_rendered("heat");
}

static void test_histogram(void **state)
{
        double edges[21], a[20], b[20];
        struct kdl_series s[] = {{"teacher p_y", a}, {"student p_y", b}};
        struct kdl_fig f = {.xlabel = "target confidence", .ylabel = "density"};

        (void) state;
        for (int i = 0; i <= 20; i++)
                edges[i] = i / 20.0;
        for (int i = 0; i < 20; i++) {
                a[i] = exp(4.0 * i / 20.0);
                b[i] = 20.0 - i;
        }
        assert_int_equal(kdl_fig_hist(dir, "hist", &f, edges, 20, s, 2), 0);
        check_rendered("hist");
}

static void test_errors(void **state)
{
        double y[1] = {1};
        struct kdl_series s[] = {{"a", y}};
        struct kdl_fig f = {0};
        char longname[KDL_FIG_NAME_MAX + 2] = "";
        FILE *fp;
        char *p;

        (void) state;
        assert_int_equal(kdl_fig_lines(dir, "../evil", &f, NULL, NULL, 1, s, 1), -KDL_EUSAGE);
        memset(longname, 'a', sizeof(longname) - 1);
        assert_int_equal(kdl_fig_render(dir, longname, gnuplot, KDL_FIG_PNG), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "expected 1 to 200 letters"));
        longname[KDL_FIG_NAME_MAX] = '\0'; /* the longest name allowed: no such script */
        assert_int_equal(kdl_fig_render(dir, longname, gnuplot, KDL_FIG_PNG), -KDL_EPLOT);
        assert_int_equal(kdl_fig_lines(dir, "empty", &f, NULL, NULL, 0, s, 1), -KDL_ESHAPE);
        assert_int_equal(kdl_fig_lines("/proc/nope", "x", &f, NULL, NULL, 1, s, 1), -ENOENT);
        /* A broken script: gnuplot's own message comes back. */
        assert_true(asprintf(&p, "%s/scripts/broken.gp", dir) > 0);
        fp = fopen(p, "w");
        fputs("plot 'data/none.dat' using 1:2 with frobnicate\n", fp);
        fclose(fp);
        free(p);
        assert_int_equal(kdl_fig_render(dir, "broken", gnuplot, KDL_FIG_PNG), -KDL_EPLOT);
        assert_non_null(strstr(kdl_errmsg(), "figure 'broken' (png): gnuplot failed"));
        assert_int_equal(kdl_fig_render(dir, "lines", "/nonexistent/gnuplot", KDL_FIG_PNG),
                         -KDL_EPLOT);
        assert_non_null(strstr(kdl_errmsg(), "cannot run"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_lines_with_marks_and_log_scale),
                cmocka_unit_test(test_lines_over_checkpoints),
                cmocka_unit_test(test_bars_clustered_and_stacked),
                cmocka_unit_test(test_bars_below_zero_show),
                cmocka_unit_test(test_heatmap_annotated),
                cmocka_unit_test(test_histogram),
                cmocka_unit_test(test_errors),
        };
        int r;

        gnuplot = getenv("KDL_GNUPLOT");
        if (!gnuplot || !*gnuplot)
                return 77; /* meson: skipped, not failed */
        if (!mkdtemp(dir))
                return 1;
        r = cmocka_run_group_tests(tests, NULL, NULL);
        if (!getenv("KDL_KEEP")) {
                char *cmd;

                if (asprintf(&cmd, "rm -rf '%s'", dir) > 0 && system(cmd) != 0)
                        r = 1;
                free(cmd);
        } else {
                fprintf(stderr, "figures kept in %s\n", dir);
        }
        return r;
}
