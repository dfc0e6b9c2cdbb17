/* SPDX-License-Identifier: MIT */
/* One CKA pass for the jobs of several runs comparing one teacher checkpoint with several
 * checkpoints of one student (kdl__cka_shared_new(), cka-internal.h). */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "analysis/cka-internal.h"
#include "metrics/base/banned.h"

struct kdl__cka_shared {
        struct kdl__cka_pass c;      /* first: the job's ctx (kdl__cka_pass_job_attach()) */
        struct kdl__cka_run **runs;  /* [n] borrowed; each with its job open */
        struct kdl__cka_job_view *v; /* [n] the runs' jobs */
        size_t n;
        struct kdl__srcs l; /* the teacher's sources, every run's student sources, the labels */
        size_t *map, maxl;  /* source j of run i is source map[i * maxl + j] of l */
        bool *mask;         /* [l.n^2] the pairs some run needs */
        bool *sim_mask;     /* [l.n^2] those of the runs asking --measure's (NULL: every run) */
        struct kdl__cka_compute_opts co;
        struct kdl__cka_results res;
};

/* ---- the sources of the pass ------------------------------------------------------- */

/* @a is the teacher's (or the labels): a source every run has. */
static bool shared_source(const struct kdl__src *a)
{
        return a->model == 0;
}

/* Run @i's @rank-th teacher source is run 0's: the same dataset (or the labels) and width. */
static long run0_source(const struct kdl__cka_shared *sh, const struct kdl__src *a, size_t rank)
{
        const struct kdl__srcs *l0 = sh->v[0].l;

        for (size_t j = 0, seen = 0; j < l0->n; j++) {
                if (!shared_source(&l0->v[j]))
                        continue;
                if (seen++ == rank)
                        return l0->v[j].ds == a->ds && l0->v[j].width == a->width ? (long) j : -1;
        }
        return -1;
}

/* The union of the runs' sources into sh->l, in an order that keeps the pairs a source
 * needs side by side: the teacher's sources with a dataset (run 0's), each run's student
 * sources in turn, then the labels.  Return: 1; 0 when a run's teacher sources are not
 * run 0's; -ENOMEM. */
static int union_sources(struct kdl__cka_shared *sh)
{
        int err = 0;

        for (size_t i = 0; i < sh->n; i++)
                sh->maxl = sh->v[i].l->n > sh->maxl ? sh->v[i].l->n : sh->maxl;
        sh->map = kdl_new(size_t, sh->n * sh->maxl + 1);
        if (!sh->map)
                return -ENOMEM;
        for (int part = 0; part < 3 && !err; part++)
                for (size_t i = 0; i < (part == 1 ? sh->n : 1) && !err; i++)
                        for (size_t j = 0; j < sh->v[i].l->n && !err; j++) {
                                const struct kdl__src *a = &sh->v[i].l->v[j];

                                if (part != (shared_source(a) ? (a->ds ? 0 : 2) : 1))
                                        continue;
                                sh->map[i * sh->maxl + j] = sh->l.n;
                                err = kdl__srcs_add(&sh->l, a->name, a->has_depth, a->depth,
                                                    a->model, a->ds, a->width);
                        }
        for (size_t i = 1; i < sh->n && !err; i++)
                for (size_t j = 0, rank = 0; j < sh->v[i].l->n; j++) {
                        const struct kdl__src *a = &sh->v[i].l->v[j];
                        long j0;

                        if (!shared_source(a))
                                continue;
                        j0 = run0_source(sh, a, rank++);
                        if (j0 < 0)
                                return 0;
                        sh->map[i * sh->maxl + j] = sh->map[j0];
                }
        return err < 0 ? err : 1;
}

/* The pairs the runs need, in the union's indices, into *@ret: every run's, or with
 * @measures those of the runs that ask --measure's beyond CKA. */
static int union_pairs(struct kdl__cka_shared *sh, bool measures, bool **ret)
{
        size_t nl = sh->l.n;
        bool *p = kdl_new(bool, nl *nl + 1);

        if (!p)
                return -ENOMEM;
        for (size_t i = 0; i < sh->n; i++) {
                const struct kdl__cka_job_view *v = &sh->v[i];
                const size_t *m = sh->map + i * sh->maxl;

                if (measures && !(v->co.measures & ~(1u << KDL_RUN_CKA_MEASURE_CKA)))
                        continue;
                for (size_t a = 0; a < v->l->n; a++)
                        for (size_t b = 0; b < v->l->n; b++)
                                if (!v->mask || v->mask[a * v->l->n + b])
                                        p[m[a] * nl + m[b]] = true;
        }
        *ret = p;
        return 0;
}

/* --measure's beyond CKA: the pass computes them for the pairs of the runs that ask them
 * (the report asks them of a student's last checkpoint alone), with those runs' options. */
static int union_measures(struct kdl__cka_shared *sh)
{
        size_t asking = 0;
        int err;

        for (size_t i = 0; i < sh->n; i++)
                if (sh->v[i].co.measures & ~(1u << KDL_RUN_CKA_MEASURE_CKA)) {
                        sh->co.measures |= sh->v[i].co.measures;
                        sh->co.svcca_keep = sh->v[i].co.svcca_keep;
                        asking++;
                }
        if (asking == 0 || asking == sh->n)
                return 0;
        err = union_pairs(sh, true, &sh->sim_mask);
        sh->co.sim_pairs = sh->sim_mask;
        return err;
}

/* Open every run's job at @cps (student @k) and find the pass they share.  Return: 1; 0
 * when they cannot share one; the errors of finding the sources; -ENOMEM.  Free @sh
 * whatever this returns. */
static int shared_setup(struct kdl__cka_shared *sh, struct kdl__cka_run *const *runs, size_t n,
                        size_t k, const struct kdl_ckpair *cps)
{
        struct kdl__cka_wide w;
        bool gram;
        int err = 0;

        sh->runs = kdl_new(struct kdl__cka_run *, n);
        sh->v = kdl_new(struct kdl__cka_job_view, n);
        if (!sh->runs || !sh->v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (cps[i].main != cps[0].main)
                        return 0;
        for (size_t i = 0; i < n && !err; i++) {
                sh->runs[i] = runs[i];
                err = kdl__cka_job_open(runs[i], k, &cps[i], &sh->v[i]);
                sh->n += !err;
        }
        if (err < 0)
                return err;
        sh->co = sh->v[0].co;
        /* Nothing to share; each checkpoint drops its own samples. */
        if (n < 2 || sh->co.skip_nonfinite || !sh->v[0].fb)
                return 0;
        err = union_sources(sh);
        if (err <= 0)
                return err;
        /* Gram space (every sample in memory) and wide sources (their sketches are seeded
         * by a source's index, their strips take more passes): each run on its own. */
        err = kdl__cka_pass_layout(&sh->l, sh->v[0].n, &sh->co, &w, &gram);
        if (!err && (gram || w.nwide))
                err = 1;
        kdl__cka_wide_release(&w);
        if (err)
                return err < 0 ? err : 0;
        err = union_pairs(sh, false, &sh->mask);
        sh->co.pairs = sh->mask;
        err = err ?: union_measures(sh);
        return err < 0 ? err : 1;
}

void kdl__cka_shared_free(struct kdl__cka_shared *sh)
{
        if (!sh)
                return;
        for (size_t i = 0; i < sh->n; i++)
                kdl__cka_job_drop(sh->runs[i]);
        kdl__cka_pass_release(&sh->c);
        kdl__cka_results_release(&sh->res);
        kdl__srcs_release(&sh->l);
        free(sh->mask);
        free(sh->sim_mask);
        free(sh->map);
        free(sh->v);
        free(sh->runs);
        free(sh);
}

/* ---- what it needs ----------------------------------------------------------------- */

/* The runs' results sliced from the pass's: per run and matrix (linear, robust, RBF,
 * minibatch) its point values, intervals, replicates and jackknife values of l_i^2. */
static size_t slices_bytes(const struct kdl__cka_shared *sh)
{
        const struct kdl__cka_compute_opts *o = &sh->co;
        size_t per = 11 + 2 * o->bootstrap, total = 0;
        size_t mats = 2 + (o->rbf ? 1 : 0) + (o->batch ? 1 : 0);

        if (o->bootstrap && o->interval == KDL_CKA_INTERVAL_BCA)
                per = kdl_sat_add(per, 2 * KDL_CKA_JACKKNIFE_GROUPS);
        for (size_t i = 0; i < sh->n; i++)
                total = kdl_sat_add(total, kdl_sat_mul(sh->v[i].l->n, sh->v[i].l->n));
        return kdl_sat_mul(kdl_sat_mul(total, kdl_sat_mul(per, mats)), sizeof(double));
}

/* The pass's need, in blocks of @rows rows (0: of a stream of its own, counted too). */
static int shared_need(const struct kdl__cka_shared *sh, size_t rows, kdl__need *nd)
{
        const struct kdl__cka_job_view *v0 = &sh->v[0];
        size_t nsub = v0->nsub;
        int err = 0;

        if (rows == 0) {
                struct kdl_stream_cost c;

                kdl_stream_cost_init(&c, v0->pair);
                kdl__feed_cost(&sh->l, v0->fa, sh->co.spatial, sh->co.labels, &c);
                rows = kdl_stream_cost_rows(&c, v0->n, &v0->so);
                err = kdl__need_add(nd, kdl_stream_cost_bytes(&c, v0->n, &v0->so), 0,
                                    "blocks of %zu rows of %zu sources", rows, sh->l.n);
        }
        err = err ?: kdl__cka_pass_need(&sh->l, v0->n, nsub, rows, v0->nclasses, &sh->co, nd);
        return err
                       ?: kdl__need_add(nd, slices_bytes(sh), 0,
                                        "the results of each of %zu checkpoints", sh->n);
}

int kdl__cka_shared_need(struct kdl__cka_run *const *runs, size_t n, size_t k,
                         const struct kdl_ckpair *cps, size_t rows, kdl__need *ret)
{
        struct kdl__cka_shared *sh = kdl_new(struct kdl__cka_shared, 1);
        kdl__need nd = {.analysis = ret->analysis};
        int err;

        if (!sh)
                return -ENOMEM;
        err = shared_setup(sh, runs, n, k, cps);
        if (err > 0 && (err = shared_need(sh, rows, &nd)) == 0) {
                kdl__need_max(ret, &nd);
                err = 1;
        }
        kdl__need_release(&nd);
        kdl__cka_shared_free(sh);
        return err;
}

int kdl__cka_shared_cost(struct kdl__cka_run *const *runs, size_t n, size_t k,
                         const struct kdl_ckpair *cps, struct kdl_stream_cost *c)
{
        struct kdl__cka_shared *sh = kdl_new(struct kdl__cka_shared, 1);
        int err;

        if (!sh)
                return -ENOMEM;
        err = shared_setup(sh, runs, n, k, cps);
        if (err > 0)
                kdl__feed_cost(&sh->l, sh->v[0].fa, sh->co.spatial, sh->co.labels, c);
        kdl__cka_shared_free(sh);
        return err;
}

/* ---- the pass ---------------------------------------------------------------------- */

/* @k matrices of @nl^2 values at @from (NULL: none), those of the sources @map (@n of
 * them), into *@ret. */
static int slice_values(const double *from, size_t nl, size_t k, const size_t *map, size_t n,
                        double **ret)
{
        double *v;

        *ret = NULL;
        if (!from)
                return 0;
        v = kdl__malloc(k ? k * n : 1, n * sizeof(double));
        if (!v)
                return -ENOMEM;
        for (size_t b = 0; b < k; b++)
                for (size_t i = 0; i < n; i++)
                        for (size_t j = 0; j < n; j++)
                                v[(b * n + i) * n + j] = from[(b * nl + map[i]) * nl + map[j]];
        *ret = v;
        return 0;
}

/* The matrix @m (NULL: none) for the sources @map. */
static int slice_matrix(const kdl_cka_matrix *m, const size_t *map, size_t n, kdl_cka_matrix **ret)
{
        kdl_cka_matrix *s;
        size_t nl, b, g;
        int r;

        *ret = NULL;
        if (!m)
                return 0;
        s = kdl_new(kdl_cka_matrix, 1);
        if (!s)
                return -ENOMEM;
        *s = (kdl_cka_matrix){.nlayers = n,
                              .n = m->n,
                              .nbatches = m->nbatches,
                              .bootstrap = m->bootstrap,
                              .level = m->level,
                              .interval = m->interval,
                              .ngroups = m->ngroups};
        nl = m->nlayers;
        b = m->bootstrap;
        g = m->ngroups;
        r = slice_values(m->biased, nl, 1, map, n, &s->biased);
        r = r ?: slice_values(m->debiased, nl, 1, map, n, &s->debiased);
        r = r ?: slice_values(m->minibatch, nl, 1, map, n, &s->minibatch);
        r = r ?: slice_values(m->biased_lo, nl, 1, map, n, &s->biased_lo);
        r = r ?: slice_values(m->biased_hi, nl, 1, map, n, &s->biased_hi);
        r = r ?: slice_values(m->biased_se, nl, 1, map, n, &s->biased_se);
        r = r ?: slice_values(m->biased_bias, nl, 1, map, n, &s->biased_bias);
        r = r ?: slice_values(m->debiased_lo, nl, 1, map, n, &s->debiased_lo);
        r = r ?: slice_values(m->debiased_hi, nl, 1, map, n, &s->debiased_hi);
        r = r ?: slice_values(m->debiased_se, nl, 1, map, n, &s->debiased_se);
        r = r ?: slice_values(m->debiased_bias, nl, 1, map, n, &s->debiased_bias);
        r = r ?: slice_values(m->biased_rep, nl, b, map, n, &s->biased_rep);
        r = r ?: slice_values(m->debiased_rep, nl, b, map, n, &s->debiased_rep);
        r = r ?: slice_values(m->biased_jack, nl, g, map, n, &s->biased_jack);
        r = r ?: slice_values(m->debiased_jack, nl, g, map, n, &s->debiased_jack);
        r = r ?: slice_values(m->biased_sketch_se, nl, 1, map, n, &s->biased_sketch_se);
        r = r ?: slice_values(m->debiased_sketch_se, nl, 1, map, n, &s->debiased_sketch_se);
        if (r < 0) {
                kdl_cka_matrix_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

/* Run @i's part of the pass's results. */
static int slice_results(const struct kdl__cka_shared *sh, size_t i, struct kdl__cka_results *to)
{
        const struct kdl__cka_results *from = &sh->res;
        const size_t *map = sh->map + i * sh->maxl;
        size_t n = sh->v[i].l->n;
        int r;

        /* how stays NULL: a shared pass has no wide source, every pair is exact. */
        *to = (struct kdl__cka_results){.gram = from->gram,
                                        .n = from->n,
                                        .nsub = from->nsub,
                                        .nwide = from->nwide,
                                        .hot = from->hot,
                                        .rank = from->rank,
                                        .strips = from->strips};
        r = slice_matrix(from->lin, map, n, &to->lin);
        r = r ?: slice_matrix(from->robust, map, n, &to->robust);
        r = r ?: slice_matrix(from->rbf, map, n, &to->rbf);
        r = r ?: slice_matrix(from->mb, map, n, &to->mb);
        if (!r && from->sim && sh->v[i].co.measures & ~(1u << KDL_RUN_CKA_MEASURE_CKA))
                r = kdl__cka_sim_slice(from->sim, map, n, &to->sim);
        if (r < 0)
                kdl__cka_results_release(to);
        return r;
}

/* The end of the pass: each run's rows from its part of the results; the pass's state
 * goes. */
static int shared_end(kdl__job *j, kdl_stream *s, unsigned pass)
{
        struct kdl__cka_shared *sh = (struct kdl__cka_shared *) j->ctx; /* its first member */
        int err;

        (void) s;
        err = kdl__cka_pass_end(&sh->c, pass);
        if (err > 0)
                return 1; /* another pass (none without wide sources) */
        kdl__cka_pass_release(&sh->c);
        for (size_t i = 0; i < sh->n && !err; i++) {
                struct kdl__cka_results part;

                err = slice_results(sh, i, &part);
                err = err ?: kdl__cka_job_take(sh->runs[i], &part);
                kdl__cka_results_release(&part);
        }
        kdl__cka_results_release(&sh->res);
        return err;
}

int kdl__cka_shared_new(struct kdl__cka_run *const *runs, size_t n, size_t k,
                        const struct kdl_ckpair *cps, struct kdl__cka_shared **ret,
                        kdl__job *ret_job)
{
        struct kdl__cka_shared *sh = kdl_new(struct kdl__cka_shared, 1);
        const struct kdl__cka_job_view *v0;
        kdl__need nd = {.analysis = "cka"};
        int err;

        assert(runs && cps && ret && ret_job);
        *ret = NULL;
        if (!sh)
                return -ENOMEM;
        err = shared_setup(sh, runs, n, k, cps);
        /* Before the state is allocated: what the pass needs, on a stream of its own. */
        if (err > 0) {
                err = shared_need(sh, 0, &nd);
                err = err ?: kdl__need_check(&nd, sh->co.max_bytes, KDL_CKA_LEVERS);
                err = err ?: 1;
        }
        kdl__need_release(&nd);
        if (err > 0) {
                v0 = &sh->v[0];
                err = kdl__cka_pass_init(&sh->c, v0->fa, v0->fb, v0->n, &sh->l, v0->nclasses,
                                         &sh->co, v0->sub, v0->nsub, &sh->res, NULL);
                err = err < 0 ? err : 1;
        }
        if (err <= 0) {
                kdl__cka_shared_free(sh);
                return err;
        }
        *ret = sh;
        *ret_job = (kdl__job){.ctx = &sh->c,
                              .attach = kdl__cka_pass_job_attach,
                              .block = kdl__cka_pass_job_block,
                              .end = shared_end,
                              .combine = kdl__cka_pass_job_combine};
        return 1;
}
