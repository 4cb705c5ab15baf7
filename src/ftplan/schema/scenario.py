"""Scenario files: the jobs of a campaign, the GPU inventory, the objective and solver options."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ftplan import limits as L
from ftplan.memory.setup import Optimizer, Recompute
from ftplan.schema.job import CONFIDENCE_HELP, MARGIN_HELP, JobSpec, check_margin
from ftplan.schema.types import Bool, Float, Identifier, Int


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Allow(_Strict):
    """Choices the solver may make for a job; empty means any that is valid."""

    optimizers: list[Optimizer] = Field(default_factory=list, description="optimizer variants to consider")
    recompute: list[Recompute] = Field(default_factory=list, description="recomputation modes to consider")
    zero: list[Annotated[Int, Field(ge=0, le=3)]] = Field(
        default_factory=list, description="ZeRO stages to consider (0-3)"
    )
    offload: Bool = Field(True, description="whether CPU offload may be used")
    max_gpus: Int | None = Field(None, gt=0, le=L.MAX_RUN_NODES * 64, description="most GPUs one run may use")


class ScenarioJob(JobSpec):
    """A job of the campaign: a job file's fields plus identity, size, timing and choices."""

    id: Identifier = Field(description="unique job id (no '#', which numbers a sweep's runs, no '/' or spaces)")
    count: Int = Field(1, ge=1, le=L.MAX_COUNT, description="identical runs of this job (a sweep)")
    deadline_h: Float | None = Field(
        None, gt=0, le=L.MAX_HOURS, description="hours from the campaign start by which it must end"
    )
    depends_on: list[str] = Field(default_factory=list, description="jobs that must end before this one starts")
    priority: Int = Field(0, description="higher runs first in the greedy warm start")
    allow: Allow = Field(default_factory=Allow)

    @model_validator(mode="after")
    def _solver_chooses_layout(self) -> ScenarioJob:
        chosen = {"layout", "gpu", "gpus_per_node", "micro_batch", "grad_accum"} & self.model_fields_set
        if chosen:
            raise ValueError(
                f"{', '.join(sorted(chosen))}: the planner chooses these; remove them "
                "(restrict choices with `allow:` or per pool instead)"
            )
        if "host_memory_gib" in self.model_fields_set:
            raise ValueError("host_memory_gib: in a scenario a node's RAM belongs to its pool; set it there")
        if self.tokens is None and self.samples is None:
            raise ValueError("tokens or samples is required (how much data the job trains on)")
        if self.global_batch is None:
            raise ValueError("global_batch is required (sequences per optimizer step)")
        return self


_BUSBW_DESCRIPTION = "measured all-reduce bus bandwidth across nodes (GB/s, nccl-tests, all of each node's GPUs)"


class _Networked(_Strict):
    """A pool whose nodes the scenario describes: their network, and what nccl-tests measured over it."""

    network_gbps: Float | None = Field(None, gt=0, description="network per node (Gbps); empty: jobs stay in a node")
    allreduce_busbw_gbs: Float | None = Field(None, gt=0, le=L.MAX_BUSBW_GBS, description=_BUSBW_DESCRIPTION)

    @model_validator(mode="after")
    def _measured_over_a_network(self) -> _Networked:
        if self.allreduce_busbw_gbs is not None and self.network_gbps is None:
            raise ValueError(
                "allreduce_busbw_gbs is measured across nodes, and runs cross nodes only over a network: "
                "give network_gbps too, or drop allreduce_busbw_gbs"
            )
        return self


class OwnedPool(_Networked):
    id: Identifier = Field(description="unique pool id (no '/', '#' or spaces)")
    kind: Literal["owned"]
    gpu: str = Field(description="catalog GPU id or alias")
    gpus_per_node: Int | None = Field(None, gt=0, le=64, description="GPUs per node (default: the GPU's usual server)")
    nodes: Int = Field(gt=0, le=L.MAX_POOL_NODES, description="nodes owned")
    usd_per_node_h: Float = Field(
        0.0, ge=0, le=L.MAX_USD_PER_HOUR, description="running cost per node-hour (power, hosting), USD"
    )
    efficiency: Float | None = Field(
        None, gt=0, le=1, description="large GEMMs' fraction of dense peak (default: catalog)"
    )
    host_memory_gib: Float | None = Field(
        None, gt=0, le=L.MAX_HOST_MEMORY_GIB, description="RAM per node (GiB), which offloaded states must fit in"
    )


class CloudPool(_Strict):
    id: Identifier = Field(description="unique pool id (no '/', '#' or spaces)")
    kind: Literal["cloud"]
    instance: str = Field(description="catalog instance CLOUD/TYPE")
    pricing: Literal["on-demand", "spot"] = "on-demand"
    quota_nodes: Int = Field(gt=0, le=L.MAX_POOL_NODES, description="most instances running at once")
    allreduce_busbw_gbs: Float | None = Field(None, gt=0, le=L.MAX_BUSBW_GBS, description=_BUSBW_DESCRIPTION)
    efficiency: Float | None = Field(
        None, gt=0, le=1, description="large GEMMs' fraction of dense peak (default: catalog)"
    )


class PurchasePool(_Networked):
    id: Identifier = Field(description="unique pool id (no '/', '#' or spaces)")
    kind: Literal["purchase"]
    gpu: str = Field(description="catalog GPU id or alias")
    gpus_per_node: Int | None = Field(None, gt=0, le=64)
    usd_per_node: Float | None = Field(
        None, gt=0, le=L.MAX_USD, description="purchase price per node (default: catalog GPU price)"
    )
    max_nodes: Int = Field(gt=0, le=L.MAX_POOL_NODES, description="most nodes that may be bought")
    amortisation_h: Float | None = Field(
        None,
        gt=0,
        le=L.MAX_HOURS,
        description="hours over which the price is spread; empty: the campaign pays it whole",
    )
    usd_per_node_h: Float = Field(
        0.0, ge=0, le=L.MAX_USD_PER_HOUR, description="running cost per node-hour once bought, USD"
    )
    resale_fraction: Float = Field(0.0, ge=0, lt=1, description="share of the price recovered by reselling")
    efficiency: Float | None = Field(
        None, gt=0, le=1, description="large GEMMs' fraction of dense peak (default: catalog)"
    )
    host_memory_gib: Float | None = Field(
        None, gt=0, le=L.MAX_HOST_MEMORY_GIB, description="RAM per node (GiB), which offloaded states must fit in"
    )


Pool = Annotated[OwnedPool | CloudPool | PurchasePool, Field(discriminator="kind")]


class Objective(_Strict):
    minimise: Literal["cost", "time"] = Field("cost", description="cost (USD) or time (makespan)")
    then: Literal["cost", "time"] | None = Field(None, description="second objective (lexicographic)")
    deadline_h: Float | None = Field(None, gt=0, le=L.MAX_HOURS, description="every job ends by this many hours")
    budget_usd: Float | None = Field(None, gt=0, le=L.MAX_USD, description="the campaign costs at most this")
    capex_usd: Float | None = Field(None, gt=0, le=L.MAX_USD, description="purchases (list price) cost at most this")
    time_confidence: Float | None = Field(
        None, gt=0, lt=1,
        description="plan every run at this quantile of its duration (the time model's error on published runs)",
    )  # fmt: skip


class SolverOptions(_Strict):
    time_limit_s: Float = Field(30.0, gt=0, le=L.MAX_TIME_LIMIT_S, description="wall-clock limit per solve (s)")
    relative_gap: Float = Field(0.0, ge=0, lt=1, description="stop when within this gap of the bound")
    seed: Int = Field(0, ge=0)
    workers: Int = Field(1, ge=1, le=256, description="CP-SAT workers (1 is deterministic)")


class Scenario(_Strict):
    """A campaign: jobs, inventory pools, objective and solver options."""

    schema_version: Literal[1] = 1
    name: str = ""
    jobs: list[ScenarioJob] = Field(min_length=1)
    pools: list[Pool] = Field(min_length=1)  # type: ignore[valid-type]
    objective: Objective = Field(default_factory=Objective)
    solver: SolverOptions = Field(default_factory=SolverOptions)
    memory_confidence: Float | None = Field(None, gt=0, lt=1, description=f"every job's default: {CONFIDENCE_HELP}")
    memory_margin: float | str | None = Field(None, description=f"every job's default: {MARGIN_HELP}")

    _margin = field_validator("memory_margin", mode="before")(check_margin)

    @model_validator(mode="after")
    def _ids(self) -> Scenario:
        if self.memory_confidence is not None and self.memory_margin is not None:
            raise ValueError("memory_confidence and memory_margin both given; keep one of them")
        runs = sum(j.count for j in self.jobs)
        if runs > L.MAX_RUNS:
            raise ValueError(
                f"{runs:,} runs (jobs × count); ftplan plans at most {L.MAX_RUNS:,} (see Limits in the README)"
            )
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
