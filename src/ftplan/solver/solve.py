"""Solve a campaign: explain what cannot work, build the CP-SAT model, warm-start it, solve."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ortools.sat.python import cp_model

from ftplan.candidates import Candidate, CandidateTable, build_candidates, run_candidates
from ftplan.errors import FtplanError
from ftplan.limits import MAX_HOURS
from ftplan.scenario import Campaign
from ftplan.solver.bound import lp_bound
from ftplan.solver.greedy import Placement, greedy_plan
from ftplan.solver.lns import Improved, improve
from ftplan.solver.model import Model, build_model, earliest_starts, hint_runs, placement_of, stay_literals
from ftplan.units import MINUTES_PER_HOUR, MONEY_UNITS_PER_USD, budget_units, deadline_minutes, usd_to_units


class InfeasibleError(FtplanError):
    """The campaign cannot be planned; the message says which job and why."""


@dataclass(frozen=True)
class Progress:
    """A new incumbent: objective and bound in USD (goal ``cost``) or hours (goal ``time``)."""

    goal: str
    objective: float
    bound: float
    elapsed_s: float

    @property
    def gap(self) -> float:
        return abs(self.objective - self.bound) / max(abs(self.objective), 1e-9)


@dataclass
class Solution:
    """What the solver chose, with its status and quality."""

    status: str  # OPTIMAL | FEASIBLE
    objective: str
    objective_value: float  # money units (cost) or minutes (time) of the primary objective
    bound: float
    gap: float
    wall_s: float
    seed: int
    workers: int
    placements: dict[str, Placement]
    ends: dict[str, int]
    bought: dict[str, int]  # purchase pool → nodes bought
    greedy: dict[str, Placement] | None
    table: CandidateTable
    stopped: bool = False
    greedy_objective: float | None = None  # the warm start's primary objective, same units
    then: str | None = None  # the second objective (lexicographic), if any
    then_status: str | None = None  # OPTIMAL | FEASIBLE | NOT RUN (Ctrl-C or no time left)
    then_value: float | None = None  # its value and bound: money units (cost) or minutes (time)
    then_bound: float | None = None
    source: str = "cp-sat"  # cp-sat | greedy | lns: where the plan came from (the best one known)
    lp_bound: float | None = None  # the linear relaxation's bound on the first objective, same units
    search_bound: float | None = None  # CP-SAT's own (or, keeping the greedy plan, the cheapest candidates')
    cands: dict[str, list[Candidate]] | None = None  # each run's candidates (``Placement.cand`` indexes them)

    def candidate(self, rid: str, job_id: str, cand: int | None = None) -> Candidate:
        """Candidate ``cand`` of run ``rid`` (of job ``job_id``); by default, the one its placement chose."""
        cs = self.cands[rid] if self.cands is not None else self.table.by_job[job_id]
        return cs[self.placements[rid].cand if cand is None else cand]

    @property
    def then_gap(self) -> float | None:
        if self.then_value is None or self.then_bound is None:
            return None
        return abs(self.then_value - self.then_bound) / max(abs(self.then_value), 1e-9)


def explain_infeasible(campaign: Campaign, table: CandidateTable) -> None:
    """Raise with the first reason found before solving: a job fitting nowhere, deadlines, budget."""
    for job_id, cands in table.by_job.items():
        if not cands:
            near = table.closest.get(job_id) or next(iter(table.excluded.get(job_id, [])), "no layout was possible")
            largest = max(campaign.pools, key=lambda p: (p.nodes * p.gpus_per_node, p.pool.gpu.memory_mib))
            limit = "quota" if largest.kind == "cloud" else "nodes"
            raise InfeasibleError(
                f"job {job_id!r} fits on no pool. Closest: {near}. Largest option: {largest.id}, "
                f"{largest.nodes} {'instance' if largest.kind == 'cloud' else 'node'}(s) ({limit}) × "
                f"{largest.gpus_per_node} {largest.pool.gpu.id}. To fix: add larger GPUs, more nodes or quota, "
                "or allow ZeRO-3/offload/recomputation."
            )
    deadline = campaign.scenario.objective.deadline_h
    chain = _critical_path(campaign, table)
    cands = run_candidates(campaign, table)
    now = f" from now ({campaign.history.now / MINUTES_PER_HOUR:.2f} h)" if campaign.history is not None else ""
    for run in campaign.runs:
        fastest = min(c.minutes for c in cands[run.id])
        for limit, what in (
            (run.deadline_h, f"its deadline of {run.deadline_h} h"),
            (deadline, f"the campaign deadline of {deadline} h"),
        ):
            if limit is None:
                continue
            if fastest > deadline_minutes(limit):
                raise InfeasibleError(
                    f"job {run.id!r} takes at least {fastest / MINUTES_PER_HOUR:.2f} h on the fastest option{now}, "
                    f"beyond {what}. "
                    "To fix: move the deadline or add faster pools."
                )
            if chain[run.id] > deadline_minutes(limit):
                raise InfeasibleError(
                    f"job {run.id!r} cannot end before {chain[run.id] / MINUTES_PER_HOUR:.2f} h (its dependencies "
                    f"run first), beyond {what}. To fix: move the deadline or add faster pools."
                )
    if deadline is not None:
        work = sum(min(c.gpu_hours for c in cands[r.id]) for r in campaign.runs)
        gpus = sum(p.nodes * p.gpus_per_node for p in campaign.pools)
        start_h = campaign.history.now / MINUTES_PER_HOUR if campaign.history is not None else 0.0
        if work / gpus > deadline - start_h:
            raise InfeasibleError(
                f"the campaign needs at least {work:,.0f} GPU-hours{now}; the inventory's {gpus} GPUs give "
                f"{gpus * (deadline - start_h):,.0f} by the deadline of {deadline} h (makespan lower bound "
                f"{start_h + work / gpus:.1f} h). To fix: move the deadline, raise quotas or add pools."
            )


MAX_UNITS = 2**53  # CP-SAT sums 64-bit integers; this keeps every sum of minutes or money units exact


def check_magnitudes(campaign: Campaign, table: CandidateTable) -> None:
    """Refuse a campaign whose minutes or money would overflow the solver's integers, naming the job.

    The file limits keep each number sane; a job of 10^15 tokens on a slow pool can still take
    centuries. Runs are summed at their slowest and dearest candidates, as the model's horizon is."""
    cands = run_candidates(campaign, table)
    minutes = {r.id: max(c.minutes for c in cands[r.id]) for r in campaign.runs}
    units = {r.id: max(c.cost_units for c in cands[r.id]) for r in campaign.runs}
    limit_minutes = int(MAX_HOURS * MINUTES_PER_HOUR)
    if sum(minutes.values()) > limit_minutes:
        worst = max(minutes, key=minutes.__getitem__)
        raise InfeasibleError(
            f"the campaign's runs take up to {sum(minutes.values()) / MINUTES_PER_HOUR:,.0f} h one after another "
            f"(job {worst!r}: up to {minutes[worst] / MINUTES_PER_HOUR:,.0f} h); ftplan plans at most "
            f"{MAX_HOURS:,.0f} h (see Limits in the README). To fix: check its tokens, epochs and pools."
        )
    purchases = sum(usd_to_units(p.purchase_usd_per_node) * p.nodes for p in campaign.pools if p.kind == "purchase")
    if sum(units.values()) + purchases > MAX_UNITS:
        worst = max(units, key=units.__getitem__)
        raise InfeasibleError(
            f"the campaign can cost up to ${(sum(units.values()) + purchases) / MONEY_UNITS_PER_USD:,.0f} "
            f"(job {worst!r}: up to ${units[worst] / MONEY_UNITS_PER_USD:,.0f}), beyond what the planner counts "
            f"exactly (${MAX_UNITS / MONEY_UNITS_PER_USD:,.0f}). To fix: check its tokens and the pools' prices."
        )


def _critical_path(campaign: Campaign, table: CandidateTable) -> dict[str, int]:
    """Each run's earliest end: its earliest start plus its fastest candidate."""
    cands = run_candidates(campaign, table)
    return {rid: t + min(c.minutes for c in cands[rid]) for rid, t in earliest_starts(campaign, cands).items()}


class _Callback(cp_model.CpSolverSolutionCallback):
    def __init__(self, report: Callable[[Progress], None] | None, goal: str) -> None:
        super().__init__()
        self.report = report
        self.goal = goal
        self.scale = MONEY_UNITS_PER_USD if goal == "cost" else MINUTES_PER_HOUR
        self.t0 = time.monotonic()

    def on_solution_callback(self) -> None:
        if self.report is not None:
            self.report(Progress(self.goal, self.objective_value / self.scale, self.best_objective_bound / self.scale,
                                 time.monotonic() - self.t0))  # fmt: skip


def solve_campaign(
    campaign: Campaign,
    table: CandidateTable | None = None,
    progress: Callable[[Progress], None] | None = None,
    keep_partial: bool = True,
    phases: Callable[[str], None] | None = None,
) -> Solution:
    """Plan the campaign (see ``ftplan.solver.model`` for the formulation).

    The plan returned is the best one known: CP-SAT's, or the greedy warm start's when CP-SAT ends
    without a plan (its time limit before a first solution) or with a worse one (``source``), so a
    campaign with a greedy plan always gets a plan. Ctrl-C stops the search: with ``keep_partial``
    the best plan found so far is returned (``Solution.stopped``); without it, as for commands that
    solve many campaigns and compare them, :class:`KeyboardInterrupt` is raised. ``phases`` hears
    each phase (model, greedy warm start, each objective's search) with the seconds since it began.
    """
    began = time.monotonic()

    def say(what: str) -> None:
        if phases is not None:
            phases(f"{what} ({time.monotonic() - began:.1f} s)")

    table = table or build_candidates(campaign)
    explain_infeasible(campaign, table)
    check_magnitudes(campaign, table)
    say("building the CP-SAT model")
    m = build_model(campaign, table)
    obj = campaign.scenario.objective
    opts = campaign.scenario.solver
    say("LP relaxation bound")
    relaxed = lp_bound(m, obj.minimise)
    say("greedy warm start")
    greedy = _best_greedy(m, campaign, obj.minimise)
    if greedy is not None:
        _hint(m, greedy)
    order = [obj.minimise] + ([obj.then] if obj.then and obj.then != obj.minimise else [])
    t0 = time.monotonic()
    result = None
    stopped = False
    first_bound, first_status = 0.0, cp_model.UNKNOWN
    use_greedy = False
    value_override: float | None = None  # the first objective of a plan the neighbourhood search found
    second: tuple[str, float | None, float | None] | None = None  # status, value, bound of the second stage
    with _Interrupts() as ctrl_c:
        for stage, goal in enumerate(order):
            if ctrl_c.hit:  # Ctrl-C between two searches: keep what the last one found
                stopped = True
                break
            expr = m.cost if goal == "cost" else m.makespan
            say(f"CP-SAT: {goal}" + (" (second objective)" if stage else ""))
            m.cp.minimize(expr)
            solver = cp_model.CpSolver()
            remaining = opts.time_limit_s - (time.monotonic() - t0)
            large = stage == 0 and len(m.cands) >= LNS_MIN_RUNS  # the search's share, the rest for neighbourhoods
            limit = max(0.1, remaining if stage else opts.time_limit_s * (FULL_SHARE if large else 1.0))
            solver.parameters.max_time_in_seconds = limit
            solver.parameters.max_deterministic_time = DETERMINISTIC_PER_SECOND * limit
            solver.parameters.random_seed = opts.seed
            solver.parameters.num_workers = opts.workers
            solver.parameters.relative_gap_limit = opts.relative_gap
            solver.parameters.catch_sigint_signal = False  # _Interrupts stops the search instead
            ctrl_c.solver = solver
            status = solver.solve(m.cp, _Callback(progress, goal))
            ctrl_c.solver = None
            stopped = stopped or ctrl_c.hit
            found = status in (cp_model.OPTIMAL, cp_model.FEASIBLE)
            searched = None
            if large and not stopped and status not in (cp_model.INFEASIBLE, cp_model.MODEL_INVALID, cp_model.OPTIMAL):
                searched = _search_neighbourhoods(m, goal, solver if found else None, greedy, relaxed, t0, ctrl_c,
                                                  say, progress)  # fmt: skip
                stopped = stopped or ctrl_c.hit
            if searched is not None:  # better than CP-SAT's plan and the greedy one
                result = (None, status, goal, _as_read(m, searched.placements))
                value_override = float(searched.value)
                first_bound, first_status = _lower_bound(m, table, goal, solver), cp_model.FEASIBLE
                if stopped:
                    break
                if stage + 1 < len(order):
                    m.cp.add(expr <= searched.value)
                    m.cp.clear_hints()
                    _hint(m, searched.placements)
                continue
            if stage == 0 and _greedy_holds(m, greedy, goal, solver if found else None, status):
                use_greedy = True  # no plan from CP-SAT (or a worse one): the warm start is the best known
                first_bound, first_status = _lower_bound(m, table, goal, solver), cp_model.UNKNOWN
                break
            if not found:
                if stage == 0:
                    if stopped:
                        raise KeyboardInterrupt  # before the first plan: nothing to keep
                    raise InfeasibleError(_no_solution(status, campaign))
                break
            result = (solver, status, goal, _read(m, solver))
            if stage == 0:
                first_bound, first_status = solver.best_objective_bound, status
            else:
                proven = status == cp_model.OPTIMAL and solver.objective_value == solver.best_objective_bound
                second = ("OPTIMAL" if proven else "FEASIBLE", solver.objective_value, solver.best_objective_bound)
            if stopped:  # Ctrl-C: no further stage
                break
            if stage + 1 < len(order):
                m.cp.add(expr <= round(solver.objective_value))
                m.cp.clear_hints()
                _hint(m, result[3][0])
        if result is not None and result[0] is not None and not use_greedy and not stopped and m.campaign.history:
            left = opts.time_limit_s - (time.monotonic() - t0)
            kept = _keep_places(m, result, order, second, left, ctrl_c, say)
            if kept is not None:
                result, second = kept
                stopped = stopped or ctrl_c.hit
    if stopped and not keep_partial:
        raise KeyboardInterrupt
    first = order[0]
    if use_greedy:
        assert greedy is not None
        placements, ends, bought = _as_read(m, greedy)
        value = float(_greedy_objective(m, greedy, first) or 0.0)
    else:
        assert result is not None
        solver, status, goal, (placements, ends, bought) = result
        value = value_override if solver is None else solver.value(m.cost if first == "cost" else m.makespan)
    source = "greedy" if use_greedy else "lns" if solver is None else "cp-sat"
    # the first objective's bound: CP-SAT's or the relaxation's, whichever is higher (a second stage keeps the
    # first's value at most what it was)
    bound = min(max(first_bound, relaxed if relaxed is not None else -math.inf), value)
    gap = abs(value - bound) / max(abs(value), 1e-9)
    # CP-SAT says OPTIMAL once the relative-gap limit is met; call it optimal only when proven (a
    # greedy plan that meets a valid lower bound is proven too)
    met = relaxed is not None and relaxed >= value  # the relaxation's bound proves the plan optimal
    proven = (first_status == cp_model.OPTIMAL or use_greedy or met) and gap <= 1e-9
    name = "OPTIMAL" if proven else "FEASIBLE"
    then = order[1] if len(order) > 1 else None
    if then is not None and second is None:
        second = ("NOT RUN", None, None)
    return Solution(
        status=name, objective=first, objective_value=float(value), bound=float(bound),
        gap=gap, wall_s=time.monotonic() - t0, seed=opts.seed,
        workers=opts.workers, placements=placements, ends=ends, bought=bought, greedy=greedy, table=table,
        stopped=stopped, greedy_objective=_greedy_objective(m, greedy, first), then=then,
        then_status=second[0] if second else None, then_value=second[1] if second else None,
        then_bound=second[2] if second else None, source=source, lp_bound=relaxed,
        search_bound=float(first_bound), cands=m.cands,
    )  # fmt: skip


# CP-SAT's searches are budgeted in its deterministic time, so that the same input and options give the same plan
# whatever else loads the machine; the time limit stays the wall-clock cap. Deterministic time ran at 1.3 units a
# wall second on the 2-core reference machine (deadline-sweep's second objective: 26.4 in 20 s, where the wall
# limit used to end it at a load-dependent point): half a unit a second of the limit ends a search on its
# budget on machines up to about 2.6 times slower.
DETERMINISTIC_PER_SECOND = 0.5
LNS_MIN_RUNS = 51  # up to 50 runs one search gets within 2% (benchmarks/plan_scale.py); from here on it shares
FULL_SHARE = 0.25  # its time limit with the neighbourhood search (ftplan.solver.lns), this share first: at 200
# runs and one worker the whole search finds nothing better than the warm start in 30 s (benchmarks/plan_scale.py)


def _search_neighbourhoods(
    m: Model, goal: str, solver: cp_model.CpSolver | None, greedy: dict[str, Placement] | None,
    relaxed: float | None, t0: float, ctrl_c: _Interrupts, say: Callable[[str], None],
    progress: Callable[[Progress], None] | None,
) -> Improved | None:  # fmt: skip
    """The neighbourhood search from the best plan held (CP-SAT's or the greedy one) for the time left; its
    result when it found a better plan, else None."""
    opts = m.campaign.scenario.solver
    plans = []
    if greedy is not None and _greedy_holds(m, greedy, goal, None, cp_model.UNKNOWN):
        plans.append((round(_greedy_objective(m, greedy, goal) or 0), greedy))
    if solver is not None:
        plans.append((round(solver.objective_value), _read(m, solver)[0]))
    left = opts.time_limit_s - (time.monotonic() - t0)
    if not plans or left < 0.5:
        return None
    value, start = min(plans, key=lambda p: p[0])
    bound = max(solver.best_objective_bound if solver is not None else 0.0, relaxed or 0.0)
    scale = MONEY_UNITS_PER_USD if goal == "cost" else MINUTES_PER_HOUR
    began = time.monotonic()

    def better(v: int) -> None:
        if progress is not None:
            progress(Progress(goal, v / scale, bound / scale, time.monotonic() - began))

    say("neighbourhood search")
    found = improve(m, start, value, goal, left, opts.seed, bound / (1 - opts.relative_gap), better,
                    lambda: ctrl_c.hit, lambda s: setattr(ctrl_c, "solver", s))  # fmt: skip
    return found if found.improvements else None


def _as_read(m: Model, plan: dict[str, Placement]) -> tuple[dict[str, Placement], dict[str, int], dict[str, int]]:
    """A plan in the form ``_read`` gives: placements, ends, nodes bought."""
    ends = {r: p.start + m.cands[r][p.cand].minutes for r, p in plan.items()}
    return plan, ends, _bought(m, plan)


def _keep_places(m: Model, result: tuple, order: list[str], second: tuple | None, left: float, ctrl_c: _Interrupts,
                 say: Callable[[str], None]) -> tuple[tuple, tuple | None] | None:  # fmt: skip
    """A re-plan's last search: the objectives held at what was found, as many runs as can keep their previous
    pool and nodes. The plan it finds, with the objectives' values read from it (never worse), or None."""
    lits = stay_literals(m)
    if not lits or left <= 0.05:
        return None
    say("CP-SAT: keep runs where they were")
    solver0, _, goal, read = result
    exprs = [m.cost if g == "cost" else m.makespan for g in order]
    for expr in exprs:
        m.cp.add(expr <= solver0.value(expr))
    m.cp.clear_hints()
    _hint(m, read[0])
    m.cp.maximize(sum(lits))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = left
    solver.parameters.max_deterministic_time = DETERMINISTIC_PER_SECOND * left
    solver.parameters.random_seed = m.campaign.scenario.solver.seed
    solver.parameters.num_workers = m.campaign.scenario.solver.workers
    solver.parameters.catch_sigint_signal = False
    ctrl_c.solver = solver
    status = solver.solve(m.cp)
    ctrl_c.solver = None
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    if second is not None and second[1] is not None:  # the second objective as this plan has it (≤ before)
        value = solver.value(exprs[1])
        second = ("OPTIMAL" if value == second[2] else "FEASIBLE", value, second[2])
    return (solver, status, goal, _read(m, solver)), second


def _best_greedy(m: Model, campaign: Campaign, minimise: str) -> dict[str, Placement] | None:
    """The best complete greedy plan. Under deadlines, cheapest-first can fill the inventory too late for
    the runs after it; so cheapest-first is also tried at tightened deadlines, and with a price on time
    (see ``greedy_plan``) doubled from far below the campaign's cost per minute until it plans every run,
    and a few doublings further; earliest-end first is the last resort."""
    if not _has_deadline(campaign):
        plans = [greedy_plan(campaign, m.cands, minimise), greedy_plan(campaign, m.cands, "time")]
    else:
        plans = [greedy_plan(campaign, m.cands, minimise, s) for s in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)]
        if minimise == "cost":
            plans += _priced_greedy(m, campaign)
        plans.append(greedy_plan(campaign, m.cands, "time"))
    return min((p for p in plans if p is not None), key=lambda p: _greedy_objective(m, p, minimise), default=None)


PRICE_STEPS = range(-24, 9)  # time prices tried: 2^k × the cheapest campaign's cost per deadline minute
PRICE_MORE = 4  # doublings tried past the first price that plans every run (the cost is not monotone in it)


def _priced_greedy(m: Model, campaign: Campaign) -> list[dict[str, Placement]]:
    """Cheapest-first greedy plans with a price on each run's end, from a vanishing price up."""
    deadlines = [d for d in (campaign.scenario.objective.deadline_h, *(r.deadline_h for r in campaign.runs)) if d]
    scale = sum(min(c.cost_units for c in cs) for cs in m.cands.values()) / deadline_minutes(max(deadlines))
    plans: list[dict[str, Placement]] = []
    left = None
    for k in PRICE_STEPS:
        plan = greedy_plan(campaign, m.cands, "cost", time_price=scale * 2.0**k)
        if plan is not None:
            plans.append(plan)
            left = PRICE_MORE if left is None else left
        if left is not None:
            if left == 0:
                break
            left -= 1
    return plans


def _greedy_holds(
    m: Model, greedy: dict[str, Placement] | None, goal: str, solver: cp_model.CpSolver | None, status: int
) -> bool:
    """Whether the greedy warm start is the plan to keep after the first search: CP-SAT found none
    (but did not prove there is none) or a worse one, and the greedy plan is within the budget
    (the one limit greedy list scheduling does not enforce)."""
    if greedy is None or status == cp_model.INFEASIBLE:
        return False
    budget = m.campaign.scenario.objective.budget_usd
    if budget is not None and (_greedy_objective(m, greedy, "cost") or 0) > budget_units(budget):
        return False
    if solver is None:
        return True
    return (_greedy_objective(m, greedy, goal) or 0) < solver.objective_value


def _lower_bound(m: Model, table: CandidateTable, goal: str, solver: cp_model.CpSolver) -> float:
    """A lower bound on the first objective without a CP-SAT plan: CP-SAT's own where it has one,
    else every run at its cheapest candidate (cost) or the longest chain of fastest runs (time)."""
    if goal == "cost":
        trivial = float(sum(min(c.cost_units for c in cs) for cs in m.cands.values()))
    else:
        trivial = float(max(_critical_path(m.campaign, table).values(), default=0))
    try:
        cp_bound = float(solver.best_objective_bound)
    except RuntimeError:  # the search never ran (stopped before it started)
        return trivial
    return max(trivial, cp_bound) if math.isfinite(cp_bound) else trivial


def _bought(m: Model, plan: dict[str, Placement]) -> dict[str, int]:
    """Nodes each purchase pool must buy for a plan's placements (its highest node index + 1), at least
    those bought already (a campaign under way)."""
    bought: dict[str, int] = dict(m.campaign.history.bought) if m.campaign.history is not None else {}
    for r, p in plan.items():
        pool = m.pool(m.cands[r][p.cand].pool_id)
        if pool.kind == "purchase" and p.nodes:
            bought[pool.id] = max(bought.get(pool.id, 0), max(p.nodes) + 1)
    return bought


def _has_deadline(campaign: Campaign) -> bool:
    return campaign.scenario.objective.deadline_h is not None or any(r.deadline_h for r in campaign.runs)


def _greedy_objective(m: Model, greedy: dict[str, Placement] | None, goal: str) -> float | None:
    if greedy is None:
        return None
    if goal == "time":
        return float(max(p.start + m.cands[r][p.cand].minutes for r, p in greedy.items()))
    cost = sum(m.cands[r][p.cand].cost_units for r, p in greedy.items())
    return float(cost + sum(n * m.purchase_units[pid] for pid, n in _bought(m, greedy).items()))


def _no_solution(status: int, campaign: Campaign) -> str:
    if status == cp_model.INFEASIBLE:
        obj = campaign.scenario.objective
        parts = [
            f"deadline {obj.deadline_h} h" if obj.deadline_h else "",
            f"budget ${obj.budget_usd:,.0f}" if obj.budget_usd else "",
        ]
        limits = " and ".join(p for p in parts if p) or "node capacity, quotas and job deadlines"
        return (
            f"no plan meets the {limits} with this inventory (each job fits alone, but not all together). "
            "To fix: relax the limits, raise quotas or add pools."
        )
    if status == cp_model.MODEL_INVALID:
        return (
            "internal error: the solver rejected the model (MODEL_INVALID), a defect in ftplan; "
            "please report it with the scenario file."
        )
    return (
        f"the solver found no plan within {campaign.scenario.solver.time_limit_s:g} s (status "
        f"{cp_model.CpSolver().status_name(status)}). To fix: raise --time-limit."
    )


def _read(m: Model, solver: cp_model.CpSolver) -> tuple[dict[str, Placement], dict[str, int], dict[str, int]]:
    placements = {rid: placement_of(m, solver, rid) for rid in m.cands}
    ends = {rid: solver.value(m.end[rid]) for rid in m.cands}
    bought: dict[str, int] = {}
    for (p, _), b in m.bought.items():
        bought[p] = bought.get(p, 0) + int(solver.value(b))
    return placements, ends, bought


def _hint(m: Model, plan: dict[str, Placement]) -> None:
    hint_runs(m.cp, m, plan)
    used = _bought(m, plan)
    for (p, k), b in m.bought.items():
        m.cp.add_hint(b, k < used.get(p, 0))


class _Interrupts:
    """Ctrl-C while a campaign is solved: a flag, and the running CP-SAT search stopped at once.

    CP-SAT runs in C++ while Python's own SIGINT handler only runs between Python bytecodes, so the
    signal is also delivered through :func:`signal.set_wakeup_fd` to a watcher thread, which calls
    ``CpSolver.stop_search`` (thread-safe). CP-SAT's own SIGINT handling is switched off
    (``catch_sigint_signal``), so a search that ends early without Ctrl-C is never mistaken for one.
    Outside the main thread (where signals cannot be handled) it does nothing.
    """

    def __init__(self) -> None:
        self.hit = False
        self.solver: cp_model.CpSolver | None = None
        self._active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> _Interrupts:
        if not self._active:
            return self
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._previous = signal.signal(signal.SIGINT, self._handle)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="ftplan-sigint", daemon=True)
        self._thread.start()
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self._stop()

    def _watch(self) -> None:
        while data := os.read(self._read, 64):
            if signal.SIGINT in data:
                self._stop()

    def _stop(self) -> None:
        self.hit = True
        solver = self.solver
        if solver is not None:
            solver.stop_search()

    def __exit__(self, *exc: object) -> None:
        if not self._active:
            return
        signal.set_wakeup_fd(self._previous_fd)
        signal.signal(signal.SIGINT, self._previous)
        os.close(self._write)
        self._thread.join(timeout=1.0)
        os.close(self._read)
