/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_CKA_INTERNAL_H
#define KDL_ANALYSIS_CKA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loaders/h5.h"
#include "analysis/inputs.h"
#include "loaders/stream.h"
#include "analysis/cka.h"
#include "analysis/need.h"
#include "analysis/pass.h"
#include "analysis/sources.h"
#include "metrics/cka.h"

/*
 * CKA of stacked sources (analysis/sources.h) in one pass, shared by the cka
 * and layers commands (analysis/cka-compute.c).
 */

struct kdl__cka_compute_opts {
        enum kdl_spatial spatial;
        bool skip_nonfinite;
        bool labels;                    /* the stream reads /labels (one-hot sources need them) */
        size_t bootstrap;               /* replicates; 0: none */
        enum kdl_cka_interval interval; /* of the bootstrap; 0: percentile */
        uint64_t seed;
        bool rbf; /* RBF CKA on the subsample */
        double theta;
        size_t batch;      /* minibatch CKA on the subsample with this batch; 0: none */
        double robust;     /* outlier fraction of the robust column */
        size_t max_bytes;  /* the memory budget of the state: a larger one is refused with
                              kdl_budget_check()'s message (-KDL_EBUDGET) */
        const bool *pairs; /* [L*L] pairs needed (kdl_cka_opts.pairs); NULL: all */
        enum kdl_cka_precision precision; /* of the feature-space products */
        bool gram; /* Gram space even when no source is wider than the sample count (tests) */
        const char *analysis; /* who asks, for the refusal: NULL is "cka" */
        /* Wide sources, min(n, width) > wide_max (0: none is; docs/cka.md#wide-layers): the
         * labels are taken as classes (exact), another source by a Gaussian sketch of
         * wide_rank columns (wide KDL_RUN_CKA_WIDE_SKETCH) or exactly, its products with
         * wide sources in column strips over more passes (KDL_RUN_CKA_WIDE_EXACT). */
        size_t wide_max;
        enum kdl_run_cka_wide wide;
        size_t wide_rank;
        unsigned measures; /* kdl_run_cka_opts.measures: the CCA family from the state */
        double svcca_keep;
        const bool *sim_pairs; /* [L*L] the pairs the measures are computed for (a pass shared
                                  by runs not all asking them); NULL: those of pairs */
};

/* How a pair of sources was computed (kdl__cka_results.how). */
enum kdl__cka_how {
        KDL__CKA_EXACT,  /* the feature-space state or Gram space */
        KDL__CKA_SKETCH, /* a wide source's sketch: an estimate with its standard error */
        KDL__CKA_STRIPS, /* exact, the products in column strips over more passes */
};

/*
 * kdl__cka_pass_need() - what kdl__cka_pass_init() and its pass allocate for @n samples of
 * the sources @l with @o, a subsample of @nsub rows and stream blocks of @rows rows, besides
 * the stream: in feature space the state, the subsample and the largest of the in-memory
 * estimators run on it after the pass (robust, RBF, minibatch); in Gram space every sample
 * and the n x n Gram matrices of every source.  The parts go into @nd.
 * Return: 0; -ENOMEM.
 */
int kdl__cka_pass_need(const struct kdl__srcs *l, size_t n, size_t nsub, size_t rows,
                       size_t nclasses, const struct kdl__cka_compute_opts *o, kdl__need *nd);

/* What kdl__cka_compute() finds for one set of stacked sources. */
struct kdl__cka_results {
        bool gram; /* Gram space (a source wider than the sample count, or asked) */
        size_t n, nsub, maxw;
        size_t nwide;           /* wide sources (sketched, or in strips) */
        bool hot;               /* the labels taken as classes */
        size_t rank, strips;    /* the sketches' columns; the passes of the strips */
        unsigned char *how;     /* [L*L] enum kdl__cka_how of each pair */
        kdl_cka_matrix *lin;    /* linear, all samples: biased, debiased, bootstrap */
        kdl_cka_matrix *robust; /* subsample, outliers removed */
        kdl_cka_matrix *rbf;    /* subsample; NULL unless asked */
        kdl_cka_matrix *mb;     /* subsample; NULL unless asked */
        /* The CCA family (--measure); NULL unless asked. */
        struct kdl__cka_sim *sim;
};

void kdl__cka_results_release(struct kdl__cka_results *r);

/*
 * kdl__cka_compute() - one pass over every sample of the sources @l (A =
 * @in->teacher, B = @in->students[0] through @pair): linear CKA of all pairs
 * (feature space, or Gram space when a source is wider than the sample
 * count or @o->gram; either way with the bootstrap @o asks for), and on the
 * rows @sub (sorted, gathered in the same pass) the
 * robust column, RBF and minibatch CKA as @o asks.
 * @ret_sub: NULL, or receives the gathered subsample (release it with
 *           kdl__gather_release()).
 */
int kdl__cka_compute(kdl_inputs *in, const kdl_pair *pair, const struct kdl__srcs *l,
                     size_t nclasses, const struct kdl__cka_compute_opts *o, const size_t *sub,
                     size_t nsub, struct kdl__cka_results *res, struct kdl__gather *ret_sub);

/*
 * Wide sources (analysis/cka-wide.c, docs/cka.md#wide-layers).  A source is wide when its
 * width and the sample count both exceed o->wide_max: the labels are then taken as classes
 * (exact at any C), any other source by a Gaussian sketch (o->wide sketch) or at full width
 * with its products with wide sources in column strips (exact).
 */
struct kdl__cka_wide {
        enum kdl_cka_layer *kinds; /* [L] how the state takes each source */
        size_t *sw;                /* [L] the state's width of each */
        bool *wide;                /* [L] the wide sources (sketched or in strips) */
        bool *ext;                 /* [L*L] exact: the pairs in column strips; else NULL */
        size_t nwide;
        bool hot; /* the labels as classes */
};

/* kdl__cka_pass_layout() - the layout of a pass over @n samples of @l into @w, and whether
 * it is in Gram space: asked, or a source wider than the sample count that is not wide
 * (o->wide_max).  Release @w whatever this returns.  Return: 0; -ENOMEM. */
int kdl__cka_pass_layout(const struct kdl__srcs *l, size_t n, const struct kdl__cka_compute_opts *o,
                         struct kdl__cka_wide *w, bool *ret_gram);

/* kdl__cka_wide_init() - the layout of a pass over @n samples of @l with @o (no wide source
 * in Gram space, @gram).  Release it whatever this returns.  Return: 0; -ENOMEM. */
int kdl__cka_wide_init(struct kdl__cka_wide *w, const struct kdl__srcs *l, size_t n, bool gram,
                       const struct kdl__cka_compute_opts *o);
void kdl__cka_wide_release(struct kdl__cka_wide *w);

/* kdl__cka_wide_need() - the parts of @w's sketches and column strips (the strips take at
 * most half of o->max_bytes, *@ret_passes more passes), into @nd.  Return: 0; -ENOMEM. */
int kdl__cka_wide_need(const struct kdl__cka_wide *w, const struct kdl__srcs *l,
                       const struct kdl__cka_compute_opts *o, kdl__need *nd, size_t *ret_passes);

/* kdl__cka_wide_sketches() - a sketch of every sketched source of @w, seeded by o->seed,
 * into *@ret ([L], NULL for the others; free with kdl__cka_wide_sketches_free()).
 * Return: 0; -ENOMEM. */
int kdl__cka_wide_sketches(const struct kdl__cka_wide *w, const struct kdl__srcs *l,
                           const struct kdl__cka_compute_opts *o, kdl_cka_sketch ***ret);
void kdl__cka_wide_sketches_free(kdl_cka_sketch **k, size_t n);

/* kdl__cka_wide_strips() - the column strips of @w's external pairs, centred by the means
 * of @state (after its pass), within half of o->max_bytes.  Return: 0; -KDL_EBUDGET;
 * -ENOMEM. */
int kdl__cka_wide_strips(const struct kdl__cka_wide *w, const struct kdl__srcs *l,
                         const kdl_cka_state *state, const struct kdl__cka_compute_opts *o,
                         kdl_cka_strips **ret);

/* kdl__cka_wide_how() - how each pair was computed (enum kdl__cka_how), [L*L] into *@ret
 * (caller frees).  Return: 0; -ENOMEM. */
int kdl__cka_wide_how(const struct kdl__cka_wide *w, size_t nsrc, bool gram, unsigned char **ret);

/* kdl__cka_method() - how the pair (@a, @b) of @nsrc sources was computed, the "method"
 * column: "feature" or "gram" (exact), "sketch" (a wide source's sketch), "strips" (exact,
 * in column strips). */
const char *kdl__cka_method(const struct kdl__cka_results *res, size_t nsrc, size_t a, size_t b);

/* kdl__cka_wide_notes() - the notes on the wide sources and the labels of @last, when it
 * had any.  Return: 0; -ENOMEM. */
int kdl__cka_wide_notes(kdl_doc *doc, const struct kdl__cka_results *last,
                        const struct kdl_run_cka_opts *o);

/*
 * kdl__cka_compute()'s pass as the state of a job, for a job of one's own
 * (the cka command's): init, then kdl__feed_attach() and kdl__feed_block() on
 * @feed as the job's attach and block, then finish at the end of the pass.
 * The fields are private.
 */
struct kdl__cka_pass {
        struct kdl__feed feed; /* feeds state or g */
        const struct kdl__srcs *l;
        struct kdl__cka_compute_opts o;
        const size_t *sub; /* borrowed */
        size_t nsub;
        size_t *all;               /* Gram space: every sample, wanted by g */
        kdl_cka_state *state;      /* feature space */
        struct kdl__cka_wide wide; /* how the state takes each source */
        kdl_cka_sketch **sketch;   /* [L] the sketched sources' */
        kdl_cka_strips *strips;    /* made after pass 0 when wide.ext */
        struct kdl__gather g;      /* Gram space: every sample; else the subsample */
        struct kdl__cka_results *res;
        struct kdl__gather *ret_sub; /* NULL, or receives the subsample */
};

/* kdl__cka_pass_init() - everything a pass over @n samples of @l (A from @fa,
 * B from @fb or NULL) needs, as kdl__cka_compute() takes them; @res gets n,
 * maxw and gram now, the rest from finish.  Release @c whatever it returns.
 * Return: 0; -KDL_EBUDGET when the state would exceed o->max_bytes; -ENOMEM. */
int kdl__cka_pass_init(struct kdl__cka_pass *c, kdl_h5file *fa, kdl_h5file *fb, size_t n,
                       const struct kdl__srcs *l, size_t nclasses,
                       const struct kdl__cka_compute_opts *o, const size_t *sub, size_t nsub,
                       struct kdl__cka_results *res, struct kdl__gather *ret_sub);

/* kdl__cka_pass_combine() - collective, under MPI (analysis/dist.h), after the
 * pass: the feature-space sums of every rank merged in rank order, and the
 * gathered rows (the subsample, or in Gram space every row) in sample order,
 * both on every rank, so that every rank's finish computes what one process
 * does.  Return: 0; the first error of any rank. */
int kdl__cka_pass_combine(struct kdl__cka_pass *c);

/* kdl__cka_pass_block() - block of pass @pass of such a job: pass 0 to the state and the
 * gather, a later one to the column strips.  Return: as kdl__feed_block(). */
int kdl__cka_pass_block(struct kdl__cka_pass *c, kdl_stream *s, unsigned pass);

/* kdl__cka_pass_end() - the end of pass @pass: 1 when the column strips want another pass
 * (the first makes them), else the results from the state or the gathered rows, 0.
 * Return: 1; 0; -KDL_EBUDGET; the metrics' errors; -ENOMEM. */
int kdl__cka_pass_end(struct kdl__cka_pass *c, unsigned pass);

/* kdl__cka_pass_finish() - after the last pass: the results from the state or the
 * gathered rows.  Return: 0; the metrics' errors; -ENOMEM. */
int kdl__cka_pass_finish(struct kdl__cka_pass *c);

/* kdl__cka_pass_job_attach(), kdl__cka_pass_job_block(), kdl__cka_pass_job_combine() - the
 * attach, block and combine of a job whose ctx is a struct kdl__cka_pass: kdl__feed_attach()
 * on its feed, kdl__cka_pass_block() and kdl__cka_pass_combine(). */
int kdl__cka_pass_job_attach(kdl__job *j, kdl_stream *s);
int kdl__cka_pass_job_block(kdl__job *j, kdl_stream *s, unsigned pass);
int kdl__cka_pass_job_combine(kdl__job *j, kdl_stream *s, unsigned pass);

/* kdl__cka_pass_release() - free what @c holds (not the results). */
void kdl__cka_pass_release(struct kdl__cka_pass *c);

/*
 * The CCA family and Procrustes of --measure (analysis/cka-sim.c), after a finished pass:
 * every pair of a source of A with a source of A or B, from the feature-space state's
 * covariances (pairs the state holds as two dense layers; sketched or strip pairs stay
 * NaN) or, in Gram space, from the n x n centred Gram matrices of the gathered rows
 * (PWCCA, whose weights are over the neurons, stays NaN).
 */
struct kdl__cka_sim;

/* kdl__cka_sim_compute() - after @c's pass (its state merged under MPI), from the state,
 * or with @t (the [L] gathered rows of every sample) in Gram space, into *@ret (free with
 * kdl__cka_sim_free()).  Return: 0; the metrics' errors; -ENOMEM. */
int kdl__cka_sim_compute(const struct kdl__cka_pass *c, const kdl_tensor *t,
                         struct kdl__cka_sim **ret);
void kdl__cka_sim_free(struct kdl__cka_sim *s);

/* kdl__cka_sim_need() - what kdl__cka_sim_compute() holds for @measures beyond CKA (none:
 * nothing) on the sources @l taken as @kinds (NULL: all dense) after a pass over @n samples,
 * in Gram space when @gram, into @nd; with @pairs ([L*L], kdl__cka_compute_opts.sim_pairs)
 * only the sources of those pairs count.  Return: 0; -ENOMEM. */
int kdl__cka_sim_need(const struct kdl__srcs *l, size_t n, bool gram,
                      const enum kdl_cka_layer *kinds, unsigned measures, const bool *pairs,
                      kdl__need *nd);

/* kdl__cka_sim_slice() - the values of @s for the @n sources @map of its own (a run's part
 * of a shared pass), into *@ret (free with kdl__cka_sim_free()).  Return: 0; -ENOMEM. */
int kdl__cka_sim_slice(const struct kdl__cka_sim *s, const size_t *map, size_t n,
                       struct kdl__cka_sim **ret);

/* kdl__cka_sim_columns() - the "cka_pairs" columns of @measures for the pair (@a, @b). */
int kdl__cka_sim_columns(kdl_table *t, const struct kdl__cka_results *res, unsigned measures,
                         size_t a, size_t b);

/* The matrix tables of the measures, [KDL_RUN_CKA_MEASURE_COUNT_] (NULL for cka's and the
 * measures not asked): kdl__cka_sim_tables_new() checks @o's SVCCA share (-KDL_EUSAGE) and
 * makes them, kdl__cka_sim_tables_free() frees them, kdl__cka_sim_tables_add() hands them
 * to @doc, kdl__cka_sim_row() adds the row of A's layer @layer at @ck to each (@two: with
 * checkpoint_b), kdl__cka_sim_cell() puts the pair (@a, @b)'s value under @key.
 * Return: 0; -ENOMEM. */
int kdl__cka_sim_tables_new(const struct kdl_run_cka_opts *o, kdl_table **t);
void kdl__cka_sim_tables_free(kdl_table **t);
int kdl__cka_sim_tables_add(kdl_doc *doc, kdl_table **t);
int kdl__cka_sim_row(kdl_table *const *t, const struct kdl_ckpair *ck, bool two, const char *layer);
int kdl__cka_sim_cell(kdl_table *const *t, const struct kdl__cka_results *res, const char *key,
                      size_t a, size_t b);

/* kdl__cka_sim_notes() - what the measures are and where they are NaN.  Return: 0;
 * -ENOMEM. */
int kdl__cka_sim_notes(kdl_doc *doc, const struct kdl__cka_results *last, unsigned measures);

/* kdl__cka_shown() - the value of the pair (@a, @b) that the "cka" matrix shows: the
 * kernel and estimator @o selects (analysis/cka.c). */
double kdl__cka_shown(const struct kdl__cka_results *res, const struct kdl_run_cka_opts *o,
                      size_t a, size_t b);

/*
 * The "cka_mapping" table (analysis/cka-mapping.c, docs/cka.md#layer-mapping).
 * kdl__cka_mapping_solve() - for the matrix @v ([na, nb], row j a layer of A, column i
 * one of B, NaN: never chosen), each column's best row (the largest value, the earliest
 * row on ties) into @ret_best and the non-decreasing map of columns to rows with the
 * largest sum of values into @ret_map (ties: the earliest row for the last column, then
 * for the one before, and so on); SIZE_MAX where there is none (every value NaN, or every
 * monotone map crosses a NaN).  Return: 0; -ENOMEM; -KDL_EOVERFLOW.
 * kdl__cka_mapping_new() creates the table, kdl__cka_mapping_rows() adds the rows of the
 * pair of checkpoints @ck (both) from the values of @res as kdl__cka_shown() gives them,
 * kdl__cka_mapping_add() hands *@t to @doc when it has rows, else frees it (*@t NULL).
 */
int kdl__cka_mapping_solve(const double *v, size_t na, size_t nb, size_t *ret_best,
                           size_t *ret_map);
int kdl__cka_mapping_new(kdl_table **ret);
int kdl__cka_mapping_rows(kdl_table *t, const struct kdl__cka_results *res,
                          const struct kdl_run_cka_opts *o, const struct kdl__srcs *l,
                          const struct kdl_ckpair *ck);
int kdl__cka_mapping_add(kdl_doc *doc, kdl_table **t);

/* kdl__subsample_sequences() - kdl_sample_select_sequences() of @count rows (@per_seq, @seed,
 * @stream as there) of the @n rows of @pair (NULL: A's, of @fa) by A's /sequence_ids.  @ret:
 * caller frees.  Return: 0; -KDL_EUSAGE when A has no /sequence_ids (said once); HDF5 errors;
 * -ENOMEM. */
int kdl__subsample_sequences(kdl_h5file *fa, const kdl_pair *pair, size_t n, size_t count,
                             size_t per_seq, uint64_t seed, uint64_t stream, size_t **ret,
                             size_t *ret_n);

/* What kdl__subsample_sequences() holds per row of A at its peak: the ids read as doubles,
 * the ids, the sort keys and the rows. */
#define KDL__SEQUENCE_DRAW_BYTES (2 * sizeof(double) + 4 * sizeof(uint64_t) + sizeof(size_t))

/* kdl__cka_subsample() - the subsample of @o (o->subsample rows, seeded by o->seed and
 * @stream) of the @n rows of @pair (NULL: A's, of @fa): kdl_sample_select(), or with
 * o->sequences by sequence from A's /sequence_ids, kdl_sample_select_sequences()
 * (analysis/cka-subsample.c).  @ret: caller frees.  Return: 0; -KDL_EUSAGE when A has no
 * /sequence_ids; HDF5 errors; -ENOMEM. */
int kdl__cka_subsample(kdl_h5file *fa, const kdl_pair *pair, size_t n,
                       const struct kdl_run_cka_opts *o, uint64_t stream, size_t **ret,
                       size_t *ret_n);

/*
 * The cka command as jobs (see analysis/pass.h), so that the report runs it on
 * the stream it shares with the other analyses of a student checkpoint.
 */
struct kdl__cka_run; /* one cka document being filled: its tables, options, last results */

/* kdl__cka_begin() - check the options, create the tables, describe the
 * inputs in @doc (borrowed, as @in; both must outlive the run).
 * Return: 0; -KDL_EUSAGE for an impossible combination of options; -ENOMEM. */
int kdl__cka_begin(kdl_inputs *in, const struct kdl_run_cka_opts *o, kdl_doc *doc,
                   struct kdl__cka_run **ret);

/* Job comparing A = in->teacher at cp->main with B = in->students[k] at cp->partner (through
 * in->pairs[k]); with no student, A alone at cp->main (stream over A: pair NULL, n = A's N).
 * One pass; its rows are added to the tables at the end of it.  The job's state belongs to
 * @r: one job at a time (a new call drops the previous one).  @cp is copied.
 * Return: 0; -KDL_EBUDGET when the job needs more than the options' common.memory (nothing is
 * allocated then); -ENOMEM. */
int kdl__cka_job(struct kdl__cka_run *r, size_t k, const struct kdl_ckpair *cp, kdl__job *ret);

/*
 * A job's pass made by someone else (a pass shared by several runs, cka-shared.c): open
 * the job without its pass, run a pass over its sources, give the run its results.
 */
struct kdl__cka_job_view {
        kdl_h5file *fa, *fb;       /* A's and B's file (NULL: A alone); borrowed */
        const kdl_pair *pair;      /* the stream's pair (NULL: A alone); borrowed */
        struct kdl_stream_opts so; /* a stream of the job's own */
        const struct kdl__srcs *l; /* the job's sources; borrowed from the run */
        const bool *mask;          /* [l->n^2] the pairs its tables need (NULL: all); borrowed */
        size_t n;                  /* samples of the pass */
        size_t nclasses;           /* width of the one-hot labels; 0: none */
        const size_t *sub;         /* [nsub] its subsample, sorted; borrowed */
        size_t nsub;
        struct kdl__cka_compute_opts co; /* its pass's options (co.pairs = mask) */
};

/* kdl__cka_job_open() - what kdl__cka_job(@r, @k, @cp) would pass over, without its pass
 * or its need check: the job's sources and subsample, borrowed from @r until its job is
 * taken or dropped.  Return: 0; -ENOMEM (nothing held then). */
int kdl__cka_job_open(struct kdl__cka_run *r, size_t k, const struct kdl_ckpair *cp,
                      struct kdl__cka_job_view *ret);

/* kdl__cka_job_take() - the results of the opened job's pass (ownership taken, @res left
 * empty; maxw set from the job's sources): its rows into the tables, as the end of
 * kdl__cka_job()'s pass adds them; the job is dropped.  Return: 0; -ENOMEM. */
int kdl__cka_job_take(struct kdl__cka_run *r, struct kdl__cka_results *res);

/* kdl__cka_job_drop() - drop the opened (or made) job of @r; its last results stay. */
void kdl__cka_job_drop(struct kdl__cka_run *r);

/*
 * One pass for the jobs of several runs that compare one teacher checkpoint with several
 * checkpoints of one student (analysis/cka-shared.c): its sources are the teacher's (its
 * layers, logits and the labels) once, and every checkpoint's student sources; a pair is
 * formed when a run's tables need it.  So the teacher's layers are read, and their blocks
 * with themselves and with the targets formed, once for all the checkpoints.  Each run
 * gets the rows its kdl__cka_job() would have given: the same products of the same rows,
 * equal up to rounding (the stream's blocks differ).
 */
struct kdl__cka_shared;

/*
 * kdl__cka_shared_new() - that pass for the @n runs @runs (begun on the same inputs and
 * options, but for --measure: computed for the pairs of the runs that ask it), run i at
 * @cps[i] with student @k, as a job (@ret_job, its state in *@ret).
 * Return: 1; 0 (*@ret NULL, the runs' jobs dropped) when they cannot share one: fewer than
 * two, different teacher checkpoints, --nonfinite skip (each checkpoint's stream drops its
 * own samples), Gram space (a source wider than the samples) or a wide source (--wide-max);
 * under MPI its job combines the ranks' state as kdl__cka_compute()'s; -KDL_EBUDGET when
 * the pass
 * and a stream of its own need more than common.memory; -ENOMEM.
 */
int kdl__cka_shared_new(struct kdl__cka_run *const *runs, size_t n, size_t k,
                        const struct kdl_ckpair *cps, struct kdl__cka_shared **ret,
                        kdl__job *ret_job);

/* kdl__cka_shared_free() - after its job has run, or instead (NULL: no-op): drop the
 * runs' jobs and free @sh. */
void kdl__cka_shared_free(struct kdl__cka_shared *sh);

/*
 * kdl__cka_shared_need() - keep in @ret the larger of @ret and the need of the pass
 * kdl__cka_shared_new() would make, from the shapes alone, in blocks of @rows rows of a
 * stream others count (0: its own, counted too); when it would make none, nothing.
 * kdl__cka_shared_cost() - the datasets that pass reads, into @c.
 * The runs' jobs are dropped.  Return: 1 when the runs can share a pass, 0 when not; the
 * errors of finding the sources; -ENOMEM.
 */
int kdl__cka_shared_need(struct kdl__cka_run *const *runs, size_t n, size_t k,
                         const struct kdl_ckpair *cps, size_t rows, kdl__need *ret);
int kdl__cka_shared_cost(struct kdl__cka_run *const *runs, size_t n, size_t k,
                         const struct kdl_ckpair *cps, struct kdl_stream_cost *c);

/* The options of the cka command that lower its need. */
#define KDL_CKA_LEVERS                                                                             \
        (KDL_LEVER_SPATIAL | KDL_LEVER_SUBSAMPLE | KDL_LEVER_BOOTSTRAP | KDL_LEVER_INTERVAL |      \
         KDL_LEVER_BATCH | KDL_LEVER_WIDE_MAX | KDL_LEVER_WIDE_RANK)

/* kdl__cka_job_need() - keep in @ret the larger of @ret and the need of the job
 * kdl__cka_job(@r, @k, @cp) would make, from the shapes alone: its pass in blocks of @rows
 * rows of a stream others count (the report's), or with @rows 0 its pass and its own stream.
 * The run's current job is dropped.  Return: 0; the errors of finding the sources; -ENOMEM. */
int kdl__cka_job_need(struct kdl__cka_run *r, size_t k, const struct kdl_ckpair *cp, size_t rows,
                      kdl__need *ret);

/* kdl__cka_job_cost() - the datasets that job reads, into the cost @c of its stream.  Return:
 * as kdl__cka_job_need(). */
int kdl__cka_job_cost(struct kdl__cka_run *r, size_t k, const struct kdl_ckpair *cp,
                      struct kdl_stream_cost *c);

/* kdl__cka_end() - notes from the last job's results, tables into the doc; frees @r
 * whatever happens.  Return: 0; -ENOMEM. */
int kdl__cka_end(struct kdl__cka_run *r);

/* kdl__cka_abort() - free @r after a failure (NULL: no-op); nothing goes into the doc. */
void kdl__cka_abort(struct kdl__cka_run *r);

#endif
