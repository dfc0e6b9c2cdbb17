/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_KL_H
#define KDL_ANALYSIS_KL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "analysis/inputs.h"
#include "loaders/h5.h"
#include "reports/table.h"

/*
 * `kdlens kl`: how well each knowledge source approximates the KD criterion
 * τ² KL(p^t_τ || p^s_τ) (docs/kl.md, metrics/kl.h).
 *
 * For every student, every selected checkpoint of that student (paired with
 * the teacher's last checkpoint, or as teacher_checkpoint says) and
 * every temperature, one row per value of metrics/kl.h: the exact KL first,
 * then each approximation.  The datasets read are the logits of both, the
 * head-input features of both (the layer named by each head's "input"
 * attribute), the teacher's head weight, the teacher's feature gradient at
 * its head input and both logit gradients.  A source whose data are missing
 * gets a row with available = false and "needs" naming the missing
 * datasets ('file': /path).
 *
 * Passes: one over the data per checkpoint serves every temperature; when
 * the head-input widths differ, a first pass fits the projector P.
 */

struct kdl_run_kl_opts {
        struct kdl_run_common common; /* reads every field */
        size_t reservoir;             /* Spearman subsample cap */
        uint64_t seed;                /* of the Spearman subsample */
};

/** kdl_run_kl_opts_init() - common defaults, a KDL_KL_RESERVOIR_DEFAULT reservoir, seed 1. */
KDL_API void kdl_run_kl_opts_init(struct kdl_run_kl_opts *o);

/**
 * kdl_run_kl() - compute the tables "kl" (one row per student, checkpoint,
 * temperature and value) and "kl_features" (one row per student and
 * checkpoint: widths, projector, R², KL-visible share) into @doc.
 * @in: a teacher and at least one student, opened and paired.
 *
 * The per-sample file, when asked for, holds for student k the float64
 * vectors /students/<k>/checkpoints/<ck>/tau_<τ>/<value> [N] in the
 * teacher's sample order (NaN for skipped samples); it is written under a
 * temporary name and renamed only when everything succeeded.
 *
 * Return: 0; -KDL_EUSAGE for a checkpoint name no student (or, for
 * teacher_checkpoint, the teacher) has;
 * -KDL_EMISMATCH when teacher and student class counts differ;
 * -KDL_ESCHEMA for a head weight or gradient whose shape does not fit its
 * feature; -KDL_EBUDGET when it needs more than o->common.memory (nothing
 * is computed); -KDL_ENONFINITE naming the dataset and sample; I/O codes.
 */
KDL_API int kdl_run_kl(const kdl_inputs *in, const struct kdl_run_kl_opts *o, kdl_doc *doc);

/**
 * kdl_run_kl_plan() - what kdl_run_kl() would need with @in and @o, from the
 * shapes alone (no data is read): the tables "plan" (the need, the budget
 * o->common.memory, whether it fits) and "plan_parts" (what the memory is
 * for) into @doc.  kdl_run_kl() refuses (-KDL_EBUDGET) a need that does not
 * fit before it allocates anything.
 * Return: 0; the errors of finding the sources, as kdl_run_kl(); -ENOMEM.
 */
KDL_API int kdl_run_kl_plan(const kdl_inputs *in, const struct kdl_run_kl_opts *o, kdl_doc *doc);

#endif
