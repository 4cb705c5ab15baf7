"""Re-plan a campaign under way: keep what ran as facts, runs in progress where they are, plan the rest
from now, and say what changed.

The status file (``ftplan.schema.status``) gives the time now and the exceptions to the plan: runs that
finished, failed or run at some progress, and nodes lost. A run it does not list is taken to be on
schedule (finished if the plan ended it by now, running at the planned pace if it started) and said so.
A run in progress goes on where it is (``Pin``); with ``allow_migrate`` the solver may instead restart
it anywhere from its last checkpoint, paying again for the work since that checkpoint. A run on a lost
node has failed. Jobs added to or removed from the scenario, and its new prices or deadlines, apply from
now; what ran keeps the price it ran at.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ftplan.candidates import Candidate, CandidateTable, build_candidates, run_cost_usd
from ftplan.errors import FtplanError
from ftplan.io import load_validated
from ftplan.plan import verified_plan
from ftplan.scenario import Campaign, History, Pin, PoolSpec, Run
from ftplan.schema.plan import Plan, PlanReplan, PlanRun
from ftplan.schema.status import CampaignStatus, RunStatus
from ftplan.solver.solve import Progress, solve_campaign
from ftplan.units import MINUTES_PER_HOUR, hours_to_minutes, usd_to_units
from ftplan.verify import restated

NODE = re.compile(r"(?P<pool>.+)/(?P<kind>node|i)(?P<k>\d+)")


class StatusError(FtplanError):
    """A status file is malformed or does not match the plan it reports on."""


def load_status(path: Path) -> CampaignStatus:
    return load_validated(path, CampaignStatus, StatusError, "now_h, runs and nodes_lost")


@dataclass(frozen=True)
class Replanned:
    """A re-plan: the new plan, what changed against the previous one, and what was assumed."""

    plan: Plan
    changes: list[str]
    assumed: list[str]


def replan_campaign(
    campaign: Campaign,
    previous: Plan,
    status: CampaignStatus,
    previous_name: str = "plan",
    status_name: str = "status",
    allow_migrate: bool = False,
    progress: Callable[[Progress], None] | None = None,
    phases: Callable[[str], None] | None = None,
    table: CandidateTable | None = None,
) -> Replanned:
    """Plan what is left of ``campaign`` from ``status.now_h``, given the ``previous`` plan it ran on."""
    now_h = status.now_h
    now = math.ceil(round(now_h * MINUTES_PER_HOUR, 6))
    pools = {p.id: p for p in campaign.pools}
    parts: dict[str, list[PlanRun]] = {}
    for r in previous.runs:
        parts.setdefault(r.run, []).append(r)
    for rid in status.runs:
        if rid not in parts:
            raise StatusError(f"{status_name}: runs.{rid}: not a run of {previous_name}; its runs: "
                              f"{', '.join(sorted(parts))}")  # fmt: skip
    lost = _lost_nodes(status, status_name, pools)
    lost_ids = set(status.nodes_lost)
    history = History(now=now, work={}, pins={}, movable=frozenset(), lost=lost, bought={})
    movable: set[str] = set()
    assumed: list[str] = []
    left: set[str] = set()
    planned_part = {rid: next((r for r in ps if r.state == "planned"), None) for rid, ps in parts.items()}
    for run in campaign.runs:
        done = [r for r in parts.get(run.id, []) if r.state == "done"]
        history.done[run.id] = done
        planned = planned_part.get(run.id)
        prior = sum(r.work for r in done)
        if planned is None:
            if not done:  # a job new to the scenario
                left.add(run.id)
            continue
        st = status.runs.get(run.id) or _on_schedule(planned, now_h, assumed)
        where = f"{status_name}: runs.{run.id}"
        if st.state == "running" and set(planned.nodes) & lost_ids:
            assumed.append(f"{run.id}: its node {sorted(set(planned.nodes) & lost_ids)[0]} is lost: it failed at now")
            st = RunStatus(state="failed", checkpointed=st.checkpointed)
        if st.state == "finished":
            end = st.ended_h if st.ended_h is not None else min(planned.end_h, now_h)
            if end > now_h or end < planned.start_h:
                raise StatusError(f"{where}.ended_h: {end:g} h is not between its start ({planned.start_h:.2f} h) "
                                  f"and now ({now_h:g} h).")  # fmt: skip
            history.done[run.id] = [*done, _ran(planned, planned.start_h, end, 1.0 - prior)]
            continue
        if st.state == "pending":
            history.work[run.id] = 1.0 - prior
            left.add(run.id)
            continue
        if planned.start_h > now_h:
            raise StatusError(f"{where}.state: {st.state}, but the plan starts it at {planned.start_h:.2f} h, after "
                              f"now ({now_h:g} h). To fix: mark it pending.")  # fmt: skip
        checkpoint = _checkpoint(st, prior, where)
        if st.checkpointed is None and (st.state == "failed" or allow_migrate):
            assumed.append(f"{run.id}: no checkpoint given, a restart begins its part again")
        left.add(run.id)
        history.work[run.id] = 1.0 - checkpoint
        if st.state == "failed":
            history.done[run.id] = [*done, _ran(planned, planned.start_h, now_h, checkpoint - prior)]
            continue
        p = _progress(st, planned, prior, now_h, run.job.tokens, where)
        if st.progress is None and st.tokens_done is None and run.id in status.runs:  # (unlisted: said above)
            assumed.append(f"{run.id}: no progress given, taken as on schedule ({100 * p:.1f}% done)")
        if p >= 1.0:
            history.done[run.id] = [*done, _ran(planned, planned.start_h, now_h, 1.0 - prior)]
            left.discard(run.id)
            continue
        pool = pools[planned.pool]
        going = _going_on(campaign, run, planned, pool, 1.0 - p, where)
        history.pins[run.id] = (_continuation(going, pool), _pin(planned, now, 1.0 - p))
        history.split[run.id] = (_ran(planned, planned.start_h, now_h, p - prior),
                                 _ran(planned, planned.start_h, now_h, checkpoint - prior))  # fmt: skip
        if allow_migrate:
            movable.add(run.id)
    if not left:
        raise StatusError(f"{status_name}: every run has finished by {now_h:g} h; nothing is left to plan.")
    before = {}  # where runs planned again were: the search after the objectives keeps them there if it can
    for rid in left - set(history.pins):
        planned = planned_part.get(rid)
        if planned is not None and planned.pool in pools and not set(planned.nodes) & lost_ids:
            before[rid] = (planned.pool, _indices(planned) if pools[planned.pool].placed else ())
    history = replace(history, movable=frozenset(movable), bought=_bought(previous, pools), previous=before)
    whole = replace(campaign, history=history)
    rest = replace(whole, runs=[replace(r, depends_on=tuple(d for d in r.depends_on if d in left))
                                for r in campaign.runs if r.id in left])  # fmt: skip
    table = table or build_candidates(rest)
    sol = solve_campaign(rest, table, progress=progress, phases=phases)
    block = PlanReplan(now_h=now_h, previous=previous_name, nodes_lost=sorted(lost_ids), migrate=allow_migrate)
    plan = verified_plan(whole, sol, block)
    return Replanned(plan, plan_changes(previous, plan), assumed)


def _lost_nodes(status: CampaignStatus, name: str, pools: dict[str, PoolSpec]) -> dict[str, frozenset[int]]:
    lost: dict[str, set[int]] = {}
    for i, n in enumerate(status.nodes_lost):
        m = NODE.fullmatch(n)
        pool = pools.get(m["pool"]) if m else None
        if m is None or pool is None or int(m["k"]) >= pool.nodes:
            raise StatusError(f"{name}: nodes_lost[{i}]: {n!r} is not a node of the scenario's pools (as plans name "
                              f"them: pool/nodeK). To fix: copy the id from the plan.")  # fmt: skip
        if not pool.placed:
            raise StatusError(f"{name}: nodes_lost[{i}]: {n!r} is a cloud instance; its run has failed instead "
                              "(state: failed) and the quota is unchanged.")  # fmt: skip
        lost.setdefault(pool.id, set()).add(int(m["k"]))
    return {p: frozenset(ks) for p, ks in lost.items()}


def _on_schedule(planned: PlanRun, now_h: float, assumed: list[str]) -> RunStatus:
    """A run the status does not list: as the plan has it at ``now_h``."""
    if planned.end_h <= now_h:
        assumed.append(f"{planned.run}: not in the status, finished as planned at {planned.end_h:.2f} h")
        return RunStatus(state="finished", ended_h=planned.end_h)
    if planned.start_h < now_h:
        assumed.append(f"{planned.run}: not in the status, running on schedule")
        return RunStatus(state="running")
    return RunStatus(state="pending")


def _progress(st: RunStatus, planned: PlanRun, prior: float, now_h: float, tokens: float | None,
              where: str) -> float:  # fmt: skip
    """Share of the job trained by now: stated (as a share or in tokens), else the plan's pace."""
    if st.tokens_done is not None:
        if not tokens:
            raise StatusError(f"{where}.tokens_done: the job is not sized in tokens. To fix: give progress.")
        p = st.tokens_done / tokens
    elif st.progress is not None:
        p = st.progress
    else:
        p = prior + planned.work * (now_h - planned.start_h) / (planned.end_h - planned.start_h)
    if p < prior - 1e-9:
        raise StatusError(f"{where}: progress {p:.4f} is below what its earlier parts did ({prior:.4f}).")
    return min(max(p, prior), 1.0)


def _checkpoint(st: RunStatus, prior: float, where: str) -> float:
    """Share of the job its last checkpoint holds; without one stated, where this part began (the worst case)."""
    if st.checkpointed is None:
        return prior
    if st.checkpointed < prior - 1e-9:
        raise StatusError(f"{where}.checkpointed: {st.checkpointed:g} is below what its earlier parts did ({prior:g}).")
    return st.checkpointed


def _ran(planned: PlanRun, start_h: float, end_h: float, work: float) -> PlanRun:
    """The part of a planned run that ran from ``start_h`` to ``end_h``, doing ``work`` of its job; paid by the
    hour at the price it was planned at."""
    hours = end_h - start_h
    rate = planned.usd / planned.hours if planned.hours else 0.0
    return planned.model_copy(update={"state": "done", "start_h": start_h, "end_h": end_h, "hours": hours,
                                      "usd": rate * hours, "work": max(0.0, work)})  # fmt: skip


def _going_on(campaign: Campaign, run: Run, planned: PlanRun, pool: PoolSpec, work: float, where: str) -> PlanRun:
    """A run in progress from now: ``work`` of its job at its layout, its figures as today's models and the
    scenario's headroom policy give them; refused when it no longer fits under that policy."""
    going = restated(run, planned.model_copy(update={"work": work}), pool, campaign.policy(run.job_id),
                     campaign.time_confidence)  # fmt: skip
    if going.memory_required_bytes > pool.pool.gpu.memory_bytes:
        raise StatusError(
            f"{where}: in progress, but needs {going.memory_required_bytes / 2**30:.2f} GiB per GPU under the "
            f"headroom policy asked now, more than {pool.pool.gpu.id} has. To fix: ask the policy it was planned "
            "under, or mark it failed to plan it afresh."
        )
    return going


def _continuation(planned: PlanRun, pool: PoolSpec) -> Candidate:
    """What is left of a run in progress, where it is: its layout and speed, its share of the job."""
    lay = planned.layout
    hours = planned.hours
    usd = run_cost_usd(pool, planned.gpu_count, hours)
    per = pool.gpus_per_node
    return Candidate(
        job_id=planned.job, pool_id=planned.pool, gpus=planned.gpu_count, nodes=len(planned.nodes),
        whole_nodes=planned.gpu_count > per, dp=lay.dp, tp=lay.tp, pp=lay.pp, zero=lay.zero, dp_shard=lay.dp_shard,
        cp=lay.cp, ep=lay.ep, offload=lay.offload, recompute=lay.recompute, micro_batch=lay.micro_batch,
        grad_accum=lay.grad_accum, optimizer=lay.optimizer, device_bytes=planned.memory_per_gpu_bytes,
        headroom_bytes=planned.headroom_bytes, required_bytes=planned.memory_required_bytes,
        band_bytes=(planned.memory_band_bytes[0], planned.memory_band_bytes[1]),
        fit_probability=planned.fit_probability, tokens_per_s=planned.tokens_per_s, hours=hours, usd=usd,
        minutes=hours_to_minutes(hours), cost_units=usd_to_units(usd),
    )  # fmt: skip


def _indices(planned: PlanRun) -> tuple[int, ...]:
    """The node (or instance) numbers of a planned run's node ids."""
    return tuple(int(NODE.fullmatch(n)["k"]) for n in planned.nodes)  # type: ignore[index]


def _pin(planned: PlanRun, now: int, work: float) -> Pin:
    """Where a run in progress is: from ``now`` (minutes) on its nodes and GPUs, doing ``work`` of its job."""
    nodes = _indices(planned)
    return Pin(start=now, nodes=nodes, gpus=tuple(tuple(planned.gpus[n]) for n in planned.nodes), work=work)


def _bought(previous: Plan, pools: dict[str, PoolSpec]) -> dict[str, int]:
    """Nodes the previous plan bought: bought already (the scenario's pool may offer fewer now)."""
    out = {}
    for u in previous.totals.pools:
        if u.nodes_bought and u.pool in pools and pools[u.pool].kind == "purchase":
            out[u.pool] = min(u.nodes_bought, pools[u.pool].nodes)
    return out


def plan_changes(previous: Plan, new: Plan) -> list[str]:
    """What the new plan does differently, run by run (a run moved to other nodes, or ending at another time;
    one that had not started, starting at another), and what it saves or costs."""

    def where(r: PlanRun) -> str:
        return f"{','.join(r.nodes)} {r.start_h:.2f}–{r.end_h:.2f} h"

    now = new.replan.now_h if new.replan is not None else 0.0
    minute = 1 / MINUTES_PER_HOUR
    old = {r.run: r for r in previous.runs if r.state == "planned"}
    new_planned = {r.run: r for r in new.runs if r.state == "planned"}
    lines = []
    for rid in sorted(set(old) | set(new_planned)):
        a, b = old.get(rid), new_planned.get(rid)
        if b is None:
            ran = any(r.run == rid for r in new.runs)
            lines.append(f"{rid}: {'finished' if ran else 'dropped from the scenario'}")
        elif a is None:
            lines.append(f"{rid}: new, {where(b)}")
        elif (a.pool, a.nodes, a.gpus) != (b.pool, b.nodes, b.gpus):
            lines.append(f"{rid}: moved {where(a)} → {where(b)}")
        elif abs(a.end_h - b.end_h) > minute or (a.start_h >= now and abs(a.start_h - b.start_h) > minute):
            lines.append(f"{rid}: retimed {where(a)} → {where(b)}")
    delta = new.totals.cost_usd - previous.totals.cost_usd
    span = new.totals.makespan_h - previous.totals.makespan_h
    lines.append(f"cost ${previous.totals.cost_usd:,.2f} → ${new.totals.cost_usd:,.2f} ({delta:+,.2f}); makespan "
                 f"{previous.totals.makespan_h:.2f} h → {new.totals.makespan_h:.2f} h ({span:+.2f} h)")  # fmt: skip
    return lines


__all__ = ["CampaignStatus", "Replanned", "StatusError", "load_status", "plan_changes", "replan_campaign"]
