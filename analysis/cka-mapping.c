/* SPDX-License-Identifier: MIT */
/*
 * The "cka_mapping" table: for layer-mapping distillation, each layer of B (the
 * student) against the layers of A (the teacher), by the value of the "cka" matrix:
 * its best layer of A, and the monotone mapping that maximises the sum of CKA
 * (docs/cka.md#layer-mapping).
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>

#include "metrics/base/alloc.h"
#include "analysis/cka-internal.h"
#include "metrics/base/banned.h"

int kdl__cka_mapping_solve(const double *v, size_t na, size_t nb, size_t *ret_best, size_t *ret_map)
{
        double *f = NULL;
        size_t *from = NULL, *best = NULL, *map = NULL, end = SIZE_MAX, nn;
        int err;

        assert(v && ret_best && ret_map);
        err = kdl_mul_size(na, nb, &nn);
        if (err < 0)
                return err;
        err = -ENOMEM;
        f = kdl_new(double, nn);
        from = kdl_new(size_t, nn);
        best = kdl_new(size_t, nb);
        map = kdl_new(size_t, nb);
        if (!f || !from || !best || !map)
                goto out;
        /* f[i * na + j]: the largest sum over B's layers 0..i with i mapped to j (-inf: no
         * finite one); from[]: the layer of i - 1 that gives it, the earliest on ties. */
        for (size_t i = 0; i < nb; i++) {
                double pm = -INFINITY;
                size_t pj = SIZE_MAX;

                best[i] = SIZE_MAX;
                for (size_t j = 0; j < na; j++) {
                        double x = v[j * nb + i];

                        if (i > 0 && f[(i - 1) * na + j] > pm) {
                                pm = f[(i - 1) * na + j];
                                pj = j;
                        }
                        if (isfinite(x) && (best[i] == SIZE_MAX || x > v[best[i] * nb + i]))
                                best[i] = j;
                        f[i * na + j] = isfinite(x) ? (i ? pm + x : x) : -(double) INFINITY;
                        from[i * na + j] = pj;
                }
        }
        for (size_t j = 0; j < na && nb; j++)
                if (isfinite(f[(nb - 1) * na + j]) &&
                    (end == SIZE_MAX || f[(nb - 1) * na + j] > f[(nb - 1) * na + end]))
                        end = j;
        for (size_t i = nb; i-- > 0;) {
                map[i] = end;
                if (end != SIZE_MAX)
                        end = from[i * na + end];
        }
        for (size_t i = 0; i < nb; i++) {
                ret_best[i] = best[i];
                ret_map[i] = map[i];
        }
        err = 0;
out:
        free(map);
        free(best);
        free(from);
        free(f);
        return err;
}

int kdl__cka_mapping_new(kdl_table **ret)
{
        return kdl_table_new("cka_mapping",
                             "Layer mapping: each layer of B's best layer of A by CKA, and the "
                             "monotone mapping of largest total CKA",
                             ret);
}

int kdl__cka_mapping_add(kdl_doc *doc, kdl_table **t)
{
        kdl_table *m = *t;

        *t = NULL;
        if (!kdl_table_rows(m)) {
                kdl_table_free(m);
                return 0;
        }
        return kdl_doc_add_table(doc, m);
}

/* The layer of A under @key (and its depth under @dkey) and its value under @ckey; empty
 * layer and NaN when there is none (@j SIZE_MAX). */
static int put_a(kdl_table *t, const struct kdl__srcs *l, const size_t *ia, size_t j,
                 const double *v, size_t nb, size_t i, const char *const key[3])
{
        const struct kdl__src *s = j == SIZE_MAX ? NULL : &l->v[ia[j]];
        int err = 0;

        if (s) {
                err = kdl_table_put_str(t, key[0], s->name);
                if (!err && s->has_depth)
                        err = kdl_table_put_int(t, key[1], s->depth);
        }
        return err ?: kdl_table_put_real(t, key[2], s ? v[j * nb + i] : (double) NAN);
}

static const char *const best_keys[3] = {"best_layer_a", "best_depth_a", "best_cka"};
static const char *const mono_keys[3] = {"monotone_layer_a", "monotone_depth_a", "monotone_cka"};

static int put_rows(kdl_table *t, const struct kdl__srcs *l, const struct kdl_ckpair *ck,
                    const size_t *ia, const size_t *ib, size_t nb, const double *v,
                    const size_t *best, const size_t *map)
{
        int err = 0;

        for (size_t i = 0; i < nb && !err; i++) {
                const struct kdl__src *s = &l->v[ib[i]];

                if (kdl_table_add_row(t) < 0)
                        return -ENOMEM;
                err = kdl_table_put_str(t, "checkpoint", ck->main->name);
                err = err ?: kdl_table_put_str(t, "checkpoint_b", ck->partner->name);
                err = err ?: kdl_table_put_str(t, "layer_b", s->name);
                if (!err && s->has_depth)
                        err = kdl_table_put_int(t, "depth_b", s->depth);
                err = err ?: put_a(t, l, ia, best[i], v, nb, i, best_keys);
                err = err ?: put_a(t, l, ia, map[i], v, nb, i, mono_keys);
        }
        return err;
}

int kdl__cka_mapping_rows(kdl_table *t, const struct kdl__cka_results *res,
                          const struct kdl_run_cka_opts *o, const struct kdl__srcs *l,
                          const struct kdl_ckpair *ck)
{
        size_t *ia = NULL, *ib = NULL, *best = NULL, *map = NULL, na = 0, nb = 0, nn;
        double *v = NULL;
        int err;

        assert(t && res && o && l && ck && ck->partner);
        err = kdl_mul_size(l->n, l->n, &nn);
        if (err < 0)
                return err;
        err = -ENOMEM;
        ia = kdl_new(size_t, l->n);
        ib = kdl_new(size_t, l->n);
        best = kdl_new(size_t, l->n);
        map = kdl_new(size_t, l->n);
        v = kdl_new(double, nn);
        if (!ia || !ib || !best || !map || !v)
                goto out;
        /* The layers of each model in the sources' order: by depth, then the logits. */
        for (size_t k = 0; k < l->n; k++) {
                if (!l->v[k].ds)
                        continue;
                if (l->v[k].model == 0)
                        ia[na++] = k;
                else
                        ib[nb++] = k;
        }
        for (size_t j = 0; j < na; j++)
                for (size_t i = 0; i < nb; i++)
                        v[j * nb + i] = kdl__cka_shown(res, o, ia[j], ib[i]);
        err = kdl__cka_mapping_solve(v, na, nb, best, map);
        err = err ?: put_rows(t, l, ck, ia, ib, nb, v, best, map);
out:
        free(v);
        free(map);
        free(best);
        free(ib);
        free(ia);
        return err;
}
