"""Measure a data-parallel job across processes: every rank's memory, term by term.

``measure_distributed`` starts ``dp`` processes (one per rank, forked from multiprocessing's fork server with
torch and transformers loaded; gloo on a CPU, NCCL on CUDA), builds the same model in each, wraps it the way
the job's ZeRO stage is run with PyTorch's own tools, and measures every rank as ``ftplan measure`` measures one
process:

* ZeRO 0: ``DistributedDataParallel`` (its gradient buckets included);
* ZeRO 1: ``DistributedDataParallel`` and ``ZeroRedundancyOptimizer`` (optimizer states sharded);
* ZeRO 2 and 3: FSDP2 (``fully_shard`` on every transformer layer and on the model), without and
  with ``reshard_after_forward``; mixed precision through FSDP's ``MixedPrecisionPolicy``
  (16-bit gathered weights, fp32 shards and gradient reduction), not autocast; with ``dp_shard``
  (HSDP) over a 2-D (replicate, shard) device mesh; on a CPU its all-gathers and reduce-scatters run
  as in-place all-reduces (gloo's own allocate copies that its worker thread frees at a time of its own,
  which NCCL never allocates);
* pipeline stages (``layout.pp``): one rank a stage, :mod:`ftplan.measure.stages`;
* context parallelism (``layout.cp``, ``context_parallel: ulysses``): DeepSpeed-Ulysses, each rank its share
  of its group's sequences, :mod:`ftplan.measure.ulysses`;
* tensor parallelism (``layout.tp``): one rank a shard, torchtitan's DTensor plan with sequence
  parallelism and a vocabulary-parallel loss, :mod:`ftplan.measure.tensor`;
* a job with ``engine: deepspeed`` (or ``--engine deepspeed``): ZeRO 1-3 as DeepSpeed's engine runs them, with
  the config ``ftplan export --to deepspeed`` writes, :mod:`ftplan.measure.deepspeed_zero` (its estimate counts
  DeepSpeed's own buffers, :mod:`ftplan.memory.deepspeed`);
* expert parallelism (``layout.ep``, ZeRO-2/3): transformers' own EP (``apply_expert_parallelism`` with
  the model's ``base_model_ep_plan``, tokens sent to the experts' ranks by all-to-all), the experts
  FSDP-sharded over the ranks holding the same experts and the rest over all, as transformers' FSDP
  plan does. Routing decides how many rows each rank's experts take: every rank records its load, and
  its estimate is made at that load (``capacity_factor``).

Ranks may differ (they hold different shards); the comparison reports each, and a fit check needs
the worst.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pickle
import re
import signal
import socket
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ftplan.errors import MeasureError
from ftplan.job import ResolvedJob
from ftplan.measure import build, deepspeed_zero, stages, tensor, ulysses
from ftplan.measure.run import (
    HOST_MEMORY_FRACTION,
    Comparison,
    Measurement,
    Wrapped,
    available_host_bytes,
    estimate_for_device,
    job_batch,
    measure_steps,
)
from ftplan.memory import Engine, Method, Offload, Precision, ZeroStage
from ftplan.units import GIB

MAX_PROCESSES = 8  # ranks one machine runs (a node's GPUs)


@dataclass(frozen=True)
class DistComparison:
    """Every rank's measurement beside the estimate of the same job (one estimate: every GPU of a
    data-parallel job is estimated alike)."""

    job: ResolvedJob
    ranks: tuple[Comparison, ...]

    @property
    def worst(self) -> Comparison:
        """The rank with the highest measured peak: what a fit check must hold."""
        return max(self.ranks, key=lambda c: c.measurement.peak_allocated)


def check_distributed(job: ResolvedJob, nproc: int, device: str) -> None:
    """Refuse, with the reason, what ``--nproc`` cannot run."""
    lay, tr = job.layout, job.training
    if not 2 <= nproc <= MAX_PROCESSES:
        raise MeasureError(f"--nproc must be 2 to {MAX_PROCESSES}, got {nproc}. To fix: use --nproc 1 for one process.")
    if tr.engine is Engine.DEEPSPEED:
        deepspeed_zero.check(job, nproc)
        build.check_measurable(_one_rank(job), device)
        return
    if lay.cp > 1:
        ulysses.check_ulysses(job)
    if lay.pp > 1:
        if lay.pp != nproc:
            raise MeasureError(f"--nproc {nproc} runs one rank a pipeline stage; the job has layout.pp {lay.pp}. "
                               f"To fix: use --nproc {lay.pp}.")  # fmt: skip
        stages.check_pipeline(job)
        build.check_measurable(_one_rank(job), device)
        return
    if lay.tp != 1:
        tensor.check_tensor_parallel(job, nproc)
        _check_recipe(job)
        build.check_measurable(_one_rank(job), device)
        return
    if lay.ep > 1:
        if lay.zero < ZeroStage.GRADIENTS:
            raise MeasureError(
                f"layout.ep {lay.ep} is measured as transformers trains it, under FSDP2 (its experts sharded over "
                "the ranks that hold the same experts). To fix: set zero 2 or 3."
            )
        if lay.dp_shard and lay.dp_shard != lay.dp:
            raise MeasureError("--nproc measures expert parallelism without HSDP. To fix: drop layout.dp_shard.")
    if lay.dp * lay.cp != nproc:
        if lay.cp > 1:
            raise MeasureError(f"--nproc {nproc} runs dp × cp ranks; the job has dp {lay.dp} and cp {lay.cp}. "
                               f"To fix: use --nproc {lay.dp * lay.cp}.")  # fmt: skip
        raise MeasureError(f"--nproc {nproc} runs {nproc} data-parallel ranks; the job has layout.dp {lay.dp}. "
                           f"To fix: set layout.dp {nproc}.")  # fmt: skip
    _check_recipe(job)
    if lay.zero == ZeroStage.OPTIMIZER and tr.precision.mixed:
        raise MeasureError(
            "ZeRO-1 under a mixed recipe is DeepSpeed's (16-bit weights, an fp32 master shard), which "
            "ZeroRedundancyOptimizer does not run. To fix: measure ZeRO-1 in fp32 or bf16-pure, or ZeRO-2."
        )
    if lay.zero >= ZeroStage.GRADIENTS and tr.method is not Method.FULL and tr.precision is Precision.BF16_MIXED:
        base_fp32 = tr.lora is not None and tr.lora.base_fp32
        if not base_fp32:
            raise MeasureError(
                "FSDP shards parameters of one dtype per layer: a bf16 base with fp32 adapters (bf16-mixed LoRA) "
                "needs lora.base_fp32 under FSDP. To fix: set lora.base_fp32: true, or use bf16-pure."
            )
    build.check_measurable(_one_rank(job), device)


def _check_recipe(job: ResolvedJob) -> None:
    """What no multi-process measurement runs: offload (nothing to move on a CPU) and fp8."""
    if job.layout.offload is not Offload.NONE:
        raise MeasureError(
            "offload moves states from GPU memory to the host; on a CPU there is nothing to move. "
            "To fix: measure offload none (the model moves the offloaded terms to the host)."
        )
    if job.training.fp8_setup is not None:
        raise MeasureError("--nproc does not measure fp8 jobs yet. To fix: measure fp8 with one process.")


def _one_rank(job: ResolvedJob) -> ResolvedJob:
    """The job as one rank builds it: the wrapping is this module's."""
    return replace(job, layout=replace(job.layout, dp=1, tp=1, pp=1, cp=1, zero=ZeroStage.NONE, gpus_per_node=1))


def measure_distributed(job: ResolvedJob, nproc: int, device: str = "cpu", steps: int = 1,
                        seed: int = 0, engine: str | None = None) -> DistComparison:  # fmt: skip
    """Run ``nproc`` ranks of the job's data-parallel layout and measure each; ``engine`` (torch | deepspeed) in
    place of the job's: what runs its ZeRO stage."""
    if engine is not None:
        engines = [e.value for e in Engine]
        if engine not in engines:
            raise MeasureError(f"--engine must be {' or '.join(engines)}, got {engine!r}.")
        job = replace(job, training=replace(job.training, engine=Engine(engine)))
    if device not in ("cpu", "cuda"):
        raise MeasureError(f"--device must be cpu or cuda, got {device!r}.")
    if steps < 1:
        raise MeasureError(f"--steps must be ≥ 1, got {steps}.")
    check_distributed(job, nproc, device)
    torch = build.require_torch()
    gpu_arch = ""
    if device == "cuda":
        if torch.cuda.device_count() < nproc:
            raise MeasureError(f"--nproc {nproc} --device cuda needs {nproc} GPUs; {torch.cuda.device_count()} "
                               "are visible. To fix: use fewer processes or --device cpu.")  # fmt: skip
        gpu_arch = "hopper" if torch.cuda.get_device_capability()[0] == 9 else ""
    ests = [estimate_for_device(job, device, gpu_arch, rank if job.layout.pp > 1 else None) for rank in range(nproc)]
    if job.layout.ep > 1:  # the most a rank's experts may take: all the group's routed rows
        bound = replace(job, training=replace(job.training, capacity_factor=float(job.layout.ep)))
        ests = [estimate_for_device(bound, device, gpu_arch)] * nproc
    est = max(ests, key=lambda e: e.peak_allocated_bytes)
    if device == "cpu":
        need, have = est.peak_allocated_bytes * nproc, int(available_host_bytes() * HOST_MEMORY_FRACTION)
        if need > have:
            raise MeasureError(
                f"{nproc} ranks need about {need / GIB:.1f} GiB together and {have / GIB:.1f} GiB is available. "
                "To fix: measure a smaller model, sequence length or micro-batch, or fewer ranks."
            )
    with tempfile.TemporaryDirectory(prefix="ftplan-measure-") as tmp:
        Path(tmp, "job.pickle").write_bytes(pickle.dumps((job, device, steps, seed)))
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(nproc)}
        # one CPU thread a rank unless the caller says otherwise, as torchrun sets for more than one process
        # (ranks sharing the cores with several threads each run slower, not differently)
        env.setdefault("OMP_NUM_THREADS", "1")
        # each rank's stderr goes to a file: a pipe left unread while another rank is waited for could fill
        # and stall that rank inside a collective the others wait on
        logs = [Path(tmp, f"{rank}.err") for rank in range(nproc)]
        procs = _start_ranks(tmp, env, logs, job)
        failed = _wait(procs)
        done = all(Path(tmp, f"{rank}.json").exists() for rank in range(nproc))
        if failed is not None and not done:  # the other ranks would wait for it in a collective: they were stopped
            err = logs[failed].read_text(errors="replace") if logs[failed].exists() else ""
            raise MeasureError(f"rank {failed} failed: {failure_line(err, procs[failed].returncode)}")
        ranks = []
        for rank in range(nproc):
            measured = Measurement(**json.loads(Path(tmp, f"{rank}.json").read_text()))
            est = ests[rank]
            if measured.expert_load is not None:  # the estimate at the load routing gave this rank
                at = replace(job.training, capacity_factor=measured.expert_load)
                est = estimate_for_device(replace(job, training=at), device, gpu_arch)
            ranks.append(Comparison(job, est, measured))
    return DistComparison(job, tuple(ranks))


# a line of a traceback naming the exception: "RuntimeError: ...", "torch.distributed.DistBackendError: ..."
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")


def failure_line(stderr: str, code: int | None) -> str:
    """What went wrong in a failed rank: the last exception its stderr's traceback names (the profiler's and
    gloo's log lines may follow it), else the signal that killed it, else its last unindented line, else its
    exit code."""
    lines = [line for line in stderr.strip().splitlines() if line and not line[0].isspace()]
    named = [line for line in lines if _EXCEPTION_LINE.match(line)]
    if named:
        return named[-1]
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code == signal.SIGKILL:  # what the kernel's out-of-memory killer sends
            return f"killed by {name} (the machine may have run out of memory: measure fewer ranks at once)"
        return f"killed by {name}"
    return (lines or [f"exit code {code}"])[-1]


# What every rank imports, once, in the process the ranks are forked from (multiprocessing's fork server): each
# rank then starts with them loaded instead of importing them itself (about 2.7 s of CPU for torch and
# transformers, 3.5 s more for PEFT)
RANK_PRELOAD = ("torch", "torch.distributed", "transformers", "ftplan.measure.dist")


class _ForkedRank:
    """A rank forked from the fork server, answering as a ``subprocess.Popen`` does."""

    def __init__(self, process: Any) -> None:
        self.process = process

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()

    def wait(self) -> int | None:
        self.process.join()
        return self.process.exitcode


def _start_ranks(tmp: str, env: dict[str, str], logs: list[Path], job: ResolvedJob) -> list[_ForkedRank]:
    """Fork one process a rank from the fork server (started on first use with :data:`RANK_PRELOAD`, and PEFT
    for an adapter job); each takes ``env`` and writes its stderr to its log."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    adapters = job.training.method is not Method.FULL
    ctx.set_forkserver_preload([*RANK_PRELOAD, *(("peft",) if adapters else ())])
    procs = []
    for rank, log in enumerate(logs):
        process = ctx.Process(target=_forked_rank, args=(tmp, rank, env, str(log)))
        with _main_hidden():
            process.start()
        procs.append(_ForkedRank(process))
    return procs


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Start a process without the caller's main module: multiprocessing would run the caller's script again
    in each rank (as ``__mp_main__``), which a script calling :func:`measure_distributed` at its top level,
    unguarded by ``if __name__ == "__main__"``, cannot survive, and the ranks need nothing from it."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _forked_rank(tmp: str, rank: int, env: dict[str, str], log: str) -> None:
    """A rank in a forked process: the launcher's environment, stdout discarded, stderr to ``log``; threads as
    ``OMP_NUM_THREADS`` says (the fork server's OpenMP read the variable before the launcher set it)."""
    os.environ.clear()
    os.environ.update(env)
    for fd, path, flags in ((2, log, os.O_CREAT | os.O_TRUNC), (1, os.devnull, 0)):
        opened = os.open(path, os.O_WRONLY | flags)
        os.dup2(opened, fd)
        os.close(opened)
    import torch

    torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
    _rank(tmp, rank)


def _wait(procs: list[Any]) -> int | None:
    """Wait for every rank; at the first that fails, stop the others and return its rank."""
    while True:
        codes = [p.poll() for p in procs]
        failed = next((rank for rank, code in enumerate(codes) if code not in (None, 0)), None)
        if failed is not None:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            return failed
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.1)


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(tmp: str, rank: int) -> None:
    """One rank (a process of its own): join the group, build and wrap the model, measure, write
    the result where the launcher reads it."""
    import torch
    import torch.distributed as dist

    job, device, steps, seed = pickle.loads(Path(tmp, "job.pickle").read_bytes())
    warnings.filterwarnings("ignore")
    if device == "cuda":
        torch.cuda.set_device(rank)
    world = int(os.environ["WORLD_SIZE"])
    dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=rank, world_size=world)
    try:
        if job.layout.pp > 1:
            measured = stages.measure_pipeline_rank(job, _one_rank(job), device, steps, seed, rank)
            _write_result(tmp, rank, measured)
            return
        dev = f"cuda:{rank}" if device == "cuda" else "cpu"
        model = build.build_model(_one_rank(job), dev, seed)  # every rank starts from the same weights
        if job.layout.tp > 1:
            measured = _tensor_parallel_rank(torch, model, job, device, steps, seed)
            _write_result(tmp, rank, measured)
            return
        if job.training.engine is Engine.DEEPSPEED:
            _write_result(tmp, rank, _deepspeed_rank(model, job, device, steps, seed, rank))
            return
        zero = job.layout.zero
        autocast = True
        batch = None
        if job.layout.cp > 1:  # a context-parallel group shares its sequences: each rank gets its share of them
            ulysses.register(model, job)
            group = rank // job.layout.cp
            batch = ulysses.local_batch(job_batch(job, dev, seed + group), job, rank)
        loads, experts = _expert_parallel(model, job, device) if job.layout.ep > 1 else (None, None)
        # Under expert parallelism the ranks keep their weights (learning rate 0: the step's memory is the same),
        # so the measured step routes its tokens as the seeded weights do, whatever order gloo summed the
        # warm-up's gradients in (which, with learning, moves a few tokens across experts from run to run)
        lr = 0.0 if job.layout.ep > 1 else build.LEARNING_RATE
        if zero >= ZeroStage.GRADIENTS:
            autocast = not _fully_shard(torch, model, job, device, experts)
            params = [p for p in model.parameters() if p.requires_grad]
            opt = build.build_optimizer(job, params, lr)
        else:
            from torch.nn.parallel import DistributedDataParallel

            model = Wrapped(DistributedDataParallel(model, device_ids=[rank] if device == "cuda" else None))
            params = [p for p in model.parameters() if p.requires_grad]
            if zero == ZeroStage.OPTIMIZER:
                from torch.distributed.optim import ZeroRedundancyOptimizer

                cls, kwargs = build.optimizer_class(job, lr)
                opt = ZeroRedundancyOptimizer(params, optimizer_class=cls, **kwargs)
            else:
                opt = build.build_optimizer(job, params, lr)
        measured = measure_steps(job, model, params, opt, device, steps, seed + rank, autocast=autocast,
                                 sharded=zero >= ZeroStage.GRADIENTS, batch=batch)  # fmt: skip
        if loads is not None:
            per_layer = loads.loads(experts["ep"], job.layout.grad_accum)
            measured = replace(measured, expert_load=sum(per_layer) / len(per_layer))
        _write_result(tmp, rank, measured)
    finally:
        dist.destroy_process_group()


def _tensor_parallel_rank(torch: Any, model: Any, job: ResolvedJob, device: str, steps: int, seed: int) -> Measurement:
    """A tensor-parallel rank: its shard of torchtitan's plan, and with data parallelism FSDP2 over the ranks
    holding the same shard (torchtitan's 2-D mesh, (dp, tp)); each data-parallel replica its own sequences."""
    lay = job.layout
    autocast, batch = True, None
    if lay.dp > 1:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(device, (lay.dp, lay.tp), mesh_dim_names=("dp", "tp"))
        tensor.parallelize(model, job, device, mesh["tp"])
        autocast = not _fully_shard(torch, model, job, device, mesh=mesh["dp"])
        batch = job_batch(job, device, seed + mesh.get_local_rank("dp"))
    else:
        tensor.parallelize(model, job, device)
    params = [p for p in model.parameters() if p.requires_grad]
    with tensor.loss_parallel():
        return measure_steps(job, model, params, build.build_optimizer(job, params), device, steps, seed,
                             autocast=autocast, sharded=lay.dp > 1, batch=batch)  # fmt: skip


def _deepspeed_rank(model: Any, job: ResolvedJob, device: str, steps: int, seed: int, rank: int) -> Measurement:
    """A rank of DeepSpeed's ZeRO engine: its own bf16 (no autocast), its own backward and step."""
    params = [p for p in model.parameters() if p.requires_grad]
    engine, opt = deepspeed_zero.initialize(model, build.build_optimizer(job, params), job, device, rank)
    return measure_steps(job, Wrapped(engine), params, opt, device, steps, seed + rank, autocast=False,
                         sharded=job.layout.zero == ZeroStage.PARAMETERS, backward=opt.backward,
                         engine_states=True)  # fmt: skip


def _write_result(tmp: str, rank: int, measured: Measurement) -> None:
    """The rank's measurement, where the launcher reads it, whole or not at all: a rank whose process
    then fails as it shuts down (gloo's threads can abort at exit) has still been measured."""
    part = Path(tmp, f"{rank}.json.part")
    part.write_text(json.dumps(asdict(measured)))
    part.replace(Path(tmp, f"{rank}.json"))


def _fully_shard(torch: Any, model: Any, job: ResolvedJob, device: str, experts: Any = None, mesh: Any = None) -> bool:
    """FSDP2 on every transformer layer and the model (ZeRO-3 reshards after forward, ZeRO-2 does
    not), over ``mesh`` (the data-parallel ranks of a tensor-parallel job), a 2-D (replicate, shard) mesh
    under HSDP, or all ranks; first on the experts over ``experts`` (the (efsdp, ep) mesh of expert
    parallelism); returns whether FSDP casts the parameters itself (mixed precision), so autocast is off."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    reshard = job.layout.zero == ZeroStage.PARAMETERS
    mixed = job.training.precision.mixed
    low = torch.bfloat16 if job.training.precision is Precision.BF16_MIXED else torch.float16
    mp = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32) if mixed else MixedPrecisionPolicy()
    lay = job.layout
    if mesh is None and lay.replicas > 1:
        mesh = init_device_mesh(device, (lay.replicas, lay.shard), mesh_dim_names=("replicate", "shard"))
    if experts is not None:  # the experts over the ranks holding the same ones first (transformers' fsdp.py)
        for module in _expert_modules(model):  # (transformers reshards them after forward; here as the layers)
            fully_shard(module, mesh=experts["efsdp"], reshard_after_forward=reshard, mp_policy=mp)
    for layers in build.layer_lists(model, job.arch).values():
        for layer in layers:
            fully_shard(layer, reshard_after_forward=reshard, mp_policy=mp, mesh=mesh)
    fully_shard(model, reshard_after_forward=reshard, mp_policy=mp, mesh=mesh)
    if device == "cpu":
        _in_place_collectives(torch, model)
    return mixed


def _in_place_collectives(torch: Any, model: Any) -> None:
    """FSDP2's all-gathers and reduce-scatters as in-place all-reduces, on every FSDP module of ``model``.

    Gloo's reduce-scatter clones its input and its all-gather allocates a flat copy of its output; both
    are freed when gloo's worker thread lets go of the work, some time after the call returns, so the
    ranks' peak would depend on thread timing and hold buffers NCCL never allocates. An all-reduce
    over the gathered buffer (the other ranks' slots zeroed) and over the reduce-scatter input (then
    this rank's slot copied out) allocates nothing, and the ranks hold what FSDP2 holds on GPUs. Both run
    through :func:`all_reduce_released`: synchronous (on a CPU there is no stream to overlap them with).
    """
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule

    try:
        from torch.distributed.fsdp._fully_shard._fsdp_api import AllGather, ReduceScatter
    except ImportError as exc:  # FSDP2's custom collectives are not a public API yet
        msg = f"this torch has no FSDP custom collectives ({exc}). To fix: install 'ftplan[measure]'."
        raise MeasureError(msg) from exc

    class Allocate:
        def allocate(self, size: Any, *, dtype: Any, device: Any) -> Any:
            return torch.empty(*size, dtype=dtype, device=device)

    class Gather(Allocate, AllGather):
        """``input_tensor`` is this rank's slot of ``output_tensor`` (FSDP2 copies it in there)."""

        def __call__(self, output_tensor: Any, input_tensor: Any, group: Any, async_op: bool = False) -> Any:
            slots, me = output_tensor.chunk(dist.get_world_size(group)), dist.get_rank(group)
            for i, slot in enumerate(slots):
                if i != me:
                    slot.zero_()
            if slots[me].data_ptr() != input_tensor.data_ptr():
                slots[me].copy_(input_tensor)
            all_reduce_released(output_tensor, group)
            return None  # (done: FSDP2 then waits on no work)

    class Scatter(Allocate, ReduceScatter):
        def __call__(self, output_tensor: Any, input_tensor: Any, group: Any, op: Any, async_op: bool = False) -> Any:
            all_reduce_released(input_tensor, group, op)  # FSDP2 frees its input after this
            output_tensor.copy_(input_tensor.chunk(dist.get_world_size(group))[dist.get_rank(group)])

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_custom_all_gather(Gather())
            module.set_custom_reduce_scatter(Scatter())


def all_reduce_released(tensor: Any, group: Any = None, op: Any = None) -> None:
    """All-reduce ``tensor`` in place over ``group`` (``op``: sum unless given) and return once no one
    else holds its memory.

    Gloo's worker thread keeps its own reference to a collective's tensor until it lets go of the work,
    which can be after the caller's wait has returned: on a loaded machine a gathered buffer FSDP2 has
    dropped was then still held at the step's peak (a measured peak one parameter group over, in one CI
    run). The collective runs on a second tensor over the same memory, which is then pointed at none:
    whatever the worker still holds, the memory goes when the caller drops ``tensor``.
    """
    import torch.distributed as dist

    alias = tensor.new_empty(0).set_(tensor)
    dist.all_reduce(alias, op=dist.ReduceOp.SUM if op is None else op, group=group)
    alias.set_()


def _transformers_model(model: Any) -> Any:
    """The transformers model itself (under PEFT's wrapper, the model it wraps)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _expert_modules(model: Any) -> list[Any]:
    """The modules transformers' expert-parallel plan dispatches tokens to (one a MoE layer)."""
    model = _transformers_model(model)
    plan = model._expand_parallel_plan(model.ep_plan)
    return [module for name, module in model.named_modules() if plan.get(name) == "ep_dispatch_experts"]


class _ExpertLoads:
    """The routed rows each rank's experts take: every forward of an experts module counts, on the rank
    that routes them, the rows bound for each rank of the group; ``loads`` sums the group's counts over
    the forwards after the warm-up step's."""

    def __init__(self, torch: Any, modules: list[Any], experts: int, ep: int) -> None:
        self.torch, self.ep, self.local = torch, ep, experts // ep
        # a forward at a time, a layer: rows bound for each rank, and the rows routed (tokens × top-k)
        self.counts: list[list[Any]] = [[] for _ in modules]
        for i, module in enumerate(modules):
            module.register_forward_pre_hook(functools.partial(self._count, i))

    def _count(self, layer: int, module: Any, args: tuple[Any, ...]) -> None:
        index = args[1].detach().reshape(-1).cpu()
        counts = self.torch.bincount(index // self.local, minlength=self.ep).double()
        self.counts[layer].append(self.torch.cat([counts, counts.new_tensor([index.numel()])]))

    def loads(self, mesh: Any, warmup: int) -> list[float]:
        """This rank's rows over a balanced share, a MoE layer, over the forwards after the first
        ``warmup``, summed over its expert-parallel group ``mesh`` (a collective: every rank calls it)."""
        import torch.distributed as dist

        counts = self.torch.stack([self.torch.stack(c[warmup:]).sum(0) for c in self.counts])
        dist.all_reduce(counts, group=mesh.get_group())
        me = mesh.get_local_rank()
        return [float(c[me] * self.ep / c[-1]) if c[-1] else 1.0 for c in counts]


def _expert_parallel(model: Any, job: ResolvedJob, device: str) -> tuple[_ExpertLoads, Any]:
    """Split every MoE layer's experts over the expert-parallel group with transformers' own EP (its
    ``apply_expert_parallelism`` and the model's ``base_model_ep_plan``: tokens by all-to-all); returns
    the load counter and the (efsdp, ep) mesh."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh

    try:
        from transformers.distributed.expert_parallel import apply_expert_parallelism
    except ImportError as exc:
        raise MeasureError(f"this transformers has no expert parallelism ({exc}). To fix: install "
                           "'ftplan[measure]'.") from exc  # fmt: skip
    lay = job.layout
    model = _transformers_model(model)
    if not model.ep_plan:
        raise MeasureError(f"transformers has no expert-parallel plan for {job.arch.model_type}. To fix: use ep 1.")
    modules = _expert_modules(model)
    loads = _ExpertLoads(torch, modules, job.arch.experts, lay.ep)
    experts = init_device_mesh(device, (lay.dp // lay.ep, lay.ep), mesh_dim_names=("efsdp", "ep"))
    dense = init_device_mesh(device, (lay.dp, 1), mesh_dim_names=("fsdp", "tp"))["tp"]
    apply_expert_parallelism(model, experts["ep"], dense, model._expand_parallel_plan(model.ep_plan), "all_to_all")
    return loads, experts
