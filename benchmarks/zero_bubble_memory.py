"""Why ftplan does not plan zero-bubble pipeline schedules: saved activations alive after each step, per rank.

Two CPU processes (gloo) run a two-stage pipeline of small MLP blocks (a residual ``x + W2·relu(W1·x)``, the
last stage with a head and an MSE loss) for a few steps under ``Schedule1F1B`` and under
``ScheduleInterleavedZeroBubble`` (torch's ZB1P, which splits each backward into an input pass and a
deferred weight pass). A ``saved_tensors_hooks`` pack hook records every activation autograd saves and a
finaliser on its storage notes when it is freed; after each step the script prints, per rank, the
activations still alive.

Under 1F1B nothing a step saved outlives it. Under the zero-bubble schedule (torch 2.13) the last stage keeps
the ReLU outputs of every micro-batch after the step, so what it holds grows with micro-batches and with
steps: no in-flight count bounds it, and the memory model cannot give a peak that holds.

Usage: python benchmarks/zero_bubble_memory.py [--micro-batches 4] [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import weakref
from typing import Any

WIDTH = 256  # hidden width of the blocks
TOKENS = 64  # rows of one micro-batch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, schedule: str, micro_batches: int, steps: int, queue: Any) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed import pipelining as pl

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up, self.down = torch.nn.Linear(WIDTH, 4 * WIDTH), torch.nn.Linear(4 * WIDTH, WIDTH)

        def forward(self, x: Any) -> Any:
            return x + self.down(torch.relu(self.up(x)))

    last = rank == world - 1
    layers = [Block(), Block()] + ([torch.nn.Linear(WIDTH, WIDTH)] if last else [])
    stage = pl.PipelineStage(torch.nn.Sequential(*layers), rank, world, torch.device("cpu"))
    weights = {p.untyped_storage().data_ptr() for p in stage.submod.parameters()}
    alive: dict[int, int] = {}

    def pack(t: Any) -> Any:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in weights and key not in alive:  # (the weights and their transposes are not activations)
            alive[key] = storage.nbytes()
            weakref.finalize(storage, alive.pop, key, None)
        return t

    def loss_fn(out: Any, target: Any) -> Any:
        return ((out - target) ** 2).mean()

    if schedule == "1f1b":
        sched = pl.Schedule1F1B(stage, n_microbatches=micro_batches, loss_fn=loss_fn)
    else:
        sched = pl.ScheduleInterleavedZeroBubble([stage], n_microbatches=micro_batches, loss_fn=loss_fn)
    batch = torch.randn(micro_batches * TOKENS, WIDTH)
    after = []
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        for _ in range(steps):
            if rank == 0:
                sched.step(batch)
            else:
                sched.step(target=torch.randn(micro_batches * TOKENS, WIDTH))
            after.append(sum(alive.values()))
    queue.put((schedule, rank, after))
    dist.destroy_process_group()


def main() -> None:
    import torch.multiprocessing as mp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    rows = []
    for schedule in ("1f1b", "zero-bubble"):
        port = _free_port()
        procs = [ctx.Process(target=_worker, args=(r, 2, port, schedule, args.micro_batches, args.steps, queue))
                 for r in range(2)]  # fmt: skip
        for p in procs:
            p.start()
        got = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        rows += sorted(got, key=lambda g: g[1])
    one_mb = 2 * TOKENS * 4 * WIDTH * 4  # the two blocks' ReLU outputs of one micro-batch, fp32
    print(f"saved activations alive after each step (KiB; one micro-batch's ReLU outputs: {one_mb // 1024} KiB)")
    print(f"{'schedule':12s} {'rank':>4s}  " + "  ".join(f"step {i + 1:>2d}" for i in range(args.steps)))
    for schedule, rank, after in rows:
        print(f"{schedule:12s} {rank:>4d}  " + "  ".join(f"{b // 1024:>7d}" for b in after))


if __name__ == "__main__":
    main()
