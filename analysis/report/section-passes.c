/* SPDX-License-Identifier: MIT */
/* "How the dumps were read": the passes of the streams report.c shares among analyses. */
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

int kdl__report_section_passes(struct kdl__report *r)
{
        int err;

        err = kdl_site_section(r->site, "How the dumps were read",
                               "Each student checkpoint was read on one stream shared by the "
                               "kl, split, dims, CKA and summary analyses: every dataset once "
                               "per pass, "
                               "and a second pass only for the analyses that need one (split's "
                               "instance weights w_n; kl's projector when the head widths "
                               "differ), reading only their datasets.");
        err = err
                      ?: kdl__report_show_table(
                                 r, r->passes, "passes", "passes",
                                 "Passes over each dump and the values read (after the spatial "
                                 "rule), per checkpoint");
        err = err ?: kdl_site_json(r->site, r->passes, "passes");
        return err;
}
