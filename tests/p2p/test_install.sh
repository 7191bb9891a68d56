#!/bin/sh
# Packaging test: install the build into a temporary root (meson install
# --destdir), then compile client-lib/examples/hello.c against the INSTALLED
# header, shared library and pos-p2p.pc only (pkg-config with a sysroot), run
# it (peer id; a session between two copies on loopback), and link it
# statically against libpos-p2p.a (its dependencies from the .pc's private fields).
# Usage: test_install.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

meson install -C "$build" --destdir "$tmp/root" --no-rebuild --quiet >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "meson install"; }
pc=$(find "$tmp/root" -name pos-p2p.pc | head -n1)
[ -n "$pc" ] || fail "pos-p2p.pc not installed"
hdr=$(find "$tmp/root" -path '*/include/pos/p2p.h' | head -n1)
[ -n "$hdr" ] || fail "pos/p2p.h not installed"
grep -q '#include "' "$hdr" && fail "the installed header includes a private header"
so=$(find "$tmp/root" -name 'libpos-p2p.so.0' | head -n1)
[ -n "$so" ] || fail "libpos-p2p.so.0 (SONAME) not installed"
readelf -d "$so" | grep -q 'SONAME.*libpos-p2p.so.0' || fail "SONAME is not libpos-p2p.so.0"
libdir=$(dirname "$so")
[ -f "$libdir/libpos-p2p.a" ] || fail "libpos-p2p.a not installed"

export PKG_CONFIG_SYSROOT_DIR="$tmp/root"
export PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_LIBDIR=$(dirname "$pc"):/usr/lib/x86_64-linux-gnu/pkgconfig:/usr/lib/pkgconfig:/usr/share/pkgconfig
# A sanitized build needs the sanitizer runtime when linking the example.
san=""
if nm -D "$so" 2>/dev/null | grep -q __asan_init; then san="-fsanitize=address,undefined"; fi

cc -std=c11 -Wall -Werror $san "$src/client-lib/examples/hello.c" \
    $(pkg-config --cflags --libs pos-p2p) -o "$tmp/hello" || fail "build against the installed library"
# Static libpos-p2p (common folded in), its dependencies as the system's shared
# libraries: Requires.private and Libs.private name them all.
reqs=$(pkg-config --print-requires-private pos-p2p | awk '{print $1}')
privs=$(sed -n 's/^Libs.private: //p' "$pc")
cc -std=c11 -Wall -Werror $san "$src/client-lib/examples/hello.c" \
    $(pkg-config --cflags pos-p2p) "$libdir/libpos-p2p.a" $(pkg-config --libs $reqs) $privs \
    -o "$tmp/hello-static" || fail "static build against libpos-p2p.a"
ldd "$tmp/hello-static" | grep -q libpos-p2p && fail "hello-static uses the shared library"

export LD_LIBRARY_PATH="$libdir"
export ASAN_OPTIONS=detect_leaks=1
ldd "$tmp/hello" | grep -q "$libdir/libpos-p2p.so.0" || fail "hello does not use the installed library"
out=$("$tmp/hello" "$tmp/id-a") || fail "hello (peer id)"
echo "$out" | grep -q '^peer id: ' || fail "hello printed no peer id: $out"

"$tmp/hello" "$tmp/id-b" listen >"$tmp/listen.out" 2>&1 &
lpid=$!
i=0
while ! grep -q '^port: ' "$tmp/listen.out" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 100 ] || { kill $lpid; fail "listener did not start"; }
    sleep 0.1
done
port=$(sed -n 's/^port: //p' "$tmp/listen.out")
peer=$(sed -n 's/^peer id: //p' "$tmp/listen.out")
sout=$("$tmp/hello-static" "$tmp/id-a" send "127.0.0.1:$port" "$peer") || { kill $lpid; fail "hello send: $sout"; }
wait $lpid || fail "hello listen: $(cat "$tmp/listen.out")"
echo "$sout" | grep -q 'received: hello back' || fail "no answer: $sout"
grep -q 'received: hello' "$tmp/listen.out" || fail "listener got nothing"
echo "install test: OK (shared + static, session between the two)"
