/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_CKA_H
#define KDL_ANALYSIS_CKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "analysis/inputs.h"
#include "loaders/h5.h"
#include "metrics/cka.h"
#include "reports/table.h"

/*
 * `kdlens cka A.h5 [B.h5]` (docs/cka.md, docs/layers.md): CKA between every layer of
 * dump A and every layer of dump B (A with itself without B), the logits
 * counting as one more layer, and every layer against A's logits and the
 * one-hot labels.
 */

/* Which CKA estimator the "cka" matrix shows (every one is in "cka_pairs"). */
enum kdl_run_cka_estimator {
        KDL_RUN_CKA_BIASED,    /* Kornblith et al. 2019 */
        KDL_RUN_CKA_DEBIASED,  /* unbiased HSIC */
        KDL_RUN_CKA_MINIBATCH, /* Nguyen et al. 2021, linear kernel */
        KDL_RUN_CKA_ESTIMATOR_COUNT_
};

/* How a pair with a wide source is computed (docs/cka.md#wide-layers): a source is wide
 * when both its width and the sample count exceed --wide-max. */
enum kdl_run_cka_wide {
        KDL_RUN_CKA_WIDE_SKETCH, /* "sketch": each wide source by a seeded Gaussian sketch,
                                    one pass; an estimate with its standard error */
        KDL_RUN_CKA_WIDE_EXACT,  /* "exact": their products in column strips, more passes */
        KDL_RUN_CKA_WIDE_COUNT_
};

/* The measures of --measure (docs/cka.md#cca-svcca-pwcca-and-procrustes), as bits
 * 1u << m of kdl_run_cka_opts.measures.  CKA always is one. */
enum kdl_run_cka_measure {
        KDL_RUN_CKA_MEASURE_CKA,        /* "cka" */
        KDL_RUN_CKA_MEASURE_CCA,        /* "cca": mean canonical correlation and its square */
        KDL_RUN_CKA_MEASURE_SVCCA,      /* "svcca" (Raghu et al. 2017) */
        KDL_RUN_CKA_MEASURE_PWCCA,      /* "pwcca" (Morcos et al. 2018) */
        KDL_RUN_CKA_MEASURE_PROCRUSTES, /* "procrustes": orthogonal Procrustes distance */
        KDL_RUN_CKA_MEASURE_COUNT_
};

/** kdl_run_cka_measure_name() - "cka", "cca", "svcca", "pwcca" or "procrustes". */
KDL_API const char *kdl_run_cka_measure_name(enum kdl_run_cka_measure m);

/** kdl_run_cka_measures_parse() - the bits of a comma-separated list of measure names
 * or "all", with CKA's always set; -KDL_EUSAGE otherwise. */
KDL_API int kdl_run_cka_measures_parse(const char *s, unsigned *ret);

/** kdl_run_cka_wide_name() - "sketch" or "exact". */
KDL_API const char *kdl_run_cka_wide_name(enum kdl_run_cka_wide w);

/** kdl_run_cka_wide_parse() - the mode named @s; -KDL_EUSAGE otherwise. */
KDL_API int kdl_run_cka_wide_parse(const char *s, enum kdl_run_cka_wide *ret);

/** kdl_run_cka_estimator_name() - "biased", "debiased" or "minibatch". */
KDL_API const char *kdl_run_cka_estimator_name(enum kdl_run_cka_estimator e);

/** kdl_run_cka_estimator_parse() - the estimator named @s; -KDL_EUSAGE otherwise. */
KDL_API int kdl_run_cka_estimator_parse(const char *s, enum kdl_run_cka_estimator *ret);

/** kdl_run_cka_kernel_parse() - "linear" or "rbf" (for --kernel); -KDL_EUSAGE otherwise. */
KDL_API int kdl_run_cka_kernel_parse(const char *s, enum kdl_cka_kernel *ret);

struct kdl_run_cka_opts {
        struct kdl_run_common common; /* reads checkpoint (A's), spatial, skip_nonfinite, memory */
        enum kdl_cka_kernel kernel;   /* selects the matrix shown */
        enum kdl_run_cka_estimator estimator; /* selects the matrix shown */
        const char *partner_checkpoint;       /* B's: NULL the one of the same name, else
                                                 its last; or a name for every checkpoint */
        size_t bootstrap;               /* Poisson bootstrap replicates of linear CKA; 0: none */
        enum kdl_cka_interval interval; /* bootstrap interval (percentile, basic, bca) */
        uint64_t seed;                  /* subsamples, bootstrap weights, minibatch order */
        size_t subsample;               /* rows for RBF, minibatch and the robust column */
        bool sequences;      /* the subsample by A's /sequence_ids: sequences in a seeded order */
        size_t per_sequence; /* with sequences: 0 every token of each, else this many */
        size_t batch;        /* minibatch size m, >= 4 */
        double theta;        /* RBF bandwidth fraction, > 0 */
        double robust;       /* outlier fraction of the robust column, in [0, 0.5) */
        enum kdl_cka_precision precision; /* feature-space products */
        size_t wide_max;                  /* wide: min(N, width) above it; 0: none */
        enum kdl_run_cka_wide wide;       /* how pairs with a wide source are computed */
        size_t wide_rank;                 /* columns of a wide source's sketch, <= wide_max */
        unsigned measures;                /* bits 1u << enum kdl_run_cka_measure; CKA's set */
        double svcca_keep;                /* share of a layer's variance SVCCA keeps, (0, 1] */
};

/**
 * kdl_run_cka_opts_init() - common defaults, the linear kernel, the biased
 * estimator, no bootstrap (percentile intervals when asked), seed 0, a
 * subsample of 2048, batches of 256, theta 0.5, a 1 % robust fraction,
 * double precision, wide sources above 4096 sketched to 1024 columns, the measure
 * CKA alone (SVCCA's share 0.99 when asked).
 */
KDL_API void kdl_run_cka_opts_init(struct kdl_run_cka_opts *o);

/**
 * kdl_run_cka() - compute and add the tables "cka" (the matrix of the
 * selected kernel and estimator: a row per layer of A, a column per layer of
 * B), "cka_pairs" (one record per pair with every value computed) and
 * "cka_targets" (each layer against A's logits and the labels) to @doc, and with B
 * "cka_mapping" (each layer of B's best layer of A and the monotone layer mapping of
 * largest total CKA).
 * @in: A is @in->teacher, B is @in->students[0] when present (paired).
 *
 * Linear and debiased linear CKA stream over every sample in one pass
 * (feature space; Gram space when a layer is wider than the number of
 * samples, chosen automatically and reported in the "method" column; for a
 * pair with a wide source, min(N, width) > @o->wide_max, a sketch of it or
 * column strips over more passes, method "sketch" or "strips"), with
 * @o->bootstrap replicates either way (the same Poisson weights of the same
 * samples, so both spaces give the same intervals): columns *_lo, *_hi, *_se
 * and *_bias, and notes when B < 200 or an interval misses its own point
 * value.  RBF, minibatch and the robust column use a seeded subsample
 * gathered in the same pass (drawn by A's /sequence_ids with @o->sequences).
 *
 * Memory: each checkpoint's job states what it needs (its blocks, the
 * state or, in Gram space, every sample and the n x n Gram matrices, the
 * subsample and what runs on it) before allocating it, and refuses a need
 * above @o->common.memory.
 *
 * Return: 0; -KDL_EUSAGE for a checkpoint that does not exist or an
 * impossible combination (minibatch with the RBF kernel); -KDL_EBUDGET when
 * a checkpoint needs more than @o->common.memory (the message names the
 * size, what it is for and the option that lowers it); the loader's and
 * metrics' errors.
 */
KDL_API int kdl_run_cka(kdl_inputs *in, const struct kdl_run_cka_opts *o, kdl_doc *doc);

/**
 * kdl_run_cka_plan() - what kdl_run_cka() would need with @in and @o (the
 * largest checkpoint), from the shapes alone: the tables "plan" and
 * "plan_parts" into @doc, as kdl_run_kl_plan().
 * Return: 0; the errors of finding the checkpoints and sources; -ENOMEM.
 */
KDL_API int kdl_run_cka_plan(kdl_inputs *in, const struct kdl_run_cka_opts *o, kdl_doc *doc);

#endif
