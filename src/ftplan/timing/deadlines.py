"""Deadlines you can trust: run durations at a quantile of the time model's error, and the chance a plan's
deadlines hold.

The time model's signed errors on published runs (``catalogs/error_bands.yaml``, ``time``) say how far a real
run's duration strays from the estimate: ``true = estimate × (1 + e)``. Planning at ``time_confidence`` P
stretches every run to its regime's P-quantile (:func:`duration_factor`). Whatever the plan was made at, the
chance its deadlines hold is estimated by Monte Carlo (:func:`deadline_odds`): each draw takes one error per
regime (runs of a regime share the model's bias, so their errors are drawn together), replays the plan in its
order — a run starts at its planned time, or later when a run before it on the same GPUs or a run it depends
on ends late — and checks every deadline. Seeded, so the same plan gives the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ftplan.bands import time_band

if TYPE_CHECKING:
    from ftplan.memory.setup import Training
    from ftplan.scenario import Campaign
    from ftplan.schema.plan import PlanRun

DRAWS = 2000  # Monte Carlo draws; the chance's standard error is at most 1.1 points


def duration_factor(training: Training, pp: int, nodes: int, confidence: float | None, moe: bool) -> float:
    """What an estimated duration is multiplied by to plan at ``confidence`` (1 without one; ``moe``: a MoE
    model's job)."""
    if confidence is None:
        return 1.0
    return time_band(training, pp, nodes, moe).value(1.0, confidence)


@dataclass(frozen=True)
class DeadlineOdds:
    """The Monte Carlo's answer: the chance every deadline holds (None without deadlines) and the makespan's
    median and 90th percentile, over ``draws`` draws seeded with ``seed``."""

    probability: float | None
    makespan_p50_h: float
    makespan_p90_h: float
    draws: int
    seed: int


def deadline_odds(campaign: Campaign, runs: list[PlanRun], confidence: float | None, seed: int,
                  draws: int = DRAWS) -> DeadlineOdds:  # fmt: skip
    """The chance ``runs`` (a plan's) meet the campaign's and the jobs' deadlines, their durations drawn from the
    time model's error on published runs (see the module docstring)."""
    rng = np.random.default_rng(seed)
    by_id = {r.id: r for r in campaign.runs}
    ordered = sorted(runs, key=lambda r: (r.start_h, r.run))
    regimes: dict[tuple[str, ...], np.ndarray] = {}
    ends: dict[str, np.ndarray] = {}
    slot_free: dict[tuple[str, int], np.ndarray] = {}
    deadline_ok = np.ones(draws, dtype=bool)
    any_deadline = False
    campaign_deadline = campaign.scenario.objective.deadline_h
    for r in ordered:
        job = by_id[r.run].job
        nodes = len(r.nodes)
        band = time_band(job.training, r.layout.pp, nodes, job.arch.is_moe)
        key = band.regime  # (runs that share a band share its bias)
        if key not in regimes:
            regimes[key] = np.asarray(band.errors)[rng.integers(0, band.n, size=draws)]
        # the model's hours (spot's restarts included, as planned), without the planning quantile; a part that
        # ran (a re-plan's fact) took what it took
        planned = r.hours / duration_factor(job.training, r.layout.pp, nodes, confidence, job.arch.is_moe)
        duration = planned * (1 + regimes[key]) if r.state == "planned" else np.full(draws, r.end_h - r.start_h)
        start = np.full(draws, r.start_h)
        for dep in by_id[r.run].depends_on:
            if dep in ends:
                start = np.maximum(start, ends[dep])
        slots = [(node, gpu) for node, gpus in r.gpus.items() for gpu in gpus]
        for slot in slots:
            if slot in slot_free:
                start = np.maximum(start, slot_free[slot])
        end = start + duration
        ends[r.run] = end
        for slot in slots:
            slot_free[slot] = end
        for deadline in (by_id[r.run].deadline_h, campaign_deadline):
            if deadline is not None:
                any_deadline = True
                deadline_ok &= end <= deadline + 1e-9
    makespan = np.max(np.stack(list(ends.values())), axis=0) if ends else np.zeros(draws)
    return DeadlineOdds(
        probability=float(deadline_ok.mean()) if any_deadline else None,
        makespan_p50_h=float(np.quantile(makespan, 0.5)),
        makespan_p90_h=float(np.quantile(makespan, 0.9)),
        draws=draws,
        seed=seed,
    )
