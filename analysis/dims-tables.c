/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/spectral.h"
#include "analysis/dims-internal.h"
#include "metrics/base/banned.h"

/* The tables of the dims document: their rows from the spectral results, their
 * column labels and their notes.  The analysis itself is dims.c. */

const char *kdl__dims_model_name(const kdl_dump *d)
{
        return d->model ? d->model : d->path;
}

int kdl__dims_put_model(kdl_table *t, const kdl_dump *d, const kdl_checkpoint *ck)
{
        int err = kdl_table_add_row(t);

        if (err < 0)
                return err;
        err = kdl_table_put_str(t, "model", kdl__dims_model_name(d));
        err = err ?: kdl_table_put_str(t, "role", d->role ? d->role : "-");
        err = err ?: kdl_table_put_str(t, "checkpoint", ck->name);
        err = err ?: kdl_table_put_int(t, "step", ck->step);
        return err;
}

int kdl__dims_row(kdl_table *t, const kdl_dump *d, const kdl_checkpoint *ck, const kdl_layer *layer,
                  const kdl_spectral_result *r, const kdl_spectral_result *tres)
{
        const kdl_spectral_summary *s = &r->sum;
        int err = kdl__dims_put_model(t, d, ck);

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
        /* A sketch does not see the whole spectrum these need. */
        if (!err && r->method != KDL_SPECTRAL_SKETCH) {
                err = kdl_table_put_int(t, "numerical_rank", (long long) s->rank);
                err = err ?: kdl_table_put_real(t, "effective_rank", s->effective_rank);
                err = err ?: kdl_table_put_real(t, "participation_ratio", s->participation_ratio);
        }
        err = err ?: kdl_table_put_int(t, "dims_90", (long long) s->dims90);
        err = err ?: kdl_table_put_int(t, "dims_95", (long long) s->dims95);
        err = err ?: kdl_table_put_int(t, "dims_99", (long long) s->dims99);
        err = err ?: kdl_table_put_real(t, "total_variance", s->total);
        err = err ?: kdl_table_put_real(t, "top_eigenvalue", r->d ? r->eig[0] : 0.0);
        if (!err && layer && tres)
                err = kdl_table_put_real(t, "logit_residual_at_width",
                                         tres->tail[r->d < tres->d ? r->d : tres->d]);
        if (!err && layer && tres && tres->tail_lo)
                err = kdl_table_put_real(t, "logit_residual_at_width_lo",
                                         tres->tail_lo[r->d < tres->d ? r->d : tres->d]);
        if (!err && r->method != KDL_SPECTRAL_EXACT_FEATURES)
                err = kdl__dims_put_method(t, r);
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

int kdl__dims_spectrum_rows(kdl_table *t, const kdl_dump *d, const kdl_checkpoint *ck,
                            const char *layer, const kdl_spectral_result *r)
{
        int err = 0;

        for (size_t k = 0; k < r->neig && !err; k++) {
                err = kdl__dims_put_model(t, d, ck);
                err = err ?: kdl_table_put_str(t, "layer", layer);
                err = err ?: kdl_table_put_int(t, "k", (long long) k + 1);
                err = err ?: kdl_table_put_real(t, "eigenvalue", r->eig[k]);
                err = err ?: kdl_table_put_real(t, "explained", 1.0 - r->tail[k + 1]);
                /* A sketch's eigenvalue and explained share are the lower ends. */
                if (!err && r->eig_hi)
                        err = kdl_table_put_real(t, "eigenvalue_hi", r->eig_hi[k]);
                if (!err && r->tail_lo)
                        err = kdl_table_put_real(t, "explained_hi", 1.0 - r->tail_lo[k + 1]);
        }
        return err;
}

int kdl__dims_put_method(kdl_table *t, const kdl_spectral_result *r)
{
        int err = kdl_table_put_str(t, "spectrum_method", kdl_spectral_method_name(r->method));

        if (!err && r->method == KDL_SPECTRAL_SKETCH) {
                err = kdl_table_put_int(t, "sketch_rank", (long long) r->neig);
                err = err ?: kdl_table_put_int(t, "sketch_columns", (long long) r->sketch_k);
                err = err ?: kdl_table_put_real(t, "eigenvalue_bound", r->bound);
                err = err ?: kdl_table_put_real(t, "top_eigenvalue_hi", r->eig_hi[0]);
        }
        return err;
}

/* The verdict in words: "sufficient", or which of the two tests fail; from a
 * sketch, "unresolved" when its bounds cannot tell the architectural answer. */
static const char *verdict_text(const kdl_spectral_verdict_result *v)
{
        if (v->unresolved)
                return v->fails & KDL_DIMS_REALISED ? "insufficient (realised), architectural "
                                                      "unresolved"
                       : v->realised                ? "unresolved (architectural)"
                                                    : "unresolved (architectural only)";
        switch (v->fails) {
        case KDL_DIMS_ARCHITECTURAL | KDL_DIMS_REALISED:
                return "insufficient (architectural, realised)";
        case KDL_DIMS_ARCHITECTURAL:
                return "insufficient (architectural)";
        case KDL_DIMS_REALISED:
                return "insufficient (realised)";
        default:
                return v->realised ? "sufficient" : "sufficient (architectural only)";
        }
}

/* Why, with the numbers: each failed test, and a realised test that could not run.
 * Return: the text, which the caller frees; NULL on ENOMEM. */
static char *verdict_reason(const struct kdl__dims_verdict *v)
{
        const kdl_spectral_verdict_result *r = &v->v;
        char *arch = NULL, *real = NULL, *out;

        if ((r->fails & KDL_DIMS_ARCHITECTURAL) && r->d_needed_lo != r->d_needed)
                arch = kdl__asprintf("d_s = %zu < d_needed in [%zu, %zu] (residual in [%.3g, "
                                     "%.3g] > %g)",
                                     v->d_s, r->d_needed_lo, r->d_needed, r->residual_lo,
                                     r->residual, v->tolerance);
        else if (r->fails & KDL_DIMS_ARCHITECTURAL)
                arch = kdl__asprintf("d_s = %zu < d_needed = %zu (residual %.3g > %g)", v->d_s,
                                     r->d_needed, r->residual, v->tolerance);
        else if (r->unresolved)
                arch = kdl__asprintf("d_needed in [%zu, %zu] by the sketch's bounds, d_s = %zu "
                                     "(residual in [%.3g, %.3g], tolerance %g): a larger "
                                     "--sketch-rank narrows them",
                                     r->d_needed_lo, r->d_needed, v->d_s, r->residual_lo,
                                     r->residual, v->tolerance);
        if (r->fails & KDL_DIMS_REALISED)
                real = kdl__asprintf("R2 = %.3g < %g", v->r2, 1.0 - v->tolerance);
        else if (!r->realised && v->r2_layer)
                real = kdl__asprintf("realised untested: layer '%s' not analysed", v->r2_layer);
        else if (!r->realised)
                real = kdl__asprintf("realised untested: the dump names no head input layer");
        out = kdl__asprintf("%s%s%s", arch ? arch : "", arch && real ? "; " : "", real ? real : "");
        free(real);
        free(arch);
        return out;
}

int kdl__dims_verdict_row(kdl_table *t, const kdl_dump *d, const kdl_checkpoint *ck,
                          const struct kdl__dims_verdict *v)
{
        const kdl_spectral_result *tres = v->tres;
        const kdl_spectral_verdict_result *r = &v->v;
        char *reason = verdict_reason(v);
        int err;

        if (!reason)
                return -ENOMEM;
        err = kdl__dims_put_model(t, d, ck);
        err = err ?: kdl_table_put_str(t, "teacher_checkpoint", v->tck->name);
        err = err ?: kdl_table_put_int(t, "d_s", (long long) v->d_s);
        err = err ?: kdl_table_put_str(t, "d_s_from", v->d_s_from);
        err = err ?: kdl_table_put_int(t, "classes", (long long) tres->d);
        err = err ?: kdl_table_put_int(t, "c_minus_1", (long long) tres->d - 1);
        err = err ?: kdl_table_put_real(t, "tolerance", v->tolerance);
        err = err ?: kdl_table_put_real(t, "residual_at_d_s", r->residual);
        err = err ?: kdl_table_put_int(t, "d_needed", (long long) r->d_needed);
        err = err
                      ?: kdl_table_put_str(t, "architectural",
                                           r->fails & KDL_DIMS_ARCHITECTURAL ? "insufficient"
                                           : r->unresolved                   ? "unresolved"
                                                                             : "sufficient");
        if (!err && r->realised)
                err = kdl_table_put_real(t, "ridge_r2", v->r2);
        err = err ?: kdl_table_put_str(t, "r2_layer", v->r2_layer ? v->r2_layer : "-");
        err = err
                      ?: kdl_table_put_str(t, "realised",
                                           !r->realised                   ? "untested"
                                           : r->fails & KDL_DIMS_REALISED ? "insufficient"
                                                                          : "sufficient");
        err = err ?: kdl_table_put_str(t, "verdict", verdict_text(r));
        err = err ?: kdl_table_put_str(t, "reason", reason);
        if (!err && tres->method != KDL_SPECTRAL_SKETCH) {
                err = kdl_table_put_int(t, "teacher_logit_rank", (long long) tres->sum.rank);
                err = err
                              ?: kdl_table_put_real(t, "teacher_logit_effective_rank",
                                                    tres->sum.effective_rank);
        }
        /* From a sketch's bounds: the other ends, and the method. */
        if (!err && tres->tail_lo) {
                err = kdl_table_put_int(t, "d_needed_lo", (long long) r->d_needed_lo);
                err = err ?: kdl_table_put_real(t, "residual_at_d_s_lo", r->residual_lo);
        }
        if (!err && tres->method != KDL_SPECTRAL_EXACT_FEATURES)
                err = kdl_table_put_str(t, "spectrum_method",
                                        kdl_spectral_method_name(tres->method));
        free(reason);
        return err;
}

int kdl__dims_curve_rows(kdl_table *curve, const kdl_dump *td, kdl_spectral_result *const *tlog,
                         const struct kdl__dims_mark *mark, size_t nmark)
{
        int err = 0;

        for (size_t k = 0; k < td->ncheckpoints && !err; k++) {
                const kdl_spectral_result *r = tlog[k];

                for (size_t dd = 1; r && dd <= r->d && !err; dd++) {
                        char *marks = NULL, *t;

                        for (size_t m = 0; m < nmark; m++) {
                                size_t at = mark[m].d_s < r->d ? mark[m].d_s : r->d;

                                if (mark[m].tck != k || at != dd)
                                        continue;
                                t = kdl__asprintf("%s%s%s", marks ? marks : "", marks ? ", " : "",
                                                  mark[m].label);
                                free(marks);
                                marks = t;
                                if (!marks)
                                        return -ENOMEM;
                        }
                        err = kdl__dims_put_model(curve, td, &td->checkpoints[k]);
                        err = err ?: kdl_table_put_int(curve, "d", (long long) dd);
                        err = err ?: kdl_table_put_real(curve, "residual", r->tail[dd]);
                        err = err ?: kdl_table_put_real(curve, "explained", 1.0 - r->tail[dd]);
                        err = err ?: kdl_table_put_str(curve, "students", marks ? marks : "");
                        /* A sketch's residual is the upper end. */
                        if (!err && r->tail_lo)
                                err = kdl_table_put_real(curve, "residual_lo", r->tail_lo[dd]);
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
        {"tolerance", "tol"},
        {"residual_at_d_s", "resid@d_s"},
        {"d_needed", "d_needed"},
        {"architectural", "architectural"},
        {"ridge_r2", "ridge R2"},
        {"r2_layer", "R2 layer"},
        {"realised", "realised"},
        {"verdict", "verdict"},
        {"reason", "reason"},
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

int kdl__dims_tables_new(struct kdl__dims_tables *t)
{
        int err;

        *t = (struct kdl__dims_tables){0};
        err = kdl_table_new("dims", "Feature dimensions per layer", &t->dims);
        err = err
                      ?: kdl_table_new("heads", "Rank of W^T F W (feature directions the KL sees)",
                                       &t->heads);
        err = err ?: kdl_table_new("verdict", "Is the student wide enough?", &t->verdict);
        err = err
                      ?: kdl_table_new("logit_residual",
                                       "Residual of the teacher's centred logits at width d",
                                       &t->curve);
        err = err ?: kdl_table_new("spectrum", "Covariance spectra", &t->spec);
        err = err ?: kdl__dims_bottleneck_new(&t->bneck);
        err = err
                      ?: label_columns(t->dims, dims_labels,
                                       sizeof(dims_labels) / sizeof(*dims_labels));
        err = err
                      ?: label_columns(t->verdict, verdict_labels,
                                       sizeof(verdict_labels) / sizeof(*verdict_labels));
        return err;
}

int kdl__dims_tables_commit(struct kdl__dims_tables *t, kdl_doc *doc)
{
        int err;

        err = add_table(doc, &t->dims);
        err = err ?: add_table(doc, &t->heads);
        err = err ?: add_table(doc, &t->verdict);
        err = err ?: kdl__dims_bottleneck_commit(doc, &t->bneck);
        err = err ?: add_table(doc, &t->curve);
        err = err ?: add_table(doc, &t->spec);
        return err;
}

void kdl__dims_tables_release(struct kdl__dims_tables *t)
{
        kdl_table_free(t->bneck);
        kdl_table_free(t->spec);
        kdl_table_free(t->curve);
        kdl_table_free(t->verdict);
        kdl_table_free(t->heads);
        kdl_table_free(t->dims);
        *t = (struct kdl__dims_tables){0};
}

int kdl__dims_notes(kdl_doc *doc, const struct kdl_run_dims_opts *o, const kdl_inputs *in,
                    bool heads, unsigned methods)
{
        int err;

        err = kdl_doc_add_note(doc,
                               "spectra of the sample covariance (1/(N-1)); numerical rank counts "
                               "eigenvalues above %g x the largest; effective rank "
                               "exp(H(lambda/sum lambda)) (Roy & Vetterli)",
                               o->rank_rtol);
        if (!err && in->teacher)
                err = kdl_doc_add_note(
                        doc,
                        "ridge_r2: teacher's row-centred logits from the layer's features, "
                        "pooled over classes, intercept unpenalised, lambda %s (sum-of-squares "
                        "units, as scikit-learn's alpha); ridge_r2_gcv is GCV's out-of-sample "
                        "estimate",
                        isfinite(o->ridge_lambda) && o->ridge_lambda >= 0.0 ? "given" : "by GCV");
        if (!err && in->teacher && in->nstudents)
                err = kdl_doc_add_note(
                        doc,
                        "verdict at tolerance %g: architectural insufficient when d_s < "
                        "d_needed, the least d whose best d-dimensional fit leaves at most %g of "
                        "the teacher's centred-logit variance; realised insufficient when the "
                        "ridge R2 of those logits from the student's head-input features is "
                        "below %g",
                        o->tolerance, o->tolerance, 1.0 - o->tolerance);
        if (!err && heads)
                err = kdl_doc_add_note(doc,
                                       "wfw_rank = rank(H_C W) = rank(W^T F(z) W) for every "
                                       "sample; wfw_support_rank_mean counts per sample the "
                                       "classes with p >= %g p_max at tau = %g (generic heads)",
                                       o->rank_rtol, o->common.tau[0]);
        if (!err && !in->teacher)
                err = kdl_doc_add_note(doc, "no teacher (-t): no residual curve, ridge R^2 "
                                            "or verdict");
        if (!err && (methods & (1u << KDL_SPECTRAL_EXACT_GRAM)))
                err = kdl_doc_add_note(doc,
                                       "centred logits with spectrum_method exact-gram: the "
                                       "eigenvalues of the N x N Gram matrix of the centred "
                                       "logits, the nonzero ones of the C x C covariance (exact; "
                                       "chosen when N < C, N <= %zu and it fits the memory "
                                       "budget)",
                                       o->exact_max);
        if (!err && (methods & (1u << KDL_SPECTRAL_SKETCH)))
                err = kdl_doc_add_note(
                        doc,
                        "centred logits with spectrum_method sketch: a single-pass Nystrom "
                        "sketch of the covariance by a Gaussian test matrix of %zu + %zu columns "
                        "(seed %llu; Tropp, Yurtsever, Udell & Cevher 2017), the top %zu "
                        "eigenvalues with certified bounds: eigenvalue <= lambda_k <= "
                        "eigenvalue_hi = eigenvalue + eigenvalue_bound; the residual curve "
                        "between residual_lo and residual, d_needed between d_needed_lo and "
                        "d_needed, dims_90/95/99 their upper ends; the total variance is "
                        "exact; no numerical or effective rank or participation ratio (they "
                        "need the whole spectrum)",
                        o->sketch_rank, o->sketch_oversample, (unsigned long long) o->seed,
                        o->sketch_rank);
        return err;
}
