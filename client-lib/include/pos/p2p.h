/*
 * libpos-p2p: let a person's devices reach each other directly.
 *
 * All handles are opaque. Every function returns 0 or a negative POS_P2P_ERR_*
 * code unless documented otherwise; pos_p2p_strerror() names each code.
 * The library fits any event loop: each object that does I/O exposes a file
 * descriptor to poll for reading, the next deadline (monotonic milliseconds),
 * and a call that processes whatever is ready; blocking runners are built on
 * top for simple programs.
 */
#ifndef POS_P2P_H
#define POS_P2P_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors (shared by every part of the library) ---- */
#define POS_P2P_ERR_INVALID_ARGUMENT -1
#define POS_P2P_ERR_NOMEM -2
#define POS_P2P_ERR_IO -3
#define POS_P2P_ERR_TIMEOUT -4
/* codes -5 .. -49 belong to the relay/session part below, -50 .. -79 to discovery */

/* pos_p2p_strerror: a sentence for any code of this library. */
const char *pos_p2p_strerror(int code);

/* ==== relay connections and sessions (begin) ==== */
/* ==== relay connections and sessions (end) ==== */

/* ==== local discovery, mDNS / DNS-SD (begin) ==== */
/* ==== local discovery, mDNS / DNS-SD (end) ==== */

#ifdef __cplusplus
}
#endif

#endif
