"""Integration tests of local discovery: pos-p2p advertise / discover on hosts
made of network namespaces joined by a bridge (see netlab.py), against each
other, python3-zeroconf and Avahi. Needs root; skipped (not passed) otherwise.
"""
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Proc, Skip, binary, run, test, tmpdir, wait_until  # noqa: E402
from netlab import Lab  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
ZC = os.path.join(HERE, "zc_helper.py")
AVAHI = os.path.join(HERE, "avahi_ns.sh")
LIB = "0b4d0e5a-7a5b-4c0e-9a63-0e6a1f1b2c3d"


def pos():
    return binary("client-lib/cli/pos-p2p")


def identity(d, name):
    path = os.path.join(d, name, "identity")
    r = subprocess.run([pos(), "contact", "--identity", path, "card"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    card = r.stdout.strip()
    return path, card.split(":")[2], card


def events(proc):
    out = []
    for line in proc.output().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def found(proc, peer_id=None, pred=None):
    for e in events(proc):
        if e.get("event") != "found":
            continue
        if peer_id is not None and e.get("peer_id") != peer_id:
            continue
        if pred and not pred(e):
            continue
        return e
    return None


def lab(n, **kw):
    if os.geteuid() != 0:
        raise Skip("needs root to create network namespaces")
    return Lab(n, **kw)


class Capture:
    """tcpdump inside a host: packets the host sends (-Q out) on UDP 5353."""

    def __init__(self, lb, i, direction="out"):
        if not shutil.which("tcpdump"):
            raise Skip("tcpdump is not installed")
        self.path = os.path.join(tmpdir(), "cap.pcap")
        # --immediate-mode: without it the last packets before a stop can stay in
        # the kernel ring and never reach the file.
        self.p = subprocess.Popen(lb.argv(i, "tcpdump", "-i", "eth0", "-Q", direction, "-U", "-n",
                                          "--immediate-mode", "-w", self.path, "udp port 5353"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: os.path.exists(self.path), 5, what="tcpdump to start")
        time.sleep(0.3)

    def stop(self):
        if self.p.poll() is None:
            time.sleep(0.3)
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.packets()

    def frames(self):
        """(IP TTL or hop limit, UDP payload) of each captured packet (Ethernet, IPv4/IPv6)."""
        import struct
        with open(self.path, "rb") as f:
            d = f.read()
        off, out = 24, []
        while off + 16 <= len(d):
            incl = struct.unpack("<I", d[off + 8:off + 12])[0]
            frame = d[off + 16:off + 16 + incl]
            off += 16 + incl
            et = struct.unpack(">H", frame[12:14])[0]
            if et == 0x0800:
                ihl = (frame[14] & 15) * 4
                out.append((frame[14 + 8], frame[14 + ihl + 8:]))
            elif et == 0x86DD:
                out.append((frame[14 + 7], frame[14 + 40 + 8:]))
        return out

    def packets(self):
        return [p for _, p in self.frames()]


def advertise(lb, i, ident, *extra):
    return Proc(lb.argv(i, pos(), "advertise", "--identity", ident, "--json", *extra),
                name=f"advertise-h{i}")


def discover(lb, i, ident, seconds=20):
    return Proc(lb.argv(i, pos(), "discover", "--identity", ident, "--json", "--timeout",
                        str(seconds)), name=f"discover-h{i}")


@test
def two_nodes_find_each_other_ipv4_and_ipv6():
    with lab(2) as lb:
        d = tmpdir()
        ia, pa, _ = identity(d, "a")
        ib, pb, _ = identity(d, "b")
        a = advertise(lb, 0, ia, "--name", "Alice", "--os", "Linux", "--model", "Box",
                      "--library", LIB)
        b = advertise(lb, 1, ib, "--name", "Bob", "--port", "7400")
        ea = wait_until(lambda: found(b, pa), 8, what="b to find a")
        eb = wait_until(lambda: found(a, pb), 8, what="a to find b")
        assert ea["name"] == "Alice" and ea["os"] == "Linux" and ea["model"] == "Box", ea
        assert ea["txt"].get(LIB) == pa and ea["port"] == 7373, ea
        assert eb["name"] == "Bob" and eb["port"] == 7400, eb
        assert "10.77.0.1" in ea["addrs"] and "fd77::1" in ea["addrs"], ea
        assert "10.77.0.2" in eb["addrs"] and "fd77::2" in eb["addrs"], eb
        assert any(x.startswith("fe80::") for x in ea["addrs"]), ea


@test
def two_nodes_find_each_other_ipv6_only():
    with lab(2, ipv4=False) as lb:
        d = tmpdir()
        ia, pa, _ = identity(d, "a")
        ib, pb, _ = identity(d, "b")
        advertise(lb, 0, ia, "--name", "Six")
        b = discover(lb, 1, ib, 8)
        e = wait_until(lambda: found(b, pa), 8, what="discovery over IPv6 only")
        assert e["name"] == "Six" and "fd77::1" in e["addrs"], e
        assert not any("." in x for x in e["addrs"]), e


@test
def goodbye_seen_within_one_second():
    with lab(2) as lb:
        d = tmpdir()
        ia, pa, _ = identity(d, "a")
        ib, _, _ = identity(d, "b")
        a = advertise(lb, 0, ia, "--name", "Leaving")
        b = discover(lb, 1, ib, 20)
        wait_until(lambda: found(b, pa), 8, what="b to find a")
        t0 = time.monotonic()
        a.signal(signal.SIGTERM)
        wait_until(lambda: any(e["event"] == "lost" and e.get("peer_id") == pa for e in events(b)),
                   1.0, interval=0.01, what="the goodbye to be seen within 1 s")
        dt = time.monotonic() - t0
        assert a.wait(5) == 0
        print(f"    goodbye seen after {dt * 1000:.0f} ms")


@test
def conflict_renames_second_node():
    with lab(3) as lb:
        d = tmpdir()
        ia, pa, _ = identity(d, "a")
        ib = os.path.join(d, "b", "identity")
        os.makedirs(os.path.dirname(ib))
        shutil.copy(ia, ib)
        os.chmod(ib, 0o600)
        ic, _, _ = identity(d, "c")
        a = advertise(lb, 0, ia, "--name", "First")
        wait_until(lambda: "advertising instance" in a.output(), 5, what="a to advertise")
        b = advertise(lb, 1, ib, "--name", "Second")
        wait_until(lambda: f'advertising instance "{pa} (2)"' in b.output(), 6,
                   what="b to rename after the conflict")
        assert f'advertising instance "{pa}"' in a.output()
        c = discover(lb, 2, ic, 8)
        wait_until(lambda: found(c, pa, lambda e: e["instance"] == pa) and
                   found(c, pa, lambda e: e["instance"] == pa + " (2)"), 8,
                   what="both instances to be seen")
        names = {e["instance"]: e["name"] for e in events(c) if e["event"] == "found"}
        assert names[pa] == "First" and names[pa + " (2)"] == "Second", names


@test
def disabled_sends_nothing():
    with lab(2) as lb:
        d = tmpdir()
        ia, _, _ = identity(d, "a")
        ib, _, _ = identity(d, "b")
        # The other host keeps asking, so a node that answered would be caught.
        advertise(lb, 1, ib, "--name", "Asker")
        cap = Capture(lb, 0)
        a = advertise(lb, 0, ia, "--mode", "disabled", "--name", "Hidden")
        time.sleep(4)
        a.stop()
        pkts = cap.stop()
        assert pkts == [], f"disabled node sent {len(pkts)} packets"
        # Control: the same capture sees an enabled node at once.
        cap = Capture(lb, 0)
        a = advertise(lb, 0, ia, "--name", "Shown")
        time.sleep(2)
        a.stop()
        assert len(cap.stop()) > 0, "capture saw nothing from an enabled node"


@test
def contacts_only_hides_and_contact_recognises():
    with lab(3) as lb:
        d = tmpdir()
        ia, pa, card_a = identity(d, "a")
        ib, _, _ = identity(d, "b")
        ic, _, _ = identity(d, "c")
        r = subprocess.run([pos(), "contact", "--identity", ib, "add", card_a],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"added contact {pa}", r.stdout
        r = subprocess.run([pos(), "contact", "--identity", ib, "list"], capture_output=True,
                           text=True, timeout=10)
        assert r.stdout.split() == [pa], r.stdout
        r = subprocess.run([pos(), "contact", "--identity", ib, "add", "pos-contact:1:junk"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode != 0 and "contact card" in r.stderr, r.stderr
        cap = Capture(lb, 0)
        advertise(lb, 0, ia, "--mode", "contacts-only", "--name", "SecretName", "--os",
                  "SecretOS", "--model", "SecretModel", "--library", LIB)
        b = discover(lb, 1, ib, 10)
        c = discover(lb, 2, ic, 10)
        eb = wait_until(lambda: found(b), 8, what="the contact to see it")
        ec = wait_until(lambda: found(c), 8, what="the stranger to see it")
        assert eb["peer_id"] == pa and eb["contact"] is True, eb
        assert ec["peer_id"] is None and ec["contact"] is False, ec
        for e in (eb, ec):
            assert e["instance"] != pa and e["name"] is None and e["os"] is None, e
            assert sorted(e["txt"]) == ["n", "t"], e
        time.sleep(1)
        raw = b"".join(cap.stop())
        assert raw, "capture is empty"
        for secret in (b"SecretName", b"SecretOS", b"SecretModel", LIB.encode(), pa.encode()):
            assert secret not in raw, f"{secret!r} was sent on the wire"


@test
def interop_python_zeroconf_both_ways():
    if subprocess.run([PY, "-c", "import zeroconf"], capture_output=True).returncode != 0:
        raise Skip("python3-zeroconf is not installed for /usr/bin/python3")
    with lab(2) as lb:
        d = tmpdir()
        ia, pa, _ = identity(d, "a")
        advertise(lb, 0, ia, "--name", "Ours", "--os", "Linux", "--library", LIB)
        zb = Proc(lb.argv(1, PY, ZC, "browse", "10"), name="zc-browse")

        def zc_found():
            for line in zb.output().splitlines():
                if line.startswith("{"):
                    e = json.loads(line)
                    if e["name"] == f"{pa}._sd._udp.local." and "txt" in e:
                        return e
            return None
        e = wait_until(zc_found, 10, what="python-zeroconf to resolve our node")
        assert e["txt"]["name"] == "Ours" and e["txt"][LIB] == pa and e["port"] == 7373, e
        # The OS under both keys: the seeds' operating_system and Spacedrive 0.4's os.
        assert e["txt"].get("os") == "Linux" and e["txt"].get("operating_system") == "Linux", e
        assert "10.77.0.1" in e["addrs"], e
        zb.stop()
        # The other way round: zeroconf publishes, we discover.
        Proc(lb.argv(1, PY, ZC, "register", "zc-peer", "4242", "10.77.0.2,fd77::2", "name=Zed"),
             name="zc-register")
        # A legal but unusual TXT (RFC 6763 §6), given to zeroconf as raw rdata.
        Proc(lb.argv(1, PY, ZC, "register-raw", "zc.odd v1.2", "4243", "10.77.0.2,fd77::2",
                     txt_rdata(ODD_TXT).hex()), name="zc-register-raw")
        ib, _, _ = identity(d, "b")
        ours = discover(lb, 0, ib, 10)
        z = wait_until(lambda: found(ours, None, lambda e: e["instance"] == "zc-peer"), 10,
                       what="our discover to find the zeroconf service")
        assert z["name"] == "Zed" and z["port"] == 4242 and "10.77.0.2" in z["addrs"], z
        assert z["peer_id"] is None, z
        o = wait_until(lambda: found(ours, None, lambda e: e["instance"] == "zc.odd v1.2"), 5,
                       what="our discover to report the zeroconf service with an odd TXT")
        check_odd_txt(o)


# RFC 6763 §6 corner cases in a TXT of 7.5 kB (a packet may carry 9000 bytes, RFC 6762
# §17): a repeated key in another case (the first wins), a string without a key, a
# boolean attribute, an empty value, NUL and bytes that are not UTF-8 inside values,
# the OS under Spacedrive's "os".
ODD_TXT = [b"Name=First", b"name=Second", b"=junk", b"flag", b"empty=", b"nul=a\x00b",
           b"bin=\xff\xfe\x80", b"os=ZedOS"] + [b"big%d=" % i + bytes([65 + i]) * 240
                                                   for i in range(30)]


def txt_rdata(strings):
    return b"".join(bytes([len(x)]) + x for x in strings)


def check_odd_txt(e):
    """What discover --json must make of ODD_TXT (docs/mdns.md, JSON output)."""
    t = e["txt"]
    assert e["name"] == "First" and t["name"] == "First", e
    assert "" not in t and "junk" not in json.dumps(t), e
    assert t["flag"] is True and t["empty"] == "" and t["nul"] == "a\x00b", e
    assert t["bin"] == "\ufffd" * 3 and base64.b64decode(e["txt_b64"]["bin"]) == b"\xff\xfe\x80", e
    assert list(e["txt_b64"]) == ["bin"], e
    assert e["os"] == "ZedOS" and t["os"] == "ZedOS", e
    for i in range(30):
        assert t[f"big{i}"] == chr(65 + i) * 240, (i, e)


def avahi_available():
    return all(shutil.which(x) for x in ("avahi-daemon", "dbus-daemon", "avahi-publish",
                                         "avahi-browse", "unshare"))


@test
def interop_avahi_both_ways():
    if not avahi_available():
        raise Skip("avahi-daemon / dbus-daemon / avahi-utils are not installed")
    lb = lab(2)
    try:
        d = tmpdir()
        ia, pa, _ = identity(d, "a")
        advertise(lb, 0, ia, "--name", "Ours", "--os", "Linux")
        pidfile = os.path.join(d, "avahi-pids")
        ab = Proc(lb.argv(1, "sh", AVAHI, pidfile, "browse"), name="avahi-browse")
        lb.pidfile = pidfile

        def avahi_found():
            for line in ab.output().splitlines():
                f = line.split(";")
                if len(f) > 9 and f[0] == "=" and avahi_unescape(f[3]) == pa and \
                        f[7] in ("10.77.0.1", "fd77::1"):
                    return f
            return None
        try:
            f = wait_until(avahi_found, 15, what="avahi-browse to resolve our node")
        except AssertionError:
            print(ab.output()[-3000:])
            raise
        assert f[8] == "7373" and '"name=Ours"' in f[9], f
        assert '"os=Linux"' in f[9] and '"operating_system=Linux"' in f[9], f
        ab.stop()
        kill_pids(pidfile)
        # An instance name with dots and non-ASCII (one DNS label, RFC 6763 §4.3) and a
        # TXT over 1300 bytes with a boolean, a keyless string and a name that is not UTF-8.
        inst = "avahi.peer \u00e9t\u00e9 v1.2"
        big = [f"big{i}=" + chr(65 + i) * 240 for i in range(6)]
        ap = Proc(lb.argv(1, "sh", AVAHI, pidfile, "publish", inst, "4343", b"name=Av\xff", "flag",
                          "=junk", *big), name="avahi-publish")
        ib, _, _ = identity(d, "b")
        ours = discover(lb, 0, ib, 15)
        z = wait_until(lambda: found(ours, None, lambda e: e["instance"] == inst), 15,
                       what="our discover to find the Avahi service")
        assert z["port"] == 4343 and "10.77.0.2" in z["addrs"], z
        t = z["txt"]
        # The name is shown with U+FFFD for the bad byte; the exact bytes are in txt_b64.
        assert z["name"] == "Av\ufffd" and t["name"] == z["name"], z
        assert base64.b64decode(z["txt_b64"]["name"]) == b"Av\xff", z
        assert t["flag"] is True and "" not in t, z
        assert all(t[f"big{i}"] == chr(65 + i) * 240 for i in range(6)), z
        ap.stop()
    finally:
        kill_pids(os.path.join(d, "avahi-pids"))
        lb.close()


def avahi_unescape(s):
    """avahi-browse -p writes '.', '\\' and non-alphanumerics as \\DDD (decimal)."""
    return re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1))), s)


def kill_pids(pidfile):
    try:
        with open(pidfile) as f:
            pids = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    os.unlink(pidfile)


@test
def addresses_followed_live():
    """A new address (netlink) is announced: the browser reports it. In contacts-only
    mode an address change also rotates the instance name."""
    with lab(3) as lb:
        d = tmpdir()
        ia, pa, card_a = identity(d, "a")
        ib, _, _ = identity(d, "b")
        ic, pc, card_c = identity(d, "c")
        subprocess.run([pos(), "contact", "--identity", ib, "add", card_c], check=True,
                       capture_output=True, timeout=10)
        advertise(lb, 0, ia, "--name", "Mover")
        advertise(lb, 2, ic, "--mode", "contacts-only")
        b = discover(lb, 1, ib, 20)
        wait_until(lambda: found(b, pa) and found(b, pc), 8, what="b to find a and c")
        first_c = found(b, pc)["instance"]
        subprocess.run(lb.argv(0, "ip", "addr", "add", "10.77.0.101/24", "dev", "eth0"), check=True)
        subprocess.run(lb.argv(2, "ip", "addr", "add", "10.77.0.103/24", "dev", "eth0"), check=True)
        wait_until(lambda: any(e["event"] == "updated" and e["peer_id"] == pa and
                               "10.77.0.101" in e["addrs"] for e in events(b)), 5,
                   what="the new address to be reported")
        e = wait_until(lambda: found(b, pc, lambda e: e["instance"] != first_c), 5,
                       what="the contacts-only node to rotate its instance")
        assert "10.77.0.103" in e["addrs"], e
        assert any(x["event"] == "lost" and x["instance"] == first_c for x in events(b))
        subprocess.run(lb.argv(0, "ip", "addr", "del", "10.77.0.101/24", "dev", "eth0"), check=True)
        wait_until(lambda: [x for x in events(b) if x["peer_id"] == pa and x["event"] == "updated"]
                   [-1]["addrs"].count("10.77.0.101") == 0, 5,
                   what="the removed address to be withdrawn")


@test
def shares_port_5353_on_one_host():
    """Two of our processes and Avahi on one host: each binds 5353 (SO_REUSEPORT)."""
    lb = lab(2)
    pidfile = None
    try:
        d = tmpdir()
        ia, pa, _ = identity(d, "a")
        ib, _, _ = identity(d, "b")
        ic, _, _ = identity(d, "c")
        if avahi_available():
            pidfile = os.path.join(d, "avahi-pids")
            Proc(lb.argv(0, "sh", AVAHI, pidfile, "publish", "avahi-here", "4444", "name=Av"),
                 name="avahi-publish")
        advertise(lb, 0, ia, "--name", "Here")
        same = discover(lb, 0, ib, 10)
        other = discover(lb, 1, ic, 10)
        wait_until(lambda: found(same, pa), 8, what="a browser on the same host to see it")
        wait_until(lambda: found(other, pa), 8, what="a browser on another host to see it")
        if pidfile:
            wait_until(lambda: found(other, None, lambda e: e["instance"] == "avahi-here"), 10,
                       what="Avahi on the same host to work alongside")
    finally:
        if pidfile:
            kill_pids(pidfile)
        lb.close()


@test
def skips_point_to_point_interfaces():
    """A tun device (POINTOPOINT, MULTICAST, UP, like a VPN) gets no mDNS group and its
    address is never advertised; eth0 gets both groups."""
    with lab(2) as lb:
        d = tmpdir()
        ia, pa, _ = identity(d, "a")
        ib, _, _ = identity(d, "b")
        for argv in (["ip", "tuntap", "add", "dev", "tun0", "mode", "tun"],
                     ["ip", "addr", "add", "10.99.0.1/24", "dev", "tun0"],
                     ["ip", "link", "set", "tun0", "up"]):
            subprocess.run(lb.argv(0, *argv), check=True, capture_output=True)
        advertise(lb, 0, ia)
        b = discover(lb, 1, ib, 8)
        e = wait_until(lambda: found(b, pa), 8, what="b to find a")
        assert "10.99.0.1" not in e["addrs"], e

        def groups(dev):
            return subprocess.run(lb.argv(0, "ip", "maddr", "show", "dev", dev),
                                  capture_output=True, text=True).stdout
        assert "224.0.0.251" in groups("eth0") and "ff02::fb" in groups("eth0")
        assert "224.0.0.251" not in groups("tun0") and "ff02::fb" not in groups("tun0")


@test
def cli_errors_and_help():
    d = tmpdir()
    ident = os.path.join(d, "x", "identity")
    for cmd in (["advertise"], ["discover"], ["contact"]):
        r = subprocess.run([pos(), *cmd, "--help"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and "usage: pos-p2p " + cmd[0] in r.stdout, r
    bad = [
        (["advertise", "--identity", ident, "--name", "x" * 300], "TXT"),
        (["advertise", "--identity", ident, "--mode", "loud"], "--mode"),
        (["advertise", "--identity", ident, "--port", "70000"], "--port"),
        (["advertise", "--identity", ident, "--library", "not-a-uuid"], "--library"),
        (["discover", "--identity", ident, "--timeout", "soon"], "--timeout"),
        (["contact", "--identity", ident, "add", "pos-contact:1:" + "A" * 43 + ":" + "B" * 43],
         "contact card"),
        (["contact", "--identity", ident, "frobnicate"], "usage"),
    ]
    for argv, word in bad:
        r = subprocess.run([pos(), *argv], capture_output=True, text=True, timeout=10)
        assert r.returncode != 0 and word in r.stderr, (argv, r.returncode, r.stderr)
    r = subprocess.run([pos(), "contact", "--identity", ident, "card"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("pos-contact:1:"), r
    for f in ("identity", "presence.key"):
        assert os.stat(os.path.join(d, "x", f)).st_mode & 0o077 == 0, f


@test
def traffic_budget_first_minute():
    """An idle node that advertises and browses, alone on the link, for its first minute.
    Budget: 3 probes + 2 announcements + 6 queries (20-120 ms, then 1, 2, 4, 8, 16 s
    back-off) per address family = 22 packets; we allow 26, about one every 2.3 s,
    where a flooding implementation sends one or more per second."""
    seconds = float(os.environ.get("POS_MDNS_BUDGET_SECONDS", "60"))
    with lab(1) as lb:
        d = tmpdir()
        ia, _, _ = identity(d, "a")
        cap = Capture(lb, 0)
        a = advertise(lb, 0, ia, "--name", "Idle")
        time.sleep(seconds)
        a.stop()
        pkts = cap.stop()
        # Goodbyes at stop (one per family) are not idle traffic.
        n = len(pkts) - 2
        kinds = {"probe": 0, "query": 0, "response": 0}
        for p in pkts:
            if len(p) >= 12:
                kind = "response" if p[2] & 0x80 else ("probe" if p[8:10] != b"\0\0" else "query")
                kinds[kind] += 1
        print(f"    idle node sent {n} packets in {seconds:.0f} s ({sum(map(len, pkts))} bytes), "
              f"with the goodbyes: {kinds}")
        ttls = {ttl for ttl, _ in cap.frames()}
        assert ttls == {255}, f"IP TTL / hop limit {ttls}, RFC 6762 §11 wants 255"
        assert 10 <= n <= 26, f"{n} packets in the first {seconds} s"

def lost(proc, peer_id):
    return any(e["event"] == "lost" and e.get("peer_id") == peer_id for e in events(proc))


def direct_link(lb, i, j_ns, n):
    """A veth pair from host i (eth1, 10.78.0.1, fd78::1) to a new host (eth0, 10.78.0.2,
    fd78::2) that is on no bridge; returns the new host's index."""
    from netlab import sh
    ns = f"{lb.tag}{j_ns}"
    sh("ip", "netns", "add", ns)
    lb.hosts.append(ns)
    for k in ("all", "default"):
        sh(*lb.argv(len(lb.hosts) - 1, "sysctl", "-q", "-w", f"net.ipv6.conf.{k}.accept_dad=0"))
    sh("ip", "link", "add", f"{lb.tag}x{n}", "type", "veth", "peer", "name", f"{lb.tag}y{n}")
    sh("ip", "link", "set", f"{lb.tag}x{n}", "netns", lb.hosts[i])
    sh("ip", "link", "set", f"{lb.tag}y{n}", "netns", ns)
    j = len(lb.hosts) - 1
    for host, dev, new, a in ((i, f"{lb.tag}x{n}", "eth1", 1), (j, f"{lb.tag}y{n}", "eth0", 2)):
        sh(*lb.argv(host, "ip", "link", "set", dev, "name", new))
        sh(*lb.argv(host, "ip", "link", "set", "lo", "up"))
        sh(*lb.argv(host, "ip", "addr", "add", f"10.78.0.{a}/24", "dev", new))
        sh(*lb.argv(host, "ip", "-6", "addr", "add", f"fd78::{a}/64", "dev", new, "nodad"))
        sh(*lb.argv(host, "ip", "link", "set", new, "up"))
    return j


@test
def interface_disappears():
    """Host 0 is on the bridge (eth0) and on a direct link to host 2 (eth1). Deleting that
    link while everything runs: host 0 reports host 2's node lost at once (and host 2 host
    0's), well before any TTL; a host on the bridge keeps seeing host 0, never with the
    deleted link's address. The link back: they find each other again at once."""
    with lab(2) as lb:
        j = direct_link(lb, 0, "d2", 0)
        d = tmpdir()
        ia, pa, _ = identity(d, "a")
        ib, pb, _ = identity(d, "b")
        ic, _, _ = identity(d, "c")
        a = advertise(lb, 0, ia, "--name", "TwoLinks")
        b = advertise(lb, j, ib, "--name", "Behind")
        c = discover(lb, 1, ic, 30)
        wait_until(lambda: found(a, pb), 8, what="a to find b over the direct link")
        wait_until(lambda: found(b, pa), 8, what="b to find a over the direct link")
        ec = wait_until(lambda: found(c, pa), 8, what="c to find a over the bridge")
        assert not any(x.startswith("10.78.") or x.startswith("fd78:") for x in ec["addrs"]), ec
        t0 = time.monotonic()
        sh_ns = lb.argv(0, "ip", "link", "del", "eth1")
        subprocess.run(sh_ns, check=True, timeout=10)
        wait_until(lambda: lost(a, pb), 3, interval=0.02, what="a to report b lost")
        dt = time.monotonic() - t0
        wait_until(lambda: lost(b, pa), 3, interval=0.02, what="b to report a lost")
        time.sleep(1)
        assert not lost(c, pa), "the bridge side lost a"
        assert not any(e["event"] == "lost" and e.get("peer_id") == pb for e in events(c))
        print(f"    lost reported {dt * 1000:.0f} ms after the link was deleted")
        # A browser started now on the bridge sees a, with its bridge addresses only.
        c2 = discover(lb, 1, ic, 5)
        e2 = wait_until(lambda: found(c2, pa), 5, what="a fresh browser to find a")
        assert "10.77.0.1" in e2["addrs"], e2
        assert not any(x.startswith("10.78.") or x.startswith("fd78:") for x in e2["addrs"]), e2
        # The link comes back: found again without waiting for the query back-off.
        n_a = len([e for e in events(a) if e["event"] == "found" and e.get("peer_id") == pb])
        t1 = time.monotonic()
        from netlab import sh
        sh("ip", "link", "add", f"{lb.tag}x1", "type", "veth", "peer", "name", f"{lb.tag}y1")
        sh("ip", "link", "set", f"{lb.tag}x1", "netns", lb.hosts[0])
        sh("ip", "link", "set", f"{lb.tag}y1", "netns", lb.hosts[j])
        for host, dev, new, x in ((0, f"{lb.tag}x1", "eth1", 1), (j, f"{lb.tag}y1", "eth0", 2)):
            sh(*lb.argv(host, "ip", "link", "set", dev, "name", new))
            sh(*lb.argv(host, "ip", "addr", "add", f"10.78.0.{x}/24", "dev", new))
            sh(*lb.argv(host, "ip", "link", "set", new, "up"))
        wait_until(lambda: len([e for e in events(a) if e["event"] == "found" and
                                e.get("peer_id") == pb]) > n_a, 5, interval=0.02,
                   what="a to find b again when the link is back")
        print(f"    found again {(time.monotonic() - t1) * 1000:.0f} ms after the link came back")


@test
def metadata_file_reloaded_on_sighup():
    """advertise --metadata-file: SIGHUP re-reads it; the browser sees "updated" with the
    new name and library (no lost/found); a bad file changes nothing and says why."""
    with lab(2) as lb:
        d = tmpdir()
        ia, pa, _ = identity(d, "a")
        ib, _, _ = identity(d, "b")
        meta = os.path.join(d, "meta.json")
        with open(meta, "w") as f:
            json.dump({"name": "Before", "model": "Box"}, f)
        a = advertise(lb, 0, ia, "--name", "FromOption", "--metadata-file", meta)
        b = discover(lb, 1, ib, 30)
        e = wait_until(lambda: found(b, pa), 8, what="b to find a")
        assert e["name"] == "Before" and e["model"] == "Box", e
        with open(meta, "w") as f:
            json.dump({"name": "After", "libraries": [LIB]}, f)
        t0 = time.monotonic()
        a.signal(signal.SIGHUP)

        def updated():
            for ev in events(b):
                if ev["event"] == "updated" and ev.get("peer_id") == pa and ev["name"] == "After":
                    return ev
            return None
        u = wait_until(updated, 3, interval=0.02, what="b to see the new name")
        print(f"    update seen {(time.monotonic() - t0) * 1000:.0f} ms after SIGHUP")
        assert u["txt"].get(LIB) == pa and u["model"] is None, u
        assert not lost(b, pa), "the change showed as lost"
        assert "metadata reloaded" in a.output()
        # A bad file: reported, the advertisement unchanged, the process still running.
        n = len(events(b))
        with open(meta, "w") as f:
            f.write('{"name": ')
        a.signal(signal.SIGHUP)
        wait_until(lambda: "metadata unchanged" in a.output(), 3, what="the error to be reported")
        with open(meta, "w") as f:
            json.dump({"name": "x" * 300}, f)
        a.signal(signal.SIGHUP)
        wait_until(lambda: a.output().count("metadata unchanged") >= 2, 3,
                   what="the TXT error to be reported")
        time.sleep(1.5)
        assert a.alive() and len(events(b)) == n, events(b)[n:]
        # A bad file at start is an error exit with the reason.
        r = subprocess.run(lb.argv(0, pos(), "advertise", "--identity", ia, "--metadata-file",
                                   os.path.join(d, "missing.json")),
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and "missing.json" in r.stderr, (r.returncode, r.stderr)
        with open(meta, "w") as f:
            json.dump({"name": "ok", "colour": "red"}, f)
        r = subprocess.run(lb.argv(0, pos(), "advertise", "--identity", ia, "--metadata-file",
                                   meta), capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and 'unknown key "colour"' in r.stderr, r.stderr

def qu_queries(pkts):
    """(queries, queries with a QU question) among captured packets."""
    n = qu = 0
    for p in pkts:
        if len(p) < 12 or p[2] & 0x80:
            continue
        qd = int.from_bytes(p[4:6], "big")
        off, any_qu = 12, False
        for _ in range(qd):
            while off < len(p) and p[off] and p[off] < 0xC0:
                off += 1 + p[off]
            off += 2 if off < len(p) and p[off] >= 0xC0 else 1
            if off + 4 > len(p):
                break
            any_qu = any_qu or bool(p[off + 2] & 0x80)
            off += 4
        n += 1
        qu += any_qu
    return n, qu


@test
def qu_only_when_port_5353_is_ours_alone():
    """RFC 6762 §5.4 / §15.1: a browser alone on its host asks its first query with the QU bit
    and gets the answer at once; one started while another process holds port 5353 never
    sets QU (a unicast reply could reach the other process) and still finds the peer."""
    with lab(2) as lb:
        d = tmpdir()
        ia, pa, _ = identity(d, "a")
        ib, _, _ = identity(d, "b")
        ic, _, _ = identity(d, "c")
        advertise(lb, 0, ia, "--name", "Peer")
        time.sleep(2)
        cap = Capture(lb, 1)
        b = discover(lb, 1, ib, 2)
        wait_until(lambda: found(b, pa), 3, what="a lone browser to find the peer")
        assert b.wait(5) == 0
        n, qu = qu_queries(cap.stop())
        assert n >= 2 and qu >= 1, (n, qu)
        # Now host 1 has another process on 5353: a second browser must not ask for QU.
        advertise(lb, 1, ic, "--name", "Holder")
        time.sleep(2.5)
        cap = Capture(lb, 1)
        c = discover(lb, 1, ib, 2)
        wait_until(lambda: found(c, pa), 3, what="a browser sharing 5353 to find the peer")
        assert c.wait(5) == 0
        n, qu = qu_queries(cap.stop())
        assert n >= 2 and qu == 0, (n, qu)


def listen(lb, i, ident, out, *extra):
    return Proc(lb.argv(i, pos(), "listen", "--identity", ident, "--out", out, *extra),
                name=f"listen-h{i}")


def send(lb, i, ident, to, path, *extra, timeout=20):
    return subprocess.run(lb.argv(i, pos(), "send", "--identity", ident, "--to", to, "--json",
                                  *extra, path), capture_output=True, text=True, timeout=timeout)


@test
def send_finds_listener_on_the_lan_by_peer_id():
    """No --addr, no --api-url: send finds the listener through mDNS and the file arrives
    intact over a direct session; with a contacts-only listener only a contact finds it."""
    with lab(3) as lb:
        d = tmpdir()
        ia, pa, card_a = identity(d, "a")
        ib, _, _ = identity(d, "b")
        ic, _, _ = identity(d, "c")
        src = os.path.join(d, "file.bin")
        data = os.urandom(300_000)
        with open(src, "wb") as f:
            f.write(data)
        out = os.path.join(d, "in")
        os.mkdir(out)
        la = listen(lb, 0, ia, out)
        wait_until(lambda: "mdns: advertised" in la.output(), 8, what="the listener to advertise")
        r = send(lb, 1, ib, pa, src)
        assert r.returncode == 0, (r.stdout, r.stderr, la.output())
        rep = json.loads(r.stdout)
        assert rep["path"] == "direct", rep
        assert f"found {pa} on the local network at 10.77.0.1:" in r.stderr, r.stderr
        with open(os.path.join(out, "file.bin"), "rb") as f:
            assert f.read() == data
        la.stop()
        # contacts-only: the sender that holds a's card finds it, a stranger does not
        r = subprocess.run([pos(), "contact", "--identity", ib, "add", card_a],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        out2 = os.path.join(d, "in2")
        os.mkdir(out2)
        la = listen(lb, 0, ia, out2, "--mdns", "contacts-only")
        wait_until(lambda: "mdns: advertised on the local network (contacts only)" in la.output(),
                   8, what="the listener to advertise")
        r = send(lb, 1, ib, pa, src)
        assert r.returncode == 0 and "(a contact)" in r.stderr, (r.stdout, r.stderr)
        assert os.path.exists(os.path.join(out2, "file.bin"))
        r = send(lb, 2, ic, pa, src, "--timeout", "2")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "was not found on the local network (mDNS) within 2 s" in r.stderr, r.stderr
        assert la.stop() == 0 and not la.sanitizer_report()


@test
def send_does_not_find_listener_with_mdns_disabled():
    with lab(2) as lb:
        d = tmpdir()
        ia, pa, _ = identity(d, "a")
        ib, _, _ = identity(d, "b")
        src = os.path.join(d, "file.bin")
        with open(src, "wb") as f:
            f.write(b"x" * 1000)
        out = os.path.join(d, "in")
        os.mkdir(out)
        la = listen(lb, 0, ia, out, "--mdns", "disabled")
        wait_until(lambda: "listening" in la.output(), 8, what="the listener")
        assert "mdns: advertised" not in la.output()
        r = send(lb, 1, ib, pa, src, "--timeout", "2")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert f"{pa} was not found on the local network (mDNS) within 2 s" in r.stderr, r.stderr
        assert os.listdir(out) == [] or all(n.startswith(".") for n in os.listdir(out))
        # the listener is there all the same: --addr reaches it
        port = re.search(r"direct: UDP port (\d+)", la.output()).group(1)
        r = send(lb, 1, ib, pa, src, "--addr", f"10.77.0.1:{port}")
        assert r.returncode == 0, (r.stdout, r.stderr)
        r = subprocess.run([pos(), "listen", "--out", out, "--mdns", "sometimes"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and "--mdns must be enabled, contacts-only or disabled" in \
            r.stderr, r.stderr
        assert la.stop() == 0 and not la.sanitizer_report()


if __name__ == "__main__":
    run("mdns")
