"""Typed inputs of the memory model: the training recipe and the parallel layout.

These are plain frozen dataclasses (no validation cost) so the layout search can build
thousands per second; ``ftplan.schema.job`` validates user input and builds them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from ftplan.memory.pipeline import PipelineSchedule, PipelineSplit


class Method(StrEnum):
    FULL = "full"
    LORA = "lora"
    QLORA = "qlora"


class Precision(StrEnum):
    """Precision recipes.

    * ``fp32``: fp32 weights, grads, optimizer states and compute.
    * ``bf16-mixed`` / ``fp16-mixed``: fp32 master weights, 16-bit compute (autocast, or the
      ZeRO/FSDP mixed-precision wrappers); frozen LoRA bases are loaded in 16 bits.
    * ``bf16-pure``: everything in bf16, no fp32 master copy (torchtune, lit-gpt ``bf16-true``).
    * ``bf16-fp32-adapters``: LoRA/QLoRA over a bf16 model without autocast, the adapters in fp32
      (PEFT's ``autocast_adapter_dtype=True`` default on a model loaded in bf16): each adapter casts
      its input to fp32, computes in fp32 and hands back a bf16 result.
    * ``fp8``: ``bf16-mixed`` whose transformer-block linears multiply in FP8 (torchao's float8
      training, as torchtitan, Accelerate and Axolotl run it; see :class:`Fp8Setup`).
    """

    FP32 = "fp32"
    FP16_MIXED = "fp16-mixed"
    BF16_MIXED = "bf16-mixed"
    BF16_PURE = "bf16-pure"
    BF16_FP32_ADAPTERS = "bf16-fp32-adapters"
    FP8 = "fp8"

    @property
    def compute_bytes(self) -> int:
        return 4 if self is Precision.FP32 else 2

    @property
    def mixed(self) -> bool:
        """fp32 parameters under autocast (or ZeRO/FSDP's 16-bit compute copies)."""
        return self in (Precision.FP16_MIXED, Precision.BF16_MIXED, Precision.FP8)


class Optimizer(StrEnum):
    ADAMW = "adamw"  # torch.optim.AdamW, multi-tensor (foreach): PyTorch's default on CUDA
    ADAMW_FUSED = "adamw-fused"  # torch.optim.AdamW(fused=True): one kernel, no step temporaries
    ADAMW_FORLOOP = "adamw-forloop"  # torch.optim.AdamW(foreach=False), HF adamw_hf: one tensor at a time
    ADAMW_8BIT = "adamw-8bit"
    SGD = "sgd"
    ADAFACTOR = "adafactor"
    PAGED_ADAMW = "paged-adamw"
    PAGED_ADAMW_8BIT = "paged-adamw-8bit"

    @property
    def paged(self) -> bool:
        return self in _PAGED

    @property
    def eight_bit(self) -> bool:
        return self in _EIGHT_BIT


_PAGED = frozenset({Optimizer.PAGED_ADAMW, Optimizer.PAGED_ADAMW_8BIT})
_EIGHT_BIT = frozenset({Optimizer.ADAMW_8BIT, Optimizer.PAGED_ADAMW_8BIT})


class ZeroStage(IntEnum):
    """ZeRO stages; FSDP names map onto them (see ``ZERO_ALIASES``)."""

    NONE = 0
    OPTIMIZER = 1
    GRADIENTS = 2
    PARAMETERS = 3


ZERO_ALIASES = {
    "no_shard": 0, "ddp": 0, "shard_grad_op": 2, "full_shard": 3, "hybrid_shard": 3,
}  # fmt: skip


class Offload(StrEnum):
    NONE = "none"
    OPTIMIZER = "optimizer"
    OPTIMIZER_PARAMS = "optimizer+params"


class Recompute(StrEnum):
    NONE = "none"
    SELECTIVE = "selective"
    FULL = "full"


class Attention(StrEnum):
    SDPA = "sdpa"  # also flash attention: saves q, k, v, output and log-sum-exp
    EAGER = "eager"  # materialises the attention probabilities


class AttentionMask(StrEnum):
    """The attention mask a step hands the model (it matters to SDPA, which skips an absent one)."""

    NONE = "none"  # none (packed or equal-length sequences): SDPA runs causal without a mask tensor
    CAUSAL = "causal"  # an explicit causal mask tensor (a 4-D mask the training loop builds)
    PADDED = "padded"  # a padding mask (padded batches): the model builds a batch × 1 × s × s mask


class Loss(StrEnum):
    STANDARD = "standard"  # logits for every token, upcast to fp32 when the model does
    CHUNKED = "chunked"  # logits upcast and cross-entropy per chunk of tokens (torchtune)
    FUSED = "fused"  # fused linear + cross-entropy: logits never materialised (Liger-Kernel)


class SequenceParallel(StrEnum):
    """How tensor parallelism shards the activations between its matmuls (``layout.tp`` > 1).

    Both run the norms, dropout and residual stream on ``seq_len / tp`` tokens a rank and all-gather
    the sequence before the column-parallel linears (Korthikanti et al. 2022, "Reducing Activation
    Recomputation in Large Transformer Models" §4.2.2). They differ in what the gathered input costs:

    * ``torch``: PyTorch's DTensor plans (``parallelize_module`` with ``SequenceParallel`` on the norms,
      as torchtitan runs them): the column-parallel linears save the gathered input, whole, for their
      weight gradient (q/k/v share one, gate/up another, the lm_head a third); the token ids and rotary
      tables are whole on every rank; a vocabulary-parallel embedding's gradient comes back whole
      (measured: ``ftplan measure --nproc`` on benchmarks/measured_grid_dist.yaml's tp cases).
    * ``megatron``: Megatron-LM's sequence parallelism saves the sharded input and all-gathers it again
      in backward, so every saved activation but the token ids and rotary tables is divided by ``tp``
      (derived from the paper and Megatron-Core's ``LinearWithGradAccumulationAndAsyncCommunication``;
      not measured).
    """

    TORCH = "torch"
    MEGATRON = "megatron"


class ContextParallel(StrEnum):
    """How context parallelism (``layout.cp`` > 1) runs attention over a sequence split across ranks.

    * ``ring``: torch's ring attention (``torch.distributed.tensor.experimental.context_parallel``, as
      torchtitan runs it): every rank keeps its queries and gathers the others' keys and values.
    * ``ulysses``: DeepSpeed-Ulysses (Jacobs et al. 2023), as DeepSpeed's ``UlyssesSPAttentionHF`` (Arctic Long
      Sequence Training) runs it on Hugging Face models: all-to-alls give each rank the whole sequence for
      ``heads / cp`` heads before attention and its own tokens back after; heads must divide by cp.
    """

    RING = "ring"
    ULYSSES = "ulysses"


class ExpertDispatch(StrEnum):
    """How expert parallelism (``layout.ep`` > 1) moves a MoE layer's tokens to their experts' GPUs and back.

    * ``alltoall``: every routed copy of a token (top-k a token) goes to its expert's GPU in one all-to-all
      (transformers' and torchtitan's expert parallelism, Megatron-Core's ``alltoall`` dispatcher).
    * ``deepep``: DeepEP's dispatch and combine (Megatron-Core's ``flex`` dispatcher, NeMo Automodel): a token goes
      once to each GPU of its NVLink domain that holds any of its experts, and once over the network to each other
      domain that does, whose GPU forwards it over NVLink (DeepEP's README; DeepSeek-V3's report, §3.2.2). Its
      buffers are allocated outside PyTorch (``memory.deepep.deepep_buffer_bytes``).
    """

    ALLTOALL = "alltoall"
    DEEPEP = "deepep"


class Engine(StrEnum):
    """What runs the layout's data parallelism and ZeRO sharding.

    * ``torch``: PyTorch's own (DistributedDataParallel, ZeroRedundancyOptimizer, FSDP2), as the memory model's
      terms count them.
    * ``deepspeed``: DeepSpeed's ZeRO engine, with the buckets ftplan writes to its config; ZeRO-3 adds the
      partitions and the reduce bucket it holds beyond them (:mod:`ftplan.memory.deepspeed`).
    """

    TORCH = "torch"
    DEEPSPEED = "deepspeed"


class Kernels(StrEnum):
    """How the training loop runs its operations on the GPU (the time model's per-operation term,
    :mod:`ftplan.timing.dispatch`).

    * ``eager``: one kernel per PyTorch operation (Transformers, PEFT, TRL, Accelerate, plain DDP or FSDP):
      each adds its dispatch and launch time.
    * ``fused``: torch.compile, CUDA graphs or a stack of fused kernels (Megatron-Core or NeMo with Transformer
      Engine, Liger, Unsloth): launches are few, and the term is left out.
    """

    EAGER = "eager"
    FUSED = "fused"


class AttentionKernel(StrEnum):
    """Which flash-attention kernel runs the attention core (time only; ``attention: sdpa``).

    * ``flash2``: FlashAttention-2, or PyTorch SDPA's flash backend, which is built on it: the kernel the
      catalog's attention efficiencies are fitted to.
    * ``cudnn``: cuDNN's fused flash attention, which Transformer Engine (Megatron-Core, NeMo, Megatron-Bridge)
      prefers on Hopper and later GPUs (NeMo's memory-optimisation guide), and so does PyTorch's SDPA on Hopper
      and B200-class GPUs once its cuDNN is newer than 9.15 (``check_prefer_cudnn_attention``, PyTorch's
      ``sdp_utils.cpp``; CUDA 13 wheels).
    * ``flash3``: FlashAttention-3 (``flash_attn_interface``), Hopper only.
    * ``flex``: PyTorch's FlexAttention (transformers' ``flex_attention``), a Triton kernel compiled for the
      job's mask: it skips the blocks a causal, sliding-window, chunked or document mask leaves out, at 90% of
      FlashAttention-2's speed forward and 85% backward (PyTorch's FlexAttention announcement, 2024-08-07).

    ``cudnn`` and ``flash3`` run faster than FlashAttention-2 on Hopper GPUs: ``flash3`` by the ratio the
    FlashAttention-3 paper measured (:data:`ftplan.timing.model.ATTENTION_KERNEL_TFLOPS`), ``cudnn`` at its measured
    fraction of peak (:data:`ftplan.timing.model.CUDNN_SWEEP`). On Blackwell each kernel runs at its measured speed
    there (``CUDNN_SWEEP``, ``FLASH2_BLACKWELL_TFLOPS``; ``flash3``, which does not run there, at FlashAttention-2's);
    other GPUs take FlashAttention-2's fitted rate; ``flex`` everywhere that rate's 90% and 85%.
    """

    FLASH2 = "flash2"
    CUDNN = "cudnn"
    FLASH3 = "flash3"
    FLEX = "flex"


class ZeroGrad(StrEnum):
    """How the training loop clears gradients between optimizer steps."""

    NONE = "none"  # set to None (PyTorch ≥ 2.0's default; Transformers' Trainer): freed until backward
    ZEROS = "zeros"  # filled with zeros (set_to_none=False, PyTorch < 2.0): allocated through the next forward


class ModelOutput(StrEnum):
    """What the training loop keeps of the model's output while it runs backward.

    Transformers' Trainer (and TRL, Axolotl) returns only the loss from ``compute_loss``: the output,
    logits included, is freed before backward. A hand-written loop that binds the output
    (``outputs = model(**batch); outputs.loss.backward()``, as Accelerate's examples and Answer.AI's
    fsdp_qlora do) keeps its logits alive through backward and the optimizer step. Transformers before
    4.46 returned those logits upcast to fp32 whenever labels were given (Transformers 4.45's deprecation notice:
    from 4.46 the upcast happens inside the loss function only), so such a loop then keeps 4 bytes a logit.
    """

    DROPPED = "dropped"  # the loop keeps only the loss
    KEPT = "kept"  # the loop keeps the output: the logits in the lm_head's dtype (Transformers >= 4.46)
    KEPT_FP32 = "kept-fp32"  # the same with the fp32 logits Transformers < 4.46 returned


@dataclass(frozen=True, slots=True)
class LoraSetup:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    modules_to_save: tuple[str, ...] = ()
    target_parameters: tuple[str, ...] = ()  # PEFT target_parameters: 3-D expert weights (gpt-oss)
    double_quant: bool = True  # QLoRA only
    quant_block: int = 64  # QLoRA NF4 block size (bitsandbytes default)
    base_fp32: bool = False  # LoRA under a mixed recipe: frozen base weights kept in fp32


@dataclass(frozen=True)
class SequenceData:
    """The lengths of a job's sequences when they are not all ``seq_len`` long (time and throughput only;
    memory is sized for a micro-batch of ``seq_len``-token sequences, the longest a step may see).

    ``packing``: sequences are packed into rows of ``seq_len`` tokens and attend only within themselves
    (flash attention's variable-length kernels, transformers' padding-free collator); otherwise every
    micro-batch is padded to its longest sequence. Stated by the mean (and p95) length, or by a histogram
    (``lengths``, ``shares``: every length and the share of the sequences it holds), from which the time
    model takes a padded micro-batch's expected longest sequence exactly (:func:`from_histogram`)."""

    mean: int  # tokens of a sequence, on average
    p95: int | None = None  # tokens of a sequence, 95th percentile
    packing: bool = False
    lengths: tuple[int, ...] = ()  # a histogram's lengths, ascending (empty: mean and p95 only)
    shares: tuple[float, ...] = ()  # the share of the sequences each length holds (summing to 1)

    @classmethod
    def from_histogram(cls, histogram: Mapping[int, float], packing: bool = False) -> SequenceData:
        """The data of a histogram ``{tokens: share or count}``; its mean rounded to a token, its p95 the
        shortest length that 95% of the sequences do not exceed."""
        lengths = tuple(sorted(histogram))
        total = math.fsum(histogram[n] for n in lengths)
        shares = tuple(histogram[n] / total for n in lengths)
        mean = max(1, round(math.fsum(n * p for n, p in zip(lengths, shares, strict=True))))
        below, p95 = 0.0, lengths[-1]
        for n, p in zip(lengths, shares, strict=True):
            below += p
            if below >= 0.95 - 1e-12:
                p95 = n
                break
        return cls(mean, p95, packing, lengths, shares)


class Fp8Recipe(StrEnum):
    """torchao float8 training's scaling recipes (``Float8LinearConfig.from_recipe_name``)."""

    TENSORWISE = "tensorwise"  # one dynamic scale per tensor (the only one with FP8 all-gather)
    ROWWISE = "rowwise"  # one dynamic scale per row of each operand


@dataclass(frozen=True, slots=True)
class Fp8Setup:
    """FP8 linears: which recipe, and whether ZeRO-3/FSDP gathers the sharded weights in FP8.

    torchao's ``Float8Linear`` casts its input and weight to float8 for every matmul (forward, and
    both gradients in backward) and keeps for backward what a bf16 linear keeps: its 16-bit input
    and the weight itself (``torchao/float8/float8_linear.py``, ``matmul_with_hp_or_float8_args``).
    With ``all_gather`` (``enable_fsdp_float8_all_gather``, tensorwise only) FSDP casts each shard to
    float8 before the all-gather: gathered weights take 1 byte a parameter, not 2. It changes nothing
    below ZeRO-3, where no weight is gathered.

    With ``weight_cache`` the stack casts each converted weight once an optimizer step, on its first
    micro-batch, into a row-wise and a column-wise (transposed) float8 copy that every later forward and
    backward of the step uses: Transformer Engine's linears given ``is_first_microbatch`` (``linear.py``,
    ``quantize_weight`` with a cached workspace), which Megatron-Core's pipeline schedules pass
    (``set_is_first_microbatch``). The copies stay allocated (the module's workspace). TE keeps no cache
    under FSDP2 (``is_fsdp2``), so it changes nothing at ZeRO-2 and ZeRO-3.
    """

    recipe: Fp8Recipe = Fp8Recipe.TENSORWISE
    all_gather: bool = False
    weight_cache: bool = False


@dataclass(frozen=True, slots=True)
class Training:
    """What is trained and how: independent of how it is laid out on GPUs."""

    method: Method = Method.FULL
    precision: Precision = Precision.BF16_MIXED
    optimizer: Optimizer = Optimizer.ADAMW
    seq_len: int = 2048
    target_len: int = 0  # decoder length for encoder-decoder models (0: same as seq_len)
    attention: Attention = Attention.SDPA
    attention_mask: AttentionMask = AttentionMask.NONE
    loss: Loss = Loss.STANDARD
    dropout: bool | None = None  # None: as the model's config says
    lora: LoraSetup | None = None
    zero_grad: ZeroGrad = ZeroGrad.NONE
    model_output: ModelOutput = ModelOutput.DROPPED
    fp8: Fp8Setup | None = None  # precision fp8 only (None there: the default Fp8Setup)
    # MoE under expert parallelism: the routed rows an expert-parallel rank's experts take, relative to a
    # balanced share (Switch Transformer's capacity factor; Fedus et al. 2021 train at 1.25)
    capacity_factor: float = 1.25
    data: SequenceData | None = None  # None: every sequence is seq_len tokens
    sequence_parallel: SequenceParallel = SequenceParallel.TORCH  # tensor parallelism's activations
    context_parallel: ContextParallel = ContextParallel.RING  # how layout.cp splits attention
    expert_dispatch: ExpertDispatch = ExpertDispatch.ALLTOALL  # how layout.ep moves tokens to their experts
    kernels: Kernels = Kernels.EAGER  # one kernel per operation, or a fused stack (time only)
    attention_kernel: AttentionKernel = AttentionKernel.FLASH2  # the flash-attention kernel (time only)
    tp_overlap: bool = False  # tensor-parallel collectives overlapped with the matmuls beside them (time only)
    param_gather_overlap: bool = False  # ZeRO-1's all-gather of the update hidden in the next forward (time only)
    engine: Engine = Engine.TORCH  # what runs data parallelism and ZeRO (DeepSpeed's holds more under ZeRO-3)
    pipeline_split: PipelineSplit = PipelineSplit.EVEN  # how layout.pp cuts the layers (memory.pipeline)

    @property
    def data_tokens(self) -> int:
        """Tokens of data a sequence holds on average (padding excluded; a packed row is all data)."""
        data = self.data
        return self.seq_len if data is None or data.packing else data.mean

    @property
    def fp8_setup(self) -> Fp8Setup | None:
        """The FP8 setup of an ``fp8`` job, None otherwise."""
        return (self.fp8 or Fp8Setup()) if self.precision is Precision.FP8 else None

    @property
    def precision_label(self) -> str:
        """The precision as reports name it: an fp8 job's recipe with it."""
        fp8 = self.fp8_setup
        if fp8 is None:
            return self.precision.value
        label = f"fp8 {fp8.recipe.value}" + (" + FP8 all-gather" if fp8.all_gather else "")
        return label + (" + cached FP8 weights" if fp8.weight_cache else "")


@dataclass(frozen=True, slots=True)
class Layout:
    """How one job is laid out: degrees of parallelism, sharding, offload, batch.

    ``dp`` data-parallel degree (ZeRO shards over it), ``tp`` tensor-parallel degree (with
    sequence parallelism), ``zero`` ZeRO stage, ``offload`` CPU offload, ``recompute``
    activation recomputation, ``micro_batch`` sequences per GPU per micro-step,
    ``grad_accum`` micro-steps per optimizer step, ``gpus_per_node`` GPUs sharing one host;
    ``pp`` pipeline stages run by ``pp_schedule`` over ``grad_accum`` micro-batches, each rank holding
    ``virtual_stages`` chunks of layers (interleaved only; see :mod:`ftplan.memory.pipeline`);
    ``dp_shard`` data-parallel ranks a ZeRO-2/3 shard group spans (HSDP: states sharded inside a group,
    replicated across the ``dp / dp_shard`` groups; 0: the whole data-parallel group); ``cp`` context-
    parallel degree: each sequence split over ``cp`` GPUs (torch's ring attention), the model states
    sharded over ``dp × cp`` as torchtitan's FSDP mesh does; ``ep`` expert-parallel degree: each rank of
    a group of ``ep`` data-parallel (or context-parallel) ranks holds ``experts / ep`` of every MoE layer's
    routed experts, and tokens travel to them by all-to-all (transformers' and torchtitan's EP: the group is
    carved out of the ranks that shard the model, so it adds no GPUs).
    """

    dp: int = 1
    tp: int = 1
    zero: ZeroStage = ZeroStage.NONE
    offload: Offload = Offload.NONE
    recompute: Recompute = Recompute.NONE
    micro_batch: int = 1
    grad_accum: int = 1
    gpus_per_node: int = 1
    pp: int = 1
    pp_schedule: PipelineSchedule = PipelineSchedule.ONE_F_ONE_B
    virtual_stages: int = 1
    dp_shard: int = 0
    cp: int = 1
    ep: int = 1

    @property
    def gpus(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @property
    def shard(self) -> int:
        """Ranks the model states are sharded over (ZeRO ≥ 1): the shard group under HSDP, else dp;
        times the context-parallel degree (its ranks hold the same weights)."""
        return (self.dp_shard or self.dp) * self.cp

    @property
    def expert_shard(self) -> int:
        """Ranks a routed expert's states are sharded over (ZeRO ≥ 1): the shard group divided by ``ep``
        (transformers' ``efsdp``: the ranks holding the same experts)."""
        return self.shard // self.ep

    @property
    def replicas(self) -> int:
        """Copies of each shard across the data-parallel group (HSDP's replicate degree)."""
        return self.dp // (self.dp_shard or self.dp)
