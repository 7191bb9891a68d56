/*
 * The local network for `pos-p2p send` and `listen` (issue 11, "on one LAN,
 * no relay needed"): `listen` advertises itself on mDNS (pos_mdns_*,
 * docs/mdns.md) with the endpoint's UDP port, `send` browses for the peer id
 * it was given (contacts-only advertisements of its contacts included) and
 * dials the addresses it learns directly. cli_run is the endpoint's blocking
 * runner with the mDNS socket polled as well, so one thread serves both.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cli.h"
#include "contacts.h"

int cli_mdns_mode_parse(const char *s, enum pos_mdns_mode *mode)
{
    if (!strcmp(s, "enabled"))
        *mode = POS_MDNS_ENABLED;
    else if (!strcmp(s, "contacts-only"))
        *mode = POS_MDNS_CONTACTS_ONLY;
    else if (!strcmp(s, "disabled"))
        *mode = POS_MDNS_DISABLED;
    else
        return -1;
    return 0;
}

int cli_mdns_add_contacts(pos_mdns *m, const char *cmd, const char *identity_path)
{
    struct mdns_contact_entry *cs = calloc(256, sizeof(*cs));
    char err[512];
    if (!cs)
        return -1;
    int n = mdns_contacts_load(identity_path, cs, 256, err, sizeof(err));
    if (n < 0)
        fprintf(stderr, "%s: %s\n", cmd, err);
    for (int i = 0; i < n; i++)
        pos_mdns_add_contact(m, cs[i].peer_id, cs[i].key);
    sodium_memzero(cs, 256 * sizeof(*cs));
    free(cs);
    return n < 0 ? -1 : 0;
}

pos_mdns *cli_lan_advertise(const char *cmd, enum pos_mdns_mode mode, const char *identity_path,
                            const char *peer_id, unsigned port)
{
    pos_mdns_config cfg;
    pos_mdns *m = NULL;
    uint8_t key[32];
    char err[512];
    int rv;
    if (mode == POS_MDNS_DISABLED)
        return NULL;
    memset(&cfg, 0, sizeof(cfg));
    cfg.mode = mode;
    cfg.advertise = 1;
    cfg.peer_id = peer_id;
    cfg.port = (uint16_t)port;
    if (mode == POS_MDNS_CONTACTS_ONLY) {
        if (mdns_presence_key_load_or_create(identity_path, key, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: mDNS: %s; not advertising\n", cmd, err);
            return NULL;
        }
        cfg.presence_key = key;
    }
    rv = pos_mdns_new(&m, &cfg, NULL, NULL);
    sodium_memzero(key, sizeof(key));
    if (rv != 0) {
        fprintf(stderr, "%s: mDNS: %s; not advertising on the local network\n", cmd,
                pos_p2p_strerror(rv));
        return NULL;
    }
    return m;
}

struct finder {
    const char *peer_id;
    struct cli_lan_peer *out;
};

static void on_found(void *user, enum pos_mdns_event ev, const pos_mdns_peer *p)
{
    struct finder *f = user;
    if (ev == POS_MDNS_LOST || !p->peer_id || strcmp(p->peer_id, f->peer_id) != 0 || !p->port)
        return;
    f->out->n = 0;
    f->out->contact = p->contact;
    /* IPv4 first, then IPv6 other than link-local, then link-local (needs a scope) */
    for (int pass = 0; pass < 3; pass++) {
        for (size_t i = 0; i < p->n_addrs && f->out->n < CLI_LAN_MAX_ADDRS; i++) {
            const char *a = p->addrs[i];
            int v6 = strchr(a, ':') != NULL, ll = v6 && !strncasecmp(a, "fe80", 4);
            if ((pass == 0 && v6) || (pass == 1 && (!v6 || ll)) || (pass == 2 && !ll))
                continue;
            snprintf(f->out->addrs[f->out->n++], sizeof(f->out->addrs[0]), v6 ? "[%s]:%u" : "%s:%u",
                     a, (unsigned)p->port);
        }
    }
}

static int have_addrs(void *arg)
{
    struct finder *f = arg;
    return f->out->n > 0;
}

int cli_lan_find(const char *cmd, const char *identity_path, const char *peer_id, int timeout_ms,
                 struct cli_lan_peer *out)
{
    pos_mdns_config cfg;
    pos_mdns *m = NULL;
    struct finder f = {peer_id, out};
    int rv;
    memset(out, 0, sizeof(*out));
    memset(&cfg, 0, sizeof(cfg));
    cfg.browse = 1;
    rv = pos_mdns_new(&m, &cfg, on_found, &f);
    if (rv != 0) {
        fprintf(stderr, "%s: mDNS: %s\n", cmd, pos_p2p_strerror(rv));
        return rv;
    }
    if (cli_mdns_add_contacts(m, cmd, identity_path) != 0) {
        pos_mdns_del(m);
        return POS_P2P_ERR_MDNS_CONTACTS;
    }
    rv = pos_mdns_run(m, timeout_ms, have_addrs, &f);
    pos_mdns_del(m);
    return out->n > 0 ? 0 : rv ? rv : POS_P2P_ERR_TIMEOUT;
}

/* A browse running in its own thread while the caller does something else (the relay). */
struct cli_lan_search {
    pthread_t thread;
    const char *cmd, *identity_path;
    char peer_id[POS_P2P_PEER_ID_STRLEN];
    int timeout_ms, rv;
    struct cli_lan_peer found;
};

static void *search_main(void *arg)
{
    struct cli_lan_search *ls = arg;
    ls->rv = cli_lan_find(ls->cmd, ls->identity_path, ls->peer_id, ls->timeout_ms, &ls->found);
    return NULL;
}

struct cli_lan_search *cli_lan_search_start(const char *cmd, const char *identity_path,
                                            const char *peer_id, int timeout_ms)
{
    struct cli_lan_search *ls = calloc(1, sizeof(*ls));
    if (!ls)
        return NULL;
    ls->cmd = cmd;
    ls->identity_path = identity_path;
    snprintf(ls->peer_id, sizeof(ls->peer_id), "%s", peer_id);
    ls->timeout_ms = timeout_ms;
    if (pthread_create(&ls->thread, NULL, search_main, ls) != 0) {
        free(ls);
        return NULL;
    }
    return ls;
}

int cli_lan_search_finish(struct cli_lan_search *ls, struct cli_lan_peer *out)
{
    int rv;
    memset(out, 0, sizeof(*out));
    if (!ls)
        return POS_P2P_ERR_NOMEM;
    pthread_join(ls->thread, NULL);
    rv = ls->rv;
    *out = ls->found;
    free(ls);
    return rv;
}

int cli_run(pos_p2p_endpoint *ep, pos_mdns *m, int timeout_ms, pos_p2p_done_cb done, void *arg)
{
    int64_t end = timeout_ms >= 0 ? pos_p2p_now_ms() + timeout_ms : -1;
    if (!m)
        return pos_p2p_endpoint_run(ep, timeout_ms, done, arg);
    for (;;) {
        struct pollfd fds[2] = {{pos_p2p_endpoint_fd(ep), POLLIN, 0}, {pos_mdns_fd(m), POLLIN, 0}};
        int64_t now = pos_p2p_now_ms(), wait = 1000;
        int64_t d[3] = {pos_p2p_endpoint_deadline(ep), pos_mdns_next_deadline(m), end};
        if (done && done(arg))
            return 0;
        if (end >= 0 && now >= end)
            return POS_P2P_ERR_TIMEOUT;
        for (int i = 0; i < 3; i++)
            if (d[i] >= 0 && d[i] - now < wait)
                wait = d[i] - now;
        if (wait < 0)
            wait = 0;
        if (poll(fds, 2, (int)wait) < 0 && errno != EINTR)
            return POS_P2P_ERR_IO;
        pos_p2p_endpoint_process(ep);
        pos_mdns_process(m);
    }
}
