#!/usr/bin/python3
"""Parking (docs/protocol.md "Parking") on a real pos-relay with real Redis: a bare
pos-relay/4 client (tests/relay/park_client, made from common/) parks, keeps its record
alive with MACed keep-alives, is woken by a CONNECT from tests/relay/ctrl_client, and
loses its record to a revocation or to the lifetime. The relay runs with two workers
(the suite's default), so parked datagrams cross the port's steering program.

What a client would notice: PARKED and then acks only for keep-alives that verify and
are new (a replay, a wrong key, a flipped mac bit or another record id get no answer at
all); acks follow the client to a new source port; a CONNECT to the parked peer makes
WAKE datagrams arrive (mac valid, counters rising), and once the client reconnects the
dialer gets its circuit; a revoked token's or an expired record's keep-alives go
unanswered; PARK is refused with a reason where the protocol says so. /metrics shows it.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import harness  # noqa: E402
from harness import Proc, Redis, binary, run, test, tmpdir, wait_until  # noqa: E402
from test_relay_run import Relay  # noqa: E402

del harness._tests[:]  # the tests of test_relay_run run on their own

PARK = binary("tests/relay/park_client")
CTRL = binary("tests/relay/ctrl_client")


class Client:
    """A park_client process driven through its command file; its JSON lines from its log."""

    def __init__(self, relay, token, *args, name, seconds=30):
        self.name = name
        self.cmds = os.path.join(tmpdir(), name + ".cmds")
        open(self.cmds, "w").close()
        self.proc = Proc([PARK, "--to", f"127.0.0.1:{relay.port}", "--token", token,
                          "--commands", self.cmds, "--seconds", str(seconds), *args], name=name)
        self.peer_id = self.wait_event("start")["peer_id"]

    def do(self, *lines):
        with open(self.cmds, "a") as f:
            for line in lines:
                f.write(line + "\n")

    def events(self, kind):
        out = []
        for line in self.proc.output().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and ev.get("event") == kind:
                out.append(ev)
        return out

    def wait_event(self, kind, n=1, timeout=10):
        wait_until(lambda: len(self.events(kind)) >= n, timeout,
                   what=f"{self.name}: {n} x {kind}\n{self.proc.output()[-3000:]}")
        return self.events(kind)[n - 1]

    def park(self):
        self.wait_event("welcome")
        self.do("park")
        parked = self.wait_event("parked")
        self.wait_event("freed")
        return parked

    def finish(self):
        self.do("quit")
        self.proc.wait(15)
        assert self.proc.sanitizer_report() is None, self.proc.output()[-4000:]


def metric(relay, name):
    return relay.metrics().get(name, 0)


def quiet(seconds=1.2):
    """Longer than the relay's one ack per record per second, so the next keep-alive is
    judged on its mac and counter."""
    time.sleep(seconds)


@test
def parked_client_keepalives_acked_forgeries_and_replays_unanswered():
    redis = Redis()
    relay = Relay(redis, None).start()
    token = relay.token()
    a = Client(relay, token, name="A")
    assert a.wait_event("welcome")["version"] == 4
    wait_until(lambda: metric(relay, "pos_relay_awake") == 1, 5, what="awake 1")
    parked = a.park()
    assert parked["keepalive_s"] == 25 and parked["lifetime_s"] == 120, parked
    wait_until(lambda: metric(relay, "pos_relay_parked") == 1, 5, what="parked 1")
    # the QUIC connection is gone on the relay too, without a CONNECTION_CLOSE
    wait_until(lambda: metric(relay, "pos_relay_connections") == 0, 5, what="connection freed")
    assert metric(relay, "pos_relay_awake") == 0
    assert not a.events("relay_closed"), a.proc.output()

    a.do("ka")
    ack = a.wait_event("ack")
    assert ack == {"event": "ack", "counter": 1, "valid": True}, ack
    for forged in ("replay", "badmac", "wrongkey", "otherid"):
        quiet()
        a.do(forged)
    quiet()
    assert len(a.events("ack")) == 1, a.proc.output()  # none of them answered
    # a new source port (NAT rebinding): the next valid one is acked there
    a.do("rebind", "ka")
    ack2 = a.wait_event("ack", 2)
    assert ack2["valid"] and ack2["counter"] == 5, ack2  # 2..4 went to forgeries
    # faster than one per second: dropped, not answered
    a.do("ka")
    quiet()
    assert len(a.events("ack")) == 2, a.proc.output()
    m = relay.metrics()
    assert m['pos_relay_park_keepalives_total{result="ok"}'] == 2, m
    assert m['pos_relay_park_keepalives_total{result="dropped"}'] == 5, m
    assert not a.events("stray"), a.proc.output()
    a.finish()


@test
def connect_wakes_a_parked_peer_and_the_dialer_gets_its_circuit():
    redis = Redis()
    relay = Relay(redis, None).start()
    token = relay.token()
    b = Client(relay, token, "--wake-reconnect", name="B")
    b.park()
    b.do("ka")
    b.wait_event("ack")
    a = Proc([CTRL, "--to", f"127.0.0.1:{relay.port}", "--token", token, "--connect", b.peer_id,
              "--seconds", "3"], name="A")
    wake = b.wait_event("wake")
    assert wake["valid"] and wake["fresh"] and wake["counter"] == 1, wake
    b.wait_event("welcome", 2)
    b.wait_event("incoming")
    circuit = b.wait_event("circuit")
    wait_until(lambda: '"event":"circuit"' in a.output(), 10, what="A's circuit\n" + a.output())
    ca = [json.loads(x) for x in a.output().splitlines() if '"event":"circuit"' in x][0]
    assert ca["peer_id"] == b.peer_id, ca
    assert circuit["peer_id"] != b.peer_id, circuit
    wait_until(lambda: metric(relay, "pos_relay_wake_seconds_count") == 1, 5, what="wake counted")
    m = relay.metrics()
    assert m["pos_relay_parked"] == 0 and m["pos_relay_awake"] == 2, m
    assert m["pos_relay_wakes_sent_total"] >= 1, m
    assert m["pos_relay_wake_seconds_count"] == 1, m
    assert 0 <= m["pos_relay_wake_seconds_sum"] < 5, m
    # every wake datagram the client saw verified, with counters strictly rising
    wakes = b.events("wake")
    assert all(w["valid"] for w in wakes), wakes
    assert [w["counter"] for w in wakes] == sorted({w["counter"] for w in wakes}), wakes
    a.wait(15)
    assert a.sanitizer_report() is None
    b.finish()


@test
def parked_peer_is_reachable_through_its_relay_with_redis_down():
    redis = Redis()
    relay = Relay(redis, None).start()
    token = relay.token()
    b = Client(relay, token, "--wake-reconnect", name="B")
    b.park()
    a = Client(relay, token, name="A")  # connected while Redis was up
    a.wait_event("welcome")
    redis.kill()
    wait_until(lambda: metric(relay, "pos_relay_redis_up") == 0, 10, what="Redis seen down")
    # the relay finds the peer among its own records, and takes the woken client back from its
    # record (the same token): no Redis round trip on the way
    a.do(f"connect {b.peer_id}")
    assert b.wait_event("wake")["valid"]
    b.wait_event("welcome", 2)
    assert b.wait_event("incoming")["peer_id"] == a.peer_id
    assert a.wait_event("circuit")["peer_id"] == b.peer_id
    b.wait_event("circuit")
    assert not b.events("relay_closed"), b.proc.output()
    a.finish()
    b.finish()


@test
def hello_of_a_parked_peer_ends_its_record():
    redis = Redis()
    relay = Relay(redis, None).start()
    token = relay.token()
    f = Client(relay, token, name="F")
    f.park()
    wait_until(lambda: metric(relay, "pos_relay_parked") == 1, 5, what="parked 1")
    f.do("reconnect")  # on its own, not woken: its new home connection wins
    f.wait_event("welcome", 2)
    wait_until(lambda: metric(relay, "pos_relay_parked") == 0, 5, what="the record ended")
    assert metric(relay, 'pos_relay_parked_ended_total{reason="home"}') == 1
    assert metric(relay, "pos_relay_awake") == 1
    f.do("ka")  # the old record's keep-alive: unanswered
    quiet(1.5)
    assert not f.events("ack"), f.proc.output()
    f.finish()


@test
def revoked_token_drops_the_record_and_its_keepalives_go_unanswered():
    redis = Redis()
    relay = Relay(redis, None).start()
    token = relay.token()
    c = Client(relay, token, name="C")
    c.park()
    c.do("ka")
    c.wait_event("ack")
    wait_until(lambda: metric(relay, "pos_relay_parked") == 1, 5, what="parked 1")
    relay.revoke(token)
    wait_until(lambda: metric(relay, "pos_relay_parked") == 0, 3,
               what="the revoked token's record dropped")
    quiet()
    c.do("ka")
    quiet(1.5)
    assert len(c.events("ack")) == 1, c.proc.output()
    # the client reconnects and is refused as a connected client would be
    c.do("reconnect")
    closed = c.wait_event("relay_closed")
    assert closed["code"] == 0x102, closed  # token revoked
    c.finish()


@test
def record_without_keepalives_expires_after_park_lifetime():
    redis = Redis()
    relay = Relay(redis, None, extra={"park_lifetime": 3, "park_keepalive": 1}).start()
    token = relay.token()
    d = Client(relay, token, name="D")
    parked = d.park()
    assert parked["keepalive_s"] == 1 and parked["lifetime_s"] == 3, parked
    d.do("ka")
    d.wait_event("ack")
    t0 = time.monotonic()
    wait_until(lambda: metric(relay, "pos_relay_parked") == 1, 5, what="parked 1")
    wait_until(lambda: metric(relay, "pos_relay_parked") == 0, 8, what="the record expired")
    assert time.monotonic() - t0 > 1.5  # not before its lifetime (3 s after the keep-alive)
    assert metric(relay, 'pos_relay_parked_ended_total{reason="expired"}') == 1
    d.do("ka")
    quiet(1.5)
    assert len(d.events("ack")) == 1, d.proc.output()
    d.finish()


@test
def park_refused_when_not_home_with_a_request_open_or_parking_off():
    redis = Redis()
    relay = Relay(redis, None).start()
    token = relay.token()
    e = Client(relay, token, "--not-home", name="E")
    e.wait_event("welcome")
    e.do("park")
    err = e.wait_event("error")
    assert err["code"] == 4 and err["text"] == "only a home connection parks", err
    # a CONNECT waiting for its peer (parked F, never waking): no parking meanwhile
    f = Client(relay, token, name="F")
    f.park()
    g = Client(relay, token, name="G")
    g.wait_event("welcome")
    g.do(f"connect {f.peer_id}", "park")
    err = g.wait_event("error")
    assert err["text"] == "circuits or requests open", err
    assert not g.events("parked")
    wait_until(lambda: metric(relay, "pos_relay_park_refused_total") == 2, 5, what="2 refusals")
    for cl in (e, f, g):
        cl.finish()
    off = Relay(redis, None, extra={"park_lifetime": 0}).start()
    h = Client(off, off.token(), name="H")
    h.wait_event("welcome")
    h.do("park")
    err = h.wait_event("error")
    assert err["text"] == "parking is off on this relay", err
    h.finish()


if __name__ == "__main__":
    run()
