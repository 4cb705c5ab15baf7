"""`ftplan plan`, `ftplan check` and `ftplan schema`: plan a campaign, verify a plan, export the schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
import yaml

from ftplan.catalog import load_catalog
from ftplan.cli.common import Format, emit
from ftplan.errors import FtplanError
from ftplan.plan import load_plan, verified_plan, write_plan
from ftplan.report.plan_table import plan_table
from ftplan.scenario import load_scenario, resolve_scenario
from ftplan.schema.scenario import Scenario, scenario_json_schema
from ftplan.solver import Progress, solve_campaign
from ftplan.verify import verify_plan


def _override(scenario: Scenario, objective: str | None, deadline: float | None, budget: float | None,
              time_limit: float | None) -> Scenario:  # fmt: skip
    obj = scenario.objective
    updates = {}
    if objective is not None:
        first, _, then = objective.partition(",")
        if first not in ("cost", "time") or then not in ("", "cost", "time"):
            raise FtplanError(f"--objective must be cost, time, cost,time or time,cost; got {objective!r}.")
        updates.update(minimise=first, then=then or None)
    if deadline is not None:
        if deadline <= 0:
            raise FtplanError(f"--deadline must be > 0 hours, got {deadline}.")
        updates["deadline_h"] = deadline
    if budget is not None:
        if budget <= 0:
            raise FtplanError(f"--budget must be > 0 USD, got {budget}.")
        updates["budget_usd"] = budget
    solver = scenario.solver
    if time_limit is not None:
        if time_limit <= 0:
            raise FtplanError(f"--time-limit must be > 0 seconds, got {time_limit}.")
        solver = solver.model_copy(update={"time_limit_s": time_limit})
    return scenario.model_copy(update={"objective": obj.model_copy(update=updates), "solver": solver})


def plan(
    scenario: Path = typer.Argument(..., help="Scenario YAML (see scenarios/README.md)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the plan here (.yaml or .json)."),
    format: Format = typer.Option(Format.TABLE, "--format", help="table | json | yaml (stdout)"),
    objective: str | None = typer.Option(None, "--objective", help="cost | time | cost,time | time,cost"),
    deadline: float | None = typer.Option(None, "--deadline", help="Campaign deadline (hours)."),
    budget: float | None = typer.Option(None, "--budget", help="Campaign budget (USD)."),
    time_limit: float | None = typer.Option(None, "--time-limit", help="Solver time limit (seconds)."),
    gantt: Path | None = typer.Option(None, "--gantt", help="Draw the schedule per node to this PNG."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress line."),
) -> None:
    """Choose a layout for every job, place and schedule the runs, and write the plan."""
    sc = _override(load_scenario(scenario), objective, deadline, budget, time_limit)
    campaign = resolve_scenario(sc, load_catalog(), str(scenario))

    live = not quiet and sys.stderr.isatty()

    def progress(p: Progress) -> None:
        if live:
            value = (lambda v: f"${v:,.2f}") if p.goal == "cost" else (lambda v: f"{v:,.2f} h")
            line = f"{p.goal}: incumbent {value(p.objective)}  bound {value(p.bound)}  gap {100 * p.gap:5.2f}%"
            typer.echo(f"\r  {line}  {p.elapsed_s:6.1f} s   ", err=True, nl=False)

    solution = solve_campaign(campaign, progress=progress)
    if live:
        typer.echo("", err=True)
    result = verified_plan(campaign, solution)
    if output is not None:
        write_plan(result, output)
        typer.echo(f"wrote {output}", err=True)
    if gantt is not None:
        from ftplan.report.gantt import write_gantt

        write_gantt(result, gantt)
        typer.echo(f"wrote {gantt}", err=True)
    data = result.model_dump(mode="json")
    if format is Format.JSON:
        emit(json.dumps(data, indent=2), None)
    elif format is Format.YAML:
        emit(yaml.safe_dump(data, sort_keys=False), None)
    else:
        emit(plan_table(result), None)


def check(
    scenario: Path = typer.Argument(..., help="Scenario YAML the plan was made for."),
    plan_file: Path = typer.Argument(..., help="Plan file (.yaml or .json) to verify."),
) -> None:
    """Verify a plan against its scenario without the solver; exit 1 listing every violation."""
    campaign = resolve_scenario(load_scenario(scenario), load_catalog(), str(scenario))
    parsed = load_plan(plan_file)
    violations = verify_plan(campaign, parsed)
    if violations:
        for v in violations:
            typer.echo(f"violation: {v}", err=True)
        raise FtplanError(f"{plan_file}: {len(violations)} violation(s) of {scenario}.")
    typer.echo(f"{plan_file}: valid for {scenario} ({len(parsed.runs)} runs, ${parsed.totals.cost_usd:,.2f}, "
               f"makespan {parsed.totals.makespan_h:.2f} h)")  # fmt: skip


def schema(output: Path | None = typer.Option(None, "--output", "-o", help="Write here instead of stdout.")) -> None:
    """Print the JSON Schema of scenario files (for editors)."""
    emit(json.dumps(scenario_json_schema(), indent=2), output)
