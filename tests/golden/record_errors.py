"""Record the signed errors the tests hold each case to (tests/golden/*_errors.yaml).

Run from the repository root after a deliberate model change: ``python tests/golden/record_errors.py``.
The tests then fail when any case moves by more than their stated step from what was recorded. Measured
errors are recorded under this machine's class of CPU kernels (``cpu_kernels``), beside the other classes', with
one CPU thread, as the tests measure (tests/conftest.py): oneDNN's bf16 kernels allocate by thread, so a peak
measured on every core differs (0.2-4.2 points on eight eager and recomputed cases of an AVX-512 CPU).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # (before torch loads)

from pathlib import Path

import yaml

from ftplan.catalog import load_catalog
from ftplan.io import read_yaml
from ftplan.job import resolve_job
from ftplan.measure import measure_job
from ftplan.measure.build import cpu_kernels
from ftplan.schema.job import parse_job
from ftplan.validation import run_cases

ROOT = Path(__file__).resolve().parents[2]
TERMS = ("activations (layers + head)", "saved: logits/loss", "peak allocated")


def main() -> None:
    catalog = load_catalog()
    published = {r.case: round(r.rel_error, 5) for r in run_cases(ROOT / "benchmarks/memory_cases.yaml", catalog)}
    (ROOT / "tests/golden/published_errors.yaml").write_text(
        "# signed error (estimate / measured − 1) of each graded published case; see record_errors.py\n"
        + yaml.safe_dump(published, sort_keys=True)
    )
    measured: dict[str, dict[str, float]] = {}
    path = ROOT / "tests/golden/measured_errors.yaml"
    recorded = read_yaml(path) if path.exists() else {}
    for case in read_yaml(ROOT / "benchmarks/measured_grid.yaml")["cases"]:
        job = resolve_job(parse_job(dict(case["job"], dropout=False), case["case"]), catalog, case["case"])
        comparison = measure_job(job)
        measured[case["case"]] = {t: round(comparison.row(t).rel_error or 0.0, 6) for t in TERMS}
    recorded[cpu_kernels()] = measured  # (the other CPU kernel classes' recordings are kept)
    path.write_text(
        "# signed error of each measured-grid case and term on the CPU, by the class of CPU kernels the machine\n"
        "# runs (ftplan.measure.build.cpu_kernels: bf16 peaks differ between them); see record_errors.py\n"
        + yaml.safe_dump(recorded, sort_keys=True)
    )


if __name__ == "__main__":
    main()
