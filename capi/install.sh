#!/usr/bin/env bash
# Builds libevnexus in release and installs, under $PREFIX (default
# /usr/local; $DESTDIR is prepended for staged installs):
#   lib/libevnexus.so.<version>, lib/libevnexus.so.0, lib/libevnexus.so
#   lib/libevnexus.a
#   include/evnexus.h
#   lib/pkgconfig/evnexus.pc
# Then: cc app.c $(pkg-config --cflags --libs evnexus)
# (with PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig outside the usual prefixes).
#
# Usage: PREFIX=$HOME/.local capi/install.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PREFIX=${PREFIX:-/usr/local}
LIBDIR=${LIBDIR:-$PREFIX/lib}
INCLUDEDIR=${INCLUDEDIR:-$PREFIX/include}
DESTDIR=${DESTDIR:-}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' capi/Cargo.toml | head -n 1)
soname=libevnexus.so.0

# The build prints what a static link needs besides libevnexus.a (cargo
# replays the note when the library is already built).
build_log=$(mktemp)
trap 'rm -f "$build_log"' EXIT
cargo rustc --release -p evnexus-capi --lib -- --print native-static-libs 2>&1 | tee "$build_log" >&2
libs_private=$(sed -n 's/.*native-static-libs: //p' "$build_log" | tail -n 1)
if [ -z "$libs_private" ]; then
    echo "install.sh: rustc printed no native-static-libs note" >&2
    exit 1
fi

out=${CARGO_TARGET_DIR:-target}/release
lib=$DESTDIR$LIBDIR
install -d "$lib/pkgconfig" "$DESTDIR$INCLUDEDIR"
install -m 0755 "$out/libevnexus.so" "$lib/libevnexus.so.$version"
ln -sfn "libevnexus.so.$version" "$lib/$soname"
ln -sfn "$soname" "$lib/libevnexus.so"
install -m 0644 "$out/libevnexus.a" "$lib/libevnexus.a"
install -m 0644 capi/include/evnexus.h "$DESTDIR$INCLUDEDIR/evnexus.h"
sed -e "s|@PREFIX@|$PREFIX|" -e "s|@LIBDIR@|$LIBDIR|" -e "s|@INCLUDEDIR@|$INCLUDEDIR|" \
    -e "s|@VERSION@|$version|" -e "s|@LIBS_PRIVATE@|$libs_private|" \
    capi/evnexus.pc.in >"$lib/pkgconfig/evnexus.pc"
echo "installed libevnexus $version under $DESTDIR$PREFIX" >&2
