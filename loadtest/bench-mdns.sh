#!/usr/bin/env bash
# Benchmark of local discovery: median time for a browsing node to see a node
# that just started advertising, on two network namespaces joined by a bridge.
#   ours:  pos-p2p discover (running) sees a freshly started pos-p2p advertise
#   ref:   python-zeroconf (running, resolving) sees a freshly started
#          avahi-publish on a running avahi-daemon
# Each figure includes starting the advertising process, probing (RFC 6762
# requires ~750 ms of it for a new unique name) and resolving SRV/TXT/address.
# Second scenario ("cold browse"): the advertiser has been announced for a
# few seconds and a browser is started; time from starting the browsing
# process until it reports the peer resolved (its first query, the answer).
#   ours:  a freshly started pos-p2p discover sees a running pos-p2p advertise
#   ref:   a freshly started zc_helper.py browse (python-zeroconf) sees a
#          running avahi-publish; its figure includes the Python start-up,
#          shown separately as "after Zeroconf()" without it
# Needs root (namespaces), avahi-daemon, dbus-daemon and python3-zeroconf.
# usage: loadtest/bench-mdns.sh [ROUNDS] [BUILD_DIR]     (default 10, ./build)
set -euo pipefail
rounds=${1:-10}
build=${2:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench-mdns: needs root for network namespaces" >&2; exit 2; }
exec /usr/bin/python3 - "$rounds" "$(cd "$build" && pwd)" "$here" <<'PY'
import json, os, signal, statistics, subprocess, sys, tempfile, time
rounds, build, src = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.path[:0] = [os.path.join(src, "tests"), os.path.join(src, "tests", "mdns")]
from netlab import Lab  # noqa: E402

pos = os.path.join(build, "client-lib", "cli", "pos-p2p")
zc = os.path.join(src, "tests", "mdns", "zc_helper.py")
avahi = os.path.join(src, "tests", "mdns", "avahi_ns.sh")
work = tempfile.mkdtemp(prefix="bench-mdns-")
procs, pids = [], []


def start(argv, out):
    p = subprocess.Popen(argv, stdout=open(out, "w"), stderr=subprocess.STDOUT)
    procs.append(p)
    return p


def wait_for(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.002)
    return None


def lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f.read().splitlines() if l.startswith("{")]


lab = Lab(2)
try:
    # ---- ours ----
    ours = []
    disc_out = os.path.join(work, "discover.out")
    start(lab.argv(1, pos, "discover", "--identity", os.path.join(work, "b", "identity"),
                   "--json", "--timeout", "0"), disc_out)
    time.sleep(2)
    for i in range(rounds):
        ident = os.path.join(work, f"a{i}", "identity")
        card = subprocess.run([pos, "contact", "--identity", ident, "card"], capture_output=True,
                              text=True, check=True).stdout.strip()
        pid = card.split(":")[2]
        t0 = time.monotonic()
        a = start(lab.argv(0, pos, "advertise", "--identity", ident), os.path.join(work, f"a{i}.out"))
        ok = wait_for(lambda: any(e["event"] == "found" and e["peer_id"] == pid
                                  for e in lines(disc_out)), 15)
        if ok:
            ours.append((time.monotonic() - t0) * 1000)
        a.terminate()
        a.wait()
        wait_for(lambda: any(e["event"] == "lost" and e["peer_id"] == pid for e in lines(disc_out)), 5)
        time.sleep(0.3)
    for p in procs:  # the warm browser: the cold one is to be alone on its host
        p.terminate()
        p.wait()
    procs.clear()

    # ---- ours, cold browse ----
    ours_cold = []
    ident = os.path.join(work, "cold", "identity")
    cold_pid = subprocess.run([pos, "contact", "--identity", ident, "card"], capture_output=True,
                              text=True, check=True).stdout.strip().split(":")[2]
    start(lab.argv(0, pos, "advertise", "--identity", ident), os.path.join(work, "cold.out"))
    time.sleep(3)
    for i in range(rounds):
        out = os.path.join(work, f"cold{i}.out")
        t0 = time.monotonic()
        d = start(lab.argv(1, pos, "discover", "--identity", os.path.join(work, "c", "identity"),
                           "--json", "--timeout", "3"), out)
        ok = wait_for(lambda: any(e["event"] == "found" and e["peer_id"] == cold_pid
                                  for e in lines(out)), 5)
        if ok:
            ours_cold.append((time.monotonic() - t0) * 1000)
        d.terminate()
        d.wait()
        time.sleep(1.2)
    for p in procs:
        p.terminate()
        p.wait()
    procs.clear()

    # ---- reference: avahi-publish -> python-zeroconf ----
    ref = []
    pidfile = os.path.join(work, "avahi-pids")
    start(lab.argv(0, "sh", avahi, pidfile, "idle"), os.path.join(work, "avahi.out"))
    wait_for(lambda: "ready" in open(os.path.join(work, "avahi.out")).read(), 15)
    pids = [int(x) for x in open(pidfile).read().split()]
    zc_out = os.path.join(work, "zc.out")
    zb = start(lab.argv(1, "/usr/bin/python3", zc, "browse", str(rounds * 20 + 60)), zc_out)
    time.sleep(2)
    for i in range(rounds):
        name = f"avahi-bench-{i}"
        t0 = time.monotonic()
        pub = subprocess.Popen(["nsenter", "-t", str(pids[0]), "-m", "-n", "avahi-publish", "-s",
                                name, "_sd._udp", "7373", "name=bench"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        e = wait_for(lambda: next((e for e in lines(zc_out) if e["event"] == "Added" and
                                   e["name"].startswith(name + ".") and "mono_resolved" in e), None), 15)
        if e:
            ref.append((e["mono_resolved"] - t0) * 1000)
        pub.terminate()
        pub.wait()
        wait_for(lambda: any(e["event"] == "Removed" and e["name"].startswith(name + ".")
                             for e in lines(zc_out)), 5)
        time.sleep(0.3)
    zb.terminate()  # the browser only: the Avahi daemons stay
    zb.wait()

    # ---- reference, cold browse ----
    ref_cold, ref_cold_zc = [], []
    pub = start(["nsenter", "-t", str(pids[0]), "-m", "-n", "avahi-publish", "-s", "avahi-cold",
                 "_sd._udp", "7373", "name=bench"], os.path.join(work, "pub-cold.out"))
    time.sleep(3)
    for i in range(rounds):
        out = os.path.join(work, f"zc-cold{i}.out")
        t0 = time.monotonic()
        z = start(lab.argv(1, "/usr/bin/python3", zc, "browse", "3"), out)
        e = wait_for(lambda: next((e for e in lines(out) if e["event"] == "Added" and
                                   e["name"].startswith("avahi-cold.") and "mono_resolved" in e),
                                  None), 6)
        if e:
            ref_cold.append((e["mono_resolved"] - t0) * 1000)
            ref_cold_zc.append((e["mono_resolved"] - (e["mono"] - e["t"])) * 1000)
        z.terminate()
        z.wait()
        time.sleep(1.2)
finally:
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    lab.close()


def fmt(xs):
    if not xs:
        return "no result"
    return (f"median {statistics.median(xs):.0f} ms, min {min(xs):.0f}, max {max(xs):.0f} "
            f"({len(xs)}/{rounds} rounds)")


print(f"pos-p2p advertise -> pos-p2p discover:       {fmt(ours)}")
print(f"avahi-publish -> python-zeroconf (resolved): {fmt(ref)}")
if ours and ref:
    print(f"ratio ours/reference: {statistics.median(ours) / statistics.median(ref):.2f} "
          "(below 1 = faster)")
print("cold browse (advertiser running, browser started):")
print(f"pos-p2p discover (from process start):       {fmt(ours_cold)}")
print(f"python-zeroconf (from process start):        {fmt(ref_cold)}")
print(f"python-zeroconf (after Zeroconf() is ready): {fmt(ref_cold_zc)}")
if ours_cold and ref_cold_zc:
    print(f"ratio ours/reference (reference without Python start-up): "
          f"{statistics.median(ours_cold) / statistics.median(ref_cold_zc):.2f}")
PY
