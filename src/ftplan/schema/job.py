"""The job file that `ftplan memory` reads (and, later, each job of a scenario)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ftplan import limits as L
from ftplan.memory.pipeline import PipelineSchedule, PipelineSplit
from ftplan.memory.setup import (
    ZERO_ALIASES,
    Attention,
    AttentionKernel,
    AttentionMask,
    ContextParallel,
    Engine,
    ExpertDispatch,
    Fp8Recipe,
    Kernels,
    Loss,
    Method,
    ModelOutput,
    Offload,
    Optimizer,
    Precision,
    Recompute,
    SequenceData,
    SequenceParallel,
    ZeroGrad,
)
from ftplan.schema.types import Bool, Float, Int, LengthKey

_STRICT = ConfigDict(extra="forbid", frozen=True)


class LoraSpec(BaseModel):
    model_config = _STRICT
    rank: Int = Field(16, gt=0, le=65536, description="LoRA rank r")
    alpha: Float = Field(32, gt=0, description="LoRA alpha (scaling = alpha / rank)")
    dropout: Float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None,
        description="module names as in the Hugging Face implementation, 'all-linear', "
        "or none for the model's attention projections",
    )
    modules_to_save: list[str] = Field(default_factory=list, description="e.g. [embed_tokens, lm_head]")
    target_parameters: list[str] = Field(
        default_factory=list,
        description="expert weights PEFT adapts as parameters (its target_parameters), e.g. "
        "[mlp.experts.gate_up_proj, mlp.experts.down_proj] on gpt-oss",
    )
    double_quant: Bool = Field(True, description="QLoRA: quantise the quantisation constants")
    base_fp32: Bool = Field(
        False,
        description="LoRA under a mixed recipe: the frozen base weights stay in fp32 (a model loaded "
        "without a 16-bit torch_dtype) and autocast casts them for every matmul",
    )


class DataSpec(BaseModel):
    """How long the job's sequences are, when not all seq_len tokens (time and throughput): their mean
    (and p95), or their histogram."""

    model_config = _STRICT
    mean_tokens: Int | None = Field(
        None, gt=0, le=L.MAX_SEQ_LEN, description="tokens of a sequence on average (or give lengths)"
    )
    p95_tokens: Int | None = Field(None, gt=0, le=L.MAX_SEQ_LEN, description="tokens of a sequence, 95th percentile")
    lengths: dict[LengthKey, Float] | None = Field(
        None,
        description="histogram of the sequences' lengths: tokens → share (or count) of the sequences of that "
        "length, e.g. {256: 0.5, 1024: 0.4, 4096: 0.1}; in place of mean_tokens and p95_tokens",
    )
    packing: Bool = Field(
        False,
        description="true: sequences packed into rows of seq_len tokens, each attending only within itself; "
        "false: every micro-batch padded to its longest sequence",
    )

    @field_validator("lengths")
    @classmethod
    def _histogram(cls, v: dict[int, float] | None) -> dict[int, float] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("lengths is empty; give at least one length: share")
        if len(v) > L.MAX_HISTOGRAM_BINS:
            raise ValueError(f"lengths has {len(v):,} entries, at most {L.MAX_HISTOGRAM_BINS:,}; merge neighbours")
        for tokens, share in v.items():
            if not 0 < tokens <= L.MAX_SEQ_LEN:
                raise ValueError(f"length {tokens} is not between 1 and {L.MAX_SEQ_LEN:,} tokens")
            if not share > 0:
                raise ValueError(f"length {tokens} has share {share}; shares must be positive (drop empty lengths)")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> DataSpec:
        if self.lengths is not None and (self.mean_tokens is not None or self.p95_tokens is not None):
            raise ValueError("give either lengths (a histogram) or mean_tokens and p95_tokens, not both")
        if self.lengths is None and self.mean_tokens is None:
            raise ValueError("give mean_tokens (and p95_tokens), or lengths (a histogram of the sequences' lengths)")
        if self.p95_tokens is not None and self.mean_tokens is not None and self.p95_tokens < self.mean_tokens:
            raise ValueError(f"p95_tokens ({self.p95_tokens}) is below mean_tokens ({self.mean_tokens})")
        return self

    def sequence_data(self) -> SequenceData:
        """The lengths as the models take them."""
        if self.lengths is not None:
            return SequenceData.from_histogram(self.lengths, self.packing)
        assert self.mean_tokens is not None  # (the validator)
        return SequenceData(self.mean_tokens, self.p95_tokens, self.packing)

    @property
    def longest(self) -> int:
        """Tokens of the longest sequence the data states (its p95 where it states no histogram)."""
        if self.lengths is not None:
            return max(self.lengths)
        return self.p95_tokens or self.mean_tokens or 0


class Fp8Spec(BaseModel):
    model_config = _STRICT
    recipe: Fp8Recipe = Field(
        Fp8Recipe.TENSORWISE, description="torchao float8 scaling: tensorwise | rowwise (dynamic scales)"
    )
    all_gather: Bool = Field(
        False, description="zero 3: cast weight shards to FP8 before FSDP gathers them (tensorwise only)"
    )
    weight_cache: Bool = Field(
        False,
        description="zero 0-1: cast each weight to FP8 once a step and keep the copies for every micro-batch "
        "(Transformer Engine under Megatron-Core or NeMo); 2 bytes a converted weight held",
    )

    @field_validator("recipe", mode="before")
    @classmethod
    def _delayed(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("delayed", "delayed-scaling", "delayed_scaling"):
            raise ValueError(
                "delayed scaling is not modelled (torchao removed it; Transformer Engine's recipe keeps FP8 copies "
                "ftplan has not measured): use tensorwise or rowwise"
            )
        return value


class LayoutSpec(BaseModel):
    model_config = _STRICT
    dp: Int = Field(1, gt=0, le=L.MAX_RUN_NODES * 64, description="data-parallel degree")
    tp: Int = Field(1, gt=0, le=64, description="tensor-parallel degree (with sequence parallelism)")
    zero: Int = Field(0, ge=0, le=3, description="ZeRO stage 0-3, or an FSDP sharding strategy name")
    offload: Offload = Field(Offload.NONE, description="none | optimizer | optimizer+params")
    recompute: Recompute = Field(Recompute.NONE, description="none | selective | full")
    pp: Int = Field(1, gt=0, le=256, description="pipeline-parallel degree: stages the layers are cut into")
    pp_schedule: PipelineSchedule = Field(
        PipelineSchedule.ONE_F_ONE_B,
        description="gpipe | 1f1b | interleaved-1f1b (torch.distributed.pipelining's schedules); micro-batches "
        "per step are grad_accum",
    )
    virtual_stages: Int = Field(
        1, gt=0, le=64, description="interleaved-1f1b: chunks of layers each pipeline rank holds (≥ 2)"
    )
    cp: Int = Field(
        1, gt=0, le=64, description="context-parallel degree: each sequence split over cp GPUs (ring attention)"
    )
    ep: Int = Field(
        1, gt=0, le=256,
        description="expert-parallel degree (MoE): each rank of a group of ep data-parallel ranks holds experts/ep "
        "of every layer's routed experts; tokens reach them by all-to-all",
    )  # fmt: skip
    dp_shard: Int | None = Field(
        None,
        gt=0,
        le=L.MAX_RUN_NODES * 64,
        description="HSDP: data-parallel ranks a ZeRO-2/3 shard group spans (states sharded inside it, "
        "replicated across the dp / dp_shard groups); default: all dp ranks",
    )

    @field_validator("pp_schedule", mode="before")
    @classmethod
    def _zero_bubble(cls, value: Any) -> Any:
        name = value.strip().lower().replace("_", "-") if isinstance(value, str) else ""
        if "zero-bubble" in name or "zerobubble" in name or name in ("zb", "zb1p", "zbv", "dualpipev", "dualpipe"):
            raise ValueError(
                "zero-bubble schedules are not planned: under torch 2.13's ScheduleInterleavedZeroBubble the last "
                "stage keeps every micro-batch's saved activations past the step (benchmarks/zero_bubble_memory.py; "
                "ZBV and DualPipeV split the backward the same way), so no memory bound holds. To fix: use 1f1b or "
                "interleaved-1f1b"
            )
        return value

    @model_validator(mode="after")
    def _pipeline(self) -> LayoutSpec:
        interleaved = self.pp_schedule is PipelineSchedule.INTERLEAVED
        if interleaved and self.virtual_stages < 2:
            raise ValueError("pp_schedule interleaved-1f1b needs virtual_stages ≥ 2 (chunks per rank)")
        if not interleaved and self.virtual_stages != 1:
            raise ValueError(f"virtual_stages {self.virtual_stages} needs pp_schedule interleaved-1f1b")
        return self

    @field_validator("zero", mode="before")
    @classmethod
    def _fsdp_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            key = value.strip().lower().replace("-", "_")
            if key in ZERO_ALIASES:
                return ZERO_ALIASES[key]
            if key.isdigit():
                return int(key)
            raise ValueError(f"unknown sharding {value!r}: use 0-3 or one of {', '.join(ZERO_ALIASES)}")
        return value


CONFIDENCE_HELP = (
    "fit a layout only if this quantile of its peak memory fits (the estimate over its regime's error band from "
    "published runs); default 0.99"
)
MARGIN_HELP = "instead of memory_confidence: memory left free, a fraction of the card (0.1) or an amount ('6 GiB')"


def check_margin(value: Any) -> Any:
    """``memory_margin``: a fraction of the card in [0, 1) or an amount with a unit (see :mod:`ftplan.bands`)."""
    from ftplan.bands import parse_margin
    from ftplan.errors import FtplanError

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("memory_margin is a fraction of the card (0.1) or an amount such as '6 GiB'")
    try:
        parse_margin(value, "memory_margin")
    except FtplanError as exc:
        raise ValueError(str(exc).removeprefix("memory_margin: ")) from None
    return float(value) if not isinstance(value, str) else value


class OverheadSpec(BaseModel):
    model_config = _STRICT
    allocator_fraction: Float | None = Field(None, ge=0, le=2, description="reserved/allocated − 1")
    cuda_context_mib: Float | None = Field(None, ge=0, description="CUDA context outside PyTorch (MiB)")


class JobSpec(BaseModel):
    """One fine-tuning job: model, method, recipe, shapes, GPU and layout."""

    model_config = _STRICT
    schema_version: Int = Field(1, description="job file format version")
    model: str | None = Field(None, description="catalog model id")
    architecture: dict[str, Any] | None = Field(None, description="inline config.json fields")
    method: Method = Method.FULL
    lora: LoraSpec | None = None
    precision: Precision = Precision.BF16_MIXED
    fp8: Fp8Spec | None = Field(None, description="precision fp8: its recipe (default tensorwise, no FP8 gather)")
    optimizer: Optimizer = Optimizer.ADAMW
    seq_len: Int = Field(gt=0, le=L.MAX_SEQ_LEN, description="tokens per sequence (encoder length for encoder-decoder)")
    target_len: Int | None = Field(
        None, gt=0, le=L.MAX_SEQ_LEN, description="decoder tokens per sequence (encoder-decoder)"
    )
    micro_batch: Int = Field(1, gt=0, le=L.MAX_GLOBAL_BATCH, description="sequences per GPU per micro-step")
    grad_accum: Int = Field(1, gt=0, le=L.MAX_GLOBAL_BATCH, description="micro-steps per optimizer step")
    attention: Attention = Attention.SDPA
    attention_mask: AttentionMask = Field(
        AttentionMask.NONE,
        description="none: packed or equal-length sequences (SDPA runs causal without a mask); causal: an "
        "explicit causal mask tensor; padded: padded batches (the model builds a batch x 1 x s x s mask)",
    )
    loss: Loss = Loss.STANDARD
    dropout: Bool | None = Field(None, description="override the model config's dropout")
    zero_grad: ZeroGrad = Field(
        ZeroGrad.NONE,
        description="none: gradients freed between steps (PyTorch >= 2.0's zero_grad); zeros: kept "
        "allocated through the next forward (set_to_none=False, PyTorch < 2.0)",
    )
    model_output: ModelOutput = Field(
        ModelOutput.DROPPED,
        description="dropped: the training loop keeps only the loss (Transformers' Trainer, TRL, torchtune); "
        "kept: it keeps the model's output, logits included, through backward and the optimizer step "
        "(outputs = model(**batch); outputs.loss.backward()); kept-fp32: the same with Transformers < 4.46, "
        "whose causal LMs returned fp32 logits",
    )
    sequence_parallel: SequenceParallel = Field(
        SequenceParallel.TORCH,
        description="how tensor parallelism (layout.tp > 1) keeps the sequence-gathered inputs of its column-parallel "
        "linears: torch (PyTorch DTensor plans, torchtitan: kept whole, with a vocabulary-parallel loss) | megatron "
        "(Megatron-LM, NeMo: kept sharded, gathered again in backward)",
    )
    context_parallel: ContextParallel = Field(
        ContextParallel.RING,
        description="how context parallelism (layout.cp > 1) splits attention: ring (torch's ring attention, "
        "torchtitan) | ulysses (DeepSpeed-Ulysses all-to-alls over heads, DeepSpeed's Arctic Long Sequence Training)",
    )
    expert_dispatch: ExpertDispatch = Field(
        ExpertDispatch.ALLTOALL,
        description="how expert parallelism (layout.ep > 1) moves tokens: alltoall (every routed copy to its "
        "expert's GPU: transformers, torchtitan, Megatron's alltoall dispatcher) | deepep (DeepEP: a token once to "
        "each GPU and node holding its experts: Megatron's flex dispatcher, NeMo Automodel)",
    )
    kernels: Kernels = Field(
        Kernels.EAGER,
        description="how the training loop runs on the GPU: eager (one kernel per PyTorch operation: Transformers, "
        "PEFT, TRL, Accelerate, plain DDP/FSDP; each adds its launch time) | fused (torch.compile, CUDA graphs, "
        "Megatron-Core/NeMo with Transformer Engine, Liger or Unsloth kernels)",
    )
    attention_kernel: AttentionKernel = Field(
        AttentionKernel.FLASH2,
        description="the flash-attention kernel (time only): flash2 (FlashAttention-2 or PyTorch SDPA's flash "
        "backend) | cudnn (cuDNN's fused attention: Transformer Engine's choice on Hopper, Megatron-Core, NeMo) | "
        "flash3 (FlashAttention-3) | flex (PyTorch FlexAttention: skips masked-out blocks, 90%/85% of "
        "FlashAttention-2's speed); the Hopper kernels run at FlashAttention-2's rate on other GPUs",
    )
    tp_overlap: Bool = Field(
        False,
        description="tensor parallelism's collectives overlapped with the matmuls beside them (time only): "
        "torchtitan's and NeMo Automodel's enable_async_tensor_parallel, Megatron-Core's --tp-comm-overlap; "
        "needs kernels: fused (the first two run it under torch.compile, Megatron-Core over Transformer Engine)",
    )
    param_gather_overlap: Bool = Field(
        False,
        description="ZeRO-1: the updated parameters' all-gather hidden in the next step's forward (time only): "
        "Megatron-Core's --overlap-param-gather (its distributed optimizer), NeMo's overlap_param_sync; "
        "PyTorch's ZeroRedundancyOptimizer and DeepSpeed gather after the step, and FSDP2's ZeRO-2 gathers in "
        "the forward anyway",
    )
    engine: Engine = Field(
        Engine.TORCH,
        description="what runs data parallelism and ZeRO: torch (DDP, ZeroRedundancyOptimizer, FSDP2) | deepspeed "
        "(DeepSpeed's ZeRO engine, as `ftplan export --to deepspeed` configures it: under ZeRO-3 it holds 16-bit "
        "parameter and gradient partitions and a reduce bucket more)",
    )
    pipeline_split: PipelineSplit = Field(
        PipelineSplit.EVEN,
        description="how pipeline parallelism (layout.pp > 1) cuts the layers into stages: even (the layers alone, "
        "the embeddings with the first stage, the LM head and loss with the last: Megatron-Core's default) | "
        "weighted (the embeddings and the head count as a layer each, so the first and last stage take one layer "
        "fewer: torchtitan's default, Megatron-Core's account_for_embedding/loss_in_pipeline_split)",
    )
    capacity_factor: Float = Field(
        1.25, ge=1, le=64,
        description="MoE under expert parallelism: the most routed rows a rank's experts take, relative to a "
        "balanced share (a framework's capacity factor; dropless routing: the worst imbalance you expect)",
    )  # fmt: skip
    gpu: str | None = Field(None, description="catalog GPU id or alias")
    gpus_per_node: Int | None = Field(None, gt=0, le=64, description="GPUs per node (default: the GPU's usual server)")
    host_memory_gib: Float | None = Field(
        None, gt=0, le=L.MAX_HOST_MEMORY_GIB,
        description="RAM per node (GiB) that offloaded states must fit in (default: the least of the catalog's "
        "cloud instances with this GPU and node size)",
    )  # fmt: skip
    layout: LayoutSpec = Field(default_factory=LayoutSpec)
    memory_confidence: Float | None = Field(None, gt=0, lt=1, description=CONFIDENCE_HELP)
    memory_margin: float | str | None = Field(None, description=MARGIN_HELP)
    overheads: OverheadSpec = Field(default_factory=OverheadSpec)
    tokens: Int | None = Field(None, gt=0, le=L.MAX_TOKENS, description="training tokens per epoch (for time and cost)")
    samples: Int | None = Field(
        None, gt=0, le=L.MAX_TOKENS,
        description="sequences per epoch (tokens = samples × seq_len, or × the data's mean length)",
    )  # fmt: skip
    data: DataSpec | None = Field(
        None, description="sequence lengths when not all seq_len tokens (default: every sequence seq_len long)"
    )
    epochs: Float = Field(1.0, gt=0, le=L.MAX_EPOCHS, description="passes over the data")
    global_batch: Int | None = Field(
        None,
        gt=0,
        le=L.MAX_GLOBAL_BATCH,
        description="sequences per optimizer step (default: micro_batch × grad_accum × dp)",
    )

    _margin = field_validator("memory_margin", mode="before")(check_margin)

    @model_validator(mode="after")
    def _one_model(self) -> JobSpec:
        if self.memory_confidence is not None and self.memory_margin is not None:
            raise ValueError("memory_confidence and memory_margin both given; keep one of them")
        if (self.model is None) == (self.architecture is None):
            raise ValueError("give exactly one of 'model' (a catalog id) or 'architecture' (config fields)")
        if self.fp8 is not None and self.precision is not Precision.FP8:
            raise ValueError(f"an fp8 block needs precision: fp8 (the job says {self.precision.value})")
        if self.schema_version != 1:
            raise ValueError(f"schema_version {self.schema_version} is not supported (this ftplan reads 1)")
        if self.attention is Attention.EAGER and self.attention_kernel is not AttentionKernel.FLASH2:
            raise ValueError(
                f"attention_kernel {self.attention_kernel.value} is a flash-attention kernel, but attention is "
                "eager (the probabilities materialised); use attention: sdpa or drop attention_kernel"
            )
        if self.param_gather_overlap and self.engine is Engine.DEEPSPEED:
            raise ValueError(
                "param_gather_overlap is Megatron-Core's and NeMo's distributed optimizer; DeepSpeed's ZeRO engine "
                "all-gathers the updated parameters at the end of its step. To fix: drop param_gather_overlap or "
                "set engine: torch"
            )
        if self.tp_overlap and self.kernels is not Kernels.FUSED:
            raise ValueError(
                "tp_overlap needs kernels: fused (torchtitan's and NeMo Automodel's async tensor parallelism run "
                "under torch.compile, Megatron-Core's --tp-comm-overlap over Transformer Engine); set kernels: "
                "fused or drop tp_overlap"
            )
        data = self.data
        if data is not None:
            longest = data.longest  # (a p95 is never below the mean)
            if longest > self.seq_len:
                raise ValueError(
                    f"data: sequences of {longest:,} tokens exceed seq_len {self.seq_len:,} (the longest a "
                    "micro-batch may hold); raise seq_len or lower the lengths"
                )
        if self.tokens is not None and self.samples is not None:
            what = "data.mean_tokens" if data and data.mean_tokens else "the mean of data.lengths"
            per, what = (data.sequence_data().mean, what) if data else (self.seq_len, "seq_len")
            implied = self.samples * per
            if implied != self.tokens:
                raise ValueError(
                    f"tokens ({self.tokens:,}) and samples ({self.samples:,} × {what} {per:,} = "
                    f"{implied:,} tokens) disagree; give one of them"
                )
        return self


def parse_job(data: Any, source: str) -> JobSpec:
    """Validate a mapping as a job; errors are one line naming ``source`` and the field."""
    from ftplan.errors import JobError
    from ftplan.io import validate_mapping

    return validate_mapping(data, JobSpec, source, JobError, "job fields")


def load_job(path: Path) -> JobSpec:
    from ftplan.io import read_yaml

    return parse_job(read_yaml(path), str(path))
