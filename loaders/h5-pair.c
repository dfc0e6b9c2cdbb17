/* SPDX-License-Identifier: MIT */
/* Teacher/student alignment: joining two dumps' samples on /sample_ids. */
#include <assert.h>
#include <stdlib.h>

#include <hdf5.h>

#include "metrics/base/alloc.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

static int cmp_id(const void *a, const void *b)
{
        const int64_t *x = a, *y = b;

        return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Sorted (id, row) pairs; fails on a duplicate id. */
static int sorted_ids(kdl_h5file *f, int64_t **ret)
{
        int64_t *ids = NULL, *pairs;
        size_t n = f->dump.sample_ids->shape[0];
        int err;

        err = kdl__h5_read_int64(f, f->dump.sample_ids, &ids);
        if (err < 0)
                return err;
        pairs = kdl__malloc(n, 2 * sizeof(int64_t));
        if (!pairs) {
                free(ids);
                return kdl__h5_nomem(f->dump.path, f->dump.sample_ids->path);
        }
        for (size_t i = 0; i < n; i++) {
                pairs[2 * i] = ids[i];
                pairs[2 * i + 1] = (int64_t) i;
        }
        free(ids);
        qsort(pairs, n, 2 * sizeof(int64_t), cmp_id);
        for (size_t i = 1; i < n; i++)
                if (pairs[2 * i] == pairs[2 * (i - 1)]) {
                        err = kdl_error(-KDL_ESCHEMA,
                                        "'%s': /sample_ids: expected unique ids, "
                                        "found %lld at samples %lld and %lld",
                                        f->dump.path, (long long) pairs[2 * i],
                                        (long long) pairs[2 * (i - 1) + 1],
                                        (long long) pairs[2 * i + 1]);
                        free(pairs);
                        return err;
                }
        *ret = pairs;
        return 0;
}

static bool has_ids(const kdl_dump *d)
{
        return d->sample_ids && d->sample_ids->ndim == 1 && d->sample_ids->is_integer;
}

static int pair_nomem(const kdl_dump *dt, const kdl_dump *ds)
{
        return kdl_error(-ENOMEM, "'%s' and '%s': out of memory pairing their samples", dt->path,
                         ds->path);
}

/* Without ids on both sides: the same samples in the same order. */
static int pair_in_order(const kdl_dump *dt, const kdl_dump *ds, kdl_pair **ret)
{
        kdl_pair *p;

        if (dt->n != ds->n)
                return kdl_error(-KDL_EMISMATCH,
                                 "'%s' has %zu samples and '%s' has %zu: expected the same "
                                 "samples in the same order (or /sample_ids in both to "
                                 "join them)",
                                 dt->path, dt->n, ds->path, ds->n);
        p = kdl_new(kdl_pair, 1);
        if (!p)
                return pair_nomem(dt, ds);
        p->n = dt->n;
        *ret = p;
        return 0;
}

/*
 * Merge the sorted (id, row) lists @tp (p->n of them) and @sp (@ns) into
 * p->student_rows.  Return: 1 when every student row is its teacher row,
 * 0 otherwise; -KDL_EMISMATCH unless the ids are the same set.
 */
static int join_ids(const kdl_dump *dt, const kdl_dump *ds, const int64_t *tp, const int64_t *sp,
                    size_t ns, kdl_pair *p)
{
        size_t j = 0, matched = 0, missing_t = 0, missing_s;
        int identity = 1;

        for (size_t i = 0; i < p->n; i++) {
                while (j < ns && sp[2 * j] < tp[2 * i])
                        j++;
                if (j < ns && sp[2 * j] == tp[2 * i]) {
                        p->student_rows[tp[2 * i + 1]] = (size_t) sp[2 * j + 1];
                        if (tp[2 * i + 1] != sp[2 * j + 1])
                                identity = 0;
                        matched++;
                } else {
                        missing_t++;
                }
        }
        missing_s = ns - matched;
        if (missing_t || missing_s)
                return kdl_error(-KDL_EMISMATCH,
                                 "'%s' and '%s': /sample_ids: %zu samples differ (%zu of the "
                                 "teacher's are not in the student, %zu of the student's not in "
                                 "the teacher)",
                                 dt->path, ds->path, missing_t + missing_s, missing_t, missing_s);
        return identity;
}

int kdl_h5_pair(kdl_h5file *t, kdl_h5file *s, kdl_pair **ret)
{
        const kdl_dump *dt = &t->dump, *ds = &s->dump;
        int64_t *tp = NULL, *sp = NULL;
        kdl_pair *p = NULL;
        int err;

        assert(t && s && ret);
        if (!has_ids(dt) || !has_ids(ds))
                return pair_in_order(dt, ds, ret);

        err = sorted_ids(t, &tp);
        if (err < 0)
                goto out;
        err = sorted_ids(s, &sp);
        if (err < 0)
                goto out;
        p = kdl_new(kdl_pair, 1);
        if (p) {
                p->n = dt->sample_ids->shape[0];
                p->joined = true;
                p->student_rows = kdl_new(size_t, p->n);
        }
        if (!p || !p->student_rows) {
                err = pair_nomem(dt, ds);
                goto out;
        }
        err = join_ids(dt, ds, tp, sp, ds->sample_ids->shape[0], p);
        if (err < 0)
                goto out;
        if (err > 0) { /* the identity: no row map */
                free(p->student_rows);
                p->student_rows = NULL;
        }
        *ret = p;
        p = NULL;
        err = 0;
out:
        kdl_pair_free(p);
        free(tp);
        free(sp);
        return err;
}

void kdl_pair_free(kdl_pair *p)
{
        if (!p)
                return;
        free(p->student_rows);
        free(p);
}
