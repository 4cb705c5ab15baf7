"""Count the operations a training micro-step dispatches, and the bytes its memory-bound operations move, for
the time model's per-operation and memory-bound terms (:mod:`ftplan.timing.dispatch`, :mod:`ftplan.timing.traffic`).

Each PyTorch operation that computes is counted as it reaches the dispatcher (a ``TorchDispatchMode``):
views and metadata queries, which launch no kernel, are not. One layer's count is the difference between
the same job's model with ``layers + 1`` and ``layers`` layers, so the head's operations cancel; a token's
bytes are the difference between micro-batches of two sequence lengths, so what a micro-step moves once (the
weights' casts, their gradients) cancels.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import replace
from typing import Any

from ftplan.arch import architecture_from_hf
from ftplan.errors import MeasureError
from ftplan.job import ResolvedJob
from ftplan.measure import build
from ftplan.measure.run import job_batch

# Operations that only view or describe a tensor: no kernel runs for them
NO_KERNEL = frozenset({
    "view", "_unsafe_view", "t", "transpose", "expand", "permute", "unsqueeze", "squeeze", "slice", "select",
    "as_strided", "alias", "detach", "_reshape_alias", "split", "unbind", "reshape", "split_with_sizes", "chunk",
    "narrow", "lift_fresh", "empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided", "is_same_size",
    "diagonal", "view_as_real", "view_as_complex", "unflatten", "flatten", "_has_compatible_shallow_copy_type",
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_contiguous", "dim", "size", "stride", "numel",
    "_local_scalar_dense", "item", "lift_fresh_copy", "set_",
})  # fmt: skip


LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")  # a config's layer count, by family


def operation_counter(torch: Any) -> Any:
    """A dispatch mode that counts the operations run under it by name (``.ops``)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: Counter[str] = Counter()

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    return Count()


def _nbytes(torch: Any, value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(torch, v) for v in value)
    return 0


def traffic_counter(torch: Any) -> Any:
    """A dispatch mode that adds up the bytes each computing operation run under it reads and writes
    (``.bytes``, by name): every tensor argument read once, every argument its schema marks written
    (in-place and ``out=``) and every new output written once."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Traffic(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.bytes: Counter[str] = Counter()

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            name = func.overloadpacket.__name__
            if name in NO_KERNEL:
                return out
            schema = func._schema
            values = [*args, *(kwargs.get(a.name) for a in schema.arguments[len(args) :])]
            moved = _nbytes(torch, list(args)) + _nbytes(torch, list(kwargs.values()))
            moved += sum(_nbytes(torch, v) for a, v in zip(schema.arguments, values, strict=False)
                         if a.alias_info is not None and a.alias_info.is_write)  # fmt: skip
            results = out if isinstance(out, (list, tuple)) else (out,)
            fresh = [v for r, v in zip(schema.returns, results, strict=False) if r.alias_info is None]
            moved += _nbytes(torch, fresh)
            self.bytes[name] += moved
            return out

    return Traffic()


def optimizer_step_bytes(job: ResolvedJob, master_bytes: int) -> float:
    """Bytes a step of ``job``'s optimizer reads and writes a parameter, measured on a CPU: its second step
    (the first creates the states) over four 512 × 1024 parameters of ``master_bytes`` bytes (4: fp32, 2:
    bf16) with gradients of the same dtype. The optimizer runs the same operations on a GPU (``foreach`` and
    ``fused`` included: the job's optimizer as :func:`ftplan.measure.build.optimizer_class` builds it)."""
    torch = build.require_torch()
    dtype = torch.float32 if master_bytes == 4 else torch.bfloat16
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(512, 1024, generator=generator, dtype=dtype)) for _ in range(4)]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator, dtype=dtype)
    opt = build.build_optimizer(job, params)
    opt.step()
    traffic = traffic_counter(torch)
    with traffic:
        opt.step()
    return sum(traffic.bytes.values()) / sum(p.numel() for p in params)


# Operations the time model costs by their FLOPs, not their bytes: the weight matmuls and the attention kernels
COMPUTE_BOUND = frozenset({"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_grouped_mm"})


def memory_bound(traffic: Any) -> int:
    """Bytes ``traffic`` counted of operations that are neither matmuls nor attention kernels."""
    return sum(n for op, n in traffic.bytes.items() if op not in COMPUTE_BOUND and "attention" not in op)


def micro_step_traffic(job: ResolvedJob) -> tuple[int, int]:
    """Bytes the memory-bound operations of a micro-step of ``job`` read and write on a CPU, (forward,
    backward), after a warm-up micro-step (the operations a GPU runs: the same PyTorch code dispatches them)."""
    return _second_micro_step(job, traffic_counter, memory_bound)


def _second_micro_step(job: ResolvedJob, mode: Any, tally: Any) -> tuple[int, int]:
    """``tally`` of a ``mode(torch)`` dispatch mode over the forward and over the backward of ``job``'s second
    micro-step on a CPU (the first initialises lazily built state), each the first of its optimizer step."""
    torch = build.require_torch()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    model = build.build_model(job, "cpu", 0)
    batch = job_batch(job, "cpu", 0)
    cast = build.autocast_context(job, "cpu")
    result = (0, 0)
    for _ in range(2):
        model.zero_grad(set_to_none=True)  # a step's first micro-step: nothing to accumulate into
        fwd, bwd = mode(torch), mode(torch)
        with fwd, cast:
            loss = model(**batch).loss
        with bwd:
            loss.backward()
        result = (tally(fwd), tally(bwd))
    return result


def with_layers(job: ResolvedJob, layers: int) -> ResolvedJob:
    key = next((k for k in LAYER_KEYS if k in job.hf_config), None)
    if key is None:
        raise MeasureError(f"{job.name}: its config names no layer count ({', '.join(LAYER_KEYS)}).")
    config = dict(job.hf_config, **{key: layers})
    return replace(job, hf_config=config, arch=architecture_from_hf(config, job.name))


def token_traffic(job: ResolvedJob) -> tuple[tuple[float, float], tuple[float, float]]:
    """Bytes a token moves through memory-bound operations, ((forward, backward) of one layer, (forward,
    backward) of the head: embeddings, final norm, loss): ``job``'s model with two and three layers, each with
    its sequence length and twice it (micro-batch 2)."""
    s = job.training.seq_len
    moved = {}
    for layers in (2, 3):
        for seq in (s, 2 * s):
            j = with_layers(job, layers)
            j = replace(j, training=replace(j.training, seq_len=seq), layout=replace(j.layout, micro_batch=2))
            moved[layers, seq] = micro_step_traffic(j)
    tokens = 2 * s  # the tokens the longer micro-batches add
    per = {n: tuple((moved[n, 2 * s][k] - moved[n, s][k]) / tokens for k in (0, 1)) for n in (2, 3)}
    layer = (per[3][0] - per[2][0], per[3][1] - per[2][1])
    head = (per[2][0] - 2 * layer[0], per[2][1] - 2 * layer[1])
    return layer, head


def computing(counter: Any) -> int:
    """Operations of ``counter`` that launch a kernel (views and metadata left out)."""
    return sum(n for op, n in counter.ops.items() if op not in NO_KERNEL)


def count_micro_step(job: ResolvedJob) -> tuple[int, int]:
    """Operations the first micro-step of an optimizer step of ``job`` dispatches on a CPU, (forward,
    backward), after a warm-up micro-step: the whole model's. (Later micro-steps add one gradient accumulation a
    trainable tensor, which the time model leaves out.)"""
    return _second_micro_step(job, operation_counter, computing)


def layer_ops(job: ResolvedJob) -> tuple[int, int]:
    """Operations one more layer adds to a micro-step, (forward, backward): ``job``'s model with two and with
    three layers (its config's layer count replaced)."""
    (f2, b2), (f3, b3) = (count_micro_step(with_layers(job, n)) for n in (2, 3))
    return f3 - f2, b3 - b2
