/* SPDX-License-Identifier: MIT */
/* "Teacher layers": which teacher layers are worth distilling from (kdlens layers), when Q
 * is in its design range. */
#include <stdlib.h>

#include "metrics/base/alloc.h"
#include "metrics/quality.h"
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

/*
 * Q, S, I and E of every teacher layer along depth, the recommended ones marked; when
 * @nout layers are outside Q's design range, the top of the range of I and E (1) too.
 */
static int layers_figure(struct kdl__report *r, const kdl_doc *d, size_t nout)
{
        static const char *const keys[4] = {"q", "s", "i", "e"};
        static const char *const names[5] = {"Q = S + sqrt(I E)", "S (separation)",
                                             "I (information)", "E (efficiency)",
                                             "1: top of the design range of I and E"};
        const kdl_table *t = kdl_doc_find_table(d, "layers");
        struct depth_row *order = NULL;
        const char **tics = NULL;
        double *y = NULL, *marks = NULL;
        struct kdl_series s[5];
        size_t n, nm = 0, ns = nout ? 5 : 4;
        int err = -ENOMEM;

        if (!t || (n = kdl_table_rows(t)) == 0)
                return 0;
        order = kdl_new(struct depth_row, n);
        tics = kdl_new(const char *, n);
        y = kdl_new(double, 5 * n);
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
                y[4 * n + i] = 1.0;
                if (kdl__report_bool(t, row, "recommended"))
                        marks[nm++] = (double) i;
        }
        for (size_t k = 0; k < ns; k++)
                s[k] = (struct kdl_series){.name = names[k], .y = y + k * n};
        {
                struct kdl_fig f = {.xlabel = "teacher layer (by depth)",
                                    .ylabel = "Q and its parts",
                                    .nmarks = nm,
                                    .marks = marks};

                err = kdl_fig_lines(kdl_site_path(r->site), "layers_quality", &f, NULL, tics, n, s,
                                    ns);
        }
        err = err
                      ?: kdl__report_show(
                                 r, "layers_quality",
                                 nout ? "Cooper et al.'s knowledge quality Q = S + sqrt(I E) of "
                                        "every teacher layer along depth (the authors' code); "
                                        "vertical lines mark the top of the ranking. Layers "
                                        "outside Q's design range (I or E above the line at 1, or "
                                        "too few samples per class; see range_note) make the "
                                        "ranking unreliable."
                                      : "Cooper et al.'s knowledge quality Q = S + sqrt(I E) of "
                                        "every teacher layer along depth "
                                        "(docs/layers.md#knowledge-quality, the authors' "
                                        "code); "
                                        "vertical "
                                        "lines mark the recommended layers.",
                                 "layers", SIZE_MAX);
out:
        free(marks);
        free(y);
        free(tics);
        free(order);
        return err;
}

/* Rows of "layers" (@t) outside Q's design range (in_range false). */
static size_t out_of_range(const kdl_table *t)
{
        size_t n = 0;

        for (size_t i = 0; t && i < kdl_table_rows(t); i++)
                n += !kdl__report_bool(t, i, "in_range");
        return n;
}

int kdl__report_section_layers(struct kdl__report *r)
{
        const kdl_doc *d = r->layers;
        const struct kdl_ckpair *cp = kdl__report_last_pair(r, 0);
        const kdl_table *t = kdl_doc_find_table(d, "layers");
        size_t nout = out_of_range(t);
        const char *how =
                r->o->k ? "as -k asked"
                        : "by default min(4, ceil(n/2)) of n layers, as kdlens layers does";
        char *text = NULL;
        int err;

        if (cp->partner->nlayers == 0)
                text = kdl__asprintf(
                        "Which teacher layers are worth distilling from: the teacher's dump has "
                        "no feature layers at its checkpoint %s (only logits), so no layer is "
                        "ranked.",
                        cp->partner->name);
        else if (nout == 0)
                text = kdl__asprintf(
                        "Which teacher layers are worth distilling from, decided before training "
                        "from the teacher alone: Cooper et al.'s knowledge quality on a "
                        "class-balanced subsample, with linear CKA against the teacher's logits "
                        "and the labels and class-geometry columns; at the teacher's checkpoint "
                        "%s, the one the students are compared with. The top k = %zu of its %zu "
                        "feature layers by Q are recommended: %s.",
                        cp->partner->name, r->k, cp->partner->nlayers, how);
        else
                text = kdl__asprintf(
                        "Cooper et al.'s knowledge quality of each teacher layer on a "
                        "class-balanced subsample, with linear CKA against the teacher's logits "
                        "and the labels and class-geometry columns; at the teacher's checkpoint "
                        "%s, the one the students are compared with. The top k = %zu of its %zu "
                        "feature layers by Q are recommended (%s), but Q is outside its design "
                        "range for %zu of %zu layer rows (I or E outside [0, 1], or fewer than %d "
                        "samples per class; column range_note says which): the ranking below is "
                        "not a reliable guide to which layers are worth distilling from.",
                        cp->partner->name, r->k, cp->partner->nlayers, how, nout, kdl_table_rows(t),
                        KDL_QUALITY_MIN_PER_CLASS);
        if (!text)
                return -ENOMEM;
        err = kdl_site_section(r->site, KDL__REPORT_TITLE_LAYERS, text);
        free(text);
        err = err ?: layers_figure(r, d, nout);
        err = err
                      ?: kdl__report_show_table(r, d, "layers_recommended", "layers_recommended",
                                                "Recommended teacher layers, in depth order");
        err = err ?: kdl__report_show_table(r, d, "layers", "layers", "Teacher layers ranked by Q");
        err = err ?: kdl_site_json(r->site, d, "layers");
        return err;
}
