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
# >= 0.85, issue 12). The load generators share the machine's cores with the relays.
# Workers (config key workers): pos-relay runs once per count in --workers
# (default "1 2"); the ratios above use the first. For each further count it
# prints messages per relay CPU-second per worker (the worker's forwarded
# frames over its thread's CPU plus its share of the main thread's) as a
# ratio to the first count's messages per relay CPU-second (goal: at
# least 0.85x, no more than 15% less), and how the connections and circuit sides spread over the workers.
# --rounds R (default 3) repeats all of it, each round's ratios taken within the round (the
# machine's speed drifts within minutes), and ends with the median of the rounds' ratios.
#
# usage: loadtest/bench-relay.sh [--size BYTES] [--circuits N] [--duration SECONDS]
#                                [--rate PPS] [--turn-msgs N] [--bench-src DIR] [--build DIR]
#                                [--workers "1 2"] [--rounds R]
set -euo pipefail
cd "$(dirname "$0")/.."

size=1200 circuits=20 duration=5 rate=0 turn_msgs=5000
bench_src=${POS_BENCH_SRC:-/work/shared/bench}
build=${POS_BENCH_BUILD:-build-bench}

workers_list="1 2" rounds=3
usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=$2; shift 2 ;;
    --circuits) circuits=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --turn-msgs) turn_msgs=$2; shift 2 ;;
    --bench-src) bench_src=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --workers) workers_list=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-relay: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for v in size circuits duration turn_msgs rounds; do
  if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
    echo "bench-relay: --${v//_/-} wants a positive number" >&2; exit 2
  fi
done
if ! [[ $rate =~ ^[0-9]+$ ]]; then echo "bench-relay: --rate wants a number" >&2; exit 2; fi
for w in $workers_list; do
  if ! [[ $w =~ ^[0-9]+$ ]] || [ "$w" -lt 1 ] || [ "$w" -gt 64 ]; then
    echo "bench-relay: --workers wants counts from 1 to 64, e.g. \"1 2\"" >&2; exit 2
  fi
done
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

. loadtest/ports.sh
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

# thread_ticks PID: "NAME TICKS" per thread (pos-worker-K are the workers; the rest is the
# main loop and the HTTP thread)
thread_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    echo "$(cat "$t/comm") $(awk '{ print $14 + $15 }' "$t/stat")"
  done
}
metrics() { curl -s "http://127.0.0.1:$p_http/metrics"; }

# run_ours W: a relay with W workers through one pos-loadtest relay run; prints its figures
# and leaves "delivered cpu_s" in $tmp/ours-W and the per-worker lines in $tmp/workers-W.
run_ours() {
  local w=$1 relay_pid t0 t1 sampler
  /usr/bin/python3 - "$tmp/relay.json" "$w" <<'PY'
import json, os, sys
c = json.load(open(sys.argv[1])); c["workers"] = int(sys.argv[2])
json.dump(c, open(sys.argv[1], "w")); os.chmod(sys.argv[1], 0o600)
PY
  "$build/relay/pos-relay" run --config "$tmp/relay.json" >"$tmp/relay-$w.log" 2>&1 &
  relay_pid=$!
  pids+=($relay_pid)
  wait_for 10 sh -c "curl -sf http://127.0.0.1:$p_disc/api/p2p/relays | grep -q '\"id\"'" || {
    echo "bench-relay: the relay did not register: $(tail -5 "$tmp/relay-$w.log")" >&2; exit 1; }
  metrics >"$tmp/m0-$w"
  thread_ticks "$relay_pid" >"$tmp/th0-$w"
  t0=$(cpu_ticks "$relay_pid")
  ( sleep "$(awk -v d="$duration" 'BEGIN { print d / 2 + 1 }')"; metrics >"$tmp/mid-$w" ) &
  sampler=$!
  "$build/loadtest/pos-loadtest" relay --api-url "http://127.0.0.1:$p_disc" --token "$token" \
    --circuits "$circuits" --size "$size" --duration "$duration" --rate "$rate" --json \
    >"$tmp/lt-$w.json"
  t1=$(cpu_ticks "$relay_pid")
  thread_ticks "$relay_pid" >"$tmp/th1-$w"
  wait "$sampler"  # the mid-run /metrics sample
  sleep 0.6  # /metrics is refreshed twice a second
  metrics >"$tmp/m1-$w"
  echo "pos-relay, $w worker(s): $(cat "$tmp/lt-$w.json")"
  echo "pos-relay /metrics: $(grep -E '^pos_relay_(forwarded_total|forward_send_failed_total|frames_dropped_total\{reason="(budget|wrong_source|unknown_circuit)"\}) ' "$tmp/m1-$w" | tr '\n' ' ')"
  echo "$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["delivered"])' "$tmp/lt-$w.json") $(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { print (b - a) / hz }')" >"$tmp/ours-$w"
  kill -TERM "$relay_pid"  # deregisters: the next run's relay (same id) is the one listed
  wait "$relay_pid" 2>/dev/null || true
}

# workers_report BASE W: per-worker messages per CPU-second against BASE's, and the spread.
workers_report() {
  /usr/bin/python3 - "$tmp" "$1" "$2" "$hz" <<'PY'
import re, sys
tmp, base, w, hz = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def metrics(path):
    out = {}
    for line in open(path):
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out
def per_worker(m, name, n):
    return [m.get(f'{name}{{worker="{k}"}}', 0) for k in range(n)]
def threads(path):
    return dict(line.rsplit(" ", 1) for line in open(path).read().splitlines())
n = int(w)
bd, bc = map(float, open(f"{tmp}/ours-{base}").read().split())
base_rate = bd / bc if bc else 0
d, c = map(float, open(f"{tmp}/ours-{w}").read().split())
m0, m1, mid = metrics(f"{tmp}/m0-{w}"), metrics(f"{tmp}/m1-{w}"), metrics(f"{tmp}/mid-{w}")
fw = [b - a for a, b in zip(per_worker(m0, "pos_relay_worker_forwarded_total", n),
                            per_worker(m1, "pos_relay_worker_forwarded_total", n))]
th0, th1 = threads(f"{tmp}/th0-{w}"), threads(f"{tmp}/th1-{w}")
cpu = {k: (float(th1[k]) - float(th0.get(k, 0))) / hz for k in th1}
wk = [cpu.get(f"pos-worker-{k}", 0.0) for k in range(n)]
rest = sum(cpu.values()) - sum(wk)  # the main loop (timers, Redis) and the HTTP thread
total_fw = sum(fw) or 1
print(f"pos-relay, {n} workers: {d:.0f} delivered / {c:.2f} CPU-s = {d / c if c else 0:.0f} msgs "
      f"per relay CPU-second, {(d / c if c else 0) / base_rate if base_rate else 0:.2f}x "
      f"{base} worker(s)")
for k in range(n):
    share = wk[k] + rest * fw[k] / total_fw
    rate = fw[k] / share if share else 0
    print(f"  worker {k}: {fw[k]:.0f} frames forwarded, {wk[k]:.2f} CPU-s + {rest * fw[k] / total_fw:.2f} "
          f"(main loop share) = {rate:.0f} msgs per CPU-second, "
          f"{rate / base_rate if base_rate else 0:.2f}x one worker (goal >= 0.85)")
    with open(f"{tmp}/wratios-{w}-{k}", "a") as f:
        f.write(f"{rate / base_rate if base_rate else 0:.4f}\n")
conns = per_worker(mid, "pos_relay_worker_connections", n)
sides = per_worker(mid, "pos_relay_worker_circuit_sides", n)
def spread(v):
    mean = sum(v) / len(v) if v else 0
    return max(abs(x - mean) / mean for x in v) * 100 if mean else 0
print(f"  spread mid-run: connections {[int(x) for x in conns]} (max {spread(conns):.0f}% from "
      f"the mean), circuit sides {[int(x) for x in sides]} (max {spread(sides):.0f}%; goal 20%)")
PY
}

turnserver -n --no-cli --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --lt-cred-mech \
  --user=u:p --realm=r --no-tls --no-dtls --allow-loopback-peers -p "$p_turn" \
  --log-file=stdout >"$tmp/turn.log" 2>&1 &
turn_pid=$!
pids+=($turn_pid)
sleep 1
for r in $(seq "$rounds"); do
  [ "$rounds" -eq 1 ] || echo "== round $r of $rounds =="
  first=""
  for w in $workers_list; do
    run_ours "$w"
    [ -n "$first" ] || first=$w
  done
  read -r ours_delivered ours_cpu <"$tmp/ours-$first"

  # ---- coturn, client to client ----
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
    printf "ratios: pos-relay / coturn = %.2f (goal >= 2), pos-relay / bare = %.2f (goal >= 0.85)\n",
      (t > 0 ? o / t : 0), (bp > 0 ? o / bp : 0)
    printf "%f %f\n", (t > 0 ? o / t : 0), (bp > 0 ? o / bp : 0) >> "'"$tmp/ratios"'" }'
  for w in $workers_list; do
    [ "$w" = "$first" ] || workers_report "$first" "$w"
  done
done
if [ "$rounds" -gt 1 ]; then
  median() { sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
  echo "== median of $rounds rounds =="
  echo "pos-relay / coturn = $(awk '{ print $1 }' "$tmp/ratios" | median) (rounds $(awk '{ printf "%s%.2f", (NR > 1 ? ", " : ""), $1 }' "$tmp/ratios"); goal >= 2)"
  echo "pos-relay / bare = $(awk '{ print $2 }' "$tmp/ratios" | median) (rounds $(awk '{ printf "%s%.2f", (NR > 1 ? ", " : ""), $2 }' "$tmp/ratios"); goal >= 0.85)"
  for f in "$tmp"/wratios-*; do
    [ -e "$f" ] || continue
    k=${f##*/wratios-}
    echo "pos-relay, ${k%-*} workers, worker ${k##*-}: $(median <"$f")x one worker (rounds $(paste -sd' ' "$f" | awk '{ for (i = 1; i <= NF; i++) printf "%s%.2f", (i > 1 ? ", " : ""), $i }'); goal >= 0.85)"
  done
fi
