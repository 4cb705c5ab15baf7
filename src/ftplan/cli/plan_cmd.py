"""`ftplan plan`, `ftplan check` and `ftplan schema`: plan a campaign, verify a plan, export the schema."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ftplan.candidates import build_candidates
from ftplan.catalog import load_catalog
from ftplan.cli.common import (
    CONFIDENCE_OPTION,
    FORMAT_HELP,
    MARGIN_OPTION,
    TIME_CONFIDENCE_OPTION,
    Format,
    Live,
    check_writable,
    cli_policy,
    emit,
    number,
    render,
)
from ftplan.errors import FtplanError
from ftplan.limits import MAX_HOURS, MAX_TIME_LIMIT_S, MAX_USD
from ftplan.plan import load_plan, plan_data, verified_plan, write_plan
from ftplan.report.plan_table import plan_table
from ftplan.scenario import load_scenario, resolve_scenario
from ftplan.schema.plan import Plan
from ftplan.schema.scenario import Scenario, scenario_json_schema
from ftplan.solver import solve_campaign
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
        updates["deadline_h"] = deadline
    if budget is not None:
        updates["budget_usd"] = budget
    solver = scenario.solver
    if time_limit is not None:
        solver = solver.model_copy(update={"time_limit_s": time_limit})
    return scenario.model_copy(update={"objective": obj.model_copy(update=updates), "solver": solver})


def plan(
    scenario: Path = typer.Argument(..., help="Scenario YAML (see scenarios/README.md)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the plan here (.yaml or .json)."),
    format: Format = typer.Option(Format.TABLE, "--format", help=f"{FORMAT_HELP} (stdout)"),
    objective: str | None = typer.Option(None, "--objective", help="cost | time | cost,time | time,cost"),
    deadline: float | None = typer.Option(
        None, "--deadline", help="Campaign deadline (hours).", callback=number(0, MAX_HOURS, lo_open=True)
    ),
    budget: float | None = typer.Option(
        None, "--budget", help="Campaign budget (USD).", callback=number(0, MAX_USD, lo_open=True)
    ),
    time_limit: float | None = typer.Option(
        None, "--time-limit", help="Solver time limit (seconds).", callback=number(0, MAX_TIME_LIMIT_S, lo_open=True)
    ),
    gantt: Path | None = typer.Option(None, "--gantt", help="Draw the schedule per node to this PNG."),
    memory_confidence: float | None = CONFIDENCE_OPTION,
    memory_margin: str | None = MARGIN_OPTION,
    time_confidence: float | None = TIME_CONFIDENCE_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress line."),
) -> None:
    """Choose a layout for every job, place and schedule the runs, and write the plan."""
    check_writable(output, gantt)
    sc = _override(load_scenario(scenario), objective, deadline, budget, time_limit)
    policy = cli_policy(memory_confidence, memory_margin)
    campaign = resolve_scenario(sc, load_catalog(), str(scenario), policy, time_confidence)
    live = Live(quiet)
    table = build_candidates(campaign, status=live)
    solution = solve_campaign(campaign, table, progress=live.progress, phases=live)
    live.done()
    result = verified_plan(campaign, solution)
    if output is not None:
        write_plan(result, output)
        typer.echo(f"wrote {output}", err=True)
    if gantt is not None:
        from ftplan.report.gantt import write_gantt

        try:
            write_gantt(result, gantt)
        except FtplanError as exc:
            written = f" ({output} was written)" if output is not None else ""
            raise FtplanError(f"{exc}{written}") from None
        typer.echo(f"wrote {gantt}", err=True)
    data = plan_data(result)
    emit(render(format, lambda: plan_table(result), lambda: data, lambda: plan_rows(result)), None)


def plan_rows(plan: Plan) -> list[dict[str, object]]:
    """One flat row per run (the CSV form of a plan)."""
    rows = []
    for r in plan.runs:
        row: dict[str, object] = {"run": r.run, "job": r.job, "pool": r.pool, "nodes": " ".join(r.nodes),
                                  "gpus": " ".join(f"{n}:{','.join(map(str, i))}" for n, i in r.gpus.items()),
                                  "gpu_count": r.gpu_count, "start_h": r.start_h, "end_h": r.end_h}  # fmt: skip
        row.update(r.layout.model_dump())
        row.update(memory_per_gpu_bytes=r.memory_per_gpu_bytes, headroom_bytes=r.headroom_bytes,
                   memory_required_bytes=r.memory_required_bytes, memory_band_low_bytes=r.memory_band_bytes[0],
                   memory_band_high_bytes=r.memory_band_bytes[1], fit_probability=r.fit_probability,
                   **r.memory_policy.model_dump(), tokens_per_s=r.tokens_per_s, hours=r.hours, usd=r.usd)  # fmt: skip
        rows.append(row)
    return rows


def check(
    scenario: Path = typer.Argument(..., help="Scenario YAML the plan was made for."),
    plan_file: Path = typer.Argument(..., help="Plan file (.yaml or .json) to verify."),
    memory_confidence: float | None = CONFIDENCE_OPTION,
    memory_margin: str | None = MARGIN_OPTION,
    time_confidence: float | None = TIME_CONFIDENCE_OPTION,
) -> None:
    """Verify a plan against its scenario without the solver; exit 1 listing every violation. Every run must
    fit under its scenario's headroom policy (or the one given here) as well as under the one it records, and
    its durations be planned at least at the time confidence asked for."""
    policy = cli_policy(memory_confidence, memory_margin)
    campaign = resolve_scenario(load_scenario(scenario), load_catalog(), str(scenario), policy, time_confidence)
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
    check_writable(output)
    emit(json.dumps(scenario_json_schema(), indent=2), output)
