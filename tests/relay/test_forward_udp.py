"""The relay's forwarding path over real UDP sockets on loopback: pos-fwdbench
runs relay_forward_batch between recvmmsg and sendmmsg, with a generator
sending DATA frames on many circuits and a sink on the circuits' far side.
Every frame must match its circuit (nothing dropped) and what the forwarder
sent must arrive at the sink, with and without UDP GSO."""
import json
import subprocess

from harness import binary, run, test


def fwdbench(*args):
    out = subprocess.run([binary("loadtest/pos-fwdbench"), "--json", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = {}
    for line in out.stdout.splitlines():
        result.update(json.loads(line))
    return result


def check(r):
    assert r["forwarded"] > 0, r
    assert r["dropped"] == 0, r  # every frame came from its owner with a known circuit id
    assert 0 < r["received"] <= r["forwarded"] <= r["sent"], r


@test
def forwards_frames_over_udp():
    check(fwdbench("--circuits", "300", "--size", "1200", "--duration", "1"))


@test
def forwards_frames_with_gso():
    check(fwdbench("--circuits", "3", "--size", "1000", "--duration", "1", "--gso", "64"))


@test
def forwards_every_frame_in_memory():
    r = fwdbench("--no-io", "--circuits", "1000", "--duration", "1")
    assert r["packets"] > 0 and r["forwarded"] == r["packets"], r


@test
def rejects_bad_arguments():
    for args in (["--size", "5"], ["--circuits", "0"], ["--gso", "65"], ["extra"]):
        out = subprocess.run([binary("loadtest/pos-fwdbench"), *args], capture_output=True,
                             text=True, timeout=10)
        assert out.returncode == 2 and "pos-fwdbench:" in out.stderr, (args, out)


run()
