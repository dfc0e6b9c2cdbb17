/* SPDX-License-Identifier: MIT */
#include <getopt.h>

#include "analysis/cli/cli.h"
#include "analysis/inputs.h"
#include "analysis/kl.h"
#include "metrics/base/banned.h"

enum { OPT_SPEARMAN = KDL_OPT_FIRST_FREE_, OPT_SEED };

static int option(struct kdl_cli *cli, int opt, const char *arg, void *ctx)
{
        struct kdl_run_kl_opts *o = ctx;
        size_t u;
        int st;

        switch (opt) {
        case OPT_SPEARMAN:
                st = kdl_cli_parse_count(cli, "--spearman-samples", arg, &u);
                if (!st && u < 2)
                        st = kdl_cli_usage(
                                cli, "--spearman-samples: expected at least 2, found '%s'", arg);
                if (!st)
                        o->reservoir = u;
                return st;
        case OPT_SEED:
                st = kdl_cli_parse_count(cli, "--seed", arg, &u);
                if (!st)
                        o->seed = u;
                return st;
        default:
                return KDL_CLI_OPT_NOT_MINE;
        }
}

static int run(kdl_inputs *in, const void *o, kdl_doc *doc)
{
        return kdl_run_kl(in, o, doc);
}

static int plan(kdl_inputs *in, const void *o, kdl_doc *doc)
{
        return kdl_run_kl_plan(in, o, doc);
}

int cmd_kl(int argc, char **argv, struct kdl_cli *cli)
{
        static const struct option longopts[] = {
                KDL_CLI_COMMON_LONGOPTS,
                {"spearman-samples", required_argument, NULL, OPT_SPEARMAN},
                {"seed", required_argument, NULL, OPT_SEED},
                {NULL, 0, NULL, 0},
        };
        struct kdl_cli_common c;
        struct kdl_run_kl_opts o;
        int st;

        kdl_run_kl_opts_init(&o);
        kdl_cli_common_init(cli, &c, &o.common);
        st = kdl_cli_parse(cli, argc, argv, KDL_CLI_COMMON_SHORTOPTS, longopts, &c, option, &o);
        if (st != KDL_CLI_PARSED)
                return st;
        st = kdl_cli_positional(cli, argc - optind);
        if (st)
                return st;
        if (!c.teacher || c.nstudents == 0)
                return kdl_cli_usage(cli, "expected a teacher (-t) and at least one student (-s)");
        o.common = c.run;
        return kdl_cli_analyse(cli, c.teacher, c.students, c.nstudents, "kl", c.plan ? plan : run,
                               &o, &c);
}
