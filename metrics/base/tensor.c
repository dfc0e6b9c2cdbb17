/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/tensor.h"

static void set_contiguous_strides(kdl_tensor *t)
{
        ptrdiff_t s = 1;

        for (size_t k = t->ndim; k-- > 0;) {
                t->stride[k] = s;
                s *= (ptrdiff_t) t->shape[k];
        }
}

int kdl_tensor_new(size_t ndim, const size_t *shape, kdl_tensor **ret)
{
        kdl_tensor *t;
        size_t n = 1;
        int err;

        assert(ndim >= 1 && ndim <= KDL_MAX_DIMS && shape && ret);
        for (size_t k = 0; k < ndim; k++) {
                err = kdl_mul_size(n, shape[k], &n);
                if (err < 0)
                        return err;
        }
        /* Elements must also be addressable through ptrdiff_t strides. */
        if (n > (size_t) PTRDIFF_MAX / sizeof(double))
                return kdl_error(-KDL_EOVERFLOW, "tensor of %zu elements is too large", n);

        t = kdl_new(kdl_tensor, 1);
        if (!t)
                return -ENOMEM;
        t->data = kdl_new(double, n);
        if (!t->data) {
                free(t);
                return -ENOMEM;
        }
        t->ndim = ndim;
        memcpy(t->shape, shape, ndim * sizeof(*shape));
        set_contiguous_strides(t);
        t->owner = true;
        *ret = t;
        return 0;
}

int kdl_tensor_new2(size_t rows, size_t cols, kdl_tensor **ret)
{
        return kdl_tensor_new(2, (size_t[]){rows, cols}, ret);
}

void kdl_tensor_free(kdl_tensor *t)
{
        if (!t)
                return;
        if (t->owner)
                free(t->data);
        free(t);
}

kdl_tensor kdl_tensor_wrap(double *data, size_t ndim, const size_t *shape)
{
        kdl_tensor t = {.ndim = ndim, .data = data, .owner = false};

        assert(ndim >= 1 && ndim <= KDL_MAX_DIMS);
        memcpy(t.shape, shape, ndim * sizeof(*shape));
        set_contiguous_strides(&t);
        return t;
}

kdl_tensor kdl_tensor_view_rows(const kdl_tensor *t, size_t r0, size_t r1)
{
        kdl_tensor v = *t;

        assert(r0 <= r1 && r1 <= t->shape[0]);
        v.shape[0] = r1 - r0;
        v.data = t->data + (ptrdiff_t) r0 * t->stride[0];
        v.owner = false;
        return v;
}

kdl_tensor kdl_tensor_view_transpose(const kdl_tensor *t)
{
        kdl_tensor v = *t;

        assert(t->ndim == 2);
        v.shape[0] = t->shape[1];
        v.shape[1] = t->shape[0];
        v.stride[0] = t->stride[1];
        v.stride[1] = t->stride[0];
        v.owner = false;
        return v;
}

size_t kdl_tensor_size(const kdl_tensor *t)
{
        size_t n = 1;

        for (size_t k = 0; k < t->ndim; k++)
                n *= t->shape[k];
        return n;
}

bool kdl_tensor_is_contiguous(const kdl_tensor *t)
{
        ptrdiff_t s = 1;

        for (size_t k = t->ndim; k-- > 0;) {
                if (t->shape[k] > 1 && t->stride[k] != s)
                        return false;
                s *= (ptrdiff_t) t->shape[k];
        }
        return true;
}

int kdl_tensor_check_finite(const kdl_tensor *t, size_t *ret_row)
{
        assert(t->ndim == 2);
        for (size_t i = 0; i < t->shape[0]; i++)
                for (size_t j = 0; j < t->shape[1]; j++)
                        if (!isfinite(KDL_AT2(t, i, j))) {
                                *ret_row = i;
                                return -KDL_ENONFINITE;
                        }
        return 0;
}
