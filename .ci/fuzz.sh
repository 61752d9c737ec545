#!/usr/bin/env bash
# Fuzzes the engine for FUZZ_SECONDS seconds per target (default 30), each
# target in turn (FUZZ_TARGETS, default both):
#   engine_ops         sequential orderings on a hooks engine against an
#                      exact reference model (fuzz/src/ops/);
#   engine_concurrent  the same calls from several threads at once on the
#                      hooks backend and the io_uring and epoll loops,
#                      against linearisable outcomes (fuzz/src/concurrent/).
# Extra arguments go to libFuzzer, e.g. `.ci/fuzz.sh -jobs=2 -workers=2`.
#
# Uses nightly when rustup has it (with AddressSanitizer, cargo-fuzz's
# default); otherwise stable with RUSTC_BOOTSTRAP=1 and no sanitizer.
# New inputs go to fuzz/corpus/<target> (not committed); the committed
# seeds are fuzz/seeds/<target> (fuzz/gen_seeds.py and
# fuzz/gen_concurrent_seeds.py write them). A failing input is saved under
# fuzz/artifacts/<target>/; replay it with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
# and print it decoded with `cargo +nightly fuzz fmt <target> <file>`.
# engine_concurrent runs real threads: a finding may need a few replays
# (`-runs=20` after the file) to show again.
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

for target in ${FUZZ_TARGETS:-engine_ops engine_concurrent}; do
    echo "fuzz.sh: $target for ${FUZZ_SECONDS:-30} s" >&2
    mkdir -p "fuzz/corpus/$target"
    cargo ${toolchain[@]+"${toolchain[@]}"} fuzz run ${build_flags[@]+"${build_flags[@]}"} "$target" \
        "fuzz/corpus/$target" "fuzz/seeds/$target" \
        -- -max_total_time="${FUZZ_SECONDS:-30}" -timeout=10 "$@"
done
