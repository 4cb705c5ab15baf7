"""Layouts of one job on one or more pools: which fit in memory, how fast, at what cost.

A *pool* is one GPU type in nodes of a fixed size, with a price: a cloud instance type from the
catalog, or a GPU type (owned or hypothetical). For every GPU count the pool offers (1, 2, 4, …
GPUs inside one node; whole nodes beyond one), every tensor-parallel degree that divides the
attention heads, every ZeRO stage, offload and recomputation (a *family*), the memory model runs
once, at micro-batch 1: the forward/backward moment of a step grows linearly with the micro-batch
as the largest of a few lines (``MemoryEstimate.fb_lines``) and by the gradients held across
accumulation, the other moments only by the logits a loop keeps. Every
micro-batch that divides the job's global batch is then checked and timed as arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from ftplan.bands import Band, HeadroomPolicy, effective_policy, memory_band, time_band
from ftplan.catalog import Catalog, host_memory
from ftplan.errors import CatalogError, FtplanError, JobError
from ftplan.job import ResolvedJob
from ftplan.limits import MAX_RUN_NODES
from ftplan.memory import Layout, MemoryEstimate, Offload, Recompute, ZeroStage, check_layout, estimate_memory
from ftplan.memory.deepep import deepep_buffer_bytes
from ftplan.memory.estimate import STATE_TERMS, gradients_held_apart
from ftplan.memory.pipeline import PipelineSplit, heaviest_ranks
from ftplan.memory.setup import ExpertDispatch, Kernels, Method, Precision, ZeroGrad
from ftplan.schema.catalog import Gpu
from ftplan.timing import model as tm
from ftplan.timing import traffic
from ftplan.units import GIB

ZERO_NAMES = {0: "ZeRO-0", 1: "ZeRO-1", 2: "ZeRO-2", 3: "ZeRO-3"}


@dataclass(frozen=True)
class Pool:
    """One GPU type in nodes of ``gpus_per_node``, at most ``max_nodes`` nodes, with a price."""

    name: str
    gpu: Gpu
    gpus_per_node: int
    max_nodes: int
    network_gbps: float | None
    usd_per_node_hour: float | None
    price_note: str = ""
    efficiency: float | None = None  # fraction of peak for this pool (default: the GPU's catalog value)
    host_memory_bytes: int | None = None  # RAM per node, which offloaded states must fit in (None: unknown)
    host_memory_note: str = ""  # where an assumed RAM comes from
    allreduce_busbw_gbs: float | None = None  # measured across nodes (nccl-tests all_reduce_perf), when stated

    @property
    def nvlink_nodes(self) -> int:
        """Nodes on one NVLink domain: a GB200/GB300 NVL72 rack's 18 trays of 4 GPUs; 1 elsewhere."""
        return max(1, (self.gpu.nvlink_domain or 0) // self.gpus_per_node)

    @property
    def max_run_nodes(self) -> int:
        """Most nodes one run may span: a run crosses nodes over a network the pool states, or, without
        one, over NVLink inside a pool that is one NVLink domain (an NVL72 rack); otherwise it stays
        inside one node (``max_nodes`` still bounds the runs at once)."""
        if self.network_gbps:
            return min(self.max_nodes, MAX_RUN_NODES)
        return self.max_nodes if self.max_nodes <= self.nvlink_nodes else 1

    @property
    def hardware_note(self) -> str:
        net = f", {self.network_gbps:g} Gbps/node" if self.network_gbps else ", one node (no network)"
        if self.network_gbps and self.allreduce_busbw_gbs:
            net += f" ({self.allreduce_busbw_gbs:g} GB/s all-reduce bus bandwidth, measured)"
        if self.nvlink_nodes > 1:
            net = f", NVLink domain of {self.nvlink_nodes * self.gpus_per_node} GPUs" + (
                net if self.network_gbps else " (no network beyond it)"
            )
        ram = f"; {self.host_memory_note}" if self.host_memory_note else ""
        return f"{self.gpu.id} ×{self.gpus_per_node}/node{net}{ram}"


def instance_pool(catalog: Catalog, key: str, nodes: int = 1, spot: bool = False, where: str = "--instance") -> Pool:
    """A pool of cloud instances ``key`` (CLOUD/TYPE); ``where`` names the input in error messages."""
    inst = catalog.instance(key, where)
    gpu = catalog.gpus[inst.gpu]
    price = inst.spot_usd_per_h if spot else inst.on_demand_usd_per_h
    if price is None:
        raise FtplanError(
            f"{where} {inst.key}: no {'spot' if spot else 'on-demand'} price in the catalog. "
            "To fix: choose another instance or price type."
        )
    if nodes > 1 and inst.network_gbps is None:
        raise FtplanError(
            f"{where} {inst.key}: the catalog has no network bandwidth for this instance type, so it "
            "is planned as one node. To fix: use --nodes 1 or an instance with a listed network."
        )
    ram, ram_note = host_memory(catalog, gpu, inst.gpus_per_node, inst.host_memory_gib)  # unlisted: its peers'
    return Pool(
        inst.key, gpu, inst.gpus_per_node, nodes, inst.network_gbps, float(price),
        f"{'spot' if spot else 'on-demand'} ${price}/h", host_memory_bytes=ram, host_memory_note=ram_note,
    )  # fmt: skip


def gpu_pool(
    catalog: Catalog, name: str, gpus: int | None = None, usd_per_gpu_hour: float | None = None,
    network_gbps: float | None = None, host_memory_gib: float | None = None,
) -> Pool:  # fmt: skip
    """A pool of one GPU type; priced at ``usd_per_gpu_hour`` or the catalog's cheapest on-demand GPU-hour."""
    gpu = catalog.gpu(name, "--gpu")
    per_node = gpu.max_gpus_per_node
    if gpus is not None and gpus < 1:
        raise FtplanError(f"--gpus must be ≥ 1, got {gpus}.")
    total = gpus or per_node
    nodes = math.ceil(total / per_node)
    if nodes > 1 and network_gbps is None and nodes * per_node > (gpu.nvlink_domain or 0):
        raise FtplanError(
            f"--gpus {total} needs {nodes} nodes of {per_node} {gpu.id}: give their network with --network-gbps."
        )
    note = ""
    if usd_per_gpu_hour is None:
        prices = [
            (i.on_demand_usd_per_h / i.gpus_per_node, i.key)
            for i in catalog.instances.values()
            if i.gpu == gpu.id and i.on_demand_usd_per_h
        ]
        if prices:
            usd_per_gpu_hour, key = min(prices)
            note = f"${usd_per_gpu_hour:.2f}/GPU-h (cheapest on-demand: {key})"
    else:
        note = f"${usd_per_gpu_hour:.2f}/GPU-h (given)"
    node_price = usd_per_gpu_hour * min(per_node, total) if usd_per_gpu_hour is not None else None
    ram, ram_note = host_memory(catalog, gpu, min(per_node, total), host_memory_gib)
    return Pool(
        f"gpu:{gpu.id}", gpu, min(per_node, total), nodes, network_gbps, node_price, note,
        host_memory_bytes=ram, host_memory_note=ram_note,
    )  # fmt: skip


def gpu_counts(
    pool: Pool, limit: int | None = None, global_batch: int | None = None, pps: tuple[int, ...] = (1,)
) -> list[int]:
    """GPU counts a job may use: powers of two inside one node, the full node, then whole nodes (up
    to :attr:`Pool.max_run_nodes`). With ``global_batch``, only the whole-node counts some layout can
    use: ``dp × tp × pp`` GPUs with ``dp`` dividing the global batch, ``tp`` at most a node and ``pp`` one
    of ``pps``."""
    per = pool.gpus_per_node
    counts = {1 << k for k in range(per.bit_length()) if 1 << k <= per} | {per}
    most = pool.max_run_nodes
    if global_batch is None:
        counts |= {n * per for n in range(2, most + 1)}
    else:
        dps = [d for d in range(1, math.isqrt(global_batch) + 1) if global_batch % d == 0]
        dps += [global_batch // d for d in dps]
        counts |= {
            dp * tp * pp
            for dp in dps
            for tp in range(1, per + 1)
            for pp in pps
            if (dp * tp * pp) % per == 0 and per < dp * tp * pp <= most * per
        }
    return sorted(c for c in counts if limit is None or c <= limit)


# The share of the fastest layout's step from which the output names the LoRA adapters' own operations (below it
# they are one memory-bound cost among others)
ADAPTER_NOTE_SHARE = 0.05
# The share of the fastest tensor-parallel layout's step from which the output says what overlapping its collectives
# would save (``tp_overlap``)
TP_NOTE_SHARE = 0.05
# The share of the fastest expert-parallel layout's step from which the output says what DeepEP's dispatch would save
# (``expert_dispatch``)
DISPATCH_NOTE_SHARE = 0.05
# The share of the fastest pipeline layout's step from which the output says what a weighted layer cut would save
# (``pipeline_split``)
SPLIT_NOTE_SHARE = 0.05


@dataclass
class FitResult:
    """Ranked layouts that fit, and why the other families did not."""

    job: ResolvedJob
    layouts: pd.DataFrame
    excluded: list[str] = field(default_factory=list)
    evaluated: int = 0
    pools: list[Pool] = field(default_factory=list)
    closest: str = ""  # the family that came closest to fitting, when none fits
    policy: HeadroomPolicy = field(default_factory=HeadroomPolicy)  # the headroom every layout kept
    efficiency: float | None = None  # the matmul efficiency the layouts were timed at, where the call set one

    @property
    def time_notes(self) -> list[str]:
        """What the layouts' time rests on that the job may run otherwise, a line each: an attention kernel a GPU
        does not run best (:func:`ftplan.timing.model.attention_kernel_note`), sliding-window layers under SDPA's mask
        (:func:`ftplan.timing.model.windowed_note`), PEFT's operations around LoRA adapters where they take a
        sizeable share of the fastest layout's step (:meth:`adapter_note`), tensor-parallel collectives a fused
        stack could overlap (:meth:`tp_note`), all-to-alls DeepEP would shorten (:meth:`dispatch_note`), a pipeline
        whose head's stage a weighted cut would lighten (:meth:`split_note`)."""
        arches = dict.fromkeys(pool.gpu.arch for pool in self.pools)
        notes = [note for a in arches if (note := tm.attention_kernel_note(self.job.training, a))]
        window = tm.windowed_note(self.job.arch, self.job.training)
        adapters, overlap, dispatch = self.adapter_note(), self.tp_note(), self.dispatch_note()
        return notes + [n for n in (window, adapters, overlap, dispatch, self.split_note()) if n]

    def _best(self, rows: pd.DataFrame) -> tuple[dict[str, np.ndarray], Pool]:
        """The quickest of ``rows`` (by hours, then pool) as ``_time_and_cost`` takes a layout, and its pool."""
        best = rows.sort_values(["hours", "pool"], kind="mergesort").iloc[:1]
        pool = next(p for p in self.pools if p.name == best["pool"].iloc[0])
        return {col: best[col].to_numpy() for col in best.columns}, pool

    def _step(self, row: dict[str, np.ndarray], pool: Pool, training: Any, flops: Any = None) -> float:
        """A layout's step, as ``fit_job`` times it, under ``training`` (and ``flops``, where given)."""
        f = flops if flops is not None else tm.job_flops(self.job.arch, training)
        job = replace(self.job, training=training)
        return float(_time_and_cost(row, job, f, pool, self.efficiency)["step_s"][0])

    def _saving(self, degree: str, training: Any) -> tuple[float, dict[str, np.ndarray], Pool] | None:
        """What ``training`` would take off the step of the fastest layout with ``degree`` above 1 (a share of the
        job's own step), that layout and its pool; None without such a layout."""
        rows = self.layouts[self.layouts[degree] > 1] if not self.layouts.empty else self.layouts
        if rows.empty:
            return None
        row, pool = self._best(rows)
        return 1 - self._step(row, pool, training) / self._step(row, pool, self.job.training), row, pool

    def _worth_noting(
        self, degree: str, training: Any, share: float
    ) -> tuple[float, dict[str, np.ndarray], Pool] | None:
        """:meth:`_saving` under ``training`` where the job does not already train so and it saves ``share`` or
        more of the step; None otherwise."""
        found = None if training == self.job.training else self._saving(degree, training)
        return None if found is None or found[0] < share else found

    def tp_note(self) -> str | None:
        """What overlapping tensor parallelism's collectives with their matmuls (``tp_overlap``) would save on the
        fastest tensor-parallel layout, for a fused stack that does not say it does; None below
        :data:`TP_NOTE_SHARE`, without tensor-parallel layouts, or for an eager stack (whose frameworks run async
        tensor parallelism under torch.compile only)."""
        tr = self.job.training
        eager = tr.kernels is not Kernels.FUSED
        found = None if eager else self._worth_noting("tp", replace(tr, tp_overlap=True), TP_NOTE_SHARE)
        if found is None:
            return None
        saved, row, pool = found
        return (
            f"tensor parallelism: the fastest tp {int(row['tp'][0])} layout on {pool.name} waits for its collectives; "
            "a stack that overlaps them with their matmuls (torchtitan's or NeMo Automodel's async tensor parallelism, "
            f"Megatron-Core's --tp-comm-overlap) takes {saved:.0%} off its step: state tp_overlap: true (--tp-overlap)"
        )

    def dispatch_note(self) -> str | None:
        """What DeepEP's dispatch (``expert_dispatch: deepep``) would save on the fastest expert-parallel layout of a
        job whose all-to-alls send every routed copy, and the buffers it would add; None below
        :data:`DISPATCH_NOTE_SHARE` or without expert-parallel layouts."""
        tr = self.job.training
        found = self._worth_noting("ep", replace(tr, expert_dispatch=ExpertDispatch.DEEPEP), DISPATCH_NOTE_SHARE)
        if found is None:
            return None
        saved, row, pool = found
        ep = int(row["ep"][0])
        buffers = sum(deepep_buffer_bytes(self.job.arch.hidden, ep, tr.precision.compute_bytes))
        return (
            f"expert parallelism: the fastest ep {ep} layout on {pool.name} sends every routed copy of a token in its "
            "all-to-alls; DeepEP (Megatron-Core's flex dispatcher, NeMo Automodel), which sends a token once to each "
            f"GPU and node holding its experts, takes {saved:.0%} off its step and holds {buffers / GIB:.2f} GiB of "
            "buffers a GPU: state expert_dispatch: deepep (--expert-dispatch deepep)"
        )

    def split_note(self) -> str | None:
        """What cutting the layers ``weighted`` (the embeddings and the head a layer each) would save on the fastest
        pipeline layout of a job cut ``even``, whose last stage holds the LM head beside a full share of layers; None
        below :data:`SPLIT_NOTE_SHARE` or without pipeline layouts. The cut moves layers between ranks, so the note
        asks for the memory to be checked under it."""
        weighted = replace(self.job.training, pipeline_split=PipelineSplit.WEIGHTED)
        found = self._worth_noting("pp", weighted, SPLIT_NOTE_SHARE)
        if found is None:
            return None
        saved, row, pool = found
        pp = int(row["pp"][0])
        return (
            f"pipeline: the fastest pp {pp} layout on {pool.name} waits for its last stage, which holds the LM head "
            "beside an even share of the layers; cutting them weighted (the embeddings and the head a layer each: "
            "torchtitan's default, Megatron-Core's account_for_embedding/loss_in_pipeline_split) takes "
            f"{saved:.0%} off its step: state pipeline_split: weighted (--pipeline-split weighted), whose ranking "
            "also checks each rank's memory under that cut"
        )

    def adapter_note(self) -> str | None:
        """The share of the fastest layout's step that PEFT's operations around the LoRA adapters take (their
        input's cast and dropout, their output's scaling, sum and cast back: ``timing.traffic.adapter_bytes``), and
        the share without adapter dropout where it runs; None below :data:`ADAPTER_NOTE_SHARE` or without
        adapters."""
        tr = self.job.training
        if self.layouts.empty or not any(traffic.adapter_bytes(self.job.arch, tr)):
            return None
        row, pool = self._best(self.layouts)

        def step(training: Any, bare: bool = False) -> float:
            """The best layout's step, as ``fit_job`` times it, for ``training``; ``bare``: without the chain."""
            f = tm.job_flops(self.job.arch, training)
            if bare:  # (the layers' own traffic: what the adapters' chain adds taken away)
                around = traffic.adapter_bytes(self.job.arch, training)
                f = replace(f, traffic_forward=f.traffic_forward - around[0],
                            traffic_backward=f.traffic_backward - around[1])  # fmt: skip
            return self._step(row, pool, training, f)

        whole = step(tr)
        share = 1 - step(tr, bare=True) / whole
        if share < ADAPTER_NOTE_SHARE:
            return None
        lead = (
            f"LoRA adapters: PEFT's operations around them (casts, scaling and sums, dropout where it runs) take "
            f"{share:.0%} of the fastest layout's step on {pool.name}"
        )
        if tr.lora is None or tr.lora.dropout <= 0:
            return lead
        dry = replace(tr, lora=replace(tr.lora, dropout=0.0))
        return f"{lead}; without adapter dropout (lora.dropout 0) the step would take {1 - step(dry) / whole:.0%} less"


_FAMILY_COLUMNS = ("gpus", "nodes", "dp", "tp", "zero", "offload", "recompute", "pp", "dp_shard", "cp", "ep")

# Pipeline degrees the search tries (stages of whole layers; the 1F1B schedule, with at least as many
# micro-batches a step as stages, as torch's Schedule1F1B requires)
PP_DEGREES = (1, 2, 4, 8, 16)


def _allowed(job: ResolvedJob, layout: Layout) -> bool:
    """Whether the memory model takes ``layout`` for the job's model and recipe (``check_layout``)."""
    try:
        check_layout(job.arch, job.training, layout)
    except JobError:
        return False
    return True


def pipeline_degrees(job: ResolvedJob) -> tuple[int, ...]:
    """The pipeline degrees the search tries for ``job``: those its model and recipe can be cut into."""
    return tuple(p for p in PP_DEGREES if _allowed(job, Layout(pp=p, grad_accum=p)))


# Context-parallel degrees the search tries, from this sequence length up (shorter ones fit without)
CP_DEGREES = (1, 2, 4, 8)
CP_MIN_SEQ_LEN = 16384


def context_degrees(job: ResolvedJob) -> tuple[int, ...]:
    """The context-parallel degrees the search tries for ``job``: for long sequences, those torch's ring
    attention runs for its model and recipe."""
    if job.training.seq_len < CP_MIN_SEQ_LEN:
        return (1,)
    return tuple(cp for cp in CP_DEGREES if _allowed(job, Layout(cp=cp)))


# Expert-parallel degrees the search tries for MoE models (those that divide the experts and the ranks
# that shard the model)
EP_DEGREES = (1, 2, 4, 8, 16, 32, 64)


def expert_degrees(job: ResolvedJob, shard: int) -> tuple[int, ...]:
    """The expert-parallel degrees the search tries for ``job`` over ``shard`` ranks that shard the model."""
    if not job.arch.is_moe:
        return (1,)
    return tuple(e for e in EP_DEGREES if e == 1 or _allowed(job, Layout(dp=shard, ep=e)))


def _families(job: ResolvedJob, pool: Pool) -> list[tuple[int, int, int, int, int, str, str, int, int, int, int]]:
    """Every (GPUs, nodes, dp, tp, ZeRO, offload, recompute, pp, dp_shard, cp, ep) the job may take on the pool.
    Pipeline stages, searched for runs over several nodes, combine with ZeRO 0 and 1 (what DeepSpeed's
    and Megatron's pipelines run) without offload. A run over several nodes under ZeRO-2/3 may also
    shard inside each node and replicate across them (HSDP, ``dp_shard`` the node's data-parallel
    ranks; 0: shard over all of dp). Long sequences may be split over cp GPUs (context parallelism,
    without offload, pipelines or HSDP in the search). A MoE model's experts may be split over ep of the
    ranks that shard it (expert parallelism, without offload or tensor parallelism in the search; beside
    pipeline stages, none, the most inside a node, or the most)."""
    arch, tr = job.arch, job.training
    heads = math.gcd(arch.heads, arch.kv_heads)
    pps, cps = pipeline_degrees(job), context_degrees(job)
    splits = [(pp, 1) for pp in pps] + [(1, cp) for cp in cps if cp > 1]
    out = []
    degrees: dict[int, tuple[int, ...]] = {}  # expert-parallel degrees by the ranks that shard the model
    for g in gpu_counts(pool, global_batch=job.global_batch, pps=tuple(sorted({*pps, *cps}))):
        nodes = math.ceil(g / pool.gpus_per_node)
        for tp, (pp, cp) in ((tp, split) for tp in range(1, min(g, pool.gpus_per_node) + 1) for split in splits):
            if g % (tp * pp * cp) or heads % tp or (tp > 1 and tr.method is Method.QLORA):
                continue
            if pp > 1 and g <= pool.gpus_per_node:
                # stages across nodes only: a pipeline family is estimated row by row, and inside a node
                # tensor parallelism and ZeRO come within a few percent (a job file may still state pp)
                continue
            dp = g // (tp * pp * cp)
            if job.global_batch % dp or (pp > 1 and job.global_batch // dp < pp):
                continue
            plain = pp == 1 and cp == 1
            for zero in (0, 1, 2, 3) if pp == 1 else (0, 1):
                for offload in ("none", "optimizer", "optimizer+params") if plain else ("none",):
                    if offload != "none" and (zero == 0 or tr.optimizer.paged):
                        continue
                    if offload == "optimizer+params" and zero != 3:
                        continue
                    if zero > 0 and dp * cp == 1 and offload == "none":
                        continue  # nothing to shard over
                    shards = [0]
                    node_ranks = pool.gpus_per_node // tp
                    if zero >= 2 and offload == "none" and plain and 1 < node_ranks < dp and dp % node_ranks == 0:
                        shards.append(node_ranks)
                    for rec, dp_shard in ((r, s) for r in ("none", "selective", "full") for s in shards):
                        eps = (1,)
                        if offload == "none" and tp == 1:
                            shard = (dp_shard or dp) * cp
                            if shard not in degrees:
                                degrees[shard] = expert_degrees(job, shard)
                            eps = degrees[shard]
                            if pp > 1:  # (estimated row by row: none, the most inside a node, the most)
                                inside = [e for e in eps if e <= pool.gpus_per_node]
                                eps = tuple(sorted({1, inside[-1], eps[-1]}))
                        for ep in eps:
                            out.append((g, nodes, dp, tp, zero, offload, rec, pp, dp_shard, cp, ep))
    return out


def _check_host(est: MemoryEstimate, pool: Pool, offload: str) -> None:
    """Refuse a layout whose offloaded or paged states exceed the pool's RAM per node, or that
    offloads to nodes whose RAM is unknown."""
    ram = pool.host_memory_bytes
    if ram is None and offload != Offload.NONE.value:
        raise JobError("offload to a host whose memory is unknown. To fix: give the pool's host_memory_gib")
    if ram is not None and est.host_bytes_per_node > ram:
        raise JobError(
            f"host memory per node {est.host_bytes_per_node / GIB:.1f} GiB > {ram / GIB:.1f} GiB "
            "(offloaded or paged states)"
        )


_LINES = 5  # forward/backward lines a family carries (the loss, backward, a MoE forward, the loss's forward, and
# ZeRO-3's root group gathered again as backward begins)


@cache
def _divisors(n: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, n + 1) if n % d == 0)


def fit_job(
    job: ResolvedJob,
    pools: list[Pool],
    efficiency: float | None = None,
    policy: HeadroomPolicy | None = None,
    memo: dict[tuple[Layout, str, int | None], MemoryEstimate] | None = None,
) -> FitResult:
    """Every layout of ``job`` on ``pools`` that fits under the headroom ``policy`` (else the job's, else the
    default), with its time and cost (unsorted). ``memo`` keeps the memory estimates (by layout and GPU
    architecture) for the next call on the same job: a campaign's pools of one GPU share them."""
    policy = effective_policy(policy, job.policy)
    if job.tokens is None:
        raise JobError("the job has no tokens. To fix: add `tokens:` (or `samples:`) and optionally `epochs:`.")
    arch, tr = job.arch, job.training
    flops = tm.job_flops(arch, tr)
    frames, excluded, evaluated = [], [], 0
    cache: dict[tuple[Layout, str, int | None], MemoryEstimate] = {} if memo is None else memo
    scalars: dict[int, tuple[float, ...]] = {}  # each family estimate's (by identity: the cache keeps them alive)

    def estimate(layout: Layout, gpu_arch: str, rank: int | None = None) -> MemoryEstimate:
        """The memory model (of pipeline rank ``rank``, else of the rank needing most), shared by pools of the
        same node size and GPU architecture."""
        key = (layout, gpu_arch, rank)
        if key not in cache:
            cache[key] = estimate_memory(
                arch, tr, layout, gpu_arch=gpu_arch, overheads=job.overheads, pipeline_rank=rank
            )
        return cache[key]

    closest: tuple[float, str] = (math.inf, "")
    for pool in pools:
        gpu = pool.gpu
        if tr.precision is Precision.FP8 and not gpu.tflops.fp8:
            excluded.append(
                f"{pool.name}: {gpu.id} has no FP8 tensor cores (no fp8 peak in the catalog). "
                "To fix: use precision bf16-mixed there, or a GPU with FP8 (Ada, Hopper, Blackwell, MI300)."
            )
            continue
        families = _families(job, pool)
        if not families:
            excluded.append(
                f"{pool.name}: no GPU count divides the global batch of {job.global_batch} sequences. "
                "To fix: choose a global batch divisible by 2, 4 or 8."
            )
            continue
        fams: list[tuple] = []
        # the forward/backward lines, held grads, others, outside, kept logits, states, loading
        scal: list[tuple[float, ...]] = []
        refused: dict[str, list[str]] = {}  # the model's reason → the layout families it refuses
        piped: list[tuple] = []  # pipeline families: their rows are estimated one by one (_pipeline_rows)
        for fam in families:
            g, _, dp, tp, zero, offload, rec, pp, dp_shard, cp, ep = fam
            if pp > 1:
                piped.append(fam)
                continue
            base = Layout(dp=dp, tp=tp, zero=ZeroStage(zero), offload=Offload(offload), recompute=Recompute(rec),
                          micro_batch=1, grad_accum=1, gpus_per_node=pool.gpus_per_node, dp_shard=dp_shard,
                          cp=cp, ep=ep)  # fmt: skip
            try:
                e11 = estimate(base, gpu.arch)
                _check_host(e11, pool, offload)
            except FtplanError as exc:
                refused.setdefault(str(exc), []).append(
                    f"{g} GPUs tp {tp}{f' ep {ep}' if ep > 1 else ''} {ZERO_NAMES[zero]} offload {offload}"
                )
                continue
            fams.append(fam)
            if id(e11) not in scalars:  # (pools of one GPU architecture share the estimate: and so its scalars)
                lines = e11.fb_lines
                if lines is None:  # not exactly linear in the micro-batch: measure the step from 1 to 2
                    fb11 = e11.phase_bytes["forward/backward"]
                    slope = estimate(replace(base, micro_batch=2), gpu.arch).phase_bytes["forward/backward"] - fb11
                    lines = ((fb11 - slope, slope),)
                scalars[id(e11)] = _scalars(e11, lines, tr, zero)
            scal.append(scalars[id(e11)])
        # every micro-batch dividing each family's per-replica batch, as one set of arrays
        divs = [_divisors(job.global_batch // f[2]) for f in fams]
        counts = np.array([len(d) for d in divs], dtype=int)
        idx = np.repeat(np.arange(len(fams)), counts)
        mbs = np.concatenate([np.array(d, dtype=float) for d in divs]) if fams else np.zeros(0)
        per_dp = np.array([job.global_batch // f[2] for f in fams], dtype=float)[idx]
        accum = per_dp / mbs
        device = np.zeros(0)
        if fams:
            device = _device_rows(np.array(scal, dtype=float)[idx], mbs, accum, job)
        for fam, rows_mb, rows_device in _pipeline_rows(job, pool, piped, estimate, refused):
            idx = np.concatenate([idx, np.full(len(rows_mb), len(fams))])
            counts = np.append(counts, len(rows_mb))
            fams.append(fam)
            mbs = np.concatenate([mbs, rows_mb])
            accum = np.concatenate([accum, job.global_batch // fam[2] / rows_mb])
            device = np.concatenate([device, rows_device])
        for reason, which in refused.items():
            which = list(dict.fromkeys(which))  # recomputation variants share a description
            more = f" and {len(which) - 1} more" if len(which) > 1 else ""
            excluded.append(f"{pool.name} {which[0]}{more}: {reason}")
        if not fams:
            continue
        # each family's rows are contiguous (``starts``, ``counts``); a memory band is shared by the families
        # of one GPU count, ZeRO stage, offload and node count (``bands``, each row's in ``row_band``)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        band_of: dict[tuple[int, int, str, int], int] = {}
        for f in fams:
            band_of.setdefault((f[0], f[4], f[5], f[1]), len(band_of))
        bands = [memory_band(job.arch, job.training, *key) for key in band_of]
        row_band = np.array([band_of[(f[0], f[4], f[5], f[1])] for f in fams], dtype=int)[idx]
        required = _per_band(policy.required, device, row_band, bands)
        ok = required <= gpu.memory_bytes
        evaluated += len(mbs)
        fam_ok = np.logical_or.reduceat(ok, starts)
        fam_min = np.minimum.reduceat(required, starts)
        best_miss: dict[tuple[int, str], tuple[float, str]] = {}
        for i in np.flatnonzero(~fam_ok):
            g, _, _, tp, zero, offload, rec, pp, _, cp, ep = fams[i]
            key, need = (zero, offload), float(fam_min[i])
            if key not in best_miss or need < best_miss[key][0]:
                stages = "".join(f" {n} {v}" for n, v in (("pp", pp), ("cp", cp), ("ep", ep)) if v > 1)
                best_miss[key] = (need, f"best: {g} GPUs tp {tp}{stages} recompute {rec} micro-batch 1")
        fam_arr = np.array(fams, dtype=object)[idx[ok]]
        rows = {col: fam_arr[:, j].tolist() for j, col in enumerate(_FAMILY_COLUMNS)}
        rows["micro_batch"] = mbs[ok].astype(int)
        rows["grad_accum"] = accum[ok].astype(int)
        rows["device_bytes"] = device[ok]
        rows["required_bytes"] = np.ceil(required[ok])
        fitting, fitting_band = device[ok], row_band[ok]
        rows["band_low_bytes"] = _per_band(lambda d, b: b.interval(d)[0], fitting, fitting_band, bands)
        rows["band_high_bytes"] = _per_band(lambda d, b: b.interval(d)[1], fitting, fitting_band, bands)
        rows["fit_probability"] = _per_band(
            lambda d, b, capacity=gpu.memory_bytes: b.fit_probabilities(d, capacity), fitting, fitting_band, bands
        )
        rows["memory_band"] = np.array([b.source() for b in bands], dtype=object)[fitting_band].tolist()
        fitted_families = {(z, o) for z, o in zip(rows["zero"], rows["offload"], strict=True)}
        for (zero, offload), (need, where) in sorted(best_miss.items()):
            if (zero, offload) in fitted_families:
                continue
            line = (
                f"{pool.name}: {ZERO_NAMES[zero]} offload {offload}: {need / GIB:.1f} GiB > "
                f"{gpu.memory_bytes / GIB:.1f} GiB under {policy.label} ({where})"
            )
            excluded.append(line)
            short = need - gpu.memory_bytes
            if short < closest[0]:
                closest = (short, line)
        if not ok.any():
            continue
        for col in ("gpus", "nodes", "dp", "tp", "zero", "pp", "dp_shard", "cp", "ep"):
            rows[col] = np.array(rows[col], dtype=int)
        rows = {"pool": [pool.name] * len(rows["gpus"]), **rows}
        frames.append(pd.DataFrame(_time_and_cost(rows, job, flops, pool, efficiency)))
    layouts = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return FitResult(
        job=job, layouts=layouts, excluded=excluded, evaluated=evaluated, pools=list(pools), closest=closest[1],
        policy=policy, efficiency=efficiency,
    )  # fmt: skip


def _scalars(
    e: MemoryEstimate, lines: tuple[tuple[float, float], ...], training: Any, zero: int, mb: int = 1
) -> tuple[float, ...]:
    """What :func:`_device_rows` needs of estimate ``e`` (made at micro-batch ``mb``) to give the device bytes
    at any micro-batch: the forward/backward ``lines``, then the gradients held across accumulation, the
    other moments' peak (at micro-batch 1), what sits outside the allocator, the logits a loop keeps (a
    micro-batch's), the model states and the loading moment."""
    held = e.gpu_terms["gradients"] if gradients_held_apart(training, zero) else 0.0  # (estimate.py)
    # logits the loop keeps (model_output) are in every moment and grow with the micro-batch
    kept = e.gpu_terms["logits_kept"] / mb
    others = max(v for k, v in e.phase_bytes.items() if k not in ("forward/backward", "loading")) - (mb - 1) * kept
    states = sum(e.gpu_terms[k] for k in STATE_TERMS)
    loading = e.phase_bytes.get("loading", 0)
    outside = e.device_total_bytes - e.peak_reserved_bytes
    lines = lines + (lines[-1],) * (_LINES - len(lines))
    return (*(x for line in lines for x in line), held, others, outside, kept, states, loading)


def _device_rows(sc: np.ndarray, mbs: np.ndarray, accum: np.ndarray, job: ResolvedJob) -> np.ndarray:
    """Device bytes of each row (:func:`_scalars` ``sc``, micro-batch, micro-steps), as the memory model
    sums them."""
    k = 2 * _LINES  # the columns after the lines: held grads, others, outside, kept logits, states, loading
    held = (accum > 1) | (job.training.zero_grad is ZeroGrad.ZEROS)  # gradients kept through forward/backward
    fb = np.max([sc[:, 2 * i] + mbs * sc[:, 2 * i + 1] for i in range(_LINES)], axis=0)
    fb += np.where(held, sc[:, k], 0.0)
    peak = np.maximum(fb, sc[:, k + 1] + (mbs - 1) * sc[:, k + 3])
    frag = job.overheads.allocator_fraction * np.maximum(0.0, peak - sc[:, k + 4])  # as reserved_bytes does
    return np.floor(np.maximum(peak + frag, sc[:, k + 5])) + sc[:, k + 2]


def _per_band(value: Any, values: np.ndarray, row_band: np.ndarray, bands: list[Band]) -> np.ndarray:
    """``value(values of a band's rows, the band)`` over every row, one call a band; ``row_band`` holds each
    row's index into ``bands``."""
    out = np.empty(len(values), dtype=float)
    for i, band in enumerate(bands):
        rows = row_band == i
        if rows.any():
            out[rows] = value(values[rows], band)
    return out


def _stage_layout(fam: tuple, mb: int, per_dp: int, pool: Pool) -> Layout:
    """The layout of pipeline family ``fam`` at micro-batch ``mb`` (``per_dp`` sequences a replica a step)."""
    _, _, dp, tp, zero, offload, rec, pp, _, _, ep = fam
    return Layout(
        dp=dp, tp=tp, zero=ZeroStage(zero), offload=Offload(offload), recompute=Recompute(rec), micro_batch=mb,
        grad_accum=per_dp // mb, gpus_per_node=pool.gpus_per_node, pp=pp, ep=ep,
    )  # fmt: skip


def _pipeline_rows(
    job: ResolvedJob, pool: Pool, families: list[tuple], estimate: Any, refused: dict[str, list[str]]
) -> list[tuple[tuple, np.ndarray, np.ndarray]]:
    """Each pipeline family's micro-batches (at least as many micro-steps as stages) and the device bytes of
    each: the most any rank needs (the first holds the most micro-batches in flight, the second the most
    receive buffers, the last the head: :func:`ftplan.memory.pipeline.heaviest_ranks`), as
    :func:`estimate_memory` takes it. Under 1F1B a rank holds the same micro-batches in flight and
    sends as many whatever the micro-batch, and its receive buffers (one a micro-step, each a micro-batch)
    add up to the same bytes: each end rank's peak is the lines of one estimate, as a family's is without
    stages. The one exception is the first rank with as many micro-steps as stages, which runs every forward
    before its first backward (no gradients yet): that micro-batch's own estimate of the first rank."""
    out: list[tuple[tuple, np.ndarray, np.ndarray]] = []  # (family, micro-batches, device bytes)
    # (its index in out, first-rank rows, later ranks, boundary)
    by_lines: list[tuple[int, int, int, MemoryEstimate | None]] = []
    scal, rows, accum = [], [], []  # each end rank's rows by lines: (scalars, micro-batch, micro-steps)
    for fam in families:
        g, _, dp, tp, zero, offload, _, pp, _, _, ep = fam
        per_dp = job.global_batch // dp
        mbs = [mb for mb in _divisors(per_dp) if per_dp // mb >= pp]
        if not mbs:
            continue
        try:
            ranks = heaviest_ranks(pp)
            ends = [estimate(_stage_layout(fam, mbs[0], per_dp, pool), pool.gpu.arch, r) for r in ranks]
            row_by_row = any(est.fb_lines is None for est in ends)  # (not lines in the micro-batch)
            boundary = None
            if per_dp % pp == 0 and not row_by_row:  # (per_dp / pp sequences: as many micro-steps as stages)
                boundary = estimate(_stage_layout(fam, per_dp // pp, per_dp, pool), pool.gpu.arch, 0)
            if row_by_row:
                each = [estimate(_stage_layout(fam, mb, per_dp, pool), pool.gpu.arch) for mb in mbs]
            else:
                each = [est for est in (*ends, boundary) if est is not None]
            for est in each:
                _check_host(est, pool, offload)
        except FtplanError as exc:
            refused.setdefault(str(exc), []).append(
                f"{g} GPUs tp {tp} pp {pp}{f' ep {ep}' if ep > 1 else ''} {ZERO_NAMES[zero]}"
            )
            continue
        if row_by_row:
            out.append((fam, np.array(mbs, dtype=float), np.array([e.device_total_bytes for e in each], float)))
            continue
        first, *later = (_scalars(est, est.fb_lines, job.training, zero, mbs[0]) for est in ends)
        regular = [mb for mb in mbs if per_dp // mb > pp]  # the first rank's rows by lines
        scal += [first] * len(regular)
        for other in later:  # (the second and the last rank: by lines at every micro-batch)
            scal += [other] * len(mbs)
        rows += regular + mbs * len(later)
        accum += [per_dp // mb for mb in regular + mbs * len(later)]
        by_lines.append((len(out), len(regular), len(later), boundary))
        out.append((fam, np.array(mbs, dtype=float), np.zeros(0)))  # (its bytes below)
    if scal:  # every family's rows by lines in one set of arrays
        lines = _device_rows(np.array(scal, dtype=float), np.array(rows, dtype=float), np.array(accum, float), job)
        at = 0
        for i, n, k, boundary in by_lines:
            fam, mbs, _ = out[i]
            first = lines[at : at + n]
            if boundary is not None:
                first = np.append(first, boundary.device_total_bytes)
            later = lines[at + n : at + n + k * len(mbs)].reshape(k, len(mbs)).max(axis=0)
            out[i] = (fam, mbs, np.maximum(first, later))
            at += n + k * len(mbs)
    return out


def hardware(pool: Pool, precision: Precision, efficiency: float | None = None) -> tm.Hardware:
    """The time model's view of a pool; every bandwidth comes from the GPU catalog."""
    gpu = pool.gpu
    missing = [k for k in ("hbm_gbs", "intra_node_gbs", "host_link_gbs") if getattr(gpu, k) is None]
    if missing:
        raise CatalogError(f"gpu {gpu.id}: no {', '.join(missing)} in the catalog. To fix: add them to gpus.yaml.")
    matmuls = efficiency or pool.efficiency or gpu.efficiency or tm.DEFAULT_EFFICIENCY
    attention = None  # (the default ratio to the matmuls')
    if gpu.attention_efficiency and gpu.efficiency:  # a stated efficiency scales the catalog's pair
        attention = gpu.attention_efficiency * matmuls / gpu.efficiency
    return tm.Hardware(
        peak_tflops=tm.peak_tflops(gpu.tflops.model_dump(), precision),
        efficiency=matmuls,
        attention_efficiency=min(attention, 1.0) if attention else None,
        hbm_gbs=gpu.hbm_gbs,
        intra_node_gbs=gpu.intra_node_gbs,
        host_link_gbs=gpu.host_link_gbs,
        gpus_per_node=pool.gpus_per_node,
        network_gbps=pool.network_gbps,
        fp8_tflops=gpu.tflops.fp8,
        fp8_ratio=gpu.fp8_matmul_ratio or tm.DEFAULT_FP8_MATMUL_RATIO,
        nvlink_domain=gpu.nvlink_domain,
        network_busbw_gbs=pool.allreduce_busbw_gbs,
        gpu_arch=gpu.arch,
        gpu_id=gpu.id,
        nvls=gpu.nvls,
    )


def _time_and_cost(
    rows: dict[str, Any], job: ResolvedJob, flops: tm.JobFlops, pool: Pool, efficiency: float | None
) -> dict[str, Any]:
    """``rows`` (a pool's fitting layouts, column by column) with their step time, duration, bands and cost."""
    hw = hardware(pool, job.training.precision, efficiency)
    gpus, mbs = rows["gpus"], rows["micro_batch"]
    t = tm.step_times(
        flops, job.arch, job.training, hw, rows["dp"], rows["tp"], rows["zero"],
        np.array([tm.OFFLOAD[o] for o in rows["offload"]]), np.array([tm.RECOMPUTE[r] for r in rows["recompute"]]),
        mbs, rows["grad_accum"], rows["pp"], dp_shard=rows["dp_shard"], cp=rows["cp"], ep=rows["ep"],
    )  # fmt: skip
    tokens_step = tm.step_tokens(job.training, job.global_batch)  # (data, not padding)
    steps = math.ceil(job.tokens / tokens_step)
    out = dict(rows, step_s=t.total, compute_s=t.compute, comm_s=t.communication, offload_s=t.offload,
               other_s=t.other, dispatch_s=t.dispatch, tokens_per_s=tokens_step / t.total)  # fmt: skip
    # model FLOPs of a data token: its attention spans its own sequence (or packed document)
    _, span = tm.sequence_lengths(job.training, mbs)
    model_flops = flops.linear + flops.attention * span / job.training.seq_len
    out["mfu"] = out["tokens_per_s"] * model_flops / (gpus * hw.peak_tflops * 1e12)
    hours = out["hours"] = steps * t.total / 3600
    # the job's duration band: the time model's errors on published runs of the same regime
    regimes, row_band = np.unique(np.stack([rows["pp"], rows["nodes"]], axis=1), axis=0, return_inverse=True)
    bands = [time_band(job.training, int(p), int(n), job.arch.is_moe) for p, n in regimes]
    row_band = row_band.reshape(-1)
    out["hours_band_low"] = _per_band(lambda h, b: b.interval(h)[0], hours, row_band, bands)
    out["hours_band_high"] = _per_band(lambda h, b: b.interval(h)[1], hours, row_band, bands)
    out["time_band"] = np.array([b.source() for b in bands], dtype=object)[row_band].tolist()
    out["gpu_hours"] = hours * gpus
    if pool.usd_per_node_hour is None:
        out["usd"] = np.full(len(hours), np.nan)
    elif pool.name.startswith("gpu:"):
        out["usd"] = out["gpu_hours"] * pool.usd_per_node_hour / pool.gpus_per_node
    else:  # a cloud instance is paid whole, however many of its GPUs the job uses
        out["usd"] = hours * np.ceil(gpus / pool.gpus_per_node) * pool.usd_per_node_hour
    out["headroom_bytes"] = pool.gpu.memory_bytes - rows["device_bytes"]
    return out


def rank(result: FitResult, by: str = "time", top: int = 10) -> pd.DataFrame:
    """The ``top`` layouts by ``time`` (job hours, then cost) or ``cost`` (dollars, then hours)."""
    frame = result.layouts
    if frame.empty:
        return frame
    keys = ["hours", "usd"] if by == "time" else ["usd", "hours"]
    order = [*keys, "pool", "gpus", "tp", "pp", "cp", "ep", "zero", "dp_shard", "offload", "recompute", "micro_batch"]
    ranked = frame.sort_values(order, kind="mergesort", na_position="last")
    # one row per family (its best micro-batch): the rest differ only in memory
    ranked = ranked.drop_duplicates(
        subset=["pool", "gpus", "tp", "pp", "cp", "ep", "zero", "dp_shard", "offload", "recompute"]
    )
    return ranked.head(top).reset_index(drop=True)
