"""`pos-relay run` end to end: the real relay, redis-server, pos-discovery and
pos-p2p on loopback, over real QUIC.

What a user would notice: a started relay is listed within 2 s and vanishes
within the TTL when killed, at once when stopped; a client with a valid token
is accepted and learns its observed address and round-trip time; unknown,
revoked and expired tokens are refused with a reason the client prints; a
relay whose key is not the listed peer id is refused by the client;
revoking a token closes its live connection within 2 s; two relays on one
Redis share one connection-rate limit; no token or secret shows in any log or
in Redis; with Redis down connected clients stay, new ones are told why they
are refused, and the relay recovers when Redis returns.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import Proc, Redis, free_port, http, run, test, tmpdir, wait_until  # noqa: E402
import suite  # noqa: E402
from suite import P2P, RELAY, TTL  # noqa: E402,F401 (RELAY: test_relay_circuits imports it)

SECRET = "p2p-secret-run-tests-abcdef0123456789"


class Discovery(suite.Discovery):
    def __init__(self, redis):
        super().__init__(redis, SECRET)


class Relay(suite.Relay):
    """A configured relay (pos-relay init + edits); start() runs it with POS_LOG=debug."""

    def __init__(self, redis, discovery, extra=None):
        super().__init__(redis, discovery, SECRET, extra)

    def start(self, env=None):
        return super().start(dict({"POS_LOG": "debug"}, **(env or {})))

    def metrics(self):
        st, _, body = http("GET", self.http + "/metrics")
        assert st == 200, st
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out


def p2p_relays(api_url, token, identity, *extra, timeout=30):
    r = subprocess.run([P2P, "relays", "--api-url", api_url, "--token", token,
                        "--identity", identity, "--timeout", "3", *extra],
                       capture_output=True, text=True, timeout=timeout)
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in r.stderr, "sanitizer report from pos-p2p:\n" + r.stderr[-4000:]
    return r


def identity():
    return os.path.join(tmpdir(), "identity")


def stack(extra=None):
    redis = Redis()
    disc = Discovery(redis)
    relay = Relay(redis, disc, extra).start()
    wait_until(lambda: relay.id in disc.ids(), 5, what="the relay to register")
    return redis, disc, relay


@test
def id_creates_identity_once():
    path = identity()
    r1 = subprocess.run([P2P, "id", "--identity", path], capture_output=True, text=True, timeout=30)
    assert r1.returncode == 0, r1.stderr
    peer_id = r1.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9+/]{43}", peer_id), peer_id
    assert os.stat(path).st_mode & 0o077 == 0
    r2 = subprocess.run([P2P, "id"], capture_output=True, text=True, timeout=30,
                        env=dict(os.environ, POS_IDENTITY=path))
    assert r2.stdout.strip() == peer_id
    r3 = subprocess.run([P2P, "id", "--identity", "/dev/null/identity"], capture_output=True,
                        text=True, timeout=30)
    assert r3.returncode != 0 and "pos-p2p id:" in r3.stderr


@test
def registers_within_2s_and_accepts_valid_token():
    redis = Redis()
    disc = Discovery(redis)
    relay = Relay(redis, disc)
    t0 = time.monotonic()
    relay.start()
    wait_until(lambda: relay.id in disc.ids(), 2.0 + (time.monotonic() - t0),
               what="registration within 2 s")
    entry = [e for e in disc.relays() if e["id"] == relay.id][0]
    assert entry["peer_id"] == relay.peer_id
    assert f"127.0.0.1:{relay.port}" in entry["addrs"]
    token = relay.token("--account", "alice")
    r = p2p_relays(disc.url, token, identity())
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"relay (\S+) at (\S+): accepted, rtt ([\d.]+) ms, observed 127\.0\.0\.1:(\d+)",
                  r.stdout)
    assert m, r.stdout
    assert m.group(1) == relay.id and m.group(2) == f"127.0.0.1:{relay.port}"
    assert f"home relay: {relay.id}" in r.stdout
    wait_until(lambda: relay.metrics().get("pos_relay_auth_ok_total") == 1, 3,
               what="auth_ok_total 1 in /metrics")
    assert http("GET", relay.http + "/healthz")[0] == 200


@test
def refuses_unknown_revoked_expired_tokens_with_reasons():
    redis, disc, relay = stack()
    ident = identity()
    r = p2p_relays(disc.url, "pos_not-a-real-token", ident)
    assert r.returncode != 0
    assert "refused: unknown token" in r.stdout, r.stdout
    revoked = relay.token()
    relay.revoke(revoked)
    r = p2p_relays(disc.url, revoked, ident)
    assert r.returncode != 0 and "refused: token revoked" in r.stdout, r.stdout
    expired = relay.token("--expires", "1")
    time.sleep(2.2)
    r = p2p_relays(disc.url, expired, ident)
    assert r.returncode != 0 and "refused: token expired" in r.stdout, r.stdout
    m = relay.metrics()
    wait_until(lambda: relay.metrics().get(
        'pos_relay_auth_failures_total{reason="unknown_token"}') == 1, 3, what="metrics")
    assert m.get('pos_relay_auth_failures_total{reason="revoked"}', 0) >= 0


@test
def client_refuses_relay_with_other_peer_id():
    redis, disc, relay = stack()
    token = relay.token()
    # A second entry at the real relay's address, claiming another key.
    fake_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    other = subprocess.run([P2P, "id", "--identity", identity()], capture_output=True, text=True,
                           timeout=30).stdout.strip()
    st, _, body = http("POST", disc.url + "/api/p2p/relays",
                       {"id": fake_id, "peer_id": other, "addrs": [f"127.0.0.1:{relay.port}"]},
                       headers={"Authorization": "Bearer " + SECRET,
                                "Content-Type": "application/json"})
    assert st == 200, body
    wait_until(lambda: fake_id in disc.ids(), 3, what="the fake entry")
    r = p2p_relays(disc.url, token, identity())
    assert r.returncode == 0, r.stdout  # the real one still accepts
    assert re.search(fake_id + r" at \S+: failed: the relay's key is not the peer id", r.stdout), \
        r.stdout
    assert f"home relay: {relay.id}" in r.stdout


@test
def sigkill_gone_within_ttl_sigterm_gone_at_once():
    redis, disc, relay = stack()
    relay.proc.stop(signal.SIGKILL)
    t0 = time.monotonic()
    wait_until(lambda: relay.id not in disc.ids(), TTL + 2, what="entry gone after SIGKILL")
    assert time.monotonic() - t0 <= TTL + 1.5
    relay2 = Relay(redis, disc).start()
    wait_until(lambda: relay2.id in disc.ids(), 3, what="second relay registered")
    token = relay2.token()
    holder = Proc([P2P, "relays", "--api-url", disc.url, "--token", token, "--identity",
                   identity(), "--hold", "20"], name="holder")
    wait_until(lambda: "accepted" in holder.output(), 10, what="client accepted")
    t0 = time.monotonic()
    relay2.proc.signal(signal.SIGTERM)
    relay2.proc.wait(5)
    assert time.monotonic() - t0 < 4, "relay took too long to exit"
    assert relay2.proc.p.returncode == 0
    wait_until(lambda: relay2.id not in disc.ids(), 1.0, what="entry gone at once after SIGTERM")
    wait_until(lambda: "relay shutting down" in holder.output(), 3,
               what="client told the relay is going away")


@test
def revocation_closes_live_connection_within_2s():
    redis, disc, relay = stack()
    token = relay.token("--account", "bob")
    other = relay.token("--account", "carol")
    holder = Proc([P2P, "relays", "--api-url", disc.url, "--token", token, "--identity",
                   identity(), "--hold", "30"], name="holder")
    keeper = Proc([P2P, "relays", "--api-url", disc.url, "--token", other, "--identity",
                   identity(), "--hold", "30"], name="keeper")
    wait_until(lambda: "accepted" in holder.output() and "accepted" in keeper.output(), 10,
               what="both clients accepted")
    wait_until(lambda: relay.metrics().get("pos_relay_connections") == 2, 3, what="2 connections")
    t0 = time.monotonic()
    relay.revoke(token)
    wait_until(lambda: "token revoked" in holder.output(), 2.5,
               what="the revoked client's connection closed")
    assert time.monotonic() - t0 <= 2.5
    assert "closed" not in keeper.output(), keeper.output()
    wait_until(lambda: relay.metrics().get("pos_relay_connections") == 1, 5,
               what="1 connection left")


@test
def rate_limit_shared_by_two_relays():
    redis = Redis()
    disc = Discovery(redis)
    limits = {"conn_rate_per_addr": 1, "conn_burst_per_addr": 2}
    a = Relay(redis, disc, limits).start()
    b = Relay(redis, disc, limits).start()
    wait_until(lambda: {a.id, b.id} <= disc.ids(), 5, what="both relays registered")
    token = a.token()
    ident = identity()
    t0 = time.monotonic()
    outs = [p2p_relays(disc.url, token, ident).stdout for _ in range(3)]
    elapsed = time.monotonic() - t0
    text = "\n".join(outs)
    accepted = text.count(": accepted")
    limited = text.count("rate limited")
    # 6 attempts from one address: a bucket of 2 refilling at 1/s allows
    # 2 + elapsed; per-relay buckets would have allowed at least 4.
    assert accepted + limited == 6, text
    assert accepted <= 2 + int(elapsed) + 1, (elapsed, text)
    assert accepted < 4 or elapsed >= 2, (elapsed, text)
    assert limited >= 2, text
    for r in (a, b):
        wait_until(lambda: r.metrics().get(
            'pos_relay_auth_failures_total{reason="rate_limited"}', 0) +
            r.metrics().get("pos_relay_auth_ok_total", 0) == 3, 3,
            what="each relay counted its 3 attempts")


@test
def no_token_or_secret_in_logs_or_redis():
    redis, disc, relay = stack()
    token = relay.token()
    ident = identity()
    r1 = p2p_relays(disc.url, token, ident)
    assert r1.returncode == 0, r1.stdout
    relay.revoke(token)
    r2 = p2p_relays(disc.url, token, ident)
    assert r2.returncode != 0
    r3 = p2p_relays(disc.url, "pos_wrong" + token[9:], ident)
    assert r3.returncode != 0
    dump = redis.dump_all()
    assert dump, "redis is empty?"
    for text, where in ((relay.proc.output(), "relay log"), (disc.proc.output(), "discovery log"),
                        (dump, "redis"), (r1.stdout + r1.stderr, "client output"),
                        (r2.stdout + r2.stderr, "client output")):
        assert token not in text, f"token in {where}"
        assert token[4:20] not in text, f"part of the token in {where}"
        assert SECRET not in text, f"p2p secret in {where}"
    with open(relay.config) as f:
        assert SECRET in f.read()  # the one place it belongs


@test
def redis_down_keeps_clients_refuses_new_then_recovers():
    redis, disc, relay = stack()
    token = relay.token()
    holder = Proc([P2P, "relays", "--api-url", disc.url, "--token", token, "--identity",
                   identity(), "--hold", "40"], name="holder")
    wait_until(lambda: "accepted" in holder.output(), 10, what="client accepted")
    relay_list = disc.url  # discovery keeps serving its last snapshot without Redis
    redis.kill()
    wait_until(lambda: http("GET", relay.http + "/healthz")[0] == 503, 10,
               what="/healthz 503 with Redis down")
    st, _, body = http("GET", relay.http + "/healthz")
    assert b"redis" in body.lower(), body
    r = p2p_relays(relay_list, token, identity())
    assert r.returncode != 0, r.stdout
    assert "unavailable" in r.stdout, r.stdout
    time.sleep(1)
    assert "closed" not in holder.output(), holder.output()
    redis.start()
    wait_until(lambda: http("GET", relay.http + "/healthz")[0] == 200, 15,
               what="/healthz 200 once Redis is back")
    # The token lived in the old Redis (no persistence): a new one works.
    wait_until(lambda: relay.id in disc.ids(), 10, what="re-registration")
    token2 = relay.token()
    r = p2p_relays(disc.url, token2, identity())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "closed" not in holder.output(), holder.output()


@test
def garbage_dropped_version_negotiation_answered():
    redis, disc, relay = stack()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    target = ("127.0.0.1", relay.port)
    # a data frame (fixed bit clear) and short-header garbage for no connection
    s.sendto(b"\x20" + os.urandom(40), target)
    s.sendto(b"\x40" + os.urandom(40), target)
    s.sendto(b"", target)
    # a long header with an unknown version, padded to 1200 bytes
    dcid, scid = os.urandom(8), os.urandom(8)
    pkt = b"\xc0" + bytes.fromhex("1a2a3a4a") + bytes([8]) + dcid + bytes([8]) + scid
    s.sendto(pkt + bytes(1200 - len(pkt)), target)
    vn, _ = s.recvfrom(2048)
    assert vn[0] & 0x80 and vn[1:5] == b"\0\0\0\0", vn[:8].hex()
    assert vn[6:14] == scid and vn[15:23] == dcid, "VN must swap the connection ids"
    assert b"\0\0\0\x01" in vn[23:], "VN must list QUIC version 1"
    s.close()
    wait_until(lambda: relay.metrics().get("pos_relay_data_frames_dropped_total", 0) >= 1, 3,
               what="the data frame counted as dropped")
    token = relay.token()
    r = p2p_relays(disc.url, token, identity())
    assert r.returncode == 0, r.stdout  # still serving


@test
def retry_under_load_still_accepts():
    redis = Redis()
    disc = Discovery(redis)
    relay = Relay(redis, disc, {"retry_above": 0}).start()
    wait_until(lambda: relay.id in disc.ids(), 5, what="registration")
    r = p2p_relays(disc.url, relay.token(), identity())
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: relay.metrics().get("pos_relay_retries_total", 0) >= 1, 3,
               what="a Retry sent")


@test
def anti_amplification_before_address_validation():
    """A client whose address never answers gets at most 3x what it sent."""
    redis, disc, relay = stack()
    token = relay.token()
    # A one-way proxy: forwards only the client's first datagram to the relay
    # and counts what the relay sends back to the proxy's address.
    proxy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    proxy.bind(("127.0.0.1", 0))
    proxy.settimeout(0.2)
    pport = proxy.getsockname()[1]
    fake = "6ba7b810-9dad-41d1-80b4-00c04fd430c8"
    st, _, _ = http("POST", disc.url + "/api/p2p/relays",
                    {"id": fake, "peer_id": relay.peer_id, "addrs": [f"127.0.0.1:{pport}"]},
                    headers={"Authorization": "Bearer " + SECRET})
    assert st == 200
    client = Proc([P2P, "relays", "--api-url", disc.url, "--token", token, "--identity",
                   identity(), "--timeout", "8"], name="client")
    sent = received = 0
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        try:
            data, addr = proxy.recvfrom(4096)
        except socket.timeout:
            continue
        if addr == ("127.0.0.1", relay.port):
            received += len(data)
        elif sent == 0:
            sent = len(data)
            proxy.sendto(data, ("127.0.0.1", relay.port))
    proxy.close()
    client.stop()
    assert sent >= 1200, sent
    assert 0 < received <= 3 * sent, (sent, received)


@test
def idle_timeout_drops_dead_clients():
    redis, disc, relay = stack({"idle_timeout": 2})
    token = relay.token()
    holder = Proc([P2P, "relays", "--api-url", disc.url, "--token", token, "--identity",
                   identity(), "--hold", "30"], name="holder")
    wait_until(lambda: "accepted" in holder.output(), 10, what="client accepted")
    time.sleep(3)  # keep-alives (every min(10 s, idle timeout / 2)) keep it alive
    assert relay.metrics().get("pos_relay_connections") == 1
    holder.stop(signal.SIGKILL)
    wait_until(lambda: relay.metrics().get("pos_relay_connections") == 0, 6,
               what="the dead client dropped after the idle timeout")


@test
def ipv6_relay_observes_ipv6_address():
    redis = Redis()
    disc = Discovery(redis)
    relay = Relay(redis, disc)
    with open(relay.config) as f:
        cfg = json.load(f)
    cfg["listen"] = [f"[::1]:{relay.port}"]
    with open(relay.config, "w") as f:
        json.dump(cfg, f)
    relay.start()
    wait_until(lambda: relay.id in disc.ids(), 5, what="registration")
    entry = [e for e in disc.relays() if e["id"] == relay.id][0]
    assert entry["addrs"] == [f"[::1]:{relay.port}"], entry
    r = p2p_relays(disc.url, relay.token(), identity())
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"accepted, rtt [\d.]+ ms, observed \[::1\]:\d+", r.stdout), r.stdout


@test
def connection_cap_counts_live_connections_only():
    redis, disc, relay = stack()
    token = relay.token("--max-conns", "1")
    holder = Proc([P2P, "relays", "--api-url", disc.url, "--token", token, "--identity",
                   identity(), "--hold", "30"], name="holder")
    wait_until(lambda: "accepted" in holder.output(), 10, what="first client accepted")
    r = p2p_relays(disc.url, token, identity())
    assert r.returncode != 0 and "too many connections for this token" in r.stdout, r.stdout
    holder.stop()  # SIGTERM: pos-p2p closes its connection, the relay releases the slot
    def second_accepted():
        return p2p_relays(disc.url, token, identity()).returncode == 0
    wait_until(second_accepted, 8, interval=0.5, what="the slot released after the close")


@test
def client_falls_back_to_the_next_relay_address():
    redis, disc, relay = stack()
    dead = free_port(socket.SOCK_DGRAM)
    entry = "9b2d8f1e-6c1a-4d3b-8e5f-2a7c9d0b1e3f"
    st, _, _ = http("POST", disc.url + "/api/p2p/relays",
                    {"id": entry, "peer_id": relay.peer_id,
                     "addrs": [f"127.0.0.1:{dead}", f"127.0.0.1:{relay.port}"]},
                    headers={"Authorization": "Bearer " + SECRET})
    assert st == 200
    wait_until(lambda: entry in disc.ids(), 3, what="the two-address entry")
    r = p2p_relays(disc.url, relay.token(), identity())
    assert re.search(entry + r" at 127\.0\.0\.1:" + str(relay.port) + ": accepted", r.stdout), \
        r.stdout


if __name__ == "__main__":
    run()
