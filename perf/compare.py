#!/usr/bin/env python3
"""Compares two saved criterion baselines row by row: "is B within 5% of A?".

Save the baselines with criterion's own flag, e.g. before and after a change:

    cargo bench --bench occurred -- --save-baseline before
    ... change ...
    cargo bench --bench occurred -- --save-baseline after
    python3 perf/compare.py before after --groups occurred,arena

Each row (criterion group, function, parameter) measured in both baselines gets
its two medians and the ratio B / A. A row whose ratio is above 1 + THRESHOLD/100
(B slower than A by more than the threshold, 5% by default) is flagged, and the
exit status is then 1 (0 when none is, 2 on a usage error or when no row is in
both).

A side may name several baselines, comma-separated (`b1,b2,b3 a1,a2,a3`): each
row's median on that side is then the median of those baselines' medians (the
issue's rule: three runs of a group, the median of medians). Baselines of
different target directories: --dir-a and --dir-b.

With --paired, the two lists are rounds of an A/B alternated on one machine
(`a1,a2,a3 b1,b2,b3`: a1 then b1, a2 then b2, ...), and each row's ratio is the
median of the rounds' ratios b_k / a_k, as perf/report.py takes "ratios only
from the same run": a machine that drifts between rounds (this 2-core VM moves
a 3 ns row by 30% from one round to the next, both sides alike) then moves both
sides of a ratio together. The medians shown are still the medians of medians.

Standard library only; reads the same files as perf/report.py.
"""

import argparse
import os
import statistics
import sys

sys.dont_write_bytecode = True  # no perf/__pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402  (perf/report.py: the loader and the formats)


def side(dirs, names, groups):
    """{(group, function, parameter): [each baseline's median, None where it
    has none]}, and the baselines that had no result at all."""
    per_row, empty = {}, []
    for i, name in enumerate(names):
        found = report.load(dirs, name)
        if not found:
            empty.append(name)
        for key, (median, _, _) in found.items():
            if groups and key[0] not in groups:
                continue
            per_row.setdefault(key, [None] * len(names))[i] = median
    return per_row, empty


def median_of(values):
    return statistics.median(v for v in values if v is not None)


def ratio(a_runs, b_runs, paired):
    """B / A: of the medians of medians, or (paired) the median of the
    rounds' ratios; None when paired and no round has both."""
    if not paired:
        a = median_of(a_runs)
        return median_of(b_runs) / a if a > 0 else float("inf")
    rounds = [b / a for a, b in zip(a_runs, b_runs) if a and b is not None]
    return statistics.median(rounds) if rounds else None


def table(rows, threshold):
    head = ["group", "impl", "parameter", "A median", "B median", "B / A", "flag"]
    body = []
    for (group, function, param), a, b, r in rows:
        flag = f"SLOWER (> {threshold:g}%)" if r > 1 + threshold / 100 else ""
        body.append([group, function, param or "-", report.fmt_time(a), report.fmt_time(b),
                     f"{r:.3f}", flag])
    flagged = sum(1 for b in body if b[-1])
    return report.markdown(head, body, {3, 4, 5}), flagged


def main():
    ap = argparse.ArgumentParser(
        description="Row-by-row ratio of two saved criterion baselines (B / A; "
                    "above 1 + threshold: B is slower, flagged, exit status 1).")
    ap.add_argument("a", help="baseline A (the reference), as given to --save-baseline; "
                              "several, comma-separated: the median of their medians")
    ap.add_argument("b", help="baseline B (the candidate), likewise")
    ap.add_argument("--groups", metavar="G1,G2",
                    help="only these criterion groups (e.g. occurred,arena) [all]")
    ap.add_argument("--threshold", type=float, default=5.0, metavar="PCT",
                    help="flag rows where B is slower than A by more than PCT %% [5]")
    ap.add_argument("--paired", action="store_true",
                    help="A and B are alternated rounds (a1 then b1, ...): the ratio is "
                         "the median of the rounds' ratios b_k / a_k")
    ap.add_argument("--dir-a", action="append", metavar="DIR",
                    help="criterion directory of A; may be repeated "
                         "[$CARGO_TARGET_DIR/criterion or target/criterion]")
    ap.add_argument("--dir-b", action="append", metavar="DIR",
                    help="criterion directory of B [as --dir-a]")
    args = ap.parse_args()
    if args.threshold < 0:
        ap.error("--threshold must be 0 or more")

    groups = {g.strip() for g in args.groups.split(",") if g.strip()} if args.groups else set()
    names_a = [n.strip() for n in args.a.split(",") if n.strip()]
    names_b = [n.strip() for n in args.b.split(",") if n.strip()]
    if not names_a or not names_b:
        ap.error("each side needs a baseline name")
    if args.paired and len(names_a) != len(names_b):
        ap.error("--paired needs as many baselines on each side (one per round)")
    dirs_a = args.dir_a or report.default_dirs()
    dirs_b = args.dir_b or args.dir_a or report.default_dirs()

    a, empty_a = side(dirs_a, names_a, groups)
    b, empty_b = side(dirs_b, names_b, groups)
    for name, dirs in [(n, dirs_a) for n in empty_a] + [(n, dirs_b) for n in empty_b]:
        print(f"compare.py: no results saved as baseline {name!r} under {', '.join(dirs)}",
              file=sys.stderr)
    both = sorted(set(a) & set(b))
    if not both:
        print("compare.py: no row is in both A and B"
              + (f" (groups: {', '.join(sorted(groups))})" if groups else ""), file=sys.stderr)
        return 2

    rows = []
    for k in both:
        r = ratio(a[k], b[k], args.paired)
        if r is not None:
            rows.append((k, median_of(a[k]), median_of(b[k]), r))
    text, flagged = table(rows, args.threshold)
    how = "median of the rounds' ratios" if args.paired else "ratio of the medians"
    print(f"A = {','.join(names_a)}, B = {','.join(names_b)}; B / A ({how}), "
          f"above {1 + args.threshold / 100:.2f} flagged (B slower)\n")
    print(text)
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    for label, keys in (("only in A", only_a), ("only in B", only_b)):
        if keys:
            print(f"\n{label}: " + "; ".join(f"{g}/{f}/{p or '-'}" for g, f, p in keys))
    print(f"\n{flagged} of {len(rows)} rows slower by more than {args.threshold:g}%.")
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
