#!/usr/bin/env bash
# perf stat counters (software always, hardware where the machine has them)
# for the load binary, an example or a criterion bench. See perf/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: perf/stat.sh [OPTIONS] TARGET [ARGS...]

Builds TARGET (release profile), runs it under `perf stat`, prints its
output and a table of counters. Software counters always: task-clock,
context-switches, cpu-migrations, page-faults. Hardware counters (cycles,
instructions, branches, branch-misses, cache-references, cache-misses)
when the machine has them (`perf stat -e instructions true` counts; on
most VMs it does not). When the target prints a `result ... events=N`
line (examples/dispatch.rs does), each counter is also given per event.
The raw CSV goes to perf/out/NAME.stat.csv.

TARGET (as for perf/record.sh):
  sim [ARGS]                     the load simulation (src/bin/evnexus/)
  example NAME [ARGS]            examples/NAME.rs,
                                 e.g. example dispatch --backend epoll --fds 1024
  bench NAME [FILTER [ARGS]]     a criterion bench in --profile-time mode,
                                 $PROFILE_TIME s (default 5) per benchmark

options:
  --repeat N        run N times; perf stat reports mean and spread   [1]
  --hw auto|yes|no  hardware counters                               [auto]
  --name NAME       output base name           [derived from TARGET ARGS]
  -h, --help        print this help

Installs perf if missing (apt: linux-perf). Honours CARGO_TARGET_DIR.
EOF
}

REPEAT=1
HW=auto
NAME=
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --repeat) REPEAT=${2:?--repeat needs a value}; shift 2 ;;
    --repeat=*) REPEAT=${1#*=}; shift ;;
    --hw) HW=${2:?--hw needs a value}; shift 2 ;;
    --hw=*) HW=${1#*=}; shift ;;
    --name) NAME=${2:?--name needs a value}; shift 2 ;;
    --name=*) NAME=${1#*=}; shift ;;
    --) shift; break ;;
    -*) printf 'stat.sh: unknown option %s\n\n' "$1" >&2; usage >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { usage >&2; exit 2; }

# shellcheck source=perf/lib.sh
. perf/lib.sh
need_python3

need_perf
EVENTS=task-clock,context-switches,cpu-migrations,page-faults
HW_EVENTS=cycles,instructions,branches,branch-misses,cache-references,cache-misses
case "$HW" in
  auto)
    if have_hw_counters; then
      EVENTS="$EVENTS,$HW_EVENTS"
    else
      log "no hardware counters on this machine (perf stat -e instructions: not supported): software counters only"
    fi
    ;;
  yes) EVENTS="$EVENTS,$HW_EVENTS" ;;
  no) ;;
  *) die "--hw: auto, yes or no" ;;
esac

resolve_target "$@"
NAME=${NAME:-$TARGET_LABEL}
CSV="$OUT_DIR/$NAME.stat.csv"
LOG="$OUT_DIR/$NAME.stat.out"

log "perf stat -r $REPEAT -e $EVENTS -- ${TARGET_CMD[*]}"
perf stat -x, -r "$REPEAT" -o "$CSV" -e "$EVENTS" -- "${TARGET_CMD[@]}" | tee "$LOG"

echo
python3 - "$CSV" "$LOG" "$REPEAT" <<'PY'
import re, sys
csv, log, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])

# Events per run, from `result ... events=N` lines (mean over the runs).
events = [int(m.group(1)) for m in re.finditer(r"^result .*\bevents=(\d+)", open(log).read(), re.M)]
per_run = sum(events) / len(events) if events else None

rows = []
for line in open(csv):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    f = line.split(",")
    if len(f) < 3:
        continue
    value, unit, name = f[0], f[1], f[2]
    spread = f[3] if repeat > 1 and len(f) > 3 and f[3].endswith("%") else ""
    rows.append((name, value, unit, spread))

def num(v):
    try:
        return float(v)
    except ValueError:
        return None

head = ["counter", "value", "unit"] + (["±"] if repeat > 1 else []) + (["per event"] if per_run else [])
table = []
for name, value, unit, spread in rows:
    v = num(value)
    shown = value if v is None else (f"{v:,.2f}" if unit == "msec" else f"{v:,.0f}")
    r = [name, shown, unit]
    if repeat > 1:
        r.append(spread)
    if per_run:
        if v is None:
            r.append("")
        elif unit == "msec":
            r.append(f"{v * 1e6 / per_run:,.1f} ns")
        else:
            r.append(f"{v / per_run:.4g}")
    table.append(r)

if per_run:
    print(f"perf stat ({'mean of %d runs, ' % repeat if repeat > 1 else ''}{per_run:,.0f} events per run):")
else:
    print(f"perf stat{' (mean of %d runs)' % repeat if repeat > 1 else ''}:")
widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
for i, r in enumerate([head] + table):
    print("  " + "  ".join(str(x).ljust(w) if j in (0, 2) else str(x).rjust(w)
                           for j, (x, w) in enumerate(zip(r, widths))).rstrip())
    if i == 0:
        print("  " + "  ".join("-" * w for w in widths))
PY
echo
echo "raw counters: $CSV"
