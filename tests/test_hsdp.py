"""HSDP (hybrid sharding): states sharded inside a group of dp_shard ranks and replicated across groups."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.errors import JobError
from ftplan.fit import fit_job, instance_pool
from ftplan.job import resolve_job
from ftplan.memory import ZeroStage, estimate_memory
from ftplan.schema.job import parse_job
from ftplan.timing import model as tm

STATES = ("weights_trainable", "weights_frozen", "gradients", "optimizer_states")


def _job(catalog, **fields):
    data = {"model": "llama-3.1-8b", "method": "full", "seq_len": 4096, "gpu": "h100", "tokens": 10**8,
            "global_batch": 64, **fields}  # fmt: skip
    return resolve_job(parse_job(data, "job"), catalog, "job")


@pytest.mark.parametrize("zero", [2, 3])
def test_a_rank_holds_what_a_shard_group_of_that_size_holds(catalog, zero):
    job = _job(catalog)
    hybrid = replace(job.layout, dp=32, zero=ZeroStage(zero), dp_shard=8)
    flat = replace(job.layout, dp=8, zero=ZeroStage(zero))
    h, f = (estimate_memory(job.arch, job.training, lay) for lay in (hybrid, flat))
    assert {k: h.gpu_terms[k] for k in STATES} == {k: f.gpu_terms[k] for k in STATES}
    # and a replicate communicator beside the shard group's
    assert h.gpu_terms["nccl_buffers"] > f.gpu_terms["nccl_buffers"]


@settings(max_examples=20, deadline=None)
@given(shard=st.sampled_from([2, 4, 8, 16]), zero=st.sampled_from([2, 3]))
def test_larger_shard_groups_never_raise_the_states_a_gpu_holds(catalog, shard, zero):
    job = _job(catalog)
    lay = replace(job.layout, dp=32, zero=ZeroStage(zero))
    small, large = (
        estimate_memory(job.arch, job.training, replace(lay, dp_shard=s)) for s in (shard, min(32, 2 * shard))
    )
    assert sum(large.gpu_terms[k] for k in STATES) <= sum(small.gpu_terms[k] for k in STATES)


@pytest.mark.parametrize(
    ("layout", "message"),
    [({"dp": 8, "zero": 3, "dp_shard": 3}, "must divide dp 8"), ({"dp": 8, "zero": 1, "dp_shard": 4}, "ZeRO-2 and")],
)
def test_hybrid_sharding_frameworks_cannot_run_is_refused(catalog, layout, message):
    with pytest.raises(JobError, match=message):
        _job(catalog, layout=layout)


def test_the_replicate_all_reduce_is_each_gpus_share_of_the_nodes_network(catalog, h100_node):
    job = _job(catalog)
    flops = tm.job_flops(job.arch, job.training)
    hw = h100_node(400)
    one = (np.array([1]),) * 3
    args = (np.array([32]), np.array([1]), np.array([2]), np.array([0]), np.array([0]), *one[:1], np.array([2]))
    hybrid = tm.step_times(flops, job.arch, job.training, hw, *args, dp_shard=np.array([8]))
    g = flops.trainable * 4
    # a reduce-scatter and an all-gather a FSDP group (the layers and the root) inside the node, each with
    # NCCL's ring latency over 8 GPUs; each group's shard all-reduced across the 4 replicas
    units = job.arch.total_layers + 1
    lat = tm.collective_latency(hw, np.array([8]), np.array([8]), "all-gather")[0]
    lat_rep = tm.collective_latency(hw, np.array([4]), np.array([32]), "all-reduce")[0]
    across = 2 * 3 / 4 * g / 8 / (tm.bus_bandwidth(hw, np.array([32]))[0] * 1e9 / 8) + units * lat_rep
    t_micro = hybrid.compute[0] / 2
    backward = t_micro * (1 - flops.forward / flops.model)
    # ZeRO-2 keeps only its gradient shard: each of the 2 micro-steps reduce-scatters its gradients (and
    # all-reduces the shards across the replicas) under its own backward, and gathers the 16-bit parameters
    # under its forward (FSDP2 reshards after each backward)
    each = 7 / 8 * g / (450e9 * tm.INTRA_NODE_EFFICIENCY) + units * lat + across
    gather = 7 / 8 * g * 2 / 4 / (450e9 * tm.INTRA_NODE_EFFICIENCY) + units * lat
    assert each > backward  # (exposed here: the term is exercised)
    expected = 2 * (each - backward) + 2 * max(0.0, gather - (t_micro - backward))
    assert hybrid.communication[0] == pytest.approx(expected)
    # ZeRO-2's gradients cross the network as often either way; ZeRO-3's gathers stay on NVLink under HSDP
    z3 = (*args[:2], np.array([3]), *args[3:])
    flat = tm.step_times(flops, job.arch, job.training, hw, *z3)
    hybrid3 = tm.step_times(flops, job.arch, job.training, hw, *z3, dp_shard=np.array([8]))
    assert hybrid3.communication[0] < flat.communication[0]


def test_the_layout_search_tries_node_local_shard_groups_across_nodes(catalog):
    job = _job(catalog, global_batch=64)
    frame = fit_job(job, [instance_pool(catalog, "aws/p4de.24xlarge", nodes=4)]).layouts
    hybrid = frame[frame["dp_shard"] > 0]
    assert not hybrid.empty
    assert set(hybrid["zero"]) <= {2, 3} and set(hybrid["offload"]) == {"none"} and set(hybrid["pp"]) == {1}
    assert (hybrid["dp_shard"] * hybrid["tp"] == 8).all() and (hybrid["dp"] > hybrid["dp_shard"]).all()


def test_replicate_all_reduces_inside_an_nvlink_domain_each_run_at_the_nvlink_rate(catalog):
    """Inside an NVLink domain every GPU has its own link to the switches: the replicate all-reduces that the
    GPUs of a shard group run at once do not share it (an 8-GPU node split into two shard groups of 4; a GB200
    NVL72 rack's 18 trays of 4), while across nodes they share the node's network (the test above)."""
    job = _job(catalog)
    flops = tm.job_flops(job.arch, job.training)
    g = flops.trainable * 4
    units = job.arch.total_layers + 1
    for per_node, domain, dp, shard in ((8, None, 8, 4), (4, 72, 72, 4)):  # an 8-GPU node; an NVL72 of 4-GPU trays
        # (a GPU of 10⁶ TFLOP/s: the compute is short, the collectives exposed)
        hw = tm.Hardware(peak_tflops=1e6, efficiency=0.4, hbm_gbs=3350.0, intra_node_gbs=450.0, host_link_gbs=64.0,
                         gpus_per_node=per_node, network_gbps=3200.0, nvlink_domain=domain)  # fmt: skip
        args = [np.array([v]) for v in (dp, 1, 2, 0, 0, 1, 1)]  # ZeRO-2, one micro-step
        hybrid = tm.step_times(flops, job.arch, job.training, hw, *args, dp_shard=np.array([shard]))
        without = tm.step_times(flops, job.arch, job.training, hw, *args, dp_shard=np.array([dp]))
        replicas = dp // shard
        lat = tm.collective_latency(hw, np.array([shard]), np.array([shard]), "all-gather")[0]
        lat_rep = tm.collective_latency(hw, np.array([replicas]), np.array([replicas * shard]), "all-reduce")[0]
        nvlink = 450e9 * tm.INTRA_NODE_EFFICIENCY
        # the gradients' reduce-scatter inside the shard group and the shards' all-reduce across the replicas, under
        # the backward; the 16-bit update's all-gather inside the group, under the next forward (FSDP2's ZeRO-2)
        rs = (shard - 1) / shard * g / nvlink + units * lat
        ag = (shard - 1) / shard * g * 2 / 4 / nvlink + units * lat
        rep = 2 * (replicas - 1) / replicas * g / shard / nvlink + units * lat_rep  # (not divided by the shard)
        backward = hybrid.compute[0] * (1 - flops.forward / flops.model)
        forward = hybrid.compute[0] - backward
        assert rs + rep > backward and ag > forward  # (exposed: the terms are exercised)
        assert hybrid.communication[0] == pytest.approx(rs + rep - backward + ag - forward, rel=1e-9)
        assert without.communication[0] > 0
