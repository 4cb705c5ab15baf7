"""FP8 training (torchao float8 linears): which linears convert, the memory and time arithmetic,
and the one-line refusals of what the model does not cover."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ftplan.arch import architecture_from_hf
from ftplan.catalog import load_catalog
from ftplan.errors import JobError
from ftplan.fit import fit_job, gpu_pool
from ftplan.job import resolve_job
from ftplan.memory import (
    Fp8Recipe,
    Fp8Setup,
    Kernels,
    Layout,
    Method,
    Precision,
    Recompute,
    Training,
    ZeroStage,
    estimate_memory,
    fp8_linears,
)
from ftplan.memory.estimate import _fp8_cast_bytes, fp8_converted
from ftplan.schema.job import parse_job
from ftplan.timing import model as tm

# h 256, q 256, kv 64, ffn 704 (a multiple of 16); a second model whose MLP (ffn 360) is not
TINY = {
    "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8,
    "num_key_value_heads": 2, "intermediate_size": 704, "vocab_size": 1000, "tie_word_embeddings": False,
}  # fmt: skip
ODD = dict(TINY, hidden_size=128, num_attention_heads=4, num_key_value_heads=4, intermediate_size=360)
BF16 = Training(seq_len=128, precision=Precision.BF16_MIXED)
FP8 = Training(seq_len=128, precision=Precision.FP8)
LAYER = 256 * 256 * 2 + 2 * 256 * 64 + 3 * 256 * 704  # q, o, k, v, gate, up, down


def test_converted_linears_follow_torchtitans_rule():
    assert fp8_linears(architecture_from_hf(TINY)) == {"main": LAYER}
    # ffn 360: gate, up and down stay 16-bit; attention (128 × 128) converts
    odd = architecture_from_hf(ODD)
    assert fp8_linears(odd) == {"main": 4 * 128 * 128}
    assert {x.role for _, x in fp8_converted(odd)} == {"q", "k", "v", "o"}
    gpt2 = {"model_type": "gpt2", "n_embd": 128, "n_layer": 2, "n_head": 4, "vocab_size": 500, "n_positions": 256}
    assert fp8_linears(architecture_from_hf(gpt2)) == {}  # Conv1D is not nn.Linear


def test_fp8_keeps_no_16bit_copy_of_converted_weights():
    arch = architecture_from_hf(TINY)
    bf16 = estimate_memory(arch, BF16, Layout())
    fp8 = estimate_memory(arch, FP8, Layout())
    assert bf16.gpu_terms["autocast_weight_copies"] == 2 * (2 * LAYER + 1000 * 256)
    assert fp8.gpu_terms["autocast_weight_copies"] == 2 * 1000 * 256  # the lm_head alone
    # saved activations are a bf16 linear's: its 16-bit input, the weight itself
    assert fp8.gpu_terms["activations"] == bf16.gpu_terms["activations"]
    odd = architecture_from_hf(ODD)
    got = estimate_memory(odd, FP8, Layout()).gpu_terms["autocast_weight_copies"]
    assert got == 2 * (2 * 3 * 128 * 360 + 1000 * 128)  # the unconverted MLP of both layers and the lm_head
    # full recomputation: the lm_head's copy or the recomputed block's unconverted weights, the larger
    rc = estimate_memory(arch, FP8, Layout(recompute=Recompute.FULL))
    assert rc.gpu_terms["autocast_weight_copies"] == 2 * 1000 * 256


def test_eager_cast_working_memory():
    arch = architecture_from_hf(TINY)
    # 256 tokens: the down projection's cast of its 256 × 704 input (or of gate/up's output gradient,
    # as large), 9 bytes an element while cast, beside its float8 input (256 × 704) and weight (704 × 256)
    cast = 9 * 256 * 704 + 256 * 704 + 704 * 256
    assert _fp8_cast_bytes(arch, {"main": 256}, 1) == cast
    assert _fp8_cast_bytes(arch, {"main": 256}, 2) == cast / 2
    est = estimate_memory(arch, FP8, Layout(micro_batch=2))
    base = estimate_memory(arch, BF16, Layout(micro_batch=2))
    ws = est.gpu_terms["backward_workspace"] - base.gpu_terms["backward_workspace"]
    # the cast joins the widest gradient's moment (2 × 2 bytes × 704 a token); the RMSNorm's backward
    # (20 bytes × 256 a token) is a moment of its own, the larger of the two without FP8
    tokens = 2 * 128
    widest, norm = 2 * 2 * 704 * tokens, 20 * 256 * tokens
    assert ws == max(widest + cast, norm) - max(widest, norm)
    assert any("eager float8 casts" in n for n in est.notes)


def test_fp8_all_gather_gathers_one_byte_a_converted_weight():
    arch = architecture_from_hf(TINY)
    lay = Layout(dp=8, zero=ZeroStage.PARAMETERS, gpus_per_node=8)
    plain = estimate_memory(arch, FP8, lay).gpu_terms["zero3_gathered_params"]
    ag = Training(seq_len=128, precision=Precision.FP8, fp8=Fp8Setup(all_gather=True))
    gathered = estimate_memory(arch, ag, lay).gpu_terms["zero3_gathered_params"]
    # two blocks in flight (the one computing and the one prefetched): one byte less a converted weight
    assert plain - gathered == 2 * LAYER
    # below ZeRO-3 nothing is gathered, and the setting changes nothing
    ddp = Layout(dp=8, zero=ZeroStage.GRADIENTS, gpus_per_node=8)
    assert estimate_memory(arch, ag, ddp).gpu_terms == estimate_memory(arch, FP8, ddp).gpu_terms


def test_time_model_runs_converted_matmuls_at_the_fp8_peak():
    arch = architecture_from_hf(TINY)
    flops = tm.job_flops(arch, FP8)
    assert flops.fp8_linear == 6 * 2 * LAYER
    # casts a token: forward the input, backward the output gradient twice and the input again,
    # each 2 reads of 2 bytes + 1 written; weights: cast twice (below)
    d_in = 256 * 3 + 256 + 256 * 2 + 704  # q, k, v and gate, up read h; o reads q; down reads ffn
    d_out = 256 + 64 * 2 + 256 + 704 * 2 + 256
    assert flops.fp8_cast_token == 2 * (2 * d_in + 2 * d_out) * 5
    assert flops.fp8_forward_token == 2 * d_in * 5
    assert flops.fp8_weights == 2 * LAYER
    hw = tm.Hardware(peak_tflops=100.0, efficiency=0.5, hbm_gbs=1000.0, intra_node_gbs=450.0, host_link_gbs=32.0,
                     gpus_per_node=8, network_gbps=None, fp8_tflops=200.0)  # fmt: skip
    one = [np.array([v]) for v in (1, 1, 0, 0, 0, 4, 1)]
    t16 = tm.step_times(tm.job_flops(arch, BF16), arch, BF16, hw, *one).compute[0]
    t8 = tm.step_times(flops, arch, FP8, hw, *one).compute[0]
    tokens = 4 * 128
    fp8_rate = 200e12 * 0.5 * hw.fp8_ratio
    expected = t16 + tokens * flops.fp8_linear * (1 / fp8_rate - 1 / 50e12)
    # without ZeRO the weights are fp32 parameters under autocast: 2 casts of 2·4 + 1 bytes
    expected += (tokens * flops.fp8_cast_token + 2 * 2 * LAYER * 9) / 1000e9
    assert t8 == pytest.approx(expected)
    with pytest.raises(ValueError, match="without FP8 tensor cores"):
        tm.step_times(flops, arch, FP8, replace(hw, fp8_tflops=None), *one)


def test_a_compiled_stack_casts_an_input_its_linears_share_once():
    arch = architecture_from_hf(TINY)
    eager = tm.job_flops(arch, FP8)
    fused = tm.job_flops(arch, replace(FP8, kernels=Kernels.FUSED))
    # compiled: q, k and v read h once, gate and up read h once; o and down read their own inputs
    d_in = 256 + 256 + 256 + 704
    d_out = 256 + 64 * 2 + 256 + 704 * 2 + 256
    assert fused.fp8_cast_token == 2 * (2 * d_in + 2 * d_out) * 5
    assert fused.fp8_forward_token == 2 * d_in * 5
    # three casts of h fewer in forward and three in backward (q, k and v: two; gate and up: one), 2 layers
    assert eager.fp8_cast_token - fused.fp8_cast_token == 2 * (2 * 3 * 256) * 5
    # the FLOPs and the weights' casts are the same
    assert (fused.fp8_linear, fused.fp8_weights) == (eager.fp8_linear, eager.fp8_weights)


def test_fp8_weight_casts_read_the_weights_the_matmul_finds():
    arch = architecture_from_hf(TINY)
    flops = tm.job_flops(arch, FP8)
    weights = 2 * LAYER
    shard, none, full = (np.array([v]) for v in (8, 0, 2))

    def cast(training: Training, stage: int, recompute: np.ndarray = none) -> float:
        return float(tm.fp8_weight_cast_bytes(flops, training, np.array([stage]), shard, recompute)[0])

    # fp32 parameters under autocast (DDP, ZeroRedundancyOptimizer): 2 reads of 4 bytes + 1 written, twice
    assert cast(FP8, 0) == cast(FP8, 1) == weights * 9 * 2
    # FSDP2's 16-bit compute copies (ZeRO-2's whole parameters, ZeRO-3's gathered ones): 2 reads of 2 bytes + 1
    assert cast(FP8, 2) == cast(FP8, 3) == weights * 5 * 2
    # a recomputed forward casts them a third time
    assert cast(FP8, 3, full) == weights * 5 * 3
    # FP8 all-gather: each GPU casts its fp32 shard before the gather, ZeRO-3 only
    ag = replace(FP8, fp8=Fp8Setup(all_gather=True))
    assert cast(ag, 3) == pytest.approx(weights * 9 / 8 * 2)
    assert cast(ag, 2) == cast(FP8, 2)


def test_a_weight_cache_casts_each_weight_once_a_step_below_zero_2():
    arch = architecture_from_hf(TINY)
    cached = replace(FP8, fp8=Fp8Setup(weight_cache=True))
    flops = tm.job_flops(arch, cached)
    weights, shard = 2 * LAYER, np.array([8])

    def cast(training: Training, stage: int, recompute: int = 0, accum: int = 1) -> float:
        return float(tm.fp8_weight_cast_bytes(flops, training, np.array([stage]), shard, np.array([recompute]),
                                              np.array([accum]))[0])  # fmt: skip

    # the first micro-step reads each fp32 weight twice (absolute maximum, scaled cast) and writes a row-wise and a
    # column-wise float8 copy; the step's other micro-steps, its backward passes and recomputed forwards reuse them
    assert cast(cached, 0) == cast(cached, 1) == weights * (2 * 4 + 2)
    assert cast(cached, 1, accum=8) == weights * (2 * 4 + 2) / 8
    assert cast(cached, 0, recompute=2, accum=4) == weights * (2 * 4 + 2) / 4
    # under FSDP2 (ZeRO-2 and ZeRO-3) Transformer Engine keeps no cache: every use casts, as without one
    for stage in (2, 3):
        assert cast(cached, stage, accum=8) == cast(FP8, stage, accum=8) == weights * 5 * 2


def test_a_weight_cache_holds_two_float8_copies_of_each_converted_weight():
    arch = architecture_from_hf(TINY)
    cached = replace(FP8, fp8=Fp8Setup(weight_cache=True))
    for tp in (1, 2):
        plain = estimate_memory(arch, FP8, Layout(tp=tp))
        held = estimate_memory(arch, cached, Layout(tp=tp))
        assert held.gpu_terms["fp8_weight_cache"] == 2 * 2 * LAYER / tp  # row-wise + column-wise, every layer
        assert held.peak_allocated_bytes - plain.peak_allocated_bytes == 2 * 2 * LAYER / tp
        assert any("derived from Transformer Engine's code, not measured" in n for n in held.notes)
    sharded = estimate_memory(arch, cached, Layout(dp=2, zero=ZeroStage.PARAMETERS))
    assert sharded.gpu_terms["fp8_weight_cache"] == 0
    assert any("no cache at ZeRO-2/3" in n for n in sharded.notes)


def test_fp8_speeds_up_large_linears_and_not_small_ones():
    catalog = load_catalog()
    h100 = catalog.gpus["h100-sxm-80gb"]
    hw = tm.Hardware(peak_tflops=h100.tflops.bf16, efficiency=0.4, hbm_gbs=h100.hbm_gbs, intra_node_gbs=450.0,
                     host_link_gbs=64.0, gpus_per_node=8, network_gbps=None, fp8_tflops=h100.tflops.fp8)  # fmt: skip
    big = architecture_from_hf(catalog.models["llama-3.1-8b"].config)
    one = [np.array([v]) for v in (1, 1, 0, 0, 0, 2, 1)]

    def speedup(arch, seq):
        b, f = (Training(seq_len=seq, precision=p) for p in (Precision.BF16_MIXED, Precision.FP8))
        return (
            tm.step_times(tm.job_flops(arch, b), arch, b, hw, *one).total[0]
            / tm.step_times(tm.job_flops(arch, f), arch, f, hw, *one).total[0]
        )

    assert 1.1 < speedup(big, 8192) < 2.0
    assert speedup(architecture_from_hf(ODD), 16) < 1.0  # cast traffic outweighs tiny matmuls


@pytest.mark.parametrize(
    ("training", "layout", "match"),
    [
        (Training(method=Method.LORA, precision=Precision.FP8), Layout(), "full fine-tuning"),
        (Training(precision=Precision.FP8, fp8=Fp8Setup(Fp8Recipe.ROWWISE, all_gather=True)),
         Layout(dp=2, zero=ZeroStage.PARAMETERS), "needs recipe tensorwise"),
        (Training(precision=Precision.BF16_MIXED, fp8=Fp8Setup()), Layout(), "needs precision fp8"),
    ],
)  # fmt: skip
def test_fp8_refusals(training, layout, match):
    with pytest.raises(JobError, match=match):
        estimate_memory(architecture_from_hf(TINY), training, layout)


def test_fp8_on_moe_is_refused():
    moe = dict(TINY, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2)
    with pytest.raises(JobError, match="fused expert weights"):
        estimate_memory(architecture_from_hf(moe), FP8, Layout())


def test_job_files_refuse_fp8_mistakes(catalog):
    base = {"architecture": TINY, "seq_len": 128}
    with pytest.raises(JobError, match="delayed scaling is not modelled"):
        parse_job(dict(base, precision="fp8", fp8={"recipe": "delayed"}), "job.yaml")
    with pytest.raises(JobError, match="an fp8 block needs precision: fp8"):
        parse_job(dict(base, fp8={"recipe": "rowwise"}), "job.yaml")
    with pytest.raises(JobError, match="a100-sxm-80gb, which has no FP8 tensor cores"):
        resolve_job(parse_job(dict(base, precision="fp8", gpu="a100-sxm-80gb"), "job.yaml"), catalog)
    job = resolve_job(parse_job(dict(base, precision="fp8", fp8={"recipe": "rowwise"}), "job.yaml"), catalog)
    assert job.training.fp8_setup == Fp8Setup(Fp8Recipe.ROWWISE, all_gather=False)
    job = resolve_job(parse_job(dict(base, precision="fp8", fp8={"weight_cache": True}), "job.yaml"), catalog)
    assert job.training.fp8_setup == Fp8Setup(weight_cache=True)
    assert job.training.precision_label == "fp8 tensorwise + cached FP8 weights"


def test_fit_leaves_out_pools_without_fp8(catalog):
    job = resolve_job(parse_job({"architecture": TINY, "seq_len": 128, "precision": "fp8", "tokens": 10**7}, "j"),
                      catalog)  # fmt: skip
    res = fit_job(job, [gpu_pool(catalog, "a100-sxm-80gb", 8, 1), gpu_pool(catalog, "h100-sxm-80gb", 8, 1)])
    assert any("has no FP8 tensor cores" in e for e in res.excluded)
    assert set(res.layouts["pool"]) == {res.pools[1].name}


def test_cli_memory_fp8_on_a_gpu_without_fp8(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("model: llama-3.1-8b\nprecision: fp8\nseq_len: 2048\ngpu: a100-sxm-80gb\n")
    res = subprocess.run([sys.executable, "-m", "ftplan", "memory", str(job)], capture_output=True, text=True,
                         check=False, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"error: {job}: precision fp8 on a100-sxm-80gb, which has no FP8 tensor cores (no fp8 peak in the catalog). "
        "To fix: use precision bf16-mixed, or a GPU with FP8 (Ada, Hopper, Blackwell, MI300)."
    ]


def test_cli_memory_fp8_flags_and_title(tmp_path):
    cmd = [sys.executable, "-m", "ftplan", "memory", "--model", "llama-3.1-8b", "--seq-len", "2048", "--gpu", "h100",
           "--precision", "fp8", "--fp8-recipe", "rowwise", "--format", "json"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr
    assert any("eager float8 casts" in n for n in json.loads(res.stdout)["notes"])
    table = subprocess.run(cmd[:-2], capture_output=True, text=True, check=False)
    assert " · fp8 rowwise · adamw · " in table.stdout.splitlines()[0]
    bad = subprocess.run([*cmd[:-2], "--fp8-all-gather"], capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "needs recipe tensorwise" in bad.stderr.strip().splitlines()[-1]


def test_cli_fp8_weight_cache_in_memory_and_fit():
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "ftplan", "memory", "--model", "llama-3.1-8b", "--seq-len", "2048", "--gpu", "h100",
           "--precision", "fp8", "--fp8-weight-cache", "--format", "json"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=root)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    arch = architecture_from_hf(load_catalog().models["llama-3.1-8b"].config)
    converted = sum(n * arch.layers_of(st) for st, n in fp8_linears(arch).items())
    assert out["breakdown"]["fp8_weight_cache"] == 2 * converted
    fit = [sys.executable, "-m", "ftplan", "fit", "scenarios/jobs/llama-70b-fp8-fit.yaml", "--gpu", "h100",
           "--gpus", "64", "--network-gbps", "3200", "--top", "1000"]  # fmt: skip
    runs = ([*fit, "--format", "json"], [*fit, "--fp8-weight-cache", "--format", "json"])
    plain, cached = (subprocess.run(c, capture_output=True, text=True, check=False, cwd=root) for c in runs)
    assert plain.returncode == cached.returncode == 0, cached.stderr
    key = ("zero", "dp", "tp", "pp", "cp", "dp_shard", "offload", "recompute", "micro_batch", "grad_accum")
    rows = [{tuple(r[k] for k in key): r for r in json.loads(res.stdout)["layouts"]} for res in (plain, cached)]
    both = rows[0].keys() & rows[1].keys()
    assert {k[0] for k in both} == {0, 1, 2, 3}
    for k in both:  # cached: the weights' casts once a step below ZeRO-2, every use at ZeRO-2/3
        if k[0] <= 1:
            assert rows[1][k]["compute_s"] < rows[0][k]["compute_s"]
        else:
            assert rows[1][k]["compute_s"] == rows[0][k]["compute_s"]
    # the cached copies take memory: fewer layouts below ZeRO-2 fit
    assert sum(k[0] <= 1 for k in rows[1]) < sum(k[0] <= 1 for k in rows[0])
    header = subprocess.run([*fit[:-2], "--top", "1", "--fp8-weight-cache"], capture_output=True, text=True,
                            check=False, cwd=root).stdout.splitlines()[0]  # fmt: skip
    assert " · fp8 tensorwise + FP8 all-gather + cached FP8 weights · " in header
