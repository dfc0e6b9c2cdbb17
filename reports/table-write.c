/* SPDX-License-Identifier: MIT */
/* The five renderings of a table and a document: terminal, Markdown, CSV,
 * LaTeX and JSON (and the HTML table the report's pages use). */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kdl-config.h"
#include "metrics/base/alloc.h"
#include "reports/table.h"
#include "reports/table-internal.h"
#include "metrics/base/banned.h"

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

/* Right-align column @j: every cell of it is a number (or empty). */
static bool numeric_column(const kdl_table *t, size_t j)
{
        for (size_t i = 0; i < t->nrows; i++) {
                const kdl_cell *c = kdl_table_cell(t, i, j);

                if (!numeric(c) && c->type != KDL_CELL_EMPTY)
                        return false;
        }
        return true;
}

static void header_markdown(const kdl_table *t, FILE *out, const size_t *w, const bool *right)
{
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
}

static void header_terminal(const kdl_table *t, FILE *out, const size_t *w, const bool *right)
{
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

/* The aligned terminal table, or Markdown's pipe table when @markdown. */
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
                right[j] = numeric_column(t, j);
                for (size_t i = 0; i < t->nrows; i++) {
                        size_t l = strlen(txt[i * t->ncols + j]);

                        if (l > w[j])
                                w[j] = l;
                }
        }
        if (markdown)
                header_markdown(t, out, w, right);
        else
                header_terminal(t, out, w, right);
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
        for (size_t j = 0; j < t->ncols; j++)
                fputc(numeric_column(t, j) ? 'r' : 'l', out);
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
                fputs(numeric_column(t, j) ? "<th>" : "<th class=\"t\">", out);
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

/* @d in @format, every table or only @only (NULL: every one). */
static int doc_write(const kdl_doc *d, const kdl_table *only, FILE *out, enum kdl_format format)
{
        size_t n = only ? 1 : d->ntables;
        kdl_table *const *tables = only ? (kdl_table *const *) &only : d->tables;
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
                for (size_t k = 0; k < n; k++)
                        json_records(tables[k], out, &first);
                fputs(first ? "]\n}\n" : "\n  ]\n}\n", out);
        } else {
                for (size_t k = 0; k < n; k++) {
                        if (k)
                                fputc('\n', out);
                        if (format == KDL_FORMAT_CSV && n > 1)
                                fprintf(out, "# %s\n", tables[k]->name);
                        err = kdl_table_write(tables[k], out, format);
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

int kdl_doc_write(const kdl_doc *d, FILE *out, enum kdl_format format)
{
        return doc_write(d, NULL, out, format);
}

int kdl_doc_write_only(const kdl_doc *d, const char *table, FILE *out, enum kdl_format format)
{
        const kdl_table *t = kdl_doc_find_table(d, table);

        if (!t)
                return kdl__doc_no_table(d, table);
        return doc_write(d, t, out, format);
}
