/* SPDX-License-Identifier: MIT */
/* The calibration state's layout, for metrics/calibration*.c only. */
#ifndef KDL_METRICS_CALIBRATION_INTERNAL_H
#define KDL_METRICS_CALIBRATION_INTERNAL_H

#include "metrics/calibration.h"
#include "metrics/kl.h"

/*
 * Every statistic is a sum over samples, so the state holds sums: counts
 * as doubles (exact up to 2^53 samples) and sums of probabilities; ECE and
 * classwise ECE are |Σ hits - Σ probabilities| per bin, which is the same
 * number as |B|/N |acc - conf| without a division per bin.  Each sum adds
 * the samples one by one in their order, so that the results do not depend
 * on how the rows were cut into blocks (the KL too: its per-sample values,
 * not the KL state's own block-wise moments).
 */
struct kdl_calibration_state {
        kdl_calibration_opts o;
        size_t n, correct, agree;
        double nll, conf, kl; /* Σ -log p_y, Σ c_n, Σ τ² KL */
        double *bin;          /* [3, bins]: samples, correct, Σ c_n of each confidence bin */
        double *cls;          /* [2, c, bins]: per class j and bin of p_j: Σ 1[y = j], Σ p_j */
        double *lp;           /* [2, c]: z and exp(z - max z) of one sample */
        kdl_kl_state *klst;   /* with a teacher: the per-sample KL of a block */
};

#endif
