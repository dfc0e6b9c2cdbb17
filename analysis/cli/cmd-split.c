/* SPDX-License-Identifier: MIT */
#include <float.h>
#include <getopt.h>
#include <stdint.h>

#include "analysis/cli/cli.h"
#include "analysis/inputs.h"
#include "analysis/split.h"
#include "metrics/base/banned.h"

enum {
        OPT_LAMBDA = KDL_OPT_FIRST_FREE_,
        OPT_OMEGA_MAX,
        OPT_W_EPS,
        OPT_BINS,
        OPT_DOMAIN,
        OPT_DOMAIN_MAX_C,
        OPT_TOP_PAIRS,
};

/* What split is asked: the options, and whether --bins was (its histograms are in json and
 * csv only). */
struct split_args {
        struct kdl_run_split_opts o;
        bool bins_given;
};

static int option(struct kdl_cli *cli, int opt, const char *arg, void *ctx)
{
        struct split_args *a = ctx;
        struct kdl_run_split_opts *o = &a->o;
        int st;

        switch (opt) {
        case OPT_LAMBDA:
                return kdl_cli_parse_real(cli, "--lambda", arg, DBL_MIN, 1.0, &o->metric.lambda);
        case OPT_OMEGA_MAX:
                return kdl_cli_parse_real(cli, "--omega-max", arg, DBL_MIN, DBL_MAX,
                                          &o->metric.omega_max);
        case OPT_W_EPS:
                return kdl_cli_parse_real(cli, "--w-eps", arg, DBL_MIN, DBL_MAX, &o->metric.w_eps);
        case OPT_BINS:
                a->bins_given = true;
                st = kdl_cli_parse_count(cli, "--bins", arg, &o->hist_bins);
                if (!st && o->metric.nbins % o->hist_bins != 0)
                        st = kdl_cli_usage(cli, "--bins: expected a divisor of %zu, found '%s'",
                                           o->metric.nbins, arg);
                return st;
        case OPT_DOMAIN:
                if (kdl_split_domain_parse(arg, &o->metric.domain) < 0)
                        return kdl_cli_usage(cli, "--domain: %s", kdl_errmsg());
                return 0;
        case OPT_DOMAIN_MAX_C:
                return kdl_cli_parse_size(cli, "--domain-max-c", arg, 0, SIZE_MAX,
                                          &o->metric.domain_max_c);
        case OPT_TOP_PAIRS:
                return kdl_cli_parse_size(cli, "--top-pairs", arg, 0, KDL_SPLIT_MAX_TOP_PAIRS,
                                          &o->metric.top_pairs);
        default:
                return KDL_CLI_OPT_NOT_MINE;
        }
}

static int run(kdl_inputs *in, const void *o, kdl_doc *doc)
{
        return kdl_run_split(in, o, doc);
}

static int plan(kdl_inputs *in, const void *o, kdl_doc *doc)
{
        return kdl_run_split_memory_plan(in, o, doc);
}

int cmd_split(int argc, char **argv, struct kdl_cli *cli)
{
        static const struct option longopts[] = {
                KDL_CLI_COMMON_LONGOPTS,
                {"lambda", required_argument, NULL, OPT_LAMBDA},
                {"omega-max", required_argument, NULL, OPT_OMEGA_MAX},
                {"w-eps", required_argument, NULL, OPT_W_EPS},
                {"bins", required_argument, NULL, OPT_BINS},
                {"domain", required_argument, NULL, OPT_DOMAIN},
                {"domain-max-c", required_argument, NULL, OPT_DOMAIN_MAX_C},
                {"top-pairs", required_argument, NULL, OPT_TOP_PAIRS},
                {NULL, 0, NULL, 0},
        };
        struct kdl_cli_common c;
        struct split_args a = {0};
        struct kdl_run_split_opts *o = &a.o;
        int st;

        kdl_run_split_opts_init(o);
        kdl_cli_common_init(cli, &c, &o->common);
        st = kdl_cli_parse(cli, argc, argv, KDL_CLI_COMMON_SHORTOPTS, longopts, &c, option, &a);
        if (st != KDL_CLI_PARSED)
                return st;
        st = kdl_cli_positional(cli, argc - optind);
        st = st ?: kdl_cli_reject(cli, &c, KDL_CLI_NO_SPATIAL);
        if (st)
                return st;
        if (!c.teacher)
                return kdl_cli_usage(cli, "a teacher dump is required (-t FILE)");
        if (c.nstudents == 0)
                return kdl_cli_usage(cli, "a student dump is required (-s FILE)");
        o->common = c.run;
        o->long_tables = c.format == KDL_FORMAT_JSON || c.format == KDL_FORMAT_CSV;
        if (a.bins_given && !o->long_tables)
                return kdl_cli_usage(cli, "--bins: the histograms are in the json and csv "
                                          "formats only");
        return kdl_cli_analyse(cli, c.teacher, c.students, c.nstudents, "split",
                               c.plan ? plan : run, o, &c);
}
