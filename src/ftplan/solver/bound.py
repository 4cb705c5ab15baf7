"""A lower bound on a campaign's cost or makespan from a linear relaxation of its CP-SAT model.

Each run takes a convex combination of its candidates (``x_c ∈ [0, 1]``, ``Σ x_c = 1``) instead of one;
its duration is the combination's ``Σ x_c·d_c``. What any plan must satisfy, and so the relaxation too:

* capacity: the GPU-minutes (owned and bought pools) or instance-minutes (cloud pools) all runs put on a
  pool fit in its size over the time they can use — the horizon for cost, the makespan ``M`` for time; a
  purchase pool's size is the (fractional) nodes bought, at their purchase charge;
* precedence and deadlines: a run ends no earlier than each run it depends on ends plus its own duration,
  and by its deadline (``e_r ≥ e_q + Σ x_c·d_c``, ``e_r ≤ D_r``); ``M ≥ e_r``;
* a candidate that cannot meet its run's deadline even after its predecessors' fastest chain is left out.

Its optimum is a valid lower bound for the integer model (every plan is a feasible point of it), solved
with OR-Tools' GLOP. It is stronger than every run at its cheapest candidate when capacity or deadlines
force runs onto dearer pools, and than the longest chain of fastest runs when pools are shared.
"""

from __future__ import annotations

import math

from ftplan.solver.model import Model, earliest_starts
from ftplan.units import budget_units, deadline_minutes

LP_MARGIN = 1e-6  # relative: 100 × GLOP's default feasibility tolerances (GlopParameters, 1e-8)


def lp_bound(m: Model, goal: str) -> float | None:
    """The relaxation's optimum for ``goal`` (``cost``: money units; ``time``: minutes), rounded up to a
    whole unit (both objectives are integral in the model); None where GLOP proves no optimum (then the
    integer model has no plan either, which the solver reports)."""
    from ortools.linear_solver import pywraplp

    lp = pywraplp.Solver.CreateSolver("GLOP")
    camp, horizon = m.campaign, float(m.horizon)
    runs = {r.id: r for r in camp.runs}
    campaign_deadline = camp.scenario.objective.deadline_h
    release = earliest_starts(camp, m.cands)
    x: dict[tuple[str, int], object] = {}
    end: dict[str, object] = {}
    duration: dict[str, object] = {}
    for rid, cs in m.cands.items():
        run = runs[rid]
        limit = horizon
        for d in (run.deadline_h, campaign_deadline):
            if d is not None:
                limit = min(limit, float(deadline_minutes(d)))
        chosen = []
        for i, c in enumerate(cs):
            if release[rid] + c.minutes <= limit:
                x[rid, i] = lp.NumVar(0.0, 1.0, f"x[{rid},{i}]")
                chosen.append(i)
        if not chosen:
            return None
        lp.Add(sum(x[rid, i] for i in chosen) == 1)
        duration[rid] = sum(cs[i].minutes * x[rid, i] for i in chosen)
        end[rid] = lp.NumVar(0.0, limit, f"e[{rid}]")
    makespan = lp.NumVar(0.0, horizon, "M")
    for rid, run in runs.items():
        lp.Add(end[rid] >= release[rid] + duration[rid])
        for dep in run.depends_on:
            lp.Add(end[rid] >= end[dep] + duration[rid])
        lp.Add(makespan >= end[rid])
    cost = sum(c.cost_units * x[rid, i] for rid, cs in m.cands.items() for i, c in enumerate(cs) if (rid, i) in x)
    for pool in camp.pools:
        work = [
            (c.gpus if pool.placed else c.nodes) * c.minutes * x[rid, i]
            for rid, cs in m.cands.items() for i, c in enumerate(cs) if (rid, i) in x and c.pool_id == pool.id
        ]  # fmt: skip
        if not work:
            continue
        unit = pool.gpus_per_node if pool.placed else 1
        if pool.kind == "purchase":
            already = float(camp.history.bought.get(pool.id, 0)) if camp.history is not None else 0.0
            bought = lp.NumVar(already, float(m.nodes[pool.id]), f"B[{pool.id}]")
            cost += m.purchase_units[pool.id] * bought
            lp.Add(sum(work) <= unit * horizon * bought)
            if goal == "time":
                lp.Add(sum(work) <= unit * m.nodes[pool.id] * makespan)
        else:
            lp.Add(sum(work) <= unit * pool.nodes * (makespan if goal == "time" else horizon))
    budget = camp.scenario.objective.budget_usd
    if goal == "time" and budget is not None:  # (for cost, a budget only caps what is minimised)
        lp.Add(cost <= budget_units(budget))
    lp.Minimize(makespan if goal == "time" else cost)
    if lp.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    value = lp.Objective().Value()
    # an optimum GLOP reports may sit its feasibility tolerances (GlopParameters: 1e-8 primal and dual) beyond
    # the true one: a relative margin far above them is taken off before rounding up to whole units
    return float(max(0, math.ceil(value - LP_MARGIN * max(1.0, abs(value)))))
