#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs missing dependencies, checks
# formatting, builds with AddressSanitizer + UBSan and warnings as errors,
# runs every unit and integration test, builds the fuzz targets with clang
# and runs each briefly on its seed corpus, and last the deployment test
# (tests/deploy: a Docker engine, the compose stack; root only, and it changes
# the host's firewall while it runs, so it comes after everything else).
# Ends with "N passed, N failed".
#   scripts/test.sh              everything
#   scripts/test.sh SUITE...     only these suites (unit, discovery, relay, mdns, p2p, natlab,
#                                fuzz, deploy)
# natlab (tests/natlab: network namespaces with NAT routers) needs root and is
# skipped without it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/deps.sh

echo "== format (clang-format --dry-run)"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t sources < <(git ls-files '*.c' '*.h')
else
  mapfile -t sources < <(find common relay discovery-api client-lib loadtest tests fuzz -name '*.[ch]')
fi
format_failed=0
if [ ${#sources[@]} -gt 0 ] && ! clang-format --dry-run --Werror "${sources[@]}"; then
  format_failed=1
  echo "format: the files above differ from .clang-format (run clang-format -i on them)"
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# The integration tests' relays run with this many workers (config key workers); the relay
# suite adds a smoke test with one (relay-circuits-one-worker) and tests with two explicitly.
export POS_TEST_RELAY_WORKERS=${POS_TEST_RELAY_WORKERS:-2}

suites=("$@")
want() {  # want SUITE: whether to run it
  [ ${#suites[@]} -eq 0 ] && return 0
  local s; for s in "${suites[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1
}

echo "== build (ASan + UBSan, -Werror)"
if [ ! -d build-test ]; then
  meson setup build-test -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true \
    --buildtype=debugoptimized >/dev/null
fi
ninja -C build-test

args=()
for s in unit discovery relay mdns p2p natlab; do
  want "$s" && args+=(--suite "$s")
done
rm -f build-test/meson-logs/testlog.json build-fuzz/meson-logs/testlog.json
test_rc=0
if [ ${#args[@]} -gt 0 ]; then
  echo "== tests"
  meson test -C build-test --print-errorlogs --num-processes 1 "${args[@]}" || test_rc=$?
fi

fuzz_rc=0
if want fuzz; then
  echo "== fuzz (clang, libFuzzer, ASan + UBSan)"
  if [ ! -d build-fuzz ]; then
    CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined \
      -Db_lundef=false --buildtype=debugoptimized >/dev/null
  fi
  ninja -C build-fuzz
  meson test -C build-fuzz --suite fuzz --print-errorlogs --num-processes 1 || fuzz_rc=$?
fi

# Last: it starts dockerd, which sets the host's FORWARD policy to DROP until
# the test stops it again. A missing engine is a failure, never a skip.
deploy_rc=0
rm -f build-test/meson-logs/deploy.txt
if want deploy; then
  echo "== deploy (systemd units sandboxed; Docker engine, deploy/compose.yaml)"
  POS_BUILD_DIR="$root/build-test" tests/deploy/test_units.sh 2>&1 | tee build-test/meson-logs/deploy.txt ||
    deploy_rc=1
  POS_BUILD_DIR="$root/build-test" tests/deploy/test_deploy.sh 2>&1 | tee -a build-test/meson-logs/deploy.txt ||
    deploy_rc=1
fi

# One closing line over everything that ran: meson's own logs are the source.
/usr/bin/python3 - "$root" "$format_failed" "$deploy_rc" <<'PY'
import json, os, re, sys
root, format_failed, deploy_rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# Each test program prints "NAME: N passed, N failed[, N skipped]"; count those
# checks, and a program that printed none (a fuzz run) as one.
line_re = re.compile(r"^\S*:? ?(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$", re.M)
passed = failed = skipped = 0
for d in ("build-test", "build-fuzz"):
    log = os.path.join(root, d, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        continue
    for line in open(log):
        r = json.loads(line)
        res = r.get("result")
        found = line_re.findall(r.get("stdout") or "")
        if found and res in ("OK", "FAIL", "SKIP"):
            p, f, s = (sum(int(x[i] or 0) for x in found) for i in range(3))
            passed, failed, skipped = passed + p, failed + f, skipped + s
            if res == "FAIL" and f == 0:
                failed += 1
        elif res in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif res == "SKIP":
            skipped += 1
        else:
            failed += 1
        if res not in ("OK", "EXPECTEDFAIL"):
            print(f"{res.lower()}: {r['name']}")
deploy_log = os.path.join(root, "build-test", "meson-logs", "deploy.txt")
if os.path.exists(deploy_log):
    found = line_re.findall(open(deploy_log, errors="replace").read())
    p, f = (sum(int(x[i] or 0) for x in found) for i in range(2))
    passed, failed = passed + p, failed + f
    if deploy_rc and f == 0:
        failed += 1
    if deploy_rc:
        print("failed: deploy")
if format_failed:
    failed += 1
    print("failed: clang-format check")
else:
    passed += 1
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
PY
if [ "$test_rc" -ne 0 ] || [ "$fuzz_rc" -ne 0 ] || [ "$format_failed" -ne 0 ] || [ "$deploy_rc" -ne 0 ]; then
  exit 1
fi
