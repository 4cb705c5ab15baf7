"""Never worse than what we hold: when CP-SAT ends without a plan, the greedy warm start is the plan."""

from __future__ import annotations

import pytest
from ortools.sat.python import cp_model

from ftplan.cli.app import run
from ftplan.plan import build_plan
from ftplan.scenario import resolve_scenario
from ftplan.schema.scenario import Scenario
from ftplan.solver import InfeasibleError, solve_campaign
from ftplan.verify import verify_plan

SMALL = {"model": "qwen2.5-0.5b", "method": "lora", "seq_len": 1024, "global_batch": 8}
DATA = {
    "name": "fallback",
    "jobs": [SMALL | {"id": "a", "tokens": 10**8, "count": 3}, SMALL | {"id": "b", "tokens": 2 * 10**8,
                                                                        "depends_on": ["a"]}],
    "pools": [{"id": "lab", "kind": "owned", "gpu": "h100", "nodes": 1, "usd_per_node_h": 8.0},
              {"id": "rp", "kind": "cloud", "instance": "runpod/1x_H100-SXM_SECURE", "quota_nodes": 2}],
    "objective": {"minimise": "cost", "then": "time"},
}  # fmt: skip


@pytest.fixture
def no_cp_sat_plan(monkeypatch):
    """CP-SAT ends at its time limit before its first solution (UNKNOWN), as on a large campaign."""
    monkeypatch.setattr(cp_model.CpSolver, "solve", lambda self, model, callback=None: cp_model.UNKNOWN)


def campaign(catalog, **objective):
    data = DATA | {"objective": DATA["objective"] | objective}
    return resolve_scenario(Scenario.model_validate(data), catalog, "fallback.yaml")


def test_unknown_returns_the_greedy_plan(catalog, no_cp_sat_plan):
    c = campaign(catalog)
    sol = solve_campaign(c)
    plan = build_plan(c, sol)
    assert plan.solver.source == "greedy" and not plan.solver.stopped_early
    assert plan.solver.objective_value == pytest.approx(plan.solver.greedy_cost_usd, abs=1e-3)
    assert plan.solver.then_status == "NOT RUN"
    assert 0 <= plan.solver.bound <= plan.solver.objective_value  # the cheapest candidates' sum at least
    assert plan.solver.bound > 0
    assert verify_plan(c, plan) == []


def test_unknown_on_time_bounds_with_the_critical_path(catalog, no_cp_sat_plan):
    c = campaign(catalog, minimise="time", then="cost")
    plan = build_plan(c, solve_campaign(c))
    a = max(r.hours for r in plan.runs if r.job == "a")
    assert plan.solver.source == "greedy" and plan.solver.bound > 0
    assert plan.solver.bound <= plan.totals.makespan_h and plan.totals.makespan_h >= a
    assert verify_plan(c, plan) == []


def test_a_greedy_plan_over_the_budget_is_not_kept(catalog, no_cp_sat_plan):
    with pytest.raises(InfeasibleError, match="found no plan within"):
        solve_campaign(campaign(catalog, budget_usd=0.01))


def test_cp_sat_plans_are_kept_when_found(catalog):
    c = campaign(catalog)
    sol = solve_campaign(c)
    assert sol.source == "cp-sat" and sol.objective_value <= sol.greedy_objective


def test_the_table_says_where_the_plan_came_from(tmp_path, no_cp_sat_plan, capsys):
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(DATA))
    assert run(["plan", str(path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "the greedy warm start's plan: CP-SAT found none as good" in out
    assert "then time: NOT RUN" in out
