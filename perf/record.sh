#!/usr/bin/env bash
# perf record (cpu-clock, call graphs) of the load binary, an example or a
# criterion bench, then a flame graph SVG in perf/out/. See perf/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: perf/record.sh [OPTIONS] TARGET [ARGS...]

Builds TARGET (release profile, with debug info), runs it under
`perf record -e cpu-clock` with call graphs, and writes to perf/out/:
  NAME.perf.data   the recording (perf report -i ...)
  NAME.folded      collapsed stacks (inferno-collapse-perf)
  NAME.svg         the flame graph (open in a browser: hover, click to zoom)
and prints the top functions by self time.

TARGET:
  sim [ARGS]                     the load simulation (src/bin/evnexus/),
                                 e.g. sim --backend uring --seconds 5
  example NAME [ARGS]            examples/NAME.rs,
                                 e.g. example dispatch --backend uring --fds 1024
  bench NAME [FILTER [ARGS]]     a criterion bench (benches/NAME.rs), each
                                 matching benchmark run for $PROFILE_TIME s
                                 (default 5) with --profile-time, e.g.
                                 bench loop evnexus-uring

options:
  --freq HZ            sampling frequency                          [999]
  --call-graph MODE    dwarf (full Rust stacks, inlined frames; bigger
                       recordings), fp (= perf record -g: frame pointers;
                       user frames of Rust release code come out as
                       [unknown]), lbr                              [dwarf]
  --name NAME          output base name        [derived from TARGET ARGS]
  -h, --help           print this help

Installs what it needs if missing: perf (apt: linux-perf, or
linux-tools-* on Ubuntu), inferno (cargo install inferno --locked).
Honours CARGO_TARGET_DIR (default target/).
EOF
}

FREQ=999
CALL_GRAPH=dwarf
NAME=
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --freq) FREQ=${2:?--freq needs a value}; shift 2 ;;
    --freq=*) FREQ=${1#*=}; shift ;;
    --call-graph) CALL_GRAPH=${2:?--call-graph needs a value}; shift 2 ;;
    --call-graph=*) CALL_GRAPH=${1#*=}; shift ;;
    --name) NAME=${2:?--name needs a value}; shift 2 ;;
    --name=*) NAME=${1#*=}; shift ;;
    --) shift; break ;;
    -*) printf 'record.sh: unknown option %s\n\n' "$1" >&2; usage >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { usage >&2; exit 2; }

# shellcheck source=perf/lib.sh
. perf/lib.sh

case "$CALL_GRAPH" in
  dwarf) CG=(--call-graph "dwarf,16384") ;;
  fp) CG=(-g) ;;
  lbr) CG=(--call-graph lbr) ;;
  *) die "--call-graph: dwarf, fp or lbr, not '$CALL_GRAPH'" ;;
esac

need_perf
need_inferno
resolve_target "$@"
NAME=${NAME:-$TARGET_LABEL}
DATA="$OUT_DIR/$NAME.perf.data"
FOLDED="$OUT_DIR/$NAME.folded"
SVG="$OUT_DIR/$NAME.svg"

log "perf record -e cpu-clock -F $FREQ ${CG[*]} -- ${TARGET_CMD[*]}"
perf record -q -e cpu-clock -F "$FREQ" "${CG[@]}" -o "$DATA" -- "${TARGET_CMD[@]}"

log "perf script | inferno-collapse-perf | inferno-flamegraph"
perf script -i "$DATA" 2>/dev/null | inferno-collapse-perf >"$FOLDED"
[ -s "$FOLDED" ] || die "no samples in $DATA"
# The collapsed counts are cpu-clock periods, i.e. nanoseconds of CPU time.
inferno-flamegraph \
  --title "${TARGET_LABEL}" \
  --subtitle "perf record -e cpu-clock -F $FREQ ${CG[*]}: $(basename "${TARGET_CMD[0]}") ${TARGET_CMD[*]:1}" \
  --countname ns \
  "$FOLDED" >"$SVG"

echo
echo "top functions by self time (perf report --no-children):"
perf report -i "$DATA" --no-children --fields overhead,dso,sym --stdio -g none --percent-limit 1.5 2>/dev/null \
  | grep -v -e '^#' -e '^$' | head -25 || true
echo
samples=$(awk '{ n += $NF } END { printf "%.0f", n / 1e6 }' "$FOLDED")
echo "flame graph: $SVG ($(wc -c <"$SVG") bytes, ~${samples} ms of CPU time sampled)"
echo "recording:   $DATA"
echo "stacks:      $FOLDED"
