"""A Redis that may evict keys is refused, by pos-relay and pos-discovery.

With `maxmemory-policy allkeys-lru` (or any policy but `noeviction`) Redis
deletes keys under memory pressure: the relay list, tokens and presence
vanish and every client sees an empty list. What an operator must notice:
both services refuse such a Redis at start with a message naming the policy
and the one to run, and a Redis that comes back with such a policy is
refused on reconnect (nothing is written to it, the relay turns new clients
away as "temporarily unavailable", the discovery API keeps serving its last
list) until the policy is fixed, after which both recover without a restart.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import Proc, Redis, http, run, test, tmpdir, wait_until  # noqa: E402
import suite  # noqa: E402
from suite import DISCOVERY, P2P, RELAY  # noqa: E402

SECRET = "p2p-secret-eviction-tests-0123456789ab"


class PolicyRedis(Redis):
    """A real redis-server started with a given maxmemory-policy."""

    def __init__(self, policy):
        self.policy = policy
        super().__init__()

    def start(self):
        exe = "/usr/bin/redis-server"
        self.proc = Proc([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", self.dir, "--protected-mode", "yes",
                          "--maxmemory-policy", self.policy], name=f"redis-{self.port}")
        wait_until(self.ping, 10, what="redis-server to answer")


def pos_keys(redis):
    return [k for k in redis.cli("--scan").splitlines() if k.startswith("pos:")]


def exits_with(argv, env, timeout=20):
    r = subprocess.run(argv, env=dict(os.environ, **env), capture_output=True, text=True,
                       timeout=timeout)
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in r.stderr, r.stderr[-4000:]
    return r


@test
def evicting_policy_refused_at_start():
    for policy in ("allkeys-lru", "volatile-ttl"):
        redis = PolicyRedis(policy)
        port = suite.free_udp_tcp_port()
        r = exits_with([DISCOVERY, "--listen", f"127.0.0.1:{port}", "--redis", redis.url],
                       {"POS_P2P_SECRET": SECRET})
        assert r.returncode != 0, f"pos-discovery ran with {policy}: {r.stderr}"
        assert policy in r.stderr and "noeviction" in r.stderr, r.stderr
        relay = suite.Relay(redis, None, SECRET)
        r = exits_with([RELAY, "run", "--config", relay.config], {})
        assert r.returncode != 0, f"pos-relay ran with {policy}: {r.stderr}"
        assert policy in r.stderr and "noeviction" in r.stderr, r.stderr
        # the operator's tools say the same instead of writing tokens that could vanish
        r = exits_with([RELAY, "token", "add", "--config", relay.config], {})
        assert r.returncode != 0 and policy in r.stderr, r.stderr
        assert pos_keys(redis) == [], pos_keys(redis)
        redis.kill()


@test
def evicting_policy_refused_on_reconnect_until_fixed():
    redis = PolicyRedis("noeviction")
    disc = suite.Discovery(redis, SECRET)
    relay = suite.Relay(redis, disc, SECRET).start()
    wait_until(lambda: relay.id in disc.ids(), 5, what="the relay to register")
    listed = disc.relays()

    redis.kill()
    redis.policy = "allkeys-lru"
    redis.start()
    wait_until(lambda: "allkeys-lru" in relay.proc.output(), 10,
               what="the relay to log the refused policy")
    assert "noeviction" in relay.proc.output()
    wait_until(lambda: "allkeys-lru" in disc.proc.output(), 10,
               what="pos-discovery to log the refused policy")
    # nothing is written to a Redis that may evict it
    assert http("GET", relay.http + "/healthz")[0] == 503
    st, _, _ = http("POST", disc.url + "/api/p2p/relays",
                    json.dumps({"id": "0b3f1c9e-5c1a-4d2b-9a53-1f1f1f1f1f1f",
                                "peer_id": listed[0]["peer_id"],
                                "addrs": ["192.0.2.1:7373"]}).encode(),
                    {"Authorization": "Bearer " + SECRET, "Content-Type": "application/json"})
    assert st == 503, st
    # the last list is still served
    assert disc.relays() == listed
    assert pos_keys(redis) == [], pos_keys(redis)
    out = relay.proc.output()
    assert out.count("allkeys-lru") <= 2, out  # said once per outage, not per retry

    redis.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
    wait_until(lambda: http("GET", relay.http + "/healthz")[0] == 200, 10,
               what="the relay to use Redis again")
    wait_until(lambda: any(k.startswith("pos:relay") for k in pos_keys(redis)), 10,
               what="the relay to register again")
    token = relay.token()
    r = subprocess.run([P2P, "relays", "--api-url", disc.url, "--token", token, "--identity",
                        os.path.join(tmpdir(), "identity"), "--timeout", "3"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "accepted" in r.stdout, r.stdout + r.stderr


if __name__ == "__main__":
    run()
