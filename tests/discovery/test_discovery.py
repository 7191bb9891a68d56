"""Integration tests of pos-discovery: the real program, a real redis-server and real HTTP
(and HTTPS) on loopback. Each test starts its own Redis and service; the harness stops them."""
import base64
import http.client as httpclient
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.request
import uuid

from harness import Proc, Redis, free_port, http, run, stop_all, test, tmpdir, wait_until, binary

SECRET = "disc-test-secret-" + os.urandom(8).hex()
RELAYS = "/api/p2p/relays"


def peer_id():
    return base64.b64encode(os.urandom(32)).decode().rstrip("=")


def entry(addrs=None):
    return {"id": str(uuid.uuid4()), "peer_id": peer_id(), "addrs": addrs or ["192.0.2.1:7373"]}


class Discovery:
    """pos-discovery on a free loopback port, with the secret in the environment."""

    def __init__(self, redis, *extra, secret=SECRET, env=None, scheme="http", ctx=None,
                 port=None):
        self.port = port or free_port()
        self.scheme = scheme
        self.ctx = ctx
        full_env = {"POS_LOG": "debug"}
        if secret is not None:
            full_env["POS_P2P_SECRET"] = secret
        full_env.update(env or {})
        argv = [binary("discovery-api/pos-discovery"), "--listen", f"127.0.0.1:{self.port}"]
        if redis is not None:
            argv += ["--redis", redis.url]
        self.proc = Proc(argv + list(extra), env=full_env, name="pos-discovery")
        wait_until(lambda: f"listening on {scheme}://127.0.0.1:{self.port}" in self.proc.output(),
                   15, what="pos-discovery to listen")

    def url(self, path):
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def request(self, method, path, body=None, headers=None):
        if self.ctx is None:
            return http(method, self.url(path), body, headers)
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        req = urllib.request.Request(self.url(path), data=data, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.ctx) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def get(self, path=RELAYS):
        return self.request("GET", path)

    def relays(self):
        status, headers, body = self.get()
        assert status == 200, (status, body)
        return json.loads(body)

    def post(self, body, secret=SECRET, headers=None):
        h = {"Content-Type": "application/json"}
        if secret is not None:
            h["Authorization"] = f"Bearer {secret}"
        h.update(headers or {})
        return self.request("POST", RELAYS, body, h)

    def delete(self, rid, secret=SECRET):
        h = {"Authorization": f"Bearer {secret}"} if secret is not None else {}
        return self.request("DELETE", f"{RELAYS}/{rid}", None, h)

    def metrics(self):
        status, _, body = self.get("/metrics")
        assert status == 200
        return body.decode()


def metric(text, name):
    """The value of the sample line |name| in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no sample {name} in:\n{text}")


def ids(relays):
    return {r["id"] for r in relays}


def assert_error(status, headers, body, want_status, needle=""):
    assert status == want_status, (status, body)
    assert headers.get("content-type") == "application/json", headers
    doc = json.loads(body)
    assert list(doc) == ["error"] and isinstance(doc["error"], str), doc
    assert needle in doc["error"], (needle, doc)
    return doc["error"]


def run_to_exit(argv, env, timeout=15):
    full = {k: v for k, v in os.environ.items() if k != "POS_P2P_SECRET"}
    full.update(env)
    return subprocess.run(argv, env=full, capture_output=True, text=True, timeout=timeout)


@test
def no_secret_refuses_to_start():
    redis = Redis()
    exe = binary("discovery-api/pos-discovery")
    port = str(free_port())
    r = run_to_exit([exe, "--listen", f"127.0.0.1:{port}", "--redis", redis.url], {})
    assert r.returncode != 0
    assert "no p2p secret" in r.stderr and "POS_P2P_SECRET" in r.stderr, r.stderr
    r = run_to_exit([exe, "--listen", f"127.0.0.1:{port}", "--secret-file", "/nonexistent/s"], {})
    assert r.returncode != 0 and "/nonexistent/s" in r.stderr, r.stderr
    r = run_to_exit([exe, "--help"], {})
    assert r.returncode == 0 and "--secret-file" in r.stdout and "--tls-cert" in r.stdout
    for bad, needle in ((["--ttl", "0"], "option --ttl"), (["--listen", "localhost:80"], "--listen"),
                        (["--redis", "http://x"], "bad Redis URL"), (["--frobnicate"], "unknown"),
                        (["--tls-cert", "/etc/hostname"], "--tls-key")):
        r = run_to_exit([exe] + bad, {"POS_P2P_SECRET": SECRET})
        assert r.returncode == 2 and needle in r.stderr, (bad, r.returncode, r.stderr)


@test
def config_file_and_overrides():
    redis = Redis()
    d = tmpdir()
    secret_file = os.path.join(d, "secret")
    with open(secret_file, "w") as f:
        f.write(SECRET + "\n")
    port = free_port()
    conf = os.path.join(d, "discovery.json")
    with open(conf, "w") as f:
        json.dump({"listen": "127.0.0.1:1", "redis": redis.url, "secret_file": secret_file,
                   "ttl": 7, "prefix": "cfg:"}, f)
    # The command line overrides the file's listen; the secret comes from the file.
    disc = Discovery(None, "--config", conf, port=port, secret=None)
    e = entry()
    assert disc.post(e)[0] == 200
    assert redis.cli("EXISTS", f"cfg:relay:{e['id']}") == "1"
    assert 0 < int(redis.cli("PTTL", f"cfg:relay:{e['id']}")) <= 7000
    assert redis.cli("ZSCORE", "cfg:relays", e["id"]) != ""
    with open(conf, "w") as f:
        json.dump({"listen": "127.0.0.1:1", "tll": 7}, f)
    r = run_to_exit([binary("discovery-api/pos-discovery"), "--config", conf],
                    {"POS_P2P_SECRET": SECRET})
    assert r.returncode == 2 and conf in r.stderr and "tll" in r.stderr, r.stderr
    with open(conf, "w") as f:
        json.dump({"ttl": "7"}, f)
    r = run_to_exit([binary("discovery-api/pos-discovery"), "--config", conf],
                    {"POS_P2P_SECRET": SECRET})
    assert r.returncode == 2 and '"ttl"' in r.stderr, r.stderr


@test
def register_and_list():
    redis = Redis()
    disc = Discovery(redis)
    status, headers, body = disc.get()
    assert status == 200 and headers["content-type"] == "application/json" and json.loads(body) == []
    a = entry(["192.0.2.1:7373", "[2001:db8::1]:7373"])
    b = entry()
    status, _, body = disc.post(a)
    assert status == 200, body
    assert json.loads(body)["id"] == a["id"]
    assert disc.post(b)[0] == 200
    listed = disc.relays()
    assert sorted(listed, key=lambda r: r["id"]) == sorted([a, b], key=lambda r: r["id"])
    # The layout documented in docs/discovery-api.md.
    assert json.loads(redis.cli("GET", f"pos:relay:{a['id']}")) == a
    assert 0 < int(redis.cli("PTTL", f"pos:relay:{a['id']}")) <= 30000
    score = float(redis.cli("ZSCORE", "pos:relays", a["id"]))
    assert abs(score - (time.time() * 1000 + 30000)) < 5000
    # An upper-case id is the same relay.
    a_upper = dict(a, id=a["id"].upper(), addrs=["192.0.2.9:1"])
    assert disc.post(a_upper)[0] == 200
    assert [r["addrs"] for r in disc.relays() if r["id"] == a["id"]] == [["192.0.2.9:1"]]


@test
def refresh_replaces_and_extends():
    redis = Redis()
    disc = Discovery(redis, "--ttl", "3")
    e = entry(["192.0.2.1:7373"])
    assert disc.post(e)[0] == 200
    time.sleep(1.5)
    e["addrs"] = ["198.51.100.7:7000"]
    assert disc.post(e)[0] == 200
    listed = disc.relays()
    assert listed == [e], listed
    assert int(redis.cli("PTTL", f"pos:relay:{e['id']}")) > 2500
    time.sleep(2.0)  # past the first registration's expiry, within the refreshed one
    assert disc.relays() == [e]


@test
def ttl_expiry():
    redis = Redis()
    disc = Discovery(redis, "--ttl", "2")
    kept, dropped = entry(), entry()
    t0 = time.monotonic()
    assert disc.post(kept)[0] == 200 and disc.post(dropped)[0] == 200
    # Present before the TTL ...
    while time.monotonic() - t0 < 1.7:
        assert ids(disc.relays()) == {kept["id"], dropped["id"]}
        assert disc.post(kept)[0] == 200
        time.sleep(0.2)
    # ... and gone within TTL + 1 s, while the refreshed one stays.
    wait_until(lambda: ids(disc.relays()) == {kept["id"]}, 3.0 - (time.monotonic() - t0),
               what="the unrefreshed entry to expire")
    assert time.monotonic() - t0 <= 3.0
    assert redis.cli("ZSCORE", "pos:relays", dropped["id"]) == ""
    assert redis.cli("EXISTS", f"pos:relay:{dropped['id']}") == "0"


@test
def delete():
    redis = Redis()
    disc = Discovery(redis)
    a, b = entry(), entry()
    assert disc.post(a)[0] == 200 and disc.post(b)[0] == 200
    assert_error(*disc.delete(a["id"], secret=None), 401)
    assert_error(*disc.delete(a["id"], secret="wrong"), 401)
    assert ids(disc.relays()) == {a["id"], b["id"]}
    status, _, body = disc.delete(a["id"])
    assert status == 204 and body == b""
    assert ids(disc.relays()) == {b["id"]}  # at once: the next GET
    assert redis.cli("EXISTS", f"pos:relay:{a['id']}") == "0"
    assert redis.cli("ZSCORE", "pos:relays", a["id"]) == ""
    assert disc.delete(b["id"].upper())[0] == 204
    assert disc.relays() == []
    assert disc.delete(str(uuid.uuid4()))[0] == 204  # already gone: still fine
    for bad in ("not-a-uuid", "", "7c9e6679-7425-40de-944b-e07fc1f90ae", "x" * 300):
        assert_error(*disc.delete(bad), 400, "UUID")
    status, headers, _ = disc.request("PUT", f"{RELAYS}/{a['id']}")
    assert status == 405 and headers.get("allow") == "DELETE"
    assert disc.get("/nope")[0] == 404


def bad_bodies():
    p = peer_id()
    rid = str(uuid.uuid4())

    def obj(**kw):
        d = {"id": rid, "peer_id": p, "addrs": ["192.0.2.1:7373"]}
        d.update(kw)
        return json.dumps(d)

    def without(key):
        d = json.loads(obj())
        del d[key]
        return json.dumps(d)

    return [
        ("not JSON", "this is not json", "not valid JSON"),
        ("truncated", obj()[:-1], "not valid JSON"),
        ("empty", "", "empty"),
        ("array", json.dumps([json.loads(obj())]), "JSON object"),
        ("string", '"hello"', "JSON object"),
        ("missing id", without("id"), 'missing key "id"'),
        ("missing peer_id", without("peer_id"), 'missing key "peer_id"'),
        ("missing addrs", without("addrs"), 'missing key "addrs"'),
        ("bad uuid", obj(id="not-a-uuid"), "UUID"),
        ("uuid no dashes", obj(id=rid.replace("-", "")), "UUID"),
        ("peer_id short", obj(peer_id=p[:42]), "peer_id"),
        ("peer_id long", obj(peer_id=p + "A"), "peer_id"),
        ("peer_id padded", obj(peer_id=p + "="), "peer_id"),
        ("peer_id url-safe", obj(peer_id="-_" + p[2:]), "peer_id"),
        ("peer_id alphabet", obj(peer_id="!" + p[1:]), "peer_id"),
        ("peer_id non-canonical", obj(peer_id="A" * 42 + "B"), "peer_id"),
        ("addrs empty", obj(addrs=[]), "1 to 16"),
        ("addrs 17", obj(addrs=[f"10.0.0.{i}:7373" for i in range(1, 18)]), "1 to 16"),
        ("addrs not array", obj(addrs="192.0.2.1:7373"), "addrs"),
        ("port 0", obj(addrs=["192.0.2.1:0"]), "not a valid address"),
        ("port 65536", obj(addrs=["192.0.2.1:65536"]), "not a valid address"),
        ("no port", obj(addrs=["192.0.2.1"]), "not a valid address"),
        ("v6 without brackets", obj(addrs=["2001:db8::1:7373"]), "not a valid address"),
        ("hostname", obj(addrs=["relay.example.com:7373"]), "not a valid address"),
        ("duplicate addr", obj(addrs=["192.0.2.1:1", "192.0.2.1:1"]), "repeats"),
        ("unknown key", obj(name="relay-1"), 'unknown key "name"'),
        ("duplicate key", obj()[:-1] + ', "id": "' + rid + '"}', "not valid JSON"),
        ("id number", obj(id=42), '"id" must be a string'),
        ("peer_id null", obj(peer_id=None), '"peer_id" must be a string'),
        ("addr number", obj(addrs=[7373]), "must be a string"),
        ("addrs object", obj(addrs={"a": "192.0.2.1:1"}), "addrs"),
        ("non-UTF-8", b'{"id": "\xff\xfe"}', "not valid JSON"),
    ]


@test
def bad_bodies_are_refused_and_nothing_is_stored():
    redis = Redis()
    disc = Discovery(redis)
    for name, body, needle in bad_bodies():
        status, headers, resp = disc.post(body)
        try:
            assert_error(status, headers, resp, 400, needle)
        except AssertionError as e:
            raise AssertionError(f"body '{name}': {e}")
    assert disc.relays() == []
    assert redis.cli("--scan") == "", redis.dump_all()


@test
def body_limit():
    redis = Redis()
    disc = Discovery(redis)
    e = entry()
    padded = json.dumps(e)[:-1] + " " * (16 * 1024) + "}"
    assert len(padded) > 16384
    assert_error(*disc.post(padded), 413, "16384")
    # Exactly 16 KiB of valid JSON with whitespace is accepted.
    exact = json.dumps(e)[:-1] + " " * (16384 - len(json.dumps(e))) + "}"
    assert len(exact) == 16384
    assert disc.post(exact)[0] == 200
    # A chunked body (no Content-Length) is cut off at the limit too.
    conn = httpclient.HTTPConnection("127.0.0.1", disc.port, timeout=5)
    chunks = (b"x" * 4096 for _ in range(8))
    conn.request("POST", RELAYS, body=chunks, encode_chunked=True,
                 headers={"Authorization": f"Bearer {SECRET}", "Transfer-Encoding": "chunked"})
    r = conn.getresponse()
    assert_error(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(), 413)
    conn.close()
    # A huge declared body is refused without reading it.
    conn = httpclient.HTTPConnection("127.0.0.1", disc.port, timeout=5)
    conn.putrequest("POST", RELAYS)
    conn.putheader("Authorization", f"Bearer {SECRET}")
    conn.putheader("Content-Length", str(100 * 1024 * 1024))
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413
    conn.close()
    assert ids(disc.relays()) == {e["id"]}
    assert redis.cli("ZCARD", "pos:relays") == "1"


@test
def auth_failures():
    redis = Redis()
    disc = Discovery(redis)
    e = entry()
    assert_error(*disc.post(e, secret=None), 401, "missing")
    assert_error(*disc.post(e, secret="wrong"), 401)
    assert_error(*disc.post(e, secret=SECRET[:-1]), 401)
    assert_error(*disc.post(e, secret=SECRET + "x"), 401)
    assert_error(*disc.post(e, secret=""), 401)
    for header in (f"Basic {SECRET}", SECRET, f"Bearer{SECRET}", f"Bearer  {SECRET}"):
        status, headers, body = disc.post(e, secret=None, headers={"Authorization": header})
        assert_error(status, headers, body, 401)
        assert headers.get("www-authenticate") == "Bearer"
    # 401 before any validation: a bad body without the secret is still 401.
    assert_error(*disc.post("garbage", secret="wrong"), 401)
    assert disc.relays() == [] and redis.cli("--scan") == ""
    assert disc.post(e)[0] == 200


@test
def redis_outage_and_recovery():
    redis = Redis()
    disc = Discovery(redis)
    a = entry()
    assert disc.post(a)[0] == 200
    wait_until(lambda: disc.get("/healthz")[0] == 200, 5, what="healthy")
    redis.kill()
    # GET keeps answering with the last list, marked stale.
    def stale():
        status, headers, body = disc.get()
        return status == 200 and "x-pos-stale" in headers and json.loads(body) == [a]
    wait_until(stale, 5, what="a stale list")
    status, headers, body = disc.get()
    assert int(headers["x-pos-stale"]) >= 0
    assert_error(*disc.post(entry()), 503, "Redis")
    assert_error(*disc.delete(a["id"]), 503, "Redis")
    status, _, body = disc.get("/healthz")
    assert status == 503 and b"Redis" in body, body
    m = disc.metrics()
    assert "pos_discovery_redis_up 0" in m
    assert metric(m, "pos_discovery_redis_errors_total") > 0
    time.sleep(1.2)
    assert int(disc.get()[1]["x-pos-stale"]) >= 1
    # Redis returns on the same port (empty): the service recovers without a restart.
    redis.start()
    t0 = time.monotonic()
    wait_until(lambda: disc.get("/healthz")[0] == 200, 10, what="healthz to recover")
    b = entry()
    assert disc.post(b)[0] == 200  # as soon as healthz says so
    assert time.monotonic() - t0 < 3, "recovery should take a refresh period, not a backoff"
    wait_until(lambda: "x-pos-stale" not in disc.get()[1], 3, what="the list to be fresh")
    status, headers, body = disc.get()
    assert status == 200 and "x-pos-stale" not in headers and json.loads(body) == [b]
    assert "cannot refresh" in disc.proc.output()
    wait_until(lambda: "reachable again" in disc.proc.output(), 5, what="recovery logged")


@test
def get_never_waits_on_a_hung_redis():
    redis = Redis()
    disc = Discovery(redis)
    a = entry()
    assert disc.post(a)[0] == 200
    redis.proc.signal(signal.SIGSTOP)
    try:
        worst = 0.0
        for _ in range(20):
            t0 = time.monotonic()
            assert json.loads(disc.get()[2]) == [a]
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.1)
        # Redis calls time out after 1 s; a GET that waited on one would take that long.
        assert worst < 0.5, worst
        assert "x-pos-stale" in disc.get()[1]
        assert disc.get("/healthz")[0] == 503
    finally:
        redis.proc.signal(signal.SIGCONT)
    wait_until(lambda: disc.get("/healthz")[0] == 200, 10, what="recovery after SIGCONT")


@test
def starts_without_redis_and_catches_up():
    redis = Redis()
    redis.kill()
    disc = Discovery(redis)
    assert "starting without a relay list" in disc.proc.output()
    assert_error(*disc.get(), 503, "not been loaded")
    assert disc.get("/healthz")[0] == 503
    assert_error(*disc.post(entry()), 503, "Redis")
    redis.start()
    wait_until(lambda: disc.get()[0] == 200, 5, what="the first list")
    e = entry()
    assert disc.post(e)[0] == 200
    assert disc.relays() == [e]
    assert disc.get("/healthz")[0] == 200


@test
def head_and_keep_alive():
    redis = Redis()
    disc = Discovery(redis)
    e = entry()
    assert disc.post(e)[0] == 200
    conn = httpclient.HTTPConnection("127.0.0.1", disc.port, timeout=5)
    conn.request("HEAD", RELAYS)
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b""
    assert int(r.getheader("content-length")) == len(json.dumps([e], separators=(",", ":")))
    for _ in range(3):  # the same connection serves GETs one after another
        conn.request("GET", RELAYS)
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read()) == [e]
        assert (r.getheader("connection") or "").lower() != "close"
    conn.close()


@test
def per_ip_connection_limit():
    """One address may hold 64 connections by default (docs/discovery-api.md); the next is
    refused."""
    import socket
    redis = Redis()
    disc = Discovery(redis)
    held = []
    try:
        for _ in range(64):
            held.append(socket.create_connection(("127.0.0.1", disc.port), timeout=5))
        time.sleep(0.3)  # let the server accept them all

        def refused():
            try:
                return disc.get("/healthz")[0] != 200
            except Exception:
                return True
        assert refused()
        for sock in held[:4]:
            sock.close()
        wait_until(lambda: disc.get("/healthz")[0] == 200, 5, what="a freed slot to be usable")
    finally:
        for sock in held:
            sock.close()


@test
def post_on_a_hung_redis_stalls_no_get():
    """One HTTP thread: a POST waiting on a hung Redis must not hold up GETs on other
    connections, and it gives up with 503 after the documented 1 s."""
    import threading
    redis = Redis()
    disc = Discovery(redis, "--threads", "1")
    a = entry()
    assert disc.post(a)[0] == 200
    redis.proc.signal(signal.SIGSTOP)
    try:
        outcome = {}

        def post():
            t0 = time.monotonic()
            outcome["status"] = disc.post(entry())[0]
            outcome["took"] = time.monotonic() - t0

        for _ in range(2):  # the second POST meets a write connection already timed out once
            outcome.clear()
            poster = threading.Thread(target=post)
            poster.start()
            time.sleep(0.05)
            worst = 0.0
            while poster.is_alive():
                t0 = time.monotonic()
                status, _, body = disc.get()
                worst = max(worst, time.monotonic() - t0)
                assert status == 200 and json.loads(body) == [a], (status, body)
                time.sleep(0.05)
            poster.join()
            assert worst < 0.5, f"a GET waited {worst:.2f} s behind the POST"
            assert outcome["status"] == 503, outcome
            assert 0.6 < outcome["took"] < 1.6, outcome
    finally:
        redis.proc.signal(signal.SIGCONT)
    wait_until(lambda: disc.post(entry())[0] == 200, 10, what="writes after SIGCONT")


def trickle(port, first, lines, every, limit, host="127.0.0.1", source=None):
    """Sends |first|, then one of |lines| every |every| seconds, until the server closes the
    connection or |limit| seconds pass. Returns the seconds it stayed open (None: never closed)."""
    import socket
    sock = socket.create_connection((host, port), timeout=limit, source_address=source)
    t0 = time.monotonic()
    try:
        sock.sendall(first)
        i = 0
        while time.monotonic() - t0 < limit:
            sock.settimeout(every)
            try:
                if sock.recv(4096) == b"":
                    return time.monotonic() - t0
            except socket.timeout:
                pass
            except OSError:
                return time.monotonic() - t0
            try:
                sock.sendall(lines[i % len(lines)])
            except OSError:
                return time.monotonic() - t0
            i += 1
        return None
    finally:
        sock.close()


@test
def trickled_requests_are_cut_at_the_request_deadline():
    """Headers (or a body) trickled byte-sized every 0.4 s reset libmicrohttpd's idle timeout;
    the request deadline (--request-timeout 2) still closes the connection."""
    import threading
    redis = Redis()
    disc = Discovery(redis, "--request-timeout", "2")
    results = {}

    def run(name, first, lines):
        results[name] = trickle(disc.port, first, lines, 0.4, 6)

    body = json.dumps(entry()).encode()
    jobs = {
        "headers": (b"GET /healthz HTTP/1.1\r\n", [b"X-Slow: 1\r\n"]),
        "body": (f"POST {RELAYS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode(), [body[i:i + 1]
                                                              for i in range(len(body))]),
        "idle keep-alive": (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", [b""]),
    }
    threads = [threading.Thread(target=run, args=(n, f, ls)) for n, (f, ls) in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, held in results.items():
        assert held is not None, f"{name}: still open after 6 s"
        assert 1.5 < held < 3.5, (name, held)
    # A request that arrives in time is answered as before.
    assert disc.get("/healthz")[0] == 200


@test
def a_burst_from_one_address_gets_no_more_than_its_share():
    """12 connections at once from one address, 40 times: never more than 4 are served
    (--max-connections-per-client 4), even when the server accepts the burst before it has
    started the first of them (the old check-then-count let a fifth in about 1 time in 10)."""
    import socket
    redis = Redis()
    disc = Discovery(redis, "--max-connections", "128", "--max-connections-per-client", "4")
    served = []
    for trial in range(40):
        socks = []
        for _ in range(12):
            try:
                socks.append(socket.create_connection(("127.0.0.1", disc.port), timeout=2,
                                                      source_address=(f"127.0.3.{trial + 1}", 0)))
            except OSError:
                pass
        for sock in socks:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            except OSError:
                pass
        answered = 0
        for sock in socks:  # every answer before any close: a close frees a slot (the limit
            try:            # is on connections open at once), and a slow server would then
                answered += sock.recv(4096).startswith(b"HTTP/1.1 200 ")  # start one more
            except OSError:
                pass
        for sock in socks:
            sock.close()
        served.append(answered)
    assert max(served) == 4, served
    assert metric(disc.metrics(), "pos_discovery_connections_refused_total") >= 40 * 8, served


@test
def slot_holders_do_not_lock_out_new_clients():
    """64 client addresses each hold as many slow connections as they may; a new client still
    gets its GET answered within 2 s, and one address gets no more than its share."""
    import socket
    redis = Redis()
    disc = Discovery(redis, "--max-connections", "128", "--max-connections-per-client", "4",
                     "--request-timeout", "30")
    e = entry()
    assert disc.post(e)[0] == 200
    held = []
    try:
        for host in range(64):
            for _ in range(4):
                sock = socket.socket()
                sock.settimeout(5)
                sock.bind((f"127.0.1.{host + 1}", 0))
                sock.connect(("127.0.0.1", disc.port))
                sock.sendall(b"GET " + RELAYS.encode() + b" HTTP/1.1\r\nX-Slow: ")
                held.append(sock)
        time.sleep(0.3)  # let the server take them all in
        for attempt in range(3):
            t0 = time.monotonic()
            status, _, body = http("GET", disc.url(RELAYS), timeout=5)
            took = time.monotonic() - t0
            assert status == 200 and json.loads(body) == [e], (status, body)
            assert took < 2, f"a new client waited {took:.2f} s"
        # A fifth connection from one address is refused (closed without an answer).
        extra = socket.socket()
        extra.settimeout(3)
        extra.bind(("127.0.2.1", 0))
        extra.connect(("127.0.0.1", disc.port))
        more = [socket.create_connection(("127.0.0.1", disc.port), timeout=3,
                                         source_address=("127.0.2.1", 0)) for _ in range(4)]
        held += more + [extra]
        for sock in more + [extra]:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = 0
        for sock in more + [extra]:
            try:
                answered += sock.recv(4096).startswith(b"HTTP/1.1 200 ")
            except OSError:
                pass
        assert answered == 4, answered
        m = disc.metrics()
        assert metric(m, "pos_discovery_connections_evicted_total") > 0, m
        assert metric(m, "pos_discovery_connections_refused_total") >= 1, m
    finally:
        for sock in held:
            sock.close()


def enter_netns(name):
    """Moves this thread (and what it starts) into network namespace |name|; returns the fd
    of the one it left."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    old = os.open("/proc/self/ns/net", os.O_RDONLY)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)
    return old


def leave_netns(old):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setns(old, 0x40000000)
    os.close(old)


@test
def per_client_limit_counts_an_ipv6_slash64():
    """Addresses of one IPv6 /64 share one client's connections; another /64 has its own.
    Needs root for a network namespace with addresses of its own."""
    import socket
    from harness import Skip
    if os.geteuid() != 0 or not shutil_which("ip"):
        raise Skip("needs root and iproute2 for a network namespace")
    ns = f"pos-test-{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        raise Skip("cannot create a network namespace here")
    old = None
    held = []
    try:
        for cmd in (["link", "set", "lo", "up"],
                    ["addr", "add", "2001:db8:1:1::1/64", "dev", "lo", "nodad"],
                    ["addr", "add", "2001:db8:1:1::2/64", "dev", "lo", "nodad"],
                    ["addr", "add", "2001:db8:1:2::1/64", "dev", "lo", "nodad"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True, capture_output=True)
        old = enter_netns(ns)
        redis = Redis()
        port = free_port(family=socket.AF_INET6)
        proc = Proc([binary("discovery-api/pos-discovery"), "--listen", f"[::]:{port}",
                     "--redis", redis.url, "--max-connections-per-client", "3"],
                    env={"POS_P2P_SECRET": SECRET, "POS_LOG": "debug"}, name="pos-discovery")
        wait_until(lambda: f"listening on http://[::]:{port}" in proc.output(), 15,
                   what="pos-discovery to listen")

        def get_from(src):
            sock = socket.create_connection(("2001:db8:1:1::1", port), timeout=3,
                                            source_address=(src, 0))
            held.append(sock)
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                return sock.recv(4096).startswith(b"HTTP/1.1 200 ")
            except OSError:
                return False
        # Three from ::1 of the first /64 take its share; ::2 of the same /64 is refused.
        assert [get_from("2001:db8:1:1::1") for _ in range(3)] == [True] * 3
        assert not get_from("2001:db8:1:1::2")
        # Another /64 is another client.
        assert get_from("2001:db8:1:2::1")
        for sock in held:
            sock.close()
        held.clear()
        wait_until(lambda: get_from("2001:db8:1:1::2"), 5, what="the /64's share to free up")
    finally:
        for sock in held:
            sock.close()
        if old is not None:
            stop_all()  # the namespace's processes, before leaving it
            leave_netns(old)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def shutil_which(name):
    import shutil
    return shutil.which(name)


@test
def metrics():
    redis = Redis()
    disc = Discovery(redis)
    for _ in range(3):
        assert disc.post(entry())[0] == 200
    disc.get()
    disc.post("nope")
    disc.post(entry(), secret="wrong")
    disc.get("/healthz")
    m = disc.metrics()
    for line in ('pos_discovery_requests_total{route="/api/p2p/relays",method="POST",status="200"} 3',
                 'pos_discovery_requests_total{route="/api/p2p/relays",method="POST",status="400"} 1',
                 'pos_discovery_requests_total{route="/api/p2p/relays",method="POST",status="401"} 1',
                 'pos_discovery_requests_total{route="/api/p2p/relays",method="GET",status="200"} 1',
                 'pos_discovery_requests_total{route="/healthz",method="GET",status="200"} 1',
                 "pos_discovery_relays 3", "pos_discovery_redis_errors_total 0",
                 "pos_discovery_redis_up 1", "# TYPE pos_discovery_snapshot_age_seconds gauge"):
        assert line in m, (line, m)
    age = metric(m, "pos_discovery_snapshot_age_seconds")
    assert 0 <= age < 2


def self_signed(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=30)
    return cert, key


@test
def https():
    redis = Redis()
    d = tmpdir()
    cert, key = self_signed(d)
    ctx = ssl.create_default_context(cafile=cert)
    disc = Discovery(redis, "--tls-cert", cert, "--tls-key", key, scheme="https", ctx=ctx)
    e = entry()
    assert disc.post(e)[0] == 200
    assert disc.relays() == [e]
    assert disc.get("/healthz")[0] == 200
    # Plain HTTP on the HTTPS port gets no answer.
    try:
        status = http("GET", f"http://127.0.0.1:{disc.port}{RELAYS}", timeout=3)[0]
    except Exception:
        status = None
    assert status != 200
    # A key that is not a key: refused at start with the file names.
    with open(os.path.join(d, "bad.pem"), "w") as f:
        f.write("not a pem\n")
    r = run_to_exit([binary("discovery-api/pos-discovery"), "--listen",
                     f"127.0.0.1:{free_port()}", "--redis", redis.url, "--tls-cert", cert,
                     "--tls-key", os.path.join(d, "bad.pem")], {"POS_P2P_SECRET": SECRET})
    assert r.returncode != 0 and "bad.pem" in r.stderr, r.stderr


def raw_exchange(port, data, timeout=5):
    """Sends raw bytes on a new connection and reads until the server closes it.
    Returns (bytes read, True when the server closed within |timeout|)."""
    import socket
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(data)
    got = b""
    closed = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            got += chunk
    except socket.timeout:
        pass
    finally:
        sock.close()
    return got, closed


@test
def ambiguous_framing_is_refused_and_closed():
    """CL+TE or two different Content-Lengths: one 400, the connection closed, and the request
    hidden behind it (a DELETE, a POST) never runs."""
    redis = Redis()
    disc = Discovery(redis)
    kept = entry()
    assert disc.post(kept)[0] == 200
    auth = f"Authorization: Bearer {SECRET}\r\n".encode()
    smuggled_delete = (f"DELETE {RELAYS}/{kept['id']} HTTP/1.1\r\nHost: x\r\n".encode() + auth
                       + b"\r\n")
    sneaky = json.dumps(entry()).encode()
    smuggled_post = (f"POST {RELAYS} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(sneaky)}\r\n"
                     .encode() + auth + b"\r\n" + sneaky)
    chunked = b"0\r\n\r\n"
    cases = {
        "CL+TE": (b"POST " + RELAYS.encode() + b" HTTP/1.1\r\nHost: x\r\n" + auth
                  + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
                  % (len(chunked) + len(smuggled_delete)) + chunked + smuggled_delete),
        "TE+CL": (b"POST " + RELAYS.encode() + b" HTTP/1.1\r\nHost: x\r\n" + auth
                  + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + chunked
                  + smuggled_post),
        "CL,CL": (b"POST " + RELAYS.encode() + b" HTTP/1.1\r\nHost: x\r\n" + auth
                  + b"Content-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(smuggled_delete)
                  + smuggled_delete),
        "GET CL+TE": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n" + chunked + smuggled_post),
    }
    for name, data in cases.items():
        got, closed = raw_exchange(disc.port, data)
        assert got.count(b"HTTP/1.1 ") == 1, (name, got)
        assert got.startswith(b"HTTP/1.1 400 "), (name, got)
        assert b"\r\nConnection: close\r\n" in got, (name, got)
        assert closed, (name, "connection left open", got)
    assert disc.relays() == [kept]
    assert int(redis.cli("ZCARD", "pos:relays")) == 1
    # The same header twice with the same value is no ambiguity.
    body = json.dumps(entry()).encode()
    got, _ = raw_exchange(disc.port, b"POST " + RELAYS.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                          + auth + b"Connection: close\r\nContent-Length: %d\r\n"
                          b"Content-Length: %d\r\n\r\n" % (len(body), len(body)) + body)
    assert got.startswith(b"HTTP/1.1 200 "), got


def tls_handshake(port, *flags):
    """openssl s_client with |flags|; returns (connected, "TLSvX.Y CIPHER" or what it said)."""
    import re
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *flags],
                       input="", capture_output=True, text=True, timeout=15)
    m = re.search(r"New, (TLSv[0-9.]+), Cipher is (\S+)", r.stdout)
    if not m or m.group(2) == "(NONE)":
        return False, (r.stdout + r.stderr)[-300:]
    return True, f"{m.group(1)} {m.group(2)}"


@test
def https_offers_tls12_and_13_only_and_sends_close_notify():
    import socket
    redis = Redis()
    d = tmpdir()
    cert, key = self_signed(d)
    ctx = ssl.create_default_context(cafile=cert)
    disc = Discovery(redis, "--tls-cert", cert, "--tls-key", key, "--request-timeout", "2",
                     scheme="https", ctx=ctx)
    weak = "ALL:@SECLEVEL=0"
    for version in ("-tls1", "-tls1_1"):  # RFC 8996
        ok, proto = tls_handshake(disc.port, version, "-cipher", weak)
        assert not ok, (version, proto)
    # TLS 1.2 without AEAD (CBC with SHA-1 or SHA-2 MACs): refused.
    ok, proto = tls_handshake(disc.port, "-tls1_2", "-cipher",
                              "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:"
                              "ECDHE-ECDSA-AES256-SHA384:@SECLEVEL=0")
    assert not ok, proto
    for version, want in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        ok, proto = tls_handshake(disc.port, version)
        assert ok and proto.startswith(want + " ") and "GCM" in proto, (version, proto)
    # The server ends the connection with close_notify: a clean TLS end of stream, not a cut.
    raw = socket.create_connection(("127.0.0.1", disc.port), timeout=5)
    tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False)
    tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    got = b""
    while True:
        chunk = tls.recv(4096)  # raises SSLEOFError when the TCP stream ends without close_notify
        if not chunk:
            break
        got += chunk
    assert got.startswith(b"HTTP/1.1 200 "), got
    tls.close()
    # So does a connection cut at the request deadline (headers trickled over TLS).
    raw = socket.create_connection(("127.0.0.1", disc.port), timeout=5)
    tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False)
    t0 = time.monotonic()
    tls.sendall(b"GET /healthz HTTP/1.1\r\n")
    tls.settimeout(0.4)
    while time.monotonic() - t0 < 6:
        try:
            if tls.recv(4096) == b"":  # SSLEOFError without close_notify
                break
        except (socket.timeout, TimeoutError):
            tls.sendall(b"X-Slow: 1\r\n")
    held = time.monotonic() - t0
    assert 1.5 < held < 3.5, held
    tls.close()


@test
def secret_never_logged_or_stored():
    redis = Redis()
    d = tmpdir()
    secret_file = os.path.join(d, "secret")
    with open(secret_file, "w") as f:
        f.write(SECRET + "\n")
    disc = Discovery(redis, "--secret-file", secret_file, secret=None)
    e = entry()
    wrong = "wrong-" + SECRET
    assert disc.post(e)[0] == 200
    assert disc.post(e, secret=wrong)[0] == 401
    assert disc.post("bad body")[0] == 400
    assert disc.delete(e["id"])[0] == 204
    assert disc.post(e)[0] == 200
    disc.get("/metrics")
    assert disc.proc.stop() == 0
    out = disc.proc.output()
    assert "registered relay" in out  # debug logging was on
    assert SECRET not in out and SECRET[-16:] not in out and wrong not in out, out
    dump = redis.dump_all()
    assert e["id"] in dump and SECRET not in dump and SECRET[-16:] not in dump, dump


@test
def clean_exit_on_signals():
    redis = Redis()
    for sig in (signal.SIGINT, signal.SIGTERM):
        disc = Discovery(redis)
        assert disc.post(entry())[0] == 200
        disc.proc.signal(sig)
        assert disc.proc.wait(10) == 0
        assert "stopping" in disc.proc.output()


@test
def concurrent_gets_and_posts():
    """Many keep-alive GETs while entries are registered: every answer is a complete list."""
    redis = Redis()
    disc = Discovery(redis)
    import threading
    errors = []
    stop = time.monotonic() + 3

    def reader():
        try:
            conn = httpclient.HTTPConnection("127.0.0.1", disc.port, timeout=5)
            while time.monotonic() < stop:
                conn.request("GET", RELAYS)
                r = conn.getresponse()
                body = r.read()
                if r.status != 200 or not isinstance(json.loads(body), list):
                    errors.append((r.status, body[:100]))
            conn.close()
        except Exception as e:  # reported by the main thread
            errors.append(repr(e))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    posted = set()
    while time.monotonic() < stop:
        e = entry()
        assert disc.post(e)[0] == 200
        posted.add(e["id"])
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert ids(disc.relays()) == posted


if __name__ == "__main__":
    run("discovery-api")
