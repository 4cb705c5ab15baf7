"""Context parallelism: each sequence split over cp GPUs (torch's ring attention)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.errors import JobError, MeasureError
from ftplan.fit import context_degrees, fit_job, instance_pool
from ftplan.job import resolve_job
from ftplan.memory import ZeroStage, estimate_memory
from ftplan.memory.estimate import _ring_workspace
from ftplan.schema.job import parse_job
from ftplan.timing import model as tm

STATES = ("weights_trainable", "weights_frozen", "gradients", "optimizer_states")


def _job(catalog, **fields):
    data = {"model": "llama-3.1-8b", "method": "lora", "seq_len": 65536, "gpu": "h100", "tokens": 10**8,
            "global_batch": 8, **fields}  # fmt: skip
    return resolve_job(parse_job(data, "job"), catalog, "job")


def test_a_rank_saves_what_its_share_of_the_sequence_saves(catalog):
    job = _job(catalog)
    split = estimate_memory(job.arch, job.training, replace(job.layout, cp=4))
    short = estimate_memory(job.arch, replace(job.training, seq_len=65536 // 4), job.layout)
    assert split.activation_terms == short.activation_terms
    assert split.gpu_terms["activations"] == short.gpu_terms["activations"]
    assert split.gpu_terms["logits_loss"] == short.gpu_terms["logits_loss"]
    # the ring's gathered keys and values, fp32 gradient accumulators and rotated k/v gradients, per local token
    ring = split.gpu_terms["backward_workspace"] - short.gpu_terms["backward_workspace"]
    c, kv, q, h, ffn = 2, job.arch.kv_dim, job.arch.q_dim, job.arch.hidden, job.arch.ffn
    assert _ring_workspace(job.arch, c, 4) == c * 2 * kv * 4 + 4 * (q + 2 * kv) + 16 * kv
    # it joins the widest gradient's moment (2 × c × ffn a token); an RMSNorm's backward (20 bytes × h) is
    # a moment of its own
    tokens = 65536 // 4
    widest, norm = 2 * c * ffn * tokens, 20 * h * tokens
    assert ring == max(widest + _ring_workspace(job.arch, c, 4) * tokens, norm) - max(widest, norm)


def test_model_states_are_sharded_over_data_and_context_ranks(catalog):
    job = _job(catalog, method="full")
    cp = estimate_memory(job.arch, job.training, replace(job.layout, dp=2, cp=4, zero=ZeroStage.PARAMETERS))
    dp = estimate_memory(job.arch, job.training, replace(job.layout, dp=8, zero=ZeroStage.PARAMETERS))
    assert {k: cp.gpu_terms[k] for k in STATES} == {k: dp.gpu_terms[k] for k in STATES}


@settings(max_examples=20, deadline=None)
@given(
    cp=st.sampled_from([1, 2, 4]), method=st.sampled_from(["full", "lora"]), recompute=st.sampled_from(["none", "full"])
)
def test_more_context_ranks_never_raise_the_activations_a_gpu_holds(catalog, cp, method, recompute):
    job = _job(catalog, method=method)
    lay = replace(job.layout, recompute=recompute)
    fewer, more = (estimate_memory(job.arch, job.training, replace(lay, cp=k)) for k in (cp, 2 * cp))
    for term in ("activations", "logits_loss"):
        assert more.gpu_terms[term] <= fewer.gpu_terms[term]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"seq_len": 65534}, "multiple of 8"),
        ({"attention": "eager"}, "SDPA's causal kernels"),
        ({"attention_mask": "padded"}, "attention_mask none"),
        ({"model": "gemma-2-9b"}, "sliding windows"),
    ],
)
def test_context_layouts_ring_attention_cannot_run_are_refused(catalog, fields, message):
    with pytest.raises(JobError, match=message):
        _job(catalog, layout={"cp": 4}, **fields)


def _one_and_four(job, hw):
    """Step times of the job on one GPU and with each sequence over four (cp 4), and its FLOPs."""
    arch, tr = job.arch, job.training
    flops = tm.job_flops(arch, tr)
    args = (np.array([1]), np.array([1]), np.array([0]), np.array([0]), np.array([0]), np.array([1]), np.array([1]))
    one = tm.step_times(flops, arch, tr, hw, *args)
    four = tm.step_times(flops, arch, tr, hw, *args, cp=np.array([4]))
    # a quarter of the FLOPs; each weight GEMM still pays its fixed costs, on a quarter of the rows
    gemms = [tm.gemm_overhead(flops, hw, np.array([tokens]), 1, 0)[0] for tokens in (tr.seq_len, tr.seq_len / 4)]
    assert four.compute[0] - gemms[1] == pytest.approx((one.compute[0] - gemms[0]) / 4)
    return four, flops


def test_step_time_splits_the_tokens_and_adds_the_rings_exposed_traffic(catalog, h100_node):
    job = _job(catalog)
    arch = job.arch
    four, flops = _one_and_four(job, h100_node())
    kv_bytes = 65536 / 4 * arch.kv_dim * (2 * 2 + 2 * 2 + 2 * 4) * 3
    t_ring = arch.total_layers * kv_bytes / (450e9 * tm.INTRA_NODE_EFFICIENCY)
    attention = four.compute[0] * (flops.attention + flops.flash_recompute) / (flops.model + flops.flash_recompute)
    assert four.communication[0] == pytest.approx(max(0.0, t_ring - attention))


def test_the_layout_search_splits_long_sequences_only(catalog):
    long = _job(catalog, model="llama-3.1-70b", seq_len=131072, loss="fused")
    assert context_degrees(long) == (1, 2, 4, 8)
    assert context_degrees(_job(catalog, seq_len=8192)) == (1,)
    assert context_degrees(_job(catalog, seq_len=65536, attention="eager")) == (1,)
    frame = fit_job(long, [instance_pool(catalog, "aws/p5en.48xlarge", nodes=2)]).layouts
    split = frame[frame["cp"] > 1]
    assert not split.empty and set(split["offload"]) == {"none"} and set(split["pp"]) == {1}
    assert (frame["dp"] * frame["tp"] * frame["pp"] * frame["cp"] == frame["gpus"]).all()
    assert (frame["dp"] * frame["micro_batch"] * frame["grad_accum"] == 8).all()


def test_measure_says_why_it_cannot_run_a_ring(catalog):
    pytest.importorskip("torch")
    from ftplan.measure import measure_distributed

    with pytest.raises(MeasureError, match="CUDA's SDPA kernels"):
        measure_distributed(_job(catalog, seq_len=256, layout={"cp": 2}), 2)


def test_an_ulysses_rank_saves_its_share_and_the_output_projections_own_input(catalog):
    # DeepSpeed-Ulysses: the output projection reads the all-to-all's result, kept beside the attention output
    # (c × q_dim a local token and layer); no ring buffers; the rotary tables follow every sample's position ids
    job = _job(catalog, method="full", context_parallel="ulysses")
    lay = replace(job.layout, micro_batch=2)
    uly = estimate_memory(job.arch, job.training, replace(lay, cp=4))
    short = estimate_memory(job.arch, replace(job.training, seq_len=65536 // 4), lay)
    tokens, c, arch = 65536 // 4, 2, job.arch
    per_layer = uly.activation_terms["layer:main"] - short.activation_terms["layer:main"]
    assert per_layer == c * arch.q_dim * tokens * 2
    rotary = 2 * tokens * arch.head_dim * 4  # fp32 cos and sin of a head a position
    assert uly.activation_terms["head"] - short.activation_terms["head"] == pytest.approx(rotary * (2 - 1))
    assert uly.gpu_terms["backward_workspace"] == short.gpu_terms["backward_workspace"]


def test_ulysses_repeats_key_value_heads_where_cp_exceeds_them(catalog):
    # 8 key/value heads over 16 ranks: each rank keeps one head of the whole sequence, two local tokens' worth
    job = _job(catalog, method="full", context_parallel="ulysses")
    at = {cp: estimate_memory(job.arch, job.training, replace(job.layout, cp=cp)) for cp in (8, 16)}
    short = {cp: estimate_memory(job.arch, replace(job.training, seq_len=65536 // cp), job.layout) for cp in (8, 16)}
    extra = {cp: at[cp].activation_terms["layer:main"] - short[cp].activation_terms["layer:main"] for cp in (8, 16)}
    c, arch, tokens = 2, job.arch, 65536 // 16
    assert extra[16] == (c * arch.q_dim + 2 * c * arch.head_dim * (16 - 8)) * tokens
    assert extra[8] == c * arch.q_dim * 65536 // 8


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"layout": {"cp": 3}, "seq_len": 65535}, r"use cp in \[2, 4, 8, 16, 32\]"),
        ({"layout": {"cp": 4}, "model": "gemma-2-9b"}, "sliding windows"),
        ({"layout": {"cp": 4}, "model": "deepseek-v3", "method": "lora"}, "separate q/k/v"),
        ({"layout": {"cp": 4}, "attention": "eager"}, "DeepSpeed-Ulysses runs SDPA"),
    ],
)
def test_ulysses_layouts_it_cannot_run_are_refused(catalog, fields, message):
    with pytest.raises(JobError, match=message):
        _job(catalog, context_parallel="ulysses", **fields)


def test_ulysses_step_time_adds_its_all_to_alls(catalog, h100_node):
    # four all-to-alls a layer forward and four backward, (cp − 1)/cp of q, k, v and the output leaving the GPU,
    # over NVLink; nothing hides them
    job = _job(catalog, context_parallel="ulysses")
    arch = job.arch
    four, _ = _one_and_four(job, h100_node())
    a2a = 65536 / 4 * 2 * (2 * arch.q_dim + 2 * arch.kv_dim) * 3 / 4
    assert four.communication[0] == pytest.approx(arch.total_layers * 2 * a2a / (450e9 * tm.INTRA_NODE_EFFICIENCY))
    assert four.communication[0] > 0
