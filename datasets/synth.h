/* SPDX-License-Identifier: MIT */
#ifndef KDL_DATASETS_SYNTH_H
#define KDL_DATASETS_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loaders/h5write.h"

/*
 * The synthetic generator: a teacher and a student dump (schema v1) with
 * known, planted structure, for tests and benchmarks.
 *
 * Teacher, one checkpoint "final", step 1000 (K - 1) like the student's last
 * (or the root with @flat_teacher):
 *   layer l = 1..L, width D_l, "layer<l>" with attr depth = l:
 *     h = sep_l * M_l[y] + B_l u + noise * e            (rank r_l = D_l)
 *     h = A_l (sep_l * M_l[y] + B_l u + noise * e) + 1e-6 * noise * e'
 *                                                         (planted rank r)
 *   with M_l[c] the class means (super_share times the centre of
 *   super-class c mod G plus a class offset), u a per-sample latent of
 *   KDL_SYNTH_LATENT dimensions shared by all layers, sep_l growing linearly
 *   from @sep_first to @sep_last with depth.  The last layer feeds the head:
 *   logits z = W h + b, W[c] = logit_scale * mean_c / |mean_c|^2, computed
 *   from the values as stored (so the stored logits equal W h + b to
 *   float64 rounding with float64 storage); gradients/logits =
 *   softmax(z) - onehot(y); gradients/features/<last layer> = W^T that
 *   (both left out with @gradients false).
 *   With @topk = k: logits_topk/indices (int32 [N, k], the k largest
 *   stored logits, best first; ties to the smaller class), values (those
 *   logits) and logsumexp (float64 [N], of the stored logits).
 *   @spatial stores layer1 as [N, D, H, W], @tokens layer L-1 as
 *   [N, T, D]: h plus noise of zero mean over the positions (tokens), so
 *   the average over them is h again.
 * Student, checkpoints k = 0..K-1 ("init", "early", "middle", "final" for
 *   K = 4; steps 1000 k, epoch k), mix m_k = mix_final * k / (K - 1)
 *   (mix_final when K = 1):
 *   layer j = 1..Ls (width S_j) follows teacher layer t(j) = ceil(j L / Ls):
 *     h_s = m_k * P_j h_t + (1 - m_k) * noise * e_{j,k}
 *   with P_j a fixed random semi-orthogonal S_j x D_t(j) projection; head
 *   W_s = W P^T + (1 - m_k) * (random of the same RMS), b_s = m_k b; logits
 *   and gradients as for the teacher.
 *
 * Every random draw is keyed by (seed, purpose, sample, layer): a sample's
 * values do not depend on the storage type, chunking, compression, the
 * --spatial/--tokens layout or the student's row order (up to BLAS
 * rounding), which is what the reference tests compare.  Labels are
 * balanced (counts differ by at most one) and shuffled.
 * Memory: 8 bytes a sample (the labels; 16 with @permute_student), the
 * model's C x r class means of every teacher layer and the C x D heads (the
 * teacher's and one per student checkpoint), and one block of rows of every
 * layer and of the C-wide logits and gradients; never N x D, N x C or C x C.
 * At C = 32,000, teacher widths 1024,512, student 512,256, one checkpoint,
 * float16: a peak RSS of 0.81 GB without gradients, 0.91 GB with them, for
 * any N.
 */

#define KDL_SYNTH_MAX_LAYERS      16
#define KDL_SYNTH_MAX_CHECKPOINTS 16
#define KDL_SYNTH_MAX_WIDTH       ((size_t) 1 << 20)
#define KDL_SYNTH_LATENT          8

struct kdl_synth_opts {
        size_t n;                                    /* samples (2000) */
        size_t c;                                    /* classes, >= 2 (10) */
        size_t teacher_nlayers;                      /* 1..16 (3) */
        size_t teacher_widths[KDL_SYNTH_MAX_LAYERS]; /* (64, 128, 256) */
        size_t student_nlayers;                      /* 1..16 (3) */
        size_t student_widths[KDL_SYNTH_MAX_LAYERS]; /* (32, 64, 128) */
        size_t planted_layer;        /* teacher depth 1..L with planted rank; 0 = none (0) */
        size_t planted_rank;         /* 1..width of that layer */
        enum kdl_store dtype;        /* store of every float dataset (float32) */
        size_t chunk_rows;           /* 0 = contiguous (256) */
        int gzip;                    /* -1 = none, 0..9 (-1) */
        bool spatial;                /* teacher layer1 as [N, D, spatial_h, spatial_w] (false) */
        size_t spatial_h, spatial_w; /* (4, 4) */
        bool tokens;                 /* teacher layer L-1 as [N, tokens_t, D] (false) */
        size_t tokens_t;             /* (8) */
        bool sample_ids;             /* write /sample_ids (true) */
        bool gradients;              /* write gradients/logits and gradients/features (true) */
        size_t topk;                 /* also the teacher's top-k logits (logits_topk/); 0: no (0) */
        size_t sequence_length;      /* tokens: /sequence_ids, /positions of sequences of this
                                        many consecutive samples; 0: none (0) */
        bool permute_student;        /* student rows in a seeded permuted order (false) */
        bool flat_teacher;           /* teacher checkpoint at the root, no /checkpoints (false) */
        size_t ncheckpoints;         /* student checkpoints 1..16 (4) */
        size_t superclasses;         /* 0 = automatic (c / 3 when c >= 6, else 1) */
        double super_share;          /* weight of the super-class centre, 0..1 (0.6) */
        uint64_t seed;               /* (1) */
        double noise;                /* within-class noise standard deviation (1.0) */
        double sep_first;            /* class separation of layer 1 (0.25) */
        double sep_last;             /* class separation of layer L (2.0) */
        double logit_scale;          /* teacher's target logit, roughly (6.0) */
        double mix_final;            /* student's share of the teacher at the end, 0..1 (0.9) */
        size_t block_rows;           /* rows generated at a time; 0 = automatic */
};

/** kdl_synth_opts_init() - the defaults shown in the struct comments. */
KDL_API void kdl_synth_opts_init(struct kdl_synth_opts *o);

/**
 * kdl_synth_check() - validate @o.
 * Return: 0; -KDL_EUSAGE naming the first bad option.
 */
KDL_API int kdl_synth_check(const struct kdl_synth_opts *o);

/**
 * kdl_synth_write() - generate and write a teacher and a student dump.
 * @o:            borrowed; checked with kdl_synth_check() first.
 * @teacher_path: borrowed; must differ from @student_path.
 *
 * Both files are written under temporary names next to their targets and
 * renamed into place only when both are complete: on failure no partial
 * file is left behind, and files already at those paths are untouched
 * unless the second rename itself fails (then the new teacher is removed).
 *
 * Return: 0; -KDL_EUSAGE for bad options; -EISDIR when a path is a
 * directory; -errno when a file cannot be created or renamed; -KDL_EHDF5;
 * -KDL_EOVERFLOW; -ENOMEM.
 */
KDL_API int kdl_synth_write(const struct kdl_synth_opts *o, const char *teacher_path,
                            const char *student_path);

/**
 * kdl_synth_parse_widths() - parse a comma-separated list of layer widths
 * ("64,128,256") into @widths (room for KDL_SYNTH_MAX_LAYERS).
 * @ret_n: the number of widths; @widths and @ret_n set on success only.
 * Return: 0; -KDL_EUSAGE for an empty list, a width that is not a number in
 * 1..KDL_SYNTH_MAX_WIDTH, or more than KDL_SYNTH_MAX_LAYERS widths.
 */
KDL_API int kdl_synth_parse_widths(const char *s, size_t *widths, size_t *ret_n);

/**
 * kdl_synth_parse_planted() - parse "LAYER:RANK" (both positive integers).
 * Return: 0 with *@ret_layer and *@ret_rank set; -KDL_EUSAGE otherwise.
 */
KDL_API int kdl_synth_parse_planted(const char *s, size_t *ret_layer, size_t *ret_rank);

#endif
