#!/usr/bin/env bash
# System calls per dispatched event, for each backend, with
# examples/dispatch.rs: always-ready fds (1 and 1,024) and busy
# socketpairs. See perf/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: perf/syscalls.sh [OPTIONS]

Counts the system calls examples/dispatch.rs makes per dispatched event,
for each backend and each case, and prints one table:
  case, fds, backend, events, events per wait, syscalls, syscalls/event,
  top syscalls (per event).
The count is marginal: each case runs twice, at N events and at N/10, and
the table shows the difference (syscalls(N) - syscalls(N/10)) /
(events(N) - events(N/10)), so process start, fd creation, registration
and teardown cancel out and only the steady-state loop remains.

Counting tool: perf stat on the raw_syscalls:sys_enter tracepoint (the
exact total) plus per-syscall tracepoints for the usual suspects (the rest
shows as "other"), where the kernel lets perf use tracepoints; otherwise
strace -f -c (exact, every syscall named, but ~30 µs per syscall slower).

The table is also written to perf/out/syscalls.txt; raw counts go to
perf/out/syscalls/.

options:
  --backends LIST   comma-separated: uring, epoll, hooks, poll
                                                   [uring,epoll,hooks]
  --cases LIST      comma-separated SHAPE:FDS, SHAPE ready (always-ready
                    eventfds, no-op callback) or busy (socketpairs, the
                    callback reads a byte and writes one back)
                                                   [ready:1,ready:1024,busy:1024]
  --events N        events per measured run (the baseline run is N/10)
                                                   [200000]
  --tool T          auto, perf or strace           [auto]
  -h, --help        print this help

Installs perf (apt: linux-perf) or strace (apt: strace) if missing.
Honours CARGO_TARGET_DIR (default target/).
EOF
}

BACKENDS=uring,epoll,hooks
CASES=ready:1,ready:1024,busy:1024
EVENTS=200000
TOOL=auto
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --backends) BACKENDS=${2:?--backends needs a value}; shift 2 ;;
    --backends=*) BACKENDS=${1#*=}; shift ;;
    --cases) CASES=${2:?--cases needs a value}; shift 2 ;;
    --cases=*) CASES=${1#*=}; shift ;;
    --events) EVENTS=${2:?--events needs a value}; shift 2 ;;
    --events=*) EVENTS=${1#*=}; shift ;;
    --tool) TOOL=${2:?--tool needs a value}; shift 2 ;;
    --tool=*) TOOL=${1#*=}; shift ;;
    *) printf 'syscalls.sh: unknown argument %s\n\n' "$1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$EVENTS" in
  ''|*[!0-9]*) echo "syscalls.sh: --events takes a plain number" >&2; exit 2 ;;
esac
[ "$EVENTS" -ge 10 ] || { echo "syscalls.sh: --events must be at least 10" >&2; exit 2; }
BASE=$((EVENTS / 10))

# shellcheck source=perf/lib.sh
. perf/lib.sh
need_python3

if [ "$TOOL" = auto ]; then
  if perf_works && have_tracepoints; then
    TOOL=perf
  else
    TOOL=strace
  fi
fi
case "$TOOL" in
  perf)
    need_perf
    have_tracepoints || die "perf may not use tracepoints here (try --tool strace)"
    ;;
  strace) need_strace ;;
  *) die "--tool: auto, perf or strace" ;;
esac

# The named syscall tracepoints: those of this list that the kernel has.
PERF_EVENTS=raw_syscalls:sys_enter
if [ "$TOOL" = perf ]; then
  available=$(perf list --raw-dump tracepoint 2>/dev/null | tr ' ' '\n' | grep '^syscalls:sys_enter_' || true)
  for s in io_uring_enter epoll_wait epoll_pwait epoll_pwait2 epoll_ctl poll ppoll select pselect6 \
           read write readv writev recvfrom sendto recvmsg sendmsg futex sched_yield eventfd2 \
           close mmap munmap madvise mprotect brk nanosleep clock_nanosleep rt_sigprocmask; do
    if grep -qx "syscalls:sys_enter_$s" <<<"$available"; then
      PERF_EVENTS="$PERF_EVENTS,syscalls:sys_enter_$s"
    fi
  done
  # The first use of a tracepoint enables it in the kernel: do that now,
  # outside any measurement.
  perf stat -x, -e "$PERF_EVENTS" true >/dev/null 2>&1 || true
fi

resolve_target example dispatch
EXE=${TARGET_CMD[0]}
RAW="$OUT_DIR/syscalls"
mkdir -p "$RAW"
rm -f "$RAW"/*.count "$RAW"/*.out

# count FILE_BASE ARGS...: runs the example under the tool; writes
# FILE_BASE.out (its stdout) and FILE_BASE.count ("name count" lines, the
# total as TOTAL).
count() {
  local base=$1; shift
  case "$TOOL" in
    perf)
      perf stat -x, -o "$base.raw" -e "$PERF_EVENTS" -- "$EXE" "$@" >"$base.out"
      awk -F, '
        $3 == "raw_syscalls:sys_enter" { print "TOTAL", $1; next }
        $3 ~ /^syscalls:sys_enter_/ { n = $3; sub(/^syscalls:sys_enter_/, "", n); print n, $1 }
      ' "$base.raw" >"$base.count"
      ;;
    strace)
      strace -f -c -S calls -o "$base.raw" -- "$EXE" "$@" >"$base.out"
      # Columns: % time, seconds, usecs/call, calls, [errors], syscall.
      awk '
        $1 ~ /^-/ || $1 == "%" || NF < 5 { next }
        $NF == "total" { print "TOTAL", $4; next }
        { print $NF, $4 }
      ' "$base.raw" >"$base.count"
      ;;
  esac
}

IFS=, read -r -a backend_list <<<"$BACKENDS"
IFS=, read -r -a case_list <<<"$CASES"
for c in "${case_list[@]}"; do
  shape=${c%%:*}
  fds=${c#*:}
  case "$shape" in
    ready) shape_args=() ;;
    busy) shape_args=(--busy) ;;
    *) die "--cases: shape '$shape' is neither ready nor busy" ;;
  esac
  [ "$fds" != "$c" ] || die "--cases: '$c' is not SHAPE:FDS"
  for b in "${backend_list[@]}"; do
    for n in "$BASE" "$EVENTS"; do
      log "$TOOL: dispatch --backend $b --fds $fds ${shape_args[*]} --events $n"
      count "$RAW/$shape-$fds-$b-$n" --backend "$b" --fds "$fds" "${shape_args[@]}" --events "$n"
    done
  done
done

python3 - "$RAW" "$TOOL" "$BASE" "$EVENTS" "$BACKENDS" "$CASES" >"$OUT_DIR/syscalls.txt" <<'PY'
import os, re, sys
raw, tool, base, events = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
backends = sys.argv[5].split(",")
cases = sys.argv[6].split(",")

def load(stem):
    counts = {}
    for line in open(os.path.join(raw, stem + ".count")):
        name, n = line.split()
        try:
            counts[name] = int(n)
        except ValueError:  # <not counted>
            counts[name] = 0
    text = open(os.path.join(raw, stem + ".out")).read()
    m = re.search(r"^result .*", text, re.M)
    kv = dict(p.split("=", 1) for p in m.group(0).split()[1:]) if m else {}
    return counts, kv

rows = []
for c in cases:
    shape, fds = c.split(":")
    for b in backends:
        lo_c, lo_kv = load(f"{shape}-{fds}-{b}-{base}")
        hi_c, hi_kv = load(f"{shape}-{fds}-{b}-{events}")
        ev = int(hi_kv["dispatched"]) - int(lo_kv["dispatched"])
        waits = int(hi_kv["waits"]) - int(lo_kv["waits"])
        total = hi_c.get("TOTAL", 0) - lo_c.get("TOTAL", 0)
        per = {k: hi_c.get(k, 0) - lo_c.get(k, 0) for k in set(hi_c) | set(lo_c) if k != "TOTAL"}
        if tool == "perf":
            per["other"] = total - sum(per.values())
        top = sorted(((v, k) for k, v in per.items() if v / max(ev, 1) >= 0.0005), reverse=True)[:4]
        top_s = ", ".join(f"{k} {v / ev:.3f}" for v, k in top) if ev else "-"
        rows.append([shape, fds, b, f"{ev:,}", f"{ev / max(waits, 1):,.1f}", f"{total:,}",
                     f"{total / ev:.3f}" if ev else "-", top_s])

head = ["case", "fds", "backend", "events", "events/wait", "syscalls", "syscalls/event", "top syscalls (per event)"]
how = ("perf stat -e raw_syscalls:sys_enter + per-syscall tracepoints" if tool == "perf"
       else "strace -f -c")
print(f"System calls per dispatched event, examples/dispatch.rs ({how}).")
print(f"Marginal counts: a run of {events:,} events minus a run of {base:,}; setup and teardown cancel out.")
print("ready: always-ready eventfds, no-op callback; busy: socketpairs, callback reads 1 byte and writes 1 back (2 syscalls/event of its own).")
print()
widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
right = {1, 3, 4, 5, 6}
for i, r in enumerate([head] + rows):
    print("  ".join(str(x).rjust(w) if j in right else str(x).ljust(w) for j, (x, w) in enumerate(zip(r, widths))).rstrip())
    if i == 0:
        print("  ".join("-" * w for w in widths))
PY
cat "$OUT_DIR/syscalls.txt"
echo
echo "table: $OUT_DIR/syscalls.txt; raw counts: $RAW/"
