/* SPDX-License-Identifier: MIT */
/* The parsers of numeric option values shared by the verbs (cli.h). */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/cli/cli.h"
#include "metrics/base/banned.h"

int kdl_cli_parse_real(struct kdl_cli *cli, const char *what, const char *arg, double lo, double hi,
                       double *ret)
{
        char *end;
        double v = strtod(arg, &end);

        if (end == arg || *end || !isfinite(v) || !(v >= lo && v <= hi)) {
                if (hi >= DBL_MAX)
                        return kdl_cli_usage(cli, "%s: expected a finite number >= %g, found '%s'",
                                             what, lo, arg);
                return kdl_cli_usage(cli, "%s: expected a number in [%g, %g], found '%s'", what, lo,
                                     hi, arg);
        }
        *ret = v;
        return 0;
}

int kdl_cli_parse_uint(struct kdl_cli *cli, const char *what, const char *arg, uint64_t min,
                       uint64_t max, uint64_t *ret)
{
        unsigned long long v;
        char *end;

        errno = 0;
        v = strtoull(arg, &end, 10);
        if (end == arg || *end || errno || arg[0] == '-' || v < min || v > max)
                return kdl_cli_usage(cli,
                                     "%s: expected a whole number from %llu to %llu, found "
                                     "'%s'",
                                     what, (unsigned long long) min, (unsigned long long) max, arg);
        *ret = v;
        return 0;
}

int kdl_cli_parse_size(struct kdl_cli *cli, const char *what, const char *arg, size_t min,
                       size_t max, size_t *ret)
{
        uint64_t v;
        int r = kdl_cli_parse_uint(cli, what, arg, min, max, &v);

        if (r == 0)
                *ret = (size_t) v;
        return r;
}

int kdl_cli_parse_count(struct kdl_cli *cli, const char *what, const char *arg, size_t *ret)
{
        return kdl_cli_parse_size(cli, what, arg, 1, SIZE_MAX, ret);
}

int kdl_cli_parse_sequences(struct kdl_cli *cli, const char *arg, bool *ret_on, size_t *ret_per)
{
        *ret_on = true;
        if (strcmp(arg, "whole") == 0) {
                *ret_per = 0;
                return 0;
        }
        return kdl_cli_parse_size(cli, "--sequences", arg, 1, 46340, ret_per);
}
