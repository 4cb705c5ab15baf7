"""`ftplan fit`: the fastest or cheapest layouts of one job on GPUs or cloud instances."""

from __future__ import annotations

import json
from dataclasses import replace
from enum import StrEnum
from pathlib import Path

import pandas as pd
import typer

from ftplan.catalog import load_catalog
from ftplan.cli.common import (
    AT_LEAST_ONE,
    CONFIDENCE_OPTION,
    FORMAT_HELP,
    FROM_OPTION,
    MARGIN_OPTION,
    POSITIVE,
    Format,
    check_writable,
    cli_policy,
    emit,
    number,
    render,
)
from ftplan.errors import FtplanError
from ftplan.fit import FitResult, fit_job, gpu_pool, instance_pool, rank
from ftplan.importers import import_config
from ftplan.job import resolve_job
from ftplan.limits import MAX_BUSBW_GBS, MAX_RUN_NODES, MAX_USD_PER_HOUR
from ftplan.memory.pipeline import PipelineSplit
from ftplan.memory.setup import AttentionKernel, Engine, ExpertDispatch, Kernels
from ftplan.report.tables import fit_table
from ftplan.schema.job import load_job, parse_job


class By(StrEnum):
    TIME = "time"
    COST = "cost"


COLUMNS = [
    "pool", "gpus", "nodes", "dp", "tp", "pp", "cp", "ep", "zero", "dp_shard", "offload", "recompute", "micro_batch",
    "grad_accum",
    "device_bytes", "headroom_bytes", "required_bytes", "band_low_bytes", "band_high_bytes", "fit_probability",
    "step_s", "compute_s", "comm_s", "offload_s", "other_s", "dispatch_s", "tokens_per_s",
    "mfu", "hours", "hours_band_low", "hours_band_high", "gpu_hours", "usd", "memory_band", "time_band",
]  # fmt: skip


def fit(
    job: Path = typer.Argument(..., help="Job YAML with tokens (or samples) and a global batch."),
    gpu: list[str] = typer.Option([], "--gpu", help="GPU type (repeatable)."),
    gpus: int | None = typer.Option(
        None,
        "--gpus",
        help="Most GPUs of each --gpu pool (default: one node).",
        callback=number(1, MAX_RUN_NODES * 64),
    ),
    gpu_price: float | None = typer.Option(
        None, "--gpu-price", help="USD per GPU-hour for --gpu pools.", callback=number(0, MAX_USD_PER_HOUR)
    ),
    network_gbps: float | None = typer.Option(
        None, "--network-gbps", help="Network per node for --gpu pools.", callback=POSITIVE
    ),
    busbw_gbs: float | None = typer.Option(
        None,
        "--busbw-gbs",
        help="All-reduce bus bandwidth across nodes (GB/s), nccl-tests over all of each node's GPUs, every pool.",
        callback=number(0, MAX_BUSBW_GBS, lo_open=True),
    ),
    host_memory_gib: float | None = typer.Option(
        None, "--host-memory-gib", help="RAM per node of --gpu pools (offloaded states must fit).", callback=POSITIVE
    ),
    instance: list[str] = typer.Option([], "--instance", help="Cloud instance CLOUD/TYPE (repeatable)."),
    nodes: int = typer.Option(
        1, "--nodes", help="Most nodes of each --instance pool.", callback=number(1, MAX_RUN_NODES)
    ),
    spot: bool = typer.Option(False, "--spot", help="Price instances at spot instead of on-demand."),
    by: By = typer.Option(By.TIME, "--by", help="time | cost"),
    top: int = typer.Option(10, "--top", help="How many layouts to show.", callback=AT_LEAST_ONE),
    efficiency: float | None = typer.Option(
        None,
        "--efficiency",
        help="Override the fraction of peak of large GEMMs (0, 1].",
        callback=number(0, 1, lo_open=True),
    ),
    memory_confidence: float | None = CONFIDENCE_OPTION,
    memory_margin: str | None = MARGIN_OPTION,
    from_format: str | None = FROM_OPTION,
    tokens: int | None = typer.Option(
        None, "--tokens", help="Training tokens (a config from --from states none).", callback=AT_LEAST_ONE
    ),
    kernels: Kernels | None = typer.Option(
        None, "--kernels", help="eager | fused: how the training loop runs on the GPU (overrides the job's)."
    ),
    attention_kernel: AttentionKernel | None = typer.Option(
        None,
        "--attention-kernel",
        help="flash2 | cudnn | flash3 | flex: the flash-attention kernel (overrides the job's; each at its measured "
        "speed on Hopper and Blackwell GPUs, FlashAttention-2's elsewhere; flex at 90%/85% of FlashAttention-2's).",
    ),
    engine: Engine | None = typer.Option(
        None, "--engine", help="torch | deepspeed: what runs data parallelism and ZeRO (overrides the job's)."
    ),
    expert_dispatch: ExpertDispatch | None = typer.Option(
        None,
        "--expert-dispatch",
        help="alltoall | deepep: how expert parallelism moves tokens (deepep: DeepEP, a token once to each GPU and "
        "node holding its experts; overrides the job's).",
    ),
    pipeline_split: PipelineSplit | None = typer.Option(
        None,
        "--pipeline-split",
        help="even | weighted: how pipeline layouts cut the layers (weighted: the embeddings and the head count as a "
        "layer each, torchtitan's default; overrides the job's).",
    ),
    tp_overlap: bool | None = typer.Option(
        None,
        "--tp-overlap/--no-tp-overlap",
        help="Tensor parallelism's collectives overlapped with their matmuls (async TP, Megatron's "
        "--tp-comm-overlap; needs kernels fused; overrides the job's).",
    ),
    param_gather_overlap: bool | None = typer.Option(
        None,
        "--param-gather-overlap/--no-param-gather-overlap",
        help="ZeRO-1's all-gather of the update hidden in the next forward (Megatron's --overlap-param-gather, "
        "NeMo's overlap_param_sync; overrides the job's).",
    ),
    fp8_weight_cache: bool | None = typer.Option(
        None,
        "--fp8-weight-cache/--no-fp8-weight-cache",
        help="precision fp8: weights cast to FP8 once a step and cached for its micro-batches below ZeRO-2 "
        "(Transformer Engine under Megatron-Core or NeMo; overrides the job's).",
    ),
    format: Format = typer.Option(Format.TABLE, "--format", help=FORMAT_HELP),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Rank the layouts of one job that fit, by time or cost, and say why the others do not."""
    check_writable(output)
    catalog = load_catalog()
    if from_format is not None:
        data = import_config(from_format, job, catalog).job
        if tokens is not None:
            data["tokens"] = tokens
        spec = parse_job(data, str(job))
    else:
        spec = load_job(job)
        if tokens is not None:
            spec = parse_job(spec.model_dump(exclude_unset=True) | {"tokens": tokens, "samples": None}, str(job))
    chosen = (
        ("kernels", kernels), ("attention_kernel", attention_kernel), ("engine", engine),
        ("expert_dispatch", expert_dispatch), ("pipeline_split", pipeline_split),
    )  # fmt: skip
    overrides: dict[str, object] = {k: v.value for k, v in chosen if v is not None}
    for name, flag in (("tp_overlap", tp_overlap), ("param_gather_overlap", param_gather_overlap)):
        if flag is not None:
            overrides[name] = flag
    if fp8_weight_cache is not None:
        overrides["fp8"] = (spec.fp8.model_dump(exclude_unset=True) if spec.fp8 else {}) | {
            "weight_cache": fp8_weight_cache
        }
    if overrides:
        spec = parse_job(spec.model_dump(exclude_unset=True) | overrides, str(job))
    resolved = resolve_job(spec, catalog, str(job))
    pools = [gpu_pool(catalog, g, gpus, gpu_price, network_gbps, host_memory_gib) for g in gpu]
    pools += [instance_pool(catalog, i, nodes, spot) for i in instance]
    if not pools:
        if resolved.gpu is None:
            raise FtplanError(
                "no pool to fit on. To fix: give --gpu NAME or --instance CLOUD/TYPE (or gpu: in the job)."
            )
        pools = [gpu_pool(catalog, resolved.gpu.id, gpus, gpu_price, network_gbps, host_memory_gib)]
    if busbw_gbs is not None:
        if not any(p.network_gbps for p in pools):
            raise FtplanError(
                "--busbw-gbs: no pool has a network, so no run crosses nodes and a bus bandwidth across nodes "
                "is never used. To fix: give --network-gbps with --gpus beyond a node, or an instance with a network."
            )
        pools = [replace(p, allreduce_busbw_gbs=busbw_gbs) if p.network_gbps else p for p in pools]
    result = fit_job(resolved, pools, efficiency, cli_policy(memory_confidence, memory_margin))
    best = rank(result, by.value, top)
    records = json.loads(best[COLUMNS].to_json(orient="records")) if not best.empty else []
    payload = {
        "job": resolved.name,
        "by": by.value,
        "memory_policy": result.policy.as_dict(),
        "evaluated": result.evaluated,
        "fitting": len(result.layouts),
        "layouts": records,
        "excluded": result.excluded,
        "notes": result.time_notes if records else [],  # (where the model is least sure of the layouts' time)
    }
    rows = pd.DataFrame(records, columns=COLUMNS)
    emit(render(format, lambda: fit_table(result, best, by.value), lambda: payload, lambda: rows), output)
    if best.empty:
        raise FtplanError(_nothing_fits(result))


def _nothing_fits(result: FitResult) -> str:
    closest = result.closest or (result.excluded[0] if result.excluded else "no layout was possible")
    return f"no layout of {result.job.name} fits on the pools given. Closest: {closest}"
