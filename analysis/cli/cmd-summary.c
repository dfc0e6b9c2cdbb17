/* SPDX-License-Identifier: MIT */
#include <getopt.h>

#include "analysis/cli/cli.h"
#include "analysis/inputs.h"
#include "analysis/summary.h"
#include "metrics/base/banned.h"

enum { OPT_BINS = KDL_OPT_FIRST_FREE_, OPT_GROUP };

static int option(struct kdl_cli *cli, int opt, const char *arg, void *ctx)
{
        struct kdl_run_summary_opts *o = ctx;

        switch (opt) {
        case OPT_BINS:
                return kdl_cli_parse_size(cli, "--bins", arg, 1, 1000000, &o->bins);
        case OPT_GROUP:
                if (o->ngroups == KDL_SUMMARY_MAX_GROUPS)
                        return kdl_cli_usage(cli, "--group: at most %d groups",
                                             KDL_SUMMARY_MAX_GROUPS);
                o->groups[o->ngroups++] = arg;
                return 0;
        default:
                return KDL_CLI_OPT_NOT_MINE;
        }
}

static int run(kdl_inputs *in, const void *o, kdl_doc *doc)
{
        return kdl_run_summary(in, o, doc);
}

static int plan(kdl_inputs *in, const void *o, kdl_doc *doc)
{
        return kdl_run_summary_plan(in, o, doc);
}

int cmd_summary(int argc, char **argv, struct kdl_cli *cli)
{
        static const struct option longopts[] = {
                KDL_CLI_COMMON_LONGOPTS,
                {"bins", required_argument, NULL, OPT_BINS},
                {"group", required_argument, NULL, OPT_GROUP},
                {NULL, 0, NULL, 0},
        };
        struct kdl_cli_common c;
        struct kdl_run_summary_opts o;
        int st;

        kdl_run_summary_opts_init(&o);
        kdl_cli_common_init(cli, &c, &o.common);
        st = kdl_cli_parse(cli, argc, argv, KDL_CLI_COMMON_SHORTOPTS, longopts, &c, option, &o);
        if (st != KDL_CLI_PARSED)
                return st;
        st = kdl_cli_positional(cli, argc - optind);
        st = st ?: kdl_cli_reject(cli, &c, KDL_CLI_NO_SPATIAL | KDL_CLI_NO_PER_SAMPLE);
        if (st)
                return st;
        if (!c.teacher || c.nstudents == 0)
                return kdl_cli_usage(cli, "expected a teacher (-t) and at least one student (-s)");
        if (c.run.ntau != 1)
                return kdl_cli_usage(cli, "-T: expected one temperature, found %zu", c.run.ntau);
        if (kdl_summary_groups_check(o.groups, o.ngroups, c.students, c.nstudents) < 0)
                return kdl_cli_usage(cli, "%s", kdl_errmsg());
        o.common = c.run;
        o.pm_text = c.format != KDL_FORMAT_JSON && c.format != KDL_FORMAT_CSV;
        return kdl_cli_analyse(cli, c.teacher, c.students, c.nstudents, "summary",
                               c.plan ? plan : run, &o, &c);
}
