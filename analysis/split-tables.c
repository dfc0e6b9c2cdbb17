/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "analysis/split-internal.h"
#include "metrics/base/banned.h"

/* The tables of the split document: their rows from each job's results, and
 * the notes.  The analysis itself is split.c. */

enum {
        T_SPLIT,
        T_UNIVERSE,
        T_DOMAIN,
        T_PAIRS,
        T_INSTANCE,
        T_DIST,
        T_CLASSES,
        T_HIST,
        T_CONF,
        T_COS_T,
        T_COS_S,
        T_POSITIONS,
        T_COUNT_
};

static const char *const table_names[T_COUNT_][2] = {
        {"split", "Explicit vs implicit knowledge (TCKD / NCKD, AEKT weight)"},
        {"universe", "Universe knowledge: label-smoothing equivalent"},
        {"domain", "Domain knowledge: class relations of teacher and student"},
        {"confused_pairs", "The teacher's most confused class pairs (soft counts)"},
        {"instance", "Instance knowledge: Tang et al.'s rescaling weights w_n"},
        {"distributions", "Per-sample distributions"},
        {"split_classes", "Per class: mean KL, TCKD and NCKD over the samples of each label"},
        {"histograms", "Histograms"},
        {"confusion_teacher", "Teacher soft confusion M (row i = true class)"},
        {"head_cosine_teacher", "Teacher head-weight cosines"},
        {"head_cosine_student", "Student head-weight cosines"},
        {"split_positions",
         "Per position: mean KL, TCKD and NCKD over the tokens at each position"},
};

_Static_assert(T_COUNT_ == KDL__SPLIT_NTABLES, "the header knows how many tables there are");
_Static_assert(T_POSITIONS == KDL__SPLIT_T_POSITIONS, "and which is split_positions");

int kdl__split_tables_new(kdl_table **t)
{
        int err = 0;

        for (int k = 0; k < T_COUNT_ && !err; k++)
                err = kdl_table_new(table_names[k][0], table_names[k][1], &t[k]);
        return err;
}

int kdl__split_tables_commit(kdl_table **t, kdl_doc *doc)
{
        int err;

        for (int k = 0; k < T_COUNT_; k++) {
                if (kdl_table_rows(t[k]) == 0) {
                        kdl_table_free(t[k]);
                } else {
                        err = kdl_doc_add_table(doc, t[k]);
                        if (err < 0) {
                                t[k] = NULL;
                                return err;
                        }
                }
                t[k] = NULL;
        }
        return 0;
}

void kdl__split_tables_release(kdl_table **t)
{
        for (int k = 0; k < T_COUNT_; k++) {
                kdl_table_free(t[k]);
                t[k] = NULL;
        }
}

int kdl__split_put_keys(const struct kdl__split_rows *w, kdl_table *t, bool with_tau, double tau)
{
        int err = kdl_table_add_row(t);

        if (err < 0)
                return err;
        err = kdl_table_put_str(t, "student", w->student);
        err = err ?: kdl_table_put_str(t, "checkpoint", w->cks->name);
        err = err ?: kdl_table_put_int(t, "step", (long long) w->cks->step);
        err = err ?: kdl_table_put_str(t, "teacher_checkpoint", w->ckt->name);
        if (!err && with_tau)
                err = kdl_table_put_real(t, "tau", tau);
        return err;
}

/* Output bins of w_n: 2 per octave (groups of W_GROUP log bins); its middle
 * and two outer bins kept. */
#define W_GROUP (KDL_SPLIT_W_BINS / (2 * (KDL_SPLIT_W_LOG2_MAX - KDL_SPLIT_W_LOG2_MIN)))
#define W_MID   ((size_t) KDL_SPLIT_W_BINS + 1)

static const char *dist_method(const struct kdl__split_rows *w, int which, char *buf, size_t size)
{
        if (which < 0) {
                snprintf(buf, size,
                         "histogram: %d log2 bins per sign on 2^%d <= |w| < 2^%d (1/%d octave), "
                         "one for |w| < 2^%d, two outer; error < %.2g relative (< %.2g near 0)",
                         KDL_SPLIT_W_BINS, KDL_SPLIT_W_LOG2_MIN, KDL_SPLIT_W_LOG2_MAX,
                         KDL_SPLIT_W_BINS / (KDL_SPLIT_W_LOG2_MAX - KDL_SPLIT_W_LOG2_MIN),
                         KDL_SPLIT_W_LOG2_MIN,
                         exp2(1.0 /
                              (KDL_SPLIT_W_BINS / (KDL_SPLIT_W_LOG2_MAX - KDL_SPLIT_W_LOG2_MIN))) -
                                 1.0,
                         exp2(KDL_SPLIT_W_LOG2_MIN + 1));
                return buf;
        }
        snprintf(buf, size, "histogram: %zu equal bins", w->o->metric.nbins);
        return buf;
}

/* The end of the output bin that starts at slot @a of @h. */
static size_t out_bin_end(const struct kdl__split_rows *w, const kdl_split_hist *h, size_t a,
                          bool log)
{
        if (!log)
                return a + h->nbins / w->o->hist_bins;
        if (a == 0 || a == W_MID || a + 1 == h->nbins)
                return a + 1;
        return a + W_GROUP;
}

static long long out_bin_count(const kdl_split_hist *h, size_t a, size_t b)
{
        long long count = 0;

        for (size_t e = a; e < b; e++)
                count += (long long) h->count[e];
        return count;
}

/* The histogram of @name, coarsened for output: bounded ones to hist_bins
 * equal bins; w_n to 2 bins per octave (its middle and outer bins kept),
 * from the first bin with a sample to the last. */
static int emit_hist(const struct kdl__split_rows *w, double tau, const char *name,
                     const kdl_split_hist *h, bool log)
{
        kdl_table *t = w->t[T_HIST];
        size_t first = h->nbins, last = 0, bin = 0;
        int err = 0;

        for (size_t a = 0, b; a < h->nbins; a = b) {
                b = out_bin_end(w, h, a, log);
                if (!log || out_bin_count(h, a, b) > 0) {
                        first = first < a ? first : a;
                        last = b;
                }
        }
        for (size_t a = first, b; a < last && !err; a = b) {
                b = out_bin_end(w, h, a, log);
                err = kdl__split_put_keys(w, t, true, tau);
                err = err ?: kdl_table_put_str(t, "quantity", name);
                err = err ?: kdl_table_put_int(t, "bin", (long long) bin++);
                err = err ?: kdl_table_put_real(t, "lo", h->lo[a]);
                err = err ?: kdl_table_put_real(t, "hi", h->hi[b - 1]);
                err = err ?: kdl_table_put_int(t, "count", out_bin_count(h, a, b));
        }
        return err;
}

static int emit_dist(const struct kdl__split_rows *w, double tau, const char *name,
                     const kdl_split_dist *d, bool log)
{
        kdl_table *t = w->t[T_DIST];
        static const char *const qkeys[KDL_SPLIT_NQUANTILES] = {"p05", "p25", "p50", "p75", "p95"};
        char buf[200];
        int err = kdl__split_put_keys(w, t, true, tau);

        err = err ?: kdl_table_put_str(t, "quantity", name);
        err = err ?: kdl_table_put_int(t, "n", (long long) d->n);
        err = err ?: kdl_table_put_real(t, "mean", d->mean);
        err = err ?: kdl_table_put_real(t, "std", d->std);
        err = err ?: kdl_table_put_real(t, "min", d->min);
        for (int q = 0; q < KDL_SPLIT_NQUANTILES && !err; q++)
                err = kdl_table_put_real(t, qkeys[q], d->quantile[q]);
        err = err ?: kdl_table_put_real(t, "max", d->max);
        if (!err)
                err = kdl_table_put_str(t, "quantile_method",
                                        dist_method(w, log ? -1 : 0, buf, sizeof(buf)));
        if (err || !w->o->long_tables)
                return err;
        return emit_hist(w, tau, name, &d->hist, log);
}

static int emit_matrix(const struct kdl__split_rows *w, kdl_table *t, bool with_tau, double tau,
                       const double *m, const size_t *class_count)
{
        int err = 0;

        for (size_t a = 0; a < w->c && !err; a++)
                for (size_t b = 0; b < w->c && !err; b++) {
                        err = kdl__split_put_keys(w, t, with_tau, tau);
                        err = err ?: kdl_table_put_int(t, "i", (long long) a);
                        err = err ?: kdl_table_put_int(t, "j", (long long) b);
                        if (!err && class_count)
                                err = kdl_table_put_int(t, "samples_i", (long long) class_count[a]);
                        err = err ?: kdl_table_put_real(t, "value", m[a * w->c + b]);
                }
        return err;
}

/* A row's values, put in order: reals, or integers (counts, exact in a double). */
struct col {
        const char *key;
        double v;
        bool integer;
};
#define REAL(k, x)                                                                                 \
        {                                                                                          \
                (k), (x), false                                                                    \
        }
#define INT(k, x)                                                                                  \
        {                                                                                          \
                (k), (double) (x), true                                                            \
        }

static int put_cols(const struct kdl__split_rows *w, kdl_table *t, double tau, const struct col *c,
                    size_t n)
{
        int err = kdl__split_put_keys(w, t, true, tau);

        for (size_t k = 0; k < n && !err; k++)
                err = c[k].integer && isfinite(c[k].v)
                              ? kdl_table_put_int(t, c[k].key, (long long) c[k].v)
                              : kdl_table_put_real(t, c[k].key, c[k].v);
        return err;
}

#define PUT_COLS(t, ...)                                                                           \
        put_cols(w, (t), tau, (const struct col[]){__VA_ARGS__},                                   \
                 sizeof((const struct col[]){__VA_ARGS__}) / sizeof(struct col))

/* The rows of the split, universe, domain and instance tables at one temperature. */
static int summary_rows(const struct kdl__split_rows *w, const kdl_split_result *r,
                        const kdl_split_tau_result *x, size_t skipped)
{
        kdl_table *const *t = w->t;
        double n = (double) r->n, tau = x->tau;
        int err;

        err = PUT_COLS(t[T_SPLIT], INT("samples", r->n), INT("skipped", skipped), REAL("kl", x->kl),
                       REAL("tckd", x->tckd), REAL("nckd", x->nckd),
                       REAL("nckd_coupled", x->nckd_coupled),
                       REAL("identity_residual", x->residual_max),
                       REAL("explicit_share", x->explicit_share),
                       REAL("implicit_share", x->implicit_share), REAL("pt_y", x->pt_y.mean),
                       REAL("ps_y", x->ps_y.mean), REAL("gap", x->gap.mean),
                       REAL("omega", x->omega.mean), INT("omega_clipped", x->omega_clipped),
                       REAL("teacher_top1", (double) r->teacher_correct / n),
                       REAL("student_top1", (double) r->student_correct / n));
        if (!err)
                err = PUT_COLS(t[T_UNIVERSE], REAL("lambda", r->opts.lambda),
                               REAL("eps", x->eps.mean), REAL("eps_p50", x->eps.quantile[2]),
                               REAL("nt_entropy", x->nt_entropy.mean),
                               REAL("nt_entropy_p50", x->nt_entropy.quantile[2]));
        if (!err && r->opts.domain != KDL_SPLIT_DOMAIN_OFF)
                err = PUT_COLS(t[T_DOMAIN], INT("confusion_pairs", x->confusion_pairs),
                               REAL("pearson_confusion_student", x->pearson_confusion_student),
                               REAL("pearson_confusion_teacher", x->pearson_confusion_teacher),
                               REAL("pearson_heads", r->pearson_heads),
                               REAL("cka_heads", r->cka_heads),
                               /* null when that head is absent */
                               INT("d_teacher",
                                   r->has_head_teacher ? (double) r->d_teacher : (double) NAN),
                               INT("d_student",
                                   r->has_head_student ? (double) r->d_student : (double) NAN));
        /* w_n: the robust summaries first; the mean and std, which a few
         * floored denominators can dominate, after them. */
        if (!err)
                err = PUT_COLS(
                        t[T_INSTANCE], REAL("lambda", r->opts.lambda), REAL("pt_mean", x->pt_mean),
                        REAL("w_p05", x->w.quantile[0]), REAL("w_p25", x->w.quantile[1]),
                        REAL("w_p50", x->w.quantile[2]), REAL("w_p75", x->w.quantile[3]),
                        REAL("w_p95", x->w.quantile[4]), INT("w_nonpositive", x->w_nonpositive),
                        REAL("w_nonpositive_share", (double) x->w_nonpositive / n),
                        INT("w_guarded", x->w_guarded), REAL("w_eps", r->opts.w_eps),
                        REAL("w", x->w.mean), REAL("w_std", x->w.std),
                        INT("w_above_one", x->w_above_one), REAL("pearson_w_pt", x->pearson_w_pt),
                        REAL("w_p25_unguarded", x->w_unguarded_dist.quantile[1]),
                        REAL("w_p50_unguarded", x->w_unguarded_dist.quantile[2]),
                        REAL("w_p75_unguarded", x->w_unguarded_dist.quantile[3]),
                        REAL("w_unguarded", x->w_unguarded),
                        REAL("w_std_unguarded", x->w_std_unguarded),
                        REAL("pearson_w_pt_unguarded", x->pearson_w_pt_unguarded));
        return err;
}

/* The distributions (and histograms) of every per-sample quantity at one temperature. */
static int dist_rows(const struct kdl__split_rows *w, const kdl_split_tau_result *x)
{
        double tau = x->tau;
        int err;

        err = emit_dist(w, tau, "pt_y", &x->pt_y, false);
        err = err ?: emit_dist(w, tau, "ps_y", &x->ps_y, false);
        err = err ?: emit_dist(w, tau, "gap", &x->gap, false);
        err = err ?: emit_dist(w, tau, "omega", &x->omega, false);
        err = err ?: emit_dist(w, tau, "eps", &x->eps, false);
        err = err ?: emit_dist(w, tau, "nt_entropy", &x->nt_entropy, false);
        err = err ?: emit_dist(w, tau, "w", &x->w, true);
        err = err ?: emit_dist(w, tau, "w_unguarded", &x->w_unguarded_dist, true);
        return err;
}

/* The most confused pairs at one temperature (the blocked mode: the full
 * one lists every cell of M in its long tables). */
static int pair_rows(const struct kdl__split_rows *w, const kdl_split_result *r,
                     const kdl_split_tau_result *x)
{
        double tau = x->tau;
        int err = 0;

        for (size_t q = 0; q < x->ntop && !err; q++) {
                const kdl_split_pair *p = &x->top[q];

                err = PUT_COLS(w->t[T_PAIRS], INT("rank", q + 1), INT("i", p->i), INT("j", p->j),
                               INT("samples_i", r->class_count[p->i]), REAL("mass", p->mass),
                               REAL("confusion", p->confusion));
        }
        return err;
}

/* One row per class at one temperature: the means over the samples of its label. */
static int class_rows(const struct kdl__split_rows *w, const kdl_split_result *r,
                      const kdl_split_tau_result *x)
{
        double tau = x->tau;
        int err = 0;

        for (size_t y = 0; y < r->c && !err; y++)
                err = PUT_COLS(w->t[T_CLASSES], INT("class", y), INT("samples", r->class_count[y]),
                               REAL("kl", x->class_kl[y]), REAL("tckd", x->class_tckd[y]),
                               REAL("nckd", x->class_nckd[y]));
        return err;
}

int kdl__split_emit(const struct kdl__split_rows *w, const kdl_split_result *r, size_t skipped)
{
        kdl_table *const *t = w->t;
        int err = 0;

        for (size_t k = 0; k < r->ntaus && !err; k++) {
                const kdl_split_tau_result *x = &r->tau[k];

                err = summary_rows(w, r, x, skipped);
                if (!err && r->opts.domain == KDL_SPLIT_DOMAIN_BLOCKED)
                        err = pair_rows(w, r, x);
                err = err ?: dist_rows(w, x);
                err = err ?: class_rows(w, r, x);
                if (!err && w->o->long_tables && x->confusion)
                        err = emit_matrix(w, t[T_CONF], true, x->tau, x->confusion, r->class_count);
        }
        if (!err && w->o->long_tables && r->cos_teacher)
                err = emit_matrix(w, t[T_COS_T], false, 0.0, r->cos_teacher, NULL);
        if (!err && w->o->long_tables && r->cos_student)
                err = emit_matrix(w, t[T_COS_S], false, 0.0, r->cos_student, NULL);
        return err;
}

int kdl__split_note_heads(const struct kdl__split_rows *w, const kdl_split_result *r, kdl_doc *doc)
{
        int err = 0;

        if (!r->has_head_teacher)
                err = kdl_doc_add_note(doc,
                                       "'%s': no %s/head/weight: teacher head cosines and "
                                       "their agreement are unavailable",
                                       w->teacher, w->ckt->group);
        if (!err && !r->has_head_student)
                err = kdl_doc_add_note(doc,
                                       "'%s': no %s/head/weight: student head cosines and "
                                       "their agreement are unavailable",
                                       w->student, w->cks->group);
        return err;
}

/* How the domain level was computed, unless in full; @asked: the mode asked. */
static int domain_notes(const struct kdl_run_split_opts *o, const kdl_split_plan *plan,
                        enum kdl_split_domain asked, size_t c, kdl_doc *doc)
{
        const char *why = asked == KDL_SPLIT_DOMAIN_BLOCKED ? "--domain blocked"
                          : c > o->metric.domain_max_c      ? "C above --domain-max-c"
                                                            : "the C x C matrices, with their "
                                                              "tables in JSON, CSV or the "
                                                              "report, over the memory budget";
        int err;

        if (plan->domain == KDL_SPLIT_DOMAIN_OFF)
                return kdl_doc_add_note(doc, "domain level off (--domain off): no domain table, "
                                             "no soft confusion, head cosines or confused pairs");
        if (plan->domain != KDL_SPLIT_DOMAIN_BLOCKED)
                return 0;
        err = kdl_doc_add_note(
                doc,
                "domain level without any C x C matrix (C = %zu, %s): %zu block%s of classes, "
                "the logits read %zu times; each block sums p^t over the samples of its classes "
                "(rows of the soft confusion M from its first class on) and over every sample for "
                "its columns, so it holds M_ij and M_ji of every pair with a class in it, and "
                "forms (M + M^T)/2 and both heads' cosines for those pairs; "
                "pearson_confusion_* are over the same pairs as the full C x C computation, "
                "pearson_heads from traces of d x d products of the unit-norm head rows "
                "(sum_{i<j} S^t_ij S^s_ij = (|W_t^T W_s|_F^2 - sum_i |w_t,i|^2 |w_s,i|^2) / 2 "
                "and the like), cka_heads in feature space: the full computation's values up "
                "to rounding",
                c, why, plan->nblocks, plan->nblocks > 1 ? "s" : "",
                plan->nblocks > 2 ? plan->nblocks : 2);
        if (!err && o->metric.top_pairs)
                err = kdl_doc_add_note(
                        doc,
                        "confused_pairs: the %zu ordered class pairs (i, j), i != j, of the "
                        "largest soft count mass = sum of p^t_tau,j over the samples of true class "
                        "i (confusion = mass / samples_i, the cell M_ij), ties by the smaller i, "
                        "then j; exact: each pair's sum is formed once, in one block, and the "
                        "largest are kept (--top-pairs)",
                        o->metric.top_pairs);
        return err;
}

int kdl__split_notes(const struct kdl_run_split_opts *o, const kdl_split_plan *plan,
                     enum kdl_split_domain asked, size_t c, kdl_doc *doc)
{
        int err = kdl_doc_add_note(
                doc, "KL, TCKD and NCKD are tau^2 KL(...) as in mdistiller; NCKD excludes the "
                     "target exactly (log-sum-exp over the other classes); KL = TCKD + "
                     "(1 - p^t_y) NCKD, identity_residual is its largest violation");
        if (!err)
                err = kdl_doc_add_note(
                        doc,
                        "omega = clip(p^t_y / p^s_y, 0, %g) (AEKT weight, a "
                        "stand-in: docs/split.md#the-aekt-weight); "
                        "eps = lambda (1 - p^t_y) C/(C-1) and w_n "
                        "(docs/split.md#universe-label-smoothing, "
                        "docs/split.md#instance-rescaling-weights) with lambda = %g, "
                        "w_n denominator guarded at %g; all from the "
                        "distributions at temperature "
                        "tau",
                        o->metric.omega_max, o->metric.lambda, o->metric.w_eps);
        if (!err)
                err = kdl_doc_add_note(
                        doc,
                        "quantiles: from fixed-bin histograms (%zu bins on bounded ranges; "
                        "1/%d-octave log2 bins of |w| on either side of 0 for w), error at most "
                        "one bin (for w below %.2g relative, %.2g absolute near 0); means, std, "
                        "min, max, correlations and counts are exact; w_n needs the mean "
                        "teacher confidence, so the logits are read twice",
                        o->metric.nbins,
                        KDL_SPLIT_W_BINS / (KDL_SPLIT_W_LOG2_MAX - KDL_SPLIT_W_LOG2_MIN),
                        exp2(1.0 /
                             (KDL_SPLIT_W_BINS / (KDL_SPLIT_W_LOG2_MAX - KDL_SPLIT_W_LOG2_MIN))) -
                                1.0,
                        exp2(KDL_SPLIT_W_LOG2_MIN + 1));
        if (!err)
                err = kdl_doc_add_note(
                        doc,
                        "w_n: read its median and quartiles (w_p25, w_p50, w_p75; over the "
                        "samples whose denominator was not floored: *_unguarded) and "
                        "w_nonpositive_share; its mean w and w_std are not robust: the samples "
                        "whose denominator was floored at w_eps (w_guarded) reach |w_n| up to "
                        "1/w_eps and can dominate them.  w_n <= 0 where the student's q_y already "
                        "exceeds the KD target 1 - lambda (1 - p^t_y): KD lowers the target "
                        "logit there");
        err = err ?: domain_notes(o, plan, asked, c, doc);
        if (!err && !o->long_tables)
                err = kdl_doc_add_note(doc, plan->domain == KDL_SPLIT_DOMAIN_FULL
                                                    ? "histograms and the C x C matrices (soft "
                                                      "confusion, head cosines): --format json "
                                                      "or csv"
                                                    : "histograms: --format json or csv");
        return err;
}
