/* SPDX-License-Identifier: MIT */
#include <stdio.h>

#include "metrics/base/error.h"
#include "analysis/cli/cli.h"
#include "analysis/dist.h"

int main(int argc, char **argv)
{
        FILE *quiet = NULL;
        int rc;

        /* Under mpirun: rank 0 writes, the others are silent (docs/mpi.md). */
        if (kdl__dist_init(&argc, &argv) < 0) {
                fprintf(stderr, "kdlens: %s\n", kdl_errmsg());
                return 1;
        }
        if (kdl__dist_rank() != 0 && !(quiet = fopen("/dev/null", "w")))
                return kdl__dist_finish(1);
        rc = kdl_cli_run(argc, argv, quiet ? quiet : stdout, quiet ? quiet : stderr);
        if (quiet)
                fclose(quiet);
        return kdl__dist_finish(rc);
}
