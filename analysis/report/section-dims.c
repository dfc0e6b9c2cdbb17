/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "reports/plot.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

#define DIMS_MAX_SERIES 17 /* the teacher and up to 16 students */

/* The teacher's logit residual curve per checkpoint, the students' widths marked. */
static int dims_residual_figure(struct kdl__report *r, const kdl_doc *d)
{
        const kdl_table *t = kdl_doc_find_table(d, "logit_residual");
        const kdl_table *v = kdl_doc_find_table(d, "verdict");
        struct kdl_series s[8];
        char *names[8] = {NULL};
        double *x = NULL, *y = NULL, *marks = NULL;
        char **labels = NULL;
        size_t c = 0, ns = 0, nm = 0, nrows;
        int err = -ENOMEM;

        if (!t || (nrows = kdl_table_rows(t)) == 0)
                return 0;
        while (c < nrows && strcmp(kdl__report_str(t, c, "checkpoint"),
                                   kdl__report_str(t, 0, "checkpoint")) == 0)
                c++;
        x = kdl_new(double, c);
        y = kdl_new(double, nrows);
        marks = kdl_new(double, v ? kdl_table_rows(v) + 1 : 1);
        labels = kdl_new(char *, v ? kdl_table_rows(v) + 1 : 1);
        if (!x || !y || !marks || !labels)
                goto out;
        for (size_t k = 0; k < c; k++)
                x[k] = (double) (k + 1);
        /* One series per teacher checkpoint (rows come in blocks of C). */
        for (size_t i = 0; i + c <= nrows && ns < 8; i += c, ns++) {
                for (size_t k = 0; k < c; k++)
                        y[i + k] = kdl__report_real(t, i + k, "residual");
                names[ns] = kdl__asprintf("teacher at %s", kdl__report_str(t, i, "checkpoint"));
                if (!names[ns])
                        goto out;
                s[ns] = (struct kdl_series){.name = names[ns], .y = y + i};
        }
        /* The students' widths at their last checkpoint. */
        for (size_t i = 0; v && i < kdl_table_rows(v); i++) {
                const char *model = kdl__report_str(v, i, "model");
                bool last = i + 1 == kdl_table_rows(v) ||
                            strcmp(kdl__report_str(v, i + 1, "model"), model) != 0;

                if (!last)
                        continue;
                marks[nm] = fmin(kdl__report_real(v, i, "d_s"), (double) c);
                labels[nm] = kdl__asprintf("%s (d_s = %.0f)", model, kdl__report_real(v, i, "d_s"));
                if (!labels[nm])
                        goto out;
                nm++;
        }
        {
                struct kdl_fig f = {.xlabel = "feature dimension d",
                                    .ylabel = "residual share of centred-logit variance",
                                    .nmarks = nm,
                                    .marks = marks,
                                    .mark_labels = (const char *const *) labels};

                err = kdl_fig_lines(kdl_site_path(r->site), "dims_residual", &f, x, NULL, c, s, ns);
        }
        err = err
                      ?: kdl__report_show(
                                 r, "dims_residual",
                                 "Share of the teacher's row-centred logit variance that no "
                                 "d-dimensional student can represent (Eckart-Young residual, MATH "
                                 "2.3); vertical lines mark the students' widths.");
out:
        for (size_t k = 0; k < ns; k++)
                free(names[k]);
        for (size_t k = 0; labels && k < nm; k++)
                free(labels[k]);
        free(labels);
        free(marks);
        free(y);
        free(x);
        return err;
}

/* Spectra of each model's head-input layer at its last checkpoint, as variance shares. */
static int dims_spectrum_figure(struct kdl__report *r, const kdl_doc *d)
{
        const kdl_table *t = kdl_doc_find_table(d, "dims");
        const kdl_table *sp = kdl_doc_find_table(d, "spectrum");
        struct kdl_series s[DIMS_MAX_SERIES];
        char *names[DIMS_MAX_SERIES] = {NULL};
        double *x = NULL, *y = NULL;
        size_t width = 0, ns = 0, nrows;
        int err = -ENOMEM;

        if (!t || !sp || (nrows = kdl_table_rows(t)) == 0)
                return 0;
        for (size_t i = 0; i < nrows; i++) {
                double w = kdl__report_real(t, i, "width");

                if (kdl__report_bool(t, i, "head_input") && w > (double) width)
                        width = (size_t) w;
        }
        if (width == 0)
                return 0;
        x = kdl_new(double, width);
        y = kdl_new(double, width *DIMS_MAX_SERIES);
        if (!x || !y)
                goto out;
        for (size_t k = 0; k < width; k++)
                x[k] = (double) (k + 1);
        for (size_t i = 0; i < nrows && ns < DIMS_MAX_SERIES; i++) {
                const char *model = kdl__report_str(t, i, "model"),
                           *ck = kdl__report_str(t, i, "checkpoint");
                const char *layer = kdl__report_str(t, i, "layer");
                /* The spectrum's rows; a later row with the model alone (n = 1). */
                static const char *const keys[] = {"model", "checkpoint", "layer"};
                const char *const want[] = {model, ck, layer};
                double total = kdl__report_real(t, i, "total_variance"), *yy = y + ns * width;
                bool later = false;

                if (!kdl__report_bool(t, i, "head_input") || !(total > 0.0))
                        continue;
                for (int j = (int) i;
                     !later && (j = kdl_table_find_row(t, (size_t) (j + 1), 1, keys, want)) >= 0;)
                        later = kdl__report_bool(t, j, "head_input");
                if (later) /* only the model's last checkpoint */
                        continue;
                for (size_t k = 0; k < width; k++)
                        yy[k] = NAN;
                for (int j = -1;
                     (j = kdl_table_find_row(sp, (size_t) (j + 1), 3, keys, want)) >= 0;) {
                        double k = kdl__report_real(sp, j, "k"),
                               l = kdl__report_real(sp, j, "eigenvalue");

                        if (k >= 1 && k <= width &&
                            l > 1e-12 * total) /* below: zero to double precision */
                                yy[(size_t) k - 1] = l / total;
                }
                names[ns] = kdl__asprintf("%s: %s (D = %.0f)", model, layer,
                                          kdl__report_real(t, i, "width"));
                if (!names[ns])
                        goto out;
                s[ns] = (struct kdl_series){.name = names[ns], .y = yy};
                ns++;
        }
        if (ns == 0) {
                err = 0;
                goto out;
        }
        {
                struct kdl_fig f = {.xlabel = "eigenvalue index k",
                                    .ylabel = "share of the variance",
                                    .logy = true};

                err = kdl_fig_lines(kdl_site_path(r->site), "dims_spectrum", &f, x, NULL, width, s,
                                    ns);
        }
        err = err
                      ?: kdl__report_show(
                                 r, "dims_spectrum",
                                 "Covariance spectra of the layer feeding each model's head (last "
                                 "checkpoint): how many feature directions carry the variance "
                                 "(eigenvalues below 1e-12 of the total, zero to double precision, "
                                 "are not drawn).");
out:
        for (size_t k = 0; k < ns; k++)
                free(names[k]);
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
