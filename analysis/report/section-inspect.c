/* SPDX-License-Identifier: MIT */
/* The report's "Inputs" section: the dumps, as kdlens inspect describes them. */
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

int kdl__report_section_inspect(struct kdl__report *r)
{
        const kdl_doc *d = r->inspect;
        int err;

        err = kdl_site_section(r->site, "Inputs",
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
        return err;
}
