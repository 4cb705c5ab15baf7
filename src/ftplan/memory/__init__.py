"""The memory model: pure functions of typed inputs (no solver, no I/O)."""

from ftplan.memory.estimate import MemoryEstimate, check_layout, estimate_memory
from ftplan.memory.overheads import Overheads
from ftplan.memory.setup import (
    Attention,
    AttentionMask,
    Layout,
    LoraSetup,
    Loss,
    Method,
    Offload,
    Optimizer,
    Precision,
    Recompute,
    Training,
    ZeroGrad,
    ZeroStage,
)

__all__ = [
    "Attention", "AttentionMask", "Layout", "LoraSetup", "Loss", "MemoryEstimate", "Method", "Offload",
    "Optimizer", "Overheads", "Precision", "Recompute", "Training", "ZeroGrad", "ZeroStage",
    "check_layout", "estimate_memory",
]  # fmt: skip
