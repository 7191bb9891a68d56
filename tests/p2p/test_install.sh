#!/bin/sh
# Packaging test: install the build into a temporary root (meson install
# --destdir), then compile client-lib/examples/hello.c against the INSTALLED
# header, shared library and pos-p2p.pc only (pkg-config with a sysroot), run
# it (peer id; a session between two copies on loopback), and link it
# statically against libpos-p2p.a (its dependencies from the .pc's private fields).
# Then the same for the pos-p2p command (client-lib/cli/*.c): it is built
# from the installed header and library alone plus the project's internal
# common library (not installed; taken from BUILD_DIR), and sends a file
# directly from one copy to another on loopback.
# Usage: test_install.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
tmp=$(mktemp -d)
cpid=""
trap '[ -z "$cpid" ] || kill $cpid 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

meson install -C "$build" --destdir "$tmp/root" --no-rebuild --quiet >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "meson install"; }
pc=$(find "$tmp/root" -name pos-p2p.pc | head -n1)
[ -n "$pc" ] || fail "pos-p2p.pc not installed"
hdr=$(find "$tmp/root" -path '*/include/pos/p2p.h' | head -n1)
[ -n "$hdr" ] || fail "pos/p2p.h not installed"
grep -q '#include "' "$hdr" && fail "the installed header includes a private header"
mhdr=$(dirname "$hdr")/mdns.h
[ -f "$mhdr" ] || fail "pos/mdns.h not installed beside pos/p2p.h"
grep -q '#include "' "$mhdr" && fail "pos/mdns.h includes a private header"
for h in "$hdr" "$mhdr"; do
    [ "$(wc -l <"$h")" -le 800 ] || fail "$h is over 800 lines"
done
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

# pos-p2p on the public header alone: no folder of the library's sources on
# the include path, only the installed pos/p2p.h, pos/mdns.h and the common headers.
cli="$src/client-lib/cli"
common_a="$build/common/libposcommon.a"
[ -f "$common_a" ] || fail "$common_a missing (build first)"
cc -std=c11 -D_GNU_SOURCE -Wall -Wno-format-truncation -Werror $san -I"$src/common" \
    "$cli"/*.c $(pkg-config --cflags pos-p2p jansson libsodium gnutls) \
    $(pkg-config --libs pos-p2p) "$common_a" $(pkg-config --libs jansson libsodium gnutls) -lev \
    -o "$tmp/pos-p2p" || fail "pos-p2p does not build against the installed library"
ldd "$tmp/pos-p2p" | grep -q "$libdir/libpos-p2p.so.0" || fail "pos-p2p does not use the installed library"
id_out=$("$tmp/pos-p2p" id --identity "$tmp/cli-a" 2>"$tmp/id.err") || fail "pos-p2p id: $id_out"
echo "$id_out" | tail -n1 | grep -Eq '^[A-Za-z0-9+/]{43}$' || fail "pos-p2p id printed no peer id: $id_out"

mkdir "$tmp/inbox"
"$tmp/pos-p2p" listen --identity "$tmp/cli-b" --out "$tmp/inbox" >"$tmp/cli-listen.out" 2>&1 &
cpid=$!
i=0
while ! grep -q '^listening' "$tmp/cli-listen.out" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 150 ] || fail "pos-p2p listen did not start: $(cat "$tmp/cli-listen.out")"
    sleep 0.1
done
port=$(sed -n 's/^direct: UDP port //p' "$tmp/cli-listen.out")
peer=$(sed -n 's/^peer id: //p' "$tmp/cli-listen.out")
head -c 1000000 /dev/urandom >"$tmp/payload.bin"
sout=$("$tmp/pos-p2p" send --identity "$tmp/cli-a" --to "$peer" --addr "127.0.0.1:$port" \
    "$tmp/payload.bin" 2>&1) || fail "pos-p2p send: $sout"
echo "$sout" | grep -q 'path: direct' || fail "pos-p2p send did not go direct: $sout"
i=0
while ! grep -q '^received payload.bin' "$tmp/cli-listen.out"; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "listener reported nothing: $(cat "$tmp/cli-listen.out")"
    sleep 0.1
done
cmp "$tmp/payload.bin" "$tmp/inbox/payload.bin" || fail "the received file differs"
kill $cpid
wait $cpid || true
cpid=""
echo "install test: OK (hello shared + static, session between the two; pos-p2p built" \
    "against the installed library sent a file directly)"
