/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "analysis/dist.h"
#include "analysis/rows.h"
#include "metrics/base/banned.h"

_Static_assert(sizeof(size_t) == 8 && sizeof(double) == 8 && sizeof(int64_t) == 8,
               "a held value is 8 bytes");

static size_t width(const struct kdl__rows *r, size_t k)
{
        return r->width ? r->width[k] : 1;
}

/* Rows [next, samples[m-1] + 1) of every column: the @m samples' values, NaN between. */
static int write_by_sample(struct kdl__rows *r, size_t m, const size_t *samples,
                           const void *const *cols, size_t end)
{
        size_t len = end - r->next;
        int err = 0;

        if (len > r->nnan) {
                double *g = kdl__malloc(len, sizeof(double));

                if (!g)
                        return -ENOMEM;
                free(r->nan);
                r->nan = g;
                r->nnan = len;
        }
        for (size_t k = 0; k < r->ncols && !err; k++) {
                const double *v = cols ? cols[k] : NULL;

                if (r->ids[k] < 0)
                        continue;
                for (size_t j = 0; j < len; j++)
                        r->nan[j] = (double) NAN;
                for (size_t j = 0; j < m; j++)
                        r->nan[samples[j] - r->next] = v[j];
                err = kdl_h5out_write(r->out, r->ids[k], r->next, end, r->nan);
        }
        if (!err)
                r->next = end;
        return err;
}

static int write_rows(struct kdl__rows *r, size_t m, const size_t *samples, const void *const *cols)
{
        int err = 0;

        if (m == 0)
                return 0;
        if (r->by_sample)
                return write_by_sample(r, m, samples, cols, samples[m - 1] + 1);
        for (size_t k = 0; k < r->ncols && !err; k++) {
                if (r->ids[k] < 0)
                        continue;
                if (r->integer && r->integer[k])
                        err = kdl_h5out_write_i64(r->out, r->ids[k], r->next, r->next + m, cols[k]);
                else
                        err = kdl_h5out_write(r->out, r->ids[k], r->next, r->next + m, cols[k]);
        }
        if (!err)
                r->next += m;
        return err;
}

/* Append @bytes of @x to the rows held. */
static void hold(struct kdl__rows *r, const void *x, size_t bytes)
{
        memcpy(r->held + r->len, x, bytes);
        r->len += bytes;
}

int kdl__rows_add(struct kdl__rows *r, size_t m, const size_t *samples, const void *const *cols)
{
        uint64_t m64 = m;
        size_t per = r->by_sample, need;

        assert(r && (r->out || kdl__dist_size() > 1));
        if (r->out)
                return write_rows(r, m, samples, cols);
        for (size_t k = 0; k < r->ncols; k++)
                per += r->ids[k] < 0 ? 0 : width(r, k);
        if (kdl_mul_size(per, 8 * m, &need) < 0 || need > SIZE_MAX - 8 - r->len)
                return kdl_error(-KDL_EOVERFLOW, "per-sample rows: %zu bytes held", r->len);
        need += 8 + r->len;
        if (need > r->cap) {
                size_t cap = need > r->cap / 2 * 3 ? need : r->cap / 2 * 3;
                unsigned char *g = realloc(r->held, cap);

                if (!g)
                        return kdl_error(-ENOMEM,
                                         "out of memory holding %zu bytes of per-sample "
                                         "rows",
                                         cap);
                r->held = g;
                r->cap = cap;
        }
        hold(r, &m64, sizeof(m64));
        for (size_t k = 0; k < r->ncols; k++)
                if (r->ids[k] >= 0)
                        hold(r, cols[k], m * width(r, k) * 8);
        if (r->by_sample)
                hold(r, samples, m * sizeof(*samples));
        return 0;
}

/* kdl__dist_funnel()'s take on rank 0: the blocks of rows another rank held. */
static int take(void *ctx, const void *buf, size_t len)
{
        struct kdl__rows *r = ctx;
        const unsigned char *at = buf, *end = at + len;
        const void **cols = kdl_new(const void *, r->ncols ? r->ncols : 1);
        int err = cols ? 0 : -ENOMEM;

        while (!err && at < end) {
                uint64_t m;
                const size_t *samples = NULL;

                memcpy(&m, at, sizeof(m));
                at += sizeof(m);
                for (size_t k = 0; k < r->ncols; k++) {
                        cols[k] = r->ids[k] < 0 ? NULL : at;
                        at += r->ids[k] < 0 ? 0 : m * width(r, k) * 8;
                }
                if (r->by_sample) {
                        samples = (const size_t *) (const void *) at;
                        at += m * sizeof(*samples);
                }
                err = write_rows(r, m, samples, cols);
        }
        free(cols);
        return err;
}

int kdl__rows_combine(struct kdl__rows *r)
{
        int err = kdl__dist_funnel(r->held, r->len, take, r);

        free(r->held);
        r->held = NULL;
        r->len = r->cap = 0;
        return err;
}

int kdl__rows_fill(struct kdl__rows *r, size_t end)
{
        if (!r->out || !r->by_sample || r->next >= end)
                return 0;
        return write_by_sample(r, 0, NULL, NULL, end);
}

void kdl__rows_release(struct kdl__rows *r)
{
        free(r->nan);
        free(r->held);
        r->nan = NULL;
        r->held = NULL;
        r->nnan = r->len = r->cap = 0;
}
