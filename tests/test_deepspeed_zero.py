"""DeepSpeed's ZeRO engine beside the memory model (ftplan.memory.deepspeed): the bucket sizes exports write, the
buffers DeepSpeed holds beyond the estimate, and the export's refusal where the run's headroom cannot hold them.
What the engine really holds is measured in tests/test_measure_dist.py (``llama-full-mixed-zero3-deepspeed``)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ftplan
from ftplan.errors import FtplanError, JobError
from ftplan.export.launchers import deepspeed_files, torchrun_files
from ftplan.export.runs import run_exports
from ftplan.fit import fit_job, instance_pool
from ftplan.job import resolve_job
from ftplan.memory import Engine, Offload, Recompute, ZeroStage, estimate_memory
from ftplan.memory.deepspeed import block_params, extra_bytes, zero_settings
from ftplan.memory.params import split_params
from ftplan.memory.setup import Precision
from ftplan.schema.job import parse_job
from tests.test_export import ROOT


def _job(catalog, **changes):
    data = {"model": "llama-3.1-8b", "method": "full", "precision": "bf16-mixed", "seq_len": 2048,
            "micro_batch": 1, "layout": {"dp": 8, "zero": 3}} | changes  # fmt: skip
    return resolve_job(parse_job(data, "job"), catalog, "job")


def test_buckets_are_the_largest_block(catalog):
    job = _job(catalog)
    a = job.arch
    # Llama 3.1 8B: q, o 4096²; k, v 4096 × 1024; gate, up, down 4096 × 14336; two 4096 norms
    block = 2 * 4096**2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    assert block_params(a) == block
    assert zero_settings(a, 2) == {"reduce_bucket_size": block, "allgather_bucket_size": block}
    z3 = zero_settings(a, 3)
    assert z3["stage3_prefetch_bucket_size"] == block and z3["stage3_max_live_parameters"] == 2 * block
    assert z3["stage3_max_reuse_distance"] == 0 and z3["stage3_param_persistence_threshold"] == 0


def test_zero3_adds_its_16bit_partitions_and_one_bucket(catalog):
    job = _job(catalog)
    psi, block = job.arch.total_params, block_params(job.arch)
    assert extra_bytes(job.arch, psi, Precision.BF16_MIXED, 3, 8) == {
        "deepspeed_partitions": 2 * 2 * psi // 8, "deepspeed_reduce_bucket": 2 * block}  # fmt: skip
    assert extra_bytes(job.arch, psi, Precision.FP32, 3, 8) == {
        "deepspeed_partitions": 2 * 4 * psi // 8, "deepspeed_reduce_bucket": 4 * block}  # fmt: skip
    for zero in (0, 1, 2):  # (measured within the estimate: see ftplan.memory.deepspeed)
        assert extra_bytes(job.arch, psi, Precision.BF16_MIXED, zero, 8) == {}
    lora = _job(catalog, method="lora", lora={"rank": 16})
    trainable = split_params(lora.arch, lora.training).trainable
    assert trainable < psi // 100
    assert extra_bytes(lora.arch, trainable, Precision.BF16_MIXED, 3, 8)["deepspeed_partitions"] == 4 * trainable // 8


@settings(max_examples=25, deadline=None)
@given(dp=st.sampled_from([2, 4, 8, 16, 64]), zero=st.integers(0, 3), fp32=st.booleans())
def test_engine_deepspeed_adds_its_buffers_to_every_moment(catalog, dp, zero, fp32):
    job = _job(catalog, precision="fp32" if fp32 else "bf16-mixed", layout={"dp": dp, "zero": zero})
    ds_training = dataclasses.replace(job.training, engine=Engine.DEEPSPEED)
    torch_est = estimate_memory(job.arch, job.training, job.layout)
    ds = estimate_memory(job.arch, ds_training, job.layout)
    add = ds.gpu_terms["deepspeed_buffers"]
    want = extra_bytes(job.arch, job.arch.total_params, job.training.precision, zero, dp)
    assert add == sum(want.values()) and (add > 0) == (zero == 3)
    assert torch_est.gpu_terms["deepspeed_buffers"] == 0
    # held from the engine's start: every moment, the reserved and device totals rise by exactly them
    assert all(ds.phase_bytes[k] == v + add for k, v in torch_est.phase_bytes.items())
    assert ds.peak_allocated_bytes == torch_est.peak_allocated_bytes + add
    assert ds.device_total_bytes == torch_est.device_total_bytes + add
    # more ranks never raise what the partitions hold
    if dp > 2:
        fewer = estimate_memory(job.arch, ds_training, dataclasses.replace(job.layout, dp=dp // 2))
        assert fewer.gpu_terms["deepspeed_buffers"] >= add


@pytest.mark.parametrize("zero", [2, 3])
def test_zero3_accumulates_into_its_partition(catalog, zero):
    job = _job(catalog, grad_accum=4, layout={"dp": 8, "zero": zero})
    ds_training = dataclasses.replace(job.training, engine=Engine.DEEPSPEED)
    t, d = (estimate_memory(job.arch, tr, job.layout) for tr in (job.training, ds_training))
    fb = "forward/backward"
    held = t.gpu_terms["gradients"] if zero == 3 else 0  # (ZeRO-2: DeepSpeed holds them apart, as FSDP2 does)
    assert d.phase_bytes[fb] == t.phase_bytes[fb] + d.gpu_terms["deepspeed_buffers"] - held


def test_zero3_lora_saves_are_bounded_by_full_fine_tuning(catalog):
    # DeepSpeed's ZeRO-3 linear saves every linear's input, frozen or not: counted as full fine-tuning's saves
    lora = {"rank": 16, "target_modules": ["q_proj", "v_proj"]}
    est = {}
    for engine in ("torch", "deepspeed"):
        for zero in (2, 3):
            job = _job(catalog, method="lora", lora=lora, engine=engine, layout={"dp": 8, "zero": zero})
            est[engine, zero] = estimate_memory(job.arch, job.training, job.layout).activation_terms["layer:main"]
    full = _job(catalog, layout={"dp": 8, "zero": 3})
    full_layer = estimate_memory(full.arch, full.training, full.layout).activation_terms["layer:main"]
    assert est["deepspeed", 3] == full_layer > est["torch", 3] == est["deepspeed", 2] == est["torch", 2]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"layout": {"dp": 4, "tp": 2, "zero": 3}}, "the layout has tp 2"),
        ({"layout": {"dp": 8, "zero": 3, "dp_shard": 4}}, "not modelled with HSDP"),
        ({"precision": "bf16-pure"}, "set precision bf16-mixed, fp16-mixed or fp32"),
    ],
)
def test_what_deepspeed_does_not_run_as_modelled_is_refused(catalog, changes, message):
    with pytest.raises(JobError, match=message):
        _job(catalog, engine="deepspeed", **changes)


def test_the_layout_search_counts_the_buffers_and_keeps_to_data_parallelism(catalog):
    data = {"global_batch": 64, "tokens": 10**8, "gpu": "h100"}
    torch_fit = fit_job(_job(catalog, **data), [instance_pool(catalog, "aws/p5.48xlarge", nodes=1)]).layouts
    ds_job = _job(catalog, engine="deepspeed", **data)
    ds_fit = fit_job(ds_job, [instance_pool(catalog, "aws/p5.48xlarge", nodes=1)]).layouts
    assert set(ds_fit["tp"]) == {1} and set(ds_fit["pp"]) == {1} and not ds_fit.empty
    keys = ["gpus", "dp", "tp", "pp", "cp", "ep", "dp_shard", "zero", "offload", "recompute", "micro_batch"]
    both = ds_fit.merge(torch_fit, on=keys, suffixes=("_ds", "_torch"))
    z3 = both[both["zero"] == 3]
    # (accumulating, DeepSpeed's partition holds the gradients torch's estimate holds apart, and fragments less)
    one = z3[z3["grad_accum_ds"] == 1]
    assert not one.empty and (one["device_bytes_ds"] > one["device_bytes_torch"]).all()
    assert (both[both["zero"] < 3]["device_bytes_ds"] == both[both["zero"] < 3]["device_bytes_torch"]).all()
    # each row is the memory model's own estimate of that layout, accumulating or not (DeepSpeed's ZeRO-3
    # accumulates into the gradient partition it holds anyway: no gradients of their own)
    assert (z3["grad_accum_ds"] > 1).any() and (z3["grad_accum_ds"] == 1).any()
    for _, row in z3.iterrows():
        lay = dataclasses.replace(
            ds_job.layout, dp=int(row["dp"]), zero=ZeroStage(3), offload=Offload(row["offload"]),
            recompute=Recompute(row["recompute"]), micro_batch=int(row["micro_batch"]),
            grad_accum=int(row["grad_accum_ds"]),
        )  # fmt: skip
        est = estimate_memory(ds_job.arch, ds_job.training, lay, gpu_arch=ds_job.gpu.arch, overheads=ds_job.overheads)
        assert row["device_bytes_ds"] == est.device_total_bytes
        if lay.grad_accum > 1 and est.peak_phase == "forward/backward":
            assert "gradients" not in est.peak_terms


def test_an_export_whose_headroom_cannot_hold_them_is_refused():
    path = ROOT / "scenarios/quickstart.yaml"
    (r,) = [r for r in run_exports(ftplan.campaign(path), ftplan.plan(path)) if r.layout.zero == 3]
    extra = sum(extra_bytes(r.arch, r.trainable_params, Precision(r.layout.precision), 3, r.layout.dp).values())
    assert 0 < extra < r.run.headroom_bytes  # the quick start's run keeps them (its SOURCES.md says so)
    tight = dataclasses.replace(r, run=r.run.model_copy(update={"headroom_bytes": extra - 1}))
    with pytest.raises(FtplanError, match=r"DeepSpeed's ZeRO-3 holds .* GiB .* To fix: export --to accelerate"):
        deepspeed_files(tight)
    enough = dataclasses.replace(r, run=r.run.model_copy(update={"headroom_bytes": extra}))
    assert "ds_config.json" in deepspeed_files(enough).files
    torchrun_files(tight)  # FSDP2, as planned: nothing to refuse


def test_memory_and_fit_take_the_engine_from_the_command_line():
    from typer.testing import CliRunner

    from ftplan.cli.app import app

    runner = CliRunner()
    args = ["memory", "--model", "qwen2.5-7b", "--gpu", "h100", "--dp", "8", "--zero", "3", "--seq-len", "4096"]
    torch_out = runner.invoke(app, [*args, "--format", "json"])
    ds_out = runner.invoke(app, [*args, "--engine", "deepspeed", "--format", "json"])
    assert torch_out.exit_code == 0 and ds_out.exit_code == 0, ds_out.output
    t, d = (__import__("json").loads(o.output) for o in (torch_out, ds_out))
    assert d["breakdown"]["deepspeed_buffers"] > 0 == t["breakdown"]["deepspeed_buffers"]
    assert d["device_total_bytes"] == t["device_total_bytes"] + d["breakdown"]["deepspeed_buffers"]
    table = runner.invoke(app, [*args, "--engine", "deepspeed"]).output
    assert "engine deepspeed" in table and "DeepSpeed ZeRO-3 partitions + reduce bucket" in table
    bad = runner.invoke(app, [*args, "--engine", "deepspeed", "--tp", "2"])
    assert bad.exit_code == 1 and "or engine torch" in str(bad.exception)
    job = str(ROOT / "scenarios/jobs/llama-70b-full-fit.yaml")
    fit = runner.invoke(app, ["fit", job, "--instance", "aws/p5.48xlarge", "--nodes", "2", "--engine", "deepspeed",
                              "--format", "csv"])  # fmt: skip
    assert fit.exit_code == 0, fit.output
    header, *rows = fit.output.strip().splitlines()
    tp = header.split(",").index("tp")
    assert rows and {r.split(",")[tp] for r in rows} == {"1"}
