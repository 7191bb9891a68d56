"""Integration-test harness: real processes on loopback, cleaned up even on failure.

Every test file is a script run by `meson test`. It registers test functions
with @test, then calls run(). Each test gets fresh processes; whatever a test
starts through the harness is stopped when the test ends, passes or fails, and
when the script is interrupted. The closing line is "N passed, N failed".

Paths of the built programs come from POS_BUILD_DIR (set by meson).
"""
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

BUILD = os.environ.get("POS_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "build"))
SOURCE = os.environ.get("POS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), ".."))

_tests = []
_live = []  # processes to stop at the end of the current test
_tmpdirs = []


def binary(rel):
    """Absolute path of a built program, e.g. binary('discovery-api/pos-discovery')."""
    path = os.path.join(BUILD, rel)
    if not os.path.exists(path):
        raise RuntimeError(f"{path} is not built")
    return path


class Skip(Exception):
    """Raise Skip("why") when the machine cannot run a test (e.g. no rights for namespaces).
    A skipped test is reported as skipped, never as passed; a script whose tests were all
    skipped exits 77, which meson reports as SKIP."""


def test(fn):
    _tests.append(fn)
    return fn


def tmpdir():
    d = tempfile.mkdtemp(prefix="pos-test-")
    _tmpdirs.append(d)
    return d


def free_port(kind=socket.SOCK_STREAM, family=socket.AF_INET):
    """A port free for both TCP and UDP on loopback at the time of the call."""
    for _ in range(100):
        s = socket.socket(family, kind)
        s.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
        port = s.getsockname()[1]
        s.close()
        other = socket.socket(family, socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM)
        try:
            other.bind(("127.0.0.1" if family == socket.AF_INET else "::1", port))
            return port
        except OSError:
            continue
        finally:
            other.close()
    raise RuntimeError("no free port")


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a true value; return it, or raise after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # the condition may raise while a server starts
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}" +
                                 (f" (last error: {last_exc})" if last_exc else ""))
        time.sleep(interval)


class Proc:
    """A started program whose output goes to a log file; stopped at the end of the test."""

    def __init__(self, argv, env=None, name=None, stdin=None, cwd=None):
        self.name = name or os.path.basename(argv[0])
        d = tmpdir()
        self.log_path = os.path.join(d, self.name + ".log")
        self.log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                  env=full_env, cwd=cwd)
        if stdin is not None:
            self.p.stdin.write(stdin.encode() if isinstance(stdin, str) else stdin)
            self.p.stdin.close()
        _live.append(self)

    @property
    def pid(self):
        return self.p.pid

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def wait(self, timeout):
        return self.p.wait(timeout=timeout)

    def stop(self, sig=None, timeout=10):
        """Stop the process; return its exit status. A process that ignores SIGTERM is killed."""
        # (the default cannot be signal.SIGTERM: in this class body `signal` is the method above)
        sig = signal.SIGTERM if sig is None else sig
        if self.alive():
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        return self.p.returncode

    def sanitizer_report(self):
        out = self.output()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in out:
                return out
        return None


class Redis:
    """A real redis-server on a free loopback port, with no persistence."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.dir = tmpdir()
        self.start()

    def start(self):
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = Proc([exe, "--port", str(self.port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", self.dir,
                          "--protected-mode", "yes"], name=f"redis-{self.port}")
        wait_until(self.ping, 10, what="redis-server to answer")

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def cli(self, *args):
        exe = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        r = subprocess.run([exe, "-p", str(self.port), "--raw", *args], capture_output=True,
                           text=True, timeout=10)
        return r.stdout.strip()

    def ping(self):
        return self.cli("PING") == "PONG"

    def kill(self):
        self.proc.stop(signal.SIGKILL)

    def dump_all(self):
        """Every key and value in the server, as text (for 'no secret in Redis' checks)."""
        out = []
        for key in self.cli("--scan").splitlines():
            t = self.cli("TYPE", key)
            if t == "string":
                out.append(key + " " + self.cli("GET", key))
            elif t == "hash":
                out.append(key + " " + self.cli("HGETALL", key))
            elif t == "zset":
                out.append(key + " " + self.cli("ZRANGE", key, "0", "-1", "WITHSCORES"))
            elif t == "set":
                out.append(key + " " + self.cli("SMEMBERS", key))
            elif t == "list":
                out.append(key + " " + self.cli("LRANGE", key, "0", "-1"))
            else:
                out.append(key)
        return "\n".join(out)


def http(method, url, body=None, headers=None, timeout=5):
    """One HTTP request; returns (status, headers dict with lower-case names, body bytes)."""
    data = body
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
    elif isinstance(body, str):
        data = body.encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def stop_all():
    failures = []
    while _live:
        p = _live.pop()
        p.stop()
        rep = p.sanitizer_report()
        if rep:
            failures.append(f"sanitizer report from {p.name}:\n{rep[-4000:]}")
    return failures


def _cleanup():
    stop_all()
    for d in _tmpdirs:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup)


def _on_signal(sig, frame):
    _cleanup()
    sys.exit(128 + sig)


signal.signal(signal.SIGTERM, _on_signal)


def run(name=None):
    """Run every registered test (or those named in argv); print N passed, N failed."""
    name = name or os.path.basename(sys.argv[0])
    only = set(sys.argv[1:])
    passed = failed = skipped = 0
    for fn in _tests:
        if only and fn.__name__ not in only:
            continue
        t0 = time.monotonic()
        err = None
        skip = None
        try:
            fn()
        except Skip as e:
            skip = str(e)
        except Exception:
            err = traceback.format_exc()
        problems = stop_all()
        if problems and not err:
            err = "\n".join(problems)
        dt = time.monotonic() - t0
        if skip is not None and not err:
            skipped += 1
            print(f"skip {fn.__name__}: {skip}", flush=True)
        elif err:
            failed += 1
            print(f"FAIL {fn.__name__} ({dt:.1f}s)\n{err}", flush=True)
        else:
            passed += 1
            print(f"ok   {fn.__name__} ({dt:.1f}s)", flush=True)
    print(f"{name}: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    if failed:
        sys.exit(1)
    sys.exit(77 if passed == 0 else 0)
