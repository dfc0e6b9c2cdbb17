/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_INPUTS_H
#define KDL_ANALYSIS_INPUTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loaders/h5.h"
#include "loaders/stream.h"
#include "metrics/base/budget.h"
#include "reports/table.h"

/*
 * What every analysis command starts from: a teacher dump, zero or more
 * student dumps, each opened, checked against the schema and aligned with
 * the teacher; and the checkpoints to analyse.
 */

/* How a student's samples are joined with the teacher's when both dumps have /sample_ids. */
enum kdl_join {
        KDL_JOIN_STRICT, /* the same ids on both sides, or an error (the default) */
        KDL_JOIN_INNER,  /* only the ids both hold (--join inner) */
        KDL_JOIN_COUNT_
};

/** kdl_join_parse() - "strict" or "inner"; -KDL_EUSAGE (message recorded) otherwise. */
KDL_API int kdl_join_parse(const char *s, enum kdl_join *ret);

/* Whether the dumps' root attribute role must agree with how they are given. */
enum kdl_roles {
        KDL_ROLES_CHECK,  /* the teacher's role must not be "student", nor a student's
                             "teacher"; a dump without the attribute passes (the default) */
        KDL_ROLES_IGNORE, /* not checked (--ignore-roles), and a note says so */
        KDL_ROLES_NONE,   /* the inputs imply no roles (kdlens cka A.h5 B.h5): not checked */
        KDL_ROLES_COUNT_
};

/* How the inputs are paired; all zero is the default. */
struct kdl_inputs_opts {
        enum kdl_join join;
        enum kdl_roles roles;
};

typedef struct kdl_inputs {
        kdl_h5file *teacher; /* NULL when the command runs on students only */
        size_t nstudents;
        kdl_h5file **students;
        kdl_pair **pairs; /* pairs[k] aligns students[k] with the teacher; NULL without one */
        struct kdl_inputs_opts opts; /* as opened */
} kdl_inputs;

/**
 * kdl_inputs_open_with() - open, check and pair the inputs.
 * @teacher:  path or NULL.
 * @students: @n paths (borrowed).
 * @o:        NULL for the defaults (strict join, roles checked).
 * @ret:      caller frees with kdl_inputs_free().
 *
 * Every student is paired with the teacher (kdl_h5_pair_join()); a stream
 * over a pair compares the two dumps' labels row by row (loaders/stream.h).
 * Return: 0; the first error of opening (missing, not HDF5, ...), of the
 * schema (-KDL_ESCHEMA with the first problem), of the roles (-KDL_EUSAGE
 * naming both files and their roles), or of pairing (-KDL_EUSAGE for an
 * inner join without /sample_ids in both dumps, or without a student).
 */
KDL_API int kdl_inputs_open_with(const char *teacher, const char *const *students, size_t n,
                                 const struct kdl_inputs_opts *o, kdl_inputs **ret);

/** kdl_inputs_open() - kdl_inputs_open_with() with the defaults. */
KDL_API int kdl_inputs_open(const char *teacher, const char *const *students, size_t n,
                            kdl_inputs **ret);

/** kdl_inputs_free() - close everything.  NULL is a no-op. */
KDL_API void kdl_inputs_free(kdl_inputs *in);

/**
 * kdl_inputs_describe() - add every input path to @doc's inputs, and what
 * the reader must know of the pairing: a note for each student paired by
 * row order whose pairing cannot be checked (a dump without /labels); with
 * the inner join, a note per student and the table "join" (student,
 * teacher_samples, student_samples, shared_samples); with roles ignored, a
 * note naming the roles the files state.
 */
KDL_API int kdl_inputs_describe(const kdl_inputs *in, kdl_doc *doc);

/**
 * kdl__pair_describe() - the notes of pair @p (kdl_inputs_describe() says
 * which) into @doc; with @join KDL_JOIN_INNER and @t not NULL, its row of
 * the table "join" into @t.
 */
int kdl__pair_describe(const kdl_pair *p, enum kdl_join join, kdl_table *t, kdl_doc *doc);

/** kdl__join_check() - 0, or -KDL_EUSAGE when @f has no /sample_ids for --join inner. */
int kdl__join_check(const kdl_h5file *f);

/**
 * kdl_inputs_teacher_labels() - the teacher's /labels in the logical rows of
 * @pair (NULL: every teacher row), as a stream over @pair reads them.
 * @ret: set on success only, one per row; caller frees with free().
 * Return: 0; -KDL_EMISSING without labels; -KDL_EHDF5; -ENOMEM.
 */
KDL_API int kdl_inputs_teacher_labels(const kdl_inputs *in, const kdl_pair *pair, int64_t **ret);

/* The most temperatures a command takes (-T 1,2,4,...). */
#define KDL_RUN_MAX_TAUS 16

/*
 * What every analysis command is asked, whatever it computes.  Each
 * struct kdl_run_<verb>_opts embeds one as its first member, common, which
 * kdl_run_<verb>_opts_init() sets; the verb's header says which fields it
 * reads (the others are ignored).
 */
struct kdl_run_common {
        const char *checkpoint;         /* NULL: the last; "all"; or a name */
        const char *teacher_checkpoint; /* a student checkpoint's teacher: NULL the teacher's
                                           last; "same"; or a name (kdl_select_checkpoints()) */
        size_t ntau;                    /* temperatures, 1..KDL_RUN_MAX_TAUS */
        double tau[KDL_RUN_MAX_TAUS];   /* each finite and > 0 */
        enum kdl_spatial spatial;       /* reduction of rank-3/4 features */
        bool skip_nonfinite;            /* drop samples with NaN/Inf instead of failing */
        const char *per_sample;         /* NULL, or the HDF5 file for the per-sample values */
        size_t block_rows;              /* rows per block; 0: from the stream's memory budget */
        size_t memory; /* bytes the analysis may allocate (--memory); KDL_MEMORY_UNLIMITED: no
                          limit.  Each analysis states its need from the shapes before it
                          allocates and refuses (-KDL_EBUDGET) a need above this */
};

/**
 * kdl_run_common_init() - the defaults: the last checkpoint of each model,
 * compared with the teacher's last; the single temperature 4; avg pooling;
 * NaN/Inf is an error; no per-sample file; blocks from the memory budget;
 * kdl_memory_default() as the budget (half of the physical memory).
 */
KDL_API void kdl_run_common_init(struct kdl_run_common *c);

/**
 * kdl_run_stream_opts() - the options of a stream read as @c asks: its block
 * rows, its NaN/Inf policy, and a block budget under @c->memory: 64 MiB, or
 * a sixteenth of the budget when that is less (a small --memory reads
 * smaller blocks).
 */
KDL_API struct kdl_stream_opts kdl_run_stream_opts(const struct kdl_run_common *c);

/* A checkpoint of the analysed model and the partner checkpoint it is compared with. */
struct kdl_ckpair {
        const kdl_checkpoint *main;    /* from the model the selection names */
        const kdl_checkpoint *partner; /* the partner's, per partner_spec; NULL without one */
};

/**
 * kdl_select_checkpoints() - resolve --checkpoint (and --teacher-checkpoint) for @f.
 * @spec:         NULL for the last checkpoint (highest step), "all" for every
 *                checkpoint in step order, or a name.
 * @partner:      NULL, or the file whose checkpoint goes with each selected one.
 * @partner_spec: which partner checkpoint: NULL for the partner's last one
 *                (ordinary KD: a fixed, trained teacher is compared with every
 *                student checkpoint); "same" for the one of the same name, else
 *                the last (co-training, or two runs side by side); or a name.
 * @ret:          array of @ret_n pairs; caller frees with free().
 * Return: 0; -KDL_EUSAGE when @spec or @partner_spec names no checkpoint
 * (the message lists the names there are).
 */
KDL_API int kdl_select_checkpoints(const kdl_h5file *f, const kdl_h5file *partner, const char *spec,
                                   const char *partner_spec, struct kdl_ckpair **ret,
                                   size_t *ret_n);

/**
 * kdl_parse_reals() - parse "1,2,4.5" into at most @max values.
 * Return: the count (>= 1); -KDL_EUSAGE naming @what when malformed or non-positive.
 */
KDL_API int kdl_parse_reals(const char *s, const char *what, double *ret, size_t max);

#endif
