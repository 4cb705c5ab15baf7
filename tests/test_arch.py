"""Parameter counts from architectures: exact on known models, within 1% of every official count."""

from __future__ import annotations

import pytest

from ftplan.arch import Kind, architecture_from_hf
from ftplan.errors import JobError


def test_every_catalog_model_matches_its_official_count(catalog):
    assert len(catalog.models) >= 25
    for entry in catalog.models.values():
        arch = architecture_from_hf(entry.config, entry.id)
        assert abs(arch.total_params / entry.params_official - 1) < 0.01, entry.id


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


def test_public_api():
    import ftplan

    for name in ftplan.__all__:
        assert getattr(ftplan, name) is not None
    job = ftplan.load_job(
        __import__("pathlib").Path(__file__).resolve().parents[1] / "scenarios/jobs/llama-8b-lora-h100.yaml"
    )
    est = ftplan.estimate_job(ftplan.resolve_job(job, ftplan.load_catalog(user_models=None)))
    assert est.fits is True
