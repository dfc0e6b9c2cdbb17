/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_KL_TOPK_H
#define KDL_ANALYSIS_KL_TOPK_H

#include <stdbool.h>
#include <stddef.h>

#include "analysis/inputs.h"
#include "analysis/kl.h"
#include "reports/table.h"

/*
 * `kdlens kl --topk K1,K2,...`: the kl document (analysis/kl.h) plus the table
 * "kl_topk", how well sparse teacher targets approximate the exact KD
 * criterion of a dense teacher (metrics/kl-topk.h, docs/lm.md): per student,
 * checkpoint and temperature one "hard" row, then topk_renorm, topk_tail and
 * sampled for each k.  Both analyses share one stream: the logits are read
 * once per pass.
 */

/* The most values --topk takes. */
#define KDL_RUN_MAX_TOPK 16

/**
 * kdl_run_kl_topk() - kdl_run_kl() with the sparse sources for the @nk values
 * of @k (borrowed; distinct, each in [1, classes]) in the table "kl_topk".
 * The draws of `sampled` use o->seed.  The budget check (o->common.memory) counts the
 * top-k job's state beside kl's (kdl_run_kl_topk_plan()).
 * Return: as kdl_run_kl(); -KDL_EBUDGET naming fewer --topk values when its state is the
 * largest part; -KDL_ESHAPE for a k above the class count.  Under MPI the top-k job's
 * states are merged on rank 0 as kl's (kdl_kl_topk_state_pack()).
 */
KDL_API int kdl_run_kl_topk(const kdl_inputs *in, const struct kdl_run_kl_opts *o, const size_t *k,
                            size_t nk, kdl_doc *doc);

/**
 * kdl_run_kl_topk_plan() - what kdl_run_kl_topk() would need with @in, @o and the @nk values
 * of @k, from the shapes alone: kdl_run_kl_plan()'s tables, with the top-k job's state
 * (kdl_kl_topk_bytes(): its statistics and scratch, and its Spearman reservoir) beside each
 * kl job.  Return: as kdl_run_kl_plan().
 */
KDL_API int kdl_run_kl_topk_plan(const kdl_inputs *in, const struct kdl_run_kl_opts *o,
                                 const size_t *k, size_t nk, kdl_doc *doc);

/** kdl_kl_teacher_sparse() - whether the teacher checkpoint the first student is compared with
 * (as @o selects it) holds sparse logits (logits_topk/) and no dense ones. */
KDL_API bool kdl_kl_teacher_sparse(const kdl_inputs *in, const struct kdl_run_kl_opts *o);

/**
 * kdl_run_kl_sparse() - `kdlens kl` against a sparse-only teacher: the table "kl_sparse" of
 * what its top-k logits give exactly (metrics/kl-sparse.h) per student and checkpoint: hard,
 * at tau 1 with the normaliser teacher_mass and topk_tail, and topk_renorm per temperature, as
 * means and standard deviations; a note says the exact KL is not computed.
 * Return: 0; -KDL_EUSAGE when a compared teacher checkpoint is not sparse-only; -KDL_EMISSING
 * for a student without logits; -KDL_ERANGE for an index that is not a class; I/O codes.
 */
KDL_API int kdl_run_kl_sparse(const kdl_inputs *in, const struct kdl_run_kl_opts *o, kdl_doc *doc);

#endif
