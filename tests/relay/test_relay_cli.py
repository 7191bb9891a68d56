"""pos-relay's operator commands (init, check, token, usage) and the relay's
Redis/discovery services, against a real redis-server and the real
pos-discovery on loopback.

What a user would notice: init never clobbers an existing config and writes
it 0600; check names file, key and expectation; a token is shown once and is
nowhere in Redis or the output afterwards; revoking publishes the token's hash;
a running relay (relay_services, driven by tests/relay/test_relay_services.c)
refuses unknown, expired, revoked and over-limit tokens, shares rate limits
with another relay on the same Redis, stays answering while Redis hangs, and
registers/deregisters with the discovery API.
"""
import hashlib
import json
import os
import pty
import select
import signal
import socket
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import Proc, Redis, binary, free_port, http, run, test, tmpdir, wait_until  # noqa: E402

RELAY = binary("relay/pos-relay")
SECRET = "p2p-secret-for-tests-0123456789"


def relay(*args, stdin="", env=None, cwd=None):
    full_env = dict(os.environ)
    full_env.pop("POS_RELAY_CONFIG", None)
    if env:
        full_env.update(env)
    return subprocess.run([RELAY, *args], input=stdin, capture_output=True, text=True,
                          timeout=30, env=full_env, cwd=cwd)


def token_hash(token):
    return hashlib.blake2b(token.encode(), digest_size=32).hexdigest()


def make_config(redis=None, extra=None):
    """A config written by `pos-relay init`, optionally edited; returns its path."""
    path = os.path.join(tmpdir(), "relay.json")
    args = ["init", "--config", path, "--public-addr", "127.0.0.1:7373"]
    if redis:
        args += ["--redis", redis.url]
    r = relay(*args, stdin=SECRET + "\n")
    assert r.returncode == 0, r.stderr
    if extra:
        with open(path) as f:
            cfg = json.load(f)
        cfg.update(extra)
        with open(path, "w") as f:
            json.dump(cfg, f)
    return path


def add_token(cfg, *args):
    r = relay("token", "add", "--config", cfg, *args)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip().splitlines()[-1]
    return token, r


# ---- init ----

@test
def init_writes_private_config_from_stdin():
    d = tmpdir()
    path = os.path.join(d, "c.json")
    r = relay("init", "--config", path, "--api-url", "http://127.0.0.1:8080", "--port", "7400",
              "--public-addr", "127.0.0.1:7400", "--public-addr", "[::1]:7400",
              stdin=SECRET + "\n")
    assert r.returncode == 0, r.stderr
    peer_id = r.stdout.strip().splitlines()[-1]
    assert len(peer_id) == 43, peer_id
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as f:
        cfg = json.load(f)
    assert cfg["p2p_secret"] == SECRET
    assert cfg["port"] == 7400 and cfg["api_url"] == "http://127.0.0.1:8080"
    assert cfg["public_addrs"] == ["127.0.0.1:7400", "[::1]:7400"]
    assert len(cfg["id"]) == 36 and cfg["id"][14] == "4"  # UUID v4
    assert len(cfg["identity"]) == 43
    assert SECRET not in r.stdout + r.stderr and cfg["identity"] not in r.stdout + r.stderr
    c = relay("check", "--config", path)
    assert c.returncode == 0 and c.stdout.strip() == "configuration OK", c.stdout + c.stderr


@test
def init_refuses_to_overwrite():
    path = make_config()
    with open(path, "rb") as f:
        before = f.read()
    r = relay("init", "--config", path, stdin="another-secret\n")
    assert r.returncode != 0
    assert "already exists" in r.stderr and "--force" in r.stderr, r.stderr
    with open(path, "rb") as f:
        assert f.read() == before
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # --force replaces it: new identity, new secret.
    r = relay("init", "--config", path, "--force", stdin="another-secret\n")
    assert r.returncode == 0, r.stderr
    with open(path) as f:
        cfg = json.load(f)
    assert cfg["p2p_secret"] == "another-secret"
    assert json.loads(before)["id"] != cfg["id"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not [n for n in os.listdir(os.path.dirname(path)) if ".tmp." in n]


@test
def init_default_path_and_env():
    d = tmpdir()
    r = relay("init", stdin=SECRET + "\n", cwd=d)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(os.path.join(d, "config.json"))
    other = os.path.join(d, "from-env.json")
    r = relay("init", stdin=SECRET + "\n", env={"POS_RELAY_CONFIG": other}, cwd=d)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(other)
    r = relay("check", env={"POS_RELAY_CONFIG": other}, cwd=d)
    assert r.returncode == 0, r.stderr


@test
def init_rejects_bad_input_and_writes_nothing():
    d = tmpdir()
    path = os.path.join(d, "c.json")
    cases = [
        (["--port", "0"], SECRET, "--port"),
        (["--port", "70000"], SECRET, "--port"),
        (["--public-addr", "example.com:80"], SECRET, "--public-addr"),
        (["--redis", "http://127.0.0.1"], SECRET, "--redis"),
        (["--api-url", "ftp://x"], SECRET, "--api-url"),
        ([], "", "p2p secret"),
        ([], "\n", "p2p secret"),
        (["--bogus"], SECRET, "usage"),
    ]
    for args, stdin, words in cases:
        r = relay("init", "--config", path, *args, stdin=stdin)
        assert r.returncode != 0, args
        assert words in r.stderr, (args, r.stderr)
        assert not os.path.exists(path), args


@test
def init_prompts_without_echo_on_a_terminal():
    path = os.path.join(tmpdir(), "c.json")
    master, slave = pty.openpty()
    p = subprocess.Popen([RELAY, "init", "--config", path], stdin=slave, stdout=subprocess.PIPE,
                         stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 10
    while b"p2p secret: " not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            seen += os.read(master, 1024)
    assert b"p2p secret: " in seen, seen
    os.write(master, b"typed-secret-xyz\n")
    try:
        out, _ = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    rest = b""
    while select.select([master], [], [], 0.2)[0]:
        try:
            chunk = os.read(master, 1024)
        except OSError:
            break
        if not chunk:
            break
        rest += chunk
    os.close(master)
    assert p.returncode == 0
    assert b"typed-secret-xyz" not in seen + rest, seen + rest  # not echoed
    with open(path) as f:
        assert json.load(f)["p2p_secret"] == "typed-secret-xyz"
    assert len(out.decode().strip().splitlines()[-1]) == 43


# ---- check ----

@test
def check_names_file_key_and_expectation():
    good = make_config()
    with open(good) as f:
        base = json.load(f)
    cases = [
        ({"id": "not-a-uuid"}, "id"),
        ({"identity": "short"}, "identity"),
        ({"port": 0}, "port"),
        ({"port": "7373"}, "port"),
        ({"redis": "localhost"}, "redis"),
        ({"public_addrs": ["1.2.3.4"]}, "public_addrs"),
        ({"api_url": "127.0.0.1:8080"}, "api_url"),
        ({"http_listen": "nowhere"}, "http_listen"),
        ({"register_interval": 0}, "register_interval"),
        ({"prot": 7373}, "prot"),
        ({"p2p_secret": ""}, "p2p_secret"),
    ]
    d = tmpdir()
    for i, (change, key) in enumerate(cases):
        cfg = dict(base)
        cfg.update(change)
        path = os.path.join(d, f"bad{i}.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        os.chmod(path, 0o600)
        r = relay("check", "--config", path)
        assert r.returncode != 0, change
        assert path in r.stderr and f'"{key}"' in r.stderr, (change, r.stderr)
        assert "expected" in r.stderr or "not a known setting" in r.stderr, r.stderr
        assert "configuration OK" not in r.stdout
    # A missing required key.
    cfg = dict(base)
    del cfg["p2p_secret"]
    path = os.path.join(d, "missing.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    r = relay("check", "--config", path)
    assert r.returncode != 0 and '"p2p_secret" is missing' in r.stderr, r.stderr
    # Not JSON, and no file at all.
    path = os.path.join(d, "syntax.json")
    with open(path, "w") as f:
        f.write("{ not json")
    r = relay("check", "--config", path)
    assert r.returncode != 0 and path in r.stderr and "JSON" in r.stderr, r.stderr
    r = relay("check", "--config", os.path.join(d, "absent.json"))
    assert r.returncode != 0 and "absent.json" in r.stderr, r.stderr
    # The secret never appears in an error.
    assert SECRET not in r.stderr
    # Readable by others: still valid, with a warning.
    os.chmod(good, 0o644)
    r = relay("check", "--config", good)
    assert r.returncode == 0 and "chmod 600" in r.stderr, r.stderr


@test
def every_command_has_help():
    for args in (["--help"], ["init", "--help"], ["check", "--help"], ["token", "--help"],
                 ["token", "add", "--help"], ["usage", "--help"]):
        r = relay(*args)
        assert r.returncode == 0 and "usage:" in r.stdout, (args, r.stdout, r.stderr)
    r = relay("frobnicate")
    assert r.returncode != 0 and "unknown command" in r.stderr


# ---- tokens ----

class Subscriber:
    """A raw RESP client subscribed to one channel."""

    def __init__(self, redis, channel):
        self.s = socket.create_connection(("127.0.0.1", redis.port), timeout=5)
        self.buf = b""
        self.s.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(channel), channel.encode()))
        assert self.read_message()[0] == "subscribe"

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(4096)
            if not chunk:
                raise EOFError
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _value(self):
        line = self._line()
        if line[:1] == b"*":
            return [self._value() for _ in range(int(line[1:]))]
        if line[:1] == b"$":
            n = int(line[1:])
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(4096)
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v.decode()
        return line[1:].decode()

    def read_message(self, timeout=5):
        self.s.settimeout(timeout)
        return self._value()

    def close(self):
        self.s.close()


@test
def token_add_list_revoke_never_expose_the_token():
    redis = Redis()
    cfg = make_config(redis)
    token, r = add_token(cfg, "--account", "alice", "--bytes-per-sec", "1000", "--burst", "5000",
                         "--max-conns", "3", "--expires", "3600")
    assert token.startswith("pos_") and len(token) >= 26  # >= 128 bits of base64
    assert r.stdout.strip() == token  # shown once, alone on stdout
    assert token not in r.stderr
    h = token_hash(token)
    dump = redis.dump_all()
    assert token not in dump and token[4:] not in dump
    assert h in dump
    fields = redis.cli("HGETALL", "pos:token:" + h).splitlines()
    f = dict(zip(fields[::2], fields[1::2]))
    assert f["account"] == "alice" and f["bytes_per_sec"] == "1000" and f["burst"] == "5000"
    assert f["max_conns"] == "3" and f["revoked"] == "0"
    assert abs(int(f["expires_at"]) - (time.time() + 3600)) < 60

    token2, _ = add_token(cfg)
    lst = relay("token", "list", "--config", cfg)
    assert lst.returncode == 0, lst.stderr
    assert token not in lst.stdout and token2 not in lst.stdout
    assert h[:12] in lst.stdout and "alice" in lst.stdout and "default" in lst.stdout
    alice = [line for line in lst.stdout.splitlines() if "alice" in line][0]
    assert "active" in alice and "1000" in alice and "5000" in alice

    sub = Subscriber(redis, "pos:revoked")
    rv = relay("token", "revoke", "--config", cfg, token)
    assert rv.returncode == 0, rv.stderr
    assert token not in rv.stdout + rv.stderr
    assert sub.read_message() == ["message", "pos:revoked", h]
    assert redis.cli("HGET", "pos:token:" + h, "revoked") == "1"
    lst = relay("token", "list", "--config", cfg)
    alice = [line for line in lst.stdout.splitlines() if "alice" in line][0]
    assert "revoked" in alice

    # By account, and from stdin.
    t3, _ = add_token(cfg, "--account", "bob")
    t4, _ = add_token(cfg, "--account", "bob")
    rv = relay("token", "revoke", "--config", cfg, "--account", "bob")
    assert rv.returncode == 0 and "revoked 2 tokens" in rv.stdout, rv.stdout + rv.stderr
    got = {sub.read_message()[2], sub.read_message()[2]}
    assert got == {token_hash(t3), token_hash(t4)}
    rv = relay("token", "revoke", "--config", cfg, "-", stdin=token2 + "\n")
    assert rv.returncode == 0, rv.stderr
    assert sub.read_message()[2] == token_hash(token2)
    sub.close()

    # Unknown token or account: an error, nothing published or changed.
    before = redis.dump_all()
    rv = relay("token", "revoke", "--config", cfg, "pos_nope")
    assert rv.returncode != 0 and "no such token" in rv.stderr
    rv = relay("token", "revoke", "--config", cfg, "--account", "nobody")
    assert rv.returncode != 0 and "no tokens" in rv.stderr
    assert redis.dump_all() == before
    for t in (token, token2, t3, t4):
        assert t not in redis.dump_all()


@test
def token_commands_reject_bad_arguments():
    redis = Redis()
    cfg = make_config(redis)
    before = redis.dump_all()
    for args in (["add", "--max-conns", "-1"], ["add", "--expires", "soon"],
                 ["add", "--account", "has space"], ["add", "--account", "a:b"],
                 ["revoke"], ["revoke", "x", "--account", "a"], ["list", "extra"],
                 ["revoke", "x", "--bytes-per-sec", "5"], ["frob"]):
        r = relay("token", *args[:1], "--config", cfg, *args[1:])
        assert r.returncode != 0, args
        assert r.stderr.strip(), args
    assert redis.dump_all() == before


@test
def token_and_usage_say_when_redis_is_down():
    redis = Redis()
    cfg = make_config(redis)
    redis.kill()
    for args in (["token", "add"], ["token", "list"], ["usage"]):
        r = relay(*args, "--config", cfg)
        assert r.returncode != 0, args
        assert "Redis" in r.stderr and str(redis.port) in r.stderr, r.stderr
        assert r.stdout.strip() == "", r.stdout


@test
def expired_token_is_listed_as_expired():
    redis = Redis()
    cfg = make_config(redis)
    add_token(cfg, "--account", "shortlived", "--expires", "1")
    time.sleep(1.5)
    lst = relay("token", "list", "--config", cfg)
    row = [line for line in lst.stdout.splitlines() if "shortlived" in line][0]
    assert "expired" in row, row


@test
def usage_reports_per_account_counters():
    redis = Redis()
    cfg = make_config(redis)
    add_token(cfg, "--account", "alice")
    add_token(cfg, "--account", "bob")
    r = relay("usage", "--config", cfg)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines()[1:]}
    assert rows == {"alice": ["0", "0"], "bob": ["0", "0"]}, r.stdout
    # The data plane adds to these keys (docs/redis-layout.md).
    redis.cli("HINCRBY", "pos:usage:alice", "bytes_relayed", "123456")
    redis.cli("HINCRBY", "pos:usage:alice", "circuit_seconds", "42")
    r = relay("usage", "--config", cfg, "--account", "alice")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].split() == ["alice", "123456", "42"], r.stdout
    r = relay("usage", "--config", cfg, "--account", "carol")
    assert r.returncode != 0 and "no account" in r.stderr


# ---- the running relay's services ----

@test
def services_against_real_redis():
    redis = Redis()
    cfg = make_config(redis, {"conn_rate_per_addr": 2, "conn_burst_per_addr": 2,
                              "conn_rate_per_token": 1000})
    ok, _ = add_token(cfg, "--account", "alice", "--bytes-per-sec", "1000000",
                      "--burst", "2000000")
    capped, _ = add_token(cfg, "--account", "alice", "--max-conns", "1")
    expired, _ = add_token(cfg, "--account", "alice", "--expires", "1")
    revoked, _ = add_token(cfg, "--account", "alice")
    to_revoke, _ = add_token(cfg, "--account", "mallory")
    rate_tok, _ = add_token(cfg, "--account", "hasty")
    assert relay("token", "revoke", "--config", cfg, revoked).returncode == 0
    time.sleep(1.2)  # let `expired` expire
    env = {"TOKEN_OK": ok, "TOKEN_CAPPED": capped, "TOKEN_EXPIRED": expired,
           "TOKEN_REVOKED": revoked, "TOKEN_TO_REVOKE": to_revoke, "TOKEN_RATE": rate_tok,
           "POS_RELAY": RELAY,
           "REDIS_PID": str(redis.proc.pid), "POS_LOG": "debug"}
    p = Proc([binary("tests/relay/test_relay_services"), "checks", cfg], env=env)
    try:
        rc = p.wait(60)
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    out = p.output()
    print(out[-3000:])
    assert rc == 0, out
    assert "0 failed" in out
    for t in (ok, capped, expired, revoked, to_revoke, rate_tok):
        assert t not in out, "a token was logged"
        assert t not in redis.dump_all()
    assert SECRET not in out


@test
def services_recover_when_redis_comes_up():
    port = free_port()
    d = tmpdir()
    cfg = make_config(extra={"redis": f"redis://127.0.0.1:{port}"})
    token_file = os.path.join(d, "token")
    p = Proc([binary("tests/relay/test_relay_services"), "down", cfg],
             env={"TOKEN_FILE": token_file})
    wait_until(lambda: "refused while down" in p.output() or not p.alive(), 10,
               what="a refusal while Redis is down")
    redis = Redis(port=port)
    token, _ = add_token(cfg, "--account", "late")
    with open(token_file + ".tmp", "w") as f:
        f.write(token + "\n")
    os.rename(token_file + ".tmp", token_file)
    rc = p.wait(30)
    out = p.output()
    assert rc == 0 and "0 failed" in out, out
    assert token not in out and token not in redis.dump_all()


@test
def services_survive_a_redis_restart():
    redis = Redis()
    cfg = make_config(redis)
    token, _ = add_token(cfg, "--account", "alice")
    p = Proc([binary("tests/relay/test_relay_services"), "restart", cfg],
             env={"TOKEN_OK": token})
    wait_until(lambda: "ready" in p.output() or not p.alive(), 10, what="services ready")
    port = redis.port
    redis.kill()
    wait_until(lambda: "saw it down" in p.output() or not p.alive(), 15, what="Redis seen down")
    Redis(port=port)
    rc = p.wait(30)
    out = p.output()
    assert rc == 0 and "0 failed" in out, out


@test
def registration_with_discovery_api():
    redis = Redis()
    d = tmpdir()
    secret_file = os.path.join(d, "secret")
    with open(secret_file, "w") as f:
        f.write(SECRET + "\n")
    os.chmod(secret_file, 0o600)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    cfg = make_config(redis, {"api_url": api})
    with open(cfg) as f:
        relay_id = json.load(f)["id"]

    def discovery():
        p = Proc([binary("discovery-api/pos-discovery"), "--listen", f"127.0.0.1:{port}",
                  "--redis", redis.url, "--secret-file", secret_file, "--ttl", "3"])
        wait_until(lambda: http("GET", api + "/healthz")[0] == 200, 10, what="pos-discovery")
        return p

    def listed():
        st, _, body = http("GET", api + "/api/p2p/relays")
        return st == 200 and any(e.get("id") == relay_id for e in json.loads(body))

    # The relay starts while the API is down: it keeps retrying with backoff.
    svc = Proc([binary("tests/relay/test_relay_services"), "serve", cfg],
               env={"POS_LOG": "debug"})
    time.sleep(1.0)
    assert svc.alive()
    disc = discovery()
    wait_until(listed, 6, what="the relay in the list once the API is up")
    entry = [e for e in json.loads(http("GET", api + "/api/p2p/relays")[2])
             if e["id"] == relay_id][0]
    assert entry["addrs"] == ["127.0.0.1:7373"] and len(entry["peer_id"]) == 43

    # The API answers {"ttl": 3}: the relay refreshes every second, so it never
    # drops out of the list while alive (register_interval alone would be 10 s).
    end = time.monotonic() + 5
    while time.monotonic() < end:
        assert listed(), "the relay flickered out of the list"
        time.sleep(0.2)

    # The API and its data go away and come back: the relay registers again by itself.
    disc.stop()
    redis.cli("FLUSHALL")
    disc = discovery()
    wait_until(listed, 6, what="re-registration after the API came back")

    # SIGTERM: deregistered at once.
    svc.signal(signal.SIGTERM)
    assert svc.wait(10) == 0
    wait_until(lambda: not listed(), 1, what="the entry to disappear")
    out = svc.output()
    assert SECRET not in out and SECRET not in disc.output()
    assert "registrations ok" in out and "deregistered" in out


@test
def services_share_bandwidth_and_count_usage():
    """Two relays on one Redis lease one token's bandwidth (through the real
    forwarder) and stay within 10% of its limit together; an unlimited token
    is never throttled; usage reaches Redis within 10 s and on shutdown, and
    `pos-relay usage` shows it; a limited token fails closed while Redis hangs."""
    redis = Redis()
    cfg = make_config(redis, {"conn_rate_per_token": 1000})
    limit = 2000000
    limited, _ = add_token(cfg, "--account", "metered", "--bytes-per-sec", str(limit),
                           "--burst", "200000")
    stall, _ = add_token(cfg, "--account", "stalled", "--bytes-per-sec", str(limit),
                         "--burst", "200000")
    free, _ = add_token(cfg, "--account", "free")
    env = {"LIMIT": str(limit), "TOKEN_LIMITED": limited, "TOKEN_STALL": stall,
           "TOKEN_FREE": free, "REDIS_PID": str(redis.proc.pid)}
    p = Proc([binary("tests/relay/test_relay_services"), "bandwidth", cfg], env=env)
    try:
        rc = p.wait(60)
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    out = p.output()
    print(out[-3000:])
    assert rc == 0 and "0 failed" in out, out
    # What the relays wrote is what the operator command shows.
    r = relay("usage", "--config", cfg, "--account", "metered")
    assert r.returncode == 0, r.stderr
    row = r.stdout.splitlines()[1].split()
    assert row[0] == "metered" and int(row[1]) > limit and int(row[2]) > 0, r.stdout
    assert int(row[1]) == int(redis.cli("HGET", "pos:usage:metered", "bytes_relayed").strip())
    for t in (limited, stall, free):
        assert t not in out and t not in redis.dump_all()


if __name__ == "__main__":
    run()
