"""Set-up shared by the integration tests that run the whole stack on loopback
(tests/p2p/test_p2p.py, tests/relay/test_relay_run.py and the tests that
import from them): the program paths, a pos-discovery, and a configured
pos-relay with its token commands. Each test file keeps its own P2P secret
and passes it in, so that the files stay independent of each other.
"""
import json
import os
import socket
import subprocess

from harness import Proc, binary, free_port, http, tmpdir, wait_until

RELAY = binary("relay/pos-relay")
# The relays' config key workers (threads on the UDP port): CI runs the suite with 2 and a
# smoke test with 1 (scripts/test.sh).
RELAY_WORKERS = int(os.environ.get("POS_TEST_RELAY_WORKERS", "2"))
P2P = binary("client-lib/cli/pos-p2p")
DISCOVERY = binary("discovery-api/pos-discovery")
TTL = 3


def free_udp_tcp_port():
    """A port free for UDP (the relay) whose successor is free for TCP (its HTTP)."""
    for _ in range(50):
        p = free_port(socket.SOCK_DGRAM)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port pair")


class Discovery:
    """A running pos-discovery on a free loopback port, entries living TTL seconds."""

    def __init__(self, redis, secret):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc([DISCOVERY, "--listen", f"127.0.0.1:{self.port}", "--redis", redis.url,
                          "--ttl", str(TTL)], env={"POS_P2P_SECRET": secret}, name="discovery")
        wait_until(lambda: http("GET", self.url + "/api/p2p/relays")[0] == 200, 10,
                   what="pos-discovery to answer")

    def relays(self):
        st, _, body = http("GET", self.url + "/api/p2p/relays")
        assert st == 200, st
        return json.loads(body)

    def ids(self):
        return {e["id"] for e in self.relays()}


class Relay:
    """A configured relay (pos-relay init + edits, discovery optional); start() runs it."""

    def __init__(self, redis, discovery, secret, extra=None):
        self.port = free_udp_tcp_port()
        self.dir = tmpdir()
        self.config = os.path.join(self.dir, "relay.json")
        args = ["init", "--config", self.config, "--redis", redis.url, "--port", str(self.port)]
        if discovery:
            args += ["--api-url", discovery.url]
        r = subprocess.run([RELAY, *args], input=secret + "\n", capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        self.peer_id = r.stdout.strip().splitlines()[-1]
        with open(self.config) as f:
            cfg = json.load(f)
        self.id = cfg["id"]
        cfg["listen"] = [f"127.0.0.1:{self.port}"]
        cfg["http_listen"] = f"127.0.0.1:{self.port + 1}"
        cfg["register_interval"] = 1
        cfg["workers"] = RELAY_WORKERS
        cfg.update(extra or {})
        with open(self.config, "w") as f:
            json.dump(cfg, f)
        os.chmod(self.config, 0o600)
        self.http = f"http://127.0.0.1:{self.port + 1}"
        self.proc = None

    def start(self, env=None):
        """Runs the relay with |env| added and waits for its HTTP endpoint. A relay that has
        never run and cannot bind its ports (another process took the free pair between the
        choice and the bind: TCP clients use the same ephemeral range) moves to a new pair."""
        for _ in range(3):
            self.proc = Proc([RELAY, "run", "--config", self.config], name=f"relay-{self.port}",
                             env=env)
            wait_until(lambda: not self.proc.alive() or
                       http("GET", self.http + "/healthz")[0] in (200, 503), 10,
                       what="the relay's HTTP endpoint")
            if self.proc.alive():
                self.started = True
                return self
            out = self.proc.output()
            if getattr(self, "started", False) or not ("cannot bind" in out or
                                                       "cannot listen" in out):
                raise AssertionError("the relay exited at start:\n" + out)
            self._move_ports()
        raise AssertionError("the relay could not bind a free port pair 3 times:\n" + out)

    def _move_ports(self):
        self.port = free_udp_tcp_port()
        with open(self.config) as f:
            cfg = json.load(f)
        cfg["port"] = self.port
        cfg["listen"] = [f"127.0.0.1:{self.port}"]
        cfg["http_listen"] = f"127.0.0.1:{self.port + 1}"
        with open(self.config, "w") as f:
            json.dump(cfg, f)
        self.http = f"http://127.0.0.1:{self.port + 1}"

    def token(self, *args):
        r = subprocess.run([RELAY, "token", "add", "--config", self.config, *args],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().splitlines()[-1]

    def revoke(self, token):
        r = subprocess.run([RELAY, "token", "revoke", "--config", self.config, token],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
