"""Expert parallelism: a MoE layer's routed experts split over ep GPUs, tokens sent to them by all-to-all."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.errors import JobError
from ftplan.fit import expert_degrees, fit_job, instance_pool
from ftplan.job import resolve_job
from ftplan.memory import ZeroStage, estimate_memory
from ftplan.schema.job import parse_job
from ftplan.timing import dispatch
from ftplan.timing import model as tm

STATES = ("weights_trainable", "weights_frozen", "gradients", "optimizer_states")


def _job(catalog, **fields):
    data = {"model": "qwen3-30b-a3b", "method": "full", "seq_len": 4096, "gpu": "h100", "tokens": 10**8,
            "global_batch": 64, **fields}  # fmt: skip
    return resolve_job(parse_job(data, "job"), catalog, "job")


def _experts(arch) -> int:
    """Routed-expert parameters of the whole model."""
    return sum(
        (x.weight_params + x.bias_params) * arch.layers_of(st) for st, xs in arch.block_linears.items() for x in xs
        if x.expert
    )  # fmt: skip


def test_a_rank_holds_its_share_of_the_experts_and_all_the_rest(catalog):
    job = _job(catalog)
    arch = job.arch
    lay = replace(job.layout, dp=8)
    one, eight = (estimate_memory(arch, job.training, replace(lay, ep=e)) for e in (1, 8))
    experts = _experts(arch)
    assert arch.expert_shard(8, 1.0).total_params == arch.total_params - experts + experts // 8
    # ZeRO 0, bf16-mixed full fine-tuning (autocast over fp32 weights): 4 bytes a weight, 8 of AdamW's moments
    saved = experts - experts // 8
    assert one.gpu_terms["weights_trainable"] - eight.gpu_terms["weights_trainable"] == 4 * saved
    assert one.gpu_terms["optimizer_states"] - eight.gpu_terms["optimizer_states"] == 8 * saved


def test_sharded_states_are_the_whole_models_over_the_shard_group(catalog):
    # ZeRO-3 over 16 ranks with ep 8: a rank holds 1/8 of the experts, sharded over the 2 ranks holding
    # the same ones, so every state is the whole model's over 16, as without expert parallelism
    job = _job(catalog)
    lay = replace(job.layout, dp=16, zero=ZeroStage.PARAMETERS)
    plain, split = (estimate_memory(job.arch, job.training, replace(lay, ep=e)) for e in (1, 8))
    assert {k: split.gpu_terms[k] for k in STATES} == pytest.approx({k: plain.gpu_terms[k] for k in STATES})
    # ... but only its own experts are gathered
    assert split.gpu_terms["zero3_gathered_params"] < plain.gpu_terms["zero3_gathered_params"]


@settings(max_examples=20, deadline=None)
@given(ep=st.sampled_from([1, 2, 4]), zero=st.sampled_from([0, 1, 2, 3]), method=st.sampled_from(["full", "lora"]))
def test_more_expert_ranks_never_raise_what_they_divide(catalog, ep, zero, method):
    job = _job(catalog, method=method)
    lay = replace(job.layout, dp=8, zero=ZeroStage(zero))
    fewer, more = (estimate_memory(job.arch, job.training, replace(lay, ep=e)) for e in (ep, 2 * ep))
    for term in (*STATES, "zero3_gathered_params"):
        assert more.gpu_terms[term] <= fewer.gpu_terms[term] + 1e-6, term


def test_activations_grow_with_the_rows_a_ranks_experts_take(catalog):
    job = _job(catalog, layout={"dp": 8, "ep": 8})
    low, high = (estimate_memory(job.arch, replace(job.training, capacity_factor=cf), job.layout) for cf in (1.0, 2.0))
    assert high.gpu_terms["activations"] > low.gpu_terms["activations"]
    assert any("capacity factor" in n for n in high.notes)
    assert all(
        "capacity factor" not in n for n in estimate_memory(job.arch, job.training, replace(job.layout, ep=1)).notes
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": "llama-3.1-8b", "layout": {"dp": 2, "ep": 2}}, "no routed experts"),
        ({"layout": {"dp": 6, "ep": 3}}, "divide the 128 routed experts"),
        ({"layout": {"dp": 2, "ep": 4}}, "divide the ranks that shard the model"),
        ({"layout": {"dp": 2, "tp": 2, "ep": 2}}, "tp 1"),
        ({"method": "lora", "lora": {"target_modules": "all-linear"}, "layout": {"dp": 2, "ep": 2}}, "routed experts"),
    ],
)
def test_expert_layouts_the_frameworks_cannot_run_are_refused(catalog, fields, message):
    with pytest.raises(JobError, match=message):
        _job(catalog, **fields)


def test_step_time_adds_the_all_to_alls_and_splits_the_expert_collectives(catalog, h100_node):
    job = _job(catalog)
    arch, tr = job.arch, job.training
    flops = tm.job_flops(arch, tr)
    assert flops.expert_weights == _experts(arch) == flops.expert_trainable
    hw = h100_node()
    args = (np.array([8]), np.array([1]), np.array([3]), np.array([0]), np.array([0]), np.array([1]), np.array([1]))
    one = tm.step_times(flops, arch, tr, hw, *args)
    eight = tm.step_times(flops, arch, tr, hw, *args, ep=np.array([8]))
    # the step waits for the GPU whose experts take capacity_factor (1.25) × a balanced share of the rows
    assert flops.expert_linear == 6 * 8 * 3 * arch.hidden * arch.ffn * arch.layers_of("main")
    # (the routed experts are weight matmuls: at the matmul rate, 4096 tokens a micro-step)
    extra = 4096 * 0.25 * flops.expert_linear / (hw.peak_tflops * 1e12 * hw.efficiency)
    # (each weight GEMM's fixed costs apart: a GPU runs an eighth of the experts, on eight times the rows each)
    g1, g8 = (tm.gemm_overhead(flops, hw, np.array([4096.0]), 1, 0, ep=ep)[0] for ep in (1, 8))
    assert g8 < g1
    assert eight.compute[0] - g8 == pytest.approx(one.compute[0] - g1 + extra)
    # four all-to-alls a MoE layer (dispatch and combine, forward and backward) of 4096 tokens × top-8 × hidden
    # in bf16, 7/8 of it leaving the GPU over NVLink
    a2a = 4 * arch.layers_of("main") * 4096 * 8 * arch.hidden * 2 * 7 / 8 / (450e9 * tm.INTRA_NODE_EFFICIENCY)
    # ZeRO-3's expert gathers vanish (each expert lives on one GPU of the node): only the rest is gathered
    w = flops.weights * 2.0
    g = flops.trainable * 4.0
    ew, eg = flops.expert_weights * 2.0, flops.expert_trainable * 4.0
    bw = tm.bus_bandwidth(hw, np.array([8]))[0] * 1e9
    units = arch.total_layers + 1  # FSDP groups: the layers and the root, three collectives each
    t_z3 = 7 / 8 * (2 * (w - ew) + (g - eg)) / bw + 3 * units * tm.collective_latency(hw, 8, 8, "all-gather")
    assert eight.communication[0] == pytest.approx(max(0.0, t_z3 - eight.compute[0]) + a2a)


def test_a_layers_experts_run_as_one_grouped_gemm_a_projection_in_exact_arithmetic(catalog, h100_node):
    # Qwen3-30B-A3B: 48 layers of 128 experts, top-8, gate and up 2048 → 768 and down 768 → 2048 a layer
    job = _job(catalog)
    arch, hw = job.arch, h100_node()
    flops = tm.job_flops(arch, job.training)
    experts = [g for g in flops.gemms if g.groups > 1]
    shapes = [(2048, 768), (2048, 768), (768, 2048)]
    assert [(g.d_in, g.d_out, g.copies, g.groups, g.rows) for g in experts] == [(k, n, 48, 128, 8) for k, n in shapes]
    out = tm.GEMM_OUTPUT_S * tm.GEMM_TABLE_HBM_GBS / 3350.0

    def gemm(m: float, n: float, k: float) -> float:
        return out * m * n + tm.GEMM_INNER_S * k + tm.GEMM_FIXED_S

    only = replace(flops, gemms=tuple(experts))
    for ep in (1, 8):  # 4,096 tokens a micro-step: 32,768 routed rows, over 128 / ep local experts
        rows, groups = 4096 * 8, 128 / ep
        want = 48 * sum(gemm(rows, n, k) + gemm(rows, k, n) + gemm(groups * k, n, rows / groups) for k, n in shapes)
        got = tm.gemm_overhead(only, hw, np.array([4096.0]), 1, 0, ep=ep)[0]
        assert got == pytest.approx(want, rel=1e-12)


def test_the_layout_search_splits_experts_of_moe_models_only(catalog):
    job = _job(catalog)
    assert expert_degrees(job, 16) == (1, 2, 4, 8, 16)
    assert expert_degrees(_job(catalog, model="llama-3.1-8b"), 16) == (1,)
    frame = fit_job(job, [instance_pool(catalog, "aws/p5.48xlarge", nodes=2)]).layouts
    split = frame[frame["ep"] > 1]
    assert not split.empty and set(split["tp"]) == {1} and set(split["offload"]) == {"none"}
    assert ((frame["dp"] * frame["cp"]) % frame["ep"] == 0).all()


def test_the_verifier_recomputes_an_expert_parallel_run_as_the_search_states_it(catalog):
    from ftplan.plan import build_plan
    from ftplan.scenario import resolve_scenario
    from ftplan.schema.plan import Plan
    from ftplan.schema.scenario import Scenario
    from ftplan.solver import solve_campaign
    from ftplan.verify import verify_plan

    job = {"id": "moe", "model": "qwen3-30b-a3b", "method": "full", "seq_len": 4096, "global_batch": 64,
           "tokens": 10**8}  # fmt: skip
    pool = {"id": "p5", "kind": "cloud", "instance": "aws/p5.48xlarge", "quota_nodes": 2}
    data = {"name": "ep", "jobs": [job], "pools": [pool], "objective": {"minimise": "cost"}}
    campaign = resolve_scenario(Scenario.model_validate(data), catalog, "ep.yaml")
    plan = build_plan(campaign, solve_campaign(campaign)).model_dump()
    run = plan["runs"][0]
    frame = fit_job(campaign.runs[0].job, [instance_pool(catalog, "aws/p5.48xlarge", nodes=2)]).layouts
    rows = frame[(frame["ep"] > 1) & (frame["gpus"] == run["gpu_count"])]
    assert not rows.empty
    row = rows.iloc[0]
    ints = ("dp", "tp", "pp", "cp", "ep", "zero", "dp_shard", "micro_batch", "grad_accum")
    run["layout"] |= {k: int(row[k]) for k in ints} | {"offload": row["offload"], "recompute": row["recompute"]}
    run |= {"memory_per_gpu_bytes": int(row["device_bytes"]), "headroom_bytes": int(row["headroom_bytes"]),
            "memory_required_bytes": int(row["required_bytes"]), "fit_probability": float(row["fit_probability"]),
            "memory_band_bytes": [round(row["band_low_bytes"]), round(row["band_high_bytes"])],
            "hours": float(row["hours"]), "tokens_per_s": float(row["tokens_per_s"])}  # fmt: skip
    problems = verify_plan(campaign, Plan.model_validate(plan))
    # the run's memory and hours are what the verifier recomputes; only times and totals built on the old
    # hours may now disagree
    assert problems, "the totals still hold the planned layout's hours"
    run_problems = [p for p in problems if p.startswith("moe")]
    assert not [p for p in run_problems if "memory" in p or "headroom" in p or "h recomputed" in p or "valid" in p]
    run["layout"]["ep"] = 1  # the same run stated without its experts split: the verifier sees the difference
    assert any("memory" in p for p in verify_plan(campaign, Plan.model_validate(plan)))


def test_without_zero_a_gpu_steps_the_optimizer_over_its_own_experts_only(catalog, h100_node):
    """Under expert parallelism without ZeRO a GPU holds, and updates, the router, attention and the rest whole
    but only experts / ep of the routed experts; with ZeRO the states are sharded to trainable / shard either way."""
    job = _job(catalog)
    arch, tr = job.arch, job.training
    flops = tm.job_flops(arch, tr)
    hw = h100_node()
    per_param = dispatch.optimizer_bytes(tr) / (hw.hbm_gbs * 1e9)
    for zero, held in ((0, flops.trainable - flops.expert_trainable * 7 / 8), (1, flops.trainable / 8)):
        args = [np.array([v]) for v in (8, 1, zero, 0, 0, 1, 1)]
        one, eight = (tm.step_times(flops, arch, tr, hw, *args, ep=np.array([e])) for e in (1, 8))
        whole = flops.trainable if zero == 0 else flops.trainable / 8
        assert one.other[0] - eight.other[0] == pytest.approx((whole - held) * per_param, rel=1e-9, abs=1e-12)
    assert flops.expert_trainable > 0.9 * flops.trainable  # (Qwen3-30B-A3B: nearly all of it is experts)
