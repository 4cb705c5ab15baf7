"""`ftplan compare`: each choice equals solving that pool alone; spot overhead; the frontier."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ftplan.compare import SpotModel, compare_choices, frontier
from ftplan.errors import FtplanError
from ftplan.plan import build_plan
from ftplan.scenario import resolve_scenario
from ftplan.schema.scenario import Scenario
from ftplan.solver import solve_campaign

ROOT = Path(__file__).resolve().parents[1]
JOBS = [
    {"id": "a", "model": "qwen2.5-0.5b", "method": "full", "seq_len": 2048, "tokens": 200_000_000, "global_batch": 32},
    {"id": "b", "model": "llama-3.1-8b", "method": "lora", "seq_len": 2048, "tokens": 50_000_000, "global_batch": 32,
     "allow": {"offload": False}},
    {"id": "c", "model": "qwen2.5-0.5b", "method": "lora", "seq_len": 2048, "tokens": 100_000_000, "global_batch": 32,
     "depends_on": ["b"]},
]  # fmt: skip
POOLS = [
    {"id": "lab-t4", "kind": "owned", "gpu": "t4", "gpus_per_node": 1, "nodes": 1, "usd_per_node_h": 1.0},
    {"id": "p4de", "kind": "cloud", "instance": "aws/p4de.24xlarge", "quota_nodes": 1},
    {"id": "p5", "kind": "cloud", "instance": "aws/p5.48xlarge", "quota_nodes": 1},
]


def campaign(catalog, pools=POOLS, **objective):
    sc = Scenario.model_validate({"jobs": JOBS, "pools": pools, "objective": {"minimise": "cost"} | objective,
                                  "solver": {"time_limit_s": 10, "workers": 1}})  # fmt: skip
    return resolve_scenario(sc, catalog, "test")


def test_each_choice_matches_solving_that_pool_alone(catalog):
    results = {r.choice: r for r in compare_choices(campaign(catalog), catalog)}
    for pool in ("p4de", "p5"):
        alone = campaign(catalog, [p for p in POOLS if p["id"] == pool])
        plan = build_plan(alone, solve_campaign(alone))
        assert results[pool].cost_usd == pytest.approx(plan.totals.cost_usd, rel=1e-9)
        assert results[pool].makespan_h == pytest.approx(plan.totals.makespan_h)
    # an 8B LoRA without offload does not fit one T4: it and the job depending on it are left out
    t4 = results["lab-t4"]
    assert set(t4.left_out) == {"b", "c"}
    assert "fits on none" in t4.left_out["b"] and "depends on b" in t4.left_out["c"]
    assert results["all pools"].cost_usd <= min(r.cost_usd for r in results.values() if not r.left_out) + 1e-9


def test_spot_carries_its_restart_overhead(catalog):
    spot = SpotModel(interruptions_per_hour=0.1, checkpoint_interval_h=1.0, restart_h=0.25)
    assert spot.time_factor == pytest.approx(1 + 0.1 * (0.5 + 0.25))
    results = {r.choice: r for r in compare_choices(campaign(catalog), catalog, only=["p5"], spot=spot)}
    on_demand, spot_run = results["p5"].plan.runs[0], results["p5-spot"].plan.runs[0]
    price = catalog.instance("aws/p5.48xlarge")
    assert spot_run.hours == pytest.approx(on_demand.hours * spot.time_factor)
    assert spot_run.usd == pytest.approx(on_demand.usd / price.on_demand_usd_per_h * spot.time_factor
                                         * price.spot_usd_per_h)  # fmt: skip


def test_frontier_is_monotone(catalog):
    points = frontier(campaign(catalog, [POOLS[1], POOLS[2]]), points=5)
    assert len(points) >= 2
    costs = [c for _, c, _ in points]
    assert all(later <= earlier + 1e-9 for earlier, later in itertools.pairwise(costs))
    assert all(m <= d + 1e-9 for d, _, m in points)


def test_unknown_pool_is_explained(catalog):
    with pytest.raises(FtplanError, match=r"unknown pool 'p55'\. Did you mean: p5"):
        compare_choices(campaign(catalog), catalog, only=["p55"])


def test_cli_compare(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "ftplan", "compare", str(ROOT / "scenarios/quickstart.yaml"), "--format", "json",
         "--pareto", "3", "--plot", str(tmp_path / "f.png")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [c["choice"] for c in data["choices"]] == ["lab-h100", "p4de", "all pools"]
    assert len(data["frontier"]) >= 2 and (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
