# shellcheck shell=bash disable=SC2034  # (variables used by the sourcing script)
# Shared by perf/record.sh, perf/stat.sh, perf/syscalls.sh, perf/soak.sh and
# perf/bench-runs.sh (sourced, not run).
#
# Expects the caller to have done `set -euo pipefail` and to be in the
# repository root. Provides:
#   TARGET_DIR         $CARGO_TARGET_DIR, or target/ (absolute)
#   OUT_DIR            perf/out (created)
#   need_perf          installs perf if missing (Debian: linux-perf; Ubuntu: linux-tools-*)
#   need_strace        installs strace if missing
#   need_inferno       installs inferno-collapse-perf + inferno-flamegraph (cargo install)
#   need_python3       installs python3 if missing (tables, JSON)
#   have_hw_counters   true if `perf stat -e instructions` counts on this machine
#   have_tracepoints   true if perf may count syscall tracepoints here
#   resolve_target KIND ARGS...
#                      builds what KIND names and sets TARGET_CMD (array) and
#                      TARGET_LABEL (a file-name-safe label):
#                        sim [ARGS]                   the load binary (src/bin/evnexus/)
#                        example NAME [ARGS]          examples/NAME.rs
#                        bench NAME [FILTER [ARGS]]   a criterion bench, run with
#                                                     --profile-time $PROFILE_TIME (s)

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in
  /*) ;;
  *) TARGET_DIR="$PWD/$TARGET_DIR" ;;
esac
export CARGO_TARGET_DIR="$TARGET_DIR"
OUT_DIR="$PWD/perf/out"
mkdir -p "$OUT_DIR"
PROFILE_TIME="${PROFILE_TIME:-5}"

# Cargo-installed tools live here; make them visible even on a fresh shell.
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in
  *":$CARGO_BIN:"*) ;;
  *) PATH="$PATH:$CARGO_BIN" ;;
esac

log() { printf '%s\n' "$*" >&2; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# Runs a command as root (directly, or through sudo where that works).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@" || die "needs root to run: $* (sudo -n failed; run it yourself)"
  else
    die "needs root to run: $*"
  fi
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* yourself"
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

perf_works() { command -v perf >/dev/null 2>&1 && perf --version >/dev/null 2>&1; }

need_perf() {
  if ! perf_works; then
    # Debian names the package linux-perf; Ubuntu ships perf per kernel in
    # linux-tools-$(uname -r) behind a wrapper in linux-tools-common.
    if command -v apt-cache >/dev/null 2>&1 && apt-cache show linux-perf >/dev/null 2>&1; then
      apt_install linux-perf
    else
      apt_install linux-perf 2>/dev/null \
        || apt_install linux-tools-common "linux-tools-$(uname -r)" \
        || apt_install linux-tools-common linux-tools-generic
    fi
    hash -r
    perf_works || die "perf is still not usable after installing it"
  fi
  if ! perf stat -e task-clock true >/dev/null 2>&1; then
    die "perf cannot count here: kernel.perf_event_paranoid is $(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo '?'); run as root or lower it (sysctl kernel.perf_event_paranoid=1)"
  fi
}

need_strace() {
  command -v strace >/dev/null 2>&1 || { apt_install strace; hash -r; }
  command -v strace >/dev/null 2>&1 || die "strace is still missing after installing it"
}

need_inferno() {
  if ! command -v inferno-collapse-perf >/dev/null 2>&1 || ! command -v inferno-flamegraph >/dev/null 2>&1; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found: needed to install inferno"
    log "cargo install inferno --locked (flame-graph tools, once)"
    # Not in the project's target dir: cargo install's own temporary one.
    env -u CARGO_TARGET_DIR cargo install inferno --locked --quiet
    hash -r
  fi
  command -v inferno-flamegraph >/dev/null 2>&1 || die "inferno-flamegraph not on PATH after installing it (looked in $CARGO_BIN)"
}

need_python3() {
  command -v python3 >/dev/null 2>&1 || { apt_install python3; hash -r; }
  command -v python3 >/dev/null 2>&1 || die "python3 is still missing after installing it"
}

have_hw_counters() {
  local out
  out=$(perf stat -x, -e instructions true 2>&1 >/dev/null) || return 1
  ! grep -q -e '<not supported>' -e '<not counted>' <<<"$out"
}

have_tracepoints() {
  perf stat -x, -e raw_syscalls:sys_enter true >/dev/null 2>&1
}

# A file-name-safe label from words.
label_of() {
  local s
  s=$(printf '%s-' "$@" | tr -c 'A-Za-z0-9_.=-' '-' | tr -s '-')
  s=${s#-}; s=${s%-}
  printf '%s' "${s:0:120}"
}

resolve_target() {
  [ $# -ge 1 ] || die "missing target: sim [ARGS] | example NAME [ARGS] | bench NAME [FILTER [ARGS]]"
  local kind=$1; shift
  case "$kind" in
    sim)
      log "cargo build --release --bin evnexus"
      cargo build --release --quiet --bin evnexus
      TARGET_CMD=("$TARGET_DIR/release/evnexus" "$@")
      TARGET_LABEL=$(label_of sim "$@")
      ;;
    example)
      [ $# -ge 1 ] || die "example: which one? (e.g. example dispatch --backend uring)"
      local name=$1; shift
      log "cargo build --release --example $name"
      cargo build --release --quiet --example "$name"
      TARGET_CMD=("$TARGET_DIR/release/examples/$name" "$@")
      TARGET_LABEL=$(label_of example "$name" "$@")
      ;;
    bench)
      [ $# -ge 1 ] || die "bench: which one? (e.g. bench loop evnexus-uring)"
      need_python3
      local name=$1; shift
      local filter=()
      if [ $# -ge 1 ]; then filter=("$1"); shift; fi
      log "cargo bench --no-run --bench $name"
      local exe
      exe=$(cargo bench --no-run --quiet --bench "$name" --message-format=json \
        | python3 -c '
import json, sys
name = sys.argv[1]
exe = None
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == name and "bench" in m["target"]["kind"]:
        exe = m["executable"]
print(exe or "")' "$name")
      [ -n "$exe" ] || die "could not find the executable of bench $name"
      # --profile-time: iterate each benchmark for that long, no analysis,
      # nothing saved (criterion's mode for profilers).
      TARGET_CMD=("$exe" --bench --profile-time "$PROFILE_TIME" "${filter[@]}" "$@")
      TARGET_LABEL=$(label_of bench "$name" "${filter[@]}" "$@")
      ;;
    *)
      die "unknown target kind '$kind': sim | example | bench"
      ;;
  esac
}
