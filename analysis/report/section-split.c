/* SPDX-License-Identifier: MIT */
/* "Explicit and implicit knowledge": the KD loss split, Tang et al.'s levels and class
 * relations (kdlens split). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "reports/plot.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

static int student_index(const struct kdl__report *r, const char *path)
{
        for (size_t k = 0; k < r->in->nstudents; k++)
                if (strcmp(kdl_h5_dump(r->in->students[k])->path, path) == 0)
                        return (int) k;
        return -1;
}

/* Histogram of @quantity for student @path at @checkpoint: edges and counts normalised to
 * densities. */
static size_t histogram(const kdl_table *t, const char *path, const char *checkpoint, double tau,
                        const char *quantity, double *edges, double *dens, size_t max, bool log)
{
        static const char *const keys[] = {"student", "checkpoint", "quantity"};
        const char *const want[] = {path, checkpoint, quantity};
        size_t nb = 0;
        double total = 0.0;

        for (int i = -1;
             nb < max && (i = kdl_table_find_row(t, (size_t) (i + 1), 3, keys, want)) >= 0;) {
                double lo = kdl__report_real(t, i, "lo"), hi = kdl__report_real(t, i, "hi");

                if (!kdl__report_same_tau(kdl__report_real(t, i, "tau"), tau))
                        continue;
                if (!isfinite(lo) || !isfinite(hi) || (log && !(lo > 0.0)))
                        continue;
                edges[nb] = lo;
                edges[nb + 1] = hi;
                dens[nb] = kdl__report_real(t, i, "count");
                total += dens[nb] * (log ? 1.0 : hi - lo);
                nb++;
        }
        for (size_t b = 0; b < nb && total > 0.0; b++)
                dens[b] /= total; /* a density (linear bins) or a fraction (log bins) */
        return nb;
}

/* The C x C records of @table for student @path at @checkpoint into @m. */
static bool matrix(const kdl_table *t, const char *path, const char *checkpoint, double tau,
                   double *m, size_t c)
{
        static const char *const keys[] = {"student", "checkpoint"};
        const char *const want[] = {path, checkpoint};
        size_t found = 0;

        for (int i = -1; t && (i = kdl_table_find_row(t, (size_t) (i + 1), 2, keys, want)) >= 0;) {
                double ti = kdl__report_real(t, i, "tau");
                size_t a = (size_t) kdl__report_real(t, i, "i"),
                       b = (size_t) kdl__report_real(t, i, "j");

                if ((isfinite(ti) && !kdl__report_same_tau(ti, tau)) || a >= c || b >= c)
                        continue;
                m[a * c + b] = kdl__report_real(t, i, "value");
                found++;
        }
        return found == c * c;
}

/* The rows of table "split" at the report's tau, as bars. */
struct bars {
        size_t n;
        const char **cats; /* "student/checkpoint", each owned by @owned */
        char **owned;
        double *tckd, *nckd;
};

static void bars_release(struct bars *b)
{
        for (size_t i = 0; b->owned && i < b->n; i++)
                free(b->owned[i]);
        free(b->owned);
        free(b->cats);
        free(b->tckd);
        free(b->nckd);
}

/* The bars of @t for the students of the report at its tau.  Release @b with bars_release(). */
static int bars_init(struct bars *b, const struct kdl__report *r, const kdl_table *t)
{
        size_t rows = t ? kdl_table_rows(t) : 0;

        *b = (struct bars){.cats = kdl_new(const char *, rows ? rows : 1),
                           .owned = kdl_new(char *, rows ? rows : 1),
                           .tckd = kdl_new(double, rows ? rows : 1),
                           .nckd = kdl_new(double, rows ? rows : 1)};
        if (!b->cats || !b->owned || !b->tckd || !b->nckd)
                return -ENOMEM;
        for (size_t i = 0; i < rows; i++) {
                int k = student_index(r, kdl__report_str(t, i, "student"));

                if (k < 0 || !kdl__report_same_tau(kdl__report_real(t, i, "tau"), r->tau))
                        continue;
                b->owned[b->n] = kdl__asprintf("%s/%s", kdl__report_short_name(r, (size_t) k),
                                               kdl__report_str(t, i, "checkpoint"));
                if (!b->owned[b->n])
                        return -ENOMEM;
                b->cats[b->n] = b->owned[b->n];
                b->tckd[b->n] = kdl__report_real(t, i, "tckd");
                b->nckd[b->n] = kdl__report_real(t, i, "nckd_coupled");
                b->n++;
        }
        return 0;
}

/* The KD loss of every student and checkpoint split into its two parts, as nats and shares. */
static int split_bars(struct kdl__report *r, const kdl_table *t)
{
        struct bars b;
        int err = bars_init(&b, r, t);

        if (!err && b.n) {
                struct kdl_series s[] = {{"explicit: TCKD", b.tckd},
                                         {"implicit: (1 - p^t_y) NCKD", b.nckd}};
                struct kdl_fig f = {.ylabel = "tau^2 KL per sample (nats)"};

                err = kdl_fig_bars(kdl_site_path(r->site), "split_stacked", &f, b.cats, b.n, s, 2,
                                   true);
                err = err
                              ?: kdl__report_show(r, "split_stacked",
                                                  "KD loss split into explicit (target-class) and "
                                                  "implicit (non-target) knowledge, per student "
                                                  "and checkpoint; the bars' total is the KD loss "
                                                  "(KL = TCKD + (1 - p^t_y) NCKD)");
                /* The same as shares of the loss, readable when the untrained
                 * checkpoints' loss dwarfs the rest. */
                for (size_t i = 0; i < b.n; i++) {
                        double total = b.tckd[i] + b.nckd[i];

                        b.tckd[i] = total > 0.0 ? b.tckd[i] / total : (double) NAN;
                        b.nckd[i] = total > 0.0 ? b.nckd[i] / total : (double) NAN;
                }
                f.ylabel = "share of the KD loss";
                f.ymax = 1.0;
                err = err
                              ?: kdl_fig_bars(kdl_site_path(r->site), "split_shares", &f, b.cats,
                                              b.n, s, 2, true);
                err = err
                              ?: kdl__report_show(r, "split_shares",
                                                  "The same split as shares: how much of the KD "
                                                  "signal is the teacher's target-class "
                                                  "confidence and how much its distribution over "
                                                  "the other classes");
        }
        bars_release(&b);
        return err;
}

#define HIST_MAX_BINS 1000

/* Student @k's target confidence and the teacher's, at its last checkpoint. */
static int confidence_figure(struct kdl__report *r, const kdl_table *h, size_t k)
{
        const char *path = kdl_h5_dump(r->in->students[k])->path;
        const char *ck = kdl__report_last_pair(r, k)->main->name;
        double e1[HIST_MAX_BINS + 1], d1[HIST_MAX_BINS], e2[HIST_MAX_BINS + 1], d2[HIST_MAX_BINS];
        size_t n1 = histogram(h, path, ck, r->tau, "pt_y", e1, d1, HIST_MAX_BINS, false);
        size_t n2 = histogram(h, path, ck, r->tau, "ps_y", e2, d2, HIST_MAX_BINS, false);
        struct kdl_series s[] = {{"teacher p^t_y", d1}, {"student p^s_y", d2}};
        struct kdl_fig f = {.xlabel = "target-class probability at tau", .ylabel = "density"};
        char *name, *cap;
        int err;

        if (!n1 || n1 != n2)
                return 0;
        name = kdl__asprintf("confidence_s%zu", k + 1);
        cap = kdl__asprintf("Target confidence of the teacher and of %s at checkpoint %s "
                            "(tau = %g)",
                            r->names[k], ck, r->tau);
        err = name && cap ? kdl_fig_hist(kdl_site_path(r->site), name, &f, e1, n1, s, 2) : -ENOMEM;
        err = err ?: kdl__report_show(r, name, cap);
        free(cap);
        free(name);
        return err;
}

/* Student @k's instance weights w_n at its last checkpoint (log bins, w_n > 0). */
static int instance_weight_figure(struct kdl__report *r, const kdl_table *h, size_t k)
{
        const char *path = kdl_h5_dump(r->in->students[k])->path;
        const char *ck = kdl__report_last_pair(r, k)->main->name;
        double e[HIST_MAX_BINS + 1], d[HIST_MAX_BINS];
        size_t n = histogram(h, path, ck, r->tau, "w", e, d, HIST_MAX_BINS, true);
        struct kdl_series s[] = {{"w_n", d}};
        struct kdl_fig f = {.xlabel = "instance weight w_n (KD / label smoothing)",
                            .ylabel = "fraction of samples",
                            .logx = true,
                            .nmarks = 1,
                            .marks = (double[]){1.0},
                            .mark_labels = (const char *[]){"w = 1"}};
        char *name, *cap;
        int err;

        if (!n)
                return 0;
        name = kdl__asprintf("instance_w_s%zu", k + 1);
        cap = kdl__asprintf("Tang et al.'s instance weights w_n of %s at checkpoint %s: KD "
                            "up-weights samples with w_n > 1 (w_n <= 0 not shown)",
                            r->names[k], ck);
        err = name && cap ? kdl_fig_hist(kdl_site_path(r->site), name, &f, e, n, s, 1) : -ENOMEM;
        err = err ?: kdl__report_show(r, name, cap);
        free(cap);
        free(name);
        return err;
}

/* The C x C class matrix @m as heatmap @name, classes labelled, shown with @caption. */
static int class_heatmap(struct kdl__report *r, const char *name, const struct kdl_fig *f,
                         const double *m, size_t c, char *const *labels, double zmin, double zmax,
                         const char *caption)
{
        int err = kdl_fig_heatmap(kdl_site_path(r->site), name, f, m, c, c,
                                  (const char *const *) labels, (const char *const *) labels,
                                  c <= 20, zmin, zmax);

        return err ?: kdl__report_show(r, name, caption);
}

/* The teacher's soft confusion and head cosines, recorded beside student @path at @ck. */
static int teacher_class_figures(struct kdl__report *r, const kdl_doc *d, const char *path,
                                 const char *ck, double *m, size_t c, char *const *labels)
{
        struct kdl_fig fc = {.xlabel = "predicted class (soft)", .ylabel = "true class"};
        struct kdl_fig f = {.xlabel = "class", .ylabel = "class"};
        int err = 0;

        if (matrix(kdl_doc_find_table(d, "confusion_teacher"), path, ck, r->tau, m, c))
                err = class_heatmap(r, "classes_teacher_confusion", &fc, m, c, labels, 0, 0,
                                    "The teacher's soft confusion matrix: mean p^t_tau of each "
                                    "class over the samples of each true class");
        if (!err && matrix(kdl_doc_find_table(d, "head_cosine_teacher"), path, ck, r->tau, m, c))
                err = class_heatmap(r, "classes_teacher_head", &f, m, c, labels, -1, 1,
                                    "Class relations in the teacher's head: cosine of "
                                    "head-weight rows");
        return err;
}

/* Class relations: the teacher's soft confusion and both heads' cosines, each student at its
 * last checkpoint (the teacher's beside the first student). */
static int class_figures(struct kdl__report *r, const kdl_doc *d)
{
        size_t c = kdl_h5_dump(r->in->teacher)->c;
        double *m = kdl_new(double, c > 0 ? c * c : 1);
        char **labels = kdl_new(char *, c ? c : 1);
        struct kdl_fig f = {.xlabel = "class", .ylabel = "class"};
        int err = m && labels ? 0 : -ENOMEM;

        for (size_t k = 0; k < c && !err; k++)
                if (!(labels[k] = kdl__asprintf("%zu", k)))
                        err = -ENOMEM;
        for (size_t k = 0; k < r->in->nstudents && !err; k++) {
                const char *path = kdl_h5_dump(r->in->students[k])->path;
                const char *ck = kdl__report_last_pair(r, k)->main->name;
                char *name, *cap;

                if (k == 0)
                        err = teacher_class_figures(r, d, path, ck, m, c, labels);
                if (err ||
                    !matrix(kdl_doc_find_table(d, "head_cosine_student"), path, ck, r->tau, m, c))
                        continue;
                name = kdl__asprintf("classes_s%zu_head", k + 1);
                cap = kdl__asprintf("Class relations in the head of %s at checkpoint %s, "
                                    "beside the teacher's",
                                    r->names[k], ck);
                err = name && cap ? class_heatmap(r, name, &f, m, c, labels, -1, 1, cap) : -ENOMEM;
                free(name);
                free(cap);
        }
        for (size_t k = 0; labels && k < c; k++)
                free(labels[k]);
        free(labels);
        free(m);
        return err;
}

static int split_figures(struct kdl__report *r, const kdl_doc *d)
{
        const kdl_table *h = kdl_doc_find_table(d, "histograms");
        int err = split_bars(r, kdl_doc_find_table(d, "split"));

        for (size_t k = 0; k < r->in->nstudents && !err && h; k++) {
                err = confidence_figure(r, h, k);
                err = err ?: instance_weight_figure(r, h, k);
        }
        return err ?: class_figures(r, d);
}

int kdl__report_section_split(struct kdl__report *r)
{
        const kdl_doc *d = r->split;
        int err;

        kdl__report_progress(r, "split: figures");
        err = kdl_site_section(r->site, "Explicit and implicit knowledge",
                               "How the KD loss splits into the teacher's confidence in the "
                               "target class (explicit, TCKD) and its distribution over the "
                               "other classes (implicit, NCKD), per DKD (Zhao et al. 2022) and "
                               "AEKT (Park & Lee 2024); and Tang et al.'s universe, domain and "
                               "instance knowledge.");
        err = err ?: split_figures(r, d);
        err = err
                      ?: kdl__report_show_table(r, d, "split", "split",
                                                "Explicit vs implicit knowledge");
        err = err
                      ?: kdl__report_show_table(r, d, "domain", "split_domain",
                                                "Domain knowledge: agreement of class relations");
        err = err
                      ?: kdl__report_show_table(r, d, "instance", "split_instance",
                                                "Instance knowledge: rescaling weights w_n");
        err = err ?: kdl_site_json(r->site, d, "split");
        return err;
}
