/* SPDX-License-Identifier: MIT */
/* The value scan: every floating-point dataset of a dump read once for NaN/Inf. */
#include <stdlib.h>

#include <hdf5.h>

#include "metrics/base/alloc.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

/* The first of @m rows of @n values in @buf that holds NaN/Inf, or @m. */
static size_t first_nonfinite(const double *buf, size_t m, size_t n)
{
        for (size_t i = 0; i < m; i++)
                if (!kdl__h5_row_finite(buf + i * n, n))
                        return i;
        return m;
}

/* Read @ds (if a float dataset) in blocks; 1 if a problem was added for a NaN/Inf. */
static int scan_dataset(kdl_h5file *f, const kdl_dsinfo *ds, const char *unit)
{
        kdl_h5reader *r = NULL;
        double *buf = NULL;
        size_t block, rows, inner;
        int err;

        if (!ds || !ds->is_float || ds->ndim < 1 || ds->ndim > KDL_MAX_DIMS)
                return 0;
        err = kdl_h5_reader_open(f, ds, KDL_SPATIAL_FLATTEN, &r);
        if (err < 0)
                return err;
        kdl_h5_reader_allow_nonfinite(r, true);
        rows = kdl_h5_reader_rows(r);
        inner = kdl_h5_reader_cols(r); /* flattened: every stored value */
        /* About 32 MiB of doubles per block, at least one row. */
        block = (4u << 20) / (inner ? inner : 1);
        if (block == 0)
                block = 1;
        if (block > rows)
                block = rows;
        buf = kdl__malloc(block, inner * sizeof(double));
        if (!buf) {
                err = kdl__h5_nomem(f->dump.path, ds->path);
                goto out;
        }
        for (size_t r0 = 0; r0 < rows && err == 0; r0 += block) {
                size_t r1 = r0 + block < rows ? r0 + block : rows, i;

                err = kdl_h5_reader_read(r, r0, r1, buf);
                if (err < 0)
                        goto out;
                i = first_nonfinite(buf, r1 - r0, inner);
                if (i < r1 - r0)
                        err = kdl__h5_problem(
                                      f, "%s: expected finite values, found %s at %s %zu", ds->path,
                                      kdl__h5_nonfinite_kind(buf + i * inner, inner), unit, r0 + i)
                                      ?: 1;
        }
out:
        free(buf);
        kdl_h5_reader_close(r);
        return err;
}

int kdl_h5_scan_values(kdl_h5file *f)
{
        int added = 0, err;

        for (size_t k = 0; k < f->dump.ncheckpoints; k++) {
                const kdl_checkpoint *ck = &f->dump.checkpoints[k];
                const kdl_dsinfo *list[] = {ck->logits, ck->grad_logits, ck->head_weight,
                                            ck->head_bias};

                for (size_t j = 0; j < sizeof(list) / sizeof(list[0]); j++) {
                        err = scan_dataset(f, list[j], j < 2 ? "sample" : "row");
                        if (err < 0)
                                return err;
                        added += err;
                }
                for (size_t j = 0; j < ck->nlayers; j++) {
                        err = scan_dataset(f, &ck->layers[j].feature, "sample");
                        if (err < 0)
                                return err;
                        added += err;
                        err = scan_dataset(f, ck->layers[j].gradient, "sample");
                        if (err < 0)
                                return err;
                        added += err;
                }
        }
        return added;
}
