"""The memory model today against a GPU run's committed tables, on any machine (no GPU needed).

Usage: python benchmarks/device_results.py [RESULTS_DIR]   (default: the latest under benchmarks/results/)

``benchmarks/device_check.sh`` on a GPU writes what ``ftplan measure --device cuda`` measured (the CUDA grid,
and the CPU grid run on the GPU) beside the estimates of the model of its day. This script recomputes the
estimates of the model of today for the same jobs and device (Hopper's cuBLAS workspace where the run's
device is an H100 or H200) and prints, for each case, saved activations and peak allocated, measured and
estimated, and their errors; then each table's median and extremes.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from ftplan.catalog import load_catalog
from ftplan.io import read_yaml
from ftplan.job import resolve_job
from ftplan.measure.run import estimate_for_device
from ftplan.report.tables import render_table
from ftplan.schema.job import parse_job
from ftplan.units import MIB

HERE = Path(__file__).parent
# table written by device_check.sh → the grid it ran, and whether it kept each job's dropout
TABLES = {
    "measured_accuracy_cuda.txt": ("measured_grid_cuda.yaml", True),
    "measured_accuracy_cuda_cpu_grid.txt": ("measured_grid.yaml", False),
}


def measured(path: Path) -> dict[str, tuple[float, float]]:
    """Case → (saved activations, peak allocated) in MiB, as the device run printed them."""
    out = {}
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) == 10 and not f[0].startswith(("case", "-")):
            out[f[0]] = (float(f[2]), float(f[8]))
    return out


def gpu_arch(results: Path) -> str:
    """The cuBLAS workspace class of the run's device (``device.txt``'s first line names it)."""
    device = (results / "device.txt").read_text().splitlines()[0]
    return "hopper" if any(name in device for name in ("H100", "H200", "H800", "H20")) else ""


def errors(results: Path, table: str) -> dict[str, tuple[float, float, float, float]]:
    """Case → (saved measured MiB, saved error, peak measured MiB, peak error) of one table, today's model."""
    grid, keep_dropout = TABLES[table]
    catalog, arch = load_catalog(), gpu_arch(results)
    meas = measured(results / table)
    out = {}
    for case in read_yaml(HERE / grid)["cases"]:
        if case["case"] not in meas:
            continue
        data = case["job"] if keep_dropout else dict(case["job"], dropout=False)
        job = resolve_job(parse_job(data, case["case"]), catalog, case["case"])
        est = estimate_for_device(job, "cuda", arch)
        saved, peak = meas[case["case"]]
        est_saved = (est.activation_terms["layers"] + est.activation_terms["head"]) / MIB
        est_peak = est.peak_allocated_bytes / MIB
        out[case["case"]] = (saved, est_saved / saved - 1 if saved else 0.0, peak, est_peak / peak - 1)
    return out


def main(argv: list[str]) -> None:
    results = Path(argv[0]) if argv else sorted(p for p in (HERE / "results").iterdir() if p.is_dir())[-1]
    print(f"{results.name} · today's model")
    for table in TABLES:
        if not (results / table).exists():
            continue
        err = errors(results, table)
        rows = [[case, f"{s:.2f}", f"{es:+.2%}", f"{p:.2f}", f"{ep:+.2%}"] for case, (s, es, p, ep) in err.items()]
        print(f"\n{table}")
        print(render_table(["case", "saved MiB", "saved err", "peak MiB", "peak err"], rows, right={1, 2, 3, 4}))
        peaks = [e[3] for e in err.values()]
        print(f"{len(peaks)} cases: peak median |err| {statistics.median(abs(p) for p in peaks):.2%}, "
              f"lowest {min(peaks):+.2%}, highest {max(peaks):+.2%}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
