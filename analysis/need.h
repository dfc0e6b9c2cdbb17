/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_NEED_H
#define KDL_ANALYSIS_NEED_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics/base/budget.h"
#include "reports/table.h"

/*
 * What an analysis will allocate, stated before it allocates anything: the
 * parts that are alive at the same time (blocks, states, subsamples,
 * reservoirs, per-sample buffers), each with the options that lower it.
 * The same need serves the refusal (kdl__need_check(): one line naming the
 * analysis, the size and the option) and --plan (kdl__need_plan(): the parts
 * as a table, without reading any data).
 *
 *      kdl__need nd = {.analysis = "kl"};
 *      err = kdl__need_add(&nd, bytes, KDL_LEVER_SPEARMAN, "the Spearman reservoir of %zu
 *                         samples", n);
 *      err = err ?: kdl__need_check(&nd, o->common.memory, KL_LEVERS);
 *      kdl__need_release(&nd);
 *
 * A need is an upper bound of what the analysis holds at its peak, up to a
 * fixed overhead that no option changes (the program, the HDF5 and BLAS
 * libraries and their buffers, the tables of the results): about 64 MiB,
 * as the tests measure it.
 */

/* The options that lower a part, as the user types them. */
enum kdl__lever {
        KDL_LEVER_BLOCK_ROWS = 1u << 0,   /* --block-rows */
        KDL_LEVER_SPATIAL = 1u << 1,      /* --spatial avg (rank-3/4 features flattened) */
        KDL_LEVER_SUBSAMPLE = 1u << 2,    /* --subsample */
        KDL_LEVER_BOOTSTRAP = 1u << 3,    /* --bootstrap (fewer replicates) */
        KDL_LEVER_INTERVAL = 1u << 4,     /* --interval percentile (no BCa jackknife sums) */
        KDL_LEVER_BATCH = 1u << 5,        /* --batch */
        KDL_LEVER_SPEARMAN = 1u << 6,     /* --spearman-samples */
        KDL_LEVER_QUICK = 1u << 7,        /* --quick (inspect: no value scan) */
        KDL_LEVER_WIDE_MAX = 1u << 8,     /* --wide-max (cka: narrower sources count as wide) */
        KDL_LEVER_WIDE_RANK = 1u << 9,    /* --wide-rank (cka: fewer columns per sketch) */
        KDL_LEVER_LAYER = 1u << 10,       /* --layer (dims: one feature layer) */
        KDL_LEVER_SKETCH_RANK = 1u << 11, /* --sketch-rank (dims: the logits' sketch) */
        KDL_LEVER_DOMAIN = 1u << 12,      /* --domain off (split: no domain level) */
        KDL_LEVER_PER_CLASS = 1u << 13,   /* --per-class (layers: fewer class-spectra rows) */
        KDL_LEVER_TOPK = 1u << 14,        /* fewer --topk values (kl: the top-k job's state) */
        KDL_LEVER_COUNT_ = 15
};

#define KDL_NEED_PARTS 32

struct kdl__need_part {
        char *what;      /* "the Spearman reservoir of 65536 samples"; owned */
        size_t bytes;    /* saturated at SIZE_MAX */
        unsigned levers; /* enum kdl__lever flags */
};

/* A need; zero-initialise it with the analysis's name, release with kdl__need_release(). */
typedef struct kdl__need {
        const char *analysis; /* "kl", "cka", ...; borrowed (a literal) */
        const char *reads;    /* what the plan read besides the shapes ("/labels"), or NULL */
        size_t n;
        struct kdl__need_part part[KDL_NEED_PARTS];
} kdl__need;

/**
 * kdl__need_add() - a part of @bytes (nothing when 0) for what @fmt says,
 * lowered by @levers.  Past KDL_NEED_PARTS parts, the bytes go to the last.
 * Return: 0; -ENOMEM.
 */
int kdl__need_add(kdl__need *nd, size_t bytes, unsigned levers, const char *fmt, ...)
        KDL_PRINTF(4, 5);

/** kdl__need_total() - the sum of the parts, saturating at SIZE_MAX. */
size_t kdl__need_total(const kdl__need *nd);

/** kdl__need_append() - every part of @from into @into, as it is.  Return: 0; -ENOMEM. */
int kdl__need_append(kdl__need *into, const kdl__need *from);

/**
 * kdl__need_merge() - every part of @from into @into, each named "ANALYSIS: what"
 * after @from's analysis (the report: the analyses alive at once).
 * Return: 0; -ENOMEM.
 */
int kdl__need_merge(kdl__need *into, const kdl__need *from);

/** kdl__need_max() - keep in @a the parts of the larger total of @a and @b, under @a's
 * analysis and reads (@b released either way). */
void kdl__need_max(kdl__need *a, kdl__need *b);

/** kdl__need_release() - free the parts' strings; @nd is empty (analysis kept). */
void kdl__need_release(kdl__need *nd);

/**
 * kdl__need_check() - the budget check of kdl_budget_check() for the whole
 * need, named by its largest part: "cka needs 37.2 GiB for the feature-space
 * state of 24 layers (36.9 GiB) and 3 smaller parts (--memory is 12 GiB):
 * lower it with --subsample or --spatial avg, or raise --memory".  The
 * options named are the largest part's levers among @accepted (the levers
 * the command has).
 * Return: 0; -KDL_EBUDGET (message recorded).
 */
int kdl__need_check(const kdl__need *nd, size_t budget, unsigned accepted);

/**
 * kdl__need_plan() - @nd as rows of @parts ("plan_parts": analysis, part,
 * bytes, size, lowered_by among @accepted) and one row of @plan ("plan":
 * analysis, need_bytes, need, budget_bytes, budget, fits, largest).
 * Return: 0; -ENOMEM.
 */
int kdl__need_plan(const kdl__need *nd, size_t budget, unsigned accepted, kdl_table *plan,
                   kdl_table *parts);

/**
 * kdl__need_doc() - the plan document of --plan: the tables "plan" and
 * "plan_parts" of the @n needs @nds, and a note saying what the budget is
 * and what the needs do not count (the fixed overhead).
 * Return: 0; -ENOMEM.
 */
int kdl__need_doc(const kdl__need *nds, size_t n, size_t budget, unsigned accepted, kdl_doc *doc);

#endif
