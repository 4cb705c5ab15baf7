"""Large-neighbourhood search around CP-SAT, for campaigns too large for one search to improve in time.

From the best plan held (CP-SAT's or the greedy warm start's), each step frees a neighbourhood of runs
and fixes every other run's candidate, start and nodes to the plan's, then asks CP-SAT (one worker, a
deterministic-time budget) for a strictly better plan of the freed runs. Neighbourhoods take turns:
random runs, runs next to each other in start time, and the runs of two pools. A neighbourhood that
holds no better plan grows the next one; one whose search ran out of time shrinks it. Each step's
model has most of its variables fixed, so its presolve takes milliseconds where the whole model's
takes tens of seconds at 500 jobs.

Steps are budgeted in CP-SAT's deterministic time (``max_deterministic_time``), so for the same
input, seed and budget the search takes the same steps and returns the same plan, unless the time
limit (wall time, which the user set) comes first.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from ortools.sat.python import cp_model

from ftplan.solver.model import Model, Placement, hint_runs, placement_of

STEP_TIME = 2.0  # deterministic seconds a step may take (CP-SAT's unit, about a second of one core)
FIRST_SHARE, FIRST_MOST = 0.1, 30  # runs freed by the first step: a tenth of them, at most 30
MIN_SIZE, GROW, SHRINK = 5, 1.25, 0.8  # neighbourhood size: floor, and its change after a step without gain


@dataclass(frozen=True)
class Improved:
    """The best plan the search found and its objective (money units or minutes)."""

    placements: dict[str, Placement]
    value: int
    steps: int
    improvements: int


def improve(
    m: Model,
    plan: dict[str, Placement],
    value: int,
    goal: str,
    budget: float,
    seed: int,
    stop_at: float,
    better: Callable[[int], None] | None = None,
    stopped: Callable[[], bool] = lambda: False,
    attach: Callable[[cp_model.CpSolver | None], None] | None = None,
    wall: float | None = None,
) -> Improved:
    """Better plans for ``goal`` from ``plan`` (objective ``value``) within ``budget`` deterministic seconds
    and ``wall`` (default ``budget``) seconds of wall time, until the objective reaches ``stop_at`` (the
    bound's relative-gap target) or ``stopped`` says so. ``better`` hears each new objective; ``attach`` is
    given each step's solver (and None after it), so that Ctrl-C can stop it."""
    rng = random.Random(seed)
    expr = m.cost if goal == "cost" else m.makespan
    runs = list(m.cands)
    size = float(min(len(runs), max(MIN_SIZE, min(FIRST_MOST, round(FIRST_SHARE * len(runs))))))
    spent, steps, gains = 0.0, 0, 0
    began = time.monotonic()
    wall = budget if wall is None else wall
    while spent < budget and time.monotonic() - began < wall and value > stop_at and not stopped():
        free = _neighbourhood(m, plan, runs, int(size), steps % 3, rng)
        sub = m.cp.clone()
        sub.clear_hints()
        for rid, place in plan.items():
            if rid not in free:
                _fix(sub, m, rid, place)
        hint_runs(sub, m, plan)
        sub.add(expr <= value - 1)
        sub.minimize(expr)
        solver = cp_model.CpSolver()
        solver.parameters.max_deterministic_time = min(STEP_TIME, budget - spent)
        solver.parameters.max_time_in_seconds = max(0.05, wall - (time.monotonic() - began))
        solver.parameters.num_workers = 1
        solver.parameters.random_seed = seed + steps
        solver.parameters.catch_sigint_signal = False  # (the campaign's _Interrupts stops it, as every other search)
        if attach is not None:
            attach(solver)
        status = solver.solve(sub)
        if attach is not None:
            attach(None)
        spent += solver.response_proto.deterministic_time
        steps += 1
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            plan = {rid: placement_of(m, solver, rid) for rid in runs}
            value = round(solver.objective_value)
            gains += 1
            if better is not None:
                better(value)
        elif status == cp_model.INFEASIBLE:  # nothing better in there: look wider
            size = min(float(len(runs)), size * GROW)
        else:  # out of time before a plan: look narrower
            size = max(float(MIN_SIZE), size * SHRINK)
    return Improved(plan, value, steps, gains)


def _neighbourhood(
    m: Model, plan: dict[str, Placement], runs: list[str], size: int, kind: int, rng: random.Random
) -> set[str]:
    """Runs to free: at random (0), consecutive in start time (1), or on two pools (2), ``size`` at most."""
    if kind == 1:
        by_start = sorted(runs, key=lambda r: (plan[r].start, r))
        first = rng.randrange(max(1, len(runs) - size + 1))
        return set(by_start[first : first + size])
    if kind == 2:
        pools = sorted({m.cands[r][plan[r].cand].pool_id for r in runs})
        chosen = set(rng.sample(pools, min(2, len(pools))))
        on = [r for r in runs if m.cands[r][plan[r].cand].pool_id in chosen]
        return set(rng.sample(on, min(size, len(on))))
    return set(rng.sample(runs, min(size, len(runs))))


def _fix(sub: cp_model.CpModel, m: Model, rid: str, place: Placement) -> None:
    """Hold a run to the plan: its candidate, start and nodes."""
    for i in range(len(m.cands[rid])):
        sub.add(m.x[rid, i] == int(i == place.cand))
    sub.add(m.start[rid] == place.start)
    for k in range(m.nodes.get(m.cands[rid][place.cand].pool_id, 0)):
        lit = m.place.get((rid, place.cand, k))
        if lit is not None:
            sub.add(lit == int(k in place.nodes))
