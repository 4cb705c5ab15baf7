"""The verifier is what every planner test trusts: each rule it checks is broken here, one at a time,
on a real plan, and must be reported (and the untouched plan must pass)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftplan.plan import build_plan
from ftplan.scenario import resolve_scenario
from ftplan.schema.plan import Plan
from ftplan.schema.scenario import Scenario
from ftplan.solver import InfeasibleError, solve_campaign
from ftplan.verify import verify_plan

SMALL = {"model": "qwen2.5-0.5b", "seq_len": 1024, "global_batch": 8}
POOLS = [
    {"id": "lab", "kind": "owned", "gpu": "a100-sxm-80gb", "gpus_per_node": 1, "nodes": 1, "usd_per_node_h": 4.0},
    {"id": "rp", "kind": "cloud", "instance": "runpod/1x_H100-SXM_SECURE", "quota_nodes": 1},
    {"id": "buy", "kind": "purchase", "gpu": "h100", "gpus_per_node": 1, "max_nodes": 2, "usd_per_node": 100.0},
]
JOBS = [
    SMALL | {"id": "first", "model": "qwen2.5-1.5b", "method": "full", "tokens": 3 * 10**8, "deadline_h": 40},
    SMALL | {"id": "second", "method": "lora", "tokens": 10**8, "depends_on": ["first"]},
    SMALL | {"id": "sweep", "method": "lora", "tokens": 2 * 10**8, "count": 4},
]


@pytest.fixture(scope="module")
def solved(catalog):
    data = {"name": "tamper", "jobs": JOBS, "pools": POOLS,
            "objective": {"minimise": "time", "then": "cost", "deadline_h": 100, "budget_usd": 1000}}  # fmt: skip
    campaign = resolve_scenario(Scenario.model_validate(data), catalog, "tamper.yaml")
    plan = build_plan(campaign, solve_campaign(campaign))
    assert verify_plan(campaign, plan) == []
    assert {r.pool for r in plan.runs} >= {"rp", "buy"}, "the plan must use the cloud and purchase pools"
    return campaign, plan.model_dump()


def check(campaign, data) -> list[str]:
    return verify_plan(campaign, Plan.model_validate(data))


def edit(data, rid, **fields):
    out = copy.deepcopy(data)
    run = next(r for r in out["runs"] if r["run"] == rid)
    run.update(fields)
    return out


def on(data, pool):
    return [r for r in data["runs"] if r["pool"] == pool]


def test_run_deadline(solved):
    campaign, data = solved
    r = next(r for r in data["runs"] if r["run"] == "first")
    late = edit(data, "first", start_h=r["start_h"] + 45, end_h=r["end_h"] + 45)
    assert any("after its deadline of 40" in v for v in check(campaign, late))


def test_campaign_deadline(solved):
    campaign, data = solved
    r = data["runs"][-1]
    late = edit(data, r["run"], start_h=r["start_h"] + 150, end_h=r["end_h"] + 150)
    assert any("after the campaign deadline of 100" in v for v in check(campaign, late))


def test_dependency(solved):
    campaign, data = solved
    r = next(r for r in data["runs"] if r["run"] == "second")
    early = edit(data, "second", start_h=0.0, end_h=r["end_h"] - r["start_h"])
    assert any("before first ends" in v for v in check(campaign, early))


def test_cloud_quota(solved):
    campaign, data = solved
    cloud = on(data, "rp")
    assert len(cloud) >= 2
    a, b = cloud[0], cloud[1]  # two runs on the 1-instance quota at the same time
    bad = edit(data, b["run"], start_h=a["start_h"], end_h=a["end_h"])
    assert any("on one instance" in v and "quota 1" in v for v in check(campaign, bad))


def test_purchase_limits(solved):
    campaign, data = solved
    bought = next(u for u in data["totals"]["pools"] if u["pool"] == "buy")
    assert bought["nodes_bought"] >= 1
    fewer = copy.deepcopy(data)
    next(u for u in fewer["totals"]["pools"] if u["pool"] == "buy")["nodes_bought"] = 0
    assert any("not one of the pool's 0 nodes" in v for v in check(campaign, fewer))
    more = copy.deepcopy(data)
    next(u for u in more["totals"]["pools"] if u["pool"] == "buy")["nodes_bought"] = 3
    problems = check(campaign, more)
    assert any("3 nodes bought, at most 2" in v for v in problems)
    assert any("purchase USD" in v for v in problems)


def test_budget(solved, catalog):
    campaign, data = solved
    tight = campaign.scenario.model_copy(
        update={"objective": campaign.scenario.objective.model_copy(update={"budget_usd": 1.0})}
    )
    poor = resolve_scenario(tight, catalog, "tamper.yaml")
    assert any("over the budget of $1.00" in v for v in check(poor, data))


def test_memory_fit(solved, catalog):
    campaign, data = solved
    r = next(r for r in data["runs"] if r["run"] == "first" and r["pool"] != "rp")
    t4 = campaign.scenario.model_copy(update={"pools": [
        p.model_copy(update={"gpu": "t4"}) if p.id == r["pool"] else p for p in campaign.scenario.pools]})  # fmt: skip
    cramped = resolve_scenario(t4, catalog, "tamper.yaml")
    problems = check(cramped, data)
    assert any("needs" in v and "t4-16gb has 15" in v for v in problems), problems


def test_overlap_on_one_gpu(solved):
    campaign, data = solved
    lab = on(data, "lab") + on(data, "buy")
    a = lab[0]
    twin = next(r for r in data["runs"] if r["run"] != a["run"] and r["pool"] != "rp")
    bad = edit(data, twin["run"], pool=a["pool"], nodes=a["nodes"], gpus=a["gpus"], gpu_count=a["gpu_count"],
               layout=a["layout"], start_h=a["start_h"], end_h=a["end_h"], hours=a["hours"], usd=a["usd"],
               memory_per_gpu_bytes=a["memory_per_gpu_bytes"], headroom_bytes=a["headroom_bytes"],
               tokens_per_s=a["tokens_per_s"])  # fmt: skip
    assert any("overlap" in v or "recomputed" in v or "global batch" in v for v in check(campaign, bad))


# ---- property: plan then check agree; any single-field edit keeps the same totals or is rejected ----
FIELDS = ["start_h", "end_h", "gpu_count", "hours", "usd", "tokens_per_s", "memory_per_gpu_bytes", "headroom_bytes"]
LAYOUT = ["dp", "tp", "zero", "micro_batch", "grad_accum"]
TOTALS = ["cost_usd", "makespan_h", "gpu_hours"]
SOLVER = ["objective_value", "bound", "gap", "then_value", "then_bound", "then_gap"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    where=st.sampled_from(["run", "layout", "totals", "solver"]), index=st.integers(0, 10), pick=st.integers(0, 20),
    factor=st.sampled_from([0.0, 0.5, 0.999, 1.001, 2.0, -1.0]),
)  # fmt: skip
def test_any_single_edit_is_caught_or_harmless(solved, where, index, pick, factor):
    campaign, data = solved
    bad = copy.deepcopy(data)
    if where in ("run", "layout"):
        run = bad["runs"][index % len(bad["runs"])]
        target, keys = (run, FIELDS) if where == "run" else (run["layout"], LAYOUT)
    elif where == "totals":
        target, keys = bad["totals"], TOTALS
    else:
        target, keys = bad["solver"], [k for k in SOLVER if bad["solver"].get(k) is not None]
    key = keys[pick % len(keys)]
    value = target[key]
    new = type(value)(value * factor) if isinstance(value, int) else value * factor
    if new == value:
        return
    target[key] = new
    try:
        plan = Plan.model_validate(bad)
    except ValueError:
        return  # the schema refuses it (a negative count, a zero GPU count)
    problems = verify_plan(campaign, plan)
    if not problems:  # accepted: then it changes nothing the verifier recomputes
        assert plan.totals == Plan.model_validate(data).totals


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    counts=st.lists(st.integers(1, 3), min_size=1, max_size=3), minimise=st.sampled_from(["cost", "time"]),
    deadline=st.sampled_from([None, 5.0, 50.0]), quota=st.integers(1, 3),
)  # fmt: skip
def test_random_plans_pass_their_check(catalog, counts, minimise, deadline, quota):
    jobs = [SMALL | {"id": f"j{i}", "method": "lora", "tokens": 10**8 * (i + 1), "count": c}
            for i, c in enumerate(counts)]  # fmt: skip
    pools = [POOLS[0], POOLS[1] | {"quota_nodes": quota}, POOLS[2]]
    data = {"jobs": jobs, "pools": pools, "objective": {"minimise": minimise, "deadline_h": deadline},
            "solver": {"time_limit_s": 5}}  # fmt: skip
    campaign = resolve_scenario(Scenario.model_validate(data), catalog, "random.yaml")
    try:
        plan = build_plan(campaign, solve_campaign(campaign))
    except InfeasibleError:
        return
    assert verify_plan(campaign, plan) == []
