/* SPDX-License-Identifier: MIT */
/* dims' options: their defaults, and the checks made before anything is read. */
#include <math.h>
#include <stdbool.h>

#include "metrics/spectral.h"
#include "analysis/dims.h"
#include "analysis/dims-internal.h"
#include "metrics/base/banned.h"

void kdl_run_dims_opts_init(struct kdl_run_dims_opts *o)
{
        *o = (struct kdl_run_dims_opts){.tolerance = 0.01,
                                        .rank_rtol = KDL_SPECTRAL_RANK_RTOL,
                                        .ridge_lambda = -1.0,
                                        .spectrum = true,
                                        .logit_method = KDL_DIMS_LOGITS_AUTO,
                                        .exact_max = KDL_DIMS_EXACT_MAX,
                                        .sketch_rank = KDL_SPECTRAL_SKETCH_RANK,
                                        .sketch_oversample = KDL_SPECTRAL_SKETCH_OVERSAMPLE};
        kdl_run_common_init(&o->common);
}

int kdl__dims_check_opts(const kdl_inputs *in, const struct kdl_run_dims_opts *o)
{
        if (!in->teacher && in->nstudents == 0)
                return kdl_error(-KDL_EUSAGE, "expected a teacher (-t) and/or students (-s)");
        if (!(o->tolerance >= 0.0 && o->tolerance <= 1.0))
                return kdl_error(-KDL_EUSAGE,
                                 "--tolerance: expected a fraction in [0, 1], found %g",
                                 o->tolerance);
        if (!(o->rank_rtol >= 0.0 && o->rank_rtol < 1.0))
                return kdl_error(-KDL_EUSAGE, "--rank-rtol: expected a value in [0, 1), found %g",
                                 o->rank_rtol);
        if (o->logit_method != KDL_DIMS_LOGITS_AUTO &&
            (o->logit_method < 0 || o->logit_method >= KDL_SPECTRAL_METHOD_COUNT_))
                return kdl_error(-KDL_EUSAGE, "--logit-spectrum: %d is not a method",
                                 o->logit_method);
        if (o->sketch_rank == 0)
                return kdl_error(-KDL_EUSAGE, "--sketch-rank: expected at least 1");
        if (o->common.ntau != 1)
                return kdl_error(-KDL_EUSAGE, "--temperature: dims takes one temperature");
        if (!(o->common.tau[0] > 0.0) || !isfinite(o->common.tau[0]))
                return kdl_error(-KDL_EUSAGE, "--temperature: expected a positive number, found %g",
                                 o->common.tau[0]);
        return 0;
}

/* Does any checkpoint of any input have a layer called name? */
bool kdl__dims_layer_exists(const kdl_inputs *in, const char *name)
{
        for (size_t m = 0; m <= in->nstudents; m++) {
                kdl_h5file *f = m < in->nstudents ? in->students[m] : in->teacher;
                const kdl_dump *d = f ? kdl_h5_dump(f) : NULL;

                for (size_t k = 0; d && k < d->ncheckpoints; k++)
                        if (kdl_h5_layer(&d->checkpoints[k], name))
                                return true;
        }
        return false;
}
