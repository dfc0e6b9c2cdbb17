/* SPDX-License-Identifier: MIT */
/* The man pages, kdlens(1) and kdlens-VERB(1), written from the command
 * table that `kdlens help` prints (kdlens help --man [VERB]): the build makes
 * them with the binary it built, so they say what that binary does. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kdl-config.h"
#include "analysis/cli/cli-internal.h"
#include "metrics/base/banned.h"

/* The exit statuses every command shares (kdl_cli_fail(), kdl_cli_usage()). */
static const char *const exit_status[][2] = {
        {"0", "success"},
        {"1", "failure: a bad input (one line on standard error naming the file, the dataset, "
              "what was expected and what was found), an analysis that needs more memory than "
              "--memory allows, or an output that cannot be written"},
        {"2", "usage error: an unknown command or option, a bad option value, an option the "
              "command cannot use, or an output that would replace an input"},
};

/* @len bytes of @s as roff text: backslashes and minus signs escaped, a
 * newline a blank, and a control character at the start of a line made text. */
static void text(FILE *out, const char *s, size_t len, bool line_start)
{
        for (size_t k = 0; k < len; k++) {
                char c = s[k];

                if (line_start && (c == '.' || c == '\''))
                        fputs("\\&", out);
                line_start = false;
                if (c == '\\')
                        fputs("\\e", out);
                else if (c == '-')
                        fputs("\\-", out);
                else if (c == '\n')
                        fputc(' ', out);
                else
                        fputc(c, out);
        }
}

static void puts_text(FILE *out, const char *s)
{
        text(out, s, strlen(s), true);
}

/* The synopsis @usage: "kdlens VERB" in bold, each [...] kept on one line. */
static void synopsis(FILE *out, const char *usage, size_t verb_len)
{
        int depth = 0;

        fputs(".SH SYNOPSIS\n.ad l\n.nh\n\\fB", out);
        text(out, usage, verb_len, false);
        fputs("\\fR", out);
        for (const char *p = usage + verb_len; *p; p++) {
                depth += (*p == '[') - (*p == ']');
                if (*p == ' ' && depth > 0)
                        fputs("\\ ", out);
                else
                        text(out, p, 1, false);
        }
        fputc('\n', out);
}

/* One option of a help text: ".TP", the names in bold and the argument in
 * italics, then the description with its continuation lines; returns the
 * line after it. */
static const char *option(FILE *out, const char *line, const struct kdl_cli_optspec *o)
{
        const char *p = o->names, *end = o->names + o->names_len, *next;
        struct kdl_cli_optspec more;

        fputs(".TP\n", out);
        while (p < end) {
                size_t n = strcspn(p, ", ");

                n = p + n > end ? (size_t) (end - p) : n;
                fputs("\\fB", out);
                text(out, p, n, false);
                fputs("\\fR", out);
                p += n;
                if (p < end) {
                        fputs(", ", out);
                        p += strspn(p, ", ");
                }
        }
        if (o->arg) {
                fputs(" \\fI", out);
                text(out, o->arg, o->arg_len, false);
                fputs("\\fR", out);
        }
        fputc('\n', out);
        text(out, o->desc, o->desc_len, true);
        next = kdl__cli_line_end(line);
        while (*next == '\n' && kdl__cli_help_line(next + 1, &more) == KDL_HELP_MORE) {
                line = next + 1;
                next = kdl__cli_line_end(line);
                fputc('\n', out);
                line += strspn(line, " ");
                text(out, line, (size_t) (next - line), true);
        }
        fputc('\n', out);
        return *next ? next + 1 : next;
}

/* The options of help text @help into the page; with @prose, its paragraphs
 * instead (the description), each after ".PP". */
static void help_text(FILE *out, const char *help, bool prose)
{
        const char *line = help;
        bool para = false;

        while (*line) {
                struct kdl_cli_optspec o;
                enum kdl_cli_help_line kind = kdl__cli_help_line(line, &o);
                const char *end = kdl__cli_line_end(line);

                if (kind == KDL_HELP_OPTION && !prose) {
                        line = option(out, line, &o);
                        continue;
                }
                if (kind == KDL_HELP_TEXT && prose) {
                        fputs(para ? "\n" : ".PP\n", out);
                        text(out, line, (size_t) (end - line), true);
                        para = true;
                } else if (kind == KDL_HELP_BLANK || kind == KDL_HELP_OPTION) {
                        if (para)
                                fputc('\n', out);
                        para = false;
                }
                line = *end ? end + 1 : end;
        }
        if (para)
                fputc('\n', out);
}

static void exit_statuses(FILE *out)
{
        fputs(".SH EXIT STATUS\n", out);
        for (size_t k = 0; k < sizeof(exit_status) / sizeof(exit_status[0]); k++) {
                fprintf(out, ".TP\n\\fB%s\\fR\n", exit_status[k][0]);
                puts_text(out, exit_status[k][1]);
                fputc('\n', out);
        }
}

/* "SEE ALSO": every page but @self's (NULL: kdlens(1)), and the method reference. */
static void see_also(FILE *out, const struct kdl_cmd *self)
{
        size_t n;
        const struct kdl_cmd *cmds = kdl__cli_commands(&n);

        fputs(".SH SEE ALSO\n", out);
        if (self)
                fputs("\\fBkdlens\\fR(1)", out);
        for (size_t k = 0; k < n; k++)
                if (&cmds[k] != self)
                        fprintf(out, "%s\\fBkdlens\\-%s\\fR(1)", k || self ? ",\n" : "",
                                cmds[k].name);
        fputs("\n.PP\n", out);
        puts_text(out, KDL_CLI_DOCS);
        fputc('\n', out);
}

/* The page's title line: NAME in capitals, section 1. */
static void title(FILE *out, const char *name)
{
        fputs(".\\\" Written by 'kdlens help --man' from kdlens's command table.\n.TH \"", out);
        for (const char *p = name; *p; p++) {
                if (*p == '-')
                        fputs("\\-", out);
                else
                        fputc(toupper((unsigned char) *p), out);
        }
        fputs("\" \"1\" \"\" \"kdlens " KDL_VERSION "\" \"kdlens manual\"\n", out);
}

static void overview(FILE *out)
{
        size_t n, ng;
        const struct kdl_cmd *cmds = kdl__cli_commands(&n);
        const struct kdl_cli_global *g = kdl__cli_globals(&ng);

        title(out, "kdlens");
        fputs(".SH NAME\nkdlens \\- analyse knowledge distillation from HDF5 dumps\n", out);
        synopsis(out, KDL_CLI_USAGE, strlen("kdlens"));
        fputs(".SH DESCRIPTION\n", out);
        puts_text(out, KDL_CLI_ABOUT);
        fputs("\n.PP\nRun \\fBkdlens\\fR \\fICOMMAND\\fR \\fB\\-h\\fR, or read "
              "\\fBkdlens\\-\\fR\\fICOMMAND\\fR(1), for the options of a command.\n"
              ".SH COMMANDS\n",
              out);
        for (size_t k = 0; k < n; k++) {
                fprintf(out, ".TP\n\\fBkdlens %s\\fR\n", cmds[k].name);
                puts_text(out, cmds[k].summary);
                fprintf(out, " (\\fBkdlens\\-%s\\fR(1))\n", cmds[k].name);
        }
        fputs(".SH OPTIONS\n", out);
        for (size_t k = 0; k < ng; k++) {
                fputs(".TP\n\\fB", out);
                text(out, g[k].spec, strlen(g[k].spec), false);
                fputs("\\fR\n", out);
                puts_text(out, g[k].help);
                fputc('\n', out);
        }
        exit_statuses(out);
        see_also(out, NULL);
}

int kdl__cli_man(FILE *out, const struct kdl_cmd *c)
{
        char page[64];

        if (!c) {
                overview(out);
        } else {
                snprintf(page, sizeof(page), "kdlens-%s", c->name);
                title(out, page);
                fputs(".SH NAME\n", out);
                text(out, page, strlen(page), true);
                fputs(" \\- ", out);
                puts_text(out, c->summary);
                fputc('\n', out);
                synopsis(out, c->usage, strlen("kdlens ") + strlen(c->name));
                fputs(".SH DESCRIPTION\n.PP\n", out);
                fputc(toupper((unsigned char) c->summary[0]), out);
                puts_text(out, c->summary + 1);
                fputs(strchr(".?", c->summary[strlen(c->summary) - 1]) ? "\n" : ".\n", out);
                help_text(out, c->help, true);
                fputs(".SH OPTIONS\n", out);
                help_text(out, c->help, false);
                help_text(out, kdl__cli_output_help(c), false);
                fputs(".TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\nprint the help of the command and "
                      "exit\n",
                      out);
                exit_statuses(out);
                see_also(out, c);
        }
        return ferror(out) ? -EIO : 0;
}
