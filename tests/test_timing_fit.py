"""Time model arithmetic, its invariants, and `ftplan fit`."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.arch import architecture_from_hf
from ftplan.errors import FtplanError, JobError
from ftplan.fit import fit_job, gpu_pool, instance_pool, rank
from ftplan.fit import hardware as fit_hardware
from ftplan.job import resolve_job
from ftplan.memory import Layout, Training, ZeroStage, estimate_memory
from ftplan.memory.setup import Attention, Engine, LoraSetup, Method, Precision
from ftplan.schema.job import parse_job
from ftplan.timing import model as tm

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8,
    "num_key_value_heads": 2, "intermediate_size": 704, "vocab_size": 1000, "tie_word_embeddings": False,
}  # fmt: skip
HW = tm.Hardware(peak_tflops=100.0, efficiency=0.5, hbm_gbs=1000.0, intra_node_gbs=450.0, host_link_gbs=32.0,
                 gpus_per_node=8, network_gbps=3200.0)  # fmt: skip


def _times(training: Training, hw: tm.Hardware = HW, **layout: float) -> tm.StepTimes:
    arch = architecture_from_hf(TINY)
    lay = {"dp": 1, "tp": 1, "zero": 0, "offload": 0, "recompute": 0, "micro_batch": 1, "grad_accum": 1} | layout
    return tm.step_times(tm.job_flops(arch, training), arch, training, hw, *(np.array([lay[k]]) for k in lay))


def test_flops_per_token_by_method():
    arch = architecture_from_hf(TINY)
    # matrices per layer: q 256² + k,v 2·256·64 + o 256² + MLP 3·256·704 = 704,512; lm_head 256,000
    n = 2 * 704_512 + 256_000
    attn_fwd = 2 * 2 * 256 * 2 * 128 / 2  # causal: QKᵀ and PV, 2 FLOPs a multiply-add, 2·2·d_q·L·s/2 per token
    full = tm.job_flops(arch, Training(seq_len=128, attention=Attention.EAGER))
    assert full.linear == 6 * n
    assert full.attention == 3 * attn_fwd
    assert full.recompute_full == 2 * n + attn_fwd
    assert full.flash_recompute == 0
    lora = tm.job_flops(arch, Training(method=Method.LORA, seq_len=128, lora=LoraSetup(rank=8)))
    # q, k, v, o adapters: 8·(256+256) + 2·8·(256+64) + 8·(256+256) per layer
    adapters = 2 * (8 * 512 * 2 + 2 * 8 * 320)
    assert lora.linear == 4 * n + 6 * adapters
    assert lora.flash_recompute == attn_fwd


def test_attention_flops_are_what_torch_counts_for_the_attention_core_halved_by_the_causal_mask():
    """The attention core's FLOPs a token, forward and forward + backward, against torch's own FLOP counter
    on the matmuls of a layer's attention (QKᵀ, then the weights times V) over one unmasked sequence: a causal
    mask skips half of them (the count the model uses, and Megatron-LM's)."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    arch = architecture_from_hf(TINY)
    s = 128
    q, k, v = (torch.randn(1, arch.heads, s, arch.q_dim // arch.heads, requires_grad=True) for _ in range(3))
    with FlopCounterMode(display=False) as forward:
        out = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
    with FlopCounterMode(display=False) as backward:
        out.sum().backward()
    per_token = arch.layers / s / 2  # a layer each, over the sequence's tokens, half of them under the mask
    flops = tm.job_flops(arch, Training(seq_len=s, attention=Attention.EAGER))
    assert flops.recompute_selective == forward.get_total_flops() * per_token
    assert flops.attention == (forward.get_total_flops() + backward.get_total_flops()) * per_token
    assert flops.attention == 6 * arch.layers * s * arch.q_dim  # Megatron-LM's causal count


def test_lora_adapter_gemms_cost_the_slower_of_their_flops_and_their_hbm_traffic():
    arch = architecture_from_hf(TINY)
    # q, k, v, o adapted on 2 layers: d_in + d_out = 512, 320, 320, 512 → 1,664 a layer
    widths, adapters = 2 * 1664, 2 * 4
    for precision, element in ((Precision.BF16_MIXED, 2), (Precision.BF16_FP32_ADAPTERS, 4)):
        tr = Training(method=Method.LORA, seq_len=128, lora=LoraSetup(rank=8), precision=precision)
        f = tm.job_flops(arch, tr)
        assert f.adapter_linear == 6 * 8 * widths
        assert f.adapter_bytes == 3 * element * (widths + 2 * 8 * adapters)
    tr = Training(method=Method.LORA, seq_len=128, lora=LoraSetup(rank=8), attention=Attention.EAGER)
    f = tm.job_flops(arch, tr)
    without = dataclasses.replace(f, adapter_bytes=0.0)
    rate, bw = HW.peak_tflops * 1e12 * HW.efficiency, HW.hbm_gbs * 1e9
    assert f.adapter_bytes / bw > f.adapter_linear / rate  # rank 8: below the ridge point, bandwidth-bound
    for recompute, again in ((0, 1.0), (2, 4 / 3)):
        lay = [np.array([x]) for x in (1, 1, 0, 0, recompute, 2, 1)]
        extra = tm.step_times(f, arch, tr, HW, *lay).compute - tm.step_times(without, arch, tr, HW, *lay).compute
        tokens = 2 * 128
        assert extra[0] == pytest.approx(tokens * again * (f.adapter_bytes / bw - f.adapter_linear / rate), rel=1e-12)
    # a rank far above the ridge point (r FLOPs a byte against 250 here) is compute-bound: no extra time
    wide = tm.job_flops(arch, dataclasses.replace(tr, lora=LoraSetup(rank=1024)))
    lay = [np.array([x]) for x in (1, 1, 0, 0, 0, 2, 1)]
    same = tm.step_times(dataclasses.replace(wide, adapter_bytes=0.0), arch, tr, HW, *lay).compute
    assert tm.step_times(wide, arch, tr, HW, *lay).compute[0] == pytest.approx(same[0], rel=1e-12)
    # full fine-tuning has no adapter path
    assert tm.job_flops(arch, Training(seq_len=128)).adapter_bytes == 0.0


def _tiny_gemm_seconds(tokens: int, tp: int, trained: bool = True, forwards: int = 1) -> float:
    """TINY's weight GEMMs beyond their FLOPs, term by term (timing.model GEMM_*): per layer q 256×256, k and v
    256×64, o 256×256 (split by rows), gate and up 256×704, down 704×256 (by rows); the lm_head 256×1000; each
    m × k by k × n GEMM ``out · m·n + inner · k + fixed``, the per-output time at HW's 1,000 GB/s."""
    out = tm.GEMM_OUTPUT_S * tm.GEMM_TABLE_HBM_GBS / 1000.0

    def gemm(m: float, n: float, k: float) -> float:
        return out * m * n + tm.GEMM_INNER_S * k + tm.GEMM_FIXED_S

    def weight(d_in: float, d_out: float) -> float:  # forward, input gradient, weight gradient
        t = forwards * gemm(tokens, d_out, d_in) + gemm(tokens, d_in, d_out)
        return t + (gemm(d_in, d_out, tokens) if trained else 0.0)

    column = [(256, 256), (256, 64), (256, 64), (256, 704), (256, 704)]
    row = [(256, 256), (704, 256)]
    layer = sum(weight(i, o / tp) for i, o in column) + sum(weight(i / tp, o) for i, o in row)
    return 2 * layer + weight(256, 1000 / tp)


def test_weight_gemms_pay_their_outputs_their_inner_dimension_and_a_launch_in_exact_arithmetic():
    arch = architecture_from_hf(TINY)
    for method, trained in ((Method.FULL, True), (Method.LORA, False)):
        tr = Training(method=method, seq_len=128, lora=LoraSetup() if method is Method.LORA else None)
        flops = tm.job_flops(arch, tr)
        for tp, recompute in ((1, 0), (2, 0), (2, 2)):
            got = tm.gemm_overhead(flops, HW, np.array([128.0]), np.array([tp]), np.array([recompute]))[0]
            want = _tiny_gemm_seconds(128, tp, trained, forwards=2 if recompute == 2 else 1)
            assert got == pytest.approx(want, rel=1e-12)
    assert len(flops.gemms) == 7 + 1  # (seven linears a layer, and the lm_head)


@settings(max_examples=30, deadline=None)
@given(
    tokens=st.sampled_from([64, 512, 4096, 32768]), factor=st.sampled_from([2, 4]), tp=st.sampled_from([1, 2, 4]),
    recompute=st.sampled_from([0, 2]), method=st.sampled_from([Method.FULL, Method.LORA]),
)  # fmt: skip
def test_gemm_fixed_costs_grow_with_the_tokens_but_never_per_token_and_tp_never_raises_them(
    tokens, factor, tp, recompute, method
):
    arch = architecture_from_hf(TINY)
    flops = tm.job_flops(arch, Training(method=method, lora=LoraSetup() if method is Method.LORA else None))

    def cost(n: float, t: int) -> float:
        return float(tm.gemm_overhead(flops, HW, np.array([float(n)]), np.array([t]), np.array([recompute]))[0])

    assert cost(tokens * factor, tp) > cost(tokens, tp)
    assert cost(tokens * factor, tp) / (tokens * factor) <= cost(tokens, tp) / tokens
    assert cost(tokens, tp * 2) <= cost(tokens, tp)


def test_the_gemm_constants_are_the_fit_to_the_measured_table(benchmark_script):
    gemm_shapes = benchmark_script("gemm_shapes")
    rows = gemm_shapes.load()
    rate, out, inner, fixed = gemm_shapes.fit(rows)
    assert (out, inner, fixed) == (
        pytest.approx(tm.GEMM_OUTPUT_S, rel=5e-3),
        pytest.approx(tm.GEMM_INNER_S, rel=5e-3),
        pytest.approx(tm.GEMM_FIXED_S, rel=5e-3),
    )
    # the large-shape rate stays below the H100's dense peak, and the four terms fit the table far better
    # than FLOPs at one rate
    assert 0.8 * 989e12 < rate < 989e12
    t = gemm_shapes.seconds(rows)
    errors = np.abs(gemm_shapes.predict(rows, rate, out, inner, fixed) / t - 1)
    assert np.median(errors) < 0.03 and np.percentile(errors, 90) < 0.08


def test_the_gemm_sweep_times_every_shape_in_the_tables_format(benchmark_script, tmp_path):
    # (what benchmarks/device_check.sh runs on a GPU, here on this machine's CPU with small shapes)
    pytest.importorskip("torch")
    sweep, shapes = benchmark_script("gemm_sweep"), benchmark_script("gemm_shapes")
    out = tmp_path / "cpu.yaml"
    assert sweep.main(["--device", "cpu", "--sizes", "32,64", "--batches", "1,2", "-o", str(out)]) == 0
    rows = shapes.load(out)
    assert {tuple(int(x) for x in r[:4]) for r in rows} == set(itertools.product((1, 2), (32, 64), (32, 64), (32, 64)))
    assert len(rows) == 16 and (rows[:, 4] > 0).all()
    # FP8, precise or fast accumulation, needs a GPU of compute capability 8.9 or later: skipped, not failed
    assert sweep.main(["--device", "cpu", "--dtype", "fp8-fast", "--sizes", "32"]) == 0


def test_the_grouped_sweep_times_each_expert_projection_beside_the_time_models_seconds(benchmark_script, tmp_path):
    # (benchmarks/device_check.sh's MoE check, here on this machine's CPU with a few tokens)
    pytest.importorskip("torch")
    sweep = benchmark_script("gemm_sweep")
    out = tmp_path / "grouped.yaml"
    args = ["--grouped", "--device", "cpu", "--gpu", "h100-sxm-80gb", "--models", "qwen3-30b-a3b", "--tokens", "64",
            "--eps", "8,16", "-o", str(out)]  # fmt: skip
    assert sweep.main(args) == 0
    rows = yaml.safe_load(out.read_text())["rows"]
    # Qwen3-30B-A3B's experts (hidden 2048, 768 wide, 128 of them, top 8): gate/up and down, at ep 8 and 16
    assert [(r["d_in"], r["d_out"], r["experts"], r["rows_per_expert"]) for r in rows] == [
        (2048, 768, 16, 32), (2048, 768, 8, 64), (768, 2048, 16, 32), (768, 2048, 8, 64),
    ]  # fmt: skip
    h100 = 989.0 * 0.589  # the model's column: 2·rows·d_in·d_out over its FLOPs at peak × efficiency + GEMM_*
    seconds = 2 * 512 * 2048 * 768 / (h100 * 1e12) + 4.10e-13 * 512 * 768 + 9.09e-10 * 2048 + 5.53e-6
    assert rows[0]["model_tflops"] == pytest.approx(2 * 512 * 2048 * 768 / seconds / 1e12, rel=1e-3)
    assert all(r["tflops"] > 0 for r in rows)


def test_the_attention_sweep_times_each_kernel_beside_the_time_models_rate(benchmark_script, tmp_path):
    # (benchmarks/device_check.sh's attention check, here on this machine's CPU with short sequences)
    pytest.importorskip("torch")
    sweep = benchmark_script("attention_sweep")
    out = tmp_path / "attention.yaml"
    args = ["--device", "cpu", "--gpu", "h100-sxm-80gb", "--kernels", "flash2,fa3-package", "--lengths", "64,128",
            "--tokens", "256", "--heads", "2", "--head-dim", "32", "-o", str(out)]  # fmt: skip
    assert sweep.main(args) == 0
    table = yaml.safe_load(out.read_text())
    rows = table["rows"]
    assert [(r["kernel"], r["length"], r["batch"]) for r in rows] == [("flash2", 64, 4), ("flash2", 128, 2)]
    assert all(r["fwd_tflops"] > 0 and r["bwd_tflops"] > 0 for r in rows)
    assert "fa3-package" in table["not_run"]  # (FlashAttention-3 is not installed here)
    # the papers' convention: 4·b·h·s²·d forward, halved by the causal mask; backward 2.5 times that
    assert sweep.flops(2, 16, 1024, 128) == (4 * 2 * 16 * 1024**2 * 128 / 2, 2.5 * 4 * 2 * 16 * 1024**2 * 128 / 2)
    # FlashAttention-2 on an H100: the fitted attention rate forward, 2.5/3 of it backward (the model's backward is
    # three forward-sized parts); the H100 table's shortest length below it
    h100 = 989.0 * 0.203
    assert (rows[0]["model_fwd"], rows[0]["model_bwd"]) == (pytest.approx(h100, rel=1e-3),
                                                            pytest.approx(h100 * 2.5 / 3, rel=1e-3))  # fmt: skip
    assert (rows[0]["table_fwd"], rows[0]["table_bwd"]) == (191, 214)
    # cuDNN on an H100 at 2,048 tokens: the H200 sweep's speed over FlashAttention-2's each way
    table_h100, fwd, bwd = sweep.model_rates("h100-sxm-80gb", "cudnn", 2048)
    assert table_h100 == (pytest.approx(484), pytest.approx(370))
    assert (fwd, bwd) == (pytest.approx(h100 * 484 / 298), pytest.approx(h100 * 370 / 291 * 2.5 / 3))
    # on Blackwell no Hopper table: a B200's cuDNN at its die's fraction of peak over FlashAttention-2's on an H100
    table_b200, fwd, bwd = sweep.model_rates("b200-180gb", "cudnn", 2048)
    assert table_b200 is None
    b200 = 2250 * 0.203
    assert (fwd, bwd) == (pytest.approx(b200 * (1097 / 2500) / (298 / 989)),
                          pytest.approx(b200 * (885 / 2500) / (291 / 989) * 2.5 / 3))  # fmt: skip
    # off Hopper and Blackwell: FlashAttention-2's fitted rate scaled with the peak, whatever the kernel
    table_a100, fwd, _ = sweep.model_rates("a100-sxm-80gb", "cudnn", 2048)
    assert table_a100 is None and fwd == pytest.approx(312 * 0.374)


def test_the_fp8_cast_sweep_times_each_converted_weight_beside_the_roofline(benchmark_script, tmp_path):
    # (benchmarks/device_check.sh's cast check, here on this machine's CPU, eager, with a few tokens)
    torch = pytest.importorskip("torch")
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("no float8 dtype in this torch")
    sweep = benchmark_script("fp8_cast_sweep")
    out = tmp_path / "casts.yaml"
    args = ["--device", "cpu", "--gpu", "h100-sxm-80gb", "--models", "qwen2.5-0.5b", "--tokens", "16", "--eager",
            "-o", str(out)]  # fmt: skip
    assert sweep.main(args) == 0
    rows = yaml.safe_load(out.read_text())["rows"]
    # Qwen2.5-0.5B's converted linears (hidden 896, k/v 128 wide, ffn 4864): each distinct weight from bf16 and
    # fp32, each distinct input from bf16
    assert {(r["what"], r["rows"], r["cols"], r["from"]) for r in rows} == {
        ("weight", 896, 896, "bf16"), ("weight", 896, 896, "fp32"), ("weight", 128, 896, "bf16"),
        ("weight", 128, 896, "fp32"), ("weight", 4864, 896, "bf16"), ("weight", 4864, 896, "fp32"),
        ("weight", 896, 4864, "bf16"), ("weight", 896, 4864, "fp32"), ("input", 16, 896, "bf16"),
        ("input", 16, 4864, "bf16"),
    }  # fmt: skip
    assert all(r["us"] > 0 for r in rows)
    # the model's roofline on an H100 (3,350 GB/s): two reads of the source and a byte written an element
    square = {r["from"]: r["model_us"] for r in rows if (r["what"], r["rows"], r["cols"]) == ("weight", 896, 896)}
    assert square["bf16"] == pytest.approx(896 * 896 * 5 / 3350e9 * 1e6, rel=1e-3)
    assert square["fp32"] == pytest.approx(896 * 896 * 9 / 3350e9 * 1e6, rel=1e-3)


def test_compute_time_and_data_parallel_all_reduce():
    tr = Training(seq_len=128, precision=Precision.BF16_PURE, attention=Attention.EAGER)
    flops = tm.job_flops(architecture_from_hf(TINY), tr)
    t = _times(tr, dp=2)
    # weight matmuls at the efficiency, the attention core at the default ratio of it; eager attention computes
    # the whole square of scores, the causally masked half too
    attention_rate = 100e12 * 0.5 * tm.DEFAULT_ATTENTION_RATIO
    gemms = _tiny_gemm_seconds(128, tp=1)
    assert t.compute[0] == pytest.approx(
        128 * (flops.linear / (100e12 * 0.5) + 2 * flops.attention / attention_rate) + gemms
    )
    # 2 GPUs in one node: all-reduce of 2-byte gradients, 2·(n−1)/n, at 450·370/450 GB/s, overlapped
    # with the backward (2/3 of a full fine-tuning micro-step here minus the attention forward share)
    # (one 25 MiB bucket here: one all-reduce's latency, NCCL's ring over 2 GPUs: 8.4 + 2 × 3.4 µs)
    t_ar = 2 * 0.5 * flops.trainable * 2 / (370e9) + (8.4 + 2 * 3.4) * 1e-6
    window = t.compute[0] * (1 - flops.forward / flops.model)
    assert t.communication[0] == pytest.approx(max(0.0, t_ar - window))


def test_zero3_gathers_every_micro_step_and_tp_is_on_the_critical_path():
    tr = Training(seq_len=128, precision=Precision.BF16_PURE)
    one = _times(tr, dp=8, zero=3, micro_batch=1, grad_accum=1)
    four = _times(tr, dp=8, zero=3, micro_batch=1, grad_accum=4)
    assert four.communication[0] == pytest.approx(4 * one.communication[0])
    tp2 = _times(tr, tp=2)
    # 4 collectives × 2 layers × (2(t−1)/t × (128 tokens · 256 · 2 bytes) / 370 GB/s + NCCL's ring latency
    # over 2 GPUs, 8.4 + 3.4 µs)
    assert tp2.communication[0] == pytest.approx(8 * (1.0 * 128 * 256 * 2 / 370e9 + (8.4 + 3.4) * 1e-6))


def test_tensor_parallelism_wider_than_a_node_runs_its_collectives_over_the_network():
    """A tensor-parallel group of 16 GPUs spans two nodes of 8: its collectives move at the network's bus bandwidth
    (3200 Gb/s a node × 0.848), not NVLink's, and pay NCCL's ring latency across the nodes; a measured bus bandwidth
    the pool states is used as is, and a group inside an NVLink domain that spans nodes (NVL72) stays on NVLink."""
    tr = Training(seq_len=128, precision=Precision.BF16_PURE)
    tp16 = _times(tr, tp=16)
    lat = (8.4 + 14 * 3.4 + 9.6) * 1e-6
    volume = 2 * 15 / 16 * 128 * 256 * 2  # 2(t − 1)/t of a micro-step's b·s·h, 2 bytes
    assert tp16.communication[0] == pytest.approx(8 * (volume / (3200 / 8 * 0.848e9) + lat))
    measured = _times(tr, dataclasses.replace(HW, network_busbw_gbs=100.0), tp=16)
    assert measured.communication[0] == pytest.approx(8 * (volume / 100e9 + lat))
    nvl = _times(tr, dataclasses.replace(HW, nvlink_domain=72), tp=16)
    assert nvl.communication[0] == pytest.approx(8 * (volume / 370e9 + (8.4 + 15 * 3.4) * 1e-6))


def test_zero2_reduce_scatters_and_gathers_under_every_micro_step_zero1_gathers_after_its_step():
    """ZeRO-2 keeps only its shard of the gradients, so each micro-step's are reduce-scattered during its own
    backward, and FSDP2 gathers the parameters' shards as each micro-step's forward reaches them; ZeRO-1 keeps
    them whole, reduces once a step and gathers the update after its optimizer step (ZeroRedundancyOptimizer),
    where it waits, unless the stack hides it in the next forward (``param_gather_overlap``: Megatron's
    --overlap-param-gather).
    DeepSpeed's ZeRO-2 gathers at the end of its step."""
    tr = Training(seq_len=128, precision=Precision.BF16_PURE)
    flops = tm.job_flops(architecture_from_hf(TINY), tr)
    for accum in (1, 4):
        one = _times(tr, dp=16, zero=1, grad_accum=accum)
        two = _times(tr, dp=16, zero=2, grad_accum=accum)
        # 16 GPUs on 2 nodes: the network's bus bandwidth (3200 Gb/s a node over its 8 GPUs × 0.848), one ring
        # latency a FSDP group (2 layers and the root), 15/16 of the 2-byte gradients leaving each GPU, and as
        # many bytes of the 2-byte update coming back
        lat = tm.collective_latency(HW, np.array([16]), np.array([16]), "all-gather")[0]
        t_rs = 15 / 16 * flops.trainable * 2 / (3200 / 8 * 0.848e9) + 3 * lat
        t_ag = t_rs
        micro = one.compute[0] / accum
        backward = micro * (1 - flops.forward / flops.model)
        forward = micro - backward
        assert t_rs > backward > forward  # (a tiny model: the collectives outlast the compute they overlap)
        assert one.communication[0] == pytest.approx(t_rs - backward + t_ag, rel=1e-9)
        # (FSDP2 reshards after each backward, so every micro-step's forward gathers again)
        assert two.communication[0] == pytest.approx(accum * (t_rs - backward + t_ag - forward), rel=1e-9)
        hidden = _times(dataclasses.replace(tr, param_gather_overlap=True), dp=16, zero=1, grad_accum=accum)
        assert hidden.communication[0] == pytest.approx(t_rs - backward + t_ag - forward, rel=1e-9)
        deepspeed = _times(dataclasses.replace(tr, engine=Engine.DEEPSPEED), dp=16, zero=2, grad_accum=accum)
        assert deepspeed.communication[0] == pytest.approx(accum * (t_rs - backward) + t_ag, rel=1e-9)


def test_bus_bandwidth_is_the_network_or_what_the_pool_measured_and_latency_grows_with_the_ring():
    bw = tm.bus_bandwidth(HW, np.array([8, 16, 512]))
    assert bw[0] == pytest.approx(370.0)  # NVLink inside the node
    assert list(bw[1:]) == pytest.approx([3200 / 8 * 84.8 / 100] * 2)  # the node's network, nccl-tests#119
    measured = dataclasses.replace(HW, network_busbw_gbs=120.0)
    assert tm.bus_bandwidth(measured, np.array([8, 64]))[1] == 120.0
    # NCCL's ring (Simple): 8.4 µs + 3.4 µs a step over NVLink + 9.6 µs a step across nodes
    ring = tm.collective_latency(HW, np.array([8, 16, 64]), np.array([8, 16, 64]), "all-gather")
    assert list(ring) == pytest.approx([(8.4 + 7 * 3.4) * 1e-6, (8.4 + 14 * 3.4 + 9.6) * 1e-6,
                                        (8.4 + 56 * 3.4 + 7 * 9.6) * 1e-6])  # fmt: skip
    # an all-reduce across 64 nodes: NCCL's tree, 2·(7·28 + 6·50) µs + 8.4, is quicker than the ring
    tree = tm.collective_latency(HW, np.array([512]), np.array([512]), "all-reduce")[0]
    assert tree == pytest.approx((8.4 + 2 * (7 * 28 + 6 * 50)) * 1e-6)
    assert tm.collective_latency(HW, np.array([1]), np.array([8]), "all-gather")[0] == 0.0


def test_nvlink_sharp_speeds_an_all_reduce_inside_the_domain_only(catalog):
    nvls = dataclasses.replace(HW, nvls=True)
    groups = np.array([2, 4, 5, 6, 7, 8, 16])
    net = 3200 / 8 * 0.848
    # NCCL's NVLS bus bandwidth on H100s (nccl#1455, nccl-tests#212): the ring's 370 up to 4 GPUs, then 420–480
    bw = tm.bus_bandwidth(nvls, groups, all_reduce=groups)
    assert list(bw) == pytest.approx([370, 370, 420, 440, 460, 480, net])
    # 4 tensor-parallel groups of 2 data-parallel ranks on a node: each all-reduce is among 2 GPUs, no gain
    assert tm.bus_bandwidth(nvls, np.array([8]), all_reduce=np.array([2]))[0] == pytest.approx(370)
    for hw, all_reduce in ((nvls, None), (HW, groups)):  # an all-gather, or switches that do not reduce: the ring
        assert list(tm.bus_bandwidth(hw, groups, all_reduce=all_reduce)) == pytest.approx([370] * 6 + [net])
    nvl72 = dataclasses.replace(nvls, nvlink_domain=72, network_gbps=None)
    assert list(tm.bus_bandwidth(nvl72, np.array([64, 72]), all_reduce=np.array([64, 72]))) == pytest.approx([480] * 2)
    assert [g.id for g in catalog.gpus.values() if g.nvls] == [
        "h200-sxm-141gb", "h100-sxm-80gb", "b200-180gb", "b300-sxm-288gb", "gb200-186gb", "gb300-288gb",
    ]  # fmt: skip
    assert fit_hardware(gpu_pool(catalog, "h100-sxm-80gb", 8, 1.0), Precision.BF16_MIXED).nvls
    assert not fit_hardware(gpu_pool(catalog, "a100-sxm-80gb", 8, 1.0), Precision.BF16_MIXED).nvls


def test_ddp_gradient_all_reduce_runs_at_the_nvls_bus_bandwidth_in_a_node():
    arch = architecture_from_hf(TINY | {"hidden_size": 2048, "intermediate_size": 5632})
    tr = Training(seq_len=32)
    flops = tm.job_flops(arch, tr)
    lay = [np.array([v]) for v in (8, 1, 0, 0, 0, 1, 1)]  # dp 8, ZeRO 0, one sequence of 32 tokens
    ring, sharp = (tm.step_times(flops, arch, tr, hw, *lay) for hw in (HW, dataclasses.replace(HW, nvls=True)))
    assert ring.communication[0] > sharp.communication[0] > 0  # (32 tokens: the all-reduce outlasts the backward)
    g = 7 / 8 * flops.trainable * 4  # fp32 gradients, 7/8 of them leaving each GPU, twice (reduce, then gather)
    saved = 2 * g * (1 / 370e9 - 1 / 480e9)
    assert ring.communication[0] - sharp.communication[0] == pytest.approx(saved, rel=1e-9)
    assert ring.compute[0] == sharp.compute[0]
    for zero in (1, 2, 3):  # ZeRO 1-3 reduce-scatter and all-gather: no gain
        lay[2] = np.array([zero])
        a, b = (tm.step_times(flops, arch, tr, hw, *lay) for hw in (HW, dataclasses.replace(HW, nvls=True)))
        assert a.communication[0] == b.communication[0] > 0
    lay[:3] = [np.array([2]), np.array([4]), np.array([0])]  # dp 2 × tp 4: all-reduces among 2 GPUs, no gain
    a, b = (tm.step_times(flops, arch, tr, hw, *lay) for hw in (HW, dataclasses.replace(HW, nvls=True)))
    assert a.communication[0] == b.communication[0]


@settings(max_examples=40, deadline=None)
@given(
    dp=st.sampled_from([1, 2, 4, 8]), zero=st.sampled_from([0, 1, 2, 3]), mb=st.integers(1, 4),
    accum=st.integers(1, 4), method=st.sampled_from([Method.FULL, Method.LORA]),
)  # fmt: skip
def test_recomputation_never_lowers_step_time(dp, zero, mb, accum, method):
    tr = Training(method=method, seq_len=256, lora=LoraSetup() if method is Method.LORA else None)
    times = [_times(tr, dp=dp, zero=zero, recompute=r, micro_batch=mb, grad_accum=accum).total[0] for r in (0, 1, 2)]
    assert times[0] <= times[1] + 1e-12 <= times[2] + 2e-12


def test_hardware_flops_split_matmuls_from_the_attention_core():
    arch = architecture_from_hf(TINY)
    f = tm.job_flops(arch, Training(seq_len=128))  # SDPA: flash attention recomputes the scores backward
    n, attn_fwd = 2 * 704_512 + 256_000, 2 * 2 * 256 * 2 * 128 / 2
    for recompute, matmuls, attention in (
        (0, 6 * n, 3 * attn_fwd + attn_fwd),
        (1, 6 * n, 3 * attn_fwd + attn_fwd + attn_fwd),  # selective: the attention core again
        (2, 8 * n, 3 * attn_fwd + attn_fwd + attn_fwd),  # full: the whole forward again
    ):
        assert tuple(map(float, f.hardware(recompute))) == (matmuls, attention)
    stated = tm.Hardware(peak_tflops=100.0, efficiency=0.5, hbm_gbs=1.0, intra_node_gbs=1.0, host_link_gbs=1.0,
                         gpus_per_node=8, network_gbps=None, attention_efficiency=0.2)  # fmt: skip
    assert stated.attention_rate == pytest.approx(100e12 * 0.2)
    assert HW.attention_rate == pytest.approx(100e12 * 0.5 * tm.DEFAULT_ATTENTION_RATIO)


def test_a_stated_efficiency_scales_the_catalogs_attention_efficiency(catalog):
    pool = gpu_pool(catalog, "h100-sxm-80gb", 8, 1.0)
    h100 = catalog.gpu("h100-sxm-80gb")
    hw = fit_hardware(pool, Precision.BF16_MIXED)
    assert (hw.efficiency, hw.attention_efficiency) == (h100.efficiency, h100.attention_efficiency)
    half = fit_hardware(pool, Precision.BF16_MIXED, efficiency=h100.efficiency / 2)
    assert half.attention_efficiency == pytest.approx(h100.attention_efficiency / 2)


@settings(max_examples=30, deadline=None)
@given(
    seq=st.sampled_from([128, 512, 2048, 8192]), factor=st.sampled_from([2, 4]), recompute=st.sampled_from([0, 1, 2]),
    zero=st.sampled_from([0, 3]), method=st.sampled_from([Method.FULL, Method.LORA]),
)  # fmt: skip
def test_longer_sequences_never_raise_tokens_per_second(seq, factor, recompute, zero, method):
    # the same tokens a micro-step (factor sequences, or one factor times as long): attention grows with length
    def tokens_per_s(s: int, mb: int) -> float:
        tr = Training(method=method, seq_len=s, lora=LoraSetup() if method is Method.LORA else None)
        return s * mb / _times(tr, dp=8, zero=zero, recompute=recompute, micro_batch=mb).total[0]

    assert tokens_per_s(seq * factor, 1) <= tokens_per_s(seq, factor) * (1 + 1e-12)


@settings(max_examples=30, deadline=None)
@given(dp=st.sampled_from([8, 16, 64]), factor=st.sampled_from([2, 4, 8]), zero=st.sampled_from([0, 2, 3]))
def test_more_nodes_never_raise_a_gpus_compute_time(dp, factor, zero):
    tr = Training(seq_len=512)
    small, large = (_times(tr, dp=n, zero=zero, micro_batch=2) for n in (dp, dp * factor))
    assert large.compute[0] <= small.compute[0]


@settings(max_examples=30, deadline=None)
@given(zero=st.sampled_from([1, 2, 3]), small=st.sampled_from([1, 2, 4]), factor=st.sampled_from([2, 4]))
def test_more_gpus_never_raise_sharded_states(zero, small, factor):
    arch = architecture_from_hf(TINY)
    tr = Training(seq_len=64)
    terms = ("weights_trainable", "gradients", "optimizer_states")

    def states(dp):
        est = estimate_memory(arch, tr, Layout(dp=dp, zero=ZeroStage(zero)))
        return [est.gpu_terms[k] for k in terms]

    for a, b in zip(states(small * factor), states(small), strict=True):
        assert a <= b


def _job(catalog, **fields):
    data = {"model": "llama-3.1-8b", "method": "lora", "seq_len": 2048, "tokens": 10_000_000, "global_batch": 32}
    return resolve_job(parse_job(data | fields, "job"), catalog, "job")


def test_fit_ranks_and_explains(catalog):
    job = _job(catalog, method="full")
    result = fit_job(job, [gpu_pool(catalog, "a100-sxm-40gb", gpus=1), instance_pool(catalog, "aws/p5.48xlarge")])
    best = rank(result, "time", 5)
    assert not best.empty
    assert (best["device_bytes"] <= best["pool"].map(lambda p: 40 * 2**30 if "a100" in p else 80 * 2**30)).all()
    assert list(best["hours"]) == sorted(best["hours"])
    assert any("ZeRO-0 offload none" in line and "GiB >" in line for line in result.excluded)
    cheapest = rank(result, "cost", 3)
    assert list(cheapest["usd"]) == sorted(cheapest["usd"])
    # dollars: whole instances per hour
    p5 = result.layouts[result.layouts["pool"] == "aws/p5.48xlarge"]
    assert not p5.empty
    price = catalog.instance("aws/p5.48xlarge").on_demand_usd_per_h
    assert np.allclose(p5["usd"], p5["hours"] * np.ceil(p5["gpus"] / 8) * price)
    # batch arithmetic holds for every layout
    frame = result.layouts
    assert (frame["dp"] * frame["micro_batch"] * frame["grad_accum"] == 32).all()
    assert (frame["dp"] * frame["tp"] * frame["pp"] == frame["gpus"]).all()


def test_fit_groups_layouts_the_model_refuses(catalog):
    # LoRA over an fp32 base is autocast without ZeRO: every ZeRO family is refused, in one line
    job = _job(catalog, precision="bf16-mixed", lora={"rank": 8, "base_fp32": True})
    result = fit_job(job, [gpu_pool(catalog, "h100", gpus=8)])
    assert set(result.layouts["zero"]) == {0}
    refused = [line for line in result.excluded if "base_fp32" in line]
    assert len(refused) == 1 and " more: " in refused[0]


def test_fit_bad_input(catalog):
    with pytest.raises(JobError, match="no tokens"):
        fit_job(resolve_job(parse_job({"model": "llama-3.1-8b", "seq_len": 512}, "j"), catalog, "j"),
                [gpu_pool(catalog, "h100")])  # fmt: skip
    with pytest.raises(FtplanError, match="Did you mean"):
        instance_pool(catalog, "aws/p5.48xlarg")
    # a prime global batch leaves only data-parallel degree 1 (tensor parallelism still divides)
    result = fit_job(_job(catalog, global_batch=7), [gpu_pool(catalog, "h100")])
    assert set(result.layouts["dp"]) == {1}


def test_fit_cli(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "ftplan", "fit", str(ROOT / "scenarios/jobs/llama-8b-lora-fit.yaml"), "--gpu", "h100",
         "--instance", "aws/g6e.12xlarge", "--by", "cost", "--format", "json", "--top", "3"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert len(data["layouts"]) == 3 and data["evaluated"] >= data["fitting"] > 0
    usd = [x["usd"] for x in data["layouts"]]
    assert usd == sorted(usd)
    job = str(ROOT / "scenarios/jobs/llama-8b-lora-fit.yaml")
    bad = subprocess.run(
        [sys.executable, "-m", "ftplan", "fit", job, "--instance", "aws/p5"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: --instance: unknown instance 'aws/p5'.") and "Traceback" not in bad.stderr
    tiny = tmp_path / "big.yaml"
    tiny.write_text("model: llama-3.1-70b\nmethod: full\nseq_len: 8192\ntokens: 1000000\nglobal_batch: 8\n")
    none = subprocess.run([sys.executable, "-m", "ftplan", "fit", str(tiny), "--gpu", "t4", "--host-memory-gib", "192"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert none.returncode == 1 and "no layout of llama-3.1-70b fits" in none.stderr and "Closest" in none.stderr
    # offloading everything fits the GPUs, but not a node of 192 GiB: the host memory is what refuses it
    assert "host memory per node" in none.stdout and "> 192.0 GiB" in none.stdout


def test_a_measured_bus_bandwidth_is_used_across_nodes(catalog, tmp_path):
    from ftplan.scenario import resolve_scenario
    from ftplan.schema.scenario import Scenario

    pools = [{"id": "lab", "kind": "owned", "gpu": "h100-sxm-80gb", "nodes": 8, "network_gbps": 3200,
              "allreduce_busbw_gbs": 40.0}]  # fmt: skip
    data = {"jobs": [{"id": "j", "model": "llama-3.1-8b", "method": "full", "seq_len": 2048, "tokens": 10**9,
                      "global_batch": 256}], "pools": pools}  # fmt: skip
    pool = resolve_scenario(Scenario.model_validate(data), catalog, "s").pools[0].pool
    assert pool.allreduce_busbw_gbs == 40.0 and "40 GB/s all-reduce bus bandwidth, measured" in pool.hardware_note
    assert fit_hardware(pool, Precision.BF16_MIXED).network_busbw_gbs == 40.0
    # a slow measured network slows the multi-node layouts the search ranks first, never the one-node ones
    job = _job(catalog, method="full", global_batch=256)
    fast = fit_job(job, [gpu_pool(catalog, "h100", 32, 2.0, 3200)]).layouts
    slow = fit_job(job, [dataclasses.replace(gpu_pool(catalog, "h100", 32, 2.0, 3200), allreduce_busbw_gbs=5.0)])
    both = fast.merge(slow.layouts, on=["gpus", "tp", "pp", "cp", "ep", "zero", "dp_shard", "offload", "recompute",
                                         "micro_batch"], suffixes=("", "_slow"))  # fmt: skip
    assert (both["step_s_slow"] >= both["step_s"] - 1e-12).all()
    assert (both.loc[both["gpus"] > 8, "step_s_slow"] > both.loc[both["gpus"] > 8, "step_s"]).any()
    assert (both.loc[both["gpus"] <= 8, "step_s_slow"] == both.loc[both["gpus"] <= 8, "step_s"]).all()
    out = subprocess.run(
        [sys.executable, "-m", "ftplan", "fit", str(ROOT / "scenarios/jobs/llama-8b-lora-fit.yaml"), "--gpu", "h100",
         "--gpus", "16", "--network-gbps", "3200", "--busbw-gbs", "0", "--top", "1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 2 and "--busbw-gbs" in out.stderr and "Traceback" not in out.stderr
    # a measured bandwidth across nodes where no run can cross nodes is refused, not ignored
    lonely = subprocess.run(
        [sys.executable, "-m", "ftplan", "fit", str(ROOT / "scenarios/jobs/llama-8b-lora-fit.yaml"), "--gpu", "h100",
         "--busbw-gbs", "40", "--top", "1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert lonely.returncode == 1 and lonely.stderr.startswith("error: --busbw-gbs: no pool has a network")
    for pool, phrase in (
        ({"id": "lab", "kind": "owned", "gpu": "h100", "nodes": 2, "allreduce_busbw_gbs": 40.0}, "give network_gbps"),
        ({"id": "c", "kind": "cloud", "instance": "runpod/1x_H100-SXM_SECURE", "quota_nodes": 2,
          "allreduce_busbw_gbs": 40.0}, "lists no network"),
    ):  # fmt: skip
        with pytest.raises(Exception, match=phrase):
            resolve_scenario(Scenario.model_validate(data | {"pools": [pool]}), catalog, "s")


@pytest.mark.parametrize(
    ("method", "loss", "output"),
    [("full", "standard", "dropped"), ("lora", "chunked", "kept"), ("qlora", "fused", "dropped"),
     ("qlora", "standard", "kept-fp32")],
)  # fmt: skip
def test_vectorised_memory_equals_the_memory_model(catalog, method, loss, output):
    """Every fitting layout's memory, extended from one estimate per family, is the model's own."""
    from ftplan.memory import Offload, Recompute

    job = _job(catalog, method=method, loss=loss, global_batch=16, model_output=output)
    pool = gpu_pool(catalog, "h100")
    frame = fit_job(job, [pool]).layouts
    for row in frame.iloc[:: max(1, len(frame) // 40)].itertuples():
        layout = Layout(dp=row.dp, tp=row.tp, zero=ZeroStage(row.zero), offload=Offload(row.offload),
                        recompute=Recompute(row.recompute), micro_batch=row.micro_batch, grad_accum=row.grad_accum,
                        gpus_per_node=8, pp=row.pp, dp_shard=row.dp_shard)  # fmt: skip
        est = estimate_memory(job.arch, job.training, layout, gpu_arch=pool.gpu.arch, overheads=job.overheads)
        assert row.device_bytes == pytest.approx(est.device_total_bytes, abs=2)


def test_host_memory_is_given_assumed_from_the_catalog_or_offload_is_refused(catalog):
    from ftplan.catalog import host_memory
    from ftplan.fit import fit_job, gpu_pool

    h100 = catalog.gpu("h100", "test")
    rams = [
        i.host_memory_gib
        for i in catalog.instances.values()
        if i.gpu == h100.id and i.gpus_per_node >= 8 and i.host_memory_gib
    ]
    ram, note = host_memory(catalog, h100, 8, None)
    assert ram == int(min(rams) * 2**30) and "assumed" in note
    t4 = catalog.gpu("t4", "test")
    assert not any(i.gpu == t4.id and i.gpus_per_node >= 8 for i in catalog.instances.values())
    assert host_memory(catalog, t4, 8, None) == (None, "")
    assert host_memory(catalog, t4, 8, 64) == (64 * 2**30, "")
    job = resolve_job(
        parse_job({"model": "qwen2.5-7b", "method": "full", "seq_len": 1024, "tokens": 10**7, "global_batch": 8}, "j"),
        catalog,
    )
    unknown = fit_job(job, [gpu_pool(catalog, "t4")])
    assert any("offload to a host whose memory is unknown" in x for x in unknown.excluded)
    assert unknown.layouts.empty or set(unknown.layouts["offload"]) == {"none"}
    given = fit_job(job, [gpu_pool(catalog, "t4", host_memory_gib=4096)])
    assert "optimizer+params" in set(given.layouts["offload"])
