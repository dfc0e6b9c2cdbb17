/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/cli/cli.h"
#include "analysis/inputs.h"
#include "analysis/split.h"
#include "metrics/base/banned.h"

int cmd_split(int argc, char **argv, struct kdl_cli *cli)
{
        enum {
                OPT_LAMBDA = KDL_OPT_FIRST_FREE_,
                OPT_OMEGA_MAX,
                OPT_W_EPS,
                OPT_BINS,
        };
        static const struct option longopts[] = {
                KDL_CLI_COMMON_LONGOPTS,
                {"lambda", required_argument, NULL, OPT_LAMBDA},
                {"omega-max", required_argument, NULL, OPT_OMEGA_MAX},
                {"w-eps", required_argument, NULL, OPT_W_EPS},
                {"bins", required_argument, NULL, OPT_BINS},
                {NULL, 0, NULL, 0},
        };
        struct kdl_cli_common co;
        struct kdl_run_split_opts o;
        kdl_inputs *in = NULL;
        kdl_doc *doc = NULL;
        int c, r, err;

        kdl_run_split_opts_init(&o);
        kdl_cli_common_init(cli, &co, &o.common);
        while ((c = getopt_long(argc, argv, KDL_CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
                r = kdl_cli_common_option(cli, &co, c, optarg, argv);
                if (r == KDL_CLI_OPT_TAKEN)
                        continue;
                if (r != KDL_CLI_OPT_NOT_MINE)
                        return r;
                switch (c) {
                case OPT_LAMBDA:
                        r = kdl_cli_parse_real(cli, "--lambda", optarg, DBL_MIN, 1.0,
                                               &o.metric.lambda);
                        break;
                case OPT_OMEGA_MAX:
                        r = kdl_cli_parse_real(cli, "--omega-max", optarg, DBL_MIN, DBL_MAX,
                                               &o.metric.omega_max);
                        break;
                case OPT_W_EPS:
                        r = kdl_cli_parse_real(cli, "--w-eps", optarg, DBL_MIN, DBL_MAX,
                                               &o.metric.w_eps);
                        break;
                case OPT_BINS:
                        r = kdl_cli_parse_count(cli, "--bins", optarg, &o.hist_bins);
                        if (!r && o.metric.nbins % o.hist_bins != 0)
                                r = kdl_cli_usage(cli,
                                                  "--bins: expected a divisor of %zu, found "
                                                  "'%s'",
                                                  o.metric.nbins, optarg);
                        break;
                default:
                        r = kdl_cli_usage(cli, "unknown option '%s'", argv[optind - 1]);
                        break;
                }
                if (r)
                        return r;
        }
        r = kdl_cli_positional(cli, argc - optind);
        if (r)
                return r;
        if (!co.teacher)
                return kdl_cli_usage(cli, "a teacher dump is required (-t FILE)");
        if (co.nstudents == 0)
                return kdl_cli_usage(cli, "a student dump is required (-s FILE)");

        o.common = co.run;
        o.long_tables = co.format == KDL_FORMAT_JSON || co.format == KDL_FORMAT_CSV;

        err = kdl_inputs_open(co.teacher, co.students, co.nstudents, &in);
        err = err ?: kdl_doc_new("split", &doc);
        err = err ?: kdl_run_split(in, &o, doc);
        if (err < 0) {
                kdl_doc_free(doc);
                kdl_inputs_free(in);
                return kdl_cli_fail(cli, err);
        }
        r = kdl_cli_write_doc(cli, doc, co.format);
        kdl_doc_free(doc);
        kdl_inputs_free(in);
        return r;
}
