/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "metrics/base/alloc.h"
#include "metrics/quality.h"
#include "analysis/cka-internal.h"
#include "analysis/layers-internal.h"
#include "metrics/base/banned.h"

/* The fewest classes of the authors' settings (CIFAR-10); with
 * KDL_QUALITY_MIN_PER_CLASS (CIFAR-100's 50 per class) what an automatic
 * minimum per class aims at. */
#define MIN_CLASSES 10
/* The kdl_sample_hash() stream of a seeded class subset (the subsamples use
 * 1 and 2, the CKA minibatches 3). */
#define STREAM_CLASSES 4

void kdl__layers_classes_release(struct kdl__layers_classes *c)
{
        free(c->want_c);
        free(c->want_x);
        free(c->kept);
        free(c->count);
        *c = (struct kdl__layers_classes){0};
}

static size_t min_size(size_t a, size_t b)
{
        return a < b ? a : b;
}

/* Classes with at least @m samples, from @hist[k] (classes with k samples,
 * the last entry those with @top or more); @m <= @top. */
static size_t at_least(const size_t *hist, size_t top, size_t m)
{
        size_t f = 0;

        for (size_t k = m; k <= top; k++)
                f += hist[k];
        return f;
}

/*
 * M chosen from the counts: the largest m <= KDL_QUALITY_MIN_PER_CLASS such
 * that T classes have m samples and the subsample holds m of each of them,
 * T = min(the classes wanted, those with 2 samples, subsample / 2), the
 * classes wanted being --classes K, or MIN_CLASSES.  So the authors' sizes
 * (>= 10 classes, >= 50 per class) when the dump has them; else as many
 * samples per class as keep T classes.  m = 2 always qualifies.
 */
static size_t auto_min(const size_t *hist, size_t f2, size_t subsample, size_t wanted)
{
        size_t t = min_size(min_size(wanted, f2), subsample / 2);

        for (size_t m = KDL_QUALITY_MIN_PER_CLASS; m > 2; m--)
                if (at_least(hist, KDL_QUALITY_MIN_PER_CLASS, m) >= t && subsample / m >= t)
                        return m;
        return 2;
}

/* M and the classes eligible with it (hist as at_least(), C classes). */
static int choose_min(struct kdl__layers_classes *c, const size_t *hist,
                      const struct kdl_run_layers_opts *o)
{
        size_t f2 = at_least(hist, KDL_QUALITY_MIN_PER_CLASS, 2), m = o->min_per_class;
        size_t wanted = c->why == KDL_LAYERS_CLASSES_AUTO ? MIN_CLASSES : c->why;

        if (f2 < 2)
                return kdl_error(-KDL_ESHAPE,
                                 "layer quality needs two classes with two samples each; %zu of "
                                 "the %zu classes %s two samples or more",
                                 f2, c->nclasses, f2 == 1 ? "has" : "have");
        c->min_auto = m == 0;
        if (c->min_auto)
                m = auto_min(hist, f2, o->subsample, wanted);
        if (o->subsample / m < 2)
                return kdl_error(-KDL_EUSAGE,
                                 "--min-per-class %zu leaves room for fewer than 2 classes in "
                                 "--subsample %zu",
                                 m, o->subsample);
        c->min_per_class = m;
        c->eligible = 0;
        for (size_t k = 0; k < c->nclasses; k++)
                c->eligible += c->count[k] >= m;
        if (c->eligible < 2)
                return kdl_error(-KDL_EUSAGE,
                                 "--min-per-class %zu: %zu of the %zu classes %s that many "
                                 "samples; lower it",
                                 m, c->eligible, c->nclasses, c->eligible == 1 ? "has" : "have");
        return 0;
}

/* The subset: M, then at most subsample / M (and K) of the eligible classes. */
static int subset(struct kdl__layers_classes *c, const struct kdl_run_layers_opts *o)
{
        size_t *hist = kdl_new(size_t, KDL_QUALITY_MIN_PER_CLASS + 1), kmax;
        int r;

        if (!hist)
                return -ENOMEM;
        for (size_t k = 0; k < c->nclasses; k++)
                hist[min_size(c->count[k], KDL_QUALITY_MIN_PER_CLASS)]++;
        r = choose_min(c, hist, o);
        free(hist);
        if (r < 0)
                return r;
        kmax = o->subsample / c->min_per_class;
        if (c->why != KDL_LAYERS_CLASSES_AUTO)
                kmax = min_size(kmax, c->why);
        r = kdl_sample_classes(c->count, c->nclasses, c->min_per_class, kmax, c->rule, o->seed,
                               STREAM_CLASSES, &c->kept, &c->nkept);
        if (r < 0)
                return r;
        c->n_kept = 0;
        for (size_t i = 0; i < c->nkept; i++)
                c->n_kept += c->count[c->kept[i]];
        return 0;
}

int kdl__layers_classes_init(const int64_t *labels, size_t n, size_t nclasses,
                             const struct kdl_run_layers_opts *o, struct kdl__layers_classes *ret)
{
        struct kdl__layers_classes *c = ret;
        int r = 0;

        assert(labels && nclasses && o && ret);
        *c = (struct kdl__layers_classes){.nclasses = nclasses,
                                          .n = n,
                                          .why = o->classes,
                                          .rule = o->class_rule,
                                          .nkept = nclasses,
                                          .n_kept = n};
        r = kdl_sample_class_counts(n, labels, nclasses, &c->count);
        if (r < 0)
                return r;
        c->want_x = kdl_new(size_t, nclasses);
        c->want_c = kdl_new(size_t, nclasses);
        if (!c->want_x || !c->want_c)
                return -ENOMEM;
        if (o->classes == KDL_LAYERS_CLASSES_ALL && o->min_per_class)
                return kdl_error(-KDL_EUSAGE, "--min-per-class chooses the classes of a subset: "
                                              "it does not go with --classes all");
        /* A subset when asked for (--classes K, --min-per-class M), or
         * when the subsample cannot hold 2 samples of every class. */
        c->subset = o->classes != KDL_LAYERS_CLASSES_ALL &&
                    (o->classes != KDL_LAYERS_CLASSES_AUTO || o->min_per_class ||
                     o->subsample / nclasses < 2);
        if (!c->subset && o->subsample / nclasses < 2)
                return kdl_error(-KDL_EUSAGE,
                                 "--subsample %zu leaves fewer than 2 samples for each of the %zu "
                                 "classes (--classes all; --classes auto takes a subset of them)",
                                 o->subsample, nclasses);
        if (c->subset)
                r = subset(c, o);
        if (r < 0)
                return r;
        /* X: subsample / K of each kept class; X_c: min(per_class, the
         * kept samples / K), the authors' min(500, N / C) when all are kept. */
        c->per_x = o->subsample / c->nkept;
        c->per_c = min_size(o->per_class, c->n_kept / c->nkept);
        c->per_c = c->per_c ? c->per_c : 1;
        for (size_t k = 0; k < nclasses; k++)
                if (!c->subset) {
                        c->want_x[k] = c->per_x;
                        c->want_c[k] = c->per_c;
                }
        for (size_t i = 0; c->subset && i < c->nkept; i++) {
                c->want_x[c->kept[i]] = c->per_x;
                c->want_c[c->kept[i]] = c->per_c;
        }
        return 0;
}

/* "the 2500 most frequent" and the like: how the kept classes were chosen. */
static char *rule_text(const struct kdl__layers_classes *c, uint64_t seed)
{
        if (c->nkept == c->eligible)
                return kdl__asprintf("every class");
        if (c->rule == KDL_SAMPLE_FREQUENT)
                return kdl__asprintf("the %zu most frequent", c->nkept);
        return kdl__asprintf("a seeded subset (seed %llu, by class id)", (unsigned long long) seed);
}

int kdl__layers_classes_note(const struct kdl__layers_classes *c,
                             const struct kdl_run_layers_opts *o, kdl_doc *doc)
{
        char *how, *why;
        int err;

        if (!c->subset)
                return 0;
        how = rule_text(c, o->seed);
        if (c->why != KDL_LAYERS_CLASSES_AUTO)
                why = kdl__asprintf("--classes %zu", c->why);
        else if (o->subsample / c->nclasses < 2)
                why = kdl__asprintf("--classes auto: --subsample %zu leaves fewer than 2 samples "
                                    "for each of the %zu classes",
                                    o->subsample, c->nclasses);
        else
                why = kdl__asprintf("--min-per-class %zu", c->min_per_class);
        if (!how || !why) {
                free(how);
                free(why);
                return -ENOMEM;
        }
        err = kdl_doc_add_note(doc,
                               "class subset (%s): Q, S, I, E and the class-geometry columns are "
                               "computed on %zu of the %zu classes, %s of the %zu with at least "
                               "%zu samples (--min-per-class %s, --class-rule %s), which hold %zu "
                               "of the %zu samples (%.1f %%); table layers_class_subset",
                               why, c->nkept, c->nclasses, how, c->eligible, c->min_per_class,
                               c->min_auto ? "auto" : "given", kdl_sample_class_rule_name(c->rule),
                               c->n_kept, c->n,
                               c->n ? 100.0 * (double) c->n_kept / (double) c->n : 0.0);
        free(why);
        free(how);
        return err;
}

int kdl__layers_sequences_note(const struct kdl_run_layers_opts *o, kdl_doc *doc)
{
        char how[40] = "whole";

        if (!o->sequences)
                return 0;
        if (o->per_sequence)
                snprintf(how, sizeof(how), "%zu tokens of each", o->per_sequence);
        return kdl_doc_add_note(doc,
                                "--sequences: S, E and the class-geometry columns are on the "
                                "kept classes' tokens among those drawn by /sequence_ids (%zu "
                                "wanted; sequences in a seeded order, %s), not on a "
                                "class-balanced subsample (nor subsample_per_class of a class "
                                "subset); the class spectra stay class-balanced",
                                o->subsample, how);
}

/* The one row of "layers_class_subset". */
static int summary_row(kdl_table *t, const struct kdl__layers_classes *c)
{
        size_t lo = SIZE_MAX, hi = 0;
        int err = kdl_table_add_row(t) < 0 ? -ENOMEM : 0;

        for (size_t i = 0; i < c->nkept; i++) {
                lo = min_size(lo, c->count[c->kept[i]]);
                hi = c->count[c->kept[i]] > hi ? c->count[c->kept[i]] : hi;
        }

        err = err ?: kdl_table_put_str(t, "rule", kdl_sample_class_rule_name(c->rule));
        err = err ?: kdl_table_put_int(t, "classes", (long long) c->nclasses);
        err = err ?: kdl_table_put_int(t, "eligible", (long long) c->eligible);
        err = err ?: kdl_table_put_int(t, "kept", (long long) c->nkept);
        err = err ?: kdl_table_put_int(t, "min_per_class", (long long) c->min_per_class);
        err = err ?: kdl_table_put_int(t, "samples", (long long) c->n);
        err = err ?: kdl_table_put_int(t, "samples_kept", (long long) c->n_kept);
        err = err ?: kdl_table_put_int(t, "kept_class_min", (long long) lo);
        err = err ?: kdl_table_put_int(t, "kept_class_max", (long long) hi);
        err = err ?: kdl_table_put_int(t, "subsample_per_class", (long long) c->per_x);
        err = err ?: kdl_table_put_int(t, "spectra_per_class", (long long) c->per_c);
        return err;
}

int kdl__layers_classes_table(const struct kdl__layers_classes *c, kdl_doc *doc)
{
        kdl_table *t = NULL;
        int err;

        if (!c->subset)
                return 0;
        err = kdl_table_new("layers_class_subset", "Classes Q is computed on", &t);
        err = err ?: summary_row(t, c);
        if (!err) {
                err = kdl_doc_add_table(doc, t);
                t = NULL;
        }
        kdl_table_free(t);
        return err;
}

int kdl__layers_sequence_rows(kdl_h5file *ft, const kdl_pair *pair, const int64_t *labels, size_t n,
                              const struct kdl__layers_classes *c,
                              const struct kdl_run_layers_opts *o, uint64_t stream, size_t **ret,
                              size_t *ret_n)
{
        size_t *rows = NULL, m = 0, kept = 0;
        int err;

        assert(ft && labels && c && o && ret && ret_n);
        err = kdl__subsample_sequences(ft, pair, n, o->subsample, o->per_sequence, o->seed, stream,
                                       &rows, &m);
        if (err < 0)
                return err;
        for (size_t i = 0; i < m; i++) {
                int64_t y = labels[rows[i]];

                if (y >= 0 && (size_t) y < c->nclasses && c->want_x[y] > 0)
                        rows[kept++] = rows[i];
        }
        *ret = rows;
        *ret_n = kept;
        return 0;
}
