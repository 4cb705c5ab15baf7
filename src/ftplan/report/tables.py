"""Plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ftplan.bands import MemoryVerdict
from ftplan.memory import Kernels, MemoryEstimate, Method
from ftplan.timing.dispatch import SECONDS_PER_OP
from ftplan.units import GIB

TERM_LABELS = {
    "weights_trainable": "weights (trainable)",
    "weights_frozen": "weights (frozen base)",
    "gradients": "gradients",
    "optimizer_states": "optimizer states",
    "activations": "activations (saved for backward)",
    "logits_loss": "logits + loss (peak)",
    "backward_workspace": "backward working set",
    "autocast_weight_copies": "autocast 16-bit weight copies",
    "zero3_gathered_params": "ZeRO-3 gathered parameters",
    "grad_reduce_buffer": "gradient reduce buffer",
    "dequant_workspace": "NF4 dequantisation buffer",
    "optimizer_step_temporaries": "optimizer-step temporaries",
    "cublas_workspace": "cuBLAS workspace",
    "ddp_gradient_buckets": "DDP gradient buckets",
    "pipeline_recv_buffers": "pipeline receive buffers",
    "deepspeed_buffers": "DeepSpeed ZeRO-3 partitions + reduce bucket",
    "fp8_weight_cache": "cached FP8 weights (Transformer Engine)",
    "logits_kept": "logits the loop keeps",
    "load_unsharded_weights": "loading: whole quantised model",
    "allocator_cache": "allocator cache (reserved − allocated)",
    "cuda_context": "CUDA context (outside PyTorch)",
    "nccl_buffers": "NCCL buffers (outside PyTorch)",
    "deepep_buffers": "DeepEP buffers (outside PyTorch)",
    "optimizer_paged": "paged optimizer states (managed memory)",
    "optimizer_states_offloaded": "optimizer states (offloaded)",
    "fp32_gradients_offloaded": "fp32 gradients (offloaded)",
    "weights_offloaded": "weights (offloaded)",
}


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int] | None = None) -> str:
    """Columns padded to their widest cell; ``right`` holds indices of right-aligned columns."""
    right = right or set()
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def memory_table(est: MemoryEstimate, title: str, verdict: MemoryVerdict | None = None) -> str:
    """The `ftplan memory` breakdown: per-GPU terms, the three statistics, host memory, verdict."""
    rows = [
        [TERM_LABELS.get(k, k), _gib(v), "yes" if k in est.peak_terms else ""] for k, v in est.gpu_terms.items() if v
    ]
    out = [title, "", render_table(["per GPU", "GiB", "at peak"], rows, right={1}), ""]
    stats = [
        ["peak allocated (torch max_memory_allocated)", _gib(est.peak_allocated_bytes)],
        ["peak reserved (torch max_memory_reserved)", _gib(est.peak_reserved_bytes)],
        ["device total (nvidia-smi)", _gib(est.device_total_bytes)],
    ]
    out.append(render_table(["statistic", "GiB"], stats, right={1}))
    out.append(f"peak reached at: {est.peak_phase}")
    if est.host_terms:
        host = [[TERM_LABELS.get(k, k), _gib(v)] for k, v in est.host_terms.items()]
        if est.host_memory_bytes is not None:
            host.append(["node RAM", _gib(est.host_memory_bytes)])
        out += ["", render_table(["host memory per node", "GiB"], host, right={1})]
    for note in est.notes:
        out.append(f"note: {note}")
    if verdict is not None:
        out.append(f"device total: {verdict.band_text()}")
    if est.gpu_memory_bytes is not None:
        head = est.headroom_bytes or 0
        fits = est.fits if verdict is None else verdict.fits
        line = (
            f"{'FITS' if fits else 'DOES NOT FIT'}: {_gib(est.device_total_bytes)} GiB of {_gib(est.gpu_memory_bytes)} "
            f"GiB ({'headroom' if head >= 0 else 'short by'} {_gib(abs(head))} GiB)"
        )
        if verdict is not None:
            line += (
                f"; under {verdict.policy.label} it needs {_gib(verdict.required_bytes)} GiB; {verdict.chance_text()}"
            )
        out += ["", line]
        if not est.host_fits:
            out[-1] += (
                f"; host memory per node {_gib(est.host_bytes_per_node)} GiB > {_gib(est.host_memory_bytes or 0)} GiB"
            )
    return "\n".join(out)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.2f}"


def _err(e: float | None) -> str:
    if e is None:
        return "—"
    return "inf" if e == float("inf") else f"{100 * e:+.1f}%"


def measure_table(c: Any) -> str:
    """The `ftplan measure` comparison: estimate and measurement, term by term, in MiB."""
    m = c.measurement
    t, lay = c.job.training, c.job.layout
    title = (
        f"{c.job.name} · {t.method.value} · {t.precision_label} · {t.optimizer.value} · "
        f"seq {t.seq_len} × micro-batch {lay.micro_batch} · recompute {lay.recompute.value} · "
        f"attention {t.attention.value} · measured on {m.device}, {m.steps} step(s) after a warm-up"
    )
    rows = [[r.term, _mib(r.estimate), _mib(r.measured), _err(r.rel_error)] for r in c.rows]
    out = [title, "", render_table(["term", "estimate MiB", "measured MiB", "error"], rows, right={1, 2, 3})]
    if m.peak_categories:
        cats = ", ".join(f"{k} {_mib(v)}" for k, v in sorted(m.peak_categories.items(), key=lambda kv: -kv[1]))
        out.append(f"\nprofiler categories at the peak (MiB): {cats}")
    if m.ops is not None:
        (f, b), (mf, mb) = m.ops, c.model_ops
        cost = (
            f"under kernels: eager each costs {SECONDS_PER_OP * 1e6:.1f} µs in the time model"
            if t.kernels is Kernels.EAGER
            else "under kernels: fused the time model charges nothing for them"
        )
        out.append(
            f"operations a micro-step dispatches: forward {f:,} (time model {mf:,.0f}), backward {b:,} "
            f"(time model {mb:,.0f}); {cost}"
        )
    if c.traffic is not None:
        ((lf, lb), (hf, hb)), ((mf, mb), (mhf, mhb)) = c.traffic, c.model_traffic
        frozen = t.method is not Method.FULL and t.kernels is Kernels.EAGER
        head = (
            f"the head, less what frozen embeddings spare the first layer's backward, {hf + hb:,.0f} (time model "
            f"{mhf + mhb:,.0f}: full fine-tuning's head, an upper bound)"
            if frozen
            else f"the head (embeddings, final norm, loss) {hf + hb:,.0f} (time model {mhf + mhb:,.0f})"
        )
        out.append(
            f"bytes a token moves through memory-bound operations: a layer forward {lf:,.0f} (time model {mf:,.0f}), "
            f"backward {lb:,.0f} (time model {mb:,.0f}); {head}"
        )
    if m.step_seconds is not None:
        step = f"step time: {m.step_seconds:.4f} s measured"
        if c.model_step is None:
            step += "; this GPU is not in the catalog, so the time model has no figure for it"
        else:
            ts = c.model_step
            parts = ", ".join(f"{p} {float(getattr(ts, p)[0]):.4f}" for p in ("compute", "dispatch", "other")
                              if float(getattr(ts, p)[0]))  # fmt: skip
            step += f"; time model on {c.model_gpu}: {float(ts.total[0]):.4f} s ({parts})"
        out.append(step)
    if m.device == "cpu":
        out.append("note: a CPU has no CUDA context, NCCL buffers or caching allocator; the estimate leaves them out.")
    return "\n".join(out)


def dist_measure_table(d: Any) -> str:
    """`ftplan measure --nproc`: every rank's peak, then the worst rank term by term."""
    lay = d.job.layout
    zero = {0: "DDP", 1: "DDP + ZeroRedundancyOptimizer", 2: "FSDP2 (no reshard after forward)", 3: "FSDP2"}
    worst = d.worst
    rows = [
        [str(i), _mib(c.row("peak allocated").estimate), _mib(c.measurement.peak_allocated),
         _err(c.row("peak allocated").rel_error), "yes" if c is worst else ""]
        for i, c in enumerate(d.ranks)
    ]  # fmt: skip
    headers = ["rank", "estimate MiB", "measured MiB", "error", "highest"]
    if lay.ep > 1:  # the rows routing sent each rank's experts, at which its estimate is made
        headers.insert(1, "expert load")
        for row, c in zip(rows, d.ranks, strict=True):
            row.insert(1, f"{c.measurement.expert_load:.3f}")
    how = f"ZeRO-{int(lay.zero)} as {zero[int(lay.zero)]}"
    if worst.measurement.states is not None:  # DeepSpeed's engine held them
        how = (f"ZeRO-{int(lay.zero)} as DeepSpeed's engine (the config `ftplan export --to deepspeed` writes; "
               "estimated with DeepSpeed's own buffers)")  # fmt: skip
    if lay.ep > 1:
        how += f", experts over {lay.ep} ranks (transformers' EP)"
    if lay.replicas > 1:
        how += f", HSDP: {lay.replicas} replicas of {lay.shard}-rank shard groups"
    if lay.cp > 1:
        how += f", each sequence over {lay.cp} ranks (DeepSpeed-Ulysses)"
    if lay.pp > 1:
        chunks = f", {lay.virtual_stages} chunks a rank" if lay.virtual_stages > 1 else ""
        chunks += ", weighted split" if d.job.training.pipeline_split.value == "weighted" else ""
        how = f"{lay.pp} pipeline stages, {lay.pp_schedule.value}{chunks}, {lay.grad_accum} micro-batches a step"
    if lay.tp > 1:
        fsdp = f", {zero[int(lay.zero)]} over {lay.dp} data-parallel ranks (a (dp, tp) mesh)" if lay.dp > 1 else ""
        how = (f"tensor parallel over {lay.tp} ranks (DTensor: sequence parallelism, vocabulary-parallel loss; "
               f"estimated as sequence_parallel {d.job.training.sequence_parallel.value}){fsdp}")  # fmt: skip
    out = [
        f"{len(d.ranks)} ranks · {how}",
        "",
        render_table(headers, rows, right=set(range(1, len(headers) - 1))),
        "",
        f"rank {d.ranks.index(worst)} (the highest peak):",
        measure_table(worst),
    ]
    return "\n".join(out)


# A step whose per-operation dispatch is more than this share is called launch-bound in `ftplan fit`
LAUNCH_BOUND = 0.2


def fit_table(result: Any, best: Any, by: str) -> str:
    """The `ftplan fit` ranking: one row per layout, then the pools and the excluded families."""
    job = result.job
    t = job.training
    seq = f"seq {t.seq_len}"
    if t.data is not None:  # the data's lengths, and how micro-batches hold them
        p95 = f", p95 {t.data.p95:,}" if t.data.p95 else ""
        of = f" of {len(t.data.lengths):,} lengths" if t.data.lengths else ""
        seq += f" (mean {t.data.mean:,}{p95} tokens{of}, {'packed' if t.data.packing else 'padded'})"
    engine = f" · engine {t.engine.value}" if t.engine.value != "torch" else ""
    if t.attention_kernel.value != "flash2":
        engine += f" · {t.attention_kernel.value} attention"
    if t.tp_overlap:
        engine += " · TP collectives overlapped"
    if t.param_gather_overlap:
        engine += " · parameter gather overlapped"
    if t.pipeline_split.value != "even":
        engine += f" · {t.pipeline_split.value} pipeline split"
    title = (
        f"{job.name} · {t.method.value} · {t.precision_label} · {seq}{engine} · global batch "
        f"{job.global_batch} · {job.tokens / 1e9:.3g}B tokens · ranked by {by}"
    )
    rows = [
        [
            r.pool, str(r.gpus), str(r.tp), str(r.pp), str(r.cp), str(r.ep),
            f"Z{r.zero}" + (f"/{r.dp_shard}" if r.dp_shard else ""),
            r.offload, r.recompute,
            f"{r.micro_batch}×{r.grad_accum}",
            f"{r.device_bytes / GIB:.1f}", f"{r.required_bytes / GIB:.1f}", f"{100 * r.fit_probability:.0f}%",
            f"{r.tokens_per_s:,.0f}", f"{r.step_s:.2f}", f"{100 * r.mfu:.0f}%",
            f"{r.hours:,.1f}", f"{r.hours_band_low:,.1f}–{r.hours_band_high:,.1f}",
            "—" if r.usd != r.usd else f"{r.usd:,.0f}",
        ]
        for r in best.itertuples()
    ]  # fmt: skip
    headers = ["pool", "GPUs", "tp", "pp", "cp", "ep", "ZeRO", "offload", "recompute", "mb×acc", "GiB/GPU",
               "need GiB", "P(fit)", "tokens/s", "step s", "MFU", "hours", "90% band", "USD"]  # fmt: skip
    out = [title, ""]
    out.append(render_table(headers, rows, right=set(range(1, 19)) - {6, 7, 8}) if rows else "no layout fits")
    out.append(f"\n{len(result.layouts):,} of {result.evaluated:,} layouts fit under {result.policy.label}.")
    if not best.empty:
        out.append(
            "need GiB: the device memory the policy asks a GPU to hold; P(fit): the share of the memory band's "
            "published runs whose error would still fit the card; MFU: the job's model FLOPs a second (weight matmuls "
            "and causal attention, no recomputation) over the GPUs' dense peak in the job's 16-bit or fp32 precision; "
            "90% band: the hours' band."
        )
        for what, col in (("memory band", "memory_band"), ("time band", "time_band")):
            out += [f"{what}: {text}" for text in dict.fromkeys(best[col])]
        first = best.iloc[0]
        if first["dispatch_s"] > LAUNCH_BOUND * first["step_s"]:
            out.append(
                f"launch-bound: {first['dispatch_s'] / first['step_s']:.0%} of the first layout's step is eager "
                "PyTorch's per-operation dispatch (kernels: eager); larger micro-batches spread it over more tokens, "
                "and a compiled or fused stack (kernels: fused) launches a fraction of the kernels."
            )
    if not best.empty:
        out += result.time_notes
    for pool in result.pools:
        out.append(f"pool {pool.name}: {pool.hardware_note}; {pool.price_note or 'no price'}")
    if result.excluded:
        out.append("\nexcluded:")
        out += [f"  {line}" for line in result.excluded]
    return "\n".join(out)
