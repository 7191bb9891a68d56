/* The subcommands of pos-p2p, each in its own file. argv[0] is the subcommand's name. */
#ifndef POS_P2P_CLI_H
#define POS_P2P_CLI_H

struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
};

int cmd_id(int argc, char **argv);        /* cmd_id.c */
int cmd_relays(int argc, char **argv);    /* cmd_relays.c */
int cmd_advertise(int argc, char **argv); /* cmd_mdns.c */
int cmd_discover(int argc, char **argv);  /* cmd_mdns.c */
int cmd_contact(int argc, char **argv);   /* cmd_contact.c */

#endif
