"""Resolve a job file against the catalogs and run the memory model on it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ftplan.arch import Architecture, architecture_from_hf
from ftplan.bands import HeadroomPolicy, MemoryVerdict, effective_policy, load_bands, make_policy, memory_regime
from ftplan.catalog import Catalog, host_memory
from ftplan.errors import JobError
from ftplan.memory import (
    Fp8Setup,
    Layout,
    LoraSetup,
    MemoryEstimate,
    Method,
    Overheads,
    Precision,
    Training,
    ZeroStage,
    check_layout,
    estimate_memory,
)
from ftplan.schema.catalog import Gpu
from ftplan.schema.job import JobSpec, LoraSpec
from ftplan.units import GIB, MIB


@dataclass(frozen=True)
class ResolvedJob:
    """A job with its architecture, GPU, training recipe and layout looked up and typed."""

    name: str
    arch: Architecture
    training: Training
    layout: Layout
    gpu: Gpu | None
    overheads: Overheads
    hf_config: dict[str, Any] = field(default_factory=dict)  # the model's Hugging Face config fields
    tokens: float | None = None  # tokens to train on, all epochs together
    global_batch: int = 1  # sequences per optimizer step
    host_memory_bytes: int | None = None  # RAM per node offloaded states must fit in (None: unknown)
    host_memory_note: str = ""  # where an assumed RAM comes from
    policy: HeadroomPolicy | None = None  # the headroom the job file asks for (None: its scenario's or the default)


def resolve_job(spec: JobSpec, catalog: Catalog, source: str = "job") -> ResolvedJob:
    if spec.model is not None:
        arch = catalog.architecture(spec.model, f"{source}: model")
        name = spec.model
        hf_config = dict(catalog.model(spec.model).config)
    else:
        hf_config = dict(spec.architecture or {})
        arch = architecture_from_hf(hf_config, f"{source}: architecture")
        name = f"inline {arch.model_type} ({arch.total_params / 1e9:.2f}B)"
    gpu = catalog.gpu(spec.gpu, f"{source}: gpu") if spec.gpu else None
    if gpu is not None and spec.precision is Precision.FP8 and not gpu.tflops.fp8:
        raise JobError(
            f"{source}: precision fp8 on {gpu.id}, which has no FP8 tensor cores (no fp8 peak in the catalog). "
            "To fix: use precision bf16-mixed, or a GPU with FP8 (Ada, Hopper, Blackwell, MI300)."
        )
    lora = None
    if spec.method is not Method.FULL:
        ls = spec.lora or LoraSpec()
        if ls.target_modules is None:  # the model's attention projections
            attn = [x.name for x in next(iter(arch.block_linears.values())) if x.role in ("q", "k", "v", "qkv", "o")]
            targets = tuple(dict.fromkeys(attn))
        elif ls.target_modules == "all-linear":
            targets = ("all-linear",)
        else:
            targets = tuple(ls.target_modules)
        lora = LoraSetup(
            rank=ls.rank, alpha=int(ls.alpha), dropout=ls.dropout, target_modules=targets,
            modules_to_save=tuple(ls.modules_to_save), double_quant=ls.double_quant, base_fp32=ls.base_fp32,
            target_parameters=tuple(ls.target_parameters),
        )  # fmt: skip
    training = Training(
        method=spec.method, precision=spec.precision, optimizer=spec.optimizer, seq_len=spec.seq_len,
        target_len=spec.target_len or 0, attention=spec.attention, attention_mask=spec.attention_mask,
        loss=spec.loss, dropout=spec.dropout, zero_grad=spec.zero_grad, model_output=spec.model_output, lora=lora,
        capacity_factor=spec.capacity_factor, sequence_parallel=spec.sequence_parallel,
        context_parallel=spec.context_parallel, expert_dispatch=spec.expert_dispatch, kernels=spec.kernels,
        engine=spec.engine, pipeline_split=spec.pipeline_split,
        attention_kernel=spec.attention_kernel, tp_overlap=spec.tp_overlap,
        param_gather_overlap=spec.param_gather_overlap,
        data=spec.data.sequence_data() if spec.data else None,
        fp8=Fp8Setup(spec.fp8.recipe, spec.fp8.all_gather, spec.fp8.weight_cache) if spec.fp8 else None,
    )  # fmt: skip
    per_node = spec.gpus_per_node or (gpu.max_gpus_per_node if gpu else 8)
    lay = spec.layout
    layout = Layout(
        dp=lay.dp, tp=lay.tp, zero=ZeroStage(lay.zero), offload=lay.offload, recompute=lay.recompute,
        micro_batch=spec.micro_batch, grad_accum=spec.grad_accum, gpus_per_node=per_node, pp=lay.pp,
        pp_schedule=lay.pp_schedule, virtual_stages=lay.virtual_stages, dp_shard=lay.dp_shard or 0, cp=lay.cp,
        ep=lay.ep,
    )  # fmt: skip
    o, overheads = spec.overheads, Overheads()
    if o.cuda_context_mib is not None:
        overheads = replace(overheads, cuda_context_bytes=int(o.cuda_context_mib * MIB))
    if o.allocator_fraction is not None:
        overheads = replace(overheads, allocator_fraction=o.allocator_fraction)
    tokens = None
    if spec.tokens is not None:
        tokens = spec.tokens * spec.epochs
    elif spec.samples is not None:
        tokens = spec.samples * (spec.data.sequence_data().mean if spec.data else spec.seq_len) * spec.epochs
    global_batch = spec.global_batch or spec.micro_batch * spec.grad_accum * lay.dp
    try:
        check_layout(arch, training, layout)
    except JobError as exc:
        raise JobError(f"{source}: {exc}") from None
    ram, ram_note = host_memory(catalog, gpu, per_node, spec.host_memory_gib)
    policy = make_policy(spec.memory_confidence, spec.memory_margin, source)
    return ResolvedJob(
        name, arch, training, layout, gpu, overheads, hf_config, tokens, global_batch, ram, ram_note, policy
    )


def memory_verdict(job: ResolvedJob, est: MemoryEstimate, policy: HeadroomPolicy | None = None) -> MemoryVerdict:
    """``est``'s device total with its error band, under ``policy`` (else the job's, else the default)."""
    band = load_bands().band("memory", memory_regime(job.arch, job.training, job.layout))
    policy = effective_policy(policy, job.policy)
    return MemoryVerdict(policy, band, est.device_total_bytes, est.gpu_memory_bytes, est.host_fits)


def estimate_job(job: ResolvedJob) -> MemoryEstimate:
    """Run the memory model on a resolved job (GPU memory and arch from the catalog)."""
    est = estimate_memory(
        job.arch,
        job.training,
        job.layout,
        gpu_memory_bytes=job.gpu.memory_bytes if job.gpu else None,
        gpu_arch=job.gpu.arch if job.gpu else "",
        overheads=job.overheads,
    )
    if not est.host_terms:
        return est
    if job.host_memory_bytes is None:
        need = est.host_bytes_per_node / GIB
        unknown = f"node RAM unknown: the host states need {need:.1f} GiB per node (set host_memory_gib)"
        return replace(est, notes=(*est.notes, unknown))
    notes = est.notes + ((job.host_memory_note,) if job.host_memory_note else ())
    return replace(est, host_memory_bytes=job.host_memory_bytes, notes=notes)
