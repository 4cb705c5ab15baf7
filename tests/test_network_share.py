"""A node's network shared by the collectives its GPUs run at once: data parallelism beside tensor parallelism, and
the experts' data parallelism beside expert parallelism, across nodes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ftplan.job import resolve_job
from ftplan.schema.job import parse_job
from ftplan.timing import model as tm


def _job(catalog, model: str):
    data = {"model": model, "method": "full", "seq_len": 4096, "gpu": "h100", "tokens": 10**8, "global_batch": 64}
    return resolve_job(parse_job(data, "job"), catalog, "job")


def _fast(gpus_per_node: int = 8, domain: int | None = None) -> tm.Hardware:
    """A GPU of 10⁶ TFLOP/s: the compute is short, so the collectives are exposed."""
    return tm.Hardware(peak_tflops=1e6, efficiency=0.4, hbm_gbs=3350.0, intra_node_gbs=450.0, host_link_gbs=64.0,
                       gpus_per_node=gpus_per_node, network_gbps=3200.0, nvlink_domain=domain)  # fmt: skip


def test_the_share_is_the_groups_a_nodes_gpus_belong_to_across_nodes_and_one_inside(h100_node):
    hw = h100_node()
    # groups over 32 GPUs (four nodes): a tensor-parallel rank's each; a node holds min(groups, 8) of them
    assert tm.network_share(hw, np.array([32, 32, 32, 32]), np.array([1, 2, 8, 16])).tolist() == [1, 2, 8, 8]
    # inside a node every GPU has its own NVLink: nothing shared
    assert tm.network_share(hw, np.array([8]), np.array([8])).tolist() == [1]
    # a single node (no network) never shares
    single = tm.Hardware(peak_tflops=989, efficiency=0.4, hbm_gbs=3350, intra_node_gbs=450, host_link_gbs=64,
                         gpus_per_node=8, network_gbps=None)  # fmt: skip
    assert tm.network_share(single, np.array([32]), np.array([8])).tolist() == [1]
    # an NVL72 of 4-GPU trays: inside the domain nothing shared, beyond it a tray's 4 GPUs share its ports
    nvl = _fast(gpus_per_node=4, domain=72)
    assert tm.network_share(nvl, np.array([64, 144, 144]), np.array([8, 8, 2])).tolist() == [1, 4, 2]


def test_tensor_parallel_ranks_move_the_nodes_bytes_through_its_shared_network(catalog):
    """ZeRO-3 over 32 GPUs, alone or beside 8-way tensor parallelism: a node's network carries the same bytes
    either way (each of the 8 groups gathers an eighth of the weights at an eighth of the node's bandwidth), so
    only the ring's (n − 1)/n and the latencies differ; in exact arithmetic."""
    job = _job(catalog, "llama-3.1-8b")
    arch, tr = job.arch, job.training
    flops = tm.job_flops(arch, tr)
    hw = _fast()
    units = arch.total_layers + 1
    w, g = flops.weights * 2.0, flops.trainable * 4.0
    node = tm.bus_bandwidth(hw, np.array([32]))[0] * 1e9  # a whole-node collective's bus bandwidth across nodes
    for dp, tp in ((32, 1), (4, 8)):
        args = [np.array([v]) for v in (dp, tp, 3, 0, 0, 1, 1)]  # ZeRO-3, one micro-step of one sequence
        st = tm.step_times(flops, arch, tr, hw, *args)
        lat = tm.collective_latency(hw, np.array([dp]), np.array([32]), "all-gather")[0]
        t_z3 = (dp - 1) / dp * (2 * w + g) / tp / (node / tp) + 3 * units * lat
        # tensor parallelism's own collectives: 4 a layer of the micro-step's hidden states, inside the node
        tp_bw = tm.bus_bandwidth(hw, np.array([tp]))[0] * 1e9
        tp_one = 2 * (tp - 1) / tp * 4096 * arch.hidden * 2 / tp_bw + tm.collective_latency(hw, tp, tp, "all-gather")
        t_tp = 4 * arch.total_layers * tp_one if tp > 1 else 0.0
        assert st.communication[0] == pytest.approx(t_z3 - st.compute[0] + t_tp, rel=1e-9)


def test_the_experts_collectives_share_the_node_among_its_expert_parallel_ranks(catalog):
    """An 8-way expert-parallel MoE over 4 nodes without ZeRO: every GPU of a node all-reduces its own experts'
    gradients with the 3 GPUs holding them on the other nodes, 8 groups at once, each at an eighth of the node's
    bus bandwidth; the dense gradients all-reduce over all 32 GPUs at the whole of it."""
    job = _job(catalog, "qwen3-30b-a3b")
    arch, tr = job.arch, job.training
    flops = tm.job_flops(arch, tr)
    hw = _fast()
    args = [np.array([v]) for v in (32, 1, 0, 0, 0, 1, 1)]
    st = tm.step_times(flops, arch, tr, hw, *args, ep=np.array([8]))
    g, eg = flops.trainable * 4.0, flops.expert_trainable * 4.0
    node = tm.bus_bandwidth(hw, np.array([32]))[0] * 1e9
    dense = 2 * 31 / 32 * (g - eg) / node
    experts = 2 * 3 / 4 * (eg / 8) / (node / 8)
    buckets = np.ceil((g - eg) / tm.DDP_BUCKET_BYTES) * tm.collective_latency(hw, 32, 32, "all-reduce")
    overlap = st.compute[0] * (1 - flops.forward / flops.model)
    # four all-to-alls a MoE layer of the micro-step's 4096 tokens × top-8 × hidden in bf16, 7/8 leaving the GPU,
    # over NVLink (the expert-parallel group is one node)
    a2a = 4 * arch.layers_of("main") * 4096 * 8 * arch.hidden * 2 * 7 / 8 / (450e9 * tm.INTRA_NODE_EFFICIENCY)
    assert st.communication[0] == pytest.approx(dense + experts + buckets - overlap + a2a, rel=1e-9)
    # inside one node (8 GPUs, expert-parallel 8: each expert on one GPU) nothing is shared and no expert reduces
    one = tm.step_times(flops, arch, tr, hw, *[np.array([v]) for v in (8, 1, 0, 0, 0, 1, 1)], ep=np.array([8]))
    nvlink_ar = tm.bus_bandwidth(hw, np.array([8]), all_reduce=np.array([8]))[0] * 1e9
    inside = 2 * 7 / 8 * (g - eg) / nvlink_ar + np.ceil((g - eg) / tm.DDP_BUCKET_BYTES) * tm.collective_latency(
        hw, 8, 8, "all-reduce"
    )
    assert one.communication[0] == pytest.approx(
        inside - one.compute[0] * (1 - flops.forward / flops.model) + a2a, rel=1e-9
    )


def test_an_all_to_all_moves_its_node_peers_bytes_over_nvlink_beside_the_others_over_the_network():
    """An all-to-all's sends go to every peer at once: those to the GPU's NVLink domain over NVLink, the rest over
    its share of the node's network, side by side; the slower of the two is its time (exact arithmetic)."""
    hw = _fast()  # 8 GPUs a node, 3,200 Gbps a node: 50 GB/s a GPU across nodes
    nvlink, net = 450e9 * tm.INTRA_NODE_EFFICIENCY, 3200 / 8 * 1e9 / 8
    sent = 1e9
    # 16 members over two nodes: 7 of the 15 peers on the node, 8 beyond it (the network is the slower)
    assert tm.all_to_all_seconds(hw, sent, 16, 1) == pytest.approx(sent * 8 / 15 / net, rel=1e-12)
    # a stride of 2 (a tensor-parallel rank's group): 4 members a node, 12 of the 15 peers beyond it
    assert tm.all_to_all_seconds(hw, sent, 16, 2) == pytest.approx(sent * 12 / 15 / net, rel=1e-12)
    # a group inside one node: everything over NVLink
    assert tm.all_to_all_seconds(hw, sent, 8, 1) == pytest.approx(sent / nvlink, rel=1e-12)
    # a stride of a node or more: every peer beyond it
    assert tm.all_to_all_seconds(hw, sent, 4, 8) == pytest.approx(sent / net, rel=1e-12)
    # a fast network: the NVLink share is the slower
    wide = replace(hw, network_gbps=8 * 8 * 3000.0)
    assert tm.all_to_all_seconds(wide, sent, 16, 1) == pytest.approx(sent * 7 / 15 / nvlink, rel=1e-12)
    # an NVL72 of 4-GPU trays: 64 members on one domain move everything over NVLink
    assert tm.all_to_all_seconds(_fast(4, 72), sent, 64, 1) == pytest.approx(sent / nvlink, rel=1e-12)


def _all_to_all_share(job, monkeypatch, **parallel) -> float:
    """Seconds the step's all-to-alls add to its communication: the step as modelled less the same step with
    ``all_to_all_seconds`` returning nothing (one data-parallel GPU group of one micro-step of one sequence)."""
    arch, tr = job.arch, job.training
    flops, hw = tm.job_flops(arch, tr), _fast()
    args = [np.array([v]) for v in (parallel.pop("dp", 1), 1, 0, 0, 0, 1, 1)]
    extra = {k: np.array([v]) for k, v in parallel.items()}
    with_a2a = tm.step_times(flops, arch, tr, hw, *args, **extra).communication[0]
    with monkeypatch.context() as m:
        m.setattr(tm, "all_to_all_seconds", lambda hw, sent, members, stride: np.zeros_like(sent))
        without = tm.step_times(flops, arch, tr, hw, *args, **extra).communication[0]
    return with_a2a - without


NET_GPU = 3200 / 8 * 1e9 / 8  # _fast()'s network share of a GPU, bytes/s


def test_expert_parallelism_over_two_nodes_sends_only_the_other_nodes_share_over_the_network(catalog, monkeypatch):
    """16-way expert parallelism over two nodes: each MoE layer's four all-to-alls add the 8/15 of their bytes
    bound for the other node at the GPU's network share to the step, not all of them (exact arithmetic)."""
    job = _job(catalog, "qwen3-30b-a3b")
    sent = 4096 * 8 * job.arch.hidden * 2 * 15 / 16  # a micro-step's tokens × top-8 × hidden in bf16, 15/16 sent
    expected = 4 * job.arch.layers_of("main") * sent * 8 / 15 / NET_GPU
    assert _all_to_all_share(job, monkeypatch, dp=16, ep=16) == pytest.approx(expected, rel=1e-9)


def test_ulysses_over_two_nodes_sends_only_the_other_nodes_share_over_the_network(catalog, monkeypatch):
    """DeepSpeed-Ulysses at cp 16 over two nodes: its four all-to-alls a layer each way add the 8/15 of their bytes
    bound for the other node at the GPU's network share (exact arithmetic)."""
    data = {"model": "llama-3.1-8b", "method": "full", "seq_len": 65536, "context_parallel": "ulysses", "gpu": "h100",
            "tokens": 10**8, "global_batch": 16}  # fmt: skip
    job = resolve_job(parse_job(data, "job"), catalog, "job")
    arch = job.arch
    kv = arch.kv_dim * 2  # (16 ranks over 8 key-value heads: each repeated twice)
    sent = 65536 / 16 * 2 * (2 * arch.q_dim + 2 * kv) * 15 / 16
    expected = arch.total_layers * 2 * sent * 8 / 15 / NET_GPU
    assert _all_to_all_share(job, monkeypatch, cp=16) == pytest.approx(expected, rel=1e-9)
