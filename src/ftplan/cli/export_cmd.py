"""`ftplan export`: a verified plan as launcher or scheduler files, one directory per run and a driver."""

from __future__ import annotations

from pathlib import Path

import typer

from ftplan.catalog import load_catalog
from ftplan.cli.common import number
from ftplan.export import FORMATS, export_plan
from ftplan.plan import load_plan
from ftplan.scenario import load_scenario, resolve_scenario


def export(
    scenario: Path = typer.Argument(..., help="Scenario YAML the plan was made for."),
    plan_file: Path = typer.Argument(..., help="Plan file from `ftplan plan -o`."),
    to: str = typer.Option(..., "--to", help=f"Format: {' | '.join(FORMATS)}."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write (one folder per run and a driver)."),
    time_margin: float | None = typer.Option(
        None,
        "--time-margin",
        help="Slurm --time: planned hours plus this share (default: each run's time band at its 90% quantile).",
        callback=number(0, 100),
    ),
) -> None:
    """Write the plan as files a launcher or scheduler runs, each field traced to the plan field it came from."""
    if to not in FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(FORMATS)}", param_hint="--to")
    if output.exists() and not output.is_dir():
        raise typer.BadParameter(f"{output} exists and is not a directory", param_hint="--output")
    catalog = load_catalog()
    campaign = resolve_scenario(load_scenario(scenario), catalog, str(scenario))
    written = export_plan(campaign, load_plan(plan_file), to, output, time_margin, catalog)
    runs = len({p.parent for p in written if p.parent != output})
    typer.echo(f"wrote {len(written)} files for {runs} runs to {output} ({to})")
