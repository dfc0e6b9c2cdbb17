/* SPDX-License-Identifier: MIT */
/* `kdlens __complete WORD...`: what the bash completion (completion/kdlens.bash)
 * offers, from the command table (commands, their options, the values their
 * synopses list) and from the dumps on the command line (checkpoint and
 * layer names). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/cli/cli-internal.h"
#include "loaders/h5.h"
#include "metrics/base/banned.h"

/* The most dumps the completion opens, and the longest option name it knows. */
#define MAX_DUMPS 8
#define NAME_LEN  64

/* The candidates, printed once each, those that start with @cur only. */
struct offer {
        FILE *out;
        const char *cur;
        size_t len;
        char **seen; /* copies, to print each once */
        size_t n, cap;
};

static void offer_len(struct offer *o, const char *w, size_t len)
{
        char *copy, **grown;

        if (len < o->len || strncmp(w, o->cur, o->len) != 0)
                return;
        for (size_t k = 0; k < o->n; k++)
                if (strlen(o->seen[k]) == len && strncmp(o->seen[k], w, len) == 0)
                        return;
        if (o->n == o->cap) {
                grown = realloc(o->seen, (o->cap ? 2 * o->cap : 32) * sizeof(*grown));
                if (!grown)
                        return;
                o->seen = grown;
                o->cap = o->cap ? 2 * o->cap : 32;
        }
        copy = strndup(w, len);
        if (!copy)
                return;
        o->seen[o->n++] = copy;
        fprintf(o->out, "%s\n", copy);
}

static void offer(struct offer *o, const char *w)
{
        offer_len(o, w, strlen(w));
}

/* Calls @fn with each option name ("-t", "--teacher") of the option lines of
 * help text @help; a name for which @fn returns true stops the walk, and the
 * line's spec is then in *@ret (when not NULL). */
static bool each_option(const char *help, bool (*fn)(const char *name, size_t len, void *ctx),
                        void *ctx, struct kdl_cli_optspec *ret)
{
        for (const char *line = help; *line;) {
                struct kdl_cli_optspec o;
                const char *end = kdl__cli_line_end(line);

                if (kdl__cli_help_line(line, &o) == KDL_HELP_OPTION) {
                        const char *p = o.names, *stop = o.names + o.names_len;

                        while (p < stop) {
                                size_t n = strcspn(p, ", ");

                                n = p + n > stop ? (size_t) (stop - p) : n;
                                if (fn(p, n, ctx)) {
                                        if (ret)
                                                *ret = o;
                                        return true;
                                }
                                p += n;
                                p += strspn(p, ", ");
                        }
                }
                line = *end ? end + 1 : end;
        }
        return false;
}

static bool offer_name(const char *name, size_t len, void *ctx)
{
        offer_len(ctx, name, len);
        return false;
}

static bool same_name(const char *name, size_t len, void *ctx)
{
        return strlen(ctx) == len && strncmp(name, ctx, len) == 0;
}

/* The option line of @c that names @name ("-f" or "--format"), into *@ret. */
static bool find_option(const struct kdl_cmd *c, const char *name, struct kdl_cli_optspec *ret)
{
        if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
                *ret = (struct kdl_cli_optspec){.names = name, .names_len = strlen(name)};
                return true;
        }
        return each_option(c->help, same_name, (void *) name, ret) ||
               each_option(kdl__cli_output_help(c), same_name, (void *) name, ret);
}

/* Whether the option line @o names @name. */
static bool names(const struct kdl_cli_optspec *o, const char *name)
{
        size_t n = strlen(name);

        for (const char *p = o->names; p + n <= o->names + o->names_len; p++)
                if (strncmp(p, name, n) == 0 && (p + n == o->names + o->names_len || p[n] == ',') &&
                    (p == o->names || p[-1] == ' '))
                        return true;
        return false;
}

/* The words of a|b|c (@len bytes at @s) that are values, not placeholders. */
static void offer_choices(struct offer *o, const char *s, size_t len)
{
        if (!memchr(s, '|', len))
                return;
        for (const char *p = s, *end = s + len; p < end;) {
                size_t n = 0;
                bool word;

                while (p + n < end && p[n] != '|')
                        n++;
                word = n > 0;

                for (size_t k = 0; word && k < n; k++)
                        word = (p[k] >= 'a' && p[k] <= 'z') || (p[k] >= '0' && p[k] <= '9') ||
                               p[k] == '-';
                if (word)
                        offer_len(o, p, n);
                p += n + 1;
        }
}

/* The values the command table lists for the option @spec names: a|b|c after
 * any of its names in any synopsis or option line, and the library's names. */
static void offer_values(struct offer *o, const struct kdl_cli_optspec *spec)
{
        size_t n;
        const struct kdl_cmd *cmds = kdl__cli_commands(&n);

        if (names(spec, "--format"))
                for (int f = 0; f < KDL_FORMAT_COUNT_; f++)
                        offer(o, kdl_format_name((enum kdl_format) f));
        if (names(spec, "--spatial"))
                for (int r = 0; r < KDL_SPATIAL_COUNT_; r++)
                        offer(o, kdl_spatial_name((enum kdl_spatial) r));
        for (size_t k = 0; k < n; k++) {
                struct kdl_cli_optspec other;

                for (const char *p = cmds[k].usage; (p = strchr(p, '[')); p++) {
                        size_t m = strcspn(p + 1, " ]");
                        char name[NAME_LEN];

                        snprintf(name, sizeof(name), "%.*s", (int) m, p + 1);
                        if (p[1 + m] == ' ' && names(spec, name))
                                offer_choices(o, p + 2 + m, strcspn(p + 2 + m, "] "));
                }
                for (const char *line = cmds[k].help; *line;) {
                        const char *end = kdl__cli_line_end(line);

                        if (kdl__cli_help_line(line, &other) == KDL_HELP_OPTION && other.arg &&
                            other.names_len == spec->names_len &&
                            strncmp(other.names, spec->names, spec->names_len) == 0)
                                offer_choices(o, other.arg, other.arg_len);
                        line = *end ? end + 1 : end;
                }
        }
}

/* The dumps on the command line, by role. */
struct dumps {
        const char *teacher;
        const char *students[MAX_DUMPS];
        size_t nstudents;
        const char *args[MAX_DUMPS]; /* positional: inspect FILE..., cka A.h5 [B.h5] */
        size_t nargs;
};

/* The dumps among @words[0, @n), the words after the command @c, into @d: the
 * values of -t and -s, and the positional arguments. */
static void find_dumps(const struct kdl_cmd *c, char **words, int n, struct dumps *d)
{
        struct kdl_cli_optspec o;

        for (int i = 0; i < n; i++) {
                const char *w = words[i], *v = NULL;
                char name[NAME_LEN];
                size_t len = strcspn(w, "=");

                if (w[0] != '-' || strcmp(w, "-") == 0) {
                        if (d->nargs < MAX_DUMPS)
                                d->args[d->nargs++] = w;
                        continue;
                }
                snprintf(name, sizeof(name), "%.*s", (int) len, w);
                if (!find_option(c, name, &o) || !o.arg)
                        continue;
                if (w[len] == '=')
                        v = w + len + 1;
                else if (i + 1 < n && strcmp(words[i + 1], "=") != 0)
                        v = words[++i];
                else if (i + 2 < n)
                        v = words[i += 2];
                if (v && names(&o, "--teacher"))
                        d->teacher = v;
                if (v && names(&o, "--student") && d->nstudents < MAX_DUMPS)
                        d->students[d->nstudents++] = v;
        }
}

/* Each checkpoint name (or, with @layers, each feature layer name) of the dump @path. */
static void offer_names(struct offer *o, const char *path, bool layers)
{
        char *expanded = NULL;
        const char *home = getenv("HOME");
        kdl_h5file *f = NULL;
        const kdl_dump *d;

        if (strncmp(path, "~/", 2) == 0 && home && asprintf(&expanded, "%s%s", home, path + 1) > 0)
                path = expanded;
        if (kdl_h5_open(path, &f) == 0) {
                d = kdl_h5_dump(f);
                for (size_t k = 0; k < d->ncheckpoints; k++) {
                        if (!layers)
                                offer(o, d->checkpoints[k].name);
                        for (size_t j = 0; layers && j < d->checkpoints[k].nlayers; j++)
                                offer(o, d->checkpoints[k].layers[j].name);
                }
        }
        kdl_h5_close(f);
        free(expanded);
}

/* The checkpoints or layers @spec asks for, of the dumps it refers to (kdlens help
 * of each option says which). */
static void offer_dump_names(struct offer *o, const struct kdl_cmd *c,
                             const struct kdl_cli_optspec *spec, const struct dumps *d)
{
        bool layers = names(spec, "--layer");
        bool teacher = names(spec, "--teacher-checkpoint") || strcmp(c->name, "layers") == 0;
        bool every = layers || strcmp(c->name, "dims") == 0;

        if (strcmp(c->name, "cka") == 0 && !layers) {
                if (d->nargs)
                        offer_names(o, d->args[0], false);
                return;
        }
        if (d->teacher && (teacher || every || d->nstudents == 0))
                offer_names(o, d->teacher, layers);
        for (size_t k = 0; k < d->nstudents && !teacher; k++)
                offer_names(o, d->students[k], layers);
        for (size_t k = 0; k < d->nargs && every; k++)
                offer_names(o, d->args[k], layers);
}

/* What option @spec's argument is: the kind of the first line, and the words. */
static void complete_value(struct offer *o, const struct kdl_cmd *c,
                           const struct kdl_cli_optspec *spec, char **words, int n)
{
        struct dumps d = {0};

        if (names(spec, "--teacher") || names(spec, "--student")) {
                fputs("dumps\n", o->out);
                return;
        }
        if (names(spec, "--output")) {
                fputs("dirs\n", o->out);
                return;
        }
        if (names(spec, "--per-sample") || names(spec, "--gnuplot")) {
                fputs("files\n", o->out);
                return;
        }
        fputs("words\n", o->out);
        offer_values(o, spec);
        if (names(spec, "--checkpoint") || names(spec, "--teacher-checkpoint") ||
            names(spec, "--layer")) {
                find_dumps(c, words, n, &d);
                offer_dump_names(o, c, spec, &d);
        }
}

/* The last of @words (@words[0] the command @c, @n of them) completed: an option's
 * value, an option, or a positional argument. */
static void complete_verb(struct offer *o, const struct kdl_cmd *c, char **words, int n)
{
        const char *cur = words[n - 1], *prev = n >= 2 ? words[n - 2] : "";
        struct kdl_cli_optspec spec;
        char name[NAME_LEN];

        /* --opt=value as one word, or as three ("--opt", "=", "value": bash splits at '='). */
        if (strncmp(cur, "--", 2) == 0 && strchr(cur, '=')) {
                snprintf(name, sizeof(name), "%.*s", (int) strcspn(cur, "="), cur);
                if (find_option(c, name, &spec) && spec.arg) {
                        o->cur = strchr(cur, '=') + 1;
                        o->len = strlen(o->cur);
                        complete_value(o, c, &spec, words + 1, n - 2);
                }
                return;
        }
        if (strcmp(cur, "=") == 0 || (strcmp(prev, "=") == 0 && n >= 3)) {
                const char *opt = strcmp(cur, "=") == 0 ? prev : words[n - 3];

                if (strcmp(cur, "=") == 0) {
                        o->cur = "";
                        o->len = 0;
                }
                if (find_option(c, opt, &spec) && spec.arg)
                        complete_value(o, c, &spec, words + 1, n - 2);
                return;
        }
        if (n >= 3 && prev[0] == '-' && find_option(c, prev, &spec) && spec.arg) {
                complete_value(o, c, &spec, words + 1, n - 2);
                return;
        }
        if (cur[0] != '-' && c->max_args > 0) {
                fputs("dumps\n", o->out);
                return;
        }
        fputs("words\n", o->out);
        each_option(c->help, offer_name, o, NULL);
        each_option(kdl__cli_output_help(c), offer_name, o, NULL);
        offer(o, "-h");
        offer(o, "--help");
}

int kdl__cli_complete(int argc, char **argv, struct kdl_cli *cli)
{
        struct offer o = {.out = cli->out};
        size_t ncmds, nglobals;
        const struct kdl_cmd *cmds = kdl__cli_commands(&ncmds), *c;
        const struct kdl_cli_global *g = kdl__cli_globals(&nglobals);
        int v = 0;

        if (argc < 1)
                return KDL_EXIT_USAGE;
        o.cur = argv[argc - 1];
        o.len = strlen(o.cur);
        while (v < argc - 1 && argv[v][0] == '-') /* the global options */
                v++;
        c = v < argc - 1 ? kdl__cli_find(argv[v]) : NULL;
        if (v == argc - 1 && o.cur[0] == '-') {
                fputs("words\n", o.out);
                for (size_t k = 0; k < nglobals; k++)
                        for (const char *p = g[k].spec; *p; p += strspn(p, ", ")) {
                                offer_len(&o, p, strcspn(p, ", "));
                                p += strcspn(p, ", ");
                        }
        } else if (v == argc - 1 || (c && c->fn == cmd_help && o.cur[0] != '-')) {
                fputs("words\n", o.out); /* a command, or help's COMMAND */
                for (size_t k = 0; k < ncmds; k++)
                        offer(&o, cmds[k].name);
        } else if (c) {
                complete_verb(&o, c, argv + v, argc - v);
        } else {
                fputs("words\n", o.out);
        }
        for (size_t k = 0; k < o.n; k++)
                free(o.seen[k]);
        free(o.seen);
        return fflush(cli->out) == 0 ? KDL_EXIT_OK : KDL_EXIT_FAILURE;
}
