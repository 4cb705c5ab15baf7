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
        # (a pipeline's last rank, the slowest, moves its share of the layers' bytes and all of the head's)
        moved = (4 * fwd * again + 4 * bwd) / pp + hf + hb
        expected = 2 * 128 * moved / tp / 1e12 * accum * (1 + bubble)
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


@pytest.mark.parametrize(
    ("precision", "dropout", "targets"),
    [("bf16-mixed", 0.05, "all-linear"), ("bf16-fp32-adapters", 0.1, ["q_proj", "v_proj", "down_proj"]),
     ("bf16-pure", 0.0, ["gate_proj", "up_proj"]), ("fp32", 0.05, "all-linear")],
)  # fmt: skip
def test_a_lora_layer_moves_what_peft_moves_at_widths_the_table_was_not_fitted_on(catalog, precision, dropout, targets):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from ftplan.measure.dispatch import token_traffic

    data = {"architecture": LLAMA, "precision": precision, "seq_len": 32, "micro_batch": 2, "dropout": False,
            "method": "lora", "lora": {"rank": 4, "dropout": dropout, "target_modules": targets}}  # fmt: skip
    job = resolve_job(parse_job(data, "lora"), catalog, "lora")
    (lf, lb), _ = token_traffic(job)
    fwd, bwd, _, _ = traffic.token_bytes(job.arch, job.training)
    around_fwd, around_bwd = traffic.adapter_bytes(job.arch, job.training)
    layers = job.arch.total_layers
    assert fwd + around_fwd / layers == pytest.approx(lf, rel=1e-9)
    assert bwd + around_bwd / layers == pytest.approx(lb, rel=1e-9)


def test_peft_operations_around_the_adapters_in_exact_arithmetic(catalog):
    arch = catalog.architecture("llama-3.1-8b", "test")
    h, f, kv, layers = 4096, 14336, 1024, 32
    d_in, d_out = 6 * h + f, 2 * h + 2 * kv + 2 * f + h  # q k v o gate up take h; down f; out q o down h, k v kv
    lora = LoraSetup(rank=16, target_modules=("all-linear",), dropout=0.05)
    tr = Training(seq_len=2048, method=Method.LORA, lora=lora, precision=Precision.BF16_FP32_ADAPTERS)
    assert traffic.adapted_widths(arch, tr) == (layers * d_in, layers * d_out, layers * 7)
    # eager, fp32 adapters with dropout: the measured coefficients
    assert traffic.adapter_bytes(arch, tr) == (layers * (34 * d_in + 24 * d_out), layers * (24 * d_in + 20 * d_out))
    # fused: the input read (2) and written fp32 (4) with its mask byte; the base's and the adapter's outputs read
    # (2 + 4) and their sum written (2); backward the output gradient read (2) and written fp32 (4), the input
    # gradients read (4 + 2) with the mask and their sum written (2)
    fused = dataclasses.replace(tr, kernels=Kernels.FUSED)
    assert traffic.adapter_bytes(arch, fused) == (layers * (7 * d_in + 8 * d_out), layers * (9 * d_in + 6 * d_out))
    # q and v only, bf16 adapters, no dropout: the scaling and the sum forward (10 a width out), the scaling's
    # gradient (4) and the input gradients' sum (6) backward
    qv = Training(seq_len=2048, method=Method.LORA, lora=LoraSetup(rank=8, target_modules=("q_proj", "v_proj")),
                  precision=Precision.BF16_PURE)  # fmt: skip
    assert traffic.adapter_bytes(arch, qv) == (layers * 10 * (h + kv), layers * (6 * 2 * h + 4 * (h + kv)))
    assert traffic.adapter_bytes(arch, Training(seq_len=2048)) == (0.0, 0.0)  # full fine-tuning: no adapters
    # the frozen base: a bf16 model's layer less the norms' weight gradients (two RMSNorms, 4 elements a width)
    mixed = Training(seq_len=2048, method=Method.LORA, lora=lora)
    (cf, cb), w = traffic.EAGER["llama"]["pure"], (h, f, h, kv, 1)
    fwd, bwd, _, _ = traffic.token_bytes(arch, mixed)
    assert fwd == sum(c * x for c, x in zip(cf, w, strict=True))
    assert bwd == sum(c * x for c, x in zip(cb, w, strict=True)) - 4 * 2 * 2 * h
    # and the step moves them: job_flops adds PEFT's bytes to the layers'
    flops = tm.job_flops(arch, mixed)
    around = traffic.adapter_bytes(arch, mixed)
    assert (flops.traffic_forward, flops.traffic_backward) == (layers * fwd + around[0], layers * bwd + around[1])


@settings(max_examples=40, deadline=None)
@given(
    model=st.sampled_from(["llama-3.2-1b", "qwen2.5-7b", "qwen3-8b", "gemma-2-9b", "mistral-7b-v0.3"]),
    precision=st.sampled_from([Precision.BF16_MIXED, Precision.BF16_PURE, Precision.BF16_FP32_ADAPTERS,
                               Precision.FP32, Precision.FP16_MIXED]),
    targets=st.sampled_from([("all-linear",), ("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "o_proj")]),
    dropout=st.sampled_from([0.0, 0.05]), method=st.sampled_from([Method.LORA, Method.QLORA]),
)  # fmt: skip
def test_adapters_dropout_and_eager_kernels_never_move_less(catalog, model, precision, targets, dropout, method):
    arch = catalog.architecture(model, "test")
    tr = Training(seq_len=1024, method=method, precision=precision,
                  lora=LoraSetup(rank=16, target_modules=targets, dropout=dropout))  # fmt: skip
    eager = traffic.adapter_bytes(arch, tr)
    assert min(eager) >= 0
    fused = traffic.adapter_bytes(arch, dataclasses.replace(tr, kernels=Kernels.FUSED))
    assert fused[0] <= eager[0] and fused[1] <= eager[1]
    if dropout == 0.0:
        wet = dataclasses.replace(tr, lora=dataclasses.replace(tr.lora, dropout=0.1))
        assert all(a >= b for a, b in zip(traffic.adapter_bytes(arch, wet), eager, strict=True))
    wider = dataclasses.replace(tr, lora=dataclasses.replace(tr.lora, target_modules=("all-linear",)))
    assert sum(traffic.adapter_bytes(arch, wider)) >= sum(eager)


def _lora_fit(catalog, **lora):
    from ftplan.fit import fit_job, gpu_pool

    adapters = {"rank": 16, "target_modules": "all-linear"} | lora
    data = {"model": "llama-3.1-8b", "method": "lora", "precision": "bf16-mixed", "seq_len": 4096, "micro_batch": 2,
            "tokens": 10**8, "global_batch": 64, "lora": adapters}  # fmt: skip
    job = resolve_job(parse_job(data, "lora"), catalog, "lora")
    return fit_job(job, [gpu_pool(catalog, "h100-sxm-80gb", 8)])


def test_fit_names_the_adapters_share_of_the_step_and_what_dropout_adds(catalog):
    import re

    wet = _lora_fit(catalog, dropout=0.05).adapter_note()
    dry = _lora_fit(catalog).adapter_note()
    assert wet is not None and dry is not None and "lora.dropout 0" in wet and "dropout 0" not in dry
    with_dropout, saved = (int(x) for x in re.findall(r"(\d+)%", wet))
    without = int(re.findall(r"(\d+)%", dry)[0])
    assert with_dropout > without >= 5 and 0 < saved < with_dropout
    assert wet in _lora_fit(catalog, dropout=0.05).time_notes
    # one small adapter: below the share the output names
    assert _lora_fit(catalog, target_modules=["q_proj"], rank=8).adapter_note() is None
    full = _lora_fit(catalog)
    full.job = dataclasses.replace(full.job, training=dataclasses.replace(full.job.training, method=Method.FULL))
    assert full.adapter_note() is None  # (no adapters)
