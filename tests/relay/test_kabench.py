"""pos-kabench, the bare keep-alive floor bench-idle.sh compares the relay
with: over real loopback UDP, clients' datagrams reach the server, one in K
is echoed, and the CPU figure is a real measurement; bad arguments are
refused."""
import json
import subprocess

from harness import binary, run, test


def kabench(*args):
    out = subprocess.run([binary("loadtest/pos-kabench"), "--json", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@test
def receives_the_clients_datagrams_and_acks_one_in_k():
    r = kabench("--clients", "200", "--rate", "1000", "--ack-every", "4", "--duration", "1")
    # 1,000 a second for 1 s, from 200 sockets; a loaded machine may lose a few to timing
    assert 500 <= r["datagrams"] <= 1200, r
    assert abs(r["acks"] - r["datagrams"] // 4) <= 1, r
    assert r["cpu_s"] > 0 and r["us_per_datagram"] > 0, r


@test
def no_acks_when_k_is_zero():
    r = kabench("--clients", "50", "--rate", "500", "--ack-every", "0", "--duration", "1")
    assert r["datagrams"] > 0 and r["acks"] == 0, r


@test
def rejects_bad_arguments():
    for args in (["--clients", "0"], ["--rate", "x"], ["--size", "2000"], ["extra"]):
        out = subprocess.run([binary("loadtest/pos-kabench"), *args], capture_output=True,
                             text=True, timeout=10)
        assert out.returncode == 2 and "pos-kabench:" in out.stderr, (args, out)
    out = subprocess.run([binary("loadtest/pos-kabench"), "--help"], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0 and "usage: pos-kabench" in out.stdout, out


run()
