/* SPDX-License-Identifier: MIT */
/*
 * `kdlens cka --measure`: CCA, SVCCA, PWCCA and the orthogonal Procrustes distance of the
 * layer pairs (metrics/similarity.h), from the centred cross-products the feature-space
 * pass accumulates for CKA (docs/cka.md#cca-svcca-pwcca-and-procrustes).  Under MPI the
 * state is merged before this runs, so every rank computes what one process does.
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/similarity.h"
#include "analysis/cka-internal.h"
#include "metrics/base/banned.h"

/* The rank cut, relative to a layer's largest eigenvalue: double-precision sums, and
 * float products (--precision mixed), whose rounding is about 1e-7 of the largest. */
#define RTOL_DOUBLE 1e-10
#define RTOL_MIXED  1e-6

/* The values of a pair, in the order of struct kdl_similarity's doubles. */
enum value { V_RHO, V_RHO2, V_SVCCA, V_PWCCA, V_PROC, V_ANGULAR, V_COUNT_ };

struct kdl__cka_sim {
        size_t l;
        double rtol, keep;
        double *v[V_COUNT_]; /* [L*L], NaN where not computed */
        size_t *rank, *dims; /* [L*L] each pair's ranks and SVCCA directions of its first layer */
        bool *done;          /* [L*L] computed */
        size_t ndone;
};

static const char *const measure_names[KDL_RUN_CKA_MEASURE_COUNT_] = {"cka", "cca", "svcca",
                                                                      "pwcca", "procrustes"};

const char *kdl_run_cka_measure_name(enum kdl_run_cka_measure m)
{
        assert(m < KDL_RUN_CKA_MEASURE_COUNT_);
        return measure_names[m];
}

int kdl_run_cka_measures_parse(const char *s, unsigned *ret)
{
        unsigned bits = 0;
        const char *p = s;

        while (*p) {
                size_t len = strcspn(p, ",");
                int m = 0;

                if (len == 3 && strncmp(p, "all", 3) == 0)
                        bits |= (1u << KDL_RUN_CKA_MEASURE_COUNT_) - 1;
                else {
                        while (m < KDL_RUN_CKA_MEASURE_COUNT_ &&
                               (strlen(measure_names[m]) != len ||
                                strncmp(p, measure_names[m], len)))
                                m++;
                        if (m == KDL_RUN_CKA_MEASURE_COUNT_)
                                return kdl_error(-KDL_EUSAGE,
                                                 "--measure: expected a list of cka, cca, svcca, "
                                                 "pwcca, procrustes or all, found '%s'",
                                                 s);
                        bits |= 1u << m;
                }
                p += len + (p[len] == ',');
        }
        if (!bits)
                return kdl_error(-KDL_EUSAGE, "--measure: an empty list");
        /* CKA comes from the same pass and is always reported. */
        *ret = bits | 1u << KDL_RUN_CKA_MEASURE_CKA;
        return 0;
}

void kdl__cka_sim_free(struct kdl__cka_sim *s)
{
        if (!s)
                return;
        for (int v = 0; v < V_COUNT_; v++)
                free(s->v[v]);
        free(s->done);
        free(s->dims);
        free(s->rank);
        free(s);
}

static int sim_new(size_t l, struct kdl__cka_sim **ret)
{
        struct kdl__cka_sim *s = kdl_new(struct kdl__cka_sim, 1);
        int err = s ? 0 : -ENOMEM;

        for (int v = 0; v < V_COUNT_ && !err; v++) {
                s->v[v] = kdl_new(double, l *l);
                err = s->v[v] ? 0 : -ENOMEM;
                for (size_t i = 0; !err && i < l * l; i++)
                        s->v[v][i] = NAN;
        }
        if (!err) {
                s->l = l;
                s->rank = kdl_new(size_t, 2 * l * l);
                s->dims = kdl_new(size_t, 2 * l * l);
                s->done = kdl_new(bool, l *l);
                err = s->rank && s->dims && s->done ? 0 : -ENOMEM;
        }
        if (err) {
                kdl__cka_sim_free(s);
                return err;
        }
        *ret = s;
        return 0;
}

/* Whether the pass's state holds the pair (@j, @k) as two dense layers' block: needed,
 * not in column strips, neither sketched nor the labels' classes, both datasets. */
static bool computable(const struct kdl__cka_pass *c, size_t j, size_t k)
{
        size_t l = c->l->n;
        const bool *p = c->o.pairs;

        if (!c->state || !c->l->v[j].ds || !c->l->v[k].ds)
                return false;
        if (c->wide.kinds[j] != KDL_CKA_LAYER_DENSE || c->wide.kinds[k] != KDL_CKA_LAYER_DENSE)
                return false;
        /* Strips keep no block of an external pair, nor of a wide source with itself. */
        if (c->wide.ext && (c->wide.ext[j * l + k] || c->wide.ext[k * l + j] ||
                            c->wide.ext[j * l + j] || c->wide.ext[k * l + k]))
                return false;
        return j == k || !p || p[j * l + k] || p[k * l + j];
}

/* Layer @j's decomposition, made on first use into @lay[j]; @buf holds D_j² doubles. */
static int layer(const struct kdl__cka_pass *c, const struct kdl_similarity_opts *so, size_t j,
                 double *buf, kdl_similarity_layer **lay)
{
        int err;

        if (lay[j])
                return 0;
        err = kdl_similarity_cka_cov(c->state, j, j, buf);
        return err ?: kdl_similarity_layer_new(c->l->v[j].width, buf, so, &lay[j]);
}

static int pair(const struct kdl__cka_pass *c, const struct kdl_similarity_opts *so, size_t j,
                size_t k, double *buf, kdl_similarity_layer **lay, struct kdl__cka_sim *s)
{
        struct kdl_similarity r;
        size_t l = s->l;
        int err;

        err = layer(c, so, j, buf, lay);
        err = err ?: layer(c, so, k, buf, lay);
        err = err ?: kdl_similarity_cka_cov(c->state, j, k, buf);
        err = err ?: kdl_similarity_pair(lay[j], lay[k], buf, &r);
        if (err < 0)
                return err;
        s->v[V_RHO][j * l + k] = r.cca_mean_rho;
        s->v[V_RHO2][j * l + k] = r.cca_mean_rho2;
        s->v[V_SVCCA][j * l + k] = r.svcca;
        s->v[V_PWCCA][j * l + k] = r.pwcca;
        s->v[V_PROC][j * l + k] = r.procrustes;
        s->v[V_ANGULAR][j * l + k] = r.procrustes_angular;
        s->rank[2 * (j * l + k)] = r.rank_a;
        s->rank[2 * (j * l + k) + 1] = r.rank_b;
        s->dims[2 * (j * l + k)] = r.svcca_a;
        s->dims[2 * (j * l + k) + 1] = r.svcca_b;
        s->done[j * l + k] = true;
        s->ndone++;
        return 0;
}

/* The metric's bits of each measure. */
static const unsigned what_bits[KDL_RUN_CKA_MEASURE_COUNT_] = {
        0, KDL_SIMILARITY_CCA, KDL_SIMILARITY_SVCCA, KDL_SIMILARITY_PWCCA,
        KDL_SIMILARITY_PROCRUSTES};

static bool wants(unsigned measures, enum kdl_run_cka_measure m)
{
        return measures & 1u << m;
}

int kdl__cka_sim_compute(const struct kdl__cka_pass *c, struct kdl__cka_sim **ret)
{
        const struct kdl__srcs *l = c->l;
        struct kdl_similarity_opts so;
        kdl_similarity_layer **lay = kdl_new(kdl_similarity_layer *, l->n);
        struct kdl__cka_sim *s = NULL;
        size_t maxw = 0, cells;
        double *buf = NULL;
        int err;

        for (size_t k = 0; k < l->n; k++)
                maxw = l->v[k].width > maxw ? l->v[k].width : maxw;
        err = lay ? kdl_mul_size(maxw, maxw, &cells) : -ENOMEM;
        err = err ?: sim_new(l->n, &s);
        if (!err) {
                buf = kdl__malloc(cells ? cells : 1, sizeof(double));
                err = buf ? 0 : -ENOMEM;
        }
        kdl_similarity_opts_init(&so);
        so.rtol = c->o.precision == KDL_CKA_PRECISION_MIXED ? RTOL_MIXED : RTOL_DOUBLE;
        so.svcca_keep = c->o.svcca_keep;
        so.what = 0;
        for (int m = 1; m < KDL_RUN_CKA_MEASURE_COUNT_; m++)
                if (wants(c->o.measures, (enum kdl_run_cka_measure) m))
                        so.what |= what_bits[m];
        if (s) {
                s->rtol = so.rtol;
                s->keep = so.svcca_keep;
        }
        /* Each ordered pair the tables show: a source of A, then one of B (or of A). */
        for (size_t j = 0; j < l->n && !err; j++)
                for (size_t k = 0; k < l->n && !err; k++)
                        if (l->v[j].model == 0 && computable(c, j, k))
                                err = pair(c, &so, j, k, buf, lay, s);
        for (size_t k = 0; lay && k < l->n; k++)
                kdl_similarity_layer_free(lay[k]);
        free(lay);
        free(buf);
        if (err < 0) {
                kdl__cka_sim_free(s);
                return err;
        }
        *ret = s;
        return 0;
}

static double value(const struct kdl__cka_results *res, enum value v, size_t a, size_t b)
{
        const struct kdl__cka_sim *s = res->sim;

        return s ? s->v[v][a * s->l + b] : (double) NAN;
}

int kdl__cka_sim_columns(kdl_table *t, const struct kdl__cka_results *res, unsigned measures,
                         size_t a, size_t b)
{
        const struct kdl__cka_sim *s = res->sim;
        size_t i = s ? a * s->l + b : 0;
        bool done = s && s->done[i];
        int err = 0;

        if (wants(measures, KDL_RUN_CKA_MEASURE_CCA)) {
                err = kdl_table_put_real(t, "cca_mean_rho", value(res, V_RHO, a, b));
                err = err ?: kdl_table_put_real(t, "cca_mean_rho2", value(res, V_RHO2, a, b));
                if (!err && done) {
                        err = kdl_table_put_int(t, "cca_rank_a", (long long) s->rank[2 * i]);
                        err = err
                                      ?: kdl_table_put_int(t, "cca_rank_b",
                                                           (long long) s->rank[2 * i + 1]);
                }
        }
        if (!err && wants(measures, KDL_RUN_CKA_MEASURE_SVCCA)) {
                err = kdl_table_put_real(t, "svcca", value(res, V_SVCCA, a, b));
                if (!err && done) {
                        err = kdl_table_put_int(t, "svcca_dims_a", (long long) s->dims[2 * i]);
                        err = err
                                      ?: kdl_table_put_int(t, "svcca_dims_b",
                                                           (long long) s->dims[2 * i + 1]);
                }
        }
        if (!err && wants(measures, KDL_RUN_CKA_MEASURE_PWCCA))
                err = kdl_table_put_real(t, "pwcca", value(res, V_PWCCA, a, b));
        if (!err && wants(measures, KDL_RUN_CKA_MEASURE_PROCRUSTES)) {
                err = kdl_table_put_real(t, "procrustes", value(res, V_PROC, a, b));
                err = err
                              ?: kdl_table_put_real(t, "procrustes_angular",
                                                    value(res, V_ANGULAR, a, b));
        }
        return err;
}

/* The matrix tables: the value each shows, by measure (none for cka, the "cka" table). */
static const enum value shown[KDL_RUN_CKA_MEASURE_COUNT_] = {V_COUNT_, V_RHO, V_SVCCA, V_PWCCA,
                                                             V_PROC};
static const char *const titles[KDL_RUN_CKA_MEASURE_COUNT_] = {
        NULL, "mean canonical correlation (CCA)", "SVCCA (mean canonical correlation)",
        "PWCCA (projection-weighted mean canonical correlation)",
        "orthogonal Procrustes distance (2 - 2 nuclear norm)"};

int kdl__cka_sim_tables_new(const struct kdl_run_cka_opts *o, kdl_table **t)
{
        int err = 0;

        if (!(o->svcca_keep > 0.0 && o->svcca_keep <= 1.0))
                return kdl_error(-KDL_EUSAGE, "--svcca-keep: a share in (0, 1], found %g",
                                 o->svcca_keep);
        for (int m = 1; m < KDL_RUN_CKA_MEASURE_COUNT_ && !err; m++)
                if (wants(o->measures, (enum kdl_run_cka_measure) m))
                        err = kdl_table_new(measure_names[m], titles[m], &t[m]);
        return err;
}

void kdl__cka_sim_tables_free(kdl_table **t)
{
        for (int m = 0; m < KDL_RUN_CKA_MEASURE_COUNT_; m++) {
                kdl_table_free(t[m]);
                t[m] = NULL;
        }
}

int kdl__cka_sim_tables_add(kdl_doc *doc, kdl_table **t)
{
        int err = 0;

        for (int m = 0; m < KDL_RUN_CKA_MEASURE_COUNT_ && !err; m++)
                if (t[m]) {
                        err = kdl_doc_add_table(doc, t[m]);
                        t[m] = NULL;
                }
        return err;
}

int kdl__cka_sim_row(kdl_table *const *t, const struct kdl_ckpair *ck, bool two, const char *layer)
{
        int err = 0;

        for (int m = 1; m < KDL_RUN_CKA_MEASURE_COUNT_ && !err; m++) {
                if (!t[m])
                        continue;
                if (kdl_table_add_row(t[m]) < 0)
                        return -ENOMEM;
                err = kdl_table_put_str(t[m], "checkpoint", ck->main->name);
                if (!err && two)
                        err = kdl_table_put_str(t[m], "checkpoint_b", ck->partner->name);
                err = err ?: kdl_table_put_str(t[m], "layer", layer);
        }
        return err;
}

int kdl__cka_sim_cell(kdl_table *const *t, const struct kdl__cka_results *res, const char *key,
                      size_t a, size_t b)
{
        int err = 0;

        for (int m = 1; m < KDL_RUN_CKA_MEASURE_COUNT_ && !err; m++)
                if (t[m])
                        err = kdl_table_put_real(t[m], key, value(res, shown[m], a, b));
        return err;
}

int kdl__cka_sim_notes(kdl_doc *doc, const struct kdl__cka_results *last, unsigned measures)
{
        const struct kdl__cka_sim *s = last->sim;
        bool few = false;
        int err;

        if (!(measures & ~(1u << KDL_RUN_CKA_MEASURE_CKA)))
                return 0;
        if (!s)
                return kdl_doc_add_note(
                        doc, "--measure: CCA, SVCCA, PWCCA and Procrustes were not computed "
                             "(NaN): they need the feature-space pass, and this run was in Gram "
                             "space (a layer wider than the sample count)");
        err = kdl_doc_add_note(doc,
                               "CCA, SVCCA, PWCCA and Procrustes from the centred covariances of "
                               "the same pass; rank cut: eigenvalues below %g of a layer's "
                               "largest dropped (cca_rank_a, cca_rank_b); SVCCA keeps the top "
                               "directions holding %g %% of each layer's variance",
                               s->rtol, 100.0 * s->keep);
        for (size_t i = 0; i < s->l * s->l; i++)
                few = few || (s->done[i] && s->rank[2 * i] + s->rank[2 * i + 1] >= last->n);
        if (!err && few)
                err = kdl_doc_add_note(doc,
                                       "warning: in some pairs the two ranks add up to the "
                                       "sample count (%zu) or more: canonical correlations of 1 "
                                       "come from the dimensions alone (CCA needs many more "
                                       "samples than dimensions)",
                                       last->n);
        if (!err && (last->nwide || last->strips))
                err = kdl_doc_add_note(doc, "--measure: pairs with a wide source (method sketch "
                                            "or strips) are NaN in the CCA and Procrustes "
                                            "columns: a sketch does not preserve them, and "
                                            "strips keep no covariance matrix");
        return err;
}
