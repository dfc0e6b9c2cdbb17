/* SPDX-License-Identifier: MIT */
#include <stdlib.h>

#include "metrics/base/alloc.h"
#include "analysis/inspect.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

int kdl__report_section_inspect(struct kdl__report *r)
{
        struct kdl_inspect_opts io = {.scan_values = false};
        const char **paths = kdl_new(const char *, r->in->nstudents + 1);
        kdl_doc *d = NULL;
        size_t nprob = 0;
        int err;

        if (!paths)
                return -ENOMEM;
        kdl__report_progress(r, "inputs");
        paths[0] = kdl_h5_dump(r->in->teacher)->path;
        for (size_t k = 0; k < r->in->nstudents; k++)
                paths[k + 1] = kdl_h5_dump(r->in->students[k])->path;
        err = kdl_doc_new("inspect", &d);
        err = err ?: kdl_inspect(paths, r->in->nstudents + 1, &io, d, &nprob);
        err = err
                      ?: kdl_site_section(
                                 r->site, "Inputs",
                                 "The dumps analysed: models, samples, classes, checkpoints "
                                 "and the knowledge sources each checkpoint holds.");
        err = err ?: kdl__report_show_table(r, d, "files", "inputs_files", "Dumps");
        err = err
                      ?: kdl__report_show_table(r, d, "checkpoints", "inputs_checkpoints",
                                                "Checkpoints and knowledge sources");
        err = err
                      ?: kdl__report_show_table(r, d, "alignment", "inputs_alignment",
                                                "Teacher/student alignment");
        err = err ?: kdl_site_json(r->site, d, "inspect");
        kdl_doc_free(d);
        free(paths);
        return err;
}
