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

/*
 * loadtest_pick_relay (cmd_control.c): the relay to load, from the relay list
 * at |api_url| (the one with id |relay_id|, or the first when NULL), or
 * without a list the relay at |addr| with peer id |peer_id|. 0, or -1 after
 * a sentence on stderr starting with |cmd|.
 */
struct pos_p2p_relay_info;
int loadtest_pick_relay(const char *cmd, const char *api_url, const char *relay_id,
                        const char *addr, const char *peer_id, struct pos_p2p_relay_info *out);

#endif
