#!/bin/bash
# test_deploy.sh - the deployment as an operator runs it, in a real Docker
# engine: deploy/compose.yaml brought up with no other step, with the image
# made of deploy/Dockerfile's runtime stage plus the binaries this build
# already compiled (POS_BUILD_DIR, default build-test: an ASan + UBSan build,
# so its runtime libraries go in too; no second compile in CI).
#
# Checks, in order: both relays listed by the API; a token added with
# `compose exec`; `pos-p2p relays` from a client container; a relayed
# send/listen between two client containers on two other networks; the
# listener's home relay killed (SIGKILL): the listener moves to the other one
# and a transfer works again; Redis restarted: both relays healthy again and a
# transfer works; `down`: every relay deregistered (the API, started again on
# the persisted Redis before the 30 s TTL, lists none); no sanitizer report
# in any container's log.
#
# Root only. Starts its own dockerd (tests/deploy/engine.sh) unless one
# already answers, and stops it and restores the host's firewall settings at
# the end, even on failure. Exit 0: pass; 1: fail. Missing docker.io,
# docker-compose or debootstrap is a failure (scripts/deps.sh installs them).
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${POS_BUILD_DIR:-$root/build-test}
project=posdeploytest
image=pos:deploytest
compose=(docker-compose -p "$project" -f "$root/deploy/compose.yaml")
t_start=$(date +%s)
checks=0

say() { printf '[%3ss] %s\n' "$(($(date +%s) - t_start))" "$*"; }
fail() {
  say "FAIL: $*"
  exit 1
}
ok() {
  checks=$((checks + 1))
  say "ok: $*"
}
wait_for() { # SECONDS WHAT COMMAND...
  local secs=$1 what=$2 deadline=$(($(date +%s) + $1))
  shift 2
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  fail "timed out after ${secs}s waiting for $what"
}

[ "$(id -u)" -eq 0 ] || fail "must run as root (starts dockerd)"
for p in docker dockerd docker-compose debootstrap iptables; do
  command -v "$p" >/dev/null || fail "$p not installed: run scripts/deps.sh"
done
[ -x "$build/relay/pos-relay" ] || fail "$build is not built"

work=$(mktemp -d /tmp/pos-deploy.XXXXXX)
cleanup() {
  local rc=$?
  set +e
  if [ $rc -ne 0 ] && docker info >/dev/null 2>&1; then
    echo "---- container logs (last lines)"
    for c in $(docker ps -aq --filter "label=com.docker.compose.project=$project") \
      pos-listen; do
      echo "-- $(docker inspect -f '{{.Name}}' "$c" 2>/dev/null)"
      docker logs --tail 30 "$c" 2>&1
    done
  fi
  if docker info >/dev/null 2>&1; then
    docker rm -f pos-listen >/dev/null 2>&1
    "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1
    docker network rm pos-net-a pos-net-b >/dev/null 2>&1
  fi
  "$here/engine.sh" stop
  rm -rf "$work"
  say "$checks checks; wall time $(($(date +%s) - t_start)) s"
  if [ $rc -eq 0 ]; then echo "test_deploy: $checks passed, 0 failed"; else echo "test_deploy: $checks passed, 1 failed"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

say "engine"
"$here/engine.sh" start
ok "dockerd answers; debian:12 and redis:7 present"

say "image: deploy/Dockerfile's runtime stage + this build's binaries"
docker build -q --target runtime -t pos-runtime:deploytest -f "$root/deploy/Dockerfile" "$root" >/dev/null
mkdir -p "$work/ctx"
meson install -C "$build" --destdir "$work/ctx/prebuilt" --no-rebuild --quiet >/dev/null
rm -rf "$work"/ctx/prebuilt/usr/local/include
find "$work/ctx/prebuilt" \( -name '*.a' -o -name pkgconfig \) -prune -exec rm -rf {} +
# The sanitizer runtimes the binaries link (same Debian 12 as the image).
mkdir -p "$work/ctx/prebuilt/usr/local/lib/sanitizers"
ldd "$build/relay/pos-relay" | awk '/lib(asan|ubsan)/{print $3}' |
  xargs -r cp -L -t "$work/ctx/prebuilt/usr/local/lib/sanitizers"
cat >"$work/ctx/Dockerfile" <<DOCKERFILE
FROM pos-runtime:deploytest
COPY prebuilt/ /
RUN echo /usr/local/lib/sanitizers >/etc/ld.so.conf.d/pos-sanitizers.conf && ldconfig
ENV ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1
USER pos
DOCKERFILE
docker build -q -t "$image" "$work/ctx" >/dev/null
docker run --rm "$image" pos-p2p --help >/dev/null || fail "pos-p2p does not run in the image"
[ "$(docker run --rm "$image" id -un)" = pos ] || fail "the image does not run as pos"
ok "image $image built; runs as pos"

host_ip=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for(i=1;i<NF;i++) if($i=="src") print $(i+1)}')
[ -n "$host_ip" ] || host_ip=$(hostname -I | awk '{print $1}')
api=http://$host_ip:8080

say "compose up (clients reach the relays at $host_ip)"
t_up=$(date +%s)
POS_IMAGE=$image POS_PUBLIC_HOST=$host_ip POS_BIND_IP=$host_ip "${compose[@]}" up -d 2>&1 | tail -n 3
export POS_IMAGE=$image POS_PUBLIC_HOST=$host_ip POS_BIND_IP=$host_ip

relay_ids() { curl -fsS --max-time 3 http://127.0.0.1:8080/api/p2p/relays | python3 -c 'import json,sys; print(" ".join(sorted(e["id"] for e in json.load(sys.stdin))))'; }
relays_listed() { # N: the API lists N relays
  local n
  n=$(curl -fsS --max-time 3 http://127.0.0.1:8080/api/p2p/relays | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [ "$n" = "$1" ]
}
cid() { docker ps -aq --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=$1"; }
healthy() { # SERVICE
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$(cid "$1")")" = healthy ]
}
wait_for 120 "both relays listed" relays_listed 2
ok "both relays listed $(($(date +%s) - t_up)) s after up"
ids=$(relay_ids)
for s in redis discovery relay1 relay2; do wait_for 60 "$s healthy" healthy "$s"; done
ok "every service healthy"
for port in 9091 9092; do
  m=$(curl -fsS --max-time 3 "http://127.0.0.1:$port/metrics") || fail "no metrics on :$port"
  grep -q '^pos_relay_' <<<"$m" || fail "metrics on :$port: ${m:0:300}"
done
ok "metrics of both relays reachable on the host"

token=$("${compose[@]}" exec -T relay1 pos-relay token add | tail -n 1 | tr -d '\r')
[ -n "$token" ] || fail "no token from pos-relay token add"
ok "token added with compose exec"

docker network create pos-net-a >/dev/null
docker network create pos-net-b >/dev/null
client() { # NETWORK ARGS...: a client container on its own network
  local net=$1
  shift
  docker run --rm --network "$net" -e POS_TOKEN="$token" "$image" "$@"
}
out=$(client pos-net-b pos-p2p relays --api-url "$api" --identity /tmp/id --timeout 5)
[ "$(grep -c accepted <<<"$out")" = 2 ] || fail "pos-p2p relays: $out"
ok "pos-p2p relays from a client container: both relays accept the token"

docker run -d --name pos-listen --network pos-net-a -e POS_TOKEN="$token" "$image" \
  bash -c "mkdir -p in && exec pos-p2p listen --out in --identity id --api-url $api --retry-max 2" >/dev/null
home() { docker logs pos-listen 2>/dev/null | awk '/^relay: /{a=$NF} END{print a}'; }
has_home() { [ -n "$(home)" ]; }
wait_for 30 "the listener to reach a relay" has_home
peer=$(docker exec pos-listen pos-p2p id --identity id | tail -n 1)
transfer() { # NAME: a relayed transfer from pos-net-b, checked by content
  local sum got
  sum=$(client pos-net-b bash -c "head -c 300000 /dev/urandom >/tmp/$1 &&
      pos-p2p send --api-url $api --relay-only --identity /tmp/id --to $peer --timeout 10 /tmp/$1 >&2 &&
      sha256sum </tmp/$1") || return 1
  got=$(docker exec pos-listen bash -c "sha256sum <in/$1") || return 1
  [ "$sum" = "$got" ]
}
wait_for 30 "a relayed transfer" transfer one
ok "relayed send/listen between pos-net-a and pos-net-b via $(home)"

first=$(home)
victim=relay1
[ "${first##*:}" = 7374 ] && victim=relay2
# A crash (SIGKILL to pos-relay, not `docker kill`, a manual stop), and the
# relay stays down (restart policy off for now) so that the listener must move.
docker update --restart=no "$(cid "$victim")" >/dev/null
kill -KILL "$(docker inspect -f '{{.State.Pid}}' "$(cid "$victim")")"
say "killed $victim's pos-relay with SIGKILL (the listener's home relay $first)"
moved() { local h; h=$(home); [ -n "$h" ] && [ "$h" != "$first" ]; }
wait_for 60 "the listener to move to the other relay" moved
wait_for 60 "a transfer after the kill" transfer two
ok "listener moved to $(home); transfer works"
"${compose[@]}" up -d >/dev/null 2>&1
wait_for 60 "$victim back after up -d" healthy "$victim"
wait_for 30 "both relays listed again" relays_listed 2
[ "$(relay_ids)" = "$ids" ] || fail "relay ids changed: $ids -> $(relay_ids)"
ok "$victim back with the same identity after up -d"
# The restart policy: a crashed discovery API comes back by itself.
kill -KILL "$(docker inspect -f '{{.State.Pid}}' "$(cid discovery)")"
sleep 1
wait_for 60 "discovery restarted by its restart policy" healthy discovery
ok "a crashed pos-discovery is restarted (restart: unless-stopped)"

"${compose[@]}" restart redis >/dev/null 2>&1
for s in redis discovery relay1 relay2; do wait_for 60 "$s healthy after the Redis restart" healthy "$s"; done
wait_for 60 "both relays listed after the Redis restart" relays_listed 2
wait_for 60 "a transfer after the Redis restart" transfer three
ok "Redis restarted: services healthy, both relays listed, transfer works"

docker rm -f pos-listen >/dev/null
# Every container's log up to its end, for the sanitizer check after `down`.
"${compose[@]}" logs --no-color -f >"$work/compose.log" 2>&1 &
logs_pid=$!
t_down=$(date +%s)
"${compose[@]}" down >/dev/null 2>&1
wait "$logs_pid" || true
say "down took $(($(date +%s) - t_down)) s"
[ -z "$(docker ps -q --filter "label=com.docker.compose.project=$project")" ] || fail "containers left"
# Redis kept its data (appendonly volume); the API comes back on it well within
# the 30 s TTL: a relay that did not deregister would still be listed.
"${compose[@]}" up -d --no-deps redis >/dev/null 2>&1
wait_for 30 "redis" healthy redis
"${compose[@]}" up -d --no-deps discovery >/dev/null 2>&1
wait_for 30 "the API after down" relays_listed 0
[ $(($(date +%s) - t_down)) -lt 30 ] || fail "too slow to tell deregistration from expiry"
ok "after down no relay is listed (deregistered, not expired)"

if grep -E 'ERROR: AddressSanitizer|runtime error:' "$work/compose.log"; then
  fail "sanitizer report in a container's log"
fi
grep -q 'deregister' "$work/compose.log" || say "note: no 'deregister' line in the relays' logs"
ok "no sanitizer report in any container's log"
