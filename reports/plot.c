/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "metrics/base/alloc.h"
#include "metrics/sample.h"
#include "reports/plot.h"
#include "metrics/base/banned.h"

/* Okabe & Ito (2008): distinguishable with every common colour-vision deficiency. */
static const char *const palette[] = {"#0072B2", "#D55E00", "#009E73", "#E69F00",
                                      "#CC79A7", "#56B4E9", "#000000", "#F0E442"};
#define NPALETTE (sizeof(palette) / sizeof(palette[0]))
static const int point_types[] = {7, 5, 9, 11, 13, 15, 4, 6};

/* Series @k's line style (colour and point type): past the palette the colours shift by
 * one per round as the dash pattern changes (dt k / NPALETTE + 1), so that no two series
 * of a figure share a colour and dash pair, nor does a dashed series take the colour of
 * the first one (the exact KL beside the ninth source). */
static size_t style_of(size_t k)
{
        return (k + k / NPALETTE) % NPALETTE + 1;
}

/* A character a slug keeps as it is. */
static bool plain(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-' || c == '.';
}

/* 0 for a figure name as plot.h describes; -KDL_EUSAGE (message recorded) otherwise. */
static int check_name(const char *name)
{
        bool ok = *name && strlen(name) <= KDL_FIG_NAME_MAX;

        for (const char *p = name; ok && *p; p++)
                ok = plain(*p) || *p == '~';
        if (!ok)
                return kdl_error(-KDL_EUSAGE,
                                 "figure name '%s': expected 1 to %d letters, digits, '_', '-', "
                                 "'.' or '~'",
                                 name, KDL_FIG_NAME_MAX);
        return 0;
}

char *kdl_fig_slug(const char *s, size_t max)
{
        size_t len = strlen(s), n = 0, cut = 0;
        uint64_t h = 0;
        char *out;

        assert(max >= 24);
        out = kdl_new(char, 3 * len + 1);
        if (!out)
                return NULL;
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                if (n <= max - 17)
                        cut = n; /* the escapes written so far fit beside the hash */
                if (plain((char) *p))
                        out[n++] = (char) *p;
                else
                        n += (size_t) snprintf(out + n, 4, "~%02X", *p);
                h = kdl_sample_hash(h, *p, 0);
        }
        if (n <= max - 17)
                cut = n;
        if (n > max)
                snprintf(out + cut, 18, "~%016llx", (unsigned long long) h);
        return out;
}

int kdl_fig_dirs(const char *dir)
{
        const char *sub[] = {"", "/data", "/scripts", "/figures"};

        for (size_t k = 0; k < sizeof(sub) / sizeof(sub[0]); k++) {
                char *p = kdl__asprintf("%s%s", dir, sub[k]);
                int err = 0;

                if (!p)
                        return -ENOMEM;
                if (mkdir(p, 0777) < 0 && errno != EEXIST)
                        err = kdl_error(-errno, "cannot create '%s': %s", p, strerror(errno));
                free(p);
                if (err < 0)
                        return err;
        }
        return 0;
}

/* Open DIR/SUB/NAME.EXT for writing. */
static int open_out(const char *dir, const char *sub, const char *name, const char *ext, FILE **ret)
{
        char *p;
        FILE *fp;
        int err;

        err = check_name(name);
        if (err < 0)
                return err;
        err = kdl_fig_dirs(dir);
        if (err < 0)
                return err;
        p = kdl__asprintf("%s/%s/%s.%s", dir, sub, name, ext);
        if (!p)
                return -ENOMEM;
        fp = fopen(p, "w");
        if (!fp) {
                err = kdl_error(-errno, "cannot write '%s': %s", p, strerror(errno));
                free(p);
                return err;
        }
        free(p);
        *ret = fp;
        return 0;
}

static int close_out(FILE *fp, const char *name)
{
        bool bad = ferror(fp) != 0;

        if (fclose(fp) != 0 || bad)
                return kdl_error(-EIO, "cannot write the files of figure '%s'", name);
        return 0;
}

/* Close the finished data file @dat and open the figure's script. */
static int script_after_data(const char *dir, const char *name, FILE *dat, FILE **ret_gp)
{
        int err = close_out(dat, name);

        return err < 0 ? err : open_out(dir, "scripts", name, "gp", ret_gp);
}

/* The most characters of a tick label: a longer one keeps its start and its end around an
 * ellipsis (names often differ only at the end), so that the plot keeps its room; the data
 * file and the tables have it whole. */
#define TIC_MAX 20

/* UTF-8 characters of @s: the bytes that are not a character's continuation. */
static size_t utf8_chars(const char *s)
{
        size_t n = 0;

        for (; s && *s; s++)
                n += ((unsigned char) *s & 0xC0) != 0x80;
        return n;
}

/* A gnuplot single-quoted string (no escapes but a quote written twice); in a tick label,
 * which gnuplot reads as a format for the tick's value, '%' is written twice too, and a
 * label of more than TIC_MAX characters is shortened.  Control characters (line breaks)
 * become spaces. */
static void gp_quoted(FILE *fp, const char *s, bool tic)
{
        size_t n = utf8_chars(s), head = SIZE_MAX, tail = 0, k = 0;

        if (tic && n > TIC_MAX) {
                head = (TIC_MAX - 1) / 2;
                tail = n - (TIC_MAX - 1 - head); /* the first character of the end kept */
        }
        fputc('\'', fp);
        for (; s && *s; s++) {
                if (((unsigned char) *s & 0xC0) != 0x80 && k++ == head)
                        fputs("\xE2\x80\xA6", fp); /* an ellipsis */
                if (k > head && k <= tail)
                        continue;
                if (*s == '\'' || (tic && *s == '%'))
                        fputc(*s, fp);
                fputc((unsigned char) *s < 0x20 ? ' ' : *s, fp);
        }
        fputc('\'', fp);
}

static void gp_string(FILE *fp, const char *s)
{
        gp_quoted(fp, s, false);
}

/* A label in a data file: double-quoted, no embedded double quotes. */
static void dat_label(FILE *fp, const char *s)
{
        fputc('"', fp);
        for (; s && *s; s++)
                fputc(*s == '"' || *s == '\n' ? '\'' : *s, fp);
        fputc('"', fp);
}

static void dat_value(FILE *fp, double v)
{
        if (isfinite(v))
                fprintf(fp, " %.10g", v);
        else
                fputs(" NaN", fp);
}

/* The most characters of a y label at the text size: a longer one gets a smaller font. */
#define YLABEL_CHARS 20

/*
 * The house style.  Sizes: a 3.5 in column for PDF (8 pt text); PNG is the
 * same figure at 300 dpi; SVG at 96 dpi.
 */
/*
 * @xlo/@xhi: the data's x range when known (lines, histograms), so that a
 * marker's label can hang to the left of a marker in the right part of the
 * plot instead of running off the edge; NAN when unknown.
 */
static void preamble(FILE *fp, const char *name, const struct kdl_fig *f, double xlo, double xhi)
{
        fputs("# kdlens figure; render from the report directory with\n"
              "#   gnuplot -e \"fmt='png'\" scripts/",
              fp);
        fprintf(fp, "%s.gp   (fmt: pdf, png or svg)\n", name);
        fputs("if (!exists(\"fmt\")) fmt = 'png'\n"
              "if (fmt eq 'pdf') set terminal pdfcairo size 3.5in,2.5in font 'Helvetica,8' "
              "linewidth 1.2 noenhanced\n"
              "if (fmt eq 'png') set terminal pngcairo size 1050,750 font 'Helvetica,8' "
              "fontscale 3.2 linewidth 3.5 noenhanced\n"
              "if (fmt eq 'svg') set terminal svg size 672,480 font 'Helvetica,11' "
              "linewidth 1.5 noenhanced\n",
              fp);
        fprintf(fp, "set output 'figures/%s.'.fmt\n", name);
        fputs("set encoding utf8\n"
              "set border 3 lw 0.8\n"
              "set tics nomirror out scale 0.6\n"
              "set grid ytics lc rgb '#e0e0e0' lw 0.8 dt 1\n"
              "set key below horizontal maxrows 3 reverse Left samplen 2 spacing 1.1 height 1 "
              "width 2\n"
              "set offsets 0, 0, graph 0.06, 0\n",
              fp);
        for (size_t k = 0; k < NPALETTE; k++)
                fprintf(fp, "set style line %zu lc rgb '%s' lw 1.5 pt %d ps 0.7\n", k + 1,
                        palette[k], point_types[k]);
        if (f->title) {
                fputs("set title ", fp);
                gp_string(fp, f->title);
                fputc('\n', fp);
        }
        if (f->xlabel) {
                fputs("set xlabel ", fp);
                gp_string(fp, f->xlabel);
                fputc('\n', fp);
        }
        if (f->ylabel) {
                fputs("set ylabel ", fp);
                gp_string(fp, f->ylabel);
                /* A rotated label longer than the plot is high was cut at the top. */
                fputs(utf8_chars(f->ylabel) > YLABEL_CHARS ? " font ',6'\n" : "\n", fp);
        }
        if (f->logy)
                fputs("set logscale y\nset format y '%g'\n", fp);
        if (f->logx)
                fputs("set logscale x\n", fp);
        for (size_t k = 0; k < f->nmarks; k++) {
                /* Past the right end of the axis: an arrow at the edge, labelled with the
                 * value, never a line at the edge as if the mark were there. */
                if (isfinite(xhi) && f->marks[k] > xhi) {
                        double y = 0.92 - 0.08 * (double) (k % 4);

                        fprintf(fp,
                                "set arrow from graph 0.86, graph %.2f to graph 1, graph %.2f "
                                "head filled size char 0.8,20 lw 1 lc rgb '#555555'\n",
                                y, y);
                        fputs("set label ", fp);
                        gp_string(fp, f->mark_labels && f->mark_labels[k] ? f->mark_labels[k] : "");
                        fprintf(fp, " at graph 0.85, graph %.2f right font ',7'\n", y);
                        continue;
                }
                fprintf(fp,
                        "set arrow from %.10g, graph 0 to %.10g, graph 1 nohead dt 2 lw 1 "
                        "lc rgb '#555555'\n",
                        f->marks[k], f->marks[k]);
                if (f->mark_labels && f->mark_labels[k]) {
                        fputs("set label ", fp);
                        gp_string(fp, f->mark_labels[k]);
                        bool left = isfinite(xlo) && isfinite(xhi) && xhi > xlo &&
                                    (f->logx ? log(f->marks[k] / xlo) / log(xhi / xlo)
                                             : (f->marks[k] - xlo) / (xhi - xlo)) > 0.6;

                        fprintf(fp, " at %.10g, graph %.2f %s offset char %s,0 font ',7'\n",
                                f->marks[k], 0.92 - 0.08 * (double) (k % 4),
                                left ? "right" : "left", left ? "-0.4" : "0.4");
                }
        }
}

/* The data file in the first plot clause, '' (the same file) afterwards. */
static void plot_source(FILE *gp, const char *name, size_t k)
{
        if (k == 0)
                fprintf(gp, "  'data/%s.dat'", name);
        else
                fputs("  ''", gp);
}

/* Tick labels @labels[0], @labels[step], ... on @axis at @at (NULL: 0, 1, ...), in the
 * script: a label in a data file could not hold a double quote. */
static void tics(FILE *gp, const char *axis, const char *const *labels, const double *at, size_t n,
                 size_t step)
{
        fprintf(gp, "set %stics (", axis);
        for (size_t i = 0; i < n; i += step) {
                if (i)
                        fputs(", ", gp);
                gp_quoted(gp, labels[i], true);
                fprintf(gp, " %.10g", at ? at[i] : (double) i);
        }
        fputs(")\n", gp);
}

/* Label every how many of @n heatmap cells: 1, 2, 5, 10, 20, 50, ..., the first that leaves
 * at most KDL_FIG_TICS_MAX labels. */
static size_t tic_step(size_t n)
{
        static const size_t mant[] = {1, 2, 5};

        for (size_t p = 1;; p *= 10)
                for (size_t k = 0; k < 3; k++)
                        if ((n + mant[k] * p - 1) / (mant[k] * p) <= KDL_FIG_TICS_MAX ||
                            mant[k] * p >= n)
                                return mant[k] * p;
}

/* Tick labels a heatmap axis of @n cells shows. */
static size_t shown_tics(size_t n)
{
        return (n + tic_step(n) - 1) / tic_step(n);
}

/* More heatmap tick labels than this on an axis take a smaller font. */
#define MANY_TICS 10

/* Rotate category labels when they would collide: the total width of those shown (every
 * @step-th) beats the axis. */
static bool crowded(const char *const *labels, size_t n, size_t step, size_t room)
{
        size_t total = 0;

        for (size_t i = 0; i < n; i += step)
                total += strlen(labels[i]) + 2;
        return total > room;
}

static const char *series_name(const struct kdl_series *s, size_t k)
{
        return s[k].name ? s[k].name : "";
}

/* Whether a series of @s has error bars. */
static bool any_sd(const struct kdl_series *s, size_t ns)
{
        for (size_t k = 0; k < ns; k++)
                if (s[k].sd)
                        return true;
        return false;
}

/* The standard deviations of row @i, one column per series after the values (@none for a
 * series without). */
static void dat_sd(FILE *dat, const struct kdl_series *s, size_t ns, size_t i, double none)
{
        for (size_t k = 0; k < ns; k++)
                dat_value(dat, s[k].sd ? s[k].sd[i] : none);
}

/* The first line of a data file: what the leading columns hold, then the series names. */
static void dat_header(FILE *dat, const char *lead, const struct kdl_series *s, size_t ns)
{
        fputs(lead, dat);
        for (size_t k = 0; k < ns; k++) {
                fputc(' ', dat);
                dat_label(dat, series_name(s, k));
        }
        fputc('\n', dat);
}

int kdl_fig_lines(const char *dir, const char *name, const struct kdl_fig *f, const double *x,
                  const char *const *xtics, size_t n, const struct kdl_series *s, size_t ns)
{
        FILE *dat = NULL, *gp = NULL;
        int err;

        if (n == 0 || ns == 0)
                return kdl_error(-KDL_ESHAPE, "figure '%s': expected data, found none", name);
        err = open_out(dir, "data", name, "dat", &dat);
        if (err < 0)
                return err;
        dat_header(dat, "# x label", s, ns);
        for (size_t i = 0; i < n; i++) {
                dat_value(dat, x ? x[i] : (double) i);
                fputc(' ', dat);
                dat_label(dat, xtics ? xtics[i] : "");
                for (size_t k = 0; k < ns; k++)
                        dat_value(dat, s[k].y[i]);
                if (any_sd(s, ns))
                        dat_sd(dat, s, ns, i, NAN);
                fputc('\n', dat);
        }
        err = script_after_data(dir, name, dat, &gp);
        if (err < 0)
                return err;
        {
                double lo = HUGE_VAL, hi = -HUGE_VAL;
                bool integral = x != NULL, cut;

                for (size_t i = 0; i < n; i++) {
                        double v = x ? x[i] : (double) i;

                        lo = v < lo ? v : lo;
                        hi = v > hi ? v : hi;
                        if (fabs(v - floor(v)) > 0.0)
                                integral = false;
                }
                cut = f->xmax > lo && f->xmax < hi;
                hi = cut ? f->xmax : hi;
                preamble(gp, name, f, lo, hi);
                /* Counts (dimensions, indices) get whole-number ticks. */
                if (integral && !f->logx && hi > lo)
                        fprintf(gp, "set xtics %.0f\n", ceil((hi - lo) / 10.0));
                if (cut)
                        fprintf(gp, "set xrange [*:%.10g]\n", hi);
        }
        if (!x)
                fprintf(gp, "set xrange [-0.3:%zu.3]\n", n - 1);
        if (xtics && crowded(xtics, n, 1, 48))
                fputs("set xtics rotate by 30 right\n", gp);
        if (xtics)
                tics(gp, "x", xtics, x, n, 1);
        fputs("plot \\\n", gp);
        for (size_t k = 0; k < ns; k++) {
                plot_source(gp, name, k);
                if (s[k].sd) /* mean ± sd: the sd columns follow the values */
                        fprintf(gp, " using 1:%zu:%zu with yerrorlines ls %zu dt %zu title ", k + 3,
                                ns + 3 + k, style_of(k), k / NPALETTE + 1);
                else
                        fprintf(gp, " using 1:%zu with linespoints ls %zu dt %zu title ", k + 3,
                                style_of(k), k / NPALETTE + 1);
                gp_string(gp, series_name(s, k));
                fputs(k + 1 < ns ? ", \\\n" : "\n", gp);
        }
        return close_out(gp, name);
}

int kdl_fig_bars(const char *dir, const char *name, const struct kdl_fig *f,
                 const char *const *categories, size_t ncat, const struct kdl_series *s, size_t ns,
                 bool stacked)
{
        FILE *dat = NULL, *gp = NULL;
        bool negative = false, errors = !stacked && any_sd(s, ns);
        int err;

        if (ncat == 0 || ns == 0)
                return kdl_error(-KDL_ESHAPE, "figure '%s': expected data, found none", name);
        /* Side-by-side bars below zero (a negative correlation) must show:
         * the axis then spans them, with a line at zero. */
        for (size_t i = 0; i < ncat && !stacked; i++)
                for (size_t k = 0; k < ns; k++)
                        negative = negative || s[k].y[i] < 0.0;
        err = open_out(dir, "data", name, "dat", &dat);
        if (err < 0)
                return err;
        dat_header(dat, "# category", s, ns);
        for (size_t i = 0; i < ncat; i++) {
                dat_label(dat, categories[i]);
                for (size_t k = 0; k < ns; k++)
                        dat_value(dat, s[k].y[i]);
                if (errors)
                        dat_sd(dat, s, ns, i, 0.0);
                fputc('\n', dat);
        }
        err = script_after_data(dir, name, dat, &gp);
        if (err < 0)
                return err;
        preamble(gp, name, f, NAN, NAN);
        fprintf(gp,
                "set style data histogram\nset style histogram %s\n"
                "set style fill solid 0.9 border rgb '#333333'\nset boxwidth %s\n"
                "set grid noxtics\nset yrange [%s:",
                stacked  ? "rowstacked"
                : errors ? "errorbars gap 1.5 lw 1"
                         : "clustered gap 1.5",
                stacked ? "0.6" : "0.9", negative || f->logy ? "*" : "0");
        if (f->ymax > 0.0) /* exactly there: no headroom offset above it */
                fprintf(gp, "%.17g]\nset offsets 0, 0, 0, 0\n", f->ymax);
        else
                fputs("*]\n", gp);
        if (negative)
                fputs("set xzeroaxis lt -1 lw 1.5\n", gp);
        /* Many categories (the 20 worst classes): upright, or the rotated labels collide. */
        if (crowded(categories, ncat, 1, 48))
                fprintf(gp, "set xtics rotate by %s right\n", ncat > 12 ? "90" : "30");
        tics(gp, "x", categories, NULL, ncat, 1);
        fputs("plot \\\n", gp);
        for (size_t k = 0; k < ns; k++) {
                plot_source(gp, name, k);
                if (errors) /* mean ± sd: the sd columns follow the values */
                        fprintf(gp, " using %zu:%zu ls %zu title ", k + 2, ns + 2 + k, style_of(k));
                else
                        fprintf(gp, " using %zu ls %zu title ", k + 2, style_of(k));
                gp_string(gp, series_name(s, k));
                fputs(k + 1 < ns ? ", \\\n" : "\n", gp);
        }
        return close_out(gp, name);
}

int kdl_fig_heatmap(const char *dir, const char *name, const struct kdl_fig *f, const double *m,
                    size_t rows, size_t cols, const char *const *row_labels,
                    const char *const *col_labels, bool annotate, double zmin, double zmax)
{
        FILE *dat = NULL, *gp = NULL;
        double lo = HUGE_VAL, hi = -HUGE_VAL;
        int err;

        if (rows == 0 || cols == 0)
                return kdl_error(-KDL_ESHAPE, "figure '%s': expected a matrix, found none", name);
        for (size_t k = 0; k < rows * cols; k++)
                if (isfinite(m[k])) {
                        lo = m[k] < lo ? m[k] : lo;
                        hi = m[k] > hi ? m[k] : hi;
                }
        if (!(zmax > zmin)) {
                zmin = lo <= hi ? lo : 0.0;
                zmax = lo < hi ? hi : zmin + 1.0;
        }
        err = open_out(dir, "data", name, "dat", &dat);
        if (err < 0)
                return err;
        fputs("# column row value (row 0 at the top)\n", dat);
        for (size_t i = 0; i < rows; i++)
                for (size_t j = 0; j < cols; j++) {
                        fprintf(dat, "%zu %zu", j, i);
                        dat_value(dat, m[i * cols + j]);
                        fputc('\n', dat);
                }
        err = script_after_data(dir, name, dat, &gp);
        if (err < 0)
                return err;
        preamble(gp, name, f, NAN, NAN);
        /* viridis: perceptually uniform and readable in grey and by colour-blind readers */
        fputs("set palette defined (0 '#440154', 0.25 '#3b528b', 0.5 '#21908d', "
              "0.75 '#5dc963', 1 '#fde725')\n"
              "unset grid\nunset key\nset border 0\nset tics scale 0\n",
              gp);
        fprintf(gp, "set cbrange [%.10g:%.10g]\n", zmin, zmax);
        fprintf(gp, "set xrange [-0.5:%zu.5]\nset yrange [%zu.5:-0.5]\n", cols - 1, rows - 1);
        fprintf(gp, "set size ratio %.6g\n", (double) rows / (double) cols);
        /* Many labels: a smaller font, and upright on x when they would collide. */
        if (crowded(col_labels, cols, tic_step(cols), 24))
                fprintf(gp, "set xtics rotate by %s right\n",
                        shown_tics(cols) > MANY_TICS ? "90" : "40");
        if (shown_tics(cols) > MANY_TICS)
                fputs("set xtics font ',6'\n", gp);
        if (shown_tics(rows) > MANY_TICS)
                fputs("set ytics font ',6'\n", gp);
        tics(gp, "x", col_labels, NULL, cols, tic_step(cols));
        tics(gp, "y", row_labels, NULL, rows, tic_step(rows));
        fprintf(gp, "zmid = %.10g\n", zmin + 0.6 * (zmax - zmin));
        fprintf(gp, "plot 'data/%s.dat' using 1:2:3 with image", name);
        if (annotate && rows <= KDL_FIG_CELL_VALUES_MAX && cols <= KDL_FIG_CELL_VALUES_MAX) {
                int pt = rows * cols > 100 ? 4 : rows * cols > 64 ? 5 : 7; /* the values' font */

                fprintf(gp,
                        ", \\\n  '' using 1:2:($3 < zmid ? sprintf('%%.2f', $3) : '') "
                        "with labels tc rgb 'white' font ',%d', \\\n"
                        "  '' using 1:2:($3 >= zmid ? sprintf('%%.2f', $3) : '') "
                        "with labels tc rgb 'black' font ',%d'",
                        pt, pt);
        }
        fputc('\n', gp);
        return close_out(gp, name);
}

/* Scores of kdl_fig_top_classes(), best first, ties to the lower class. */
struct scored {
        double score;
        size_t cls;
};

static int cmp_scored(const void *a, const void *b)
{
        const struct scored *x = a, *y = b;

        if (x->score > y->score || x->score < y->score)
                return x->score > y->score ? -1 : 1;
        return x->cls < y->cls ? -1 : x->cls > y->cls;
}

static int cmp_size(const void *a, const void *b)
{
        size_t x = *(const size_t *) a, y = *(const size_t *) b;

        return x < y ? -1 : x > y;
}

int kdl_fig_top_classes(const double *m, size_t c, size_t k, size_t *ret_idx)
{
        struct scored *s;

        if (k == 0 || k > c)
                return kdl_error(-KDL_ESHAPE, "top classes: expected 1 to %zu, found %zu", c, k);
        s = kdl_new(struct scored, c);
        if (!s)
                return -ENOMEM;
        for (size_t i = 0; i < c; i++) {
                s[i] = (struct scored){.score = -HUGE_VAL, .cls = i};
                for (size_t j = 0; j < c; j++) {
                        double v = m[i * c + j] + m[j * c + i];

                        if (j != i && v > s[i].score) /* false for NaN */
                                s[i].score = v;
                }
        }
        qsort(s, c, sizeof(*s), cmp_scored);
        for (size_t i = 0; i < k; i++)
                ret_idx[i] = s[i].cls;
        qsort(ret_idx, k, sizeof(*ret_idx), cmp_size);
        free(s);
        return 0;
}

int kdl_fig_hist(const char *dir, const char *name, const struct kdl_fig *f, const double *edges,
                 size_t nbins, const struct kdl_series *s, size_t ns)
{
        FILE *dat = NULL, *gp = NULL;
        int err;

        if (nbins == 0 || ns == 0)
                return kdl_error(-KDL_ESHAPE, "figure '%s': expected bins, found none", name);
        err = open_out(dir, "data", name, "dat", &dat);
        if (err < 0)
                return err;
        dat_header(dat, "# left_edge", s, ns);
        /* Steps: one row per bin at its left edge, and the right edge repeats the last bin. */
        for (size_t i = 0; i <= nbins; i++) {
                dat_value(dat, edges[i]);
                for (size_t k = 0; k < ns; k++)
                        dat_value(dat, s[k].y[i < nbins ? i : nbins - 1]);
                fputc('\n', dat);
        }
        err = script_after_data(dir, name, dat, &gp);
        if (err < 0)
                return err;
        preamble(gp, name, f, edges[0], edges[nbins]);
        fputs("set yrange [0:*]\nset style fill transparent solid 0.25 noborder\nplot \\\n", gp);
        for (size_t k = 0; k < ns; k++) {
                plot_source(gp, name, k);
                fprintf(gp, " using 1:%zu with fillsteps ls %zu notitle, \\\n", k + 2, style_of(k));
                fprintf(gp, "  '' using 1:%zu with steps ls %zu title ", k + 2, style_of(k));
                gp_string(gp, series_name(s, k));
                fputs(k + 1 < ns ? ", \\\n" : "\n", gp);
        }
        return close_out(gp, name);
}

/* Whether gnuplot's stderr @msg holds warnings only ("FILE" line N: warning: ...), such as
 * long tick labels it had to crowd: the figure is drawn. */
static bool only_warnings(const char *msg)
{
        bool any = false;

        for (const char *line = msg; *line;) {
                const char *nl = strchr(line, '\n');
                size_t len = nl ? (size_t) (nl - line) : strlen(line);

                if (strspn(line, " \t") < len) {
                        const char *w = strstr(line, ": warning: ");

                        if (!w || w >= line + len)
                                return false;
                        any = true;
                }
                line += len + (nl != NULL);
        }
        return any;
}

/* Run gnuplot once with its working directory in @dir; first stderr line on failure.
 * The child's arguments live on the stack: a child whose exec fails _exits
 * without freeing, and may not call free() (other threads, e.g. BLAS's, held
 * the heap at fork). */
static int run_gnuplot(const char *dir, const char *name, const char *gnuplot, const char *fmt)
{
        char script[KDL_FIG_NAME_MAX + 16], setfmt[32], msg[512] = "";
        int fds[2], status = 0;
        size_t got = 0;
        ssize_t r;
        pid_t pid;

        snprintf(script, sizeof(script), "scripts/%s.gp", name);
        snprintf(setfmt, sizeof(setfmt), "fmt='%s'", fmt);
        if (pipe2(fds, O_CLOEXEC) < 0)
                return kdl_error(-errno, "cannot run gnuplot: %s", strerror(errno));
        pid = fork();
        if (pid < 0) {
                int e = errno;

                close(fds[0]);
                close(fds[1]);
                return kdl_error(-e, "cannot run gnuplot: %s", strerror(e));
        }
        if (pid == 0) {
                int devnull = open("/dev/null", O_RDWR);

                if (devnull >= 0) {
                        dup2(devnull, 0);
                        dup2(devnull, 1);
                }
                dup2(fds[1], 2);
                if (chdir(dir) == 0)
                        execlp(gnuplot, gnuplot, "-e", setfmt, script, (char *) NULL);
                dprintf(2, "cannot run '%s': %s\n", gnuplot, strerror(errno));
                _exit(127);
        }
        close(fds[1]);
        while ((r = read(fds[0], msg + got, sizeof(msg) - 1 - got)) > 0)
                got += (size_t) r;
        close(fds[0]);
        msg[got] = '\0';
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || (got > 0 && !only_warnings(msg))) {
                /* gnuplot reports script errors on stderr, sometimes with exit 0. */
                char *line = msg, *nl;

                while (*line == '\n' || *line == ' ')
                        line++;
                nl = strchr(line, '\n');
                if (nl && nl[1] && strspn(line, " ^") == (size_t) (nl - line))
                        line = nl + 1;
                nl = strchr(line, '\n');
                if (nl)
                        *nl = '\0';
                return kdl_error(-KDL_EPLOT, "figure '%s' (%s): gnuplot failed: %s", name, fmt,
                                 *line ? line : "no message");
        }
        return 0;
}

int kdl_fig_render(const char *dir, const char *name, const char *gnuplot, unsigned formats)
{
        static const char *const fmts[] = {"pdf", "png", "svg"};
        int err;

        err = check_name(name);
        if (err < 0)
                return err;
        for (unsigned k = 0; k < 3; k++) {
                if (!(formats & (1u << k)))
                        continue;
                err = run_gnuplot(dir, name, gnuplot ? gnuplot : "gnuplot", fmts[k]);
                if (err < 0)
                        return err;
        }
        return 0;
}
