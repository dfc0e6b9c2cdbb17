/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analysis/cka.h"
#include "analysis/cli/cli.h"
#include "analysis/report.h"
#include "metrics/base/banned.h"

/* vasprintf() that returns NULL on failure (the CLI cannot use kdl__ internals). */
static char *format(const char *fmt, ...) KDL_PRINTF(1, 2);
static char *format(const char *fmt, ...)
{
        va_list ap;
        char *s;
        int n;

        va_start(ap, fmt);
        n = vasprintf(&s, fmt, ap);
        va_end(ap);
        return n < 0 ? NULL : s;
}

/* The command line as typed, for the report's provenance. */
static char *command_line(int argc, char **argv)
{
        char *s = strdup("kdlens"), *t;

        for (int i = 0; s && i < argc; i++) {
                bool quote = strpbrk(argv[i], " \t\"'$") != NULL;

                t = format("%s %s%s%s", s, quote ? "'" : "", argv[i], quote ? "'" : "");
                free(s);
                s = t;
        }
        return s;
}

/* A one-line bar on stderr, redrawn in place; only on a terminal. */
static void bar(void *ctx, size_t done, size_t total, const char *what)
{
        FILE *err = ctx;
        size_t width = 24, fill = total ? done * width / total : 0;

        fputs("\r[", err);
        for (size_t k = 0; k < width; k++)
                fputc(k < fill ? '#' : '.', err);
        fprintf(err, "] %zu/%zu %-48.48s", done, total, what);
        fflush(err);
}

static int run(struct kdl_cli *cli, struct kdl_run_report_opts *o, bool quiet)
{
        int err;

        if (!quiet && cli->verbosity >= 0 && isatty(fileno(cli->err))) {
                o->progress = bar;
                o->ctx = cli->err;
        }
        err = kdl_run_report(o);
        if (o->progress)
                fputs("\r\033[K", cli->err);
        if (err < 0)
                return kdl_cli_fail(cli, err);
        if (cli->verbosity >= 0 && !quiet)
                fprintf(cli->out, "kdlens %s: report written to %s/index.html\n", cli->verb,
                        o->out_dir);
        return KDL_EXIT_OK;
}

/* --plan: what the report would need, printed as the commands print. */
static int plan(struct kdl_cli *cli, const struct kdl_run_report_opts *o,
                const struct kdl_cli_common *c)
{
        kdl_doc *doc = NULL;
        int err, st;

        err = kdl_doc_new("report", &doc);
        err = err ?: kdl_run_report_plan(o, doc);
        st = err < 0 ? kdl_cli_fail(cli, err)
                     : kdl_cli_write_doc(cli, doc, c->format, c->table, NULL);
        kdl_doc_free(doc);
        return st;
}

enum {
        OPT_QUIET = KDL_OPT_FIRST_FREE_,
        OPT_GNUPLOT,
        OPT_FORCE,
        OPT_GROUP,
        OPT_MEASURE,
        OPT_KEEP,
        OPT_TOPK
};

/* What report and demo are asked besides the dumps. */
struct report_args {
        struct kdl_run_report_opts o;
        bool quiet;
        bool keep_given; /* --svcca-keep */
};

/* The options report and demo share. */
static int option(struct kdl_cli *cli, int opt, const char *arg, void *ctx)
{
        struct report_args *a = ctx;

        (void) cli;
        if (opt == 'o')
                a->o.out_dir = arg;
        else if (opt == OPT_QUIET)
                a->quiet = true;
        else if (opt == OPT_GNUPLOT)
                a->o.gnuplot = arg;
        else if (opt == OPT_FORCE)
                a->o.force = true;
        else
                return KDL_CLI_OPT_NOT_MINE;
        return 0;
}

/* report's own: -k besides what it shares with demo. */
static int report_option(struct kdl_cli *cli, int opt, const char *arg, void *ctx)
{
        struct report_args *a = ctx;

        if (opt == 'k')
                return kdl_cli_parse_size(cli, "-k", arg, 1, 100000, &a->o.k);
        if (opt == OPT_TOPK)
                return kdl_cli_parse_topk(cli, arg, a->o.topk, &a->o.ntopk);
        if (opt == OPT_GROUP) {
                if (a->o.ngroups == KDL_SUMMARY_MAX_GROUPS)
                        return kdl_cli_usage(cli, "--group: at most %d groups",
                                             KDL_SUMMARY_MAX_GROUPS);
                a->o.groups[a->o.ngroups++] = arg;
                return 0;
        }
        /* kdlens cka's --measure and --svcca-keep, parsed as cka parses them. */
        if (opt == OPT_MEASURE && kdl_run_cka_measures_parse(arg, &a->o.measures) < 0)
                return kdl_cli_usage(cli, "%s", kdl_errmsg());
        if (opt == OPT_MEASURE)
                return 0;
        if (opt == OPT_KEEP) {
                a->keep_given = true;
                return kdl_cli_parse_real(cli, "--svcca-keep", arg, DBL_MIN, 1.0, &a->o.svcca_keep);
        }
        return option(cli, opt, arg, ctx);
}

int cmd_report(int argc, char **argv, struct kdl_cli *cli)
{
        static const struct option longopts[] = {
                KDL_CLI_COMMON_LONGOPTS,
                {"top", required_argument, NULL, 'k'},
                {"force", no_argument, NULL, OPT_FORCE},
                {"quiet", no_argument, NULL, OPT_QUIET},
                {"gnuplot", required_argument, NULL, OPT_GNUPLOT},
                {"group", required_argument, NULL, OPT_GROUP},
                {"measure", required_argument, NULL, OPT_MEASURE},
                {"svcca-keep", required_argument, NULL, OPT_KEEP},
                {"topk", required_argument, NULL, OPT_TOPK},
                {NULL, 0, NULL, 0},
        };
        struct kdl_cli_common c;
        struct report_args a = {0};
        char *cmd;
        int r;

        kdl_run_report_opts_init(&a.o);
        kdl_cli_common_init(cli, &c, &a.o.common);
        r = kdl_cli_parse(cli, argc, argv, KDL_CLI_COMMON_SHORTOPTS "k:", longopts, &c,
                          report_option, &a);
        if (r != KDL_CLI_PARSED)
                return r;
        r = kdl_cli_positional(cli, argc - optind);
        /* The plan is printed in any format; the report writes them all. */
        r = r ?: kdl_cli_reject(cli, &c, KDL_CLI_NO_PER_SAMPLE | (c.plan ? 0 : KDL_CLI_NO_FORMAT));
        if (r)
                return r;
        if (a.keep_given && !(a.o.measures & 1u << KDL_RUN_CKA_MEASURE_SVCCA))
                return kdl_cli_usage(cli, "--svcca-keep: the share of SVCCA needs --measure "
                                          "svcca (or all)");
        if (c.table && !c.plan)
                return kdl_cli_usage(cli, "--table: report writes every table (--table chooses "
                                          "one of what --plan prints)");
        a.o.out_dir = c.output; /* -o, a common option */
        if (!c.teacher || c.nstudents == 0 || (!a.o.out_dir && !c.plan))
                return kdl_cli_usage(cli, "expected -t TEACHER.h5, at least one -s STUDENT.h5 "
                                          "and -o DIR");
        if (c.run.ntau != 1)
                return kdl_cli_usage(cli, "-T: expected one temperature for the report");
        a.o.common = c.run;
        a.o.teacher = c.teacher;
        a.o.students = c.students;
        a.o.nstudents = c.nstudents;
        a.o.inputs = c.inputs;
        if (kdl_summary_groups_check(a.o.groups, a.o.ngroups, c.students, c.nstudents) < 0)
                return kdl_cli_usage(cli, "%s", kdl_errmsg());
        if (c.plan)
                return plan(cli, &a.o, &c);
        cmd = command_line(argc, argv);
        if (!cmd)
                return kdl_cli_fail(cli, -ENOMEM);
        a.o.command = cmd;
        r = run(cli, &a.o, a.quiet);
        free(cmd);
        return r;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* teacher.h5 and the student*.h5 (sorted, at most KDL_CLI_MAX_STUDENTS) of the
 * bundled example in @dir; the caller frees *@ret_teacher and @students[0..*@ret_n). */
static int example_dumps(const char *dir, char **ret_teacher, char **students, size_t *ret_n)
{
        char *teacher = NULL;
        size_t ns = 0;
        struct dirent *e;
        DIR *d = opendir(dir);

        if (!d)
                return kdl_error(-errno, "cannot open the bundled example '%s': %s", dir,
                                 strerror(errno));
        while ((e = readdir(d)) && ns < KDL_CLI_MAX_STUDENTS) {
                size_t n = strlen(e->d_name);

                if (n < 4 || strcmp(e->d_name + n - 3, ".h5") != 0)
                        continue;
                if (strcmp(e->d_name, "teacher.h5") == 0)
                        teacher = format("%s/%s", dir, e->d_name);
                else if (strncmp(e->d_name, "student", 7) == 0)
                        students[ns++] = format("%s/%s", dir, e->d_name);
        }
        closedir(d);
        qsort(students, ns, sizeof(*students), cmp_str);
        *ret_teacher = teacher;
        *ret_n = ns;
        if (!teacher || ns == 0)
                return kdl_error(-KDL_EMISSING,
                                 "'%s': expected teacher.h5 and student*.h5, found %s", dir,
                                 teacher ? "no student" : "no teacher");
        return 0;
}

int cmd_demo(int argc, char **argv, struct kdl_cli *cli)
{
        static const struct option longopts[] = {
                {"output", required_argument, NULL, 'o'},
                {"force", no_argument, NULL, OPT_FORCE},
                {"quiet", no_argument, NULL, OPT_QUIET},
                {"gnuplot", required_argument, NULL, OPT_GNUPLOT},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        struct report_args a = {0};
        char *teacher = NULL, *students[KDL_CLI_MAX_STUDENTS], *cmd = NULL;
        size_t ns = 0;
        int c, r;

        kdl_run_report_opts_init(&a.o);
        a.o.out_dir = "kdlens-demo";
        /* The demo shows every section: the similarity measures too (report --measure all). */
        if (kdl_run_cka_measures_parse("all", &a.o.measures) < 0)
                return kdl_cli_fail(cli, -KDL_EUSAGE);

        while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
                if (c == 'h')
                        return kdl_cli_help(cli);
                if (c == '?' || c == ':' || option(cli, c, optarg, &a) == KDL_CLI_OPT_NOT_MINE)
                        return kdl_cli_bad_option(cli, c, argv, longopts);
        }
        r = kdl_cli_positional(cli, argc - optind);
        if (r)
                return r;
        r = example_dumps(kdl_report_example_dir(), &teacher, students, &ns);
        if (r < 0) {
                r = kdl_cli_fail(cli, r);
                goto out;
        }
        a.o.teacher = teacher;
        a.o.students = (const char *const *) students;
        a.o.nstudents = ns;
        cmd = command_line(argc, argv);
        a.o.command = cmd ? cmd : "kdlens demo";
        r = run(cli, &a.o, a.quiet);
out:
        free(cmd);
        free(teacher);
        for (size_t k = 0; k < ns; k++)
                free(students[k]);
        return r;
}
