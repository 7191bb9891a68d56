#!/usr/bin/env bash
# Relayed datagrams per relay CPU-second, in the same run, all on 127.0.0.1:
#   pos-relay: `pos-loadtest relay` through a real relay (Redis, discovery API,
#              QUIC control connections, circuits; release build);
#   coturn:    turnserver relaying client to client for turnutils_uclient -y;
#   bare:      udpfwd + udpgen from the shared bench folder (recvmmsg/sendmmsg,
#              no parsing, no lookup), compiled now into a temporary dir.
# For each: messages delivered divided by the relaying process's CPU time
# (utime + stime from /proc/PID/stat, taken around the measured run only),
# then the ratios pos-relay / coturn (goal >= 2) and pos-relay / bare (goal
# >= 0.8). The load generators share the machine's cores with the relays.
#
# usage: loadtest/bench-relay.sh [--size BYTES] [--circuits N] [--duration SECONDS]
#                                [--rate PPS] [--turn-msgs N] [--bench-src DIR] [--build DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

size=1200 circuits=20 duration=5 rate=0 turn_msgs=5000
bench_src=${POS_BENCH_SRC:-/work/shared/bench}
build=${POS_BENCH_BUILD:-build-bench}

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=$2; shift 2 ;;
    --circuits) circuits=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --turn-msgs) turn_msgs=$2; shift 2 ;;
    --bench-src) bench_src=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-relay: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for v in size circuits duration turn_msgs; do
  if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
    echo "bench-relay: --${v//_/-} wants a positive number" >&2; exit 2
  fi
done
if ! [[ $rate =~ ^[0-9]+$ ]]; then echo "bench-relay: --rate wants a number" >&2; exit 2; fi
for f in udpfwd.c udpgen.c; do
  [ -f "$bench_src/$f" ] || { echo "bench-relay: $f not found in $bench_src (--bench-src DIR)" >&2; exit 2; }
done
for p in redis-server turnserver turnutils_uclient gcc; do
  command -v "$p" >/dev/null || { echo "bench-relay: $p is not installed" >&2; exit 2; }
done

# Release build (sanitizers would measure the sanitizers).
if [ ! -d "$build" ]; then
  meson setup "$build" --buildtype=release >/dev/null
fi
ninja -C "$build" relay/pos-relay discovery-api/pos-discovery loadtest/pos-loadtest >/dev/null

tmp=$(mktemp -d /tmp/pos-bench-relay-XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
gcc -O2 -o "$tmp/udpfwd" "$bench_src/udpfwd.c"
gcc -O2 -o "$tmp/udpgen" "$bench_src/udpgen.c"

free_ports() {  # N free ports on 127.0.0.1 (UDP and TCP)
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
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
wait_for() {  # wait_for SECONDS CMD...: until CMD succeeds
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.1
  done
}

read -r p_redis p_disc p_relay p_http p_turn p_fwd p_dest < <(free_ports 7)
secret=bench-relay-secret-0123456789abcdef

# ---- pos-relay ----
redis-server --port "$p_redis" --bind 127.0.0.1 --save '' --appendonly no >"$tmp/redis.log" 2>&1 &
pids+=($!)
wait_for 5 redis-cli -p "$p_redis" ping
POS_P2P_SECRET=$secret "$build/discovery-api/pos-discovery" --listen "127.0.0.1:$p_disc" \
  --redis "redis://127.0.0.1:$p_redis" >"$tmp/disc.log" 2>&1 &
pids+=($!)
echo "$secret" | "$build/relay/pos-relay" init --config "$tmp/relay.json" \
  --redis "redis://127.0.0.1:$p_redis" --api-url "http://127.0.0.1:$p_disc" --port "$p_relay" \
  >/dev/null
/usr/bin/python3 - "$tmp/relay.json" "$p_relay" "$p_http" <<'PY'
import json, os, sys
path, port, http = sys.argv[1], sys.argv[2], sys.argv[3]
c = json.load(open(path))
c.update(listen=[f"127.0.0.1:{port}"], http_listen=f"127.0.0.1:{http}",
         conn_rate_per_addr=0, conn_rate_per_token=0, register_interval=1,
         max_conns_per_token=0, max_circuits_per_token=0)  # one token for all 2N clients
json.dump(c, open(path, "w")); os.chmod(path, 0o600)
PY
token=$("$build/relay/pos-relay" token add --config "$tmp/relay.json" | tail -1)
"$build/relay/pos-relay" run --config "$tmp/relay.json" >"$tmp/relay.log" 2>&1 &
relay_pid=$!
pids+=($relay_pid)
wait_for 10 sh -c "curl -sf http://127.0.0.1:$p_disc/api/p2p/relays | grep -q '\"id\"'" || {
  echo "bench-relay: the relay did not register: $(tail -5 "$tmp/relay.log")" >&2; exit 1; }

t0=$(cpu_ticks "$relay_pid")
"$build/loadtest/pos-loadtest" relay --api-url "http://127.0.0.1:$p_disc" --token "$token" \
  --circuits "$circuits" --size "$size" --duration "$duration" --rate "$rate" --json \
  >"$tmp/lt.json"
t1=$(cpu_ticks "$relay_pid")
ours_delivered=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["delivered"])' "$tmp/lt.json")
ours_cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { print (b - a) / hz }')
echo "pos-relay: $(cat "$tmp/lt.json")"
sleep 0.6  # /metrics is refreshed twice a second
echo "pos-relay /metrics: $(curl -s "http://127.0.0.1:$p_http/metrics" | grep -E '^pos_relay_(forwarded_total|forward_send_failed_total|frames_dropped_total\{reason="(budget|wrong_source|unknown_circuit)"\}) ' | tr '\n' ' ')"

# ---- coturn, client to client ----
turnserver -n --no-cli --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --lt-cred-mech \
  --user=u:p --realm=r --no-tls --no-dtls --allow-loopback-peers -p "$p_turn" \
  --log-file=stdout >"$tmp/turn.log" 2>&1 &
turn_pid=$!
pids+=($turn_pid)
sleep 1
t0=$(cpu_ticks "$turn_pid")
turnutils_uclient -u u -w p -y -m 20 -n "$turn_msgs" -l "$size" -z 0 -p "$p_turn" 127.0.0.1 \
  >"$tmp/uclient.log" 2>&1
t1=$(cpu_ticks "$turn_pid")
turn_delivered=$(grep -o 'tot_recv_msgs=[0-9]*' "$tmp/uclient.log" | tail -1 | cut -d= -f2)
turn_cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { print (b - a) / hz }')
echo "coturn: $(grep -E 'tot_send_msgs=[0-9]+, tot_recv' "$tmp/uclient.log" | tail -1 | sed 's/^.*start_mclient: //')"

# ---- bare recvmmsg/sendmmsg forwarder ----
"$tmp/udpfwd" "$p_fwd" "$p_dest" $((duration + 1)) >"$tmp/bare-fwd" 2>&1 &
fwd_pid=$!
pids+=($fwd_pid)
sleep 0.3
"$tmp/udpgen" "$p_fwd" "$p_dest" "$size" "$duration" >"$tmp/bare-gen" 2>&1
wait "$fwd_pid" || true
bare_per_cpu=$(grep -o 'pkts_per_cpu_s=[0-9.]*' "$tmp/bare-fwd" | cut -d= -f2)
echo "bare: $(cat "$tmp/bare-fwd") / $(cat "$tmp/bare-gen")"

awk -v od="$ours_delivered" -v oc="$ours_cpu" -v td="$turn_delivered" -v tc="$turn_cpu" \
  -v bp="$bare_per_cpu" 'BEGIN {
  o = (oc > 0 ? od / oc : 0); t = (tc > 0 ? td / tc : 0)
  printf "pos-relay: %d delivered / %.2f CPU-s = %.0f msgs per relay CPU-second\n", od, oc, o
  printf "coturn:    %d delivered / %.2f CPU-s = %.0f msgs per relay CPU-second\n", td, tc, t
  printf "bare:      %.0f msgs per CPU-second\n", bp
  printf "ratios: pos-relay / coturn = %.2f (goal >= 2), pos-relay / bare = %.2f (goal >= 0.8)\n",
    (t > 0 ? o / t : 0), (bp > 0 ? o / bp : 0) }'
