"""DeepEP's communication buffers (``expert_dispatch: deepep``): device memory DeepEP allocates outside PyTorch's
allocator when a MoE job's expert parallelism runs through it (Megatron-Core's ``flex`` dispatcher, NeMo Automodel).

Megatron-Core's ``fused_a2a.get_buffer`` (which NeMo Automodel runs too) sizes one ``deep_ep.Buffer`` for the
expert-parallel group as the larger of DeepEP's size hints for its recommended dispatch and combine configs, with
``hidden_bytes = hidden × max(element size, 2)``. The hints (DeepEP ``csrc/config.hpp``,
``get_nvl_buffer_size_hint`` and ``get_rdma_buffer_size_hint``) count, for each of ``num_sms / 2`` channels (20 SMs
by default, ``Buffer.num_sms``):

* NVLink buffer, a ``cudaMalloc`` shared over IPC: every NVLink peer (up to 8) a ring of the config's NVLink
  receive tokens, each its hidden bytes, a source record (8 bytes), 128 top-k indices (8 bytes) and weights
  (4 bytes) and 128 scales (4 bytes), and a few counters;
* RDMA buffer, in NVSHMEM's symmetric heap, only where the group spans nodes (more than 8 ranks): every node a ring
  of 128 receive tokens of twice those fields (send and receive halves) and a 16-byte record, plus 1 MiB. DeepEP has
  NVSHMEM map that heap in 512 MiB granules (``NVSHMEM_CUMEM_GRANULARITY``), so it takes whole granules.

The configs' NVLink receive tokens (``deep_ep/buffer.py``, ``get_dispatch_config`` and ``get_combine_config``,
alike for both): 256 up to 8 ranks, 288 from 16 to 64, 480 at 96, 560 at 128, 720 at 144 and 160; DeepEP has no
config for other group sizes, and ftplan takes the next listed one's (the largest beyond 160), a bound. Derived from
DeepEP's code: it needs CUDA and NVSHMEM, so no CPU run measures it.
"""

from __future__ import annotations

NUM_SMS = 20  # DeepEP's Buffer.num_sms
NVL_PEERS = 8  # NUM_MAX_NVL_PEERS
MAX_TOP_K = MAX_SCALES = 128  # kNumMaxTopK, kNumMaxScales
SOURCE_META_BYTES = 8  # internode::SourceMeta: two ints
RDMA_RECV_TOKENS = 128  # every recommended config's num_max_rdma_chunked_recv_tokens
NVSHMEM_GRANULE = 2**29  # NVSHMEM_CUMEM_GRANULARITY as DeepEP sets it
# num_max_nvl_chunked_recv_tokens of the recommended configs, by the largest group size each serves
NVL_RECV_TOKENS = ((8, 256), (64, 288), (96, 480), (128, 560), (160, 720))


def _align(n: int, to: int) -> int:
    return -(-n // to) * to


def _nvl_recv_tokens(ranks: int) -> int:
    return next((tokens for size, tokens in NVL_RECV_TOKENS if ranks <= size), NVL_RECV_TOKENS[-1][1])


def deepep_buffer_bytes(hidden: int, ranks: int, element_bytes: int) -> tuple[int, int]:
    """(NVLink buffer, RDMA buffer) bytes a GPU of an expert-parallel group of ``ranks`` allocates for tokens of
    ``hidden`` elements of ``element_bytes`` (see the module docstring); (0, 0) without expert parallelism."""
    if ranks <= 1:
        return 0, 0
    hidden_bytes = hidden * max(element_bytes, 2)
    channels = NUM_SMS // 2
    nvl_ranks, rdma_ranks = min(ranks, NVL_PEERS), max(ranks // NVL_PEERS, 1)
    per_token = hidden_bytes + SOURCE_META_BYTES + MAX_TOP_K * 8 + MAX_TOP_K * 4 + MAX_SCALES * 4
    nvl = channels * nvl_ranks * (2 * rdma_ranks + 3) * 4
    nvl += channels * nvl_ranks * _nvl_recv_tokens(ranks) * per_token
    if ranks <= NVL_PEERS:
        return _align(nvl, 128), 0
    rdma = channels * rdma_ranks * (NVL_PEERS * 2 + 2) * 2 * 4
    rdma += channels * rdma_ranks * RDMA_RECV_TOKENS * (2 * per_token + 2 * 16)
    rdma += 2**20
    return _align(nvl, 128), _align(_align(rdma, 128), NVSHMEM_GRANULE)
