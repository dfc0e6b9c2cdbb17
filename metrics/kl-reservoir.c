/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/base/rng.h"
#include "metrics/kl.h"
#include "metrics/kl-internal.h"
#include "metrics/moments.h"
#include "metrics/base/banned.h"

/*
 * The Spearman reservoir of the KL metric ("bottom-k" sampling, see
 * metrics/kl.h): the samples whose key depends only on the seed and the
 * sample index are kept when their key is among the cap smallest, so the
 * reservoir of merged states is that of one sequential pass.
 */

#define NV KDL__KL_NV

void kdl__kl_reservoir_init(struct kdl__kl_reservoir *r, size_t cap, uint64_t seed, size_t width)
{
        memset(r, 0, sizeof(*r));
        r->cap = cap;
        r->seed = seed;
        r->width = width;
}

void kdl__kl_reservoir_release(struct kdl__kl_reservoir *r)
{
        free(r->key);
        free(r->idx);
        free(r->val);
        free(r->heap);
}

size_t kdl__kl_reservoir_room(size_t alloc, size_t n, size_t cap)
{
        size_t na;

        if (n > cap)
                n = cap;
        if (n <= alloc)
                return alloc;
        na = alloc ? alloc : 256;
        while (na < n)
                na = na > cap / 2 ? cap : 2 * na;
        return na < cap ? na : cap;
}

int kdl__kl_reservoir_reserve(struct kdl__kl_reservoir *r, size_t n)
{
        size_t na = kdl__kl_reservoir_room(r->alloc, n, r->cap), bytes;
        void *p;
        int err;

        if (na == r->alloc)
                return 0;
        if ((err = kdl_mul_size(na, r->width * sizeof(double), &bytes)) < 0)
                return err;
        if (!(p = realloc(r->key, na * sizeof(uint64_t))))
                goto nomem;
        r->key = p;
        if (!(p = realloc(r->idx, na * sizeof(size_t))))
                goto nomem;
        r->idx = p;
        if (!(p = realloc(r->heap, na * sizeof(size_t))))
                goto nomem;
        r->heap = p;
        if (!(p = realloc(r->val, bytes)))
                goto nomem;
        r->val = p;
        r->alloc = na;
        return 0;
nomem:
        return kdl_error(-ENOMEM, "out of memory growing the Spearman reservoir");
}

static uint64_t sample_key(uint64_t seed, size_t idx)
{
        return kdl__rng_mix64(kdl__rng_mix64((uint64_t) idx + KDL_RNG_GAMMA) ^ seed);
}

/* Order of the heap: (key, idx) lexicographic. */
static bool item_less(const struct kdl__kl_reservoir *r, size_t a, size_t b)
{
        if (r->key[a] != r->key[b])
                return r->key[a] < r->key[b];
        return r->idx[a] < r->idx[b];
}

static void heap_down(struct kdl__kl_reservoir *r, size_t i)
{
        for (;;) {
                size_t l = 2 * i + 1, rt = l + 1, big = i, t;

                if (l < r->n && item_less(r, r->heap[big], r->heap[l]))
                        big = l;
                if (rt < r->n && item_less(r, r->heap[big], r->heap[rt]))
                        big = rt;
                if (big == i)
                        return;
                t = r->heap[i];
                r->heap[i] = r->heap[big];
                r->heap[big] = t;
                i = big;
        }
}

static void heap_up(struct kdl__kl_reservoir *r, size_t i)
{
        while (i > 0) {
                size_t p = (i - 1) / 2, t;

                if (!item_less(r, r->heap[p], r->heap[i]))
                        return;
                t = r->heap[i];
                r->heap[i] = r->heap[p];
                r->heap[p] = t;
                i = p;
        }
}

/* The slot where the sample (key, idx) goes, or NULL if it is not among the
 * cap smallest keys.  Room was reserved. */
static double *reservoir_slot(struct kdl__kl_reservoir *r, uint64_t key, size_t idx)
{
        size_t slot;

        if (r->n < r->cap) {
                assert(r->n < r->alloc);
                slot = r->n++;
                r->key[slot] = key;
                r->idx[slot] = idx;
                r->heap[slot] = slot;
                heap_up(r, slot);
                return r->val + slot * r->width;
        }
        slot = r->heap[0];
        if (key > r->key[slot] || (key == r->key[slot] && idx >= r->idx[slot]))
                return NULL;
        r->key[slot] = key;
        r->idx[slot] = idx;
        heap_down(r, 0);
        return r->val + slot * r->width;
}

void kdl__kl_reservoir_add_block(struct kdl__kl_reservoir *r, const double *vals, size_t m,
                                 const kdl_kl_block *b)
{
        for (size_t row = 0; row < m; row++) {
                size_t idx = kdl__kl_sample_index(b, row);
                double *slot = reservoir_slot(r, sample_key(r->seed, idx), idx);

                if (!slot)
                        continue;
                for (size_t i = 0; i < r->width; i++)
                        slot[i] = vals[i * m + row];
        }
}

void kdl__kl_reservoir_merge(struct kdl__kl_reservoir *into, const struct kdl__kl_reservoir *from)
{
        for (size_t k = 0; k < from->n; k++) {
                double *slot = reservoir_slot(into, from->key[k], from->idx[k]);

                if (slot)
                        memcpy(slot, from->val + k * from->width, from->width * sizeof(double));
        }
}

struct slot_order {
        size_t idx, slot;
};

static int cmp_slot_order(const void *pa, const void *pb)
{
        const struct slot_order *a = pa, *b = pb;

        return (a->idx > b->idx) - (a->idx < b->idx);
}

int kdl__kl_reservoir_order(const struct kdl__kl_reservoir *r, size_t **ret)
{
        size_t n = r->n, *slots = kdl_new(size_t, n ? n : 1);
        struct slot_order *order = kdl_new(struct slot_order, n ? n : 1);

        if (!slots || !order) {
                free(order);
                free(slots);
                return -ENOMEM;
        }
        for (size_t k = 0; k < n; k++) {
                order[k].idx = r->idx[k];
                order[k].slot = k;
        }
        qsort(order, n, sizeof(*order), cmp_slot_order);
        for (size_t k = 0; k < n; k++)
                slots[k] = order[k].slot;
        free(order);
        *ret = slots;
        return 0;
}

/* Spearman correlations on the reservoir into r (items in sample order, so
 * the result does not depend on the order of accumulation and merging). */
int kdl__kl_spearman(const struct kdl__kl_reservoir *res, const struct kdl__kl_config *cfg,
                     kdl_kl_result *r)
{
        size_t n = res->n, ntv = res->width, *order = NULL;
        double *x = NULL, *rk = NULL, *ra = NULL;
        kdl_ranked *tmp = NULL;
        int err = -ENOMEM;

        x = kdl_new(double, n);
        rk = kdl_new(double, n);
        ra = kdl_new(double, n);
        tmp = kdl_new(kdl_ranked, n);
        if (!x || !rk || !ra || !tmp || kdl__kl_reservoir_order(res, &order) < 0)
                goto out;
        for (size_t it = 0; it < cfg->ntau; it++) {
                for (size_t k = 0; k < n; k++)
                        x[k] = res->val[order[k] * ntv + it * NV + KDL_KL_EXACT];
                kdl_ranks(x, n, tmp, rk);
                for (int v = 0; v < NV; v++) {
                        if (!cfg->avail[v])
                                continue;
                        for (size_t k = 0; k < n; k++)
                                x[k] = res->val[order[k] * ntv + it * NV + v];
                        kdl_ranks(x, n, tmp, ra);
                        r->tau[it].v[v].spearman = kdl_pearson(ra, rk, n);
                }
        }
        err = 0;
out:
        free(tmp);
        free(ra);
        free(rk);
        free(x);
        free(order);
        return err;
}
