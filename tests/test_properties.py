"""Invariants of the memory model over random jobs (hypothesis)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.catalog import load_catalog
from ftplan.errors import JobError
from ftplan.memory import (
    Attention,
    AttentionMask,
    Layout,
    LoraSetup,
    Method,
    ModelOutput,
    Offload,
    Optimizer,
    Precision,
    Recompute,
    Training,
    ZeroGrad,
    ZeroStage,
    estimate_memory,
)

CATALOG = load_catalog(user_models=None)
DECODERS = sorted(k for k, m in CATALOG.models.items() if m.config["model_type"] not in ("t5", "bert", "roberta"))
ALL = sorted(CATALOG.models)

models = st.sampled_from(DECODERS)
precisions = st.sampled_from([Precision.BF16_MIXED, Precision.BF16_PURE, Precision.FP16_MIXED])
recomputes = st.sampled_from(list(Recompute))
seqs = st.sampled_from([256, 512, 1024, 2048, 4096])
mbs = st.integers(1, 8)


@settings(max_examples=60, deadline=None)
@given(models, precisions, recomputes, seqs, mbs, st.sampled_from([2, 4, 8]))
def test_higher_zero_stage_never_raises_memory(model, precision, recompute, seq, mb, dp):
    arch = CATALOG.architecture(model)
    tr = Training(precision=precision, seq_len=seq)
    totals = [
        estimate_memory(arch, tr, Layout(dp=dp, zero=ZeroStage(z), recompute=recompute, micro_batch=mb,
                                         gpus_per_node=8)).peak_allocated_bytes
        for z in range(4)
    ]  # fmt: skip
    assert totals == sorted(totals, reverse=True)


@settings(max_examples=60, deadline=None)
@given(models, precisions, seqs, mbs, st.sampled_from([2, 4, 8]))
def test_offload_conserves_bytes_across_tiers(model, precision, seq, mb, dp):
    arch = CATALOG.architecture(model)
    tr = Training(precision=precision, seq_len=seq)
    lay = dict(dp=dp, zero=ZeroStage(3), micro_batch=mb, gpus_per_node=dp)
    on = estimate_memory(arch, tr, Layout(**lay))
    off = estimate_memory(arch, tr, Layout(**lay, offload=Offload.OPTIMIZER_PARAMS))
    states_on = on.gpu_terms["optimizer_states"] + on.gpu_terms["weights_trainable"]
    states_off_gpu = off.gpu_terms["optimizer_states"] + off.gpu_terms["weights_trainable"]
    host_states = off.host_terms["optimizer_states_offloaded"] + off.host_terms["weights_offloaded"]
    assert states_off_gpu == 0
    assert abs(host_states - dp * states_on) <= 4 * dp  # per-GPU shards summed over the node
    assert off.peak_allocated_bytes <= on.peak_allocated_bytes


@settings(max_examples=60, deadline=None)
@given(models, seqs, mbs, recomputes)
def test_qlora_le_lora_le_full(model, seq, mb, recompute):
    arch = CATALOG.architecture(model)
    lora = LoraSetup(rank=16, target_modules=("all-linear",))
    lay = Layout(micro_batch=mb, recompute=recompute)
    peaks = [
        estimate_memory(
            arch, Training(method=m, precision=Precision.BF16_PURE, seq_len=seq, lora=lora), lay
        ).peak_allocated_bytes
        for m in (Method.QLORA, Method.LORA, Method.FULL)
    ]
    assert peaks == sorted(peaks)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(ALL), precisions, recomputes, st.sampled_from([128, 512, 1024]), mbs)
def test_memory_grows_with_sequence_and_micro_batch(model, precision, recompute, seq, mb):
    arch = CATALOG.architecture(model)
    lay = Layout(micro_batch=mb, recompute=recompute)
    est = estimate_memory(arch, Training(precision=precision, seq_len=seq), lay).peak_allocated_bytes
    longer = estimate_memory(arch, Training(precision=precision, seq_len=2 * seq), lay).peak_allocated_bytes
    bigger = estimate_memory(
        arch, Training(precision=precision, seq_len=seq), Layout(micro_batch=mb + 1, recompute=recompute)
    ).peak_allocated_bytes
    assert longer >= est and bigger >= est


@settings(max_examples=60, deadline=None)
@given(models, st.sampled_from(list(Method)), precisions, recomputes, seqs, mbs, st.sampled_from([0, 1, 3]))
def test_adamw_kernels_order_fused_forloop_foreach(model, method, precision, recompute, seq, mb, zero):
    from ftplan.memory import Optimizer

    arch = CATALOG.architecture(model)
    lora = LoraSetup(rank=16, target_modules=("all-linear",)) if method is not Method.FULL else None
    lay = Layout(dp=2 if zero else 1, zero=ZeroStage(zero), micro_batch=mb, recompute=recompute, gpus_per_node=8)
    peaks = [
        estimate_memory(arch, Training(method=method, precision=precision, optimizer=opt, seq_len=seq, lora=lora),
                        lay).peak_allocated_bytes
        for opt in (Optimizer.ADAMW_FUSED, Optimizer.ADAMW_FORLOOP, Optimizer.ADAMW)
    ]  # fmt: skip
    assert peaks == sorted(peaks)


@settings(max_examples=60, deadline=None)
@given(models, st.sampled_from([Precision.BF16_MIXED, Precision.FP16_MIXED]), recomputes, seqs, mbs)
def test_an_fp32_base_never_needs_less(model, precision, recompute, seq, mb):
    arch = CATALOG.architecture(model)
    lay = Layout(micro_batch=mb, recompute=recompute)
    peaks = [
        estimate_memory(
            arch,
            Training(method=Method.LORA, precision=precision, seq_len=seq,
                     lora=LoraSetup(rank=16, target_modules=("all-linear",), base_fp32=fp32)),
            lay,
        ).peak_allocated_bytes
        for fp32 in (False, True)
    ]  # fmt: skip
    assert peaks[0] < peaks[1]


_JOBS = st.fixed_dictionaries(
    {
        "model": st.sampled_from(ALL),
        "method": st.sampled_from(list(Method)),
        "precision": st.sampled_from(list(Precision)),
        "optimizer": st.sampled_from(list(Optimizer)),
        "attention": st.sampled_from(list(Attention)),
        "mask": st.sampled_from(list(AttentionMask)),
        "zero_grad": st.sampled_from(list(ZeroGrad)),
        "output": st.sampled_from(list(ModelOutput)),
        "seq": st.sampled_from([64, 1000, 4096, 8192]),
        "mb": st.integers(1, 4),
        "accum": st.sampled_from([1, 4]),
        "dp": st.sampled_from([1, 2, 8]),
        "zero": st.sampled_from(list(ZeroStage)),
        "offload": st.sampled_from(list(Offload)),
        "recompute": st.sampled_from(list(Recompute)),
        "targets": st.sampled_from([("all-linear",), ("q_proj", "v_proj")]),
        "dropout": st.sampled_from([0.0, 0.1]),
        "device": st.sampled_from(["hopper", "ampere", "cpu"]),
    }
)


def _job(d: dict) -> tuple:
    arch = CATALOG.architecture(d["model"])
    names = arch.linear_names
    targets = d["targets"] if all(t in names or t == "all-linear" for t in d["targets"]) else ("all-linear",)
    lora = LoraSetup(rank=8, target_modules=targets, dropout=d["dropout"])
    tr = Training(
        method=d["method"], precision=d["precision"], optimizer=d["optimizer"], seq_len=d["seq"],
        attention=d["attention"], attention_mask=d["mask"], zero_grad=d["zero_grad"],
        model_output=d["output"],
        lora=None if d["method"] is Method.FULL else lora,
    )  # fmt: skip
    lay = Layout(
        dp=d["dp"], zero=d["zero"] if d["dp"] > 1 else ZeroStage.NONE,
        offload=d["offload"] if d["dp"] > 1 and d["zero"] >= ZeroStage.OPTIMIZER else Offload.NONE,
        recompute=d["recompute"], micro_batch=d["mb"], grad_accum=d["accum"], gpus_per_node=min(d["dp"], 8),
    )  # fmt: skip
    return arch, tr, lay


@settings(max_examples=200, deadline=None)
@given(_JOBS)
def test_no_term_is_ever_negative(d):
    """Whatever the job, every term, phase and host term is a byte count: never below zero."""
    arch, tr, lay = _job(d)
    try:
        est = estimate_memory(arch, tr, lay, gpu_arch=d["device"])
    except JobError:  # a combination the model refuses with its reason (tested elsewhere)
        return
    for where in (est.gpu_terms, est.host_terms, est.phase_bytes, est.activation_terms):
        assert all(v >= 0 for v in where.values()), where
    assert 0 <= est.peak_allocated_bytes <= est.peak_reserved_bytes <= est.device_total_bytes


@settings(max_examples=120, deadline=None)
@given(_JOBS)
def test_each_mechanism_moves_the_estimate_the_way_the_measurements_do(d):
    """The grid measured each option adding memory: a mask under SDPA, zeroed (not freed) gradients,
    fp32 adapters over a bf16 model, Gemma 2's soft-capping; none of them can lower an estimate."""
    arch, tr, lay = _job(d)
    dev = d["device"]

    def peak(a, t) -> int | None:
        try:
            return estimate_memory(a, t, lay, gpu_arch=dev).peak_allocated_bytes
        except JobError:
            return None

    base = peak(arch, tr)
    if base is None:
        return
    for option in (
        {"attention_mask": AttentionMask.PADDED},
        {"zero_grad": ZeroGrad.ZEROS},
        {"model_output": ModelOutput.KEPT_FP32},
    ):
        assert peak(arch, replace(tr, **option)) >= base
    if tr.method is not Method.FULL and tr.precision is Precision.BF16_PURE:
        fp32 = peak(arch, replace(tr, precision=Precision.BF16_FP32_ADAPTERS))
        assert fp32 is None or fp32 >= base
    if arch.model_type == "gemma2":
        uncapped = replace(arch, final_softcap=False, attn_softcap=False)
        assert peak(uncapped, tr) <= base
