"""Load a scenario file and resolve it against the catalogs: runs, pools, options."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ftplan.bands import HeadroomPolicy, effective_policy, make_policy
from ftplan.catalog import Catalog, host_memory
from ftplan.errors import FtplanError, did_you_mean
from ftplan.fit import Pool, instance_pool
from ftplan.io import load_validated
from ftplan.job import ResolvedJob, resolve_job
from ftplan.schema.scenario import CloudPool, OwnedPool, PurchasePool, Scenario, ScenarioJob


class ScenarioError(FtplanError):
    """A scenario file is malformed or inconsistent."""


@dataclass(frozen=True)
class PoolSpec:
    """A pool of the inventory, resolved: hardware, how many nodes, what they cost."""

    id: str
    kind: str  # owned | cloud | purchase
    pool: Pool  # hardware and node shape (``pool.max_nodes`` = nodes owned, quota or most to buy)
    usd_per_node_h: float  # cloud: instance price; owned/purchase: running cost
    purchase_usd_per_node: float = 0.0  # price of one node
    amortisation_h: float | None = None  # the price is spread over this many hours of use
    resale_fraction: float = 0.0  # share of the price recovered by reselling the node
    placed: bool = True  # owned/purchase: jobs are placed on named nodes; cloud: instances are rented
    time_factor: float = 1.0  # expected wall time per hour of training (spot: interruptions and restarts)

    @property
    def nodes(self) -> int:
        return self.pool.max_nodes

    @property
    def gpus_per_node(self) -> int:
        return self.pool.gpus_per_node


@dataclass(frozen=True)
class Run:
    """One run of a job (a job with ``count: 3`` has three runs)."""

    id: str
    job_id: str
    job: ResolvedJob
    spec: ScenarioJob
    deadline_h: float | None
    depends_on: tuple[str, ...]  # run ids


@dataclass(frozen=True)
class Pin:
    """Where a run in progress is: it goes on from ``start`` (minutes) on these nodes and GPUs."""

    start: int
    nodes: tuple[int, ...]  # node indices of a placed pool; instance indices of a cloud pool
    gpus: tuple[tuple[int, ...], ...]  # GPU indices on each node (placed pools)
    work: float  # share of its job left to do from ``start``


@dataclass(frozen=True)
class History:
    """A campaign under way (``ftplan.replan``): what the solve must keep and what is left to plan.

    Everything new starts at ``now`` or later. A run in ``pins`` is in progress: its first candidate
    (``candidates.run_candidates``) goes on where it is; in ``movable`` it may instead restart from its
    checkpoint anywhere, doing ``work`` of its job. Other runs to plan do ``work`` (1 when absent)."""

    now: int  # minutes since the first plan's start
    work: dict[str, float]
    pins: dict[str, tuple[object, Pin]]  # run → (its continuation: a Candidate, where it runs)
    movable: frozenset[str]
    lost: dict[str, frozenset[int]]  # placed pool → node indices out of use from ``now``
    bought: dict[str, int]  # purchase pool → nodes bought already
    done: dict[str, list[object]] = field(default_factory=dict)  # run → its parts that ran (PlanRun), facts
    # a pinned run's part that ran up to now, as kept in place (index 0) and as moved (index 1)
    split: dict[str, tuple[object, object]] = field(default_factory=dict)
    # runs the previous plan had placed and that are planned again: its pool and node (or instance count) for
    # each, which the re-plan keeps where the objectives allow
    previous: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Campaign:
    scenario: Scenario
    source: str
    runs: list[Run]
    pools: list[PoolSpec]
    jobs: dict[str, ResolvedJob]  # one resolved job per scenario job id
    # the headroom each job's runs keep: the command line's, else the job's, else the scenario's, else the default
    policies: dict[str, HeadroomPolicy] = field(default_factory=dict)
    # plan every run at this quantile of its duration (None: at the estimate); the command line's, else the scenario's
    time_confidence: float | None = None
    history: History | None = None  # a campaign under way (ftplan replan)

    def policy(self, job_id: str) -> HeadroomPolicy:
        return self.policies.get(job_id) or HeadroomPolicy()


def load_scenario(path: Path) -> Scenario:
    return load_validated(path, Scenario, ScenarioError, "jobs, pools, objective and solver")


def _pool_spec(p: OwnedPool | CloudPool | PurchasePool, catalog: Catalog, where: str) -> PoolSpec:
    if isinstance(p, CloudPool):
        fp = instance_pool(catalog, p.instance, nodes=1, spot=p.pricing == "spot", where=f"{where}.instance")
        # the quota bounds the instances in use at once; one run spans several only over a listed network
        if p.allreduce_busbw_gbs is not None and fp.network_gbps is None:
            raise ScenarioError(
                f"{where}.allreduce_busbw_gbs: {p.instance} lists no network, so its runs stay in one instance "
                "and a bus bandwidth across nodes is never used. To fix: drop allreduce_busbw_gbs."
            )
        fp = replace(fp, max_nodes=p.quota_nodes, name=p.id, efficiency=p.efficiency,
                     allreduce_busbw_gbs=p.allreduce_busbw_gbs)  # fmt: skip
        assert fp.usd_per_node_hour is not None
        return PoolSpec(p.id, "cloud", fp, fp.usd_per_node_hour, placed=False)
    gpu = catalog.gpu(p.gpu, f"{where}.gpu")
    per_node = p.gpus_per_node or gpu.max_gpus_per_node
    nodes = p.nodes if isinstance(p, OwnedPool) else p.max_nodes
    ram, ram_note = host_memory(catalog, gpu, per_node, p.host_memory_gib)
    fp = Pool(p.id, gpu, per_node, nodes, p.network_gbps, p.usd_per_node_h, efficiency=p.efficiency,
              host_memory_bytes=ram, host_memory_note=ram_note, allreduce_busbw_gbs=p.allreduce_busbw_gbs)  # fmt: skip
    if isinstance(p, OwnedPool):
        return PoolSpec(p.id, "owned", fp, p.usd_per_node_h)
    price = p.usd_per_node_h
    per_node_usd = p.usd_per_node or (gpu.purchase_usd_per_gpu or 0.0) * per_node
    if not per_node_usd:
        raise ScenarioError(f"{where}.usd_per_node: the catalog has no purchase price for {gpu.id}. To fix: give one.")
    return PoolSpec(
        p.id, "purchase", fp, price, purchase_usd_per_node=per_node_usd, amortisation_h=p.amortisation_h,
        resale_fraction=p.resale_fraction,
    )  # fmt: skip


def purchase_charge(pool: PoolSpec, horizon_h: float | None) -> float:
    """What one bought node costs the campaign: its price less what reselling it recovers, or, with
    an amortisation period and a campaign deadline, the share of that the deadline's hours use up."""
    net = pool.purchase_usd_per_node * (1.0 - pool.resale_fraction)
    if pool.amortisation_h is None or horizon_h is None:
        return net
    return net * min(1.0, horizon_h / pool.amortisation_h)


def resolve_scenario(
    scenario: Scenario,
    catalog: Catalog,
    source: str = "scenario",
    policy: HeadroomPolicy | None = None,
    time_confidence: float | None = None,
) -> Campaign:
    """Resolve models, GPUs and instances; expand counts into runs; check dependencies. ``policy`` and
    ``time_confidence`` (the command line's) override the jobs' headroom policies and the scenario's
    ``objective.time_confidence``."""
    jobs: dict[str, ResolvedJob] = {}
    for i, j in enumerate(scenario.jobs):
        where = f"{source}: jobs[{i}] ({j.id})"
        jobs[j.id] = resolve_job(j, catalog, where)
    ids = list(jobs)
    for i, j in enumerate(scenario.jobs):
        for dep in j.depends_on:
            if dep not in jobs:
                raise ScenarioError(f"{source}: jobs[{i}].depends_on: unknown job {dep!r}.{did_you_mean(dep, ids)}")
            if dep == j.id:
                raise ScenarioError(f"{source}: jobs[{i}].depends_on: job {j.id!r} depends on itself.")
    _check_cycles(scenario, source)
    runs: list[Run] = []
    by_job: dict[str, list[str]] = {}
    for j in scenario.jobs:
        by_job[j.id] = [j.id if j.count == 1 else f"{j.id}#{k + 1}" for k in range(j.count)]
    for j in scenario.jobs:
        deps = tuple(r for d in j.depends_on for r in by_job[d])
        for rid in by_job[j.id]:
            runs.append(Run(rid, j.id, jobs[j.id], j, j.deadline_h, deps))
    pools = []
    for i, p in enumerate(scenario.pools):
        pools.append(_pool_spec(p, catalog, f"{source}: pools[{i}] ({p.id})"))
    default = make_policy(scenario.memory_confidence, scenario.memory_margin, source)
    policies = {jid: effective_policy(policy, job.policy, default) for jid, job in jobs.items()}
    confidence = time_confidence if time_confidence is not None else scenario.objective.time_confidence
    return Campaign(scenario, source, runs, pools, jobs, policies, confidence)


def _check_cycles(scenario: Scenario, source: str) -> None:
    deps = {j.id: list(j.depends_on) for j in scenario.jobs}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = [*path[path.index(node) :], node]
            raise ScenarioError(f"{source}: jobs depends_on has a cycle: {' → '.join(cycle)}. To fix: remove one edge.")
        state[node] = 1
        for d in deps[node]:
            visit(d, [*path, node])
        state[node] = 2

    for j in deps:
        visit(j, [])
