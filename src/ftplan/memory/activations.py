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

from dataclasses import dataclass

from ftplan.arch import Architecture, Kind
from ftplan.memory.setup import Attention, Loss, Recompute

# Saved tensors of ``f`` elements inside the activation function, and whether the output
# (rather than the input) is what it saves. NewGELU ("gelu_new", T5 gated-gelu, phi) is composed
# of elementwise ops that save x, tanh(.), 0.5·x and 1 + tanh(.).
_ACT_SAVES = {"gelu_new": 4}


@dataclass(frozen=True, slots=True)
class Dtypes:
    """Bytes per element: ``c`` matmul inputs/outputs, ``r`` the residual stream."""

    c: int
    r: int


def _norm(arch: Architecture, dt: Dtypes, consumers: int) -> float:
    """Bytes a token saved by one norm and by its consumers' inputs."""
    h = arch.hidden
    out = dt.r * h if dt.r == dt.c else consumers * dt.c * h
    if arch.norm == "rmsnorm":
        return 4 * h + 4 + dt.r * h + out
    return dt.r * h + 8 + out  # LayerNorm: input, mean and rstd (fp32), output


def _attention(arch: Architecture, dt: Dtypes, attention: Attention, kv_len: int, dropout: bool) -> float:
    """Bytes a query token saved by one attention core (projections' outputs included)."""
    c, q, kv = dt.c, arch.q_dim, arch.kv_dim
    a = arch.heads
    if attention is Attention.SDPA:
        v_store = c * (q + 2 * kv) if arch.fused_qkv else c * kv  # v is a view when fused
        return 2 * c * q + c * kv + v_store + 4 * a  # q, k, v, output, log-sum-exp
    # Eager: q, k and v expanded to all heads, probabilities, contiguous output copy.
    return 3 * c * q + _probs(dt, a, kv_len, dropout) + c * q


def _probs(dt: Dtypes, heads: int, kv_len: int, dropout: bool) -> float:
    """Attention probabilities a query token saves: fp32 softmax, its cast, dropout mask."""
    n = 4 * heads * kv_len
    if dt.c != 4 or dropout:
        n += dt.c * heads * kv_len
    if dropout:
        n += heads * kv_len
    return n


def _mlp(arch: Architecture, dt: Dtypes, act: str, dropout: bool) -> float:
    c, h, f = dt.c, arch.hidden, arch.ffn
    inner = _ACT_SAVES.get(act, 1) * c * f
    if arch.is_moe:
        k = arch.experts_per_token
        # router: fp32 softmax over experts, top-k indices; per routed token: the gathered
        # input, gate/up/act/product of the expert, and the expert output (weighted sum).
        return 4 * arch.experts + 8 * k + k * (2 * c * h + inner + 3 * c * f)
    if arch.gated_mlp:
        saved = inner + 3 * c * f  # act input(s), act output, up output, product
    elif act == "relu":
        saved = c * f  # relu saves its output, which is also the down projection's input
    else:
        saved = inner + c * f
    if dropout and arch.kind is Kind.ENCODER_DECODER:
        saved += f + c * f  # T5 dropout inside the feed-forward: mask and output (saved by wo)
    return saved


def _act_name(arch: Architecture) -> str:
    if arch.model_type in ("t5", "mt5"):
        return "gelu_new" if arch.gated_mlp else "relu"
    if arch.model_type == "phi":
        return "gelu_new"
    return "silu"


def layer_bytes_per_token(
    arch: Architecture,
    stack: str,
    dt: Dtypes,
    attention: Attention,
    seq_len: int,
    enc_len: int,
    dropout: bool,
    recompute: Recompute,
) -> float:
    """Bytes one token saves in one layer of ``stack`` with no recomputation (or selective)."""
    h = arch.hidden
    att = attention
    if recompute is Recompute.SELECTIVE:
        att = Attention.SDPA  # selective recomputation keeps only the core-attention inputs
    fused = arch.fused_qkv
    attn_consumers = 1 if fused else 3
    mlp_consumers = (1 if arch.fused_gate_up else 2) if arch.gated_mlp else 1
    if arch.is_moe:
        mlp_consumers = 1
    total = _norm(arch, dt, attn_consumers)
    total += _attention(arch, dt, att, seq_len, dropout)
    if stack == "decoder":  # cross-attention: q, output and probabilities over the encoder
        total += _norm(arch, dt, 1) + 2 * dt.c * arch.q_dim
        total += _probs(dt, arch.heads, enc_len, dropout) if att is Attention.EAGER else 4 * arch.heads
    if arch.model_type == "gemma2":  # post-attention and post-feedforward norms
        total += 2 * _norm(arch, dt, 1)
    total += _norm(arch, dt, mlp_consumers)
    total += _mlp(arch, dt, _act_name(arch), dropout)
    if dropout and arch.hidden_dropout > 0:
        total += 2 * h  # residual dropout masks after attention and MLP
    return total


def cross_kv_bytes_per_sequence(arch: Architecture, dt: Dtypes, enc_len: int) -> float:
    """Keys and values each decoder layer projects from the encoder output (per sequence)."""
    return 2 * dt.c * arch.kv_dim * enc_len


def head_bytes_per_token(arch: Architecture, dt: Dtypes, dropout: bool) -> float:
    """Embedding-side and final-norm saves (token ids, embedding norm/dropout, final norm)."""
    n = 8.0  # int64 token ids saved by the embedding
    if arch.kind is Kind.ENCODER:
        n += _norm(arch, dt, 3) + (arch.hidden if dropout else 0)
    if arch.final_norm:
        n += _norm(arch, dt, 1)
    return n


# torchtune CEWithChunkedOutputLoss: the model emits its logits in 8 chunks (num_output_chunks).
CHUNKED_LOSS_CHUNKS = 8


def loss_bytes_per_token(arch: Architecture, dt: Dtypes, loss: Loss, tokens: int) -> float:
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
      of the hidden states computed in forward (``c·h`` a token).
    """
    if arch.kind is Kind.ENCODER:
        return 0.0
    v, c = arch.vocab, dt.c
    if loss is Loss.FUSED:
        chunks = -(-v // arch.hidden)
        chunk_tokens = -(-tokens // chunks)
        return (c + 4) * v * chunk_tokens / max(tokens, 1) + c * arch.hidden
    if loss is Loss.CHUNKED:
        k = CHUNKED_LOSS_CHUNKS
        return max((c + 4 + 4 / k) * v, (4 + 8 / k + c / k) * v)
    u = 4 if arch.loss_upcast else c
    forward = c * v + (u * v if u != c else 0) + u * v
    return max(forward, 3 * u * v)
