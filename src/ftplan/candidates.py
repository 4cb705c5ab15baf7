"""Candidate layouts of each job on each pool: the table the solver chooses from.

For a job and a pool, ``ftplan fit``'s search gives every layout that fits (for each optimizer the
job allows); the job's ``allow:`` choices filter it; then, per GPU count, the fastest layout is
kept (for a fixed GPU count, GPU-hours and cost grow with the duration), and across GPU counts the
Pareto set of (duration, GPUs, cost): more GPUs only where they are faster or cheaper, since every
GPU a run holds is capacity (or a node to buy) that other runs cannot use. Durations become whole
minutes and costs whole money units here, in one place (``ftplan.units``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ftplan.fit import fit_job
from ftplan.job import ResolvedJob
from ftplan.scenario import Campaign, PoolSpec
from ftplan.schema.scenario import ScenarioJob
from ftplan.timing import model as tm
from ftplan.timing.deadlines import duration_factor
from ftplan.units import hours_to_minutes, usd_to_units


@dataclass(frozen=True)
class Candidate:
    """One way to run a job: a pool, a GPU count and a layout, with its duration and cost."""

    job_id: str
    pool_id: str
    gpus: int
    nodes: int  # nodes spanned (1 for a job inside one node)
    whole_nodes: bool  # a multi-node job takes its nodes whole
    dp: int
    tp: int
    pp: int
    zero: int
    dp_shard: int  # HSDP shard group (0: all of dp)
    cp: int  # context-parallel degree
    ep: int  # expert-parallel degree
    offload: str
    recompute: str
    micro_batch: int
    grad_accum: int
    optimizer: str
    device_bytes: int
    headroom_bytes: int
    required_bytes: int  # the device memory its job's headroom policy asks the GPU to hold
    band_bytes: tuple[int, int]  # the device memory's 90% band
    fit_probability: float  # share of the band's published runs whose error would still fit
    tokens_per_s: float
    hours: float
    usd: float
    minutes: int
    cost_units: int  # cost in the solver's money units (ftplan.units)

    @property
    def gpu_hours(self) -> float:
        return self.hours * self.gpus

    def demand_per_node(self, gpus_per_node: int) -> int:
        """GPUs it takes on each node it is placed on: all of them for a multi-node layout."""
        return gpus_per_node if self.whole_nodes else self.gpus


@dataclass
class CandidateTable:
    by_job: dict[str, list[Candidate]]
    excluded: dict[str, list[str]]  # job id → why pools or families were excluded
    closest: dict[str, str]  # job id → the nearest miss when nothing fits


def run_cost_usd(pool: PoolSpec, gpus: int, hours: float) -> float:
    """What one run costs on a pool: cloud instances are paid whole; owned and bought nodes by share."""
    per = pool.gpus_per_node
    if pool.kind == "cloud":
        return hours * -(-gpus // per) * pool.usd_per_node_h
    return hours * pool.usd_per_node_h * gpus / per


def _pareto(frame: pd.DataFrame) -> pd.DataFrame:
    keep = []
    rows = frame[["hours", "gpus", "usd_run"]].to_numpy()
    for i, r in enumerate(rows):
        dominated = ((rows <= r).all(axis=1) & (rows < r).any(axis=1)).any()
        if not dominated:
            keep.append(i)
    return frame.iloc[keep]


def build_candidates(
    campaign: Campaign, max_per_pool: int = 6, status: Callable[[str], None] | None = None
) -> CandidateTable:
    """Candidates of every job of the campaign on every pool (see module docstring); ``status``
    hears which job is being searched."""
    by_job: dict[str, list[Candidate]] = {}
    excluded: dict[str, list[str]] = {}
    closest: dict[str, str] = {}
    # jobs that differ only in how much they train on share one search: their layouts, memory and step times
    # are the same, and their hours and costs scale with their optimizer steps
    memo: dict[str, tuple[list[Candidate], list[str], str, int]] = {}
    specs = {j.id: j for j in campaign.scenario.jobs}
    for n, (job_id, job) in enumerate(campaign.jobs.items(), 1):
        if status is not None:
            status(f"candidates: job {n:,} of {len(campaign.jobs):,} ({job_id})")
        spec = specs[job_id]
        key = spec.model_dump_json(exclude=_NOT_THE_SEARCH)
        if key not in memo:
            memo[key] = (*_search(campaign, job, spec, max_per_pool), _steps(job))
        cands, why, near, steps = memo[key]
        by_job[job_id] = [_scaled(c, job_id, _steps(job) / steps) for c in cands]
        excluded[job_id] = list(why)
        if near:
            closest[job_id] = near
    return CandidateTable(by_job, excluded, closest)


# scenario job fields that do not change a job's layouts, memory or step time: its identity and schedule, and
# its size (which scales its hours)
_NOT_THE_SEARCH = {"id", "count", "deadline_h", "depends_on", "priority", "tokens", "samples", "epochs"}


def _steps(job: ResolvedJob) -> int:
    """Optimizer steps of the job (``fit``'s count: its tokens over the tokens of data a step takes)."""
    return math.ceil((job.tokens or 0) / tm.step_tokens(job.training, job.global_batch))


def _scaled(c: Candidate, job_id: str, factor: float) -> Candidate:
    """A candidate of a job the same as ``c``'s but ``factor`` times as many steps: hours and cost scale
    (a run is paid by the hour), its layout, memory and throughput do not."""
    if factor == 1.0:
        return c if c.job_id == job_id else replace(c, job_id=job_id)
    hours, usd = c.hours * factor, c.usd * factor
    return replace(c, job_id=job_id, hours=hours, usd=usd, minutes=hours_to_minutes(hours),
                   cost_units=usd_to_units(usd))  # fmt: skip


def run_candidates(campaign: Campaign, table: CandidateTable) -> dict[str, list[Candidate]]:
    """Each run's candidates: its job's, scaled to the share of the job the run has left (a campaign under
    way); a run in progress has its continuation in place first, then, when it may move, its job's scaled to
    what is left from its checkpoint."""
    h = campaign.history
    if h is None:
        return {r.id: table.by_job[r.job_id] for r in campaign.runs}
    out: dict[str, list[Candidate]] = {}
    for r in campaign.runs:
        stay: list[Candidate] = [h.pins[r.id][0]] if r.id in h.pins else []  # type: ignore[list-item]
        if stay and r.id not in h.movable:
            out[r.id] = stay
        else:
            out[r.id] = stay + [_scaled(c, r.job_id, h.work.get(r.id, 1.0)) for c in table.by_job[r.job_id]]
    return out


def _search(
    campaign: Campaign, job: ResolvedJob, spec: ScenarioJob, max_per_pool: int
) -> tuple[list[Candidate], list[str], str]:
    """Candidates of one job on every pool, why the rest were excluded, and the nearest miss."""
    allow = spec.allow
    excluded: list[str] = []
    closest = ""
    frames = []
    for opt in allow.optimizers or [job.training.optimizer]:
        variant = replace(job, training=replace(job.training, optimizer=opt))
        memo: dict = {}  # this job's memory estimates, shared by its pools of one GPU architecture
        for pool in campaign.pools:
            result = fit_job(variant, [pool.pool], policy=campaign.policy(spec.id), memo=memo)
            excluded.extend(result.excluded)
            closest = closest or result.closest
            frame = result.layouts
            if frame.empty:
                continue
            frame = frame.assign(optimizer=opt.value, pool_id=pool.id)
            frame["hours"] = frame["hours"] * pool.time_factor * _duration_factors(campaign, variant, frame)
            frame["gpu_hours"] = frame["hours"] * frame["gpus"]
            frame["usd_run"] = [run_cost_usd(pool, g, h) for g, h in zip(frame["gpus"], frame["hours"], strict=True)]
            frames.append(frame)
    if not frames:
        return [], excluded, closest
    frame = pd.concat(frames, ignore_index=True)
    if allow.recompute:
        frame = frame[frame["recompute"].isin([r.value for r in allow.recompute])]
    if allow.zero:
        frame = frame[frame["zero"].isin(allow.zero)]
    if not allow.offload:
        frame = frame[frame["offload"] == "none"]
    if allow.max_gpus:
        frame = frame[frame["gpus"] <= allow.max_gpus]
    # on equal time and cost prefer the simpler layout: less sharding, no offload, no recomputation
    frame = frame.assign(rec_rank=frame["recompute"].map({"none": 0, "selective": 1, "full": 2}))
    order = ["hours", "usd_run", "zero", "offload", "rec_rank", "tp", "device_bytes", "micro_batch", "optimizer"]
    cands: list[Candidate] = []
    for pool_id, group in frame.groupby("pool_id", sort=False):
        pool = next(p for p in campaign.pools if p.id == pool_id)
        fastest = group.sort_values(order, kind="mergesort").drop_duplicates("gpus")
        front = _pareto(fastest.reset_index(drop=True)).sort_values(["hours", "gpus"]).head(max_per_pool)
        cands += [_candidate(spec.id, pool, r) for r in front.itertuples()]
    return cands, excluded, closest


def _duration_factors(campaign: Campaign, job: ResolvedJob, frame: pd.DataFrame) -> np.ndarray:
    """Each row's duration at the campaign's ``time_confidence`` over the estimate (ones without one)."""
    if campaign.time_confidence is None:
        return np.ones(len(frame))
    keys = list(zip(frame["pp"].astype(int), frame["nodes"].astype(int), strict=True))
    factor = {
        k: duration_factor(job.training, k[0], k[1], campaign.time_confidence, job.arch.is_moe) for k in set(keys)
    }
    return np.array([factor[k] for k in keys], dtype=float)


def _candidate(job_id: str, pool: PoolSpec, r) -> Candidate:
    gpus = int(r.gpus)
    nodes = -(-gpus // pool.gpus_per_node)
    return Candidate(
        job_id=job_id, pool_id=pool.id, gpus=gpus, nodes=nodes, whole_nodes=gpus > pool.gpus_per_node,
        dp=int(r.dp), tp=int(r.tp), pp=int(r.pp), zero=int(r.zero),
        dp_shard=int(r.dp_shard), cp=int(r.cp), ep=int(r.ep), offload=str(r.offload), recompute=str(r.recompute),
        micro_batch=int(r.micro_batch), grad_accum=int(r.grad_accum), optimizer=str(r.optimizer),
        device_bytes=int(r.device_bytes), headroom_bytes=int(r.headroom_bytes), required_bytes=int(r.required_bytes),
        band_bytes=(round(r.band_low_bytes), round(r.band_high_bytes)), fit_probability=float(r.fit_probability),
        tokens_per_s=float(r.tokens_per_s),
        hours=float(r.hours), usd=float(r.usd_run), minutes=hours_to_minutes(float(r.hours)),
        cost_units=usd_to_units(float(r.usd_run)),
    )  # fmt: skip
