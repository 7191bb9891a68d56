#!/usr/bin/python3
"""NAT lab tests (tests/natlab/natlab.py): `pos-p2p send --json` from one
LAN to `pos-p2p listen` on another, through real Linux NAT routers, a real
pos-discovery and two real relays in a public core.

Each transfer is checked three ways: the file arrives identical; the
sender's JSON summary names the path; and the lab does not trust that report
alone: the relay's per-circuit counters (/circuits) and the NAT routers'
iptables counters must agree on where the bytes went.

EXPECT holds the path each scenario must show: sessions start on the relay
and go direct by hole punching where the NATs allow it ("relayed-then-
direct": most bytes then left the relay); two symmetric NATs stay relayed,
the probes they sent are few and end within the probe window. Two clients on
one LAN find each other by mDNS and are direct from the start; without mDNS
they punch over their LAN addresses. A direct path blackholed mid-transfer
sends the session back to the relay with the file intact. A parked listener
whose NAT mapping changes is found at its new address (the relay moves its
record on the next keep-alive) and woken by a sender; a new interface
address makes it send a keep-alive at once.

The lab itself is checked too: a router drops unsolicited input on its WAN
(nothing reaches the LAN client, the drop counter moves) while the answer to
the client's own packet passes, and the EIM NAT keeps the client's port.
Needs root (network namespaces); skipped (exit 77) otherwise.
"""
import filecmp
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import natlab  # noqa: E402
import suite  # noqa: E402
from harness import run, test, tmpdir, wait_until  # noqa: E402

SECRET = "natlab-secret-natlab-tests-0123456789abcdef"
SIZE = 4 * 1000 * 1000 + 7  # big enough to dwarf handshakes and keepalives

# The path each scenario must show (issue 11).
EXPECT = {
    ("eim", "eim"): "relayed-then-direct",
    ("cgnat", "eim"): "relayed-then-direct",
    # one LAN with mDNS: send starts on the relay at once and hands the addresses mDNS
    # found to the session as punching candidates
    ("same", "same"): "relayed-then-direct",
    # without mDNS (neither side): punching over the LAN addresses HELLO carries (the
    # shared public address is not hairpinned)
    ("same", "same", "no-mdns"): "relayed-then-direct",
    ("symmetric", "symmetric"): "relayed",
}
# What a relayed session may send straight to the peer: punching probes (a
# few dozen bytes each, every 50 ms for one probe window, per candidate).
PROBE_BUDGET = 64 * 1024


def new_identity():
    path = os.path.join(tmpdir(), "identity")
    r = natlab.sh([suite.P2P, "id", "--identity", path])
    return path, r.stdout.strip().splitlines()[-1]


def make_file(size):
    path = os.path.join(tmpdir(), "payload.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


def no_sanitizer_report(text, who):
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in text, f"sanitizer report from {who}:\n" + text[-4000:]


def transfer(lab, pub, size, send_args=(), listen_args=(), during=None):
    """`listen` on B's LAN, `send --json` from A's: (summary, file, received path, counters
    of A's and B's edge before and after)."""
    token = pub.relays[0].token()
    ident_b, peer_b = new_identity()
    out = tmpdir()
    listener = lab.proc("b", [suite.P2P, "listen", "--identity", ident_b, "--out", out,
                              "--api-url", pub.url, "--token", token, *listen_args],
                        name="listen")
    wait_until(lambda: "listening" in listener.output() or not listener.alive(), 20,
               what="pos-p2p listen to reach its relay")
    assert listener.alive(), listener.output()
    path = make_file(size)
    before = {s: lab.counters(s) for s in ("a", "b")}
    argv = [suite.P2P, "send", "--json", "--identity", new_identity()[0], "--api-url", pub.url,
            "--token", token, "--to", peer_b, *send_args, path]
    if during is None:
        r = lab.run("a", argv, check=False, timeout=120)
        no_sanitizer_report(r.stderr, "pos-p2p send")
        assert r.returncode == 0, r.stdout + r.stderr + "\nthe listener's output:\n" + \
            listener.output()
        doc = json.loads(r.stdout)  # all of stdout: one object
    else:
        sender = lab.proc("a", argv, name="send")
        during(sender, listener)
        assert sender.wait(60) == 0, sender.output() + "\nthe listener's output:\n" + \
            listener.output()
        out_text = sender.output()
        no_sanitizer_report(out_text, "pos-p2p send")
        doc = json.loads([x for x in out_text.splitlines() if x.startswith("{")][-1])
    after = {s: lab.counters(s) for s in ("a", "b")}
    got = os.path.join(out, os.path.basename(path))
    wait_until(lambda: os.path.exists(got), 5, what="the received file")
    assert filecmp.cmp(path, got, shallow=False), "the received file differs"
    return doc, before, after


def delta(before, after, key):
    return after[key] - before[key]


def assert_path(expect, doc, pub, before, after, size):
    """The sender's report, the relay's circuit counters and the routers' counters all say
    |expect| ("relayed", or "direct"/"relayed-then-direct": most bytes off the relay)."""
    assert doc["ok"] is True and doc["files_ok"] == 1 and doc["bytes"] == size, doc
    assert doc["path"] == expect, f"path {doc['path']}, expected {expect}: {doc}"
    a, b = before, after

    def sent_through_relay():
        """Bytes the relay forwarded from the sender's side of its circuit (0: not listed).
        /circuits is a snapshot refreshed twice a second."""
        _, c = pub.circuit(doc["circuit_id"]) if doc["circuit_id"] else (None, None)
        return c["bytes"][c["ids"].index(doc["circuit_id"])] if c else 0
    if expect == "relayed":
        assert doc["upgraded_after_ms"] is None and doc["bytes_direct"] == 0, doc
        assert doc["bytes_relayed"] >= size, doc
        # the relay's counters for this circuit: the file crossed it
        wait_until(lambda: sent_through_relay() >= size, 3,
                   what=f"the relay's counters of circuit {doc['circuit_id']} to show the file")
        # A's router sent it to the relays, B's received it from them; between them
        # only punching probes
        assert delta(a["a"], b["a"], "relay_out") >= size, (a, b)
        assert delta(a["b"], b["b"], "relay_in") >= size, (a, b)
        for side in ("a", "b"):
            for k in ("peer_out", "peer_in"):
                assert delta(a[side], b[side], k) <= PROBE_BUDGET, (side, k, a, b)
    else:
        assert doc["bytes_direct"] >= size // 2, doc
        if expect == "relayed-then-direct":
            assert doc["upgraded_after_ms"] is not None, doc
        assert delta(a["a"], b["a"], "peer_out") >= size // 2, (a, b)
        assert delta(a["b"], b["b"], "peer_in") >= size // 2, (a, b)
        time.sleep(0.6)  # one refresh of /circuits
        assert sent_through_relay() < size // 2, pub.circuit(doc["circuit_id"])


def scenario(kind_a, kind_b, variant=None, send_args=(), listen_args=()):
    """One transfer from A to B; |variant| names a row of EXPECT beside the two kinds.
    A session that can punch sends at 2 MB/s, so that the time before the upgrade
    (about 0.1 s) carries a small part of the file whatever the machine's speed."""
    key = (kind_a, kind_b) + ((variant,) if variant else ())
    if EXPECT[key] == "relayed-then-direct":
        send_args = ("--limit-rate", "2000000", *send_args)
    with natlab.Lab(kind_a, kind_b) as lab:
        pub = natlab.Public(lab, SECRET)
        doc, before, after = transfer(lab, pub, SIZE, send_args, listen_args)
        print(f"    {'-'.join(key)}: {json.dumps(doc)}")
        assert_path(EXPECT[key], doc, pub, before, after, SIZE)


@test
def eim_to_eim_transfer():
    scenario("eim", "eim")


@test
def cgnat_to_eim_transfer():
    scenario("cgnat", "eim")


@test
def same_nat_transfer():
    scenario("same", "same")


@test
def same_nat_transfer_without_mdns():
    # the listener's own mDNS announcements would count as bytes between the peers
    scenario("same", "same", "no-mdns", ("--no-mdns",), ("--mdns", "disabled"))


@test
def symmetric_to_symmetric_stays_relayed():
    """Stays relayed, and the probes toward the peer end within the probe window (0.5 s
    here) although the session lasts longer: A's edge counters are sampled throughout.
    Both sides learnt from the two relays that their mapping varies by destination, and
    each told its relay (HELLO, pos-relay/3): after the first attempt the sender asks for
    no more although it may every second (--punch-retry 1, the relays allow one every
    0.5 s), and says why. The listener says so too: it learnt the sender's mapping from
    PUNCH_START, which the relay had from the sender's CONNECT (the sender's HELLO went
    out before it had compared the two relays' observations)."""
    with natlab.Lab("symmetric", "symmetric") as lab:
        pub = natlab.Public(lab, SECRET, relay_config={"punch_min_interval_ms": 500})
        samples, marks = [], {}

        def sample(sender, listener):
            while sender.alive():
                samples.append((time.monotonic(), lab.counters("a")["peer_out"]))
                time.sleep(0.1)
            marks["sender"] = sender.output()
            marks["listener"] = listener.output()
        doc, before, after = transfer(lab, pub, SIZE, ("--limit-rate", "1500000",
                                                       "--punch-window", "0.5",
                                                       "--punch-retry", "1"),
                                      ("--punch-window", "0.5"), during=sample)
        print(f"    symmetric-symmetric: {json.dumps(doc)}")
        assert_path("relayed", doc, pub, before, after, SIZE)
        changes = [t for (t, v), (_, w) in zip(samples, samples[1:]) if w != v]
        assert doc["seconds"] >= 2.0, doc  # long enough to see probing end
        assert changes, f"no probe toward the peer was counted: {samples}"
        assert changes[-1] - changes[0] <= 0.5 + 1.0, (changes, samples)
        assert doc["punch_attempts"] == 1 and doc["punch_stopped"] == "nat", doc
        assert marks["sender"].count("both NATs vary by destination: staying relayed") == 1, \
            marks["sender"]
        assert marks["listener"].count("both NATs vary by destination: staying relayed") == 1, \
            marks["listener"]


@test
def nat_type_from_two_relays():
    """`pos-p2p relays` compares the addresses the two relays observed: the EIM side's are
    one address and port, the symmetric side's differ; a listener there says once that
    direct paths are unlikely. One side endpoint-independent: punching may work, so a
    session from it keeps trying (--punch-retry 1: more than one attempt)."""
    with natlab.Lab("eim", "symmetric") as lab:
        pub = natlab.Public(lab, SECRET, relay_config={"punch_min_interval_ms": 500})
        token = pub.relays[0].token()
        lines = {}
        for side in ("a", "b"):
            r = lab.run(side, [suite.P2P, "relays", "--identity", new_identity()[0],
                               "--api-url", pub.url, "--token", token], check=False)
            no_sanitizer_report(r.stderr, "pos-p2p relays")
            assert r.returncode == 0 and r.stdout.count(": accepted,") == 2, r.stdout + r.stderr
            lines[side] = [x for x in r.stdout.splitlines() if x.startswith("nat mapping: ")]
            assert len(lines[side]) == 1, r.stdout
        assert lines["a"][0].startswith("nat mapping: endpoint-independent"), lines
        assert lines["b"][0].startswith("nat mapping: varies by destination"), lines
        ident_b, _ = new_identity()
        listener = lab.proc("b", [suite.P2P, "listen", "--identity", ident_b, "--out", tmpdir(),
                                  "--api-url", pub.url, "--token", token], name="listen")
        wait_until(lambda: "listening" in listener.output() or not listener.alive(), 20,
                   what="pos-p2p listen to reach its relay")
        assert listener.output().count("a direct path is unlikely") == 1, listener.output()
        doc, _, _ = transfer(lab, pub, SIZE, ("--limit-rate", "1000000", "--punch-window",
                                              "0.5", "--punch-retry", "1"))
        print(f"    eim-symmetric: {json.dumps(doc)}")
        assert doc["ok"] is True and doc["bytes"] == SIZE, doc
        assert doc["punch_attempts"] >= 2 and doc["punch_stopped"] is None, doc
        # with one relay answering there is nothing to compare
        pub.relays[1].proc.stop()
        r = lab.run("b", [suite.P2P, "relays", "--identity", new_identity()[0], "--api-url",
                          pub.url, "--token", token, "--timeout", "1"], check=False)
        assert r.stdout.count(": accepted,") == 1, r.stdout + r.stderr
        assert "\nnat mapping: unknown" in r.stdout, r.stdout


@test
def blackholed_direct_path_falls_back_to_the_relay():
    """A direct session whose path is blackholed mid-transfer goes back to the relay
    (the sender says so, with the reason), the file arrives intact, and after the path is restored the
    session goes direct again (retry 1 s; the relays allow an attempt every 0.5 s)."""
    with natlab.Lab("eim", "eim") as lab:
        pub = natlab.Public(lab, SECRET, relay_config={"punch_min_interval_ms": 500})
        marks = {}

        def cut(sender, listener):
            wait_until(lambda: "relayed -> direct to " in sender.output(), 10,
                       what="the session to go direct")
            lab.blackhole(True)
            marks["cut"] = time.monotonic()
            wait_until(lambda: "direct -> relayed through " in sender.output(), 6,
                       what="the session to fall back to the relay")
            marks["back"] = time.monotonic()
            lab.blackhole(False)
            wait_until(lambda: sender.output().count("relayed -> direct to ") >= 2 or
                       not sender.alive(), 10, what="the session to go direct again")
            marks["listener"], marks["sender"] = listener, sender.output()
        doc, _, _ = transfer(lab, pub, SIZE, ("--limit-rate", "700000", "--punch-retry", "1"),
                             during=cut)
        print(f"    blackhole: {json.dumps(doc)} fell back after "
              f"{marks['back'] - marks['cut']:.2f} s")
        assert doc["ok"] is True and doc["bytes"] == SIZE, doc
        assert doc["path"] == "relayed-then-direct" and doc["upgraded_after_ms"] is not None, doc
        assert doc["bytes_direct"] > 0 and doc["bytes_relayed"] > 0, doc
        # the listener saw the session go direct, and back to the relay with the dialer
        lst = marks["listener"]
        wait_until(lambda: "relayed -> direct to " in lst.output(), 5,
                   what="the listener to report the direct path:\n" + lst.output())
        wait_until(lambda: "direct -> relayed through " in lst.output(), 5,
                   what="the listener to report the move back:\n" + lst.output())
        assert "(the peer moved back)" in lst.output(), lst.output()
        wait_until(lambda: lst.output().count("relayed -> direct to ") >= 2, 5,
                   what="the listener to report the direct path again:\n" + lst.output())
        assert "(the direct path stalled)" in marks["sender"], marks["sender"]
        assert marks["sender"].count("relayed -> direct to ") >= 2, marks["sender"]


@test
def conntrack_flush_mid_transfer_recovers():
    """Both routers forget every mapping mid-transfer while the session is relayed
    (punching on, the direct path blackholed so that it fails): the relay's packets to the
    receiver are dropped until the receiver sends to the relay again. The library sends
    a KEEPALIVE to the relay after 1 s without its packets, so the transfer goes on well
    before the 10 s keepalive would have made the mapping anew, and the file is intact."""
    with natlab.Lab("eim", "eim") as lab:
        pub = natlab.Public(lab, SECRET)
        marks = {}

        def flush(sender, listener):
            wait_until(lambda: "session from " in listener.output(), 15,
                       what="the listener to accept the session:\n" + listener.output())
            time.sleep(0.5)  # mid-transfer: 4 MB at 2 MB/s
            lab.flush_conntrack()
            marks["flush"] = time.monotonic()
            wait_until(lambda: not sender.alive(), 8,
                       what="the transfer to end soon after the flush:\n" + sender.output())
            marks["end"] = time.monotonic()
        lab.blackhole(True)
        doc, _, _ = transfer(lab, pub, SIZE, ("--limit-rate", "2000000"), during=flush)
        print(f"    flush: {json.dumps(doc)} done {marks['end'] - marks['flush']:.2f} s "
              "after the flush")
        assert doc["ok"] is True and doc["files_ok"] == 1 and doc["bytes"] == SIZE, doc
        assert doc["path"] == "relayed", doc


@test
def new_mapping_starts_a_new_attempt():
    """A's symmetric NAT forgets its mappings mid-transfer (conntrack flush): A's next
    packets leave from a new port, the relay sees A's control connection move and starts a
    new punch attempt on its circuit at once (the retry interval is 60 s: without the move
    there would be one attempt). The relays' idle_timeout of 2 s makes A's control
    keep-alives (every second) carry the new port soon; the file arrives intact."""
    with natlab.Lab("symmetric", "eim") as lab:
        pub = natlab.Public(lab, SECRET, relay_config={"punch_min_interval_ms": 500,
                                                         "idle_timeout": 2})
        marks = {}

        def flush(sender, listener):
            wait_until(lambda: "session from " in listener.output(), 15,
                       what="the listener to accept the session:\n" + listener.output())
            time.sleep(0.7)
            lab.flush_conntrack(lab.routers["a"])
            marks["flush"] = time.monotonic()
        doc, _, _ = transfer(lab, pub, SIZE, ("--limit-rate", "1000000"), during=flush)
        print(f"    new mapping: {json.dumps(doc)}")
        assert doc["ok"] is True and doc["bytes"] == SIZE and doc["path"] == "relayed", doc
        assert doc["punch_attempts"] >= 2, doc


def relay_metric(pub, name):
    """|name| (no labels) summed over the lab's relays (GET /metrics)."""
    total = 0.0
    for r in pub.relays:
        st, body = pub.lab.http_get("srv", r.http + "/metrics")
        assert st == 200, st
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                total += float(line.split()[-1])
    return total


@test
def park_roaming():
    """A parked listener behind a symmetric NAT (issue 14): its router forgets every
    mapping (conntrack flush), so its next keep-alive leaves from a new public port; the
    relay moves the record there (a roam) and a sender's request wakes the listener at
    its new address: the file arrives intact. Then the listener's LAN interface gets a
    new address: the endpoint notices (netlink) and sends a keep-alive at once."""
    with natlab.Lab("eim", "symmetric") as lab:
        pub = natlab.Public(lab, SECRET, n_relays=1,
                            relay_config={"park_keepalive": 2, "park_lifetime": 30})
        token = pub.relays[0].token()
        ident_b, peer_b = new_identity()
        out = tmpdir()
        listener = lab.proc("b", [suite.P2P, "listen", "--identity", ident_b, "--out", out,
                                  "--api-url", pub.url, "--token", token, "--park-after", "1",
                                  "--mdns", "disabled"], name="listen")
        wait_until(lambda: "relay: parked" in listener.output() or not listener.alive(), 20,
                   what="the listener to park:\n" + listener.output())
        roams = relay_metric(pub, "pos_relay_park_roams_total")
        lab.flush_conntrack(lab.routers["b"])
        # the next keep-alive (2 s) comes from the new mapping
        wait_until(lambda: relay_metric(pub, "pos_relay_park_roams_total") > roams, 6,
                   what="the relay to move the parked record")
        path = make_file(300000)
        r = lab.run("a", [suite.P2P, "send", "--identity", new_identity()[0], "--api-url",
                          pub.url, "--token", token, "--to", peer_b, "--no-mdns", path],
                    check=False, timeout=60)
        no_sanitizer_report(r.stderr, "pos-p2p send")
        assert r.returncode == 0, r.stdout + r.stderr + listener.output()
        got = os.path.join(out, os.path.basename(path))
        wait_until(lambda: os.path.exists(got), 5, what="the received file")
        assert filecmp.cmp(path, got, shallow=False), "the received file differs"
        assert "relay: awake (woken by the relay" in listener.output(), listener.output()
        # parked again; a new interface address: a keep-alive at once, not at the next 2 s
        def keepalives():
            return sum(relay_metric(pub, f'pos_relay_park_keepalives_total{{result="{x}"}}')
                       for x in ("ok", "dropped"))
        wait_until(lambda: listener.output().count("relay: parked") == 2, 15,
                   what="the listener to park again:\n" + listener.output())
        time.sleep(1.1)  # 1.1 s after parking (and its first keep-alive), 0.9 s before the next
        seen = keepalives()
        new_ip = lab.client_ip["b"].rsplit(".", 1)[0] + ".77/24"
        lab.run("b", ["ip", "addr", "add", new_ip, "dev", "eth0"])
        wait_until(lambda: keepalives() > seen, 0.6,
                   what="a keep-alive right after the address change")
        no_sanitizer_report(listener.output(), "pos-p2p listen")


def punch_requests(pub):
    """PUNCH_REQUESTs the relays started an attempt for (GET /metrics, both relays)."""
    total = 0
    for r in pub.relays:
        st, body = pub.lab.http_get("srv", r.http + "/metrics")
        assert st == 200, st
        for line in body.decode().splitlines():
            if line.startswith('pos_relay_punch_requests_total{result="started"} '):
                total += int(line.split()[-1])
    return total


@test
def new_interface_address_asks_for_a_new_attempt():
    """Two symmetric NATs: after the first attempt neither side asks for another (both
    NATs vary). An address added to the listener's LAN interface mid-transfer: its
    endpoint notices (netlink) and asks the relay for a new attempt with its new local
    addresses (PUNCH_REQUEST, 0.5 s after the change), so the relay starts one for that
    request and the sender's session sees attempt 2."""
    with natlab.Lab("symmetric", "symmetric") as lab:
        pub = natlab.Public(lab, SECRET, relay_config={"punch_min_interval_ms": 500})
        marks = {}

        def add_address(sender, listener):
            wait_until(lambda: "session from " in listener.output(), 15,
                       what="the listener to accept the session:\n" + listener.output())
            time.sleep(1.0)  # the first attempt (0.5 s window) is over
            marks["before"] = punch_requests(pub)
            new_ip = lab.client_ip["b"].rsplit(".", 1)[0] + ".77/24"
            lab.run("b", ["ip", "addr", "add", new_ip, "dev", "eth0"])
        doc, _, _ = transfer(lab, pub, SIZE, ("--limit-rate", "1500000", "--punch-window",
                                              "0.5"), ("--punch-window", "0.5"),
                             during=add_address)
        print(f"    new address: {json.dumps(doc)}")
        assert doc["ok"] is True and doc["bytes"] == SIZE and doc["path"] == "relayed", doc
        assert marks["before"] == 0, marks
        assert punch_requests(pub) >= 1, "no PUNCH_REQUEST started an attempt"
        assert doc["punch_attempts"] == 2, doc


# A client on A's LAN binds PORT and listens; a public host sends to A's public
# address at PORT, unasked, until the client's own packet reaches it, then answers.
LAN_CLIENT = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(0.1)
def count(seconds):
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            s.recv(2048)
            n += 1
        except socket.timeout:
            pass
    return n
unsolicited = count(1.5)
s.sendto(b"hello", (sys.argv[2], int(sys.argv[3])))
print(json.dumps({"unsolicited": unsolicited, "answers": count(1.5)}))
"""
PUBLIC_HOST = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(0.05)
target, sent, end = (sys.argv[3], int(sys.argv[4])), 0, time.monotonic() + 10
while time.monotonic() < end:
    s.sendto(b"unsolicited", target)
    sent += 1
    try:
        data, src = s.recvfrom(2048)
    except socket.timeout:
        continue
    for _ in range(3):
        s.sendto(b"answer", src)
    print(json.dumps({"sent": sent, "hello_from": "%s:%d" % src}), flush=True)
    break
"""


@test
def router_drops_unsolicited_wan_input():
    with natlab.Lab("eim", "eim") as lab:
        port, host = 40000, natlab.RELAY_IPS[0]
        drops0 = lab.wan_drops("ra")
        outside = lab.proc("srv", [natlab.PY, "-c", PUBLIC_HOST, host, "9999",
                                   lab.public_ip["a"], str(port)], name="public-host")
        r = lab.run("a", [natlab.PY, "-c", LAN_CLIENT, str(port), host, "9999"], timeout=20)
        inside = json.loads(r.stdout)
        wait_until(lambda: "hello_from" in outside.output(), 5, what="the public host's report")
        seen = json.loads(outside.output().strip().splitlines()[-1])
        # a second of packets at the mapped port: none reached the LAN, the router dropped them
        assert seen["sent"] >= 10, seen
        assert inside["unsolicited"] == 0, inside
        assert lab.wan_drops("ra") - drops0 >= 10, lab.wan_drops("ra")
        # the answers to the client's own packet pass, and the EIM NAT kept its port
        assert inside["answers"] == 3, inside
        assert seen["hello_from"] == f"{lab.public_ip['a']}:{port}", seen


# udp.py recv PORT SECONDS [REPLY]: count datagrams on PORT for SECONDS (answering each with
# REPLY); udp.py send HOST PORT N [SRC_PORT] [SECONDS]: send N datagrams, then count answers.
UDP = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.05)
def count(seconds, reply=None):
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data, src = s.recvfrom(2048)
        except socket.timeout:
            continue
        n += 1
        if reply:
            s.sendto(reply.encode(), src)
    return n
if sys.argv[1] == "recv":
    s.bind(("0.0.0.0", int(sys.argv[2])))
    print("ready", flush=True)
    print(json.dumps({"got": count(float(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)}))
else:
    s.bind(("0.0.0.0", int(sys.argv[5]) if len(sys.argv) > 5 else 0))
    for _ in range(int(sys.argv[4])):
        s.sendto(b"x" * 100, (sys.argv[2], int(sys.argv[3])))
        time.sleep(0.005)
    print(json.dumps({"answers": count(float(sys.argv[6]) if len(sys.argv) > 6 else 0.5)}))
"""


def udp_recv(lab, node, port, seconds, reply=None):
    p = lab.proc(node, [natlab.PY, "-c", UDP, "recv", str(port), str(seconds)] +
                 ([reply] if reply else []), name=f"recv-{node}")
    wait_until(lambda: "ready" in p.output(), 5, what=f"a receiver in {node}")
    return p


def udp_result(p, key):
    wait_until(lambda: key in p.output(), 10, what="the receiver's count")
    return json.loads(p.output().strip().splitlines()[-1])[key]


def udp_send(lab, node, host, port, n, src_port=0, seconds=0.5):
    r = lab.run(node, [natlab.PY, "-c", UDP, "send", host, str(port), str(n), str(src_port),
                       str(seconds)])
    return json.loads(r.stdout)["answers"]


@test
def blackhole_cuts_only_the_direct_path():
    with natlab.Lab("eim", "none") as lab:
        b, relay = lab.public_ip["b"], natlab.RELAY_IPS[0]
        rb = udp_recv(lab, "b", 5000, 1.0)
        udp_send(lab, "a", b, 5000, 20, seconds=0)
        assert udp_result(rb, "got") == 20
        lab.blackhole(True)
        rb, rs = udp_recv(lab, "b", 5000, 1.0), udp_recv(lab, "srv", 5000, 1.0)
        udp_send(lab, "a", b, 5000, 20, seconds=0)
        udp_send(lab, "a", relay, 5000, 20, seconds=0)
        assert udp_result(rb, "got") == 0 and udp_result(rs, "got") == 20
        lab.blackhole(False)
        rb = udp_recv(lab, "b", 5000, 1.0)
        udp_send(lab, "a", b, 5000, 20, seconds=0)
        assert udp_result(rb, "got") == 20


@test
def conntrack_flush_forgets_the_mapping():
    with natlab.Lab("eim", "none") as lab:
        a, b = lab.public_ip["a"], lab.public_ip["b"]
        # A (LAN port 41000) talks to B's port 5000 and gets answers: a mapping on A's router
        rb = udp_recv(lab, "b", 5000, 1.0, reply="answer")
        assert udp_send(lab, "a", b, 5000, 5, src_port=41000) == 5
        assert udp_result(rb, "got") == 5
        # B's port 5000 may send to that mapping on its own now...
        ra = udp_recv(lab, "a", 41000, 1.0)
        udp_send(lab, "b", a, 41000, 5, src_port=5000, seconds=0)
        assert udp_result(ra, "got") == 5
        # ...until the router forgets it: then the same datagrams are unsolicited, dropped
        drops0 = lab.wan_drops("ra")
        lab.flush_conntrack()
        ra = udp_recv(lab, "a", 41000, 1.0)
        udp_send(lab, "b", a, 41000, 5, src_port=5000, seconds=0)
        assert udp_result(ra, "got") == 0
        assert lab.wan_drops("ra") - drops0 == 5, lab.wan_drops("ra")


@test
def delay_and_loss_are_applied():
    with natlab.Lab("none", "none", delay_ms=30, loss_pct=20) as lab:
        rs = udp_recv(lab, "srv", 5000, 3.0, reply="answer")
        answers = udp_send(lab, "a", natlab.RELAY_IPS[0], 5000, 200, seconds=1.0)
        got = udp_result(rs, "got")
        # 20% loss each way: P(no loss in 200) is 1e-19; P(>= 190 of 200) is about 1e-12
        assert 100 < got < 190 and 40 < answers < got, (got, answers)
        # 30 ms each way on A's access link: a round trip to the relay host >= 60 ms
        code = ("import socket, time\n"
                "t = time.monotonic()\n"
                "socket.create_connection(('10.200.0.10', 5001), timeout=5).close()\n"
                "print(time.monotonic() - t)\n")
        lab.proc("srv", [natlab.PY, "-c", "import socket, time\n"
                         "s = socket.socket(); s.bind(('10.200.0.10', 5001)); s.listen(8)\n"
                         "print('ready', flush=True); time.sleep(30)\n"], name="tcp")
        wait_until(lambda: lab.run("srv", ["ss", "-ltn"]).stdout.count(":5001") > 0, 5,
                   what="a TCP listener")
        rtts = []
        for _ in range(3):  # a SYN may be lost: take the best of those that connect
            r = lab.run("a", [natlab.PY, "-c", code], check=False)
            if r.returncode == 0:
                rtts.append(float(r.stdout))
        assert rtts and min(rtts) >= 0.060, rtts


if __name__ == "__main__":
    run()
