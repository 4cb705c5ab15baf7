"""Runtime memory outside the model's tensors, with the measurements they come from."""

from __future__ import annotations

from dataclasses import dataclass

from ftplan.units import MIB

# CUDA context with lazy module loading (default since PyTorch 1.13 / CUDA 11.7): 426 MiB seen
# by nvidia-smi after the first CUDA call on an RTX 6000 Ada, PyTorch 2.10 + CUDA 13.0
# (unslothai/unsloth-zoo PR #1053); "around 400MB" per PyTorch maintainers (pytorch#109888).
# Not visible to torch.cuda.memory_allocated / memory_reserved.
CUDA_CONTEXT_BYTES = 426 * MIB

# cuBLAS workspace PyTorch allocates through its caching allocator, one per cuBLAS handle and stream:
# ":4096:2:16:8" (2×4 MiB + 8×16 KiB) by default, 32 MiB on Hopper (aten CublasHandlePool.cpp,
# pytorch#89027), and a separate cuBLASLt workspace of 1 MiB (CUBLASLT_WORKSPACE_SIZE's default,
# pytorch#73328) unless TORCH_CUBLASLT_UNIFIED_WORKSPACE is set. Each thread reserves its own handle,
# and a training step runs matmuls on two: the forward and the optimizer on the caller's thread,
# backward on autograd's device thread. Measured: every one of the 115 tiny cases of
# benchmarks/measured_grid.yaml on an H200 allocated 64.0-68.3 MiB (median 66.0) beyond its tensors
# (benchmarks/results/2026-12-04-nvidia-h200), where one 32 MiB workspace had been counted.
CUBLAS_WORKSPACE_BYTES = {"hopper": 32 * MIB}
CUBLAS_WORKSPACE_DEFAULT_BYTES = 8 * MIB + 128 * 1024
CUBLASLT_WORKSPACE_BYTES = 1 * MIB
CUBLAS_THREADS = 2  # the step's own thread and autograd's device thread

# NCCL buffers per communicator (outside PyTorch's allocator): 544 MiB for a 2-GPU group and
# 688 MiB for larger groups, measured on 4×A100 NVLink with a 4 MB all-reduce (NVIDIA/nccl#964).
NCCL_TWO_RANK_BYTES = 544 * MIB
NCCL_MULTI_RANK_BYTES = 688 * MIB

# Caching-allocator overhead (reserved − allocated) as a fraction of what a step allocates beyond
# the model states that stay allocated all run (weights, optimizer states: allocated once, they fill
# their segments; the tensors a step makes and frees in many sizes leave cached blocks the next
# request cannot use). Answer.AI's fsdp_qlora benchmark of Llama-2-7B LoRA, FSDP on 2×RTX 3090 (case
# aa-l2-7b-lora-ctx2048-bs1 of the published measurements): 10.22 GiB reserved, 9.16 GiB allocated,
# of which 6.68 GiB are the states ftplan counts for that job per GPU (weights 6.41, AdamW states 0.27).
# One run; benchmarks/memory_accuracy.py prints the other reserved and device cases it was not fitted
# on. Override per job with `overheads.allocator_fraction`.
ALLOCATOR_FRACTION = (10.22 - 9.16) / (9.16 - 6.68)


@dataclass(frozen=True, slots=True)
class Overheads:
    """Runtime overheads applied on top of the tensors a job allocates."""

    cuda_context_bytes: int = CUDA_CONTEXT_BYTES
    allocator_fraction: float = ALLOCATOR_FRACTION
    include_nccl: bool = True

    @classmethod
    def host(cls) -> Overheads:
        """No GPU runtime: a CPU run has no CUDA context, NCCL buffers or caching allocator."""
        return cls(cuda_context_bytes=0, allocator_fraction=0.0, include_nccl=False)


def cublas_workspace_bytes(arch: str) -> int:
    """cuBLAS and cuBLASLt workspaces a training step keeps allocated on a GPU of ``arch`` (none on a CPU)."""
    if arch.lower() == "cpu":
        return 0
    per_thread = CUBLAS_WORKSPACE_BYTES.get(arch.lower(), CUBLAS_WORKSPACE_DEFAULT_BYTES) + CUBLASLT_WORKSPACE_BYTES
    return CUBLAS_THREADS * per_thread


def nccl_bytes(group_size: int) -> int:
    """NCCL buffer memory of one communicator of ``group_size`` GPUs."""
    if group_size <= 1:
        return 0
    return NCCL_TWO_RANK_BYTES if group_size == 2 else NCCL_MULTI_RANK_BYTES
