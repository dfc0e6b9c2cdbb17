/* SPDX-License-Identifier: MIT */
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

static int split_figures(struct kdl__report *r, const kdl_doc *d)
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
                int k = student_index(r, kdl__report_str(t, i, "student"));

                if (k < 0 || !kdl__report_same_tau(kdl__report_real(t, i, "tau"), r->tau))
                        continue;
                owned[n] = kdl__asprintf("%s/%s", kdl__report_short_name(r, (size_t) k),
                                         kdl__report_str(t, i, "checkpoint"));
                if (!owned[n]) {
                        err = -ENOMEM;
                        goto out;
                }
                cats[n] = owned[n];
                tckd[n] = kdl__report_real(t, i, "tckd");
                nckd[n] = kdl__report_real(t, i, "nckd_coupled");
                n++;
        }
        if (n) {
                struct kdl_series s[] = {{"explicit: TCKD", tckd},
                                         {"implicit: (1 - p^t_y) NCKD", nckd}};
                struct kdl_fig f = {.ylabel = "tau^2 KL per sample (nats)"};

                err = kdl_fig_bars(kdl_site_path(r->site), "split_stacked", &f, cats, n, s, 2,
                                   true);
                err = err
                              ?: kdl__report_show(
                                         r, "split_stacked",
                                         "KD loss split into explicit (target-class) and implicit "
                                         "(non-target) knowledge, per student and checkpoint; the "
                                         "bars' total is the KD loss (KL = TCKD + (1 - p^t_y) "
                                         "NCKD)");
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
                              ?: kdl__report_show(
                                         r, "split_shares",
                                         "The same split as shares: how much of the KD signal is "
                                         "the "
                                         "teacher's target-class confidence and how much its "
                                         "distribution over the other classes");
        }
        for (size_t k = 0; k < r->in->nstudents && !err && h; k++) {
                const char *path = kdl_h5_dump(r->in->students[k])->path;
                const char *ck = kdl__report_last_checkpoint(r->in->students[k]);
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
                        err = err ?: kdl__report_show(r, name, cap);
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
                        err = err ?: kdl__report_show(r, name, cap);
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
                const char *ck = kdl__report_last_checkpoint(r->in->students[k]);
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
                                      ?: kdl__report_show(
                                                 r, "classes_teacher_confusion",
                                                 "The teacher's soft confusion matrix: mean "
                                                 "p^t_tau "
                                                 "of "
                                                 "each class over the samples of each true class");
                }
                if (k == 0 && !err &&
                    matrix(kdl_doc_find_table(d, "head_cosine_teacher"), path, ck, r->tau, m, c)) {
                        err = kdl_fig_heatmap(kdl_site_path(r->site), "classes_teacher_head", &f, m,
                                              c, c, (const char *const *) labels,
                                              (const char *const *) labels, c <= 20, -1, 1);
                        err = err
                                      ?: kdl__report_show(
                                                 r, "classes_teacher_head",
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
                err = err ?: kdl__report_show(r, name, cap);
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

int kdl__report_section_split(struct kdl__report *r)
{
        const kdl_doc *d = r->split;
        int err;

        kdl__report_progress(r, "split: figures");
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
