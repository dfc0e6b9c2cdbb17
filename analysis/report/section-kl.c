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

#define KL_SOURCES_CAPTION                                                                         \
        "How well each knowledge source tracks the KD criterion tau^2 KL(p_t || p_s) at each "     \
        "student's last checkpoint analysed: correlation over samples (1 = a perfect proxy; "      \
        "missing bars: source unavailable in the dumps)"

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

/* Fidelity: how closely each source tracks the exact per-sample KL, per student; a group
 * of runs (--group) as one series of mean ± sd. */
static int kl_sources_figure(struct kdl__report *r, const kdl_table *t, const char *const *names)
{
        size_t ns = r->in->nstudents;
        struct kdl__report_units u;
        double *y = kdl_new(double, 3 * ns * NKL), *mean = y + ns * NKL, *sd = mean + ns * NKL;
        struct kdl_series *s = kdl_new(struct kdl_series, ns ? ns : 1);
        struct kdl_fig f = {.ylabel = "Pearson r with the exact KL", .ymax = 1.0};
        char *cap = NULL;
        int err = kdl__report_units_init(r, &u);

        err = err ?: y && s ? 0 : -ENOMEM;
        for (size_t k = 0; k < ns && !err; k++) {
                const char *path = kdl_h5_dump(r->in->students[k])->path;
                const char *ck = kdl__report_last_pair(r, k)->main->name;

                for (size_t a = 1; a < NKL; a++)
                        y[k * NKL + a - 1] =
                                kl_value(r, t, path, ck, (enum kdl_kl_value) a, "pearson");
                y[k * NKL + NKL - 1] = NAN;
        }
        if (!err)
                kdl__report_units_stats(&u, y, ns, NKL, mean, sd);
        for (size_t i = 0; i < u.n && !err; i++)
                s[i] = (struct kdl_series){u.name[i], mean + i * NKL,
                                           u.size[i] > 1 ? sd + i * NKL : NULL};
        cap = u.grouped ? kdl__asprintf("%s; a group of runs (--group) is one bar per source, "
                                        "the mean over its n runs with an error bar of one "
                                        "standard deviation (n - 1)",
                                        KL_SOURCES_CAPTION)
                        : kdl__strdup(KL_SOURCES_CAPTION);
        err = err ?: cap ? 0 : -ENOMEM;
        err = err
                      ?: kdl_fig_bars(kdl_site_path(r->site), "kl_sources", &f, names + 1, NKL - 1,
                                      s, u.n, false);
        err = err ?: kdl__report_show(r, "kl_sources", cap, "kl", SIZE_MAX);
        kdl__report_units_release(&u);
        free(cap);
        free(s);
        free(y);
        return err;
}

/* The mean of every source over student @k's checkpoints @ticks (@nck) into @v (NKL x @nck,
 * NaN where none). */
static void kl_curves_values(const struct kdl__report *r, const kdl_table *t, size_t k,
                             const char *const *ticks, size_t nck, double *v)
{
        const char *path = kdl_h5_dump(r->in->students[k])->path;

        for (size_t c = 0; c < nck; c++)
                for (size_t a = 0; a < NKL; a++) {
                        double m = kl_value(r, t, path, ticks[c], (enum kdl_kl_value) a, "mean");

                        v[a * nck + c] = m > 0.0 ? m : (double) NAN;
                }
}

/* Over the training of unit @i of @u (student @k, its first run): the mean of every source,
 * one line each; a group's runs as mean ± sd, checkpoints matched by the names of @k's. */
static int kl_curves_figure(struct kdl__report *r, const kdl_table *t,
                            const struct kdl__report_units *u, size_t i, size_t k,
                            const char *const *names)
{
        size_t nck = r->nsel[k], ns = r->in->nstudents, nv = NKL * nck;
        double *v = kdl_new(double, (ns + 2) * nv), *mean = v + ns * nv, *sd = mean + nv;
        size_t *of = kdl_new(size_t, ns);
        const char **ticks = kdl_new(const char *, nck);
        char *name = kdl__asprintf("kl_curves_s%zu", k + 1);
        char *cap = u->size[i] > 1
                            ? kdl__asprintf("Each knowledge source's estimate of the KD "
                                            "criterion over the training of group %s (tau = "
                                            "%g), beside the exact KL: the mean over its runs "
                                            "with an error bar of one standard deviation "
                                            "(n - 1), checkpoints matched by name",
                                            u->name[i], r->tau)
                            : kdl__asprintf("Each knowledge source's estimate of the KD "
                                            "criterion over %s's training (tau = %g), beside "
                                            "the exact KL",
                                            r->names[k], r->tau);
        struct kdl_series s[NKL];
        struct kdl_fig f = {
                .xlabel = "student checkpoint", .ylabel = "mean per sample (nats)", .logy = true};
        int err = v && of && ticks && name && cap ? 0 : -ENOMEM;

        for (size_t c = 0; c < nck && !err; c++)
                ticks[c] = r->sel[k][c].main->name;
        for (size_t j = 0; j < ns && !err; j++) {
                of[j] = u->of[j] == i ? 0 : SIZE_MAX; /* the runs of unit i as one unit */
                if (u->of[j] == i)
                        kl_curves_values(r, t, j, ticks, nck, v + j * nv);
        }
        if (!err) {
                struct kdl__report_units one = {.n = 1, .of = of};

                kdl__report_units_stats(&one, v, ns, nv, mean, sd);
        }
        for (size_t a = 0; a < NKL && !err; a++)
                s[a] = (struct kdl_series){a ? names[a] : "kl (exact)", mean + a * nck,
                                           u->size[i] > 1 ? sd + a * nck : NULL};
        err = err ?: kdl_fig_lines(kdl_site_path(r->site), name, &f, NULL, ticks, nck, s, NKL);
        err = err ?: kdl__report_show(r, name, cap, "kl", u->size[i] > 1 ? SIZE_MAX : k);
        free(cap);
        free(name);
        free(ticks);
        free(of);
        free(v);
        return err;
}

static int kl_figures(struct kdl__report *r, const kdl_doc *d)
{
        const kdl_table *t = kdl_doc_find_table(d, "kl");
        const char *names[NKL];
        struct kdl__report_units u = {0};
        int err;

        if (!t)
                return 0;
        for (size_t a = 0; a < NKL; a++)
                names[a] = kdl_kl_name((enum kdl_kl_value) a);
        err = kl_sources_figure(r, t, names);
        err = err ?: kdl__report_units_init(r, &u);
        /* One figure per unit, named after its first run. */
        for (size_t k = 0, next = 0; k < r->in->nstudents && !err; k++)
                if (u.of[k] == next)
                        err = kl_curves_figure(r, t, &u, next++, k, names);
        kdl__report_units_release(&u);
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
