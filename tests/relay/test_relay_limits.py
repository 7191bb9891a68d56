#!/usr/bin/python3
"""Limits that keep one token from taking a relay over (issue 8, items 3 and 5),
against real processes on loopback: redis-server, pos-discovery, pos-relay run,
tests/relay/circuit_client and pos-loadtest control.

- One token asking for circuits as fast as the relay answers, over two
  connections and then over ten, is stopped at max_circuits_per_conn (256) and
  max_circuits_per_token (1024, under 1/8 of the 16,384-circuit table) with
  ERROR code 8 and a sentence; a second token still gets circuits.
- A token that sets no connection cap gets the relay's max_conns_per_token (64).
- A token that expires closes its live connection ("token expired") and its
  circuits (the other side gets CIRCUIT_CLOSED) within 2 s of the expiry.
"""
import hashlib
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import harness  # noqa: E402
from harness import Redis, binary, run, test, wait_until  # noqa: E402
from test_relay_circuits import Client, listener, stack  # noqa: E402
from test_relay_run import Discovery, Relay  # noqa: E402

del harness._tests[:]  # the imported files' tests run on their own

TABLE = 16384  # max_circuits default
PER_CONN = 256  # max_circuits_per_conn default (TABLE / 64)
PER_TOKEN = 1024  # max_circuits_per_token default (TABLE / 16)
CONN_TEXT = f"too many circuits on this connection (limit {PER_CONN})"
TOKEN_TEXT = f"too many circuits for this token on this relay (limit {PER_TOKEN})"
CIRCUIT_LIMIT = -25  # POS_P2P_ERR_CIRCUIT_LIMIT


def flood(relay, token, target, n, name):
    return Client(relay, token, "--connect", target.peer_id(), "--flood", str(n), "--hold-ms",
                  "60000", "--timeout-ms", "30000", name=name)


@test
def one_token_cannot_fill_the_circuit_table():
    redis, disc, (relay,) = stack()
    token = relay.token()
    # the attack: one token, two connections, circuits as fast as the relay gives them
    # (before the caps: the whole table, 16,384 circuits, in under a second)
    b0 = listener(relay, token, "--quiet", name="B0")
    a0 = flood(relay, token, b0, 3000, "A0")
    first = a0.wait_event("flood", 90)  # generous: a loaded machine under ASan
    print(f"    2 connections, 3000 CONNECTs: {first['circuits']} circuits in {first['ms']} ms, "
          f"refused {first['errors']}")
    assert first["circuits"] == PER_CONN, first
    assert first["errors"] == {CONN_TEXT: 3000 - PER_CONN}, first
    assert first["limit_error"] == CIRCUIT_LIMIT and "no more circuits" in first["limit_sentence"]
    # the same token over eight more connections: the token's cap, summed over all of them
    pairs = [listener(relay, token, "--quiet", name=f"B{i}") for i in range(1, 5)]
    floods = [flood(relay, token, b, 400, f"A{i + 1}") for i, b in enumerate(pairs)]
    res = [f.wait_event("flood", 90) for f in floods]
    total = first["circuits"] + sum(r["circuits"] for r in res)
    texts = {t for r in res for t in r["errors"]}
    print(f"    10 connections, 4600 CONNECTs: {total} circuits held by the token "
          f"(table {TABLE}), refusals {texts}")
    assert total == PER_TOKEN and total < TABLE / 8, res
    assert all(r["circuits"] <= PER_CONN for r in res), res
    assert TOKEN_TEXT in texts, res
    wait_until(lambda: relay.metrics()["pos_relay_circuits"] == PER_TOKEN, 3,
               what="/metrics to show the token's circuits")
    wait_until(lambda: relay.metrics()["pos_relay_circuits_refused_limit_total"] >=
               4600 - PER_TOKEN, 3, what="/metrics to count the refusals")
    # the token's next CONNECT is refused at once, with the sentence
    more = Client(relay, token, "--connect", b0.peer_id(), name="A-more")
    assert more.finish() == 0
    err = more.events("error")[0]
    assert err["code"] == 8 and err["text"] == TOKEN_TEXT and err["error"] == CIRCUIT_LIMIT, err
    # another token is not locked out: a circuit, and datagrams both ways
    other = relay.token()
    ob = listener(relay, other, name="other-B")
    oa = Client(relay, other, "--connect", ob.peer_id(), "--count", "50", name="other-A")
    assert oa.finish() == 0, oa.lines
    assert oa.events("result")[0]["intact"] == 50, oa.lines
    for c in [a0, b0, ob, *floods, *pairs]:
        c.stop()


def loadtest_conns(relay, token, n):
    """pos-loadtest control: n connections of |token| at once; (accepted, refused, text)."""
    r = subprocess.run([binary("loadtest/pos-loadtest"), "control", "--addr",
                        f"127.0.0.1:{relay.port}", "--peer-id", relay.peer_id, "--token", token,
                        "--conns", str(n), "--concurrency", "10", "--endpoints", "2",
                        "--timeout", "20"], capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stdout + r.stderr  # 1: some were refused
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in r.stderr, r.stderr[-4000:]
    m = re.search(r"accepted (\d+), refused (\d+)", r.stdout)
    assert m, r.stdout
    return int(m.group(1)), int(m.group(2)), r.stdout


@test
def token_without_a_connection_cap_gets_the_relays_default():
    redis = Redis()
    disc = Discovery(redis)
    relay = Relay(redis, disc, {"conn_rate_per_addr": 0, "conn_rate_per_token": 0}).start()
    uncapped = relay.token()  # no --max-conns: before, unlimited (~89 kB of relay heap each)
    accepted, refused, out = loadtest_conns(relay, uncapped, 70)
    print(f"    token without --max-conns, 70 connections: {accepted} accepted, {refused} refused")
    assert accepted == 64 and refused == 6, out
    assert "too many connections for this token" in out, out
    # a token's own cap still wins over the relay's default
    own = relay.token("--max-conns", "70")
    accepted, refused, out = loadtest_conns(relay, own, 70)
    assert accepted == 70 and refused == 0, out


def token_hash(token):
    return hashlib.blake2b(token.encode(), digest_size=32).hexdigest()  # pos_secret_hash_hex


@test
def expired_token_closes_its_connection_and_circuits():
    redis, disc, (relay,) = stack()
    expiring = relay.token("--expires", "5")
    r = subprocess.run(["redis-cli", "-u", redis.url, "HGET", "pos:token:" + token_hash(expiring),
                        "expires_at"], capture_output=True, text=True, timeout=10)
    expires_at = int(r.stdout.strip())
    b = Client(relay, relay.token(), "--listen", "--echo", "--stats-ms", "100", name="B")
    a = Client(relay, expiring, "--connect", b.peer_id(), "--count", "4000", "--size", "200",
               "--rate", "200", "--wait-ms", "0", name="A")
    a.wait_event("circuit")
    assert time.time() < expires_at - 0.5, "the clients started too slowly for this test"
    closed = a.wait_event("relay_closed", expires_at - time.time() + 4)
    t_closed = time.time()
    b.wait_event("circuit_closed", 2)
    t_circuit = time.time()
    print(f"    A's connection closed {t_closed - expires_at:.2f} s after the expiry "
          f"({closed['reason']}); B told of the circuit {t_circuit - expires_at:.2f} s after")
    assert closed["reason"] == "token expired", closed
    assert t_closed - expires_at < 2.0 and t_circuit - expires_at < 2.0
    assert b.events("circuit_closed")[0]["code"] == 6
    time.sleep(0.3)  # what was on its way when the circuit closed
    got = b.events("stats")[-1]["received"]
    assert got > 100, got  # A was relaying until then
    time.sleep(0.7)
    assert b.events("stats")[-1]["received"] == got  # and nothing after
    # a new connection with the expired token is refused
    again = Client(relay, expiring, "--connect", b.peer_id(), name="A-again")
    assert again.finish() == 1
    assert again.events("relay_failed")[0]["reason"] == "token expired", again.lines
    a.stop()
    b.stop()


if __name__ == "__main__":
    run()
