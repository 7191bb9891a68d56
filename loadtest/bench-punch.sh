#!/usr/bin/env bash
# The hole-punching benchmark of issue 11 (a script, not a test): every
# scenario of the issue's table (public, EIM, CGNAT, same-NAT, symmetric
# pairs; 40 ms RTT with loss; the direct path blackholed mid-transfer; the
# NAT mapping flushed mid-transfer) in the project's NAT lab
# (tests/natlab/natlab.py), RUNS transfers each of a SIZE_MB file with
# `pos-p2p send --json`. Prints per scenario: success rate, path counts, time
# to direct p50/p95, bytes relayed before the upgrade, throughput, and whether
# the relay's per-circuit counters and the routers' counters agree with the
# reported path; then direct vs relayed throughput for the same file.
# Builds a release tree in build-bench (no sanitizers) unless BUILD is set.
# Needs root (network namespaces); exits 77 without. Everything it starts
# lives in namespaces it removes on exit.
# usage: loadtest/bench-punch.sh [RUNS (default 20)] [SIZE_MB (default 20)] [--only NAME,...]
set -euo pipefail
runs=20
size=20
if [[ ${1:-} =~ ^[0-9]+$ ]]; then runs=$1; shift; fi
if [[ ${1:-} =~ ^[0-9]+(\.[0-9]+)?$ ]]; then size=$1; shift; fi
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build-bench}
log=$(mktemp /tmp/pos-bench-punch-XXXXXX.log)

if [ ! -d "$build" ]; then
    meson setup "$build" "$root" -Dbuildtype=release >/dev/null
fi
if ! ninja -C "$build" relay/pos-relay discovery-api/pos-discovery client-lib/cli/pos-p2p \
    >"$log" 2>&1; then
    tail -20 "$log"
    rm -f "$log"
    echo "bench-punch: the build failed" >&2
    exit 1
fi
rm -f "$log"
POS_BUILD_DIR=$build POS_SOURCE_DIR=$root PYTHONDONTWRITEBYTECODE=1 \
    exec /usr/bin/python3 "$root/loadtest/bench_punch.py" --runs "$runs" --size "$size" "$@"
