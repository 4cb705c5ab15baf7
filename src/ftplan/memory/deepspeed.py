"""DeepSpeed's ZeRO engine beside the memory model: the bucket sizes ftplan writes to a DeepSpeed config, and
the buffers DeepSpeed then holds that the estimate (made for FSDP2's buffers) does not.

DeepSpeed sizes its buffers in elements, as absolute numbers (``deepspeed/runtime/zero/config.py`` 0.19:
``reduce_bucket_size`` and ``allgather_bucket_size`` 5e8, ``stage3_prefetch_bucket_size`` 5e7,
``stage3_max_live_parameters`` and ``stage3_max_reuse_distance`` 1e9, ``stage3_param_persistence_threshold``
1e5). Left at those values a 7B job holds a 1 GB reduce bucket, and ZeRO-3 keeps up to 1e9 parameters
gathered. ftplan writes them in the units the estimate counts, the largest transformer block
(:func:`zero_settings`): one block's reduce bucket, one block prefetched, two gathered at most (the block
being computed and the next), none kept gathered for reuse or for being small (FSDP2 shards every
parameter).

What DeepSpeed still holds beyond the estimate (:func:`extra_bytes`), from its source and measured with
``ftplan measure --nproc N --engine deepspeed``:

* ZeRO-3 (``stage3.py``) keeps a partition of the parameters in the model's dtype
  (``fp16_partitioned_groups_flat``) beside the fp32 master partition, where the estimate counts one of them
  for trainable weights (the fp32 shard under a mixed recipe, the weights' shard in fp32), and the
  contiguous gradient partition from the engine's start, where the estimate counts gradients only from
  backward on: 2 × the dtype's bytes × trainable parameters / shard (frozen weights' partitions are the
  estimate's own); and its reduce bucket (``reduce_bucket_size`` elements of the dtype, allocated once).
* ZeRO-3's linear saves every linear's input for backward, frozen ones too: a LoRA job saves what only the
  adapted linears would under torch's. Its saves are counted as full fine-tuning's, a bound (measured on four
  tiny LoRA jobs, q/k/v/o or q/v adapted: saved activations 3.7% to 13.9% above the LoRA count, the peak
  from 3.8% under to 3.2% over it before; +9.6% to +11.8% and +5.8% to +7.3% with the bound).
* ZeRO-1/2 (``stage_1_and_2.py``) hold the 16-bit weights whole beside the fp32 master partition, as FSDP2's
  ZeRO-2 holds its gathered weights beside their shard; their gradient partitions and reduce bucket exist
  from a step's backward to its optimizer step, where the estimate already counts gradients and a reduce
  buffer: nothing is added (measured on the tiny grid: the estimate 0.2% to 24% above DeepSpeed's peak).
"""

from __future__ import annotations

from ftplan.arch import Architecture
from ftplan.memory.params import largest_block
from ftplan.memory.setup import Precision, ZeroStage


def block_params(arch: Architecture) -> int:
    """Parameters of the model's largest transformer block, whole (the unit of the buckets ftplan writes)."""
    return int(largest_block(arch))


def zero_settings(arch: Architecture, zero: int) -> dict[str, int]:
    """The ``zero_optimization`` settings ftplan writes for ZeRO stage ``zero`` (1-3); sizes in elements."""
    block = block_params(arch)
    out = {"reduce_bucket_size": block, "allgather_bucket_size": block}
    if zero == ZeroStage.PARAMETERS:
        out |= {
            "stage3_prefetch_bucket_size": block,
            "stage3_max_live_parameters": 2 * block,
            "stage3_max_reuse_distance": 0,
            "stage3_param_persistence_threshold": 0,
        }
    return out


# why each size is what it is (a generated config's SOURCES.md)
SETTING_REASONS = {
    "reduce_bucket_size": "the model's largest transformer block, in parameters: the estimate reduces one block's "
    "gradients at a time",
    "allgather_bucket_size": "the model's largest transformer block, in parameters: updated weights gathered a "
    "block at a time",
    "stage3_prefetch_bucket_size": "one block: the estimate gathers the next block while one computes",
    "stage3_max_live_parameters": "two blocks: the one computing and the one prefetched, as the estimate counts",
    "stage3_max_reuse_distance": "0: no gathered block kept for reuse (FSDP2 reshards after forward, as estimated)",
    "stage3_param_persistence_threshold": "0: no small parameter kept whole on every GPU (FSDP2 shards them all)",
}


def extra_bytes(arch: Architecture, trainable: int, precision: Precision, zero: int, shard: int) -> dict[str, int]:
    """Bytes per GPU DeepSpeed's ZeRO engine holds beyond the estimate, by buffer (empty where none), for a
    model of ``trainable`` trainable parameters, its states sharded over ``shard`` ranks at ZeRO stage ``zero``."""
    if zero != ZeroStage.PARAMETERS:
        return {}
    c = precision.compute_bytes  # DeepSpeed's parameters and gradients: 16-bit under its bf16/fp16 modes, else fp32
    return {"deepspeed_partitions": 2 * c * trainable // shard, "deepspeed_reduce_bucket": c * block_params(arch)}
