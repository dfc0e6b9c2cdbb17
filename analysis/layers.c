/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/sample.h"
#include "analysis/cka-internal.h"
#include "analysis/dist.h"
#include "analysis/layers.h"
#include "analysis/layers-internal.h"
#include "metrics/base/banned.h"

#define DEFAULT_K         4
#define DEFAULT_SUBSAMPLE 5000
#define DEFAULT_PER_CLASS 500
/* The logits and one-hot labels CKA needs min(N, C)² doubles per pair (the
 * feature-space C x C products, or the N x N Grams): 128 MiB at 4096. */
#define DEFAULT_CKA_MAX_WIDTH 4096
#define ROBUST_FRACTION       0.01

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
                                          .classes = KDL_LAYERS_CLASSES_AUTO,
                                          .min_per_class = 0,
                                          .class_rule = KDL_SAMPLE_FREQUENT,
                                          .cka_max_width = DEFAULT_CKA_MAX_WIDTH};
        kdl_run_common_init(&o->common);
}

static double entry(const kdl_cka_matrix *m, const double *v, size_t i, long long j)
{
        return m && v && j >= 0 ? v[i * m->nlayers + (size_t) j] : (double) NAN;
}

/* Under MPI: every rank's rows of the subsample, in sample order on every rank. */
static int gather_combine(kdl__job *j, kdl_stream *s, unsigned pass)
{
        struct kdl__feed *f = j->ctx;

        (void) s;
        (void) pass;
        return kdl__dist_gather(f->g, f->l);
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

        job.combine = gather_combine;
        *one = (struct kdl__srcs){0};
        r = kdl__srcs_add(one, all->v[k].name, all->v[k].has_depth, all->v[k].depth, 0,
                          all->v[k].ds, all->v[k].width);
        r = r ?: kdl__gather_init(g, one, want, nwant);
        r = r ?: kdl_stream_new(n, in->nstudents ? in->pairs[0] : NULL, &so, &s);
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

/* @note, "; " when it is not empty, then the formatted text; frees @note.
 * Return: the longer note; NULL on ENOMEM (also when @note is NULL). */
static char *KDL_PRINTF(2, 3) append(char *note, const char *fmt, ...)
{
        char *more = NULL, *out = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (note)
                more = kdl__vasprintf(fmt, ap);
        va_end(ap);
        if (more)
                out = kdl__asprintf("%s%s%s", note, *note ? "; " : "", more);
        free(more);
        free(note);
        return out;
}

/* Why @q is outside Q's design range ("" when it is not), with the numbers.
 * Return: the text, which the caller frees; NULL on ENOMEM. */
static char *range_note(const kdl_quality *q)
{
        unsigned out = kdl_quality_range(q, KDL_QUALITY_MIN_PER_CLASS);
        char *note = kdl__asprintf("%s", "");

        if (out & KDL_QUALITY_I_OUT)
                note = append(note, "I = %.3g outside [0, 1]", q->i);
        if (out & KDL_QUALITY_E_OUT)
                note = append(note, "E = %.3g outside [0, 1]", q->e);
        if (out & KDL_QUALITY_FEW)
                note = append(note,
                              "fewer than %d samples per class (smallest class: %zu in the "
                              "subsample, %zu in the class spectra)",
                              KDL_QUALITY_MIN_PER_CLASS, q->class_rows_min, q->spectra_rows_min);
        return note;
}

/* Row @rank (from 1) of the "layers" table. */
static int ranked_row(kdl_table *t, size_t rank, const struct kdl_ckpair *ck,
                      const struct kdl__srcs *l, const struct row *r, bool recommended,
                      bool student)
{
        const struct kdl__src *s = &l->v[r->src];
        char *note = range_note(&r->q);
        int err;

        if (!note || kdl_table_add_row(t) < 0) {
                free(note);
                return -ENOMEM;
        }
        err = kdl_table_put_int(t, "rank", (long long) rank);
        err = err ?: kdl_table_put_str(t, "checkpoint", ck->main->name);
        err = err ?: kdl_table_put_str(t, "layer", s->name);
        err = err ?: kdl_table_put_int(t, "depth", s->depth);
        err = err ?: kdl_table_put_int(t, "width", (long long) s->width);
        err = err ?: kdl_table_put_real(t, "q", r->q.q);
        err = err ?: kdl_table_put_real(t, "s", r->q.s);
        err = err ?: kdl_table_put_real(t, "i", r->q.i);
        err = err ?: kdl_table_put_real(t, "e", r->q.e);
        err = err ?: kdl_table_put_bool(t, "recommended", recommended);
        err = err ?: kdl_table_put_bool(t, "in_range", *note == '\0');
        err = err ?: kdl_table_put_str(t, "range_note", note);
        err = err ?: kdl_table_put_real(t, "cka_logits", r->cka_logits);
        err = err ?: kdl_table_put_real(t, "cka_labels", r->cka_labels);
        err = err ?: kdl_table_put_real(t, "cka_logits_robust", r->cka_logits_rob);
        err = err ?: kdl_table_put_real(t, "ncm_accuracy", r->q.ncm_accuracy);
        err = err ?: kdl_table_put_real(t, "nc1", r->q.nc1);
        err = err ?: kdl_table_put_real(t, "effective_rank", r->q.effective_rank);
        if (!err && student) {
                err = kdl_table_put_str(t, "student_best",
                                        r->student_best >= 0 ? l->v[r->student_best].name : "-");
                err = err ?: kdl_table_put_real(t, "cka_student_best", r->cka_student_best);
        }
        free(note);
        return err;
}

/* The row of the "layers_detail" table: the parts of Q. */
static int detail_row(kdl_table *t, const struct kdl_ckpair *ck, const struct kdl__src *s,
                      const struct row *r)
{
        int err;

        if (kdl_table_add_row(t) < 0)
                return -ENOMEM;
        err = kdl_table_put_str(t, "checkpoint", ck->main->name);
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
        err = err ?: kdl_table_put_int(t, "class_rows_min", (long long) r->q.class_rows_min);
        err = err ?: kdl_table_put_int(t, "spectra_rows_min", (long long) r->q.spectra_rows_min);
        err = err ?: kdl_table_put_int(t, "zero_rows", (long long) r->q.nzero);
        err = err ?: kdl_table_put_real(t, "cka_logits_debiased", r->cka_logits_deb);
        err = err ?: kdl_table_put_real(t, "cka_labels_debiased", r->cka_labels_deb);
        err = err ?: kdl_table_put_real(t, "cka_labels_robust", r->cka_labels_rob);
        return err;
}

/* The "layers_recommended" rows: the first @nrec of the ranked @rows, in depth order. */
static int recommended_rows(kdl_table *t, const struct kdl_ckpair *ck, const struct kdl__srcs *l,
                            struct row *rows, size_t nrec)
{
        struct row **rec = kdl_new(struct row *, nrec ? nrec : 1);
        int err = 0;

        if (!rec)
                return -ENOMEM;
        for (size_t i = 0; i < nrec; i++)
                rec[i] = &rows[i];
        qsort_r(rec, nrec, sizeof(*rec), cmp_depth, (void *) l);
        for (size_t i = 0; i < nrec && !err; i++) {
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
                err = err
                              ?: kdl_table_put_bool(
                                         t, "in_range",
                                         kdl_quality_range(&rec[i]->q, KDL_QUALITY_MIN_PER_CLASS) ==
                                                 0);
        }
        free(rec);
        return err;
}

/* The rows of one checkpoint: ranked by Q (sorts @rows), the top @k recommended. */
static int emit(struct tables *tb, const struct kdl__srcs *l, struct row *rows, size_t nrows,
                const struct kdl_ckpair *ck, bool student, size_t k)
{
        size_t nrec = nrows < k ? nrows : k;
        int err = 0;

        qsort_r(rows, nrows, sizeof(*rows), cmp_rows, (void *) l);
        for (size_t i = 0; i < nrows && !err; i++) {
                err = ranked_row(tb->ranked, i + 1, ck, l, &rows[i], i < nrec, student);
                err = err ?: detail_row(tb->detail, ck, &l->v[rows[i].src], &rows[i]);
        }
        return err ?: recommended_rows(tb->recommended, ck, l, rows, nrec);
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

/* One layers run: what the analysis of every checkpoint reads, and the tables it fills. */
struct run {
        kdl_inputs *in;
        const struct kdl_run_layers_opts *o;
        int64_t *labels; /* the teacher's [N] */
        size_t n, nclasses;
        struct kdl__layers_classes cls; /* the classes Q is computed on */
        size_t *seq_x, nseq_x;          /* o->sequences: the subsample X, drawn once */
        bool wide;                      /* the logits and labels CKA (min(N, C) small enough) */
        bool student;                   /* teacher x student CKA too */
        struct tables tb;               /* across checkpoints */
        size_t nrows, nout;             /* layer rows, and those outside Q's design range */
        struct kdl__cka_results res;    /* the last checkpoint's */
};

/* Only the feature layers of @l: the logits (C wide) left out. */
static void features_only(struct kdl__srcs *l)
{
        size_t m = 0;

        for (size_t k = 0; k < l->n; k++)
                if (l->v[k].has_depth)
                        l->v[m++] = l->v[k];
        l->n = m;
}

/* The sources of checkpoint pair @ck: the teacher's layers and logits, the
 * student's when there is one, the one-hot labels last (the logits and
 * labels only when r->wide); and the pairs the tables need.  Sets
 * *@ret_logits and *@ret_labels to their indices (-1 when left out). */
static int checkpoint_sources(const struct run *r, const struct kdl_ckpair *ck, struct kdl__srcs *l,
                              long long *ret_logits, long long *ret_labels, bool **ret_mask)
{
        long long logits = -1, lab;
        int err;

        err = kdl__srcs_add_checkpoint(l, ck->main, 0, r->o->common.spatial);
        if (!err && r->student)
                err = kdl__srcs_add_checkpoint(l, ck->partner, 1, r->o->common.spatial);
        if (!r->wide)
                features_only(l);
        for (size_t k = 0; k < l->n; k++)
                if (l->v[k].model == 0 && !l->v[k].has_depth)
                        logits = (long long) k;
        lab = r->wide ? (long long) l->n : -1;
        if (r->wide)
                err = err ?: kdl__srcs_add(l, "labels", false, 0, 0, NULL, r->nclasses);
        /* Teacher layers against the logits, the labels and the student's
         * layers; no teacher x teacher blocks. */
        err = err ?: kdl__pairs_needed(l, true, logits, lab, ret_mask);
        *ret_logits = logits;
        *ret_labels = lab;
        return err;
}

/* The CKA columns of teacher layer @k from the results of its checkpoint. */
static void cka_columns(struct row *row, const struct kdl__srcs *l,
                        const struct kdl__cka_results *res, size_t k, long long logits,
                        long long lab)
{
        const double *rob = res->robust ? res->robust->biased : NULL;

        row->src = k;
        row->cka_logits = entry(res->lin, res->lin->biased, k, logits);
        row->cka_logits_deb = entry(res->lin, res->lin->debiased, k, logits);
        row->cka_labels = entry(res->lin, res->lin->biased, k, lab);
        row->cka_labels_deb = entry(res->lin, res->lin->debiased, k, lab);
        row->cka_logits_rob = entry(res->robust, rob, k, logits);
        row->cka_labels_rob = entry(res->robust, rob, k, lab);
        row->student_best = -1;
        row->cka_student_best = NAN;
        for (size_t b = 0; b < l->n; b++) {
                double v = entry(res->lin, res->lin->biased, k, (long long) b);

                if (l->v[b].model == 1 && l->v[b].has_depth &&
                    (row->student_best < 0 || v > row->cka_student_best)) {
                        row->student_best = (long long) b;
                        row->cka_student_best = v;
                }
        }
}

/* The knowledge quality of source @k: S and E on its rows of @gx, the class
 * spectra on its rows @cr, gathered in a pass of its own. */
static int quality(const struct run *r, const struct kdl__srcs *l, size_t k,
                   const struct kdl__gather *gx, const size_t *cr, size_t ncr, kdl_quality *ret)
{
        struct kdl__srcs one = {0};
        struct kdl__gather gc = {0};
        kdl_quality_opts qo;
        kdl_tensor x, xc;
        int err;

        kdl_quality_opts_init(&qo);
        qo.variant = r->o->variant;
        qo.population = (double) r->cls.n_kept;
        err = gather_layer(r->in, l, k, r->n, cr, ncr, r->o, &one, &gc);
        if (!err) {
                x = kdl__gather_tensor(gx, l, k);
                xc = kdl__gather_tensor(&gc, &one, 0);
                err = kdl_quality_compute(&x, gx->labels, &xc, gc.labels, r->nclasses, &qo, ret);
        }
        kdl__gather_release(&gc, one.n);
        kdl__srcs_release(&one);
        return err;
}

/* Checkpoint pair @ck: one CKA pass over every sample, then each teacher
 * layer's quality; its rows go to the tables and its CKA results to r->res. */
static int one_checkpoint(struct run *r, const struct kdl_ckpair *ck)
{
        const struct kdl_run_layers_opts *o = r->o;
        struct kdl__srcs l = {0};
        struct kdl__gather gx = {0};
        struct row *rows = NULL;
        size_t nrows = 0, *xr = NULL, nx = 0, *cr = NULL, ncr = 0;
        bool *mask = NULL;
        long long logits, lab;
        int err;

        err = checkpoint_sources(r, ck, &l, &logits, &lab, &mask);
        /* X: subsample / K rows of each kept class; X_c: min(per_class,
         * the kept samples / K) (with every class kept, subsample / C and
         * min(per_class, N / C)). */
        if (o->sequences)
                nx = r->nseq_x;
        else
                err = err
                              ?: kdl_sample_select_counts(r->n, r->labels, r->nclasses,
                                                          r->cls.want_x, o->seed, STREAM_X, &xr,
                                                          &nx);
        err = err
                      ?: kdl_sample_select_counts(r->n, r->labels, r->nclasses, r->cls.want_c,
                                                  o->seed, STREAM_XC, &cr, &ncr);
        if (!err) {
                struct kdl__cka_compute_opts co = {.spatial = o->common.spatial,
                                                   .skip_nonfinite = o->common.skip_nonfinite,
                                                   .labels = true,
                                                   .seed = o->seed,
                                                   .robust = ROBUST_FRACTION,
                                                   .max_bytes = o->common.memory,
                                                   .analysis = "layers",
                                                   .pairs = mask};

                err = kdl__cka_compute(r->in, r->student ? r->in->pairs[0] : NULL, &l, r->nclasses,
                                       &co, o->sequences ? r->seq_x : xr, nx, &r->res, &gx);
        }
        if (!err && !(rows = kdl_new(struct row, l.n)))
                err = -ENOMEM;
        for (size_t k = 0; k < l.n && !err; k++) {
                if (l.v[k].model != 0 || !l.v[k].has_depth)
                        continue;
                cka_columns(&rows[nrows], &l, &r->res, k, logits, lab);
                err = quality(r, &l, k, &gx, cr, ncr, &rows[nrows].q);
                r->nout += !err && kdl_quality_range(&rows[nrows].q, KDL_QUALITY_MIN_PER_CLASS);
                r->nrows += !err;
                nrows++;
        }
        err = err ?: emit(&r->tb, &l, rows, nrows, ck, r->student, o->k);
        if (!err && r->student)
                err = emit_cka(r->tb.cka, &l, &r->res, ck);
        free(mask);
        free(rows);
        free(cr);
        free(xr);
        kdl__gather_release(&gx, l.n);
        kdl__srcs_release(&l);
        return err;
}

static int tables_new(struct tables *tb)
{
        int err;

        err = kdl_table_new("layers", "Teacher layers ranked by knowledge quality Q", &tb->ranked);
        err = err ?: kdl_table_new("layers_detail", "Parts of S, I and E", &tb->detail);
        err = err
                      ?: kdl_table_new("layers_recommended", "Recommended layers, in depth order",
                                       &tb->recommended);
        err = err ?: kdl_table_new("layers_cka", "Teacher x student linear CKA", &tb->cka);
        return err;
}

/* The tables into @doc (layers_cka only with a student); every table leaves @tb. */
static int tables_commit(struct tables *tb, kdl_doc *doc, bool student)
{
        int err;

        kdl_table_set_label(tb->ranked, "q", "Q");
        kdl_table_set_label(tb->ranked, "s", "S");
        kdl_table_set_label(tb->ranked, "i", "I");
        kdl_table_set_label(tb->ranked, "e", "E");
        err = kdl_doc_add_table(doc, tb->ranked);
        tb->ranked = NULL;
        err = err ?: kdl_doc_add_table(doc, tb->recommended);
        tb->recommended = NULL;
        err = err ?: kdl_doc_add_table(doc, tb->detail);
        tb->detail = NULL;
        if (!err && student) {
                err = kdl_doc_add_table(doc, tb->cka);
                tb->cka = NULL;
        }
        return err;
}

static void tables_release(struct tables *tb)
{
        kdl_table_free(tb->cka);
        kdl_table_free(tb->detail);
        kdl_table_free(tb->recommended);
        kdl_table_free(tb->ranked);
}

static size_t min_n_c(const struct run *r)
{
        return r->n < r->nclasses ? r->n : r->nclasses;
}

/* How the columns were computed (from the last checkpoint's results). */
static int add_notes(const struct run *r, kdl_doc *doc)
{
        const struct kdl_run_layers_opts *o = r->o;
        int err;

        err = kdl_doc_add_note(doc,
                               "Q = S + sqrt(I*E) as in Cooper et al.'s code (%s variant): S, E "
                               "and the class-geometry columns on a class-balanced seeded "
                               "subsample of %zu samples (up to %zu per class, seed %llu), class "
                               "spectra on another of up to %zu per class; N = %zu in "
                               "(N/pi)^(1/r)",
                               kdl_quality_variant_name(o->variant), r->res.nsub, r->cls.per_x,
                               (unsigned long long) o->seed, r->cls.per_c, r->cls.n_kept);
        err = err ?: kdl__layers_sequences_note(o, doc);
        err = err ?: kdl__layers_classes_note(&r->cls, o, doc);
        if (!err && r->wide)
                err = kdl_doc_add_note(doc,
                                       "cka_logits, cka_labels: linear CKA over all %zu "
                                       "samples (%s space); robust: on the subsample without "
                                       "each layer's 1 %% largest centred norms",
                                       r->res.n, r->res.gram ? "Gram" : "feature");
        else if (!err)
                err = kdl_doc_add_note(
                        doc,
                        "cka_logits, cka_labels and their debiased and robust columns not "
                        "computed (NaN), nor the student's logits in layers_cka: "
                        "min(N, C) = %zu is above %zu, and the CKA of C-wide logits or "
                        "labels needs min(N, C)^2 doubles per pair (%.1f GiB)",
                        min_n_c(r), o->cka_max_width,
                        (double) min_n_c(r) * (double) min_n_c(r) * 8.0 / 1073741824.0);
        err = err
                      ?: kdl_doc_add_note(doc, "features of rank 3 and 4 reduced by '%s'",
                                          kdl_spatial_name(o->common.spatial));
        if (!err && r->nout)
                err = kdl_doc_add_note(doc,
                                       "Q is outside its design range for %zu of %zu layer rows "
                                       "(I or E outside [0, 1], or fewer than %d samples per "
                                       "class; in_range false, see range_note): their ranking is "
                                       "not a reliable guide to which layers to distil from",
                                       r->nout, r->nrows, KDL_QUALITY_MIN_PER_CLASS);
        return err;
}

static int layers_setup(struct run *r, struct kdl_ckpair **ret_cks, size_t *ret_nck);
static int layers_need(const struct run *r, const struct kdl_ckpair *cks, size_t nck,
                       kdl__need *nd);

int kdl_run_layers(kdl_inputs *in, const struct kdl_run_layers_opts *o, kdl_doc *doc)
{
        struct run r = {.in = in, .o = o, .student = in->nstudents > 0};
        kdl__need nd = {.analysis = "layers"};
        struct kdl_ckpair *cks = NULL;
        size_t nck = 0;
        int err;

        assert(in && in->teacher && o && doc);
        err = layers_setup(&r, &cks, &nck);
        err = err ?: layers_need(&r, cks, nck, &nd);
        err = err ?: kdl__need_check(&nd, o->common.memory, KDL_LAYERS_LEVERS);
        kdl__need_release(&nd);
        err = err ?: tables_new(&r.tb);
        err = err ?: kdl_inputs_describe(in, doc);
        for (size_t c = 0; c < nck && !err; c++) {
                kdl__cka_results_release(&r.res);
                err = one_checkpoint(&r, &cks[c]);
        }
        err = err ?: add_notes(&r, doc);
        err = err ?: tables_commit(&r.tb, doc, r.student);
        err = err ?: kdl__layers_classes_table(&r.cls, doc);
        kdl__layers_classes_release(&r.cls);
        kdl__cka_results_release(&r.res);
        tables_release(&r.tb);
        free(r.seq_x);
        free(cks);
        free(r.labels);
        return err;
}

/* ---- --plan and the run's check: what a run holds, from the shapes and the labels ----  */

/* The quality of the widest teacher layer of @l: the subsample X of @nx rows of every
 * source (kept after the CKA pass), the class-spectra rows X_c (@ncr of one layer,
 * gathered in a pass of its own over a stream of that layer) and what
 * kdl_quality_compute() holds at its peak (kdl_quality_bytes()). */
static int quality_need(const struct run *r, const struct kdl__srcs *l, size_t nx, size_t ncr,
                        kdl__need *ret)
{
        struct kdl_stream_opts so = {.skip_nonfinite = r->o->common.skip_nonfinite};
        const struct kdl__layers_classes *cls = &r->cls;
        size_t d = 0, stream = 0, present = 0, ncols = 0, q;
        int err;

        for (size_t c = 0; c < cls->nclasses; c++) {
                size_t rc = cls->count[c] < cls->want_c[c] ? cls->count[c] : cls->want_c[c];

                present += cls->count[c] > 0 && cls->want_x[c] > 0;
                ncols = rc > ncols ? rc : ncols;
        }

        for (size_t k = 0; k < l->n; k++) {
                struct kdl_stream_cost c;

                if (l->v[k].model != 0 || !l->v[k].has_depth)
                        continue;
                d = l->v[k].width > d ? l->v[k].width : d;
                kdl_stream_cost_init(&c, r->student ? r->in->pairs[0] : NULL);
                kdl__feed_cost(&(struct kdl__srcs){.n = 1, .v = &l->v[k]}, r->in->teacher,
                               r->o->common.spatial, true, &c);
                q = kdl_stream_cost_bytes(&c, r->n, &so);
                stream = q > stream ? q : stream;
        }
        q = kdl_quality_bytes(nx, d, r->nclasses, present, ncr, ncols);
        err = kdl__need_add(ret, kdl__gather_bytes(l, nx), KDL_LEVER_SUBSAMPLE,
                            "the subsample X of %zu rows of every source", nx);
        err = err ?: kdl__need_add(ret, stream, 0, "the blocks of one layer's pass");
        err = err
                      ?: kdl__need_add(ret, kdl_sat_mul(kdl_sat_mul(ncr, d + 2), sizeof(double)),
                                       KDL_LEVER_PER_CLASS,
                                       "the %zu class-spectra rows of one layer", ncr);
        return err
                       ?: kdl__need_add(ret, q, KDL_LEVER_SUBSAMPLE,
                                        "the quality of a layer of width %zu on X", d);
}

/* The larger of @ret and the need of checkpoint @ck: its CKA pass (the stream, the state, the
 * subsample X), then the quality of its teacher layers. */
static int checkpoint_need(const struct run *r, const struct kdl_ckpair *ck, size_t nx, size_t ncr,
                           kdl__need *ret)
{
        const struct kdl_run_layers_opts *o = r->o;
        struct kdl_stream_opts so = {.skip_nonfinite = o->common.skip_nonfinite};
        kdl__need cka = {.analysis = ret->analysis}, q = {.analysis = ret->analysis};
        struct kdl__srcs l = {0};
        struct kdl_stream_cost c;
        long long logits, lab;
        bool *mask = NULL;
        size_t rows;
        int err;

        err = checkpoint_sources(r, ck, &l, &logits, &lab, &mask);
        if (!err) {
                struct kdl__cka_compute_opts co = {.spatial = o->common.spatial,
                                                   .labels = true,
                                                   .robust = ROBUST_FRACTION,
                                                   .max_bytes = o->common.memory,
                                                   .pairs = mask};

                kdl_stream_cost_init(&c, r->student ? r->in->pairs[0] : NULL);
                kdl__feed_cost(&l, r->in->teacher, o->common.spatial, true, &c);
                rows = kdl_stream_cost_rows(&c, r->n, &so);
                err = kdl__need_add(&cka, kdl_stream_cost_bytes(&c, r->n, &so), 0,
                                    "blocks of %zu rows of %zu sources", rows, l.n);
                err = err ?: kdl__cka_pass_need(&l, r->n, nx, rows, r->nclasses, &co, &cka);
        }
        err = err ?: quality_need(r, &l, nx, ncr, &q);
        if (!err) {
                kdl__need_max(&cka, &q);
                kdl__need_max(ret, &cka);
        }
        kdl__need_release(&q);
        kdl__need_release(&cka);
        free(mask);
        kdl__srcs_release(&l);
        return err;
}

/* The rows of a per-class subsample: min(count, @want[c]) summed over the classes. */
static size_t chosen_rows(const struct kdl__layers_classes *cls, const size_t *want)
{
        size_t n = 0;

        for (size_t c = 0; c < cls->nclasses; c++)
                n += cls->count[c] < want[c] ? cls->count[c] : want[c];
        return n;
}

/* What a run of @r (labels read, classes chosen) holds at its peak, over the checkpoints
 * @cks: the plan and the run's check share it, so the plan says what the run does. */
static int layers_need(const struct run *r, const struct kdl_ckpair *cks, size_t nck, kdl__need *nd)
{
        size_t nx = r->o->sequences ? r->nseq_x : chosen_rows(&r->cls, r->cls.want_x);
        size_t ncr = chosen_rows(&r->cls, r->cls.want_c);
        int err = 0;

        for (size_t c = 0; c < nck && !err; c++)
                err = checkpoint_need(r, &cks[c], nx, ncr, nd);
        if (!err && r->o->sequences)
                err = kdl__need_add(nd, kdl_sat_mul(r->n, KDL__SEQUENCE_DRAW_BYTES), 0,
                                    "the draw by /sequence_ids (its ids and sort keys)");
        return err
                       ?: kdl__need_add(nd, kdl_sat_mul(r->n, 3 * sizeof(int64_t)), 0,
                                        "the labels and the subsamples' sample lists");
}

/* @r's inputs, labels and classes, and the checkpoints to run (@ret_cks, @ret_nck). */
static int layers_setup(struct run *r, struct kdl_ckpair **ret_cks, size_t *ret_nck)
{
        const kdl_dump *dt = kdl_h5_dump(r->in->teacher);
        int err;

        r->nclasses = kdl__classes(dt);
        if (!r->nclasses)
                return kdl_error(-KDL_EMISSING,
                                 "'%s': /labels: layer quality needs class labels, found none",
                                 dt->path);
        r->n = r->student ? r->in->pairs[0]->n : dt->n;
        r->wide = min_n_c(r) <= r->o->cka_max_width;
        err = kdl_inputs_teacher_labels(r->in, r->student ? r->in->pairs[0] : NULL, &r->labels);
        err = err ?: kdl__layers_classes_init(r->labels, r->n, r->nclasses, r->o, &r->cls);
        if (!err && r->o->sequences)
                err = kdl__layers_sequence_rows(r->in->teacher, r->student ? r->in->pairs[0] : NULL,
                                                r->labels, r->n, &r->cls, r->o, STREAM_X, &r->seq_x,
                                                &r->nseq_x);
        return err
                       ?: kdl_select_checkpoints(r->in->teacher,
                                                 r->student ? r->in->students[0] : NULL,
                                                 r->o->common.checkpoint, "same", ret_cks, ret_nck);
}

int kdl__layers_need(kdl_inputs *in, const struct kdl_run_layers_opts *o, kdl__need *ret)
{
        struct run r = {.in = in, .o = o, .student = in->nstudents > 0};
        struct kdl_ckpair *cks = NULL;
        size_t nck = 0;
        int err;

        assert(in && in->teacher && o && ret);
        err = layers_setup(&r, &cks, &nck);
        err = err ?: layers_need(&r, cks, nck, ret);
        kdl__layers_classes_release(&r.cls);
        free(r.seq_x);
        free(r.labels);
        free(cks);
        return err;
}

/* The plan reads /labels (8 bytes a sample) besides the shapes: the class rule, and so
 * the rows of the class subsamples, depend on the counts. */
int kdl_run_layers_plan(kdl_inputs *in, const struct kdl_run_layers_opts *o, kdl_doc *doc)
{
        kdl__need nd = {.analysis = "layers",
                        .reads = o->sequences ? KDL_LAYERS_READS_SEQ : KDL_LAYERS_READS};
        int err;

        assert(in && in->teacher && o && doc);
        err = kdl_inputs_describe(in, doc);
        err = err ?: kdl__layers_need(in, o, &nd);
        err = err ?: kdl__need_doc(&nd, 1, o->common.memory, KDL_LAYERS_LEVERS, doc);
        kdl__need_release(&nd);
        return err;
}
