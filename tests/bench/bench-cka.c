/* SPDX-License-Identifier: MIT */
/*
 * Benchmark (not a test) behind tests/bench/bench-cka.py:
 *
 *      bench-cka TEACHER.h5 STUDENT.h5 N [BLOCK_ROWS [PRECISION]]
 *
 * reads the first N rows of the four feature layers of each dump (checkpoint
 * "final") in row blocks through the loader, accumulates kdlens's streaming
 * linear/debiased CKA state for the 4 x 4 teacher x student grid (plus the
 * diagonal blocks its normalisation needs), and prints one JSON object: time,
 * read time, peak memory, state memory, flops, achieved GFLOP/s, and this machine's
 * DGEMM and SGEMM rates measured here with the same BLAS, the same way.
 * BLOCK_ROWS 0 is the state's default; PRECISION is "double" (default) or
 * "mixed" (kdl_cka_precision_parse()).  GFLOP/s counts the same flops in
 * both precisions: the G-block products (float in mixed) and U = Zᵀ A
 * (always double).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "loaders/h5.h"
#include "metrics/base/error.h"
#include "metrics/cka.h"

#define LAYERS            4
#define READ_ROWS_DEFAULT 2048

static double now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

/* Peak resident memory of this process (VmHWM), bytes. */
static double peak_bytes(void)
{
        FILE *f = fopen("/proc/self/status", "r");
        char line[256];
        double kb = 0.0;

        while (f && fgets(line, sizeof(line), f))
                if (strncmp(line, "VmHWM:", 6) == 0)
                        kb = strtod(line + 6, NULL);
        if (f)
                fclose(f);
        return kb * 1024.0;
}

/* Best of 3 square GEMMs of size n after one warm-up, GFLOP/s: SGEMM when
 * @single, else DGEMM (the same inputs, rounded to float). */
static double gemm_rate(int n, bool single)
{
        size_t nn = (size_t) n * (size_t) n, es = single ? sizeof(float) : sizeof(double);
        void *a = malloc(nn * es), *b = malloc(nn * es), *c = calloc(nn, es);
        double best = 0.0;

        if (!a || !b || !c)
                exit(1);
        for (size_t i = 0; i < nn; i++) {
                double x = (double) (i % 97) / 97.0 - 0.5, y = (double) (i % 89) / 89.0 - 0.5;

                if (single) {
                        ((float *) a)[i] = (float) x;
                        ((float *) b)[i] = (float) y;
                } else {
                        ((double *) a)[i] = x;
                        ((double *) b)[i] = y;
                }
        }
        for (int rep = 0; rep < 4; rep++) {
                double t = now();

                if (single)
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n,
                                    b, n, 0.0f, c, n);
                else
                        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n,
                                    b, n, 0.0, c, n);
                t = now() - t;
                if (rep > 0 && 2.0 * n * (double) n * n / t / 1e9 > best)
                        best = 2.0 * n * (double) n * n / t / 1e9;
        }
        free(c);
        free(b);
        free(a);
        return best;
}

static void die(int err)
{
        fprintf(stderr, "bench-cka: %s\n", kdl_errmsg()[0] ? kdl_errmsg() : kdl_strerror(err));
        exit(1);
}

int main(int argc, char **argv)
{
        kdl_h5file *f[2] = {NULL, NULL};
        kdl_h5reader *rd[2 * LAYERS];
        double *buf[2 * LAYERS];
        kdl_tensor t[2 * LAYERS];
        size_t widths[2 * LAYERS], *ids, n, dt = 0, read_rows;
        bool pairs[4 * LAYERS * LAYERS];
        kdl_cka_opts o;
        kdl_cka_state *s = NULL;
        kdl_cka_matrix *m = NULL;
        double t0, t_read = 0.0, seconds, flops = 0.0, peak, rate, srate;
        int err;

        if (argc < 4 || argc > 6) {
                fprintf(stderr,
                        "usage: bench-cka TEACHER.h5 STUDENT.h5 N [BLOCK_ROWS [PRECISION]]\n");
                return 2;
        }
        n = strtoul(argv[3], NULL, 10);
        kdl_cka_opts_init(&o);
        if (argc == 6 && kdl_cka_precision_parse(argv[5], &o.precision) < 0) {
                fprintf(stderr, "bench-cka: %s\n", kdl_errmsg());
                return 2;
        }
        /* KDL_BENCH_READ_ROWS: rows per read (e.g. a multiple of the chunk rows). */
        read_rows = getenv("KDL_BENCH_READ_ROWS") ? strtoul(getenv("KDL_BENCH_READ_ROWS"), NULL, 10)
                                                  : READ_ROWS_DEFAULT;
        ids = malloc(read_rows * sizeof(size_t));
        t0 = now();
        for (int k = 0; k < 2; k++) {
                const kdl_checkpoint *ck;

                err = kdl_h5_open(argv[1 + k], &f[k]);
                if (err < 0)
                        die(err);
                ck = kdl_h5_checkpoint(f[k], "final");
                if (!ck || ck->nlayers != LAYERS) {
                        fprintf(stderr, "bench-cka: %s: expected checkpoint final with %d layers\n",
                                argv[1 + k], LAYERS);
                        return 1;
                }
                for (int j = 0; j < LAYERS; j++) {
                        int i = k * LAYERS + j;

                        err = kdl_h5_reader_open(f[k], &ck->layers[j].feature, KDL_SPATIAL_AVG,
                                                 &rd[i]);
                        if (err < 0)
                                die(err);
                        widths[i] = kdl_h5_reader_cols(rd[i]);
                        dt += widths[i];
                        if (kdl_h5_reader_rows(rd[i]) < n) {
                                fprintf(stderr, "bench-cka: fewer than %zu rows\n", n);
                                return 1;
                        }
                        buf[i] = malloc(read_rows * widths[i] * sizeof(double));
                }
        }
        /* Teacher x student and the diagonal: what the 4 x 4 grid needs. */
        for (int i = 0; i < 2 * LAYERS; i++)
                for (int j = 0; j < 2 * LAYERS; j++) {
                        pairs[i * 2 * LAYERS + j] = (i < LAYERS) != (j < LAYERS);
                        if (i <= j && (i == j || pairs[i * 2 * LAYERS + j]))
                                flops += (i == j ? 1.0 : 2.0) * (double) n * (double) widths[i] *
                                         (double) widths[j];
                }
        flops += 2.0 * (double) n * (double) dt * (2 * LAYERS); /* U = Zᵀ A */
        o.pairs = pairs;
        o.block_rows = argc >= 5 ? strtoul(argv[4], NULL, 10) : 0;
        err = kdl_cka_state_new(2 * LAYERS, widths, &o, &s);
        if (err < 0)
                die(err);
        for (size_t r0 = 0; r0 < n; r0 += read_rows) {
                size_t r1 = r0 + read_rows < n ? r0 + read_rows : n;
                double tr = now();

                for (int i = 0; i < 2 * LAYERS; i++) {
                        err = kdl_h5_reader_read(rd[i], r0, r1, buf[i]);
                        if (err < 0)
                                die(err);
                        t[i] = kdl_tensor_wrap(buf[i], 2, (size_t[]){r1 - r0, widths[i]});
                }
                t_read += now() - tr;
                for (size_t r = r0; r < r1; r++)
                        ids[r - r0] = r;
                err = kdl_cka_accumulate(s, t, ids);
                if (err < 0)
                        die(err);
        }
        err = kdl_cka_finalize(s, &m);
        if (err < 0)
                die(err);
        seconds = now() - t0;
        peak = peak_bytes();

        rate = gemm_rate(4096, false);
        srate = gemm_rate(4096, true);
        printf("{\"n\": %zu, \"precision\": \"%s\", \"block_rows\": %zu, \"seconds\": %.6g, "
               "\"read_seconds\": %.6g, \"peak_bytes\": %.17g, \"state_bytes\": %zu, "
               "\"flops\": %.17g, \"gflops\": %.6g, \"dgemm_gflops\": %.6g, \"sgemm_gflops\": "
               "%.6g, "
               "\"threads\": %d",
               n, kdl_cka_precision_name(o.precision), o.block_rows, seconds, t_read, peak,
               kdl_cka_state_bytes(2 * LAYERS, widths, &o), flops, flops / (seconds - t_read) / 1e9,
               rate, srate, openblas_get_num_threads());
        for (int e = 0; e < 2; e++) {
                const double *v = e ? m->debiased : m->biased;

                printf(", \"%s\": [", e ? "debiased" : "biased");
                for (int i = 0; i < LAYERS; i++) {
                        printf("%s[", i ? ", " : "");
                        for (int j = 0; j < LAYERS; j++)
                                printf("%s%.17g", j ? ", " : "", v[i * 2 * LAYERS + LAYERS + j]);
                        printf("]");
                }
                printf("]");
        }
        printf("}\n");
        kdl_cka_matrix_free(m);
        kdl_cka_state_free(s);
        for (int i = 0; i < 2 * LAYERS; i++) {
                kdl_h5_reader_close(rd[i]);
                free(buf[i]);
        }
        kdl_h5_close(f[1]);
        kdl_h5_close(f[0]);
        free(ids);
        return 0;
}
