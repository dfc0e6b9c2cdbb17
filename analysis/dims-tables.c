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

int kdl__dims_spectrum_rows(kdl_table *t, const kdl_dump *d, const kdl_checkpoint *ck,
                            const char *layer, const kdl_spectral_result *r)
{
        int err = 0;

        for (size_t k = 0; k < r->d && !err; k++) {
                err = kdl__dims_put_model(t, d, ck);
                err = err ?: kdl_table_put_str(t, "layer", layer);
                err = err ?: kdl_table_put_int(t, "k", (long long) k + 1);
                err = err ?: kdl_table_put_real(t, "eigenvalue", r->eig[k]);
                err = err ?: kdl_table_put_real(t, "explained", 1.0 - r->tail[k + 1]);
        }
        return err;
}

int kdl__dims_verdict_row(kdl_table *t, const kdl_dump *d, const kdl_checkpoint *ck,
                          const struct kdl__dims_verdict *v)
{
        const kdl_spectral_result *tres = v->tres;
        unsigned why = v->why;
        const char *reason;
        int err;

        reason = why == (KDL_DIMS_NARROW | KDL_DIMS_RESIDUAL) ? "d_s < C-1; residual > tolerance"
                 : why == KDL_DIMS_NARROW                     ? "d_s < C-1"
                 : why == KDL_DIMS_RESIDUAL                   ? "residual > tolerance"
                                                              : "";
        err = kdl__dims_put_model(t, d, ck);
        err = err ?: kdl_table_put_str(t, "teacher_checkpoint", v->tck->name);
        err = err ?: kdl_table_put_int(t, "d_s", (long long) v->d_s);
        err = err ?: kdl_table_put_str(t, "d_s_from", v->d_s_from);
        err = err ?: kdl_table_put_int(t, "classes", (long long) tres->d);
        err = err ?: kdl_table_put_int(t, "c_minus_1", (long long) tres->d - 1);
        err = err ?: kdl_table_put_real(t, "residual_at_d_s", v->residual);
        err = err ?: kdl_table_put_real(t, "tolerance", v->tolerance);
        err = err ?: kdl_table_put_str(t, "verdict", why ? "insufficient" : "sufficient");
        err = err ?: kdl_table_put_str(t, "reason", reason);
        if (!err && !isnan(v->head_r2))
                err = kdl_table_put_real(t, "ridge_r2", v->head_r2);
        err = err ?: kdl_table_put_int(t, "teacher_logit_rank", (long long) tres->sum.rank);
        err = err
                      ?: kdl_table_put_real(t, "teacher_logit_effective_rank",
                                            tres->sum.effective_rank);
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
        err = err ?: add_table(doc, &t->curve);
        err = err ?: add_table(doc, &t->spec);
        return err;
}

void kdl__dims_tables_release(struct kdl__dims_tables *t)
{
        kdl_table_free(t->spec);
        kdl_table_free(t->curve);
        kdl_table_free(t->verdict);
        kdl_table_free(t->heads);
        kdl_table_free(t->dims);
        *t = (struct kdl__dims_tables){0};
}

int kdl__dims_notes(kdl_doc *doc, const struct kdl_run_dims_opts *o, const kdl_inputs *in,
                    bool heads)
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
                err = kdl_doc_add_note(doc,
                                       "verdict: insufficient when d_s < C-1 or the residual "
                                       "fraction of the teacher's centred logits at d_s exceeds "
                                       "%g (MATH 2.3)",
                                       o->tolerance);
        if (!err && heads)
                err = kdl_doc_add_note(doc,
                                       "wfw_rank = rank(H_C W) = rank(W^T F(z) W) for every "
                                       "sample; wfw_support_rank_mean counts per sample the "
                                       "classes with p >= %g p_max at tau = %g (generic heads)",
                                       o->rank_rtol, o->common.tau[0]);
        if (!err && !in->teacher)
                err = kdl_doc_add_note(doc, "no teacher (-t): no residual curve, ridge R^2 "
                                            "or verdict");
        return err;
}
