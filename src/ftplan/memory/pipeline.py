"""Pipeline parallelism: how a schedule splits the layers and how many micro-batches a stage holds.

The layers are cut into ``pp × v`` chunks (``v`` = ``virtual_stages``, 1 except for the interleaved
schedule); rank ``r`` holds chunks ``r, r + pp, r + 2·pp, …``. The first chunk holds the embeddings, the
last the final norm, lm_head and loss. How the layers are cut is the stack's (:class:`PipelineSplit`):

* ``even``: the layers alone, in chunks of as equal a size as possible, earlier chunks taking the
  remainder (``numpy.array_split``; Megatron-Core's default, which needs them to divide evenly, with
  ``account_for_embedding_in_pipeline_split`` and ``account_for_loss_in_pipeline_split`` off);
* ``weighted``: the embeddings and the head count as one layer each: the layers plus two are cut so, and
  the first and the last chunk each take one layer fewer (torchtitan's ``generate_llm_fqn_per_model_part``
  with ``pipeline_parallel_first_stage_less_layers`` and ``..._last_stage_less_layers`` at their default
  1; Megatron-Core with both ``account_for_*`` flags on).

A stage keeps the saved activations of every micro-batch it has run forward but not yet backward.
What that is at most, per schedule (``torch.distributed.pipelining.schedules``):

* ``gpipe`` (``ScheduleGPipe``): every micro-batch's forward, then every backward: all ``m``;
* ``1f1b`` (``Schedule1F1B``, Narayanan et al. 2021 §2.2): rank ``r`` runs ``min(m, pp − r)`` forwards
  before its first backward, then alternates: ``min(m, pp − r)``;
* ``interleaved-1f1b`` (``ScheduleInterleaved1F1B``, Narayanan et al. 2021 §2.2): ``(v − 1)·k + 2·(pp − 1 − r)``
  warm-up chunk forwards with ``k = m / ⌊m / pp⌋`` micro-batches a round (at most ``m·v``), then one more
  before the first backward: that many chunk micro-batches, each ``1/v`` of the rank's layers.

The pipeline bubble, idle time over the ideal compute time, is ``(pp − 1)/m`` for GPipe and 1F1B and
``(pp − 1)/(v·m)`` interleaved (Narayanan et al. 2021, §2.2).
"""

from __future__ import annotations

from enum import StrEnum


class PipelineSchedule(StrEnum):
    """Pipeline schedules torch.distributed.pipelining runs."""

    GPIPE = "gpipe"
    ONE_F_ONE_B = "1f1b"
    INTERLEAVED = "interleaved-1f1b"


class PipelineSplit(StrEnum):
    """How a stack cuts the layers into pipeline chunks (see module docstring)."""

    EVEN = "even"
    WEIGHTED = "weighted"


def chunk_layers(layers: int, pp: int, virtual: int = 1, split: PipelineSplit = PipelineSplit.EVEN) -> list[int]:
    """Layers of each of the ``pp × virtual`` chunks, in model order (earlier chunks take the remainder; see
    module docstring). A chunk may come out empty (or below), which :func:`ftplan.memory.estimate` refuses."""
    n = pp * virtual
    if n == 1:
        return [layers]
    weighted = split is PipelineSplit.WEIGHTED
    base, extra = divmod(layers + (2 if weighted else 0), n)
    sizes = [base + (1 if i < extra else 0) for i in range(n)]
    if weighted:
        sizes[0] -= 1
        sizes[-1] -= 1
    return sizes


def rank_layers(layers: int, pp: int, virtual: int = 1, split: PipelineSplit = PipelineSplit.EVEN) -> list[int]:
    """Layers each pipeline rank holds (the sum of its chunks')."""
    sizes = chunk_layers(layers, pp, virtual, split)
    return [sum(sizes[c] for c in rank_chunks(r, pp, virtual)) for r in range(pp)]


def rank_chunks(rank: int, pp: int, virtual: int = 1) -> list[int]:
    """The chunks rank ``rank`` holds: ``rank``, ``rank + pp``, …"""
    return [rank + k * pp for k in range(virtual)]


def heaviest_ranks(pp: int) -> tuple[int, ...]:
    """The ranks one of which needs the most memory: the first, the second (the fullest middle rank: the most
    layers, micro-batches in flight and receive buffers of any rank between the ends) and the last."""
    return tuple(dict.fromkeys((0, 1 if pp > 2 else 0, pp - 1)))


def in_flight(schedule: PipelineSchedule, pp: int, virtual: int, micro_batches: int, rank: int) -> int:
    """Chunk micro-batches whose activations rank ``rank`` holds at once, at most (see module docstring)."""
    m = micro_batches
    if pp == 1:
        return 1
    if schedule is PipelineSchedule.GPIPE:
        return m * virtual
    if schedule is PipelineSchedule.ONE_F_ONE_B:
        return min(m, pp - rank)
    rounds = max(1, m // pp)
    per_round = m // rounds
    warmup = min((virtual - 1) * per_round + 2 * (pp - 1 - rank), m * virtual)
    return min(warmup + 1, m * virtual)


def bubble_fraction(schedule: PipelineSchedule, pp: int, virtual: int, micro_batches: float) -> float:
    """Idle time of a pipeline step over its ideal compute time (see module docstring)."""
    if pp == 1:
        return 0.0
    v = virtual if schedule is PipelineSchedule.INTERLEAVED else 1
    return (pp - 1) / (v * micro_batches)
