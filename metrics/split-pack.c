/* SPDX-License-Identifier: MIT */
/* The split states as bytes, for the processes of an MPI run (metrics/split.h). */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/moments.h"
#include "metrics/pack.h"
#include "metrics/split.h"
#include "metrics/split-internal.h"
#include "metrics/base/banned.h"

#define WHAT "split"

/* The histogram slots of the first pass's distributions and of w_n. */
static size_t linear_slots(const kdl_split_opts *o)
{
        struct kdl__split_geom g = {.log = false, .nbins = o->nbins};

        return kdl__split_geom_slots(&g);
}

static size_t log_slots(void)
{
        struct kdl__split_geom g = {.log = true};

        return kdl__split_geom_slots(&g);
}

static void pack_dist(struct kdl__packer *p, const struct kdl__split_dist *d, size_t slots)
{
        kdl__pack(p, &d->m, sizeof(d->m));
        kdl__pack(p, &d->min, sizeof(d->min));
        kdl__pack(p, &d->max, sizeof(d->max));
        kdl__pack(p, d->count, slots * sizeof(*d->count));
}

/* A distribution with counts of its own (free them with kdl__split_dist_release()). */
static int unpack_dist(struct kdl__unpacker *u, struct kdl__split_dist *d, size_t slots)
{
        void *count = NULL;
        int err;

        err = kdl__unpack_get(u, &d->m, sizeof(d->m), WHAT);
        err = err ?: kdl__unpack_get(u, &d->min, sizeof(d->min), WHAT);
        err = err ?: kdl__unpack_get(u, &d->max, sizeof(d->max), WHAT);
        err = err ?: kdl__unpack_dup(u, slots * sizeof(*d->count), &count, WHAT);
        d->count = count;
        return err;
}

/* The classes and options every packed pass starts with. */
static void pack_config(struct kdl__packer *p, size_t c, const kdl_split_opts *o)
{
        kdl__pack(p, &c, sizeof(c));
        kdl__pack(p, o, sizeof(*o));
}

/* Read them into *@c, *@o; with @want_o, -KDL_EMISMATCH unless they are @want_c, *@want_o. */
static int unpack_config(struct kdl__unpacker *u, size_t *c, kdl_split_opts *o, size_t want_c,
                         const kdl_split_opts *want_o)
{
        int err;

        err = kdl__unpack_get(u, c, sizeof(*c), WHAT);
        err = err ?: kdl__unpack_get(u, o, sizeof(*o), WHAT);
        if (!err && want_o && (*c != want_c || !kdl__split_opts_equal(o, want_o)))
                return kdl_error(-KDL_EMISMATCH,
                                 "split: cannot merge states of different classes or options");
        return err ?: kdl__split_check_opts(o);
}

/* ---- The first pass ---------------------------------------------------------- */

int kdl_split_state_pack(const kdl_split_state *s, void **buf, size_t *len)
{
        size_t slots = linear_slots(&s->o);
        struct kdl__packer p = {0};

        assert(s && buf && len);
        pack_config(&p, s->c, &s->o);
        kdl__pack(&p, &s->n, sizeof(s->n));
        kdl__pack(&p, s->class_count, s->c * sizeof(*s->class_count));
        kdl__pack(&p, &s->teacher_correct, sizeof(s->teacher_correct));
        kdl__pack(&p, &s->student_correct, sizeof(s->student_correct));
        for (size_t k = 0; k < s->o.ntaus; k++) {
                const struct kdl__split_tau_acc *t = &s->t[k];

                kdl__pack(&p, &t->sum_kl, sizeof(t->sum_kl));
                kdl__pack(&p, &t->sum_tckd, sizeof(t->sum_tckd));
                kdl__pack(&p, &t->sum_nckd, sizeof(t->sum_nckd));
                kdl__pack(&p, &t->sum_coupled, sizeof(t->sum_coupled));
                kdl__pack(&p, &t->residual_max, sizeof(t->residual_max));
                kdl__pack(&p, &t->omega_clipped, sizeof(t->omega_clipped));
                kdl__pack(&p, &t->pt_hi, sizeof(t->pt_hi));
                kdl__pack(&p, &t->pt_lo, sizeof(t->pt_lo));
                for (int d = 0; d < KDL__SPLIT_NDIST; d++)
                        pack_dist(&p, &t->d[d], slots);
                if (t->msum)
                        kdl__pack(&p, t->msum, s->c * s->c * sizeof(*t->msum));
        }
        return kdl__pack_done(&p, buf, len);
}

/* Free the arrays unpack_state() gave @from (never those of the state it copied). */
static void unpacked_release(kdl_split_state *from)
{
        for (size_t k = 0; k < from->o.ntaus; k++) {
                for (int d = 0; d < KDL__SPLIT_NDIST; d++)
                        kdl__split_dist_release(&from->t[k].d[d]);
                free(from->t[k].msum);
        }
        free(from->class_count);
}

/* The sums of a packed first pass into @from, a copy of the state they
 * merge into with arrays of its own (NULL until read). */
static int unpack_state(struct kdl__unpacker *u, kdl_split_state *from)
{
        size_t slots = linear_slots(&from->o), cc = from->c * from->c;
        void *counts = NULL;
        int err;

        err = kdl__unpack_get(u, &from->n, sizeof(from->n), WHAT);
        err = err ?: kdl__unpack_dup(u, from->c * sizeof(size_t), &counts, WHAT);
        from->class_count = counts;
        err = err ?: kdl__unpack_get(u, &from->teacher_correct, sizeof(size_t), WHAT);
        err = err ?: kdl__unpack_get(u, &from->student_correct, sizeof(size_t), WHAT);
        for (size_t k = 0; k < from->o.ntaus && !err; k++) {
                struct kdl__split_tau_acc *t = &from->t[k];
                void *msum = NULL;

                err = kdl__unpack_get(u, &t->sum_kl, sizeof(double), WHAT);
                err = err ?: kdl__unpack_get(u, &t->sum_tckd, sizeof(double), WHAT);
                err = err ?: kdl__unpack_get(u, &t->sum_nckd, sizeof(double), WHAT);
                err = err ?: kdl__unpack_get(u, &t->sum_coupled, sizeof(double), WHAT);
                err = err ?: kdl__unpack_get(u, &t->residual_max, sizeof(double), WHAT);
                err = err ?: kdl__unpack_get(u, &t->omega_clipped, sizeof(size_t), WHAT);
                err = err ?: kdl__unpack_get(u, &t->pt_hi, sizeof(t->pt_hi), WHAT);
                err = err ?: kdl__unpack_get(u, &t->pt_lo, sizeof(t->pt_lo), WHAT);
                for (int d = 0; d < KDL__SPLIT_NDIST && !err; d++)
                        err = unpack_dist(u, &t->d[d], slots);
                if (!err && from->o.domain == KDL_SPLIT_DOMAIN_FULL)
                        err = kdl__unpack_dup(u, cc * sizeof(double), &msum, WHAT);
                t->msum = msum;
        }
        return err ?: kdl__unpack_end(u, WHAT);
}

int kdl_split_state_merge_packed(kdl_split_state *s, const void *buf, size_t len)
{
        struct kdl__unpacker u = {buf, len, 0};
        kdl_split_state from = *s; /* the configuration; its own arrays below */
        int err;

        assert(s && buf);
        from.class_count = NULL;
        from.work = NULL;
        for (size_t k = 0; k < KDL_SPLIT_MAX_TAUS; k++) {
                from.t[k].msum = NULL;
                for (int d = 0; d < KDL__SPLIT_NDIST; d++)
                        from.t[k].d[d].count = NULL;
        }
        err = unpack_config(&u, &from.c, &from.o, s->c, &s->o);
        err = err ?: unpack_state(&u, &from);
        err = err ?: kdl_split_merge(s, &from);
        unpacked_release(&from);
        return err;
}

/* ---- The second pass --------------------------------------------------------- */

int kdl_split_instance_state_pack(const kdl_split_instance_state *s, void **buf, size_t *len)
{
        size_t slots = log_slots();
        struct kdl__packer p = {0};

        assert(s && buf && len);
        pack_config(&p, s->c, &s->o);
        kdl__pack(&p, &s->n, sizeof(s->n));
        for (size_t k = 0; k < s->o.ntaus; k++) {
                const struct kdl__split_inst_acc *t = &s->t[k];

                kdl__pack(&p, &t->pt_mean, sizeof(t->pt_mean));
                pack_dist(&p, &t->w, slots);
                pack_dist(&p, &t->w_ok, slots);
                kdl__pack(&p, &t->wp, sizeof(t->wp));
                kdl__pack(&p, &t->wp_ok, sizeof(t->wp_ok));
                kdl__pack(&p, &t->guarded, sizeof(t->guarded));
                kdl__pack(&p, &t->nonpositive, sizeof(t->nonpositive));
                kdl__pack(&p, &t->above_one, sizeof(t->above_one));
        }
        return kdl__pack_done(&p, buf, len);
}

int kdl_split_instance_state_new_packed(const void *buf, size_t len, kdl_split_instance_state **ret)
{
        struct kdl__unpacker u = {buf, len, 0};
        size_t slots = log_slots();
        kdl_split_instance_state *s;
        int err;

        assert(buf && ret);
        s = kdl_new(kdl_split_instance_state, 1);
        if (!s)
                return -ENOMEM;
        err = unpack_config(&u, &s->c, &s->o, 0, NULL);
        /* The scratch of a state that goes on accumulating (not packed). */
        if (!err && !(s->work = kdl_new(double, s->c)))
                err = -ENOMEM;
        err = err ?: kdl__unpack_get(&u, &s->n, sizeof(s->n), WHAT);
        for (size_t k = 0; k < s->o.ntaus && !err; k++) {
                struct kdl__split_inst_acc *t = &s->t[k];

                err = kdl__unpack_get(&u, &t->pt_mean, sizeof(t->pt_mean), WHAT);
                err = err ?: unpack_dist(&u, &t->w, slots);
                err = err ?: unpack_dist(&u, &t->w_ok, slots);
                err = err ?: kdl__unpack_get(&u, &t->wp, sizeof(t->wp), WHAT);
                err = err ?: kdl__unpack_get(&u, &t->wp_ok, sizeof(t->wp_ok), WHAT);
                err = err ?: kdl__unpack_get(&u, &t->guarded, sizeof(t->guarded), WHAT);
                err = err ?: kdl__unpack_get(&u, &t->nonpositive, sizeof(t->nonpositive), WHAT);
                err = err ?: kdl__unpack_get(&u, &t->above_one, sizeof(t->above_one), WHAT);
        }
        err = err ?: kdl__unpack_end(&u, WHAT);
        if (err < 0) {
                kdl_split_instance_state_free(s);
                return err;
        }
        *ret = s;
        return 0;
}

int kdl_split_instance_state_merge_packed(kdl_split_instance_state *s, const void *buf, size_t len)
{
        kdl_split_instance_state *from = NULL;
        int err;

        assert(s && buf);
        err = kdl_split_instance_state_new_packed(buf, len, &from);
        err = err ?: kdl_split_instance_merge(s, from);
        kdl_split_instance_state_free(from);
        return err;
}

/* ---- The open block of classes ----------------------------------------------- */

/* The soft counts of the open block of @d: b (2 (C - s) - b) doubles per τ. */
static size_t open_doubles(const kdl_split_blocks *d)
{
        size_t s, b;

        if (d->q == d->nblocks)
                return 0;
        s = d->start[d->q];
        b = d->start[d->q + 1] - s;
        return b * (2 * (d->c - s) - b);
}

int kdl_split_blocks_pack(const kdl_split_blocks *d, void **buf, size_t *len)
{
        size_t m = open_doubles(d);
        struct kdl__packer p = {0};

        assert(d && buf && len);
        pack_config(&p, d->c, &d->o);
        kdl__pack(&p, &d->q, sizeof(d->q));
        kdl__pack(&p, &d->n, sizeof(d->n));
        for (size_t k = 0; k < d->o.ntaus && m; k++)
                kdl__pack(&p, d->acc[k], m * sizeof(double));
        return kdl__pack_done(&p, buf, len);
}

int kdl_split_blocks_merge_packed(kdl_split_blocks *d, const void *buf, size_t len)
{
        struct kdl__unpacker u = {buf, len, 0};
        const unsigned char *at[KDL_SPLIT_MAX_TAUS] = {NULL};
        size_t m = open_doubles(d), c, q, n;
        kdl_split_opts o;
        int err;

        assert(d && buf);
        err = unpack_config(&u, &c, &o, d->c, &d->o);
        err = err ?: kdl__unpack_get(&u, &q, sizeof(q), WHAT);
        err = err ?: kdl__unpack_get(&u, &n, sizeof(n), WHAT);
        if (!err && q != d->q)
                err = kdl_error(-KDL_EMISMATCH,
                                "split: block %zu of the domain level merged into block %zu", q,
                                d->q);
        /* Every byte checked before anything is added: @d is unchanged on error. */
        for (size_t k = 0; k < d->o.ntaus && m && !err; k++)
                if (!(at[k] = kdl__unpack(&u, m * sizeof(double))))
                        err = kdl_error(-KDL_ESCHEMA, "%s: a packed state of the wrong size", WHAT);
        err = err ?: kdl__unpack_end(&u, WHAT);
        for (size_t k = 0; k < d->o.ntaus && m && !err; k++)
                for (size_t i = 0; i < m; i++) {
                        double x;

                        memcpy(&x, at[k] + i * sizeof(x), sizeof(x));
                        d->acc[k][i] += x;
                }
        if (!err)
                d->n += n;
        return err;
}
