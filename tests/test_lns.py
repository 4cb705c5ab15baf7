"""The neighbourhood search: strictly better plans that verify, the same plan for the same budget, and
the planner handing its plan out when one search alone does not finish."""

from __future__ import annotations

import random

import pytest

from ftplan.candidates import build_candidates
from ftplan.plan import build_plan
from ftplan.scenario import resolve_scenario
from ftplan.schema.scenario import Scenario
from ftplan.solver import lns, solve
from ftplan.solver.greedy import greedy_plan
from ftplan.solver.model import build_model
from ftplan.solver.solve import _best_greedy, _greedy_objective, solve_campaign
from ftplan.verify import verify_plan

KINDS = [("qwen2.5-0.5b", "full"), ("qwen2.5-1.5b", "full"), ("llama-3.2-3b", "lora"), ("qwen2.5-7b", "lora"),
         ("llama-3.1-8b", "lora"), ("mistral-7b-v0.3", "qlora")]  # fmt: skip
POOLS = [
    {"id": "lab-a100", "kind": "owned", "gpu": "a100-sxm-80gb", "nodes": 2, "usd_per_node_h": 6.0},
    {"id": "p5", "kind": "cloud", "instance": "aws/p5.48xlarge", "quota_nodes": 1},
    {"id": "runpod-h100", "kind": "cloud", "instance": "runpod/1x_H100-SXM_SECURE", "quota_nodes": 4},
    {"id": "g6e", "kind": "cloud", "instance": "aws/g6e.48xlarge", "quota_nodes": 1},
]


@pytest.fixture(scope="module")
def campaign(catalog):
    """60 runs under a deadline at half the cheapest-first makespan: greedy plans are far from the bound."""
    rng = random.Random(60)
    jobs = []
    for i in range(60):
        model, method = rng.choice(KINDS)
        jobs.append({"id": f"j{i}", "model": model, "method": method, "seq_len": 2048, "global_batch": 32,
                     "tokens": rng.choice([50_000_000, 200_000_000])})  # fmt: skip
    data = {"name": "lns", "jobs": jobs, "pools": POOLS, "objective": {"minimise": "cost"},
            "solver": {"time_limit_s": 20, "seed": 0, "workers": 1}}  # fmt: skip
    probe = resolve_scenario(Scenario.model_validate(data), catalog, "lns")
    table = build_candidates(probe)
    cands = {r.id: table.by_job[r.job_id] for r in probe.runs}
    span = max(p.start + cands[r][p.cand].minutes for r, p in greedy_plan(probe, cands, "cost").items())
    data["objective"]["deadline_h"] = round(span / 60 / 2, 2)
    return resolve_scenario(Scenario.model_validate(data), catalog, "lns"), table


def test_the_search_improves_the_greedy_plan_and_repeats_itself(campaign):
    camp, table = campaign
    m = build_model(camp, table)
    start = _best_greedy(m, camp, "cost")
    value = round(_greedy_objective(m, start, "cost"))
    runs = [lns.improve(m, start, value, "cost", budget=2.5, seed=3, stop_at=0, wall=600) for _ in range(2)]
    assert runs[0].improvements > 0 and runs[0].value < value
    assert runs[0].value == round(_greedy_objective(m, runs[0].placements, "cost"))
    assert runs[0] == runs[1]  # deterministic time: the same steps, the same plan


def test_a_large_campaign_hands_out_the_search_plan_verified(campaign, monkeypatch):
    camp, table = campaign
    monkeypatch.setattr(solve, "FULL_SHARE", 0.005)  # the whole search stops at once: neighbourhoods take over
    sol = solve_campaign(camp, table)
    assert sol.source == "lns"
    assert sol.objective_value < sol.greedy_objective
    assert verify_plan(camp, build_plan(camp, sol)) == []
