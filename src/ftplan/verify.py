"""Check a plan against its scenario without the solver: every rule recomputed in plain Python.

Memory and durations are recomputed with the memory and time models; capacity is checked minute
by minute as events (a GPU index is never used by two overlapping runs; cloud instances in use
never exceed the quota); whole-node and single-node rules, the job's allowed choices, deadlines,
dependencies, the budget, batch arithmetic and the cost totals are checked. Returns every
violation, not the first.

Every field of a plan is re-derived and compared, except these, which are informational (they
describe how the plan was found, not what it does): ``solver.wall_s``, ``solver.seed``,
``solver.workers``, ``solver.ortools_version``, ``solver.greedy_cost_usd``,
``solver.greedy_makespan_h``, ``solver.stopped_early``, ``solver.source`` and ``timing.deadline_probability``
(the chance the deadlines of the scenario the plan was made for hold; a check against other deadlines would
give another, and its draws are re-derived through the makespan quantiles). The solver's objective, value, bound,
gap and status are held to the plan itself: the value is the plan's cost or makespan, the bound is
not above it, the gap is theirs, and OPTIMAL means a gap of zero. ``scenario`` must be the
scenario's name (or, for a scenario without one, its file name).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from ftplan.bands import HeadroomPolicy, make_policy, memory_band
from ftplan.errors import FtplanError
from ftplan.fit import hardware
from ftplan.memory import Layout, MemoryEstimate, Offload, Recompute, Training, ZeroStage, estimate_memory
from ftplan.memory.pipeline import PipelineSchedule
from ftplan.memory.setup import Optimizer
from ftplan.scenario import Campaign, PoolSpec, Run, purchase_charge
from ftplan.schema.plan import Plan, PlanReplan, PlanRun, PoolUse
from ftplan.timing import model as tm
from ftplan.timing.deadlines import deadline_odds, duration_factor
from ftplan.units import (
    MINUTES_PER_HOUR,
    MONEY_UNITS_PER_USD,
    deadline_minutes,
    end_minutes,
    hours_to_minutes,
    start_minutes,
)

REL_TOL = 1e-6  # a run's hours, tokens/s and dollars: the layout search computes them as arrays
TOTAL_TOL = 1e-9  # totals: sums of the runs' own numbers, recomputed the same way
GAP_TOL = 1e-9  # a gap recomputed from the plan's rounded value and bound
BYTES_TOL = 2  # the layout search extends one estimate to every micro-batch in floats: ±2 bytes of rounding
NODE_ID = re.compile(r"(?P<pool>[^/]+)/(?:node|i)(?P<k>0|[1-9][0-9]*)")


def differ(stated: float, value: float, rel: float) -> bool:
    """Whether a stated number differs from its recomputed ``value`` by more than ``rel`` of it."""
    return abs(stated - value) > rel * abs(value)


def verify_plan(campaign: Campaign, plan: Plan) -> list[str]:
    """Every violation of the scenario's rules by ``plan`` (empty when the plan is valid)."""
    errors: list[str] = []
    pools = {p.id: p for p in campaign.pools}
    runs = {r.id: r for r in campaign.runs}
    parts: dict[str, list[PlanRun]] = {}
    for r in plan.runs:
        if r.run not in runs:
            errors.append(f"run {r.run!r} is not in the scenario")
            continue
        parts.setdefault(r.run, []).append(r)
    errors += [f"run {rid!r} is not placed" for rid in runs if rid not in parts]
    for rid, ps in parts.items():
        errors += _parts(rid, ps, plan.replan)
    bought = {u.pool: u.nodes_bought for u in plan.totals.pools}
    for r in plan.runs:
        if r.run not in runs:
            continue
        run = runs[r.run]
        pool = pools.get(r.pool)
        if pool is None:
            errors.append(f"{r.run}: unknown pool {r.pool!r}")
            continue
        if r.state == "done":  # a part that ran: a fact, its time and price as they were
            errors += _check_done(r, run, pool, bought.get(pool.id, 0), campaign.policy(run.job_id))
        else:
            errors += _check_run(r, run, pool, bought.get(pool.id, 0), campaign.policy(run.job_id),
                                 plan.timing.time_confidence)  # fmt: skip
    if errors:
        return errors
    return (
        _identity(plan, campaign)
        + _capacity(plan, campaign)
        + _timing(plan, campaign)
        + _totals(plan, campaign)
        + _solver(plan)
        + _odds(plan, campaign)
    )


WORK_TOL = 1e-9  # the shares of a job its parts do, summed


def _parts(rid: str, parts: list[PlanRun], replan: PlanReplan | None) -> list[str]:
    """A run's parts: one planned part doing all its work, or, in a re-plan, the parts that ran before
    now (done) then at most one planned from now, one after another, doing the job's work between them."""
    if replan is None:
        if len(parts) > 1:
            return [f"run {rid!r} is placed twice"]
        if parts[0].state != "planned" or parts[0].work != 1.0:
            return [f"{rid}: a {parts[0].state} part doing {parts[0].work:g} of its job outside a re-plan"]
        return []
    errs: list[str] = []
    ordered = sorted(parts, key=lambda r: (r.start_h, r.state != "done"))
    planned = [r for r in ordered if r.state == "planned"]
    if len(planned) > 1 or (planned and ordered[-1] is not planned[0]):
        errs.append(f"{rid}: more than one planned part, or a planned part before a done one")
    for a, b in itertools.pairwise(ordered):
        if b.start_h < a.end_h - 1e-9:
            errs.append(f"{rid}: parts overlap ({b.start_h:.2f} h < {a.end_h:.2f} h)")
    now = replan.now_h
    for r in ordered:
        if r.state == "done" and r.end_h > now + 1e-9:
            errs.append(f"{rid}: a done part ends at {r.end_h:.2f} h, after now ({now:g} h)")
        if r.state == "planned" and start_minutes(r.start_h) < start_minutes(now):
            errs.append(f"{rid}: starts at {r.start_h:.2f} h, before now ({now:g} h)")
        if r.state == "planned" and r.work <= 0:
            errs.append(f"{rid}: a planned part doing none of its job")
        if r.state == "planned" and set(r.nodes) & set(replan.nodes_lost):
            errs.append(f"{rid}: planned on lost node(s) {sorted(set(r.nodes) & set(replan.nodes_lost))}")
    work = sum(r.work for r in parts)
    finished = all(r.state == "done" for r in parts)
    if (not finished and abs(work - 1.0) > WORK_TOL) or work > 1.0 + WORK_TOL:
        errs.append(f"{rid}: its parts do {work:.6f} of the job, not all of it")
    return errs


def _check_done(r: PlanRun, run: Run, pool: PoolSpec, bought: int, policy: HeadroomPolicy) -> list[str]:
    """A part that ran: its layout and memory as any run's; its hours are its interval."""
    errs = _placement(r, run, pool, bought)
    if errs:
        return errs
    if differ(r.hours, r.end_h - r.start_h, REL_TOL):
        errs.append(f"{r.run}: a done part of {r.hours:.4f} h over {r.end_h - r.start_h:.4f} h")
    return errs


def _odds(plan: Plan, campaign: Campaign) -> list[str]:
    """The plan's time confidence against the one asked for, and its Monte Carlo re-run with its own seed."""
    t, asked = plan.timing, campaign.time_confidence
    errs = []
    if asked is not None and (t.time_confidence is None or t.time_confidence < asked):
        errs.append(f"timing: durations planned at time_confidence {t.time_confidence}, looser than the "
                    f"{asked} asked for")  # fmt: skip
    odds = deadline_odds(campaign, plan.runs, t.time_confidence, seed=t.seed, draws=t.draws)
    for name, stated, now in (("makespan_p50_h", t.makespan_p50_h, odds.makespan_p50_h),
                              ("makespan_p90_h", t.makespan_p90_h, odds.makespan_p90_h)):  # fmt: skip
        if abs(stated - now) > 1e-5:
            errs.append(f"timing: {name} {stated} stated, {now:.6f} recomputed")
    return errs


def _identity(plan: Plan, campaign: Campaign) -> list[str]:
    name = campaign.scenario.name
    ok = plan.scenario == name if name else Path(plan.scenario).name == Path(campaign.source).name
    expected = name or Path(campaign.source).name
    return [] if ok else [f"scenario: the plan is for {plan.scenario!r}, this scenario is {expected!r}"]


def _units(goal: str, value: float) -> int:
    """The solver's integers: money units (cost) or minutes (time)."""
    return round(value * (MONEY_UNITS_PER_USD if goal == "cost" else MINUTES_PER_HOUR))


def _solver(plan: Plan) -> list[str]:
    """The solver block against the plan, in the solver's own integers: a value that is the plan's
    cost (each run and each bought node rounded up to a money unit, as the solver counts them) or
    makespan, a bound not above it, the gap between them, and OPTIMAL only with no gap."""
    errs: list[str] = []
    s = plan.solver
    actual = {"cost": plan.totals.cost_usd, "time": plan.totals.makespan_h}
    slack = {"cost": len(plan.runs) + sum(u.nodes_bought for u in plan.totals.pools), "time": 0}

    def stage(label: str, goal: str, value: float, bound: float, gap: float, status: str) -> None:
        v, b, a = _units(goal, value), _units(goal, bound), _units(goal, actual[goal])
        if not a <= v <= a + slack[goal]:
            errs.append(f"solver: {label} value {value:,.4f} is not the plan's {goal} {actual[goal]:,.4f}")
        if b > v:
            errs.append(f"solver: {label} bound {bound:,.4f} is above its value {value:,.4f}")
        true_gap = abs(value - bound) / abs(value) if value else 0.0
        if abs(gap - true_gap) > GAP_TOL:
            errs.append(f"solver: {label} gap {gap:.3g} stated, {true_gap:.3g} from its value and bound")
        if status == "OPTIMAL" and b != v:
            errs.append(f"solver: {label} is OPTIMAL with a gap of {100 * true_gap:.2f}%")

    stage("objective", s.objective, s.objective_value, s.bound, s.gap, s.status)
    if s.lp_bound is not None and _units(s.objective, s.lp_bound) > _units(s.objective, s.bound):
        errs.append(f"solver: LP bound {s.lp_bound:,.4f} is above the best bound {s.bound:,.4f}")
    values = (s.then_value, s.then_bound, s.then_gap)
    if s.then is None:
        if s.then_status is not None or values != (None, None, None):
            errs.append("solver: a second objective's results without a second objective")
        return errs
    if s.then == s.objective:
        errs.append(f"solver: second objective {s.then!r} repeats the first")
    if s.then_status == "NOT RUN":
        if values != (None, None, None):
            errs.append("solver: the second objective was not run but states a value")
    elif s.then_status is None or None in values:
        errs.append("solver: the second objective needs a status, value, bound and gap")
    else:
        stage("second objective", s.then, *values, s.then_status)  # type: ignore[arg-type]
    return errs


def planned_training(run: Run, r: PlanRun) -> Training:
    """The job's recipe with the optimizer the plan chose for the run."""
    return replace(run.job.training, optimizer=Optimizer(r.layout.optimizer))


def _headroom(r: PlanRun, run: Run, pool: PoolSpec, est: MemoryEstimate, asked: HeadroomPolicy) -> list[str]:
    """The run's memory under the policy it records and under the one its scenario (or command line) asks for;
    its band, its required bytes and its chance of fitting re-derived."""
    gpu = pool.pool.gpu
    gib = 2**30
    if r.memory_policy.memory_confidence is None and r.memory_policy.memory_margin is None:
        return [f"{r.run}: memory_policy states neither memory_confidence nor memory_margin"]
    try:
        stated = make_policy(
            r.memory_policy.memory_confidence, r.memory_policy.memory_margin, f"{r.run}: memory_policy"
        )
    except FtplanError as exc:
        return [str(exc)]
    assert stated is not None
    lay = r.layout
    band = memory_band(run.job.arch, run.job.training, r.gpu_count, lay.zero, lay.offload,
                       math.ceil(r.gpu_count / pool.gpus_per_node))  # fmt: skip
    device = est.device_total_bytes
    errs = []
    checks = [(stated, "the policy it records", "")]
    if asked != stated:
        checks.append((asked, "the policy asked for", f" (it was planned under {stated.label}, a looser policy)"))
    for policy, whose, looser in checks:
        need = policy.required(device, band)
        if need > gpu.memory_bytes:
            errs.append(f"{r.run}: needs {need / gib:.2f} GiB per GPU under {policy.label} ({whose}), {gpu.id} has "
                        f"{gpu.memory_bytes / gib:.2f} GiB{looser}")  # fmt: skip
    need = stated.required(device, band)
    if abs(need - r.memory_required_bytes) > BYTES_TOL + 1:
        errs.append(f"{r.run}: memory_required_bytes {r.memory_required_bytes} stated, {need:.0f} recomputed")
    lo, hi = band.interval(device)
    if any(abs(a - b) > BYTES_TOL + 1 for a, b in zip(r.memory_band_bytes, (lo, hi), strict=True)):
        errs.append(f"{r.run}: memory_band_bytes {r.memory_band_bytes} stated, [{lo:.0f}, {hi:.0f}] recomputed")
    p = band.fit_probability(device, gpu.memory_bytes)
    if abs(p - r.fit_probability) > 1e-6:
        errs.append(f"{r.run}: fit_probability {r.fit_probability} stated, {p:.6f} recomputed")
    return errs


def run_memory(run: Run, r: PlanRun, pool: PoolSpec) -> MemoryEstimate:
    """The memory model on a planned run's layout and pool (what the plan states per GPU)."""
    lay, job, gpu = r.layout, run.job, pool.pool.gpu
    training = planned_training(run, r)
    layout = Layout(dp=lay.dp, tp=lay.tp, zero=ZeroStage(lay.zero), offload=Offload(lay.offload),
                    recompute=Recompute(lay.recompute), micro_batch=lay.micro_batch, grad_accum=lay.grad_accum,
                    gpus_per_node=pool.gpus_per_node, pp=lay.pp,
                    pp_schedule=PipelineSchedule(lay.pp_schedule), dp_shard=lay.dp_shard, cp=lay.cp,
                    ep=lay.ep)  # fmt: skip
    return estimate_memory(job.arch, training, layout, gpu_memory_bytes=gpu.memory_bytes, gpu_arch=gpu.arch,
                           overheads=job.overheads)  # fmt: skip


def _allowed(r: PlanRun, run: Run) -> list[str]:
    """The run's layout against what its job allows (``allow:`` and its fixed recipe)."""
    errs: list[str] = []
    lay, allow = r.layout, run.spec.allow
    if r.job != run.job_id:
        errs.append(f"{r.run}: job {r.job!r} stated, the run belongs to {run.job_id!r}")
    if lay.precision != run.job.training.precision.value:
        errs.append(f"{r.run}: precision {lay.precision} stated, the job trains in {run.job.training.precision.value}")
    optimizers = [o.value for o in allow.optimizers] or [run.job.training.optimizer.value]
    if lay.optimizer not in optimizers:
        errs.append(f"{r.run}: optimizer {lay.optimizer} is not allowed (allowed: {', '.join(optimizers)})")
    if allow.zero and lay.zero not in allow.zero:
        errs.append(f"{r.run}: ZeRO-{lay.zero} is not allowed (allow.zero: {allow.zero})")
    if allow.recompute and lay.recompute not in [x.value for x in allow.recompute]:
        errs.append(f"{r.run}: recompute {lay.recompute} is not allowed")
    if not allow.offload and lay.offload != "none":
        errs.append(f"{r.run}: offload {lay.offload} is not allowed (allow.offload: false)")
    if allow.max_gpus and r.gpu_count > allow.max_gpus:
        errs.append(f"{r.run}: {r.gpu_count} GPUs, allow.max_gpus is {allow.max_gpus}")
    return errs


def _check_run(
    r: PlanRun, run: Run, pool: PoolSpec, bought: int, campaign_policy: HeadroomPolicy, confidence: float | None
) -> list[str]:
    errs = _placement(r, run, pool, bought)
    if errs:
        return errs
    gpu = pool.pool.gpu
    try:
        est = run_memory(run, r, pool)
    except Exception as exc:  # an impossible layout is a violation, not a crash
        return [f"{r.run}: layout is not valid: {exc}"]
    errs += _headroom(r, run, pool, est, campaign_policy)
    ram = pool.pool.host_memory_bytes
    if ram is None and r.layout.offload != "none":
        errs.append(f"{r.run}: offloads to nodes of pool {pool.id}, whose host memory is unknown (host_memory_gib)")
    if ram is not None and est.host_bytes_per_node > ram:
        errs.append(f"{r.run}: needs {est.host_bytes_per_node / 2**30:.2f} GiB of host memory per node for offloaded "
                    f"or paged states, the pool's nodes have {ram / 2**30:.2f} GiB")  # fmt: skip
    if abs(est.device_total_bytes - r.memory_per_gpu_bytes) > BYTES_TOL:
        errs.append(f"{r.run}: memory {r.memory_per_gpu_bytes} bytes stated, {est.device_total_bytes} recomputed")
    if abs(gpu.memory_bytes - r.memory_per_gpu_bytes - r.headroom_bytes) > BYTES_TOL:
        errs.append(f"{r.run}: headroom {r.headroom_bytes} bytes stated, "
                    f"{gpu.memory_bytes - r.memory_per_gpu_bytes} recomputed")  # fmt: skip
    whole, tokens_per_s = run_hours(run, r, pool, confidence)
    hours = whole * r.work  # the share of the job this part does (a re-plan's remainder)
    if differ(r.hours, hours, REL_TOL):
        errs.append(f"{r.run}: {r.hours:.4f} h stated, {hours:.4f} h recomputed")
    if differ(r.tokens_per_s, tokens_per_s, REL_TOL):
        errs.append(f"{r.run}: {r.tokens_per_s:,.1f} tokens/s stated, {tokens_per_s:,.1f} recomputed")
    if r.end_h < r.start_h:
        errs.append(f"{r.run}: ends at {r.end_h:.2f} h, before it starts at {r.start_h:.2f} h")
    elif end_minutes(r.end_h) - start_minutes(r.start_h) < hours_to_minutes(hours):
        errs.append(f"{r.run}: interval {r.end_h - r.start_h:.3f} h is shorter than its {hours:.3f} h")
    per = pool.gpus_per_node
    nodes_paid = math.ceil(r.gpu_count / per)
    usd = hours * (
        nodes_paid * pool.usd_per_node_h if pool.kind == "cloud" else pool.usd_per_node_h * r.gpu_count / per
    )
    if differ(r.usd, usd, REL_TOL):
        errs.append(f"{r.run}: ${r.usd:.2f} stated, ${usd:.2f} recomputed")
    return errs


def run_hours(run: Run, r: PlanRun, pool: PoolSpec, confidence: float | None) -> tuple[float, float]:
    """Hours the whole job takes at the run's layout on its pool (at the plan's quantile of durations), and
    its tokens per second: the time model as the layout search applies it."""
    lay, job = r.layout, run.job
    training = planned_training(run, r)
    hw = hardware(pool.pool, training.precision)
    flops = tm.job_flops(job.arch, training)
    t = tm.step_times(flops, job.arch, training, hw, *(np.array([v]) for v in (
        lay.dp, lay.tp, lay.zero, tm.OFFLOAD[lay.offload], tm.RECOMPUTE[lay.recompute], lay.micro_batch,
        lay.grad_accum, lay.pp)), dp_shard=np.array([lay.dp_shard]), cp=np.array([lay.cp]),
        ep=np.array([lay.ep]))  # fmt: skip
    step_tokens = tm.step_tokens(job.training, job.global_batch)
    steps = math.ceil(job.tokens / step_tokens)
    hours = steps * float(t.total[0]) / 3600 * pool.time_factor
    # the plan's quantile of durations
    hours *= duration_factor(job.training, lay.pp, len(r.nodes), confidence, job.arch.is_moe)
    return hours, step_tokens / float(t.total[0])


def restated(run: Run, r: PlanRun, pool: PoolSpec, policy: HeadroomPolicy, confidence: float | None) -> PlanRun:
    """The run's memory, speed and hours as the models and ``policy`` give them today (a run in progress
    planned by an earlier ftplan, or under another policy, goes on at the figures the verifier expects)."""
    est = run_memory(run, r, pool)
    lay, gpu = r.layout, pool.pool.gpu
    band = memory_band(run.job.arch, run.job.training, r.gpu_count, lay.zero, lay.offload,
                       math.ceil(r.gpu_count / pool.gpus_per_node))  # fmt: skip
    device = est.device_total_bytes
    whole, tokens_per_s = run_hours(run, r, pool, confidence)
    lo, hi = band.interval(device)
    return r.model_copy(update={
        "memory_per_gpu_bytes": device, "headroom_bytes": gpu.memory_bytes - device,
        "memory_policy": type(r.memory_policy)(**policy.as_dict()),
        "memory_required_bytes": math.ceil(policy.required(device, band)), "memory_band_bytes": [round(lo), round(hi)],
        "fit_probability": round(band.fit_probability(device, gpu.memory_bytes), 6), "tokens_per_s": tokens_per_s,
        "hours": whole * r.work,
    })  # fmt: skip


def _placement(r: PlanRun, run: Run, pool: PoolSpec, bought: int) -> list[str]:
    """The run's layout against its job and GPU count, and its nodes and GPU indices against its pool."""
    errs: list[str] = _allowed(r, run)
    lay, job = r.layout, run.job
    if lay.dp * lay.tp * lay.pp * lay.cp != r.gpu_count:
        errs.append(f"{r.run}: dp {lay.dp} × tp {lay.tp} × pp {lay.pp} × cp {lay.cp} ≠ {r.gpu_count} GPUs")
    if lay.dp * lay.micro_batch * lay.grad_accum != job.global_batch:
        errs.append(
            f"{r.run}: dp {lay.dp} × micro-batch {lay.micro_batch} × accumulation {lay.grad_accum} ≠ global batch "
            f"{job.global_batch}"
        )
    per = pool.gpus_per_node
    used = sum(len(v) for v in r.gpus.values())
    if used != r.gpu_count or any(len(set(v)) != len(v) or not all(0 <= i < per for i in v) for v in r.gpus.values()):
        errs.append(f"{r.run}: GPU indices {r.gpus} do not give {r.gpu_count} distinct GPUs of {per}-GPU nodes")
    if r.gpu_count > per and any(len(v) != per for v in r.gpus.values()):
        errs.append(f"{r.run}: a multi-node run must take its nodes whole")
    if r.gpu_count <= per and len(r.nodes) != 1:
        errs.append(f"{r.run}: a run of {r.gpu_count} GPUs must stay inside one node")
    if len(r.nodes) > 1 and not pool.pool.network_gbps and len(r.nodes) > pool.pool.max_run_nodes:
        inside = "one node" if pool.pool.max_run_nodes == 1 else f"its NVLink domain of {pool.pool.max_run_nodes} nodes"
        errs.append(
            f"{r.run}: spans {len(r.nodes)} nodes of pool {pool.id}, which states no network between nodes "
            f"(a run stays inside {inside})"
        )
    if len(set(r.nodes)) != len(r.nodes):
        errs.append(f"{r.run}: node list {r.nodes} names a node twice")
    if set(r.gpus) != set(r.nodes):
        errs.append(f"{r.run}: GPU indices name nodes {sorted(r.gpus)} but the run is on {r.nodes}")
    limit = bought if pool.kind == "purchase" else pool.nodes
    kind = "node" if pool.placed else "i"
    for n in r.nodes:
        m = NODE_ID.fullmatch(n)
        if m is None or m["pool"] != pool.id or not n.startswith(f"{pool.id}/{kind}") or int(m["k"]) >= limit:
            errs.append(f"{r.run}: node {n!r} is not one of the pool's {limit} nodes")
    return errs


def _capacity(plan: Plan, campaign: Campaign) -> list[str]:
    """No GPU index is used by two runs at once; no cloud instance either (a cloud run rents its
    instances whole, and instance ids stay below the quota, so this also keeps the quota)."""
    errs: list[str] = []
    use: dict[tuple[str, int], list[tuple[float, float, str]]] = {}
    instances: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    pools = {p.id: p for p in campaign.pools}
    for r in plan.runs:
        for n, idx in r.gpus.items():
            for i in idx:
                use.setdefault((n, i), []).append((r.start_h, r.end_h, r.run))
        if not pools[r.pool].placed:
            for n in r.nodes:
                instances.setdefault((r.pool, n), []).append((r.start_h, r.end_h, r.run))
    for (n, i), spans in sorted(use.items()):
        errs += [f"{n} GPU {i}: {clash}" for clash in _overlaps(spans)]
    for (pool_id, n), spans in sorted(instances.items()):
        quota = pools[pool_id].nodes
        errs += [
            f"{n}: {clash} on one instance (each run rents whole instances; quota {quota})"
            for clash in _overlaps(spans)
        ]
    return errs


def _overlaps(spans: list[tuple[float, float, str]]) -> list[str]:
    """Pairs of consecutive (start, end, run) spans that overlap in time (touching is fine)."""
    spans = sorted(spans)
    return [
        f"runs {a} and {b} overlap ({s2:.2f} h < {e1:.2f} h)"
        for (_, e1, a), (s2, _, b) in itertools.pairwise(spans)
        if s2 < e1
    ]


def _timing(plan: Plan, campaign: Campaign) -> list[str]:
    """Deadlines on each run's last part's end; dependencies before its first part's start."""
    errs: list[str] = []
    first: dict[str, PlanRun] = {}
    last: dict[str, PlanRun] = {}
    for r in sorted(plan.runs, key=lambda r: r.start_h):
        first.setdefault(r.run, r)
        last[r.run] = r
    deadline = campaign.scenario.objective.deadline_h
    for run in campaign.runs:
        r = last[run.id]
        end = end_minutes(r.end_h)
        if run.deadline_h is not None and end > deadline_minutes(run.deadline_h):
            errs.append(f"{run.id}: ends at {r.end_h:.2f} h, after its deadline of {run.deadline_h:g} h")
        if deadline is not None and end > deadline_minutes(deadline):
            errs.append(f"{run.id}: ends at {r.end_h:.2f} h, after the campaign deadline of {deadline:g} h")
        start = first[run.id].start_h
        for dep in run.depends_on:
            if start_minutes(start) < end_minutes(last[dep].end_h):
                errs.append(f"{run.id}: starts at {start:.2f} h, before {dep} ends at {last[dep].end_h:.2f} h")
    return errs


def _totals(plan: Plan, campaign: Campaign) -> list[str]:
    errs: list[str] = []
    deadline = campaign.scenario.objective.deadline_h
    cost = sum(r.usd for r in plan.runs)
    listed = [u.pool for u in plan.totals.pools]
    expected = [p.id for p in campaign.pools]
    if sorted(listed) != sorted(expected):
        errs.append(f"totals: pools {listed} listed, the scenario has {expected}")
    makespan = max(r.end_h for r in plan.runs)
    gpu_hours = sum(r.hours * r.gpu_count for r in plan.runs)
    if differ(plan.totals.gpu_hours, gpu_hours, TOTAL_TOL):
        errs.append(f"totals: {plan.totals.gpu_hours:,.4f} GPU-hours stated, {gpu_hours:,.4f} recomputed")
    for u in plan.totals.pools:
        pool = next((p for p in campaign.pools if p.id == u.pool), None)
        if pool is None:
            errs.append(f"totals: unknown pool {u.pool!r}")
            continue
        errs += _pool_use(u, pool, plan, makespan, deadline)
        if pool.kind == "purchase":
            if u.nodes_bought > pool.nodes:
                errs.append(f"{pool.id}: {u.nodes_bought} nodes bought, at most {pool.nodes}")
            cost += u.nodes_bought * purchase_charge(pool, deadline)
    if differ(plan.totals.cost_usd, cost, TOTAL_TOL):
        errs.append(f"totals: cost ${plan.totals.cost_usd:,.2f} stated, ${cost:,.2f} recomputed")
    if differ(plan.totals.makespan_h, makespan, TOTAL_TOL):
        errs.append(f"totals: makespan {plan.totals.makespan_h:.2f} h stated, {makespan:.2f} h recomputed")
    budget = campaign.scenario.objective.budget_usd
    if budget is not None and cost > budget:
        errs.append(f"totals: cost ${cost:,.2f} is over the budget of ${budget:,.2f}")
    capex = campaign.scenario.objective.capex_usd
    if capex is not None:
        pools = {p.id: p for p in campaign.pools}
        spent = sum(u.nodes_bought * pools[u.pool].purchase_usd_per_node for u in plan.totals.pools if u.pool in pools)
        if spent > capex:
            errs.append(f"totals: purchases of ${spent:,.2f} exceed the capital budget of ${capex:,.2f}")
    return errs


def _pool_use(u: PoolUse, pool: PoolSpec, plan: Plan, makespan: float, deadline: float | None) -> list[str]:
    """One pool's line of the totals, recomputed from the runs."""
    errs: list[str] = []
    if pool.kind != "purchase" and u.nodes_bought:
        errs.append(f"{pool.id}: {u.nodes_bought} nodes bought from a pool that sells none")
    used = sum(r.hours * r.gpu_count for r in plan.runs if r.pool == pool.id)
    nodes = u.nodes_bought if pool.kind == "purchase" else pool.nodes
    available = nodes * pool.gpus_per_node * makespan
    purchase = u.nodes_bought * purchase_charge(pool, deadline)  # owned and cloud pools sell nothing: 0
    for what, stated, value in (
        ("GPU-hours used", u.gpu_hours_used, used),
        ("GPU-hours available", u.gpu_hours_available, available),
        ("utilisation", u.utilisation, used / available if available else 0.0),
        ("purchase USD", u.purchase_usd, purchase),
    ):
        if differ(stated, value, TOTAL_TOL):
            errs.append(f"{pool.id}: {what} {stated:,.4f} stated, {value:,.4f} recomputed")
    return errs
