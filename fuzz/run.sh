#!/usr/bin/env bash
# Runs one libFuzzer target briefly on its seed corpus without writing into
# the source tree: new inputs go to a temporary directory that is removed.
# A crash exits 1 (libFuzzer's own 77 would read as a skipped test to meson).
# usage: fuzz/run.sh TARGET SEED_DIR SECONDS
set -euo pipefail
target=$1 seeds=$2 seconds=$3
work=$(mktemp -d /tmp/pos-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$target" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -error_exitcode=1 \
    "$work" "$seeds"
