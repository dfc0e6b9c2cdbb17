/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/cli/cli.h"
#include "analysis/inputs.h"
#include "analysis/layers.h"
#include "metrics/base/banned.h"

enum {
        OPT_SUBSAMPLE = KDL_OPT_FIRST_FREE_,
        OPT_PER_CLASS,
        OPT_VARIANT,
        OPT_SEED,
};

int cmd_layers(int argc, char **argv, struct kdl_cli *cli)
{
        static const struct option longopts[] = {
                KDL_CLI_COMMON_LONGOPTS,
                {"top", required_argument, NULL, 'k'},
                {"subsample", required_argument, NULL, OPT_SUBSAMPLE},
                {"per-class", required_argument, NULL, OPT_PER_CLASS},
                {"variant", required_argument, NULL, OPT_VARIANT},
                {"seed", required_argument, NULL, OPT_SEED},
                {NULL, 0, NULL, 0},
        };
        struct kdl_cli_common co;
        struct kdl_run_layers_opts o;
        kdl_inputs *in = NULL;
        kdl_doc *doc = NULL;
        uint64_t v;
        int c, err, st;

        kdl_run_layers_opts_init(&o);
        kdl_cli_common_init(cli, &co, &o.common);
        while ((c = getopt_long(argc, argv, KDL_CLI_COMMON_SHORTOPTS "k:", longopts, NULL)) != -1) {
                st = kdl_cli_common_option(cli, &co, c, optarg, argv);
                if (st == KDL_CLI_OPT_TAKEN)
                        continue;
                if (st != KDL_CLI_OPT_NOT_MINE)
                        return st;
                switch (c) {
                case 'k':
                        if ((st = kdl_cli_parse_uint(cli, "-k", optarg, 1, 100000, &v)))
                                return st;
                        o.k = (size_t) v;
                        break;
                case OPT_SUBSAMPLE:
                        if ((st = kdl_cli_parse_uint(cli, "--subsample", optarg, 4, 46340, &v)))
                                return st;
                        o.subsample = (size_t) v;
                        break;
                case OPT_PER_CLASS:
                        if ((st = kdl_cli_parse_uint(cli, "--per-class", optarg, 2, 1000000, &v)))
                                return st;
                        o.per_class = (size_t) v;
                        break;
                case OPT_VARIANT:
                        if (kdl_quality_variant_parse(optarg, &o.variant) < 0)
                                return kdl_cli_usage(cli, "--variant: %s", kdl_errmsg());
                        break;
                case OPT_SEED:
                        if ((st = kdl_cli_parse_uint(cli, "--seed", optarg, 0, UINT64_MAX, &v)))
                                return st;
                        o.seed = v;
                        break;
                default:
                        return kdl_cli_usage(cli, "unknown option '%s'", argv[optind - 1]);
                }
        }
        st = kdl_cli_positional(cli, argc - optind);
        st = st ?: kdl_cli_reject(cli, &co, KDL_CLI_NO_TEMPERATURE | KDL_CLI_NO_TEACHER_CHECKPOINT);
        if (st)
                return st;
        if (!co.teacher)
                return kdl_cli_usage(cli, "a teacher dump is required (-t T.h5)");
        if (co.nstudents > 1)
                return kdl_cli_usage(cli, "expected at most one student (-s S.h5)");
        if (co.run.per_sample)
                return kdl_cli_usage(cli, "--per-sample is not available for layers");
        o.common = co.run;

        err = kdl_inputs_open(co.teacher, co.students, co.nstudents, &in);
        err = err ?: kdl_doc_new("layers", &doc);
        err = err ?: kdl_run_layers(in, &o, doc);
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
