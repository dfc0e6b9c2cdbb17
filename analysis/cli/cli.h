/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_CLI_CLI_H
#define KDL_ANALYSIS_CLI_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "analysis/inputs.h"
#include "loaders/h5.h"
#include "reports/table.h"

/*
 * The kdlens command line.  main() is one line: kdl_cli_run(); every verb
 * is a thin cmd_<verb>() that parses its options, calls one analysis/
 * function and prints.  Only this directory writes to stdout/stderr.
 */

struct kdl_cli {
        FILE *out;
        FILE *err;
        const char *verb; /* for messages: "kdlens <verb>: ..." */
        int verbosity;    /* -1 quiet, 0 normal, 1 verbose */
};

/* Exit statuses (STYLE.md 3.6). */
enum { KDL_EXIT_OK = 0, KDL_EXIT_FAILURE = 1, KDL_EXIT_USAGE = 2 };

/** kdl_cli_run() - run the command line @argv; returns the exit status. */
int kdl_cli_run(int argc, char **argv, FILE *out, FILE *err);

/**
 * kdl_cli_fail() - print the recorded message of @err as one line
 * "kdlens VERB: message" and return the exit status for it (2 for usage
 * errors, 1 otherwise).
 */
int kdl_cli_fail(struct kdl_cli *cli, int err);

/** kdl_cli_usage() - print "kdlens VERB: message" and the verb's usage line; returns 2. */
int kdl_cli_usage(struct kdl_cli *cli, const char *fmt, ...) KDL_PRINTF(2, 3);

/**
 * kdl_cli_help() - print the help text of the current verb to cli->out
 * (for -h); returns 0.
 */
int kdl_cli_help(struct kdl_cli *cli);

/**
 * kdl_cli_positional() - check the count of positional arguments against
 * the command table's limits; 0 or the usage exit status (message printed).
 */
int kdl_cli_positional(struct kdl_cli *cli, int n);

/**
 * kdl_cli_default_format() - "table" on a terminal, otherwise "table" too:
 * scripts ask for json explicitly.  Kept as a function so verbs agree.
 */
enum kdl_format kdl_cli_default_format(const struct kdl_cli *cli);

/**
 * kdl_cli_write_doc() - render @d in @format: to cli->out, every table or
 * only the one called @table (--table; NULL: every one), or with @dir (-o)
 * as one CSV file per table in @dir.  On failure prints the error (a
 * usage error for a @table that @d does not have, with the names it has).
 * Return: the exit status.
 */
int kdl_cli_write_doc(struct kdl_cli *cli, const kdl_doc *d, enum kdl_format format,
                      const char *table, const char *dir);

/**
 * kdl_cli_output_check() - settle the output options once parsed: -o @dir
 * writes CSV (*@format becomes csv; another -f, @format_given, is refused),
 * and CSV on standard output is one table, so -f csv without @table or
 * @dir is refused with the way out.
 * Return: 0; the usage exit status (message printed).
 */
int kdl_cli_output_check(struct kdl_cli *cli, enum kdl_format *format, bool format_given,
                         const char *table, const char *dir);

/**
 * kdl_cli_bad_option() - the usage error for the option that getopt_long()
 * just refused (@opt '?' or ':') in @argv: missing argument, an argument
 * given to an option that takes none, an ambiguous abbreviation (the
 * options it could be), or an unknown option with the options of @longopts
 * it most resembles ("did you mean").
 * Return: the usage exit status (message printed).
 */
int kdl_cli_bad_option(struct kdl_cli *cli, int opt, char **argv, const struct option *longopts);

/*
 * Options shared by the analysis verbs.  A verb lists KDL_CLI_COMMON_LONGOPTS
 * in its getopt_long table (plus its own) and parses with kdl_cli_parse(),
 * which handles these and hands it the rest.  What the analysis is asked
 * goes straight into @run, which the verb copies into its options once
 * (o.common = c.run).
 */
#define KDL_CLI_MAX_STUDENTS 16

struct kdl_cli_common {
        const char *teacher;                        /* -t, --teacher */
        const char *students[KDL_CLI_MAX_STUDENTS]; /* -s, --student (repeatable) */
        size_t nstudents;
        enum kdl_format format;    /* -f, --format */
        const char *table;         /* --table NAME: print that table alone */
        const char *output;        /* -o, --output DIR: one CSV per table there (report: the
                                      report directory) */
        unsigned given;            /* the KDL_CLI_NO_* flag of each option on the command line */
        struct kdl_run_common run; /* -c, -T, --spatial, --nonfinite, --per-sample,
                                      --block-rows, --teacher-checkpoint, --memory */
        struct kdl_inputs_opts inputs; /* --join, --ignore-roles: how the dumps are paired */
        bool plan; /* --plan: print what the analysis needs (run.memory: --memory) instead */
};

enum {
        KDL_OPT_SPATIAL = 1000,
        KDL_OPT_NONFINITE,
        KDL_OPT_PER_SAMPLE,
        KDL_OPT_BLOCK_ROWS,
        KDL_OPT_TEACHER_CHECKPOINT,
        KDL_OPT_JOIN,
        KDL_OPT_IGNORE_ROLES,
        KDL_OPT_MEMORY,
        KDL_OPT_PLAN,
        KDL_OPT_TABLE,
        KDL_OPT_FIRST_FREE_
};

#define KDL_CLI_COMMON_SHORTOPTS                                                                   \
        ":t:s:c:f:T:o:h" /* leading colon: getopt returns ':' for a missing argument */
#define KDL_CLI_COMMON_LONGOPTS                                                                    \
        {"teacher", required_argument, NULL, 't'}, {"student", required_argument, NULL, 's'},      \
                {"checkpoint", required_argument, NULL, 'c'},                                      \
                {"format", required_argument, NULL, 'f'},                                          \
                {"temperature", required_argument, NULL, 'T'},                                     \
                {"spatial", required_argument, NULL, KDL_OPT_SPATIAL},                             \
                {"nonfinite", required_argument, NULL, KDL_OPT_NONFINITE},                         \
                {"per-sample", required_argument, NULL, KDL_OPT_PER_SAMPLE},                       \
                {"block-rows", required_argument, NULL, KDL_OPT_BLOCK_ROWS},                       \
                {"teacher-checkpoint", required_argument, NULL, KDL_OPT_TEACHER_CHECKPOINT},       \
                {"join", required_argument, NULL, KDL_OPT_JOIN},                                   \
                {"ignore-roles", no_argument, NULL, KDL_OPT_IGNORE_ROLES},                         \
                {"memory", required_argument, NULL, KDL_OPT_MEMORY},                               \
                {"plan", no_argument, NULL, KDL_OPT_PLAN},                                         \
                {"table", required_argument, NULL, KDL_OPT_TABLE},                                 \
                {"output", required_argument, NULL, 'o'},                                          \
        {                                                                                          \
                "help", no_argument, NULL, 'h'                                                     \
        }

/**
 * kdl_cli_common_init() - no inputs, the default format, and @run (the
 * verb's defaults, from its kdl_run_<verb>_opts_init()) copied; NULL @run:
 * kdl_run_common_init()'s.
 */
void kdl_cli_common_init(struct kdl_cli *cli, struct kdl_cli_common *o,
                         const struct kdl_run_common *run);

/* kdl_cli_parse() results besides an exit status. */
enum { KDL_CLI_OPT_NOT_MINE = -2, KDL_CLI_PARSED = -3 };

/*
 * kdl_cli_option_fn - a verb's own options for kdl_cli_parse(): getopt
 * result @opt with argument @arg into @ctx.
 * Return: 0; an exit status to return at once (a usage error, printed); or
 * KDL_CLI_OPT_NOT_MINE for an option it does not know.
 */
typedef int kdl_cli_option_fn(struct kdl_cli *cli, int opt, const char *arg, void *ctx);

/**
 * kdl_cli_parse() - getopt_long over @argv with @shortopts and @longopts
 * (the common ones and the verb's): the common options into @c, every other
 * one to @own with @ctx; then the output options are settled
 * (kdl_cli_output_check(), except for report, whose -o is its directory).
 * Return: KDL_CLI_PARSED (the positional arguments start at optind); or an
 * exit status to return at once (0 after -h; 2 after a usage error, printed,
 * also for unknown options).
 */
int kdl_cli_parse(struct kdl_cli *cli, int argc, char **argv, const char *shortopts,
                  const struct option *longopts, struct kdl_cli_common *c, kdl_cli_option_fn *own,
                  void *ctx);

/* kdl_cli_analysis_fn - an analysis as kdl_cli_analyse() runs it: kdl_run_<verb>(). */
typedef int kdl_cli_analysis_fn(kdl_inputs *in, const void *opts, kdl_doc *doc);

/**
 * kdl_cli_analyse() - the rest of an analysis verb: open @teacher (may be
 * NULL) and the @n @students as @c->inputs says, run @fn with @opts into a
 * new document called @name, and print that in @c->format.
 * Return: the exit status (0; otherwise the error is printed).
 */
int kdl_cli_analyse(struct kdl_cli *cli, const char *teacher, const char *const *students, size_t n,
                    const char *name, kdl_cli_analysis_fn *fn, const void *opts,
                    const struct kdl_cli_common *c);

/**
 * kdl_cli_parse_real() - @arg as a finite number in [@lo, @hi] for option @what.
 * Return: 0 with *@ret set; the usage exit status (message printed) otherwise.
 */
int kdl_cli_parse_real(struct kdl_cli *cli, const char *what, const char *arg, double lo, double hi,
                       double *ret);

/** kdl_cli_parse_uint() - @arg as a whole number in [@min, @max]; as kdl_cli_parse_real(). */
int kdl_cli_parse_uint(struct kdl_cli *cli, const char *what, const char *arg, uint64_t min,
                       uint64_t max, uint64_t *ret);

/** kdl_cli_parse_size() - @arg as a whole number in [@min, @max] into a size_t. */
int kdl_cli_parse_size(struct kdl_cli *cli, const char *what, const char *arg, size_t min,
                       size_t max, size_t *ret);

/** kdl_cli_parse_sequences() - --sequences whole|K: *@ret_on set, *@ret_per 0 (whole) or K. */
int kdl_cli_parse_sequences(struct kdl_cli *cli, const char *arg, bool *ret_on, size_t *ret_per);

/** kdl_cli_parse_count() - @arg as a positive integer that fits size_t. */
int kdl_cli_parse_count(struct kdl_cli *cli, const char *what, const char *arg, size_t *ret);

/** kdl_cli_parse_topk() - --topk K1,K2,...: distinct positive counts, at most
 * KDL_RUN_MAX_TOPK of them, into @k (that many) and *@ret_nk (cli-topk.c). */
int kdl_cli_parse_topk(struct kdl_cli *cli, const char *arg, size_t *k, size_t *ret_nk);

/**
 * kdl_cli_parse_memory() - @arg as a --memory budget (kdl_memory_parse():
 * 512M, 4G, 1.5G, 50%...); refused (usage, printed) for a verb whose
 * analyses do not state their needs.
 * Return: 0 with *@ret set; the usage exit status otherwise.
 */
int kdl_cli_parse_memory(struct kdl_cli *cli, const char *arg, size_t *ret);

/*
 * The common options, as flags: what a verb does not use, for kdl_cli_reject(),
 * and what was on the command line (struct kdl_cli_common's given).
 */
enum {
        KDL_CLI_NO_TEMPERATURE = 1u << 0,
        KDL_CLI_NO_PER_SAMPLE = 1u << 1,
        KDL_CLI_NO_TEACHER_CHECKPOINT = 1u << 2,
        KDL_CLI_NO_CHECKPOINT = 1u << 3,
        KDL_CLI_NO_SPATIAL = 1u << 4,
        KDL_CLI_NO_NONFINITE = 1u << 5,
        KDL_CLI_NO_BLOCK_ROWS = 1u << 6,
        KDL_CLI_NO_FORMAT = 1u << 7,
};

/**
 * kdl_cli_reject() - a usage error for a common option on the command line
 * that the verb would otherwise ignore silently (@what: KDL_CLI_NO_* flags):
 * every option a verb accepts changes its result.
 * Return: 0, or the usage exit status (message printed).
 */
int kdl_cli_reject(struct kdl_cli *cli, const struct kdl_cli_common *o, unsigned what);

/* The verbs (analysis/cli/cmd-<verb>.c). */
int cmd_inspect(int argc, char **argv, struct kdl_cli *cli);
int cmd_dims(int argc, char **argv, struct kdl_cli *cli);
int cmd_split(int argc, char **argv, struct kdl_cli *cli);
int cmd_kl(int argc, char **argv, struct kdl_cli *cli);
int cmd_summary(int argc, char **argv, struct kdl_cli *cli);
int cmd_help(int argc, char **argv, struct kdl_cli *cli);
int cmd_cka(int argc, char **argv, struct kdl_cli *cli);
int cmd_layers(int argc, char **argv, struct kdl_cli *cli);
int cmd_report(int argc, char **argv, struct kdl_cli *cli);
int cmd_demo(int argc, char **argv, struct kdl_cli *cli);

#endif
