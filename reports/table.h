/* SPDX-License-Identifier: MIT */
#ifndef KDL_REPORTS_TABLE_H
#define KDL_REPORTS_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "metrics/base/error.h"

/*
 * One table model, many renderings (DESIGN.md): an aligned terminal table,
 * Markdown, CSV, LaTeX (booktabs) and a stable JSON document.  A table is a
 * list of rows of named cells; columns appear in the order their keys are
 * first used.  A document groups the tables one command produces with the
 * command line and its inputs.
 */

enum kdl_format {
        KDL_FORMAT_TABLE,
        KDL_FORMAT_MD,
        KDL_FORMAT_CSV,
        KDL_FORMAT_TEX,
        KDL_FORMAT_JSON,
        KDL_FORMAT_COUNT_
};

/** kdl_format_parse() - the format named @s ("table", "md", "csv", "tex", "json"). */
KDL_API int kdl_format_parse(const char *s, enum kdl_format *ret);

/** kdl_format_name() - the name of @f. */
KDL_API const char *kdl_format_name(enum kdl_format f);

enum kdl_cell_type { KDL_CELL_EMPTY, KDL_CELL_STR, KDL_CELL_INT, KDL_CELL_REAL, KDL_CELL_BOOL };

typedef struct kdl_cell {
        enum kdl_cell_type type;
        union {
                char *s;
                long long i;
                double r;
                bool b;
        } v;
} kdl_cell;

typedef struct kdl_table kdl_table;

/**
 * kdl_table_new() - an empty table.
 * @name:  machine name, the "table" key of its JSON records (borrowed, copied).
 * @title: human title for terminal, Markdown and LaTeX (borrowed, copied).
 * @ret:   caller frees with kdl_table_free().
 * Return: 0; -ENOMEM.
 */
KDL_API int kdl_table_new(const char *name, const char *title, kdl_table **ret);

/** kdl_table_free() - free @t.  NULL is a no-op. */
KDL_API void kdl_table_free(kdl_table *t);

/**
 * kdl_table_add_row() - append an empty row; later kdl_table_put_*() calls fill it.
 * Return: the new row's index; -ENOMEM.
 */
KDL_API int kdl_table_add_row(kdl_table *t);

/*
 * kdl_table_put_*() - set cell @key of the last row (adding the column the
 * first time @key is used).  Strings are copied.  A NaN or Inf real is kept
 * as such: terminal formats print it, JSON writes null.
 * Return: 0; -ENOMEM; -KDL_ERANGE when the table has no row yet.
 */
KDL_API int kdl_table_put_str(kdl_table *t, const char *key, const char *v);
KDL_API int kdl_table_put_int(kdl_table *t, const char *key, long long v);
KDL_API int kdl_table_put_real(kdl_table *t, const char *key, double v);
KDL_API int kdl_table_put_bool(kdl_table *t, const char *key, bool v);

/** kdl_table_putf() - kdl_table_put_str() of a formatted string. */
KDL_API int kdl_table_putf(kdl_table *t, const char *key, const char *fmt, ...) KDL_PRINTF(3, 4);

/**
 * kdl_table_set_label() - a human label (with unit) for column @key in the
 * terminal, Markdown, LaTeX and HTML renderings (CSV and JSON keep the key).
 * The column is added when @key is new.  @label is copied.
 * Return: 0; -ENOMEM.
 */
KDL_API int kdl_table_set_label(kdl_table *t, const char *key, const char *label);

KDL_API const char *kdl_table_name(const kdl_table *t);
KDL_API const char *kdl_table_title(const kdl_table *t);
KDL_API size_t kdl_table_rows(const kdl_table *t);
KDL_API size_t kdl_table_cols(const kdl_table *t);
KDL_API const char *kdl_table_key(const kdl_table *t, size_t col);

/** kdl_table_cell() - cell (@row, @col); an EMPTY cell when never set.  Borrowed. */
KDL_API const kdl_cell *kdl_table_cell(const kdl_table *t, size_t row, size_t col);

/** kdl_table_find() - the column of @key, or -1. */
KDL_API int kdl_table_find(const kdl_table *t, const char *key);

/* Keys kdl_table_find_row() can match at once. */
#define KDL_TABLE_FIND_MAX_KEYS 8

/**
 * kdl_table_find_row() - the first row at or after @from whose string cells
 * @keys[k] equal @values[k] for every k < @n.
 * @keys, @values: @n strings each (at most KDL_TABLE_FIND_MAX_KEYS), borrowed.
 *
 * A key the table lacks, or a cell that is empty or not a string, matches no
 * value.  Every match in turn:
 *   for (int i = kdl_table_find_row(t, 0, ...); i >= 0;
 *        i = kdl_table_find_row(t, (size_t) i + 1, ...))
 *
 * Return: the row's index; -1 when no row from @from on matches.
 */
KDL_API int kdl_table_find_row(const kdl_table *t, size_t from, size_t n, const char *const *keys,
                               const char *const *values);

/* ---- documents -------------------------------------------------------- */

typedef struct kdl_doc kdl_doc;

/**
 * kdl_doc_new() - a document for one run of @command (e.g. "kl").
 * @ret: caller frees with kdl_doc_free().
 */
KDL_API int kdl_doc_new(const char *command, kdl_doc **ret);

/** kdl_doc_free() - free @d and every table it holds.  NULL is a no-op. */
KDL_API void kdl_doc_free(kdl_doc *d);

/** kdl_doc_add_input() - record an input file (copied). */
KDL_API int kdl_doc_add_input(kdl_doc *d, const char *path);

/** kdl_doc_add_note() - a one-line note printed under the tables and kept in JSON "notes". */
KDL_API int kdl_doc_add_note(kdl_doc *d, const char *fmt, ...) KDL_PRINTF(2, 3);

/** kdl_doc_add_table() - append @t; takes ownership (also on failure). */
KDL_API int kdl_doc_add_table(kdl_doc *d, kdl_table *t);

KDL_API size_t kdl_doc_ntables(const kdl_doc *d);
KDL_API kdl_table *kdl_doc_table(const kdl_doc *d, size_t k);

/** kdl_doc_find_table() - the table called @name, or NULL.  Borrowed. */
KDL_API kdl_table *kdl_doc_find_table(const kdl_doc *d, const char *name);

/**
 * kdl_doc_write() - render @d to @out in @format.
 *
 * JSON: {"kdlens": version, "command": ..., "inputs": [...], "notes": [...],
 * "results": [{"table": name, key: value, ...}, ...]}; reals with %.17g.
 * CSV: each table preceded by "# name" when there is more than one (a
 * stream no CSV reader takes as one table: kdl_doc_write_only() and
 * kdl_doc_write_csv_dir() give one table each).
 * Return: 0; -EIO when writing fails.
 */
KDL_API int kdl_doc_write(const kdl_doc *d, FILE *out, enum kdl_format format);

/**
 * kdl_doc_write_only() - kdl_doc_write() of the table called @table alone
 * (with the document's notes, and for JSON its wrapper): CSV is then one
 * table with its header line and nothing else.
 * Return: 0; -KDL_EUSAGE when @d has no table @table (the message lists
 * those it has); -EIO when writing fails.
 */
KDL_API int kdl_doc_write_only(const kdl_doc *d, const char *table, FILE *out,
                               enum kdl_format format);

/**
 * kdl_doc_write_csv_dir() - every table of @d (or only the one called @only,
 * when not NULL) as the CSV file @dir/NAME.csv, NAME the table's name; @dir
 * is created when missing (not its parents).  Each file is written under a
 * temporary name and renamed into place, and never replaces an input of @d
 * (kdl_out_check(): an input, a symbolic link, a FIFO or a directory there
 * is refused).  The notes are not written.
 * Return: 0; -KDL_EUSAGE when @dir is not a directory, a file would replace
 * an input or what is not a regular file, or @d has no table @only; -errno
 * when a file cannot be made; -EIO; -ENOMEM.
 */
KDL_API int kdl_doc_write_csv_dir(const kdl_doc *d, const char *dir, const char *only);

/** kdl_table_write() - render one table (no document wrapper for JSON: an array). */
KDL_API int kdl_table_write(const kdl_table *t, FILE *out, enum kdl_format format);

#endif
