/*
 * pos-tlsfloor: what GnuTLS alone costs the relay's side of one handshake,
 * measured on this machine now, for loadtest/bench-relay-control.sh: a
 * server session with the relay's TLS settings (common/tls.c: raw public
 * keys, Ed25519 signed by libsodium, the control protocol's ALPNs, session
 * tickets) and the relay's own faster crypto (relay/tls_fast.c, linked as in
 * pos-relay), against a client session in the same process, over in-memory
 * buffers: no QUIC, no sockets, no Redis, no control protocol. N handshakes
 * of each kind (default 500):
 *   full:    a client with its own identity, both keys checked;
 *   resumed: the same client offering the ticket of its previous handshake
 *            (psk_dhe_ke: X25519 still, no signatures).
 * The figure is the CPU time of this thread spent in the server's calls
 * only (session set-up, its handshake steps, the ticket it sends, freeing
 * it), in microseconds: "gnutls-server full F resumed R". The relay's CPU
 * per connection over it is what QUIC, the kernel, the heap and the relay's
 * own work add to the TLS library's. Exits 1, saying why, when a handshake
 * fails or a returning client was not resumed.
 * usage: pos-tlsfloor [N]
 */
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "identity.h"
#include "tls.h"
#include "tls_pipe.h"

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/*
 * one: a handshake of |client| (offering |ticket| when it holds one) with
 * |server|; the client's next ticket replaces |ticket|. Adds the server's
 * CPU time to |*server_us|. Returns 1 resumed, 0 full, -1 failed.
 */
static int one(pos_tls_creds *client, pos_tls_creds *server, const uint8_t relay_key[32],
               gnutls_datum_t *ticket, double *server_us)
{
    static struct pos_tls_pipe a, b;
    struct pos_tls_side c, s;
    int rv = -1;
    double t0;

    a.len = b.len = 0;
    if (pos_tls_side_setup(&c, client, 0, 1, &a, &b) != 0)
        return -1;
    memcpy(c.pin.expect_key, relay_key, 32);
    c.pin.has_expected = 1;
    if (ticket->data)
        gnutls_session_set_data(c.s, ticket->data, ticket->size);
    t0 = now_us();
    int srv_ok = pos_tls_side_setup(&s, server, 1, 3600, &b, &a) == 0;
    *server_us += now_us() - t0;
    if (!srv_ok) {
        gnutls_deinit(c.s);
        return -1;
    }
    for (int i = 0; i < 20 && !(c.done && s.done); i++) {
        int r;
        if (!c.done) {
            r = gnutls_handshake(c.s);
            if (r == 0)
                c.done = 1;
            else if (gnutls_error_is_fatal(r))
                break;
        }
        if (!s.done) {
            t0 = now_us();
            r = gnutls_handshake(s.s);
            *server_us += now_us() - t0;
            if (r == 0)
                s.done = 1;
            else if (gnutls_error_is_fatal(r))
                break;
        }
    }
    if (c.done && s.done) {
        int r_s = 0, r_c = 0;
        t0 = now_us();
        int peer_ok = pos_tls_handshake_peer(s.s, &s.pin, &r_s) == 0;
        int sent = pos_tls_send_ticket(s.s) == 0;
        *server_us += now_us() - t0;
        uint8_t buf[64];
        int got = (int)gnutls_record_recv(c.s, buf, sizeof(buf)) == GNUTLS_E_AGAIN;
        if (peer_ok && sent && got && pos_tls_handshake_peer(c.s, &c.pin, &r_c) == 0 &&
            !c.pin.mismatch && r_c == r_s) {
            gnutls_free(ticket->data);
            ticket->data = NULL;
            ticket->size = 0;
            if (gnutls_session_get_data2(c.s, ticket) == 0)
                rv = r_s;
        }
    }
    gnutls_deinit(c.s);
    t0 = now_us();
    gnutls_deinit(s.s);
    *server_us += now_us() - t0;
    return rv;
}

int main(int argc, char **argv)
{
    long n = 500;
    char *end = NULL;
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: pos-tlsfloor [N (1..100000, default 500)]\n"
               "GnuTLS's server side of N full and N resumed handshakes in memory, with the "
               "relay's TLS\nsettings and crypto; prints \"gnutls-server full F resumed R\" "
               "(CPU microseconds each).\n");
        return 0;
    }
    if (argc > 2 || (argc == 2 && ((n = strtol(argv[1], &end, 10)) < 1 || n > 100000 || *end))) {
        fprintf(stderr, "pos-tlsfloor: usage: pos-tlsfloor [N (1..100000)]\n");
        return 2;
    }
    pos_identity relay_id, client_id;
    pos_tls_creds *relay = NULL, *client = NULL;
    pos_identity_generate(&relay_id);
    pos_identity_generate(&client_id);
    if (pos_tls_creds_new(&relay, &relay_id) != 0 || pos_tls_creds_new(&client, &client_id) != 0) {
        fprintf(stderr, "pos-tlsfloor: cannot make TLS credentials\n");
        return 1;
    }
    gnutls_datum_t ticket = {NULL, 0};
    double full_us = 0, res_us = 0, scratch = 0;
    int rc = 0;
    /* warm-up: caches, the ticket key, GnuTLS's lazily made state */
    for (int i = 0; i < 20 && rc == 0; i++)
        rc = one(client, relay, relay_id.public_key, &ticket, &scratch) < 0;
    for (long i = 0; i < n && rc == 0; i++) {
        gnutls_free(ticket.data); /* no ticket: a full handshake */
        ticket.data = NULL;
        ticket.size = 0;
        if (one(client, relay, relay_id.public_key, &ticket, &full_us) != 0) {
            fprintf(stderr, "pos-tlsfloor: a full handshake failed or was resumed\n");
            rc = 1;
        } else if (one(client, relay, relay_id.public_key, &ticket, &res_us) != 1) {
            fprintf(stderr, "pos-tlsfloor: a returning client was not resumed\n");
            rc = 1;
        }
    }
    gnutls_free(ticket.data);
    pos_tls_creds_del(client);
    pos_tls_creds_del(relay);
    pos_identity_free(&relay_id);
    pos_identity_free(&client_id);
    if (rc)
        return 1;
    printf("gnutls-server full %.1f resumed %.1f\n", full_us / (double)n, res_us / (double)n);
    return 0;
}
