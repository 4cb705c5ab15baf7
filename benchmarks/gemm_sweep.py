"""GEMM throughput by shape on this machine's GPU, in ``gemm_h100_xla.yaml``'s table format, and the time model's
GEMM constants fitted to it (run by ``benchmarks/device_check.sh``).

Every shape of OpenXLA's H100 table (b batched m × k by k × n products, b in {1, 2, 4}, m, n, k from 256 to
4,096) is timed on the device: ``torch.bmm`` in bf16, or one ``torch._scaled_mm`` a batch in FP8 (e4m3 operands,
bf16 output, per-tensor scales; b = 1 only, as the kernel takes no batch). Each shape runs a few warm-up calls,
then the median of five timings of enough calls to fill about 20 ms (CUDA events; ``time.perf_counter`` on a
CPU). The table is written with ``-o``, and ``benchmarks/gemm_shapes.py``'s report of it printed: the four
constants fitted to it beside the ones the time model takes from the H100 table, so a session with a GPU checks
those on its own GPU, and in FP8, which the H100 table lacks.

Usage: python benchmarks/gemm_sweep.py [--device cuda|cpu] [--dtype bf16|fp8] [--sizes 256,512,...]
       [--batches 1,2,4] [-o TABLE.yaml]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from ftplan.io import write_text_atomic

SIZES = (256, 512, 1024, 2048, 4096)
BATCHES = (1, 2, 4)
TARGET_S = 0.02  # seconds of calls a timing covers
REPEATS = 5


def _timer(device: str) -> Callable[[Callable[[], object], int], float]:
    """Seconds ``calls`` calls of a function take on the device (synchronised)."""
    import torch

    if device == "cuda":

        def timed(fn: Callable[[], object], calls: int) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3

        return timed

    def timed_cpu(fn: Callable[[], object], calls: int) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return time.perf_counter() - t0

    return timed_cpu


def _gemm(device: str, dtype: str, b: int, m: int, n: int, k: int) -> Callable[[], object]:
    import torch

    if dtype == "fp8":
        a = torch.randn(m, k, device=device).to(torch.float8_e4m3fn)
        w = torch.randn(n, k, device=device).to(torch.float8_e4m3fn).t()  # (column-major, as the kernel needs)
        one = torch.ones((), device=device)
        return lambda: torch._scaled_mm(a, w, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    a = torch.randn(b, m, k, device=device, dtype=torch.bfloat16)
    w = torch.randn(b, k, n, device=device, dtype=torch.bfloat16)
    return lambda: torch.bmm(a, w)


def measure(device: str, dtype: str, sizes: tuple[int, ...], batches: tuple[int, ...]) -> list[list[float]]:
    """Rows (b, m, n, k, TFLOP/s) of every shape."""
    timed = _timer(device)
    rows = []
    for b, m, n, k in itertools.product(batches if dtype == "bf16" else (1,), sizes, sizes, sizes):
        fn = _gemm(device, dtype, b, m, n, k)
        timed(fn, 3)  # warm-up: the kernel chosen, the caches filled
        once = max(timed(fn, 1), 1e-7)
        calls = max(1, min(10_000, int(TARGET_S / once)))
        seconds = statistics.median(timed(fn, calls) / calls for _ in range(REPEATS))
        rows.append([b, m, n, k, float(f"{2 * b * m * n * k / seconds / 1e12:.4g}")])  # (4 significant digits)
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp8"))
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("torch is not installed (pip install -e '.[measure]'): nothing to time")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: GEMMs are timed on a GPU (--device cpu times this machine's CPU)")
        return 0
    if args.dtype == "fp8" and (args.device != "cuda" or torch.cuda.get_device_capability() < (8, 9)):
        print("FP8 GEMMs need a GPU of compute capability 8.9 or later: skipped")
        return 0
    sizes = tuple(int(x) for x in args.sizes.split(","))
    batches = tuple(int(x) for x in args.batches.split(","))
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    rows = measure(args.device, args.dtype, sizes, batches)
    table = {
        "source": {"ref": f"benchmarks/gemm_sweep.py --dtype {args.dtype}", "device": name,
                   "torch": str(torch.__version__), "date": datetime.date.today().isoformat()},
        "columns": ["b", "m", "n", "k", "tflops"],
        "rows": rows,
    }  # fmt: skip
    if args.output:
        write_text_atomic(args.output, yaml.safe_dump(table, sort_keys=False, default_flow_style=None))
    sys.path.insert(0, str(Path(__file__).parent))
    import gemm_shapes

    if len(rows) >= 4:  # (the fit's four constants)
        gemm_shapes.report(np.array(rows, dtype=float), f"{name} ({args.dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
