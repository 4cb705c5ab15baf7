"""`ftplan measure --nproc` on a CPU (gloo): every rank of a data-parallel job beside the estimate.

Five cases of benchmarks/measured_grid_dist.yaml, one per way PyTorch runs data parallelism
(DistributedDataParallel, ZeroRedundancyOptimizer, FSDP2 with and without resharding after forward,
LoRA under FSDP2 with recomputation); `python benchmarks/measured_accuracy.py --grid
benchmarks/measured_grid_dist.yaml` runs them all.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from ftplan.errors import MeasureError
from ftplan.io import read_yaml
from ftplan.job import resolve_job
from ftplan.measure import measure_distributed
from ftplan.schema.job import parse_job

ROOT = Path(__file__).resolve().parents[1]
GRID = {c["case"]: c["job"] for c in read_yaml(ROOT / "benchmarks/measured_grid_dist.yaml")["cases"]}
CASES = ["llama-full-fp32-ddp", "llama-full-bf16pure-zero1", "llama-full-mixed-zero2", "llama-full-mixed-zero3",
         "llama-lora-bf16pure-zero3-recompute"]  # fmt: skip


def _job(catalog, data: dict):
    return resolve_job(parse_job(dict(data, dropout=False), "job"), catalog, "job")


_RUNS: dict[str, object] = {}


def _measured(catalog, case: str):
    """Each case runs once per session (two processes each)."""
    if case not in _RUNS:
        job = _job(catalog, GRID[case])
        _RUNS[case] = measure_distributed(job, job.layout.dp)
    return _RUNS[case]


@pytest.mark.parametrize("case", CASES)
def test_every_rank_is_held_to_the_estimate(catalog, case):
    dist = _measured(catalog, case)
    job = dist.job
    assert len(dist.ranks) == job.layout.dp
    for c in dist.ranks:
        if not job.training.precision.mixed:  # (mixed: FSDP's fp32 shard is the estimate's master copy)
            for term in ("weights_trainable", "gradients", "optimizer_states"):
                assert c.row(term).rel_error == pytest.approx(0.0, abs=2e-3), term
        assert abs(c.row("activations (layers + head)").rel_error) <= 0.01
        assert abs(c.row("peak allocated").rel_error) <= 0.03
    assert dist.worst.measurement.peak_allocated == max(c.measurement.peak_allocated for c in dist.ranks)


def test_ddp_buckets_and_zero_sharding_are_what_the_ranks_hold(catalog):
    # DDP holds a second copy of the gradients (its buckets); ZeRO-1 shards the optimizer states
    ddp = _measured(catalog, "llama-full-fp32-ddp").worst
    assert ddp.estimate.gpu_terms["ddp_gradient_buckets"] == ddp.estimate.gpu_terms["gradients"]
    single = dict(GRID["llama-full-fp32-ddp"], layout={"dp": 1})
    from ftplan.measure import measure_job

    alone = measure_job(_job(catalog, single))
    added = ddp.measurement.peak_allocated - alone.measurement.peak_allocated
    assert added == pytest.approx(ddp.estimate.gpu_terms["gradients"], rel=0.01)


def test_what_nproc_cannot_run_is_refused_in_one_line(catalog):
    base = GRID["llama-full-mixed-zero3"]
    with pytest.raises(MeasureError, match=r"the job has layout\.dp 2"):
        measure_distributed(_job(catalog, base), 3)
    with pytest.raises(MeasureError, match="tensor parallelism is not measured"):
        measure_distributed(_job(catalog, dict(base, layout={"dp": 1, "tp": 2})), 2)
    with pytest.raises(MeasureError, match="measure offload none"):
        measure_distributed(_job(catalog, dict(base, layout={"dp": 2, "zero": 3, "offload": "optimizer"})), 2)
    with pytest.raises(MeasureError, match="ZeroRedundancyOptimizer does not run"):
        measure_distributed(_job(catalog, dict(base, layout={"dp": 2, "zero": 1})), 2)
    with pytest.raises(MeasureError, match="--nproc must be 2 to 8"):
        measure_distributed(_job(catalog, base), 9)


def test_cli_nproc_json_names_every_rank(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(__import__("yaml").safe_dump(GRID["llama-full-bf16pure-zero1"]))
    out = subprocess.run([sys.executable, "-m", "ftplan", "measure", str(job), "--nproc", "2", "--format", "json"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = __import__("json").loads(out.stdout)
    assert len(data["ranks"]) == 2 and data["worst_rank"] in (0, 1)
    bad = subprocess.run([sys.executable, "-m", "ftplan", "measure", str(job), "--nproc", "3"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "layout.dp 2" in bad.stderr


def test_a_failed_rank_stops_the_others_instead_of_leaving_them_in_a_collective():
    from ftplan.measure.dist import _wait

    waiting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert _wait([waiting, failing]) == 1
    assert waiting.returncode is not None and failing.returncode == 3
    assert _wait([subprocess.Popen([sys.executable, "-c", "pass"])]) is None
