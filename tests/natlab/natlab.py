"""The project's NAT lab: network namespaces with real Linux NAT routers.

    with Lab("eim", "symmetric") as lab:          # builds it; torn down on exit
        pub = Public(lab, secret)                   # Redis, pos-discovery, two relays
        lab.proc("b", [P2P, "listen", ...])         # a program on client B's LAN

Topology (every address lives inside namespaces made here; nothing is added
to the host's own namespace):

    srv   10.200.0.10 (relay 1, pos-discovery :8080), 10.200.0.11 (relay 2),
          redis-server on its own 127.0.0.1
      |  p-srv 10.200.0.1
    core  the "internet": routes 10.200.0.0/24, 10.200.1.0/24, 10.200.2.0/24;
          delay (NFQUEUE, nfq_delay.py) and loss (iptables statistic) on the
          access links p-a / p-b, both ways
      |  p-a 10.200.1.1                     |  p-b 10.200.2.1
    side A: public 10.200.1.11              side B: public 10.200.2.12

A side is one of (KINDS):
    none       the client itself holds the public address (no NAT, no firewall)
    eim        home router "ra": MASQUERADE (endpoint-independent mapping; it
               keeps the source port while free), LAN 10.201.1.0/24, client .2
    symmetric  the same with MASQUERADE --random-fully (a new port per
               destination: endpoint-dependent mapping)
    cgnat      double NAT: home router "ra" (eim, WAN 100.64.1.2) behind a
               carrier router "ca" (eim) holding the public address
    same       (both sides) one eim router "ra" with both clients on one LAN
               bridge, A 10.201.1.2, B 10.201.1.3; no hairpinning

Each router drops unsolicited input on its WAN (only ESTABLISHED,RELATED
passes), as home routers do, in the filter table: an unsolicited packet
never gets a conntrack entry (a confirmed entry for it would steal the port
the LAN client is about to use). rp_filter is 0 everywhere.

Counters (Lab.counters): on each side's edge (the router holding the public
address; the client itself for "none"; each client for "same", whose direct
path never crosses the router), UDP bytes and packets to/from the relays'
network and to/from the peer (its public address, or its LAN address for
"same"), plus what the WAN firewall dropped.

Pitfalls this lab is built around (measured on this kernel): no sch_netem
(delay is done by NFQUEUE), conntrack entries outlive a test's intent
(flush_conntrack), no hairpinning, MASQUERADE keeps the port only while free.

Namespaces are named PREFIX-NODE, PREFIX being "posnat" and this process's id,
so that two labs (a test run and a benchmark) can run side by side; at start
the namespaces of runs whose process is gone are removed. Lab raises harness.Skip only when namespaces
cannot be created (not root); any other set-up failure is an error.
"""
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import suite
from harness import Proc, Redis, Skip, tmpdir, wait_until

BASE = "posnat"
PREFIX = f"{BASE}{os.getpid()}"
PY = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ("none", "eim", "symmetric", "cgnat", "same")
RELAY_NET = "10.200.0.0/24"
RELAY_IPS = ("10.200.0.10", "10.200.0.11")
DISCOVERY_URL = "http://10.200.0.10:8080"
RELAY_PORT = 7373


def sh(argv, check=True, timeout=30, input=None):
    """Runs |argv|; returns the CompletedProcess (text). With |check|, a failure raises with stderr."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def ns_name(node, prefix=PREFIX):
    return f"{prefix}-{node}"


def remove_leftovers(prefix=PREFIX):
    """Ends the processes in, and deletes, every namespace named PREFIX-*."""
    out = sh(["ip", "netns", "list"], check=False).stdout
    names = [line.split()[0] for line in out.splitlines()
             if line.split() and line.split()[0].startswith(prefix + "-")]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = False
        for n in names:
            for pid in sh(["ip", "netns", "pids", n], check=False).stdout.split():
                try:
                    os.kill(int(pid), sig)
                    alive = True
                except (ProcessLookupError, ValueError):
                    pass
        if alive and sig == signal.SIGTERM:
            time.sleep(0.3)
    for n in names:
        sh(["ip", "netns", "del", n], check=False)


def remove_stale():
    """Removes the namespaces left by labs whose process has ended (killed runs)."""
    out = sh(["ip", "netns", "list"], check=False).stdout
    stale = set()
    for line in out.splitlines():
        m = re.match(BASE + r"(\d*)-", line)
        if m and (not m.group(1) or not os.path.exists(f"/proc/{m.group(1)}")):
            stale.add(BASE + m.group(1))
    for prefix in stale:
        remove_leftovers(prefix)


def can_make_namespaces(prefix=PREFIX):
    """None when namespaces can be made here, otherwise the reason."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces, iptables)"
    probe = ns_name("probe", prefix)
    r = sh(["ip", "netns", "add", probe], check=False)
    if r.returncode != 0:
        return f"cannot create network namespaces here: {r.stderr.strip()}"
    sh(["ip", "netns", "del", probe], check=False)
    return None


class Lab:
    """A lab of kinds |a| and |b| (KINDS; "same" must be on both sides).

    delay_ms: one-way delay on each client's access link, both ways (RTT to
    the relays 2 x delay, A to B 4 x delay); loss_pct: random loss on each
    access link, each way; wan_firewall: routers drop unsolicited WAN input.
    """

    def __init__(self, a="eim", b="eim", delay_ms=0, loss_pct=0.0, wan_firewall=True,
                 prefix=PREFIX):
        if a not in KINDS or b not in KINDS:
            raise ValueError(f"kinds are {', '.join(KINDS)}")
        if (a == "same") != (b == "same"):
            raise ValueError("'same' puts both clients behind one NAT: give it for both sides")
        self.kinds = {"a": a, "b": b}
        self.same = a == "same"
        self.delay_ms, self.loss_pct, self.wan_firewall = delay_ms, loss_pct, wan_firewall
        self.prefix = prefix
        self.nodes = []
        self.client_ip = {}  # side -> the client's own address
        self.public_ip = {}  # side -> its public address (the NAT's)
        self.edge = {}       # side -> (node, wan interface) where the counters are
        self.routers = {}    # side -> [router nodes, inner first]
        self.procs = []
        self.state = None

    # ---- life cycle

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.down()
        return False

    def up(self):
        why = can_make_namespaces(self.prefix)
        if why:
            raise Skip(why)
        remove_stale()
        remove_leftovers(self.prefix)
        self.state = tmpdir()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def down(self):
        """Stops what the lab started and deletes its namespaces (idempotent)."""
        for p in reversed(self.procs):
            p.stop(timeout=5)
        self.procs = []
        remove_leftovers(self.prefix)
        self.nodes = []

    # ---- running things inside

    def ns(self, node):
        return ns_name(node, self.prefix)

    def argv(self, node, argv):
        return ["ip", "netns", "exec", self.ns(node), *argv]

    def run(self, node, argv, check=True, timeout=30, input=None):
        """Runs |argv| in |node| to completion (see sh)."""
        return sh(self.argv(node, argv), check=check, timeout=timeout, input=input)

    def proc(self, node, argv, name=None, env=None):
        """Starts |argv| in |node| as a harness Proc (`ip netns exec` execs it: same pid)."""
        p = Proc(self.argv(node, argv), env=env, name=name or os.path.basename(argv[0]))
        self.procs.append(p)
        return p

    def http_get(self, node, url, timeout=5):
        """GET |url| from inside |node|: (status, body bytes)."""
        code = ("import sys, urllib.request, urllib.error\n"
                "try:\n"
                f"    r = urllib.request.urlopen({url!r}, timeout={timeout})\n"
                "    st, body = r.status, r.read()\n"
                "except urllib.error.HTTPError as e:\n"
                "    st, body = e.code, e.read()\n"
                "sys.stdout.write(str(st) + '\\n' + body.decode('latin-1'))\n")
        r = self.run(node, [PY, "-c", code], timeout=timeout + 5)
        st, _, body = r.stdout.partition("\n")
        return int(st), body.encode("latin-1")

    def ipt(self, node, *args, table="filter"):
        self.run(node, ["iptables", "-w", "-t", table, *args])

    # ---- building

    def _node(self, node):
        self.nodes.append(node)
        sh(["ip", "netns", "add", self.ns(node)])
        sh(["ip", "-n", self.ns(node), "link", "set", "lo", "up"])
        self.run(node, ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
                        "net.ipv4.conf.default.rp_filter=0"])

    def _link(self, n1, if1, n2, if2):
        sh(["ip", "link", "add", if1, "netns", self.ns(n1), "type", "veth", "peer", "name", if2,
            "netns", self.ns(n2)])
        sh(["ip", "-n", self.ns(n1), "link", "set", if1, "up"])
        sh(["ip", "-n", self.ns(n2), "link", "set", if2, "up"])

    def _addr(self, node, ifname, cidr):
        sh(["ip", "-n", self.ns(node), "addr", "add", cidr, "dev", ifname])

    def _route(self, node, via):
        sh(["ip", "-n", self.ns(node), "route", "add", "default", "via", via])

    def _router(self, node, mode):
        """NAT on wan0 (eim or symmetric) and, unless disabled, the home-router firewall."""
        self.run(node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        masq = ["-j", "MASQUERADE"] + (["--random-fully"] if mode == "symmetric" else [])
        self.ipt(node, "-A", "POSTROUTING", "-o", "wan0", *masq, table="nat")
        if self.wan_firewall:
            for chain in ("INPUT", "FORWARD"):
                self.ipt(node, "-A", chain, "-i", "wan0", "-m", "conntrack", "--ctstate",
                         "ESTABLISHED,RELATED", "-j", "ACCEPT")
                self.ipt(node, "-A", chain, "-i", "wan0", "-m", "comment", "--comment",
                         "wan-drop", "-j", "DROP")

    def _side(self, side, i, kind):
        """Client |side| ("a"/"b") on core port p-SIDE, network 10.200.I.0/24."""
        pub = f"10.200.{i}.{10 + i}"
        core_ip = f"10.200.{i}.1"
        client = side
        self.public_ip[side] = pub
        if kind == "none":
            self._node(client)
            self._link("core", f"p-{side}", client, "eth0")
            self._addr("core", f"p-{side}", core_ip + "/24")
            self._addr(client, "eth0", pub + "/24")
            self._route(client, core_ip)
            self.client_ip[side] = pub
            self.edge[side] = (client, "eth0")
            self.routers[side] = []
            return
        home = f"r{side}"
        self._node(home)
        self._node(client)
        self._link(client, "eth0", home, "lan0")
        self._addr(home, "lan0", f"10.201.{i}.1/24")
        self._addr(client, "eth0", f"10.201.{i}.2/24")
        self._route(client, f"10.201.{i}.1")
        self.client_ip[side] = f"10.201.{i}.2"
        outer = home
        self.routers[side] = [home]
        if kind == "cgnat":
            outer = f"c{side}"
            self._node(outer)
            self._link(home, "wan0", outer, "lan0")
            self._addr(outer, "lan0", f"100.64.{i}.1/24")
            self._addr(home, "wan0", f"100.64.{i}.2/24")
            self._route(home, f"100.64.{i}.1")
            self._router(home, "eim")
            self.routers[side].append(outer)
        self._link("core", f"p-{side}", outer, "wan0")
        self._addr("core", f"p-{side}", core_ip + "/24")
        self._addr(outer, "wan0", pub + "/24")
        self._route(outer, core_ip)
        self._router(outer, "symmetric" if kind == "symmetric" else "eim")
        self.edge[side] = (outer, "wan0")

    def _same_nat(self):
        """Both clients on one bridge behind one eim router; the direct path stays on the LAN."""
        self._node("ra")
        self._node("a")
        self._node("b")
        sh(["ip", "-n", self.ns("ra"), "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", self.ns("ra"), "link", "set", "br0", "up"])
        self._addr("ra", "br0", "10.201.1.1/24")
        for side, host in (("a", 2), ("b", 3)):
            self._link(side, "eth0", "ra", f"l{side}")
            sh(["ip", "-n", self.ns("ra"), "link", "set", f"l{side}", "master", "br0"])
            self._addr(side, "eth0", f"10.201.1.{host}/24")
            self._route(side, "10.201.1.1")
            self.client_ip[side] = f"10.201.1.{host}"
            self.public_ip[side] = "10.200.1.11"
            self.edge[side] = (side, "eth0")
            self.routers[side] = ["ra"]
        self._link("core", "p-a", "ra", "wan0")
        self._addr("core", "p-a", "10.200.1.1/24")
        self._addr("ra", "wan0", "10.200.1.11/24")
        self._route("ra", "10.200.1.1")
        self._router("ra", "eim")

    def _counting(self):
        """Per side, on its edge: UDP to/from the relays' network and the peer, by chain."""
        for side, (node, wan) in self.edge.items():
            peer = "b" if side == "a" else "a"
            peer_ip = self.client_ip[peer] if self.same else self.public_ip[peer]
            for chain, hook, way, ifopt in (("POSNAT_OUT", "POSTROUTING", "-d", "-o"),
                                            ("POSNAT_IN", "PREROUTING", "-s", "-i")):
                self.ipt(node, "-N", chain, table="mangle")
                self.ipt(node, "-A", chain, way, RELAY_NET, "-m", "comment", "--comment", "relay",
                         "-j", "RETURN", table="mangle")
                self.ipt(node, "-A", chain, way, peer_ip, "-m", "comment", "--comment", "peer",
                         "-j", "RETURN", table="mangle")
                self.ipt(node, "-A", hook, ifopt, wan, "-p", "udp", "-j", chain, table="mangle")

    def _impair(self, port, queue):
        """Loss and delay both ways on core port |port| (outside every NAT, like an access link)."""
        if self.loss_pct:
            p = f"{self.loss_pct / 100:.6f}"
            self.ipt("core", "-A", "PREROUTING", "-i", port, "-m", "statistic", "--mode",
                     "random", "--probability", p, "-j", "DROP", table="raw")
            self.ipt("core", "-A", "POSTROUTING", "-o", port, "-m", "statistic", "--mode",
                     "random", "--probability", p, "-j", "DROP", table="mangle")
        if self.delay_ms:
            # two tables: a queue's verdict ends the table it was queued from
            self.ipt("core", "-A", "PREROUTING", "-i", port, "-j", "NFQUEUE", "--queue-num",
                     str(queue), table="raw")
            self.ipt("core", "-A", "POSTROUTING", "-o", port, "-j", "NFQUEUE", "--queue-num",
                     str(queue), table="mangle")
            return [f"{queue}={self.delay_ms}"]
        return []

    def _build(self):
        for tool in ("ip", "iptables", "sysctl"):
            if not shutil.which(tool):
                raise RuntimeError(f"the NAT lab needs {tool}")
        self._node("core")
        self.run("core", ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        self._node("srv")
        self._link("core", "p-srv", "srv", "eth0")
        self._addr("core", "p-srv", "10.200.0.1/24")
        for ip in RELAY_IPS:
            self._addr("srv", "eth0", ip + "/24")
        self._route("srv", "10.200.0.1")
        if self.same:
            self._same_nat()
        else:
            self._side("a", 1, self.kinds["a"])
            self._side("b", 2, self.kinds["b"])
        self._counting()
        specs = self._impair("p-a", 10)
        if not self.same:
            specs += self._impair("p-b", 20)
        if specs:
            ready = os.path.join(self.state, "nfq.ready")
            p = self.proc("core", [PY, os.path.join(HERE, "nfq_delay.py"), "--ready", ready,
                                   *specs], name="nfq_delay")
            wait_until(lambda: os.path.exists(ready) or not p.alive(), 10,
                       what="nfq_delay.py to bind its queues")
            if not p.alive():
                raise RuntimeError("nfq_delay.py failed: " + p.output())

    # ---- observing and disturbing

    def counters(self, side):
        """{relay_out, relay_in, peer_out, peer_in (UDP bytes at the edge), wan_dropped (packets)}."""
        node, _ = self.edge[side]
        out = {}
        for chain, way in (("POSNAT_OUT", "out"), ("POSNAT_IN", "in")):
            text = self.run(node, ["iptables", "-w", "-t", "mangle", "-L", chain, "-v", "-x",
                                   "-n"]).stdout
            for line in text.splitlines():
                m = re.match(r"\s*(\d+)\s+(\d+)\s.*/\* (relay|peer) \*/", line)
                if m:
                    out[f"{m.group(3)}_{way}"] = int(m.group(2))
        out["wan_dropped"] = sum(self.wan_drops(r) for r in self.routers[side])
        return out

    def wan_drops(self, router):
        """Packets the WAN firewall of |router| dropped (INPUT and FORWARD)."""
        n = 0
        for chain in ("INPUT", "FORWARD"):
            text = self.run(router, ["iptables", "-w", "-L", chain, "-v", "-x", "-n"]).stdout
            for line in text.splitlines():
                m = re.match(r"\s*(\d+)\s+\d+\s+DROP\s.*/\* wan-drop \*/", line)
                if m:
                    n += int(m.group(1))
        return n

    def blackhole(self, on=True):
        """Drops (on) or lets through again (off) the direct path between the two sides;
        the relays stay reachable. Between the public addresses in the core, or between
        the LAN addresses on the clients for "same"."""
        op = "-I" if on else "-D"
        if self.same:
            for side, peer in (("a", "b"), ("b", "a")):
                self.ipt(side, op, "OUTPUT", "-d", self.client_ip[peer], "-j", "DROP")
                self.ipt(side, op, "INPUT", "-s", self.client_ip[peer], "-j", "DROP")
            return
        for src, dst in (("a", "b"), ("b", "a")):
            self.ipt("core", op, "FORWARD", "-s", self.public_ip[src], "-d", self.public_ip[dst],
                     "-j", "DROP")

    def flush_conntrack(self, nodes=None):
        """Forgets every connection-tracking entry (NAT mappings included) in the routers."""
        for node in nodes or [r for s in ("a", "b") for r in self.routers[s]]:
            self.run(node, [PY, "-c", CONNTRACK_FLUSH])


# IPCTNL_MSG_CT_DELETE without attributes over ctnetlink flushes the namespace's
# table (what `conntrack -F` does; that tool is not needed). ENOENT: it was empty.
CONNTRACK_FLUSH = """
import os, socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.bind((0, 0))
body = struct.pack("!BBH", socket.AF_INET, 0, 0)
s.send(struct.pack("=IHHII", 16 + len(body), (1 << 8) | 2, 0x1 | 0x4, 1, 0) + body)
reply = s.recv(4096)
code = struct.unpack_from("=i", reply, 16)[0] if struct.unpack_from("=H", reply, 4)[0] == 2 else 0
if code and -code != 2:
    raise SystemExit("conntrack flush: " + os.strerror(-code))
"""


class NsRedis(Redis):
    """redis-server on 127.0.0.1 inside the lab's "srv" namespace."""

    def __init__(self, lab):
        self.lab = lab
        super().__init__(port=6379)

    def start(self):
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = self.lab.proc("srv", [exe, "--port", str(self.port), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no", "--dir", self.dir],
                                  name="redis")
        wait_until(self.ping, 10, what="redis-server to answer")

    def cli(self, *args):
        exe = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        return self.lab.run("srv", [exe, "-p", str(self.port), "--raw", *args],
                            check=False).stdout.strip()


class NsRelay(suite.Relay):
    """A pos-relay in "srv" listening on |ip|:7373, HTTP on 127.0.0.1:|http_port| there."""

    def __init__(self, lab, redis, secret, ip, http_port, extra=None):
        self.lab = lab
        super().__init__(redis, None, secret,
                         {"listen": [f"{ip}:{RELAY_PORT}"],
                          "http_listen": f"127.0.0.1:{http_port}",
                          "api_url": DISCOVERY_URL, "register_interval": 1, **(extra or {})})
        self.ip = ip
        self.port = RELAY_PORT
        self.http = f"http://127.0.0.1:{http_port}"

    def start(self, env=None):
        self.proc = self.lab.proc("srv", [suite.RELAY, "run", "--config", self.config],
                                  name=f"relay-{self.ip}", env=env)
        wait_until(lambda: self.lab.http_get("srv", self.http + "/healthz")[0] == 200, 15,
                   what=f"relay {self.ip} to be healthy")
        return self

    def token(self, *args):
        r = self.lab.run("srv", [suite.RELAY, "token", "add", "--config", self.config, *args])
        return r.stdout.strip().splitlines()[-1]

    def circuits(self):
        st, body = self.lab.http_get("srv", self.http + "/circuits")
        assert st == 200, st
        return json.loads(body)["circuits"]


class Public:
    """The public core's services in "srv": Redis, pos-discovery and two relays."""

    def __init__(self, lab, secret, n_relays=2, relay_config=None):
        """|relay_config|: more keys for every relay's configuration file."""
        self.lab = lab
        self.redis = NsRedis(lab)
        self.discovery = lab.proc("srv", [suite.DISCOVERY, "--listen", "10.200.0.10:8080",
                                          "--redis", self.redis.url, "--ttl", str(suite.TTL)],
                                  env={"POS_P2P_SECRET": secret}, name="discovery")
        self.url = DISCOVERY_URL
        wait_until(lambda: self.lab.http_get("srv", self.url + "/api/p2p/relays")[0] == 200, 10,
                   what="pos-discovery to answer")
        self.relays = [NsRelay(lab, self.redis, secret, RELAY_IPS[k], 7380 + k,
                               relay_config).start()
                       for k in range(n_relays)]
        want = {r.id for r in self.relays}
        wait_until(lambda: want <= self.listed(), 10, what="the relays to register")
        # both clients reach the discovery API across their NATs
        for side in ("a", "b"):
            st, _ = self.lab.http_get(side, self.url + "/api/p2p/relays")
            assert st == 200, f"client {side} cannot reach pos-discovery: {st}"

    def listed(self):
        st, body = self.lab.http_get("srv", self.url + "/api/p2p/relays")
        return {e["id"] for e in json.loads(body)} if st == 200 else set()

    def circuit(self, circuit_id):
        """(relay, /circuits entry) of the circuit with side id |circuit_id|, or (None, None)."""
        for r in self.relays:
            for c in r.circuits():
                if circuit_id in c["ids"]:
                    return r, c
        return None, None
