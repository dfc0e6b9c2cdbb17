/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>

#include "metrics/base/error.h"
#include "metrics/cka.h"
#include "metrics/cka-internal.h"
#include "metrics/base/banned.h"

/*
 * One-hot layers of the feature-space state (KDL_CKA_LAYER_ONEHOT): with y the one-hot
 * row of class c, every sum with y is a class sum.  Relative to the state's shift (0 for
 * y), m_y = Σ w y counts the classes, U's rows of y are Σ w y aᵀ (the class sums of each
 * layer's squared norm), a block with another layer is Σ w y z̃ᵀ (its class sums, one row
 * per class: the block is oriented [D_y, D_k]) and the block of y with itself would be
 * diag(m_y), which m already holds.  So nothing is D_y x D_y and a row costs O(ΣD).
 */

int kdl__cka_onehot_rows(kdl_cka_state *s, size_t j, size_t q, const kdl_tensor *b, size_t r0,
                         size_t nb, const size_t *ids)
{
        double top = (double) s->width[j];

        for (size_t i = 0; i < nb; i++) {
                double x = KDL_AT2(b, r0 + i, 0);

                if (!(x >= 0.0 && x < top) || islessgreater(x, floor(x)))
                        return kdl_error(-KDL_ERANGE,
                                         "layer %zu: class %g of sample %zu is outside 0..%zu", j,
                                         x, ids ? ids[r0 + i] : r0 + i, s->width[j] - 1);
                s->cls[i * s->nhot + q] = x;
        }
        return 0;
}

/* The class sums of the blocks of one-hot layer @y (the @q-th) for one row @i. */
static void row_blocks(const kdl_cka_state *s, struct kdl__cka_stats *t, size_t y, size_t c,
                       const double *zi, double vi, const double *ci)
{
        for (size_t b = 0; b < s->nblk; b++) {
                size_t k = s->bk[b], dk = s->width[k];
                double *g = t->g[b] + c * dk;

                if (s->bj[b] != y)
                        continue;
                if (s->kind[k] == KDL_CKA_LAYER_ONEHOT) {
                        size_t qk = 0;

                        while (s->hot[qk] != k)
                                qk++;
                        g[(size_t) ci[qk]] += vi * vi;
                } else {
                        const double *zk = zi + s->off[k];

                        for (size_t col = 0; col < dk; col++)
                                g[col] += vi * zk[col];
                }
        }
}

void kdl__cka_onehot_add(const kdl_cka_state *s, struct kdl__cka_stats *t, const double *z,
                         const double *a, const double *v, const double *cls, size_t rows)
{
        size_t l = s->l, nh = s->nhot;

        for (size_t q = 0; q < nh; q++) {
                size_t y = s->hot[q], oy = s->off[y];

                for (size_t i = 0; i < rows; i++) {
                        size_t c = (size_t) cls[i * nh + q];
                        double vi = v[i], *u = t->u + (oy + c) * l;

                        /* z and a are already scaled by vi: one more gives the weight. */
                        t->m[oy + c] += vi * vi;
                        for (size_t j = 0; j < l; j++)
                                u[j] += vi * a[i * l + j];
                        row_blocks(s, t, y, c, z + i * s->dz, vi, cls + i * nh);
                }
        }
}
