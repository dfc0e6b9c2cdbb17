/* SPDX-License-Identifier: MIT */
/* "Teacher x student CKA": one heatmap per student checkpoint (kdlens cka). */
#include <stdlib.h>

#include "metrics/base/alloc.h"
#include "reports/plot.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

/* The teacher x student matrix of one run of kdl_run_cka() as a heatmap. */
static int cka_heatmap(struct kdl__report *r, const kdl_doc *d, size_t k, const char *tck,
                       const char *sck)
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
                rows[i] = kdl__report_str(t, i, "layer");
                for (size_t j = 0; j < nc; j++)
                        m[i * nc + j] = kdl__report_real(t, i, cols[j]);
        }
        {
                struct kdl_fig f = {.xlabel = "student layer", .ylabel = "teacher layer"};

                err = kdl_fig_heatmap(kdl_site_path(r->site), name, &f, m, nr, nc, rows, cols,
                                      nr * nc <= 144, 0.0, 1.0);
        }
        err = err ?: kdl__report_show(r, name, caption);
out:
        free(caption);
        free(name);
        free(m);
        free(cols);
        free(rows);
        return err;
}

int kdl__report_section_cka(struct kdl__report *r)
{
        const char *tck = kdl__report_last_checkpoint(r->in->teacher);
        size_t i = 0;
        int err;

        kdl__report_progress(r, "cka: figures");
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
