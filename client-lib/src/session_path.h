/*
 * The network path of one session (session_path.c; never installed). A
 * direct path is (endpoint socket, peer address). A relayed path is shown to
 * ngtcp2 as (synthetic local address in 100.64.0.0/10, synthetic remote
 * address): packets ngtcp2 writes for it go out as relay data frames on the
 * circuit, and payloads of the circuit are read with that path. A later move
 * to a direct path is thus an ordinary client-side migration (the local
 * address differs); whatever learns of paths belongs here.
 */
#ifndef POS_P2P_SESSION_PATH_H
#define POS_P2P_SESSION_PATH_H

#include <ngtcp2/ngtcp2.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "internal.h"

struct sess_path; /* owned by its session */

struct sess_path *sess_path_new(void); /* no path yet; NULL: out of memory */
void sess_path_del(struct sess_path *p);
/* sess_path_set_direct: socket |sock| (0 IPv4, 1 IPv6) to |addr|. */
void sess_path_set_direct(struct sess_path *p, int sock, const struct sockaddr *addr,
                          socklen_t len);
/* sess_path_set_relayed: circuit |circuit_id| of |r|, synthetic local address number |n|. */
void sess_path_set_relayed(struct sess_path *p, pos_p2p_relay *r, uint32_t circuit_id, uint32_t n);
/* sess_path_fill: the ngtcp2 view of |p| (its addresses live as long as |p|). */
void sess_path_fill(const struct sess_path *p, const pos_p2p_endpoint *ep, ngtcp2_path *path);
/*
 * sess_path_send: one packet ngtcp2 wrote for |path| (relayed or direct);
 * lost when it cannot go. |head| bytes in front of |data| are free: with
 * sess_path_head's room the relay frame's header goes there (no copy).
 */
void sess_path_send(const struct sess_path *p, pos_p2p_endpoint *ep, const ngtcp2_path *path,
                    uint8_t *data, size_t len, size_t head);
/* sess_path_head: the room to leave in front of a packet for |current| (ngtcp2's path). */
size_t sess_path_head(const struct sess_path *p, const ngtcp2_path *current);
pos_p2p_relay *sess_path_relay(const struct sess_path *p); /* NULL: not relayed */
/* sess_path_drop_relay: the circuit is gone; the relayed path stays known to ngtcp2 but dead. */
void sess_path_drop_relay(struct sess_path *p);
/* sess_path_on_circuit: 1 when |p| is relayed over |circuit_id| of |r|. */
int sess_path_on_circuit(const struct sess_path *p, const pos_p2p_relay *r, uint32_t circuit_id);
/* sess_path_is_relayed: 1 when |np| (an ngtcp2 path) is |p|'s relayed path. */
int sess_path_is_relayed(const struct sess_path *p, const ngtcp2_path *np);

#endif
