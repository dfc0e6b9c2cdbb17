/* SPDX-License-Identifier: MIT */
/* The spectral state as bytes, for the processes of an MPI run (metrics/spectral.h). */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/pack.h"
#include "metrics/spectral-internal.h"
#include "metrics/base/banned.h"

/*
 * Every field is 8 bytes wide, so that one copy of the bytes into an array
 * of doubles makes each field an aligned array to point at: n (a size_t),
 * mx[dx], my[dy], then by method
 *   exact features: the upper triangle of Sxx row by row, Sxy [dx, dy], tss;
 *   exact Gram:     the shift [dx], the rows [n, dx];
 *   sketch:         Y [k, dx], the trace.
 */

/* Doubles after n, mx and my for @n samples of @s's shape and method. */
static size_t method_len(const kdl_spectral_state *s, size_t n)
{
        size_t dx = s->dx;

        switch (s->plan.method) {
        case KDL_SPECTRAL_EXACT_FEATURES:
                return dx * (dx + 1) / 2 + dx * s->dy + 1;
        case KDL_SPECTRAL_EXACT_GRAM:
                return dx + n * dx;
        default:
                return dx * s->k + 1;
        }
}

int kdl_spectral_state_pack(const kdl_spectral_state *s, void **buf, size_t *len)
{
        struct kdl__packer p = {0};
        size_t dx = s->dx;

        assert(s && buf && len);
        kdl__pack(&p, &s->n, sizeof(s->n));
        kdl__pack(&p, s->mx, dx * sizeof(double));
        kdl__pack(&p, s->my, s->dy * sizeof(double));
        switch (s->plan.method) {
        case KDL_SPECTRAL_EXACT_FEATURES:
                for (size_t i = 0; i < dx; i++)
                        kdl__pack(&p, s->sxx + i * dx + i, (dx - i) * sizeof(double));
                kdl__pack(&p, s->sxy, dx * s->dy * sizeof(double));
                kdl__pack(&p, &s->tss, sizeof(s->tss));
                break;
        case KDL_SPECTRAL_EXACT_GRAM:
                kdl__pack(&p, s->shift, dx * sizeof(double));
                kdl__pack(&p, s->rows, s->n * dx * sizeof(double));
                break;
        default:
                kdl__pack(&p, s->ys, dx * s->k * sizeof(double));
                kdl__pack(&p, &s->trace, sizeof(s->trace));
                break;
        }
        return kdl__pack_done(&p, buf, len);
}

/* A packed state seen as one: @s's shape and plan, its samples in @d. */
struct view {
        kdl_spectral_state from;
        double *d;   /* the aligned copy of the bytes */
        double *sxx; /* exact features: the full dx x dx Sxx (upper triangle) */
};

static void view_release(struct view *v)
{
        free(v->sxx);
        free(v->d);
}

/* @v: the packed @buf as a state shaped as @s (its plan, flags and sketch
 * matrix shared with it).  Release @v whatever this returns. */
static int view(const kdl_spectral_state *s, const void *buf, size_t len, struct view *v)
{
        size_t dx = s->dx, n, nd;
        const double *x;

        *v = (struct view){.from = *s};
        if (len < sizeof(n))
                return kdl_error(-KDL_ESCHEMA, "spectral: a packed state of the wrong size");
        memcpy(&n, buf, sizeof(n));
        /* The Gram's rows are n * dx of the len bytes: bounded, that cannot overflow. */
        nd = s->plan.method != KDL_SPECTRAL_EXACT_GRAM || n <= len / sizeof(double) / dx
                     ? 1 + dx + s->dy + method_len(s, n)
                     : 0;
        if (len != nd * sizeof(double))
                return kdl_error(-KDL_ESCHEMA, "spectral: a packed state of the wrong size");
        v->d = kdl_new(double, nd);
        if (!v->d)
                return -ENOMEM;
        memcpy(v->d, buf, len);
        x = v->d + 1;
        v->from.n = n;
        v->from.mx = (double *) x;
        x += dx;
        v->from.my = (double *) x;
        x += s->dy;
        switch (s->plan.method) {
        case KDL_SPECTRAL_EXACT_FEATURES:
                v->sxx = v->from.sxx = kdl__malloc(dx, dx * sizeof(double));
                if (!v->sxx)
                        return -ENOMEM;
                /* The lower triangle is not kept; zero, so that a merge adds nothing there. */
                for (size_t i = 0; i < dx; i++) {
                        memset(v->sxx + i * dx, 0, i * sizeof(double));
                        memcpy(v->sxx + i * dx + i, x, (dx - i) * sizeof(double));
                        x += dx - i;
                }
                v->from.sxy = (double *) x;
                x += dx * s->dy;
                v->from.tss = *x;
                break;
        case KDL_SPECTRAL_EXACT_GRAM:
                v->from.shift = (double *) x;
                v->from.rows = (double *) x + dx;
                v->from.cap = n;
                break;
        default:
                v->from.ys = (double *) x;
                v->from.trace = x[dx * s->k];
                break;
        }
        return 0;
}

/* Empty @s: a merge into an empty state copies the other's means, sums and
 * rows exactly. */
static void clear(kdl_spectral_state *s)
{
        s->n = 0;
        s->tss = 0.0;
        s->trace = 0.0;
        if (s->sxx)
                memset(s->sxx, 0, s->dx * s->dx * sizeof(double));
        if (s->sxy)
                memset(s->sxy, 0, s->dx * s->dy * sizeof(double));
        if (s->ys)
                memset(s->ys, 0, s->dx * s->k * sizeof(double));
}

/* The packed samples merged into @s, or with @load into @s emptied first. */
static int unpack(kdl_spectral_state *s, const void *buf, size_t len, bool load)
{
        struct view v;
        int err;

        assert(s && buf);
        err = view(s, buf, len, &v);
        if (!err && load)
                clear(s);
        err = err ?: kdl_spectral_merge(s, &v.from);
        view_release(&v);
        return err;
}

int kdl_spectral_state_merge_packed(kdl_spectral_state *s, const void *buf, size_t len)
{
        return unpack(s, buf, len, false);
}

int kdl_spectral_state_load_packed(kdl_spectral_state *s, const void *buf, size_t len)
{
        return unpack(s, buf, len, true);
}
