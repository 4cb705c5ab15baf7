"""Memory model vs published measurements: per-case and summary error by source.

Usage: python benchmarks/memory_accuracy.py
"""

from __future__ import annotations

from pathlib import Path

from ftplan.catalog import load_catalog
from ftplan.report.tables import render_table
from ftplan.validation import not_usable, run_cases, run_out_of_scope, summarise

CASES = Path(__file__).with_name("memory_cases.yaml")
ALLOCATOR_FIT_CASE = "aa-l2-7b-lora-ctx2048-bs1"  # src/ftplan/memory/overheads.py: ALLOCATOR_FRACTION


def main() -> None:
    catalog = load_catalog()
    results = run_cases(CASES, catalog)
    rows = [
        [r.case, r.metric, f"{r.measured_gib:.2f}", f"{r.estimate_gib:.2f}", f"{r.rel_error:+.1%}"] for r in results
    ]
    print("Graded cases")
    print(render_table(["case", "metric", "measured GiB", "estimate GiB", "error"], rows, right={2, 3, 4}))
    print()
    by_source: dict[str, list] = {}
    for r in results:
        by_source.setdefault(r.source, []).append(r)
    summary = []
    for name, rs in [*sorted(by_source.items()), ("all", results)]:
        s = summarise(rs)
        summary.append([name, str(s["n"]), f"{s['median']:.1%}", f"{s['p90']:.1%}", f"{s['worst']:.1%}",
                        f"{s['signed_median']:+.1%}", f"{s['lowest']:+.1%}", str(s["under_10"])])  # fmt: skip
    headers = ["source", "cases", "median |err|", "p90 |err|", "worst |err|", "median err", "lowest err", "< -10%"]
    print(render_table(headers, summary, right=set(range(1, 8))))
    # the allocator's fragmentation fraction is fitted on the one published run with both statistics
    held_out = [r for r in results if r.metric in ("reserved", "device") and r.case != ALLOCATOR_FIT_CASE]
    s = summarise(held_out)
    print(
        f"allocator_fraction, fitted on {ALLOCATOR_FIT_CASE}: on the {s['n']} other reserved/device cases "
        f"median |err| {s['median']:.1%}, from {s['lowest']:+.1%} to {max(r.rel_error for r in held_out):+.1%}"
    )
    print()
    out = run_out_of_scope(CASES, catalog)
    rows = [[r.case, r.reason, f"{r.measured_gib:.2f}", f"{r.estimate_gib:.2f}", f"{r.rel_error:+.1%}"] for r in out]
    print("Out of scope (estimated, not graded)")
    print(render_table(["case", "why", "measured GiB", "estimate GiB", "error"], rows, right={2, 3, 4}))
    s = summarise([*results, *out])
    print(f"graded and out of scope together: {s['n']} cases, median |err| {s['median']:.1%}, p90 {s['p90']:.1%}")
    print()
    print("Not usable")
    print(render_table(["case", "why"], [list(row) for row in not_usable(CASES)]))


if __name__ == "__main__":
    main()
