"""One self-contained HTML page for a plan: what a team lead forwards to finance.

No network and no external files: charts are inline PNG (base64) and SVG, styles inline. A short
inline script marks the page once every image has decoded (``data-images-ok``), which the tests
read in headless Chromium.
"""

from __future__ import annotations

import base64
import html

from ftplan.compare import ChoiceResult
from ftplan.report.compare_report import frontier_png
from ftplan.report.gantt import gantt_png
from ftplan.report.plan_table import planned_at, policy_label, spread
from ftplan.report.tables import TERM_LABELS
from ftplan.scenario import Campaign
from ftplan.schema.plan import Plan
from ftplan.units import GIB
from ftplan.verify import run_memory

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f3f3f3;text-align:left}td.n{text-align:right}h1{font-size:22px}h2{font-size:17px;margin-top:1.5em}
.ok{color:#176d2c}.bad{color:#b00020}.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
"""
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images-ok', ok ? 'yes' : 'no');
});
"""
_COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
            "#bab0ac", "#86bcb6", "#d37295", "#8cd17d", "#b6992d", "#499894", "#79706e"]  # fmt: skip


def _table(table_id: str, headers: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=n' if i in numeric else ''}>{html.escape(c)}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(png: bytes, alt: str, img_id: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img id="{img_id}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def memory_terms(campaign: Campaign, plan: Plan) -> dict[str, dict[str, int]]:
    """Per run, the memory model's per-GPU terms for its planned layout (bytes)."""
    pools = {p.id: p for p in campaign.pools}
    runs = {r.id: r for r in campaign.runs}
    out = {}
    for r in plan.runs:
        gpu = pools[r.pool].pool.gpu
        est = run_memory(runs[r.run], r, pools[r.pool])
        terms = {k: v for k, v in est.gpu_terms.items() if k in est.peak_terms and v > 0}
        out[r.run] = terms | {
            "_capacity": gpu.memory_bytes, "_band_low": r.memory_band_bytes[0], "_band_high": r.memory_band_bytes[1],
            "_fit_permille": round(1000 * r.fit_probability),
        }  # fmt: skip
    return out


def _memory_svg(terms: dict[str, dict[str, int]]) -> str:
    """Stacked horizontal bars: the terms at each run's peak, against its GPU's memory, with a whisker over the
    device total's 90% band and the run's chance of fitting."""
    names = sorted({k for t in terms.values() for k in t if not k.startswith("_")})
    colour = {n: _COLOURS[i % len(_COLOURS)] for i, n in enumerate(names)}
    width, label_w, row_h = 900, 190, 22
    scale = (width - label_w - 170) / max(max(t["_capacity"], t.get("_band_high", 0)) for t in terms.values())
    parts = []
    for i, (run, t) in enumerate(terms.items()):
        y = i * row_h + 4
        parts.append(f'<text x="0" y="{y + 14}" font-size="12">{html.escape(run)}</text>')
        x = float(label_w)
        for n in names:
            w = t.get(n, 0) * scale
            if w > 0:
                tip = f"{TERM_LABELS.get(n, n)}: {t[n] / GIB:.2f} GiB"
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="16" fill="{colour[n]}">'
                             f"<title>{html.escape(tip)}</title></rect>")  # fmt: skip
                x += w
        cap = label_w + t["_capacity"] * scale
        parts.append(f'<line x1="{cap:.1f}" x2="{cap:.1f}" y1="{y - 2}" y2="{y + 18}" stroke="#000"/>')
        used = sum(v for k, v in t.items() if not k.startswith("_"))
        text = f"{used / GIB:.1f} GiB"
        if "_band_low" in t:
            lo, hi = label_w + t["_band_low"] * scale, label_w + t["_band_high"] * scale
            tip = f"90% band {t['_band_low'] / GIB:.1f}–{t['_band_high'] / GIB:.1f} GiB"
            parts.append(f'<g class="band" stroke="#b00020" stroke-width="1.5"><title>{tip}</title>'
                         f'<line x1="{lo:.1f}" x2="{hi:.1f}" y1="{y + 8}" y2="{y + 8}"/>'
                         f'<line x1="{lo:.1f}" x2="{lo:.1f}" y1="{y + 3}" y2="{y + 13}"/>'
                         f'<line x1="{hi:.1f}" x2="{hi:.1f}" y1="{y + 3}" y2="{y + 13}"/></g>')  # fmt: skip
            text += f" · P(fit) {t['_fit_permille'] / 10:.0f}%"
        parts.append(f'<text x="{max(cap, hi if "_band_low" in t else cap) + 4:.1f}" y="{y + 14}" '
                     f'font-size="11">{text}</text>')  # fmt: skip
    height = len(terms) * row_h + 8
    legend = "".join(
        f'<span><i style="background:{colour[n]}"></i>{html.escape(TERM_LABELS.get(n, n))}</span>' for n in names
    )
    svg = (f'<svg id="memory" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
           f'{"".join(parts)}</svg>')  # fmt: skip
    return f'{svg}<div class="legend">{legend}</div>'


def _timing(plan: Plan) -> str:
    """How sure the plan's times are: the chance its deadlines hold and the makespan's spread (timing block)."""
    tm = plan.timing
    odds = ("" if tm.deadline_probability is None else
            f"Chance every deadline holds: <b>{100 * tm.deadline_probability:.0f}%</b> · ")  # fmt: skip
    return f'<p id="timing">{odds}{html.escape(spread(tm))} · runs planned {planned_at(tm)}</p>'


def render_html(
    campaign: Campaign,
    plan: Plan,
    violations: list[str],
    comparison: list[ChoiceResult] | None = None,
    frontier_points: list[tuple[float, float, float]] | None = None,
) -> str:
    t = plan.totals
    title = f"ftplan plan: {plan.scenario}"
    runs = [
        [r.run, r.pool, ", ".join(r.nodes), str(r.gpu_count), f"{r.start_h:.2f}", f"{r.end_h:.2f}",
         f"dp{r.layout.dp} tp{r.layout.tp} ZeRO-{r.layout.zero} offload {r.layout.offload}", r.layout.recompute,
         f"{r.layout.micro_batch}×{r.layout.grad_accum}", f"{r.memory_per_gpu_bytes / GIB:.1f}",
         f"{r.memory_band_bytes[0] / GIB:.1f}–{r.memory_band_bytes[1] / GIB:.1f}", f"{100 * r.fit_probability:.0f}%",
         f"{r.tokens_per_s:,.0f}", f"{r.usd:,.2f}"]
        for r in plan.runs
    ]  # fmt: skip
    pools = [
        [u.pool, f"{u.gpu_hours_used:,.1f}", f"{100 * u.utilisation:.0f}%", str(u.nodes_bought or ""),
         f"{u.purchase_usd:,.2f}" if u.purchase_usd else ""]
        for u in t.pools
    ]  # fmt: skip
    s = plan.solver
    verdict = (
        '<p class="ok" id="verdict">Verified: the plan keeps every rule of the scenario.</p>'
        if not violations
        else '<p class="bad" id="verdict">Violations:</p><ul>'
        + "".join(f"<li>{html.escape(v)}</li>" for v in violations)
        + "</ul>"
    )
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Cost <b>${t.cost_usd:,.2f}</b> · makespan <b>{t.makespan_h:.2f} h</b> · {t.gpu_hours:,.1f} GPU-hours · "
        f"solver {s.status}, gap {100 * s.gap:.2f}%, {s.wall_s:.2f} s (OR-Tools {html.escape(s.ortools_version)})</p>",
        _timing(plan),
        verdict,
        "<h2>Runs</h2>",
        _table(
            "plan",
            [
                "run",
                "pool",
                "nodes",
                "GPUs",
                "start h",
                "end h",
                "layout",
                "recompute",
                "mb×acc",
                "GiB/GPU",
                "90% band GiB",
                "P(fit)",
                "tokens/s",
                "USD",
            ],
            runs,
            {3, 4, 5, 9, 10, 11, 12, 13},
        ),
        _table("pools", ["pool", "GPU-hours", "utilisation", "nodes bought", "purchase USD"], pools, {1, 2, 3, 4}),
        "<h2>Schedule</h2>",
        _img(gantt_png(plan), "schedule per node", "schedule"),
        "<h2>Memory per GPU at each run's peak</h2>",
        f"<p>Whiskers: the device total's 90% band from the memory model's errors on published runs of the run's "
        f"regime; P(fit): the share of those runs whose error would still fit the card. Headroom policy: "
        f"{html.escape('; '.join(dict.fromkeys(policy_label(r.memory_policy) for r in plan.runs)))}.</p>",
        _memory_svg(memory_terms(campaign, plan)),
    ]
    if comparison:
        rows = [
            [r.choice, r.status, f"{r.cost_usd:,.2f}" if r.cost_usd is not None else "—",
             f"{r.makespan_h:,.2f}" if r.makespan_h is not None else "—",
             f"{r.gpu_hours:,.1f}" if r.gpu_hours is not None else "—",
             "; ".join(f"{k}: {v}" for k, v in r.left_out.items()) or r.reason]
            for r in comparison
        ]  # fmt: skip
        body += ["<h2>Inventory choices</h2>",
                 _table("compare", ["choice", "status", "cost USD", "makespan h", "GPU-hours", "notes"], rows,
                        {2, 3, 4})]  # fmt: skip
    if frontier_points:
        body += ["<h2>Cost–time frontier</h2>", _img(frontier_png(frontier_points, "cost–time frontier"), "frontier",
                                                     "frontier")]  # fmt: skip
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{''.join(body)}<script>{_SCRIPT}</script></body></html>"
    )
