#!/usr/bin/env bash
# Benchmark of the relay's control plane (a script, not a test):
#   1. authenticated connections per second (QUIC + mutual TLS + HELLO/WELCOME
#      with a token checked in Redis), driven by `pos-loadtest control`;
#   2. relay memory per idle connected client: RSS with N idle clients minus
#      RSS with none;
#   3. relay CPU per connection for full handshakes (the run above) and for
#      returning clients that resume TLS 1.3 (pos-loadtest control --resume),
#      as ratios to the crypto floor of one mutually authenticated handshake:
#      189 us with GnuTLS's nettle, 125 us with libsodium (docs/perf-relay-control.md).
# Builds a release tree in build-bench (no sanitizers) unless BUILD is set.
# Everything runs on loopback; every process started here is stopped on exit.
# usage: loadtest/bench-relay-control.sh [CONNS (default 5000)] [HOLD_SECONDS (default 15)]
set -euo pipefail
conns=${1:-5000}
hold=${2:-15}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build-bench}
work=$(mktemp -d /tmp/pos-bench-control-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

if [ ! -d "$build" ]; then
    meson setup "$build" "$root" -Dbuildtype=release >/dev/null
fi
if ! ninja -C "$build" relay/pos-relay loadtest/pos-loadtest >"$work/build.log" 2>&1; then
    tail -20 "$work/build.log"
    echo "bench-relay-control: the build failed" >&2
    exit 1
fi

free_port() { /usr/bin/python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

port=$(free_port)
cfg=$work/relay.json
echo "bench-secret" | "$build/relay/pos-relay" init --config "$cfg" --port "$port" \
    --redis "redis://127.0.0.1:$redis_port" >"$work/init.out"
peer_id=$(tail -1 "$work/init.out")
/usr/bin/python3 - "$cfg" "$port" <<'PY'
import json, sys
path, port = sys.argv[1], int(sys.argv[2])
c = json.load(open(path))
c.update({"listen": [f"127.0.0.1:{port}"], "http_listen": f"127.0.0.1:{port + 1}",
          "conn_rate_per_addr": 0, "conn_rate_per_token": 0, "idle_timeout": 60,
          "max_conns_per_token": 0,  # one token for every connection
          "max_pending_per_addr": 65535})
json.dump(c, open(path, "w"))
PY
chmod 600 "$cfg"
token=$("$build/relay/pos-relay" token add --config "$cfg" --account bench | tail -1)

POS_LOG=warn "$build/relay/pos-relay" run --config "$cfg" >"$work/relay.log" 2>&1 &
relay_pid=$!
pids+=($relay_pid)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$((port + 1))/healthz" >/dev/null && break; sleep 0.1; done

lt() { POS_TOKEN=$token "$build/loadtest/pos-loadtest" control --addr "127.0.0.1:$port" \
    --peer-id "$peer_id" "$@"; }

# Warm-up (allocator arenas, token cache), then the baseline with no client.
lt --conns 200 >/dev/null
sleep 1
rss0=$(rss_kib $relay_pid)
heap0=$(curl -s "http://127.0.0.1:$((port + 1))/metrics" | awk '$1 == "pos_relay_heap_bytes" {print $2}')

ticks0=$(cpu_ticks $relay_pid)
lt --conns "$conns" --concurrency 256 --hold "$hold" >"$work/load.out" 2>"$work/load.err" &
lt_pid=$!
pids+=($lt_pid)
for _ in $(seq 600); do grep -q holding "$work/load.err" && break; sleep 0.2; done
ticks1=$(cpu_ticks $relay_pid)
sleep 2
rss1=$(rss_kib $relay_pid)
sleep 1 # /metrics is a snapshot refreshed twice a second
connected=$(curl -s "http://127.0.0.1:$((port + 1))/metrics" | awk '$1 == "pos_relay_connections" {print $2}')
heap1=$(curl -s "http://127.0.0.1:$((port + 1))/metrics" | awk '$1 == "pos_relay_heap_bytes" {print $2}')
wait $lt_pid || true
relay_cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$relay_pid/stat")

echo "== pos-loadtest control, $conns connections to one relay on loopback =="
cat "$work/load.out"
echo "== relay memory =="
echo "RSS with no client:        $rss0 KiB"
echo "RSS with $connected idle clients: $rss1 KiB"
if [ "${connected:-0}" -gt 0 ]; then
    echo "per idle client:           $(( (rss1 - rss0) * 1024 / connected )) bytes of RSS," \
        "$(( (heap1 - heap0) / connected )) bytes of heap in use"
fi
hz=$(getconf CLK_TCK)
echo "relay CPU per authenticated connection: $(( (ticks1 - ticks0) * 1000000 / hz / conns )) us" \
    "(so about $(( conns * hz / ((ticks1 - ticks0) > 0 ? (ticks1 - ticks0) : 1) )) connections/s per core)"
echo "relay CPU time for the whole run: ${relay_cpu} s (user+system)"

# Returning clients: each of the 4 client sockets keeps the relay's ticket, so
# all but their first connection resume. CPU counted until every one is in.
ticks2=$(cpu_ticks $relay_pid)
lt --conns "$conns" --concurrency 256 --hold 1 --resume >"$work/resume.out" 2>"$work/resume.err" &
lt_pid=$!
pids+=($lt_pid)
for _ in $(seq 600); do grep -q holding "$work/resume.err" && break; sleep 0.2; done
ticks3=$(cpu_ticks $relay_pid)
wait $lt_pid || true
sleep 1
resumed=$(curl -s "http://127.0.0.1:$((port + 1))/metrics" |
    awk '$1 == "pos_relay_handshakes_resumed_total" {print $2}')
echo "== pos-loadtest control --resume, $conns returning connections =="
cat "$work/resume.out"
full_us=$(( (ticks1 - ticks0) * 1000000 / hz / conns ))
res_us=$(( (ticks3 - ticks2) * 1000000 / hz / conns ))
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "== relay CPU per connection (crypto floor: 189 us nettle, 125 us libsodium) =="
echo "full handshake:    $full_us us = $(ratio "$full_us" 189) x nettle floor," \
    "$(ratio "$full_us" 125) x libsodium floor"
echo "resumed handshake: $res_us us = $(ratio "$res_us" 189) x nettle floor," \
    "$(ratio "$res_us" 125) x libsodium floor ($resumed of $conns resumed)"
echo "machine: $(nproc) CPUs; client and relay share them"
