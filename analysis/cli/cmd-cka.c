/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <float.h>
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
        OPT_PRECISION,
};

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
                {"precision", required_argument, NULL, OPT_PRECISION},
                {NULL, 0, NULL, 0},
        };
        struct kdl_cli_common co;
        struct kdl_run_cka_opts o;
        kdl_inputs *in = NULL;
        kdl_doc *doc = NULL;
        uint64_t v;
        int c, err, st, npos;

        kdl_run_cka_opts_init(&o);
        kdl_cli_common_init(cli, &co, &o.common);
        while ((c = getopt_long(argc, argv, KDL_CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
                st = kdl_cli_common_option(cli, &co, c, optarg, argv);
                if (st == KDL_CLI_OPT_TAKEN)
                        continue;
                if (st != KDL_CLI_OPT_NOT_MINE)
                        return st;
                switch (c) {
                case OPT_KERNEL:
                        if (kdl_run_cka_kernel_parse(optarg, &o.kernel) < 0)
                                return kdl_cli_usage(cli, "%s", kdl_errmsg());
                        break;
                case OPT_ESTIMATOR:
                        if (kdl_run_cka_estimator_parse(optarg, &o.estimator) < 0)
                                return kdl_cli_usage(cli, "%s", kdl_errmsg());
                        break;
                case OPT_BOOTSTRAP:
                        if ((st = kdl_cli_parse_uint(cli, "--bootstrap", optarg, 0, 100000, &v)))
                                return st;
                        o.bootstrap = (size_t) v;
                        break;
                case OPT_SEED:
                        if ((st = kdl_cli_parse_uint(cli, "--seed", optarg, 0, UINT64_MAX, &v)))
                                return st;
                        o.seed = v;
                        break;
                case OPT_SUBSAMPLE:
                        if ((st = kdl_cli_parse_uint(cli, "--subsample", optarg, 4, 46340, &v)))
                                return st;
                        o.subsample = (size_t) v;
                        break;
                case OPT_BATCH:
                        if ((st = kdl_cli_parse_uint(cli, "--batch", optarg, 4, 46340, &v)))
                                return st;
                        o.batch = (size_t) v;
                        break;
                case OPT_THETA:
                        if ((st = kdl_cli_parse_real(cli, "--theta", optarg, DBL_MIN, 1e300,
                                                     &o.theta)))
                                return st;
                        break;
                case OPT_PRECISION:
                        if (kdl_cka_precision_parse(optarg, &o.precision) < 0)
                                return kdl_cli_usage(cli, "%s", kdl_errmsg());
                        break;
                default:
                        return kdl_cli_usage(cli, "unknown option '%s'", argv[optind - 1]);
                }
        }
        if (co.teacher || co.nstudents || co.run.per_sample)
                return kdl_cli_usage(cli, "the dumps are arguments: kdlens cka A.h5 [B.h5]");
        npos = argc - optind;
        st = kdl_cli_positional(cli, npos);
        st = st ?: kdl_cli_reject(cli, &co, KDL_CLI_NO_TEMPERATURE | KDL_CLI_NO_TEACHER_CHECKPOINT);
        if (st)
                return st;
        o.common = co.run;

        err = kdl_inputs_open(argv[optind], (const char *const *) argv + optind + 1,
                              (size_t) (npos - 1), &in);
        err = err ?: kdl_doc_new("cka", &doc);
        err = err ?: kdl_run_cka(in, &o, doc);
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
