/* SPDX-License-Identifier: MIT */
/* "Teacher layers": which teacher layers are worth distilling from (kdlens layers). */
#include <stdlib.h>

#include "metrics/base/alloc.h"
#include "reports/plot.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

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
static int layers_figure(struct kdl__report *r, const kdl_doc *d)
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
                order[i] = (struct depth_row){(long long) kdl__report_real(t, i, "depth"), i};
        qsort(order, n, sizeof(*order), cmp_depth_row);
        for (size_t i = 0; i < n; i++) {
                size_t row = order[i].row;

                tics[i] = kdl__report_str(t, row, "layer");
                for (size_t k = 0; k < 4; k++)
                        y[k * n + i] = kdl__report_real(t, row, keys[k]);
                if (kdl__report_bool(t, row, "recommended"))
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
                      ?: kdl__report_show(
                                 r, "layers_quality",
                                 "Cooper et al.'s knowledge quality Q = S + sqrt(I E) of every "
                                 "teacher layer along depth (MATH 4.4, the authors' code); "
                                 "vertical "
                                 "lines mark the recommended layers.");
out:
        free(marks);
        free(y);
        free(tics);
        free(order);
        return err;
}

int kdl__report_section_layers(struct kdl__report *r)
{
        const kdl_doc *d = r->layers;
        const struct kdl_ckpair *cp = kdl__report_last_pair(r, 0);
        char *text = kdl__asprintf(
                "Which teacher layers are worth distilling from, decided before training from "
                "the teacher alone: Cooper et al.'s knowledge quality on a class-balanced "
                "subsample, with linear CKA against the teacher's logits and the labels and "
                "class-geometry columns; at the teacher's checkpoint %s, the one the students "
                "are compared with. The top k = %zu of its %zu feature layers by Q are "
                "recommended: %s.",
                cp->partner->name, r->k, cp->partner->nlayers,
                r->o->k ? "as -k asked"
                        : "by default min(4, ceil(n/2)) of n layers, as kdlens layers does");
        int err;

        err = text ? kdl_site_section(r->site, "Teacher layers", text) : -ENOMEM;
        free(text);
        err = err ?: layers_figure(r, d);
        err = err
                      ?: kdl__report_show_table(r, d, "layers_recommended", "layers_recommended",
                                                "Recommended teacher layers, in depth order");
        err = err ?: kdl__report_show_table(r, d, "layers", "layers", "Teacher layers ranked by Q");
        err = err ?: kdl_site_json(r->site, d, "layers");
        return err;
}
