"""Compare inventory choices: the same campaign on each pool alone, on spot prices, and on all pools.

Each choice keeps the scenario's jobs, objective and solver options and replaces its pools. Jobs
that fit on no pool of a choice (and the jobs that depend on them) are left out of that choice's
plan and listed with the reason. Candidates are searched once for every pool and filtered per
choice.

Spot instances are not compared at face value: with interruptions at rate λ per hour, a
checkpoint every c hours and r hours to restart, each hour of training takes on average
``1 + λ·(c/2 + r)`` hours of instance time (the first-order expected loss per interruption is half
a checkpoint interval plus the restart; Young 1974, "A first order approximation to the optimum
checkpoint interval"). The rates are the user's: the team's data has no interruption statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from ftplan.candidates import CandidateTable, build_candidates
from ftplan.errors import FtplanError
from ftplan.fit import instance_pool
from ftplan.plan import build_plan, verified_plan
from ftplan.scenario import Campaign, PoolSpec
from ftplan.schema.plan import Plan
from ftplan.solver import InfeasibleError, Progress, solve_campaign
from ftplan.units import MINUTES_PER_HOUR

Status = Callable[[str], None] | None
Progressor = Callable[[Progress], None] | None


@dataclass(frozen=True)
class SpotModel:
    """Expected overhead of running on spot instances (see module docstring)."""

    interruptions_per_hour: float
    checkpoint_interval_h: float
    restart_h: float

    @property
    def time_factor(self) -> float:
        return 1.0 + self.interruptions_per_hour * (self.checkpoint_interval_h / 2 + self.restart_h)


@dataclass
class ChoiceResult:
    choice: str
    pools: list[str]
    status: str  # OPTIMAL | FEASIBLE | INFEASIBLE | NONE (no job can run)
    plan: Plan | None = None
    left_out: dict[str, str] = field(default_factory=dict)  # run id → why it cannot run on this choice
    reason: str = ""

    @property
    def cost_usd(self) -> float | None:
        return self.plan.totals.cost_usd if self.plan else None

    @property
    def makespan_h(self) -> float | None:
        return self.plan.totals.makespan_h if self.plan else None

    @property
    def gpu_hours(self) -> float | None:
        return self.plan.totals.gpu_hours if self.plan else None

    @property
    def utilisation(self) -> float | None:
        if not self.plan:
            return None
        avail = sum(u.gpu_hours_available for u in self.plan.totals.pools)
        return sum(u.gpu_hours_used for u in self.plan.totals.pools) / avail if avail else None


def spot_pools(campaign: Campaign, spot: SpotModel, catalog) -> list[PoolSpec]:
    """A spot variant of every on-demand cloud pool whose instance has a spot price."""
    out = []
    present = {p.id for p in campaign.pools}
    for sp in campaign.scenario.pools:
        if getattr(sp, "kind", "") != "cloud" or sp.pricing == "spot" or sp.id not in present:
            continue
        inst = catalog.instance(sp.instance)
        if inst.spot_usd_per_h is None:
            continue
        base = next(p for p in campaign.pools if p.id == sp.id)
        fp = instance_pool(catalog, sp.instance, nodes=1, spot=True)
        pool = replace(base.pool, usd_per_node_hour=fp.usd_per_node_hour, name=f"{sp.id}-spot")
        out.append(replace(base, id=f"{sp.id}-spot", pool=pool, usd_per_node_h=float(inst.spot_usd_per_h),
                           time_factor=spot.time_factor))  # fmt: skip
    return out


def subset(campaign: Campaign, pools: list[PoolSpec], table: CandidateTable) -> tuple[Campaign, CandidateTable, dict]:
    """The campaign on ``pools`` only: runs without a candidate there (or depending on one) left out."""
    ids = {p.id for p in pools}
    by_job = {j: [c for c in cs if c.pool_id in ids] for j, cs in table.by_job.items()}
    left: dict[str, str] = {}
    for run in campaign.runs:  # runs are in scenario order; dependencies are checked transitively below
        if not by_job[run.job_id]:
            near = table.closest.get(run.job_id, "")
            left[run.id] = "fits on none of these pools" + (f" (closest overall: {near})" if near else "")
    changed = True
    while changed:
        changed = False
        for run in campaign.runs:
            if run.id not in left and any(d in left for d in run.depends_on):
                left[run.id] = f"depends on {next(d for d in run.depends_on if d in left)}, which cannot run"
                changed = True
    runs = [r for r in campaign.runs if r.id not in left]
    jobs = {r.job_id: campaign.jobs[r.job_id] for r in runs}
    sub = Campaign(campaign.scenario, campaign.source, runs, pools, jobs, campaign.policies, campaign.time_confidence)
    return sub, CandidateTable({j: by_job[j] for j in jobs}, table.excluded, table.closest), left


def _solve(
    name: str, campaign: Campaign, pools: list[PoolSpec], table: CandidateTable, progress: Progressor = None
) -> ChoiceResult:
    sub, sub_table, left = subset(campaign, pools, table)
    result = ChoiceResult(name, [p.id for p in pools], "NONE", left_out=left)
    if not sub.runs:
        result.reason = "no job can run on this choice"
        return result
    try:
        sol = solve_campaign(sub, sub_table, progress=progress, keep_partial=False)
    except InfeasibleError as exc:
        result.status, result.reason = "INFEASIBLE", str(exc)
        return result
    result.status, result.plan = sol.status, verified_plan(sub, sol)
    return result


def compare_choices(
    campaign: Campaign,
    catalog,
    only: list[str] | None = None,
    spot: SpotModel | None = None,
    status: Status = None,
) -> list[ChoiceResult]:
    """Solve the campaign on each pool alone (and its spot variant) and on all pools together;
    ``status`` hears which choice is being solved and its incumbents."""
    pools = list(campaign.pools)
    if only:
        unknown = [o for o in only if o not in {p.id for p in pools}]
        if unknown:
            from ftplan.errors import did_you_mean

            raise FtplanError(
                f"--instances: unknown pool {unknown[0]!r}.{did_you_mean(unknown[0], [p.id for p in pools])} "
                "Use the pool ids of the scenario."
            )
        pools = [p for p in pools if p.id in only]
    extra = spot_pools(replace(campaign, pools=pools), spot, catalog) if spot else []
    universe = replace(campaign, pools=pools + extra)
    table = build_candidates(universe, status=status)
    choices = [(p.id, [p]) for p in pools + extra] + [("all pools", pools)]
    results = []
    for n, (name, chosen) in enumerate(choices, 1):
        where = f"choice {n} of {len(choices)} ({name})"
        if status is not None:
            status(where)
        results.append(_solve(name, campaign, chosen, table, _incumbents(status, where)))
    return results


def _incumbents(status: Status, where: str) -> Progressor:
    """Solver incumbents as status lines prefixed with ``where``."""
    if status is None:
        return None
    return lambda p: status(f"{where}: {p.goal} incumbent {p.objective:,.2f}, gap {100 * p.gap:.1f}%")


def frontier(campaign: Campaign, points: int = 6, status: Status = None) -> list[tuple[float, float, float]]:
    """(deadline h, cost USD, makespan h) from the fastest plan to the cheapest, on all pools."""
    table = build_candidates(campaign, status=status)
    obj = campaign.scenario.objective
    solved = [0]

    def solve_with(**changes) -> Plan:
        sc = campaign.scenario.model_copy(update={"objective": obj.model_copy(update=changes)})
        sub = replace(campaign, scenario=sc)
        solved[0] += 1
        where = f"frontier: solve {solved[0]} of up to {points + 2}"
        if status is not None:
            status(where)
        return build_plan(sub, solve_campaign(sub, table, progress=_incumbents(status, where), keep_partial=False))

    fastest = solve_with(minimise="time", then="cost", deadline_h=None, budget_usd=None).totals.makespan_h
    cheapest = solve_with(minimise="cost", then="time", deadline_h=None, budget_usd=None).totals.makespan_h
    out = []
    minutes = np.unique(np.ceil(np.linspace(fastest, max(fastest, cheapest), points) * MINUTES_PER_HOUR - 1e-6))
    for m in minutes:  # deadlines on whole minutes, the planner's unit
        d = float(m) / MINUTES_PER_HOUR
        plan = solve_with(minimise="cost", then="time", deadline_h=d, budget_usd=None)
        out.append((d, plan.totals.cost_usd, plan.totals.makespan_h))
    return out
