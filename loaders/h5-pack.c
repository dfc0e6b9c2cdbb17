/* SPDX-License-Identifier: MIT */
/*
 * The catalogue between processes: kdl__h5_dump_pack() in the child that
 * walks a file, kdl__h5_dump_unpack() in the parent, which trusts nothing
 * of what it reads.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

/*
 * kdl__h5_dump_pack() writes a catalogue (or an error) as a byte stream for
 * kdl__h5_dump_unpack() in the parent process: fields in a fixed order,
 * integers as 8 native bytes, strings as their size with the NUL (0 for
 * NULL) then the bytes, an optional dataset as a presence flag then its
 * fields.  A stream that ends early or lacks the end mark is a child that
 * died writing it.
 */
enum { PACK_MAGIC = 0x314c444b /* "KDL1" */, PACK_END = 0x444e45 /* "END" */ };
enum { PACK_DUMP, PACK_ERROR };

struct pack {
        char *p;
        size_t n, cap;
        bool nomem;
};

static void put(struct pack *b, const void *v, size_t n)
{
        char *grown;
        size_t cap = b->cap ? b->cap : 4096;

        if (b->nomem)
                return;
        while (cap - b->n < n)
                cap *= 2;
        if (cap != b->cap) {
                grown = kdl__realloc(b->p, cap, 1);
                if (!grown) {
                        b->nomem = true;
                        return;
                }
                b->p = grown;
                b->cap = cap;
        }
        memcpy(b->p + b->n, v, n);
        b->n += n;
}

static void put_u64(struct pack *b, uint64_t v)
{
        put(b, &v, sizeof(v));
}

static void put_str(struct pack *b, const char *s)
{
        put_u64(b, s ? strlen(s) + 1 : 0);
        if (s)
                put(b, s, strlen(s) + 1);
}

static void put_ds(struct pack *b, const kdl_dsinfo *ds)
{
        put_u64(b, ds != NULL);
        if (!ds)
                return;
        put_str(b, ds->path);
        put_u64(b, ds->ndim);
        for (size_t k = 0; k < KDL_MAX_DIMS; k++) {
                put_u64(b, ds->shape[k]);
                put_u64(b, ds->chunk[k]);
        }
        put_str(b, ds->dtype);
        put_u64(b, (uint64_t) ds->is_float | (uint64_t) ds->is_integer << 1 |
                           (uint64_t) ds->chunked << 2 | (uint64_t) ds->other_filter << 3);
        put_u64(b, (uint64_t) (int64_t) ds->gzip);
}

static void put_checkpoint(struct pack *b, const kdl_checkpoint *ck)
{
        put_str(b, ck->name);
        put_str(b, ck->group);
        put_u64(b, (uint64_t) ck->step);
        put_u64(b, ck->has_epoch);
        put_u64(b, (uint64_t) ck->epoch);
        put_ds(b, ck->logits);
        put_ds(b, ck->grad_logits);
        put_u64(b, ck->nlayers);
        for (size_t j = 0; j < ck->nlayers; j++) {
                put_str(b, ck->layers[j].name);
                put_u64(b, (uint64_t) ck->layers[j].depth);
                put_ds(b, &ck->layers[j].feature);
                put_ds(b, ck->layers[j].gradient);
        }
        put_ds(b, ck->head_weight);
        put_ds(b, ck->head_bias);
        put_str(b, ck->head_input);
        put_ds(b, ck->topk_indices);
        put_ds(b, ck->topk_values);
        put_ds(b, ck->topk_logprobs);
        put_ds(b, ck->topk_lse);
        put_u64(b, (uint64_t) ck->topk_classes);
}

int kdl__h5_dump_pack(const kdl_dump *d, int err, char **ret, size_t *ret_len)
{
        struct pack b = {0};

        put_u64(&b, PACK_MAGIC);
        put_u64(&b, d ? PACK_DUMP : PACK_ERROR);
        if (!d) {
                put_u64(&b, (uint64_t) (int64_t) err);
                put_str(&b, kdl_errmsg());
        } else {
                put_u64(&b, (uint64_t) d->format);
                put_str(&b, d->role);
                put_str(&b, d->model);
                put_u64(&b, d->n);
                put_u64(&b, d->c);
                put_ds(&b, d->labels);
                put_ds(&b, d->sample_ids);
                put_ds(&b, d->sequence_ids);
                put_ds(&b, d->positions);
                put_u64(&b, d->ncheckpoints);
                for (size_t k = 0; k < d->ncheckpoints; k++)
                        put_checkpoint(&b, &d->checkpoints[k]);
                put_u64(&b, d->nproblems);
                for (size_t k = 0; k < d->nproblems; k++)
                        put_str(&b, d->problems[k]);
        }
        put_u64(&b, PACK_END);
        if (b.nomem) {
                free(b.p);
                return -ENOMEM;
        }
        *ret = b.p;
        *ret_len = b.n;
        return 0;
}

/* Reading a stream: where we are, and whether it was cut short. */
struct unpack {
        const char *p, *end;
        const char *file; /* for out-of-memory messages */
        bool bad;
};

static uint64_t get_u64(struct unpack *u)
{
        uint64_t v = 0;

        if ((size_t) (u->end - u->p) < sizeof(v)) {
                u->bad = true;
                return 0;
        }
        memcpy(&v, u->p, sizeof(v));
        u->p += sizeof(v);
        return v;
}

/* A string into *@ret (NULL for NULL): 0, or -ENOMEM. */
static int get_str(struct unpack *u, char **ret)
{
        uint64_t n = get_u64(u);

        *ret = NULL;
        if (n == 0 || u->bad)
                return 0;
        if (n > (uint64_t) (u->end - u->p) || u->p[n - 1] != '\0') {
                u->bad = true;
                return 0;
        }
        *ret = kdl__malloc(n, 1);
        if (!*ret)
                return kdl__h5_nomem(u->file, NULL);
        memcpy(*ret, u->p, n);
        u->p += n;
        return 0;
}

/* A dataset into *@ds (already allocated): 0, or -ENOMEM. */
static int get_ds_fields(struct unpack *u, kdl_dsinfo *ds)
{
        char *dtype = NULL;
        uint64_t flags;
        int err = get_str(u, &ds->path);

        ds->ndim = get_u64(u);
        for (size_t k = 0; k < KDL_MAX_DIMS; k++) {
                ds->shape[k] = get_u64(u);
                ds->chunk[k] = get_u64(u);
        }
        if (err == 0)
                err = get_str(u, &dtype);
        ds->dtype = kdl__h5_dtype(dtype ? dtype : "other");
        free(dtype);
        flags = get_u64(u);
        ds->is_float = flags & 1;
        ds->is_integer = flags & 2;
        ds->chunked = flags & 4;
        ds->other_filter = flags & 8;
        ds->gzip = (int) (int64_t) get_u64(u);
        if (!u->bad && !ds->path)
                u->bad = true;
        return err;
}

/*
 * A count, then room for that many zeroed entries of @size bytes (each
 * takes at least a byte of the stream: a larger count is a bad stream).
 * Return: the entries, *@ret_n of them; NULL with *@ret_n 0 on a bad stream
 * or when *@err is set, to -ENOMEM by this call if memory runs out.
 */
static void *get_array(struct unpack *u, size_t size, size_t *ret_n, int *err)
{
        size_t n = get_u64(u);
        void *v;

        *ret_n = 0;
        if (*err)
                return NULL;
        if (u->bad || n > (size_t) (u->end - u->p)) {
                u->bad = true;
                return NULL;
        }
        v = kdl__calloc(n ? n : 1, size);
        if (!v) {
                *err = kdl__h5_nomem(u->file, NULL);
                return NULL;
        }
        *ret_n = n;
        return v;
}

/* An optional dataset into a new *@ret: 0, or -ENOMEM. */
static int get_ds(struct unpack *u, kdl_dsinfo **ret)
{
        if (!get_u64(u))
                return 0;
        *ret = kdl_new(kdl_dsinfo, 1);
        if (!*ret)
                return kdl__h5_nomem(u->file, NULL);
        return get_ds_fields(u, *ret);
}

static int get_checkpoint(struct unpack *u, kdl_checkpoint *ck)
{
        int err = get_str(u, &ck->name) ?: get_str(u, &ck->group);

        ck->step = (int64_t) get_u64(u);
        ck->has_epoch = get_u64(u);
        ck->epoch = (int64_t) get_u64(u);
        err = err ?: get_ds(u, &ck->logits) ?: get_ds(u, &ck->grad_logits);
        ck->layers = get_array(u, sizeof(*ck->layers), &ck->nlayers, &err);
        for (size_t j = 0; j < ck->nlayers && !err && !u->bad; j++) {
                err = get_str(u, &ck->layers[j].name);
                ck->layers[j].depth = (int64_t) get_u64(u);
                if (!err && !get_u64(u))
                        u->bad = true; /* a layer always has its feature */
                err = err ?: get_ds_fields(u, &ck->layers[j].feature);
                err = err ?: get_ds(u, &ck->layers[j].gradient);
        }
        err = err ?: get_ds(u, &ck->head_weight) ?: get_ds(u, &ck->head_bias);
        err = err ?: get_str(u, &ck->head_input);
        err = err ?: get_ds(u, &ck->topk_indices) ?: get_ds(u, &ck->topk_values);
        err = err ?: get_ds(u, &ck->topk_logprobs) ?: get_ds(u, &ck->topk_lse);
        ck->topk_classes = (int64_t) get_u64(u);
        return err;
}

static int get_dump(struct unpack *u, kdl_dump *d)
{
        int err;

        d->format = (int64_t) get_u64(u);
        err = get_str(u, &d->role) ?: get_str(u, &d->model);
        d->n = get_u64(u);
        d->c = get_u64(u);
        err = err ?: get_ds(u, &d->labels) ?: get_ds(u, &d->sample_ids);
        err = err ?: get_ds(u, &d->sequence_ids) ?: get_ds(u, &d->positions);
        d->checkpoints = get_array(u, sizeof(*d->checkpoints), &d->ncheckpoints, &err);
        for (size_t k = 0; k < d->ncheckpoints && !err && !u->bad; k++)
                err = get_checkpoint(u, &d->checkpoints[k]);
        d->problems = get_array(u, sizeof(*d->problems), &d->nproblems, &err);
        for (size_t k = 0; k < d->nproblems && !err && !u->bad; k++)
                err = get_str(u, &d->problems[k]);
        return err;
}

int kdl__h5_dump_unpack(kdl_dump *d, const char *buf, size_t len)
{
        struct unpack u = {.p = buf, .end = buf + len, .file = d->path};
        char *msg = NULL;
        int64_t code;
        int err;

        if (!buf || get_u64(&u) != PACK_MAGIC)
                return 0;
        if (get_u64(&u) == PACK_ERROR) {
                code = (int64_t) get_u64(&u);
                err = get_str(&u, &msg);
                if (err == 0 && !u.bad && get_u64(&u) == PACK_END && !u.bad && code < 0 &&
                    code > INT_MIN)
                        err = kdl_error((int) code, "%s", msg ? msg : "");
                free(msg);
                return err;
        }
        err = get_dump(&u, d);
        if (err < 0)
                return err;
        return !u.bad && get_u64(&u) == PACK_END && !u.bad && u.p == u.end;
}
