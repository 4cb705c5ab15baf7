"""`ftplan budget`: purchases that meet the deadline, capital budgets, break-even arithmetic."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from ftplan.budget import break_even, plan_purchase
from ftplan.errors import FtplanError
from ftplan.scenario import purchase_charge, resolve_scenario
from ftplan.schema.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
JOBS = [
    {"id": f"j{i}", "model": "qwen2.5-1.5b", "method": "full", "seq_len": 2048, "tokens": 300_000_000,
     "global_batch": 32}
    for i in range(3)
]  # fmt: skip
BUY_A100 = {"id": "buy-a100", "kind": "purchase", "gpu": "a100-sxm-80gb", "max_nodes": 3, "usd_per_node": 150_000,
            "amortisation_h": 10_000, "resale_fraction": 0.2, "usd_per_node_h": 5.0}  # fmt: skip
CLOUD = {"id": "p4de", "kind": "cloud", "instance": "aws/p4de.24xlarge", "quota_nodes": 2}


def campaign(catalog, pools, **objective):
    sc = Scenario.model_validate({"jobs": JOBS, "pools": pools, "objective": objective,
                                  "solver": {"time_limit_s": 10, "workers": 1}})  # fmt: skip
    return resolve_scenario(sc, catalog, "test")


def test_break_even_by_hand():
    # buying costs 100,000 once and 1,000 a campaign; renting costs 5,000 a campaign: 100,000 / 4,000
    assert break_even(100_000, 1_000, 5_000) == 25.0
    assert math.isinf(break_even(100_000, 5_000, 4_000))


def test_purchase_meets_the_deadline_at_lowest_tco(catalog):
    relaxed = plan_purchase(campaign(catalog, [BUY_A100], deadline_h=100), catalog)
    assert relaxed.bought == {"buy-a100": 1}
    serial = relaxed.plan.totals.makespan_h
    tight = plan_purchase(campaign(catalog, [BUY_A100], deadline_h=round(serial * 0.6, 3)), catalog)
    assert tight.bought["buy-a100"] >= 2
    assert tight.plan.totals.makespan_h <= serial * 0.6 + 1e-9
    pool = resolve_scenario(Scenario.model_validate({"jobs": JOBS, "pools": [BUY_A100]}), catalog, "t").pools[0]
    charge = purchase_charge(pool, round(serial * 0.6, 3))
    assert charge == pytest.approx(150_000 * 0.8 * round(serial * 0.6, 3) / 10_000)
    runs = sum(r.usd for r in tight.plan.runs)
    assert tight.plan.totals.cost_usd == pytest.approx(runs + tight.bought["buy-a100"] * charge)


def test_capex_buys_the_fastest_campaign_it_can(catalog):
    small = plan_purchase(campaign(catalog, [BUY_A100], deadline_h=100), catalog, capex_usd=160_000)
    assert small.capex_usd <= 160_000 and small.bought == {"buy-a100": 1}
    big = plan_purchase(campaign(catalog, [BUY_A100], deadline_h=100), catalog, capex_usd=460_000)
    assert big.capex_usd <= 460_000
    assert big.plan.totals.makespan_h <= small.plan.totals.makespan_h


def test_break_even_against_the_cheapest_cloud(catalog):
    result = plan_purchase(campaign(catalog, [BUY_A100, CLOUD], deadline_h=100), catalog)
    assert result.rent is not None and result.rent.choice == "p4de"
    expected = break_even(result.capex_net_usd, result.running_usd, result.rent.cost_usd)
    assert result.break_even_campaigns == pytest.approx(expected)


def test_budget_needs_purchases_and_a_deadline(catalog):
    with pytest.raises(FtplanError, match="no purchase pools"):
        plan_purchase(campaign(catalog, [CLOUD], deadline_h=10), catalog)
    with pytest.raises(FtplanError, match="deadline_h is needed"):
        plan_purchase(campaign(catalog, [BUY_A100]), catalog)


def test_cli_budget():
    res = subprocess.run([sys.executable, "-m", "ftplan", "budget", str(ROOT / "scenarios/purchase-budget.yaml")],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "buy: 1 × buy-l40s" in res.stdout and "break-even: buying pays off after" in res.stdout
