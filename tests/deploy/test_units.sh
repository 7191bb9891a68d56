#!/bin/bash
# test_units.sh - the systemd units of deploy/systemd without systemd as PID 1:
#   1. `systemd-analyze security --offline=true` rates each unit <= 2.0;
#   2. `systemd-analyze verify` accepts them (in a root with the binaries);
#   3. pos.sysusers and pos.tmpfiles make the user and /etc/pos, /var/lib/pos;
#   4. each unit's ExecStart line runs as the service user `pos` under the
#      sandbox reproduced here: no new privileges, no capabilities, the file
#      system read-only but for private /tmp, no /home, the unit's
#      RestrictAddressFamilies= and MemoryDenyWriteExecute= as seccomp filters
#      (sandbox.py); the configuration written by `pos-relay init --owner pos`
#      as root. Under it the relay registers with the API, answers QUIC
#      (`pos-p2p relays`), carries a relayed transfer and deregisters on SIGTERM.
# Root only (creates the user `pos` when missing and removes it again).
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${POS_BUILD_DIR:-$root/build-test}
units=$root/deploy/systemd
checks=0
fail() { echo "test_units: FAIL: $*"; exit 1; }
ok() { checks=$((checks + 1)); echo "ok: $*"; }
wait_for() { # SECONDS WHAT COMMAND...
  local secs=$1 what=$2 deadline=$(($(date +%s) + $1))
  shift 2
  while [ "$(date +%s)" -lt "$deadline" ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.3; done
  fail "timed out after ${secs}s waiting for $what"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

[ "$(id -u)" -eq 0 ] || fail "must run as root"
for p in systemd-analyze systemd-sysusers systemd-tmpfiles setpriv unshare redis-server; do
  command -v "$p" >/dev/null || fail "$p missing: run scripts/deps.sh"
done
python3 -c 'import seccomp' 2>/dev/null || fail "python3-seccomp missing: run scripts/deps.sh"

work=$(mktemp -d /run/pos-units.XXXXXX)
chmod 0755 "$work"
pids=()
made_user=0
cleanup() {
  local rc=$? p
  set +e
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  if [ $rc -ne 0 ]; then for f in "$work"/*.log; do echo "-- $f"; tail -n 20 "$f"; done; fi
  rm -rf "$work"
  if [ $made_user = 1 ]; then userdel pos 2>/dev/null; groupdel pos 2>/dev/null; fi
  echo "test_units: $checks passed, $([ $rc -eq 0 ] && echo 0 || echo 1) failed"
  exit $rc
}
trap cleanup EXIT

# 1. exposure scores
for u in pos-relay pos-discovery; do
  score=$(systemd-analyze security --offline=true "$units/$u.service" | awk '/Overall exposure level/{print $(NF-2)}')
  awk -v s="$score" 'BEGIN{exit !(s != "" && s <= 2.0)}' || fail "$u.service exposure ${score:-?} > 2.0"
  ok "$u.service: systemd-analyze security --offline=true: $score"
done

# 2. verify, in a root that has the binaries and systemd's own units
r=$work/root
mkdir -p "$r/usr/bin" "$r/etc/systemd/system" "$r/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$r/usr/lib/systemd/"
cp "$build/relay/pos-relay" "$build/discovery-api/pos-discovery" "$r/usr/bin/"
cp "$units"/*.service "$r/etc/systemd/system/"
out=$(systemd-analyze verify --root="$r" pos-relay.service pos-discovery.service 2>&1) ||
  fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
ok "systemd-analyze verify: no complaint"

# 3. sysusers and tmpfiles, in that root
mkdir -p "$r/etc"
: >"$r/etc/passwd"; : >"$r/etc/group"; : >"$r/etc/shadow"; : >"$r/etc/gshadow"
systemd-sysusers --root="$r" "$units/pos.sysusers" >/dev/null
grep -q '^pos:x:[0-9]*:[0-9]*:.*:/var/lib/pos:/usr/sbin/nologin$' "$r/etc/passwd" ||
  fail "sysusers made no pos user: $(cat "$r/etc/passwd")"
systemd-tmpfiles --root="$r" --create "$units/pos.tmpfiles" >/dev/null 2>&1 || true
# Numeric ids: stat would name them from this host's /etc/passwd, not the root's.
uid=$(awk -F: '$1=="pos"{print $3}' "$r/etc/passwd")
gid=$(awk -F: '$1=="pos"{print $3}' "$r/etc/group")
[ "$(stat -c '%a %u %g' "$r/etc/pos")" = "750 0 $gid" ] ||
  fail "/etc/pos is $(stat -c '%a %u %g' "$r/etc/pos") (pos is $uid:$gid)"
[ "$(stat -c '%a %u %g' "$r/var/lib/pos")" = "750 $uid $gid" ] ||
  fail "/var/lib/pos is $(stat -c '%a %u %g' "$r/var/lib/pos") (pos is $uid:$gid)"
ok "pos.sysusers makes pos (nologin); pos.tmpfiles makes /etc/pos 0750 root:pos, /var/lib/pos"

# 4. the ExecStart lines as pos, sandboxed
if ! getent passwd pos >/dev/null; then
  systemd-sysusers "$units/pos.sysusers" >/dev/null
  made_user=1
fi
etc=$work/etc-pos
install -d -m 0750 -o root -g pos "$etc"
( umask 027; head -c 32 /dev/urandom | base64 -w0 | tr -d '=+/' >"$etc/p2p-secret"; echo >>"$etc/p2p-secret" )
chgrp pos "$etc/p2p-secret"
rport=$(free_port); dport=$(free_port); uport=$(free_port); hport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for 10 "redis" redis-cli -p "$rport" ping
cat >"$etc/discovery.json" <<JSON
{"listen": "127.0.0.1:$dport", "redis": "redis://localhost:$rport", "secret_file": "$etc/p2p-secret", "ttl": 30}
JSON
chgrp pos "$etc/discovery.json"; chmod 0640 "$etc/discovery.json"
"$build/relay/pos-relay" init --owner pos --config "$etc/relay.json" --redis "redis://localhost:$rport" \
  --api-url "http://localhost:$dport" --port "$uport" --http-listen "127.0.0.1:$hport" \
  <"$etc/p2p-secret" >/dev/null 2>"$work/init.log"
[ "$(stat -c '%a %U' "$etc/relay.json")" = "600 pos" ] || fail "init --owner pos: $(stat -c '%a %U' "$etc/relay.json")"

# The sandbox hides /tmp and /home (PrivateTmp=, ProtectHome=), where a checkout
# and its build may live: the sandboxed programs and the filter run from $work.
sbin=$work/bin
mkdir -p "$sbin"
cp "$build/relay/pos-relay" "$build/discovery-api/pos-discovery" "$here/sandbox.py" "$sbin/"
chmod 0755 "$sbin" "$sbin"/*
sandboxed() { # UNIT LOG: runs the unit's ExecStart= as pos in the sandbox
  local unit=$units/$1.service log=$2 cmd fams
  cmd=$(sed -n 's/^ExecStart=//p' "$unit" | sed -e "s|/usr/bin/pos-relay|$sbin/pos-relay|" \
    -e "s|/usr/bin/pos-discovery|$sbin/pos-discovery|" -e "s|/etc/pos|$etc|g")
  fams=$(sed -n 's/^RestrictAddressFamilies=//p' "$unit")
  grep -q '^NoNewPrivileges=yes' "$unit" && grep -q '^ProtectSystem=strict' "$unit" &&
    grep -q '^PrivateTmp=yes' "$unit" && grep -q '^MemoryDenyWriteExecute=yes' "$unit" &&
    grep -q '^CapabilityBoundingSet=$' "$unit" || fail "$1.service lost a directive this test reproduces"
  # ProtectSystem=strict: every mount read-only but the API file systems;
  # PrivateTmp=, ProtectHome=: empty private /tmp, /var/tmp, /home, /root.
  # shellcheck disable=SC2016
  unshare --mount --propagation private -- bash -c '
    set -e
    for m in $(awk "{print \$2}" /proc/self/mounts | sort -u); do
      case "$m" in /proc*|/sys*|/dev*) continue ;; esac
      mount -o remount,bind,ro "$m" 2>/dev/null || true
    done
    for d in /tmp /var/tmp /home /root; do [ -d "$d" ] && mount -t tmpfs -o mode=1777 tmpfs "$d"; done
    exec setpriv --reuid=pos --regid=pos --clear-groups --no-new-privs --bounding-set=-all \
      --inh-caps=-all /usr/bin/python3 "$0" "$1" $2' "$sbin/sandbox.py" "$fams" "$cmd" \
    >"$log" 2>&1 &
  pids+=($!)
}
sandboxed pos-discovery "$work/discovery.log"
api=http://127.0.0.1:$dport
wait_for 15 "pos-discovery (sandboxed)" curl -fsS "$api/healthz"
sandboxed pos-relay "$work/relay.log"
relay_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$etc/relay.json")
listed() { curl -fsS "$api/api/p2p/relays" | grep -q "$relay_id"; }
wait_for 15 "the sandboxed relay to register" listed
wait_for 15 "the relay's /healthz" curl -fsS "http://127.0.0.1:$hport/healthz"
ok "ExecStart lines run as pos in the sandbox; the relay registers through the sandboxed API"

token=$("$build/relay/pos-relay" token add --config "$etc/relay.json" 2>/dev/null | tail -n 1)
p2p=$build/client-lib/cli/pos-p2p
out=$("$p2p" relays --api-url "$api" --token "$token" --identity "$work/id0" --timeout 5)
grep -q accepted <<<"$out" || fail "pos-p2p relays: $out"
ok "QUIC: pos-p2p relays is accepted by the sandboxed relay"

mkdir -p "$work/in"
"$p2p" listen --out "$work/in" --identity "$work/id1" --api-url "$api" --token "$token" \
  >"$work/listen.log" 2>&1 &
pids+=($!)
wait_for 15 "the listener" grep -q '^relay: ' "$work/listen.log"
peer=$("$p2p" id --identity "$work/id1" 2>/dev/null | tail -n 1)
head -c 200000 /dev/urandom >"$work/file"
"$p2p" send --api-url "$api" --token "$token" --relay-only --identity "$work/id2" --to "$peer" \
  "$work/file" >"$work/send.log" 2>&1 || fail "relayed send: $(tail -n 3 "$work/send.log")"
cmp -s "$work/file" "$work/in/file" || fail "the relayed file differs"
ok "a relayed transfer through the sandboxed relay arrives intact"

relay_pid=$(pgrep -u pos -f "pos-relay run --config $etc/relay.json" | head -n 1)
kill -TERM "$relay_pid"
unlisted() { ! listed; }
wait_for 10 "the relay to deregister on SIGTERM" unlisted
ok "SIGTERM: the sandboxed relay deregisters"
if grep -E 'ERROR: AddressSanitizer|runtime error:|Operation not permitted|not supported' "$work"/relay.log "$work"/discovery.log; then
  fail "a sanitizer report or a refused call in the services' logs"
fi
ok "no sanitizer report or refused system call in the logs"
