"""Plan files: what runs where and when, with layouts, memory, speed and cost (YAML or JSON)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanLayout(_Strict):
    dp: int = Field(gt=0)
    tp: int = Field(gt=0)
    zero: int = Field(ge=0, le=3)
    offload: str
    recompute: str
    micro_batch: int = Field(gt=0)
    grad_accum: int = Field(gt=0)
    optimizer: str
    precision: str


class PlanRun(_Strict):
    run: str = Field(description="run id (job id, or job id#k for a sweep)")
    job: str
    pool: str
    nodes: list[str] = Field(description="node (or instance) ids")
    gpus: dict[str, list[int]] = Field(description="GPU indices used on each node")
    gpu_count: int = Field(gt=0)
    start_h: float = Field(ge=0)
    end_h: float = Field(ge=0)
    layout: PlanLayout
    memory_per_gpu_bytes: int = Field(description="estimated device total per GPU (bytes)")
    headroom_bytes: int
    tokens_per_s: float
    hours: float = Field(description="training hours (the interval may be longer: whole minutes)")
    usd: float = Field(description="what the run costs on its pool (USD)")


class PoolUse(_Strict):
    pool: str
    gpu_hours_used: float
    gpu_hours_available: float = Field(description="GPUs × makespan for owned/bought nodes; quota × makespan for cloud")
    utilisation: float
    nodes_bought: int = 0
    purchase_usd: float = 0.0


class PlanTotals(_Strict):
    cost_usd: float
    makespan_h: float
    gpu_hours: float
    pools: list[PoolUse]


class PlanSolver(_Strict):
    status: Literal["OPTIMAL", "FEASIBLE"]
    objective: str
    objective_value: float = Field(description="USD (cost) or hours (time)")
    bound: float = Field(description="best bound, same unit")
    gap: float
    wall_s: float
    seed: int
    workers: int
    ortools_version: str
    greedy_cost_usd: float | None = None
    greedy_makespan_h: float | None = None
    stopped_early: bool = False


class Plan(_Strict):
    schema_version: Literal[1] = 1
    scenario: str = Field(description="scenario name or file")
    runs: list[PlanRun]
    totals: PlanTotals
    solver: PlanSolver
