"""Run real training steps of a job and measure its memory, term by term.

What is measured, and how:

* weights, gradients and optimizer states: bytes of the tensors themselves (exact);
* bytes saved for backward: every tensor autograd saves during the first measured forward pass
  (``torch.autograd.graph.saved_tensors_hooks``) and still holds when that pass ends (a branch that
  does not lead to the loss frees its saves at once), counted once per storage and attributed to the
  region the forward pass is in — one transformer layer, the head (embeddings, final norm) or the
  logits/loss. Parameters are not activations and 16-bit casts of parameters made by autocast are
  reported apart. Under full recomputation the checkpointed layers save nothing; what they keep is
  their input, which is counted for the layer instead;
* peak memory: ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` on a GPU; on a CPU
  the peak of the PyTorch memory profiler's timeline (``torch.profiler`` with
  ``profile_memory=True``), with its categories at the peak.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import warnings
import weakref
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ftplan.arch import Kind
from ftplan.catalog import load_catalog
from ftplan.errors import FtplanError, MeasureError
from ftplan.fit import gpu_pool, hardware
from ftplan.job import ResolvedJob
from ftplan.measure import build
from ftplan.memory import (
    AttentionMask,
    Engine,
    MemoryEstimate,
    ModelOutput,
    Overheads,
    Recompute,
    ZeroGrad,
    estimate_memory,
)
from ftplan.timing import dispatch, traffic
from ftplan.timing.model import OFFLOAD, RECOMPUTE, StepTimes, job_flops, step_times
from ftplan.units import GIB

# Host memory a measurement may use, as a fraction of what the OS reports available: the rest
# covers the Python process, the libraries and the profiler's own records.
HOST_MEMORY_FRACTION = 0.8


@dataclass(frozen=True)
class Measurement:
    """Bytes measured in one run of a job (see module docstring)."""

    device: str
    steps: int
    weights_trainable: int
    weights_frozen: int
    gradients: int
    optimizer_states: int
    saved_by_layer: dict[str, int]  # "<stack>.<index>" → bytes
    saved_head: int
    saved_loss: int
    weight_casts: int
    peak_allocated: int
    peak_reserved: int | None = None
    peak_categories: dict[str, int] = field(default_factory=dict)
    # expert parallelism: the routed rows this rank's experts took, relative to a balanced share (mean
    # over the MoE layers and forwards)
    expert_load: float | None = None
    # operations the first micro-step of a step dispatched, (forward, backward) (None: not counted)
    ops: tuple[int, int] | None = None
    # seconds a step took on a GPU, synchronised (the median of the steps after the first, which also
    # tracks saved tensors); None on a CPU, whose steps run under the memory profiler
    step_seconds: float | None = None
    # DeepSpeed's ZeRO engine keeps weights, gradients and states in flat buffers of its own: every byte alive
    # as a measured step starts (None: a PyTorch wrapper's, measured term by term)
    states: int | None = None

    def saved_layer_mean(self, stack: str) -> float:
        values = [v for k, v in self.saved_by_layer.items() if k.split(".", 1)[0] == stack]
        return sum(values) / len(values) if values else 0.0

    @property
    def saved_layers(self) -> int:
        return sum(self.saved_by_layer.values())


@dataclass(frozen=True)
class Row:
    term: str
    estimate: float
    measured: float

    @property
    def rel_error(self) -> float | None:
        if self.measured == 0:
            return None if self.estimate == 0 else float("inf")
        return (self.estimate - self.measured) / self.measured


@dataclass(frozen=True)
class Comparison:
    """A measurement beside the estimate of the same job on the same device."""

    job: ResolvedJob
    estimate: MemoryEstimate
    measurement: Measurement
    # on a GPU the catalog holds: its id and the time model's step on it (one GPU, the job's micro-batch,
    # accumulation, recomputation and kernels)
    model_gpu: str | None = None
    model_step: StepTimes | None = None
    # bytes a token moves through memory-bound operations, measured: ((a layer's forward, backward), (the head's
    # forward, backward)), where the call asked for them (``measure.dispatch.token_traffic``)
    traffic: tuple[tuple[float, float], tuple[float, float]] | None = None

    @property
    def model_traffic(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """The time model's bytes a token for the same, ((a layer's forward, backward), (the head's forward,
        backward)): a layer's table bytes and its share of PEFT's operations around the adapters
        (:func:`ftplan.timing.traffic.adapter_bytes`, over every layer alike)."""
        arch, tr = self.job.arch, self.job.training
        fwd, bwd, head_fwd, head_bwd = traffic.token_bytes(arch, tr)
        around_fwd, around_bwd = traffic.adapter_bytes(arch, tr)
        layers = arch.total_layers
        return (fwd + around_fwd / layers, bwd + around_bwd / layers), (head_fwd, head_bwd)

    @property
    def model_ops(self) -> tuple[float, float]:
        """Operations the time model counts for a micro-step, (forward, backward)."""
        full = self.job.layout.recompute is Recompute.FULL
        return dispatch.pass_ops(self.job.arch, self.job.training, full)

    @property
    def rows(self) -> list[Row]:
        e, m = self.estimate, self.measurement
        g, a = e.gpu_terms, e.activation_terms
        if m.states is not None:  # DeepSpeed: its flat buffers, held from step to step, against what they hold
            held = ("weights_trainable", "weights_frozen", "optimizer_states", "optimizer_paged", "deepspeed_buffers")
            rows = [Row("states held between steps", sum(g.get(k, 0) for k in held), m.states)]
        else:
            rows = [
                Row("weights_trainable", g["weights_trainable"], m.weights_trainable),
                Row("weights_frozen", g["weights_frozen"], m.weights_frozen),
                Row("gradients", g["gradients"], m.gradients),
                Row("optimizer_states", g["optimizer_states"] + g["optimizer_paged"], m.optimizer_states),
                Row("autocast_weight_copies", g["autocast_weight_copies"], m.weight_casts),
            ]
        for key in sorted(k for k in a if k.startswith("layer:")):
            stack = key.split(":", 1)[1]
            rows.append(Row(f"saved per layer ({stack})", a[key], m.saved_layer_mean(stack)))
        rows += [
            Row("saved: head", a["head"], m.saved_head),
            # (one micro-batch's: a pipeline stage holds several at once, counted in the peak)
            Row("activations (layers + head)", a["layers"] + a["head"], m.saved_layers + m.saved_head),
            Row("saved: logits/loss", a["loss_saved"], m.saved_loss),
            Row("peak allocated", e.peak_allocated_bytes, m.peak_allocated),
        ]
        if m.peak_reserved is not None:
            rows.append(Row("peak reserved", e.peak_reserved_bytes, m.peak_reserved))
        return rows

    def row(self, term: str) -> Row:
        return next(r for r in self.rows if r.term == term)


def estimate_for_device(
    job: ResolvedJob, device: str, gpu_arch: str = "", pipeline_rank: int | None = None
) -> MemoryEstimate:
    """The estimate a measurement on ``device`` is held to (no GPU runtime on a CPU); of one pipeline rank
    where ``pipeline_rank`` is given."""
    on_cpu = device == "cpu"
    return estimate_memory(
        job.arch, job.training, job.layout, gpu_arch="cpu" if on_cpu else gpu_arch,
        overheads=Overheads.host() if on_cpu else job.overheads, pipeline_rank=pipeline_rank,
    )  # fmt: skip


def available_host_bytes() -> int:
    """Memory the OS reports available (``MemAvailable``), or physical pages free."""
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class _SavedTracker:
    """Attribute the storages autograd saves to the region of the model running at the time."""

    def __init__(self, model: Any, layer_lists: dict[str, Any], checkpointed: bool) -> None:
        self.region = "head"
        self.active = False
        self.checkpointed = checkpointed
        self.entries: dict[int, tuple[str, int, Any]] = {}  # id(storage) → region, address, weak reference
        self.bytes: dict[str, int] = defaultdict(int)
        params = list(model.parameters())
        self.param_ptrs = {_ptr(_local(p)) for p in params}
        self.frozen: dict[tuple[int, ...], list[Any]] = defaultdict(list)  # by shape, for casts
        for p in params:
            if not p.requires_grad and p.dim() == 2:
                self.frozen[tuple(p.shape)].append(p)
        self.handles: list[Any] = []
        for stack, layers in layer_lists.items():
            for i, layer in enumerate(layers):
                self.handles.append(layer.register_forward_pre_hook(self._enter(f"{stack}.{i}"), with_kwargs=True))
                self.handles.append(layer.register_forward_hook(self._leave))
        out = model.get_output_embeddings()
        if out is not None:  # the lm_head's saved input belongs to the head, its output to the loss
            self.handles.append(out.register_forward_hook(self._enter_loss))
        for name, module in model.named_modules():
            if name.endswith("rotary_emb"):  # cos/sin shared by every layer: part of the head
                self.handles.append(module.register_forward_hook(self._shared))

    def _enter(self, region: str) -> Any:
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if not self.active:
                return
            self.region = region
            if self.checkpointed:  # the checkpoint keeps the layer's input alive until backward
                hidden = args[0] if args else kwargs.get("hidden_states")
                if hidden is not None:
                    self.add(hidden)

        return hook

    def _leave(self, module: Any, args: Any, output: Any) -> None:
        if self.active:
            self.region = "head"

    def _enter_loss(self, module: Any, args: Any, output: Any) -> None:
        if self.active:
            self.region = "loss"

    def _shared(self, module: Any, args: Any, output: Any) -> None:
        if self.active:
            region, self.region = self.region, "head"
            for t in output if isinstance(output, tuple) else (output,):
                self.add(t)
            self.region = region

    def add(self, t: Any) -> None:
        traced = t if t.grad_fn is not None else _local(t)  # a DTensor's cast leads back to its parameter
        t = _local(t)
        storage = t.untyped_storage()
        ptr = _ptr(t)
        if ptr == 0 or ptr in self.param_ptrs:
            return
        key = id(storage)  # the storage's Python object, kept while the storage lives
        entry = self.entries.get(key)
        if entry is not None and entry[2]() is storage:  # the same storage, saved again
            return
        region = "weight_casts" if self._is_weight_cast(traced) else self.region
        self.entries[key] = (region, ptr, weakref.ref(storage))

    def settle(self, model: Any) -> None:
        """Count what is still saved at the end of the forward pass. A branch of the graph that does not
        lead to the loss (a router's group choice, a discarded output) frees its saved tensors at once,
        and their addresses may be reused: only storages alive now are kept for backward, at the size
        they have now (FSDP frees a gathered weight by resizing its storage to nothing), and not those
        that are the model's parameters now (FSDP's gathered weights, kept until backward without
        resharding)."""
        params = {_ptr(_local(p)) for p in model.parameters()}
        for region, ptr, ref in self.entries.values():
            storage = ref()
            if storage is not None and ptr not in params:
                self.bytes[region] += storage.nbytes()
        self.entries.clear()

    def _is_weight_cast(self, t: Any) -> bool:
        """Whether ``t`` is (a view of) a cast of a parameter, as autocast makes for every matmul.

        A trainable parameter's cast leads back to it through autograd; a frozen one's has no
        autograd history and is recognised by its shape and values.
        """
        if t.grad_fn is None and t.dim() == 2:
            for view in (t, t.t()):  # linears save the weight transposed
                for p in self.frozen.get(tuple(view.shape), ()):
                    if p.dtype != t.dtype and p.to(t.dtype).equal(view):
                        return True
            return False
        fn, cast = t.grad_fn, False
        for _ in range(6):  # a cast, then views (PEFT reshapes folded factors: cast, transpose, permute, view)
            if fn is None:
                return False
            name = type(fn).__name__
            if name == "AccumulateGrad":
                return cast and _ptr(_local(fn.variable)) in self.param_ptrs
            if name not in _VIEW_OR_CAST or len(fn.next_functions) != 1:
                return False
            cast = cast or name == "ToCopyBackward0"
            fn = fn.next_functions[0][0]
        return False

    def pack(self, t: Any) -> Any:
        if self.active:
            self.add(t)
        return t

    def close(self) -> None:
        for h in self.handles:
            h.remove()


_VIEW_OR_CAST = {"ToCopyBackward0", "TBackward0", "TransposeBackward0", "PermuteBackward0", "ViewBackward0"}


def job_batch(job: ResolvedJob, device: str, seed: int) -> dict[str, Any]:
    """One micro-batch of the job's inputs from ``seed``: random token ids, labels and the job's mask."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    mb, s = job.layout.micro_batch, job.training.seq_len
    vocab = job.arch.vocab
    ids = torch.randint(0, vocab, (mb, s), generator=gen).to(device)
    if job.arch.kind is Kind.ENCODER_DECODER:
        t = job.training.target_len or s
        return {"input_ids": ids, "labels": torch.randint(0, vocab, (mb, t), generator=gen).to(device)}
    mask = _attention_mask(torch, job, mb, s, device)
    if job.arch.kind is Kind.ENCODER:  # one class label a sequence
        labels = torch.randint(0, job.arch.labels, (mb,), generator=gen).to(device)
        return {"input_ids": ids, "labels": labels, **mask}
    labels = ids.clone()
    if job.training.attention_mask is AttentionMask.PADDED:
        labels[0, -1] = -100  # the padded position carries no label
    return {"input_ids": ids, "labels": labels, **mask}


def _attention_mask(torch: Any, job: ResolvedJob, mb: int, s: int, device: str) -> dict[str, Any]:
    """The job's ``attention_mask``: none; a 4-D boolean causal mask; or a padding mask whose first
    sequence ends in one pad token (enough for the model to build its explicit mask)."""
    kind = job.training.attention_mask
    if kind is AttentionMask.CAUSAL:
        causal = torch.ones(s, s, dtype=torch.bool, device=device).tril()
        return {"attention_mask": causal.expand(mb, 1, s, s)}
    if kind is AttentionMask.PADDED:
        pad = torch.ones(mb, s, dtype=torch.long, device=device)
        pad[0, -1] = 0
        return {"attention_mask": pad}
    return {}


def _ptr(t: Any) -> int:
    """The address of a tensor's storage; 0 for one FSDP has resized to nothing."""
    storage = t.untyped_storage()
    return storage.data_ptr() if storage.nbytes() else 0


def _local(t: Any) -> Any:
    """This process's part of a tensor: the local shard of a DTensor (FSDP2, tensor parallelism), the
    result inside a functional collective's waiting wrapper (tensor parallelism's redistributions)."""
    if hasattr(t, "to_local"):
        t = t.to_local()
    while hasattr(t, "elem") and hasattr(t, "trigger_wait"):  # funcol's AsyncCollectiveTensor
        t = t.trigger_wait()
    return t


def _tensor_bytes(tensors: Any) -> int:
    return sum(_local(t).numel() * _local(t).element_size() for t in tensors)


def measure_job(
    job: ResolvedJob,
    device: str = "cpu",
    steps: int = 1,
    seed: int = 0,
    count_ops: bool = False,
    count_traffic: bool = False,
) -> Comparison:
    """Build the job's model, run warm-up plus ``steps`` measured steps, compare with the estimate; with
    ``count_ops``, count the operations a micro-step dispatches too (the time model's per-operation term); with
    ``count_traffic``, the bytes a token moves through a layer's and the head's memory-bound operations (the time
    model's memory-bound term: the job's model with 2 and 3 layers at two sequence lengths, counted on the CPU, which
    runs the same operations). On a GPU the steps are timed and set beside the time model's step on that GPU, where
    the catalog has it."""
    if device not in ("cpu", "cuda"):
        raise MeasureError(f"--device must be cpu or cuda, got {device!r}.")
    if steps < 1:
        raise MeasureError(f"--steps must be ≥ 1, got {steps}.")
    if job.training.engine is not Engine.TORCH:
        raise MeasureError(f"engine {job.training.engine.value} shards over ranks. To fix: measure with --nproc "
                           "2 or more, or set engine torch.")  # fmt: skip
    build.check_measurable(job, device)
    if count_traffic and job.arch.kind is Kind.ENCODER_DECODER:
        raise MeasureError(
            "--traffic counts one stack's layers (a layer is the difference between 3 and 2 of them); an "
            "encoder-decoder has two. To fix: measure without --traffic."
        )
    torch = build.require_torch()
    gpu_arch = ""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise MeasureError("--device cuda: no CUDA device is visible to torch. To fix: use --device cpu.")
        capability = torch.cuda.get_device_capability()
        gpu_arch = "hopper" if capability[0] == 9 else ""
        if job.training.fp8_setup is not None and capability < (8, 9):
            raise MeasureError(
                f"precision fp8 needs FP8 tensor cores (compute capability 8.9 or newer); this GPU has "
                f"{capability[0]}.{capability[1]}. To fix: measure on an Ada, Hopper or Blackwell GPU, or on a CPU."
            )
    est = estimate_for_device(job, device, gpu_arch)
    need = est.peak_allocated_bytes
    on_cpu = device == "cpu"
    have = int(available_host_bytes() * HOST_MEMORY_FRACTION) if on_cpu else int(torch.cuda.mem_get_info()[0])
    if need > have:
        raise MeasureError(
            f"the job needs about {need / GIB:.1f} GiB on {device} and {have / GIB:.1f} GiB is available. "
            "To fix: measure a smaller model, sequence length or micro-batch."
        )
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    model = build.build_model(job, device, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build.build_optimizer(job, params)
    measurement = measure_steps(job, model, params, opt, device, steps, seed, count_ops=count_ops)
    moved = None
    if count_traffic:
        from ftplan.measure.dispatch import token_traffic  # (it runs micro-steps with this module's batch)

        moved = token_traffic(job)
    if device != "cuda":
        return Comparison(job, est, measurement, traffic=moved)
    gpu = catalog_gpu(torch.cuda.get_device_name())
    return Comparison(job, est, measurement, gpu, model_step_times(job, gpu) if gpu else None, traffic=moved)


def catalog_gpu(device_name: str) -> str | None:
    """The catalog's id of a CUDA device (``torch.cuda.get_device_name``, e.g. "NVIDIA H100 80GB HBM3"): the
    longest leading part of its name, by words and then by hyphens, that the catalog knows; None if none."""
    catalog = load_catalog()
    name = device_name.removeprefix("NVIDIA ").strip()
    words = name.split()
    tries = [" ".join(words[:n]) for n in range(len(words), 0, -1)]
    parts = words[0].split("-") if words else []
    tries += ["-".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]
    for t in tries:
        with contextlib.suppress(FtplanError):
            return catalog.gpu(t).id
    return None


def model_step_times(job: ResolvedJob, gpu: str) -> StepTimes:
    """The time model's step of ``job`` as ``ftplan measure`` runs it: one GPU ``gpu`` (a catalog id), the
    job's micro-batch, accumulation, offload, recomputation and kernels."""
    lay = job.layout
    hw = hardware(gpu_pool(load_catalog(), gpu, gpus=1), job.training.precision)
    return step_times(
        job_flops(job.arch, job.training), job.arch, job.training, hw, np.array([1]), np.array([1]), np.array([0]),
        np.array([OFFLOAD[lay.offload.value]]), np.array([RECOMPUTE[lay.recompute.value]]),
        np.array([lay.micro_batch]), np.array([lay.grad_accum]),
    )  # fmt: skip


def measure_steps(
    job: ResolvedJob,
    model: Any,
    params: list[Any],
    opt: Any,
    device: str,
    steps: int,
    seed: int,
    autocast: bool = True,
    sharded: bool = False,
    batch: dict[str, Any] | None = None,
    count_ops: bool = False,
    backward: Any = None,
    engine_states: bool = False,
) -> Measurement:
    """Run one warm-up step and ``steps`` measured steps of ``model`` (wrapped for data parallelism or
    not) and measure them. ``autocast`` off where a sharding wrapper casts the parameters itself
    (FSDP's mixed precision); ``sharded`` where storages are freed by resizing rather than by being
    dropped (FSDP's gathered parameters), which the op-by-op counter then follows; ``batch``: this rank's
    inputs where they are not the job's whole sequences (context parallelism); ``count_ops``: count the
    operations the warm-up step's first micro-step dispatches (:mod:`ftplan.measure.dispatch`); ``backward``:
    what runs a micro-step's backward, ``backward(loss, micro_step)``, where an engine runs it (DeepSpeed's),
    else ``loss.backward()``; ``engine_states``: the states are an engine's own buffers (DeepSpeed's), measured as
    every tensor alive as the first measured step starts (``Measurement.states``)."""
    torch = build.require_torch()
    batch = job_batch(job, device, seed) if batch is None else batch
    accum = job.layout.grad_accum
    stacks = build.layer_lists(model, job.arch)
    tracker = _SavedTracker(model, stacks, job.layout.recompute is Recompute.FULL)
    sizes: dict[str, int] = {}
    kept: list[Any] = []  # model outputs the loop holds (model_output kept)
    cast = build.autocast_context(job, device) if autocast else contextlib.nullcontext()
    counters: list[Any] = []  # the warm-up's first micro-step's forward and backward operation counters

    def counted(i: int, warm_up: bool) -> Any:
        if not (count_ops and warm_up and i == 0):
            return contextlib.nullcontext()
        from ftplan.measure.dispatch import operation_counter

        counters.append(operation_counter(torch))
        return counters[-1]

    def saved_hooks() -> Any:
        """The tracker's hook on every saved tensor, only while it tracks: a Python call a saved tensor
        would otherwise add host time to the steps that are timed."""
        if not tracker.active:
            return contextlib.nullcontext()
        return torch.autograd.graph.saved_tensors_hooks(tracker.pack, lambda t: t)

    def step(track: bool, warm_up: bool = False) -> None:
        for i in range(accum):
            tracker.active = track and i == 0
            tracker.region = "head"
            with saved_hooks(), cast, counted(i, warm_up):
                output = model(**batch)
                loss = output.loss / accum
            if tracker.active:
                tracker.settle(model)
            tracker.active = False
            if job.training.model_output is ModelOutput.DROPPED:
                del output  # the loop keeps only the loss (Transformers' Trainer)
            else:
                kept[:] = [output]  # held through backward and the step; the next forward's rebinds it
            with counted(i, warm_up):
                loss.backward() if backward is None else backward(loss, i)
            del loss
        sizes["gradients"] = _tensor_bytes(p.grad for p in params if p.grad is not None)
        opt.step()
        opt.zero_grad(set_to_none=job.training.zero_grad is ZeroGrad.NONE)
        kept.clear()

    seconds: list[float] = []
    try:
        step(track=False, warm_up=True)  # warm-up: creates the optimizer states
        held = _alive_tensors(torch) if engine_states else []
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            for i in range(steps):
                began = time.perf_counter()
                step(track=i == 0)
                torch.cuda.synchronize()
                seconds.append(time.perf_counter() - began)
            peak, reserved, categories = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved(), {}
        else:
            live = _live_storages(torch, [*model.parameters(), *model.buffers(), *_optimizer_tensors(torch, opt),
                                         *(p.grad for p in params if p.grad is not None), *batch.values(), *held],
                                  resizable=sharded)  # fmt: skip
            with live:
                peak, categories = _profile_cpu(torch, lambda: [step(track=i == 0) for i in range(steps)])
            peak = max(peak, live.peak)
            reserved = None
    finally:
        tracker.close()
    m = measurement_of(torch, device, steps, (params, list(model.parameters())), sizes["gradients"], opt,
                       tracker, (peak, reserved, categories))  # fmt: skip
    if engine_states:
        inputs = {t.untyped_storage().data_ptr() for t in batch.values()}
        m = replace(m, states=_storage_bytes(t for t in held if t.untyped_storage().data_ptr() not in inputs))
    if counters:
        from ftplan.measure.dispatch import computing

        m = replace(m, ops=(computing(counters[0]), computing(counters[1])))
    if seconds:
        m = replace(m, step_seconds=statistics.median(seconds[1:] or seconds))
    return m


def measurement_of(
    torch: Any,
    device: str,
    steps: int,
    params: tuple[list[Any], list[Any]],
    gradients: int,
    opt: Any,
    tracker: _SavedTracker,
    peak: tuple[int, int | None, dict[str, int]],
) -> Measurement:
    """The measurement of a run: ``params`` the trainable parameters and all of them, ``peak`` the peak
    allocated, the peak reserved (CUDA) and the profiler's categories there."""
    trainable, every = params
    allocated, reserved, categories = peak
    return Measurement(
        device=device,
        steps=steps,
        weights_trainable=_tensor_bytes(trainable),
        weights_frozen=_tensor_bytes(p for p in every if not p.requires_grad),
        gradients=gradients,
        optimizer_states=_tensor_bytes(_optimizer_tensors(torch, opt)),
        saved_by_layer={k: v for k, v in tracker.bytes.items() if k not in ("head", "loss", "weight_casts")},
        saved_head=tracker.bytes.get("head", 0),
        saved_loss=tracker.bytes.get("loss", 0),
        weight_casts=tracker.bytes.get("weight_casts", 0),
        peak_allocated=int(allocated),
        peak_reserved=None if reserved is None else int(reserved),
        peak_categories=categories,
    )


class Wrapped:
    """A wrapper (DistributedDataParallel, DeepSpeed's engine) seen as the model it wraps (``.module``: its
    layers, config and embeddings), so the measurement's hooks attach to the same modules; calls go through
    the wrapper."""

    def __init__(self, wrapper: Any) -> None:
        self._wrapper = wrapper

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapper(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapper.module, name)


def _alive_tensors(torch: Any) -> list[Any]:
    """Every tensor the process holds from Python (an engine's flat buffers and partitions included)."""
    import gc

    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and not o.is_meta]


def _storage_bytes(tensors: Any) -> int:
    """Bytes of the storages under ``tensors``, each storage once."""
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


def _optimizer_tensors(torch: Any, opt: Any) -> list[Any]:
    opt = getattr(opt, "optim", opt)  # ZeroRedundancyOptimizer: the optimizer of this rank's shard
    return [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]


def _live_storages(torch: Any, existing: list[Any], resizable: bool = False) -> Any:
    """A dispatch mode counting live storage bytes, starting from ``existing`` tensors; with
    ``resizable``, at the size each storage has after every op (FSDP resizes its gathered
    parameters' storages to nothing instead of freeing them)."""
    from torch.distributed.tensor import DTensor
    from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass

    class LiveStorages(TorchDispatchMode):
        """The bytes of every storage alive, op by op: each op's outputs are counted from the op that
        makes them until their storage is freed. The CPU profiler's timeline merges events that share
        a timestamp and can miss a short peak; this counter cannot (it does not see a kernel's own
        scratch memory, which the profiler does: the measurement is the larger of the two)."""

        def __init__(self, existing: list[Any]) -> None:
            super().__init__()
            self.live: dict[int, int] = {}
            self.storages: dict[int, Any] = {}  # resizable: weak references to the live storages
            self.now = self.peak = 0
            for t in existing:
                self._add(t)
            self.peak = self.now

        def _add(self, t: Any) -> None:
            if not isinstance(t, torch.Tensor) or t.is_meta:
                return
            if is_traceable_wrapper_subclass(t):  # torchao's float8 tensors: count the tensors inside
                for name in t.__tensor_flatten__()[0]:
                    self._add(getattr(t, name))
                return
            storage = t.untyped_storage()
            # a resized storage moves: follow it by its Python object (kept while the storage lives)
            key, size = (id(storage) if resizable else storage.data_ptr()), storage.nbytes()
            if key in self.live or (size == 0 and not resizable):
                return
            self.live[key] = size
            self.now += size
            if resizable:
                self.storages[key] = weakref.ref(storage)
            weakref.finalize(storage, self._free, key)

        def _free(self, key: int) -> None:
            self.now -= self.live.pop(key, 0)
            self.storages.pop(key, None)

        def _resized(self) -> None:
            for key, ref in list(self.storages.items()):
                storage = ref()
                if storage is not None and storage.nbytes() != self.live.get(key, 0):
                    self.now += storage.nbytes() - self.live[key]
                    self.live[key] = storage.nbytes()

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if any(issubclass(t, DTensor) for t in types):
                # a DTensor runs its op as ops on local tensors and collectives, which this mode then sees
                # one by one (the buffers a redistribution allocates included)
                return NotImplemented
            out = func(*args, **(kwargs or {}))
            if resizable:
                self._resized()
            for t in out if isinstance(out, (tuple, list)) else (out,):
                self._add(t)
            self.peak = max(self.peak, self.now)
            return out

    return LiveStorages(existing)


def _profile_cpu(torch: Any, run: Any) -> tuple[int, dict[str, int]]:
    """Peak of the memory profiler's CPU timeline over ``run()``, and its categories there."""
    from torch.profiler import ProfilerActivity, profile

    try:
        from torch.profiler._memory_profiler import _CATEGORY_TO_INDEX, MemoryProfileTimeline
    except ImportError as exc:  # the timeline is a private torch API
        msg = f"this torch has no memory profiler timeline ({exc}). To fix: install 'ftplan[measure]'."
        raise MeasureError(msg) from exc
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        run()
    try:
        timeline = MemoryProfileTimeline(prof._memory_profile())
    except AssertionError:  # its data-flow analysis can trip on collectives' in-place ops (FSDP2)
        return 0, {}  # the op-by-op counter, which the caller also keeps, is then the measurement
    _, sizes = timeline._coalesce_timeline(torch.device("cpu"))
    totals = [sum(row) for row in sizes]
    at = max(range(len(totals)), key=totals.__getitem__)
    # a row is [0, then one size per category at position _CATEGORY_TO_INDEX[category] + 1]; the
    # category None is what the profiler could not attribute
    names = {i + 1: (c.name.lower() if c is not None else "uncategorised") for c, i in _CATEGORY_TO_INDEX.items()}
    return int(totals[at]), {names[i]: int(v) for i, v in enumerate(sizes[at]) if v and i in names}
