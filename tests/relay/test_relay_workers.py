#!/usr/bin/python3
"""pos-relay run with two workers (config key workers, relay/workers.h), against
real processes on loopback: redis-server, pos-discovery, pos-relay run and
tests/relay/circuit_client.

- Connections and circuits spread over both workers: /metrics shows each worker
  serving clients, circuit sides and packets.
- A circuit whose two sides sit on different workers (the worker is named in
  each side's circuit id) forwards both ways, each side's frames on its own
  worker (per-worker forwarded counters).
- Limits stay per relay: a token's circuit cap and connection cap hold over
  connections on both workers, never multiplied by the number of workers.
- A bad workers value stops start-up naming the file and the key.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import harness  # noqa: E402
from harness import Redis, run, test, tmpdir, wait_until  # noqa: E402
from test_relay_circuits import Client, listener  # noqa: E402
from test_relay_limits import loadtest_conns  # noqa: E402
from test_relay_run import RELAY, Discovery, Relay  # noqa: E402

del harness._tests[:]  # the imported files' tests run on their own

# max_circuits 1024: 2048 side slots, so a side id is gen << 12 | worker << 11 | slot
TABLE = 1024
SLOT_BITS = 11


def worker_of(circuit_id):
    return (circuit_id >> SLOT_BITS) & 1


def two_worker_relay(extra=None):
    redis = Redis()
    disc = Discovery(redis)
    relay = Relay(redis, disc, dict({"workers": 2, "max_circuits": TABLE, "conn_rate_per_addr": 0,
                                     "conn_rate_per_token": 0}, **(extra or {}))).start()
    return redis, disc, relay


def per_worker(metrics, name):
    return [metrics.get(f'{name}{{worker="{k}"}}', 0) for k in range(2)]


@test
def connections_and_circuits_spread_over_both_workers():
    redis, disc, relay = two_worker_relay()
    token = relay.token()
    pairs = []
    for i in range(10):
        b = listener(relay, token, name=f"B{i}")
        a = Client(relay, token, "--connect", b.peer_id(), "--count", "50", "--rate", "500",
                   "--hold-ms", "20000", name=f"A{i}")
        pairs.append((a, b))
    for a, _ in pairs:
        a.wait_event("result", 20)
    wait_until(lambda: relay.metrics()["pos_relay_circuits"] == 10, 5, what="10 circuits open")
    m = relay.metrics()
    conns = per_worker(m, "pos_relay_worker_connections")
    sides = per_worker(m, "pos_relay_worker_circuit_sides")
    packets = per_worker(m, "pos_relay_worker_packets_total")
    forwarded = per_worker(m, "pos_relay_worker_forwarded_total")
    print(f"    20 connections over 2 workers: {conns}, circuit sides {sides}, "
          f"packets {packets}, forwarded {forwarded}")
    assert m["pos_relay_workers"] == 2 and m["pos_relay_connections"] == 20, m
    # both serve (a worker with 2 of 20 or fewer would be a 1 in 2,500 chance of fair coins)
    assert sum(conns) == 20 and min(conns) >= 3, conns
    assert sum(sides) == 20 and min(sides) >= 3, sides
    assert min(packets) > 0 and min(forwarded) > 0, (packets, forwarded)
    # the ids name the workers the metrics count
    ids = [c for a, b in pairs for c in (a.events("circuit")[0]["circuit"],
                                         b.events("circuit")[0]["circuit"])]
    assert [sum(1 for c in ids if worker_of(c) == k) for k in range(2)] == sides, (ids, sides)
    for a, b in pairs:
        assert a.events("result")[0]["intact"] == 50, a.lines
        a.stop()
        b.stop()


@test
def circuit_whose_sides_sit_on_different_workers_forwards_both_ways():
    redis, disc, relay = two_worker_relay()
    token = relay.token()
    for attempt in range(24):  # each pair is split with probability 1/2
        before = per_worker(relay.metrics(), "pos_relay_worker_forwarded_total")
        b = listener(relay, token, name=f"B{attempt}")
        a = Client(relay, token, "--connect", b.peer_id(), "--count", "300", "--size", "1000",
                   "--rate", "3000", name=f"A{attempt}")
        assert a.finish() == 0, a.lines
        ca = a.events("circuit")[0]["circuit"]
        cb = b.events("circuit")[0]["circuit"]
        res = a.events("result")[0]
        # echoed by B: 300 datagrams each way, intact, whichever workers hold the sides
        assert res["sent"] == 300 and res["intact"] == 300 and res["bad"] == 0, res
        wait_until(lambda: sum(per_worker(relay.metrics(), "pos_relay_worker_forwarded_total"))
                   >= sum(before) + 600, 3, what="forwarded frames in /metrics")
        after = per_worker(relay.metrics(), "pos_relay_worker_forwarded_total")
        delta = [after[k] - before[k] for k in range(2)]
        # each side's frames were steered to, and forwarded by, the worker its id names
        want = [0, 0]
        want[worker_of(ca)] += 300
        want[worker_of(cb)] += 300
        assert delta == want, (delta, want, hex(ca), hex(cb))
        b.stop()
        if worker_of(ca) != worker_of(cb):
            break
    else:
        raise AssertionError("24 circuits, none with its sides on different workers")
    print(f"    circuit {ca:#x} (worker {worker_of(ca)}) <-> {cb:#x} (worker {worker_of(cb)}), "
          f"after {attempt + 1} pairs: 300 each way intact, forwarded by worker {delta}")


def flood(relay, token, target, n, name):
    return Client(relay, token, "--connect", target.peer_id(), "--flood", str(n), "--hold-ms",
                  "20000", "--timeout-ms", "20000", name=name)


@test
def limits_stay_per_relay_with_two_workers():
    cap = 6
    redis, disc, relay = two_worker_relay({"max_circuits_per_token": cap})
    token = relay.token()
    targets = [listener(relay, token, "--quiet", name=f"B{i}") for i in range(6)]
    floods = [flood(relay, token, b, 3, f"A{i}") for i, b in enumerate(targets)]
    res = [f.wait_event("flood", 30) for f in floods]
    wait_until(lambda: relay.metrics()["pos_relay_connections"] == 12 and
               relay.metrics()["pos_relay_circuit_requests_pending"] == 0, 5,
               what="/metrics to show the 12 connections")
    m = relay.metrics()
    conns = per_worker(m, "pos_relay_worker_connections")
    total = sum(r["circuits"] for r in res)
    print(f"    12 connections of one token on workers {conns}: {total} circuits of 18 asked "
          f"(max_circuits_per_token {cap})")
    # the token's connections sit on both workers (all 12 on one: 1 in 2,048)
    assert min(conns) >= 1, conns
    assert total == cap, res
    assert m["pos_relay_circuits"] == cap, m
    texts = {t for r in res for t in r["errors"]}
    assert texts == {f"too many circuits for this token on this relay (limit {cap})"}, res
    for c in [*floods, *targets]:
        c.stop()
    # a token's connection cap: 5, however many workers take its 12 connections
    capped = relay.token("--max-conns", "5")
    accepted, refused, out = loadtest_conns(relay, capped, 12)
    print(f"    token with --max-conns 5, 12 connections: {accepted} accepted, {refused} refused")
    assert accepted == 5 and refused == 7, out


@test
def one_worker_is_the_whole_relay():
    redis, disc, relay = two_worker_relay({"workers": 1})
    token = relay.token()
    b = listener(relay, token, name="B")
    a = Client(relay, token, "--connect", b.peer_id(), "--count", "100", "--hold-ms", "20000",
               name="A")
    assert a.wait_event("result")["intact"] == 100, a.lines
    wait_until(lambda: relay.metrics()["pos_relay_forwarded_total"] >= 200, 3,
               what="forwarded frames in /metrics")
    m = relay.metrics()
    assert m["pos_relay_workers"] == 1 and 'pos_relay_worker_connections{worker="1"}' not in m
    one = {k: m[f'pos_relay_worker_{k}{{worker="0"}}'] for k in
           ("connections", "circuit_sides", "forwarded_total", "accepted_total", "packets_total")}
    print(f"    worker 0 of 1: {one}")
    # every datagram received: the QUIC ones, the 200 frames forwarded, any keep-alive
    received = m['pos_relay_packets_total{dir="in"}'] + m["pos_relay_forwarded_total"] + \
        m["pos_relay_keepalives_total"]
    assert one == {"connections": 2, "circuit_sides": 2,
                   "forwarded_total": m["pos_relay_forwarded_total"], "accepted_total": 2,
                   "packets_total": received}, (one, m)
    a.stop()
    b.stop()


@test
def a_second_relay_cannot_share_the_port():
    # SO_REUSEPORT would let another process of the same user join the port's group and take
    # a share of the datagrams: the relay proves the address free first
    redis, disc, relay = two_worker_relay()
    other = Relay(redis, None)
    with open(other.config) as f:
        cfg = json.load(f)
    cfg.update(port=relay.port, listen=[f"127.0.0.1:{relay.port}"], workers=2)
    with open(other.config, "w") as f:
        json.dump(cfg, f)
    r = subprocess.run([RELAY, "run", "--config", other.config], capture_output=True, text=True,
                       timeout=20)
    print(f"    {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode != 0 and f"cannot bind UDP 127.0.0.1:{relay.port}" in r.stderr, r.stderr
    # the first relay still serves
    token = relay.token()
    b = listener(relay, token, name="B")
    a = Client(relay, token, "--connect", b.peer_id(), "--count", "20", name="A")
    assert a.finish() == 0 and a.events("result")[0]["intact"] == 20, a.lines
    b.stop()


@test
def bad_workers_value_stops_start_up():
    redis = Redis()
    relay = Relay(redis, None)
    with open(relay.config) as f:
        cfg = json.load(f)
    for bad in (0, 65, -1, "2", 1.5, True):
        cfg["workers"] = bad
        path = os.path.join(tmpdir(), "relay.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        os.chmod(path, 0o600)
        r = subprocess.run([RELAY, "run", "--config", path], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0, (bad, r.stdout, r.stderr)
        assert path in r.stderr and '"workers"' in r.stderr and "64" in r.stderr, (bad, r.stderr)
        assert "serving" not in r.stderr, r.stderr
    print(f"    e.g. {r.stderr.strip()}")


if __name__ == "__main__":
    run()
