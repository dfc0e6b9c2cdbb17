/* SPDX-License-Identifier: MIT */
#ifndef KDL_DATASETS_SYNTH_INTERNAL_H
#define KDL_DATASETS_SYNTH_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/base/error.h"
#include "loaders/h5write.h"
#include "datasets/synth.h"

/*
 * The parts of the synthetic generator (datasets/synth.h) shared by its files:
 *   synth-rng.c    the keyed random streams;
 *   synth-opts.c   defaults, checks and parsing of the options;
 *   synth-model.c  the planted structure and the samples drawn from it;
 *   synth.c        the writer of the two dumps.
 */

/* ---- synth-rng.c ---- */

/* A random stream: xoshiro256** with a spare Box-Muller normal. */
struct kdl__synth_rng {
        uint64_t s[4];
        double spare;
        bool has_spare;
};

enum kdl__synth_stream {
        STREAM_LABELS = 1,
        STREAM_PERM,
        STREAM_PARAM,  /* a = enum kdl__synth_param, b = layer (and checkpoint) */
        STREAM_LATENT, /* a = sample */
        STREAM_TNOISE, /* a = sample, b = teacher layer */
        STREAM_TTINY,  /* a = sample, b = teacher layer */
        STREAM_TSHAPE, /* a = sample, b = teacher layer: spatial/token noise */
        STREAM_SNOISE, /* a = sample, b = student layer << 8 | checkpoint */
};

enum kdl__synth_param {
        PARAM_SUPER = 1, /* super-class centres */
        PARAM_OFFSET,    /* class offsets */
        PARAM_MIX,       /* latent loadings */
        PARAM_EMBED,     /* planted-rank embedding */
        PARAM_PROJ,      /* student projections */
        PARAM_TBIAS,     /* teacher head bias */
        PARAM_SHEAD,     /* student head perturbation, b = checkpoint */
};

/* The stream keyed by (@seed, @kind, @a, @b). */
void kdl__synth_rng_init(struct kdl__synth_rng *r, uint64_t seed, enum kdl__synth_stream kind,
                         uint64_t a, uint64_t b);

/* Uniform integer in [0, @n), without modulo bias. */
uint64_t kdl__synth_rng_below(struct kdl__synth_rng *r, uint64_t n);

/* A standard normal. */
double kdl__synth_rng_normal(struct kdl__synth_rng *r);

/* @n normals of standard deviation @scale into @x. */
void kdl__synth_rng_fill_normal(struct kdl__synth_rng *r, double *x, size_t n, double scale);

/* ---- synth-opts.c ---- */

/* -KDL_EUSAGE with the formatted message. */
int kdl__synth_usage(const char *fmt, ...) KDL_PRINTF(1, 2);

/* ---- synth-model.c ---- */

enum kdl__synth_layout { LAYOUT_2D, LAYOUT_SPATIAL, LAYOUT_TOKENS };

struct kdl__synth_tlayer {
        size_t width;  /* D */
        size_t rank;   /* r: D, or the planted rank */
        double sep;    /* class separation */
        double *means; /* C x r */
        double *mix;   /* r x LATENT */
        double *embed; /* D x r when planted, else NULL */
        enum kdl__synth_layout layout;
        size_t ext; /* spatial H*W or token count; 1 for 2-D */
};

struct kdl__synth_slayer {
        size_t width; /* S */
        size_t src;   /* teacher layer index */
        double *proj; /* S x D_src, semi-orthogonal */
};

struct kdl__synth_model {
        const struct kdl_synth_opts *o;
        size_t L, Ls, K, C, N;
        struct kdl__synth_tlayer t[KDL_SYNTH_MAX_LAYERS];
        struct kdl__synth_slayer s[KDL_SYNTH_MAX_LAYERS];
        double *tw, *tb;                       /* teacher head, as stored */
        double *sw[KDL_SYNTH_MAX_CHECKPOINTS]; /* student heads, as stored */
        double *sb[KDL_SYNTH_MAX_CHECKPOINTS];
        double mixk[KDL_SYNTH_MAX_CHECKPOINTS];
        int64_t *labels; /* N, teacher (natural) order */
        size_t *perm;    /* student row -> sample; NULL = identity */
        size_t block;    /* rows per block */
};

/* The model of the checked options @o (borrowed; must outlive @m).  On
 * failure the caller still calls kdl__synth_model_release().
 * Return: 0; -ENOMEM. */
int kdl__synth_model_init(struct kdl__synth_model *m, const struct kdl_synth_opts *o);

void kdl__synth_model_release(struct kdl__synth_model *m);

/* Scratch for one block of rows; sizes are block x the widest need. */
struct kdl__synth_work {
        size_t rows;
        double *u;                        /* rows x LATENT */
        double *z;                        /* rows x max rank */
        double *h[KDL_SYNTH_MAX_LAYERS];  /* teacher features, rows x D_l */
        double *ph[KDL_SYNTH_MAX_LAYERS]; /* student projections, rows x S_j */
        double *hs;                       /* a student feature, rows x max S */
        double *q;                        /* values as stored, rows x max stored row */
        double *logits, *grad;            /* rows x C (grad NULL without gradients) */
        double *gfeat;                    /* rows x max(D_L, S_last), likewise */
        double *noise;                    /* one sample's spatial/token noise */
        int64_t *ints;                    /* rows */
        size_t *idx;                      /* rows: the samples of the block */
};

/* Scratch for blocks of @m's rows.  On failure the caller still calls
 * kdl__synth_work_release().  Return: 0; -KDL_EOVERFLOW; -ENOMEM. */
int kdl__synth_work_init(struct kdl__synth_work *w, const struct kdl__synth_model *m);

void kdl__synth_work_release(struct kdl__synth_work *w);

/* Teacher features (before rounding to the store) of samples w->idx[0..B)
 * into w->h. */
void kdl__synth_gen_teacher(const struct kdl__synth_model *m, struct kdl__synth_work *w, size_t B);

/* The stored rows of a spatial or token teacher layer @l into w->q. */
void kdl__synth_spread(const struct kdl__synth_model *m, struct kdl__synth_work *w, size_t l,
                       size_t B);

/* P_j h_t of every student layer j into w->ph (for every checkpoint). */
void kdl__synth_gen_student_proj(const struct kdl__synth_model *m, struct kdl__synth_work *w,
                                 size_t B);

/* Student layer @j at checkpoint @k, as stored, into w->q. */
void kdl__synth_gen_student(const struct kdl__synth_model *m, struct kdl__synth_work *w, size_t j,
                            size_t k, size_t B);

/* Round @n values of @x to the store into @q. */
void kdl__synth_round_into(double *q, const double *x, size_t n, enum kdl_store store);

/*
 * The head's outputs for a block whose head input, as stored, is @hq
 * (B x D): logits z = hq W^T + b into w->logits; gradients softmax(z) -
 * onehot(y) of the logits as stored into w->grad, and W^T of that into
 * w->gfeat, all as stored (only the logits without gradients).
 */
void kdl__synth_head_outputs(const struct kdl__synth_model *m, struct kdl__synth_work *w,
                             const double *W, const double *bias, size_t D, const double *hq,
                             size_t B);

/* The teacher's sparse logits (synth-topk.c), with --topk. */
struct kdl__synth_topk {
        kdl_h5wds *ix, *val, *lse; /* logits_topk/indices, values, logsumexp */
        size_t k;
        int64_t *ints; /* [block, k] */
        double *vals;  /* [block, k] */
        double *l;     /* [block] */
        size_t *top;   /* [k] */
};

/* Create the three datasets under @group (of o->topk columns) and the scratch for a block.  On
 * failure the caller still calls kdl__synth_topk_close().  Return: 0; the writer's errors;
 * -ENOMEM. */
int kdl__synth_topk_open(const struct kdl__synth_model *m, kdl_h5w *h5, const char *group,
                         struct kdl__synth_topk *t);

/* The rows [@r0, @r0 + @B) from the block's logits @z ([B, c], as stored).  Return: 0; the
 * writer's errors. */
int kdl__synth_topk_write(struct kdl__synth_topk *t, const double *z, size_t c, size_t r0,
                          size_t B);

/* Close the datasets and free the scratch; NULL members are skipped.  Return: 0; the first
 * error of closing. */
int kdl__synth_topk_close(struct kdl__synth_topk *t);

/* Token dumps (synth-seq.c), with --sequence-length: /sequence_ids and /positions of the rows
 * whose samples are @idx.  open does nothing without the option; on failure the caller still
 * calls close.  Return: 0; the writer's errors; -ENOMEM. */
struct kdl__synth_seq {
        kdl_h5wds *seq, *pos; /* NULL without --sequence-length */
        int64_t *ints;        /* [block] */
};

int kdl__synth_seq_open(const struct kdl__synth_model *m, kdl_h5w *h5, struct kdl__synth_seq *q);
int kdl__synth_seq_write(const struct kdl__synth_model *m, struct kdl__synth_seq *q,
                         const size_t *idx, size_t r0, size_t B);
int kdl__synth_seq_close(struct kdl__synth_seq *q);

#endif
