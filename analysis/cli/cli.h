/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_CLI_CLI_H
#define KDL_ANALYSIS_CLI_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

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
 * kdl_cli_write_doc() - render @d to cli->out in @format; on failure prints
 * the error and returns 1.
 */
int kdl_cli_write_doc(struct kdl_cli *cli, const kdl_doc *d, enum kdl_format format);

/* The verbs (analysis/cli/cmd-<verb>.c). */
int cmd_inspect(int argc, char **argv, struct kdl_cli *cli);
int cmd_help(int argc, char **argv, struct kdl_cli *cli);

#endif
