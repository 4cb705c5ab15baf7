"""The memory model: pure functions of typed inputs (no solver, no I/O)."""

from ftplan.memory.estimate import MemoryEstimate, check_layout, estimate_memory, fp8_linears
from ftplan.memory.overheads import Overheads
from ftplan.memory.pipeline import PipelineSchedule
from ftplan.memory.setup import (
    Attention,
    AttentionMask,
    ContextParallel,
    Fp8Recipe,
    Fp8Setup,
    Kernels,
    Layout,
    LoraSetup,
    Loss,
    Method,
    ModelOutput,
    Offload,
    Optimizer,
    Precision,
    Recompute,
    SequenceParallel,
    Training,
    ZeroGrad,
    ZeroStage,
)

__all__ = [
    "Attention", "AttentionMask", "ContextParallel", "Fp8Recipe", "Fp8Setup", "Kernels", "Layout", "LoraSetup", "Loss",
    "MemoryEstimate", "Method", "ModelOutput", "Offload", "Optimizer", "Overheads", "PipelineSchedule", "Precision",
    "Recompute", "SequenceParallel", "Training", "ZeroGrad", "ZeroStage", "check_layout", "estimate_memory",
    "fp8_linears",
]  # fmt: skip
