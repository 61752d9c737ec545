#!/usr/bin/env bash
# Fuzzes the engine against its reference model (fuzz/fuzz_targets/engine_ops.rs)
# for FUZZ_SECONDS seconds (default 30). Extra arguments go to libFuzzer,
# e.g. `.ci/fuzz.sh -jobs=2 -workers=2`.
#
# Uses nightly when rustup has it (with AddressSanitizer, cargo-fuzz's
# default); otherwise stable with RUSTC_BOOTSTRAP=1 and no sanitizer.
# New inputs go to fuzz/corpus/engine_ops (not committed); the committed
# seeds are fuzz/seeds/engine_ops. A failing input is saved under
# fuzz/artifacts/engine_ops/; replay it with
#   cargo +nightly fuzz run engine_ops fuzz/artifacts/engine_ops/<file>
# and print it decoded with `cargo +nightly fuzz fmt engine_ops <file>`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

toolchain=()
build_flags=()
if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    echo "fuzz.sh: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1, no sanitizer" >&2
    export RUSTC_BOOTSTRAP=1
    build_flags=(-s none)
fi

mkdir -p fuzz/corpus/engine_ops
cargo ${toolchain[@]+"${toolchain[@]}"} fuzz run ${build_flags[@]+"${build_flags[@]}"} engine_ops \
    fuzz/corpus/engine_ops fuzz/seeds/engine_ops \
    -- -max_total_time="${FUZZ_SECONDS:-30}" -timeout=10 "$@"
