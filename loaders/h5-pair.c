/* SPDX-License-Identifier: MIT */
/* Teacher/student alignment: joining two dumps' samples on /sample_ids. */
#include <assert.h>
#include <stdint.h>
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
 * Merge the sorted (id, row) lists @tp (@nt of them) and @sp (@ns) into
 * @srow: the student row of each teacher row, SIZE_MAX where the student
 * lacks the teacher's id.  Return: the number of ids both hold.
 */
static size_t merge_ids(const int64_t *tp, size_t nt, const int64_t *sp, size_t ns, size_t *srow)
{
        size_t j = 0, shared = 0;

        for (size_t i = 0; i < nt; i++) {
                while (j < ns && sp[2 * j] < tp[2 * i])
                        j++;
                srow[tp[2 * i + 1]] = SIZE_MAX;
                if (j < ns && sp[2 * j] == tp[2 * i]) {
                        srow[tp[2 * i + 1]] = (size_t) sp[2 * j + 1];
                        shared++;
                }
        }
        return shared;
}

/* The strict join needs the same ids on both sides; the inner one, at least one shared. */
static int check_shared(const kdl_dump *dt, const kdl_dump *ds, size_t nt, size_t ns, size_t shared,
                        bool inner)
{
        if (inner && shared == 0)
                return kdl_error(-KDL_EMISMATCH,
                                 "'%s' and '%s': /sample_ids: no id in common (%zu in the teacher, "
                                 "%zu in the student)",
                                 dt->path, ds->path, nt, ns);
        if (!inner && (shared != nt || shared != ns))
                return kdl_error(-KDL_EMISMATCH,
                                 "'%s' and '%s': /sample_ids: %zu samples differ (%zu of the "
                                 "teacher's are not in the student, %zu of the student's not in "
                                 "the teacher); --join inner analyses the %zu they share",
                                 dt->path, ds->path, nt - shared + ns - shared, nt - shared,
                                 ns - shared, shared);
        return 0;
}

/* Keep the @p->n teacher rows whose id the student holds, in teacher row order:
 * p->teacher_rows, unless that is every one of the @nt rows. */
static int keep_shared(kdl_pair *p, size_t nt)
{
        size_t m = 0;

        if (p->n == nt)
                return 0;
        p->teacher_rows = kdl_new(size_t, p->n);
        if (!p->teacher_rows)
                return -ENOMEM;
        for (size_t i = 0; i < nt; i++)
                if (p->student_rows[i] != SIZE_MAX) {
                        p->teacher_rows[m] = i;
                        p->student_rows[m++] = p->student_rows[i];
                }
        return 0;
}

/* Whether the student's rows are the logical rows, all of them. */
static bool student_identity(const kdl_pair *p, size_t ns)
{
        if (p->n != ns)
                return false;
        for (size_t i = 0; i < p->n; i++)
                if (p->student_rows[i] != i)
                        return false;
        return true;
}

int kdl_h5_pair_join(kdl_h5file *t, kdl_h5file *s, bool inner, kdl_pair **ret)
{
        const kdl_dump *dt = &t->dump, *ds = &s->dump;
        int64_t *tp = NULL, *sp = NULL;
        kdl_pair *p = NULL;
        size_t nt, ns;
        int err;

        assert(t && s && ret);
        if (!has_ids(dt) || !has_ids(ds)) {
                err = pair_in_order(dt, ds, &p);
                goto done;
        }
        nt = dt->sample_ids->shape[0];
        ns = ds->sample_ids->shape[0];
        err = sorted_ids(t, &tp);
        if (err < 0)
                goto out;
        err = sorted_ids(s, &sp);
        if (err < 0)
                goto out;
        p = kdl_new(kdl_pair, 1);
        if (p) {
                p->joined = true;
                p->student_rows = kdl_new(size_t, nt ? nt : 1);
        }
        if (!p || !p->student_rows) {
                err = pair_nomem(dt, ds);
                goto out;
        }
        p->n = merge_ids(tp, nt, sp, ns, p->student_rows);
        err = check_shared(dt, ds, nt, ns, p->n, inner);
        if (err < 0)
                goto out;
        if (keep_shared(p, nt) < 0) {
                err = pair_nomem(dt, ds);
                goto out;
        }
        if (student_identity(p, ns)) { /* no row map */
                free(p->student_rows);
                p->student_rows = NULL;
        }
done:
        if (err == 0) {
                p->teacher = t;
                p->student = s;
                *ret = p;
                p = NULL;
        }
out:
        kdl_pair_free(p);
        free(tp);
        free(sp);
        return err;
}

int kdl_h5_pair(kdl_h5file *t, kdl_h5file *s, kdl_pair **ret)
{
        return kdl_h5_pair_join(t, s, false, ret);
}

void kdl_pair_free(kdl_pair *p)
{
        if (!p)
                return;
        free(p->student_rows);
        free(p->teacher_rows);
        free(p);
}
