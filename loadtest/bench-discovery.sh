#!/usr/bin/env bash
# Benchmark (not a test): GET /api/p2p/relays requests per second of
# pos-discovery against nginx serving the identical bytes as a static file,
# measured with wrk in the same run on loopback. Starts its own redis-server,
# pos-discovery (release build) and nginx, registers 50 relays, and stops
# everything on exit, even on failure or Ctrl-C.
#
# usage: loadtest/bench-discovery.sh [-d SECONDS] [-r ROUNDS] [-c CONNECTIONS]
#                                    [-t WRK_THREADS] [-w SERVER_THREADS] [-b BUILD_DIR]
# Goal: pos-discovery >= 0.9 x nginx. Both servers get the same number of
# threads/workers (-w, default 2). The measurement is interleaved: ROUNDS
# (default 10) rounds of one SECONDS-long wrk run (default 2) against each,
# in alternating order, so that other load on the machine falls on both
# alike. The figures are the mean rates over all rounds; the median of the
# per-round ratios is printed too.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
duration=2 rounds=10 conns=64 wrk_threads=2 server_threads=2 relays=50
build=$root/build-release
while getopts "d:r:c:t:w:b:h" opt; do
    case $opt in
    d) duration=$OPTARG ;;
    r) rounds=$OPTARG ;;
    c) conns=$OPTARG ;;
    t) wrk_threads=$OPTARG ;;
    w) server_threads=$OPTARG ;;
    b) build=$OPTARG ;;
    h) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [-d SECONDS] [-r ROUNDS] [-c CONNECTIONS] [-t WRK_THREADS] [-w SERVER_THREADS] [-b BUILD_DIR]" >&2; exit 2 ;;
    esac
done

for tool in redis-server redis-cli nginx wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "bench-discovery: $tool is not installed" >&2; exit 1; }
done

work=$(mktemp -d /tmp/pos-bench-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # wait_for SECONDS COMMAND...: poll until the command succeeds
    local until=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt "$until" ] || { echo "bench-discovery: timed out waiting for: $*" >&2; exit 1; }
        sleep 0.1
    done
}

# 1. A release build of pos-discovery.
exe=$build/discovery-api/pos-discovery
if [ ! -d "$build" ]; then
    meson setup "$build" --buildtype=release >/dev/null
fi
ninja -C "$build" discovery-api/pos-discovery >/dev/null

# 2. Redis and pos-discovery on free loopback ports.
rport=$(free_port) dport=$(free_port) nport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for 10 redis-cli -p "$rport" ping

secret=$(head -c 24 /dev/urandom | base64)
# All of wrk's connections come from 127.0.0.1: lift the per-client cap (default 64).
POS_P2P_SECRET=$secret POS_LOG=warn "$exe" --listen "127.0.0.1:$dport" \
    --redis "redis://127.0.0.1:$rport" --ttl 600 --threads "$server_threads" \
    --max-connections-per-client 1024 \
    >"$work/discovery.log" 2>&1 &
pids+=($!)
wait_for 10 curl -sf "http://127.0.0.1:$dport/healthz"

# 3. 50 relays.
for i in $(seq 1 "$relays"); do
    id=$(cat /proc/sys/kernel/random/uuid)
    peer=$(head -c 32 /dev/urandom | base64 | tr -d '=\n')
    body="{\"id\":\"$id\",\"peer_id\":\"$peer\",\"addrs\":[\"198.51.100.$i:7373\",\"[2001:db8::$i]:7373\"]}"
    curl -sf -o /dev/null -H "Authorization: Bearer $secret" -d "$body" \
        "http://127.0.0.1:$dport/api/p2p/relays"
done

# 4. nginx serving the same bytes as a static file.
mkdir -p "$work/www/api/p2p"
curl -sf -o "$work/www/api/p2p/relays" "http://127.0.0.1:$dport/api/p2p/relays"
count=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/www/api/p2p/relays")
[ "$count" = "$relays" ] || { echo "bench-discovery: listed $count relays, not $relays" >&2; exit 1; }
# nginx's workers run as nobody when started by root: let them read the file.
chmod 755 "$work" "$work/www" "$work/www/api" "$work/www/api/p2p"
chmod 644 "$work/www/api/p2p/relays"
cat >"$work/nginx.conf" <<CONF
daemon off;
worker_processes $server_threads;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    open_file_cache max=16 inactive=60s;
    open_file_cache_valid 60s;
    server {
        listen 127.0.0.1:$nport;
        root $work/www;
        location = /api/p2p/relays { default_type application/json; }
    }
}
CONF
nginx -e "$work/nginx-error.log" -p "$work" -c "$work/nginx.conf" &
pids+=($!)
wait_for 10 curl -sf -o "$work/from-nginx" "http://127.0.0.1:$nport/api/p2p/relays"
cmp -s "$work/from-nginx" "$work/www/api/p2p/relays" ||
    { echo "bench-discovery: nginx does not serve the same bytes" >&2; exit 1; }

# 5. wrk against both: a short warm-up each, then rounds in alternating order.
rate() { # rate URL SECONDS: requests per second
    wrk -t "$wrk_threads" -c "$conns" -d "${2}s" "$1" | tee -a "$work/wrk.log" |
        awk '/^Requests\/sec:/ { print $2 }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mean() { awk '{ s += $1 } END { print s / NR }'; }
disc_url=http://127.0.0.1:$dport/api/p2p/relays
nginx_url=http://127.0.0.1:$nport/api/p2p/relays
rate "$disc_url" 2 >/dev/null
rate "$nginx_url" 2 >/dev/null
: >"$work/disc.rates"
: >"$work/nginx.rates"
: >"$work/ratios"
for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) = 1 ]; then
        d=$(rate "$disc_url" "$duration") n=$(rate "$nginx_url" "$duration")
    else
        n=$(rate "$nginx_url" "$duration") d=$(rate "$disc_url" "$duration")
    fi
    echo "$d" >>"$work/disc.rates"
    echo "$n" >>"$work/nginx.rates"
    python3 -c 'import sys; print(float(sys.argv[1]) / float(sys.argv[2]))' "$d" "$n" >>"$work/ratios"
    printf 'round %2d: pos-discovery %7.0f req/s, nginx %7.0f req/s\n' "$round" "$d" "$n"
done
if grep -q "Non-2xx" "$work/wrk.log"; then
    echo "bench-discovery: some answers were not 200:" >&2
    grep -B2 "Non-2xx" "$work/wrk.log" >&2
    exit 1
fi
[ -z "${POS_BENCH_VERBOSE:-}" ] || cat "$work/wrk.log"
disc_rps=$(mean <"$work/disc.rates")
nginx_rps=$(mean <"$work/nginx.rates")
median_ratio=$(median <"$work/ratios")

bytes=$(stat -c %s "$work/www/api/p2p/relays")
echo "GET /api/p2p/relays, $relays relays ($bytes bytes), wrk -t$wrk_threads -c$conns -d${duration}s," \
    "$server_threads server threads, $rounds interleaved rounds"
printf 'pos-discovery: %10.0f req/s (mean)\n' "$disc_rps"
printf 'nginx:         %10.0f req/s (mean)\n' "$nginx_rps"
python3 -c 'import sys; d, n, m = map(float, sys.argv[1:]); print(f"ratio:         {d / n:10.2f} (goal >= 0.90; median of the rounds'"'"' ratios {m:.2f})")' \
    "$disc_rps" "$nginx_rps" "$median_ratio"
