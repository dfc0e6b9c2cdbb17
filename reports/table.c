/* SPDX-License-Identifier: MIT */
/* The table model: tables of rows of named cells, and documents of tables.
 * Their renderings are in table-write.c. */
#include <assert.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "reports/table.h"
#include "reports/table-internal.h"
#include "metrics/base/banned.h"

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

int kdl_table_find_row(const kdl_table *t, size_t from, size_t n, const char *const *keys,
                       const char *const *values)
{
        size_t col[KDL_TABLE_FIND_MAX_KEYS];

        assert(n <= KDL_TABLE_FIND_MAX_KEYS);
        /* Each key's column once, not once per row. */
        for (size_t k = 0; k < n; k++) {
                int j = kdl_table_find(t, keys[k]);

                if (j < 0)
                        return -1;
                col[k] = (size_t) j;
        }
        for (size_t i = from; i < t->nrows; i++) {
                size_t k = 0;

                while (k < n) {
                        const kdl_cell *c = kdl_table_cell(t, i, col[k]);

                        if (c->type != KDL_CELL_STR || strcmp(c->v.s, values[k]) != 0)
                                break;
                        k++;
                }
                if (k == n)
                        return (int) i;
        }
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
