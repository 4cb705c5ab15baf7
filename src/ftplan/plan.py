"""Turn a solution into a plan: node ids, GPU indices, times, layouts, costs and totals."""

from __future__ import annotations

import heapq
import json
from pathlib import Path

import ortools
import yaml

from ftplan.candidates import Candidate
from ftplan.errors import FtplanError
from ftplan.io import load_validated, write_text_atomic
from ftplan.scenario import Campaign, PoolSpec, purchase_charge
from ftplan.schema.plan import (
    Plan,
    PlanLayout,
    PlanMemoryPolicy,
    PlanReplan,
    PlanRun,
    PlanSolver,
    PlanTiming,
    PlanTotals,
    PoolUse,
)
from ftplan.solver.solve import Solution
from ftplan.timing.deadlines import deadline_odds
from ftplan.units import MINUTES_PER_HOUR, MONEY_UNITS_PER_USD, usd_to_units
from ftplan.verify import verify_plan


def node_id(pool: PoolSpec, k: int) -> str:
    return f"{pool.id}/{'node' if pool.placed else 'i'}{k}"


def _assign(
    intervals: list[tuple[int, int, str, int]], slots: int, wanted: dict[str, tuple[int, ...]] | None = None
) -> dict[str, list[int]]:
    """Give each (start, end, key, demand) interval ``demand`` of ``slots`` indices, none shared in
    time, lowest free indices first (time and memory grow with the intervals, not the slots). A key in
    ``wanted`` (a run in progress) keeps its indices: it starts first, at the earliest of all."""
    wanted = wanted or {}
    busy: list[tuple[int, int]] = []  # heap of (end, index)
    free: list[int] = []  # heap of released indices below ``fresh``
    fresh = 0  # indices from here on were never used
    out: dict[str, list[int]] = {}
    for start, _, end, key, demand in sorted((s, k not in wanted, e, k, d) for s, e, k, d in intervals):
        while busy and busy[0][0] <= start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if key in wanted:
            want = wanted[key]
            while fresh <= max(want):
                heapq.heappush(free, fresh)
                fresh += 1
            if not set(want) <= set(free):
                raise FtplanError(f"internal error: a run in progress's slots {want} are taken at minute {start}")
            free = [i for i in free if i not in want]
            heapq.heapify(free)
            out[key] = sorted(want)
            for i in want:
                heapq.heappush(busy, (end, i))
            continue
        got = [heapq.heappop(free) for _ in range(min(demand, len(free)))]
        while len(got) < demand and fresh < slots:
            got.append(fresh)
            fresh += 1
        if len(got) < demand:
            raise FtplanError(f"internal error: the plan needs more than {slots} slots at minute {start}")
        out[key] = sorted(got)
        for i in got:
            heapq.heappush(busy, (end, i))
    return out


def build_plan(campaign: Campaign, sol: Solution, replan: PlanReplan | None = None) -> Plan:
    """The plan of a solution: every run's nodes, GPU indices, times, layout and cost, with the totals.

    For a campaign under way (``campaign.history``) the parts that ran before now come first, as facts,
    and the solver's figures count what they cost (the solve planned only what is left)."""
    h = campaign.history
    jobs = {r.id: r.job_id for r in campaign.runs}
    chosen: dict[str, Candidate] = {rid: sol.candidate(rid, jobs[rid]) for rid in sol.placements}
    pinned = {rid for rid, p in sol.placements.items() if h is not None and rid in h.pins and p.cand == 0}
    gpu_idx: dict[tuple[str, str], list[int]] = {}  # (run, node id) → GPU indices
    run_nodes: dict[str, list[str]] = {}
    for pool in campaign.pools:
        runs = [rid for rid, c in chosen.items() if c.pool_id == pool.id]
        if pool.placed:
            for k in sorted({k for rid in runs for k in sol.placements[rid].nodes}):
                items, wanted = [], {}
                for rid in runs:
                    place, c = sol.placements[rid], chosen[rid]
                    if k in place.nodes:
                        items.append((place.start, place.start + c.minutes, rid, c.demand_per_node(pool.gpus_per_node)))
                        if rid in pinned:
                            pin = h.pins[rid][1]  # type: ignore[union-attr]
                            wanted[rid] = pin.gpus[pin.nodes.index(k)]
                nid = node_id(pool, k)
                for rid, idx in _assign(items, pool.gpus_per_node, wanted).items():
                    gpu_idx[rid, nid] = idx
                    run_nodes.setdefault(rid, []).append(nid)
        else:
            items = [
                (sol.placements[r].start, sol.placements[r].start + chosen[r].minutes, r, chosen[r].nodes) for r in runs
            ]
            wanted = {r: h.pins[r][1].nodes for r in runs if r in pinned}  # type: ignore[union-attr]
            for rid, slots in _assign(items, pool.nodes, wanted).items():
                c = chosen[rid]
                for k in slots:
                    nid = node_id(pool, k)
                    run_nodes.setdefault(rid, []).append(nid)
                    gpu_idx[rid, nid] = list(range(min(c.gpus, pool.gpus_per_node)))
    runs_out: list[PlanRun] = []
    for run in campaign.runs:
        if h is not None:
            runs_out += h.done.get(run.id, [])  # type: ignore[arg-type]
            if run.id in h.split:  # the part of a run in progress up to now: as kept in place, or as moved
                runs_out.append(h.split[run.id][0 if run.id in pinned else 1])  # type: ignore[arg-type]
        if run.id not in sol.placements:
            continue
        c, place = chosen[run.id], sol.placements[run.id]
        nodes = run_nodes[run.id]
        work = 1.0 if h is None else (h.pins[run.id][1].work if run.id in pinned else h.work.get(run.id, 1.0))
        runs_out.append(
            PlanRun(
                run=run.id, job=run.job_id, pool=c.pool_id, nodes=nodes,
                gpus={n: gpu_idx[run.id, n] for n in nodes}, gpu_count=c.gpus,
                start_h=place.start / MINUTES_PER_HOUR, end_h=(place.start + c.minutes) / MINUTES_PER_HOUR,
                layout=PlanLayout(dp=c.dp, tp=c.tp, pp=c.pp, dp_shard=c.dp_shard, cp=c.cp, ep=c.ep,
                                  zero=c.zero, offload=c.offload, recompute=c.recompute,
                                  micro_batch=c.micro_batch, grad_accum=c.grad_accum, optimizer=c.optimizer,
                                  precision=run.job.training.precision.value),
                memory_per_gpu_bytes=c.device_bytes, headroom_bytes=c.headroom_bytes,
                memory_policy=PlanMemoryPolicy(**campaign.policy(run.job_id).as_dict()),
                memory_required_bytes=c.required_bytes, memory_band_bytes=list(c.band_bytes),
                fit_probability=round(c.fit_probability, 6), tokens_per_s=c.tokens_per_s, hours=c.hours, usd=c.usd,
                work=work,
            )
        )  # fmt: skip
    totals = plan_totals(campaign, runs_out, sol.bought)
    greedy_cost = greedy_span = None
    if sol.greedy is not None:
        greedy_cost, greedy_span = greedy_summary(campaign, sol)
    odds = deadline_odds(campaign, runs_out, campaign.time_confidence, seed=sol.seed)
    # what ran before now is part of the campaign's cost: the solver's figures (of what is left) count it too
    spent = sum(usd_to_units(r.usd) for r in runs_out if r.state == "done")
    value, bound, gap = _with_spent(sol.objective, sol.objective_value, sol.bound, sol.gap, spent)
    lp = None if sol.lp_bound is None else sol.lp_bound + (value - sol.objective_value)
    then_value, then_bound, then_gap = _with_spent(sol.then, sol.then_value, sol.then_bound, sol.then_gap, spent)
    return Plan(
        scenario=campaign.scenario.name or campaign.source,
        replan=replan,
        runs=runs_out,
        totals=totals,
        timing=PlanTiming(
            time_confidence=campaign.time_confidence,
            deadline_probability=odds.probability,
            makespan_p50_h=round(odds.makespan_p50_h, 6),
            makespan_p90_h=round(odds.makespan_p90_h, 6),
            draws=odds.draws,
            seed=odds.seed,
        ),
        solver=PlanSolver(
            status=sol.status,
            objective=sol.objective,
            objective_value=_scale(sol.objective, value),
            bound=_scale(sol.objective, bound),
            lp_bound=None if lp is None else _scale(sol.objective, lp),
            gap=gap,
            wall_s=round(sol.wall_s, 3),
            seed=sol.seed,
            workers=sol.workers,
            ortools_version=ortools.__version__,
            greedy_cost_usd=None if greedy_cost is None else greedy_cost + spent / MONEY_UNITS_PER_USD,
            greedy_makespan_h=greedy_span,
            stopped_early=sol.stopped,
            source=sol.source,
            then=sol.then,
            then_status=sol.then_status,
            then_value=None if then_value is None else _scale(sol.then, then_value),
            then_bound=None if then_bound is None else _scale(sol.then, then_bound),
            then_gap=then_gap,
        ),
    )


def _with_spent(
    goal: str | None, value: float | None, bound: float | None, gap: float | None, spent: int
) -> tuple[float | None, float | None, float | None]:
    """A cost objective's value, bound and gap with the money already spent (units) added; others as they are."""
    if goal != "cost" or not spent or value is None or bound is None:
        return value, bound, gap
    value, bound = value + spent, bound + spent
    return value, bound, abs(value - bound) / max(abs(value), 1e-9)


def _scale(goal: str | None, value: float) -> float:
    """Solver units to the plan's: USD for cost, hours for time."""
    return value / (MONEY_UNITS_PER_USD if goal == "cost" else MINUTES_PER_HOUR)


def _job(campaign: Campaign, rid: str) -> str:
    return next(r.job_id for r in campaign.runs if r.id == rid)


def plan_totals(campaign: Campaign, runs: list[PlanRun], bought: dict[str, int]) -> PlanTotals:
    """Campaign totals, computed from the runs alone (the verifier recomputes them the same way)."""
    makespan = max((r.end_h for r in runs), default=0.0)
    deadline = campaign.scenario.objective.deadline_h
    uses = []
    cost = sum(r.usd for r in runs)
    for p in campaign.pools:
        used = sum(r.hours * r.gpu_count for r in runs if r.pool == p.id)
        nodes = bought.get(p.id, 0) if p.kind == "purchase" else p.nodes
        available = nodes * p.gpus_per_node * makespan
        purchase = bought.get(p.id, 0) * purchase_charge(p, deadline) if p.kind == "purchase" else 0.0
        cost += purchase
        uses.append(
            PoolUse(
                pool=p.id, gpu_hours_used=used, gpu_hours_available=available,
                utilisation=used / available if available else 0.0,
                nodes_bought=bought.get(p.id, 0), purchase_usd=purchase,
            )
        )  # fmt: skip
    return PlanTotals(
        cost_usd=cost, makespan_h=makespan, gpu_hours=sum(r.hours * r.gpu_count for r in runs), pools=uses
    )


def greedy_summary(campaign: Campaign, sol: Solution) -> tuple[float, float]:
    """Cost and makespan of the greedy warm start (what first-fit list scheduling gives)."""
    assert sol.greedy is not None
    pools = {p.id: p for p in campaign.pools}
    cost, span = 0.0, 0
    bought = dict(campaign.history.bought) if campaign.history is not None else {}
    for rid, place in sol.greedy.items():
        c = sol.candidate(rid, _job(campaign, rid), place.cand)
        cost += c.usd
        span = max(span, place.start + c.minutes)
        if pools[c.pool_id].kind == "purchase" and place.nodes:
            bought[c.pool_id] = max(bought.get(c.pool_id, 0), max(place.nodes) + 1)
    deadline = campaign.scenario.objective.deadline_h
    cost += sum(n * purchase_charge(pools[p], deadline) for p, n in bought.items())
    return cost, span / MINUTES_PER_HOUR


def verified_plan(campaign: Campaign, sol: Solution, replan: PlanReplan | None = None) -> Plan:
    """The plan of a solution, checked by the verifier: a plan that fails it is never handed out."""
    plan = build_plan(campaign, sol, replan)
    problems = verify_plan(campaign, plan)
    if problems:
        raise FtplanError(f"internal error: the solved plan fails verification: {problems[0]}")
    return plan


def load_plan(path: Path) -> Plan:
    """Read a plan file (YAML or JSON)."""
    return load_validated(path, Plan, what="plan fields")


def plan_data(plan: Plan) -> dict:
    """A plan as plain data, without the re-planning fields a plan made by ``ftplan plan`` leaves at
    their defaults (so its file reads as before re-planning existed)."""
    data = plan.model_dump(mode="json")
    if data["replan"] is None:
        del data["replan"]
    for r in data["runs"]:
        if r["state"] == "planned" and r["work"] == 1.0:
            del r["state"], r["work"]
    return data


def write_plan(plan: Plan, path: Path) -> None:
    """Write a plan as YAML (``.yaml``/``.yml``) or JSON, atomically."""
    data = plan_data(plan)
    if Path(path).suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2)
    write_text_atomic(Path(path), text)


__all__ = ["build_plan", "load_plan", "plan_data", "plan_totals", "verified_plan", "write_plan"]
