/* The data plane (see dataplane.h): for now every frame is counted and dropped. */
#include "dataplane.h"

void relay_dataplane_input(relay_dataplane *dp, int fd, const uint8_t *data, size_t len,
                           const struct sockaddr *from, socklen_t fromlen)
{
    (void)fd;
    (void)data;
    (void)len;
    (void)from;
    (void)fromlen;
    dp->frames_dropped++;
}
