/* SPDX-License-Identifier: MIT */
/* The feature-space CKA state as bytes, for the processes of an MPI run (metrics/cka.h). */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/cka-internal.h"
#include "metrics/pack.h"
#include "metrics/base/banned.h"

/*
 * Every field is a double (the flag `shifted` too), so that one copy of the
 * bytes into an array of doubles makes each field an aligned array to point
 * at: shifted, shift[dt], then for each statistics set (the sums, the
 * replicates, the jackknife groups) n, m[dt], the needed blocks of G, u[dt*l],
 * p[l*l], sa[l].
 */

static size_t block_len(const kdl_cka_state *s, size_t b)
{
        return s->width[s->bj[b]] * s->width[s->bk[b]];
}

/* Doubles of one statistics set. */
static size_t stats_len(const kdl_cka_state *s)
{
        size_t n = 1 + s->dt + s->dt * s->l + s->l * s->l + s->l;

        for (size_t b = 0; b < s->nblk; b++)
                n += block_len(s, b);
        return n;
}

int kdl_cka_state_pack(const kdl_cka_state *s, void **buf, size_t *len)
{
        struct kdl__packer p = {0};
        double shifted = s->shifted ? 1.0 : 0.0;

        assert(s && buf && len);
        kdl__pack(&p, &shifted, sizeof(shifted));
        kdl__pack(&p, s->shift, s->dt * sizeof(double));
        for (size_t t = 0; t < s->nstats; t++) {
                const struct kdl__cka_stats *st = &s->st[t];

                kdl__pack(&p, &st->n, sizeof(st->n));
                kdl__pack(&p, st->m, s->dt * sizeof(double));
                for (size_t b = 0; b < s->nblk; b++)
                        kdl__pack(&p, st->g[b], block_len(s, b) * sizeof(double));
                kdl__pack(&p, st->u, s->dt * s->l * sizeof(double));
                kdl__pack(&p, st->p, s->l * s->l * sizeof(double));
                kdl__pack(&p, st->sa, s->l * sizeof(double));
        }
        return kdl__pack_done(&p, buf, len);
}

/* A packed state seen as one: @s's shapes and options, the statistics in @d. */
struct view {
        kdl_cka_state from;
        double *d;                 /* the aligned copy of the bytes */
        struct kdl__cka_stats *st; /* [nstats] */
        double **g;                /* [nstats * nblk] */
};

static void view_release(struct view *v)
{
        free(v->g);
        free(v->st);
        free(v->d);
}

/* @v: the packed @buf as a state shaped as @s (the shapes, pairs and options
 * shared with it).  Release @v whatever this returns. */
static int view(const kdl_cka_state *s, const void *buf, size_t len, struct view *v)
{
        size_t nd = 1 + s->dt + s->nstats * stats_len(s), ng = s->nstats * s->nblk;
        const double *x;

        *v = (struct view){.from = *s};
        if (len != nd * sizeof(double))
                return kdl_error(-KDL_ESCHEMA, "CKA: a packed state of the wrong size");
        v->d = kdl_new(double, nd);
        v->st = kdl_new(struct kdl__cka_stats, s->nstats);
        v->g = kdl_new(double *, ng ? ng : 1);
        if (!v->d || !v->st || !v->g)
                return -ENOMEM;
        memcpy(v->d, buf, len);
        x = v->d;
        v->from.shifted = *x++ > 0.0;
        v->from.shift = (double *) x;
        x += s->dt;
        for (size_t t = 0; t < s->nstats; t++) {
                struct kdl__cka_stats *st = &v->st[t];

                st->n = *x++;
                st->m = (double *) x;
                x += s->dt;
                st->g = v->g + t * s->nblk;
                for (size_t b = 0; b < s->nblk; b++) {
                        st->g[b] = (double *) x;
                        x += block_len(s, b);
                }
                st->u = (double *) x;
                x += s->dt * s->l;
                st->p = (double *) x;
                x += s->l * s->l;
                st->sa = (double *) x;
                x += s->l;
        }
        v->from.st = v->st;
        return 0;
}

/* Empty @s: a merge into an empty state takes the other's shift, so it
 * copies the sums exactly. */
static void clear(kdl_cka_state *s)
{
        s->shifted = false;
        for (size_t t = 0; t < s->nstats; t++) {
                struct kdl__cka_stats *st = &s->st[t];

                st->n = 0.0;
                memset(st->m, 0, s->dt * sizeof(double));
                for (size_t b = 0; b < s->nblk; b++)
                        memset(st->g[b], 0, block_len(s, b) * sizeof(double));
                memset(st->u, 0, s->dt * s->l * sizeof(double));
                memset(st->p, 0, s->l * s->l * sizeof(double));
                memset(st->sa, 0, s->l * sizeof(double));
        }
}

/* The packed samples merged into @s, or with @load into @s emptied first. */
static int unpack(kdl_cka_state *s, const void *buf, size_t len, bool load)
{
        struct view v;
        int err;

        assert(s && buf);
        err = view(s, buf, len, &v);
        if (!err && load)
                clear(s);
        err = err ?: kdl_cka_merge(s, &v.from);
        view_release(&v);
        return err;
}

int kdl_cka_state_merge_packed(kdl_cka_state *s, const void *buf, size_t len)
{
        return unpack(s, buf, len, false);
}

int kdl_cka_state_load_packed(kdl_cka_state *s, const void *buf, size_t len)
{
        return unpack(s, buf, len, true);
}
