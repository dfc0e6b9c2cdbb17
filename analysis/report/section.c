/* SPDX-License-Identifier: MIT */
/* What every section of the report uses: reading the analyses' tables,
 * showing figures and tables. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"

#include "reports/plot.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

/* ---- reading the analyses' tables ----------------------------------------- */

/* Cell @key of row @i; NULL when @t has no column @key. */
static const kdl_cell *cell_at(const kdl_table *t, size_t i, const char *key)
{
        int j = kdl_table_find(t, key);

        return j < 0 ? NULL : kdl_table_cell(t, i, (size_t) j);
}

double kdl__report_real(const kdl_table *t, size_t i, const char *key)
{
        const kdl_cell *c = cell_at(t, i, key);

        if (c && c->type == KDL_CELL_REAL)
                return c->v.r;
        if (c && c->type == KDL_CELL_INT)
                return (double) c->v.i;
        return NAN;
}

const char *kdl__report_str(const kdl_table *t, size_t i, const char *key)
{
        const kdl_cell *c = cell_at(t, i, key);

        return c && c->type == KDL_CELL_STR ? c->v.s : "";
}

bool kdl__report_bool(const kdl_table *t, size_t i, const char *key)
{
        const kdl_cell *c = cell_at(t, i, key);

        return c && c->type == KDL_CELL_BOOL && c->v.b;
}

bool kdl__report_same_tau(double a, double b)
{
        return fabs(a - b) <= 1e-12 * fabs(b);
}

/* A student's name in crowded figure labels: without the prefix all share. */
const char *kdl__report_short_name(const struct kdl__report *r, size_t k)
{
        return r->names[k] + r->prefix;
}

const struct kdl_ckpair *kdl__report_last_pair(const struct kdl__report *r, size_t k)
{
        return &r->sel[k][r->nsel[k] - 1];
}

const char *kdl__report_partner_text(const struct kdl__report *r)
{
        const char *tc = r->o->common.teacher_checkpoint;

        if (!tc)
                return "the teacher's last checkpoint";
        if (strcmp(tc, "same") == 0)
                return "the teacher's checkpoint of the same name (else its last)";
        return r->partner_text;
}

/* @cmd, then " @flag @value"; @cmd freed (NULL stays NULL, on ENOMEM too). */
static char *append(char *cmd, const char *flag, const char *value)
{
        char *u = cmd ? kdl__asprintf("%s %s %s", cmd, flag, value) : NULL;

        free(cmd);
        return u;
}

/* kdlens cka of student @k with the report's --measure and --svcca-keep. */
static char *measures_command(const struct kdl__report *r, size_t k)
{
        char *cmd = kdl__asprintf("kdlens cka %s %s --measure", r->o->teacher, r->o->students[k]);
        char num[32];

        for (int m = 0, n = 0; m < KDL_RUN_CKA_MEASURE_COUNT_ && cmd; m++)
                if (r->o->measures & 1u << m) {
                        char *u = kdl__asprintf("%s%s%s", cmd, n++ ? "," : " ",
                                                kdl_run_cka_measure_name(m));

                        free(cmd);
                        cmd = u;
                }
        snprintf(num, sizeof(num), "%g", r->o->svcca_keep);
        return r->o->measures & 1u << KDL_RUN_CKA_MEASURE_SVCCA ? append(cmd, "--svcca-keep", num)
                                                                : cmd;
}

char *kdl__report_command(const struct kdl__report *r, const char *verb, size_t k)
{
        const char *tc = r->o->common.teacher_checkpoint;
        bool topk = strcmp(verb, "kl_topk") == 0; /* kl --topk with the section's k */
        char *cmd, num[32];

        if (strcmp(verb, "cka") == 0)
                return kdl__asprintf("kdlens cka %s %s", r->o->teacher, r->o->students[k]);
        if (strcmp(verb, "measures") == 0)
                return measures_command(r, k);
        if (strcmp(verb, "layers") == 0) {
                const kdl_checkpoint *ck = kdl__report_last_pair(r, 0)->partner;

                snprintf(num, sizeof(num), "%zu", r->k);
                cmd = kdl__asprintf("kdlens layers -t %s", r->o->teacher);
                if (ck)
                        cmd = append(cmd, "--checkpoint", ck->name);
                return append(cmd, "-k", num);
        }
        cmd = kdl__asprintf("kdlens %s -t %s", topk ? "kl" : verb, r->o->teacher);
        for (size_t s = 0; s < r->o->nstudents; s++)
                if (k == SIZE_MAX || s == k)
                        cmd = append(cmd, "-s", r->o->students[s]);
        if (r->o->common.checkpoint)
                cmd = append(cmd, "--checkpoint", r->o->common.checkpoint);
        if (tc)
                cmd = append(cmd, "--teacher-checkpoint", tc);
        snprintf(num, sizeof(num), "%g", r->tau);
        cmd = append(cmd, "-T", num);
        return topk ? append(cmd, "--topk", r->topk_list) : cmd;
}

/* Render figure @name in every format and show it with @caption and where its data comes
 * from. */
int kdl__report_show(struct kdl__report *r, const char *name, const char *caption, const char *verb,
                     size_t k)
{
        size_t n = strlen(caption);
        char *cmd = kdl__report_command(r, verb, k);
        char *cap = cmd ? kdl__asprintf("%s%s Plotted data: data/%s.dat, computed by: %s", caption,
                                        n && caption[n - 1] == '.' ? "" : ".", name, cmd)
                        : NULL;
        int err = cap ? kdl_fig_render(kdl_site_path(r->site), name, r->o->gnuplot, KDL_FIG_ALL)
                      : -ENOMEM;

        err = err ?: kdl_site_figure(r->site, name, cap);
        free(cap);
        free(cmd);
        return err;
}

/* Table @table of @d, when it has rows, as a table of the report written to tables/@file. */
int kdl__report_show_table(struct kdl__report *r, const kdl_doc *d, const char *table,
                           const char *file, const char *caption)
{
        const kdl_table *t = kdl_doc_find_table(d, table);

        if (!t || kdl_table_rows(t) == 0)
                return 0;
        return kdl_site_table(r->site, t, file, caption);
}
