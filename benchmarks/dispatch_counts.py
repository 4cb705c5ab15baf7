"""Operations a layer dispatches in an eager training micro-step: measured on tiny models beside the time
model's counts (:mod:`ftplan.timing.dispatch`).

Each case is a job of the measured grid's families; the measured count is the difference between the model
with three and with two layers (``ftplan.measure.dispatch.layer_ops``). The time model's table was read from
this script's Llama rows (family bases from their own rows); the other rows show how far its structural
increments (LoRA adapters, frozen linears, eager attention) carry, and Gemma 2's how far a family the table
does not hold is from the fallback it takes.

With ``--optimizers`` it prints instead the bytes each PyTorch optimizer's step reads and writes a parameter
(``ftplan.measure.dispatch.optimizer_step_bytes``), fp32 and bf16, beside the time model's
``OPTIMIZER_BYTES``.

Usage: python benchmarks/dispatch_counts.py [--optimizers]
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import replace

from ftplan.catalog import load_catalog
from ftplan.job import resolve_job
from ftplan.measure.dispatch import layer_ops, optimizer_step_bytes
from ftplan.memory.setup import Optimizer, Precision
from ftplan.report.tables import render_table
from ftplan.schema.job import parse_job
from ftplan.timing import dispatch

CONFIGS = {  # the measured grid's tiny configurations (benchmarks/measured_grid.yaml), 2 layers
    "llama": {"model_type": "llama", "hidden_size": 256, "intermediate_size": 704, "num_attention_heads": 8,
              "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 1000, "tie_word_embeddings": False},
    "qwen2": {"model_type": "qwen2", "hidden_size": 128, "intermediate_size": 384, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 800, "tie_word_embeddings": True},
    "qwen3": {"model_type": "qwen3", "hidden_size": 128, "intermediate_size": 384, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 32, "num_hidden_layers": 2, "vocab_size": 800},
    "mistral": {"model_type": "mistral", "hidden_size": 192, "intermediate_size": 512, "num_attention_heads": 6,
                "num_key_value_heads": 6, "num_hidden_layers": 2, "vocab_size": 1200},
    "mixtral": {"model_type": "mixtral", "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
                "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 600, "num_local_experts": 4,
                "num_experts_per_tok": 2},
    "phi": {"model_type": "phi", "hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 8,
            "num_hidden_layers": 2, "vocab_size": 1000, "partial_rotary_factor": 0.5, "tie_word_embeddings": False},
    "gpt_neox": {"model_type": "gpt_neox", "hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 8,
                 "num_hidden_layers": 2, "vocab_size": 1000, "rotary_pct": 0.25, "tie_word_embeddings": False},
    "gemma2": {"model_type": "gemma2", "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 32, "num_hidden_layers": 2, "vocab_size": 600},
}  # fmt: skip

VARIANTS = {  # job fields beside the architecture
    "full, bf16-mixed": {},
    "full, bf16-pure": {"precision": "bf16-pure"},
    "full, fp32": {"precision": "fp32"},
    "full, eager attention": {"attention": "eager"},
    "LoRA all-linear, bf16-mixed": {"method": "lora", "lora": {"rank": 8, "target_modules": "all-linear"}},
    "LoRA attention, bf16-mixed": {"method": "lora", "lora": {"rank": 8}},
    "LoRA all-linear, bf16-pure": {"method": "lora", "precision": "bf16-pure",
                                   "lora": {"rank": 8, "target_modules": "all-linear"}},
    "LoRA all-linear, dropout, bf16-mixed": {"method": "lora",
                                             "lora": {"rank": 8, "target_modules": "all-linear", "dropout": 0.05}},
    "LoRA all-linear, bf16-fp32-adapters": {"method": "lora", "precision": "bf16-fp32-adapters",
                                            "lora": {"rank": 8, "target_modules": "all-linear"}},
    "LoRA attention, dropout, bf16-fp32-adapters": {"method": "lora", "precision": "bf16-fp32-adapters",
                                                    "lora": {"rank": 8, "dropout": 0.1}},
    "LoRA attention, dropout, bf16-pure": {"method": "lora", "precision": "bf16-pure",
                                           "lora": {"rank": 8, "dropout": 0.1}},
}  # fmt: skip


def job(family: str, variant: str):
    data = {"architecture": CONFIGS[family], "precision": "bf16-mixed", "seq_len": 64, "micro_batch": 2,
            "dropout": False, **VARIANTS[variant]}  # fmt: skip
    if family == "gemma2":  # (transformers builds it with eager attention only)
        data["attention"] = "eager"
    return resolve_job(parse_job(data, f"{family} {variant}"), load_catalog(), f"{family} {variant}")


def rows(families: list[str], variants: list[str]) -> list[tuple[str, str, tuple[int, int], tuple[float, float]]]:
    """(family, variant, measured (forward, backward), modelled) for each pair."""
    out = []
    for family in families:
        for variant in variants:
            if CONFIGS[family].get("num_local_experts") and "dropout" in variant and "all-linear" in variant:
                continue  # (PEFT refuses dropout on the experts' folded adapters)
            j = job(family, variant)
            out.append((family, variant, layer_ops(j), dispatch.layer_ops(j.arch, j.training)))
    return out


# PyTorch's optimizers, which run on a CPU (bitsandbytes' do not: their bytes are derived, OPTIMIZER_BYTES)
TORCH_OPTIMIZERS = (Optimizer.ADAMW, Optimizer.ADAMW_FUSED, Optimizer.ADAMW_FORLOOP, Optimizer.SGD, Optimizer.ADAFACTOR)


def optimizer_rows() -> list[tuple[Optimizer, int, float, float]]:
    """(optimizer, master bytes, measured bytes a parameter, modelled) for each PyTorch optimizer, fp32 and bf16."""
    base = job("llama", "full, bf16-mixed")
    out = []
    for opt in TORCH_OPTIMIZERS:
        for master, precision in ((4, Precision.BF16_MIXED), (2, Precision.BF16_PURE)):
            training = replace(base.training, optimizer=opt, precision=precision)
            measured = optimizer_step_bytes(replace(base, training=training), master)
            out.append((opt, master, measured, dispatch.optimizer_bytes(training)))
    return out


def main() -> None:
    warnings.filterwarnings("ignore")
    if "--optimizers" in sys.argv[1:]:
        table = [[opt.value, "fp32" if master == 4 else "bf16", f"{m:.2f}", f"{e:.2f}", f"{e / m - 1:+.1%}"]
                 for opt, master, m, e in optimizer_rows()]  # fmt: skip
        print(render_table(["optimizer", "parameters", "measured B/param", "model", "error"], table, right={2, 3, 4}))
        return
    table = []
    for family, variant, (mf, mb), (ef, eb) in rows(list(CONFIGS), list(VARIANTS)):
        err = (ef + eb) / (mf + mb) - 1
        table.append([family, variant, str(mf), f"{ef:.0f}", str(mb), f"{eb:.0f}", f"{err:+.1%}"])
    print(render_table(["family", "job", "forward", "model", "backward", "model", "total error"], table,
                       right={2, 3, 4, 5, 6}))  # fmt: skip


if __name__ == "__main__":
    main()
