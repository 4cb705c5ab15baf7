"""DeepSpeed's ZeRO engine for ``ftplan measure --nproc N --engine deepspeed``.

Each rank builds the model from the same seed and hands it, with the job's optimizer (as the Hugging Face
Trainer hands its own), to ``deepspeed.initialize`` under the ``ds_config.json`` that ``ftplan export --to
deepspeed`` writes for the same layout (:func:`ftplan.export.launchers.deepspeed_json`: ZeRO stage, buckets
sized in the model's blocks, bf16/fp16). DeepSpeed then runs the steps: ``engine(**batch)``,
``engine.backward`` and ``engine.step`` at the accumulation boundary. DeepSpeed keeps the weights, gradients
and optimizer states in flat buffers of its own, so they are measured together: every tensor alive as a
measured step starts. Its communication sits on the torch process group already running (gloo on a CPU,
NCCL on CUDA); on a CPU its accelerator is its CPU one (``DS_ACCELERATOR=cpu``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from typing import Any

from ftplan.errors import MeasureError
from ftplan.job import ResolvedJob
from ftplan.memory import Method, Offload, Precision, ZeroStage

# the recipes measured on a CPU: fp32, and DeepSpeed's bf16 mode (16-bit weights over an fp32 master partition,
# the mixed recipe's states); its fp16 mode's loss scaling runs CUDA kernels
RECIPES = (Precision.FP32, Precision.BF16_MIXED)


def check(job: ResolvedJob, nproc: int) -> None:
    """Refuse, with the reason, what ``--engine deepspeed`` does not run."""
    lay, tr = job.layout, job.training
    if lay.zero == ZeroStage.NONE:
        raise MeasureError("engine deepspeed is measured at ZeRO stages 1-3; the job has zero 0. To fix: set "
                           "layout.zero 1, 2 or 3, or measure ZeRO 0 with --engine torch (DDP).")  # fmt: skip
    if lay.dp != nproc:
        raise MeasureError(f"--nproc {nproc} runs {nproc} data-parallel ranks; the job has layout.dp {lay.dp}. "
                           f"To fix: set layout.dp {nproc}.")  # fmt: skip
    if lay.offload is not Offload.NONE:
        raise MeasureError(
            "offload moves states from GPU memory to the host; on a CPU there is nothing to move. "
            "To fix: measure offload none (the model moves the offloaded terms to the host)."
        )
    if tr.precision not in RECIPES:
        names = " or ".join(p.value for p in RECIPES)
        raise MeasureError(f"--engine deepspeed measures fp32 and bf16-mixed on a CPU; the job has precision "
                           f"{tr.precision.value}. To fix: set precision {names}.")  # fmt: skip
    if tr.method is Method.QLORA:
        raise MeasureError("QLoRA needs bitsandbytes' CUDA kernels. To fix: measure lora.")


def config(job: ResolvedJob) -> dict[str, Any]:
    """The DeepSpeed config of the job's layout, as ``ftplan export --to deepspeed`` writes it."""
    from ftplan.export.launchers import deepspeed_json

    lay = job.layout
    cfg, _ = deepspeed_json(job.arch, lay.micro_batch, lay.grad_accum, lay.dp, int(lay.zero), lay.offload.value,
                            job.training.precision.value)  # fmt: skip
    # the Trainer's optimizer, handed over as ``optimizer=``: DeepSpeed wraps it (torch's AdamW is not one of
    # the optimizers its ZeRO was tested with, which it otherwise refuses)
    return cfg | {"zero_allow_untested_optimizer": True}


def start(what: str) -> Any:
    """DeepSpeed, imported, quiet, and its communication started on the torch process group already running;
    ``what`` names what needs it (a refusal's reason)."""
    try:
        import deepspeed
        import deepspeed.comm.torch  # (the module itself, which ``import … as`` would not give: see below)
    except ImportError as exc:
        raise MeasureError(f"{what} is measured with DeepSpeed ({exc}). To fix: install 'ftplan[exports]', "
                           "which brings DeepSpeed.") from None  # fmt: skip
    # DeepSpeed compiles a shared-memory all-reduce for CPU inference when its communication starts (a minute of
    # two compilers on a fresh machine); the collectives here are torch's, so nothing is compiled. The module is
    # taken from sys.modules: ``deepspeed.comm`` has an attribute ``torch``, PyTorch itself, which
    # ``import deepspeed.comm.torch as m`` binds instead
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    for name in ("DeepSpeed", "deepspeed"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        deepspeed.init_distributed(dist_backend=None, verbose=False)
    return deepspeed


def initialize(model: Any, opt: Any, job: ResolvedJob, device: str, rank: int) -> tuple[Any, Any]:
    """DeepSpeed's engine over ``model`` and ``opt``: the engine, and an optimizer whose ``step`` is the engine's."""
    os.environ.setdefault("LOCAL_RANK", str(rank))
    os.environ.setdefault("DS_ACCELERATOR", device)
    deepspeed = start("engine deepspeed")
    with contextlib.redirect_stdout(io.StringIO()):
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=config(job))
    return engine, _EngineStep(engine, job.layout.grad_accum)


class _EngineStep:
    """The optimizer the measurement loop steps: DeepSpeed's engine (it zeroes the gradients itself)."""

    def __init__(self, engine: Any, accum: int) -> None:
        self.engine, self.accum = engine, accum
        self.optim = engine.optimizer.optimizer  # the wrapped optimizer: its states are measured

    def backward(self, loss: Any, micro_step: int) -> None:
        """A micro-step's backward; the loop already divides the loss by the accumulation. Every micro-step
        but the last then steps the engine, which only counts it (DeepSpeed's accumulation boundary)."""
        self.engine.backward(loss, scale_wrt_gas=False)
        if micro_step < self.accum - 1:
            self.engine.step()

    def step(self) -> None:
        self.engine.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """DeepSpeed zeroes its gradients at the step."""
