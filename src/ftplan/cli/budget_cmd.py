"""`ftplan budget`: which nodes to buy, the fastest campaign a capital budget buys, break-even."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from ftplan.budget import plan_purchase
from ftplan.catalog import load_catalog
from ftplan.cli.common import Live, check_writable, emit, number
from ftplan.limits import MAX_USD
from ftplan.plan import write_plan
from ftplan.report.plan_table import plan_table
from ftplan.scenario import load_scenario, resolve_scenario


def budget(
    scenario: Path = typer.Argument(..., help="Scenario YAML with purchase pools (and cloud pools to compare)."),
    capex: float | None = typer.Option(
        None,
        "--capex",
        help="Capital budget (USD): the fastest campaign it buys.",
        callback=number(0, MAX_USD, lo_open=True),
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the plan here (.yaml or .json)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress line."),
) -> None:
    """Choose what to buy so the campaign meets its deadline at the lowest total cost of ownership."""
    check_writable(output)
    catalog = load_catalog()
    campaign = resolve_scenario(load_scenario(scenario), catalog, str(scenario))
    live = Live(quiet)
    result = plan_purchase(campaign, catalog, capex, status=live)
    live.done()
    if output is not None:
        write_plan(result.plan, output)
        typer.echo(f"wrote {output}", err=True)
    pools = {p.id: p for p in campaign.pools}
    lines = [plan_table(result.plan), ""]
    buys = ", ".join(f"{n} × {p} ({pools[p].pool.gpu.id} ×{pools[p].gpus_per_node})" for p, n in result.bought.items())
    lines.append(f"buy: {buys or 'nothing'} · list price ${result.capex_usd:,.0f}"
                 f" · after resale ${result.capex_net_usd:,.0f}")  # fmt: skip
    lines.append(f"total cost of ownership for this campaign: ${result.plan.totals.cost_usd:,.2f} "
                 f"(runs ${result.running_usd:,.2f}, the rest the purchases' share)")  # fmt: skip
    if result.rent is None:
        lines.append("break-even: no cloud pool in the scenario to compare with.")
    else:
        rent = result.rent
        lines.append(f"renting the cheapest cloud option ({rent.choice}) costs ${rent.cost_usd:,.2f} per campaign, "
                     f"makespan {rent.makespan_h:,.1f} h")  # fmt: skip
        if math.isinf(result.break_even_campaigns):
            lines.append("break-even: never — renting costs less than running the bought nodes.")
        else:
            lines.append(
                f"break-even: buying pays off after {result.break_even_campaigns:,.1f} campaigns like this one"
            )
    emit("\n".join(lines), None)
