/* SPDX-License-Identifier: MIT */
#ifndef KDL_REPORTS_TABLE_INTERNAL_H
#define KDL_REPORTS_TABLE_INTERNAL_H

#include <stdio.h>

#include "reports/table.h"

/* The model (table.c) and its renderings (table-write.c) share these. */

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

/** kdl__table_write_html() - @t as an HTML <table> (text columns left-aligned, class "t"). */
int kdl__table_write_html(const kdl_table *t, FILE *out);

/**
 * kdl__doc_no_table() - the error for a table @name that @d does not have:
 * -KDL_EUSAGE, the message naming the tables it has.
 */
int kdl__doc_no_table(const kdl_doc *d, const char *name);

#endif
