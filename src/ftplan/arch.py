"""Model architectures: Hugging Face ``config.json`` fields normalised into one shape.

Every supported ``model_type`` is read with the defaults of its Hugging Face config class, so a
catalog entry, an inline ``architecture:`` mapping and an imported ``config.json`` mean the same.
The result lists the model's linear layers by role, which the parameter count, the LoRA targets,
tensor parallelism and the activation model all read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

from ftplan.errors import JobError, did_you_mean


class Kind(StrEnum):
    """Which stacks of layers a model has."""

    DECODER = "decoder"
    ENCODER_DECODER = "encoder-decoder"
    ENCODER = "encoder"


@dataclass(frozen=True, slots=True)
class Linear:
    """One linear layer of a transformer block, as a LoRA target sees it."""

    name: str  # module name in the Hugging Face implementation (what `target_modules` matches)
    role: str  # q, k, v, qkv, o, gate, up, gate_up, down, router
    d_in: int
    d_out: int
    bias: bool = False
    count: int = 1  # copies per layer (MoE experts)
    stack: str = "main"  # main | encoder | decoder | cross (encoder-decoder attention)

    @property
    def weight_params(self) -> int:
        return self.d_in * self.d_out * self.count

    @property
    def bias_params(self) -> int:
        return self.d_out * self.count if self.bias else 0


SUPPORTED_MODEL_TYPES = (
    "llama", "mistral", "mixtral", "qwen2", "gemma", "gemma2", "phi3", "phi", "gpt_neox",
    "t5", "mt5", "bert", "roberta",
)  # fmt: skip

# Decoder families that share the Llama block (pre-norm RMSNorm, gated MLP, rotary attention).
_LLAMA_LIKE = {"llama", "mistral", "mixtral", "qwen2", "gemma", "gemma2"}


@dataclass(frozen=True)
class Architecture:
    """A transformer's dimensions, normalised from a Hugging Face config (see module docstring)."""

    model_type: str
    kind: Kind
    hidden: int
    layers: int  # decoder layers (decoder), encoder layers (encoder), encoder layers (enc-dec)
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    tied: bool
    gated_mlp: bool
    norm: str  # rmsnorm | layernorm
    norms_per_layer: int
    final_norm: bool
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    experts: int = 0
    experts_per_token: int = 0
    decoder_layers: int = 0  # encoder-decoder only
    fused_qkv: bool = False
    fused_gate_up: bool = False
    learned_positions: int = 0  # rows of a learned absolute position table
    token_types: int = 0
    pooler: bool = False
    lm_head_bias: bool = False
    relative_attention_buckets: int = 0
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    loss_upcast: bool = True  # causal-LM loss upcasts logits to fp32 before cross-entropy
    parallel_residual: bool = False  # attention and MLP both read the layer input (phi, GPT-NeoX)
    rotary_dim: int = 0  # head dimensions rotary embeddings apply to (0: all of head_dim)
    softmax_upcast: bool = True  # eager attention computes softmax in fp32 (not T5, BERT, RoBERTa)
    labels: int = 0  # encoders: classes of the sequence-classification head they train
    final_softcap: bool = False  # Gemma 2: logits = cap·tanh(logits / cap) before the loss
    attn_softcap: bool = False  # Gemma 2: the same on the attention scores (eager attention)
    sliding_window: int = 0  # tokens a sliding-window layer attends to (0: none)
    sliding_layers: tuple[bool, ...] = ()  # per layer: whether it attends through the sliding window
    names: dict[str, str] = field(default_factory=dict, compare=False)

    # ---- hashing: the memory model caches per architecture, so hash once ---------------------
    @cached_property
    def _hash(self) -> int:
        return hash(tuple(getattr(self, f) for f in self.__dataclass_fields__ if f != "names"))

    def __hash__(self) -> int:
        return self._hash

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def total_layers(self) -> int:
        return self.layers + self.decoder_layers

    def _attention(self, stack: str) -> list[Linear]:
        n = self.names
        h, q, kv, bias = self.hidden, self.q_dim, self.kv_dim, self.qkv_bias
        if self.fused_qkv:
            qkv = [Linear(n["qkv"], "qkv", h, q + 2 * kv, bias, stack=stack)]
        else:
            qkv = [
                Linear(n["q"], "q", h, q, bias, stack=stack),
                Linear(n["k"], "k", h, kv, bias, stack=stack),
                Linear(n["v"], "v", h, kv, bias, stack=stack),
            ]
        return [*qkv, Linear(n["o"], "o", q, h, self.o_bias, stack=stack)]

    def _mlp(self, stack: str) -> list[Linear]:
        n, h, f, bias = self.names, self.hidden, self.ffn, self.mlp_bias
        e = max(self.experts, 1)
        out: list[Linear] = []
        if self.is_moe:
            out.append(Linear(n["router"], "router", h, self.experts, False, stack=stack))
        if self.gated_mlp and self.fused_gate_up:
            out.append(Linear(n["gate_up"], "gate_up", h, 2 * f, bias, e, stack))
        elif self.gated_mlp:
            out.append(Linear(n["gate"], "gate", h, f, bias, e, stack))
            out.append(Linear(n["up"], "up", h, f, bias, e, stack))
        else:
            out.append(Linear(n["up"], "up", h, f, bias, e, stack))
        out.append(Linear(n["down"], "down", f, h, bias, e, stack))
        return out

    @cached_property
    def block_linears(self) -> dict[str, list[Linear]]:
        """Linear layers of one block per stack: {'main'|'encoder'|'decoder': [...]}."""
        if self.kind is Kind.ENCODER_DECODER:
            cross = [
                Linear(x.name, x.role, x.d_in, x.d_out, x.bias, x.count, "cross") for x in self._attention("cross")
            ]
            return {
                "encoder": self._attention("encoder") + self._mlp("encoder"),
                "decoder": self._attention("decoder") + cross + self._mlp("decoder"),
            }
        return {"main": self._attention("main") + self._mlp("main")}

    def layers_of(self, stack: str) -> int:
        return self.decoder_layers if stack == "decoder" else self.layers

    @cached_property
    def linear_names(self) -> set[str]:
        return {x.name for xs in self.block_linears.values() for x in xs}

    # ---- parameter counts ------------------------------------------------------------------
    def _norm_params(self) -> int:
        return self.hidden * (2 if self.norm == "layernorm" else 1)

    @cached_property
    def embedding_params(self) -> int:
        """Token (+ position, token-type) embeddings, with the embedding LayerNorm of BERT."""
        n = self.vocab * self.hidden
        n += (self.learned_positions + self.token_types) * self.hidden
        if self.learned_positions and self.norm == "layernorm" and self.kind is Kind.ENCODER:
            n += self._norm_params()
        return n

    @cached_property
    def lm_head_params(self) -> int:
        """The output layer: the LM head, or an encoder's classification head."""
        if self.kind is Kind.ENCODER:
            return self.labels * self.hidden + self.labels
        n = 0 if self.tied else self.vocab * self.hidden
        return n + (self.vocab if self.lm_head_bias else 0)

    @cached_property
    def layer_matrix_params(self) -> dict[str, int]:
        """Weight-matrix parameters of one block, per stack (what TP splits and LoRA can adapt)."""
        return {s: sum(x.weight_params for x in xs) for s, xs in self.block_linears.items()}

    @cached_property
    def layer_vector_params(self) -> dict[str, int]:
        """Biases and norm weights of one block, per stack (replicated under TP)."""
        out = {}
        for s, xs in self.block_linears.items():
            norms = self.norms_per_layer + (1 if s == "decoder" else 0)
            out[s] = sum(x.bias_params for x in xs) + norms * self._norm_params()
        return out

    @cached_property
    def other_params(self) -> int:
        """Final norms, pooler and relative-position tables."""
        n = 0
        if self.final_norm:
            n += self._norm_params() * (2 if self.kind is Kind.ENCODER_DECODER else 1)
        if self.pooler:
            n += self.hidden * self.hidden + self.hidden
        stacks = 2 if self.kind is Kind.ENCODER_DECODER else 1
        n += self.relative_attention_buckets * self.heads * stacks
        return n

    @cached_property
    def total_params(self) -> int:
        per_stack = sum(
            (self.layer_matrix_params[s] + self.layer_vector_params[s]) * self.layers_of(s) for s in self.block_linears
        )
        return self.embedding_params + per_stack + self.other_params + self.lm_head_params

    @cached_property
    def active_params(self) -> int:
        """Parameters one token passes through (MoE: routed experts only)."""
        if not self.is_moe:
            return self.total_params
        inactive = 0
        for s, xs in self.block_linears.items():
            for x in xs:
                if x.count > 1:
                    per_expert = x.weight_params // x.count + x.bias_params // x.count
                    inactive += per_expert * (x.count - self.experts_per_token) * self.layers_of(s)
        return self.total_params - inactive

    @cached_property
    def matrix_params(self) -> int:
        """All parameters in weight matrices of blocks (the part tensor parallelism divides)."""
        return sum(self.layer_matrix_params[s] * self.layers_of(s) for s in self.block_linears)

    @cached_property
    def largest_linear_params(self) -> int:
        """Weights of the largest single linear module (one expert for MoE)."""
        return max(x.d_in * x.d_out for xs in self.block_linears.values() for x in xs)


# ---- reading Hugging Face configs --------------------------------------------------------------

_NAMES_LLAMA = dict(q="q_proj", k="k_proj", v="v_proj", o="o_proj", gate="gate_proj",
                    up="up_proj", down="down_proj", router="gate")  # fmt: skip
_NAMES_MIXTRAL = dict(_NAMES_LLAMA, gate="w1", up="w3", down="w2")
_NAMES_PHI3 = dict(qkv="qkv_proj", o="o_proj", gate_up="gate_up_proj", down="down_proj")
_NAMES_PHI = dict(q="q_proj", k="k_proj", v="v_proj", o="dense", up="fc1", down="fc2")
_NAMES_NEOX = dict(qkv="query_key_value", o="dense", up="dense_h_to_4h", down="dense_4h_to_h")
_NAMES_T5 = dict(q="q", k="k", v="v", o="o", gate="wi_0", up="wi_1", down="wo")
_NAMES_BERT = dict(q="query", k="key", v="value", o="dense", up="dense", down="dense")


def _req(cfg: dict[str, Any], key: str, where: str) -> Any:
    if key not in cfg:
        raise JobError(f"{where}: missing field '{key}'. To fix: add it as in the model's config.json.")
    return cfg[key]


def _positive(value: Any, key: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise JobError(f"{where}: '{key}' must be a positive integer, got {value!r}.")
    return value


def architecture_from_hf(cfg: dict[str, Any], where: str = "architecture") -> Architecture:
    """Normalise a Hugging Face config mapping into an :class:`Architecture`.

    ``where`` names the input in error messages (file and field).
    """
    mt = cfg.get("model_type")
    if mt not in SUPPORTED_MODEL_TYPES:
        hint = did_you_mean(str(mt), SUPPORTED_MODEL_TYPES)
        raise JobError(
            f"{where}: model_type {mt!r} is not supported.{hint} Supported: {', '.join(SUPPORTED_MODEL_TYPES)}."
        )
    if mt in ("t5", "mt5"):
        return _t5(cfg, where)
    if mt in ("bert", "roberta"):
        return _bert(cfg, where)
    return _decoder(cfg, where)


def _decoder(cfg: dict[str, Any], where: str) -> Architecture:
    mt = cfg["model_type"]
    h = _positive(_req(cfg, "hidden_size", where), "hidden_size", where)
    layers = _positive(_req(cfg, "num_hidden_layers", where), "num_hidden_layers", where)
    heads = _positive(_req(cfg, "num_attention_heads", where), "num_attention_heads", where)
    kv = cfg.get("num_key_value_heads") or heads
    kv = _positive(kv, "num_key_value_heads", where)
    if heads % kv:
        raise JobError(f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}.")
    default_hd = 256 if mt in ("gemma", "gemma2") else h // heads
    head_dim = _positive(cfg.get("head_dim") or default_hd, "head_dim", where)
    ffn = _positive(_req(cfg, "intermediate_size", where), "intermediate_size", where)
    vocab = _positive(_req(cfg, "vocab_size", where), "vocab_size", where)
    tied_default = mt in ("gemma", "gemma2")
    tied = bool(cfg.get("tie_word_embeddings", tied_default))
    common: dict[str, Any] = dict(
        model_type=mt, kind=Kind.DECODER, hidden=h, layers=layers, heads=heads, kv_heads=kv,
        head_dim=head_dim, ffn=ffn, vocab=vocab, tied=tied, final_norm=True,
        attention_dropout=float(cfg.get("attention_dropout", 0.0) or 0.0),
    )  # fmt: skip
    common["sliding_window"], common["sliding_layers"] = _sliding(cfg, layers, where)
    if mt in _LLAMA_LIKE:
        experts = int(cfg.get("num_local_experts", 8 if mt == "mixtral" else 0) or 0)
        return Architecture(
            **common, gated_mlp=True, norm="rmsnorm", norms_per_layer=4 if mt == "gemma2" else 2,
            qkv_bias=mt == "qwen2" or bool(cfg.get("attention_bias", False)),
            o_bias=bool(cfg.get("attention_bias", False)), mlp_bias=bool(cfg.get("mlp_bias", False)),
            experts=experts, experts_per_token=int(cfg.get("num_experts_per_tok", 2)) if experts else 0,
            names=_NAMES_MIXTRAL if mt == "mixtral" else _NAMES_LLAMA,
            # Gemma2Config defaults: final_logit_softcapping 30.0, attn_logit_softcapping 50.0
            final_softcap=mt == "gemma2" and bool(cfg.get("final_logit_softcapping", 30.0)),
            attn_softcap=mt == "gemma2" and bool(cfg.get("attn_logit_softcapping", 50.0)),
        )  # fmt: skip
    if mt == "phi3":
        return Architecture(
            **common, gated_mlp=True, norm="rmsnorm", norms_per_layer=2, fused_qkv=True,
            fused_gate_up=True, names=_NAMES_PHI3,
            hidden_dropout=float(cfg.get("resid_pdrop", 0.0) or 0.0),
        )  # fmt: skip
    if mt == "phi":
        return Architecture(
            **common, gated_mlp=False, norm="layernorm", norms_per_layer=1, qkv_bias=True,
            o_bias=True, mlp_bias=True, lm_head_bias=True, names=_NAMES_PHI, parallel_residual=True,
            rotary_dim=int(head_dim * _rotary_fraction(cfg, "partial_rotary_factor", 0.5)),
            hidden_dropout=float(cfg.get("resid_pdrop", 0.0) or 0.0),
        )  # fmt: skip
    # gpt_neox
    return Architecture(
        **common, gated_mlp=False, norm="layernorm", norms_per_layer=2, fused_qkv=True,
        qkv_bias=True, o_bias=True, mlp_bias=True, names=_NAMES_NEOX,
        parallel_residual=bool(cfg.get("use_parallel_residual", True)),
        rotary_dim=int(head_dim * _rotary_fraction(cfg, "rotary_pct", 0.25)),
        hidden_dropout=float(cfg.get("hidden_dropout", 0.0) or 0.0),
    )  # fmt: skip


# transformers 5's sliding-window defaults per model type: the window when the config leaves
# `sliding_window` out (configuration_<model>.py), and which layers use it.
_SLIDING_DEFAULT = {"mistral": 4096, "qwen2": 4096, "gemma2": 4096}


def _sliding(cfg: dict[str, Any], layers: int, where: str) -> tuple[int, tuple[bool, ...]]:
    """The sliding window and the layers that use it, as transformers 5 derives them: every layer
    for Mistral, Mixtral and Phi-3 when ``sliding_window`` is set; Qwen2 only with
    ``use_sliding_window``, from layer ``max_window_layers`` on; Gemma 2 every other layer from
    the first. An explicit ``layer_types`` list wins."""
    mt = cfg["model_type"]
    if mt not in ("mistral", "mixtral", "phi3", "qwen2", "gemma2"):
        return 0, ()
    window = cfg.get("sliding_window", _SLIDING_DEFAULT.get(mt))
    if mt == "qwen2" and not cfg.get("use_sliding_window", False):
        window = None
    if not window:
        return 0, ()
    window = _positive(window, "sliding_window", where)
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == layers:
        sliding = tuple(t == "sliding_attention" for t in types)
    elif mt == "qwen2":
        first = int(cfg.get("max_window_layers", 28))
        sliding = tuple(i >= first for i in range(layers))
    elif mt == "gemma2":
        sliding = tuple(i % 2 == 0 for i in range(layers))
    else:
        sliding = (True,) * layers
    return (window, sliding) if any(sliding) else (0, ())


def _rotary_fraction(cfg: dict[str, Any], key: str, default: float) -> float:
    """The fraction of each head rotary embeddings rotate: ``key`` in transformers 4 configs,
    ``rope_parameters.partial_rotary_factor`` in transformers 5 ones."""
    nested = (cfg.get("rope_parameters") or {}).get("partial_rotary_factor")
    value = cfg.get(key, nested if nested is not None else default)
    return float(value)


def _t5(cfg: dict[str, Any], where: str) -> Architecture:
    d = _positive(_req(cfg, "d_model", where), "d_model", where)
    heads = _positive(_req(cfg, "num_heads", where), "num_heads", where)
    layers = _positive(_req(cfg, "num_layers", where), "num_layers", where)
    proj = str(cfg.get("feed_forward_proj", "relu"))
    gated = proj.startswith("gated")
    names = dict(_NAMES_T5) if gated else dict(_NAMES_T5, up="wi")
    dropout = float(cfg.get("dropout_rate", 0.1))
    return Architecture(
        model_type=cfg["model_type"], kind=Kind.ENCODER_DECODER, hidden=d, layers=layers, softmax_upcast=False,
        heads=heads, kv_heads=heads, head_dim=_positive(cfg.get("d_kv", d // heads), "d_kv", where),
        ffn=_positive(_req(cfg, "d_ff", where), "d_ff", where),
        vocab=_positive(_req(cfg, "vocab_size", where), "vocab_size", where),
        tied=bool(cfg.get("tie_word_embeddings", True)), gated_mlp=gated, norm="rmsnorm",
        norms_per_layer=2, final_norm=True,
        decoder_layers=int(cfg.get("num_decoder_layers") or layers),
        relative_attention_buckets=int(cfg.get("relative_attention_num_buckets", 32)),
        hidden_dropout=dropout, attention_dropout=dropout, loss_upcast=False, names=names,
    )  # fmt: skip


def _bert(cfg: dict[str, Any], where: str) -> Architecture:
    h = _positive(_req(cfg, "hidden_size", where), "hidden_size", where)
    heads = _positive(_req(cfg, "num_attention_heads", where), "num_attention_heads", where)
    return Architecture(
        model_type=cfg["model_type"], kind=Kind.ENCODER, hidden=h, softmax_upcast=False,
        layers=_positive(_req(cfg, "num_hidden_layers", where), "num_hidden_layers", where),
        heads=heads, kv_heads=heads, head_dim=h // heads,
        ffn=_positive(_req(cfg, "intermediate_size", where), "intermediate_size", where),
        vocab=_positive(_req(cfg, "vocab_size", where), "vocab_size", where), tied=True,
        gated_mlp=False, norm="layernorm", norms_per_layer=2, final_norm=False, qkv_bias=True,
        o_bias=True, mlp_bias=True, learned_positions=int(cfg.get("max_position_embeddings", 512)),
        token_types=int(cfg.get("type_vocab_size", 2)), pooler=True,
        labels=int(cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2),
        hidden_dropout=float(cfg.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(cfg.get("attention_probs_dropout_prob", 0.1)), names=_NAMES_BERT,
    )  # fmt: skip
