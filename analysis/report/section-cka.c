/* SPDX-License-Identifier: MIT */
/* "Teacher x student CKA": one heatmap per student checkpoint (kdlens cka). */
#include <stdlib.h>

#include "metrics/base/alloc.h"
#include "reports/plot.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

/* The teacher x student matrix of one run of kdl_run_cka() as heatmap @name. */
static int cka_heatmap(struct kdl__report *r, const kdl_doc *d, const char *name, size_t k,
                       const char *tck, const char *sck)
{
        const kdl_table *t = kdl_doc_find_table(d, "cka");
        const char **rows = NULL, **cols = NULL;
        double *m = NULL;
        char *caption = NULL;
        size_t nr, nc = 0, first = 3;
        int err = -ENOMEM;

        if (!t || (nr = kdl_table_rows(t)) == 0 || kdl_table_cols(t) <= first)
                return 0;
        nc = kdl_table_cols(t) - first;
        rows = kdl_new(const char *, nr);
        cols = kdl_new(const char *, nc);
        m = kdl_new(double, nr *nc);
        caption = kdl__asprintf("Linear CKA between the layers of the teacher at %s (rows) and "
                                "of %s at %s (columns), all samples (Kornblith et al. 2019; "
                                "docs/cka.md#linear-cka)",
                                tck, r->names[k], sck);
        if (!rows || !cols || !m || !caption)
                goto out;
        for (size_t j = 0; j < nc; j++)
                cols[j] = kdl_table_key(t, first + j);
        for (size_t i = 0; i < nr; i++) {
                rows[i] = kdl__report_str(t, i, "layer");
                for (size_t j = 0; j < nc; j++)
                        m[i * nc + j] = kdl__report_real(t, i, cols[j]);
        }
        {
                struct kdl_fig f = {.xlabel = "student layer", .ylabel = "teacher layer"};

                err = kdl_fig_heatmap(kdl_site_path(r->site), name, &f, m, nr, nc, rows, cols,
                                      nr * nc <= 144, 0.0, 1.0);
        }
        err = err ?: kdl__report_show(r, name, caption, "cka", k);
out:
        free(caption);
        free(m);
        free(cols);
        free(rows);
        return err;
}

int kdl__report_section_cka(struct kdl__report *r)
{
        char *text = kdl__asprintf("How similar each student's layers are to the teacher's: "
                                   "linear CKA over every sample, streamed in feature space, "
                                   "each student checkpoint against %s.",
                                   kdl__report_partner_text(r));
        size_t i = 0;
        int err;

        kdl__report_progress(r, "cka: figures");
        err = text ? kdl_site_section(r->site, "Teacher x student CKA", text) : -ENOMEM;
        free(text);
        for (size_t k = 0; k < r->in->nstudents && !err; k++) {
                for (size_t c = 0; c < r->nsel[k] && !err; c++, i++) {
                        const struct kdl_ckpair *cp = &r->sel[k][c];
                        /* Any checkpoint name a dump may hold makes a file name. */
                        char *slug = kdl_fig_slug(cp->main->name, KDL_FIG_NAME_MAX - 16);
                        char *file = slug ? kdl__asprintf("cka_s%zu_%s", k + 1, slug) : NULL;

                        err = file ? cka_heatmap(r, r->cka[i], file, k, cp->partner->name,
                                                 cp->main->name)
                                   : -ENOMEM;
                        err = err ?: kdl_site_json(r->site, r->cka[i], file);
                        free(file);
                        free(slug);
                }
        }
        return err;
}
