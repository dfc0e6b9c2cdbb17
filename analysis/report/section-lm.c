/* SPDX-License-Identifier: MIT */
/* "Sparse teacher targets": for language-model dumps, how well each sparse knowledge source
 * (kdlens kl --topk: the teacher's top-k logits, sampled tokens, the hard label) tracks the
 * exact KD criterion, per k. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/budget.h"
#include "analysis/dist.h"
#include "analysis/kl-internal.h"
#include "analysis/kl-topk.h"
#include "reports/plot.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

#define TITLE "Sparse teacher targets"

/* The k of the section when the teacher is a language model and --topk is not given. */
static const size_t default_k[] = {1, 8, 32, 128};

/* The approximations of table kl_topk, the figure's series, "hard" last. */
static const char *const series_names[] = {"topk_renorm", "topk_tail", "sampled", "hard"};
#define NSERIES (sizeof(series_names) / sizeof(series_names[0]))

/* The classes of the teacher's last checkpoint with dense logits; 0 when none has them. */
static size_t teacher_classes(const kdl_dump *td)
{
        for (size_t c = td->ncheckpoints; c-- > 0;)
                if (td->checkpoints[c].logits)
                        return td->checkpoints[c].logits->shape[1];
        return 0;
}

/* The teacher dump is a language model's: it has /sequence_ids or sparse logits. */
static bool teacher_is_lm(const kdl_dump *td)
{
        if (td->sequence_ids)
                return true;
        for (size_t c = 0; c < td->ncheckpoints; c++)
                if (td->checkpoints[c].topk_indices)
                        return true;
        return false;
}

int kdl__report_topk_init(struct kdl__report *r)
{
        const kdl_dump *td = kdl_h5_dump(r->in->teacher);
        size_t c = teacher_classes(td), n = 0;
        int len = 0;

        if (r->o->ntopk) {
                memcpy(r->topk_k, r->o->topk, r->o->ntopk * sizeof(*r->topk_k));
                n = r->o->ntopk;
        } else if (c && teacher_is_lm(td)) {
                for (size_t i = 0; i < sizeof(default_k) / sizeof(*default_k); i++) {
                        size_t k = default_k[i] < c ? default_k[i] : c;

                        if (n == 0 || r->topk_k[n - 1] != k)
                                r->topk_k[n++] = k;
                }
                r->topk_default = true;
        }
        for (size_t i = 0; i < n && len >= 0 && (size_t) len < sizeof(r->topk_list); i++)
                len += snprintf(r->topk_list + len, sizeof(r->topk_list) - (size_t) len, "%s%zu",
                                i ? "," : "", r->topk_k[i]);
        r->ntopk = n;
        r->total += n ? 2 : 0; /* the run and the section */
        return 0;
}

/* The options of the kl --topk run: kdlens kl's defaults with the report's common ones. */
static void topk_opts(const struct kdl__report *r, struct kdl_run_kl_opts *o)
{
        kdl_run_kl_opts_init(o);
        o->common = r->o->common;
}

int kdl__report_topk_need(struct kdl__report *r, kdl__need *ret)
{
        struct kdl_run_kl_opts o;
        kdl__need kl = {.analysis = "kl --topk"}, nd = {.analysis = ret->analysis};
        int err;

        if (!r->ntopk)
                return 0;
        topk_opts(r, &o);
        /* kl's job and the top-k job's state (kdl_kl_topk_bytes()), as kdlens kl --topk plans. */
        err = kdl__kl_need(r->in, &o, &(struct kdl__kl_topk_ask){.k = r->topk_k, .nk = r->ntopk},
                           &kl);
        err = err ?: kdl__need_merge(&nd, &kl);
        if (!err)
                kdl__need_max(ret, &nd);
        kdl__need_release(&nd);
        kdl__need_release(&kl);
        return err;
}

int kdl__report_topk_compute(struct kdl__report *r)
{
        struct kdl_run_kl_opts o;
        int err;

        if (!r->ntopk)
                return 0;
        kdl__report_progress(r, "kl --topk: sparse teacher targets");
        topk_opts(r, &o);
        err = kdl_doc_new("kl_topk", &r->topk);
        return err ?: kdl_run_kl_topk(r->in, &o, r->topk_k, r->ntopk, r->topk);
}

/* Column @key of the row of @approximation and @k for student @path at @checkpoint and the
 * report's tau; NaN when there is none. */
static double topk_value(const struct kdl__report *r, const kdl_table *t, const char *path,
                         const char *checkpoint, const char *approximation, size_t k,
                         const char *key)
{
        static const char *const keys[] = {"student", "checkpoint", "approximation"};
        const char *const want[] = {path, checkpoint, approximation};

        for (int i = -1; (i = kdl_table_find_row(t, (size_t) (i + 1), 3, keys, want)) >= 0;)
                if (kdl__report_same_tau(kdl__report_real(t, i, "tau"), r->tau) &&
                    fabs(kdl__report_real(t, i, "k") - (double) k) < 0.5)
                        return kdl__report_real(t, i, key);
        return NAN;
}

/* Student @k at its last checkpoint analysed: Pearson r with the exact KL against k, one line
 * per approximation (hard, which has no k, drawn flat at its value). */
static int topk_figure(struct kdl__report *r, const kdl_table *t, size_t k)
{
        const char *path = kdl_h5_dump(r->in->students[k])->path;
        const char *ck = kdl__report_last_pair(r, k)->main->name;
        size_t n = r->ntopk;
        double *y = kdl_new(double, NSERIES *n);
        char *labels = kdl_new(char, 24 * n);
        const char **ticks = kdl_new(const char *, n);
        char *name = kdl__asprintf("kl_topk_s%zu", k + 1), *cap = NULL;
        struct kdl_series s[NSERIES];
        struct kdl_fig f = {.xlabel = "k (teacher logits kept per token)",
                            .ylabel = "Pearson r with the exact KL"};
        int err = y && labels && ticks && name ? 0 : -ENOMEM;

        for (size_t i = 0; i < n && !err; i++) {
                double hard = topk_value(r, t, path, ck, "hard", 1, "pearson");

                /* the k evenly spaced, as ticks: a log axis would run on to the next power
                 * of 10 */
                snprintf(labels + 24 * i, 24, "%zu", r->topk_k[i]);
                ticks[i] = labels + 24 * i;
                for (size_t a = 0; a + 1 < NSERIES; a++)
                        y[a * n + i] = topk_value(r, t, path, ck, series_names[a], r->topk_k[i],
                                                  "pearson");
                y[(NSERIES - 1) * n + i] = hard;
        }
        for (size_t a = 0; a < NSERIES; a++)
                s[a] = (struct kdl_series){series_names[a], y + a * n, NULL};
        if (!err)
                cap = kdl__asprintf(
                        "How closely each sparse teacher target tracks the exact KD criterion "
                        "tau^2 KL(p_t || p_s) at tau = %g, token by token: Pearson r over the "
                        "tokens against k, the teacher's logits kept per token, for %s at %s "
                        "(hard, the teacher's argmax alone, has no k and is drawn flat). k = %s: "
                        "%s",
                        r->tau, r->names[k], ck, r->topk_list,
                        r->topk_default ? "the default 1, 8, 32, 128 capped at the teacher's "
                                          "classes (report --topk LIST chooses them)"
                                        : "as report --topk gave them");
        err = err ?: cap ? 0 : -ENOMEM;
        err = err ?: kdl_fig_lines(kdl_site_path(r->site), name, &f, NULL, ticks, n, s, NSERIES);
        err = err ?: kdl__report_show(r, name, cap, "kl_topk", k);
        free(cap);
        free(name);
        free(ticks);
        free(labels);
        free(y);
        return err;
}

int kdl__report_section_topk(struct kdl__report *r)
{
        const kdl_table *t;
        char *text;
        int err;

        if (!r->topk)
                return 0;
        t = kdl_doc_find_table(r->topk, "kl_topk");
        kdl__report_progress(r, "kl --topk: figures");
        text = kdl__asprintf(
                "Language-model distillation keeps a sparse target per token instead of the "
                "teacher's whole distribution over the vocabulary. How well each one tracks the "
                "exact KD criterion tau^2 KL(p_t || p_s) of the dense teacher (docs/lm.md): "
                "the teacher's top-k logits renormalised (topk_renorm), the top k plus one "
                "bucket for the tail mass (topk_tail), k tokens sampled from the teacher "
                "(sampled, unbiased) and the hard label (hard), for k = %s, each student "
                "compared with %s.",
                r->topk_list, kdl__report_partner_text(r));
        err = text ? kdl_site_section(r->site, TITLE, text) : -ENOMEM;
        free(text);
        for (size_t k = 0; k < r->in->nstudents && t && !err; k++)
                err = topk_figure(r, t, k);
        err = err
                      ?: kdl__report_show_table(r, r->topk, "kl_topk", "kl_topk",
                                                "Sparse teacher targets against the exact KL: "
                                                "mean, ratio, Pearson, Spearman, relative error");
        return err ?: kdl_site_json(r->site, r->topk, "kl_topk");
}
