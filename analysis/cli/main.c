/* SPDX-License-Identifier: MIT */
#include "analysis/cli/cli.h"

int main(int argc, char **argv)
{
        return kdl_cli_run(argc, argv, stdout, stderr);
}
