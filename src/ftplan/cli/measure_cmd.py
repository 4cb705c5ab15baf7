"""`ftplan measure`: run a real training step of a job and compare it with the estimate."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from ftplan.catalog import load_catalog
from ftplan.cli.common import FORMAT_HELP, Format, check_writable, emit, number, render
from ftplan.job import resolve_job
from ftplan.memory import Engine
from ftplan.report.tables import dist_measure_table, measure_table
from ftplan.schema.job import load_job, parse_job


class Device(StrEnum):
    """Where the measured step runs."""

    CPU = "cpu"
    CUDA = "cuda"


def measure(
    job: Path = typer.Argument(..., help="Job YAML (as for `ftplan memory`)."),
    device: Device = typer.Option(Device.CPU, "--device", help="cpu | cuda"),
    steps: int = typer.Option(1, "--steps", help="Measured steps after one warm-up step.", callback=number(1, 1000)),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights and tokens.", callback=number(0)),
    nproc: int = typer.Option(
        1,
        "--nproc",
        help="Processes: 2-8 run the job's data-parallel layout (layout.dp ranks).",
        callback=number(1, 8),
    ),
    engine: Engine | None = typer.Option(
        None,
        "--engine",
        help="With --nproc, what runs the ZeRO stage (overrides the job's engine): torch (DDP, "
        "ZeroRedundancyOptimizer, FSDP2) | deepspeed (DeepSpeed's ZeRO engine, with the config `ftplan export --to "
        "deepspeed` writes).",
    ),
    traffic: bool = typer.Option(
        False,
        "--traffic",
        help="Also count the bytes a token moves through a layer's and the head's memory-bound operations (norms, "
        "activations, casts, LoRA's adapter chain) beside the time model's (on the CPU: the model with 2 and 3 "
        "layers at two lengths).",
    ),
    format: Format = typer.Option(Format.TABLE, "--format", help=FORMAT_HELP),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Build the job's model from its config (random weights), train a step, and hold the estimate to it."""
    from ftplan.measure import measure_distributed, measure_job

    check_writable(output)
    spec = load_job(job)
    if engine is not None:
        spec = parse_job(spec.model_dump(exclude_unset=True) | {"engine": engine.value}, str(job))
    resolved = resolve_job(spec, load_catalog(), str(job))
    if nproc > 1 and traffic:
        raise typer.BadParameter("counts one process's operations. To fix: drop --nproc, or drop --traffic.",
                                 param_hint="--traffic")  # fmt: skip
    if nproc > 1:
        dist = measure_distributed(resolved, nproc, device=device.value, steps=steps, seed=seed)
        ranks = [comparison_to_dict(c) for c in dist.ranks]
        for r, c in zip(ranks, dist.ranks, strict=True):
            if c.measurement.expert_load is not None:
                r["expert_load"] = c.measurement.expert_load
        data = {"ranks": ranks, "worst_rank": dist.ranks.index(dist.worst)}
        rows = [{"rank": i, **term} for i, r in enumerate(ranks) for term in r["terms"]]
        emit(render(format, lambda: dist_measure_table(dist), lambda: data, lambda: rows), output)
        return
    comparison = measure_job(resolved, device=device.value, steps=steps, seed=seed, count_ops=True,
                             count_traffic=traffic)  # fmt: skip
    data = comparison_to_dict(comparison)
    emit(render(format, lambda: measure_table(comparison), lambda: data, lambda: data["terms"]), output)


def comparison_to_dict(c: Any) -> dict[str, Any]:
    """The JSON form of a measurement beside its estimate (keys are part of the interface)."""
    m = c.measurement
    return {
        "model": c.job.name,
        "device": m.device,
        "steps": m.steps,
        "terms": [
            {
                "term": r.term,
                "estimate_bytes": int(r.estimate),
                "measured_bytes": int(r.measured),
                "rel_error": r.rel_error,
            }
            for r in c.rows
        ],
        "saved_by_layer": m.saved_by_layer,
        "peak_categories": m.peak_categories,
        **({"ops": _ops(c)} if m.ops is not None else {}),
        **({"traffic": _traffic(c)} if c.traffic is not None else {}),
        **({"time": _time(c)} if m.step_seconds is not None else {}),
    }


def _ops(c: Any) -> dict[str, Any]:
    """Operations a micro-step dispatched, beside the time model's count."""
    (f, b), (mf, mb) = c.measurement.ops, c.model_ops
    return {"forward": f, "backward": b, "model_forward": mf, "model_backward": mb}


def _traffic(c: Any) -> dict[str, Any]:
    """Bytes a token moved through memory-bound operations, beside the time model's."""
    ((lf, lb), (hf, hb)), ((mf, mb), (mhf, mhb)) = c.traffic, c.model_traffic
    return {"layer_forward": lf, "layer_backward": lb, "head": hf + hb,
            "model_layer_forward": mf, "model_layer_backward": mb, "model_head": mhf + mhb}  # fmt: skip


def _time(c: Any) -> dict[str, Any]:
    """A GPU step's seconds, beside the time model's on the catalog's GPU (null where the catalog has none)."""
    t = c.model_step
    parts = ("compute", "communication", "offload", "other", "dispatch")
    return {
        "step_seconds": c.measurement.step_seconds,
        "model_gpu": c.model_gpu,
        "model_step_seconds": None if t is None else float(t.total[0]),
        "model_parts_seconds": None if t is None else {p: float(getattr(t, p)[0]) for p in parts},
    }
