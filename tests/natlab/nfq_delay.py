#!/usr/bin/python3
"""nfq_delay.py - delay packets that iptables hands to NFQUEUE (the NAT lab's
stand-in for netem, which this kind of kernel lacks).

    nfq_delay.py --ready FILE QUEUE=DELAY_MS [QUEUE=DELAY_MS ...]

Run inside the namespace whose iptables rules say `-j NFQUEUE --queue-num
QUEUE`. Every packet of QUEUE is held DELAY_MS and then accepted, in arrival
order (a fixed delay never reorders). FILE is written once every queue is
bound; the helper runs until SIGTERM and then lets held packets go. It speaks
nfnetlink_queue over a raw netlink socket: no library needed.
"""
import collections
import os
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
SUBSYS_QUEUE = 3
MSG_PACKET, MSG_VERDICT, MSG_CONFIG = 0, 1, 2
CFG_CMD, CFG_PARAMS, CFG_QUEUE_MAXLEN = 1, 2, 3
CMD_BIND = 1
COPY_META = 1
ATTR_PACKET_HDR, ATTR_VERDICT_HDR = 1, 2
F_REQUEST, F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
NF_ACCEPT = 1


def tlv(kind, payload):
    """One netlink attribute, padded to 4 bytes."""
    head = struct.pack("=HH", 4 + len(payload), kind)
    return head + payload + bytes(-len(payload) % 4)


class NfQueue:
    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))
        self.seq = 0

    def _send(self, msg, queue, body, flags=F_REQUEST):
        self.seq += 1
        payload = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + body
        header = struct.pack("=IHHII", 16 + len(payload), (SUBSYS_QUEUE << 8) | msg, flags,
                             self.seq, 0)
        self.sock.send(header + payload)

    def _config(self, queue, body):
        self._send(MSG_CONFIG, queue, body, F_REQUEST | F_ACK)
        reply = self.sock.recv(8192)
        if struct.unpack_from("=H", reply, 4)[0] == NLMSG_ERROR:
            code = struct.unpack_from("=i", reply, 16)[0]
            if code:
                raise OSError(-code, f"binding NFQUEUE {queue}: {os.strerror(-code)}")

    def bind(self, queue):
        self._config(queue, tlv(CFG_CMD, struct.pack("!BBH", CMD_BIND, 0, 0)))
        self._config(queue, tlv(CFG_PARAMS, struct.pack("!IB", 0, COPY_META)) +
                     tlv(CFG_QUEUE_MAXLEN, struct.pack("!I", 16384)))

    def accept(self, queue, packet_id):
        self._send(MSG_VERDICT, queue, tlv(ATTR_VERDICT_HDR, struct.pack("!II", NF_ACCEPT,
                                                                         packet_id)))

    @staticmethod
    def parse(data):
        """(queue, packet id) of each packet message in one receive."""
        found = []
        pos = 0
        while pos + 20 <= len(data):
            length, kind = struct.unpack_from("=IH", data, pos)
            if length < 16:
                break
            if kind == (SUBSYS_QUEUE << 8) | MSG_PACKET:
                queue = struct.unpack_from("!H", data, pos + 18)[0]
                at, end = pos + 20, pos + length
                while at + 4 <= end:
                    alen, atype = struct.unpack_from("=HH", data, at)
                    if alen < 4:
                        break
                    if atype & 0x7fff == ATTR_PACKET_HDR:
                        found.append((queue, struct.unpack_from("!I", data, at + 4)[0]))
                    at += (alen + 3) & ~3
            pos += (length + 3) & ~3
        return found


def main(argv):
    ready, delays = None, {}
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--ready" and args:
            ready = args.pop(0)
        elif "=" in a:
            q, ms = a.split("=", 1)
            delays[int(q)] = float(ms) / 1000.0
        else:
            print(__doc__, file=sys.stderr)
            return 2
    if not delays:
        print(__doc__, file=sys.stderr)
        return 2
    nfq = NfQueue()
    for q in delays:
        nfq.bind(q)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    # per queue, (release time, queue, packet id): one fixed delay keeps each deque sorted
    per_queue = {q: collections.deque() for q in delays}
    if ready:
        with open(ready, "w") as f:
            f.write(f"{os.getpid()}\n")
    while not stopping:
        now = time.monotonic()
        for dq in per_queue.values():
            while dq and dq[0][0] <= now:
                _, q, pid = dq.popleft()
                nfq.accept(q, pid)
        due = [dq[0][0] for dq in per_queue.values() if dq]
        wait = max(0.0, min(due) - now) if due else 0.5
        try:
            readable, _, _ = select.select([nfq.sock], [], [], min(wait, 0.5))
        except InterruptedError:
            continue
        if not readable:
            continue
        try:
            data = nfq.sock.recv(1 << 16)
        except OSError:  # ENOBUFS: the kernel dropped queue messages (packets lost)
            continue
        now = time.monotonic()
        for q, pid in NfQueue.parse(data):
            per_queue.setdefault(q, collections.deque()).append((now + delays.get(q, 0.0), q, pid))
    for dq in per_queue.values():
        for _, q, pid in dq:
            nfq.accept(q, pid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
