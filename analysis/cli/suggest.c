/* SPDX-License-Identifier: MIT */
/* "Did you mean ...": the names closest to a mistyped one, and the grammar of
 * the help texts that the man pages and the completion read. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/cli/cli-internal.h"
#include "metrics/base/banned.h"

/* Longer names are never suggested (no command or option comes near). */
#define NAME_MAX_LEN 63

/* The optimal string alignment distance of @a and @b (Damerau-Levenshtein
 * without repeated edits of one substring); SIZE_MAX when either is longer
 * than NAME_MAX_LEN. */
static size_t distance(const char *a, const char *b)
{
        size_t la = strlen(a), lb = strlen(b);
        size_t d[NAME_MAX_LEN + 1][NAME_MAX_LEN + 1];

        if (la > NAME_MAX_LEN || lb > NAME_MAX_LEN)
                return SIZE_MAX;
        for (size_t i = 0; i <= la; i++)
                d[i][0] = i;
        for (size_t j = 0; j <= lb; j++)
                d[0][j] = j;
        for (size_t i = 1; i <= la; i++)
                for (size_t j = 1; j <= lb; j++) {
                        size_t sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
                        size_t del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
                        size_t v = sub < del ? sub : del;

                        v = v < ins ? v : ins;
                        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                            d[i - 2][j - 2] + 1 < v)
                                v = d[i - 2][j - 2] + 1;
                        d[i][j] = v;
                }
        return d[la][lb];
}

size_t kdl__cli_suggest(const char *typed, const char *const *names, size_t n, const char **ret)
{
        size_t len = strlen(typed), limit = len / 3 > 1 ? len / 3 : 1, best = SIZE_MAX, found = 0;

        for (size_t k = 0; k < n; k++) {
                size_t d = distance(typed, names[k]);

                if (d > limit || d > best || strcmp(typed, names[k]) == 0)
                        continue;
                if (d < best) {
                        best = d;
                        found = 0;
                }
                if (found < KDL_CLI_SUGGEST_MAX)
                        ret[found++] = names[k];
        }
        return found;
}

const char *kdl__cli_did_you_mean(const char *typed, const char *prefix, const char *const *names,
                                  size_t n, char *buf, size_t size)
{
        const char *best[KDL_CLI_SUGGEST_MAX];
        size_t m = kdl__cli_suggest(typed, names, n, best), len;

        buf[0] = '\0';
        if (m == 0)
                return buf;
        len = (size_t) snprintf(buf, size, "; did you mean");
        for (size_t k = 0; k < m && len < size; k++)
                len += (size_t) snprintf(buf + len, size - len, "%s '%s%s'",
                                         k == 0      ? ""
                                         : k + 1 < m ? ","
                                                     : " or",
                                         prefix, best[k]);
        if (len < size)
                snprintf(buf + len, size - len, "?");
        return buf;
}

/* ---- the grammar of a help text ----------------------------------------------------- */

const char *kdl__cli_line_end(const char *line)
{
        const char *e = strchr(line, '\n');

        return e ? e : line + strlen(line);
}

enum kdl_cli_help_line kdl__cli_help_line(const char *line, struct kdl_cli_optspec *ret)
{
        const char *end = kdl__cli_line_end(line), *p = line;
        size_t blanks = strspn(line, " ");

        if (line[blanks] == '\n' || line[blanks] == '\0')
                return KDL_HELP_BLANK;
        if (blanks == 0)
                return KDL_HELP_TEXT;
        if (blanks > 8 || line[blanks] != '-')
                return KDL_HELP_MORE;
        p += blanks;
        *ret = (struct kdl_cli_optspec){.names = p};
        /* The names: words that start with '-', each but the last ending in ','. */
        for (;;) {
                p += strcspn(p, " \n");
                ret->names_len = (size_t) (p - ret->names);
                if (p[-1] != ',' || *p != ' ' || p[1] != '-')
                        break;
                p++;
        }
        /* One blank then a word: the argument.  Two blanks or more: the description. */
        if (*p == ' ' && p[1] != ' ' && p < end) {
                ret->arg = ++p;
                p += strcspn(p, " \n");
                ret->arg_len = (size_t) (p - ret->arg);
        }
        p += strspn(p, " ");
        ret->desc = p < end ? p : end;
        ret->desc_len = (size_t) (end - ret->desc);
        return KDL_HELP_OPTION;
}

/* ---- options getopt_long() refused ------------------------------------------------- */

/* The most long options a verb has, for the suggestions. */
#define MAX_LONGOPTS 64

int kdl_cli_bad_option(struct kdl_cli *cli, int opt, char **argv, const struct option *longopts)
{
        const char *arg = argv[optind - 1], *names[MAX_LONGOPTS], *exact = NULL;
        const char *prefixed[KDL_CLI_SUGGEST_MAX + 1];
        char name[NAME_MAX_LEN + 1], hint[256];
        size_t n = 0, np = 0, len;
        bool takes_none = false;

        if (opt == ':')
                return kdl_cli_usage(cli, "missing argument to '%s'", arg);
        if (strncmp(arg, "--", 2) != 0)
                return kdl_cli_usage(cli, "unknown option '-%c'", optopt > ' ' ? optopt : '?');
        len = strcspn(arg + 2, "=");
        snprintf(name, sizeof(name), "%.*s", (int) len, arg + 2);
        for (const struct option *o = longopts; o->name && n < MAX_LONGOPTS; o++) {
                bool seen = false;

                for (size_t k = 0; k < n; k++)
                        seen = seen || strcmp(names[k], o->name) == 0;
                if (seen)
                        continue;
                names[n++] = o->name;
                if (strcmp(o->name, name) == 0) {
                        exact = o->name;
                        takes_none = o->has_arg == no_argument;
                } else if (strncmp(o->name, name, len) == 0 && np <= KDL_CLI_SUGGEST_MAX) {
                        prefixed[np++] = o->name;
                }
        }
        if (exact && takes_none && arg[2 + len] == '=')
                return kdl_cli_usage(cli, "option '--%s' takes no argument", exact);
        if (!exact && np > 1) {
                size_t l = 0;

                for (size_t k = 0; k < np && k < KDL_CLI_SUGGEST_MAX && l < sizeof(hint); k++)
                        l += (size_t) snprintf(hint + l, sizeof(hint) - l, "%s--%s", k ? ", " : "",
                                               prefixed[k]);
                return kdl_cli_usage(cli, "ambiguous option '--%s': it could be %s%s", name, hint,
                                     np > KDL_CLI_SUGGEST_MAX ? ", ..." : "");
        }
        return kdl_cli_usage(cli, "unknown option '%s'%s", arg,
                             kdl__cli_did_you_mean(name, "--", names, n, hint, sizeof(hint)));
}
