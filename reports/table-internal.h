/* SPDX-License-Identifier: MIT */
#ifndef KDL_REPORTS_TABLE_INTERNAL_H
#define KDL_REPORTS_TABLE_INTERNAL_H

#include <stdio.h>

#include "reports/table.h"

/** kdl__table_write_html() - @t as an HTML <table> (text columns left-aligned, class "t"). */
int kdl__table_write_html(const kdl_table *t, FILE *out);

#endif
