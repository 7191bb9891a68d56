#!/usr/bin/python3
"""Hole punching coordinated by a real pos-relay (docs/protocol.md "Hole punching"):
real Redis, the real relay, and tests/relay/ctrl_client (a bare control-protocol
client made from common/, offering pos-relay/2 and /1, or /1 only) on loopback.

Two pos-relay/2 clients that get a circuit both receive PUNCH_START with the
same key, each other's circuit id, their roles and each other's observed
address first, then the local addresses; a PUNCH_REQUEST sooner than
punch_min_interval_ms is ignored and a later one starts attempt 2 with a new
key; a pos-relay/1 client still gets its circuit with a pos-relay/2 peer and
no PUNCH_START reaches either; /metrics counts all of it.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import harness  # noqa: E402
from harness import Proc, Redis, binary, run, test, wait_until  # noqa: E402
from test_relay_run import Relay  # noqa: E402

del harness._tests[:]  # the tests of test_relay_run run on their own

CTRL = binary("tests/relay/ctrl_client")


class Ctrl:
    """A ctrl_client process; its JSON lines are read from its log."""

    def __init__(self, relay, token, *args, name):
        self.name = name
        self.proc = Proc([CTRL, "--to", f"127.0.0.1:{relay.port}", "--token", token, *args],
                         name=name)

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

    def wait_event(self, kind, n=1, timeout=5):
        wait_until(lambda: len(self.events(kind)) >= n, timeout,
                   what=f"{self.name}: {n} x {kind}\n{self.proc.output()[-2000:]}")
        return self.events(kind)[n - 1]

    def finish(self, timeout=15):
        rc = self.proc.wait(timeout)
        assert self.proc.sanitizer_report() is None, self.proc.output()[-4000:]
        return rc


def metric(relay, name):
    return relay.metrics().get(name, 0)


@test
def v2_clients_get_punch_start_v1_client_does_not():
    redis = Redis()
    relay = Relay(redis, None, extra={"punch_min_interval_ms": 300}).start()
    token = relay.token()
    # B: listens and accepts; asks again 600 ms after its first circuit; reports each attempt
    b = Ctrl(relay, token, "--local", "10.1.1.2:4000", "--local", "[fd00::2]:4000",
             "--request-after", "600", "--report", "--seconds", "8", name="B")
    wb = b.wait_event("welcome")
    assert wb["version"] == 2, wb
    # A: dials B; asks again after 50 ms, sooner than punch_min_interval_ms: ignored
    a = Ctrl(relay, token, "--connect", wb["peer_id"], "--local", "10.1.1.1:5000",
             "--request-after", "50", "--seconds", "3", name="A")
    wa = a.wait_event("welcome")
    ca, cb = a.wait_event("circuit"), b.wait_event("circuit")
    pa, pb = a.wait_event("punch_start"), b.wait_event("punch_start")
    # one secret for both, the ids CIRCUIT gave them, the dialer is the side that sent CONNECT
    assert pa["key_fp"] == pb["key_fp"], (pa, pb)
    assert (pa["circuit"], pa["peer_circuit"]) == (ca["circuit"], cb["circuit"]), (pa, ca, cb)
    assert (pb["circuit"], pb["peer_circuit"]) == (cb["circuit"], ca["circuit"]), (pb, ca, cb)
    assert (pa["role"], pb["role"]) == (1, 2) and pa["attempt"] == pb["attempt"] == 1
    assert 0 <= pa["start_in_ms"] <= 5000 and 0 <= pb["start_in_ms"] <= 5000
    # each gets the other's address as the relay observes it first, then its own addresses
    assert pa["candidates"] == [wb["observed"], "10.1.1.2:4000", "[fd00::2]:4000"], pa
    assert pb["candidates"] == [wa["observed"], "10.1.1.1:5000"], pb
    # B's later request: attempt 2, to both, with a new key
    pa2, pb2 = a.wait_event("punch_start", 2), b.wait_event("punch_start", 2)
    assert pa2["attempt"] == pb2["attempt"] == 2 and pa2["key_fp"] == pb2["key_fp"]
    assert pa2["key_fp"] != pa["key_fp"]
    assert a.finish() == 0

    # C speaks pos-relay/1 only: its circuit with B works, and nobody is asked to punch
    c = Ctrl(relay, token, "--v1", "--connect", wb["peer_id"], "--seconds", "1", name="C")
    assert c.wait_event("welcome")["version"] == 1
    cc = c.wait_event("circuit")
    assert cc["peer_id"] == wb["peer_id"] and cc["observed"] == wb["observed"]
    b.wait_event("circuit", 2)
    assert c.finish() == 0
    assert c.events("punch_start") == [] and not c.events("relay_closed")
    assert len(b.events("punch_start")) == 2
    assert b.finish() == 0 and not b.events("relay_closed")

    wait_until(lambda: metric(relay, "pos_relay_punches_total") == 2
               and metric(relay, 'pos_relay_punch_reports_total{outcome="direct"}') == 2, 3,
               what="punch metrics")
    m = relay.metrics()
    assert m['pos_relay_punch_requests_total{result="ignored"}'] == 1, m
    assert m['pos_relay_punch_requests_total{result="started"}'] == 1, m
    assert m["pos_relay_punch_time_to_direct_seconds_count"] == 2, m
    assert abs(m["pos_relay_punch_time_to_direct_seconds_sum"] - 0.084) < 1e-9, m
    assert m["pos_relay_circuits_opened_total"] == 2, m


@test
def punch_off_sends_no_punch_start_and_relay_prefers_v2():
    redis = Redis()
    relay = Relay(redis, None, extra={"punch": False}).start()
    token = relay.token()
    # the relay picks pos-relay/2 by its own preference, whatever the client's order
    b = Ctrl(relay, token, "--v1-first", "--seconds", "2", name="B")
    wb = b.wait_event("welcome")
    assert wb["version"] == 2, wb
    a = Ctrl(relay, token, "--connect", wb["peer_id"], "--seconds", "1", name="A")
    a.wait_event("circuit")
    assert a.finish() == 0 and b.finish() == 0
    assert a.events("punch_start") == [] and b.events("punch_start") == []
    assert metric(relay, "pos_relay_punches_total") == 0


if __name__ == "__main__":
    run()
