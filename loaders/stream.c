/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/budget.h"
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
        /* The pairing check: the teacher's and the student's labels (in that
         * order), read beside the datasets until a whole pass has compared
         * them; NULL readers when there is no pair or a dump has no labels. */
        kdl_h5reader *check[2];
        double *check_buf[2];
        bool checked;
        unsigned part, nparts; /* kdl_stream_part(); nparts 0: the whole */
        size_t lo, hi;         /* this part's logical rows, set with the block size */
};

/* ---- what a stream will hold ------------------------------------------------------ */

/* What the chunk cache kdl_h5_reader_open() gives chunked @ds holds at most:
 * two row bands of chunks of the stored type, within [1 MiB, 64 MiB], and
 * never more than the whole dataset.  NEEDSWORK: the same rule as
 * h5-read.c's cache_bytes(); take it from there once it is exported. */
static size_t chunk_cache(const kdl_dsinfo *ds)
{
        const char *digits = ds->dtype + strcspn(ds->dtype, "0123456789");
        size_t elem = *digits ? (size_t) atoi(digits) / 8 : 8, band = 2 * ds->chunk[0], all;

        if (!ds->chunked)
                return 0;
        all = ds->ndim ? ds->shape[0] : 1;
        for (size_t k = 1; k < ds->ndim; k++) {
                band = kdl_sat_mul(band, ds->shape[k]);
                all = kdl_sat_mul(all, ds->shape[k]);
        }
        band = kdl_sat_mul(band, elem ? elem : 1);
        all = kdl_sat_mul(all, elem ? elem : 1);
        band = band < ((size_t) 1 << 20) ? (size_t) 1 << 20 : band > (64u << 20) ? 64u << 20 : band;
        return band < all ? band : all;
}

/* Bytes per block row of @ds read with @rule, through a row map when @mapped:
 * its block row, and the reader's scratch row of every stored value (with
 * the sort pair of the row map) when it reduces or maps. */
static size_t row_cost(const kdl_dsinfo *ds, enum kdl_spatial rule, bool mapped)
{
        size_t inner = 1, cols = ds->ndim <= 1 ? 1 : kdl_dsinfo_width(ds, rule);
        bool reduce = ds->ndim >= 3 && rule != KDL_SPATIAL_FLATTEN;

        for (size_t k = 1; k < ds->ndim; k++)
                inner = kdl_sat_mul(inner, ds->shape[k]);
        return kdl_sat_add(kdl_sat_mul(cols, sizeof(double)),
                           (reduce || mapped ? kdl_sat_mul(inner, sizeof(double)) : 0) +
                                   (mapped ? 2 * sizeof(size_t) : 0));
}

static bool mapped(const kdl_pair *p, bool student)
{
        return p && (student ? p->student_rows : p->teacher_rows);
}

/* The pairing check runs: a pair whose two dumps both have labels. */
static bool pair_checked(const kdl_pair *p)
{
        return p && p->teacher && p->student && kdl_h5_dump(p->teacher)->labels &&
               kdl_h5_dump(p->student)->labels;
}

void kdl_stream_cost_init(struct kdl_stream_cost *c, const kdl_pair *pair)
{
        *c = (struct kdl_stream_cost){.pair = pair,
                                      /* the samples and the labels of a block */
                                      .row_bytes = sizeof(size_t) + sizeof(int64_t)};
        if (pair_checked(pair))
                for (int k = 0; k < 2; k++) {
                        const kdl_dsinfo *l =
                                kdl_h5_dump(k ? pair->student : pair->teacher)->labels;

                        c->row_bytes += sizeof(double) +
                                        row_cost(l, KDL_SPATIAL_FLATTEN, mapped(pair, k == 1));
                        c->fixed_bytes = kdl_sat_add(c->fixed_bytes, chunk_cache(l));
                }
}

void kdl_stream_cost_add(struct kdl_stream_cost *c, const kdl_dsinfo *ds, enum kdl_spatial rule,
                         bool student)
{
        c->row_bytes = kdl_sat_add(c->row_bytes, row_cost(ds, rule, mapped(c->pair, student)));
        c->fixed_bytes = kdl_sat_add(c->fixed_bytes, chunk_cache(ds));
}

size_t kdl_stream_cost_rows(const struct kdl_stream_cost *c, size_t n,
                            const struct kdl_stream_opts *o)
{
        size_t budget = o && o->budget_bytes ? o->budget_bytes : KDL_STREAM_BUDGET_DEFAULT;
        size_t rows =
                o && o->block_rows ? o->block_rows : budget / (c->row_bytes ? c->row_bytes : 1);

        if (rows == 0)
                rows = 1;
        return rows > n ? (n ? n : 1) : rows;
}

size_t kdl_stream_cost_bytes(const struct kdl_stream_cost *c, size_t n,
                             const struct kdl_stream_opts *o)
{
        size_t b = kdl_sat_mul(kdl_stream_cost_rows(c, n, o), c->row_bytes);

        if (o && o->skip_nonfinite)
                b = kdl_sat_add(b, n / 8 + 1);
        return kdl_sat_add(b, c->fixed_bytes);
}

/* ---- the stream ---------------------------------------------------------------------- */

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
        for (int k = 0; k < 2; k++) {
                kdl_h5_reader_close(s->check[k]);
                free(s->check_buf[k]);
        }
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
        /* A rule only changes how a dataset of 3 or more dimensions is read: the logits
         * [N, C] that one analysis reads flattened and another averaged are one dataset. */
        if (ds->ndim < 3)
                rule = KDL_SPATIAL_FLATTEN;
        for (size_t k = 0; k < s->nsrc; k++)
                if (s->src[k].f == f && s->src[k].ds == ds && s->src[k].rule == rule &&
                    s->src[k].student == (student && s->pair))
                        return (int) k;
        err = kdl_h5_reader_open(f, ds, rule, &r);
        if (err < 0)
                return err;
        if (student && s->pair && s->pair->student_rows)
                kdl_h5_reader_set_rows(r, s->pair->student_rows, s->pair->n);
        if (!student && s->pair && s->pair->teacher_rows)
                kdl_h5_reader_set_rows(r, s->pair->teacher_rows, s->pair->n);
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

/* A reader of @f's /labels in the pair's logical order (@rows: the row map or NULL). */
static int open_labels(kdl_stream *s, kdl_h5file *f, const size_t *rows, kdl_h5reader **ret)
{
        const kdl_dump *d = kdl_h5_dump(f);
        int err = kdl_h5_reader_open(f, d->labels, KDL_SPATIAL_FLATTEN, ret);

        if (err < 0)
                return err; /* *ret stays NULL */
        if (rows)
                kdl_h5_reader_set_rows(*ret, rows, s->pair->n);
        if (kdl_h5_reader_rows(*ret) != s->n || kdl_h5_reader_cols(*ret) != 1)
                return kdl_error(-KDL_EMISMATCH, "'%s': %s: expected %zu labels, found %zu",
                                 d->path, d->labels->path, s->n,
                                 kdl_h5_reader_rows(*ret) * kdl_h5_reader_cols(*ret));
        return 0;
}

/* The readers of the pairing check, when both dumps of the pair have labels. */
static int check_open(kdl_stream *s)
{
        const kdl_pair *p = s->pair;
        int err;

        if (!pair_checked(p) || s->check[0])
                return 0;
        err = open_labels(s, p->teacher, p->teacher_rows, &s->check[0]);
        err = err ?: open_labels(s, p->student, p->student_rows, &s->check[1]);
        if (err < 0)
                for (int k = 0; k < 2; k++) {
                        kdl_h5_reader_close(s->check[k]);
                        s->check[k] = NULL;
                }
        return err;
}

/* The blocks, as many rows as the budget holds (struct kdl_stream_cost). */
static int allocate(kdl_stream *s)
{
        struct kdl_stream_cost c;
        int err = check_open(s);

        if (err < 0)
                return err;
        kdl_stream_cost_init(&c, s->pair);
        for (size_t k = 0; k < s->nsrc; k++)
                kdl_stream_cost_add(&c, s->src[k].ds, s->src[k].rule, s->src[k].student);
        s->block = kdl_stream_cost_rows(&c, s->n, &s->o);
        s->hi = s->n;
        if (s->nparts > 1) {
                size_t nb = (s->n + s->block - 1) / s->block;

                s->lo = s->block * (nb * s->part / s->nparts);
                s->hi = s->block * (nb * (s->part + 1) / s->nparts);
                s->hi = s->hi < s->n ? s->hi : s->n;
                s->next = s->lo;
        }
        for (size_t k = 0; k < s->nsrc; k++) {
                s->src[k].buf = kdl__malloc(s->block, s->src[k].cols * sizeof(double));
                if (!s->src[k].buf)
                        return kdl__h5_nomem(kdl_h5_dump(s->src[k].f)->path, s->src[k].ds->path);
        }
        for (int k = 0; k < 2 && s->check[k]; k++) {
                s->check_buf[k] = kdl_new(double, s->block);
                if (!s->check_buf[k])
                        return kdl__h5_nomem(
                                kdl_h5_dump(k ? s->pair->student : s->pair->teacher)->path,
                                "/labels");
        }
        s->label_buf = kdl_new(int64_t, s->block);
        s->samples = kdl_new(size_t, s->block);
        if (!s->label_buf || !s->samples)
                return -ENOMEM;
        if (s->o.skip_nonfinite && !(s->dropped = kdl_new(uint8_t, s->n / 8 + 1)))
                return -ENOMEM;
        return 0;
}

/* The error for logical row @i, whose labels @yt (teacher) and @ys (student) differ. */
static int label_mismatch(const kdl_stream *s, size_t i, long long yt, long long ys)
{
        const kdl_pair *p = s->pair;
        const kdl_dump *dt = kdl_h5_dump(p->teacher), *ds = kdl_h5_dump(p->student);
        size_t rt = p->teacher_rows ? p->teacher_rows[i] : i;
        size_t rs = p->student_rows ? p->student_rows[i] : i;
        int64_t *ids = NULL;
        int err;

        if (!p->joined)
                return kdl_error(-KDL_EMISMATCH,
                                 "'%s': /labels: row %zu has label %lld where the teacher '%s' has "
                                 "%lld: the rows are not the teacher's samples in the teacher's "
                                 "order (write /sample_ids in both dumps to pair them by id)",
                                 ds->path, rs, ys, dt->path, yt);
        /* Only now, on the way out, read the ids to name the sample. */
        if (kdl__h5_read_int64(p->teacher, dt->sample_ids, &ids) < 0)
                ids = NULL;
        if (ids)
                err = kdl_error(-KDL_EMISMATCH,
                                "'%s': /labels: row %zu (sample id %lld) has label %lld where the "
                                "teacher '%s' has %lld (row %zu) for that id",
                                ds->path, rs, (long long) ids[rt], ys, dt->path, yt, rt);
        else
                err = kdl_error(-KDL_EMISMATCH,
                                "'%s': /labels: row %zu has label %lld where the teacher '%s' has "
                                "%lld (row %zu) for the same sample id",
                                ds->path, rs, ys, dt->path, yt, rt);
        free(ids);
        return err;
}

/* Compare the labels of logical rows [@r0, @r0 + @m): the first that differ is an error. */
static int check_block(kdl_stream *s, size_t r0, size_t m)
{
        int err;

        for (int k = 0; k < 2; k++) {
                err = kdl_h5_reader_read(s->check[k], r0, r0 + m, s->check_buf[k]);
                if (err < 0)
                        return err;
        }
        s->values += 2 * (uint64_t) m;
        for (size_t i = 0; i < m; i++) {
                long long yt = (long long) s->check_buf[0][i], ys = (long long) s->check_buf[1][i];

                if (yt != ys)
                        return label_mismatch(s, r0 + i, yt, ys);
        }
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
        size_t r0, m, kept = 0;
        int err;

        if (!s->block && (err = allocate(s)) < 0)
                return err;
        r0 = s->next; /* allocate() places a part's start */
        if (r0 >= s->hi) {
                s->rows = 0;
                s->checked = true;
                return 0;
        }
        m = r0 + s->block <= s->hi ? s->block : s->hi - r0;
        if (s->check[0] && !s->checked && (err = check_block(s, r0, m)) < 0)
                return err;
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

void kdl_stream_part(kdl_stream *s, unsigned part, unsigned nparts)
{
        assert(!s->block && part < nparts);
        s->part = part;
        s->nparts = nparts;
}

void kdl_stream_rewind(kdl_stream *s)
{
        s->next = s->lo;
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
