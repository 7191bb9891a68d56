#!/usr/bin/env bash
# Brings the suite up on this machine and shows it working:
#   - installs what is missing (apt-get) and builds (build-release/);
#   - starts redis-server on a private unix socket unless POS_REDIS_URL names one;
#   - starts pos-discovery on http://127.0.0.1:8080 and a relay on UDP 7373
#     registered in it, with a fresh p2p secret and a demo token;
#   - checks the relay list over HTTP and connects a client to the relay;
#   - stays in the foreground until Ctrl-C, then stops everything.
# Environment: POS_REDIS_URL (use this Redis), POS_HTTP_PORT (8080), POS_RELAY_PORT (7373).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/deps.sh
if [ ! -d build-release ]; then
  meson setup build-release --buildtype=release >/dev/null
fi
ninja -C build-release >/dev/null

http_port=${POS_HTTP_PORT:-8080}
relay_port=${POS_RELAY_PORT:-7373}
state=$(mktemp -d /tmp/pos-up-XXXXXX)
chmod 700 "$state"
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "stopping..."
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

bin=$root/build-release
if [ -n "${POS_REDIS_URL:-}" ]; then
  redis_url=$POS_REDIS_URL
  echo "redis:     $redis_url (configured)"
else
  redis-server --port 0 --unixsocket "$state/redis.sock" --unixsocketperm 700 \
    --save '' --appendonly no --maxmemory-policy noeviction --dir "$state" >"$state/redis.log" 2>&1 &
  pids+=($!)
  redis_url="unix://$state/redis.sock"
  for _ in $(seq 100); do
    redis-cli -s "$state/redis.sock" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
  echo "redis:     $redis_url (started for this run, log $state/redis.log)"
fi

# The p2p secret shared by the discovery API and the relay.
head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$state/p2p-secret"
chmod 600 "$state/p2p-secret"

"$bin/discovery-api/pos-discovery" --listen "127.0.0.1:$http_port" --redis "$redis_url" \
  --secret-file "$state/p2p-secret" >"$state/discovery.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1 && break
  sleep 0.05
done
echo "discovery: http://127.0.0.1:$http_port/api/p2p/relays (log $state/discovery.log)"

if [ -x "$bin/relay/pos-relay" ]; then
  "$bin/relay/pos-relay" init --config "$state/relay.json" \
    --api-url "http://127.0.0.1:$http_port" --port "$relay_port" --redis "$redis_url" \
    --public-addr "127.0.0.1:$relay_port" <"$state/p2p-secret" >"$state/init.out"
  token=$("$bin/relay/pos-relay" token add --config "$state/relay.json" --account demo | tail -n 1)
  "$bin/relay/pos-relay" run --config "$state/relay.json" >"$state/relay.log" 2>&1 &
  pids+=($!)
  echo "relay:     udp 127.0.0.1:$relay_port, peer id $(tail -n 1 "$state/init.out") (log $state/relay.log)"
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$http_port/api/p2p/relays" | grep -q peer_id && break
    sleep 0.05
  done
fi

echo
echo "GET http://127.0.0.1:$http_port/api/p2p/relays ->"
curl -fsS "http://127.0.0.1:$http_port/api/p2p/relays"
echo
if [ -n "${token:-}" ] && [ -x "$bin/client-lib/cli/pos-p2p" ]; then
  echo
  echo "a client connects to every listed relay with the demo token:"
  POS_IDENTITY="$state/client-identity" "$bin/client-lib/cli/pos-p2p" relays \
    --api-url "http://127.0.0.1:$http_port" --token "$token" || true
  echo
  echo "demo token (account demo): $token"
  echo "try:  POS_IDENTITY=$state/client-identity $bin/client-lib/cli/pos-p2p relays --api-url http://127.0.0.1:$http_port --token $token"
fi
echo
echo "running; press Ctrl-C to stop"
while true; do
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "a component stopped unexpectedly; logs are in $state" >&2
      tail -n 20 "$state"/*.log >&2 || true
      exit 1
    fi
  done
  sleep 1
done
