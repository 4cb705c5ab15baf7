"""The 2025-26 GPUs: catalog rows with their sources, the measured FP8/bf16 matmul ratio, and NVL72
racks whose 72 GPUs share one NVLink domain across 4-GPU trays."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ftplan import api
from ftplan.fit import gpu_pool
from ftplan.timing import model as tm
from ftplan.verify import verify_plan


@pytest.mark.parametrize(
    ("gid", "bf16", "fp8", "hbm", "per_node", "domain"),
    [
        ("b300-sxm-288gb", 2250, 4500, 8000, 8, None),
        ("gb200-186gb", 2500, 5000, 8000, 4, 72),
        ("gb300-288gb", 2500, 5000, 8000, 4, 72),
        ("mi325x-256gb", 1300, 2610, 6000, 8, None),
        ("mi355x-288gb", 2500, 5000, 8000, 8, None),
    ],
)  # fmt: skip
def test_new_gpus_carry_their_sourced_numbers(catalog, gid, bf16, fp8, hbm, per_node, domain):
    g = catalog.gpus[gid]
    assert (g.tflops.bf16, g.tflops.fp8, g.hbm_gbs, g.max_gpus_per_node, g.nvlink_domain) == (
        bf16, fp8, hbm, per_node, domain,
    )  # fmt: skip
    assert "ml-engineering-accelerators" in g.sources
    assert g.purchase_usd_per_gpu is None  # no source gives a price


def test_fp8_matmul_ratio_comes_from_measured_matmul_flops(catalog):
    h100 = catalog.gpus["h100-sxm-80gb"]
    assert h100.fp8_matmul_ratio == pytest.approx((1402.6 / 1979) / (794.5 / 989))
    assert h100.fp8_matmul_ratio == tm.DEFAULT_FP8_MATMUL_RATIO  # the lowest measured: the default
    ratios = [g.fp8_matmul_ratio for g in catalog.gpus.values() if g.fp8_matmul_ratio]
    assert min(ratios) == h100.fp8_matmul_ratio and max(ratios) < 1
    assert catalog.gpus["a100-sxm-80gb"].fp8_matmul_ratio is None  # no FP8
    # a GB300's GPUs are B300s: the B300's measured fractions of peak at the GB300's peaks, so its ratio
    gb300, b300 = catalog.gpus["gb300-288gb"], catalog.gpus["b300-sxm-288gb"]
    assert gb300.fp8_matmul_ratio == pytest.approx(b300.fp8_matmul_ratio, rel=1e-4)
    assert gb300.mamf_tflops["bf16"] / gb300.tflops.bf16 == pytest.approx(1769.0 / 2250, rel=1e-4)
    # the one chip measured in both packages (B200, GB200) agrees to 1%, what carrying a ratio over assumes
    b200, gb200 = catalog.gpus["b200-180gb"], catalog.gpus["gb200-186gb"]
    assert gb200.fp8_matmul_ratio == pytest.approx(b200.fp8_matmul_ratio, rel=0.01)


def test_an_nvl72_rack_runs_across_trays_over_nvlink(catalog):
    rack = gpu_pool(catalog, "gb200-186gb", gpus=72)  # no network: one NVLink domain
    assert (rack.gpus_per_node, rack.max_nodes, rack.nvlink_nodes, rack.max_run_nodes) == (4, 18, 18, 18)
    hw = tm.Hardware(peak_tflops=2500.0, efficiency=0.4, hbm_gbs=8000.0, intra_node_gbs=900.0, host_link_gbs=63.0,
                     gpus_per_node=4, network_gbps=1600.0, nvlink_domain=72)  # fmt: skip
    bw = tm.bus_bandwidth(hw, np.array([4, 64, 72, 144]))
    assert list(bw[:3]) == pytest.approx([900 * tm.INTRA_NODE_EFFICIENCY] * 3)  # inside the rack: NVLink
    assert bw[3] == pytest.approx(1600 / 8 * tm.NETWORK_EFFICIENCY)  # two racks: over the trays' network
    h100 = gpu_pool(catalog, "h100-sxm-80gb", gpus=8)
    assert h100.nvlink_nodes == 1 and h100.max_run_nodes == 1


def test_a_plan_on_an_nvl72_rack_spans_trays_and_verifies(catalog):
    data = {
        "name": "nvl72",
        "jobs": [{"id": "big", "model": "llama-3.1-70b", "method": "full", "precision": "fp8", "seq_len": 4096,
                  "tokens": 2 * 10**7, "global_batch": 64}],
        "pools": [{"id": "rack", "kind": "owned", "gpu": "gb200-186gb", "nodes": 18, "usd_per_node_h": 24.0}],
    }  # fmt: skip
    campaign = api.campaign(data, catalog)
    plan = api.plan(data, catalog)
    run = plan.runs[0]
    assert run.gpu_count > 4 and len(run.nodes) > 1  # a 70B full fine-tune does not fit one tray
    assert verify_plan(campaign, plan) == []


def test_catalog_gpus_shows_the_nvlink_domain():
    import json

    from typer.testing import CliRunner

    from ftplan.cli.app import app

    res = CliRunner().invoke(app, ["catalog", "gpus", "--filter", "gb200", "--format", "json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.output)
    assert (row["gpus_per_node"], row["nvlink_domain"], row["nvls"]) == (4, 72, True)


def test_fit_says_where_a_named_attention_kernel_cannot_run(tmp_path):
    from typer.testing import CliRunner

    from ftplan.cli.app import app
    from ftplan.memory.setup import Attention, AttentionKernel, Training

    # the library: FlashAttention-3 named on Blackwell, where it does not run, and FlashAttention-2, which runs there at
    # an H100's speed while cuDNN's is the kernel PyTorch's SDPA and Transformer Engine pick; nothing for cuDNN
    flash3 = Training(attention_kernel=AttentionKernel.FLASH3)
    assert tm.attention_kernel_note(flash3, "blackwell").startswith("attention on blackwell: FlashAttention-3 runs")
    assert tm.attention_kernel_note(flash3, "hopper") is None
    assert "state attention_kernel: cudnn" in tm.attention_kernel_note(Training(), "blackwell")
    # on Hopper FlashAttention-2 is the fitted rate, and cuDNN, which PyTorch's SDPA picks there too, is faster
    assert "1.3-1.9 times faster" in tm.attention_kernel_note(Training(), "hopper")
    assert tm.attention_kernel_note(Training(), "ampere") is None
    assert tm.attention_kernel_note(Training(attention_kernel=AttentionKernel.CUDNN), "blackwell") is None
    assert tm.attention_kernel_note(Training(attention=Attention.EAGER), "blackwell") is None
    # the CLI: `ftplan fit` prints it for a B200 pool and not for an H100 one
    job = tmp_path / "job.yaml"
    job.write_text(
        "model: llama-3.1-8b\nmethod: lora\nseq_len: 8192\nglobal_batch: 16\ntokens: 10000000\n"
        "attention_kernel: flash3\n"
    )
    outputs = {
        gpu: CliRunner().invoke(app, ["fit", str(job), "--gpu", gpu, "--gpus", "8", "--top", "1"])
        for gpu in ("b200", "h100")
    }
    assert all(res.exit_code == 0 for res in outputs.values()), {g: r.output for g, r in outputs.items()}
    assert "attention on blackwell: " in outputs["b200"].output
    assert "attention on" not in outputs["h100"].output
    # and `--format json` carries it for a program
    res = CliRunner().invoke(app, ["fit", str(job), "--gpu", "b200", "--gpus", "8", "--top", "1", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert [n.split(":")[0] for n in json.loads(res.output)["notes"]] == ["attention on blackwell"]
