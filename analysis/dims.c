/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/spectral.h"
#include "loaders/stream.h"
#include "analysis/dims.h"
#include "metrics/base/banned.h"

/* A student width to mark on its teacher checkpoint's residual curve. */
struct mark {
        size_t tck; /* index of the teacher checkpoint */
        size_t d_s;
        char *label; /* "model@checkpoint" */
};

struct ctx {
        const kdl_inputs *in;
        const struct kdl_dims_opts *o;
        kdl_doc *doc;
        kdl_table *dims, *heads, *verdict, *curve, *spec;
        kdl_spectral_result **tlog; /* per teacher checkpoint: centred-logit spectrum, or NULL */
        struct mark *marks;
        size_t nmarks;
        size_t layer_rows; /* feature-layer rows written */
};

/*
 * One pass over aligned row blocks: X from dataset x of f (student rows when
 * pair is given), Y = dataset y of tf (the teacher's logits) when given.
 * With support, x holds logits and their per-sample support rank is summed.
 */
struct pass {
        kdl_h5file *f;
        const kdl_pair *pair;
        const kdl_dsinfo *x;
        bool center_x;
        kdl_h5file *tf;
        const kdl_dsinfo *y;
        bool support;
        size_t head_rank;
        /* results */
        kdl_spectral_result *res;
        double support_sum;
};

static const char *model_name(const kdl_dump *d)
{
        return d->model ? d->model : d->path;
}

static size_t ck_index(const kdl_h5file *f, const kdl_checkpoint *ck)
{
        return (size_t) (ck - kdl_h5_dump(f)->checkpoints);
}

static int run_pass(struct ctx *c, struct pass *p)
{
        const kdl_dump *d = kdl_h5_dump(p->f);
        struct kdl_stream_opts so = {.block_rows = c->o->block_rows,
                                     .skip_nonfinite = c->o->skip_nonfinite};
        kdl_spectral_opts sopt = {.rank_rtol = c->o->rank_rtol, .ridge_lambda = c->o->ridge_lambda};
        kdl_stream *s = NULL;
        kdl_spectral_state *st = NULL;
        size_t n = p->pair ? p->pair->n : d->n, dy = 0;
        unsigned flags = 0;
        int ix, iy = -1, err;

        err = kdl_stream_new(n, p->pair, &so, &s);
        if (err < 0)
                goto out;
        ix = err = kdl_stream_add(s, p->f, p->x, c->o->spatial, p->pair != NULL);
        if (err < 0)
                goto out;
        if (p->y) {
                iy = err = kdl_stream_add(s, p->tf, p->y, KDL_SPATIAL_AVG, false);
                if (err < 0)
                        goto out;
                dy = kdl_stream_cols(s, iy);
                flags |= KDL_SPECTRAL_CENTER_ROWS_Y;
        }
        if (p->center_x)
                flags |= KDL_SPECTRAL_CENTER_ROWS_X;
        err = kdl_spectral_state_new(kdl_stream_cols(s, ix), dy, flags, &st);
        if (err < 0)
                goto out;
        p->support_sum = 0.0;
        while ((err = kdl_stream_next(s)) > 0) {
                kdl_tensor xb = kdl_stream_block(s, ix), yb;
                double sum;

                if (p->y)
                        yb = kdl_stream_block(s, iy);
                err = kdl_spectral_accumulate(st, &xb, p->y ? &yb : NULL);
                if (err < 0)
                        goto out;
                if (p->support) {
                        err = kdl_spectral_support_rank(&xb, c->o->tau, c->o->rank_rtol,
                                                        p->head_rank, &sum);
                        if (err < 0)
                                goto out;
                        p->support_sum += sum;
                }
        }
        if (err < 0)
                goto out;
        if (kdl_stream_skipped(s)) {
                err = kdl_doc_add_note(
                        c->doc, "'%s': %s%s: %zu samples with NaN/Inf skipped", d->path, p->x->path,
                        p->y ? " (with the teacher's logits)" : "", kdl_stream_skipped(s));
                if (err < 0)
                        goto out;
        }
        if (kdl_spectral_count(st) < 2) {
                err = kdl_error(-KDL_ESHAPE,
                                "'%s': %s: expected at least 2 usable samples, found %zu", d->path,
                                p->x->path, kdl_spectral_count(st));
                goto out;
        }
        err = kdl_spectral_finalize(st, &sopt, &p->res);
out:
        kdl_spectral_state_free(st);
        kdl_stream_free(s);
        return err;
}

/* Rank of W^T F W from the head weight of ck. */
static int head_rank(const struct ctx *c, kdl_h5file *f, const kdl_checkpoint *ck, size_t *ret_rank,
                     size_t *ret_width)
{
        kdl_h5reader *r = NULL;
        double *w = NULL;
        size_t rows, cols, nel;
        kdl_tensor t;
        int err;

        err = kdl_h5_reader_open(f, ck->head_weight, KDL_SPATIAL_AVG, &r);
        if (err < 0)
                return err;
        rows = kdl_h5_reader_rows(r);
        cols = kdl_h5_reader_cols(r);
        if (ck->head_weight->ndim != 2 || rows == 0 || cols == 0) {
                err = kdl_error(-KDL_ESCHEMA, "'%s': %s: expected [C, D], found %zu-D",
                                kdl_h5_dump(f)->path, ck->head_weight->path, ck->head_weight->ndim);
                goto out;
        }
        err = kdl_mul_size(rows, cols, &nel);
        if (err < 0)
                goto out;
        w = kdl__malloc(nel, sizeof(double));
        if (!w) {
                err = -ENOMEM;
                goto out;
        }
        err = kdl_h5_reader_read(r, 0, rows, w);
        if (err < 0)
                goto out;
        t = kdl_tensor_wrap(w, 2, (size_t[]){rows, cols});
        err = kdl_spectral_head_rank(&t, c->o->rank_rtol, ret_rank);
        if (err == 0)
                *ret_width = cols;
out:
        free(w);
        kdl_h5_reader_close(r);
        return err;
}

static int put_model(kdl_table *t, const kdl_dump *d, const kdl_checkpoint *ck)
{
        int err = kdl_table_add_row(t);

        if (err < 0)
                return err;
        err = kdl_table_put_str(t, "model", model_name(d));
        err = err ?: kdl_table_put_str(t, "role", d->role ? d->role : "-");
        err = err ?: kdl_table_put_str(t, "checkpoint", ck->name);
        err = err ?: kdl_table_put_int(t, "step", ck->step);
        return err;
}

/* One "dims" row; tres is the teacher's centred-logit result (or NULL). */
static int dims_row(struct ctx *c, const kdl_dump *d, const kdl_checkpoint *ck,
                    const kdl_layer *layer, const kdl_spectral_result *r,
                    const kdl_spectral_result *tres)
{
        kdl_table *t = c->dims;
        const kdl_spectral_summary *s = &r->sum;
        int err = put_model(t, d, ck);

        err = err ?: kdl_table_put_str(t, "layer", layer ? layer->name : "logits");
        err = err ?: kdl_table_put_str(t, "kind", layer ? "features" : "centred logits");
        if (!err && layer)
                err = kdl_table_put_int(t, "depth", layer->depth);
        err = err
                      ?: kdl_table_put_bool(t, "head_input",
                                            layer && ck->head_input &&
                                                    strcmp(layer->name, ck->head_input) == 0);
        err = err ?: kdl_table_put_int(t, "width", (long long) r->d);
        err = err ?: kdl_table_put_int(t, "samples", (long long) r->n);
        err = err ?: kdl_table_put_int(t, "numerical_rank", (long long) s->rank);
        err = err ?: kdl_table_put_real(t, "effective_rank", s->effective_rank);
        err = err ?: kdl_table_put_real(t, "participation_ratio", s->participation_ratio);
        err = err ?: kdl_table_put_int(t, "dims_90", (long long) s->dims90);
        err = err ?: kdl_table_put_int(t, "dims_95", (long long) s->dims95);
        err = err ?: kdl_table_put_int(t, "dims_99", (long long) s->dims99);
        err = err ?: kdl_table_put_real(t, "total_variance", s->total);
        err = err ?: kdl_table_put_real(t, "top_eigenvalue", r->d ? r->eig[0] : 0.0);
        if (!err && layer && tres)
                err = kdl_table_put_real(t, "logit_residual_at_width",
                                         tres->tail[r->d < tres->d ? r->d : tres->d]);
        if (!err && r->has_ridge) {
                err = kdl_table_put_real(t, "ridge_r2", r->ridge.r2);
                err = err ?: kdl_table_put_real(t, "ridge_r2_gcv", r->ridge.r2_gcv);
                err = err ?: kdl_table_put_real(t, "ridge_lambda", r->ridge.lambda);
                err = err
                              ?: kdl_table_put_str(t, "ridge_lambda_by",
                                                   r->ridge.by_gcv ? "gcv" : "given");
                err = err ?: kdl_table_put_real(t, "ridge_df", r->ridge.df);
        }
        return err;
}

static int spectrum_rows(struct ctx *c, const kdl_dump *d, const kdl_checkpoint *ck,
                         const char *layer, const kdl_spectral_result *r)
{
        int err = 0;

        for (size_t k = 0; c->o->spectrum && k < r->d && !err; k++) {
                err = put_model(c->spec, d, ck);
                err = err ?: kdl_table_put_str(c->spec, "layer", layer);
                err = err ?: kdl_table_put_int(c->spec, "k", (long long) k + 1);
                err = err ?: kdl_table_put_real(c->spec, "eigenvalue", r->eig[k]);
                err = err ?: kdl_table_put_real(c->spec, "explained", 1.0 - r->tail[k + 1]);
        }
        return err;
}

static bool layer_selected(const struct ctx *c, const kdl_layer *l)
{
        const char *want = c->o->layer;

        return !want || strcmp(want, "all") == 0 || strcmp(want, l->name) == 0;
}

/*
 * Every row of one model at one checkpoint: its centred logits, its selected
 * layers (with the ridge fit of the teacher's logits tck when given) and its
 * head.  ret_logits receives the model's centred-logit result (caller
 * frees); ret_head_r2 the ridge R^2 of the head's input layer (NaN when it
 * was not analysed).
 */
static int analyse_ck(struct ctx *c, kdl_h5file *f, const kdl_pair *pair, const kdl_checkpoint *ck,
                      kdl_h5file *tf, const kdl_checkpoint *tck, kdl_spectral_result **ret_logits,
                      double *ret_head_r2)
{
        const kdl_dump *d = kdl_h5_dump(f);
        struct pass lp = {.f = f, .pair = pair, .x = ck->logits, .center_x = true};
        const kdl_spectral_result *tres = NULL;
        size_t hwidth = 0;
        double head_r2 = NAN;
        int err = 0;

        if (!ck->logits || ck->logits->ndim != 2 || ck->logits->shape[1] < 2)
                return kdl_error(-KDL_ESCHEMA, "'%s': %s/logits: expected [N, C] with C >= 2",
                                 d->path, ck->group);
        if (ck->head_weight) {
                err = head_rank(c, f, ck, &lp.head_rank, &hwidth);
                if (err < 0)
                        return err;
                lp.support = true;
        }
        err = run_pass(c, &lp);
        if (err < 0)
                return err;
        if (tck)
                tres = tf == f ? lp.res : c->tlog[ck_index(tf, tck)];
        for (size_t j = 0; j < ck->nlayers && !err; j++) {
                const kdl_layer *l = &ck->layers[j];
                struct pass p = {.f = f,
                                 .pair = pair,
                                 .x = &l->feature,
                                 .tf = tf,
                                 .y = tck ? tck->logits : NULL};

                if (!layer_selected(c, l))
                        continue;
                err = run_pass(c, &p);
                err = err ?: dims_row(c, d, ck, l, p.res, tres);
                err = err ?: spectrum_rows(c, d, ck, l->name, p.res);
                if (!err && p.res->has_ridge && ck->head_input &&
                    strcmp(l->name, ck->head_input) == 0)
                        head_r2 = p.res->ridge.r2;
                kdl_spectral_result_free(p.res);
                c->layer_rows++;
        }

        /* The logits last, as the network's last layer. */
        err = err ?: dims_row(c, d, ck, NULL, lp.res, NULL);
        err = err ?: spectrum_rows(c, d, ck, "logits", lp.res);
        if (!err && ck->head_weight) {
                kdl_table *t = c->heads;

                err = put_model(t, d, ck);
                err = err
                              ?: kdl_table_put_str(t, "head_input",
                                                   ck->head_input ? ck->head_input : "-");
                err = err ?: kdl_table_put_int(t, "width", (long long) hwidth);
                err = err ?: kdl_table_put_int(t, "classes", (long long) lp.res->d);
                err = err ?: kdl_table_put_int(t, "wfw_rank", (long long) lp.head_rank);
                err = err
                              ?: kdl_table_put_int(t, "kl_blind_dims",
                                                   (long long) (hwidth - lp.head_rank));
                err = err ?: kdl_table_put_real(t, "tau", c->o->tau);
                err = err
                              ?: kdl_table_put_real(t, "wfw_support_rank_mean",
                                                    lp.support_sum / (double) lp.res->n);
        }
        if (err < 0) {
                kdl_spectral_result_free(lp.res);
                return err;
        }
        *ret_logits = lp.res;
        if (ret_head_r2)
                *ret_head_r2 = head_r2;
        return 0;
}

/* The teacher's rows at tck, once; its centred-logit result is kept. */
static int ensure_teacher(struct ctx *c, const kdl_checkpoint *tck)
{
        kdl_h5file *tf = c->in->teacher;
        size_t k = ck_index(tf, tck);

        if (c->tlog[k])
                return 0;
        return analyse_ck(c, tf, NULL, tck, tf, tck, &c->tlog[k], NULL);
}

/* The width a student's logits are computed from, and where it was found. */
static size_t student_width(const struct ctx *c, const kdl_checkpoint *ck, const char **ret_from)
{
        const kdl_layer *l;

        if (ck->head_weight && ck->head_weight->ndim == 2) {
                *ret_from = "head/weight";
                return ck->head_weight->shape[1];
        }
        if (ck->head_input && (l = kdl_h5_layer(ck, ck->head_input))) {
                *ret_from = "head input layer";
                return kdl_dsinfo_width(&l->feature, c->o->spatial);
        }
        if (ck->nlayers) {
                *ret_from = "deepest layer";
                return kdl_dsinfo_width(&ck->layers[ck->nlayers - 1].feature, c->o->spatial);
        }
        return 0;
}

static int verdict_row(struct ctx *c, const kdl_dump *d, const kdl_checkpoint *ck,
                       const kdl_checkpoint *tck, double head_r2)
{
        const kdl_spectral_result *tres = c->tlog[ck_index(c->in->teacher, tck)];
        kdl_table *t = c->verdict;
        const char *from = NULL, *reason;
        struct mark *grown;
        size_t ds = student_width(c, ck, &from);
        unsigned why = 0;
        double res = 0.0;
        int err;

        if (ds == 0)
                return kdl_doc_add_note(c->doc,
                                        "'%s': checkpoint %s: no head and no feature layer, "
                                        "no width to judge",
                                        d->path, ck->name);
        err = kdl_spectral_verdict(tres, ds, c->o->tolerance, &why, &res);
        if (err < 0)
                return err;
        reason = why == (KDL_DIMS_NARROW | KDL_DIMS_RESIDUAL) ? "d_s < C-1; residual > tolerance"
                 : why == KDL_DIMS_NARROW                     ? "d_s < C-1"
                 : why == KDL_DIMS_RESIDUAL                   ? "residual > tolerance"
                                                              : "";
        err = put_model(t, d, ck);
        err = err ?: kdl_table_put_str(t, "teacher_checkpoint", tck->name);
        err = err ?: kdl_table_put_int(t, "d_s", (long long) ds);
        err = err ?: kdl_table_put_str(t, "d_s_from", from);
        err = err ?: kdl_table_put_int(t, "classes", (long long) tres->d);
        err = err ?: kdl_table_put_int(t, "c_minus_1", (long long) tres->d - 1);
        err = err ?: kdl_table_put_real(t, "residual_at_d_s", res);
        err = err ?: kdl_table_put_real(t, "tolerance", c->o->tolerance);
        err = err ?: kdl_table_put_str(t, "verdict", why ? "insufficient" : "sufficient");
        err = err ?: kdl_table_put_str(t, "reason", reason);
        if (!err && !isnan(head_r2))
                err = kdl_table_put_real(t, "ridge_r2", head_r2);
        err = err ?: kdl_table_put_int(t, "teacher_logit_rank", (long long) tres->sum.rank);
        err = err
                      ?: kdl_table_put_real(t, "teacher_logit_effective_rank",
                                            tres->sum.effective_rank);
        if (err < 0)
                return err;

        grown = realloc(c->marks, (c->nmarks + 1) * sizeof(*grown));
        if (!grown)
                return kdl_error(-ENOMEM, "out of memory");
        c->marks = grown;
        c->marks[c->nmarks].label = kdl__asprintf("%s@%s", model_name(d), ck->name);
        if (!c->marks[c->nmarks].label)
                return -ENOMEM;
        c->marks[c->nmarks].tck = ck_index(c->in->teacher, tck);
        c->marks[c->nmarks].d_s = ds;
        c->nmarks++;
        return 0;
}

/* The residual curve of each analysed teacher checkpoint, widths marked. */
static int curve_rows(struct ctx *c)
{
        const kdl_dump *td = kdl_h5_dump(c->in->teacher);
        int err = 0;

        for (size_t k = 0; k < td->ncheckpoints && !err; k++) {
                const kdl_spectral_result *r = c->tlog[k];

                for (size_t dd = 1; r && dd <= r->d && !err; dd++) {
                        char *marks = NULL, *t;

                        for (size_t m = 0; m < c->nmarks; m++) {
                                size_t at = c->marks[m].d_s < r->d ? c->marks[m].d_s : r->d;

                                if (c->marks[m].tck != k || at != dd)
                                        continue;
                                t = kdl__asprintf("%s%s%s", marks ? marks : "", marks ? ", " : "",
                                                  c->marks[m].label);
                                free(marks);
                                marks = t;
                                if (!marks)
                                        return -ENOMEM;
                        }
                        err = put_model(c->curve, td, &td->checkpoints[k]);
                        err = err ?: kdl_table_put_int(c->curve, "d", (long long) dd);
                        err = err ?: kdl_table_put_real(c->curve, "residual", r->tail[dd]);
                        err = err ?: kdl_table_put_real(c->curve, "explained", 1.0 - r->tail[dd]);
                        err = err ?: kdl_table_put_str(c->curve, "students", marks ? marks : "");
                        free(marks);
                }
        }
        return err;
}

/* Column order and terminal labels (JSON keys are the first of each pair). */
static const char *const dims_labels[][2] = {
        {"model", "model"},
        {"role", "role"},
        {"checkpoint", "checkpoint"},
        {"step", "step"},
        {"layer", "layer"},
        {"kind", "kind"},
        {"depth", "depth"},
        {"head_input", "head in"},
        {"width", "D"},
        {"samples", "N"},
        {"numerical_rank", "rank"},
        {"effective_rank", "eff rank"},
        {"participation_ratio", "PR"},
        {"dims_90", "d90"},
        {"dims_95", "d95"},
        {"dims_99", "d99"},
        {"total_variance", "tr cov"},
        {"top_eigenvalue", "lambda1"},
        {"logit_residual_at_width", "resid@D"},
        {"ridge_r2", "ridge R2"},
        {"ridge_r2_gcv", "R2 gcv"},
        {"ridge_lambda", "lambda"},
        {"ridge_lambda_by", "by"},
        {"ridge_df", "df"},
};

static const char *const verdict_labels[][2] = {
        {"model", "model"},
        {"role", "role"},
        {"checkpoint", "checkpoint"},
        {"step", "step"},
        {"teacher_checkpoint", "teacher ckpt"},
        {"d_s", "d_s"},
        {"d_s_from", "d_s from"},
        {"classes", "C"},
        {"c_minus_1", "C-1"},
        {"residual_at_d_s", "resid@d_s"},
        {"tolerance", "tol"},
        {"verdict", "verdict"},
        {"reason", "reason"},
        {"ridge_r2", "ridge R2"},
        {"teacher_logit_rank", "T logit rank"},
        {"teacher_logit_effective_rank", "T logit eff rank"},
};

static int label_columns(kdl_table *t, const char *const (*labels)[2], size_t n)
{
        int err = 0;

        for (size_t k = 0; k < n && !err; k++)
                err = kdl_table_set_label(t, labels[k][0], labels[k][1]);
        return err;
}

static int check_opts(const kdl_inputs *in, const struct kdl_dims_opts *o)
{
        if (!in->teacher && in->nstudents == 0)
                return kdl_error(-KDL_EUSAGE, "expected a teacher (-t) and/or students (-s)");
        if (!(o->tolerance >= 0.0 && o->tolerance <= 1.0))
                return kdl_error(-KDL_EUSAGE,
                                 "--tolerance: expected a fraction in [0, 1], found %g",
                                 o->tolerance);
        if (!(o->rank_rtol >= 0.0 && o->rank_rtol < 1.0))
                return kdl_error(-KDL_EUSAGE, "--rank-rtol: expected a value in [0, 1), found %g",
                                 o->rank_rtol);
        if (!(o->tau > 0.0) || !isfinite(o->tau))
                return kdl_error(-KDL_EUSAGE, "--temperature: expected a positive number, found %g",
                                 o->tau);
        return 0;
}

static int add_table(kdl_doc *doc, kdl_table **t)
{
        kdl_table *x = *t;

        *t = NULL;
        if (kdl_table_rows(x) == 0) {
                kdl_table_free(x);
                return 0;
        }
        return kdl_doc_add_table(doc, x);
}

static int notes(struct ctx *c)
{
        const struct kdl_dims_opts *o = c->o;
        int err;

        err = kdl_doc_add_note(c->doc,
                               "spectra of the sample covariance (1/(N-1)); numerical rank counts "
                               "eigenvalues above %g x the largest; effective rank "
                               "exp(H(lambda/sum lambda)) (Roy & Vetterli)",
                               o->rank_rtol);
        if (!err && c->in->teacher)
                err = kdl_doc_add_note(
                        c->doc,
                        "ridge_r2: teacher's row-centred logits from the layer's features, "
                        "pooled over classes, intercept unpenalised, lambda %s (sum-of-squares "
                        "units, as scikit-learn's alpha); ridge_r2_gcv is GCV's out-of-sample "
                        "estimate",
                        isfinite(o->ridge_lambda) && o->ridge_lambda >= 0.0 ? "given" : "by GCV");
        if (!err && c->in->teacher && c->in->nstudents)
                err = kdl_doc_add_note(c->doc,
                                       "verdict: insufficient when d_s < C-1 or the residual "
                                       "fraction of the teacher's centred logits at d_s exceeds "
                                       "%g (MATH 2.3)",
                                       o->tolerance);
        if (!err && kdl_table_rows(c->heads))
                err = kdl_doc_add_note(c->doc,
                                       "wfw_rank = rank(H_C W) = rank(W^T F(z) W) for every "
                                       "sample; wfw_support_rank_mean counts per sample the "
                                       "classes with p >= %g p_max at tau = %g (generic heads)",
                                       o->rank_rtol, o->tau);
        if (!err && !c->in->teacher)
                err = kdl_doc_add_note(c->doc, "no teacher (-t): no residual curve, ridge R^2 "
                                               "or verdict");
        return err;
}

/* Does any checkpoint of any input have a layer called name? */
static bool layer_exists(const kdl_inputs *in, const char *name)
{
        for (size_t m = 0; m <= in->nstudents; m++) {
                kdl_h5file *f = m < in->nstudents ? in->students[m] : in->teacher;
                const kdl_dump *d = f ? kdl_h5_dump(f) : NULL;

                for (size_t k = 0; d && k < d->ncheckpoints; k++)
                        if (kdl_h5_layer(&d->checkpoints[k], name))
                                return true;
        }
        return false;
}

int kdl_dims(const kdl_inputs *in, const struct kdl_dims_opts *o, kdl_doc *doc)
{
        struct ctx c = {.in = in, .o = o, .doc = doc};
        struct kdl_ckpair *sel = NULL;
        size_t nsel = 0;
        int err;

        err = check_opts(in, o);
        if (err < 0)
                return err;
        if (o->layer && strcmp(o->layer, "all") != 0 && !layer_exists(in, o->layer))
                return kdl_error(-KDL_EUSAGE, "--layer: no input has a layer '%s'", o->layer);
        err = kdl_inputs_describe(in, doc);
        err = err ?: kdl_table_new("dims", "Feature dimensions per layer", &c.dims);
        err = err
                      ?: kdl_table_new("heads", "Rank of W^T F W (feature directions the KL sees)",
                                       &c.heads);
        err = err ?: kdl_table_new("verdict", "Is the student wide enough?", &c.verdict);
        err = err
                      ?: kdl_table_new("logit_residual",
                                       "Residual of the teacher's centred logits at width d",
                                       &c.curve);
        err = err ?: kdl_table_new("spectrum", "Covariance spectra", &c.spec);
        err = err ?: label_columns(c.dims, dims_labels, sizeof(dims_labels) / sizeof(*dims_labels));
        err = err
                      ?: label_columns(c.verdict, verdict_labels,
                                       sizeof(verdict_labels) / sizeof(*verdict_labels));
        if (err < 0)
                goto out;

        if (in->teacher) {
                const kdl_dump *td = kdl_h5_dump(in->teacher);

                c.tlog = kdl_new(kdl_spectral_result *, td->ncheckpoints ? td->ncheckpoints : 1);
                if (!c.tlog) {
                        err = -ENOMEM;
                        goto out;
                }
                /* A checkpoint that only the students have is fine: the
                 * teacher then contributes the partners of theirs. */
                err = kdl_select_checkpoints(in->teacher, NULL, o->checkpoint, NULL, &sel, &nsel);
                if (err == -KDL_EUSAGE && in->nstudents) {
                        kdl_error_clear();
                        err = 0;
                }
                for (size_t k = 0; k < nsel && !err; k++)
                        err = ensure_teacher(&c, sel[k].main);
                free(sel);
                sel = NULL;
                if (err < 0)
                        goto out;
        }
        for (size_t s = 0; s < in->nstudents; s++) {
                kdl_h5file *sf = in->students[s];

                err = kdl_select_checkpoints(sf, in->teacher, o->checkpoint, o->teacher_checkpoint,
                                             &sel, &nsel);
                for (size_t k = 0; k < nsel && !err; k++) {
                        const kdl_checkpoint *tck = sel[k].partner;
                        kdl_spectral_result *slog = NULL;
                        double head_r2 = NAN;

                        if (tck)
                                err = ensure_teacher(&c, tck);
                        err = err
                                      ?: analyse_ck(&c, sf, in->pairs[s], sel[k].main, in->teacher,
                                                    tck, &slog, &head_r2);
                        kdl_spectral_result_free(slog);
                        if (!err && tck)
                                err = verdict_row(&c, kdl_h5_dump(sf), sel[k].main, tck, head_r2);
                }
                free(sel);
                sel = NULL;
                if (err < 0)
                        goto out;
        }
        if (o->layer && strcmp(o->layer, "all") != 0 && c.layer_rows == 0) {
                err = kdl_error(-KDL_EUSAGE, "--layer: no selected checkpoint has a layer '%s'",
                                o->layer);
                goto out;
        }
        if (in->teacher)
                err = curve_rows(&c);
        err = err ?: notes(&c);
        err = err ?: add_table(doc, &c.dims);
        err = err ?: add_table(doc, &c.heads);
        err = err ?: add_table(doc, &c.verdict);
        err = err ?: add_table(doc, &c.curve);
        err = err ?: add_table(doc, &c.spec);
out:
        if (c.tlog)
                for (size_t k = 0; k < kdl_h5_dump(in->teacher)->ncheckpoints; k++)
                        kdl_spectral_result_free(c.tlog[k]);
        free(c.tlog);
        for (size_t m = 0; m < c.nmarks; m++)
                free(c.marks[m].label);
        free(c.marks);
        kdl_table_free(c.spec);
        kdl_table_free(c.curve);
        kdl_table_free(c.verdict);
        kdl_table_free(c.heads);
        kdl_table_free(c.dims);
        return err;
}
