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

/* One series per teacher checkpoint of "logit_residual" (rows come in blocks of @c), drawn
 * from @y. */
static int residual_series(struct lines *l, const kdl_table *t, size_t c, double *y)
{
        for (size_t i = 0; i + c <= kdl_table_rows(t) && l->ns < RESIDUAL_MAX_SERIES; i += c) {
                for (size_t k = 0; k < c; k++)
                        y[i + k] = kdl__report_real(t, i + k, "residual");
                l->names[l->ns] =
                        kdl__asprintf("teacher at %s", kdl__report_str(t, i, "checkpoint"));
                if (!l->names[l->ns])
                        return -ENOMEM;
                l->s[l->ns] = (struct kdl_series){.name = l->names[l->ns], .y = y + i};
                l->ns++;
        }
        return 0;
}

/* The students' widths at their last checkpoint (from "verdict", @v), as marks at most @c. */
static int width_marks(struct lines *l, const kdl_table *v, size_t c)
{
        size_t n = v ? kdl_table_rows(v) : 0;

        l->marks = kdl_new(double, n + 1);
        l->labels = kdl_new(char *, n + 1);
        if (!l->marks || !l->labels)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const char *model = kdl__report_str(v, i, "model");
                bool last = i + 1 == n || strcmp(kdl__report_str(v, i + 1, "model"), model) != 0;

                if (!last)
                        continue;
                l->marks[l->nm] = fmin(kdl__report_real(v, i, "d_s"), (double) c);
                l->labels[l->nm] =
                        kdl__asprintf("%s (d_s = %.0f)", model, kdl__report_real(v, i, "d_s"));
                if (!l->labels[l->nm])
                        return -ENOMEM;
                l->nm++;
        }
        return 0;
}

/* The teacher's logit residual curve per checkpoint, the students' widths marked. */
static int dims_residual_figure(struct kdl__report *r, const kdl_doc *d)
{
        const kdl_table *t = kdl_doc_find_table(d, "logit_residual");
        struct lines l = {0};
        double *x = NULL, *y = NULL;
        size_t c = 0, nrows;
        int err;

        if (!t || (nrows = kdl_table_rows(t)) == 0)
                return 0;
        while (c < nrows && strcmp(kdl__report_str(t, c, "checkpoint"),
                                   kdl__report_str(t, 0, "checkpoint")) == 0)
                c++;
        x = kdl_new(double, c);
        y = kdl_new(double, nrows);
        err = x && y ? 0 : -ENOMEM;
        for (size_t k = 0; !err && k < c; k++)
                x[k] = (double) (k + 1);
        err = err ?: residual_series(&l, t, c, y);
        err = err ?: width_marks(&l, kdl_doc_find_table(d, "verdict"), c);
        if (!err) {
                struct kdl_fig f = {.xlabel = "feature dimension d",
                                    .ylabel = "residual share of centred-logit variance",
                                    .nmarks = l.nm,
                                    .marks = l.marks,
                                    .mark_labels = (const char *const *) l.labels};

                err = kdl_fig_lines(kdl_site_path(r->site), "dims_residual", &f, x, NULL, c, l.s,
                                    l.ns);
        }
        err = err
                      ?: kdl__report_show(r, "dims_residual",
                                          "Share of the teacher's row-centred logit variance that "
                                          "no d-dimensional student can represent (Eckart-Young "
                                          "residual, MATH 2.3); vertical lines mark the students' "
                                          "widths.");
        lines_release(&l);
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

int kdl__report_section_dims(struct kdl__report *r)
{
        const kdl_doc *d = r->dims;
        int err;

        kdl__report_progress(r, "dims: figures");
        err = kdl_site_section(r->site, "Feature dimensions",
                               "Does each student have enough feature dimensions to take up the "
                               "teacher's logit knowledge (Hsu et al. 2022; MATH 2.3)? A student "
                               "narrower than C-1, or one whose width leaves more than 1 % of "
                               "the teacher's centred-logit variance unexplained, is flagged.");
        err = err ?: dims_residual_figure(r, d);
        err = err ?: dims_spectrum_figure(r, d);
        err = err
                      ?: kdl__report_show_table(r, d, "verdict", "dims_verdict",
                                                "Is each student wide enough?");
        err = err ?: kdl__report_show_table(r, d, "dims", "dims_layers", "Spectra of every layer");
        err = err
                      ?: kdl__report_show_table(r, d, "heads", "dims_heads",
                                                "Rank of W^T F W: feature directions the KL sees");
        err = err ?: kdl_site_json(r->site, d, "dims");
        return err;
}
