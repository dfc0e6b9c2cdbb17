/* SPDX-License-Identifier: MIT */
/* "Feature dimensions": is each student wide enough for the teacher's logits (kdlens dims). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "reports/plot.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

#define DIMS_MAX_SERIES     17 /* the teacher and up to 16 students */
#define RESIDUAL_MAX_SERIES 8  /* teacher checkpoints drawn */
/* Shares below this are zero to double precision: not drawn on the log axis. */
#define SHARE_FLOOR 1e-12

/* The series and marks of a lines figure, with the strings they own. */
struct lines {
        size_t ns, nm;
        struct kdl_series s[DIMS_MAX_SERIES];
        char *names[DIMS_MAX_SERIES];
        double *marks;
        char **labels;
};

static void lines_release(struct lines *l)
{
        for (size_t k = 0; k < l->ns; k++)
                free(l->names[k]);
        for (size_t k = 0; l->labels && k < l->nm; k++)
                free(l->labels[k]);
        free(l->labels);
        free(l->marks);
}

/* @share, or NaN (not drawn) when it is zero to double precision. */
static double drawn(double share)
{
        return share > SHARE_FLOOR ? share : (double) NAN;
}

/* One series per teacher checkpoint of "logit_residual" (rows come in blocks of @c), drawn
 * from @y. */
static int residual_series(struct lines *l, const kdl_table *t, size_t c, double *y)
{
        for (size_t i = 0; i + c <= kdl_table_rows(t) && l->ns < RESIDUAL_MAX_SERIES; i += c) {
                for (size_t k = 0; k < c; k++)
                        y[i + k] = drawn(kdl__report_real(t, i + k, "residual"));
                l->names[l->ns] =
                        kdl__asprintf("teacher at %s", kdl__report_str(t, i, "checkpoint"));
                if (!l->names[l->ns])
                        return -ENOMEM;
                l->s[l->ns] = (struct kdl_series){.name = l->names[l->ns], .y = y + i};
                l->ns++;
        }
        return 0;
}

/* @model's name in the figure: without the prefix all students share. */
static const char *short_model(const struct kdl__report *r, const char *model)
{
        for (size_t k = 0; k < r->o->nstudents; k++)
                if (strcmp(r->names[k], model) == 0)
                        return kdl__report_short_name(r, k);
        return model;
}

/* Row @i of "verdict" (@v) is its student's last checkpoint. */
static bool last_verdict(const kdl_table *v, size_t i)
{
        return i + 1 == kdl_table_rows(v) ||
               strcmp(kdl__report_str(v, i + 1, "model"), kdl__report_str(v, i, "model")) != 0;
}

/* The students' widths at their last checkpoint (from "verdict", @v), as marks at most @c;
 * students of one width share a mark. */
static int width_marks(const struct kdl__report *r, struct lines *l, const kdl_table *v, size_t c)
{
        size_t n = v ? kdl_table_rows(v) : 0;

        l->marks = kdl_new(double, n + 1);
        l->labels = kdl_new(char *, n + 1);
        if (!l->marks || !l->labels)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const char *model = short_model(r, kdl__report_str(v, i, "model"));
                double d_s = kdl__report_real(v, i, "d_s"), at = fmin(d_s, (double) c);
                char *width, *label, *open = NULL;
                size_t m = 0;

                if (!last_verdict(v, i))
                        continue;
                while (m < l->nm && !(fabs(l->marks[m] - at) < 0.5))
                        m++;
                if (m < l->nm)
                        open = strrchr(l->labels[m], '(');
                width = kdl__asprintf("(d_s = %.0f)", d_s);
                if (!width)
                        return -ENOMEM;
                if (m == l->nm) /* a new mark */
                        label = kdl__asprintf("%s %s", model, width);
                else if (open && strcmp(open, width) == 0) /* "a (d_s = 32)": "a, b (d_s = 32)" */
                        label = kdl__asprintf("%.*s, %s %s", (int) (open - l->labels[m] - 1),
                                              l->labels[m], model, width);
                else
                        label = kdl__asprintf("%s, %s %s", l->labels[m], model, width);
                free(width);
                if (!label)
                        return -ENOMEM;
                if (m == l->nm)
                        l->marks[l->nm++] = at;
                else
                        free(l->labels[m]);
                l->labels[m] = label;
        }
        return 0;
}

/* A series named @name (owned by @l from now on; NULL: out of memory) drawn from @y. */
static int add_series(struct lines *l, char *name, const double *y)
{
        if (!name)
                return -ENOMEM;
        l->names[l->ns] = name;
        l->s[l->ns] = (struct kdl_series){.name = name, .y = y};
        l->ns++;
        return 0;
}

/*
 * The tolerance as a level line, and each student's realised share 1 - R^2 (last
 * checkpoint, from "verdict", @v) as one point at its width (at most @c): the two tests
 * of the verdict drawn against the residual curve.  @y: room for (1 + rows of @v) x @c.
 */
static int verdict_series(const struct kdl__report *r, struct lines *l, const kdl_table *v,
                          size_t c, double *y)
{
        double tol = kdl__report_real(v, 0, "tolerance");
        size_t used = 1;

        for (size_t k = 0; k < c; k++)
                y[k] = drawn(tol);
        if (add_series(l, kdl__asprintf("tolerance %g", tol), y) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < kdl_table_rows(v) && l->ns < DIMS_MAX_SERIES; i++) {
                double r2 = kdl__report_real(v, i, "ridge_r2");
                double at = fmin(kdl__report_real(v, i, "d_s"), (double) c);
                double *p = y + used * c;

                if (!last_verdict(v, i) || isnan(r2) || !(at >= 1.0))
                        continue;
                for (size_t k = 0; k < c; k++)
                        p[k] = NAN;
                p[(size_t) at - 1] = drawn(1.0 - r2);
                used++;
                if (add_series(l,
                               kdl__asprintf("%s: 1 - R^2",
                                             short_model(r, kdl__report_str(v, i, "model"))),
                               p) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* The right end of the residual figure's x axis: with many classes the curves reach zero
 * (are no longer drawn) long before d = C, and the widths are small beside C; then the axis
 * ends a quarter past the last curve point or width drawn instead of at C (0: at C). */
static double residual_xmax(const struct lines *l, size_t c, const kdl_table *t, size_t nrows)
{
        double last = 0.0;

        for (size_t i = 0; i < nrows; i++)
                if (!isnan(drawn(kdl__report_real(t, i, "residual"))))
                        last = fmax(last, (double) (i % c + 1));
        for (size_t k = 0; k < l->nm; k++)
                last = fmax(last, l->marks[k]);
        return ceil(1.25 * last) + 1.0 < (double) c ? ceil(1.25 * last) + 1.0 : 0.0;
}

/*
 * The teacher's logit residual curve per checkpoint, the tolerance and each student's
 * realised share 1 - R^2 at its width; the students' widths marked.
 */
static int dims_residual_figure(struct kdl__report *r, const kdl_doc *d)
{
        const kdl_table *t = kdl_doc_find_table(d, "logit_residual");
        const kdl_table *v = kdl_doc_find_table(d, "verdict");
        struct lines l = {0};
        double *x = NULL, *y = NULL, *yv = NULL;
        char *cap = NULL;
        size_t c = 0, nrows, nv = v ? kdl_table_rows(v) : 0;
        int err;

        if (!t || (nrows = kdl_table_rows(t)) == 0)
                return 0;
        while (c < nrows && strcmp(kdl__report_str(t, c, "checkpoint"),
                                   kdl__report_str(t, 0, "checkpoint")) == 0)
                c++;
        x = kdl_new(double, c);
        y = kdl_new(double, nrows);
        yv = kdl_new(double, (nv + 1) * c);
        err = x && y && yv ? 0 : -ENOMEM;
        for (size_t k = 0; !err && k < c; k++)
                x[k] = (double) (k + 1);
        err = err ?: residual_series(&l, t, c, y);
        if (!err && nv)
                err = verdict_series(r, &l, v, c, yv);
        err = err ?: width_marks(r, &l, v, c);
        if (!err) {
                struct kdl_fig f = {.xlabel = "feature dimension d",
                                    .ylabel = "share left out",
                                    .logy = true,
                                    .xmax = residual_xmax(&l, c, t, nrows),
                                    .nmarks = l.nm,
                                    .marks = l.marks,
                                    .mark_labels = (const char *const *) l.labels};

                err = kdl_fig_lines(kdl_site_path(r->site), "dims_residual", &f, x, NULL, c, l.s,
                                    l.ns);
                cap = kdl__asprintf(
                        "Lines: the share of the teacher's row-centred logit variance that no "
                        "d-dimensional student can represent (Eckart-Young residual), per "
                        "teacher checkpoint, and the tolerance; the curve falls to the tolerance "
                        "at d_needed. Points: each student's realised share, 1 - ridge R^2 of "
                        "the teacher's centred logits from its head-input features, at its "
                        "width (vertical lines; last checkpoint). A student fails the "
                        "architectural test when the curve at its width is above the "
                        "tolerance, the realised test when its point is. Log scale: shares of 0 "
                        "(to double precision) are not drawn.%s",
                        f.xmax > 0.0 ? " The axis stops short of d = C: beyond it every share "
                                       "is 0 to double precision (the data file holds every d)."
                                     : "");
                err = err ?: cap ? 0 : -ENOMEM;
        }
        err = err ?: kdl__report_show(r, "dims_residual", cap);
        free(cap);
        lines_release(&l);
        free(yv);
        free(y);
        free(x);
        return err;
}

/* The widest head-input layer of table "dims" (0 when none). */
static size_t head_width(const kdl_table *t)
{
        size_t width = 0;

        for (size_t i = 0; i < kdl_table_rows(t); i++) {
                double w = kdl__report_real(t, i, "width");

                if (kdl__report_bool(t, i, "head_input") && w > (double) width)
                        width = (size_t) w;
        }
        return width;
}

/* Row @i of "dims" is a head-input layer with variance, at its model's last checkpoint. */
static bool last_head_input(const kdl_table *t, size_t i)
{
        const char *model = kdl__report_str(t, i, "model");

        if (!kdl__report_bool(t, i, "head_input") ||
            !(kdl__report_real(t, i, "total_variance") > 0.0))
                return false;
        for (int j = (int) i;
             (j = kdl_table_find_row(t, (size_t) (j + 1), 1, (const char *const[]){"model"},
                                     &model)) >= 0;)
                if (kdl__report_bool(t, j, "head_input"))
                        return false;
        return true;
}

/* The eigenvalues of row @i of "dims" (@t) from "spectrum" (@sp) as shares of its total
 * variance, eigenvalue k in @y[k - 1] of @width; NaN where there is none. */
static void spectrum_shares(const kdl_table *t, size_t i, const kdl_table *sp, double *y,
                            size_t width)
{
        static const char *const keys[] = {"model", "checkpoint", "layer"};
        const char *const want[] = {kdl__report_str(t, i, "model"),
                                    kdl__report_str(t, i, "checkpoint"),
                                    kdl__report_str(t, i, "layer")};
        double total = kdl__report_real(t, i, "total_variance");

        for (size_t k = 0; k < width; k++)
                y[k] = NAN;
        for (int j = -1; (j = kdl_table_find_row(sp, (size_t) (j + 1), 3, keys, want)) >= 0;) {
                double k = kdl__report_real(sp, j, "k"), l = kdl__report_real(sp, j, "eigenvalue");

                if (k >= 1 && k <= width && l > 1e-12 * total) /* below: zero to double precision */
                        y[(size_t) k - 1] = l / total;
        }
}

/* Spectra of each model's head-input layer at its last checkpoint, as variance shares. */
static int dims_spectrum_figure(struct kdl__report *r, const kdl_doc *d)
{
        const kdl_table *t = kdl_doc_find_table(d, "dims");
        const kdl_table *sp = kdl_doc_find_table(d, "spectrum");
        size_t width = t && sp ? head_width(t) : 0;
        struct lines l = {0};
        double *x, *y;
        int err;

        if (width == 0)
                return 0;
        x = kdl_new(double, width);
        y = kdl_new(double, width *DIMS_MAX_SERIES);
        err = x && y ? 0 : -ENOMEM;
        for (size_t k = 0; !err && k < width; k++)
                x[k] = (double) (k + 1);
        for (size_t i = 0; !err && i < kdl_table_rows(t) && l.ns < DIMS_MAX_SERIES; i++) {
                if (!last_head_input(t, i))
                        continue;
                spectrum_shares(t, i, sp, y + l.ns * width, width);
                l.names[l.ns] = kdl__asprintf("%s: %s (D = %.0f)", kdl__report_str(t, i, "model"),
                                              kdl__report_str(t, i, "layer"),
                                              kdl__report_real(t, i, "width"));
                if (!l.names[l.ns]) {
                        err = -ENOMEM;
                        break;
                }
                l.s[l.ns] = (struct kdl_series){.name = l.names[l.ns], .y = y + l.ns * width};
                l.ns++;
        }
        if (!err && l.ns) {
                struct kdl_fig f = {.xlabel = "eigenvalue index k",
                                    .ylabel = "share of the variance",
                                    .logy = true};

                err = kdl_fig_lines(kdl_site_path(r->site), "dims_spectrum", &f, x, NULL, width,
                                    l.s, l.ns);
                err = err
                              ?: kdl__report_show(
                                         r, "dims_spectrum",
                                         "Covariance spectra of the layer feeding each model's "
                                         "head (last checkpoint): how many feature directions "
                                         "carry the variance (eigenvalues below 1e-12 of the "
                                         "total, zero to double precision, are not drawn).");
        }
        lines_release(&l);
        free(y);
        free(x);
        return err;
}

/* The verdicts in words: each student's at its last checkpoint, with its numbers. */
static int verdict_paragraph(struct kdl__report *r, const kdl_table *v)
{
        char *text = kdl__asprintf("At tolerance %g:", kdl__report_real(v, 0, "tolerance"));
        int err;

        for (size_t i = 0; text && i < kdl_table_rows(v); i++) {
                double r2 = kdl__report_real(v, i, "ridge_r2");
                char *r2s = isnan(r2) ? kdl__asprintf("%s", "") : kdl__asprintf(", R^2 = %.3g", r2);
                char *t = NULL;

                if (r2s && last_verdict(v, i))
                        t = kdl__asprintf("%s %s (d_s = %.0f, d_needed = %.0f%s): %s.", text,
                                          kdl__report_str(v, i, "model"),
                                          kdl__report_real(v, i, "d_s"),
                                          kdl__report_real(v, i, "d_needed"), r2s,
                                          kdl__report_str(v, i, "verdict"));
                else if (r2s)
                        t = kdl__asprintf("%s", text);
                free(r2s);
                free(text);
                text = t;
        }
        if (!text)
                return -ENOMEM;
        err = kdl_site_paragraph(r->site, text);
        free(text);
        return err;
}

int kdl__report_section_dims(struct kdl__report *r)
{
        const kdl_doc *d = r->dims;
        const kdl_table *v = kdl_doc_find_table(d, "verdict");
        int err;

        kdl__report_progress(r, "dims: figures");
        err = kdl_site_section(
                r->site, KDL__REPORT_TITLE_DIMS,
                "Does each student have enough feature dimensions to take up the teacher's logit "
                "knowledge (Hsu et al. 2022)? Two answers per student, both at the verdict's "
                "tolerance. Architectural: does its width d_s reach d_needed, the fewest "
                "dimensions whose best fit leaves at most the tolerance of the teacher's "
                "centred-logit variance out? A narrower student cannot match the teacher's "
                "logits, whatever it learns. Realised: do its head-input features explain at "
                "least 1 - tolerance of that variance by a linear read-out (ridge R^2)? A "
                "student can be wide enough and still not have taken the knowledge up.");
        if (!err && v && kdl_table_rows(v))
                err = verdict_paragraph(r, v);
        err = err ?: dims_residual_figure(r, d);
        err = err ?: dims_spectrum_figure(r, d);
        err = err
                      ?: kdl__report_show_table(r, d, "verdict", "dims_verdict",
                                                "Is each student wide enough (architectural), and "
                                                "do its features carry the teacher's logits "
                                                "(realised)?");
        err = err ?: kdl__report_show_table(r, d, "dims", "dims_layers", "Spectra of every layer");
        err = err
                      ?: kdl__report_show_table(r, d, "heads", "dims_heads",
                                                "Rank of W^T F W: feature directions the KL sees");
        err = err ?: kdl_site_json(r->site, d, "dims");
        return err;
}
