"""Float8 casts' speed on this machine's GPU beside the time model's roofline for them (run by
``benchmarks/device_check.sh``).

The time model charges every dynamic float8 cast (torchao's tensorwise recipe) two reads of the high-precision
tensor, its absolute maximum and then the scaled cast, and one byte written an element, at the GPU's HBM bandwidth
(``timing.model``'s ``_CAST_16BIT`` and ``_CAST_FP32``: 16-bit activations, gradients and FSDP2's compute copies of
the weights; fp32 weights under autocast). Here each converted weight of the catalog's dense models
(``timing.model.fp8_converted``: every block linear but the lm_head), and a micro-step's input of each, is cast as
torchao casts it (the absolute maximum, the scale, the scaled and clamped e4m3 cast), compiled with
``torch.compile`` (which fuses each step into one kernel, as torchao's compiled path does; ``--eager`` runs the
operations one by one), from bf16 and from fp32; the median of five timings of enough casts to fill about 20 ms.
The model's seconds for the same cast stand beside each: a ratio near 1 holds the roofline; well above 1 says
casts cost more than the model charges.

Usage: python benchmarks/fp8_cast_sweep.py [--device cuda|cpu] [--gpu CATALOG_ID] [--models llama-3.1-8b,...]
       [--tokens 8192] [--eager] [-o TABLE.yaml]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from ftplan.io import write_text_atomic

MODELS = ("llama-3.1-8b", "llama-3.1-70b")
TOKENS = 8192  # rows of a micro-step's input cast
TARGET_S = 0.02
REPEATS = 5
E4M3_MAX = 448.0  # the largest float8_e4m3fn value (torch.finfo(torch.float8_e4m3fn).max)


def model_seconds(elements: int, source_bytes: int, hbm_gbs: float) -> float:
    """The time model's seconds for one cast: two reads of the source and one float8 byte written an element."""
    return elements * (2 * source_bytes + 1) / (hbm_gbs * 1e9)


def _cast(compiled: bool) -> Callable:
    import torch

    def cast(x: torch.Tensor) -> torch.Tensor:
        scale = E4M3_MAX / x.abs().amax().float().clamp(min=1e-12)
        return (x.float() * scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)

    return torch.compile(cast, dynamic=True) if compiled else cast  # (one compilation a dtype, not a shape)


def shapes(models: tuple[str, ...], tokens: int) -> list[tuple[str, str, int, int]]:
    """(model, what, rows, columns) of every distinct cast: each converted weight, and a micro-step's input to it."""
    from ftplan.catalog import load_catalog
    from ftplan.memory.estimate import fp8_converted

    catalog, out = load_catalog(), []
    for name in models:
        seen = set()
        for _, x in fp8_converted(catalog.architecture(name)):
            for what, rows, cols in (("weight", x.d_out, x.d_in), ("input", tokens, x.d_in)):
                if (what, rows, cols) not in seen:
                    seen.add((what, rows, cols))
                    out.append((name, what, rows, cols))
    return out


def sweep(device: str, gpu: str, models: tuple[str, ...], tokens: int, compiled: bool) -> list[dict]:
    """One row a cast and source dtype: measured seconds beside the model's."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    import gemm_sweep

    hbm = gemm_sweep.catalog_hardware(gpu).hbm_gbs
    timed, cast, rows = gemm_sweep._timer(device), _cast(compiled), []
    for model, what, r, c in shapes(models, tokens):
        dtypes = (("bf16", torch.bfloat16, 2), ("fp32", torch.float32, 4)) if what == "weight" else (
            ("bf16", torch.bfloat16, 2),)  # fmt: skip
        for label, dtype, size in dtypes:
            x = torch.randn(r, c, device=device, dtype=dtype)
            fn = lambda x=x: cast(x)  # noqa: E731
            timed(fn, 3)  # warm-up (and compilation)
            once = max(timed(fn, 1), 1e-7)
            calls = max(1, min(1_000, int(TARGET_S / once)))
            seconds = statistics.median(timed(fn, calls) / calls for _ in range(REPEATS))
            roof = model_seconds(r * c, size, hbm)
            rows.append({"model": model, "what": what, "rows": r, "cols": c, "from": label,
                         "us": float(f"{seconds * 1e6:.4g}"), "model_us": float(f"{roof * 1e6:.4g}")})  # fmt: skip
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--gpu", help="catalog GPU the model's column is for (default: the device's)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--eager", action="store_true", help="the cast's operations one by one, not compiled")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    import gemm_sweep

    name = gemm_sweep.device_name(args.device, "casts")
    if name is None:
        return 0
    import torch

    if not hasattr(torch, "float8_e4m3fn"):
        print(f"torch {torch.__version__} has no float8_e4m3fn: nothing to time")
        return 0
    gpu = gemm_sweep.catalog_gpu(name, args.gpu)
    if gpu is None:
        return 2
    models = tuple(x for x in args.models.split(",") if x)
    rows = sweep(args.device, gpu, models, args.tokens, compiled=not args.eager)
    table = {
        "source": {"ref": "benchmarks/fp8_cast_sweep.py" + (" --eager" if args.eager else ""), "device": name,
                   "model_gpu": gpu, "torch": str(torch.__version__), "date": datetime.date.today().isoformat()},
        "rows": rows,
    }  # fmt: skip
    if args.output:
        write_text_atomic(args.output, yaml.safe_dump(table, sort_keys=False, default_flow_style=None))
    from ftplan.report.tables import render_table

    cols = ["model", "what", "rows", "cols", "from", "us", "model_us"]
    body = [[str(r[c]) for c in cols] + [f"{r['us'] / r['model_us']:.3g}"] for r in rows]
    how = "eager" if args.eager else "compiled"
    print(f"float8 casts on {name} ({how}), µs; the time model's roofline on {gpu}")
    print(render_table([*cols, "measured / model"], body, right={2, 3, 5, 6, 7}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
