/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/sample.h"
#include "analysis/cka-internal.h"
#include "analysis/layers.h"
#include "metrics/base/banned.h"

#define DEFAULT_K         4
#define DEFAULT_SUBSAMPLE 5000
#define DEFAULT_PER_CLASS 500
#define DEFAULT_MAX_BYTES ((size_t) 8 << 30)
#define ROBUST_FRACTION   0.01

/* kdl_sample_select() streams: the quality subsample X and the class
 * spectra subsample X_c are drawn independently, as the authors' code does. */
#define STREAM_X  1
#define STREAM_XC 2

struct tables {
        kdl_table *ranked, *detail, *recommended, *cka;
};

/* One teacher layer's results. */
struct row {
        size_t src; /* index in the sources */
        kdl_quality q;
        double cka_logits, cka_logits_deb, cka_logits_rob;
        double cka_labels, cka_labels_deb, cka_labels_rob;
        long long student_best; /* source index of the most similar student layer, -1 */
        double cka_student_best;
};

void kdl_run_layers_opts_init(struct kdl_run_layers_opts *o)
{
        *o = (struct kdl_run_layers_opts){.k = DEFAULT_K,
                                          .subsample = DEFAULT_SUBSAMPLE,
                                          .per_class = DEFAULT_PER_CLASS,
                                          .variant = KDL_QUALITY_CODE,
                                          .max_bytes = DEFAULT_MAX_BYTES};
        kdl_run_common_init(&o->common);
}

static double entry(const kdl_cka_matrix *m, const double *v, size_t i, long long j)
{
        return m && v && j >= 0 ? v[i * m->nlayers + (size_t) j] : (double) NAN;
}

/* Gather the rows @want of source @k only (its class-spectra subsample). */
static int gather_layer(kdl_inputs *in, const struct kdl__srcs *all, size_t k, size_t n,
                        const size_t *want, size_t nwant, const struct kdl_run_layers_opts *o,
                        struct kdl__srcs *one, struct kdl__gather *g)
{
        struct kdl_stream_opts so = {.skip_nonfinite = o->common.skip_nonfinite};
        struct kdl__feed f = {
                .l = one, .fa = in->teacher, .rule = o->common.spatial, .labels = true, .g = g};
        kdl__job job = kdl__feed_job(&f);
        kdl_stream *s = NULL;
        int r;

        *one = (struct kdl__srcs){0};
        r = kdl__srcs_add(one, all->v[k].name, all->v[k].has_depth, all->v[k].depth, 0,
                          all->v[k].ds, all->v[k].width);
        r = r ?: kdl__gather_init(g, one, want, nwant);
        r = r ?: kdl_stream_new(n, NULL, &so, &s);
        r = r ?: kdl__jobs_run(s, &job, 1, NULL);
        kdl_stream_free(s);
        kdl__feed_release(&f);
        return r;
}

/* Q descending, NaN last, ties by depth then source order. */
static int cmp_rows(const void *a, const void *b, void *ctx)
{
        const struct kdl__srcs *sort_srcs = ctx;
        const struct row *x = a, *y = b;
        bool nx = isnan(x->q.q), ny = isnan(y->q.q);
        long long dx = sort_srcs->v[x->src].depth, dy = sort_srcs->v[y->src].depth;

        if (nx != ny)
                return nx ? 1 : -1;
        if (!nx && x->q.q > y->q.q)
                return -1;
        if (!nx && x->q.q < y->q.q)
                return 1;
        if (dx != dy)
                return dx < dy ? -1 : 1;
        return x->src < y->src ? -1 : x->src > y->src;
}

static int cmp_depth(const void *a, const void *b, void *ctx)
{
        const struct kdl__srcs *sort_srcs = ctx;
        const struct row *x = *(const struct row *const *) a, *y = *(const struct row *const *) b;
        long long dx = sort_srcs->v[x->src].depth, dy = sort_srcs->v[y->src].depth;

        if (dx != dy)
                return dx < dy ? -1 : 1;
        return x->src < y->src ? -1 : x->src > y->src;
}

static int emit(struct tables *tb, const struct kdl__srcs *l, struct row *rows, size_t nrows,
                const struct kdl_ckpair *ck, bool student, size_t k)
{
        struct row **rec = kdl_new(struct row *, nrows ? nrows : 1);
        size_t nrec = nrows < k ? nrows : k;
        int err = 0;

        if (!rec)
                return -ENOMEM;
        qsort_r(rows, nrows, sizeof(*rows), cmp_rows, (void *) l);
        for (size_t i = 0; i < nrows && !err; i++) {
                const struct row *r = &rows[i];
                const struct kdl__src *s = &l->v[r->src];
                kdl_table *t = tb->ranked;

                if (kdl_table_add_row(t) < 0 || kdl_table_add_row(tb->detail) < 0) {
                        err = -ENOMEM;
                        break;
                }
                err = kdl_table_put_int(t, "rank", (long long) i + 1);
                err = err ?: kdl_table_put_str(t, "checkpoint", ck->main->name);
                err = err ?: kdl_table_put_str(t, "layer", s->name);
                err = err ?: kdl_table_put_int(t, "depth", s->depth);
                err = err ?: kdl_table_put_int(t, "width", (long long) s->width);
                err = err ?: kdl_table_put_real(t, "q", r->q.q);
                err = err ?: kdl_table_put_real(t, "s", r->q.s);
                err = err ?: kdl_table_put_real(t, "i", r->q.i);
                err = err ?: kdl_table_put_real(t, "e", r->q.e);
                err = err ?: kdl_table_put_bool(t, "recommended", i < nrec);
                err = err ?: kdl_table_put_real(t, "cka_logits", r->cka_logits);
                err = err ?: kdl_table_put_real(t, "cka_labels", r->cka_labels);
                err = err ?: kdl_table_put_real(t, "cka_logits_robust", r->cka_logits_rob);
                err = err ?: kdl_table_put_real(t, "ncm_accuracy", r->q.ncm_accuracy);
                err = err ?: kdl_table_put_real(t, "nc1", r->q.nc1);
                err = err ?: kdl_table_put_real(t, "effective_rank", r->q.effective_rank);
                if (!err && student) {
                        err = kdl_table_put_str(t, "student_best",
                                                r->student_best >= 0 ? l->v[r->student_best].name
                                                                     : "-");
                        err = err ?: kdl_table_put_real(t, "cka_student_best", r->cka_student_best);
                }

                t = tb->detail;
                err = err ?: kdl_table_put_str(t, "checkpoint", ck->main->name);
                err = err ?: kdl_table_put_str(t, "layer", s->name);
                err = err ?: kdl_table_put_int(t, "depth", s->depth);
                err = err ?: kdl_table_put_real(t, "intra", r->q.intra);
                err = err ?: kdl_table_put_real(t, "inter", r->q.inter);
                err = err ?: kdl_table_put_real(t, "min_intra", r->q.min_intra);
                err = err ?: kdl_table_put_real(t, "entropy", r->q.entropy);
                err = err ?: kdl_table_put_real(t, "entropy_norm", r->q.entropy_norm);
                err = err ?: kdl_table_put_int(t, "k_sum", (long long) r->q.k_sum);
                err = err ?: kdl_table_put_real(t, "k_mean", r->q.k_mean);
                err = err ?: kdl_table_put_real(t, "dmin", r->q.dmin);
                err = err ?: kdl_table_put_real(t, "norm", r->q.norm);
                err = err ?: kdl_table_put_real(t, "packing", r->q.packing);
                err = err ?: kdl_table_put_int(t, "r", (long long) r->q.r);
                err = err ?: kdl_table_put_int(t, "n", (long long) r->q.n);
                err = err ?: kdl_table_put_int(t, "classes", (long long) r->q.nclasses);
                err = err ?: kdl_table_put_int(t, "spectra", (long long) r->q.nspectra);
                err = err ?: kdl_table_put_int(t, "zero_rows", (long long) r->q.nzero);
                err = err ?: kdl_table_put_real(t, "cka_logits_debiased", r->cka_logits_deb);
                err = err ?: kdl_table_put_real(t, "cka_labels_debiased", r->cka_labels_deb);
                err = err ?: kdl_table_put_real(t, "cka_labels_robust", r->cka_labels_rob);
        }
        for (size_t i = 0; i < nrec; i++)
                rec[i] = &rows[i];
        qsort_r(rec, nrec, sizeof(*rec), cmp_depth, (void *) l);
        for (size_t i = 0; i < nrec && !err; i++) {
                kdl_table *t = tb->recommended;

                if (kdl_table_add_row(t) < 0) {
                        err = -ENOMEM;
                        break;
                }
                err = kdl_table_put_str(t, "checkpoint", ck->main->name);
                err = err ?: kdl_table_put_int(t, "order", (long long) i + 1);
                err = err ?: kdl_table_put_str(t, "layer", l->v[rec[i]->src].name);
                err = err ?: kdl_table_put_int(t, "depth", l->v[rec[i]->src].depth);
                err = err ?: kdl_table_put_real(t, "q", rec[i]->q.q);
                err = err ?: kdl_table_put_int(t, "rank", (long long) (rec[i] - rows) + 1);
        }
        free(rec);
        return err;
}

static int emit_cka(kdl_table *t, const struct kdl__srcs *l, const struct kdl__cka_results *res,
                    const struct kdl_ckpair *ck)
{
        int err = 0;

        for (size_t a = 0; a < l->n && !err; a++) {
                if (l->v[a].model != 0 || !l->v[a].ds)
                        continue;
                for (size_t b = 0; b < l->n && !err; b++) {
                        if (l->v[b].model != 1)
                                continue;
                        if (kdl_table_add_row(t) < 0)
                                return -ENOMEM;
                        err = kdl_table_put_str(t, "checkpoint", ck->main->name);
                        err = err ?: kdl_table_put_str(t, "checkpoint_student", ck->partner->name);
                        err = err ?: kdl_table_put_str(t, "teacher_layer", l->v[a].name);
                        err = err ?: kdl_table_put_str(t, "student_layer", l->v[b].name);
                        err = err
                                      ?: kdl_table_put_real(t, "cka_linear",
                                                            entry(res->lin, res->lin->biased, a,
                                                                  (long long) b));
                        err = err
                                      ?: kdl_table_put_real(t, "cka_linear_debiased",
                                                            entry(res->lin, res->lin->debiased, a,
                                                                  (long long) b));
                        err = err
                                      ?: kdl_table_put_real(
                                                 t, "cka_linear_robust",
                                                 entry(res->robust,
                                                       res->robust ? res->robust->biased : NULL, a,
                                                       (long long) b));
                }
        }
        return err;
}

static int one_checkpoint(kdl_inputs *in, const struct kdl_ckpair *ck, const int64_t *labels,
                          size_t n, size_t nclasses, const struct kdl_run_layers_opts *o,
                          struct tables *tb, struct kdl__cka_results *res)
{
        bool student = in->nstudents > 0;
        struct kdl__srcs l = {0};
        struct kdl__gather gx = {0};
        struct row *rows = NULL;
        size_t nrows = 0, *xr = NULL, nx = 0, *cr = NULL, ncr = 0, pc;
        bool *mask = NULL;
        long long logits = -1, lab;
        int err;

        err = kdl__srcs_add_checkpoint(&l, ck->main, 0, o->common.spatial);
        if (!err && student)
                err = kdl__srcs_add_checkpoint(&l, ck->partner, 1, o->common.spatial);
        for (size_t k = 0; k < l.n; k++)
                if (l.v[k].model == 0 && !l.v[k].has_depth)
                        logits = (long long) k;
        lab = (long long) l.n;
        err = err ?: kdl__srcs_add(&l, "labels", false, 0, 0, NULL, nclasses);
        /* Teacher layers against the logits, the labels and the student's
         * layers; no teacher x teacher blocks. */
        err = err ?: kdl__pairs_needed(&l, true, logits, lab, &mask);
        if (err)
                goto out;

        /* X: subsample / C rows of each class; X_c: min(per_class, N / C). */
        pc = o->per_class < n / nclasses ? o->per_class : n / nclasses;
        err = kdl_sample_select(n, labels, nclasses, o->subsample / nclasses, o->seed, STREAM_X,
                                &xr, &nx);
        err = err
                      ?: kdl_sample_select(n, labels, nclasses, pc ? pc : 1, o->seed, STREAM_XC,
                                           &cr, &ncr);
        if (err)
                goto out;
        {
                struct kdl__cka_compute_opts co = {.spatial = o->common.spatial,
                                                   .skip_nonfinite = o->common.skip_nonfinite,
                                                   .labels = true,
                                                   .seed = o->seed,
                                                   .robust = ROBUST_FRACTION,
                                                   .max_bytes = o->max_bytes,
                                                   .pairs = mask};

                err = kdl__cka_compute(in, student ? in->pairs[0] : NULL, &l, nclasses, &co, xr, nx,
                                       res, &gx);
                if (err)
                        goto out;
        }

        rows = kdl_new(struct row, l.n);
        if (!rows) {
                err = -ENOMEM;
                goto out;
        }
        for (size_t k = 0; k < l.n && !err; k++) {
                struct kdl__srcs one = {0};
                struct kdl__gather gc = {0};
                struct row *r;
                kdl_quality_opts qo = {.variant = o->variant, .population = (double) n};
                kdl_tensor x, xc;

                if (l.v[k].model != 0 || !l.v[k].has_depth)
                        continue;
                r = &rows[nrows++];
                r->src = k;
                r->cka_logits = entry(res->lin, res->lin->biased, k, logits);
                r->cka_logits_deb = entry(res->lin, res->lin->debiased, k, logits);
                r->cka_labels = entry(res->lin, res->lin->biased, k, lab);
                r->cka_labels_deb = entry(res->lin, res->lin->debiased, k, lab);
                r->cka_logits_rob =
                        entry(res->robust, res->robust ? res->robust->biased : NULL, k, logits);
                r->cka_labels_rob =
                        entry(res->robust, res->robust ? res->robust->biased : NULL, k, lab);
                r->student_best = -1;
                r->cka_student_best = NAN;
                for (size_t b = 0; b < l.n; b++) {
                        double v = entry(res->lin, res->lin->biased, k, (long long) b);

                        if (l.v[b].model == 1 && l.v[b].has_depth &&
                            (r->student_best < 0 || v > r->cka_student_best)) {
                                r->student_best = (long long) b;
                                r->cka_student_best = v;
                        }
                }
                err = gather_layer(in, &l, k, n, cr, ncr, o, &one, &gc);
                if (!err) {
                        x = kdl__gather_tensor(&gx, &l, k);
                        xc = kdl__gather_tensor(&gc, &one, 0);
                        err = kdl_quality_compute(&x, gx.labels, &xc, gc.labels, nclasses, &qo,
                                                  &r->q);
                }
                kdl__gather_release(&gc, one.n);
                kdl__srcs_release(&one);
        }
        err = err ?: emit(tb, &l, rows, nrows, ck, student, o->k);
        if (!err && student)
                err = emit_cka(tb->cka, &l, res, ck);
out:
        free(mask);
        free(rows);
        free(cr);
        free(xr);
        kdl__gather_release(&gx, l.n);
        kdl__srcs_release(&l);
        return err;
}

int kdl_run_layers(kdl_inputs *in, const struct kdl_run_layers_opts *opts, kdl_doc *doc)
{
        struct kdl_run_layers_opts o = *opts;
        const kdl_dump *dt;
        struct kdl_ckpair *cks = NULL;
        struct tables tb = {0};
        struct kdl__cka_results res = {0};
        int64_t *labels = NULL;
        size_t nck = 0, n, nclasses;
        int err;

        assert(in && in->teacher && opts && doc);
        dt = kdl_h5_dump(in->teacher);
        nclasses = kdl__classes(dt);
        if (!nclasses)
                return kdl_error(-KDL_EMISSING,
                                 "'%s': /labels: layer quality needs class labels, found none",
                                 dt->path);
        n = in->nstudents ? in->pairs[0]->n : dt->n;
        if (o.subsample / nclasses < 2)
                return kdl_error(-KDL_EUSAGE,
                                 "--subsample %zu leaves fewer than 2 samples for each of the %zu "
                                 "classes",
                                 o.subsample, nclasses);
        err = kdl_h5_read_labels(in->teacher, &labels);
        err = err
                      ?: kdl_select_checkpoints(in->teacher, in->nstudents ? in->students[0] : NULL,
                                                o.common.checkpoint, "same", &cks, &nck);
        err = err
                      ?: kdl_table_new("layers", "Teacher layers ranked by knowledge quality Q",
                                       &tb.ranked);
        err = err ?: kdl_table_new("layers_detail", "Parts of S, I and E", &tb.detail);
        err = err
                      ?: kdl_table_new("layers_recommended", "Recommended layers, in depth order",
                                       &tb.recommended);
        err = err ?: kdl_table_new("layers_cka", "Teacher x student linear CKA", &tb.cka);
        err = err ?: kdl_inputs_describe(in, doc);
        for (size_t c = 0; c < nck && !err; c++) {
                kdl__cka_results_release(&res);
                err = one_checkpoint(in, &cks[c], labels, n, nclasses, &o, &tb, &res);
        }
        if (!err) {
                kdl_table_set_label(tb.ranked, "q", "Q");
                kdl_table_set_label(tb.ranked, "s", "S");
                kdl_table_set_label(tb.ranked, "i", "I");
                kdl_table_set_label(tb.ranked, "e", "E");
        }
        if (!err) {
                size_t pc = o.per_class < n / nclasses ? o.per_class : n / nclasses;

                err = kdl_doc_add_note(
                        doc,
                        "Q = S + sqrt(I*E) as in Cooper et al.'s code (%s variant): S, E and the "
                        "class-geometry columns on a class-balanced seeded subsample of %zu "
                        "samples (up to %zu per class, seed %llu), class spectra on another of up "
                        "to %zu per class; N = %zu in (N/pi)^(1/r)",
                        kdl_quality_variant_name(o.variant), res.nsub, o.subsample / nclasses,
                        (unsigned long long) o.seed, pc, n);
                err = err
                              ?: kdl_doc_add_note(
                                         doc,
                                         "cka_logits, cka_labels: linear CKA over all %zu samples "
                                         "(%s space); robust: on the subsample without each "
                                         "layer's "
                                         "1 %% largest centred norms",
                                         res.n, res.gram ? "Gram" : "feature");
                err = err
                              ?: kdl_doc_add_note(doc, "features of rank 3 and 4 reduced by '%s'",
                                                  kdl_spatial_name(o.common.spatial));
        }
        if (!err) {
                err = kdl_doc_add_table(doc, tb.ranked);
                tb.ranked = NULL;
                err = err ?: kdl_doc_add_table(doc, tb.recommended);
                tb.recommended = NULL;
                err = err ?: kdl_doc_add_table(doc, tb.detail);
                tb.detail = NULL;
                if (!err && in->nstudents) {
                        err = kdl_doc_add_table(doc, tb.cka);
                        tb.cka = NULL;
                }
        }
        kdl__cka_results_release(&res);
        kdl_table_free(tb.cka);
        kdl_table_free(tb.detail);
        kdl_table_free(tb.recommended);
        kdl_table_free(tb.ranked);
        free(cks);
        free(labels);
        return err;
}
