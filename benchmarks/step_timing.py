"""Measured GPU step times beside the time model's, term by term (run by ``benchmarks/device_check.sh``).

Each case is a single-GPU job on a catalog model with random weights (``ftplan measure --device cuda``):
one warm-up step, then ``--steps`` timed steps (synchronised; the median of all but the first, which also
tracks saved tensors). The time model's step is on the catalog's GPU of the same name, with the job's
micro-batch, accumulation, recomputation and kernels. The cases run from launch-bound (a 1B LoRA at 512
tokens a micro-step) to compute-bound (2,048–4,096 tokens, full fine-tuning), so the per-operation dispatch
time and the matmul efficiency show apart. Needs a CUDA build of torch; on a machine without one it says so.

Usage: python benchmarks/step_timing.py [--steps N]
"""

from __future__ import annotations

import argparse
import sys

from ftplan.catalog import load_catalog
from ftplan.errors import FtplanError
from ftplan.job import resolve_job
from ftplan.measure import measure_job
from ftplan.report.tables import render_table
from ftplan.schema.job import parse_job

LORA = {"method": "lora", "lora": {"rank": 16, "target_modules": "all-linear"}}
CASES = {  # job fields: single GPU, bf16-mixed, SDPA
    "llama-3.2-1b lora s512 mb1": {"model": "llama-3.2-1b", **LORA, "seq_len": 512, "micro_batch": 1},
    "llama-3.2-1b lora s512 mb8": {"model": "llama-3.2-1b", **LORA, "seq_len": 512, "micro_batch": 8},
    "llama-3.2-1b lora s2048 mb4 recompute": {"model": "llama-3.2-1b", **LORA, "seq_len": 2048, "micro_batch": 4,
                                              "layout": {"recompute": "full"}},
    "llama-3.2-1b full s2048 mb4": {"model": "llama-3.2-1b", "seq_len": 2048, "micro_batch": 4},
    "qwen2.5-1.5b full s1024 mb8 fused-adamw": {"model": "qwen2.5-1.5b", "seq_len": 1024, "micro_batch": 8,
                                                "optimizer": "adamw-fused"},
    "llama-3.2-3b lora s4096 mb2 recompute": {"model": "llama-3.2-3b", **LORA, "seq_len": 4096, "micro_batch": 2,
                                              "layout": {"recompute": "full"}},
}  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("torch is not installed (pip install -e '.[measure]'): nothing to time")
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: step times are measured on a GPU only")
        return 0
    catalog = load_catalog()
    rows, skipped = [], []
    for name, fields in CASES.items():
        job = resolve_job(parse_job(dict(fields, precision="bf16-mixed"), name), catalog, name)
        try:
            c = measure_job(job, device="cuda", steps=args.steps, count_ops=True)
        except FtplanError as exc:
            skipped.append(f"{name}: {exc}")
            continue
        m, t = c.measurement, c.model_step
        if t is None:
            skipped.append(f"{name}: this GPU ({torch.cuda.get_device_name()}) is not in the catalog")
            continue
        model = float(t.total[0])
        (f, b), (mf, mb) = m.ops, c.model_ops
        rows.append([
            name, f"{m.step_seconds:.4f}", f"{model:.4f}", f"{model / m.step_seconds - 1:+.1%}",
            f"{float(t.compute[0]):.4f}", f"{float(t.dispatch[0]):.4f}", f"{float(t.other[0]):.4f}",
            f"{f + b:,}", f"{mf + mb:,.0f}",
        ])  # fmt: skip
    print(f"{torch.cuda.get_device_name()} · time model on {c.model_gpu if rows else '—'} · {args.steps} steps")
    print(render_table(["case", "measured s", "model s", "error", "compute s", "dispatch s", "other s",
                        "ops measured", "ops model"], rows, right=set(range(1, 9))))  # fmt: skip
    for line in skipped:
        print(f"skipped {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
