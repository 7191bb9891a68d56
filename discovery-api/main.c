/*
 * pos-discovery: the relay list over HTTP. Reads its settings and the p2p
 * secret, starts the server (server.c, http.c) and runs until SIGINT or
 * SIGTERM, which it waits for with sigwait in the main thread: the signals
 * are blocked before any thread starts, so no handler runs in a worker.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "options.h"
#include "secret.h"
#include "server.h"

enum { EXIT_USAGE = 2 };

/* load_secret returns the p2p secret (caller owns it) or NULL with a sentence in |err|. */
static char *load_secret(const pos_discovery_options *o, char *err, size_t errlen)
{
    if (o->secret_file[0])
        return pos_secret_read_file(o->secret_file, err, errlen);
    const char *env = getenv("POS_P2P_SECRET");
    if (!env || !env[0]) {
        snprintf(err, errlen,
                 "no p2p secret: relays authenticate with it, so pos-discovery will not start "
                 "without one; give --secret-file FILE (or \"secret_file\" in the config) or "
                 "set the environment variable POS_P2P_SECRET");
        return NULL;
    }
    char *copy = strdup(env);
    if (!copy)
        snprintf(err, errlen, "out of memory");
    return copy;
}

static int wait_for_stop_signal(const sigset_t *set)
{
    int sig = 0;
    sigwait(set, &sig);
    return sig;
}

int main(int argc, char **argv)
{
    pos_discovery_options opt;
    pos_server server;
    char err[POS_ERR_LEN];
    sigset_t stop_signals;

    pos_log_init("pos-discovery");
    int rc = pos_discovery_options_parse(argc, argv, &opt, err, sizeof(err));
    if (rc == POS_OPTIONS_HELP) {
        pos_discovery_usage(stdout);
        return EXIT_SUCCESS;
    }
    if (rc != POS_OPTIONS_RUN) {
        fprintf(stderr, "pos-discovery: %s\n", err);
        return EXIT_USAGE;
    }
    char *secret = load_secret(&opt, err, sizeof(err));
    if (!secret) {
        fprintf(stderr, "pos-discovery: %s\n", err);
        return EXIT_FAILURE;
    }
    if (strlen(secret) < 16)
        pos_log_warn("the p2p secret is shorter than 16 characters: anyone who guesses it can "
                     "register relays");

    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (pos_server_start(&server, &opt, secret, err, sizeof(err)) != 0) {
        fprintf(stderr, "pos-discovery: %s\n", err);
        return EXIT_FAILURE;
    }
    int sig = wait_for_stop_signal(&stop_signals);
    pos_log_info("received %s, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    pos_server_stop(&server);
    return EXIT_SUCCESS;
}
