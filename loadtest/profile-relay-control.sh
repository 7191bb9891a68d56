#!/usr/bin/env bash
# Instructions (callgrind Ir) the relay spends per authenticated connection,
# full and resumed (a script, not a test; docs/perf-relay-control.md):
# the relay runs under valgrind --tool=callgrind, WARM connections of
# `pos-loadtest control --concurrency 1` warm it up, the counters are dumped,
# N more connections run, the counters are dumped again: Ir of that dump / N.
# Then the same with --resume --endpoints 1 (the first of the N connections is
# a full handshake: its cost, measured above, is subtracted). Instruction
# counts are stable on a loaded machine where wall time is not; valgrind hides
# SHA-NI from nettle and counts each byte of `rep stosb`, so hashing and
# memset weigh more in Ir than in time.
# Prints the totals, as ratios to the crypto floor's instructions too (pos-cryptofloor
# under callgrind), and the top functions (inclusive and self) of both.
# usage: loadtest/profile-relay-control.sh [N (default 200)] [WARM (default 50)]
# BUILD (default build-bench, a release tree made if missing); KEEP=DIR keeps
# the callgrind files there.
set -euo pipefail
n=${1:-200}
warm=${2:-50}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD:-$root/build-bench}
work=$(mktemp -d /tmp/pos-profile-control-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$work"/callgrind.* "$KEEP"/ 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
. loadtest/ports.sh

if [ ! -d "$build" ]; then
    meson setup "$build" "$root" -Dbuildtype=release >/dev/null
fi
ninja -C "$build" relay/pos-relay loadtest/pos-loadtest >"$work/build.log" 2>&1 ||
    { tail -20 "$work/build.log"; exit 1; }

read -r redis_port port http_port <<<"$(free_ports 3)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

cfg=$work/relay.json
echo "bench-secret" | "$build/relay/pos-relay" init --config "$cfg" --port "$port" \
    --redis "redis://127.0.0.1:$redis_port" >"$work/init.out"
peer_id=$(tail -1 "$work/init.out")
/usr/bin/python3 - "$cfg" "$port" "$http_port" <<'PY'
import json, sys
path, port, http = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = json.load(open(path))
c.update({"listen": [f"127.0.0.1:{port}"], "http_listen": f"127.0.0.1:{http}",
          "conn_rate_per_addr": 0, "conn_rate_per_token": 0, "idle_timeout": 60,
          "max_conns_per_token": 0, "max_pending_per_addr": 65535, "workers": 1})
json.dump(c, open(path, "w"))
PY
chmod 600 "$cfg"
token=$("$build/relay/pos-relay" token add --config "$cfg" --account bench | tail -1)

(cd "$work" && POS_LOG=warn exec valgrind --tool=callgrind --instr-atstart=yes \
    --callgrind-out-file="$work/callgrind.%p" "$build/relay/pos-relay" run --config "$cfg" \
    >"$work/relay.log" 2>&1) &
pids+=($!)
lt() { POS_TOKEN=$token "$build/loadtest/pos-loadtest" control --addr "127.0.0.1:$port" \
    --peer-id "$peer_id" --concurrency 1 --timeout 30 "$@"; }
for _ in $(seq 600); do lt --conns 1 >/dev/null 2>&1 && break; sleep 0.5; done
vpid=$(pgrep -f "callgrind-out-file=$work" | head -1)

measure() { # name, pos-loadtest options...
    local name=$1
    shift
    lt --conns "$warm" "$@" >"$work/$name-warm.out" 2>&1
    callgrind_control -d "$vpid" >/dev/null
    lt --conns "$n" "$@" >"$work/$name.out" 2>&1
    callgrind_control -d "$vpid" >/dev/null
    local f
    f=$(ls -t "$work"/callgrind.* | head -1)
    mv "$f" "$work/callgrind.$name"
    grep -E "accepted|refused|failed" "$work/$name.out" | head -3 | sed "s/^/  $name: /"
}
measure full
measure resumed --resume --endpoints 1

total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'; }
full=$(total "$work/callgrind.full")
res=$(total "$work/callgrind.resumed")
per_full=$((full / n))
per_res=$(((res - per_full) / (n - 1)))
# The crypto floor in instructions: pos-cryptofloor's operations under callgrind, per call.
ninja -C "$build" loadtest/pos-cryptofloor >>"$work/build.log" 2>&1
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.floor" \
    "$build/loadtest/pos-cryptofloor" 100 >/dev/null 2>&1
ir_of() { callgrind_annotate --inclusive=yes --threshold=100 "$work/callgrind.floor" 2>/dev/null |
    awk -v f="$1" '!done && $0 ~ (":" f " \\[") {x=$1; gsub(",", "", x); print int(x / 100); done=1}'; }
nettle_full=$(($(ir_of nettle_curve25519_mul_g) + $(ir_of nettle_curve25519_mul) +
    $(ir_of nettle_ed25519_sha512_sign) + $(ir_of nettle_ed25519_sha512_verify)))
sodium_full=$(($(ir_of crypto_scalarmult_curve25519_base) + $(ir_of crypto_scalarmult_curve25519) +
    $(ir_of crypto_sign_detached) + $(ir_of crypto_sign_verify_detached)))
sodium_res=$(($(ir_of crypto_scalarmult_curve25519_base) + $(ir_of crypto_scalarmult_curve25519)))
r() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "== Ir per connection (callgrind, $n connections after $warm) =="
echo "crypto floor: nettle full $nettle_full, libsodium full $sodium_full, libsodium resumed" \
    "(X25519 twice) $sodium_res"
echo "full handshake:    $per_full = $(r "$per_full" "$nettle_full") x nettle floor," \
    "$(r "$per_full" "$sodium_full") x libsodium floor"
echo "resumed handshake: $per_res = $(r "$per_res" "$nettle_full") x nettle full floor," \
    "$(r "$per_res" "$sodium_res") x libsodium resumed floor"
echo "(user space only: the kernel's UDP and page-fault work is not counted, nor cache misses)"
for name in full resumed; do
    echo "== $name: top functions, inclusive (Ir per connection) =="
    callgrind_annotate --inclusive=yes "$work/callgrind.$name" 2>/dev/null |
        awk -v n="$n" '/^ *[0-9,]+ .*\(/ && !/100.0%/ {x=$1; gsub(",", "", x); $1=""; printf "%9d %s\n", x / n, $0}' |
        sed -n 1,40p
    echo "== $name: top functions, self =="
    callgrind_annotate --threshold=100 "$work/callgrind.$name" 2>/dev/null |
        awk -v n="$n" '/^ *[0-9,]+ .*\(/ && !/100.0%/ {x=$1; gsub(",", "", x); $1=""; printf "%9d %s\n", x / n, $0}' |
        sed -n 1,25p
done
