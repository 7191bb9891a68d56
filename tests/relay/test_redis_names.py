"""Servers configured by host name: Redis URLs and the discovery API URL.

An operator writes `redis://redis:6379` and `http://discovery:8080` (compose
service names, DNS names), not addresses. What they must notice: `init`
accepts such URLs, pos-discovery and pos-relay start with them, the relay
registers through a named API, `pos-p2p relays` lists through it, and after
Redis restarts the relay resolves the name again and recovers. A name that
does not resolve is an outage the relay reports and survives, not a crash.
"""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import Proc, Redis, http, run, test, tmpdir, wait_until  # noqa: E402
import suite  # noqa: E402
from suite import DISCOVERY, P2P, RELAY  # noqa: E402

SECRET = "p2p-secret-host-name-tests-0123456789a"


class Named:
    """The same server, addressed by a host name instead of 127.0.0.1."""

    def __init__(self, redis, name):
        self.redis, self.name = redis, name

    @property
    def url(self):
        return f"redis://{self.name}:{self.redis.port}"


class NamedDiscovery:
    def __init__(self, redis_url, name):
        self.port = suite.free_port()
        self.proc = Proc([DISCOVERY, "--listen", f"127.0.0.1:{self.port}", "--redis", redis_url,
                          "--ttl", str(suite.TTL)], env={"POS_P2P_SECRET": SECRET},
                         name="discovery")
        self.url = f"http://{name}:{self.port}"
        self.ip_url = f"http://127.0.0.1:{self.port}"
        wait_until(lambda: http("GET", self.ip_url + "/api/p2p/relays")[0] == 200, 10,
                   what="pos-discovery to answer")


def listed(disc):
    import json
    st, _, body = http("GET", disc.ip_url + "/api/p2p/relays")
    return {e["id"] for e in json.loads(body)} if st == 200 else set()


@test
def redis_and_api_by_host_name():
    redis = Redis()
    named = Named(redis, "localhost")
    disc = NamedDiscovery(named.url, "localhost")
    relay = suite.Relay(named, disc, SECRET).start()
    wait_until(lambda: relay.id in listed(disc), 10, what="the relay to register by name")
    wait_until(lambda: http("GET", relay.http + "/healthz")[0] == 200, 10,
               what="the relay to report healthy")
    token = relay.token()
    r = subprocess.run([P2P, "relays", "--api-url", disc.url, "--token", token, "--identity",
                        os.path.join(tmpdir(), "identity"), "--timeout", "3"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "accepted" in r.stdout, r.stdout + r.stderr

    # Redis restarts: the relay resolves the name again and recovers without a restart.
    redis.kill()
    wait_until(lambda: http("GET", relay.http + "/healthz")[0] == 503, 10,
               what="the relay to notice Redis is gone")
    redis.start()
    wait_until(lambda: http("GET", relay.http + "/healthz")[0] == 200, 15,
               what="the relay to reconnect to Redis by name")
    wait_until(lambda: relay.id in listed(disc), 10, what="the relay to register again")
    assert relay.proc.p.poll() is None


NETNS = "pos-names-test"


def in_ns(*argv):
    return ["ip", "netns", "exec", NETNS, *argv]


def ns_http_status(url):
    r = subprocess.run(in_ns("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                             "2", url), capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


@test
def a_moved_server_is_found_again_by_name():
    """In a network namespace whose /etc/hosts (ip netns exec bind-mounts
    /etc/netns/NAME/hosts) names Redis `pos-redis`: the relay and the API
    reach it by that name; then Redis moves to another address and the name
    with it, and both follow without a restart."""
    if os.geteuid() != 0:
        print("skip: needs root for a network namespace")
        return
    etc = f"/etc/netns/{NETNS}"
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    procs = []
    try:
        os.makedirs(etc, exist_ok=True)
        hosts = os.path.join(etc, "hosts")

        def point(ip):  # rewritten in place: the bind mount sees the same inode
            with open(hosts, "w") as f:
                f.write(f"127.0.0.1 localhost\n{ip} pos-redis\n")

        point("127.0.0.1")
        subprocess.run(in_ns("ip", "link", "set", "lo", "up"), check=True)
        port = suite.free_port()
        d = tmpdir()

        def redis_at(ip):
            p = Proc(in_ns("/usr/bin/redis-server", "--port", str(port), "--bind", ip, "--save",
                           "", "--appendonly", "no", "--dir", d), name=f"redis-{ip}")
            wait_until(lambda: subprocess.run(in_ns("redis-cli", "-h", ip, "-p", str(port),
                                                    "ping"), capture_output=True,
                                              text=True).stdout.strip() == "PONG", 10,
                       what=f"redis on {ip}")
            return p

        redis = redis_at("127.0.0.1")
        dport = suite.free_port()
        url = f"redis://pos-redis:{port}"
        disc = Proc(in_ns(DISCOVERY, "--listen", f"127.0.0.1:{dport}", "--redis", url, "--ttl",
                          "3"), env={"POS_P2P_SECRET": SECRET}, name="discovery-ns")
        procs.append(disc)
        named = Named(type("R", (), {"port": port})(), "pos-redis")
        api = type("D", (), {"url": f"http://localhost:{dport}"})()
        relay = suite.Relay(named, api, SECRET)
        rp = Proc(in_ns(RELAY, "run", "--config", relay.config), name="relay-ns")
        procs.append(rp)
        healthz = relay.http + "/healthz"
        wait_until(lambda: ns_http_status(healthz) == "200", 15,
                   what="the relay to use Redis and the API by name")

        # Redis moves to 127.0.0.2 and the name follows it.
        redis.stop(signal.SIGKILL)
        point("127.0.0.2")
        wait_until(lambda: ns_http_status(healthz) == "503", 10,
                   what="the relay to notice Redis is gone")
        procs.append(redis_at("127.0.0.2"))
        wait_until(lambda: ns_http_status(healthz) == "200", 20,
                   what="the relay to find Redis at its new address by name")

        def relay_keys():  # healthz turns green on connect; the relay writes its keys after
            r = subprocess.run(in_ns("redis-cli", "-h", "127.0.0.2", "-p", str(port), "--scan"),
                               capture_output=True, text=True, timeout=10)
            return [k for k in r.stdout.split() if k.startswith("pos:")]
        wait_until(relay_keys, 10, what="the relay's keys in the moved Redis")
        assert rp.p.poll() is None and disc.p.poll() is None
    finally:
        for p in procs:
            p.stop(signal.SIGTERM)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
        subprocess.run(["rm", "-rf", etc])


@test
def unresolvable_name_is_an_outage_not_a_crash():
    redis = Redis()
    relay = suite.Relay(redis, None, SECRET)
    # Reserved for names that never resolve (RFC 6761).
    with open(relay.config) as f:
        text = f.read()
    with open(relay.config, "w") as f:
        f.write(text.replace(redis.url, f"redis://no-such-host.invalid:{redis.port}"))
    p = subprocess.Popen([RELAY, "run", "--config", relay.config], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        alive = p.poll() is None
        healthz = http("GET", relay.http + "/healthz")[0] if alive else None
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in err, err[-4000:]
    # Either it waits for Redis (health 503) or refuses to start with the reason.
    if alive:
        assert healthz == 503, healthz
    else:
        assert "no-such-host.invalid" in err, err


@test
def init_accepts_names_and_rejects_junk():
    d = tmpdir()
    for url, ok in (("redis://redis:6379", True), ("redis://cache.example.org/2", True),
                    ("redis://redis", True), ("redis://bad_name:6379", False),
                    ("redis://-x:6379", False), ("redis://999.1.1.1:6379", False),
                    ("redis://redis:0", False), ("redis://redis:65536", False)):
        cfg = os.path.join(d, f"c{abs(hash(url))}.json")
        r = subprocess.run([RELAY, "init", "--config", cfg, "--redis", url], input=SECRET + "\n",
                           capture_output=True, text=True, timeout=30)
        assert (r.returncode == 0) == ok, (url, r.stderr)
        if not ok:
            assert "Redis URL" in r.stderr and "HOST" in r.stderr, r.stderr


if __name__ == "__main__":
    run()
