#!/usr/bin/env bash
# One file, direct and relayed, in the same run, all on 127.0.0.1 (release build):
#   direct:  pos-p2p send --addr to a pos-p2p listen;
#   relayed: the same file to the same listener through a real pos-relay
#            (Redis, discovery API, --relay-only --no-punch).
# Rounds alternate direct and relayed; each prints MB/s (file bytes / the
# sender's "seconds", from the session's start to the receiver's verdict:
# the checksum, computed while the file is sent since transfer protocol 2,
# and the receiver's check included) and the CPU-seconds of sender,
# receiver (and relay).
# Then the ratio relayed / direct of the best runs (goal >= 0.8) and the
# direct figure (goal >= 300 MB/s), and the same from CPU time alone: the
# rate if the processes had two idle cores to themselves (bytes / the larger
# of the busiest process's CPU-seconds and half their sum; on a shared
# machine the wall-clock figures measure the neighbours). Last, the largest datagram
# on the wire: a smaller file is sent once more each way through
# tests/p2p/wire_fwd.py (a UDP forwarder reading one datagram per recvfrom, so
# GSO sends arrive cut into segments, as on a wire), in front of the listener
# (direct) and in front of the relay (relayed, announced by its public_addrs);
# goal: none over 1452 bytes. The receiver writes to /dev/shm.
#
# usage: loadtest/bench-transfer.sh [--size MB] [--rounds R] [--wire-size MB]
#                                   [--build DIR] [--no-gso]
set -euo pipefail
cd "$(dirname "$0")/.."

size_mb=200 rounds=2 wire_mb=8 gso_opt=""
build=${POS_BENCH_BUILD:-build-xfer}

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size_mb=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --wire-size) wire_mb=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --no-gso) gso_opt="--no-gso"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-transfer: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for v in size_mb rounds wire_mb; do
  if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
    echo "bench-transfer: --${v%_mb} wants a positive number" >&2; exit 2
  fi
done
for p in redis-server curl; do
  command -v "$p" >/dev/null || { echo "bench-transfer: $p is not installed" >&2; exit 2; }
done

# Release build (sanitizers would measure the sanitizers).
if [ ! -d "$build" ]; then
  meson setup "$build" --buildtype=release >/dev/null
fi
ninja -C "$build" relay/pos-relay discovery-api/pos-discovery client-lib/cli/pos-p2p >/dev/null
p2p=$build/client-lib/cli/pos-p2p

tmp=$(mktemp -d /tmp/pos-bench-xfer-XXXXXX)
shm=$(mktemp -d /dev/shm/pos-bench-xfer-XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp" "$shm"
}
trap cleanup EXIT

. loadtest/ports.sh
wait_for() {  # wait_for SECONDS CMD...: until CMD succeeds
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.1
  done
}

read -r p_redis p_disc p_relay p_http p_listen p_wire_l p_wire_r p_relay2 p_http2 < <(free_ports 9)
secret=bench-xfer-secret-0123456789abcdef

redis-server --port "$p_redis" --bind 127.0.0.1 --save '' --appendonly no >"$tmp/redis.log" 2>&1 &
pids+=($!)
wait_for 5 redis-cli -p "$p_redis" ping
POS_P2P_SECRET=$secret "$build/discovery-api/pos-discovery" --listen "127.0.0.1:$p_disc" \
  --redis "redis://127.0.0.1:$p_redis" >"$tmp/disc.log" 2>&1 &
pids+=($!)

start_relay() {  # start_relay NAME PORT HTTP [PUBLIC]: a relay; prints its id
  local name=$1 port=$2 http=$3 public=${4:-}
  echo "$secret" | "$build/relay/pos-relay" init --config "$tmp/$name.json" \
    --redis "redis://127.0.0.1:$p_redis" --api-url "http://127.0.0.1:$p_disc" --port "$port" \
    >/dev/null
  /usr/bin/python3 - "$tmp/$name.json" "$port" "$http" "$public" <<'PY'
import json, os, sys
path, port, http, public = sys.argv[1:5]
c = json.load(open(path))
c.update(listen=[f"127.0.0.1:{port}"], http_listen=f"127.0.0.1:{http}", register_interval=1,
         conn_rate_per_addr=0, conn_rate_per_token=0)
if public:
    c["public_addrs"] = [public]
json.dump(c, open(path, "w")); os.chmod(path, 0o600)
PY
  "$build/relay/pos-relay" run --config "$tmp/$name.json" >"$tmp/$name.log" 2>&1 &
  pids+=($!)
  echo $! >"$tmp/$name.pid"
  /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$tmp/$name.json"
}
relay_id=$(start_relay relay "$p_relay" "$p_http")
wire_relay_id=$(start_relay relay2 "$p_relay2" "$p_http2" "127.0.0.1:$p_wire_r")
relay_pid=$(cat "$tmp/relay.pid")
pids+=("$relay_pid" "$(cat "$tmp/relay2.pid")")  # started in $(...): the list did not see them
token=$("$build/relay/pos-relay" token add --config "$tmp/relay.json" | tail -1)
wait_for 10 sh -c "curl -sf http://127.0.0.1:$p_disc/api/p2p/relays | grep -q '$wire_relay_id'" &&
  wait_for 10 sh -c "curl -sf http://127.0.0.1:$p_disc/api/p2p/relays | grep -q '$relay_id'" || {
  echo "bench-transfer: the relays did not register: $(tail -5 "$tmp/relay.log")" >&2; exit 1; }

"$p2p" id --identity "$tmp/listener.id" >"$tmp/peer"
peer=$(tail -1 "$tmp/peer")
"$p2p" id --identity "$tmp/sender.id" >/dev/null
mkdir -p "$shm/out" "$shm/out2"
listen() {  # listen PORT OUTDIR RELAY_ID
  "$p2p" listen --identity "$tmp/listener.id" --port "$1" --out "$2" --api-url \
    "http://127.0.0.1:$p_disc" --token "$token" --relay-id "$3" --mdns disabled --no-punch \
    $gso_opt >"$tmp/listen-$1.log" 2>&1 &
  pids+=($!)
  listener_pid=$!
  wait_for 15 grep -q "relay: $3" "$tmp/listen-$1.log" || {
    echo "bench-transfer: the listener did not come up: $(tail -5 "$tmp/listen-$1.log")" >&2
    exit 1; }
}
listen "$p_listen" "$shm/out" "$relay_id"

head -c $((size_mb * 1000 * 1000)) /dev/urandom >"$shm/file.bin"
head -c $((wire_mb * 1000 * 1000)) /dev/urandom >"$shm/wire.bin"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
send_once() {  # send_once direct|relayed FILE [ADDR] [RELAY_ID]: prints "MB/s" and, in
  # $tmp/cpu, the CPU-seconds of sender, receiver and relay for it
  local how=$1 file=$2 addr=${3:-127.0.0.1:$p_listen} rid=${4:-$relay_id} args l0 r0 l1 r1
  if [ "$how" = direct ]; then
    args=(--addr "$addr")
  else
    args=(--api-url "http://127.0.0.1:$p_disc" --token "$token" --relay-id "$rid" --relay-only)
  fi
  l0=$(cpu_ticks "$listener_pid") r0=$(cpu_ticks "$relay_pid")
  /usr/bin/time -f '%U %S' -o "$tmp/send.time" \
    "$p2p" send --identity "$tmp/sender.id" --to "$peer" --no-mdns --no-punch --json $gso_opt \
    "${args[@]}" "$file" >"$tmp/send.json" 2>"$tmp/send.err" || {
    echo "bench-transfer: $how send failed: $(tail -3 "$tmp/send.err")" >&2; exit 1; }
  l1=$(cpu_ticks "$listener_pid") r1=$(cpu_ticks "$relay_pid")
  rm -f "$shm"/out/* "$shm"/out2/*
  /usr/bin/python3 - "$tmp/send.json" "$how" "$tmp/send.time" $((l1 - l0)) $((r1 - r0)) "$hz" \
    "$tmp/cpu" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] and d["path"] == sys.argv[2], d
u, s = map(float, open(sys.argv[3]).read().split()[-2:])
hz = int(sys.argv[6])
mb = d["bytes"] / 1e6
open(sys.argv[7], "w").write(f"{u + s:.2f} {int(sys.argv[4]) / hz:.2f} {int(sys.argv[5]) / hz:.2f} {mb:.0f}")
print(f'{mb / d["seconds"]:.1f}')
PY
}
cpu_line() {  # the CPU-seconds of the last send_once, as text
  read -r cs cl cr mb <"$tmp/cpu"
  if [ "$1" = direct ]; then cr=0; fi
  echo "$mb $cs $cl $cr" >>"$tmp/cpu-$1"
  awk -v s="$cs" -v l="$cl" -v r="$cr" -v mb="$mb" -v how="$1" 'BEGIN {
    printf "CPU-s sender %.2f, receiver %.2f", s, l
    if (how == "relayed") printf ", relay %.2f", r
    printf " (%.0f MB per CPU-second of all of them)", mb / (s + l + r) }'
}

direct=() relayed=()
for r in $(seq 1 "$rounds"); do
  d=$(send_once direct "$shm/file.bin")
  echo "round $r: ${size_mb} MB direct  $d MB/s; $(cpu_line direct)"
  l=$(send_once relayed "$shm/file.bin")
  echo "round $r: ${size_mb} MB relayed $l MB/s; $(cpu_line relayed)"
  direct+=("$d") relayed+=("$l")
done

# ---- the largest datagram on the wire ----
wire() {  # wire NAME LISTEN TO: a recording forwarder
  /usr/bin/python3 tests/p2p/wire_fwd.py --listen "127.0.0.1:$2" --to "127.0.0.1:$3" \
    --stats "$tmp/wire-$1.json" &
  pids+=($!)
  wait_for 5 test -s "$tmp/wire-$1.json"
}
wire direct "$p_wire_l" "$p_listen"
wire relayed "$p_wire_r" "$p_relay2"
"$p2p" listen --identity "$tmp/listener.id" --out "$shm/out2" --api-url \
  "http://127.0.0.1:$p_disc" --token "$token" --relay-id "$wire_relay_id" --mdns disabled \
  --no-punch $gso_opt >"$tmp/listen-wire.log" 2>&1 &
pids+=($!)
wait_for 15 grep -q "relay: $wire_relay_id" "$tmp/listen-wire.log" || {
  echo "bench-transfer: the second listener did not come up" >&2; exit 1; }
wd=$(send_once direct "$shm/wire.bin" "127.0.0.1:$p_wire_l")
wr=$(send_once relayed "$shm/wire.bin" "" "$wire_relay_id")
sleep 0.5
read -r dmax dover dn < <(/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["max"], d["over"], d["datagrams"])' "$tmp/wire-direct.json")
read -r rmax rover rn < <(/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["max"], d["over"], d["datagrams"])' "$tmp/wire-relayed.json")
echo "wire (${wire_mb} MB through a recording forwarder): direct $dn datagrams, largest $dmax B, $dover over 1452 ($wd MB/s); relayed $rn datagrams, largest $rmax B, $rover over 1452 ($wr MB/s)"

printf '%s\n' "${direct[@]}" >"$tmp/d"
printf '%s\n' "${relayed[@]}" >"$tmp/l"
best_d=$(sort -g "$tmp/d" | tail -1) best_l=$(sort -g "$tmp/l" | tail -1)
cpu_rate() {  # the median over rounds of bytes / max(busiest, sum / 2): MB/s on 2 idle cores
  awk '{ m = $2; if ($3 > m) m = $3; if ($4 > m) m = $4; h = ($2 + $3 + $4) / 2
         if (h > m) m = h; print $1 / m }' "$tmp/cpu-$1" | sort -g | awk '{ v[NR] = $1 }
    END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
cpu_d=$(cpu_rate direct) cpu_l=$(cpu_rate relayed)
awk -v d="$best_d" -v l="$best_l" -v dm="$dmax" -v rm="$rmax" -v g="${gso_opt:-gso}" 'BEGIN {
  printf "best of runs (%s): direct %.1f MB/s (goal >= 300), relayed %.1f MB/s, relayed / direct = %.2f (goal >= 0.8)\n", g, d, l, (d > 0 ? l / d : 0)
  printf "largest datagram: %d B (goal <= 1452)\n", (dm > rm ? dm : rm) }'
awk -v d="$cpu_d" -v l="$cpu_l" 'BEGIN {
  printf "from CPU time (2 idle cores, median): direct %.0f MB/s, relayed %.0f MB/s, relayed / direct = %.2f\n", d, l, (d > 0 ? l / d : 0) }'
# Each round's relayed run next to its own direct run (the machine's speed drifts between rounds),
# the same from CPU time with a core per process (a machine with idle cores to spare: bytes over
# the busiest process's CPU-seconds), and the bound this machine sets when every run keeps all of
# its cores busy: relayed / direct can then be no more than the direct run's CPU-seconds over the
# relayed run's (the relay's work is on top of the same two clients').
paste -d' ' "$tmp/d" "$tmp/l" "$tmp/cpu-direct" "$tmp/cpu-relayed" | awk -v ncpu="$(nproc)" '
  function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  function busiest(s, l, r,   m) { m = s; if (l > m) m = l; if (r > m) m = r; return m }
  { n++; wall[n] = ($1 > 0 ? $2 / $1 : 0); list = list (n > 1 ? ", " : "") sprintf("%.2f", wall[n])
    core_d[n] = $3 / busiest($4, $5, 0); core_l[n] = $7 / busiest($8, $9, $10)
    core_r[n] = core_l[n] / core_d[n]; bound[n] = ($4 + $5) / ($8 + $9 + $10) }
  END {
    if (!n) exit
    printf "each round, relayed / direct: %s; median %.2f\n", list, median(wall, n)
    printf "from CPU time (a core per process, median): direct %.0f MB/s, relayed %.0f MB/s, relayed / direct = %.2f\n", median(core_d, n), median(core_l, n), median(core_r, n)
    printf "this machine'"'"'s bound with every core busy (%d CPUs): relayed / direct <= direct CPU-s / relayed CPU-s = %.2f (median)\n", ncpu, median(bound, n) }'
