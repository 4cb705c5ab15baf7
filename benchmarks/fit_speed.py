"""Speed of `ftplan fit`: 70B and 8B jobs, and a MoE model (whose experts the search may also split over
ep GPUs), across 8 cloud pools of up to 4 nodes.

Usage: python benchmarks/fit_speed.py
"""

from __future__ import annotations

import time

from ftplan.catalog import load_catalog
from ftplan.fit import fit_job, instance_pool, rank
from ftplan.job import resolve_job
from ftplan.report.tables import render_table
from ftplan.schema.job import parse_job

POOLS = [
    "aws/p5.48xlarge", "aws/p5en.48xlarge", "aws/p4de.24xlarge", "aws/p4d.24xlarge",
    "azure/Standard_ND96isr_H100_v5", "azure/Standard_ND96amsr_A100_v4", "gcp/a3-highgpu-8g", "gcp/a3-megagpu-8g",
]  # fmt: skip


def main() -> None:
    catalog = load_catalog()
    rows = []
    jobs = (("llama-3.1-70b", "full"), ("llama-3.1-70b", "lora"), ("llama-3.1-8b", "full"), ("qwen3-30b-a3b", "full"))
    for model, method in jobs:
        spec = parse_job({"model": model, "method": method, "seq_len": 4096, "tokens": 10**8, "global_batch": 64}, "b")
        job = resolve_job(spec, catalog, "b")
        pools = [instance_pool(catalog, p, nodes=4) for p in POOLS]
        start = time.perf_counter()
        result = fit_job(job, pools)
        rank(result, "time")
        elapsed = time.perf_counter() - start
        rows.append([f"{model} {method}", str(len(pools)), f"{result.evaluated:,}", f"{len(result.layouts):,}",
                     f"{elapsed:.2f}", f"{result.evaluated / elapsed:,.0f}"])  # fmt: skip
    print(render_table(["job", "pools", "layouts", "fit", "seconds", "layouts/s"], rows, right={1, 2, 3, 4, 5}))


if __name__ == "__main__":
    main()
