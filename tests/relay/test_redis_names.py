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
