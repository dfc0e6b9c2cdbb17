/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_QUALITY_H
#define KDL_METRICS_QUALITY_H

#include <stddef.h>
#include <stdint.h>

#include "metrics/base/error.h"
#include "metrics/base/tensor.h"

/*
 * Layer quality before distillation (docs/layers.md#knowledge-quality, docs/layers.md): Cooper et
 * al.'s knowledge quality Q = S + sqrt(I·E) as computed by the authors' code
 * (Thegolfingocto/KD_wo_CE, TPlotClassificationEfficiency's "Quality2"), and
 * class-geometry columns.  Everything here works on an in-memory,
 * class-balanced subsample (the pipeline draws it with kdl_sample_select());
 * pairwise quantities need O(n²) memory.
 */

enum kdl_quality_variant {
        /* The authors' code, quirks included.  Its within-class mean indexes
         * the class's |cos| block with torch.triu_indices(n_c, n_c, 1) as a
         * single index, which selects whole rows (each row n_c - 1 times),
         * so it averages the whole n_c x n_c block, diagonal of ones
         * included: intra_c = intra_pairs_c + (1 - intra_pairs_c) / n_c.
         * Class spectra truncated to K = Σ_c k_c entries (the summed 95 %
         * counts), mean entropy divided by ln 5.  Zeros in a truncated
         * spectrum are floored at 1e-127 as the code states.  NEEDSWORK: in
         * the authors' float32 tensors that floor underflows to 0, so a
         * class whose K-truncated spectrum contains zero padding
         * (K > min(n_c, D)) gets entropy NaN -> 0 there; kdlens does not
         * copy this accident (it zeroes I for narrow layers, D < K). */
        KDL_QUALITY_CODE,
        /* The code's variant with the within-class mean over the strict
         * pairs a < b, as its indexing evidently meant; I and E as in
         * KDL_QUALITY_CODE. */
        KDL_QUALITY_PAIRS,
        /* kdlens's documented variant: strict pairs, and each class's
         * spectrum truncated to its own k_c and its entropy divided by
         * ln k_c (0 when k_c <= 1). */
        KDL_QUALITY_PER_CLASS,
        KDL_QUALITY_VARIANT_COUNT_
};

/** kdl_quality_variant_name() - "code", "pairs" or "per-class". */
KDL_API const char *kdl_quality_variant_name(enum kdl_quality_variant v);

/** kdl_quality_variant_parse() - the variant named @s; -KDL_EUSAGE otherwise. */
KDL_API int kdl_quality_variant_parse(const char *s, enum kdl_quality_variant *ret);

/* Options of kdl_quality_compute(); kdl_quality_opts_init() gives the defaults. */
typedef struct kdl_quality_opts {
        enum kdl_quality_variant variant; /* default KDL_QUALITY_CODE */
        double var_threshold; /* share of class variance for k_c, in (0, 1]; default 0.95 */
        double population;    /* N in (N/π)^(1/r), the training-set size, >= 0; 0 (default):
                                 the rows of @x */
        double eps;           /* a feature with ‖f‖ <= eps counts as zero (its cosines are 0);
                                 > 0, default 1e-12 */
        double rank_rtol;     /* NC1: between-class directions with s² <= rank_rtol·s²_max are
                                 dropped from the pseudo-inverse; default 1e-12 */
} kdl_quality_opts;

/**
 * kdl_quality_opts_init() - set every field of @o to its default: the
 * authors' variant, threshold 0.95, population the rows of @x, eps and
 * rank_rtol 1e-12.  A NULL options pointer means these.
 */
KDL_API void kdl_quality_opts_init(kdl_quality_opts *o);

typedef struct kdl_quality {
        double q, s, i, e; /* Q = S + sqrt(I·E) */
        /* S = intra - inter, mean absolute cosine within (the variant's mean:
         * the whole block for code, the pairs a < b otherwise) / between
         * classes. */
        double intra, inter;
        /* I = (1 - min_intra) · entropy / entropy_norm. */
        double min_intra;    /* mean over classes of the smallest within-class |cos| */
        double entropy;      /* mean class spectral entropy (variant: of H_c / ln k_c) */
        double entropy_norm; /* ln 5 (code, pairs) or 1 (per-class) */
        size_t k_sum;        /* Σ_c k_c, the summed 95 % counts */
        double k_mean;       /* k_sum / classes with a spectrum */
        /* E = 2 dmin / norm · packing. */
        double dmin;             /* mean over classes of the nearest other-class distance */
        double norm;             /* mean over classes of the mean feature norm */
        double packing;          /* (N/π)^(1/r) */
        size_t r;                /* entries of the global spectrum: min(n, D) */
        double ncm_accuracy;     /* nearest-class-mean accuracy on @x (class means of @x) */
        double nc1;              /* tr(Σ_W Σ_B⁺)/C (Papyan et al. 2020) */
        double effective_rank;   /* exp(entropy of the centred spectrum) (Roy & Vetterli 2007) */
        size_t n;                /* rows of @x */
        size_t nclasses;         /* classes with >= 2 rows in @x (the ones S, I, E average) */
        size_t nspectra;         /* classes with >= 2 rows in @xc */
        size_t class_rows_min;   /* rows in @x of the smallest class of nclasses */
        size_t spectra_rows_min; /* rows in @xc of the smallest class of nspectra */
        size_t nzero;            /* rows of @x with ‖f‖ <= eps */
} kdl_quality;

/**
 * kdl_quality_compute() - Q, S, I, E and the extra columns of one layer.
 * @x:        [n, D] features of the class-balanced subsample (authors: 5,000
 *            rows) used for S, the within-class minima, E, NCM, NC1 and the
 *            effective rank; borrowed.
 * @labels:   n labels in 0..@nclasses-1.
 * @xc:       [n_c, D] features for the per-class spectra (authors: a second
 *            subsample of min(500, N/C) rows per class); may be @x itself.
 * @labels_c: its labels.
 * @o:        NULL for the defaults (kdl_quality_opts_init(): the authors'
 *            variant).
 * @ret:      set on success only.
 *
 * A one-shot computation on in-memory data: there is no state to
 * accumulate, merge or finalize, and the inputs are not modified.
 *
 * Classes with fewer than 2 rows in @x are left out of S, I and E (the
 * authors' code assumes none); @ret says how many classes were used.
 * Cosines and distances come from one n×n Gram matrix in float64, distances
 * as sqrt(max(0, ‖a‖² + ‖b‖² - 2aᵀb)); each class's nearest-enemy distance
 * is then recomputed from the features.  Memory (kdl_quality_bytes()): n² + n D
 * doubles throughout, then the largest of the class spectra, the effective
 * rank's covariance, and the n x K products and K x K eigenvectors of NCM and
 * NC1 over the K classes present, and a few counters per class of @nclasses
 * (no table grows as @nclasses², so a subsample of a few classes out of a
 * vocabulary of labels costs what its rows cost).
 *
 * Return: 0; -KDL_ESHAPE (widths differ, fewer than two classes with two
 * rows); -KDL_ERANGE (a label, an option); -KDL_ENONFINITE; -KDL_ENOCONV
 * (eigensolver); -KDL_EOVERFLOW; -ENOMEM.  On failure @ret is unchanged.
 */
KDL_API int kdl_quality_compute(const kdl_tensor *x, const int64_t *labels, const kdl_tensor *xc,
                                const int64_t *labels_c, size_t nclasses, const kdl_quality_opts *o,
                                kdl_quality *ret);

/**
 * kdl_quality_bytes() - the most kdl_quality_compute() holds at once besides its inputs, in
 * bytes (saturating): for @n rows of width @d in @present classes (with rows) of @nclasses,
 * and @ncr class-spectra rows whose largest class has @ncols rows.  The largest of its
 * steps, each with the class-sorted copy of @x and the n x n Gram: the class spectra, the
 * effective rank (the centred covariance, or the Gram's eigenvalues), NCM (n x classes
 * scores) and NC1 (the between-class eigenvectors and two n x classes products), LAPACKE's
 * row-major copies and workspaces included.
 */
KDL_API size_t kdl_quality_bytes(size_t n, size_t d, size_t nclasses, size_t present, size_t ncr,
                                 size_t ncols);

/*
 * The fewest samples per class of the authors' settings: their subsample of
 * 5000 // C per class is 50 for C = 100 (CIFAR-100).  Below it Q is outside
 * the range its constants were chosen for (the ln 5 normalisation of I and
 * the minima, which depend on the subsample size).
 */
#define KDL_QUALITY_MIN_PER_CLASS 50

/* How Q can be outside its design range (bit flags; 0: in range). */
enum kdl_quality_range {
        KDL_QUALITY_I_OUT = 1u << 0, /* I outside [0, 1], or not finite */
        KDL_QUALITY_E_OUT = 1u << 1, /* E outside [0, 1], or not finite */
        KDL_QUALITY_FEW = 1u << 2,   /* a class with fewer rows than asked, in @x or @xc */
};

/**
 * kdl_quality_range() - is @q inside the range Q was designed for?
 * @q:             a result of kdl_quality_compute(); borrowed.
 * @min_per_class: the fewest rows a class may have in either subsample
 *                 (KDL_QUALITY_MIN_PER_CLASS for the authors' settings).
 *
 * Q = S + sqrt(I·E) is read as a ranking of layers with I and E in [0, 1]
 * and the authors' subsample sizes; outside them its terms no longer weigh
 * as intended (e.g. I = 1.36 at 30 samples per class with the ln 5
 * normalisation of the code variant).
 *
 * Return: the or of enum kdl_quality_range; 0 when in range.
 */
KDL_API unsigned kdl_quality_range(const kdl_quality *q, size_t min_per_class);

#endif
