/* SPDX-License-Identifier: MIT */
/* "Knowledge sources": how well each source approximates the KD criterion (kdlens kl). */
#include <math.h>
#include <stdlib.h>

#include "metrics/base/alloc.h"
#include "metrics/kl.h"
#include "reports/plot.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

/* The exact KL and its approximations, in the metric's order (exact first). */
#define NKL ((size_t) KDL_KL_VALUE_COUNT_)

/* Value @key of approximation @a for student @path at @checkpoint and the report's tau. */
static double kl_value(const struct kdl__report *r, const kdl_table *t, const char *path,
                       const char *checkpoint, enum kdl_kl_value a, const char *key)
{
        static const char *const keys[] = {"student", "checkpoint", "approximation"};
        const char *const want[] = {path, checkpoint, kdl_kl_name(a)};

        for (int i = -1; (i = kdl_table_find_row(t, (size_t) (i + 1), 3, keys, want)) >= 0;)
                if (kdl__report_same_tau(kdl__report_real(t, i, "tau"), r->tau))
                        return kdl__report_real(t, i, key);
        return NAN;
}

/* Fidelity: how closely each source tracks the exact per-sample KL, per student. */
static int kl_sources_figure(struct kdl__report *r, const kdl_table *t, const char *const *names)
{
        size_t ns = r->in->nstudents;
        double *y = kdl_new(double, ns *NKL);
        struct kdl_series *s = kdl_new(struct kdl_series, ns ? ns : 1);
        struct kdl_fig f = {.ylabel = "Pearson r with the exact KL", .ymax = 1.0};
        int err = y && s ? 0 : -ENOMEM;

        for (size_t k = 0; k < ns && !err; k++) {
                const char *path = kdl_h5_dump(r->in->students[k])->path;
                const char *ck = kdl__report_last_pair(r, k)->main->name;

                for (size_t a = 1; a < NKL; a++)
                        y[k * NKL + a - 1] =
                                kl_value(r, t, path, ck, (enum kdl_kl_value) a, "pearson");
                s[k] = (struct kdl_series){r->names[k], y + k * NKL};
        }
        err = err
                      ?: kdl_fig_bars(kdl_site_path(r->site), "kl_sources", &f, names + 1, NKL - 1,
                                      s, ns, false);
        err = err
                      ?: kdl__report_show(r, "kl_sources",
                                          "How well each knowledge source tracks the KD criterion "
                                          "tau^2 KL(p_t || p_s) at each student's last "
                                          "checkpoint analysed: correlation over samples "
                                          "(1 = a perfect proxy; missing bars: source "
                                          "unavailable in the dumps)");
        free(s);
        free(y);
        return err;
}

/* Over student @k's training: the mean of every source, one line each. */
static int kl_curves_figure(struct kdl__report *r, const kdl_table *t, size_t k,
                            const char *const *names)
{
        const kdl_dump *dd = kdl_h5_dump(r->in->students[k]);
        size_t nck = r->nsel[k];
        double *v = kdl_new(double, NKL *nck);
        const char **ticks = kdl_new(const char *, nck);
        char *name = kdl__asprintf("kl_curves_s%zu", k + 1);
        char *cap = kdl__asprintf("Each knowledge source's estimate of the KD criterion over %s's "
                                  "training (tau = %g), beside the exact KL",
                                  r->names[k], r->tau);
        struct kdl_series s[NKL];
        struct kdl_fig f = {
                .xlabel = "student checkpoint", .ylabel = "mean per sample (nats)", .logy = true};
        int err = v && ticks && name && cap ? 0 : -ENOMEM;

        for (size_t c = 0; c < nck && !err; c++) {
                ticks[c] = r->sel[k][c].main->name;
                for (size_t a = 0; a < NKL; a++) {
                        double m =
                                kl_value(r, t, dd->path, ticks[c], (enum kdl_kl_value) a, "mean");

                        v[a * nck + c] = m > 0.0 ? m : (double) NAN;
                }
        }
        for (size_t a = 0; a < NKL && !err; a++)
                s[a] = (struct kdl_series){a ? names[a] : "kl (exact)", v + a * nck};
        err = err ?: kdl_fig_lines(kdl_site_path(r->site), name, &f, NULL, ticks, nck, s, NKL);
        err = err ?: kdl__report_show(r, name, cap);
        free(cap);
        free(name);
        free(ticks);
        free(v);
        return err;
}

static int kl_figures(struct kdl__report *r, const kdl_doc *d)
{
        const kdl_table *t = kdl_doc_find_table(d, "kl");
        const char *names[NKL];
        int err;

        if (!t)
                return 0;
        for (size_t a = 0; a < NKL; a++)
                names[a] = kdl_kl_name((enum kdl_kl_value) a);
        err = kl_sources_figure(r, t, names);
        for (size_t k = 0; k < r->in->nstudents && !err; k++)
                err = kl_curves_figure(r, t, k, names);
        return err;
}

int kdl__report_section_kl(struct kdl__report *r)
{
        const kdl_doc *d = r->kl;
        char *text = kdl__asprintf("How well each knowledge source (logits, probabilities, "
                                   "features, gradients) approximates the KD criterion "
                                   "tau^2 KL(p_t || p_s) (Hsu et al. 2022; docs/kl.md), per "
                                   "student and checkpoint, each compared with %s.",
                                   kdl__report_partner_text(r));
        int err;

        kdl__report_progress(r, "kl: figures");
        err = text ? kdl_site_section(r->site, KDL__REPORT_TITLE_KL, text) : -ENOMEM;
        free(text);
        err = err ?: kl_figures(r, d);
        err = err
                      ?: kdl__report_show_table(r, d, "kl", "kl",
                                                "The KD criterion by knowledge source");
        err = err
                      ?: kdl__report_show_table(
                                 r, d, "kl_features", "kl_features",
                                 "Feature matching: projector fit and KL-visible share");
        err = err ?: kdl_site_json(r->site, d, "kl");
        return err;
}
