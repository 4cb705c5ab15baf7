"""`ftplan export`: a verified plan as files launchers and schedulers run, one directory per run and a driver.

Formats (``FORMATS``):

* ``torchrun``: ``launch.sh`` and ``plan.env`` (every planned value, for torchtitan, Megatron or your own script);
* ``deepspeed``: ``ds_config.json`` (ZeRO stage, offload, batch sizes, precision), ``hostfile`` and ``launch.sh``;
* ``accelerate``: ``accelerate_config.yaml`` (FSDP2, its DeepSpeed plugin, or DDP) and ``launch.sh``;
* ``trl``: TRL's ``sft_config.json`` (``SFTConfig``/``TrainingArguments`` fields), PEFT's ``lora_config.json``,
  ``bnb_config.json`` for QLoRA, ``ds_config.json`` under ZeRO, and ``launch.sh``;
* ``slurm``: ``run.sbatch`` per run on owned or bought nodes and ``submit.sh``, which submits them in order with
  ``--begin`` and ``--dependency=afterok`` and records the job ids;
* ``skypilot``: ``task.yaml`` per cloud run and ``launch.sh`` (managed jobs for spot).

Every run directory but SkyPilot's (whose task carries them as ``envs``) has ``plan.env``, every planned value
(degrees, recomputation, optimizer, ...), which its launch script sources for the training script. The launcher
formats add ``run_node.sh NODE``, which starts each run of that node at its planned time after its
dependencies. Every run directory has ``SOURCES.md``: each field written and the plan field it came from. Files
are written atomically; the plan must pass the verifier first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ftplan.bands import time_band
from ftplan.catalog import Catalog
from ftplan.errors import FtplanError
from ftplan.export.launchers import Files, accelerate_files, deepspeed_files, torchrun_files, trl_files
from ftplan.export.runs import RunExport, run_exports
from ftplan.export.schedulers import node_driver, skypilot_driver, skypilot_files, slurm_driver, slurm_files
from ftplan.io import write_text_atomic
from ftplan.scenario import Campaign
from ftplan.schema.plan import Plan
from ftplan.verify import verify_plan

LAUNCHERS: dict[str, Callable[[RunExport], Files]] = {
    "torchrun": torchrun_files,
    "deepspeed": deepspeed_files,
    "accelerate": accelerate_files,
    "trl": trl_files,
}
FORMATS = (*LAUNCHERS, "slurm", "skypilot")
TIME_LEVEL = 0.9  # Slurm --time by default: the planned hours at the 90% quantile of the run's time band


def time_margin_of(campaign: Campaign, r: RunExport) -> float:
    """The share of planned hours a scheduler's limit adds by default: the time model's error on published runs
    of the run's regime at :data:`TIME_LEVEL` (never below zero)."""
    job = campaign.jobs[r.job.id]
    return max(0.0, time_band(job.training, r.layout.pp, r.num_nodes, job.arch.is_moe).error(TIME_LEVEL))


def _sources(r: RunExport, files: Files) -> str:
    lines = [f"# Where each field of run {r.id}'s files comes from", "", "| file | field | plan field |",
             "|---|---|---|"]  # fmt: skip
    lines += [f"| {f} | `{k}` | {v} |" for f, k, v in files.sources]
    return "\n".join(lines) + "\n"


def export_plan(
    campaign: Campaign,
    plan: Plan,
    fmt: str,
    out_dir: Path,
    time_margin: float | None = None,
    catalog: Catalog | None = None,
) -> list[Path]:
    """Write ``plan`` (verified against ``campaign``) as ``fmt`` under ``out_dir``; the paths written.
    ``time_margin``: the share of planned hours a Slurm limit adds (default: the run's time band, see
    :func:`time_margin_of`)."""
    if fmt not in FORMATS:
        raise FtplanError(f"unknown export format {fmt!r}. To fix: use one of {', '.join(FORMATS)}")
    violations = verify_plan(campaign, plan)
    if violations:
        raise FtplanError(
            f"the plan breaks {len(violations)} rule(s) of its scenario (first: {violations[0]}). "
            "To fix: export a plan that `ftplan check` accepts"
        )
    runs = run_exports(campaign, plan, catalog)
    if fmt == "slurm":
        chosen = [r for r in runs if r.pool_kind != "cloud"]
    elif fmt == "skypilot":
        chosen = [r for r in runs if r.pool_kind == "cloud"]
    else:
        chosen = runs
    if not chosen:
        where = "owned or bought nodes" if fmt == "slurm" else "cloud pools"
        raise FtplanError(f"no run of the plan is on {where}, which --to {fmt} schedules. To fix: pick another format")
    skipped = [r for r in runs if r not in chosen]
    out: dict[Path, str] = {}
    for r in chosen:
        if fmt == "slurm":
            files = slurm_files(r, time_margin_of(campaign, r) if time_margin is None else time_margin)
        elif fmt == "skypilot":
            files = skypilot_files(r)
        else:
            files = LAUNCHERS[fmt](r)
        for name, text in files.files.items():
            out[Path(r.dirname) / name] = text
        out[Path(r.dirname) / "SOURCES.md"] = _sources(r, files)
    if fmt == "slurm":
        out[Path("submit.sh")] = slurm_driver(chosen, skipped)
    elif fmt == "skypilot":
        out[Path("launch.sh")] = skypilot_driver(chosen, skipped)
    else:
        out[Path("run_node.sh")] = node_driver(chosen)
    written = []
    for rel, text in out.items():
        path = Path(out_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
        if path.suffix in (".sh", ".sbatch"):
            os.chmod(path, os.stat(path).st_mode | 0o111)
        written.append(path)
    return written


__all__ = ["FORMATS", "TIME_LEVEL", "export_plan", "time_margin_of"]
