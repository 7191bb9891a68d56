"""The QUIC accepting side under hostile Initials: the real pos-relay,
redis-server, pos-discovery and pos-p2p on loopback; the Initials are real
encrypted ones made by ngtcp2's client (tests/relay/quic_probe.c).

What a user would notice: one Initial of a QUIC version we do not speak
(draft-29, the provisional v2, v2) no longer kills the relay or a listening
device: a datagram of 1200 B or more gets a Version Negotiation packet that
lists version 1 only, a shorter one or a Version Negotiation gets nothing,
and connected clients keep working. A Retry-answering handshake flood from a
few addresses no longer locks new clients out: 10 of 10 connect while it runs.
Control messages the relay must retransmit to a client (its path lost them)
arrive intact and the relay lives (they were read from freed memory).
"""
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import Proc, Redis, binary, http, run, test, tmpdir, wait_until  # noqa: E402
import suite  # noqa: E402
from suite import P2P  # noqa: E402

SECRET = "p2p-secret-quic-hardening-0123456789ab"
PROBE = binary("tests/relay/quic_probe")
CIRCUIT_CLIENT = binary("tests/relay/circuit_client")
OTHER_VERSIONS = ["ff00001d", "709a50c4", "6b3343cf"]  # draft-29, v2 draft, v2


def no_sanitizer_report(text, who):
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in text, f"sanitizer report from {who}:\n" + text[-4000:]


def probe(*args, timeout=30):
    r = subprocess.run([PROBE, *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    no_sanitizer_report(r.stderr, "quic_probe")
    return r.stdout.split("\n")[:-1]


def new_identity():
    path = os.path.join(tmpdir(), "identity")
    r = subprocess.run([P2P, "id", "--identity", path], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return path, r.stdout.strip().splitlines()[-1]


def stack(extra=None, env=None):
    redis = Redis()
    disc = suite.Discovery(redis, SECRET)
    relay = suite.Relay(redis, disc, SECRET, extra).start(env)
    wait_until(lambda: relay.id in disc.ids(), 5, what="the relay to register")
    return redis, disc, relay


def p2p(*args, timeout=60):
    r = subprocess.run([P2P, *args], capture_output=True, text=True, timeout=timeout)
    no_sanitizer_report(r.stderr, "pos-p2p " + args[0])
    return r


@test
def other_versions_get_version_negotiation_never_a_connection():
    redis, disc, relay = stack()
    token = relay.token()
    # A listening device that is also a connected client of the relay.
    ident, peer_id = new_identity()
    out = tmpdir()
    lst = Proc([P2P, "listen", "--identity", ident, "--out", out, "--api-url", disc.url,
                "--token", token], name="listen")
    wait_until(lambda: "listening" in lst.output() or not lst.alive(), 15,
               what="pos-p2p listen to start")
    assert "relay: " + relay.id in lst.output(), lst.output()
    port = re.search(r"direct: UDP port (\d+)", lst.output()).group(1)
    targets = {"relay": f"127.0.0.1:{relay.port}", "listener": f"127.0.0.1:{port}"}
    want, got = {}, {}
    for who, addr in targets.items():
        for v in OTHER_VERSIONS:
            want[who, v] = ["vn 0x00000001"]
            got[who, v] = probe("initial", "--to", addr, "--version", v)
            want[who, v, "short"] = ["none"]
            got[who, v, "short"] = probe("initial", "--to", addr, "--version", v, "--size",
                                         "1199", "--wait", "300")
        # v1 whose ClientHello carries its transport parameters the draft way
        # (TLS extension 0xffa5, not 0x39): refused at once, no connection
        got[who, "1", "ffa5"] = [line[:9] for line in probe(
            "initial", "--to", addr, "--version", "1", "--tp-codepoint", "ffa5", "--wait", "300")]
        want[who, "1", "ffa5"] = ["other 0xc"]  # one Initial: CONNECTION_CLOSE
        # a Version Negotiation is never answered
        want[who, "0"] = ["none"]
        got[who, "0"] = probe("initial", "--to", addr, "--version", "0", "--wait", "300")
    time.sleep(2)  # ngtcp2 aborts when the first retransmission is due (about 1 s)
    assert relay.proc.alive(), f"relay exited {relay.proc.p.returncode}; answers {got}"
    assert lst.alive(), f"listener exited {lst.p.returncode}; answers {got}"
    assert got == want, got
    # The connected listener still works through the relay, and directly.
    f = os.path.join(tmpdir(), "hello.txt")
    with open(f, "w") as fh:
        fh.write("still here\n")
    r = p2p("send", "--identity", new_identity()[0], "--api-url", disc.url, "--token", token,
            "--relay-only", "--to", peer_id, f)
    assert r.returncode == 0 and "path: relayed" in r.stdout, r.stdout + r.stderr
    r = p2p("send", "--identity", new_identity()[0], "--addr", targets["listener"], "--to",
            peer_id, f)
    assert r.returncode == 0 and "path: direct" in r.stdout, r.stdout + r.stderr


def metric(relay, name):
    st, _, body = http("GET", relay.http + "/metrics")
    assert st == 200, st
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {name}")


def connects(disc, token, n):
    ok = 0
    for _ in range(n):
        r = p2p("relays", "--api-url", disc.url, "--token", token, "--identity",
                new_identity()[0], "--timeout", "3")
        ok += r.returncode == 0
    return ok


@test
def handshake_flood_from_few_addresses_does_not_lock_out_clients():
    # Retry from 16 pending handshakes on (global cap 4 x 16 + 64 = 128), so
    # that six flooding addresses fill the cap within a second, as the
    # default 256 (cap 1088) fills within ten.
    redis, disc, relay = stack({"retry_above": 16})
    token = relay.token()
    sources = ",".join(f"127.0.0.{i}" for i in range(2, 8))
    flood = Proc([PROBE, "flood", "--to", f"127.0.0.1:{relay.port}", "--from", sources,
                  "--rate", "20", "--seconds", "60"], name="flood")
    # the flood holds more handshakes than a few clients' worth before the clients come
    wait_until(lambda: metric(relay, "pos_relay_handshaking") >= 64, 10,
               what="the flood to hold pending handshakes")
    ok = connects(disc, token, 10)
    held = metric(relay, "pos_relay_handshaking")
    flood.stop()
    assert "retries" in flood.output() and int(flood.output().split()[-1]) > 0, flood.output()
    assert relay.proc.alive(), relay.proc.output()[-3000:]
    assert ok == 10, f"only {ok} of 10 clients connected during the flood ({held} pending)"


class LossyPath(threading.Thread):
    """A UDP proxy in front of the relay for one client; drop=True loses the relay's datagrams."""

    def __init__(self, relay_port):
        super().__init__(daemon=True)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(("127.0.0.1", relay_port))
        self.port = self.front.getsockname()[1]
        self.client = None
        self.drop = False
        self.dropped = 0
        self.running = True
        self.start()

    def run(self):
        while self.running:
            ready, _, _ = select.select([self.front, self.back], [], [], 0.1)
            for s in ready:
                if s is self.front:
                    data, self.client = s.recvfrom(2048)
                    self.back.send(data)
                else:
                    try:
                        data = s.recv(2048)
                    except ConnectionRefusedError:  # the relay is gone: the test says so
                        continue
                    if self.drop:
                        self.dropped += 1
                    elif self.client:
                        self.front.sendto(data, self.client)

    def close(self):
        self.running = False
        self.join(2)
        self.front.close()
        self.back.close()


def events(proc, kind):
    out = []
    for line in proc.output().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == kind:
            out.append(ev)
    return out


@test
def retransmitted_control_messages_arrive_intact():
    redis, disc, relay = stack()
    token = relay.token()
    path = LossyPath(relay.port)
    try:
        lst = Proc([CIRCUIT_CLIENT, "--relay", f"{relay.id},{relay.peer_id},127.0.0.1:{path.port}",
                    "--token", token, "--identity", new_identity()[0], "--listen", "--ignore"],
                   name="listener")
        me = wait_until(lambda: events(lst, "welcome"), 10, what="the listener's WELCOME")[0]
        path.drop = True  # the relay's INCOMING messages are lost and must be sent again
        askers = []
        for i in range(3):
            ident, peer = new_identity()
            askers.append(peer)
            Proc([CIRCUIT_CLIENT, "--relay", f"{relay.id},{relay.peer_id},127.0.0.1:{relay.port}",
                  "--token", token, "--identity", ident, "--connect", me["peer_id"],
                  "--timeout-ms", "8000"], name=f"asker{i}")
            wait_until(lambda: path.dropped >= 2 * (i + 1), 5, what="the relay to send INCOMING")
        time.sleep(1.5)  # the relay retransmits what was lost
        assert relay.proc.alive(), "relay died:\n" + relay.proc.output()[-3000:]
        path.drop = False
        got = wait_until(lambda: len(events(lst, "incoming")) >= 3 and events(lst, "incoming"),
                         10, what="the INCOMING messages once the path works again")
        assert relay.proc.alive(), relay.proc.output()[-3000:]
        assert sorted(e["peer_id"] for e in got) == sorted(askers), got
    finally:
        path.close()


if __name__ == "__main__":
    run()
