"""Bytes saved for backward, per layer and for the logits/loss.

Derived from what the Hugging Face implementations save for backward (``ctx.save_for_backward``
of each op, unique storages), checked tensor by tensor with
``torch.autograd.graph.saved_tensors_hooks`` on tiny models (``ftplan measure``):

* RMSNorm (Llama, Qwen2, Mistral, Gemma, T5): the fp32 upcast of its input (``pow`` saves it),
  ``rsqrt`` (4 bytes a token), the normalised tensor (saved by the weight multiply) and its
  output (saved by the consuming linears). Under autocast with an fp32 residual stream each
  consuming linear saves its own 16-bit cast of the input.
* SDPA / flash attention: q and k after rotary embedding, v, the output and the fp32
  log-sum-exp (``a`` floats a token); grouped-query k/v stay unexpanded. Eager attention saves
  q, k and v expanded to all heads, the fp32 softmax and its 16-bit cast (``a·s`` per token each),
  and a contiguous copy of the output.
* Gated MLP: gate and up outputs, the activation output and the product (4 tensors of ``f``).
* Dropout saves a 1-byte mask per element (and its output, when the next op saves it).

Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", §4)
give the GPT-with-dropout version of this count (``s·b·h·(34 + 5·a·s/h)``); tensor and sequence
parallelism divide every term by ``t`` (their §4.2.3), and full recomputation keeps only each
layer's input plus one layer's working set (their §5).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ftplan.arch import ATTENTION_ROLES, Architecture, Kind, Linear
from ftplan.memory.setup import Attention, Loss, Recompute

# Saved tensors of ``f`` elements inside the activation function, and whether the output
# (rather than the input) is what it saves. NewGELU ("gelu_new", T5 gated-gelu, phi) is composed
# of elementwise ops that save x, tanh(.), 0.5·x and 1 + tanh(.).
_ACT_SAVES = {"gelu_new": 4}
# NewGELU under CUDA autocast, whose fp32 list holds ``pow`` (aten/src/ATen/autocast_mode.h,
# AT_FORALL_FP32): pow keeps an fp32 copy of x, so tanh's output, 1 + tanh(.) and the GELU's output are
# fp32; only 0.5·x stays 16-bit. Bytes an element: 3 fp32 tensors beside that one (a CPU's autocast
# leaves pow alone: measured equal to the 16-bit count on a tiny phi). Measured with the LayerNorm rule
# below: the H200 run's phi-lora-mixed-sdpa case (benchmarks/results/2026-12-04-nvidia-h200), whose
# saved activations were 640.06 MiB above the 16-bit count and the two rules account for 640.0.
_GELU_NEW_CUDA_AUTOCAST_FP32 = 3

# Model types whose attention applies rotary embeddings: one cos and one sin table of
# ``seq × rotary_dim`` in the residual dtype, computed once and shared by every layer (phi and
# GPT-NeoX rotate part of each head: partial_rotary_factor, rotary_pct).
_ROTARY = {
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text",
    "olmo2", "granite", "deepseek_v3", "gpt_oss", "llama4_text", "phi3", "phi", "gpt_neox", "starcoder2",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Dtypes:
    """Bytes per element: ``c`` matmul inputs/outputs, ``r`` the residual stream; ``autocast``:
    a mixed recipe, under which softmax runs in fp32 whatever the model asks."""

    c: int
    r: int
    autocast: bool = False


@dataclass(frozen=True, slots=True)
class Grads:
    """Which weights train. Autograd saves a tensor only for a gradient it must compute, so a
    frozen linear keeps nothing of its input and a frozen norm keeps no normalised tensor.

    ``full``: every weight trains. ``targets``: LoRA-adapted module names. ``rank``: LoRA rank.
    ``adapter_cast``: fp32 adapters over a 16-bit base (PEFT's default under mixed precision):
    each adapter casts its input to fp32 and autocast back, so each keeps its own 16-bit copy.
    ``input_grad``: the layer's input requires grad (not so for the first layer of a model whose
    embeddings are frozen). ``lora_dropout``: PEFT's ``lora_dropout > 0``: each adapter drops its
    own copy of the input and keeps it with the dropout mask. ``on_host``: the step runs on a CPU,
    whose dropout mask has the input's element size (CUDA's ``native_dropout`` keeps one byte an
    element) and whose LayerNorm keeps its statistics in a 16-bit input's dtype (CUDA: fp32).
    ``adapter_fp32``: fp32 adapters over a 16-bit base without autocast (PEFT's default on a bf16
    model): each adapter computes in fp32 on its own fp32 copy of the input. ``param_targets``: the
    targets whose LoRA product PEFT folds into the weight (a MoE's router and fused experts): their
    weight gradient keeps the input, and no adapter output is saved.
    """

    full: bool = True
    targets: frozenset[str] = frozenset()
    rank: int = 0
    adapter_cast: bool = False
    input_grad: bool = True
    lora_dropout: bool = False
    on_host: bool = False
    adapter_fp32: bool = False
    param_targets: frozenset[str] = frozenset()

    def adapter_bytes(self, dt: Dtypes) -> int:
        """Element size of what an adapter saves: fp32 for fp32 adapters without autocast."""
        return 4 if self.adapter_fp32 else dt.c

    def first_layer(self) -> Grads:
        return self if self.full else replace(self, input_grad=False)


FULL = Grads()


def _cuda_autocast(dt: Dtypes, g: Grads) -> bool:
    """A mixed recipe on a GPU: CUDA autocast runs the ops of its fp32 list (LayerNorm, pow, softmax) in
    fp32 on fp32 copies of 16-bit inputs; a CPU's autocast does not for LayerNorm and pow."""
    return dt.autocast and not g.on_host


def _act_bytes(act: str, dt: Dtypes, g: Grads) -> tuple[int, int]:
    """Bytes an element the activation function keeps inside itself, and its output's element size."""
    if act == "gelu_new" and _cuda_autocast(dt, g):
        return 4 * _GELU_NEW_CUDA_AUTOCAST_FP32 + dt.c, 4
    return _ACT_SAVES.get(act, 1) * dt.c, dt.c


def _mask_bytes(dt: Dtypes, g: Grads) -> int:
    """Bytes of a LoRA dropout mask per element: one on CUDA, the dropout input's element size on a
    CPU (fp32 under PEFT's adapter cast, else the compute dtype)."""
    return (4 if g.adapter_cast or g.adapter_fp32 else dt.c) if g.on_host else 1


def _consumers(dt: Dtypes, d_in: int, names: list[str], g: Grads, grad_in: bool = True) -> float:
    """Bytes a token saved for the input shared by the linears ``names`` (and their adapters);
    ``grad_in``: that input requires grad (a dropout on it keeps its mask only then)."""
    if not names:
        return 0.0
    if g.full:
        return dt.r * d_in if dt.r == dt.c else len(names) * dt.c * d_in
    adapted = [x for x in names if x in g.targets and x not in g.param_targets]
    if not adapted:  # a folded adapter's weight gradient keeps the input itself
        return dt.c * d_in if any(x in g.param_targets for x in names) else 0.0
    a = g.adapter_bytes(dt)
    lora_a_out = len(adapted) * a * g.rank
    if g.lora_dropout:
        # each adapter: dropout on its input (fp32 under the adapter cast), the mask kept, and the
        # dropped copy kept by lora_A in the adapter's dtype; nobody keeps the shared input itself
        mask = _mask_bytes(dt, g) if grad_in else 0
        return len(adapted) * (a + mask) * d_in + lora_a_out
    inputs = len(adapted) if g.adapter_cast or g.adapter_fp32 else 1
    return inputs * a * d_in + lora_a_out  # inputs and the LoRA A outputs


# Families whose SDPA attention hands the output projection a copy of the attention output rather
# than the output itself, so full fine-tuning keeps both (`ftplan measure`, CPU; CUDA unverified).
_O_INPUT_COPY = ("phi", "phi3", "gpt_neox")


def _norm_own(arch: Architecture, dt: Dtypes, d: int, rows: int, in_bytes: int, g: Grads, grad_in: bool) -> float:
    """Bytes a token saved inside one norm over ``d`` elements in ``rows`` rows (``d/rows`` each) whose
    input has ``in_bytes`` an element; ``grad_in``: its input requires grad."""
    grad = grad_in or g.full
    if arch.norm == "layernorm":
        # input, mean and rstd: fp32 statistics on CUDA; a CPU keeps them in a 16-bit input's dtype
        # (measured: the starcoder2 cases of benchmarks/measured_grid.yaml). CUDA autocast runs LayerNorm
        # on an fp32 copy of a 16-bit input, which it keeps (see _GELU_NEW_CUDA_AUTOCAST_FP32)
        if _cuda_autocast(dt, g):
            in_bytes = 4
        stats = 2 * in_bytes if g.on_host and in_bytes < 4 else 8
        return in_bytes * d + stats * rows if grad else 0.0
    # RMSNorm: pow keeps the fp32 upcast of the input and rsqrt one fp32 a row; what the weight's
    # gradient keeps depends on where the norm casts back
    # Gemma scales the fp32 normalised tensor by (1 + weight), OLMo 2 and gpt-oss by the weight, before
    # casting back: a trained weight's gradient keeps that fp32 tensor (measured: the gemma and olmo2
    # cases; Gemma's fp32 1 + weight, kept for the input's gradient, is a constant: _norm_constant).
    # Llama casts first and keeps the cast.
    kept = 4 if arch.norm_style in ("gemma", "olmo") else in_bytes
    return (4 * d + 4 * rows if grad else 0) + (kept * d if g.full else 0)


def _norm_constant(arch: Architecture, width: int, grad_in: bool) -> int:
    """Bytes one norm keeps whatever the tokens: Gemma's fp32 ``1 + weight`` (``width`` elements), which
    the multiply keeps for its input's gradient."""
    return 4 * width if arch.norm_style == "gemma" and arch.norm == "rmsnorm" and grad_in else 0


def layer_constant_bytes(arch: Architecture, g: Grads, stack: str = "main") -> int:
    """Bytes one layer of ``stack`` saves independent of the tokens: Gemma's :func:`_norm_constant` of its
    norms (the norm before attention when its input requires grad, the ones after it when the attention's
    output does, the q/k norms when their projections' outputs do)."""
    if arch.norm_style != "gemma":
        return 0
    h = arch.hidden
    blk = arch.block_linears[stack] if stack in arch.block_linears else next(iter(arch.block_linears.values()))
    roles = {x.role: x.name for x in blk}
    upstream = g.full or g.input_grad
    attn_trains = upstream or any(x.name in g.targets for x in blk if x.role in ATTENTION_ROLES)
    n = _norm_constant(arch, h, upstream) + (arch.norms_per_layer - 1) * _norm_constant(arch, h, attn_trains)
    if arch.qk_norm:
        for role in ("q", "k"):
            n += _norm_constant(arch, arch.head_dim, upstream or roles.get(role) in g.targets)
    return n


def head_constant_bytes(arch: Architecture, seq_len: int, embed_trains: bool) -> int:
    """Bytes the head saves once a step, whatever the micro-batch: the final norm's constant
    (:func:`_norm_constant`), and the int64 position (and token-type) ids a learned position table
    keeps when it trains (GPT-2, BERT), measured on the grid."""
    n = _norm_constant(arch, arch.hidden, True) if arch.final_norm and arch.has_head else 0
    if arch.learned_positions and embed_trains and arch.has_embedding:
        # BERT reads its positions as a view of its registered (1 × max_position_embeddings) buffer,
        # which keeps the buffer whole; it gathers its token-type ids (1 × seq_len) from another
        n += 8 * (seq_len if arch.kind is Kind.DECODER else arch.learned_positions)
        n += 8 * seq_len if arch.token_types else 0
    return n


def _norm(arch: Architecture, dt: Dtypes, consumers: list[str], g: Grads, input_grad: bool | None = None) -> float:
    """Bytes a token saved by one norm and by its consumers' inputs."""
    h = arch.hidden
    grad_in = g.input_grad if input_grad is None else input_grad
    own = _norm_own(arch, dt, h, 1, dt.r, g, grad_in)
    if arch.model_type in ("t5", "mt5") and dt.r != 4 and (grad_in or g.full):
        own += dt.r * h  # T5LayerNorm scales the 16-bit input (not its fp32 upcast): that is kept too
    return own + _consumers(dt, h, consumers, g, grad_in or g.full)


def _qk_norm(arch: Architecture, dt: Dtypes, g: Grads, roles: dict[str, str], nope: bool = False) -> float:
    """Bytes a token saved by the RMSNorms on q and k (Qwen3 and Gemma 3 per head, OLMo 2 over the
    whole projection), each only when its projection's output requires grad. Llama 4's L2 norm (per
    head, no weight, only in its rotary layers) keeps the fp32 input and the rsqrt alone."""
    if not arch.qk_norm or (nope and arch.qk_norm == "l2"):
        return 0.0
    upstream = g.full or g.input_grad
    n = 0.0
    for role, d, heads in (("q", arch.q_dim, arch.heads), ("k", arch.kv_dim, arch.kv_heads)):
        if upstream or roles.get(role) in g.targets:
            if arch.qk_norm == "l2":
                n += 4 * d + 4 * heads
            else:
                n += _norm_own(arch, dt, d, heads if arch.qk_norm == "head" else 1, dt.c, g, True)
    return n


def _attention(
    arch: Architecture,
    dt: Dtypes,
    attention: Attention,
    kv_len: int,
    dropout: bool,
    g: Grads,
    mask_len: int = 0,
    blk: list[Linear] | None = None,
    nope: bool = False,
) -> float:
    """Bytes a query token saved by one attention core and by the output projection's input.
    ``mask_len``: SDPA gets an explicit mask over that many keys (0: none, it runs causal); ``blk``: the
    layer's linears (default: the first stack's); ``nope``: a layer without rotary embeddings (Llama 4)."""
    blk = blk if blk is not None else arch.block_linears[next(iter(arch.block_linears))]
    roles = {x.role: x.name for x in blk}
    qkv_names = [roles[r] for r in ("q", "k", "v", "qkv", "q_a", "q_b", "kv_a", "kv_b") if r in roles]
    o = [roles["o"]]
    if not (g.full or g.input_grad or any(x in g.targets for x in qkv_names)):
        return _consumers(dt, arch.o_dim, o, g, grad_in=False)  # nothing upstream trains: only o's adapter saves
    if arch.mla:
        return _mla(arch, dt, attention, kv_len, dropout, g, roles)
    return _qk_norm(arch, dt, g, roles, nope) + _core(arch, dt, attention, kv_len, dropout, g, mask_len, o, roles)


def _mla(
    arch: Architecture, dt: Dtypes, attention: Attention, kv_len: int, dropout: bool, g: Grads, roles: dict[str, str]
) -> float:
    """Bytes a query token saved by multi-head latent attention (DeepSeek-V3, transformers 5), measured on
    the grid: the norms of the compressed q and kv (each kept as Llama's RMSNorm keeps its input; an
    fp32 kv keeps the whole compressed tensor it is a view of), their up-projections' inputs, then the
    attention over per-head keys of head_dim and values of v_head_dim. Eager attention keeps q, the
    keys, a copy of the values and the probabilities; CUDA's SDPA (memory-efficient kernel, read from
    the source) q, k, the up-projection's output (values are a view of it), the attention output and
    the log-sum-exp; a CPU's SDPA falls back to its math path for unequal head dims, which keeps fp32
    copies of q, kᵀ, v and the probabilities."""
    c, a, qk, o = dt.c, arch.heads, arch.q_dim, arch.o_dim
    up = g.full or g.input_grad
    n = 0.0
    if arch.q_lora_rank:
        qr = arch.q_lora_rank
        q_grad = up or roles["q_a"] in g.targets
        n += _norm_own(arch, dt, qr, 1, c, g, q_grad) + _consumers(dt, qr, [roles["q_b"]], g, q_grad)
    kvr = arch.kv_lora_rank
    kv_grad = up or roles["kv_a"] in g.targets
    n += _norm_own(arch, dt, kvr, 1, c, g, kv_grad) + (4 * arch.rope_head_dim if c == 4 and kv_grad else 0)
    n += _consumers(dt, kvr, [roles["kv_b"]], g, kv_grad)
    kv_b_out = c * a * (arch.head_dim - arch.rope_head_dim + arch.v_head_dim)
    o_in = _consumers(dt, o, [roles["o"]], g, True)
    if attention is Attention.EAGER:  # the matmul with the probabilities copies the values out of that output
        return n + 2 * c * qk + c * arch.v_dim + _probs(dt, a, kv_len, dropout, arch.softmax_upcast) + o_in
    if g.on_host and arch.head_dim != arch.v_head_dim:
        return n + 4 * (2 * qk + a * kv_len + arch.v_dim) + o_in
    # in 16 bits the output projection reads a copy of the attention output, which it keeps beside the kernel's own
    # (measured on the H200 run: deepseek-v3-full-bf16pure-sdpa kept one such tensor a layer more than c·o, the
    # fp32 case of the CPU grid none)
    copy = c * o if g.full and c != 4 else 0.0
    return n + 2 * c * qk + kv_b_out + 4 * a + (c * o + copy if g.full else o_in + c * o)


def _core(
    arch: Architecture,
    dt: Dtypes,
    attention: Attention,
    kv_len: int,
    dropout: bool,
    g: Grads,
    mask_len: int,
    o: list[str],
    roles: dict[str, str],
) -> float:
    """Bytes a query token saved by the attention core and the output projection's input."""
    c, q, kv = dt.c, arch.q_dim, arch.kv_dim
    a = arch.heads
    if attention is Attention.SDPA:
        v_store = c * (q + 2 * kv) if arch.fused_qkv else c * kv  # v is a view when fused
        k_store, q_store = c * kv, c * q
        if arch.fused_qkv and arch.model_type not in _ROTARY:  # GPT-2: q and k are views of c_attn's output too
            k_store = q_store = 0
        if mask_len:
            # With a mask, transformers expands grouped k/v to every head (repeat_kv: a copy, except a
            # view when there is one k/v head) and SDPA converts the boolean mask to an additive one in
            # the query's dtype, which it keeps: batch × 1 × s × mask_len per layer (measured: the grid)
            if 1 < arch.kv_heads < a:
                k_store = v_store = c * q
            v_store += c * mask_len
        saved = q_store + k_store + v_store + 4 * a + c * q  # q, k, v, log-sum-exp, output (= o_proj's input)
        if g.full and arch.model_type in _O_INPUT_COPY:
            saved += c * q  # o_proj's input is a copy of the output, kept as well (measured on a CPU)
        if not g.full and o[0] in g.targets:  # the adapter's A output, and its own input copy: an fp32
            ab = g.adapter_bytes(dt)  # adapter's cast, or the dropped copy (and the dropout mask) of lora_dropout
            saved += ab * g.rank
            if g.lora_dropout:
                saved += (ab + _mask_bytes(dt, g)) * q
            elif g.adapter_cast or g.adapter_fp32:
                saved += ab * q
            elif arch.model_type in _O_INPUT_COPY:
                saved += c * q  # lora_A keeps o_proj's input, which is a copy of the output here
        return saved
    # Eager: q, k and v expanded to all heads, probabilities, then a contiguous output copy
    # that only o_proj (or its adapter) saves. Each matmul keeps an operand only for the other's
    # gradient: a first layer (input without gradient) whose k is not adapted keeps no q.
    up = g.full or g.input_grad
    qg = up or any(roles.get(r) in g.targets for r in ("q", "qkv"))
    kg = up or any(roles.get(r) in g.targets for r in ("k", "qkv"))
    # gpt-oss asks for its softmax in the scores' own dtype, which autocast keeps
    probs = _probs(replace(dt, autocast=False) if arch.attn_sinks else dt, a, kv_len, dropout, arch.softmax_upcast)
    if arch.attn_softcap:  # Gemma 2 caps the scores with tanh, which keeps its output
        probs += c * a * kv_len
    if arch.attn_sinks:  # gpt-oss: the sink column joins the softmax, and the max taken before it (int64)
        probs += c * a + 8 * a
    qk = (c * q if kg else 0) + (c * q if qg else 0)
    return qk + c * q + probs + (c * q if g.full else _consumers(dt, q, o, g))


def _probs(dt: Dtypes, heads: int, kv_len: int, dropout: bool, upcast: bool = True) -> float:
    """Attention probabilities a query token saves: the softmax output (fp32 where the model
    upcasts, or under autocast; else in the compute dtype), the 16-bit cast or dropout output the
    next matmul reads, and the dropout mask."""
    fp32 = dt.c == 4 or upcast or dt.autocast
    n = (4 if fp32 else dt.c) * heads * kv_len
    if (fp32 and dt.c != 4) or dropout:
        n += dt.c * heads * kv_len
    if dropout:
        n += heads * kv_len
    return n


def eager_backward_bytes(arch: Architecture, dt: Dtypes, g: Grads, dropout: bool, kv_len: int) -> float:
    """Bytes a query token holds above its saves while eager attention's backward runs, at its widest
    moment: the softmax's backward, which reads the gradient of its output and writes that of its input
    (each in the softmax's dtype, over every head and key), once the final matmul has released the
    tensor it kept, if that is not the softmax's own output (a 16-bit cast, or dropout's output); and
    the gradient of the values that matmul wrote, alive until the value projection's backward runs
    (derived from autograd releasing a node's saved tensors after it runs; measured: the H200 run's
    bert-full-mixed-dropout-eager case, whose peak was 134.5 MiB above the model's widest MLP gradient
    and the score gradients account for 136.0, benchmarks/results/2026-12-04-nvidia-h200)."""
    fp32 = dt.c == 4 or arch.softmax_upcast or _cuda_autocast(dt, g)
    e = 4 if fp32 else dt.c
    released = dt.c if (fp32 and dt.c != 4) or dropout else 0
    return (2 * e - released) * arch.heads * kv_len + dt.c * arch.q_dim


def _mlp(
    arch: Architecture, dt: Dtypes, act: str, dropout: bool, g: Grads, input_grad: bool, blk: list[Linear] | None = None
) -> float:
    """Bytes a token saved inside the feed-forward block (its input's saves are the norm's); ``blk``: the
    layer's linears (default: the first stack's; a MoE model's dense layers have a stack of their own)."""
    blk = blk if blk is not None else arch.block_linears[next(iter(arch.block_linears))]
    roles = {x.role: x.name for x in blk}
    c, h = dt.c, arch.hidden
    f = next(x.d_in for x in blk if x.role == "down")
    act_bytes, act_out = _act_bytes(act, dt, g)
    inner = act_bytes * f
    up_adapted = any(roles[r] in g.targets for r in ("gate", "up", "gate_up") if r in roles)
    down = _consumers(dt, f, [roles["down"]], g, input_grad or up_adapted)
    if arch.routing == "llama4" and "router" in roles:
        return _llama4_moe(arch, dt, g, roles, input_grad)
    if "router" in roles:
        k = arch.experts_per_token
        experts = g.full or any(roles[r] in g.targets for r in ("gate", "up", "gate_up") if r in roles)
        # Per routed token: the gathered input (if the experts train), the gate/up output and the
        # activation output (the product's operands), the product (if the down projection trains or is
        # adapted) and the expert output, which the routing-weight multiply keeps.
        expert_out = c * h  # kept by the routing-weight multiply when the weights need a gradient
        if arch.routing == "sigmoid":
            rw = dt.c if dt.autocast else 4  # the routing weights: fp32, 16-bit under autocast
            if g.full or input_grad or roles["router"] in g.targets:
                router = _sigmoid_router(arch, dt, g, roles) + (24 + rw) * k  # and the expert loop's indices
            else:  # the router needs no gradient: the loop keeps its weights and one index a routed token
                router, expert_out = (8 + rw) * k, 0
        elif arch.routing == "topk-softmax":
            # gpt-oss (measured on the grid): the router keeps the top-k indices and the softmax over the
            # chosen logits; each routed copy, three int64 indices (four when the expert biases train, whose
            # gather keeps one) and its weight, the fused gate/up output and the clamped SwiGLU's four
            # intermediates (clamped gate, sigmoid, up + 1, their product). When the routing weights need no
            # gradient (LoRA on the experts of a first layer) the router keeps nothing, a routed copy one
            # index, and the weight multiply not the expert output.
            weights_grad = g.full or input_grad or roles["router"] in g.targets
            indices = (24 if weights_grad else 8) + (8 if g.full else 0)
            router = (8 * k + c * k if weights_grad else 0) + (indices + c) * k
            expert_out = c * h if weights_grad else 0
            inner = 4 * c * f
        else:
            # Mixtral and Qwen: fp32 softmax over the experts, int64 top-k indices, the renormalised top-k
            # weights (sum and clone), the sort permutations and their inverse (4 + 32·k bytes). Without
            # renormalisation (Qwen's norm_topk_prob: false) the weights are not divided, which keeps 8·k
            # bytes fewer (measured: the qwen2-moe cases).
            router = 4 * arch.experts + 8 * k + 4 + 32 * k - (0 if arch.norm_topk else 8 * k)
        per_routed = (c * h if experts else 0) + inner + 2 * c * f + expert_out
        shared = _shared_expert(arch, dt, g, roles, input_grad)
        if not (input_grad or experts or roles["down"] in g.targets or roles["router"] in g.targets):
            return shared  # nothing in the routed experts needs a gradient
        routed = k * (per_routed + (c * f if g.full else down))
        if arch.local_experts:
            routed += k * _expert_parallel_bytes(arch, dt, per_routed - expert_out + (c * f if g.full else down))
        return router + routed + shared
    if not (input_grad or g.full):  # nothing upstream trains: only adapters save
        return down
    if arch.gated_mlp:
        saved = inner + (act_out + c) * f + down  # act input(s), act output and up output (the product's operands)
    elif act == "relu":
        saved = c * f + (0 if g.full else down)  # relu saves its output, which is the down projection's input
    else:
        saved = inner + down
    if dropout and arch.kind is Kind.ENCODER_DECODER:
        saved += f + c * f  # T5 dropout inside the feed-forward: mask and output (saved by wo)
    return saved


def _expert_parallel_bytes(arch: Architecture, dt: Dtypes, row: float) -> float:
    """What a routed copy saves beyond the one-process count under expert parallelism (transformers'
    AllToAllEP, traced op by op on the grid): the rank that routes a token keeps two int64 indices (the
    rows it sends, the order it puts them back in), the routing weights and the experts' output it gets
    back; the rank whose experts run a row keeps the experts' saves (``row``) for its own rows, one gather
    index, one inverse permutation, the unit weights it runs them with and a bool mask — in place of the
    one-process loop's three indices and gathered weights. So each copy adds 9 + c bytes, and the experts'
    row saves scale with the rows a rank's experts take (``expert_load``, 1: a balanced share)."""
    return (arch.expert_load - 1) * (row + 17 + dt.c) + 9 + dt.c


def _llama4_moe(arch: Architecture, dt: Dtypes, g: Grads, roles: dict[str, str], input_grad: bool) -> float:
    """Bytes a token saved by Llama 4's MoE block as transformers 5 runs it (Llama4TextMoe), measured on the
    grid: the router keeps its top-k indices (int64) and the fp32 sigmoid of the chosen logits; then every
    expert runs on every token (the input repeated once an expert, scaled by that expert's score, zero
    where not chosen) as batched matmuls, so per expert a token keeps: the repeated input and the score
    (the multiply's operands), the scaled input (the experts' weight gradient), the gate/up output, the
    activation's output and the product (the down projection's weight gradient). Beside it, the shared
    expert, a dense gated MLP."""
    c, r, h, e, f = dt.c, dt.r, arch.hidden, arch.experts, arch.ffn
    router_grad = input_grad or g.full or roles["router"] in g.targets
    experts = g.full  # PEFT does not reach transformers 5's fused Llama 4 experts
    n = _shared_expert(arch, dt, g, roles, input_grad)
    if router_grad:
        n += 8 * arch.experts_per_token + 4 * e + r * e * h  # indices, sigmoid output, repeated input
    if input_grad or g.full:
        n += c * e  # the scores the repeated input is multiplied by
    if input_grad or experts:
        n += 3 * c * e * f  # gate/up output, activation output
    if experts:
        n += c * e * h + c * e * f  # the scaled input and the product, for the experts' weight gradients
    return n


def _sigmoid_router(arch: Architecture, dt: Dtypes, g: Grads, roles: dict[str, str]) -> float:
    """Bytes a token saved by DeepSeek-V3's router (measured on the grid): its fp32 input copy when its
    weight trains in a 16-bit model, the sigmoid scores (fp32; 16-bit under autocast, which casts the
    router's fp32 linear back), the top-k indices and, when the weights are renormalised, the gathered
    weights and their sum. The group choice (each group's top two, the chosen groups, the mask of allowed
    experts) leads to no gradient: its saves are freed as the router returns."""
    e, k = arch.experts, arch.experts_per_token
    f = dt.c if dt.autocast else 4  # autocast runs the router's fp32 linear in 16 bits, and what follows
    n = f * e + 8 * k + (f * k + f if arch.norm_topk else 0)
    if dt.c != 4 and not dt.autocast and (g.full or roles["router"] in g.targets):
        n += 4 * arch.hidden
    return n


def _shared_expert(arch: Architecture, dt: Dtypes, g: Grads, roles: dict[str, str], input_grad: bool) -> float:
    """Bytes a token saved by a shared expert (Qwen2-MoE): a dense gated MLP of its own width, and the
    sigmoid gate that scales its output (the gate's output and the expert's output, kept by the multiply)."""
    if not arch.shared_ffn:
        return 0.0
    c, h, sf = dt.c, arch.hidden, arch.shared_ffn
    up_adapted = any(roles[r] in g.targets for r in ("shared_gate", "shared_up"))
    out_grad = input_grad or g.full or up_adapted or roles["shared_down"] in g.targets
    gate_grad = input_grad or g.full or roles.get("shared_router") in g.targets
    down = _consumers(dt, sf, [roles["shared_down"]], g, input_grad or up_adapted)
    saved = (3 * c * sf if input_grad or g.full or up_adapted else 0) + down  # act input and output, up output
    if not arch.shared_gate:  # DeepSeek-V3: the shared experts' output is added as it is
        return saved
    # the multiply keeps the sigmoid's output for the expert's gradient, the expert's output for the gate's
    return saved + (c if out_grad else 0) + (c * h if gate_grad else 0)


def _act_name(arch: Architecture) -> str:
    if arch.model_type in ("t5", "mt5"):
        return "gelu_new" if arch.gated_mlp else "relu"
    if arch.model_type in ("phi", "gpt2"):
        return "gelu_new"
    return "silu"


def _block_inputs(arch: Architecture, stack: str, g: Grads) -> tuple[list[Linear], list[str], list[str], bool]:
    """A layer's linears, those that read the attention block's input and the MLP's, and whether
    anything in the attention block trains (then the MLP's input needs a gradient)."""
    blk = arch.block_linears[stack if stack in arch.block_linears else next(iter(arch.block_linears))]
    attn_in = [x.name for x in blk if x.role in ("q", "k", "v", "qkv", "q_a", "kv_a") and x.stack != "cross"]
    mlp_in = [x.name for x in blk if x.role in ("gate", "up", "gate_up", "router")]
    if any(x.role == "router" for x in blk):  # the router and a shared expert read the input; experts gather theirs
        mlp_in = mlp_in[:1] + [x.name for x in blk if x.role in ("shared_gate", "shared_up", "shared_router")]
    o_names = [x.name for x in blk if x.role in ("o", "q_b", "kv_b")]
    attn_trains = g.full or g.input_grad or any(x in g.targets for x in attn_in + o_names)
    return blk, attn_in, mlp_in, attn_trains


def layer_bytes_per_token(
    arch: Architecture,
    stack: str,
    dt: Dtypes,
    attention: Attention,
    seq_len: int,
    enc_len: int,
    dropout: bool,
    recompute: Recompute,
    grads: Grads = FULL,
    mask_len: int = 0,
    nope: bool = False,
) -> float:
    """Bytes one token saves in one layer of ``stack`` with no recomputation (or selective);
    ``mask_len``: the keys of an explicit SDPA attention mask (0: none); ``nope``: the layer has no
    rotary embeddings (Llama 4)."""
    h = arch.hidden
    g = grads
    att = attention
    if recompute is Recompute.SELECTIVE:
        att = Attention.SDPA  # selective recomputation keeps only the core-attention inputs
        mask_len = 0
    blk, attn_in, mlp_in, attn_trains = _block_inputs(arch, stack, g)
    post = arch.norm_placement == "post"  # OLMo 2: the sublayers read the residual stream, norms follow them
    if arch.parallel_residual and arch.norms_per_layer == 1:  # phi: one norm feeds attention and MLP
        total = _norm(arch, dt, attn_in + mlp_in, g)
    elif post:
        total = _consumers(dt, h, attn_in, g, g.input_grad or g.full)
    else:
        total = _norm(arch, dt, attn_in, g)
    total += _attention(arch, dt, att, seq_len, dropout, g, mask_len, blk, nope)
    if stack == "decoder":  # cross-attention: q, output and probabilities over the encoder
        total += _norm(arch, dt, [x.name for x in blk if x.stack == "cross" and x.role == "q"], g, attn_trains)
        total += 2 * dt.c * arch.q_dim if attn_trains else 0
        if attn_trains:
            probs = _probs(dt, arch.heads, enc_len, dropout, arch.softmax_upcast)
            total += probs if att is Attention.EAGER else 4 * arch.heads
    if arch.norm_placement != "pre":  # post-attention and post-feedforward norms (Gemma 2/3, OLMo 2)
        total += 2 * _norm(arch, dt, [], g, attn_trains)
    total += mlp_side_bytes_per_token(arch, stack, dt, dropout, g)
    if dropout and arch.hidden_dropout > 0:
        total += 2 * h  # residual dropout masks after attention and MLP
    return total


def mlp_side_bytes_per_token(arch: Architecture, stack: str, dt: Dtypes, dropout: bool, grads: Grads = FULL) -> float:
    """Bytes one token saves in one layer's feed-forward side: the MLP and what its input keeps (the norm
    before it, or its consumers' copies), which backward releases before it reaches the attention."""
    h, g = arch.hidden, grads
    blk, _, mlp_in, attn_trains = _block_inputs(arch, stack, g)
    if arch.norm_placement == "post":
        return _consumers(dt, h, mlp_in, g, attn_trains) + _mlp(arch, dt, _act_name(arch), dropout, g, attn_trains, blk)
    if not arch.parallel_residual:  # the MLP reads the attention block's output
        return _norm(arch, dt, mlp_in, g, attn_trains) + _mlp(arch, dt, _act_name(arch), dropout, g, attn_trains, blk)
    # Parallel residual: the MLP reads the layer input, so it needs gradients only when that
    # input does. GPT-NeoX's second norm shares the first one's saved input; it adds its own
    # mean and rstd and its output (saved by its consumers).
    mlp_grad = g.full or g.input_grad
    n = 0.0
    if arch.norms_per_layer > 1:  # (under CUDA autocast each norm keeps its own fp32 copy of a 16-bit input)
        shared = dt.r * h if dt.r == 4 or not _cuda_autocast(dt, g) else 0
        n += _norm(arch, dt, mlp_in, g) - (shared if mlp_grad else 0)
    return n + _mlp(arch, dt, _act_name(arch), dropout, g, mlp_grad, blk)


def gathered_bytes_per_token(arch: Architecture, stack: str, dt: Dtypes, grads: Grads = FULL) -> float:
    """Bytes a token saves, in one layer of ``stack``, for the inputs of the linears that read a norm's
    output (q/k/v, and gate/up or the router): the input tensor parallelism all-gathers over the sequence
    before its column-parallel linears; the same terms :func:`layer_bytes_per_token` counts."""
    h, g = arch.hidden, grads
    _, attn_in, mlp_in, attn_trains = _block_inputs(arch, stack, g)
    grad_in = g.input_grad or g.full
    if arch.parallel_residual and arch.norms_per_layer == 1:  # one norm feeds both
        return _consumers(dt, h, attn_in + mlp_in, g, grad_in)
    mlp_grad = grad_in if arch.parallel_residual else attn_trains or g.full
    return _consumers(dt, h, attn_in, g, grad_in) + _consumers(dt, h, mlp_in, g, mlp_grad)


def ulysses_bytes_per_token(arch: Architecture, stack: str, dt: Dtypes, grads: Grads, cp: int) -> float:
    """Bytes a local token adds to one layer of ``stack`` under DeepSpeed-Ulysses over ``cp`` ranks.

    The all-to-alls give attention the whole sequence for ``heads / cp`` heads, so the attention core saves
    what it saves for ``seq_len / cp`` tokens of all heads; two things differ (measured: ``ftplan measure
    --nproc`` on benchmarks/measured_grid_dist.yaml's ulysses cases): the output projection's input is the
    all-to-all's result, not a view of the attention output, so it is kept beside it; and where cp exceeds
    the key/value heads each rank repeats a head for its share of the queries (one head of the whole
    sequence, not ``kv_heads / cp``)."""
    blk, _, _, attn_trains = _block_inputs(arch, stack, grads)
    o_names = [x.name for x in blk if x.role == "o"]
    n = dt.c * arch.q_dim if grads.full or any(x in grads.targets for x in o_names) else 0.0
    if attn_trains and cp > arch.kv_heads:
        n += 2 * dt.c * arch.head_dim * (cp - arch.kv_heads)
    return n


def head_gathered_bytes_per_token(arch: Architecture, dt: Dtypes, lm_head_trains: bool) -> float:
    """Bytes a token saves for the lm_head's input (the final norm's output), which tensor parallelism
    gathers over the sequence before the vocabulary-parallel head (see :func:`head_bytes_per_token`)."""
    if not (arch.final_norm and arch.has_head and lm_head_trains and arch.kind is not Kind.ENCODER):
        return 0.0
    return dt.r * arch.hidden if dt.r == dt.c else dt.c * arch.hidden


def token_id_bytes_per_token(arch: Architecture, embed_trains: bool) -> float:
    """The int64 token ids a trained embedding keeps (every tensor-parallel rank keeps them whole)."""
    return 8.0 if embed_trains and arch.has_embedding else 0.0


def cross_kv_bytes_per_sequence(arch: Architecture, dt: Dtypes, enc_len: int) -> float:
    """Keys and values each decoder layer projects from the encoder output (per sequence)."""
    return 2 * dt.c * arch.kv_dim * enc_len


def head_bytes_per_token(
    arch: Architecture,
    dt: Dtypes,
    dropout: bool,
    g: Grads = FULL,
    embed_trains: bool = True,
    lm_head_trains: bool = True,
) -> float:
    """Embedding-side and final-norm saves (token ids, embedding norm/dropout, final norm).

    The embedding keeps its int64 token ids only when it trains; the final norm's output is
    kept only when the lm_head trains.
    """
    if not arch.has_embedding:  # a later pipeline stage: no token ids, no embedding dropout
        embed_trains, dropout = False, False
    n = token_id_bytes_per_token(arch, embed_trains)
    if dropout and arch.embed_dropout > 0:
        n += arch.hidden  # the embedding dropout's one-byte mask (the first layer keeps its output)
    if arch.kind is Kind.ENCODER:
        # A post-norm encoder's layers each count the norm before them (the first layer: the embedding
        # norm); the last layer's own output norm, which feeds the trained head, is counted here. Then the
        # pooler's [CLS] slice, a view that keeps the last layer's output when the pooler trains on it in
        # place (under autocast it keeps only a 16-bit copy of the slice).
        n += _norm(arch, dt, [], g, True) + (arch.hidden if dropout else 0)
        n += dt.r * arch.hidden if g.full and dt.r == dt.c else 0
    if arch.final_norm and arch.has_head:
        n += _norm(arch, dt, [], g, True)
        if lm_head_trains and arch.kind is not Kind.ENCODER:
            n += dt.r * arch.hidden if dt.r == dt.c else dt.c * arch.hidden
    return n


def rotary_bytes(arch: Architecture, dt: Dtypes, seq_len: int) -> float:
    """Bytes of the rotary cos/sin tables the attention layers save (once per step): one pair per
    kind of layer with its own rotary base (Gemma 3: local and global), in fp32 where the model keeps
    them so (OLMo 2 does not cast them to the activations' dtype)."""
    if arch.model_type not in _ROTARY:
        return 0.0
    if arch.model_type == "llama4_text":  # one complex64 table of half a head a position
        return 8.0 * seq_len * arch.head_dim / 2 if not all(arch.nope_layers) else 0.0
    size = 4 if arch.model_type == "olmo2" else dt.r
    return 2.0 * seq_len * (arch.rotary_dim or arch.head_dim) * size * arch.rotary_tables


# torchtune CEWithChunkedOutputLoss: the model emits its logits in 8 chunks (num_output_chunks).
CHUNKED_LOSS_CHUNKS = 8


def loss_bytes_per_token(
    arch: Architecture, dt: Dtypes, loss: Loss, output_held: bool = False, vocab_parallel: bool = False
) -> float:
    """Peak bytes a token needs around the loss, on top of the layers' saved activations.

    * standard: the lm_head output (``c`` bytes per vocabulary entry), its fp32 upcast where
      the model's loss upcasts (Hugging Face causal LMs; not T5), and the log-softmax output
      saved for backward; in backward the NLL gradient and the log-softmax gradient exist beside
      that saved output, so the peak is ``max(c + u + u, 3u)·V`` with ``u`` the loss dtype.
    * chunked (torchtune ``CEWithChunkedOutputLoss``): 16-bit logits for all tokens, each of
      the 8 chunks upcast in turn; every chunk's fp32 log-softmax stays saved:
      ``(c + 4 + 4/8)·V`` in forward, ``(4 + 2·4/8 + c/8)·V`` in backward.
    * fused (Liger-Kernel fused linear cross-entropy): logits exist for one chunk of
      ``⌈T / ⌈V/h⌉⌉`` tokens at a time (16-bit logits and fp32 gradient), plus the gradient
      of the hidden states computed in forward (``c·h`` a token). The chunk is counted as
      ``T / ⌈V/h⌉`` tokens here and one token more in :func:`loss_constant_bytes` (a bound on the
      rounding up, which keeps the moment a line in the micro-batch).

    ``output_held``: the model's output stays alive through the loss's backward, as the last pipeline stage
    keeps it (torch.distributed.pipelining's forward cache, for the stage's backward): the logits (or a
    fused loss's hidden states) are added to the backward's peak.

    ``vocab_parallel``: the standard loss over vocabulary-sharded logits (torch's ``loss_parallel``, which tensor
    parallelism's DTensor plans run): its log-softmax holds the shifted logits and their exponential beside
    the upcast, and its backward computes ``(one-hot + exp(log-softmax)) · grad``, holding four fp32 logits
    (``torch/distributed/tensor/parallel/loss.py``; measured: benchmarks/measured_grid_dist.yaml's tp cases).
    """
    if arch.kind is Kind.ENCODER or not arch.has_head:
        return 0.0
    v, c = arch.vocab, dt.c
    forward = loss_forward_bytes_per_token(arch, dt, loss)
    if vocab_parallel and loss is Loss.STANDARD:
        u = 4 if arch.loss_upcast else c
        return max(forward + u * v, 4 * u * v + _softcap_saved(arch, dt, loss))
    if loss is Loss.FUSED:
        return forward + (c * arch.hidden if output_held else 0)
    if loss is Loss.CHUNKED:
        k = CHUNKED_LOSS_CHUNKS
        held = c * v * (1 - 1 / k) if output_held else 0.0
        return max(forward, (4 + 8 / k + c / k) * v + held + _softcap_saved(arch, dt, loss))
    u = 4 if arch.loss_upcast else c
    return max(forward, 3 * u * v + (c * v if output_held else 0) + _softcap_saved(arch, dt, loss))


def loss_forward_bytes_per_token(arch: Architecture, dt: Dtypes, loss: Loss) -> float:
    """The forward part of :func:`loss_bytes_per_token`: what a token holds around the loss as its forward
    ends (the logits, their upcast and the log-softmax; a chunked loss's chunks; a fused loss's chunk)."""
    if arch.kind is Kind.ENCODER or not arch.has_head:
        return 0.0
    v, c = arch.vocab, dt.c
    if loss is Loss.FUSED:
        return (c + 4) * v / -(-v // arch.hidden) + c * arch.hidden
    if loss is Loss.CHUNKED:
        return (c + 4 + 4 / CHUNKED_LOSS_CHUNKS) * v + _softcap_saved(arch, dt, loss)
    u = 4 if arch.loss_upcast else c
    return c * v + (u * v if u != c else 0) + u * v + _softcap_saved(arch, dt, loss)


def loss_constant_bytes(arch: Architecture, dt: Dtypes, loss: Loss) -> float:
    """Bytes around the loss that do not grow with the tokens: a fused loss's chunk rounded up by at
    most one token (its 16-bit logits and fp32 gradient)."""
    if loss is not Loss.FUSED or arch.kind is Kind.ENCODER or not arch.has_head:
        return 0.0
    return (dt.c + 4) * arch.vocab


def _softcap_saved(arch: Architecture, dt: Dtypes, loss: Loss) -> float:
    """Gemma 2's final-logit soft-capping keeps its tanh output (``c`` bytes a vocabulary entry) until
    the loss's backward; a fused loss caps inside its chunks."""
    return dt.c * arch.vocab if arch.final_softcap and loss is not Loss.FUSED else 0.0


def loss_saved_bytes_per_token(arch: Architecture, dt: Dtypes, loss: Loss) -> float:
    """Bytes a token keeps saved for backward around the loss (part of :func:`loss_bytes_per_token`).

    Standard cross-entropy saves the log-softmax output (in the loss dtype) and the int64 target;
    the chunked loss keeps every chunk's fp32 log-softmax; the fused loss keeps the gradient of
    the hidden states it computed in forward.
    """
    if arch.kind is Kind.ENCODER or not arch.has_head:
        return 0.0
    if loss is Loss.FUSED:
        return dt.c * arch.hidden + 8
    if loss is Loss.CHUNKED:
        return 4 * arch.vocab + 8 + _softcap_saved(arch, dt, loss)
    u = 4 if arch.loss_upcast else dt.c
    return u * arch.vocab + 8 + _softcap_saved(arch, dt, loss)
