"""Comparison tables and the cost–time frontier chart."""

from __future__ import annotations

from ftplan.compare import ChoiceResult
from ftplan.report.tables import render_table


def compare_table(results: list[ChoiceResult]) -> str:
    rows = []
    for r in results:
        money = f"{r.cost_usd:,.2f}" if r.cost_usd is not None else "—"
        span = f"{r.makespan_h:,.2f}" if r.makespan_h is not None else "—"
        gpuh = f"{r.gpu_hours:,.1f}" if r.gpu_hours is not None else "—"
        util = f"{100 * r.utilisation:.0f}%" if r.utilisation is not None else "—"
        rows.append([r.choice, r.status, money, span, gpuh, util, str(len(r.left_out)) if r.left_out else ""])
    out = [render_table(["choice", "status", "cost USD", "makespan h", "GPU-hours", "utilisation", "left out"],
                        rows, right={2, 3, 4, 5, 6})]  # fmt: skip
    notes = [f"  {r.choice}: {rid}: {why}" for r in results for rid, why in r.left_out.items()]
    notes += [f"  {r.choice}: {r.reason}" for r in results if r.reason]
    if notes:
        out += ["", "why:", *notes]
    return "\n".join(out)


def frontier_table(points: list[tuple[float, float, float]]) -> str:
    rows = [[f"{d:,.2f}", f"{c:,.2f}", f"{m:,.2f}"] for d, c, m in points]
    return render_table(["deadline h", "cost USD", "makespan h"], rows, right={0, 1, 2})


def frontier_png(points: list[tuple[float, float, float]], title: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.step([m for _, _, m in points], [c for _, c, _ in points], where="post", marker="o")
    ax.set_xlabel("makespan (hours)")
    ax.set_ylabel("cost (USD)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
