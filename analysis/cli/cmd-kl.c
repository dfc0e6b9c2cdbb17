/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <string.h>

#include "analysis/cli/cli.h"
#include "metrics/base/error.h"
#include "analysis/inputs.h"
#include "analysis/kl.h"
#include "analysis/kl-topk.h"
#include "metrics/base/banned.h"

enum { OPT_SPEARMAN = KDL_OPT_FIRST_FREE_, OPT_SEED, OPT_TOPK };

/* The kl options and --topk's list (nk = 0: not asked). */
struct kl_cli_opts {
        struct kdl_run_kl_opts o;
        size_t nk;
        size_t k[KDL_RUN_MAX_TOPK];
};

static int option(struct kdl_cli *cli, int opt, const char *arg, void *ctx)
{
        struct kl_cli_opts *ko = ctx;
        struct kdl_run_kl_opts *o = &ko->o;
        size_t u;
        int st;

        switch (opt) {
        case OPT_TOPK:
                return kdl_cli_parse_topk(cli, arg, ko->k, &ko->nk);
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
        const struct kl_cli_opts *ko = o;

        if (kdl_kl_teacher_sparse(in, &ko->o)) {
                /* Both need the teacher's dense logits. */
                if (ko->nk || ko->o.common.per_sample)
                        return kdl_error(-KDL_EUSAGE,
                                         "%s: needs the teacher's dense logits; '%s' holds only "
                                         "sparse ones (logits_topk)",
                                         ko->nk ? "--topk" : "--per-sample",
                                         kdl_h5_dump(in->teacher)->path);
                return kdl_run_kl_sparse(in, &ko->o, doc);
        }
        if (ko->nk)
                return kdl_run_kl_topk(in, &ko->o, ko->k, ko->nk, doc);
        return kdl_run_kl(in, &ko->o, doc);
}

static int plan(kdl_inputs *in, const void *o, kdl_doc *doc)
{
        const struct kl_cli_opts *ko = o;

        if (ko->nk)
                return kdl_run_kl_topk_plan(in, &ko->o, ko->k, ko->nk, doc);
        return kdl_run_kl_plan(in, &ko->o, doc);
}

int cmd_kl(int argc, char **argv, struct kdl_cli *cli)
{
        static const struct option longopts[] = {
                KDL_CLI_COMMON_LONGOPTS,
                {"spearman-samples", required_argument, NULL, OPT_SPEARMAN},
                {"seed", required_argument, NULL, OPT_SEED},
                {"topk", required_argument, NULL, OPT_TOPK},
                {NULL, 0, NULL, 0},
        };
        struct kdl_cli_common c;
        struct kl_cli_opts o = {.nk = 0};
        int st;

        kdl_run_kl_opts_init(&o.o);
        kdl_cli_common_init(cli, &c, &o.o.common);
        st = kdl_cli_parse(cli, argc, argv, KDL_CLI_COMMON_SHORTOPTS, longopts, &c, option, &o);
        if (st != KDL_CLI_PARSED)
                return st;
        st = kdl_cli_positional(cli, argc - optind);
        if (st)
                return st;
        if (!c.teacher || c.nstudents == 0)
                return kdl_cli_usage(cli, "expected a teacher (-t) and at least one student (-s)");
        o.o.common = c.run;
        return kdl_cli_analyse(cli, c.teacher, c.students, c.nstudents, "kl", c.plan ? plan : run,
                               &o, &c);
}
