"""Invariants of the memory model over random jobs (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.catalog import load_catalog
from ftplan.memory import (
    Layout,
    LoraSetup,
    Method,
    Offload,
    Precision,
    Recompute,
    Training,
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
