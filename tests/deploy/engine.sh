#!/bin/bash
# engine.sh - a Docker engine for the deployment test, on a Debian 12 host
# without a container registry: dockerd started by hand (PID 1 need not be
# systemd), `debian:12` made with debootstrap + `docker import`, and a
# `redis:7` stand-in built from Debian's redis-server.
#
#   engine.sh start   start dockerd unless one answers; make the base images
#   engine.sh stop    only if `start` started it: stop containers, dockerd, and
#                     undo what dockerd did to the host (iptables chains and
#                     rules, FORWARD policy, ip_forward, docker0)
#
# Environment: POS_DEPLOY_STATE (default /run/pos-deploy-test) keeps the pid
# and the host settings saved before dockerd changed them; MIRROR overrides
# the Debian mirror (default: the one apt uses).
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin  # Debian's docker client (matches the daemon)
STATE=${POS_DEPLOY_STATE:-/run/pos-deploy-test}
PIDFILE=$STATE/dockerd.pid
SOCK=/var/run/docker.sock
LOG=$STATE/dockerd.log

say() { printf 'engine: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
engine_up() { timeout 5 docker info >/dev/null 2>&1; }

mirror() {
  if [ -n "${MIRROR:-}" ]; then echo "$MIRROR"; return; fi
  local m
  m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$m" ] || m=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${m:-http://deb.debian.org/debian}"
}

start_dockerd() {
  mkdir -p "$STATE"
  # Saved before dockerd touches them; `stop` puts them back.
  cat /proc/sys/net/ipv4/ip_forward >"$STATE/ip_forward"
  iptables -S FORWARD | awk '/^-P FORWARD/{print $3}' >"$STATE/forward_policy"
  iptables-save >"$STATE/iptables.before"
  rm -f "$PIDFILE"
  setsid -f dockerd --host "unix://$SOCK" --pidfile "$PIDFILE" --storage-driver overlay2 \
    >>"$LOG" 2>&1 </dev/null
  for _ in $(seq 120); do
    engine_up && { say "dockerd up (pid $(cat "$PIDFILE"))"; return 0; }
    sleep 0.5
  done
  tail -n 20 "$LOG" >&2
  return 1
}

make_debian() {
  docker image inspect debian:12 >/dev/null 2>&1 && return 0
  local root m
  m=$(mirror)
  root=$(mktemp -d /tmp/pos-debian12.XXXXXX)
  say "debootstrap --variant=minbase bookworm from $m"
  if ! debootstrap --variant=minbase bookworm "$root" "$m" >"$STATE/debootstrap.log" 2>&1; then
    tail -n 5 "$STATE/debootstrap.log" >&2
    rm -rf "$root"
    die "debootstrap failed"
  fi
  rm -f "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin
  rm -rf "$root"/var/lib/apt/lists/*
  mkdir -p "$root"/var/lib/apt/lists/partial
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$m" "$m" >"$root/etc/apt/sources.list"
  : >"$root/etc/hostname"
  tar --numeric-owner -C "$root" -c . | docker import -c 'CMD ["bash"]' - debian:12 >/dev/null
  rm -rf "$root"
}

make_redis() {
  docker image inspect redis:7 >/dev/null 2>&1 && return 0
  say "building redis:7 from Debian's redis-server"
  local ctx
  ctx=$(mktemp -d)
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM debian:12
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends redis-server >/dev/null && rm -rf /var/lib/apt/lists/* && \
    mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
# Like the official image: `redis-server ARGS` or bare ARGS; reachable from
# other containers (the official build turns protected mode off).
ENTRYPOINT ["/bin/sh", "-c", "[ \"${1#-}\" != \"$1\" ] && set -- redis-server \"$@\"; [ \"$1\" = redis-server ] && { shift; set -- redis-server --protected-mode no \"$@\"; }; exec \"$@\"", "--"]
CMD ["redis-server"]
DOCKERFILE
  docker build -q -t redis:7 "$ctx" >/dev/null
  rm -rf "$ctx"
}

cmd_start() {
  [ "$(id -u)" -eq 0 ] || die "run as root"
  if engine_up; then
    say "a dockerd already answers on $SOCK: using it"
  else
    start_dockerd || die "dockerd does not start (log $LOG)"
  fi
  make_debian
  make_redis
}

undo_network() {
  local t line c
  for t in nat filter; do
    iptables-save -t "$t" | grep -E '^-A ' | grep -E 'DOCKER|docker0|br-[0-9a-f]{12}' |
      grep -vE '^-A DOCKER' | while read -r line; do
        # shellcheck disable=SC2086
        iptables -t "$t" ${line/-A /-D } 2>/dev/null || true
      done
    for c in DOCKER DOCKER-ISOLATION-STAGE-1 DOCKER-ISOLATION-STAGE-2 DOCKER-USER; do
      iptables -t "$t" -F "$c" 2>/dev/null || true
      iptables -t "$t" -X "$c" 2>/dev/null || true
    done
  done
  ip link del docker0 2>/dev/null || true
  for l in $(ip -o link show | awk -F': ' '{print $2}' | grep -E '^br-[0-9a-f]{12}$' || true); do
    ip link del "$l" 2>/dev/null || true
  done
  if mountpoint -q /run/docker/netns/default 2>/dev/null; then umount /run/docker/netns/default || true; fi
  [ -s "$STATE/forward_policy" ] && iptables -P FORWARD "$(cat "$STATE/forward_policy")"
  [ -s "$STATE/ip_forward" ] && cat "$STATE/ip_forward" >/proc/sys/net/ipv4/ip_forward
  rm -f "$STATE/forward_policy" "$STATE/ip_forward"
}

cmd_stop() {
  local pid ids
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    say "no dockerd started by this script: nothing to stop"
    return 0
  fi
  ids=$(docker ps -q 2>/dev/null || true)
  # shellcheck disable=SC2086
  [ -z "$ids" ] || timeout 60 docker stop -t 5 $ids >/dev/null || true
  kill -TERM "$pid"
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  rm -f "$PIDFILE"
  undo_network
  say "dockerd stopped, host network settings restored"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) die "usage: $0 start|stop" ;;
esac
