"""`ftplan memory`: will this job fit, and where does the memory go?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ftplan.bands import MemoryVerdict
from ftplan.catalog import load_catalog
from ftplan.cli.common import (
    CONFIDENCE_OPTION,
    FORMAT_HELP,
    FROM_OPTION,
    MARGIN_OPTION,
    Format,
    check_writable,
    cli_policy,
    emit,
    render,
)
from ftplan.importers import import_config
from ftplan.io import read_yaml
from ftplan.job import estimate_job, memory_verdict, resolve_job
from ftplan.memory import Engine
from ftplan.report.tables import memory_table
from ftplan.schema.job import parse_job

_LAYOUT_KEYS = (
    "dp", "tp", "zero", "offload", "recompute", "pp", "pp_schedule", "virtual_stages", "dp_shard", "cp", "ep",
)  # fmt: skip


def memory(
    job: Path | None = typer.Argument(None, help="Job YAML (see README); flags override its fields."),
    model: str | None = typer.Option(None, "--model", help="Catalog model id."),
    method: str | None = typer.Option(None, "--method", help="full | lora | qlora"),
    gpu: str | None = typer.Option(None, "--gpu", help="Catalog GPU id or alias."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Tokens per sequence."),
    micro_batch: int | None = typer.Option(None, "--micro-batch", help="Sequences per GPU per micro-step."),
    grad_accum: int | None = typer.Option(None, "--grad-accum", help="Micro-steps per optimizer step."),
    precision: str | None = typer.Option(
        None, "--precision", help="fp32 | fp16-mixed | bf16-mixed | bf16-pure | bf16-fp32-adapters | fp8"
    ),
    optimizer: str | None = typer.Option(
        None,
        "--optimizer",
        help="adamw | adamw-fused | adamw-forloop | adamw-8bit | sgd | adafactor | paged-adamw | paged-adamw-8bit",
    ),
    dp: int | None = typer.Option(None, "--dp", help="Data-parallel degree."),
    tp: int | None = typer.Option(None, "--tp", help="Tensor-parallel degree."),
    zero: str | None = typer.Option(None, "--zero", help="ZeRO stage 0-3 or FSDP name (full_shard, ...)."),
    offload: str | None = typer.Option(None, "--offload", help="none | optimizer | optimizer+params"),
    recompute: str | None = typer.Option(None, "--recompute", help="none | selective | full"),
    pp: int | None = typer.Option(None, "--pp", help="Pipeline-parallel degree (stages)."),
    pp_schedule: str | None = typer.Option(None, "--pp-schedule", help="gpipe | 1f1b | interleaved-1f1b"),
    virtual_stages: int | None = typer.Option(
        None, "--virtual-stages", help="interleaved-1f1b: chunks of layers per pipeline rank."
    ),
    cp: int | None = typer.Option(None, "--cp", help="Context-parallel degree (ring attention)."),
    ep: int | None = typer.Option(None, "--ep", help="Expert-parallel degree (MoE: experts split over ep GPUs)."),
    capacity_factor: float | None = typer.Option(
        None, "--capacity-factor", help="Expert parallelism: most routed rows a GPU takes, over a balanced share."
    ),
    dp_shard: int | None = typer.Option(
        None, "--dp-shard", help="HSDP: data-parallel ranks a ZeRO-2/3 shard group spans (default: all)."
    ),
    attention: str | None = typer.Option(None, "--attention", help="sdpa | eager"),
    attention_mask: str | None = typer.Option(
        None, "--attention-mask", help="none (packed or equal lengths) | causal | padded"
    ),
    loss: str | None = typer.Option(None, "--loss", help="standard | chunked | fused"),
    model_output: str | None = typer.Option(
        None,
        "--model-output",
        help="dropped (Trainer) | kept (the loop holds the output) | kept-fp32 (Transformers < 4.46)",
    ),
    sequence_parallel: str | None = typer.Option(
        None,
        "--sequence-parallel",
        help="tp > 1: torch (DTensor plans keep gathered inputs whole) | megatron (kept sharded)",
    ),
    context_parallel: str | None = typer.Option(
        None, "--context-parallel", help="cp > 1: ring (torch's ring attention) | ulysses (DeepSpeed-Ulysses)"
    ),
    expert_dispatch: str | None = typer.Option(
        None, "--expert-dispatch", help="ep > 1: alltoall | deepep (DeepEP, whose buffers sit outside PyTorch)"
    ),
    pipeline_split: str | None = typer.Option(
        None, "--pipeline-split", help="pp > 1: even | weighted (embeddings and head count as a layer each)"
    ),
    fp8_recipe: str | None = typer.Option(None, "--fp8-recipe", help="precision fp8: tensorwise | rowwise"),
    fp8_all_gather: bool | None = typer.Option(
        None, "--fp8-all-gather/--no-fp8-all-gather", help="precision fp8, zero 3: gather weight shards in FP8."
    ),
    fp8_weight_cache: bool | None = typer.Option(
        None,
        "--fp8-weight-cache/--no-fp8-weight-cache",
        help="precision fp8, zero 0-1: weights cast once a step and cached (Transformer Engine under Megatron).",
    ),
    lora_rank: int | None = typer.Option(None, "--lora-rank", help="LoRA rank."),
    lora_targets: str | None = typer.Option(None, "--lora-targets", help="Comma-separated modules or all-linear."),
    gpus_per_node: int | None = typer.Option(None, "--gpus-per-node", help="GPUs sharing one host."),
    memory_confidence: float | None = CONFIDENCE_OPTION,
    memory_margin: str | None = MARGIN_OPTION,
    engine: str | None = typer.Option(
        None, "--engine", help="torch | deepspeed: what runs data parallelism and ZeRO (DeepSpeed's ZeRO-3 holds more)."
    ),
    from_format: str | None = FROM_OPTION,
    format: Format = typer.Option(Format.TABLE, "--format", help=FORMAT_HELP),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Per-GPU memory breakdown of one fine-tuning job, with a fits / does-not-fit verdict."""
    check_writable(output)
    data: dict[str, Any] = {}
    source = "command line"
    if job is not None and from_format is not None:
        imported = import_config(from_format, job, load_catalog(), model, seq_len, dp or 1)
        data, source = dict(imported.job), str(job)
    elif job is not None:
        loaded = read_yaml(job)
        if not isinstance(loaded, dict):
            from ftplan.errors import JobError

            raise JobError(f"{job}: expected a mapping of job fields.")
        data, source = dict(loaded), str(job)
    flags = dict(
        model=model, method=method, gpu=gpu, seq_len=seq_len, micro_batch=micro_batch, grad_accum=grad_accum,
        precision=precision, optimizer=optimizer, attention=attention, attention_mask=attention_mask, loss=loss,
        model_output=model_output, gpus_per_node=gpus_per_node, capacity_factor=capacity_factor,
        sequence_parallel=sequence_parallel, context_parallel=context_parallel, engine=engine,
        expert_dispatch=expert_dispatch, pipeline_split=pipeline_split,
    )  # fmt: skip
    for key, value in flags.items():
        if value is not None:
            data[key] = value
    if model is not None:
        data.pop("architecture", None)
    layout = dict(data.get("layout") or {})
    for key, value in zip(
        _LAYOUT_KEYS,
        (dp, tp, zero, offload, recompute, pp, pp_schedule, virtual_stages, dp_shard, cp, ep),
        strict=True,
    ):
        if value is not None:
            layout[key] = value
    if layout:
        data["layout"] = layout
    fp8_flags = {"recipe": fp8_recipe, "all_gather": fp8_all_gather, "weight_cache": fp8_weight_cache}
    if any(v is not None for v in fp8_flags.values()):
        data["fp8"] = dict(data.get("fp8") or {}) | {k: v for k, v in fp8_flags.items() if v is not None}
    if lora_rank is not None or lora_targets is not None:
        lora = dict(data.get("lora") or {})
        if lora_rank is not None:
            lora["rank"] = lora_rank
        if lora_targets is not None:
            lora["target_modules"] = "all-linear" if lora_targets == "all-linear" else lora_targets.split(",")
        data["lora"] = lora
    spec = parse_job(data, source)
    resolved = resolve_job(spec, load_catalog(), source)
    est = estimate_job(resolved)
    verdict = memory_verdict(resolved, est, cli_policy(memory_confidence, memory_margin))
    t, lay = resolved.training, resolved.layout
    title = (
        f"{resolved.name} · {t.method.value} · {t.precision_label} · {t.optimizer.value} · "
        f"seq {t.seq_len} × micro-batch {lay.micro_batch} · dp {lay.dp} tp {lay.tp}"
        + (f" ({t.sequence_parallel.value} sequence parallelism)" if lay.tp > 1 else "")
        + f" zero {int(lay.zero)} "
        f"offload {lay.offload.value} recompute {lay.recompute.value}"
        + (f" pp {lay.pp} {lay.pp_schedule.value} ({t.pipeline_split.value} split)" if lay.pp > 1 else "")
        + (f" (HSDP: shard groups of {lay.shard})" if lay.replicas > 1 else "")
        + (f" cp {lay.cp} ({t.context_parallel.value})" if lay.cp > 1 else "")
        + (f" ep {lay.ep} (capacity factor {t.capacity_factor:g})" if lay.ep > 1 else "")
        + (f" · engine {t.engine.value}" if t.engine is not Engine.TORCH else "")
        + (f" · {resolved.gpu.id}" if resolved.gpu else "")
    )
    rows = [{"where": "gpu", "term": k, "bytes": v} for k, v in est.gpu_terms.items()]
    rows += [{"where": "host", "term": k, "bytes": v} for k, v in est.host_terms.items()]
    rows.append({"where": "gpu", "term": "device_total", "bytes": est.device_total_bytes})
    gpu_id = resolved.gpu.id if resolved.gpu else None
    emit(render(format, lambda: memory_table(est, title, verdict),
                lambda: estimate_to_dict(est, resolved.name, gpu_id, verdict), lambda: rows), output)  # fmt: skip


def estimate_to_dict(est: Any, model: str, gpu: str | None, verdict: MemoryVerdict | None = None) -> dict[str, Any]:
    """The JSON form of a memory estimate (keys are part of the interface): ``fits`` is under the headroom
    policy (``memory``), ``estimate_fits`` the bare estimate's."""
    fits = est.fits if verdict is None else verdict.fits
    return {
        "model": model,
        "gpu": gpu,
        "peak_allocated_bytes": est.peak_allocated_bytes,
        "peak_reserved_bytes": est.peak_reserved_bytes,
        "device_total_bytes": est.device_total_bytes,
        "host_bytes_per_node": est.host_bytes_per_node,
        "host_memory_bytes": est.host_memory_bytes,
        "gpu_memory_bytes": est.gpu_memory_bytes,
        "fits": fits,
        "estimate_fits": est.fits,
        "headroom_bytes": est.headroom_bytes,
        "peak_phase": est.peak_phase,
        "breakdown": est.gpu_terms,
        "host_breakdown": est.host_terms,
        "notes": list(est.notes),
        **({"memory": verdict.as_dict()} if verdict is not None else {}),
    }
