/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/cli/cli.h"
#include "analysis/inputs.h"
#include "analysis/kl.h"
#include "metrics/base/banned.h"

enum { OPT_SPEARMAN = KDL_OPT_FIRST_FREE_, OPT_SEED };

int cmd_kl(int argc, char **argv, struct kdl_cli *cli)
{
        static const struct option longopts[] = {
                KDL_CLI_COMMON_LONGOPTS,
                {"spearman-samples", required_argument, NULL, OPT_SPEARMAN},
                {"seed", required_argument, NULL, OPT_SEED},
                {NULL, 0, NULL, 0},
        };
        struct kdl_cli_common co;
        struct kdl_run_kl_opts o;
        size_t u;
        kdl_inputs *in = NULL;
        kdl_doc *doc = NULL;
        int c, err, status;

        kdl_run_kl_opts_init(&o);
        kdl_cli_common_init(cli, &co, &o.common);
        while ((c = getopt_long(argc, argv, KDL_CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
                status = kdl_cli_common_option(cli, &co, c, optarg, argv);
                if (status == KDL_CLI_OPT_TAKEN)
                        continue;
                if (status != KDL_CLI_OPT_NOT_MINE)
                        return status;
                status = 0;
                switch (c) {
                case OPT_SPEARMAN:
                        status = kdl_cli_parse_count(cli, "--spearman-samples", optarg, &u);
                        if (!status && u < 2)
                                status = kdl_cli_usage(cli,
                                                       "--spearman-samples: expected at least 2, "
                                                       "found '%s'",
                                                       optarg);
                        o.reservoir = u;
                        break;
                case OPT_SEED:
                        status = kdl_cli_parse_count(cli, "--seed", optarg, &u);
                        o.seed = u;
                        break;
                default:
                        status = kdl_cli_usage(cli, "unknown option '%s'", argv[optind - 1]);
                        break;
                }
                if (status)
                        return status;
        }
        status = kdl_cli_positional(cli, argc - optind);
        if (status)
                return status;
        if (!co.teacher || co.nstudents == 0)
                return kdl_cli_usage(cli, "expected a teacher (-t) and at least one student (-s)");

        o.common = co.run;

        err = kdl_inputs_open(co.teacher, co.students, co.nstudents, &in);
        err = err ?: kdl_doc_new("kl", &doc);
        err = err ?: kdl_run_kl(in, &o, doc);
        status = err < 0 ? kdl_cli_fail(cli, err) : kdl_cli_write_doc(cli, doc, co.format);
        kdl_doc_free(doc);
        kdl_inputs_free(in);
        return status;
}
