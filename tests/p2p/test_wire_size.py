"""No datagram on the wire over 1452 bytes, direct and relayed, with UDP GSO and without.

A file goes from `pos-p2p send` to `pos-p2p listen` once directly and once
through a real relay (redis-server, pos-discovery, pos-relay on loopback).
Each path runs through tests/p2p/wire_fwd.py, a UDP forwarder that reads one
datagram per recvfrom on a socket without UDP_GRO: a GSO send reaches it cut
into the datagrams a wire would carry, and an oversized datagram arrives
whole. Direct: the sender dials the forwarder, which forwards to the
listener. Relayed: the relay announces the forwarder's address
(public_addrs), so both clients' relay traffic (QUIC control and data
frames, 5 bytes more than the QUIC packet they carry) crosses it. Loopback's
MTU is 64 KiB, so nothing but our own limits keeps a datagram small.
The second test does the same with --no-gso on both sides (one datagram per
system call, no GRO): the fallback path still moves the files intact. The
third runs a direct transfer in a network namespace whose loopback has a
1400-byte MTU (made by the test as root, removed afterwards; skipped
without root): the kernel refuses GSO sends of 1444-byte segments there
(EINVAL), GSO must turn itself off and the file still arrive.
"""
import filecmp
import json
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import Proc, Redis, Skip, free_port, run, test, tmpdir, wait_until  # noqa: E402
from suite import P2P, Discovery, Relay  # noqa: E402

SECRET = "p2p-secret-wire-tests-abcdef0123456789"
LIMIT = 1452
FWD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wire_fwd.py")
SIZE = 3 * 1000 * 1000


class Forwarder:
    def __init__(self, to_port, port=None):
        self.port = port or free_port(socket.SOCK_DGRAM)
        self.stats_path = os.path.join(tmpdir(), "wire.json")
        self.proc = Proc([sys.executable, FWD, "--listen", f"127.0.0.1:{self.port}", "--to",
                          f"127.0.0.1:{to_port}", "--stats", self.stats_path], name="wire_fwd")
        wait_until(lambda: os.path.exists(self.stats_path), 10, what="the forwarder to start")

    def stats(self):
        self.proc.stop()
        with open(self.stats_path) as f:
            return json.load(f)


def identity():
    path = os.path.join(tmpdir(), "identity")
    r = subprocess.run([P2P, "id", "--identity", path], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return path, r.stdout.strip().splitlines()[-1]


def check_wire(st, what):
    assert st["bytes"] >= SIZE, f"{what}: the file did not cross the forwarder: {st}"
    assert st["over"] == 0 and st["max"] <= LIMIT, (
        f"{what}: {st['over']} datagrams over {LIMIT} bytes on the wire, the largest "
        f"{st['max']} (sizes by 100: {st['hist']})")
    # full-size packets did cross: the check saw what it is meant to see
    assert st["max"] >= 1200, f"{what}: no full-size datagram seen: {st}"


def transfer_both_ways(extra):
    redis = Redis()
    disc = Discovery(redis, SECRET)
    front_port = free_port(socket.SOCK_DGRAM)
    relay = Relay(redis, disc, SECRET, extra={"public_addrs": [f"127.0.0.1:{front_port}"]})
    relay_fwd = Forwarder(relay.port, port=front_port)  # where the relay says it is
    relay.start()
    wait_until(lambda: relay.id in disc.ids(), 5, what="the relay to register")
    token = relay.token()
    lid, peer = identity()
    sid, _ = identity()
    out = tmpdir()
    lport = free_port(socket.SOCK_DGRAM)
    lst = Proc([P2P, "listen", "--identity", lid, "--port", str(lport), "--out", out, "--mdns",
                "disabled", "--api-url", disc.url, "--token", token, "--no-punch", *extra],
               name="listen")
    wait_until(lambda: f"relay: {relay.id}" in lst.output() or not lst.alive(), 15,
               what="pos-p2p listen to reach its relay")
    assert lst.alive(), lst.output()
    direct_fwd = Forwarder(lport)

    src = tmpdir()
    files = {}
    for name in ("direct.bin", "relayed.bin"):
        files[name] = os.path.join(src, name)
        with open(files[name], "wb") as f:
            f.write(os.urandom(SIZE))

    def send(how, path):
        args = (["--addr", f"127.0.0.1:{direct_fwd.port}"] if how == "direct" else
                ["--api-url", disc.url, "--token", token, "--relay-only"])
        r = subprocess.run([P2P, "send", "--identity", sid, "--to", peer, "--no-mdns",
                            "--no-punch", "--json", *extra, *args, path],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{how} send failed: {r.stdout}{r.stderr}"
        doc = json.loads(r.stdout)
        assert doc["ok"] and doc["path"] == how, doc
        got = os.path.join(out, os.path.basename(path))
        assert filecmp.cmp(path, got, shallow=False), f"{how}: the received file differs"

    send("direct", files["direct.bin"])
    send("relayed", files["relayed.bin"])
    check_wire(direct_fwd.stats(), "direct")
    check_wire(relay_fwd.stats(), "relayed")
    assert lst.sanitizer_report() is None, lst.output()


@test
def datagrams_at_most_1452_direct_and_relayed():
    """With GSO (the default), every datagram of a direct and of a relayed transfer,
    measured on the wire, is at most 1452 bytes; the files arrive identical."""
    transfer_both_ways([])


@test
def without_gso_files_arrive_and_datagrams_stay_small():
    """--no-gso on both sides: the same transfers work, datagrams at most 1452 bytes."""
    transfer_both_ways(["--no-gso"])


@test
def gso_refused_by_the_kernel_falls_back():
    """In a namespace whose loopback MTU (1400) is below the packets' 1444 bytes, GSO sends
    fail with EINVAL; the endpoint turns GSO off and the direct transfer completes."""
    if os.geteuid() != 0:
        raise Skip("needs root for a network namespace")
    ns = f"posgso{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
    if r.returncode != 0:
        raise Skip(f"cannot make a network namespace: {r.stderr.strip()}")
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up", "mtu", "1400"],
                       check=True, capture_output=True, timeout=10)
        lid, peer = identity()
        sid, _ = identity()
        out = tmpdir()
        path = os.path.join(tmpdir(), "mtu.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(SIZE))
        lst = Proc(["ip", "netns", "exec", ns, P2P, "listen", "--identity", lid, "--port", "7411",
                    "--out", out, "--mdns", "disabled"], name="listen-mtu")
        wait_until(lambda: "listening" in lst.output() or not lst.alive(), 15,
                   what="pos-p2p listen to start")
        r = subprocess.run(["ip", "netns", "exec", ns, P2P, "send", "--identity", sid, "--to",
                            peer, "--addr", "127.0.0.1:7411", "--no-mdns", "--json", path],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"send failed: {r.stdout}{r.stderr}"
        assert filecmp.cmp(path, os.path.join(out, "mtu.bin"), shallow=False)
        assert json.loads(r.stdout)["path"] == "direct", r.stdout
        lst.stop()
        assert lst.sanitizer_report() is None, lst.output()
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


if __name__ == "__main__":
    run()
