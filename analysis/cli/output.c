/* SPDX-License-Identifier: MIT */
/* Where a verb's document goes: standard output in a format, one table of it
 * (--table), or one CSV file per table in a directory (-o DIR). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "analysis/cli/cli.h"
#include "analysis/cli/cli-internal.h"
#include "metrics/base/banned.h"

/* The most tables a "did you mean" for --table looks at. */
#define MAX_TABLES 64

int kdl_cli_output_check(struct kdl_cli *cli, enum kdl_format *format, bool format_given,
                         const char *table, const char *dir)
{
        if (dir && format_given && *format != KDL_FORMAT_CSV)
                return kdl_cli_usage(cli,
                                     "-o DIR writes one CSV file per table; for -f %s, leave out "
                                     "-o and redirect standard output",
                                     kdl_format_name(*format));
        if (dir)
                *format = KDL_FORMAT_CSV;
        if (*format == KDL_FORMAT_CSV && !table && !dir)
                return kdl_cli_usage(cli, "-f csv: CSV on standard output is one table: choose it "
                                          "with --table NAME (the tables of each command: "
                                          "docs/README.md#tables-by-command), or write every "
                                          "table, one CSV file each, with -o DIR");
        return 0;
}

/* The usage error of --table @table, which @d does not have: its tables, and
 * the ones @table most resembles. */
static int no_table(struct kdl_cli *cli, const kdl_doc *d, const char *table)
{
        const char *names[MAX_TABLES];
        size_t n = kdl_doc_ntables(d) < MAX_TABLES ? kdl_doc_ntables(d) : MAX_TABLES;
        char hint[256];

        (void) kdl_doc_write_only(d, table, cli->out, KDL_FORMAT_CSV); /* the message */
        for (size_t k = 0; k < n; k++)
                names[k] = kdl_table_name(kdl_doc_table(d, k));
        return kdl_cli_usage(cli, "--table: %s%s", kdl_errmsg(),
                             kdl__cli_did_you_mean(table, "", names, n, hint, sizeof(hint)));
}

int kdl_cli_write_doc(struct kdl_cli *cli, const kdl_doc *d, enum kdl_format format,
                      const char *table, const char *dir)
{
        int err;

        if (table && !kdl_doc_find_table(d, table))
                return no_table(cli, d, table);
        if (dir)
                err = kdl_doc_write_csv_dir(d, dir, table);
        else if (table)
                err = kdl_doc_write_only(d, table, cli->out, format);
        else
                err = kdl_doc_write(d, cli->out, format);
        if (err == 0 && fflush(cli->out) != 0)
                err = kdl_error(-EIO, "cannot write the output");
        return err < 0 ? kdl_cli_fail(cli, err) : KDL_EXIT_OK;
}
