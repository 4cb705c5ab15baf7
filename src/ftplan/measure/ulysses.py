"""DeepSpeed-Ulysses for ``ftplan measure --nproc``: a sequence split over ``layout.cp`` ranks, attention by all-to-all.

Each rank builds the whole model from the same seed; DeepSpeed's ``UlyssesSPAttentionHF.register_with_transformers``
(Arctic Long Sequence Training) replaces the model's SDPA attention with its all-to-all wrapper, and each rank
of a context-parallel group gets its contiguous ``seq_len / cp`` tokens of the group's sequences, with their
global position ids and labels, as DeepSpeed's ``UlyssesSPDataLoaderAdapter`` shards a batch. The ranks are then
wrapped for the job's ZeRO stage (DDP or FSDP2 over all of them), which shards the states over dp × cp as the
estimate does. DeepSpeed's own communication sits on the torch process group that is already running (gloo on
a CPU, NCCL on CUDA).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from ftplan.errors import MeasureError
from ftplan.job import ResolvedJob
from ftplan.memory import ContextParallel, Method


def check_ulysses(job: ResolvedJob) -> None:
    """Refuse, with the reason, what ``--nproc`` does not run of context parallelism."""
    lay = job.layout
    if job.training.context_parallel is not ContextParallel.ULYSSES:
        raise MeasureError(
            "context parallelism runs torch's ring attention on CUDA's SDPA kernels (flash, memory-efficient, "
            "cuDNN), which a CPU does not have; --nproc does not measure it. To fix: measure context_parallel "
            "ulysses, or cp 1 (the estimate splits the sequence and adds the ring's buffers, read from torch's source)."
        )
    if lay.tp > 1 or lay.pp > 1 or lay.ep > 1:
        raise MeasureError(
            "--nproc measures context parallelism with data parallelism alone. To fix: set layout.tp, pp and ep to 1."
        )
    if job.training.method is Method.QLORA:
        raise MeasureError("QLoRA needs bitsandbytes' CUDA kernels. To fix: measure lora.")


def register(model: Any, job: ResolvedJob) -> None:
    """Swap the model's SDPA attention for DeepSpeed's Ulysses wrapper over groups of ``cp`` ranks."""
    from ftplan.measure.deepspeed_zero import start

    start("context_parallel ulysses")
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF

    with contextlib.redirect_stdout(io.StringIO()):
        UlyssesSPAttentionHF.register_with_transformers(
            model_name_or_path=model, core_attn_implementation="sdpa", sequence_parallel_size=job.layout.cp,
            micro_batch_size=job.layout.micro_batch, seq_length=job.training.seq_len, seq_length_is_variable=False,
        )  # fmt: skip


def local_batch(batch: dict[str, Any], job: ResolvedJob, rank: int) -> dict[str, Any]:
    """This rank's contiguous share of its group's sequences, their global position ids and labels."""
    import torch

    cp, s = job.layout.cp, job.training.seq_len
    n, part = s // cp, rank % cp
    ids = batch["input_ids"]
    positions = torch.arange(s, device=ids.device).expand(ids.shape[0], s)
    cut = slice(part * n, (part + 1) * n)
    return {
        "input_ids": ids[:, cut].contiguous(),
        "labels": batch["labels"][:, cut].contiguous(),
        "position_ids": positions[:, cut].contiguous(),
    }
