/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_LAYERS_H
#define KDL_ANALYSIS_LAYERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "analysis/inputs.h"
#include "loaders/h5.h"
#include "metrics/quality.h"
#include "metrics/sample.h"
#include "reports/table.h"

/*
 * `kdlens layers -t T.h5 [-s S.h5]` (docs/layers.md#knowledge-quality, docs/layers.md): every
 * teacher layer with Cooper et al.'s knowledge quality Q = S + sqrt(I·E), its parts, CKA against
 * the teacher's logits and the labels, class-geometry columns; ranked by Q, with the top k
 * recommended in depth order.
 */

struct kdl_run_layers_opts {
        struct kdl_run_common common; /* reads checkpoint (the teacher's), spatial,
                                         skip_nonfinite */
        size_t k;                     /* layers to recommend */
        size_t subsample;             /* class-balanced rows for S, E and the extra columns
                                         (subsample / C per class; subsample / K with a
                                         class subset of K classes) */
        size_t per_class;             /* rows per class for the class spectra, at most N / C
                                         (the kept samples / K with a class subset) */
        enum kdl_quality_variant variant;
        uint64_t seed;
        /* The subsample X drawn by the teacher's /sequence_ids instead (subsample rows of
         * sequences in a seeded order, as kdl_sample_select_sequences()), then those of the
         * kept classes; the class spectra stay class-balanced. */
        bool sequences;
        size_t per_sequence; /* with sequences: 0 every token of each, else this many */
        /* Which classes Q is computed on: KDL_LAYERS_CLASSES_AUTO (every class
         * when subsample / C >= 2 and min_per_class is 0, else a subset),
         * KDL_LAYERS_CLASSES_ALL (every class; refused when subsample / C < 2),
         * or a subset of at most this many classes (>= 2). */
        size_t classes;
        /* A subset keeps classes with at least this many samples in the dump
         * (>= 2; asks for a subset); 0: chosen from the label counts (see
         * docs/layers.md). */
        size_t min_per_class;
        enum kdl_sample_class_rule class_rule; /* which eligible classes a subset keeps */
        /* cka_logits and cka_labels (and the student's logits in layers_cka)
         * need min(N, C)² doubles per pair: computed when min(N, C) <= this. */
        size_t cka_max_width;
};

#define KDL_LAYERS_CLASSES_AUTO ((size_t) 0)
#define KDL_LAYERS_CLASSES_ALL  SIZE_MAX

/**
 * kdl_run_layers_opts_init() - common defaults, 4 layers recommended, a
 * subsample of 5000, 500 per class, the authors' code variant, seed 0,
 * 8 GiB at most; classes auto, minimum per class auto, the most frequent
 * classes first; logits and labels CKA up to min(N, C) = 4096.
 */
KDL_API void kdl_run_layers_opts_init(struct kdl_run_layers_opts *o);

/**
 * kdl_run_layers() - add the tables "layers" (ranked by Q, ties by depth;
 * in_range false and range_note for a layer outside Q's design range,
 * kdl_quality_range() with KDL_QUALITY_MIN_PER_CLASS, counted in a note),
 * "layers_detail" (the parts of S, I, E and the debiased CKAs),
 * "layers_recommended" (the top k in depth order) and, with a student,
 * "layers_cka" (teacher × student linear CKA) to @doc.
 * @in: the teacher, and at most one student (paired).
 *
 * With a class subset (many classes, or @o->classes, @o->min_per_class),
 * Q and the class-geometry columns are computed on the kept classes only, a
 * note says which and why, and the one-row table "layers_class_subset"
 * (the rule and the counts) is added.
 *
 * One streaming pass gives the linear CKAs over every sample and gathers the
 * class-balanced subsample of every layer; one more pass per layer gathers
 * its class-spectra subsample.  Memory: the CKA state plus
 * subsample × Σ widths, plus one layer's class-spectra rows, plus O(C)
 * counters (nothing C × C or C × D beyond the kept classes).
 *
 * Return: 0; -KDL_EMISSING when the teacher has no labels; -KDL_EUSAGE for a
 * missing checkpoint, a subsample smaller than twice the number of classes
 * with KDL_LAYERS_CLASSES_ALL, or a minimum per class that leaves fewer than
 * two classes; -KDL_ESHAPE when fewer than two classes have two samples;
 * -KDL_EBUDGET when the CKA state would exceed @o->common.memory (--memory); the loader's
 * and metrics' errors.
 */
KDL_API int kdl_run_layers(kdl_inputs *in, const struct kdl_run_layers_opts *o, kdl_doc *doc);

/**
 * kdl_run_layers_plan() - what kdl_run_layers() would need with @in and @o, from the shapes
 * alone (--plan; the labels are not read, so the class-spectra subsample is bounded by the
 * class rule): the tables "plan" and "plan_parts" into @doc, as kdl_run_kl_plan().
 * Return: 0; -KDL_EMISSING without labels; the errors of finding the checkpoints and
 * sources; -ENOMEM.
 */
KDL_API int kdl_run_layers_plan(kdl_inputs *in, const struct kdl_run_layers_opts *o, kdl_doc *doc);

#endif
