/* SPDX-License-Identifier: MIT */
/*
 * The centred cross-products of a feature-space CKA state (metrics/similarity.h), the
 * input of the CCA family: what the state's finalize centres for CKA, kept as matrices.
 */
#include <assert.h>

#include "metrics/base/error.h"
#include "metrics/cka-internal.h"
#include "metrics/similarity.h"
#include "metrics/base/banned.h"

int kdl_similarity_cka_cov(const kdl_cka_state *s, size_t j, size_t k, double *ret)
{
        const struct kdl__cka_stats *t;
        size_t dj, dk, lo, hi;
        const double *g, *mj, *mk;
        long b;
        double n;

        assert(s && ret && j < s->l && k < s->l);
        t = &s->st[0];
        n = t->n;
        if (!(n > 0.0))
                return kdl_error(-KDL_EMISSING, "similarity: no sample was accumulated");
        b = s->blk[j * s->l + k];
        if (b < 0 || s->kind[j] != KDL_CKA_LAYER_DENSE || s->kind[k] != KDL_CKA_LAYER_DENSE)
                return kdl_error(-KDL_ESHAPE,
                                 "similarity: layers %zu and %zu: no dense block in the state", j,
                                 k);
        dj = s->width[j];
        dk = s->width[k];
        lo = s->bj[b];
        hi = s->bk[b];
        g = t->g[b];
        mj = t->m + s->off[j];
        mk = t->m + s->off[k];
        /* The block is [D_lo, D_hi] for lo <= hi; a diagonal block holds its upper
         * triangle only.  The shift cancels: Σ (z - K)(z - K)ᵀ - m mᵀ/n is centred. */
        for (size_t a = 0; a < dj; a++)
                for (size_t c = 0; c < dk; c++) {
                        size_t r = j == lo && (j != k || a <= c) ? a : c;
                        size_t q = r == a ? c : a;

                        ret[a * dk + c] = g[r * s->width[hi] + q] - mj[a] * mk[c] / n;
                }
        return 0;
}
