/* SPDX-License-Identifier: MIT */
/*
 * "Similarity measures side by side" (--measure): kdlens cka's CKA, mean CCA, SVCCA, PWCCA
 * and orthogonal Procrustes of the teacher's best layers, each against the student's last
 * layer at its last checkpoint analysed, read from that checkpoint's CKA document (its pass
 * computed them, report-cka.c).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "reports/plot.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

/* The teacher's best layers: the BEST of highest linear CKA with the student's last layer. */
#define BEST 3

/* The measures shown, in the order of enum kdl_run_cka_measure: the matrix table of each
 * (kdl_run_cka()'s), the column and the legend entry. */
static const char *const tables[KDL_RUN_CKA_MEASURE_COUNT_] = {"cka", "cca", "svcca", "pwcca",
                                                               "procrustes"};
static const char *const keys[KDL_RUN_CKA_MEASURE_COUNT_] = {"cka", "cca_mean_rho", "svcca",
                                                             "pwcca", "procrustes_nuclear"};
static const char *const legend[KDL_RUN_CKA_MEASURE_COUNT_] = {"linear CKA", "mean CCA", "SVCCA",
                                                               "PWCCA", "Procrustes ||X^T Y||_*"};

/* One student's pairs: the teacher's best layers (rows of the matrices) against its last
 * layer (a column). */
struct best {
        const kdl_doc *d;
        const char *col;  /* the student's last layer; borrowed from d */
        size_t row[BEST]; /* rows of the "cka" table */
        size_t n;
};

/* The value of measure @m for the teacher's layer of row @i of the "cka" table (the matrix
 * tables share its rows) against the student's layer b->col, as its matrix table has it. */
static double raw(const struct best *b, size_t i, int m)
{
        const kdl_table *t = kdl_doc_find_table(b->d, tables[m]);

        return t && i < kdl_table_rows(t) ? kdl__report_real(t, i, b->col) : (double) NAN;
}

/* That value as shown: Procrustes as its similarity ||X^T Y||_* = 1 - d / 2 of its
 * distance d = 2 - 2 ||X^T Y||_*. */
static double value(const struct best *b, size_t i, int m)
{
        double v = raw(b, i, m);

        return m == KDL_RUN_CKA_MEASURE_PROCRUSTES ? 1.0 - v / 2.0 : v;
}

/* The student's last layer (its last column but the logits; the logits when it has no
 * other) and the BEST rows of highest CKA with it, the teacher's logits left out (ties to
 * the shallower layer). */
static void find_best(const kdl_doc *d, struct best *b)
{
        const kdl_table *t = kdl_doc_find_table(d, "cka");
        size_t first = 3, nr = t ? kdl_table_rows(t) : 0;

        *b = (struct best){.d = d};
        for (size_t j = first; t && j < kdl_table_cols(t); j++)
                if (!b->col || strcmp(kdl_table_key(t, j), "logits") != 0)
                        b->col = kdl_table_key(t, j);
        if (!b->col)
                return;
        for (size_t i = 0; i < nr; i++) {
                double v = kdl__report_real(t, i, b->col);
                size_t at;

                if (isnan(v) || strcmp(kdl__report_str(t, i, "layer"), "logits") == 0)
                        continue;
                at = b->n < BEST ? b->n++ : BEST;
                while (at > 0 && v > kdl__report_real(t, b->row[at - 1], b->col)) {
                        if (at < BEST)
                                b->row[at] = b->row[at - 1];
                        at--;
                }
                if (at < BEST)
                        b->row[at] = i;
        }
}

/* Student @k's rows of the table @t. */
static int table_rows(const struct kdl__report *r, size_t k, const struct best *b, kdl_table *t)
{
        const kdl_table *c = kdl_doc_find_table(b->d, "cka");
        const struct kdl_ckpair *cp = kdl__report_last_pair(r, k);
        int err = 0;

        for (size_t g = 0; g < b->n && !err; g++) {
                if (kdl_table_add_row(t) < 0)
                        return -ENOMEM;
                err = kdl_table_put_str(t, "student", r->names[k]);
                err = err ?: kdl_table_put_str(t, "checkpoint", cp->main->name);
                err = err
                              ?: kdl_table_put_str(t, "teacher_layer",
                                                   kdl__report_str(c, b->row[g], "layer"));
                err = err ?: kdl_table_put_str(t, "student_layer", b->col);
                for (int m = 0; m < KDL_RUN_CKA_MEASURE_COUNT_ && !err; m++)
                        if (r->o->measures & 1u << m)
                                err = kdl_table_put_real(t, keys[m], value(b, b->row[g], m));
                if (!err && r->o->measures & 1u << KDL_RUN_CKA_MEASURE_PROCRUSTES)
                        err = kdl_table_put_real(t, "procrustes",
                                                 raw(b, b->row[g], KDL_RUN_CKA_MEASURE_PROCRUSTES));
        }
        return err;
}

/* Student @k's figure: a group of bars per teacher layer, a bar per measure. */
static int figure(struct kdl__report *r, size_t k, const struct best *b)
{
        const kdl_table *c = kdl_doc_find_table(b->d, "cka");
        const char *cats[BEST];
        double y[KDL_RUN_CKA_MEASURE_COUNT_][BEST];
        struct kdl_series s[KDL_RUN_CKA_MEASURE_COUNT_];
        struct kdl_fig f = {.xlabel = "teacher layer (against the student's last layer)",
                            .ylabel = "similarity",
                            .ymax = 1.0};
        char *name = kdl__asprintf("measures_s%zu", k + 1), *caption;
        size_t ns = 0;
        int err;

        for (size_t g = 0; g < b->n; g++)
                cats[g] = kdl__report_str(c, b->row[g], "layer");
        for (int m = 0; m < KDL_RUN_CKA_MEASURE_COUNT_; m++) {
                bool any = false;

                if (!(r->o->measures & 1u << m))
                        continue;
                for (size_t g = 0; g < b->n; g++) {
                        y[ns][g] = value(b, b->row[g], m);
                        any = any || !isnan(y[ns][g]);
                }
                /* A measure NaN in every pair (PWCCA in Gram space) has no bars at all. */
                if (any) {
                        s[ns] = (struct kdl_series){.name = legend[m], .y = y[ns]};
                        ns++;
                }
        }
        caption = kdl__asprintf(
                "The similarity measures of --measure side by side for the teacher's best "
                "layers: the %d of highest linear CKA with the last layer of %s (%s) at %s, "
                "each against that layer, the teacher at %s; all samples, from the CKA pass. "
                "Orthogonal Procrustes is a distance, 2 - 2 ||X^T Y||_* of the centred, "
                "Frobenius-normalised representations: it is plotted as the similarity "
                "||X^T Y||_* (nuclear norm) on the same [0, 1] axis.  A pair kdlens cka leaves "
                "NaN has no bar (docs/cka.md#cca-svcca-pwcca-and-procrustes)",
                BEST, r->names[k], b->col, kdl__report_last_pair(r, k)->main->name,
                kdl__report_last_pair(r, k)->partner->name);
        err = name && caption ? 0 : -ENOMEM;
        if (!err && ns == 0)
                goto out;
        err = err ?: kdl_fig_bars(kdl_site_path(r->site), name, &f, cats, b->n, s, ns, false);
        err = err ?: kdl__report_show(r, name, caption, "measures", k);
out:
        free(caption);
        free(name);
        return err;
}

int kdl__report_section_measures(struct kdl__report *r)
{
        kdl_doc *doc = NULL;
        kdl_table *t = NULL;
        size_t i = 0;
        int err;

        if (!(r->o->measures & ~(1u << KDL_RUN_CKA_MEASURE_CKA)))
                return 0;
        err = kdl_site_section(
                r->site, "Similarity measures side by side",
                "The measures asked with --measure for the teacher's best layers: the 3 of "
                "highest linear CKA with each student's last layer at its last checkpoint "
                "analysed, each against that layer, computed from the same pass as CKA.");
        err = err ?: kdl_doc_new("measures", &doc);
        err = err ?: kdl_table_new("measures", "The measures of the teacher's best layers", &t);
        for (size_t k = 0; k < r->in->nstudents && !err; k++) {
                struct best b;

                i += r->nsel[k];
                find_best(r->cka[i - 1], &b);
                if (b.n == 0) {
                        /* Said, not skipped in silence: the measures compare feature layers. */
                        char *text = kdl__asprintf(
                                "%s: no pair of feature layers to compare (the teacher or the "
                                "student has none, only logits), so no measures are shown.",
                                r->names[k]);

                        err = text ? kdl_site_paragraph(r->site, text) : -ENOMEM;
                        free(text);
                        continue;
                }
                err = table_rows(r, k, &b, t);
                err = err ?: figure(r, k, &b);
        }
        if (!err) {
                err = kdl_doc_add_table(doc, t);
                t = NULL;
        }
        err = err
                      ?: kdl__report_show_table(r, doc, "measures", "measures",
                                                "The measures of the figures above (Procrustes: "
                                                "its distance and the similarity ||X^T Y||_*).");
        err = err ?: kdl_site_json(r->site, doc, "measures");
        kdl_table_free(t);
        kdl_doc_free(doc);
        return err;
}
