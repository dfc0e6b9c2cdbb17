/* SPDX-License-Identifier: MIT */
/* "Explicit and implicit knowledge": the KD loss split, Tang et al.'s levels and class
 * relations (kdlens split). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/split.h"
#include "reports/plot.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

static int student_index(const struct kdl__report *r, const char *path)
{
        for (size_t k = 0; k < r->in->nstudents; k++)
                if (strcmp(kdl_h5_dump(r->in->students[k])->path, path) == 0)
                        return (int) k;
        return -1;
}

/* Histogram of @quantity for student @path at @checkpoint: edges and counts normalised to
 * densities. */
static size_t histogram(const kdl_table *t, const char *path, const char *checkpoint, double tau,
                        const char *quantity, double *edges, double *dens, size_t max, bool log)
{
        static const char *const keys[] = {"student", "checkpoint", "quantity"};
        const char *const want[] = {path, checkpoint, quantity};
        size_t nb = 0;
        double total = 0.0;

        for (int i = -1;
             nb < max && (i = kdl_table_find_row(t, (size_t) (i + 1), 3, keys, want)) >= 0;) {
                double lo = kdl__report_real(t, i, "lo"), hi = kdl__report_real(t, i, "hi");

                if (!kdl__report_same_tau(kdl__report_real(t, i, "tau"), tau))
                        continue;
                if (!isfinite(lo) || !isfinite(hi) || (log && !(lo > 0.0)))
                        continue;
                edges[nb] = lo;
                edges[nb + 1] = hi;
                dens[nb] = kdl__report_real(t, i, "count");
                total += dens[nb] * (log ? 1.0 : hi - lo);
                nb++;
        }
        for (size_t b = 0; b < nb && total > 0.0; b++)
                dens[b] /= total; /* a density (linear bins) or a fraction (log bins) */
        return nb;
}

/* The C x C records of @table for student @path at @checkpoint into @m. */
static bool matrix(const kdl_table *t, const char *path, const char *checkpoint, double tau,
                   double *m, size_t c)
{
        static const char *const keys[] = {"student", "checkpoint"};
        const char *const want[] = {path, checkpoint};
        size_t found = 0;

        for (int i = -1; t && (i = kdl_table_find_row(t, (size_t) (i + 1), 2, keys, want)) >= 0;) {
                double ti = kdl__report_real(t, i, "tau");
                size_t a = (size_t) kdl__report_real(t, i, "i"),
                       b = (size_t) kdl__report_real(t, i, "j");

                if ((isfinite(ti) && !kdl__report_same_tau(ti, tau)) || a >= c || b >= c)
                        continue;
                m[a * c + b] = kdl__report_real(t, i, "value");
                found++;
        }
        return found == c * c;
}

/* The rows of table "split" at the report's tau, as bars. */
struct bars {
        size_t n;
        const char **cats; /* "student/checkpoint", each owned by @owned */
        char **owned;
        double *tckd, *nckd;
};

static void bars_release(struct bars *b)
{
        for (size_t i = 0; b->owned && i < b->n; i++)
                free(b->owned[i]);
        free(b->owned);
        free(b->cats);
        free(b->tckd);
        free(b->nckd);
}

/* The bars of @t for the students of the report at its tau.  Release @b with bars_release(). */
static int bars_init(struct bars *b, const struct kdl__report *r, const kdl_table *t)
{
        size_t rows = t ? kdl_table_rows(t) : 0;

        *b = (struct bars){.cats = kdl_new(const char *, rows ? rows : 1),
                           .owned = kdl_new(char *, rows ? rows : 1),
                           .tckd = kdl_new(double, rows ? rows : 1),
                           .nckd = kdl_new(double, rows ? rows : 1)};
        if (!b->cats || !b->owned || !b->tckd || !b->nckd)
                return -ENOMEM;
        for (size_t i = 0; i < rows; i++) {
                int k = student_index(r, kdl__report_str(t, i, "student"));

                if (k < 0 || !kdl__report_same_tau(kdl__report_real(t, i, "tau"), r->tau))
                        continue;
                b->owned[b->n] = kdl__asprintf("%s/%s", kdl__report_short_name(r, (size_t) k),
                                               kdl__report_str(t, i, "checkpoint"));
                if (!b->owned[b->n])
                        return -ENOMEM;
                b->cats[b->n] = b->owned[b->n];
                b->tckd[b->n] = kdl__report_real(t, i, "tckd");
                b->nckd[b->n] = kdl__report_real(t, i, "nckd_coupled");
                b->n++;
        }
        return 0;
}

/* The loss totals of @b differ so much (a factor above this) that the small stacked bars
 * would be unreadable beside the large: the nats figure then takes a log scale. */
#define STACK_RANGE 10.0

/* The smallest and largest positive total of @b into @lo, @hi. */
static void bars_range(const struct bars *b, double *lo, double *hi)
{
        *lo = HUGE_VAL;
        *hi = 0.0;
        for (size_t i = 0; i < b->n; i++) {
                double t = b->tckd[i] + b->nckd[i];

                if (t > 0.0) {
                        *lo = t < *lo ? t : *lo;
                        *hi = t > *hi ? t : *hi;
                }
        }
}

/* The KD loss of every student and checkpoint split into its two parts, as nats and shares;
 * with totals a factor STACK_RANGE apart, the nats side by side on a log scale (said in the
 * caption). */
static int split_bars(struct kdl__report *r, const kdl_table *t)
{
        struct bars b;
        int err = bars_init(&b, r, t);

        if (!err && b.n) {
                struct kdl_series s[] = {{"explicit: TCKD", b.tckd, NULL},
                                         {"implicit: (1 - p^t_y) NCKD", b.nckd, NULL}};
                struct kdl_fig f = {.ylabel = "tau^2 KL per sample (nats)"};
                double lo, hi;
                char *cap;

                bars_range(&b, &lo, &hi);
                f.logy = hi > STACK_RANGE * lo;
                cap = f.logy ? kdl__asprintf(
                                       "KD loss split into explicit (target-class) and implicit "
                                       "(non-target) knowledge, per student and checkpoint "
                                       "(KL = TCKD + (1 - p^t_y) NCKD). The losses span a factor "
                                       "%.0f (%.3g to %.3g nats), so the two parts are drawn side "
                                       "by side on a log scale instead of stacked; the shares "
                                       "below show the split of the small ones",
                                       hi / lo, lo, hi)
                             : kdl__asprintf("KD loss split into explicit (target-class) and "
                                             "implicit (non-target) knowledge, per student and "
                                             "checkpoint; the bars' total is the KD loss "
                                             "(KL = TCKD + (1 - p^t_y) NCKD)");
                err = cap ? kdl_fig_bars(kdl_site_path(r->site), "split_stacked", &f, b.cats, b.n,
                                         s, 2, !f.logy)
                          : -ENOMEM;
                err = err ?: kdl__report_show(r, "split_stacked", cap, "split", SIZE_MAX);
                free(cap);
                f.logy = false;
                /* The same as shares of the loss, readable when the untrained
                 * checkpoints' loss dwarfs the rest. */
                for (size_t i = 0; i < b.n; i++) {
                        double total = b.tckd[i] + b.nckd[i];

                        b.tckd[i] = total > 0.0 ? b.tckd[i] / total : (double) NAN;
                        b.nckd[i] = total > 0.0 ? b.nckd[i] / total : (double) NAN;
                }
                f.ylabel = "share of the KD loss";
                f.ymax = 1.0;
                err = err
                              ?: kdl_fig_bars(kdl_site_path(r->site), "split_shares", &f, b.cats,
                                              b.n, s, 2, true);
                err = err
                              ?: kdl__report_show(r, "split_shares",
                                                  "The same split as shares: how much of the KD "
                                                  "signal is the teacher's target-class "
                                                  "confidence and how much its distribution over "
                                                  "the other classes",
                                                  "split", SIZE_MAX);
        }
        bars_release(&b);
        return err;
}

#define HIST_MAX_BINS 1000

/* Student @k's target confidence and the teacher's, at its last checkpoint. */
static int confidence_figure(struct kdl__report *r, const kdl_table *h, size_t k)
{
        const char *path = kdl_h5_dump(r->in->students[k])->path;
        const char *ck = kdl__report_last_pair(r, k)->main->name;
        double e1[HIST_MAX_BINS + 1], d1[HIST_MAX_BINS], e2[HIST_MAX_BINS + 1], d2[HIST_MAX_BINS];
        size_t n1 = histogram(h, path, ck, r->tau, "pt_y", e1, d1, HIST_MAX_BINS, false);
        size_t n2 = histogram(h, path, ck, r->tau, "ps_y", e2, d2, HIST_MAX_BINS, false);
        struct kdl_series s[] = {{"teacher p^t_y", d1, NULL}, {"student p^s_y", d2, NULL}};
        struct kdl_fig f = {.xlabel = "target-class probability at tau", .ylabel = "density"};
        char *name, *cap;
        int err;

        if (!n1 || n1 != n2)
                return 0;
        name = kdl__asprintf("confidence_s%zu", k + 1);
        cap = kdl__asprintf("Target confidence of the teacher and of %s at checkpoint %s "
                            "(tau = %g)",
                            r->names[k], ck, r->tau);
        err = name && cap ? kdl_fig_hist(kdl_site_path(r->site), name, &f, e1, n1, s, 2) : -ENOMEM;
        err = err ?: kdl__report_show(r, name, cap, "split", k);
        free(cap);
        free(name);
        return err;
}

/*
 * The instance weights w_n, whole range: the fraction of samples in bands a
 * factor 4 wide on either side of 0, |w| in [4^k, 4^(k+1)) for
 * k = W_KLO..W_KHI (the last one open above), and a middle band for
 * |w| < 4^W_KLO = 1/16; the output histogram's half-octave bins fall in
 * exactly one band each.  Band b: the negative bands first (the most
 * negative at 0), the middle one at W_MIDDLE, then the positive ones.
 */
#define W_KLO    (-2)
#define W_KHI    8 /* 4^9 = 2^18 > 2^KDL_SPLIT_W_LOG2_MAX: every value has a band */
#define W_MIDDLE ((size_t) (W_KHI - W_KLO + 1))
#define W_NBANDS (2 * W_MIDDLE + 1)

static size_t w_band(double lo, double hi)
{
        double m = 0.5 * (lo + hi);
        int k;

        if (!(fabs(m) >= exp2(2.0 * W_KLO)))
                return W_MIDDLE;
        k = (int) floor(log2(fabs(m)) / 2.0);
        k = k > W_KHI ? W_KHI : k;
        return m < 0.0 ? (size_t) (W_KHI - k) : W_MIDDLE + 1 + (size_t) (k - W_KLO);
}

/* The label of band @b: its edges in w. */
static char *w_band_label(size_t b)
{
        int k;

        if (b == W_MIDDLE)
                return kdl__asprintf("%g..%g", -exp2(2.0 * W_KLO), exp2(2.0 * W_KLO));
        if (b < W_MIDDLE) {
                k = W_KHI - (int) b;
                return kdl__asprintf("%g..%g", -exp2(2.0 * (k + 1)), -exp2(2.0 * k));
        }
        k = (int) (b - W_MIDDLE - 1) + W_KLO;
        return kdl__asprintf("%g..%g", exp2(2.0 * k), exp2(2.0 * (k + 1)));
}

/* The counts of @quantity's histogram rows for student @path at @checkpoint, by band. */
static void w_bands(const kdl_table *t, const char *path, const char *checkpoint, double tau,
                    const char *quantity, double *count)
{
        static const char *const keys[] = {"student", "checkpoint", "quantity"};
        const char *const want[] = {path, checkpoint, quantity};

        for (int i = -1; (i = kdl_table_find_row(t, (size_t) (i + 1), 3, keys, want)) >= 0;)
                if (kdl__report_same_tau(kdl__report_real(t, i, "tau"), tau))
                        count[w_band(kdl__report_real(t, i, "lo"), kdl__report_real(t, i, "hi"))] +=
                                kdl__report_real(t, i, "count");
}

/* The row of table @name of @d for student @path at @checkpoint and @tau; -1: none. */
static int tau_row(const kdl_doc *d, const char *name, const char *path, const char *checkpoint,
                   double tau, const kdl_table **ret)
{
        static const char *const keys[] = {"student", "checkpoint"};
        const char *const want[] = {path, checkpoint};
        const kdl_table *t = kdl_doc_find_table(d, name);

        *ret = t;
        for (int i = -1; t && (i = kdl_table_find_row(t, (size_t) (i + 1), 2, keys, want)) >= 0;)
                if (kdl__report_same_tau(kdl__report_real(t, i, "tau"), tau))
                        return i;
        return -1;
}

/* The caption of the w_n figure of student @k at @ck (@n samples): the robust
 * summaries from row @i of the instance table @t. */
static char *w_caption(const struct kdl__report *r, size_t k, const char *ck, double n,
                       const kdl_table *t, int i)
{
        return kdl__asprintf(
                "Tang et al.'s instance weights w_n of %s at checkpoint %s (tau = %g), every "
                "sample shown: the fraction of samples in bands a factor 4 wide on either side "
                "of w_n = 0 (the middle one: |w_n| < 1/16), split by whether the denominator was "
                "floored at eps_w = %g (%.0f of %.0f samples; there |w_n| reaches 1/eps_w). "
                "Median %.3g, quartiles %.3g and %.3g (over the samples not floored: median "
                "%.3g, quartiles %.3g and %.3g). %.0f samples (%.1f %%) have w_n <= 0: the "
                "student's q_y already exceeds the KD target "
                "1 - lambda (1 - p^t_y), and KD lowers its target logit. The mean, %.3g (sd %.3g), "
                "is not robust: the floored samples dominate it.",
                r->names[k], ck, r->tau, kdl__report_real(t, i, "w_eps"),
                kdl__report_real(t, i, "w_guarded"), n, kdl__report_real(t, i, "w_p50"),
                kdl__report_real(t, i, "w_p25"), kdl__report_real(t, i, "w_p75"),
                kdl__report_real(t, i, "w_p50_unguarded"),
                kdl__report_real(t, i, "w_p25_unguarded"),
                kdl__report_real(t, i, "w_p75_unguarded"), kdl__report_real(t, i, "w_nonpositive"),
                100.0 * kdl__report_real(t, i, "w_nonpositive_share"), kdl__report_real(t, i, "w"),
                kdl__report_real(t, i, "w_std"));
}

/* The bands from the first with a sample to the last, as categories and the two
 * stacked series (fractions of the @total samples); @mark: x of w = 0 and
 * w = 1.  Return: the number of bands. */
static size_t w_bars(const double *all, const double *ok, double total, const char **cats,
                     char **owned, double *floored, double *unfloored, double *mark)
{
        size_t first = W_NBANDS, last = 0, nb = 0;

        for (size_t b = 0; b < W_NBANDS; b++) {
                if (all[b] > 0.0) {
                        first = first < b ? first : b;
                        last = b + 1;
                }
        }
        mark[0] = mark[1] = NAN;
        for (size_t b = first; b < last; b++, nb++) {
                owned[nb] = w_band_label(b);
                cats[nb] = owned[nb] ? owned[nb] : "";
                unfloored[nb] = ok[b] / total;
                floored[nb] = (all[b] - ok[b]) / total;
                if (b == W_MIDDLE)
                        mark[0] = (double) nb;
                if (b == W_MIDDLE + 1 - W_KLO) /* [1, 4) */
                        mark[1] = (double) nb - 0.5;
        }
        return nb;
}

/* Student @k's instance weights w_n at its last checkpoint, every value. */
static int instance_weight_figure(struct kdl__report *r, const kdl_doc *d, const kdl_table *h,
                                  size_t k)
{
        const char *path = kdl_h5_dump(r->in->students[k])->path;
        const char *ck = kdl__report_last_pair(r, k)->main->name;
        double all[W_NBANDS] = {0}, ok[W_NBANDS] = {0}, floored[W_NBANDS], unfloored[W_NBANDS];
        double mark[2], marks[2], n = 0.0;
        const char *cats[W_NBANDS], *mark_labels[2];
        char *owned[W_NBANDS] = {0}, *name = NULL, *cap = NULL;
        struct kdl_series s[] = {{"denominator not floored", unfloored, NULL},
                                 {"denominator floored at eps_w", floored, NULL}};
        struct kdl_fig f = {.xlabel = "instance weight w_n (KD / label smoothing), by band",
                            .ylabel = "fraction of samples",
                            .marks = marks,
                            .mark_labels = mark_labels};
        const kdl_table *t;
        int i = tau_row(d, "instance", path, ck, r->tau, &t), err = 0;
        size_t nb;

        w_bands(h, path, ck, r->tau, "w", all);
        w_bands(h, path, ck, r->tau, "w_unguarded", ok);
        for (size_t b = 0; b < W_NBANDS; b++)
                n += all[b];
        nb = w_bars(all, ok, n, cats, owned, floored, unfloored, mark);
        for (int m = 0; m < 2; m++)
                if (isfinite(mark[m])) {
                        marks[f.nmarks] = mark[m];
                        mark_labels[f.nmarks++] = m ? "w = 1" : "w = 0";
                }
        if (nb && i >= 0) {
                name = kdl__asprintf("instance_w_s%zu", k + 1);
                cap = w_caption(r, k, ck, n, t, i);
                err = name && cap
                              ? kdl_fig_bars(kdl_site_path(r->site), name, &f, cats, nb, s, 2, true)
                              : -ENOMEM;
                err = err ?: kdl__report_show(r, name, cap, "split", k);
        }
        for (size_t b = 0; b < nb; b++)
                free(owned[b]);
        free(cap);
        free(name);
        return err;
}

/* Class figures: the labels of every class, and the classes shown when the matrices are too
 * large to show whole. */
struct classes {
        size_t c;           /* classes of the matrices */
        char **labels;      /* [c] each class's index */
        double *sub;        /* [KDL_FIG_TOP_CLASSES^2] the matrix shown */
        const char **shown; /* [KDL_FIG_TOP_CLASSES] labels of the classes shown */
        size_t top[KDL_FIG_TOP_CLASSES];
};

/* The C x C class matrix @m as heatmap @name, shown with @caption.  Up to
 * KDL_FIG_CLASSES_MAX classes it is whole; beyond, only its top classes: those of
 * kdl_fig_top_classes() on @m when @pick, else the ones picked last (so that the heads of
 * the teacher and of a student show the same classes), said in the caption. */
static int class_heatmap(struct kdl__report *r, const char *name, const struct kdl_fig *f,
                         const double *m, struct classes *cl, bool pick, double zmin, double zmax,
                         const char *caption, const char *relation)
{
        size_t c = cl->c, k = KDL_FIG_TOP_CLASSES;
        char *cap = NULL;
        int err;

        if (c <= KDL_FIG_CLASSES_MAX) {
                err = kdl_fig_heatmap(kdl_site_path(r->site), name, f, m, c, c,
                                      (const char *const *) cl->labels,
                                      (const char *const *) cl->labels, true, zmin, zmax);
                return err ?: kdl__report_show(r, name, caption, "split", SIZE_MAX);
        }
        err = pick ? kdl_fig_top_classes(m, c, k, cl->top) : 0;
        for (size_t i = 0; i < k && !err; i++) {
                cl->shown[i] = cl->labels[cl->top[i]];
                for (size_t j = 0; j < k; j++)
                        cl->sub[i * k + j] = m[cl->top[i] * c + cl->top[j]];
        }
        if (!err)
                cap = pick ? kdl__asprintf("%s. Only the %zu of the %zu classes with the "
                                           "strongest %s are shown (class i ranked by the "
                                           "largest m_ij + m_ji over the other classes j); "
                                           "every class is in data/split.json",
                                           caption, k, c, relation)
                           : kdl__asprintf("%s. Only %zu of the %zu classes are shown: the "
                                           "same as in the teacher's figure above; every class "
                                           "is in data/split.json",
                                           caption, k, c);
        err = err ?: cap ? 0 : -ENOMEM;
        err = err
                      ?: kdl_fig_heatmap(kdl_site_path(r->site), name, f, cl->sub, k, k, cl->shown,
                                         cl->shown, true, zmin, zmax);
        err = err ?: kdl__report_show(r, name, cap, "split", SIZE_MAX);
        free(cap);
        return err;
}

/* The teacher's soft confusion and head cosines, recorded beside student @path at @ck. */
static int teacher_class_figures(struct kdl__report *r, const kdl_doc *d, const char *path,
                                 const char *ck, double *m, struct classes *cl)
{
        struct kdl_fig fc = {.xlabel = "predicted class (soft)", .ylabel = "true class"};
        struct kdl_fig f = {.xlabel = "class", .ylabel = "class"};
        int err = 0;

        if (matrix(kdl_doc_find_table(d, "confusion_teacher"), path, ck, r->tau, m, cl->c))
                err = class_heatmap(r, "classes_teacher_confusion", &fc, m, cl, true, 0, 0,
                                    "The teacher's soft confusion matrix: mean p^t_tau of each "
                                    "class over the samples of each true class",
                                    "confusion");
        if (!err &&
            matrix(kdl_doc_find_table(d, "head_cosine_teacher"), path, ck, r->tau, m, cl->c))
                err = class_heatmap(r, "classes_teacher_head", &f, m, cl, true, -1, 1,
                                    "Class relations in the teacher's head: cosine of "
                                    "head-weight rows",
                                    "head cosine");
        return err;
}

static void classes_release(struct classes *cl)
{
        for (size_t k = 0; cl->labels && k < cl->c; k++)
                free(cl->labels[k]);
        free(cl->labels);
        free(cl->sub);
        free(cl->shown);
}

/* Class relations: the teacher's soft confusion and both heads' cosines, each student at its
 * last checkpoint (the teacher's beside the first student). */
static int class_figures(struct kdl__report *r, const kdl_doc *d)
{
        size_t c = kdl_h5_dump(r->in->teacher)->c, k = KDL_FIG_TOP_CLASSES;
        double *m;
        struct classes cl = {.c = c};
        struct kdl_fig f = {.xlabel = "class", .ylabel = "class"};
        bool teacher_head = false;
        int err;

        /* Split's domain level in blocks of classes has no C x C table to draw. */
        if (!kdl_doc_find_table(d, "confusion_teacher") &&
            !kdl_doc_find_table(d, "head_cosine_teacher") &&
            !kdl_doc_find_table(d, "head_cosine_student"))
                return 0;
        m = kdl_new(double, c > 0 ? c * c : 1);
        cl.labels = kdl_new(char *, c ? c : 1);
        cl.sub = kdl_new(double, k *k);
        cl.shown = kdl_new(const char *, k);
        err = m && cl.labels && cl.sub && cl.shown ? 0 : -ENOMEM;

        for (size_t i = 0; i < c && !err; i++)
                if (!(cl.labels[i] = kdl__asprintf("%zu", i)))
                        err = -ENOMEM;
        for (size_t s = 0; s < r->in->nstudents && !err; s++) {
                const char *path = kdl_h5_dump(r->in->students[s])->path;
                const char *ck = kdl__report_last_pair(r, s)->main->name;
                char *name, *cap;

                if (s == 0) {
                        err = teacher_class_figures(r, d, path, ck, m, &cl);
                        teacher_head = matrix(kdl_doc_find_table(d, "head_cosine_teacher"), path,
                                              ck, r->tau, m, c);
                }
                if (err ||
                    !matrix(kdl_doc_find_table(d, "head_cosine_student"), path, ck, r->tau, m, c))
                        continue;
                name = kdl__asprintf("classes_s%zu_head", s + 1);
                cap = kdl__asprintf("Class relations in the head of %s at checkpoint %s, "
                                    "beside the teacher's",
                                    r->names[s], ck);
                err = name && cap ? class_heatmap(r, name, &f, m, &cl, !teacher_head, -1, 1, cap,
                                                  "head cosine")
                                  : -ENOMEM;
                free(name);
                free(cap);
        }
        classes_release(&cl);
        free(m);
        return err;
}

static int split_figures(struct kdl__report *r, const kdl_doc *d)
{
        const kdl_table *h = kdl_doc_find_table(d, "histograms");
        int err = split_bars(r, kdl_doc_find_table(d, "split"));

        for (size_t k = 0; k < r->in->nstudents && !err && h; k++) {
                err = confidence_figure(r, h, k);
                err = err ?: instance_weight_figure(r, d, h, k);
        }
        err = err ?: kdl__report_split_classes(r, d);
        return err ?: class_figures(r, d);
}

int kdl__report_section_split(struct kdl__report *r)
{
        const kdl_doc *d = r->split;
        int err;

        kdl__report_progress(r, "split: figures");
        err = kdl_site_section(r->site, "Explicit and implicit knowledge",
                               "How the KD loss splits into the teacher's confidence in the "
                               "target class (explicit, TCKD) and its distribution over the "
                               "other classes (implicit, NCKD), per DKD (Zhao et al. 2022) and "
                               "AEKT (Park & Lee 2024); and Tang et al.'s universe, domain and "
                               "instance knowledge.");
        err = err ?: split_figures(r, d);
        err = err
                      ?: kdl__report_show_table(r, d, "split", "split",
                                                "Explicit vs implicit knowledge");
        err = err
                      ?: kdl__report_show_table(r, d, "domain", "split_domain",
                                                "Domain knowledge: agreement of class relations");
        err = err
                      ?: kdl__report_show_table(r, d, "confused_pairs", "split_confused_pairs",
                                                "The teacher's most confused class pairs by soft "
                                                "count (the domain level in blocks of classes)");
        err = err
                      ?: kdl__report_show_table(r, d, "instance", "split_instance",
                                                "Instance knowledge: rescaling weights w_n");
        err = err ?: kdl_site_json(r->site, d, "split");
        return err;
}
