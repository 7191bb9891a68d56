#!/usr/bin/python3
"""The hole-punching benchmark of issue 11 (run by loadtest/bench-punch.sh).

For each scenario of the issue's table: one NAT lab (tests/natlab/natlab.py:
Redis, pos-discovery and two relays in a public core, two client LANs behind
real NAT routers), one `pos-p2p listen` on B's LAN, and RUNS transfers of a
fresh random file from A's LAN with `pos-p2p send --json`. Per run: success
(exit 0 and the received file's BLAKE2b equal), the path the sender reports,
time to direct, bytes relayed before the upgrade, throughput, and whether the
relay's per-circuit counters and the routers' counters agree with the
reported path. Per scenario one line of a table; then the throughput of the
same file sent directly (--addr) and relayed (--relay-only) between two
public hosts.

    bench_punch.py [--runs N] [--size MB] [--only NAME,...]   (root; POS_BUILD_DIR set)
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "natlab"))
import harness  # noqa: E402
import natlab  # noqa: E402
import suite  # noqa: E402

SECRET = "bench-punch-secret-0123456789abcdef0123"

# name, kinds, lab options, what the issue demands, a disturbance during the transfer
SCENARIOS = [
    ("public-public", ("none", "none"), {}, "relayed-then-direct >= 19/20, p50 <= 1 s", None),
    ("eim-public", ("eim", "none"), {}, "relayed-then-direct >= 19/20, p50 <= 1 s", None),
    ("eim-eim", ("eim", "eim"), {}, "relayed-then-direct >= 19/20, p50 <= 1 s", None),
    ("cgnat-eim", ("cgnat", "eim"), {}, "relayed-then-direct >= 19/20, p50 <= 1 s", None),
    ("same-nat", ("same", "same"), {}, "direct over the LAN >= 19/20", None),
    ("symmetric-symmetric", ("symmetric", "symmetric"), {}, "stays relayed, intact", None),
    ("eim-symmetric", ("eim", "symmetric"), {}, "stays relayed, intact", None),
    # 10 ms one way on each access link: A<->B RTT 40 ms; 1% per link and way: ~2% end to end
    ("eim-eim 40ms 2%", ("eim", "eim"), {"delay_ms": 10, "loss_pct": 1},
     "direct >= 18/20", None),
    ("eim-eim blackhole", ("eim", "eim"), {}, "relay within 3 s, intact, direct after",
     "blackhole"),
    ("eim-eim conntrack flush", ("eim", "eim"), {}, "recovers, intact", "flush"),
]
PROBE_BUDGET = 64 * 1024  # bytes a relayed session may send toward the peer: probes
DISTURBED_RATE = 4 * 1000 * 1000  # bytes/s: a disturbed transfer lasts long enough to hit


def blake2b(path):
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def new_identity():
    path = os.path.join(harness.tmpdir(), "identity")
    r = natlab.sh([suite.P2P, "id", "--identity", path])
    return path, r.stdout.strip().splitlines()[-1]


def make_file(size):
    path = os.path.join(harness.tmpdir(), "payload.bin")
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    return path


def disturb(lab, kind, stop):
    """During a transfer: cut the direct path for 1.5 s, or flush the routers' conntrack."""
    if stop.wait(1.0):
        return
    if kind == "blackhole":
        lab.blackhole(True)
        stop.wait(1.5)
        lab.blackhole(False)
    elif kind == "flush":
        lab.flush_conntrack()


def one_run(lab, pub, listener_peer, token, out, size, extra, disturbance):
    """One `send --json`; returns a dict of what was measured."""
    path = make_file(size)
    want = blake2b(path)
    before = {s: lab.counters(s) for s in ("a", "b")}
    stop = threading.Event()
    t = None
    if disturbance:
        t = threading.Thread(target=disturb, args=(lab, disturbance, stop))
        t.start()
    t0 = time.monotonic()
    r = lab.run("a", [suite.P2P, "send", "--json", "--identity", new_identity()[0],
                      "--api-url", pub.url, "--token", token, "--to", listener_peer, *extra,
                      path], check=False, timeout=600)
    wall = time.monotonic() - t0
    stop.set()
    if t:
        t.join()
    after = {s: lab.counters(s) for s in ("a", "b")}
    res = {"rc": r.returncode, "wall": wall}
    try:
        res["doc"] = json.loads(r.stdout)
    except ValueError:
        res["doc"] = None
    if r.returncode != 0:
        res["stderr"] = r.stderr[-500:]
    got = os.path.join(out, os.path.basename(path))
    deadline = time.monotonic() + 5
    while r.returncode == 0 and not os.path.exists(got) and time.monotonic() < deadline:
        time.sleep(0.05)
    res["intact"] = r.returncode == 0 and os.path.exists(got) and blake2b(got) == want
    for p in (path, got):
        if os.path.exists(p):
            os.unlink(p)
    # where the bytes went, by the routers: to the relays or to the peer
    res["edge_relay"] = after["a"]["relay_out"] - before["a"]["relay_out"]
    res["edge_peer"] = after["a"]["peer_out"] - before["a"]["peer_out"]
    doc = res["doc"]
    if doc and doc.get("circuit_id"):
        time.sleep(0.6)  # /circuits is refreshed twice a second
        _, c = pub.circuit(doc["circuit_id"])
        res["circuit_bytes"] = c["bytes"][c["ids"].index(doc["circuit_id"])] if c else 0
    else:
        res["circuit_bytes"] = 0
    res["agree"] = agrees(res, size)
    return res


def agrees(res, size):
    """Whether the relay's and the routers' counters tell the path the sender reported."""
    doc = res["doc"]
    if not doc:
        return False
    if doc["path"] == "relayed":
        # toward the peer only punching probes (small, within a probe window)
        return res["circuit_bytes"] >= size and res["edge_relay"] >= size and \
            res["edge_peer"] <= PROBE_BUDGET
    if doc["path"] == "direct":
        return res["edge_peer"] >= size and res["circuit_bytes"] < PROBE_BUDGET
    if doc["path"] == "relayed-then-direct":
        # a fast transfer moves megabytes through the relay before the upgrade (GSO: 50 MB/s
        # x 100 ms): the direct path must carry a real share, the relay not the whole file,
        # and the two together all of it
        return res["edge_peer"] >= size // 10 and res["circuit_bytes"] < size and \
            res["edge_peer"] + res["circuit_bytes"] >= size
    return False


def pct(values, q):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def fmt_ms(v):
    return "n/a" if v is None else f"{v:.0f}"


def run_scenario(name, kinds, opts, demand, disturbance, runs, size):
    extra = ["--limit-rate", str(DISTURBED_RATE)] if disturbance else []
    results = []
    with natlab.Lab(*kinds, **opts) as lab:
        pub = natlab.Public(lab, SECRET)
        token = pub.relays[0].token()
        ident, peer = new_identity()
        out = harness.tmpdir()
        listener = lab.proc("b", [suite.P2P, "listen", "--identity", ident, "--out", out,
                                  "--api-url", pub.url, "--token", token], name="listen")
        harness.wait_until(lambda: "listening" in listener.output(), 20,
                           what="pos-p2p listen")
        for i in range(runs):
            res = one_run(lab, pub, peer, token, out, size, extra, disturbance)
            doc = res["doc"] or {}
            print(f"  {name} run {i + 1}: rc {res['rc']} intact {res['intact']} path "
                  f"{doc.get('path')} upgraded_after_ms {doc.get('upgraded_after_ms')} "
                  f"{res['wall']:.2f} s agree {res['agree']}", file=sys.stderr, flush=True)
            if res.get("stderr"):
                print("    " + res["stderr"].strip().replace("\n", "\n    "), file=sys.stderr)
                print("    listener: " + listener.output()[-800:].strip().replace(
                    "\n", "\n    listener: "), file=sys.stderr)
            results.append(res)
    ok = [r for r in results if r["intact"]]
    paths = {}
    for r in results:
        p = (r["doc"] or {}).get("path", "failed") if r["rc"] == 0 else "failed"
        paths[p] = paths.get(p, 0) + 1
    ups = [r["doc"]["upgraded_after_ms"] for r in ok
           if r["doc"] and r["doc"]["upgraded_after_ms"] is not None]
    before_up = [r["doc"]["bytes_relayed"] for r in ok
                 if r["doc"] and r["doc"]["path"] == "relayed-then-direct"]
    tput = [r["doc"]["bytes"] / r["doc"]["seconds"] / 1e6 for r in ok
            if r["doc"] and r["doc"]["seconds"] > 0]
    return {
        "scenario": name, "demand": demand,
        "success": f"{len(ok)}/{len(results)}",
        "paths": ", ".join(f"{k} {v}" for k, v in sorted(paths.items())),
        "direct_p50": fmt_ms(pct(ups, 0.5)), "direct_p95": fmt_ms(pct(ups, 0.95)),
        "relayed_before": "n/a" if not before_up else f"{statistics.median(before_up) / 1e6:.2f} MB",
        "tput": "n/a" if not tput else f"{statistics.median(tput):.1f}",
        "agree": f"{sum(r['agree'] for r in results)}/{len(results)}",
        "limited": bool(disturbance),
    }


def direct_vs_relayed(runs, size):
    """The same file between two public hosts: --addr (direct) and --relay-only (relayed)."""
    out_rates = {"direct": [], "relayed": []}
    with natlab.Lab("none", "none") as lab:
        pub = natlab.Public(lab, SECRET)
        token = pub.relays[0].token()
        ident, peer = new_identity()
        out = harness.tmpdir()
        listener = lab.proc("b", [suite.P2P, "listen", "--identity", ident, "--out", out,
                                  "--port", "7000", "--api-url", pub.url, "--token", token],
                            name="listen")
        harness.wait_until(lambda: "listening" in listener.output(), 20, what="pos-p2p listen")
        for mode, extra in (("direct", ["--addr", f"{lab.public_ip['b']}:7000"]),
                            ("relayed", ["--relay-only"])):
            for _ in range(runs):
                res = one_run(lab, pub, peer, token, out, size, extra, None)
                if res["intact"] and res["doc"]["seconds"] > 0:
                    out_rates[mode].append(res["doc"]["bytes"] / res["doc"]["seconds"] / 1e6)
    return {k: (statistics.median(v) if v else None, len(v)) for k, v in out_rates.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--size", type=float, default=20, help="MB (10^6 bytes)")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    a = ap.parse_args()
    if a.runs < 1 or a.size <= 0:
        ap.error("--runs and --size want positive numbers")
    why = natlab.can_make_namespaces()
    if why:
        print(f"bench-punch: {why}", file=sys.stderr)
        return 77
    size = int(a.size * 1e6)
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    rows = []
    for name, kinds, opts, demand, disturbance in SCENARIOS:
        if only and name not in only:
            continue
        rows.append(run_scenario(name, kinds, opts, demand, disturbance, a.runs, size))
    dvr = direct_vs_relayed(a.runs, size) if not only or "direct-vs-relayed" in only else None
    print(f"\nbench-punch: {a.runs} run(s) per scenario, {size} bytes, `pos-p2p send --json`")
    print("| scenario | issue 11 demands | success | paths | to direct p50/p95 ms | "
          "relayed before upgrade | MB/s (p50) | counters agree |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["tput"] + (" (limited)" if r["limited"] and r["tput"] != "n/a" else "")
        print(f"| {r['scenario']} | {r['demand']} | {r['success']} | {r['paths']} | "
              f"{r['direct_p50']}/{r['direct_p95']} | {r['relayed_before']} | {t} | "
              f"{r['agree']} |")
    if dvr:
        d, rl = dvr["direct"], dvr["relayed"]
        show = (lambda v: "n/a" if v[0] is None else f"{v[0]:.1f} MB/s ({v[1]} runs)")
        print(f"\ndirect vs relayed, the same {size}-byte file between two public hosts: "
              f"direct {show(d)}, relayed {show(rl)}")
    print("\n(limited): sent with --limit-rate "
          f"{DISTURBED_RATE} so the disturbance lands mid-transfer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
