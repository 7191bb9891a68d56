# Sourced by the benchmark scripts (after they cd to the source root).
# free_ports N: N ports on 127.0.0.1 free for both UDP and TCP, on one line.
free_ports() {
  /usr/bin/python3 - "$1" <<'PY'
import socket, sys
socks = []
while len(socks) < 2 * int(sys.argv[1]):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", u.getsockname()[1])); socks += [u, t]
    except OSError:
        u.close(); t.close()
print(*[s.getsockname()[1] for s in socks[::2]])
PY
}
