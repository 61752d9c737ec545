#!/usr/bin/env bash
# Instructions per event (callgrind's Ir, user space) of the engine's event
# paths, for the working tree and for other commits side by side. A count
# that does not move between runs, for changes that a timed bench on a
# noisy machine cannot resolve. See perf/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: perf/instructions.sh [OPTIONS]

Runs examples/dispatch.rs (the built-in loops) and examples/reports.rs
(the application's reports) under valgrind's callgrind, each case twice,
at N and at 2N events, and prints instructions per event:
(Ir(2N) - Ir(N)) / (events(2N) - events(N)), so process start, fd
creation, registration and teardown cancel out. Ir counts the
instructions user space executed; it does not see cache misses, locked
instructions' cost or the kernel.

With --rev, each commit is checked out in a temporary worktree (outside
the repository, so that cargo does not take it for a member of this
workspace), the working tree's two examples and the modules they
include are copied into it (so every side runs the same drivers; they use only
the public API), and the table gets a column per side, the first side
being the reference of the ratio columns.

options:
  --rev REV      a side: a commit, or `.` for the working tree as it is;
                 repeat for more sides                       [.]
  --cases LIST   comma-separated cases:
                   BACKEND:SHAPE:FDS  examples/dispatch.rs, BACKEND uring
                                      or epoll, SHAPE ready, busy or
                                      busy-edge (see its --help)
                   report:SHAPE       examples/reports.rs, SHAPE fd_live,
                                      fd_stale, timeout_live, timeout_stale,
                                      register, loop_fire or loop_cancel
                 [epoll:ready:1,uring:ready:1,epoll:ready:1024,uring:ready:64,
                  epoll:busy:64,uring:busy:64,epoll:busy:1024,
                  uring:busy-edge:1024,report:fd_live,report:fd_stale,
                  report:timeout_stale,report:timeout_live,report:register,
                  report:loop_fire,report:loop_cancel]
  --events N     N for the loop cases (rounded up to whole batches by the
                 driver; the count uses the events it reports)  [20480]
  --reports N    N for the report cases                         [100000]
  -h, --help     print this help

Installs valgrind (apt: valgrind) if missing. Honours CARGO_TARGET_DIR
(default target/). Writes the table to perf/out/instructions.txt.
EOF
}

REVS=()
CASES=epoll:ready:1,uring:ready:1,epoll:ready:1024,uring:ready:64,epoll:busy:64,uring:busy:64,epoll:busy:1024,uring:busy-edge:1024,report:fd_live,report:fd_stale,report:timeout_stale,report:timeout_live,report:register,report:loop_fire,report:loop_cancel
EVENTS=20480
REPORTS=100000
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --rev) REVS+=("${2:?--rev needs a value}"); shift 2 ;;
    --rev=*) REVS+=("${1#*=}"); shift ;;
    --cases) CASES=${2:?--cases needs a value}; shift 2 ;;
    --cases=*) CASES=${1#*=}; shift ;;
    --events) EVENTS=${2:?--events needs a value}; shift 2 ;;
    --events=*) EVENTS=${1#*=}; shift ;;
    --reports) REPORTS=${2:?--reports needs a value}; shift 2 ;;
    --reports=*) REPORTS=${1#*=}; shift ;;
    *) printf 'instructions.sh: unknown argument %s\n\n' "$1" >&2; usage >&2; exit 2 ;;
  esac
done
[ ${#REVS[@]} -gt 0 ] || REVS=(.)
for n in "$EVENTS" "$REPORTS"; do
  case "$n" in
    ''|*[!0-9]*|0) echo "instructions.sh: --events and --reports take a positive number" >&2; exit 2 ;;
  esac
done

# shellcheck source=perf/lib.sh
. perf/lib.sh
need_python3
if ! command -v valgrind >/dev/null 2>&1; then
  apt_install valgrind
  hash -r
fi
command -v valgrind >/dev/null 2>&1 || die "valgrind is still missing after installing it"

WORK="$TARGET_DIR/instructions"
RAW="$OUT_DIR/instructions"
mkdir -p "$WORK" "$RAW"
rm -f "$RAW"/*.ir "$RAW"/*.err
REPO=$PWD
TREES=$(mktemp -d "${TMPDIR:-/tmp}/evnexus-instructions.XXXXXX")
# shellcheck disable=SC2317  # (run by the trap)
remove_trees() {
  local t
  for t in "$TREES"/src-*; do
    [ -d "$t" ] && git -C "$REPO" worktree remove --force "$t"
  done
  rm -rf "$TREES"
}
trap remove_trees EXIT

# build SIDE: builds the two examples for a side and copies them to
# $WORK/bin-LABEL/; prints LABEL.
build() {
  local rev=$1 label src
  if [ "$rev" = . ]; then
    label=worktree
    src=$REPO
  else
    local sha
    sha=$(git rev-parse --verify --quiet "$rev^{commit}") || die "--rev $rev: not a commit"
    label=${sha:0:10}
    src="$TREES/src-$label"
    if [ ! -d "$src" ]; then
      git worktree add --detach --quiet "$src" "$sha" >&2
    fi
    mkdir -p "$src/examples/support" "$src/tests/common"
    cp "$REPO/examples/dispatch.rs" "$REPO/examples/reports.rs" "$src/examples/"
    cp "$REPO/examples/support/cli.rs" "$src/examples/support/"
    cp "$REPO/tests/common/no_hooks.rs" "$src/tests/common/"
  fi
  log "building the examples for $rev ($label)"
  # One target directory for every side, so the dependencies are built
  # once. The crate itself is cleaned first: every side's crate gets the
  # same metadata hash (cargo hashes a path relative to its workspace), so
  # cargo's mtime check would take one side's build for the other's.
  (cd "$src" && export CARGO_TARGET_DIR="$WORK/target" \
    && cargo clean --release --quiet -p evnexus \
    && cargo build --release --quiet --example dispatch --example reports) \
    || die "$rev: the examples do not build there (an API they use is newer than the commit?)"
  mkdir -p "$WORK/bin-$label"
  cp "$WORK/target/release/examples/dispatch" "$WORK/target/release/examples/reports" \
    "$WORK/bin-$label/"
  printf '%s\n' "$label"
}

LABELS=()
for rev in "${REVS[@]}"; do
  LABELS+=("$(build "$rev")")
done
# The worktrees are not needed once built.
remove_trees
trap - EXIT

# measure LABEL CASE N FILE: one run under callgrind; FILE gets "ir events".
measure() {
  local label=$1 case=$2 n=$3 file=$4 bin args
  case "$case" in
    report:*)
      bin="$WORK/bin-$label/reports"
      args=(--shape "${case#report:}" --reports "$n")
      ;;
    *:*:*)
      local backend shape fds rest
      backend=${case%%:*}
      rest=${case#*:}
      shape=${rest%%:*}
      fds=${rest#*:}
      bin="$WORK/bin-$label/dispatch"
      args=(--backend "$backend" --fds "$fds" --events "$n")
      case "$shape" in
        ready) ;;
        busy) args+=(--busy) ;;
        busy-edge) args+=(--busy --edge) ;;
        *) die "--cases: shape '$shape' of '$case' is not ready, busy or busy-edge" ;;
      esac
      ;;
    *) die "--cases: '$case' is neither BACKEND:SHAPE:FDS nor report:SHAPE" ;;
  esac
  local out err
  out=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "${args[@]}" 2>"$file.err") \
    || die "$case on $label failed under valgrind (see $file.err)"
  err=$(cat "$file.err")
  local ir events
  ir=$(sed -n 's/^==[0-9]*== Collected : \([0-9]*\).*/\1/p' <<<"$err")
  # dispatch prints events=, reports prints reports=.
  events=$(sed -n 's/^result .* events=\([0-9]*\).*/\1/p; s/^result .* reports=\([0-9]*\).*/\1/p' <<<"$out" | head -n1)
  [ -n "$ir" ] && [ -n "$events" ] || die "$case on $label: no instruction count or event count (see $file.err)"
  printf '%s %s\n' "$ir" "$events" >"$file"
}

IFS=, read -r -a case_list <<<"$CASES"
for c in "${case_list[@]}"; do
  case "$c" in
    report:*) n=$REPORTS ;;
    *) n=$EVENTS ;;
  esac
  for label in "${LABELS[@]}"; do
    log "callgrind: $c on $label, $n and $((2 * n)) events"
    measure "$label" "$c" "$n" "$RAW/$label-${c//:/_}-1.ir"
    measure "$label" "$c" "$((2 * n))" "$RAW/$label-${c//:/_}-2.ir"
  done
done

python3 - "$RAW" "$CASES" "${REVS[@]}" -- "${LABELS[@]}" >"$OUT_DIR/instructions.txt" <<'PY'
import os, sys
raw, cases = sys.argv[1], sys.argv[2].split(",")
rest = sys.argv[3:]
cut = rest.index("--")
revs, labels = rest[:cut], rest[cut + 1:]

def per_event(label, case):
    stem = os.path.join(raw, f"{label}-{case.replace(':', '_')}")
    ir1, ev1 = map(int, open(stem + "-1.ir").read().split())
    ir2, ev2 = map(int, open(stem + "-2.ir").read().split())
    return (ir2 - ir1) / (ev2 - ev1)

names = [r if r == l or r == "." else f"{r} ({l})" for r, l in zip(revs, labels)]
names = ["worktree" if r == "." else n for r, n in zip(revs, names)]
short = ["worktree" if r == "." else r for r in revs]
head = ["case"] + names + [f"{s} / {short[0]}" for s in short[1:]]
rows = []
for c in cases:
    v = [per_event(l, c) for l in labels]
    rows.append([c] + [f"{x:,.1f}" for x in v] + [f"{x / v[0]:.3f}" for x in v[1:]])
print("Instructions per event (callgrind Ir, user space): (Ir(2N) - Ir(N)) / (events(2N) - events(N)).")
print("BACKEND:SHAPE:FDS: examples/dispatch.rs; report:SHAPE: examples/reports.rs.")
print()
widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
for i, r in enumerate([head] + rows):
    print("  ".join(x.ljust(w) if j == 0 else x.rjust(w) for j, (x, w) in enumerate(zip(r, widths))).rstrip())
    if i == 0:
        print("  ".join("-" * w for w in widths))
PY
cat "$OUT_DIR/instructions.txt"
echo
echo "table: $OUT_DIR/instructions.txt"
