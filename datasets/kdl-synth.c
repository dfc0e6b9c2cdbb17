/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/error.h"
#include "loaders/h5write.h"
#include "datasets/synth.h"
#include "metrics/base/banned.h"

/*
 * kdl-synth: write a synthetic teacher and student dump with planted
 * structure (datasets/synth.h).  Silent on success; one line on stderr and
 * exit 1 on failure, 2 on a usage error.
 */

static const char usage_text[] =
        "usage: kdl-synth [options] TEACHER.h5 STUDENT.h5\n"
        "\n"
        "  --n N                    samples (2000)\n"
        "  --classes C              classes (10)\n"
        "  --teacher-widths LIST    teacher layer widths, e.g. 64,128,256 (the default)\n"
        "  --student-widths LIST    student layer widths (32,64,128)\n"
        "  --dtype TYPE             float16, float32 (default) or float64\n"
        "  --chunk-rows R           rows per chunk, 0 for contiguous (256)\n"
        "  --gzip LEVEL             deflate level 0..9 (needs chunks; default none)\n"
        "  --spatial                store teacher layer1 as [N, D, 4, 4]\n"
        "  --tokens                 store teacher layer L-1 as [N, 8, D]\n"
        "  --permute-student        store the student's samples in a shuffled order\n"
        "  --no-sample-ids          write no /sample_ids\n"
        "  --no-gradients           write no gradients/ datasets (they are as big as the\n"
        "                           logits and take most of the time at large C)\n"
        "  --topk K                 also write the teacher's top-K logits (logits_topk/:\n"
        "                           indices, values, logsumexp)\n"
        "  --sequence-length L      tokens: /sequence_ids and /positions of sequences of L\n"
        "                           consecutive samples (the last one shorter; default none)\n"
        "  --flat-teacher           teacher checkpoint at the root, no /checkpoints\n"
        "  --planted-rank LAYER:R   make teacher layer LAYER (1-based) exactly rank R\n"
        "  --checkpoints K          student checkpoints, 1..16 (4)\n"
        "  --superclasses G         classes share G super-class centres (0 = auto)\n"
        "  --noise S                within-class noise standard deviation (1.0)\n"
        "  --seed S                 random seed (1)\n"
        "  --block-rows B           rows generated at a time (0 = auto)\n"
        "  -h, --help               show this help\n";

enum {
        OPT_N = 256,
        OPT_CLASSES,
        OPT_TWIDTHS,
        OPT_SWIDTHS,
        OPT_DTYPE,
        OPT_CHUNK,
        OPT_GZIP,
        OPT_SPATIAL,
        OPT_TOKENS,
        OPT_PERMUTE,
        OPT_NO_IDS,
        OPT_NO_GRADIENTS,
        OPT_TOPK,
        OPT_FLAT,
        OPT_PLANTED,
        OPT_CHECKPOINTS,
        OPT_SUPER,
        OPT_NOISE,
        OPT_SEED,
        OPT_BLOCK,
        OPT_SEQLEN,
};

static const struct option options[] = {
        {"n", required_argument, NULL, OPT_N},
        {"classes", required_argument, NULL, OPT_CLASSES},
        {"teacher-widths", required_argument, NULL, OPT_TWIDTHS},
        {"student-widths", required_argument, NULL, OPT_SWIDTHS},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"chunk-rows", required_argument, NULL, OPT_CHUNK},
        {"gzip", required_argument, NULL, OPT_GZIP},
        {"spatial", no_argument, NULL, OPT_SPATIAL},
        {"tokens", no_argument, NULL, OPT_TOKENS},
        {"permute-student", no_argument, NULL, OPT_PERMUTE},
        {"no-sample-ids", no_argument, NULL, OPT_NO_IDS},
        {"no-gradients", no_argument, NULL, OPT_NO_GRADIENTS},
        {"topk", required_argument, NULL, OPT_TOPK},
        {"flat-teacher", no_argument, NULL, OPT_FLAT},
        {"planted-rank", required_argument, NULL, OPT_PLANTED},
        {"checkpoints", required_argument, NULL, OPT_CHECKPOINTS},
        {"superclasses", required_argument, NULL, OPT_SUPER},
        {"noise", required_argument, NULL, OPT_NOISE},
        {"seed", required_argument, NULL, OPT_SEED},
        {"block-rows", required_argument, NULL, OPT_BLOCK},
        {"sequence-length", required_argument, NULL, OPT_SEQLEN},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
};

/* A whole non-negative decimal number, or -1. */
static int parse_u64(const char *s, uint64_t *ret)
{
        unsigned long long v;
        char *end;

        if (!(*s >= '0' && *s <= '9'))
                return -1;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || *end)
                return -1;
        *ret = v;
        return 0;
}

static int parse_size(const char *opt, const char *s, size_t *ret)
{
        uint64_t v;

        if (parse_u64(s, &v) < 0 || v > SIZE_MAX)
                return kdl_error(-KDL_EUSAGE, "--%s: '%s' is not a non-negative integer", opt, s);
        *ret = (size_t) v;
        return 0;
}

static int parse_gzip(const char *s, int *ret)
{
        size_t v = 0;
        int err = parse_size("gzip", s, &v);

        if (err == 0 && v > 9)
                err = kdl_error(-KDL_EUSAGE, "--gzip: level %zu is not 0..9", v);
        if (err == 0)
                *ret = (int) v;
        return err;
}

static int parse_noise(const char *s, double *ret)
{
        double d;
        char *end;

        errno = 0;
        d = strtod(s, &end);
        if (errno || *end || end == s || !isfinite(d) || d < 0.0)
                return kdl_error(-KDL_EUSAGE, "--noise: '%s' is not a non-negative number", s);
        *ret = d;
        return 0;
}

static int parse_seed(const char *s, uint64_t *ret)
{
        uint64_t u;

        if (parse_u64(s, &u) < 0)
                return kdl_error(-KDL_EUSAGE, "--seed: '%s' is not a non-negative integer", s);
        *ret = u;
        return 0;
}

/* Set the flag option @c; false if @c is not a flag. */
static bool set_flag(int c, struct kdl_synth_opts *o)
{
        switch (c) {
        case OPT_SPATIAL:
                o->spatial = true;
                return true;
        case OPT_TOKENS:
                o->tokens = true;
                return true;
        case OPT_PERMUTE:
                o->permute_student = true;
                return true;
        case OPT_NO_IDS:
                o->sample_ids = false;
                return true;
        case OPT_NO_GRADIENTS:
                o->gradients = false;
                return true;
        case OPT_FLAT:
                o->flat_teacher = true;
                return true;
        default:
                return false;
        }
}

/* The option @c with the value @arg. */
static int parse_value(int c, const char *arg, struct kdl_synth_opts *o)
{
        switch (c) {
        case OPT_N:
                return parse_size("n", arg, &o->n);
        case OPT_CLASSES:
                return parse_size("classes", arg, &o->c);
        case OPT_TWIDTHS:
                return kdl_synth_parse_widths(arg, o->teacher_widths, &o->teacher_nlayers);
        case OPT_SWIDTHS:
                return kdl_synth_parse_widths(arg, o->student_widths, &o->student_nlayers);
        case OPT_DTYPE:
                return kdl_store_parse(arg, &o->dtype);
        case OPT_CHUNK:
                return parse_size("chunk-rows", arg, &o->chunk_rows);
        case OPT_GZIP:
                return parse_gzip(arg, &o->gzip);
        case OPT_PLANTED:
                return kdl_synth_parse_planted(arg, &o->planted_layer, &o->planted_rank);
        case OPT_CHECKPOINTS:
                return parse_size("checkpoints", arg, &o->ncheckpoints);
        case OPT_SUPER:
                return parse_size("superclasses", arg, &o->superclasses);
        case OPT_NOISE:
                return parse_noise(arg, &o->noise);
        case OPT_SEED:
                return parse_seed(arg, &o->seed);
        case OPT_BLOCK:
                return parse_size("block-rows", arg, &o->block_rows);
        case OPT_TOPK:
                return parse_size("topk", arg, &o->topk);
        case OPT_SEQLEN:
                return parse_size("sequence-length", arg, &o->sequence_length);
        default:
                return 1;
        }
}

static int parse_args(int argc, char **argv, struct kdl_synth_opts *o)
{
        int c, err;

        opterr = 0; /* one message, ours */
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
                if (c == 'h')
                        return 1;
                if (c == ':')
                        return kdl_error(-KDL_EUSAGE, "option '%s' needs a value",
                                         argv[optind - 1]);
                if (set_flag(c, o))
                        continue;
                err = parse_value(c, optarg, o);
                if (err > 0)
                        return kdl_error(-KDL_EUSAGE, "unknown option '%s'", argv[optind - 1]);
                if (err < 0)
                        return err;
        }
        if (argc - optind != 2)
                return kdl_error(-KDL_EUSAGE, "expected TEACHER.h5 STUDENT.h5, got %d file%s",
                                 argc - optind, argc - optind == 1 ? "" : "s");
        return 0;
}

int main(int argc, char **argv)
{
        struct kdl_synth_opts o;
        int err;

        kdl_synth_opts_init(&o);
        err = parse_args(argc, argv, &o);
        if (err > 0) {
                fputs(usage_text, stdout);
                return 0;
        }
        if (err == 0)
                err = kdl_synth_check(&o);
        if (err == 0)
                err = kdl_synth_write(&o, argv[optind], argv[optind + 1]);
        if (err < 0) {
                fprintf(stderr, "kdl-synth: %s\n", kdl_errmsg());
                return err == -KDL_EUSAGE ? 2 : 1;
        }
        return 0;
}
