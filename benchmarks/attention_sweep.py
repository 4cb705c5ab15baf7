"""Attention kernels' speed by sequence length on this machine's GPU, beside the time model's (run by
``benchmarks/device_check.sh``).

The time model runs the attention core at its GPU's fitted FlashAttention-2 rate (catalog ``attention_efficiency``)
and, on Hopper, a kernel faster by its measured speed over FlashAttention-2's at each length: ``flash3`` by the
FlashAttention-3 paper's H100 figures (``timing.model.ATTENTION_KERNEL_TFLOPS``), ``cudnn`` by NVIDIA's
cudnn-frontend sweep on an H200 (``CUDNN_SWEEP``); on Blackwell each kernel at its speed measured there
(``CUDNN_SWEEP``, ``FLASH2_BLACKWELL_TFLOPS``); elsewhere every kernel takes FlashAttention-2's rate scaled with the
GPU's peak. All are checked here: each kernel this machine has,
causal, in bf16, at the paper's shapes (16k tokens a call: batch × length, 16 heads of 128), forward and backward
timed apart (CUDA events; ``time.perf_counter`` on a CPU; the median of five timings of enough calls to fill about 20
ms), in the paper's FLOP convention (forward 4·b·h·s²·d halved by the causal mask, backward 2.5 times that). Kernels:
PyTorch SDPA's flash backend (``flash2``), its cuDNN backend (``cudnn``) and its memory-efficient one (no model
column), and ``flash_attn`` (FlashAttention-2) and ``flash_attn_interface`` (FlashAttention-3) where installed; a
kernel that cannot run says why.

Columns beside the measurement: ``table``, the Hopper figure the model's ratios come from (Hopper kernels only), and
``model``, the rate the time model runs the kernel at on the device's catalog GPU, in the same convention (its
backward counts three forward-sized parts where the paper counts 2.5, so its backward rate is 2.5/3 of its
internal one). ``measured / model`` is what the model's rate leaves out on this GPU: on a Blackwell GPU, how far
the cudnn-frontend figures the model takes (another runner's, a GB200's and a B200's) carry over to this machine.

Usage: python benchmarks/attention_sweep.py [--device cuda|cpu] [--gpu CATALOG_ID] [--lengths 512,...]
       [--tokens 16384] [--heads 16] [--head-dim 128] [--kernels flash2,cudnn,...] [-o TABLE.yaml]
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

LENGTHS = (512, 1024, 2048, 4096, 8192, 16384)
TOKENS = 16384  # batch × length of every call (FlashAttention-3 paper, §4.1)
HEADS, HEAD_DIM = 16, 128
KERNELS = ("flash2", "cudnn", "efficient", "fa2-package", "fa3-package")
# the model's kernel each one is (None: the model has no such kernel)
MODEL_KERNEL = {"flash2": "flash2", "cudnn": "cudnn", "efficient": None, "fa2-package": "flash2",
                "fa3-package": "flash3"}  # fmt: skip
TARGET_S = 0.02
REPEATS = 5
BACKWARD_PARTS = 2.5 / 3  # the paper's backward FLOPs over the model's (three forward-sized parts)


def flops(batch: int, heads: int, length: int, head_dim: int) -> tuple[float, float]:
    """(forward, backward) FLOPs of one causal call in the FlashAttention papers' convention."""
    forward = 4 * batch * heads * length * length * head_dim / 2
    return forward, 2.5 * forward


def model_rates(gpu: str, kernel: str, length: int) -> tuple[float | None, float, float]:
    """(the Hopper table's forward and backward TFLOP/s for a Hopper kernel or None, the time model's forward and
    backward TFLOP/s) for ``kernel`` at ``length`` on catalog GPU ``gpu``, in the papers' convention."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent))
    import gemm_sweep

    from ftplan.memory.setup import AttentionKernel
    from ftplan.timing import model as tm

    hw = gemm_sweep.catalog_hardware(gpu)
    k = AttentionKernel(kernel)
    grid, x = np.log2(tm.ATTENTION_KERNEL_LENGTHS), np.log2(length)
    if k is AttentionKernel.CUDNN:  # (the H200 sweep: an H100's compute)
        fwd_table, bwd_table = (float(f) * tm.HOPPER_BF16_PEAK for f in tm.cudnn_fraction(np.array(length), "hopper"))
    else:
        fwd_table, bwd_table = (float(np.interp(x, grid, v)) for v in tm.ATTENTION_KERNEL_TFLOPS[k])
    hopper = hw.gpu_arch in tm.ATTENTION_KERNEL_ARCHS
    # each direction's speed-up over the rate the attention efficiency stands for (on Hopper and Blackwell)
    fwd_up, bwd_up = tm.attention_kernel_speedup(k, np.array(float(length)), hw.gpu_arch, hw.gpu_id)
    rate = hw.attention_rate / 1e12
    return (fwd_table, bwd_table) if hopper else None, rate * float(fwd_up), rate * float(bwd_up) * BACKWARD_PARTS


def _timer(device: str) -> Callable[[Callable[[], object], int], float]:
    sys.path.insert(0, str(Path(__file__).parent))
    import gemm_sweep

    return gemm_sweep._timer(device)


def _call(kernel: str, q, k, v) -> Callable[[], object]:
    """The kernel's causal attention of (batch, heads, length, dim) tensors; raises where it cannot run."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if kernel in ("fa2-package", "fa3-package"):
        module = __import__("flash_attn" if kernel == "fa2-package" else "flash_attn_interface")
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # (its layout: batch, length, heads, dim)

        def run() -> object:
            out = module.flash_attn_func(qt, kt, vt, causal=True)
            return out[0] if isinstance(out, tuple) else out

        return run
    backend = {"flash2": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}[kernel]  # fmt: skip

    def sdpa() -> object:
        with sdpa_kernel([backend]):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    return sdpa


def _seconds(timed: Callable[[Callable[[], object], int], float], fn: Callable[[], object]) -> float:
    timed(fn, 2)  # warm-up: the kernel chosen
    once = max(timed(fn, 1), 1e-7)
    calls = max(1, min(1_000, int(TARGET_S / once)))
    return statistics.median(timed(fn, calls) / calls for _ in range(REPEATS))


def sweep(
    device: str, gpu: str, kernels: tuple[str, ...], lengths: tuple[int, ...], tokens: int, heads: int, head_dim: int
) -> tuple[list[dict], dict[str, str]]:  # fmt: skip
    """One row a kernel and length (measured forward and backward TFLOP/s beside the table's and the model's), and
    why each kernel this machine cannot run is left out."""
    import torch

    timed, rows, unavailable = _timer(device), [], {}
    for kernel in kernels:
        for length in lengths:
            batch = max(1, tokens // length)
            shape = (batch, heads, length, head_dim)
            q, k, v = (torch.randn(shape, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
            try:
                fn = _call(kernel, q, k, v)
                out = fn()
            except (ImportError, RuntimeError) as why:
                unavailable[kernel] = (str(why).strip().splitlines() or [type(why).__name__])[0][:160]
                break
            grad = torch.randn_like(out)
            fwd_s = _seconds(timed, fn)
            bwd_s = _seconds(timed, lambda out=out, grad=grad, q=q, k=k, v=v: torch.autograd.grad(
                out, (q, k, v), grad, retain_graph=True))  # fmt: skip
            f_fwd, f_bwd = flops(batch, heads, length, head_dim)
            row: dict = {"kernel": kernel, "length": length, "batch": batch,
                         "fwd_tflops": float(f"{f_fwd / fwd_s / 1e12:.4g}"),
                         "bwd_tflops": float(f"{f_bwd / bwd_s / 1e12:.4g}")}  # fmt: skip
            if MODEL_KERNEL[kernel] is not None:
                table, fwd_m, bwd_m = model_rates(gpu, MODEL_KERNEL[kernel], length)
                if table is not None:
                    row.update(table_fwd=table[0], table_bwd=table[1])
                row.update(model_fwd=float(f"{fwd_m:.4g}"), model_bwd=float(f"{bwd_m:.4g}"))
            rows.append(row)
    return rows, unavailable


def _cell(row: dict, key: str) -> str:
    return f"{row[key]:.4g}" if key in row else "—"


def _ratio(row: dict, measured: str, model: str) -> str:
    return f"{row[measured] / row[model]:.3g}" if model in row else "—"


def render(rows: list[dict], unavailable: dict[str, str]) -> str:
    from ftplan.report.tables import render_table

    cols = ["kernel", "length", "fwd", "bwd", "table fwd", "table bwd", "model fwd", "model bwd",
            "fwd / model", "bwd / model"]  # fmt: skip
    body = [
        [r["kernel"], str(r["length"])]
        + [_cell(r, key) for key in ("fwd_tflops", "bwd_tflops", "table_fwd", "table_bwd", "model_fwd", "model_bwd")]
        + [_ratio(r, "fwd_tflops", "model_fwd"), _ratio(r, "bwd_tflops", "model_bwd")]
        for r in rows
    ]
    lines = [render_table(cols, body, right=set(range(1, len(cols))))]
    lines += [f"{kernel}: not run here: {why}" for kernel, why in unavailable.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--gpu", help="catalog GPU the time model's columns are for (default: the device's)")
    parser.add_argument("--kernels", default=",".join(KERNELS))
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--heads", type=int, default=HEADS)
    parser.add_argument("--head-dim", type=int, default=HEAD_DIM)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    split = lambda text: tuple(x for x in text.split(",") if x)  # noqa: E731
    unknown = [k for k in split(args.kernels) if k not in KERNELS]
    if unknown:
        print(f"--kernels: unknown kernel {unknown[0]}. To fix: choose from {', '.join(KERNELS)}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).parent))
    import gemm_sweep

    name = gemm_sweep.device_name(args.device, "attention kernels")
    if name is None:
        return 0
    import torch

    gpu = gemm_sweep.catalog_gpu(name, args.gpu)
    if gpu is None:
        return 2
    rows, unavailable = sweep(args.device, gpu, split(args.kernels), tuple(map(int, split(args.lengths))),
                              args.tokens, args.heads, args.head_dim)  # fmt: skip
    cudnn = torch.backends.cudnn.version() if args.device == "cuda" else None
    table = {
        "source": {"ref": "benchmarks/attention_sweep.py", "device": name, "model_gpu": gpu,
                   "torch": str(torch.__version__), "cudnn": cudnn, "date": datetime.date.today().isoformat(),
                   "shape": {"tokens": args.tokens, "heads": args.heads, "head_dim": args.head_dim, "causal": True}},
        "rows": rows,
        "not_run": unavailable,
    }  # fmt: skip
    if args.output:
        write_text_atomic(args.output, yaml.safe_dump(table, sort_keys=False, default_flow_style=None))
    print(f"causal attention on {name}, bf16, {args.heads} heads of {args.head_dim}, {args.tokens} tokens a call; "
          f"TFLOP/s (FlashAttention papers' convention); the time model's on {gpu}")  # fmt: skip
    print(render(rows, unavailable))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
