#!/usr/bin/env bash
# Soak: the load simulation for a long time, rotating the backends, with its
# resident set sampled; checks that every run passes and that RSS stays
# flat. See perf/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: perf/soak.sh [OPTIONS] [-- SIM_ARGS...]

Builds the load simulation (release profile) and runs it for a total of
--total seconds, split evenly over --rounds rounds of the backends in
--backends order (each run a fresh process: --seconds TOTAL/(ROUNDS*N)),
with `--rss-every` sampling of VmRSS. Prints one row per run: exit status,
misdeliveries, RSS first / min / max / last (KiB) and max/min after the
warm-up, and whether that is within the tolerance ("flat").

Exits 1 if any run failed (non-zero exit, or a hang past its time plus
--grace), reported misdeliveries, printed no RSS curve, or was not flat;
2 on bad usage. SIM_ARGS go to every run (e.g. -- --domains 256).

options:
  --total S        total seconds over all runs                      [3600]
  --rounds N       rounds of the backends                              [1]
  --backends LIST  comma-separated: uring, epoll, hooks  [uring,epoll,hooks]
  --rss-every S    seconds between RSS samples                        [10]
  --warmup S       seconds of each run before RSS must be flat        [60]
  --tolerance PCT  flat: max/min after the warm-up <= 1 + PCT/100     [10]
  --grace S        a run that outlives its --seconds by this hung    [120]
  -h, --help       print this help

Each run's output goes to perf/out/soak-STAMP-BACKEND-ROUND.txt and the
table to perf/out/soak-STAMP.txt. Honours CARGO_TARGET_DIR.
EOF
}

TOTAL=3600
ROUNDS=1
BACKENDS=uring,epoll,hooks
EVERY=10
WARMUP=60
TOLERANCE=10
GRACE=120
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --total) TOTAL=${2:?--total needs a value}; shift 2 ;;
    --total=*) TOTAL=${1#*=}; shift ;;
    --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
    --rounds=*) ROUNDS=${1#*=}; shift ;;
    --backends) BACKENDS=${2:?--backends needs a value}; shift 2 ;;
    --backends=*) BACKENDS=${1#*=}; shift ;;
    --rss-every) EVERY=${2:?--rss-every needs a value}; shift 2 ;;
    --rss-every=*) EVERY=${1#*=}; shift ;;
    --warmup) WARMUP=${2:?--warmup needs a value}; shift 2 ;;
    --warmup=*) WARMUP=${1#*=}; shift ;;
    --tolerance) TOLERANCE=${2:?--tolerance needs a value}; shift 2 ;;
    --tolerance=*) TOLERANCE=${1#*=}; shift ;;
    --grace) GRACE=${2:?--grace needs a value}; shift 2 ;;
    --grace=*) GRACE=${1#*=}; shift ;;
    --) shift; break ;;
    *) printf 'soak.sh: unknown argument %s\n\n' "$1" >&2; usage >&2; exit 2 ;;
  esac
done

bad() { printf 'soak.sh: %s\n' "$*" >&2; exit 2; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in TOTAL ROUNDS EVERY WARMUP TOLERANCE GRACE; do
  is_uint "${!v}" || bad "--$(tr 'A-Z_' 'a-z-' <<<"$v"): '${!v}' is not a whole number"
done
[ "$ROUNDS" -ge 1 ] || bad "--rounds must be at least 1"
[ "$EVERY" -ge 1 ] || bad "--rss-every must be at least 1"
IFS=, read -r -a BACKEND_LIST <<<"$BACKENDS"
[ ${#BACKEND_LIST[@]} -ge 1 ] || bad "--backends is empty"
for b in "${BACKEND_LIST[@]}"; do
  case "$b" in uring|epoll|hooks) ;; *) bad "--backends: unknown backend '$b' (uring, epoll, hooks)" ;; esac
done
RUNS=$((ROUNDS * ${#BACKEND_LIST[@]}))
SECONDS_PER_RUN=$((TOTAL / RUNS))
# At least three samples after the warm-up, or flatness means nothing.
[ "$SECONDS_PER_RUN" -ge $((WARMUP + 3 * EVERY)) ] \
  || bad "each run would last ${SECONDS_PER_RUN} s: less than --warmup ${WARMUP} s plus three --rss-every ${EVERY} s samples (raise --total or lower --rounds)"

# shellcheck source=perf/lib.sh
. perf/lib.sh
resolve_target sim
SIM=${TARGET_CMD[0]}

STAMP=$(date +%Y%m%d-%H%M%S)
SUMMARY="$OUT_DIR/soak-$STAMP.txt"
LIMIT=$(awk -v t="$TOLERANCE" 'BEGIN { printf "%.4f", 1 + t / 100 }')
log "soak: $RUNS runs of ${SECONDS_PER_RUN} s (${BACKENDS}, $ROUNDS round(s)), RSS every ${EVERY} s, flat: max/min <= $LIMIT after ${WARMUP} s"

ROWS=()
FAILED=0
for ((round = 1; round <= ROUNDS; round++)); do
  for b in "${BACKEND_LIST[@]}"; do
    out="$OUT_DIR/soak-$STAMP-$b-$round.txt"
    cmd=("$SIM" --backend "$b" --seconds "$SECONDS_PER_RUN" --rss-every "$EVERY" --rss-warmup "$WARMUP" "$@")
    log "[$(date +%H:%M:%S)] round $round, $b: ${cmd[*]}"
    rc=0
    timeout --signal=KILL $((SECONDS_PER_RUN + GRACE)) "${cmd[@]}" >"$out" 2>&1 || rc=$?
    # The rows the simulation prints (see src/bin/evnexus/report.rs):
    #   misdeliveries: N
    #   RSS every E s, N samples   first A / min B / max C / last D KiB
    #     after W s warm-up, N samples   min B / max C KiB   max/min R
    row=$(awk -v limit="$LIMIT" -v rc="$rc" '
      function num(s) { gsub(",", "", s); return s }
      /^misdeliveries: / { mis = $2 }
      /^  RSS every / {
        match($0, /first [0-9,]+ \/ min [0-9,]+ \/ max [0-9,]+ \/ last [0-9,]+/)
        split(substr($0, RSTART, RLENGTH), f, " ")
        first = num(f[2]); min = num(f[5]); max = num(f[8]); last = num(f[11])
      }
      /warm-up, .*max\/min / { ratio = $NF }
      END {
        if (mis == "") mis = "?"
        if (first == "") { first = min = max = last = "?" }
        flat = (ratio == "") ? "no-curve" : (ratio + 0 <= limit + 0 ? "yes" : "NO")
        if (ratio == "") ratio = "?"
        ok = (rc == 0 && mis == "0" && flat == "yes") ? "ok" : "FAIL"
        printf "%s %s %s %s %s %s %s %s %s", rc, mis, first, min, max, last, ratio, flat, ok
      }' "$out")
    read -r r_rc r_mis r_first r_min r_max r_last r_ratio r_flat r_ok <<<"$row"
    [ "$r_ok" = ok ] || FAILED=1
    [ "$r_rc" = 137 ] && log "  killed: still running ${GRACE} s after its time (hang?)"
    log "  $r_ok: exit $r_rc, misdeliveries $r_mis, RSS KiB first $r_first min $r_min max $r_max last $r_last, max/min $r_ratio (flat: $r_flat)"
    ROWS+=("$b $round $SECONDS_PER_RUN $row")
  done
done

{
  echo "soak $STAMP: ${TOTAL} s total, RSS every ${EVERY} s, flat = max/min <= $LIMIT after a ${WARMUP} s warm-up"
  printf '%s\n' "${ROWS[@]}" | awk '
    BEGIN {
      printf "  %-7s %5s %7s %4s %13s %10s %10s %10s %10s %8s %8s %6s\n",
        "backend", "round", "seconds", "exit", "misdeliveries",
        "first KiB", "min KiB", "max KiB", "last KiB", "max/min", "flat", "result"
    }
    {
      printf "  %-7s %5s %7s %4s %13s %10s %10s %10s %10s %8s %8s %6s\n",
        $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
    }'
  if [ "$FAILED" -eq 0 ]; then
    echo "soak: every run passed, misdelivered nothing and kept RSS flat"
  else
    echo "soak: FAILED (see the rows marked FAIL and their outputs in $OUT_DIR/soak-$STAMP-*.txt)"
  fi
} | tee "$SUMMARY"
exit "$FAILED"
