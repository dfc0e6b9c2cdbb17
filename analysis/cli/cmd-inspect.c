/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <string.h>

#include "analysis/cli/cli.h"
#include "analysis/inspect.h"
#include "metrics/base/banned.h"

int cmd_inspect(int argc, char **argv, struct kdl_cli *cli)
{
        static const struct option longopts[] = {
                {"quick", no_argument, NULL, 'Q'},        {"join", required_argument, NULL, 'J'},
                {"format", required_argument, NULL, 'f'}, {"memory", required_argument, NULL, 'M'},
                {"table", required_argument, NULL, 'T'},  {"output", required_argument, NULL, 'o'},
                {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
        };
        struct kdl_run_inspect_opts o;
        enum kdl_format format = kdl_cli_default_format(cli);
        const char *table = NULL, *dir = NULL;
        bool format_given = false;
        kdl_doc *doc = NULL;
        size_t nprob = 0;
        int c, err, status;

        kdl_run_inspect_opts_init(&o);
        while ((c = getopt_long(argc, argv, ":hf:o:", longopts, NULL)) != -1) {
                switch (c) {
                case 'Q':
                        o.scan_values = false;
                        break;
                case 'J':
                        if (kdl_join_parse(optarg, &o.join) < 0)
                                return kdl_cli_usage(cli, "%s", kdl_errmsg());
                        break;
                case 'f':
                        if (kdl_format_parse(optarg, &format) < 0)
                                return kdl_cli_usage(cli, "%s", kdl_errmsg());
                        format_given = true;
                        break;
                case 'T':
                        table = optarg;
                        break;
                case 'o':
                        dir = optarg;
                        break;
                case 'M':
                        status = kdl_cli_parse_memory(cli, optarg, &o.memory);
                        if (status)
                                return status;
                        break;
                case 'h':
                        return kdl_cli_help(cli);
                default:
                        return kdl_cli_bad_option(cli, c, argv, longopts);
                }
        }
        status = kdl_cli_output_check(cli, &format, format_given, table, dir);
        status = status ?: kdl_cli_positional(cli, argc - optind);
        if (status)
                return status;

        err = kdl_doc_new("inspect", &doc);
        if (err == 0)
                err = kdl_run_inspect((const char *const *) argv + optind, (size_t) (argc - optind),
                                      &o, doc, &nprob);
        if (err < 0) {
                kdl_doc_free(doc);
                return kdl_cli_fail(cli, err);
        }
        status = kdl_cli_write_doc(cli, doc, format, table, dir);
        if (nprob) {
                kdl_table *p = kdl_doc_find_table(doc, "problems");

                for (size_t i = 0; p && i < kdl_table_rows(p); i++)
                        fprintf(cli->err, "kdlens inspect: %s\n",
                                kdl_table_cell(p, i, (size_t) kdl_table_find(p, "problem"))->v.s);
                status = KDL_EXIT_FAILURE;
        }
        kdl_doc_free(doc);
        return status;
}
