/* SPDX-License-Identifier: MIT */
/* The split section's per-class figure: the classes whose samples carry the most KD loss
 * (kdlens split, table split_classes). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "reports/plot.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

/* Classes shown: every class up to this many, else this many with the largest mean KL. */
#define WORST_CLASSES 20

/* One class of one student checkpoint: row @row of split_classes. */
struct class_row {
        size_t row;
        double kl;
};

/* The largest mean KL first; classes without samples (NaN) last; ties by row (class). */
static int cmp_kl(const void *a, const void *b)
{
        const struct class_row *x = a, *y = b;

        if (isnan(x->kl) != isnan(y->kl))
                return isnan(x->kl) ? 1 : -1;
        if (x->kl > y->kl || x->kl < y->kl)
                return x->kl > y->kl ? -1 : 1;
        return x->row < y->row ? -1 : x->row > y->row;
}

/* The rows of @t for student @path at @ck and the report's tau into @rows (room for every
 * row of @t).  Return: how many. */
static size_t class_rows(const struct kdl__report *r, const kdl_table *t, const char *path,
                         const char *ck, struct class_row *rows)
{
        static const char *const keys[] = {"student", "checkpoint"};
        const char *const want[] = {path, ck};
        size_t n = 0;

        for (int i = -1; (i = kdl_table_find_row(t, (size_t) (i + 1), 2, keys, want)) >= 0;)
                if (kdl__report_same_tau(kdl__report_real(t, (size_t) i, "tau"), r->tau))
                        rows[n++] = (struct class_row){(size_t) i,
                                                       kdl__report_real(t, (size_t) i, "kl")};
        return n;
}

/* Student @k's per-class KL, TCKD and NCKD at its last checkpoint: every class when C <=
 * WORST_CLASSES, else the WORST_CLASSES of the largest mean KL, worst first. */
static int worst_classes_figure(struct kdl__report *r, const kdl_table *t, size_t k,
                                struct class_row *rows, double *y, char **labels)
{
        const char *path = kdl_h5_dump(r->in->students[k])->path;
        const char *ck = kdl__report_last_pair(r, k)->main->name;
        size_t c = class_rows(r, t, path, ck, rows), m = c < WORST_CLASSES ? c : WORST_CLASSES;
        struct kdl_series s[] = {{"KL", y, NULL},
                                 {"TCKD", y + WORST_CLASSES, NULL},
                                 {"NCKD", y + 2 * WORST_CLASSES, NULL}};
        struct kdl_fig f = {.xlabel = "class (label)", .ylabel = "mean tau^2 KL per sample (nats)"};
        char *name = NULL, *cap = NULL;
        int err = 0;

        if (c == 0)
                return 0;
        if (c > WORST_CLASSES)
                qsort(rows, c, sizeof(*rows), cmp_kl);
        for (size_t j = 0; j < m && !err; j++) {
                size_t i = rows[j].row;

                labels[j] = kdl__asprintf("%.0f", kdl__report_real(t, i, "class"));
                y[j] = kdl__report_real(t, i, "kl");
                y[WORST_CLASSES + j] = kdl__report_real(t, i, "tckd");
                y[2 * WORST_CLASSES + j] = kdl__report_real(t, i, "nckd");
                err = labels[j] ? 0 : -ENOMEM;
        }
        name = kdl__asprintf("split_classes_s%zu", k + 1);
        cap = c > WORST_CLASSES
                      ? kdl__asprintf("The %d of the %zu classes whose samples carry the largest "
                                      "mean KD loss, worst first, for %s at checkpoint %s (tau = "
                                      "%g): per class (the label), the mean KL, TCKD and NCKD "
                                      "over its samples (KL is not TCKD + NCKD: NCKD enters the "
                                      "loss weighted by 1 - p^t_y); every class is in the "
                                      "split_classes table (data/split.json)",
                                      WORST_CLASSES, c, r->names[k], ck, r->tau)
                      : kdl__asprintf("Per class (the label), the mean KL, TCKD and NCKD over "
                                      "its samples, for %s at checkpoint %s (tau = %g); KL is "
                                      "not TCKD + NCKD: NCKD enters the loss weighted by "
                                      "1 - p^t_y",
                                      r->names[k], ck, r->tau);
        err = err ?: name && cap ? 0 : -ENOMEM;
        err = err
                      ?: kdl_fig_bars(kdl_site_path(r->site), name, &f,
                                      (const char *const *) labels, m, s, 3, false);
        err = err ?: kdl__report_show(r, name, cap, "split", k);
        for (size_t j = 0; j < m; j++) {
                free(labels[j]);
                labels[j] = NULL;
        }
        free(cap);
        free(name);
        return err;
}

int kdl__report_split_classes(struct kdl__report *r, const kdl_doc *d)
{
        const kdl_table *t = kdl_doc_find_table(d, "split_classes");
        size_t nrows = t ? kdl_table_rows(t) : 0;
        struct class_row *rows;
        double y[3 * WORST_CLASSES];
        char *labels[WORST_CLASSES] = {0};
        int err = 0;

        if (nrows == 0)
                return 0;
        rows = kdl_new(struct class_row, nrows);
        if (!rows)
                return -ENOMEM;
        for (size_t k = 0; k < r->in->nstudents && !err; k++)
                err = worst_classes_figure(r, t, k, rows, y, labels);
        free(rows);
        return err;
}
