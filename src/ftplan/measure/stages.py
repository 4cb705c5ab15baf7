"""One pipeline rank of a job, measured: its chunks of the model run by torch.distributed.pipelining.

Every rank builds the whole model from the same seed, keeps the chunks of layers it holds
(:func:`ftplan.memory.pipeline.rank_chunks`; the first chunk with the embeddings, the last with the
final norm and lm_head) and drops the rest, as torchtitan's pipeline splitting does. The job's
``grad_accum`` micro-batches run through ``ScheduleGPipe``, ``Schedule1F1B`` or
``ScheduleInterleaved1F1B``; the loss is Hugging Face's (fp32 logits, cross-entropy). What autograd saves
for each chunk's first micro-batch is attributed layer by layer, as for one process, and the rank's
peak is counted op by op over the whole schedule.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

from ftplan.errors import MeasureError
from ftplan.job import ResolvedJob
from ftplan.measure import build
from ftplan.measure.run import (
    Measurement,
    _live_storages,
    _optimizer_tensors,
    _profile_cpu,
    _SavedTracker,
    _tensor_bytes,
    job_batch,
    measurement_of,
)
from ftplan.memory import ModelOutput
from ftplan.memory.pipeline import PipelineSchedule, chunk_layers, rank_chunks

# decoder families whose layers take (hidden_states, position_embeddings=…) and whose model holds
# embed_tokens, layers, norm and rotary_emb (transformers 5)
PIPELINE_MODELS = ("llama", "mistral", "qwen2", "qwen3")


def check_pipeline(job: ResolvedJob) -> None:
    """Refuse, with the reason, a pipeline job ``--nproc`` does not run."""
    tr, lay, arch = job.training, job.layout, job.arch
    if arch.model_type not in PIPELINE_MODELS:
        raise MeasureError(
            f"--nproc measures pipeline stages of {', '.join(PIPELINE_MODELS)} decoders, not {arch.model_type}. "
            "To fix: measure a llama-, mistral- or qwen-shaped model (the estimate covers the others)."
        )
    if lay.dp != 1 or lay.tp != 1 or int(lay.zero) != 0:
        raise MeasureError(
            "--nproc measures a pipeline alone (dp 1, tp 1, zero 0). To fix: set those; the model combines "
            "the stages with data parallelism and ZeRO as measured apart."
        )
    if tr.attention_mask.value != "none" or tr.attention.value != "sdpa":
        raise MeasureError(
            "pipeline stages are measured with SDPA's causal kernel and no mask tensor. To fix: set attention "
            "sdpa and attention_mask none."
        )
    if lay.grad_accum % lay.pp and lay.pp_schedule is PipelineSchedule.INTERLEAVED:
        raise MeasureError(
            f"interleaved-1f1b runs micro-batches in rounds of pp: grad_accum {lay.grad_accum} is not a multiple "
            f"of pp {lay.pp}. To fix: use a multiple."
        )
    if min(chunk_layers(arch.layers, lay.pp, lay.virtual_stages, tr.pipeline_split)) < 1:
        raise MeasureError(
            f"{arch.layers} layers cannot fill pp × virtual_stages = {lay.pp * lay.virtual_stages} chunks. "
            "To fix: use fewer stages or a model with more layers."
        )


def measure_pipeline_rank(job: ResolvedJob, one_rank: ResolvedJob, device: str, steps: int, seed: int,
                          rank: int) -> Measurement:  # fmt: skip
    """Build rank ``rank``'s chunks, run warm-up plus ``steps`` schedule steps, measure them."""
    torch = build.require_torch()
    from torch.distributed import pipelining as pl

    lay = job.layout
    dev = f"cuda:{rank}" if device == "cuda" else "cpu"
    model = build.build_model(one_rank, dev, seed)
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    sizes = chunk_layers(job.arch.layers, lay.pp, lay.virtual_stages, job.training.pipeline_split)
    starts = [0, *accumulate(sizes)]
    n_chunks = len(sizes)
    mine = rank_chunks(rank, lay.pp, lay.virtual_stages)
    chunks = [_chunk(torch, lm, range(starts[c], starts[c + 1]), c == 0, c == n_chunks - 1) for c in mine]
    del model, lm  # what this rank does not hold is freed with them
    holder = _Chunks(torch, chunks)
    stages = [pl.PipelineStage(ch, c, n_chunks, torch.device(dev)) for ch, c in zip(chunks, mine, strict=True)]
    params = [p for p in holder.parameters() if p.requires_grad]
    opt = build.build_optimizer(job, params)

    def loss_fn(logits: Any, labels: Any) -> Any:  # Hugging Face's causal-LM loss: fp32 logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
        if tracker.active:  # the last chunk's first micro-batch: its forward ends with the loss
            tracker.settle(holder)
            tracker.active = False
        return loss

    m = lay.grad_accum
    if lay.pp_schedule is PipelineSchedule.GPIPE:
        schedule = pl.ScheduleGPipe(stages[0], n_microbatches=m, loss_fn=loss_fn)
    elif lay.pp_schedule is PipelineSchedule.ONE_F_ONE_B:
        schedule = pl.Schedule1F1B(stages[0], n_microbatches=m, loss_fn=loss_fn)
    else:
        schedule = pl.ScheduleInterleaved1F1B(stages, n_microbatches=m, loss_fn=loss_fn)
    mb_batch = job_batch(job, dev, seed)  # one micro-batch; the schedule splits m of them
    ids = mb_batch["input_ids"].repeat(m, 1)
    first, last = 0 in mine, n_chunks - 1 in mine
    tracker = _SavedTracker(holder, {"main": [layer for ch in chunks for layer in ch.layers]},
                            job.layout.recompute.value == "full")  # fmt: skip
    seen: set[int] = set()  # chunks whose first micro-batch has run forward

    def start(module: Any, args: Any) -> None:
        if tracking[0] and id(module) not in seen:
            tracker.active, tracker.region = True, "head"

    def stop(module: Any, args: Any, output: Any) -> None:
        if tracking[0]:
            seen.add(id(module))
        if tracker.active and module.lm_head is None:  # (the last chunk's ends after the loss)
            tracker.settle(holder)
            tracker.active = False

    handles = [h for ch in chunks for h in (ch.register_forward_pre_hook(start), ch.register_forward_hook(stop))]
    tracking = [False]
    cast = build.autocast_context(job, device)
    sizes_seen: dict[str, int] = {}

    def step(track: bool) -> None:
        tracking[0] = track
        with torch.autograd.graph.saved_tensors_hooks(tracker.pack, lambda t: t), cast:
            # the last stage keeps every micro-batch's output until the step returns it where the loop
            # keeps the model's output (torch's default return_outputs=True), not otherwise
            kept = job.training.model_output is not ModelOutput.DROPPED
            if first:
                schedule.step(ids, target=ids if last else None, return_outputs=kept)
            elif last:
                schedule.step(target=ids, return_outputs=kept)
            else:
                schedule.step(return_outputs=kept)
        tracking[0] = False
        sizes_seen["gradients"] = _tensor_bytes(p.grad for p in params if p.grad is not None)
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        step(False)  # warm-up: creates the optimizer states and the stages' buffers
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            for i in range(steps):
                step(i == 0)
            torch.cuda.synchronize()
            peak, reserved, categories = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved(), {}
        else:
            live = _live_storages(torch, [*holder.parameters(), *holder.buffers(), *_optimizer_tensors(torch, opt),
                                         ids])  # fmt: skip
            with live:
                peak, categories = _profile_cpu(torch, lambda: [step(i == 0) for i in range(steps)])
            peak, reserved = max(peak, live.peak), None
    finally:
        tracker.close()
        for h in handles:
            h.remove()
    return measurement_of(torch, device, steps, (params, list(holder.parameters())), sizes_seen["gradients"], opt,
                          tracker, (peak, reserved, categories))  # fmt: skip


def _chunk(torch: Any, lm: Any, layers: range, first: bool, last: bool) -> Any:
    """A module running ``layers`` of ``lm`` (with the embeddings when ``first``, the final norm and
    lm_head when ``last``): what one pipeline stage computes."""
    inner = lm.model
    for name in ("embed_tokens", "layers", "norm", "rotary_emb"):
        if not hasattr(inner, name):
            raise MeasureError(f"{type(lm).__name__} has no model.{name}: its pipeline stages cannot be cut here.")

    class Chunk(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_tokens = inner.embed_tokens if first else None
            self.layers = torch.nn.ModuleList([inner.layers[i] for i in layers])
            self.norm = inner.norm if last else None
            self.lm_head = lm.lm_head if last else None
            self.rotary_emb = inner.rotary_emb

        def forward(self, x: Any) -> Any:
            if self.embed_tokens is not None:
                # the schedule hands each micro-batch as a view of the step's batch, which the loop holds
                # anyway: the embedding keeps a copy of this micro-batch's ids, as one process keeps its own
                x = x.clone()
            h = self.embed_tokens(x) if self.embed_tokens is not None else x
            positions = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
            rotary = self.rotary_emb(h, positions)
            for layer in self.layers:
                out = layer(h, attention_mask=None, position_ids=positions, position_embeddings=rotary)
                h = out[0] if isinstance(out, tuple) else out
            return self.lm_head(self.norm(h)) if self.lm_head is not None else h

    return Chunk()


class _Chunks:
    """A rank's chunks seen as one model by the measurement (parameters, buffers, output embeddings)."""

    def __init__(self, torch: Any, chunks: list[Any]) -> None:
        self._all = torch.nn.ModuleList(chunks)
        self._head = next((c.lm_head for c in chunks if c.lm_head is not None), None)

    def parameters(self) -> Any:
        return self._all.parameters()

    def buffers(self) -> Any:
        return self._all.buffers()

    def named_modules(self) -> Any:
        return self._all.named_modules()

    def get_output_embeddings(self) -> Any:
        return self._head
