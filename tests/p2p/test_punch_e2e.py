"""Hole punching end to end in the client library: a real pos-relay and
redis-server on loopback, and tests/p2p/punch_pair (two endpoints of the
library in one process, each on its own UDP socket, A listening at home on
the relay, B dialing A through it and writing a checked byte stream).

- A relayed session goes direct: both sides report relayed -> direct, every
  byte arrives intact, and the relay forwarded only a small part of the
  transfer (its forwarded-bytes counter stops growing once direct).
- With punching off the session stays relayed and the relay carries it all.
- A relay with `punch: false` (no PUNCH_START) keeps working: relayed, intact.
- The direct path blackholed mid-transfer (punch_pair drops every datagram
  not addressed to the relay, both ways): the dialer falls back to the relay,
  nothing is lost, and after the path is restored a new attempt takes the
  session direct again: the first PUNCH_REQUEST after a fallback comes after
  fallback_retry_ms (1 s here), not the retry interval (left at 60 s).
- A direct session idle longer than the relay's idle timeout (2 s here)
  keeps its circuit (the relay's /circuits lists it during the pause: the
  control connection's keep-alives hold it) and falls back over it when the
  direct path dies afterwards.
- Extra candidates (pos_p2p_session_add_candidates): with A's direct address
  (the relay's candidate) unreachable from B and 192.0.2.1:port reaching A
  instead (a NAT in punch_pair's I/O), the session given that address goes
  direct through it; without it the session stays relayed.
- Both NATs vary by destination (each side's mapping set, told to the relay
  in HELLO, passed on in PUNCH_START): after the first attempt fails
  (--fake-a: no direct path) the dialer asks for no more, says so in its path
  info and counts it; with only one side's mapping varying it keeps asking.
- B's NAT gives it a new port mid-transfer (punch_pair's B sends from a new
  socket): the relay sees its control connection move and starts a new
  attempt on the circuit (PUNCH_START, attempt 2, with the retry interval at
  60 s), counted in pos_relay_punch_moves_total; the transfer is intact.
- A relayed transfer (punching off) across B's NAT rebinding, with the
  relay's default keep-alive (10 s): the relay drops B's frames from its new
  port until it sees B's control connection there; B's nudge after 1 s of
  relayed silence makes the control connection send at once, so A's wait
  for data stays under 3 s (it was about 10 s: "stalls=1").
- The circuit closed while direct (B closes its relay connection, so the
  relay sends CIRCUIT_CLOSED to A): both sides live on direct, every byte
  arrives, and the path info says the relayed path is gone.
"""
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import Proc, Redis, binary, http, run, test, tmpdir, wait_until  # noqa: E402
from suite import Relay  # noqa: E402

SECRET = "p2p-secret-punch-tests-abcdef0123456789"
PAIR = binary("tests/p2p/punch_pair")


def relay_with(extra=None):
    redis = Redis()
    relay = Relay(redis, None, SECRET, extra=extra).start()
    return relay, relay.token()


def metric(relay, name):
    status, _, body = http("GET", relay.http + "/metrics")
    assert status == 200, body
    m = re.search(r"^" + re.escape(name) + r" (\d+)", body.decode(), re.M)
    assert m, f"no {name} in /metrics"
    return int(m.group(1))


def forwarded_bytes(relay):
    time.sleep(1.2)  # /metrics is refreshed twice a second
    return metric(relay, "pos_relay_forwarded_bytes_total")


def circuit_bytes(relay, circuit_id):
    """The bytes the relay forwarded on the circuit whose asking side has |circuit_id|
    (/circuits is refreshed with /metrics: call after forwarded_bytes, which waits)."""
    status, _, body = http("GET", relay.http + "/circuits")
    assert status == 200, body
    for c in json.loads(body)["circuits"]:
        if c["ids"][0] == circuit_id:
            return sum(c["bytes"])
    return 0


def pair(relay, token, mb, *opts, timeout=120):
    r = subprocess.run([PAIR, tmpdir(), f"127.0.0.1:{relay.port}", relay.peer_id, token,
                        str(mb), *opts], capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    if os.environ.get("PUNCH_VERBOSE"):
        print(out)
    check_clean(out)
    return r.returncode, out


def check_clean(out):
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in out, "sanitizer report:\n" + out[-4000:]


def info(out, side):
    m = re.search(rf"^info {side} (.*)$", out, re.M)
    assert m, out
    return dict(kv.split("=", 1) for kv in m.group(1).split())


def paths(out, side):
    return re.findall(rf"^path {side} (\w+->\w+)", out, re.M)


@test
def relayed_session_goes_direct():
    relay, token = relay_with()
    before = forwarded_bytes(relay)
    # 20 MB at 40 Mbit/s: about 4 s, long enough to watch the relay's counters once direct
    p = Proc([PAIR, tmpdir(), f"127.0.0.1:{relay.port}", relay.peer_id, token, "20",
              "--rate-kbps", "40000"], name="punch_pair")
    wait_until(lambda: "path B relayed->direct" in p.output() or not p.alive(), 10,
               what="the session to go direct")
    m = re.search(r"^circuit B=(\d+)", p.output(), re.M)
    assert m, p.output()
    circuit = int(m.group(1))
    at_direct = forwarded_bytes(relay)
    circuit_at_direct = circuit_bytes(relay, circuit)
    assert p.alive(), "the transfer ended before the relay's counters were read"
    rc = p.wait(60)
    out = p.output()
    check_clean(out)
    assert rc == 0, out
    assert "relay versions A=4 B=4" in out, out
    assert "result ok=1 bytes=20000000 bad=0" in out, out
    assert paths(out, "B")[:1] == ["relayed->direct"], out
    assert paths(out, "A")[:1] == ["relayed->direct"], out
    b = info(out, "B")
    assert b["path"] == "direct" and b["upgraded"] == "1", out
    assert int(b["bytes_direct"]) > 15000000, out
    assert 0 <= int(b["upgraded_after_ms"]) < 3000, out
    after = forwarded_bytes(relay)
    circuit_after = circuit_bytes(relay, circuit)
    # GET /circuits: the session's own circuit carried its start, then stopped growing
    assert 0 < circuit_at_direct < 5000000, out
    assert circuit_after - circuit_at_direct < 50000, f"{circuit_at_direct} -> {circuit_after}"
    # the relay carried the start of the session, then nothing of the transfer
    assert at_direct > before, out
    assert after - at_direct < 50000, f"the relay forwarded {after - at_direct} B once direct"
    assert after - before < 5000000, out
    assert metric(relay, "pos_relay_punches_total") >= 1
    assert "stats B attempts=1 successes=1" in out, out
    assert "stats A attempts=1 successes=1" in out, out


@test
def punching_off_stays_relayed():
    relay, token = relay_with()
    before = forwarded_bytes(relay)
    rc, out = pair(relay, token, 5, "--no-punch")
    assert rc == 0, out
    assert "result ok=1 bytes=5000000 bad=0" in out, out
    assert paths(out, "B") == [] and paths(out, "A") == [], out
    b = info(out, "B")
    assert b["path"] == "relayed" and b["bytes_direct"] == "0", out
    assert forwarded_bytes(relay) - before > 5000000


@test
def relay_without_punching_keeps_working():
    relay, token = relay_with({"punch": False})
    rc, out = pair(relay, token, 5)
    assert rc == 0, out
    assert "result ok=1 bytes=5000000 bad=0" in out, out
    assert paths(out, "B") == [], out
    assert info(out, "B")["path"] == "relayed", out
    assert metric(relay, "pos_relay_punches_total") == 0


@test
def blackholed_direct_path_falls_back_and_comes_back():
    relay, token = relay_with({"punch_min_interval_ms": 100})
    # 32 MB at 4 MB/s: 8 s; the blackout from 4 MB on (about 1 s) lasts 2.5 s
    # the retry interval stays 60 s: only the sooner first retry after a fallback comes back
    rc, out = pair(relay, token, 32, "--rate-kbps", "32000", "--fallback-retry-ms", "1000",
                   "--block-at-mb", "4", "--unblock-after-ms", "2500")
    assert rc == 0, out
    assert "blocked at_ms=" in out and "unblocked at_ms=" in out, out
    assert "result ok=1 bytes=32000000 bad=0" in out, out
    moves = paths(out, "B")
    assert moves[:3] == ["relayed->direct", "direct->relayed", "relayed->direct"], out
    blocked = int(re.search(r"^blocked at_ms=(\d+)", out, re.M).group(1))
    back = [int(x) for x in re.findall(r"^path B direct->relayed .* at_ms=(\d+)", out, re.M)]
    assert back and back[0] - blocked < 3000, out
    b = info(out, "B")
    assert int(b["fallbacks"]) >= 1 and b["path"] == "direct", out
    assert int(b["bytes_relayed"]) > 500000, out  # the blackout went through the relay


@test
def direct_idle_session_keeps_its_circuit():
    relay, token = relay_with({"idle_timeout": 2, "punch_min_interval_ms": 100})
    # 8 MB at 4 MB/s; direct at 1 MB B pauses 6 s (over twice the idle timeout), then at 2 MB
    # the direct path dies for good: the rest must go over the circuit
    p = Proc([PAIR, tmpdir(), f"127.0.0.1:{relay.port}", relay.peer_id, token, "8",
              "--rate-kbps", "32000", "--pause-at-mb", "1", "--pause-ms", "6000",
              "--block-at-mb", "2", "--unblock-after-ms", "600000"], name="punch_pair")
    wait_until(lambda: "paused at_ms=" in p.output() or not p.alive(), 15,
               what="the direct session to pause")
    circuit = int(re.search(r"^circuit B=(\d+)", p.output(), re.M).group(1))
    time.sleep(4)  # idle twice the relay's idle timeout (the snapshot is at most 0.5 s old)
    assert "resumed at_ms=" not in p.output(), p.output()
    status, _, body = http("GET", relay.http + "/circuits")
    assert status == 200, body
    assert any(circuit in c["ids"] for c in json.loads(body)["circuits"]), body
    rc = p.wait(60)
    out = p.output()
    check_clean(out)
    assert rc == 0, out
    assert "result ok=1 bytes=8000000 bad=0" in out, out
    assert paths(out, "B")[:2] == ["relayed->direct", "direct->relayed"], out
    b = info(out, "B")
    assert b["relay_lost"] == "0" and b["path"] == "relayed", out
    assert int(b["bytes_relayed"]) > 5000000, out  # after the blackout: over the circuit


@test
def direct_session_survives_its_circuit():
    relay, token = relay_with()
    # 16 MB at 4 MB/s: 4 s; B drops its relay connection at 4 MB (direct by then)
    rc, out = pair(relay, token, 16, "--rate-kbps", "32000", "--drop-relay-at-mb", "4")
    assert rc == 0, out
    assert "relay dropped at_ms=" in out, out
    assert "result ok=1 bytes=16000000 bad=0" in out, out
    assert not re.search(r"^closed [AB] error=[1-9-]", out.split("result ok=")[0], re.M), out
    for side in ("A", "B"):
        i = info(out, side)
        assert i["path"] == "direct" and i["relay_lost"] == "1", out
        assert paths(out, side) == ["relayed->direct"], out
    assert int(info(out, "B")["bytes_direct"]) > 12000000, out


@test
def extra_candidate_goes_direct_when_the_relays_are_useless():
    relay, token = relay_with()
    # 4 MB at 2 MB/s: 2 s each
    rc, out = pair(relay, token, 4, "--rate-kbps", "16000", "--fake-a", "--add-candidate")
    assert rc == 0, out
    assert re.search(r"^add_candidates 192\.0\.2\.1:\d+ rv=0$", out, re.M), out
    refused = re.findall(r"^add_candidates (?:bad .*|null|nine|no-session) rv=(-?\d+)$", out, re.M)
    assert refused == ["-1"] * 8, out  # POS_P2P_ERR_INVALID_ARGUMENT, each
    assert "result ok=1 bytes=4000000 bad=0" in out, out
    assert re.search(r"^path B relayed->direct remote=192\.0\.2\.1:", out, re.M), out
    b = info(out, "B")
    assert b["path"] == "direct" and int(b["bytes_direct"]) > 3000000, out
    # the control: the same NAT without the extra candidate stays relayed
    rc, out = pair(relay, token, 4, "--rate-kbps", "16000", "--fake-a")
    assert rc == 0, out
    assert "result ok=1 bytes=4000000 bad=0" in out, out
    assert paths(out, "B") == [] and info(out, "B")["path"] == "relayed", out


@test
def both_nats_varying_stop_asking():
    relay, token = relay_with({"punch_min_interval_ms": 100})
    # 3 MB at 1 MB/s: 3 s relayed; the first attempt ends after its 0.5 s window, retry 1 s
    args = ("--rate-kbps", "8000", "--fake-a", "--retry-ms", "1000", "--window-ms", "500")
    rc, out = pair(relay, token, 3, *args, "--nat-a", "2", "--nat-b", "2")
    assert rc == 0, out
    assert "result ok=1 bytes=3000000 bad=0" in out, out
    b = info(out, "B")
    assert b["path"] == "relayed" and b["attempts"] == "1" and b["punch_stopped"] == "1", out
    assert re.search(r"^stats B .* requests=0 .* nat_stops=1$", out, re.M), out
    assert metric(relay, "pos_relay_punches_total") == 1
    # one side endpoint-independent: punching could work, the requests go on
    rc, out = pair(relay, token, 3, *args, "--nat-a", "1", "--nat-b", "2")
    assert rc == 0, out
    b = info(out, "B")
    assert b["path"] == "relayed" and int(b["attempts"]) >= 2 and b["punch_stopped"] == "0", out
    assert re.search(r"^stats B .* nat_stops=0$", out, re.M), out


@test
def address_change_starts_a_new_attempt():
    # idle_timeout 2: the clients' control keep-alives every second carry B's new port
    relay, token = relay_with({"punch_min_interval_ms": 100, "idle_timeout": 2})
    # 5 MB at 1 MB/s, relayed (--fake-a); B rebinds at 2 MB, after attempt 1 began
    rc, out = pair(relay, token, 5, "--rate-kbps", "8000", "--fake-a", "--rebind-b-at-mb", "2")
    assert rc == 0, out
    assert "rebound B at_ms=" in out and "result ok=1 bytes=5000000 bad=0" in out, out
    b = info(out, "B")
    assert b["path"] == "relayed" and b["attempts"] == "2", out  # no retry within 60 s
    assert re.search(r"^stats B .* requests=0 ", out, re.M), out
    assert int(info(out, "A")["attempts"]) == 2, out
    assert metric(relay, 'pos_relay_punch_moves_total{result="started"}') == 1


@test
def relayed_transfer_rides_out_a_rebinding():
    # the relay's own idle timeout (keep-alive every 10 s): only the nudge makes B's control
    # connection tell the relay its new port before then, and the relay drops B's frames from
    # that port until it knows it
    relay, token = relay_with()
    dropped = metric(relay, 'pos_relay_frames_dropped_total{reason="wrong_source"}')
    # 4 MB at 1 MB/s, relayed (no punching); B rebinds at 1 MB
    rc, out = pair(relay, token, 4, "--rate-kbps", "8000", "--no-punch", "--rebind-b-at-mb", "1")
    assert rc == 0, out
    assert "rebound B at_ms=" in out and "result ok=1 bytes=4000000 bad=0" in out, out
    assert info(out, "B")["path"] == "relayed", out
    # the relay refused some of B's frames from its new port, then followed it: no stall
    assert metric(relay, 'pos_relay_frames_dropped_total{reason="wrong_source"}') > dropped
    assert re.search(r"^arrivals A max_gap_ms=\d+ stalls=0$", out, re.M), out


if __name__ == "__main__":
    run()
