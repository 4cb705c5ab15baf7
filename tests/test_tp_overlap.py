"""`tp_overlap`: tensor parallelism's collectives pipelined with the matmuls beside them (torchtitan's and NeMo
Automodel's async tensor parallelism, Megatron-Core's --tp-comm-overlap); `param_gather_overlap`: ZeRO-1's all-gather
of the update hidden in the next forward (Megatron-Core's --overlap-param-gather). Their exact arithmetic beside
the other data-parallel terms: tests/test_timing_fit.py."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ftplan.arch import architecture_from_hf
from ftplan.cli.app import app
from ftplan.errors import FtplanError
from ftplan.job import resolve_job
from ftplan.memory.setup import Kernels, Method, Precision, Training
from ftplan.schema.job import parse_job
from ftplan.timing import model as tm

# h 256, q 256, kv 64, ffn 704, 2 layers
TINY = {
    "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8,
    "num_key_value_heads": 2, "intermediate_size": 704, "vocab_size": 1000, "tie_word_embeddings": False,
}  # fmt: skip
HW = tm.Hardware(peak_tflops=100.0, efficiency=0.5, hbm_gbs=1000.0, intra_node_gbs=100.0, host_link_gbs=32.0,
                 gpus_per_node=8, network_gbps=None)  # fmt: skip
FUSED = Training(seq_len=512, precision=Precision.BF16_MIXED, kernels=Kernels.FUSED)


def _step(training: Training, tp: int, recompute: int = 0, mb: int = 4, accum: int = 2) -> tm.StepTimes:
    arch = architecture_from_hf(TINY)
    flops = tm.job_flops(arch, training)
    args = (np.array([x]) for x in (1, tp, 0, 0, recompute, mb, accum))
    return tm.step_times(flops, arch, training, HW, *args)


def test_a_pipelined_collective_adds_its_excess_over_the_matmul_and_one_chunk():
    # 3 s beside 5 s of matmul in 4 chunks: hidden but one chunk; 5 s beside 3 s: 2 s more, and a chunk
    assert tm.overlapped_collective(3.0, 5.0, 4) == pytest.approx(0.75)
    assert tm.overlapped_collective(5.0, 3.0, 4) == pytest.approx(2.0 + 0.75)
    # one chunk overlaps nothing, and without a matmul the collective is all exposed
    assert tm.overlapped_collective(3.0, 5.0, 1) == pytest.approx(3.0)
    assert tm.overlapped_collective(3.0, 0.0, 4) == pytest.approx(3.0)


def test_each_collective_meets_the_linears_beside_it():
    h, q, kv, f = 256, 256, 64, 704
    attention_in, attention_out, mlp_in, mlp_out = tm.tp_pairs(architecture_from_hf(TINY))
    assert attention_in == 2 * h * (q + 2 * kv)
    assert attention_out == 2 * q * h
    assert mlp_in == 2 * 2 * h * f
    assert mlp_out == 2 * f * h


@pytest.mark.parametrize("method, recompute", [(Method.FULL, 0), (Method.FULL, 2), (Method.LORA, 0)])
def test_overlapped_tensor_parallel_time_in_exact_arithmetic(method, recompute):
    training = replace(FUSED, method=method)
    plain, overlapped = _step(training, 4, recompute), _step(replace(training, tp_overlap=True), 4, recompute)
    tokens, tp, accum, layers = 4 * 512, 4, 2, 2
    # an all-reduce's worth of a micro-step's b·s·h, 2 bytes an element, over the NVLink group, and its latency
    t_tp = 2 * (tp - 1) / tp * tokens * 256 * 2 / (100e9 * tm.INTRA_NODE_EFFICIENCY)
    t_tp += tm.collective_latency(HW, np.array(tp), np.array(tp), "all-gather")
    n_coll = 6 if recompute == 2 else 4
    # each of the four all-gathers or reduce-scatters (half an all-reduce) beside its linears: forward, backward
    # (input and weight gradients; the input's alone for LoRA's frozen base) and the recomputed forward
    backward = 2.0 if method is Method.FULL else 1.0
    passes = (1.0, backward) + ((1.0,) if recompute == 2 else ())
    rate = 100e12 * 0.5
    exposed = sum(
        tm.overlapped_collective(t_tp / 2, p * tokens * f / tp / rate, tp)
        for f in tm.tp_pairs(architecture_from_hf(TINY))
        for p in passes
    )
    expected = plain.communication[0] - (n_coll * t_tp - exposed) * layers * accum
    assert overlapped.communication[0] == pytest.approx(expected, rel=1e-12)
    assert overlapped.compute[0] == plain.compute[0]


@settings(max_examples=40, deadline=None)
@given(
    tp=st.sampled_from([1, 2, 4, 8]),
    recompute=st.sampled_from([0, 1, 2]),
    mb=st.integers(1, 16),
    method=st.sampled_from([Method.FULL, Method.LORA]),
)
def test_overlap_never_slows_a_step_nor_hides_more_than_the_collectives(tp, recompute, mb, method):
    training = replace(FUSED, method=method)
    plain, overlapped = _step(training, tp, recompute, mb), _step(replace(training, tp_overlap=True), tp, recompute, mb)
    without_tp = _step(training, 1, recompute, mb * tp)  # (the same tokens a GPU holds its share of)
    assert overlapped.total[0] <= plain.total[0] * (1 + 1e-12)
    assert overlapped.communication[0] >= 0.0
    assert overlapped.communication[0] >= without_tp.communication[0] - 1e-15
    if tp == 1:
        assert overlapped.total[0] == plain.total[0]


def _job(catalog, **fields):
    data = {"model": "llama-3.1-70b", "precision": "bf16-mixed", "seq_len": 4096, "micro_batch": 1,
            "grad_accum": 4, "tokens": 10**8, "kernels": "fused", "layout": {"tp": 8}} | fields  # fmt: skip
    data = {k: v for k, v in data.items() if v is not None}  # (None: left to the search)
    return resolve_job(parse_job(data, "job.yaml"), catalog, "job.yaml")


def test_an_eager_stack_refuses_it_with_the_fix(catalog):
    with pytest.raises(FtplanError, match=r"tp_overlap needs kernels: fused .* set kernels: fused or drop tp_overlap"):
        _job(catalog, kernels="eager", tp_overlap=True)
    assert _job(catalog, tp_overlap=True).training.tp_overlap


def test_fit_from_the_command_line(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps({"model": "llama-3.1-70b", "seq_len": 4096, "tokens": 10**8, "kernels": "fused"}))
    runner = CliRunner()
    over = ["fit", str(path), "--gpu", "h100", "--gpus", "8", "--top", "200", "--format", "json"]
    plain = json.loads(runner.invoke(app, over).output)["layouts"]
    fast = json.loads(runner.invoke(app, [*over, "--tp-overlap"]).output)["layouts"]

    def key(r):
        return tuple(r[k] for k in ("tp", "pp", "cp", "ep", "zero", "dp_shard", "offload", "recompute", "micro_batch",
                                    "grad_accum", "gpus"))  # fmt: skip

    by = {key(r): r["step_s"] for r in plain}
    wide = [r for r in fast if r["tp"] > 1 and key(r) in by]
    assert wide and all(r["step_s"] < by[key(r)] for r in wide)  # every tensor-parallel layout quicker
    assert all(r["step_s"] == by[key(r)] for r in fast if r["tp"] == 1 and key(r) in by)
    table = runner.invoke(app, [*over[:-2], "--tp-overlap"])
    assert "· TP collectives overlapped ·" in table.output.splitlines()[0]
    eager = runner.invoke(app, [*over, "--tp-overlap", "--kernels", "eager"])
    # (the command line prints a JobError as one line and exits 1: tests/bad_inputs)
    assert eager.exit_code == 1 and isinstance(eager.exception, FtplanError)
    assert "job.yaml: tp_overlap needs kernels: fused" in str(eager.exception)


def test_the_published_runs_that_overlap_it():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import throughput_accuracy as ta

    catalog = ta.load_catalog()
    cases, _ = ta.load_cases(catalog)
    on = {c["id"] for c in cases if c["training"].tp_overlap}
    # Megatron-Bridge's Llama runs with tensor parallelism, Megatron-Core's that state --tp-comm-overlap, the two
    # NeMo Automodel LoRA rows whose configs turn async tensor parallelism on and NeMo 24.07's GPT3 20B and
    # Nemotron 22B (its launcher's configs; its Nemotron 340B's left it off)
    assert "mbridge-26.06-h100-fp8cs-llama3.1_405b-gbs1536" in on
    assert {"mcore-r08-weak-7.1B", "mcore-r08-weak-16B", "automodel-h100-70b-lora-g8"} <= on
    assert {"nemo2407-h100-fp8-gpt3-20b-g64", "nemo2407-h100-fp8-nemotron-22b-g64"} <= on
    assert "nemo2407-h100-fp8-nemotron-340b-g128" not in on
    assert all(c["tp"] > 1 for c in cases if c["id"] in on)
    assert not any(c["id"].startswith(("usp-", "nemo-", "automodel-h100-32b")) for c in cases if c["id"] in on)


def test_fit_says_what_overlapping_would_save_a_fused_stack(catalog):
    from ftplan.fit import fit_job, gpu_pool

    pools = [gpu_pool(catalog, "h100-sxm-80gb", gpus=16, network_gbps=3200)]
    searched = {"layout": {}, "micro_batch": None, "grad_accum": None, "global_batch": 64}
    plain = fit_job(_job(catalog, **searched), pools)
    overlapped = fit_job(_job(catalog, **searched, tp_overlap=True), pools).layouts
    wide = plain.layouts[plain.layouts["tp"] > 1].sort_values(["hours", "pool"], kind="mergesort").iloc[0]
    cols = ["tp", "pp", "zero", "offload", "recompute", "micro_batch", "grad_accum", "gpus"]
    same = overlapped.merge(wide[cols].to_frame().T.astype(overlapped[cols].dtypes), on=cols)
    saved = 1 - same["step_s"].iloc[0] / wide["step_s"]
    note = next(n for n in plain.time_notes if n.startswith("tensor parallelism:"))
    assert f"the fastest tp {wide['tp']} layout" in note and f"takes {saved:.0%} off its step" in note
    assert saved >= 0.05
    # said once the job states it, and never for an eager stack, which runs no async tensor parallelism
    stated = fit_job(_job(catalog, **searched, tp_overlap=True), pools)
    assert not any(n.startswith("tensor parallelism:") for n in stated.time_notes)
    eager = fit_job(_job(catalog, **searched, kernels="eager"), pools)
    assert not any(n.startswith("tensor parallelism:") for n in eager.time_notes)


@settings(max_examples=40, deadline=None)
@given(
    dp=st.sampled_from([2, 8, 16, 64]),
    zero=st.sampled_from([0, 1, 2, 3]),
    accum=st.integers(1, 8),
    mb=st.integers(1, 8),
)
def test_hiding_the_parameter_gather_never_slows_a_step_and_touches_zero1_alone(dp, zero, accum, mb):
    arch = architecture_from_hf(TINY)
    hw = replace(HW, network_gbps=3200.0)
    flops = tm.job_flops(arch, FUSED)
    args = [np.array([x]) for x in (dp, 1, zero, 0, 0, mb, accum)]
    plain = tm.step_times(flops, arch, FUSED, hw, *args)
    hidden = tm.step_times(flops, arch, replace(FUSED, param_gather_overlap=True), hw, *args)
    assert hidden.total[0] <= plain.total[0]
    if zero != 1:  # (ZeRO-0 gathers nothing, FSDP2's ZeRO-2 gathers in the forward anyway, ZeRO-3 every micro-step)
        assert hidden.total[0] == plain.total[0]


def test_deepspeed_refuses_the_parameter_gather_overlap_and_fit_takes_it(catalog, tmp_path):
    with pytest.raises(FtplanError, match="DeepSpeed's ZeRO engine all-gathers the updated parameters"):
        _job(catalog, engine="deepspeed", param_gather_overlap=True, kernels="eager", layout={"dp": 8, "zero": 1})
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps({"model": "llama-3.1-8b", "seq_len": 4096, "tokens": 10**8, "global_batch": 64}))
    runner = CliRunner()
    over = ["fit", str(path), "--gpu", "h100", "--gpus", "16", "--network-gbps", "400", "--top", "300"]
    plain = json.loads(runner.invoke(app, [*over, "--format", "json"]).output)["layouts"]
    fast = json.loads(runner.invoke(app, [*over, "--format", "json", "--param-gather-overlap"]).output)["layouts"]

    def key(r):
        return tuple(r[k] for k in ("tp", "pp", "cp", "ep", "zero", "dp_shard", "offload", "recompute", "micro_batch",
                                    "grad_accum", "gpus"))  # fmt: skip

    by = {key(r): r["step_s"] for r in plain}
    zero1 = [r for r in fast if r["zero"] == 1 and r["gpus"] == 16 and key(r) in by]
    assert zero1 and any(r["step_s"] < by[key(r)] for r in zero1)
    assert all(r["step_s"] == by[key(r)] for r in fast if r["zero"] != 1 and key(r) in by)
    table = runner.invoke(app, [*over, "--param-gather-overlap"])
    assert "· parameter gather overlapped ·" in table.output.splitlines()[0]
