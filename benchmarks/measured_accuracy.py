"""Memory model vs `ftplan measure` on the CPU: every case of measured_grid.yaml, term by term.

Usage: python benchmarks/measured_accuracy.py   (needs the measure extra: pip install -e ".[measure]")
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ftplan.catalog import load_catalog
from ftplan.io import read_yaml
from ftplan.job import resolve_job
from ftplan.measure import measure_job
from ftplan.report.tables import render_table
from ftplan.schema.job import parse_job

GRID = Path(__file__).with_name("measured_grid.yaml")
TERMS = ("activations (layers + head)", "saved: logits/loss", "peak allocated")


def main() -> None:
    catalog = load_catalog()
    rows, errors = [], {t: [] for t in TERMS}
    for case in read_yaml(GRID)["cases"]:
        job = resolve_job(parse_job(dict(case["job"], dropout=False), case["case"]), catalog, case["case"])
        c = measure_job(job)
        cells = [case["case"]]
        for term in TERMS:
            r = c.row(term)
            errors[term].append(abs(r.rel_error or 0.0))
            cells += [f"{r.estimate / 2**20:.2f}", f"{r.measured / 2**20:.2f}", f"{r.rel_error or 0:+.2%}"]
        rows.append(cells)
    headers = ["case"]
    for short in ("saved", "loss", "peak"):
        headers += [f"{short} est MiB", f"{short} meas MiB", f"{short} err"]
    print(render_table(headers, rows, right=set(range(1, len(headers)))))
    print()
    summary = [[t, str(len(e)), f"{statistics.median(e):.2%}", f"{max(e):.2%}"] for t, e in errors.items()]
    print(render_table(["term", "cases", "median |err|", "worst |err|"], summary, right={1, 2, 3}))


if __name__ == "__main__":
    main()
