#!/usr/bin/env bash
# Builds deploy/Dockerfile from source as an operator would (the full
# multi-stage build: compile in a Debian 12 build stage, copy the installed
# files into the runtime stage) and checks the result: every program runs as
# `pos`, libpos-p2p is in the loader's cache from the multiarch libdir, and
# no headers or static libraries went in. Prints the build time. Starts a
# Docker engine with tests/deploy/engine.sh when none answers and stops it
# again. Root only; a few minutes on 2 cores (the CI test uses the binaries
# CI already built instead: tests/deploy/test_deploy.sh).
#   scripts/docker-build.sh [TAG]     (default pos:latest)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
tag=${1:-pos:latest}
started=0
if ! timeout 5 docker info >/dev/null 2>&1; then
  tests/deploy/engine.sh start
  started=1
fi
[ $started = 1 ] && trap 'tests/deploy/engine.sh stop' EXIT
t0=$(date +%s)
docker build -q -f deploy/Dockerfile -t "$tag" . >/dev/null
echo "docker-build: built $tag from source in $(($(date +%s) - t0)) s"
docker run --rm --entrypoint bash "$tag" -c '
  set -e
  [ "$(id -un)" = pos ]
  for p in pos-relay pos-discovery pos-p2p pos-loadtest; do "$p" --help >/dev/null; done
  ldconfig -p | grep -q "libpos-p2p.so.0 .*lib/$(uname -m)-linux-gnu/libpos-p2p.so.0"
  ! ls /usr/include/pos /usr/lib/*/libpos-p2p.a 2>/dev/null
  echo "docker-build: programs run as pos; libpos-p2p in /usr/lib/$(uname -m)-linux-gnu"'
docker image inspect -f 'docker-build: {{.Size}} bytes' "$tag"
