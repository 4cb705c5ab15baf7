"""What an export needs of each planned run: its layout, recipe, nodes, times and dependencies, resolved once.

Every value an exporter writes comes from here, and each carries the plan (or scenario) field it came
from, so a generated file can say where each of its fields came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ftplan.arch import Architecture
from ftplan.catalog import Catalog, load_catalog
from ftplan.errors import FtplanError
from ftplan.memory.params import split_params
from ftplan.scenario import Campaign
from ftplan.schema.plan import Plan, PlanRun
from ftplan.schema.scenario import CloudPool, ScenarioJob

MASTER_PORT = 29500  # torch.distributed's usual rendezvous port (torchrun --master-port default)


@dataclass(frozen=True)
class RunExport:
    """One planned run, as the exporters see it."""

    run: PlanRun
    job: ScenarioJob
    pool_kind: str  # owned | cloud | purchase
    gpus_per_node: int  # GPUs of each node the run uses (all of them for a multi-node run)
    depends_on: tuple[str, ...]  # run ids that must finish first
    lora_targets: tuple[str, ...] = ()  # the modules the memory model adapted (the job's, or its attention's)
    instance: str | None = None  # cloud: CLOUD/TYPE
    region: str | None = None  # cloud: the region the catalog priced it in
    spot: bool = False
    arch: Architecture | None = None  # the job's model (the buckets and buffers of a DeepSpeed config)
    trainable_params: int = 0  # parameters the job trains

    @property
    def id(self) -> str:
        return self.run.run

    @property
    def dirname(self) -> str:
        """The run's directory name (a sweep's ``#k`` becomes ``-k``)."""
        return self.id.replace("#", "-")

    @property
    def nodes(self) -> list[str]:
        return list(self.run.nodes)

    @property
    def hostnames(self) -> list[str]:
        """The plan's node ids as host names (``pool/node3`` → ``pool-node3``)."""
        return [hostname(n) for n in self.run.nodes]

    @property
    def num_nodes(self) -> int:
        return len(self.run.nodes)

    @property
    def nproc_per_node(self) -> int:
        return self.run.gpu_count // self.num_nodes

    @property
    def layout(self):
        return self.run.layout

    @property
    def bf16(self) -> bool:
        return self.layout.precision.startswith("bf16") or self.layout.precision == "fp8"

    @property
    def fp16(self) -> bool:
        return self.layout.precision == "fp16-mixed"

    def time_limit_minutes(self, margin: float) -> int:
        """The planned hours plus ``margin`` of them, in whole minutes (a scheduler's wall-time limit)."""
        return max(1, math.ceil(round(self.run.hours * (1 + margin) * 60, 6)))

    def start_minutes(self) -> int:
        return math.ceil(round(self.run.start_h * 60, 6))


def hostname(node_id: str) -> str:
    return node_id.replace("/", "-")


def run_exports(campaign: Campaign, plan: Plan, catalog: Catalog | None = None) -> list[RunExport]:
    """Every run of ``plan`` in start order (then run id), with what its exports need."""
    catalog = catalog or load_catalog()
    specs = {j.id: j for j in campaign.scenario.jobs}
    runs = {r.id: r for r in campaign.runs}
    pools = {p.id: p for p in campaign.scenario.pools}
    kinds = {p.id: p.kind for p in campaign.pools}
    out = []
    for r in sorted(plan.runs, key=lambda r: (r.start_h, r.run)):
        if r.run not in runs:
            raise FtplanError(f"plan run {r.run!r} is not in the scenario. To fix: export the plan made for it")
        spec = pools[r.pool]
        cloud = isinstance(spec, CloudPool)
        inst = catalog.instance(spec.instance) if isinstance(spec, CloudPool) else None
        per = r.gpu_count // max(1, len(r.nodes))
        out.append(
            RunExport(
                run=r, job=specs[r.job], pool_kind=kinds[r.pool], gpus_per_node=per,
                depends_on=runs[r.run].depends_on,
                instance=f"{inst.cloud}/{inst.instance_type}" if inst else None, region=inst.region if inst else None,
                lora_targets=lora.target_modules if (lora := runs[r.run].job.training.lora) else (),
                spot=cloud and spec.pricing == "spot", arch=(job := runs[r.run].job).arch,
                trainable_params=split_params(job.arch, job.training).trainable,
            )
        )  # fmt: skip
    return out
