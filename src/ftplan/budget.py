"""What to buy: the purchase that finishes the campaign by its deadline at the lowest total cost
of ownership, the fastest campaign a capital budget buys, and the break-even against renting.

Total cost of ownership of a plan = for each node bought, its price less the resale value (or,
with an amortisation period, the share of that which the campaign's deadline uses up) + running
cost (power, hosting) per node-hour while jobs use it (``scenario.purchase_charge``).

Break-even against renting: buying costs ``capex_net`` once (price − resale, not amortised) and
``run_usd`` per campaign; renting the cheapest cloud option costs ``rent_usd`` per campaign. Buying
pays off after ``capex_net / (rent_usd − run_usd)`` campaigns, and never when renting is cheaper
than running the bought nodes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from ftplan.candidates import build_candidates
from ftplan.compare import ChoiceResult, compare_choices
from ftplan.errors import FtplanError
from ftplan.plan import verified_plan
from ftplan.scenario import Campaign
from ftplan.schema.plan import Plan
from ftplan.solver import solve_campaign


@dataclass
class BudgetResult:
    plan: Plan
    bought: dict[str, int]  # purchase pool → nodes
    capex_usd: float  # list prices of the nodes bought
    capex_net_usd: float  # less resale
    running_usd: float  # what the campaign's runs cost on owned/bought nodes (power, hosting) and cloud
    rent: ChoiceResult | None  # the cheapest cloud-only choice for the same campaign, if any
    break_even_campaigns: float | None  # None: no cloud option; inf: renting is always cheaper


def break_even(capex_net_usd: float, run_usd: float, rent_usd: float) -> float:
    """Campaigns after which buying costs less than renting (see module docstring)."""
    saving = rent_usd - run_usd
    return math.inf if saving <= 0 else capex_net_usd / saving


def plan_purchase(
    campaign: Campaign, catalog, capex_usd: float | None = None, status: Callable[[str], None] | None = None
) -> BudgetResult:
    """Buy to meet the deadline at the lowest TCO, or (with ``capex_usd``) the fastest campaign it buys;
    ``status`` hears what is being solved."""
    obj = campaign.scenario.objective
    buys = [p for p in campaign.pools if p.kind == "purchase"]
    if not buys:
        raise FtplanError(f"{campaign.source}: no purchase pools. To fix: add pools of kind: purchase.")
    if capex_usd is None and obj.deadline_h is None:
        raise FtplanError(
            f"{campaign.source}: objective.deadline_h is needed to size a purchase (or give --capex). "
            "To fix: add a campaign deadline."
        )
    if capex_usd is not None:
        objective = obj.model_copy(update={"minimise": "time", "then": "cost", "capex_usd": capex_usd})
    else:
        objective = obj.model_copy(update={"minimise": "cost", "then": "time"})
    sub = replace(campaign, scenario=campaign.scenario.model_copy(update={"objective": objective}))
    table = build_candidates(sub, status=status)
    if status is not None:
        status("solving the purchase")
    progress = None if status is None else (lambda p: status(f"purchase: {p.goal} incumbent {p.objective:,.2f}"))
    sol = solve_campaign(sub, table, progress=progress, keep_partial=False)
    plan = verified_plan(sub, sol)
    bought = {u.pool: u.nodes_bought for u in plan.totals.pools if u.nodes_bought}
    pools = {p.id: p for p in campaign.pools}
    capex = sum(n * pools[p].purchase_usd_per_node for p, n in bought.items())
    capex_net = sum(n * pools[p].purchase_usd_per_node * (1 - pools[p].resale_fraction) for p, n in bought.items())
    running = sum(r.usd for r in plan.runs)
    clouds = [p.id for p in campaign.pools if p.kind == "cloud"]
    rent = None
    if clouds:
        choices = compare_choices(campaign, catalog, only=clouds, status=status)
        options = [r for r in choices if r.plan and not r.left_out]
        rent = min(options, key=lambda r: r.cost_usd, default=None)
    even = break_even(capex_net, running, rent.cost_usd) if rent and rent.cost_usd is not None else None
    return BudgetResult(plan, bought, capex, capex_net, running, rent, even)
