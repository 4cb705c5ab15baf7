"""``ftplan replan``: plan what is left of a campaign under way."""

from __future__ import annotations

from pathlib import Path

import typer

from ftplan.catalog import load_catalog
from ftplan.cli.common import (
    CONFIDENCE_OPTION,
    MARGIN_OPTION,
    TIME_CONFIDENCE_OPTION,
    Live,
    check_writable,
    cli_policy,
    number,
)
from ftplan.cli.plan_cmd import _override
from ftplan.limits import MAX_TIME_LIMIT_S
from ftplan.plan import load_plan, write_plan
from ftplan.replan import load_status, replan_campaign
from ftplan.report.plan_table import plan_table
from ftplan.scenario import load_scenario, resolve_scenario


def replan(
    scenario: Path = typer.Argument(..., help="Scenario YAML as it is now (new or removed jobs, prices, deadline)."),
    plan_file: Path = typer.Argument(..., help="The plan the campaign has been running (.yaml or .json)."),
    status: Path = typer.Option(..., "--status", help="Status YAML: now_h, runs finished/running/failed, nodes lost."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the new plan here (.yaml or .json)."),
    allow_migrate: bool = typer.Option(
        False, "--allow-migrate", help="Let runs in progress move, restarting from their last checkpoint."
    ),
    time_limit: float | None = typer.Option(
        None, "--time-limit", help="Solver time limit (seconds).", callback=number(0, MAX_TIME_LIMIT_S, lo_open=True)
    ),
    memory_confidence: float | None = CONFIDENCE_OPTION,
    memory_margin: str | None = MARGIN_OPTION,
    time_confidence: float | None = TIME_CONFIDENCE_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress line."),
) -> None:
    """Re-plan a running campaign from now: finished runs stay as facts, runs in progress stay where they are
    (unless --allow-migrate), lost nodes are avoided, everything else is planned again; prints what changed."""
    check_writable(output)
    sc = _override(load_scenario(scenario), None, None, None, time_limit)
    policy = cli_policy(memory_confidence, memory_margin)
    campaign = resolve_scenario(sc, load_catalog(), str(scenario), policy, time_confidence)
    previous = load_plan(plan_file)
    state = load_status(status)
    live = Live(quiet)
    result = replan_campaign(campaign, previous, state, plan_file.name, str(status), allow_migrate,
                             progress=live.progress, phases=live)  # fmt: skip
    live.done()
    if output is not None:
        write_plan(result.plan, output)
        typer.echo(f"wrote {output}", err=True)
    for line in result.assumed:
        typer.echo(f"assumed: {line}")
    for line in result.changes:
        typer.echo(f"change: {line}")
    typer.echo(plan_table(result.plan))
