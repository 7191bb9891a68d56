#!/usr/bin/python3
"""TLS 1.3 resumption of relay control connections, with a real relay,
redis-server and pos-discovery on loopback and the library's own client
(pos-loadtest control, one endpoint, one connection at a time): a returning
client resumes and the relay counts it in pos_relay_handshakes_resumed_total,
every connection still accepted with its token; a client that turns
resumption off, or a relay with ticket_lifetime 0, makes full handshakes
only; a control connection costs the relay few datagrams (no path MTU
probes). Which identity a resumed connection gets, the pin check on resumption
and a relay with another key are tested in tests/unit/test_tls.c.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import harness  # noqa: E402
from harness import run, test, wait_until  # noqa: E402
from test_loadtest_report import loadtest  # noqa: E402
from test_relay_run import stack  # noqa: E402

del harness._tests[:]  # the tests of the modules imported above run on their own

CONNS = 6


def control(relay, token, *extra):
    r = loadtest("control", "--addr", f"127.0.0.1:{relay.port}", "--peer-id", relay.peer_id,
                 "--token", token, "--conns", str(CONNS), "--concurrency", "1",
                 "--endpoints", "1", "--timeout", "20", *extra)
    assert f"accepted {CONNS}, refused 0, failed 0" in r.stdout, r.stdout + r.stderr


def handshakes(relay, before, n):
    """Waits until the relay counted |n| more successful handshakes; returns the resumed ones."""
    key = 'pos_relay_handshakes_total{result="ok"}'
    wait_until(lambda: relay.metrics()[key] >= before[key] + n, 5, what=f"{n} handshakes")
    m = relay.metrics()
    assert m[key] == before[key] + n, m
    return m["pos_relay_handshakes_resumed_total"] - before["pos_relay_handshakes_resumed_total"]


@test
def returning_client_resumes_and_the_relay_counts_it():
    redis, disc, relay = stack({"max_conns_per_token": 0})
    token = relay.token()
    m0 = relay.metrics()
    assert m0["pos_relay_handshakes_resumed_total"] == 0
    control(relay, token, "--resume")
    # one full handshake first for the ticket (not counted by pos-loadtest); then every
    # counted connection resumes with the previous one's ticket
    assert handshakes(relay, m0, CONNS + 1) == CONNS
    # without resumption every handshake is full again
    m1 = relay.metrics()
    control(relay, token)
    assert handshakes(relay, m1, CONNS) == 0


@test
def a_control_connection_costs_few_datagrams():
    # Neither side probes the path MTU on a control connection (2 probes and 2 ACKs
    # each way): a handshake, HELLO and WELCOME take the relay 3 datagrams out and
    # about 4 in (7.5 and 7 with the probes); 5 out each leaves room for a retransmission.
    redis, disc, relay = stack({"max_conns_per_token": 0})
    token = relay.token()
    m0 = relay.metrics()
    control(relay, token, "--resume")
    handshakes(relay, m0, CONNS + 1)  # and the one that fetched the ticket
    time.sleep(1.2)  # /metrics is a snapshot refreshed twice a second
    m = relay.metrics()
    out = m['pos_relay_packets_total{dir="out"}'] - m0['pos_relay_packets_total{dir="out"}']
    into = m['pos_relay_packets_total{dir="in"}'] - m0['pos_relay_packets_total{dir="in"}']
    assert 3 * (CONNS + 1) <= out <= 5 * (CONNS + 1), (out, into)
    assert into <= 6 * (CONNS + 1), (out, into)


@test
def ticket_lifetime_zero_means_full_handshakes():
    redis, disc, relay = stack({"max_conns_per_token": 0, "ticket_lifetime": 0})
    token = relay.token()
    m0 = relay.metrics()
    control(relay, token, "--resume")
    assert handshakes(relay, m0, CONNS + 1) == 0


if __name__ == "__main__":
    run()
