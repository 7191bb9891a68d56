"""pos-tlsfloor, the TLS-only floor bench-relay-control.sh divides the relay's
CPU per connection by: real GnuTLS sessions with the relay's settings over
in-memory buffers; it exits 0 only when every full handshake was full and
every returning client was resumed (both keys checked), prints both figures,
and refuses bad arguments."""
import re
import subprocess

from harness import binary, run, test


@test
def full_and_resumed_handshakes_measured():
    out = subprocess.run([binary("loadtest/pos-tlsfloor"), "5"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    m = re.fullmatch(r"gnutls-server full ([0-9.]+) resumed ([0-9.]+)\n", out.stdout)
    assert m, out.stdout
    assert float(m.group(1)) > 0 and float(m.group(2)) > 0, out.stdout


@test
def rejects_bad_arguments():
    for args in (["0"], ["x"], ["5x"], ["100001"], ["1", "2"]):
        out = subprocess.run([binary("loadtest/pos-tlsfloor"), *args], capture_output=True,
                             text=True, timeout=10)
        assert out.returncode == 2 and "pos-tlsfloor:" in out.stderr and not out.stdout, (args, out)
    out = subprocess.run([binary("loadtest/pos-tlsfloor"), "--help"], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0 and "usage: pos-tlsfloor" in out.stdout, out


run()
