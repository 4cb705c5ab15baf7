"""The library's short face: the README's example runs, and errors carry the command line's text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import ftplan

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs(monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    code = text.split("## Using ftplan from Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "fits: True" in out and "OPTIMAL" in out and "Did you mean: llama-3.1-8b" in out


def test_api_matches_the_commands(catalog):
    job = ROOT / "scenarios/jobs/llama-8b-lora-h100.yaml"
    res = subprocess.run([sys.executable, "-m", "ftplan", "memory", str(job), "--format", "json"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert f'"device_total_bytes": {ftplan.memory(job).device_total_bytes}' in res.stdout
    plan = ftplan.plan(ROOT / "scenarios/quickstart.yaml", catalog)
    assert plan.totals.cost_usd == pytest.approx(214.5783, abs=1e-3)  # the README's transcript
    assert ftplan.check(ROOT / "scenarios/quickstart.yaml", plan, catalog) == []


def test_errors_are_the_commands_text(tmp_path):
    bad = tmp_path / "job.yaml"
    bad.write_text("model: qwen2.5-0.5b\nseq_len: 0\n")
    with pytest.raises(ftplan.FtplanError) as info:
        ftplan.memory(bad)
    res = subprocess.run([sys.executable, "-m", "ftplan", "memory", str(bad)], capture_output=True, text=True)
    assert res.stderr.strip() == f"error: {info.value}"
    with pytest.raises(ftplan.FtplanError, match="by must be time or cost"):
        ftplan.fit({"model": "qwen2.5-0.5b", "seq_len": 512, "tokens": 10**6, "global_batch": 8}, gpus=["h100"]).ranked(
            "speed"
        )
    with pytest.raises(ftplan.FtplanError, match="field 'pools'"):
        ftplan.plan({"jobs": [{"id": "a", "model": "qwen2.5-0.5b", "seq_len": 512, "tokens": 10**6,
                               "global_batch": 8}], "pools": []})  # fmt: skip


def test_memory_checks_offloaded_states_against_the_nodes_ram():
    """A job's host_memory_gib (or the catalog's least instance RAM for its GPU) bounds what offload
    puts on the host; past it the verdict is does-not-fit, though the GPUs have room."""
    job = {"model": "llama-3.1-70b", "method": "full", "seq_len": 2048, "gpu": "h100",
           "layout": {"dp": 8, "zero": 3, "offload": "optimizer+params", "recompute": "full"}}  # fmt: skip
    assumed = ftplan.memory(job)
    assert assumed.host_memory_bytes is not None and any("assumed" in n for n in assumed.notes)
    assert assumed.fits is (assumed.host_bytes_per_node <= assumed.host_memory_bytes)
    small = ftplan.memory(job | {"host_memory_gib": 512})
    assert small.host_memory_bytes == 512 * 2**30 < small.host_bytes_per_node
    assert small.device_total_bytes <= small.gpu_memory_bytes and small.fits is False
    with pytest.raises(ftplan.FtplanError, match="host_memory_gib: in a scenario"):
        ftplan.campaign({"jobs": [{"id": "a", "model": "qwen2.5-0.5b", "method": "lora", "seq_len": 512,
                                   "tokens": 1000, "global_batch": 8, "host_memory_gib": 64}],
                         "pools": [{"id": "p", "kind": "owned", "gpu": "h100", "nodes": 1}]})  # fmt: skip
