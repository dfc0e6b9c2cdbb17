/* SPDX-License-Identifier: MIT */
/*
 * `kdlens cka --measure`: CCA, SVCCA, PWCCA and the orthogonal Procrustes distance of the
 * layer pairs (metrics/similarity.h), from the centred cross-products the feature-space
 * pass accumulates for CKA, or in Gram space from the centred Gram matrices of the
 * gathered rows (docs/cka.md#cca-svcca-pwcca-and-procrustes).  Under MPI the state is
 * merged (the rows gathered) before this runs, so every rank computes what one process
 * does.
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

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
        bool gram;           /* from the n x n Gram matrices (PWCCA not computed) */
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

/* Where a run's layers and cross-products come from: the feature-space state, or in Gram
 * space (@t, the gathered rows of every sample) the n x n centred Gram matrices K, with
 * K_a^(1/2) K_b^(1/2) as the cross-product (kdl_similarity_layer_sqrt()). */
struct src {
        const struct kdl__cka_pass *c;
        const kdl_tensor *t; /* Gram space: [L] the rows; NULL in feature space */
        struct kdl_similarity_opts so;
        kdl_similarity_layer **lay; /* [L] made on first use */
        double **sq;                /* [L] Gram space: K^(1/2), n x n */
        double *buf;                /* the largest S (feature space) or K (Gram space) */
};

/* Whether the pair (@j, @k) is computed: both datasets, a pair the tables need; in feature
 * space two dense layers the state keeps a block of (not in column strips, neither
 * sketched nor the labels' classes). */
static bool computable(const struct src *q, size_t j, size_t k)
{
        const struct kdl__cka_pass *c = q->c;
        size_t l = c->l->n;
        const bool *p = c->o.sim_pairs ? c->o.sim_pairs : c->o.pairs;

        if (!c->l->v[j].ds || !c->l->v[k].ds || !(j == k || !p || p[j * l + k] || p[k * l + j]))
                return false;
        if (q->t)
                return true;
        if (!c->state || c->wide.kinds[j] != KDL_CKA_LAYER_DENSE ||
            c->wide.kinds[k] != KDL_CKA_LAYER_DENSE)
                return false;
        /* Strips keep no block of an external pair, nor of a wide source with itself. */
        return !c->wide.ext || !(c->wide.ext[j * l + k] || c->wide.ext[k * l + j] ||
                                 c->wide.ext[j * l + j] || c->wide.ext[k * l + k]);
}

/* The centred Gram matrix of the rows @x [n, D] into @k [n*n] (full); @xc: n D scratch. */
static void centred_gram(const kdl_tensor *x, double *xc, double *k)
{
        size_t n = x->shape[0], d = x->shape[1];

        for (size_t c = 0; c < d; c++) {
                double m = 0.0;

                for (size_t i = 0; i < n; i++)
                        m += KDL_AT2(x, i, c);
                m /= (double) n;
                for (size_t i = 0; i < n; i++)
                        xc[i * d + c] = KDL_AT2(x, i, c) - m;
        }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int) n, (int) d, 1.0, xc, (int) d,
                    0.0, k, (int) n);
        for (size_t i = 0; i < n; i++)
                for (size_t c = 0; c < i; c++)
                        k[i * n + c] = k[c * n + i];
}

/* Layer @j's decomposition (and in Gram space its K^(1/2)), made on first use. */
static int layer(struct src *q, size_t j)
{
        const kdl_tensor *x = q->t ? &q->t[j] : NULL;
        size_t n = x ? x->shape[0] : 0;
        double *xc;
        int err;

        if (q->lay[j])
                return 0;
        if (!x) {
                err = kdl_similarity_cka_cov(q->c->state, j, j, q->buf);
                return err
                               ?: kdl_similarity_layer_new(q->c->l->v[j].width, q->buf, &q->so,
                                                           &q->lay[j]);
        }
        xc = kdl__malloc(n ? n : 1, x->shape[1] * sizeof(double));
        q->sq[j] = kdl__malloc(n ? n : 1, n * sizeof(double));
        if (!xc || !q->sq[j]) {
                free(xc);
                return -ENOMEM;
        }
        centred_gram(x, xc, q->buf);
        free(xc);
        err = kdl_similarity_layer_new(n, q->buf, &q->so, &q->lay[j]);
        return err ?: kdl_similarity_layer_sqrt(q->lay[j], q->sq[j]);
}

static int pair(struct src *q, size_t j, size_t k, struct kdl__cka_sim *s)
{
        struct kdl_similarity r;
        size_t l = s->l, n = q->t ? q->t[0].shape[0] : 0;
        int err;

        err = layer(q, j);
        err = err ?: layer(q, k);
        if (!err && q->t)
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int) n, (int) n, (int) n,
                            1.0, q->sq[j], (int) n, q->sq[k], (int) n, 0.0, q->buf, (int) n);
        else if (!err)
                err = kdl_similarity_cka_cov(q->c->state, j, k, q->buf);
        err = err ?: kdl_similarity_pair(q->lay[j], q->lay[k], q->buf, &r);
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

/* Source @k is in a pair of @pairs ([n*n]). */
static bool in_pairs(const bool *pairs, size_t n, size_t k)
{
        for (size_t i = 0; i < n; i++)
                if (pairs[k * n + i] || pairs[i * n + k])
                        return true;
        return false;
}

int kdl__cka_sim_need(const struct kdl__srcs *l, size_t n, bool gram,
                      const enum kdl_cka_layer *kinds, unsigned measures, const bool *pairs,
                      kdl__need *nd)
{
        unsigned family = 1u << KDL_RUN_CKA_MEASURE_CCA | 1u << KDL_RUN_CKA_MEASURE_SVCCA |
                          1u << KDL_RUN_CKA_MEASURE_PWCCA;
        /* Gram space: K^(1/2) needs the eigenvectors whatever is asked. */
        bool vectors = gram || measures & family;
        size_t side = 0, kept = 0, nl = 0, d;

        if (!(measures & ~(1u << KDL_RUN_CKA_MEASURE_CKA)))
                return 0;
        for (size_t k = 0; k < l->n; k++) {
                if (!l->v[k].ds || (!gram && kinds && kinds[k] != KDL_CKA_LAYER_DENSE) ||
                    (pairs && !in_pairs(pairs, l->n, k)))
                        continue;
                d = gram ? n : l->v[k].width;
                side = d > side ? d : side;
                /* Kept per layer with the eigenvectors: W^T and Z^T (r x d each, r at most
                 * the width), and in Gram space K^(1/2); without them a trace and a rank. */
                if (vectors && gram)
                        kept = kdl_sat_add(
                                kept,
                                kdl_sat_mul(n, n + 2 * (l->v[k].width < n ? l->v[k].width : n)));
                else if (vectors)
                        kept = kdl_sat_add(kept, kdl_sat_mul(2, kdl_sat_mul(d, d)));
                nl++;
        }
        /* Besides, for the largest layer (width or n = side): the scratch of its covariance
         * or Gram, and the largest transient, a layer's eigendecomposition (its copy and
         * dsyevd's workspace) or a pair's products, singular vectors and dgesdd's workspace:
         * 12 side^2 with the eigenvectors, 8 side^2 without (measured with every allocated
         * page touched, MALLOC_PERTURB_: a 1,536-wide layer beside 1,024 and 768; without,
         * Procrustes alone touches 3 side^2), 5 n^2 in Gram space.  In Gram space this is an upper
         * bound: the pass's Gram matrices, counted apart, are freed before the measures. */
        return kdl__need_add(nd,
                             kdl_sat_mul(sizeof(double),
                                         kdl_sat_add(kept, kdl_sat_mul(gram      ? 5
                                                                       : vectors ? 12
                                                                                 : 8,
                                                                       kdl_sat_mul(side, side)))),
                             0,
                             "the decompositions of --measure's CCA family or Procrustes (%zu %s)",
                             nl, gram ? "Gram matrices" : "layers");
}

int kdl__cka_sim_compute(const struct kdl__cka_pass *c, const kdl_tensor *t,
                         struct kdl__cka_sim **ret)
{
        const struct kdl__srcs *l = c->l;
        struct src q = {.c = c, .t = t};
        struct kdl__cka_sim *s = NULL;
        size_t side = t ? t[0].shape[0] : 0, cells;
        int err;

        for (size_t k = 0; k < l->n && !t; k++)
                side = l->v[k].width > side ? l->v[k].width : side;
        kdl_similarity_opts_init(&q.so);
        q.so.rtol = c->o.precision == KDL_CKA_PRECISION_MIXED ? RTOL_MIXED : RTOL_DOUBLE;
        q.so.svcca_keep = c->o.svcca_keep;
        q.so.what = 0;
        for (int m = 1; m < KDL_RUN_CKA_MEASURE_COUNT_; m++)
                if (wants(c->o.measures, (enum kdl_run_cka_measure) m))
                        q.so.what |= what_bits[m];
        /* Gram space: PWCCA's weights are over the neurons, which K does not keep; K^(1/2)
         * needs the eigenvectors whatever is asked. */
        if (t)
                q.so.what = (q.so.what & ~(unsigned) KDL_SIMILARITY_PWCCA) | KDL_SIMILARITY_CCA;
        q.lay = kdl_new(kdl_similarity_layer *, l->n);
        q.sq = kdl_new(double *, l->n);
        err = q.lay && q.sq ? kdl_mul_size(side, side, &cells) : -ENOMEM;
        err = err ?: sim_new(l->n, &s);
        if (!err) {
                q.buf = kdl__malloc(cells ? cells : 1, sizeof(double));
                err = q.buf ? 0 : -ENOMEM;
        }
        if (s) {
                s->rtol = q.so.rtol;
                s->keep = q.so.svcca_keep;
                s->gram = t != NULL;
        }
        /* Each ordered pair the tables show: a source of A, then one of B (or of A). */
        for (size_t j = 0; j < l->n && !err; j++)
                for (size_t k = 0; k < l->n && !err; k++)
                        if (l->v[j].model == 0 && computable(&q, j, k))
                                err = pair(&q, j, k, s);
        for (size_t k = 0; k < l->n; k++) {
                if (q.lay)
                        kdl_similarity_layer_free(q.lay[k]);
                if (q.sq)
                        free(q.sq[k]);
        }
        free(q.sq);
        free(q.lay);
        free(q.buf);
        if (err < 0) {
                kdl__cka_sim_free(s);
                return err;
        }
        *ret = s;
        return 0;
}

int kdl__cka_sim_slice(const struct kdl__cka_sim *s, const size_t *map, size_t n,
                       struct kdl__cka_sim **ret)
{
        struct kdl__cka_sim *t = NULL;
        int err = sim_new(n, &t);

        if (err < 0)
                return err;
        t->rtol = s->rtol;
        t->keep = s->keep;
        t->gram = s->gram;
        for (size_t a = 0; a < n; a++)
                for (size_t b = 0; b < n; b++) {
                        size_t i = a * n + b, f = map[a] * s->l + map[b];

                        for (int v = 0; v < V_COUNT_; v++)
                                t->v[v][i] = s->v[v][f];
                        memcpy(&t->rank[2 * i], &s->rank[2 * f], 2 * sizeof(size_t));
                        memcpy(&t->dims[2 * i], &s->dims[2 * f], 2 * sizeof(size_t));
                        t->done[i] = s->done[f];
                        t->ndone += s->done[f];
                }
        *ret = t;
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
                return 0;
        err = kdl_doc_add_note(doc,
                               "CCA, SVCCA, PWCCA and Procrustes from %s; rank cut: eigenvalues "
                               "below %g of a layer's largest dropped (cca_rank_a, cca_rank_b); "
                               "SVCCA keeps the top directions holding %g %% of each layer's "
                               "variance",
                               s->gram ? "the n x n centred Gram matrices of every sample (Gram "
                                         "space: a layer is wider than the sample count)"
                                       : "the centred covariances of the same pass",
                               s->rtol, 100.0 * s->keep);
        if (!err && s->gram && measures & 1u << KDL_RUN_CKA_MEASURE_PWCCA)
                err = kdl_doc_add_note(doc, "--measure pwcca: not computed in Gram space (NaN): "
                                            "its weights are over the neurons, which the n x n "
                                            "Gram matrices do not keep");
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
