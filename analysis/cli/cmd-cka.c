/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/cli/cli.h"
#include "analysis/cka.h"
#include "analysis/inputs.h"
#include "metrics/base/banned.h"

enum {
        OPT_KERNEL = KDL_OPT_FIRST_FREE_,
        OPT_ESTIMATOR,
        OPT_BOOTSTRAP,
        OPT_SEED,
        OPT_SUBSAMPLE,
        OPT_BATCH,
        OPT_THETA,
};

/* A whole number in [min, max] for option @name; -1 with the usage printed. */
static int parse_count(struct kdl_cli *cli, const char *name, const char *arg,
                       unsigned long long min, unsigned long long max, unsigned long long *ret)
{
        char *end;
        unsigned long long v;

        errno = 0;
        v = strtoull(arg, &end, 10);
        if (errno || end == arg || *end || arg[0] == '-' || v < min || v > max) {
                kdl_cli_usage(cli, "%s: expected a whole number from %llu to %llu, found '%s'",
                              name, min, max, arg);
                return -1;
        }
        *ret = v;
        return 0;
}

static int parse_real(struct kdl_cli *cli, const char *name, const char *arg, double *ret)
{
        char *end;
        double v = strtod(arg, &end);

        if (end == arg || *end || !(v >= 0.0) || v > 1e300) {
                kdl_cli_usage(cli, "%s: expected a non-negative number, found '%s'", name, arg);
                return -1;
        }
        *ret = v;
        return 0;
}

int cmd_cka(int argc, char **argv, struct kdl_cli *cli)
{
        static const struct option longopts[] = {
                KDL_CLI_COMMON_LONGOPTS,
                {"kernel", required_argument, NULL, OPT_KERNEL},
                {"estimator", required_argument, NULL, OPT_ESTIMATOR},
                {"bootstrap", required_argument, NULL, OPT_BOOTSTRAP},
                {"seed", required_argument, NULL, OPT_SEED},
                {"subsample", required_argument, NULL, OPT_SUBSAMPLE},
                {"batch", required_argument, NULL, OPT_BATCH},
                {"theta", required_argument, NULL, OPT_THETA},
                {NULL, 0, NULL, 0},
        };
        struct kdl_cli_common co;
        struct kdl_cka_run_opts o = {0};
        kdl_inputs *in = NULL;
        kdl_doc *doc = NULL;
        unsigned long long v;
        int c, err, st, npos;

        kdl_cli_common_init(cli, &co);
        while ((c = getopt_long(argc, argv, KDL_CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
                st = kdl_cli_common_option(cli, &co, c, optarg, argv);
                if (st == KDL_CLI_OPT_TAKEN)
                        continue;
                if (st != KDL_CLI_OPT_NOT_MINE)
                        return st;
                switch (c) {
                case OPT_KERNEL:
                        if (kdl_cka_kernel_parse(optarg, &o.kernel) < 0)
                                return kdl_cli_usage(cli, "%s", kdl_errmsg());
                        break;
                case OPT_ESTIMATOR:
                        if (kdl_cka_estimator_parse(optarg, &o.estimator) < 0)
                                return kdl_cli_usage(cli, "%s", kdl_errmsg());
                        break;
                case OPT_BOOTSTRAP:
                        if (parse_count(cli, "--bootstrap", optarg, 0, 100000, &v) < 0)
                                return KDL_EXIT_USAGE;
                        o.bootstrap = (size_t) v;
                        break;
                case OPT_SEED:
                        if (parse_count(cli, "--seed", optarg, 0, UINT64_MAX, &v) < 0)
                                return KDL_EXIT_USAGE;
                        o.seed = v;
                        break;
                case OPT_SUBSAMPLE:
                        if (parse_count(cli, "--subsample", optarg, 4, 46340, &v) < 0)
                                return KDL_EXIT_USAGE;
                        o.subsample = (size_t) v;
                        break;
                case OPT_BATCH:
                        if (parse_count(cli, "--batch", optarg, 4, 46340, &v) < 0)
                                return KDL_EXIT_USAGE;
                        o.batch = (size_t) v;
                        break;
                case OPT_THETA:
                        if (parse_real(cli, "--theta", optarg, &o.theta) < 0)
                                return KDL_EXIT_USAGE;
                        if (!(o.theta > 0.0))
                                return kdl_cli_usage(cli, "--theta: expected a positive number");
                        break;
                default:
                        return kdl_cli_usage(cli, "unknown option '%s'", argv[optind - 1]);
                }
        }
        if (co.teacher || co.nstudents || co.per_sample)
                return kdl_cli_usage(cli, "the dumps are arguments: kdlens cka A.h5 [B.h5]");
        npos = argc - optind;
        st = kdl_cli_positional(cli, npos);
        if (st)
                return st;
        o.checkpoint = co.checkpoint;
        o.spatial = co.spatial;
        o.skip_nonfinite = co.skip_nonfinite;

        err = kdl_inputs_open(argv[optind], (const char *const *) argv + optind + 1,
                              (size_t) (npos - 1), &in);
        err = err ?: kdl_doc_new("cka", &doc);
        err = err ?: kdl_cka_run(in, &o, doc);
        if (err < 0) {
                kdl_doc_free(doc);
                kdl_inputs_free(in);
                return kdl_cli_fail(cli, err);
        }
        st = kdl_cli_write_doc(cli, doc, co.format);
        kdl_doc_free(doc);
        kdl_inputs_free(in);
        return st;
}
