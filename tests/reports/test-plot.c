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
        struct kdl_series s[] = {{"teacher", a, NULL}, {"student's", b, NULL}};
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
        struct kdl_series s[] = {{"kl", a, NULL}, {"logit_fisher", b, NULL}};
        struct kdl_fig f = {.xlabel = "checkpoint", .ylabel = "mean per sample (nats)"};

        (void) state;
        assert_int_equal(kdl_fig_lines(dir, "curves", &f, NULL, ck, 4, s, 2), 0);
        check_rendered("curves");
}

static void test_bars_clustered_and_stacked(void **state)
{
        const char *cat[] = {"init", "early", "middle", "final"};
        double a[] = {0.8, 0.5, 0.3, 0.2}, b[] = {0.4, 0.3, 0.25, 0.1};
        struct kdl_series s[] = {{"TCKD", a, NULL}, {"(1-p) NCKD", b, NULL}};
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
        struct kdl_series neg[] = {{"student_ce", a, NULL}, {"student_narrow", b, NULL}};
        struct kdl_series pos[] = {{"student_ce", c, NULL}};
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

/* Past KDL_FIG_CELL_VALUES_MAX cells an axis has no values in its cells, and past
 * KDL_FIG_TICS_MAX it labels every k-th cell (k = 1, 2, 5, 10, ...), in a smaller font. */
static void test_heatmap_large_thinned(void **state)
{
        enum { R = 30, C = 120 };
        static double m[R * C];
        const char *rows[R], *cols[C];
        char names[C][8], want[64];
        struct kdl_fig f = {.xlabel = "class", .ylabel = "class"};
        char *gp;

        (void) state;
        for (int k = 0; k < C; k++) {
                snprintf(names[k], sizeof(names[k]), "c%d", k);
                cols[k] = names[k];
                if (k < R)
                        rows[k] = names[k];
        }
        for (int k = 0; k < R * C; k++)
                m[k] = (k * 37 % 101) / 100.0;
        assert_int_equal(kdl_fig_heatmap(dir, "bigheat", &f, m, R, C, rows, cols, true, 0, 1), 0);
        gp = slurp("scripts", "bigheat", "gp");
        assert_null(strstr(gp, "with labels")); /* no values in 30 x 120 cells */
        /* 30 rows: every 2nd (15 labels); 120 columns: every 10th (12 labels). */
        assert_non_null(strstr(gp, "set ytics ('c0' 0, 'c2' 2, 'c4' 4,"));
        assert_non_null(strstr(gp, ", 'c28' 28)\n"));
        assert_non_null(strstr(gp, "set xtics ('c0' 0, 'c10' 10, 'c20' 20,"));
        assert_non_null(strstr(gp, ", 'c110' 110)\n"));
        assert_null(strstr(gp, "'c5' 5"));
        assert_non_null(strstr(gp, "set xtics font ',6'"));
        assert_non_null(strstr(gp, "set ytics font ',6'"));
        free(gp);
        check_rendered("bigheat");
        /* 12 x 12: every label and every value. */
        assert_int_equal(kdl_fig_heatmap(dir, "heat12", &f, m, 12, 12, rows, cols, true, 0, 1), 0);
        gp = slurp("scripts", "heat12", "gp");
        snprintf(want, sizeof(want), "'c10' 10, 'c11' 11)\n");
        assert_non_null(strstr(gp, want));
        assert_non_null(strstr(gp, "with labels"));
        assert_non_null(strstr(gp, "font ',6'")); /* 12 labels: the smaller font */
        free(gp);
        /* 13 x 13: the labels, no values. */
        assert_int_equal(kdl_fig_heatmap(dir, "heat13", &f, m, 13, 13, rows, cols, true, 0, 1), 0);
        gp = slurp("scripts", "heat13", "gp");
        assert_non_null(strstr(gp, "'c11' 11, 'c12' 12)\n"));
        assert_null(strstr(gp, "with labels"));
        free(gp);
}

/* The top classes of a class matrix: those of its strongest off-diagonal pairs (m_ij +
 * m_ji), NaN left out, ties to the lower class, in increasing order. */
static void test_top_classes(void **state)
{
        enum { C = 60 };
        static double m[C * C];
        size_t top[5];

        (void) state;
        for (size_t i = 0; i < C; i++)
                for (size_t j = 0; j < C; j++)
                        m[i * C + j] = i == j ? 0.9 : 0.001 * (double) ((i * 7 + j * 13) % 10);
        m[41 * C + 7] = 0.30; /* 7 and 41: 0.30 + m[7][41] */
        m[12 * C + 55] = 0.20;
        m[55 * C + 12] = 0.15; /* 12 and 55: 0.35, the strongest */
        m[3 * C + 30] = 0.25;  /* 3 and 30 */
        m[19 * C + 19] = 5.0;  /* a large diagonal does not count */
        m[50 * C + 44] = NAN;  /* nor does NaN */
        assert_int_equal(kdl_fig_top_classes(m, C, 4, top), 0);
        assert_int_equal(top[0], 7);
        assert_int_equal(top[1], 12);
        assert_int_equal(top[2], 41);
        assert_int_equal(top[3], 55);
        assert_int_equal(kdl_fig_top_classes(m, C, 5, top), 0);
        assert_int_equal(top[0], 3); /* the pair 3 and 30 ties: the lower class first */
        assert_int_equal(top[4], 55);
        assert_int_equal(kdl_fig_top_classes(m, C, 0, top), -KDL_ESHAPE);
        assert_int_equal(kdl_fig_top_classes(m, 3, 4, top), -KDL_ESHAPE);
}

/* xmax ends the x axis short of the data, which the data file keeps whole. */
static void test_lines_xmax(void **state)
{
        double x[10], y[10];
        struct kdl_series s[] = {{"residual", y, NULL}};
        struct kdl_fig f = {.xlabel = "d", .logy = true, .xmax = 6};
        char *gp, *dat;

        (void) state;
        for (int i = 0; i < 10; i++) {
                x[i] = i + 1;
                y[i] = i < 4 ? exp(-(double) i) : (double) NAN;
        }
        assert_int_equal(kdl_fig_lines(dir, "cut", &f, x, NULL, 10, s, 1), 0);
        gp = slurp("scripts", "cut", "gp");
        assert_non_null(strstr(gp, "set xrange [*:6]\n"));
        free(gp);
        dat = slurp("data", "cut", "dat");
        assert_non_null(strstr(dat, "\n 10 \"\" NaN\n"));
        free(dat);
        check_rendered("cut");
        f.xmax = 0; /* the default: the whole range */
        assert_int_equal(kdl_fig_lines(dir, "cut", &f, x, NULL, 10, s, 1), 0);
        gp = slurp("scripts", "cut", "gp");
        assert_null(strstr(gp, "set xrange"));
        free(gp);
}

static void test_histogram(void **state)
{
        double edges[21], a[20], b[20];
        struct kdl_series s[] = {{"teacher p_y", a, NULL}, {"student p_y", b, NULL}};
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
        struct kdl_series s[] = {{"a", y, NULL}};
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

/* Figure @name's script holds each of the @n strings @in_gp, its data file @in_dat, and it
 * renders. */
static void check_script_data(const char *name, const char *const *in_gp, size_t n,
                              const char *in_dat)
{
        char *gp = slurp("scripts", name, "gp"), *dat = slurp("data", name, "dat");

        for (size_t k = 0; k < n; k++)
                if (!strstr(gp, in_gp[k]))
                        fail_msg("%s.gp lacks \"%s\"", name, in_gp[k]);
        if (!strstr(dat, in_dat))
                fail_msg("%s.dat lacks \"%s\"", name, in_dat);
        check_rendered(name);
        free(gp);
        free(dat);
}

/* Mean ± sd: lines draw yerrorlines and side-by-side bars a histogram with errorbars, the
 * sd in a column per series after the values; stacked bars leave the sd out. */
static void test_error_bars(void **state)
{
        const char *ck[] = {"init", "middle", "final"};
        double m[] = {2.5, 1.1, 0.4}, sd[] = {0.3, 0.2, 0.05}, b[] = {2.4, 1.3, 0.5};
        struct kdl_series s[] = {{"group (n = 3)", m, sd}, {"single", b, NULL}};
        struct kdl_fig f = {.ylabel = "KL (nats)"};
        const char *lines[] = {"using 1:3:5 with yerrorlines", "using 1:4 with linespoints"};
        const char *bars[] = {"set style histogram errorbars", "using 2:4 ", "using 3:5 "};
        char *gp;

        (void) state;
        assert_int_equal(kdl_fig_lines(dir, "err_lines", &f, NULL, ck, 3, s, 2), 0);
        check_script_data("err_lines", lines, 2, " 2.5 2.4 0.3 NaN\n");
        assert_int_equal(kdl_fig_bars(dir, "err_bars", &f, ck, 3, s, 2, false), 0);
        check_script_data("err_bars", bars, 3, " 1.1 1.3 0.2 0\n");
        assert_int_equal(kdl_fig_bars(dir, "err_stacked", &f, ck, 3, s, 2, true), 0);
        gp = slurp("scripts", "err_stacked", "gp");
        assert_null(strstr(gp, "errorbars"));
        free(gp);
}

/* Ten series: no two share a colour and dash pair, and the ninth (dashed) does not take
 * the first one's colour. */
static void test_series_styles_distinct(void **state)
{
        double y[10][2];
        struct kdl_series s[10];
        struct kdl_fig f = {.ylabel = "y"};
        char *gp, *at;
        unsigned ls[10], dt[10];

        (void) state;
        for (int k = 0; k < 10; k++) {
                y[k][0] = 1.0 + k;
                y[k][1] = 2.0 + k;
                s[k] = (struct kdl_series){"s", y[k], NULL};
        }
        assert_int_equal(kdl_fig_lines(dir, "styles", &f, NULL, NULL, 2, s, 10), 0);
        gp = slurp("scripts", "styles", "gp");
        at = gp;
        for (int k = 0; k < 10; k++) {
                at = strstr(at, "with linespoints ls ");
                assert_non_null(at);
                assert_int_equal(sscanf(at, "with linespoints ls %u dt %u", &ls[k], &dt[k]), 2);
                at++;
        }
        for (int a = 0; a < 10; a++)
                for (int b = a + 1; b < 10; b++)
                        assert_false(ls[a] == ls[b] && dt[a] == dt[b]);
        assert_true(ls[8] != ls[0] && dt[8] != dt[0]);
        free(gp);
}

/* A marker past the right end of the x axis is an arrow at the edge with its label, not a
 * line at the edge. */
static void test_mark_beyond_range(void **state)
{
        double x[] = {1, 2, 3, 4}, y[] = {0.5, 0.2, 0.1, 0.01}, marks[] = {2, 128};
        const char *labels[] = {"a (d_s = 2)", "b (d_s = 128)"};
        struct kdl_series s[] = {{"residual", y, NULL}};
        struct kdl_fig f = {.ylabel = "share", .nmarks = 2, .marks = marks, .mark_labels = labels};
        char *gp;

        (void) state;
        assert_int_equal(kdl_fig_lines(dir, "beyond", &f, x, NULL, 4, s, 1), 0);
        gp = slurp("scripts", "beyond", "gp");
        assert_non_null(strstr(gp, "set arrow from 2, graph 0 to 2, graph 1 nohead"));
        assert_null(strstr(gp, "set arrow from 128,"));
        assert_non_null(strstr(gp, "to graph 1, graph 0.84 head"));
        assert_non_null(strstr(gp, "'b (d_s = 128)' at graph 0.85, graph 0.84 right"));
        check_rendered("beyond");
        free(gp);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_lines_with_marks_and_log_scale),
                cmocka_unit_test(test_lines_over_checkpoints),
                cmocka_unit_test(test_bars_clustered_and_stacked),
                cmocka_unit_test(test_bars_below_zero_show),
                cmocka_unit_test(test_heatmap_annotated),
                cmocka_unit_test(test_heatmap_large_thinned),
                cmocka_unit_test(test_top_classes),
                cmocka_unit_test(test_lines_xmax),
                cmocka_unit_test(test_histogram),
                cmocka_unit_test(test_error_bars),
                cmocka_unit_test(test_series_styles_distinct),
                cmocka_unit_test(test_mark_beyond_range),
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
