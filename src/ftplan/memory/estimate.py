"""Per-GPU and per-node memory of one fine-tuning job: the peak over a training step.

Model states follow the ZeRO paper (Rajbhandari et al. 2020, §3, Fig. 1): with mixed precision
and ZeRO ≥ 1 each trainable parameter holds 2 bytes of 16-bit weight, 2 of gradient and
``K`` = 12 of fp32 master weight and Adam moments; ZeRO-1 shards the ``K`` bytes over the
data-parallel group, ZeRO-2 also the gradients, ZeRO-3 also the weights (FSDP ``SHARD_GRAD_OP``
≈ ZeRO-2, ``FULL_SHARD`` ≈ ZeRO-3). Without ZeRO, mixed precision is PyTorch autocast over fp32
parameters (4 + 4 + 8 bytes), which also keeps a 16-bit copy of every weight it casts from the
forward pass to the backward pass. ``bf16-pure`` keeps everything in bf16 (2 + 2 + 4).

The peak is the largest of three moments of a step, not a sum of maxima:

1. forward → backward: states, gradients kept across accumulation micro-steps, every layer's
   saved activations, and the larger of the loss's peak and one layer's backward working set;
2. end of backward: states and all gradients (plus the ZeRO-2 reduce buffer);
3. optimizer step: states, gradients and the optimizer's temporaries.

Peak reserved adds the caching allocator's overhead; the device total adds memory outside
PyTorch's allocator (CUDA context, NCCL buffers). Paged optimizer states live in CUDA managed
memory that PyTorch's counters do not see and the driver can evict to host memory: they are
reported apart and counted on the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import NamedTuple

from ftplan.arch import ATTENTION_ROLES, Architecture, Kind, Linear
from ftplan.errors import JobError
from ftplan.memory import activations as act
from ftplan.memory import deepspeed
from ftplan.memory import pipeline as pl
from ftplan.memory.deepep import deepep_buffer_bytes
from ftplan.memory.overheads import Overheads, cublas_workspace_bytes, nccl_bytes
from ftplan.memory.params import (
    ParamSplit,
    largest_block,
    lora_params,
    lora_targets,
    parameter_targets,
    split_params,
)
from ftplan.memory.setup import (
    Attention,
    AttentionMask,
    ContextParallel,
    Engine,
    ExpertDispatch,
    Fp8Recipe,
    Fp8Setup,
    Layout,
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
from ftplan.units import GIB

# bitsandbytes 8-bit optimizers: blockwise quantisation with 256 values per block and one fp32
# absmax per block and state (bnb.functional blocksize 256); tensors under 4096 elements keep
# 32-bit states (``min_8bit_size=4096``).
_BNB_BLOCK = 256


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory of one job per GPU (``gpu_terms``) and per node (``host_terms``), in bytes."""

    gpu_terms: dict[str, int]
    host_terms: dict[str, int]
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    device_total_bytes: int
    host_bytes_per_node: int
    peak_phase: str
    peak_terms: frozenset[str] = frozenset()  # terms that add up to the peak (the rest come and go)
    gpu_memory_bytes: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Saved-for-backward detail: ``layer:<stack>`` (one layer), ``layers``, ``head`` and
    # ``loss_saved`` (what the logits/loss saves; ``logits_loss`` is its transient peak).
    activation_terms: dict[str, int] = field(default_factory=dict)
    phase_bytes: dict[str, int] = field(default_factory=dict)  # allocated bytes at each moment of the step
    # The forward/backward moment (without gradients held across micro-steps) as the maximum of lines
    # (bytes at micro-batch 0, bytes a sequence): the loss, backward and a MoE forward each grow with
    # the micro-batch from their own constant (a fused loss's chunk rounding bounded by one token);
    # None where it is not exactly linear.
    fb_lines: tuple[tuple[float, float], ...] | None = None
    host_memory_bytes: int | None = None  # RAM per node, where the job states or the catalog implies it

    @property
    def host_fits(self) -> bool:
        """The offloaded and paged states fit the node's RAM (or that RAM is not known)."""
        return self.host_memory_bytes is None or self.host_bytes_per_node <= self.host_memory_bytes

    @property
    def fits(self) -> bool | None:
        if self.gpu_memory_bytes is None:
            return None
        return self.device_total_bytes <= self.gpu_memory_bytes and self.host_fits

    @property
    def headroom_bytes(self) -> int | None:
        if self.gpu_memory_bytes is None:
            return None
        return self.gpu_memory_bytes - self.device_total_bytes


# The terms allocated once, for the whole run, and present at every moment of a step
STATE_TERMS = (
    "weights_trainable",
    "weights_frozen",
    "optimizer_states",
    "cublas_workspace",
    "ddp_gradient_buckets",
    "pipeline_recv_buffers",
    "deepspeed_buffers",
    "fp8_weight_cache",
)
# The terms each moment of a step holds (forward/backward adds the held gradients and the larger
# of the loss peak and the backward working set).
_PHASE_TERMS = {
    "forward/backward": (*STATE_TERMS, "activations", "autocast_weight_copies", "zero3_gathered_params",
                         "dequant_workspace", "logits_kept"),
    "end of backward": (*STATE_TERMS, "gradients", "zero3_gathered_params", "grad_reduce_buffer", "dequant_workspace",
                        "logits_kept"),
    "optimizer step": (*STATE_TERMS, "gradients", "optimizer_step_temporaries", "logits_kept"),
    "loading": ("weights_trainable", "weights_frozen", "load_unsharded_weights"),
}  # fmt: skip


def gradients_held_apart(training: Training, zero: int) -> bool:
    """Whether gradients kept across accumulation micro-steps are memory of their own; not under DeepSpeed's
    ZeRO-3, which accumulates them into the gradient partition it holds from its start (``deepspeed_buffers``;
    measured: the grid's ``-accum2-deepspeed`` case read +21.8% when they were counted twice)."""
    return not (training.engine is Engine.DEEPSPEED and zero == ZeroStage.PARAMETERS)


def reserved_bytes(step_peak: float, persistent: float, loading: float, allocator_fraction: float) -> int:
    """The caching allocator's peak reserved bytes: what a step allocates beyond the model states it
    keeps for the whole run (weights, optimizer states, cuBLAS workspace: allocated once, in segments no
    other tensor shares) fragments by ``allocator_fraction`` of itself; loading, which only adds
    tensors that stay, reserves what it allocates."""
    return int(max(step_peak + allocator_fraction * max(0.0, step_peak - persistent), loading))


def _fb_lines(
    base: float, branches: list[tuple[float, float]], mb: int, per_mb: float
) -> tuple[tuple[float, float], ...]:
    """The forward/backward moment without held gradients as lines ``a + b·micro_batch`` whose
    maximum it is: ``base`` (of which ``per_mb`` grows with the micro-batch) plus each branch
    (a constant and a part that grows)."""
    rate = per_mb / mb
    return tuple((base - per_mb + a, rate + b / mb) for a, b in branches)


def check_layout(arch: Architecture, training: Training, layout: Layout) -> None:
    """Raise :class:`JobError` for layouts the frameworks cannot run."""
    if training.engine is Engine.DEEPSPEED:
        for name in ("tp", "pp", "cp", "ep"):
            if getattr(layout, name) > 1:
                raise JobError(f"engine deepspeed is modelled for data parallelism and ZeRO alone (as `ftplan export "
                               f"--to deepspeed` runs it); the layout has {name} {getattr(layout, name)}. To fix: "
                               f"set layout.{name} 1, or engine torch.")  # fmt: skip
        if layout.dp_shard and layout.dp_shard != layout.dp:
            raise JobError("engine deepspeed is not modelled with HSDP (layout.dp_shard). To fix: drop dp_shard, "
                           "or set engine torch.")  # fmt: skip
        if training.precision in (Precision.BF16_PURE, Precision.BF16_FP32_ADAPTERS, Precision.FP8):
            raise JobError(f"DeepSpeed trains in fp32, or in bf16/fp16 over an fp32 master copy; the job has precision "
                           f"{training.precision.value}. To fix: set precision bf16-mixed, fp16-mixed or fp32, or "
                           "engine torch.")  # fmt: skip
    if min(layout.dp, layout.tp, layout.micro_batch, layout.grad_accum, layout.gpus_per_node) < 1:
        for name in ("dp", "tp", "micro_batch", "grad_accum", "gpus_per_node"):
            value = getattr(layout, name)
            if value < 1:
                raise JobError(f"layout.{name} must be ≥ 1, got {value}.")
    t = layout.tp
    if t > 1 and layout.gpus_per_node > 1 and t > layout.gpus_per_node:
        raise JobError(
            f"layout.tp {t} is larger than a node ({layout.gpus_per_node} GPUs). "
            "To fix: keep tensor parallelism inside one node."
        )
    if arch.heads % t or arch.kv_heads % t:
        raise JobError(
            f"layout.tp {t} must divide the attention heads ({arch.heads}) and key/value heads "
            f"({arch.kv_heads}). To fix: use tp in "
            f"{[d for d in range(1, arch.kv_heads + 1) if arch.kv_heads % d == 0 and arch.heads % d == 0]}."
        )
    if layout.pp > 1 or layout.virtual_stages > 1:
        _check_pipeline(arch, training, layout)
    if layout.cp > 1:
        _check_context(arch, training, layout)
    if layout.ep > 1:
        _check_expert(arch, training, layout)
    if layout.dp_shard and layout.dp_shard != layout.dp:
        if layout.dp % layout.dp_shard:
            raise JobError(
                f"layout.dp_shard {layout.dp_shard} must divide dp {layout.dp} (HSDP replicates whole shard groups). "
                f"To fix: use one of {[d for d in range(1, layout.dp + 1) if layout.dp % d == 0]}."
            )
        if layout.zero < ZeroStage.GRADIENTS:
            raise JobError(
                f"layout.dp_shard {layout.dp_shard} is hybrid sharding (HSDP), which FSDP runs for ZeRO-2 and "
                "ZeRO-3. To fix: set zero 2 or 3, or drop dp_shard."
            )
    if layout.offload is Offload.OPTIMIZER_PARAMS and layout.zero != ZeroStage.PARAMETERS:
        raise JobError("layout.offload optimizer+params needs zero: 3. To fix: set zero: 3.")
    if layout.offload is not Offload.NONE and layout.zero == ZeroStage.NONE:
        raise JobError("layout.offload needs ZeRO (stage 1–3): offload is a ZeRO/FSDP feature. To fix: set zero.")
    if layout.offload is not Offload.NONE and training.optimizer.paged:
        raise JobError(
            "paged optimizers and CPU offload both move optimizer states to the host. To fix: use one of them."
        )
    if training.method is Method.QLORA:
        if training.precision is Precision.FP32:
            raise JobError(
                "QLoRA computes in 16 bits over NF4 weights. To fix: use precision bf16-mixed, fp16-mixed or bf16-pure."
            )
        if t > 1:
            raise JobError(
                "QLoRA with tensor parallelism is not supported (4-bit weights are not TP-sharded). "
                "To fix: use tp: 1 with data parallelism or ZeRO-3."
            )
    if training.precision is Precision.BF16_FP32_ADAPTERS and training.method is Method.FULL:
        raise JobError(
            "precision bf16-fp32-adapters keeps LoRA adapters in fp32 over a bf16 model; full fine-tuning "
            "has no adapters. To fix: use bf16-pure or bf16-mixed, or method lora/qlora."
        )
    lora = training.lora
    if training.method is not Method.FULL and lora is not None and lora.dropout > 0:
        folded = parameter_targets(arch, lora_targets(arch, lora))
        if folded:
            raise JobError(
                f"lora.dropout {lora.dropout} with {', '.join(sorted(folded))} adapted: PEFT folds LoRA on a MoE's "
                "router and experts into the weights, where dropout cannot apply, and refuses it. To fix: set "
                "lora.dropout 0, or leave the router and experts out of target_modules."
            )
    if lora is not None and len(lora.target_parameters) == 1 and layout.recompute is Recompute.FULL:
        raise JobError(
            f"lora.target_parameters adapts one of gpt-oss's expert weights ({lora.target_parameters[0]}) under full "
            "recomputation, whose backward ftplan has not measured exactly (it has both together, or either without "
            "recomputation). To fix: target mlp.experts.gate_up_proj and mlp.experts.down_proj, or recompute none."
        )
    llama4_lora = arch.routing == "llama4" and lora is not None and training.method is not Method.FULL
    if llama4_lora and "router" in lora_targets(arch, lora):
        raise JobError(
            "lora.target_modules reaches Llama 4's router, an nn.Linear whose forward returns (scores, logits): "
            "PEFT wraps it and the step fails (as all-linear does). To fix: name the targets, e.g. q_proj, "
            "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj."
        )
    if training.lora is not None and training.lora.base_fp32:
        if training.method is not Method.LORA or not training.precision.mixed:
            raise JobError(
                "lora.base_fp32 describes LoRA under bf16-mixed or fp16-mixed over fp32 base weights. "
                "To fix: use method lora with a mixed precision, or drop base_fp32."
            )
        if layout.zero != ZeroStage.NONE:
            raise JobError(
                "lora.base_fp32 is autocast over fp32 base weights without ZeRO/FSDP (their mixed precision "
                "gathers 16-bit weights instead). To fix: use zero 0, or drop base_fp32."
            )
    if training.seq_len < 1:
        raise JobError(f"seq_len must be ≥ 1, got {training.seq_len}.")
    if training.fp8 is not None and training.precision is not Precision.FP8:
        raise JobError("an fp8 setup needs precision fp8. To fix: set precision: fp8, or drop the fp8 block.")
    fp8 = training.fp8_setup
    if fp8 is not None:
        _check_fp8(arch, training, layout, fp8)


def _check_pipeline(arch: Architecture, training: Training, layout: Layout) -> None:
    """Refuse pipeline layouts torch.distributed.pipelining cannot run or ftplan does not model."""
    p, v, m = layout.pp, layout.virtual_stages, layout.grad_accum
    interleaved = layout.pp_schedule is pl.PipelineSchedule.INTERLEAVED
    if interleaved != (v > 1):
        raise JobError(
            f"layout.virtual_stages {v} with pp_schedule {layout.pp_schedule.value}: the interleaved schedule "
            "holds 2 or more chunks a rank, the others one. To fix: use interleaved-1f1b with virtual_stages ≥ 2, "
            "or virtual_stages 1."
        )
    if arch.kind is not Kind.DECODER:
        raise JobError(
            f"layout.pp {p} on a {arch.kind.value} model: pipeline stages are modelled for decoders. To fix: use pp 1."
        )
    split = training.pipeline_split
    if min(pl.chunk_layers(arch.layers, p, v, split)) < 1:
        weighted = " (pipeline_split weighted: the first and last chunk each take one layer fewer)"
        raise JobError(
            f"layout.pp {p} × virtual_stages {v} = {p * v} chunks for {arch.layers} layers: every chunk needs a "
            f"layer{weighted if split is pl.PipelineSplit.WEIGHTED else ''}. To fix: use fewer stages."
        )
    if training.method is Method.QLORA:
        raise JobError("QLoRA under pipeline parallelism is not modelled. To fix: use pp 1 (with ZeRO-3 or FSDP).")
    if training.lora is not None and training.lora.modules_to_save:
        raise JobError(
            "lora.modules_to_save under pipeline parallelism is not modelled. To fix: use pp 1, or train the "
            "embeddings with method full."
        )
    if interleaved and m % max(1, m // p):
        raise JobError(
            f"interleaved-1f1b runs the step's {m} micro-batches (grad_accum) in rounds of {m // max(1, m // p)}: "
            f"{m} is not a multiple. To fix: use a grad_accum that is a multiple of pp ({p})."
        )


def _check_context(arch: Architecture, training: Training, layout: Layout) -> None:
    """Refuse context-parallel layouts torch's ring attention (or DeepSpeed-Ulysses) cannot run or ftplan does
    not model."""
    cp, s = layout.cp, training.seq_len
    if arch.kind is not Kind.DECODER:
        raise JobError(f"layout.cp {cp} on a {arch.kind.value} model: context parallelism is modelled for decoders.")
    ulysses = training.context_parallel is ContextParallel.ULYSSES
    kernel = "DeepSpeed-Ulysses runs SDPA" if ulysses else "torch's ring attention runs SDPA's causal kernels"
    if training.attention is not Attention.SDPA or training.attention_mask is not AttentionMask.NONE:
        raise JobError(
            f"layout.cp {cp}: {kernel} without a mask tensor. To fix: set attention sdpa and attention_mask none "
            "(packed sequences)."
        )
    if ulysses:
        _check_ulysses(arch, training, layout)
    elif s % (2 * cp):
        raise JobError(
            f"layout.cp {cp}: seq_len {s} must split into 2 × cp = {2 * cp} equal chunks (the causal load "
            f"balancing gives each rank two). To fix: use a seq_len that is a multiple of {2 * cp}."
        )
    if arch.sliding_window or arch.nope_layers or arch.attn_sinks or arch.attn_softcap:
        raise JobError(
            f"layout.cp {cp} on {arch.model_type}: sliding windows, chunked attention, sinks and soft-capping are "
            "not what ring attention's kernels compute. To fix: use cp 1."
        )


def _check_ulysses(arch: Architecture, training: Training, layout: Layout) -> None:
    """What DeepSpeed-Ulysses (``UlyssesSPAttentionHF``) refuses, and what ftplan does not model of it."""
    cp, s = layout.cp, training.seq_len
    kv = arch.kv_heads
    degrees = [d for d in range(2, arch.heads + 1) if arch.heads % d == 0 and (kv % d == 0 or d % kv == 0)]
    if cp not in degrees:
        raise JobError(
            f"layout.cp {cp}: DeepSpeed-Ulysses gives each rank heads / cp of the {arch.heads} attention heads and "
            f"needs cp and the {kv} key/value heads to divide one another. To fix: use cp in {degrees or [1]}."
        )
    if s % cp:
        raise JobError(
            f"layout.cp {cp}: seq_len {s} must split into {cp} equal shards. To fix: use a multiple of {cp}."
        )
    if any(x.role not in ("q", "k", "v", "o") for x in arch.block_linears[next(iter(arch.block_linears))]
           if x.role in ATTENTION_ROLES):  # fmt: skip
        raise JobError(
            f"layout.cp {cp} with context_parallel ulysses on {arch.model_type}: its attention is not separate q/k/v "
            "projections of equal head size, which is what ftplan models of Ulysses. To fix: use context_parallel ring."
        )


def _check_expert(arch: Architecture, training: Training, layout: Layout) -> None:
    """Refuse expert-parallel layouts transformers' EP cannot run or ftplan does not model."""
    ep = layout.ep
    if not arch.is_moe:
        raise JobError(f"layout.ep {ep}: {arch.model_type} has no routed experts. To fix: use ep 1.")
    if arch.routing == "llama4":
        raise JobError(
            f"layout.ep {ep} on Llama 4: its experts take every token scaled by its router score, not routed tokens "
            "(transformers gives it no expert-parallel plan). To fix: use ep 1."
        )
    if arch.experts % ep:
        fits = [d for d in range(2, min(arch.experts, layout.shard) + 1) if arch.experts % d == 0 == layout.shard % d]
        raise JobError(
            f"layout.ep {ep} must divide the {arch.experts} routed experts. To fix: use ep in {fits or [1]}."
        )
    if layout.shard % ep:
        raise JobError(
            f"layout.ep {ep} must divide the ranks that shard the model (dp_shard or dp, times cp: {layout.shard}): "
            "an expert-parallel group is carved out of them. To fix: use an ep that divides it."
        )
    if layout.tp > 1:
        raise JobError(
            f"layout.ep {ep} with tp {layout.tp}: transformers keeps experts whole under EP while TP splits the rest, "
            "which ftplan does not model. To fix: use tp 1 (EP shards the experts, FSDP/ZeRO the rest)."
        )
    lora = training.lora
    if training.method is not Method.FULL and lora is not None:
        folded = parameter_targets(arch, lora_targets(arch, lora))
        experts = {x.name for x in arch.block_linears["main"] if x.expert}
        if folded & experts:
            raise JobError(
                f"layout.ep {ep} with LoRA on the routed experts ({', '.join(sorted(folded & experts))}): PEFT's "
                "adapters on fused experts span every expert, which EP splits; not modelled. To fix: leave the "
                "experts out of target_modules, or use ep 1."
            )


def _check_fp8(arch: Architecture, training: Training, layout: Layout, fp8: Fp8Setup) -> None:
    """Refuse FP8 jobs outside what torchao's float8 training runs (and ftplan has measured)."""
    if training.method is not Method.FULL:
        raise JobError(
            "precision fp8 is modelled for full fine-tuning: torchao's float8 linear forms the weight gradient "
            "even for a frozen LoRA base. To fix: use bf16-mixed (or bf16-pure) for LoRA and QLoRA."
        )
    if arch.is_moe:
        raise JobError(
            f"precision fp8 on {arch.model_type}: torchao converts nn.Linear layers only, and its float8 path for "
            "fused expert weights (grouped GEMMs) is a prototype ftplan does not model. To fix: use bf16-mixed."
        )
    if not fp8_linears(arch):
        raise JobError(
            f"precision fp8 on {arch.model_type}: none of its block layers is an nn.Linear with both sizes a "
            "multiple of 16 (what torchao converts and FP8 matmuls need). To fix: use bf16-mixed."
        )
    if fp8.all_gather and fp8.recipe is not Fp8Recipe.TENSORWISE:
        raise JobError(
            f"fp8.all_gather needs recipe tensorwise (torchao gathers FP8 weights with one scale per tensor), "
            f"got {fp8.recipe.value}. To fix: set fp8.recipe: tensorwise or fp8.all_gather: false."
        )


def _fp8_cast_bytes(arch: Architecture, tokens: dict[str, int], t: int) -> float:
    """Working memory of the largest eager float8 cast inside a converted linear's matmuls.

    torchao casts a tensor of ``n`` elements as ``(x.to(float32) * scale).clamp(...).to(float8)``
    (``float8_training_tensor._ToFloat8ConstrFunc``, ``float8_utils.to_fp8_saturated``): while the
    float8 result is written, the scaled and the clamped fp32 tensors are alive, 9 bytes an element.
    The largest tensor cast is the input (tokens × d_in), the gradient of the output (tokens × d_out)
    or the weight; the matmul's other float8 operands, its input and weight (1 byte an element), are
    alive beside it (measured: benchmarks/measured_grid.yaml, the fp8 cases under recomputation).
    """
    best = 0.0
    for stack, x in fp8_converted(arch):
        n_tok = tokens.get(stack, tokens.get("main", 0))
        largest = max(n_tok * x.d_in, n_tok * x.d_out, x.d_in * x.d_out)
        best = max(best, (9 * largest + n_tok * x.d_in + x.d_in * x.d_out) / t)
    return best


def fp8_converted(arch: Architecture) -> list[tuple[str, Linear]]:
    """The block linears torchao's float8 training converts, with their stack.

    ftplan follows torchtitan's rule: every ``nn.Linear`` inside the transformer blocks whose input and
    output sizes are multiples of 16 (``torch._scaled_mm`` needs them); never the lm_head (torchtitan's
    default ``filter_fqns: ["output"]``). GPT-2's ``Conv1D`` layers are not ``nn.Linear``, nor are a
    MoE's fused expert weights.
    """
    if arch.model_type == "gpt2" or arch.is_moe:
        return []
    return [
        (stack, x)
        for stack, linears in arch.block_linears.items()
        for x in linears
        if not x.expert and x.d_in % 16 == 0 and x.d_out % 16 == 0
    ]


def fp8_linears(arch: Architecture) -> dict[str, int]:
    """Weights per layer, by stack, of the linears :func:`fp8_converted` names."""
    out: dict[str, int] = {}
    for stack, x in fp8_converted(arch):
        out[stack] = out.get(stack, 0) + x.weight_params
    return out


@dataclass(frozen=True, slots=True)
class _Bytes:
    """Bytes per trainable parameter: weight, gradient, optimizer state element, fp32 master."""

    weight: int
    grad: int
    state: int
    master: int


def _recipe(training: Training, layout: Layout) -> _Bytes:
    p = training.precision
    # ZeRO-2 keeps the whole parameters for forward and backward and updates a sharded copy of them
    # (FSDP2 without reshard_after_forward: its sharded parameters; DeepSpeed: its partition of the
    # flat parameters, cloned): a copy in the parameters' own dtype where no fp32 master is one
    # (measured: benchmarks/measured_grid_dist.yaml). ZeRO-1 (ZeroRedundancyOptimizer) updates the
    # replicated parameters in place, ZeRO-3's shards are the only copy.
    shard = 1 if layout.zero == ZeroStage.GRADIENTS else 0
    if p is Precision.FP32:
        return _Bytes(4, 4, 4, 4 * shard)
    if p is Precision.BF16_PURE:
        return _Bytes(2, 2, 2, 2 * shard)
    if p is Precision.BF16_FP32_ADAPTERS:
        return _Bytes(4, 4, 4, 4 * shard)  # fp32 adapters, sharded as they are under ZeRO/FSDP
    if layout.zero == ZeroStage.NONE:
        return _Bytes(4, 4, 4, 0)  # autocast over fp32 parameters
    # FSDP2's mixed precision (measured): fp32 sharded parameters, which the optimizer updates, gathered
    # in 16 bits for forward and backward; gradients reduced and kept sharded in fp32 (with offload, on
    # the host: FSDP's CPUOffload). Offloading the optimizer alone is DeepSpeed's (ZeRO-Offload), whose
    # recipe keeps 16-bit weights and gradients and sends the fp32 master to the host with the states.
    if layout.offload is not Offload.OPTIMIZER:
        if layout.zero == ZeroStage.PARAMETERS:
            return _Bytes(4, 4, 4, 0)  # the shards are the only copy (gathered blocks: zero3_gathered_params)
        if layout.zero == ZeroStage.GRADIENTS:
            return _Bytes(2, 4, 4, 4)  # whole 16-bit parameters through forward and backward, fp32 shards
    return _Bytes(2, 2, 4, 4)  # DeepSpeed: 16-bit parameters and gradients, an fp32 master shard


def _optimizer_state_bytes(opt: Optimizer, ps: ParamSplit, t_local: float, rb: _Bytes, tp: int) -> float:
    """Optimizer state bytes (without the fp32 master) for this GPU's trainable parameters."""
    share = t_local / ps.trainable if ps.trainable else 0.0
    if opt in (Optimizer.ADAMW, Optimizer.ADAMW_FUSED, Optimizer.ADAMW_FORLOOP, Optimizer.PAGED_ADAMW):
        return 2 * rb.state * t_local
    if opt.eight_bit:
        big = (ps.trainable_matrix + ps.trainable_embed) * share
        small = ps.trainable_vector * share
        return big * (2 + 2 * 4 / _BNB_BLOCK) + small * 8
    if opt is Optimizer.SGD:
        return rb.state * t_local
    # Adafactor (no first moment): factored second moment for matrices, full for vectors.
    return rb.state * (ps.trainable_factored / tp + ps.trainable_vector)


_EMBEDDING_NAMES = ("embed_tokens", "wte", "word_embeddings", "shared", "embed_in")
_ADAMW = (Optimizer.ADAMW, Optimizer.ADAMW_FUSED, Optimizer.ADAMW_FORLOOP, Optimizer.PAGED_ADAMW)


def _saved_modules_16bit(training: Training, layout: Layout, ps: ParamSplit, tp: int) -> float:
    """Parameters of LoRA ``modules_to_save`` copies that stay 16-bit on this GPU: under a mixed
    recipe without ZeRO over a 16-bit base (not ``base_fp32``), or fp32 adapters over a bf16 model,
    where the recipe would otherwise hold every trainable parameter in fp32."""
    lora = training.lora
    if training.method is Method.FULL or lora is None or not lora.modules_to_save:
        return 0.0
    fp32_adapters = training.precision is Precision.BF16_FP32_ADAPTERS
    if not fp32_adapters and (not training.precision.mixed or lora.base_fp32 or layout.zero != ZeroStage.NONE):
        return 0.0
    return _local(0, 0, ps.trainable_embed, tp)


def _grads(
    arch: Architecture, training: Training, host: bool = False, every_input: bool = False
) -> tuple[act.Grads, bool, bool]:
    """What trains: the activation model's :class:`~ftplan.memory.activations.Grads`, and whether
    the token embedding and the lm_head train (full fine-tuning or LoRA ``modules_to_save``).
    ``host``: the step runs on a CPU (dropout masks and LayerNorm statistics of the input's element size).
    ``every_input``: every linear saves its input, frozen or not, as DeepSpeed's ZeRO-3 linear does
    (``LinearFunctionForZeroStage3``): counted as full fine-tuning saves, a bound (measured: see
    ``ftplan.memory.deepspeed``)."""
    full = act.Grads(on_host=True) if host else act.FULL
    if training.method is Method.FULL or training.lora is None:
        return full, True, True
    lora = training.lora
    saved = set(lora.modules_to_save)
    embed = any(m in saved for m in _EMBEDDING_NAMES)
    head = "lm_head" in saved or (arch.tied and embed)
    # a later pipeline stage's input is the previous stage's output, whose gradient it sends back: its
    # first layer keeps what any layer keeps, as if the embeddings trained
    embed = embed or not arch.has_embedding
    targets = frozenset(lora_targets(arch, lora))
    grads = act.Grads(
        full=False,
        targets=targets,
        param_targets=parameter_targets(arch, targets),
        rank=lora.rank,
        adapter_cast=training.precision.mixed,
        adapter_fp32=training.precision is Precision.BF16_FP32_ADAPTERS,
        lora_dropout=lora.dropout > 0,
        on_host=host,
    )
    return (full if every_input else grads), embed, head


@dataclass(frozen=True, slots=True)
class _PerSequence:
    """Activation terms of one sequence (bytes on one GPU), which grow linearly with the micro-batch."""

    dt: act.Dtypes
    saves: act.Grads
    embed_trains: bool
    lm_head_trains: bool
    t5_eager: bool  # T5 was asked for SDPA and runs eager
    window_masks: int  # layers given an explicit mask only because of their sliding window
    seq: dict[str, int]  # tokens of one sequence in each stack
    layer: dict[str, float]  # one layer's saves, per stack
    mean: dict[str, float]  # the mean over a stack's layers (its first layer may save less)
    cross_kv: float  # encoder keys/values each decoder layer projects
    head: float  # embedding-side and final-norm saves
    moe_first_frozen: bool  # the first MoE layer's input needs no gradient (nothing before it trains)
    rotary: float  # the rotary tables (once per step, not per sequence)
    constants: dict[str, float]  # per stack: what its layers save whatever the tokens (Gemma's norm weights)
    head_constant: float  # the same for the final norm
    loss_saved: float
    bwd_ws: float  # the widest tensor's gradient and input in backward
    norm_ws: float  # an RMSNorm's backward temporaries


@lru_cache(maxsize=4096)
def _per_sequence(
    arch: Architecture,
    training: Training,
    r: int,
    t: int,
    recompute: Recompute,
    host: bool = False,
    cp: int = 1,
    every_input: bool = False,
) -> _PerSequence:
    """The activation model for one sequence; the layout only scales it (cached: a layout search
    asks for the same job under many data-parallel, ZeRO and micro-batch choices)."""
    attention = training.attention
    t5_eager = arch.model_type in ("t5", "mt5") and attention is Attention.SDPA
    if t5_eager:
        attention = Attention.EAGER
    dropout = training.dropout
    if dropout is None:
        dropout = arch.hidden_dropout > 0 or arch.attention_dropout > 0 or arch.embed_dropout > 0
    c = training.precision.compute_bytes
    dt = act.Dtypes(c=c, r=r, autocast=training.precision.mixed)
    s = training.seq_len
    dec_len = training.target_len or s
    seq = {"main": s} if arch.kind is not Kind.ENCODER_DECODER else {"encoder": s, "decoder": dec_len}
    if arch.dense_layers:  # a MoE model's leading dense layers: a stack of their own, first
        seq = {"dense": s, **({"main": s} if arch.layers_of("main") else {})}
    saves, embed_trains, lm_head_trains = _grads(arch, training, host, every_input)
    # tensor parallelism shards the sequence between its matmuls (sequence parallelism): what a token saves
    # is divided by t, but for what every rank holds whole (see SequenceParallel)
    gathered = t > 1 and training.sequence_parallel is SequenceParallel.TORCH
    # DeepSpeed-Ulysses: a cp rank's tokens (seq_len is already its share) with its own attention extras
    ulysses = cp > 1 and training.context_parallel is ContextParallel.ULYSSES
    layer: dict[str, float] = {}
    mean: dict[str, float] = {}
    constants: dict[str, float] = {}
    window_masks = 0
    moe_first_frozen = False
    for stack, tokens in seq.items():
        args = (arch, stack, dt, attention, dec_len if stack == "decoder" else s, s, dropout, recompute)
        n_layers = arch.layers_of(stack)
        masks = _mask_lens(arch, training, stack, tokens, host) if attention is Attention.SDPA else (0,) * n_layers
        if training.attention_mask is AttentionMask.NONE:
            window_masks += sum(1 for m in masks if m)
        # the model's first layer (of a stack: the decoder's too) gets no gradient for its input when the
        # embeddings are frozen. A MoE model's dense layers are a stack before the MoE layers: when LoRA
        # adapts none of them (PEFT leaves their MLPs alone), none of their inputs needs a gradient, nor
        # the first MoE layer's.
        dense_frozen = not saves.full and not any(x.name in saves.targets for x in arch.block_linears.get("dense", []))
        first = not embed_trains and (stack != "main" or not arch.dense_layers or dense_frozen)
        n_first = n_layers if stack == "dense" and dense_frozen and first else 1
        if stack == "main":  # and when nothing in its attention trains, its MLP's input needs none either
            moe_first_frozen = first and not any(
                x.name in saves.targets for x in arch.block_linears["main"] if x.role in ATTENTION_ROLES
            )
        nope = _nope_flags(arch, stack)
        grads = (saves.first_layer() if first else saves, saves)  # a leading layer's, the others'
        # a layer's bytes depend only on whether it leads, its mask and whether it skips rotary: each
        # distinct kind is computed once (a model's layers are mostly alike)
        kinds: dict[tuple[bool, int, bool], float] = {}
        each = []
        for i, m in enumerate(masks):
            key = (i < n_first, m, nope[i])
            if key not in kinds:
                g = grads[0] if key[0] else grads[1]
                e = act.layer_bytes_per_token(*args, g, m, nope[i])
                if gathered:  # the column-parallel linears' gathered inputs, whole on every rank: t times a shard
                    e = e + (t - 1) * act.gathered_bytes_per_token(arch, stack, dt, g)
                if ulysses:
                    e = e + act.ulysses_bytes_per_token(arch, stack, dt, g, cp)
                kinds[key] = e
            each.append(kinds[key])
        layer[stack] = max(each) * tokens / t  # the widest layer: the working set a recomputed step rebuilds
        mean[stack] = sum(each) / n_layers * tokens / t
        lead, rest = (act.layer_constant_bytes(arch, g, stack) for g in grads)
        constants[stack] = sum(lead if i < n_first else rest for i in range(n_layers)) / t
        if arch.attn_temperature and (saves.full or saves.input_grad):
            # Llama 4's NoPE layers scale the queries by one fp32 temperature a position, which the multiply keeps
            constants[stack] += 4 * tokens * sum(nope)
    cross_kv = act.cross_kv_bytes_per_sequence(arch, dt, s) / t if arch.kind is Kind.ENCODER_DECODER else 0.0
    out_tokens = seq.get("decoder", seq.get("main", 0))
    head_tok = act.head_bytes_per_token(arch, dt, dropout, saves, embed_trains, lm_head_trains)
    whole_tok = act.token_id_bytes_per_token(arch, embed_trains)  # (the ids every rank embeds)
    if gathered:
        whole_tok += act.head_gathered_bytes_per_token(arch, dt, lm_head_trains)
    head = (head_tok + (t - 1) * whole_tok) * out_tokens / t
    if arch.kind is Kind.ENCODER_DECODER:
        head += (head_tok + (t - 1) * whole_tok) * seq["encoder"] / t
    rotary = act.rotary_bytes(arch, dt, s) if _rotary_kept(arch, saves, embed_trains) else 0.0  # whole a rank
    if ulysses:  # the model's position ids are every sample's (global positions): rotary tables a sequence
        head, rotary = head + rotary, 0.0
    if arch.pooler:  # the pooled [CLS] vector of each sequence, which the classification head keeps
        head += c * arch.hidden / t
    widest = max(arch.ffn * max(arch.experts_per_token, 1), arch.hidden)
    if arch.routing == "llama4":  # every expert's gate/up output over every token
        widest = max(widest, 2 * arch.ffn * arch.experts)
    bwd_ws = 2 * c * widest
    if attention is Attention.EAGER and recompute is not Recompute.SELECTIVE:  # the scores' gradients
        eager_ws = act.eager_backward_bytes(arch, dt, saves, dropout, max(seq.values()))
        if recompute is Recompute.FULL:
            # beside the recomputed layer's saves (recompute_ws), of which backward has released the
            # feed-forward side by the time it reaches the attention (measured: the CPU grid's
            # gpt-oss-lora-fp32-experts-recompute, whose peak the whole scores' gradients on top of the
            # layer would overstate by 4.9%). Without recomputation nothing is taken off: the H200 run's
            # BERT case held the whole term above every layer's saves.
            eager_ws -= act.mlp_side_bytes_per_token(arch, next(iter(seq)), dt, dropout, saves)
        bwd_ws = max(bwd_ws, eager_ws)
    norm_ws = 0.0
    if arch.norm == "rmsnorm":
        # Hugging Face's RMSNorms are eager ops in fp32 (upcast, pow, mean, rsqrt, scale): their backward holds
        # 20 bytes an element above its inputs, whatever the input dtype (probed on a CPU: Llama's, Qwen3's and
        # Gemma's norms, bf16 and fp32), over the hidden state or the queries a q-norm normalises (per head:
        # Qwen3, Gemma 3; whole: OLMo 2). Where the MLP is narrow (ffn < 5·h) and backward is the peak (a
        # small vocabulary, a pipeline's first stages) this is its widest moment (measured: a LoRA step with a
        # 32-token vocabulary −3.1% → +0.3%)
        norm_ws = _RMSNORM_BACKWARD_BYTES * max(arch.hidden, arch.q_dim if arch.qk_norm in ("head", "full") else 0)
    if saves.adapter_fp32:
        # fp32 adapters without autocast: an adapter's backward also holds the fp32 gradient of the
        # promoted sum and of its scaled output (4 bytes each an output element), and of lora_B's input
        # (measured: benchmarks/measured_grid.yaml, the bf16-fp32-adapters cases with recomputation)
        bwd_ws += 8 * _widest_adapted(arch, saves.targets - saves.param_targets) + 4 * saves.rank
    if saves.adapter_cast:
        # fp32 adapters under autocast: while an adapter runs, its layer also holds the input it reads,
        # PEFT's fp32 cast of it (autocast keeps only the 16-bit cast of that) and the base output: the
        # working set of a recomputed layer at its widest adapted linear (traced op by op on a CPU:
        # the peak of a recomputed LoRA step holds exactly these three beside the layer's saves)
        bwd_ws = max(bwd_ws, max((
            (c + 4) * x.d_in + c * x.d_out
            for lin in arch.block_linears.values() for x in lin
            if x.name in saves.targets and x.name not in saves.param_targets
        ), default=0))  # fmt: skip
    return _PerSequence(
        dt=dt, saves=saves, embed_trains=embed_trains, lm_head_trains=lm_head_trains, t5_eager=t5_eager,
        window_masks=window_masks, seq=seq,
        layer=layer, mean=mean,
        cross_kv=cross_kv, head=head, constants=constants,
        rotary=rotary,
        moe_first_frozen=moe_first_frozen,
        head_constant=act.head_constant_bytes(arch, s, embed_trains) / t,
        loss_saved=act.loss_saved_bytes_per_token(arch, dt, training.loss) * out_tokens / t,
        bwd_ws=bwd_ws * max(seq.values()) / t,
        norm_ws=norm_ws * max(seq.values()) / t,
    )  # fmt: skip


def _ring_workspace(arch: Architecture, c: int, cp: int) -> float:
    """Bytes a local token adds to an attention layer's backward under context parallelism.

    torch's ring attention (``_templated_ring_attention_backward``, with its default all-gather rotation,
    as torchtitan runs it) gathers every rank's keys and values (``cp`` times the local k and v, in the
    compute dtype), accumulates the gradients of q, k and v in fp32 (``convert_to_f32``), and passes the
    k/v gradients around the ring as an fp32 buffer sent and one received. The forward's merge holds less
    (fp32 output and log-sum-exp, the gathered k and v). Read from the source (torch 2.13); a CPU cannot
    run it (CUDA SDPA kernels only), so it is not measured.
    """
    q, kv = arch.q_dim, arch.kv_dim
    gathered = c * 2 * kv * cp
    accumulators = 4 * (q + 2 * kv)
    rotated = 2 * 4 * 2 * kv
    return float(gathered + accumulators + rotated)


# bytes an element an eager RMSNorm's backward holds above its inputs (see _per_sequence)
_RMSNORM_BACKWARD_BYTES = 20


def _moe_forward_bytes(arch: Architecture, saves: act.Grads, first_frozen: bool, c: int, r: int) -> float:
    """Bytes a token holds inside a MoE layer's forward beyond what it saves (transformers 5's grouped
    experts, integrations/moe.py): each routed copy's weighted output and its unpermuted copy, its
    gathered input and its down-projection output where those are not kept for backward (the experts
    are frozen; the routing weights need no gradient), and the token's layer input and output. With all
    the saved activations beside it (a bound), this is the forward's own peak where the vocabulary is
    small; the merged weights a first frozen MoE layer does not keep are added by the caller."""
    if not arch.is_moe:
        return 0.0
    if arch.routing == "llama4":
        # Llama 4 (every expert on every token): the scaled input in the residual dtype, alive through the
        # experts (kept for backward only as the experts' own input: not under autocast, whose 16-bit cast
        # the matmul keeps, nor when they are frozen), then the matmul's 16-bit cast of it or the down
        # projection's output, an expert's worth each (measured: the llama4 cases with recomputation)
        e, h = arch.experts, arch.hidden
        kept = saves.full and r == c
        return float((0 if kept else r * e * h) + c * e * h + 2 * c * h)
    roles = {x.role: x.name for x in arch.block_linears["main"]}
    experts = saves.full or any(roles.get(r) in saves.param_targets for r in ("gate", "up", "gate_up"))
    weights_grad = saves.full or not first_frozen or roles.get("router") in saves.targets
    per_routed = 2 + (0 if experts else 1) + (0 if weights_grad else 1)
    return (per_routed * arch.experts_per_token + 2) * c * arch.hidden


def _rotary_kept(arch: Architecture, saves: act.Grads, embed_trains: bool) -> bool:
    """Whether the rotary tables are kept for backward: when some layer's q or k needs a gradient, which
    is so unless nothing trains before the last layer and no attention is adapted (LoRA on the experts
    of a model whose only MoE layer is its last)."""
    if saves.full or embed_trains:
        return True
    first = None  # the first layer with something trainable
    start = 0
    for stack, linears in arch.block_linears.items():
        if any(x.name in saves.targets and x.role in ATTENTION_ROLES for x in linears):
            return True
        if first is None and any(x.name in saves.targets for x in linears):
            first = start
        start += arch.layers_of(stack)
    return first is not None and first < arch.total_layers - 1


def _widest_adapted(arch: Architecture, targets: frozenset[str]) -> int:
    """The widest output of a LoRA-adapted block linear."""
    return max((x.d_out for lin in arch.block_linears.values() for x in lin if x.name in targets), default=0)


# On a GPU the mask's key length is rounded up to 16 elements, the alignment PyTorch's memory-efficient
# SDPA kernel pads an attention bias to (aten/src/ATen/native/transformers/attention.cpp,
# mem_eff_alignment). Read from the source, not yet measured: a CUDA grid entry (seq 2000) checks it.
_MEM_EFF_ALIGNMENT = 16


def _mask_lens(arch: Architecture, training: Training, stack: str, tokens: int, host: bool) -> tuple[int, ...]:
    """Per layer of ``stack``, the keys of the explicit attention mask SDPA gets (0: none). The job's
    mask applies to every layer; without one, transformers still builds a mask for a sliding-window
    layer once the sequence reaches its window (masking_utils: a mask is skipped only while
    ``kv_length < sliding_window``)."""
    n = arch.layers_of(stack)
    keys = tokens if host else -(-tokens // _MEM_EFF_ALIGNMENT) * _MEM_EFF_ALIGNMENT
    if training.attention_mask is not AttentionMask.NONE:
        return (keys,) * n
    if stack not in ("main", "dense") or not arch.sliding_window or tokens < arch.sliding_window:
        return (0,) * n
    return tuple(keys if arch.sliding_layers[i] else 0 for i in arch.stack_indices[stack])


def _nope_flags(arch: Architecture, stack: str) -> tuple[bool, ...]:
    """Per layer of ``stack``: whether it has no rotary embeddings (Llama 4's NoPE layers)."""
    if not arch.nope_layers or stack not in ("main", "dense"):
        return (False,) * arch.layers_of(stack)
    return tuple(arch.nope_layers[i] for i in arch.stack_indices[stack])


@lru_cache(maxsize=1024)
def _adapter_cast_params(arch: Architecture, saves: act.Grads, embed_trains: bool) -> int:
    """Adapter weights whose 16-bit casts backward needs: all of them, except the A matrices
    reading the first layer's input when nothing before them trains (no input gradient)."""
    total = 0
    # the stacks that begin at an embedding: the encoder's and the decoder's, or a decoder's first stack
    starts = set(arch.block_linears) if arch.kind is Kind.ENCODER_DECODER else {next(iter(arch.block_linears))}
    for stack, linears in arch.block_linears.items():
        for x in linears:
            if x.name in saves.targets and x.name not in saves.param_targets:  # folded ones: _folded_bytes
                total += saves.rank * (x.d_in + x.d_out) * x.count * arch.layers_of(stack)
                if stack in starts and not embed_trains and x.role in ("q", "k", "v", "qkv") and x.stack != "cross":
                    total -= saves.rank * x.d_in * x.count
    return total


@lru_cache(maxsize=1024)
def _folded_bytes(arch: Architecture, saves: act.Grads, w_bytes: int, host: bool) -> tuple[float, float, float]:
    """Bytes one layer keeps for LoRA that PEFT folds into a weight (``ParamWrapper``: a MoE's router
    and fused experts): the merged weight ``W + scale·B·A`` in the weight's dtype, which the expert
    matmuls save for backward; and the copies of the factors that product keeps where the adapters'
    dtype differs from the weight's (fp32 adapters over a 16-bit base; on a CPU, PEFT also multiplies
    a 16-bit router's factors in fp32, ``Linear.get_delta_weight``); and the gradient of a merged
    weight, full-sized, that backward computes first (the down projection's, when it is adapted).
    Measured: the grid's mixtral LoRA cases."""
    if not saves.param_targets:
        return 0.0, 0.0, 0.0
    merged = copies = 0.0
    last = {}  # weight bytes of each folded matmul: backward starts with the last one in forward
    for x in arch.block_linears["main"]:
        if x.name not in saves.param_targets:
            continue
        merged += w_bytes * x.weight_params
        key = x.role if x.role in ("router", "down") else "gate_up"
        last[key] = last.get(key, 0) + w_bytes * x.weight_params
        factors = lora_params(x, saves.rank)
        if (saves.adapter_cast or saves.adapter_fp32) and w_bytes == 2:
            copies += w_bytes * factors
        elif host and not x.expert and w_bytes == 2:
            copies += 4 * factors
    grad = next((float(last[k]) for k in ("down", "gate_up", "router") if k in last), 0.0)
    return merged, copies, grad


def _folded_first_bytes(arch: Architecture, saves: act.Grads, w_bytes: int) -> float:
    """What a first MoE layer whose input needs no gradient keeps of the merged weights: only the down
    projection's, whose input (the expert product) needs one when gate/up are folded too (measured)."""
    roles = {x.role: x for x in arch.block_linears["main"] if x.name in saves.param_targets}
    gate = "gate" in roles or "gate_up" in roles
    return float(w_bytes * roles["down"].weight_params) if "down" in roles and gate else 0.0


@lru_cache(maxsize=1024)
def _frozen_cast_params(arch: Architecture, embed_trains: bool) -> int:
    """Block weights whose autocast casts a frozen fp32 base keeps for backward: every linear
    whose input needs a gradient, so not those reading the first layer's input when the
    embeddings are frozen."""
    first = {"q", "k", "v", "qkv"} | ({"gate", "up", "gate_up", "router"} if arch.parallel_residual else set())
    total = 0
    for stack, linears in arch.block_linears.items():
        for x in linears:
            total += x.weight_params * arch.layers_of(stack)
            if not embed_trains and x.role in first and x.stack != "cross":
                total -= x.weight_params
    return total


def _replicated_embedding_grad(arch: Architecture, training: Training, t: int) -> bool:
    """Whether a tensor-parallel rank holds the token embedding's gradient whole: torch's plan shards the
    embedding over the vocabulary (a DTensor), whose backward returns the gradient replicated."""
    return (
        t > 1
        and training.sequence_parallel is SequenceParallel.TORCH
        and arch.has_embedding
        and _grads(arch, training)[1]
    )


def _local(matrix: float, vector: float, embed: float, tp: int) -> float:
    """Per-GPU share under tensor parallelism: matrices and (vocab-parallel) embeddings split."""
    return (matrix + embed) / tp + vector


def estimate_memory(
    arch: Architecture,
    training: Training,
    layout: Layout,
    gpu_memory_bytes: int | None = None,
    gpu_arch: str = "",
    overheads: Overheads = Overheads(),
    pipeline_rank: int | None = None,
) -> MemoryEstimate:
    """Estimate the per-GPU peak and per-node host memory of one training step.

    Under pipeline parallelism each rank holds its own layers and micro-batches: the estimate is of rank
    ``pipeline_rank``, or, without one, of the rank that needs the most: the first (the embeddings and the most
    micro-batches in flight), the last (the lm_head and the loss), or the second, which holds the most of every
    middle rank's: layers (earlier chunks take the remainder; under a weighted split more than the first's), micro-
    batches in flight, and receive buffers (two a micro-batch, the first rank's one)."""
    check_layout(arch, training, layout)
    if layout.cp > 1:  # each rank holds its share of every sequence's tokens (see _ring_workspace)
        training = replace(training, seq_len=training.seq_len // layout.cp)
    if layout.pp == 1:
        return _estimate(arch, training, layout, gpu_memory_bytes, gpu_arch, overheads)
    p, v = layout.pp, layout.virtual_stages
    sizes = pl.chunk_layers(arch.layers, p, v, training.pipeline_split)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    ranks = pl.heaviest_ranks(p) if pipeline_rank is None else (pipeline_rank,)
    ests = []
    for rank in ranks:
        chunks = pl.rank_chunks(rank, p, v)
        layers = tuple(i for c in chunks for i in range(starts[c], starts[c] + sizes[c]))
        # chunk micro-batches in flight, each of at most the rank's largest chunk
        n = pl.in_flight(layout.pp_schedule, p, v, layout.grad_accum, rank)
        held = n * max(sizes[c] for c in chunks)
        # the chunk micro-batches whose output goes on (interleaved: all, a bound), and the receive buffers:
        # one a micro-batch for each chunk's input (but the first's) and output gradient (but the last's)
        last = p * v - 1
        buffers = layout.grad_accum * sum((c > 0) + (c < last) for c in chunks)
        # (interleaved, the last rank runs each last-chunk micro-batch's backward right after its forward)
        pipe = _Pipe(
            sent=n if rank < p - 1 else (n - 1 if v > 1 else 0),
            buffers=buffers,
            outputs=n - 1 if last in chunks and v == 1 else 0,
            all_forwards_first=n >= layout.grad_accum * v,
        )
        stage = arch.pipeline_stage(layers)
        est = _estimate(stage, training, layout, gpu_memory_bytes, gpu_arch, overheads, held / len(layers), pipe)
        note = (
            f"pipeline rank {rank} of {p} ({layout.pp_schedule.value}): layers {layers[0]}–{layers[-1]}"
            if v == 1
            else f"pipeline rank {rank} of {p} ({layout.pp_schedule.value}, {v} chunks: {len(layers)} layers)"
        )
        ests.append(replace(est, notes=(f"{note}, the activations of {held / len(layers):g} micro-batch(es) held",
                                        *est.notes)))  # fmt: skip
    return max(ests, key=lambda e: (e.device_total_bytes, e.peak_allocated_bytes))


class _Pipe(NamedTuple):
    """What a pipeline rank's stage adds: chunk micro-batches in flight whose output goes on to the next
    stage, micro-batch receive buffers, other micro-batches' logits the last stage keeps, and whether the rank
    runs every forward of the step before its first backward (GPipe; 1F1B with no more micro-batches than
    stages after it)."""

    sent: int
    buffers: int
    outputs: int
    all_forwards_first: bool


class _States(NamedTuple):
    """One GPU's model states before any ZeRO sharding: trainable parameters (TP-local), the bytes of the
    trainable and frozen weights, the NF4 constants every GPU keeps whole, gradients and optimizer states."""

    t_local: float
    w_train: float
    w_frozen: float
    quant_state: float
    grads: float
    opt_states: float


def _states(
    arch: Architecture, training: Training, layout: Layout, ps: ParamSplit, rb: _Bytes, frozen_bytes: int
) -> _States:
    """The model states of ``arch`` on one GPU, unsharded (the caller divides what its ZeRO stage shards)."""
    t = layout.tp
    t_local = _local(ps.trainable_matrix, ps.trainable_vector, ps.trainable_embed, t)
    w_train = rb.weight * t_local
    frozen_q = ps.frozen_matrix / t * (ps.quant_bits_per_weight / 8 if ps.quant_bits_per_weight else frozen_bytes)
    frozen_q += ps.frozen_unquantized / t * frozen_bytes  # QLoRA: a MoE's experts and router stay 16-bit
    w_frozen = frozen_q + _local(0, ps.frozen_vector, ps.frozen_embed, t) * frozen_bytes
    # bitsandbytes keeps an NF4 weight's quantisation constants in its quant_state, which is not a
    # parameter: FSDP and ZeRO-3 shard and offload only the packed 4-bit data; every GPU keeps the
    # constants whole (Answer.AI fsdp_qlora's loader quantises on every rank for that reason)
    quant_state = ps.frozen_matrix / t * (ps.quant_bits_per_weight - 4) / 8 if ps.quant_bits_per_weight else 0.0
    grads = rb.grad * t_local
    if layout.zero < ZeroStage.GRADIENTS and _replicated_embedding_grad(arch, training, t):
        # DTensor's backward of a vocabulary-parallel embedding returns its gradient replicated: whole on
        # every rank until the optimizer step (measured: benchmarks/measured_grid_dist.yaml's tp cases);
        # under FSDP it is reduce-scattered into the shard as backward ends (root_reduce)
        grads += rb.grad * arch.vocab * arch.hidden * (1 - 1 / t)
    opt_states = _optimizer_state_bytes(training.optimizer, ps, t_local, rb, t) + rb.master * t_local
    saved16 = _saved_modules_16bit(training, layout, ps, t)
    if saved16:
        # PEFT copies `modules_to_save` in the base weights' dtype: under a mixed recipe over a 16-bit
        # base they stay 16-bit (weights, gradients, and the optimizer's moments, which follow the
        # parameter), while the adapters are fp32 (measured: benchmarks/measured_grid.yaml)
        w_train -= (rb.weight - 2) * saved16
        grads -= (rb.grad - 2) * saved16
        if training.optimizer in _ADAMW:  # two moments a parameter (8-bit and Adafactor states are
            opt_states -= 2 * (rb.state - 2) * saved16  # not the parameter's dtype: left as they are)
        elif training.optimizer is Optimizer.SGD:
            opt_states -= (rb.state - 2) * saved16
    return _States(t_local, w_train, w_frozen, quant_state, grads, opt_states)


def _estimate(
    arch: Architecture,
    training: Training,
    layout: Layout,
    gpu_memory_bytes: int | None,
    gpu_arch: str,
    overheads: Overheads,
    in_flight: float = 1.0,
    pipe: _Pipe | None = None,
) -> MemoryEstimate:
    """The estimate of one GPU holding ``arch`` (the whole model, or a pipeline rank's layers) with the
    activations of ``in_flight`` micro-batches at once; ``pipe``: a pipeline rank's chunk micro-batches in
    flight whose output goes on to a next stage and whose input came from a previous one."""
    notes: list[str] = []
    # states shard over the ZeRO group: all data-parallel ranks, or an HSDP shard group
    n, t, z = layout.shard, layout.tp, layout.zero
    # expert parallelism: this rank's experts, and the routed rows they take (see _check_expert)
    whole, arch = arch, arch.expert_shard(layout.ep, training.capacity_factor)
    if layout.ep > 1:
        notes.append(
            f"expert parallelism: {arch.local_experts} of {arch.experts} routed experts a GPU, whose rows are counted "
            f"at {training.capacity_factor:g}× a balanced share (capacity factor); dropless routing can send a GPU "
            "more: set capacity_factor to the worst imbalance you expect"
        )
    ps = split_params(arch, training)
    rb = _recipe(training, layout)
    c = training.precision.compute_bytes
    amp = training.precision.mixed and z == ZeroStage.NONE and training.method is Method.FULL
    fp32_base = training.lora is not None and training.lora.base_fp32  # (LoRA, mixed: check_layout)
    r = 4 if (training.precision is Precision.FP32 or amp or fp32_base) else 2
    frozen_bytes = 4 if (training.precision is Precision.FP32 or fp32_base) else 2

    # ---- model states ------------------------------------------------------------------------
    # Under expert parallelism the rank holds experts / ep routed experts (arch) whose states the ZeRO stage
    # shards over the ep-th of the shard group that holds the same experts: a sharded state is the whole
    # model's (whole) over the shard group, an unsharded one this rank's.
    st = _states(arch, training, layout, ps, rb, frozen_bytes)
    sw = st if whole is arch else _states(whole, training, layout, split_params(whole, training), rb, frozen_bytes)
    t_local, quant_state = st.t_local, st.quant_state
    w_train, w_frozen, grads, opt_states = st.w_train, st.w_frozen, st.grads, st.opt_states
    # Loading: bitsandbytes quantises a weight as it moves onto a GPU, so a QLoRA model is loaded and
    # quantised whole on every GPU (one 16-bit weight at a time staged beside the 4-bit ones) before
    # ZeRO-3/FSDP shards it or offload moves it to the host: PEFT's FSDP and DeepSpeed QLoRA guides
    # report the whole quantised 70B on each GPU (35.6 GB, 36.6 GB), Answer.AI's fsdp_qlora 3.72 GiB
    # reserved per GPU after wrapping a 7B. Adapters are added after loading; the caching allocator
    # keeps the freed blocks reserved for the step.
    load_bytes = w_frozen + max(2.0 * whole.largest_linear_params / t, w_train) if ps.quant_bits_per_weight else 0.0
    # DistributedDataParallel copies every gradient into a bucket for its all-reduce: a second copy of
    # the gradients, allocated when it wraps the model (gradient_as_bucket_view=False, its default;
    # measured: benchmarks/measured_grid_dist.yaml). ZeRO-1 runs under DDP too.
    replicated = layout.dp * layout.cp > 1  # (DDP spans the context-parallel ranks too)
    ddp_buckets = grads if replicated and z <= ZeroStage.OPTIMIZER and layout.offload is Offload.NONE else 0.0
    if z >= ZeroStage.OPTIMIZER:
        opt_states = sw.opt_states / n
    if z >= ZeroStage.GRADIENTS:
        grads = sw.grads / n
    if z >= ZeroStage.PARAMETERS:
        w_train = sw.w_train / n
        w_frozen = (sw.w_frozen - quant_state) / n + quant_state
    elif z == ZeroStage.GRADIENTS and layout.offload is not Offload.OPTIMIZER and ps.frozen:
        # FSDP2 shards frozen parameters too: without resharding after forward it holds them whole through
        # forward and backward beside their shards (measured: the grid's LoRA ZeRO-2 case; DeepSpeed's
        # ZeRO-2, which the optimizer-offload recipe follows, leaves them unpartitioned)
        w_frozen += (sw.w_frozen - quant_state) / n
    t_opt = sw.t_local / n if z >= ZeroStage.OPTIMIZER else t_local  # trainable parameters this GPU updates

    host: dict[str, float] = {}
    on_node = min(layout.gpus, layout.gpus_per_node)
    paged = 0.0
    if training.optimizer.paged:
        paged, opt_states = opt_states, 0.0
        host["optimizer_paged"] = paged * on_node
        notes.append("paged optimizer states live in CUDA managed memory, invisible to PyTorch counters")
    if layout.offload is not Offload.NONE:
        host["optimizer_states_offloaded"] = opt_states * on_node
        host["fp32_gradients_offloaded"] = 4 * sw.t_local / n * on_node
        opt_states = 0.0
        # The reduced gradient shards go to the host as backward produces them (DeepSpeed ZeRO-Offload's
        # CPU gradient partition; FSDP's CPUOffload, whose gradients follow the offloaded parameters):
        # the GPU holds those of one block at a time, or of the embeddings when they train
        per_block = largest_block(arch, t) if training.method is Method.FULL else t_local / arch.total_layers
        embed = min(ps.trainable_embed, arch.vocab * arch.hidden) / t  # the embedding or the lm_head, in turn
        grads = rb.grad * min(t_local, max(per_block, embed))
    if layout.offload is Offload.OPTIMIZER_PARAMS:
        host["weights_offloaded"] = (w_train + w_frozen - quant_state) * on_node
        w_train, w_frozen = 0.0, quant_state

    # ---- activations -------------------------------------------------------------------------
    on_cpu = gpu_arch.lower() == "cpu"
    # DeepSpeed's ZeRO-3 linear saves every linear's input, a LoRA job's frozen ones too
    ds_linear = training.engine is Engine.DEEPSPEED and z == ZeroStage.PARAMETERS
    pa = _per_sequence(arch, training, r, t, layout.recompute, on_cpu, layout.cp, ds_linear)
    if pa.t5_eager:
        notes.append("T5 attention (relative position bias) runs eager: attention set to eager")
    if ps.frozen_unquantized:
        notes.append(
            f"QLoRA on {arch.model_type}: transformers 5 quantises only nn.Linear layers, so the fused expert "
            f"weights and the router ({ps.frozen_unquantized / 1e9:.2f}B parameters) stay "
            f"{8 * frozen_bytes}-bit"
        )
    if arch.attn_sinks and training.attention is Attention.SDPA:
        notes.append(
            "gpt-oss: transformers has no SDPA path for its attention sinks; sdpa is counted as a FlashAttention "
            "kernel with sinks (q, k, v, output, log-sum-exp kept); transformers' eager attention keeps more"
        )
    if pa.window_masks:
        notes.append(
            f"{pa.window_masks} sliding-window layer(s) (window {arch.sliding_window} ≤ seq_len): transformers "
            "builds an explicit mask there, which SDPA keeps per layer (s² elements)"
            + (", with k/v copied to every head" if 1 < arch.kv_heads < arch.heads else "")
        )
    dt, saves, embed_trains = pa.dt, pa.saves, pa.embed_trains
    mb = layout.micro_batch
    stacks = {st: mb * seq for st, seq in pa.seq.items()}  # tokens per micro-batch in each stack
    per_layer = {st: v * mb for st, v in pa.layer.items()}
    layer_mean = {st: v * mb for st, v in pa.mean.items()}  # the first layer saves less when embeddings are frozen
    cross_kv = pa.cross_kv * mb
    if layout.recompute is Recompute.FULL:
        saved_layers = sum(arch.layers_of(st) * r * arch.hidden * tok / t for st, tok in stacks.items())
        recompute_ws = max(per_layer[st] + (cross_kv if st == "decoder" else 0) for st in per_layer)
    else:
        saved_layers = sum(arch.layers_of(st) * layer_mean[st] for st in per_layer) + sum(pa.constants.values())
        saved_layers += cross_kv * arch.decoder_layers
        recompute_ws = 0.0
    # LoRA folded into MoE weights: each layer's merged weights, saved for backward (one layer at a
    # time under full recomputation, where they are counted with the working buffers)
    full_recompute = layout.recompute is Recompute.FULL
    folded, folded_copies, folded_grad = (b / t for b in _folded_bytes(arch, saves, frozen_bytes, on_cpu))
    folded_layers = 1 if full_recompute else arch.layers_of("main")  # the MoE layers
    # a merged weight is kept for its input's gradient: not in a first MoE layer whose input needs none
    folded_saved = 0.0 if full_recompute else folded * (folded_layers - pa.moe_first_frozen)
    unkept = 0.0  # merged weights a layer makes in its forward without keeping them
    if pa.moe_first_frozen and not full_recompute:
        first_kept = _folded_first_bytes(arch, saves, frozen_bytes) / t
        folded_saved += first_kept
        unkept = folded - first_kept
    # in backward: the recomputed layer's merged weights, and the first merged weight's gradient
    folded_ws = (folded if full_recompute else 0.0) + folded_grad
    saved_layers += folded_saved
    out_tokens = stacks.get("decoder", stacks.get("main", 0))
    head = pa.head * mb + pa.rotary + pa.head_constant
    constants = pa.rotary + pa.head_constant + (0.0 if full_recompute else sum(pa.constants.values()))
    loss_const = act.loss_constant_bytes(arch, dt, training.loss) / t  # (the fused loss's chunk rounding)
    vocab_parallel = t > 1 and training.sequence_parallel is SequenceParallel.TORCH
    loss_peak = act.loss_bytes_per_token(arch, dt, training.loss, pipe is not None, vocab_parallel) * out_tokens / t
    loss_forward = act.loss_forward_bytes_per_token(arch, dt, training.loss) * out_tokens / t
    # logits the training loop keeps with the model's output, from the loss through the optimizer step
    # (ModelOutput); the loss's own peak comes on top of them (measured: benchmarks/measured_grid.yaml)
    kept_size = {ModelOutput.DROPPED: 0, ModelOutput.KEPT: c, ModelOutput.KEPT_FP32: 4}[training.model_output]
    if arch.kind is Kind.ENCODER or training.loss is Loss.FUSED or not arch.has_head:  # no vocabulary logits
        kept_size = 0
    logits_kept = kept_size * arch.vocab * out_tokens / t
    moe_tok = _moe_forward_bytes(arch, saves, pa.moe_first_frozen, c, r) * out_tokens / t
    loss_saved = pa.loss_saved * mb
    bwd_ws = pa.bwd_ws * mb  # gradient of the widest tensor + its input
    if layout.cp > 1 and training.context_parallel is ContextParallel.RING:
        bwd_ws += _ring_workspace(arch, c, layout.cp) * out_tokens / t
    if full_recompute and arch.routing == "llama4":
        # A recomputed Llama 4 layer runs every expert on every token again while the gradient of the layer
        # above's expert input can still be alive (traced op by op on a CPU; when, depends on the order the
        # autograd engine takes): the scaled input, the experts' output and that gradient are added to the
        # backward's own working set, a bound (+1.6% to +6.9% over the grid's steps; ftplan notes it)
        bwd_ws += (2 * c + r) * arch.experts * arch.hidden * out_tokens / t
    fp8 = training.fp8_setup
    fp8_layer = fp8_linears(arch) if fp8 is not None else {}
    fp8_ws = _fp8_cast_bytes(arch, stacks, t) if fp8 is not None else 0.0
    if fp8_ws:
        bwd_ws += fp8_ws
        notes.append(
            f"fp8: eager float8 casts counted ({fp8_ws / GIB:.2f} GiB at most: a cast briefly holds two fp32 copies "
            "of its tensor); torch.compile fuses them into one kernel and needs less"
        )
    after_loss = c * arch.hidden * out_tokens / t  # gradient of the last hidden state
    # a norm's backward comes last in its layer, when a recomputed layer's own saves are gone
    norm_ws = pa.norm_ws * mb
    in_backward = after_loss + max(recompute_ws + bwd_ws, norm_ws)  # grows with the micro-batch, as the loss peak does
    activations = (saved_layers + head) * in_flight  # (pipeline: every micro-batch a stage holds)
    recv_buffers = 0.0
    if pipe is not None:
        # torch.distributed.pipelining keeps each chunk micro-batch's output (its forward cache) until its
        # backward: a hidden state in the residual stream's dtype, which nothing else keeps. Its input and
        # the gradient of its output arrive in buffers allocated once, one per micro-batch of the step for
        # every chunk that receives (_create_act_recv_info, _create_grad_recv_info), kept for the whole run
        # (measured: benchmarks/measured_grid_dist.yaml)
        hidden_tok = r * arch.hidden * out_tokens / t
        # (the last stage's output is its logits, and it computes each micro-batch's loss as its forward
        # ends: the other micro-batches in flight keep their logits and what their loss saved)
        activations += pipe.sent * hidden_tok + pipe.outputs * (c * arch.vocab * out_tokens / t + pa.loss_saved * mb)
        recv_buffers = pipe.buffers * hidden_tok

    # ---- working buffers ---------------------------------------------------------------------
    block = largest_block(arch, t)
    # tied or not, it is cast (where this GPU holds it)
    lm_head_matrix = 0 if arch.kind is Kind.ENCODER or not arch.has_head else arch.vocab * arch.hidden
    # FP8 linears cast their fp32 weight straight to float8 for each matmul and keep the weight itself
    # for backward: autocast makes no 16-bit copy of them (measured: benchmarks/measured_grid.yaml)
    fp8_params = sum(v * arch.layers_of(st) for st, v in fp8_layer.items())
    cast_copies = 2.0 * _local(arch.matrix_params - fp8_params, 0, lm_head_matrix, t) if amp else 0.0
    if saves.adapter_cast:  # autocast's 16-bit copies of the fp32 adapters, kept for backward
        cast_copies = 2.0 * _adapter_cast_params(arch, saves, embed_trains) / t
    # Autocast caches the 16-bit cast of a weight only when the weight requires a gradient
    # (aten/src/ATen/autocast_mode.cpp, cached_cast): a frozen fp32 lm_head applied chunk by chunk
    # (loss chunked) is cast, and its copy kept for backward, once per chunk (probed on a CPU; lit-gpt's
    # bf16-mixed LoRA of StableLM 3B reads 3.1 GiB above one copy, eight more of its 0.39 GiB lm_head)
    head_casts = act.CHUNKED_LOSS_CHUNKS if training.loss is Loss.CHUNKED and not pa.lm_head_trains else 1
    if fp32_base:  # and of the fp32 base weights, which backward needs for the input gradients
        cast_copies += 2.0 * _local(_frozen_cast_params(arch, embed_trains), 0, head_casts * lm_head_matrix, t)
    if layout.recompute is Recompute.FULL:
        # Checkpointed layers keep no casts. Alive are the lm_head's (until its backward) or,
        # later, those of the one block being recomputed (until its backward): the larger.
        cast_copies = 0.0
        if amp or fp32_base:
            cast_block = max(
                (arch.layer_matrix_params[st] - fp8_layer.get(st, 0)) / t + arch.layer_vector_params[st]
                for st in arch.block_linears
            )
            cast_copies = 2.0 * max(_local(0, 0, (head_casts if fp32_base else 1) * lm_head_matrix, t), cast_block)
    cast_copies += folded_copies * folded_layers  # the folded MoE adapters' factor copies
    fp8_cache = 0.0
    if fp8 is not None and fp8.weight_cache:
        if z <= ZeroStage.OPTIMIZER:
            # Transformer Engine's cached float8 weights: a row-wise and a column-wise copy of every converted
            # weight (one byte an element each: Hopper's FP8 GEMMs take both operands row-major, so the backward
            # needs the transpose), kept in the module's workspace from the first micro-batch on (linear.py,
            # quantize_weight; derived from the code: Transformer Engine needs CUDA, and no GPU run has measured it)
            fp8_cache = 2.0 * fp8_params / t
            notes.append(
                f"fp8.weight_cache: {fp8_cache / GIB:.2f} GiB of cached float8 weights (a row-wise and a column-wise "
                "copy of each converted weight), derived from Transformer Engine's code, not measured"
            )
        else:
            notes.append(
                "fp8.weight_cache: no cache at ZeRO-2/3 (Transformer Engine keeps none under FSDP2): every use "
                "casts the weight"
            )
    router_copy = arch.routing == "sigmoid" and c != 4 and not training.precision.mixed
    if router_copy and (saves.full or saves.input_grad):
        # DeepSeek-V3's router multiplies in fp32: without autocast (which casts it back to 16 bits) each MoE
        # layer keeps an fp32 copy of its 16-bit router weight for the input's gradient (measured).
        # transformers' from_pretrained keeps that weight in fp32 instead: no copy, and 2 bytes a router
        # weight more than the weights count, a smaller sum.
        cast_copies += 4 * arch.experts * arch.hidden * (1 if full_recompute else arch.layers_of("main")) / t
    gathered = one_block = blocks = loss_block = forward_block = 0.0
    if z == ZeroStage.GRADIENTS:
        # ZeRO-2 (FSDP2 without resharding after forward) still holds the flat buffer of the last block it
        # gathered, in the gathered dtype, as forward reaches the loss; freed before the loss's backward
        # (traced on the grid's ZeRO-2 cases)
        forward_block = block * frozen_bytes
        if training.method is not Method.FULL:
            forward_block += ps.trainable_matrix / arch.total_layers / t * rb.weight
    if z >= ZeroStage.PARAMETERS:
        # (a MoE's 16-bit experts under QLoRA: the gathered block counted at 16 bits, a bound)
        quantized = ps.quant_bits_per_weight and not ps.frozen_unquantized
        w16 = ps.quant_bits_per_weight / 8 if quantized else frozen_bytes
        one_block = block * w16
        if training.method is not Method.FULL:  # a block's adapters are gathered with it
            one_block += ps.trainable_matrix / arch.total_layers / t * rb.weight
        if fp8 is not None and fp8.all_gather:  # FP8 weight shards gathered: 1 byte a converted weight
            one_block = max(
                (arch.layer_matrix_params[st] / t + arch.layer_vector_params[st]) * w16
                - fp8_layer.get(st, 0) / t * (w16 - 1)
                for st in arch.block_linears
            )
        blocks = 2 * one_block  # the block being computed and the one prefetched
        grad_block = block  # the unsharded gradient of the group backward has just finished
        loss_block = one_block  # at the loss: the last block, gathered again for backward
        if layout.ep > 1:
            # The experts are an FSDP group of their own (transformers' fsdp.py): at the loss only the last
            # layer's other parameters are gathered; backward holds a layer's other parameters, its experts and,
            # prefetched, the next layer's other parameters (one block and the block's parameters outside its
            # experts), and reduces one group's gradient at a time (measured: the grid's EP cases)
            experts = max(arch.layer_expert_params.values())
            rest = max(0.0, block - experts / t)
            loss_block = rest * one_block / block
            blocks = one_block + loss_block
            grad_block = max(experts / t, rest)
        gathered = blocks + (grad_block * rb.grad if training.method is Method.FULL else 0)
    root_gathered = 0.0
    if z >= ZeroStage.PARAMETERS:
        # FSDP's root group holds what is outside the transformer blocks (embeddings, final norm,
        # lm_head, as Accelerate's transformer-layer wrapping leaves them); its gathered parameters are
        # alive through forward and again through backward (measured: benchmarks/measured_grid_dist.yaml)
        root = arch.embedding_params + arch.lm_head_params + arch.other_params
        root_gathered = _local(0, 0, root, t) * (c if training.method is Method.FULL else frozen_bytes)
    # ... and reduced last, when backward ends, once FSDP2 has resharded the root's parameters (foreach_reduce,
    # torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py): the unsharded gradients in the parameters'
    # dtype (the token embedding's whole where tensor parallelism returns it replicated), the flat
    # reduce-scatter input in the reduce dtype (fp32 under mixed precision) over this rank's shards of them,
    # and a copy of the largest gradient (measured at the flat input's allocation, with and without tensor
    # parallelism, fp32 and bf16-mixed: benchmarks/measured_grid_dist.yaml's root cases); the blocks'
    # gradients are sharded already
    root_reduce = root_grad_shard = 0.0
    if z >= ZeroStage.PARAMETERS and ps.trainable_embed:
        root_trained = _local(0, 0, min(ps.trainable_embed, arch.embedding_params + arch.lm_head_params), t)
        unsharded = root_trained
        if _replicated_embedding_grad(arch, training, t):  # the embedding's gradient whole (FSDP + TP)
            unsharded += arch.vocab * arch.hidden * (1 - 1 / t)
        reduce = 4 if training.precision.mixed else c
        largest = min(root_trained, arch.vocab * arch.hidden / t)
        root_reduce = c * (unsharded + largest) + reduce * root_trained
        root_grad_shard = root_trained * rb.grad / n
    reduce_buffer = block * rb.grad if (z == ZeroStage.GRADIENTS and training.method is Method.FULL) else 0.0
    dequant = 2.0 * arch.largest_linear_params if training.method is Method.QLORA else 0.0
    step_tmp = 0.0
    if layout.offload is Offload.NONE and not training.optimizer.paged:
        if training.optimizer is Optimizer.ADAMW:
            # foreach AdamW (torch/optim/adamw.py, _multi_tensor_adamw) computes sqrt(v) for every
            # parameter at once with _foreach_sqrt; the fused kernel (adamw-fused) updates in place.
            step_tmp = rb.state * t_opt
        elif training.optimizer is Optimizer.ADAMW_FORLOOP:
            # the for-loop kernel (_single_tensor_adam) holds sqrt(v) and sqrt(v)/bias_correction
            # of one tensor at a time: twice the largest tensor this GPU updates
            largest = min(ps.largest_trainable / t, t_local) / (n if z >= ZeroStage.OPTIMIZER else 1)  # (a bound)
            step_tmp = 2 * rb.state * largest
        elif training.optimizer is Optimizer.ADAFACTOR:  # fp32 grad², update, rms per tensor
            step_tmp = 3 * 4 * ps.largest_trainable / t
    # gradients exist through forward/backward when they accumulate over micro-steps, or when the
    # loop zeroes them instead of freeing them (set_to_none=False: PyTorch before 2.0)
    grads_held = grads if layout.grad_accum > 1 or training.zero_grad is ZeroGrad.ZEROS else 0.0
    if not gradients_held_apart(training, z):
        grads_held = 0.0
    if pipe is not None and pipe.all_forwards_first and training.zero_grad is ZeroGrad.NONE:
        # every forward before the first backward, when no gradient exists yet; by the time the gradients
        # are whole, one micro-batch's activations are gone
        grads_held = max(0.0, grads_held - (saved_layers + head) * in_flight / layout.grad_accum)
    # The forward/backward moment peaks at the loss (the blocks resharded, ZeRO-3), in backward (two blocks
    # gathered, one being computed and one prefetched) or inside a MoE layer's forward: each a line in the
    # micro-batch (constant, per sequence), which the layout search evaluates exactly (fb_lines)
    # (at the loss FSDP has already gathered the last block for backward: its root's pre-backward prefetches it)
    # ZeRO-2 reduces each block's gradient as backward leaves it, as ZeRO-3 does: one block's reduce
    # buffer is alive while backward runs on (measured: the grid's ZeRO-2 cases, FSDP2)
    branches = [(loss_block + loss_const, loss_peak), (gathered + folded_ws + reduce_buffer, in_backward),
                (gathered + unkept, moe_tok), (forward_block + loss_const, loss_forward)]  # fmt: skip
    if z >= ZeroStage.PARAMETERS:
        # ZeRO-3 reshards the root group after forward too (fully_shard(reshard_after_forward=True), as
        # Accelerate and torchtitan call it) and gathers it again as backward begins, beside what the loss saved:
        # FSDP2's flat all-gather output and the parameters copied out of it are both alive then
        # (foreach_all_gather_copy_out; measured: the grid's -root cases)
        branches.append((root_gathered, loss_saved))
    act_phase_extra = max(a + b for a, b in branches)
    cublas = cublas_workspace_bytes(gpu_arch)

    gpu_terms = {
        "weights_trainable": w_train,
        "weights_frozen": w_frozen,
        "gradients": grads,
        "optimizer_states": opt_states,
        "activations": activations,
        "logits_loss": loss_peak + loss_const,
        "backward_workspace": max(bwd_ws + recompute_ws, norm_ws) + folded_ws,
        "autocast_weight_copies": cast_copies,
        "zero3_gathered_params": gathered + root_gathered,
        "grad_reduce_buffer": reduce_buffer,
        "dequant_workspace": dequant,
        "optimizer_step_temporaries": step_tmp,
        "cublas_workspace": cublas,
        "ddp_gradient_buckets": ddp_buckets,
        "pipeline_recv_buffers": recv_buffers,
        "fp8_weight_cache": fp8_cache,
        "logits_kept": logits_kept,
        "load_unsharded_weights": max(0.0, load_bytes - w_train - w_frozen),
    }
    # DeepSpeed's ZeRO engine: what it holds beyond these terms from its start (ZeRO-3's partitions, reduce bucket)
    ds = 0
    if training.engine is Engine.DEEPSPEED:
        whole_ps = ps if whole is arch else split_params(whole, training)
        ds = sum(deepspeed.extra_bytes(whole, whole_ps.trainable, training.precision, z, n).values())
    gpu_terms["deepspeed_buffers"] = ds
    persistent = w_train + w_frozen + opt_states + cublas + ddp_buckets + recv_buffers + ds + fp8_cache  # once
    states = persistent + logits_kept  # at every moment (see _PHASE_TERMS)
    phases = {
        "forward/backward": states + activations + cast_copies + root_gathered + dequant + grads_held + act_phase_extra,
        # (ZeRO-3: two blocks still gathered, the root's gradient being reduced in place of its shard)
        "end of backward": states + grads + blocks + root_reduce - root_grad_shard + reduce_buffer + dequant,
        "optimizer step": states + grads + step_tmp,
    }
    if load_bytes > w_train + w_frozen:  # (before DDP wraps the model: no buckets yet)
        phases["loading"] = w_train + w_frozen + gpu_terms["load_unsharded_weights"]
    phase = max(phases, key=lambda k: phases[k])
    peak_alloc = int(phases[phase])
    reserved = reserved_bytes(
        max(v for k, v in phases.items() if k != "loading"),
        persistent,
        phases.get("loading", 0.0),
        overheads.allocator_fraction,
    )
    nccl = 0
    if overheads.include_nccl:
        nccl = nccl_bytes(n) + nccl_bytes(t) + nccl_bytes(layout.replicas)  # (HSDP: a replicate group too)
        nccl += nccl_bytes(layout.cp)  # (context parallelism: its ring)
        if layout.ep > 1:  # (expert parallelism: its all-to-all group, and the group sharding its experts)
            nccl += nccl_bytes(layout.ep) + nccl_bytes(layout.expert_shard)
        if pipe is not None:  # a pipeline rank's sends and receives: a 2-rank communicator a neighbour stage
            nccl += nccl_bytes(2) * (2 if layout.virtual_stages > 1 else 1)
    deepep = 0
    if training.expert_dispatch is ExpertDispatch.DEEPEP and arch.is_moe and layout.ep > 1:
        nvl, rdma = deepep_buffer_bytes(arch.hidden, layout.ep, c)
        deepep = nvl + rdma
        notes.append(
            f"expert_dispatch deepep: {deepep / GIB:.2f} GiB of DeepEP buffers outside PyTorch (NVLink {nvl / GIB:.2f}"
            f", RDMA {rdma / GIB:.2f}: its recommended configs' size hints), derived from DeepEP's code, not measured"
        )
    device_total = reserved + overheads.cuda_context_bytes + nccl + deepep

    gpu_terms.update(
        allocator_cache=reserved - peak_alloc,
        cuda_context=overheads.cuda_context_bytes,
        nccl_buffers=nccl,
        deepep_buffers=deepep,
        optimizer_paged=paged,
    )
    at_peak = set(_PHASE_TERMS[phase]) | {"allocator_cache", "cuda_context", "nccl_buffers", "deepep_buffers"}
    if phase == "forward/backward":
        in_bwd = loss_peak + loss_const < in_backward + folded_ws + reduce_buffer
        at_peak |= {"backward_workspace", "grad_reduce_buffer"} if in_bwd else {"logits_loss"}
        if grads_held:
            at_peak.add("gradients")
    if folded:
        notes.append(
            f"LoRA on the MoE router/experts: PEFT merges W + B·A every forward and backward keeps it, "
            f"{folded / GIB:.2f} GiB a layer"
            + (
                " (one layer at a time under full recomputation)"
                if full_recompute
                else f" × {arch.layers_of('main')} layers; recompute: full keeps one"
            )
        )
    if phase == "loading":
        notes.append(
            f"QLoRA: each GPU loads and quantises the whole model ({phases['loading'] / GIB:.2f} GiB) before "
            "ZeRO-3/FSDP shards it or offload moves it; that loading moment is the peak, not the step"
        )
    if arch.routing == "llama4" and full_recompute:
        notes.append(
            "Llama 4 under full recomputation: the backward's working set is a bound (a recomputed layer runs every "
            "expert on every token beside the layer above's expert gradients; +1.6% to +6.9% over measured steps)"
        )
    unreachable = {x.name for xs in arch.block_linears.values() for x in xs if not x.adaptable and x.role != "router"}
    if unreachable and not saves.full:
        notes.append(
            f"{arch.model_type}: PEFT (over transformers 5) adapts only what target_modules can reach; "
            f"{', '.join(sorted(unreachable))} stay frozen whatever the names given"
        )
    return MemoryEstimate(
        gpu_terms={k: int(v) for k, v in gpu_terms.items()},
        host_terms={k: int(v) for k, v in host.items()},
        peak_allocated_bytes=peak_alloc,
        peak_reserved_bytes=reserved,
        device_total_bytes=device_total,
        host_bytes_per_node=int(sum(host.values())),
        peak_phase=phase,
        peak_terms=frozenset(k for k in at_peak if gpu_terms[k]),
        gpu_memory_bytes=gpu_memory_bytes,
        notes=tuple(notes),
        phase_bytes={k: int(v) for k, v in phases.items()},
        fb_lines=_fb_lines(
            phases["forward/backward"] - grads_held - act_phase_extra,
            branches,
            layout.micro_batch,
            activations - (folded_saved + constants) * in_flight + logits_kept,
        ),
        activation_terms={  # for `ftplan measure` and the tests
            **{
                f"layer:{st}": int(
                    (
                        r * arch.hidden * stacks[st] / t
                        if full_recompute
                        else layer_mean[st]
                        + pa.constants[st] / arch.layers_of(st)
                        + (folded_saved / arch.layers_of(st) if st == "main" else 0)
                    )
                    + (cross_kv if st == "decoder" and layout.recompute is not Recompute.FULL else 0)
                )
                for st in per_layer
            },
            "layers": int(saved_layers),
            "head": int(head),
            "loss_saved": int(loss_saved),
        },
    )
