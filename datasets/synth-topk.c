/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/kl-topk.h"
#include "loaders/h5write.h"
#include "datasets/synth-internal.h"
#include "metrics/base/banned.h"

/*
 * The teacher's sparse logits (kdl-synth --topk K): logits_topk/indices
 * (int32 [N, K], best first), values (the stored logits there, [N, K], in the
 * dump's float type) and logsumexp (float64 [N], of the stored logits), block
 * by block from the block's dense logits: never N x C.
 */

int kdl__synth_topk_open(const struct kdl__synth_model *m, kdl_h5w *h5, const char *group,
                         struct kdl__synth_topk *t)
{
        static const char *const rel[] = {"indices", "values", "logsumexp"};
        kdl_h5wds **ds[] = {&t->ix, &t->val, &t->lse};
        size_t k = m->o->topk, shape[2] = {m->N, k};
        int err = 0;

        t->k = k;
        t->ints = kdl_new(int64_t, m->block * k);
        t->vals = kdl_new(double, m->block *k);
        t->l = kdl_new(double, m->block);
        t->top = kdl_new(size_t, k);
        if (!t->ints || !t->vals || !t->l || !t->top)
                return kdl_error(-ENOMEM, "out of memory for the top-%zu logits", k);
        for (size_t i = 0; i < 3 && !err; i++) {
                enum kdl_store st = i == 0 ? KDL_STORE_I32 : i == 1 ? m->o->dtype : KDL_STORE_F64;
                char *path =
                        kdl__asprintf("%s/logits_topk/%s", strcmp(group, "/") ? group : "", rel[i]);

                if (!path)
                        return -ENOMEM;
                err = kdl_h5w_dataset_open(h5, path, i == 2 ? 1 : 2, shape, st, m->o->chunk_rows,
                                           m->o->gzip, ds[i]);
                free(path);
        }
        return err;
}

int kdl__synth_topk_write(struct kdl__synth_topk *t, const double *z, size_t c, size_t r0, size_t B)
{
        size_t k = t->k;
        int err;

        for (size_t b = 0; b < B; b++) {
                const double *row = z + b * c;
                double mx, sum = 0.0;

                kdl_kl_topk_select(row, 1, c, k, t->top);
                for (size_t j = 0; j < k; j++) {
                        t->ints[b * k + j] = (int64_t) t->top[j];
                        t->vals[b * k + j] = row[t->top[j]];
                }
                mx = row[t->top[0]];
                for (size_t i = 0; i < c; i++)
                        sum += exp(row[i] - mx);
                t->l[b] = mx + log(sum);
        }
        err = kdl_h5w_write_rows_i64(t->ix, r0, r0 + B, t->ints);
        err = err ?: kdl_h5w_write_rows(t->val, r0, r0 + B, t->vals);
        return err ?: kdl_h5w_write_rows(t->lse, r0, r0 + B, t->l);
}

int kdl__synth_topk_close(struct kdl__synth_topk *t)
{
        int err = kdl_h5w_dataset_close(t->ix), e;

        e = kdl_h5w_dataset_close(t->val);
        err = err < 0 ? err : e;
        e = kdl_h5w_dataset_close(t->lse);
        err = err < 0 ? err : e;
        free(t->top);
        free(t->l);
        free(t->vals);
        free(t->ints);
        memset(t, 0, sizeof(*t));
        return err;
}
