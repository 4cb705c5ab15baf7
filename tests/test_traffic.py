"""The time model's memory-bound term (:mod:`ftplan.timing.traffic`): its table against the bytes real micro-steps
move, the fused stack's derived bytes in exact arithmetic, their time, and its invariants."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.arch import architecture_from_hf
from ftplan.job import resolve_job
from ftplan.memory.setup import Kernels, LoraSetup, Method, Precision, Training
from ftplan.schema.job import parse_job
from ftplan.timing import model as tm
from ftplan.timing import traffic

HW = tm.Hardware(peak_tflops=100.0, efficiency=0.5, hbm_gbs=1000.0, intra_node_gbs=450.0, host_link_gbs=32.0,
                 gpus_per_node=8, network_gbps=3200.0)  # fmt: skip
# A configuration none of benchmarks/layer_traffic.py's fitted variants is (its check: every width doubled)
LLAMA = {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1408, "num_attention_heads": 16,
         "num_key_value_heads": 4, "head_dim": 32, "num_hidden_layers": 2, "vocab_size": 2000,
         "tie_word_embeddings": False}  # fmt: skip
NEOX = {"model_type": "gpt_neox", "hidden_size": 384, "intermediate_size": 1536, "num_attention_heads": 12,
        "num_hidden_layers": 2, "vocab_size": 1500, "rotary_pct": 0.25, "tie_word_embeddings": False}  # fmt: skip


def _job(catalog, config: dict, precision: str):
    data = {"architecture": config, "precision": precision, "seq_len": 32, "micro_batch": 2, "dropout": False}
    return resolve_job(parse_job(data, "traffic"), catalog, "traffic")


@pytest.mark.parametrize(("config", "precision"), [(LLAMA, "bf16-mixed"), (NEOX, "bf16-pure")])
def test_the_table_is_what_a_layer_and_the_head_move_at_widths_it_was_not_fitted_on(catalog, config, precision):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from ftplan.measure.dispatch import token_traffic

    job = _job(catalog, config, precision)
    (lf, lb), (hf, hb) = token_traffic(job)
    mf, mb, ef, eb = traffic.token_bytes(job.arch, job.training)
    assert mf == pytest.approx(lf, rel=5e-3)
    assert mb == pytest.approx(lb, rel=5e-3)
    assert ef + eb == pytest.approx(hf + hb, rel=0.02)


def test_a_fused_stack_moves_what_its_kernels_read_and_write(catalog):
    arch = catalog.architecture("llama-3.1-8b", "test")
    h, f, q, kv = 4096, 14336, 4096, 1024
    tr = Training(seq_len=2048, kernels=Kernels.FUSED)
    fwd, bwd, head_fwd, head_bwd = traffic.token_bytes(arch, tr)
    # two norms (2h, 3h), two residual adds (3h each way), rotary on q and k (2(q + kv) each way), SwiGLU (3f, 5f)
    assert fwd == 2 * (2 * 2 * h + 2 * 3 * h + 2 * (q + kv) + 3 * f)
    assert bwd == 2 * (2 * 3 * h + 2 * 3 * h + 2 * (q + kv) + 5 * f)
    # final norm, embedding lookup and its gradient, cross-entropy reading the logits (and writing their gradient)
    assert head_fwd == 2 * (2 * h + 2 * h + 128256)
    assert head_bwd == 2 * (3 * h + 2 * h + 2 * 128256)
    lora = Training(seq_len=2048, kernels=Kernels.FUSED, method=Method.LORA, lora=LoraSetup(rank=8))
    assert traffic.token_bytes(arch, lora)[3] == head_bwd - 2 * 2 * h  # frozen embeddings: no gradient scattered
    fp32 = traffic.token_bytes(arch, dataclasses.replace(tr, precision=Precision.FP32))
    assert fp32 == tuple(2 * x for x in (fwd, bwd, head_fwd, head_bwd))


def test_an_eager_layer_is_the_measured_coefficients_at_its_widths_and_others_take_the_largest(catalog):
    arch = catalog.architecture("llama-3.1-8b", "test")
    fwd, bwd, _, _ = traffic.token_bytes(arch, Training(seq_len=2048))
    (cf, cb), w = traffic.EAGER["llama"]["mixed"], (4096, 14336, 4096, 1024, 1)
    assert fwd == sum(c * x for c, x in zip(cf, w, strict=True))
    assert bwd == sum(c * x for c, x in zip(cb, w, strict=True))
    # Mistral runs Llama's operations; a family not measured takes the most any measured dense family moves
    assert traffic.token_bytes(catalog.architecture("mistral-7b-v0.3", "t"), Training(seq_len=64))[0] > 0
    olmo = catalog.architecture("olmo-2-7b", "test")
    moved = traffic.token_bytes(olmo, Training(seq_len=2048))
    for family in ("llama", "qwen2", "qwen3", "phi", "gpt_neox"):
        (cf, cb), w = traffic.EAGER[family]["mixed"], traffic.widths(olmo)
        assert moved[0] + moved[1] >= sum(c * x for c, x in zip(cf + cb, w + w, strict=True)) - 1e-6
    moe = catalog.architecture("qwen3-30b-a3b", "test")  # MoE families take Mixtral's, at their routed widths
    (cf, _), w = traffic.EAGER["mixtral"]["mixed"], traffic.widths(moe)
    assert w[1] == moe.ffn * moe.experts_per_token
    expected = sum(c * x for c, x in zip(cf, w, strict=True))
    assert traffic.token_bytes(moe, Training(seq_len=2048))[0] == pytest.approx(expected)


def test_memory_bound_time_in_exact_arithmetic():
    arch = architecture_from_hf({k: v for k, v in LLAMA.items() if k != "head_dim"} | {"num_hidden_layers": 4})
    tr = Training(seq_len=128, precision=Precision.BF16_PURE)
    f = tm.job_flops(arch, tr)
    fwd, bwd, hf, hb = traffic.token_bytes(arch, tr)
    assert (f.traffic_forward, f.traffic_backward, f.traffic_head) == (4 * fwd, 4 * bwd, hf + hb)
    without = dataclasses.replace(f, traffic_forward=0.0, traffic_backward=0.0, traffic_head=0.0)
    for recompute, again, tp, pp, accum in ((0, 1, 1, 1, 1), (2, 2, 1, 1, 3), (0, 1, 2, 1, 1), (0, 1, 1, 2, 4)):
        lay = [np.array([x]) for x in (1, tp, 0, 0, recompute, 2, accum, pp)]
        extra = tm.step_times(f, arch, tr, HW, *lay).other - tm.step_times(without, arch, tr, HW, *lay).other
        bubble = (pp - 1) / accum
        moved = 4 * fwd * again + 4 * bwd + hf + hb
        expected = 2 * 128 * moved / (tp * pp) / 1e12 * accum * (1 + bubble)
        assert extra[0] == pytest.approx(expected, rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    model=st.sampled_from(["llama-3.2-1b", "qwen2.5-7b", "qwen3-8b", "gemma-2-9b", "phi-3-mini-4k", "mixtral-8x7b",
                           "starcoder2-7b", "deepseek-v3", "gpt-oss-20b", "t5-base", "bert-base-uncased"]),
    precision=st.sampled_from([Precision.BF16_MIXED, Precision.BF16_PURE, Precision.FP32]),
    recompute=st.sampled_from([0, 1, 2]), tp=st.sampled_from([1, 2, 4]),
)  # fmt: skip
def test_fused_stacks_never_move_more_and_recomputation_never_moves_less(catalog, model, precision, recompute, tp):
    arch = catalog.architecture(model, "test")
    eager = Training(seq_len=1024, precision=precision)
    fused = dataclasses.replace(eager, kernels=Kernels.FUSED)
    assert sum(traffic.token_bytes(arch, fused)) <= sum(traffic.token_bytes(arch, eager))

    def other(training: Training, recompute: int, tp: int) -> float:
        lay = [np.array([x]) for x in (1, tp, 0, 0, recompute, 1, 1)]
        return float(tm.step_times(tm.job_flops(arch, training), arch, training, HW, *lay).other[0])

    assert other(eager, 2, tp) >= other(eager, recompute, tp)  # recomputation runs the forward's bytes again
    assert other(eager, recompute, 2 * tp) <= other(eager, recompute, tp)  # tensor parallelism splits them
