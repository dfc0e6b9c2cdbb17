/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hdf5.h>
#include <libdeflate.h>

#include "tests/lib/kdl-test.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"

/*
 * Chunked reading and conversion by kdlens (loaders/h5-chunk.c,
 * h5-convert.c): hostile chunks written here with H5Dwrite_chunk() and
 * streams made with libdeflate's zlib-format compressor, round trips
 * checked against HDF5's own H5Dread() (its filters and conversion), and
 * every float16 against numpy ($KDL_PYTHON).
 */

static const char *dir; /* made by setup(), removed by teardown() */

static char *tmp_path(const char *name)
{
        char *p = NULL;

        assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
        return p;
}

/* binary16 as h5py makes it, in byte order @order. */
static hid_t half_type(H5T_order_t order)
{
        hid_t t = H5Tcopy(H5T_IEEE_F32LE);

        assert_true(H5Tset_fields(t, 15, 10, 5, 0, 10) >= 0);
        assert_true(H5Tset_size(t, 2) >= 0);
        assert_true(H5Tset_ebias(t, 15) >= 0);
        assert_true(H5Tset_order(t, order) >= 0);
        return t;
}

enum { SHUFFLE = 1u, DEFLATE = 2u, FLETCHER = 4u, NBIT = 8u, LATE = 16u };

/* Dataset @name of @fid: @chunk NULL for contiguous; filters in h5py's order. */
static hid_t make_ds(hid_t fid, const char *name, hid_t type, int ndim, const hsize_t *dims,
                     const hsize_t *chunk, unsigned filters)
{
        hid_t space = H5Screate_simple(ndim, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
        hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), did;

        H5Pset_create_intermediate_group(lcpl, 1);
        if (chunk)
                assert_true(H5Pset_chunk(dcpl, ndim, chunk) >= 0);
        if (filters & SHUFFLE)
                assert_true(H5Pset_shuffle(dcpl) >= 0);
        if (filters & DEFLATE)
                assert_true(H5Pset_deflate(dcpl, 4) >= 0);
        if (filters & FLETCHER)
                assert_true(H5Pset_fletcher32(dcpl) >= 0);
        if (filters & NBIT)
                assert_true(H5Pset_nbit(dcpl) >= 0);
        if (filters & LATE)
                assert_true(H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_LATE) >= 0);
        did = H5Dcreate2(fid, name, type, space, lcpl, dcpl, H5P_DEFAULT);
        assert_true(did >= 0);
        H5Pclose(lcpl);
        H5Pclose(dcpl);
        H5Sclose(space);
        return did;
}

/* Write @buf (memory type @mtype) into the first @rows rows of @did, all of it when 0. */
static hid_t fill(hid_t did, hid_t mtype, hsize_t rows, const void *buf)
{
        hid_t fs = H5Dget_space(did), ms = H5S_ALL;
        hsize_t dims[H5S_MAX_RANK], start[H5S_MAX_RANK] = {0};
        int ndim = H5Sget_simple_extent_dims(fs, dims, NULL);

        if (rows) {
                dims[0] = rows;
                H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, dims, NULL);
                ms = H5Screate_simple(ndim, dims, NULL);
        }
        assert_true(H5Dwrite(did, mtype, ms, rows ? fs : H5S_ALL, H5P_DEFAULT, buf) >= 0);
        if (rows)
                H5Sclose(ms);
        H5Sclose(fs);
        return did;
}

static hid_t create_file(const char *path)
{
        hid_t fid = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);

        assert_true(fid >= 0);
        return fid;
}

/* @n bytes of @in as a zlib stream of @level; caller frees. */
static void *zlib(const void *in, size_t n, int level, size_t *ret_len)
{
        struct libdeflate_compressor *c = libdeflate_alloc_compressor(level);
        size_t cap = libdeflate_zlib_compress_bound(c, n);
        void *out = malloc(cap);

        assert_non_null(out);
        *ret_len = libdeflate_zlib_compress(c, in, n, out, cap);
        assert_true(*ret_len > 0);
        libdeflate_free_compressor(c);
        return out;
}

static void write_chunk(hid_t did, unsigned mask, hsize_t r0, hsize_t c0, const void *buf,
                        size_t len)
{
        hsize_t off[2] = {r0, c0};

        assert_true(H5Dwrite_chunk(did, H5P_DEFAULT, mask, off, len, buf) >= 0);
}

/* Dataset @path of @f described by hand (these files are not dumps). */
static kdl_dsinfo dsinfo(const char *path, size_t ndim, const size_t *shape, bool is_float)
{
        kdl_dsinfo ds = {.path = (char *) path,
                         .ndim = ndim,
                         .is_float = is_float,
                         .is_integer = !is_float,
                         .dtype = is_float ? "float" : "integer"};

        memcpy(ds.shape, shape, ndim * sizeof(size_t));
        return ds;
}

static kdl_h5file *open_file(const char *path)
{
        kdl_h5file *f = NULL;

        assert_int_equal(kdl_h5_open(path, &f), 0);
        return f;
}

/* Read all of @ds in blocks of @block rows with @threads threads (however small the
 * chunks) into @out; the first error. */
static int read_blocks(kdl_h5file *f, const kdl_dsinfo *ds, enum kdl_spatial rule, unsigned threads,
                       size_t block, double *out)
{
        struct kdl__h5_read_opts o;
        kdl_h5reader *r = NULL;
        size_t cols;
        int err;

        kdl__h5_read_opts_init(&o);
        o.threads = threads;
        o.thread_work = 0;
        err = kdl__h5_reader_open_opts(f, ds, rule, &o, &r);
        if (err < 0)
                return err;
        kdl_h5_reader_allow_nonfinite(r, true);
        cols = kdl_h5_reader_cols(r);
        for (size_t r0 = 0; r0 < ds->shape[0] && err == 0; r0 += block) {
                size_t r1 = r0 + block < ds->shape[0] ? r0 + block : ds->shape[0];

                err = kdl_h5_reader_read(r, r0, r1, out + r0 * cols);
        }
        kdl_h5_reader_close(r);
        return err;
}

static void expect_error(int err, int code, const char *file, const char *needle)
{
        const char *msg = kdl_errmsg();

        if (err != code || !strstr(msg, needle) || !strstr(msg, file))
                fail_msg("expected %d with '%s' naming '%s', got %d: '%s'", code, needle, file, err,
                         msg);
}

/* ---- hostile chunks ------------------------------------------------------------ */

#define ROWS        64
#define COLS        8
#define CROWS       16
#define CHUNK_BYTES (CROWS * COLS * 4)

/* A [64, 8] float32 dataset in [16, 8] deflate chunks, rows i*8+j = i + j/8; chunk 1 replaced. */
static char *hostile_file(const char *name, const void *chunk1, size_t len, unsigned mask)
{
        char *path = tmp_path(name);
        hsize_t dims[2] = {ROWS, COLS}, chunk[2] = {CROWS, COLS};
        hid_t fid = create_file(path), did;
        float v[ROWS * COLS];

        for (size_t i = 0; i < ROWS * COLS; i++)
                v[i] = (float) (i / COLS) + (float) (i % COLS) / 8.0f;
        did = fill(make_ds(fid, "/x", H5T_IEEE_F32LE, 2, dims, chunk, DEFLATE), H5T_NATIVE_FLOAT, 0,
                   v);
        if (chunk1)
                write_chunk(did, mask, CROWS, 0, chunk1, len);
        H5Dclose(did);
        H5Fclose(fid);
        return path;
}

/* Read /x of @path with 1, then 2 threads: the same error each time. */
static void expect_read_error(const char *path, const char *needle)
{
        kdl_h5file *f = open_file(path);
        kdl_dsinfo ds = dsinfo("/x", 2, (size_t[]){ROWS, COLS}, true);
        double *out = calloc(ROWS * COLS, sizeof(double));

        for (unsigned t = 1; t <= 2; t++) {
                expect_error(read_blocks(f, &ds, KDL_SPATIAL_AVG, t, 40, out), -KDL_EHDF5, path,
                             needle);
                assert_non_null(strstr(kdl_errmsg(), "/x: chunk at [16, 0]: "));
        }
        free(out);
        kdl_h5_close(f);
}

static void test_truncated_stream(void **state)
{
        float zero[CROWS * COLS] = {0};
        size_t len;
        void *z = zlib(zero, sizeof(zero), 6, &len);
        char *path = hostile_file("truncated.h5", z, len / 2, 0);

        (void) state;
        expect_read_error(path, "corrupt or truncated");
        free(z);
        free(path);
}

/* A stream that inflates to 64 MiB for a 512-byte chunk stops at 512 bytes. */
static void test_deflate_bomb(void **state)
{
        size_t big = (size_t) 64 << 20, len;
        void *zeros = calloc(big, 1);
        void *z = zlib(zeros, big, 9, &len);
        char *path = hostile_file("bomb.h5", z, len, 0);

        (void) state;
        free(zeros);
        expect_read_error(path, "inflates to more than the 512 bytes expected");
        free(z);
        free(path);
}

static void test_short_stream(void **state)
{
        float zero[CROWS * COLS / 2] = {0};
        size_t len;
        void *z = zlib(zero, sizeof(zero), 6, &len);
        char *path = hostile_file("short.h5", z, len, 0);

        (void) state;
        expect_read_error(path, "inflates to fewer than the 512 bytes expected");
        free(z);
        free(path);
}

/* A chunk written with the deflate filter skipped (mask bit 0) is read as stored. */
static void test_filter_mask_honoured(void **state)
{
        float v[CROWS * COLS], wrong[CROWS * COLS + 1] = {0};
        double *out = calloc(ROWS * COLS, sizeof(double));
        char *path, *bad;
        kdl_h5file *f;
        kdl_dsinfo ds = dsinfo("/x", 2, (size_t[]){ROWS, COLS}, true);

        (void) state;
        for (size_t i = 0; i < CROWS * COLS; i++)
                v[i] = -(float) i;
        path = hostile_file("masked.h5", v, sizeof(v), 1);
        f = open_file(path);
        assert_int_equal(read_blocks(f, &ds, KDL_SPATIAL_AVG, 2, 5, out), 0);
        for (size_t i = 0; i < ROWS * COLS; i++) {
                double want = i / (CROWS * COLS) == 1
                                      ? -(double) (i % (CROWS * COLS))
                                      : (double) (i / COLS) + (double) (i % COLS) / 8.0;

                assert_close(out[i], want, 0.0, 0.0);
        }
        kdl_h5_close(f);
        /* Unfiltered, the stored size must be the chunk's. */
        bad = hostile_file("masked-long.h5", wrong, sizeof(wrong), 1);
        expect_read_error(bad, "stored 516 bytes, expected 512");
        free(out);
        free(path);
        free(bad);
}

static void test_stored_size_limit(void **state)
{
        unsigned char junk[3000];
        char *path;
        kdl_h5file *f;
        kdl_dsinfo ds = dsinfo("/x", 2, (size_t[]){ROWS, COLS}, true);
        struct kdl__h5_read_opts o;
        kdl_h5reader *r = NULL;
        double out[ROWS * COLS];

        (void) state;
        memset(junk, 0x5a, sizeof(junk));
        path = hostile_file("oversize.h5", junk, sizeof(junk), 0);
        f = open_file(path);
        kdl__h5_read_opts_init(&o);
        o.chunk_max = 2048; /* the 512-byte chunks fit, the 3000 stored bytes do not */
        assert_int_equal(kdl__h5_reader_open_opts(f, &ds, KDL_SPATIAL_AVG, &o, &r), 0);
        expect_error(kdl_h5_reader_read(r, 0, ROWS, out), -KDL_EHDF5, path,
                     "chunk at [16, 0]: stored size 3000 bytes exceeds the limit of 2048 bytes");
        kdl_h5_reader_close(r);
        r = (kdl_h5reader *) 0x1;
        o.chunk_max = 500; /* the chunks themselves are 512 bytes */
        expect_error(kdl__h5_reader_open_opts(f, &ds, KDL_SPATIAL_AVG, &o, &r), -KDL_EHDF5, path,
                     "/x: chunks of 512 bytes exceed the limit of 500 bytes");
        assert_true(r == (kdl_h5reader *) 0x1);
        kdl_h5_close(f);
        free(path);
}

static void test_unwritten_chunks(void **state)
{
        char *path = tmp_path("unwritten.h5");
        hsize_t dims[2] = {ROWS, COLS}, chunk[2] = {CROWS, COLS};
        hsize_t huge[2] = {(hsize_t) 1 << 40, 1}, hchunk[2] = {1024, 1};
        float v[CROWS * COLS] = {0};
        hid_t fid = create_file(path);
        kdl_dsinfo ds = dsinfo("/x", 2, (size_t[]){ROWS, COLS}, true);
        kdl_dsinfo hc = dsinfo("/huge_chunked", 2, (size_t[]){(size_t) 1 << 40, 1}, true);
        kdl_dsinfo hp = dsinfo("/huge_plain", 2, (size_t[]){(size_t) 1 << 40, 1}, true);
        kdl_h5reader *r = NULL;
        double *out = calloc(ROWS * COLS, sizeof(double));
        kdl_h5file *f;

        (void) state;
        /* Rows 0..15 only: chunks 1..3 are declared, never written. */
        H5Dclose(fill(make_ds(fid, "/x", H5T_IEEE_F32LE, 2, dims, chunk, SHUFFLE | DEFLATE),
                      H5T_NATIVE_FLOAT, CROWS, v));
        H5Dclose(make_ds(fid, "/huge_chunked", H5T_IEEE_F32LE, 2, huge, hchunk, DEFLATE));
        H5Dclose(make_ds(fid, "/huge_plain", H5T_IEEE_F32LE, 2, huge, NULL, LATE));
        H5Fclose(fid);

        f = open_file(path);
        expect_read_error(path, "declared but not written");
        expect_error(read_blocks(f, &ds, KDL_SPATIAL_AVG, 1, 100, out), -KDL_EHDF5, path,
                     "/x: chunk at [16, 0]: declared but not written");
        /* 2^40 declared rows: the first read fails at once, nothing proportional. */
        assert_int_equal(kdl_h5_reader_open(f, &hc, KDL_SPATIAL_AVG, &r), 0);
        expect_error(kdl_h5_reader_read(r, 0, 64, out), -KDL_EHDF5, path,
                     "/huge_chunked: chunk at [0, 0]: declared but not written");
        kdl_h5_reader_close(r);
        r = NULL;
        expect_error(kdl_h5_reader_open(f, &hp, KDL_SPATIAL_AVG, &r), -KDL_EHDF5, path,
                     "/huge_plain: declared but not written");
        assert_null(r);
        kdl_h5_close(f);
        free(out);
        free(path);
}

/* Chunks 5 and 9 corrupt: every thread count reports chunk 5. */
static void test_first_error_whatever_the_threads(void **state)
{
        char *path = tmp_path("two-bad.h5");
        hsize_t dims[2] = {ROWS, COLS}, chunk[2] = {4, COLS};
        hid_t fid = create_file(path), did;
        float v[ROWS * COLS] = {0};
        unsigned char junk[64];
        kdl_dsinfo ds = dsinfo("/x", 2, (size_t[]){ROWS, COLS}, true);
        double *out = calloc(ROWS * COLS, sizeof(double));
        kdl_h5file *f;

        (void) state;
        did = fill(make_ds(fid, "/x", H5T_IEEE_F32LE, 2, dims, chunk, DEFLATE), H5T_NATIVE_FLOAT, 0,
                   v);
        memset(junk, 0xff, sizeof(junk));
        write_chunk(did, 0, 36, 0, junk, sizeof(junk));
        write_chunk(did, 0, 20, 0, junk, sizeof(junk));
        H5Dclose(did);
        H5Fclose(fid);
        f = open_file(path);
        for (unsigned t = 1; t <= 4; t++)
                for (int rep = 0; rep < 5; rep++)
                        expect_error(read_blocks(f, &ds, KDL_SPATIAL_AVG, t, ROWS, out), -KDL_EHDF5,
                                     path, "/x: chunk at [20, 0]: deflate stream");
        kdl_h5_close(f);
        free(out);
        free(path);
}

static void test_unsupported_filter_and_fletcher(void **state)
{
        char *path = tmp_path("filters.h5");
        hsize_t dims[2] = {ROWS, COLS}, chunk[2] = {CROWS, COLS}, off[2] = {CROWS, 0};
        hid_t fid = create_file(path), did;
        float v[ROWS * COLS];
        double *out = calloc(ROWS * COLS, sizeof(double));
        kdl_dsinfo nb = dsinfo("/nbit", 2, (size_t[]){ROWS, COLS}, false);
        kdl_dsinfo fl = dsinfo("/fletcher", 2, (size_t[]){ROWS, COLS}, true);
        unsigned char raw[4096];
        uint32_t mask = 0;
        hsize_t size = 0;
        kdl_h5reader *r = NULL;
        kdl_h5file *f;

        (void) state;
        for (size_t i = 0; i < ROWS * COLS; i++)
                v[i] = (float) i * 0.25f;
        H5Dclose(make_ds(fid, "/nbit", H5T_STD_I32LE, 2, dims, chunk, NBIT));
        H5Dclose(fill(make_ds(fid, "/fletcher", H5T_IEEE_F32LE, 2, dims, chunk,
                              SHUFFLE | DEFLATE | FLETCHER),
                      H5T_NATIVE_FLOAT, 0, v));
        H5Fclose(fid);

        f = open_file(path);
        expect_error(kdl_h5_reader_open(f, &nb, KDL_SPATIAL_AVG, &r), -KDL_EHDF5, path,
                     "/nbit: stored with filter 'nbit' (id 5), which kdlens does not decode");
        assert_int_equal(read_blocks(f, &fl, KDL_SPATIAL_AVG, 2, 9, out), 0);
        for (size_t i = 0; i < ROWS * COLS; i++)
                assert_close(out[i], (double) i * 0.25, 0.0, 0.0);
        kdl_h5_close(f);

        /* One flipped bit in chunk 1: the checksum catches it. */
        fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
        did = H5Dopen2(fid, "/fletcher", H5P_DEFAULT);
        assert_true(H5Dget_chunk_storage_size(did, off, &size) >= 0 && size <= sizeof(raw));
        assert_true(H5Dread_chunk(did, H5P_DEFAULT, off, &mask, raw) >= 0);
        raw[size / 2] ^= 0x10;
        write_chunk(did, mask, CROWS, 0, raw, (size_t) size);
        H5Dclose(did);
        H5Fclose(fid);
        f = open_file(path);
        expect_error(read_blocks(f, &fl, KDL_SPATIAL_AVG, 1, 64, out), -KDL_EHDF5, path,
                     "/fletcher: chunk at [16, 0]: fletcher32 checksum does not match");
        kdl_h5_close(f);
        free(out);
        free(path);
}

/* ---- round trips against HDF5's own reading --------------------------------------- */

/* H5Dread() of all of @name as doubles: HDF5's filters and conversion. */
static double *hdf5_read(const char *path, const char *name, size_t n)
{
        hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t did = H5Dopen2(fid, name, H5P_DEFAULT);
        double *v = calloc(n, sizeof(double));

        if (H5Dread(did, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0)
                fail_msg("%s: H5Dread failed", name);
        H5Dclose(did);
        H5Fclose(fid);
        return v;
}

struct layout {
        const char *name;
        hid_t type;
        unsigned filters;
        bool chunked;
        bool is_float;
};

/*
 * [37, 5, 3, 6] of every layout: edge chunks in three dimensions, chunk
 * rows that straddle the 7-row blocks, shuffle + deflate (+ fletcher32),
 * float16/32/64 and int8..uint64 in both byte orders.  kdlens's values
 * must be HDF5's, bit for bit, with 1 and 3 threads and every rule.
 */
static void test_round_trips_equal_h5dread(void **state)
{
        char *path = tmp_path("round.h5");
        hsize_t dims[4] = {37, 5, 3, 6}, chunk[4] = {8, 2, 3, 4};
        size_t shape[4] = {37, 5, 3, 6}, n = 37 * 5 * 3 * 6;
        hid_t h16 = half_type(H5T_ORDER_LE), b16 = half_type(H5T_ORDER_BE);
        const struct layout ls[] = {
                {"/f16", h16, SHUFFLE | DEFLATE, true, true},
                {"/f16be", b16, SHUFFLE | DEFLATE, true, true},
                {"/f16plain", h16, 0, false, true},
                {"/f32", H5T_IEEE_F32LE, SHUFFLE | DEFLATE | FLETCHER, true, true},
                {"/f32be", H5T_IEEE_F32BE, SHUFFLE | DEFLATE, true, true},
                {"/f32beplain", H5T_IEEE_F32BE, 0, false, true},
                {"/f64", H5T_IEEE_F64LE, DEFLATE, true, true},
                {"/f64be", H5T_IEEE_F64BE, 0, true, true},
                {"/i8", H5T_STD_I8LE, DEFLATE, true, false},
                {"/u8", H5T_STD_U8LE, 0, false, false},
                {"/i16be", H5T_STD_I16BE, SHUFFLE | DEFLATE, true, false},
                {"/i16beplain", H5T_STD_I16BE, 0, false, false},
                {"/u16", H5T_STD_U16LE, SHUFFLE, true, false},
                {"/i32", H5T_STD_I32LE, 0, true, false},
                {"/u32be", H5T_STD_U32BE, DEFLATE, true, false},
                {"/i64", H5T_STD_I64LE, SHUFFLE | DEFLATE, true, false},
                {"/u64be", H5T_STD_U64BE, 0, false, false},
        };
        hid_t fid = create_file(path);
        double *v = calloc(n, sizeof(double)), *got = calloc(n, sizeof(double));
        kdl_test_rng rng = {20261122};
        double *refs[sizeof(ls) / sizeof(ls[0])];
        kdl_h5file *f;

        (void) state;
        for (size_t k = 0; k < sizeof(ls) / sizeof(ls[0]); k++) {
                for (size_t i = 0; i < n; i++)
                        v[i] = ls[k].is_float ? kdl_test_normal(&rng) * 100.0
                                              : floor(kdl_test_uniform(&rng) * 120.0);
                if (strstr(ls[k].name, "64") && !ls[k].is_float)
                        for (size_t i = 0; i < n; i += 7)
                                v[i] = 9.0e18 + 2048.0 * (double) i; /* above 2^53 */
                H5Dclose(fill(make_ds(fid, ls[k].name, ls[k].type, 4, dims,
                                      ls[k].chunked ? chunk : NULL, ls[k].filters),
                              H5T_NATIVE_DOUBLE, 0, v));
        }
        H5Fclose(fid);
        /* HDF5's values first: the file cannot be open twice with two close degrees. */
        for (size_t k = 0; k < sizeof(ls) / sizeof(ls[0]); k++)
                refs[k] = hdf5_read(path, ls[k].name, n);
        f = open_file(path);
        for (size_t k = 0; k < sizeof(ls) / sizeof(ls[0]); k++) {
                double *ref = refs[k];
                kdl_dsinfo ds = dsinfo(ls[k].name, 4, shape, ls[k].is_float);

                for (unsigned t = 1; t <= 3; t += 2) {
                        memset(got, 0xff, n * sizeof(double));
                        assert_int_equal(read_blocks(f, &ds, KDL_SPATIAL_FLATTEN, t, 7, got), 0);
                        if (memcmp(got, ref, n * sizeof(double)) != 0)
                                fail_msg("%s, %u threads: not HDF5's values", ls[k].name, t);
                }
                /* avg over H*W through the chunk path: the raw rows are HDF5's. */
                assert_int_equal(read_blocks(f, &ds, KDL_SPATIAL_AVG, 2, 11, got), 0);
                for (size_t i = 0; i < 37; i++)
                        for (size_t c = 0; c < 5; c++) {
                                double s = 0.0;

                                for (size_t e = 0; e < 18; e++)
                                        s += ref[(i * 5 + c) * 18 + e];
                                assert_close(got[i * 5 + c], s / 18.0, 0.0, 0.0);
                        }
                free(ref);
        }
        kdl_h5_close(f);
        H5Tclose(h16);
        H5Tclose(b16);
        free(v);
        free(got);
        free(path);
}

/* Big-endian float32 and int16, chunked and not: values known exactly. */
static void test_big_endian(void **state)
{
        char *path = tmp_path("be.h5");
        hsize_t dims[2] = {50, 3}, chunk[2] = {16, 2};
        size_t shape[2] = {50, 3};
        hid_t fid = create_file(path);
        float fv[150];
        int16_t iv[150];
        double got[150];
        kdl_h5file *f;
        static const char *const names[] = {"/f32be", "/f32be_plain", "/i16be", "/i16be_plain"};

        (void) state;
        for (int i = 0; i < 150; i++) {
                fv[i] = (float) (i - 75) * 1.5e-3f;
                iv[i] = (int16_t) ((i - 75) * 431);
        }
        for (int k = 0; k < 4; k++) {
                hid_t did = make_ds(fid, names[k], k < 2 ? H5T_IEEE_F32BE : H5T_STD_I16BE, 2, dims,
                                    k % 2 ? NULL : chunk, k % 2 ? 0 : SHUFFLE | DEFLATE);

                H5Dclose(fill(did, k < 2 ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT16, 0,
                              k < 2 ? (void *) fv : (void *) iv));
        }
        H5Fclose(fid);
        f = open_file(path);
        for (int k = 0; k < 4; k++) {
                kdl_dsinfo ds = dsinfo(names[k], 2, shape, k < 2);

                assert_int_equal(read_blocks(f, &ds, KDL_SPATIAL_AVG, 2, 13, got), 0);
                for (int i = 0; i < 150; i++)
                        assert_close(got[i], k < 2 ? (double) fv[i] : (double) iv[i], 0.0, 0.0);
        }
        kdl_h5_close(f);
        free(path);
}

/* ---- every float16 ------------------------------------------------------------- */

/* numpy's float16 -> float64 of every bit pattern 0..65535; NULL without numpy. */
static uint64_t *numpy_halves(void)
{
        const char *py = getenv("KDL_PYTHON");
        uint64_t *v = calloc(65536, sizeof(uint64_t));
        char *cmd;
        FILE *p;
        size_t got;

        if (!py || access(py, X_OK) != 0 ||
            asprintf(&cmd,
                     "%s -c 'import sys, numpy as np; sys.stdout.buffer.write(np.arange(65536, "
                     "dtype=np.uint32).astype(\"<u2\").view(\"<f2\").astype(\"<f8\").tobytes())'",
                     py) < 0) {
                free(v);
                return NULL;
        }
        p = popen(cmd, "r");
        free(cmd);
        assert_non_null(p);
        got = fread(v, sizeof(uint64_t), 65536, p);
        if (pclose(p) != 0 || got != 65536) {
                free(v);
                return NULL;
        }
        return v;
}

static void expect_halves(const double *got, const uint64_t *ref, const char *what)
{
        for (size_t h = 0; h < 65536; h++) {
                uint64_t b;

                memcpy(&b, &got[h], sizeof(b));
                if (b != ref[h])
                        fail_msg("%s: half 0x%04zx: got 0x%016llx, numpy 0x%016llx", what, h,
                                 (unsigned long long) b, (unsigned long long) ref[h]);
        }
}

static void test_every_float16_as_numpy(void **state)
{
        uint64_t *ref = numpy_halves();
        char *path = tmp_path("halves.h5");
        hsize_t dims[2] = {256, 256}, chunk[2] = {32, 64};
        size_t shape[2] = {256, 256};
        hid_t h16 = half_type(H5T_ORDER_LE), b16 = half_type(H5T_ORDER_BE), fid;
        uint16_t bits[65536];
        double *got = calloc(65536, sizeof(double));
        static const char *const names[] = {"/gz", "/plain", "/be"};
        kdl_h5file *f;

        (void) state;
        if (!ref) {
                free(got);
                free(path);
                skip();
        }
        for (size_t h = 0; h < 65536; h++)
                bits[h] = (uint16_t) h;
        /* The converter alone, both ways, every offset of a group of eight. */
        for (int how = KDL__H5_HALF_TABLE; how <= KDL__H5_HALF_F16C; how++) {
                struct kdl__h5_num t = {.size = 2, .is_float = true};

                if (!kdl__h5_half_use((enum kdl__h5_half) how)) {
                        print_message("no F16C on this CPU: the table alone is checked\n");
                        continue;
                }
                kdl__h5_convert(&t, KDL__H5_TO_DOUBLE, bits, 65536, got);
                expect_halves(got, ref, how == KDL__H5_HALF_TABLE ? "table" : "F16C");
                kdl__h5_convert(&t, KDL__H5_TO_DOUBLE, bits + 3, 65533, got + 3);
                expect_halves(got, ref, "F16C, unaligned");
        }
        /* Through files: shuffle + deflate chunks, contiguous, big-endian. */
        fid = create_file(path);
        for (int k = 0; k < 3; k++) {
                hid_t type = k == 2 ? b16 : h16;
                hid_t did = make_ds(fid, names[k], type, 2, dims, k == 1 ? NULL : chunk,
                                    k == 1 ? 0 : SHUFFLE | DEFLATE);

                H5Dclose(fill(did, h16, 0, bits));
        }
        H5Fclose(fid);
        f = open_file(path);
        for (int how = KDL__H5_HALF_TABLE; how <= KDL__H5_HALF_F16C; how++) {
                if (!kdl__h5_half_use((enum kdl__h5_half) how))
                        continue;
                for (int k = 0; k < 3; k++) {
                        kdl_dsinfo ds = dsinfo(names[k], 2, shape, true);

                        memset(got, 0, 65536 * sizeof(double));
                        assert_int_equal(read_blocks(f, &ds, KDL_SPATIAL_AVG, 2, 50, got), 0);
                        expect_halves(got, ref, names[k]);
                }
        }
        kdl__h5_half_use(KDL__H5_HALF_AUTO);
        kdl_h5_close(f);
        H5Tclose(h16);
        H5Tclose(b16);
        free(ref);
        free(got);
        free(path);
}

/* ---- the value scan ---------------------------------------------------------------- */

static void attr_int(hid_t obj, const char *name, int64_t v)
{
        hid_t s = H5Screate(H5S_SCALAR),
              a = H5Acreate2(obj, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);

        assert_true(H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0);
        H5Aclose(a);
        H5Sclose(s);
}

/* A dump of @n samples and 2 classes: /labels, checkpoint "final" with logits; open groups. */
static hid_t dump_file(const char *path, size_t n, hid_t *ret_ck)
{
        hid_t fid = create_file(path), lcpl = H5Pcreate(H5P_LINK_CREATE), ck;
        hsize_t dn = n, dz[2] = {n, 2};
        int64_t *y = calloc(n, sizeof(int64_t));
        double *z = calloc(2 * n, sizeof(double));

        attr_int(fid, "kdlens_format", 1);
        H5Pset_create_intermediate_group(lcpl, 1);
        ck = H5Gcreate2(fid, "/checkpoints/final/features", lcpl, H5P_DEFAULT, H5P_DEFAULT);
        H5Gclose(ck);
        ck = H5Gopen2(fid, "/checkpoints/final", H5P_DEFAULT);
        attr_int(ck, "step", 1);
        H5Dclose(fill(make_ds(fid, "/labels", H5T_STD_I64LE, 1, &dn, NULL, 0), H5T_NATIVE_INT64, 0,
                      y));
        H5Dclose(fill(make_ds(fid, "/checkpoints/final/logits", H5T_IEEE_F32LE, 2, dz, NULL, 0),
                      H5T_NATIVE_DOUBLE, 0, z));
        H5Pclose(lcpl);
        free(y);
        free(z);
        *ret_ck = ck;
        return fid;
}

/* Feature layer @name of depth @depth in @fid's checkpoint "final", [N, D]. */
static hid_t feature(hid_t fid, const char *name, int64_t depth, hid_t type, const hsize_t *dims,
                     const hsize_t *chunk, unsigned filters)
{
        char *path = NULL;
        hid_t did;

        assert_true(asprintf(&path, "/checkpoints/final/features/%s", name) > 0);
        did = make_ds(fid, path, type, 2, dims, chunk, filters);
        attr_int(did, "depth", depth);
        free(path);
        return did;
}

static size_t problems_with(const kdl_dump *d, const char *needle)
{
        size_t k = 0;

        for (size_t i = 0; i < d->nproblems; i++)
                k += strstr(d->problems[i], needle) != NULL;
        return k;
}

/* An unwritten chunk in one layer is a problem of that layer (found by the catalogue's chunk
 * count); the next layer is still scanned. */
static void test_scan_goes_on_after_a_bad_dataset(void **state)
{
        char *path = tmp_path("scan.h5");
        hsize_t dims[2] = {40, 4}, chunk[2] = {8, 4};
        hid_t ck, fid = dump_file(path, 40, &ck);
        double v[160] = {0};
        kdl_h5file *f;
        const kdl_dump *d;

        (void) state;
        /* Layer a: rows 0..7 only.  Layer b: an Inf in sample 27. */
        H5Dclose(fill(feature(fid, "a", 0, H5T_IEEE_F32LE, dims, chunk, DEFLATE), H5T_NATIVE_DOUBLE,
                      8, v));
        v[4 * 27 + 3] = INFINITY;
        H5Dclose(fill(feature(fid, "b", 1, H5T_IEEE_F32LE, dims, chunk, SHUFFLE | DEFLATE),
                      H5T_NATIVE_DOUBLE, 0, v));
        H5Gclose(ck);
        H5Fclose(fid);

        f = open_file(path);
        d = kdl_h5_dump(f);
        /* The catalogue already counts layer a's chunks and leaves it out... */
        assert_int_equal(d->nproblems, 1);
        assert_int_equal(problems_with(d, "features/a: expected the 5 chunks 2-D [40, 4] needs, "
                                          "found 1 written (declared but not written)"),
                         1);
        /* ...and the value scan still reaches layer b. */
        assert_int_equal(kdl_h5_scan_values(f), 1);
        assert_int_equal(problems_with(d, "features/b: expected finite values, found Inf at "
                                          "sample 27"),
                         1);
        kdl_h5_close(f);
        free(path);
}

static long hwm_kib(void)
{
        FILE *s = fopen("/proc/self/status", "r");
        char line[256];
        long v = -1;

        while (s && fgets(line, sizeof(line), s))
                if (strncmp(line, "VmHWM:", 6) == 0)
                        v = strtol(line + 6, NULL, 10);
        if (s)
                fclose(s);
        return v;
}

/*
 * A feature 2^28 values wide (512 MiB of float16 per sample, 2 GiB as
 * doubles): the scan reads it in pieces, finds the NaN at the end of
 * sample 1 beside an Inf at its start, and its memory stays far below a
 * row.  In a child process, whose peak memory is its own.
 */
static void test_scan_wide_rows_in_pieces(void **state)
{
        size_t wide = (size_t) 1 << 28, cw = (size_t) 1 << 20, len, elen;
        char *path = tmp_path("wide.h5");
        hsize_t dims[2] = {2, wide}, chunk[2] = {1, cw};
        hid_t h16 = half_type(H5T_ORDER_LE), ck, fid = dump_file(path, 2, &ck), did;
        uint16_t *c = calloc(cw, sizeof(uint16_t));
        void *zero = zlib(c, cw * 2, 6, &len), *edge;
        pid_t pid;
        int status;

        (void) state;
        did = feature(fid, "wide", 0, h16, dims, chunk, DEFLATE);
        for (size_t r = 0; r < 2; r++)
                for (size_t k = 0; k < wide / cw; k++)
                        write_chunk(did, 0, r, k * cw, zero, len);
        c[0] = 0x7c00; /* +Inf, sample 1, first value */
        edge = zlib(c, cw * 2, 6, &elen);
        write_chunk(did, 0, 1, 0, edge, elen);
        free(edge);
        c[0] = 0;
        c[cw - 1] = 0x7e00; /* NaN, sample 1, last value */
        edge = zlib(c, cw * 2, 6, &elen);
        write_chunk(did, 0, 1, wide - cw, edge, elen);
        H5Dclose(did);
        H5Gclose(ck);
        H5Fclose(fid);
        free(edge);
        free(zero);
        free(c);
        H5Tclose(h16);

        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                kdl_h5file *f = NULL;
                long before = hwm_kib(), grew;
                int n;

                if (kdl_h5_open(path, &f) < 0)
                        _exit(10);
                n = kdl_h5_scan_values(f);
                grew = hwm_kib() - before;
                if (n != 1 || problems_with(kdl_h5_dump(f), "features/wide: expected finite "
                                                            "values, found NaN at sample 1") != 1)
                        _exit(11);
                kdl_h5_close(f);
                printf("wide scan: peak memory grew by %ld MiB\n", grew >> 10);
                fflush(stdout);
                _exit(grew < (512 << 10) ? 0 : 12); /* a row: 2 GiB; sanitizers add some */
        }
        assert_true(waitpid(pid, &status, 0) == pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        free(path);
}

/* Labels stored in gzip chunks, int16 big-endian: read as int64 through the chunk path. */
static void test_chunked_labels(void **state)
{
        char *path = tmp_path("labels.h5");
        hsize_t n = 1000, chunk = 64;
        hid_t ck, fid = dump_file(path, 1000, &ck);
        int16_t y[1000];
        int64_t *got = NULL;
        kdl_h5file *f;

        (void) state;
        H5Ldelete(fid, "/labels", H5P_DEFAULT);
        for (int i = 0; i < 1000; i++)
                y[i] = (int16_t) (i % 2);
        H5Dclose(fill(make_ds(fid, "/labels", H5T_STD_I16BE, 1, &n, &chunk, SHUFFLE | DEFLATE),
                      H5T_NATIVE_INT16, 0, y));
        H5Gclose(ck);
        H5Fclose(fid);
        f = open_file(path);
        assert_int_equal(kdl_h5_read_labels(f, &got), 0);
        for (int i = 0; i < 1000; i++)
                assert_int_equal(got[i], i % 2);
        assert_int_equal(kdl_h5_dump(f)->label_max, 1);
        free(got);
        kdl_h5_close(f);
        free(path);
}

static int setup(void **state)
{
        (void) state;
        dir = kdl_test_tmpdir();
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        return 0;
}

static int teardown(void **state)
{
        char *cmd;

        (void) state;
        if (dir && asprintf(&cmd, "rm -rf '%s'", dir) >= 0) {
                if (system(cmd) != 0)
                        fprintf(stderr, "could not remove %s\n", dir);
                free(cmd);
        }
        return 0;
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_truncated_stream),
                cmocka_unit_test(test_deflate_bomb),
                cmocka_unit_test(test_short_stream),
                cmocka_unit_test(test_filter_mask_honoured),
                cmocka_unit_test(test_stored_size_limit),
                cmocka_unit_test(test_unwritten_chunks),
                cmocka_unit_test(test_first_error_whatever_the_threads),
                cmocka_unit_test(test_unsupported_filter_and_fletcher),
                cmocka_unit_test(test_round_trips_equal_h5dread),
                cmocka_unit_test(test_big_endian),
                cmocka_unit_test(test_every_float16_as_numpy),
                cmocka_unit_test(test_scan_goes_on_after_a_bad_dataset),
                cmocka_unit_test(test_scan_wide_rows_in_pieces),
                cmocka_unit_test(test_chunked_labels),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
