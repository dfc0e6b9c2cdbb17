/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdbool.h>

#include "metrics/kl.h"
#include "analysis/kl-internal.h"
#include "metrics/base/banned.h"

/* The rows of the kl and kl_features tables from the results of one
 * comparison.  The analysis itself is kl.c. */

#define NV KDL_KL_VALUE_COUNT_

/* Common leading cells of both tables. */
static int put_keys(kdl_table *t, const struct kdl__kl_rows *x, const char *student)
{
        int err;

        if (kdl_table_add_row(t) < 0)
                return -ENOMEM;
        err = kdl_table_put_str(t, "student", student);
        err = err ?: kdl_table_put_str(t, "checkpoint", x->cs->name);
        err = err ?: kdl_table_put_int(t, "step", x->cs->step);
        err = err ?: kdl_table_put_str(t, "teacher_checkpoint", x->ct->name);
        return err;
}

/* The "kl" row of value @v at temperature @tau. */
static int kl_row(kdl_table *kt, const struct kdl__kl_rows *x, const char *student, double tau,
                  int v, const kdl_kl_fidelity *f, const kdl_kl_result *r)
{
        bool avail = !x->need[v];
        int err;

        assert(avail == f->available);
        err = put_keys(kt, x, student);
        err = err ?: kdl_table_put_real(kt, "tau", tau);
        err = err ?: kdl_table_put_str(kt, "source", kdl_kl_source(v));
        err = err ?: kdl_table_put_str(kt, "approximation", kdl_kl_name(v));
        err = err ?: kdl_table_put_bool(kt, "available", avail);
        if (!err && (avail || x->lt || v < KDL_KL_FEATURE_L2 || v == KDL_KL_GRADIENT_LOGIT_L2))
                err = kdl_table_put_int(kt, "dim", (long long) kdl_kl_dim(v, x->c, x->d_t));
        if (!err && avail) {
                err = kdl_table_put_real(kt, "mean", f->mean);
                err = err ?: kdl_table_put_real(kt, "ratio", f->ratio);
                err = err ?: kdl_table_put_real(kt, "pearson", f->pearson);
                err = err ?: kdl_table_put_real(kt, "spearman", f->spearman);
                err = err ?: kdl_table_put_real(kt, "relerr", f->relerr);
                err = err ?: kdl_table_put_int(kt, "samples", (long long) r->n);
                err = err ?: kdl_table_put_int(kt, "spearman_samples", (long long) r->spearman_n);
        }
        if (!err && !avail)
                err = kdl_table_put_str(kt, "needs", x->need[v]);
        return err;
}

/* The "kl_features" row: widths, projector, R², KL-visible share. */
static int features_row(kdl_table *ft, const struct kdl__kl_rows *x, const char *student,
                        const kdl_kl_result *r)
{
        int err;

        err = put_keys(ft, x, student);
        err = err ?: kdl_table_put_int(ft, "classes", (long long) x->c);
        err = err ?: kdl_table_put_bool(ft, "available", r->features);
        if (!err && x->lt)
                err = kdl_table_put_str(ft, "teacher_layer", x->lt->name);
        if (!err && x->ls)
                err = kdl_table_put_str(ft, "student_layer", x->ls->name);
        if (!err && r->features) {
                err = kdl_table_put_int(ft, "d_t", (long long) r->d_t);
                err = err ?: kdl_table_put_int(ft, "d_s", (long long) r->d_s);
                err = err
                              ?: kdl_table_put_str(ft, "projector",
                                                   r->projector_fitted ? "least_squares"
                                                                       : "identity");
                err = err ?: kdl_table_put_int(ft, "projector_rank", (long long) r->projector_rank);
                err = err ?: kdl_table_put_real(ft, "r2", r->r2);
                err = err ?: kdl_table_put_real(ft, "mean_sq_mismatch", r->feature_sq);
                if (!err && r->head) {
                        err = kdl_table_put_int(ft, "head_rank", (long long) r->head_rank);
                        err = err ?: kdl_table_put_real(ft, "kl_visible_share", r->visible_share);
                }
        }
        if (!err && x->need[KDL_KL_FEATURE_HEAD])
                err = kdl_table_put_str(ft, "needs", x->need[KDL_KL_FEATURE_HEAD]);
        return err;
}

int kdl__kl_fill_tables(kdl_table *kt, kdl_table *ft, const struct kdl__kl_rows *x,
                        const char *student, size_t ntau, const double *tau, const kdl_kl_result *r)
{
        int err = 0;

        for (size_t it = 0; it < ntau && !err; it++)
                for (int v = 0; v < NV && !err; v++)
                        err = kl_row(kt, x, student, tau[it], v, &r->tau[it].v[v], r);
        return err ?: features_row(ft, x, student, r);
}
