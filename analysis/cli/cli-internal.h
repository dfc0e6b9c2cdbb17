/* SPDX-License-Identifier: MIT */
#ifndef KDL_ANALYSIS_CLI_CLI_INTERNAL_H
#define KDL_ANALYSIS_CLI_CLI_INTERNAL_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>

#include "analysis/cli/cli.h"

/*
 * What the files of analysis/cli/ share besides cli.h: the command table
 * (cli.c), which `kdlens help`, the man pages (man.c) and the completion
 * (complete.c) all read, so that none of them can say something the others
 * do not; and the "did you mean" suggestions (suggest.c).
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

/* What `kdlens help` and kdlens(1) say of kdlens as a whole. */
#define KDL_CLI_USAGE "kdlens [--version] [--help] COMMAND [ARGS]"
#define KDL_CLI_ABOUT                                                                              \
        "kdlens analyses knowledge distillation from HDF5 dumps of a teacher and a student."
#define KDL_CLI_DOCS                                                                               \
        "Every quantity the\ncommands report is defined, with its source and caveats, in the "     \
        "docs/ directory\nof kdlens's source tree (docs/README.md)."

/** kdl__cli_commands() - the command table in help order, *@ret_n entries; static storage. */
const struct kdl_cmd *kdl__cli_commands(size_t *ret_n);

/** kdl__cli_find() - the command called @name, or NULL. */
const struct kdl_cmd *kdl__cli_find(const char *name);

/**
 * kdl__cli_output_help() - the help of the output options (--table, -o) as
 * @c takes them, in the format of kdl_cmd.help; "" for a command that
 * prints no tables.  Static storage.
 */
const char *kdl__cli_output_help(const struct kdl_cmd *c);

/* The options before the command (kdlens --version, ...), as the help lists them. */
struct kdl_cli_global {
        const char *spec; /* "-q, --quiet" */
        const char *help; /* one line */
};

/** kdl__cli_globals() - the global options, *@ret_n entries; static storage. */
const struct kdl_cli_global *kdl__cli_globals(size_t *ret_n);

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

/**
 * kdl__cli_man() - write the man page of @c (NULL: kdlens(1), the overview)
 * in roff to @out, from the command table.
 * Return: 0; -EIO when writing fails.
 */
int kdl__cli_man(FILE *out, const struct kdl_cmd *c);

/**
 * kdl__cli_complete() - `kdlens __complete WORD...`, the bash completion's
 * helper (completion/kdlens.bash): @argc words after "__complete", the
 * command line from the word after "kdlens" up to the word being completed
 * (the last, possibly empty).  Prints what to offer: a first line "words",
 * "files" (dumps) or "dirs", then the candidates that start with the last
 * word, one per line.
 * Return: the exit status (0; 2 without words).
 */
int kdl__cli_complete(int argc, char **argv, struct kdl_cli *cli);

/*
 * The grammar of a help text (kdl_cmd.help, kdl__cli_output_help()), which
 * the man pages and the completion read: a line that starts with up to 8
 * blanks then '-' is an option (its names, the placeholder of its argument
 * when it takes one, and the start of its description); a line that starts
 * with more blanks continues the description above it; a line that starts
 * with a letter is prose; an empty line ends a paragraph.
 */
enum kdl_cli_help_line { KDL_HELP_BLANK, KDL_HELP_OPTION, KDL_HELP_MORE, KDL_HELP_TEXT };

/* An option line, as pointers into the help text (not NUL-terminated). */
struct kdl_cli_optspec {
        const char *names; /* "-t, --teacher" */
        size_t names_len;
        const char *arg; /* "FILE", "error|skip"; NULL when the option takes none */
        size_t arg_len;
        const char *desc; /* the rest of the line */
        size_t desc_len;
};

/**
 * kdl__cli_help_line() - the kind of the help line that starts at @line (it
 * ends at '\n' or NUL); for an option line, its parts into *@ret.
 * The spec is the option names (words that start with '-', a comma after
 * all but the last) and, after a single blank, one word of argument; two
 * blanks or more end it.
 */
enum kdl_cli_help_line kdl__cli_help_line(const char *line, struct kdl_cli_optspec *ret);

/**
 * kdl__cli_line_end() - the end of the line that starts at @line: its '\n'
 * or NUL.
 */
const char *kdl__cli_line_end(const char *line);

#endif
