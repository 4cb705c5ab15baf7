"""Memory model vs published measurements: per-case and summary error by source.

Usage: python benchmarks/memory_accuracy.py
"""

from __future__ import annotations

from pathlib import Path

from ftplan.catalog import load_catalog
from ftplan.report.tables import render_table
from ftplan.validation import run_cases, summarise

CASES = Path(__file__).with_name("memory_cases.yaml")


def main() -> None:
    results = run_cases(CASES, load_catalog())
    rows = [
        [r.case, r.metric, f"{r.measured_gib:.2f}", f"{r.estimate_gib:.2f}", f"{r.rel_error:+.1%}"] for r in results
    ]
    print(render_table(["case", "metric", "measured GiB", "estimate GiB", "error"], rows, right={2, 3, 4}))
    print()
    by_source: dict[str, list] = {}
    for r in results:
        by_source.setdefault(r.source, []).append(r)
    summary = []
    for name, rs in [*sorted(by_source.items()), ("all", results)]:
        s = summarise(rs)
        summary.append([name, str(s["n"]), f"{s['median']:.1%}", f"{s['p90']:.1%}", f"{s['worst']:.1%}"])
    print(render_table(["source", "cases", "median |err|", "p90 |err|", "worst |err|"], summary, right={1, 2, 3, 4}))


if __name__ == "__main__":
    main()
