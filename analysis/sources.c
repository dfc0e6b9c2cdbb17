/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/budget.h"
#include "analysis/sources.h"
#include "metrics/base/banned.h"

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

size_t kdl__gather_bytes(const struct kdl__srcs *l, size_t nwant)
{
        size_t row = sizeof(size_t) + sizeof(int64_t);

        for (size_t k = 0; k < l->n; k++)
                row = kdl_sat_add(row, kdl_sat_mul(l->v[k].width, sizeof(double)));
        return kdl_sat_mul(row, nwant);
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

int kdl__feed_attach(struct kdl__feed *f, kdl__job *j, kdl_stream *s)
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

void kdl__feed_cost(const struct kdl__srcs *l, kdl_h5file *fa, enum kdl_spatial rule, bool labels,
                    struct kdl_stream_cost *c)
{
        for (size_t k = 0; k < l->n; k++)
                if (l->v[k].ds)
                        kdl_stream_cost_add(c, l->v[k].ds, rule, l->v[k].model == 1);
        if (labels && kdl_h5_dump(fa)->labels)
                kdl_stream_cost_add(c, kdl_h5_dump(fa)->labels, KDL_SPATIAL_FLATTEN, false);
}

size_t kdl__feed_bytes(const struct kdl__srcs *l, const enum kdl_cka_layer *kinds, const size_t *sw,
                       size_t nclasses, size_t rows)
{
        size_t b = 0;

        for (size_t k = 0; k < l->n; k++) {
                enum kdl_cka_layer kind = kinds ? kinds[k] : KDL_CKA_LAYER_DENSE;
                size_t w = 0;

                if (!l->v[k].ds)
                        w = kind == KDL_CKA_LAYER_ONEHOT ? 1 : kdl_sat_add(nclasses, 1);
                else if (kind == KDL_CKA_LAYER_SKETCH)
                        w = sw[k];
                b = kdl_sat_add(b, kdl_sat_mul(kdl_sat_mul(rows, w), sizeof(double)));
        }
        return b;
}

/* Room for blocks of @rows rows: the one-hot block (@dense_hot) and the classes, the
 * sketched blocks. */
static int feed_reserve(struct kdl__feed *f, size_t rows, bool dense_hot)
{
        const struct kdl__srcs *l = f->l;

        if (rows <= f->cap)
                return 0;
        free(f->onehot);
        free(f->cls);
        f->cap = 0;
        f->onehot = dense_hot ? kdl__malloc(rows, f->nclasses * sizeof(double)) : NULL;
        f->cls = kdl_new(double, rows);
        if ((dense_hot && !f->onehot) || !f->cls)
                return -ENOMEM;
        if (f->sketch) {
                if (!f->proj && !(f->proj = kdl_new(double *, l->n ? l->n : 1)))
                        return -ENOMEM;
                for (size_t k = 0; k < l->n; k++) {
                        free(f->proj[k]);
                        f->proj[k] = NULL;
                        if (f->kinds[k] == KDL_CKA_LAYER_SKETCH &&
                            !(f->proj[k] = kdl__malloc(rows, f->rank * sizeof(double))))
                                return -ENOMEM;
                }
        }
        f->cap = rows;
        return 0;
}

/* The labels of the current block, checked, as classes in f->cls and, when @dense, one-hot
 * rows in f->onehot. */
static int feed_labels(struct kdl__feed *f, size_t rows, const size_t *ids, const int64_t *lab,
                       bool dense)
{
        size_t c = f->nclasses;

        if (dense)
                memset(f->onehot, 0, rows * c * sizeof(double));
        for (size_t i = 0; i < rows; i++) {
                if (lab[i] < 0 || (uint64_t) lab[i] >= c)
                        return kdl_error(-KDL_ERANGE,
                                         "/labels: label %lld of sample %zu is outside 0..%zu",
                                         (long long) lab[i], ids[i], c - 1);
                f->cls[i] = (double) lab[i];
                if (dense)
                        f->onehot[i * c + (size_t) lab[i]] = 1.0;
        }
        return 0;
}

int kdl__feed_blocks(struct kdl__feed *f, kdl_stream *s, const kdl_tensor **ret)
{
        const struct kdl__srcs *l = f->l;
        size_t rows = kdl_stream_rows(s);
        const int64_t *lab = f->labels ? kdl_stream_labels(s) : NULL;
        bool has_labels = false, dense_hot = false;
        int r;

        *ret = f->blocks;
        if (rows == 0)
                return 0;
        for (size_t k = 0; k < l->n; k++)
                if (!l->v[k].ds) {
                        has_labels = true;
                        dense_hot |= !f->kinds || f->kinds[k] != KDL_CKA_LAYER_ONEHOT;
                }
        assert(lab || !has_labels);
        r = feed_reserve(f, rows, dense_hot);
        if (r >= 0 && has_labels)
                r = feed_labels(f, rows, kdl_stream_samples(s), lab, dense_hot);
        for (size_t k = 0; r >= 0 && k < l->n; k++) {
                enum kdl_cka_layer kind = f->kinds ? f->kinds[k] : KDL_CKA_LAYER_DENSE;
                kdl_tensor x;

                if (!l->v[k].ds) {
                        f->blocks[k] = kind == KDL_CKA_LAYER_ONEHOT
                                               ? kdl_tensor_wrap(f->cls, 2, (size_t[]){rows, 1})
                                               : kdl_tensor_wrap(f->onehot, 2,
                                                                 (size_t[]){rows, f->nclasses});
                        continue;
                }
                x = kdl_stream_block(s, l->v[k].idx);
                f->blocks[k] = x;
                if (kind != KDL_CKA_LAYER_SKETCH)
                        continue;
                f->blocks[k] = kdl_tensor_wrap(f->proj[k], 2, (size_t[]){rows, f->rank});
                r = kdl_cka_sketch_apply(f->sketch[k], &x, &f->blocks[k]);
        }
        return r < 0 ? r : 0;
}

int kdl__feed_block(struct kdl__feed *f, kdl_stream *s)
{
        const struct kdl__srcs *l = f->l;
        struct kdl__gather *g = f->g;
        size_t rows = kdl_stream_rows(s);
        const size_t *ids = kdl_stream_samples(s);
        const int64_t *lab = f->labels ? kdl_stream_labels(s) : NULL;
        const kdl_tensor *blocks;
        int r;

        if (rows == 0)
                return 0;
        r = kdl__feed_blocks(f, s, &blocks);
        if (r >= 0 && f->state)
                r = kdl_cka_accumulate(f->state, blocks, ids);
        for (size_t i = 0; r >= 0 && g && i < rows; i++) {
                while (g->next < g->nwant && g->want[g->next] < ids[i])
                        g->next++;
                if (g->next == g->nwant || g->want[g->next] != ids[i])
                        continue;
                for (size_t k = 0; k < l->n; k++) {
                        double *dst = g->data[k] + g->n * l->v[k].width;
                        kdl_tensor x;

                        if (!l->v[k].ds) {
                                /* One-hot rows, whatever the state takes. */
                                memset(dst, 0, l->v[k].width * sizeof(double));
                                dst[(size_t) lab[i]] = 1.0;
                                continue;
                        }
                        x = kdl_stream_block(s, l->v[k].idx);
                        for (size_t j = 0; j < l->v[k].width; j++)
                                dst[j] = KDL_AT2(&x, i, j);
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
        return kdl__feed_attach(j->ctx, j, s);
}

static int feed_job_block(kdl__job *j, kdl_stream *s, unsigned pass)
{
        (void) pass;
        return kdl__feed_block(j->ctx, s);
}

kdl__job kdl__feed_job(struct kdl__feed *f)
{
        return (kdl__job){.ctx = f, .attach = feed_job_attach, .block = feed_job_block};
}

void kdl__feed_release(struct kdl__feed *f)
{
        if (f->proj)
                for (size_t k = 0; k < f->l->n; k++)
                        free(f->proj[k]);
        free(f->proj);
        free(f->blocks);
        free(f->onehot);
        free(f->cls);
        f->proj = NULL;
        f->blocks = NULL;
        f->onehot = NULL;
        f->cls = NULL;
        f->cap = 0;
}
