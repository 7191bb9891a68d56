#!/usr/bin/env bash
# Benchmark of idle (parked) clients (a script, not a test; issue 14):
# `pos-loadtest idle` with 50,000 real clients (each its own identity and
# UDP socket on its own loopback address) against a release pos-relay and
# redis-server on loopback, and the figures as ratios to the goals:
#   - relay RSS per parked client (RSS with all parked minus RSS before): <= 1 KiB
#   - live QUIC connections (pos_relay_connections) equal awake clients once parked
#   - relay CPU per keep-alive (utime + stime over keep-alives received, acks included): <= 2 us
#   - CONNECT to a parked peer until the circuit is up, p50: <= 5 ms (next to an awake peer's)
#   - nothing lost: 100 of 100 sends to parked peers, every fourth just after the peer's
#     address changed (the device noticed: it sends a keep-alive at once), every fourth
#     after a NAT rebinding the device does not notice (the relay finds it at its next
#     keep-alive, so these CONNECTs go out 16 at a time at the end of the run)
# The awake side is measured first in the same run (all clients awake: relay RSS,
# relay CPU per datagram, CONNECT to an awake peer), as the baseline.
# Builds a release tree in build-bench (no sanitizers) unless BUILD is set.
# Every process started here is stopped on exit.
# usage: loadtest/bench-idle.sh [--clients N] [--concurrency C] [--hold S] [--tries K]
#                               [--lost-tries K] [--keepalive S] [--park-after S] [--workers W]
#                               [--sends N (20; 0: none)]
# Last, with real programs: N files sent with `pos-p2p send --relay-only` to a
# `pos-p2p listen` that parks after 1 s, each only once the listener is parked
# again, each checked byte for byte (goal: N of N). For that part the relay
# restarts with idle_timeout 5: the listener parks again only once the
# finished sender's circuit is gone, and that takes the relay's idle timeout.
set -euo pipefail
clients=50000 concurrency=64 hold=60 tries=100 lost_tries=100 keepalive=25 park_after=2 workers=1
sends=20
while [ $# -gt 0 ]; do
    case "$1" in
    --clients) clients=$2 ;;
    --concurrency) concurrency=$2 ;;
    --hold) hold=$2 ;;
    --tries) tries=$2 ;;
    --lost-tries) lost_tries=$2 ;;
    --keepalive) keepalive=$2 ;;
    --park-after) park_after=$2 ;;
    --workers) workers=$2 ;;
    --sends) sends=$2 ;;
    *) echo "bench-idle: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. loadtest/ports.sh
build=${BUILD:-$root/build-bench}
work=$(mktemp -d /tmp/pos-bench-idle-XXXXXX)
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
if ! ninja -C "$build" relay/pos-relay loadtest/pos-loadtest loadtest/pos-kabench \
    client-lib/cli/pos-p2p discovery-api/pos-discovery >"$work/build.log" 2>&1; then
    tail -20 "$work/build.log"
    echo "bench-idle: the build failed" >&2
    exit 1
fi

# The load generator needs a descriptor per client, the relay a little room.
ulimit -n $((clients + 4096)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

read -r redis_port port disc_port <<<"$(free_ports 3)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --maxclients 1000 >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

POS_P2P_SECRET=bench-secret "$build/discovery-api/pos-discovery" --listen "127.0.0.1:$disc_port" \
    --redis "redis://127.0.0.1:$redis_port" >"$work/discovery.log" 2>&1 &
pids+=($!)
api=http://127.0.0.1:$disc_port

cfg=$work/relay.json
echo "bench-secret" | "$build/relay/pos-relay" init --config "$cfg" --port "$port" \
    --redis "redis://127.0.0.1:$redis_port" --api-url "$api" >"$work/init.out"
peer_id=$(tail -1 "$work/init.out")
# Limits raised for one machine's worth of devices on one token.
/usr/bin/python3 - "$cfg" "$port" "$workers" "$keepalive" "$clients" <<'PY'
import json, sys
path, port, workers, keepalive, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
c = json.load(open(path))
c.update({"listen": [f"127.0.0.1:{port}"], "http_listen": f"127.0.0.1:{port + 1}",
          "conn_rate_per_addr": 0, "conn_rate_per_token": 0, "idle_timeout": 60,
          "max_conns_per_token": 0, "max_circuits_per_token": 0, "retry_above": 1000000,
          "workers": workers, "park_lifetime": max(120, 5 * keepalive),
          "park_keepalive": keepalive, "max_parked": max(1000000, clients)})
json.dump(c, open(path, "w"))
PY
chmod 600 "$cfg"
token=$("$build/relay/pos-relay" token add --config "$cfg" --account bench | tail -1)

POS_LOG=warn "$build/relay/pos-relay" run --config "$cfg" >"$work/relay.log" 2>&1 &
relay_pid=$!
pids+=($relay_pid)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$((port + 1))/healthz" >/dev/null && break; sleep 0.1; done

# No warm-up: the relay gives freed heap back (malloc_trim) once parked clients'
# QUIC connections are gone, down to about a fresh relay's RSS, so "before" is
# a fresh relay's RSS (a warm-up's closed connections would inflate it).
sleep 1

echo "== pos-loadtest idle: $clients clients, one relay on loopback (workers $workers," \
    "park_keepalive $keepalive s) =="
rc=0
POS_TOKEN=$token "$build/loadtest/pos-loadtest" idle --addr "127.0.0.1:$port" \
    --peer-id "$peer_id" --clients "$clients" --concurrency "$concurrency" --hold "$hold" \
    --tries "$tries" --lost-tries "$lost_tries" --park-after "$park_after" \
    --relay-pid "$relay_pid" --metrics-url "http://127.0.0.1:$((port + 1))/metrics" --json \
    >"$work/idle.json" 2>"$work/idle.err" || rc=$?
if [ ! -s "$work/idle.json" ]; then
    cat "$work/idle.err"
    tail -20 "$work/relay.log"
    echo "bench-idle: pos-loadtest idle printed no figures (exit $rc)" >&2
    exit 1
fi
# The floor of a keep-alive on this machine now: a bare recvmmsg/sendmmsg server
# (pos-kabench, no protocol) fed by as many client sockets at the keep-alives'
# measured rate, acking as many of them as the relay did.
read -r ka_rate ka_every <<<"$(/usr/bin/python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
ev, acks = r.get("keepalives", 0), r.get("keepalive_acks", 0)
print(max(1, round(ev / max(r["hold_s"], 1))), round(ev / acks) if acks > 0 else 0)' "$work/idle.json")"
"$build/loadtest/pos-kabench" --clients "$(/usr/bin/python3 -c 'import json,sys; print(max(1, json.load(open(sys.argv[1]))["accepted"]))' "$work/idle.json")" \
    --rate "$ka_rate" --ack-every "$ka_every" --duration 20 --json >"$work/floor.json" \
    2>"$work/floor.err" || cat "$work/floor.err" >&2
/usr/bin/python3 - "$work/idle.json" "$keepalive" "$work/floor.json" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1]))
floor = json.load(open(sys.argv[3])) if os.path.getsize(sys.argv[3]) > 0 else None
r["keepalive_s"] = sys.argv[2]
n = max(r["accepted"], 1)
def ratio(v, goal): return f"{v / goal:.2f} x goal" if v >= 0 else "n/a"
print(f"clients: {r['accepted']} of {r['clients']} accepted in {r['connect_s']:.1f} s "
      f"({r['accepted'] / max(r['connect_s'], 1e-9):.0f}/s, {r['retried']} attempts retried), handshake p50 {r['handshake_p50_ms']:.0f} ms")
if r["first_failure"]:
    print(f"first failure: {r['first_failure']}")
awake = (r["relay_rss_awake_kib"] - r["relay_rss_before_kib"]) * 1024 / n
print(f"relay RSS: before {r['relay_rss_before_kib']} KiB, all awake {r['relay_rss_awake_kib']} KiB "
      f"= {awake:.0f} bytes per awake client ({r['relay_connections_awake']:.0f} connections)")
print(f"load generator RSS per client: {r['gen_rss_idle_kib'] * 1024 / n:.0f} bytes before "
      f"connecting, {r['gen_rss_awake_kib'] * 1024 / n:.0f} bytes awake")
if r["awake_tries"]:
    print(f"CONNECT to an awake peer until the circuit is up: p50 {r['awake_connect_p50_ms']:.2f} ms, "
          f"p95 {r['awake_connect_p95_ms']:.2f} ms ({r['awake_ok']}/{r['awake_tries']} carried a datagram)")
else:
    print("CONNECT to an awake peer: none tried")
if r["awake_first_failure"]:
    print(f"  first failure: {r['awake_first_failure']}")
ev, cpu = r["awake_datagrams_in"], r["awake_relay_cpu_s"]
if ev > 0 and cpu >= 0:
    print(f"awake {r['hold_s']} s: relay CPU {cpu:.3f} s for {ev:.0f} datagrams in = "
          f"{cpu * 1e6 / ev:.2f} us each, {cpu * 1e6 / n / max(r['hold_s'], 1):.2f} us per awake "
          f"client-second")
parked = (r["relay_rss_parked_kib"] - r["relay_rss_before_kib"]) * 1024 / n
print(f"parking took {r['park_s']:.1f} s (clients told to park 5,000 a second): "
      f"{r['parked_events']} PARKED events, {r['lost_events_parking']} reconnects after unanswered "
      f"keep-alives; relay: {r['relay_parks']:.0f} parks, {r['relay_park_refused']:.0f} refused")
print(f"during the parked hold: {r['lost_events_hold']} reconnects after unanswered keep-alives")
if r["unparked"]:
    print(f"not parked when the wait ended (measuring process's clients): {r['unparked']}, "
          f"{r['unparked_incoming']} of them had answered an INCOMING, {r['unparked_before']} had "
          f"parked before, {r['unparked_failed']} failed")
    if r.get("unparked_first_failure"):
        print(f"  first failed: {r['unparked_first_failure']}")
print(f"parked: {r['parked']:.0f} of {r['accepted']}; relay pos_relay_parked {r['relay_parked']:.0f}, "
      f"pos_relay_awake {r['relay_awake']:.0f}, live QUIC connections {r['relay_connections_parked']:.0f} "
      f"(goal: equal to awake)")
print(f"relay RSS all parked: {r['relay_rss_parked_kib']} KiB = {parked:.0f} bytes per parked client: "
      f"{ratio(parked, 1024)} (goal <= 1 KiB)")
print(f"load generator RSS per parked client: {r['gen_rss_parked_kib'] * 1024 / n:.0f} bytes")
ev, cpu = r["keepalives"], r["parked_relay_cpu_s"]
if ev > 0 and cpu >= 0:
    us = cpu * 1e6 / ev
    acks = r.get("keepalive_acks", -1)
    print(f"keep-alives: {ev:.0f} in {r['hold_s']} s ({acks:.0f} asked for an ack and got it: "
          f"1 in {ev / max(acks, 1):.1f}), relay CPU {cpu:.3f} s = {us:.2f} us each: "
          f"{ratio(us, 2)} (goal <= 2 us); {cpu * 1e6 / n / max(r['hold_s'], 1):.2f} us per parked "
          f"client-second")
    if floor:
        print(f"  bare floor on this machine now (pos-kabench: recvmmsg every 50 ms, sendmmsg acks, "
              f"{floor['clients']} client sockets, {floor['datagrams'] / floor['seconds']:.0f}/s, "
              f"{floor['acks']} acks): {floor['us_per_datagram']:.2f} us per datagram; "
              f"relay / floor = {us / floor['us_per_datagram']:.2f}")
else:
    print("keep-alives: none counted by the relay (pos_relay_park_keepalives_total)")
p50 = r["parked_connect_p50_ms"]
if r["parked_tries"]:
    print(f"CONNECT to a parked peer until the circuit is up: p50 {p50:.2f} ms, p95 "
          f"{r['parked_connect_p95_ms']:.2f} ms: {ratio(p50, 5)} (goal <= 5 ms; awake baseline "
          f"p50 {r['awake_connect_p50_ms']:.2f} ms); {r['parked_ok']}/{r['parked_tries']} carried a datagram")
else:
    print("CONNECT to a parked peer: none tried (--tries 0): goal not measured")
if r["parked_first_failure"]:
    print(f"  first failure: {r['parked_first_failure']}")
if r["lost_tries"] or r["rebound_tries"]:
    print(f"nothing lost: {r['lost_ok']}/{r['lost_tries']} sends to parked peers arrived (goal 100%), "
          f"{r['lost_moved_ok']}/{r['lost_moved']} of them just after the peer's address changed, "
          f"{r['rebound_ok']}/{r['rebound_tries']} after a NAT rebinding the peer did not notice")
    print(f"  the rebinding tries: {r['rebound_s']:.1f} s, 16 CONNECTs at a time (the relay finds each "
          f"peer at its next keep-alive, every {r.get('keepalive_s', '?')} s, and waits for it "
          f"park_keepalive + 10 s)")
else:
    print("nothing lost: none tried (--lost-tries 0): goal not measured")
if r["lost_first_failure"]:
    print(f"  first failure: {r['lost_first_failure']}")
PY

# ---- real programs: files to a parked pos-p2p listen ----
if [ "$sends" -gt 0 ]; then
    kill -TERM "$relay_pid"
    wait "$relay_pid" 2>/dev/null || true
    /usr/bin/python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["idle_timeout"]=5; json.dump(c, open(sys.argv[1], "w"))' "$cfg"
    POS_LOG=warn "$build/relay/pos-relay" run --config "$cfg" >"$work/relay-sends.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$((port + 1))/healthz" >/dev/null && break; sleep 0.1; done
    relay_id=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$cfg")
    mkdir -p "$work/in" "$work/files"
    lpeer=$("$build/client-lib/cli/pos-p2p" id --identity "$work/listener.id")
    POS_TOKEN=$token "$build/client-lib/cli/pos-p2p" listen --out "$work/in" --api-url "$api" \
        --relay-id "$relay_id" --identity "$work/listener.id" --mdns disabled --park-after 1 \
        >"$work/listen.log" 2>&1 &
    pids+=($!)
    parked() { grep -c "relay: parked" "$work/listen.log" || true; }
    ok=0 first=""
    t0=$(date +%s.%N)
    for i in $(seq "$sends"); do
        for _ in $(seq 300); do [ "$(parked)" -ge "$i" ] && break; sleep 0.1; done
        if [ "$(parked)" -lt "$i" ]; then
            first=${first:-"send $i: the listener did not park"}
            continue
        fi
        head -c $((64 * 1024 + i)) /dev/urandom >"$work/files/f$i"
        if POS_TOKEN=$token "$build/client-lib/cli/pos-p2p" send --to "$lpeer" --api-url "$api" \
            --relay-id "$relay_id" --relay-only --no-mdns --identity "$work/sender.id" \
            "$work/files/f$i" >"$work/send.log" 2>&1 && cmp -s "$work/files/f$i" "$work/in/f$i"; then
            ok=$((ok + 1))
        else
            first=${first:-"send $i: $(tail -1 "$work/send.log")"}
        fi
    done
    t1=$(date +%s.%N)
    echo "pos-p2p: $ok/$sends files sent to a parked pos-p2p listen arrived intact (goal 100%)" \
        "in $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", b - a}') s${first:+; first failure: $first}"
    [ "$ok" = "$sends" ] || rc=1
fi
echo "machine: $(nproc) CPUs; load generator, relay and redis share them"
exit $rc
