#!/bin/sh
# Runs Avahi inside the current network namespace with a private /run (a
# new mount namespace with tmpfs), its own D-Bus system bus and avahi-daemon,
# then one client command:
#   avahi_ns.sh PIDFILE browse                  avahi-browse -rpk _sd._udp
#   avahi_ns.sh PIDFILE publish NAME PORT TXT.. avahi-publish -s NAME _sd._udp PORT TXT..
#   avahi_ns.sh PIDFILE idle                    only the daemons (enter with nsenter -m -n)
# The daemons' pids are written to PIDFILE (the test kills them even if this
# script is killed hard); on SIGTERM the script kills them itself.
set -eu
pidfile=$1
shift
if [ -z "${POS_AVAHI_INNER:-}" ]; then
    POS_AVAHI_INNER=1 exec unshare -m --propagation private sh "$0" "$pidfile" "$@"
fi
mount -t tmpfs tmpfs /run
mkdir -p /run/dbus /run/avahi-daemon
conf=/run/avahi.conf
cat > "$conf" <<CONF
[server]
allow-interfaces=eth0
use-ipv4=yes
use-ipv6=yes
enable-dbus=yes
[publish]
publish-workstation=no
publish-hinfo=no
[wide-area]
enable-wide-area=no
CONF
dbus-daemon --system --fork --print-pid > /run/dbus.pid
avahi-daemon --no-drop-root --no-chroot -D -f "$conf" --no-rlimits
i=0
while [ ! -f /run/avahi-daemon/pid ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
echo "$(cat /run/dbus.pid) $(cat /run/avahi-daemon/pid 2>/dev/null)" > "$pidfile"
cleanup() {
    kill $(cat "$pidfile") 2>/dev/null || true
    [ -n "${child:-}" ] && kill "$child" 2>/dev/null || true
    exit 0
}
trap cleanup TERM INT
# wait until the daemon answers on D-Bus
i=0
while ! avahi-browse -at >/dev/null 2>&1 && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
mode=$1
shift
if [ "$mode" = browse ]; then
    avahi-browse -rpk _sd._udp &
elif [ "$mode" = idle ]; then
    echo ready
    sleep 100000 &
else
    name=$1 port=$2
    shift 2
    avahi-publish -s "$name" _sd._udp "$port" "$@" &
fi
child=$!
wait "$child"
