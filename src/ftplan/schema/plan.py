"""Plan files: what runs where and when, with layouts, memory, speed and cost (YAML or JSON)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ftplan.schema.types import Bool, Float, Int


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanLayout(_Strict):
    dp: Int = Field(gt=0)
    tp: Int = Field(gt=0)
    zero: Int = Field(ge=0, le=3)
    offload: str
    recompute: str
    micro_batch: Int = Field(gt=0)
    grad_accum: Int = Field(gt=0)
    optimizer: str
    precision: str
    pp: Int = Field(1, gt=0, description="pipeline stages (the layers cut into pp stages)")
    dp_shard: Int = Field(0, ge=0, description="HSDP: data-parallel ranks a ZeRO-2/3 shard group spans (0: all)")
    cp: Int = Field(1, gt=0, description="context parallelism: GPUs each sequence is split over (ring attention)")
    ep: Int = Field(1, gt=0, description="expert parallelism: GPUs a MoE layer's routed experts are split over")
    pp_schedule: Literal["1f1b", "gpipe"] = Field(
        "1f1b", description="the pipeline's schedule, over grad_accum micro-batches (the planner runs 1f1b)"
    )


class PlanMemoryPolicy(_Strict):
    """The headroom policy a run was planned under (one of the two)."""

    memory_confidence: Float | None = Field(None, gt=0, lt=1, description="the peak's quantile that fits the card")
    memory_margin: float | str | None = Field(None, description="memory left free: a fraction of the card or an amount")


class PlanRun(_Strict):
    run: str = Field(description="run id (job id, or job id#k for a sweep)")
    job: str
    pool: str
    nodes: list[str] = Field(description="node (or instance) ids")
    gpus: dict[str, list[Int]] = Field(description="GPU indices used on each node")
    gpu_count: Int = Field(gt=0)
    start_h: Float = Field(ge=0)
    end_h: Float = Field(ge=0)
    layout: PlanLayout
    memory_per_gpu_bytes: Int = Field(description="estimated device total per GPU (bytes)")
    headroom_bytes: int
    memory_policy: PlanMemoryPolicy = Field(description="the headroom policy the run was planned under")
    memory_required_bytes: Int = Field(description="device memory per GPU the policy asks for (bytes)")
    memory_band_bytes: list[Int] = Field(min_length=2, max_length=2, description="the estimate's 90% band (bytes)")
    fit_probability: Float = Field(ge=0, le=1, description="share of the band's published runs that would fit")
    tokens_per_s: float
    hours: Float = Field(description="training hours (the interval may be longer: whole minutes)")
    usd: Float = Field(description="what the run costs on its pool (USD)")
    state: Literal["planned", "done"] = Field(
        "planned", description="done: a part that ran before a re-plan's 'now' (a fact, not recomputed)"
    )
    work: Float = Field(1.0, ge=0, le=1, description="share of the job's training this part does (1: all of it)")


class PoolUse(_Strict):
    pool: str
    gpu_hours_used: float
    gpu_hours_available: Float = Field(description="GPUs × makespan for owned/bought nodes; quota × makespan for cloud")
    utilisation: float
    nodes_bought: Int = 0
    purchase_usd: Float = 0.0


class PlanTotals(_Strict):
    cost_usd: float
    makespan_h: float
    gpu_hours: float
    pools: list[PoolUse]


class PlanSolver(_Strict):
    status: Literal["OPTIMAL", "FEASIBLE"]
    objective: str
    objective_value: Float = Field(description="USD (cost) or hours (time)")
    bound: Float = Field(description="best bound, same unit")
    lp_bound: Float | None = Field(
        None, description="the linear relaxation's bound on the objective (ftplan.solver.bound), same unit"
    )
    gap: float
    wall_s: float
    seed: int
    workers: int
    ortools_version: str
    greedy_cost_usd: Float | None = None
    greedy_makespan_h: Float | None = None
    stopped_early: Bool = False
    source: Literal["cp-sat", "greedy", "lns"] = Field(
        "cp-sat",
        description="where the plan came from: CP-SAT, the greedy warm start when CP-SAT had none as good, or the "
        "neighbourhood search from the better of them (large campaigns)",
    )
    then: Literal["cost", "time"] | None = Field(None, description="second objective (lexicographic)")
    then_status: Literal["OPTIMAL", "FEASIBLE", "NOT RUN"] | None = None
    then_value: Float | None = Field(None, description="the second objective's value: USD (cost) or hours (time)")
    then_bound: Float | None = Field(None, description="its best bound, same unit")
    then_gap: Float | None = None


class PlanTiming(_Strict):
    """How sure the plan's times are (ftplan.timing.deadlines)."""

    time_confidence: Float | None = Field(
        None, gt=0, lt=1, description="durations planned at this quantile of the time model's error (None: estimates)"
    )
    deadline_probability: Float | None = Field(
        None, ge=0, le=1, description="the chance every deadline holds (Monte Carlo); None without deadlines"
    )
    makespan_p50_h: Float = Field(ge=0, description="the makespan's median over the draws (hours)")
    makespan_p90_h: Float = Field(ge=0, description="the makespan's 90th percentile over the draws (hours)")
    draws: Int = Field(gt=0)
    seed: Int = Field(ge=0)


class PlanReplan(_Strict):
    """A plan made while its campaign runs (``ftplan replan``): what it was built from."""

    now_h: Float = Field(ge=0, description="the time the campaign stood at (hours since the first plan's start)")
    previous: str = Field(description="the plan it replaced (file name)")
    nodes_lost: list[str] = Field(default_factory=list, description="nodes unusable from now_h")
    migrate: Bool = Field(False, description="runs in progress were allowed to move (restarting at a checkpoint)")


class Plan(_Strict):
    schema_version: Literal[1] = 1
    scenario: str = Field(description="scenario name or file")
    replan: PlanReplan | None = Field(None, description="set on a plan made by ftplan replan")
    runs: list[PlanRun]
    totals: PlanTotals
    solver: PlanSolver
    timing: PlanTiming
