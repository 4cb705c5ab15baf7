"""The time model's attention on sliding-window and chunked layers: a kernel given the window skips what lies beyond
it, PyTorch SDPA (given the explicit mask transformers builds there) computes every pair."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.fit import gpu_pool, hardware
from ftplan.job import resolve_job
from ftplan.memory.setup import AttentionKernel, AttentionMask
from ftplan.schema.job import parse_job
from ftplan.timing import model as tm


def _job(catalog, model: str, seq: int, **fields):
    data = {"model": model, "method": "full", "seq_len": seq, "micro_batch": 1, "grad_accum": 1,
            "tokens": 10**8} | fields  # fmt: skip
    return resolve_job(parse_job(data, "job"), catalog, "job")


def _attention_seconds(job, hw, flops=None):
    """The step's attention-core seconds: its compute less the same step's without attention FLOPs."""
    flops = flops or tm.job_flops(job.arch, job.training)
    one = [np.array([x]) for x in (1, 1, 0, 0, 0, 1, 1)]
    with_attention = tm.step_times(flops, job.arch, job.training, hw, *one).compute[0]
    none = replace(flops, attention=0.0, flash_recompute=0.0, recompute_selective=0.0)
    return with_attention - tm.step_times(none, job.arch, job.training, hw, *one).compute[0]


def test_keys_a_query_attends_in_exact_arithmetic():
    # a sliding window of w keys: Σ min(i, w) / s ≈ w − w²/2s past the window, the causal s/2 within it
    assert tm.windowed_keys(np.array([8192.0]), 1024, False)[0] == 1024 - 1024**2 / (2 * 8192)
    assert tm.windowed_keys(np.array([512.0]), 1024, False)[0] == 256
    # chunks of c: causal within each, q whole chunks and r tokens after them
    assert tm.windowed_keys(np.array([20000.0]), 8192, True)[0] == pytest.approx(
        (2 * 8192**2 + 3616**2) / (2 * 20000), rel=1e-12
    )
    assert tm.windowed_keys(np.array([4096.0]), 8192, True)[0] == 2048  # (within one chunk: causal)


def test_a_kernel_given_the_window_costs_only_the_keys_inside_it(catalog):
    """Gemma 2 9B at 8k tokens: half its layers attend through a 4,096-token window. Under cuDNN their attention
    costs (4096 − 4096²/16384) keys a query instead of 4096, at the kernel's speed at the window's length."""
    job = _job(catalog, "gemma-2-9b", 8192, attention_kernel="cudnn")
    hw = hardware(gpu_pool(catalog, "h100-sxm-80gb", gpus=1), job.training.precision)
    flops = tm.job_flops(job.arch, job.training)
    assert (flops.windowed_share, flops.window, flops.chunked) == (21 / 42, 4096, False)
    windowed = _attention_seconds(job, hw)
    causal = _attention_seconds(job, hw, replace(flops, windowed_share=0.0))
    k = {n: tm.attention_kernel_factor(job.training, hw, np.array([n]), np.array([0]))[0] for n in (8192.0, 4096.0)}
    share = ((4096 - 4096**2 / 16384) / 4096) * k[4096.0] / k[8192.0]
    assert windowed / causal == pytest.approx(0.5 + 0.5 * share, rel=1e-9)
    assert windowed < causal


def test_sdpa_computes_every_pair_of_a_windowed_layer_once_the_sequence_reaches_the_window(catalog):
    """Mistral 7B v0.1 (a 4,096-token window on every layer) under SDPA: transformers gives those layers an explicit
    mask from 4,096 tokens on, and the memory-efficient kernel then computes the whole square, twice the causal
    count; below the window no mask, the causal kernel."""
    h100 = hardware(
        gpu_pool(catalog, "h100-sxm-80gb", gpus=1), _job(catalog, "mistral-7b-v0.1", 2048).training.precision
    )
    for seq, factor in ((2048, 1.0), (8192, 2.0)):
        job = _job(catalog, "mistral-7b-v0.1", seq)
        flops = tm.job_flops(job.arch, job.training)
        assert _attention_seconds(job, h100) == pytest.approx(
            factor * _attention_seconds(job, h100, replace(flops, windowed_share=0.0)), rel=1e-9
        )
    # eager attention computes every pair of every layer already: the window changes nothing
    eager = _job(catalog, "mistral-7b-v0.1", 8192, attention="eager")
    flops = tm.job_flops(eager.arch, eager.training)
    assert _attention_seconds(eager, h100) == pytest.approx(
        _attention_seconds(eager, h100, replace(flops, windowed_share=0.0)), rel=1e-12
    )


def test_flexattention_skips_the_blocks_a_window_or_a_padding_mask_leaves_out(catalog):
    """FlexAttention takes a sliding window, and a padding mask, as a block mask: Mistral 7B v0.1 at 8k tokens costs
    the keys inside its 4,096-token window, at FlexAttention's speed there, not SDPA's whole square; a padded batch
    stays causal."""
    job = _job(catalog, "mistral-7b-v0.1", 8192, attention_kernel="flex")
    hw = hardware(gpu_pool(catalog, "h100-sxm-80gb", gpus=1), job.training.precision)
    flops = tm.job_flops(job.arch, job.training)
    windowed = _attention_seconds(job, hw)
    causal = _attention_seconds(job, hw, replace(flops, windowed_share=0.0))
    k = {n: tm.attention_kernel_factor(job.training, hw, np.array([n]), np.array([0]))[0] for n in (8192.0, 4096.0)}
    assert windowed / causal == pytest.approx((4096 - 4096**2 / 16384) / 4096 * k[4096.0] / k[8192.0], rel=1e-9)
    assert tm.windowed_note(job.arch, job.training) is None
    padded = replace(job.training, attention_mask=AttentionMask.PADDED)
    assert not tm.square_attention(padded)
    assert tm.square_attention(replace(padded, attention_kernel=AttentionKernel.FLASH2))


@settings(max_examples=20, deadline=None)
@given(
    seq=st.sampled_from([1024, 2048, 4096, 8192, 16384]),
    kernel=st.sampled_from(list(AttentionKernel)),
    model=st.sampled_from(["gemma-2-9b", "mistral-7b-v0.1", "gpt-oss-20b"]),
)
def test_longer_sequences_never_compute_a_token_faster_through_windowed_layers(catalog, seq, kernel, model):
    h100 = hardware(gpu_pool(catalog, "h100-sxm-80gb", gpus=1), _job(catalog, model, 2048).training.precision)

    def per_token(s: int) -> float:
        job = _job(catalog, model, s, attention_kernel=kernel.value, micro_batch=65536 // s)
        one = [np.array([x]) for x in (1, 1, 0, 0, 0, 65536 // s, 1)]
        return (
            tm.step_times(tm.job_flops(job.arch, job.training), job.arch, job.training, h100, *one).compute[0] / 65536
        )

    assert per_token(2 * seq) >= per_token(seq)


def test_fit_says_where_windowed_layers_run_through_sdpas_mask(catalog, tmp_path):
    import json

    from typer.testing import CliRunner

    from ftplan.cli.app import app

    # the library: Gemma 2 9B at 8k under SDPA (the default flash2) is told; under cuDNN, below its window, or with
    # eager attention (every pair anyway) it is not; a model without windows never is
    note = tm.windowed_note(_job(catalog, "gemma-2-9b", 8192).arch, _job(catalog, "gemma-2-9b", 8192).training)
    assert note.startswith("windowed attention: 21 of 42 layers attend through a 4096-token window")
    for model, seq, fields in (("gemma-2-9b", 8192, {"attention_kernel": "cudnn"}), ("gemma-2-9b", 2048, {}),
                               ("gemma-2-9b", 8192, {"attention": "eager"}), ("llama-3.1-8b", 8192, {})):  # fmt: skip
        job = _job(catalog, model, seq, **fields)
        assert tm.windowed_note(job.arch, job.training) is None, (model, seq, fields)
    # the CLI: `ftplan fit` prints it, and `--format json` carries it
    path = tmp_path / "job.yaml"
    path.write_text("model: gemma-2-9b\nmethod: lora\nseq_len: 8192\nglobal_batch: 32\ntokens: 100000000\n")
    res = CliRunner().invoke(app, ["fit", str(path), "--gpu", "h100", "--gpus", "8", "--top", "1"])
    assert res.exit_code == 0, res.output
    assert "windowed attention: 21 of 42 layers" in res.output
    args = ["fit", str(path), "--gpu", "h100", "--gpus", "8", "--top", "1", "--format", "json"]
    res = CliRunner().invoke(app, args)
    assert [n.split(":")[0] for n in json.loads(res.output)["notes"]] == ["attention on hopper", "windowed attention"]
    res = CliRunner().invoke(app, [*args, "--attention-kernel", "cudnn"])
    notes = json.loads(res.output)["notes"]  # (the LoRA adapters' own note may stand: not about attention)
    assert not [n for n in notes if n.startswith(("attention", "windowed"))], notes
