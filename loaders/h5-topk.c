/* SPDX-License-Identifier: MIT */
/*
 * Schema v1's sparse teacher logits (/checkpoints/<c>/logits_topk/) and token
 * datasets (/sequence_ids, /positions): their shapes in the catalogue, the
 * values of the indices after it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

/* Rows of indices read at a time by kdl__h5_check_topk(). */
#define CHECK_ROWS 4096

void kdl__h5_topk_release(kdl_checkpoint *ck)
{
        kdl__h5_dsinfo_free(ck->topk_indices);
        kdl__h5_dsinfo_free(ck->topk_values);
        kdl__h5_dsinfo_free(ck->topk_logprobs);
        kdl__h5_dsinfo_free(ck->topk_lse);
}

/* logits_topk/indices: 2-D integers [N, k], k >= 1 (k <= C: kdl__h5_check_topk()). */
static int check_indices(kdl_h5file *f, const kdl_dsinfo *ix)
{
        int r = kdl__h5_expect_rank(f, ix, 2, 2, "2-D [N, k] class indices");

        if (r <= 0)
                return r;
        if (!ix->is_integer)
                return kdl__h5_problem(f, "%s: expected integer class indices, found %s", ix->path,
                                       ix->dtype);
        if (ix->shape[1] == 0)
                return kdl__h5_problem(f, "%s: expected k >= 1 columns, found 0", ix->path);
        return kdl__h5_check_rows(f, ix, "as /labels and the logits");
}

/* values or logprobs (@v): floats of the shape of the indices. */
static int check_values(kdl_h5file *f, const kdl_dsinfo *ix, const kdl_dsinfo *v)
{
        int r = kdl__h5_expect_rank(f, v, 2, 2, "2-D [N, k] as the indices");

        if (r > 0 && (v->shape[0] != ix->shape[0] || v->shape[1] != ix->shape[1]))
                r = kdl__h5_problem(f, "%s: expected [%zu, %zu] as %s, found [%zu, %zu]", v->path,
                                    ix->shape[0], ix->shape[1], ix->path, v->shape[0], v->shape[1]);
        return r > 0 ? kdl__h5_expect_float(f, v) : r;
}

static int describe_topk(kdl_h5file *f, kdl_checkpoint *ck, const char *g)
{
        static const char *const rel[] = {"indices", "values", "logprobs", "logsumexp"};
        static const char *const what[] = {"class indices [N, k]", "teacher logits [N, k]",
                                           "teacher log-probabilities [N, k]",
                                           "the log-normaliser [N]"};
        kdl_dsinfo **ds[] = {&ck->topk_indices, &ck->topk_values, &ck->topk_logprobs,
                             &ck->topk_lse};
        int r = 1;

        for (size_t i = 0; i < 4 && r >= 0; i++) {
                char *p = kdl__h5_join(g, rel[i]);

                if (!p)
                        return kdl__h5_nomem(f->dump.path, g);
                r = kdl__h5_describe_new(f, p, what[i], i == 0, ds[i]);
                free(p);
        }
        return r < 0 ? r : 0;
}

int kdl__h5_scan_topk(kdl_h5file *f, kdl_checkpoint *ck)
{
        char *g = kdl__h5_join(ck->group, "logits_topk");
        const kdl_dsinfo *ix, *v;
        bool present;
        int r;

        if (!g)
                return kdl__h5_nomem(f->dump.path, NULL);
        r = kdl__h5_find(f, g, H5O_TYPE_GROUP, "a group of sparse teacher logits", &present);
        if (r > 0)
                r = describe_topk(f, ck, g);
        if (r >= 0 && ck->topk_indices) {
                bool has = false;
                int64_t c = 0;

                r = kdl__h5_attr_int(f, g, "classes", &c, &has);
                if (r > 0 && c < 2)
                        r = kdl__h5_problem(f,
                                            "%s: attribute 'classes': expected 2 or more, found "
                                            "%lld",
                                            g, (long long) c);
                ck->topk_classes = r > 0 ? c : 0;
        }
        ix = ck->topk_indices;
        v = ck->topk_values ? ck->topk_values : ck->topk_logprobs;
        if (r < 0 || !ix)
                goto out; /* absent, or a problem recorded */
        if (ck->topk_values && ck->topk_logprobs)
                r = kdl__h5_problem(f, "%s: expected values or logprobs, found both", g);
        else if (!v)
                r = kdl__h5_problem(f,
                                    "%s/values: expected teacher logits [N, k] (or logprobs), "
                                    "found none",
                                    g);
        else if ((r = check_indices(f, ix)) > 0 && (r = check_values(f, ix, v)) > 0 &&
                 ck->topk_lse) {
                r = kdl__h5_expect_rank(f, ck->topk_lse, 1, 1, "1-D [N]");
                r = r > 0 ? kdl__h5_expect_float(f, ck->topk_lse) : r;
                r = r > 0 ? kdl__h5_check_rows(f, ck->topk_lse, "as the indices") : r;
        }
out:
        free(g);
        return r < 0 ? r : 0;
}

int kdl__h5_scan_tokens(kdl_h5file *f)
{
        kdl_dump *d = &f->dump;
        int r = kdl__h5_describe_new(f, "/sequence_ids", "integer sequence ids [N]", false,
                                     &d->sequence_ids);

        if (r >= 0)
                r = kdl__h5_describe_new(f, "/positions", "integer token positions [N]", false,
                                         &d->positions);
        if (r >= 0 && d->sequence_ids) {
                r = kdl__h5_expect_integers(f, d->sequence_ids, "1-D [N] integer ids",
                                            "integer ids");
                r = r > 0 ? kdl__h5_check_rows(f, d->sequence_ids, "as /labels") : r;
        }
        if (r >= 0 && d->positions) {
                r = kdl__h5_expect_integers(f, d->positions, "1-D [N] integer positions",
                                            "integer positions");
                r = r > 0 ? kdl__h5_check_rows(f, d->positions, "as /labels") : r;
        }
        return r < 0 ? r : 0;
}

/* The rows [r0, r0 + m) of indices @x (k each): a problem at the first index that is not a
 * class or repeats one of its row; @seen[C] holds, per class, 1 + the last row it was seen in. */
static int check_rows_of(kdl_h5file *f, const kdl_dsinfo *ix, const double *x, size_t r0, size_t m,
                         size_t *seen)
{
        size_t k = ix->shape[1], c = f->dump.c;

        for (size_t i = 0; i < m; i++)
                for (size_t j = 0; j < k; j++) {
                        double v = x[i * k + j];
                        size_t cls;

                        if (!(v >= 0.0 && v < (double) c))
                                return kdl__h5_problem(f,
                                                       "%s: expected class indices in [0, %zu), "
                                                       "found %.0f at sample %zu",
                                                       ix->path, c, v, r0 + i);
                        cls = (size_t) v;
                        if (seen[cls] == r0 + i + 1)
                                return kdl__h5_problem(f,
                                                       "%s: expected distinct indices in a row, "
                                                       "found %zu twice at sample %zu",
                                                       ix->path, cls, r0 + i);
                        seen[cls] = r0 + i + 1;
                }
        return 1;
}

/* The indices of @ck: 1 when they hold, 0 with a problem, -ENOMEM. */
static int check_index_values(kdl_h5file *f, const kdl_dsinfo *ix)
{
        size_t n = ix->shape[0], k = ix->shape[1], rows = n < CHECK_ROWS ? n : CHECK_ROWS;
        size_t *seen = kdl_new(size_t, f->dump.c);
        double *x = kdl_new(double, rows *k + 1);
        kdl_h5reader *rd = NULL;
        int r = 1;

        if (!seen || !x) {
                r = kdl__h5_nomem(f->dump.path, ix->path);
                goto out;
        }
        r = kdl_h5_reader_open(f, ix, KDL_SPATIAL_AVG, &rd);
        for (size_t r0 = 0; r >= 0 && r0 < n; r0 += rows) {
                size_t r1 = r0 + rows < n ? r0 + rows : n;

                r = kdl_h5_reader_read(rd, r0, r1, x);
                r = r < 0 ? r : check_rows_of(f, ix, x, r0, r1 - r0, seen);
                if (r == 0)
                        break;
        }
        if (r < 0 && r != -ENOMEM)
                r = kdl__h5_problem(f, "%s: cannot read: %s", ix->path, kdl_errmsg());
out:
        kdl_h5_reader_close(rd);
        free(x);
        free(seen);
        return r;
}

/* C for @ck's indices: the dump's (from the logits), which the attribute 'classes' must agree
 * with, or that attribute's when there are no dense logits.  1, 0 with a problem, -ENOMEM. */
static int topk_classes(kdl_h5file *f, const kdl_checkpoint *ck)
{
        kdl_dump *d = &f->dump;
        size_t c = (size_t) ck->topk_classes;

        if (d->c == 0 && c == 0)
                return kdl__h5_problem(f,
                                       "%s: expected the logits [N, C] or an integer attribute "
                                       "'classes' on logits_topk, found neither",
                                       ck->topk_indices->path);
        if (d->c == 0)
                d->c = c;
        else if (c && c != d->c)
                return kdl__h5_problem(f,
                                       "%s: attribute 'classes': expected %zu as the logits, "
                                       "found %zu",
                                       ck->topk_indices->path, d->c, c);
        if (ck->topk_indices->shape[1] > d->c)
                return kdl__h5_problem(f, "%s: expected k in [1, %zu] (the classes), found %zu",
                                       ck->topk_indices->path, d->c, ck->topk_indices->shape[1]);
        return 1;
}

int kdl__h5_check_topk(kdl_h5file *f)
{
        int r = 1;

        for (size_t k = 0; k < f->dump.ncheckpoints && r > 0; k++) {
                const kdl_checkpoint *ck = &f->dump.checkpoints[k];
                const kdl_dsinfo *ix = ck->topk_indices;

                /* Only indices whose shape held. */
                if (ix && ix->is_integer && ix->ndim == 2 && ix->shape[1] >= 1 &&
                    (r = topk_classes(f, ck)) > 0)
                        r = check_index_values(f, ix);
        }
        return r < 0 ? r : 0;
}
