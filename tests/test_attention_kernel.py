"""`attention_kernel`: Hopper's flash-attention kernels (cuDNN, FlashAttention-3) against FlashAttention-2, whose
rate the catalog's attention efficiencies are fitted to, and the kernels' measured speeds on Blackwell."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ftplan.cli.app import app
from ftplan.errors import FtplanError
from ftplan.fit import fit_job, gpu_pool, hardware
from ftplan.job import resolve_job
from ftplan.memory.setup import AttentionKernel, Training
from ftplan.schema.job import parse_job
from ftplan.timing import model as tm

CUDNN, FLASH2, FLASH3, FLEX = (AttentionKernel(k) for k in ("cudnn", "flash2", "flash3", "flex"))


def _job(catalog, **fields):
    data = {"model": "llama-3.1-8b", "precision": "bf16-mixed", "seq_len": 8192, "micro_batch": 1,
            "grad_accum": 4, "tokens": 10**8} | fields  # fmt: skip
    return resolve_job(parse_job(data, "job"), catalog, "job")


def _times(job, hw, recompute=0, cp=1, micro_batch=1):
    flops = tm.job_flops(job.arch, job.training)
    one = (np.array([x]) for x in (1, 1, 0, 0, recompute, micro_batch, 4))
    return tm.step_times(flops, job.arch, job.training, hw, *one, cp=np.array([cp]))


def test_speedups_are_the_measured_speeds_over_flashattention2s_in_exact_arithmetic():
    # cuDNN on Hopper: the H200 sweep (an H100's compute) over FlashAttention-2's H100 figures
    fwd, bwd = tm.attention_kernel_speedup(CUDNN, np.array([2048.0, 8192.0]))
    assert fwd.tolist() == [pytest.approx(484 / 298, rel=1e-12), pytest.approx(644 / 333, rel=1e-12)]
    assert bwd.tolist() == [pytest.approx(370 / 291, rel=1e-12), pytest.approx(541 / 318, rel=1e-12)]
    # below the sweep's 2,048 tokens, the paper's cuDNN curve scaled to meet it there
    fwd, bwd = tm.attention_kernel_speedup(CUDNN, np.array([1024.0]))
    assert (fwd[0], bwd[0]) == (pytest.approx(410 * 484 / 484 / 260), pytest.approx(408 * 370 / 465 / 260))
    # beyond the sweep's 32k, its 32k figures over FlashAttention-2's 16k ones, both held
    fwd, bwd = tm.attention_kernel_speedup(CUDNN, np.array([262144.0]))
    assert (fwd[0], bwd[0]) == (pytest.approx(688 / 335), pytest.approx(581 / 322))
    fwd, bwd = tm.attention_kernel_speedup(FLASH3, np.array([2**10.5]))  # halfway from 1k to 2k in log2
    assert fwd[0] == pytest.approx((423 + 521) / (260 + 298), rel=1e-12)
    assert bwd[0] == pytest.approx((424 + 501) / (260 + 291), rel=1e-12)
    # held at the ends of the measured lengths
    fwd, bwd = tm.attention_kernel_speedup(FLASH3, np.array([128.0, 262144.0]))
    assert fwd.tolist() == [pytest.approx(292 / 191), pytest.approx(616 / 335)]
    assert bwd.tolist() == [pytest.approx(316 / 214), pytest.approx(561 / 322)]
    assert tm.attention_kernel_speedup(FLASH2, np.array([100.0, 5000.0, 10**6]))[1] == pytest.approx(1.0)


@settings(max_examples=30, deadline=None)
@given(die=st.sampled_from(["hopper", "b200", "b300"]), length=st.floats(256.0, 2e6))
def test_cudnns_curve_joins_the_sweep_at_its_shortest_length_and_never_falls_with_length(die, length):
    first = float(tm.CUDNN_SWEEP_LENGTHS[0])
    below = tm.cudnn_fraction(np.array([first * (1 - 1e-9)]), die)
    at = tm.cudnn_fraction(np.array([first]), die)
    for b, a in zip(below, at, strict=True):
        assert b[0] == pytest.approx(a[0], rel=1e-6)  # (continuous where the paper's curve meets the sweep)
    peak, fwd, bwd = tm.CUDNN_SWEEP[die]
    assert (at[0][0], at[1][0]) == (pytest.approx(fwd[0] / peak), pytest.approx(bwd[0] / peak))
    # up to the sweep's 16k every die runs cuDNN's forward no slower on longer sequences
    if length <= 8192:
        shorter, longer = tm.cudnn_fraction(np.array([length, 2 * length]), die)[0]
        assert longer >= shorter


def test_the_attention_core_runs_faster_by_its_passes_speedups_on_hopper_only(catalog):
    h100 = hardware(gpu_pool(catalog, "h100-sxm-80gb", gpus=1), _job(catalog).training.precision)
    flash2, cudnn = _job(catalog), _job(catalog, attention_kernel="cudnn")
    for recompute, forwards in ((0, 1.0), (2, 2.0)):
        base, fast = _times(flash2, h100, recompute), _times(cudnn, h100, recompute)
        _, attention = tm.job_flops(flash2.arch, flash2.training).hardware(recompute)
        t_attention = 4 * 8192 * float(attention) / h100.attention_rate  # 4 micro-steps of 8192 tokens
        fwd, bwd = (x[0] for x in tm.attention_kernel_speedup(CUDNN, np.array([8192.0])))
        factor = (forwards / fwd + 3 / bwd) / (forwards + 3)  # one or two forwards, a backward of three
        assert base.compute[0] - fast.compute[0] == pytest.approx(t_attention * (1 - factor), rel=1e-9)
        assert base.total[0] - fast.total[0] == pytest.approx(base.compute[0] - fast.compute[0], rel=1e-9)
    a100 = hardware(gpu_pool(catalog, "a100-sxm-80gb", gpus=1), flash2.training.precision)
    assert _times(cudnn, a100).total[0] == _times(flash2, a100).total[0]  # (FlashAttention-2's rate off Hopper)


def test_a_ring_runs_the_kernel_on_its_chunks(catalog):
    h100 = hardware(gpu_pool(catalog, "h100-sxm-80gb", gpus=8), _job(catalog).training.precision)
    job = _job(catalog, seq_len=4096, attention_kernel="flash3")
    assert (
        tm.attention_kernel_factor(job.training, h100, np.array([4096 / 4]), np.array([0]))[0]
        > (tm.attention_kernel_factor(job.training, h100, np.array([4096.0]), np.array([0]))[0])
    )  # a shorter chunk: less of a speed-up
    ring = _times(job, h100, cp=4).compute[0]
    plain = _times(_job(catalog, seq_len=4096), h100, cp=4).compute[0]
    _, attention = tm.job_flops(job.arch, job.training).hardware(0)
    t_attention = 4 * 1024 * float(attention) / h100.attention_rate  # a rank's quarter of each sequence
    factor = tm.attention_kernel_factor(job.training, h100, np.array([1024.0]), np.array([0]))[0]
    assert plain - ring == pytest.approx(t_attention * (1 - factor), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(length=st.floats(1.0, 2e6), recompute=st.sampled_from([0, 1, 2]), kernel=st.sampled_from([CUDNN, FLASH3]))
def test_a_hopper_kernel_never_slows_attention_on_hopper(length, recompute, kernel):
    training = Training(attention_kernel=kernel)
    hw = tm.Hardware(peak_tflops=989.0, efficiency=0.5, hbm_gbs=3350.0, intra_node_gbs=450.0, host_link_gbs=64.0,
                     gpus_per_node=8, network_gbps=None, gpu_arch="hopper")  # fmt: skip
    factor = tm.attention_kernel_factor(training, hw, np.array([length]), np.array([recompute]))[0]
    assert 1 / 1.9 < factor < 1.0


@settings(max_examples=25, deadline=None)
@given(seq=st.sampled_from([512, 1024, 2048, 4096, 8192, 16384, 32768]), kernel=st.sampled_from([CUDNN, FLASH3]))
def test_longer_sequences_never_compute_a_token_faster_under_a_hopper_kernel(catalog, seq, kernel):
    # (the kernels' speed-ups grow with the length, far slower than attention's FLOPs a token do; the same tokens
    # a micro-step, so the weight GEMMs keep their shapes)
    h100 = hardware(gpu_pool(catalog, "h100-sxm-80gb", gpus=1), _job(catalog).training.precision)

    def per_token(s: int) -> float:
        mb = 65536 // s
        job = _job(catalog, seq_len=s, attention_kernel=kernel.value)
        return _times(job, h100, micro_batch=mb).compute[0] / (s * mb)

    assert per_token(2 * seq) >= per_token(seq)


def _blackwell(gpu_id: str | None) -> tm.Hardware:
    return tm.Hardware(peak_tflops=2500.0, efficiency=0.5, hbm_gbs=8000.0, intra_node_gbs=900.0, host_link_gbs=63.0,
                       gpus_per_node=4, network_gbps=None, gpu_arch="blackwell", gpu_id=gpu_id)  # fmt: skip


def test_blackwell_speedups_are_the_measured_fractions_of_peak_in_exact_arithmetic():
    # cuDNN on a GB300 at 8k: the B300 die's fraction of peak over FlashAttention-2's on an H100
    length = np.array([8192.0])
    fwd, bwd = tm.attention_kernel_speedup(CUDNN, length, "blackwell", "gb300-288gb")
    assert fwd[0] == pytest.approx((1856 / 2500) / (333 / 989), rel=1e-12)
    assert bwd[0] == pytest.approx((1435 / 2500) / (318 / 989), rel=1e-12)
    # a B200 takes the GB200's die, and so does a Blackwell GPU the tables do not name
    b200 = tm.attention_kernel_speedup(CUDNN, length, "blackwell", "b200-180gb")
    assert b200[0][0] == pytest.approx((1574 / 2500) / (333 / 989), rel=1e-12)
    assert tm.attention_kernel_speedup(CUDNN, length, "blackwell", "rtx-pro-6000")[0][0] == b200[0][0]
    # FlashAttention-2 at its B200 speed over its H100 speed, per unit of peak; FlashAttention-3 (Hopper only) alike
    for kernel in (FLASH2, FLASH3):
        fwd, bwd = tm.attention_kernel_speedup(kernel, np.array([4096.0]), "blackwell", "gb200-186gb")
        assert (fwd[0], bwd[0]) == (pytest.approx(343 / 319 * 989 / 2250), pytest.approx(273 / 310 * 989 / 2250))
    # off Hopper and Blackwell: the fitted rate itself
    assert tm.attention_kernel_speedup(CUDNN, length, "ampere")[0][0] == 1.0


def test_on_blackwell_cudnn_runs_faster_and_flashattention2_slower_than_the_fitted_rate():
    for gpu_id in ("b200-180gb", "gb300-288gb"):
        hw = _blackwell(gpu_id)
        for length in (4096.0, 8192.0, 32768.0):
            at = np.array([length])
            cudnn = tm.attention_kernel_factor(Training(attention_kernel=CUDNN), hw, at, np.array([0]))[0]
            flash2 = tm.attention_kernel_factor(Training(), hw, at, np.array([0]))[0]
            assert cudnn < 1.0 < flash2  # (a factor on time: below 1 is faster)
    # the B300 die's cuDNN beats the B200 die's at every length measured
    for length in (2048.0, 8192.0, 32768.0):
        args = (Training(attention_kernel=CUDNN),)
        b300 = tm.attention_kernel_factor(*args, _blackwell("b300-sxm-288gb"), np.array([length]), np.array([0]))[0]
        b200 = tm.attention_kernel_factor(*args, _blackwell("gb200-186gb"), np.array([length]), np.array([0]))[0]
        assert b300 < b200


@settings(max_examples=25, deadline=None)
@given(
    seq=st.sampled_from([512, 1024, 2048, 4096, 8192, 16384, 32768]),
    kernel=st.sampled_from([CUDNN, FLASH2]),
    gpu=st.sampled_from(["b200-180gb", "gb300-288gb"]),
)
def test_longer_sequences_never_compute_a_token_faster_on_blackwell(catalog, seq, kernel, gpu):
    hw = hardware(gpu_pool(catalog, gpu, gpus=1), _job(catalog).training.precision)

    def per_token(s: int) -> float:
        mb = 65536 // s
        job = _job(catalog, seq_len=s, attention_kernel=kernel.value)
        return _times(job, hw, micro_batch=mb).compute[0] / (s * mb)

    assert per_token(2 * seq) >= per_token(seq)


def test_eager_attention_refuses_a_flash_kernel(catalog):
    with pytest.raises(FtplanError, match="attention_kernel cudnn is a flash-attention kernel"):
        _job(catalog, attention="eager", attention_kernel="cudnn")
    with pytest.raises(FtplanError, match="attention_kernel"):
        _job(catalog, attention_kernel="flash4")


def test_fit_from_python_and_the_command_line(catalog, tmp_path):
    pools = [gpu_pool(catalog, "h100-sxm-80gb", gpus=8)]
    base = fit_job(_job(catalog), pools).layouts
    fast = fit_job(_job(catalog, attention_kernel="cudnn"), pools).layouts
    assert (fast["step_s"].to_numpy() < base["step_s"].to_numpy()).all()  # the same layouts, each quicker
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps({"model": "llama-3.1-8b", "seq_len": 8192, "tokens": 10**8, "grad_accum": 4}))
    runner = CliRunner()
    out = runner.invoke(app, ["fit", str(path), "--gpu", "h100", "--gpus", "8", "--top", "1", "--format", "json"])
    over = ["fit", str(path), "--gpu", "h100", "--gpus", "8", "--top", "1", "--format", "json"]
    fast_out = runner.invoke(app, [*over, "--attention-kernel", "flash3"])
    assert out.exit_code == 0 and fast_out.exit_code == 0, out.output + fast_out.output
    step = json.loads(out.output)["layouts"][0]["step_s"]
    assert json.loads(fast_out.output)["layouts"][0]["step_s"] < step
    table = runner.invoke(app, [*over[:-2], "--attention-kernel", "cudnn"])
    assert "· cudnn attention ·" in table.output.splitlines()[0]
    bad = runner.invoke(app, [*over, "--attention-kernel", "flash9"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_trl_attn_implementation_sets_the_kernel(catalog, tmp_path):
    from ftplan.importers import import_config

    base = {"model_name_or_path": "meta-llama/Llama-3.1-8B", "max_length": 2048, "bf16": True}
    for value, attention, kernel in (("flash_attention_3", "sdpa", "flash3"), ("sdpa", "sdpa", None),
                                     ("eager", "eager", None), ("flex_attention", "sdpa", "flex")):  # fmt: skip
        path = tmp_path / f"{value}.json"
        path.write_text(json.dumps(base | {"attn_implementation": value}))
        job = import_config("trl", path, catalog).job
        assert job["attention"] == attention and job.get("attention_kernel") == kernel
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(base | {"attn_implementation": "paged_attention"}))
    with pytest.raises(FtplanError, match="field 'attn_implementation': 'paged_attention'"):
        import_config("trl", path, catalog)


@pytest.mark.parametrize("arch,gpu_id", [("hopper", None), ("blackwell", "gb200-186gb"), ("ampere", None)])
def test_flexattention_runs_at_its_measured_share_of_flashattention2s_speed(arch, gpu_id):
    lengths = np.array([512.0, 4096.0, 65536.0])
    fwd, bwd = tm.attention_kernel_speedup(FLEX, lengths, arch, gpu_id)
    base_fwd, base_bwd = tm.attention_kernel_speedup(FLASH2, lengths, arch, gpu_id)
    assert fwd.tolist() == pytest.approx((0.90 * base_fwd).tolist(), rel=1e-12)
    assert bwd.tolist() == pytest.approx((0.85 * base_bwd).tolist(), rel=1e-12)
    # on every GPU, FlashAttention-2's fitted rate too: an A100's attention core takes (1/0.9 + 3/0.85) / 4 as long
    hw = tm.Hardware(peak_tflops=312.0, efficiency=0.5, hbm_gbs=2039.0, intra_node_gbs=300.0, host_link_gbs=32.0,
                     gpus_per_node=8, network_gbps=None, gpu_arch=arch, gpu_id=gpu_id)  # fmt: skip
    factor = tm.attention_kernel_factor(Training(attention_kernel=FLEX), hw, lengths, np.array([0]))
    flash2 = tm.attention_kernel_factor(Training(), hw, lengths, np.array([0]))
    expected = (1 / (0.9 * base_fwd) + 3 / (0.85 * base_bwd)) / 4
    assert factor.tolist() == pytest.approx(expected.tolist(), rel=1e-12)
    assert (factor > flash2).all()


def test_the_notes_state_cudnns_measured_lead_over_flashattention2():
    lengths, none = np.array([2048.0, 4096.0, 8192.0, 16384.0, 32768.0]), np.zeros(5)
    hopper = tm.Hardware(peak_tflops=989.0, efficiency=0.5, hbm_gbs=3350.0, intra_node_gbs=450.0, host_link_gbs=64.0,
                         gpus_per_node=8, network_gbps=None, gpu_arch="hopper")  # fmt: skip
    blackwell = [_blackwell("b200-180gb"), _blackwell("gb300-288gb")]
    for arch, pools, lead in (("hopper", [hopper], "1.3-1.9"), ("blackwell", blackwell, "3.3-4.5")):
        leads: list[float] = []
        for hw in pools:
            cudnn = tm.attention_kernel_factor(Training(attention_kernel=CUDNN), hw, lengths, none)
            flash2 = tm.attention_kernel_factor(Training(), hw, lengths, none)
            leads += (flash2 / cudnn).tolist()  # (time factors: the attention core's time under flash2 over cudnn's)
        assert f"{min(leads):.1f}-{max(leads):.1f}" == lead
        assert f"{lead} times faster at 2k-32k" in tm.attention_kernel_note(Training(), arch)
    assert "3.3-4.5 times faster at 2k-32k" in tm.attention_kernel_note(Training(attention_kernel=FLASH3), "blackwell")
