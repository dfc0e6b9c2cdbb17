/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/cka.h"
#include "metrics/cka-internal.h"
#include "metrics/base/banned.h"

/* Minibatch CKA (Nguyen, Raghu & Kornblith 2021): U-centred batch Grams,
 * their inner products summed over batches. */

struct kdl_cka_mb_state {
        size_t l, m, maxw;
        size_t *width;
        size_t nbatches;
        double *h;     /* [l*l] upper: Σ over batches of ⟨K̄_i, K̄_j⟩ */
        double *gram;  /* [m*m] one batch Gram */
        double *stack; /* [l*m*m] U-centred batch Grams */
        double *rm;    /* [m] */
};

void kdl_cka_mb_state_free(kdl_cka_mb_state *s)
{
        if (!s)
                return;
        free(s->width);
        free(s->h);
        free(s->gram);
        free(s->stack);
        free(s->rm);
        free(s);
}

int kdl_cka_mb_state_new(size_t nlayers, const size_t *widths, size_t m, kdl_cka_mb_state **ret)
{
        kdl_cka_mb_state *s;
        size_t mm;
        int bi, r;

        if (m < 4)
                return kdl_error(-KDL_ERANGE, "minibatch CKA needs batches of at least 4, got %zu",
                                 m);
        if (nlayers == 0)
                return kdl_error(-KDL_ESHAPE, "CKA needs at least one layer");
        if (__builtin_mul_overflow(m, m, &mm))
                return kdl_error(-KDL_EOVERFLOW, "batch size %zu overflows", m);
        r = kdl__blas_int(mm, &bi);
        if (r < 0)
                return r;
        for (size_t i = 0; i < nlayers; i++) {
                if (widths[i] == 0)
                        return kdl_error(-KDL_ESHAPE, "layer %zu has width 0", i);
                r = kdl__blas_int(widths[i], &bi);
                if (r < 0)
                        return r;
        }
        s = kdl_new(kdl_cka_mb_state, 1);
        if (!s)
                return -ENOMEM;
        s->l = nlayers;
        s->m = m;
        s->width = kdl_new(size_t, nlayers);
        s->h = kdl_new(double, nlayers *nlayers);
        s->gram = kdl_new(double, mm);
        s->stack = kdl__malloc(nlayers, mm * sizeof(double));
        s->rm = kdl_new(double, m);
        if (!s->width || !s->h || !s->gram || !s->stack || !s->rm) {
                kdl_cka_mb_state_free(s);
                return -ENOMEM;
        }
        memcpy(s->width, widths, nlayers * sizeof(size_t));
        *ret = s;
        return 0;
}

int kdl_cka_mb_accumulate(kdl_cka_mb_state *s, const kdl_tensor *batch)
{
        size_t m = s->m, mm = m * m, l = s->l;
        int r;

        assert(s && batch);
        if (batch[0].ndim != 2 || batch[0].shape[0] != m)
                return kdl_error(-KDL_ESHAPE, "minibatch CKA: expected batches of %zu rows", m);
        r = kdl__cka_check_blocks(batch, l, s->width, NULL, m, NULL);
        if (r < 0)
                return r;
        for (size_t i = 0; i < l; i++) {
                r = kdl__cka_kernel_matrix(&batch[i], KDL_CKA_LINEAR, 0.0, s->gram, NULL);
                if (r < 0)
                        return r;
                kdl__cka_centre_unbiased(s->gram, m, s->rm, s->stack + i * mm);
        }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int) l, (int) mm, 1.0, s->stack,
                    (int) mm, 1.0, s->h, (int) l);
        s->nbatches++;
        return 0;
}

int kdl_cka_mb_merge(kdl_cka_mb_state *into, const kdl_cka_mb_state *from)
{
        assert(into && from);
        if (into->l != from->l || into->m != from->m ||
            memcmp(into->width, from->width, into->l * sizeof(size_t)) != 0)
                return kdl_error(-KDL_EMISMATCH,
                                 "cannot merge minibatch CKA states of different layers or batch "
                                 "sizes");
        for (size_t i = 0; i < into->l * into->l; i++)
                into->h[i] += from->h[i];
        into->nbatches += from->nbatches;
        return 0;
}

int kdl_cka_mb_finalize(const kdl_cka_mb_state *s, kdl_cka_matrix **ret)
{
        kdl_cka_matrix *m = NULL;

        assert(s && ret);
        if (!s->nbatches)
                return kdl_error(-KDL_EMISSING, "minibatch CKA: no batch was added");
        if (kdl__cka_matrix_new(s->l, &m) < 0)
                return -ENOMEM;
        m->minibatch = kdl_new(double, s->l * s->l);
        if (!m->minibatch) {
                kdl_cka_matrix_free(m);
                return -ENOMEM;
        }
        m->nbatches = s->nbatches;
        m->n = (double) (s->nbatches * s->m);
        kdl__cka_normalise_upper(s->h, s->l, m->minibatch);
        *ret = m;
        return 0;
}
