#!/usr/bin/env bash
# Benchmark of the relay's forwarding hot path against the bare forwarder.
#
# In the same run, alternating ROUNDS times:
#   bare:  udpfwd + udpgen from the shared bench folder (recvmmsg/sendmmsg, no
#          parsing, no lookup), compiled now with gcc -O2 into a temporary dir;
#   relay: pos-fwdbench (relay_forward_batch: frame decode, circuit lookup,
#          source check, budget, id rewrite) with the same datagram size;
#   relay+GSO: the same with UDP GSO sends (consecutive datagrams to one
#          destination joined; here all circuits end at one sink, the best
#          case, as for one bulk transfer).
# Prints packets forwarded per CPU-second of the forwarding process for each,
# and the ratio relay / bare (goal: >= 0.8); then the forwarding logic alone
# (pos-fwdbench --no-io: no sockets) in CPU nanoseconds per packet, which is
# immune to the noise of a shared machine.
#
# usage: loadtest/bench-forward.sh [--size BYTES] [--circuits N] [--duration SECONDS]
#                                  [--rounds N] [--bench-src DIR] [--build DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

size=1200 circuits=1000 duration=5 rounds=3
bench_src=${POS_BENCH_SRC:-/work/shared/bench}
build=${POS_BENCH_BUILD:-build-bench}

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=$2; shift 2 ;;
    --circuits) circuits=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --bench-src) bench_src=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-forward: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for v in size circuits duration rounds; do
  if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
    echo "bench-forward: --$v wants a positive number" >&2; exit 2
  fi
done
if [ ! -f "$bench_src/udpfwd.c" ] || [ ! -f "$bench_src/udpgen.c" ]; then
  echo "bench-forward: udpfwd.c and udpgen.c not found in $bench_src (use --bench-src DIR)" >&2
  exit 2
fi

# A release build of pos-fwdbench (sanitizers would measure the sanitizers).
if [ ! -d "$build" ]; then
  meson setup "$build" --buildtype=release >/dev/null
fi
ninja -C "$build" loadtest/pos-fwdbench >/dev/null
fwdbench=$build/loadtest/pos-fwdbench

tmp=$(mktemp -d /tmp/pos-bench-forward-XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
gcc -O2 -o "$tmp/udpfwd" "$bench_src/udpfwd.c"
gcc -O2 -o "$tmp/udpgen" "$bench_src/udpgen.c"

. loadtest/ports.sh

field() {  # field NAME FILE: the value of NAME=... in FILE
  grep -o "$1=[0-9.]*" "$2" | head -1 | cut -d= -f2
}

bare_sum=0 relay_sum=0 gso_sum=0
echo "datagram size ${size} B, ${circuits} circuits, ${duration} s per run, ${rounds} rounds"
for r in $(seq 1 "$rounds"); do
  # Free ports can be taken by someone else between the check and the bind: retry.
  for attempt in 1 2 3 4 5; do
    read -r port dest < <(free_ports 2)
    "$tmp/udpfwd" "$port" "$dest" $((duration + 1)) >"$tmp/bare-fwd" 2>"$tmp/bare-err" &
    pids=($!)
    sleep 0.3
    if kill -0 "${pids[0]}" 2>/dev/null &&
      "$tmp/udpgen" "$port" "$dest" "$size" "$duration" >"$tmp/bare-gen" 2>>"$tmp/bare-err"; then
      wait "${pids[0]}" && break
    fi
    kill "${pids[0]}" 2>/dev/null || true
    wait "${pids[0]}" 2>/dev/null || true
    if [ "$attempt" = 5 ]; then
      echo "bench-forward: the bare forwarder did not run: $(cat "$tmp/bare-err")" >&2
      exit 1
    fi
  done
  pids=()
  bare=$(field pkts_per_cpu_s "$tmp/bare-fwd")
  bare_rx=$(field received "$tmp/bare-gen")

  "$fwdbench" --circuits "$circuits" --size "$size" --duration "$duration" >"$tmp/relay"
  relay=$(field pkts_per_cpu_s "$tmp/relay")
  relay_rx=$(field received "$tmp/relay")
  relay_drop=$(field dropped "$tmp/relay")
  "$fwdbench" --circuits "$circuits" --size "$size" --duration "$duration" --gso 64 >"$tmp/gso"
  gso=$(field pkts_per_cpu_s "$tmp/gso")

  printf 'round %d: bare %8.0f pkts/CPU-s (delivered %s)  relay %8.0f (delivered %s, dropped %s)  ratio %.2f  relay+GSO %8.0f\n' \
    "$r" "$bare" "$bare_rx" "$relay" "$relay_rx" "$relay_drop" \
    "$(awk -v a="$relay" -v b="$bare" 'BEGIN { print (b > 0 ? a / b : 0) }')" "$gso"
  bare_sum=$(awk -v s="$bare_sum" -v x="$bare" 'BEGIN { print s + x }')
  relay_sum=$(awk -v s="$relay_sum" -v x="$relay" 'BEGIN { print s + x }')
  gso_sum=$(awk -v s="$gso_sum" -v x="$gso" 'BEGIN { print s + x }')
done
awk -v b="$bare_sum" -v r="$relay_sum" -v g="$gso_sum" -v n="$rounds" 'BEGIN {
  printf "mean: bare %.0f pkts/CPU-s, relay %.0f pkts/CPU-s, ratio relay/bare %.2f (goal >= 0.80); relay+GSO %.0f pkts/CPU-s (%.2f x bare)\n",
    b / n, r / n, (b > 0 ? r / b : 0), g / n, (b > 0 ? g / b : 0) }'
"$fwdbench" --no-io --circuits "$circuits" --size "$size" --duration 2 >"$tmp/noio"
ns=$(field ns_per_packet "$tmp/noio")
awk -v ns="$ns" -v b="$bare_sum" -v n="$rounds" 'BEGIN {
  per = (b > 0 ? 1e9 * n / b : 0)
  printf "forwarding logic alone: %.1f ns of CPU per packet, %.1f%% of the bare forwarder'"'"'s %.0f ns per packet\n",
    ns, (per > 0 ? 100 * ns / per : 0), per }'
