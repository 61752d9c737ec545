#!/usr/bin/env bash
# The README's install, from a fresh clone of this repository's HEAD:
# capi/install.sh into a temporary prefix, then the README's C quick start
# compiled with the pkg-config line, linked against the shared library,
# and run. Reuses this checkout's build cache (CARGO_TARGET_DIR defaults to
# its target/) unless CARGO_TARGET_DIR says otherwise; FRESH_TARGET=1
# builds from nothing instead.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git clone --quiet "$repo" "$work/evnexus"
if [ "${FRESH_TARGET:-0}" = 1 ]; then
    export CARGO_TARGET_DIR="$work/target"
else
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
fi
cd "$work/evnexus"
PREFIX="$work/prefix" capi/install.sh

export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
# shellcheck disable=SC2046 # the pkg-config words are meant to split
cc capi/examples/quickstart.c $(pkg-config --cflags --libs evnexus) -o "$work/quickstart"
LD_LIBRARY_PATH="$work/prefix/lib" "$work/quickstart"
echo "test-install: installed from a fresh clone; the quick start links with pkg-config and runs"
