#!/usr/bin/env bash
# Every criterion bench of the workspace on its own, several times, each run
# saved as a baseline (run1, run2, ...): the input of
# `python3 perf/report.py --baseline run1,run2,run3`. See perf/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: perf/bench-runs.sh [OPTIONS] [-- CRITERION_ARGS...]

Runs each bench (one `cargo bench --bench NAME` at a time, nothing else
beside it) --runs times, round-robin: every bench's run 1, then every
bench's run 2, ... so that a drift of the machine over the hour falls on
every bench alike. Run K is saved as criterion baseline `runK` (and the
wake-up quantiles of benches/wakeup.rs as
<criterion dir>/wakeup-latency.runK.json). Then:

  python3 perf/report.py --baseline run1,run2,run3 --write-readme
  python3 perf/report.py --baseline run1,run2,run3 --section capi --write-readme

options:
  --runs N        runs of each bench                                    [3]
  --benches LIST  comma-separated, from: arena, occurred, loop, timers,
                  scaling, wakeup, occurred_c (the C ABI's, capi/)  [all]
  --first K       number the runs from K (add runs to earlier ones)     [1]
  -h, --help      print this help

CRITERION_ARGS go to every bench (e.g. -- --measurement-time 2).
Honours CARGO_TARGET_DIR. Stop anything else running on the machine first.
EOF
}

RUNS=3
FIRST=1
BENCHES=arena,occurred,loop,timers,scaling,wakeup,occurred_c
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --benches) BENCHES="$2"; shift 2 ;;
    --first) FIRST="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) usage >&2; exit 2 ;;
  esac
done
case "$RUNS$FIRST" in
  *[!0-9]*) usage >&2; exit 2 ;;
esac

# shellcheck source=perf/lib.sh
. perf/lib.sh
CRITERION_DIR="${CRITERION_HOME:-$TARGET_DIR/criterion}"

IFS=, read -r -a benches <<<"$BENCHES"
package_of() {
  case "$1" in
    arena|occurred|loop|timers|scaling|wakeup) echo evnexus ;;
    occurred_c) echo evnexus-capi ;;
    *) die "unknown bench: $1 (see --help)" ;;
  esac
}
for b in "${benches[@]}"; do package_of "$b" >/dev/null; done

log "building the benches"
for b in "${benches[@]}"; do
  cargo bench --quiet -p "$(package_of "$b")" --bench "$b" --no-run
done

last=$((FIRST + RUNS - 1))
for k in $(seq "$FIRST" "$last"); do
  for b in "${benches[@]}"; do
    log "== run $k of $FIRST..$last: $b ($(date -u +%H:%M:%S))"
    cargo bench --quiet -p "$(package_of "$b")" --bench "$b" -- --save-baseline "run$k" "$@"
    if [ "$b" = wakeup ] && [ -f "$CRITERION_DIR/wakeup-latency.json" ]; then
      cp "$CRITERION_DIR/wakeup-latency.json" "$CRITERION_DIR/wakeup-latency.run$k.json"
    fi
  done
done
names=$(seq -s, -f 'run%g' "$FIRST" "$last")
log "done: python3 perf/report.py --baseline $names --write-readme"
