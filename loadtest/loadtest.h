/* The subcommands of pos-loadtest, each in its own file; argv[0] is the subcommand's name. */
#ifndef POS_LOADTEST_H
#define POS_LOADTEST_H

struct loadtest_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
};

int cmd_control(int argc, char **argv); /* cmd_control.c: relay control-plane load */
int cmd_relay(int argc, char **argv);   /* cmd_relay.c: data-plane load through circuits */
int cmd_idle(int argc, char **argv);    /* cmd_idle.c: idle (parked) clients at scale */

#endif
