/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <stdint.h>
#include <string.h>

#include "analysis/cli/cli.h"
#include "analysis/inputs.h"
#include "analysis/layers.h"
#include "analysis/report.h"
#include "metrics/base/banned.h"

enum {
        OPT_SUBSAMPLE = KDL_OPT_FIRST_FREE_,
        OPT_PER_CLASS,
        OPT_VARIANT,
        OPT_SEED,
        OPT_CLASSES,
        OPT_MIN_PER_CLASS,
        OPT_CLASS_RULE,
        OPT_SEQUENCES,
};

/* What layers is asked: the options, and whether -k chose k. */
struct layers_args {
        struct kdl_run_layers_opts o;
        bool k_given;
};

/* @arg as a whole number >= 2 into *@ret, or the word @w0 (*@ret = @v0) or
 * @w1 (*@ret = @v1; NULL: no second word); @expected names them all. */
static int count_or_word(struct kdl_cli *cli, const char *what, const char *arg,
                         const char *expected, const char *w0, size_t v0, const char *w1, size_t v1,
                         size_t *ret)
{
        if (strcmp(arg, w0) == 0 || (w1 && strcmp(arg, w1) == 0)) {
                *ret = strcmp(arg, w0) == 0 ? v0 : v1;
                return 0;
        }
        if (*arg < '0' || *arg > '9')
                return kdl_cli_usage(cli, "%s: expected %s (2 or more), found '%s'", what, expected,
                                     arg);
        return kdl_cli_parse_size(cli, what, arg, 2, 1000000000, ret);
}

static int option(struct kdl_cli *cli, int opt, const char *arg, void *ctx)
{
        struct layers_args *a = ctx;
        struct kdl_run_layers_opts *o = &a->o;

        switch (opt) {
        case 'k':
                a->k_given = true;
                return kdl_cli_parse_size(cli, "-k", arg, 1, 100000, &o->k);
        case OPT_SUBSAMPLE:
                return kdl_cli_parse_size(cli, "--subsample", arg, 4, 46340, &o->subsample);
        case OPT_SEQUENCES:
                return kdl_cli_parse_sequences(cli, arg, &o->sequences, &o->per_sequence);
        case OPT_PER_CLASS:
                return kdl_cli_parse_size(cli, "--per-class", arg, 2, 1000000, &o->per_class);
        case OPT_VARIANT:
                if (kdl_quality_variant_parse(arg, &o->variant) < 0)
                        return kdl_cli_usage(cli, "--variant: %s", kdl_errmsg());
                return 0;
        case OPT_SEED:
                return kdl_cli_parse_uint(cli, "--seed", arg, 0, UINT64_MAX, &o->seed);
        case OPT_CLASSES:
                return count_or_word(cli, "--classes", arg, "auto, all or a number of classes",
                                     "auto", KDL_LAYERS_CLASSES_AUTO, "all", KDL_LAYERS_CLASSES_ALL,
                                     &o->classes);
        case OPT_MIN_PER_CLASS:
                return count_or_word(cli, "--min-per-class", arg, "auto or a number of samples",
                                     "auto", 0, NULL, 0, &o->min_per_class);
        case OPT_CLASS_RULE:
                if (kdl_sample_class_rule_parse(arg, &o->class_rule) < 0)
                        return kdl_cli_usage(cli, "--class-rule: %s", kdl_errmsg());
                return 0;
        default:
                return KDL_CLI_OPT_NOT_MINE;
        }
}

/* Without -k, the k the report recommends too (kdl_layers_default_k()). */
static int run(kdl_inputs *in, const void *args, kdl_doc *doc)
{
        const struct layers_args *a = args;
        struct kdl_run_layers_opts o = a->o;

        if (!a->k_given)
                o.k = kdl_layers_default_k(in->teacher, o.common.checkpoint);
        return kdl_run_layers(in, &o, doc);
}

static int plan(kdl_inputs *in, const void *args, kdl_doc *doc)
{
        const struct layers_args *a = args;

        return kdl_run_layers_plan(in, &a->o, doc);
}

int cmd_layers(int argc, char **argv, struct kdl_cli *cli)
{
        static const struct option longopts[] = {
                KDL_CLI_COMMON_LONGOPTS,
                {"top", required_argument, NULL, 'k'},
                {"subsample", required_argument, NULL, OPT_SUBSAMPLE},
                {"per-class", required_argument, NULL, OPT_PER_CLASS},
                {"sequences", required_argument, NULL, OPT_SEQUENCES},
                {"variant", required_argument, NULL, OPT_VARIANT},
                {"seed", required_argument, NULL, OPT_SEED},
                {"classes", required_argument, NULL, OPT_CLASSES},
                {"min-per-class", required_argument, NULL, OPT_MIN_PER_CLASS},
                {"class-rule", required_argument, NULL, OPT_CLASS_RULE},
                {NULL, 0, NULL, 0},
        };
        struct kdl_cli_common c;
        struct layers_args a = {0};
        int st;

        kdl_run_layers_opts_init(&a.o);
        kdl_cli_common_init(cli, &c, &a.o.common);
        st = kdl_cli_parse(cli, argc, argv, KDL_CLI_COMMON_SHORTOPTS "k:", longopts, &c, option,
                           &a);
        if (st != KDL_CLI_PARSED)
                return st;
        st = kdl_cli_positional(cli, argc - optind);
        st = st
                     ?: kdl_cli_reject(cli, &c,
                                       KDL_CLI_NO_TEMPERATURE | KDL_CLI_NO_TEACHER_CHECKPOINT |
                                               KDL_CLI_NO_BLOCK_ROWS);
        if (st)
                return st;
        if (!c.teacher)
                return kdl_cli_usage(cli, "a teacher dump is required (-t T.h5)");
        if (c.nstudents > 1)
                return kdl_cli_usage(cli, "expected at most one student (-s S.h5)");
        if (c.run.per_sample)
                return kdl_cli_usage(cli, "--per-sample is not available for layers");
        a.o.common = c.run;
        return kdl_cli_analyse(cli, c.teacher, c.students, c.nstudents, "layers",
                               c.plan ? plan : run, &a, &c);
}
