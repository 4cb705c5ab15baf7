"""`ftplan compare`: the campaign on each inventory choice, spot with its restart overhead, the frontier."""

from __future__ import annotations

from pathlib import Path

import typer

from ftplan.catalog import load_catalog
from ftplan.cli.common import FORMAT_HELP, Format, Live, check_writable, emit, number, render
from ftplan.compare import SpotModel, compare_choices, frontier
from ftplan.errors import FtplanError
from ftplan.io import write_bytes_atomic
from ftplan.limits import MAX_HOURS, MAX_PARETO
from ftplan.report.compare_report import compare_table, frontier_png, frontier_table
from ftplan.scenario import load_scenario, resolve_scenario


def compare(
    scenario: Path = typer.Argument(..., help="Scenario YAML."),
    instances: str | None = typer.Option(None, "--instances", help="Comma-separated pool ids to compare."),
    spot_rate: float | None = typer.Option(
        None,
        "--spot-interruptions-per-hour",
        help="Compare spot prices too, with this interruption rate.",
        callback=number(0, 100),
    ),
    spot_checkpoint_h: float | None = typer.Option(
        None, "--spot-checkpoint-h", help="Hours between checkpoints.", callback=number(0, MAX_HOURS, lo_open=True)
    ),
    spot_restart_h: float | None = typer.Option(
        None, "--spot-restart-h", help="Hours to restart after an interruption.", callback=number(0, MAX_HOURS)
    ),
    pareto: int = typer.Option(
        0,
        "--pareto",
        help="Also sweep this many deadlines (≥ 2): the cost–time frontier.",
        callback=number(0, MAX_PARETO),
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Draw the frontier to this PNG (with --pareto)."),
    format: Format = typer.Option(Format.TABLE, "--format", help=FORMAT_HELP),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress line."),
) -> None:
    """Solve the campaign once per inventory choice and compare cost, makespan and utilisation."""
    if spot_rate is not None and (spot_checkpoint_h is None or spot_restart_h is None):
        raise FtplanError(
            "spot: give --spot-checkpoint-h and --spot-restart-h with --spot-interruptions-per-hour "
            "(they are your training setup's, the catalogs have no default for them)."
        )
    if pareto == 1:
        raise FtplanError("--pareto N sweeps N deadlines: give N ≥ 2 (or 0 for none).")
    if plot is not None and pareto < 2:
        raise FtplanError("--plot draws the frontier: give --pareto N with N ≥ 2.")
    check_writable(output, plot)
    catalog = load_catalog()
    campaign = resolve_scenario(load_scenario(scenario), catalog, str(scenario))
    only = [x.strip() for x in instances.split(",")] if instances else None
    spot = SpotModel(spot_rate, spot_checkpoint_h, spot_restart_h) if spot_rate is not None else None  # type: ignore[arg-type]
    live = Live(quiet)
    results = compare_choices(campaign, catalog, only, spot, status=live)
    points = frontier(campaign, pareto, status=live) if pareto >= 2 else []
    live.done()
    if plot is not None:
        write_bytes_atomic(plot, frontier_png(points, f"{campaign.scenario.name or scenario}: cost–time frontier"))
        typer.echo(f"wrote {plot}", err=True)
    choices = [
        {"choice": r.choice, "pools": r.pools, "status": r.status, "cost_usd": r.cost_usd,
         "makespan_h": r.makespan_h, "gpu_hours": r.gpu_hours, "utilisation": r.utilisation,
         "left_out": r.left_out, "reason": r.reason}
        for r in results
    ]  # fmt: skip
    data = {
        "choices": choices,
        "frontier": [{"deadline_h": d, "cost_usd": c, "makespan_h": m} for d, c, m in points],
    }

    def table() -> str:
        text = compare_table(results)
        if spot is None:
            text += "\n\nspot not compared: give --spot-interruptions-per-hour, --spot-checkpoint-h, --spot-restart-h."
        else:
            text += f"\n\nspot: each training hour takes {spot.time_factor:.3f} h (interruptions, lost work, restarts)."
        if points:
            text += "\n\ncost–time frontier (all pools):\n" + frontier_table(points)
        return text

    def rows() -> list[dict]:
        flat = []
        for c in choices:
            left = "; ".join(f"{k}: {v}" for k, v in c["left_out"].items())
            flat.append({**c, "pools": " ".join(c["pools"]), "left_out": left})
        return flat

    emit(render(format, table, lambda: data, rows), output)
