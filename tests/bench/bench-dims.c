/* SPDX-License-Identifier: MIT */
/*
 * bench-dims: time and peak memory of the dims metrics (metrics/spectral) on
 * generated data, without I/O.  Not a test; tests/bench/bench-dims.py runs it
 * beside numpy and prints both.
 *
 *   bench-dims N D C [BLOCK]
 *
 * Streams N samples of D features and C logits in blocks of BLOCK rows (1024
 * by default) through one joint state (the student-layer case: spectrum and
 * ridge of C centred logits) and one state over the C logits (residual
 * curve), then finalizes both.  Prints one line of key=value pairs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "metrics/base/error.h"
#include "metrics/spectral.h"

static double now(void)
{
        struct timespec t;

        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double) t.tv_sec + 1e-9 * (double) t.tv_nsec;
}

static long peak_rss_kib(void)
{
        struct rusage u;

        getrusage(RUSAGE_SELF, &u);
        return u.ru_maxrss;
}

static uint64_t splitmix64(uint64_t *s)
{
        uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

/* Uniform in (-1, 1). */
static double unif(uint64_t *s)
{
        return ((double) (splitmix64(s) >> 11) + 0.5) * 0x1.0p-52 - 1.0;
}

int main(int argc, char **argv)
{
        size_t n, d, c, block = 1024;
        double *x, *z, *scale, t0, tgen = 0, tacc = 0, tfin, acc_flops;
        kdl_spectral_state *sx = NULL, *sz = NULL;
        kdl_spectral_result *rx = NULL, *rz = NULL;
        kdl_spectral_opts o;
        uint64_t seed = 42;
        long rss_before;
        int err;

        if (argc < 4 || argc > 5) {
                fprintf(stderr, "usage: bench-dims N D C [BLOCK]\n");
                return 2;
        }
        n = strtoul(argv[1], NULL, 10);
        d = strtoul(argv[2], NULL, 10);
        c = strtoul(argv[3], NULL, 10);
        if (argc == 5)
                block = strtoul(argv[4], NULL, 10);
        if (n < 2 || d < 1 || c < 2 || block < 1) {
                fprintf(stderr, "bench-dims: bad sizes\n");
                return 2;
        }

        x = malloc(block * d * sizeof(double));
        z = malloc(block * c * sizeof(double));
        scale = malloc(d * sizeof(double));
        if (!x || !z || !scale)
                return 1;
        /* A decaying spectrum, so that the summaries are not trivial. */
        for (size_t j = 0; j < d; j++)
                scale[j] = 1.0 / (1.0 + 0.05 * (double) j);
        rss_before = peak_rss_kib();
        kdl_spectral_opts_init(&o);

        err = kdl_spectral_state_new(d, c, KDL_SPECTRAL_CENTER_ROWS_Y, &sx);
        if (!err)
                err = kdl_spectral_state_new(c, 0, KDL_SPECTRAL_CENTER_ROWS_X, &sz);
        for (size_t i = 0; !err && i < n; i += block) {
                size_t m = i + block < n ? block : n - i;
                kdl_tensor xb = kdl_tensor_wrap(x, 2, (size_t[]){m, d});
                kdl_tensor zb = kdl_tensor_wrap(z, 2, (size_t[]){m, c});

                t0 = now();
                for (size_t r = 0; r < m; r++) {
                        for (size_t j = 0; j < d; j++)
                                x[r * d + j] = scale[j] * unif(&seed);
                        /* Logits read the first C features, plus noise. */
                        for (size_t k = 0; k < c; k++)
                                z[r * c + k] = 3.0 * x[r * d + k % d] + 0.1 * unif(&seed);
                }
                tgen += now() - t0;
                t0 = now();
                err = kdl_spectral_accumulate(sx, &xb, &zb);
                if (!err)
                        err = kdl_spectral_accumulate(sz, &zb, NULL);
                tacc += now() - t0;
        }
        t0 = now();
        if (!err)
                err = kdl_spectral_finalize(sx, &o, &rx);
        if (!err)
                err = kdl_spectral_finalize(sz, &o, &rz);
        tfin = now() - t0;
        if (err < 0) {
                fprintf(stderr, "bench-dims: %s: %s\n", kdl_strerror(err), kdl_errmsg());
                return 1;
        }
        acc_flops = (double) n * ((double) d * (double) (d + 1) + 2.0 * (double) d * (double) c);
        printf("impl=kdlens n=%zu d=%zu c=%zu block=%zu generate_s=%.3f accumulate_s=%.3f "
               "finalize_s=%.3f total_s=%.3f accumulate_gflops=%.1f peak_rss_mib=%.1f "
               "rss_before_state_mib=%.1f lambda1=%.17g rank=%zu effective_rank=%.6f "
               "dims95=%zu ridge_lambda=%.6g ridge_r2=%.12f logit_tail1=%.12f\n",
               n, d, c, block, tgen, tacc, tfin, tacc + tfin, acc_flops / tacc * 1e-9,
               (double) peak_rss_kib() / 1024.0, (double) rss_before / 1024.0, rx->eig[0],
               rx->sum.rank, rx->sum.effective_rank, rx->sum.dims95, rx->ridge.lambda, rx->ridge.r2,
               rz->tail[1]);
        kdl_spectral_result_free(rz);
        kdl_spectral_result_free(rx);
        kdl_spectral_state_free(sz);
        kdl_spectral_state_free(sx);
        free(scale);
        free(z);
        free(x);
        return 0;
}
