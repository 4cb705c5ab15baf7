"""`ftplan report`: one self-contained HTML page for a plan (and, optionally, the comparison)."""

from __future__ import annotations

from pathlib import Path

import typer

from ftplan.catalog import load_catalog
from ftplan.cli.common import check_writable, number
from ftplan.compare import compare_choices, frontier
from ftplan.errors import FtplanError
from ftplan.io import write_text_atomic
from ftplan.limits import MAX_PARETO
from ftplan.plan import load_plan
from ftplan.report.html import render_html
from ftplan.scenario import load_scenario, resolve_scenario
from ftplan.verify import verify_plan


def report(
    scenario: Path = typer.Argument(..., help="Scenario YAML the plan was made for."),
    plan_file: Path = typer.Argument(..., help="Plan file from `ftplan plan -o`."),
    html_file: Path = typer.Option(..., "--html", help="Write the page here."),
    compare: bool = typer.Option(False, "--compare", help="Add the inventory comparison (solves each choice)."),
    pareto: int = typer.Option(
        0,
        "--pareto",
        help="Add the cost–time frontier with this many deadlines (≥ 2).",
        callback=number(0, MAX_PARETO),
    ),
) -> None:
    """Write the plan, its schedule, memory per GPU and (optionally) the comparison as one HTML page."""
    if pareto == 1:
        raise FtplanError("--pareto N sweeps N deadlines: give N ≥ 2 (or 0 for none).")
    check_writable(html_file)
    catalog = load_catalog()
    campaign = resolve_scenario(load_scenario(scenario), catalog, str(scenario))
    plan = load_plan(plan_file)
    violations = verify_plan(campaign, plan)
    if violations and any("not in the scenario" in v for v in violations):
        raise FtplanError(f"{plan_file}: the plan is not for {scenario} ({violations[0]}).")
    choices = compare_choices(campaign, catalog) if compare else None
    points = frontier(campaign, pareto) if pareto >= 2 else None
    write_text_atomic(html_file, render_html(campaign, plan, violations, choices, points))
    typer.echo(f"wrote {html_file}" + (f" ({len(violations)} violation(s) listed)" if violations else ""))
