"""The time model's per-operation term: its counts against operations counted in real micro-steps, its
arithmetic, and `kernels: eager | fused`."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.errors import FtplanError
from ftplan.fit import fit_job, gpu_pool
from ftplan.job import resolve_job
from ftplan.memory.setup import Kernels
from ftplan.schema.job import parse_job
from ftplan.timing import dispatch
from ftplan.timing import model as tm

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def counted(benchmark_script):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    bench = benchmark_script("dispatch_counts")
    warnings.filterwarnings("ignore")
    llama = bench.rows(["llama"], list(bench.VARIANTS))
    others = bench.rows(["qwen3", "mixtral", "gpt_neox"], ["full, bf16-mixed", "LoRA all-linear, bf16-mixed"])
    return llama, others


def test_the_table_is_what_llama_layers_dispatch(counted):
    llama, _ = counted
    for family, variant, measured, modelled in llama:
        assert modelled == pytest.approx(measured), (family, variant)


def test_other_families_bases_are_measured_and_their_lora_increments_carry(counted):
    _, others = counted
    for family, variant, (mf, mb), (ef, eb) in others:
        if variant.startswith("full"):
            assert (ef, eb) == (mf, mb), family  # each family's base is its own measurement
        else:  # LoRA's increments, read from Llama, within 16% of what the family dispatches
            assert (ef + eb) == pytest.approx(mf + mb, rel=0.16), (family, variant)


def _job(catalog, **fields):
    data = {"model": "llama-3.1-8b", "method": "lora", "lora": {"rank": 16, "target_modules": "all-linear"},
            "precision": "bf16-mixed", "seq_len": 2048, "micro_batch": 1, "grad_accum": 4,
            "layout": {"recompute": "full"}} | fields  # fmt: skip
    return resolve_job(parse_job(data, "job"), catalog, "job")


def _times(job, hw, **layout):
    lay = {"dp": 1, "tp": 1, "zero": 0, "offload": 0, "recompute": 2, "micro_batch": 1, "grad_accum": 4} | layout
    flops = tm.job_flops(job.arch, job.training)
    return tm.step_times(flops, job.arch, job.training, hw, *(np.array([lay[k]]) for k in lay))


HW = tm.Hardware(peak_tflops=989.0, efficiency=0.5, hbm_gbs=3350.0, intra_node_gbs=450.0, host_link_gbs=64.0,
                 gpus_per_node=8, network_gbps=None)  # fmt: skip


def test_the_optimizer_table_is_what_pytorchs_optimizers_move(benchmark_script):
    pytest.importorskip("torch")
    bench = benchmark_script("dispatch_counts")
    for opt, master, measured, modelled in bench.optimizer_rows():
        assert modelled == pytest.approx(measured, rel=2e-3), (opt, master)


def test_the_optimizer_step_moves_its_bytes_over_the_parameters_a_gpu_updates(catalog):
    data = {"model": "llama-3.1-8b", "seq_len": 2048, "precision": "bf16-mixed", "kernels": "fused"}
    job = resolve_job(parse_job(data, "j"), catalog, "j")
    hw = tm_hardware(catalog)
    # (the micro-steps' memory-bound operations, timing.traffic, are another term of ``other``: left out here)
    flops = dataclasses.replace(tm.job_flops(job.arch, job.training), traffic_forward=0.0, traffic_backward=0.0,
                                traffic_head=0.0)  # fmt: skip
    lay = [np.array([x]) for x in (8, 1, 3, 0, 0, 1, 4)]  # dp 8, ZeRO-3: an eighth of the parameters a GPU
    times = tm.step_times(flops, job.arch, job.training, hw, *lay)
    assert times.other[0] == pytest.approx(flops.trainable / 8 * 81.0 / (hw.hbm_gbs * 1e9), rel=1e-12)
    offloaded = tm.step_times(flops, job.arch, job.training, hw, *lay[:3], np.array([1]), *lay[4:])
    assert offloaded.other[0] == 0.0  # the CPU runs it (the offload term)
    ddp = tm.step_times(flops, job.arch, job.training, hw, lay[0], lay[1], np.array([0]), *lay[3:])
    assert ddp.other[0] == pytest.approx(8 * times.other[0], rel=1e-12)  # every replica updates every parameter


def test_dispatch_time_in_exact_arithmetic(catalog):
    job = _job(catalog)
    # a Llama layer under LoRA on all 7 linears, autocast: forward 48 + 7·8 − 7·10/7 = 94, backward
    # 87 + 7·10 − 7·27/7 = 130; full recomputation runs the forward again: 94·2 + 130 = 318 a layer
    assert dispatch.layer_ops(job.arch, job.training) == pytest.approx((94, 130))
    micro = 32 * 318 + 34 - 13  # 32 layers, and the head with frozen embeddings (backward stops at layer 0)
    step = 4 * micro + 13  # 4 micro-steps and the multi-tensor AdamW step
    t = _times(job, HW)
    assert t.dispatch[0] == pytest.approx(step * dispatch.SECONDS_PER_OP, rel=1e-12)
    assert t.total[0] == pytest.approx(t.compute[0] + t.communication[0] + t.other[0] + t.dispatch[0], rel=1e-12)


def test_qlora_dequantises_each_frozen_linear_each_pass_and_forloop_optimizers_count_tensors(catalog):
    lora, qlora = _job(catalog), _job(catalog, method="qlora")
    f, b = dispatch.layer_ops(lora.arch, lora.training)
    assert dispatch.layer_ops(qlora.arch, qlora.training) == pytest.approx((f + 7, b + 7))
    forloop = _job(catalog, optimizer="adamw-forloop")
    # LoRA A and B of 7 linears in 32 layers, 9 operations each
    assert dispatch.step_ops(forloop.arch, forloop.training) == 9 * 2 * 7 * 32
    full = _job(catalog, method="full", lora=None, optimizer="adamw-forloop")
    assert dispatch.step_ops(full.arch, full.training) == 9 * (32 * (7 + 2) + 3)
    adafactor = _job(catalog, method="full", lora=None, optimizer="adafactor")
    assert dispatch.step_ops(adafactor.arch, adafactor.training) == 17 * (32 * (7 + 2) + 3)


def test_a_fused_stack_pays_no_dispatch_and_an_eager_one_never_runs_faster(catalog):
    eager, fused = _job(catalog), _job(catalog, kernels="fused")
    assert fused.training.kernels is Kernels.FUSED
    te, tf = _times(eager, HW), _times(fused, HW)
    assert tf.dispatch[0] == 0
    assert te.total[0] > tf.total[0]
    # the rest differs by the memory-bound operations alone: an eager stack's measured bytes, a fused one's fewer
    assert tf.other[0] < te.other[0]
    assert te.total[0] - te.dispatch[0] - te.other[0] == pytest.approx(tf.total[0] - tf.other[0])


@settings(max_examples=30, deadline=None)
@given(mb=st.integers(1, 8), factor=st.integers(2, 4), accum=st.integers(1, 8))
def test_larger_micro_batches_never_pay_more_dispatch_a_token(catalog, mb, factor, accum):
    job = _job(catalog)
    small = _times(job, HW, micro_batch=mb, grad_accum=accum * factor)
    large = _times(job, HW, micro_batch=mb * factor, grad_accum=accum)
    assert large.dispatch[0] <= small.dispatch[0]  # the same tokens a step in fewer, larger micro-steps


def test_fit_reports_the_dispatch_time_and_small_micro_steps_pay_it(catalog):
    def frame(**fields):
        job = _job(catalog, micro_batch=1, seq_len=256, grad_accum=8, tokens=1e7, **fields)
        return fit_job(job, [gpu_pool(catalog, "h100-sxm-80gb", gpus=1)]).layouts

    eager = frame()
    assert (eager["dispatch_s"] > 0).all()
    # 256 tokens a micro-step of an 8B LoRA: the launches outweigh the arithmetic
    assert (eager["dispatch_s"] > eager["compute_s"]).any()
    assert (frame(kernels="fused")["dispatch_s"] == 0).all()


def test_a_bad_kernels_value_is_one_line(catalog):
    with pytest.raises(FtplanError, match="kernels"):
        _job(catalog, kernels="compiled")


@pytest.mark.parametrize(
    ("fmt", "name", "change"),
    [("torchtune", "llama3_1-8b-lora-single-device.yaml", {"compile": True}),
     ("trl", "sft_qwen2.5-7b_lora.json", {"use_liger_kernel": True}),
     ("axolotl", "llama3-8b-lora.yml", {"torch_compile": True})],
)  # fmt: skip
def test_imported_configs_that_compile_or_fuse_say_kernels_fused(catalog, tmp_path, fmt, name, change):
    import json

    from ftplan.importers import import_config
    from ftplan.io import read_yaml

    src = ROOT / "tests/configs" / fmt / name
    raw = json.loads(src.read_text()) if src.suffix == ".json" else read_yaml(src)
    path = tmp_path / name
    path.write_text(json.dumps(raw | change))  # (JSON is YAML too)
    for sibling in src.parent.iterdir():  # configs the config names (DeepSpeed files)
        if sibling.name != name and not (tmp_path / sibling.name).exists():
            (tmp_path / sibling.name).symlink_to(sibling)
    assert import_config(fmt, path, catalog).job["kernels"] == "fused"
    if fmt == "torchtune":  # its stated compile: False
        assert import_config(fmt, src, catalog).job["kernels"] == "eager"


TINY_4 = {
    "model_type": "llama", "hidden_size": 256, "intermediate_size": 704, "num_attention_heads": 8,
    "num_key_value_heads": 2, "num_hidden_layers": 4, "vocab_size": 1000, "tie_word_embeddings": False,
}  # fmt: skip


@pytest.mark.parametrize("extra", [{}, {"method": "lora", "lora": {"rank": 8, "target_modules": "all-linear"}},
                                   {"layout": {"recompute": "full"}}])  # fmt: skip
def test_measure_counts_a_micro_steps_operations_beside_the_time_model(catalog, extra):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from ftplan.measure import measure_job

    data = {"architecture": TINY_4, "precision": "bf16-mixed", "seq_len": 64, "micro_batch": 2, "dropout": False}
    c = measure_job(resolve_job(parse_job(data | extra, "tiny"), catalog, "tiny"), count_ops=True)
    (f, b), (mf, mb) = c.measurement.ops, c.model_ops
    assert mf == pytest.approx(f, rel=0.02) and mb == pytest.approx(b, rel=0.02)  # the head's few ops apart
    assert c.measurement.step_seconds is None and c.model_step is None  # (timed on a GPU only)


def test_a_cuda_device_is_found_in_the_catalog_and_timed_by_the_model(catalog):
    from ftplan.measure.run import catalog_gpu, model_step_times

    assert catalog_gpu("NVIDIA H100 80GB HBM3") == "h100-sxm-80gb"
    assert catalog_gpu("NVIDIA H200") == "h200-sxm-141gb"
    assert catalog_gpu("Some Accelerator 9000") is None
    job = _job(catalog, micro_batch=2, grad_accum=2)
    t = model_step_times(job, "h100-sxm-80gb")
    expected = _times(job, tm_hardware(catalog), micro_batch=2, grad_accum=2)
    assert t.total[0] == pytest.approx(expected.total[0], rel=1e-12) and t.dispatch[0] > 0


def tm_hardware(catalog):
    from ftplan.fit import hardware
    from ftplan.memory.setup import Precision

    return hardware(gpu_pool(catalog, "h100-sxm-80gb", gpus=1), Precision.BF16_MIXED)
