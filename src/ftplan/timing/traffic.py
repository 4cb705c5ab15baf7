"""Memory-bound work inside a micro-step: the bytes a token moves through HBM in a layer's and the head's
operations that are neither weight matmuls nor attention kernels (norms, rotary embeddings, the MLP's activation,
residual adds, autocast's casts, the loss), which run at the GPU's memory bandwidth, not its FLOP rate.

Eager PyTorch (``kernels: eager``) runs each operation as its own kernel, reading its inputs from HBM and writing
its outputs back; the bytes are measured, not assumed: ``python benchmarks/layer_traffic.py`` counts what every
operation of a tiny model's micro-step reads and writes (``ftplan.measure.dispatch.token_traffic``: one layer is
the difference between three and two layers, one token the difference between two sequence lengths, so the
weights' per-micro-step casts cancel), on five width variants of each family, and fits the bytes a token as a
linear function of the layer's widths, ``EAGER[family][precision class] · widths(arch)`` (every operation's tensors
are a width a token: the fit's residual is at most 0.26%), checked on a sixth variant the fit did not see. Families
not measured take the largest of the measured ones' bytes at their own widths (MoE ones Mixtral's). The table is
full fine-tuning's. A LoRA or QLoRA job's frozen base runs in 16 bits under a mixed recipe (the memory model's
base, unless ``lora.base_fp32``), so its layers take the table of bf16 weights (``pure``: measured, a LoRA layer
under autocast over a bf16 base moves exactly what a bf16 model's layer moves forward), less the weight
gradients of the frozen norms (:func:`frozen_norm_bytes`, derived); and each adapted linear adds PEFT's operations
around its adapter (:func:`adapter_bytes`): the input's cast to the adapters' dtype and its dropout, the scaling
of the adapter's output, its sum with the base output and the cast back, and their gradients. Their bytes are
measured the same way (``python benchmarks/layer_traffic.py --lora``): exactly linear in the adapted linears'
input and output widths and the same on every family (``ADAPTER``). The adapters' two GEMMs are costed apart, in
``timing.model``.

A fused stack (``kernels: fused``: torch.compile, Transformer Engine, Liger, Megatron-Core) runs each of those
groups of operations as one kernel that reads its inputs once and writes its outputs once; its bytes are derived
from those kernels' inputs and outputs (elements of the compute dtype a token):

* a norm reads ``h`` and writes ``h`` forward, reads the output gradient and the input and writes the input
  gradient backward (``2h``, ``3h``);
* each of the two residual adds reads two ``h`` and writes one, forward and backward (the gradient's sum);
* rotary embeddings read and write q and k (``2(q + kv)`` each way); a q/k norm (Qwen3) as a norm of q and k;
* a gated MLP's activation (SwiGLU) reads gate and up and writes their product (``3f``), backward reads the
  output gradient, gate and up and writes both gradients (``5f``); an ungated one ``2f`` and ``3f``;
* the head: the final norm, the embedding lookup (and its gradient under full fine-tuning), and a fused
  cross-entropy that reads the logits once forward and reads them and writes their gradient backward.

A fused stack runs each side of an adapter's chain as one kernel (derived): forward, one reading the input and
writing the adapter's input (and a dropout mask byte; none without dropout where the adapter takes the input as
it is, or where autocast hands it the 16-bit input), and one reading the base output and the adapter's and
writing their sum; backward, one reading the output gradient and writing the adapter's, and one reading the
adapter's input gradient (and the mask) and the base's and writing their sum.

Eager attention (``attention: eager``) materialises a score for every query and key of every head and moves
them through HBM, bytes that grow with the keys a query attends (:func:`score_bytes`, a token's bytes per key):
the two attention matmuls write and read them (forward, the scores written and the probabilities read; backward,
the probabilities' gradient written, the probabilities and the scores' gradient read twice), and between them
eager PyTorch's scaling, mask add and fp32 softmax (measured: ``python benchmarks/layer_traffic.py
--eager-attention``, ``EAGER_SCORES``) or a fused stack's one softmax kernel (Megatron-LM's fused scale-mask-softmax:
read and write forward, read the probabilities and their gradient and write the scores' backward).
"""

from __future__ import annotations

from ftplan.arch import Architecture, Kind
from ftplan.memory.params import lora_targets, parameter_targets
from ftplan.memory.setup import Attention, Kernels, Method, Precision, Training
from ftplan.timing.dispatch import adapter_class, precision_class

Coefficients = tuple[float, float, float, float, float]

# Bytes a token a layer, (forward, backward), as coefficients of ``widths`` (hidden, MLP width a token passes
# through, q width, k/v width, 1), by family and precision class (python benchmarks/layer_traffic.py).
EAGER: dict[str, dict[str, tuple[Coefficients, Coefficients]]] = {
    "gpt_neox": {
        "mixed": ((33.35, 4.02, 33.35, 33.35, 32.0), (56.35, 8.02, 56.35, 56.35, 32.0)),
        "pure": ((14.01, 4.01, 14.01, 14.01, 16.0), (32.01, 8.01, 32.01, 32.01, 16.0)),
        "fp32": ((28.02, 8.02, 28.02, 28.02, 32.0), (64.02, 16.02, 64.02, 64.02, 32.0)),
    },
    "llama": {
        "mixed": ((106.0, 10.0, 36.0, 36.0, 304.0), (294.0, 18.0, 58.0, 58.0, 328.0)),
        "pure": ((84.0, 10.0, 20.0, 20.0, 176.0), (222.0, 18.0, 32.0, 32.0, 200.0)),
        "fp32": ((80.0, 20.0, 40.0, 40.0, 304.0), (252.0, 36.0, 64.0, 64.0, 328.0)),
    },
    "qwen2": {
        "mixed": ((71.0, 10.17, 71.0, 37.0, 112.0), (177.0, 18.17, 177.0, 63.0, 136.0)),
        "pure": ((52.0, 10.08, 52.0, 20.5, 80.0), (128.0, 18.08, 128.0, 36.5, 104.0)),
        "fp32": ((60.0, 20.17, 60.0, 41.0, 112.0), (160.0, 36.17, 160.0, 73.0, 136.0)),
    },
    "qwen3": {
        "mixed": ((106.0, 10.0, 84.75, 84.75, 304.0), (294.0, 18.0, 179.12, 179.13, 328.0)),
        "pure": ((84.0, 10.0, 56.75, 56.75, 176.0), (222.0, 18.0, 129.13, 129.12, 200.0)),
        "fp32": ((80.0, 20.0, 68.75, 68.75, 304.0), (252.0, 36.0, 161.13, 161.13, 328.0)),
    },
    "phi": {
        "mixed": ((38.71, 36.03, 38.71, 38.71, 40.0), (66.04, 58.03, 66.04, 66.04, 40.0)),
        "pure": ((16.02, 36.02, 16.02, 16.02, 20.0), (33.35, 58.02, 33.35, 33.35, 20.0)),
        "fp32": ((32.04, 72.03, 32.04, 32.04, 40.0), (66.71, 116.03, 66.71, 66.71, 40.0)),
    },
    "mixtral": {
        "mixed": ((158.0, 20.0, 36.0, 36.0, 712.0), (414.0, 52.0, 58.0, 58.0, 720.0)),
        "pure": ((136.0, 10.0, 20.0, 20.0, 584.0), (354.0, 26.0, 32.0, 32.0, 592.0)),
        "fp32": ((136.0, 20.0, 40.0, 40.0, 688.0), (384.0, 52.0, 64.0, 64.0, 696.0)),
    },
}  # fmt: skip
# The head's bytes a token, (forward, backward), as coefficients of ``head_widths`` (hidden, vocabulary, 1)
EAGER_HEAD: dict[str, dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]]] = {
    "gpt_neox": {
        "mixed": ((18.11, 18.0, 246.0), (22.0, 26.0, 24.0)),
        "pure": ((6.14, 18.0, 274.0), (8.0, 26.0, 20.0)),
        "fp32": ((12.11, 12.0, 246.0), (16.0, 20.0, 24.0)),
    },
    "llama": {
        "mixed": ((38.0, 18.0, 822.0), (106.0, 26.0, 52.0)),
        "pure": ((38.0, 18.0, 1014.0), (98.0, 26.0, 52.0)),
        "fp32": ((32.0, 12.0, 822.0), (100.0, 20.0, 52.0)),
    },
    "qwen2": {
        "mixed": ((38.66, 18.0, 654.0), (106.0, 26.0, 52.0)),
        "pure": ((38.84, 18.0, 798.0), (98.0, 26.0, 52.0)),
        "fp32": ((32.66, 12.0, 654.0), (100.0, 20.0, 52.0)),
    },
    "qwen3": {
        "mixed": ((38.0, 18.0, 822.0), (106.0, 26.0, 52.0)),
        "pure": ((38.0, 18.0, 1014.0), (98.0, 26.0, 52.0)),
        "fp32": ((32.0, 12.0, 822.0), (100.0, 20.0, 52.0)),
    },
    "phi": {
        "mixed": ((18.22, 18.0, 358.0), (22.0, 28.0, 24.0)),
        "pure": ((6.28, 18.0, 418.0), (8.0, 28.0, 20.0)),
        "fp32": ((12.22, 12.0, 358.0), (16.0, 24.0, 24.0)),
    },
    "mixtral": {
        "mixed": ((38.0, 18.0, 822.0), (106.0, 26.0, 52.0)),
        "pure": ((38.0, 18.0, 1014.0), (98.0, 26.0, 52.0)),
        "fp32": ((32.0, 12.0, 822.0), (100.0, 20.0, 52.0)),
    },
}  # fmt: skip
# Eager attention's score operations between its two matmuls (transformers' ``eager_attention_forward``: scaling,
# mask add, softmax in fp32 and back), bytes a token a layer per key it attends, by precision class: (forward,
# backward) per head, then (forward, backward) a layer shares (the mask's read). Measured on Llama's and
# GPT-NeoX's tiny configurations alike by ``python benchmarks/layer_traffic.py --eager-attention``: exactly linear in
# the sequence length and the heads (residual under 1e-10 bytes).
EAGER_SCORES: dict[str, tuple[float, float, float, float]] = {
    "mixed": (24.0, 28.0, 4.0, 0.0),
    "pure": (28.0, 28.0, 2.0, 0.0),
    "fp32": (24.0, 20.0, 4.0, 0.0),
}

# PEFT's operations around a LoRA adapter (not its two matmuls), bytes a token as coefficients of the adapted
# linears' (input width, output width), ((forward), (backward)), by the adapters' class (``dispatch.adapter_class``)
# and whether adapter dropout runs (python benchmarks/layer_traffic.py --lora: Llama, Qwen3 and GPT-NeoX alike,
# residual 0). E.g. fp32 adapters over a bf16 model without dropout: the input cast up (2 read, 4 written), then
# the output's scaling (4, 4), its sum with the 16-bit base output (2 + 4, 4) and the cast back (4, 2).
ADAPTER: dict[str, dict[bool, tuple[tuple[float, float], tuple[float, float]]]] = {
    "pure": {False: ((0.0, 10.0), (6.0, 4.0)), True: ((14.0, 10.0), (12.0, 4.0))},
    "fp32-adapters": {False: ((6.0, 24.0), (12.0, 20.0)), True: ((34.0, 24.0), (24.0, 20.0))},
    "mixed": {False: ((12.0, 10.0), (18.0, 4.0)), True: ((40.0, 10.0), (30.0, 4.0))},
    "fp32": {False: ((0.0, 20.0), (12.0, 8.0)), True: ((28.0, 20.0), (24.0, 8.0))},
}

# Families whose blocks are the measured ones' with other names (the same operations)
ALIASES = {"mistral": "llama"}
MOE_FALLBACK = "mixtral"


def widths(arch: Architecture) -> tuple[int, int, int, int, int]:
    """A layer's widths a token: hidden, MLP (a MoE's routed experts' and its shared expert's), q, k/v, and 1."""
    ffn = arch.ffn * arch.experts_per_token + arch.shared_ffn if arch.is_moe else arch.ffn
    return arch.hidden, ffn, arch.q_dim, arch.kv_dim, 1


def head_widths(arch: Architecture) -> tuple[int, int, int]:
    """The head's widths a token: hidden, vocabulary, and 1."""
    return arch.hidden, arch.vocab, 1


def _dot(c: tuple[float, ...], w: tuple[int, ...]) -> float:
    return sum(x * y for x, y in zip(c, w, strict=True))


def adapted_widths(arch: Architecture, training: Training) -> tuple[int, int, int]:
    """Input and output widths a token passes through the LoRA adapters of a whole model, summed over every
    adapted linear of every layer, and the number of those adapters: the adapters on linears, not those PEFT folds
    into a MoE's expert weights (``memory.params.parameter_targets``), which run no GEMM or operation of their own
    a token. (0, 0, 0) for full fine-tuning."""
    if training.method is Method.FULL or training.lora is None:
        return 0, 0, 0
    targets = lora_targets(arch, training.lora)
    folded = parameter_targets(arch, targets)
    d_in = d_out = adapters = 0
    for stack, xs in arch.block_linears.items():
        for x in xs:
            if x.name in targets and x.name not in folded:
                copies = x.count * arch.layers_of(stack)
                d_in, d_out, adapters = d_in + x.d_in * copies, d_out + x.d_out * copies, adapters + copies
    return d_in, d_out, adapters


def adapter_bytes(arch: Architecture, training: Training) -> tuple[float, float]:
    """Bytes a token moves through PEFT's operations around the LoRA adapters of the whole model, (forward,
    backward): measured for eager PyTorch (``ADAPTER``), derived for a fused stack (module docstring). QLoRA takes
    LoRA's: PEFT's 4-bit layer clones the base output and casts the adapter's back before the sum, the same bytes
    forward and fewer backward (peft ``tuners/lora/bnb.py``)."""
    d_in, d_out, _ = adapted_widths(arch, training)
    if not d_in:
        return 0.0, 0.0
    assert training.lora is not None
    cls, dropout = adapter_class(training.precision), training.lora.dropout > 0
    if training.kernels is Kernels.EAGER:
        (fi, fo), (bi, bo) = ADAPTER[cls][dropout]
        return fi * d_in + fo * d_out, bi * d_in + bo * d_out
    e = training.precision.compute_bytes
    cast = cls == "fp32-adapters"  # (under autocast the adapters' matmuls take and give 16-bit tensors)
    a = 4 if cast else e  # the adapters' input and output element
    forward_in = e + a + 1 if dropout else (e + a if cast else 0)
    backward_in = a + (1 if dropout else 0) + 2 * e
    return forward_in * d_in + (2 * e + a) * d_out, backward_in * d_in + (e + a) * d_out


def frozen_norm_bytes(arch: Architecture, training: Training) -> float:
    """Bytes a token a layer's backward does not move where the norms are frozen (LoRA, QLoRA): each norm weight's
    gradient, the output gradient and the normalised input read, their product written and read back for the sum
    (four elements of the compute dtype a width: measured exactly so for RMSNorm, Llama's and Qwen3's q/k norms
    included; a LayerNorm's bias gradient, not counted, reads the output gradient once more)."""
    if training.method is Method.FULL:
        return 0.0
    qk = arch.q_dim + arch.kv_dim if arch.qk_norm in ("head", "full") else 0  # (a token's q and k, every head)
    return 4.0 * training.precision.compute_bytes * (arch.norms_per_layer * arch.hidden + qk)


def _base_class(training: Training) -> str:
    """The precision class a job's layers run in: a LoRA or QLoRA job's 16-bit base under a mixed recipe runs
    as a bf16 model's (its activations 16-bit from the embedding on), unless ``lora.base_fp32``."""
    frozen = training.method is not Method.FULL and training.lora is not None
    if frozen and training.precision.mixed and not training.lora.base_fp32:
        return precision_class(Precision.BF16_PURE)
    return precision_class(training.precision)


def _eager(arch: Architecture, cls: str) -> tuple[float, float, float, float]:
    w, hw = widths(arch), head_widths(arch)
    family = ALIASES.get(arch.model_type, arch.model_type)
    if family not in EAGER:  # the largest measured, at this job's widths
        measured = [MOE_FALLBACK] if arch.is_moe else [f for f in EAGER if f != MOE_FALLBACK]
        family = max(measured, key=lambda f: _dot(EAGER[f][cls][0], w) + _dot(EAGER[f][cls][1], w))
    (f, b), (hf, hb) = EAGER[family][cls], EAGER_HEAD[family][cls]
    return _dot(f, w), _dot(b, w), _dot(hf, hw), _dot(hb, hw)


def _fused(arch: Architecture, training: Training) -> tuple[float, float, float, float]:
    h, ffn, q, kv, _ = widths(arch)
    norms = arch.norms_per_layer
    rotary = arch.learned_positions == 0 and arch.relative_attention_buckets == 0 and arch.kind is not Kind.ENCODER
    qk = q + kv
    fwd = norms * 2 * h + 2 * 3 * h + (2 * qk if rotary else 0) + (2 * qk if arch.qk_norm else 0)
    bwd = norms * 3 * h + 2 * 3 * h + (2 * qk if rotary else 0) + (3 * qk if arch.qk_norm else 0)
    fwd += (3 if arch.gated_mlp else 2) * ffn
    bwd += (5 if arch.gated_mlp else 3) * ffn
    embed = 2 * h if training.method is Method.FULL else 0  # (frozen embeddings: no gradient to scatter)
    head_fwd = (2 * h if arch.final_norm else 0) + 2 * h + arch.vocab
    head_bwd = (3 * h if arch.final_norm else 0) + embed + 2 * arch.vocab
    e = training.precision.compute_bytes
    return fwd * e, bwd * e, head_fwd * e, head_bwd * e


def score_bytes(arch: Architecture, training: Training) -> tuple[float, float]:
    """Bytes a token moves through eager attention's score tensors per key it attends, summed over the layers,
    (forward, backward); 0 under SDPA and flash kernels, which keep the scores on chip. The matmuls' share is
    derived (two score-sized tensors forward, four backward, in the compute dtype); the softmax's is measured for
    eager PyTorch and derived for a fused stack (2 forward, 3 backward); attention dropout adds a read and a
    write and its one-byte mask each way."""
    if training.attention is not Attention.EAGER:
        return 0.0, 0.0
    e = training.precision.compute_bytes
    heads = arch.heads
    fwd, bwd = 2 * e * heads, 4 * e * heads  # the two matmuls' writes and reads of the score tensors
    if training.kernels is Kernels.FUSED:
        fwd, bwd = fwd + 2 * e * heads, bwd + 3 * e * heads
    else:
        per_fwd, per_bwd, shared_fwd, shared_bwd = EAGER_SCORES[precision_class(training.precision)]
        fwd, bwd = fwd + per_fwd * heads + shared_fwd, bwd + per_bwd * heads + shared_bwd
    if training.dropout is not False and arch.attention_dropout > 0:  # (None: as the model's config says)
        fwd, bwd = fwd + (2 * e + 1) * heads, bwd + (2 * e + 1) * heads
    return fwd * arch.total_layers, bwd * arch.total_layers


def token_bytes(arch: Architecture, training: Training) -> tuple[float, float, float, float]:
    """Bytes a token moves through memory-bound operations: (a layer's forward, its backward, the head's
    forward, its backward), eager (measured) or fused (derived) as the job's ``kernels`` say."""
    if training.kernels is Kernels.FUSED:
        return _fused(arch, training)
    fwd, bwd, head_fwd, head_bwd = _eager(arch, _base_class(training))
    return fwd, bwd - frozen_norm_bytes(arch, training), head_fwd, head_bwd
