/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
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
        OPT_FLAT,
        OPT_PLANTED,
        OPT_CHECKPOINTS,
        OPT_SUPER,
        OPT_NOISE,
        OPT_SEED,
        OPT_BLOCK,
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
        {"flat-teacher", no_argument, NULL, OPT_FLAT},
        {"planted-rank", required_argument, NULL, OPT_PLANTED},
        {"checkpoints", required_argument, NULL, OPT_CHECKPOINTS},
        {"superclasses", required_argument, NULL, OPT_SUPER},
        {"noise", required_argument, NULL, OPT_NOISE},
        {"seed", required_argument, NULL, OPT_SEED},
        {"block-rows", required_argument, NULL, OPT_BLOCK},
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

static int parse_args(int argc, char **argv, struct kdl_synth_opts *o)
{
        size_t v;
        uint64_t u;
        double d;
        char *end;
        int c, err = 0;

        opterr = 0; /* one message, ours */
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
                switch (c) {
                case OPT_N:
                        err = parse_size("n", optarg, &o->n);
                        break;
                case OPT_CLASSES:
                        err = parse_size("classes", optarg, &o->c);
                        break;
                case OPT_TWIDTHS:
                        err = kdl_synth_parse_widths(optarg, o->teacher_widths,
                                                     &o->teacher_nlayers);
                        break;
                case OPT_SWIDTHS:
                        err = kdl_synth_parse_widths(optarg, o->student_widths,
                                                     &o->student_nlayers);
                        break;
                case OPT_DTYPE:
                        err = kdl_store_parse(optarg, &o->dtype);
                        break;
                case OPT_CHUNK:
                        err = parse_size("chunk-rows", optarg, &o->chunk_rows);
                        break;
                case OPT_GZIP:
                        err = parse_size("gzip", optarg, &v);
                        if (err == 0 && v > 9)
                                err = kdl_error(-KDL_EUSAGE, "--gzip: level %zu is not 0..9", v);
                        if (err == 0)
                                o->gzip = (int) v;
                        break;
                case OPT_SPATIAL:
                        o->spatial = true;
                        break;
                case OPT_TOKENS:
                        o->tokens = true;
                        break;
                case OPT_PERMUTE:
                        o->permute_student = true;
                        break;
                case OPT_NO_IDS:
                        o->sample_ids = false;
                        break;
                case OPT_FLAT:
                        o->flat_teacher = true;
                        break;
                case OPT_PLANTED:
                        err = kdl_synth_parse_planted(optarg, &o->planted_layer, &o->planted_rank);
                        break;
                case OPT_CHECKPOINTS:
                        err = parse_size("checkpoints", optarg, &o->ncheckpoints);
                        break;
                case OPT_SUPER:
                        err = parse_size("superclasses", optarg, &o->superclasses);
                        break;
                case OPT_NOISE:
                        errno = 0;
                        d = strtod(optarg, &end);
                        if (errno || *end || end == optarg || !isfinite(d) || d < 0.0)
                                err = kdl_error(-KDL_EUSAGE,
                                                "--noise: '%s' is not a non-negative number",
                                                optarg);
                        else
                                o->noise = d;
                        break;
                case OPT_SEED:
                        if (parse_u64(optarg, &u) < 0)
                                err = kdl_error(-KDL_EUSAGE,
                                                "--seed: '%s' is not a non-negative integer",
                                                optarg);
                        else
                                o->seed = u;
                        break;
                case OPT_BLOCK:
                        err = parse_size("block-rows", optarg, &o->block_rows);
                        break;
                case 'h':
                        return 1;
                case ':':
                        return kdl_error(-KDL_EUSAGE, "option '%s' needs a value",
                                         argv[optind - 1]);
                default:
                        return kdl_error(-KDL_EUSAGE, "unknown option '%s'", argv[optind - 1]);
                }
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
