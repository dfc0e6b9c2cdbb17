/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kdl-config.h"
#include "metrics/base/alloc.h"
#include "analysis/cka-internal.h"
#include "analysis/dims-internal.h"
#include "analysis/inputs.h"
#include "analysis/inspect.h"
#include "analysis/kl-internal.h"
#include "analysis/layers.h"
#include "analysis/pass.h"
#include "analysis/report.h"
#include "analysis/split-internal.h"
#include "reports/plot.h"
#include "reports/site.h"
#include "reports/table.h"
#include "metrics/base/banned.h"

const char *kdl_report_example_dir(void)
{
        const char *env = getenv("KDL_EXAMPLE_DIR");

        return env && *env ? env : KDL_EXAMPLE_DIR;
}

/* ---- reading the analyses' tables ----------------------------------------- */

static double real_at(const kdl_table *t, size_t i, const char *key)
{
        int j = kdl_table_find(t, key);
        const kdl_cell *c;

        if (j < 0)
                return NAN;
        c = kdl_table_cell(t, i, (size_t) j);
        if (c->type == KDL_CELL_REAL)
                return c->v.r;
        if (c->type == KDL_CELL_INT)
                return (double) c->v.i;
        return NAN;
}

static const char *str_at(const kdl_table *t, size_t i, const char *key)
{
        int j = kdl_table_find(t, key);
        const kdl_cell *c;

        if (j < 0)
                return "";
        c = kdl_table_cell(t, i, (size_t) j);
        return c->type == KDL_CELL_STR ? c->v.s : "";
}

static bool same_tau(double a, double b)
{
        return fabs(a - b) <= 1e-12 * fabs(b);
}

/* ---- the run --------------------------------------------------------------- */

struct run {
        const struct kdl_report_opts *o;
        kdl_inputs *in;
        kdl_site *site;
        char **names;  /* display name of each student */
        size_t prefix; /* length of a prefix all names share ("student_"), left out in figures */
        size_t done, total;
        double tau;
        /* The analyses, computed before any section is written. */
        kdl_doc *kl, *split, *dims;
        kdl_doc **cka; /* [ncka] one per student checkpoint, student-major */
        size_t ncka;
        kdl_doc *passes; /* how the dumps were read */
};

static void progress(struct run *r, const char *what)
{
        if (r->o->progress)
                r->o->progress(r->o->ctx, r->done, r->total, what);
        r->done++;
}

/* A student's display name: its model attribute, else the file name without .h5. */
static char *display_name(const kdl_dump *d)
{
        const char *base;
        char *s;
        size_t n;

        if (d->model && *d->model)
                return kdl__strdup(d->model);
        base = strrchr(d->path, '/');
        base = base ? base + 1 : d->path;
        s = kdl__strdup(base);
        if (s && (n = strlen(s)) > 3 && strcmp(s + n - 3, ".h5") == 0)
                s[n - 3] = '\0';
        return s;
}

/* A student's name in crowded figure labels: without the prefix all share. */
static const char *short_name(const struct run *r, size_t k)
{
        return r->names[k] + r->prefix;
}

/* The longest prefix ending in '_', '-' or '.' that every name has (none for one student). */
static size_t common_prefix(char *const *names, size_t n)
{
        size_t best = 0;

        if (n < 2)
                return 0;
        for (size_t i = 0; names[0][i]; i++) {
                for (size_t k = 1; k < n; k++)
                        if (names[k][i] != names[0][i] || !names[k][i + 1])
                                return best;
                if (strchr("_-.", names[0][i]))
                        best = i + 1;
        }
        return best;
}

static int student_index(const struct run *r, const char *path)
{
        for (size_t k = 0; k < r->in->nstudents; k++)
                if (strcmp(kdl_h5_dump(r->in->students[k])->path, path) == 0)
                        return (int) k;
        return -1;
}

/* Render figure @name in every format and show it with @caption. */
static int show(struct run *r, const char *name, const char *caption)
{
        int err = kdl_fig_render(kdl_site_path(r->site), name, r->o->gnuplot, KDL_FIG_ALL);

        return err ? err : kdl_site_figure(r->site, name, caption);
}

/* Table @table of @d, when it has rows, as a table of the report written to tables/@file. */
static int show_table(struct run *r, const kdl_doc *d, const char *table, const char *file,
                      const char *caption)
{
        const kdl_table *t = kdl_doc_find_table(d, table);

        if (!t || kdl_table_rows(t) == 0)
                return 0;
        return kdl_site_table(r->site, t, file, caption);
}

/* ---- sections ---------------------------------------------------------------- */

static int section_inputs(struct run *r)
{
        struct kdl_run_inspect_opts io = {.scan_values = false};
        const char **paths = kdl_new(const char *, r->in->nstudents + 1);
        kdl_doc *d = NULL;
        size_t nprob = 0;
        int err;

        if (!paths)
                return -ENOMEM;
        progress(r, "inputs");
        paths[0] = kdl_h5_dump(r->in->teacher)->path;
        for (size_t k = 0; k < r->in->nstudents; k++)
                paths[k + 1] = kdl_h5_dump(r->in->students[k])->path;
        err = kdl_doc_new("inspect", &d);
        err = err ?: kdl_run_inspect(paths, r->in->nstudents + 1, &io, d, &nprob);
        err = err
                      ?: kdl_site_section(
                                 r->site, "Inputs",
                                 "The dumps analysed: models, samples, classes, checkpoints "
                                 "and the knowledge sources each checkpoint holds.");
        err = err ?: show_table(r, d, "files", "inputs_files", "Dumps");
        err = err
                      ?: show_table(r, d, "checkpoints", "inputs_checkpoints",
                                    "Checkpoints and knowledge sources");
        err = err ?: show_table(r, d, "alignment", "inputs_alignment", "Teacher/student alignment");
        err = err ?: kdl_site_json(r->site, d, "inspect");
        kdl_doc_free(d);
        free(paths);
        return err;
}

/* Histogram of @quantity for student @path at @checkpoint: edges and counts normalised to
 * densities. */
static size_t histogram(const kdl_table *t, const char *path, const char *checkpoint, double tau,
                        const char *quantity, double *edges, double *dens, size_t max, bool log)
{
        size_t nb = 0;
        double total = 0.0;

        for (size_t i = 0; i < kdl_table_rows(t) && nb < max; i++) {
                double lo = real_at(t, i, "lo"), hi = real_at(t, i, "hi");

                if (strcmp(str_at(t, i, "student"), path) != 0 ||
                    strcmp(str_at(t, i, "checkpoint"), checkpoint) != 0 ||
                    !same_tau(real_at(t, i, "tau"), tau) ||
                    strcmp(str_at(t, i, "quantity"), quantity) != 0)
                        continue;
                if (!isfinite(lo) || !isfinite(hi) || (log && !(lo > 0.0)))
                        continue;
                edges[nb] = lo;
                edges[nb + 1] = hi;
                dens[nb] = real_at(t, i, "count");
                total += dens[nb] * (log ? 1.0 : hi - lo);
                nb++;
        }
        for (size_t b = 0; b < nb && total > 0.0; b++)
                dens[b] /= total; /* a density (linear bins) or a fraction (log bins) */
        return nb;
}

static const char *last_checkpoint(const kdl_h5file *f)
{
        const kdl_dump *d = kdl_h5_dump(f);

        return d->checkpoints[d->ncheckpoints - 1].name;
}

/* The C x C records of @table for student @path at @checkpoint into @m. */
static bool matrix(const kdl_table *t, const char *path, const char *checkpoint, double tau,
                   double *m, size_t c)
{
        size_t found = 0;

        for (size_t i = 0; t && i < kdl_table_rows(t); i++) {
                double ti = real_at(t, i, "tau");
                size_t a = (size_t) real_at(t, i, "i"), b = (size_t) real_at(t, i, "j");

                if (strcmp(str_at(t, i, "student"), path) != 0 ||
                    strcmp(str_at(t, i, "checkpoint"), checkpoint) != 0 ||
                    (isfinite(ti) && !same_tau(ti, tau)) || a >= c || b >= c)
                        continue;
                m[a * c + b] = real_at(t, i, "value");
                found++;
        }
        return found == c * c;
}

static int split_figures(struct run *r, const kdl_doc *d)
{
        const kdl_table *t = kdl_doc_find_table(d, "split");
        const kdl_table *h = kdl_doc_find_table(d, "histograms");
        size_t rows = t ? kdl_table_rows(t) : 0, n = 0, c = kdl_h5_dump(r->in->teacher)->c;
        const char **cats = kdl_new(const char *, rows ? rows : 1);
        char **owned = kdl_new(char *, rows ? rows : 1);
        double *tckd = kdl_new(double, rows ? rows : 1), *nckd = kdl_new(double, rows ? rows : 1);
        double *m = kdl_new(double, c > 0 ? c * c : 1);
        char **labels = kdl_new(char *, c ? c : 1);
        int err = 0;

        if (!cats || !owned || !tckd || !nckd || !m || !labels) {
                err = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < rows; i++) {
                int k = student_index(r, str_at(t, i, "student"));

                if (k < 0 || !same_tau(real_at(t, i, "tau"), r->tau))
                        continue;
                owned[n] = kdl__asprintf("%s/%s", short_name(r, (size_t) k),
                                         str_at(t, i, "checkpoint"));
                if (!owned[n]) {
                        err = -ENOMEM;
                        goto out;
                }
                cats[n] = owned[n];
                tckd[n] = real_at(t, i, "tckd");
                nckd[n] = real_at(t, i, "nckd_coupled");
                n++;
        }
        if (n) {
                struct kdl_series s[] = {{"explicit: TCKD", tckd},
                                         {"implicit: (1 - p^t_y) NCKD", nckd}};
                struct kdl_fig f = {.ylabel = "tau^2 KL per sample (nats)"};

                err = kdl_fig_bars(kdl_site_path(r->site), "split_stacked", &f, cats, n, s, 2,
                                   true);
                err = err
                              ?: show(r, "split_stacked",
                                      "KD loss split into explicit (target-class) and implicit "
                                      "(non-target) knowledge, per student and checkpoint; the "
                                      "bars' total is the KD loss (KL = TCKD + (1 - p^t_y) NCKD)");
                /* The same as shares of the loss, readable when the untrained
                 * checkpoints' loss dwarfs the rest. */
                for (size_t i = 0; i < n; i++) {
                        double total = tckd[i] + nckd[i];

                        tckd[i] = total > 0.0 ? tckd[i] / total : (double) NAN;
                        nckd[i] = total > 0.0 ? nckd[i] / total : (double) NAN;
                }
                f.ylabel = "share of the KD loss";
                f.ymax = 1.0;
                err = err
                              ?: kdl_fig_bars(kdl_site_path(r->site), "split_shares", &f, cats, n,
                                              s, 2, true);
                err = err
                              ?: show(r, "split_shares",
                                      "The same split as shares: how much of the KD signal is the "
                                      "teacher's target-class confidence and how much its "
                                      "distribution over the other classes");
        }
        for (size_t k = 0; k < r->in->nstudents && !err && h; k++) {
                const char *path = kdl_h5_dump(r->in->students[k])->path;
                const char *ck = last_checkpoint(r->in->students[k]);
                double e1[1100], d1[1100], e2[1100], d2[1100];
                size_t n1 = histogram(h, path, ck, r->tau, "pt_y", e1, d1, 1000, false);
                size_t n2 = histogram(h, path, ck, r->tau, "ps_y", e2, d2, 1000, false);
                char *name = kdl__asprintf("confidence_s%zu", k + 1), *cap;

                if (!name)
                        return -ENOMEM;
                if (n1 && n1 == n2) {
                        struct kdl_series s[] = {{"teacher p^t_y", d1}, {"student p^s_y", d2}};
                        struct kdl_fig f = {.xlabel = "target-class probability at tau",
                                            .ylabel = "density"};

                        cap = kdl__asprintf("Target confidence of the teacher and of %s at "
                                            "checkpoint %s (tau = %g)",
                                            r->names[k], ck, r->tau);
                        err = cap ? kdl_fig_hist(kdl_site_path(r->site), name, &f, e1, n1, s, 2)
                                  : -ENOMEM;
                        err = err ?: show(r, name, cap);
                        free(cap);
                }
                free(name);
                n1 = histogram(h, path, ck, r->tau, "w", e1, d1, 1000, true);
                name = kdl__asprintf("instance_w_s%zu", k + 1);
                if (!name)
                        return -ENOMEM;
                if (n1 && !err) {
                        struct kdl_series s[] = {{"w_n", d1}};
                        struct kdl_fig f = {.xlabel = "instance weight w_n (KD / label smoothing)",
                                            .ylabel = "fraction of samples",
                                            .logx = true,
                                            .nmarks = 1,
                                            .marks = (double[]){1.0},
                                            .mark_labels = (const char *[]){"w = 1"}};

                        cap = kdl__asprintf("Tang et al.'s instance weights w_n of %s at "
                                            "checkpoint %s: KD up-weights samples with w_n > 1 "
                                            "(w_n <= 0 not shown)",
                                            r->names[k], ck);
                        err = cap ? kdl_fig_hist(kdl_site_path(r->site), name, &f, e1, n1, s, 1)
                                  : -ENOMEM;
                        err = err ?: show(r, name, cap);
                        free(cap);
                }
                free(name);
        }
        /* Class relations: the teacher's soft confusion and both heads' cosines. */
        for (size_t k = 0; k < c && !err; k++)
                if (!(labels[k] = kdl__asprintf("%zu", k)))
                        err = -ENOMEM;
        for (size_t k = 0; k < r->in->nstudents && !err; k++) {
                const char *path = kdl_h5_dump(r->in->students[k])->path;
                const char *ck = last_checkpoint(r->in->students[k]);
                struct kdl_fig f = {.xlabel = "class", .ylabel = "class"};
                char *name, *cap;

                if (k == 0 &&
                    matrix(kdl_doc_find_table(d, "confusion_teacher"), path, ck, r->tau, m, c)) {
                        struct kdl_fig fc = {.xlabel = "predicted class (soft)",
                                             .ylabel = "true class"};

                        err = kdl_fig_heatmap(kdl_site_path(r->site), "classes_teacher_confusion",
                                              &fc, m, c, c, (const char *const *) labels,
                                              (const char *const *) labels, c <= 20, 0, 0);
                        err = err
                                      ?: show(r, "classes_teacher_confusion",
                                              "The teacher's soft confusion matrix: mean p^t_tau "
                                              "of "
                                              "each class over the samples of each true class");
                }
                if (k == 0 && !err &&
                    matrix(kdl_doc_find_table(d, "head_cosine_teacher"), path, ck, r->tau, m, c)) {
                        err = kdl_fig_heatmap(kdl_site_path(r->site), "classes_teacher_head", &f, m,
                                              c, c, (const char *const *) labels,
                                              (const char *const *) labels, c <= 20, -1, 1);
                        err = err
                                      ?: show(r, "classes_teacher_head",
                                              "Class relations in the teacher's head: cosine of "
                                              "head-weight rows");
                }
                if (err ||
                    !matrix(kdl_doc_find_table(d, "head_cosine_student"), path, ck, r->tau, m, c))
                        continue;
                name = kdl__asprintf("classes_s%zu_head", k + 1);
                cap = kdl__asprintf("Class relations in the head of %s at checkpoint %s, "
                                    "beside the teacher's",
                                    r->names[k], ck);
                err = name && cap ? kdl_fig_heatmap(kdl_site_path(r->site), name, &f, m, c, c,
                                                    (const char *const *) labels,
                                                    (const char *const *) labels, c <= 20, -1, 1)
                                  : -ENOMEM;
                err = err ?: show(r, name, cap);
                free(name);
                free(cap);
        }
out:
        for (size_t i = 0; i < n; i++)
                free(owned[i]);
        for (size_t k = 0; labels && k < c; k++)
                free(labels[k]);
        free(labels);
        free(owned);
        free(cats);
        free(tckd);
        free(nckd);
        free(m);
        return err;
}

static int section_split(struct run *r)
{
        const kdl_doc *d = r->split;
        int err;

        progress(r, "split: figures");
        err = kdl_site_section(r->site, "Explicit and implicit knowledge",
                               "How the KD loss splits into the teacher's confidence in "
                               "the target "
                               "class (explicit, TCKD) and its distribution over the "
                               "other classes "
                               "(implicit, NCKD), per DKD (Zhao et al. 2022) and AEKT "
                               "(Park & Lee "
                               "2024); and Tang et al.'s universe, domain and instance "
                               "knowledge.");
        err = err ?: split_figures(r, d);
        err = err ?: show_table(r, d, "split", "split", "Explicit vs implicit knowledge");
        err = err
                      ?: show_table(r, d, "domain", "split_domain",
                                    "Domain knowledge: agreement of class relations");
        err = err
                      ?: show_table(r, d, "instance", "split_instance",
                                    "Instance knowledge: rescaling weights w_n");
        err = err ?: kdl_site_json(r->site, d, "split");
        return err;
}

#define DIMS_MAX_SERIES 17 /* the teacher and up to 16 students */

static bool bool_at(const kdl_table *t, size_t i, const char *key)
{
        int j = kdl_table_find(t, key);
        const kdl_cell *c;

        if (j < 0)
                return false;
        c = kdl_table_cell(t, i, (size_t) j);
        return c->type == KDL_CELL_BOOL && c->v.b;
}

/* The teacher's logit residual curve per checkpoint, the students' widths marked. */
static int dims_residual_figure(struct run *r, const kdl_doc *d)
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
        while (c < nrows && strcmp(str_at(t, c, "checkpoint"), str_at(t, 0, "checkpoint")) == 0)
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
                        y[i + k] = real_at(t, i + k, "residual");
                names[ns] = kdl__asprintf("teacher at %s", str_at(t, i, "checkpoint"));
                if (!names[ns])
                        goto out;
                s[ns] = (struct kdl_series){.name = names[ns], .y = y + i};
        }
        /* The students' widths at their last checkpoint. */
        for (size_t i = 0; v && i < kdl_table_rows(v); i++) {
                const char *model = str_at(v, i, "model");
                bool last =
                        i + 1 == kdl_table_rows(v) || strcmp(str_at(v, i + 1, "model"), model) != 0;

                if (!last)
                        continue;
                marks[nm] = fmin(real_at(v, i, "d_s"), (double) c);
                labels[nm] = kdl__asprintf("%s (d_s = %.0f)", model, real_at(v, i, "d_s"));
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
                      ?: show(r, "dims_residual",
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
static int dims_spectrum_figure(struct run *r, const kdl_doc *d)
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
                double w = real_at(t, i, "width");

                if (bool_at(t, i, "head_input") && w > (double) width)
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
                const char *model = str_at(t, i, "model"), *ck = str_at(t, i, "checkpoint");
                const char *layer = str_at(t, i, "layer");
                double total = real_at(t, i, "total_variance"), *yy = y + ns * width;
                bool later = false;

                if (!bool_at(t, i, "head_input") || !(total > 0.0))
                        continue;
                for (size_t j = i + 1; j < nrows && !later; j++)
                        later = strcmp(str_at(t, j, "model"), model) == 0 &&
                                bool_at(t, j, "head_input");
                if (later) /* only the model's last checkpoint */
                        continue;
                for (size_t k = 0; k < width; k++)
                        yy[k] = NAN;
                for (size_t j = 0; j < kdl_table_rows(sp); j++) {
                        double k = real_at(sp, j, "k"), l = real_at(sp, j, "eigenvalue");

                        if (strcmp(str_at(sp, j, "model"), model) == 0 &&
                            strcmp(str_at(sp, j, "checkpoint"), ck) == 0 &&
                            strcmp(str_at(sp, j, "layer"), layer) == 0 && k >= 1 && k <= width &&
                            l > 1e-12 * total) /* below: zero to double precision */
                                yy[(size_t) k - 1] = l / total;
                }
                names[ns] =
                        kdl__asprintf("%s: %s (D = %.0f)", model, layer, real_at(t, i, "width"));
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
                      ?: show(r, "dims_spectrum",
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

/* The approximations of MATH 11.1, in table order (exact "kl" first). */
static const char *const kl_names[] = {"kl",
                                       "logit_fisher",
                                       "logit_centered_l2",
                                       "logit_l2",
                                       "prob_l2",
                                       "feature_l2",
                                       "feature_head",
                                       "gradient_fisher",
                                       "gradient_empirical",
                                       "gradient_logit_l2"};
#define NKL (sizeof(kl_names) / sizeof(kl_names[0]))

/* Value @key of approximation @a for student @path at @checkpoint and the report's tau. */
static double kl_value(const struct run *r, const kdl_table *t, const char *path,
                       const char *checkpoint, const char *a, const char *key)
{
        for (size_t i = 0; i < kdl_table_rows(t); i++)
                if (strcmp(str_at(t, i, "student"), path) == 0 &&
                    strcmp(str_at(t, i, "checkpoint"), checkpoint) == 0 &&
                    strcmp(str_at(t, i, "approximation"), a) == 0 &&
                    same_tau(real_at(t, i, "tau"), r->tau))
                        return real_at(t, i, key);
        return NAN;
}

static int kl_figures(struct run *r, const kdl_doc *d)
{
        const kdl_table *t = kdl_doc_find_table(d, "kl");
        size_t ns = r->in->nstudents;
        double *y = kdl_new(double, ns *NKL);
        struct kdl_series *s = kdl_new(struct kdl_series, ns > NKL ? ns : NKL);
        int err = 0;

        if (!t || !y || !s) {
                err = t ? -ENOMEM : 0;
                goto out;
        }
        /* Fidelity: how closely each source tracks the exact per-sample KL. */
        for (size_t k = 0; k < ns; k++) {
                const char *path = kdl_h5_dump(r->in->students[k])->path;
                const char *ck = last_checkpoint(r->in->students[k]);

                for (size_t a = 1; a < NKL; a++)
                        y[k * NKL + a - 1] = kl_value(r, t, path, ck, kl_names[a], "pearson");
                s[k] = (struct kdl_series){r->names[k], y + k * NKL};
        }
        {
                struct kdl_fig f = {.ylabel = "Pearson r with the exact KL", .ymax = 1.0};

                err = kdl_fig_bars(kdl_site_path(r->site), "kl_sources", &f, kl_names + 1, NKL - 1,
                                   s, ns, false);
                err = err
                              ?: show(r, "kl_sources",
                                      "How well each knowledge source tracks the KD criterion "
                                      "tau^2 KL(p_t || p_s) at each student's last checkpoint: "
                                      "correlation over samples (1 = a perfect proxy; missing "
                                      "bars: "
                                      "source unavailable in the dumps)");
        }
        /* Over training: the mean of every source, one line each, per student. */
        for (size_t k = 0; k < ns && !err; k++) {
                const kdl_dump *dd = kdl_h5_dump(r->in->students[k]);
                size_t nck = dd->ncheckpoints;
                double *v = kdl_new(double, NKL *nck);
                const char **ticks = kdl_new(const char *, nck);
                char *name = kdl__asprintf("kl_curves_s%zu", k + 1), *cap = NULL;

                if (!v || !ticks || !name) {
                        err = -ENOMEM;
                } else {
                        struct kdl_fig f = {.xlabel = "student checkpoint",
                                            .ylabel = "mean per sample (nats)",
                                            .logy = true};

                        for (size_t c = 0; c < nck; c++) {
                                ticks[c] = dd->checkpoints[c].name;
                                for (size_t a = 0; a < NKL; a++) {
                                        double m = kl_value(r, t, dd->path, ticks[c], kl_names[a],
                                                            "mean");

                                        v[a * nck + c] = m > 0.0 ? m : (double) NAN;
                                }
                        }
                        for (size_t a = 0; a < NKL; a++)
                                s[a] = (struct kdl_series){a ? kl_names[a] : "kl (exact)",
                                                           v + a * nck};
                        cap = kdl__asprintf("Each knowledge source's estimate of the KD "
                                            "criterion over %s's training (tau = %g), beside "
                                            "the exact KL",
                                            r->names[k], r->tau);
                        err = cap ? kdl_fig_lines(kdl_site_path(r->site), name, &f, NULL, ticks,
                                                  nck, s, NKL)
                                  : -ENOMEM;
                        err = err ?: show(r, name, cap);
                }
                free(cap);
                free(name);
                free(ticks);
                free(v);
        }
out:
        free(s);
        free(y);
        return err;
}

static int section_kl(struct run *r)
{
        const kdl_doc *d = r->kl;
        int err;

        progress(r, "kl: figures");
        err = kdl_site_section(r->site, "Knowledge sources",
                               "How well each knowledge source (logits, probabilities, "
                               "features, gradients) approximates the KD criterion "
                               "tau^2 KL(p_t || p_s) (Hsu et al. 2022; MATH 2 and 11.1), per "
                               "student and checkpoint, each compared with the teacher's last "
                               "checkpoint.");
        err = err ?: kl_figures(r, d);
        err = err ?: show_table(r, d, "kl", "kl", "The KD criterion by knowledge source");
        err = err
                      ?: show_table(r, d, "kl_features", "kl_features",
                                    "Feature matching: projector fit and KL-visible share");
        err = err ?: kdl_site_json(r->site, d, "kl");
        return err;
}

static int section_dims(struct run *r)
{
        const kdl_doc *d = r->dims;
        int err;

        progress(r, "dims: figures");
        err = kdl_site_section(r->site, "Feature dimensions",
                               "Does each student have enough feature dimensions to take up the "
                               "teacher's logit knowledge (Hsu et al. 2022; MATH 2.3)? A student "
                               "narrower than C-1, or one whose width leaves more than 1 % of "
                               "the teacher's centred-logit variance unexplained, is flagged.");
        err = err ?: dims_residual_figure(r, d);
        err = err ?: dims_spectrum_figure(r, d);
        err = err ?: show_table(r, d, "verdict", "dims_verdict", "Is each student wide enough?");
        err = err ?: show_table(r, d, "dims", "dims_layers", "Spectra of every layer");
        err = err
                      ?: show_table(r, d, "heads", "dims_heads",
                                    "Rank of W^T F W: feature directions the KL sees");
        err = err ?: kdl_site_json(r->site, d, "dims");
        return err;
}

/* ---- teacher layers and CKA ------------------------------------------------------ */

struct depth_row {
        long long depth;
        size_t row;
};

static int cmp_depth_row(const void *a, const void *b)
{
        const struct depth_row *x = a, *y = b;

        if (x->depth != y->depth)
                return x->depth < y->depth ? -1 : 1;
        return x->row < y->row ? -1 : x->row > y->row;
}

/* Q, S, I and E of every teacher layer along depth, the recommended ones marked. */
static int layers_figure(struct run *r, const kdl_doc *d)
{
        static const char *const keys[4] = {"q", "s", "i", "e"};
        static const char *const names[4] = {"Q = S + sqrt(I E)", "S (separation)",
                                             "I (information)", "E (efficiency)"};
        const kdl_table *t = kdl_doc_find_table(d, "layers");
        struct depth_row *order = NULL;
        const char **tics = NULL;
        double *y = NULL, *marks = NULL;
        struct kdl_series s[4];
        size_t n, nm = 0;
        int err = -ENOMEM;

        if (!t || (n = kdl_table_rows(t)) == 0)
                return 0;
        order = kdl_new(struct depth_row, n);
        tics = kdl_new(const char *, n);
        y = kdl_new(double, 4 * n);
        marks = kdl_new(double, n);
        if (!order || !tics || !y || !marks)
                goto out;
        for (size_t i = 0; i < n; i++)
                order[i] = (struct depth_row){(long long) real_at(t, i, "depth"), i};
        qsort(order, n, sizeof(*order), cmp_depth_row);
        for (size_t i = 0; i < n; i++) {
                size_t row = order[i].row;

                tics[i] = str_at(t, row, "layer");
                for (size_t k = 0; k < 4; k++)
                        y[k * n + i] = real_at(t, row, keys[k]);
                if (bool_at(t, row, "recommended"))
                        marks[nm++] = (double) i;
        }
        for (size_t k = 0; k < 4; k++)
                s[k] = (struct kdl_series){.name = names[k], .y = y + k * n};
        {
                struct kdl_fig f = {.xlabel = "teacher layer (by depth)",
                                    .ylabel = "knowledge quality and its parts",
                                    .nmarks = nm,
                                    .marks = marks};

                err = kdl_fig_lines(kdl_site_path(r->site), "layers_quality", &f, NULL, tics, n, s,
                                    4);
        }
        err = err
                      ?: show(r, "layers_quality",
                              "Cooper et al.'s knowledge quality Q = S + sqrt(I E) of every "
                              "teacher layer along depth (MATH 4.4, the authors' code); vertical "
                              "lines mark the recommended layers.");
out:
        free(marks);
        free(y);
        free(tics);
        free(order);
        return err;
}

static int section_layers(struct run *r)
{
        struct kdl_run_layers_opts o;
        kdl_inputs teacher_only = *r->in;
        kdl_doc *d = NULL;
        int err;

        progress(r, "layers: teacher layer quality");
        teacher_only.nstudents = 0;
        kdl_run_layers_opts_init(&o);
        /* Recommending 4 of a 4-layer teacher says nothing: at most half of them. */
        {
                const kdl_dump *td = kdl_h5_dump(r->in->teacher);
                size_t nl = td->checkpoints[td->ncheckpoints - 1].nlayers;

                o.k = nl >= 8 ? 4 : (nl + 1) / 2;
        }
        err = kdl_doc_new("layers", &d);
        err = err ?: kdl_run_layers(&teacher_only, &o, d);
        err = err
                      ?: kdl_site_section(
                                 r->site, "Teacher layers",
                                 "Which teacher layers are worth distilling from, decided before "
                                 "training from the teacher alone: Cooper et al.'s knowledge "
                                 "quality on a class-balanced subsample, with linear CKA against "
                                 "the teacher's logits and the labels and class-geometry columns.");
        err = err ?: layers_figure(r, d);
        err = err
                      ?: show_table(r, d, "layers_recommended", "layers_recommended",
                                    "Recommended teacher layers, in depth order");
        err = err ?: show_table(r, d, "layers", "layers", "Teacher layers ranked by Q");
        err = err ?: kdl_site_json(r->site, d, "layers");
        kdl_doc_free(d);
        return err;
}

/* The teacher x student matrix of one run of kdl_run_cka() as a heatmap. */
static int cka_heatmap(struct run *r, const kdl_doc *d, size_t k, const char *tck, const char *sck)
{
        const kdl_table *t = kdl_doc_find_table(d, "cka");
        const char **rows = NULL, **cols = NULL;
        double *m = NULL;
        char *name = NULL, *caption = NULL;
        size_t nr, nc = 0, first = 3;
        int err = -ENOMEM;

        if (!t || (nr = kdl_table_rows(t)) == 0 || kdl_table_cols(t) <= first)
                return 0;
        nc = kdl_table_cols(t) - first;
        rows = kdl_new(const char *, nr);
        cols = kdl_new(const char *, nc);
        m = kdl_new(double, nr *nc);
        name = kdl__asprintf("cka_s%zu_%s", k + 1, sck);
        caption = kdl__asprintf("Linear CKA between the layers of the teacher at %s (rows) and "
                                "of %s at %s (columns), all samples (Kornblith et al. 2019; "
                                "MATH 7.2)",
                                tck, r->names[k], sck);
        if (!rows || !cols || !m || !name || !caption)
                goto out;
        for (size_t j = 0; j < nc; j++)
                cols[j] = kdl_table_key(t, first + j);
        for (size_t i = 0; i < nr; i++) {
                rows[i] = str_at(t, i, "layer");
                for (size_t j = 0; j < nc; j++)
                        m[i * nc + j] = real_at(t, i, cols[j]);
        }
        {
                struct kdl_fig f = {.xlabel = "student layer", .ylabel = "teacher layer"};

                err = kdl_fig_heatmap(kdl_site_path(r->site), name, &f, m, nr, nc, rows, cols,
                                      nr * nc <= 144, 0.0, 1.0);
        }
        err = err ?: show(r, name, caption);
out:
        free(caption);
        free(name);
        free(m);
        free(cols);
        free(rows);
        return err;
}

static int section_cka(struct run *r)
{
        const char *tck = last_checkpoint(r->in->teacher);
        size_t i = 0;
        int err;

        progress(r, "cka: figures");
        err = kdl_site_section(r->site, "Teacher x student CKA",
                               "How similar each student's layers are to the teacher's: linear "
                               "CKA over every sample, streamed in feature space.");
        for (size_t k = 0; k < r->in->nstudents && !err; k++) {
                const kdl_dump *sd = kdl_h5_dump(r->in->students[k]);

                /* The trained teacher against each checkpoint of the student. */
                for (size_t c = 0; c < sd->ncheckpoints && !err; c++, i++) {
                        const char *sck = sd->checkpoints[c].name;
                        char *file = kdl__asprintf("cka_s%zu_%s", k + 1, sck);

                        err = file ? cka_heatmap(r, r->cka[i], k, tck, sck) : -ENOMEM;
                        err = err ?: kdl_site_json(r->site, r->cka[i], file);
                        free(file);
                }
        }
        return err;
}

static int section_passes(struct run *r)
{
        int err;

        err = kdl_site_section(r->site, "How the dumps were read",
                               "Each student checkpoint was read on one stream shared by the "
                               "kl, split, dims and CKA analyses: every dataset once per pass, "
                               "and a second pass only for the analyses that need one (split's "
                               "instance weights w_n; kl's projector when the head widths "
                               "differ), reading only their datasets.");
        err = err
                      ?: show_table(r, r->passes, "passes", "passes",
                                    "Passes over each dump and the values read (after the spatial "
                                    "rule), per checkpoint");
        err = err ?: kdl_site_json(r->site, r->passes, "passes");
        return err;
}

/* ---- computing: one stream per checkpoint for every analysis ---------------------- */

/* The begun analyses of the report. */
struct runs {
        struct kdl__kl_run *kl;
        struct kdl__split_run *split;
        struct kdl__dims_run *dims;
        kdl_table *passes;
};

/* Run @jobs on one stream over student @k's pair (or the teacher alone when @k is
 * SIZE_MAX) and add a row to the passes table. */
static int run_jobs(struct run *r, struct runs *rs, size_t k, const char *checkpoint,
                    kdl__job *jobs, size_t n)
{
        const kdl_pair *pair = k == SIZE_MAX ? NULL : r->in->pairs[k];
        size_t rows = pair ? pair->n : kdl_h5_dump(r->in->teacher)->n;
        kdl_stream *s = NULL;
        unsigned passes = 0;
        int err;

        err = kdl_stream_new(rows, pair, NULL, &s);
        err = err ?: kdl__jobs_run(s, jobs, n, &passes);
        if (!err && (err = kdl_table_add_row(rs->passes)) > 0)
                err = 0; /* the row's index */
        err = err
                      ?: kdl_table_put_str(rs->passes, "model",
                                           k == SIZE_MAX ? r->o->teacher : r->o->students[k]);
        err = err ?: kdl_table_put_str(rs->passes, "checkpoint", checkpoint);
        err = err ?: kdl_table_put_int(rs->passes, "analyses", (long long) n);
        err = err ?: kdl_table_put_int(rs->passes, "datasets", (long long) kdl_stream_count(s));
        err = err ?: kdl_table_put_int(rs->passes, "passes", (long long) passes);
        err = err
                      ?: kdl_table_put_int(rs->passes, "values_read",
                                           (long long) kdl_stream_values_read(s));
        kdl_stream_free(s);
        return err;
}

/* Student @k at checkpoint pair @cp: kl, split, dims and CKA on one stream. */
static int student_checkpoint(struct run *r, struct runs *rs, size_t k, const struct kdl_ckpair *cp)
{
        struct kdl_run_cka_opts co;
        struct kdl_ckpair ckp = {.main = cp->partner, .partner = cp->main};
        /* The CKA document of this student alone, as kdlens cka -t T -s S writes it. */
        kdl_inputs one = {.teacher = r->in->teacher,
                          .nstudents = 1,
                          .students = &r->in->students[k],
                          .pairs = &r->in->pairs[k]};
        struct kdl__cka_run *cka = NULL;
        kdl__job jobs[4];
        kdl_doc *d = NULL;
        char *what = kdl__asprintf("%s at %s", short_name(r, k), cp->main->name);
        int err;

        if (!what)
                return -ENOMEM;
        progress(r, what);
        free(what);
        kdl_run_cka_opts_init(&co);
        err = kdl_doc_new("cka", &d);
        err = err ?: kdl__cka_begin(&one, &co, d, &cka);
        err = err ?: kdl__kl_job(rs->kl, k, cp, &jobs[0]);
        err = err ?: kdl__split_job(rs->split, k, cp, &jobs[1]);
        err = err ?: kdl__dims_job(rs->dims, k, cp, &jobs[2]);
        err = err ?: kdl__cka_job(cka, 0, &ckp, &jobs[3]);
        err = err ?: run_jobs(r, rs, k, cp->main->name, jobs, 4);
        if (!err) {
                err = kdl__cka_end(cka);
                cka = NULL;
        }
        if (!err)
                r->cka[r->ncka++] = d;
        else
                kdl_doc_free(d);
        kdl__cka_abort(cka);
        return err;
}

static int compute(struct run *r)
{
        const kdl_dump *td = kdl_h5_dump(r->in->teacher);
        struct kdl_run_kl_opts klo;
        struct kdl_run_split_opts so;
        struct kdl_run_dims_opts dio;
        struct runs rs = {0};
        size_t ncka = 0;
        int err;

        kdl_run_kl_opts_init(&klo);
        klo.common.checkpoint = "all";
        klo.common.tau[0] = r->tau;
        klo.seed = 0; /* the report has always drawn its Spearman subsample with seed 0 */
        kdl_run_split_opts_init(&so);
        so.common.checkpoint = "all";
        so.common.tau[0] = r->tau;
        so.long_tables = true;
        kdl_run_dims_opts_init(&dio);
        dio.common.checkpoint = "all";
        dio.common.tau[0] = r->tau;
        for (size_t k = 0; k < r->in->nstudents; k++)
                ncka += kdl_h5_dump(r->in->students[k])->ncheckpoints;
        r->cka = kdl_new(kdl_doc *, ncka ? ncka : 1);
        if (!r->cka)
                return -ENOMEM;
        err = kdl_doc_new("kl", &r->kl);
        err = err ?: kdl_doc_new("split", &r->split);
        err = err ?: kdl_doc_new("dims", &r->dims);
        err = err ?: kdl_doc_new("passes", &r->passes);
        err = err ?: kdl_table_new("passes", "How the dumps were read", &rs.passes);
        err = err ?: kdl__kl_begin(r->in, &klo, r->kl, &rs.kl);
        err = err ?: kdl__split_begin(r->in, &so, r->split, &rs.split);
        err = err ?: kdl__dims_begin(r->in, &dio, r->dims, &rs.dims);
        if (err < 0)
                goto out;

        /* The teacher's own dimensions, one pass per checkpoint. */
        progress(r, "teacher: dimensions");
        for (size_t c = 0; c < td->ncheckpoints && !err; c++) {
                kdl__job job;

                err = kdl__dims_teacher_job(rs.dims, &td->checkpoints[c], &job);
                err = err ?: run_jobs(r, &rs, SIZE_MAX, td->checkpoints[c].name, &job, 1);
        }
        /* Each student checkpoint against the trained teacher: all analyses on one stream. */
        for (size_t k = 0; k < r->in->nstudents && !err; k++) {
                struct kdl_ckpair *cks = NULL;
                size_t nck = 0;

                err = kdl_select_checkpoints(r->in->students[k], r->in->teacher, "all", NULL, &cks,
                                             &nck);
                for (size_t c = 0; c < nck && !err; c++)
                        err = student_checkpoint(r, &rs, k, &cks[c]);
                free(cks);
        }
        if (err < 0)
                goto out;
        err = kdl__kl_end(rs.kl);
        rs.kl = NULL;
        if (!err) {
                err = kdl__split_end(rs.split);
                rs.split = NULL;
        }
        if (!err) {
                err = kdl__dims_end(rs.dims);
                rs.dims = NULL;
        }
        err = err
                      ?: kdl_doc_add_note(r->passes,
                                          "each student checkpoint is read on one stream shared "
                                          "by kl, split, dims and cka: a dataset two analyses "
                                          "need is read once per pass, and a later pass reads "
                                          "only what the analyses still running need");
        if (!err) {
                err = kdl_doc_add_table(r->passes, rs.passes);
                rs.passes = NULL;
        }
out:
        kdl__kl_abort(rs.kl);
        kdl__split_abort(rs.split);
        kdl__dims_abort(rs.dims);
        kdl_table_free(rs.passes);
        return err;
}

int kdl_report_run(const struct kdl_report_opts *o)
{
        struct run r = {.o = o, .tau = o->tau > 0.0 ? o->tau : 4.0};
        const char **inputs = NULL;
        int err;

        /* inputs, the teacher, the 5 sections' figures, the index; + the student checkpoints */
        r.total = 8;
        err = kdl_inputs_open(o->teacher, o->students, o->nstudents, &r.in);
        if (err < 0)
                return err;
        r.names = kdl_new(char *, o->nstudents ? o->nstudents : 1);
        inputs = kdl_new(const char *, o->nstudents + 1);
        if (!r.names || !inputs) {
                err = -ENOMEM;
                goto out;
        }
        for (size_t k = 0; k < o->nstudents; k++)
                if (!(r.names[k] = display_name(kdl_h5_dump(r.in->students[k])))) {
                        err = -ENOMEM;
                        goto out;
                }
        r.prefix = common_prefix(r.names, o->nstudents);
        for (size_t k = 0; k < o->nstudents; k++)
                r.total += kdl_h5_dump(r.in->students[k])->ncheckpoints;
        err = kdl_site_open(o->out_dir, &r.site);
        err = err ?: section_inputs(&r);
        err = err ?: compute(&r);
        err = err ?: section_kl(&r);
        err = err ?: section_split(&r);
        err = err ?: section_dims(&r);
        err = err ?: section_layers(&r);
        err = err ?: section_cka(&r);
        err = err ?: section_passes(&r);
        if (err < 0)
                goto out;
        progress(&r, "index");
        inputs[0] = o->teacher;
        for (size_t k = 0; k < o->nstudents; k++)
                inputs[k + 1] = o->students[k];
        err = kdl_site_commit(r.site, o->command, inputs, o->nstudents + 1);
        r.site = NULL;
out:
        kdl_site_abort(r.site);
        kdl_doc_free(r.passes);
        kdl_doc_free(r.dims);
        kdl_doc_free(r.split);
        kdl_doc_free(r.kl);
        for (size_t i = 0; i < r.ncka; i++)
                kdl_doc_free(r.cka[i]);
        free(r.cka);
        for (size_t k = 0; r.names && k < o->nstudents; k++)
                free(r.names[k]);
        free(r.names);
        free(inputs);
        kdl_inputs_free(r.in);
        return err;
}
