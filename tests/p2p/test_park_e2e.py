"""Parked listeners end to end (docs/protocol.md "Parking", issue 14): real
pos-relay, redis-server, pos-discovery and pos-p2p on loopback.

`pos-p2p listen` parks its home relay connection once idle (--park-after 1
here): it says so, and the relay counts it (pos_relay_parked). A `pos-p2p
send` to the parked listener wakes it and the file arrives intact, several
times in a row (the listener parks again in between). A relay restart loses
the records: the parked listener's keep-alives go unanswered, it reconnects
by itself and is reachable again (a relay stopped with SIGTERM wakes them at
once). Most keep-alives want no ack (PARK_QUIET) and still hold the record.
A token revoked while parked: the listener reconnects, is refused, and says
so (exit 1). Redis down: the parked listener is still reachable through its
relay (found among its records). Address changes while parked are
tests/natlab (park_roaming). Behind a UDP forwarder playing its NAT
(tests/nat_fwd.py), a parked listener whose mapping changes unnoticed right
after a keep-alive still gets the file from a `send` with its default wait:
the relay wakes it again at its next keep-alive, and the sender waits long
enough.
"""
import filecmp
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import Proc, Redis, binary, http, run, test, tmpdir, wait_until  # noqa: E402
from nat_fwd import Nat  # noqa: E402
from suite import P2P, Discovery, Relay  # noqa: E402


SECRET = "p2p-secret-park-tests-abcdef0123456789"
# short timers: a keep-alive every 2 s, records live 20 s without one
RELAY_PARK = {"park_keepalive": 2, "park_lifetime": 20}


def stack():
    redis = Redis()
    disc = Discovery(redis, SECRET)
    relay = Relay(redis, disc, SECRET, extra=RELAY_PARK).start()
    wait_until(lambda: relay.id in disc.ids(), 5, what="the relay to register")
    return redis, disc, relay


def metric(relay, name):
    """The relay's Prometheus value of |name| (no labels), or None when absent."""
    st, _, body = http("GET", relay.http + "/metrics")
    assert st == 200, st
    m = re.search(r"^" + re.escape(name) + r" ([0-9.e+]+)$", body.decode(), re.M)
    return float(m.group(1)) if m else None


def new_identity():
    path = os.path.join(tmpdir(), "identity")
    r = subprocess.run([P2P, "id", "--identity", path], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return path, r.stdout.strip().splitlines()[-1]


def no_sanitizer_report(text, who):
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in text, f"sanitizer report from {who}:\n" + text[-4000:]


def send(*args, timeout=60):
    r = subprocess.run([P2P, "send", "--identity", new_identity()[0], "--no-mdns", *args],
                       capture_output=True, text=True, timeout=timeout)
    no_sanitizer_report(r.stderr, "pos-p2p send")
    return r


class Listener:
    """pos-p2p listen on a port the kernel picks (the machine may have many taken)."""

    def __init__(self, *extra):
        self.identity, self.peer_id = new_identity()
        self.out = tmpdir()
        self.proc = Proc([P2P, "listen", "--identity", self.identity, "--out", self.out,
                          "--mdns", "disabled", *extra], name="listen")
        wait_until(lambda: "listening" in self.proc.output() or not self.proc.alive(), 15,
                   what="pos-p2p listen to start")
        assert self.proc.alive(), self.proc.output()


def parked_listener(disc, token, *extra):
    lst = Listener("--api-url", disc.url, "--token", token, "--park-after", "1", *extra)
    wait_until(lambda: "relay: parked" in lst.proc.output(), 10, what="the listener to park")
    return lst


def one_file(name="park.bin", size=300000):
    p = os.path.join(tmpdir(), name)
    with open(p, "wb") as f:
        f.write(os.urandom(size))
    return p


def send_relayed(disc, token, lst, path):
    r = send("--api-url", disc.url, "--token", token, "--relay-only", "--to", lst.peer_id, path,
             timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    got = os.path.join(lst.out, os.path.basename(path))
    assert filecmp.cmp(path, got, shallow=False), f"{got} differs"
    return r


@test
def parked_listener_woken_by_send_several_times():
    redis, disc, relay = stack()
    token = relay.token()
    lst = parked_listener(disc, token)
    assert "relay: parked (keep-alive every 2 s)" in lst.proc.output(), lst.proc.output()
    wait_until(lambda: metric(relay, "pos_relay_parked") == 1, 5,
               what="the relay to count the parked client")
    for i in range(3):
        parks = lst.proc.output().count("relay: parked")
        t0 = time.monotonic()
        send_relayed(disc, token, lst, one_file(f"park{i}.bin"))
        took = time.monotonic() - t0
        out = lst.proc.output()
        assert out.count("relay: awake (woken by the relay") == i + 1, out
        # idle again: parked again, and only once per wake
        wait_until(lambda: lst.proc.output().count("relay: parked") == parks + 1, 10,
                   what="the listener to park again")
        print(f"send {i} to a parked listener: {took:.2f} s")
    wait_until(lambda: metric(relay, "pos_relay_parked") == 1, 5, what="parked once more")
    assert metric(relay, "pos_relay_wakes_sent_total") >= 3
    assert metric(relay, "pos_relay_wake_seconds_count") == 3
    # each wake reconnected with the ticket of the connection before (senders are new)
    assert metric(relay, "pos_relay_handshakes_resumed_total") >= 3
    no_sanitizer_report(lst.proc.output(), "pos-p2p listen")


@test
def park_options_checked():
    """Bad --park-after / --park-keepalive values stop listen with a sentence (exit 2)."""
    d = tmpdir()
    for args, msg in ((("--park-after", "0"), "--park-after wants seconds from 1 to 86400"),
                      (("--park-after", "x"), "--park-after wants seconds from 1 to 86400"),
                      (("--park-keepalive", "3601"),
                       "--park-keepalive wants seconds from 1 to 3600")):
        r = subprocess.run([P2P, "listen", "--identity", os.path.join(d, "id"), "--out", d,
                            *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and "pos-p2p listen: " + msg in r.stderr, (args, r.stderr)
        assert not os.path.exists(os.path.join(d, "id")), "an identity was created"


@test
def no_park_keeps_the_connection():
    redis, disc, relay = stack()
    token = relay.token()
    lst = Listener("--api-url", disc.url, "--token", token, "--no-park")
    time.sleep(2.5)  # --park-after would have parked it by now (see the test above)
    assert "relay: parked" not in lst.proc.output(), lst.proc.output()
    assert metric(relay, "pos_relay_parked") == 0 and metric(relay, "pos_relay_awake") == 1


@test
def relay_restart_parked_listener_reconnects():
    """A relay stopped with SIGTERM wakes its parked clients: the listener reconnects at once."""
    redis, disc, relay = stack()
    token = relay.token()
    lst = parked_listener(disc, token, "--park-keepalive", "1")
    relay.proc.stop()
    relay.start()
    wait_until(lambda: "relay: awake (woken by the relay" in lst.proc.output(), 10,
               what="the listener to be woken by the stopping relay")
    assert "keep-alives unanswered" not in lst.proc.output(), lst.proc.output()
    wait_until(lambda: (metric(relay, "pos_relay_parked") or 0) +
               (metric(relay, "pos_relay_awake") or 0) == 1, 20,
               what="the listener back on the restarted relay")
    send_relayed(disc, token, lst, one_file())


@test
def relay_crash_parked_listener_finds_out_and_reconnects():
    """A relay killed (no WAKE): the listener's next keep-alive that asks for an ack goes
    unanswered (one in 6, then 3 resends 2 s apart) and it reconnects by itself."""
    redis, disc, relay = stack()
    token = relay.token()
    lst = parked_listener(disc, token, "--park-keepalive", "1")
    relay.proc.stop(signal.SIGKILL)
    relay.start()
    wait_until(lambda: "relay: awake (keep-alives unanswered" in lst.proc.output(), 30,
               what="the listener to notice the restart")
    send_relayed(disc, token, lst, one_file())


@test
def quiet_keepalives_hold_the_record_with_few_acks():
    """Most keep-alives want no answer (PARK_QUIET) yet keep the record alive: with a record
    lifetime of 3 s and a keep-alive a second, the record outlives 10 s while the relay
    answered about one keep-alive in six."""
    redis = Redis()
    disc = Discovery(redis, SECRET)
    relay = Relay(redis, disc, SECRET, extra={"park_keepalive": 1, "park_lifetime": 3}).start()
    wait_until(lambda: relay.id in disc.ids(), 5, what="the relay to register")
    token = relay.token()
    lst = parked_listener(disc, token, "--park-keepalive", "1")
    wait_until(lambda: metric(relay, "pos_relay_parked") == 1, 5, what="parked")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        assert metric(relay, "pos_relay_parked") == 1, "the record ended"
        time.sleep(0.5)
    st, _, body = http("GET", relay.http + "/metrics")
    ok = float(re.search(r'^pos_relay_park_keepalives_total\{result="ok"\} (\d+)', body.decode(),
                         re.M).group(1))
    acks = metric(relay, "pos_relay_park_acks_total")
    assert ok >= 8, ok
    # the first after parking, then one in 6 (the first of those anywhere in the first 6)
    assert 1 <= acks <= 2 + ok / 6, (ok, acks)
    out = lst.proc.output()
    assert "relay: awake" not in out.split("relay: parked")[-1], out
    print(f"keep-alives taken {ok:.0f}, acknowledged {acks:.0f}")


@test
def stopped_parked_listener_says_goodbye():
    """A parked listener that stops (SIGTERM) sends PARK_BYE: the relay forgets it at once,
    so a sender is told the peer is not connected instead of waking nobody for 10 s."""
    redis, disc, relay = stack()
    token = relay.token()
    lst = parked_listener(disc, token)
    wait_until(lambda: metric(relay, "pos_relay_parked") == 1, 5, what="parked")
    lst.proc.stop()
    no_sanitizer_report(lst.proc.output(), "pos-p2p listen")
    wait_until(lambda: metric(relay, "pos_relay_parked") == 0, 5, what="the record to end")
    assert metric(relay, 'pos_relay_parked_ended_total{reason="bye"}') == 1
    r = send("--api-url", disc.url, "--token", token, "--relay-only", "--to", lst.peer_id,
             one_file(), timeout=60)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "not connected" in r.stderr, r.stderr
    assert metric(relay, "pos_relay_wakes_sent_total") == 0


@test
def token_revoked_while_parked_listener_told():
    redis, disc, relay = stack()
    token = relay.token()
    lst = parked_listener(disc, token, "--park-keepalive", "1")
    relay.revoke(token)
    assert lst.proc.wait(20) == 1, lst.proc.output()
    out = lst.proc.output()
    assert "token revoked" in out and "refused the token" in out, out


@test
def redis_down_parked_listener_reachable():
    redis, disc, relay = stack()
    token = relay.token()
    lst = parked_listener(disc, token)
    go = os.path.join(tmpdir(), "go")
    # the dialer's own token check needs Redis: it connects first (no discovery API either)
    dialer = Proc([binary("tests/p2p/park_dial"), f"127.0.0.1:{relay.port}", relay.peer_id,
                   token, lst.peer_id, new_identity()[0], go], name="park_dial")
    wait_until(lambda: "accepted" in dialer.output() or not dialer.alive(), 15,
               what="the dialer's relay connection")
    assert "accepted" in dialer.output(), dialer.output()
    redis.kill()
    open(go, "w").close()
    assert dialer.wait(30) == 0, dialer.output() + lst.proc.output()
    assert "session open" in dialer.output(), dialer.output()
    wait_until(lambda: "session from" in lst.proc.output(), 5, what="the listener's session")
    assert "relay: awake (woken by the relay" in lst.proc.output(), lst.proc.output()


@test
def parked_dialer_reconnects_for_its_own_request():
    """A library client whose own home connection parked dials a (parked) listener: the
    request makes it reconnect first (awake reason 2), then the session opens; with the
    bare request (no session layer) its events come in order: PARKED (7), AWAKE (8) with
    code 2, then the CIRCUIT (2)."""
    redis, disc, relay = stack()
    token = relay.token()
    lst = parked_listener(disc, token)
    go = os.path.join(tmpdir(), "go")
    open(go, "w").close()
    dial = [binary("tests/p2p/park_dial"), f"127.0.0.1:{relay.port}", relay.peer_id, token,
            lst.peer_id, new_identity()[0], go]
    dialer = Proc(dial + ["park"], name="park_dial")
    assert dialer.wait(40) == 0, dialer.output() + lst.proc.output()
    out = dialer.output()
    assert "parked\nevent 7 code 0" in out or "event 7 code 0\nparked" in out, out
    assert "awake: 2, parked 1 time(s)" in out and "session open" in out, out
    wait_until(lambda: "session from" in lst.proc.output(), 5, what="the listener's session")
    dialer = Proc(dial + ["park-raw"], name="park_dial_raw")
    assert dialer.wait(40) == 0, dialer.output() + lst.proc.output()
    events = [x for x in dialer.output().splitlines() if x.startswith("event ")]
    assert events == ["event 7 code 0", "event 8 code 2", "event 2 code 0"], dialer.output()


class FakeEntry:
    """A relay list entry of its own (a new id) for the relay's key at another address
    (the NAT's), refreshed every second while the test runs (the suite's TTL is 3 s)."""

    def __init__(self, disc, relay, addr):
        self.id = str(uuid.uuid4())
        self.body = {"id": self.id, "peer_id": relay.peer_id, "addrs": [addr]}
        self.url = disc.url
        self.stop = threading.Event()
        self.post()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def post(self):
        st, _, body = http("POST", self.url + "/api/p2p/relays", self.body,
                           {"Authorization": "Bearer " + SECRET,
                            "Content-Type": "application/json"})
        assert st in (200, 201, 204), (st, body)

    def run(self):
        while not self.stop.wait(1):
            self.post()


@test
def send_reaches_a_parked_listener_after_an_unnoticed_nat_rebinding():
    """Issue 14: the listener's NAT gives it a new mapping right after a keep-alive that
    wanted no answer (PARK_QUIET), so the relay's WAKEs go to the old one; its next keep-alive, 8 s later
    (after the 2 s of WAKEs, however long `send` takes to start), moves the record and
    the relay wakes it there. `send` without --timeout waits for that (45 s at most)
    and the file arrives."""
    redis = Redis()
    disc = Discovery(redis, SECRET)
    relay = Relay(redis, disc, SECRET, extra={"park_keepalive": 8, "park_lifetime": 30}).start()
    wait_until(lambda: relay.id in disc.ids(), 5, what="the relay to register")
    token = relay.token()
    nat = Nat(relay.port)
    entry = FakeEntry(disc, relay, f"127.0.0.1:{nat.port}")
    try:
        lst = Listener("--api-url", disc.url, "--token", token, "--relay-id", entry.id,
                       "--park-after", "1")
        wait_until(lambda: "relay: parked" in lst.proc.output(), 15, what="the listener to park")
        assert "keep-alive every 8 s" in lst.proc.output(), lst.proc.output()
        nat.rebind_after_quiet(timeout=30)
        t0 = time.monotonic()
        path = one_file()
        r = send("--api-url", disc.url, "--token", token, "--relay-only", "--relay-id",
                 relay.id, "--to", lst.peer_id, path, timeout=90)
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stdout + r.stderr + lst.proc.output()
        got = os.path.join(lst.out, os.path.basename(path))
        assert filecmp.cmp(path, got, shallow=False), f"{got} differs"
        assert "relay: awake (woken by the relay" in lst.proc.output(), lst.proc.output()
        # the record moved, and the wake that reached the listener came after the first
        # series (2 s): it followed the keep-alive from the new mapping
        wait_until(lambda: (metric(relay, "pos_relay_park_roams_total") or 0) >= 1 and
                   (metric(relay, "pos_relay_wake_seconds_count") or 0) >= 1, 5,
                   what="the roam and the wake counted")
        assert metric(relay, "pos_relay_wake_seconds_sum") > 3, relay.proc.output()[-3000:]
        assert metric(relay, "pos_relay_wakes_sent_total") >= 6
        print(f"    send after an unnoticed rebinding: {took:.2f} s")
        no_sanitizer_report(lst.proc.output(), "pos-p2p listen")
    finally:
        entry.stop.set()
        nat.close()


if __name__ == "__main__":
    run()
