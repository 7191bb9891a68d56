/* The subcommands of pos-p2p, each in its own file. argv[0] is the subcommand's name. */
#ifndef POS_P2P_CLI_H
#define POS_P2P_CLI_H

#include "pos/p2p.h"

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
int cmd_send(int argc, char **argv);      /* cmd_send.c */
int cmd_listen(int argc, char **argv);    /* cmd_listen.c */

/*
 * cli_home_relay (home_relay.c): fetch the list from |api_url|, connect to
 * every relay (only |relay_id| when not NULL), keep the fastest accepted one
 * (its entry in |info|) and close the others. NULL with a message on stderr.
 */
pos_p2p_relay *cli_home_relay(pos_p2p_endpoint *ep, const char *cmd, const char *api_url,
                              const char *token, const char *relay_id, int timeout_ms,
                              pos_p2p_relay_info *info);

/*
 * cli_recheck_home (home_relay.c): like cli_home_relay, but the relay
 * |current_id| (round-trip time |current_rtt|) is not dialed again: it stays
 * home unless another is clearly better. Returns the new home relay, or NULL
 * with |*kept| set when the current one stays (NULL and |*kept| 0: failure).
 */
pos_p2p_relay *cli_recheck_home(pos_p2p_endpoint *ep, const char *cmd, const char *api_url,
                                const char *token, const char *relay_id, const char *current_id,
                                double current_rtt, int timeout_ms, pos_p2p_relay_info *info,
                                int *kept);

/*
 * cli_relay_opt (common_opts.c): stores |arg| of an option send, listen and
 * relays share (|ch| 'a': --api-url, 't': --token, 'i': --identity) into
 * |*api_url|, |*token| or |*identity|. Returns 1 when |ch| was one of them,
 * 0 otherwise (the caller handles it).
 */
int cli_relay_opt(int ch, const char *arg, const char **api_url, const char **token,
                  const char **identity);

/*
 * cli_identity_path (common_opts.c): when |*identity| is NULL, points it at
 * the default identity path written into |path| (|size| bytes, the caller's).
 * Returns 0, or 2 (the exit status) after "pos-p2p CMD: no identity path"
 * on stderr.
 */
int cli_identity_path(const char *cmd, const char **identity, char *path, size_t size);

/*
 * cli_identity_load (common_opts.c): loads the identity in the file
 * |identity|, creating it when missing. NULL after the reason on stderr
 * (prefixed "pos-p2p CMD: "); the caller frees the result with
 * pos_p2p_identity_del.
 */
pos_p2p_identity *cli_identity_load(const char *cmd, const char *identity);

#endif
