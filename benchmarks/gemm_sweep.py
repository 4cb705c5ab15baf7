"""GEMM throughput by shape on this machine's GPU, in ``gemm_h100_xla.yaml``'s table format, and the time model's
GEMM constants fitted to it (run by ``benchmarks/device_check.sh``).

Every shape of OpenXLA's H100 table (b batched m × k by k × n products, b in {1, 2, 4}, m, n, k from 256 to
4,096) is timed on the device: ``torch.bmm`` in bf16, or one ``torch._scaled_mm`` a batch in FP8 (e4m3 operands,
bf16 output, per-tensor scales; b = 1 only, as the kernel takes no batch), with cuBLAS's precise accumulation as
the MAMF table measured it or, with ``--dtype fp8-fast``, its fast accumulation, which torchao's forward GEMM and
Transformer Engine's run (``use_fast_accum``). Each shape runs a few warm-up calls,
then the median of five timings of enough calls to fill about 20 ms (CUDA events; ``time.perf_counter`` on a
CPU). The table is written with ``-o``, and ``benchmarks/gemm_shapes.py``'s report of it printed: the four
constants fitted to it beside the ones the time model takes from the H100 table, so a session with a GPU checks
those on its own GPU, and in FP8, which the H100 table lacks.

With ``--grouped`` it times a MoE's routed experts instead, as the time model runs them (``timing.model``'s
``GemmShape`` with groups: one ``torch.nn.functional.grouped_mm`` a projection, the rank's experts / ep experts
taking the tokens' top-k rows evenly): every expert projection of the catalog's MoE models (``GROUPED_MODELS``) at
a few micro-step sizes and expert-parallel degrees, forward only, beside what the time model gives the same GEMM on
the device's catalog GPU (its FLOPs at peak × efficiency plus the GEMM constants) — the check of the expert GEMMs
that the MoE rows of ``throughput_accuracy.py`` leave least certain.

Usage: python benchmarks/gemm_sweep.py [--device cuda|cpu] [--dtype bf16|fp8|fp8-fast] [--sizes 256,512,...]
       [--batches 1,2,4] [-o TABLE.yaml]
       python benchmarks/gemm_sweep.py --grouped [--device cuda|cpu] [--gpu CATALOG_ID] [--tokens 4096,16384]
       [--eps 1,8] [--models qwen3-30b-a3b,...] [-o TABLE.yaml]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ftplan.io import write_text_atomic

SIZES = (256, 512, 1024, 2048, 4096)
GROUPED_MODELS = ("qwen3-30b-a3b", "gpt-oss-120b", "qwen3-235b-a22b", "deepseek-v3")
GROUPED_TOKENS = (4096, 16384)  # tokens a rank routes a micro-step
GROUPED_EPS = (1, 8)
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


def device_name(device: str, what: str) -> str | None:
    """The device's name, or None after saying why nothing is timed here (no torch, no CUDA device)."""
    try:
        import torch
    except ImportError:
        print("torch is not installed (pip install -e '.[measure]'): nothing to time")
        return None
    if device == "cuda" and not torch.cuda.is_available():
        print(f"no CUDA device: {what} are timed on a GPU (--device cpu times this machine's CPU)")
        return None
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def catalog_gpu(name: str, given: str | None) -> str | None:
    """The catalog GPU the time model's columns are for: ``given``, else the device's by its name; None after
    saying the device is not in the catalog."""
    if given is not None:
        return given
    from ftplan.catalog import load_catalog
    from ftplan.errors import FtplanError

    try:
        return load_catalog().gpu(name.replace("NVIDIA ", "").split(" ")[0]).id
    except FtplanError:
        print(f"{name} is not in the GPU catalog: give --gpu, the catalog GPU the time model's columns are for")
        return None


@functools.cache
def catalog_hardware(gpu: str) -> Any:
    """One node of catalog GPU ``gpu`` as the time model sees it in bf16 (``timing.model.Hardware``), the model's
    columns of this script and of ``attention_sweep.py`` and ``fp8_cast_sweep.py``."""
    from ftplan.catalog import load_catalog
    from ftplan.fit import Pool, hardware
    from ftplan.memory.setup import Precision

    g = load_catalog().gpus[gpu]
    pool = Pool(gpu, g, gpus_per_node=g.max_gpus_per_node, max_nodes=1, network_gbps=None, usd_per_node_hour=None)
    return hardware(pool, Precision.BF16_MIXED)


def _gemm(device: str, dtype: str, b: int, m: int, n: int, k: int) -> Callable[[], object]:
    import torch

    if dtype in ("fp8", "fp8-fast"):
        a = torch.randn(m, k, device=device).to(torch.float8_e4m3fn)
        w = torch.randn(n, k, device=device).to(torch.float8_e4m3fn).t()  # (column-major, as the kernel needs)
        one = torch.ones((), device=device)
        fast = dtype == "fp8-fast"
        return lambda: torch._scaled_mm(a, w, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=fast)
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


def grouped(
    device: str, gpu: str, models: tuple[str, ...], tokens: tuple[int, ...], eps: tuple[int, ...]
) -> list[dict]:  # fmt: skip
    """Every expert projection of ``models`` at ``tokens`` routed tokens and each ep: measured against the time
    model's seconds for the same grouped GEMM on catalog GPU ``gpu`` (bf16)."""
    import torch

    from ftplan.catalog import load_catalog
    from ftplan.memory.setup import Training
    from ftplan.timing import model as tm

    catalog = load_catalog()
    hw = catalog_hardware(gpu)
    rate = hw.peak_tflops * 1e12 * hw.efficiency
    timed, out = _timer(device), []
    for name in models:
        arch = catalog.architecture(name)
        shapes = {(x.d_in, x.d_out, x.groups, x.rows): x for x in tm.job_flops(arch, Training()).gemms if x.groups > 1}
        for shape in shapes.values():  # (gate and up share a shape: timed once)
            for t, ep in itertools.product(tokens, eps):
                experts, rows = shape.groups // ep, int(t * shape.rows)
                x = torch.randn(rows, shape.d_in, device=device, dtype=torch.bfloat16)
                w = torch.randn(experts, shape.d_in, shape.d_out, device=device, dtype=torch.bfloat16)
                offs = torch.linspace(rows / experts, rows, experts, device=device).round().to(torch.int32)
                fn = lambda x=x, w=w, offs=offs: torch.nn.functional.grouped_mm(x, w, offs=offs)  # noqa: E731
                timed(fn, 2)
                once = max(timed(fn, 1), 1e-7)
                calls = max(1, min(1_000, int(TARGET_S / once)))
                seconds = statistics.median(timed(fn, calls) / calls for _ in range(REPEATS))
                flop = 2 * rows * shape.d_in * shape.d_out
                model = flop / rate + tm.gemm_fixed_seconds(hw, rows, shape.d_out, shape.d_in)
                out.append({
                    "model": name, "d_in": shape.d_in, "d_out": shape.d_out, "experts": experts, "tokens": t,
                    "ep": ep, "rows_per_expert": rows // experts, "tflops": float(f"{flop / seconds / 1e12:.4g}"),
                    "model_tflops": float(f"{flop / model / 1e12:.4g}"),
                })  # fmt: skip
    return out


def _grouped_main(args: argparse.Namespace, name: str) -> int:
    import torch

    gpu = catalog_gpu(name, args.gpu)
    if gpu is None:
        return 2
    split = lambda text: tuple(x for x in text.split(",") if x)  # noqa: E731
    rows = grouped(args.device, gpu, split(args.models), tuple(map(int, split(args.tokens))),
                   tuple(map(int, split(args.eps))))  # fmt: skip
    table = {
        "source": {"ref": "benchmarks/gemm_sweep.py --grouped", "device": name, "model_gpu": gpu,
                   "torch": str(torch.__version__), "date": datetime.date.today().isoformat()},
        "rows": rows,
    }  # fmt: skip
    if args.output:
        write_text_atomic(args.output, yaml.safe_dump(table, sort_keys=False, default_flow_style=None))
    from ftplan.report.tables import render_table

    cols = ["model", "d_in", "d_out", "experts", "tokens", "ep", "rows_per_expert", "tflops", "model_tflops"]
    body = [[str(r[c]) for c in cols] + [f"{r['tflops'] / r['model_tflops']:.2f}"] for r in rows]
    print(f"grouped expert GEMMs on {name}, forward, bf16; the time model's on {gpu}")
    print(render_table([*cols, "measured / model"], body, right=set(range(1, len(cols) + 1))))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp8", "fp8-fast"))
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--grouped", action="store_true", help="time MoE expert GEMMs (see module docstring)")
    parser.add_argument("--gpu", help="catalog GPU the time model's column is for (default: the device's)")
    parser.add_argument("--models", default=",".join(GROUPED_MODELS))
    parser.add_argument("--tokens", default=",".join(map(str, GROUPED_TOKENS)))
    parser.add_argument("--eps", default=",".join(map(str, GROUPED_EPS)))
    args = parser.parse_args(argv)
    name = device_name(args.device, "GEMMs")
    if name is None:
        return 0
    import torch

    if args.dtype != "bf16" and (args.device != "cuda" or torch.cuda.get_device_capability() < (8, 9)):
        print("FP8 GEMMs need a GPU of compute capability 8.9 or later: skipped")
        return 0
    if args.grouped:
        if not hasattr(torch.nn.functional, "grouped_mm"):
            print(f"torch {torch.__version__} has no torch.nn.functional.grouped_mm: the expert GEMMs are not timed")
            return 0
        return _grouped_main(args, name)
    sizes = tuple(int(x) for x in args.sizes.split(","))
    batches = tuple(int(x) for x in args.batches.split(","))
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
