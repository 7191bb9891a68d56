/* Placeholder until this subcommand lands. */
#include <stdio.h>

#include "cli.h"

int cmd_id(int argc, char **argv)
{
    (void)argc;
    fprintf(stderr, "pos-p2p %s: not implemented yet\n", argv[0]);
    return 2;
}
