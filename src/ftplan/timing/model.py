"""Step time of one fine-tuning job: compute, exposed communication, offload and other time.

All functions take numpy arrays of layouts (one element per layout) so the layout search can
evaluate tens of thousands per call; :func:`step_time` wraps one layout.

FLOPs (``shared/data/time_model_notes.md`` §1):

* every weight matmul runs forward, activation gradient and weight gradient: ``6·N`` FLOPs a token
  for ``N`` parameters in matmuls (Kaplan et al. 2020; EleutherAI "Transformer Math 101"), the
  lm_head included; MoE counts the routed experts only;
* frozen weights (LoRA, QLoRA) need no weight gradient: ``4·N`` (NeMo books LoRA at 2/3 of full
  fine-tuning), plus ``6·r·(d_in + d_out)`` per adapter; an adapter's GEMMs have an inner width of the
  rank ``r``, so they do ``r`` FLOPs a byte they move and run at the GPU's HBM bandwidth below the
  ridge point (the roofline, Williams et al. 2009): a token moves ``(d_in + d_out + 2r)`` elements
  through its forward (``A`` reads the input and writes ``r``, ``B`` reads them and writes the
  output) and twice that through its backward (the input gradient and the weight gradients of both
  factors), each element of the adapters' dtype;
* causal attention: ``6·L·s·d_q`` a token (Megatron-LM ``num_floating_point_operations``, causal
  halving); full recomputation repeats the forward (``+2·N + 2·L·s·d_q``), selective the
  attention core (``+2·L·s·d_q``; Korthikanti et al. 2022); SDPA/flash attention recomputes the
  scores in its backward (``+2·L·s·d_q`` of hardware FLOPs, not counted in MFU). Eager attention, and SDPA
  handed a mask tensor, compute every query-key pair, the masked half too (twice the causal count in hardware
  FLOPs, over the whole row however its documents are packed); eager attention also moves its score tensors
  through HBM (:func:`ftplan.timing.traffic.score_bytes`).

FP8 (``precision: fp8``): the converted block linears' matmuls run at the GPU's FP8 peak with the same
efficiency as its 16-bit ones, the rest (attention, norms, lm_head) at the 16-bit peak; every float8
cast reads its high-precision tensor twice (the absolute maximum, then the scaled cast, fused as
torch.compile fuses them) and writes one byte an element, at the GPU's HBM bandwidth (the roofline of
torchao's ``benchmarks/float8/float8_roofline.py``): the 16-bit input and output gradient (2 bytes), and each
weight as the matmul finds it, fp32 under autocast (4 bytes) or FSDP2's 16-bit compute copy under ZeRO-2/3
(2 bytes), are each cast twice a micro-step (forward and backward); with FP8 all-gather each GPU
casts only its fp32 shard, before the gather; with a weight cache (Transformer Engine under Megatron-Core) each
weight once a step, into two float8 copies (:func:`fp8_weight_cast_bytes`). A compiled stack casts an input
that several linears read (q, k and v; gate and up) once (:data:`_SHARED_INPUT`).

Time: weight matmuls at ``peak × efficiency`` per GPU and the attention core (with its recomputations) at ``peak ×
attention_efficiency``: both are fractions of peak over *hardware* FLOPs, fitted on llm-foundry's single-node runs
(``benchmarks/throughput_accuracy.py --fit``: attention kernels run at a third to a half of the matmuls' efficiency
there); every weight GEMM adds its epilogue's writes, its inner loop's latency and a kernel's fixed time
(:func:`gemm_overhead`, fitted to a measured H100 GEMM table); collectives cost ``factor · bytes / busbw``
(nccl-tests ``PERFORMANCE.md``: all-reduce ``2(n−1)/n``, all-gather and reduce-scatter ``(n−1)/n``), a node's
network shared by the collectives its GPUs run at once (:func:`network_share`), hidden behind compute where
frameworks overlap them (tensor parallelism's where the job says its stack does: :func:`tp_overlap_seconds`);
offload moves bytes over the GPU's host link and runs the optimizer on the CPU; on the GPU the optimizer step
moves the bytes its kernels read and write a parameter (measured,
``timing.dispatch.OPTIMIZER_BYTES``) at HBM bandwidth, once a step; every micro-step's memory-bound operations
(norms, rotary embeddings, activations, residual adds, casts, the loss) move their bytes at HBM bandwidth too
(:mod:`ftplan.timing.traffic`: measured per family for eager PyTorch, derived from the kernels' inputs and outputs
for fused stacks). An eager stack (``kernels: eager``) also pays every operation it dispatches
(:mod:`ftplan.timing.dispatch`: counted per layer in real micro-steps, each at a fitted host time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftplan.arch import ROW_PARALLEL_ROLES, UNSPLIT_ROLES, Architecture, Kind
from ftplan.memory.estimate import fp8_converted
from ftplan.memory.params import split_params
from ftplan.memory.pipeline import PipelineSplit, rank_layers
from ftplan.memory.setup import (
    Attention,
    AttentionKernel,
    AttentionMask,
    ContextParallel,
    Engine,
    ExpertDispatch,
    Kernels,
    Method,
    Precision,
    Training,
)
from ftplan.timing import dispatch, traffic

# Fractions of dense peak where the catalog has none for a GPU: the weight matmuls' and the attention
# core's, over hardware FLOPs, fitted on llm-foundry's single-node H100 BF16 runs beside the memory-bound,
# per-GEMM (GEMM_* below) and per-operation time the model books apart (the lower of the two GPUs fitted;
# ``benchmarks/throughput_accuracy.py --fit``). The attention core's is kept as a ratio to
# the matmuls', so a pool that states its own efficiency scales both.
DEFAULT_EFFICIENCY = 0.589
DEFAULT_ATTENTION_RATIO = 0.203 / 0.589

# NVLink/NVSwitch ring collectives reach ~370 GB/s of the 450 GB/s unidirectional line rate on
# 8×H100 (NVIDIA/nccl-tests#212): the same protocol efficiency is applied to every intra-node link.
INTRA_NODE_EFFICIENCY = 370 / 450

# Inside an NVLink domain whose NVSwitches reduce (NVLink SHARP, catalog ``nvls``), NCCL runs an all-reduce as its NVLS
# algorithm (its default there since 2.17): 8 H100s reach a bus bandwidth of about 480 GB/s against the ring's 370
# (NVIDIA/nccl-tests#212, NCCL's maintainer; 475 GB/s measured on 8 H200s, nccl-tests#272). The gain grows with the
# GPUs the switch reduces over: none at 2 to 4 GPUs, 420, 440 and 460 GB/s at 5, 6 and 7 (8 H100s measured with
# NCCL_ALGO=NVLS, NVIDIA/nccl#1455); a wider domain (NVL72) is held at 8 GPUs' gain, its own being unmeasured. An
# all-gather or a reduce-scatter gains nothing (NVIDIA/nccl#1506: NCCL keeps the ring for them).
NVLS_BUSBW_GBS = {5: 420.0, 6: 440.0, 7: 460.0, 8: 480.0}
NVLS_RING_BUSBW_GBS = 370.0

# Across nodes a collective's bus bandwidth is the node's network at the protocol efficiency nccl-tests
# measured over InfiniBand: 84.8 GB/s average bus bandwidth of 100 GB/s theoretical on 3 nodes of
# 8×A100 with 4×HDR200 each (NVIDIA/nccl-tests#119), unless the pool states its own measured bus
# bandwidth (nccl-tests ``all_reduce_perf``), which is then used as is.
NETWORK_EFFICIENCY = 84.8 / 100

# A collective also pays a latency per ring step: NCCL's own cost model (src/graph/tuning.cc, ring
# algorithm, Simple protocol) books a base 8.4 µs, 3.4 µs a step over NVLink and 9.6 µs a step that
# crosses the network; a ring all-gather or reduce-scatter over n GPUs takes n − 1 steps (nodes − 1 of
# them across nodes), an all-reduce twice as many. An all-reduce across nodes runs as NCCL's tree
# (2·((GPUs a node − 1)·28 + log2(nodes)·50) µs on its Simple protocol, same file) when that is quicker.
RING_BASE_US, RING_NVLINK_US, RING_NET_US = 8.4, 3.4, 9.6
TREE_NVLINK_US, TREE_NET_US = 28.0, 50.0

# DistributedDataParallel all-reduces gradients in buckets of 25 MiB (``bucket_cap_mb``, PyTorch docs).
DDP_BUCKET_BYTES = 25 * 2**20

# DeepSpeed CPU-Adam: 0.22 s per optimizer step of 10⁹ parameters on a 2×24-core Xeon host
# (Ren et al. 2021, "ZeRO-Offload", Table 3; 5–7× PyTorch's CPU Adam, DeepSpeed tutorial).
CPU_ADAM_S_PER_GPARAM = 0.22

# Kernel launches are their own term (``timing.dispatch``, eager stacks only), and so is the optimizer step's
# HBM traffic (``timing.dispatch.OPTIMIZER_BYTES``); other fixed time per optimizer step (clipping, scheduler,
# logging) is not separately measured in the team's data: the efficiency absorbs it.

# FP8 matmuls reach a smaller fraction of their peak than 16-bit ones. Per GPU the ratio comes from its
# measured maximum achievable matmul FLOPS (catalog ``mamf_tflops``: fp8/peak ÷ bf16/peak); a GPU without
# that measurement gets the lowest measured ratio, H100 SXM's: (1402.6 / 1979) / (794.5 / 989) = 0.882
# (ml-engineering, "Maximum Achievable Matmul FLOPS comparison table").
DEFAULT_FP8_MATMUL_RATIO = (1402.6 / 1979) / (794.5 / 989)

HOPPER_BF16_PEAK = 989.0  # an H100 SXM's dense bf16 TFLOP/s (the catalog's), the peak the kernel tables below ran at

# Flash-attention kernels' speed on an H100 SXM5, BF16, head dimension 128, by sequence length (batch × length
# 16k tokens): TFLOP/s of the causal forward and of the backward (Shah et al. 2024, "FlashAttention-3",
# arXiv 2407.08608, figures 5 and 6). The catalog's attention efficiency is FlashAttention-2's (fitted on
# llm-foundry's runs), so a faster kernel scales it by its speed over FlashAttention-2's at the same length, forward
# and backward apart: FlashAttention-3 on Hopper by these figures; cuDNN on Hopper and Blackwell by the newer sweep
# below (this table's cuDNN row gives only its shape below the sweep's shortest length); FlashAttention-2 on
# Blackwell by its measurement there; other GPUs FlashAttention-2's rate (FlashAttention-3 runs on Hopper only, and
# Transformer Engine prefers FlashAttention-2 before Hopper: NeMo's memory-optimisation guide).
ATTENTION_KERNEL_LENGTHS = (512, 1024, 2048, 4096, 8192, 16384)
ATTENTION_KERNEL_TFLOPS = {  # kernel: ((forward by length), (backward by length))
    AttentionKernel.FLASH2: ((191, 260, 298, 319, 333, 335), (214, 260, 291, 310, 318, 322)),
    AttentionKernel.CUDNN: ((315, 410, 484, 518, 529, 539), (305, 408, 465, 499, 518, 516)),
    AttentionKernel.FLASH3: ((292, 423, 521, 579, 602, 616), (316, 424, 501, 542, 559, 561)),
}
ATTENTION_KERNEL_ARCHS = frozenset({"hopper"})  # where a Hopper table (this one, or cuDNN's H200 sweep) applies

# PyTorch's FlexAttention runs causal attention at 90% of FlashAttention-2's speed forward and 85% backward (A100,
# PyTorch's FlexAttention announcement of 2024-08-07, "Performance"; its backward recomputes more than
# FlashAttention-2's): its speed on every GPU is FlashAttention-2's there times these.
FLEX_OVER_FLASH2 = (0.90, 0.85)

# On Blackwell the kernels do not keep Hopper's fraction of peak, and no longer in the same way. FlashAttention-2's
# kernels (Ampere's mma.sync instructions) run on a B200 at about an H100's speed: TFLOP/s forward and backward at
# ATTENTION_KERNEL_LENGTHS, flash_attn 2.7.4 on a B200 (dense bf16 peak 2,250), batch 1, 128 query and 8 key-value
# heads of 128, causal (NVIDIA/cudnn-frontend benchmark/sdpa_benchmark_training/artifacts/
# sdpa_bf16_benchmark_results_NVIDIA_B200.csv at bb37575d103b). FlashAttention-3 runs on Hopper only and takes them too.
FLASH2_BLACKWELL_PEAK = 2250.0
FLASH2_BLACKWELL_TFLOPS = ((64, 154, 254, 343, 400, 425), (81, 105, 199, 273, 318, 337))
# cuDNN's fused attention, one runner's TFLOP/s forward and backward by length on an H200 (cuDNN 9.19) and on a
# GB200 and a GB300 (cuDNN 9.22), Llama 3.1 preset (batch 1, 64 query and 8 key-value heads of 128), causal, bf16
# (NVIDIA/cudnn-frontend benchmark/sdpa_benchmark_training/results/h200_919_only_cudnn/llama3.1_20260227_034703.csv
# and results/llama3.1/{gb200,gb300}/llama3.1_20260424_*.csv at 3929da2): the cuDNN a stack runs today, on every die
# from the same runner. cuDNN runs at its die's fraction of peak over FlashAttention-2's on an H100 (an H200 has the
# H100's compute); a B200 or GB200 takes the GB200's die, a B300 or GB300 the GB300's (Blackwell Ultra's doubled
# exponential throughput), another Blackwell GPU the lower (the GB200's). Below 2,048 tokens, the FlashAttention-3
# paper's cuDNN curve scaled to meet the sweep at 2,048 (``cudnn_fraction``).
CUDNN_SWEEP_LENGTHS = (2048, 4096, 8192, 16384, 32768)
CUDNN_SWEEP = {  # die: (the measured GPU's dense bf16 peak, forward TFLOP/s by length, backward TFLOP/s by length)
    "hopper": (HOPPER_BF16_PEAK, (484, 591, 644, 673, 688), (370, 474, 541, 579, 581)),
    "b200": (2500.0, (1097, 1408, 1574, 1708, 1622), (885, 1148, 1332, 1328, 1226)),
    "b300": (2500.0, (1373, 1703, 1856, 1915, 1953), (967, 1248, 1435, 1507, 1490)),
}
BLACKWELL_DIES = {"b200-180gb": "b200", "gb200-186gb": "b200", "b300-sxm-288gb": "b300", "gb300-288gb": "b300"}

# A weight GEMM takes longer than its FLOPs at the large-shape rate: its epilogue writes every output element (of
# the order of its two bytes at HBM bandwidth), the loop over its inner dimension has a latency one wave of tiles
# cannot hide, and a kernel has a fixed time. An m × k by k × n GEMM takes, beside 2·m·n·k FLOPs at peak ×
# efficiency, GEMM_OUTPUT_S · m·n + GEMM_INNER_S · k + GEMM_FIXED_S seconds: least squares on relative time over
# OpenXLA's measured H100 table (xla/service/gpu/model/matmul_interpolator_data.h, sm_90 bf16: 375 shapes, m, n,
# k from 256 to 4096), which the four terms fit to a median 2.5% and p90 7.2%, against 42% and 87% for FLOPs at
# one rate fitted the same way (benchmarks/gemm_shapes.py). The per-output time scales with the GPU's HBM
# bandwidth (the table's H100: 3,350 GB/s); the other two are the H100's on every GPU. So short micro-batches,
# small models and narrow inner dimensions (a row-parallel shard under wide tensor parallelism) run below the
# large-GEMM efficiency the catalog states, which is fitted beside these terms.
GEMM_OUTPUT_S, GEMM_INNER_S, GEMM_FIXED_S = 4.10e-13, 9.09e-10, 5.53e-6
GEMM_TABLE_HBM_GBS = 3350.0

RECOMPUTE = {"none": 0, "selective": 1, "full": 2}
OFFLOAD = {"none": 0, "optimizer": 1, "optimizer+params": 2}


@dataclass(frozen=True, slots=True)
class Hardware:
    """What the time model needs of a pool: one GPU type in nodes of ``gpus_per_node``."""

    peak_tflops: float  # dense peak in the job's compute dtype
    efficiency: float  # weight matmuls' fraction of peak (hardware FLOPs)
    hbm_gbs: float
    intra_node_gbs: float  # unidirectional per-GPU link inside a node
    host_link_gbs: float  # per-GPU link to the host (PCIe)
    gpus_per_node: int
    network_gbps: float | None  # scale-out network per node; None: one node only
    fp8_tflops: float | None = None  # dense FP8 peak (None: no FP8 tensor cores)
    fp8_ratio: float = DEFAULT_FP8_MATMUL_RATIO  # FP8 matmul efficiency over the 16-bit one
    nvlink_domain: int | None = None  # GPUs on one NVLink domain, when more than a node's (NVL72)
    attention_efficiency: float | None = None  # the attention core's (None: efficiency × DEFAULT_ATTENTION_RATIO)
    network_busbw_gbs: float | None = None  # measured bus bandwidth across nodes (nccl-tests), when stated
    gpu_arch: str | None = None  # the GPU's architecture (catalog ``arch``): where Hopper attention kernels run
    gpu_id: str | None = None  # the catalog's GPU (a Blackwell GPU's attention kernels run at its die's speed)
    nvls: bool = False  # the NVLink domain's switches reduce all-reduces (NVLink SHARP)

    @property
    def attention_rate(self) -> float:
        """FLOP/s of the attention kernels."""
        eff = self.attention_efficiency or self.efficiency * DEFAULT_ATTENTION_RATIO
        return self.peak_tflops * 1e12 * eff


@dataclass(frozen=True, slots=True)
class GemmShape:
    """A weight matrix a micro-step multiplies, ``copies`` times (its layers): ``d_in`` × ``d_out``, split by
    tensor parallelism along ``split`` (``"row"``, ``"column"`` or ``""``), with a weight gradient where
    ``trained``. A MoE's routed experts are one grouped GEMM of ``groups`` matrices (transformers' default
    ``grouped_mm`` experts backend: ``torch.nn.functional.grouped_mm`` over the tokens sorted by expert), over
    ``rows`` rows a token (its top-k copies) shared among them."""

    d_in: int
    d_out: int
    copies: int
    split: str
    rows: float = 1.0
    trained: bool = True
    groups: int = 1


@dataclass(frozen=True, slots=True)
class JobFlops:
    """FLOPs per token of a job (model FLOPs exclude recomputation; hardware FLOPs add it)."""

    linear: float  # weight matmuls: 6N (full) or 4N + adapters (LoRA)
    forward: float  # the forward pass alone (2N + attention forward)
    attention: float  # causal attention core, training
    recompute_full: float  # extra forward under full recomputation
    recompute_selective: float  # extra attention-core forward under selective recomputation
    trainable: int  # trainable parameters (gradient and optimizer traffic)
    weights: int  # all parameters (ZeRO-3 gathers)
    frozen_matrix: int  # frozen matrix weights (QLoRA dequantisation)
    flash_recompute: float = 0.0  # SDPA/flash backward recomputes the attention scores
    fp8_linear: float = 0.0  # of ``linear``: the FLOPs of the block linears that run in FP8
    fp8_cast_token: float = 0.0  # bytes of float8 casts a token (inputs and output gradients)
    fp8_forward_token: float = 0.0  # of ``fp8_cast_token``: the forward's (repeated by full recomputation)
    fp8_weights: float = 0.0  # the converted linears' weights (every layer's), each cast twice a micro-step
    expert_weights: int = 0  # of ``weights``: the routed experts' (expert parallelism splits them)
    expert_trainable: int = 0  # of ``trainable``: the routed experts'
    expert_linear: float = 0.0  # of ``linear``: the routed experts' matmuls a token (its top-k experts)
    expert_forward: float = 0.0  # of ``expert_linear``: the forward's (repeated by full recomputation)
    adapter_linear: float = 0.0  # of ``linear``: the LoRA adapters' GEMMs a token (forward and backward)
    adapter_bytes: float = 0.0  # bytes those GEMMs move a token (forward and backward; a third the forward's)
    head_linear: float = 0.0  # of ``linear``: the LM head's matmuls a token (the last pipeline stage's)
    traffic_forward: float = 0.0  # bytes a token moves through the layers' memory-bound operations, forward
    traffic_backward: float = 0.0  # the same, backward
    traffic_head: float = 0.0  # the head's (embeddings, final norm, loss), forward and backward
    scores_forward: float = 0.0  # bytes eager attention's score tensors move a token per key it attends, forward
    scores_backward: float = 0.0  # the same, backward
    attention_square: bool = False  # the attention kernel computes every query-key pair, masked ones too
    windowed_share: float = 0.0  # of ``attention``: the sliding-window (or chunked) layers' share
    window: int = 0  # the keys a sliding-window layer attends to (a chunked layer's chunk)
    chunked: bool = False  # the windowed layers attend within fixed chunks (Llama 4), not a sliding window
    gemms: tuple[GemmShape, ...] = ()  # the weight GEMMs of a micro-step (their fixed costs, GEMM_* above)
    tp_pairs: tuple[float, ...] = ()  # a layer's forward FLOPs a token beside each TP collective (:func:`tp_pairs`)

    @property
    def model(self) -> float:
        return self.linear + self.attention

    def hardware(self, recompute: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Hardware FLOPs a token, (weight matmuls, attention core), under a recomputation code: full
        recomputation runs the forward's matmuls and attention again, selective the attention core; the
        attention's flash-backward recompute is always in."""
        recompute = np.asarray(recompute, dtype=float)
        matmuls = self.linear + np.where(recompute == 2, self.recompute_full - self.recompute_selective, 0.0)
        attention = self.attention + self.flash_recompute + np.where(recompute >= 1, self.recompute_selective, 0.0)
        return matmuls, attention * (2.0 if self.attention_square else 1.0)


def job_flops(arch: Architecture, training: Training) -> JobFlops:
    """FLOPs per token of the job (see module docstring)."""
    n_matrix = arch.matrix_params
    if arch.is_moe:  # routed experts only
        n_matrix = arch.matrix_params - (arch.total_params - arch.active_params)
    lm_head = 0 if arch.kind is Kind.ENCODER else arch.vocab * arch.hidden
    n = n_matrix + lm_head
    s_enc = training.seq_len
    s_dec = training.target_len or training.seq_len
    # a token's forward through the attention core: QKᵀ and the weighted sum of V, each one multiply-add (2 FLOPs)
    # a query element for every position it attends, half the sequence on average under a causal mask:
    # 2 · 2 · d_q · s / 2 a layer (the fwd + bwd total 6·L·s·d_q is Megatron-LM's causal count)
    attn_fwd = 2.0 * 2.0 * arch.q_dim * (arch.layers * s_enc + arch.decoder_layers * s_dec) / 2
    if arch.kind is Kind.ENCODER:
        attn_fwd *= 2  # bidirectional: no causal halving
    ps = split_params(arch, training)
    linear = 6.0 * n if training.method is Method.FULL else 4.0 * n + 6.0 * ps.trainable
    experts = sum(n * arch.layers_of(st) for st, n in arch.layer_expert_params.items())
    routed = sum(  # the experts' weights a token passes through
        x.weight_params // x.count * arch.experts_per_token * arch.layers_of(st)
        for st, xs in arch.block_linears.items() for x in xs if x.expert
    )  # fmt: skip
    fp8 = _fp8_costs(arch, training.kernels is Kernels.FUSED) if training.fp8_setup is not None else {}
    adapter_linear, adapter_bytes = _adapter_path(arch, training)
    layer_fwd, layer_bwd, head_fwd, head_bwd = traffic.token_bytes(arch, training)
    around_fwd, around_bwd = traffic.adapter_bytes(arch, training)  # (PEFT's operations around the adapters)
    scores_fwd, scores_bwd = traffic.score_bytes(arch, training)
    return JobFlops(
        linear=linear,
        forward=2.0 * n + attn_fwd,
        attention=3 * attn_fwd,
        recompute_full=2.0 * n + attn_fwd,
        recompute_selective=attn_fwd,
        trainable=ps.trainable,
        weights=arch.total_params,
        frozen_matrix=ps.frozen_matrix,
        # FlashAttention's backward recomputes QKᵀ and the softmax (llm-foundry notes: the attention
        # multiplier for hardware FLOPs is 4, not 3): one more attention forward.
        flash_recompute=attn_fwd if training.attention is Attention.SDPA else 0.0,
        expert_weights=experts,
        expert_trainable=experts if training.method is Method.FULL else 0,  # (EP refuses LoRA on experts)
        expert_linear=(6.0 if training.method is Method.FULL else 4.0) * routed,
        expert_forward=2.0 * routed,
        adapter_linear=adapter_linear,
        adapter_bytes=adapter_bytes,
        head_linear=(6.0 if training.method is Method.FULL else 4.0) * lm_head,
        traffic_forward=arch.total_layers * layer_fwd + around_fwd,
        traffic_backward=arch.total_layers * layer_bwd + around_bwd,
        traffic_head=head_fwd + head_bwd,
        scores_forward=scores_fwd,
        scores_backward=scores_bwd,
        attention_square=arch.kind is Kind.DECODER and square_attention(training),
        gemms=_gemm_shapes(arch, training),
        tp_pairs=tp_pairs(arch),
        **_windowed(arch),
        **fp8,
    )


# The linears beside each of a layer's four tensor-parallel collectives under sequence parallelism (Korthikanti et
# al. 2022 §4.2.2): the all-gather before the attention's column-parallel input projections, the reduce-scatter
# after its row-parallel output projection, and the MLP's likewise; backward runs the mirror collective beside the
# same linears' gradient matmuls. A MoE's routed experts stay out (expert parallelism moves their tokens), so their
# layers' MLP collectives find only a shared expert's matmuls, if any, to hide behind.
_TP_PAIRS = (
    frozenset({"q", "k", "v", "qkv", "q_a", "q_b", "kv_a", "kv_b"}),
    frozenset({"o"}),
    frozenset({"gate", "up", "gate_up", "shared_gate", "shared_up"}),
    frozenset({"down", "shared_down"}),
)


def tp_pairs(arch: Architecture) -> tuple[float, ...]:
    """Forward FLOPs a token of a layer's linears beside each tensor-parallel collective (:data:`_TP_PAIRS`), on
    average over the layers of every stack (before tensor parallelism splits them)."""
    flops = [0.0] * len(_TP_PAIRS)
    for stack, linears in arch.block_linears.items():
        for x in linears:
            for i, roles in enumerate(_TP_PAIRS):
                if x.role in roles and not x.expert:
                    flops[i] += 2.0 * x.weight_params * arch.layers_of(stack)
    return tuple(f / max(arch.total_layers, 1) for f in flops)


def overlapped_collective(comm: np.ndarray, compute: np.ndarray, chunks: np.ndarray) -> np.ndarray:
    """Seconds a collective of ``comm`` seconds adds beside a matmul of ``compute`` seconds when both are split
    into ``chunks`` and pipelined, each chunk's transfer beside another chunk's matmul (PyTorch's micro-pipelined
    ``fused_all_gather_matmul`` and ``fused_matmul_reduce_scatter``, which torchtitan's async tensor parallelism
    and NeMo Automodel's run, split by the group's ranks; Megatron-Core's userbuffers overlap over Transformer
    Engine likewise): the pipeline takes the longer of the two plus one chunk of the shorter, so what the
    collective adds is what it exceeds the matmul by plus that chunk."""
    comm, compute = np.asarray(comm, dtype=float), np.asarray(compute, dtype=float)
    return np.maximum(0.0, comm - compute) + np.minimum(comm, compute) / np.maximum(chunks, 1.0)


def _windowed(arch: Architecture) -> dict[str, float | int | bool]:
    """The sliding-window (or Llama 4's chunked) layers' share of a decoder's attention FLOPs, their window and
    whether it is a chunk (:class:`JobFlops`); none elsewhere."""
    if arch.kind is not Kind.DECODER or not arch.sliding_window or not arch.sliding_layers:
        return {}
    return {
        "windowed_share": sum(arch.sliding_layers) / len(arch.sliding_layers),
        "window": arch.sliding_window,
        "chunked": arch.model_type == "llama4",
    }


def windowed_keys(span: np.ndarray, window: int, chunked: bool) -> np.ndarray:
    """Keys a query attends to on average in a sequence of ``span`` tokens under a sliding window of ``window``
    keys, or within chunks of ``window`` tokens, in the causal count's convention (``span / 2`` without a
    window): a sliding window's ``Σ min(i, w) / s ≈ w − w² / 2s`` once the sequence passes it; chunks' ``(q·c² +
    r²) / 2s`` for ``q`` whole chunks of ``c`` and ``r`` tokens after them."""
    span = np.asarray(span, dtype=float)
    w = float(window)
    if chunked:
        whole = np.floor(span / w)
        rest = span - whole * w
        return (whole * w * w + rest * rest) / (2 * np.maximum(span, 1.0))
    return np.where(span > w, w - w * w / (2 * np.maximum(span, 1.0)), span / 2)


def tp_overlap_seconds(
    flops: JobFlops, training: Training, rate: float, t_tp: np.ndarray, tokens: np.ndarray, tp: np.ndarray,
    recompute: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """A layer's tensor-parallel collectives, in seconds a micro-step, where the stack overlaps each with the
    matmuls beside it (``Training.tp_overlap``: torchtitan's and NeMo Automodel's async tensor parallelism,
    Megatron-Core's ``--tp-comm-overlap``). Each of the layer's four all-gathers or reduce-scatters (half of
    ``t_tp``, an all-reduce's traffic) meets the linears beside it (:data:`_TP_PAIRS`) in forward, their gradient
    matmuls in backward (input and weight gradients; the input's alone for a frozen base) and the recomputed
    forward's under full recomputation, split over the group's ranks and pipelined
    (:func:`overlapped_collective`); the linears at ``rate`` FLOP/s (:func:`step_times`': FP8 jobs' at the FP8
    one)."""
    backward = 2.0 if training.method is Method.FULL else 1.0
    half = t_tp / 2
    total = np.zeros(np.broadcast(half, tokens, tp, recompute).shape)
    for f in flops.tp_pairs:
        matmul = tokens * f / tp / rate
        total = total + overlapped_collective(half, matmul, tp) + overlapped_collective(half, backward * matmul, tp)
        total = total + np.where(recompute == 2, overlapped_collective(half, matmul, tp), 0.0)
    return total


def windowed_attention(
    training: Training, hw: Hardware, flops: JobFlops, span: np.ndarray, length: np.ndarray, recompute: np.ndarray
) -> np.ndarray:  # fmt: skip
    """What the attention core's time at ``span`` tokens (the causal count, under the kernel at ``length``) is
    multiplied by where some layers attend through a sliding window or within chunks. A flash kernel given the
    window (Transformer Engine's cuDNN attention, FlashAttention-3) skips the blocks outside it: those layers cost
    :func:`windowed_keys` over ``span / 2`` keys a query, at the kernel's speed at the window's length. PyTorch's
    SDPA (``attention_kernel: flash2``) gets an explicit mask for them once the sequence reaches the window, as
    transformers builds it (the memory model keeps it too), and its memory-efficient kernel then computes every
    block: twice the causal count. Eager attention and a job's own mask already cost every pair
    (``attention_square``)."""
    kernel = attention_kernel_factor(training, hw, length, recompute)
    if not flops.windowed_share or flops.attention_square:  # (eager attention's is square)
        return kernel
    span = np.asarray(span, dtype=float)
    if training.attention_kernel is AttentionKernel.FLASH2:
        windowed = np.where(span >= flops.window, 2.0, 1.0) * kernel
    else:
        keys = windowed_keys(span, flops.window, flops.chunked)
        short = attention_kernel_factor(training, hw, np.minimum(length, flops.window), recompute)
        windowed = keys / np.maximum(span / 2, 1e-9) * short
    return (1 - flops.windowed_share) * kernel + flops.windowed_share * windowed


def _gemm_shapes(arch: Architecture, training: Training) -> tuple[GemmShape, ...]:
    """The weight GEMMs of a micro-step: every block linear of every layer and the lm_head, with a weight gradient
    where the weights train (full fine-tuning; LoRA's adapters are :func:`_adapter_path`'s)."""
    trained = training.method is Method.FULL
    shapes = []
    for stack, xs in arch.block_linears.items():
        for x in xs:
            split = "" if x.role in UNSPLIT_ROLES else "row" if x.role in ROW_PARALLEL_ROLES else "column"
            layers = arch.layers_of(stack)
            if x.expert:  # (one grouped GEMM a layer for all the experts)
                shapes.append(GemmShape(x.d_in, x.d_out, layers, split, arch.experts_per_token, trained, x.count))
            else:
                shapes.append(GemmShape(x.d_in, x.d_out, x.count * layers, split, 1.0, trained))
    if arch.kind is not Kind.ENCODER:
        shapes.append(GemmShape(arch.hidden, arch.vocab, 1, "column", 1.0, trained))
    return tuple(shapes)


def gemm_fixed_seconds(hw: Hardware, m: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Seconds an m × k by k × n GEMM takes beyond its FLOPs (GEMM_* above): its ``m·n`` outputs' epilogue, at the
    GPU's HBM bandwidth, its inner loop's ``k`` steps and a kernel's fixed time."""
    return GEMM_OUTPUT_S * GEMM_TABLE_HBM_GBS / hw.hbm_gbs * m * n + GEMM_INNER_S * k + GEMM_FIXED_S


def gemm_overhead(
    flops: JobFlops,
    hw: Hardware,
    tokens: np.ndarray,
    tp: np.ndarray,
    recompute: np.ndarray,
    ep: np.ndarray | int = 1,
) -> np.ndarray:
    """Seconds a GPU's weight GEMMs take a micro-step beyond their FLOPs (GEMM_* above), for ``tokens`` a micro-step
    on its tensor-parallel shard of each weight: the forward's (again under full recomputation), the input
    gradient's, and the weight gradient's of trained weights, whose inner dimension is the tokens. A MoE's grouped
    GEMM runs the rank's routed rows (top-k a token; under expert parallelism its experts / ep experts receive as
    many, on balance, from every rank) in one kernel; its weight gradient writes every local expert's gradient, each
    over its share of the rows."""
    tokens, tp, recompute, ep = (np.asarray(x, dtype=float) for x in (tokens, tp, recompute, ep))
    forwards = np.where(recompute == 2, 2.0, 1.0)
    total = np.zeros(np.broadcast(tokens, tp, recompute, ep).shape)
    for g in flops.gemms:
        d_in = g.d_in / tp if g.split == "row" else np.full_like(tp, g.d_in)
        d_out = g.d_out / tp if g.split == "column" else np.full_like(tp, g.d_out)
        rows = tokens * g.rows
        groups = g.groups / ep if g.groups > 1 else 1.0
        t = forwards * gemm_fixed_seconds(hw, rows, d_out, d_in) + gemm_fixed_seconds(hw, rows, d_in, d_out)
        if g.trained:
            t = t + gemm_fixed_seconds(hw, groups * d_in, d_out, rows / groups)
        total = total + g.copies * t
    return total


def square_attention(training: Training) -> bool:
    """Whether the attention kernel computes every query-key pair of a sequence, the masked ones too: eager
    attention (both matmuls over the whole square, the causal mask added to the scores between them), and PyTorch
    SDPA handed a mask tensor (``attention_mask`` causal or padded), which its flash backend does not take: the
    memory-efficient backend then runs every block of it, where a causal kernel skips the blocks above the
    diagonal (PyTorch ``scaled_dot_product_attention``'s backend constraints). The flash-attention kernels a job
    names (cudnn, flash3) take padding as sequence lengths and stay causal."""
    if training.attention is Attention.EAGER:
        return True
    return training.attention_mask is not AttentionMask.NONE and training.attention_kernel is AttentionKernel.FLASH2


def _adapter_path(arch: Architecture, training: Training) -> tuple[float, float]:
    """FLOPs and bytes a token's LoRA adapter GEMMs take, forward and backward (see module docstring): the
    adapters on linears, not those PEFT folds into a MoE's expert weights (``memory.params.parameter_targets``),
    which run no GEMM of their own a token. The adapters' elements are 4 bytes where they run in fp32
    (``fp32``, and ``bf16-fp32-adapters``, whose input is cast up to them), else 2."""
    d_in, d_out, adapters = traffic.adapted_widths(arch, training)
    if not adapters:
        return 0.0, 0.0
    assert training.lora is not None
    r, widths = training.lora.rank, d_in + d_out
    element = 4 if training.precision in (Precision.FP32, Precision.BF16_FP32_ADAPTERS) else 2
    return 6.0 * r * widths, 3.0 * element * (widths + 2 * r * adapters)


# Bytes moved a cast element: two reads of the high-precision tensor (its absolute maximum, then the
# scaled cast) and one float8 byte written; 16-bit activations and gradients, and weights as the matmul
# finds them: FSDP2's 16-bit compute copies (its gathered or unsharded parameters under ZeRO-2/3), else fp32
# parameters under autocast (memory.estimate's precision recipe; DeepSpeed refuses fp8)
_CAST_16BIT = 2 * 2 + 1
_CAST_FP32 = 2 * 4 + 1
# A weight cached once a step (``Fp8Setup.weight_cache``): its fp32 read twice, a row-wise and a column-wise byte
# written
_CACHE_FP32 = 2 * 4 + 2


# Linears that read one tensor, by role: the attention's projections of the normed hidden state (q, k and v, or
# MLA's q_a and kv_a) and the MLP's (gate and up, a shared expert's). Where a block reads it into several
# linears, a compiled stack casts it once: torch.compile's partitioner merges identical operations on the same
# tensor across the joint forward-backward graph (``fx_graph_cse`` in ``min_cut_rematerialization_partition``,
# torch/_functorch/partitioners.py, on by default: ``functorch.config.cse``), and torchao's casts of one input
# by the same recipe are identical; Transformer Engine fuses such linears into one (its QKV projection,
# ``LayerNormMLP``'s first linear). An eager stack casts it in each linear. (A cross-attention's q reads the
# decoder's state, its k and v the encoder's output.)
_SHARED_INPUT = {
    "q": "attention", "k": "attention", "v": "attention", "qkv": "attention", "q_a": "attention",
    "kv_a": "attention", "gate": "mlp", "up": "mlp", "gate_up": "mlp", "shared_gate": "shared", "shared_up": "shared",
}  # fmt: skip


def _fp8_costs(arch: Architecture, fused: bool) -> dict[str, float]:
    """FP8 FLOPs a token and cast traffic of the linears torchao converts (``memory.fp8_converted``); ``fused``:
    a compiled stack, which casts an input several linears read once (:data:`_SHARED_INPUT`)."""
    fp8_flops = token = forward_token = weights = 0.0
    cast: set[tuple[str, str]] = set()  # (stack, input) already cast
    for stack, x in fp8_converted(arch):
        layers = arch.layers_of(stack)
        fp8_flops += 6.0 * x.weight_params * layers
        shared = _SHARED_INPUT.get(x.role) if fused and not (stack == "cross" and x.role == "q") else None
        d_in = 0 if shared and (stack, shared) in cast else x.d_in
        if shared:
            cast.add((stack, shared))
        # forward: the input and the weight; backward: the output gradient twice (for the input's
        # and for the weight's gradient), the weight and the input again
        forward_token += d_in * _CAST_16BIT * layers
        token += (2 * d_in + 2 * x.d_out) * _CAST_16BIT * layers
        weights += x.weight_params * layers
    return {
        "fp8_linear": fp8_flops,
        "fp8_cast_token": token,
        "fp8_forward_token": forward_token,
        "fp8_weights": weights,
    }


def fp8_weight_cast_bytes(
    flops: JobFlops,
    training: Training,
    zero: np.ndarray,
    shard: np.ndarray,
    recompute: np.ndarray,
    grad_accum: np.ndarray | int = 1,
) -> np.ndarray:
    """Bytes a micro-step's float8 casts of the weights move on one GPU (before tensor parallelism's split): each
    converted weight cast in forward and again in backward (and in a recomputed forward), from the dtype the
    matmul finds it in (:data:`_CAST_16BIT`, :data:`_CAST_FP32`). With FP8 all-gather under ZeRO-3
    (``Fp8Setup.all_gather``) FSDP casts each GPU's fp32 shard before gathering it, so a GPU casts its 1/shard.
    With a weight cache (``Fp8Setup.weight_cache``) below ZeRO-2 each weight is cast once a step, on the first of
    ``grad_accum`` micro-steps: read twice (its absolute maximum, then the scaled cast) and written as a row-wise
    and a column-wise float8 copy, one byte each; the other micro-steps, backward passes and recomputed forwards
    take the copies."""
    fp8 = training.fp8_setup
    per = np.where(zero >= 2, _CAST_16BIT, _CAST_FP32)
    if fp8 is not None and fp8.all_gather:
        per = np.where(zero == 3, _CAST_FP32 / shard, per)
    per = per * np.where(recompute == 2, 3.0, 2.0)
    if fp8 is not None and fp8.weight_cache:  # (below ZeRO-2 the weight is fp32 under autocast)
        per = np.where(zero <= 1, _CACHE_FP32 / np.asarray(grad_accum, dtype=float), per)
    return flops.fp8_weights * per


def _domain(hw: Hardware) -> int:
    """GPUs that reach each other over NVLink: a node, or an NVLink domain across nodes (NVL72)."""
    return max(hw.nvlink_domain or 0, hw.gpus_per_node)


def nvls_gain(group: np.ndarray) -> np.ndarray:
    """An all-reduce's bus bandwidth under NVLink SHARP over the ring's, among ``group`` GPUs of one NVLink domain
    (:data:`NVLS_BUSBW_GBS`: 1 up to 4 GPUs, 8 GPUs' gain above 8)."""
    group = np.clip(np.asarray(group, dtype=float), 4, 8)
    gbs = np.interp(group, [4, *NVLS_BUSBW_GBS], [NVLS_RING_BUSBW_GBS, *NVLS_BUSBW_GBS.values()])
    return gbs / NVLS_RING_BUSBW_GBS


def bus_bandwidth(hw: Hardware, group: np.ndarray, all_reduce: np.ndarray | None = None) -> np.ndarray:
    """Bus bandwidth (GB/s) of a collective over ``group`` GPUs packed into nodes of the pool: NVLink at
    nccl-tests' protocol efficiency inside an NVLink domain (an all-reduce among ``all_reduce`` of them there
    faster by :func:`nvls_gain` where the switches reduce); across domains the node's network at
    ``NETWORK_EFFICIENCY``, or the pool's measured bus bandwidth, and never above NVLink. Every
    collective shares it (bus bandwidth is normalised to the link); their latencies differ,
    :func:`collective_latency`."""
    group = np.asarray(group, dtype=float)
    intra = hw.intra_node_gbs * INTRA_NODE_EFFICIENCY
    inside = intra * (nvls_gain(all_reduce) if all_reduce is not None and hw.nvls else np.ones_like(group))
    if hw.network_gbps is None and hw.network_busbw_gbs is None:
        return np.broadcast_to(inside, group.shape).astype(float)
    inter = hw.network_busbw_gbs or (hw.network_gbps or 0.0) / 8 * NETWORK_EFFICIENCY
    return np.where(np.ceil(group / _domain(hw)) > 1, min(inter, intra), inside)


def network_share(hw: Hardware, span: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """How many collectives share one node's network when ``groups`` process groups, each laid over ``span``
    consecutive GPUs and strided through them, run at once: the node's GPUs belong to ``min(groups, GPUs a node)``
    different groups (one a tensor-parallel rank for data parallelism, one a tensor- and expert-parallel rank for
    the experts' data parallelism), and every one of them crosses the node's network when its group spans NVLink
    domains. A ring's traffic through the node's network is the same whether one group of all its GPUs or ``k``
    groups of ``1/k`` of them move the bytes (each group's ring crosses the node once, with its own share), so each
    gets ``1/k`` of the bus bandwidth a whole-node collective reaches (:func:`bus_bandwidth`, nccl-tests'
    measurement; a pool's measured one likewise). 1 inside an NVLink domain, where every GPU has its own links to
    the switches, and on a pool without a network."""
    span, groups = np.asarray(span, dtype=float), np.asarray(groups, dtype=float)
    if hw.network_gbps is None and hw.network_busbw_gbs is None:
        return np.ones(np.broadcast(span, groups).shape)
    return np.where(np.ceil(span / _domain(hw)) > 1, np.minimum(groups, hw.gpus_per_node), 1.0)


def collective_latency(hw: Hardware, ranks: np.ndarray, span: np.ndarray, kind: str) -> np.ndarray:
    """Seconds of latency of one collective among ``ranks`` GPUs laid over ``span`` consecutive GPUs
    (NCCL's model, see RING_BASE_US): ring steps over NVLink and across nodes; an all-reduce across
    nodes as the quicker of ring and tree."""
    ranks, span = np.asarray(ranks, dtype=float), np.asarray(span, dtype=float)
    nodes = np.minimum(np.ceil(span / _domain(hw)), np.maximum(ranks, 1))
    twice = 2.0 if kind == "all-reduce" else 1.0
    inter = twice * (nodes - 1)
    ring = RING_BASE_US + (twice * (ranks - 1) - inter) * RING_NVLINK_US + inter * RING_NET_US
    if kind == "all-reduce":
        per_node = np.ceil(ranks / nodes)
        tree = RING_BASE_US + 2 * ((per_node - 1) * TREE_NVLINK_US + np.log2(nodes) * TREE_NET_US)
        ring = np.where(nodes > 1, np.minimum(ring, tree), ring)
    return np.where(ranks > 1, ring * 1e-6, 0.0)


def _gpu_links(hw: Hardware) -> tuple[float, float]:
    """Bytes/s a GPU sends point to point: over NVLink at nccl-tests' protocol efficiency, and over its share of the
    node's network (1e-9 on a pool without one)."""
    return hw.intra_node_gbs * INTRA_NODE_EFFICIENCY * 1e9, max(
        (hw.network_gbps or 0) / 8 * 1e9 / hw.gpus_per_node, 1e-9
    )


def _point_to_point(hw: Hardware, span: np.ndarray) -> np.ndarray:
    """Bytes/s of one GPU's sends to a neighbour among ``span`` consecutive GPUs: NVLink while they share a
    node (or an NVLink domain), else the GPU's share of the node's network."""
    intra, cross = _gpu_links(hw)
    return np.where(span <= _domain(hw), intra, cross)


def all_to_all_seconds(hw: Hardware, sent: np.ndarray, members: np.ndarray, stride: np.ndarray) -> np.ndarray:
    """Seconds of one all-to-all in which each GPU sends ``sent`` bytes, spread evenly over the other ``members``
    of its group, whose ranks lie ``stride`` GPUs apart. NCCL runs an all-to-all as one group of sends and
    receives to every peer at once (its user guide's all-to-all example; DeepEP's dispatch likewise drives
    NVLink and RDMA together), so the bytes for peers inside the GPU's NVLink domain move over NVLink while
    those for the other domains' move over the GPU's share of the node's network, side by side: the slower
    of the two is the time. A group inside one domain moves everything over NVLink."""
    sent, members, stride = (np.asarray(x, dtype=float) for x in (sent, members, stride))
    intra, cross = _gpu_links(hw)
    local = np.clip(np.floor(_domain(hw) / np.maximum(stride, 1.0)), 1.0, members)  # members on a domain
    remote = np.where(members > 1, (members - local) / np.maximum(members - 1, 1.0), 0.0)
    return np.maximum(sent * (1 - remote) / intra, sent * remote / cross)


def _misses(experts: int, held: np.ndarray, top_k: int) -> np.ndarray:
    """The chance that none of a token's ``top_k`` experts, drawn evenly from ``experts`` (router balanced), is among
    ``held`` of them: C(experts − held, top_k) / C(experts, top_k)."""
    held = np.asarray(held, dtype=float)
    miss = np.ones_like(held)
    for i in range(top_k):
        miss = miss * np.clip((experts - held - i) / (experts - i), 0.0, None)
    return miss


def deepep_seconds(
    hw: Hardware, token_bytes: np.ndarray, experts: int, top_k: int, members: np.ndarray, stride: np.ndarray
) -> np.ndarray:  # fmt: skip
    """Seconds of one DeepEP dispatch (or combine) in which each GPU sends its tokens of ``token_bytes`` to the
    ``members`` of its expert-parallel group (ranks ``stride`` GPUs apart, ``experts / members`` experts each):
    a token goes once to each other GPU of its NVLink domain that holds any of its ``top_k`` experts, and once over
    the network to each other domain that does, to the GPU of the same local rank, which forwards it over NVLink to
    the ones there that hold them (DeepEP's README: dispatch and combine kernels that forward from NVLink to RDMA;
    DeepSeek-V3's report, §3.2.2). Per GPU, on balance: ``(local − 1)·p_gpu·domains`` copies a token over NVLink
    (its own and the forwarded ones) beside ``(domains − 1)·p_domain`` over its share of the network, side by side
    as :func:`all_to_all_seconds` moves them."""
    token_bytes, members, stride = (np.asarray(x, dtype=float) for x in (token_bytes, members, stride))
    intra, cross = _gpu_links(hw)
    local = np.clip(np.floor(_domain(hw) / np.maximum(stride, 1.0)), 1.0, members)  # members on a domain
    domains = members / local
    per_gpu = experts / members
    p_gpu, p_domain = 1 - _misses(experts, per_gpu, top_k), 1 - _misses(experts, per_gpu * local, top_k)
    nvlink = token_bytes * (local - 1) * p_gpu * domains / intra
    network = token_bytes * (domains - 1) * p_domain / cross
    return np.where(members > 1, np.maximum(nvlink, network), 0.0)


@dataclass(frozen=True)
class StepTimes:
    """Seconds per optimizer step, split into parts, for arrays of layouts."""

    compute: np.ndarray
    communication: np.ndarray  # exposed (not hidden behind compute)
    offload: np.ndarray  # exposed host traffic and CPU optimizer
    other: np.ndarray  # memory-bound work beside the matmuls: the optimizer step, QLoRA dequantisation
    dispatch: np.ndarray  # eager PyTorch's per-operation dispatch and launch (timing.dispatch)

    @property
    def total(self) -> np.ndarray:
        return self.compute + self.communication + self.offload + self.other + self.dispatch


def _log_interp(length: np.ndarray, lengths: tuple[int, ...], values: tuple[float, ...]) -> np.ndarray:
    """``values`` measured at ``lengths``, linear in log2 of the length between them and held beyond them."""
    x = np.log2(np.clip(np.asarray(length, dtype=float), 1.0, None))
    return np.interp(x, np.log2(lengths), values)


def cudnn_fraction(length: np.ndarray, die: str) -> tuple[np.ndarray, np.ndarray]:
    """cuDNN's fused attention on ``die`` (:data:`CUDNN_SWEEP`) at ``length`` tokens a sequence, as fractions of the
    die's dense bf16 peak, (forward, backward); below the sweep's shortest length, the FlashAttention-3 paper's
    cuDNN curve (:data:`ATTENTION_KERNEL_TFLOPS`) scaled to meet the sweep there."""
    peak, fwd, bwd = CUDNN_SWEEP[die]
    first, lengths = CUDNN_SWEEP_LENGTHS[0], ATTENTION_KERNEL_LENGTHS
    short = np.asarray(length, dtype=float) < first
    out = []
    for sweep, paper in zip((fwd, bwd), ATTENTION_KERNEL_TFLOPS[AttentionKernel.CUDNN], strict=True):
        below = _log_interp(length, lengths, paper) * sweep[0] / _log_interp(np.array(first), lengths, paper)
        out.append(np.where(short, below, _log_interp(length, CUDNN_SWEEP_LENGTHS, sweep)) / peak)
    return out[0], out[1]


def attention_kernel_speedup(
    kernel: AttentionKernel, length: np.ndarray, gpu_arch: str | None = "hopper", gpu_id: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's speed over the rate the model's attention efficiency stands for (FlashAttention-2's fraction of
    peak on Hopper) at ``length`` tokens a sequence, (forward, backward). cuDNN on Hopper and Blackwell: its die's
    fraction of peak (:data:`CUDNN_SWEEP`, one runner's) over FlashAttention-2's on an H100. FlashAttention-3 on
    Hopper: :data:`ATTENTION_KERNEL_TFLOPS` over FlashAttention-2's. FlashAttention-2 on Blackwell (and
    FlashAttention-3, which does not run there): its measured fraction of a B200's peak over its fraction of an
    H100's (:data:`FLASH2_BLACKWELL_TFLOPS`). 1 on other GPUs. FlexAttention: FlashAttention-2's on the same GPU
    times :data:`FLEX_OVER_FLASH2`."""
    ones = np.ones(np.shape(length))
    if kernel is AttentionKernel.FLEX:
        fwd, bwd = attention_kernel_speedup(AttentionKernel.FLASH2, length, gpu_arch, gpu_id)
        return fwd * FLEX_OVER_FLASH2[0], bwd * FLEX_OVER_FLASH2[1]
    if gpu_arch not in ("hopper", "blackwell"):
        return ones, ones
    base_fwd, base_bwd = ATTENTION_KERNEL_TFLOPS[AttentionKernel.FLASH2]
    lengths = ATTENTION_KERNEL_LENGTHS
    if kernel is AttentionKernel.CUDNN:
        die = "hopper" if gpu_arch == "hopper" else BLACKWELL_DIES.get(gpu_id or "", "b200")
        fwd, bwd = cudnn_fraction(length, die)
        return (
            fwd / (_log_interp(length, lengths, base_fwd) / HOPPER_BF16_PEAK),
            bwd / (_log_interp(length, lengths, base_bwd) / HOPPER_BF16_PEAK),
        )
    if gpu_arch == "hopper":
        fwd, bwd = ATTENTION_KERNEL_TFLOPS[kernel]
        return (
            _log_interp(length, lengths, fwd) / _log_interp(length, lengths, base_fwd),
            _log_interp(length, lengths, bwd) / _log_interp(length, lengths, base_bwd),
        )
    b_fwd, b_bwd = FLASH2_BLACKWELL_TFLOPS
    ratio = HOPPER_BF16_PEAK / FLASH2_BLACKWELL_PEAK
    return (
        _log_interp(length, lengths, b_fwd) / _log_interp(length, lengths, base_fwd) * ratio,
        _log_interp(length, lengths, b_bwd) / _log_interp(length, lengths, base_bwd) * ratio,
    )


def attention_kernel_factor(
    training: Training, hw: Hardware, length: np.ndarray, recompute: np.ndarray
) -> np.ndarray:  # fmt: skip
    """What the attention core's time at the rate the attention efficiency stands for is multiplied by under the
    job's kernel on the pool's GPU (:func:`attention_kernel_speedup`): its forward passes (one, two under
    recomputation) and its backward (three forward-sized parts: the two gradient matmul pairs and the recomputed
    scores) each divided by that direction's speed-up; 1 for eager attention, whose matmuls the efficiency costs."""
    length, recompute = np.asarray(length, dtype=float), np.asarray(recompute, dtype=float)
    shape = np.broadcast(length, recompute).shape
    measured = hw.gpu_arch in ("hopper", "blackwell") or training.attention_kernel is AttentionKernel.FLEX
    if training.attention is Attention.EAGER or not measured:
        return np.ones(shape)
    fwd, bwd = attention_kernel_speedup(training.attention_kernel, length, hw.gpu_arch, hw.gpu_id)
    forwards = np.where(recompute >= 1, 2.0, 1.0)
    return np.broadcast_to((forwards / fwd + 3.0 / bwd) / (forwards + 3.0), shape)


def attention_kernel_note(training: Training, gpu_arch: str) -> str | None:
    """What the output says where the job's attention kernel is not the one a Hopper or Blackwell GPU runs best:
    FlashAttention-2 (``flash2``, the default) while cuDNN's, which PyTorch's SDPA picks on both once its cuDNN is
    newer than 9.15 and Transformer Engine always runs, is faster at 2k-32k tokens (:data:`CUDNN_SWEEP`): 1.3-1.9
    times on Hopper, 3.3-4.5 times on Blackwell, where FlashAttention-2's kernels run at about an H100's speed
    (:data:`FLASH2_BLACKWELL_TFLOPS`); FlashAttention-3 named on Blackwell, where it does not run (the model takes
    FlashAttention-2's speed for it). The advice to state ``cudnn`` excepts a stack that hands SDPA a mask tensor,
    whose every pair any backend computes (``square_attention``). None elsewhere, for ``cudnn``, for ``flash3`` on
    Hopper and for eager attention."""
    if training.attention is Attention.EAGER or gpu_arch not in ("hopper", "blackwell"):
        return None
    lead = "1.3-1.9" if gpu_arch == "hopper" else "3.3-4.5"
    if training.attention_kernel is AttentionKernel.FLASH3 and gpu_arch == "blackwell":
        return (
            f"attention on {gpu_arch}: FlashAttention-3 runs on Hopper GPUs only; the model costs the attention core "
            "at FlashAttention-2's measured speed here (about an H100's), and cuDNN's (attention_kernel: cudnn) runs "
            f"{lead} times faster at 2k-32k tokens"
        )
    if training.attention_kernel is AttentionKernel.FLASH2:
        speed = (
            "the rate the model is fitted to"
            if gpu_arch == "hopper"
            else "about an H100's speed, as the model costs it"
        )
        return (
            f"attention on {gpu_arch}: attention_kernel flash2 (FlashAttention-2, SDPA's flash backend) runs here at "
            f"{speed}; PyTorch's SDPA runs cuDNN's kernel here once its cuDNN is newer than 9.15 (CUDA 13 wheels) and "
            f"Transformer Engine always does, {lead} times faster at 2k-32k tokens: state attention_kernel: cudnn (or "
            "--attention-kernel cudnn) for such a stack, unless it hands SDPA a mask tensor (padded batches, windowed "
            "layers), which any kernel then computes in full"
        )
    return None


def windowed_note(arch: Architecture, training: Training) -> str | None:
    """What the output says where a job's sliding-window (or chunked) layers run through SDPA's explicit mask
    (:func:`windowed_attention`): every pair of theirs computed, twice the causal count, where a kernel given the
    window would skip beyond it. None where no layer has a window, the sequence stays within it, or the kernel
    takes the window (or eager attention and a job's own mask cost every pair anyway)."""
    flops = _windowed(arch)
    if (
        not flops
        or training.seq_len < arch.sliding_window
        or training.attention_kernel is not AttentionKernel.FLASH2
        or square_attention(training)  # (eager attention, a job's own mask: every pair anyway)
    ):
        return None
    kind = (
        f"within {arch.sliding_window}-token chunks"
        if flops["chunked"]
        else f"through a {arch.sliding_window}-token window"
    )
    return (
        f"windowed attention: {sum(arch.sliding_layers)} of {len(arch.sliding_layers)} layers attend {kind}; under "
        "SDPA transformers hands them an explicit mask, and the memory-efficient kernel computes every pair of theirs "
        "(twice the causal count), as the model costs it; a kernel given the window skips beyond it (Transformer "
        "Engine's cuDNN attention: attention_kernel cudnn; FlashAttention-3: flash3; FlexAttention: flex)"
    )


def sequence_lengths(training: Training, micro_batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tokens a sequence costs and the span its attention covers, per micro-batch size
    (:class:`~ftplan.memory.setup.SequenceData`): ``seq_len`` both without data lengths.

    From a histogram, exactly: a padded micro-batch of ``m`` sequences drawn from it costs ``m`` times its
    longest, whose expectation is ``Σ lᵢ·(Fᵢᵐ − Fᵢ₋₁ᵐ)`` (``F`` the cumulative shares), and every sequence
    attends over that longest, so the span is ``E[longest²] / E[longest]``; a packed row costs ``seq_len``
    tokens and its documents attend within themselves, a span of ``E[l²] / E[l]`` (the mean length a token
    sits in). From the mean and p95: a sequence attends over its own length, counted at the p95 (long
    sequences hold most tokens and attention grows with length) or, without one, the mean: so do a packed
    row's documents, while the row costs ``seq_len`` tokens of data. A padded micro-batch costs its longest
    sequence: a sequence alone its own length (the mean), more than one the p95 (``seq_len`` without one),
    over which they attend."""
    mb = np.asarray(micro_batch, dtype=float)
    s = float(training.seq_len)
    data = training.data
    if data is None:
        return np.full_like(mb, s), np.full_like(mb, s)
    if data.lengths:
        lengths = np.minimum(np.array(data.lengths, dtype=float), s)
        shares = np.array(data.shares)
        if data.packing:
            span = float(shares @ lengths**2 / (shares @ lengths))
            return np.full_like(mb, s), np.full_like(mb, span)
        cdf = np.minimum(np.cumsum(shares), 1.0)
        at_most = cdf[None, :] ** np.maximum(mb, 1.0)[..., None]  # P(longest ≤ lᵢ), per micro-batch size
        p_longest = np.diff(at_most, axis=-1, prepend=0.0)
        longest = p_longest @ lengths
        return longest, (p_longest @ lengths**2) / longest
    own = float(min(data.p95 or data.mean, training.seq_len))  # a sequence's attention span
    if data.packing:
        return np.full_like(mb, s), np.full_like(mb, own)
    longest = float(min(data.p95 or training.seq_len, training.seq_len))
    return np.where(mb <= 1, float(data.mean), longest), np.where(mb <= 1, own, longest)


def step_tokens(training: Training, global_batch: int) -> int:
    """Tokens of data an optimizer step trains on (padding excluded)."""
    return global_batch * training.data_tokens


def stage_layers(
    layers: int, pp: np.ndarray | int, virtual: np.ndarray | int, split: PipelineSplit
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layers the first pipeline rank, the fullest middle rank (0 without one) and the last rank hold under
    ``split``, for arrays of layouts: the memory model's cut (:func:`ftplan.memory.pipeline.rank_layers`), once for
    each distinct (pp, virtual); all ``layers`` on one rank."""
    pp, v = np.broadcast_arrays(np.asarray(pp, dtype=int), np.asarray(virtual, dtype=int))
    pairs, where = np.unique(np.stack([pp.ravel(), v.ravel()], axis=1), axis=0, return_inverse=True)
    ends = np.array([_rank_ends(layers, int(p), int(c), split) for p, c in pairs], dtype=float).reshape(-1, 3)
    picked = ends[np.ravel(where)]
    first, middle, last = (picked[:, k].reshape(pp.shape) for k in range(3))
    return first, middle, last


def _rank_ends(layers: int, pp: int, virtual: int, split: PipelineSplit) -> tuple[int, int, int]:
    """(first, fullest middle, last) rank's layers of one pipeline layout (see :func:`stage_layers`)."""
    if pp <= 1:
        return layers, 0, layers
    ranks = rank_layers(layers, pp, virtual, split)
    return ranks[0], max(ranks[1:-1], default=0), ranks[-1]


def step_times(
    flops: JobFlops,
    arch: Architecture,
    training: Training,
    hw: Hardware,
    dp: np.ndarray,
    tp: np.ndarray,
    zero: np.ndarray,
    offload: np.ndarray,
    recompute: np.ndarray,
    micro_batch: np.ndarray,
    grad_accum: np.ndarray,
    pp: np.ndarray | int = 1,
    virtual_stages: np.ndarray | int = 1,
    dp_shard: np.ndarray | int = 0,
    cp: np.ndarray | int = 1,
    ep: np.ndarray | int = 1,
) -> StepTimes:
    """Step time of each layout (arrays broadcast together; codes as in RECOMPUTE / OFFLOAD; ``dp_shard``
    0 where the states shard over all of dp)."""
    dp, tp, zero, offload, recompute, mb, accum, pp, virtual, dp_shard, cp, ep = (
        np.asarray(x, dtype=float)
        for x in (dp, tp, zero, offload, recompute, micro_batch, grad_accum, pp, virtual_stages, dp_shard, cp, ep)
    )
    c = training.precision.compute_bytes
    # tokens a sequence costs (its padded or packed length) and its attention span
    s, span = sequence_lengths(training, mb)
    if flops.attention_square:  # (every query meets every key of its row: packing does not shorten it)
        span = s
    tokens_micro = mb * s / cp  # tokens per GPU-group per micro-step (context parallelism: this rank's share)
    matmul_flops, attention_flops = flops.hardware(recompute)
    attention_flops = attention_flops * span / training.seq_len  # (JobFlops counts a seq_len span)
    # Expert parallelism: the step waits for the GPU whose experts take the most rows, capacity_factor × a
    # balanced share (the memory model's bound on routing imbalance); a recomputed forward runs them again
    imbalance = np.where(ep > 1, training.capacity_factor - 1, 0.0)
    routed = flops.expert_linear + np.where(recompute == 2, flops.expert_forward, 0.0)
    matmul_flops = matmul_flops + imbalance * routed
    rate = hw.peak_tflops * 1e12 * hw.efficiency
    # the kernel's sequence: a ring's chunk (cp of them a sequence) or, under Ulysses, the whole span
    chunk = span / np.where(training.context_parallel is ContextParallel.ULYSSES, 1.0, cp)
    kernel = windowed_attention(training, hw, flops, span, chunk, recompute)
    t_attention = tokens_micro * attention_flops / tp / hw.attention_rate * kernel
    t_micro = tokens_micro * matmul_flops / tp / rate + t_attention
    t_micro = t_micro + gemm_overhead(flops, hw, tokens_micro, tp, recompute, ep)
    if flops.adapter_bytes:  # LoRA's adapter GEMMs at the slower of their FLOPs and their HBM traffic
        again = np.where(recompute == 2, 4 / 3, 1.0)  # (the recomputed forward runs them again)
        t_flops = flops.adapter_linear / rate
        t_bytes = flops.adapter_bytes / (hw.hbm_gbs * 1e9)
        t_micro = t_micro + tokens_micro * again * (max(t_flops, t_bytes) - t_flops) / tp
    shard = np.where(dp_shard > 0, dp_shard, dp) * cp  # (context-parallel ranks hold the same weights)
    if flops.fp8_linear:
        if not hw.fp8_tflops:
            raise ValueError("precision fp8 on a GPU without FP8 tensor cores")
        full = recompute == 2  # the recomputed forward runs its linears (a third of their FLOPs) again
        fp8_flops = flops.fp8_linear * np.where(full, 4 / 3, 1.0)
        fp8_rate = hw.fp8_tflops * 1e12 * hw.efficiency * hw.fp8_ratio
        casts = tokens_micro * (
            flops.fp8_cast_token + np.where(full, flops.fp8_forward_token, 0.0)
        ) + fp8_weight_cast_bytes(flops, training, zero, shard, recompute, accum)
        t_micro = t_micro + tokens_micro * fp8_flops * (1 / fp8_rate - 1 / rate) / tp + casts / tp / (hw.hbm_gbs * 1e9)
    # ---- pipeline: each stage computes its share of a micro-step (below); the schedule idles (pp − 1)/(v·m) of
    # the ideal time (its bubble, Narayanan et al. 2021 §2.2; v = 1 but interleaved); every micro-batch crosses each
    # stage boundary twice (activation forward, its gradient backward) as a point-to-point send that the
    # receiving stage waits for. Each tensor-parallel rank sends its 1/tp of the boundary's hidden states:
    # sequence parallelism keeps the residual stream split over the group (Korthikanti et al. 2022 §4.2.2), and
    # Megatron splits it to send without it (the scatter/gather optimisation, Narayanan et al. 2021 §4.1).
    # Stages are dp·cp·tp ranks apart (the pipeline is the outermost dimension of Megatron-Core's default rank
    # order and of torchtitan's device mesh), so a pipeline wider than a node sends across nodes at some
    # boundary, which every micro-batch waits for: NVLink only while the whole job shares a node, else the
    # node's network share of one GPU
    # A rank's share of a micro-step is its layers' (the stack's split: memory.pipeline, whose cut the memory
    # model holds each rank to), and the last rank's adds the head: the LM head's matmuls and the memory-bound
    # final norm and loss (traffic.token_bytes' head part). Every schedule slot waits for the slowest rank,
    # which sets the step (Narayanan et al. 2021 §2.2 count the bubble in its micro-batch time): the last rank
    # of an even cut where the head outweighs a layer's share, wherever the vocabulary is large against a
    # stage's layers (201k words on 9 of gpt-oss-120b's layers: a third more than the other ranks).
    moved = flops.traffic_forward * np.where(recompute == 2, 2.0, 1.0) + flops.traffic_backward
    # eager attention's score tensors: a token's bytes per key times the keys it attends, the forward's again
    # wherever the attention core is recomputed (selective or full)
    moved = moved + span * (flops.scores_forward * np.where(recompute >= 1, 2.0, 1.0) + flops.scores_backward)
    hbm = hw.hbm_gbs * 1e9
    t_moved, t_head_moved = tokens_micro * moved / tp / hbm, tokens_micro * flops.traffic_head / tp / hbm
    t_head = np.minimum(tokens_micro * flops.head_linear / tp / rate, t_micro)
    first, middle, last = stage_layers(arch.layers, pp, virtual, training.pipeline_split)
    per_layer = (t_micro - t_head + t_moved) / arch.layers
    head_gates = last * per_layer + t_head + t_head_moved >= np.maximum(first, middle) * per_layer
    share = np.where(head_gates, last, np.maximum(first, middle)) / arch.layers
    staged = pp > 1
    on_rank = np.where(staged, share * arch.layers, arch.total_layers)  # the slowest rank's layers: its collectives'
    t_micro = np.where(staged, (t_micro - t_head) * share + np.where(head_gates, t_head, 0.0), t_micro)
    t_moved = np.where(staged, t_moved * share + np.where(head_gates, t_head_moved, 0.0), t_moved + t_head_moved)
    bubble = np.where(pp > 1, (pp - 1) / (virtual * accum), 0.0)
    compute = t_micro * accum * (1 + bubble)
    # ---- context parallelism (torch's ring attention, all-gather rotation): every attention layer gathers
    # the other ranks' keys and values in forward and again in backward, and passes the fp32 k/v gradients
    # around the ring; it overlaps the attention kernels' own time at best
    cp_link = _point_to_point(hw, tp * cp)
    if training.context_parallel is ContextParallel.ULYSSES:
        # DeepSpeed-Ulysses: all-to-alls send q, k and v to the ranks of their heads and the output back, four a
        # layer in forward, four in backward (and four again in a recomputed forward), (cp − 1)/cp of each leaving
        # the GPU; k and v repeated where cp exceeds the key/value heads; the attention waits for them
        kv = arch.kv_dim * np.maximum(1.0, cp / arch.kv_heads)
        a2a_cp = tokens_micro * c * (2 * arch.q_dim + 2 * kv) * np.where(cp > 1, (cp - 1) / cp, 0.0)
        passes = np.where(recompute == 2, 3.0, 2.0)
        t_cp = on_rank * passes * all_to_all_seconds(hw, a2a_cp / tp, cp, tp) * accum
    else:
        kv_bytes = tokens_micro * arch.kv_dim * (2 * c + 2 * c + 2 * 4) * (cp - 1)
        t_ring = on_rank * kv_bytes / tp / cp_link
        t_cp = np.where(cp > 1, np.maximum(0.0, t_ring - t_attention * on_rank / arch.total_layers) * accum, 0.0)
    p2p_bytes = tokens_micro * arch.hidden * c / tp
    link = _point_to_point(hw, dp * cp * tp * pp)
    # (one send each way a chunk micro-batch, on the critical path in each of the m·v + pp − 1 schedule slots)
    p2p = np.where(pp > 1, 2 * p2p_bytes / link * (accum * virtual + pp - 1), 0.0)
    backward_share = 1 - flops.forward / flops.model  # gradients are ready only during the backward

    # ---- data parallel / ZeRO ------------------------------------------------------------------
    grad_bytes = 2.0 if training.precision is Precision.BF16_PURE else 4.0  # fp32 trainables otherwise
    g_bytes = flops.trainable * grad_bytes / (tp * pp)  # (a pipeline stage's share)
    w_bytes = flops.weights * (4.0 if training.precision is Precision.FP32 else 2.0) / (tp * pp)
    fp8 = training.fp8_setup
    if fp8 is not None and fp8.all_gather:  # converted weights gathered in float8: one byte each
        w_bytes -= flops.fp8_linear / 6 / tp
    # HSDP: the ZeRO collectives run inside a shard group of dp_shard ranks, then the gradient shards are
    # all-reduced across the dp / dp_shard groups (torch FSDP2's 2-D mesh). Every GPU of a shard group runs its own
    # replicate all-reduce at once, and the shard group's collectives run one a tensor-parallel rank at once: across
    # nodes each gets its share of the node's network (network_share); inside an NVLink domain (replicas on one
    # node, or the trays of an NVL72) every GPU has its own link to the switches, so each runs at the NVLink rate
    replicas = dp * cp / shard
    frac = np.where(shard > 1, (shard - 1) / shard, 0.0)
    group = shard * tp
    share = network_share(hw, group, tp)
    bw = bus_bandwidth(hw, group) * 1e9 / share
    bw_ar = bus_bandwidth(hw, group, all_reduce=shard) * 1e9 / share  # (ZeRO 0's all-reduce: NVLS inside a domain)
    on_node = np.minimum(group, _domain(hw))
    bw_rep = bus_bandwidth(hw, replicas * on_node) * 1e9 / network_share(hw, replicas * on_node, on_node)
    t_rep = np.where(replicas > 1, 2 * (replicas - 1) / replicas * g_bytes / shard / bw_rep, 0.0)
    # Expert parallelism: a GPU holds 1/ep of the routed experts, whose collectives run over the shard/ep
    # ranks holding the same experts (transformers' and torchtitan's efsdp group, Megatron's expert-data-parallel
    # one): a node's GPUs are in as many of those groups as tensor- and expert-parallel ranks it holds, all
    # reducing at once, so across nodes each gets that share of the node's network (e_share, relative to the
    # dense groups' share the expert bytes are divided by below)
    if flops.expert_weights:
        g_exp = np.where(ep > 1, g_bytes * flops.expert_trainable / max(flops.trainable, 1), 0.0)
        w_exp = np.where(ep > 1, w_bytes * flops.expert_weights / flops.weights, 0.0)
        g_bytes, w_bytes = g_bytes - g_exp, w_bytes - w_exp
        e_shard = shard / ep
        e_frac = np.where(e_shard > 1, (e_shard - 1) / e_shard, 0.0)
        g_exp, w_exp = g_exp / ep, w_exp / ep
        e_share = network_share(hw, group, tp * ep) / share
    else:
        g_exp = w_exp = e_frac = np.zeros_like(shard)
        e_share = np.ones_like(shard)
    e_cost = e_frac * e_share  # the experts' bytes that move, at their share of the node's network
    # Latency: FSDP gathers and reduces one group at a time (a layer, and the root's embeddings and
    # head), DDP one 25 MiB bucket at a time; HSDP's replicas all-reduce each group's shard
    units = arch.total_layers / pp + 1
    lat_ring = collective_latency(hw, shard, group, "all-gather")
    lat_rep = np.where(replicas > 1, collective_latency(hw, replicas, replicas * on_node, "all-reduce"), 0.0)
    lat_buckets = np.ceil(g_bytes / DDP_BUCKET_BYTES) * collective_latency(hw, shard, group, "all-reduce")
    # ZeRO 0: gradient all-reduce, overlapping the last micro-step's backward; ZeRO 1/2: a reduce-scatter of the
    # gradients, overlapping it too, then the updated parameters' all-gather (the 16-bit copy; same volume as the
    # gradients in their dtype, DeepSpeed 2020-03). That all-gather follows the optimizer step, so it waits
    # (ZeroRedundancyOptimizer's and DeepSpeed's step end with it) unless the next step's forward hides it: FSDP2's
    # ZeRO-2 gathers each group's shard as its forward reaches it, prefetched, every micro-step (it reshards after
    # backward unless told not to: ``FSDPModule.set_reshard_after_backward``), and stacks that say so gather the
    # update under the next forward once (``param_gather_overlap``: Megatron-Core's --overlap-param-gather, NeMo's
    # overlap_param_sync). ZeRO-2 keeps only its shard of the gradients, so it reduce-scatters every micro-step's
    # (DeepSpeed#2252: stages 2 and 3 reduce after every backward; FSDP2 does unless told not to sync, which keeps
    # whole gradients: ZeRO-1's memory): each overlaps its own micro-step's backward.
    overlap = t_micro * backward_share
    t_rs = (frac * g_bytes + e_cost * g_exp) / bw + units * lat_ring + t_rep + units * lat_rep
    t_ag = (frac * g_bytes + e_cost * g_exp) * (c / grad_bytes) / bw + units * lat_ring
    t_ar = 2 * (frac * g_bytes + e_cost * g_exp) / bw_ar + lat_buckets + t_rep + units * lat_rep
    fsdp2 = (zero == 2) & (training.engine is Engine.TORCH)
    under_forward = np.maximum(0.0, t_ag - t_micro * (1 - backward_share)) * np.where(fsdp2, accum, 1.0)
    ag_exposed = np.where(fsdp2 | training.param_gather_overlap, under_forward, t_ag)
    exposed_dp = np.where(
        zero == 0,
        np.maximum(0.0, t_ar - overlap),
        np.maximum(0.0, t_rs - overlap) * np.where(zero == 2, accum, 1.0) + ag_exposed,
    )
    # ZeRO 3: parameters gathered in forward and again in backward, gradients reduce-scattered,
    # every micro-step; prefetching hides them behind that micro-step's compute.
    t_z3 = (
        (frac * (2 * w_bytes + g_bytes) + e_cost * (2 * w_exp + g_exp)) / bw
        + 3 * units * lat_ring
        + t_rep
        + units * lat_rep
    )
    exposed_z3 = np.maximum(0.0, t_z3 - t_micro) * accum
    # Every MoE layer sends each routed copy of a token to its expert's GPU and back, in forward and in
    # backward (and in the recomputed forward): all-to-alls of tokens × top-k × hidden, (ep − 1)/ep of it
    # leaving the GPU, the peers on its NVLink domain over NVLink beside the others over its share of the network
    # (all_to_all_seconds); transformers' EP waits for them (it reads the split sizes back to the host), so they
    # are exposed. DeepEP sends a token once to each GPU and domain that holds its experts (deepep_seconds)
    moe_layers = arch.layers_of("main") if arch.is_moe else 0
    n_a2a = np.where(recompute == 2, 6.0, 4.0) * moe_layers * on_rank / arch.total_layers
    if training.expert_dispatch is ExpertDispatch.DEEPEP and arch.is_moe:
        one = deepep_seconds(hw, tokens_micro * arch.hidden * c, arch.experts, arch.experts_per_token, ep, tp * cp)
    else:
        a2a = tokens_micro * arch.experts_per_token * arch.hidden * c * np.where(ep > 1, (ep - 1) / ep, 0.0)
        one = all_to_all_seconds(hw, a2a, ep, tp * cp)
    t_a2a = n_a2a * one * accum
    comm = np.where(zero == 3, exposed_z3, exposed_dp) + p2p + t_cp + t_a2a

    # ---- tensor parallel (with sequence parallelism): 4 collectives of b·s·h per layer, 6 with
    # full recomputation, on the critical path (Korthikanti et al. 2022); over NVLink while the group stays in
    # an NVLink domain, else at the network's bus bandwidth (a group wider than a node spans nodes)
    tp_frac = np.where(tp > 1, 2 * (tp - 1) / tp, 0.0)
    n_coll = np.where(recompute == 2, 6.0, 4.0) * on_rank
    bw_tp = bus_bandwidth(hw, tp) * 1e9
    t_tp = tp_frac * (tokens_micro * arch.hidden * c) / bw_tp + collective_latency(hw, tp, tp, "all-gather")
    if training.tp_overlap and flops.tp_pairs:
        linear_rate = fp8_rate if flops.fp8_linear else rate
        t_tp_step = tp_overlap_seconds(flops, training, linear_rate, t_tp, tokens_micro, tp, recompute)
        t_tp_step = t_tp_step * on_rank
    else:
        t_tp_step = n_coll * t_tp
    comm = comm + t_tp_step * accum

    # ---- offload: PCIe traffic per step (≈4Ψ/n optimizer, ≈6Ψ/n with parameters; ZeRO-Offload,
    # ZeRO-Infinity) and CPU Adam over this node's shards, overlapping nothing in the worst case.
    local = flops.trainable / (shard * tp * pp)  # the trainable parameters a GPU updates
    pcie = np.where(
        offload == 1, 4 * local, np.where(offload == 2, 6 * flops.weights / (shard * tp * pp) + 2 * local, 0.0)
    )
    t_pcie = pcie / (hw.host_link_gbs * 1e9)
    t_cpu = np.where(
        offload > 0, CPU_ADAM_S_PER_GPARAM * local * np.minimum(dp * tp * pp * cp, hw.gpus_per_node) / 1e9, 0.0
    )
    offload_t = np.where(offload > 0, t_pcie + t_cpu, 0.0)

    # ---- QLoRA: NF4 weights dequantised to 16 bits before every use (forward, backward, and the
    # recomputed forward): read 0.5 B and write 2 B a weight through HBM (Dettmers et al. 2023).
    # ---- the optimizer step on the GPU (not where the CPU runs it): memory-bound, the bytes it moves a
    # parameter (timing.dispatch.OPTIMIZER_BYTES) over the parameters this GPU updates, at HBM bandwidth
    # (every data-parallel replica updates all of them without ZeRO; under expert parallelism a GPU holds, and
    # updates, its experts / ep of the routed experts only, which ZeRO then shards over the shard / ep ranks holding
    # them, a trainable / shard share again)
    held = flops.trainable - flops.expert_trainable * (1 - 1 / ep)
    updated = np.where(zero >= 1, flops.trainable / shard, held) / (tp * pp)
    other = np.where(offload > 0, 0.0, updated * dispatch.optimizer_bytes(training) / (hw.hbm_gbs * 1e9))
    # ---- memory-bound operations of every micro-step (norms, rotary, activations, residual adds, casts, the loss;
    # timing.traffic): their bytes at HBM bandwidth, the forward's again under full recomputation; tensor
    # parallelism splits them (sequence parallelism the norms), the slowest pipeline rank holds its share of them
    # (t_moved, above) and idles through its bubble as with compute
    other = other + t_moved * accum * (1 + bubble)
    if training.method is Method.QLORA:
        passes = 2 + (recompute == 2)
        other = other + passes * flops.frozen_matrix / (tp * pp) * 2.5 / (hw.hbm_gbs * 1e9) * accum
    # ---- eager PyTorch: every operation a micro-step and the optimizer step dispatch adds its host and launch
    # time (timing.dispatch), on each pipeline slot like the compute it precedes
    if training.kernels is Kernels.EAGER:
        ops = dispatch.micro_step_ops(arch, training, recompute, pp) * accum * (1 + bubble)
        launches = (ops + dispatch.step_ops(arch, training)) * dispatch.SECONDS_PER_OP
    else:
        launches = np.zeros_like(compute)
    return StepTimes(compute=compute, communication=comm, offload=offload_t, other=other, dispatch=launches)


def peak_tflops(gpu_tflops: dict[str, float | None], precision: Precision) -> float:
    """Dense peak for the precision's 16- or 32-bit matmuls: fp32 runs on CUDA cores (PyTorch's
    default); an fp8 job's other matmuls run in bf16 (its FP8 peak is ``Hardware.fp8_tflops``)."""
    key = {
        Precision.FP32: "fp32",
        Precision.BF16_MIXED: "bf16",
        Precision.BF16_PURE: "bf16",
        Precision.BF16_FP32_ADAPTERS: "bf16",
        Precision.FP16_MIXED: "fp16",
        Precision.FP8: "bf16",
    }[precision]
    value = gpu_tflops.get(key) or gpu_tflops.get("fp16") or gpu_tflops.get("bf16")
    if not value:
        raise ValueError(f"no {key} peak for this GPU")
    return float(value)
