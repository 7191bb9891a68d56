"""A UDP forwarder that plays one client's NAT, for the parking tests
(tests/relay/test_relay_park.py, tests/p2p/test_park_e2e.py): the client talks to
127.0.0.1:Nat.port as if it were the relay, and can be given a new mapping it does not
notice (a NAT rebinding)."""
import selectors
import socket
import threading


class Nat:
    """A UDP forwarder playing one client's NAT: what the client sends to 127.0.0.1:port
    leaves for the relay from the NAT's own socket (the mapping), and what comes back
    there goes to the client. rebind() swaps the mapping for a new port and closes the
    old one, without the client knowing (a NAT rebinding). The last keep-alive (0x25)
    the client sent is kept, byte for byte (a replay to try)."""

    def __init__(self, relay_port):
        self.relay = ("127.0.0.1", relay_port)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.up = self._socket()
        self.client = None
        self.last_keepalive = None
        self.mappings = [self.up.getsockname()[1]]
        self._rebind = threading.Event()
        self._after_ack = False
        self._after_quiet = False
        self._rebound = threading.Event()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _socket():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        return s

    def _run(self):
        sel = selectors.DefaultSelector()
        sel.register(self.front, selectors.EVENT_READ, "front")
        sel.register(self.up, selectors.EVENT_READ, "up")
        while not self._stop:
            if self._rebind.is_set():
                sel.unregister(self.up)
                self.up.close()  # the old mapping is gone: what the relay sends there is lost
                self.up = self._socket()
                self.mappings.append(self.up.getsockname()[1])
                sel.register(self.up, selectors.EVENT_READ, "up")
                self._rebind.clear()
                self._rebound.set()
            for key, _ in sel.select(0.02):
                try:
                    data, src = key.fileobj.recvfrom(2048)
                except OSError:
                    continue
                if key.data == "front":
                    self.client = src
                    self.up.sendto(data, self.relay)
                    if len(data) == 33 and data[0] == 0x25:
                        self.last_keepalive = data
                    if self._after_quiet and len(data) == 33 and data[0] == 0x29:
                        self._after_quiet = False
                        self._rebind.set()
                elif self.client:
                    self.front.sendto(data, self.client)
                    if self._after_ack and len(data) == 33 and data[0] == 0x26:
                        self._after_ack = False
                        self._rebind.set()
        sel.close()

    def rebind(self):
        self._rebound.clear()
        self._rebind.set()
        assert self._rebound.wait(5), "the NAT did not rebind"

    def rebind_after_ack(self, timeout=30):
        """Rebind right after the relay's next PARK_ACK reached the client: the
        client's next keep-alive is a whole keep-alive interval away (none is resent)."""
        self._rebound.clear()
        self._after_ack = True
        assert self._rebound.wait(timeout), "no keep-alive ack to rebind after"

    def rebind_after_quiet(self, timeout=30):
        """Rebind right after the client's next PARK_QUIET left for the relay (a
        keep-alive that wants no answer: none is resent): the relay's record names the old
        mapping, and the client's next keep-alive is a whole interval away."""
        self._rebound.clear()
        self._after_quiet = True
        assert self._rebound.wait(timeout), "no quiet keep-alive to rebind after"

    def close(self):
        self._stop = True
        self.thread.join(5)
        self.front.close()
        self.up.close()
