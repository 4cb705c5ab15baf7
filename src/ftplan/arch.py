"""Model architectures: Hugging Face ``config.json`` fields normalised into one shape.

Every supported ``model_type`` is read with the defaults of its Hugging Face config class, so a
catalog entry, an inline ``architecture:`` mapping and an imported ``config.json`` mean the same.
The result lists the model's linear layers by role, which the parameter count, the LoRA targets,
tensor parallelism and the activation model all read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property, lru_cache
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
    adaptable: bool = True  # PEFT can put LoRA on it (not Qwen2-MoE's experts and router, which it skips)
    expert: bool = False  # a MoE's routed experts (``count`` of them: those one expert-parallel rank holds)

    @property
    def weight_params(self) -> int:
        return self.d_in * self.d_out * self.count

    @property
    def bias_params(self) -> int:
        return self.d_out * self.count if self.bias else 0


# Roles of a block's attention linears (MLA's compressed q/kv projections included)
ATTENTION_ROLES = frozenset({"q", "k", "v", "qkv", "o", "q_a", "q_b", "kv_a", "kv_b"})
# Roles of the linears tensor parallelism splits by rows (their input: the attention output and the MLP's down
# projections); the router is not split, and every other linear and the lm_head (vocabulary-parallel) are split by
# columns (their output)
ROW_PARALLEL_ROLES = frozenset({"o", "down", "shared_down"})
UNSPLIT_ROLES = frozenset({"router"})

SUPPORTED_MODEL_TYPES = (
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
    "gemma3_text", "olmo2", "granite", "deepseek_v3", "gpt_oss", "llama4_text", "phi3", "phi", "gpt_neox",
    "starcoder2", "gpt2", "t5", "mt5", "bert", "roberta",
)  # fmt: skip

# Decoder families that share the Llama block (RMSNorm, gated MLP, rotary attention).
_LLAMA_LIKE = {
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
    "gemma3_text", "olmo2", "granite",
}  # fmt: skip
_GEMMA = ("gemma", "gemma2", "gemma3_text")
# head_dim when a config leaves it out (the config classes' defaults; else hidden / heads)
_HEAD_DIM_DEFAULT = {"gemma": 256, "gemma2": 256, "gemma3_text": 256, "qwen3": 128, "gpt_oss": 64}


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
    embed_dropout: float = 0.0  # dropout on a decoder's embeddings (GPT-2, StarCoder2, Phi)
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
    qk_norm: str = ""  # RMSNorm on q and k: "head" (over head_dim: Qwen3, Gemma 3), "full" (over q/kv: OLMo 2)
    # RMSNorm: llama (weight · x cast back), gemma ((1 + weight) · fp32 x), olmo (weight · fp32 x)
    norm_style: str = "llama"
    norm_placement: str = "pre"  # pre (before each sublayer), sandwich (and after: Gemma 2/3), post (after: OLMo 2)
    shared_ffn: int = 0  # MoE: width of the shared expert every token passes through (Qwen2-MoE)
    shared_gate: bool = False  # MoE: a sigmoid gate (hidden → 1) scales the shared expert's output
    norm_topk: bool = True  # MoE: the top-k routing weights are renormalised to sum to 1 (Qwen: norm_topk_prob)
    # Multi-head latent attention (DeepSeek-V3): q and kv compressed to these ranks (q 0: a plain q_proj),
    # each head's key = a no-position part (head_dim - rope_head_dim) + a shared rotary part; values
    # of v_head_dim. kv_lora_rank 0: ordinary attention.
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    rope_head_dim: int = 0
    v_head_dim: int = 0
    dense_layers: int = 0  # MoE: leading layers with a dense MLP of width dense_ffn (first_k_dense_replace)
    dense_ffn: int = 0
    # MoE router: softmax then top-k (Mixtral, Qwen), sigmoid with group-limited top-k (DeepSeek-V3), or
    # top-k then softmax over the chosen logits with clamped SwiGLU experts (gpt-oss)
    routing: str = "softmax"
    attn_sinks: bool = False  # gpt-oss: a learned sink logit per head joins each softmax
    router_bias: bool = False  # gpt-oss: the router has a bias
    rotary_tables: int = 1  # cos/sin table pairs: one per kind of layer with its own rotary base (Gemma 3: 2)
    # The dense layers' indices when they are not all leading (Llama 4 and Qwen-MoE interleave them with the
    # MoE layers; dense_layers counts them); Llama 4's layers without rotary embeddings (NoPE), whose queries
    # are scaled by a position-dependent temperature
    dense_indices: tuple[int, ...] = ()
    nope_layers: tuple[bool, ...] = ()
    attn_temperature: bool = False
    # A pipeline stage of a decoder (see pipeline_stage): whether it holds the embeddings, and the final
    # norm, lm_head and loss. A whole model holds both.
    has_embedding: bool = True
    has_head: bool = True
    # An expert-parallel rank (see expert_shard): the routed experts it holds (0: all of them), and the routed
    # rows its experts take a token, relative to a balanced share of experts_per_token (the capacity factor)
    local_experts: int = 0
    expert_load: float = 1.0
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
    def mla(self) -> bool:
        """Multi-head latent attention (DeepSeek-V3)."""
        return self.kv_lora_rank > 0

    @property
    def v_dim(self) -> int:
        """Values per token (all heads)."""
        return self.heads * self.v_head_dim if self.mla else self.kv_dim

    @property
    def o_dim(self) -> int:
        """The attention output per token, the output projection's input."""
        return self.heads * self.v_head_dim if self.mla else self.q_dim

    @property
    def total_layers(self) -> int:
        return self.layers + self.decoder_layers

    def _attention(self, stack: str) -> list[Linear]:
        n = self.names
        h, q, kv, bias = self.hidden, self.q_dim, self.kv_dim, self.qkv_bias
        if self.mla:
            ob, r = self.o_bias, self.kv_lora_rank
            if self.q_lora_rank:
                qs = [
                    Linear("q_a_proj", "q_a", h, self.q_lora_rank, ob, stack=stack),
                    Linear("q_b_proj", "q_b", self.q_lora_rank, q, stack=stack),
                ]
            else:
                qs = [Linear("q_proj", "q", h, q, stack=stack)]
            nope = self.head_dim - self.rope_head_dim
            return [
                *qs,
                Linear("kv_a_proj_with_mqa", "kv_a", h, r + self.rope_head_dim, ob, stack=stack),
                Linear("kv_b_proj", "kv_b", r, self.heads * (nope + self.v_head_dim), stack=stack),
                Linear(n["o"], "o", self.o_dim, h, ob, stack=stack),
            ]
        if self.fused_qkv:
            qkv = [Linear(n["qkv"], "qkv", h, q + 2 * kv, bias, stack=stack)]
        else:
            qkv = [
                Linear(n["q"], "q", h, q, bias, stack=stack),
                Linear(n["k"], "k", h, kv, bias, stack=stack),
                Linear(n["v"], "v", h, kv, bias, stack=stack),
            ]
        return [*qkv, Linear(n["o"], "o", q, h, self.o_bias, stack=stack)]

    def _dense_mlp(self, stack: str) -> list[Linear]:
        """The gated MLP of a MoE model's dense layers (DeepSeek-V3's first layers, Qwen3-MoE's). PEFT's
        conversion to the fused experts claims gate_proj/up_proj/down_proj, so these are not adapted by name
        (Llama 4's and Qwen2-MoE's, whose experts PEFT does not convert, are: measured)."""
        h, f = self.hidden, self.dense_ffn
        if self.model_type in ("llama4_text", "qwen2_moe"):  # PEFT adapts these by name
            return [
                Linear("gate_proj", "gate", h, f, stack=stack),
                Linear("up_proj", "up", h, f, stack=stack),
                Linear("down_proj", "down", f, h, stack=stack),
            ]
        return [
            Linear("mlp.gate_proj", "gate", h, f, stack=stack, adaptable=False),
            Linear("mlp.up_proj", "up", h, f, stack=stack, adaptable=False),
            Linear("mlp.down_proj", "down", f, h, stack=stack, adaptable=False),
        ]

    def _mlp(self, stack: str) -> list[Linear]:
        n, h, f, bias = self.names, self.hidden, self.ffn, self.mlp_bias
        e = max(self.local_experts or self.experts, 1)
        out: list[Linear] = []
        qwen2_moe = self.model_type == "qwen2_moe"
        if qwen2_moe:  # Qwen2-MoE's experts and router: 3-D parameters and a module PEFT leaves alone
            n = dict(n, **{r: f"experts.{n[r]}" for r in ("gate", "up", "down")}, router="mlp.gate")
        if self.model_type == "llama4_text":
            # transformers 5's fused experts, which PEFT's conversion does not cover for Llama 4, a router
            # that is an nn.Linear returning (scores, logits), and a shared expert of the experts' width
            return [
                Linear("router", "router", h, self.experts, stack=stack),
                Linear("experts.gate_up_proj", "gate_up", h, 2 * f, count=e, stack=stack, adaptable=False, expert=True),
                Linear("experts.down_proj", "down", f, h, count=e, stack=stack, adaptable=False, expert=True),
                Linear("gate_proj", "shared_gate", h, self.shared_ffn, stack=stack),
                Linear("up_proj", "shared_up", h, self.shared_ffn, stack=stack),
                Linear("down_proj", "shared_down", self.shared_ffn, h, stack=stack),
            ]
        # gpt-oss's experts and router, too: PEFT reaches them only through target_parameters
        ok = not qwen2_moe and self.model_type != "gpt_oss"
        if self.is_moe:
            rb = self.router_bias
            out.append(Linear(n["router"], "router", h, self.experts, rb, stack=stack, adaptable=ok))
        x = self.is_moe
        if self.gated_mlp and self.fused_gate_up:
            out.append(Linear(n["gate_up"], "gate_up", h, 2 * f, bias, e, stack, adaptable=ok or not x, expert=x))
        elif self.gated_mlp:
            out.append(Linear(n["gate"], "gate", h, f, bias, e, stack, adaptable=ok, expert=x))
            out.append(Linear(n["up"], "up", h, f, bias, e, stack, adaptable=ok, expert=x))
        else:
            out.append(Linear(n["up"], "up", h, f, bias, e, stack, expert=x))
        out.append(Linear(n["down"], "down", f, h, bias, e, stack, adaptable=ok, expert=x))
        n = self.names
        if self.shared_ffn:  # a dense gated MLP beside the experts (Qwen2-MoE: and its gate)
            sf = self.shared_ffn
            # DeepSeek-V3's shared experts: PEFT's conversion to the fused experts claims their names
            pre, ok = ("shared_experts.", False) if self.model_type == "deepseek_v3" else ("", True)
            out += [
                Linear(pre + n["gate"], "shared_gate", h, sf, bias, stack=stack, adaptable=ok),
                Linear(pre + n["up"], "shared_up", h, sf, bias, stack=stack, adaptable=ok),
                Linear(pre + n["down"], "shared_down", sf, h, bias, stack=stack, adaptable=ok),
            ]
            if self.shared_gate:
                out.append(Linear(n["shared_router"], "shared_router", h, 1, False, stack=stack))
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
        if self.dense_layers:  # a MoE model's leading dense layers are a stack of their own, first
            return {
                "dense": self._attention("dense") + self._dense_mlp("dense"),
                "main": self._attention("main") + self._mlp("main"),
            }
        return {"main": self._attention("main") + self._mlp("main")}

    def layers_of(self, stack: str) -> int:
        if stack == "decoder":
            return self.decoder_layers
        return self.dense_layers if stack == "dense" else self.layers - self.dense_layers

    @cached_property
    def stack_indices(self) -> dict[str, tuple[int, ...]]:
        """The model's layer indices in each stack of a decoder: a MoE model's dense layers lead
        (DeepSeek-V3) or are interleaved with its MoE layers (Llama 4, Qwen-MoE: ``dense_indices``)."""
        if self.dense_indices:
            dense = self.dense_indices
            return {"dense": dense, "main": tuple(i for i in range(self.layers) if i not in dense)}
        d = self.dense_layers
        return (
            {"dense": tuple(range(d)), "main": tuple(range(d, self.layers))}
            if d
            else {"main": tuple(range(self.layers))}
        )

    @cached_property
    def linear_names(self) -> set[str]:
        """Names LoRA's ``target_modules`` can name (what PEFT adapts)."""
        return {x.name for xs in self.block_linears.values() for x in xs if x.adaptable}

    # ---- parameter counts ------------------------------------------------------------------
    def _norm_params(self) -> int:
        return self.hidden * (2 if self.norm == "layernorm" else 1)

    @lru_cache(maxsize=4096)  # noqa: B019 (architectures are few and live for the run; the search asks again and again)
    def pipeline_stage(self, layers: tuple[int, ...]) -> Architecture:
        """The decoder layers ``layers`` (model indices, in order) as what one pipeline rank holds: the
        embeddings where they include the first layer, the final norm and lm_head (its own copy of a tied
        embedding) where they include the last."""
        keep = set(layers)
        dense = set(self.stack_indices.get("dense", ()))
        leading = all(i in dense for i in layers[: len(dense & keep)])  # the rank's dense layers come first
        return replace(
            self,
            layers=len(layers),
            dense_layers=len(dense & keep),
            dense_indices=() if leading else tuple(k for k, i in enumerate(layers) if i in dense),
            sliding_layers=tuple(self.sliding_layers[i] for i in layers) if self.sliding_layers else (),
            nope_layers=tuple(self.nope_layers[i] for i in layers) if self.nope_layers else (),
            has_embedding=self.has_embedding and 0 in keep,
            has_head=self.has_head and self.layers - 1 in keep,
            tied=self.tied and 0 in keep and self.layers - 1 in keep,
        )

    @lru_cache(maxsize=4096)  # noqa: B019 (as pipeline_stage)
    def expert_shard(self, ep: int, load: float) -> Architecture:
        """What one rank of an expert-parallel group of ``ep`` holds: ``experts / ep`` routed experts (the
        router and shared experts whole), whose rows a token brings number ``load × experts_per_token`` (1: a
        balanced share of the group's tokens)."""
        return replace(self, local_experts=self.experts // ep, expert_load=load) if ep > 1 else self

    @cached_property
    def embedding_params(self) -> int:
        """Token (+ position, token-type) embeddings, with the embedding LayerNorm of BERT."""
        if not self.has_embedding:
            return 0
        n = self.vocab * self.hidden
        n += (self.learned_positions + self.token_types) * self.hidden
        if self.learned_positions and self.norm == "layernorm" and self.kind is Kind.ENCODER:
            n += self._norm_params()
        return n

    @cached_property
    def lm_head_params(self) -> int:
        """The output layer: the LM head, or an encoder's classification head."""
        if not self.has_head:
            return 0
        if self.kind is Kind.ENCODER:
            return self.labels * self.hidden + self.labels
        n = 0 if self.tied else self.vocab * self.hidden
        return n + (self.vocab if self.lm_head_bias else 0)

    @cached_property
    def layer_matrix_params(self) -> dict[str, int]:
        """Weight-matrix parameters of one block, per stack (what TP splits and LoRA can adapt)."""
        return {s: sum(x.weight_params for x in xs) for s, xs in self.block_linears.items()}

    @cached_property
    def layer_expert_params(self) -> dict[str, int]:
        """Routed-expert parameters (weights and biases) of one block, per stack (what EP splits)."""
        return {s: sum(x.weight_params + x.bias_params for x in xs if x.expert) for s, xs in self.block_linears.items()}

    @cached_property
    def layer_vector_params(self) -> dict[str, int]:
        """Biases and norm weights of one block, per stack (replicated under TP)."""
        out = {}
        qk = {"head": 2 * self.head_dim, "full": self.q_dim + self.kv_dim}.get(self.qk_norm, 0)  # "l2": no weight
        qk += self.q_lora_rank + self.kv_lora_rank  # MLA's norms of the compressed q and kv
        qk += self.heads if self.attn_sinks else 0
        for s, xs in self.block_linears.items():
            norms = self.norms_per_layer + (1 if s == "decoder" else 0)
            out[s] = sum(x.bias_params for x in xs) + norms * self._norm_params() + qk
        return out

    @cached_property
    def other_params(self) -> int:
        """Final norms, pooler and relative-position tables."""
        n = 0
        if self.final_norm and self.has_head:
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
                if x.expert:
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
_NAMES_GPT_OSS = dict(q="q_proj", k="k_proj", v="v_proj", o="o_proj", gate_up="gate_up_proj", down="down_proj",
                      router="router")  # fmt: skip
_NAMES_STARCODER2 = dict(q="q_proj", k="k_proj", v="v_proj", o="o_proj", up="c_fc", down="c_proj")
_NAMES_GPT2 = dict(qkv="c_attn", o="c_proj", up="c_fc", down="c_proj")  # Conv1D modules; c_proj names two
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
    text = cfg.get("text_config")
    if mt not in SUPPORTED_MODEL_TYPES and isinstance(text, dict) and text.get("model_type") in SUPPORTED_MODEL_TYPES:
        raise JobError(
            f"{where}: model_type {mt!r} is a multimodal checkpoint, whose vision tower ftplan does not model. "
            f"To fix: plan its language model from its text_config (model_type {text['model_type']!r}), and allow "
            "for the vision tower's frozen weights in headroom."
        )
    if mt not in SUPPORTED_MODEL_TYPES:
        hint = did_you_mean(str(mt), SUPPORTED_MODEL_TYPES)
        raise JobError(
            f"{where}: model_type {mt!r} is not supported.{hint} Supported: {', '.join(SUPPORTED_MODEL_TYPES)}."
        )
    if mt in ("t5", "mt5"):
        return _t5(cfg, where)
    if mt in ("bert", "roberta"):
        return _bert(cfg, where)
    if mt == "gpt2":
        cfg = _gpt2_fields(cfg)
    return _decoder(cfg, where)


# GPT2Config's own field names, and the Llama-style names the decoder reader expects
_GPT2_FIELDS = {"n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads"}


def _gpt2_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """A GPT-2 config under the decoder reader's names: ``n_inner`` (None: 4·n_embd) is the MLP width,
    ``attn_pdrop`` the attention dropout; GPT2Config's defaults fill what the file leaves out."""
    out = dict(cfg)
    for old, new in _GPT2_FIELDS.items():
        if old in cfg and new not in cfg:
            out[new] = cfg[old]
    out.setdefault("hidden_size", 768)
    out.setdefault("num_hidden_layers", 12)
    out.setdefault("num_attention_heads", 12)
    out.setdefault("vocab_size", 50257)
    if "intermediate_size" not in out:
        out["intermediate_size"] = cfg.get("n_inner") or 4 * out["hidden_size"]
    out.setdefault("attention_dropout", cfg.get("attn_pdrop", 0.1))
    out.setdefault("tie_word_embeddings", True)
    return out


def _decoder(cfg: dict[str, Any], where: str) -> Architecture:
    mt = cfg["model_type"]
    h = _positive(_req(cfg, "hidden_size", where), "hidden_size", where)
    layers = _positive(_req(cfg, "num_hidden_layers", where), "num_hidden_layers", where)
    heads = _positive(_req(cfg, "num_attention_heads", where), "num_attention_heads", where)
    # (absent or null: multi-head attention, as transformers reads it; 0 is not a head count and is refused)
    kv = heads if cfg.get("num_key_value_heads") is None else cfg["num_key_value_heads"]
    kv = _positive(kv, "num_key_value_heads", where)
    if heads % kv:
        raise JobError(f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}.")
    head_dim = cfg.get("head_dim")
    head_dim = _positive(_HEAD_DIM_DEFAULT.get(mt, h // heads) if head_dim is None else head_dim, "head_dim", where)
    ffn = _positive(_req(cfg, "intermediate_size", where), "intermediate_size", where)
    vocab = _positive(_req(cfg, "vocab_size", where), "vocab_size", where)
    tied_default = mt in (*_GEMMA, "starcoder2", "gpt2")
    tied = bool(cfg.get("tie_word_embeddings", tied_default))
    common: dict[str, Any] = dict(
        model_type=mt, kind=Kind.DECODER, hidden=h, layers=layers, heads=heads, kv_heads=kv,
        head_dim=head_dim, ffn=ffn, vocab=vocab, tied=tied, final_norm=True,
        attention_dropout=float(cfg.get("attention_dropout", 0.0) or 0.0),
    )  # fmt: skip
    common["sliding_window"], common["sliding_layers"] = _sliding(cfg, layers, where)
    if mt == "deepseek_v3":
        return _deepseek(cfg, common, where)
    if mt == "gpt_oss":
        return _gpt_oss(cfg, common, where)
    if mt == "llama4_text":
        return _llama4(cfg, common, where)
    if mt in _LLAMA_LIKE:
        return _llama_like(cfg, common, where)
    if mt == "phi3":
        return Architecture(
            **common, gated_mlp=True, norm="rmsnorm", norms_per_layer=2, fused_qkv=True,
            fused_gate_up=True, names=_NAMES_PHI3,
            rotary_dim=int(head_dim * _rotary_fraction(cfg, "partial_rotary_factor", 1.0)),
            hidden_dropout=float(cfg.get("resid_pdrop", 0.0) or 0.0),
        )  # fmt: skip
    if mt == "phi":
        return Architecture(
            **common, gated_mlp=False, norm="layernorm", norms_per_layer=1, qkv_bias=True,
            o_bias=True, mlp_bias=True, lm_head_bias=True, names=_NAMES_PHI, parallel_residual=True,
            rotary_dim=int(head_dim * _rotary_fraction(cfg, "partial_rotary_factor", 0.5)),
            hidden_dropout=float(cfg.get("resid_pdrop", 0.0) or 0.0),
            embed_dropout=float(cfg.get("embd_pdrop", 0.0) or 0.0),
        )  # fmt: skip
    if mt == "starcoder2":
        bias = bool(cfg.get("use_bias", True))
        return Architecture(
            **common, gated_mlp=False, norm="layernorm", norms_per_layer=2, qkv_bias=bias, o_bias=bias,
            mlp_bias=bias, names=_NAMES_STARCODER2,
            hidden_dropout=float(cfg.get("residual_dropout", 0.0) or 0.0),
            embed_dropout=float(cfg.get("embedding_dropout", 0.0) or 0.0),
        )  # fmt: skip
    if mt == "gpt2":
        return Architecture(
            **common, gated_mlp=False, norm="layernorm", norms_per_layer=2, fused_qkv=True, qkv_bias=True,
            o_bias=True, mlp_bias=True, names=_NAMES_GPT2, learned_positions=int(cfg.get("n_positions", 1024)),
            softmax_upcast=bool(cfg.get("reorder_and_upcast_attn", False)),
            hidden_dropout=float(cfg.get("resid_pdrop", 0.1) or 0.0),
            embed_dropout=float(cfg.get("embd_pdrop", 0.1) or 0.0),
        )  # fmt: skip
    # gpt_neox
    return Architecture(
        **common, gated_mlp=False, norm="layernorm", norms_per_layer=2, fused_qkv=True,
        qkv_bias=True, o_bias=True, mlp_bias=True, names=_NAMES_NEOX,
        parallel_residual=bool(cfg.get("use_parallel_residual", True)),
        rotary_dim=int(head_dim * _rotary_fraction(cfg, "rotary_pct", 0.25)),
        hidden_dropout=float(cfg.get("hidden_dropout", 0.0) or 0.0),
    )  # fmt: skip


# MoE fields per model type (transformers 5 config classes): the expert count's key and default, the
# experts a token is routed to, and whether experts have their own width (moe_intermediate_size).
_MOE = {
    "mixtral": ("num_local_experts", 8, 2, None),
    "qwen3_moe": ("num_experts", 128, 8, 768),
    "qwen2_moe": ("num_experts", 60, 4, 1408),
}


def _llama_like(cfg: dict[str, Any], common: dict[str, Any], where: str) -> Architecture:
    """Llama-block families: RMSNorm, a gated MLP (or routed experts), rotary attention."""
    mt = cfg["model_type"]
    attention_bias = bool(cfg.get("attention_bias", False))
    names = dict(_NAMES_MIXTRAL if mt == "mixtral" else _NAMES_LLAMA)
    moe: dict[str, Any] = {}
    if mt in _MOE:
        key, default, k_default, width = _MOE[mt]
        experts = _positive(cfg.get(key, cfg.get("num_local_experts", default)), key, where)
        k = _positive(cfg.get("num_experts_per_tok", k_default), "num_experts_per_tok", where)
        if k > experts:
            raise JobError(f"{where}: num_experts_per_tok {k} is more than the {experts} experts.")
        if width is not None:
            moe["ffn"] = _positive(cfg.get("moe_intermediate_size", width), "moe_intermediate_size", where)
            # dense layers (an MLP of intermediate_size) where mlp_only_layers lists them or off every
            # decoder_sparse_step-th layer, as transformers 5's Qwen2/Qwen3-MoE decoder layers choose
            step = _positive(cfg.get("decoder_sparse_step", 1) or 1, "decoder_sparse_step", where)
            only = set(cfg.get("mlp_only_layers") or [])
            layers = common["layers"]
            if not only <= set(range(layers)):
                raise JobError(f"{where}: mlp_only_layers {sorted(only)} lists layers past num_hidden_layers {layers}.")
            dense = tuple(i for i in range(layers) if i in only or (i + 1) % step)
            if len(dense) == layers:
                raise JobError(f"{where}: mlp_only_layers / decoder_sparse_step leave no MoE layer. To fix: drop them.")
            if dense:
                moe.update(dense_layers=len(dense), dense_ffn=common["ffn"], dense_indices=dense)
        moe.update(experts=experts, experts_per_token=k)
        if mt != "mixtral":  # Mixtral always renormalises
            moe["norm_topk"] = bool(cfg.get("norm_topk_prob", False))
        if mt == "qwen2_moe":
            moe["shared_ffn"] = _positive(
                cfg.get("shared_expert_intermediate_size", 5632), "shared_expert_intermediate_size", where
            )
            moe["shared_gate"] = True
            names.update(shared_router="shared_expert_gate")
    if mt == "qwen2":
        qkv_bias = True
    elif mt == "qwen2_moe":
        qkv_bias = bool(cfg.get("qkv_bias", True))
    else:
        qkv_bias = attention_bias
    placement = {"gemma2": "sandwich", "gemma3_text": "sandwich", "olmo2": "post"}.get(mt, "pre")
    # Gemma2Config defaults: final_logit_softcapping 30.0, attn_logit_softcapping 50.0; Gemma3's: none
    caps = {"gemma2": (30.0, 50.0), "gemma3_text": (None, None)}.get(mt)
    return Architecture(
        **{**common, **moe}, gated_mlp=True, norm="rmsnorm", norms_per_layer=2 if placement != "sandwich" else 4,
        qkv_bias=qkv_bias, o_bias=attention_bias and mt != "qwen2_moe", mlp_bias=bool(cfg.get("mlp_bias", False)),
        names=names,
        final_softcap=caps is not None and bool(cfg.get("final_logit_softcapping", caps[0])),
        attn_softcap=caps is not None and bool(cfg.get("attn_logit_softcapping", caps[1])),
        qk_norm={"qwen3": "head", "qwen3_moe": "head", "gemma3_text": "head", "olmo2": "full"}.get(mt, ""),
        norm_style="gemma" if mt in _GEMMA else "olmo" if mt == "olmo2" else "llama",
        norm_placement=placement,
        rotary_tables=_layer_kinds(cfg, common["layers"]) if mt == "gemma3_text" else 1,
    )  # fmt: skip


def _deepseek(cfg: dict[str, Any], common: dict[str, Any], where: str) -> Architecture:
    """DeepSeek-V3: multi-head latent attention, ``first_k_dense_replace`` dense layers, then MoE layers of
    ``n_routed_experts`` (sigmoid routing limited to ``topk_group`` of ``n_group`` groups) beside
    ``n_shared_experts`` shared ones (DeepseekV3Config defaults fill what the file leaves out)."""
    layers, heads = common["layers"], common["heads"]
    rope = _positive(cfg.get("qk_rope_head_dim", 64), "qk_rope_head_dim", where)
    nope = _positive(cfg.get("qk_nope_head_dim", 128), "qk_nope_head_dim", where)
    experts = _positive(cfg.get("n_routed_experts", 256), "n_routed_experts", where)
    k = _positive(cfg.get("num_experts_per_tok", 8), "num_experts_per_tok", where)
    groups = _positive(cfg.get("n_group", 8), "n_group", where)
    group_topk = _positive(cfg.get("topk_group", 4), "topk_group", where)
    if experts % groups or group_topk > groups or k > experts:
        raise JobError(
            f"{where}: n_routed_experts {experts}, n_group {groups}, topk_group {group_topk} and num_experts_per_tok "
            f"{k} do not fit: experts must split into the groups, and a token can use at most every group."
        )
    dense = int(cfg.get("first_k_dense_replace", 3) or 0)
    if not 0 <= dense <= layers:
        raise JobError(f"{where}: first_k_dense_replace {dense} is not between 0 and num_hidden_layers {layers}.")
    moe_ffn = _positive(cfg.get("moe_intermediate_size", 2048), "moe_intermediate_size", where)
    bias = bool(cfg.get("attention_bias", False))
    return Architecture(
        **{**common, "kv_heads": heads, "head_dim": nope + rope, "ffn": moe_ffn}, gated_mlp=True, norm="rmsnorm",
        norms_per_layer=2, o_bias=bias, names=_NAMES_LLAMA,
        q_lora_rank=int(cfg.get("q_lora_rank", 1536) or 0),
        kv_lora_rank=_positive(cfg.get("kv_lora_rank", 512), "kv_lora_rank", where),
        rope_head_dim=rope, v_head_dim=_positive(cfg.get("v_head_dim", 128), "v_head_dim", where),
        rotary_dim=rope, experts=experts, experts_per_token=k, routing="sigmoid",
        norm_topk=bool(cfg.get("norm_topk_prob", True)),
        shared_ffn=moe_ffn * int(cfg.get("n_shared_experts", 1) or 0),
        dense_layers=dense, dense_ffn=common["ffn"],
    )  # fmt: skip


def _gpt_oss(cfg: dict[str, Any], common: dict[str, Any], where: str) -> Architecture:
    """gpt-oss: every layer a MoE of ``num_local_experts`` (fused gate/up with biases, clamped SwiGLU), the
    router with a bias; attention with biases and a learned sink per head, every other layer through a
    sliding window (GptOssConfig defaults fill what the file leaves out)."""
    experts = _positive(cfg.get("num_local_experts", cfg.get("num_experts", 128)), "num_local_experts", where)
    k = _positive(cfg.get("num_experts_per_tok", 4), "num_experts_per_tok", where)
    if k > experts:
        raise JobError(f"{where}: num_experts_per_tok {k} is more than the {experts} experts.")
    bias = bool(cfg.get("attention_bias", True))
    return Architecture(
        **common, gated_mlp=True, fused_gate_up=True, norm="rmsnorm", norm_style="olmo", norms_per_layer=2,
        qkv_bias=bias, o_bias=bias, mlp_bias=True, experts=experts, experts_per_token=k, routing="topk-softmax",
        router_bias=True, attn_sinks=True, softmax_upcast=False, names=_NAMES_GPT_OSS,
        rotary_dim=common["head_dim"] // 2,  # its cos/sin tables cover half a head (each half rotates by them)
    )  # fmt: skip


def _llama4(cfg: dict[str, Any], common: dict[str, Any], where: str) -> Architecture:
    """Llama 4 (transformers 5's Llama4TextModel): a MoE layer every ``interleave_moe_layer_step`` layers
    (``num_local_experts`` fused experts, a sigmoid top-k router, a shared expert of ``intermediate_size``),
    dense layers of ``intermediate_size_mlp`` between; every ``no_rope_layer_interval``-th layer without
    rotary embeddings (and with temperature-scaled queries), the others with an L2 norm on q and k and,
    from ``attention_chunk_size`` tokens, attention inside chunks (Llama4TextConfig defaults fill the rest)."""
    layers = common["layers"]
    experts = _positive(cfg.get("num_local_experts", 16), "num_local_experts", where)
    k = _positive(cfg.get("num_experts_per_tok", 1), "num_experts_per_tok", where)
    if k > experts:
        raise JobError(f"{where}: num_experts_per_tok {k} is more than the {experts} experts.")
    step = _positive(cfg.get("interleave_moe_layer_step", 1), "interleave_moe_layer_step", where)
    moe = [i for i in range(layers) if (i + 1) % step == 0]
    given = cfg.get("moe_layers")
    if given is not None and sorted(given) != moe:
        raise JobError(
            f"{where}: moe_layers {given} is not every interleave_moe_layer_step-th layer ({moe}), the pattern "
            "ftplan models. To fix: drop moe_layers or give the interleaved pattern."
        )
    interval = _positive(cfg.get("no_rope_layer_interval", 4), "no_rope_layer_interval", where)
    rope = cfg.get("no_rope_layers") or [int((i + 1) % interval != 0) for i in range(layers)]
    if len(rope) != layers:
        raise JobError(f"{where}: no_rope_layers has {len(rope)} entries for {layers} layers.")
    nope = tuple(not r for r in rope)
    chunk = cfg.get("attention_chunk_size", 8192)
    types = cfg.get("layer_types")
    if not (isinstance(types, list) and len(types) == layers):
        types = ["chunked_attention" if r else "full_attention" for r in rope]
    chunked = tuple(t == "chunked_attention" for t in types)
    ffn = _positive(_req(cfg, "intermediate_size", where), "intermediate_size", where)
    dense_ffn = _positive(cfg.get("intermediate_size_mlp", 16384), "intermediate_size_mlp", where)
    window = _positive(chunk, "attention_chunk_size", where) if chunk and any(chunked) else 0
    return Architecture(
        **{**common, "sliding_window": window, "sliding_layers": chunked if window else ()},
        gated_mlp=True, norm="rmsnorm", norms_per_layer=2, qkv_bias=bool(cfg.get("attention_bias", False)),
        o_bias=bool(cfg.get("attention_bias", False)), names=_NAMES_LLAMA, experts=experts, experts_per_token=k,
        routing="llama4", shared_ffn=ffn, dense_layers=layers - len(moe), dense_ffn=dense_ffn,
        dense_indices=tuple(i for i in range(layers) if i not in moe),
        nope_layers=nope, qk_norm="l2" if cfg.get("use_qk_norm", True) else "",
        attn_temperature=bool(cfg.get("attn_temperature_tuning", True)),
        softmax_upcast=False,  # its eager attention keeps the softmax in the scores' dtype
    )  # fmt: skip


def _layer_kinds(cfg: dict[str, Any], layers: int) -> int:
    """Gemma 3's kinds of attention layer (local, global) present: each has its own rotary tables."""
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == layers:
        return len(set(types))
    pattern = int(cfg.get("sliding_window_pattern", 6))
    return 2 if 1 < pattern <= layers else 1


# transformers 5's sliding-window defaults per model type: the window when the config leaves
# `sliding_window` out (configuration_<model>.py), and which layers use it.
_SLIDING_DEFAULT = dict.fromkeys(("mistral", "qwen2", "qwen3", "qwen3_moe", "gemma2", "gemma3_text"), 4096)
_SLIDING_DEFAULT["gpt_oss"] = 128
# Families whose window applies only with use_sliding_window: true
_SLIDING_OPT_IN = ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe")


def _sliding(cfg: dict[str, Any], layers: int, where: str) -> tuple[int, tuple[bool, ...]]:
    """The sliding window and the layers that use it, as transformers 5 derives them: every layer
    for Mistral, Mixtral, Phi-3, StarCoder2 and Qwen3-MoE when ``sliding_window`` is set; Qwen2
    and Qwen3 only with ``use_sliding_window``, from layer ``max_window_layers`` on (Qwen2-MoE: every
    other layer below it; Qwen3-MoE: every layer); Gemma 2 and gpt-oss every other layer from the
    first; Gemma 3 all but every ``sliding_window_pattern``-th (6). An explicit ``layer_types`` list wins."""
    mt = cfg["model_type"]
    if mt not in ("mistral", "mixtral", "phi3", "starcoder2", "gemma2", "gemma3_text", "gpt_oss", *_SLIDING_OPT_IN):
        return 0, ()
    window = cfg.get("sliding_window", _SLIDING_DEFAULT.get(mt))
    if mt in _SLIDING_OPT_IN and not cfg.get("use_sliding_window", False):
        window = None
    if not window:
        return 0, ()
    window = _positive(window, "sliding_window", where)
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == layers:
        sliding = tuple(t == "sliding_attention" for t in types)
    elif mt in ("qwen2", "qwen3"):
        first = int(cfg.get("max_window_layers", 28))
        sliding = tuple(i >= first for i in range(layers))
    elif mt == "qwen2_moe":  # every other layer, below max_window_layers
        last = int(cfg.get("max_window_layers", 28))
        sliding = tuple(i % 2 == 0 and i < last for i in range(layers))
    elif mt in ("gemma2", "gpt_oss"):
        sliding = tuple(i % 2 == 0 for i in range(layers))
    elif mt == "gemma3_text":
        pattern = _positive(cfg.get("sliding_window_pattern", 6), "sliding_window_pattern", where)
        sliding = tuple((i + 1) % pattern != 0 for i in range(layers))
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
