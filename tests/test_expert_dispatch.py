"""`expert_dispatch: deepep`: DeepEP sends a token once to each GPU and node that holds its experts (time), and
allocates its buffers outside PyTorch (memory)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from math import comb
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.errors import JobError
from ftplan.job import resolve_job
from ftplan.memory import ExpertDispatch, estimate_memory
from ftplan.memory.deepep import deepep_buffer_bytes
from ftplan.schema.job import parse_job
from ftplan.timing import model as tm

HW = tm.Hardware(peak_tflops=989.0, efficiency=0.5, hbm_gbs=3350.0, intra_node_gbs=450.0, host_link_gbs=64.0,
                 gpus_per_node=8, network_gbps=3200.0)  # fmt: skip
INTRA, CROSS = 450e9 * tm.INTRA_NODE_EFFICIENCY, 3200 / 8 * 1e9 / 8


def _job(catalog, **fields):
    data = {"model": "qwen3-30b-a3b", "method": "full", "seq_len": 4096, "gpu": "h100", "tokens": 10**8,
            "global_batch": 64, **fields}  # fmt: skip
    return resolve_job(parse_job(data, "job"), catalog, "job")


def _seconds(experts: int, top_k: int, ep: int, token_bytes: float = 1e9) -> float:
    one = [np.array([v]) for v in (token_bytes, ep, 1)]
    return float(tm.deepep_seconds(HW, one[0], experts, top_k, one[1], one[2])[0])


def test_a_token_goes_once_to_each_gpu_that_holds_its_experts_in_exact_arithmetic():
    # 8 experts, top-2, 4 GPUs of one node (2 experts each): another GPU receives a token unless both of its
    # experts lie elsewhere, C(6, 2) / C(8, 2) = 15/28: 3 × 13/28 copies a token, against all-to-all's 2 × 3/4
    assert _seconds(8, 2, 4) == pytest.approx(1e9 * 3 * 13 / 28 / INTRA, rel=1e-12)
    a2a = float(tm.all_to_all_seconds(HW, np.array([1e9 * 2 * 3 / 4]), np.array([4]), np.array([1]))[0])
    assert a2a == pytest.approx(1e9 * 42 / 28 / INTRA, rel=1e-12)
    # 16 experts, top-2, 16 GPUs on two nodes: a GPU holds one (p = 2/16), the other node eight (p = 1 − 28/120);
    # over NVLink its own copies and those it forwards from the other node, 7 × 1/8 × 2; over the network 92/120
    nvlink, network = 1e9 * 7 * (1 / 8) * 2 / INTRA, 1e9 * (1 - comb(8, 2) / comb(16, 2)) / CROSS
    assert _seconds(16, 2, 16) == pytest.approx(max(nvlink, network), rel=1e-12)
    assert _seconds(16, 2, 1) == 0.0


@settings(max_examples=60, deadline=None)
@given(per_gpu=st.integers(1, 16), top_k=st.integers(1, 8), ep=st.sampled_from([2, 4, 8, 16, 32, 64]))
def test_deepep_never_sends_more_over_the_network_nor_more_on_one_node(per_gpu, top_k, ep):
    """On one node a token's copies to a GPU merge into one; across nodes the network carries a token once a node
    (NVLink taken as free, so each time is the network's)."""
    experts, top_k = per_gpu * ep, min(top_k, per_gpu * ep)
    hw = replace(HW, intra_node_gbs=1e12) if ep > 8 else HW
    one = [np.array([v]) for v in (1e9, ep, 1)]
    deepep = float(tm.deepep_seconds(hw, one[0], experts, top_k, one[1], one[2])[0])
    a2a = float(tm.all_to_all_seconds(hw, np.array([1e9 * top_k * (ep - 1) / ep]), one[1], one[2])[0])
    assert deepep <= a2a * (1 + 1e-12)


def test_step_time_takes_deepeps_traffic_for_a_deepep_job(catalog):
    job = _job(catalog, expert_dispatch="deepep")
    arch, flops = job.arch, tm.job_flops(job.arch, job.training)
    args = [np.array([v]) for v in (8, 1, 3, 0, 0, 2, 1)]
    alltoall = tm.step_times(flops, arch, replace(job.training, expert_dispatch=ExpertDispatch.ALLTOALL), HW, *args,
                             ep=np.array([8]))  # fmt: skip
    deepep = tm.step_times(flops, arch, job.training, HW, *args, ep=np.array([8]))
    tokens = 2 * 4096
    one = tm.deepep_seconds(HW, tokens * arch.hidden * 2, arch.experts, arch.experts_per_token, 8, 1)
    sent = tokens * arch.experts_per_token * arch.hidden * 2 * 7 / 8
    gap = 4 * arch.layers_of("main") * (tm.all_to_all_seconds(HW, sent, 8, 1) - one)
    assert alltoall.communication[0] - deepep.communication[0] == pytest.approx(float(gap), rel=1e-9)
    assert deepep.compute[0] == alltoall.compute[0]


def test_deepep_buffers_are_its_size_hints_in_exact_arithmetic():
    # one node of 8 (bf16 hidden 2048): 10 channels × 8 peers, 256 tokens of 4096 + 8 + 1024 + 512 + 512 bytes
    assert deepep_buffer_bytes(2048, 8, 2) == (-(-(10 * 8 * 5 * 4 + 10 * 8 * 256 * 6152) // 128) * 128, 0)
    # 64 ranks on 8 nodes (hidden 7168): 288 NVLink tokens; RDMA 128 tokens a node of both halves, in 512 MiB granules
    per = 14336 + 8 + 1024 + 512 + 512
    nvl = 10 * 8 * (2 * 8 + 3) * 4 + 10 * 8 * 288 * per
    rdma = 10 * 8 * 18 * 2 * 4 + 10 * 8 * 128 * (2 * per + 32) + 2**20
    assert deepep_buffer_bytes(7168, 64, 2) == (-(-nvl // 128) * 128, -(-rdma // 2**29) * 2**29)
    assert deepep_buffer_bytes(7168, 64, 2)[1] == 2**29
    assert deepep_buffer_bytes(7168, 1, 2) == (0, 0)
    # a group size DeepEP has no config for takes the next one's: 12 ranks the 16-to-64 configs' 288 tokens
    assert deepep_buffer_bytes(2048, 12, 2)[0] > deepep_buffer_bytes(2048, 8, 2)[0]


def test_the_memory_model_adds_deepeps_buffers_outside_pytorch(catalog):
    job = _job(catalog, expert_dispatch="deepep")
    lay = replace(job.layout, dp=16, ep=16, zero=3)
    deepep = estimate_memory(job.arch, job.training, lay)
    plain = estimate_memory(job.arch, replace(job.training, expert_dispatch=ExpertDispatch.ALLTOALL), lay)
    nvl, rdma = deepep_buffer_bytes(job.arch.hidden, 16, 2)
    assert deepep.gpu_terms["deepep_buffers"] == nvl + rdma
    assert deepep.device_total_bytes - plain.device_total_bytes == nvl + rdma
    assert deepep.peak_allocated_bytes == plain.peak_allocated_bytes  # (outside PyTorch's allocator)
    assert any("DeepEP buffers outside PyTorch" in n and "not measured" in n for n in deepep.notes)
    one = estimate_memory(job.arch, job.training, replace(lay, ep=1))
    assert one.gpu_terms["deepep_buffers"] == 0


def test_the_job_file_and_the_command_line(catalog, tmp_path):
    with pytest.raises(JobError, match="expert_dispatch"):
        _job(catalog, expert_dispatch="nccl-a2a")
    root = Path(__file__).resolve().parents[1]
    memory = [sys.executable, "-m", "ftplan", "memory", "--model", "qwen3-30b-a3b", "--seq-len", "4096", "--gpu",
              "h100", "--dp", "8", "--ep", "8", "--zero", "3", "--format", "json"]  # fmt: skip
    res = subprocess.run([*memory, "--expert-dispatch", "deepep"], capture_output=True, text=True, check=False,
                         cwd=root)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["breakdown"]["deepep_buffers"] == sum(deepep_buffer_bytes(2048, 8, 2))
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model": "qwen3-30b-a3b", "seq_len": 4096, "tokens": 10**8, "global_batch": 64}))
    fit = [sys.executable, "-m", "ftplan", "fit", str(job), "--instance", "aws/p5.48xlarge", "--nodes", "2", "--top",
           "400", "--format", "json"]  # fmt: skip
    rows = []
    for extra in ([], ["--expert-dispatch", "deepep"]):
        out = subprocess.run([*fit, *extra], capture_output=True, text=True, check=False, cwd=root)
        assert out.returncode == 0, out.stderr
        rows.append({(r["gpus"], r["dp"], r["ep"], r["zero"], r["dp_shard"], r["recompute"], r["micro_batch"]): r
                     for r in json.loads(out.stdout)["layouts"]})  # fmt: skip
    both = rows[0].keys() & rows[1].keys()
    assert any(k[2] > 1 for k in both)
    for k in both:  # DeepEP's all-to-alls are quicker here; without expert parallelism nothing changes
        if k[2] > 1:
            assert rows[1][k]["comm_s"] < rows[0][k]["comm_s"]
        else:
            assert rows[1][k]["comm_s"] == rows[0][k]["comm_s"]


def test_fit_says_what_deepep_would_take_off_the_fastest_expert_parallel_layout(catalog):
    from ftplan.fit import fit_job, instance_pool

    pools = [instance_pool(catalog, "aws/p5.48xlarge", nodes=2)]
    result = fit_job(_job(catalog), pools)
    split = result.layouts[result.layouts["ep"] > 1]
    row, pool = result._best(split)
    deepep = replace(result.job.training, expert_dispatch=ExpertDispatch.DEEPEP)
    saved = 1 - result._step(row, pool, deepep) / result._step(row, pool, result.job.training)
    note = result.dispatch_note()
    assert saved >= 0.05 and note is not None and note in result.time_notes
    ep = int(row["ep"][0])
    assert f"ep {ep} layout on {pool.name}" in note and f"takes {saved:.0%} off its step" in note
    assert f"{sum(deepep_buffer_bytes(2048, ep, 2)) / 2**30:.2f} GiB of buffers" in note
    assert fit_job(_job(catalog, expert_dispatch="deepep"), pools).dispatch_note() is None
    assert fit_job(_job(catalog, model="llama-3.1-8b"), pools).dispatch_note() is None
