"""Estimates per second on one core (the layout search needs ≥ 10,000).

Usage: python benchmarks/memory_speed.py
"""

from __future__ import annotations

import itertools
import time

from ftplan.catalog import load_catalog
from ftplan.memory import Layout, LoraSetup, Method, Precision, Recompute, Training, ZeroStage, estimate_memory
from ftplan.report.tables import render_table


def main() -> None:
    cat = load_catalog(user_models=None)
    rows = []
    for model in ("llama-3.1-8b", "llama-3.1-70b", "mixtral-8x7b", "flan-t5-xl"):
        arch = cat.architecture(model)
        lora = LoraSetup(target_modules=("all-linear",))
        combos = list(
            itertools.product(
                (Method.FULL, Method.LORA, Method.QLORA), (1, 2, 4, 8), (0, 1, 2, 3), tuple(Recompute), (1, 2, 4)
            )
        )
        start = time.perf_counter()
        for method, dp, zero, rc, mb in combos:
            estimate_memory(
                arch,
                Training(method=method, precision=Precision.BF16_MIXED, seq_len=4096, lora=lora),
                Layout(dp=dp, zero=ZeroStage(zero), recompute=rc, micro_batch=mb, gpus_per_node=8),
            )
        elapsed = time.perf_counter() - start
        rows.append([model, str(len(combos)), f"{elapsed * 1e3:.1f}", f"{len(combos) / elapsed:,.0f}"])
    print(render_table(["model", "estimates", "ms", "estimates/s"], rows, right={1, 2, 3}))


if __name__ == "__main__":
    main()
