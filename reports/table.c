/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "kdl-config.h"
#include "metrics/base/alloc.h"
#include "reports/table.h"
#include "reports/table-internal.h"
#include "metrics/base/banned.h"

struct kdl_table {
        char *name;
        char *title;
        size_t ncols;
        char **keys;
        char **labels; /* NULL entries: use the key */
        size_t nrows;
        size_t cap_rows;
        size_t cap_cols; /* cells per row allocated */
        kdl_cell **rows;
};

struct kdl_doc {
        char *command;
        size_t ninputs;
        char **inputs;
        size_t nnotes;
        char **notes;
        size_t ntables;
        kdl_table **tables;
};

static const char *const format_names[KDL_FORMAT_COUNT_] = {"table", "md", "csv", "tex", "json"};

int kdl_format_parse(const char *s, enum kdl_format *ret)
{
        for (int k = 0; k < KDL_FORMAT_COUNT_; k++)
                if (strcmp(s, format_names[k]) == 0) {
                        *ret = (enum kdl_format) k;
                        return 0;
                }
        return kdl_error(-KDL_EUSAGE, "unknown format '%s': expected table, md, csv, tex or json",
                         s);
}

const char *kdl_format_name(enum kdl_format f)
{
        assert(f < KDL_FORMAT_COUNT_);
        return format_names[f];
}

/* Append @v to a heap array of strings (copying it). */
static int push_string(char ***arr, size_t *n, const char *v)
{
        char **grown = realloc(*arr, (*n + 1) * sizeof(**arr));
        char *copy;

        if (!grown)
                return kdl_error(-ENOMEM, "out of memory");
        *arr = grown;
        copy = kdl__strdup(v);
        if (!copy)
                return -ENOMEM;
        (*arr)[(*n)++] = copy;
        return 0;
}

/* ---- tables ------------------------------------------------------------------ */

int kdl_table_new(const char *name, const char *title, kdl_table **ret)
{
        kdl_table *t = kdl_new(kdl_table, 1);

        if (!t)
                return -ENOMEM;
        t->name = kdl__strdup(name);
        t->title = kdl__strdup(title ? title : name);
        if (!t->name || !t->title) {
                kdl_table_free(t);
                return -ENOMEM;
        }
        *ret = t;
        return 0;
}

static void cell_clear(kdl_cell *c)
{
        if (c->type == KDL_CELL_STR)
                free(c->v.s);
        c->type = KDL_CELL_EMPTY;
}

void kdl_table_free(kdl_table *t)
{
        if (!t)
                return;
        for (size_t i = 0; i < t->nrows; i++) {
                for (size_t j = 0; j < t->cap_cols; j++)
                        cell_clear(&t->rows[i][j]);
                free(t->rows[i]);
        }
        free(t->rows);
        for (size_t j = 0; j < t->ncols; j++) {
                free(t->keys[j]);
                free(t->labels[j]);
        }
        free(t->keys);
        free(t->labels);
        free(t->name);
        free(t->title);
        free(t);
}

int kdl_table_add_row(kdl_table *t)
{
        kdl_cell *row;

        if (t->nrows == t->cap_rows) {
                size_t cap = t->cap_rows ? 2 * t->cap_rows : 16;
                kdl_cell **grown = realloc(t->rows, cap * sizeof(*grown));

                if (!grown)
                        return kdl_error(-ENOMEM, "out of memory");
                t->rows = grown;
                t->cap_rows = cap;
        }
        row = kdl_new(kdl_cell, t->cap_cols ? t->cap_cols : 1);
        if (!row)
                return -ENOMEM;
        if (!t->cap_cols)
                t->cap_cols = 1;
        t->rows[t->nrows] = row;
        return (int) t->nrows++;
}

int kdl_table_find(const kdl_table *t, const char *key)
{
        for (size_t j = 0; j < t->ncols; j++)
                if (strcmp(t->keys[j], key) == 0)
                        return (int) j;
        return -1;
}

/* The column of @key, added when new; grows every row's cell array as needed. */
static int column(kdl_table *t, const char *key)
{
        int j = kdl_table_find(t, key);
        char **labels;
        int err;

        if (j >= 0)
                return j;
        if (t->ncols == t->cap_cols) {
                size_t cap = t->cap_cols ? 2 * t->cap_cols : 8;

                for (size_t i = 0; i < t->nrows; i++) {
                        kdl_cell *grown = realloc(t->rows[i], cap * sizeof(*grown));

                        if (!grown)
                                return kdl_error(-ENOMEM, "out of memory");
                        memset(grown + t->cap_cols, 0, (cap - t->cap_cols) * sizeof(*grown));
                        t->rows[i] = grown;
                }
                t->cap_cols = cap;
        }
        labels = realloc(t->labels, (t->ncols + 1) * sizeof(*labels));
        if (!labels)
                return kdl_error(-ENOMEM, "out of memory");
        t->labels = labels;
        t->labels[t->ncols] = NULL;
        err = push_string(&t->keys, &t->ncols, key);
        if (err < 0)
                return err;
        return (int) t->ncols - 1;
}

/* Store @v (already owning its string) in cell @key of the last row. */
static int put(kdl_table *t, const char *key, kdl_cell v)
{
        int j;

        if (t->nrows == 0) {
                if (v.type == KDL_CELL_STR)
                        free(v.v.s);
                return kdl_error(-KDL_ERANGE, "table '%s': no row to put '%s' in", t->name, key);
        }
        j = column(t, key);
        if (j < 0) {
                if (v.type == KDL_CELL_STR)
                        free(v.v.s);
                return j;
        }
        cell_clear(&t->rows[t->nrows - 1][j]);
        t->rows[t->nrows - 1][j] = v;
        return 0;
}

int kdl_table_put_str(kdl_table *t, const char *key, const char *v)
{
        kdl_cell c = {.type = KDL_CELL_STR, .v.s = kdl__strdup(v)};

        return c.v.s ? put(t, key, c) : -ENOMEM;
}

int kdl_table_putf(kdl_table *t, const char *key, const char *fmt, ...)
{
        kdl_cell c = {.type = KDL_CELL_STR};
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vasprintf(&c.v.s, fmt, ap);
        va_end(ap);
        if (n < 0)
                return kdl_error(-ENOMEM, "out of memory");
        return put(t, key, c);
}

int kdl_table_put_int(kdl_table *t, const char *key, long long v)
{
        return put(t, key, (kdl_cell){.type = KDL_CELL_INT, .v.i = v});
}

int kdl_table_put_real(kdl_table *t, const char *key, double v)
{
        return put(t, key, (kdl_cell){.type = KDL_CELL_REAL, .v.r = v});
}

int kdl_table_put_bool(kdl_table *t, const char *key, bool v)
{
        return put(t, key, (kdl_cell){.type = KDL_CELL_BOOL, .v.b = v});
}

int kdl_table_set_label(kdl_table *t, const char *key, const char *label)
{
        int j = column(t, key);
        char *copy;

        if (j < 0)
                return j;
        copy = kdl__strdup(label);
        if (!copy)
                return -ENOMEM;
        free(t->labels[j]);
        t->labels[j] = copy;
        return 0;
}

const char *kdl_table_name(const kdl_table *t)
{
        return t->name;
}

const char *kdl_table_title(const kdl_table *t)
{
        return t->title;
}

size_t kdl_table_rows(const kdl_table *t)
{
        return t->nrows;
}

size_t kdl_table_cols(const kdl_table *t)
{
        return t->ncols;
}

const char *kdl_table_key(const kdl_table *t, size_t col)
{
        assert(col < t->ncols);
        return t->keys[col];
}

const kdl_cell *kdl_table_cell(const kdl_table *t, size_t row, size_t col)
{
        static const kdl_cell empty = {.type = KDL_CELL_EMPTY};

        assert(row < t->nrows && col < t->ncols);
        if (col >= t->cap_cols)
                return &empty;
        return &t->rows[row][col];
}

/* ---- rendering ---------------------------------------------------------------- */

/* Human text of a cell (terminal, Markdown, LaTeX): 6 significant digits. */
static char *cell_text(const kdl_cell *c)
{
        switch (c->type) {
        case KDL_CELL_STR:
                return kdl__strdup(c->v.s);
        case KDL_CELL_INT:
                return kdl__asprintf("%lld", c->v.i);
        case KDL_CELL_REAL:
                if (isnan(c->v.r))
                        return kdl__strdup("nan");
                if (isinf(c->v.r))
                        return kdl__strdup(c->v.r > 0 ? "inf" : "-inf");
                return kdl__asprintf("%.6g", c->v.r);
        case KDL_CELL_BOOL:
                return kdl__strdup(c->v.b ? "yes" : "no");
        case KDL_CELL_EMPTY:
        default:
                return kdl__strdup("-");
        }
}

static const char *label(const kdl_table *t, size_t j)
{
        return t->labels[j] ? t->labels[j] : t->keys[j];
}

static bool numeric(const kdl_cell *c)
{
        return c->type == KDL_CELL_INT || c->type == KDL_CELL_REAL;
}

/* Text of every cell, so widths can be measured; NULL on ENOMEM. */
static char **all_texts(const kdl_table *t)
{
        size_t n = t->nrows * t->ncols;
        char **txt = kdl_new(char *, n ? n : 1);

        if (!txt)
                return NULL;
        for (size_t i = 0; i < t->nrows; i++)
                for (size_t j = 0; j < t->ncols; j++) {
                        txt[i * t->ncols + j] = cell_text(kdl_table_cell(t, i, j));
                        if (!txt[i * t->ncols + j]) {
                                for (size_t k = 0; k < i * t->ncols + j; k++)
                                        free(txt[k]);
                                free(txt);
                                return NULL;
                        }
                }
        return txt;
}

static void free_texts(const kdl_table *t, char **txt)
{
        for (size_t k = 0; k < t->nrows * t->ncols; k++)
                free(txt[k]);
        free(txt);
}

/* printf width of column @j: right-aligned numbers, left-aligned text, and
 * no trailing blanks after a left-aligned last column. */
static int pad(const kdl_table *t, const size_t *w, const bool *right, size_t j)
{
        if (right[j])
                return (int) w[j];
        return j + 1 == t->ncols ? 0 : -(int) w[j];
}

static int write_terminal(const kdl_table *t, FILE *out, bool markdown)
{
        char **txt = all_texts(t);
        size_t *w = kdl_new(size_t, t->ncols ? t->ncols : 1);
        bool *right = kdl_new(bool, t->ncols ? t->ncols : 1);

        if (!txt || !w || !right) {
                free(w);
                free(right);
                if (txt)
                        free_texts(t, txt);
                return -ENOMEM;
        }
        for (size_t j = 0; j < t->ncols; j++) {
                w[j] = strlen(label(t, j));
                right[j] = true;
                for (size_t i = 0; i < t->nrows; i++) {
                        size_t l = strlen(txt[i * t->ncols + j]);
                        const kdl_cell *c = kdl_table_cell(t, i, j);

                        if (l > w[j])
                                w[j] = l;
                        if (!numeric(c) && c->type != KDL_CELL_EMPTY)
                                right[j] = false;
                }
        }
        if (markdown) {
                fprintf(out, "### %s\n\n|", t->title);
                for (size_t j = 0; j < t->ncols; j++)
                        fprintf(out, " %-*s |", (int) w[j], label(t, j));
                fputs("\n|", out);
                for (size_t j = 0; j < t->ncols; j++) {
                        fputc(right[j] ? '-' : ':', out);
                        for (size_t k = 0; k < w[j]; k++)
                                fputc('-', out);
                        fputs(right[j] ? ":|" : "-|", out);
                }
                fputc('\n', out);
        } else {
                size_t total = 0;

                fprintf(out, "%s\n", t->title);
                for (size_t j = 0; j < t->ncols; j++) {
                        fprintf(out, j ? "  %*s" : "%*s", pad(t, w, right, j), label(t, j));
                        total += w[j] + (j ? 2 : 0);
                }
                fputc('\n', out);
                for (size_t k = 0; k < total; k++)
                        fputc('-', out);
                fputc('\n', out);
        }
        for (size_t i = 0; i < t->nrows; i++) {
                if (markdown)
                        fputc('|', out);
                for (size_t j = 0; j < t->ncols; j++) {
                        const char *s = txt[i * t->ncols + j];

                        if (markdown)
                                fprintf(out, " %*s |", right[j] ? (int) w[j] : -(int) w[j], s);
                        else
                                fprintf(out, j ? "  %*s" : "%*s", pad(t, w, right, j), s);
                }
                fputc('\n', out);
        }
        free_texts(t, txt);
        free(w);
        free(right);
        return 0;
}

static void csv_string(FILE *out, const char *s)
{
        if (!strpbrk(s, ",\"\n\r")) {
                fputs(s, out);
                return;
        }
        fputc('"', out);
        for (; *s; s++) {
                if (*s == '"')
                        fputc('"', out);
                fputc(*s, out);
        }
        fputc('"', out);
}

/* Exact numbers for machines: %.17g round-trips a double. */
static void exact_number(FILE *out, const kdl_cell *c, const char *nonfinite)
{
        if (c->type == KDL_CELL_INT)
                fprintf(out, "%lld", c->v.i);
        else if (!isfinite(c->v.r))
                fputs(nonfinite       ? nonfinite
                      : isnan(c->v.r) ? "nan"
                      : c->v.r > 0    ? "inf"
                                      : "-inf",
                      out);
        else
                fprintf(out, "%.17g", c->v.r);
}

static int write_csv(const kdl_table *t, FILE *out)
{
        for (size_t j = 0; j < t->ncols; j++) {
                if (j)
                        fputc(',', out);
                csv_string(out, t->keys[j]);
        }
        fputc('\n', out);
        for (size_t i = 0; i < t->nrows; i++) {
                for (size_t j = 0; j < t->ncols; j++) {
                        const kdl_cell *c = kdl_table_cell(t, i, j);

                        if (j)
                                fputc(',', out);
                        if (numeric(c))
                                exact_number(out, c, NULL);
                        else if (c->type == KDL_CELL_STR)
                                csv_string(out, c->v.s);
                        else if (c->type == KDL_CELL_BOOL)
                                fputs(c->v.b ? "true" : "false", out);
                }
                fputc('\n', out);
        }
        return 0;
}

static void tex_string(FILE *out, const char *s)
{
        for (; *s; s++) {
                switch (*s) {
                case '&':
                case '%':
                case '$':
                case '#':
                case '_':
                case '{':
                case '}':
                        fputc('\\', out);
                        fputc(*s, out);
                        break;
                case '~':
                        fputs("\\textasciitilde{}", out);
                        break;
                case '^':
                        fputs("\\textasciicircum{}", out);
                        break;
                case '\\':
                        fputs("\\textbackslash{}", out);
                        break;
                default:
                        fputc(*s, out);
                }
        }
}

static int write_tex(const kdl_table *t, FILE *out)
{
        char **txt = all_texts(t);

        if (!txt)
                return -ENOMEM;
        fputs("% ", out);
        fputs(t->title, out);
        fputs(" (kdlens " KDL_VERSION "; needs \\usepackage{booktabs})\n\\begin{tabular}{", out);
        for (size_t j = 0; j < t->ncols; j++) {
                bool right = true;

                for (size_t i = 0; i < t->nrows; i++) {
                        const kdl_cell *c = kdl_table_cell(t, i, j);

                        if (!numeric(c) && c->type != KDL_CELL_EMPTY)
                                right = false;
                }
                fputc(right ? 'r' : 'l', out);
        }
        fputs("}\n\\toprule\n", out);
        for (size_t j = 0; j < t->ncols; j++) {
                if (j)
                        fputs(" & ", out);
                tex_string(out, label(t, j));
        }
        fputs(" \\\\\n\\midrule\n", out);
        for (size_t i = 0; i < t->nrows; i++) {
                for (size_t j = 0; j < t->ncols; j++) {
                        if (j)
                                fputs(" & ", out);
                        tex_string(out, txt[i * t->ncols + j]);
                }
                fputs(" \\\\\n", out);
        }
        fputs("\\bottomrule\n\\end{tabular}\n", out);
        free_texts(t, txt);
        return 0;
}

static void json_string(FILE *out, const char *s)
{
        fputc('"', out);
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                switch (*p) {
                case '"':
                        fputs("\\\"", out);
                        break;
                case '\\':
                        fputs("\\\\", out);
                        break;
                case '\n':
                        fputs("\\n", out);
                        break;
                case '\t':
                        fputs("\\t", out);
                        break;
                case '\r':
                        fputs("\\r", out);
                        break;
                default:
                        if (*p < 0x20)
                                fprintf(out, "\\u%04x", *p);
                        else
                                fputc(*p, out);
                }
        }
        fputc('"', out);
}

static void json_records(const kdl_table *t, FILE *out, bool *first)
{
        for (size_t i = 0; i < t->nrows; i++) {
                fputs(*first ? "\n    {" : ",\n    {", out);
                *first = false;
                fputs("\"table\": ", out);
                json_string(out, t->name);
                for (size_t j = 0; j < t->ncols; j++) {
                        const kdl_cell *c = kdl_table_cell(t, i, j);

                        if (c->type == KDL_CELL_EMPTY)
                                continue;
                        fputs(", ", out);
                        json_string(out, t->keys[j]);
                        fputs(": ", out);
                        if (numeric(c))
                                exact_number(out, c, "null");
                        else if (c->type == KDL_CELL_STR)
                                json_string(out, c->v.s);
                        else
                                fputs(c->v.b ? "true" : "false", out);
                }
                fputc('}', out);
        }
}

static void html_escape(FILE *out, const char *s)
{
        for (; *s; s++) {
                if (*s == '<')
                        fputs("&lt;", out);
                else if (*s == '>')
                        fputs("&gt;", out);
                else if (*s == '&')
                        fputs("&amp;", out);
                else
                        fputc(*s, out);
        }
}

int kdl__table_write_html(const kdl_table *t, FILE *out)
{
        char **txt = all_texts(t);

        if (!txt)
                return -ENOMEM;
        fputs("<table>\n<thead><tr>", out);
        for (size_t j = 0; j < t->ncols; j++) {
                bool num = true;

                for (size_t i = 0; i < t->nrows; i++) {
                        const kdl_cell *c = kdl_table_cell(t, i, j);

                        if (!numeric(c) && c->type != KDL_CELL_EMPTY)
                                num = false;
                }
                fputs(num ? "<th>" : "<th class=\"t\">", out);
                html_escape(out, label(t, j));
                fputs("</th>", out);
        }
        fputs("</tr></thead>\n<tbody>\n", out);
        for (size_t i = 0; i < t->nrows; i++) {
                fputs("<tr>", out);
                for (size_t j = 0; j < t->ncols; j++) {
                        const kdl_cell *c = kdl_table_cell(t, i, j);

                        fputs(numeric(c) || c->type == KDL_CELL_EMPTY ? "<td>" : "<td class=\"t\">",
                              out);
                        html_escape(out, txt[i * t->ncols + j]);
                        fputs("</td>", out);
                }
                fputs("</tr>\n", out);
        }
        fputs("</tbody>\n</table>\n", out);
        free_texts(t, txt);
        return ferror(out) ? kdl_error(-EIO, "cannot write the table '%s'", t->name) : 0;
}

int kdl_table_write(const kdl_table *t, FILE *out, enum kdl_format format)
{
        int err = 0;

        switch (format) {
        case KDL_FORMAT_TABLE:
                err = write_terminal(t, out, false);
                break;
        case KDL_FORMAT_MD:
                err = write_terminal(t, out, true);
                break;
        case KDL_FORMAT_CSV:
                err = write_csv(t, out);
                break;
        case KDL_FORMAT_TEX:
                err = write_tex(t, out);
                break;
        case KDL_FORMAT_JSON: {
                bool first = true;

                fputc('[', out);
                json_records(t, out, &first);
                fputs("\n]\n", out);
                break;
        }
        default:
                assert(!"unknown format");
        }
        if (err < 0)
                return err;
        if (ferror(out))
                return kdl_error(-EIO, "cannot write the table '%s'", t->name);
        return 0;
}

/* ---- documents ---------------------------------------------------------------- */

int kdl_doc_new(const char *command, kdl_doc **ret)
{
        kdl_doc *d = kdl_new(kdl_doc, 1);

        if (!d)
                return -ENOMEM;
        d->command = kdl__strdup(command);
        if (!d->command) {
                free(d);
                return -ENOMEM;
        }
        *ret = d;
        return 0;
}

void kdl_doc_free(kdl_doc *d)
{
        if (!d)
                return;
        for (size_t k = 0; k < d->ninputs; k++)
                free(d->inputs[k]);
        for (size_t k = 0; k < d->nnotes; k++)
                free(d->notes[k]);
        for (size_t k = 0; k < d->ntables; k++)
                kdl_table_free(d->tables[k]);
        free(d->inputs);
        free(d->notes);
        free(d->tables);
        free(d->command);
        free(d);
}

int kdl_doc_add_input(kdl_doc *d, const char *path)
{
        return push_string(&d->inputs, &d->ninputs, path);
}

int kdl_doc_add_note(kdl_doc *d, const char *fmt, ...)
{
        va_list ap;
        char *s;
        int n, err;

        va_start(ap, fmt);
        n = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (n < 0)
                return kdl_error(-ENOMEM, "out of memory");
        err = push_string(&d->notes, &d->nnotes, s);
        free(s);
        return err;
}

int kdl_doc_add_table(kdl_doc *d, kdl_table *t)
{
        kdl_table **grown = realloc(d->tables, (d->ntables + 1) * sizeof(*grown));

        if (!grown) {
                kdl_table_free(t);
                return kdl_error(-ENOMEM, "out of memory");
        }
        d->tables = grown;
        d->tables[d->ntables++] = t;
        return 0;
}

size_t kdl_doc_ntables(const kdl_doc *d)
{
        return d->ntables;
}

kdl_table *kdl_doc_table(const kdl_doc *d, size_t k)
{
        assert(k < d->ntables);
        return d->tables[k];
}

kdl_table *kdl_doc_find_table(const kdl_doc *d, const char *name)
{
        for (size_t k = 0; k < d->ntables; k++)
                if (strcmp(d->tables[k]->name, name) == 0)
                        return d->tables[k];
        return NULL;
}

static void json_string_array(FILE *out, char *const *v, size_t n)
{
        fputc('[', out);
        for (size_t k = 0; k < n; k++) {
                if (k)
                        fputs(", ", out);
                json_string(out, v[k]);
        }
        fputc(']', out);
}

int kdl_doc_write(const kdl_doc *d, FILE *out, enum kdl_format format)
{
        int err;

        if (format == KDL_FORMAT_JSON) {
                bool first = true;

                fputs("{\n  \"kdlens\": \"" KDL_VERSION "\",\n  \"command\": ", out);
                json_string(out, d->command);
                fputs(",\n  \"inputs\": ", out);
                json_string_array(out, d->inputs, d->ninputs);
                fputs(",\n  \"notes\": ", out);
                json_string_array(out, d->notes, d->nnotes);
                fputs(",\n  \"results\": [", out);
                for (size_t k = 0; k < d->ntables; k++)
                        json_records(d->tables[k], out, &first);
                fputs(first ? "]\n}\n" : "\n  ]\n}\n", out);
        } else {
                for (size_t k = 0; k < d->ntables; k++) {
                        if (k)
                                fputc('\n', out);
                        if (format == KDL_FORMAT_CSV && d->ntables > 1)
                                fprintf(out, "# %s\n", d->tables[k]->name);
                        err = kdl_table_write(d->tables[k], out, format);
                        if (err < 0)
                                return err;
                }
                if (d->nnotes && format != KDL_FORMAT_CSV) {
                        const char *lead = format == KDL_FORMAT_TEX ? "% " : "";

                        fputc('\n', out);
                        for (size_t k = 0; k < d->nnotes; k++)
                                fprintf(out, "%s%s%s\n", lead, format == KDL_FORMAT_MD ? "- " : "",
                                        d->notes[k]);
                }
        }
        if (ferror(out))
                return kdl_error(-EIO, "cannot write the output");
        return 0;
}
