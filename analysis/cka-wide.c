/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/budget.h"
#include "analysis/cka-internal.h"
#include "metrics/base/banned.h"

/*
 * Wide sources of a CKA pass (docs/cka.md#wide-layers).  Linear CKA of a source of width
 * D in feature space keeps D x D sums, and in Gram space n x n ones; when both D and n are
 * large (the logits and labels of a language model: D = C = 32,000, n = 200,000 tokens)
 * neither fits, and an exact product of two such sources costs ~2 n D² flops.  So a source
 * whose width and sample count both exceed --wide-max is wide: the labels, whose products
 * are class sums and counts, are then kept as classes (exact, no C x C); any other source
 * is replaced by a seeded Gaussian sketch of --wide-rank columns (an estimate, with its
 * standard error), or with --wide exact kept whole, its products with the other wide
 * sources computed in column strips over more passes.
 */

/* The kdl_sample_hash() streams of the sketches: source k uses 2 k and 2 k + 1 past this. */
#define STREAM_SKETCH ((uint64_t) 1 << 62)

void kdl__cka_wide_release(struct kdl__cka_wide *w)
{
        free(w->kinds);
        free(w->sw);
        free(w->wide);
        free(w->ext);
        *w = (struct kdl__cka_wide){0};
}

/* Whether the pair (@j, @k) of @l is one the tables need (@pairs NULL: all). */
static bool needed(const bool *pairs, size_t l, size_t j, size_t k)
{
        return j == k || !pairs || pairs[j * l + k] || pairs[k * l + j];
}

/* Exact mode: the pairs of two wide sources, or of one and the labels taken as classes. */
static int external_pairs(struct kdl__cka_wide *w, size_t l, const bool *pairs)
{
        size_t next = 0;

        w->ext = kdl_new(bool, l *l);
        if (!w->ext)
                return -ENOMEM;
        for (size_t j = 0; j < l; j++)
                for (size_t k = 0; k < l; k++) {
                        bool hj = w->kinds[j] == KDL_CKA_LAYER_ONEHOT,
                             hk = w->kinds[k] == KDL_CKA_LAYER_ONEHOT;

                        w->ext[j * l + k] =
                                needed(pairs, l, j, k) &&
                                ((w->wide[j] && (w->wide[k] || hk)) || (hj && w->wide[k]));
                        next += w->ext[j * l + k];
                }
        if (!next) {
                free(w->ext);
                w->ext = NULL;
        }
        return 0;
}

int kdl__cka_wide_init(struct kdl__cka_wide *w, const struct kdl__srcs *l, size_t n, bool gram,
                       const struct kdl__cka_compute_opts *o)
{
        size_t m = l->n ? l->n : 1;
        bool on = o->wide_max && !gram && n > o->wide_max;

        *w = (struct kdl__cka_wide){0};
        w->kinds = kdl_new(enum kdl_cka_layer, m);
        w->sw = kdl_new(size_t, m);
        w->wide = kdl_new(bool, m);
        if (!w->kinds || !w->sw || !w->wide)
                return -ENOMEM;
        for (size_t k = 0; k < l->n; k++) {
                size_t d = l->v[k].width;

                w->kinds[k] = KDL_CKA_LAYER_DENSE;
                w->sw[k] = d;
                if (!on || d <= o->wide_max)
                        continue;
                if (!l->v[k].ds) {
                        w->kinds[k] = KDL_CKA_LAYER_ONEHOT;
                        w->hot = true;
                        continue;
                }
                w->wide[k] = true;
                w->nwide++;
                if (o->wide == KDL_RUN_CKA_WIDE_SKETCH) {
                        assert(o->wide_rank && o->wide_rank < d);
                        w->kinds[k] = KDL_CKA_LAYER_SKETCH;
                        w->sw[k] = o->wide_rank;
                }
        }
        if (w->nwide && o->wide == KDL_RUN_CKA_WIDE_EXACT)
                return external_pairs(w, l->n, o->pairs);
        return 0;
}

int kdl__cka_wide_how(const struct kdl__cka_wide *w, size_t nsrc, bool gram, unsigned char **ret)
{
        unsigned char *how = kdl_new(unsigned char, nsrc ? nsrc *nsrc : 1);

        if (!how)
                return -ENOMEM;
        for (size_t j = 0; j < nsrc && !gram; j++)
                for (size_t k = 0; k < nsrc; k++) {
                        unsigned char h = KDL__CKA_EXACT;

                        /* In exact mode every pair with a wide source rests on the strips
                         * (at least its own term). */
                        if (w->ext && (w->wide[j] || w->wide[k]))
                                h = KDL__CKA_STRIPS;
                        else if (w->kinds[j] == KDL_CKA_LAYER_SKETCH ||
                                 w->kinds[k] == KDL_CKA_LAYER_SKETCH)
                                h = KDL__CKA_SKETCH;
                        how[j * nsrc + k] = h;
                }
        *ret = how;
        return 0;
}

void kdl__cka_wide_sketches_free(kdl_cka_sketch **k, size_t n)
{
        for (size_t i = 0; k && i < n; i++)
                kdl_cka_sketch_free(k[i]);
        free(k);
}

int kdl__cka_wide_sketches(const struct kdl__cka_wide *w, const struct kdl__srcs *l,
                           const struct kdl__cka_compute_opts *o, kdl_cka_sketch ***ret)
{
        kdl_cka_sketch **k = kdl_new(kdl_cka_sketch *, l->n ? l->n : 1);
        int err = 0;

        if (!k)
                return -ENOMEM;
        for (size_t i = 0; i < l->n && !err; i++)
                if (w->kinds[i] == KDL_CKA_LAYER_SKETCH)
                        err = kdl_cka_sketch_new(l->v[i].width, w->sw[i], o->seed,
                                                 STREAM_SKETCH + 2 * (uint64_t) i, &k[i]);
        if (err < 0) {
                kdl__cka_wide_sketches_free(k, l->n);
                return err;
        }
        *ret = k;
        return 0;
}

/* The budget of the column strips: half of the analysis's. */
static size_t strips_budget(const struct kdl__cka_compute_opts *o)
{
        return o->max_bytes / 2;
}

int kdl__cka_wide_strips(const struct kdl__cka_wide *w, const struct kdl__srcs *l,
                         const kdl_cka_state *state, const struct kdl__cka_compute_opts *o,
                         kdl_cka_strips **ret)
{
        double **mean = kdl_new(double *, l->n ? l->n : 1);
        int err = mean ? 0 : -ENOMEM;

        for (size_t k = 0; k < l->n && !err; k++) {
                mean[k] = kdl_new(double, w->sw[k]);
                err = mean[k] ? kdl_cka_state_mean(state, k, mean[k]) : -ENOMEM;
        }
        err = err
                      ?: kdl_cka_strips_new(l->n, w->sw, w->kinds, w->ext,
                                            (const double *const *) mean, strips_budget(o), ret);
        for (size_t k = 0; mean && k < l->n; k++)
                free(mean[k]);
        free(mean);
        return err;
}

int kdl__cka_wide_need(const struct kdl__cka_wide *w, const struct kdl__srcs *l,
                       const struct kdl__cka_compute_opts *o, kdl__need *nd, size_t *ret_passes)
{
        size_t sk = 0, nsk = 0, passes = 0, bytes = 0;
        int err;

        for (size_t k = 0; k < l->n; k++)
                if (w->kinds[k] == KDL_CKA_LAYER_SKETCH) {
                        sk = kdl_sat_add(sk, kdl_cka_sketch_bytes(l->v[k].width, w->sw[k]));
                        nsk++;
                }
        err = kdl__need_add(nd, sk, KDL_LEVER_WIDE_RANK,
                            "the Gaussian sketches of %zu wide sources to %zu columns", nsk,
                            o->wide_rank);
        if (!err && w->ext) {
                kdl_cka_strips_plan(l->n, w->sw, w->kinds, w->ext, strips_budget(o), &passes,
                                    &bytes);
                err = kdl__need_add(nd, bytes, 0,
                                    "the column strips of the %zu wide sources' products "
                                    "(%zu more passes over the data)",
                                    w->nwide, passes);
        }
        *ret_passes = passes;
        return err;
}

static const char *const wide_names[KDL_RUN_CKA_WIDE_COUNT_] = {"sketch", "exact"};

const char *kdl_run_cka_wide_name(enum kdl_run_cka_wide w)
{
        assert(w < KDL_RUN_CKA_WIDE_COUNT_);
        return wide_names[w];
}

int kdl_run_cka_wide_parse(const char *s, enum kdl_run_cka_wide *ret)
{
        for (int w = 0; w < KDL_RUN_CKA_WIDE_COUNT_; w++)
                if (strcmp(s, wide_names[w]) == 0) {
                        *ret = (enum kdl_run_cka_wide) w;
                        return 0;
                }
        return kdl_error(-KDL_EUSAGE, "--wide: expected sketch or exact, found '%s'", s);
}

/* How the pair (@a, @b) was computed: "feature" or "gram" (exact), "sketch" (a wide
 * source's sketch), "strips" (exact, in column strips). */
const char *kdl__cka_method(const struct kdl__cka_results *res, size_t nsrc, size_t a, size_t b)
{
        if (res->gram)
                return "gram";
        switch (res->how ? res->how[a * nsrc + b] : KDL__CKA_EXACT) {
        case KDL__CKA_SKETCH:
                return "sketch";
        case KDL__CKA_STRIPS:
                return "strips";
        default:
                return "feature";
        }
}

/* How the pairs with a wide source were computed, and the labels at large C. */
int kdl__cka_wide_notes(kdl_doc *doc, const struct kdl__cka_results *last,
                        const struct kdl_run_cka_opts *o)
{
        int err = 0;

        if (last->nwide && o->wide == KDL_RUN_CKA_WIDE_SKETCH)
                err = kdl_doc_add_note(
                        doc,
                        "%zu wide source%s (width and sample count above --wide-max %zu): each "
                        "replaced by a seeded Gaussian sketch of %zu columns (seed %llu), so "
                        "their pairs (method 'sketch') are estimates of linear and debiased "
                        "CKA: products unbiased, the sketch's own terms corrected; "
                        "*_sketch_se is the standard error the sketch adds (jackknife over its "
                        "columns); --wide exact computes them exactly, in column strips over "
                        "more passes",
                        last->nwide, last->nwide > 1 ? "s" : "", o->wide_max, last->rank,
                        (unsigned long long) o->seed);
        else if (last->nwide)
                err = kdl_doc_add_note(
                        doc,
                        "%zu wide source%s (width and sample count above --wide-max %zu): kept "
                        "whole, their products with each other and with the labels computed "
                        "exactly in column strips over %zu more passes (method 'strips' for "
                        "every pair with a wide source; no bootstrap replicates for those)",
                        last->nwide, last->nwide > 1 ? "s" : "", o->wide_max, last->strips);
        if (!err && last->hot)
                err = kdl_doc_add_note(doc,
                                       "labels: more classes than --wide-max (%zu): their "
                                       "products are class sums and counts, exact, with no "
                                       "C x C block",
                                       o->wide_max);
        return err;
}
