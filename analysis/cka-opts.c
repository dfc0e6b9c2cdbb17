/* SPDX-License-Identifier: MIT */
/* The cka command's options: their names and defaults. */
#include <assert.h>
#include <string.h>

#include "metrics/base/error.h"
#include "analysis/cka.h"
#include "metrics/base/banned.h"

#define DEFAULT_SUBSAMPLE 2048
#define DEFAULT_BATCH     256
#define DEFAULT_THETA     0.5
#define DEFAULT_ROBUST    0.01
/* Wide sources: min(N, width) above 4096 (a 128 MiB block); sketches of 1024 columns. */
#define DEFAULT_WIDE_MAX  4096
#define DEFAULT_WIDE_RANK 1024
#define DEFAULT_KEEP      0.99

static const char *const estimator_names[KDL_RUN_CKA_ESTIMATOR_COUNT_] = {"biased", "debiased",
                                                                          "minibatch"};

const char *kdl_run_cka_estimator_name(enum kdl_run_cka_estimator e)
{
        assert(e < KDL_RUN_CKA_ESTIMATOR_COUNT_);
        return estimator_names[e];
}

int kdl_run_cka_estimator_parse(const char *s, enum kdl_run_cka_estimator *ret)
{
        for (int e = 0; e < KDL_RUN_CKA_ESTIMATOR_COUNT_; e++)
                if (strcmp(s, estimator_names[e]) == 0) {
                        *ret = (enum kdl_run_cka_estimator) e;
                        return 0;
                }
        return kdl_error(-KDL_EUSAGE,
                         "--estimator: expected biased, debiased or minibatch, found '%s'", s);
}

int kdl_run_cka_kernel_parse(const char *s, enum kdl_cka_kernel *ret)
{
        for (int k = 0; k < KDL_CKA_KERNEL_COUNT_; k++)
                if (strcmp(s, kdl_cka_kernel_name((enum kdl_cka_kernel) k)) == 0) {
                        *ret = (enum kdl_cka_kernel) k;
                        return 0;
                }
        return kdl_error(-KDL_EUSAGE, "--kernel: expected linear or rbf, found '%s'", s);
}

void kdl_run_cka_opts_init(struct kdl_run_cka_opts *o)
{
        *o = (struct kdl_run_cka_opts){.kernel = KDL_CKA_LINEAR,
                                       .estimator = KDL_RUN_CKA_BIASED,
                                       .subsample = DEFAULT_SUBSAMPLE,
                                       .batch = DEFAULT_BATCH,
                                       .theta = DEFAULT_THETA,
                                       .robust = DEFAULT_ROBUST,
                                       .precision = KDL_CKA_PRECISION_DOUBLE,
                                       .wide_max = DEFAULT_WIDE_MAX,
                                       .wide = KDL_RUN_CKA_WIDE_SKETCH,
                                       .wide_rank = DEFAULT_WIDE_RANK,
                                       .measures = 1u << KDL_RUN_CKA_MEASURE_CKA,
                                       .svcca_keep = DEFAULT_KEEP};
        kdl_run_common_init(&o->common);
}
