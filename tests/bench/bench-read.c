/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "metrics/base/error.h"
#include "loaders/h5.h"
#include "loaders/h5write.h"
#include "metrics/base/banned.h"

/*
 * bench-read: how fast, and in how much memory, does kdlens's block reader
 * (kdl_h5_reader_*) read a big float32 dataset, compared with reading it
 * whole into numpy with h5py?  Not a test: a program to run by hand
 * (`ninja -C build bench` runs it with the defaults on ./bench-data).
 *
 * It writes (or reuses) SCRATCH/bench-<N>x<D>-c<R>[-gzL].h5 through the dump
 * writer, warms the page cache with one plain read of the file, then times
 * each reader --repeat times, every run in a fresh process so that its peak
 * RSS is its own, and prints medians.  The stored size counts for GB/s.
 */

#define DATASET    "/checkpoints/final/features/layer1"
#define MAX_BLOCKS 8

struct bench {
        size_t rows, cols, chunk_rows;
        enum kdl_store store; /* of the big dataset: float16, float32 or float64 */
        int gzip;
        size_t blocks[MAX_BLOCKS], nblocks;
        int repeat;
        const char *python, *script, *scratch;
        bool numpy;
};

/* One measured run. */
struct run {
        double seconds;
        long peak_kib, base_kib;
        double checksum;
};

static double now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

/* A field of /proc/self/status in KiB (VmRSS, VmHWM); getrusage's peak when
 * /proc is not there. */
static long status_kib(const char *field)
{
        FILE *f = fopen("/proc/self/status", "r");
        size_t len = strlen(field);
        char line[256];
        long v = -1;

        if (f) {
                while (fgets(line, sizeof(line), f))
                        if (strncmp(line, field, len) == 0 && line[len] == ':') {
                                v = strtol(line + len + 1, NULL, 10);
                                break;
                        }
                fclose(f);
        }
        if (v < 0) {
                struct rusage ru;

                if (getrusage(RUSAGE_SELF, &ru) == 0)
                        v = ru.ru_maxrss; /* KiB on Linux */
        }
        return v;
}

/* Uniform [0, 1) from the element index: cheap, and the same for any block. */
static double value(uint64_t i)
{
        uint64_t z = i * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;

        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        return (double) (z >> 40) * 0x1.0p-24; /* 24 bits: exact in float32 */
}

enum fill {
        FILL_LABELS, /* 1-D int64: i mod 10 */
        FILL_VALUES, /* value(element index) */
        FILL_COLUMN, /* the column index */
};

static int write_rows_of(kdl_h5w *w, const char *path, size_t n, size_t cols, enum kdl_store st,
                         size_t chunk, int gzip, size_t block, enum fill what)
{
        size_t shape[2] = {n, cols};
        kdl_h5wds *d = NULL;
        double *buf = NULL;
        int64_t *ibuf = NULL;
        int err;

        err = kdl_h5w_dataset_open(w, path, what == FILL_LABELS ? 1 : 2, shape, st, chunk, gzip,
                                   &d);
        if (err < 0)
                return err;
        if (what == FILL_LABELS)
                ibuf = malloc(block * sizeof(*ibuf));
        else
                buf = malloc(block * cols * sizeof(*buf));
        if (!buf && !ibuf) {
                kdl_h5w_dataset_close(d);
                return kdl_error(-ENOMEM, "out of memory");
        }
        for (size_t r0 = 0; r0 < n && err == 0; r0 += block) {
                size_t r1 = r0 + block < n ? r0 + block : n;

                for (size_t i = r0; i < r1; i++) {
                        if (what == FILL_LABELS)
                                ibuf[i - r0] = (int64_t) (i % 10);
                        else
                                for (size_t j = 0; j < cols; j++)
                                        buf[(i - r0) * cols + j] = what == FILL_VALUES
                                                                           ? value(i * cols + j)
                                                                           : (double) j;
                }
                err = what == FILL_LABELS ? kdl_h5w_write_rows_i64(d, r0, r1, ibuf)
                                          : kdl_h5w_write_rows(d, r0, r1, buf);
        }
        free(buf);
        free(ibuf);
        if (err < 0) {
                kdl_h5w_dataset_close(d);
                return err;
        }
        return kdl_h5w_dataset_close(d);
}

/* A minimal dump whose layer1 is the big dataset: labels, logits, layer1. */
static int write_file(const struct bench *b, const char *path)
{
        char *tmp = NULL;
        kdl_h5w *w = NULL;
        size_t block =
                b->chunk_rows ? b->chunk_rows * ((4096 + b->chunk_rows - 1) / b->chunk_rows) : 4096;
        int err;

        if (asprintf(&tmp, "%s.tmp%ld", path, (long) getpid()) < 0)
                return kdl_error(-ENOMEM, "out of memory");
        err = kdl_h5w_open(tmp, "teacher", "bench", &w);
        if (err == 0)
                err = write_rows_of(w, "/labels", b->rows, 1, KDL_STORE_I64, 0, -1, block,
                                    FILL_LABELS);
        if (err == 0)
                err = write_rows_of(w, "/checkpoints/final/logits", b->rows, 10, KDL_STORE_F32, 0,
                                    -1, block, FILL_COLUMN);
        if (err == 0)
                err = write_rows_of(w, DATASET, b->rows, b->cols, b->store, b->chunk_rows, b->gzip,
                                    block, FILL_VALUES);
        if (err == 0)
                err = kdl_h5w_attr_int(w, DATASET, "depth", 1);
        if (err == 0)
                err = kdl_h5w_attr_int(w, "/checkpoints/final", "step", 0);
        if (w) {
                int e = kdl_h5w_close(w);

                err = err < 0 ? err : e;
        }
        if (err == 0 && rename(tmp, path) < 0)
                err = kdl_error(-errno, "cannot rename '%s': %s", tmp, strerror(errno));
        if (err < 0)
                unlink(tmp);
        free(tmp);
        return err;
}

/* Read the whole file once with read(2), so every reader finds it cached. */
static int warm_cache(const char *path)
{
        static char buf[1 << 20];
        int fd = open(path, O_RDONLY);
        ssize_t n;

        if (fd < 0)
                return kdl_error(-errno, "cannot open '%s': %s", path, strerror(errno));
        while ((n = read(fd, buf, sizeof(buf))) > 0)
                ;
        close(fd);
        return n < 0 ? kdl_error(-EIO, "cannot read '%s'", path) : 0;
}

/* The child side: read DATASET of @path with the block reader in blocks of
 * @block rows, print "seconds peak base checksum". */
static int read_once(const char *path, size_t block)
{
        long base = status_kib("VmRSS");
        kdl_h5file *f = NULL;
        kdl_h5reader *r = NULL;
        const kdl_checkpoint *ck;
        const kdl_layer *layer;
        double t0, t, sum = 0.0, *buf = NULL;
        size_t n, cols;
        int err;

        t0 = now();
        err = kdl_h5_open(path, &f);
        if (err < 0)
                goto out;
        ck = kdl_h5_checkpoint(f, "final");
        layer = ck ? kdl_h5_layer(ck, "layer1") : NULL;
        if (!layer) {
                err = kdl_error(-KDL_EMISSING, "'%s': no %s", path, DATASET);
                goto out;
        }
        err = kdl_h5_reader_open(f, &layer->feature, KDL_SPATIAL_AVG, &r);
        if (err < 0)
                goto out;
        n = kdl_h5_reader_rows(r);
        cols = kdl_h5_reader_cols(r);
        buf = malloc(block * cols * sizeof(*buf));
        if (!buf) {
                err = kdl_error(-ENOMEM, "out of memory");
                goto out;
        }
        for (size_t r0 = 0; r0 < n; r0 += block) {
                size_t r1 = r0 + block < n ? r0 + block : n;

                err = kdl_h5_reader_read(r, r0, r1, buf);
                if (err < 0)
                        goto out;
                /* What a metric's accumulate would do first: touch every
                 * value (also the checksum against numpy's). */
                for (size_t i = 0; i < (r1 - r0) * cols; i++)
                        sum += buf[i];
        }
        kdl_h5_reader_close(r);
        r = NULL;
        kdl_h5_close(f);
        f = NULL;
        t = now() - t0;
        printf("%.6f %ld %ld %.17g\n", t, status_kib("VmHWM"), base, sum);
out:
        free(buf);
        kdl_h5_reader_close(r);
        kdl_h5_close(f);
        return err;
}

/* Run @argv (a child process) and parse its one line of output into @ret. */
static int measure(char *const argv[], struct run *ret)
{
        int fds[2], status;
        char line[512] = "";
        ssize_t len = 0, n;
        pid_t pid;

        if (pipe(fds) < 0)
                return kdl_error(-errno, "pipe: %s", strerror(errno));
        pid = fork();
        if (pid < 0)
                return kdl_error(-errno, "fork: %s", strerror(errno));
        if (pid == 0) {
                dup2(fds[1], STDOUT_FILENO);
                close(fds[0]);
                close(fds[1]);
                execv(argv[0], argv);
                fprintf(stderr, "bench-read: cannot run %s: %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        close(fds[1]);
        while (len < (ssize_t) sizeof(line) - 1 &&
               (n = read(fds[0], line + len, sizeof(line) - 1 - (size_t) len)) > 0)
                len += n;
        close(fds[0]);
        if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return kdl_error(-KDL_EMISMATCH, "%s %s failed", argv[0], argv[1]);
        if (sscanf(line, "%lf %ld %ld %lf", &ret->seconds, &ret->peak_kib, &ret->base_kib,
                   &ret->checksum) != 4)
                return kdl_error(-KDL_EMISMATCH, "%s: unexpected output '%s'", argv[0], line);
        return 0;
}

static size_t value_bytes(enum kdl_store st)
{
        return st == KDL_STORE_F16 ? 2 : st == KDL_STORE_F64 ? 8 : 4;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *) a, y = *(const double *) b;

        return (x > y) - (x < y);
}

static int cmp_long(const void *a, const void *b)
{
        long x = *(const long *) a, y = *(const long *) b;

        return (x > y) - (x < y);
}

/* Median of each field over @n runs (the checksum is the first run's). */
static struct run median(const struct run *runs, int n, double *ret_min, double *ret_max)
{
        double s[16];
        long p[16], q[16];
        struct run m;

        for (int i = 0; i < n; i++) {
                s[i] = runs[i].seconds;
                p[i] = runs[i].peak_kib;
                q[i] = runs[i].base_kib;
        }
        qsort(s, (size_t) n, sizeof(s[0]), cmp_double);
        qsort(p, (size_t) n, sizeof(p[0]), cmp_long);
        qsort(q, (size_t) n, sizeof(q[0]), cmp_long);
        m.seconds = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
        m.peak_kib = p[n / 2];
        m.base_kib = q[n / 2];
        m.checksum = runs[0].checksum;
        *ret_min = s[0];
        *ret_max = s[n - 1];
        return m;
}

static void print_row(const char *name, const char *block, const struct run *m, double lo,
                      double hi, double gbytes, double ref_checksum)
{
        double rel = fabs(m->checksum - ref_checksum) / fabs(ref_checksum);

        printf("%-34s %8s %9.3f %7.2f %10.1f %10.1f   %.3f..%.3f  %s\n", name, block, m->seconds,
               gbytes / m->seconds, (double) m->peak_kib / 1024.0,
               (double) (m->peak_kib - m->base_kib) / 1024.0, lo, hi,
               rel < 1e-9 ? "same" : "DIFFERENT");
}

static const char usage_text[] =
        "usage: bench-read [options] SCRATCH_DIR\n"
        "\n"
        "Writes (or reuses) a dump in SCRATCH_DIR and times reading its big\n"
        "feature dataset with kdlens's block reader and with h5py + numpy.\n"
        "\n"
        "  --rows N             rows (131072)\n"
        "  --cols D             columns (2048): 131072 x 2048 float32 is 1 GiB\n"
        "  --dtype TYPE         float16, float32 (default) or float64 values\n"
        "  --chunk-rows R       rows per chunk, 0 for contiguous (1024)\n"
        "  --gzip LEVEL         deflate the dataset (default: no compression)\n"
        "  --block-rows LIST    reader block sizes, comma-separated (1024,8192)\n"
        "  --repeat K           runs of each reader, 1..15 (3); medians are reported\n"
        "  --python PATH        Python with numpy and h5py (/usr/bin/python3)\n"
        "  --numpy-script PATH  bench_read_numpy.py\n"
        "  --no-numpy           skip the h5py + numpy baseline\n"
        "  -h, --help           show this help\n";

static int parse_args(int argc, char **argv, struct bench *b)
{
        static const struct option opts[] = {
                {"rows", required_argument, NULL, 'n'},
                {"cols", required_argument, NULL, 'd'},
                {"dtype", required_argument, NULL, 't'},
                {"chunk-rows", required_argument, NULL, 'c'},
                {"gzip", required_argument, NULL, 'z'},
                {"block-rows", required_argument, NULL, 'b'},
                {"repeat", required_argument, NULL, 'k'},
                {"python", required_argument, NULL, 'p'},
                {"numpy-script", required_argument, NULL, 's'},
                {"no-numpy", no_argument, NULL, 'N'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        char *end, *list, *tok, *save;
        unsigned long long v;
        int c;

        opterr = 0;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                if (c == 'h')
                        return 1;
                if (c == 'N') {
                        b->numpy = false;
                        continue;
                }
                if (c == '?' || c == ':')
                        return kdl_error(-KDL_EUSAGE, "bad option '%s'", argv[optind - 1]);
                if (c == 'p') {
                        b->python = optarg;
                        continue;
                }
                if (c == 's') {
                        b->script = optarg;
                        continue;
                }
                if (c == 't') {
                        if (kdl_store_parse(optarg, &b->store) < 0 ||
                            !(b->store == KDL_STORE_F16 || b->store == KDL_STORE_F32 ||
                              b->store == KDL_STORE_F64))
                                return kdl_error(-KDL_EUSAGE,
                                                 "--dtype: '%s' is not float16, "
                                                 "float32 or float64",
                                                 optarg);
                        continue;
                }
                if (c == 'b') {
                        b->nblocks = 0;
                        list = strdup(optarg);
                        if (!list)
                                return -ENOMEM;
                        for (tok = strtok_r(list, ",", &save); tok;
                             tok = strtok_r(NULL, ",", &save)) {
                                v = strtoull(tok, &end, 10);
                                if (*end || v < 1 || v > (1u << 20) || b->nblocks == MAX_BLOCKS) {
                                        free(list);
                                        return kdl_error(-KDL_EUSAGE, "bad --block-rows '%s'",
                                                         optarg);
                                }
                                b->blocks[b->nblocks++] = (size_t) v;
                        }
                        free(list);
                        if (b->nblocks == 0)
                                return kdl_error(-KDL_EUSAGE, "bad --block-rows '%s'", optarg);
                        continue;
                }
                errno = 0;
                v = strtoull(optarg, &end, 10);
                if (errno || *end || !*optarg || optarg[0] == '-')
                        return kdl_error(-KDL_EUSAGE, "'%s' is not a number", optarg);
                switch (c) {
                case 'n':
                        b->rows = (size_t) v;
                        break;
                case 'd':
                        b->cols = (size_t) v;
                        break;
                case 'c':
                        b->chunk_rows = (size_t) v;
                        break;
                case 'z':
                        if (v > 9)
                                return kdl_error(-KDL_EUSAGE, "--gzip %llu is not 0..9", v);
                        b->gzip = (int) v;
                        break;
                case 'k':
                        if (v < 1 || v > 15)
                                return kdl_error(-KDL_EUSAGE, "--repeat %llu is not 1..15", v);
                        b->repeat = (int) v;
                        break;
                }
        }
        if (b->rows < 1 || b->cols < 1)
                return kdl_error(-KDL_EUSAGE, "--rows and --cols must be positive");
        if (argc - optind != 1)
                return kdl_error(-KDL_EUSAGE, "expected one SCRATCH_DIR");
        b->scratch = argv[optind];
        return 0;
}

static int bench(const struct bench *b)
{
        char *path = NULL, *self = NULL;
        char nbuf[32], gz[16] = "", ty[16] = "";
        struct run runs[16], m, cref = {0};
        double lo, hi, gbytes, t0;
        struct stat st;
        int err = 0;

        if (b->gzip >= 0)
                snprintf(gz, sizeof(gz), "-gz%d", b->gzip);
        if (b->store != KDL_STORE_F32) /* float32 files keep their old names */
                snprintf(ty, sizeof(ty), "-%s", kdl_store_name(b->store));
        if (asprintf(&path, "%s/bench-%zux%zu-c%zu%s%s.h5", b->scratch, b->rows, b->cols,
                     b->chunk_rows, gz, ty) < 0)
                return kdl_error(-ENOMEM, "out of memory");
        self = realpath("/proc/self/exe", NULL);
        if (!self) {
                err = kdl_error(-errno, "cannot find this program: %s", strerror(errno));
                goto out;
        }
        if (stat(path, &st) == 0) {
                printf("reusing %s\n", path);
        } else {
                if (mkdir(b->scratch, 0777) < 0 && errno != EEXIST) {
                        err = kdl_error(-errno, "cannot create '%s': %s", b->scratch,
                                        strerror(errno));
                        goto out;
                }
                t0 = now();
                err = write_file(b, path);
                if (err < 0)
                        goto out;
                printf("wrote %s in %.1f s\n", path, now() - t0);
        }
        err = warm_cache(path);
        if (err < 0)
                goto out;

        gbytes = (double) b->rows * (double) b->cols * (double) value_bytes(b->store) / 1e9;
        printf("dataset %s: %s [%zu, %zu], %s, %s;\n"
               "%.3f GB of %s values (GB/s counts these), file %.3f GB on disk;\n"
               "page cache warm; median of %d runs, each in a fresh process\n\n",
               DATASET, kdl_store_name(b->store), b->rows, b->cols,
               b->chunk_rows ? "chunked" : "contiguous", b->gzip >= 0 ? "gzip" : "no compression",
               gbytes, kdl_store_name(b->store),
               stat(path, &st) == 0 ? (double) st.st_size / 1e9 : -1.0, b->repeat);
        printf("%-34s %8s %9s %7s %10s %10s   %-12s %s\n", "reader", "block", "median_s", "GB/s",
               "peak_MiB", "+read_MiB", "min..max_s", "checksum");

        for (size_t k = 0; k < b->nblocks; k++) {
                char *argv[] = {self, (char *) "--read-once", path, nbuf, NULL};

                snprintf(nbuf, sizeof(nbuf), "%zu", b->blocks[k]);
                for (int i = 0; i < b->repeat; i++) {
                        err = measure(argv, &runs[i]);
                        if (err < 0)
                                goto out;
                }
                m = median(runs, b->repeat, &lo, &hi);
                if (k == 0)
                        cref = m;
                print_row("kdlens block reader -> float64", nbuf, &m, lo, hi, gbytes,
                          cref.checksum);
        }
        if (!b->numpy)
                goto out;
        for (int mode = 0; mode < 2; mode++) {
                char *argv[] = {(char *) b->python,
                                (char *) b->script,
                                path,
                                (char *) DATASET,
                                (char *) (mode ? "f64" : "f32"),
                                NULL};

                for (int i = 0; i < b->repeat; i++) {
                        err = measure(argv, &runs[i]);
                        if (err < 0)
                                goto out;
                }
                m = median(runs, b->repeat, &lo, &hi);
                print_row(mode ? "h5py whole + astype(float64)" : "h5py whole, as stored", "all",
                          &m, lo, hi, gbytes, cref.checksum);
        }
        printf("\npeak_MiB: the process's VmHWM; +read_MiB: peak minus RSS before reading\n"
               "(interpreter and libraries excluded).  checksum: float64 sum of all values,\n"
               "compared with the first kdlens run (relative 1e-9).\n");
out:
        free(self);
        free(path);
        return err;
}

int main(int argc, char **argv)
{
        struct bench b = {
                .rows = 131072,
                .cols = 2048,
                .chunk_rows = 1024,
                .store = KDL_STORE_F32,
                .gzip = -1,
                .blocks = {1024, 8192},
                .nblocks = 2,
                .repeat = 3,
                .python = "/usr/bin/python3",
                .script = KDL_BENCH_NUMPY_SCRIPT,
                .numpy = true,
        };
        int err;

        if (argc == 4 && strcmp(argv[1], "--read-once") == 0) {
                err = read_once(argv[2], strtoull(argv[3], NULL, 10));
                if (err < 0)
                        fprintf(stderr, "bench-read: %s\n", kdl_errmsg());
                return err < 0 ? 1 : 0;
        }
        err = parse_args(argc, argv, &b);
        if (err > 0) {
                fputs(usage_text, stdout);
                return 0;
        }
        if (err == 0)
                err = bench(&b);
        if (err < 0) {
                fprintf(stderr, "bench-read: %s\n", kdl_errmsg());
                return err == -KDL_EUSAGE ? 2 : 1;
        }
        return 0;
}
