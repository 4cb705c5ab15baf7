"""The library's short face: what each command answers, as one call with a typed result.

Every function takes a file path or the same fields as a mapping, raises :class:`FtplanError` with
the command line's one-line message on bad input, and returns what the command prints::

    import ftplan

    est = ftplan.memory("scenarios/jobs/llama-8b-lora-h100.yaml")       # MemoryEstimate
    best = ftplan.fit({...job fields...}, gpus=["h100"]).ranked("time")  # pandas DataFrame
    plan = ftplan.plan("scenarios/quickstart.yaml")                      # Plan (verified)
    assert ftplan.check("scenarios/quickstart.yaml", plan) == []         # violations, if any
    new = ftplan.replan("scenarios/quickstart.yaml", plan, {"now_h": 1.0})  # Replanned: .plan, .changes

The building blocks (``resolve_job``, ``fit_job``, ``resolve_scenario``, ``solve_campaign``,
``build_plan``, ``verify_plan``) stay importable for finer control; these calls compose them exactly
as the commands do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ftplan.bands import HeadroomPolicy, MemoryVerdict
from ftplan.candidates import build_candidates
from ftplan.catalog import Catalog, load_catalog
from ftplan.errors import FtplanError
from ftplan.fit import FitResult, fit_job, gpu_pool, instance_pool, rank
from ftplan.io import validate_mapping
from ftplan.job import ResolvedJob, estimate_job, memory_verdict, resolve_job
from ftplan.memory import MemoryEstimate
from ftplan.plan import load_plan, verified_plan
from ftplan.replan import Replanned, StatusError, load_status, replan_campaign
from ftplan.scenario import Campaign, ScenarioError, load_scenario, resolve_scenario
from ftplan.schema.job import load_job, parse_job
from ftplan.schema.plan import Plan
from ftplan.schema.scenario import Scenario
from ftplan.schema.status import CampaignStatus
from ftplan.solver import Progress, solve_campaign
from ftplan.verify import verify_plan

JobInput = str | Path | Mapping[str, Any]
ScenarioInput = str | Path | Mapping[str, Any] | Scenario


def job(source: JobInput, catalog: Catalog | None = None) -> ResolvedJob:
    """A job file (or its fields as a mapping) resolved against the catalogs."""
    catalog = catalog or load_catalog()
    if isinstance(source, Mapping):
        return resolve_job(parse_job(dict(source), "job"), catalog, "job")
    return resolve_job(load_job(Path(source)), catalog, str(source))


def memory(source: JobInput, catalog: Catalog | None = None) -> MemoryEstimate:
    """`ftplan memory`: the per-GPU memory of one job and layout, term by term, and whether it fits."""
    return estimate_job(job(source, catalog))


def memory_band(
    source: JobInput, catalog: Catalog | None = None, policy: HeadroomPolicy | None = None
) -> MemoryVerdict:
    """`ftplan memory`'s band and verdict: the device total's error band (``.band``, ``.band_text()``), the
    memory ``policy`` (else the job's, else the default) asks for, whether that fits and the chance it fits."""
    resolved = job(source, catalog)
    return memory_verdict(resolved, estimate_job(resolved), policy)


@dataclass(frozen=True)
class Fit:
    """`ftplan fit`: every layout that fits (``result.layouts``), and why the others do not."""

    result: FitResult

    def ranked(self, by: str = "time", top: int = 10) -> pd.DataFrame:
        """The ``top`` layouts by ``time`` (hours, then cost) or ``cost`` (dollars, then hours)."""
        if by not in ("time", "cost"):
            raise FtplanError(f"by must be time or cost, got {by!r}.")
        if top < 1:
            raise FtplanError(f"top must be ≥ 1, got {top}.")
        return rank(self.result, by, top)

    @property
    def excluded(self) -> list[str]:
        return self.result.excluded


def fit(
    source: JobInput,
    gpus: Sequence[str] = (),
    instances: Sequence[str] = (),
    nodes: int = 1,
    spot: bool = False,
    catalog: Catalog | None = None,
    host_memory_gib: float | None = None,
    policy: HeadroomPolicy | None = None,
) -> Fit:
    """`ftplan fit`: the layouts of one job on GPU types (one node each, ``host_memory_gib`` of RAM
    where given) or cloud instances that fit under the headroom ``policy`` (else the job's, else the default)."""
    catalog = catalog or load_catalog()
    resolved = job(source, catalog)
    pools = [gpu_pool(catalog, g, host_memory_gib=host_memory_gib) for g in gpus]
    pools += [instance_pool(catalog, i, nodes, spot) for i in instances]
    if not pools:
        if resolved.gpu is None:
            raise FtplanError("no pool to fit on. To fix: give gpus=[...] or instances=[...] (or gpu: in the job).")
        pools = [gpu_pool(catalog, resolved.gpu.id, host_memory_gib=host_memory_gib)]
    return Fit(fit_job(resolved, pools, policy=policy))


def campaign(
    source: ScenarioInput,
    catalog: Catalog | None = None,
    policy: HeadroomPolicy | None = None,
    time_confidence: float | None = None,
) -> Campaign:
    """A scenario file (or mapping, or :class:`Scenario`) resolved: runs, pools and options; ``policy``
    overrides every job's headroom policy (as ``--memory-confidence``/``--memory-margin`` do), ``time_confidence``
    the scenario's (``--time-confidence``)."""
    catalog = catalog or load_catalog()
    if isinstance(source, Scenario):
        return resolve_scenario(source, catalog, source.name or "scenario", policy, time_confidence)
    if isinstance(source, Mapping):
        sc = validate_mapping(dict(source), Scenario, "scenario", ScenarioError, "jobs, pools, objective and solver")
        return resolve_scenario(sc, catalog, sc.name or "scenario", policy, time_confidence)
    return resolve_scenario(load_scenario(Path(source)), catalog, str(source), policy, time_confidence)


def plan(
    source: ScenarioInput,
    catalog: Catalog | None = None,
    progress: Callable[[Progress], None] | None = None,
    status: Callable[[str], None] | None = None,
    policy: HeadroomPolicy | None = None,
    time_confidence: float | None = None,
) -> Plan:
    """`ftplan plan`: a layout, pool, nodes, GPUs and start time for every run, verified."""
    c = campaign(source, catalog, policy, time_confidence)
    table = build_candidates(c, status=status)
    return verified_plan(c, solve_campaign(c, table, progress=progress, phases=status))


def check(
    source: ScenarioInput,
    plan_source: Plan | str | Path,
    catalog: Catalog | None = None,
    policy: HeadroomPolicy | None = None,
    time_confidence: float | None = None,
) -> list[str]:
    """`ftplan check`: every rule the plan breaks (an empty list for a valid plan); every run must fit under
    the scenario's headroom policy (or ``policy``) as well as under the one it records, and durations be planned
    at least at the scenario's time confidence (or ``time_confidence``)."""
    p = plan_source if isinstance(plan_source, Plan) else load_plan(Path(plan_source))
    return verify_plan(campaign(source, catalog, policy, time_confidence), p)


def replan(
    source: ScenarioInput,
    plan_source: Plan | str | Path,
    status_source: CampaignStatus | Mapping[str, Any] | str | Path,
    allow_migrate: bool = False,
    catalog: Catalog | None = None,
    progress: Callable[[Progress], None] | None = None,
    status: Callable[[str], None] | None = None,
    policy: HeadroomPolicy | None = None,
    time_confidence: float | None = None,
) -> Replanned:
    """`ftplan replan`: what is left of a campaign under way planned from the status's ``now_h`` (finished runs
    kept as facts, runs in progress where they are unless ``allow_migrate``, lost nodes avoided), verified,
    with the changes against the previous plan and what was assumed; under the headroom ``policy`` and
    ``time_confidence`` where given (else the scenario's), as `plan` takes them."""
    p = plan_source if isinstance(plan_source, Plan) else load_plan(Path(plan_source))
    if isinstance(status_source, CampaignStatus):
        st, name = status_source, "status"
    elif isinstance(status_source, Mapping):
        st = validate_mapping(dict(status_source), CampaignStatus, "status", StatusError, "now_h, runs and nodes_lost")
        name = "status"
    else:
        st, name = load_status(Path(status_source)), str(status_source)
    previous = Path(plan_source).name if not isinstance(plan_source, Plan) else "plan"
    c = campaign(source, catalog, policy, time_confidence)
    return replan_campaign(c, p, st, previous, name, allow_migrate, progress, status)


def export(
    source: ScenarioInput,
    plan_source: Plan | str | Path,
    to: str,
    out_dir: str | Path,
    time_margin: float | None = None,
    catalog: Catalog | None = None,
) -> list[Path]:
    """`ftplan export`: the plan (verified first) as ``to``'s files under ``out_dir``; the paths written."""
    from ftplan.export import export_plan

    catalog = catalog or load_catalog()
    p = plan_source if isinstance(plan_source, Plan) else load_plan(Path(plan_source))
    return export_plan(campaign(source, catalog), p, to, Path(out_dir), time_margin, catalog)


__all__ = ["Fit", "campaign", "check", "export", "fit", "job", "memory", "memory_band", "plan", "replan"]
