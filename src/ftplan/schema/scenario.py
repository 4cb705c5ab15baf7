"""Scenario files: the jobs of a campaign, the GPU inventory, the objective and solver options."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ftplan.memory.setup import Optimizer, Recompute
from ftplan.schema.job import JobSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Allow(_Strict):
    """Choices the solver may make for a job; empty means any that is valid."""

    optimizers: list[Optimizer] = Field(default_factory=list, description="optimizer variants to consider")
    recompute: list[Recompute] = Field(default_factory=list, description="recomputation modes to consider")
    zero: list[int] = Field(default_factory=list, description="ZeRO stages to consider (0-3)")
    offload: bool = Field(True, description="whether CPU offload may be used")
    max_gpus: int | None = Field(None, gt=0, description="most GPUs one run may use")


class ScenarioJob(JobSpec):
    """A job of the campaign: a job file's fields plus identity, size, timing and choices."""

    id: str = Field(min_length=1, description="unique job id")
    count: int = Field(1, ge=1, description="identical runs of this job (a sweep)")
    deadline_h: float | None = Field(None, gt=0, description="hours from the campaign start by which it must end")
    depends_on: list[str] = Field(default_factory=list, description="jobs that must end before this one starts")
    priority: int = Field(0, description="higher runs first in the greedy warm start")
    allow: Allow = Field(default_factory=Allow)

    @model_validator(mode="after")
    def _solver_chooses_layout(self) -> ScenarioJob:
        chosen = {"layout", "gpu", "gpus_per_node", "micro_batch", "grad_accum"} & self.model_fields_set
        if chosen:
            raise ValueError(
                f"{', '.join(sorted(chosen))}: the planner chooses these; remove them "
                "(restrict choices with `allow:` or per pool instead)"
            )
        if self.tokens is None and self.samples is None:
            raise ValueError("tokens or samples is required (how much data the job trains on)")
        if self.global_batch is None:
            raise ValueError("global_batch is required (sequences per optimizer step)")
        return self


class OwnedPool(_Strict):
    id: str = Field(min_length=1)
    kind: Literal["owned"]
    gpu: str = Field(description="catalog GPU id or alias")
    gpus_per_node: int | None = Field(None, gt=0, description="GPUs per node (default: the GPU's usual server)")
    nodes: int = Field(gt=0, description="nodes owned")
    usd_per_node_h: float = Field(0.0, ge=0, description="running cost per node-hour (power, hosting), USD")
    network_gbps: float | None = Field(None, gt=0, description="network per node (Gbps); empty: jobs stay in a node")
    efficiency: float | None = Field(None, gt=0, le=1, description="fraction of dense peak achieved (default: catalog)")


class CloudPool(_Strict):
    id: str = Field(min_length=1)
    kind: Literal["cloud"]
    instance: str = Field(description="catalog instance CLOUD/TYPE")
    pricing: Literal["on-demand", "spot"] = "on-demand"
    quota_nodes: int = Field(gt=0, description="most instances running at once")
    efficiency: float | None = Field(None, gt=0, le=1, description="fraction of dense peak achieved (default: catalog)")


class PurchasePool(_Strict):
    id: str = Field(min_length=1)
    kind: Literal["purchase"]
    gpu: str = Field(description="catalog GPU id or alias")
    gpus_per_node: int | None = Field(None, gt=0)
    usd_per_node: float | None = Field(None, gt=0, description="purchase price per node (default: catalog GPU price)")
    max_nodes: int = Field(gt=0, description="most nodes that may be bought")
    amortisation_h: float | None = Field(
        None, gt=0, description="hours over which the price is spread; empty: the campaign pays it whole"
    )
    usd_per_node_h: float = Field(0.0, ge=0, description="running cost per node-hour once bought, USD")
    resale_fraction: float = Field(0.0, ge=0, lt=1, description="share of the price recovered by reselling")
    network_gbps: float | None = Field(None, gt=0)
    efficiency: float | None = Field(None, gt=0, le=1, description="fraction of dense peak achieved (default: catalog)")


Pool = OwnedPool | CloudPool | PurchasePool


class Objective(_Strict):
    minimise: Literal["cost", "time"] = Field("cost", description="cost (USD) or time (makespan)")
    then: Literal["cost", "time"] | None = Field(None, description="second objective (lexicographic)")
    deadline_h: float | None = Field(None, gt=0, description="every job ends by this many hours")
    budget_usd: float | None = Field(None, gt=0, description="the campaign costs at most this")
    capex_usd: float | None = Field(None, gt=0, description="purchases (list price) cost at most this")


class SolverOptions(_Strict):
    time_limit_s: float = Field(30.0, gt=0, description="wall-clock limit per solve (s)")
    relative_gap: float = Field(0.0, ge=0, lt=1, description="stop when within this gap of the bound")
    seed: int = Field(0, ge=0)
    workers: int = Field(1, ge=1, description="CP-SAT workers (1 is deterministic)")


class Scenario(_Strict):
    """A campaign: jobs, inventory pools, objective and solver options."""

    schema_version: Literal[1] = 1
    name: str = ""
    jobs: list[ScenarioJob] = Field(min_length=1)
    pools: list[Pool] = Field(min_length=1)  # type: ignore[valid-type]
    objective: Objective = Field(default_factory=Objective)
    solver: SolverOptions = Field(default_factory=SolverOptions)

    @model_validator(mode="after")
    def _ids(self) -> Scenario:
        for what, ids in (("jobs", [j.id for j in self.jobs]), ("pools", [p.id for p in self.pools])):
            seen: set[str] = set()
            for i in ids:
                if i in seen:
                    raise ValueError(f"{what}: id {i!r} appears twice; ids must be unique")
                seen.add(i)
        return self


def scenario_json_schema() -> dict[str, Any]:
    """JSON Schema of scenario files, for editors."""
    return Scenario.model_json_schema()
