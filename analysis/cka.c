/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/sample.h"
#include "analysis/cka.h"
#include "analysis/cka-internal.h"
#include "metrics/base/banned.h"

#define DEFAULT_SUBSAMPLE 2048
#define DEFAULT_BATCH     256
#define DEFAULT_THETA     0.5
#define DEFAULT_ROBUST    0.01
#define DEFAULT_MAX_BYTES ((size_t) 8 << 30)

/* Streams of kdl_sample_*: the subsample and the minibatch order. */
#define STREAM_SUBSAMPLE 1
#define STREAM_BATCHES   3

/* ---- shared with layers.c ---------------------------------------------------------- */

int kdl__srcs_add(struct kdl__srcs *l, const char *name, bool has_depth, long long depth, int model,
                  const kdl_dsinfo *ds, size_t width)
{
        if (l->n == l->cap) {
                size_t cap = l->cap ? 2 * l->cap : 16;
                struct kdl__src *v = kdl_new(struct kdl__src, cap);

                if (!v)
                        return -ENOMEM;
                if (l->n)
                        memcpy(v, l->v, l->n * sizeof(*v));
                free(l->v);
                l->v = v;
                l->cap = cap;
        }
        l->v[l->n++] = (struct kdl__src){.name = name,
                                         .has_depth = has_depth,
                                         .depth = depth,
                                         .model = model,
                                         .ds = ds,
                                         .width = width,
                                         .idx = -1};
        return 0;
}

int kdl__srcs_add_checkpoint(struct kdl__srcs *l, const kdl_checkpoint *ck, int model,
                             enum kdl_spatial rule)
{
        int err = 0;

        for (size_t k = 0; k < ck->nlayers && !err; k++) {
                const kdl_layer *ly = &ck->layers[k];

                err = kdl__srcs_add(l, ly->name, true, (long long) ly->depth, model, &ly->feature,
                                    kdl_dsinfo_width(&ly->feature, rule));
        }
        if (!err && ck->logits)
                err = kdl__srcs_add(l, "logits", false, 0, model, ck->logits,
                                    kdl_dsinfo_width(ck->logits, rule));
        return err;
}

void kdl__srcs_release(struct kdl__srcs *l)
{
        free(l->v);
        *l = (struct kdl__srcs){0};
}

int kdl__gather_init(struct kdl__gather *g, const struct kdl__srcs *l, const size_t *want,
                     size_t nwant)
{
        *g = (struct kdl__gather){.want = want, .nwant = nwant};
        g->ids = kdl_new(size_t, nwant);
        g->labels = kdl_new(int64_t, nwant);
        g->data = kdl_new(double *, l->n);
        if (!g->ids || !g->labels || !g->data)
                return -ENOMEM;
        for (size_t k = 0; k < l->n; k++) {
                g->data[k] = kdl__malloc(nwant ? nwant : 1, l->v[k].width * sizeof(double));
                if (!g->data[k])
                        return -ENOMEM;
        }
        return 0;
}

void kdl__gather_release(struct kdl__gather *g, size_t nsrc)
{
        if (g->data)
                for (size_t k = 0; k < nsrc; k++)
                        free(g->data[k]);
        free(g->data);
        free(g->labels);
        free(g->ids);
        *g = (struct kdl__gather){0};
}

kdl_tensor kdl__gather_tensor(const struct kdl__gather *g, const struct kdl__srcs *l, size_t k)
{
        return kdl_tensor_wrap(g->data[k], 2, (size_t[]){g->n, l->v[k].width});
}

int kdl__pairs_needed(const struct kdl__srcs *l, bool two, long long logits, long long labels,
                      bool **ret)
{
        bool *m;

        *ret = NULL;
        if (!two)
                return 0;
        m = kdl_new(bool, l->n * l->n);
        if (!m)
                return -ENOMEM;
        for (size_t i = 0; i < l->n; i++)
                for (size_t j = 0; j < l->n; j++)
                        m[i * l->n + j] = i == j || l->v[i].model != l->v[j].model ||
                                          (long long) i == logits || (long long) j == logits ||
                                          (long long) i == labels || (long long) j == labels;
        *ret = m;
        return 0;
}

size_t kdl__classes(const kdl_dump *d)
{
        size_t c = d->c;

        if (!d->labels)
                return 0;
        if (d->label_max >= 0 && (size_t) d->label_max + 1 > c)
                c = (size_t) d->label_max + 1;
        return c;
}

static int feed_attach(struct kdl__feed *f, kdl__job *j, kdl_stream *s)
{
        int r = 0;

        free(f->blocks);
        f->blocks = kdl_new(kdl_tensor, f->l->n ? f->l->n : 1);
        if (!f->blocks)
                return -ENOMEM;
        for (size_t k = 0; r >= 0 && k < f->l->n; k++) {
                struct kdl__src *src = &f->l->v[k];

                if (!src->ds)
                        continue;
                assert(src->model == 0 || f->fb);
                r = kdl__job_add(j, s, src->model ? f->fb : f->fa, src->ds, f->rule,
                                 src->model == 1);
                src->idx = r;
        }
        if (r >= 0 && f->labels)
                r = kdl__job_add_labels(j, s, f->fa);
        return r < 0 ? r : 0;
}

/* The one-hot labels of the current block in f->onehot. */
static int feed_onehot(struct kdl__feed *f, size_t rows, const size_t *ids, const int64_t *lab)
{
        size_t c = f->nclasses;

        if (rows > f->cap) {
                free(f->onehot);
                f->cap = 0;
                f->onehot = kdl__malloc(rows, c * sizeof(double));
                if (!f->onehot)
                        return -ENOMEM;
                f->cap = rows;
        }
        memset(f->onehot, 0, rows * c * sizeof(double));
        for (size_t i = 0; i < rows; i++) {
                if (lab[i] < 0 || (uint64_t) lab[i] >= c)
                        return kdl_error(-KDL_ERANGE,
                                         "/labels: label %lld of sample %zu is outside 0..%zu",
                                         (long long) lab[i], ids[i], c - 1);
                f->onehot[i * c + (size_t) lab[i]] = 1.0;
        }
        return 0;
}

static int feed_block(struct kdl__feed *f, kdl_stream *s)
{
        const struct kdl__srcs *l = f->l;
        struct kdl__gather *g = f->g;
        size_t rows = kdl_stream_rows(s);
        const size_t *ids = kdl_stream_samples(s);
        const int64_t *lab = f->labels ? kdl_stream_labels(s) : NULL;
        kdl_tensor *blocks = f->blocks;
        bool need_onehot = false;
        int r = 0;

        if (rows == 0)
                return 0;
        for (size_t k = 0; k < l->n; k++)
                need_onehot |= !l->v[k].ds;
        assert(lab || !need_onehot);
        if (need_onehot && (r = feed_onehot(f, rows, ids, lab)) < 0)
                return r;
        for (size_t k = 0; k < l->n; k++)
                blocks[k] = l->v[k].ds
                                    ? kdl_stream_block(s, l->v[k].idx)
                                    : kdl_tensor_wrap(f->onehot, 2, (size_t[]){rows, f->nclasses});
        if (f->state)
                r = kdl_cka_accumulate(f->state, blocks, ids);
        for (size_t i = 0; r >= 0 && g && i < rows; i++) {
                while (g->next < g->nwant && g->want[g->next] < ids[i])
                        g->next++;
                if (g->next == g->nwant || g->want[g->next] != ids[i])
                        continue;
                for (size_t k = 0; k < l->n; k++) {
                        double *dst = g->data[k] + g->n * l->v[k].width;

                        for (size_t j = 0; j < l->v[k].width; j++)
                                dst[j] = KDL_AT2(&blocks[k], i, j);
                }
                g->ids[g->n] = ids[i];
                g->labels[g->n] = lab ? lab[i] : 0;
                g->n++;
                g->next++;
        }
        return r < 0 ? r : 0;
}

static int feed_job_attach(kdl__job *j, kdl_stream *s)
{
        return feed_attach(j->ctx, j, s);
}

static int feed_job_block(kdl__job *j, kdl_stream *s, unsigned pass)
{
        (void) pass;
        return feed_block(j->ctx, s);
}

kdl__job kdl__feed_job(struct kdl__feed *f)
{
        return (kdl__job){.ctx = f, .attach = feed_job_attach, .block = feed_job_block};
}

void kdl__feed_release(struct kdl__feed *f)
{
        free(f->blocks);
        free(f->onehot);
        f->blocks = NULL;
        f->onehot = NULL;
        f->cap = 0;
}

/* ---- kdlens cka ------------------------------------------------------------------------ */

static const char *const estimator_names[KDL_RUN_CKA_ESTIMATOR_COUNT_] = {"biased", "debiased",
                                                                          "minibatch"};

const char *kdl_run_cka_estimator_name(enum kdl_run_cka_estimator e)
{
        assert(e < KDL_RUN_CKA_ESTIMATOR_COUNT_);
        return estimator_names[e];
}

int kdl_run_cka_estimator_parse(const char *s, enum kdl_run_cka_estimator *ret)
{
        for (int e = 0; e < KDL_RUN_CKA_ESTIMATOR_COUNT_; e++)
                if (strcmp(s, estimator_names[e]) == 0) {
                        *ret = (enum kdl_run_cka_estimator) e;
                        return 0;
                }
        return kdl_error(-KDL_EUSAGE,
                         "--estimator: expected biased, debiased or minibatch, found '%s'", s);
}

int kdl_run_cka_kernel_parse(const char *s, enum kdl_cka_kernel *ret)
{
        for (int k = 0; k < KDL_CKA_KERNEL_COUNT_; k++)
                if (strcmp(s, kdl_cka_kernel_name((enum kdl_cka_kernel) k)) == 0) {
                        *ret = (enum kdl_cka_kernel) k;
                        return 0;
                }
        return kdl_error(-KDL_EUSAGE, "--kernel: expected linear or rbf, found '%s'", s);
}

void kdl_run_cka_opts_init(struct kdl_run_cka_opts *o)
{
        *o = (struct kdl_run_cka_opts){.kernel = KDL_CKA_LINEAR,
                                       .estimator = KDL_RUN_CKA_BIASED,
                                       .subsample = DEFAULT_SUBSAMPLE,
                                       .batch = DEFAULT_BATCH,
                                       .theta = DEFAULT_THETA,
                                       .robust = DEFAULT_ROBUST,
                                       .max_bytes = DEFAULT_MAX_BYTES,
                                       .precision = KDL_CKA_PRECISION_DOUBLE};
        kdl_run_common_init(&o->common);
}

/* The tables one run fills, across checkpoints. */
struct tables {
        kdl_table *matrix, *pairs, *targets;
};

void kdl__cka_results_release(struct kdl__cka_results *r)
{
        kdl_cka_matrix_free(r->mb);
        kdl_cka_matrix_free(r->rbf);
        kdl_cka_matrix_free(r->robust);
        kdl_cka_matrix_free(r->lin);
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

/* One kdl__cka_compute() as the state of a job: the pass over the sources,
 * then linear CKA (feature or Gram space) and the subsample's robust, RBF
 * and minibatch CKA. */
struct compute {
        struct kdl__feed feed; /* feeds state or g */
        const struct kdl__srcs *l;
        struct kdl__cka_compute_opts o;
        const size_t *sub; /* borrowed */
        size_t nsub;
        size_t *all;          /* Gram space: every sample, wanted by g */
        kdl_cka_state *state; /* feature space */
        struct kdl__gather g; /* Gram space: every sample; else the subsample */
        struct kdl__cka_results *res;
        struct kdl__gather *ret_sub; /* NULL, or receives the subsample */
};

static void compute_release(struct compute *c)
{
        kdl__feed_release(&c->feed);
        kdl_cka_state_free(c->state);
        kdl__gather_release(&c->g, c->l ? c->l->n : 0);
        free(c->all);
        *c = (struct compute){0};
}

/* Everything a pass over @n samples of @l needs; c->res gets n, maxw, gram. */
static int compute_init(struct compute *c, kdl_h5file *fa, kdl_h5file *fb, size_t n,
                        const struct kdl__srcs *l, size_t nclasses,
                        const struct kdl__cka_compute_opts *o, const size_t *sub, size_t nsub,
                        struct kdl__cka_results *res, struct kdl__gather *ret_sub)
{
        size_t *widths = kdl_new(size_t, l->n), totalw = 0;
        int r;

        *c = (struct compute){
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
        if (!widths)
                return -ENOMEM;
        res->n = n;
        res->maxw = 0;
        for (size_t k = 0; k < l->n; k++) {
                widths[k] = l->v[k].width;
                totalw += widths[k];
                res->maxw = widths[k] > res->maxw ? widths[k] : res->maxw;
        }
        res->gram = res->maxw > n;
        if (res->gram) {
                c->all = kdl_new(size_t, n ? n : 1);
                if (!c->all) {
                        r = -ENOMEM;
                        goto out;
                }
                for (size_t i = 0; i < n; i++)
                        c->all[i] = i;
                r = kdl__gather_init(&c->g, l, c->all, n);
        } else {
                kdl_cka_opts co = {.bootstrap = o->bootstrap,
                                   .seed = o->seed,
                                   .pairs = o->pairs,
                                   .precision = o->precision};
                size_t bytes = kdl_cka_state_bytes(l->n, widths, &co);

                if (bytes > o->max_bytes) {
                        r = kdl_error(-KDL_ERANGE,
                                      "CKA of %zu layers of total width %zu needs %.1f GiB "
                                      "(%zu bootstrap replicates), more than the %.1f GiB "
                                      "allowed: use fewer replicates or --spatial avg",
                                      l->n, totalw, (double) bytes / 1073741824.0, o->bootstrap,
                                      (double) o->max_bytes / 1073741824.0);
                        goto out;
                }
                r = kdl_cka_state_new(l->n, widths, &co, &c->state);
                if (r >= 0)
                        r = kdl__gather_init(&c->g, l, sub, nsub);
        }
        c->feed.state = c->state;
        c->feed.g = &c->g;
out:
        free(widths);
        return r < 0 ? r : 0;
}

/* After the pass: c->res from c->state or the gathered rows. */
static int compute_finish(struct compute *c)
{
        const struct kdl__srcs *l = c->l;
        struct kdl__cka_results *res = c->res;
        struct kdl__gather gs = {0};
        kdl_tensor *t = kdl_new(kdl_tensor, l->n);
        int r;

        if (!t)
                return -ENOMEM;
        if (res->gram) {
                for (size_t k = 0; k < l->n; k++)
                        t[k] = kdl__gather_tensor(&c->g, l, k);
                r = kdl_cka_gram(t, l->n, KDL_CKA_LINEAR, 0.0, &res->lin);
                if (r >= 0)
                        r = gather_subset(&c->g, l, c->sub, c->nsub, &gs);
        } else {
                r = kdl_cka_finalize(c->state, &res->lin);
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

static int compute_attach(kdl__job *j, kdl_stream *s)
{
        struct compute *c = j->ctx;

        return feed_attach(&c->feed, j, s);
}

static int compute_block(kdl__job *j, kdl_stream *s, unsigned pass)
{
        struct compute *c = j->ctx;

        (void) pass;
        return feed_block(&c->feed, s);
}

static int compute_end(kdl__job *j, kdl_stream *s, unsigned pass)
{
        (void) s;
        (void) pass;
        return compute_finish(j->ctx);
}

int kdl__cka_compute(kdl_inputs *in, const kdl_pair *pair, const struct kdl__srcs *l,
                     size_t nclasses, const struct kdl__cka_compute_opts *o, const size_t *sub,
                     size_t nsub, struct kdl__cka_results *res, struct kdl__gather *ret_sub)
{
        kdl_h5file *fa = in->teacher, *fb = in->nstudents ? in->students[0] : NULL;
        size_t n = pair ? pair->n : kdl_h5_dump(fa)->n;
        struct kdl_stream_opts so = {.skip_nonfinite = o->skip_nonfinite};
        struct compute c;
        kdl__job job = {
                .ctx = &c, .attach = compute_attach, .block = compute_block, .end = compute_end};
        kdl_stream *s = NULL;
        int r;

        r = compute_init(&c, fa, fb, n, l, nclasses, o, sub, nsub, res, ret_sub);
        r = r ?: kdl_stream_new(n, pair, &so, &s);
        r = r ?: kdl__jobs_run(s, &job, 1, NULL);
        kdl_stream_free(s);
        compute_release(&c);
        return r;
}

static double at(const kdl_cka_matrix *m, const double *v, size_t i, size_t j)
{
        return v ? v[i * m->nlayers + j] : (double) NAN;
}

static int put_depth(kdl_table *t, const char *key, const struct kdl__src *s)
{
        return s->has_depth ? kdl_table_put_int(t, key, s->depth) : 0;
}

static int emit_pair(kdl_table *t, const struct kdl__cka_results *res,
                     const struct kdl_run_cka_opts *o, const struct kdl__srcs *l, size_t a,
                     size_t b)
{
        const kdl_cka_matrix *lin = res->lin;
        int err;

        err = kdl_table_put_str(t, "layer_a", l->v[a].name);
        err = err ?: put_depth(t, "depth_a", &l->v[a]);
        err = err ?: kdl_table_put_str(t, "layer_b", l->v[b].name);
        err = err ?: put_depth(t, "depth_b", &l->v[b]);
        err = err ?: kdl_table_put_str(t, "method", res->gram ? "gram" : "feature");
        err = err ?: kdl_table_put_int(t, "n", (long long) lin->n);
        err = err ?: kdl_table_put_real(t, "cka_linear", at(lin, lin->biased, a, b));
        err = err ?: kdl_table_put_real(t, "cka_linear_debiased", at(lin, lin->debiased, a, b));
        if (!err && lin->bootstrap) {
                err = kdl_table_put_real(t, "cka_linear_lo", at(lin, lin->biased_lo, a, b));
                err = err ?: kdl_table_put_real(t, "cka_linear_hi", at(lin, lin->biased_hi, a, b));
                err = err ?: kdl_table_put_real(t, "cka_linear_se", at(lin, lin->biased_se, a, b));
                err = err
                              ?: kdl_table_put_real(t, "cka_linear_debiased_lo",
                                                    at(lin, lin->debiased_lo, a, b));
                err = err
                              ?: kdl_table_put_real(t, "cka_linear_debiased_hi",
                                                    at(lin, lin->debiased_hi, a, b));
                err = err
                              ?: kdl_table_put_real(t, "cka_linear_debiased_se",
                                                    at(lin, lin->debiased_se, a, b));
        }
        err = err ?: kdl_table_put_int(t, "subsample", (long long) res->nsub);
        if (!err && res->robust)
                err = kdl_table_put_real(t, "cka_linear_robust",
                                         at(res->robust, res->robust->biased, a, b));
        if (!err && res->rbf) {
                err = kdl_table_put_real(t, "cka_rbf", at(res->rbf, res->rbf->biased, a, b));
                err = err
                              ?: kdl_table_put_real(t, "cka_rbf_debiased",
                                                    at(res->rbf, res->rbf->debiased, a, b));
        }
        if (!err && res->mb) {
                err = kdl_table_put_real(t, "cka_minibatch", at(res->mb, res->mb->minibatch, a, b));
                err = err ?: kdl_table_put_int(t, "batches", (long long) res->mb->nbatches);
        }
        (void) o;
        return err;
}

/* The value the matrix table shows. */
static double shown(const struct kdl__cka_results *res, const struct kdl_run_cka_opts *o, size_t a,
                    size_t b)
{
        if (o->estimator == KDL_RUN_CKA_MINIBATCH)
                return at(res->mb, res->mb->minibatch, a, b);
        if (o->kernel == KDL_CKA_RBF)
                return o->estimator == KDL_RUN_CKA_DEBIASED ? at(res->rbf, res->rbf->debiased, a, b)
                                                            : at(res->rbf, res->rbf->biased, a, b);
        return o->estimator == KDL_RUN_CKA_DEBIASED ? at(res->lin, res->lin->debiased, a, b)
                                                    : at(res->lin, res->lin->biased, a, b);
}

static int emit(struct tables *tb, const struct kdl__cka_results *res,
                const struct kdl_run_cka_opts *o, const struct kdl__srcs *l,
                const struct kdl_ckpair *ck, bool two, long long logits, long long labels)
{
        int err = 0;

        for (size_t a = 0; a < l->n && !err; a++) {
                if (l->v[a].model != 0 || !l->v[a].ds)
                        continue;
                if (kdl_table_add_row(tb->matrix) < 0)
                        return -ENOMEM;
                err = kdl_table_put_str(tb->matrix, "checkpoint", ck->main->name);
                if (!err && two)
                        err = kdl_table_put_str(tb->matrix, "checkpoint_b", ck->partner->name);
                err = err ?: kdl_table_put_str(tb->matrix, "layer", l->v[a].name);
                for (size_t b = 0; b < l->n && !err; b++) {
                        if (l->v[b].model != (two ? 1 : 0) || !l->v[b].ds)
                                continue;
                        err = kdl_table_put_real(tb->matrix, l->v[b].name, shown(res, o, a, b));
                        if (err)
                                break;
                        if (kdl_table_add_row(tb->pairs) < 0)
                                return -ENOMEM;
                        err = kdl_table_put_str(tb->pairs, "checkpoint", ck->main->name);
                        if (!err && two)
                                err = kdl_table_put_str(tb->pairs, "checkpoint_b",
                                                        ck->partner->name);
                        err = err ?: emit_pair(tb->pairs, res, o, l, a, b);
                }
        }
        for (size_t a = 0; a < l->n && !err && (logits >= 0 || labels >= 0); a++) {
                const kdl_cka_matrix *lin = res->lin, *rob = res->robust;

                if (!l->v[a].ds)
                        continue;
                if (kdl_table_add_row(tb->targets) < 0)
                        return -ENOMEM;
                err = kdl_table_put_str(tb->targets, "model", l->v[a].model ? "b" : "a");
                err = err
                              ?: kdl_table_put_str(tb->targets, "checkpoint",
                                                   l->v[a].model ? ck->partner->name
                                                                 : ck->main->name);
                err = err ?: kdl_table_put_str(tb->targets, "layer", l->v[a].name);
                err = err ?: put_depth(tb->targets, "depth", &l->v[a]);
                if (!err && logits >= 0) {
                        size_t z = (size_t) logits;

                        err = kdl_table_put_real(tb->targets, "cka_logits",
                                                 at(lin, lin->biased, a, z));
                        err = err
                                      ?: kdl_table_put_real(tb->targets, "cka_logits_debiased",
                                                            at(lin, lin->debiased, a, z));
                        err = err
                                      ?: kdl_table_put_real(tb->targets, "cka_logits_robust",
                                                            rob ? at(rob, rob->biased, a, z)
                                                                : (double) NAN);
                }
                if (!err && labels >= 0) {
                        size_t y = (size_t) labels;

                        err = kdl_table_put_real(tb->targets, "cka_labels",
                                                 at(lin, lin->biased, a, y));
                        err = err
                                      ?: kdl_table_put_real(tb->targets, "cka_labels_debiased",
                                                            at(lin, lin->debiased, a, y));
                        err = err
                                      ?: kdl_table_put_real(tb->targets, "cka_labels_robust",
                                                            rob ? at(rob, rob->biased, a, y)
                                                                : (double) NAN);
                }
        }
        return err;
}

struct kdl__cka_run {
        kdl_inputs *in; /* borrowed */
        kdl_doc *doc;   /* borrowed */
        struct kdl_run_cka_opts o;
        size_t nclasses;
        struct tables tb;
        struct kdl__cka_results last; /* the last job's */

        /* The current job. */
        struct kdl_ckpair cp;
        bool two; /* A and B; else A alone */
        struct kdl__srcs l;
        long long logits, labels; /* source indices, -1 when absent */
        bool *mask;
        size_t *sub, nsub;
        struct compute c;
};

/* Drop the current job's state (the last results stay). */
static void job_release(struct kdl__cka_run *r)
{
        compute_release(&r->c);
        free(r->sub);
        free(r->mask);
        kdl__srcs_release(&r->l);
        r->sub = NULL;
        r->nsub = 0;
        r->mask = NULL;
}

void kdl__cka_abort(struct kdl__cka_run *r)
{
        if (!r)
                return;
        job_release(r);
        kdl__cka_results_release(&r->last);
        kdl_table_free(r->tb.targets);
        kdl_table_free(r->tb.pairs);
        kdl_table_free(r->tb.matrix);
        free(r);
}

int kdl__cka_begin(kdl_inputs *in, const struct kdl_run_cka_opts *opts, kdl_doc *doc,
                   struct kdl__cka_run **ret)
{
        struct kdl__cka_run *r;
        struct kdl_run_cka_opts o;
        char *title;
        int err;

        assert(in && in->teacher && opts && doc && ret);
        o = *opts;
        if (o.estimator == KDL_RUN_CKA_MINIBATCH && o.kernel != KDL_CKA_LINEAR)
                return kdl_error(-KDL_EUSAGE, "minibatch CKA uses the linear kernel: "
                                              "--estimator minibatch needs --kernel linear");
        if (o.batch < 4)
                return kdl_error(-KDL_EUSAGE, "--batch: minibatch CKA needs at least 4, found %zu",
                                 o.batch);
        if (!(o.theta > 0.0) || !(o.robust >= 0.0 && o.robust < 0.5))
                return kdl_error(-KDL_EUSAGE, "--theta must be positive and --robust in [0, 0.5)");
        r = kdl_new(struct kdl__cka_run, 1);
        if (!r)
                return -ENOMEM;
        r->in = in;
        r->doc = doc;
        r->o = o;
        r->nclasses = kdl__classes(kdl_h5_dump(in->teacher));
        title = kdl__asprintf("CKA (%s kernel, %s)", kdl_cka_kernel_name(o.kernel),
                              kdl_run_cka_estimator_name(o.estimator));
        err = title ? kdl_table_new("cka", title, &r->tb.matrix) : -ENOMEM;
        free(title);
        err = err ?: kdl_table_new("cka_pairs", "CKA of every layer pair", &r->tb.pairs);
        err = err
                      ?: kdl_table_new("cka_targets",
                                       "CKA against A's logits and the one-hot labels",
                                       &r->tb.targets);
        err = err ?: kdl_inputs_describe(in, doc);
        if (err < 0) {
                kdl__cka_abort(r);
                return err;
        }
        *ret = r;
        return 0;
}

static int cka_attach(kdl__job *j, kdl_stream *s)
{
        struct kdl__cka_run *r = j->ctx;

        return feed_attach(&r->c.feed, j, s);
}

static int cka_block(kdl__job *j, kdl_stream *s, unsigned pass)
{
        struct kdl__cka_run *r = j->ctx;

        (void) pass;
        return feed_block(&r->c.feed, s);
}

/* The end of the job's only pass: its results, its rows; its state goes. */
static int cka_end(kdl__job *j, kdl_stream *s, unsigned pass)
{
        struct kdl__cka_run *r = j->ctx;
        int err;

        (void) s;
        (void) pass;
        err = compute_finish(&r->c);
        err = err ?: emit(&r->tb, &r->last, &r->o, &r->l, &r->cp, r->two, r->logits, r->labels);
        if (err >= 0)
                job_release(r);
        return err;
}

int kdl__cka_job(struct kdl__cka_run *r, size_t k, const struct kdl_ckpair *cp, kdl__job *ret)
{
        const struct kdl_run_cka_opts *o = &r->o;
        kdl_inputs *in = r->in;
        kdl_h5file *fb;
        const kdl_pair *pair;
        size_t n;
        int err;

        assert(cp && cp->main && ret);
        job_release(r);
        kdl__cka_results_release(&r->last);
        r->two = in->nstudents > 0;
        assert(!r->two || (k < in->nstudents && cp->partner));
        fb = r->two ? in->students[k] : NULL;
        pair = r->two ? in->pairs[k] : NULL;
        n = pair ? pair->n : kdl_h5_dump(in->teacher)->n;
        r->cp = *cp;
        r->logits = -1;
        r->labels = -1;

        err = kdl__srcs_add_checkpoint(&r->l, cp->main, 0, o->common.spatial);
        if (!err && r->two)
                err = kdl__srcs_add_checkpoint(&r->l, cp->partner, 1, o->common.spatial);
        for (size_t i = 0; i < r->l.n; i++)
                if (r->l.v[i].model == 0 && strcmp(r->l.v[i].name, "logits") == 0 &&
                    !r->l.v[i].has_depth)
                        r->logits = (long long) i;
        if (!err && r->nclasses) {
                r->labels = (long long) r->l.n;
                err = kdl__srcs_add(&r->l, "labels", false, 0, 0, NULL, r->nclasses);
        }
        err = err ?: kdl__pairs_needed(&r->l, r->two, r->logits, r->labels, &r->mask);
        err = err
                      ?: kdl_sample_select(n, NULL, 0, o->subsample, o->seed, STREAM_SUBSAMPLE,
                                           &r->sub, &r->nsub);
        if (!err) {
                struct kdl__cka_compute_opts co = {
                        .spatial = o->common.spatial,
                        .skip_nonfinite = o->common.skip_nonfinite,
                        .labels = r->nclasses > 0,
                        .bootstrap = o->bootstrap,
                        .seed = o->seed,
                        .rbf = o->kernel == KDL_CKA_RBF,
                        .theta = o->theta,
                        .batch = o->estimator == KDL_RUN_CKA_MINIBATCH ? o->batch : 0,
                        .robust = o->robust,
                        .max_bytes = o->max_bytes,
                        .pairs = r->mask,
                        .precision = o->precision};

                err = compute_init(&r->c, in->teacher, fb, n, &r->l, r->nclasses, &co, r->sub,
                                   r->nsub, &r->last, NULL);
        }
        if (err < 0) {
                job_release(r);
                return err;
        }
        *ret = (kdl__job){.ctx = r, .attach = cka_attach, .block = cka_block, .end = cka_end};
        return 0;
}

static int add_notes(kdl_doc *doc, const struct kdl__cka_results *last,
                     const struct kdl_run_cka_opts *o)
{
        int err;

        err = kdl_doc_add_note(doc,
                               last->gram ? "linear CKA in Gram space over all %zu samples (a "
                                            "layer of width %zu is wider than the sample count)"
                                          : "linear CKA in feature space over all %zu samples, "
                                            "one pass (widest layer %zu)",
                               last->n, last->maxw);
        if (!err && !last->gram && o->precision == KDL_CKA_PRECISION_MIXED)
                err = kdl_doc_add_note(doc,
                                       "mixed precision: the feature-space products in float "
                                       "(at most %d rows each, scaled by powers of two), "
                                       "accumulated in double; linear and debiased CKA within "
                                       "1e-6 of double precision",
                                       KDL_CKA_MIXED_ROWS);
        err = err
                      ?: kdl_doc_add_note(doc,
                                          "robust column: linear CKA on a seeded subsample of %zu "
                                          "samples (seed %llu) after removing each layer's %g %% "
                                          "largest centred norms (union over the pair)",
                                          last->nsub, (unsigned long long) o->seed,
                                          100.0 * o->robust);
        err = err
                      ?: kdl_doc_add_note(doc, "features of rank 3 and 4 reduced by '%s'",
                                          kdl_spatial_name(o->common.spatial));
        if (!err && o->kernel == KDL_CKA_RBF)
                err = kdl_doc_add_note(doc,
                                       "RBF kernel on the same subsample, sigma^2 = %g^2 x median "
                                       "squared distance",
                                       o->theta);
        if (!err && last->mb)
                err = kdl_doc_add_note(doc,
                                       "minibatch CKA: %zu batches of %zu from the subsample in a "
                                       "seeded order (remainder left out)",
                                       last->mb->nbatches, o->batch);
        if (!err && o->bootstrap && last->gram)
                err = kdl_doc_add_note(doc, "bootstrap intervals are not available in Gram space");
        else if (!err && o->bootstrap)
                err = kdl_doc_add_note(doc,
                                       "bootstrap: %zu Poisson(1) replicates (seed %llu), "
                                       "percentile 95 %% intervals",
                                       o->bootstrap, (unsigned long long) o->seed);
        return err;
}

int kdl__cka_end(struct kdl__cka_run *r)
{
        int err;

        assert(r);
        err = add_notes(r->doc, &r->last, &r->o);
        if (!err) {
                err = kdl_doc_add_table(r->doc, r->tb.matrix);
                r->tb.matrix = NULL;
                err = err ?: kdl_doc_add_table(r->doc, r->tb.pairs);
                r->tb.pairs = NULL;
                if (!err && kdl_table_rows(r->tb.targets)) {
                        err = kdl_doc_add_table(r->doc, r->tb.targets);
                        r->tb.targets = NULL;
                }
        }
        kdl__cka_abort(r);
        return err;
}

int kdl_run_cka(kdl_inputs *in, const struct kdl_run_cka_opts *opts, kdl_doc *doc)
{
        kdl_h5file *fb = in->nstudents ? in->students[0] : NULL;
        const kdl_pair *pair = fb ? in->pairs[0] : NULL;
        size_t n = pair ? pair->n : kdl_h5_dump(in->teacher)->n, nck = 0;
        struct kdl_stream_opts so = {.skip_nonfinite = opts->common.skip_nonfinite};
        struct kdl_ckpair *cks = NULL;
        struct kdl__cka_run *r = NULL;
        int err;

        assert(in && in->teacher && opts && doc);
        err = kdl__cka_begin(in, opts, doc, &r);
        /* Two dumps compared layer by layer: B at the checkpoint of the same name
         * unless a partner checkpoint is named. */
        err = err
                      ?: kdl_select_checkpoints(in->teacher, fb, opts->common.checkpoint,
                                                opts->partner_checkpoint ? opts->partner_checkpoint
                                                                         : "same",
                                                &cks, &nck);
        for (size_t c = 0; c < nck && !err; c++) {
                kdl_stream *s = NULL;
                kdl__job job;

                err = kdl__cka_job(r, 0, &cks[c], &job);
                err = err ?: kdl_stream_new(n, pair, &so, &s);
                err = err ?: kdl__jobs_run(s, &job, 1, NULL);
                kdl_stream_free(s);
        }
        free(cks);
        if (err < 0) {
                kdl__cka_abort(r);
                return err;
        }
        return kdl__cka_end(r);
}
