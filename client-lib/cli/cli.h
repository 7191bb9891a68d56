/* The subcommands of pos-p2p, each in its own file. argv[0] is the subcommand's name. */
#ifndef POS_P2P_CLI_H
#define POS_P2P_CLI_H

#include <signal.h>
#include <stdio.h>

#include "pos/mdns.h"

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
 * every relay (only |relay_id| when not NULL) without taking this device's
 * presence (POS_P2P_RELAY_NOT_HOME: the connection only dials), keep the
 * fastest accepted one (its entry in |info|) and close the others. NULL with
 * a message on stderr. For `send`.
 */
pos_p2p_relay *cli_home_relay(pos_p2p_endpoint *ep, const char *cmd, const char *api_url,
                              const char *token, const char *relay_id, int timeout_ms,
                              pos_p2p_relay_info *info);

/* What cli_pick_relay is asked (all strings the caller's). */
struct cli_pick_req {
    const char *cmd, *api_url, *token;
    const char *relay_id;   /* only this relay (NULL: any of the list) */
    const char *current_id; /* recheck: the current home, not dialed again (NULL: none) */
    const char *skip_id;    /* a relay left out (it just said it is going away), or NULL */
    volatile const sig_atomic_t
        *stop;          /* when it points to non-zero: give up at once (a signal); or NULL */
    double current_rtt; /* its round-trip time, ms */
    int timeout_ms;
    int home; /* the pick becomes the device's home connection (presence); 0: dialing only */
};

/* What the addresses several relays observed for this device say about its NAT. */
enum cli_nat_kind {
    CLI_NAT_UNKNOWN = 0, /* fewer than two relays of one address family answered */
    CLI_NAT_EIM = 1,     /* the same address and port to every relay: endpoint-independent */
    CLI_NAT_VARIES = 2,  /* another address or port per relay: varies by destination */
};

/*
 * cli_nat_verdict (home_relay.c): compares the |n| addresses relays observed
 * for one socket of this device ("ip:port" or "[v6]:port"), per address
 * family. No errors.
 */
enum cli_nat_kind cli_nat_verdict(char (*observed)[POS_P2P_ADDR_STRLEN], size_t n);

/* cli_nat_line: the sentence `relays` prints for |k| (no newline). No errors. */
const char *cli_nat_line(enum cli_nat_kind k);

/*
 * cli_nat_warn (home_relay.c): once per process, when |k| is CLI_NAT_VARIES,
 * says on stderr (prefixed |cmd|) that direct paths are unlikely. No errors.
 */
void cli_nat_warn(const char *cmd, enum cli_nat_kind k);

/* What cli_pick_relay found. */
struct cli_pick_res {
    pos_p2p_relay_info info; /* the entry of the relay returned */
    enum cli_nat_kind nat;   /* from the addresses the measured relays observed */
    int kept;                /* current_id stays home (nothing better, or none to measure) */
    int token_refused;       /* a relay refused the token itself: unknown, revoked, expired */
    char refusal[257];       /* then: the relay's reason */
};

/*
 * cli_pick_relay (home_relay.c): measures the relays of the list (every
 * measuring connection is POS_P2P_RELAY_NOT_HOME, so it never moves this
 * device's presence), picks the fastest (with |current_id|: only when
 * clearly better, pos_p2p_relay_pick_home) and closes the others. With
 * |home| the measuring connection to the pick is then closed and the relay
 * dialed again as home (a single candidate is dialed as home at once).
 * Returns the relay, or NULL: |res->kept| when the current home stays,
 * |res->token_refused| when the token itself was refused, nothing more when
 * |*q->stop| became non-zero, otherwise a failure already explained on
 * stderr (nothing listed, nothing reachable).
 */
pos_p2p_relay *cli_pick_relay(pos_p2p_endpoint *ep, const struct cli_pick_req *q,
                              struct cli_pick_res *res);

/*
 * cli_token_refused (home_relay.c): 1 when |st| is a relay's refusal of the
 * token itself (unknown 0x101, revoked 0x102, expired 0x103;
 * docs/protocol.md), which no retry can cure; 0 for everything else (rate
 * limits, connection cap, Redis down, shutdown, lost connection).
 */
int cli_token_refused(const pos_p2p_relay_status *st);

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

/* ---- hole punching (punch_cli.c) ---- */

/* getopt values of the punching options (beyond any character) */
#define CLI_OPT_NO_PUNCH 0x100
#define CLI_OPT_PUNCH_WINDOW 0x101
#define CLI_OPT_PUNCH_RETRY 0x102
#define CLI_OPT_NO_GSO 0x103 /* not punching, but applied with it (cli_punch_apply) */
#define CLI_PUNCH_LONGOPTS                                                                         \
    {"no-punch", no_argument, NULL, CLI_OPT_NO_PUNCH},                                             \
        {"no-gso", no_argument, NULL, CLI_OPT_NO_GSO},                                             \
        {"punch-window", required_argument, NULL, CLI_OPT_PUNCH_WINDOW},                           \
    {                                                                                              \
        "punch-retry", required_argument, NULL, CLI_OPT_PUNCH_RETRY                                \
    }

/* The --help lines of the punching options. */
extern const char cli_punch_usage[];

/*
 * cli_punch_opt stores a punching option (|ch| one of CLI_OPT_*) into |o|.
 * Returns 1 when it was one, 0 when |ch| is not, -1 after a message on
 * stderr prefixed |cmd| (a value out of range).
 */
int cli_punch_opt(const char *cmd, int ch, const char *arg, pos_p2p_punch_options *o);

/*
 * cli_punch_apply: pos_p2p_endpoint_set_punch with a message on failure, and
 * --no-gso (pos_p2p_endpoint_set_gso). 0 or the code.
 */
int cli_punch_apply(const char *cmd, pos_p2p_endpoint *ep, const pos_p2p_punch_options *o);

/*
 * cli_print_path_change prints one line for a path change (EV_PATH) to
 * |out|: "path: relayed -> direct to ADDR (rtt N ms)" or "path: direct ->
 * relayed through ADDR (why)"; |who| (a peer id, or NULL) after "path of".
 */
void cli_print_path_change(FILE *out, const char *who, const pos_p2p_path_change *pc);

/* ---- the local network (lan.c) ---- */

#define CLI_LAN_MAX_ADDRS 8

/* A peer found on mDNS: addresses to dial, "ip:port" or "[v6]:port", best first. */
struct cli_lan_peer {
    size_t n;
    char addrs[CLI_LAN_MAX_ADDRS][POS_P2P_ADDR_STRLEN + 8];
    int contact; /* found through a contact's contacts-only tag */
};

/* cli_mdns_mode_parse: "enabled", "contacts-only", "disabled" into |*mode|; -1 otherwise. */
int cli_mdns_mode_parse(const char *s, enum pos_mdns_mode *mode);

/*
 * cli_mdns_add_contacts: recognise the contacts of the store beside
 * |identity_path| (contacts.h) on |m|. Returns 0, or -1 after a message on
 * stderr prefixed |cmd|.
 */
int cli_mdns_add_contacts(pos_mdns *m, const char *cmd, const char *identity_path);

/*
 * cli_lan_advertise: advertise |peer_id| on mDNS in |mode| with UDP |port|
 * (contacts-only: the presence key beside |identity_path|, created when
 * missing). NULL for POS_MDNS_DISABLED, or after a message on stderr (the
 * device stays reachable otherwise). Free with pos_mdns_del (goodbyes).
 */
pos_mdns *cli_lan_advertise(const char *cmd, enum pos_mdns_mode mode, const char *identity_path,
                            const char *peer_id, unsigned port);

/*
 * cli_lan_find browses mDNS for |peer_id| (contacts-only tags of the
 * contacts beside |identity_path| included) for at most |timeout_ms|.
 * Returns 0 with its addresses in |out|, POS_P2P_ERR_TIMEOUT when it was not
 * seen, or another negative code after a message on stderr.
 */
int cli_lan_find(const char *cmd, const char *identity_path, const char *peer_id, int timeout_ms,
                 struct cli_lan_peer *out);

/*
 * cli_lan_search_start runs cli_lan_find in a thread of its own (it touches
 * nothing but its own mDNS sockets), so that `send` asks the relay at the
 * same time. NULL when no thread could be started. |cmd| and
 * |identity_path| must outlive it.
 */
struct cli_lan_search *cli_lan_search_start(const char *cmd, const char *identity_path,
                                            const char *peer_id, int timeout_ms);

/*
 * cli_lan_search_finish waits for the search (at most its timeout), frees
 * it, and returns what cli_lan_find returned, the addresses in |out|
 * (POS_P2P_ERR_NOMEM for a NULL |ls|).
 */
int cli_lan_search_finish(struct cli_lan_search *ls, struct cli_lan_peer *out);

/*
 * cli_run: pos_p2p_endpoint_run that also serves |m| (NULL: the plain
 * runner). Same returns.
 */
int cli_run(pos_p2p_endpoint *ep, pos_mdns *m, int timeout_ms, pos_p2p_done_cb done, void *arg);

#endif
