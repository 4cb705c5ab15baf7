"""Pipeline parallelism: the schedules' arithmetic, per-rank memory, time, the layout search and the plan."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.errors import JobError
from ftplan.fit import fit_job, gpu_pool, instance_pool, pipeline_degrees
from ftplan.job import resolve_job
from ftplan.memory import Layout, PipelineSchedule, Recompute, ZeroStage, estimate_memory
from ftplan.memory.pipeline import bubble_fraction, chunk_layers, in_flight, rank_chunks
from ftplan.schema.job import parse_job
from ftplan.timing import model as tm

ONE_F_ONE_B, GPIPE, INTERLEAVED = PipelineSchedule.ONE_F_ONE_B, PipelineSchedule.GPIPE, PipelineSchedule.INTERLEAVED


def test_layers_are_cut_as_evenly_as_possible_earlier_chunks_taking_the_rest():
    assert chunk_layers(80, 8) == [10] * 8
    assert chunk_layers(126, 8) == [16] * 6 + [15] * 2
    assert chunk_layers(32, 4, 2) == [4] * 8
    assert rank_chunks(1, 4, 2) == [1, 5]


def test_micro_batches_in_flight_are_torchs_warmup_counts():
    # Schedule1F1B: min(m, pp − rank) forwards before the first backward
    assert [in_flight(ONE_F_ONE_B, 4, 1, 8, r) for r in range(4)] == [4, 3, 2, 1]
    assert in_flight(ONE_F_ONE_B, 4, 1, 2, 0) == 2
    assert in_flight(GPIPE, 4, 1, 8, 3) == 8
    # ScheduleInterleaved1F1B: (v − 1)·k + 2·(pp − 1 − rank) warm-up chunk forwards, one more before the first
    # backward; k = m / ⌊m / pp⌋ micro-batches a round
    assert in_flight(INTERLEAVED, 2, 2, 4, 0) == (2 - 1) * 2 + 2 * 1 + 1
    assert in_flight(INTERLEAVED, 4, 2, 8, 3) == (2 - 1) * 4 + 0 + 1
    assert in_flight(INTERLEAVED, 4, 3, 2, 0) == min((3 - 1) * 2 + 2 * 3 + 1, 2 * 3)  # capped at m·v


@settings(max_examples=60, deadline=None)
@given(pp=st.integers(2, 16), m=st.integers(1, 64), v=st.integers(1, 4))
def test_the_bubble_falls_with_more_micro_batches(pp, m, v):
    schedule = INTERLEAVED if v > 1 else ONE_F_ONE_B
    assert bubble_fraction(schedule, pp, v, m) == pytest.approx((pp - 1) / (v * m))
    assert bubble_fraction(schedule, pp, v, m + 1) < bubble_fraction(schedule, pp, v, m)
    assert bubble_fraction(schedule, 1, 1, m) == 0.0


def _job(catalog, **fields):
    data = {"model": "llama-3.1-8b", "method": "full", "seq_len": 4096, "gpu": "h100", "tokens": 10**8,
            "global_batch": 64, **fields}  # fmt: skip
    return resolve_job(parse_job(data, "job"), catalog, "job")


def _states(est) -> int:
    return sum(est.gpu_terms[k] for k in ("weights_trainable", "weights_frozen", "gradients", "optimizer_states"))


@settings(max_examples=25, deadline=None)
@given(
    method=st.sampled_from(["full", "lora"]),
    zero=st.sampled_from([0, 1]),
    dp=st.sampled_from([1, 2]),
    recompute=st.sampled_from(["none", "full"]),
)
def test_more_stages_never_raise_the_model_states_a_gpu_holds(catalog, method, zero, dp, recompute):
    job = _job(catalog, method=method)
    base = replace(job.layout, dp=dp, zero=ZeroStage(zero if dp > 1 else 0), recompute=recompute, grad_accum=16)
    states = [_states(estimate_memory(job.arch, job.training, replace(base, pp=pp))) for pp in (1, 2, 4, 8)]
    assert states == sorted(states, reverse=True)


def test_each_rank_holds_its_layers_and_the_end_stages_the_embeddings_and_head(catalog):
    job = _job(catalog)
    arch = job.arch
    layout = replace(job.layout, pp=4, grad_accum=8)
    weights = [estimate_memory(arch, job.training, layout, pipeline_rank=r).gpu_terms["weights_trainable"]
               for r in range(4)]  # fmt: skip
    # bf16-mixed without ZeRO: fp32 parameters, 4 bytes each; every parameter is on exactly one rank
    assert sum(weights) == 4 * arch.total_params
    block = sum(arch.layer_matrix_params[s] + arch.layer_vector_params[s] for s in arch.block_linears)
    assert weights[1] == weights[2] == 4 * block * arch.layers // 4
    assert weights[0] - weights[1] == 4 * arch.embedding_params
    assert weights[3] - weights[1] == 4 * (arch.lm_head_params + arch.other_params)


def test_a_tied_embedding_is_copied_onto_the_last_stage(catalog):
    job = _job(catalog, model="qwen3-0.6b")
    assert job.arch.tied
    layout = replace(job.layout, pp=2, grad_accum=4)
    first, last = (estimate_memory(job.arch, job.training, layout, pipeline_rank=r) for r in (0, 1))
    stage = job.arch.pipeline_stage(tuple(range(job.arch.layers // 2, job.arch.layers)))
    assert stage.lm_head_params == job.arch.vocab * job.arch.hidden and not stage.tied
    assert last.gpu_terms["weights_trainable"] > first.gpu_terms["weights_trainable"] - 4 * job.arch.vocab


def test_the_first_rank_holds_more_micro_batches_and_gpipe_all_of_them(catalog):
    job = _job(catalog, method="lora")
    lay = replace(job.layout, pp=4, grad_accum=8)
    acts = {
        (schedule, r): estimate_memory(job.arch, job.training, replace(lay, pp_schedule=schedule),
                                       pipeline_rank=r).gpu_terms["activations"]
        for schedule in (ONE_F_ONE_B, GPIPE)
        for r in range(4)
    }  # fmt: skip
    assert acts[ONE_F_ONE_B, 0] > acts[ONE_F_ONE_B, 1] > acts[ONE_F_ONE_B, 2]
    assert acts[GPIPE, 1] > acts[ONE_F_ONE_B, 1]
    # the worst rank is what the estimate reports without one
    worst = estimate_memory(job.arch, job.training, lay)
    each = [estimate_memory(job.arch, job.training, lay, pipeline_rank=r).device_total_bytes for r in range(4)]
    assert worst.device_total_bytes == max(each)
    assert any(n.startswith("pipeline rank") for n in worst.notes)


def test_receive_buffers_are_one_per_micro_batch_for_each_direction(catalog):
    job = _job(catalog, precision="bf16-pure")
    arch = job.arch
    lay = replace(job.layout, pp=4, grad_accum=8, micro_batch=2)
    tokens = 2 * 4096
    middle = estimate_memory(arch, job.training, lay, pipeline_rank=1).gpu_terms["pipeline_recv_buffers"]
    first = estimate_memory(arch, job.training, lay, pipeline_rank=0).gpu_terms["pipeline_recv_buffers"]
    assert middle == 2 * 8 * 2 * arch.hidden * tokens  # input and output gradient, 8 micro-batches, bf16
    assert first == middle // 2
    assert estimate_memory(arch, job.training, replace(lay, pp=1)).gpu_terms["pipeline_recv_buffers"] == 0


@pytest.mark.parametrize(
    ("layout", "fields", "message"),
    [
        ({"pp": 2, "pp_schedule": "interleaved-1f1b"}, {}, "virtual_stages ≥ 2"),
        ({"pp": 2, "virtual_stages": 2}, {}, "needs pp_schedule interleaved-1f1b"),
        ({"pp": 64}, {}, "every chunk needs a layer"),
        ({"pp": 2}, {"method": "qlora"}, "QLoRA under pipeline parallelism"),
        ({"pp": 2}, {"method": "lora", "lora": {"modules_to_save": ["lm_head"]}}, "modules_to_save under pipeline"),
        ({"pp": 4, "pp_schedule": "interleaved-1f1b", "virtual_stages": 2}, {"grad_accum": 9}, "multiple"),
        ({"pp": 2, "pp_schedule": "zero-bubble"}, {}, "zero-bubble schedules are not planned.*To fix: use 1f1b"),
        ({"pp": 2, "pp_schedule": "ZBV"}, {}, "zero-bubble schedules are not planned"),
    ],
)
def test_pipelines_frameworks_cannot_run_are_refused_in_one_line(catalog, layout, fields, message):
    with pytest.raises(JobError, match=message):
        _job(catalog, layout=layout, **fields)


def test_step_time_is_one_stage_of_compute_plus_the_bubble_and_the_sends(catalog, h100_node):
    job = _job(catalog)
    arch, tr = job.arch, job.training
    flops = tm.job_flops(arch, tr)
    hw = h100_node()
    args = (np.array([1]), np.array([1]), np.array([0]), np.array([0]), np.array([0]), np.array([1]))
    one = tm.step_times(flops, arch, tr, hw, *args, np.array([16]))
    four = tm.step_times(flops, arch, tr, hw, *args, np.array([16]), pp=np.array([4]))
    assert four.compute[0] == pytest.approx(one.compute[0] / 4 * (1 + 3 / 16))
    sends = 2 * 4096 * arch.hidden * 2 / (450e9 * tm.INTRA_NODE_EFFICIENCY) * (16 + 4 - 1)
    assert four.communication[0] == pytest.approx(sends)
    more = tm.step_times(flops, arch, tr, hw, *args, np.array([64]), pp=np.array([4]))
    assert more.compute[0] / 64 < four.compute[0] / 16  # a smaller bubble per micro-batch


def test_each_tensor_parallel_rank_sends_its_share_and_a_pipeline_wider_than_a_node_sends_over_the_network(
    catalog, h100_node
):
    job = _job(catalog)
    arch, tr = job.arch, job.training
    flops = tm.job_flops(arch, tr)
    hw = h100_node()

    def comm(dp: int, tp: int, pp: int) -> float:
        one = (np.array([0]), np.array([0]), np.array([0]), np.array([1]), np.array([16]))
        times = tm.step_times(flops, arch, tr, hw, np.array([dp]), np.array([tp]), *one, pp=np.array([pp]))
        return float(times.communication[0])

    # the tensor-parallel collectives of a stage's layers are a pp-th of the unpipelined ones; the rest is sends
    # of 4096 tokens' hidden states, a tp-th of them each, each way, in 16 + 4 − 1 slots
    sends = 2 * 4096 * arch.hidden * 2 / 2 * (16 + 4 - 1)
    assert comm(1, 2, 4) - comm(1, 2, 1) / 4 == pytest.approx(sends / (450e9 * tm.INTRA_NODE_EFFICIENCY))
    # two replicas of the 8-GPU pipeline fill two nodes: its stages are dp·tp = 4 ranks apart, so one boundary
    # crosses the nodes, at a GPU's share of its node's 3,200 Gb/s
    assert comm(2, 2, 4) - comm(2, 2, 1) / 4 == pytest.approx(sends / (3200 / 8 * 1e9 / 8))


def test_the_layout_search_finds_pipelines_only_where_a_decoder_can_be_cut(catalog):
    job = _job(catalog, model="llama-3.1-70b", global_batch=32)
    assert pipeline_degrees(job) == (1, 2, 4, 8, 16)
    result = fit_job(job, [instance_pool(catalog, "aws/p5.48xlarge", nodes=4)])
    frame = result.layouts
    piped = frame[frame["pp"] > 1]
    assert not piped.empty
    assert (piped["grad_accum"] >= piped["pp"]).all()  # Schedule1F1B needs a micro-batch a stage
    assert set(piped["zero"]) <= {0, 1} and set(piped["offload"]) == {"none"}
    assert (frame["dp"] * frame["tp"] * frame["pp"] == frame["gpus"]).all()
    row = piped.iloc[0]
    layout = Layout(dp=int(row.dp), tp=int(row.tp), zero=ZeroStage(int(row.zero)), recompute=Recompute(row.recompute),
                    micro_batch=int(row.micro_batch), grad_accum=int(row.grad_accum), gpus_per_node=8,
                    pp=int(row.pp))  # fmt: skip
    est = estimate_memory(job.arch, job.training, layout, gpu_arch="hopper", overheads=job.overheads)
    assert row.device_bytes == pytest.approx(est.device_total_bytes, abs=2)
    qlora = _job(catalog, method="qlora")
    assert pipeline_degrees(qlora) == (1,)
    assert fit_job(qlora, [gpu_pool(catalog, "h100")]).layouts["pp"].eq(1).all()


@pytest.mark.parametrize(
    "fields",
    [
        {"model": "llama-3.2-1b", "global_batch": 96, "model_output": "kept"},  # tied; 3 micro-steps over 2 stages
        {"model": "qwen2.5-7b", "global_batch": 48, "precision": "bf16-pure", "loss": "chunked"},
        {"model": "qwen3-30b-a3b", "method": "lora", "global_batch": 32},  # MoE, expert parallelism beside stages
    ],
)
def test_every_pipeline_row_is_the_memory_models_own(catalog, fields):
    """The search extends each end rank's estimate to every micro-batch of a pipeline family (and takes the
    first rank's own estimate where the micro-steps equal the stages): every row is what the model gives."""
    job = _job(catalog, **fields)
    pool = instance_pool(catalog, "aws/p4de.24xlarge", nodes=4)
    piped = fit_job(job, [pool]).layouts.query("pp > 1")
    assert len(piped) > 20 and (piped["grad_accum"] == piped["pp"]).any() and (piped["grad_accum"] > piped["pp"]).any()
    for row in piped.itertuples():
        layout = Layout(dp=row.dp, tp=row.tp, zero=ZeroStage(row.zero), recompute=Recompute(row.recompute),
                        micro_batch=row.micro_batch, grad_accum=row.grad_accum, gpus_per_node=8, pp=row.pp,
                        ep=row.ep)  # fmt: skip
        est = estimate_memory(job.arch, job.training, layout, gpu_arch=pool.gpu.arch, overheads=job.overheads)
        assert row.device_bytes == pytest.approx(est.device_total_bytes, abs=2), row
