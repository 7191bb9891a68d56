#!/usr/bin/env bash
# Installs, with apt-get, whatever a fresh Debian 12 machine lacks to build,
# run and test the suite. Packages already present are left alone, so a
# second run does nothing and needs no network.
#   scripts/deps.sh           build + run + test dependencies
#   scripts/deps.sh --bench   also the benchmark baselines (wrk, nginx, coturn)
set -euo pipefail

pkgs=(
  # build
  gcc g++ meson ninja-build pkg-config git
  libngtcp2-dev libngtcp2-crypto-gnutls-dev libgnutls28-dev libsodium-dev nettle-dev libgmp-dev
  libhiredis-dev libmicrohttpd-dev libjansson-dev libev-dev libcurl4-gnutls-dev
  # run
  redis-server redis-tools curl ca-certificates gnutls-bin
  # tests: sanitizers, fuzzing, formatting, network namespaces, mDNS peers
  clang libclang-rt-14-dev clang-format python3 python3-zeroconf
  # man pages (meson builds them when scdoc is found; the test renders them)
  scdoc groff-base
  iproute2 iptables tcpdump avahi-daemon avahi-utils dbus procps psmisc
  # the deployment tests (tests/deploy): a Docker engine, compose 1.29, a base
  # image; systemd-analyze, sysusers, tmpfiles and seccomp for the units' test
  docker.io docker-compose debootstrap systemd python3-seccomp
)
if [ "${1:-}" = "--bench" ]; then
  pkgs+=(wrk nginx-light coturn valgrind)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages: ${missing[*]}" >&2
  echo "deps: run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Package scripts must not start daemons (redis, avahi, nginx) on this machine:
# the suite starts its own on loopback.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=1
fi
trap '[ $created_policy = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
