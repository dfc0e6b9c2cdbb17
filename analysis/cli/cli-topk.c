/* SPDX-License-Identifier: MIT */
/* --topk K1,K2,...: the list of k of kl and report. */
#include <string.h>

#include "analysis/cli/cli.h"
#include "analysis/kl-topk.h"
#include "metrics/base/banned.h"

int kdl_cli_parse_topk(struct kdl_cli *cli, const char *arg, size_t *k, size_t *ret_nk)
{
        char tok[32];
        size_t nk = 0;

        for (const char *p = arg;; p++) {
                const char *end = strchr(p, ',');
                size_t len = end ? (size_t) (end - p) : strlen(p), u;
                int st;

                if (len == 0 || len >= sizeof(tok) || nk == KDL_RUN_MAX_TOPK)
                        return kdl_cli_usage(cli,
                                             "--topk: expected up to %d counts such as 1,8,32, "
                                             "found '%s'",
                                             KDL_RUN_MAX_TOPK, arg);
                memcpy(tok, p, len);
                tok[len] = '\0';
                st = kdl_cli_parse_count(cli, "--topk", tok, &u);
                if (st)
                        return st;
                for (size_t i = 0; i < nk; i++)
                        if (k[i] == u)
                                return kdl_cli_usage(cli, "--topk: %zu given twice in '%s'", u,
                                                     arg);
                k[nk++] = u;
                if (!end)
                        break;
                p = end;
        }
        *ret_nk = nk;
        return 0;
}
