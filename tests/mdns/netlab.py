"""Hosts made of network namespaces on one bridge, for the mDNS tests.

Lab(n) creates a bridge namespace holding a bridge, and n host namespaces
each joined to it by a veth pair, with IPv4 10.77.0.(i+1)/24 and IPv6
fd77::(i+1)/64 plus the kernel's link-local address (DAD off so IPv6 works
at once). Everything is removed by close(), which the tests call in a
finally block; names carry the pid so parallel runs do not clash.
"""
import os
import subprocess
import time

from harness import Skip


def sh(*argv, check=True):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r


class Lab:
    def __init__(self, n, ipv4=True):
        self.ipv4 = ipv4
        self.tag = f"pm{os.getpid() % 100000}"
        self.br = f"{self.tag}br"
        self.hosts = []
        self.pids = []  # daemons forked inside namespaces, killed on close
        try:
            sh("ip", "netns", "add", self.br)
        except Exception as e:
            raise Skip(f"cannot create network namespaces (need root / CAP_SYS_ADMIN): {e}")
        try:
            self._ns(self.br, "ip", "link", "add", "br0", "type", "bridge")
            self._ns(self.br, "ip", "link", "set", "br0", "up")
            for i in range(n):
                self.add_host(i)
        except Exception:
            self.close()
            raise

    def _ns(self, ns, *argv):
        return sh("ip", "netns", "exec", ns, *argv)

    def add_host(self, i):
        ns = f"{self.tag}h{i}"
        sh("ip", "netns", "add", ns)
        self.hosts.append(ns)
        self._ns(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0")
        self._ns(ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0")
        sh("ip", "link", "add", f"{self.tag}v{i}", "type", "veth", "peer", "name", f"{self.tag}p{i}")
        sh("ip", "link", "set", f"{self.tag}v{i}", "netns", ns)
        sh("ip", "link", "set", f"{self.tag}p{i}", "netns", self.br)
        self._ns(self.br, "ip", "link", "set", f"{self.tag}p{i}", "master", "br0")
        self._ns(self.br, "ip", "link", "set", f"{self.tag}p{i}", "up")
        self._ns(ns, "ip", "link", "set", f"{self.tag}v{i}", "name", "eth0")
        self._ns(ns, "ip", "link", "set", "lo", "up")
        if self.ipv4:
            self._ns(ns, "ip", "addr", "add", f"10.77.0.{i + 1}/24", "dev", "eth0")
        self._ns(ns, "ip", "-6", "addr", "add", f"fd77::{i + 1}/64", "dev", "eth0", "nodad")
        self._ns(ns, "ip", "link", "set", "eth0", "up")
        return ns

    def argv(self, i, *argv):
        """argv prefixed to run inside host i."""
        return ["ip", "netns", "exec", self.hosts[i], *argv]

    def wait_link_local(self, i, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = sh(*self.argv(i, "ip", "-6", "addr", "show", "dev", "eth0")).stdout
            if "fe80" in out and "tentative" not in out:
                return
            time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        for pid in self.pids:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        for ns in self.hosts + [self.br]:
            sh("ip", "netns", "del", ns, check=False)
        self.hosts = []
