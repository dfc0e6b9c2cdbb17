/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/error.h"
#include "datasets/synth.h"
#include "datasets/synth-internal.h"
#include "metrics/base/banned.h"

/* The options of the synthetic generator: defaults, checks, parsing. */

void kdl_synth_opts_init(struct kdl_synth_opts *o)
{
        static const size_t tw[] = {64, 128, 256}, sw[] = {32, 64, 128};

        memset(o, 0, sizeof(*o));
        o->n = 2000;
        o->c = 10;
        o->teacher_nlayers = 3;
        memcpy(o->teacher_widths, tw, sizeof(tw));
        o->student_nlayers = 3;
        memcpy(o->student_widths, sw, sizeof(sw));
        o->dtype = KDL_STORE_F32;
        o->chunk_rows = 256;
        o->gzip = -1;
        o->spatial_h = 4;
        o->spatial_w = 4;
        o->tokens_t = 8;
        o->sample_ids = true;
        o->gradients = true;
        o->ncheckpoints = 4;
        o->super_share = 0.6;
        o->seed = 1;
        o->noise = 1.0;
        o->sep_first = 0.25;
        o->sep_last = 2.0;
        o->logit_scale = 6.0;
        o->mix_final = 0.9;
}

int kdl__synth_usage(const char *fmt, ...)
{
        char *msg = NULL;
        va_list ap;
        int err;

        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        err = kdl_error(-KDL_EUSAGE, "%s", msg ? msg : fmt);
        free(msg);
        return err;
}

static bool finite_in(double x, double lo, double hi)
{
        return isfinite(x) && x >= lo && x <= hi;
}

/* Bound so that every BLAS dimension and block size fits an int. */
#define MAX_BLOCK_ROWS ((size_t) 1 << 16)

/* The sizes: samples, classes, layers, widths, the planted rank. */
static int check_sizes(const struct kdl_synth_opts *o)
{
        size_t L = o->teacher_nlayers;

        if (o->n < 1)
                return kdl__synth_usage("--n must be at least 1");
        if (o->c < 2 || o->c > KDL_SYNTH_MAX_WIDTH)
                return kdl__synth_usage("--classes %zu is not 2..%zu", o->c, KDL_SYNTH_MAX_WIDTH);
        if (L < 1 || L > KDL_SYNTH_MAX_LAYERS)
                return kdl__synth_usage("the teacher needs 1..%d layers, not %zu",
                                        KDL_SYNTH_MAX_LAYERS, L);
        if (o->student_nlayers < 1 || o->student_nlayers > KDL_SYNTH_MAX_LAYERS)
                return kdl__synth_usage("the student needs 1..%d layers, not %zu",
                                        KDL_SYNTH_MAX_LAYERS, o->student_nlayers);
        for (size_t l = 0; l < L; l++)
                if (o->teacher_widths[l] < 1 || o->teacher_widths[l] > KDL_SYNTH_MAX_WIDTH)
                        return kdl__synth_usage("teacher width %zu is not 1..%zu",
                                                o->teacher_widths[l], KDL_SYNTH_MAX_WIDTH);
        for (size_t j = 0; j < o->student_nlayers; j++)
                if (o->student_widths[j] < 1 || o->student_widths[j] > KDL_SYNTH_MAX_WIDTH)
                        return kdl__synth_usage("student width %zu is not 1..%zu",
                                                o->student_widths[j], KDL_SYNTH_MAX_WIDTH);
        if (o->planted_layer > L)
                return kdl__synth_usage("--planted-rank: layer %zu is not 1..%zu", o->planted_layer,
                                        L);
        if (o->planted_layer > 0 &&
            (o->planted_rank < 1 || o->planted_rank > o->teacher_widths[o->planted_layer - 1]))
                return kdl__synth_usage(
                        "--planted-rank: rank %zu is not 1..%zu (the width of layer%zu)",
                        o->planted_rank, o->teacher_widths[o->planted_layer - 1], o->planted_layer);
        return 0;
}

/* Storage, layouts and checkpoints. */
static int check_layout(const struct kdl_synth_opts *o)
{
        size_t L = o->teacher_nlayers;

        if (o->dtype != KDL_STORE_F16 && o->dtype != KDL_STORE_F32 && o->dtype != KDL_STORE_F64)
                return kdl__synth_usage("--dtype must be float16, float32 or float64");
        if (o->sequence_length > o->n)
                return kdl__synth_usage("--sequence-length %zu is more than the %zu samples",
                                        o->sequence_length, o->n);
        if (o->topk > o->c)
                return kdl__synth_usage("--topk %zu is more than the %zu classes", o->topk, o->c);
        if (o->gzip < -1 || o->gzip > 9)
                return kdl__synth_usage("--gzip %d is not 0..9", o->gzip);
        if (o->gzip >= 0 && o->chunk_rows == 0)
                return kdl__synth_usage("--gzip needs --chunk-rows > 0");
        if (o->spatial && L < 2)
                return kdl__synth_usage(
                        "--spatial needs a teacher with 2 or more layers (the last feeds "
                        "the head)");
        if (o->tokens && L < (o->spatial ? 3u : 2u))
                return kdl__synth_usage("--tokens needs a teacher with %d or more layers",
                                        o->spatial ? 3 : 2);
        if (o->spatial &&
            (o->spatial_h < 1 || o->spatial_w < 1 || o->spatial_h > 1024 || o->spatial_w > 1024))
                return kdl__synth_usage("spatial size %zux%zu is not 1..1024 each", o->spatial_h,
                                        o->spatial_w);
        if (o->tokens && (o->tokens_t < 1 || o->tokens_t > 4096))
                return kdl__synth_usage("token count %zu is not 1..4096", o->tokens_t);
        if (o->permute_student && !o->sample_ids)
                return kdl__synth_usage("--permute-student needs sample ids");
        if (o->ncheckpoints < 1 || o->ncheckpoints > KDL_SYNTH_MAX_CHECKPOINTS)
                return kdl__synth_usage("--checkpoints %zu is not 1..%d", o->ncheckpoints,
                                        KDL_SYNTH_MAX_CHECKPOINTS);
        return 0;
}

/* The model's real-valued parameters and the block size. */
static int check_values(const struct kdl_synth_opts *o)
{
        if (o->superclasses > o->c)
                return kdl__synth_usage("%zu super-classes for %zu classes", o->superclasses, o->c);
        if (!finite_in(o->super_share, 0.0, 1.0) || !finite_in(o->mix_final, 0.0, 1.0))
                return kdl__synth_usage("super-class share and final mix must be in [0, 1]");
        if (!finite_in(o->noise, 0.0, 1e6) || !finite_in(o->sep_first, 0.0, 1e6) ||
            !finite_in(o->sep_last, 0.0, 1e6) || !finite_in(o->logit_scale, 0.0, 1e6))
                return kdl__synth_usage("noise, separations and logit scale must be in [0, 1e6]");
        if (o->sep_last <= 0.0)
                return kdl__synth_usage("the last layer's separation must be positive");
        if (o->block_rows > MAX_BLOCK_ROWS)
                return kdl__synth_usage("block of %zu rows is more than %zu", o->block_rows,
                                        MAX_BLOCK_ROWS);
        return 0;
}

int kdl_synth_check(const struct kdl_synth_opts *o)
{
        int err = check_sizes(o);

        err = err ?: check_layout(o);
        return err ?: check_values(o);
}

static int parse_size(const char *s, const char **end, size_t *ret)
{
        unsigned long long v;
        char *e;

        if (!(*s >= '0' && *s <= '9'))
                return -1;
        errno = 0;
        v = strtoull(s, &e, 10);
        if (errno || v > SIZE_MAX)
                return -1;
        *end = e;
        *ret = (size_t) v;
        return 0;
}

int kdl_synth_parse_widths(const char *s, size_t *widths, size_t *ret_n)
{
        size_t w[KDL_SYNTH_MAX_LAYERS], n = 0;
        const char *p = s, *e;

        for (;;) {
                size_t v;

                if (parse_size(p, &e, &v) < 0 || v < 1 || v > KDL_SYNTH_MAX_WIDTH ||
                    (*e != ',' && *e != '\0'))
                        return kdl__synth_usage(
                                "bad width list '%s': expected numbers in 1..%zu separated "
                                "by commas",
                                s, KDL_SYNTH_MAX_WIDTH);
                if (n == KDL_SYNTH_MAX_LAYERS)
                        return kdl__synth_usage("bad width list '%s': more than %d layers", s,
                                                KDL_SYNTH_MAX_LAYERS);
                w[n++] = v;
                if (*e == '\0')
                        break;
                p = e + 1;
        }
        memcpy(widths, w, n * sizeof(w[0]));
        *ret_n = n;
        return 0;
}

int kdl_synth_parse_planted(const char *s, size_t *ret_layer, size_t *ret_rank)
{
        const char *e;
        size_t layer, rank;

        if (parse_size(s, &e, &layer) < 0 || *e != ':' || parse_size(e + 1, &e, &rank) < 0 ||
            *e != '\0' || layer < 1 || rank < 1)
                return kdl__synth_usage("bad planted rank '%s': expected LAYER:RANK, e.g. 2:5", s);
        *ret_layer = layer;
        *ret_rank = rank;
        return 0;
}
