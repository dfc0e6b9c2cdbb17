/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_BASE_TENSOR_H
#define KDL_METRICS_BASE_TENSOR_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics/base/error.h"

#define KDL_MAX_DIMS 4

/*
 * The dense block type every layer shares: double, row-major after loading
 * (STYLE.md 3.3).  A row block of a dataset is a 2-D tensor [rows, cols].
 * Strides are in elements and general (BLIS), so row slices and transposes
 * are zero-copy views.  Transparent value type: hot loops read data/stride.
 */
typedef struct kdl_tensor {
        size_t ndim;                    /* read-only */
        size_t shape[KDL_MAX_DIMS];     /* read-only */
        ptrdiff_t stride[KDL_MAX_DIMS]; /* read-only; elements, not bytes */
        double *data;                   /* may be written if not const */
        bool owner;                     /* private: false for views */
} kdl_tensor;

/* Element (i, j) of a 2-D tensor. */
#define KDL_AT2(t, i, j)                                                                           \
        ((t)->data[(ptrdiff_t) (i) * (t)->stride[0] + (ptrdiff_t) (j) * (t)->stride[1]])

/**
 * kdl_tensor_new() - zeroed, contiguous, row-major tensor.
 * @ndim:  1..KDL_MAX_DIMS.
 * @shape: @ndim sizes; a zero size is allowed (an empty tensor).
 * @ret:   set on success only; caller frees with kdl_tensor_free().
 *
 * Return: 0; -KDL_EOVERFLOW if the element count overflows; -ENOMEM.
 */
KDL_API int kdl_tensor_new(size_t ndim, const size_t *shape, kdl_tensor **ret);

/** kdl_tensor_new2() - kdl_tensor_new() for a 2-D [rows, cols] tensor. */
KDL_API int kdl_tensor_new2(size_t rows, size_t cols, kdl_tensor **ret);

/** kdl_tensor_free() - free @t and, if it owns them, its data.  NULL is a no-op. */
KDL_API void kdl_tensor_free(kdl_tensor *t);

/**
 * kdl_tensor_wrap() - a contiguous row-major view of @data (borrowed, must
 * outlive the returned value).  The caller checked that the sizes fit.
 */
KDL_API kdl_tensor kdl_tensor_wrap(double *data, size_t ndim, const size_t *shape);

/** kdl_tensor_view_rows() - rows [@r0, @r1) of @t as a view (borrowed). */
KDL_API kdl_tensor kdl_tensor_view_rows(const kdl_tensor *t, size_t r0, size_t r1);

/** kdl_tensor_view_transpose() - the 2-D transpose of @t as a view (borrowed). */
KDL_API kdl_tensor kdl_tensor_view_transpose(const kdl_tensor *t);

/** kdl_tensor_size() - number of elements (product of the shape). */
KDL_API size_t kdl_tensor_size(const kdl_tensor *t);

/** kdl_tensor_is_contiguous() - true if @t is dense row-major. */
KDL_API bool kdl_tensor_is_contiguous(const kdl_tensor *t);

/**
 * kdl_tensor_check_finite() - find the first NaN/Inf of a 2-D tensor.
 * Return: 0 if all are finite; otherwise -KDL_ENONFINITE with *@ret_row set
 * to the row (no message recorded: the caller knows what the rows are).
 */
KDL_API int kdl_tensor_check_finite(const kdl_tensor *t, size_t *ret_row);

#endif
