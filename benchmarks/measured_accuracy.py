"""Memory model vs `ftplan measure`: every case of a grid, term by term.

Usage: python benchmarks/measured_accuracy.py [--device cpu|cuda] [--grid FILE] [--keep-dropout]
(needs the measure extra: pip install -e ".[measure]")

A case whose layout has more than one GPU (benchmarks/measured_grid_dist.yaml) runs as that many processes
(`ftplan measure --nproc`); its row is the rank with the highest peak, and the summary counts every rank.

On a CPU the grid runs with dropout off (a CPU saves fp32 dropout masks where CUDA saves bytes);
on a GPU, `--grid benchmarks/measured_grid_cuda.yaml --keep-dropout` covers what only CUDA shows:
one-byte dropout masks, fp32 softmax under autocast, and the caching allocator's reserved memory.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from ftplan.catalog import load_catalog
from ftplan.errors import MeasureError
from ftplan.io import read_yaml
from ftplan.job import resolve_job
from ftplan.measure import measure_distributed, measure_job
from ftplan.report.tables import render_table
from ftplan.schema.job import parse_job

GRID = Path(__file__).with_name("measured_grid.yaml")
TERMS = ("activations (layers + head)", "saved: logits/loss", "peak allocated")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--grid", type=Path, default=GRID)
    ap.add_argument("--keep-dropout", action="store_true", help="keep each job's dropout (CUDA)")
    args = ap.parse_args()
    catalog = load_catalog()
    rows, errors, skipped = [], {t: [] for t in TERMS}, []
    for case in read_yaml(args.grid)["cases"]:
        data = case["job"] if args.keep_dropout else dict(case["job"], dropout=False)
        job = resolve_job(parse_job(data, case["case"]), catalog, case["case"])
        try:
            if job.layout.gpus > 1:
                engine = case.get("engine", "torch")
                ranks = measure_distributed(job, job.layout.gpus, device=args.device, engine=engine).ranks
            else:
                ranks = (measure_job(job, device=args.device),)
        except MeasureError as exc:  # e.g. FP8 without torchao or FP8 tensor cores: the other cases still run
            skipped.append(f"{case['case']}: {exc}")
            continue
        c = max(ranks, key=lambda r: r.measurement.peak_allocated)
        cells = [case["case"]]
        for term in TERMS:
            r = c.row(term)
            errors[term] += [abs(rank.row(term).rel_error or 0.0) for rank in ranks]
            cells += [f"{r.estimate / 2**20:.2f}", f"{r.measured / 2**20:.2f}", f"{r.rel_error or 0:+.2%}"]
        rows.append(cells)
    headers = ["case"]
    for short in ("saved", "loss", "peak"):
        headers += [f"{short} est MiB", f"{short} meas MiB", f"{short} err"]
    print(render_table(headers, rows, right=set(range(1, len(headers)))))
    print()
    summary = [[t, str(len(e)), f"{statistics.median(e):.2%}", f"{max(e):.2%}"] for t, e in errors.items() if e]
    print(render_table(["term", "cases (ranks)", "median |err|", "worst |err|"], summary, right={1, 2, 3}))
    for line in skipped:
        print(f"skipped {line}")


if __name__ == "__main__":
    main()
