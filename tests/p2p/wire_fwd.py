"""A UDP forwarder that records the size of every datagram it carries.

    wire_fwd.py --listen IP:PORT --to IP:PORT --stats FILE [--limit BYTES]

Datagrams that reach the listening socket from a client are sent on to --to
from a socket of that client's own (one per client address, like a NAT), and
what --to answers on that socket goes back to the client. It reads with plain
recvfrom on sockets without UDP_GRO, so each read is one datagram as it would
travel on a wire: a UDP GSO send arrives here cut into its segments, and a
datagram larger than the path allows arrives whole. Every 0.2 s and at
SIGTERM it writes FILE (JSON): datagrams, bytes, max (largest datagram),
over (how many were larger than --limit, default 1452) and hist (count per
size rounded up to 100 bytes, as text keys). Used by tests/p2p/test_wire_size.py
and loadtest/bench-transfer.sh.
"""
import argparse
import json
import os
import selectors
import signal
import socket
import sys
import time


def addr(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=addr, required=True)
    ap.add_argument("--to", type=addr, required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--limit", type=int, default=1452)
    a = ap.parse_args()

    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    front.bind(a.listen)
    front.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(front, selectors.EVENT_READ, None)
    back = {}  # client address -> its upstream socket
    st = {"datagrams": 0, "bytes": 0, "max": 0, "over": 0, "hist": {}}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    def note(n):
        st["datagrams"] += 1
        st["bytes"] += n
        if n > st["max"]:
            st["max"] = n
        if n > a.limit:
            st["over"] += 1
        k = str((n + 99) // 100 * 100)
        st["hist"][k] = st["hist"].get(k, 0) + 1

    def dump():
        tmp = a.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.replace(tmp, a.stats)

    dump()
    last = time.monotonic()
    while not stop:
        for key, _ in sel.select(0.1):
            sock, client = key.fileobj, key.data
            for _ in range(256):
                try:
                    data, src = sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                note(len(data))
                try:
                    if client is None:  # from a client: on to --to from its own socket
                        up = back.get(src)
                        if up is None:
                            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                            up.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
                            up.bind((a.to[0], 0))
                            up.setblocking(False)
                            back[src] = up
                            sel.register(up, selectors.EVENT_READ, src)
                        up.sendto(data, a.to)
                    else:  # an answer: back to the client
                        front.sendto(data, client)
                except (BlockingIOError, OSError):
                    pass  # lost, as on a wire
        if time.monotonic() - last >= 0.2:
            dump()
            last = time.monotonic()
    dump()
    return 0


if __name__ == "__main__":
    sys.exit(main())
