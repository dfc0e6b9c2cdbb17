/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "loaders/h5-internal.h"
#include "loaders/stream.h"
#include "metrics/base/banned.h"

struct source {
        kdl_h5reader *r;
        size_t cols;
        double *buf;
        /* what was added, so that adding it again finds this source */
        kdl_h5file *f;
        const kdl_dsinfo *ds;
        enum kdl_spatial rule;
        bool student;
        bool used; /* read in the current pass */
};

struct kdl_stream {
        size_t n;
        const kdl_pair *pair;
        struct kdl_stream_opts o;
        size_t nsrc;
        struct source *src;
        int labels; /* index of the labels source, -1 when none */
        int64_t *label_buf;
        size_t *samples;
        size_t block; /* rows per block, fixed at the first kdl_stream_next() */
        size_t next;  /* first logical row of the next block */
        size_t rows;  /* rows of the current block */
        size_t skipped;
        /* With skip_nonfinite: one bit per logical sample dropped so far, so
         * that a later pass reading fewer datasets drops the same samples. */
        uint8_t *dropped;
        uint64_t values; /* values read from the files, every pass */
};

int kdl_stream_new(size_t n, const kdl_pair *pair, const struct kdl_stream_opts *o,
                   kdl_stream **ret)
{
        kdl_stream *s = kdl_new(kdl_stream, 1);

        if (!s)
                return -ENOMEM;
        s->n = n;
        s->pair = pair;
        if (o)
                s->o = *o;
        if (!s->o.budget_bytes)
                s->o.budget_bytes = 64u << 20;
        s->labels = -1;
        *ret = s;
        return 0;
}

void kdl_stream_free(kdl_stream *s)
{
        if (!s)
                return;
        for (size_t k = 0; k < s->nsrc; k++) {
                kdl_h5_reader_close(s->src[k].r);
                free(s->src[k].buf);
        }
        free(s->src);
        free(s->dropped);
        free(s->label_buf);
        free(s->samples);
        free(s);
}

int kdl_stream_add(kdl_stream *s, kdl_h5file *f, const kdl_dsinfo *ds, enum kdl_spatial rule,
                   bool student)
{
        struct source *grown;
        kdl_h5reader *r = NULL;
        int err;

        assert(s->block == 0 && "add every dataset before the first block");
        for (size_t k = 0; k < s->nsrc; k++)
                if (s->src[k].f == f && s->src[k].ds == ds && s->src[k].rule == rule &&
                    s->src[k].student == (student && s->pair))
                        return (int) k;
        err = kdl_h5_reader_open(f, ds, rule, &r);
        if (err < 0)
                return err;
        if (student && s->pair && s->pair->student_rows)
                kdl_h5_reader_set_rows(r, s->pair->student_rows, s->pair->n);
        if (kdl_h5_reader_rows(r) != s->n) {
                err = kdl_error(-KDL_EMISMATCH, "'%s': %s: expected %zu samples, found %zu",
                                kdl_h5_dump(f)->path, ds->path, s->n, kdl_h5_reader_rows(r));
                kdl_h5_reader_close(r);
                return err;
        }
        kdl_h5_reader_allow_nonfinite(r, s->o.skip_nonfinite);
        grown = kdl__realloc(s->src, s->nsrc + 1, sizeof(*grown));
        if (!grown) {
                kdl_h5_reader_close(r);
                return kdl__h5_nomem(kdl_h5_dump(f)->path, ds->path);
        }
        s->src = grown;
        s->src[s->nsrc] = (struct source){.r = r,
                                          .cols = kdl_h5_reader_cols(r),
                                          .f = f,
                                          .ds = ds,
                                          .rule = rule,
                                          .student = student && s->pair,
                                          .used = true};
        return (int) s->nsrc++;
}

int kdl_stream_add_labels(kdl_stream *s, kdl_h5file *f)
{
        const kdl_dump *d = kdl_h5_dump(f);
        int idx;

        if (!d->labels)
                return kdl_error(-KDL_EMISSING,
                                 "'%s': /labels: expected integer class labels "
                                 "[N], found none",
                                 d->path);
        idx = kdl_stream_add(s, f, d->labels, KDL_SPATIAL_FLATTEN, false);
        if (idx < 0)
                return idx;
        s->labels = idx;
        return idx;
}

static int allocate(kdl_stream *s)
{
        size_t cols = 0;

        for (size_t k = 0; k < s->nsrc; k++)
                cols += s->src[k].cols;
        s->block = s->o.block_rows;
        if (!s->block)
                s->block = s->o.budget_bytes / (sizeof(double) * (cols ? cols : 1));
        if (s->block == 0)
                s->block = 1;
        if (s->block > s->n)
                s->block = s->n ? s->n : 1;
        for (size_t k = 0; k < s->nsrc; k++) {
                s->src[k].buf = kdl__malloc(s->block, s->src[k].cols * sizeof(double));
                if (!s->src[k].buf)
                        return kdl__h5_nomem(kdl_h5_dump(s->src[k].f)->path, s->src[k].ds->path);
        }
        s->label_buf = kdl_new(int64_t, s->block);
        s->samples = kdl_new(size_t, s->block);
        if (!s->label_buf || !s->samples)
                return -ENOMEM;
        if (s->o.skip_nonfinite && !(s->dropped = kdl_new(uint8_t, s->n / 8 + 1)))
                return -ENOMEM;
        return 0;
}

static bool finite_row(const double *row, size_t n)
{
        for (size_t j = 0; j < n; j++)
                if (!isfinite(row[j]))
                        return false;
        return true;
}

int kdl_stream_next(kdl_stream *s)
{
        size_t r0 = s->next, m, kept = 0;
        int err;

        if (!s->block && (err = allocate(s)) < 0)
                return err;
        if (r0 >= s->n) {
                s->rows = 0;
                return 0;
        }
        m = r0 + s->block <= s->n ? s->block : s->n - r0;
        for (size_t k = 0; k < s->nsrc; k++) {
                if (!s->src[k].used)
                        continue;
                err = kdl_h5_reader_read(s->src[k].r, r0, r0 + m, s->src[k].buf);
                if (err < 0)
                        return err;
                s->values += (uint64_t) m * s->src[k].cols;
        }
        /* Compact away samples with NaN/Inf in any dataset (--nonfinite skip),
         * and those an earlier pass dropped. */
        for (size_t i = 0; i < m; i++) {
                size_t n = r0 + i;
                bool ok = !s->dropped || !(s->dropped[n / 8] & (1u << (n % 8)));

                for (size_t k = 0; s->o.skip_nonfinite && k < s->nsrc && ok; k++)
                        ok = !s->src[k].used ||
                             finite_row(s->src[k].buf + i * s->src[k].cols, s->src[k].cols);
                if (!ok) {
                        if (s->dropped)
                                s->dropped[n / 8] |= (uint8_t) (1u << (n % 8));
                        s->skipped++;
                        continue;
                }
                if (kept != i)
                        for (size_t k = 0; k < s->nsrc; k++)
                                if (s->src[k].used)
                                        memmove(s->src[k].buf + kept * s->src[k].cols,
                                                s->src[k].buf + i * s->src[k].cols,
                                                s->src[k].cols * sizeof(double));
                s->samples[kept++] = r0 + i;
        }
        if (s->labels >= 0 && s->src[s->labels].used)
                for (size_t i = 0; i < kept; i++)
                        s->label_buf[i] = (int64_t) s->src[s->labels].buf[i];
        s->rows = kept;
        s->next = r0 + m;
        return 1;
}

void kdl_stream_rewind(kdl_stream *s)
{
        s->next = 0;
        s->rows = 0;
        s->skipped = 0;
}

size_t kdl_stream_rows(const kdl_stream *s)
{
        return s->rows;
}

const size_t *kdl_stream_samples(const kdl_stream *s)
{
        return s->samples;
}

void kdl_stream_use(kdl_stream *s, const bool *use)
{
        for (size_t k = 0; k < s->nsrc; k++)
                s->src[k].used = !use || use[k];
}

size_t kdl_stream_count(const kdl_stream *s)
{
        return s->nsrc;
}

uint64_t kdl_stream_values_read(const kdl_stream *s)
{
        return s->values;
}

kdl_tensor kdl_stream_block(const kdl_stream *s, int index)
{
        assert(index >= 0 && (size_t) index < s->nsrc && s->src[index].used);
        return kdl_tensor_wrap(s->src[index].buf, 2, (size_t[]){s->rows, s->src[index].cols});
}

size_t kdl_stream_cols(const kdl_stream *s, int index)
{
        assert(index >= 0 && (size_t) index < s->nsrc);
        return s->src[index].cols;
}

const int64_t *kdl_stream_labels(const kdl_stream *s)
{
        assert(s->labels >= 0 && s->src[s->labels].used);
        return s->label_buf;
}

size_t kdl_stream_skipped(const kdl_stream *s)
{
        return s->skipped;
}

size_t kdl_stream_n(const kdl_stream *s)
{
        return s->n;
}
