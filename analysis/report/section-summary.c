/* SPDX-License-Identifier: MIT */
/* "Summary": how good each model is, first in the report (kdlens summary), with a number
 * from each analysis beside it, every one linked to its section. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/kl.h"
#include "reports/site.h"
#include "analysis/dims-internal.h"
#include "analysis/summary-internal.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

/* The columns of the summary table at the top, and where each links. */
enum col { COL_ACC, COL_FID, COL_ECE, COL_CWECE, COL_KL, COL_SOURCE, COL_DIMS, COL_LAYERS, NCOL };

/* A table being written as HTML and Markdown at once. */
struct out {
        FILE *html, *md;
        char *anchor[NCOL]; /* without '#' */
};

/* @s as Markdown cell text ('|' escaped). */
static void md_text(FILE *fp, const char *s)
{
        for (; *s; s++)
                if (*s == '|')
                        fputs("\\|", fp);
                else
                        fputc(*s, fp);
}

/* Cell text @s linked to column @c's anchor (plain when @link is false or @s empty). */
static void cell(struct out *o, enum col c, const char *s, bool link)
{
        link = link && *s && strcmp(s, "-") != 0;
        /* Text columns left-aligned, the long ones (verdicts, layer lists) wrapped. */
        fputs(c >= COL_DIMS     ? "<td class=\"t w\">"
              : c == COL_SOURCE ? "<td class=\"t\">"
                                : "<td>",
              o->html);
        if (link)
                fprintf(o->html, "<a href=\"#%s\">", o->anchor[c]);
        kdl_site_html_text(o->html, s);
        fputs(link ? "</a></td>" : "</td>", o->html);
        fputs(" ", o->md);
        if (link)
                fputs("[", o->md);
        md_text(o->md, s);
        if (link)
                fprintf(o->md, "](#%s)", o->anchor[c]);
        fputs(" |", o->md);
}

/* A left-aligned text cell with no link. */
static void text_cell(struct out *o, const char *s)
{
        fputs("<td class=\"t\">", o->html);
        kdl_site_html_text(o->html, s);
        fputs("</td>", o->html);
        fputs(" ", o->md);
        md_text(o->md, s);
        fputs(" |", o->md);
}

/* Real @v as a cell of column @c: "-" when NaN. */
static void real_cell(struct out *o, enum col c, double v)
{
        char buf[32];

        snprintf(buf, sizeof(buf), isnan(v) ? "-" : "%.4f", v);
        cell(o, c, buf, true);
}

/* The best knowledge source of @path at @checkpoint and the report's tau: the largest
 * Pearson r with the exact KL, as "NAME (r = R)"; "-" when none. */
static char *best_source(const struct kdl__report *r, const char *path, const char *checkpoint)
{
        const kdl_table *t = kdl_doc_find_table(r->kl, "kl");
        static const char *const keys[] = {"student", "checkpoint"};
        const char *const want[] = {path, checkpoint};
        const char *best = NULL;
        double rbest = -INFINITY;

        for (int i = -1; t && (i = kdl_table_find_row(t, (size_t) (i + 1), 2, keys, want)) >= 0;) {
                const char *a = kdl__report_str(t, (size_t) i, "approximation");
                double p = kdl__report_real(t, (size_t) i, "pearson");

                if (!kdl__report_same_tau(kdl__report_real(t, (size_t) i, "tau"), r->tau) ||
                    strcmp(a, kdl_kl_name(KDL_KL_EXACT)) == 0 || isnan(p) || p <= rbest)
                        continue;
                best = a;
                rbest = p;
        }
        return best ? kdl__asprintf("%s (r = %.3f)", best, rbest) : kdl__strdup("-");
}

/* The dims verdict of student @d at @checkpoint; "-" when none. */
static const char *dims_verdict(const struct kdl__report *r, const kdl_dump *d,
                                const char *checkpoint)
{
        const kdl_table *v = kdl_doc_find_table(r->dims, "verdict");
        static const char *const keys[] = {"model", "checkpoint"};
        const char *const want[] = {kdl__dims_model_name(d), checkpoint};
        int i = v ? kdl_table_find_row(v, 0, 2, keys, want) : -1;

        return i < 0 ? "-" : kdl__report_str(v, (size_t) i, "verdict");
}

/* The teacher's recommended layers at @checkpoint, in depth order ("a, b"); "-" when none. */
static char *recommended_layers(const struct kdl__report *r, const char *checkpoint)
{
        const kdl_table *t = kdl_doc_find_table(r->layers, "layers_recommended");
        char *s = kdl__strdup("");

        for (size_t i = 0; s && t && i < kdl_table_rows(t); i++) {
                char *u;

                if (strcmp(kdl__report_str(t, i, "checkpoint"), checkpoint) != 0)
                        continue;
                u = kdl__asprintf("%s%s%s", s, *s ? ", " : "", kdl__report_str(t, i, "layer"));
                free(s);
                s = u;
        }
        if (s && !*s) {
                free(s);
                s = kdl__strdup("-");
        }
        return s;
}

/* The student of @path (the summary's "model"), SIZE_MAX when none. */
static size_t student_of(const struct kdl__report *r, const char *path)
{
        for (size_t k = 0; k < r->in->nstudents; k++)
                if (strcmp(kdl_h5_dump(r->in->students[k])->path, path) == 0)
                        return k;
        return SIZE_MAX;
}

/* Row @i of the summary table @t. */
static int summary_row(const struct kdl__report *r, struct out *o, const kdl_table *t, size_t i)
{
        const char *path = kdl__report_str(t, i, "model"),
                   *ck = kdl__report_str(t, i, "checkpoint");
        bool teacher = strcmp(kdl__report_str(t, i, "role"), "teacher") == 0;
        size_t k = teacher ? SIZE_MAX : student_of(r, path);
        const char *lck = kdl__report_last_pair(r, 0)->partner->name;
        char *source = teacher ? kdl__strdup("-") : best_source(r, path, ck);
        char *layers =
                teacher && strcmp(ck, lck) == 0 ? recommended_layers(r, ck) : kdl__strdup("-");

        if (!source || !layers) {
                free(source);
                free(layers);
                return -ENOMEM;
        }
        fputs("<tr>", o->html);
        fputs("|", o->md);
        text_cell(o, teacher ? "teacher" : k == SIZE_MAX ? path : r->names[k]);
        text_cell(o, ck);
        real_cell(o, COL_ACC, kdl__report_real(t, i, "accuracy"));
        real_cell(o, COL_FID, kdl__report_real(t, i, "fidelity"));
        real_cell(o, COL_ECE, kdl__report_real(t, i, "ece"));
        real_cell(o, COL_CWECE, kdl__report_real(t, i, "classwise_ece"));
        real_cell(o, COL_KL, kdl__report_real(t, i, "kl"));
        cell(o, COL_SOURCE, source, true);
        cell(o, COL_DIMS,
             k == SIZE_MAX ? "-" : dims_verdict(r, kdl_h5_dump(r->in->students[k]), ck), true);
        cell(o, COL_LAYERS, layers, true);
        fputs("</tr>\n", o->html);
        fputs("\n", o->md);
        free(source);
        free(layers);
        return 0;
}

/* The header of the table at the top. */
static void summary_head(const struct kdl__report *r, struct out *o)
{
        static const char *const head[] = {"model",    "checkpoint", "accuracy",
                                           "fidelity", "ECE",        "classwise ECE"};
        char kl[64];
        const char *rest[] = {kl, "best source (Pearson r)", "dims verdict",
                              "recommended teacher layers"};

        snprintf(kl, sizeof(kl), "τ²KL at τ = %g", r->tau);
        fputs("<table class=\"summary\">\n<tr>", o->html);
        fputs("|", o->md);
        for (size_t c = 0; c < sizeof(head) / sizeof(head[0]); c++) {
                fprintf(o->html, "<th%s>%s</th>", c < 2 ? " class=\"t\"" : "", head[c]);
                fprintf(o->md, " %s |", head[c]);
        }
        for (size_t c = 0; c < sizeof(rest) / sizeof(rest[0]); c++) {
                fprintf(o->html, "<th%s>%s</th>", c ? " class=\"t\"" : "", rest[c]);
                fprintf(o->md, " %s |", rest[c]);
        }
        fputs("</tr>\n", o->html);
        fputs("\n|:--|:--|", o->md);
        for (size_t c = 0; c < NCOL; c++)
                fputs(c >= COL_SOURCE ? ":--|" : "--:|", o->md);
        fputs("\n", o->md);
}

/* Each column's anchor: the summary's own table for its numbers, each analysis's section
 * for its own. */
static int anchors(struct out *o)
{
        o->anchor[COL_ACC] = kdl__strdup("tab-summary");
        for (size_t c = COL_FID; c <= COL_CWECE; c++)
                o->anchor[c] = kdl__strdup("tab-summary");
        o->anchor[COL_KL] = kdl_site_anchor(KDL_SITE_SECTION_ANCHOR, KDL__REPORT_TITLE_KL);
        o->anchor[COL_SOURCE] = kdl__strdup("fig-kl_sources");
        o->anchor[COL_DIMS] = kdl_site_anchor(KDL_SITE_SECTION_ANCHOR, KDL__REPORT_TITLE_DIMS);
        o->anchor[COL_LAYERS] = kdl_site_anchor(KDL_SITE_SECTION_ANCHOR, KDL__REPORT_TITLE_LAYERS);
        for (size_t c = 0; c < NCOL; c++)
                if (!o->anchor[c])
                        return -ENOMEM;
        return 0;
}

/* The table at the top, every row of "summary" (@t) with the other analyses' numbers. */
static int summary_table(struct kdl__report *r, const kdl_table *t)
{
        char *html = NULL, *md = NULL;
        size_t nh = 0, nm = 0;
        struct out o = {.html = open_memstream(&html, &nh), .md = open_memstream(&md, &nm)};
        int err = o.html && o.md ? anchors(&o) : -ENOMEM;

        if (!err)
                summary_head(r, &o);
        for (size_t i = 0; !err && i < kdl_table_rows(t); i++)
                err = summary_row(r, &o, t, i);
        if (o.html) {
                fputs("</table>\n", o.html);
                err = fclose(o.html) != 0 && !err ? -ENOMEM : err;
        }
        if (o.md)
                err = fclose(o.md) != 0 && !err ? -ENOMEM : err;
        err = err ?: kdl_site_raw(r->site, html, md);
        for (size_t c = 0; c < NCOL; c++)
                free(o.anchor[c]);
        free(html);
        free(md);
        return err;
}

/* The command that reproduces the summary's numbers. */
static char *summary_command(const struct kdl__report *r)
{
        const char *tc = r->o->common.teacher_checkpoint;
        char *cmd = kdl__asprintf("kdlens summary -t %s", r->o->teacher);

        for (size_t k = 0; cmd && k < r->o->nstudents; k++) {
                char *u = kdl__asprintf("%s -s %s", cmd, r->o->students[k]);

                free(cmd);
                cmd = u;
        }
        if (cmd) {
                char *u =
                        kdl__asprintf("%s --checkpoint %s%s%s -T %g", cmd, r->o->common.checkpoint,
                                      tc ? " --teacher-checkpoint " : "", tc ? tc : "", r->tau);

                free(cmd);
                cmd = u;
        }
        return cmd;
}

/* A student checkpoint analysed is compared with the teacher's @ck. */
static bool compared(const struct kdl__report *r, const kdl_checkpoint *ck)
{
        for (size_t k = 0; k < r->in->nstudents; k++)
                for (size_t c = 0; c < r->nsel[k]; c++)
                        if (r->sel[k][c].partner == ck)
                                return true;
        return false;
}

int kdl__report_summary_teacher_job(struct kdl__report *r, struct kdl__summary_run *s,
                                    const kdl_checkpoint *ck, kdl__job *ret, size_t *ret_k)
{
        const kdl_pair *pair = NULL;
        size_t n = 0;
        int err;

        *ret_k = SIZE_MAX;
        if (!compared(r, ck))
                return 0;
        err = kdl__summary_teacher_job(s, ck, ret, &n, &pair);
        if (err < 0)
                return err;
        for (size_t k = 0; pair && k < r->in->nstudents; k++)
                if (r->in->pairs[k] == pair)
                        *ret_k = k;
        return 1;
}

int kdl__report_section_summary(struct kdl__report *r)
{
        const kdl_table *t = kdl_doc_find_table(r->summary, "summary");
        char *cmd = summary_command(r);
        char *text = kdl__asprintf(
                "How good each model is, per student and checkpoint (each compared with %s), "
                "beside a number from each analysis: top-1 accuracy against the labels; "
                "fidelity, the top-1 agreement with the teacher; the expected calibration error "
                "of the top class and its classwise variant (15 equal-width confidence bins); "
                "the mean exact KD criterion tau^2 KL(p_t || p_s) at tau = %g; the knowledge "
                "source that tracks it best (largest Pearson r over samples); the dims verdict; "
                "and the teacher layers recommended at its checkpoint %s. Each number links to "
                "its section (docs/summary.md).",
                kdl__report_partner_text(r), r->tau, kdl__report_last_pair(r, 0)->partner->name);
        char *cap =
                cmd ? kdl__asprintf("Accuracy, fidelity, calibration and KL of every model "
                                    "and checkpoint, with the samples and NLL; data/summary.json "
                                    "and tables/summary.csv; reproduced by: %s",
                                    cmd)
                    : NULL;
        int err = text && cap ? 0 : -ENOMEM;

        err = err ?: kdl_site_section(r->site, KDL__REPORT_TITLE_SUMMARY, text);
        err = err ?: (t && kdl_table_rows(t) ? summary_table(r, t) : 0);
        err = err ?: kdl_site_contents(r->site);
        err = err ?: kdl__report_show_table(r, r->summary, "summary", "summary", cap);
        err = err ?: kdl_site_json(r->site, r->summary, "summary");
        free(cap);
        free(text);
        free(cmd);
        return err;
}
