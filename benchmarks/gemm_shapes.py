"""The time model's GEMM cost beyond FLOPs, fitted to a measured table of H100 GEMMs by shape.

A GEMM of b batches of m × k by k × n takes ``2·b·m·n·k / R + out · b·m·n + inner · k + fixed`` seconds in the
time model (``ftplan.timing.model.GEMM_OUTPUT_S`` and the two after it): the main loop at a large-shape rate R,
the epilogue's writes of every output element, a latency per step of the inner dimension that one wave of tiles
cannot hide, and a fixed time a kernel. This script fits the four by least squares on relative time to OpenXLA's
measured H100 table (``gemm_h100_xla.yaml``, 375 shapes), prints them beside the constants the model uses, and the
error of both fits by output size: the four-term time and a plain FLOPs ÷ R (what a single efficiency assumes).

Usage: python benchmarks/gemm_shapes.py [TABLE.yaml]   (another table of the same columns, such as one
       benchmarks/gemm_sweep.py measured)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ftplan.io import read_yaml
from ftplan.report.tables import render_table
from ftplan.timing import model as tm

TABLE = Path(__file__).parent / "gemm_h100_xla.yaml"
OUTPUT_BUCKETS = (
    (0, 2**20, "< 1 M outputs"),
    (2**20, 2**22, "1–4 M"),
    (2**22, 2**24, "4–16 M"),
    (2**24, 2**40, "≥ 16 M"),
)


def load(path: Path = TABLE) -> np.ndarray:
    """The table's rows as an array of (b, m, n, k, TFLOP/s)."""
    return np.array(read_yaml(path)["rows"], dtype=float)


def seconds(rows: np.ndarray) -> np.ndarray:
    """Each row's measured time."""
    b, m, n, k, tflops = rows.T
    return 2 * b * m * n * k / (tflops * 1e12)


def fit(rows: np.ndarray) -> tuple[float, float, float, float]:
    """(R in FLOP/s, seconds an output element, seconds a step of k, seconds a GEMM): least squares on the relative
    time, ``Σ (t_model / t − 1)²``, which is linear in 1/R and the other three."""
    b, m, n, k, _ = rows.T
    t = seconds(rows)
    features = np.stack([2 * b * m * n * k, b * m * n, k, np.ones_like(k)], axis=1)
    coef, *_ = np.linalg.lstsq(features / t[:, None], np.ones_like(t), rcond=None)
    return 1 / coef[0], float(coef[1]), float(coef[2]), float(coef[3])


def predict(rows: np.ndarray, rate: float, out: float, inner: float, fixed: float) -> np.ndarray:
    """The four-term time of each row."""
    b, m, n, k, _ = rows.T
    return 2 * b * m * n * k / rate + out * b * m * n + inner * k + fixed


def report(rows: np.ndarray, name: str) -> None:
    """Print the fit to ``rows``, the constants the model uses, and both fits' errors beside one rate's."""
    rate, out, inner, fixed = fit(rows)
    t = seconds(rows)
    model = np.abs(predict(rows, rate, out, inner, fixed) / t - 1)
    used = np.abs(predict(rows, rate, tm.GEMM_OUTPUT_S, tm.GEMM_INNER_S, tm.GEMM_FIXED_S) / t - 1)
    flops = 2 * rows[:, 0] * rows[:, 1] * rows[:, 2] * rows[:, 3]
    one_rate = 1 / (np.sum(flops / t) / np.sum((flops / t) ** 2))  # least squares on relative time, as fit()
    plain = np.abs(flops / one_rate / t - 1)
    print(f"{len(rows)} shapes of {name}: R = {rate / 1e12:.4g} TFLOP/s, {out * 1e12:.3f} ps an output element,")
    used_text = f"{tm.GEMM_OUTPUT_S * 1e12:.3f} ps, {tm.GEMM_INNER_S * 1e9:.3f} ns, {tm.GEMM_FIXED_S * 1e6:.2f} µs"
    print(f"{inner * 1e9:.3f} ns a step of k, {fixed * 1e6:.2f} µs a GEMM (the model uses {used_text})\n")
    outputs = rows[:, 0] * rows[:, 1] * rows[:, 2]
    table = []
    for lo, hi, name in ((0, 2**40, "all"), *OUTPUT_BUCKETS):
        sel = (outputs >= lo) & (outputs < hi)
        if not sel.any():
            continue
        table.append([name, str(int(sel.sum())), f"{np.median(model[sel]):.1%}", f"{np.percentile(model[sel], 90):.1%}",
                      f"{np.median(used[sel]):.1%}", f"{np.median(plain[sel]):.1%}",
                      f"{np.percentile(plain[sel], 90):.1%}"])  # fmt: skip
    print(render_table(["outputs b·m·n", "shapes", "fit median", "fit p90", "model's constants median",
                        f"one rate ({one_rate / 1e12:.4g} TFLOP/s) median", "one rate p90"], table,
                       right={1, 2, 3, 4, 5, 6}))  # fmt: skip


def main(argv: list[str]) -> None:
    table = Path(argv[0]) if argv else TABLE
    report(load(table), table.name)


if __name__ == "__main__":
    main(sys.argv[1:])
