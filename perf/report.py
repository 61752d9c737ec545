#!/usr/bin/env python3
"""The report command: one table of evnexus against its peers, from criterion's results.

Reads every  <criterion dir>/<group>/<function>/<parameter>/new/{benchmark,estimates}.json
(criterion's layout; benchmark.json has the group, function and parameter ids,
estimates.json the median's point estimate in ns; --baseline NAME reads a baseline
saved with criterion's --save-baseline NAME instead of "new") and prints one
markdown table: for every group and parameter, each evnexus entry (function id
starting with "evnexus") against each peer (any other function id) measured in the
same group with the same parameter string, with the ratio peer median / evnexus
median (> 1: evnexus is faster).

A design alternative is an evnexus entry named <base><suffix>, <suffix> one of
ALTERNATIVES (e.g. "evnexus-bare-epoch-pin", the bare arena's lookups under a
crossbeam-epoch guard), where <base> is another evnexus entry of the same group and
parameter: it is set against <base> alone, in the peer's column, so its ratio is
alternative / evnexus as built (> 1: the design evnexus ships is faster).

The wake-up latency quantiles that benches/wakeup.rs writes beside criterion's results
(<criterion dir>/wakeup-latency.json) join the table as group "wakeup", parameters
"p50", "p90" and "p99". With --baseline NAME they come from
<criterion dir>/wakeup-latency.NAME.json (perf/bench-runs.sh copies each run's file there).

Several runs (the rule on this drifting machine: every group run on its own three
times): --baseline run1,run2,run3. Each median in the table is then the median of the
runs' medians, and each ratio the median of the runs' ratios: every ratio is taken
within one run (peer and evnexus measured minutes apart, never hours), then the
median of those is shown.

perf/compare.py compares two saved baselines row by row.

With --write-readme, the table, the date (UTC), the machine (CPU model with
its family, model number and clock, cores, kernel) and the command replace
what is between the README's markers
  <!-- perf:begin -->  and  <!-- perf:end -->
so the README's numbers are never typed by hand.

A criterion group may have a README section of its own, between
  <!-- perf:GROUP:begin -->  and  <!-- perf:GROUP:end -->
(the C ABI's group `capi` has one): --section GROUP reports that group alone
into it, and the main table leaves out every group that has its own section.

Standard library only. Groups and parameters without a pair are listed under the
table, not an error: the benches may be partly run.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import sys

BEGIN = "<!-- perf:begin -->"
END = "<!-- perf:end -->"
SECTION = re.compile(r"<!-- perf:([A-Za-z0-9_-]+):begin -->")
# Suffixes of design alternatives (see the module doc).
ALTERNATIVES = ("-epoch-pin",)


def markers(section):
    """The README markers of the main table (None) or of a group's section."""
    if section is None:
        return BEGIN, END
    return f"<!-- perf:{section}:begin -->", f"<!-- perf:{section}:end -->"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_dirs():
    target = os.environ.get("CARGO_TARGET_DIR") or "target"
    if not os.path.isabs(target):
        target = os.path.join(REPO, target)
    return [os.path.join(target, "criterion")]


def load(dirs, baseline="new"):
    """{(group, function, parameter): (median_ns, mtime, path)} of criterion's
    results in `baseline` ("new": the latest run); the newest wins."""
    found = {}
    for root in dirs:
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d != "report"]
            if os.path.basename(dirpath) != baseline or "benchmark.json" not in filenames \
                    or "estimates.json" not in filenames:
                continue
            try:
                with open(os.path.join(dirpath, "benchmark.json")) as f:
                    bench = json.load(f)
                est_path = os.path.join(dirpath, "estimates.json")
                with open(est_path) as f:
                    median = float(json.load(f)["median"]["point_estimate"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                print(f"report.py: skipping {dirpath}: {e}", file=sys.stderr)
                continue
            group = bench.get("group_id") or "?"
            function = bench.get("function_id") or ""
            param = bench.get("value_str") or ""
            if not function:
                # bench_function("name") outside a BenchmarkId: the name is the function.
                function, param = param or group, ""
            key = (group, function, param)
            mtime = os.path.getmtime(est_path)
            if key not in found or mtime > found[key][1]:
                found[key] = (median, mtime, dirpath)
    return found


def load_wakeup_quantiles(dirs, baseline="new"):
    """The wake-up latency quantiles benches/wakeup.rs writes to
    <criterion dir>/wakeup-latency.json (from its interleaved pass, not a
    criterion baseline; a baseline's copy: wakeup-latency.NAME.json), as
    entries of group "wakeup" with parameters "p50", "p90" and "p99":
    {(group, function, parameter): (ns, mtime, path)}."""
    found = {}
    name = "wakeup-latency.json" if baseline == "new" else f"wakeup-latency.{baseline}.json"
    for root in dirs:
        path = os.path.join(root, name)
        try:
            with open(path) as f:
                impls = json.load(f)["impls"]
            mtime = os.path.getmtime(path)
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"report.py: skipping {path}: {e}", file=sys.stderr)
            continue
        for name, q in impls.items():
            for param in ("p50", "p90", "p99"):
                if f"{param}_ns" not in q:
                    continue
                key = ("wakeup", name, param)
                if key not in found or mtime > found[key][1]:
                    found[key] = (float(q[f"{param}_ns"]), mtime, path)
    return found


def fmt_time(ns):
    if ns < 1e3:
        return f"{ns:.3g} ns" if ns < 100 else f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.3g} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.3g} ms"
    return f"{ns / 1e9:.3g} s"


def is_evnexus(function):
    return function.startswith("evnexus")


def alternative_of(function, names):
    """The evnexus entry among `names` that `function` is a design alternative
    of, or None."""
    for suffix in ALTERNATIVES:
        if function.endswith(suffix):
            base = function[: -len(suffix)]
            if base in names and is_evnexus(base):
                return base
    return None


def load_runs(dirs, baselines):
    """Each baseline's results (with its wake-up quantiles), one dict per run."""
    runs = []
    for name in baselines:
        run = load(dirs, name)
        run.update(load_wakeup_quantiles(dirs, name))
        if not run:
            print(f"report.py: no results in baseline {name!r}", file=sys.stderr)
        runs.append(run)
    return runs


def merge(runs):
    """{key: (median of the runs' medians, newest mtime, path of the newest)}."""
    per_key = {}
    for run in runs:
        for key, v in run.items():
            per_key.setdefault(key, []).append(v)
    return {k: (statistics.median(m for m, _, _ in vs), max(t for _, t, _ in vs),
                max(vs, key=lambda v: v[1])[2]) for k, vs in per_key.items()}


def build(found, runs=None):
    """Rows of the table and a list of what had no pair. With `runs` (each
    run's results), a ratio is the median of the ratios within each run."""

    def row_ratio(group, param, peer, ours, pm, m):
        if not runs:
            return ratio(pm, m)
        per_run = [ratio(run[(group, peer, param)][0], run[(group, ours, param)][0])
                   for run in runs
                   if (group, peer, param) in run and (group, ours, param) in run]
        return statistics.median(per_run) if per_run else ratio(pm, m)

    by_cell = {}
    for (group, function, param), (median, _, _) in found.items():
        by_cell.setdefault((group, param), []).append((function, median))
    rows, unpaired = [], []
    for (group, param) in sorted(by_cell):
        entries = sorted(by_cell[(group, param)])
        names = {f for f, _ in entries}
        alternatives = [(f, m, alternative_of(f, names)) for f, m in entries]
        alternatives = [(f, m, base) for f, m, base in alternatives if base is not None]
        skip = {f for f, _, _ in alternatives}
        ours = [e for e in entries if is_evnexus(e[0]) and e[0] not in skip]
        peers = [e for e in entries if not is_evnexus(e[0])]
        if not alternatives and (not ours or not peers):
            why = "no peer" if ours else "no evnexus entry"
            unpaired.append(f"{group} {param or '-'} ({why}: {', '.join(sorted(names))})")
            continue
        for f, m in ours:
            for pf, pm in peers:
                rows.append((group, param or "-", f, m, pf, pm,
                             row_ratio(group, param, pf, f, pm, m)))
            for af, am, base in alternatives:
                if base == f:
                    rows.append((group, param or "-", f, m, af, am,
                                 row_ratio(group, param, af, f, am, m)))
    return rows, unpaired


def ratio(peer, ours):
    return peer / ours if ours > 0 else float("inf")


def markdown(head, body, right):
    """A Markdown table of `head` and the rows `body` (lists of strings),
    padded to the widest cell; the columns whose indices are in `right`
    are right-aligned."""
    widths = [max(len(x) for x in col) for col in zip(head, *body)]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), sep] + [line(b) for b in body])


def table(rows):
    head = ["group", "parameter", "evnexus", "evnexus median", "peer", "peer median",
            "peer / evnexus (>1: evnexus faster)"]
    body = [[g, p, f, fmt_time(m), pf, fmt_time(pm), f"{r:.2f}"] for g, p, f, m, pf, pm, r in rows]
    return markdown(head, body, {3, 5, 6})


def machine():
    """The CPU, cores and kernel. A hypervisor may show a bare model name
    ("AMD EPYC") for hosts of different generations and clocks, so the
    CPU's family, model number and clock go beside it: two tables made on
    different hosts then say so."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for l in f:
                if not l.strip():
                    break  # the first CPU's block is enough
                k, _, v = l.partition(":")
                info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    model = info.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    ids = [f"{k} {info[k]}" for k in ("cpu family", "model") if k in info]
    if "cpu MHz" in info:
        ids.append(f"{float(info['cpu MHz']):.0f} MHz")
    if ids:
        model = f"{model} ({', '.join(ids)})"
    cores = os.cpu_count() or 0
    return f"{model}, {cores} cores, Linux {platform.release()}" if platform.system() == "Linux" \
        else f"{model}, {cores} cores, {platform.system()} {platform.release()}"


def section(rows, unpaired, found, times, command, section_name, nruns=1):
    """The README section. `times`: when each result it draws on was
    measured, every run's (the merged `found` keeps only the newest)."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    oldest = datetime.datetime.fromtimestamp(min(times), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    newest = datetime.datetime.fromtimestamp(max(times), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    runs_text = "" if nruns <= 1 else (
        f" Each group was run on its own {nruns} times: a median here is the median of "
        f"the {nruns} runs' medians, a ratio the median of the {nruns} runs' ratios (each "
        "taken within one run).")
    parts = [
        "Criterion medians, each evnexus entry against each peer measured in the same "
        "group with the same parameter; the ratio is peer / evnexus, so **above 1 "
        "evnexus is faster**, below 1 the peer is." + runs_text,
        "",
        table(rows),
        "",
    ]
    if any(r[0] == "wakeup" and r[1] in ("p50", "p90", "p99") for r in rows):
        parts += ["Rows `wakeup` `p50`, `p90`, `p99`: quantiles of one wake-up, from "
                  "`benches/wakeup.rs`'s pass that interleaves the implementations "
                  "(`wakeup-latency.json`), not criterion medians.", ""]
    if unpaired:
        parts += ["Without a pair (not in the table): " + "; ".join(unpaired) + ".", ""]
    parts += [
        f"Generated {now} on {machine()}, from {len(found)} criterion results "
        f"(measured {oldest if oldest == newest else oldest + ' to ' + newest} UTC), by `{command}`. "
        f"Regenerate: {regenerate(section_name, nruns)}; never edit these numbers by hand.",
    ]
    return "\n".join(parts)


def regenerate(section_name, nruns=1):
    flag = "" if section_name is None else f" --section {section_name}"
    if nruns <= 1:
        return f"`cargo bench --workspace` then `python3 perf/report.py{flag} --write-readme`"
    names = ",".join(f"run{i}" for i in range(1, nruns + 1))
    return (f"`perf/bench-runs.sh --runs {nruns}` (every bench on its own, {nruns} times) then "
            f"`python3 perf/report.py --baseline {names}{flag} --write-readme`")


def write_readme(path, body, section_name):
    begin, end = markers(section_name)
    with open(path) as f:
        text = f.read()
    b, e = text.find(begin), text.find(end)
    if b < 0 or e < 0 or e < b:
        sys.exit(f"report.py: {path} lacks the markers {begin} ... {end} (in that order)")
    new = text[: b + len(begin)] + "\n" + body + "\n" + text[e:]
    with open(path, "w") as f:
        f.write(new)


def main():
    ap = argparse.ArgumentParser(
        description="One table of evnexus against its peers from criterion's results "
                    "(ratio peer/evnexus: above 1, evnexus is faster).")
    ap.add_argument("--criterion-dir", action="append", metavar="DIR",
                    help="criterion output directory; may be repeated, the newest result "
                         "of each benchmark wins [$CARGO_TARGET_DIR/criterion or target/criterion]")
    ap.add_argument("--write-readme", action="store_true",
                    help=f"replace the README's {BEGIN} ... {END} section with the table")
    ap.add_argument("--readme", default=os.path.join(REPO, "README.md"), help="[README.md]")
    ap.add_argument("--baseline", default="new", metavar="NAME[,NAME...]",
                    help="read the results saved with criterion's --save-baseline NAME "
                         "[new: the latest run]; several, comma-separated: medians of "
                         "their medians, ratios the median of each run's ratio")
    ap.add_argument("--section", metavar="GROUP",
                    help="report criterion group GROUP alone, into the README's "
                         "<!-- perf:GROUP:begin --> ... <!-- perf:GROUP:end --> section")
    args = ap.parse_args()

    dirs = args.criterion_dir or default_dirs()
    baselines = [b for b in args.baseline.split(",") if b]
    runs = load_runs(dirs, baselines)
    found = merge(runs)
    try:
        with open(args.readme) as f:
            own_sections = set(SECTION.findall(f.read()))
    except OSError:
        own_sections = set()
    if args.section is not None:
        keep = lambda k: k[0] == args.section  # noqa: E731
    else:
        keep = lambda k: k[0] not in own_sections  # noqa: E731
    found = {k: v for k, v in found.items() if keep(k)}
    if not found:
        sys.exit("report.py: no criterion results under " + ", ".join(dirs)
                 + " (run `cargo bench` first)")
    rows, unpaired = build(found, runs if len(runs) > 1 else None)
    # The command as one could type it in the repository root.
    cmd_args = [os.path.relpath(a, REPO) if os.path.isabs(a) and a.startswith(REPO + os.sep) else a
                for a in sys.argv[1:]]
    command = "python3 perf/report.py" + ("" if not cmd_args else " " + " ".join(shlex.quote(a) for a in cmd_args))
    if not rows:
        print("report.py: no evnexus entry has a peer with the same group and parameter", file=sys.stderr)
        for u in unpaired:
            print("  " + u, file=sys.stderr)
        sys.exit(1)
    times = [v[1] for run in runs for k, v in run.items() if keep(k)]
    body = section(rows, unpaired, found, times, command, args.section, len(runs))
    print(body)
    if args.write_readme:
        write_readme(args.readme, body, args.section)
        print(f"\n(written to {args.readme})", file=sys.stderr)


if __name__ == "__main__":
    main()
