/* pos_p2p_strerror: one table of sentences for every error code of the library. */
#include "pos/p2p.h"

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
    default:
        return "unknown error";
    }
}
