/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <hdf5.h>

#include "metrics/base/error.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

/*
 * bench-chunks: how fast are chunked, compressed dumps decoded into
 * doubles, by HDF5 (H5Dread() to double: its filters, its conversion, its
 * chunk cache sized as kdlens's reader sized it) and by kdlens (direct chunk
 * reads, libdeflate, its own conversion) on 1 and 2 threads?  Not a test:
 *
 *   bench-chunks generate DIR [--rows N] [--cols D]
 *       DIR/f16-gzip.h5: a dump whose one feature layer is [N, D] float16
 *       in shuffle + deflate (level 4) chunks of 256 rows, as h5py writes
 *       the bundled example (default 524288 x 1024: 1 GiB of float16).
 *   bench-chunks run [--repeat R] FILE...
 *       Read every floating-point dataset of each dump whole, in row blocks
 *       of 64 MiB of doubles, R times (3) with each reader in turn after an
 *       untimed pass that warms the page cache, and print each reader's
 *       median time and MB/s of decoded data (values x stored size).
 */

enum reader { OLD, NEW1, NEW2, NREADERS };
static const char *const reader_names[NREADERS] = {"HDF5 H5Dread", "kdlens, 1 thread",
                                                   "kdlens, 2 threads"};

/* Seconds on clock @id: CLOCK_MONOTONIC (wall), CLOCK_PROCESS_CPUTIME_ID (all threads). */
static double now(clockid_t id)
{
        struct timespec ts;

        clock_gettime(id, &ts);
        return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

/* ---- generate ------------------------------------------------------------------ */

/* A float16 bit pattern like an activation's: random sign and mantissa, exponents 2^-6..2^3. */
static uint16_t half_value(uint64_t i)
{
        uint64_t z = i * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;

        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        return (uint16_t) ((z & 0x8000u) | ((9u + (z >> 16) % 10u) << 10) | ((z >> 32) & 0x3ffu));
}

static int attr_int(hid_t obj, const char *name, int64_t v)
{
        hid_t s = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
        int ok = a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0;

        H5Aclose(a);
        H5Sclose(s);
        return ok ? 0 : -1;
}

static int generate(const char *dir, size_t rows, size_t cols)
{
        char *path = NULL;
        hsize_t dims[2] = {rows, cols}, chunk[2] = {256, cols}, one = rows;
        hid_t fid = -1, g = -1, space = -1, dcpl = -1, did = -1, half = -1, lcpl = -1;
        uint16_t *buf = NULL;
        int64_t *labels = NULL;
        size_t block = 4096;
        int err = -1;

        if (mkdir(dir, 0777) < 0 && errno != EEXIST)
                return kdl_error(-errno, "cannot make '%s': %s", dir, strerror(errno));
        if (asprintf(&path, "%s/f16-gzip.h5", dir) < 0)
                return kdl_error(-ENOMEM, "out of memory");
        buf = malloc(block * cols * sizeof(*buf));
        labels = calloc(rows, sizeof(*labels));
        fid = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        if (!buf || !labels || fid < 0)
                goto out;
        lcpl = H5Pcreate(H5P_LINK_CREATE);
        H5Pset_create_intermediate_group(lcpl, 1);
        half = H5Tcopy(H5T_IEEE_F32LE); /* binary16, as h5py defines it */
        H5Tset_fields(half, 15, 10, 5, 0, 10);
        H5Tset_size(half, 2);
        H5Tset_ebias(half, 15);
        attr_int(fid, "kdlens_format", 1);
        space = H5Screate_simple(1, &one, NULL);
        did = H5Dcreate2(fid, "/labels", H5T_STD_I64LE, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
        if (did < 0 || H5Dwrite(did, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels) < 0)
                goto out;
        H5Dclose(did);
        H5Sclose(space);
        g = H5Gcreate2(fid, "/checkpoints/final/features", lcpl, H5P_DEFAULT, H5P_DEFAULT);
        H5Gclose(g);
        g = H5Gopen2(fid, "/checkpoints/final", H5P_DEFAULT);
        attr_int(g, "step", 0);
        space = H5Screate_simple(2, dims, NULL);
        dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_chunk(dcpl, 2, chunk);
        H5Pset_shuffle(dcpl);
        H5Pset_deflate(dcpl, 4);
        did = H5Dcreate2(fid, "/checkpoints/final/features/big", half, space, lcpl, dcpl,
                         H5P_DEFAULT);
        if (did < 0 || attr_int(did, "depth", 0) < 0)
                goto out;
        for (size_t r0 = 0; r0 < rows; r0 += block) {
                hsize_t start[2] = {r0, 0},
                        count[2] = {rows - r0 < block ? rows - r0 : block, cols};
                hid_t ms = H5Screate_simple(2, count, NULL);
                herr_t st;

                for (size_t i = 0; i < count[0] * cols; i++)
                        buf[i] = half_value(r0 * cols + i);
                H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
                st = H5Dwrite(did, half, ms, space, H5P_DEFAULT, buf);
                H5Sclose(ms);
                if (st < 0)
                        goto out;
        }
        err = 0;
        printf("wrote %s: [%zu, %zu] float16, shuffle + deflate 4, chunks of 256 rows\n", path,
               rows, cols);
out:
        if (err < 0)
                err = kdl_error(-KDL_EHDF5, "cannot write '%s'", path);
        H5Dclose(did);
        H5Pclose(dcpl);
        H5Sclose(space);
        H5Gclose(g);
        H5Tclose(half);
        H5Pclose(lcpl);
        H5Fclose(fid);
        free(buf);
        free(labels);
        free(path);
        return err;
}

/* ---- run ------------------------------------------------------------------------ */

/* One dataset open for reading by one of the readers. */
struct source {
        enum reader how;
        const kdl_dsinfo *ds;
        kdl_h5reader *r;   /* kdlens */
        hid_t did, fspace; /* HDF5 */
};

static int source_open(kdl_h5file *f, const kdl_dsinfo *ds, enum reader how, struct source *s)
{
        struct kdl__h5_read_opts o;
        const char *digits = ds->dtype + strcspn(ds->dtype, "0123456789");
        size_t band = 2 * (ds->chunked ? ds->chunk[0] : 1) * (size_t) (atoi(digits) / 8);
        hid_t dapl;
        int err;

        *s = (struct source){.how = how, .ds = ds, .did = -1, .fspace = -1};
        if (how != OLD) {
                kdl__h5_read_opts_init(&o);
                o.threads = how == NEW1 ? 1 : 2;
                err = kdl__h5_reader_open_opts(f, ds, KDL_SPATIAL_FLATTEN, &o, &s->r);
                if (err == 0)
                        kdl_h5_reader_allow_nonfinite(s->r, true);
                return err;
        }
        /* What the old reader did: a chunk cache of two bands of chunks. */
        for (size_t k = 1; k < ds->ndim; k++)
                band *= ds->shape[k];
        band = band < (1u << 20) ? 1u << 20 : band > (64u << 20) ? 64u << 20 : band;
        dapl = H5Pcreate(H5P_DATASET_ACCESS);
        if (ds->chunked)
                H5Pset_chunk_cache(dapl, 12421, band, 1.0);
        s->did = H5Dopen2(kdl__h5_fid(f), ds->path, dapl);
        H5Pclose(dapl);
        s->fspace = H5Dget_space(s->did);
        return s->did < 0 ? kdl_error(-KDL_EHDF5, "%s: cannot open", ds->path) : 0;
}

/* Rows [@r0, @r1) into @buf as doubles; the old reader: H5Dread(), HDF5 converting. */
static int source_read(struct source *s, size_t r0, size_t r1, double *buf)
{
        hsize_t start[KDL_MAX_DIMS] = {r0}, count[KDL_MAX_DIMS] = {r1 - r0};
        hid_t ms;
        herr_t st;

        if (s->how != OLD)
                return kdl_h5_reader_read(s->r, r0, r1, buf);
        for (size_t k = 1; k < s->ds->ndim; k++)
                count[k] = s->ds->shape[k];
        H5Sselect_hyperslab(s->fspace, H5S_SELECT_SET, start, NULL, count, NULL);
        ms = H5Screate_simple((int) s->ds->ndim, count, NULL);
        st = H5Dread(s->did, H5T_NATIVE_DOUBLE, ms, s->fspace, H5P_DEFAULT, buf);
        H5Sclose(ms);
        return st < 0 ? kdl_error(-KDL_EHDF5, "%s: H5Dread failed", s->ds->path) : 0;
}

static void source_close(struct source *s)
{
        kdl_h5_reader_close(s->r);
        if (s->fspace >= 0)
                H5Sclose(s->fspace);
        if (s->did >= 0)
                H5Dclose(s->did);
}

/* All of @ds with @how, in row blocks of 64 MiB of doubles; its values added to *@sum. */
static int read_dataset(kdl_h5file *f, const kdl_dsinfo *ds, enum reader how, double *sum)
{
        size_t inner = 1, block;
        struct source s;
        double *buf = NULL;
        int err;

        for (size_t k = 1; k < ds->ndim; k++)
                inner *= ds->shape[k];
        block = ((size_t) 64 << 20) / (8 * inner);
        block = block ? block : 1;
        err = source_open(f, ds, how, &s);
        if (err == 0 && !(buf = malloc(block * inner * sizeof(double))))
                err = kdl_error(-ENOMEM, "out of memory");
        for (size_t r0 = 0; r0 < ds->shape[0] && err == 0; r0 += block) {
                size_t r1 = ds->shape[0] - r0 < block ? ds->shape[0] : r0 + block;

                err = source_read(&s, r0, r1, buf);
                for (size_t i = 0; err == 0 && i < (r1 - r0) * inner; i++)
                        *sum += buf[i];
        }
        free(buf);
        source_close(&s);
        return err;
}

/* The floating-point datasets of a dump. */
static size_t datasets(const kdl_dump *d, const kdl_dsinfo **v, size_t cap)
{
        size_t n = 0;

        for (size_t k = 0; k < d->ncheckpoints; k++) {
                const kdl_checkpoint *ck = &d->checkpoints[k];
                const kdl_dsinfo *all[] = {ck->logits, ck->grad_logits, ck->head_weight,
                                           ck->head_bias};

                for (size_t j = 0; j < 4; j++)
                        if (all[j] && all[j]->is_float && n < cap)
                                v[n++] = all[j];
                for (size_t j = 0; j < ck->nlayers; j++) {
                        if (ck->layers[j].feature.is_float && n < cap)
                                v[n++] = &ck->layers[j].feature;
                        if (ck->layers[j].gradient && ck->layers[j].gradient->is_float && n < cap)
                                v[n++] = ck->layers[j].gradient;
                }
        }
        return n;
}

/* Read every float dataset of @files with @how: wall and CPU seconds, bytes, sum of values. */
static int read_all(char **files, int n, enum reader how, double *ret_s, double *ret_cpu,
                    double *ret_bytes, double *ret_sum)
{
        double t0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID), bytes = 0.0;
        double sum = 0.0;
        int err = 0;

        for (int i = 0; i < n && err == 0; i++) {
                const kdl_dsinfo *v[256];
                kdl_h5file *f = NULL;
                size_t nds;

                err = kdl_h5_open(files[i], &f);
                if (err < 0)
                        break;
                nds = datasets(kdl_h5_dump(f), v, 256);
                for (size_t k = 0; k < nds && err == 0; k++) {
                        size_t values = 1;

                        for (size_t j = 0; j < v[k]->ndim; j++)
                                values *= v[k]->shape[j];
                        bytes += (double) values * (strcmp(v[k]->dtype, "float16") == 0   ? 2
                                                    : strcmp(v[k]->dtype, "float32") == 0 ? 4
                                                                                          : 8);
                        err = read_dataset(f, v[k], how, &sum);
                }
                kdl_h5_close(f);
        }
        *ret_s = now(CLOCK_MONOTONIC) - t0;
        *ret_cpu = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
        *ret_bytes = bytes;
        *ret_sum = sum;
        return err;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *) a, y = *(const double *) b;

        return (x > y) - (x < y);
}

static double median(double *v, int n)
{
        qsort(v, (size_t) n, sizeof(double), cmp_double);
        return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int run(char **files, int n, int repeat)
{
        double t[NREADERS][16], cpu[NREADERS][16], bytes = 0.0, sums[NREADERS], s, w, wc;
        int err;

        err = read_all(files, n, NEW1, &w, &wc, &bytes, &s); /* warms the page cache */
        for (int r = 0; r < repeat && err == 0; r++)
                for (int how = 0; how < NREADERS && err == 0; how++)
                        err = read_all(files, n, (enum reader) how, &t[how][r], &cpu[how][r],
                                       &bytes, &sums[how]);
        if (err < 0)
                return err;
        printf("%.1f MB of decoded data (values x stored size), %d file(s), median of %d runs\n",
               bytes / 1e6, n, repeat);
        printf("  %-18s %9s %9s %9s %9s   %s\n", "reader", "wall s", "MB/s", "CPU s", "MB/CPU-s",
               "wall s of each run");
        for (int how = 0; how < NREADERS; how++) {
                double runs[16], m, mc;

                memcpy(runs, t[how], sizeof(runs));
                m = median(t[how], repeat);
                mc = median(cpu[how], repeat);
                printf("  %-18s %9.3f %9.1f %9.3f %9.1f  ", reader_names[how], m, bytes / 1e6 / m,
                       mc, bytes / 1e6 / mc);
                for (int r = 0; r < repeat; r++)
                        printf(" %.3f", runs[r]);
                printf("\n");
        }
        printf("  sum of the values: %.17g, %s\n", sums[OLD],
               memcmp(&sums[OLD], &sums[NEW1], sizeof(double)) == 0 &&
                               memcmp(&sums[OLD], &sums[NEW2], sizeof(double)) == 0
                       ? "the same from every reader"
                       : "NOT the same from every reader");
        if (memcmp(&sums[OLD], &sums[NEW1], sizeof(double)) != 0 ||
            memcmp(&sums[OLD], &sums[NEW2], sizeof(double)) != 0)
                return kdl_error(-KDL_EMISMATCH, "the readers disagree");
        return 0;
}

static int usage(void)
{
        fprintf(stderr, "usage: bench-chunks generate DIR [--rows N] [--cols D]\n"
                        "       bench-chunks run [--repeat R] FILE...\n");
        return 2;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {{"rows", required_argument, NULL, 'n'},
                                             {"cols", required_argument, NULL, 'd'},
                                             {"repeat", required_argument, NULL, 'r'},
                                             {NULL, 0, NULL, 0}};
        size_t rows = 524288, cols = 1024;
        int repeat = 3, c, err;

        if (argc < 3)
                return usage();
        optind = 2;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                if (c == 'n')
                        rows = strtoul(optarg, NULL, 10);
                else if (c == 'd')
                        cols = strtoul(optarg, NULL, 10);
                else if (c == 'r')
                        repeat = atoi(optarg);
                else
                        return usage();
        }
        if (repeat < 1 || repeat > 16 || rows == 0 || cols == 0 || optind >= argc)
                return usage();
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        if (strcmp(argv[1], "generate") == 0)
                err = generate(argv[optind], rows, cols);
        else if (strcmp(argv[1], "run") == 0)
                err = run(argv + optind, argc - optind, repeat);
        else
                return usage();
        if (err < 0) {
                fprintf(stderr, "bench-chunks: %s\n", kdl_errmsg());
                return 1;
        }
        return 0;
}
