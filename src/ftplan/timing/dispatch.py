"""Operations an eager PyTorch step dispatches, and the time they cost beyond their arithmetic.

An eager training loop (Transformers, PEFT, TRL, Accelerate, plain DDP or FSDP) runs every PyTorch
operation as its own GPU kernel: each costs host time to dispatch and a launch, whatever its size. With
large micro-batches that is hidden in the kernels' own time; with small ones (a few hundred tokens a
micro-step, LoRA's adapters, many layers) it is a large part of the step. A fused stack — torch.compile,
CUDA graphs, Megatron-Core or NeMo with Transformer Engine, Liger or Unsloth kernels — launches a fraction
as many kernels; a job says which it runs with ``kernels: eager | fused`` and the term is left out for
``fused``.

The counts are measured, not assumed: ``python benchmarks/dispatch_counts.py`` runs a forward and backward
of tiny models (2 and 3 layers, so one layer's count is their difference) under a dispatch mode and counts
every operation that computes (views and metadata excluded), and prints them beside :func:`layer_ops`;
``tests/test_dispatch.py`` holds the two equal. Per layer:

* a family's block, full fine-tuning, SDPA attention (``BASE``), by precision class: ``mixed`` (autocast
  casts each weight and input), ``pure`` (16-bit weights), ``fp32``;
* LoRA adds per adapted linear ``ADAPTER`` operations (two matmuls, the scaling, the sum, and the casts where
  the adapters are fp32; the dropout where it runs), and every frozen linear saves ``FROZEN`` (its weight
  gradient; under autocast its cast, frozen weights being stored 16-bit): measured on Llama with all seven
  linears adapted and with q and v only;
* eager attention adds ``EAGER_ATTENTION`` (the score matmul, mask, softmax and dropout as operations of
  their own), and full recomputation runs the forward's operations again in backward;
* QLoRA dequantises each frozen linear before each use: one more kernel a pass (bitsandbytes'
  ``MatMul4Bit`` calls ``dequantize_4bit`` in forward and again in backward; not measurable on a CPU);
* the head (embeddings, final norm, lm_head, loss) adds ``HEAD`` a micro-step (``HEAD_FROZEN`` with frozen
  embeddings, whose backward stops at the first layer), the optimizer ``OPTIMIZER`` a step (multi-tensor and
  fused kernels), or so many a trainable tensor (one tensor at a time).

Families not measured take the largest measured dense block's counts (Gemma 2's), MoE ones Mixtral's:
transformers' grouped expert kernels make a MoE layer's count independent of its experts (measured: 4 and 8
experts dispatch the same).
"""

from __future__ import annotations

import numpy as np

from ftplan.arch import Architecture
from ftplan.memory.params import lora_targets
from ftplan.memory.setup import Attention, Method, Optimizer, Precision, Training

# Seconds each dispatched operation adds to a step: host dispatch and launch, fitted by least squares on the
# relative step time of Qwen's published LoRA and full fine-tuning runs (Hugging Face Trainer + PEFT,
# eager; benchmarks/throughput_accuracy.py --fit, which also prints its error on every other source). Within
# the 5–25 µs a PyTorch operation's host path takes (Python, autograd and dispatcher layers, the CUDA launch).
SECONDS_PER_OP = 12.3e-6

# Operations one layer dispatches in forward and in backward, full fine-tuning with SDPA attention, by
# precision class (benchmarks/dispatch_counts.py).
BASE: dict[str, dict[str, tuple[int, int]]] = {
    "llama": {"mixed": (48, 87), "pure": (38, 71), "fp32": (34, 67)},
    "mistral": {"mixed": (48, 87), "pure": (38, 71), "fp32": (34, 67)},
    "qwen2": {"mixed": (51, 93), "pure": (38, 74), "fp32": (34, 70)},
    "qwen3": {"mixed": (64, 117), "pure": (54, 103), "fp32": (46, 95)},
    "phi": {"mixed": (51, 82), "pure": (31, 57), "fp32": (31, 57)},
    "gpt_neox": {"mixed": (37, 59), "pure": (23, 40), "fp32": (23, 40)},
    "mixtral": {"mixed": (63, 105), "pure": (57, 95), "fp32": (51, 88)},
    # (transformers builds Gemma 2 with eager attention only: measured so, less EAGER_ATTENTION)
    "gemma2": {"mixed": (71, 122), "pure": (66, 110), "fp32": (52, 96)},
}
DENSE_FALLBACK, MOE_FALLBACK = "gemma2", "mixtral"

# Per adapted linear (forward, backward), by the adapters' class (:func:`adapter_class`) and whether adapter
# dropout runs (its kernel each way), and saved per frozen linear (forward, backward); measured on Llama (7
# linears adapted, then q and v only: the two solve for both; one adapter more: benchmarks/dispatch_counts.py
# variants), as fractions of its seven linears.
ADAPTER: dict[str, dict[bool, tuple[float, float]]] = {
    "mixed": {False: (8.0, 10.0), True: (11.0, 11.0)},
    "pure": {False: (4.0, 6.0), True: (7.0, 7.0)},
    "fp32-adapters": {False: (6.0, 9.0), True: (9.0, 10.0)},
    "fp32": {False: (4.0, 6.0), True: (7.0, 7.0)},
}
FROZEN = {"mixed": (10 / 7, 27 / 7), "pure": (0.0, 11 / 7), "fp32": (0.0, 11 / 7)}
EAGER_ATTENTION = (9, 11)
HEAD = (34, 24)  # embeddings, final norm, lm_head and loss (the most of the families measured)
# With frozen embeddings (LoRA, QLoRA) backward stops at the first layer's input: the head's backward less what
# the first layer then skips (measured on Llama, Mistral, Qwen2, Qwen3 and Mixtral alike)
HEAD_FROZEN = (34, -13)

# An optimizer step: multi-tensor (foreach) and fused kernels dispatch a fixed number; one tensor at a time
# so many a trainable tensor (measured on a Llama layer's 9 tensors: AdamW for-loop 81, Adafactor 153;
# bitsandbytes' 8-bit and paged optimizers update each tensor in one kernel plus its state lookup,
# ``Optimizer8bit.step``, which a CPU cannot run).
OPTIMIZER = {Optimizer.ADAMW: 13, Optimizer.ADAMW_FUSED: 6, Optimizer.SGD: 7}
OPTIMIZER_PER_TENSOR = {
    Optimizer.ADAMW_FORLOOP: 9, Optimizer.ADAFACTOR: 17, Optimizer.ADAMW_8BIT: 2, Optimizer.PAGED_ADAMW: 2,
    Optimizer.PAGED_ADAMW_8BIT: 2,
}  # fmt: skip


# Bytes an optimizer step reads and writes a trainable parameter, as ``(a, b)`` for ``a × master bytes + b`` (the
# parameter's dtype: 4 for fp32 masters, 2 for bf16-pure), at the GPU's HBM bandwidth once a step. PyTorch's
# optimizers keep their states in the parameter's dtype and were measured on a CPU, where they run the same
# operations (``python benchmarks/dispatch_counts.py --optimizers``; ``tests/test_dispatch.py`` holds the two
# equal): multi-tensor AdamW's eleven passes 20.25 elements, the fused kernel's one pass 8 (its schema marks
# the gradients written too), one tensor at a time 21, SGD with momentum 8, Adafactor 17 (its factored second
# moment of 512 × 1024 matrices). bitsandbytes' AdamW runs one kernel a tensor (``Optimizer8bit.step``, which a
# CPU cannot run): it reads the parameter, its gradient and the two states and writes the parameter and the
# states, its states 1 byte an element (8-bit, blockwise) or 4 (32-bit, paged) whatever the parameter's dtype.
OPTIMIZER_BYTES: dict[Optimizer, tuple[float, float]] = {
    Optimizer.ADAMW: (20.25, 0.0), Optimizer.ADAMW_FUSED: (8.0, 0.0), Optimizer.ADAMW_FORLOOP: (21.0, 0.0),
    Optimizer.SGD: (8.0, 0.0), Optimizer.ADAFACTOR: (17.03, 0.0),
    Optimizer.ADAMW_8BIT: (3.0, 4.0), Optimizer.PAGED_ADAMW_8BIT: (3.0, 4.0), Optimizer.PAGED_ADAMW: (3.0, 16.0),
}  # fmt: skip


def optimizer_bytes(training: Training) -> float:
    """Bytes the job's optimizer step moves a trainable parameter (``OPTIMIZER_BYTES``)."""
    a, b = OPTIMIZER_BYTES[training.optimizer]
    return a * (2 if training.precision is Precision.BF16_PURE else 4) + b


def precision_class(precision: Precision) -> str:
    """``mixed`` (autocast), ``pure`` (16-bit weights) or ``fp32``."""
    if precision is Precision.FP32:
        return "fp32"
    return "pure" if precision in (Precision.BF16_PURE, Precision.BF16_FP32_ADAPTERS) else "mixed"


def adapter_class(precision: Precision) -> str:
    """The class of PEFT's operations around a LoRA adapter: ``mixed`` (fp32 adapters under autocast, PEFT's
    default ``autocast_adapter_dtype``), ``pure`` (bf16 adapters over a bf16 model), ``fp32-adapters`` (fp32
    adapters over a bf16 model without autocast: the input cast up, the output cast back) or ``fp32``."""
    if precision is Precision.BF16_FP32_ADAPTERS:
        return "fp32-adapters"
    return precision_class(precision)


def _base(arch: Architecture) -> dict[str, tuple[int, int]]:
    if arch.model_type in BASE:
        return BASE[arch.model_type]
    return BASE[MOE_FALLBACK if arch.is_moe else DENSE_FALLBACK]


def layer_ops(arch: Architecture, training: Training) -> tuple[float, float]:
    """Operations one layer dispatches (forward, backward) without recomputation (see module docstring)."""
    cls = precision_class(training.precision)
    fwd, bwd = (float(x) for x in _base(arch)[cls])
    if training.attention is Attention.EAGER:
        fwd, bwd = fwd + EAGER_ATTENTION[0], bwd + EAGER_ATTENTION[1]
    if training.method is not Method.FULL and training.lora is not None:
        linears = [x for xs in arch.block_linears.values() for x in xs]
        frozen = len(linears)
        targets = lora_targets(arch, training.lora)
        adapted = sum(x.name in targets for x in linears)  # (a name can stand for two linears: GPT-2's c_proj)
        fwd_ops, bwd_ops = ADAPTER[adapter_class(training.precision)][training.lora.dropout > 0]
        fwd += adapted * fwd_ops - frozen * FROZEN[cls][0]
        bwd += adapted * bwd_ops - frozen * FROZEN[cls][1]
        if training.method is Method.QLORA:  # one dequantisation a frozen linear and pass
            fwd, bwd = fwd + frozen, bwd + frozen
    return fwd, bwd


def micro_step_ops(arch: Architecture, training: Training, recompute: np.ndarray, pp: np.ndarray) -> np.ndarray:
    """Operations one pipeline stage (the whole model without one) dispatches a micro-step: its layers'
    forward and backward, the forward again under full recomputation (code 2), and the head."""
    fwd, bwd = layer_ops(arch, training)
    per_layer = fwd + bwd + np.where(np.asarray(recompute) == 2, fwd, 0.0)  # (a recomputed QLoRA forward dequantises)
    return arch.total_layers / np.asarray(pp, dtype=float) * per_layer + sum(head_ops(training))


def head_ops(training: Training) -> tuple[int, int]:
    """The head's operations a micro-step, (forward, backward)."""
    return HEAD if training.method is Method.FULL else HEAD_FROZEN


def pass_ops(arch: Architecture, training: Training, full_recompute: bool) -> tuple[float, float]:
    """Operations a whole micro-step dispatches, (forward, backward): every layer's and the head's, the
    backward running the forward again under full recomputation (what ``ftplan measure`` counts)."""
    fwd, bwd = layer_ops(arch, training)
    (hf, hb), layers = head_ops(training), arch.total_layers
    return layers * fwd + hf, layers * (bwd + (fwd if full_recompute else 0.0)) + hb


def trainable_tensors(arch: Architecture, training: Training) -> int:
    """Trainable tensors the optimizer steps: a layer's linears (weights and biases) and norms, and the
    embeddings, final norm and head under full fine-tuning; two a layer and adapted linear under LoRA."""
    linears = [x for xs in arch.block_linears.values() for x in xs]
    if training.method is Method.FULL:
        return arch.total_layers * (len(linears) + sum(x.bias for x in linears) + 2) + 3
    targets = lora_targets(arch, training.lora) if training.lora else set()
    adapted = sum(x.name in targets for x in linears)
    return arch.total_layers * 2 * adapted


def step_ops(arch: Architecture, training: Training) -> float:
    """Operations an optimizer step dispatches (on one GPU: its pipeline stage's tensors are fewer; counted
    whole, an upper bound)."""
    if training.optimizer in OPTIMIZER:
        return float(OPTIMIZER[training.optimizer])
    return float(OPTIMIZER_PER_TENSOR[training.optimizer] * trainable_tensors(arch, training))
