/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_INPUTS_H
#define KDL_ANALYSIS_INPUTS_H

#include <stdbool.h>
#include <stddef.h>

#include "loaders/h5.h"
#include "reports/table.h"

/*
 * What every analysis command starts from: a teacher dump, zero or more
 * student dumps, each opened, checked against the schema and aligned with
 * the teacher; and the checkpoints to analyse.
 */

typedef struct kdl_inputs {
        kdl_h5file *teacher; /* NULL when the command runs on students only */
        size_t nstudents;
        kdl_h5file **students;
        kdl_pair **pairs; /* pairs[k] aligns students[k] with the teacher; NULL without one */
} kdl_inputs;

/**
 * kdl_inputs_open() - open, check and pair the inputs.
 * @teacher:  path or NULL.
 * @students: @n paths (borrowed).
 * @ret:      caller frees with kdl_inputs_free().
 * Return: 0; the first error of opening (missing, not HDF5, ...), of the
 * schema (-KDL_ESCHEMA with the first problem), or of pairing.
 */
KDL_API int kdl_inputs_open(const char *teacher, const char *const *students, size_t n,
                            kdl_inputs **ret);

/** kdl_inputs_free() - close everything.  NULL is a no-op. */
KDL_API void kdl_inputs_free(kdl_inputs *in);

/** kdl_inputs_describe() - add every input path to @doc's inputs. */
KDL_API int kdl_inputs_describe(const kdl_inputs *in, kdl_doc *doc);

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
};

/**
 * kdl_run_common_init() - the defaults: the last checkpoint of each model,
 * compared with the teacher's last; the single temperature 4; avg pooling;
 * NaN/Inf is an error; no per-sample file; blocks from the memory budget.
 */
KDL_API void kdl_run_common_init(struct kdl_run_common *c);

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
