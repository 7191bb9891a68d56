/* pos_p2p_strerror: one table of sentences for every error code of the library. */
#include "pos/mdns.h"

/* Over 80 lines: one case per error code (a table; a code listed twice does not compile). */
const char *pos_p2p_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case POS_P2P_ERR_INVALID_ARGUMENT:
        return "invalid argument";
    case POS_P2P_ERR_NOMEM:
        return "out of memory";
    case POS_P2P_ERR_IO:
        return "input/output error";
    case POS_P2P_ERR_TIMEOUT:
        return "timed out";
    case POS_P2P_ERR_REFUSED:
        return "the relay refused the connection";
    case POS_P2P_ERR_PEER_MISMATCH:
        return "the peer's key is not the expected peer id";
    case POS_P2P_ERR_HANDSHAKE:
        return "the QUIC/TLS handshake failed";
    case POS_P2P_ERR_PROTOCOL:
        return "the relay broke the control protocol";
    case POS_P2P_ERR_CLOSED:
        return "the connection was closed";
    case POS_P2P_ERR_HTTP:
        return "the discovery API is unreachable or answered with an error";
    case POS_P2P_ERR_BAD_LIST:
        return "the relay list is not valid";
    case POS_P2P_ERR_IDENTITY:
        return "the identity file cannot be read or written";
    case POS_P2P_ERR_NO_ROUTE:
        return "no local socket for the relay's address family";
    case POS_P2P_ERR_GOING_AWAY:
        return "the relay is shutting down";
    /* circuits */
    case POS_P2P_ERR_PEER_NOT_CONNECTED:
        return "the peer is not connected to any relay";
    case POS_P2P_ERR_DECLINED:
        return "the peer declined (or does not allow this device)";
    case POS_P2P_ERR_REDIRECTED:
        return "the peer is connected to another relay";
    case POS_P2P_ERR_CIRCUIT_CLOSED:
        return "the relay circuit ended";
    case POS_P2P_ERR_TOO_BIG:
        return "a packet larger than a relay data frame can carry";
    case POS_P2P_ERR_CIRCUIT_LIMIT:
        return "the relay allows no more circuits for this connection or token (or the peer) now: "
               "close some circuits first";
    /* sessions */
    case POS_P2P_ERR_NOT_ALLOWED:
        return "the peer does not accept sessions from this device (not in its allow list)";
    case POS_P2P_ERR_NO_STREAM:
        return "no such stream, or it is finished or reset";
    case POS_P2P_ERR_BAD_ADDRESS:
        return "not an address: want IP, IP:PORT, [IPv6] or [IPv6]:PORT";
    case POS_P2P_ERR_NO_RELAY:
        return "no relay could be used";
    case POS_P2P_ERR_STREAM_LIMIT:
        return "the peer allows no more streams for now";
    /* local discovery (mDNS) */
    case POS_P2P_ERR_MDNS_TXT:
        return "a TXT value is too long: each key=value must be at most 255 bytes and all "
               "together at most 1300 bytes (shorten --name, --os, --model or use fewer "
               "libraries)";
    case POS_P2P_ERR_MDNS_SOCKET:
        return "cannot open the mDNS sockets on UDP port 5353 (need IPv4 or IPv6 multicast)";
    case POS_P2P_ERR_MDNS_PACKET:
        return "malformed DNS packet";
    case POS_P2P_ERR_MDNS_NAME:
        return "the instance name must be 1 to 63 bytes";
    case POS_P2P_ERR_MDNS_FULL:
        return "too many interfaces, contacts or records (a fixed limit was reached)";
    case POS_P2P_ERR_MDNS_CARD:
        return "not a contact card: expected pos-contact:1:<peer id>:<presence key> as printed by "
               "'pos-p2p contact card'";
    case POS_P2P_ERR_MDNS_CONTACTS:
        return "the contacts file or the presence key file cannot be read or written";
    case POS_P2P_ERR_MDNS_NO_KEY:
        return "contacts-only mode needs a presence key";
    default:
        return "unknown error";
    }
}
