/* SPDX-License-Identifier: MIT */
/* The KL states as bytes, for the processes of an MPI run (metrics/kl.h). */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/kl-internal.h"
#include "metrics/pack.h"
#include "metrics/base/banned.h"

#define NV KDL__KL_NV

/* A copy of the next @bytes into a new allocation (*@ret), or an error. */
static int take(struct kdl__unpacker *u, size_t bytes, void **ret)
{
        return kdl__unpack_dup(u, bytes, ret, "KL");
}

static int get(struct kdl__unpacker *u, void *x, size_t bytes)
{
        return kdl__unpack_get(u, x, bytes, "KL");
}

int kdl_kl_state_pack(const kdl_kl_state *s, void **buf, size_t *len)
{
        const struct kdl__kl_stats *st = &s->st;
        const struct kdl__kl_reservoir *r = &s->res;
        size_t nv = s->cfg.ntau * NV;
        struct kdl__packer p = {0};

        assert(s && buf && len);
        kdl__pack(&p, &st->n, sizeof(st->n));
        kdl__pack(&p, st->v, nv * sizeof(*st->v));
        kdl__pack(&p, st->sabs, nv * sizeof(*st->sabs));
        kdl__pack(&p, &st->esq, sizeof(st->esq));
        kdl__pack(&p, &st->vsq, sizeof(st->vsq));
        kdl__pack(&p, &st->sst_t, sizeof(st->sst_t));
        if (s->cfg.feat)
                kdl__pack(&p, st->mu_t, s->cfg.d_t * sizeof(*st->mu_t));
        kdl__kl_reservoir_pack(&p, r);
        return kdl__pack_done(&p, buf, len);
}

int kdl_kl_state_merge_packed(kdl_kl_state *s, const void *buf, size_t len)
{
        struct kdl__unpacker u = {buf, len, 0};
        size_t nv = s->cfg.ntau * NV;
        kdl_kl_state from = *s; /* the same configuration; its own sums and reservoir */
        struct kdl__kl_stats *st = &from.st;
        void *v = NULL, *sabs = NULL, *mu = NULL;
        int err;

        kdl__kl_reservoir_init(&from.res, s->res.cap, s->res.seed, s->res.width);
        err = get(&u, &st->n, sizeof(st->n));
        err = err ?: take(&u, nv * sizeof(*st->v), &v);
        err = err ?: take(&u, nv * sizeof(*st->sabs), &sabs);
        err = err ?: get(&u, &st->esq, sizeof(st->esq));
        err = err ?: get(&u, &st->vsq, sizeof(st->vsq));
        err = err ?: get(&u, &st->sst_t, sizeof(st->sst_t));
        if (!err && s->cfg.feat)
                err = take(&u, s->cfg.d_t * sizeof(*st->mu_t), &mu);
        err = err ?: kdl__kl_reservoir_unpack(&u, &from.res, "KL");
        err = err ?: kdl__unpack_end(&u, "KL");
        if (!err) {
                st->v = v;
                st->sabs = sabs;
                st->mu_t = mu;
                err = kdl_kl_merge(s, &from);
        }
        free(v);
        free(sabs);
        free(mu);
        kdl__kl_reservoir_release(&from.res);
        return err;
}

void kdl__kl_reservoir_pack(struct kdl__packer *p, const struct kdl__kl_reservoir *r)
{
        kdl__pack(p, &r->n, sizeof(r->n));
        kdl__pack(p, r->key, r->n * sizeof(*r->key));
        kdl__pack(p, r->idx, r->n * sizeof(*r->idx));
        kdl__pack(p, r->val, r->n * r->width * sizeof(*r->val));
}

int kdl__kl_reservoir_unpack(struct kdl__unpacker *u, struct kdl__kl_reservoir *r, const char *what)
{
        void *key = NULL, *idx = NULL, *val = NULL;
        size_t n = 0;
        int err;

        assert(r->n == 0 && r->alloc == 0);
        err = kdl__unpack_get(u, &n, sizeof(n), what);
        if (!err && n > r->cap)
                err = kdl_error(-KDL_ESCHEMA, "%s: a packed reservoir of %zu > %zu samples", what,
                                n, r->cap);
        err = err ?: kdl__unpack_dup(u, n * sizeof(*r->key), &key, what);
        err = err ?: kdl__unpack_dup(u, n * sizeof(*r->idx), &idx, what);
        err = err ?: kdl__unpack_dup(u, n * r->width * sizeof(*r->val), &val, what);
        if (err < 0) {
                free(val);
                free(idx);
                free(key);
                return err;
        }
        r->key = key;
        r->idx = idx;
        r->val = val;
        r->n = r->alloc = n;
        return 0;
}

int kdl_kl_proj_state_pack(const kdl_kl_proj_state *s, void **buf, size_t *len)
{
        struct kdl__packer p = {0};

        assert(s && buf && len);
        kdl__pack(&p, &s->n, sizeof(s->n));
        kdl__pack(&p, &s->sst, sizeof(s->sst));
        kdl__pack(&p, s->mu_s, s->d_s * sizeof(double));
        kdl__pack(&p, s->mu_t, s->d_t * sizeof(double));
        kdl__pack(&p, s->mss, s->d_s * s->d_s * sizeof(double));
        kdl__pack(&p, s->mst, s->d_s * s->d_t * sizeof(double));
        return kdl__pack_done(&p, buf, len);
}

int kdl_kl_proj_state_load_packed(kdl_kl_proj_state *s, const void *buf, size_t len)
{
        struct kdl__unpacker u = {buf, len, 0};
        int err;

        err = get(&u, &s->n, sizeof(s->n));
        err = err ?: get(&u, &s->sst, sizeof(s->sst));
        err = err ?: get(&u, s->mu_s, s->d_s * sizeof(double));
        err = err ?: get(&u, s->mu_t, s->d_t * sizeof(double));
        err = err ?: get(&u, s->mss, s->d_s * s->d_s * sizeof(double));
        err = err ?: get(&u, s->mst, s->d_s * s->d_t * sizeof(double));
        return err ?: kdl__unpack_end(&u, "KL projector");
}

int kdl_kl_proj_state_merge_packed(kdl_kl_proj_state *s, const void *buf, size_t len)
{
        kdl_kl_proj_state *from;
        int err = kdl_kl_proj_state_new(s->d_s, s->d_t, &from);

        err = err ?: kdl_kl_proj_state_load_packed(from, buf, len);
        err = err ?: kdl_kl_proj_merge(s, from);
        kdl_kl_proj_state_free(from);
        return err;
}
