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
Behind a UDP forwarder that plays a NAT (Nat below), a parked client whose mapping
changes without its knowing is still reached: the CONNECT waits for its next keep-alive
(park_keepalive + 10 s), which moves the record and starts the WAKEs again there; a
forged or replayed keep-alive from a new address moves nothing.
"""
import hashlib
import json
import os
import secrets
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import harness  # noqa: E402
from harness import Proc, Redis, binary, run, test, tmpdir, wait_until  # noqa: E402
from nat_fwd import Nat  # noqa: E402
from test_relay_run import Relay  # noqa: E402

del harness._tests[:]  # the tests of test_relay_run run on their own

PARK = binary("tests/relay/park_client")
CTRL = binary("tests/relay/ctrl_client")


class Client:
    """A park_client process driven through its command file; its JSON lines from its log."""

    def __init__(self, relay, token, *args, name, seconds=30, port=None):
        self.name = name
        self.cmds = os.path.join(tmpdir(), name + ".cmds")
        open(self.cmds, "w").close()
        self.proc = Proc([PARK, "--to", f"127.0.0.1:{port or relay.port}", "--token", token,
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


def unanswered_keepalive(client, acked_at):
    """A valid keep-alive, more than a second after the last acked one (|acked_at|,
    time.monotonic()) so that only a missing record can leave it unanswered."""
    n = len(client.events("ack"))
    time.sleep(max(0.0, acked_at + 1.2 - time.monotonic()))
    client.do("ka")
    time.sleep(0.5)  # an ack on loopback takes milliseconds
    assert len(client.events("ack")) == n, client.proc.output()


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
    # more than a second after the last valid one, so each is judged on its mac and counter
    # (a forgery does not count as a keep-alive taken)
    quiet()
    a.do("replay", "badmac", "wrongkey", "otherid")
    quiet(0.5)
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
    # with the circuit open, B may not park
    b.do("park")
    err = b.wait_event("error")
    assert err["code"] == 4 and err["text"] == "circuits or requests open", err
    assert len(b.events("parked")) == 1
    a.wait(15)
    assert a.sanitizer_report() is None
    b.finish()


@test
def unanswered_wake_is_sent_again_with_rising_counters():
    redis = Redis()
    relay = Relay(redis, None).start()
    token = relay.token()
    b = Client(relay, token, name="B")  # does not reconnect when woken
    b.park()
    a = Client(relay, token, name="A")
    a.wait_event("welcome")
    a.do(f"connect {b.peer_id}")
    b.wait_event("wake", 5, timeout=6)  # at 0, 250, 500, 1000 and 2000 ms
    wakes = b.events("wake")
    assert [w["counter"] for w in wakes] == [1, 2, 3, 4, 5], wakes
    assert all(w["valid"] and w["fresh"] for w in wakes), wakes
    wait_until(lambda: metric(relay, "pos_relay_wakes_sent_total") == 5, 5, what="5 wakes")
    assert not a.events("error") and not a.events("circuit")  # still waiting, as for ACCEPT
    a.finish()
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
def parked_presence_is_written_again_after_a_redis_restart():
    redis = Redis()
    relay = Relay(redis, None).start()
    g = Client(relay, relay.token(), name="G")
    g.park()
    key = "pos:presence:" + g.peer_id
    wait_until(lambda: redis.cli("GET", key) == relay.id, 5, what="parked presence")
    redis.kill()
    redis.start()  # empty: no persistence
    assert redis.cli("EXISTS", key) == "0"
    # not a minute later: as soon as the relay is back on Redis
    wait_until(lambda: redis.cli("GET", key) == relay.id, 15, what="presence written again")
    assert int(redis.cli("TTL", key)) > 60
    g.finish()


def member_ttls(redis, token):
    """Seconds left of each member of |token|'s connection set (the cap over relays)."""
    key = "pos:conns:" + hashlib.blake2b(token.encode(), digest_size=32).hexdigest()
    sec, usec = redis.cli("TIME").split()
    now_ms = int(sec) * 1000 + int(usec) // 1000
    out = redis.cli("ZRANGE", key, "0", "-1", "WITHSCORES").split()
    return sorted((int(float(score)) - now_ms) / 1000 for score in out[1::2])


@test
def parked_client_keeps_its_place_under_the_token_cap_written_once_a_minute():
    redis = Redis()
    relay = Relay(redis, None).start()
    token = relay.token("--max-conns", "3")
    h = Client(relay, token, name="H")
    i = Client(relay, token, name="I")
    i.wait_event("welcome")
    h.park()
    # two places in the cap: the live one lives 30 s (refreshed every 5 s), the parked one 150 s
    ttls = member_ttls(redis, token)
    assert len(ttls) == 2 and ttls[0] <= 30 and 100 < ttls[1] <= 150, ttls
    # the cap counts it: a fourth connection of the token is refused while three are in
    j = Client(relay, token, name="J")
    j.wait_event("welcome")
    k = Client(relay, token, name="K")
    assert k.wait_event("relay_closed")["code"] == 0x105, k.proc.output()  # too many connections
    # its record taken back by its own reconnect: a live place again (30 s)
    h.do("reconnect")
    h.wait_event("welcome", 2)
    wait_until(lambda: len(member_ttls(redis, token)) == 3, 5, what="3 places")
    relay.revoke(token)
    wait_until(lambda: member_ttls(redis, token) == [], 5, what="places given back")
    for cl in (h, i, j, k):
        cl.finish()


@test
def relay_shutdown_deletes_parked_presence_and_cap_places():
    redis = Redis()
    relay = Relay(redis, None).start()
    token = relay.token("--max-conns", "3")
    m = Client(relay, token, name="M")
    m.park()
    key = "pos:presence:" + m.peer_id
    wait_until(lambda: redis.cli("GET", key) == relay.id, 5, what="parked presence")
    assert len(member_ttls(redis, token)) == 1
    assert relay.proc.stop() == 0  # SIGTERM: a clean shutdown
    # nothing of the parked client is left to count against its token or name the relay
    assert redis.cli("EXISTS", key) == "0"
    assert member_ttls(redis, token) == []
    m.finish()


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
    unanswered_keepalive(f, 0)  # the old record's: no answer
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
    acked_at = time.monotonic()
    wait_until(lambda: metric(relay, "pos_relay_parked") == 1, 5, what="parked 1")
    # presence stays while parked, under a TTL that covers the once-a-minute write (not the
    # 15 s of a live connection's 5 s refresh)
    key = "pos:presence:" + c.peer_id
    assert redis.cli("GET", key) == relay.id
    assert int(redis.cli("TTL", key)) > 60, redis.cli("TTL", key)
    relay.revoke(token)
    wait_until(lambda: metric(relay, "pos_relay_parked") == 0, 3,
               what="the revoked token's record dropped")
    wait_until(lambda: redis.cli("EXISTS", key) == "0", 3, what="its presence deleted")
    unanswered_keepalive(c, acked_at)
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
    t0 = acked_at = time.monotonic()
    wait_until(lambda: metric(relay, "pos_relay_parked") == 1, 5, what="parked 1")
    wait_until(lambda: metric(relay, "pos_relay_parked") == 0, 8, what="the record expired")
    assert time.monotonic() - t0 > 1.5  # not before its lifetime (3 s after the keep-alive)
    assert metric(relay, 'pos_relay_parked_ended_total{reason="expired"}') == 1
    unanswered_keepalive(d, acked_at)
    d.finish()


@test
def parked_record_of_an_expiring_token_ends_when_the_token_expires():
    redis = Redis()
    relay = Relay(redis, None).start()
    token = relay.token("--expires", "3")
    e = Client(relay, token, name="E")
    e.park()
    e.do("ka")
    e.wait_event("ack")
    acked_at = time.monotonic()
    wait_until(lambda: metric(relay, "pos_relay_parked") == 1, 5, what="parked 1")
    # well inside park_lifetime (120 s): only the token's expiry ends it
    wait_until(lambda: metric(relay, "pos_relay_parked") == 0, 8, what="the record ended")
    assert metric(relay, 'pos_relay_parked_ended_total{reason="expired"}') == 1
    unanswered_keepalive(e, acked_at)
    e.finish()


@test
def bye_ends_the_record_and_presence_at_once_a_forged_one_changes_nothing():
    redis = Redis()
    relay = Relay(redis, None).start()
    token = relay.token()
    b = Client(relay, token, name="B")
    b.park()
    key = "pos:presence:" + b.peer_id
    wait_until(lambda: redis.cli("GET", key) == relay.id, 5, what="parked presence")
    b.do("ka")
    acked_at = time.monotonic()
    b.wait_event("ack")
    # a BYE under another key, or a keep-alive counter replayed into a BYE: nothing changes
    b.do("byewrongkey")
    time.sleep(0.5)
    assert metric(relay, "pos_relay_parked") == 1 and redis.cli("GET", key) == relay.id
    b.do("bye")
    wait_until(lambda: metric(relay, "pos_relay_parked") == 0, 5, what="record gone")
    assert redis.cli("EXISTS", key) == "0"
    m = relay.metrics()
    assert m['pos_relay_parked_ended_total{reason="bye"}'] == 1, m
    # the record is gone: keep-alives are not answered, and a dialer hears "not connected" at once
    unanswered_keepalive(b, acked_at)
    a = Client(relay, token, name="A")
    a.wait_event("welcome")
    a.do(f"connect {b.peer_id}")
    err = a.wait_event("error", timeout=3)
    assert err["code"] == 1, err  # peer not connected, no wake, no 10 s wait
    assert metric(relay, "pos_relay_wakes_sent_total") == 0
    a.finish()
    b.finish()


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


def rebinding_relay():
    """A relay with a 4 s keep-alive (a CONNECT waits 14 s for a parked peer), its token,
    and a NAT in front of the parked client to come."""
    relay = Relay(Redis(), None, extra={"park_keepalive": 4, "park_lifetime": 30}).start()
    return relay, relay.token(), Nat(relay.port)


def dial_after_rebinding(relay, token, nat):
    """B parks behind |nat|, whose mapping then changes unnoticed (B keeps sending to
    the same place); A connects and CONNECTs to B, whose WAKEs go to the old mapping."""
    b = Client(relay, token, "--wake-reconnect", name="B", port=nat.port, seconds=60)
    b.park()
    b.do("ka")
    b.wait_event("ack")
    nat.rebind()
    a = Client(relay, token, name="A", seconds=60)
    a.wait_event("welcome")
    a.do(f"connect {b.peer_id}")
    return b, a


@test
def connect_reaches_a_parked_client_after_an_unnoticed_nat_rebinding():
    """Issue 14, "nothing lost": the parked client's NAT gives it a new mapping it does
    not notice, so the WAKEs of a CONNECT go to the old one and are lost. The CONNECT
    waits park_keepalive + 10 s (14 s here, more than the 10 s of an INCOMING); the
    client's next keep-alive, 11 s later, comes from the new mapping: the relay moves the
    record, acks, and wakes it there at once; the circuit opens and a datagram crosses."""
    relay, token, nat = rebinding_relay()
    try:
        b, a = dial_after_rebinding(relay, token, nat)
        time.sleep(11)  # every WAKE so far (0 .. 2 s) went to the old mapping
        assert not b.events("wake"), b.proc.output()
        assert not a.events("error") and not a.events("circuit"), a.proc.output()
        assert metric(relay, "pos_relay_wakes_sent_total") == 5
        b.do("ka")  # its next keep-alive: from the new mapping
        b.wait_event("ack", 2)
        wake = b.wait_event("wake", timeout=3)
        assert wake["valid"] and wake["fresh"] and wake["counter"] == 6, wake
        b.wait_event("welcome", 2)
        assert b.wait_event("incoming")["peer_id"] == a.peer_id
        b.wait_event("circuit")
        assert a.wait_event("circuit")["peer_id"] == b.peer_id
        a.do("data")
        got = b.wait_event("data", timeout=5)
        assert got["len"] == 11, got
        wait_until(lambda: metric(relay, "pos_relay_wake_seconds_count") == 1, 5,
                   what="wake counted")
        m = relay.metrics()
        assert m["pos_relay_park_roams_total"] == 1, m
        assert m["pos_relay_wake_seconds_sum"] >= 10, m  # counted from the first WAKE
        assert len(nat.mappings) == 2
        a.finish()
        b.finish()
    finally:
        nat.close()


@test
def keepalive_after_the_dialer_gave_up_wakes_nothing():
    """The WAKEs of a CONNECT go to a NAT mapping the parked client lost; the dialer
    gives up and closes its connection. The client's next keep-alive, from its new
    mapping, moves the record and is acked, but wakes nothing: nobody waits for it, so
    it stays parked rather than reconnecting for a circuit that will not come. A new
    CONNECT then wakes it at once, at the new address."""
    relay, token, nat = rebinding_relay()
    try:
        b, a = dial_after_rebinding(relay, token, nat)
        wait_until(lambda: metric(relay, "pos_relay_wakes_sent_total") == 5, 5,
                   what="the five WAKEs to the lost mapping")
        a.do("close")  # the dialer gives up
        a.wait_event("closed")
        wait_until(lambda: metric(relay, "pos_relay_awake") == 0, 5, what="the dialer gone")
        b.do("ka")  # from the new mapping, within the CONNECT's parked wait (14 s)
        b.wait_event("ack", 2)
        time.sleep(1.5)
        assert not b.events("wake") and len(b.events("welcome")) == 1, b.proc.output()
        m = relay.metrics()
        assert m["pos_relay_wakes_sent_total"] == 5 and m["pos_relay_parked"] == 1, m
        assert m["pos_relay_park_roams_total"] == 1, m
        # a new CONNECT still reaches it, at the new mapping
        c = Client(relay, token, name="C", seconds=60)
        c.wait_event("welcome")
        c.do(f"connect {b.peer_id}")
        wake = b.wait_event("wake", timeout=3)
        assert wake["valid"] and wake["fresh"], wake
        assert b.wait_event("incoming")["peer_id"] == c.peer_id
        c.wait_event("circuit")
        a.finish()
        b.finish()
        c.finish()
    finally:
        nat.close()


@test
def forged_or_replayed_keepalive_from_a_new_address_moves_nothing():
    """A keep-alive from a new address is checked on its mac at once (not held back by
    the one-ack-per-second limit), but only a valid, new one moves the record: a
    replay of the client's own keep-alive and a forgery for its record id, each from
    another port, get no answer, and the WAKE of a CONNECT still reaches the client at
    its real address."""
    redis = Redis()
    relay = Relay(redis, None).start()
    token = relay.token()
    nat = Nat(relay.port)
    try:
        b = Client(relay, token, "--wake-reconnect", name="B", port=nat.port)
        record = int(b.park()["record"], 16)
        b.do("ka")
        b.wait_event("ack")
        wait_until(lambda: nat.last_keepalive is not None, 2, what="the keep-alive seen")
        dropped = metric(relay, 'pos_relay_park_keepalives_total{result="dropped"}')
        forged = (bytes([0x25]) + struct.pack(">QQ", record, 1000) + secrets.token_bytes(16))
        others = []
        for data in (nat.last_keepalive, forged):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.5)
            s.sendto(data, ("127.0.0.1", relay.port))
            others.append(s)
        for s in others:
            try:
                s.recvfrom(2048)
                raise AssertionError("a forged or replayed keep-alive was answered")
            except socket.timeout:
                pass
            s.close()
        wait_until(lambda: metric(relay, 'pos_relay_park_keepalives_total{result="dropped"}')
                   == dropped + 2, 3, what="both dropped")
        assert metric(relay, "pos_relay_park_roams_total") == 0
        a = Client(relay, token, name="A")
        a.wait_event("welcome")
        a.do(f"connect {b.peer_id}")
        assert b.wait_event("wake")["valid"]
        b.wait_event("welcome", 2)
        assert a.wait_event("circuit")["peer_id"] == b.peer_id
        a.finish()
        b.finish()
    finally:
        nat.close()


if __name__ == "__main__":
    run()
