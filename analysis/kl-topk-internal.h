/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_KL_TOPK_INTERNAL_H
#define KDL_ANALYSIS_KL_TOPK_INTERNAL_H

#include "loaders/h5.h"
#include "reports/table.h"

/* kdl__kl_topk_keys() - a new row of @t (kl_topk or kl_sparse) with its leading keys:
 * student, checkpoint, step, teacher_checkpoint, tau.  Return: 0; -ENOMEM. */
int kdl__kl_topk_keys(kdl_table *t, const char *student, const kdl_checkpoint *cs,
                      const kdl_checkpoint *ct, double tau);

#endif
