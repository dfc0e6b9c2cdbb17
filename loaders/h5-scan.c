/* SPDX-License-Identifier: MIT */
/*
 * The value scan: every floating-point dataset of a dump read once for
 * NaN/Inf, in pieces of at most PIECE values whatever the width of a row,
 * each dataset only until its first problem.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "metrics/base/alloc.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

#define PIECE ((size_t) 4 << 20) /* values per piece: 32 MiB of doubles */

/*
 * The shape of a piece of @ds: whole trailing dimensions while they fit in
 * PIECE values, then as many rows as fit (at least one of everything), in
 * whole chunks where a dimension is cut.
 */
static void piece_shape(const kdl_dsinfo *ds, size_t *p)
{
        size_t room = PIECE;

        for (size_t k = ds->ndim; k-- > 0;) {
                p[k] = ds->shape[k] < room ? ds->shape[k] : room;
                if (ds->chunked && p[k] < ds->shape[k] && p[k] > ds->chunk[k])
                        p[k] -= p[k] % ds->chunk[k];
                room /= p[k];
                if (room == 0)
                        room = 1;
        }
}

/* The first of the @m rows of @n values at @buf holding NaN/Inf, or @m. */
static size_t first_nonfinite(const double *buf, size_t m, size_t n)
{
        for (size_t i = 0; i < m; i++)
                if (!kdl__h5_row_finite(buf + i * n, n))
                        return i;
        return m;
}

/* The next piece's start over the trailing dimensions; false after the last. */
static bool next_piece(const kdl_dsinfo *ds, const size_t *p, size_t *start)
{
        for (size_t k = ds->ndim; k-- > 1;) {
                start[k] += p[k];
                if (start[k] < ds->shape[k])
                        return true;
                start[k] = 0;
        }
        return false;
}

/* A read error of @ds as a problem of @f (the message without its file name). */
static int read_problem(kdl_h5file *f, int err)
{
        const char *msg = kdl_errmsg();
        size_t n = strlen(f->dump.path);
        char copy[512];

        if (err == -ENOMEM)
                return err;
        if (msg[0] == '\'' && strncmp(msg + 1, f->dump.path, n) == 0 &&
            strncmp(msg + 1 + n, "': ", 3) == 0)
                msg += n + 4;
        snprintf(copy, sizeof(copy), "%s", msg);
        return kdl__h5_problem(f, "%s", copy) ?: 1;
}

/*
 * Scan @ds (if a float dataset) row band by row band; within a band, piece
 * by piece across the row.  1 if a problem was added: a NaN/Inf (naming the
 * first @unit holding one) or a read error; 0 if none; -ENOMEM.
 */
static int scan_dataset(kdl_h5file *f, const kdl_dsinfo *ds, const char *unit, bool samples)
{
        size_t p[KDL_MAX_DIMS], start[KDL_MAX_DIMS] = {0}, count[KDL_MAX_DIMS];
        kdl_h5reader *r = NULL;
        double *buf = NULL;
        size_t rows, values = 1;
        int err;

        if (!ds || !ds->is_float || ds->ndim < 1 || ds->ndim > KDL_MAX_DIMS)
                return 0;
        /* Rows other than the dump's samples: a problem already, not worth reading. */
        if (samples && f->dump.n && ds->shape[0] != f->dump.n)
                return 0;
        err = kdl_h5_reader_open(f, ds, KDL_SPATIAL_FLATTEN, &r);
        if (err < 0)
                return read_problem(f, err);
        rows = ds->shape[0];
        piece_shape(ds, p);
        for (size_t k = 0; k < ds->ndim; k++)
                values *= p[k]; /* <= PIECE */
        buf = kdl__malloc(values, sizeof(double));
        if (!buf) {
                err = kdl__h5_nomem(f->dump.path, ds->path);
                goto out;
        }
        for (start[0] = 0; start[0] < rows && err == 0; start[0] += p[0]) {
                size_t best = SIZE_MAX;
                bool nan = false;

                count[0] = rows - start[0] < p[0] ? rows - start[0] : p[0];
                do {
                        size_t width = 1, i;

                        for (size_t k = 1; k < ds->ndim; k++) {
                                count[k] = ds->shape[k] - start[k] < p[k] ? ds->shape[k] - start[k]
                                                                          : p[k];
                                width *= count[k];
                        }
                        err = kdl__h5_reader_read_box(r, start, count, buf);
                        if (err < 0) {
                                err = read_problem(f, err);
                                goto out;
                        }
                        i = first_nonfinite(buf, count[0], width);
                        if (i < count[0] && start[0] + i <= best) {
                                bool is_nan =
                                        kdl__h5_nonfinite_kind(buf + i * width, width)[0] == 'N';

                                nan = (start[0] + i == best && nan) || is_nan;
                                best = start[0] + i;
                        }
                } while (next_piece(ds, p, start));
                if (best != SIZE_MAX)
                        err = kdl__h5_problem(f, "%s: expected finite values, found %s at %s %zu",
                                              ds->path, nan ? "NaN" : "Inf", unit, best)
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
                /* Per sample first, then the head's rows. */
                const kdl_dsinfo *list[] = {ck->logits,        ck->grad_logits, ck->topk_values,
                                            ck->topk_logprobs, ck->topk_lse,    ck->head_weight,
                                            ck->head_bias};

                for (size_t j = 0; j < sizeof(list) / sizeof(list[0]); j++) {
                        err = scan_dataset(f, list[j], j < 5 ? "sample" : "row", j < 5);
                        if (err < 0)
                                return err;
                        added += err;
                }
                for (size_t j = 0; j < ck->nlayers; j++) {
                        err = scan_dataset(f, &ck->layers[j].feature, "sample", true);
                        if (err < 0)
                                return err;
                        added += err;
                        err = scan_dataset(f, ck->layers[j].gradient, "sample", true);
                        if (err < 0)
                                return err;
                        added += err;
                }
        }
        return added;
}
