"""Peer-to-peer sessions end to end: `pos-p2p send` and `pos-p2p listen` with
the real relay, redis-server and pos-discovery on loopback.

Directly by address and through relays (one relay, and two relays where the
listener sits on the other one: redirect), files of 0 B, 1 B and 20 MB arrive
identical; a wrong peer id and a peer missing from --allow are refused with a
clear reason; a transfer killed half-way resumes from what was received; a
bandwidth-limited token's transfer takes as long as its limit implies;
revoking a connected listener's token makes it unreachable within 2 s; a
listener whose relay shuts down moves to another; POS_DOCKER=true listens on
7373. `send --json` prints one summary object (path, bytes per path, files),
also when no session came up, and the relay's /circuits counters agree that
the relayed bytes went through its circuit.
"""
import filecmp
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import Proc, Redis, Skip, free_port, http, run, test, tmpdir, wait_until  # noqa: E402
from suite import P2P, Discovery, Relay  # noqa: E402

SECRET = "p2p-secret-p2p-tests-abcdef0123456789"


def stack(n_relays=1):
    redis = Redis()
    disc = Discovery(redis, SECRET)
    relays = [Relay(redis, disc, SECRET).start() for _ in range(n_relays)]
    wait_until(lambda: {r.id for r in relays} <= disc.ids(), 5, what="the relays to register")
    return redis, disc, relays


def no_sanitizer_report(text, who):
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in text, f"sanitizer report from {who}:\n" + text[-4000:]


def new_identity():
    path = os.path.join(tmpdir(), "identity")
    r = subprocess.run([P2P, "id", "--identity", path], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return path, r.stdout.strip().splitlines()[-1]


def make_files(d):
    files = {"zero.bin": b"", "one.bin": b"\x5a", "big.bin": os.urandom(20 * 1000 * 1000)}
    paths = []
    for name, data in files.items():
        p = os.path.join(d, name)
        with open(p, "wb") as f:
            f.write(data)
        paths.append(p)
    return paths


class Listener:
    def __init__(self, *extra, port=None, identity=None):
        self.identity, self.peer_id = identity or new_identity()
        self.out = tmpdir()
        self.port = port or free_port(socket.SOCK_DGRAM)
        self.proc = Proc([P2P, "listen", "--identity", self.identity, "--port", str(self.port),
                          "--out", self.out, "--mdns", "disabled", *extra], name="listen")
        wait_until(lambda: "listening" in self.proc.output() or not self.proc.alive(), 15,
                   what="pos-p2p listen to start")
        assert self.proc.alive(), self.proc.output()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"


def send(*args, identity=None, timeout=120):
    ident = identity or new_identity()[0]
    r = subprocess.run([P2P, "send", "--identity", ident, *args], capture_output=True,
                       text=True, timeout=timeout)
    no_sanitizer_report(r.stderr, "pos-p2p send")
    return r


def check_received(paths, out):
    for p in paths:
        got = os.path.join(out, os.path.basename(p))
        assert os.path.exists(got), f"{got} missing; dir has {os.listdir(out)}"
        assert filecmp.cmp(p, got, shallow=False), f"{got} differs"
    assert not [n for n in os.listdir(out) if n.startswith(".")], os.listdir(out)


@test
def punch_and_mdns_options_checked():
    """Bad punching or mDNS values stop send and listen with a sentence (exit 2), before
    anything is sent or created; without --addr, --api-url and mDNS there is no way."""
    d = tmpdir()
    f = os.path.join(d, "f")
    with open(f, "wb") as fh:
        fh.write(b"x")
    peer = new_identity()[1]
    for args, msg in ((("--punch-window", "0"), "--punch-window wants seconds from 0.1 to 60"),
                      (("--punch-window", "61"), "--punch-window wants seconds from 0.1 to 60"),
                      (("--punch-retry", "0.5"), "--punch-retry wants seconds from 1 to 3600"),
                      (("--punch-retry", "x"), "--punch-retry wants seconds from 1 to 3600")):
        r = send("--to", peer, "--addr", "127.0.0.1:9", *args, f, timeout=10)
        assert r.returncode == 2 and "pos-p2p send: " + msg in r.stderr, (args, r.stderr)
        out = tmpdir()
        r = subprocess.run([P2P, "listen", "--identity", os.path.join(d, "lid"), "--out", out,
                            *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and "pos-p2p listen: " + msg in r.stderr, (args, r.stderr)
        assert not os.path.exists(os.path.join(d, "lid")), "an identity was created"
    r = send("--to", peer, "--no-mdns", f, timeout=10)
    assert r.returncode == 2 and "with --no-mdns, give --addr" in r.stderr, r.stderr


# ---- direct ----

@test
def direct_files_arrive_identical():
    lst = Listener()
    paths = make_files(tmpdir())
    r = send("--to", lst.peer_id, "--addr", lst.addr, *paths)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "path: direct" in r.stdout, r.stdout
    assert "20000001 bytes" in r.stdout, r.stdout
    check_received(paths, lst.out)
    wait_until(lambda: "received big.bin" in lst.proc.output(), 5, what="listener report")


@test
def direct_port_less_address_means_7373():
    r = send("--to", new_identity()[1], "--addr", "127.0.0.1", "--timeout", "1",
             make_files(tmpdir())[1])
    assert r.returncode != 0
    assert "127.0.0.1:7373" in r.stderr, r.stderr


@test
def send_json_without_session():
    one = make_files(tmpdir())[1]
    dead = free_port(socket.SOCK_DGRAM)  # nobody answers there
    r = send("--json", "--to", new_identity()[1], "--addr", f"127.0.0.1:{dead}", "--timeout",
             "1", one)
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)  # the whole of stdout: one object
    assert doc["ok"] is False and doc["path"] == "none" and doc["files_sent"] == 0, doc
    assert doc["upgraded_after_ms"] is None and doc["bytes"] == 0, doc


@test
def wrong_peer_id_refused():
    lst = Listener()
    other = new_identity()[1]
    paths = make_files(tmpdir())
    r = send("--to", other, "--addr", lst.addr, paths[1])
    assert r.returncode != 0
    assert "wrong peer id" in r.stderr and other in r.stderr, r.stderr
    assert os.listdir(lst.out) == []


@test
def peer_not_in_allow_list_refused():
    allowed = new_identity()
    lst = Listener("--allow", allowed[1])
    paths = make_files(tmpdir())
    r = send("--to", lst.peer_id, "--addr", lst.addr, paths[1])
    assert r.returncode != 0
    assert "does not allow this device" in r.stderr, r.stderr
    assert os.listdir(lst.out) == []
    # the allowed peer gets through
    r = send("--to", lst.peer_id, "--addr", lst.addr, paths[1], identity=allowed[0])
    assert r.returncode == 0, r.stderr
    check_received([paths[1]], lst.out)


@test
def interrupted_transfer_resumes():
    lst = Listener()
    d = tmpdir()
    path = os.path.join(d, "resume.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(8 * 1000 * 1000))
    ident = new_identity()[0]
    sender = Proc([P2P, "send", "--identity", ident, "--to", lst.peer_id, "--addr", lst.addr,
                   "--limit-rate", "2000000", path], name="send-slow")
    def part_size():  # the part file is .resume.bin.KEY.part (docs/transfer.md)
        parts = glob.glob(os.path.join(lst.out, ".resume.bin.*.part"))
        return parts and os.path.getsize(parts[0])

    wait_until(lambda: part_size() > 1000000, 20, what="half of the file to arrive")
    sender.signal(signal.SIGKILL)
    sender.wait(10)
    held = part_size()
    assert held < 8 * 1000 * 1000
    assert not os.path.exists(os.path.join(lst.out, "resume.bin"))
    time.sleep(0.5)  # the listener notices the session is gone only by idle timeout: fine
    r = send("--to", lst.peer_id, "--addr", lst.addr, path, identity=ident)
    assert r.returncode == 0, r.stdout + r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith("resuming ")]
    assert line, r.stdout
    offset = int(line[0].split()[-3])
    assert offset > 0, r.stdout
    # only the rest travelled
    done = [x for x in r.stdout.splitlines() if x.startswith("done: ")][0]
    assert int(done.split()[3]) == 8 * 1000 * 1000 - offset, done
    check_received([path], lst.out)


# ---- relayed ----

@test
def relayed_files_arrive_identical():
    redis, disc, (relay,) = stack()
    token = relay.token()
    lst = Listener("--api-url", disc.url, "--token", token)
    paths = make_files(tmpdir())
    r = send("--json", "--api-url", disc.url, "--token", token, "--relay-only", "--to",
             lst.peer_id, *paths)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "path: relayed" in r.stderr, r.stderr  # --json: the human lines go to stderr
    check_received(paths, lst.out)
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["path"] == "relayed", doc
    assert doc["upgraded_after_ms"] is None and doc["bytes_direct"] == 0, doc
    assert doc["bytes"] == 20000001 and doc["bytes_relayed"] >= doc["bytes"], doc
    assert doc["files_sent"] == doc["files_ok"] == 3, doc
    assert [f["size"] for f in doc["files"]] == [0, 1, 20000000], doc
    assert doc["seconds"] > 0 and doc["remote"].startswith("127.0.0.1:"), doc
    assert doc["relay_id"] == relay.id and doc["circuit_id"], doc  # was null without a redirect
    # the relay's own counters for that circuit (a snapshot refreshed twice a
    # second): the file went through it, from the sender's side
    def sender_bytes():
        c = relay_circuit(relay, doc["circuit_id"])
        return c and c["bytes"][c["ids"].index(doc["circuit_id"])]
    wait_until(lambda: sender_bytes() >= 20000000, 3,
               what="the relay's circuit counters to show the file")


def relay_circuit(relay, circuit_id):
    """The relay's /circuits entry for the circuit with side id |circuit_id|, or None."""
    st, _, body = http("GET", relay.http + "/circuits")
    assert st == 200, st
    return next((c for c in json.loads(body)["circuits"] if circuit_id in c["ids"]), None)


@test
def direct_without_answer_falls_back_to_relay():
    redis, disc, (relay,) = stack()
    token = relay.token()
    lst = Listener("--api-url", disc.url, "--token", token)
    dead = free_port(socket.SOCK_DGRAM)  # nobody answers there
    one = make_files(tmpdir())[1]
    r = send("--api-url", disc.url, "--token", token, "--addr", f"127.0.0.1:{dead}",
             "--timeout", "1", "--to", lst.peer_id, one)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "trying the relay" in r.stderr and "path: relayed" in r.stdout, r.stdout + r.stderr
    check_received([one], lst.out)


@test
def relayed_through_two_relays_redirect():
    redis, disc, (ra, rb) = stack(2)
    token = ra.token()
    lst = Listener("--api-url", disc.url, "--token", token, "--relay-id", rb.id)
    paths = make_files(tmpdir())
    r = send("--api-url", disc.url, "--token", token, "--relay-id", ra.id, "--relay-only",
             "--to", lst.peer_id, *paths)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "path: relayed" in r.stdout, r.stdout
    check_received(paths, lst.out)


@test
def relayed_peer_not_connected():
    redis, disc, (relay,) = stack()
    token = relay.token()
    r = send("--api-url", disc.url, "--token", token, "--relay-only", "--to",
             new_identity()[1], make_files(tmpdir())[1])
    assert r.returncode != 0
    assert "not connected" in r.stderr, r.stderr


@test
def relayed_not_allowed_declined():
    redis, disc, (relay,) = stack()
    token = relay.token()
    lst = Listener("--api-url", disc.url, "--token", token, "--allow", new_identity()[1])
    r = send("--api-url", disc.url, "--token", token, "--relay-only", "--to", lst.peer_id,
             make_files(tmpdir())[1])
    assert r.returncode != 0
    assert "refused" in r.stderr, r.stderr
    assert os.listdir(lst.out) == []


@test
def bandwidth_limited_token_takes_its_time():
    redis, disc, (relay,) = stack()
    limited = relay.token("--bytes-per-sec", "500000", "--burst", "100000")
    free = relay.token()
    lst = Listener("--api-url", disc.url, "--token", free)
    path = os.path.join(tmpdir(), "two.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(2 * 1000 * 1000))
    t0 = time.monotonic()
    r = send("--api-url", disc.url, "--token", limited, "--relay-only", "--to", lst.peer_id,
             path, timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    check_received([path], lst.out)
    # 2 MB at 500 kB/s: about 4 s (the burst and handshake shave a little)
    assert took >= 3.5, f"took {took:.1f} s"
    assert took <= 20, f"took {took:.1f} s"


@test
def revoked_listener_unreachable_within_2s():
    redis, disc, (relay,) = stack()
    ltoken = relay.token()
    stoken = relay.token()
    lst = Listener("--api-url", disc.url, "--token", ltoken)
    one = make_files(tmpdir())[1]
    r = send("--api-url", disc.url, "--token", stoken, "--relay-only", "--to", lst.peer_id, one)
    assert r.returncode == 0, r.stderr
    relay.revoke(ltoken)
    t0 = time.monotonic()
    wait_until(lambda: "token revoked" in lst.proc.output(), 2.5,
               what="the listener to be disconnected")
    assert time.monotonic() - t0 <= 2.5
    r = send("--api-url", disc.url, "--token", stoken, "--relay-only", "--to", lst.peer_id, one)
    assert r.returncode != 0
    assert "not connected" in r.stderr, r.stderr
    assert lst.proc.wait(5) == 1, lst.proc.output()  # a refused token ends the listener


@test
def listener_moves_to_another_relay_when_its_relay_shuts_down():
    redis, disc, relays = stack(2)
    token = relays[0].token()
    lst = Listener("--api-url", disc.url, "--token", token)
    first = [r for r in relays if f"relay: {r.id}" in lst.proc.output()]
    assert len(first) == 1, lst.proc.output()
    other = [r for r in relays if r is not first[0]][0]
    first[0].proc.stop()  # SIGTERM: GOAWAY to its clients, deregistration
    wait_until(lambda: f"relay: {other.id}" in lst.proc.output(), 15,
               what="the listener to move to the other relay")
    one = make_files(tmpdir())[1]
    r = send("--api-url", disc.url, "--token", token, "--relay-only", "--to", lst.peer_id, one)
    assert r.returncode == 0, r.stdout + r.stderr
    check_received([one], lst.out)


@test
def listener_keeps_home_relay_without_clear_gain():
    redis, disc, relays = stack(2)
    token = relays[0].token()
    lst = Listener("--api-url", disc.url, "--token", token, "--recheck", "1")
    home = [r for r in relays if f"relay: {r.id}" in lst.proc.output()]
    assert len(home) == 1, lst.proc.output()
    other = [r for r in relays if r is not home[0]][0]
    one = make_files(tmpdir())[1]
    # on loopback no relay is 30% and 10 ms faster than another: the home stays; and
    # measuring the other relay never makes the listener unreachable, not even just after
    # a recheck (a sender on the other relay is redirected to the home relay)
    for n in (1, 2):
        wait_until(lambda: lst.proc.output().count(f"home relay kept: {home[0].id}") >= n, 10,
                   what=f"recheck {n}")
        r = send("--api-url", disc.url, "--token", token, "--relay-only", "--relay-id",
                 other.id, "--to", lst.peer_id, "--timeout", "5", one)
        assert r.returncode == 0, f"after recheck {n}: " + r.stdout + r.stderr
    assert lst.proc.output().count("relay: ") == 1, lst.proc.output()
    check_received([one], lst.out)


@test
def listener_reachable_at_once_with_two_relays():
    # Measuring both relays at start must not move the listener's presence: a sender on
    # either relay reaches it as soon as it says "listening" (before: "peer not connected"
    # in about half of the starts). The sender is put on the relay that is not the
    # listener's home, where only Redis presence can lead to it.
    redis, disc, relays = stack(2)
    token = relays[0].token()
    one = make_files(tmpdir())[1]
    failures = []
    for run_no in range(5):
        lst = Listener("--api-url", disc.url, "--token", token)
        home = [r for r in relays if f"relay: {r.id}" in lst.proc.output()]
        assert len(home) == 1, lst.proc.output()
        other = [r for r in relays if r is not home[0]][0]
        r = send("--api-url", disc.url, "--token", token, "--relay-only", "--relay-id",
                 other.id, "--to", lst.peer_id, "--timeout", "5", one)
        if r.returncode != 0:
            failures.append(f"run {run_no}: {r.stderr.strip()}")
        # presence names the home relay, the one the listener chose
        held = redis.cli("GET", f"pos:presence:{lst.peer_id}")
        if held != home[0].id:
            failures.append(f"run {run_no}: presence names {held or 'no relay'}, not the home "
                            f"relay {home[0].id}")
        assert lst.proc.stop() == 0
        no_sanitizer_report(lst.proc.output(), "pos-p2p listen")
    assert not failures, "\n".join(failures)


@test
def presence_stays_with_the_newest_home_connection():
    # A device whose home moved to relay B while its old connection to relay A still
    # lingers (here: a second listener with the same identity) must stay at B: A's
    # periodic presence refresh (every 5 s) must not take the key back (before: it did,
    # and senders were sent to the stale connection).
    redis, disc, (a, b) = stack(2)
    token = a.token()
    ident = new_identity()
    old = Listener("--api-url", disc.url, "--token", token, "--relay-id", a.id, identity=ident)
    key = f"pos:presence:{ident[1]}"
    assert redis.cli("GET", key) == a.id
    new = Listener("--api-url", disc.url, "--token", token, "--relay-id", b.id, identity=ident)
    assert redis.cli("GET", key) == b.id
    # B paused, so that its own refresh cannot hide A's write (their 5 s timers run in step)
    b.proc.signal(signal.SIGSTOP)
    try:
        t_end = time.monotonic() + 6  # more than one refresh period of relay A
        while time.monotonic() < t_end:
            held = redis.cli("GET", key)
            assert held == b.id, f"presence moved back to {held or 'nobody'}"
            time.sleep(0.1)
    finally:
        b.proc.signal(signal.SIGCONT)
    assert old.proc.alive() and new.proc.alive()


@test
def listener_waits_for_its_relay_to_come_back():
    redis, disc, (relay,) = stack()
    token = relay.token()
    lst = Listener("--api-url", disc.url, "--token", token, "--retry-max", "1")
    assert lst.proc.output().count(f"relay: {relay.id}") == 1, lst.proc.output()
    relay.proc.stop()  # SIGTERM: GOAWAY, deregistration; no other relay in the list
    wait_until(lambda: lst.proc.output().count("retrying in") >= 2 or not lst.proc.alive(), 10,
               what="the listener to say it is retrying")
    assert lst.proc.alive(), "the listener gave up:\n" + lst.proc.output()
    relay.start()  # same port, same identity and id
    wait_until(lambda: lst.proc.output().count(f"relay: {relay.id}") == 2, 10,
               what="the listener to be back on its relay")
    one = make_files(tmpdir())[1]
    r = send("--api-url", disc.url, "--token", token, "--relay-only", "--to", lst.peer_id,
             "--timeout", "5", one)
    assert r.returncode == 0, r.stdout + r.stderr
    check_received([one], lst.out)
    # a refused token still ends it: at start, with a clear reason and status 1
    bad = Proc([P2P, "listen", "--identity", new_identity()[0], "--out", tmpdir(),
                "--api-url", disc.url, "--token", "pos_no-such-token", "--retry-max", "1"],
               name="listen-bad-token")
    assert bad.wait(15) == 1, bad.output()
    assert "unknown token" in bad.output() and "stopping" in bad.output(), bad.output()
    # SIGTERM is obeyed at once even while a relay is being dialed: a hung relay (stopped:
    # still listed, its port still bound, no answer) takes 5 s to time out
    relay.proc.signal(signal.SIGSTOP)
    try:
        dialing = Proc([P2P, "listen", "--identity", new_identity()[0], "--out", tmpdir(),
                        "--api-url", disc.url, "--token", token], name="listen-dialing")
        wait_until(lambda: "direct: UDP port" in dialing.output(), 10, what="listen to start")
        time.sleep(0.5)
        assert "listening" not in dialing.output(), dialing.output()  # still dialing
        t0 = time.monotonic()
        dialing.signal(signal.SIGTERM)
        assert dialing.wait(10) == 0, dialing.output()
        assert time.monotonic() - t0 < 2, f"stopped after {time.monotonic() - t0:.1f} s"
    finally:
        relay.proc.signal(signal.SIGCONT)
    no_sanitizer_report(bad.output() + lst.proc.output() + dialing.output(), "pos-p2p listen")


@test
def docker_listener_uses_port_7373():
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("0.0.0.0", 7373))
    except OSError:
        raise Skip("UDP port 7373 is taken on this machine")
    finally:
        probe.close()
    ident, peer = new_identity()
    out = tmpdir()
    p = Proc([P2P, "listen", "--identity", ident, "--out", out], env={"POS_DOCKER": "true"},
             name="listen-docker")
    wait_until(lambda: "listening" in p.output(), 10, what="pos-p2p listen to start")
    assert "direct: UDP port 7373" in p.output(), p.output()
    one = make_files(tmpdir())[1]
    r = send("--to", peer, "--addr", "127.0.0.1", one)  # no port: 7373
    assert r.returncode == 0, r.stdout + r.stderr
    check_received([one], out)


if __name__ == "__main__":
    run()
