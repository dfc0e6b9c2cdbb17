/* SPDX-License-Identifier: MIT */
#include <float.h>
#include <getopt.h>
#include <stdint.h>

#include "analysis/cli/cli.h"
#include "analysis/cka.h"
#include "analysis/inputs.h"
#include "metrics/base/banned.h"

enum {
        OPT_KERNEL = KDL_OPT_FIRST_FREE_,
        OPT_ESTIMATOR,
        OPT_BOOTSTRAP,
        OPT_INTERVAL,
        OPT_SEED,
        OPT_SUBSAMPLE,
        OPT_BATCH,
        OPT_THETA,
        OPT_PRECISION,
        OPT_WIDE,
        OPT_WIDE_MAX,
        OPT_WIDE_RANK,
        OPT_MEASURE,
        OPT_SVCCA_KEEP,
        OPT_SEQUENCES,
};

/* What cka is asked: the options, and those that only some kernels and estimators use. */
struct cka_args {
        struct kdl_run_cka_opts o;
        bool theta_given, batch_given, rank_given, keep_given;
};

static int option(struct kdl_cli *cli, int opt, const char *arg, void *ctx)
{
        struct cka_args *a = ctx;
        struct kdl_run_cka_opts *o = &a->o;

        a->theta_given = a->theta_given || opt == OPT_THETA;
        a->batch_given = a->batch_given || opt == OPT_BATCH;
        a->rank_given = a->rank_given || opt == OPT_WIDE_RANK;
        a->keep_given = a->keep_given || opt == OPT_SVCCA_KEEP;
        switch (opt) {
        case OPT_KERNEL:
                if (kdl_run_cka_kernel_parse(arg, &o->kernel) < 0)
                        return kdl_cli_usage(cli, "%s", kdl_errmsg());
                return 0;
        case OPT_ESTIMATOR:
                if (kdl_run_cka_estimator_parse(arg, &o->estimator) < 0)
                        return kdl_cli_usage(cli, "%s", kdl_errmsg());
                return 0;
        case OPT_BOOTSTRAP:
                return kdl_cli_parse_size(cli, "--bootstrap", arg, 0, 100000, &o->bootstrap);
        case OPT_INTERVAL:
                if (kdl_cka_interval_parse(arg, &o->interval) < 0)
                        return kdl_cli_usage(cli, "%s", kdl_errmsg());
                return 0;
        case OPT_SEED:
                return kdl_cli_parse_uint(cli, "--seed", arg, 0, UINT64_MAX, &o->seed);
        case OPT_SUBSAMPLE:
                return kdl_cli_parse_size(cli, "--subsample", arg, 4, 46340, &o->subsample);
        case OPT_SEQUENCES:
                return kdl_cli_parse_sequences(cli, arg, &o->sequences, &o->per_sequence);
        case OPT_BATCH:
                return kdl_cli_parse_size(cli, "--batch", arg, 4, 46340, &o->batch);
        case OPT_THETA:
                return kdl_cli_parse_real(cli, "--theta", arg, DBL_MIN, 1e300, &o->theta);
        case OPT_PRECISION:
                if (kdl_cka_precision_parse(arg, &o->precision) < 0)
                        return kdl_cli_usage(cli, "%s", kdl_errmsg());
                return 0;
        case OPT_WIDE:
                if (kdl_run_cka_wide_parse(arg, &o->wide) < 0)
                        return kdl_cli_usage(cli, "%s", kdl_errmsg());
                return 0;
        case OPT_WIDE_MAX:
                return kdl_cli_parse_size(cli, "--wide-max", arg, 0, SIZE_MAX, &o->wide_max);
        case OPT_WIDE_RANK:
                return kdl_cli_parse_size(cli, "--wide-rank", arg, 3, 46340, &o->wide_rank);
        case OPT_MEASURE:
                if (kdl_run_cka_measures_parse(arg, &o->measures) < 0)
                        return kdl_cli_usage(cli, "%s", kdl_errmsg());
                return 0;
        case OPT_SVCCA_KEEP:
                return kdl_cli_parse_real(cli, "--svcca-keep", arg, DBL_MIN, 1.0, &o->svcca_keep);
        default:
                return KDL_CLI_OPT_NOT_MINE;
        }
}

static int run(kdl_inputs *in, const void *o, kdl_doc *doc)
{
        return kdl_run_cka(in, o, doc);
}

static int plan(kdl_inputs *in, const void *o, kdl_doc *doc)
{
        return kdl_run_cka_plan(in, o, doc);
}

int cmd_cka(int argc, char **argv, struct kdl_cli *cli)
{
        static const struct option longopts[] = {
                KDL_CLI_COMMON_LONGOPTS,
                {"kernel", required_argument, NULL, OPT_KERNEL},
                {"estimator", required_argument, NULL, OPT_ESTIMATOR},
                {"bootstrap", required_argument, NULL, OPT_BOOTSTRAP},
                {"interval", required_argument, NULL, OPT_INTERVAL},
                {"seed", required_argument, NULL, OPT_SEED},
                {"subsample", required_argument, NULL, OPT_SUBSAMPLE},
                {"sequences", required_argument, NULL, OPT_SEQUENCES},
                {"batch", required_argument, NULL, OPT_BATCH},
                {"theta", required_argument, NULL, OPT_THETA},
                {"precision", required_argument, NULL, OPT_PRECISION},
                {"wide", required_argument, NULL, OPT_WIDE},
                {"wide-max", required_argument, NULL, OPT_WIDE_MAX},
                {"wide-rank", required_argument, NULL, OPT_WIDE_RANK},
                {"measure", required_argument, NULL, OPT_MEASURE},
                {"svcca-keep", required_argument, NULL, OPT_SVCCA_KEEP},
                {NULL, 0, NULL, 0},
        };
        struct kdl_cli_common c;
        struct cka_args a = {0};
        struct kdl_run_cka_opts *o = &a.o;
        int st, npos;

        kdl_run_cka_opts_init(o);
        kdl_cli_common_init(cli, &c, &o->common);
        st = kdl_cli_parse(cli, argc, argv, KDL_CLI_COMMON_SHORTOPTS, longopts, &c, option, &a);
        if (st != KDL_CLI_PARSED)
                return st;
        if (c.teacher || c.nstudents || c.run.per_sample)
                return kdl_cli_usage(cli, "the dumps are arguments: kdlens cka A.h5 [B.h5]");
        npos = argc - optind;
        st = kdl_cli_positional(cli, npos);
        st = st
                     ?: kdl_cli_reject(cli, &c,
                                       KDL_CLI_NO_TEMPERATURE | KDL_CLI_NO_TEACHER_CHECKPOINT |
                                               KDL_CLI_NO_BLOCK_ROWS);
        if (st)
                return st;
        if (c.inputs.roles == KDL_ROLES_IGNORE)
                return kdl_cli_usage(cli, "--ignore-roles: cka takes A.h5 and B.h5 as they come, "
                                          "whatever their roles");
        c.inputs.roles = KDL_ROLES_NONE;
        if (a.theta_given && o->kernel != KDL_CKA_RBF)
                return kdl_cli_usage(cli, "--theta: the bandwidth of the RBF kernel needs "
                                          "--kernel rbf");
        if (a.batch_given && o->estimator != KDL_RUN_CKA_MINIBATCH)
                return kdl_cli_usage(cli, "--batch: the minibatch size needs --estimator "
                                          "minibatch");
        if (a.keep_given && !(o->measures & 1u << KDL_RUN_CKA_MEASURE_SVCCA))
                return kdl_cli_usage(cli, "--svcca-keep: the share of SVCCA needs --measure "
                                          "svcca (or all)");
        /* The default sketch is never wider than the wide layers. */
        if (!a.rank_given && o->wide_max && o->wide_max < o->wide_rank)
                o->wide_rank = o->wide_max < 3 ? 3 : o->wide_max;
        if (o->wide == KDL_RUN_CKA_WIDE_SKETCH && o->wide_max && o->wide_rank > o->wide_max)
                return kdl_cli_usage(cli,
                                     "--wide-rank: a sketch of %zu columns is not narrower "
                                     "than --wide-max %zu",
                                     o->wide_rank, o->wide_max);
        o->common = c.run;
        return kdl_cli_analyse(cli, argv[optind], (const char *const *) argv + optind + 1,
                               (size_t) (npos - 1), "cka", c.plan ? plan : run, o, &c);
}
