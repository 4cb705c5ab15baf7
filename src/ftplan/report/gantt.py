"""The schedule as a Gantt chart per node (matplotlib, written as PNG)."""

from __future__ import annotations

import io
from pathlib import Path

from ftplan.io import write_bytes_atomic
from ftplan.schema.plan import Plan


def gantt_png(plan: Plan) -> bytes:
    """One row per node (or instance); each run a bar from start to end, labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt

    nodes = sorted({n for r in plan.runs for n in r.nodes})
    row = {n: i for i, n in enumerate(nodes)}
    jobs = sorted({r.job for r in plan.runs})
    colours = {j: plt.get_cmap("tab20")(i % 20) for i, j in enumerate(jobs)}
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.45 * len(nodes)))
    for r in plan.runs:
        for n, idx in r.gpus.items():
            lo, share = min(idx), len(idx)
            per_row = max(max(v) for rr in plan.runs for nn, v in rr.gpus.items() if nn == n) + 1
            y = row[n] - 0.4 + 0.8 * lo / per_row
            ax.broken_barh([(r.start_h, r.end_h - r.start_h)], (y, 0.8 * share / per_row), color=colours[r.job],
                           edgecolor="black", linewidth=0.5)  # fmt: skip
            if r.end_h - r.start_h >= 0.06 * plan.totals.makespan_h:  # label bars wide enough to read
                ax.text(r.start_h + (r.end_h - r.start_h) / 2, y + 0.4 * share / per_row, r.run, ha="center",
                        va="center", fontsize=7)  # fmt: skip
    ax.set_yticks(range(len(nodes)), nodes)
    handles = [matplotlib.patches.Patch(color=colours[j], label=j) for j in jobs]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_xlabel("hours from the campaign start")
    ax.set_title(f"{plan.scenario}: ${plan.totals.cost_usd:,.0f}, makespan {plan.totals.makespan_h:.1f} h")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_gantt(plan: Plan, path: Path) -> None:
    """Write the chart atomically."""
    write_bytes_atomic(path, gantt_png(plan))
