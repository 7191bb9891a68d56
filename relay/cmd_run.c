/*
 * `pos-relay run --config FILE`: load the configuration, bind the relay
 * port, start the services (Redis, discovery registration) and the local
 * HTTP endpoint, and serve until SIGTERM or SIGINT. On the signal the relay
 * deregisters, closes every client with RELAY_GOING_AWAY (so clients move
 * to another relay) and exits within a few seconds; a second signal exits
 * at once.
 */
#include <ev.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "log.h"
#include "metrics_http.h"
#include "quic_server.h"
#include "services.h"
#include "workers.h"

#define SHUTDOWN_DEREGISTER_MS 2000

struct run {
    struct ev_loop *loop;
    relay_config cfg;
    relay_server *srv;
    relay_services *svc;
    relay_http *http;
    ev_signal sigterm, sigint;
    ev_timer publish;
    int stopping;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: pos-relay run [--config FILE]\n\n"
                 "Serve clients (QUIC control plane on the UDP port, /healthz and /metrics on\n"
                 "http_listen) until SIGTERM or SIGINT. FILE defaults to $POS_RELAY_CONFIG or\n"
                 "./config.json. Environment: POS_LOG, POS_DOCKER=true (port 7373).\n");
}

static void on_revoked(void *arg, const char *token_id)
{
    struct run *r = arg;
    relay_server_revoke(r->srv, token_id);
}

static void publish_stats(struct run *r)
{
    relay_server_stats ss;
    relay_services_stats sv;
    if (!r->http)
        return;
    relay_server_stats_get(r->srv, &ss);
    relay_services_stats_get(r->svc, &sv);
    relay_http_publish(r->http, &ss, &sv, relay_services_redis_ok(r->svc));
}

static void on_publish(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    publish_stats(w->data);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct run *r = w->data;
    (void)revents;
    if (r->stopping) {
        pos_log_warn("second signal: exiting now");
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    r->stopping = 1;
    pos_log_info("signal %d: deregistering and closing %s", w->signum, "client connections");
    relay_server_goaway(r->srv);
    relay_services_shutdown(r->svc, SHUTDOWN_DEREGISTER_MS);
    ev_break(loop, EVBREAK_ALL);
}

/*
 * refuse_evicting_redis stops start-up when Redis answers with a
 * maxmemory-policy that may evict our keys. An unreachable Redis is not an
 * error here: the services keep trying in the background.
 */
static int refuse_evicting_redis(const relay_config *cfg)
{
    pos_redis r;
    pos_redis_init(&r, &cfg->redis, cfg->redis_prefix, 1000);
    int refused = !pos_redis_connect_now(&r) && r.policy_refused;
    if (refused)
        fprintf(stderr, "pos-relay run: %s\n", r.last_error);
    pos_redis_free(&r);
    return refused ? -1 : 0;
}

static int parse_args(int argc, char **argv, const char **config)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    opterr = 0; /* our own messages, prefixed with the command */
    while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            *config = optarg;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "%s: unknown option or missing value: %s\n\n", "pos-relay run",
                    argv[optind - 1]);
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pos-relay run: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    return 0;
}

int cmd_run(int argc, char **argv)
{
    struct run r;
    const char *config = NULL;
    char err[512];
    char announce[RELAY_MAX_ADDRS][POS_ADDR_STRLEN];
    size_t n_announce;
    relay_services_callbacks cbs;
    char peer_id[POS_PEER_ID_STRLEN];
    int status = RELAY_EXIT_FAIL;
    int rv = parse_args(argc, argv, &config);

    if (rv != 0)
        return rv > 0 ? RELAY_EXIT_OK : RELAY_EXIT_USAGE;
    memset(&r, 0, sizeof(r));
    if (relay_cli_load_config("run", config, &r.cfg) != 0)
        return RELAY_EXIT_FAIL;
    if (refuse_evicting_redis(&r.cfg) != 0)
        goto out;
    signal(SIGPIPE, SIG_IGN);
    r.loop = ev_default_loop(EVFLAG_AUTO);
    if (!(r.srv = relay_server_new(r.loop, &r.cfg, err, sizeof(err))) ||
        !(r.http = relay_http_new(r.cfg.http_listen, err, sizeof(err)))) {
        fprintf(stderr, "pos-relay run: %s\n", err);
        goto out;
    }
    n_announce = relay_server_announce_addrs(r.srv, announce, RELAY_MAX_ADDRS);
    cbs.revoked = on_revoked;
    cbs.arg = &r;
    r.svc = relay_services_new(r.loop, &r.cfg, &cbs, (const char(*)[POS_ADDR_STRLEN])announce,
                               n_announce);
    if (!r.svc) {
        fprintf(stderr, "pos-relay run: out of memory\n");
        goto out;
    }
    relay_server_set_services(r.srv, r.svc);
    if (relay_workers_start(r.srv, err, sizeof(err)) != 0) {
        fprintf(stderr, "pos-relay run: %s\n", err);
        goto out;
    }

    ev_signal_init(&r.sigterm, on_signal, SIGTERM);
    ev_signal_init(&r.sigint, on_signal, SIGINT);
    r.sigterm.data = r.sigint.data = &r;
    ev_signal_start(r.loop, &r.sigterm);
    ev_signal_start(r.loop, &r.sigint);
    ev_timer_init(&r.publish, on_publish, 0., 0.5);
    r.publish.data = &r;
    ev_timer_start(r.loop, &r.publish);

    pos_identity_peer_id(&r.cfg.identity, peer_id);
    pos_log_info("relay %s (peer id %s) serving on UDP port %u, HTTP on %s", r.cfg.id, peer_id,
                 r.cfg.port, r.cfg.http_listen);
    ev_run(r.loop, 0);

    relay_workers_stop(r.srv); /* the last batches are handled; the threads are joined */
    pos_log_info("stopped");
    ev_timer_stop(r.loop, &r.publish);
    ev_signal_stop(r.loop, &r.sigterm);
    ev_signal_stop(r.loop, &r.sigint);
    status = RELAY_EXIT_OK;
out: /* each _del takes NULL */
    relay_http_del(r.http);
    relay_server_del(r.srv);
    relay_services_del(r.svc);
    relay_config_free(&r.cfg);
    if (status == RELAY_EXIT_OK)
        ev_loop_destroy(r.loop);
    return status;
}
