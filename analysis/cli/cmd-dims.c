/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/cli/cli.h"
#include "analysis/dims.h"
#include "analysis/inputs.h"
#include "metrics/base/banned.h"

enum {
        OPT_LAYER = KDL_OPT_FIRST_FREE_,
        OPT_TOLERANCE,
        OPT_RANK_RTOL,
        OPT_LAMBDA,
        OPT_CURVES,
};

/* A number in [lo, hi] from @arg, or a usage error naming @what. */
int cmd_dims(int argc, char **argv, struct kdl_cli *cli)
{
        static const struct option longopts[] = {
                KDL_CLI_COMMON_LONGOPTS,
                {"layer", required_argument, NULL, OPT_LAYER},
                {"tolerance", required_argument, NULL, OPT_TOLERANCE},
                {"rank-rtol", required_argument, NULL, OPT_RANK_RTOL},
                {"lambda", required_argument, NULL, OPT_LAMBDA},
                {"curves", no_argument, NULL, OPT_CURVES},
                {NULL, 0, NULL, 0},
        };
        struct kdl_run_dims_opts o;
        struct kdl_cli_common co;
        kdl_inputs *in = NULL;
        kdl_doc *doc = NULL;
        bool curves = false;
        int c, r, err, status;

        kdl_run_dims_opts_init(&o);
        kdl_cli_common_init(cli, &co, &o.common);
        while ((c = getopt_long(argc, argv, KDL_CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
                r = kdl_cli_common_option(cli, &co, c, optarg, argv);
                if (r == KDL_CLI_OPT_TAKEN)
                        continue;
                if (r != KDL_CLI_OPT_NOT_MINE)
                        return r;
                switch (c) {
                case OPT_LAYER:
                        o.layer = optarg;
                        break;
                case OPT_TOLERANCE:
                        r = kdl_cli_parse_real(cli, "--tolerance", optarg, 0.0, 1.0, &o.tolerance);
                        break;
                case OPT_RANK_RTOL:
                        r = kdl_cli_parse_real(cli, "--rank-rtol", optarg, 0.0, 0.5, &o.rank_rtol);
                        break;
                case OPT_LAMBDA:
                        if (strcmp(optarg, "gcv") == 0)
                                o.ridge_lambda = -1.0;
                        else
                                r = kdl_cli_parse_real(cli, "--lambda", optarg, 0.0, DBL_MAX,
                                                       &o.ridge_lambda);
                        break;
                case OPT_CURVES:
                        curves = true;
                        break;
                default:
                        return kdl_cli_usage(cli, "unknown option '%s'", argv[optind - 1]);
                }
                if (r > 0)
                        return r;
        }
        status = kdl_cli_positional(cli, argc - optind);
        if (status)
                return status;
        if (!co.teacher && co.nstudents == 0)
                return kdl_cli_usage(cli, "expected a teacher (-t) and/or students (-s)");
        if (co.run.ntau != 1)
                return kdl_cli_usage(cli, "--temperature: dims takes one temperature");
        status = kdl_cli_reject(cli, &co, KDL_CLI_NO_PER_SAMPLE);
        if (status)
                return status;
        o.common = co.run;
        /* Every eigenvalue of every layer buries the summary on a terminal. */
        o.spectrum = curves || co.format != KDL_FORMAT_TABLE;

        err = kdl_inputs_open(co.teacher, co.students, co.nstudents, &in);
        err = err ?: kdl_doc_new("dims", &doc);
        err = err ?: kdl_run_dims(in, &o, doc);
        if (!err && !o.spectrum)
                err = kdl_doc_add_note(doc, "the spectrum table (every eigenvalue) is left out "
                                            "of the terminal table: --curves adds it");
        if (err < 0) {
                status = kdl_cli_fail(cli, err);
                goto out;
        }
        status = kdl_cli_write_doc(cli, doc, co.format);
out:
        kdl_doc_free(doc);
        kdl_inputs_free(in);
        return status;
}
