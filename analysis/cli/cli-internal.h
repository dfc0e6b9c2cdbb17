/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_CLI_CLI_INTERNAL_H
#define KDL_ANALYSIS_CLI_CLI_INTERNAL_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>

#include "analysis/cli/cli.h"

/*
 * What the files of analysis/cli/ share besides cli.h: the command table
 * (cli.c) and the "did you mean" suggestions (suggest.c).
 */

struct kdl_cmd {
        const char *name;
        int (*fn)(int argc, char **argv, struct kdl_cli *cli);
        int min_args; /* positional arguments, checked by kdl_cli_positional() */
        int max_args;
        const char *summary;
        const char *usage; /* the synopsis, as in README.md */
        const char *help;  /* options, one per line */
        unsigned budget;   /* CMD_MEMORY: takes --memory; CMD_PLAN: --plan */
};

enum { CMD_MEMORY = 1u << 0, CMD_PLAN = 1u << 1 };

/**
 * kdl__cli_output_help() - the help of the output options (--table, -o) as
 * @c takes them, in the format of kdl_cmd.help; "" for a command that
 * prints no tables.  Static storage.
 */
const char *kdl__cli_output_help(const struct kdl_cmd *c);

/* The most names a suggestion lists. */
#define KDL_CLI_SUGGEST_MAX 4

/**
 * kdl__cli_suggest() - the names among @names[0..@n) that @typed was most
 * likely meant to be: those at the least edit distance (an insertion, a
 * deletion, a substitution or a swap of neighbours each count one) when it
 * is small for the length of @typed (at most a third of it, at least 1), in
 * table order.
 * @ret: up to KDL_CLI_SUGGEST_MAX borrowed entries of @names.
 * Return: how many were set (0: none is close).
 */
size_t kdl__cli_suggest(const char *typed, const char *const *names, size_t n, const char **ret);

/**
 * kdl__cli_did_you_mean() - "; did you mean 'a'?" (or "'a' or 'b'", each in
 * quotes after @prefix, e.g. "--") for kdl__cli_suggest()'s names, into
 * @buf of @size bytes; "" when none is close.  Returns @buf.
 */
const char *kdl__cli_did_you_mean(const char *typed, const char *prefix, const char *const *names,
                                  size_t n, char *buf, size_t size);

#endif
