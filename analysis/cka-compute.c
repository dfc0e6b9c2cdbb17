/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/budget.h"
#include "metrics/sample.h"
#include "analysis/cka-internal.h"
#include "analysis/dist.h"
#include "metrics/base/banned.h"

/* The kdl_sample_hash() stream that orders the minibatches; the cka command
 * draws its subsample from stream 1. */
#define STREAM_BATCHES 3

void kdl__cka_results_release(struct kdl__cka_results *r)
{
        kdl__cka_sim_free(r->sim);
        kdl_cka_matrix_free(r->mb);
        kdl_cka_matrix_free(r->rbf);
        kdl_cka_matrix_free(r->robust);
        kdl_cka_matrix_free(r->lin);
        free(r->how);
        *r = (struct kdl__cka_results){0};
}

/* The rows of @from whose ids are in the sorted @want, as a new gather. */
static int gather_subset(const struct kdl__gather *from, const struct kdl__srcs *l,
                         const size_t *want, size_t nwant, struct kdl__gather *to)
{
        int r = kdl__gather_init(to, l, want, nwant);

        for (size_t i = 0, w = 0; r >= 0 && i < from->n; i++) {
                while (w < nwant && want[w] < from->ids[i])
                        w++;
                if (w == nwant || want[w] != from->ids[i])
                        continue;
                for (size_t k = 0; k < l->n; k++)
                        memcpy(to->data[k] + to->n * l->v[k].width,
                               from->data[k] + i * l->v[k].width, l->v[k].width * sizeof(double));
                to->ids[to->n] = from->ids[i];
                to->labels[to->n] = from->labels[i];
                to->n++;
        }
        return r;
}

struct keyed {
        uint64_t key;
        size_t row;
};

static int cmp_keyed(const void *a, const void *b)
{
        const struct keyed *x = a, *y = b;

        return x->key < y->key ? -1 : x->key > y->key;
}

/* Minibatch CKA over the subsample in a seeded order, batches of m; the
 * remainder (fewer than m rows) is left out. */
static int minibatch(const struct kdl__gather *g, const struct kdl__srcs *l, size_t m,
                     uint64_t seed, kdl_cka_matrix **ret)
{
        size_t *widths = kdl_new(size_t, l->n), nb = g->n / m;
        struct keyed *order = kdl_new(struct keyed, g->n ? g->n : 1);
        double **buf = kdl_new(double *, l->n);
        kdl_tensor *t = kdl_new(kdl_tensor, l->n);
        kdl_cka_mb_state *s = NULL;
        int r = 0;

        if (!widths || !order || !buf || !t) {
                r = -ENOMEM;
                goto out;
        }
        if (nb == 0) {
                r = kdl_error(-KDL_EUSAGE,
                              "minibatch CKA: the subsample has %zu samples, fewer than one "
                              "batch of %zu (see --subsample and --batch)",
                              g->n, m);
                goto out;
        }
        for (size_t k = 0; k < l->n; k++) {
                widths[k] = l->v[k].width;
                buf[k] = kdl__malloc(m, widths[k] * sizeof(double));
                if (!buf[k]) {
                        r = -ENOMEM;
                        goto out;
                }
                t[k] = kdl_tensor_wrap(buf[k], 2, (size_t[]){m, widths[k]});
        }
        for (size_t i = 0; i < g->n; i++)
                order[i] = (struct keyed){kdl_sample_hash(seed, g->ids[i], STREAM_BATCHES), i};
        qsort(order, g->n, sizeof(*order), cmp_keyed);
        r = kdl_cka_mb_state_new(l->n, widths, m, &s);
        for (size_t b = 0; r >= 0 && b < nb; b++) {
                for (size_t k = 0; k < l->n; k++)
                        for (size_t i = 0; i < m; i++)
                                memcpy(buf[k] + i * widths[k],
                                       g->data[k] + order[b * m + i].row * widths[k],
                                       widths[k] * sizeof(double));
                r = kdl_cka_mb_accumulate(s, t);
        }
        if (r >= 0)
                r = kdl_cka_mb_finalize(s, ret);
out:
        kdl_cka_mb_state_free(s);
        for (size_t k = 0; buf && k < l->n; k++)
                free(buf[k]);
        free(t);
        free(buf);
        free(order);
        free(widths);
        return r;
}

void kdl__cka_pass_release(struct kdl__cka_pass *c)
{
        kdl__feed_release(&c->feed);
        kdl_cka_state_free(c->state);
        kdl_cka_strips_free(c->strips);
        kdl__cka_wide_sketches_free(c->sketch, c->l ? c->l->n : 0);
        kdl__cka_wide_release(&c->wide);
        kdl__gather_release(&c->g, c->l ? c->l->n : 0);
        free(c->all);
        *c = (struct kdl__cka_pass){0};
}

int kdl__cka_pass_layout(const struct kdl__srcs *l, size_t n, const struct kdl__cka_compute_opts *o,
                         struct kdl__cka_wide *w, bool *ret_gram)
{
        size_t maxw = 0;
        int err;

        for (size_t k = 0; k < l->n; k++)
                maxw = l->v[k].width > maxw ? l->v[k].width : maxw;
        err = kdl__cka_wide_init(w, l, n, o->gram, o);
        *ret_gram = o->gram || (!w->nwide && !w->hot && maxw > n);
        if (!err && *ret_gram && !o->gram) {
                kdl__cka_wide_release(w);
                err = kdl__cka_wide_init(w, l, n, true, o);
        }
        return err;
}

/* Gram space: every sample is gathered. */
static int gram_init(struct kdl__cka_pass *c, size_t n)
{
        c->all = kdl_new(size_t, n ? n : 1);
        if (!c->all)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                c->all[i] = i;
        return kdl__gather_init(&c->g, c->l, c->all, n);
}

/* ---- what a pass needs ------------------------------------------------------------------ */

/* The options of the feature-space state kdl__cka_pass_init() makes from @o. */
static kdl_cka_opts state_opts(const struct kdl__cka_compute_opts *o, const struct kdl__cka_wide *w)
{
        kdl_cka_opts co;

        kdl_cka_opts_init(&co);
        co.bootstrap = o->bootstrap;
        co.interval = o->interval;
        co.seed = o->seed;
        co.pairs = o->pairs;
        co.precision = o->precision;
        co.kinds = w->kinds;
        co.external = w->ext;
        return co;
}

/* The largest of what runs in memory on @m gathered rows of @l after the pass, one after the
 * other: robust linear CKA (L m² doubles), RBF (2 L m² + m²/2) and minibatch ((L + 1) b² + b
 * max D, the batch's copy of every source and the order), at @sub (the subsample). */
static int after_pass(const struct kdl__srcs *l, size_t m, const struct kdl__cka_compute_opts *o,
                      kdl__need *nd)
{
        size_t mm = kdl_sat_mul(m, m), lmm = kdl_sat_mul(l->n, mm), big = lmm, b = o->batch;
        size_t maxw = 0, mb = 0;
        unsigned lever = KDL_LEVER_SUBSAMPLE;

        for (size_t k = 0; k < l->n; k++)
                maxw = l->v[k].width > maxw ? l->v[k].width : maxw;
        if (o->rbf)
                big = kdl_sat_add(kdl_sat_mul(2, lmm), mm / 2);
        if (b)
                mb = kdl_sat_add(kdl_sat_mul(l->n + 1, kdl_sat_mul(b, b)), kdl_sat_mul(b, maxw));
        if (mb > big) {
                big = mb;
                lever = KDL_LEVER_BATCH;
        }
        big = kdl_sat_add(kdl_sat_mul(big, sizeof(double)), b ? kdl__gather_bytes(l, b) : 0);
        return kdl__need_add(nd, big, lever,
                             "the in-memory CKA of the %zu-row subsample (%zu sources x %zu^2)", m,
                             l->n, m);
}

/* Whether a source of @l is a flattened rank-3/4 feature (--spatial avg narrows it). */
static bool flattened(const struct kdl__srcs *l, enum kdl_spatial rule)
{
        for (size_t k = 0; k < l->n; k++)
                if (rule == KDL_SPATIAL_FLATTEN && l->v[k].ds && l->v[k].ds->ndim >= 3)
                        return true;
        return false;
}

/* Gram space: every sample gathered, then the n x n Gram matrices of every source (twice:
 * kernels and their centred copies), then the subsample gathered from it and its estimators. */
static int gram_need(const struct kdl__srcs *l, size_t n, size_t nsub,
                     const struct kdl__cka_compute_opts *o, unsigned spatial, kdl__need *nd)
{
        size_t gram = kdl_sat_mul(kdl_sat_mul(2 * sizeof(double), l->n), kdl_sat_mul(n, n));
        kdl__need sub = {.analysis = nd->analysis}, g = {.analysis = nd->analysis};
        int err;

        err = kdl__need_add(nd, kdl_sat_add(kdl__gather_bytes(l, n), n * sizeof(size_t)), spatial,
                            "every sample of %zu sources (Gram space: a source is wider than the "
                            "%zu samples)",
                            l->n, n);
        err = err
                      ?: kdl__need_add(&g, gram, 0, "the %zu x %zu Gram matrices of %zu sources", n,
                                       n, l->n);
        err = err
                      ?: kdl__need_add(&sub, kdl__gather_bytes(l, nsub), KDL_LEVER_SUBSAMPLE,
                                       "the subsample of %zu rows of every source", nsub);
        err = err ?: after_pass(l, nsub, o, &sub);
        if (!err)
                kdl__need_max(&g, &sub);
        err = err ?: kdl__need_append(nd, &g);
        kdl__need_release(&g);
        kdl__need_release(&sub);
        return err;
}

/* The parts of a feature-space pass with the layout @w: the state, the sketches and column
 * strips, the subsample and what runs on it. */
static int feature_need(const struct kdl__srcs *l, size_t nsub, const struct kdl__cka_wide *w,
                        const struct kdl__cka_compute_opts *o, unsigned spatial, kdl__need *nd)
{
        kdl_cka_opts co = state_opts(o, w);
        size_t totalw = 0, maxd = 0, passes;
        unsigned lever = spatial | (o->bootstrap ? KDL_LEVER_BOOTSTRAP : 0) |
                         (o->interval == KDL_CKA_INTERVAL_BCA ? KDL_LEVER_INTERVAL : 0);
        int err;

        for (size_t k = 0; k < l->n; k++) {
                totalw = kdl_sat_add(totalw, w->sw[k]);
                if (w->kinds[k] == KDL_CKA_LAYER_DENSE && l->v[k].ds)
                        maxd = w->sw[k] > maxd ? w->sw[k] : maxd;
        }
        /* A lower --wide-max sketches the widest dense sources. */
        if (o->wide_max && maxd > o->wide_rank)
                lever |= KDL_LEVER_WIDE_MAX;
        err = kdl__need_add(nd, kdl_cka_state_bytes(l->n, w->sw, &co), lever,
                            "the feature-space state of %zu sources of total width %zu", l->n,
                            totalw);
        err = err ?: kdl__cka_wide_need(w, l, o, nd, &passes);
        err = err
                      ?: kdl__need_add(nd, kdl__gather_bytes(l, nsub), KDL_LEVER_SUBSAMPLE,
                                       "the subsample of %zu rows of every source", nsub);
        return err ?: after_pass(l, nsub, o, nd);
}

int kdl__cka_pass_need(const struct kdl__srcs *l, size_t n, size_t nsub, size_t rows,
                       size_t nclasses, const struct kdl__cka_compute_opts *o, kdl__need *nd)
{
        unsigned spatial = flattened(l, o->spatial) ? KDL_LEVER_SPATIAL : 0;
        struct kdl__cka_wide w;
        size_t ll;
        bool gram, sketched;
        int err;

        err = kdl__cka_pass_layout(l, n, o, &w, &gram);
        sketched = w.nwide && o->wide == KDL_RUN_CKA_WIDE_SKETCH;
        err = err
                      ?: kdl__need_add(nd, kdl__feed_bytes(l, w.kinds, w.sw, nclasses, rows),
                                       sketched ? KDL_LEVER_WIDE_RANK : 0,
                                       sketched ? "the labels and the sketched sources of "
                                                  "blocks of %zu rows"
                                       : w.hot  ? "the labels' classes of blocks of %zu rows"
                                                : "the one-hot labels of blocks of %zu rows",
                                       rows);
        if (!err && gram)
                err = gram_need(l, n, nsub, o, spatial, nd);
        else if (!err)
                err = feature_need(l, nsub, &w, o, spatial, nd);
        err = err ?: kdl__cka_sim_need(l, n, gram, w.kinds, o->measures, o->sim_pairs, nd);
        /* The replicates of the result: 2 B (+ 2 G for BCa) matrices of L x L. */
        ll = kdl_sat_mul(l->n, l->n);
        err = err
                      ?: kdl__need_add(nd,
                                       kdl_sat_mul(kdl_sat_mul(2 * sizeof(double), ll),
                                                   o->bootstrap == 0 ? 0
                                                   : o->interval == KDL_CKA_INTERVAL_BCA
                                                           ? o->bootstrap + KDL_CKA_JACKKNIFE_GROUPS
                                                           : o->bootstrap),
                                       KDL_LEVER_BOOTSTRAP, "the %zu bootstrap replicates",
                                       o->bootstrap);
        kdl__cka_wide_release(&w);
        return err;
}

/* Feature space: the CKA state of the sources as the layout takes them, refused above
 * o.max_bytes, the sketches, and the subsample gathered. */
static int feature_init(struct kdl__cka_pass *c)
{
        const struct kdl__cka_compute_opts *o = &c->o;
        const struct kdl__srcs *l = c->l;
        kdl_cka_opts co = state_opts(o, &c->wide);
        size_t bytes, totalw = 0;
        int r;

        for (size_t k = 0; k < l->n; k++)
                totalw = kdl_sat_add(totalw, c->wide.sw[k]);
        bytes = kdl_cka_state_bytes(l->n, c->wide.sw, &co);
        r = kdl_budget_check(bytes, o->max_bytes, o->analysis ? o->analysis : "cka",
                             o->bootstrap ? "--bootstrap or --spatial avg" : "--spatial avg",
                             "the feature-space state of %zu layers of total width %zu", l->n,
                             totalw);
        r = r ?: kdl_cka_state_new(l->n, c->wide.sw, &co, &c->state);
        if (r >= 0 && c->wide.nwide && o->wide == KDL_RUN_CKA_WIDE_SKETCH)
                r = kdl__cka_wide_sketches(&c->wide, l, o, &c->sketch);
        c->feed.kinds = c->wide.kinds;
        c->feed.sketch = c->sketch;
        c->feed.rank = o->wide_rank;
        return r < 0 ? r : kdl__gather_init(&c->g, l, c->sub, c->nsub);
}

int kdl__cka_pass_init(struct kdl__cka_pass *c, kdl_h5file *fa, kdl_h5file *fb, size_t n,
                       const struct kdl__srcs *l, size_t nclasses,
                       const struct kdl__cka_compute_opts *o, const size_t *sub, size_t nsub,
                       struct kdl__cka_results *res, struct kdl__gather *ret_sub)
{
        int r;

        *c = (struct kdl__cka_pass){
                .feed = {.l = l,
                         .fa = fa,
                         .fb = fb,
                         .rule = o->spatial,
                         .nclasses = nclasses,
                         .labels = o->labels},
                .l = l,
                .o = *o,
                .sub = sub,
                .nsub = nsub,
                .res = res,
                .ret_sub = ret_sub,
        };
        res->n = n;
        res->maxw = 0;
        for (size_t k = 0; k < l->n; k++)
                res->maxw = l->v[k].width > res->maxw ? l->v[k].width : res->maxw;
        r = kdl__cka_pass_layout(l, n, o, &c->wide, &res->gram);
        if (r >= 0) {
                res->nwide = c->wide.nwide;
                res->hot = c->wide.hot;
                res->rank = o->wide == KDL_RUN_CKA_WIDE_SKETCH ? o->wide_rank : 0;
                free(res->how);
                res->how = NULL;
                r = kdl__cka_wide_how(&c->wide, l->n, res->gram, &res->how);
        }
        if (r >= 0)
                r = res->gram ? gram_init(c, n) : feature_init(c);
        c->feed.state = c->state;
        c->feed.g = &c->g;
        return r < 0 ? r : 0;
}

int kdl__cka_pass_block(struct kdl__cka_pass *c, kdl_stream *s, unsigned pass)
{
        const kdl_tensor *blocks;
        int r;

        if (pass == 0)
                return kdl__feed_block(&c->feed, s);
        if (kdl_stream_rows(s) == 0)
                return 0;
        r = kdl__feed_blocks(&c->feed, s, &blocks);
        return r < 0 ? r : kdl_cka_strips_accumulate(c->strips, pass - 1, blocks);
}

int kdl__cka_pass_end(struct kdl__cka_pass *c, unsigned pass)
{
        int r;

        if (pass == 0 && c->wide.ext) {
                r = kdl__cka_wide_strips(&c->wide, c->l, c->state, &c->o, &c->strips);
                if (r < 0)
                        return r;
                c->res->strips = kdl_cka_strips_passes(c->strips);
                return 1;
        }
        if (pass > 0)
                kdl_cka_strips_pass_end(c->strips, pass - 1);
        if (c->strips && pass < kdl_cka_strips_passes(c->strips))
                return 1;
        r = kdl__cka_pass_finish(c);
        return r < 0 ? r : 0;
}

/* The main statistics' values, with the strips' terms of the external pairs. */
static int finalize(struct kdl__cka_pass *c)
{
        size_t l = c->l->n;
        double *f, *t, *sd;
        int r;

        if (!c->strips)
                return kdl_cka_finalize(c->state, &c->res->lin);
        f = kdl_new(double, l *l);
        t = kdl_new(double, l *l);
        sd = kdl_new(double, l);
        r = f && t && sd ? 0 : -ENOMEM;
        if (!r) {
                kdl_cka_strips_terms(c->strips, f, t, sd);
                r = kdl_cka_finalize_external(c->state, f, t, sd, &c->res->lin);
        }
        free(sd);
        free(t);
        free(f);
        return r;
}

int kdl__cka_pass_finish(struct kdl__cka_pass *c)
{
        const struct kdl__srcs *l = c->l;
        struct kdl__cka_results *res = c->res;
        struct kdl__gather gs = {0};
        kdl_tensor *t = kdl_new(kdl_tensor, l->n);
        int r;

        if (!t)
                return -ENOMEM;
        if (res->gram) {
                kdl_cka_opts co;

                /* The feature-space state's bootstrap: the same Poisson
                 * weights of the same sample ids, weighted HSIC. */
                kdl_cka_opts_init(&co);
                co.bootstrap = c->o.bootstrap;
                co.interval = c->o.interval;
                co.seed = c->o.seed;
                for (size_t k = 0; k < l->n; k++)
                        t[k] = kdl__gather_tensor(&c->g, l, k);
                r = kdl_cka_gram_linear(t, l->n, c->g.ids, &co, &res->lin);
                if (r >= 0 && c->o.measures & ~(1u << KDL_RUN_CKA_MEASURE_CKA))
                        r = kdl__cka_sim_compute(c, t, &res->sim);
                if (r >= 0)
                        r = gather_subset(&c->g, l, c->sub, c->nsub, &gs);
        } else {
                r = finalize(c);
                if (r >= 0 && c->o.measures & ~(1u << KDL_RUN_CKA_MEASURE_CKA))
                        r = kdl__cka_sim_compute(c, NULL, &res->sim);
                gs = c->g;
                c->g = (struct kdl__gather){0};
        }
        if (r < 0)
                goto out;
        res->nsub = gs.n;
        for (size_t k = 0; k < l->n; k++)
                t[k] = kdl__gather_tensor(&gs, l, k);
        if (gs.n >= 2)
                r = kdl_cka_robust(t, l->n, c->o.robust, &res->robust);
        if (r >= 0 && c->o.rbf)
                r = kdl_cka_gram(t, l->n, KDL_CKA_RBF, c->o.theta, &res->rbf);
        if (r >= 0 && c->o.batch)
                r = minibatch(&gs, l, c->o.batch, c->o.seed, &res->mb);
        if (r >= 0 && c->ret_sub) {
                *c->ret_sub = gs;
                gs = (struct kdl__gather){0};
        }
out:
        kdl__gather_release(&gs, l->n);
        free(t);
        return r < 0 ? r : 0;
}

static int state_pack(const void *s, void **buf, size_t *len)
{
        return kdl_cka_state_pack(s, buf, len);
}

static int state_merge(void *s, const void *buf, size_t len)
{
        return kdl_cka_state_merge_packed(s, buf, len);
}

static int state_load(void *s, const void *buf, size_t len)
{
        return kdl_cka_state_load_packed(s, buf, len);
}

int kdl__cka_pass_combine(struct kdl__cka_pass *c)
{
        static const struct kdl__dist_ops ops = {state_pack, state_merge, state_load};
        int err;

        /* Every rank has the same sources, so every rank stops here with this line. */
        if (c->wide.ext)
                return kdl_error(
                        -KDL_EUSAGE,
                        "--wide exact: the column strips of wide sources do not run on "
                        "more than one MPI process yet (use --wide sketch, or one process)");
        err = c->state ? kdl__dist_combine(c->state, &ops) : 0;

        return err ?: kdl__dist_gather(&c->g, c->l);
}

int kdl__cka_pass_job_combine(kdl__job *j, kdl_stream *s, unsigned pass)
{
        (void) s;
        (void) pass;
        return kdl__cka_pass_combine(j->ctx);
}

int kdl__cka_pass_job_attach(kdl__job *j, kdl_stream *s)
{
        struct kdl__cka_pass *c = j->ctx;

        return kdl__feed_attach(&c->feed, j, s);
}

int kdl__cka_pass_job_block(kdl__job *j, kdl_stream *s, unsigned pass)
{
        return kdl__cka_pass_block(j->ctx, s, pass);
}

static int compute_end(kdl__job *j, kdl_stream *s, unsigned pass)
{
        (void) s;
        return kdl__cka_pass_end(j->ctx, pass);
}

int kdl__cka_compute(kdl_inputs *in, const kdl_pair *pair, const struct kdl__srcs *l,
                     size_t nclasses, const struct kdl__cka_compute_opts *o, const size_t *sub,
                     size_t nsub, struct kdl__cka_results *res, struct kdl__gather *ret_sub)
{
        kdl_h5file *fa = in->teacher, *fb = in->nstudents ? in->students[0] : NULL;
        size_t n = pair ? pair->n : kdl_h5_dump(fa)->n;
        struct kdl_stream_opts so = {.skip_nonfinite = o->skip_nonfinite};
        struct kdl__cka_pass c;
        kdl__job job = {.ctx = &c,
                        .attach = kdl__cka_pass_job_attach,
                        .block = kdl__cka_pass_job_block,
                        .end = compute_end,
                        .combine = kdl__cka_pass_job_combine};
        kdl_stream *s = NULL;
        int r;

        r = kdl__cka_pass_init(&c, fa, fb, n, l, nclasses, o, sub, nsub, res, ret_sub);
        r = r ?: kdl_stream_new(n, pair, &so, &s);
        r = r ?: kdl__jobs_run(s, &job, 1, NULL);
        kdl_stream_free(s);
        kdl__cka_pass_release(&c);
        return r;
}
