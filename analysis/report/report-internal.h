/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_REPORT_INTERNAL_H
#define KDL_ANALYSIS_REPORT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "analysis/cka-internal.h"
#include "analysis/cka.h"
#include "analysis/dims.h"
#include "analysis/inputs.h"
#include "analysis/kl.h"
#include "analysis/kl-topk.h"
#include "analysis/layers.h"
#include "analysis/need.h"
#include "analysis/pass.h"
#include "analysis/report.h"
#include "analysis/split.h"
#include "analysis/summary.h"
#include "reports/site.h"
#include "reports/table.h"

/*
 * The report's parts: report.c computes every analysis and writes the
 * sections in order; each section-<verb>.c draws the figures and shows the
 * tables of one analysis from the documents computed; section.c holds what
 * they share.
 */

/* One run of kdl_run_report(). */
struct kdl__report {
        const struct kdl_run_report_opts *o;
        kdl_inputs *in;
        const char **inputs; /* the teacher's path, then the students', as given */
        kdl_site *site;
        struct kdl_ckpair **sel; /* [nstudents] each student's checkpoints analysed, each with
                                    the teacher's it is compared with (in @in) */
        size_t *nsel;            /* [nstudents] their counts, each >= 1 */
        bool *share;             /* [nstudents] the student's checkpoints share CKA passes (set by
                                    kdl__report_need()) */
        size_t split_memory;     /* split's budget, what the students' passes leave of --memory
                                    (set by kdl__report_need(); 0: not yet, the whole budget) */
        char *partner_text; /* for kdl__report_partner_text() with a named teacher checkpoint */
        char **names;       /* display name of each student */
        size_t prefix; /* length of a prefix all names share ("student_"), left out in figures */
        size_t done, total;
        double tau;
        size_t k; /* teacher layers recommended */
        /* The analyses, computed before any section is written. */
        kdl_doc *inspect, *kl, *split, *dims, *layers, *summary;
        kdl_doc **cka; /* [ncka] one per student checkpoint, student-major */
        size_t ncka;
        kdl_doc *passes; /* how the dumps were read */
        /* The sparse teacher targets (section-lm.c): kl --topk's k (none: no section). */
        size_t topk_k[KDL_RUN_MAX_TOPK], ntopk;
        bool topk_default;                     /* the k are the default list, not --topk's */
        char topk_list[16 * KDL_RUN_MAX_TOPK]; /* "1,8,32,128" */
        kdl_doc *topk;                         /* kl --topk's document; NULL without the section */
};

/* The options the report gives each analysis, all from its own (kdl__report_opts()). */
struct kdl__summary_run;

struct kdl__report_opts {
        struct kdl_run_kl_opts kl;
        struct kdl_run_split_opts split;
        struct kdl_run_dims_opts dims;
        struct kdl_run_cka_opts cka;
        struct kdl_run_layers_opts layers;
        struct kdl_run_summary_opts summary;
};

/* kdl__report_one() - the teacher and student @k of r->in alone (borrowed from r->in), as
 * the CKA of that student reads them (kdlens cka -t T -s S). */
kdl_inputs kdl__report_one(const struct kdl__report *r, size_t k);

/* kdl__report_opts() - fill @a from the report's options (r->o) and inputs (r->in). */
void kdl__report_opts(const struct kdl__report *r, struct kdl__report_opts *a);

/* ---- report-cka.c: each student's CKA runs ----------------------------------------- */

/*
 * The CKA runs of one student's selected checkpoints, each comparing the teacher's
 * checkpoint (A) with the student's, as kdlens cka -t T -s S does; with @share, the
 * checkpoints compared with one teacher checkpoint share one pass (kdl__cka_shared_new())
 * on the stream of the first of them.
 */
struct kdl__report_cka {
        kdl_inputs one;              /* the teacher and this student alone */
        struct kdl__cka_run **runs;  /* [n] */
        kdl_doc **docs;              /* [n] their documents */
        struct kdl_ckpair *ckp;      /* [n] the teacher's checkpoint (main), the student's */
        bool *done;                  /* [n] its job is made (on its stream or an earlier one) */
        struct kdl__cka_run **group; /* [n] scratch: the runs of one pass */
        struct kdl_ckpair *gckp;     /* [n] and their checkpoints */
        size_t n;
        bool share;
};

/* kdl__report_cka_begin() - begin a CKA run with @o for each selected checkpoint of
 * student @k.  Release @sc with kdl__report_cka_release() whatever this returns.
 * Return: 0; the errors of kdl__cka_begin(); -ENOMEM.  --measure: the last checkpoint's. */
int kdl__report_cka_begin(const struct kdl__report *r, const struct kdl_run_cka_opts *o, size_t k,
                          bool share, struct kdl__report_cka *sc);

void kdl__report_cka_release(struct kdl__report_cka *sc);

/*
 * kdl__report_cka_job() - the CKA job for the stream of checkpoint @c: a pass shared with
 * the later checkpoints compared with the same teacher checkpoint (*@ret_sh, free it with
 * kdl__cka_shared_free() after the stream has run), or @c's alone; none when an earlier
 * checkpoint's stream has it.  kdl__report_cka_cost() and kdl__report_cka_need() - what
 * that job would read (into @cost) and need (kept in @ret as kdl__cka_job_need() does,
 * in blocks of @rows rows), from the shapes alone; call the cost before the need of the
 * same checkpoint, the need of every checkpoint in order.
 * Return: 1 for a job, 0 for none (need: 0); the errors of the CKA jobs; -ENOMEM.
 */
int kdl__report_cka_job(struct kdl__report_cka *sc, size_t c, struct kdl__cka_shared **ret_sh,
                        kdl__job *ret);
int kdl__report_cka_cost(struct kdl__report_cka *sc, size_t c, struct kdl_stream_cost *cost);
int kdl__report_cka_need(struct kdl__report_cka *sc, size_t c, size_t rows, kdl__need *ret);

/* ---- report-need.c: what the report needs --------------------------------------- */

/* The report's options that lower a need. */
#define KDL__REPORT_LEVERS (KDL_LEVER_BLOCK_ROWS | KDL_LEVER_SPATIAL)

/* What the report's need counts, for the plan's notes. */
extern const char kdl__report_need_note[];

/*
 * kdl__report_need() - into @ret, what the report holds at its peak: the analyses of one
 * student checkpoint run together on one stream, so their needs add up; the largest
 * checkpoint counts, and the teacher's passes and layers (run alone after them).  Sets
 * r->share: a student's checkpoints share CKA passes unless that alone would put its need
 * over the budget; and r->split_memory: split's domain level is planned within what the
 * other analyses of the students' passes leave of the budget.  Reads nothing but the shapes
 * and the labels (r->in open, r->sel chosen).
 * Return: 0; the analyses' errors of finding their sources; -ENOMEM.
 */
int kdl__report_need(struct kdl__report *r, kdl__need *ret);

/* kdl__report_progress() - tell the caller stage @what begins. */
void kdl__report_progress(struct kdl__report *r, const char *what);

/* ---- section.c: reading the analyses' tables -------------------------------- */

/* Cell @key of row @i as a real (an integer converted); NaN when missing or not a number. */
double kdl__report_real(const kdl_table *t, size_t i, const char *key);

/* Cell @key of row @i as a string (borrowed); "" when missing or not a string. */
const char *kdl__report_str(const kdl_table *t, size_t i, const char *key);

/* Cell @key of row @i is the boolean true. */
bool kdl__report_bool(const kdl_table *t, size_t i, const char *key);

/* @a is the temperature @b, up to rounding. */
bool kdl__report_same_tau(double a, double b);

/* ---- section.c: names and showing ----------------------------------------------- */

/* Student @k's name in crowded figure labels: without the prefix all share.  Borrowed. */
const char *kdl__report_short_name(const struct kdl__report *r, size_t k);

/* Student @k's last checkpoint analysed and the teacher's it is compared with.  Borrowed. */
const struct kdl_ckpair *kdl__report_last_pair(const struct kdl__report *r, size_t k);

/* Which teacher checkpoint each student checkpoint is compared with, as a phrase
 * ("the teacher's last checkpoint", ...).  Static storage or @r's options. */
const char *kdl__report_partner_text(const struct kdl__report *r);

/* kdl__report_command() - the command line that computes what the report shows of @verb
 * ("summary", "kl", "split", "dims", "layers" or "cka") with the report's options: every
 * student when @k is SIZE_MAX, else student @k alone (cka: always one).  The caller frees
 * it; NULL on ENOMEM. */
char *kdl__report_command(const struct kdl__report *r, const char *verb, size_t k);

/* kdl__report_show() - render figure @name in every format and show it with @caption, to
 * which the figure's data file and the command computing its values (kdl__report_command()
 * of @verb and @k; "measures": cka's with the report's --measure) are added. */
int kdl__report_show(struct kdl__report *r, const char *name, const char *caption, const char *verb,
                     size_t k);

/* kdl__report_show_table() - table @table of @d, when it has rows, as a table of the
 * report written to tables/@file. */
int kdl__report_show_table(struct kdl__report *r, const kdl_doc *d, const char *table,
                           const char *file, const char *caption);

/* ---- report-groups.c: repeated runs (--group) ------------------------------------ */

/* The students of a figure as units: each group of runs one unit (its first run's place),
 * each student in no group a unit of its own. */
struct kdl__report_units {
        size_t n;     /* units */
        size_t *of;   /* [nstudents] the unit of each student */
        size_t *size; /* [n] runs of each unit */
        char **name;  /* [n] the group's name or the student's, with "(n = runs)" when there
                         are groups */
        bool grouped; /* some unit is a group (summary's table has a "group" column) */
};

/* kdl__report_units_init() - the units of @r's students from the groups of summary's table
 * (a student of several groups goes with its first); release @u with
 * kdl__report_units_release() whatever it returns.  Return: 0; -ENOMEM. */
int kdl__report_units_init(const struct kdl__report *r, struct kdl__report_units *u);
void kdl__report_units_release(struct kdl__report_units *u);

/* kdl__report_units_stats() - per unit, the mean and the sample standard deviation (n - 1;
 * NaN with fewer than two values) over its runs of the @ns x @n values @y (row k: student
 * k; NaN left out) into @mean and @sd (u->n x @n each). */
void kdl__report_units_stats(const struct kdl__report_units *u, const double *y, size_t ns,
                             size_t n, double *mean, double *sd);

/* ---- the sections, in the report's order ---------------------------------------- */

/* The titles of the sections the summary links to (their anchors: kdl_site_anchor()). */
#define KDL__REPORT_TITLE_SUMMARY "Summary"
#define KDL__REPORT_TITLE_KL      "Knowledge sources"
#define KDL__REPORT_TITLE_DIMS    "Feature dimensions"
#define KDL__REPORT_TITLE_LAYERS  "Teacher layers"

int kdl__report_section_summary(struct kdl__report *r);

/* kdl__report_summary_teacher_job() - summary's job @ret of the teacher at @ck when a student
 * checkpoint analysed is compared with @ck, and in *@ret_k the stream it runs on: SIZE_MAX the
 * teacher's own (shared with dims), else student k's pair (a teacher without labels uses
 * that student's).  Return: 1 with a job; 0 without (@ck compared with none); the errors of
 * kdl__summary_teacher_job(). */
int kdl__report_summary_teacher_job(struct kdl__report *r, struct kdl__summary_run *s,
                                    const kdl_checkpoint *ck, kdl__job *ret, size_t *ret_k);
int kdl__report_section_inspect(struct kdl__report *r);
int kdl__report_section_kl(struct kdl__report *r);
int kdl__report_section_split(struct kdl__report *r);

/* kdl__report_split_classes() - split's per-class figure of each student at its last
 * checkpoint (from table split_classes of @d): every class up to 20, else the 20 of the
 * largest mean KL.  Return: 0; -KDL_EPLOT; -errno; -ENOMEM. */
int kdl__report_split_classes(struct kdl__report *r, const kdl_doc *d);

/* kdl__report_section_positions() - split's per-position curves (section-positions.c): a
 * section with each student's mean KL, TCKD and NCKD and the explicit and implicit shares
 * against the position at its last checkpoint, and the table split_positions; nothing when
 * the split run has no split_positions rows (no /positions in the dumps).
 * Return: 0; -KDL_EPLOT; -errno; -ENOMEM. */
int kdl__report_section_positions(struct kdl__report *r);
int kdl__report_section_dims(struct kdl__report *r);
int kdl__report_section_layers(struct kdl__report *r);
int kdl__report_section_cka(struct kdl__report *r);
/* --measure's figures and table (section-measures.c); nothing without --measure. */
int kdl__report_section_measures(struct kdl__report *r);
int kdl__report_section_passes(struct kdl__report *r);

/* ---- section-lm.c: sparse teacher targets (kl --topk) ----------------------------- */

/* kdl__report_topk_init() - the section's k (r->topk_k): --topk's, or the default for a
 * language-model teacher (not under MPI); none otherwise.  kdl__report_topk_need() - keep in
 * @ret the larger of it and what the kl --topk run needs (it runs alone, after the streams).
 * kdl__report_topk_compute() - that run, into r->topk.  kdl__report_section_topk() - the
 * section: a figure per student and the table kl_topk.  Each does nothing without k.
 * Return: 0; the errors of kl --topk; -KDL_EPLOT; -errno; -ENOMEM. */
int kdl__report_topk_init(struct kdl__report *r);
int kdl__report_topk_need(struct kdl__report *r, kdl__need *ret);
int kdl__report_topk_compute(struct kdl__report *r);
int kdl__report_section_topk(struct kdl__report *r);

#endif
