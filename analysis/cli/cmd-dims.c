/* SPDX-License-Identifier: MIT */
#include <float.h>
#include <getopt.h>
#include <stdint.h>
#include <string.h>

#include "analysis/cli/cli.h"
#include "analysis/dims.h"
#include "analysis/inputs.h"
#include "metrics/spectral.h"
#include "metrics/base/banned.h"

enum {
        OPT_LAYER = KDL_OPT_FIRST_FREE_,
        OPT_TOLERANCE,
        OPT_RANK_RTOL,
        OPT_LAMBDA,
        OPT_CURVES,
        OPT_LOGIT_SPECTRUM,
        OPT_EXACT_MAX,
        OPT_SKETCH_RANK,
        OPT_SKETCH_OVERSAMPLE,
        OPT_SEED,
};

/* --logit-spectrum: auto, or a method by its name. */
static int parse_method(struct kdl_cli *cli, const char *arg, int *ret)
{
        if (strcmp(arg, "auto") == 0) {
                *ret = KDL_DIMS_LOGITS_AUTO;
                return 0;
        }
        for (int m = 0; m < KDL_SPECTRAL_METHOD_COUNT_; m++)
                if (strcmp(arg, kdl_spectral_method_name((enum kdl_spectral_method) m)) == 0) {
                        *ret = m;
                        return 0;
                }
        return kdl_cli_usage(cli,
                             "--logit-spectrum: expected auto, exact-features, exact-gram or "
                             "sketch, found '%s'",
                             arg);
}

static int option(struct kdl_cli *cli, int opt, const char *arg, void *ctx)
{
        struct kdl_run_dims_opts *o = ctx;

        switch (opt) {
        case OPT_LAYER:
                o->layer = arg;
                return 0;
        case OPT_TOLERANCE:
                return kdl_cli_parse_real(cli, "--tolerance", arg, 0.0, 1.0, &o->tolerance);
        case OPT_RANK_RTOL:
                return kdl_cli_parse_real(cli, "--rank-rtol", arg, 0.0, 0.5, &o->rank_rtol);
        case OPT_LAMBDA:
                if (strcmp(arg, "gcv") != 0)
                        return kdl_cli_parse_real(cli, "--lambda", arg, 0.0, DBL_MAX,
                                                  &o->ridge_lambda);
                o->ridge_lambda = -1.0;
                return 0;
        case OPT_CURVES:
                o->spectrum = true;
                return 0;
        case OPT_LOGIT_SPECTRUM:
                return parse_method(cli, arg, &o->logit_method);
        case OPT_EXACT_MAX:
                return kdl_cli_parse_size(cli, "--exact-max", arg, 0, SIZE_MAX, &o->exact_max);
        case OPT_SKETCH_RANK:
                return kdl_cli_parse_count(cli, "--sketch-rank", arg, &o->sketch_rank);
        case OPT_SKETCH_OVERSAMPLE:
                return kdl_cli_parse_size(cli, "--sketch-oversample", arg, 0, SIZE_MAX,
                                          &o->sketch_oversample);
        case OPT_SEED:
                return kdl_cli_parse_uint(cli, "--seed", arg, 0, UINT64_MAX, &o->seed);
        default:
                return KDL_CLI_OPT_NOT_MINE;
        }
}

static int run(kdl_inputs *in, const void *opts, kdl_doc *doc)
{
        const struct kdl_run_dims_opts *o = opts;
        int err = kdl_run_dims(in, o, doc);

        if (!err && !o->spectrum)
                err = kdl_doc_add_note(doc, "the spectrum table (every eigenvalue) is left out "
                                            "of the terminal table: --curves adds it");
        return err;
}

static int plan(kdl_inputs *in, const void *o, kdl_doc *doc)
{
        return kdl_run_dims_plan(in, o, doc);
}

int cmd_dims(int argc, char **argv, struct kdl_cli *cli)
{
        static const struct option longopts[] = {
                KDL_CLI_COMMON_LONGOPTS,
                {"layer", required_argument, NULL, OPT_LAYER},
                {"tolerance", required_argument, NULL, OPT_TOLERANCE},
                {"rank-rtol", required_argument, NULL, OPT_RANK_RTOL},
                {"lambda", required_argument, NULL, OPT_LAMBDA},
                {"curves", no_argument, NULL, OPT_CURVES},
                {"logit-spectrum", required_argument, NULL, OPT_LOGIT_SPECTRUM},
                {"exact-max", required_argument, NULL, OPT_EXACT_MAX},
                {"sketch-rank", required_argument, NULL, OPT_SKETCH_RANK},
                {"sketch-oversample", required_argument, NULL, OPT_SKETCH_OVERSAMPLE},
                {"seed", required_argument, NULL, OPT_SEED},
                {NULL, 0, NULL, 0},
        };
        struct kdl_run_dims_opts o;
        struct kdl_cli_common c;
        int st;

        kdl_run_dims_opts_init(&o);
        kdl_cli_common_init(cli, &c, &o.common);
        o.spectrum = false; /* set by --curves */
        st = kdl_cli_parse(cli, argc, argv, KDL_CLI_COMMON_SHORTOPTS, longopts, &c, option, &o);
        if (st != KDL_CLI_PARSED)
                return st;
        st = kdl_cli_positional(cli, argc - optind);
        if (st)
                return st;
        if (!c.teacher && c.nstudents == 0)
                return kdl_cli_usage(cli, "expected a teacher (-t) and/or students (-s)");
        if (c.run.ntau != 1)
                return kdl_cli_usage(cli, "--temperature: dims takes one temperature");
        st = kdl_cli_reject(cli, &c, KDL_CLI_NO_PER_SAMPLE);
        if (st)
                return st;
        if (o.spectrum && c.format != KDL_FORMAT_TABLE)
                return kdl_cli_usage(cli, "--curves: only the table format leaves the spectrum "
                                          "out; the others always have it");
        o.common = c.run;
        /* Every eigenvalue of every layer buries the summary on a terminal. */
        o.spectrum = o.spectrum || c.format != KDL_FORMAT_TABLE;
        return kdl_cli_analyse(cli, c.teacher, c.students, c.nstudents, "dims", c.plan ? plan : run,
                               &o, &c);
}
