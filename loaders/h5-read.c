/* SPDX-License-Identifier: MIT */
/*
 * Reading data: the row-block reader with its spatial rules, and whole
 * small datasets (labels, ids).
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "metrics/base/alloc.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

static const char *const spatial_names[KDL_SPATIAL_COUNT_] = {"avg", "max", "flatten"};

const char *kdl_spatial_name(enum kdl_spatial rule)
{
        assert(rule < KDL_SPATIAL_COUNT_);
        return spatial_names[rule];
}

int kdl_spatial_parse(const char *s, enum kdl_spatial *ret)
{
        for (int k = 0; k < KDL_SPATIAL_COUNT_; k++)
                if (strcmp(s, spatial_names[k]) == 0) {
                        *ret = (enum kdl_spatial) k;
                        return 0;
                }
        return kdl_error(-KDL_EUSAGE, "unknown spatial rule '%s': expected avg, max or flatten", s);
}

size_t kdl_dsinfo_width(const kdl_dsinfo *ds, enum kdl_spatial rule)
{
        size_t w = 1;

        if (ds->ndim <= 1)
                return ds->ndim == 1 ? 1 : 0;
        if (ds->ndim == 2 || rule == KDL_SPATIAL_FLATTEN) {
                for (size_t k = 1; k < ds->ndim && k < KDL_MAX_DIMS; k++)
                        w *= ds->shape[k];
                return w;
        }
        /* [N, Ch, H, W] → Ch; [N, T, D] → D */
        return ds->ndim == 4 ? ds->shape[1] : ds->shape[2];
}

/*
 * A dataset opened for reading its stored values, converted by kdlens:
 * chunks by kdl__h5_chunks, contiguous and compact data by H5Dread() in
 * the stored type.
 */
struct source {
        kdl_h5file *f;
        const char *path;
        hid_t did, fspace, ftype;
        struct kdl__h5_num t;
        kdl__h5_chunks *chunks; /* NULL: read with H5Dread() */
};

static void source_close(struct source *s)
{
        kdl__h5_chunks_close(s->chunks);
        if (s->ftype >= 0)
                H5Tclose(s->ftype);
        if (s->fspace >= 0)
                H5Sclose(s->fspace);
        if (s->did >= 0)
                H5Dclose(s->did);
        *s = (struct source){.did = -1, .fspace = -1, .ftype = -1};
}

/* Whether the file's dataspace of @s is the catalogue's shape of @ds. */
static bool same_extent(const struct source *s, const kdl_dsinfo *ds)
{
        hsize_t dims[H5S_MAX_RANK];
        int rank = H5Sget_simple_extent_dims(s->fspace, dims, NULL);

        if (rank < 0 || (size_t) rank != ds->ndim)
                return false;
        for (size_t k = 0; k < ds->ndim; k++)
                if (dims[k] != ds->shape[k])
                        return false;
        return true;
}

/* Contiguous or compact data that exists: never read fill values for a
 * declared size nothing was written to. */
static int check_plain(const struct source *s)
{
        hid_t dcpl = H5Dget_create_plist(s->did);
        H5D_layout_t layout = dcpl < 0 ? H5D_LAYOUT_ERROR : H5Pget_layout(dcpl);
        H5D_space_status_t st = H5D_SPACE_STATUS_ERROR;

        if (dcpl >= 0)
                H5Pclose(dcpl);
        if (layout == H5D_COMPACT)
                return 0;
        if (layout != H5D_CONTIGUOUS)
                return kdl_error(-KDL_EHDF5,
                                 "'%s': %s: expected a contiguous, compact or chunked dataset, "
                                 "found another layout",
                                 s->f->dump.path, s->path);
        if (H5Dget_space_status(s->did, &st) < 0 || st != H5D_SPACE_STATUS_ALLOCATED)
                return kdl_error(-KDL_EHDF5, "'%s': %s: declared but not written (no storage)",
                                 s->f->dump.path, s->path);
        return 0;
}

static int source_open(kdl_h5file *f, const kdl_dsinfo *ds, const struct kdl__h5_read_opts *o,
                       struct source *ret)
{
        struct source s = {.f = f, .path = ds->path, .fspace = -1, .ftype = -1};
        hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
        char buf[256];
        int err = 0;

        /* Chunks never go through HDF5's chunk cache: no room for it. */
        H5Pset_chunk_cache(dapl, H5D_CHUNK_CACHE_NSLOTS_DEFAULT, 0, H5D_CHUNK_CACHE_W0_DEFAULT);
        s.did = H5Dopen2(f->fid, ds->path, dapl);
        H5Pclose(dapl);
        if (s.did < 0)
                return kdl_error(-KDL_EHDF5, "'%s': %s: cannot open: %s", f->dump.path, ds->path,
                                 kdl__h5_last_error(buf));
        s.fspace = H5Dget_space(s.did);
        s.ftype = H5Dget_type(s.did);
        if (s.fspace < 0 || s.ftype < 0)
                err = kdl_error(-KDL_EHDF5, "'%s': %s: cannot read the shape and type: %s",
                                f->dump.path, ds->path, kdl__h5_last_error(buf));
        else if (!same_extent(&s, ds))
                err = kdl_error(-KDL_ESHAPE, "'%s': %s: the file's shape is not the catalogue's",
                                f->dump.path, ds->path);
        else if (!kdl__h5_num_of(s.ftype, &s.t))
                err = kdl_error(-KDL_ESHAPE,
                                "'%s': %s: expected IEEE float16, float32, float64 or 8- to "
                                "64-bit integers, found %s of another bit layout",
                                f->dump.path, ds->path, ds->dtype);
        else
                err = kdl__h5_chunks_open(f->dump.path, ds->path, f->fid, s.did, &s.t, o,
                                          &s.chunks);
        if (err == 0)
                err = check_plain(&s);
        if (err < 0) {
                source_close(&s);
                return err;
        }
        *ret = s;
        return 0;
}

/* The box @start/@count of @s into @out (row-major of shape @count), converted @to. */
static int source_read(struct source *s, const size_t *start, const size_t *count,
                       enum kdl__h5_to to, void *out)
{
        hsize_t hstart[KDL_MAX_DIMS], hcount[KDL_MAX_DIMS];
        int ndim = H5Sget_simple_extent_ndims(s->fspace);
        size_t n = 1;
        hid_t mspace;
        herr_t st;
        char buf[256];

        if (s->chunks)
                return kdl__h5_chunks_read(s->chunks, start, count, to, out);
        for (int k = 0; k < ndim; k++) {
                hstart[k] = start[k];
                hcount[k] = count[k];
                n *= count[k];
        }
        if (H5Sselect_hyperslab(s->fspace, H5S_SELECT_SET, hstart, NULL, hcount, NULL) < 0)
                return kdl_error(-KDL_EHDF5, "'%s': %s: cannot select rows %zu..%zu",
                                 s->f->dump.path, s->path, start[0], start[0] + count[0]);
        /* The memory space takes the selection's own shape: with a 1-D one,
         * HDF5 1.10 maps element by element (H5S_select_iterate), and
         * reading 1 GiB of float32 took seconds of CPU instead of a fraction.
         * The values arrive as stored, in the tail of @out; kdlens converts. */
        mspace = H5Screate_simple(ndim, hcount, NULL);
        st = H5Dread(s->did, s->ftype, mspace, s->fspace, H5P_DEFAULT,
                     (unsigned char *) out + n * (8 - s->t.size));
        H5Sclose(mspace);
        if (st < 0)
                return kdl_error(-KDL_EHDF5, "'%s': %s: cannot read rows %zu..%zu: %s",
                                 s->f->dump.path, s->path, start[0], start[0] + count[0],
                                 kdl__h5_last_error(buf));
        kdl__h5_convert_tail(&s->t, to, out, n);
        return 0;
}

int kdl__h5_read_int64(kdl_h5file *f, const kdl_dsinfo *ds, int64_t **ret)
{
        struct kdl__h5_read_opts o;
        struct source s;
        size_t start = 0;
        int64_t *v;
        int err;

        if (ds->ndim != 1 || !ds->is_integer)
                return kdl_error(-KDL_ESCHEMA, "'%s': %s: expected 1-D integers, found %zu-D %s",
                                 f->dump.path, ds->path, ds->ndim, ds->dtype);
        v = kdl_new(int64_t, ds->shape[0]);
        if (!v)
                return kdl__h5_nomem(f->dump.path, ds->path);
        kdl__h5_read_opts_init(&o);
        err = source_open(f, ds, &o, &s);
        if (err == 0) {
                if (s.t.is_float)
                        err = kdl_error(-KDL_ESCHEMA, "'%s': %s: expected integers, found %s",
                                        f->dump.path, ds->path, ds->dtype);
                else
                        err = source_read(&s, &start, ds->shape, KDL__H5_TO_INT64, v);
                source_close(&s);
        }
        if (err < 0) {
                free(v);
                return err;
        }
        *ret = v;
        return 0;
}

int kdl_h5_read_labels(kdl_h5file *f, int64_t **ret)
{
        if (!f->dump.labels)
                return kdl_error(-KDL_EMISSING,
                                 "'%s': /labels: expected integer class labels "
                                 "[N], found none",
                                 f->dump.path);
        return kdl__h5_read_int64(f, f->dump.labels, ret);
}

int kdl_h5_read_sample_ids(kdl_h5file *f, int64_t **ret)
{
        if (!f->dump.sample_ids)
                return kdl_error(-KDL_EMISSING,
                                 "'%s': /sample_ids: expected int64 ids [N], found none",
                                 f->dump.path);
        return kdl__h5_read_int64(f, f->dump.sample_ids, ret);
}

/* The error of a dataset that is not the [@rows, @cols] matrix expected (0: any). */
static int matrix_error(const kdl_h5file *f, const kdl_dsinfo *ds, size_t rows, size_t cols)
{
        static const char *const at_least[2][2] = {{" with C, D >= 1", " with C >= 1"},
                                                   {" with D >= 1", ""}};
        char r[24] = "C", c[24] = "D", s[160];

        if (rows)
                snprintf(r, sizeof(r), "%zu", rows);
        if (cols)
                snprintf(c, sizeof(c), "%zu", cols);
        kdl__h5_shape_text(ds, s, sizeof(s));
        return kdl_error(-KDL_ESCHEMA, "'%s': %s: expected [%s, %s]%s, found %s %s", f->dump.path,
                         ds->path, r, c, at_least[rows != 0][cols != 0], s, ds->dtype);
}

int kdl_h5_read_matrix(kdl_h5file *f, const kdl_dsinfo *ds, size_t rows, size_t cols,
                       kdl_tensor **ret)
{
        kdl_h5reader *r = NULL;
        kdl_tensor *t = NULL;
        int err;

        assert(f && ds && ret);
        if (ds->ndim != 2 || ds->shape[0] == 0 || ds->shape[1] == 0 ||
            (rows && ds->shape[0] != rows) || (cols && ds->shape[1] != cols))
                return matrix_error(f, ds, rows, cols);
        err = kdl_h5_reader_open(f, ds, KDL_SPATIAL_AVG, &r);
        if (err < 0)
                return err;
        err = kdl_tensor_new2(ds->shape[0], ds->shape[1], &t);
        if (err == -ENOMEM)
                err = kdl__h5_nomem(f->dump.path, ds->path);
        if (err == 0)
                err = kdl_h5_reader_read(r, 0, ds->shape[0], t->data);
        kdl_h5_reader_close(r);
        if (err < 0) {
                kdl_tensor_free(t);
                return err;
        }
        *ret = t;
        return 0;
}

struct kdl_h5reader {
        kdl_h5file *f;
        const kdl_dsinfo *ds;
        struct source src;
        size_t stored_rows; /* rows in the file */
        size_t rows;        /* logical rows */
        size_t inner;       /* stored elements per row */
        size_t cols;        /* after the rule */
        size_t groups;      /* reduction: output columns */
        size_t glen;        /* reduction: elements reduced into one column */
        ptrdiff_t gstep;    /* reduction: stride between reduced elements */
        ptrdiff_t gnext;    /* reduction: offset between consecutive groups */
        bool reduce;
        enum kdl_spatial rule;
        const size_t *map;
        bool allow_nonfinite;
        double *raw;
        size_t raw_rows;
        size_t *order;
        size_t order_cap;
};

int kdl__h5_reader_open_opts(kdl_h5file *f, const kdl_dsinfo *ds, enum kdl_spatial rule,
                             const struct kdl__h5_read_opts *o, kdl_h5reader **ret)
{
        struct kdl__h5_read_opts defaults;
        kdl_h5reader *r;
        int err;

        assert(f && ds && ret && rule < KDL_SPATIAL_COUNT_);
        if (ds->ndim < 1 || ds->ndim > KDL_MAX_DIMS || !(ds->is_float || ds->is_integer))
                return kdl_error(-KDL_ESHAPE,
                                 "'%s': %s: expected numeric data of rank 1 to 4, "
                                 "found %zu-D %s",
                                 f->dump.path, ds->path, ds->ndim, ds->dtype);
        if (!o) {
                kdl__h5_read_opts_init(&defaults);
                o = &defaults;
        }
        r = kdl_new(kdl_h5reader, 1);
        if (!r)
                return kdl__h5_nomem(f->dump.path, ds->path);
        r->f = f;
        r->ds = ds;
        r->rule = rule;
        r->stored_rows = r->rows = ds->shape[0];
        r->inner = 1;
        for (size_t k = 1; k < ds->ndim; k++)
                r->inner *= ds->shape[k]; /* no overflow: checked by kdl__h5_describe() */
        r->cols = r->inner;
        if (ds->ndim >= 3 && rule != KDL_SPATIAL_FLATTEN) {
                r->reduce = true;
                if (ds->ndim == 4) { /* [N, Ch, H, W]: reduce the contiguous H*W of each Ch */
                        r->groups = ds->shape[1];
                        r->glen = ds->shape[2] * ds->shape[3];
                        r->gstep = 1;
                        r->gnext = (ptrdiff_t) r->glen;
                } else { /* [N, T, D]: reduce over T, stride D */
                        r->groups = ds->shape[2];
                        r->glen = ds->shape[1];
                        r->gstep = (ptrdiff_t) ds->shape[2];
                        r->gnext = 1;
                }
                r->cols = r->groups;
        }
        err = source_open(f, ds, o, &r->src);
        if (err < 0) {
                free(r);
                return err;
        }
        *ret = r;
        return 0;
}

int kdl_h5_reader_open(kdl_h5file *f, const kdl_dsinfo *ds, enum kdl_spatial rule,
                       kdl_h5reader **ret)
{
        return kdl__h5_reader_open_opts(f, ds, rule, NULL, ret);
}

void kdl_h5_reader_close(kdl_h5reader *r)
{
        if (!r)
                return;
        source_close(&r->src);
        free(r->raw);
        free(r->order);
        free(r);
}

size_t kdl_h5_reader_rows(const kdl_h5reader *r)
{
        return r->rows;
}

size_t kdl_h5_reader_cols(const kdl_h5reader *r)
{
        return r->cols;
}

void kdl_h5_reader_set_rows(kdl_h5reader *r, const size_t *rows, size_t n)
{
        r->map = rows;
        r->rows = rows ? n : r->stored_rows;
}

void kdl_h5_reader_allow_nonfinite(kdl_h5reader *r, bool allow)
{
        r->allow_nonfinite = allow;
}

/* Stored rows [a, b) into @dst (b - a rows of r->inner doubles). */
static int read_stored(kdl_h5reader *r, size_t a, size_t b, double *dst)
{
        size_t start[KDL_MAX_DIMS] = {a}, count[KDL_MAX_DIMS] = {b - a};

        for (size_t k = 1; k < r->ds->ndim; k++)
                count[k] = r->ds->shape[k];
        return source_read(&r->src, start, count, KDL__H5_TO_DOUBLE, dst);
}

int kdl__h5_reader_read_box(kdl_h5reader *r, const size_t *start, const size_t *count, double *out)
{
        for (size_t k = 0; k < r->ds->ndim; k++)
                assert(count[k] > 0 && start[k] + count[k] <= r->ds->shape[k]);
        return source_read(&r->src, start, count, KDL__H5_TO_DOUBLE, out);
}

static int cmp_size(const void *a, const void *b)
{
        size_t x = *(const size_t *) a, y = *(const size_t *) b;

        return x < y ? -1 : x > y;
}

static void reduce_row(const kdl_h5reader *r, const double *src, double *dst)
{
        for (size_t g = 0; g < r->groups; g++) {
                const double *p = src + (ptrdiff_t) g * r->gnext;
                double acc = r->rule == KDL_SPATIAL_MAX ? -HUGE_VAL : 0.0;

                for (size_t e = 0; e < r->glen; e++) {
                        double v = p[(ptrdiff_t) e * r->gstep];

                        if (r->rule == KDL_SPATIAL_MAX)
                                acc = v > acc || isnan(v) ? v : acc;
                        else
                                acc += v;
                }
                dst[g] = r->rule == KDL_SPATIAL_MAX ? acc : acc / (double) r->glen;
        }
}

const char *kdl__h5_nonfinite_kind(const double *row, size_t n)
{
        for (size_t e = 0; e < n; e++)
                if (isnan(row[e]))
                        return "NaN";
        return "Inf";
}

static int nonfinite_error(const kdl_h5reader *r, const double *row, size_t stored_row)
{
        return kdl_error(-KDL_ENONFINITE,
                         "'%s': %s: expected finite values, found %s at sample "
                         "%zu",
                         r->f->dump.path, r->ds->path, kdl__h5_nonfinite_kind(row, r->inner),
                         stored_row);
}

bool kdl__h5_row_finite(const double *row, size_t n)
{
        double acc = 0.0;

        /* One multiply-add per value: NaN/Inf propagate into the sum (no fast-math). */
        for (size_t e = 0; e < n; e++)
                acc += row[e] * 0.0;
        return !isnan(acc);
}

/* Room for @m raw rows (and, with a row map, @m sort pairs). */
static int grow_scratch(kdl_h5reader *r, size_t m)
{
        if (m > r->raw_rows) {
                double *raw = kdl__malloc(m, r->inner * sizeof(double));

                if (!raw)
                        return kdl__h5_nomem(r->f->dump.path, r->ds->path);
                free(r->raw);
                r->raw = raw;
                r->raw_rows = m;
        }
        if (r->map && 2 * m > r->order_cap) {
                size_t *o = kdl_new(size_t, 2 * m);

                if (!o)
                        return kdl__h5_nomem(r->f->dump.path, r->ds->path);
                free(r->order);
                r->order = o;
                r->order_cap = 2 * m;
        }
        return 0;
}

/*
 * Logical rows [@r0, @r0 + @m) into r->raw in stored order, r->order their
 * (stored row, logical row) pairs.  Sort the pairs, read runs of consecutive
 * stored rows, then scatter: few reads when the map is nearly in order.
 */
static int read_mapped(kdl_h5reader *r, size_t r0, size_t m)
{
        int err;

        for (size_t i = 0; i < m; i++) {
                r->order[2 * i] = r->map[r0 + i];
                r->order[2 * i + 1] = i;
        }
        qsort(r->order, m, 2 * sizeof(size_t), cmp_size);
        for (size_t i = 0; i < m;) {
                size_t j = i + 1;

                while (j < m && r->order[2 * j] == r->order[2 * (j - 1)] + 1)
                        j++;
                err = read_stored(r, r->order[2 * i], r->order[2 * i] + (j - i),
                                  r->raw + i * r->inner);
                if (err < 0)
                        return err;
                i = j;
        }
        return 0;
}

int kdl_h5_reader_read(kdl_h5reader *r, size_t r0, size_t r1, double *out)
{
        size_t m = r1 - r0;
        double *src;
        size_t *stored = NULL; /* stored row of each raw row, for messages */
        int err;

        assert(r0 <= r1 && r1 <= r->rows && out);
        if (m == 0)
                return 0;

        if (!r->map && !r->reduce) {
                /* The common case: straight into the caller's block. */
                err = read_stored(r, r0, r1, out);
                if (err < 0)
                        return err;
                if (!r->allow_nonfinite)
                        for (size_t i = 0; i < m; i++)
                                if (!kdl__h5_row_finite(out + i * r->inner, r->inner))
                                        return nonfinite_error(r, out + i * r->inner, r0 + i);
                return 0;
        }

        err = grow_scratch(r, m);
        if (err < 0)
                return err;
        if (r->map) {
                err = read_mapped(r, r0, m);
                stored = r->order;
        } else {
                err = read_stored(r, r0, r1, r->raw);
        }
        if (err < 0)
                return err;
        for (size_t k = 0; k < m; k++) {
                size_t dest = stored ? stored[2 * k + 1] : k;

                src = r->raw + k * r->inner;
                if (!r->allow_nonfinite && !kdl__h5_row_finite(src, r->inner))
                        return nonfinite_error(r, src, stored ? stored[2 * k] : r0 + k);
                if (r->reduce)
                        reduce_row(r, src, out + dest * r->cols);
                else
                        memcpy(out + dest * r->cols, src, r->inner * sizeof(double));
        }
        return 0;
}
