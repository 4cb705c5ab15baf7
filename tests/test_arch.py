"""Parameter counts from architectures: exact on known models, and every catalog model's count equal
to its official figure to the figure's stated precision (one unit of its last digit)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ftplan.arch import Kind, architecture_from_hf
from ftplan.errors import JobError


def _unit(figure: float) -> float:
    """One unit of the last significant digit of an official figure (8.2e9 → 0.1e9; 124439808 → 1). Cards
    round or truncate their figure there (Qwen3-30B-A3B's 3.35B activated reads "3.3B")."""
    digits = f"{figure:.15g}".rstrip("0").rstrip(".")
    return float(10 ** (len(str(int(figure))) - len(digits.replace(".", "").lstrip("0"))))


def test_unit():
    assert _unit(8.2e9) == 0.1e9
    assert _unit(124_439_808) == 1
    assert math.isclose(_unit(6.74e9), 0.01e9)


# Figures that disagree with the weights beyond their precision, checked within 1%: Qwen2.5-32B's card
# says 32.5B where its hub safetensors hold 32.8B.
_LOOSE = {"qwen2.5-32b"}


def test_every_catalog_model_matches_its_official_count(catalog):
    assert len(catalog.models) >= 62
    for entry in catalog.models.values():
        arch = architecture_from_hf(entry.config, entry.id)
        tol = 0.01 * entry.params_official if entry.id in _LOOSE else _unit(entry.params_official)
        assert abs(arch.total_params - entry.params_official) <= tol, (entry.id, arch.total_params)
        if entry.params_active_official:
            tol = _unit(entry.params_active_official)
            assert abs(arch.active_params - entry.params_active_official) <= tol, (entry.id, arch.active_params)


@pytest.mark.parametrize(
    ("model", "exact"),
    [
        ("t5-small", 60_506_624),  # 16,449,536 embedding + 6 × 3,146,752 encoder + 6 × 4,195,840 decoder + ...
        # BertForSequenceClassification, 2 labels: 23,837,184 embeddings + 12 × 7,087,872 + 590,592
        # pooler + 1,538 classifier
        ("bert-base-uncased", 109_483_778),
        ("llama-2-7b", 6_738_415_616),
    ],
)
def test_exact_counts(catalog, model, exact):
    assert catalog.architecture(model).total_params == exact


def test_kinds_and_moe(catalog):
    assert catalog.architecture("flan-t5-base").kind is Kind.ENCODER_DECODER
    assert catalog.architecture("roberta-base").kind is Kind.ENCODER
    mixtral = catalog.architecture("mixtral-8x7b")
    assert mixtral.experts == 8 and mixtral.experts_per_token == 2
    # 12.9B active per token (Mistral AI announcement)
    assert abs(mixtral.active_params / 12.9e9 - 1) < 0.01


def test_gqa_head_dim_from_config(catalog):
    g = catalog.architecture("gemma-2-2b")
    assert (g.heads, g.kv_heads, g.head_dim, g.q_dim) == (8, 4, 256, 2048)


def test_bad_configs_name_the_field():
    with pytest.raises(JobError, match="num_key_value_heads"):
        architecture_from_hf(
            {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 3, "intermediate_size": 128, "vocab_size": 100}
        )  # fmt: skip
    with pytest.raises(JobError, match="Did you mean: llama"):
        architecture_from_hf({"model_type": "lama"})
    with pytest.raises(JobError, match="hidden_size"):
        architecture_from_hf({"model_type": "mistral", "num_hidden_layers": 2})
    # 0 is not a head count or width: refused, not read as "absent" (multi-head attention, the default width)
    small = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 128, "vocab_size": 100}  # fmt: skip
    for key in ("num_key_value_heads", "head_dim"):
        with pytest.raises(JobError, match=f"'{key}' must be a positive integer, got 0"):
            architecture_from_hf(small | {key: 0})
    assert architecture_from_hf(small | {"num_key_value_heads": None, "head_dim": None}).kv_heads == 4


def test_public_api():
    import ftplan

    for name in ftplan.__all__:
        assert getattr(ftplan, name) is not None
    job = ftplan.load_job(
        __import__("pathlib").Path(__file__).resolve().parents[1] / "scenarios/jobs/llama-8b-lora-h100.yaml"
    )
    est = ftplan.estimate_job(ftplan.resolve_job(job, ftplan.load_catalog(user_models=None)))
    assert est.fits is True


def test_every_grid_architecture_counts_what_transformers_builds(catalog):
    """Each architecture of the measured grid (one or more per supported family), built by transformers
    on the meta device: its parameter count equals ftplan's."""
    pytest.importorskip("transformers")
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    from ftplan.io import read_yaml
    from ftplan.job import resolve_job
    from ftplan.measure.build import hf_config
    from ftplan.schema.job import parse_job

    auto = {Kind.ENCODER_DECODER: AutoModelForSeq2SeqLM, Kind.ENCODER: AutoModelForSequenceClassification}
    grid = read_yaml(Path(__file__).parents[1] / "benchmarks" / "measured_grid.yaml")
    families = set()
    for cfg in {repr(c["job"]["architecture"]): c["job"]["architecture"] for c in grid["cases"]}.values():
        job = resolve_job(parse_job({"architecture": cfg, "method": "full", "seq_len": 8}, "grid"), catalog)
        with torch.device("meta"):
            model = auto.get(job.arch.kind, AutoModelForCausalLM).from_config(hf_config(job))
        assert sum(p.numel() for p in model.parameters()) == job.arch.total_params, cfg
        families.add(job.arch.model_type)
    assert families >= {
        "qwen3", "qwen3_moe", "qwen2_moe", "gemma3_text", "olmo2", "granite", "starcoder2", "gpt2", "deepseek_v3",
        "gpt_oss", "llama4_text",
    }  # fmt: skip


# Llama 4's language models as their hub repositories publish them (config.json, text_config): Scout
# (16 experts in every layer, q/k norm) and Maverick (128 experts every other layer, no q/k norm)
_LLAMA4 = {"model_type": "llama4_text", "hidden_size": 5120, "intermediate_size": 8192, "intermediate_size_mlp": 16384,
           "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128, "num_hidden_layers": 48,
           "vocab_size": 202048, "attention_chunk_size": 8192, "tie_word_embeddings": False}  # fmt: skip
SCOUT = dict(_LLAMA4, num_local_experts=16, num_experts_per_tok=1, interleave_moe_layer_step=1, use_qk_norm=True)
MAVERICK = dict(_LLAMA4, num_local_experts=128, num_experts_per_tok=1, interleave_moe_layer_step=2, use_qk_norm=False)


@pytest.mark.parametrize(("cfg", "billions"), [(SCOUT, 107.77), (MAVERICK, 400.71)], ids=["scout", "maverick"])
def test_llama4_counts_what_transformers_builds(cfg, billions):
    """Llama 4's text models (Meta's cards: 109B and 400B with the vision encoder), built on the meta device."""
    pytest.importorskip("transformers")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = architecture_from_hf(cfg)
    fields = {k: v for k, v in cfg.items() if k != "model_type"}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama4_text", **fields))
    assert sum(p.numel() for p in model.parameters()) == arch.total_params
    assert arch.total_params / 1e9 == pytest.approx(billions, abs=0.01)
    dense = 0 if cfg["interleave_moe_layer_step"] == 1 else 24
    assert (arch.dense_layers, sum(arch.nope_layers), len(arch.stack_indices["main"])) == (dense, 12, 48 - dense)
    assert arch.active_params / 1e9 == pytest.approx(17.2, abs=0.1)  # "17B active"


def test_a_multimodal_checkpoint_is_refused_with_its_text_model_named():
    cfg = {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", "hidden_size": 2560}}
    with pytest.raises(JobError, match="text_config \\(model_type 'gemma3_text'\\)"):
        architecture_from_hf(cfg, "config.json")


def test_qwen_moe_dense_layers_follow_sparse_step_and_mlp_only_layers():
    base = {"model_type": "qwen3_moe", "hidden_size": 96, "intermediate_size": 256, "moe_intermediate_size": 64,
            "num_experts": 6, "num_experts_per_tok": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 32, "num_hidden_layers": 6, "vocab_size": 300}  # fmt: skip
    step = architecture_from_hf(dict(base, decoder_sparse_step=3))
    assert step.stack_indices == {"dense": (0, 1, 3, 4), "main": (2, 5)}
    assert (step.dense_layers, step.dense_ffn) == (4, 256)
    only = architecture_from_hf(dict(base, mlp_only_layers=[0, 4]))
    assert only.stack_indices == {"dense": (0, 4), "main": (1, 2, 3, 5)}
    assert architecture_from_hf(base).stack_indices == {"main": tuple(range(6))}
    with pytest.raises(JobError, match="past num_hidden_layers 6"):
        architecture_from_hf(dict(base, mlp_only_layers=[7]))
    with pytest.raises(JobError, match="leave no MoE layer"):
        architecture_from_hf(dict(base, mlp_only_layers=list(range(6))))
