"""Which parameters a method trains, which it freezes, and how they are stored.

LoRA (Hu et al. 2021) adds ``r·(d_in + d_out)`` trainable parameters to each targeted linear
layer; ``modules_to_save`` makes trainable copies of whole modules (PEFT keeps the original
too). QLoRA (Dettmers et al. 2023) stores the frozen linear weights of the blocks in NF4:
4 bits per weight plus one fp32 absmax per block of 64 (0.5 bit a weight), or with double
quantisation an 8-bit absmax per block plus one fp32 constant per 256 blocks
(8/64 + 32/(64·256) ≈ 0.127 bit a weight). Embeddings, the LM head and norms stay 16-bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ftplan.arch import Architecture, Kind, Linear
from ftplan.errors import JobError
from ftplan.memory.setup import LoraSetup, Method, Training

ALL_LINEAR = "all-linear"


@dataclass(frozen=True, slots=True)
class ParamSplit:
    """Parameter counts by role. ``*_matrix`` are weight matrices (TP-split, 8-bit-optimizable),
    ``*_vector`` biases and norms (replicated under TP), ``*_embed`` embeddings and LM head."""

    trainable_matrix: int
    trainable_vector: int
    trainable_embed: int
    frozen_matrix: int  # block linear weights (NF4 under QLoRA)
    frozen_vector: int
    frozen_embed: int
    quant_bits_per_weight: float  # storage bits of frozen_matrix under QLoRA (0: not quantised)
    trainable_factored: int  # sum of rows + columns of trainable matrices (Adafactor)
    largest_trainable: int  # elements of the largest trainable tensor
    frozen_unquantized: int = 0  # QLoRA: frozen matrices bitsandbytes leaves 16-bit (see quantized_linear)

    @property
    def trainable(self) -> int:
        return self.trainable_matrix + self.trainable_vector + self.trainable_embed

    @property
    def frozen(self) -> int:
        return self.frozen_matrix + self.frozen_unquantized + self.frozen_vector + self.frozen_embed


def quantized_linear(x: Linear) -> bool:
    """Whether QLoRA's 4-bit loading quantises ``x``: transformers 5 replaces only ``nn.Linear`` and
    ``Conv1D`` modules with bitsandbytes ones (integrations/bitsandbytes.py, replace_with_bnb_linear), so a
    MoE's fused 3-D expert weights and its router module keep the 16-bit dtype they load in."""
    return not x.expert and x.role != "router"


def nf4_bits_per_weight(lora: LoraSetup) -> float:
    """Storage bits of one NF4 weight with its quantisation constants (bitsandbytes layout)."""
    block = lora.quant_block
    if lora.double_quant:
        return 4 + 8 / block + 32 / (block * 256)
    return 4 + 32 / block


def lora_targets(arch: Architecture, lora: LoraSetup) -> set[str]:
    """The adapted linears' names. ``all-linear`` covers every block linear, the MoE router and
    experts included (PEFT ≥ 0.17 over transformers 5)."""
    names = arch.linear_names
    experts = _parameter_targets(arch, lora.target_parameters)
    if ALL_LINEAR in lora.target_modules:
        return set(names) | experts
    unknown = [t for t in lora.target_modules if t not in names]
    if unknown:
        raise JobError(
            f"lora.target_modules: {', '.join(unknown)} not in a {arch.model_type} block. "
            f"To fix: use some of {', '.join(sorted(names))} or '{ALL_LINEAR}'."
        )
    targets = set(lora.target_modules) | experts
    gate, up = (arch.names.get(r) for r in ("gate", "up"))
    if arch.is_moe and arch.routing != "llama4" and (gate in targets) != (up in targets):
        raise JobError(
            f"lora.target_modules: {gate} and {up} are one fused gate_up_proj in transformers 5, which PEFT "
            f"adapts whole. To fix: target both {gate} and {up}, or neither."
        )
    return targets


def _parameter_targets(arch: Architecture, parameters: tuple[str, ...]) -> set[str]:
    """The expert linears PEFT's ``target_parameters`` name (by the parameter's last name component):
    modelled for gpt-oss, whose fused experts target_modules cannot reach."""
    if not parameters:
        return set()
    experts = {x.name: x for x in arch.block_linears.get("main", []) if x.expert}
    if arch.model_type != "gpt_oss":
        raise JobError(
            f"lora.target_parameters is modelled for gpt-oss's experts; PEFT reaches {arch.model_type}'s through "
            "target_modules. To fix: drop target_parameters and name the modules in target_modules."
        )
    out = set()
    for p in parameters:
        leaf = p.rsplit(".", 1)[-1]
        if leaf not in experts:
            raise JobError(
                f"lora.target_parameters: {p} names no expert weight of a {arch.model_type} block. To fix: use "
                f"{' and/or '.join(f'mlp.experts.{n}' for n in sorted(experts))}."
            )
        out.add(leaf)
    return out


def lora_params(x: Linear, rank: int) -> int:
    """Adapter parameters LoRA of ``rank`` adds to one linear ``x`` (all its copies). Fused MoE experts
    (transformers 5): gate_up_proj gets rank 2r for each expert, A (E·2r × h) and B (2f × E·2r), so
    each of gate and up counts half of it, r·E·(h + 2f) (PEFT's transformers weight conversion);
    down_proj has A (E·r × f) and B (h × E·r)."""
    fused = x.expert and x.role in ("gate", "up")
    return rank * x.count * (x.d_in + (2 * x.d_out if fused else x.d_out))


def parameter_targets(arch: Architecture, targets: frozenset[str] | set[str]) -> frozenset[str]:
    """Targets PEFT adapts as parameters (``ParamWrapper``: the LoRA product folded into the weight
    on every forward) rather than as a linear with its own adapter path: a MoE's router and its
    fused expert weights (transformers 5 keeps them as 3-D parameters)."""
    if not arch.is_moe:
        return frozenset()
    roles = {"router", "gate", "up", "gate_up", "down"}
    return frozenset(x.name for x in arch.block_linears["main"] if x.role in roles and x.name in targets)


def split_params(arch: Architecture, training: Training) -> ParamSplit:
    """Count trainable and frozen parameters for the job's method."""
    return _split(arch, training.method, training.lora)


@lru_cache(maxsize=4096)
def _split(arch: Architecture, method: Method, lora_setup: LoraSetup | None) -> ParamSplit:
    embed = arch.embedding_params + arch.lm_head_params
    vector = arch.total_params - arch.matrix_params - embed
    matrices = [(x, arch.layers_of(stack)) for stack, xs in arch.block_linears.items() for x in xs]
    if method is Method.FULL:
        largest = max(arch.largest_linear_params, arch.vocab * arch.hidden)
        factored = sum((x.d_in + x.d_out) * x.count * n for x, n in matrices)
        return ParamSplit(arch.matrix_params, vector, embed, 0, 0, 0, 0.0, factored, largest)
    lora = lora_setup or LoraSetup()
    targets = lora_targets(arch, lora)
    adapters = 0
    factored = 0
    largest = 0
    for x, n in matrices:
        if x.name in targets:  # PEFT accepts any rank, even above the layer's width: so does the model
            r, e = lora.rank, x.count
            adapters += lora_params(x, r) * n
            if x.expert and x.role in ("gate", "up"):  # half of the fused gate_up_proj's A and B
                factored += (4 * r * e + x.d_in + 2 * x.d_out) * n // 2
                largest = max(largest, 2 * r * e * max(x.d_in, 2 * x.d_out))
            elif x.expert:  # the fused down_proj: A (E·r × f) and B (h × E·r)
                factored += (2 * r * e + x.d_in + x.d_out) * n
                largest = max(largest, r * e * max(x.d_in, x.d_out))
            else:
                factored += (2 * r + x.d_in + x.d_out) * n
                largest = max(largest, r * max(x.d_in, x.d_out))
    saved_embed = 0
    for m in lora.modules_to_save:
        if m in ("embed_tokens", "wte", "word_embeddings", "shared", "embed_in") or m in ("lm_head", "embed_out"):
            saved_embed += arch.vocab * arch.hidden
        else:
            raise JobError(f"lora.modules_to_save: {m!r} is not supported. To fix: use embed_tokens or lm_head.")
    if arch.kind is Kind.ENCODER:  # PEFT's sequence-classification task trains a copy of the head
        saved_embed += arch.lm_head_params
    largest = max(largest, arch.vocab * arch.hidden if saved_embed else 0)
    bits = nf4_bits_per_weight(lora) if method is Method.QLORA else 0.0
    unquantized = (
        sum(x.weight_params * n for x, n in matrices if not quantized_linear(x)) if method is Method.QLORA else 0
    )
    return ParamSplit(
        trainable_matrix=adapters, trainable_vector=0, trainable_embed=saved_embed,
        frozen_matrix=arch.matrix_params - unquantized, frozen_vector=vector, frozen_embed=embed,
        quant_bits_per_weight=bits, trainable_factored=factored, largest_trainable=largest,
        frozen_unquantized=unquantized,
    )  # fmt: skip


@lru_cache(maxsize=1024)
def largest_block(arch: Architecture, tp: int = 1) -> float:
    """Parameters of the largest transformer block on one GPU of ``tp`` tensor-parallel ranks (what ZeRO-3
    gathers at a time, and the unit of the buckets ftplan writes to DeepSpeed configs)."""
    return max(arch.layer_matrix_params[st] / tp + arch.layer_vector_params[st] for st in arch.block_linears)
